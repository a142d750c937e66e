//! Shard sync planning: which leases to create for the stream's shards, and which to delete.
//!
//! This module owns two pure functions, free of I/O; the async shard sync lists the shards
//! and the leases, calls them, and performs the writes:
//! - [`plan_new_leases`]: leases for shards that have none, with their parents and hash range,
//!   starting where the [`InitialPosition`] and the shard's lineage say.
//! - [`plan_cleanup`]: finished leases whose children have started, and leases of shards that
//!   no longer exist.
//!
//! Invariants:
//! - No gap: a shard whose ancestor is or was consumed (has a lease, or a descendant has one)
//!   is read from its start, `TRIM_HORIZON`, never from `LATEST` (KCL `HierarchicalShardSyncer`
//!   and `docs/lease-lifecycle.md`).
//! - No rereading: a shard one of whose descendants has a lease gets no new lease, so the
//!   leases that [`plan_cleanup`] deleted are not created again.
//! - Parents first: new leases are returned so that each comes after its parents' leases. A
//!   shard consumer treats a missing parent lease as "parent done" (KCL
//!   `BlockOnParentShardTask`), so creating a child's lease before its parent's would let the
//!   child be read first.
//! - Idempotent: planning again with the planned leases added to the existing ones plans
//!   nothing.
//! - Cleanup never deletes the lease of a listed shard that has not reached `SHARD_END`.
//!
//! Lineage is followed through listed shards only: a parent past the stream's retention is no
//! longer listed, and its children are roots.

use std::collections::{HashMap, HashSet};

use kinesis_common::{ExtendedSequenceNumber, Shard, ShardId};

use crate::lease::Lease;

/// Where a consumer starts reading a stream it has no leases for yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InitialPosition {
    /// At the oldest record still in the stream, going through every ancestor shard.
    TrimHorizon,
    /// After the newest record: only the open shards are read.
    Latest,
    /// At a timestamp given elsewhere in the configuration, going through every ancestor
    /// shard as [`TrimHorizon`](Self::TrimHorizon) does.
    AtTimestamp,
}

impl InitialPosition {
    /// The checkpoint sentinel a root shard's new lease starts at.
    fn sentinel(self) -> ExtendedSequenceNumber {
        match self {
            Self::TrimHorizon => ExtendedSequenceNumber::TrimHorizon,
            Self::Latest => ExtendedSequenceNumber::Latest,
            Self::AtTimestamp => ExtendedSequenceNumber::AtTimestamp,
        }
    }
}

/// The parent-child links between listed shards.
struct Lineage<'a> {
    listed: HashMap<&'a ShardId, &'a Shard>,
    children: HashMap<&'a ShardId, Vec<&'a ShardId>>,
}

impl<'a> Lineage<'a> {
    fn new(shards: &'a [Shard]) -> Self {
        let listed: HashMap<&ShardId, &Shard> = shards.iter().map(|s| (&s.id, s)).collect();
        let mut children: HashMap<&ShardId, Vec<&ShardId>> = HashMap::new();
        for shard in shards {
            for parent in shard.parents().filter(|p| listed.contains_key(p)) {
                children.entry(parent).or_default().push(&shard.id);
            }
        }
        Self { listed, children }
    }

    /// The listed parents of `id`.
    fn parents(&self, id: &ShardId) -> Vec<&'a ShardId> {
        self.listed
            .get(id)
            .into_iter()
            .flat_map(|s| s.parents())
            .filter_map(|p| self.listed.get_key_value(p).map(|(k, _)| *k))
            .collect()
    }

    /// The listed children of `id`.
    fn children(&self, id: &ShardId) -> Vec<&'a ShardId> {
        self.children.get(id).cloned().unwrap_or_default()
    }

    /// Whether any shard reachable from `id` by `step` (not counting `id`) satisfies `hit`.
    fn reaches(
        &self,
        id: &ShardId,
        step: impl Fn(&ShardId) -> Vec<&'a ShardId>,
        hit: impl Fn(&ShardId) -> bool,
    ) -> bool {
        let mut visited: HashSet<&ShardId> = HashSet::new();
        let mut todo = step(id);
        while let Some(next) = todo.pop() {
            if !visited.insert(next) {
                continue;
            }
            if hit(next) {
                return true;
            }
            todo.extend(step(next));
        }
        false
    }
}

