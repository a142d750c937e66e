//! [`IdSet`]: a set of record ids kept as disjoint ranges, so that the millions of dense ids
//! of a run cost a few ranges, and two workers' sets merge exactly.
//!
//! Invariants: the ranges are disjoint, not adjacent (adjacent ones are joined), each
//! `start <= end`, and `len` is the number of ids they cover.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::{Deserialize, Serialize};

/// A set of `u64` ids as sorted, disjoint, non-adjacent inclusive ranges. Serialized as a list
/// of `[first, last]` pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "Vec<[u64; 2]>", from = "Vec<[u64; 2]>")]
pub struct IdSet {
    /// `start -> end`, both included.
    ranges: BTreeMap<u64, u64>,
    len: u64,
}

impl IdSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `id`; true if it was not in the set.
    pub fn insert(&mut self, id: u64) -> bool {
        self.insert_range(id, id) == 1
    }

    /// Adds every id of `first..=last` (nothing if `first > last`); returns how many were new.
    pub fn insert_range(&mut self, first: u64, last: u64) -> u64 {
        if first > last {
            return 0;
        }
        let (mut start, mut end) = (first, last);
        let mut removed = 0;
        // Every range that overlaps or touches [first, last]: they start at or before
        // last + 1 and end at or after first - 1. Ends are sorted like starts.
        let touching: Vec<(u64, u64)> = self
            .ranges
            .range(..=last.saturating_add(1))
            .rev()
            .take_while(|&(_, &e)| e.saturating_add(1) >= first)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in touching {
            self.ranges.remove(&s);
            removed += e - s + 1;
            start = start.min(s);
            end = end.max(e);
        }
        self.ranges.insert(start, end);
        let added = (end - start + 1) - removed;
        self.len += added;
        added
    }

    /// Whether `id` is in the set.
    pub fn contains(&self, id: u64) -> bool {
        self.ranges.range(..=id).next_back().is_some_and(|(_, &end)| id <= end)
    }

    /// How many ids the set holds.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The largest id, if any.
    pub fn max(&self) -> Option<u64> {
        self.ranges.values().next_back().copied()
    }

    /// The ranges, first to last, as `(first, last)` pairs.
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(&s, &e)| (s, e))
    }

    /// Adds every id of `other`.
    pub fn union(&mut self, other: &IdSet) {
        for (s, e) in other.ranges() {
            self.insert_range(s, e);
        }
    }

    /// How many ids of `within` (half-open) are in the set.
    pub fn count_in(&self, within: Range<u64>) -> u64 {
        if within.start >= within.end {
            return 0;
        }
        let last = within.end - 1;
        let from = self.ranges.range(..=within.start).next_back().map_or(within.start, |(&s, _)| s);
        self.ranges
            .range(from..=last)
            .map(|(&s, &e)| {
                let (s, e) = (s.max(within.start), e.min(last));
                if s <= e { e - s + 1 } else { 0 }
            })
            .sum()
    }

    /// The ids of `within` (half-open) that are in neither this set nor `excluded`: how many,
    /// and the first `sample` of them.
    pub fn missing_in(
        &self,
        within: Range<u64>,
        excluded: &IdSet,
        sample: usize,
    ) -> (u64, Vec<u64>) {
        let mut present = self.clone();
        present.union(excluded);
        let count = (within.end.saturating_sub(within.start)) - present.count_in(within.clone());
        let mut first = Vec::new();
        let mut next = within.start;
        for (s, e) in present.ranges() {
            if first.len() >= sample || next >= within.end {
                break;
            }
            if e < next {
                continue;
            }
            while next < s.min(within.end) && first.len() < sample {
                first.push(next);
                next += 1;
            }
            next = next.max(e.saturating_add(1));
        }
        while next < within.end && first.len() < sample {
            first.push(next);
            next += 1;
        }
        (count, first)
    }
}

