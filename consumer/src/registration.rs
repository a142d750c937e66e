//! Registration of the application's enhanced fan-out consumer: register it if missing and
//! wait until it is `ACTIVE`, and deregister it on request.
//!
//! Invariants:
//! - Workers of one application share one registered consumer (its name is the
//!   application's choice, the KCL uses the application name). Workers registering at once
//!   are fine: a second registration fails with `ResourceInUse` and is treated as "someone
//!   else is registering it", then waited for like any `CREATING` consumer.
//! - A consumer being deleted (`DELETING`) is waited out and registered again.

use std::time::Duration;

use kinesis_common::{
    ApiError, ApiErrorKind, ConsumerName, ConsumerStatus, KinesisApi, StreamName,
};
use tokio::time::Instant;
use tracing::{debug, info};

/// How long registration waits for the consumer to become `ACTIVE`. AWS documents that
/// registration takes a few seconds and a consumer is usable once `ACTIVE`
/// (RegisterStreamConsumer, Kinesis API reference); the KCL waits up to about two minutes.
pub(crate) const REGISTRATION_TIMEOUT: Duration = Duration::from_secs(120);

/// Why the fan-out consumer could not be made ready.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RegistrationError {
    #[error("a Kinesis call failed")]
    Api(#[from] ApiError),
    #[error("the consumer did not become ACTIVE within {0:?}")]
    Timeout(Duration),
}

/// The ARN of the stream's consumer `name`, registered if missing, once it is `ACTIVE`.
pub(crate) async fn ensure_registered(
    api: &dyn KinesisApi,
    stream: &StreamName,
    name: &ConsumerName,
) -> Result<String, RegistrationError> {
    let stream_arn = api.describe_stream_summary(stream).await?.arn;
    let deadline = Instant::now() + REGISTRATION_TIMEOUT;
    loop {
        match api.describe_stream_consumer(&stream_arn, name).await {
            Ok(consumer) if consumer.status == ConsumerStatus::Active => {
                debug!(consumer = %name, "fan-out consumer is active");
                return Ok(consumer.arn);
            }
            Ok(consumer) => {
                debug!(consumer = %name, status = ?consumer.status, "waiting for the fan-out consumer")
            }
            Err(error) if error.kind() == ApiErrorKind::NotFound => {
                match api.register_stream_consumer(&stream_arn, name).await {
                    Ok(_) => info!(consumer = %name, "fan-out consumer registered"),
                    // Another worker registers it at the same moment.
                    Err(error) if error.kind() == ApiErrorKind::ResourceInUse => {}
                    Err(error) => return Err(error.into()),
                }
            }
            Err(error) if error.is_retryable() => {
                debug!(consumer = %name, error = %error, "describing the fan-out consumer failed; retrying");
            }
            Err(error) => return Err(error.into()),
        }
        if Instant::now() >= deadline {
            return Err(RegistrationError::Timeout(REGISTRATION_TIMEOUT));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Deregisters the stream's consumer `name`; a consumer that is already gone is fine.
pub(crate) async fn deregister(
    api: &dyn KinesisApi,
    stream: &StreamName,
    name: &ConsumerName,
) -> Result<(), ApiError> {
    let stream_arn = api.describe_stream_summary(stream).await?.arn;
    match api.deregister_stream_consumer(&stream_arn, name).await {
        Ok(()) => {
            info!(consumer = %name, "fan-out consumer deregistered");
            Ok(())
        }
        Err(error) if error.kind() == ApiErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}
