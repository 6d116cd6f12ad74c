//! `mlci-containers`: trials in Docker containers.
//!
//! [`Engine`] is a small blocking facade over bollard's async Docker Engine
//! client (it owns a current-thread tokio runtime, because mlci's executors are
//! blocking): ping, image builds from a tar context, and [`Engine::run_trial`],
//! which provisions one container (labels, bind mounts with the dataset
//! read-only, CPU and memory limits, non-root, no new privileges, no
//! capabilities, no network unless asked), streams its output, waits, maps
//! its exit to [`mlci_core::FailureKind`] and removes it. [`kind`] detects
//! what model a workspace holds and picks an image and command for it;
//! [`ContainerExecutor`] implements the tuner's [`mlci_core::Executor`] port, and
//! `SwarmExecutor` the same with Swarm services; both share one trial-in-a-box path
//! (`trial`: preparation, how a box's end maps to a failure class, final metrics).
//!
//! **Invariants:** never reads the environment (the binary passes
//! `DOCKER_HOST`); never pulls (images are built locally or must exist);
//! every container it creates carries `mlci.*` labels, so one left behind by
//! a crash can be found with [`Engine::leftovers`].

mod context;
mod engine;
mod error;
mod executor;
pub mod kind;
mod lifecycle;
mod spec;
mod swarm;
#[cfg(feature = "testing")]
pub mod testing;
mod trial;

pub use context::{shared_libraries, BuildContext, DYNAMIC_DOCKERFILE, SCRATCH_DOCKERFILE};
pub use engine::{Engine, Leftover, RunOutcome, DEFAULT_HOST};
pub use error::ContainerError;
pub use executor::{parse_epoch, ContainerExecutor};
pub use lifecycle::*;
pub use spec::{ContainerSpec, Mount, TrialLabels};
pub use swarm::*;
pub use trial::{check_readable, classify_exit, container_user};

/// The trainer image's tag: `mlci-trainer:<mlci version>`.
pub const TRAINER_IMAGE: &str = concat!("mlci-trainer:", env!("CARGO_PKG_VERSION"));

/// The non-root user containers run as by default (`nobody:nogroup`).
pub const CONTAINER_USER: &str = "65534:65534";
