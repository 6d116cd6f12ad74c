//! One typed configuration: defaults, then a TOML file (`--config` or
//! `MLCI_CONFIG`), then environment variables, then flags. All environment
//! variable names mlci reads are in [`env`]; libraries never read the
//! environment. Secrets are references (an environment variable name or a
//! file path), never values, so the config can be printed and logged; the one
//! [`secret_resolver`] turns them into values where a library needs them.
#![allow(clippy::disallowed_methods)] // the one module that reads the environment

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mlci_core::{SecretRef, SecretResolver};
use serde::Deserialize;

/// Every environment variable mlci reads.
pub(crate) mod env {
    pub(crate) const CONFIG: &str = "MLCI_CONFIG";
    pub(crate) const DATA_DIR: &str = "MLCI_DATA_DIR";
    pub(crate) const THREADS: &str = "MLCI_THREADS";
    pub(crate) const DB: &str = "MLCI_DB";
    pub(crate) const LOG: &str = "MLCI_LOG";
    pub(crate) const MAIL_FROM: &str = "MLCI_MAIL_FROM";
    /// Comma-separated recipients.
    pub(crate) const MAIL_TO: &str = "MLCI_MAIL_TO";
    pub(crate) const SMTP_HOST: &str = "MLCI_SMTP_HOST";
    pub(crate) const SMTP_PORT: &str = "MLCI_SMTP_PORT";
    /// `starttls`, `tls` or `none`.
    pub(crate) const SMTP_SECURITY: &str = "MLCI_SMTP_SECURITY";
    pub(crate) const SMTP_USERNAME: &str = "MLCI_SMTP_USERNAME";
    /// Name of the variable holding the SMTP password (e.g. one Jenkins' withCredentials sets).
    pub(crate) const SMTP_PASSWORD_ENV: &str = "MLCI_SMTP_PASSWORD_ENV";
    pub(crate) const SMTP_PASSWORD_FILE: &str = "MLCI_SMTP_PASSWORD_FILE";
    /// Jenkins sets this in every build of a git job.
    pub(crate) const GIT_COMMIT: &str = "GIT_COMMIT";
    /// The Docker Engine (default: the local unix socket).
    pub(crate) const DOCKER_HOST: &str = "DOCKER_HOST";
    /// The registry swarm trials' image is pushed to (`[swarm] registry`).
    pub(crate) const SWARM_REGISTRY: &str = "MLCI_SWARM_REGISTRY";
    /// A statically linked mlci to put in the trainer image (default: this binary).
    pub(crate) const TRAINER_BINARY: &str = "MLCI_TRAINER_BINARY";
    /// The `mlci.owner` label of environment containers (default `mlci`).
    pub(crate) const OWNER: &str = "MLCI_OWNER";
    /// Seconds between the health watcher's full reconciles.
    pub(crate) const HEALTH_INTERVAL: &str = "MLCI_HEALTH_INTERVAL";
    /// `mlci serve`'s address (default 127.0.0.1:7878).
    pub(crate) const LISTEN: &str = "MLCI_LISTEN";
    /// The step service's API token (what Jenkins' `mlci-token` credential holds).
    pub(crate) const TOKEN: &str = "MLCI_TOKEN";
    pub(crate) const TOKEN_FILE: &str = "MLCI_TOKEN_FILE";
    /// The GitHub webhook secret.
    pub(crate) const WEBHOOK_SECRET: &str = "MLCI_WEBHOOK_SECRET";
    pub(crate) const WEBHOOK_SECRET_FILE: &str = "MLCI_WEBHOOK_SECRET_FILE";
}

/// `mlci.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub threads: Option<usize>,
    /// SQLite database (default `<data_dir>/mlci.db`).
    pub db: Option<PathBuf>,
    /// `mlci.owner` of environment containers: only these are checked and cleaned.
    pub owner: Option<String>,
    #[serde(default)]
    pub mail: MailSection,
    #[serde(default)]
    pub health: HealthSection,
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub swarm: SwarmSection,
}

