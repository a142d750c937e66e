//! What the chaos runner does to the emulators directly, never through the proxies: create
//! the stream, list its shards, write bad records, and read and rewrite the lease table (the
//! forced steal).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use aws_sdk_kinesis::error::DisplayErrorContext;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::StreamStatus;

use crate::ready;

/// SDK configuration for an emulator reached directly: dummy credentials, three attempts.
pub(crate) async fn direct_config(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::v2026_01_12())
        .credentials_provider(Credentials::new(
            ready::ACCESS_KEY_ID,
            ready::SECRET_ACCESS_KEY,
            None,
            None,
            "xtask-chaos",
        ))
        .region(Region::new(ready::REGION))
        .endpoint_url(endpoint)
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_attempt_timeout(Duration::from_secs(10))
                .operation_timeout(Duration::from_secs(30))
                .build(),
        )
        .load()
        .await
}

/// The stream, reached directly.
pub(crate) struct Stream {
    client: aws_sdk_kinesis::Client,
    name: String,
}

/// A shard as ListShards describes it.
#[derive(Debug, Clone)]
pub(crate) struct ShardInfo {
    /// The shard id.
    pub(crate) id: String,
    /// Whether it still takes writes.
    pub(crate) open: bool,
}

impl Stream {
    /// A handle to stream `name` through `config`.
    pub(crate) fn new(config: &SdkConfig, name: &str) -> Self {
        Self { client: aws_sdk_kinesis::Client::new(config), name: name.to_owned() }
    }

    /// Creates the stream and waits until it is active.
    pub(crate) async fn create(&self, shards: u32, limit: Duration) -> Result<()> {
        self.client
            .create_stream()
            .stream_name(&self.name)
            .shard_count(shards as i32)
            .send()
            .await
            .map_err(|e| {
                anyhow::anyhow!("CreateStream {}: {}", self.name, DisplayErrorContext(e))
            })?;
        let deadline = Instant::now() + limit;
        loop {
            let summary =
                self.client.describe_stream_summary().stream_name(&self.name).send().await;
            if let Ok(summary) = &summary
                && summary
                    .stream_description_summary()
                    .is_some_and(|s| s.stream_status() == &StreamStatus::Active)
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("stream {} not active after {limit:?}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every shard, open or closed.
    pub(crate) async fn shards(&self) -> Result<Vec<ShardInfo>> {
        let mut out = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let request = match &next {
                Some(token) => self.client.list_shards().next_token(token),
                None => self.client.list_shards().stream_name(&self.name),
            };
            let page = request.send().await.map_err(|e| {
                anyhow::anyhow!("ListShards {}: {}", self.name, DisplayErrorContext(e))
            })?;
            for shard in page.shards() {
                let open = shard
                    .sequence_number_range()
                    .is_none_or(|range| range.ending_sequence_number().is_none());
                out.push(ShardInfo { id: shard.shard_id().to_owned(), open });
            }
            match page.next_token() {
                Some(token) => next = Some(token.to_owned()),
                None => return Ok(out),
            }
        }
    }

    /// Writes one record; returns the shard and sequence number it got.
    pub(crate) async fn put(&self, key: &str, data: Vec<u8>) -> Result<(String, String)> {
        let out = self
            .client
            .put_record()
            .stream_name(&self.name)
            .partition_key(key)
            .data(Blob::new(data))
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("PutRecord {}: {}", self.name, DisplayErrorContext(e)))?;
        Ok((out.shard_id().to_owned(), out.sequence_number().to_owned()))
    }
}

/// One lease item, as far as the runner cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeaseItem {
    /// `leaseKey`.
    pub(crate) shard: String,
    /// `leaseOwner`.
    pub(crate) owner: Option<String>,
    /// `leaseCounter`.
    pub(crate) counter: u64,
    /// `checkpoint` and `checkpointSubSequenceNumber`, as a position text (`seq/sub` or a
    /// sentinel).
    pub(crate) checkpoint: String,
}

impl LeaseItem {
    /// Whether the checkpoint is a record's position (processing has happened).
    pub(crate) fn has_progress(&self) -> bool {
        self.checkpoint.contains('/')
    }

