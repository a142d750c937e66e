//! Retry delays: exponential backoff with full jitter.
//!
//! A pure policy: the caller passes the attempt number and a random number generator, so tests
//! are deterministic with a seeded RNG and no clock is read here. Full jitter (a delay drawn
//! uniformly from zero up to the exponential ceiling) spreads retries of many clients that
//! failed together, which is what stops retry storms against a throttled shard (AWS
//! Architecture Blog, "Exponential Backoff And Jitter").

use std::time::Duration;

use rand::Rng;

/// Exponential backoff with full jitter: attempt `n` (0-based) waits a uniformly random time in
/// `0..=min(max, base * 2^n)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    max: Duration,
}

impl Backoff {
    /// A policy whose first ceiling is `base` and whose ceilings never pass `max`.
    ///
    /// A `max` below `base` is raised to `base`.
    pub const fn new(base: Duration, max: Duration) -> Self {
        let max = if max.as_nanos() < base.as_nanos() { base } else { max };
        Self { base, max }
    }

    /// The first ceiling.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The largest ceiling.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The longest delay attempt `attempt` (0-based) may wait: `min(max, base * 2^attempt)`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.checked_mul(factor).map_or(self.max, |d| d.min(self.max))
    }

    /// The delay before retry number `attempt` (0-based), drawn from `0..=ceiling(attempt)`.
    pub fn delay<R: Rng + ?Sized>(&self, attempt: u32, rng: &mut R) -> Duration {
        let ceiling = self.ceiling(attempt);
        // Nanoseconds of any ceiling we allow fit in u64 (584 years).
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.random_range(0..=nanos))
    }

    /// Like [`delay`](Self::delay), but never longer than `remaining` (the time left before a
    /// record's TTL or a caller's deadline); `None` when nothing remains, so the caller gives up
    /// instead of retrying past its deadline.
    pub fn delay_within<R: Rng + ?Sized>(
        &self,
        attempt: u32,
        remaining: Duration,
        rng: &mut R,
    ) -> Option<Duration> {
        if remaining.is_zero() {
            return None;
        }
        Some(self.delay(attempt, rng).min(remaining))
    }
}

