//! Operations: `/healthz`, `/readyz`, `/metrics`, `/api/v1/openapi.json`, the dashboard at `/`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use crate::state::AppState;

/// Every route the service answers: (method, path, summary). The OpenAPI document is built
/// from this table; a test checks that every `.route(...)` in the source is in it.
pub const ROUTES: &[(&str, &str, &str)] = &[
    (
        "post",
        "/api/v1/steps/{step}",
        "Start a run of a step (202 + Location; Idempotency-Key: the same run, 200)",
    ),
    (
        "get",
        "/api/v1/runs",
        "List runs, newest first (?step=, ?state=a,b, ?limit=)",
    ),
    ("get", "/api/v1/runs/{id}", "A run"),
    ("delete", "/api/v1/runs/{id}", "Cancel a run (202)"),
    (
        "get",
        "/api/v1/runs/{id}/log",
        "The run's log from ?offset=N (X-Log-Offset, X-More-Data), or ?follow=1 as a stream",
    ),
    (
        "get",
        "/api/v1/runs/{id}/artifacts",
        "The run's artifacts: [{name, size}]",
    ),
    ("get", "/api/v1/runs/{id}/artifacts/{name}", "One artifact"),
    (
        "get",
        "/api/v1/experiments",
        "Tuning experiments, newest first, with their best value (?limit=; 503 without a source)",
    ),
    (
        "get",
        "/api/v1/experiments/{id}",
        "An experiment: its trials with params and steps, best-so-far, events",
    ),
    // The Jenkins-compatible API (docs/jenkins-api.md): every path also with a trailing
    // slash; {flavor} is json, xml or python.
    (
        "get",
        "/api/{flavor}",
        "Jenkins: the instance and its jobs (one per step)",
    ),
    (
        "get",
        "/crumbIssuer/api/{flavor}",
        "Jenkins: a crumb (not required with a token; ?xpath= on xml)",
    ),
    ("get", "/me/api/{flavor}", "Jenkins: the authenticated user"),
    ("get", "/whoAmI/api/{flavor}", "Jenkins: who the caller is"),
    (
        "get",
        "/computer/api/{flavor}",
        "Jenkins: the built-in node and its busy executors",
    ),
    ("get", "/queue/api/{flavor}", "Jenkins: waiting queue items"),
    (
        "get",
        "/queue/item/{n}/api/{flavor}",
        "Jenkins: a queue item (executable once started)",
    ),
    (
        "post",
        "/queue/cancelItem",
        "Jenkins: cancel a waiting queue item (?id=; 204, 409 once started)",
    ),
    (
        "get",
        "/job/{job}/api/{flavor}",
        "Jenkins: a job (builds, permalinks, parameter definitions)",
    ),
    (
        "post",
        "/job/{job}/build",
        "Jenkins: start a build (201 + Location of the queue item; ?token= a job build token)",
    ),
    (
        "post",
        "/job/{job}/buildWithParameters",
        "Jenkins: start a build with parameters (query, form or multipart; 201 + Location)",
    ),
    (
        "get",
        "/job/{job}/{n}/api/{flavor}",
        "Jenkins: a build ({n}: a number or a permalink such as lastBuild)",
    ),
    (
        "get",
        "/job/{job}/{n}/buildNumber",
        "Jenkins: a build's number, as text",
    ),
    ("get", "/job/{job}/{n}/consoleText", "Jenkins: a build's console"),
    (
        "get",
        "/job/{job}/{n}/logText/progressiveText",
        "Jenkins: the console from ?start=N (X-Text-Size, X-More-Data)",
    ),
    (
        "get",
        "/job/{job}/{n}/logText/progressiveHtml",
        "Jenkins: the console from ?start=N, as HTML",
    ),
    ("post", "/job/{job}/{n}/stop", "Jenkins: abort a build"),
    (
        "get",
        "/job/{job}/{n}/artifact/{name}",
        "Jenkins: a build artifact",
    ),
    (
        "post",
        "/github-webhook/",
        "GitHub push events (X-Hub-Signature-256)",
    ),
    (
        "post",
        "/github-webhook",
        "GitHub push events (without the trailing slash)",
    ),
    ("get", "/healthz", "Liveness: 200 while the process serves"),
    (
        "get",
        "/readyz",
        "Readiness: the store and the caller's checks (Docker Engine)",
    ),
    ("get", "/metrics", "Prometheus metrics"),
    ("get", "/api/v1/openapi.json", "This document"),
    ("get", "/", "The dashboard: experiments (live), runs and logs"),
];

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/", get(dashboard))
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(State(state): State<AppState>) -> Response {
    let mut problems = Vec::new();
    if let Err(e) = state.db(|s| s.ping()).await {
        problems.push(format!("store: {}", e.message));
    }
    let checks = state.readiness.clone();
    let more = tokio::task::spawn_blocking(move || {
        checks
            .iter()
            .filter_map(|check| check().err())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_else(|e| vec![format!("readiness check panicked: {e}")]);
    problems.extend(more);
    if problems.is_empty() {
        Json(json!({"status": "ready"})).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "problems": problems})),
        )
            .into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let counts = match state.db(|s| s.run_counts()).await {
        Ok(counts) => counts,
        Err(e) => return e.into_response(),
    };
    let sources = state.gauges.clone();
    let gauges = tokio::task::spawn_blocking(move || sources.iter().flat_map(|g| g()).collect::<Vec<_>>())
        .await
        .unwrap_or_default();
    let text = state.metrics.render(&counts, &state.steps.names(), &gauges);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response()
}

