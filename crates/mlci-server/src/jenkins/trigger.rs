//! `POST /job/NAME/build` and `/buildWithParameters`, as Jenkins takes them: parameters
//! from the query string, a form body or a multipart body, and Jenkins' own
//! `json={"parameter": [{"name", "value"}]}` field; undefined parameters dropped
//! (SECURITY-170) and the job's defaults applied; the per-job build token of "Trigger
//! builds remotely"; `Location: …/queue/item/N/`.

use std::collections::BTreeMap;

use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde_json::{json, Value};

use super::{known_job, text_value, JError};
use crate::auth::{token_matches, Caller};
use crate::error::ApiError;
use crate::state::AppState;
use crate::steps::{ParamDef, ParamKind};

/// Form fields Jenkins itself consumes, never build parameters.
const RESERVED: [&str; 4] = ["token", "delay", "cause", "json"];

/// A Jenkins parameter (always text) as JSON, typed by the step's definition.
fn typed(kind: ParamKind, name: &str, text: &str) -> Result<Value, ApiError> {
    let bad = |what: &str| ApiError::bad_field(name, format!("must be {what}, not `{text}`"));
    Ok(match kind {
        ParamKind::Integer => json!(text.trim().parse::<i64>().map_err(|_| bad("an integer"))?),
        ParamKind::Number => {
            let v = text.trim().parse::<f64>().map_err(|_| bad("a number"))?;
            serde_json::Number::from_f64(v)
                .map(Value::Number)
                .ok_or_else(|| bad("a finite number"))?
        }
        ParamKind::Bool => match text.trim() {
            "true" | "on" | "1" => json!(true),
            "false" | "off" | "0" | "" => json!(false),
            _ => return Err(bad("true or false")),
        },
        ParamKind::String => json!(text),
    })
}

/// `application/x-www-form-urlencoded` pairs.
fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// The fields of a multipart body; file parts are read as text (mlci steps take no
/// file parameters: a file part for an undefined name is dropped like any other).
async fn multipart_pairs(state: &AppState, request: Request) -> Result<Vec<(String, String)>, ApiError> {
    let bad = |e: axum::extract::multipart::MultipartError| {
        ApiError::bad_field("body", format!("not a valid multipart form: {}", e.body_text()))
    };
    let mut form = Multipart::from_request(request, state)
        .await
        .map_err(|e| ApiError::bad_field("body", format!("not a valid multipart form: {}", e.body_text())))?;
    let mut pairs = Vec::new();
    while let Some(field) = form.next_field().await.map_err(bad)? {
        let Some(name) = field.name().map(str::to_owned) else {
            continue;
        };
        let bytes = field.bytes().await.map_err(bad)?;
        let text = String::from_utf8(bytes.to_vec())
            .map_err(|_| ApiError::bad_field(name.as_str(), "the value is not UTF-8 text"))?;
        pairs.push((name, text));
    }
    Ok(pairs)
}

/// Name → text of every parameter sent, the `json` field's list included.
fn collect(pairs: impl IntoIterator<Item = (String, String)>) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    for (k, v) in pairs {
        if k == "json" {
            let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(&v) else {
                continue;
            };
            let list = match obj.get("parameter") {
                Some(Value::Array(a)) => a.clone(),
                Some(one @ Value::Object(_)) => vec![one.clone()],
                _ => Vec::new(),
            };
            for p in list {
                if let (Some(name), Some(value)) = (p.get("name").and_then(Value::as_str), p.get("value")) {
                    fields.insert(name.to_owned(), text_value(value));
                }
            }
        } else if !RESERVED.contains(&k.as_str()) {
            fields.insert(k, v);
        }
    }
    fields
}

/// The step's parameters as Jenkins would build them: the defined ones sent, typed;
/// the defaults of those not sent; undefined ones dropped (SECURITY-170), unless the
/// step's schema is open (takes any parameter: then they are kept as text).
fn parameters(
    job: &str,
    defs: &[ParamDef],
    open: bool,
    fields: &BTreeMap<String, String>,
) -> Result<crate::params::RawParams, ApiError> {
    let mut params = crate::params::RawParams::new();
    for (name, text) in fields.iter().filter(|(n, _)| !defs.iter().any(|d| d.name == **n)) {
        if open {
            params.insert(name.clone(), json!(text));
        } else {
            tracing::debug!(job = %job, parameter = %name, "undefined build parameter dropped");
        }
    }
    for def in defs {
        let text = match (fields.get(&def.name), &def.default) {
            (Some(text), _) => text,
            (None, Some(default)) => default,
            (None, None) => continue,
        };
        params.insert(def.name.clone(), typed(def.kind, &def.name, text)?);
    }
    Ok(params)
}

