use std::path::PathBuf;

use mlci_core::SpecError;
use thiserror::Error;

/// A dataset that cannot be used. Every variant names the path at fault.
#[derive(Debug, Error)]
pub enum DataError {
    #[error("dataset folder {path} does not exist")]
    Missing { path: PathBuf },
    #[error("{path} is not a folder")]
    NotADir { path: PathBuf },
    #[error(
        "{path} has neither train/ and validation/ class folders nor class folders to split \
         (expected DIR/train/<class>/*.jpg and DIR/validation/<class>/*.jpg, or DIR/<class>/*.jpg with --val-split)"
    )]
    NoLayout { path: PathBuf },
    #[error("{path} has no validation/ folder: add one, or pass --val-split (e.g. 0.2) to hold out images")]
    NoValidation { path: PathBuf },
    #[error("{path} has {found} class folder(s) {classes:?}; need at least 2")]
    TooFewClasses {
        path: PathBuf,
        found: usize,
        classes: Vec<String>,
    },
    #[error(
        "class folders differ: {train} has {train_classes:?} but {validation} has {validation_classes:?}"
    )]
    ClassMismatch {
        train: PathBuf,
        validation: PathBuf,
        train_classes: Vec<String>,
        validation_classes: Vec<String>,
    },
    #[error("class `{class}` has no usable images in {path} (.jpg, .jpeg or .png){skipped}")]
    EmptyClass {
        path: PathBuf,
        class: String,
        skipped: String,
    },
    #[error("--val-split must be in (0, 1), got {0}")]
    BadValSplit(f64),
    #[error("--test-split (dataset.test_split) must be in (0, 1), got {0}")]
    BadTestSplit(f64),
    #[error(
        "{path} is a test split of its own: leave out --test-split (dataset.test_split), or \
         remove the folder"
    )]
    TwoTestSplits { path: PathBuf },
    #[error("class folders differ: {train} has {train_classes:?} but {test} has {test_classes:?}")]
    TestClassMismatch {
        train: PathBuf,
        test: PathBuf,
        train_classes: Vec<String>,
        test_classes: Vec<String>,
    },
    #[error("{path} has no test split: add DIR/test/<class>/ folders, or pass --test-split")]
    NoTestSplit { path: PathBuf },
    #[error("class `{class}` in {path} has {count} image(s): too few to split into train and validation")]
    TooFewToSplit {
        path: PathBuf,
        class: String,
        count: usize,
    },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Why training failed.
#[derive(Debug, Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// `--resume` cannot continue (no checkpoint, or one made with another spec).
    #[error("cannot resume from {path}: {reason}")]
    Resume { path: PathBuf, reason: String },
    /// A saved model that cannot be loaded for prediction.
    #[error("cannot load model from {path}: {reason}")]
    Model { path: PathBuf, reason: String },
    /// An image given to classify that cannot be read or decoded.
    #[error("cannot read image {path}: {reason}")]
    Image { path: PathBuf, reason: String },
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("training diverged at epoch {epoch}: loss is {loss} (try a lower learning rate)")]
    Diverged { epoch: usize, loss: f64 },
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// Stopped from outside ([`Observer::should_stop`](crate::Observer::should_stop))
    /// before its first epoch finished: there is no model yet.
    #[error("stopped before the first epoch finished")]
    StoppedBeforeFirstEpoch,
    /// The run's lease ([`TrainOptions::lease`](crate::TrainOptions::lease)) went to a
    /// newer attempt: this one stops without writing anything more.
    #[error("{path} no longer holds this run's lease: a newer attempt took the folder over; stopping without writing")]
    Superseded { path: PathBuf },
}

impl TrainError {
    /// True when the input (data, spec, flags) is at fault rather than the run.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Self::Data(_) | Self::Spec(_) | Self::Resume { .. } | Self::Model { .. } | Self::Image { .. }
        )
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }
}
