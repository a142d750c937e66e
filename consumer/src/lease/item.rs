//! The lease item: attribute names and types, and the translation between a [`Lease`] and a
//! table item ([`RawItem`]), compatible with the KCL 2.x lease table.
//!
//! Names and types follow the KCL's `leases/dynamodb/DynamoDBLeaseSerializer.java`, so a table
//! written by a KCL 2.x worker can be resumed by this crate and the other way round:
//! `leaseKey` S, `leaseOwner` S, `leaseCounter` N, `checkpoint` S,
//! `checkpointSubSequenceNumber` N, `ownerSwitchesSinceCheckpoint` N, `parentShardId` SS,
//! `childShardIds` SS, `startingHashKey`/`endingHashKey` S (decimal), `pendingCheckpoint` S,
//! `pendingCheckpointSubSequenceNumber` N.
//!
//! Invariants: empty sets are never written (DynamoDB rejects an empty SS: the attribute is
//! left out instead); attributes this module does not know (KCL 3.x's `throughputKBps`,
//! `checkpointOwner`, `leaseState`, ...) are never written here, and the stores update items
//! attribute by attribute, so those survive every write.
//!
//! Decoding is as lenient as the KCL's where the KCL is lenient (its serializer reads optional
//! numbers and sets with "safe get" helpers that treat a missing attribute as absent): a
//! missing `checkpointSubSequenceNumber` or `ownerSwitchesSinceCheckpoint` reads as 0, missing
//! sets as empty, a missing hash range as unknown. `leaseKey`, `leaseCounter` and `checkpoint`
//! are required, and every present attribute must have its KCL type.

use std::collections::BTreeMap;

use kinesis_common::{ExtendedSequenceNumber, HashKey, HashKeyRange, ShardId};

use super::error::InvalidItem;
use super::{Lease, WorkerId};

/// `leaseKey` (S, the table's hash key): the shard id.
pub const LEASE_KEY: &str = "leaseKey";
/// `leaseOwner` (S): the worker holding the lease; absent when unassigned.
pub const LEASE_OWNER: &str = "leaseOwner";
/// `leaseCounter` (N): bumped by every write; the optimistic-lock token.
pub const LEASE_COUNTER: &str = "leaseCounter";
/// `checkpoint` (S): a sequence number or a sentinel.
pub const CHECKPOINT: &str = "checkpoint";
/// `checkpointSubSequenceNumber` (N).
pub const CHECKPOINT_SUB_SEQUENCE: &str = "checkpointSubSequenceNumber";
/// `pendingCheckpoint` (S): a prepared checkpoint (read and preserved, never written here).
pub const PENDING_CHECKPOINT: &str = "pendingCheckpoint";
/// `pendingCheckpointSubSequenceNumber` (N).
pub const PENDING_CHECKPOINT_SUB_SEQUENCE: &str = "pendingCheckpointSubSequenceNumber";
/// `pendingCheckpointState` (B): application state of a prepared checkpoint.
pub const PENDING_CHECKPOINT_STATE: &str = "pendingCheckpointState";
/// `ownerSwitchesSinceCheckpoint` (N).
pub const OWNER_SWITCHES: &str = "ownerSwitchesSinceCheckpoint";
/// `parentShardId` (SS): one parent, two after a merge.
pub const PARENT_SHARD_IDS: &str = "parentShardId";
/// `childShardIds` (SS): filled at SHARD_END.
pub const CHILD_SHARD_IDS: &str = "childShardIds";
/// `startingHashKey` (S, decimal).
pub const STARTING_HASH_KEY: &str = "startingHashKey";
/// `endingHashKey` (S, decimal).
pub const ENDING_HASH_KEY: &str = "endingHashKey";
/// `entityType` (S): KCL 3.5 "single-table" items; anything but `LEASE` is not a lease.
pub const ENTITY_TYPE: &str = "entityType";

/// One attribute value of an item, in this crate's terms (the SDK's `AttributeValue` stays in
/// the adapter).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RawValue {
    /// A string (S).
    S(String),
    /// A number (N), as its decimal text.
    N(String),
    /// A string set (SS); never empty in a real table.
    Ss(Vec<String>),
    /// A number set (NS).
    Ns(Vec<String>),
    /// Binary (B).
    B(Vec<u8>),
    /// A boolean (BOOL).
    Bool(bool),
    /// NULL.
    Null,
    /// Any other type (L, M, BS), kept only by its type name.
    Other(&'static str),
}

