//! Image datasets in Keras' `flow_from_directory` layout, decoded once and
//! cached in memory.
//!
//! `DIR/train/<class>/*.{jpg,jpeg,png}` plus `DIR/validation/<class>/…`, or
//! `DIR/<class>/…` with a stratified, seeded validation split. Classes are
//! the sorted folder names. A test split (`DIR/test/<class>/…` beside `train/`, or a
//! fraction of each class's training images chosen by file-name hash) is listed apart and
//! never decoded by [`Dataset::load`]: training and selection cannot see it. Images are decoded in parallel, resized to a
//! square and kept as RGB bytes (HWC), so only the first epoch pays for JPEG
//! decoding.

use std::path::{Path, PathBuf};
use std::time::Instant;

use image::imageops::FilterType;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_pcg::Pcg64;
use rayon::prelude::*;
use serde::Serialize;

use crate::DataError;

const EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

/// Where the images are and how to split them.
#[derive(Debug, Clone)]
pub struct DataSource {
    pub dir: PathBuf,
    /// Hold out this fraction of each class for validation when the folder
    /// has no `validation/` split of its own.
    pub val_split: Option<f64>,
    /// Hold out this fraction of each class's training images as the test split (when the
    /// folder has no `test/` of its own): the images whose file names hash lowest, so the
    /// split depends on no seed and stays put when images are added.
    pub test_split: Option<f64>,
    /// Seed of the validation split.
    pub seed: u64,
}

impl DataSource {
    pub fn new(splits: &mlci_core::DataSplits, seed: u64) -> Self {
        Self {
            dir: splits.dir.clone(),
            val_split: splits.val_split,
            test_split: splits.test_split,
            seed,
        }
    }
}

/// Decoded images of one split: `len() * size * size * 3` RGB bytes, HWC.
#[derive(Debug, Clone, Default)]
pub struct ImageSet {
    pub size: usize,
    pub pixels: Vec<u8>,
    pub labels: Vec<u32>,
    pub paths: Vec<PathBuf>,
}

impl ImageSet {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// The RGB bytes of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.size * self.size * 3;
        &self.pixels[i * n..(i + 1) * n]
    }
}

/// Per-class image counts, for the log line people read first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClassCount {
    pub class: String,
    pub train: usize,
    pub validation: usize,
}

/// A file that could not be decoded and was left out.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

/// A loaded dataset.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub classes: Vec<String>,
    pub train: ImageSet,
    pub validation: ImageSet,
    pub counts: Vec<ClassCount>,
    pub skipped: Vec<Skipped>,
    /// Seconds spent listing, decoding and resizing.
    pub load_seconds: f64,
}

impl Dataset {
    /// Load `source` at `size` x `size`, decoding on the current rayon pool.
    pub fn load(source: &DataSource, size: usize) -> Result<Self, DataError> {
        let started = Instant::now();
        let listing = list(source)?;
        let mut skipped = Vec::new();
        let train = decode_set(listing.train, size, &mut skipped);
        let validation = decode_set(listing.validation, size, &mut skipped);
        if !listing.test.is_empty() {
            tracing::info!(
                test = listing.test.len(),
                "test images held out: never trained on nor used to choose"
            );
        }

        let counts: Vec<ClassCount> = listing
            .classes
            .iter()
            .enumerate()
            .map(|(i, class)| ClassCount {
                class: class.clone(),
                train: train.labels.iter().filter(|&&l| l == i as u32).count(),
                validation: validation.labels.iter().filter(|&&l| l == i as u32).count(),
            })
            .collect();
        for (c, (train_dir, val_dir)) in counts.iter().zip(&listing.class_dirs) {
            for (n, dir) in [(c.train, train_dir), (c.validation, val_dir)] {
                if n == 0 {
                    let bad = skipped.iter().filter(|s| s.path.starts_with(dir)).count();
                    return Err(DataError::EmptyClass {
                        path: dir.clone(),
                        class: c.class.clone(),
                        skipped: if bad > 0 {
                            format!(" ({bad} unreadable file(s) skipped)")
                        } else {
                            String::new()
                        },
                    });
                }
            }
        }
        let data = Self {
            classes: listing.classes,
            train,
            validation,
            counts,
            skipped,
            load_seconds: started.elapsed().as_secs_f64(),
        };
        data.log_summary();
        Ok(data)
    }

