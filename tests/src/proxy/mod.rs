//! A loopback HTTP proxy that puts AWS-like Kinesis limits and injected faults in front of an
//! emulator that has neither.
//!
//! No local emulator throttles (see `shared/design/local-aws.md`), and kinesis-mock accepts
//! PutRecords of any count and size. [`LimitsProxy`] sits between an SDK client and the
//! emulator and:
//!
//! - enforces per-shard write limits as AWS does ([`ShardWriteLimit`]: 1 000 records/s and
//!   1 MiB/s per shard): PutRecords entries over a shard's limit are not forwarded and come
//!   back with `ProvisionedThroughputExceededException` in their place, `FailedRecordCount`
//!   counting them; a PutRecord over the limit fails whole with HTTP 400;
//! - refuses PutRecords over 500 entries or 5 MiB, and records over 1 MiB ([`RequestCaps`]),
//!   with the error codes AWS uses;
//! - injects faults ([`Faults`]) into any request, Kinesis, DynamoDB or other: server errors
//!   before forwarding or in place of a successful answer, TCP resets before or after
//!   forwarding, added latency, and a random share of throttled PutRecords entries.
//!
//! Only Kinesis JSON requests (`X-Amz-Target: Kinesis_20131202.*`) are subject to the limits;
//! everything else is forwarded as it is, bodies streamed (SubscribeToShard's event stream
//! included). The proxy learns each stream's shards from the upstream's ListShards and routes
//! every entry by its explicit hash key or the MD5 of its partition key.
//!
//! Faults are drawn from a generator seeded by [`ProxyConfig::seed`], so a test that makes
//! the same requests in the same order sees the same faults. Limits and faults can be
//! changed while the proxy runs ([`LimitsProxy::set_faults`], [`LimitsProxy::set_limits`]),
//! and [`LimitsProxy::stats`] says what it did.
//!
//! The proxy binds only loopback addresses and forwards only to `http://` upstreams. It is
//! test support, not a production component: it trusts its clients and bounds only the
//! bodies it reads ([`MAX_INSPECTED_BODY`]).
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use kinesis_integration_tests::proxy::{Faults, Fraction, LimitsProxy, ProxyConfig};
//!
//! let proxy = LimitsProxy::start("http://127.0.0.1:4568", ProxyConfig::default()).await?;
//! let config = proxy.sdk_config(&kinesis_integration_tests::sdk_config().await?);
//! let kinesis = kinesis_common::SdkKinesis::new(&config);
//! // ... writes through `kinesis` are now throttled like AWS's ...
//! proxy.set_faults(Faults { error_before_forward: Fraction::new(0.1)?, ..Faults::none() });
//! println!("{:?}", proxy.stats());
//! proxy.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod bucket;
mod config;
mod faults;
mod kinesis;
mod server;
mod shard_map;
mod stats;
mod writes;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use anyhow::Context;
use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_types::origin::Origin;
use kinesis_common::{KinesisApi, SdkKinesis};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use config::{
    FaultScope, Faults, Fraction, Limits, ProxyConfig, RequestCaps, ServerError, ShardWriteLimit,
};
pub use server::MAX_INSPECTED_BODY;
pub use stats::{ProxyStats, SECONDS_KEPT, SecondUsage, ShardUsage};

use server::{Shared, Upstream};

