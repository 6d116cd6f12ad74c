//! The Jenkins-compatible API: the same runs as jobs (one per step) and builds, for
//! python-jenkins and the Parameterized Remote Trigger plugin. Shapes and `_class` values
//! follow Jenkins 2.462; `?tree=` and `?depth=` are accepted and ignored (the full object
//! is returned, which Jenkins clients tolerate).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use mlci_core::{Outcome, RunFilter, RunRecord, RunState};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::api::{artifact_response, artifacts, log_slice};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;
use crate::steps::ParamKind;

/// The Jenkins version this API imitates (the `X-Jenkins` header).
pub const JENKINS_VERSION: &str = "2.462.3";

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/json", get(hudson))
        .route("/crumbIssuer/api/json", get(crumb))
        .route("/me/api/json", get(me))
        .route("/whoAmI/api/json", get(who_am_i))
        .route("/queue/api/json", get(queue))
        .route("/queue/item/{n}/api/json", get(queue_item))
        .route("/job/{job}/api/json", get(job))
        .route("/job/{job}/build", post(build))
        .route("/job/{job}/buildWithParameters", post(build))
        .route("/job/{job}/{n}/api/json", get(build_info))
        .route("/job/{job}/{n}/consoleText", get(console_text))
        .route("/job/{job}/{n}/logText/progressiveText", get(progressive_text))
        .route("/job/{job}/{n}/stop", post(stop))
        .route("/job/{job}/{n}/artifact/{name}", get(artifact))
}

fn color(last: Option<&RunRecord>) -> String {
    let Some(run) = last else { return "notbuilt".into() };
    let base = match run.outcome {
        Some(Outcome::Success) => "blue",
        Some(Outcome::Unstable) => "yellow",
        Some(Outcome::Failure) => "red",
        Some(Outcome::Aborted) => "aborted",
        None => "notbuilt",
    };
    if run.state.is_finished() {
        base.into()
    } else {
        format!("{base}_anime")
    }
}

fn job_url(base: &str, job: &str) -> String {
    format!("{base}job/{job}/")
}

fn build_url(base: &str, run: &RunRecord) -> String {
    format!("{base}job/{}/{}/", run.step, run.number)
}

fn build_ref(base: &str, run: &RunRecord) -> Value {
    json!({"_class": "hudson.model.FreeStyleBuild", "number": run.number, "url": build_url(base, run)})
}

fn millis(seconds: f64) -> i64 {
    (seconds * 1000.0).round() as i64
}

async fn latest(state: &AppState, step: Option<String>, limit: usize) -> Result<Vec<RunRecord>, ApiError> {
    let filter = RunFilter {
        step,
        states: Vec::new(),
        limit: Some(limit),
    };
    state.db(move |s| s.runs(&filter)).await
}

async fn hudson(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let base = state.base_url(&headers);
    let mut jobs = Vec::new();
    for name in state.steps.names() {
        let last = latest(&state, Some(name.clone()), 1).await?;
        jobs.push(json!({
            "_class": "hudson.model.FreeStyleProject",
            "name": name,
            "url": job_url(&base, &name),
            "color": color(last.first()),
        }));
    }
    Ok(Json(json!({
        "_class": "hudson.model.Hudson",
        "assignedLabels": [{"name": "built-in"}],
        "mode": "NORMAL",
        "nodeDescription": "mlci step service",
        "nodeName": "",
        "numExecutors": 0,
        "description": null,
        "jobs": jobs,
        "overallLoad": {},
        "primaryView": {"_class": "hudson.model.AllView", "name": "all", "url": base},
        "quietingDown": false,
        "slaveAgentPort": -1,
        "unlabeledLoad": {"_class": "jenkins.model.UnlabeledLoadStatistics"},
        "url": base,
        "useCrumbs": true,
        "useSecurity": true,
        "views": [{"_class": "hudson.model.AllView", "name": "all", "url": base}],
    })))
}