/// The leases to create for `shards` (a complete ListShards result) given the `existing`
/// leases, parents first. Create them in the order returned.
///
/// A shard that has a lease, or one of whose descendants has one, gets none. Otherwise:
/// - [`TrimHorizon`](InitialPosition::TrimHorizon) and
///   [`AtTimestamp`](InitialPosition::AtTimestamp): every shard gets a lease, from the oldest
///   ancestors on; roots start at the position's sentinel, shards with a listed parent at
///   `TRIM_HORIZON` (children always start at `TRIM_HORIZON` in the KCL,
///   `HierarchicalShardSyncer`, so that nothing between the parent's end and the position is
///   skipped).
/// - [`Latest`](InitialPosition::Latest): the minimal set. An open shard with no consumed
///   ancestor starts at `LATEST`; closed shards with no consumed ancestor get no lease, as
///   there is nothing new to read in them. A shard with a consumed ancestor starts at
///   `TRIM_HORIZON`, as its records follow ones that are being read.
///
/// Each lease carries all the shard's parent ids (two after a merge, including parents no
/// longer listed, which the KCL records too) and its hash range.
pub(crate) fn plan_new_leases(
    shards: &[Shard],
    existing: &[Lease],
    initial: InitialPosition,
) -> Vec<Lease> {
    let lineage = Lineage::new(shards);
    let leased: HashSet<&ShardId> = existing.iter().map(|l| &l.key).collect();
    let is_leased = |id: &ShardId| leased.contains(id);
    let mut planned = Vec::new();
    for shard in Shard::parents_first(shards) {
        if is_leased(&shard.id) || lineage.reaches(&shard.id, |id| lineage.children(id), is_leased)
        {
            continue;
        }
        let has_parent = !lineage.parents(&shard.id).is_empty();
        let checkpoint = match initial {
            InitialPosition::TrimHorizon | InitialPosition::AtTimestamp => {
                if has_parent {
                    ExtendedSequenceNumber::TrimHorizon
                } else {
                    initial.sentinel()
                }
            }
            InitialPosition::Latest => {
                if lineage.reaches(&shard.id, |id| lineage.parents(id), is_leased) {
                    ExtendedSequenceNumber::TrimHorizon
                } else if shard.is_open() {
                    ExtendedSequenceNumber::Latest
                } else {
                    continue;
                }
            }
        };
        let mut lease = Lease::new(shard.id.clone(), checkpoint);
        lease.parent_shard_ids = shard.parents().cloned().collect();
        lease.hash_range = Some(shard.hash_range);
        planned.push(lease);
    }
    planned
}

/// Whether a lease's shard has been read past its start: its checkpoint is no longer the
/// initial sentinel it was created with.
fn has_started(lease: &Lease) -> bool {
    !matches!(
        lease.checkpoint,
        ExtendedSequenceNumber::TrimHorizon
            | ExtendedSequenceNumber::AtTimestamp
            | ExtendedSequenceNumber::Latest
    )
}

/// The leases to delete, given `shards` (a complete ListShards result, listed after `leases`
/// were read) and every lease.
///
/// The rules follow the KCL's `LeaseCleanupManager`:
/// - A lease at `SHARD_END` is deleted once its parents' leases are gone and its shard has
///   children, each with a lease that has started (its checkpoint is past the initial
///   sentinel). Until then a child may still be waiting on it, and deleting it early would
///   let a restarted sync recreate it. Children are the listed shards naming it as parent and
///   the lease's own `childShardIds`.
/// - A lease of a shard that is not listed is garbage (the shard went past the stream's
///   retention), unless one of its parents is listed: then the lease belongs to a shard newer
///   than the listing, created from a parent's child shards at its end.
///
/// A lease whose shard is listed and has not reached `SHARD_END` is never deleted.
pub(crate) fn plan_cleanup(shards: &[Shard], leases: &[Lease]) -> Vec<ShardId> {
    let lineage = Lineage::new(shards);
    let by_key: HashMap<&ShardId, &Lease> = leases.iter().map(|l| (&l.key, l)).collect();
    let mut doomed = Vec::new();
    for lease in leases {
        let Some(shard) = lineage.listed.get(&lease.key) else {
            let newer_than_listing =
                lease.parent_shard_ids.iter().any(|p| lineage.listed.contains_key(p));
            if !newer_than_listing {
                doomed.push(lease.key.clone());
            }
            continue;
        };
        if lease.checkpoint != ExtendedSequenceNumber::ShardEnd {
            continue;
        }
        let parent_leased =
            lease.parent_shard_ids.iter().chain(shard.parents()).any(|p| by_key.contains_key(p));
        if parent_leased {
            continue;
        }
        let mut children: Vec<&ShardId> = lineage.children(&lease.key);
        children.extend(&lease.child_shard_ids);
        let children_started = !children.is_empty()
            && children.iter().all(|c| by_key.get(c).is_some_and(|child| has_started(child)));
        if children_started {
            doomed.push(lease.key.clone());
        }
    }
    doomed
}

