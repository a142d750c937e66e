//! [`Receipt`]: where a record's outcome arrives, and [`Reply`], the pipeline's end of it.
//!
//! A channel per record (an allocation, a free and a handful of atomic operations) was one of
//! the largest costs of a small record. Receipts are instead slots of blocks of [`BLOCK`]:
//! `send` takes the next slot of the current block (a new block once it is used up), so a
//! block's allocation is shared by that many records, and its memory is freed once every
//! receipt and reply of the block is gone.
//!
//! A slot is a small mutex-guarded state machine: `Empty` until the receipt waits (`Waiting`,
//! with its waker) or the answer comes (`Answered`), then `Closed` once the receipt has taken
//! the answer or was dropped. A receipt dropped early drops the answer when it comes, so a
//! forgotten receipt never keeps a record's data (an error hands the record back) alive
//! beside the few bytes of its slot.
//!
//! Invariant: a reply answers exactly once. `Pending` answers before it is dropped; a reply
//! dropped unanswered marks its slot `Abandoned`, which a receipt reports as a bug rather than
//! waiting forever.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;

use crate::record::{Delivery, DeliveryError};

/// What the pipeline answers: the error boxed, so that a slot stays small.
pub(crate) type Outcome = Result<Delivery, Box<DeliveryError>>;

/// Slots per block: one allocation serves this many records.
pub(crate) const BLOCK: usize = 32;

#[derive(Default)]
enum State {
    /// Not answered, and nobody is waiting yet.
    #[default]
    Empty,
    /// The receipt is waiting with this waker.
    Waiting(Waker),
    /// The answer, for the receipt to take.
    Answered(Outcome),
    /// The receipt took the answer or was dropped.
    Closed,
    /// The reply was dropped without an answer (a bug: `Pending` always answers).
    Abandoned,
}

/// The slots of [`BLOCK`] records.
struct Block {
    slots: [Mutex<State>; BLOCK],
}

impl Block {
    fn new() -> Arc<Self> {
        Arc::new(Self { slots: std::array::from_fn(|_| Mutex::new(State::Empty)) })
    }

    fn slot(&self, index: u8) -> MutexGuard<'_, State> {
        // Nothing panics while a slot is locked; if something did, the state is still whole.
        self.slots[usize::from(index)].lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Hands out receipt slots. One per producer, behind a mutex held only to take a slot.
pub(crate) struct Slots {
    block: Arc<Block>,
    next: usize,
}

impl Default for Slots {
    fn default() -> Self {
        Self { block: Block::new(), next: 0 }
    }
}

impl fmt::Debug for Slots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slots").field("next", &self.next).finish_non_exhaustive()
    }
}

impl Slots {
    /// A fresh slot: the pipeline's reply and the caller's receipt.
    pub(crate) fn pair(&mut self) -> (Reply, Receipt) {
        if self.next == BLOCK {
            self.block = Block::new();
            self.next = 0;
        }
        let index = u8::try_from(self.next).expect("BLOCK fits in a u8");
        self.next += 1;
        let reply = Reply { block: Arc::clone(&self.block), index, answered: false };
        (reply, Receipt { block: Arc::clone(&self.block), index, taken: false })
    }
}

/// A pair outside any producer.
#[cfg(test)]
pub(crate) fn pair() -> (Reply, Receipt) {
    Slots::default().pair()
}

/// The pipeline's end of a receipt: answers it once.
pub(crate) struct Reply {
    block: Arc<Block>,
    index: u8,
    answered: bool,
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply").field("index", &self.index).finish_non_exhaustive()
    }
}

impl Reply {
    /// Answers the receipt. If the receipt was dropped, the outcome is dropped here.
    pub(crate) fn send(mut self, outcome: Outcome) {
        self.settle(State::Answered(outcome));
        self.answered = true;
    }

