//! The lease store's errors: [`LeaseWriteError`] for conditional writes, whose failed
//! condition is an expected outcome ([`LeaseWriteError::Conflict`]), and [`LeaseStoreError`]
//! for everything that went wrong with the table itself.

use std::error::Error as StdError;
use std::fmt;

use kinesis_common::ShardId;

/// A boxed error from the layer below (the AWS SDK, or an injected fault in the fake).
pub type BoxError = Box<dyn StdError + Send + Sync>;

/// A lease item that cannot be read as a lease: which item, which attribute, what is wrong.
///
/// The message is meant for an operator: fix the attribute or delete the item, and the
/// consumer picks the lease up again (a deleted lease is re-created by shard sync).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidItem {
    /// The item's `leaseKey`, or `"<missing>"` when the item has none.
    pub key: String,
    /// The attribute at fault, as named in the table.
    pub attribute: &'static str,
    /// What is wrong with it, e.g. "expected a number (N), found a string (S)".
    pub problem: String,
}

impl fmt::Display for InvalidItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "lease item {:?} has an invalid {} attribute: {}",
            self.key, self.attribute, self.problem
        )
    }
}

impl StdError for InvalidItem {}

/// A lease table operation failed for a reason other than a failed condition.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseStoreError {
    /// DynamoDB refused the call for capacity (`ProvisionedThroughputExceededException`,
    /// `ThrottlingException`, `RequestLimitExceeded`): retry later, more slowly.
    #[error("{operation} on the lease table was throttled")]
    Throttled {
        /// The DynamoDB operation, e.g. `UpdateItem`.
        operation: &'static str,
        /// The underlying failure.
        #[source]
        source: BoxError,
    },
    /// The lease table does not exist (`ResourceNotFoundException`).
    #[error("lease table {table:?} does not exist")]
    TableNotFound {
        /// The table name.
        table: String,
    },
    /// The credentials may not use the table (`AccessDeniedException` and friends).
    #[error("{operation} on the lease table was denied")]
    AccessDenied {
        /// The DynamoDB operation.
        operation: &'static str,
        /// The underlying failure.
        #[source]
        source: BoxError,
    },
    /// A passing fault: a 5xx answer, a timeout, a dropped connection. Retry.
    #[error("{operation} on the lease table failed transiently")]
    Transient {
        /// The DynamoDB operation.
        operation: &'static str,
        /// The underlying failure.
        #[source]
        source: BoxError,
    },
    /// An item of the table is not a valid lease.
    #[error(transparent)]
    InvalidItem(#[from] InvalidItem),
    /// The table exists but is not keyed like a KCL lease table.
    #[error(
        "lease table {table:?} has key schema {found}; a lease table needs exactly one HASH key \
         `leaseKey` of type S: use another table name or delete this table"
    )]
    WrongSchema {
        /// The table name.
        table: String,
        /// The key schema found, e.g. `[id HASH (N)]`.
        found: String,
    },
    /// The table did not become `ACTIVE` in time after it was created.
    #[error("lease table {table:?} is not active yet (status {status})")]
    NotActive {
        /// The table name.
        table: String,
        /// The last status seen.
        status: String,
    },
    /// Anything else (a validation error, an answer of an unexpected shape).
    #[error("{operation} on the lease table failed")]
    Other {
        /// The DynamoDB operation.
        operation: &'static str,
        /// The underlying failure.
        #[source]
        source: BoxError,
    },
}

impl LeaseStoreError {
    /// Whether the same call may succeed if tried again after a pause.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Throttled { .. } | Self::Transient { .. } | Self::NotActive { .. })
    }
}

/// A conditional lease write failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseWriteError {
    /// The lease is no longer what the caller last saw: another worker renewed, took, released
    /// or deleted it (its counter or owner changed, or it is gone). Nothing was written. For
    /// renew and checkpoint this means the lease is lost.
    #[error("lease {key} changed since counter {expected_counter}")]
    Conflict {
        /// The lease.
        key: ShardId,
        /// The counter the write was conditional on.
        expected_counter: u64,
        /// The owner the write was conditional on, if it was.
        expected_owner: Option<crate::lease::WorkerId>,
        /// The lease as re-read after the failed condition; `None` when it no longer exists.
        current: Option<Box<crate::lease::Lease>>,
    },
    /// The table failed; whether anything was written is unknown unless the error says so.
    #[error(transparent)]
    Store(#[from] LeaseStoreError),
}

impl LeaseWriteError {
    /// Whether this is a [`LeaseWriteError::Conflict`].
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. })
    }

    /// Whether the same write may succeed if tried again (never for a conflict).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Conflict { .. } => false,
            Self::Store(e) => e.is_retryable(),
        }
    }
}

/// A plain-text error, for failures the store describes itself (e.g. injected faults).
#[derive(Debug)]
pub(crate) struct Message(pub(crate) String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for Message {}
