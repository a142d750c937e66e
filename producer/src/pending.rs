//! [`Pending`]: one accepted user record on its way through the pipeline.
//!
//! Invariant: a `Pending` answers its receipt exactly once. The pipeline completes it with a
//! delivery or an error; if it is dropped without that (a bug, or the pipeline task stopped
//! abnormally), its `Drop` answers [`DeliveryError::Stopped`] with the record, so no receipt
//! ever hangs and no record is lost without its owner hearing of it.

use std::sync::Arc;
use std::time::Instant;

use kinesis_common::{ApiError, SequenceNumber, ShardId};
use tokio::sync::Semaphore;

use crate::receipt::Reply;
use crate::record::{Delivery, DeliveryError, ValidRecord};

/// The pipeline's end of the outstanding budget: the permits of answered records, given
/// back a turn's worth at a time (each release takes the semaphore's lock).
///
/// Dropped with the pipeline, it closes the budget: should the pipeline stop abnormally
/// (its task panicked or was dropped), the permits of the records it held never come back,
/// and senders waiting for them fail with `Closed` instead of waiting forever.
#[derive(Debug)]
pub(crate) struct Budget {
    records: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    returned_records: usize,
    returned_bytes: usize,
}

impl Budget {
    pub(crate) fn new(records: Arc<Semaphore>, bytes: Arc<Semaphore>) -> Self {
        Self { records, bytes, returned_records: 0, returned_bytes: 0 }
    }

    /// Notes the permits of an answered record, to be returned by the next `release`.
    pub(crate) fn give_back(&mut self, share: Option<u32>) {
        if let Some(bytes) = share {
            self.returned_records += 1;
            self.returned_bytes += bytes as usize;
        }
    }

    /// Returns the permits given back since the last call.
    pub(crate) fn release(&mut self) {
        if self.returned_records > 0 {
            self.records.add_permits(std::mem::take(&mut self.returned_records));
            self.bytes.add_permits(std::mem::take(&mut self.returned_bytes));
        }
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        self.release();
        self.records.close();
        self.bytes.close();
    }
}

/// One user record in the pipeline.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) record: ValidRecord,
    /// When `send` accepted it; it must be sent `record_max_buffered_time` later at the
    /// latest (the aggregator's deadline).
    pub(crate) accepted_at: Instant,
    /// When its TTL runs out.
    pub(crate) expires_at: Instant,
    pub(crate) attempts: u32,
    /// The flush generation it was accepted in.
    pub(crate) generation: u64,
    /// Its acceptance number: the order the pipeline received records in.
    pub(crate) seq: u64,
    /// Boxed: it is rare, and records move through every stage.
    pub(crate) last_error: Option<Box<ApiError>>,
    reply: Option<Reply>,
    /// The byte permits it holds of the outstanding budget, with one record permit, until the
    /// pipeline returns them after answering it (0: it holds none). Plain counts rather than
    /// semaphore permits: the pipeline returns a turn's worth at once, which saves two
    /// reference counts per record; if the pipeline stops abnormally it closes the budget, so
    /// no sender waits for permits that cannot come back.
    budget: u32,
}

impl Pending {
    pub(crate) fn new(
        record: ValidRecord,
        accepted_at: Instant,
        expires_at: Instant,
        reply: Reply,
        budget: Option<u32>,
    ) -> Self {
        Self {
            record,
            accepted_at,
            expires_at,
            attempts: 0,
            generation: 0,
            seq: 0,
            last_error: None,
            reply: Some(reply),
            // A record is at least one byte (its partition key), so it holds at least one
            // byte permit: zero can mean none.
            budget: budget.unwrap_or(0),
        }
    }

    fn answer(&mut self, outcome: Result<Delivery, DeliveryError>) {
        if let Some(reply) = self.reply.take() {
            // The caller may have dropped its receipt: the record was still handled.
            reply.send(outcome.map_err(Box::new));
        }
    }

    fn take_record(&mut self) -> crate::Record {
        // Data is reference counted: the clone is cheap, and `Drop` still has a record.
        self.record.clone().into_record()
    }

    /// Takes the byte permits (and the record permit) the record holds, for the pipeline to
    /// return.
    pub(crate) fn take_budget(&mut self) -> Option<u32> {
        let bytes = std::mem::take(&mut self.budget);
        (bytes > 0).then_some(bytes)
    }

    /// Brings what answering the record touches into the cache ahead of time (see
    /// [`Reply::prefetch`]).
    #[inline]
    pub(crate) fn prefetch_reply(&self) {
        if let Some(reply) = &self.reply {
            reply.prefetch();
        }
    }

    /// Answers a successful write. The record stays, answered, to be dropped with the others
    /// of its Kinesis record.
    pub(crate) fn deliver(
        &mut self,
        shard_id: ShardId,
        sequence_number: SequenceNumber,
        sub_sequence_number: Option<u64>,
        now: Instant,
    ) {
        let delivery = Delivery {
            shard_id,
            sequence_number,
            sub_sequence_number,
            attempts: self.attempts,
            latency: now.saturating_duration_since(self.accepted_at),
        };
        self.answer(Ok(delivery));
    }

    /// Answers that the TTL ran out.
    pub(crate) fn expire(mut self) {
        let error = DeliveryError::Expired {
            record: self.take_record(),
            attempts: self.attempts,
            last_error: self.last_error.take().map(|e| *e),
        };
        self.answer(Err(error));
    }

    /// Answers that Kinesis refused the record for good.
    pub(crate) fn reject(mut self, error: ApiError) {
        let error =
            DeliveryError::Rejected { record: self.take_record(), attempts: self.attempts, error };
        self.answer(Err(error));
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.reply.is_some() {
            let error =
                DeliveryError::Stopped { record: self.take_record(), attempts: self.attempts };
            self.answer(Err(error));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::Record;
    use crate::receipt::Receipt;
    use std::time::Duration;

    /// A pending record with no budget, and the receiver of its answer.
    pub(crate) fn pending(key: &str, data: &str, now: Instant) -> (Pending, Receipt) {
        let (tx, rx) = crate::receipt::pair();
        let record = ValidRecord::new(Record::new(key, data.to_owned()), 1 << 20).unwrap();
        (accepted(record, tx, now), rx)
    }

    /// `record` accepted at `now` with a TTL of 30 s and no budget.
    pub(crate) fn accepted(record: ValidRecord, reply: Reply, now: Instant) -> Pending {
        Pending::new(record, now, now + Duration::from_secs(30), reply, None)
    }

    /// A pending record is copied between the stages about six times and waits, with
    /// thousands of others, in the open aggregates: its size is watched.
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn a_pending_record_stays_small() {
        assert!(std::mem::size_of::<Pending>() <= 152, "{}", std::mem::size_of::<Pending>());
    }

    #[test]
    fn a_dropped_pending_record_answers_stopped_with_its_record() {
        let (p, mut rx) = pending("k", "payload", Instant::now());
        drop(p);
        match rx.try_take().unwrap() {
            Err(DeliveryError::Stopped { record, attempts: 0 }) => {
                assert_eq!(record, Record::new("k", "payload"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_answered_record_answers_once() {
        let now = Instant::now();
        let (mut p, mut rx) = pending("k", "v", now);
        p.deliver(ShardId::new("s").unwrap(), SequenceNumber::new("5").unwrap(), Some(2), now);
        // Dropped after its answer: `Drop` must not answer again (it would say `Stopped`).
        drop(p);
        let d = rx.try_take().unwrap().unwrap();
        assert_eq!(d.sub_sequence_number, Some(2));
    }
}
