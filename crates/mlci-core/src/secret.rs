//! Secrets, by reference and by value. A library is handed a [`Secret`] (or a
//! [`SecretResolver`]) by the binary, which alone reads the environment and files;
//! neither type ever prints its value.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Where a secret lives: the name of an environment variable or the path of a file
/// holding it. Never the value. Serialised as `{"env": "NAME"}` or `{"file": "/path"}`.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretRef {
    /// The value of this environment variable (e.g. one Jenkins' `withCredentials` sets).
    Env(String),
    /// The whole file (e.g. a mounted secret), less a trailing newline.
    File(PathBuf),
}

impl SecretRef {
    /// `environment variable `X`` or `file /path`, for error messages (never the value).
    pub fn describe(&self) -> String {
        match self {
            SecretRef::Env(name) => format!("environment variable `{name}`"),
            SecretRef::File(path) => format!("file {}", path.display()),
        }
    }
}

/// The reference is printed as `***` too: which variable holds a password is the
/// operator's business, not a log reader's.
impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretRef(***)")
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A resolved secret (API token, webhook secret, password). Only [`Secret::expose`]
/// shows it; `Debug` prints `Secret(***)`, and it is never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself: for comparing, signing and handing to a protocol only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Why a secret could not be resolved: names the variable or file, never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_of} {reason}")]
pub struct SecretError {
    /// `environment variable `X`` or `file /path`.
    pub source_of: String,
    pub reason: String,
}

impl SecretError {
    pub fn new(secret: &SecretRef, reason: impl Into<String>) -> Self {
        Self {
            source_of: secret.describe(),
            reason: reason.into(),
        }
    }
}

/// Resolves a [`SecretRef`] when it is needed (a mail sent, a fetch made). Built by the
/// binary, the only place that reads the environment; libraries call it.
pub type SecretResolver = Arc<dyn Fn(&SecretRef) -> Result<Secret, SecretError> + Send + Sync>;
