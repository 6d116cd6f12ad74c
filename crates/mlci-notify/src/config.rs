//! Where notifications go: SMTP settings, or the outbox folder when there are none.

use std::net::IpAddr;
use std::path::PathBuf;

use mlci_core::SecretRef;

use crate::NotifyError;

/// Mail settings. Without `smtp` (the default) every message is written to
/// `outbox` as an `.eml` file instead of being sent.
#[derive(Debug, Clone, PartialEq)]
pub struct MailConfig {
    pub smtp: Option<SmtpConfig>,
    /// `mlci <ci@example.com>` or a bare address.
    pub from: String,
    /// At least one address.
    pub to: Vec<String>,
    /// Folder of `<unix-millis>-<experiment-id>.eml` files, created on first use.
    pub outbox: PathBuf,
}

impl Default for MailConfig {
    fn default() -> Self {
        Self {
            smtp: None,
            from: defaults::from(),
            to: defaults::to(),
            outbox: defaults::outbox(),
        }
    }
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Security {
    /// Plain connection upgraded with STARTTLS, which is required (port 587).
    #[default]
    StartTls,
    /// TLS from the first byte, "SMTPS" (port 465).
    Tls,
    /// No encryption (port 25): only sensible for a relay on this machine.
    None,
}

impl Security {
    /// The usual port of this kind of connection.
    pub fn default_port(self) -> u16 {
        match self {
            Security::StartTls => 587,
            Security::Tls => 465,
            Security::None => 25,
        }
    }
}

/// An SMTP relay.
#[derive(Debug, Clone, PartialEq)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub username: Option<String>,
    /// Where the password is, never the password itself: resolved by the notifier's
    /// [`SecretResolver`](mlci_core::SecretResolver) at each send.
    pub password: Option<SecretRef>,
    /// PEM file of extra certificate authorities to trust (on top of the
    /// system's), e.g. a company CA or a self-signed relay's certificate.
    pub ca_file: Option<PathBuf>,
    /// Limit for connecting and for each SMTP command.
    pub timeout_seconds: u64,
}

impl SmtpConfig {
    /// `host` on the usual port of `security`, no login, a 30 s timeout.
    pub fn new(host: impl Into<String>, security: Security) -> Self {
        Self {
            host: host.into(),
            port: security.default_port(),
            security,
            username: None,
            password: None,
            ca_file: None,
            timeout_seconds: defaults::timeout(),
        }
    }

    /// `host:port`, as errors and logs name the server.
    pub fn server(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Whether the host is this machine (where a plain connection is fine).
    pub fn is_local(&self) -> bool {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    pub(crate) fn validate(&self) -> Result<(), NotifyError> {
        if self.host.trim().is_empty() {
            return Err(NotifyError::config("smtp.host", "must not be empty"));
        }
        if self.port == 0 {
            return Err(NotifyError::config("smtp.port", "must not be 0"));
        }
        if self.timeout_seconds == 0 {
            return Err(NotifyError::config("smtp.timeout_seconds", "must be at least 1"));
        }
        match (&self.username, &self.password) {
            (Some(u), _) if u.is_empty() => Err(NotifyError::config("smtp.username", "must not be empty")),
            (Some(_), None) => Err(NotifyError::config(
                "smtp.password",
                "is needed with smtp.username (an environment variable or a file)",
            )),
            (None, Some(_)) => Err(NotifyError::config(
                "smtp.username",
                "is needed with smtp.password",
            )),
            _ => Ok(()),
        }
    }
}

mod defaults {
    use std::path::PathBuf;

    pub(super) fn from() -> String {
        "mlci <mlci@localhost>".into()
    }
    pub(super) fn to() -> Vec<String> {
        vec!["mlci@localhost".into()]
    }
    /// Relative: the binary places it under its data folder.
    pub(super) fn outbox() -> PathBuf {
        PathBuf::from("notifications")
    }
    pub(super) fn timeout() -> u64 {
        30
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_hosts_and_server_names() {
        assert!(SmtpConfig::new("localhost", Security::None).is_local());
        assert!(SmtpConfig::new("127.0.0.2", Security::None).is_local());
        assert!(SmtpConfig::new("::1", Security::None).is_local());
        assert!(!SmtpConfig::new("smtp.example.com", Security::None).is_local());
        assert_eq!(
            SmtpConfig::new("smtp.example.com", Security::Tls).server(),
            "smtp.example.com:465"
        );
        assert_eq!(SmtpConfig::new("::1", Security::StartTls).server(), "[::1]:587");
    }

    #[test]
    fn login_needs_both_halves() {
        let mut c = SmtpConfig::new("smtp.example.com", Security::StartTls);
        c.username = Some("bot".into());
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("smtp.password "));
        c.password = Some(SecretRef::Env("SMTP_PASSWORD".into()));
        c.validate().unwrap();
        c.username = None;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("smtp.username "));
    }
}
