//! The service's configuration, filled in by the binary (which reads files, environment and
//! flags; this crate reads none of them).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// A secret (API token, webhook secret): the one resolved-secret type of mlci, from
/// `mlci-core`. Its `Debug` is redacted, and it is never logged; the binary resolves it.
pub use mlci_core::Secret;

/// A repository whose pushes start the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRepository {
    /// mlci's name for it (the `repository` parameter of the pipeline run).
    pub name: String,
    /// URLs (clone, SSH or web) or `owner/name`, any of which the payload's repository must
    /// match (compared without a trailing `.git` or `/`, ignoring case).
    pub urls: Vec<String>,
    /// The branch whose pushes count (`main`).
    pub branch: String,
}

/// The GitHub webhook (`POST /github-webhook/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// The secret GitHub signs deliveries with (`X-Hub-Signature-256`).
    pub secret: Secret,
    pub repositories: Vec<WebhookRepository>,
    /// The step a push starts, with `{repository, url, branch, commit}`: `pipeline` (the
    /// binary's), or `jenkins-trigger` to start a job on a real Jenkins instead.
    pub step: String,
}

/// Everything [`Server::bind`](crate::Server::bind) needs besides the store and the steps.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen (default `127.0.0.1:7878`; port 0 picks a free port).
    pub listen: SocketAddr,
    /// API tokens accepted for mutating requests (`Bearer`, or Basic with the token as
    /// password). With none, every mutating request is refused.
    pub tokens: Vec<Secret>,
    /// Whether GET requests are answered without a token (default false: with a token
    /// set, reads need it too; the operator opens them).
    pub read_only_open: bool,
    /// Largest request body accepted; larger ones get 413 (default 2 MiB).
    pub body_limit_bytes: usize,
    /// Longest time a request may take until its response starts (default 30 s); log
    /// streams are not limited once they started.
    pub request_timeout: Duration,
    /// How long shutdown waits for cancelled runs to finish (default 30 s).
    pub shutdown_grace: Duration,
    /// Longest time a client may take to send a request's headers, the first one or the
    /// next on a kept-alive connection (default 10 s); then the connection is closed.
    pub header_read_timeout: Duration,
    /// Most connections open at once (default 512); more wait to be accepted, so a flood
    /// cannot exhaust the service's file descriptors.
    pub max_connections: usize,
    /// Most log streams (`?follow=1`) open at once (default 64); more get 429.
    pub max_log_followers: usize,
    /// Most log streams one caller (its credentials, or anonymous) holds open (default 8).
    pub max_log_followers_per_caller: usize,
    /// Most runs one caller starts per minute (default 120); more get 429.
    pub max_runs_per_minute_per_caller: u32,
    /// Each run's artifacts folder is `artifacts_dir/<run id>`.
    pub artifacts_dir: PathBuf,
    /// The URL clients reach the service at, for Jenkins' `url` fields and `Location`
    /// headers (default: from the request's `Host`).
    pub public_url: Option<String>,
    pub webhook: Option<WebhookConfig>,
    /// Jenkins' "Trigger builds remotely" per job: `POST /job/STEP/build?token=…` starts
    /// STEP without an API token when `token` is this step's (Jenkins' per-job
    /// authentication token). No step has one by default.
    pub build_tokens: std::collections::BTreeMap<String, Secret>,
    /// Which finished runs are removed, with their logs and artifacts (none by default).
    pub retention: crate::RetentionConfig,
    /// A Jenkins job to trigger: enables the built-in `jenkins-trigger` step (which the
    /// webhook can start by naming it as its `step`).
    pub jenkins: Option<crate::JenkinsTarget>,
}

impl ServerConfig {
    /// The default port: 7878 (8080 belongs to Jenkins).
    pub const DEFAULT_PORT: u16 = 7878;

    /// Defaults, with runs' artifacts under `artifacts_dir`.
    pub fn new(artifacts_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, Self::DEFAULT_PORT)),
            tokens: Vec::new(),
            read_only_open: false,
            body_limit_bytes: 2 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            max_connections: 512,
            max_log_followers: 64,
            max_log_followers_per_caller: 8,
            max_runs_per_minute_per_caller: 120,
            artifacts_dir: artifacts_dir.into(),
            public_url: None,
            webhook: None,
            build_tokens: std::collections::BTreeMap::new(),
            retention: crate::RetentionConfig::default(),
            jenkins: None,
        }
    }
}
