//! The load generator and verifier behind the `kinesis-load` binary: `produce` writes
//! numbered payloads through the producer at a target rate, `consume` reads them back with
//! the consumer and checks for loss, duplicates and per-key order, `verify` merges the
//! reports of workers that shared the shards (or judges their [`events`] files with
//! [`audit`]: the chaos run's verdict), and `reshard` splits, merges or rescales the stream
//! while load runs.
//!
//! The pure parts (payload codec, id sets, latency histograms, per-second series, the
//! verifier and its merge, pacing, key and size choice, resharding plans) are plain functions
//! and types with unit and property tests; [`produce()`], [`consume()`] and [`reshard()`] are
//! thin async drivers over the producer and consumer, and [`plot`] draws a produce run.
//!
//! # Payload format (version 1)
//!
//! Every record's data is a 48-byte header followed by filler up to the requested size.
//! Integers are big-endian.
//!
//! | offset | bytes | field |
//! |---|---|---|
//! | 0 | 4 | magic `KTKL` |
//! | 4 | 1 | version, 1 |
//! | 5 | 1 | header length, 48 (filler starts there; a longer header of a later version is skipped) |
//! | 6 | 2 | flags: bit 0 set if the filler is text (compressible) rather than pseudo-random |
//! | 8 | 8 | run id (random per `produce` run) |
//! | 16 | 8 | record id: `0, 1, 2, ...` in send order within the run |
//! | 24 | 8 | key sequence: `0, 1, 2, ...` in send order within the record's partition key |
//! | 32 | 4 | key index: the partition key is `key-<index>` |
//! | 36 | 4 | checksum of every other byte of the payload (header and filler) |
//! | 40 | 8 | send time, microseconds since the Unix epoch (producer's wall clock) |
//! | 48 | … | filler |
//!
//! The checksum: starting from FNV-1a's 64-bit offset basis, for each little-endian 8-byte
//! word (then each remaining byte) of bytes `0..36`, and then of bytes `40..`,
//! `h = (h ^ word) * 0x100000001b3`; the checksum is `(h ^ h >> 32) as u32`.
//!
//! The verifier counts data that is too short, has another magic, an unknown version, an
//! impossible header length or a wrong checksum as *foreign* (by reason) and never fails on
//! it; a wrong checksum (`checksum-mismatch`, a damaged payload) also fails the verdict.
//! What the verifier counts and how reports merge is in [`verify`].

pub mod audit;
pub mod consume;
pub mod events;
pub mod histogram;
pub mod ids;
pub mod payload;
pub mod plot;
pub mod produce;
pub mod report;
pub mod reshard;
pub mod retry_codes;
pub mod series;
pub mod verify;
pub mod workload;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub use consume::{ConsumeOptions, consume, consume_with_events};
pub use histogram::{LatencyHistogram, Percentiles};
pub use ids::IdSet;
pub use payload::{Filler, Foreign, Header, RunId};
pub use produce::{ProduceOptions, produce, produce_with_series};
pub use report::{ConsumeReport, ProduceReport, StopReason, VerifyReport};
pub use reshard::{ReshardAction, ReshardEvent, Schedule, reshard};
pub use series::{Series, SeriesRecorder};
pub use verify::{Expectation, Scope, Tally, Verdict, Verifier, judge};
pub use workload::{KeyChooser, Pacer, Rate, SizeSpec};

/// Where the drivers send their once-a-second progress lines.
pub type ProgressSink = Arc<dyn Fn(&str) + Send + Sync>;

/// A flag set once `stop` completes, and the task that waits for it (abort it when done).
fn spawn_stop_flag(
    stop: impl Future<Output = ()> + Send + 'static,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<()>) {
    let flag = Arc::new(AtomicBool::new(false));
    let set = Arc::clone(&flag);
    let task = tokio::spawn(async move {
        stop.await;
        set.store(true, Ordering::Relaxed);
    });
    (flag, task)
}

/// Serde for a [`Duration`](std::time::Duration) as (fractional) seconds.
mod duration_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}
