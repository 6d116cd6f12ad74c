//! `mlci-core`: the domain at the centre of mlci.
//!
//! Model specs, hyperparameters, epoch metrics and training outcomes;
//! experiment specs, trials and their records; the [`ExperimentSummary`]
//! every report shows; the JSON lines [`protocol`] of mlci's output; and the
//! traits adapters implement ([`Executor`], [`Store`]). **Invariant:** this crate does no IO
//! (no files, network, clocks or environment), so everything in it is
//! deterministic and can only fail through its return values. Adapters
//! (`mlci-train`, `mlci-tune`, `mlci-store`, …) depend on it, never the other
//! way round.

mod environment;
mod error;
mod evaluation;
mod experiment;
mod layout;
mod markup;
mod metrics;
mod params;
mod ports;
pub mod protocol;
mod run;
mod secret;
mod space;
mod spec;
mod summary;
mod trial;

pub use environment::{
    EnvironmentRecord, EnvironmentSpec, EnvironmentState, HealthcheckSpec, MountSpec, Restart, RestartPolicy,
};
pub use error::SpecError;
pub use evaluation::{
    z_score, Accuracy, Evaluation, Interval, SplitAccuracy, DEFAULT_CONFIDENCE, NO_TEST_SPLIT,
};
pub use experiment::{
    Algorithm, AlgorithmSpec, Budget, Condition, DatasetSpec, Direction, ExecutorKind, ExperimentSpec,
    Objective, ParamSpec, ParamValue, Params, Prefer, Prior, PriorTrial, PrunerSpec, SearchSpace,
    StartupDesign, SwarmSpec, TrialTemplate,
};
pub use layout::{trial_dir_in, DataLayout, LEASE_FILE};
pub use markup::escape_markup;
pub use metrics::{EpochMetrics, StopReason, TrainingOutcome};
pub use params::{apply_params, base_params, describe, MODEL_KEYS};
pub use ports::{
    Control, DataSplits, EnvironmentStore, Executor, RunStore, StopSignal, Store, StoreError, TrialOutput,
    TrialRequest, TrialWork,
};
pub use run::{NewRun, Outcome, RunFilter, RunRecord, RunState};
pub use secret::{Secret, SecretError, SecretRef, SecretResolver};
pub use spec::{
    limits, Architecture, Augmentation, ConvBlock, DenseLayer, EarlyStopping, LayerShape, LrSchedule,
    ModelSpec, Monitor, OptimizerKind, Padding, TrainingConfig,
};
pub use summary::ExperimentSummary;
pub use trial::{
    Event, ExperimentRecord, ExperimentState, Failure, FailureKind, Provenance, StepMetrics, TrialRecord,
    TrialState, VAL_IMAGES,
};
