//! The lease taker's policy: which leases this worker should take in one taker cycle.
//!
//! This module owns two pure pieces, both free of I/O and clock reads (`now` is passed in):
//! - [`LeaseObservations`]: this worker's memory of the lease table between scans, from which
//!   it decides which leases have expired.
//! - [`plan`]: given the current scan, what to take (unowned and expired leases) and, failing
//!   that, what to steal to balance the load, as a [`TakePlan`].
//!
//! The async lease coordinator lists the table, feeds the scan to
//! [`LeaseObservations::observe`], calls [`plan`] and performs the takes.
//!
//! Invariants:
//! - Expiry is judged by this worker's own clock only: a lease is expired when its counter
//!   has not changed for longer than the lease duration since this worker saw it change.
//!   Clocks of different hosts are never compared (KCL `DynamoDBLeaseTaker`, which does the
//!   same with `lastCounterIncrementNanos`).
//! - Each worker's target is its fair share: leases / workers, rounded down, plus one for as
//!   many of the most loaded workers as the division leaves over, capped (so ceil(leases /
//!   workers) at most, and the targets add up to the number of leases).
//! - A plan never contains a lease this worker holds, never brings this worker above its
//!   target except for very old leases, which are bounded by
//!   [`TakerConfig::max_leases_per_worker`], and steals only when nothing is available.
//! - A steal is only ever from a most loaded worker, and only while it holds more than its
//!   own target, at most the excess: a worker at or below its target is never stolen from.
//!   Since the extra leases go to those who hold the most, the victim always holds at least
//!   two more than the stealer: each steal narrows the spread, and no lease goes back and
//!   forth. Unlike a single ceil(leases / workers) target for everyone, under which 4 leases
//!   on 3 workers stay 2/2/0, it ends 2/1/1 with nobody idle.
//! - Plans are deterministic: the same inputs give the same plan.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use kinesis_common::ShardId;

use crate::lease::{Lease, WorkerId};

/// How the taker judges expiry and balances leases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TakerConfig {
    /// How long a lease's counter may stay unchanged before other workers consider it expired
    /// (the KCL's `failoverTimeMillis`, 10 s by default).
    pub(crate) lease_duration: Duration,
    /// The most leases one worker holds; the target is capped at this (the KCL's
    /// `maxLeasesForWorker`, unlimited by default).
    pub(crate) max_leases_per_worker: usize,
    /// The most leases stolen in one taker cycle (the KCL's `maxLeasesToStealAtOneTime`).
    ///
    /// The default is 2, not the KCL's 1: with 1, three workers starting beside one that holds
    /// all 8 leases need three cycles to balance; with 2 they balance in two (see the test
    /// `steal_cap_of_two_balances_three_workers_and_eight_leases_in_two_cycles`). Steals never
    /// exceed the victim's excess over the target, so a larger cap cannot cause churn.
    pub(crate) max_steal_per_cycle: usize,
}

impl Default for TakerConfig {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(10),
            max_leases_per_worker: usize::MAX,
            max_steal_per_cycle: 2,
        }
    }
}

impl TakerConfig {
    /// How long an owned lease must stay unrenewed to count as very old: three lease durations,
    /// as the KCL's priority lease assignment uses (`DynamoDBLeaseTaker`,
    /// `enablePriorityLeaseAssignment`). Its owner is almost certainly gone.
    pub(crate) fn very_old_after(&self) -> Duration {
        self.lease_duration.saturating_mul(3)
    }
}

/// What this worker last saw of one lease.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    counter: u64,
    /// The local time the counter was last seen to change (or the lease first seen).
    changed_at: Instant,
}

/// This worker's memory of the lease table: per lease, the counter last seen and when (by
/// this worker's clock) it last changed.
///
/// Feed it every scan with [`observe`](Self::observe) before calling [`plan`].
#[derive(Debug, Clone, Default)]
pub(crate) struct LeaseObservations {
    seen: HashMap<ShardId, Seen>,
}

impl LeaseObservations {
    /// An empty memory, as at worker start.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Records a scan of the whole table taken at `now`.
    ///
    /// A lease seen for the first time counts as just renewed: if it is owned, its owner gets a
    /// full lease duration before this worker may take it, since this worker cannot know how
    /// long it has been unrenewed (KCL `DynamoDBLeaseTaker.updateAllLeases`). Unowned leases
    /// are available whatever their age. Leases no longer in the table are forgotten, so a
    /// lease deleted and created again starts afresh.
    pub(crate) fn observe(&mut self, leases: &[Lease], now: Instant) {
        let mut next = HashMap::with_capacity(leases.len());
        for lease in leases {
            let seen = match self.seen.remove(&lease.key) {
                Some(old) if old.counter == lease.counter => old,
                _ => Seen { counter: lease.counter, changed_at: now },
            };
            next.insert(lease.key.clone(), seen);
        }
        self.seen = next;
    }

    /// How long `lease`'s counter has stayed unchanged, as of `now`. A lease not observed yet,
    /// or observed with another counter, counts as just changed (not expired).
    fn unchanged_for(&self, lease: &Lease, now: Instant) -> Duration {
        match self.seen.get(&lease.key) {
            Some(seen) if seen.counter == lease.counter => {
                now.saturating_duration_since(seen.changed_at)
            }
            _ => Duration::ZERO,
        }
    }

