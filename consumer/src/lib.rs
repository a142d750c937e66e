//! A KCL-style consumer for Amazon Kinesis Data Streams.
//!
//! A [`Consumer`] runs one worker of an application: it shares the stream's shards with the
//! application's other workers through a lease table (DynamoDB, the KCL 2.x schema, so KCL
//! workers and ours can take over from each other), reads each shard it holds, and hands the
//! records, de-aggregated, to a [`ShardProcessor`] the application writes.
//!
//! ```text
//! Scheduler (one per worker)
//!   taker: take expired and unowned leases, steal to balance     (taker.rs)
//!   shard sync: leases for new shards, parents first; cleanup    (shard_sync.rs)
//!   per held lease:
//!     keeper: renew, checkpoint, release                         (keeper.rs)
//!     shard consumer: WaitingOnParents -> Initializing -> Processing
//!                     -> ShuttingDown(reason) -> Done            (lifecycle.rs)
//!       retrieval (GetRecords) -> de-aggregate -> ShardProcessor -> Checkpointer
//! ```
//!
//! Guarantees:
//! - At-least-once delivery: records after the last checkpoint are handed out again to
//!   whoever holds the lease next. Checkpoints are (sequence, sub-sequence) pairs, so
//!   resuming in the middle of a KPL aggregate skips exactly what was checkpointed.
//! - A child shard's records are handed out only after every parent checkpointed
//!   `SHARD_END`, so per-partition-key order holds across splits and merges.
//! - A worker that lost a lease never checkpoints it again ([`CheckpointError::LeaseLost`]).
//! - Leases are renewed on their own tasks, never behind a slow processor.
//!
//! ```no_run
//! use std::sync::Arc;
//! use kinesis_common::{SdkKinesis, ShardId, StreamName};
//! use kinesis_consumer::{
//!     Batch, Checkpointer, Consumer, DynamoLeaseStore, InitialPosition, ProcessorError,
//!     ShardProcessor,
//! };
//!
//! struct Printer;
//!
//! #[async_trait::async_trait]
//! impl ShardProcessor for Printer {
//!     async fn process(
//!         &mut self,
//!         batch: Batch,
//!         checkpointer: &mut Checkpointer,
//!     ) -> Result<(), ProcessorError> {
//!         for record in &batch.records {
//!             println!("{}: {} bytes", record.partition_key, record.data.len());
//!         }
//!         checkpointer.checkpoint().await?;
//!         Ok(())
//!     }
//! }
//!
//! # async fn run(config: aws_types::SdkConfig) -> Result<(), Box<dyn std::error::Error>> {
//! // `config` from `aws_config::load_defaults(..)`.
//! let kinesis = Arc::new(SdkKinesis::new(&config));
//! let leases = Arc::new(DynamoLeaseStore::new(&config, "my-application"));
//! let consumer = Consumer::builder(kinesis, leases)
//!     .stream(StreamName::new("events")?)
//!     .application_name("my-application")
//!     .initial_position(InitialPosition::TrimHorizon)
//!     .start(|_shard: &ShardId| Printer)
//!     .await?;
//! // ... until it is time to stop:
//! let report = consumer.shutdown().await?;
//! println!("{report:?}");
//! # Ok(())
//! # }
//! ```

mod checkpoint;
mod config;
mod consumer;
pub mod dedup;
mod keeper;
pub mod lease;
mod lifecycle;
mod metrics;
mod processor;
mod registration;
mod retrieval;
mod scheduler;
mod shard_consumer;
mod shard_sync;
mod taker;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;

pub use checkpoint::{CheckpointError, Checkpointer};
pub use config::{ConsumerConfig, InitialPosition, PollingSettings, Retrieval};
pub use consumer::{Consumer, ConsumerBuilder, FatalError, RunError, StartError};
pub use dedup::{Deduplicator, RecordKey};
pub use kinesis_common::SharedStr;
pub use kinesis_common::aggregation::KinesisClientRecord;
pub use lease::{
    CreateOutcome, DynamoLeaseStore, InvalidItem, Lease, LeaseScan, LeaseStore, LeaseStoreError,
    LeaseWriteError, WorkerId,
};
pub use lifecycle::ShutdownReason;
pub use processor::{
    Batch, Initialize, LeaseLost, ProcessorError, ProcessorFactory, ShardEnd, ShardEndCheckpointed,
    ShardProcessor,
};
pub use scheduler::ShutdownReport;
pub use shard_consumer::ShardReport;