impl From<IdSet> for Vec<[u64; 2]> {
    fn from(set: IdSet) -> Self {
        set.ranges().map(|(s, e)| [s, e]).collect()
    }
}

impl From<Vec<[u64; 2]>> for IdSet {
    /// Any list of pairs, in any order, overlapping or not (an inverted pair adds nothing).
    fn from(pairs: Vec<[u64; 2]>) -> Self {
        let mut set = IdSet::new();
        for [s, e] in pairs {
            set.insert_range(s, e);
        }
        set
    }
}

impl FromIterator<u64> for IdSet {
    fn from_iter<I: IntoIterator<Item = u64>>(iter: I) -> Self {
        let mut set = IdSet::new();
        for id in iter {
            set.insert(id);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn inserts_join_adjacent_ranges_and_report_what_was_new() {
        let mut set = IdSet::new();
        assert!(set.insert(5));
        assert!(set.insert(7));
        assert!(!set.insert(5));
        assert_eq!(set.ranges().collect::<Vec<_>>(), [(5, 5), (7, 7)]);
        assert!(set.insert(6));
        assert_eq!(set.ranges().collect::<Vec<_>>(), [(5, 7)]);
        assert_eq!(set.insert_range(0, 10), 8);
        assert_eq!(set.len(), 11);
        assert!(set.insert(u64::MAX));
        assert_eq!(set.max(), Some(u64::MAX));
        assert_eq!(set.insert_range(3, 2), 0);
    }

    #[test]
    fn missing_ids_are_counted_and_sampled_in_order() {
        let seen: IdSet = [0, 1, 2, 5, 9].into_iter().collect();
        let failed: IdSet = [3].into_iter().collect();
        assert_eq!(seen.missing_in(0..12, &failed, 3), (6, vec![4, 6, 7]));
        assert_eq!(seen.missing_in(0..12, &failed, 100), (6, vec![4, 6, 7, 8, 10, 11]));
        assert_eq!(seen.missing_in(0..3, &failed, 10), (0, vec![]));
        assert_eq!(IdSet::new().missing_in(0..0, &IdSet::new(), 10), (0, vec![]));
    }

    #[test]
    fn serializes_as_pairs_and_accepts_any_pairs() {
        let set: IdSet = [1, 2, 3, 10].into_iter().collect();
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(json, "[[1,3],[10,10]]");
        let messy: IdSet = serde_json::from_str("[[10,10],[2,3],[1,1],[9,4],[3,2]]").unwrap();
        assert_eq!(messy, set);
    }

    proptest! {
        #[test]
        fn behaves_like_a_btreeset(
            ops in proptest::collection::vec((0u64..200, 0u64..8), 0..200),
            window in (0u64..220, 0u64..220),
        ) {
            let mut set = IdSet::new();
            let mut model = BTreeSet::new();
            for (first, width) in ops {
                let last = first + width;
                let new = (first..=last).filter(|id| model.insert(*id)).count() as u64;
                prop_assert_eq!(set.insert_range(first, last), new);
            }
            prop_assert_eq!(set.len(), model.len() as u64);
            for id in 0..220 {
                prop_assert_eq!(set.contains(id), model.contains(&id));
            }
            let pairs: Vec<(u64, u64)> = set.ranges().collect();
            for w in pairs.windows(2) {
                prop_assert!(w[0].1 + 1 < w[1].0, "ranges must be disjoint and not adjacent");
            }
            let (lo, hi) = (window.0.min(window.1), window.0.max(window.1));
            prop_assert_eq!(set.count_in(lo..hi), model.range(lo..hi).count() as u64);
            let (missing, sample) = set.missing_in(lo..hi, &IdSet::new(), 5);
            let expected: Vec<u64> = (lo..hi).filter(|id| !model.contains(id)).collect();
            prop_assert_eq!(missing, expected.len() as u64);
            prop_assert_eq!(sample, expected.into_iter().take(5).collect::<Vec<_>>());
        }
    }
}