#[cfg(test)]
mod tests {
    use super::*;
    use kinesis_common::{HashKey, HashKeyRange, SequenceNumber};
    use proptest::prelude::*;

    fn id(n: usize) -> ShardId {
        ShardId::new(format!("shardId-{n:012}")).unwrap()
    }

    fn range(n: usize) -> HashKeyRange {
        // Distinct per shard, so copying the right one is checked.
        HashKeyRange::new(HashKey(n as u128), HashKey::MAX).unwrap()
    }

    fn shard(n: usize, parents: &[usize], open: bool) -> Shard {
        Shard {
            id: id(n),
            parent: parents.first().map(|p| id(*p)),
            adjacent_parent: parents.get(1).map(|p| id(*p)),
            hash_range: range(n),
            starting_sequence: SequenceNumber::new("1").unwrap(),
            ending_sequence: (!open).then(|| SequenceNumber::new("9").unwrap()),
        }
    }

    fn at(n: usize, checkpoint: ExtendedSequenceNumber) -> Lease {
        Lease::new(id(n), checkpoint)
    }

    fn started() -> ExtendedSequenceNumber {
        ExtendedSequenceNumber::new(SequenceNumber::new("5").unwrap(), 0)
    }

    /// (shard number, checkpoint) of each planned lease, in order.
    fn summary(leases: &[Lease]) -> Vec<(usize, ExtendedSequenceNumber)> {
        leases
            .iter()
            .map(|l| (l.key.as_str()[8..].parse().unwrap(), l.checkpoint.clone()))
            .collect()
    }

    use ExtendedSequenceNumber::{AtTimestamp, Latest, ShardEnd, TrimHorizon};

    /// 0 split into 1 and 2.
    fn split() -> Vec<Shard> {
        vec![shard(0, &[], false), shard(1, &[0], true), shard(2, &[0], true)]
    }

    /// 0 and 1 merged into 2.
    fn merge() -> Vec<Shard> {
        vec![shard(0, &[], false), shard(1, &[], false), shard(2, &[0, 1], true)]
    }

    /// 0 split into 1 and 2; 1 split into 3 and 4; 2 and 3 merged into 5. Open: 4 and 5.
    fn deep() -> Vec<Shard> {
        vec![
            shard(0, &[], false),
            shard(1, &[0], false),
            shard(2, &[0], false),
            shard(3, &[1], false),
            shard(4, &[1], true),
            shard(5, &[2, 3], true),
        ]
    }

    #[test]
    fn trim_horizon_after_a_split_leases_every_shard_parent_first() {
        let planned = plan_new_leases(&split(), &[], InitialPosition::TrimHorizon);
        assert_eq!(summary(&planned), [(0, TrimHorizon), (1, TrimHorizon), (2, TrimHorizon)]);
        assert_eq!(planned[1].parent_shard_ids, [id(0)]);
        assert_eq!(planned[2].hash_range, Some(range(2)));
        assert!(planned[0].owner.is_none() && planned[0].counter == 0);
    }