/// `[swarm]`: how `executor: swarm` trials reach the other hosts (docs/scaling.md).
/// The operator's settings: an experiment spec cannot change them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SwarmSection {
    /// `host[:port][/path]` of a registry every node can pull from: the trainer image is
    /// pushed there (content tag) and services name it by digest. Without it, the
    /// image must already be on every node (`docker save | docker load`). Env:
    /// MLCI_SWARM_REGISTRY.
    pub registry: Option<String>,
    /// Before the first trial, check on every node the trials may use that the
    /// experiment's folder and the dataset are the same files at the same paths
    /// (default true).
    pub check_storage: Option<bool>,
    /// How long that check waits for the nodes (they pull the image meanwhile), in
    /// seconds (default 120).
    pub check_seconds: Option<f64>,
}

/// `[server]`: `mlci serve`. Secrets are read from the environment or files, never from here.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServerSection {
    pub listen: Option<std::net::SocketAddr>,
    /// The URL Jenkins reaches mlci at (for `Location` headers and Jenkins `url` fields).
    pub public_url: Option<String>,
    /// Answer GET requests without a token (default false).
    pub read_only_open: Option<bool>,
    /// File holding the API token (else `MLCI_TOKEN`).
    pub token_file: Option<PathBuf>,
    /// File holding the GitHub webhook secret (else `MLCI_WEBHOOK_SECRET`).
    pub webhook_secret_file: Option<PathBuf>,
    /// Jenkins' "Trigger builds remotely": step → file holding that job's build token
    /// (`POST /job/STEP/build?token=…` then needs no API token). None by default.
    #[serde(default)]
    pub build_token_files: std::collections::BTreeMap<String, PathBuf>,
    /// Repositories whose pushes (GitHub webhook) or new commits (polling) start the pipeline.
    #[serde(default)]
    pub repositories: Vec<RepositorySection>,
    /// Poll the repositories every this many seconds for new commits (the classic job 1's
    /// "poll SCM"); off by default (the webhook is the push-based way).
    pub poll_seconds: Option<f64>,
    /// Most runs one caller (its credentials) may start per minute (default 120).
    pub(crate) runs_per_minute_per_caller: Option<u32>,
    /// Most log streams (`?follow=1`) open at once, and per caller (defaults 64 and 8).
    pub(crate) log_streams: Option<usize>,
    pub(crate) log_streams_per_caller: Option<usize>,
    /// What the runs the service starts may do: the operator decides, a repository only
    /// proposes.
    #[serde(default)]
    pub policy: PolicySection,
    /// Which finished runs are removed with their logs, artifacts and workspaces.
    #[serde(default)]
    pub retention: RetentionSection,
}

/// `[server.retention]`, like Jenkins' `buildDiscarder(logRotator(numToKeep, daysToKeep))`.
/// Nothing is removed unless `keep_runs` or `keep_days` is set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetentionSection {
    /// Keep at most this many runs of each step.
    pub keep_runs: Option<usize>,
    /// Keep the runs finished in the last this many days.
    pub keep_days: Option<f64>,
    /// Sweep every this many seconds (default 60).
    pub check_seconds: Option<f64>,
}

