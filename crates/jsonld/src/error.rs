//! The errors of context resolution.

/// Why an `@context` could not be turned into a [`crate::Context`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    /// A referenced context could not be obtained (network failure, timeout,
    /// non-success status, oversized body). NGSI-LD maps this to
    /// `LdContextNotAvailable` (HTTP 503).
    #[error("@context {url} is not available: {reason}")]
    NotAvailable {
        /// The URL that could not be obtained.
        url: String,
        /// What went wrong, for logs and the problem details.
        reason: String,
    },
    /// The context is not a valid JSON-LD context. NGSI-LD maps this to
    /// `InvalidRequest` or `BadRequestData` (HTTP 400).
    #[error("invalid @context: {0}")]
    Invalid(String),
}