    /// Whether `lease` is owned but unrenewed for longer than the lease duration.
    pub(crate) fn is_expired(&self, lease: &Lease, now: Instant, config: &TakerConfig) -> bool {
        lease.owner.is_some() && self.unchanged_for(lease, now) > config.lease_duration
    }
}

/// Why a lease is in a [`TakePlan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TakeKind {
    /// No worker holds it.
    Unowned,
    /// Its owner has not renewed it for longer than the lease duration.
    Expired,
    /// Its owner has not renewed it for three lease durations: taken even above the target.
    VeryOld,
    /// Taken from a most loaded worker, which holds more than its own target.
    Steal,
}

/// One lease to take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PlannedTake {
    /// The lease as scanned; the take is conditional on its counter.
    pub(crate) lease: Lease,
    /// Why it is taken.
    pub(crate) kind: TakeKind,
}

/// The outcome of one taker cycle's planning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TakePlan {
    /// How many leases this worker should hold: its fair share, ceil(leases / workers) or one
    /// less, capped at [`TakerConfig::max_leases_per_worker`].
    pub(crate) target: usize,
    /// The leases to take: available ones first, then steals (there are steals only when
    /// nothing was available).
    pub(crate) takes: Vec<PlannedTake>,
}

/// Each worker's share of `total` leases: `total / workers`, plus one for the `total %
/// workers` workers that hold the most now (ties broken by the lowest id), each capped at
/// `cap`. Uncapped, the shares add up to `total` and differ by one at most, so everyone's
/// target is ceil(total / workers) or one less.
///
/// Giving the extra leases to the workers that already hold the most is what keeps leases
/// still: a balanced table (every worker at its share) plans no move. Every worker computes
/// the same shares from the same scan.
fn fair_shares<'w>(
    load: &BTreeMap<&'w WorkerId, Vec<&Lease>>,
    total: usize,
    cap: usize,
) -> HashMap<&'w WorkerId, usize> {
    let workers = load.len().max(1);
    let (base, extra) = (total / workers, total % workers);
    let mut ranked: Vec<(&WorkerId, usize)> =
        load.iter().map(|(worker, held)| (*worker, held.len())).collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    ranked
        .into_iter()
        .enumerate()
        .map(|(rank, (worker, _))| (worker, (base + usize::from(rank < extra)).min(cap)))
        .collect()
}

/// Plans which leases `me` takes, given the scan `leases` taken at `now`, already fed to
/// `observations`.
///
/// The rules follow the KCL 2.x taker (`DynamoDBLeaseTaker.computeLeasesToTake`):
/// 1. Workers are the distinct owners of unexpired leases, plus `me`; each one's target is
///    its fair share (see `fair_shares`): ceil(leases / workers) for the most loaded workers
///    the division leaves room for, one less for the others, capped at
///    `max_leases_per_worker`.
/// 2. Very old leases (owned, unrenewed for three lease durations) are taken first, up to the
///    cap even past the target. Unlike the KCL, which counts a never-renewed unowned lease as
///    very old, unowned leases are not: they count against the target, so new leases (after a
///    reshard) are spread by the target rather than taken by whichever worker scans first.
/// 3. Other unowned and expired leases are taken while below the target.
/// 4. Only when no lease is available and `me` is below its target: steal from the worker
///    furthest above its own target (always a most loaded one), at most its excess, what
///    `me` needs and `max_steal_per_cycle`. The victim's cheapest leases go first: children still
///    waiting for a parent in the table, then leases at their initial position, then the
///    rest (moving a lease mid-shard makes the new owner reread what was not checkpointed).
///
/// Choices among equals are deterministic but differ between workers (ordered by a hash of
/// the worker id and the lease key), so workers planning at once from the same scan rarely
/// go for the same lease.
pub(crate) fn plan(
    observations: &LeaseObservations,
    leases: &[Lease],
    me: &WorkerId,
    now: Instant,
    config: &TakerConfig,
) -> TakePlan {
    // Load per worker, counting only unexpired leases: an expired lease's owner may be gone,
    // and counting it would inflate the worker count and lower everyone's target.
    let mut load: BTreeMap<&WorkerId, Vec<&Lease>> = BTreeMap::new();
    load.insert(me, Vec::new());
    let mut available = Vec::new();
    for lease in leases {
        match &lease.owner {
            Some(owner) if owner == me => {
                if !observations.is_expired(lease, now, config) {
                    load.entry(owner).or_default().push(lease);
                }
            }
            Some(owner) => {
                if observations.is_expired(lease, now, config) {
                    available.push(lease);
                } else {
                    load.entry(owner).or_default().push(lease);
                }
            }
            None => available.push(lease),
        }
    }
    let targets = fair_shares(&load, leases.len(), config.max_leases_per_worker);
    let target = targets[me];
    let mut held = load[me].len();
    let mut takes = Vec::new();

    let order = |lease: &&Lease| (spread(me, &lease.key), lease.key.clone());
    available.sort_by_cached_key(order);
    let very_old_after = config.very_old_after();
    let (very_old, others): (Vec<&Lease>, Vec<&Lease>) = available.iter().partition(|lease| {
        lease.owner.is_some() && observations.unchanged_for(lease, now) > very_old_after
    });
    for lease in very_old {
        if held >= config.max_leases_per_worker {
            break;
        }
        takes.push(PlannedTake { lease: lease.clone(), kind: TakeKind::VeryOld });
        held += 1;
    }
    for lease in others {
        if held >= target {
            break;
        }
        let kind = if lease.owner.is_some() { TakeKind::Expired } else { TakeKind::Unowned };
        takes.push(PlannedTake { lease: lease.clone(), kind });
        held += 1;
    }

    if available.is_empty() && held < target {
        // The other worker furthest above its own target (hysteresis: a worker at or below
        // its target keeps its leases); among equals the most loaded, then the lowest id, for
        // determinism. Shares differ by one at most, so it is always a most loaded worker.
        let victim = load
            .iter()
            .filter(|(owner, _)| **owner != me)
            .map(|(owner, held)| (*owner, held, held.len().saturating_sub(targets[owner])))
            .filter(|(_, _, excess)| *excess > 0)
            .max_by(|a, b| (a.2, a.1.len()).cmp(&(b.2, b.1.len())).then_with(|| b.0.cmp(a.0)));
        if let Some((_, victim_leases, excess)) = victim {
            let count = excess.min(target - held).min(config.max_steal_per_cycle);
            // Cheapest to move first: a child still waiting for a parent has read nothing, a
            // lease at its initial position has read nothing yet; moving a lease in the middle
            // of its shard makes the new owner read again what was not checkpointed.
            let in_table: HashSet<&ShardId> = leases.iter().map(|l| &l.key).collect();
            let cost = |lease: &Lease| {
                if lease.parent_shard_ids.iter().any(|p| in_table.contains(p)) {
                    0
                } else if lease.checkpoint.is_sentinel() {
                    1
                } else {
                    2
                }
            };
            let mut candidates = victim_leases.clone();
            candidates.sort_by_cached_key(|lease| (cost(lease), order(lease)));
            for lease in candidates.into_iter().take(count) {
                takes.push(PlannedTake { lease: lease.clone(), kind: TakeKind::Steal });
            }
        }
    }
    TakePlan { target, takes }
}