impl RawValue {
    /// The DynamoDB type descriptor, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::S(_) => "a string (S)",
            Self::N(_) => "a number (N)",
            Self::Ss(_) => "a string set (SS)",
            Self::Ns(_) => "a number set (NS)",
            Self::B(_) => "binary (B)",
            Self::Bool(_) => "a boolean (BOOL)",
            Self::Null => "NULL",
            Self::Other(name) => name,
        }
    }
}

/// A table item: attribute name to value.
pub type RawItem = BTreeMap<String, RawValue>;

/// Whether the item is a lease at all (KCL 3.5 keeps other entities in the same table).
pub(crate) fn is_lease_item(item: &RawItem) -> bool {
    match item.get(ENTITY_TYPE) {
        None => true,
        Some(RawValue::S(t)) => t == "LEASE",
        Some(_) => true,
    }
}

/// The item's `leaseKey` text, for messages about an item that may not decode.
pub(crate) fn key_text(item: &RawItem) -> String {
    match item.get(LEASE_KEY) {
        Some(RawValue::S(k)) => k.clone(),
        _ => "<missing>".to_owned(),
    }
}

/// The attributes a new lease item holds (for a conditional PutItem).
pub(crate) fn encode(lease: &Lease) -> RawItem {
    let mut item = RawItem::new();
    item.insert(LEASE_KEY.into(), RawValue::S(lease.key.as_str().into()));
    item.insert(LEASE_COUNTER.into(), number(lease.counter));
    if let Some(owner) = &lease.owner {
        item.insert(LEASE_OWNER.into(), RawValue::S(owner.as_str().into()));
    }
    item.insert(CHECKPOINT.into(), RawValue::S(lease.checkpoint.checkpoint_str().into()));
    item.insert(CHECKPOINT_SUB_SEQUENCE.into(), number(lease.checkpoint.sub_sequence()));
    if let Some(pending) = &lease.pending_checkpoint {
        item.insert(PENDING_CHECKPOINT.into(), RawValue::S(pending.checkpoint_str().into()));
        item.insert(PENDING_CHECKPOINT_SUB_SEQUENCE.into(), number(pending.sub_sequence()));
    }
    item.insert(OWNER_SWITCHES.into(), number(lease.owner_switches_since_checkpoint));
    if let Some(set) = shard_set(&lease.parent_shard_ids) {
        item.insert(PARENT_SHARD_IDS.into(), set);
    }
    if let Some(set) = shard_set(&lease.child_shard_ids) {
        item.insert(CHILD_SHARD_IDS.into(), set);
    }
    if let Some(range) = &lease.hash_range {
        item.insert(STARTING_HASH_KEY.into(), RawValue::S(range.start().to_string()));
        item.insert(ENDING_HASH_KEY.into(), RawValue::S(range.end().to_string()));
    }
    item
}

/// A number attribute.
pub(crate) fn number(n: u64) -> RawValue {
    RawValue::N(n.to_string())
}

/// A string set of shard ids, or `None` for an empty list (DynamoDB rejects empty sets).
/// Duplicates are dropped: DynamoDB rejects them too.
pub(crate) fn shard_set(ids: &[ShardId]) -> Option<RawValue> {
    if ids.is_empty() {
        return None;
    }
    let mut set: Vec<String> = ids.iter().map(|id| id.as_str().to_owned()).collect();
    set.sort();
    set.dedup();
    Some(RawValue::Ss(set))
}