async fn crumb(State(state): State<AppState>) -> Json<Value> {
    Json(json!({
        "_class": "hudson.security.csrf.DefaultCrumbIssuer",
        "crumb": state.crumb,
        "crumbRequestField": "Jenkins-Crumb",
    }))
}

fn user_name(caller: &Caller) -> Option<&str> {
    match caller {
        Caller::Anonymous => None,
        Caller::User(name) => Some(name),
    }
}

async fn me(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
) -> Response {
    let caller = caller.map(|Extension(c)| c).unwrap_or(Caller::Anonymous);
    let Some(name) = user_name(&caller) else {
        return crate::auth::unauthorized("not logged in");
    };
    let base = state.base_url(&headers);
    Json(json!({
        "_class": "hudson.model.User",
        "absoluteUrl": format!("{base}user/{name}"),
        "description": null,
        "fullName": name,
        "id": name,
        "property": [],
    }))
    .into_response()
}

async fn who_am_i(caller: Option<Extension<Caller>>) -> Json<Value> {
    let caller = caller.map(|Extension(c)| c).unwrap_or(Caller::Anonymous);
    let name = user_name(&caller);
    Json(json!({
        "_class": "hudson.security.WhoAmI",
        "anonymous": name.is_none(),
        "authenticated": name.is_some(),
        "authorities": if name.is_some() { json!(["authenticated"]) } else { json!([]) },
        "name": name.unwrap_or("anonymous"),
    }))
}

fn task(base: &str, run: &RunRecord) -> Value {
    json!({
        "_class": "hudson.model.FreeStyleProject",
        "name": run.step,
        "url": job_url(base, &run.step),
        "color": color(Some(run)),
    })
}

/// A run as a queue item: waiting until it starts, left (with its build) after.
fn queue_item_json(base: &str, run: &RunRecord) -> Value {
    let params: String = serde_json::from_str::<Map<String, Value>>(&run.params)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("\n{k}={}", text_value(v)))
                .collect()
        })
        .unwrap_or_default();
    let mut item = json!({
        "actions": [{"_class": "hudson.model.ParametersAction", "parameters": parameter_values(run)}],
        "blocked": false,
        "buildable": false,
        "id": run.seq,
        "inQueueSince": millis(run.created_at),
        "params": params,
        "stuck": false,
        "task": task(base, run),
        "url": format!("queue/item/{}/", run.seq),
        "why": null,
    });
    let started = run.state != RunState::Queued || run.started_at.is_some();
    if let Value::Object(map) = &mut item {
        if started {
            map.insert("_class".into(), json!("hudson.model.Queue$LeftItem"));
            map.insert(
                "cancelled".into(),
                json!(run.state == RunState::Cancelled && run.started_at.is_none()),
            );
            map.insert("executable".into(), build_ref(base, run));
        } else {
            map.insert("_class".into(), json!("hudson.model.Queue$WaitingItem"));
            map.insert("timestamp".into(), json!(millis(run.created_at)));
            map.insert("why".into(), json!("Waiting for next available executor"));
        }
    }
    item
}

fn text_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn parameter_values(run: &RunRecord) -> Vec<Value> {
    serde_json::from_str::<Map<String, Value>>(&run.params)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    json!({"_class": "hudson.model.StringParameterValue", "name": k, "value": text_value(v)})
                })
                .collect()
        })
        .unwrap_or_default()
}

async fn queue(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let base = state.base_url(&headers);
    let filter = RunFilter {
        states: vec![RunState::Queued],
        ..RunFilter::default()
    };
    let waiting = state.db(move |s| s.runs(&filter)).await?;
    let items: Vec<Value> = waiting.iter().map(|r| queue_item_json(&base, r)).collect();
    Ok(Json(
        json!({"_class": "hudson.model.Queue", "discoverableItems": [], "items": items}),
    ))
}

async fn queue_item(
    State(state): State<AppState>,
    Path(n): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let seq: u64 = n
        .parse()
        .map_err(|_| ApiError::not_found(format!("no queue item {n}")))?;
    let run = state.run_or_404(RunRecord::id_for(seq)).await?;
    Ok(Json(queue_item_json(&state.base_url(&headers), &run)))
}