    #[test]
    fn at_timestamp_starts_roots_at_the_timestamp_and_children_at_trim_horizon() {
        let planned = plan_new_leases(&split(), &[], InitialPosition::AtTimestamp);
        assert_eq!(summary(&planned), [(0, AtTimestamp), (1, TrimHorizon), (2, TrimHorizon)]);
        let planned = plan_new_leases(&merge(), &[], InitialPosition::AtTimestamp);
        assert_eq!(summary(&planned), [(0, AtTimestamp), (1, AtTimestamp), (2, TrimHorizon)]);
    }

    #[test]
    fn latest_after_a_split_leases_only_the_open_children() {
        let planned = plan_new_leases(&split(), &[], InitialPosition::Latest);
        assert_eq!(summary(&planned), [(1, Latest), (2, Latest)]);
        assert_eq!(planned[0].parent_shard_ids, [id(0)], "the parent id is still recorded");
    }

    #[test]
    fn merged_child_records_both_parents() {
        let planned = plan_new_leases(&merge(), &[], InitialPosition::TrimHorizon);
        assert_eq!(summary(&planned), [(0, TrimHorizon), (1, TrimHorizon), (2, TrimHorizon)]);
        assert_eq!(planned[2].parent_shard_ids, [id(0), id(1)]);
        let planned = plan_new_leases(&merge(), &[], InitialPosition::Latest);
        assert_eq!(summary(&planned), [(2, Latest)]);
        assert_eq!(planned[0].parent_shard_ids, [id(0), id(1)]);
    }

    #[test]
    fn deep_lineage_for_each_initial_position() {
        let all = plan_new_leases(&deep(), &[], InitialPosition::TrimHorizon);
        let keys: Vec<usize> = summary(&all).into_iter().map(|(n, _)| n).collect();
        assert_eq!(keys, [0, 1, 2, 3, 4, 5]);
        assert_eq!(all[0].checkpoint, TrimHorizon);
        let latest = plan_new_leases(&deep(), &[], InitialPosition::Latest);
        assert_eq!(summary(&latest), [(4, Latest), (5, Latest)]);
    }

    #[test]
    fn latest_reads_descendants_of_a_consumed_shard_from_their_start() {
        // Shard 1 is being consumed: 3, 4 and 5 (via 3) follow it and must not skip records;
        // 0 and 2 are not consumed and get nothing.
        let existing = [at(1, started())];
        let planned = plan_new_leases(&deep(), &existing, InitialPosition::Latest);
        assert_eq!(summary(&planned), [(3, TrimHorizon), (4, TrimHorizon), (5, TrimHorizon)]);
    }

    #[test]
    fn shard_whose_parent_is_past_retention_is_a_root() {
        // 0 is no longer listed: 1 and 2 are roots.
        let shards = &split()[1..];
        let planned = plan_new_leases(shards, &[], InitialPosition::AtTimestamp);
        assert_eq!(summary(&planned), [(1, AtTimestamp), (2, AtTimestamp)]);
        assert_eq!(planned[0].parent_shard_ids, [id(0)]);
        let planned = plan_new_leases(shards, &[], InitialPosition::Latest);
        assert_eq!(summary(&planned), [(1, Latest), (2, Latest)]);
    }

    #[test]
    fn cleaned_up_parent_is_not_created_again() {
        // 0 was finished and its lease deleted once 1 and 2 started.
        let existing = [at(1, started()), at(2, started())];
        for initial in [InitialPosition::TrimHorizon, InitialPosition::Latest] {
            assert!(plan_new_leases(&split(), &existing, initial).is_empty());
        }
        // Only one child has a lease: the other is created, the parent is not.
        let existing = [at(1, started())];
        let planned = plan_new_leases(&split(), &existing, InitialPosition::TrimHorizon);
        assert_eq!(summary(&planned), [(2, TrimHorizon)]);
    }

    #[test]
    fn planning_with_its_own_output_plans_nothing() {
        for initial in
            [InitialPosition::TrimHorizon, InitialPosition::Latest, InitialPosition::AtTimestamp]
        {
            for shards in [split(), merge(), deep()] {
                let planned = plan_new_leases(&shards, &[], initial);
                assert!(plan_new_leases(&shards, &planned, initial).is_empty());
            }
        }
    }