/// `[server.policy]`: what a repository's experiment may ask for. Recorded in the result
/// of every tuning run the service starts.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicySection {
    /// Run repository commands on the service's host (`trial.executor: subprocess`).
    /// Off by default: repository code runs only in containers.
    #[serde(default)]
    pub(crate) allow_host_commands: bool,
    /// The executors allowed (default: `in_process`, mlci's own trainer, which runs no
    /// repository code; `container`; `swarm`; and `subprocess` only with
    /// `allow_host_commands`).
    #[schemars(with = "Option<Vec<String>>")]
    pub(crate) executors: Option<Vec<mlci_core::ExecutorKind>>,
    /// Ceiling on `budget.max_trials`.
    pub(crate) max_trials: Option<usize>,
    /// Ceiling on `budget.parallel_trials`.
    pub(crate) max_parallel_trials: Option<usize>,
    /// Ceiling on `trial.timeout_seconds` (and the timeout of trials that set none).
    pub(crate) max_trial_seconds: Option<f64>,
    /// Ceiling on `budget.max_wall_seconds` (and the wall time of experiments that set none).
    pub(crate) max_experiment_seconds: Option<f64>,
    /// Ceiling on the cores a Swarm trial asks for (`trial.swarm.cpus`, and the
    /// reservation of trials that ask none).
    pub(crate) max_trial_cpus: Option<f64>,
    /// Ceiling on the memory a Swarm trial asks for, in MiB (`trial.swarm.memory_mb`).
    pub(crate) max_trial_memory_mb: Option<u64>,
    /// Lower what exceeds a ceiling to it (and say so) instead of refusing the run.
    #[serde(default)]
    pub(crate) clamp: bool,
    /// The URL schemes a step's ad-hoc `url` may use (`file`, `https`, `http`, `ssh`); none
    /// by default: steps name only `[[server.repositories]]`.
    #[serde(default)]
    pub(crate) repository_urls: Vec<String>,
    /// Hosts an ad-hoc `url` may name even though they are loopback, link-local or
    /// private addresses (which are refused otherwise, e.g. 169.254.169.254).
    #[serde(default)]
    pub(crate) allowed_hosts: Vec<String>,
    /// Folders a step's `data` must lie under (links resolved); none by default: only the
    /// `data` of `[[server.repositories]]`.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub(crate) data_roots: Vec<PathBuf>,
}

impl PolicySection {
    /// Whether a run may use `executor`; the refusal names the rule.
    pub(crate) fn allows(&self, executor: mlci_core::ExecutorKind) -> Result<(), String> {
        use mlci_core::ExecutorKind;
        if executor == ExecutorKind::Subprocess && !self.allow_host_commands {
            return Err(
                "refused by the operator's policy: [server.policy] allow_host_commands is \
                        false (repository commands run only in containers)"
                    .to_owned(),
            );
        }
        match &self.executors {
            Some(list) if !list.contains(&executor) => Err(format!(
                "refused by the operator's policy: [server.policy] executors = {:?} does not list it",
                list
            )),
            _ => Ok(()),
        }
    }

    /// Apply the policy to a repository's experiment: refused (`Err`, naming the field and
    /// the rule) or accepted, possibly lowered to the ceilings (`clamp`), with what was
    /// lowered.
    pub(crate) fn apply(&self, spec: &mut mlci_core::ExperimentSpec) -> Result<Vec<String>, String> {
        let executor = spec.trial.executor;
        self.allows(executor).map_err(|rule| {
            let name = serde_json::to_value(executor)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            format!("trial.executor: {name} is {rule}")
        })?;
        let mut lowered = Vec::new();
        let mut ceiling =
            |field: &str, asked: Option<f64>, max: Option<f64>, rule: &str| -> Result<Option<f64>, String> {
                let Some(max) = max else { return Ok(asked) };
                match asked {
                    Some(v) if v <= max => Ok(Some(v)),
                    Some(v) if !self.clamp => Err(format!(
                        "{field}: {v} is over the operator's ceiling ([server.policy] {rule} = {max})"
                    )),
                    Some(v) => {
                        lowered.push(format!("{field} {v} -> {max} ([server.policy] {rule})"));
                        Ok(Some(max))
                    }
                    None => Ok(Some(max)),
                }
            };
        let as_f = |n: usize| n as f64;
        if let Some(v) = ceiling(
            "budget.max_trials",
            Some(as_f(spec.budget.max_trials)),
            self.max_trials.map(as_f),
            "max_trials",
        )? {
            spec.budget.max_trials = v as usize;
        }
        if let Some(v) = ceiling(
            "budget.parallel_trials",
            Some(as_f(spec.budget.parallel_trials)),
            self.max_parallel_trials.map(as_f),
            "max_parallel_trials",
        )? {
            spec.budget.parallel_trials = v as usize;
        }
        spec.trial.timeout_seconds = ceiling(
            "trial.timeout_seconds",
            spec.trial.timeout_seconds,
            self.max_trial_seconds,
            "max_trial_seconds",
        )?;
        spec.budget.max_wall_seconds = ceiling(
            "budget.max_wall_seconds",
            spec.budget.max_wall_seconds,
            self.max_experiment_seconds,
            "max_experiment_seconds",
        )?;
        if executor == mlci_core::ExecutorKind::Swarm {
            let swarm = spec.trial.swarm.get_or_insert_with(Default::default);
            swarm.cpus = ceiling(
                "trial.swarm.cpus",
                swarm.cpus,
                self.max_trial_cpus,
                "max_trial_cpus",
            )?;
            swarm.memory_mb = ceiling(
                "trial.swarm.memory_mb",
                swarm.memory_mb.map(|m| m as f64),
                self.max_trial_memory_mb.map(|m| m as f64),
                "max_trial_memory_mb",
            )?
            .map(|m| m as u64);
        }
        Ok(lowered)
    }
}