/// Reads an item as a lease.
pub(crate) fn decode(item: &RawItem) -> Result<Lease, InvalidItem> {
    let key_text = key_text(item);
    let invalid = |attribute: &'static str, problem: String| InvalidItem {
        key: key_text.clone(),
        attribute,
        problem,
    };
    let key = match item.get(LEASE_KEY) {
        None => return Err(invalid(LEASE_KEY, "missing".into())),
        Some(RawValue::S(k)) => ShardId::new(k.as_str()).map_err(|e| {
            invalid(
                LEASE_KEY,
                if k.contains(':') {
                    format!("multi-stream lease keys are not supported ({e})")
                } else {
                    e.to_string()
                },
            )
        })?,
        Some(other) => return Err(invalid(LEASE_KEY, wrong_type("a string (S)", other))),
    };
    let counter = required_number(item, LEASE_COUNTER, &invalid)?;
    let owner = match item.get(LEASE_OWNER) {
        None => None,
        Some(RawValue::S(o)) => Some(WorkerId::new(o.as_str())),
        Some(other) => return Err(invalid(LEASE_OWNER, wrong_type("a string (S)", other))),
    };
    let checkpoint = match item.get(CHECKPOINT) {
        None => return Err(invalid(CHECKPOINT, "missing".into())),
        Some(RawValue::S(text)) => {
            let sub = optional_number(item, CHECKPOINT_SUB_SEQUENCE, &invalid)?.unwrap_or(0);
            position(text, sub).map_err(|problem| invalid(CHECKPOINT, problem))?
        }
        Some(other) => return Err(invalid(CHECKPOINT, wrong_type("a string (S)", other))),
    };
    let pending_checkpoint = match item.get(PENDING_CHECKPOINT) {
        None => None,
        Some(RawValue::S(text)) => {
            let sub =
                optional_number(item, PENDING_CHECKPOINT_SUB_SEQUENCE, &invalid)?.unwrap_or(0);
            Some(position(text, sub).map_err(|problem| invalid(PENDING_CHECKPOINT, problem))?)
        }
        Some(other) => {
            return Err(invalid(PENDING_CHECKPOINT, wrong_type("a string (S)", other)));
        }
    };
    let owner_switches_since_checkpoint =
        optional_number(item, OWNER_SWITCHES, &invalid)?.unwrap_or(0);
    let parent_shard_ids = shard_ids(item, PARENT_SHARD_IDS, &invalid)?;
    let child_shard_ids = shard_ids(item, CHILD_SHARD_IDS, &invalid)?;
    let hash_range = match (item.get(STARTING_HASH_KEY), item.get(ENDING_HASH_KEY)) {
        (None, None) => None,
        (Some(start), Some(end)) => {
            let start = hash_key(start).map_err(|p| invalid(STARTING_HASH_KEY, p))?;
            let end = hash_key(end).map_err(|p| invalid(ENDING_HASH_KEY, p))?;
            Some(
                HashKeyRange::new(start, end)
                    .map_err(|e| invalid(ENDING_HASH_KEY, e.to_string()))?,
            )
        }
        (Some(_), None) => {
            return Err(invalid(ENDING_HASH_KEY, "missing while startingHashKey is set".into()));
        }
        (None, Some(_)) => {
            return Err(invalid(STARTING_HASH_KEY, "missing while endingHashKey is set".into()));
        }
    };
    Ok(Lease {
        key,
        owner,
        counter,
        checkpoint,
        pending_checkpoint,
        owner_switches_since_checkpoint,
        parent_shard_ids,
        child_shard_ids,
        hash_range,
    })
}

fn wrong_type(expected: &str, found: &RawValue) -> String {
    format!("expected {expected}, found {}", found.type_name())
}

fn parse_number(text: &str) -> Result<u64, String> {
    text.parse::<u64>().map_err(|_| format!("{text:?} is not a non-negative integer"))
}

