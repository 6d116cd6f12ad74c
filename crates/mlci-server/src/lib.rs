//! `mlci-server`: the step service behind `mlci serve`.
//!
//! Every request to run a step (`POST /api/v1/steps/{step}`, a Jenkins
//! `buildWithParameters`, a GitHub push) becomes a **run** in the [`RunStore`], executed in
//! the background by the caller's [`Steps`] on a blocking thread, with its log written to
//! the store line by line (readable while it runs) and its files in its artifacts folder.
//! The same runs are offered as the v1 JSON API (`docs/step-api.md`, the contract), as a
//! Jenkins-compatible API (jobs = steps, builds = runs) and on a small dashboard at `/`.
//! With an experiments source ([`Server::experiments`]) the dashboard also shows tuning
//! experiments live (their trials, best-so-far and learning curves), read only.
//!
//! Entry points: [`Server::bind`] (listen, possibly on port 0; [`Server::local_addr`]),
//! then [`Server::run`] (blocking: owns a multi-threaded tokio runtime, returns after a
//! graceful shutdown). [`NoopSteps`] provides the built-in `noop` step for tests and
//! benchmarks.
//!
//! **Invariants:**
//! - no request path reaches the filesystem unchecked: artifact names are plain file names
//!   that must also appear in the run's folder listing; run ids come from the store;
//! - tokens and secrets are never logged (request spans record the method and path only,
//!   never headers or query strings; [`Secret`]'s `Debug` is redacted) and are compared in
//!   constant time;
//! - a webhook body is parsed only after its signature was verified over the raw bytes;
//! - steps never run on the async executor; store calls from handlers go to blocking
//!   threads too;
//! - the crate reads no environment variable and no file other than artifacts.

mod api;
mod auth;
mod config;
mod error;
mod experiments;
mod jenkins;
mod limits;
mod listen;
mod metrics;
mod ops;
mod params;
mod retention;
mod state;
mod steps;
mod trigger;
mod webhook;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use mlci_core::{RunStore, Store};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub use config::{Secret, ServerConfig, WebhookConfig, WebhookRepository};
pub use error::ServerError;
pub use jenkins::JENKINS_VERSION;
pub use metrics::Gauge;
pub use ops::{openapi_document, openapi_document_for, ROUTES};
pub use params::{field_names, param_definitions, params_schema, parse_params, RawParams};
pub use retention::{RetentionConfig, RetentionHook};
/// For [`step_set!`]: the JSON value type its schemas are.
pub use serde_json::Value as JsonValue;
pub use state::{GaugeSource, ReadinessCheck};
pub use steps::{
    run_noop, NoopParams, NoopStep, NoopSteps, ParamDef, ParamError, ParamKind, RunContext, StepFailure,
    StepOutput, StepSet, Steps,
};
pub use trigger::{JenkinsTarget, JENKINS_TRIGGER_STEP};
pub use webhook::{signature, signature_valid};

use error::ApiError;
use state::{AppState, Inner};

/// Ends [`Server::run`] from anywhere (another thread, a signal handler's thread).
#[derive(Debug, Clone)]
pub struct ShutdownHandle(Arc<watch::Sender<bool>>);

