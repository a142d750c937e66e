//! `reshard`: splits, merges or rescales a stream on a schedule while load runs, and the
//! stream helpers the other commands share (create if missing, wait until active).
//!
//! Which shards: without a measure of heat, the *hottest* shard is taken to be the open shard
//! with the widest hash range (with uniformly spread keys it gets the most traffic), and the
//! *coldest adjacent pair* the two open shards with contiguous ranges whose ranges are the
//! narrowest together ([`plan_split`], [`plan_merge`]). Hash ranges are always read from
//! ListShards, never computed, as emulators' differ from AWS's.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use anyhow::{Context, bail};
use kinesis_common::{ApiErrorKind, HashKey, KinesisApi, Shard, ShardId, StreamName, StreamStatus};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{ProgressSink, spawn_stop_flag};

/// How long a stream may stay `Creating` or `Updating`.
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(120);

/// What each resharding step does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReshardAction {
    /// Split the widest open shard in the middle of its range.
    Split,
    /// Merge the narrowest pair of adjacent open shards.
    Merge,
    /// UpdateShardCount (uniform scaling) to these counts in turn, cycling.
    Scale(Vec<u32>),
}

/// When the steps run: the first after `first_after`, then every `every`, `times` in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Delay before the first step.
    pub first_after: Duration,
    /// Delay between the start of one step and the next (a step still running delays the next).
    pub every: Duration,
    /// How many steps.
    pub times: u32,
}

/// One step done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReshardEvent {
    /// When it started, since the schedule began.
    #[serde(with = "super::duration_secs")]
    pub at: Duration,
    /// What it did, in words.
    pub action: String,
    /// Until the stream was active again.
    #[serde(with = "super::duration_secs")]
    pub took: Duration,
    /// Open shards afterwards.
    pub open_shards: usize,
}

/// The shard to split and where: the widest open shard, in the middle of its range (the
/// lowest range first among equals); `None` if no open shard has two hash keys.
pub fn plan_split(shards: &[Shard]) -> Option<(ShardId, HashKey)> {
    let widest = shards
        .iter()
        .filter(|s| s.is_open() && s.hash_range.end().0 > s.hash_range.start().0)
        .min_by_key(|s| (std::cmp::Reverse(width(s)), s.hash_range.start()))?;
    let (start, end) = (widest.hash_range.start().0, widest.hash_range.end().0);
    Some((widest.id.clone(), HashKey(start + (end - start) / 2 + 1)))
}

/// The two shards to merge: of the open shards whose ranges touch, the pair narrowest
/// together (the lowest first among equals), lower range first; `None` if no two touch.
pub fn plan_merge(shards: &[Shard]) -> Option<(ShardId, ShardId)> {
    let mut open: Vec<&Shard> = shards.iter().filter(|s| s.is_open()).collect();
    open.sort_by_key(|s| s.hash_range.start());
    open.windows(2)
        .filter(|w| w[0].hash_range.end().0.checked_add(1) == Some(w[1].hash_range.start().0))
        .min_by_key(|w| (width(w[0]) + width(w[1]), w[0].hash_range.start()))
        .map(|w| (w[0].id.clone(), w[1].id.clone()))
}

/// A shard's range width less one (disjoint ranges of the 128-bit space, so two add up
/// without overflow).
fn width(shard: &Shard) -> u128 {
    shard.hash_range.end().0 - shard.hash_range.start().0
}