/// Calls `op` until it succeeds, fails with an error `retryable` refuses, or `limit` has
/// passed since the first call; between calls waits as [`Backoff::delay_within`] says (full
/// jitter, never past `limit`). Returns the last error when it gives up. Each retry is logged
/// at `WARN` with `what` (for example "listing the shards") and the error with its sources.
///
/// For start-up calls whose transient failures (throttling, a 5xx, a reset connection) should
/// not fail the whole start after the SDK's own three attempts.
#[cfg(feature = "rt")]
pub async fn retry_within<T, E, Fut>(
    backoff: Backoff,
    limit: Duration,
    what: &str,
    retryable: impl Fn(&E) -> bool,
    mut op: impl FnMut() -> Fut,
) -> Result<T, E>
where
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::error::Error,
{
    use rand::SeedableRng;

    let start = tokio::time::Instant::now();
    let mut rng = rand::rngs::SmallRng::from_os_rng();
    let mut attempt = 0;
    loop {
        let error = match op().await {
            Ok(value) => return Ok(value),
            Err(error) if retryable(&error) => error,
            Err(error) => return Err(error),
        };
        let remaining = limit.saturating_sub(start.elapsed());
        let Some(delay) = backoff.delay_within(attempt, remaining, &mut rng) else {
            return Err(error);
        };
        attempt += 1;
        let chain = crate::error_chain(&error);
        tracing::warn!(attempt, ?delay, error = %chain, "{what} failed; retrying");
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn ceilings_double_then_cap() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let ceilings: Vec<_> = (0..7).map(|n| b.ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(2));
    }

    #[test]
    fn delays_are_spread_over_the_whole_window() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let mut rng = StdRng::seed_from_u64(7);
        let delays: Vec<_> = (0..1000).map(|_| b.delay(3, &mut rng)).collect();
        let low = delays.iter().filter(|d| **d < Duration::from_millis(200)).count();
        let high = delays.iter().filter(|d| **d > Duration::from_millis(600)).count();
        // Uniform on 0..=800 ms: about a quarter in each of these two windows.
        assert!((150..350).contains(&low), "{low}");
        assert!((150..350).contains(&high), "{high}");
    }

    #[test]
    fn delay_within_respects_the_deadline() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(b.delay_within(5, Duration::ZERO, &mut rng), None);
        for _ in 0..100 {
            let d = b.delay_within(5, Duration::from_millis(50), &mut rng).unwrap();
            assert!(d <= Duration::from_millis(50));
        }
    }

    proptest! {
        #[test]
        fn delay_never_exceeds_ceiling(base_ms in 1u64..10_000, max_ms in 1u64..100_000, attempt in 0u32..200, seed: u64) {
            let b = Backoff::new(Duration::from_millis(base_ms), Duration::from_millis(max_ms));
            let mut rng = StdRng::seed_from_u64(seed);
            let d = b.delay(attempt, &mut rng);
            prop_assert!(d <= b.ceiling(attempt));
            prop_assert!(b.ceiling(attempt) <= b.max());
            prop_assert!(b.ceiling(attempt) >= b.base().min(b.max()));
        }
    }

    #[cfg(feature = "rt")]
    mod retry {
        use super::super::*;
        use std::sync::atomic::{AtomicU32, Ordering};

        const POLICY: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));

        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        struct Failed(&'static str);

        impl std::fmt::Display for Failed {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }

        impl std::error::Error for Failed {}

        /// An operation that fails `failures` times with `error`, then answers its call count.
        fn flaky(
            calls: &AtomicU32,
            failures: u32,
            error: &'static str,
        ) -> impl FnMut() -> std::future::Ready<Result<u32, Failed>> {
            move || {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                std::future::ready(if n <= failures { Err(Failed(error)) } else { Ok(n) })
            }
        }

        #[tokio::test(start_paused = true)]
        async fn retryable_errors_are_retried_until_success() {
            let calls = AtomicU32::new(0);
            let result = retry_within(
                POLICY,
                Duration::from_secs(30),
                "op",
                |_| true,
                flaky(&calls, 5, "busy"),
            )
            .await;
            assert_eq!(result, Ok(6));
        }

        #[tokio::test(start_paused = true)]
        async fn other_errors_fail_at_once() {
            let calls = AtomicU32::new(0);
            let start = tokio::time::Instant::now();
            let result = retry_within(
                POLICY,
                Duration::from_secs(30),
                "op",
                |e: &Failed| e.0 == "busy",
                flaky(&calls, 5, "denied"),
            )
            .await;
            assert_eq!(result, Err(Failed("denied")));
            assert_eq!(calls.load(Ordering::SeqCst), 1);
            assert_eq!(start.elapsed(), Duration::ZERO);
        }

        #[tokio::test(start_paused = true)]
        async fn it_gives_up_with_the_last_error_once_the_limit_passed() {
            let calls = AtomicU32::new(0);
            let start = tokio::time::Instant::now();
            let limit = Duration::from_secs(5);
            let result =
                retry_within(POLICY, limit, "op", |_| true, flaky(&calls, u32::MAX, "busy")).await;
            assert_eq!(result, Err(Failed("busy")));
            // Delays never run past the limit, and the last call is made at the limit at most.
            assert!(start.elapsed() <= limit, "{:?}", start.elapsed());
            assert!(calls.load(Ordering::SeqCst) >= 5, "{calls:?}");
        }

        #[tokio::test(start_paused = true)]
        async fn a_zero_limit_never_retries() {
            let calls = AtomicU32::new(0);
            let result =
                retry_within(POLICY, Duration::ZERO, "op", |_| true, flaky(&calls, 1, "busy"))
                    .await;
            assert_eq!(result, Err(Failed("busy")));
            assert_eq!(calls.load(Ordering::SeqCst), 1);
        }
    }
}
