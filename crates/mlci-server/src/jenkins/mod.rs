//! The Jenkins-compatible API: the same runs as jobs (one per step) and builds, answered
//! as Jenkins 2.462 answers, for the clients Jenkins people use (python-jenkins,
//! jenkinsapi, the Parameterized Remote Trigger plugin, curl). Every object is one JSON
//! value written as `api/json`, `api/xml` or `api/python` and pruned by `?tree=`
//! ([`render`]); errors carry Jenkins' `X-Error` header. `docs/jenkins-api.md` has the
//! compatibility table.

mod render;
mod trigger;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Extension, Router};
use mlci_core::{Outcome, RunFilter, RunRecord, RunState};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::api::{artifact_response, artifacts, log_slice};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;
use crate::steps::ParamKind;
use render::Api;

/// The Jenkins version this API imitates (the `X-Jenkins` header).
pub const JENKINS_VERSION: &str = "2.462.3";

/// Builds listed under a job's `builds` (Jenkins lists the newest 100; `allBuilds`
/// lists every one).
const BUILDS_LISTED: usize = 100;

/// An [`ApiError`] answered as Jenkins does: with its message in `X-Error` too.
#[derive(Debug)]
pub(crate) struct JError(ApiError);

impl From<ApiError> for JError {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl From<mlci_core::StoreError> for JError {
    fn from(e: mlci_core::StoreError) -> Self {
        Self(e.into())
    }
}

impl IntoResponse for JError {
    fn into_response(self) -> Response {
        // Header values are visible ASCII: anything else becomes `?`.
        let text: String = self
            .0
            .message
            .chars()
            .map(|c| if c == ' ' || c.is_ascii_graphic() { c } else { '?' })
            .collect();
        let header = HeaderValue::from_str(&text).ok();
        let mut response = self.0.into_response();
        if let Some(v) = header {
            response.headers_mut().insert("x-error", v);
        }
        response
    }
}

type JResult = Result<Response, JError>;

/// `path` and `path/`: Jenkins (Stapler) answers both.
fn both(router: Router<AppState>, path: &str, method: MethodRouter<AppState>) -> Router<AppState> {
    router
        .route(path, method.clone())
        .route(&format!("{path}/"), method)
}

pub(crate) fn router() -> Router<AppState> {
    let mut r = Router::new();
    for (path, method) in [
        ("/api/{flavor}", get(hudson)),
        ("/crumbIssuer/api/{flavor}", get(crumb)),
        ("/me/api/{flavor}", get(me)),
        ("/whoAmI/api/{flavor}", get(who_am_i)),
        ("/computer/api/{flavor}", get(computers)),
        ("/queue/api/{flavor}", get(queue)),
        ("/queue/item/{n}/api/{flavor}", get(queue_item)),
        ("/queue/cancelItem", post(cancel_item)),
        ("/job/{job}/api/{flavor}", get(job)),
        ("/job/{job}/build", post(trigger::build)),
        ("/job/{job}/buildWithParameters", post(trigger::build)),
        ("/job/{job}/{n}/api/{flavor}", get(build_info)),
        ("/job/{job}/{n}/buildNumber", get(build_number)),
        ("/job/{job}/{n}/consoleText", get(console_text)),
        ("/job/{job}/{n}/logText/progressiveText", get(progressive_text)),
        ("/job/{job}/{n}/logText/progressiveHtml", get(progressive_html)),
        ("/job/{job}/{n}/stop", post(stop)),
        ("/job/{job}/{n}/artifact/{name}", get(artifact)),
    ] {
        r = both(r, path, method);
    }
    r
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

/// Jenkins' build permalinks: which finished runs each one picks.
#[derive(Debug, Clone, Copy)]
enum Permalink {
    First,
    Last,
    LastCompleted,
    LastSuccessful,
    LastStable,
    LastFailed,
    LastUnstable,
    LastUnsuccessful,
}

impl Permalink {
    const ALL: [(&'static str, Permalink); 8] = [
        ("firstBuild", Self::First),
        ("lastBuild", Self::Last),
        ("lastCompletedBuild", Self::LastCompleted),
        ("lastSuccessfulBuild", Self::LastSuccessful),
        ("lastStableBuild", Self::LastStable),
        ("lastFailedBuild", Self::LastFailed),
        ("lastUnstableBuild", Self::LastUnstable),
        ("lastUnsuccessfulBuild", Self::LastUnsuccessful),
    ];

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
    }

    /// The store query: `lastSuccessfulBuild` is SUCCESS or UNSTABLE, as in Jenkins.
    fn filter(self, step: &str) -> RunFilter {
        use Outcome::{Aborted, Failure, Success, Unstable};
        let outcomes = match self {
            Self::First | Self::Last => vec![],
            Self::LastCompleted => Outcome::ALL.to_vec(),
            Self::LastSuccessful => vec![Success, Unstable],
            Self::LastStable => vec![Success],
            Self::LastFailed => vec![Failure],
            Self::LastUnstable => vec![Unstable],
            Self::LastUnsuccessful => vec![Unstable, Failure, Aborted],
        };
        RunFilter {
            step: Some(step.to_owned()),
            outcomes,
            limit: Some(1),
            oldest_first: matches!(self, Self::First),
            ..RunFilter::default()
        }
    }
}

async fn runs(state: &AppState, filter: RunFilter) -> Result<Vec<RunRecord>, ApiError> {
    state.db(move |s| s.runs(&filter)).await
}

async fn permalink(state: &AppState, job: &str, link: Permalink) -> Result<Option<RunRecord>, ApiError> {
    Ok(runs(state, link.filter(job)).await?.into_iter().next())
}

async fn hudson(State(state): State<AppState>, headers: HeaderMap, api: Api) -> JResult {
    let base = state.base_url(&headers);
    let jobs_api = api.child("jobs");
    let full = api.expand("jobs", &["name", "url", "color"]);
    let mut jobs = Vec::new();
    for name in state.steps.names() {
        jobs.push(if full {
            job_value(&state, &base, &name, &jobs_api).await?
        } else {
            let last = permalink(&state, &name, Permalink::Last).await?;
            json!({
                "_class": "hudson.model.FreeStyleProject",
                "name": name,
                "url": job_url(&base, &name),
                "color": color(last.as_ref()),
            })
        });
    }
    let executors = *state.running.borrow();
    api.respond(json!({
        "_class": "hudson.model.Hudson",
        "assignedLabels": [{"name": "built-in"}],
        "mode": "NORMAL",
        "nodeDescription": "mlci step service",
        "nodeName": "",
        "numExecutors": executors,
        "description": null,
        "jobs": jobs,
        "overallLoad": {},
        "primaryView": {"_class": "hudson.model.AllView", "name": "all", "url": base},
        "quietDownReason": null,
        "quietingDown": state.stopping.load(std::sync::atomic::Ordering::Relaxed),
        "slaveAgentPort": -1,
        "unlabeledLoad": {"_class": "jenkins.model.UnlabeledLoadStatistics"},
        "url": base,
        "useCrumbs": true,
        "useSecurity": true,
        "views": [{"_class": "hudson.model.AllView", "name": "all", "url": base}],
    }))
}

async fn crumb(State(state): State<AppState>, api: Api) -> JResult {
    api.respond(json!({
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
    api: Api,
) -> JResult {
    let caller = caller.map(|Extension(c)| c).unwrap_or(Caller::Anonymous);
    let Some(name) = user_name(&caller) else {
        return Ok(crate::auth::unauthorized("not logged in"));
    };
    let base = state.base_url(&headers);
    api.respond(json!({
        "_class": "hudson.model.User",
        "absoluteUrl": format!("{base}user/{name}"),
        "description": null,
        "fullName": name,
        "id": name,
        "property": [],
    }))
}

async fn who_am_i(caller: Option<Extension<Caller>>, api: Api) -> JResult {
    let caller = caller.map(|Extension(c)| c).unwrap_or(Caller::Anonymous);
    let name = user_name(&caller);
    api.respond(json!({
        "_class": "hudson.security.WhoAmI",
        "anonymous": name.is_none(),
        "authenticated": name.is_some(),
        "authorities": if name.is_some() { json!(["authenticated"]) } else { json!([]) },
        "name": name.unwrap_or("anonymous"),
    }))
}

/// The computer set: one built-in node, its executors the runs executing now (mlci
/// starts every accepted run at once; it has no fixed executor count).
async fn computers(State(state): State<AppState>, api: Api) -> JResult {
    let busy = *state.running.borrow();
    let executors: Vec<Value> = (0..busy)
        .map(|_| json!({"_class": "hudson.model.Executor"}))
        .collect();
    api.respond(json!({
        "_class": "hudson.model.ComputerSet",
        "busyExecutors": busy,
        "computer": [{
            "_class": "hudson.model.Hudson$MasterComputer",
            "actions": [],
            "assignedLabels": [{"name": "built-in"}],
            "description": "the mlci step service",
            "displayName": "Built-In Node",
            "executors": executors,
            "icon": "symbol-computer",
            "iconClassName": "symbol-computer",
            "idle": busy == 0,
            "jnlpAgent": false,
            "launchSupported": true,
            "manualLaunchAllowed": true,
            "numExecutors": busy,
            "offline": false,
            "offlineCause": null,
            "offlineCauseReason": "",
            "oneOffExecutors": [],
            "temporarilyOffline": false,
        }],
        "displayName": "Nodes",
        "totalExecutors": busy,
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

fn text_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn params_of(run: &RunRecord) -> Map<String, Value> {
    serde_json::from_str(&run.params).unwrap_or_default()
}

fn parameter_values(run: &RunRecord) -> Vec<Value> {
    params_of(run)
        .iter()
        .map(|(k, v)| {
            let class = if v.is_boolean() {
                "hudson.model.BooleanParameterValue"
            } else {
                "hudson.model.StringParameterValue"
            };
            let value = if v.is_boolean() {
                v.clone()
            } else {
                json!(text_value(v))
            };
            json!({"_class": class, "name": k, "value": value})
        })
        .collect()
}

/// Whether the run has left the queue (Jenkins' `Queue$LeftItem`).
fn left_queue(run: &RunRecord) -> bool {
    run.state != RunState::Queued || run.started_at.is_some()
}

/// A run as a queue item: waiting until it starts, left (with its build) after.
fn queue_item_json(base: &str, run: &RunRecord) -> Value {
    let params: String = params_of(run)
        .iter()
        .map(|(k, v)| format!("\n{k}={}", text_value(v)))
        .collect();
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
    if let Value::Object(map) = &mut item {
        if left_queue(run) {
            map.insert("_class".into(), json!("hudson.model.Queue$LeftItem"));
            let cancelled = run.state == RunState::Cancelled && run.started_at.is_none();
            map.insert("cancelled".into(), json!(cancelled));
            map.insert(
                "executable".into(),
                if cancelled {
                    Value::Null
                } else {
                    build_ref(base, run)
                },
            );
        } else {
            map.insert("_class".into(), json!("hudson.model.Queue$WaitingItem"));
            map.insert("timestamp".into(), json!(millis(run.created_at)));
            map.insert("why".into(), json!("Waiting for next available executor"));
        }
    }
    item
}

async fn queue(State(state): State<AppState>, headers: HeaderMap, api: Api) -> JResult {
    let base = state.base_url(&headers);
    let filter = RunFilter {
        states: vec![RunState::Queued],
        ..RunFilter::default()
    };
    let waiting = runs(&state, filter).await?;
    let items: Vec<Value> = waiting
        .iter()
        .filter(|r| !left_queue(r))
        .map(|r| queue_item_json(&base, r))
        .collect();
    api.respond(json!({"_class": "hudson.model.Queue", "discoverableItems": [], "items": items}))
}

async fn queue_run(state: &AppState, n: &str) -> Result<RunRecord, ApiError> {
    let seq: u64 = n
        .parse()
        .map_err(|_| ApiError::not_found(format!("no queue item {n}")))?;
    state
        .run_or_404(RunRecord::id_for(seq))
        .await
        .map_err(|_| ApiError::not_found(format!("no queue item {n}")))
}

async fn queue_item(
    State(state): State<AppState>,
    Path((n, _)): Path<(String, String)>,
    headers: HeaderMap,
    api: Api,
) -> JResult {
    let run = queue_run(&state, &n).await?;
    api.respond(queue_item_json(&state.base_url(&headers), &run))
}

#[derive(Debug, Deserialize)]
struct CancelItem {
    id: Option<String>,
}

/// `POST /queue/cancelItem?id=N`: 204 when the waiting item is cancelled, 409 when it
/// already left the queue (stop the build instead), 404 for an unknown id.
async fn cancel_item(State(state): State<AppState>, Query(q): Query<CancelItem>) -> JResult {
    let id =
        q.id.ok_or_else(|| ApiError::bad_field("id", "the queue item id is missing"))?;
    let run = queue_run(&state, &id).await?;
    if left_queue(&run) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "Could not cancel run for id {id}: it left the queue as build #{} of `{}`",
                run.number, run.step
            ),
        )
        .into());
    }
    state.cancel(&run.id);
    tracing::info!(run = %run.id, "queue item cancelled through the Jenkins API");
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn known_job(state: &AppState, job: &str) -> Result<(), ApiError> {
    if state.has_step(job) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("no job `{job}`")))
    }
}

fn parameter_definitions(state: &AppState, job: &str) -> Vec<Value> {
    state
        .steps
        .definitions(job)
        .iter()
        .map(|p| {
            let default = p.default.as_deref().unwrap_or("");
            let (class, value_class, value) = match p.kind {
                ParamKind::Bool => (
                    "hudson.model.BooleanParameterDefinition",
                    "hudson.model.BooleanParameterValue",
                    json!(matches!(default, "true" | "on" | "1")),
                ),
                _ => (
                    "hudson.model.StringParameterDefinition",
                    "hudson.model.StringParameterValue",
                    json!(default),
                ),
            };
            json!({
                "_class": class,
                "defaultParameterValue": {"_class": value_class, "name": p.name, "value": value},
                "description": p.description,
                "name": p.name,
                "type": class.rsplit('.').next().unwrap_or("StringParameterDefinition"),
            })
        })
        .collect()
}

/// A build in a list: a `{_class, number, url}` reference, or the whole build when the
/// request's depth or tree asks for more (`estimated`: the job's estimated duration,
/// the same for each of its builds, so asked once a job).
async fn build_entry(
    state: &AppState,
    base: &str,
    run: &RunRecord,
    full: bool,
    estimated: i64,
) -> Result<Value, ApiError> {
    if full {
        build_value(state, base, run, estimated).await
    } else {
        Ok(build_ref(base, run))
    }
}

async fn job_value(state: &AppState, base: &str, job: &str, api: &Api) -> Result<Value, ApiError> {
    const REF: [&str; 2] = ["number", "url"];
    let mut out = Map::new();
    let newest = runs(
        state,
        RunFilter {
            step: Some(job.to_owned()),
            limit: Some(BUILDS_LISTED),
            ..RunFilter::default()
        },
    )
    .await?;
    let estimated = estimated_duration(state, job).await?;
    let full = api.expand("builds", &REF);
    let mut builds = Vec::new();
    for run in &newest {
        builds.push(build_entry(state, base, run, full, estimated).await?);
    }
    if api.names("allBuilds") {
        let all = runs(
            state,
            RunFilter {
                step: Some(job.to_owned()),
                ..RunFilter::default()
            },
        )
        .await?;
        let full = api.expand("allBuilds", &REF);
        let mut list = Vec::new();
        for run in &all {
            list.push(build_entry(state, base, run, full, estimated).await?);
        }
        out.insert("allBuilds".into(), Value::Array(list));
    }
    for (name, link) in Permalink::ALL {
        let value = match permalink(state, job, link).await? {
            Some(run) => build_entry(state, base, &run, api.expand(name, &REF), estimated).await?,
            None => Value::Null,
        };
        out.insert(name.into(), value);
    }
    // A job without parameters has no ParametersDefinitionProperty (clients such as
    // jenkinsapi tell parameterized jobs by it).
    let definitions = parameter_definitions(state, job);
    let parameters_property = if definitions.is_empty() {
        json!([])
    } else {
        json!([{"_class": "hudson.model.ParametersDefinitionProperty", "parameterDefinitions": definitions}])
    };
    let next = newest.first().map_or(1, |r| r.number + 1);
    let in_queue = newest.iter().any(|r| !left_queue(r));
    let rest = json!({
        "_class": "hudson.model.FreeStyleProject",
        "actions": parameters_property.clone(),
        "description": format!("mlci step `{job}`"),
        "displayName": job,
        "displayNameOrNull": null,
        "fullDisplayName": job,
        "fullName": job,
        "name": job,
        "url": job_url(base, job),
        "buildable": true,
        "builds": builds,
        "color": color(newest.first()),
        "healthReport": [],
        "inQueue": in_queue,
        "keepDependencies": false,
        "nextBuildNumber": next,
        "property": parameters_property,
        "queueItem": null,
        "concurrentBuild": true,
        "disabled": false,
        "scm": {"_class": "hudson.scm.NullSCM"},
    });
    if let Value::Object(rest) = rest {
        out.extend(rest);
    }
    Ok(Value::Object(out))
}

async fn job(
    State(state): State<AppState>,
    Path((job, _)): Path<(String, String)>,
    headers: HeaderMap,
    api: Api,
) -> JResult {
    known_job(&state, &job)?;
    let value = job_value(&state, &state.base_url(&headers), &job, &api).await?;
    api.respond(value)
}

/// The build `n` of `job`: a number, or one of Jenkins' permalinks (`lastBuild`…).
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
    let link = Permalink::parse(n).ok_or_else(missing)?;
    permalink(state, job, link).await?.ok_or_else(missing)
}

fn duration_ms(run: &RunRecord) -> i64 {
    let start = run.started_at.unwrap_or(run.created_at);
    match run.finished_at {
        Some(end) => millis(end - start).max(0),
        None => 0,
    }
}

/// Jenkins' estimate: the mean duration of the last three successful builds, -1 without.
async fn estimated_duration(state: &AppState, job: &str) -> Result<i64, ApiError> {
    let recent = runs(
        state,
        RunFilter {
            step: Some(job.to_owned()),
            outcomes: vec![Outcome::Success],
            limit: Some(3),
            ..RunFilter::default()
        },
    )
    .await?;
    Ok(match recent.len() {
        0 => -1,
        n => recent.iter().map(duration_ms).sum::<i64>() / n as i64,
    })
}

/// `previousBuild`/`nextBuild`: the nearest kept build before or after `run` (retention
/// may have removed the one numbered one less).
async fn neighbour(state: &AppState, base: &str, run: &RunRecord, next: bool) -> Result<Value, ApiError> {
    let filter = RunFilter {
        step: Some(run.step.clone()),
        limit: Some(1),
        oldest_first: next,
        number_below: (!next).then_some(run.number),
        number_above: next.then_some(run.number),
        ..RunFilter::default()
    };
    Ok(runs(state, filter)
        .await?
        .first()
        .map_or(Value::Null, |r| build_ref(base, r)))
}

async fn build_value(
    state: &AppState,
    base: &str,
    run: &RunRecord,
    estimated: i64,
) -> Result<Value, ApiError> {
    let building = !run.state.is_finished();
    let start = run.started_at.unwrap_or(run.created_at);
    let files = artifacts(state, run).await?;
    let artifacts: Vec<Value> = files
        .iter()
        .map(|(name, _)| json!({"displayPath": name, "fileName": name, "relativePath": name}))
        .collect();
    let previous = neighbour(state, base, run, false).await?;
    let next = neighbour(state, base, run, true).await?;
    Ok(json!({
        "_class": "hudson.model.FreeStyleBuild",
        "actions": [
            {"_class": "hudson.model.ParametersAction", "parameters": parameter_values(run)},
            {"_class": "hudson.model.CauseAction", "causes": [{
                "_class": "hudson.model.Cause$RemoteCause",
                "shortDescription": format!("Started by mlci serve (run {})", run.id),
            }]},
        ],
        "artifacts": artifacts,
        "building": building,
        "description": run.error,
        "displayName": format!("#{}", run.number),
        "duration": duration_ms(run),
        "estimatedDuration": estimated,
        "executor": if building { json!({"_class": "hudson.model.Executor"}) } else { Value::Null },
        "fullDisplayName": format!("{} #{}", run.step, run.number),
        "id": run.number.to_string(),
        "inProgress": building,
        "keepLog": false,
        "number": run.number,
        "queueId": run.seq,
        "result": if building { Value::Null } else { json!(run.outcome.unwrap_or(Outcome::Failure).jenkins_result()) },
        "timestamp": millis(start),
        "url": build_url(base, run),
        "builtOn": "",
        "changeSet": {"_class": "hudson.scm.EmptyChangeLogSet", "items": [], "kind": null},
        "culprits": [],
        "previousBuild": previous,
        "nextBuild": next,
        "mlci": {"run": run.id, "state": run.state.as_str()},
    }))
}

async fn build_info(
    State(state): State<AppState>,
    Path((job, n, _)): Path<(String, String, String)>,
    headers: HeaderMap,
    api: Api,
) -> JResult {
    let run = find_build(&state, &job, &n).await?;
    let estimated = estimated_duration(&state, &run.step).await?;
    let value = build_value(&state, &state.base_url(&headers), &run, estimated).await?;
    api.respond(value)
}

fn plain(body: impl Into<axum::body::Body>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body.into()).into_response()
}

async fn build_number(State(state): State<AppState>, Path((job, n)): Path<(String, String)>) -> JResult {
    Ok(plain(find_build(&state, &job, &n).await?.number.to_string()))
}

async fn console_text(State(state): State<AppState>, Path((job, n)): Path<(String, String)>) -> JResult {
    let run = find_build(&state, &job, &n).await?;
    let mut out = Vec::new();
    loop {
        let (bytes, _, _) = log_slice(&state, run.id.clone(), out.len() as u64).await?;
        if bytes.is_empty() {
            break;
        }
        out.extend_from_slice(&bytes);
    }
    Ok(plain(out))
}

#[derive(Debug, Deserialize)]
struct Start {
    start: Option<u64>,
}

async fn progressive(state: &AppState, job: &str, n: &str, start: Option<u64>, html: bool) -> JResult {
    let start = crate::api::log_offset("start", start)?;
    let run = find_build(state, job, n).await?;
    let (bytes, next, more) = log_slice(state, run.id, start).await?;
    let mut response = if html {
        let text = String::from_utf8_lossy(&bytes);
        (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            quick_xml::escape::escape(text.as_ref()).into_owned(),
        )
            .into_response()
    } else {
        plain(bytes)
    };
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

async fn progressive_text(
    State(state): State<AppState>,
    Path((job, n)): Path<(String, String)>,
    Query(q): Query<Start>,
) -> JResult {
    progressive(&state, &job, &n, q.start, false).await
}

async fn progressive_html(
    State(state): State<AppState>,
    Path((job, n)): Path<(String, String)>,
    Query(q): Query<Start>,
) -> JResult {
    progressive(&state, &job, &n, q.start, true).await
}

async fn stop(
    State(state): State<AppState>,
    Path((job, n)): Path<(String, String)>,
    headers: HeaderMap,
) -> JResult {
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
) -> JResult {
    let run = find_build(&state, &job, &n).await?;
    Ok(artifact_response(&state, &run, &name).await?)
}