    #[test]
    fn cleanup_waits_for_every_child_to_start() {
        let mut leases = vec![at(0, ShardEnd), at(1, started()), at(2, TrimHorizon)];
        assert!(plan_cleanup(&split(), &leases).is_empty());
        leases[2].checkpoint = Latest;
        assert!(plan_cleanup(&split(), &leases).is_empty(), "LATEST has not started either");
        leases[2].checkpoint = started();
        assert_eq!(plan_cleanup(&split(), &leases), [id(0)]);
    }

    #[test]
    fn cleanup_waits_for_a_missing_child_lease() {
        let leases = [at(0, ShardEnd), at(1, started())];
        assert!(plan_cleanup(&split(), &leases).is_empty());
    }

    #[test]
    fn cleanup_uses_the_leases_children_when_the_listing_has_none() {
        // 0 is listed but its children are not yet: the lease names them.
        let shards = [shard(0, &[], false)];
        let mut parent = at(0, ShardEnd);
        parent.child_shard_ids = vec![id(1), id(2)];
        let mut leases = vec![parent, at(1, started())];
        leases[1].parent_shard_ids = vec![id(0)];
        assert!(plan_cleanup(&shards, &leases).is_empty());
        let mut second = at(2, started());
        second.parent_shard_ids = vec![id(0)];
        leases.push(second);
        assert_eq!(plan_cleanup(&shards, &leases), [id(0)]);
    }

    #[test]
    fn cleanup_waits_for_the_parents_lease_to_go() {
        // 0 -> 1 -> (3, 4) in deep(): 1 is done and its children started, but 0 is still
        // leased, so only 0 goes this round (its children 1 and 2 have started).
        let leases = [
            at(0, ShardEnd),
            at(1, ShardEnd),
            at(2, started()),
            at(3, started()),
            at(4, started()),
        ];
        assert_eq!(plan_cleanup(&deep(), &leases), [id(0)]);
        assert_eq!(plan_cleanup(&deep(), &leases[1..]), [id(1)]);
    }

    #[test]
    fn merged_child_must_start_before_either_parent_goes() {
        let mut leases = vec![at(0, ShardEnd), at(1, ShardEnd), at(2, TrimHorizon)];
        assert!(plan_cleanup(&merge(), &leases).is_empty());
        leases[2].checkpoint = started();
        assert_eq!(plan_cleanup(&merge(), &leases), [id(0), id(1)]);
    }

    #[test]
    fn finished_shard_without_children_is_kept() {
        let shards = [shard(0, &[], false)];
        assert!(plan_cleanup(&shards, &[at(0, ShardEnd)]).is_empty());
    }

    #[test]
    fn lease_of_an_unlisted_shard_is_garbage() {
        let leases = [at(7, started()), at(1, started())];
        assert_eq!(plan_cleanup(&split(), &leases), [id(7)]);
    }

    #[test]
    fn lease_newer_than_the_listing_is_not_garbage() {
        let mut child = at(9, TrimHorizon);
        child.parent_shard_ids = vec![id(1)];
        assert!(plan_cleanup(&split(), &[child]).is_empty());
    }

    /// A random stream history: `roots` open shards, then each op splits an open shard or
    /// merges two, then the oldest `trim` closed shards drop out (past retention).
    fn history(roots: usize, ops: &[(bool, usize, usize)], trim: usize) -> Vec<Shard> {
        let mut shards: Vec<Shard> = (0..roots).map(|n| shard(n, &[], true)).collect();
        let mut open: Vec<usize> = (0..roots).collect();
        let close = |shards: &mut Vec<Shard>, n: usize| {
            shards[n].ending_sequence = Some(SequenceNumber::new("9").unwrap());
        };
        for &(is_split, a, b) in ops {
            let next = shards.len();
            if is_split || open.len() < 2 {
                let parent = open.remove(a % open.len());
                close(&mut shards, parent);
                shards.push(shard(next, &[parent], true));
                shards.push(shard(next + 1, &[parent], true));
                open.extend([next, next + 1]);
            } else {
                let first = open.remove(a % open.len());
                let second = open.remove(b % open.len());
                close(&mut shards, first);
                close(&mut shards, second);
                shards.push(shard(next, &[first, second], true));
                open.push(next);
            }
        }
        let mut dropped = 0;
        shards.retain(|s| {
            let drop = !s.is_open() && dropped < trim;
            dropped += usize::from(drop);
            !drop
        });
        shards
    }

