//! A KCL-style consumer for Amazon Kinesis Data Streams (work in progress: see the README status).

pub mod lease;

pub use lease::{
    CreateOutcome, DynamoLeaseStore, InvalidItem, Lease, LeaseScan, LeaseStore, LeaseStoreError,
    LeaseWriteError, WorkerId,
};

// Pure policies of the lease coordinator and shard sync, which will call them; until those
// exist only the tests do.
#[cfg_attr(not(test), allow(dead_code))]
mod shard_sync;
#[cfg_attr(not(test), allow(dead_code))]
mod taker;
