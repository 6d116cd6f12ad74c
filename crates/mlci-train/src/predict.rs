//! Load a trained model (`model.json` + `model.safetensors`) and classify images.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_pcg::Pcg64;
use serde::Serialize;

use crate::augment::to_unit;
use crate::data::decode_resized;
use crate::data::ImageSet;
use crate::model::{probabilities, Cnn};
use crate::trainer::{plain_batch, SavedModel, EVAL_BATCH};
use crate::TrainError;

/// A model loaded for inference.
#[derive(Debug)]
pub struct Predictor {
    pub saved: SavedModel,
    model: Cnn,
    /// The folder it was loaded from, for errors.
    dir: PathBuf,
}

/// One image's prediction.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub path: PathBuf,
    pub class: String,
    /// Probability of `class`.
    pub probability: f64,
    /// Probability of every class, in class order.
    pub probabilities: Vec<f64>,
}

impl Predictor {
    /// Load from a training output folder.
    pub fn load(dir: &Path) -> Result<Self, TrainError> {
        let bad = |reason: String| TrainError::Model {
            path: dir.to_path_buf(),
            reason,
        };
        let json_path = dir.join("model.json");
        let text =
            std::fs::read_to_string(&json_path).map_err(|e| bad(format!("{}: {e}", json_path.display())))?;
        let saved: SavedModel =
            serde_json::from_str(&text).map_err(|e| bad(format!("{}: {e}", json_path.display())))?;
        let arch = saved.spec.architecture(saved.classes.len())?;
        let model = Cnn::new(&saved.spec, &arch, 0)?;
        let weights = dir.join("model.safetensors");
        model
            .varmap
            .clone()
            .load(&weights)
            .map_err(|e| bad(format!("{}: {e}", weights.display())))?;
        Ok(Self {
            saved,
            model,
            dir: dir.to_path_buf(),
        })
    }

    /// Classify image files; an unreadable file is an error naming it.
    pub fn predict(&self, paths: &[PathBuf]) -> Result<Vec<Prediction>, TrainError> {
        let s = self.saved.input_size;
        let mut out = Vec::with_capacity(paths.len());
        for chunk in paths.chunks(64) {
            let mut buf = vec![0f32; chunk.len() * s * s * 3];
            for (path, dst) in chunk.iter().zip(buf.chunks_mut(s * s * 3)) {
                let bytes = decode_resized(path, s).map_err(|reason| TrainError::Image {
                    path: path.clone(),
                    reason,
                })?;
                to_unit(&bytes, dst);
            }
            let x = Tensor::from_vec(buf, (chunk.len(), s, s, 3), &Device::Cpu)?;
            let logits = self.model.forward(&x, false, &mut Pcg64::seed_from_u64(0))?;
            let probs = probabilities(&logits)?.to_vec2::<f32>()?;
            for (path, p) in chunk.iter().zip(probs) {
                let (best, pb) = most_probable(&p);
                out.push(Prediction {
                    path: path.clone(),
                    class: self.saved.classes[best].clone(),
                    probability: f64::from(pb),
                    probabilities: p.iter().map(|&v| f64::from(v)).collect(),
                });
            }
        }
        Ok(out)
    }
}

/// How a model does on labelled images: counts of (true class, predicted class).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Confusion {
    pub classes: Vec<String>,
    /// `matrix[true][predicted]`.
    pub matrix: Vec<Vec<u64>>,
}

impl Confusion {
    /// Right answers out of all images.
    pub fn accuracy(&self) -> mlci_core::Accuracy {
        let correct = (0..self.classes.len()).map(|i| self.matrix[i][i]).sum();
        let total = self.matrix.iter().flatten().sum();
        mlci_core::Accuracy::new(correct, total)
    }

    /// Each class's accuracy (its recall): right answers out of its images.
    pub fn per_class(&self) -> Vec<(String, mlci_core::Accuracy)> {
        self.classes
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let row = &self.matrix[i];
                (c.clone(), mlci_core::Accuracy::new(row[i], row.iter().sum()))
            })
            .collect()
    }
}

impl Predictor {
    /// Classify a decoded set (at the model's input size) whose labels index `classes`
    /// (the folder's class names, which must be the model's).
    pub fn confusion(&self, classes: &[String], set: &ImageSet) -> Result<Confusion, TrainError> {
        if classes != self.saved.classes.as_slice() || set.size != self.saved.input_size {
            return Err(TrainError::Model {
                path: self.dir.clone(),
                reason: format!(
                    "the model knows classes {:?} at {} px; the images are of classes {classes:?} at {} px",
                    self.saved.classes, self.saved.input_size, set.size
                ),
            });
        }
        let n = classes.len();
        let mut matrix = vec![vec![0u64; n]; n];
        let mut rng = Pcg64::seed_from_u64(0); // unused: no dropout at inference
        let mut start = 0;
        while start < set.len() {
            let end = (start + EVAL_BATCH).min(set.len());
            let logits = self
                .model
                .forward(&plain_batch(set, start..end)?, false, &mut rng)?;
            let probs = probabilities(&logits)?.to_vec2::<f32>()?;
            for (p, &label) in probs.iter().zip(&set.labels[start..end]) {
                matrix[label as usize][most_probable(p).0] += 1;
            }
            start = end;
        }
        Ok(Confusion {
            classes: classes.to_vec(),
            matrix,
        })
    }
}

/// The most probable class of one image's probabilities (in class order), and its probability.
fn most_probable(p: &[f32]) -> (usize, f32) {
    p.iter()
        .copied()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .expect("at least two classes")
}
