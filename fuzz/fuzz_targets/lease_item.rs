//! Any bytes as a lease table item, read the way the consumer reads its lease table: decoding
//! must give a lease or an `InvalidItem` naming a KCL attribute, never panic; a decoded lease
//! written back as a new item and read again is the same lease.
//!
//! Decoding and encoding are crate-private in `kinesis-consumer`, so the target goes through
//! the public in-memory lease store (feature `test-util`): `RawTable::put_raw` plants the item
//! as another program would, `LeaseStore::list` / `get` decode it (the same `table.rs` code the
//! DynamoDB adapter runs), `create_if_absent` encodes a lease into a new item and `get_raw`
//! reads that item back. The store never waits, so its futures complete on the first poll.
//!
//! The bytes are turned into a structured item by `arbitrary`: attribute names are mostly the
//! KCL's (plus unknown ones), values are of every DynamoDB type, and texts are mostly
//! plausible (shard ids, sentinels, digit strings) so that valid leases are common.

#![no_main]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use arbitrary::Arbitrary;
use kinesis_consumer::lease::InMemoryLeaseStore;
use kinesis_consumer::lease::contract::RawTable;
use kinesis_consumer::lease::item::{self, RawItem, RawValue};
use kinesis_consumer::{CreateOutcome, Lease, LeaseStore};
use libfuzzer_sys::fuzz_target;

/// Every attribute name `item.rs` knows.
const KNOWN: [&str; 14] = [
    item::LEASE_KEY,
    item::LEASE_OWNER,
    item::LEASE_COUNTER,
    item::CHECKPOINT,
    item::CHECKPOINT_SUB_SEQUENCE,
    item::PENDING_CHECKPOINT,
    item::PENDING_CHECKPOINT_SUB_SEQUENCE,
    item::PENDING_CHECKPOINT_STATE,
    item::OWNER_SWITCHES,
    item::PARENT_SHARD_IDS,
    item::CHILD_SHARD_IDS,
    item::STARTING_HASH_KEY,
    item::ENDING_HASH_KEY,
    item::ENTITY_TYPE,
];

#[derive(Arbitrary, Debug)]
enum Name {
    Known(u8),
    Unknown(String),
}

impl Name {
    fn text(&self) -> String {
        match self {
            Self::Known(i) => KNOWN[usize::from(*i) % KNOWN.len()].to_owned(),
            Self::Unknown(name) => name.clone(),
        }
    }
}

/// A string attribute's text.
#[derive(Arbitrary, Debug)]
enum Text {
    ShardId(u16),
    Sentinel(u8),
    Digits(u128, u8),
    LongDigits(Vec<u8>),
    Entity(bool),
    Any(String),
}

impl Text {
    fn text(&self) -> String {
        match self {
            Self::ShardId(n) => format!("shardId-{n:012}"),
            Self::Sentinel(i) => ["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP", "SHARD_END"]
                [usize::from(*i) % 4]
                .to_owned(),
            // Some leading zeros now and then: the parsers must agree on them.
            Self::Digits(n, zeros) => format!("{}{n}", "0".repeat(usize::from(*zeros % 4))),
            Self::LongDigits(digits) => digits.iter().map(|d| char::from(b'0' + d % 10)).collect(),
            Self::Entity(lease) => if *lease { "LEASE" } else { "WORKER_METRIC_STATS" }.to_owned(),
            Self::Any(text) => text.clone(),
        }
    }
}

/// A number attribute's text.
#[derive(Arbitrary, Debug)]
enum Number {
    Small(u8),
    U64(u64),
    Signed(i128),
    Any(String),
}

impl Number {
    fn text(&self) -> String {
        match self {
            Self::Small(n) => n.to_string(),
            Self::U64(n) => n.to_string(),
            Self::Signed(n) => n.to_string(),
            Self::Any(text) => text.clone(),
        }
    }
}

/// Mirrors `kinesis_consumer::lease::item::RawValue`.
#[derive(Arbitrary, Debug)]
enum Value {
    S(Text),
    N(Number),
    Ss(Vec<Text>),
    Ns(Vec<Number>),
    B(Vec<u8>),
    Bool(bool),
    Null,
    Other(u8),
}

impl Value {
    fn raw(&self) -> RawValue {
        match self {
            Self::S(text) => RawValue::S(text.text()),
            Self::N(number) => RawValue::N(number.text()),
            Self::Ss(texts) => RawValue::Ss(texts.iter().map(Text::text).collect()),
            Self::Ns(numbers) => RawValue::Ns(numbers.iter().map(Number::text).collect()),
            Self::B(bytes) => RawValue::B(bytes.clone()),
            Self::Bool(b) => RawValue::Bool(*b),
            Self::Null => RawValue::Null,
            // The names the DynamoDB adapter gives the types it does not keep.
            Self::Other(i) => RawValue::Other(
                ["a list (L)", "a map (M)", "a binary set (BS)", "an unknown type"]
                    [usize::from(*i) % 4],
            ),
        }
    }
}

