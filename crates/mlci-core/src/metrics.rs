//! What training reports: per-epoch metrics and the final outcome.

use serde::{Deserialize, Serialize};

/// Metrics of one finished epoch. Accuracy is a fraction in `[0, 1]`;
/// `val_*` are measured on images the model never trained on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based epoch number.
    pub epoch: usize,
    pub loss: f64,
    pub accuracy: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    /// Wall time of the epoch: training pass plus validation pass (plus image
    /// decoding on the first epoch of a process).
    pub seconds: f64,
    /// Training images seen in the epoch.
    pub train_images: usize,
    /// `train_images / seconds`.
    pub images_per_second: f64,
    /// Validation images `val_accuracy` was measured on (its interval needs the count;
    /// 0 when an older trainer did not say).
    #[serde(default)]
    pub val_images: usize,
}

/// Why training ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// Every configured epoch ran.
    Completed,
    /// Early stopping saw no improvement for `patience` epochs.
    EarlyStopped,
    /// The caller asked it to stop (a pruner, a cancellation).
    Stopped,
}

/// The result of a training run, written as `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingOutcome {
    /// The epoch whose weights were kept (best validation metric).
    pub best_epoch: usize,
    /// Metrics of the kept epoch.
    pub best: EpochMetrics,
    /// Metrics of every epoch, in order (including epochs from before a resume).
    pub history: Vec<EpochMetrics>,
    pub stop_reason: StopReason,
    pub param_count: usize,
    /// Sum of epoch seconds over the whole history.
    pub total_seconds: f64,
}
