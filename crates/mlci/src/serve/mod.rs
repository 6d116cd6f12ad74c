//! `mlci serve`: the step service. `mlci-server` does HTTP, runs, the
//! Jenkins-compatible API and the webhook; this module wires it to mlci's steps
//! ([`steps::Step`], each in its own module), the SCM poller and the health gauges.
//! Training steps run this very binary as a child process (`child`), so a crash or an
//! out-of-memory in training never takes the service down.

mod child;
mod health_check;
mod notify;
mod pipeline;
mod poll;
mod provision;
mod retention;
mod scm_sync;
mod steps;
mod train;
mod tune;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use mlci_core::{EnvironmentStore, RunStore};
use mlci_scm::{RepoSpec, Scm};
use mlci_server::{Gauge, Secret, Server, ServerConfig, WebhookConfig, WebhookRepository};

use crate::cli::ServeArgs;
use crate::config::{env, Config};
use crate::exit::Exit;
use mlci_server::StepSet;
use poll::PollLoop;
use steps::{MlciSteps, Step};

pub(crate) fn cmd_serve(args: ServeArgs, cfg: &Config) -> anyhow::Result<Exit> {
    let token = crate::config::server_secret(env::TOKEN, cfg.server.token_file.as_deref())?;
    let webhook_secret =
        crate::config::server_secret(env::WEBHOOK_SECRET, cfg.server.webhook_secret_file.as_deref())?;
    let config = server_config(&args, cfg, token.clone(), webhook_secret)?;
    let (server, scm) = bind(cfg, config)?;
    let repos = MlciSteps::load_repos(cfg)?;
    let poll_repos: Vec<RepoSpec> = cfg
        .server
        .repositories
        .iter()
        .filter_map(|r| repos.get(&r.name).cloned())
        .collect();
    let addr = server.local_addr();
    let handle = server.shutdown_handle();
    let stop_polling = Arc::new(AtomicBool::new(false));
    let mut signals =
        signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
            .context("cannot install the signal handler")?;
    {
        let stop_polling = stop_polling.clone();
        std::thread::spawn(move || {
            if signals.forever().next().is_some() {
                tracing::info!("shutting down: running steps checkpoint and stop");
                stop_polling.store(true, Ordering::Relaxed);
                handle.trigger();
            }
        });
    }
    if let Some(seconds) = cfg.server.poll_seconds {
        let interval = Duration::try_from_secs_f64(seconds)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                crate::bad(format!(
                    "server.poll_seconds = {seconds}: must be a positive number"
                ))
            })?;
        match token {
            Some(token) if !poll_repos.is_empty() => {
                let poller = PollLoop {
                    scm,
                    repos: poll_repos,
                    state: cfg.layout().poll_state_file(),
                    url: format!("http://{addr}/api/v1/steps/pipeline"),
                    token,
                };
                std::thread::spawn(move || poller.run(interval, &stop_polling));
            }
            Some(_) => tracing::warn!("server.poll_seconds is set but no [[server.repositories]] to poll"),
            None => tracing::warn!("server.poll_seconds is set but there is no API token to start runs with"),
        }
    }
    tracing::info!(%addr, db = %cfg.db.display(), "mlci serve listening");
    crate::emit_plain(&format!("listening on http://{addr}"));
    server.run(std::future::pending())?;
    Ok(Exit::Success)
}

/// The step service of `cfg` bound to `config.listen`, not yet serving (`mlci serve`, and
/// `mlci demo` in process), with the SCM its steps and the poller share.
pub(crate) fn bind(cfg: &Config, config: ServerConfig) -> anyhow::Result<(Server, Arc<Scm>)> {
    let store = Arc::new(crate::open_store(&cfg.db)?);
    let scm = Arc::new(Scm::new(cfg.layout().scm_dir()).with_secrets(crate::config::secret_resolver()));
    let repos = MlciSteps::load_repos(cfg)?;
    let workspace_repos: Vec<RepoSpec> = repos.values().cloned().collect();
    let steps = Arc::new(MlciSteps {
        cfg: cfg.clone(),
        exe: std::env::current_exe().context("cannot find the mlci binary")?,
        scm: scm.clone(),
        repos: Mutex::new(repos),
        store: store.clone(),
    });
    let health_store = store.clone();
    let server = Server::bind(config, store.clone() as Arc<dyn RunStore>, steps)?
        .experiments(store)
        .readiness_check(Arc::new(|| {
            crate::env::engine()
                .map(drop)
                .map_err(|e| format!("docker engine: {e:#}"))
        }))
        .gauges(Arc::new(move || health_gauges(health_store.as_ref())))
        .retention_hook(retention::workspace_sweep(scm.clone(), workspace_repos));
    Ok((server, scm))
}

