//! [`Pending`]: one accepted user record on its way through the pipeline.
//!
//! Invariant: a `Pending` answers its receipt exactly once. The pipeline completes it with a
//! delivery or an error; if it is dropped without that (a bug, or the pipeline task stopped
//! abnormally), its `Drop` answers [`DeliveryError::Stopped`] with the record, so no receipt
//! ever hangs and no record is lost without its owner hearing of it.

use std::time::Instant;

use kinesis_common::{ApiError, SequenceNumber, ShardId};
use tokio::sync::{OwnedSemaphorePermit, oneshot};

use crate::record::{Delivery, DeliveryError, Outcome, ValidRecord};

/// The share of the outstanding budget a record holds until it is resolved.
#[derive(Debug)]
pub(crate) struct Budget {
    pub(crate) records: OwnedSemaphorePermit,
    pub(crate) bytes: OwnedSemaphorePermit,
}

impl Budget {
    /// Joins another record's budget into this one, so that both are returned by one release
    /// (each release takes the semaphore's lock).
    pub(crate) fn merge(&mut self, other: Budget) {
        self.records.merge(other.records);
        self.bytes.merge(other.bytes);
    }
}

/// One user record in the pipeline.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) record: ValidRecord,
    pub(crate) accepted_at: Instant,
    /// When it must be sent at the latest (`record_max_buffered_time` after acceptance, or
    /// after a retry was scheduled).
    pub(crate) deadline: Instant,
    /// When its TTL runs out.
    pub(crate) expires_at: Instant,
    pub(crate) attempts: u32,
    /// The flush generation it was accepted in.
    pub(crate) generation: u64,
    /// Its acceptance number: the order the pipeline received records in.
    pub(crate) seq: u64,
    /// Boxed: it is rare, and records move through every stage.
    pub(crate) last_error: Option<Box<ApiError>>,
    reply: Option<oneshot::Sender<Outcome>>,
    budget: Option<Budget>,
}

impl Pending {
    pub(crate) fn new(
        record: ValidRecord,
        accepted_at: Instant,
        deadline: Instant,
        expires_at: Instant,
        reply: oneshot::Sender<Outcome>,
        budget: Option<Budget>,
    ) -> Self {
        Self {
            record,
            accepted_at,
            deadline,
            expires_at,
            attempts: 0,
            generation: 0,
            seq: 0,
            last_error: None,
            reply: Some(reply),
            budget,
        }
    }

    fn answer(&mut self, outcome: Result<Delivery, DeliveryError>) {
        if let Some(reply) = self.reply.take() {
            // The caller may have dropped its receipt: the record was still handled.
            let _ = reply.send(outcome.map_err(Box::new));
        }
    }

    fn take_record(&mut self) -> crate::Record {
        // Data is reference counted: the clone is cheap, and `Drop` still has a record.
        self.record.clone().into_record()
    }

    /// Takes the record's share of the outstanding budget, to return it together with others.
    pub(crate) fn take_budget(&mut self) -> Option<Budget> {
        self.budget.take()
    }

    /// Answers a successful write.
    pub(crate) fn deliver(
        mut self,
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
    use std::time::Duration;

    /// A pending record with no budget, and the receiver of its answer.
    pub(crate) fn pending(
        key: &str,
        data: &str,
        now: Instant,
    ) -> (Pending, oneshot::Receiver<Outcome>) {
        let (tx, rx) = oneshot::channel();
        let record = ValidRecord::new(Record::new(key, data.to_owned()), 1 << 20).unwrap();
        let p = Pending::new(
            record,
            now,
            now + Duration::from_millis(100),
            now + Duration::from_secs(30),
            tx,
            None,
        );
        (p, rx)
    }

    #[test]
    fn a_dropped_pending_record_answers_stopped_with_its_record() {
        let (p, mut rx) = pending("k", "payload", Instant::now());
        drop(p);
        match rx.try_recv().unwrap().map_err(|error| *error) {
            Err(DeliveryError::Stopped { record, attempts: 0 }) => {
                assert_eq!(record, Record::new("k", "payload"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_answered_record_answers_once() {
        let now = Instant::now();
        let (p, mut rx) = pending("k", "v", now);
        p.deliver(ShardId::new("s").unwrap(), SequenceNumber::new("5").unwrap(), Some(2), now);
        let d = rx.try_recv().unwrap().unwrap();
        assert_eq!(d.sub_sequence_number, Some(2));
    }
}