    /// Asks the processor to bring the slot into the cache: answering the records of a
    /// Kinesis record touches slots all over memory (each block holds the records of many
    /// aggregates), and a slot asked for ahead arrives while the ones before it are answered.
    #[inline]
    pub(crate) fn prefetch(&self) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            let slot: *const Mutex<State> = &self.block.slots[usize::from(self.index)];
            // A slot spans two cache lines: the first and the last byte.
            let last = slot.cast::<i8>().wrapping_add(size_of::<Mutex<State>>() - 1);
            #[allow(unsafe_code)]
            // SAFETY: SSE is part of the x86-64 baseline, and a prefetch is only a hint: it
            // never faults and changes nothing the program can observe.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(slot.cast());
                _mm_prefetch::<_MM_HINT_T0>(last);
            }
        }
    }

    /// Moves the slot to `state` unless the receipt is gone, waking a waiting receipt.
    /// Whatever is no longer needed is dropped after the lock is released.
    fn settle(&self, state: State) {
        let mut slot = self.block.slot(self.index);
        let previous = match &*slot {
            State::Closed => state,
            // The usual case: nothing to take out, so the rest of the slot is not read.
            State::Empty => {
                *slot = state;
                State::Empty
            }
            _ => std::mem::replace(&mut *slot, state),
        };
        drop(slot);
        if let State::Waiting(waker) = previous {
            waker.wake();
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if !self.answered {
            self.settle(State::Abandoned);
        }
    }
}

/// The outcome of one record: await it for its [`Delivery`].
///
/// Dropping a receipt does not cancel the record; it is still written.
#[must_use = "a receipt tells whether the record was written"]
pub struct Receipt {
    block: Arc<Block>,
    index: u8,
    /// Whether the answer was taken: the slot is closed, and `Drop` has nothing to do.
    taken: bool,
}

impl fmt::Debug for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receipt").finish_non_exhaustive()
    }
}

impl Receipt {
    /// The answer if it has come, else `waker` is woken when it does.
    fn poll_with(&mut self, waker: &Waker) -> Poll<Result<Delivery, DeliveryError>> {
        let mut slot = self.block.slot(self.index);
        match std::mem::take(&mut *slot) {
            State::Answered(outcome) => {
                *slot = State::Closed;
                drop(slot);
                self.taken = true;
                Poll::Ready(outcome.map_err(|error| *error))
            }
            State::Empty => {
                *slot = State::Waiting(waker.clone());
                Poll::Pending
            }
            State::Waiting(previous) => {
                *slot = State::Waiting(if previous.will_wake(waker) {
                    previous
                } else {
                    waker.clone()
                });
                Poll::Pending
            }
            State::Closed => panic!("a receipt was polled after it completed"),
            State::Abandoned => {
                unreachable!("a pending record was dropped without an outcome")
            }
        }
    }

    /// Blocks the thread until the outcome is known. For callers outside an async runtime:
    /// blocking a runtime's thread may stop the very task that would answer.
    pub fn wait(mut self) -> Result<Delivery, DeliveryError> {
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        loop {
            if let Poll::Ready(outcome) = self.poll_with(&waker) {
                return outcome;
            }
            std::thread::park();
        }
    }

    /// The answer if it has come (tests).
    #[cfg(test)]
    pub(crate) fn try_take(&mut self) -> Option<Result<Delivery, DeliveryError>> {
        match self.poll_with(Waker::noop()) {
            Poll::Ready(outcome) => Some(outcome),
            Poll::Pending => None,
        }
    }
}

impl Future for Receipt {
    type Output = Result<Delivery, DeliveryError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.poll_with(cx.waker())
    }
}

impl Drop for Receipt {
    fn drop(&mut self) {
        if self.taken {
            return;
        }
        let mut slot = self.block.slot(self.index);
        let previous = std::mem::replace(&mut *slot, State::Closed);
        drop(slot);
        // An answer nobody will read (it may hold the record's data) goes now, outside the lock.
        drop(previous);
    }
}

