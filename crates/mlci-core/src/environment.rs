//! Long-lived environments (the classic pipeline's job 2): named containers
//! registered with their whole configuration, so the health watcher (job 5)
//! can check them and relaunch a dead one exactly as it was.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::SpecError;

/// A bind mount of an environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountSpec {
    /// Absolute path on the Engine's host.
    pub source: PathBuf,
    /// Absolute path in the container.
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
}

/// When a stopped container is relaunched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Relaunch when it exits non-zero, is killed, turns unhealthy or goes
    /// missing; an exit 0 means its work is done (a training run).
    #[default]
    OnFailure,
    /// Relaunch whenever it is not running (a service).
    Always,
}

/// A Docker HEALTHCHECK for the container (exec form, no shell needed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthcheckSpec {
    pub command: Vec<String>,
    #[serde(default = "HealthcheckSpec::default_interval")]
    pub interval_seconds: f64,
    #[serde(default = "HealthcheckSpec::default_retries")]
    pub retries: u32,
}

impl HealthcheckSpec {
    fn default_interval() -> f64 {
        10.0
    }
    fn default_retries() -> u32 {
        3
    }
}

/// Everything needed to (re)launch an environment's container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentSpec {
    /// `[a-z0-9][a-z0-9_.-]*`, at most 63 characters; also the container's name prefix.
    pub name: String,
    /// The model kind it was chosen for (`cnn/mlci`, …), or what the user says it is.
    #[serde(default)]
    pub kind: String,
    pub image: String,
    /// argv; replaces the image's entrypoint.
    pub command: Vec<String>,
    #[serde(default)]
    pub env: Vec<(String, String)>,
    #[serde(default)]
    pub mounts: Vec<MountSpec>,
    #[serde(default)]
    pub cpus: Option<f64>,
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    /// `uid:gid`; empty: the owner of the first read-write mount (never root).
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub network: bool,
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Exit codes that mean "done" under `on-failure` (default `[0]`; `mlci tune`
    /// also ends with 3 when the budget is spent without reaching the goal).
    #[serde(default = "EnvironmentSpec::default_done_codes")]
    pub done_exit_codes: Vec<i64>,
    #[serde(default)]
    pub healthcheck: Option<HealthcheckSpec>,
}

impl EnvironmentSpec {
    pub fn default_done_codes() -> Vec<i64> {
        vec![0]
    }

    /// Check every field, naming the first bad one.
    pub fn validate(&self) -> Result<(), SpecError> {
        let bad = |field: &str, message: String| Err(SpecError::new(field, message));
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 63
            && self
                .name
                .starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c));
        if !name_ok {
            return bad(
                "name",
                format!(
                    "{:?} is not a valid environment name (lower-case letters, digits, '_', '.', '-'; \
                     at most 63; starting with a letter or digit)",
                    self.name
                ),
            );
        }
        if self.image.trim().is_empty() {
            return bad("image", "must not be empty".into());
        }
        if self.command.is_empty() || self.command[0].is_empty() {
            return bad("command", "must name a program".into());
        }
        for (i, m) in self.mounts.iter().enumerate() {
            if !m.source.is_absolute() {
                return bad(
                    &format!("mounts[{i}].source"),
                    format!("{} is not an absolute path", m.source.display()),
                );
            }
            if !m.target.starts_with('/') || m.target.split('/').any(|p| p == "..") {
                return bad(
                    &format!("mounts[{i}].target"),
                    format!("{:?} is not an absolute path in the container", m.target),
                );
            }
        }
        for (i, (k, _)) in self.env.iter().enumerate() {
            if k.is_empty() || k.contains('=') {
                return bad(&format!("env[{i}]"), format!("{k:?} is not a variable name"));
            }
        }
        if let Some(c) = self.cpus {
            if !(c > 0.0 && c.is_finite()) {
                return bad("cpus", format!("{c} is not a positive number of cores"));
            }
        }
        if self.memory_bytes.is_some_and(|m| m < 6 << 20) {
            return bad("memory_bytes", "Docker needs at least 6 MiB".into());
        }
        if self
            .user
            .split(':')
            .next()
            .is_some_and(|u| u == "0" || u == "root")
        {
            return bad("user", "containers never run as root".into());
        }
        if let Some(h) = &self.healthcheck {
            if h.command.is_empty() {
                return bad("healthcheck.command", "must name a program".into());
            }
            if !(h.interval_seconds >= 0.001 && h.interval_seconds.is_finite()) {
                return bad("healthcheck.interval_seconds", "must be at least 0.001".into());
            }
        }
        Ok(())
    }
}

/// Where an environment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvironmentState {
    /// Its container runs (or is being relaunched).
    Running,
    /// Dead and waiting for its back-off before the relaunch.
    Waiting,
    /// Its container exited with a done code under `on-failure`: the work is done.
    Completed,
    /// Relaunched too often in a row: the watcher gave up. `mlci env up` again to retry.
    CrashLoop,
    /// Its command exited 2, bad input (a spec, a flag, a checkpoint made with another
    /// spec): no relaunch can fix that, so none is made. `mlci env up` again after the fix.
    Failed,
}

impl EnvironmentState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Waiting => "waiting",
            Self::Completed => "completed",
            Self::CrashLoop => "crash_loop",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Running,
            Self::Waiting,
            Self::Completed,
            Self::CrashLoop,
            Self::Failed,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// A registered environment and what the watcher knows of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentRecord {
    pub spec: EnvironmentSpec,
    pub state: EnvironmentState,
    /// The current (or last) container's id.
    pub container_id: Option<String>,
    /// Image id (`sha256:…`) the current container runs.
    pub image_digest: Option<String>,
    /// Relaunches since it last ran stably (the crash-loop counter).
    pub consecutive_restarts: u32,
    pub total_restarts: u32,
    /// Unix seconds the current container was started.
    pub started_at: Option<f64>,
    /// Unix seconds before which it must not be relaunched (back-off), when waiting.
    pub next_attempt_at: Option<f64>,
    pub created_at: f64,
    pub updated_at: f64,
    /// Why it is in this state (the last death, the crash loop).
    pub message: Option<String>,
}

/// One entry of an environment's restart history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Restart {
    pub environment: String,
    /// Unix seconds of the decision.
    pub at: f64,
    /// What was found: `exited 137 (killed)`, `unhealthy`, `missing`, …
    pub reason: String,
    pub exit_code: Option<i64>,
    pub old_container: Option<String>,
    /// The relaunched container, or `None` when it was not relaunched (crash loop, failure).
    pub new_container: Option<String>,
    /// Seconds of back-off waited before this relaunch.
    pub backoff_seconds: f64,
    /// `relaunched`, `gave_up` or `failed: …`.
    pub action: String,
}
