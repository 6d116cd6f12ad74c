//! Turning a [`Notification`] into an RFC 5322 message and delivering it:
//! over SMTP when configured, else into the outbox folder.

use std::fmt;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};

use mlci_core::SecretResolver;

use crate::{MailConfig, Notification, NotifyError, Security, SmtpConfig};

/// Where a message went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Accepted by the SMTP server; `message_id` is the `Message-ID` header (`<…@…>`).
    Smtp { message_id: String },
    /// Written to this `.eml` file.
    Outbox(PathBuf),
}

/// Sends notifications as configured. Addresses are checked once, by
/// [`Notifier::new`]; the password (through the caller's resolver) and the CA file are
/// read at each send.
#[derive(Clone)]
pub struct Notifier {
    config: MailConfig,
    from: Mailbox,
    to: Vec<Mailbox>,
    secrets: SecretResolver,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("config", &self.config)
            .field("from", &self.from)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

impl Notifier {
    /// Check the configuration: addresses (errors name `from` or `to[i]`)
    /// and the SMTP settings. `secrets` turns `smtp.password` into the password when a
    /// message is sent (the binary's resolver reads the environment or the file).
    pub fn new(config: MailConfig, secrets: SecretResolver) -> Result<Self, NotifyError> {
        let from = parse_address("from", &config.from)?;
        if config.to.is_empty() {
            return Err(NotifyError::NoRecipients);
        }
        let to = config
            .to
            .iter()
            .enumerate()
            .map(|(i, a)| parse_address(&format!("to[{i}]"), a))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(smtp) = &config.smtp {
            smtp.validate()?;
        }
        Ok(Self {
            config,
            from,
            to,
            secrets,
        })
    }

    pub fn config(&self) -> &MailConfig {
        &self.config
    }

    /// Deliver `n`: through the SMTP server if one is configured, else to
    /// `<outbox>/<unix-millis>-<experiment-id>.eml`.
    pub fn send(&self, n: &Notification) -> Result<Delivery, NotifyError> {
        let (message, message_id) = self.message(n)?;
        match &self.config.smtp {
            None => self
                .write_outbox(&n.experiment_id, &message.formatted())
                .map(Delivery::Outbox),
            Some(smtp) => {
                send_smtp(smtp, &self.secrets, &message)?;
                tracing::info!(
                    server = %smtp.server(),
                    message_id = %message_id,
                    recipients = self.to.len(),
                    subject = %n.subject,
                    "notification sent"
                );
                Ok(Delivery::Smtp { message_id })
            }
        }
    }

    /// Write `n` to the outbox whatever the configuration, e.g. to keep a
    /// message the SMTP server would not take.
    pub fn save_to_outbox(&self, n: &Notification) -> Result<PathBuf, NotifyError> {
        let (message, _) = self.message(n)?;
        self.write_outbox(&n.experiment_id, &message.formatted())
    }

    /// The complete RFC 5322 message, as it would be sent or saved.
    pub fn render(&self, n: &Notification) -> Result<Vec<u8>, NotifyError> {
        Ok(self.message(n)?.0.formatted())
    }

    /// multipart/mixed [multipart/alternative [text, html], attachments…],
    /// or just the alternative part without attachments.
    fn message(&self, n: &Notification) -> Result<(Message, String), NotifyError> {
        let message_id = new_message_id(self.from.email.domain());
        let alternative = MultiPart::alternative_plain_html(n.text.clone(), n.html.clone());
        let body = if n.attachments.is_empty() {
            alternative
        } else {
            let mut mixed = MultiPart::mixed().multipart(alternative);
            for (name, mime, bytes) in &n.attachments {
                let content_type = ContentType::parse(mime).map_err(|e| {
                    NotifyError::Message(format!(
                        "attachment `{name}` has an invalid MIME type `{mime}`: {e}"
                    ))
                })?;
                mixed = mixed.singlepart(Attachment::new(name.clone()).body(bytes.clone(), content_type));
            }
            mixed
        };
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(n.subject.clone())
            .message_id(Some(message_id.clone()))
            .user_agent(format!("mlci {}", env!("CARGO_PKG_VERSION")))
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("Auto-Submitted"),
                "auto-generated".into(),
            ));
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        let message = builder
            .multipart(body)
            .map_err(|e| NotifyError::Message(e.to_string()))?;
        Ok((message, message_id))
    }

    /// Write atomically (a hidden temporary file renamed into place), never
    /// replacing an existing file.
    fn write_outbox(&self, experiment_id: &str, bytes: &[u8]) -> Result<PathBuf, NotifyError> {
        let dir = &self.config.outbox;
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| NotifyError::Outbox { path, source }
        };
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let stem = file_safe(experiment_id);
        let mut millis = unix_millis();
        let path = loop {
            let path = dir.join(format!("{millis}-{stem}.eml"));
            if !path.exists() {
                break path;
            }
            millis += 1;
        };
        let tmp = dir.join(format!(".{millis}-{stem}.eml.{}.tmp", std::process::id()));
        let written = (|| -> io::Result<()> {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            fs::rename(&tmp, &path)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(&path)(e));
        }
        // Make the rename itself durable (best effort: not every platform opens folders).
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        tracing::info!(path = %path.display(), "notification written to the outbox");
        Ok(path)
    }
}

