use thiserror::Error;

/// A model spec that cannot work, with the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid spec: {field}: {message}")]
pub struct SpecError {
    /// Dotted path of the field, e.g. `conv_blocks[1].kernel_size`.
    pub field: String,
    pub message: String,
}

impl SpecError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// A spec that did not parse; serde's message names the field and line.
    pub fn parse(message: impl Into<String>) -> Self {
        Self::new("(spec)", message)
    }
}