fn known_job(state: &AppState, job: &str) -> Result<(), ApiError> {
    if state.has_step(job) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("no job `{job}`")))
    }
}

async fn job(
    State(state): State<AppState>,
    Path(job): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    known_job(&state, &job)?;
    let base = state.base_url(&headers);
    let builds = latest(&state, Some(job.clone()), 100).await?;
    let refs: Vec<Value> = builds.iter().map(|r| build_ref(&base, r)).collect();
    let find =
        |pred: &dyn Fn(&RunRecord) -> bool| builds.iter().find(|r| pred(r)).map(|r| build_ref(&base, r));
    let definitions: Vec<Value> = state
        .steps
        .definitions(&job)
        .iter()
        .map(|p| {
            let default = p.default.as_deref().unwrap_or("");
            let class = match p.kind {
                ParamKind::Bool => "hudson.model.BooleanParameterDefinition",
                _ => "hudson.model.StringParameterDefinition",
            };
            let value_class = match p.kind {
                ParamKind::Bool => "hudson.model.BooleanParameterValue",
                _ => "hudson.model.StringParameterValue",
            };
            json!({
                "_class": class,
                "defaultParameterValue": {"_class": value_class, "name": p.name, "value": default},
                "description": p.description,
                "name": p.name,
                "type": class.rsplit('.').next().unwrap_or("StringParameterDefinition"),
            })
        })
        .collect();
    let next = builds.first().map_or(1, |r| r.number + 1);
    Ok(Json(json!({
        "_class": "hudson.model.FreeStyleProject",
        "actions": [{"_class": "hudson.model.ParametersDefinitionProperty", "parameterDefinitions": definitions.clone()}],
        "description": format!("mlci step `{job}`"),
        "displayName": job,
        "displayNameOrNull": null,
        "fullDisplayName": job,
        "fullName": job,
        "name": job,
        "url": job_url(&base, &job),
        "buildable": true,
        "builds": refs,
        "color": color(builds.first()),
        "firstBuild": builds.last().map(|r| build_ref(&base, r)),
        "healthReport": [],
        "inQueue": builds.iter().any(|r| r.state == RunState::Queued),
        "keepDependencies": false,
        "lastBuild": builds.first().map(|r| build_ref(&base, r)),
        "lastCompletedBuild": find(&|r| r.state.is_finished()),
        "lastFailedBuild": find(&|r| r.outcome == Some(Outcome::Failure)),
        "lastStableBuild": find(&|r| r.outcome == Some(Outcome::Success)),
        "lastSuccessfulBuild": find(&|r| matches!(r.outcome, Some(Outcome::Success | Outcome::Unstable))),
        "lastUnstableBuild": find(&|r| r.outcome == Some(Outcome::Unstable)),
        "lastUnsuccessfulBuild": find(&|r| r.state.is_finished() && r.outcome != Some(Outcome::Success)),
        "nextBuildNumber": next,
        "property": [{"_class": "hudson.model.ParametersDefinitionProperty", "parameterDefinitions": definitions}],
        "queueItem": null,
        "concurrentBuild": true,
        "disabled": false,
        "scm": {"_class": "hudson.scm.NullSCM"},
    })))
}

/// A Jenkins parameter (always text) as JSON, typed by the step's definition.
fn typed(kind: Option<ParamKind>, name: &str, text: &str) -> Result<Value, ApiError> {
    let bad = |what: &str| ApiError::bad_field(name, format!("must be {what}, not `{text}`"));
    Ok(match kind {
        Some(ParamKind::Integer) => {
            json!(text.trim().parse::<i64>().map_err(|_| bad("an integer"))?)
        }
        Some(ParamKind::Number) => {
            let v = text.trim().parse::<f64>().map_err(|_| bad("a number"))?;
            serde_json::Number::from_f64(v)
                .map(Value::Number)
                .ok_or_else(|| bad("a finite number"))?
        }
        Some(ParamKind::Bool) => match text.trim() {
            "true" | "on" | "1" => json!(true),
            "false" | "off" | "0" | "" => json!(false),
            _ => return Err(bad("true or false")),
        },
        Some(ParamKind::String) | None => json!(text),
    })
}

