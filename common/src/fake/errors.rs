//! The errors `FakeKinesis` answers with: the AWS error codes, and messages worded like the
//! real service's so that logs and assertions read the same against either.

use crate::{ApiError, ShardId, StreamName};

use super::ACCOUNT;

/// `ResourceNotFoundException` for a stream, naming it as AWS does.
pub(super) fn stream_not_found(stream: &StreamName) -> ApiError {
    ApiError::from_code(
        "ResourceNotFoundException",
        format!("Stream {stream} under account {ACCOUNT} not found."),
    )
}

/// `ResourceNotFoundException` for a shard of an existing stream.
pub(super) fn shard_not_found(stream: &StreamName, shard: &ShardId) -> ApiError {
    ApiError::from_code(
        "ResourceNotFoundException",
        format!("Shard {shard} in stream {stream} under account {ACCOUNT} does not exist"),
    )
}

/// `ResourceNotFoundException` for a consumer ARN.
pub(super) fn consumer_not_found(arn: &str) -> ApiError {
    ApiError::from_code("ResourceNotFoundException", format!("Consumer {arn} not found."))
}

/// `InvalidArgumentException`: a value the service understood but refuses.
pub(super) fn invalid_argument(message: impl Into<String>) -> ApiError {
    ApiError::from_code("InvalidArgumentException", message)
}

/// `ValidationException`: a request that breaks a constraint of the API's model (lengths,
/// counts, ranges).
pub(super) fn validation(message: impl Into<String>) -> ApiError {
    ApiError::from_code("ValidationException", message)
}

/// `ResourceInUseException`: the stream or consumer is not in a state that allows the call.
pub(super) fn in_use(message: impl Into<String>) -> ApiError {
    ApiError::from_code("ResourceInUseException", message)
}

/// `LimitExceededException`: an account or stream quota.
pub(super) fn limit_exceeded(message: impl Into<String>) -> ApiError {
    ApiError::from_code("LimitExceededException", message)
}

/// `ExpiredIteratorException`.
pub(super) fn expired_iterator(message: impl Into<String>) -> ApiError {
    ApiError::from_code("ExpiredIteratorException", message)
}

/// The per-entry `ProvisionedThroughputExceededException` of PutRecords, worded as AWS words it.
pub(super) fn entry_throttled(stream: &StreamName, shard: &ShardId) -> ApiError {
    ApiError::from_code(
        "ProvisionedThroughputExceededException",
        format!("Rate exceeded for shard {shard} in stream {stream} under account {ACCOUNT}."),
    )
}

/// `ResourceInUseException` for a stream that is not `ACTIVE`.
pub(super) fn stream_not_active(stream: &StreamName, state: &str) -> ApiError {
    in_use(format!("Stream {stream} under account {ACCOUNT} not ACTIVE, instead in state {state}"))
}