/// The OpenAPI 3.1 document of [`ROUTES`].
pub fn openapi_document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for (method, path, summary) in ROUTES {
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut op =
            json!({"summary": summary, "responses": {"default": {"description": "see docs/step-api.md"}}});
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        if *method != "get" {
            op["security"] = json!([{"bearer": []}, {"basic": []}]);
        }
        if let Value::Object(entry) = paths.entry(path.to_string()).or_insert_with(|| json!({})) {
            entry.insert(method.to_string(), op);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "mlci step service", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Runs of mlci steps; see docs/step-api.md"},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "basic": {"type": "http", "scheme": "basic"},
            },
            "schemas": {
                "Run": {"type": "object", "properties": {
                    "id": {"type": "string"}, "step": {"type": "string"}, "number": {"type": "integer"},
                    "state": {"enum": ["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]},
                    "outcome": {"enum": ["success", "unstable", "failure", "aborted", null]},
                    "params": {"type": "object"}, "result": {"type": ["object", "null"]},
                    "error": {"type": ["string", "null"]},
                    "created_at": {"type": "number"}, "started_at": {"type": ["number", "null"]},
                    "finished_at": {"type": ["number", "null"]},
                }},
                "ExperimentSummary": {"type": "object", "properties": {
                    "id": {"type": "string"}, "name": {"type": "string"},
                    "state": {"enum": ["running", "succeeded", "budget_exhausted", "failed"]},
                    "created_at": {"type": "number"}, "updated_at": {"type": "number"},
                    "objective": {"type": "object", "properties": {
                        "metric": {"type": "string"}, "direction": {"enum": ["maximize", "minimize"]},
                        "goal": {"type": ["number", "null"]},
                    }},
                    "best_trial": {"type": ["integer", "null"]}, "best_value": {"type": ["number", "null"]},
                    "goal_met": {"type": "boolean"}, "trial_count": {"type": "integer"},
                    "max_trials": {"type": "integer"},
                }},
                "Experiment": {"allOf": [{"$ref": "#/components/schemas/ExperimentSummary"}, {
                    "type": "object", "properties": {
                        "curve_metric": {"type": "string"},
                        "trials": {"type": "array", "items": {"type": "object", "properties": {
                            "number": {"type": "integer"},
                            "state": {"enum": ["pending", "running", "completed", "pruned", "failed", "stopped"]},
                            "params": {"type": "object"}, "value": {"type": ["number", "null"]},
                            "steps": {"type": "array", "items": {"type": "object", "properties": {
                                "step": {"type": "integer"}, "values": {"type": "object"},
                            }}},
                        }}},
                        "best_so_far": {"type": "array", "items": {"type": "object", "properties": {
                            "trial": {"type": "integer"}, "value": {"type": "number"},
                        }}},
                        "events": {"type": "array", "items": {"type": "object"}},
                    },
                }]},
                "Error": {"type": "object", "properties": {
                    "error": {"type": "string"}, "field": {"type": ["string", "null"]},
                }},
            },
        },
    })
}

/// [`openapi_document`] with the parameters' schemas of the step set `S` (from its params
/// structs): `components.schemas.params-<step>`, and the body of `POST
/// /api/v1/steps/{step}` as one of them. What the service answers at
/// `/api/v1/openapi.json`.
pub fn openapi_document_for<S: crate::StepSet>() -> Value {
    let names: Vec<String> = S::names().into_iter().map(str::to_owned).collect();
    with_step_schemas(&names, &|step| S::schema(step))
}

fn with_step_schemas(names: &[String], schema: &dyn Fn(&str) -> Option<Value>) -> Value {
    let mut doc = openapi_document();
    let mut refs = Vec::new();
    for step in names {
        if let Some(mut schema) = schema(step) {
            if let Value::Object(m) = &mut schema {
                m.remove("$schema");
                m.insert("x-mlci-step".into(), json!(step));
            }
            let name = format!("params-{step}");
            refs.push(json!({"$ref": format!("#/components/schemas/{name}")}));
            doc["components"]["schemas"][name] = schema;
        }
    }
    if let Some(op) = doc["paths"]["/api/v1/steps/{step}"].get_mut("post") {
        op["requestBody"] = json!({
            "required": false,
            "content": {"application/json": {"schema": {"oneOf": refs}}},
        });
    }
    doc
}

async fn openapi(State(state): State<AppState>) -> Json<Value> {
    let steps = &state.steps;
    Json(with_step_schemas(&steps.names(), &|step| steps.schema(step)))
}

async fn dashboard() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("dashboard.html"),
    )
        .into_response()
}