    fn from_item(item: &HashMap<String, AttributeValue>) -> Option<Self> {
        let s = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
        let n =
            |name: &str| item.get(name).and_then(|v| v.as_n().ok()).and_then(|n| n.parse().ok());
        let checkpoint = s("checkpoint")?;
        let checkpoint = if checkpoint.bytes().all(|b| b.is_ascii_digit()) {
            format!("{checkpoint}/{}", n("checkpointSubSequenceNumber").unwrap_or(0u64))
        } else {
            checkpoint
        };
        Some(Self {
            shard: s("leaseKey")?,
            owner: s("leaseOwner"),
            counter: n("leaseCounter")?,
            checkpoint,
        })
    }
}

/// What a conditional write found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Write {
    /// Written; the item as stored afterwards.
    Done(LeaseItem),
    /// The item had changed; as it is now (`None`: gone).
    Changed(Option<LeaseItem>),
}

/// The lease table, reached directly.
#[derive(Clone)]
pub(crate) struct LeaseTable {
    client: aws_sdk_dynamodb::Client,
    name: String,
}

impl LeaseTable {
    /// A handle to table `name` through `config`.
    pub(crate) fn new(config: &SdkConfig, name: &str) -> Self {
        Self { client: aws_sdk_dynamodb::Client::new(config), name: name.to_owned() }
    }

    /// Every lease item (strongly consistent); an empty list if the table does not exist yet.
    pub(crate) async fn scan(&self) -> Result<Vec<LeaseItem>> {
        let mut out = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.name)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await;
            let page = match page {
                Ok(page) => page,
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|e| e.is_resource_not_found_exception()) =>
                {
                    return Ok(Vec::new());
                }
                Err(e) => bail!("Scan {}: {}", self.name, DisplayErrorContext(e)),
            };
            out.extend(page.items().iter().filter_map(LeaseItem::from_item));
            match page.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => return Ok(out),
            }
        }
    }

    /// One item (strongly consistent).
    pub(crate) async fn get(&self, shard: &str) -> Result<Option<LeaseItem>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.name)
            .key("leaseKey", AttributeValue::S(shard.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("GetItem {}: {}", self.name, DisplayErrorContext(e)))?;
        Ok(out.item().and_then(LeaseItem::from_item))
    }

    /// Gives `item` to `owner` (`None`: no owner), counter + 1, conditional on its counter and
    /// owner being what `item` says. Like the consumer's own take, it counts an owner switch.
    pub(crate) async fn reassign(&self, item: &LeaseItem, owner: Option<&str>) -> Result<Write> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.name)
            .key("leaseKey", AttributeValue::S(item.shard.clone()))
            .expression_attribute_values(":c", AttributeValue::N(item.counter.to_string()))
            .expression_attribute_values(":n", AttributeValue::N((item.counter + 1).to_string()))
            .return_values(ReturnValue::AllNew);
        update = match &item.owner {
            Some(current) => update
                .condition_expression("leaseCounter = :c AND leaseOwner = :o")
                .expression_attribute_values(":o", AttributeValue::S(current.clone())),
            None => update
                .condition_expression("leaseCounter = :c AND attribute_not_exists(leaseOwner)"),
        };
        update = match owner {
            Some(owner) if item.owner.as_deref() == Some(owner) => {
                update.update_expression("SET leaseCounter = :n")
            }
            Some(owner) => update
                .update_expression(
                    "SET leaseOwner = :w, leaseCounter = :n, ownerSwitchesSinceCheckpoint = \
                     if_not_exists(ownerSwitchesSinceCheckpoint, :zero) + :one",
                )
                .expression_attribute_values(":w", AttributeValue::S(owner.to_owned()))
                .expression_attribute_values(":zero", AttributeValue::N("0".to_owned()))
                .expression_attribute_values(":one", AttributeValue::N("1".to_owned())),
            None => update.update_expression("REMOVE leaseOwner SET leaseCounter = :n"),
        };
        match update.send().await {
            Ok(out) => {
                let stored = out.attributes().and_then(LeaseItem::from_item);
                Ok(Write::Done(stored.context("UpdateItem returned no item")?))
            }
            Err(e) => {
                // A failed condition, or an answer lost after the write: the item says which.
                let conditional =
                    e.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception());
                let now = self.get(&item.shard).await?;
                let expected = LeaseItem {
                    owner: owner.map(str::to_owned),
                    counter: item.counter + 1,
                    ..item.clone()
                };
                match now {
                    Some(now) if now == expected => Ok(Write::Done(now)),
                    now if conditional => Ok(Write::Changed(now)),
                    _ => bail!("UpdateItem {}: {}", self.name, DisplayErrorContext(e)),
                }
            }
        }
    }
}
