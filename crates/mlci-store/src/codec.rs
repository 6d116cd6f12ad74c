//! Records to columns and back. Decoding never panics: bad data becomes a [`Fault::Bad`]
//! that names the column (the caller adds the experiment or trial).

use std::collections::BTreeMap;

use mlci_core::{ExperimentState, FailureKind, TrialState};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Number, Value};

use crate::Fault;

/// `value` as JSON, checked to read back equal. serde_json writes a NaN float as `null`,
/// which then fails every later read (or reads back as `None`), so such a record is
/// refused when written instead.
pub(crate) fn to_json<T: Serialize + DeserializeOwned + PartialEq>(
    value: &T,
    column: &str,
) -> Result<String, Fault> {
    let text =
        serde_json::to_string(value).map_err(|e| Fault::Bad(format!("{column} cannot be stored: {e}")))?;
    match serde_json::from_str::<T>(&text) {
        Ok(back) if back == *value => Ok(text),
        Ok(_) => Err(Fault::Bad(format!(
            "{column} cannot be stored: it would not read back the same (a NaN number?)"
        ))),
        Err(e) => Err(Fault::Bad(format!(
            "{column} cannot be stored: it would not read back (a NaN number?): {e}"
        ))),
    }
}

pub(crate) fn from_json<T: DeserializeOwned>(text: &str, column: &str) -> Result<T, Fault> {
    serde_json::from_str(text).map_err(|e| Fault::Bad(format!("{column} is not valid: {e}")))
}

/// Step metrics as a JSON object. Metrics can be NaN or infinite (a diverging loss), which
/// JSON numbers cannot hold, so those are written as the strings `"NaN"`, `"Infinity"`,
/// `"-Infinity"`.
pub(crate) fn encode_metrics(values: &BTreeMap<String, f64>) -> String {
    let map: Map<String, Value> = values
        .iter()
        .map(|(name, &v)| {
            let value = match Number::from_f64(v) {
                Some(n) => Value::Number(n),
                None if v.is_nan() => Value::String("NaN".into()),
                None if v > 0.0 => Value::String("Infinity".into()),
                None => Value::String("-Infinity".into()),
            };
            (name.clone(), value)
        })
        .collect();
    Value::Object(map).to_string()
}

pub(crate) fn decode_metrics(text: &str) -> Result<BTreeMap<String, f64>, Fault> {
    let bad = |why: String| Fault::Bad(format!("metrics is not valid: {why}"));
    let Value::Object(map) = serde_json::from_str(text).map_err(|e| bad(e.to_string()))? else {
        return Err(bad("not a JSON object".into()));
    };
    map.into_iter()
        .map(|(name, value)| {
            let v = match &value {
                Value::Number(n) => n.as_f64(),
                Value::String(s) if s == "NaN" => Some(f64::NAN),
                Value::String(s) if s == "Infinity" => Some(f64::INFINITY),
                Value::String(s) if s == "-Infinity" => Some(f64::NEG_INFINITY),
                _ => None,
            };
            v.map(|v| (name.clone(), v))
                .ok_or_else(|| bad(format!("`{name}` is {value}, not a number")))
        })
        .collect()
}

/// An enum stored as its `as_str` text, read back through its serde name (the same
/// snake_case spelling; the round-trip tests check every variant).
fn decode_enum<T: DeserializeOwned>(text: &str, column: &str) -> Result<T, Fault> {
    serde_json::from_value(Value::String(text.to_owned()))
        .map_err(|_| Fault::Bad(format!("{column} `{text}` is not one this mlci knows")))
}

pub(crate) fn trial_state(text: &str) -> Result<TrialState, Fault> {
    decode_enum(text, "state")
}

pub(crate) fn experiment_state(text: &str) -> Result<ExperimentState, Fault> {
    decode_enum(text, "state")
}

pub(crate) fn failure_kind(text: &str) -> Result<FailureKind, Fault> {
    decode_enum(text, "failure_kind")
}

/// SQLite stores a NaN REAL as NULL, so a NaN in a NOT NULL column is refused by name.
pub(crate) fn not_nan(value: f64, column: &str) -> Result<f64, Fault> {
    if value.is_nan() {
        Err(Fault::Bad(format!("{column} is NaN")))
    } else {
        Ok(value)
    }
}

/// A count or number from an INTEGER column.
pub(crate) fn unsigned<T: TryFrom<i64>>(value: i64, column: &str) -> Result<T, Fault> {
    T::try_from(value).map_err(|_| Fault::Bad(format!("{column} {value} is out of range")))
}

/// A count or number for an INTEGER column.
pub(crate) fn signed<T: TryInto<i64> + Copy + std::fmt::Display>(
    value: T,
    column: &str,
) -> Result<i64, Fault> {
    value
        .try_into()
        .map_err(|_| Fault::Bad(format!("{column} {value} is too large to store")))
}
