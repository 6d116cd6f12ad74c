//! What one container is to be: its image and command, bind mounts, `mlci.*` labels,
//! limits and user, checked before the Engine sees it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::{ContainerError, CONTAINER_USER};

/// A bind mount from the host into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
}

impl Mount {
    /// A read-write bind mount (the trial folder at `/work`).
    pub fn rw(source: impl Into<PathBuf>, target: &str) -> Self {
        Self {
            source: source.into(),
            target: target.to_owned(),
            read_only: false,
        }
    }

    /// A read-only bind mount (the dataset at `/data`: mounted, never copied).
    pub fn ro(source: impl Into<PathBuf>, target: &str) -> Self {
        Self {
            read_only: true,
            ..Self::rw(source, target)
        }
    }
}

/// The `mlci.*` labels every container mlci starts carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrialLabels {
    pub experiment: String,
    pub trial: String,
    /// The model kind (`cnn/mlci`, `cnn/keras`, …).
    pub kind: String,
    /// Which mlci instance owns it (for adoption and cleanup after a crash).
    pub owner: String,
    /// The registered environment it runs (`mlci.environment`; omitted when empty).
    pub environment: String,
}

impl TrialLabels {
    pub(crate) fn to_map(&self) -> HashMap<String, String> {
        [
            ("mlci.experiment", &self.experiment),
            ("mlci.trial", &self.trial),
            ("mlci.kind", &self.kind),
            ("mlci.owner", &self.owner),
            ("mlci.environment", &self.environment),
        ]
        .into_iter()
        .filter(|(k, v)| *k != "mlci.environment" || !v.is_empty())
        .map(|(k, v)| (k.to_owned(), v.clone()))
        .collect()
    }
}

/// One container to run to its end.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub image: String,
    /// argv; the image's entrypoint is replaced by `command[0]`.
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub labels: TrialLabels,
    pub mounts: Vec<Mount>,
    /// CPU limit in cores (`nano_cpus`).
    pub cpus: Option<f64>,
    /// Memory limit in bytes (swap limited to the same, so no swapping).
    pub memory_bytes: Option<u64>,
    /// `uid:gid`; never root.
    pub user: String,
    /// Bridge networking; `false` (the default) means network `none`.
    pub network: bool,
    /// Killed after this long (classified [`FailureKind::Timeout`]).
    pub timeout: Option<Duration>,
    /// Every output line (stdout and stderr) is appended here too.
    pub log_file: Option<PathBuf>,
    /// A Docker HEALTHCHECK (long-lived containers; see [`Engine::start_detached`]).
    pub healthcheck: Option<mlci_core::HealthcheckSpec>,
}

impl ContainerSpec {
    pub fn new(image: impl Into<String>, command: Vec<String>) -> Self {
        Self {
            image: image.into(),
            command,
            env: Vec::new(),
            labels: TrialLabels::default(),
            mounts: Vec::new(),
            cpus: None,
            memory_bytes: None,
            user: CONTAINER_USER.to_owned(),
            network: false,
            timeout: None,
            log_file: None,
            healthcheck: None,
        }
    }

    /// Refuse what must never reach the Engine: a mount source that does not
    /// exist (Docker would create it, as root) and a root user.
    pub(crate) fn check(&self) -> Result<(), ContainerError> {
        for m in &self.mounts {
            if !m.source.exists() {
                return Err(ContainerError::MissingMount {
                    path: m.source.clone(),
                    target: m.target.clone(),
                });
            }
        }
        if self
            .user
            .split(':')
            .next()
            .is_some_and(|u| u == "0" || u == "root")
        {
            return Err(ContainerError::engine(
                "creating a container",
                format!("refusing to run {} as root (user {})", self.image, self.user),
            ));
        }
        Ok(())
    }
}