fn parse_address(field: &str, value: &str) -> Result<Mailbox, NotifyError> {
    value.trim().parse::<Mailbox>().map_err(|e| NotifyError::Address {
        field: field.to_owned(),
        value: value.to_owned(),
        reason: e.to_string(),
    })
}

fn unix_millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// `<1761234567890.3f2a9c0b1d4e5f60@example.com>`
fn new_message_id(domain: &str) -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    format!("<{}.{:016x}@{domain}>", unix_millis(), h.finish())
}

/// Letters, digits, `-`, `_` and `.` (not leading); anything else becomes `_`.
fn file_safe(id: &str) -> String {
    let s: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let s = s.trim_start_matches('.');
    if s.is_empty() {
        "experiment".into()
    } else {
        s.chars().take(100).collect()
    }
}

fn send_smtp(smtp: &SmtpConfig, secrets: &SecretResolver, message: &Message) -> Result<(), NotifyError> {
    let server = smtp.server();
    let tls = match smtp.security {
        Security::StartTls => Tls::Required(tls_parameters(smtp)?),
        Security::Tls => Tls::Wrapper(tls_parameters(smtp)?),
        Security::None => {
            if !smtp.is_local() {
                tracing::warn!(
                    server = %server,
                    "smtp without TLS to another host: the message{} crosses the network in clear",
                    if smtp.username.is_some() { " and the password" } else { "" }
                );
            }
            Tls::None
        }
    };
    let mut builder = SmtpTransport::builder_dangerous(smtp.host.as_str())
        .port(smtp.port)
        .tls(tls)
        .timeout(Some(Duration::from_secs(smtp.timeout_seconds)));
    if let (Some(user), Some(secret)) = (&smtp.username, &smtp.password) {
        let password = secrets(secret)?;
        builder = builder.credentials(Credentials::new(user.clone(), password.expose().to_owned()));
    }
    tracing::debug!(
        server = %server,
        security = ?smtp.security,
        user = smtp.username.as_deref().unwrap_or(""),
        "sending notification"
    );
    builder
        .build()
        .send(message)
        .map(drop)
        .map_err(|e| classify(&e, smtp))
}

fn tls_parameters(smtp: &SmtpConfig) -> Result<TlsParameters, NotifyError> {
    let mut builder = TlsParameters::builder(smtp.host.clone());
    if let Some(path) = &smtp.ca_file {
        let ca_err = |reason: String| NotifyError::CaFile {
            path: path.clone(),
            reason,
        };
        let pem = fs::read(path).map_err(|e| ca_err(e.to_string()))?;
        if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
            return Err(ca_err(
                "no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into(),
            ));
        }
        let cert = Certificate::from_pem(&pem).map_err(|e| ca_err(e.to_string()))?;
        builder = builder.add_root_certificate(cert);
    }
    builder.build().map_err(|e| NotifyError::Tls {
        server: smtp.server(),
        reason: e.to_string(),
    })
}

/// Map lettre's error to ours, naming the server.
fn classify(e: &lettre::transport::smtp::Error, smtp: &SmtpConfig) -> NotifyError {
    let server = smtp.server();
    let reason = e.to_string();
    let io_kind = io_error_kind(e);
    if e.is_timeout() || matches!(io_kind, Some(io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock)) {
        return NotifyError::Timeout {
            server,
            seconds: smtp.timeout_seconds,
        };
    }
    if e.is_tls() {
        return NotifyError::Tls { server, reason };
    }
    if let Some(code) = e.status() {
        let code = code.to_string();
        let about_auth = matches!(code.as_str(), "534" | "535" | "538")
            || (code == "530" && reason.to_ascii_lowercase().contains("auth"));
        return if about_auth {
            NotifyError::Auth {
                server,
                user: smtp.username.clone(),
                reason,
            }
        } else {
            NotifyError::Rejected { server, reason }
        };
    }
    if e.is_client() && reason.contains("authentication mechanism") {
        return NotifyError::Auth {
            server,
            user: smtp.username.clone(),
            reason,
        };
    }
    // rustls reports a failed handshake (an unknown issuer, a wrong name) as
    // invalid data on the socket.
    if smtp.security != Security::None && io_kind == Some(io::ErrorKind::InvalidData) {
        return NotifyError::Tls { server, reason };
    }
    if let Some(rest) = reason.strip_prefix("Connection error: ") {
        return NotifyError::Connect {
            server,
            reason: rest.to_owned(),
        };
    }
    if matches!(
        io_kind,
        Some(
            io::ErrorKind::ConnectionRefused
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::HostUnreachable
                | io::ErrorKind::NetworkUnreachable
                | io::ErrorKind::AddrNotAvailable
        )
    ) {
        return NotifyError::Connect { server, reason };
    }
    NotifyError::Smtp { server, reason }
}

fn io_error_kind(e: &(dyn std::error::Error + 'static)) -> Option<io::ErrorKind> {
    let mut source = e.source();
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return Some(io.kind());
        }
        source = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_names_are_file_safe() {
        assert_eq!(file_safe("catsdogs-1a2b3c"), "catsdogs-1a2b3c");
        assert_eq!(file_safe("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(file_safe(".."), "experiment");
        assert_eq!(file_safe("a b/c"), "a_b_c");
    }

    #[test]
    fn message_ids_are_unique_and_bracketed() {
        let (a, b) = (new_message_id("example.com"), new_message_id("example.com"));
        assert_ne!(a, b);
        assert!(a.starts_with('<') && a.ends_with("@example.com>"), "{a}");
    }
}
