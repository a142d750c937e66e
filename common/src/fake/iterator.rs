//! The fake's shard iterators: everything GetRecords needs, carried in the iterator's text so
//! that the fake stores nothing per iterator.
//!
//! An iterator names the fake that issued it, the stream (name and generation, so that an
//! iterator outlives neither a deleted stream nor its namesake), the shard, the record index to
//! read next, and when it was issued (for the five-minute expiry). Text that does not decode to
//! an iterator of this fake is `InvalidArgumentException`, as on AWS.

use std::time::Duration;

use crate::{ShardIterator, StreamName};

/// The version tag that starts every iterator of this fake.
const TAG: &str = "fakeiter1";

/// The decoded content of a fake shard iterator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct IteratorToken {
    pub(super) fake: u64,
    pub(super) generation: u64,
    pub(super) shard: usize,
    pub(super) position: usize,
    /// Tokio time since the fake's start when the iterator was issued.
    pub(super) issued: Duration,
    pub(super) stream: StreamName,
}

impl IteratorToken {
    pub(super) fn encode(&self) -> ShardIterator {
        // The stream name goes last: it may contain '.', the separator.
        ShardIterator(format!(
            "{TAG}.{}.{}.{}.{}.{}.{}",
            self.fake,
            self.generation,
            self.shard,
            self.position,
            self.issued.as_nanos(),
            self.stream
        ))
    }

    pub(super) fn decode(iterator: &ShardIterator) -> Option<Self> {
        let mut parts = iterator.0.splitn(7, '.');
        if parts.next()? != TAG {
            return None;
        }
        let fake = parts.next()?.parse().ok()?;
        let generation = parts.next()?.parse().ok()?;
        let shard = parts.next()?.parse().ok()?;
        let position = parts.next()?.parse().ok()?;
        let issued_nanos: u64 = parts.next()?.parse().ok()?;
        let stream = StreamName::new(parts.next()?).ok()?;
        Some(Self {
            fake,
            generation,
            shard,
            position,
            issued: Duration::from_nanos(issued_nanos),
            stream,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterators_round_trip_and_garbage_does_not_decode() {
        let token = IteratorToken {
            fake: 3,
            generation: 9,
            shard: 2,
            position: 41,
            issued: Duration::from_millis(1500),
            stream: StreamName::new("orders.v2-x").unwrap(),
        };
        assert_eq!(IteratorToken::decode(&token.encode()), Some(token));
        for garbage in ["", "garbage", "fakeiter1.1.2.3", "fakeiter1.a.1.1.1.1.s", "x.1.1.1.1.1.s"]
        {
            assert_eq!(IteratorToken::decode(&ShardIterator(garbage.into())), None, "{garbage}");
        }
    }
}