/// The service's own configuration from mlci's: address, token, webhook secret.
pub(crate) fn server_config(
    args: &ServeArgs,
    cfg: &Config,
    token: Option<Secret>,
    webhook_secret: Option<Secret>,
) -> anyhow::Result<ServerConfig> {
    let mut config = ServerConfig::new(cfg.layout().artifacts_dir());
    if let Some(listen) = args.listen.or(cfg.server.listen) {
        config.listen = listen;
    }
    config.public_url = cfg.server.public_url.clone();
    if let Some(open) = cfg.server.read_only_open {
        config.read_only_open = open;
    }
    if let Some(n) = cfg.server.runs_per_minute_per_caller {
        config.max_runs_per_minute_per_caller = n;
    }
    if let Some(n) = cfg.server.log_streams {
        config.max_log_followers = n;
    }
    if let Some(n) = cfg.server.log_streams_per_caller {
        config.max_log_followers_per_caller = n;
    }
    match token {
        Some(token) => config.tokens.push(token),
        None => tracing::warn!(
            "no API token ({} or [server] token_file): every mutating request will be refused",
            env::TOKEN
        ),
    }
    config.retention = retention_config(&cfg.server.retention)?;
    for (step, file) in &cfg.server.build_token_files {
        if !Step::names().contains(&step.as_str()) {
            return Err(crate::bad(format!(
                "server.build_token_files: no step `{step}` (steps: {})",
                Step::names().join(", ")
            )));
        }
        config
            .build_tokens
            .insert(step.clone(), crate::config::file_secret(file)?);
    }
    if let Some(secret) = webhook_secret {
        config.webhook = Some(WebhookConfig {
            secret,
            repositories: cfg
                .server
                .repositories
                .iter()
                .map(|r| WebhookRepository {
                    name: r.name.clone(),
                    urls: std::iter::once(r.url.clone())
                        .chain(r.aliases.iter().cloned())
                        .collect(),
                    branch: r.branch.clone(),
                })
                .collect(),
            step: "pipeline".into(),
        });
    }
    Ok(config)
}

fn retention_config(
    section: &crate::config::RetentionSection,
) -> anyhow::Result<mlci_server::RetentionConfig> {
    let mut retention = mlci_server::RetentionConfig::default();
    if let Some(n) = section.keep_runs {
        if n == 0 {
            return Err(crate::bad("server.retention.keep_runs = 0: must be at least 1"));
        }
        retention.keep_runs = Some(n);
    }
    if let Some(days) = section.keep_days {
        if !(days.is_finite() && days > 0.0) {
            return Err(crate::bad(format!(
                "server.retention.keep_days = {days}: must be a positive number of days"
            )));
        }
        retention.keep_days = Some(days);
    }
    if let Some(seconds) = section.check_seconds {
        retention.interval = Duration::try_from_secs_f64(seconds)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                crate::bad(format!(
                    "server.retention.check_seconds = {seconds}: must be a positive number"
                ))
            })?;
    }
    Ok(retention)
}

/// `/metrics` gauges of the health watcher: relaunches, environments by state.
fn health_gauges(store: &dyn EnvironmentStore) -> Vec<Gauge> {
    let envs = store.environments().unwrap_or_default();
    let mut gauges = vec![Gauge {
        name: "mlci_health_relaunches_total".into(),
        help: "Relaunches of registered environments by the health watcher".into(),
        labels: vec![],
        value: envs.iter().map(|e| f64::from(e.total_restarts)).sum(),
    }];
    for state in ["running", "waiting", "completed", "crash_loop", "failed"] {
        gauges.push(Gauge {
            name: "mlci_environments".into(),
            help: "Registered environments by state".into(),
            labels: vec![("state".into(), state.into())],
            value: envs.iter().filter(|e| e.state.as_str() == state).count() as f64,
        });
    }
    gauges
}
