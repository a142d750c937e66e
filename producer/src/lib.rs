//! A KPL-style producer for Amazon Kinesis Data Streams.
//!
//! ```no_run
//! # async fn example(kinesis: std::sync::Arc<dyn kinesis_common::KinesisApi>) -> Result<(), Box<dyn std::error::Error>> {
//! use kinesis_producer::{Producer, Record};
//! use kinesis_common::StreamName;
//!
//! let producer = Producer::builder(kinesis).stream(StreamName::new("orders")?).start().await?;
//! let receipt = producer.send(Record::new("customer-42", "{\"total\": 12}")).await?;
//! let delivery = receipt.await?;
//! println!("{} {} {:?}", delivery.shard_id, delivery.sequence_number, delivery.sub_sequence_number);
//! producer.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! What it does with each record, in order: validates it at `send` (size, partition key,
//! explicit hash key) and waits for room in the outstanding budget (backpressure); predicts
//! its shard from the shard map; aggregates it with other records for that shard in the KPL
//! format (or sends it alone); lets it through that shard's adaptive rate limiter; packs it
//! into a PutRecords request; and retries failures with jittered exponential backoff until
//! its time to live runs out. Every accepted record's [`Receipt`] resolves exactly once: to a
//! [`Delivery`] (shard, sequence number, sub-sequence number, attempts) or to a
//! [`DeliveryError`] that hands the record back.
//!
//! The design and its invariants are in the module docs of the (private) modules: `pipeline`,
//! `intake`, `aggregator`, `limiter`, `collector`, `retrier`, `shard_map`, `receipt`,
//! `key_cache`.

// Errors hand the caller's record back by value, which makes them large; boxing would add an
// allocation to every failure and an indirection to every caller.
#![allow(clippy::result_large_err)]

mod aggregator;
mod barrier;
mod collector;
mod config;
mod fast_hash;
mod intake;
mod key_cache;
mod limiter;
mod metrics;
mod pending;
mod pipeline;
mod producer;
mod receipt;
mod record;
mod retrier;
mod shard_map;

pub use config::{Aggregation, Compression, ConfigError, ProducerConfig, RecordOrder};
pub use metrics::MetricsSnapshot;
pub use producer::{BlockingProducer, BuildError, Producer, ProducerBuilder};
pub use receipt::Receipt;
pub use record::{Delivery, DeliveryError, InvalidRecord, Record, SendError};