/// A stable per-worker order of lease keys (FNV-1a of the worker id and the key), so that
/// workers choosing among equal leases tend to choose different ones.
fn spread(me: &WorkerId, key: &ShardId) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in me.as_str().bytes().chain([0]).chain(key.as_str().bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;
    use kinesis_common::ExtendedSequenceNumber;
    use proptest::prelude::*;

    fn key(n: usize) -> ShardId {
        ShardId::new(format!("shardId-{n:012}")).unwrap()
    }

    fn worker(n: usize) -> WorkerId {
        WorkerId::new(format!("worker-{n}"))
    }

    fn lease(n: usize, owner: Option<usize>, counter: u64) -> Lease {
        let mut lease = Lease::new(key(n), ExtendedSequenceNumber::TrimHorizon);
        lease.owner = owner.map(worker);
        lease.counter = counter;
        lease
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn keys(plan: &TakePlan) -> Vec<ShardId> {
        plan.takes.iter().map(|t| t.lease.key.clone()).collect()
    }

    fn kinds(plan: &TakePlan) -> Vec<TakeKind> {
        plan.takes.iter().map(|t| t.kind).collect()
    }

    /// Observes `leases` once at `t0` and plans for `me` at `t0 + after`.
    fn plan_after(leases: &[Lease], me: usize, after: Duration, config: &TakerConfig) -> TakePlan {
        let t0 = Instant::now();
        let mut seen = LeaseObservations::new();
        seen.observe(leases, t0);
        plan(&seen, leases, &worker(me), t0 + after, config)
    }

    #[test]
    fn owned_lease_seen_for_the_first_time_counts_as_just_renewed() {
        let config = TakerConfig::default();
        let leases = [lease(0, Some(1), 5)];
        let t0 = Instant::now();
        let mut seen = LeaseObservations::new();
        seen.observe(&leases, t0);
        assert!(!seen.is_expired(&leases[0], t0 + secs(10), &config));
        assert!(seen.is_expired(&leases[0], t0 + secs(11), &config));
    }

    #[test]
    fn unowned_lease_is_available_at_once() {
        let leases = [lease(0, None, 0)];
        let plan = plan_after(&leases, 1, Duration::ZERO, &TakerConfig::default());
        assert_eq!(keys(&plan), [key(0)]);
        assert_eq!(kinds(&plan), [TakeKind::Unowned]);
    }

    #[test]
    fn counter_change_restarts_the_expiry_clock() {
        let config = TakerConfig::default();
        let t0 = Instant::now();
        let mut seen = LeaseObservations::new();
        seen.observe(&[lease(0, Some(1), 5)], t0);
        let renewed = [lease(0, Some(1), 6)];
        seen.observe(&renewed, t0 + secs(8));
        assert!(!seen.is_expired(&renewed[0], t0 + secs(17), &config));
        assert!(seen.is_expired(&renewed[0], t0 + secs(19), &config));
        // Seeing the same counter again does not restart it.
        seen.observe(&renewed, t0 + secs(15));
        assert!(seen.is_expired(&renewed[0], t0 + secs(19), &config));
    }

    #[test]
    fn lease_gone_from_the_table_is_forgotten() {
        let config = TakerConfig::default();
        let t0 = Instant::now();
        let mut seen = LeaseObservations::new();
        let old = [lease(0, Some(1), 5)];
        seen.observe(&old, t0);
        seen.observe(&[], t0 + secs(5));
        // Recreated with the same counter: first seen again, so not expired yet.
        seen.observe(&old, t0 + secs(20));
        assert!(!seen.is_expired(&old[0], t0 + secs(25), &config));
    }

    #[test]
    fn expired_lease_is_taken() {
        let leases = [lease(0, Some(1), 5)];
        let plan = plan_after(&leases, 2, secs(11), &TakerConfig::default());
        assert_eq!(keys(&plan), [key(0)]);
        assert_eq!(kinds(&plan), [TakeKind::Expired]);
    }

    #[test]
    fn expired_owner_does_not_count_as_a_worker() {
        // Worker 1's two leases expired: worker 2 is alone, so its target is all 4 leases.
        let leases = [
            lease(0, Some(1), 1),
            lease(1, Some(1), 1),
            lease(2, Some(2), 1),
            lease(3, Some(2), 1),
        ];
        let t0 = Instant::now();
        let mut seen = LeaseObservations::new();
        seen.observe(&leases, t0);
        let mut renewed = leases.clone();
        renewed[2].counter = 2;
        renewed[3].counter = 2;
        seen.observe(&renewed, t0 + secs(8));
        let planned = plan(&seen, &renewed, &worker(2), t0 + secs(11), &TakerConfig::default());
        assert_eq!(planned.target, 4);
        assert_eq!(planned.takes.len(), 2);
    }

    #[test]
    fn takes_available_leases_only_up_to_the_target() {
        // 6 unowned leases, worker 1 holds 2 others: 2 workers, target 4.
        let mut leases: Vec<Lease> = (0..6).map(|n| lease(n, None, 0)).collect();
        leases.push(lease(6, Some(1), 1));
        leases.push(lease(7, Some(1), 1));
        let plan = plan_after(&leases, 2, Duration::ZERO, &TakerConfig::default());
        assert_eq!(plan.target, 4);
        assert_eq!(plan.takes.len(), 4);
        assert!(kinds(&plan).iter().all(|k| *k == TakeKind::Unowned));
    }

    #[test]
    fn very_old_leases_are_taken_past_the_target_up_to_the_cap() {
        // Worker 1 holds 4 leases, renewed; worker 3 died long ago holding 4.
        let config = TakerConfig { max_leases_per_worker: 6, ..TakerConfig::default() };
        let t0 = Instant::now();
        let mut leases: Vec<Lease> = (0..4).map(|n| lease(n, Some(1), 1)).collect();
        leases.extend((4..8).map(|n| lease(n, Some(3), 1)));
        let mut seen = LeaseObservations::new();
        seen.observe(&leases, t0);
        for lease in &mut leases[..4] {
            lease.counter = 2;
        }
        seen.observe(&leases, t0 + secs(30));
        let planned = plan(&seen, &leases, &worker(2), t0 + secs(31), &config);
        // Workers 1 and 2: target 4, but very old leases go up to the cap of 6... and there
        // are 4 of them.
        assert_eq!(planned.target, 4);
        assert_eq!(kinds(&planned), [TakeKind::VeryOld; 4]);
        let capped = TakerConfig { max_leases_per_worker: 3, ..config };
        let planned = plan(&seen, &leases, &worker(2), t0 + secs(31), &capped);
        assert_eq!(planned.takes.len(), 3);
    }

    #[test]
    fn long_unowned_leases_are_not_very_old_and_respect_the_target() {
        // 6 unowned leases seen a minute ago, worker 1 holds 2: target 4 for me.
        let mut leases: Vec<Lease> = (0..6).map(|n| lease(n, None, 0)).collect();
        leases.extend((6..8).map(|n| lease(n, Some(1), 1)));
        let now = Instant::now() + secs(100);
        let seen = observe_with_ages(&leases, &[60, 60, 60, 60, 60, 60, 0, 0], now);
        let planned = plan(&seen, &leases, &worker(2), now, &TakerConfig::default());
        assert_eq!(planned.target, 4);
        assert_eq!(kinds(&planned), [TakeKind::Unowned; 4]);
    }

    #[test]
    fn expired_but_not_very_old_leases_respect_the_target() {
        let t0 = Instant::now();
        let mut leases: Vec<Lease> = (0..4).map(|n| lease(n, Some(1), 1)).collect();
        leases.extend((4..8).map(|n| lease(n, Some(3), 1)));
        let mut seen = LeaseObservations::new();
        seen.observe(&leases, t0);
        for lease in &mut leases[..4] {
            lease.counter = 2;
        }
        seen.observe(&leases, t0 + secs(15));
        let planned = plan(&seen, &leases, &worker(2), t0 + secs(15), &TakerConfig::default());
        // Workers 1 and 2 (3 expired): target 4, so 4 of the 4 expired leases.
        assert_eq!(kinds(&planned), [TakeKind::Expired; 4]);
        let mut more = leases.clone();
        more.extend((8..10).map(|n| lease(n, Some(3), 1)));
        seen.observe(&more, t0);
        let planned = plan(&seen, &more, &worker(2), t0 + secs(15), &TakerConfig::default());
        assert_eq!(planned.target, 5);
        assert_eq!(planned.takes.len(), 5, "expired leases stop at the target");
    }

    #[test]
    fn steals_from_the_most_loaded_worker_above_target() {
        // Worker 1: 5, worker 3: 2, me (2): 0; shares of 7: 3 for worker 1, 2 for the others.
        let mut leases: Vec<Lease> = (0..5).map(|n| lease(n, Some(1), 1)).collect();
        leases.extend((5..7).map(|n| lease(n, Some(3), 1)));
        let plan = plan_after(&leases, 2, Duration::ZERO, &TakerConfig::default());
        assert_eq!(plan.target, 2);
        assert_eq!(kinds(&plan), [TakeKind::Steal; 2]);
        assert!(plan.takes.iter().all(|t| t.lease.is_owned_by(&worker(1))));
    }

    #[test]
    fn never_steals_from_a_worker_at_its_share() {
        // Workers 1 and 3 hold 3 each, me (2) holds 1. Shares of 7 on 3 workers: 3 for the
        // most loaded (worker 1, the lower id of the two), 2 for the others. Worker 1 is at its
        // share and keeps its leases; worker 3 is one above and gives one.
        let mut leases: Vec<Lease> = (0..3).map(|n| lease(n, Some(1), 1)).collect();
        leases.extend((3..6).map(|n| lease(n, Some(3), 1)));
        leases.push(lease(6, Some(2), 1));
        let plan = plan_after(&leases, 2, Duration::ZERO, &TakerConfig::default());
        assert_eq!(plan.target, 2);
        assert_eq!(kinds(&plan), [TakeKind::Steal]);
        assert!(plan.takes[0].lease.is_owned_by(&worker(3)));
        // Afterwards 3 / 2 / 2: everyone at its share, nobody plans anything.
        leases[3].owner = Some(worker(2));
        for me in [1, 2, 3] {
            let plan = plan_after(&leases, me, Duration::ZERO, &TakerConfig::default());
            assert!(plan.takes.is_empty(), "worker {me}: {plan:?}");
        }
    }

    #[test]
    fn an_idle_worker_steals_from_a_worker_above_its_share_in_the_idle_workers_view() {
        // Workers 0 and 1 hold 2 each; worker 2 holds nothing, so they do not count it and
        // each sees a share of 2. Worker 2 counts itself: shares 2, 1, 1, so worker 1 (the
        // higher id of the two most loaded) is above its share and gives one lease.
        let leases: Vec<Lease> = (0..4).map(|n| lease(n, Some(n / 2), 1)).collect();
        let plan = plan_after(&leases, 2, Duration::ZERO, &TakerConfig::default());
        assert_eq!(plan.target, 1);
        assert_eq!(kinds(&plan), [TakeKind::Steal]);
        assert!(plan.takes[0].lease.is_owned_by(&worker(1)));
        for me in [0, 1] {
            let plan = plan_after(&leases, me, Duration::ZERO, &TakerConfig::default());
            assert_eq!((plan.target, plan.takes.len()), (2, 0), "worker {me}");
        }
    }

    #[test]
    fn shares_give_the_remainder_to_the_most_loaded_and_add_up() {
        let leases: Vec<Lease> = (0..4).map(|n| lease(n, Some(n % 2), 1)).collect();
        let (a, b, c) = (worker(0), worker(1), worker(2));
        let mut load: BTreeMap<&WorkerId, Vec<&Lease>> = BTreeMap::new();
        load.insert(&c, Vec::new());
        for lease in &leases {
            load.entry(lease.owner.as_ref().unwrap()).or_default().push(lease);
        }
        // 2 / 2 / 0: one extra lease, to the lower id of the two most loaded.
        let shares = fair_shares(&load, 4, usize::MAX);
        assert_eq!((shares[&a], shares[&b], shares[&c]), (2, 1, 1));
        // Capped: nobody's share passes the cap.
        let shares = fair_shares(&load, 4, 1);
        assert_eq!((shares[&a], shares[&b], shares[&c]), (1, 1, 1));
        // 9 leases on 3 workers: 3 each, whoever holds what.
        let shares = fair_shares(&load, 9, usize::MAX);
        assert!(shares.values().all(|s| *s == 3));
    }

    #[test]
    fn steals_waiting_children_before_shards_being_read() {
        // Worker 1 reads parents 0 and 1 (past their start) and holds their children 2 and 3,
        // which wait for them; me (2) needs two: the children move, the parents stay.
        let mut leases: Vec<Lease> = (0..4).map(|n| lease(n, Some(1), 1)).collect();
        for parent in &mut leases[..2] {
            parent.checkpoint = ExtendedSequenceNumber::new(
                kinesis_common::SequenceNumber::new("4960").unwrap(),
                0,
            );
        }
        leases[2].parent_shard_ids = vec![key(0)];
        leases[3].parent_shard_ids = vec![key(1)];
        let plan = plan_after(&leases, 2, Duration::ZERO, &TakerConfig::default());
        assert_eq!(kinds(&plan), [TakeKind::Steal; 2]);
        let mut stolen = keys(&plan);
        stolen.sort();
        assert_eq!(stolen, [key(2), key(3)]);
    }

    #[test]
    fn steals_only_when_nothing_is_available() {
        let mut leases: Vec<Lease> = (0..6).map(|n| lease(n, Some(1), 1)).collect();
        leases.push(lease(6, None, 0));
        let plan = plan_after(&leases, 2, Duration::ZERO, &TakerConfig::default());
        assert_eq!(kinds(&plan), [TakeKind::Unowned]);
    }

    #[test]
    fn steals_at_most_the_per_cycle_cap() {
        let leases: Vec<Lease> = (0..10).map(|n| lease(n, Some(1), 1)).collect();
        let one = TakerConfig { max_steal_per_cycle: 1, ..TakerConfig::default() };
        assert_eq!(plan_after(&leases, 2, Duration::ZERO, &one).takes.len(), 1);
        let many = TakerConfig { max_steal_per_cycle: 100, ..TakerConfig::default() };
        assert_eq!(plan_after(&leases, 2, Duration::ZERO, &many).takes.len(), 5);
    }

    #[test]
    fn target_is_capped_at_max_leases_per_worker() {
        let leases: Vec<Lease> = (0..10).map(|n| lease(n, None, 0)).collect();
        let config = TakerConfig { max_leases_per_worker: 3, ..TakerConfig::default() };
        let plan = plan_after(&leases, 2, Duration::ZERO, &config);
        assert_eq!(plan.target, 3);
        assert_eq!(plan.takes.len(), 3);
    }

    #[test]
    fn plans_are_deterministic_and_differ_between_workers() {
        let leases: Vec<Lease> = (0..20).map(|n| lease(n, Some(9), 1)).collect();
        let config = TakerConfig::default();
        let a = plan_after(&leases, 1, Duration::ZERO, &config);
        assert_eq!(a, plan_after(&leases, 1, Duration::ZERO, &config));
        let b = plan_after(&leases, 2, Duration::ZERO, &config);
        assert_ne!(keys(&a), keys(&b), "two thieves pick different victims' leases");
    }

    /// A table of `n` leases shared by simulated workers, one taker cycle per worker per round.
    struct Sim {
        leases: Vec<Lease>,
        workers: Vec<(WorkerId, LeaseObservations)>,
        now: Instant,
        config: TakerConfig,
    }

    /// How the workers of one simulated round see the table.
    #[derive(Clone, Copy)]
    enum Round {
        /// Each worker scans, plans and takes before the next one scans.
        OneAfterAnother,
        /// Every worker plans from the same scan; takes are applied in turn and a take whose
        /// counter is stale fails, as the store's conditional write does.
        AllAtOnce,
    }

    impl Sim {
        fn new(leases: Vec<Lease>, workers: usize, config: TakerConfig) -> Self {
            let workers = (0..workers).map(|n| (worker(n), LeaseObservations::new())).collect();
            Self { leases, workers, now: Instant::now(), config }
        }

        fn take(&mut self, planned: &Lease, me: &WorkerId) {
            let current = self.leases.iter_mut().find(|l| l.key == planned.key).unwrap();
            if current.counter == planned.counter {
                current.owner = Some(me.clone());
                current.counter += 1;
            }
        }

        fn round(&mut self, round: Round) {
            self.now += Duration::from_secs(1);
            // Every simulated worker renews what it holds; other owners are dead.
            for lease in &mut self.leases {
                if self.workers.iter().any(|(w, _)| lease.is_owned_by(w)) {
                    lease.counter += 1;
                }
            }
            let scan = self.leases.clone();
            let mut workers = std::mem::take(&mut self.workers);
            for (me, seen) in &mut workers {
                let scan = match round {
                    Round::OneAfterAnother => self.leases.clone(),
                    Round::AllAtOnce => scan.clone(),
                };
                seen.observe(&scan, self.now);
                let planned = plan(seen, &scan, me, self.now, &self.config);
                for take in &planned.takes {
                    assert!(!take.lease.is_owned_by(me), "planned to take its own lease");
                    self.take(&take.lease, me);
                }
            }
            self.workers = workers;
        }

        fn counts(&self) -> Vec<usize> {
            self.workers
                .iter()
                .map(|(me, _)| self.leases.iter().filter(|l| l.is_owned_by(me)).count())
                .collect()
        }

        /// Every lease is owned, no worker would take anything, and each worker's target
        /// covers every worker's load: the fixed point the taker's rules lead to.
        fn assert_stable(&self) -> Result<(), TestCaseError> {
            prop_assert!(
                self.leases.iter().all(|l| self.workers.iter().any(|(w, _)| l.is_owned_by(w)))
            );
            let counts = self.counts();
            for ((me, seen), count) in self.workers.iter().zip(&counts) {
                let planned = plan(seen, &self.leases, me, self.now, &self.config);
                prop_assert!(planned.takes.is_empty(), "{me} would take {:?}", planned.takes);
                prop_assert!(*count <= planned.target, "{counts:?}");
            }
            // Balanced: nobody idle while another holds two more.
            let (min, max) = (counts.iter().min(), counts.iter().max());
            prop_assert!(max.zip(min).is_none_or(|(max, min)| max - min <= 1), "{counts:?}");
            Ok(())
        }

        fn balanced(&self) -> bool {
            let counts = self.counts();
            let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            self.leases.iter().all(|l| l.owner.is_some()) && max - min <= 1
        }
    }

    #[test]
    fn four_leases_reach_every_one_of_four_workers() {
        // A worker holding nothing is not counted by others (the KCL counts lease owners too):
        // the first idle worker sees a target of ceil(4 / 3) = 2 that nobody exceeds, and
        // takes one lease from a worker at the target; then the last sees 4 workers.
        let mut sim = Sim::new(one_holds_all(4), 4, TakerConfig::default());
        for _ in 0..5 {
            sim.round(Round::OneAfterAnother);
        }
        assert_eq!(sim.counts(), [1, 1, 1, 1]);
    }

    #[test]
    fn four_leases_on_three_workers_leave_nobody_idle_and_then_stay() {
        // The second worker's first cycle sees only two workers (target 2) and takes 2; the
        // third sees target 2, nobody above it, and steals one from a worker at the target,
        // since it needs two. Nobody one below the target steals back: it stays 1 / 2 / 1.
        for round in [Round::OneAfterAnother, Round::AllAtOnce] {
            let mut sim = Sim::new(one_holds_all(4), 3, TakerConfig::default());
            for _ in 0..3 {
                sim.round(round);
            }
            let settled = sim.counts();
            assert!(sim.balanced(), "{settled:?}");
            for _ in 0..20 {
                sim.round(round);
            }
            assert_eq!(sim.counts(), settled, "a lease moved after balancing");
        }
    }

    fn one_holds_all(n: usize) -> Vec<Lease> {
        (0..n).map(|k| lease(k, Some(0), 1)).collect()
    }

    #[test]
    fn steal_cap_of_two_balances_three_workers_and_eight_leases_in_two_cycles() {
        for round in [Round::OneAfterAnother, Round::AllAtOnce] {
            let mut sim = Sim::new(one_holds_all(8), 3, TakerConfig::default());
            assert_eq!(sim.config.max_steal_per_cycle, 2, "the default achieves it");
            sim.round(round);
            sim.round(round);
            assert!(sim.balanced(), "{:?}", sim.counts());
        }
    }

    #[test]
    fn steal_cap_of_one_needs_a_third_cycle() {
        let config = TakerConfig { max_steal_per_cycle: 1, ..TakerConfig::default() };
        let mut sim = Sim::new(one_holds_all(8), 3, config);
        sim.round(Round::OneAfterAnother);
        sim.round(Round::OneAfterAnother);
        assert!(!sim.balanced(), "{:?}", sim.counts());
        sim.round(Round::OneAfterAnother);
        assert!(sim.balanced(), "{:?}", sim.counts());
    }

    #[test]
    fn dead_workers_leases_move_to_the_living_after_expiry() {
        let mut sim = Sim::new(one_holds_all(6), 3, TakerConfig::default());
        for _ in 0..3 {
            sim.round(Round::OneAfterAnother);
        }
        assert!(sim.balanced());
        // Worker 0 dies: it no longer renews nor plans.
        let (dead, _) = sim.workers.remove(0);
        let mut rounds = 0;
        while sim.leases.iter().any(|l| l.is_owned_by(&dead)) || !sim.balanced() {
            sim.now += Duration::from_secs(1);
            for lease in &mut sim.leases {
                if lease.owner.is_some() && !lease.is_owned_by(&dead) {
                    lease.counter += 1;
                }
            }
            let mut workers = std::mem::take(&mut sim.workers);
            for (me, seen) in &mut workers {
                let scan = sim.leases.clone();
                seen.observe(&scan, sim.now);
                for take in plan(seen, &scan, me, sim.now, &sim.config).takes {
                    sim.take(&take.lease, me);
                }
            }
            sim.workers = workers;
            rounds += 1;
            assert!(rounds < 20, "{:?}", sim.counts());
        }
        assert!(rounds > 10, "nothing moves before the lease duration: {rounds}");
    }

    fn arb_table() -> impl Strategy<Value = (Vec<Lease>, Vec<u64>)> {
        // Up to 24 leases, each unowned or owned by one of 5 workers, each with an age in
        // seconds since its counter last changed. Mostly owned and unexpired (a lease expires
        // after 10 s), so that steals, which need a table with nothing available, are planned
        // often.
        let owner = prop::option::weighted(0.9, 0..5usize);
        let age = prop_oneof![4 => 0..10u64, 1 => 10..40u64];
        prop::collection::vec((owner, age), 0..24).prop_map(|rows| {
            let leases = rows.iter().enumerate().map(|(n, (o, _))| lease(n, *o, 1)).collect();
            (leases, rows.iter().map(|(_, age)| *age).collect())
        })
    }

    /// Observations in which each lease's counter last changed `ages[i]` seconds before `now`.
    fn observe_with_ages(leases: &[Lease], ages: &[u64], now: Instant) -> LeaseObservations {
        let seen = leases
            .iter()
            .zip(ages)
            .map(|(l, age)| {
                (l.key.clone(), Seen { counter: l.counter, changed_at: now - secs(*age) })
            })
            .collect();
        LeaseObservations { seen }
    }

    proptest! {
        #[test]
        fn plans_respect_target_cap_hysteresis_and_ownership(
            (leases, ages) in arb_table(),
            me in 0..6usize,
            cap in 1..30usize,
            steal in 1..5usize,
        ) {
            let config = TakerConfig {
                max_leases_per_worker: cap,
                max_steal_per_cycle: steal,
                ..TakerConfig::default()
            };
            let now = Instant::now() + secs(100);
            let seen = observe_with_ages(&leases, &ages, now);
            let me = worker(me);
            let planned = plan(&seen, &leases, &me, now, &config);
            let mine = leases
                .iter()
                .filter(|l| l.is_owned_by(&me) && !seen.is_expired(l, now, &config))
                .count();
            let very_old = planned.takes.iter().filter(|t| t.kind == TakeKind::VeryOld).count();
            let total = mine + planned.takes.len();
            // Never beyond the target, except very old leases, which stop at the cap.
            prop_assert!(total <= planned.target.max(mine + very_old.min(cap)));
            prop_assert!(very_old == 0 || mine + very_old <= cap);
            prop_assert!(planned.target <= cap);
            // Never a lease already held, never one twice.
            for take in &planned.takes {
                prop_assert!(!take.lease.is_owned_by(&me));
            }
            let mut keys = keys(&planned);
            keys.dedup();
            prop_assert_eq!(keys.len(), planned.takes.len());
            // Steals only when nothing is available, from one worker above target.
            let steals: Vec<&PlannedTake> =
                planned.takes.iter().filter(|t| t.kind == TakeKind::Steal).collect();
            if !steals.is_empty() {
                prop_assert_eq!(steals.len(), planned.takes.len(), "available before steals");
                let victim = steals[0].lease.owner.clone().unwrap();
                prop_assert!(steals.iter().all(|t| t.lease.owner.as_ref() == Some(&victim)));
                let held = leases
                    .iter()
                    .filter(|l| l.is_owned_by(&victim) && !seen.is_expired(l, now, &config))
                    .count();
                // The victim's share as the stealer sees it: the owners of unexpired leases
                // and the stealer (who may hold nothing, so the victim does not count it).
                let mut load: BTreeMap<&WorkerId, Vec<&Lease>> = BTreeMap::new();
                load.insert(&me, Vec::new());
                for lease in leases.iter().filter(|l| !seen.is_expired(l, now, &config)) {
                    if let Some(owner) = &lease.owner {
                        load.entry(owner).or_default().push(lease);
                    }
                }
                let share = fair_shares(&load, leases.len(), cap)[&victim];
                prop_assert!(held > share, "stole from a worker at or below its share");
                prop_assert!(held - steals.len() >= share);
                // Shares differ by one at most, so the victim held at least two more.
                prop_assert!(held >= mine + 2, "victim {held}, stealer {mine}");
                prop_assert!(steals.len() <= steal);
                prop_assert!(leases.iter().all(|l| l.owner.is_some()));
            }
        }

        #[test]
        fn workers_reach_a_stable_state_with_every_lease_owned(
            (leases, _) in arb_table(),
            workers in 1..5usize,
            all_at_once in any::<bool>(),
        ) {
            // Owners beyond the simulated workers are dead: their leases must expire and move.
            let mut sim = Sim::new(leases, workers, TakerConfig::default());
            let round = if all_at_once { Round::AllAtOnce } else { Round::OneAfterAnother };
            for _ in 0..30 {
                sim.round(round);
            }
            sim.assert_stable()?;
        }

        #[test]
        fn workers_starting_beside_one_holder_balance_when_the_target_forces_it(
            n in 0..40usize,
            workers in 1..6usize,
        ) {
            let mut sim = Sim::new(one_holds_all(n), workers, TakerConfig::default());
            for _ in 0..n + 2 {
                sim.round(Round::OneAfterAnother);
            }
            sim.assert_stable()?;
            // Once every worker holds a lease, all see the same target and nobody is above
            // it, so the spread is at most 1 when n mod workers is 0 or workers - 1.
            let counts = sim.counts();
            if counts.iter().all(|c| *c > 0) && (n % workers == 0 || n % workers == workers - 1) {
                prop_assert!(sim.balanced(), "{:?}", counts);
            }
        }
    }
}
