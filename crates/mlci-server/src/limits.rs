//! Per-caller limits: how many runs one caller may start per minute and how many log
//! streams it may hold open, so one token (or the anonymous public) cannot take what the
//! service has for everyone. A caller is its credentials (a digest, never the secret), or
//! "anonymous".

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// Who is asking, for the limits: a digest of the credentials sent, or `anonymous`.
pub(crate) fn caller_key(headers: &HeaderMap) -> String {
    match headers.get(header::AUTHORIZATION) {
        None => "anonymous".to_owned(),
        Some(value) => {
            let digest = Sha256::digest(value.as_bytes());
            digest[..8].iter().map(|b| format!("{b:02x}")).collect()
        }
    }
}

/// The counters behind the limits.
#[derive(Debug, Default)]
pub(crate) struct CallerLimits {
    /// Runs started in the current minute, per caller: (window start, count).
    runs: Mutex<HashMap<String, (Instant, u32)>>,
    /// Log streams open, per caller.
    streams: Arc<Mutex<HashMap<String, usize>>>,
}

/// A caller's open log stream; dropping it gives the slot back.
#[derive(Debug)]
pub(crate) struct StreamSlot {
    key: String,
    streams: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = streams.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                streams.remove(&self.key);
            }
        }
    }
}

/// 429 with `Retry-After`.
fn too_many(message: String, retry_after: Duration) -> ApiError {
    let mut error = ApiError::new(StatusCode::TOO_MANY_REQUESTS, message);
    error.retry_after = Some(retry_after.as_secs().max(1));
    error
}

impl CallerLimits {
    /// Count one run started by `key`; refused past `per_minute` in the current minute.
    pub(crate) fn start_run(&self, key: &str, per_minute: u32) -> Result<(), ApiError> {
        let mut runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        runs.retain(|_, (start, _)| now.duration_since(*start) < Duration::from_secs(60));
        let (start, count) = runs.entry(key.to_owned()).or_insert((now, 0));
        if *count >= per_minute {
            let wait = Duration::from_secs(60).saturating_sub(now.duration_since(*start));
            return Err(too_many(
                format!("too many runs started by this caller: at most {per_minute} a minute"),
                wait,
            ));
        }
        *count += 1;
        Ok(())
    }

    /// Give back a run counted by [`CallerLimits::start_run`] that was not created (the
    /// idempotency key named an existing run: a retry is not a new run).
    pub(crate) fn refund_run(&self, key: &str) {
        let mut runs = self.runs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, count)) = runs.get_mut(key) {
            *count = count.saturating_sub(1);
        }
    }

    /// A log stream slot for `key`; refused past `per_caller` open at once.
    pub(crate) fn open_stream(&self, key: &str, per_caller: usize) -> Result<StreamSlot, ApiError> {
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        let open = streams.entry(key.to_owned()).or_insert(0);
        if *open >= per_caller {
            return Err(too_many(
                format!("too many log streams open by this caller: at most {per_caller}"),
                Duration::from_secs(5),
            ));
        }
        *open += 1;
        Ok(StreamSlot {
            key: key.to_owned(),
            streams: Arc::clone(&self.streams),
        })
    }
}

/// `Retry-After` on a response, when the error carries one.
pub(crate) fn with_retry_after(mut response: Response, seconds: Option<u64>) -> Response {
    if let Some(s) = seconds {
        if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    response.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_per_minute_and_streams_per_caller_are_counted_apart() {
        let limits = CallerLimits::default();
        for _ in 0..3 {
            limits.start_run("a", 3).unwrap();
        }
        let refused = limits.start_run("a", 3).unwrap_err();
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(refused.retry_after.is_some());
        limits.start_run("b", 3).unwrap();
        limits.refund_run("a");
        limits.start_run("a", 3).unwrap();
        let one = limits.open_stream("a", 1).unwrap();
        assert!(limits.open_stream("a", 1).is_err());
        limits.open_stream("b", 1).unwrap();
        drop(one);
        limits.open_stream("a", 1).unwrap();
    }
}
