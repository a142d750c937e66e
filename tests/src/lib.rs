//! Support for the integration tests: clients for the substrate that `cargo xtask test`
//! started, unique resource names, and waiting for streams.
//!
//! The substrate is described by environment variables that `cargo xtask` sets (see
//! `docs/substrate.md`): `AWS_ENDPOINT_URL_KINESIS`, `AWS_ENDPOINT_URL_DYNAMODB` (or
//! `AWS_ENDPOINT_URL` for both), `AWS_REGION`, credentials, and `KTK_BACKEND`
//! (`kinesis-mock`, `localstack` or `external`). Without them the tests fail at once with a
//! message that says how to run them, rather than silently testing nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use kinesis_common::{KinesisApi, SdkKinesis, Shard, StreamName, StreamStatus};

pub mod proxy;

/// Which substrate the tests run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// kinesis-mock and DynamoDB Local, LocalStack's own engines (the default).
    KinesisMock,
    /// LocalStack 4.7 itself on the host.
    LocalStack,
    /// Whatever the AWS_* variables point at.
    External,
}

impl Backend {
    /// The backend named by `KTK_BACKEND`.
    pub fn from_env() -> anyhow::Result<Self> {
        match std::env::var("KTK_BACKEND").as_deref() {
            Ok("kinesis-mock") => Ok(Self::KinesisMock),
            Ok("localstack") => Ok(Self::LocalStack),
            Ok("external") => Ok(Self::External),
            Ok(other) => {
                bail!("KTK_BACKEND={other:?} is not one of kinesis-mock, localstack, external")
            }
            Err(_) => bail!(
                "no substrate: KTK_BACKEND is not set. Run the integration tests with \
                 `cargo xtask test` (it installs and starts the local emulators), or start them \
                 with `cargo xtask up` and export the variables it prints"
            ),
        }
    }
}

/// The substrate's SDK configuration: loopback endpoints and dummy static credentials for the
/// local backends, the usual AWS configuration chain for `external`.
pub async fn sdk_config() -> anyhow::Result<SdkConfig> {
    let backend = Backend::from_env()?;
    let loader = aws_config::defaults(BehaviorVersion::v2026_01_12());
    let loader = match backend {
        Backend::External => loader,
        Backend::KinesisMock | Backend::LocalStack => {
            for var in ["AWS_ENDPOINT_URL_KINESIS", "AWS_ENDPOINT_URL_DYNAMODB"] {
                std::env::var(var).with_context(|| {
                    format!("{var} is not set although KTK_BACKEND is {backend:?}")
                })?;
            }
            loader
                .region(Region::new("us-east-1"))
                .credentials_provider(Credentials::new("test", "test", None, None, "static"))
        }
    };
    Ok(loader.load().await)
}

/// A [`KinesisApi`] for the substrate.
pub async fn kinesis() -> anyhow::Result<Arc<dyn KinesisApi>> {
    Ok(Arc::new(SdkKinesis::new(&sdk_config().await?)))
}

/// A DynamoDB client for the substrate.
pub async fn dynamodb() -> anyhow::Result<aws_sdk_dynamodb::Client> {
    Ok(aws_sdk_dynamodb::Client::new(&sdk_config().await?))
}

/// A name no other test run will use: `<prefix>-<unix millis>-<pid>-<counter>`.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let millis = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{millis}-{}-{n}", std::process::id())
}

/// A unique, valid stream name.
pub fn unique_stream(prefix: &str) -> StreamName {
    StreamName::new(unique_name(prefix)).expect("prefix makes a valid stream name")
}

/// Polls until the stream is `Active` (CreateStream, SplitShard and MergeShards leave it
/// `Creating` or `Updating` for a while), failing after `timeout`.
pub async fn wait_active(
    api: &dyn KinesisApi,
    stream: &StreamName,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match api.describe_stream_summary(stream).await {
            Ok(summary) if summary.status == StreamStatus::Active => return Ok(()),
            Ok(_) => {}
            // A stream just created may briefly be unknown to an eventually consistent service.
            Err(e) if e.kind() == kinesis_common::ApiErrorKind::NotFound => {}
            Err(e) => return Err(e).context("DescribeStreamSummary while waiting for ACTIVE"),
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("stream {stream} did not become ACTIVE within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates a stream with `shards` shards and waits until it is `Active`.
pub async fn create_stream(
    api: &dyn KinesisApi,
    stream: &StreamName,
    shards: u32,
) -> anyhow::Result<()> {
    api.create_stream(stream, shards).await.context("CreateStream")?;
    wait_active(api, stream, Duration::from_secs(30)).await
}

/// The open shards of a stream, ordered by the start of their hash ranges.
pub async fn open_shards(api: &dyn KinesisApi, stream: &StreamName) -> anyhow::Result<Vec<Shard>> {
    let mut shards: Vec<Shard> =
        api.list_shards(stream).await?.into_iter().filter(Shard::is_open).collect();
    shards.sort_by_key(|s| s.hash_range.start());
    Ok(shards)
}