/// A repository the service knows: where it is, and what a push of it runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RepositorySection {
    pub name: String,
    pub url: String,
    #[serde(default = "RepositorySection::default_branch")]
    pub branch: String,
    /// Other URLs the webhook payload may name it by (`owner/name`, the web URL).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Dataset folder for its training (mounted or read, never copied).
    pub data: Option<PathBuf>,
    /// Experiment spec in the repository (default `experiment.yaml`).
    pub experiment: Option<String>,
}

impl RepositorySection {
    fn default_branch() -> String {
        "main".into()
    }
}

/// `[health]`: how the watcher treats dead environments.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct HealthSection {
    pub interval_seconds: f64,
    pub backoff_initial_seconds: f64,
    pub backoff_max_seconds: f64,
    pub crash_loop_limit: u32,
    pub stable_seconds: f64,
}

impl Default for HealthSection {
    fn default() -> Self {
        let p = mlci_health::Policy::default();
        Self {
            interval_seconds: p.interval.as_secs_f64(),
            backoff_initial_seconds: p.backoff_initial.as_secs_f64(),
            backoff_max_seconds: p.backoff_max.as_secs_f64(),
            crash_loop_limit: p.crash_loop_limit,
            stable_seconds: p.stable_after.as_secs_f64(),
        }
    }
}

