//! Dataset loading, its errors, and augmentation.

use std::path::Path;

use mlci_core::Augmentation;
use mlci_train::augment::{augment, to_unit};
use mlci_train::synth::{self, SynthSpec};
use mlci_train::{DataError, DataSource, Dataset, Split};

fn source(dir: &Path, val_split: Option<f64>) -> DataSource {
    DataSource {
        dir: dir.to_path_buf(),
        val_split,
        test_split: None,
        seed: 1,
    }
}

fn load_err(dir: &Path, val_split: Option<f64>) -> DataError {
    Dataset::load(&source(dir, val_split), 16).expect_err("loading should fail")
}

fn small(dir: &Path, train: usize, val: usize) {
    synth::generate(
        dir,
        SynthSpec {
            train_per_class: train,
            validation_per_class: val,
            size: 16,
            seed: 3,
        },
    )
    .unwrap();
}

#[test]
fn loads_train_and_validation_folders_with_sorted_classes() {
    let tmp = tempfile::tempdir().unwrap();
    small(tmp.path(), 5, 3);
    let data = Dataset::load(&source(tmp.path(), None), 12).unwrap();
    assert_eq!(data.classes, ["horizontal", "vertical"]);
    assert_eq!((data.train.len(), data.validation.len()), (10, 6));
    assert_eq!(data.train.pixels.len(), 10 * 12 * 12 * 3);
    assert_eq!(data.counts[1].train, 5);
    assert_eq!(data.counts[0].validation, 3);
}

#[test]
fn val_split_is_stratified_seeded_and_disjoint() {
    let tmp = tempfile::tempdir().unwrap();
    small(tmp.path(), 10, 0);
    let train_only = tmp.path().join("train");
    let a = Dataset::load(&source(&train_only, Some(0.2)), 16).unwrap();
    let b = Dataset::load(&source(&train_only, Some(0.2)), 16).unwrap();
    assert_eq!(a.validation.paths, b.validation.paths, "same seed, same split");
    assert_eq!(
        a.counts
            .iter()
            .map(|c| (c.train, c.validation))
            .collect::<Vec<_>>(),
        [(8, 2), (8, 2)]
    );
    assert!(a.validation.paths.iter().all(|p| !a.train.paths.contains(p)));
    let other = Dataset::load(
        &DataSource {
            seed: 99,
            ..source(&train_only, Some(0.2))
        },
        16,
    )
    .unwrap();
    assert_ne!(
        a.validation.paths, other.validation.paths,
        "another seed, another split"
    );
}

#[test]
fn missing_folder_is_named() {
    let err = load_err(Path::new("/nonexistent/mlci-data"), None);
    assert!(matches!(err, DataError::Missing { .. }));
    assert!(err.to_string().contains("/nonexistent/mlci-data"), "{err}");
}

#[test]
fn one_class_is_too_few() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("cats")).unwrap();
    let err = load_err(tmp.path(), Some(0.2));
    assert!(matches!(err, DataError::TooFewClasses { found: 1, .. }), "{err}");
}

#[test]
fn empty_class_is_named_with_its_path() {
    let tmp = tempfile::tempdir().unwrap();
    small(tmp.path(), 3, 2);
    for f in std::fs::read_dir(tmp.path().join("validation/vertical")).unwrap() {
        std::fs::remove_file(f.unwrap().path()).unwrap();
    }
    let err = load_err(tmp.path(), None);
    assert!(
        matches!(&err, DataError::EmptyClass { class, .. } if class == "vertical"),
        "{err}"
    );
    assert!(err.to_string().contains("validation/vertical"), "{err}");
}

#[test]
fn without_validation_folder_asks_for_val_split() {
    let tmp = tempfile::tempdir().unwrap();
    small(tmp.path(), 3, 0);
    std::fs::remove_dir_all(tmp.path().join("validation")).unwrap();
    assert!(matches!(
        load_err(tmp.path(), None),
        DataError::NoValidation { .. }
    ));
    assert!(matches!(
        load_err(tmp.path(), Some(1.5)),
        DataError::BadValSplit(_)
    ));
}

#[test]
fn corrupt_images_are_skipped_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    small(tmp.path(), 4, 2);
    let bad = tmp.path().join("train/horizontal/broken.jpg");
    std::fs::write(&bad, b"not a jpeg").unwrap();
    let data = Dataset::load(&source(tmp.path(), None), 16).unwrap();
    assert_eq!(data.skipped.len(), 1);
    assert_eq!(data.skipped[0].path, bad);
    assert_eq!(data.counts[0].train, 4);
}

#[test]
fn a_class_of_only_corrupt_images_fails() {
    let tmp = tempfile::tempdir().unwrap();
    small(tmp.path(), 2, 1);
    let dir = tmp.path().join("validation/horizontal");
    for f in std::fs::read_dir(&dir).unwrap() {
        std::fs::write(f.unwrap().path(), b"garbage").unwrap();
    }
    let err = load_err(tmp.path(), None);
    assert!(err.to_string().contains("1 unreadable file(s) skipped"), "{err}");
}