    /// One split of `source` alone, decoded at `size`: the classes and the images
    /// (unreadable files skipped with a warning). A test split that the dataset does not
    /// have is an error naming the folder.
    pub fn load_split(
        source: &DataSource,
        split: Split,
        size: usize,
    ) -> Result<(Vec<String>, ImageSet), DataError> {
        let listing = list(source)?;
        let files = match split {
            Split::Train => listing.train,
            Split::Validation => listing.validation,
            Split::Test if listing.test.is_empty() => {
                return Err(DataError::NoTestSplit {
                    path: source.dir.clone(),
                })
            }
            Split::Test => listing.test,
        };
        let set = decode_set(files, size, &mut Vec::new());
        Ok((listing.classes, set))
    }

    /// Every image of a folder of class folders (`DIR/<class>/*.jpg`), decoded at `size`.
    pub fn load_labelled(dir: &Path, size: usize) -> Result<(Vec<String>, ImageSet), DataError> {
        existing_folder(dir)?;
        let classes = class_folders(dir)?;
        let mut files = Vec::new();
        for (label, class) in classes.iter().enumerate() {
            files.extend(
                image_files(&dir.join(class))?
                    .into_iter()
                    .map(|p| (p, label as u32)),
            );
        }
        Ok((classes, decode_set(files, size, &mut Vec::new())))
    }

    /// The lines people read first: images per class and split, what was
    /// skipped, and how long decoding took.
    fn log_summary(&self) {
        for c in &self.counts {
            tracing::info!(class = %c.class, train = c.train, validation = c.validation, "images loaded");
        }
        if !self.skipped.is_empty() {
            tracing::warn!(skipped = self.skipped.len(), "unreadable images were skipped");
        }
        tracing::info!(
            train = self.train.len(),
            validation = self.validation.len(),
            size = self.train.size,
            seconds = format_args!("{:.1}", self.load_seconds),
            "dataset decoded and cached"
        );
    }
}

/// One of a dataset's splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Validation,
    Test,
}

/// Decode `files` at `size` on the current rayon pool; the unreadable ones go to `skipped`.
fn decode_set(files: Vec<(PathBuf, u32)>, size: usize, skipped: &mut Vec<Skipped>) -> ImageSet {
    let decoded: Vec<Result<Vec<u8>, String>> = files
        .par_iter()
        .map(|(path, _)| decode_resized(path, size))
        .collect();
    let mut set = ImageSet {
        size,
        ..ImageSet::default()
    };
    for ((path, label), result) in files.into_iter().zip(decoded) {
        match result {
            Ok(bytes) => {
                set.pixels.extend_from_slice(&bytes);
                set.labels.push(label);
                set.paths.push(path);
            }
            Err(reason) => {
                tracing::warn!(path = %path.display(), %reason, "skipping unreadable image");
                skipped.push(Skipped { path, reason });
            }
        }
    }
    set
}

/// A fingerprint of the image files of `source`: their count and a SHA-256
/// over their relative paths and sizes (`files=6000 sha256=ab12…`). Cheap
/// (no image is read) and changes when a file is added, removed, renamed
/// or rewritten with another size.
pub fn fingerprint(source: &DataSource) -> Result<String, DataError> {
    use sha2::{Digest, Sha256};
    let listing = list(source)?;
    let mut hasher = Sha256::new();
    let mut count = 0usize;
    for (path, _) in listing
        .train
        .iter()
        .chain(&listing.validation)
        .chain(&listing.test)
    {
        let rel = path.strip_prefix(&source.dir).unwrap_or(path);
        let size = std::fs::metadata(path)
            .map_err(|e| DataError::Io {
                path: path.clone(),
                source: e,
            })?
            .len();
        hasher.update(rel.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update(size.to_le_bytes());
        count += 1;
    }
    let digest = hasher.finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("files={count} sha256={hex}"))
}

/// Decode an image file and resize it to `size` x `size` RGB bytes.
pub fn decode_resized(path: &Path, size: usize) -> Result<Vec<u8>, String> {
    let img = image::ImageReader::open(path)
        .map_err(|e| e.to_string())?
        .with_guessed_format()
        .map_err(|e| e.to_string())?
        .decode()
        .map_err(|e| e.to_string())?;
    let s = size as u32;
    let rgb = if img.width() == s && img.height() == s {
        img.to_rgb8()
    } else {
        image::imageops::resize(&img.to_rgb8(), s, s, FilterType::Triangle)
    };
    Ok(rgb.into_raw())
}

