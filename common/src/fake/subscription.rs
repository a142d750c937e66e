//! The fake's SubscribeToShard sessions.
//!
//! A session pushes one event per batch of records available at its position, waits (on tokio
//! time) while it is at the tip of an open shard, and ends like the real service's: after five
//! minutes (`Ok(None)`), or at the end of a closed shard with a last event that has no
//! continuation sequence number and names the children. A session taken over by a newer
//! SubscribeToShard, or whose consumer or stream is gone, fails once and then ends.
//!
//! Waiting holds no lock: the session waits for the fake's change notification, or at the
//! latest for the end of its five minutes or of a pending reshard (which may close its shard).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::{ApiError, SubscribeToShardEvent, Subscription};

use super::Inner;
use super::state::{SubscriptionKey, SubscriptionPoll};

/// How long a SubscribeToShard session lasts (Kinesis API reference, SubscribeToShard).
pub(super) const SUBSCRIPTION_LIFETIME: Duration = Duration::from_secs(5 * 60);

/// One open session.
pub(super) struct FakeSubscription {
    inner: Arc<Inner>,
    key: SubscriptionKey,
    position: usize,
    ends_at: Instant,
    done: bool,
}

impl FakeSubscription {
    pub(super) fn new(
        inner: Arc<Inner>,
        key: SubscriptionKey,
        position: usize,
        now: Instant,
    ) -> Self {
        Self { inner, key, position, ends_at: now + SUBSCRIPTION_LIFETIME, done: false }
    }

    fn finish(&mut self) {
        if !self.done {
            self.done = true;
            self.inner.lock().release_subscription(&self.key);
        }
    }
}

#[async_trait]
impl Subscription for FakeSubscription {
    async fn next_event(&mut self) -> Result<Option<SubscribeToShardEvent>, ApiError> {
        loop {
            if self.done {
                return Ok(None);
            }
            let now = Instant::now();
            if now >= self.ends_at {
                self.finish();
                return Ok(None);
            }
            // Registered before looking, so that a change made between the look and the wait
            // still wakes this session.
            let inner = Arc::clone(&self.inner);
            let mut changed = std::pin::pin!(inner.changed.notified());
            changed.as_mut().enable();
            let poll = inner.lock().poll_subscription(&self.key, self.position, now);
            match poll {
                Err(error) => {
                    self.finish();
                    return Err(error);
                }
                Ok(SubscriptionPoll::Event { event, next, ended }) => {
                    self.position = next;
                    if ended {
                        self.finish();
                    }
                    return Ok(Some(event));
                }
                Ok(SubscriptionPoll::Wait { until }) => {
                    let wake = until.map_or(self.ends_at, |until| until.min(self.ends_at));
                    // Either the deadline or a change: both mean "look again".
                    let _ = tokio::time::timeout_at(wake, changed).await;
                }
            }
        }
    }
}

impl Drop for FakeSubscription {
    fn drop(&mut self) {
        self.finish();
    }
}
