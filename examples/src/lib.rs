//! Shared pieces of the example binaries: connecting to Kinesis the way the substrate says.

use std::sync::Arc;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use kinesis_common::{KinesisApi, SdkKinesis};

pub mod load;

/// The SDK configuration for the environment the binaries run in.
///
/// With `KTK_BACKEND` set to `kinesis-mock` or `localstack` (as `cargo xtask demo` does), the
/// endpoints come from `AWS_ENDPOINT_URL_KINESIS` / `AWS_ENDPOINT_URL_DYNAMODB` and the
/// credentials are the emulators' dummy ones. Otherwise the usual AWS configuration chain
/// applies (environment, profile, instance role), which is what a real stream needs.
pub async fn sdk_config() -> SdkConfig {
    let loader = aws_config::defaults(BehaviorVersion::v2026_01_12());
    match std::env::var("KTK_BACKEND").as_deref() {
        Ok("kinesis-mock" | "localstack") => {
            loader
                .region(Region::new("us-east-1"))
                .credentials_provider(Credentials::new("test", "test", None, None, "static"))
                .load()
                .await
        }
        _ => loader.load().await,
    }
}

/// A [`KinesisApi`] for the environment.
pub async fn kinesis() -> Arc<dyn KinesisApi> {
    Arc::new(SdkKinesis::new(&sdk_config().await))
}

/// The README's code examples, compiled as doc tests so they cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeExamples;
