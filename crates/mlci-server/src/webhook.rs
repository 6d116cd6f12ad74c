//! `POST /github-webhook/`: GitHub push events start the pipeline.
//!
//! **Invariant:** the signature (`X-Hub-Signature-256`, HMAC-SHA256 of the raw body) is
//! checked, in constant time, before the body is parsed or anything else is looked at.
//! Deliveries are deduplicated by `X-GitHub-Delivery` (the run's idempotency key is
//! `github-<delivery>`), so a redelivery never starts a second run.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use mlci_core::{RunFilter, RunRecord, RunState};

use crate::config::{WebhookConfig, WebhookRepository};
use crate::error::ApiError;
use crate::state::{run_json, AppState};

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/github-webhook/", post(receive))
        .route("/github-webhook", post(receive))
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    let digit = |b: u8| char::from(b).to_digit(16);
    text.as_bytes()
        .chunks(2)
        .map(|pair| match pair {
            [hi, lo] => Some(u8::try_from(digit(*hi)? * 16 + digit(*lo)?).ok()?),
            _ => None,
        })
        .collect()
}

/// The `X-Hub-Signature-256` value GitHub sends with `body` under `secret`:
/// `sha256=<hex of the HMAC-SHA256>` (for callers that deliver pushes: `mlci demo`).
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Whether `header` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under `secret`.
pub fn signature_valid(secret: &[u8], body: &[u8], header: &str) -> bool {
    let Some(expected) = header.trim().strip_prefix("sha256=").and_then(hex_decode) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&expected).is_ok()
}

/// The delivery's JSON: the body itself (`application/json`), or the body's `payload` field
/// (`application/x-www-form-urlencoded`, GitHub's default content type). Either way the
/// signature was checked over the raw body first.
fn payload_of(content_type: Option<&str>, body: &[u8]) -> Result<Value, ApiError> {
    let form = content_type.is_some_and(|c| {
        c.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .eq_ignore_ascii_case("application/x-www-form-urlencoded")
    });
    if !form {
        return serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_field("body", format!("not valid JSON: {e}")));
    }
    let payload = form_urlencoded::parse(body)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| ApiError::bad_field("payload", "missing from the form-encoded body"))?;
    serde_json::from_str(&payload).map_err(|e| ApiError::bad_field("payload", format!("not valid JSON: {e}")))
}

fn ignored(reason: impl Into<String>) -> Response {
    let reason = reason.into();
    tracing::info!(reason, "webhook delivery ignored");
    (StatusCode::ACCEPTED, Json(json!({"ignored": reason}))).into_response()
}

/// `https://github.com/O/R.git`, `git@github.com:O/R.git`, `O/R` → comparable forms.
fn normalise(url: &str) -> String {
    let url = url.trim().trim_end_matches('/').to_ascii_lowercase();
    url.strip_suffix(".git").unwrap_or(&url).to_owned()
}

fn find_repository<'a>(config: &'a WebhookConfig, repository: &Value) -> Option<&'a WebhookRepository> {
    let candidates: Vec<String> = [
        "clone_url",
        "ssh_url",
        "html_url",
        "git_url",
        "svn_url",
        "url",
        "full_name",
    ]
    .iter()
    .filter_map(|k| repository.get(k).and_then(Value::as_str))
    .map(normalise)
    .collect();
    config
        .repositories
        .iter()
        .find(|r| r.urls.iter().any(|u| candidates.contains(&normalise(u))))
}

