//! The shard consumer's state machine, pure: which state a shard consumer is in and where
//! each event takes it. The shard consumer task (`shard_consumer.rs`) performs each state's
//! work and feeds the outcome back as an [`Event`].
//!
//! ```text
//! WaitingOnParents -> Initializing -> Processing -> ShuttingDown(reason) -> Done
//! ```
//!
//! Invariants (checked by property tests below):
//! - `Done` is final.
//! - `Processing` is reached only through `Initializing`, which is reached only once the
//!   parents are done: a child's records are never handed out before its parents finished.
//! - A lost lease wins over everything: once the lease is lost the machine is in
//!   `ShuttingDown(LeaseLost)` or `Done`, and no state after it may checkpoint.
//! - A shard consumer whose processor was never initialized goes straight to `Done`: the
//!   processor's shutdown callbacks only follow a successful `initialize`.

/// Why a shard consumer shuts down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ShutdownReason {
    /// The shard was read to its end: the processor checkpoints `SHARD_END`.
    ShardEnd,
    /// Another worker took the lease: the processor is told, and cannot checkpoint.
    LeaseLost,
    /// The consumer is shutting down: the processor may checkpoint, then the lease is
    /// released.
    Requested,
    /// The processor or the shard's retrieval failed: the lease is released without a
    /// checkpoint, and the shard is retried by whoever takes it next.
    Failed,
}

/// A shard consumer's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Waiting until every parent lease has checkpointed `SHARD_END` or is gone.
    WaitingOnParents,
    /// Calling the processor's `initialize` and starting retrieval.
    Initializing,
    /// Handing batches to the processor.
    Processing,
    /// Calling the processor's last method and giving the lease up.
    ShuttingDown(ShutdownReason),
    /// Finished.
    Done,
}

/// What happened in a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// Every parent is done.
    ParentsDone,
    /// `initialize` succeeded and retrieval started.
    Initialized,
    /// A batch was processed.
    BatchProcessed,
    /// Retrieval reached the end of the shard.
    ShardEndReached,
    /// The lease was lost.
    LeaseLost,
    /// The consumer asked the shard to shut down.
    ShutdownRequested,
    /// `initialize` or `process` failed, or retrieval failed for good.
    Failed,
    /// The shutting-down work is finished.
    ShutdownComplete,
}

impl State {
    /// The state after `event`.
    pub(crate) fn next(self, event: Event) -> State {
        use Event as E;
        use ShutdownReason as R;
        use State as S;
        match (self, event) {
            (S::Done, _) => S::Done,
            // Before the processor is initialized there is nobody to tell: stop.
            (S::WaitingOnParents, E::LeaseLost | E::ShutdownRequested | E::Failed) => S::Done,
            (S::WaitingOnParents, E::ParentsDone) => S::Initializing,
            (S::WaitingOnParents, _) => S::WaitingOnParents,
            (S::Initializing, E::Initialized) => S::Processing,
            (S::Initializing, E::Failed) => S::Done,
            (S::Initializing | S::Processing, E::LeaseLost) => S::ShuttingDown(R::LeaseLost),
            (S::Initializing | S::Processing, E::ShutdownRequested) => {
                S::ShuttingDown(R::Requested)
            }
            (S::Initializing, _) => S::Initializing,
            (S::Processing, E::ShardEndReached) => S::ShuttingDown(R::ShardEnd),
            (S::Processing, E::Failed) => S::ShuttingDown(R::Failed),
            (S::Processing, _) => S::Processing,
            (S::ShuttingDown(_), E::ShutdownComplete) => S::Done,
            // Losing the lease while finishing: the processor is told instead, and the
            // SHARD_END or shutdown checkpoint it may have been about to write is refused.
            (S::ShuttingDown(R::ShardEnd | R::Requested), E::LeaseLost) => {
                S::ShuttingDown(R::LeaseLost)
            }
            (S::ShuttingDown(reason), _) => S::ShuttingDown(reason),
        }
    }

    /// Whether the processor may checkpoint in this state (the invariant the property tests
    /// check; the keeper enforces it at run time by refusing writes once the lease is lost).
    #[cfg(test)]
    pub(crate) fn may_checkpoint(self) -> bool {
        matches!(
            self,
            State::Processing
                | State::ShuttingDown(ShutdownReason::ShardEnd | ShutdownReason::Requested)
        )
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            Just(Event::ParentsDone),
            Just(Event::Initialized),
            Just(Event::BatchProcessed),
            Just(Event::ShardEndReached),
            Just(Event::LeaseLost),
            Just(Event::ShutdownRequested),
            Just(Event::Failed),
            Just(Event::ShutdownComplete),
        ]
    }

    #[test]
    fn the_happy_path_to_shard_end() {
        let mut state = State::WaitingOnParents;
        for (event, expected) in [
            (Event::ParentsDone, State::Initializing),
            (Event::Initialized, State::Processing),
            (Event::BatchProcessed, State::Processing),
            (Event::ShardEndReached, State::ShuttingDown(ShutdownReason::ShardEnd)),
            (Event::ShutdownComplete, State::Done),
        ] {
            state = state.next(event);
            assert_eq!(state, expected, "after {event:?}");
        }
    }

    #[test]
    fn a_lease_lost_during_the_shard_end_checkpoint_tells_the_processor() {
        let state = State::ShuttingDown(ShutdownReason::ShardEnd).next(Event::LeaseLost);
        assert_eq!(state, State::ShuttingDown(ShutdownReason::LeaseLost));
        assert!(!state.may_checkpoint());
    }

    #[test]
    fn nothing_is_called_on_a_processor_that_was_never_initialized() {
        for event in [Event::LeaseLost, Event::ShutdownRequested, Event::Failed] {
            assert_eq!(State::WaitingOnParents.next(event), State::Done);
        }
        assert_eq!(State::Initializing.next(Event::Failed), State::Done);
    }

    proptest! {
        #[test]
        fn done_is_final(events in prop::collection::vec(event(), 0..20)) {
            let end = events.iter().fold(State::Done, |s, e| s.next(*e));
            prop_assert_eq!(end, State::Done);
        }

        #[test]
        fn processing_only_after_parents_done_and_initialize(
            events in prop::collection::vec(event(), 0..30),
        ) {
            let mut state = State::WaitingOnParents;
            let mut parents_done = false;
            let mut initialized = false;
            for event in events {
                let next = state.next(event);
                if state == State::WaitingOnParents && next == State::Initializing {
                    parents_done = true;
                }
                if state == State::Initializing && next == State::Processing {
                    initialized = true;
                }
                if next == State::Processing {
                    prop_assert!(parents_done && initialized);
                }
                state = next;
            }
        }

        #[test]
        fn no_checkpoint_after_the_lease_is_lost(
            before in prop::collection::vec(event(), 0..15),
            after in prop::collection::vec(event(), 0..15),
        ) {
            let state = before.iter().fold(State::WaitingOnParents, |s, e| s.next(*e));
            let mut state = state.next(Event::LeaseLost);
            let lost_or_done = |s: State| {
                matches!(s, State::Done | State::ShuttingDown(ShutdownReason::LeaseLost))
                    // A shard that had already finished otherwise stays finished.
                    || matches!(s, State::ShuttingDown(ShutdownReason::Failed))
            };
            prop_assert!(lost_or_done(state), "{:?}", state);
            for event in after {
                state = state.next(event);
                prop_assert!(!state.may_checkpoint(), "{:?} may checkpoint", state);
            }
        }
    }
}