impl HealthSection {
    pub(crate) fn policy(&self) -> Result<mlci_health::Policy, ConfigError> {
        let secs = |v: f64, field: &str| {
            if v.is_finite() && v >= 0.0 {
                Ok(std::time::Duration::from_secs_f64(v))
            } else {
                Err(ConfigError(format!(
                    "health.{field} must be a number of seconds >= 0, not {v}"
                )))
            }
        };
        let interval = secs(self.interval_seconds, "interval_seconds")?;
        if interval.is_zero() {
            return Err(ConfigError("health.interval_seconds must be above 0".into()));
        }
        Ok(mlci_health::Policy {
            interval,
            backoff_initial: secs(self.backoff_initial_seconds, "backoff_initial_seconds")?,
            backoff_max: secs(self.backoff_max_seconds, "backoff_max_seconds")?,
            crash_loop_limit: self.crash_loop_limit,
            stable_after: secs(self.stable_seconds, "stable_seconds")?,
        })
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MailSection {
    pub from: Option<String>,
    #[serde(default)]
    pub to: Vec<String>,
    /// Where mails go without SMTP (default `<data_dir>/outbox`).
    pub outbox: Option<PathBuf>,
    pub smtp: Option<SmtpSection>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SmtpSection {
    pub host: String,
    pub port: Option<u16>,
    /// `starttls` (default), `tls` or `none`.
    pub security: Option<String>,
    pub username: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub timeout_seconds: Option<u64>,
}

/// The resolved configuration every command uses.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub data_dir: PathBuf,
    pub threads: usize,
    pub db: PathBuf,
    pub mail: MailSection,
    pub owner: String,
    pub health: mlci_health::Policy,
    pub server: ServerSection,
    pub swarm: SwarmSection,
    /// The configuration file read, if any (passed on to the steps `mlci serve` runs).
    pub file: Option<PathBuf>,
}

/// A configuration problem (exit 2), naming the file, variable or field.
#[derive(Debug)]
pub(crate) struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ConfigError {}

/// The one place a secret reference becomes a value: the process environment for
/// [`SecretRef::Env`], the file for [`SecretRef::File`], less a trailing newline. Handed to
/// every library that needs a secret (the mail's SMTP password, a repository's token); errors
/// name the variable or the file, never the value.
pub(crate) fn secret_resolver() -> SecretResolver {
    Arc::new(|secret: &SecretRef| {
        secret.resolve_with(&|name| std::env::var_os(name), &|path| std::fs::read(path))
    })
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// What a command trial may see of mlci's environment: an allow-list of the variables a
/// program needs to run (never a token, a password or anything else mlci was given).
pub(crate) const TRIAL_ENVIRONMENT: [&str; 9] = [
    "PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME",
];

/// The allowed variables of [`TRIAL_ENVIRONMENT`] that are set, for command trials.
pub(crate) fn trial_environment() -> Vec<(String, String)> {
    TRIAL_ENVIRONMENT
        .iter()
        .filter_map(|name| std::env::var(name).ok().map(|v| ((*name).to_owned(), v)))
        .collect()
}

/// The Docker Engine's address (`DOCKER_HOST`), when set.
pub(crate) fn docker_host() -> Option<String> {
    var(env::DOCKER_HOST)
}

/// The static mlci to put in the trainer image (`MLCI_TRAINER_BINARY`), when set.
pub(crate) fn trainer_binary() -> Option<PathBuf> {
    std::env::var_os(env::TRAINER_BINARY).map(PathBuf::from)
}

/// The commit Jenkins builds (`GIT_COMMIT`), when set.
pub(crate) fn git_commit() -> Option<String> {
    var(env::GIT_COMMIT)
}

/// Set the thread variables read by candle and rayon (before any thread starts).
/// candle re-reads `RAYON_NUM_THREADS` on every matmul when it is unset (parsing
/// /proc/cpuinfo each time), so it is always set; its worker pool spins 25,000 times after
/// each op unless `CANDLE_BARRIER_POOL_SPIN_LIMIT` says otherwise, which on few cores
/// steals our kernels' cycles (measured: 15% of an epoch on 2 cores).
pub(crate) fn set_thread_vars(threads: usize) {
    const CANDLE_SPIN: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    if std::env::var_os(CANDLE_SPIN).is_none() {
        std::env::set_var(CANDLE_SPIN, "500");
    }
}

/// A secret of the service (API token, webhook secret): the file's content when `file` is
/// given, else the variable's, `None` when that is unset or blank. Read through the one
/// resolver; surrounding whitespace is not part of a token.
pub(crate) fn server_secret(
    env_name: &str,
    file: Option<&Path>,
) -> Result<Option<mlci_core::Secret>, ConfigError> {
    let reference = match file {
        Some(path) => SecretRef::File(path.to_owned()),
        None if var(env_name).is_some() => SecretRef::Env(env_name.to_owned()),
        None => return Ok(None),
    };
    resolve_secret(&reference).map(Some)
}

/// The secret in `file` (trimmed); an empty one is an error naming the file.
pub(crate) fn file_secret(file: &Path) -> Result<mlci_core::Secret, ConfigError> {
    resolve_secret(&SecretRef::File(file.to_owned()))
}

fn resolve_secret(reference: &SecretRef) -> Result<mlci_core::Secret, ConfigError> {
    let secret = secret_resolver()(reference).map_err(|e| ConfigError(e.to_string()))?;
    match secret.expose().trim() {
        "" => Err(ConfigError(format!("{} is empty", reference.describe()))),
        value => Ok(mlci_core::Secret::new(value)),
    }
}

impl Config {
    /// Where everything under the data folder is.
    pub(crate) fn layout(&self) -> mlci_core::DataLayout {
        mlci_core::DataLayout::new(&self.data_dir)
    }

    /// Defaults < file < environment < flags.
    pub(crate) fn load(
        file: Option<&Path>,
        data_dir_flag: Option<PathBuf>,
        threads_flag: Option<usize>,
        db_flag: Option<PathBuf>,
    ) -> Result<Self, ConfigError> {
        let file_path = file
            .map(Path::to_path_buf)
            .or_else(|| var(env::CONFIG).map(PathBuf::from));
        let fc: FileConfig = match &file_path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError(format!("cannot read config {}: {e}", path.display())))?;
                toml::from_str(&text).map_err(|e| ConfigError(format!("config {}: {e}", path.display())))?
            }
            None => FileConfig::default(),
        };
        let data_dir = data_dir_flag
            .or_else(|| var(env::DATA_DIR).map(PathBuf::from))
            .or(fc.data_dir)
            .or_else(|| dirs::data_dir().map(|d| d.join("mlci")))
            .ok_or_else(|| {
                ConfigError(format!(
                    "no platform data folder; pass --data-dir or set {}",
                    env::DATA_DIR
                ))
            })?;
        let env_threads = match var(env::THREADS) {
            Some(v) => Some(
                v.parse::<usize>()
                    .map_err(|_| ConfigError(format!("{}={v} is not a number", env::THREADS)))?,
            ),
            None => None,
        };
        let threads = threads_flag
            .or(env_threads)
            .or(fc.threads)
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
        if threads == 0 {
            return Err(ConfigError("threads must be at least 1".into()));
        }
        let db = db_flag
            .or_else(|| var(env::DB).map(PathBuf::from))
            .or(fc.db)
            .unwrap_or_else(|| mlci_core::DataLayout::new(&data_dir).db());
        let mut mail = fc.mail;
        if let Some(from) = var(env::MAIL_FROM) {
            mail.from = Some(from);
        }
        if let Some(to) = var(env::MAIL_TO) {
            mail.to = to
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
        }
        if let Some(host) = var(env::SMTP_HOST) {
            let smtp = mail.smtp.get_or_insert_with(SmtpSection::default);
            smtp.host = host;
        }
        if let Some(smtp) = mail.smtp.as_mut() {
            if let Some(port) = var(env::SMTP_PORT) {
                smtp.port = Some(
                    port.parse()
                        .map_err(|_| ConfigError(format!("{}={port} is not a port", env::SMTP_PORT)))?,
                );
            }
            if let Some(v) = var(env::SMTP_SECURITY) {
                smtp.security = Some(v);
            }
            if let Some(v) = var(env::SMTP_USERNAME) {
                smtp.username = Some(v);
            }
            if let Some(v) = var(env::SMTP_PASSWORD_ENV) {
                smtp.password_env = Some(v);
            }
            if let Some(v) = var(env::SMTP_PASSWORD_FILE) {
                smtp.password_file = Some(PathBuf::from(v));
            }
            if smtp.host.trim().is_empty() {
                return Err(ConfigError("mail.smtp.host must not be empty".into()));
            }
        }
        let owner = var(env::OWNER).or(fc.owner).unwrap_or_else(|| "mlci".to_owned());
        let mut health = fc.health;
        if let Some(v) = var(env::HEALTH_INTERVAL) {
            health.interval_seconds = v.parse().map_err(|_| {
                ConfigError(format!("{}={v} is not a number of seconds", env::HEALTH_INTERVAL))
            })?;
        }
        let health = health.policy()?;
        let mut server = fc.server;
        if let Some(v) = var(env::LISTEN) {
            server.listen = Some(v.parse().map_err(|_| {
                ConfigError(format!(
                    "{}={v} is not an address like 127.0.0.1:7878",
                    env::LISTEN
                ))
            })?);
        }
        if let Some(v) = var(env::TOKEN_FILE) {
            server.token_file = Some(PathBuf::from(v));
        }
        if let Some(v) = var(env::WEBHOOK_SECRET_FILE) {
            server.webhook_secret_file = Some(PathBuf::from(v));
        }
        let mut swarm = fc.swarm;
        if let Some(v) = var(env::SWARM_REGISTRY) {
            swarm.registry = Some(v);
        }
        if let Some(registry) = &swarm.registry {
            mlci_containers::check_registry(registry).map_err(|e| {
                ConfigError(format!(
                    "swarm.registry ({} or [swarm] registry): {e}",
                    env::SWARM_REGISTRY
                ))
            })?;
        }
        if swarm.check_seconds.is_some_and(|s| !(s.is_finite() && s > 0.0)) {
            return Err(ConfigError(
                "swarm.check_seconds must be a positive number of seconds".into(),
            ));
        }
        Ok(Self {
            file: file_path,
            server,
            swarm,
            data_dir,
            threads,
            db,
            mail,
            owner,
            health,
        })
    }

