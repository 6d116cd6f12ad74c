//! The search space: hyperparameters, their ranges and values.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A hyperparameter value. Untagged: `true`, `3`, `0.5`, `"adam"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl ParamValue {
    /// The value as a number, if it is one (`Bool` is 0 or 1).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            ParamValue::Bool(b) => Some(f64::from(u8::from(*b))),
            ParamValue::Int(i) => Some(*i as f64),
            ParamValue::Float(f) => Some(*f),
            ParamValue::Text(_) => None,
        }
    }
}

impl std::fmt::Display for ParamValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParamValue::Bool(b) => write!(f, "{b}"),
            ParamValue::Int(i) => write!(f, "{i}"),
            ParamValue::Float(x) => write!(f, "{x}"),
            ParamValue::Text(s) => f.write_str(s),
        }
    }
}

/// One trial's hyperparameters, by search-space key.
pub type Params = BTreeMap<String, ParamValue>;

/// Activate a parameter only when another parameter takes one of `values`
/// (e.g. `momentum` only when `training.optimizer` is `sgd`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub param: String,
    pub values: Vec<ParamValue>,
}

/// The range of one hyperparameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum ParamSpec {
    /// Integers in `[min, max]`, optionally on a `step` grid or a log scale.
    Int {
        min: i64,
        max: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<i64>,
        #[serde(default)]
        log: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        when: Option<Condition>,
    },
    /// Reals in `[min, max]`, optionally on a log scale.
    Float {
        min: f64,
        max: f64,
        #[serde(default)]
        log: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        when: Option<Condition>,
    },
    /// One of `values`.
    Categorical {
        values: Vec<ParamValue>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        when: Option<Condition>,
    },
}

impl ParamSpec {
    pub fn condition(&self) -> Option<&Condition> {
        match self {
            ParamSpec::Int { when, .. }
            | ParamSpec::Float { when, .. }
            | ParamSpec::Categorical { when, .. } => when.as_ref(),
        }
    }

    /// Whether `value` lies in this range.
    pub fn contains(&self, value: &ParamValue) -> bool {
        match (self, value) {
            (ParamSpec::Int { min, max, step, .. }, ParamValue::Int(v)) => {
                (min..=max).contains(&v) && step.is_none_or(|s| (v - min) % s == 0)
            }
            (ParamSpec::Float { min, max, .. }, v) => v.as_f64().is_some_and(|v| (*min..=*max).contains(&v)),
            (ParamSpec::Categorical { values, .. }, v) => values.contains(v),
            _ => false,
        }
    }
}

/// The search space: parameter key to range. Keys of model trials are the
/// paths of [`crate::apply_params`]; command trials may use any name.
pub type SearchSpace = BTreeMap<String, ParamSpec>;
