//! Drawing the faults of one request from the configured [`Faults`] and a seeded generator.
//!
//! Pure policy. Invariant: a draw consumes the same number of random values whatever the
//! outcome, so one seed gives one sequence of decisions for one sequence of requests.

use std::time::Duration;

use rand::Rng;

use super::config::{Faults, Fraction};

/// What happens to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Disposition {
    /// Reset the connection without forwarding.
    ResetBefore,
    /// Answer a server error without forwarding.
    ErrorBefore,
    /// Forward, and answer as the upstream did.
    Forward,
    /// Forward, then reset the connection instead of answering.
    ResetAfter,
    /// Forward, then answer a server error if the upstream succeeded.
    ErrorAfter,
}

/// The faults drawn for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Draw {
    pub(crate) disposition: Disposition,
    /// Delay before forwarding (or before the injected error).
    pub(crate) delay: Duration,
}

impl Draw {
    /// No fault.
    pub(crate) const CLEAN: Self =
        Self { disposition: Disposition::Forward, delay: Duration::ZERO };
}

fn hit<R: Rng + ?Sized>(fraction: Fraction, rng: &mut R) -> bool {
    // Always draw, so the number of values taken does not depend on the configuration.
    let x: f64 = rng.random();
    x < fraction.get()
}

/// Draws the faults of one request.
pub(crate) fn draw<R: Rng + ?Sized>(faults: &Faults, rng: &mut R) -> Draw {
    let reset_before = hit(faults.reset_before_forward, rng);
    let error_before = hit(faults.error_before_forward, rng);
    let reset_after = hit(faults.reset_after_forward, rng);
    let error_after = hit(faults.error_after_forward, rng);
    let jitter: f64 = rng.random();
    let disposition = if reset_before {
        Disposition::ResetBefore
    } else if error_before {
        Disposition::ErrorBefore
    } else if reset_after {
        Disposition::ResetAfter
    } else if error_after {
        Disposition::ErrorAfter
    } else {
        Disposition::Forward
    };
    let delay = if reset_before {
        Duration::ZERO
    } else {
        faults.latency + faults.latency_jitter.mul_f64(jitter)
    };
    Draw { disposition, delay }
}

/// Whether one PutRecords entry is throttled by [`Faults::throttle_entries`].
pub(crate) fn throttle_entry<R: Rng + ?Sized>(faults: &Faults, rng: &mut R) -> bool {
    !faults.throttle_entries.is_never() && hit(faults.throttle_entries, rng)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn faults() -> Faults {
        Faults {
            error_before_forward: Fraction::new(0.2).unwrap(),
            error_after_forward: Fraction::new(0.2).unwrap(),
            reset_before_forward: Fraction::new(0.1).unwrap(),
            reset_after_forward: Fraction::new(0.1).unwrap(),
            latency: Duration::from_millis(5),
            latency_jitter: Duration::from_millis(10),
            ..Faults::none()
        }
    }

    #[test]
    fn no_faults_always_forward_without_delay() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..1000 {
            assert_eq!(draw(&Faults::none(), &mut rng), Draw::CLEAN);
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_draws() {
        let a: Vec<_> = {
            let mut rng = StdRng::seed_from_u64(7);
            (0..200).map(|_| draw(&faults(), &mut rng)).collect()
        };
        let mut rng = StdRng::seed_from_u64(7);
        let b: Vec<_> = (0..200).map(|_| draw(&faults(), &mut rng)).collect();
        assert_eq!(a, b);
    }

    #[test]
    fn always_means_every_request() {
        let mut rng = StdRng::seed_from_u64(3);
        let faults = Faults { error_after_forward: Fraction::ALWAYS, ..Faults::none() };
        assert!((0..100).all(|_| draw(&faults, &mut rng).disposition == Disposition::ErrorAfter));
    }

    #[test]
    fn delays_stay_within_latency_plus_jitter() {
        let mut rng = StdRng::seed_from_u64(5);
        for _ in 0..1000 {
            let d = draw(&faults(), &mut rng);
            if d.disposition != Disposition::ResetBefore {
                assert!(
                    d.delay >= Duration::from_millis(5) && d.delay <= Duration::from_millis(15)
                );
            }
        }
    }

    #[test]
    fn fractions_are_roughly_honoured() {
        let mut rng = StdRng::seed_from_u64(11);
        let n = 10_000;
        let errors_before = (0..n)
            .filter(|_| draw(&faults(), &mut rng).disposition == Disposition::ErrorBefore)
            .count();
        // P(error before) = (1 - 0.1) * 0.2 = 0.18.
        assert!((1500..2100).contains(&errors_before), "{errors_before}");
    }
}
