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
/// (RegisterStreamConsumer, Kinesis API reference); two minutes leaves room for a slow
/// registration without hiding one that never completes.
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

#[cfg(test)]
mod tests {
    use kinesis_common::fake::FakeKinesis;

    use super::*;

    fn names() -> (StreamName, ConsumerName) {
        (StreamName::new("efo").unwrap(), ConsumerName::new("app").unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn registers_a_missing_consumer_and_waits_until_it_is_active() {
        let fake = FakeKinesis::builder().consumer_delay(Duration::from_secs(3)).build();
        let (stream, name) = names();
        fake.create_active_stream(&stream, 1).unwrap();
        let started = Instant::now();
        let arn = ensure_registered(&fake, &stream, &name).await.unwrap();
        assert!(started.elapsed() >= Duration::from_secs(3), "{:?}", started.elapsed());
        let stream_arn = fake.describe_stream_summary(&stream).await.unwrap().arn;
        let consumer = fake.describe_stream_consumer(&stream_arn, &name).await.unwrap();
        assert_eq!((consumer.arn, consumer.status), (arn, ConsumerStatus::Active));
    }

    #[tokio::test(start_paused = true)]
    async fn workers_registering_at_once_share_one_consumer() {
        let fake = FakeKinesis::builder().consumer_delay(Duration::from_secs(1)).build();
        let (stream, name) = names();
        fake.create_active_stream(&stream, 1).unwrap();
        let (a, b) = tokio::join!(
            ensure_registered(&fake, &stream, &name),
            ensure_registered(&fake, &stream, &name)
        );
        assert_eq!(a.unwrap(), b.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn deregistering_twice_is_fine_and_an_unknown_stream_is_not_found() {
        let fake = FakeKinesis::builder().consumer_delay(Duration::from_millis(10)).build();
        let (stream, name) = names();
        fake.create_active_stream(&stream, 1).unwrap();
        ensure_registered(&fake, &stream, &name).await.unwrap();
        deregister(&fake, &stream, &name).await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        deregister(&fake, &stream, &name).await.unwrap();
        let missing = StreamName::new("missing").unwrap();
        let error = ensure_registered(&fake, &missing, &name).await.unwrap_err();
        assert!(matches!(error, RegistrationError::Api(e) if e.kind() == ApiErrorKind::NotFound));
    }
}