    fn arb_history() -> impl Strategy<Value = Vec<Shard>> {
        (1..4usize, prop::collection::vec((any::<bool>(), 0..8usize, 0..8usize), 0..10), 0..6usize)
            .prop_map(|(roots, ops, trim)| history(roots, &ops, trim))
    }

    fn arb_initial() -> impl Strategy<Value = InitialPosition> {
        prop_oneof![
            Just(InitialPosition::TrimHorizon),
            Just(InitialPosition::Latest),
            Just(InitialPosition::AtTimestamp),
        ]
    }

    fn arb_checkpoint() -> impl Strategy<Value = ExtendedSequenceNumber> {
        prop_oneof![
            Just(TrimHorizon),
            Just(Latest),
            Just(AtTimestamp),
            Just(ShardEnd),
            Just(started())
        ]
    }

    proptest! {
        #[test]
        fn new_lease_planning_is_idempotent_and_covers_every_open_shard(
            shards in arb_history(),
            initial in arb_initial(),
            existing_mask in prop::collection::vec(any::<bool>(), 40),
        ) {
            let existing: Vec<Lease> = shards
                .iter()
                .zip(&existing_mask)
                .filter(|(_, keep)| **keep)
                .map(|(s, _)| Lease::new(s.id.clone(), started()))
                .collect();
            let planned = plan_new_leases(&shards, &existing, initial);
            let mut all = existing.clone();
            all.extend(planned.iter().cloned());
            prop_assert!(plan_new_leases(&shards, &all, initial).is_empty());
            let keys: HashSet<&ShardId> = all.iter().map(|l| &l.key).collect();
            prop_assert_eq!(keys.len(), all.len(), "no lease planned twice or over an existing one");
            for shard in shards.iter().filter(|s| s.is_open()) {
                prop_assert!(keys.contains(&shard.id), "open {} has no lease", shard.id);
            }
            // Parents first: a planned lease's listed parents are planned before it or exist.
            for (i, lease) in planned.iter().enumerate() {
                for parent in &lease.parent_shard_ids {
                    let later = planned[i..].iter().any(|l| &l.key == parent);
                    prop_assert!(!later, "{} planned before its parent {}", lease.key, parent);
                }
            }
        }

        #[test]
        fn cleanup_never_deletes_an_unfinished_listed_shard_and_waits_for_children(
            shards in arb_history(),
            checkpoints in prop::collection::vec(prop::option::of(arb_checkpoint()), 40),
            garbage in 0..3usize,
        ) {
            let mut leases: Vec<Lease> = shards
                .iter()
                .zip(&checkpoints)
                .filter_map(|(s, c)| c.clone().map(|c| {
                    let mut lease = Lease::new(s.id.clone(), c);
                    lease.parent_shard_ids = s.parents().cloned().collect();
                    lease
                }))
                .collect();
            leases.extend((0..garbage).map(|n| at(1000 + n, started())));
            let doomed = plan_cleanup(&shards, &leases);
            let listed: HashMap<&ShardId, &Shard> = shards.iter().map(|s| (&s.id, s)).collect();
            let by_key: HashMap<&ShardId, &Lease> = leases.iter().map(|l| (&l.key, l)).collect();
            for key in &doomed {
                let lease = by_key[key];
                let Some(shard) = listed.get(key) else { continue };
                prop_assert_eq!(&lease.checkpoint, &ShardEnd, "deleted unfinished {}", key);
                for parent in shard.parents() {
                    prop_assert!(!by_key.contains_key(parent), "{} deleted before its parent", key);
                }
                let children: Vec<&Shard> =
                    shards.iter().filter(|c| c.parents().any(|p| p == key)).collect();
                prop_assert!(!children.is_empty());
                for child in children {
                    let started = by_key.get(&child.id).is_some_and(|l| has_started(l));
                    prop_assert!(started, "{} deleted before child {} started", key, child.id);
                }
            }
            for n in 0..garbage {
                prop_assert!(doomed.contains(&id(1000 + n)), "garbage kept");
            }
        }
    }
}