/// Form fields Jenkins itself consumes, never step parameters.
const RESERVED: [&str; 4] = ["token", "delay", "cause", "json"];

async fn build(
    State(state): State<AppState>,
    Path(job): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    known_job(&state, &job)?;
    // Parameters from the query string (python-jenkins) and the form body (curl, plugins);
    // `json={"parameter": [{"name", "value"}]}` as Jenkins' own /build form sends it.
    let mut fields: BTreeMap<String, String> = BTreeMap::new();
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let mut form: Vec<(String, String)> = Vec::new();
    if is_form || !body.is_empty() {
        form = serde_urlencoded_pairs(&body)?;
    }
    for (k, v) in query.into_iter().chain(form) {
        if k == "json" {
            if let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(&v) {
                let list = match obj.get("parameter") {
                    Some(Value::Array(a)) => a.clone(),
                    Some(one @ Value::Object(_)) => vec![one.clone()],
                    _ => Vec::new(),
                };
                for p in list {
                    if let (Some(name), Some(value)) = (p.get("name").and_then(Value::as_str), p.get("value"))
                    {
                        fields.insert(name.to_owned(), text_value(value));
                    }
                }
            }
        } else if !RESERVED.contains(&k.as_str()) {
            fields.insert(k, v);
        }
    }
    let defs = state.steps.definitions(&job);
    // A step with a closed parameter list takes only its parameters: Jenkins drops
    // undefined build parameters (SECURITY-170) rather than failing the build.
    let closed = state
        .steps
        .schema(&job)
        .is_some_and(|s| s["additionalProperties"] == Value::Bool(false));
    let mut params = crate::params::RawParams::new();
    for (name, text) in &fields {
        let kind = defs.iter().find(|d| d.name == *name).map(|d| d.kind);
        if closed && kind.is_none() {
            tracing::debug!(job = %job, parameter = %name, "undefined build parameter dropped");
            continue;
        }
        params.insert(name.clone(), typed(kind, name, text)?);
    }
    state.validate(&job, &params).await?;
    let caller = crate::limits::caller_key(&headers);
    state
        .callers
        .start_run(&caller, state.config.max_runs_per_minute_per_caller)?;
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.trim().is_empty() && k.len() <= 256)
        .map(|k| k.trim().to_owned());
    let (run, created) = state.submit(&job, params, key).await?;
    if !created {
        state.callers.refund_run(&caller);
    }
    let location = format!("{}queue/item/{}/", state.base_url(&headers), run.seq);
    let mut response = StatusCode::CREATED.into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// `application/x-www-form-urlencoded` pairs.
fn serde_urlencoded_pairs(body: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(
        &format!(
            "/?{}",
            std::str::from_utf8(body).map_err(|_| ApiError::bad_field("body", "the form is not UTF-8"))?
        )
        .parse()
        .map_err(|_| ApiError::bad_field("body", "not a valid form"))?,
    )
    .map(|q| q.0)
    .map_err(|e| ApiError::bad_field("body", format!("not a valid form: {e}")))
}

/// The build `n` of `job`: a number, or `lastBuild` and its kin.
async fn find_build(state: &AppState, job: &str, n: &str) -> Result<RunRecord, ApiError> {
    known_job(state, job)?;
    let missing = || ApiError::not_found(format!("no build {n} of job `{job}`"));
    if let Ok(number) = n.parse::<u64>() {
        let step = job.to_owned();
        return state
            .db(move |s| s.run_by_number(&step, number))
            .await?
            .ok_or_else(missing);
    }
    let pred: fn(&RunRecord) -> bool = match n {
        "lastBuild" => |_| true,
        "lastCompletedBuild" => |r| r.state.is_finished(),
        "lastSuccessfulBuild" => |r| matches!(r.outcome, Some(Outcome::Success | Outcome::Unstable)),
        "lastStableBuild" => |r| r.outcome == Some(Outcome::Success),
        "lastFailedBuild" => |r| r.outcome == Some(Outcome::Failure),
        "lastUnstableBuild" => |r| r.outcome == Some(Outcome::Unstable),
        _ => return Err(missing()),
    };
    latest(state, Some(job.to_owned()), 1000)
        .await?
        .into_iter()
        .find(pred)
        .ok_or_else(missing)
}

