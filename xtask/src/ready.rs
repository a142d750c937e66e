//! Readiness probes: signed `ListStreams` / `ListTables` calls through the AWS SDK.
//!
//! kinesis-mock and LocalStack parse the `Authorization` header, so a plain
//! TCP connect or an unsigned request is not enough; any static key works.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_sdk_kinesis::error::DisplayErrorContext;

/// Access key id of the static dummy credentials local backends use.
pub(crate) const ACCESS_KEY_ID: &str = "test";
/// Secret access key of the static dummy credentials.
pub(crate) const SECRET_ACCESS_KEY: &str = "test";
/// Region of the local backends.
pub(crate) const REGION: &str = "us-east-1";

/// Which service a probe calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Service {
    /// Kinesis `ListStreams`.
    Kinesis,
    /// DynamoDB `ListTables`.
    DynamoDb,
}

fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(1))
        .operation_attempt_timeout(Duration::from_secs(3))
        .operation_timeout(Duration::from_secs(5))
        .build()
}

/// SDK configuration for a local backend: static dummy credentials, `us-east-1`,
/// the given endpoint, no retries (the caller polls) and short timeouts.
pub(crate) async fn local_config(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::v2026_01_12())
        .credentials_provider(Credentials::new(
            ACCESS_KEY_ID,
            SECRET_ACCESS_KEY,
            None,
            None,
            "xtask",
        ))
        .region(Region::new(REGION))
        .endpoint_url(endpoint)
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts())
        .load()
        .await
}

/// SDK configuration for `--backend external`: the user's own environment and
/// profile (endpoints from `AWS_ENDPOINT_URL*`), no retries, short timeouts.
pub(crate) async fn external_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::v2026_01_12())
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts())
        .load()
        .await
}

/// One `ListStreams` (limit 1) or `ListTables` (limit 1) call.
pub(crate) async fn probe(config: &SdkConfig, service: Service) -> Result<(), String> {
    match service {
        Service::Kinesis => aws_sdk_kinesis::Client::new(config)
            .list_streams()
            .limit(1)
            .send()
            .await
            .map(drop)
            .map_err(|error| DisplayErrorContext(error).to_string()),
        Service::DynamoDb => aws_sdk_dynamodb::Client::new(config)
            .list_tables()
            .limit(1)
            .send()
            .await
            .map(drop)
            .map_err(|error| DisplayErrorContext(error).to_string()),
    }
}
