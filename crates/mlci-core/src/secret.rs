//! Secrets, by reference and by value. A library is handed a [`Secret`] (or a
//! [`SecretResolver`]) by the binary, which alone reads the environment and files;
//! neither type ever prints its value.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
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

    /// Resolve with the lookups the caller gives: `env` for a variable, `read` for a file.
    /// The one rule of every resolver: the value less trailing newlines (`\r`, `\n`), which
    /// must be UTF-8 and not empty. This crate does no IO itself; the binary passes
    /// `std::env::var_os` and `std::fs::read`, tests their own. Errors name the variable or
    /// file, never the value.
    pub fn resolve_with(
        &self,
        env: &dyn Fn(&str) -> Option<OsString>,
        read: &dyn Fn(&Path) -> io::Result<Vec<u8>>,
    ) -> Result<Secret, SecretError> {
        let value = match self {
            SecretRef::Env(name) => env(name)
                .ok_or_else(|| SecretError::new(self, "is not set"))?
                .into_string()
                .map_err(|_| SecretError::new(self, "is not valid UTF-8"))?,
            SecretRef::File(path) => {
                let bytes = read(path).map_err(|e| SecretError::new(self, format!("cannot be read: {e}")))?;
                String::from_utf8(bytes).map_err(|_| SecretError::new(self, "is not valid UTF-8"))?
            }
        };
        let value = value.trim_end_matches(['\r', '\n']);
        if value.is_empty() {
            return Err(SecretError::new(self, "is empty"));
        }
        Ok(Secret::new(value))
    }
}

/// The reference is printed as `***` too: which variable holds a password is the
/// operator's business, not a log reader's.
impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A resolved secret (API token, webhook secret, password). Only [`Secret::expose`]
/// shows it; `Debug` prints `***`, and it is never logged.
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
        f.write_str("***")
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<OsString> {
        match name {
            "TOKEN" => Some("t0ken\r\n".into()),
            "EMPTY" => Some("\n".into()),
            _ => None,
        }
    }

    fn read(path: &Path) -> io::Result<Vec<u8>> {
        match path.to_str() {
            Some("/run/secrets/token") => Ok(b"from-file\n".to_vec()),
            Some("/run/secrets/binary") => Ok(vec![0xff, 0xfe]),
            _ => Err(io::Error::new(io::ErrorKind::NotFound, "no such file")),
        }
    }

    fn resolve(r: SecretRef) -> Result<String, String> {
        r.resolve_with(&env, &read)
            .map(|s| s.expose().to_owned())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn values_lose_their_trailing_newline_and_errors_name_the_reference() {
        assert_eq!(resolve(SecretRef::Env("TOKEN".into())).unwrap(), "t0ken");
        assert_eq!(
            resolve(SecretRef::File("/run/secrets/token".into())).unwrap(),
            "from-file"
        );
        assert_eq!(
            resolve(SecretRef::Env("UNSET".into())).unwrap_err(),
            "environment variable `UNSET` is not set"
        );
        assert_eq!(
            resolve(SecretRef::Env("EMPTY".into())).unwrap_err(),
            "environment variable `EMPTY` is empty"
        );
        assert_eq!(
            resolve(SecretRef::File("/run/secrets/binary".into())).unwrap_err(),
            "file /run/secrets/binary is not valid UTF-8"
        );
        assert!(resolve(SecretRef::File("/nope".into()))
            .unwrap_err()
            .starts_with("file /nope cannot be read: "));
    }

    #[test]
    fn neither_values_nor_references_print() {
        let r = SecretRef::Env("TOKEN".into());
        assert_eq!(format!("{r:?} {r}"), "*** ***");
        assert_eq!(format!("{:?}", r.resolve_with(&env, &read).unwrap()), "***");
    }

    #[test]
    fn references_serialise_by_kind() {
        let r: SecretRef = serde_json::from_str(r#"{"env":"SMTP_PASSWORD"}"#).unwrap();
        assert_eq!(r, SecretRef::Env("SMTP_PASSWORD".into()));
        let f = SecretRef::File("/run/secrets/x".into());
        assert_eq!(serde_json::to_string(&f).unwrap(), r#"{"file":"/run/secrets/x"}"#);
    }
}
