//! A KCL-style consumer for Amazon Kinesis Data Streams (work in progress: see the README status).

pub mod lease;

pub use lease::{
    CreateOutcome, DynamoLeaseStore, InvalidItem, Lease, LeaseScan, LeaseStore, LeaseStoreError,
    LeaseWriteError, WorkerId,
};
