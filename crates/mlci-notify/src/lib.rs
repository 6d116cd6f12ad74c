//! `mlci-notify`: experiment notifications by email.
//!
//! [`Notification::for_experiment`] writes the message (subject with the
//! outcome and the objective's value, plain-text and HTML bodies with the best
//! parameters and the trial table, the report attached or linked);
//! [`Notifier::send`] delivers it over SMTP (STARTTLS, implicit TLS or plain,
//! optional login) or, without SMTP settings, writes it to an outbox folder as
//! an `.eml` file. Blocking: call it from a blocking thread in async code.
//!
//! **Invariant:** secrets are held by reference ([`SecretRef`]) and turned into values by
//! the caller's [`SecretResolver`] only when a message is sent; they are never printed,
//! logged or put in an error message, and this crate never reads the environment.

mod config;
mod error;
mod notification;
mod notifier;

pub use config::{MailConfig, Security, SmtpConfig};
pub use error::NotifyError;
pub use mlci_core::{Secret, SecretError, SecretRef, SecretResolver};
pub use notification::{Notification, ReportLink};
pub use notifier::{Delivery, Notifier};