/// Wakes a thread blocked in [`Receipt::wait`].
struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Record;
    use kinesis_common::{SequenceNumber, ShardId};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    fn delivered(sub: u64) -> Outcome {
        Ok(Delivery {
            shard_id: ShardId::new("shardId-000000000001").unwrap(),
            sequence_number: SequenceNumber::new("7").unwrap(),
            sub_sequence_number: Some(sub),
            attempts: 1,
            latency: Duration::ZERO,
        })
    }

    /// Record data whose owner tells how many copies are alive.
    struct Owned {
        _alive: Arc<()>,
    }

    impl AsRef<[u8]> for Owned {
        fn as_ref(&self) -> &[u8] {
            b"payload"
        }
    }

    /// Counts its wakes.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn an_answer_before_the_poll_is_ready_at_once() {
        let (reply, mut receipt) = pair();
        assert!(receipt.try_take().is_none());
        reply.send(delivered(3));
        let delivery = receipt.try_take().unwrap().unwrap();
        assert_eq!(delivery.sub_sequence_number, Some(3));
    }

    #[test]
    fn a_waiting_receipt_is_woken_once_by_its_answer() {
        let (reply, mut receipt) = pair();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        assert!(receipt.poll_with(&waker).is_pending());
        assert!(receipt.poll_with(&waker).is_pending(), "polled again: still waiting");
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
        reply.send(delivered(0));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(matches!(receipt.poll_with(&waker), Poll::Ready(Ok(_))));
    }

    #[test]
    fn the_answer_of_a_dropped_receipt_is_dropped_with_its_record() {
        let data = Arc::new(());
        let record =
            Record::new("k", bytes::Bytes::from_owner(Owned { _alive: Arc::clone(&data) }));
        let (reply, receipt) = pair();
        drop(receipt);
        reply.send(Err(Box::new(DeliveryError::Stopped { record, attempts: 0 })));
        assert_eq!(Arc::strong_count(&data), 1, "nobody can read it, so nothing keeps it");

        // And a receipt dropped after the answer came drops it too.
        let record =
            Record::new("k", bytes::Bytes::from_owner(Owned { _alive: Arc::clone(&data) }));
        let (reply, receipt) = pair();
        reply.send(Err(Box::new(DeliveryError::Stopped { record, attempts: 0 })));
        assert_eq!(Arc::strong_count(&data), 2);
        drop(receipt);
        assert_eq!(Arc::strong_count(&data), 1);
    }

    #[test]
    fn a_block_serves_its_records_and_is_freed_when_they_are_done() {
        let mut slots = Slots::default();
        let pairs: Vec<_> = (0..BLOCK + 1).map(|_| slots.pair()).collect();
        let first = Arc::downgrade(&pairs[0].1.block);
        assert!(pairs[..BLOCK].iter().all(|(_, r)| Arc::ptr_eq(&r.block, &pairs[0].1.block)));
        assert!(!Arc::ptr_eq(&pairs[BLOCK].1.block, &pairs[0].1.block), "a new block");
        let mut receipts = Vec::new();
        for (i, (reply, receipt)) in pairs.into_iter().enumerate() {
            reply.send(delivered(i as u64));
            receipts.push(receipt);
        }
        for (i, receipt) in receipts.iter_mut().enumerate() {
            let delivery = receipt.try_take().unwrap().unwrap();
            assert_eq!(delivery.sub_sequence_number, Some(i as u64), "each slot its own answer");
        }
        assert!(first.upgrade().is_some(), "the receipts still hold it");
        drop(receipts);
        assert!(first.upgrade().is_none());
    }

    #[test]
    fn wait_blocks_a_thread_until_the_answer() {
        let (reply, receipt) = pair();
        let waiter = std::thread::spawn(move || receipt.wait());
        reply.send(delivered(9));
        let delivery = waiter.join().unwrap().unwrap();
        assert_eq!(delivery.sub_sequence_number, Some(9));
    }

    #[test]
    #[should_panic(expected = "dropped without an outcome")]
    fn a_reply_dropped_unanswered_is_reported_not_waited_for() {
        let (reply, mut receipt) = pair();
        drop(reply);
        let _ = receipt.try_take();
    }
}
