//! `mlci-tune`: hyperparameter search.
//!
//! [`sampler`] suggests parameters (grid, random, TPE, grow), [`pruner`]
//! stops bad trials early (median rule, ASHA), [`runner::Tuner`] runs an
//! experiment against an [`mlci_core::Executor`] and an [`mlci_core::Store`]
//! until the goal or the budget, and [`subprocess::SubprocessExecutor`] runs
//! any command as a trial, collecting metrics from its output.
//!
//! **Invariants:** samplers are pure functions of the stored history (so a
//! resumed experiment continues exactly); the runner writes a trial to the
//! store before running it and every step as it arrives; this crate knows no
//! concrete executor or store besides the subprocess executor.

pub mod pruner;
pub mod runner;
pub mod sampler;
pub mod subprocess;
pub mod warm;

pub use runner::{best_trial, now, objective_value, Progress, TuneError, TuneOptions, Tuner};
pub use subprocess::SubprocessExecutor;
