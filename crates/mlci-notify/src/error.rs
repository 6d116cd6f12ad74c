use std::io;
use std::path::PathBuf;

/// Why a notification could not be built or delivered. Messages name the
/// field, file or `host:port` involved and never contain a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// `field` is `from` or `to[2]`.
    #[error("invalid address in `{field}`: `{value}`: {reason}")]
    Address {
        field: String,
        value: String,
        reason: String,
    },
    #[error("`to` needs at least one address")]
    NoRecipients,
    #[error("{field} {reason}")]
    Config { field: String, reason: String },
    /// The password could not be read: `source_of` names the variable or file.
    #[error("smtp.password: {source_of} {reason}")]
    Secret { source_of: String, reason: String },
    #[error("smtp.ca_file: cannot use {path}: {reason}")]
    CaFile { path: PathBuf, reason: String },
    #[error("cannot read report {path}: {source}")]
    Report { path: PathBuf, source: io::Error },
    #[error("cannot build the message: {0}")]
    Message(String),
    #[error("cannot connect to smtp server {server}: {reason}")]
    Connect { server: String, reason: String },
    #[error("tls with smtp server {server} failed: {reason}")]
    Tls { server: String, reason: String },
    #[error("smtp server {server} did not answer within {seconds} s")]
    Timeout { server: String, seconds: u64 },
    /// The server refused the login, or wants one and none is configured.
    #[error("smtp server {server} refused the login{}: {reason}", user_suffix(.user.as_deref()))]
    Auth {
        server: String,
        user: Option<String>,
        reason: String,
    },
    /// A 4xx/5xx reply to the message or its recipients.
    #[error("smtp server {server} rejected the message: {reason}")]
    Rejected { server: String, reason: String },
    #[error("smtp with {server} failed: {reason}")]
    Smtp { server: String, reason: String },
    #[error("cannot write {path}: {source}")]
    Outbox { path: PathBuf, source: io::Error },
}

fn user_suffix(user: Option<&str>) -> String {
    user.map(|u| format!(" of `{u}`")).unwrap_or_default()
}

/// The password could not be resolved.
impl From<mlci_core::SecretError> for NotifyError {
    fn from(e: mlci_core::SecretError) -> Self {
        Self::Secret {
            source_of: e.source_of,
            reason: e.reason,
        }
    }
}

impl NotifyError {
    pub(crate) fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Config {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Whether the configuration or the input is at fault (fix it and retry),
    /// rather than the server or the network.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Self::Address { .. }
                | Self::NoRecipients
                | Self::Config { .. }
                | Self::Secret { .. }
                | Self::CaFile { .. }
                | Self::Report { .. }
                | Self::Message(_)
        )
    }
}