async fn build_info(
    State(state): State<AppState>,
    Path((job, n)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let run = find_build(&state, &job, &n).await?;
    let base = state.base_url(&headers);
    let building = !run.state.is_finished();
    let start = run.started_at.unwrap_or(run.created_at);
    let duration = match run.finished_at {
        Some(end) => millis(end - start).max(0),
        None => 0,
    };
    let files = artifacts(&state, &run).await?;
    let artifacts: Vec<Value> = files
        .iter()
        .map(|(name, _)| json!({"displayPath": name, "fileName": name, "relativePath": name}))
        .collect();
    Ok(Json(json!({
        "_class": "hudson.model.FreeStyleBuild",
        "actions": [
            {"_class": "hudson.model.ParametersAction", "parameters": parameter_values(&run)},
            {"_class": "hudson.model.CauseAction", "causes": [{
                "_class": "hudson.model.Cause$RemoteCause",
                "shortDescription": format!("Started by mlci serve (run {})", run.id),
            }]},
        ],
        "artifacts": artifacts,
        "building": building,
        "description": run.error,
        "displayName": format!("#{}", run.number),
        "duration": duration,
        "estimatedDuration": -1,
        "executor": null,
        "fullDisplayName": format!("{} #{}", run.step, run.number),
        "id": run.number.to_string(),
        "keepLog": false,
        "number": run.number,
        "queueId": run.seq,
        "result": if building { Value::Null } else { json!(run.outcome.unwrap_or(Outcome::Failure).jenkins_result()) },
        "timestamp": millis(start),
        "url": build_url(&base, &run),
        "builtOn": "",
        "changeSet": {"_class": "hudson.scm.EmptyChangeLogSet", "items": [], "kind": null},
        "culprits": [],
        "mlci": {"run": run.id, "state": run.state.as_str()},
    })))
}

async fn console_text(
    State(state): State<AppState>,
    Path((job, n)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let run = find_build(&state, &job, &n).await?;
    let mut out = Vec::new();
    loop {
        let (bytes, _, _) = log_slice(&state, run.id.clone(), out.len() as u64).await?;
        if bytes.is_empty() {
            break;
        }
        out.extend_from_slice(&bytes);
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], out).into_response())
}

#[derive(Debug, Deserialize)]
struct Start {
    start: Option<u64>,
}

async fn progressive_text(
    State(state): State<AppState>,
    Path((job, n)): Path<(String, String)>,
    Query(q): Query<Start>,
) -> Result<Response, ApiError> {
    let start = crate::api::log_offset("start", q.start)?;
    let run = find_build(&state, &job, &n).await?;
    let (bytes, next, more) = log_slice(&state, run.id, start).await?;
    let mut response = ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], bytes).into_response();
    response
        .headers_mut()
        .insert("x-text-size", HeaderValue::from(next));
    if more {
        response
            .headers_mut()
            .insert("x-more-data", HeaderValue::from_static("true"));
    }
    Ok(response)
}

async fn stop(
    State(state): State<AppState>,
    Path((job, n)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let run = find_build(&state, &job, &n).await?;
    if !run.state.is_finished() {
        state.cancel(&run.id);
        tracing::info!(run = %run.id, "stop requested through the Jenkins API");
    }
    // Jenkins answers a stop with a redirect to the build.
    let mut response = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(&build_url(&state.base_url(&headers), &run)) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

async fn artifact(
    State(state): State<AppState>,
    Path((job, n, name)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let run = find_build(&state, &job, &n).await?;
    artifact_response(&state, &run, &name).await
}