fn required_number(
    item: &RawItem,
    attribute: &'static str,
    invalid: &impl Fn(&'static str, String) -> InvalidItem,
) -> Result<u64, InvalidItem> {
    optional_number(item, attribute, invalid)?.ok_or_else(|| invalid(attribute, "missing".into()))
}

fn optional_number(
    item: &RawItem,
    attribute: &'static str,
    invalid: &impl Fn(&'static str, String) -> InvalidItem,
) -> Result<Option<u64>, InvalidItem> {
    match item.get(attribute) {
        None => Ok(None),
        Some(RawValue::N(text)) => parse_number(text).map(Some).map_err(|p| invalid(attribute, p)),
        Some(other) => Err(invalid(attribute, wrong_type("a number (N)", other))),
    }
}

fn shard_ids(
    item: &RawItem,
    attribute: &'static str,
    invalid: &impl Fn(&'static str, String) -> InvalidItem,
) -> Result<Vec<ShardId>, InvalidItem> {
    match item.get(attribute) {
        None => Ok(Vec::new()),
        Some(RawValue::Ss(ids)) => ids
            .iter()
            .map(|id| ShardId::new(id.as_str()).map_err(|e| invalid(attribute, e.to_string())))
            .collect(),
        Some(other) => Err(invalid(attribute, wrong_type("a string set (SS)", other))),
    }
}

fn position(text: &str, sub: u64) -> Result<ExtendedSequenceNumber, String> {
    ExtendedSequenceNumber::from_checkpoint(text, sub).map_err(|_| {
        format!(
            "{:?} is neither a sequence number (decimal digits) nor one of TRIM_HORIZON, \
             LATEST, AT_TIMESTAMP, SHARD_END",
            clip(text)
        )
    })
}

fn hash_key(value: &RawValue) -> Result<HashKey, String> {
    match value {
        RawValue::S(text) => HashKey::from_decimal(text).map_err(|e| e.to_string()),
        other => Err(wrong_type("a string (S) of decimal digits", other)),
    }
}

fn clip(text: &str) -> &str {
    match text.char_indices().nth(80) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kinesis_common::SequenceNumber;
    use proptest::prelude::*;

    fn shard_id() -> impl Strategy<Value = ShardId> {
        (0u32..50).prop_map(|n| ShardId::new(format!("shardId-{n:012}")).unwrap())
    }

    fn position() -> impl Strategy<Value = ExtendedSequenceNumber> {
        prop_oneof![
            Just(ExtendedSequenceNumber::TrimHorizon),
            Just(ExtendedSequenceNumber::Latest),
            Just(ExtendedSequenceNumber::AtTimestamp),
            Just(ExtendedSequenceNumber::ShardEnd),
            ("[1-9][0-9]{0,128}", any::<u64>()).prop_map(|(digits, sub)| {
                ExtendedSequenceNumber::new(SequenceNumber::new(digits).unwrap(), sub)
            }),
        ]
    }

    fn lease() -> impl Strategy<Value = Lease> {
        (
            shard_id(),
            proptest::option::of("[a-z0-9-]{1,20}"),
            any::<u64>(),
            position(),
            proptest::option::of(position()),
            any::<u64>(),
            proptest::collection::btree_set(shard_id(), 0..3),
            proptest::collection::btree_set(shard_id(), 0..3),
            proptest::option::of((any::<u128>(), any::<u128>())),
        )
            .prop_map(
                |(key, owner, counter, checkpoint, pending, switches, parents, children, range)| {
                    let mut lease = Lease::new(key, checkpoint);
                    lease.owner = owner.map(WorkerId::new);
                    lease.counter = counter;
                    lease.pending_checkpoint = pending;
                    lease.owner_switches_since_checkpoint = switches;
                    lease.parent_shard_ids = parents.into_iter().collect();
                    lease.child_shard_ids = children.into_iter().collect();
                    lease.hash_range = range.map(|(a, b)| {
                        HashKeyRange::new(HashKey(a.min(b)), HashKey(a.max(b))).unwrap()
                    });
                    lease
                },
            )
    }

    proptest! {
        #[test]
        fn every_lease_round_trips_through_its_item(lease in lease()) {
            let item = encode(&lease);
            prop_assert!(!item.values().any(|v| matches!(v, RawValue::Ss(s) if s.is_empty())),
                "no empty set is ever written");
            prop_assert_eq!(decode(&item).unwrap(), lease);
        }
    }

    #[test]
    fn sentinel_checkpoints_ignore_their_sub_sequence_as_the_kcl_does() {
        let item = RawItem::from([
            (LEASE_KEY.into(), RawValue::S("shardId-000000000001".into())),
            (LEASE_COUNTER.into(), RawValue::N("3".into())),
            (CHECKPOINT.into(), RawValue::S("SHARD_END".into())),
            (CHECKPOINT_SUB_SEQUENCE.into(), RawValue::N("9".into())),
        ]);
        assert_eq!(decode(&item).unwrap().checkpoint, ExtendedSequenceNumber::ShardEnd);
    }

    #[test]
    fn invalid_item_message_names_item_attribute_and_problem() {
        let item = RawItem::from([
            (LEASE_KEY.into(), RawValue::S("shardId-000000000001".into())),
            (LEASE_COUNTER.into(), RawValue::S("3".into())),
            (CHECKPOINT.into(), RawValue::S("LATEST".into())),
        ]);
        assert_eq!(
            decode(&item).unwrap_err().to_string(),
            "lease item \"shardId-000000000001\" has an invalid leaseCounter attribute: \
             expected a number (N), found a string (S)"
        );
    }

    #[test]
    fn multi_stream_lease_keys_are_reported_as_unsupported() {
        let item = RawItem::from([
            (LEASE_KEY.into(), RawValue::S("123456789012:orders:1700000000:shardId-0".into())),
            (LEASE_COUNTER.into(), RawValue::N("3".into())),
            (CHECKPOINT.into(), RawValue::S("LATEST".into())),
        ]);
        let err = decode(&item).unwrap_err();
        assert_eq!(err.attribute, LEASE_KEY);
        assert!(err.problem.contains("multi-stream"), "{err}");
    }

    #[test]
    fn items_of_other_kcl_entities_are_not_leases() {
        let mut item = RawItem::new();
        item.insert(ENTITY_TYPE.into(), RawValue::S("WORKER_METRIC_STATS".into()));
        assert!(!is_lease_item(&item));
        item.insert(ENTITY_TYPE.into(), RawValue::S("LEASE".into()));
        assert!(is_lease_item(&item));
    }
}