/// Why a proxy could not start, or a setting was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The upstream URL is not a plain `http://host:port` URL.
    #[error("invalid upstream URL {url:?}: {reason}")]
    Upstream {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The listen address is not a loopback address.
    #[error("listen address {addr} is not a loopback address")]
    NotLoopback {
        /// The address given.
        addr: SocketAddr,
    },
    /// The listen address could not be bound.
    #[error("could not listen on {addr}")]
    Bind {
        /// The address given.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A fraction outside `0.0..=1.0`.
    #[error("fraction {value} is not between 0 and 1")]
    Fraction {
        /// The value given.
        value: f64,
    },
}

/// A running proxy; dropping the handle stops it.
///
/// Its own ListShards calls go straight to the upstream with dummy credentials (the
/// emulators check that a SigV4 header is present, not what it says), so injected faults
/// never hit them.
#[derive(Debug)]
pub struct LimitsProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl LimitsProxy {
    /// Starts a proxy to `upstream` (such as `http://127.0.0.1:4568`) on `127.0.0.1` at a
    /// free port.
    pub async fn start(upstream: &str, config: ProxyConfig) -> Result<Self, ProxyError> {
        Self::start_on(upstream, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), config).await
    }

    /// Starts a proxy to `upstream` listening on `listen`, which must be a loopback address
    /// (port 0 picks a free port).
    pub async fn start_on(
        upstream: &str,
        listen: SocketAddr,
        config: ProxyConfig,
    ) -> Result<Self, ProxyError> {
        if !listen.ip().is_loopback() {
            return Err(ProxyError::NotLoopback { addr: listen });
        }
        let parsed = Upstream::parse(upstream)
            .map_err(|reason| ProxyError::Upstream { url: upstream.to_owned(), reason })?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| ProxyError::Bind { addr: listen, source })?;
        let addr =
            listener.local_addr().map_err(|source| ProxyError::Bind { addr: listen, source })?;
        let api = Arc::new(SdkKinesis::new(&upstream_sdk_config(&parsed.url)));
        let shared = Arc::new(Shared::new(parsed, config, api));
        let task = tokio::spawn(server::serve(listener, shared.clone()));
        Ok(Self { addr, shared, task })
    }

    /// The proxy's URL, `http://127.0.0.1:PORT`: the endpoint to give SDK clients.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address the proxy listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `base` with its endpoint replaced by the proxy's, marked as set in code so that
    /// `AWS_ENDPOINT_URL_KINESIS` and `AWS_ENDPOINT_URL_DYNAMODB` do not override it.
    pub fn sdk_config(&self, base: &SdkConfig) -> SdkConfig {
        let mut builder = base.to_builder();
        builder.set_endpoint_url(Some(self.endpoint()));
        builder.insert_origin("endpoint_url", Origin::shared_config());
        builder.build()
    }

    /// What the proxy has done since it started or since [`reset_stats`](Self::reset_stats).
    pub fn stats(&self) -> ProxyStats {
        self.shared.stats()
    }

    /// Sets every counter back to zero.
    pub fn reset_stats(&self) {
        self.shared.reset_stats();
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        self.shared.settings().faults
    }

    /// Replaces the faults; requests that start afterwards see the new ones.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.set_faults(faults);
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.shared.settings().limits
    }

    /// Replaces the limits; every shard's budget starts again, full.
    pub fn set_limits(&self, limits: Limits) {
        self.shared.set_limits(limits);
    }

    /// Starts a proxy in front of the substrate's Kinesis engine: `AWS_ENDPOINT_URL_KINESIS`,
    /// else `AWS_ENDPOINT_URL` (see the crate docs for the environment contract).
    pub async fn in_front_of_kinesis(config: ProxyConfig) -> anyhow::Result<Self> {
        let upstream = ["AWS_ENDPOINT_URL_KINESIS", "AWS_ENDPOINT_URL"]
            .into_iter()
            .find_map(|var| std::env::var(var).ok())
            .context(
                "no Kinesis endpoint: set AWS_ENDPOINT_URL_KINESIS (`cargo xtask test` does)",
            )?;
        Ok(Self::start(&upstream, config).await?)
    }

    /// The substrate's [`KinesisApi`] with every request going through this proxy.
    pub async fn kinesis(&self) -> anyhow::Result<Arc<dyn KinesisApi>> {
        Ok(Arc::new(SdkKinesis::new(&self.sdk_config(&crate::sdk_config().await?))))
    }

    /// A raw `aws-sdk-kinesis` client through this proxy, with the SDK's retries off so the
    /// caller sees every answer (for calls [`KinesisApi`] does not have, such as PutRecord, or
    /// fields it does not expose, such as `FailedRecordCount`).
    pub async fn kinesis_client(&self) -> anyhow::Result<aws_sdk_kinesis::Client> {
        let config = self.sdk_config(&crate::sdk_config().await?);
        let config = aws_sdk_kinesis::config::Builder::from(&config)
            .retry_config(RetryConfig::disabled())
            .build();
        Ok(aws_sdk_kinesis::Client::from_conf(config))
    }

    /// A DynamoDB client through this proxy, with the SDK's retries off.
    pub async fn dynamodb_client(&self) -> anyhow::Result<aws_sdk_dynamodb::Client> {
        let config = self.sdk_config(&crate::sdk_config().await?);
        let config = aws_sdk_dynamodb::config::Builder::from(&config)
            .retry_config(RetryConfig::disabled())
            .build();
        Ok(aws_sdk_dynamodb::Client::from_conf(config))
    }

    /// Stops accepting connections and closes the open ones.
    pub async fn shutdown(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for LimitsProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The configuration of the proxy's own client: the upstream, dummy static credentials, and
/// nothing from the environment (which points at the proxy's upstream anyway, or at the
/// proxy itself).
fn upstream_sdk_config(upstream: &str) -> SdkConfig {
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::v2026_01_12())
        .region(Region::new("us-east-1"))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            "test",
            "test",
            None,
            None,
            "limits-proxy",
        )))
        .endpoint_url(upstream)
        .build()
}