    pub(crate) fn outbox(&self) -> PathBuf {
        self.mail
            .outbox
            .clone()
            .unwrap_or_else(|| self.layout().outbox_dir())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_refuse_or_lower_and_fill_what_the_spec_leaves_out() {
        let spec = || {
            mlci_core::ExperimentSpec::from_yaml(
                "name: e\nobjective: { metric: val_accuracy }\nsearch_space:\n  \
                 training.learning_rate: { type: float, min: 0.001, max: 0.01 }\n\
                 budget: { max_trials: 100, parallel_trials: 4 }\n",
            )
            .unwrap()
        };
        let strict: FileConfig =
            toml::from_str("[server.policy]\nmax_trials = 20\nmax_trial_seconds = 600\n").unwrap();
        let refusal = strict.server.policy.apply(&mut spec()).unwrap_err();
        assert!(
            refusal.contains("budget.max_trials") && refusal.contains("max_trials = 20"),
            "{refusal}"
        );
        let lenient: FileConfig = toml::from_str(
            "[server.policy]\nmax_trials = 20\nmax_parallel_trials = 2\nmax_trial_seconds = 600\nclamp = true\n",
        )
        .unwrap();
        let mut s = spec();
        let lowered = lenient.server.policy.apply(&mut s).unwrap();
        assert_eq!((s.budget.max_trials, s.budget.parallel_trials), (20, 2));
        assert_eq!(
            s.trial.timeout_seconds,
            Some(600.0),
            "a trial without a timeout gets the ceiling"
        );
        assert_eq!(lowered.len(), 2, "{lowered:?}");
        let swarm: FileConfig =
            toml::from_str("[server.policy]\nmax_trial_cpus = 1.0\nmax_trial_memory_mb = 512\n").unwrap();
        let mut s = spec();
        s.trial.executor = mlci_core::ExecutorKind::Swarm;
        s.trial.swarm = Some(mlci_core::SwarmSpec {
            cpus: Some(4.0),
            ..Default::default()
        });
        let refusal = swarm.server.policy.apply(&mut s.clone()).unwrap_err();
        assert!(
            refusal.contains("trial.swarm.cpus") && refusal.contains("max_trial_cpus"),
            "{refusal}"
        );
        s.trial.swarm.as_mut().unwrap().cpus = Some(0.5);
        swarm.server.policy.apply(&mut s).unwrap();
        let applied = s.trial.swarm.unwrap();
        assert_eq!((applied.cpus, applied.memory_mb), (Some(0.5), Some(512)));
        let open: FileConfig = toml::from_str("").unwrap();
        let mut s = spec();
        assert!(open.server.policy.apply(&mut s).unwrap().is_empty());
        assert_eq!(s, spec(), "no ceilings: the spec as the repository wrote it");
    }

    #[test]
    fn the_swarm_registry_is_checked_when_the_config_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mlci.toml");
        let load = |text: &str| {
            std::fs::write(&file, text).unwrap();
            Config::load(Some(&file), Some(dir.path().to_owned()), Some(1), None)
        };
        let cfg = load("[swarm]\nregistry = \"10.0.0.1:5000\"\ncheck_seconds = 30\n").unwrap();
        assert_eq!(cfg.swarm.registry.as_deref(), Some("10.0.0.1:5000"));
        assert_eq!(cfg.swarm.check_seconds, Some(30.0));
        let err = load("[swarm]\nregistry = \"http://10.0.0.1:5000\"\n")
            .unwrap_err()
            .0;
        assert!(err.contains("swarm.registry") && err.contains("scheme"), "{err}");
        let err = load("[swarm]\ncheck_seconds = -1\n").unwrap_err().0;
        assert!(err.contains("swarm.check_seconds"), "{err}");
        let err = load("[swarm]\nregistery = \"x\"\n").unwrap_err().0;
        assert!(err.contains("registery"), "{err}");
    }

