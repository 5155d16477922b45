//! The one error table of Wuyang: every domain error maps to an NGSI-LD
//! ProblemDetails type and an HTTP status, and only here.

use std::fmt;

/// The kinds of error the NGSI-LD API reports (ETSI GS CIM 009, clause 5.5.2),
/// plus the few HTTP-level refusals that have no NGSI-LD type of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request is syntactically wrong (bad JSON, bad query parameter).
    InvalidRequest,
    /// The request is well formed but its data is not acceptable.
    BadRequestData,
    /// The entity (or other resource) to create exists already.
    AlreadyExists,
    /// The operation is not supported, for example an attribute already
    /// present on append with noOverwrite in a single-attribute operation.
    OperationNotSupported,
    /// The target resource does not exist.
    ResourceNotFound,
    /// An internal failure; its detail never leaves the server.
    InternalError,
    /// The query is too complex to be answered.
    TooComplexQuery,
    /// The query would return more results than the server allows.
    TooManyResults,
    /// A JSON-LD @context could not be retrieved or processed.
    LdContextNotAvailable,
    /// The tenant named in NGSILD-Tenant does not exist.
    NonexistentTenant,
    /// The server cannot produce any of the media types in Accept.
    NotAcceptable,
    /// The Content-Type of the request is not supported.
    UnsupportedMediaType,
    /// The request body is larger than the configured limit.
    PayloadTooLarge,
    /// The HTTP method is not allowed on this resource.
    MethodNotAllowed,
    /// A request with a body came without Content-Length.
    LengthRequired,
    /// The request body did not arrive within the server's time.
    RequestTimeout,
    /// The operation conflicts with the state of the system, e.g. a
    /// registration that holds the data does not accept the operation
    /// (clauses 5.6.x.4, 6.3.17).
    Conflict,
    /// A registered context source answered something that is not
    /// NGSI-LD, or an error of its own (clause 6.3.17).
    BadGateway,
    /// A registered context source did not answer in time (clause 6.3.17).
    GatewayTimeout,
    /// The request came back to this broker through a registration
    /// (clause 6.3.18: 508; no ProblemDetails type is registered for it).
    LoopDetected,
}

impl ErrorKind {
    /// The ProblemDetails `type` URI.
    pub fn type_uri(self) -> &'static str {
        match self {
            Self::InvalidRequest | Self::NotAcceptable | Self::MethodNotAllowed => {
                "https://uri.etsi.org/ngsi-ld/errors/InvalidRequest"
            }
            Self::UnsupportedMediaType
            | Self::PayloadTooLarge
            | Self::LengthRequired
            | Self::RequestTimeout => "https://uri.etsi.org/ngsi-ld/errors/InvalidRequest",
            Self::BadRequestData => "https://uri.etsi.org/ngsi-ld/errors/BadRequestData",
            Self::AlreadyExists => "https://uri.etsi.org/ngsi-ld/errors/AlreadyExists",
            Self::OperationNotSupported => {
                "https://uri.etsi.org/ngsi-ld/errors/OperationNotSupported"
            }
            Self::ResourceNotFound => "https://uri.etsi.org/ngsi-ld/errors/ResourceNotFound",
            Self::InternalError => "https://uri.etsi.org/ngsi-ld/errors/InternalError",
            Self::TooComplexQuery => "https://uri.etsi.org/ngsi-ld/errors/TooComplexQuery",
            Self::TooManyResults => "https://uri.etsi.org/ngsi-ld/errors/TooManyResults",
            Self::LdContextNotAvailable => {
                "https://uri.etsi.org/ngsi-ld/errors/LdContextNotAvailable"
            }
            Self::NonexistentTenant => "https://uri.etsi.org/ngsi-ld/errors/NonexistentTenant",
            Self::Conflict => "https://uri.etsi.org/ngsi-ld/errors/Conflict",
            Self::BadGateway => "https://uri.etsi.org/ngsi-ld/errors/BadGateway",
            Self::GatewayTimeout => "https://uri.etsi.org/ngsi-ld/errors/GatewayTimeout",
            Self::LoopDetected => "https://uri.etsi.org/ngsi-ld/errors/LoopDetected",
        }
    }

    /// The HTTP status code.
    pub fn status(self) -> u16 {
        match self {
            Self::InvalidRequest | Self::BadRequestData => 400,
            Self::AlreadyExists => 409,
            Self::OperationNotSupported => 422,
            Self::ResourceNotFound | Self::NonexistentTenant => 404,
            Self::InternalError => 500,
            Self::TooComplexQuery | Self::TooManyResults => 403,
            Self::LdContextNotAvailable => 503,
            Self::NotAcceptable => 406,
            Self::UnsupportedMediaType => 415,
            Self::PayloadTooLarge => 413,
            Self::MethodNotAllowed => 405,
            Self::LengthRequired => 411,
            Self::RequestTimeout => 408,
            Self::Conflict => 409,
            Self::BadGateway => 502,
            Self::GatewayTimeout => 504,
            Self::LoopDetected => 508,
        }
    }

    /// A short human-readable summary of the kind.
    pub fn title(self) -> &'static str {
        match self {
            Self::InvalidRequest => "Invalid request",
            Self::BadRequestData => "Bad request data",
            Self::AlreadyExists => "Already exists",
            Self::OperationNotSupported => "Operation not supported",
            Self::ResourceNotFound => "Resource not found",
            Self::InternalError => "Internal error",
            Self::TooComplexQuery => "Too complex query",
            Self::TooManyResults => "Too many results",
            Self::LdContextNotAvailable => "JSON-LD context not available",
            Self::NonexistentTenant => "Nonexistent tenant",
            Self::NotAcceptable => "Not acceptable",
            Self::UnsupportedMediaType => "Unsupported media type",
            Self::PayloadTooLarge => "Payload too large",
            Self::MethodNotAllowed => "Method not allowed",
            Self::LengthRequired => "Length required",
            Self::RequestTimeout => "Request timeout",
            Self::Conflict => "Conflict",
            Self::BadGateway => "Bad gateway",
            Self::GatewayTimeout => "Gateway timeout",
            Self::LoopDetected => "Loop detected",
        }
    }
}

/// An error of the NGSI-LD API: a kind from the table and a detail for the
/// client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NgsiError {
    /// What went wrong, which decides type URI and status.
    pub kind: ErrorKind,
    /// A sentence for the client, without trailing period.
    pub detail: String,
}

impl NgsiError {
    /// An error of `kind` with `detail`.
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }

    /// A syntactically invalid request.
    pub fn invalid_request(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidRequest, detail)
    }

    /// Well-formed but unacceptable data.
    pub fn bad_data(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequestData, detail)
    }

    /// A missing resource.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::ResourceNotFound, detail)
    }

    /// An internal failure: the detail is logged by the caller, never sent.
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::InternalError, detail)
    }

    /// The ProblemDetails body (RFC 7807) for this error. Internal errors
    /// carry a generic detail so that no internals leak.
    pub fn problem_details(&self) -> serde_json::Value {
        let detail = if self.kind == ErrorKind::InternalError {
            "an internal error occurred; see the server log"
        } else {
            self.detail.as_str()
        };
        serde_json::json!({
            "type": self.kind.type_uri(),
            "title": self.kind.title(),
            "status": self.kind.status(),
            "detail": detail,
        })
    }
}

impl fmt::Display for NgsiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.title(), self.detail)
    }
}

impl std::error::Error for NgsiError {}

/// Shorthand for results of the NGSI-LD layers.
pub type NgsiResult<T> = Result<T, NgsiError>;