/// A valid lease to start from: the required attributes, and a hash range (two related
/// attributes that random ones rarely get right together).
#[derive(Arbitrary, Debug)]
struct Base {
    shard: u16,
    counter: u64,
    range: Option<(u128, u128)>,
}

/// An item: optionally a valid lease to start from, then attributes set and removed.
#[derive(Arbitrary, Debug)]
struct Item {
    base: Option<Base>,
    set: Vec<(Name, Value)>,
    remove: Vec<Name>,
}

impl Item {
    fn raw(&self) -> RawItem {
        let mut raw = RawItem::new();
        if let Some(base) = &self.base {
            let shard = format!("shardId-{:012}", base.shard);
            raw.insert(item::LEASE_KEY.into(), RawValue::S(shard));
            raw.insert(item::LEASE_COUNTER.into(), RawValue::N(base.counter.to_string()));
            raw.insert(item::CHECKPOINT.into(), RawValue::S("TRIM_HORIZON".into()));
            if let Some((a, b)) = base.range {
                raw.insert(item::STARTING_HASH_KEY.into(), RawValue::S(a.min(b).to_string()));
                raw.insert(item::ENDING_HASH_KEY.into(), RawValue::S(a.max(b).to_string()));
            }
        }
        for (name, value) in &self.set {
            raw.insert(name.text(), value.raw());
        }
        for name in &self.remove {
            raw.remove(&name.text());
        }
        raw
    }
}

/// Runs a future of the in-memory store, which never waits.
fn now<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the in-memory lease store never waits"),
    }
}

/// Whether the consumer reads the item as a lease at all (KCL 3.5 keeps other entities, with an
/// `entityType` other than `LEASE`, in the same table).
fn is_lease_item(raw: &RawItem) -> bool {
    !matches!(raw.get(item::ENTITY_TYPE), Some(RawValue::S(t)) if t != "LEASE")
}

/// The lease as a new item of it is read back: shard sets are sets (sorted, no duplicates) and
/// nothing else changes.
fn as_sets(lease: &Lease) -> Lease {
    let mut lease = lease.clone();
    for ids in [&mut lease.parent_shard_ids, &mut lease.child_shard_ids] {
        ids.sort();
        ids.dedup();
    }
    lease
}

/// Writes `lease` as a new item into an empty table and reads back the item and the lease.
fn write_and_read(lease: &Lease) -> (RawItem, Lease) {
    let store = InMemoryLeaseStore::with_table();
    assert_eq!(now(store.create_if_absent(lease)).expect("create"), CreateOutcome::Created);
    let raw = now(store.get_raw(lease.key.as_str())).expect("the item just created");
    let scan = now(store.list()).expect("list");
    assert!(scan.invalid.is_empty(), "a written lease reads back invalid: {:?}", scan.invalid);
    assert_eq!(scan.leases.len(), 1);
    let read = now(store.get(&lease.key)).expect("get").expect("the lease just created");
    assert_eq!(scan.leases[0], read);
    (raw, read)
}

fuzz_target!(|input: Item| {
    let raw = input.raw();
    let store = InMemoryLeaseStore::with_table();
    now(store.put_raw(raw.clone()));
    let scan = now(store.list()).expect("list of an existing table");
    if !is_lease_item(&raw) {
        assert!(scan.leases.is_empty() && scan.invalid.is_empty(), "{scan:?}");
        return;
    }
    match (&scan.leases[..], &scan.invalid[..]) {
        ([], [invalid]) => {
            // Names the item and a KCL attribute, so that an operator can fix it.
            let key = match raw.get(item::LEASE_KEY) {
                Some(RawValue::S(key)) => key.as_str(),
                _ => "<missing>",
            };
            assert_eq!(invalid.key, key);
            assert!(KNOWN.contains(&invalid.attribute), "{invalid}");
            assert!(!invalid.problem.is_empty());
            let message = invalid.to_string();
            assert!(message.contains(invalid.attribute), "{message}");
            if let Ok(shard) = kinesis_common::ShardId::new(key) {
                // `get` reports the same item as the same error.
                match now(store.get(&shard)) {
                    Err(kinesis_consumer::LeaseStoreError::InvalidItem(e)) => {
                        assert_eq!(&e, invalid)
                    }
                    other => panic!("get of {key:?}: {other:?}, list said {invalid}"),
                }
            }
        }
        ([lease], []) => {
            assert!(
                matches!(raw.get(item::LEASE_KEY), Some(RawValue::S(k)) if k == lease.key.as_str())
            );
            assert!(
                matches!(raw.get(item::LEASE_COUNTER), Some(RawValue::N(n)) if n.parse() == Ok(lease.counter))
            );
            assert_eq!(now(store.get(&lease.key)).expect("get").as_ref(), Some(lease));
            // Encode, decode: the same lease (shard sets as sets); and that is a fixed point.
            let (written, read) = write_and_read(lease);
            assert_eq!(read, as_sets(lease));
            let (rewritten, reread) = write_and_read(&read);
            assert_eq!(reread, read);
            assert_eq!(rewritten, written);
        }
        _ => panic!("one item must give one lease or one invalid item: {scan:?}"),
    }
});