    #[test]
    fn the_policy_refuses_host_commands_unless_the_operator_allows_them() {
        use mlci_core::ExecutorKind::{Container, InProcess, Subprocess, Swarm};
        let file: FileConfig = toml::from_str("[server.policy]\n").unwrap();
        let default = file.server.policy;
        for allowed in [InProcess, Container, Swarm] {
            assert!(default.allows(allowed).is_ok(), "{allowed:?}");
        }
        let refusal = default.allows(Subprocess).unwrap_err();
        assert!(refusal.contains("allow_host_commands"), "{refusal}");
        let open: FileConfig = toml::from_str(
            "[server.policy]\nallow_host_commands = true\nexecutors = [\"container\", \"subprocess\"]\n",
        )
        .unwrap();
        assert!(open.server.policy.allows(Subprocess).is_ok());
        let refusal = open.server.policy.allows(InProcess).unwrap_err();
        assert!(refusal.contains("executors"), "{refusal}");
        assert!(toml::from_str::<FileConfig>("[server.policy]\nallow_everything = true\n").is_err());
    }

    #[test]
    fn secrets_resolve_from_files_and_the_environment_naming_the_reference_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("smtp-password");
        std::fs::write(&file, "hunter2\n").unwrap();
        let resolve = secret_resolver();
        assert_eq!(
            resolve(&SecretRef::File(file.clone())).unwrap().expose(),
            "hunter2"
        );
        // PATH is always set; tests never set variables (other test threads read them).
        let path = std::env::var("PATH").unwrap();
        assert_eq!(resolve(&SecretRef::Env("PATH".into())).unwrap().expose(), path);

        let unset = resolve(&SecretRef::Env("MLCI_TEST_NEVER_SET_42".into())).unwrap_err();
        assert_eq!(
            unset.to_string(),
            "environment variable `MLCI_TEST_NEVER_SET_42` is not set"
        );
        let missing = dir.path().join("missing");
        let error = resolve(&SecretRef::File(missing.clone()))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with(&format!("file {} cannot be read", missing.display())),
            "{error}"
        );
        std::fs::write(&file, "\n").unwrap();
        let error = resolve(&SecretRef::File(file)).unwrap_err().to_string();
        assert!(
            error.ends_with("is empty") && !error.contains("hunter2"),
            "{error}"
        );
    }
}
