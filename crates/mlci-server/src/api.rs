//! The v1 API (`/api/v1/...`): steps, runs, logs, artifacts.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use mlci_core::{RunFilter, RunRecord, RunState};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::params::RawParams;

use crate::error::ApiError;
use crate::state::{run_json, AppState};

/// Largest log slice one `?offset=` request returns.
const LOG_SLICE: usize = 1024 * 1024;
/// A followed log is woken by the writer; this is only the fallback between wake-ups.
const FOLLOW_FALLBACK: Duration = Duration::from_secs(5);

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/steps/{step}", post(create_run))
        .route("/api/v1/runs", get(list_runs))
        .route("/api/v1/runs/{id}", get(get_run).delete(cancel_run))
        .route("/api/v1/runs/{id}/log", get(get_log))
        .route("/api/v1/runs/{id}/artifacts", get(list_artifacts))
        .route("/api/v1/runs/{id}/artifacts/{name}", get(get_artifact))
}

fn with_location(status: StatusCode, run: &RunRecord) -> Response {
    let mut response = (status, Json(run_json(run))).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/runs/{}", run.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// The JSON body of a step request: an object (an empty body is `{}`).
pub(crate) fn params_from_body(body: &[u8]) -> Result<RawParams, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(RawParams::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(v)) => Ok(v),
        Ok(_) => Err(ApiError::bad_field(
            "body",
            "the parameters must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad_field("body", format!("not valid JSON: {e}"))),
    }
}

async fn create_run(
    State(state): State<AppState>,
    Path(step): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if !state.has_step(&step) {
        return Err(ApiError {
            status: StatusCode::NOT_FOUND,
            message: format!("no step `{step}` (steps: {})", state.steps.names().join(", ")),
            field: Some("step".into()),
            retry_after: None,
        });
    }
    let params = params_from_body(&body)?;
    state.validate(&step, &params).await?;
    let caller = crate::limits::caller_key(&headers);
    state
        .callers
        .start_run(&caller, state.config.max_runs_per_minute_per_caller)?;
    let key = match headers.get("idempotency-key") {
        None => None,
        // UTF-8 is accepted: Jenkins' BUILD_TAG holds the job name, which may not be ASCII.
        Some(v) => match std::str::from_utf8(v.as_bytes()) {
            Ok(k) if !k.trim().is_empty() && k.len() <= 256 => Some(k.trim().to_owned()),
            _ => {
                return Err(ApiError::bad_field(
                    "Idempotency-Key",
                    "must be 1 to 256 bytes of UTF-8",
                ))
            }
        },
    };
    let submitted = state.submit(&step, params, key).await;
    // Only a created run counts: a retry, or a refused request, gives its count back.
    if !matches!(submitted, Ok((_, true))) {
        state.callers.refund_run(&caller);
    }
    let (run, created) = submitted?;
    let status = if created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok(with_location(status, &run))
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    step: Option<String>,
    state: Option<String>,
    limit: Option<usize>,
}

async fn list_runs(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let states = match q.state.as_deref() {
        None | Some("") => Vec::new(),
        Some(list) => list
            .split(',')
            .map(|s| {
                RunState::parse(s.trim())
                    .ok_or_else(|| ApiError::bad_field("state", format!("unknown state `{s}`")))
            })
            .collect::<Result<_, _>>()?,
    };
    let filter = RunFilter {
        step: q.step.filter(|s| !s.is_empty()),
        states,
        limit: Some(q.limit.unwrap_or(100).clamp(1, 10_000)),
        ..RunFilter::default()
    };
    let runs = state.db(move |s| s.runs(&filter)).await?;
    Ok(Json(Value::Array(runs.iter().map(run_json).collect())))
}

async fn get_run(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let run = state.run_or_404(id).await?;
    Ok(Json(run_json(&run)).into_response())
}

async fn cancel_run(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let run = state.run_or_404(id).await?;
    if run.state.is_finished() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("run {} already finished ({})", run.id, run.state.as_str()),
        ));
    }
    tracing::info!(run = %run.id, "cancel requested");
    if state.cancel(&run.id) {
        return Ok((StatusCode::ACCEPTED, Json(run_json(&run))).into_response());
    }
    // Not executing in this process (left queued for a restart): cancelled right here,
    // unless it finished in the meantime.
    let id = run.id.clone();
    let run = state
        .db(move |s| {
            let Some(mut run) = s.run(&id)? else {
                return Ok(None);
            };
            if !run.state.is_finished() {
                s.append_log(&id, b"Cancelled while not executing\nFinished: ABORTED\n")?;
                run.state = RunState::Cancelled;
                run.outcome = Some(mlci_core::Outcome::Aborted);
                run.error = Some("cancelled while not executing".to_owned());
                run.finished_at = Some(crate::state::now());
                s.update_run(&run)?;
            }
            Ok(Some(run))
        })
        .await?
        .ok_or_else(|| ApiError::not_found("the run disappeared"))?;
    Ok((StatusCode::ACCEPTED, Json(run_json(&run))).into_response())
}