/// Runs the schedule (until done or `stop`), calling `progress` after each step.
pub async fn reshard(
    api: Arc<dyn KinesisApi>,
    stream: &StreamName,
    action: &ReshardAction,
    schedule: Schedule,
    progress: Option<ProgressSink>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Vec<ReshardEvent>> {
    let (stopped, stop_task) = spawn_stop_flag(stop);
    let start = Instant::now();
    let mut events = Vec::new();
    for n in 0..schedule.times {
        let due = start + schedule.first_after + schedule.every * n;
        while Instant::now() < due && !stopped.load(Relaxed) {
            tokio::time::sleep((due - Instant::now()).min(Duration::from_millis(100))).await;
        }
        if stopped.load(Relaxed) {
            break;
        }
        let began = Instant::now();
        let description = step(api.as_ref(), stream, action, n as usize).await?;
        wait_active(api.as_ref(), stream, ACTIVE_TIMEOUT).await?;
        let open = api.list_shards(stream).await?.iter().filter(|s| s.is_open()).count();
        let event = ReshardEvent {
            at: began - start,
            action: description,
            took: began.elapsed(),
            open_shards: open,
        };
        if let Some(sink) = &progress {
            sink(&format!(
                "[{:>5.0}s] {} (active after {:.1} s; {} open shards)",
                event.at.as_secs_f64(),
                event.action,
                event.took.as_secs_f64(),
                event.open_shards
            ));
        }
        events.push(event);
    }
    stop_task.abort();
    Ok(events)
}

/// One step; returns what it did.
async fn step(
    api: &dyn KinesisApi,
    stream: &StreamName,
    action: &ReshardAction,
    n: usize,
) -> anyhow::Result<String> {
    wait_active(api, stream, ACTIVE_TIMEOUT).await?;
    let shards = api.list_shards(stream).await.context("ListShards")?;
    match action {
        ReshardAction::Split => {
            let (shard, at) = plan_split(&shards).context("no open shard can be split")?;
            api.split_shard(stream, &shard, at).await.context("SplitShard")?;
            Ok(format!("split {shard} at hash key {at}"))
        }
        ReshardAction::Merge => {
            let (a, b) = plan_merge(&shards).context("no two open shards are adjacent")?;
            api.merge_shards(stream, &a, &b).await.context("MergeShards")?;
            Ok(format!("merged {a} and {b}"))
        }
        ReshardAction::Scale(targets) => {
            let Some(&target) = targets.get(n % targets.len().max(1)) else {
                bail!("scale needs at least one shard count");
            };
            api.update_shard_count(stream, target).await.context("UpdateShardCount")?;
            Ok(format!("scaled to {target} shards"))
        }
    }
}

/// Polls until the stream is `Active`, failing after `timeout`.
pub async fn wait_active(
    api: &dyn KinesisApi,
    stream: &StreamName,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match api.describe_stream_summary(stream).await {
            Ok(summary) if summary.status == StreamStatus::Active => return Ok(()),
            Ok(_) => {}
            // Just created: an eventually consistent service may not know it yet.
            Err(e) if e.kind() == ApiErrorKind::NotFound => {}
            Err(e) => return Err(e).context("DescribeStreamSummary"),
        }
        if Instant::now() >= deadline {
            bail!("stream {stream} did not become ACTIVE within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates the stream with `shards` shards unless it exists, and waits until it is active;
/// true if it was created.
pub async fn create_stream_if_missing(
    api: &dyn KinesisApi,
    stream: &StreamName,
    shards: u32,
) -> anyhow::Result<bool> {
    let created = match api.describe_stream_summary(stream).await {
        Ok(_) => false,
        Err(e) if e.kind() == ApiErrorKind::NotFound => {
            api.create_stream(stream, shards).await.context("CreateStream")?;
            true
        }
        Err(e) => return Err(e).context("DescribeStreamSummary"),
    };
    wait_active(api, stream, ACTIVE_TIMEOUT).await?;
    Ok(created)
}

#[cfg(test)]
mod tests {
    use kinesis_common::{HashKeyRange, SequenceNumber};

    use super::*;

    fn shard(id: &str, start: u128, end: u128, open: bool) -> Shard {
        Shard {
            id: ShardId::new(id).unwrap(),
            parent: None,
            adjacent_parent: None,
            hash_range: HashKeyRange::new(HashKey(start), HashKey(end)).unwrap(),
            starting_sequence: SequenceNumber::new("1").unwrap(),
            ending_sequence: (!open).then(|| SequenceNumber::new("2").unwrap()),
        }
    }

    #[test]
    fn the_widest_open_shard_is_split_in_its_middle() {
        let shards = [
            shard("closed", 0, 999, false),
            shard("a", 0, 99, true),
            shard("b", 100, 399, true),
            shard("c", 400, 999, true),
            shard("d", 1000, 1599, true),
        ];
        assert_eq!(plan_split(&shards), Some((ShardId::new("c").unwrap(), HashKey(700))));
        assert_eq!(plan_split(&[shard("one-key", 5, 5, true)]), None);
        let max = shard("all", 0, u128::MAX, true);
        assert_eq!(plan_split(&[max]).unwrap().1, HashKey(u128::MAX / 2 + 1));
    }

    #[test]
    fn the_narrowest_adjacent_pair_is_merged() {
        let shards = [
            shard("a", 0, 99, true),
            shard("b", 100, 199, true),
            shard("gone", 200, 299, false),
            shard("c", 300, 349, true),
            shard("d", 350, 399, true),
            shard("e", 400, 1000, true),
        ];
        // b and c are not adjacent (the closed shard's range lies between them).
        assert_eq!(
            plan_merge(&shards),
            Some((ShardId::new("c").unwrap(), ShardId::new("d").unwrap()))
        );
        assert_eq!(plan_merge(&[shard("a", 0, 9, true), shard("b", 11, 20, true)]), None);
        assert_eq!(plan_merge(&[shard("a", 0, u128::MAX, true)]), None);
    }
}
