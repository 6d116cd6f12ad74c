//! `mlci-train`: train a CNN described by an [`mlci_core::ModelSpec`] with
//! candle on the CPU.
//!
//! [`Dataset::load`] decodes a `flow_from_directory` folder once;
//! [`train`] runs the loop with per-epoch checkpoints and writes the output
//! contract (`metrics.json`, `model.safetensors`, `model.json`);
//! [`Predictor`] classifies images with a saved model. The convolution and
//! pooling kernels are custom candle ops in [`ops`].
//!
//! **Invariants:** this crate never reads the environment or installs a
//! logger or thread pool: callers choose the rayon pool it runs on. All
//! randomness comes from the spec's seed, so a run is reproducible and a
//! resumed run gives the same numbers as an uninterrupted one.

pub mod augment;
pub mod data;
mod error;
mod executor;
pub mod model;
pub mod ops;
pub mod optim;
mod predict;
pub mod synth;
mod trainer;

pub use data::{ClassCount, DataSource, Dataset, ImageSet, Skipped, Split};
pub use error::{DataError, TrainError};
pub use executor::InProcessExecutor;
pub use mlci_core::Control;
pub use predict::{Confusion, Prediction, Predictor};
pub use trainer::{evaluate, train, Observer, Quiet, SavedModel, TrainOptions};
