//! `mlci-notify`: experiment notifications by email.
//!
//! [`Notification::for_experiment`] writes the message (subject with the
//! outcome and the objective's value, plain-text and HTML bodies with the best
//! parameters and the trial table, the report attached or linked);
//! [`Notifier::send`] delivers it over SMTP (STARTTLS, implicit TLS or plain,
//! optional login) or, without SMTP settings, writes it to an outbox folder as
//! an `.eml` file. Blocking: call it from a blocking thread in async code.
//!
//! **Invariant:** secrets are held by reference ([`Secret`]), read only when a
//! message is sent, and never printed, logged or put in an error message.

mod config;
mod error;
mod notification;
mod notifier;

pub use config::{MailConfig, Secret, SecretValue, Security, SmtpConfig};
pub use error::NotifyError;
pub use notification::{Notification, ReportLink};
pub use notifier::{Delivery, Notifier};