impl ShutdownHandle {
    /// Begin the graceful shutdown: stop accepting, cancel runs, wait for them (bounded).
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

/// A bound, not yet serving, step service.
pub struct Server {
    runtime: tokio::runtime::Runtime,
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    config: ServerConfig,
    store: Arc<dyn RunStore>,
    experiments: Option<Arc<dyn Store>>,
    steps: Arc<dyn steps::DynSteps>,
    readiness: Vec<ReadinessCheck>,
    gauges: Vec<GaugeSource>,
    retention_hook: Option<RetentionHook>,
    shutdown: ShutdownHandle,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .field("config", &self.config)
            .field("experiments", &self.experiments.is_some())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Start the runtime and bind `config.listen` (port 0 picks a free port).
    pub fn bind<S: Steps>(
        config: ServerConfig,
        store: Arc<dyn RunStore>,
        steps: Arc<S>,
    ) -> Result<Self, ServerError> {
        let steps: Arc<dyn steps::DynSteps> = Arc::new(steps::Erased(steps));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("mlci-server")
            .enable_all()
            .build()
            .map_err(ServerError::Runtime)?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(config.listen))
            .map_err(|source| ServerError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
        Ok(Self {
            runtime,
            listener,
            addr,
            config,
            store,
            experiments: None,
            steps,
            readiness: Vec::new(),
            gauges: Vec::new(),
            retention_hook: None,
            shutdown: ShutdownHandle(Arc::new(watch::channel(false).0)),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Add a readiness check for `/readyz` (e.g. the Docker Engine answers a ping). Called
    /// on a blocking thread at each request.
    pub fn readiness_check(mut self, check: ReadinessCheck) -> Self {
        self.readiness.push(check);
        self
    }

    /// Add gauges to `/metrics` (e.g. health relaunches). Called on a blocking thread at
    /// each scrape.
    pub fn gauges(mut self, source: GaugeSource) -> Self {
        self.gauges.push(source);
        self
    }

    /// Where experiments are read from, for `GET /api/v1/experiments[/{id}]` and the
    /// dashboard (read only; called on blocking threads). Without one those routes answer
    /// 503.
    pub fn experiments(mut self, store: Arc<dyn Store>) -> Self {
        self.experiments = Some(store);
        self
    }

    /// What retention also removes once runs are gone (the binary's SCM workspaces): see
    /// [`RetentionHook`]. Only called when `config.retention` keeps a bound.
    pub fn retention_hook(mut self, hook: RetentionHook) -> Self {
        self.retention_hook = Some(hook);
        self
    }

    /// A handle that ends [`Server::run`].
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Serve until `shutdown` completes (or the handle is triggered), then shut down
    /// gracefully: stop accepting, set every run's cancel flag and wait up to
    /// `shutdown_grace` for them to finish. First, runs left `queued`/`running` by a
    /// previous process are resumed or marked `interrupted`. Blocks the calling thread.
    pub fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServerError> {
        let Server {
            runtime,
            listener,
            addr,
            config,
            store,
            experiments,
            steps,
            readiness,
            gauges,
            retention_hook,
            shutdown: handle,
        } = self;
        std::fs::create_dir_all(&config.artifacts_dir).map_err(|source| ServerError::Artifacts {
            path: config.artifacts_dir.clone(),
            source,
        })?;
        let grace = config.shutdown_grace;
        let config_followers = config.max_log_followers.max(1);
        let state = AppState(Arc::new(Inner {
            config,
            store,
            experiments,
            summaries: Default::default(),
            steps,
            metrics: metrics::Metrics::default(),
            readiness,
            gauges,
            active: Mutex::new(HashMap::new()),
            running: watch::channel(0).0,
            log_signal: Arc::new(watch::channel(0).0),
            followers: Arc::new(tokio::sync::Semaphore::new(config_followers)),
            callers: Default::default(),
            stopping: Default::default(),
            crumb: new_crumb(),
        }));
        let result = runtime.block_on(async move {
            let recovering = state.clone();
            tokio::task::spawn_blocking(move || recovering.recover())
                .await
                .map_err(|e| ServerError::Recover(mlci_core::StoreError(e.to_string())))?
                .map_err(ServerError::Recover)?;
            let app = router(state.clone());
            let limits = listen::Limits {
                header_read_timeout: state.config.header_read_timeout,
                max_connections: state.config.max_connections,
            };
            let sweeping = tokio::spawn(retention::run(state.clone(), retention_hook));
            let serving = tokio::spawn(listen::serve(listener, app, limits, handle.0.subscribe()));
            let trigger = handle.clone();
            tokio::spawn(async move {
                shutdown.await;
                trigger.trigger();
            });
            tracing::info!(%addr, "mlci serve listening");
            let mut stop = handle.0.subscribe();
            let _ = stop.wait_for(|s| *s).await;
            tracing::info!("shutting down: cancelling runs");
            sweeping.abort();
            state.stopping.store(true, Ordering::SeqCst);
            state.cancel_all();
            if !state.drain(grace).await {
                tracing::warn!(
                    ?grace,
                    "runs still executing after the grace period; they will be interrupted"
                );
            }
            match tokio::time::timeout(Duration::from_secs(5), serving).await {
                Ok(Ok(Ok(()))) => Ok(()),
                Ok(Ok(Err(e))) => Err(ServerError::Serve(e)),
                Ok(Err(e)) => Err(ServerError::Serve(std::io::Error::other(e))),
                Err(_) => {
                    tracing::warn!("connections still open after shutdown; closing them");
                    Ok(())
                }
            }
        });
        runtime.shutdown_timeout(Duration::from_secs(1));
        tracing::info!("mlci serve stopped");
        result
    }
}

/// Completes on SIGTERM (how Jenkins and Docker stop a process) or SIGINT (Ctrl-C): the
/// usual `shutdown` for [`Server::run`]. If the handlers cannot be installed it logs why and
/// never completes (use a [`ShutdownHandle`] then).
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    futures_util::future::select(std::pin::pin!(interrupt), std::pin::pin!(terminate)).await;
    tracing::info!("shutdown signal received");
}

fn new_crumb() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let digest = Sha256::digest(format!("{nanos}-{}", std::process::id()).as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Request ids: `<process start in hex>-<counter>`, unique within a process's life.
#[derive(Debug, Clone)]
struct RequestIds {
    prefix: Arc<str>,
    next: Arc<AtomicU64>,
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _request: &axum::http::Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{}-{n}", self.prefix))
            .ok()
            .map(RequestId::new)
    }
}

/// Counts requests by matched route (templates, not paths, so labels stay few).
async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    state.metrics.request(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// On every response: `X-Jenkins`; errors without a JSON body (413 from the body limit,
/// 408 from the timeout, 405) get one.
async fn common_headers(mut response: Response) -> Response {
    let status = response.status();
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if status.as_u16() >= 400 && !json {
        let message = status.canonical_reason().unwrap_or("error").to_lowercase();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "request body too large".to_owned()
        } else {
            message
        };
        let headers = response.headers().clone();
        response = ApiError::new(status, message).into_response();
        for (name, value) in headers.iter() {
            if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                response.headers_mut().append(name, value.clone());
            }
        }
    }
    response
        .headers_mut()
        .insert("x-jenkins", HeaderValue::from_static(JENKINS_VERSION));
    response
}

async fn fallback() -> ApiError {
    ApiError::not_found("no such route (see /api/v1/openapi.json)")
}

fn router(state: AppState) -> Router {
    let config = &state.config;
    let protected = api::router()
        .merge(experiments::router())
        .merge(jenkins::router())
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_token));
    let open = ops::router().merge(webhook::router());
    let prefix = format!(
        "{:x}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default()
    );
    let ids = RequestIds {
        prefix: prefix.into(),
        next: Arc::new(AtomicU64::new(1)),
    };
    protected
        .merge(open)
        .route_layer(middleware::from_fn_with_state(state.clone(), track))
        .fallback(fallback)
        .layer(DefaultBodyLimit::disable())
        .layer(RequestBodyLimitLayer::new(config.body_limit_bytes))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, config.request_timeout))
        .layer(middleware::map_response(common_headers))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            let id = request
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            // The path only: query strings may carry a Jenkins `token=`.
            tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
        }))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(ids))
        .with_state(state)
}
