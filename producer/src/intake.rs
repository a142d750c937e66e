//! [`Intake`]: how accepted records reach the pipeline, a batch at a time.
//!
//! Senders append records to a queue under a mutex (which also hands out their receipt
//! slots); the pipeline swaps the whole queue for its own empty one at the start of a turn.
//! A record is moved twice on the way instead of through a channel's block list and the
//! pipeline's `select!`, and a sender wakes the pipeline only when it finds the queue empty.
//!
//! Invariants: records come out in the order they went in; once closed (shutdown, or the
//! pipeline gone), nothing more goes in, and a sender gets its record back.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use crate::pending::Pending;
use crate::receipt::{Receipt, Reply, Slots};
use crate::record::ValidRecord;

#[derive(Debug, Default)]
struct State {
    slots: Slots,
    records: VecDeque<Pending>,
    closed: bool,
}

/// The queue between senders and the pipeline. Shared by both ends.
#[derive(Debug, Default)]
pub(crate) struct Intake {
    state: Mutex<State>,
    /// Woken when a record lands in an empty queue.
    ready: Notify,
}

/// The most records a queue keeps room for once drained, so that a burst does not pin its
/// memory for good.
const KEPT_CAPACITY: usize = 4096;

impl Intake {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while the queue is locked; if something did, the state is still whole.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues the record `build` makes from `record` and its reply, and returns its receipt;
    /// gives `record` back if the intake is closed.
    pub(crate) fn push(
        &self,
        record: ValidRecord,
        build: impl FnOnce(ValidRecord, Reply) -> Pending,
    ) -> Result<Receipt, ValidRecord> {
        let mut state = self.lock();
        if state.closed {
            return Err(record);
        }
        let (reply, receipt) = state.slots.pair();
        let wake = state.records.is_empty();
        state.records.push_back(build(record, reply));
        drop(state);
        if wake {
            self.ready.notify_one();
        }
        Ok(receipt)
    }

    /// Moves every queued record, in order, to the back of `into`: by swapping the queues
    /// when `into` is empty (the usual case), so `into`'s room is reused by senders.
    pub(crate) fn take(&self, into: &mut VecDeque<Pending>) {
        if into.is_empty() && into.capacity() > KEPT_CAPACITY {
            into.shrink_to(KEPT_CAPACITY);
        }
        let mut state = self.lock();
        if into.is_empty() {
            std::mem::swap(&mut state.records, into);
        } else {
            into.extend(state.records.drain(..));
        }
    }

    /// Takes what is queued and refuses records from now on.
    pub(crate) fn close(&self, into: &mut VecDeque<Pending>) {
        self.lock().closed = true;
        self.take(into);
    }

    /// Completes when a record may have been queued since the last `take`.
    pub(crate) async fn ready(&self) {
        self.ready.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Record;
    use std::time::{Duration, Instant};

    fn build(now: Instant) -> impl FnOnce(ValidRecord, Reply) -> Pending {
        move |record, reply| crate::pending::tests::accepted(record, reply, now)
    }

    fn valid(i: usize) -> ValidRecord {
        ValidRecord::new(Record::new(format!("k{i}"), format!("d{i}")), 1 << 20).unwrap()
    }

    #[tokio::test]
    async fn records_come_out_in_order_and_an_empty_queue_wakes_the_pipeline() {
        let intake = Intake::default();
        let now = Instant::now();
        let mut receipts = Vec::new();
        for i in 0..3 {
            receipts.push(intake.push(valid(i), build(now)).unwrap());
        }
        // The first push stored a wake-up.
        tokio::time::timeout(Duration::from_secs(5), intake.ready()).await.unwrap();
        let mut taken = VecDeque::new();
        intake.take(&mut taken);
        receipts.push(intake.push(valid(3), build(now)).unwrap());
        intake.take(&mut taken);
        let keys: Vec<_> = taken.iter().map(|p| p.record.partition_key.to_string()).collect();
        assert_eq!(keys, ["k0", "k1", "k2", "k3"]);
    }

    #[test]
    fn a_closed_intake_gives_records_back_and_hands_over_what_it_held() {
        let intake = Intake::default();
        let now = Instant::now();
        let _kept = intake.push(valid(0), build(now)).unwrap();
        let mut rest = VecDeque::new();
        intake.close(&mut rest);
        assert_eq!(rest.len(), 1);
        let back = intake.push(valid(1), build(now)).unwrap_err();
        assert_eq!(back.into_record(), Record::new("k1", "d1"));
    }

    #[test]
    fn a_drained_queue_does_not_keep_a_burst_s_room() {
        let intake = Intake::default();
        let now = Instant::now();
        let receipts: Vec<_> =
            (0..3 * KEPT_CAPACITY).map(|i| intake.push(valid(i), build(now)).unwrap()).collect();
        let mut taken = VecDeque::new();
        intake.take(&mut taken);
        assert_eq!(taken.len(), 3 * KEPT_CAPACITY);
        taken.clear();
        // The next take hands the senders the big queue back, shrunk.
        intake.take(&mut taken);
        assert!(intake.lock().records.capacity() <= KEPT_CAPACITY);
        drop(receipts);
    }
}
