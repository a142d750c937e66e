//! The collector: packs Kinesis records into PutRecords requests.
//!
//! A request holds at most 500 records and 5 MiB counting each record's data and partition key
//! (Kinesis API reference, PutRecords). Emulators do not enforce these limits, so the collector
//! does, and never emits a request over either cap. A request is sent when it is full, when
//! adding the next record would break a cap, or when the earliest deadline among its records
//! has come (the records' `record_max_buffered_time`).
//!
//! Pure and generic over what it packs: the caller passes `now` and each item's size and
//! deadline.

use std::time::Instant;

/// PutRecords' hard cap on records per request (Kinesis API reference, PutRecords).
pub(crate) const MAX_RECORDS_PER_REQUEST: usize = 500;
/// PutRecords' hard cap on bytes per request, data plus partition keys (Kinesis API reference,
/// PutRecords).
pub(crate) const MAX_BYTES_PER_REQUEST: usize = 5 * 1024 * 1024;

/// Something the collector packs: its size against the request cap and its deadline.
pub(crate) trait Collectable {
    /// Data plus partition key bytes.
    fn size(&self) -> usize;
    /// When it must be sent at the latest.
    fn deadline(&self) -> Instant;
}

/// A request's worth of items.
#[derive(Debug)]
pub(crate) struct Batch<T> {
    pub(crate) items: Vec<T>,
    /// Data plus partition keys of all items.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) bytes: usize,
}

/// Packs items into batches by count, bytes and deadline.
#[derive(Debug)]
pub(crate) struct Collector<T> {
    max_count: usize,
    max_bytes: usize,
    items: Vec<T>,
    bytes: usize,
    deadline: Option<Instant>,
}

impl<T: Collectable> Collector<T> {
    /// A collector with the given caps, clamped to the PutRecords limits.
    pub(crate) fn new(max_count: usize, max_bytes: usize) -> Self {
        Self {
            max_count: max_count.clamp(1, MAX_RECORDS_PER_REQUEST),
            max_bytes: max_bytes.clamp(1, MAX_BYTES_PER_REQUEST),
            items: Vec::new(),
            bytes: 0,
            deadline: None,
        }
    }

    /// Adds an item. Returns the batch that had to be closed first if the item would not fit,
    /// and the batch holding the item if that batch is now full. An item larger than the byte
    /// cap travels alone (the caller has already checked it against the record size limit).
    pub(crate) fn push(&mut self, item: T) -> Vec<Batch<T>> {
        let mut out = Vec::new();
        let size = item.size();
        if !self.items.is_empty() && self.bytes + size > self.max_bytes {
            out.extend(self.flush());
        }
        self.bytes += size;
        self.deadline = Some(self.deadline.map_or(item.deadline(), |d| d.min(item.deadline())));
        self.items.push(item);
        if self.items.len() >= self.max_count || self.bytes >= self.max_bytes {
            out.extend(self.flush());
        }
        out
    }

    /// The pending batch if its earliest deadline has come.
    pub(crate) fn poll(&mut self, now: Instant) -> Option<Batch<T>> {
        match self.deadline {
            Some(deadline) if deadline <= now => self.flush(),
            _ => None,
        }
    }

    /// The pending batch, whatever its deadline.
    pub(crate) fn flush(&mut self) -> Option<Batch<T>> {
        if self.items.is_empty() {
            return None;
        }
        self.deadline = None;
        let bytes = std::mem::take(&mut self.bytes);
        Some(Batch { items: std::mem::take(&mut self.items), bytes })
    }

    /// When the pending batch must go out, if there is one.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// How many items wait.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// The items of the open batch.
    pub(crate) fn pending(&self) -> &[T] {
        &self.items
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    #[derive(Debug, Clone, PartialEq)]
    struct Item {
        id: usize,
        size: usize,
        deadline: Instant,
    }

    impl Collectable for Item {
        fn size(&self) -> usize {
            self.size
        }
        fn deadline(&self) -> Instant {
            self.deadline
        }
    }

    #[test]
    fn a_full_count_closes_the_batch() {
        let t0 = Instant::now();
        let mut c = Collector::new(3, 1000);
        assert!(c.push(Item { id: 0, size: 1, deadline: t0 }).is_empty());
        assert!(c.push(Item { id: 1, size: 1, deadline: t0 }).is_empty());
        let out = c.push(Item { id: 2, size: 1, deadline: t0 });
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].items.len(), 3);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn a_record_that_would_break_the_byte_cap_starts_a_new_batch() {
        let t0 = Instant::now();
        let mut c = Collector::new(500, 100);
        assert!(c.push(Item { id: 0, size: 60, deadline: t0 }).is_empty());
        let out = c.push(Item { id: 1, size: 60, deadline: t0 });
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].bytes, 60);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn the_earliest_deadline_sends_the_batch() {
        let t0 = Instant::now();
        let mut c = Collector::new(500, 1000);
        c.push(Item { id: 0, size: 1, deadline: t0 + Duration::from_millis(100) });
        c.push(Item { id: 1, size: 1, deadline: t0 + Duration::from_millis(20) });
        assert_eq!(c.next_deadline(), Some(t0 + Duration::from_millis(20)));
        assert!(c.poll(t0 + Duration::from_millis(19)).is_none());
        assert_eq!(c.poll(t0 + Duration::from_millis(20)).unwrap().items.len(), 2);
        assert_eq!(c.next_deadline(), None);
    }

    #[test]
    fn caps_are_clamped_to_the_putrecords_limits() {
        let c: Collector<Item> = Collector::new(10_000, usize::MAX);
        assert_eq!((c.max_count, c.max_bytes), (MAX_RECORDS_PER_REQUEST, MAX_BYTES_PER_REQUEST));
    }

    proptest! {
        /// Every item comes out exactly once, in order, and no batch breaks a cap unless it is
        /// a single oversized item.
        #[test]
        fn batches_respect_caps_and_keep_every_item_once(
            sizes in proptest::collection::vec(0usize..2_000_000, 0..2000),
            max_count in 1usize..600,
        ) {
            let t0 = Instant::now();
            let mut c = Collector::new(max_count, MAX_BYTES_PER_REQUEST);
            let mut batches = Vec::new();
            for (id, size) in sizes.iter().copied().enumerate() {
                batches.extend(c.push(Item { id, size, deadline: t0 }));
            }
            batches.extend(c.flush());
            let mut next = 0;
            for b in &batches {
                prop_assert!(!b.items.is_empty());
                prop_assert!(b.items.len() <= max_count.min(MAX_RECORDS_PER_REQUEST));
                prop_assert_eq!(b.bytes, b.items.iter().map(|i| i.size).sum::<usize>());
                prop_assert!(b.bytes <= MAX_BYTES_PER_REQUEST || b.items.len() == 1);
                for i in &b.items {
                    prop_assert_eq!(i.id, next);
                    next += 1;
                }
            }
            prop_assert_eq!(next, sizes.len());
        }
    }
}
