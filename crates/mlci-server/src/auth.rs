//! Tokens: `Authorization: Bearer <token>` or Basic with any user and the token as password.
//! Compared in constant time (over SHA-256 digests, so the length leaks nothing either);
//! never logged.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::state::AppState;
use crate::Secret;

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Caller {
    Anonymous,
    /// A valid token; the Basic user name when there was one.
    User(String),
}

/// Some credentials were given but they are not valid.
#[derive(Debug)]
pub(crate) struct BadCredentials;

/// Whether `given` is one of `tokens`, looking at every token whatever the answer.
pub(crate) fn token_matches(tokens: &[Secret], given: &str) -> bool {
    let given = Sha256::digest(given.as_bytes());
    let mut found = subtle::Choice::from(0);
    for token in tokens {
        found |= Sha256::digest(token.expose().as_bytes()).ct_eq(&given);
    }
    bool::from(found)
}

/// The caller of a request: anonymous without `Authorization`, an error with a bad one.
pub(crate) fn caller(tokens: &[Secret], headers: &HeaderMap) -> Result<Caller, BadCredentials> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(Caller::Anonymous);
    };
    let value = value.to_str().map_err(|_| BadCredentials)?.trim();
    let (scheme, rest) = value.split_once(' ').ok_or(BadCredentials)?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return if token_matches(tokens, rest) {
            Ok(Caller::User("token".to_owned()))
        } else {
            Err(BadCredentials)
        };
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| BadCredentials)?;
        let text = String::from_utf8(decoded).map_err(|_| BadCredentials)?;
        let (user, password) = text.split_once(':').ok_or(BadCredentials)?;
        return if token_matches(tokens, password) {
            Ok(Caller::User(if user.is_empty() {
                "token".into()
            } else {
                user.into()
            }))
        } else {
            Err(BadCredentials)
        };
    }
    Err(BadCredentials)
}

pub(crate) fn unauthorized(message: &str) -> Response {
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    let headers = response.headers_mut();
    headers.append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"mlci\""),
    );
    headers.append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"mlci\""),
    );
    response
}

/// A Jenkins build request carrying a per-job build token (`POST /job/NAME/build?token=…`,
/// "Trigger builds remotely"): the handler checks the token against the job's.
fn build_token_request(request: &Request) -> bool {
    let path = request.uri().path().trim_end_matches('/');
    let segments: Vec<&str> = path.split('/').collect();
    *request.method() == Method::POST
        && matches!(
            segments.as_slice(),
            ["", "job", _, "build" | "buildWithParameters"]
        )
        && form_urlencoded::parse(request.uri().query().unwrap_or_default().as_bytes())
            .any(|(k, _)| k == "token")
}

/// Middleware: mutating requests need a valid token; reads need one unless
/// `read_only_open`. Bad credentials are refused even where none are needed.
pub(crate) async fn require_token(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let read = matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    // Jenkins' `whoAmI` is an unprotected action: clients ask it who they are.
    let open = (read && (state.config.read_only_open || request.uri().path().starts_with("/whoAmI/")))
        || build_token_request(&request);
    match caller(&state.config.tokens, request.headers()) {
        Err(BadCredentials) => unauthorized("invalid credentials"),
        Ok(Caller::Anonymous) if !open => unauthorized(
            "a token is required (Authorization: Bearer <token>, or Basic with the token as password)",
        ),
        Ok(who) => {
            request.extensions_mut().insert(who);
            next.run(request).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn bearer_and_basic_tokens_are_recognised() {
        let tokens = vec![Secret::new("s3cret"), Secret::new("other")];
        assert_eq!(caller(&tokens, &HeaderMap::new()).unwrap(), Caller::Anonymous);
        assert_eq!(
            caller(&tokens, &headers("Bearer s3cret")).unwrap(),
            Caller::User("token".into())
        );
        let basic = base64::engine::general_purpose::STANDARD.encode("ci:other");
        assert_eq!(
            caller(&tokens, &headers(&format!("Basic {basic}"))).unwrap(),
            Caller::User("ci".into())
        );
        for bad in [
            "Bearer s3cre",
            "Bearer s3cret2",
            "Basic !!",
            "Token s3cret",
            "Bearer",
        ] {
            assert!(caller(&tokens, &headers(bad)).is_err(), "{bad}");
        }
        assert!(caller(&[], &headers("Bearer ")).is_err());
    }
}