/// The per-job build token's verdict for an anonymous caller (the auth layer lets one
/// through only to a build endpoint with `?token=`): allowed with the step's token, 403
/// with any other, as Jenkins answers.
fn check_build_token(
    state: &AppState,
    job: &str,
    caller: &Caller,
    query: &[(String, String)],
) -> Result<(), JError> {
    if !matches!(caller, Caller::Anonymous) {
        return Ok(());
    }
    let given = query.iter().find(|(k, _)| k == "token").map(|(_, v)| v.as_str());
    match (given, state.config.build_tokens.get(job)) {
        (Some(given), Some(token)) if token_matches(std::slice::from_ref(token), given) => Ok(()),
        (None, _) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "a token is required (an API token, or the job's build token as ?token=)",
        )
        .into()),
        _ => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("Invalid token provided for job `{job}`"),
        )
        .into()),
    }
}

pub(super) async fn build(
    State(state): State<AppState>,
    Path(job): Path<String>,
    caller: Option<Extension<Caller>>,
    request: Request,
) -> Result<Response, JError> {
    known_job(&state, &job)?;
    let caller = caller.map(|Extension(c)| c).unwrap_or(Caller::Anonymous);
    let headers = request.headers().clone();
    let query = form_pairs(request.uri().query().unwrap_or_default().as_bytes());
    check_build_token(&state, &job, &caller, &query)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let body = if content_type.starts_with("multipart/form-data") {
        multipart_pairs(&state, request).await?
    } else {
        let bytes = axum::body::to_bytes(request.into_body(), state.config.body_limit_bytes)
            .await
            .map_err(|e| ApiError::bad_field("body", format!("cannot read the body: {e}")))?;
        if std::str::from_utf8(&bytes).is_err() {
            return Err(ApiError::bad_field("body", "the form is not UTF-8").into());
        }
        form_pairs(&bytes)
    };
    let fields = collect(query.into_iter().chain(body));
    let open = state
        .steps
        .schema(&job)
        .is_none_or(|s| s["additionalProperties"] != Value::Bool(false));
    let params = parameters(&job, &state.steps.definitions(&job), open, &fields)?;
    state.validate(&job, &params).await?;
    let limit_key = crate::limits::caller_key(&headers);
    state
        .callers
        .start_run(&limit_key, state.config.max_runs_per_minute_per_caller)?;
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.trim().is_empty() && k.len() <= 256)
        .map(|k| k.trim().to_owned());
    let submitted = state.submit(&job, params, key).await;
    let (run, created) = match submitted {
        Ok(done) => done,
        Err(e) => {
            state.callers.refund_run(&limit_key);
            return Err(e.into());
        }
    };
    if !created {
        state.callers.refund_run(&limit_key);
    }
    let location = format!("{}queue/item/{}/", state.base_url(&headers), run.seq);
    let mut response = StatusCode::CREATED.into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(name: &str, kind: ParamKind, default: Option<&str>) -> ParamDef {
        ParamDef {
            name: name.into(),
            kind,
            default: default.map(str::to_owned),
            description: String::new(),
            required: false,
        }
    }

    #[test]
    fn undefined_parameters_are_dropped_and_defaults_applied() {
        let defs = [
            def("epochs", ParamKind::Integer, Some("3")),
            def("goal", ParamKind::Number, None),
            def("force", ParamKind::Bool, Some("false")),
        ];
        let fields = collect([
            ("epochs".to_owned(), "5".to_owned()),
            ("evil".to_owned(), "rm -rf".to_owned()),
            ("token".to_owned(), "t".to_owned()),
            (
                "json".to_owned(),
                r#"{"parameter": [{"name": "force", "value": true}]}"#.to_owned(),
            ),
        ]);
        let params = parameters("tune", &defs, false, &fields).unwrap();
        assert_eq!(
            Value::Object(params),
            json!({"epochs": 5, "force": true}),
            "goal has no default and was not sent; evil and token are not parameters"
        );
        let bad = parameters(
            "tune",
            &defs,
            false,
            &collect([("epochs".to_owned(), "many".to_owned())]),
        )
        .unwrap_err();
        assert_eq!(bad.field.as_deref(), Some("epochs"));
        let open = parameters(
            "record",
            &[],
            true,
            &collect([("commit".to_owned(), "abc".to_owned())]),
        )
        .unwrap();
        assert_eq!(Value::Object(open), json!({"commit": "abc"}));
    }
}
