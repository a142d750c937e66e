//! A KPL-style producer for Amazon Kinesis Data Streams.
//!
//! Work in progress: the pure policies of the pipeline exist and are tested; the pipeline task
//! and the public `Producer` API are being written.

// The pipeline that uses these policies is not written yet.
#![allow(dead_code)]

mod aggregator;
mod collector;
mod config;
mod limiter;
mod pending;
mod record;
mod shard_map;

pub use config::{Aggregation, Compression, ConfigError, ProducerConfig};
pub use record::{Delivery, DeliveryError, InvalidRecord, Receipt, Record, SendError};
