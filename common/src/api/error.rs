//! [`ApiError`]: what went wrong in a Kinesis call, classified for retry decisions.

use std::error::Error as StdError;
use std::fmt;

/// The class of a Kinesis failure; what a caller needs to decide what to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ApiErrorKind {
    /// Over a service limit (`ProvisionedThroughputExceededException`, `LimitExceededException`,
    /// `ThrottlingException`): retry later, more slowly.
    Throttled,
    /// The stream, shard or consumer does not exist (`ResourceNotFoundException`).
    NotFound,
    /// The request was malformed or broke a limit (`InvalidArgumentException`,
    /// `ValidationException`): retrying the same request fails again.
    InvalidArgument,
    /// The shard iterator is older than five minutes (`ExpiredIteratorException`): get a new one.
    ExpiredIterator,
    /// The caller may not do this (`AccessDeniedException`, KMS access errors, bad credentials).
    AccessDenied,
    /// The resource is busy (`ResourceInUseException`): the stream is being created or
    /// resharded, or another subscription holds the shard. Retry after a pause.
    ResourceInUse,
    /// A passing fault: 5xx answers, `InternalFailure`, timeouts, dropped connections.
    Transient,
    /// Anything else.
    Other,
}

impl ApiErrorKind {
    /// Maps an AWS error code to its kind.
    pub fn from_code(code: &str) -> Self {
        match code {
            "ProvisionedThroughputExceededException"
            | "LimitExceededException"
            | "ThrottlingException"
            | "Throttling"
            | "RequestLimitExceeded"
            | "KMSThrottlingException" => Self::Throttled,
            "ResourceNotFoundException" => Self::NotFound,
            "InvalidArgumentException" | "ValidationException" | "SerializationException" => {
                Self::InvalidArgument
            }
            "ExpiredIteratorException" | "ExpiredNextTokenException" => Self::ExpiredIterator,
            "AccessDeniedException"
            | "KMSAccessDeniedException"
            | "KMSDisabledException"
            | "KMSInvalidStateException"
            | "KMSNotFoundException"
            | "KMSOptInRequired"
            | "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "MissingAuthenticationTokenException"
            | "IncompleteSignatureException"
            | "ExpiredTokenException" => Self::AccessDenied,
            "ResourceInUseException" => Self::ResourceInUse,
            "InternalFailure"
            | "InternalFailureException"
            | "ServiceUnavailable"
            | "ServiceUnavailableException"
            | "InternalServerError" => Self::Transient,
            _ => Self::Other,
        }
    }
}

/// A failed Kinesis call, or a failed entry of a PutRecords call.
///
/// Opaque on purpose: match on [`kind`](Self::kind), read the AWS [`code`](Self::code) for
/// metrics and logs. SDK error types never appear here; the SDK's error, where there was one,
/// is the [`source`](StdError::source).
pub struct ApiError {
    kind: ApiErrorKind,
    code: Option<String>,
    message: String,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl ApiError {
    /// An error of `kind` with a message that says what happened.
    pub fn new(kind: ApiErrorKind, message: impl Into<String>) -> Self {
        Self { kind, code: None, message: message.into(), source: None }
    }

    /// An error from an AWS error code, classified by [`ApiErrorKind::from_code`].
    pub fn from_code(code: impl Into<String>, message: impl Into<String>) -> Self {
        let code = code.into();
        Self {
            kind: ApiErrorKind::from_code(&code),
            code: Some(code),
            message: message.into(),
            source: None,
        }
    }

    /// Sets the AWS error code.
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// Sets the underlying error.
    pub fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The class of failure.
    pub fn kind(&self) -> ApiErrorKind {
        self.kind
    }

    /// The AWS error code, such as `ProvisionedThroughputExceededException`, when known.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// The service's or the transport's message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the same call may succeed if tried again later: throttling, busy resources and
    /// passing faults.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            ApiErrorKind::Throttled | ApiErrorKind::Transient | ApiErrorKind::ResourceInUse
        )
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ApiErrorKind::Throttled => "throttled",
            ApiErrorKind::NotFound => "not found",
            ApiErrorKind::InvalidArgument => "invalid argument",
            ApiErrorKind::ExpiredIterator => "expired iterator",
            ApiErrorKind::AccessDenied => "access denied",
            ApiErrorKind::ResourceInUse => "resource in use",
            ApiErrorKind::Transient => "transient failure",
            ApiErrorKind::Other => "kinesis error",
        };
        f.write_str(kind)?;
        if let Some(code) = &self.code {
            write!(f, " ({code})")?;
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

impl fmt::Debug for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiError")
            .field("kind", &self.kind)
            .field("code", &self.code)
            .field("message", &self.message)
            .field("source", &self.source)
            .finish()
    }
}

impl Clone for ApiError {
    /// Clones kind, code and message; the source, which need not be `Clone`, is kept as text.
    fn clone(&self) -> Self {
        Self {
            kind: self.kind,
            code: self.code.clone(),
            message: self.message.clone(),
            source: self
                .source
                .as_ref()
                .map(|s| Box::new(SourceText(s.to_string())) as Box<dyn StdError + Send + Sync>),
        }
    }
}

impl PartialEq for ApiError {
    /// Equal when kind, code and message are; the source is not compared.
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.code == other.code && self.message == other.message
    }
}

impl Eq for ApiError {}

impl StdError for ApiError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_ref().map(|s| s.as_ref() as &(dyn StdError + 'static))
    }
}

#[derive(Debug)]
struct SourceText(String);

impl fmt::Display for SourceText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for SourceText {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_kinds_and_retryability() {
        let cases = [
            ("ProvisionedThroughputExceededException", ApiErrorKind::Throttled, true),
            ("InternalFailure", ApiErrorKind::Transient, true),
            ("ResourceInUseException", ApiErrorKind::ResourceInUse, true),
            ("ResourceNotFoundException", ApiErrorKind::NotFound, false),
            ("InvalidArgumentException", ApiErrorKind::InvalidArgument, false),
            ("ExpiredIteratorException", ApiErrorKind::ExpiredIterator, false),
            ("AccessDeniedException", ApiErrorKind::AccessDenied, false),
            ("SomethingNew", ApiErrorKind::Other, false),
        ];
        for (code, kind, retry) in cases {
            let e = ApiError::from_code(code, "m");
            assert_eq!(e.kind(), kind, "{code}");
            assert_eq!(e.is_retryable(), retry, "{code}");
            assert_eq!(e.code(), Some(code));
        }
    }

    #[test]
    fn display_is_a_short_phrase_with_code_and_message() {
        let e = ApiError::from_code("ResourceNotFoundException", "Stream s not found");
        assert_eq!(e.to_string(), "not found (ResourceNotFoundException): Stream s not found");
    }
}