struct Listing {
    classes: Vec<String>,
    /// (train folder, validation folder) of each class, for error messages.
    class_dirs: Vec<(PathBuf, PathBuf)>,
    train: Vec<(PathBuf, u32)>,
    validation: Vec<(PathBuf, u32)>,
    /// Held out for the final evaluation; never decoded for training.
    test: Vec<(PathBuf, u32)>,
}

impl Listing {
    fn new(classes: &[String]) -> Self {
        Self {
            classes: classes.to_vec(),
            class_dirs: vec![],
            train: vec![],
            validation: vec![],
            test: vec![],
        }
    }

    /// The test images of class `label`: its `test/` folder, or a fraction carved out of
    /// `files` (the class's training images, which keep the rest).
    fn hold_out_test(
        &mut self,
        files: &mut Vec<PathBuf>,
        label: u32,
        test: &TestSplit,
        class_dir: &Path,
        class: &str,
    ) -> Result<(), DataError> {
        let held = match test {
            TestSplit::Carve(fraction) => carve_test(files, *fraction, class_dir, class)?,
            TestSplit::Folder(dir) => image_files(&dir.join(class))?,
            TestSplit::None => Vec::new(),
        };
        self.test.extend(held.into_iter().map(|p| (p, label)));
        Ok(())
    }
}

/// Where a dataset's test images come from.
enum TestSplit {
    None,
    /// `DIR/test/`, beside `train/`.
    Folder(PathBuf),
    /// This fraction of each class's training images.
    Carve(f64),
}

/// Take `fraction` of `files` (at least one, leaving at least two) as the test split: the
/// files whose names hash lowest (SHA-256), so the choice needs no seed, does not depend on
/// where the folder is, and moves only the images that are added or removed.
fn carve_test(
    files: &mut Vec<PathBuf>,
    fraction: f64,
    class_dir: &Path,
    class: &str,
) -> Result<Vec<PathBuf>, DataError> {
    use sha2::{Digest, Sha256};
    if files.len() < 3 {
        return Err(DataError::TooFewToSplit {
            path: class_dir.to_path_buf(),
            class: class.to_owned(),
            count: files.len(),
        });
    }
    let mut keyed: Vec<([u8; 32], PathBuf)> = files
        .drain(..)
        .map(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (Sha256::digest(name.as_bytes()).into(), p)
        })
        .collect();
    keyed.sort();
    let n = keyed.len();
    let n_test = ((n as f64 * fraction).round() as usize).clamp(1, n - 2);
    let rest = keyed.split_off(n_test);
    files.extend(rest.into_iter().map(|(_, p)| p));
    files.sort();
    Ok(keyed.into_iter().map(|(_, p)| p).collect())
}

/// `dir` exists and is a folder, or the error naming it.
fn existing_folder(dir: &Path) -> Result<(), DataError> {
    if !dir.exists() {
        return Err(DataError::Missing {
            path: dir.to_path_buf(),
        });
    }
    if !dir.is_dir() {
        return Err(DataError::NotADir {
            path: dir.to_path_buf(),
        });
    }
    Ok(())
}