#[derive(Debug, Deserialize)]
struct LogQuery {
    offset: Option<u64>,
    follow: Option<String>,
}

async fn get_log(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<LogQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let offset = log_offset("offset", q.offset)?;
    let run = state.run_or_404(id).await?;
    if matches!(q.follow.as_deref(), Some("1" | "true" | "yes")) {
        return follow(state, run.id, offset, &crate::limits::caller_key(&headers));
    }
    let (text, size, more) = log_slice(&state, run.id, offset).await?;
    let mut response = ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response();
    let headers = response.headers_mut();
    headers.insert("x-log-offset", HeaderValue::from(size));
    if more {
        headers.insert("x-more-data", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// A log offset from a query (`?offset=`, Jenkins' `?start=`): the store counts in i64,
/// so a larger one is bad input (400 naming `field`), never a server error.
pub(crate) fn log_offset(field: &str, offset: Option<u64>) -> Result<u64, ApiError> {
    match offset {
        None => Ok(0),
        Some(o) if i64::try_from(o).is_ok() => Ok(o),
        Some(_) => Err(ApiError::bad_field(
            field,
            format!("must be a byte offset of at most {}", i64::MAX),
        )),
    }
}

/// The log from `offset` (at most [`LOG_SLICE`] bytes), the next offset, and whether more
/// may come (the run is not finished, or the slice was cut).
pub(crate) async fn log_slice(
    state: &AppState,
    id: String,
    offset: u64,
) -> Result<(Vec<u8>, u64, bool), ApiError> {
    state
        .db(move |s| {
            // The state first: a run seen finished has its whole log written.
            let finished = s.run(&id)?.is_none_or(|r| r.state.is_finished());
            let bytes = s.read_log(&id, offset, LOG_SLICE)?;
            let len = s.log_len(&id)?;
            let next = offset.min(len) + bytes.len() as u64;
            Ok((bytes, next, !finished || next < len))
        })
        .await
}

/// The log from `offset` as a chunked stream that ends when the run finishes. The stream
/// sleeps until the writer signals new lines (no polling of the store), and holds one of
/// the service's follower permits: none left is a 429.
fn follow(state: AppState, id: String, offset: u64, caller: &str) -> Result<Response, ApiError> {
    let slot = state
        .callers
        .open_stream(caller, state.config.max_log_followers_per_caller)?;
    let permit = Arc::clone(&state.followers).try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too many log streams are open: read by ?offset= or retry later",
        )
    })?;
    // Both given back when the stream ends.
    let permit = (permit, slot);
    let signal = state.log_signal.subscribe();
    let stream = futures_util::stream::unfold(Some((offset, signal, permit)), move |next| {
        let state = state.clone();
        let id = id.clone();
        async move {
            let (mut offset, mut signal, permit) = next?;
            loop {
                // Marked seen before reading: a line written after the read wakes us.
                signal.borrow_and_update();
                match log_slice(&state, id.clone(), offset).await {
                    Err(e) => {
                        tracing::warn!(run = %id, error = e.message, "log stream ended by an error");
                        return None;
                    }
                    Ok((bytes, next, more)) => {
                        offset = next;
                        if !bytes.is_empty() {
                            let after = if more {
                                Some((offset, signal, permit))
                            } else {
                                None
                            };
                            return Some((Ok::<_, std::io::Error>(Bytes::from(bytes)), after));
                        }
                        if !more {
                            return None;
                        }
                    }
                }
                let _ = tokio::time::timeout(FOLLOW_FALLBACK, signal.changed()).await;
            }
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Whether `name` is a plain file name: no separators, no `..`, nothing hidden.
pub(crate) fn valid_artifact_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0', ':'])
        && !name.chars().any(char::is_control)
}

/// Regular files (not links, not folders) directly in the run's artifacts folder, by name.
pub(crate) async fn artifacts(state: &AppState, run: &RunRecord) -> Result<Vec<(String, u64)>, ApiError> {
    let dir = state.config.artifacts_dir.join(&run.id);
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(ApiError::internal(format!("list {}: {e}", dir.display()))),
        };
        for entry in entries.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            match entry.path().symlink_metadata() {
                Ok(meta) if meta.is_file() && valid_artifact_name(&name) => out.push((name, meta.len())),
                _ => {}
            }
        }
        out.sort();
        Ok(out)
    })
    .await
    .map_err(ApiError::internal)?
}