async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some(config) = state.config.webhook.as_ref() else {
        return Err(ApiError::not_found("the GitHub webhook is not configured"));
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let signed = header("x-hub-signature-256")
        .is_some_and(|sig| signature_valid(config.secret.expose().as_bytes(), &body, &sig));
    if !signed {
        tracing::warn!("webhook delivery refused: missing or wrong X-Hub-Signature-256");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong X-Hub-Signature-256",
        ));
    }
    // Signed: from here on the body is GitHub's.
    let event = header("x-github-event").unwrap_or_default();
    let Some(delivery) = header("x-github-delivery").filter(|d| !d.is_empty() && d.len() <= 100) else {
        return Err(ApiError::bad_field("X-GitHub-Delivery", "missing"));
    };
    let payload = payload_of(header("content-type").as_deref(), &body)?;
    tracing::info!(event, delivery, "webhook delivery");
    match event.as_str() {
        "ping" => {
            return Ok(Json(
                json!({"pong": true, "zen": payload.get("zen"), "hook_id": payload.get("hook_id")}),
            )
            .into_response())
        }
        "push" => {}
        other => return Ok(ignored(format!("event `{other}` is not handled"))),
    }
    let Some(repository) = payload.get("repository").and_then(|r| find_repository(config, r)) else {
        let name = payload
            .pointer("/repository/full_name")
            .and_then(Value::as_str)
            .unwrap_or("?");
        return Ok(ignored(format!("repository {name} is not registered")));
    };
    let git_ref = payload.get("ref").and_then(Value::as_str).unwrap_or_default();
    let after = payload.get("after").and_then(Value::as_str).unwrap_or_default();
    if payload.get("deleted").and_then(Value::as_bool) == Some(true) || after.bytes().all(|b| b == b'0') {
        return Ok(ignored(format!("{git_ref} was deleted")));
    }
    let Some(branch) = git_ref.strip_prefix("refs/heads/") else {
        return Ok(ignored(format!("{git_ref} is not a branch")));
    };
    if branch != repository.branch {
        return Ok(ignored(format!(
            "branch {branch} is not {} of {}",
            repository.branch, repository.name
        )));
    }
    if !(after.len() == 40 || after.len() == 64) || !after.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_field("after", "not a commit id"));
    }
    if !state.has_step(&config.step) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the pipeline step `{}` is not available", config.step),
        ));
    }
    let mut params = crate::params::RawParams::new();
    params.insert("repository".into(), json!(repository.name));
    if let Some(url) = repository.urls.first() {
        params.insert("url".into(), json!(url));
    }
    params.insert("branch".into(), json!(branch));
    params.insert("commit".into(), json!(after));
    // Replay-safe: a push of a commit this branch already has a pipeline for (queued,
    // running or succeeded) is answered with that run, whatever its delivery id, so a
    // captured push resent under a new X-GitHub-Delivery builds nothing. The ledger is the
    // run store, so it survives a restart; a deliberate rebuild goes through the API.
    if let Some(run) = already_built(&state, &config.step, &params).await? {
        tracing::info!(run = %run.id, delivery, "push of a commit already built: not run again");
        return Ok((StatusCode::OK, Json(run_json(&run))).into_response());
    }
    state.validate(&config.step, &params).await?;
    let (run, created) = state
        .submit(&config.step, params, Some(format!("github-{delivery}")))
        .await?;
    let status = if created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(run_json(&run))).into_response())
}

/// The run of `step` for the same repository, branch and commit that is queued, running
/// or succeeded, if any.
async fn already_built(
    state: &AppState,
    step: &str,
    params: &crate::params::RawParams,
) -> Result<Option<RunRecord>, ApiError> {
    let filter = RunFilter {
        step: Some(step.to_owned()),
        states: vec![RunState::Queued, RunState::Running, RunState::Succeeded],
        limit: None,
        ..RunFilter::default()
    };
    let key = ["repository", "branch", "commit"].map(|k| params.get(k).cloned());
    let runs = state.db(move |s| s.runs(&filter)).await?;
    Ok(runs.into_iter().find(|run| {
        serde_json::from_str::<crate::params::RawParams>(&run.params)
            .is_ok_and(|p| ["repository", "branch", "commit"].map(|k| p.get(k).cloned()) == key)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn githubs_own_test_vector_verifies() {
        let header = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(signature_valid(
            b"It's a Secret to Everybody",
            b"Hello, World!",
            header
        ));
        assert!(!signature_valid(
            b"It's a Secret to Everybody",
            b"Hello, World?",
            header
        ));
        assert!(!signature_valid(
            b"It's a secret to everybody",
            b"Hello, World!",
            header
        ));
        assert!(!signature_valid(
            b"It's a Secret to Everybody",
            b"Hello, World!",
            &header[..20]
        ));
        assert!(!signature_valid(b"x", b"Hello, World!", "sha1=abc"));
        // What `signature` makes, `signature_valid` accepts, and only under that secret.
        let made = signature(b"s3cret", b"{\"ref\": \"main\"}");
        assert!(signature_valid(b"s3cret", b"{\"ref\": \"main\"}", &made));
        assert!(!signature_valid(b"other", b"{\"ref\": \"main\"}", &made));
        assert!(!signature_valid(b"x", b"", "sha256=zz"));
    }

    #[test]
    fn repository_urls_compare_loosely() {
        assert_eq!(normalise("https://github.com/O/R.git/"), "https://github.com/o/r");
        assert_eq!(normalise("O/R"), "o/r");
    }
}
