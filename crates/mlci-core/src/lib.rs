//! `mlci-core`: the domain at the centre of mlci.
//!
//! Model specs, hyperparameters, epoch metrics and training outcomes, with
//! their validation. **Invariant:** this crate does no IO (no files, network,
//! clocks or environment), so everything in it is deterministic and can only
//! fail through its return values. Adapters (`mlci-train`, …) depend on it,
//! never the other way round.

mod error;
mod metrics;
mod spec;

pub use error::SpecError;
pub use metrics::{EpochMetrics, StopReason, TrainingOutcome};
pub use spec::{
    limits, Architecture, Augmentation, ConvBlock, DenseLayer, EarlyStopping, LayerShape, ModelSpec, Monitor,
    OptimizerKind, Padding, TrainingConfig,
};