async fn list_artifacts(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let run = state.run_or_404(id).await?;
    let list = artifacts(&state, &run).await?;
    Ok(Json(Value::Array(
        list.into_iter()
            .map(|(name, size)| json!({"name": name, "size": size}))
            .collect(),
    )))
}

fn content_type(name: &str) -> &'static str {
    match name
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .as_deref()
    {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("xml") => "application/xml",
        Some("csv") => "text/csv; charset=utf-8",
        Some("txt" | "log") => "text/plain; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    }
}

/// One artifact. The name is checked, then must be one of the listed files: a request
/// path is never joined onto the filesystem unchecked.
pub(crate) async fn artifact_response(
    state: &AppState,
    run: &RunRecord,
    name: &str,
) -> Result<Response, ApiError> {
    if !valid_artifact_name(name) {
        return Err(ApiError::bad_field("name", "not a plain file name"));
    }
    let listed = artifacts(state, run).await?;
    if !listed.iter().any(|(n, _)| n == name) {
        return Err(ApiError::not_found(format!(
            "run {} has no artifact `{name}`",
            run.id
        )));
    }
    let path = state.config.artifacts_dir.join(&run.id).join(name);
    let shown = path.display().to_string();
    let (file, len) = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path)?;
        let len = file.metadata()?.len();
        Ok::<_, std::io::Error>((file, len))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| ApiError::internal(format!("open {shown}: {e}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type(name))),
            (header::CONTENT_LENGTH, HeaderValue::from(len)),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        Body::from_stream(file_stream(file)),
    )
        .into_response())
}

/// A file as a stream of chunks, each read on a blocking thread (models can be large).
fn file_stream(file: std::fs::File) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> {
    const CHUNK: usize = 256 * 1024;
    futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let read = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0; CHUNK];
            let n = std::io::Read::read(&mut file, &mut buf)?;
            buf.truncate(n);
            Ok::<_, std::io::Error>((file, buf))
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        match read {
            Ok((_, buf)) if buf.is_empty() => None,
            Ok((file, buf)) => Some((Ok(Bytes::from(buf)), Some(file))),
            Err(e) => Some((Err(e), None)),
        }
    })
}

async fn get_artifact(
    State(state): State<AppState>,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let run = state.run_or_404(id).await?;
    artifact_response(&state, &run, &name).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_names_are_plain_file_names() {
        for ok in ["report.html", "model.safetensors", "junit.xml", "a b.csv"] {
            assert!(valid_artifact_name(ok), "{ok}");
        }
        for bad in [
            "", ".", "..", "../x", "a/b", "a\\b", ".hidden", "x\0y", "c:x", "a\nb",
        ] {
            assert!(!valid_artifact_name(bad), "{bad:?}");
        }
    }
}
