//! The one error type of the crate's parsers.

/// A syntax error in a query, scope query, type expression or attribute list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at byte {position}")]
pub struct ParseError {
    /// Byte offset into the input where the problem was found.
    pub position: usize,
    /// What is wrong, without a trailing period.
    pub message: String,
}

impl ParseError {
    pub(crate) fn new(position: usize, message: impl Into<String>) -> Self {
        Self {
            position,
            message: message.into(),
        }
    }
}