fn gradient_image(size: usize) -> Vec<u8> {
    (0..size * size * 3).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn augmentation_is_deterministic_per_seed_and_changes_the_image() {
    let size = 16;
    let src = gradient_image(size);
    let aug = Augmentation {
        rotation: 20.0,
        width_shift: 0.1,
        height_shift: 0.1,
        shear: 10.0,
        zoom: 0.2,
        horizontal_flip: true,
    };
    let run = |seed| {
        let mut out = vec![0f32; src.len()];
        augment(&src, &mut out, size, &aug, seed);
        out
    };
    assert_eq!(run(5), run(5));
    assert_ne!(run(5), run(6));
    let mut plain = vec![0f32; src.len()];
    to_unit(&src, &mut plain);
    assert_ne!(run(5), plain);
    assert!(run(5).iter().all(|v| (0.0..=1.0).contains(v)));
}

#[test]
fn identity_augmentation_is_plain_scaling() {
    let size = 8;
    let src = gradient_image(size);
    let (mut a, mut b) = (vec![0f32; src.len()], vec![0f32; src.len()]);
    augment(&src, &mut a, size, &Augmentation::default(), 1);
    to_unit(&src, &mut b);
    assert_eq!(a, b);
}

#[test]
fn flip_only_mirrors_rows() {
    let size = 4;
    let src = gradient_image(size);
    let aug = Augmentation {
        horizontal_flip: true,
        ..Augmentation::default()
    };
    let mut plain = vec![0f32; src.len()];
    to_unit(&src, &mut plain);
    // Some seed flips, some does not; a flip is an exact mirror.
    let mut saw_flip = false;
    for seed in 0..8 {
        let mut out = vec![0f32; src.len()];
        augment(&src, &mut out, size, &aug, seed);
        if out != plain {
            saw_flip = true;
            for y in 0..size {
                for x in 0..size {
                    for c in 0..3 {
                        assert_eq!(
                            out[(y * size + x) * 3 + c],
                            plain[(y * size + size - 1 - x) * 3 + c]
                        );
                    }
                }
            }
        }
    }
    assert!(saw_flip);
}

fn with_test(dir: &Path, val_split: Option<f64>, test_split: f64) -> DataSource {
    DataSource {
        test_split: Some(test_split),
        ..source(dir, val_split)
    }
}

#[test]
fn a_test_split_is_stratified_held_out_and_never_loaded_for_training() {
    let tmp = tempfile::tempdir().unwrap();
    small(tmp.path(), 20, 5);
    let src = with_test(tmp.path(), None, 0.25);
    let data = Dataset::load(&src, 16).unwrap();
    let (classes, test) = Dataset::load_split(&src, Split::Test, 16).unwrap();
    assert_eq!(classes, data.classes);
    // 5 of each class's 20 training images; validation untouched.
    assert_eq!(
        (data.train.len(), data.validation.len(), test.len()),
        (30, 10, 10)
    );
    for label in 0..2 {
        assert_eq!(test.labels.iter().filter(|&&l| l == label).count(), 5);
    }
    for p in &test.paths {
        assert!(
            !data.train.paths.contains(p) && !data.validation.paths.contains(p),
            "{p:?}"
        );
        assert!(
            p.starts_with(tmp.path().join("train")),
            "carved from the training images: {p:?}"
        );
    }
    // No seed decides it: another training seed holds out the same images.
    let reseeded = DataSource {
        seed: 77,
        ..src.clone()
    };
    assert_eq!(
        Dataset::load_split(&reseeded, Split::Test, 16).unwrap().1.paths,
        test.paths
    );
    // Adding images moves none of the held-out ones to training.
    let extra = tmp.path().join("train/vertical/zz-added.png");
    std::fs::copy(&test.paths[0], &extra).unwrap();
    let (_, after) = Dataset::load_split(&src, Split::Test, 16).unwrap();
    let kept = test.paths.iter().filter(|p| after.paths.contains(p)).count();
    assert!(kept >= test.len() - 1, "{kept} of {} kept", test.len());
}

#[test]
fn with_val_split_the_test_images_are_carved_first_and_the_three_are_disjoint() {
    let tmp = tempfile::tempdir().unwrap();
    small(tmp.path(), 20, 0);
    let src = with_test(&tmp.path().join("train"), Some(0.25), 0.2);
    let data = Dataset::load(&src, 16).unwrap();
    let (_, test) = Dataset::load_split(&src, Split::Test, 16).unwrap();
    assert_eq!((data.train.len(), data.validation.len(), test.len()), (24, 8, 8));
    let mut all: Vec<_> = data
        .train
        .paths
        .iter()
        .chain(&data.validation.paths)
        .chain(&test.paths)
        .collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 40);
}

#[test]
fn a_test_folder_is_the_test_split_and_must_match_the_classes() {
    let tmp = tempfile::tempdir().unwrap();
    small(tmp.path(), 6, 3);
    let other = tempfile::tempdir().unwrap();
    small(other.path(), 4, 0);
    std::fs::rename(other.path().join("train"), tmp.path().join("test")).unwrap();
    let src = source(tmp.path(), None);
    let data = Dataset::load(&src, 16).unwrap();
    assert_eq!((data.train.len(), data.validation.len()), (12, 6));
    let (_, test) = Dataset::load_split(&src, Split::Test, 16).unwrap();
    assert_eq!(test.len(), 8);
    assert!(test.paths.iter().all(|p| p.starts_with(tmp.path().join("test"))));
    // A test folder and a carved split at once: which is meant?
    let err = Dataset::load(&with_test(tmp.path(), None, 0.2), 16).unwrap_err();
    assert!(matches!(err, DataError::TwoTestSplits { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&tmp.path().join("test").display().to_string()),
        "{err}"
    );
    std::fs::create_dir(tmp.path().join("test/diagonal")).unwrap();
    let err = Dataset::load(&src, 16).unwrap_err();
    assert!(err.to_string().contains("diagonal"), "{err}");
}

#[test]
fn no_test_split_and_bad_fractions_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    small(tmp.path(), 4, 2);
    let err = Dataset::load_split(&source(tmp.path(), None), Split::Test, 16).unwrap_err();
    assert!(matches!(err, DataError::NoTestSplit { .. }), "{err}");
    let err = Dataset::load(&with_test(tmp.path(), None, 1.5), 16).unwrap_err();
    assert!(err.to_string().contains("--test-split"), "{err}");
}