fn list(source: &DataSource) -> Result<Listing, DataError> {
    let dir = &source.dir;
    existing_folder(dir)?;
    if let Some(split) = source.val_split {
        if !(split > 0.0 && split < 1.0) {
            return Err(DataError::BadValSplit(split));
        }
    }
    if let Some(split) = source.test_split {
        if !(split > 0.0 && split < 1.0) {
            return Err(DataError::BadTestSplit(split));
        }
    }
    let (train_dir, val_dir, test_dir) = (dir.join("train"), dir.join("validation"), dir.join("test"));
    let test = match (train_dir.is_dir() && test_dir.is_dir(), source.test_split) {
        (true, Some(_)) => return Err(DataError::TwoTestSplits { path: test_dir }),
        (true, None) => {
            let train_classes = class_folders(&train_dir)?;
            let test_classes = class_folders(&test_dir)?;
            if train_classes != test_classes {
                return Err(DataError::TestClassMismatch {
                    train: train_dir,
                    test: test_dir,
                    train_classes,
                    test_classes,
                });
            }
            TestSplit::Folder(test_dir)
        }
        (false, Some(f)) => TestSplit::Carve(f),
        (false, None) => TestSplit::None,
    };
    if train_dir.is_dir() && val_dir.is_dir() {
        let classes = class_folders(&train_dir)?;
        let val_classes = class_folders(&val_dir)?;
        if classes != val_classes {
            return Err(DataError::ClassMismatch {
                train: train_dir,
                validation: val_dir,
                train_classes: classes,
                validation_classes: val_classes,
            });
        }
        let mut listing = Listing::new(&classes);
        for (label, class) in classes.iter().enumerate() {
            let (t, v) = (train_dir.join(class), val_dir.join(class));
            let mut files = image_files(&t)?;
            listing.hold_out_test(&mut files, label as u32, &test, &t, class)?;
            listing.train.extend(files.into_iter().map(|p| (p, label as u32)));
            listing
                .validation
                .extend(image_files(&v)?.into_iter().map(|p| (p, label as u32)));
            listing.class_dirs.push((t, v));
        }
        return Ok(listing);
    }
    let base = if train_dir.is_dir() {
        train_dir
    } else {
        dir.clone()
    };
    let Some(split) = source.val_split else {
        return Err(if base != *dir {
            DataError::NoValidation { path: dir.clone() }
        } else {
            no_layout(dir)?
        });
    };
    let classes = class_folders(&base)?;
    let mut listing = Listing::new(&classes);
    for (label, class) in classes.iter().enumerate() {
        let class_dir = base.join(class);
        let mut files = image_files(&class_dir)?;
        // The test split first, from every image of the class; validation from the rest.
        listing.hold_out_test(&mut files, label as u32, &test, &class_dir, class)?;
        if files.len() < 2 {
            return Err(DataError::TooFewToSplit {
                path: class_dir,
                class: class.clone(),
                count: files.len(),
            });
        }
        // Stratified: each class is shuffled with its own seeded stream and split on its own.
        let mut rng =
            Pcg64::seed_from_u64(source.seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(label as u64 + 1)));
        files.shuffle(&mut rng);
        let n_val = ((files.len() as f64 * split).round() as usize).clamp(1, files.len() - 1);
        let train = files.split_off(n_val);
        listing
            .validation
            .extend(files.into_iter().map(|p| (p, label as u32)));
        listing.train.extend(train.into_iter().map(|p| (p, label as u32)));
        listing.class_dirs.push((class_dir.clone(), class_dir));
    }
    Ok(listing)
}

fn no_layout(dir: &Path) -> Result<DataError, DataError> {
    Ok(if class_folders(dir).map(|c| c.len() >= 2).unwrap_or(false) {
        DataError::NoValidation {
            path: dir.to_path_buf(),
        }
    } else {
        DataError::NoLayout {
            path: dir.to_path_buf(),
        }
    })
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let io = |source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_none_or(|n| n.starts_with('.'));
        if !hidden {
            entries.push(path);
        }
    }
    entries.sort();
    Ok(entries)
}

/// Sorted names of the sub-folders of `dir`: the class names.
fn class_folders(dir: &Path) -> Result<Vec<String>, DataError> {
    let classes: Vec<String> = read_dir(dir)?
        .into_iter()
        .filter(|p| p.is_dir())
        .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_owned))
        .collect();
    if classes.len() < 2 {
        return Err(DataError::TooFewClasses {
            path: dir.to_path_buf(),
            found: classes.len(),
            classes,
        });
    }
    Ok(classes)
}

/// Sorted image files (by extension) directly inside `dir`.
fn image_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    Ok(read_dir(dir)?
        .into_iter()
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
        })
        .collect())
}

/// Check `source` as [`Dataset::load`] would, without decoding an image: its layout, and
/// that every class has image files in both splits. (A class whose files are all
/// unreadable is found only by decoding.)
pub fn check(source: &DataSource) -> Result<(), DataError> {
    let listing = list(source)?;
    for (label, (class, (train_dir, val_dir))) in listing.classes.iter().zip(&listing.class_dirs).enumerate()
    {
        for (files, dir) in [(&listing.train, train_dir), (&listing.validation, val_dir)] {
            if !files.iter().any(|(_, l)| *l as usize == label) {
                return Err(DataError::EmptyClass {
                    path: dir.clone(),
                    class: class.clone(),
                    skipped: String::new(),
                });
            }
        }
    }
    Ok(())
}
