//! The result mail of an experiment, through mlci-notify: SMTP when
//! configured, else an `.eml` file in the outbox (the embedded default).

use std::path::Path;

use mlci_core::{ExperimentRecord, TrialRecord};
use mlci_notify::{
    Delivery, MailConfig, Notification, Notifier, ReportLink, SecretRef, Security, SmtpConfig,
};

use crate::config::{secret_resolver, Config, ConfigError};

/// The notifier's settings from mlci's configuration.
pub(crate) fn mail_config(cfg: &Config) -> Result<MailConfig, ConfigError> {
    let m = &cfg.mail;
    let mut mail = MailConfig {
        outbox: cfg.outbox(),
        ..MailConfig::default()
    };
    if let Some(from) = &m.from {
        mail.from = from.clone();
    }
    if !m.to.is_empty() {
        mail.to = m.to.clone();
    }
    if let Some(s) = &m.smtp {
        let security = match s
            .security
            .as_deref()
            .unwrap_or("starttls")
            .to_ascii_lowercase()
            .as_str()
        {
            "starttls" => Security::StartTls,
            "tls" => Security::Tls,
            "none" => Security::None,
            other => {
                return Err(ConfigError(format!(
                    "mail.smtp.security: `{other}` is not starttls, tls or none"
                )))
            }
        };
        let mut smtp = SmtpConfig::new(s.host.clone(), security);
        if let Some(port) = s.port {
            smtp.port = port;
        }
        smtp.username = s.username.clone();
        smtp.password = match (&s.password_env, &s.password_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError(
                    "mail.smtp: set password_env or password_file, not both".into(),
                ))
            }
            (Some(var), None) => Some(SecretRef::Env(var.clone())),
            (None, Some(path)) => Some(SecretRef::File(path.clone())),
            (None, None) => None,
        };
        smtp.ca_file = s.ca_file.clone();
        if let Some(t) = s.timeout_seconds {
            smtp.timeout_seconds = t;
        }
        mail.smtp = Some(smtp);
    }
    Ok(mail)
}

/// The notifier for mlci's configuration; bad settings are errors naming the field. The
/// SMTP password is resolved by [`secret_resolver`] when a mail is sent.
pub(crate) fn notifier(cfg: &Config) -> anyhow::Result<Notifier> {
    Ok(Notifier::new(mail_config(cfg)?, secret_resolver())?)
}

/// Mail the outcome of `exp` with the report attached.
pub(crate) fn notify(
    notifier: &Notifier,
    exp: &ExperimentRecord,
    trials: &[TrialRecord],
    report: &Path,
) -> anyhow::Result<Delivery> {
    let message = Notification::for_experiment(exp, trials, Some(ReportLink::Attach(report.to_path_buf())))?;
    let delivery = notifier.send(&message)?;
    match &delivery {
        Delivery::Outbox(path) => {
            tracing::info!(outbox = %path.display(), "result mail written to the outbox")
        }
        other => tracing::info!(delivery = ?other, "result mail sent"),
    }
    Ok(delivery)
}
