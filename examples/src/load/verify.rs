//! The verifier: what consumers delivered, tallied per run ([`Verifier`], [`Tally`]), merged
//! across workers ([`Tally::merge`]), and judged ([`judge`], [`Verdict`]).
//!
//! Definitions, per run (records with the same [`RunId`]):
//!
//! - A *delivery* is a record handed to a processor whose payload decodes; `distinct` counts
//!   record ids delivered at least once, `duplicates` is `deliveries - distinct`
//!   (at-least-once delivery allows them; they are reported, not failed).
//! - *Missing*: ids expected and never delivered. Expected ids are `0..records` of an
//!   [`Expectation`] less the ids the producer reported as failed; without one, the ids below
//!   the highest one delivered (a loss at the very end is then invisible).
//! - An *order violation*: the first delivery of a record, within one verifier (one worker),
//!   whose key sequence is below that of an earlier first delivery of the same key. Repeated
//!   deliveries are skipped, as a re-read after a checkpoint legitimately goes back. Order is
//!   judged per worker: across workers, deliveries have no common clock, so merged reports
//!   add up each worker's violations.
//! - *Foreign*: data that is not a payload of this format (counted by reason, never a
//!   crash); *corrupt* is the foreign reason `checksum-mismatch`, a damaged payload, which
//!   fails the verdict. Records of other runs are counted apart and otherwise ignored.
//!
//! Invariant: merging the tallies of verifiers that saw parts of a delivery sequence gives the
//! same deliveries, distinct ids, duplicates, missing ids, foreign records and latencies as
//! one verifier that saw the parts one after the other, and the sum of each part's order
//! violations (the property tests check both against a naive model).

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::histogram::{LatencyHistogram, Percentiles};
use super::ids::IdSet;
use super::payload::{self, Foreign, RunId};

/// How many missing ids a verdict lists.
const MISSING_SAMPLE: usize = 20;

/// What a verifier saw of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTally {
    /// Deliveries, duplicates included.
    pub deliveries: u64,
    /// The record ids delivered.
    pub seen: IdSet,
    /// First deliveries that came after a later record of the same key.
    pub order_violations: u64,
    /// Send (by the producer's clock) to delivery (by the consumer's clock), of every
    /// delivery: a re-read shows up with the time it took to be read again.
    pub latency: LatencyHistogram,
}

impl RunTally {
    /// Record ids delivered at least once.
    pub fn distinct(&self) -> u64 {
        self.seen.len()
    }

    /// Deliveries beyond the first of each record.
    pub fn duplicates(&self) -> u64 {
        self.deliveries - self.distinct()
    }

    /// Adds another verifier's tally of the same run.
    pub fn merge(&mut self, other: &RunTally) {
        self.deliveries += other.deliveries;
        self.seen.union(&other.seen);
        self.order_violations += other.order_violations;
        self.latency.merge(&other.latency);
    }
}

/// Everything a verifier saw.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Per run, the runs that were tallied.
    pub runs: BTreeMap<RunId, RunTally>,
    /// Records of runs the verifier was told to ignore.
    pub other_runs: u64,
    /// Records that are not payloads, by reason (see [`Foreign::as_str`]).
    pub foreign: BTreeMap<String, u64>,
    /// Records of any kind, per shard.
    pub per_shard: BTreeMap<String, u64>,
}

impl Tally {
    /// Adds another verifier's tally.
    pub fn merge(&mut self, other: &Tally) {
        for (run, theirs) in &other.runs {
            self.runs.entry(*run).or_default().merge(theirs);
        }
        self.other_runs += other.other_runs;
        for (reason, n) in &other.foreign {
            *self.foreign.entry(reason.clone()).or_default() += n;
        }
        for (shard, n) in &other.per_shard {
            *self.per_shard.entry(shard.clone()).or_default() += n;
        }
    }

    /// Every record delivered, of any kind.
    pub fn records(&self) -> u64 {
        self.per_shard.values().sum()
    }

    /// Payloads damaged on the way.
    pub fn corrupt(&self) -> u64 {
        self.foreign.get(Foreign::ChecksumMismatch.as_str()).copied().unwrap_or(0)
    }

    /// Deliveries of tallied runs, duplicates included.
    pub fn deliveries(&self) -> u64 {
        self.runs.values().map(|r| r.deliveries).sum()
    }

    /// Distinct records of tallied runs.
    pub fn distinct(&self) -> u64 {
        self.runs.values().map(RunTally::distinct).sum()
    }
}

/// What one delivery was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The first delivery of a record.
    New,
    /// A record delivered before.
    Duplicate,
    /// A record of a run the verifier ignores.
    OtherRun,
    /// Not a payload.
    Foreign(Foreign),
}

/// Tallies one worker's deliveries.
#[derive(Debug, Default)]
pub struct Verifier {
    /// Only this run is tallied, if set.
    run: Option<RunId>,
    tally: Tally,
    /// The highest key sequence among first deliveries, per (run, key).
    key_max: HashMap<(RunId, u32), u64>,
}

impl Verifier {
    /// A verifier of `run` only, or of every run when `None`.
    pub fn new(run: Option<RunId>) -> Self {
        Self { run, ..Self::default() }
    }

    /// Tallies a record delivered from `shard` at `received`.
    pub fn observe(&mut self, shard: &str, data: &[u8], received: SystemTime) -> Seen {
        *self.tally.per_shard.entry(shard.to_owned()).or_default() += 1;
        let header = match payload::decode(data) {
            Ok(header) => header,
            Err(reason) => {
                *self.tally.foreign.entry(reason.as_str().to_owned()).or_default() += 1;
                return Seen::Foreign(reason);
            }
        };
        if self.run.is_some_and(|run| run != header.run_id) {
            self.tally.other_runs += 1;
            return Seen::OtherRun;
        }
        let run = self.tally.runs.entry(header.run_id).or_default();
        run.deliveries += 1;
        run.latency.record(received.duration_since(header.sent_at).unwrap_or_default());
        if !run.seen.insert(header.record_id) {
            return Seen::Duplicate;
        }
        let max = self.key_max.entry((header.run_id, header.key_index)).or_insert(header.key_seq);
        if header.key_seq < *max {
            run.order_violations += 1;
        }
        *max = (*max).max(header.key_seq);
        Seen::New
    }

    /// What was seen so far.
    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    /// The tally, ending verification.
    pub fn into_tally(self) -> Tally {
        self.tally
    }
}

/// Which records a run should have delivered: ids `0..records` less `failed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expectation {
    /// The run.
    pub run_id: RunId,
    /// Records the producer handed to `send`, ids `0..records`.
    pub records: u64,
    /// Ids the producer reported as not written (they may still arrive: a timed-out write
    /// can have succeeded).
    #[serde(default)]
    pub failed: IdSet,
}

impl Expectation {
    /// How many ids are expected.
    pub fn expected(&self) -> u64 {
        self.records - self.failed.count_in(0..self.records)
    }

    /// How many expected ids `seen` lacks. Cheap enough to ask after every batch: it walks
    /// the failed ids' ranges (few), not the seen ones.
    pub fn missing(&self, seen: &IdSet) -> u64 {
        let range = 0..self.records;
        let seen_and_failed: u64 = self
            .failed
            .ranges()
            .map(|(s, e)| seen.count_in(s.min(range.end)..e.saturating_add(1).min(range.end)))
            .sum();
        self.expected() - (seen.count_in(range) - seen_and_failed)
    }
}

/// Whether a tally holds everything consumed, or one worker's share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything consumed: missing records fail the verdict.
    Whole,
    /// One of several workers sharing the shards: what is missing is left to the merge.
    Share,
}

/// The judgement of one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunVerdict {
    /// The run.
    pub run_id: RunId,
    /// Ids expected, from the expectation or from the highest id seen (see `by_expectation`).
    pub expected: u64,
    /// Whether `expected` comes from an [`Expectation`] (else from the highest id seen).
    pub by_expectation: bool,
    /// Deliveries, duplicates included.
    pub deliveries: u64,
    /// Distinct records delivered.
    pub distinct: u64,
    /// Deliveries beyond the first of each record.
    pub duplicates: u64,
    /// Expected records never delivered (`None` when this tally is one worker's share).
    pub missing: Option<u64>,
    /// The first missing ids.
    pub missing_sample: Vec<u64>,
    /// Delivered ids outside `0..records` of the expectation.
    pub unexpected: u64,
    /// Delivered ids the producer reported as failed.
    pub written_although_failed: u64,
    /// Per-key order violations.
    pub order_violations: u64,
    /// Send-to-delivery latency.
    pub latency: Percentiles,
}

/// The judgement of a tally.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Per run judged.
    pub runs: Vec<RunVerdict>,
    /// Damaged payloads.
    pub corrupt: u64,
    /// Records not in the payload format (damaged ones included).
    pub foreign: u64,
    /// Records of ignored runs.
    pub other_runs: u64,
    /// Nothing missing, damaged or out of order (and something to judge).
    pub ok: bool,
    /// Why not, in words.
    pub problems: Vec<String>,
}

/// Judges a tally: against `expectation` if given (that run only), else every tallied run by
/// the ids below its highest one.
pub fn judge(tally: &Tally, expectation: Option<&Expectation>, scope: Scope) -> Verdict {
    let empty = RunTally::default();
    let mut runs = Vec::new();
    let mut judge_run = |run_id: RunId, run: &RunTally, expectation: Option<&Expectation>| {
        let (range, failed) = match expectation {
            Some(e) => (0..e.records, e.failed.clone()),
            None => (0..run.seen.max().map_or(0, |m| m + 1), IdSet::new()),
        };
        let (missing, missing_sample) = run.seen.missing_in(range.clone(), &failed, MISSING_SAMPLE);
        let unexpected = run.distinct() - run.seen.count_in(range.clone());
        let mut written_although_failed = 0;
        for (s, e) in failed.ranges() {
            written_although_failed += run.seen.count_in(s..e.saturating_add(1));
        }
        runs.push(RunVerdict {
            run_id,
            expected: (range.end - range.start) - failed.count_in(range.clone()),
            by_expectation: expectation.is_some(),
            deliveries: run.deliveries,
            distinct: run.distinct(),
            duplicates: run.duplicates(),
            missing: (scope == Scope::Whole).then_some(missing),
            missing_sample: if scope == Scope::Whole { missing_sample } else { Vec::new() },
            unexpected,
            written_although_failed,
            order_violations: run.order_violations,
            latency: run.latency.percentiles(),
        });
    };
    match expectation {
        Some(e) => judge_run(e.run_id, tally.runs.get(&e.run_id).unwrap_or(&empty), Some(e)),
        None => {
            for (run_id, run) in &tally.runs {
                judge_run(*run_id, run, None);
            }
        }
    }
    let mut problems = Vec::new();
    let corrupt = tally.corrupt();
    if corrupt > 0 {
        problems.push(format!("{corrupt} damaged payload(s) (checksum mismatch)"));
    }
    for run in &runs {
        if let Some(missing) = run.missing.filter(|m| *m > 0) {
            problems.push(format!(
                "run {}: {missing} of {} record(s) missing, first {:?}",
                run.run_id, run.expected, run.missing_sample
            ));
        }
        if run.order_violations > 0 {
            problems.push(format!(
                "run {}: {} per-key order violation(s)",
                run.run_id, run.order_violations
            ));
        }
    }
    if runs.is_empty() && scope == Scope::Whole {
        problems.push("no record of the run arrived: nothing to verify".to_owned());
    }
    Verdict {
        ok: problems.is_empty(),
        problems,
        runs,
        corrupt,
        foreign: tally.foreign.values().sum(),
        other_runs: tally.other_runs,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashSet};
    use std::time::{Duration, UNIX_EPOCH};

    use proptest::prelude::*;

    use super::*;
    use crate::load::payload::{Filler, Header, encode};

    const RUN: RunId = RunId(42);

    fn payload(run: RunId, id: u64, key: u32, seq: u64) -> bytes::Bytes {
        let header = Header {
            run_id: run,
            record_id: id,
            key_index: key,
            key_seq: seq,
            sent_at: UNIX_EPOCH + Duration::from_secs(1000),
        };
        encode(&header, 60, Filler::Random)
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn counts_duplicates_order_violations_foreign_and_other_runs() {
        let mut v = Verifier::new(Some(RUN));
        assert_eq!(v.observe("s0", &payload(RUN, 0, 1, 0), at(1001)), Seen::New);
        assert_eq!(v.observe("s0", &payload(RUN, 2, 1, 2), at(1001)), Seen::New);
        assert_eq!(v.observe("s0", &payload(RUN, 1, 1, 1), at(1001)), Seen::New); // late: order
        assert_eq!(v.observe("s1", &payload(RUN, 1, 1, 1), at(1001)), Seen::Duplicate);
        assert_eq!(v.observe("s1", &payload(RunId(7), 0, 1, 0), at(1001)), Seen::OtherRun);
        assert_eq!(
            v.observe("s1", b"not a payload at all, just some text", at(1001)),
            Seen::Foreign(Foreign::BadMagic)
        );
        let mut damaged = payload(RUN, 3, 1, 3).to_vec();
        damaged[50] ^= 0xff;
        assert_eq!(v.observe("s1", &damaged, at(1001)), Seen::Foreign(Foreign::ChecksumMismatch));
        let tally = v.into_tally();
        let run = &tally.runs[&RUN];
        assert_eq!((run.deliveries, run.distinct(), run.duplicates()), (4, 3, 1));
        assert_eq!(run.order_violations, 1);
        assert_eq!(run.latency.percentiles().max, Duration::from_secs(1));
        assert_eq!(tally.other_runs, 1);
        assert_eq!(tally.corrupt(), 1);
        assert_eq!(tally.records(), 7);
        assert_eq!(tally.per_shard["s0"], 3);

        let expectation = Expectation { run_id: RUN, records: 5, failed: IdSet::new() };
        let verdict = judge(&tally, Some(&expectation), Scope::Whole);
        assert!(!verdict.ok);
        assert_eq!(verdict.runs[0].missing, Some(2));
        assert_eq!(verdict.runs[0].missing_sample, [3, 4]);
        assert_eq!(verdict.problems.len(), 3, "{:?}", verdict.problems);
    }

    #[test]
    fn failed_records_are_not_missing_and_extra_ids_are_reported() {
        let mut v = Verifier::new(None);
        for id in [0, 1, 3, 9] {
            v.observe("s", &payload(RUN, id, id as u32, 0), at(1000));
        }
        let expectation =
            Expectation { run_id: RUN, records: 5, failed: [2, 3].into_iter().collect() };
        assert_eq!(expectation.expected(), 3);
        assert_eq!(expectation.missing(&v.tally().runs[&RUN].seen), 1);
        let verdict = judge(v.tally(), Some(&expectation), Scope::Whole);
        let run = &verdict.runs[0];
        assert_eq!((run.expected, run.missing, run.unexpected), (3, Some(1), 1));
        assert_eq!(run.written_although_failed, 1);
        assert_eq!(run.missing_sample, [4]);
    }

    #[test]
    fn without_an_expectation_gaps_below_the_highest_id_are_missing() {
        let mut v = Verifier::new(None);
        for id in [0, 2, 3] {
            v.observe("s", &payload(RUN, id, 0, id), at(1000));
        }
        let verdict = judge(v.tally(), None, Scope::Whole);
        assert_eq!(verdict.runs[0].missing, Some(1));
        assert!(!verdict.runs[0].by_expectation);
        // One worker of several: its gaps are other workers' records.
        let share = judge(v.tally(), None, Scope::Share);
        assert!(share.ok);
        assert_eq!(share.runs[0].missing, None);
        // Nothing at all is a failure of a whole run, not of a share.
        assert!(!judge(&Tally::default(), None, Scope::Whole).ok);
        assert!(judge(&Tally::default(), None, Scope::Share).ok);
    }

    #[test]
    fn tallies_survive_json() {
        let mut v = Verifier::new(None);
        v.observe("s", &payload(RUN, 3, 0, 0), at(1000));
        v.observe("s", b"x", at(1000));
        let tally = v.into_tally();
        let json = serde_json::to_string(&tally).unwrap();
        assert_eq!(serde_json::from_str::<Tally>(&json).unwrap(), tally);
    }

    /// The naive model of a delivery sequence of (worker, record id) pairs: (distinct,
    /// duplicates, missing of `0..records`, order violations judged per worker). Keys and key
    /// sequences follow from the id (key = id % 3, seq = id / 3), so delivering in id order
    /// keeps every key in order.
    fn naive(
        deliveries: &[(usize, u64)],
        workers: usize,
        records: u64,
        failed: &BTreeSet<u64>,
    ) -> (u64, u64, u64, u64) {
        let total = deliveries.len() as u64;
        let distinct: HashSet<u64> = deliveries.iter().map(|(_, id)| *id).collect();
        let missing =
            (0..records).filter(|id| !distinct.contains(id) && !failed.contains(id)).count() as u64;
        let mut violations = 0;
        for w in 0..workers {
            let mut first: HashSet<u64> = HashSet::new();
            let mut max: HashMap<u64, u64> = HashMap::new();
            for (_, id) in deliveries.iter().filter(|(worker, _)| *worker == w) {
                if !first.insert(*id) {
                    continue;
                }
                let (key, seq) = (id % 3, id / 3);
                let m = max.entry(key).or_insert(seq);
                if seq < *m {
                    violations += 1;
                }
                *m = (*m).max(seq);
            }
        }
        (distinct.len() as u64, total - distinct.len() as u64, missing, violations)
    }

    proptest! {
        #[test]
        fn merged_worker_tallies_match_a_naive_model_of_all_deliveries(
            deliveries in proptest::collection::vec((0usize..3, 0u64..40), 0..120),
            records in 0u64..45,
            failed in proptest::collection::btree_set(0u64..50, 0..6),
        ) {
            let mut workers: Vec<Verifier> = (0..3).map(|_| Verifier::new(Some(RUN))).collect();
            let mut single = Verifier::new(Some(RUN));
            for (w, id) in &deliveries {
                let data = payload(RUN, *id, (*id % 3) as u32, *id / 3);
                workers[*w].observe(&format!("shard-{w}"), &data, at(1001));
            }
            let mut merged = Tally::default();
            for worker in &workers {
                merged.merge(worker.tally());
            }
            // The concatenation: each worker's part in turn, through one verifier.
            let mut concatenated = Tally::default();
            for w in 0..3 {
                for (_, id) in deliveries.iter().filter(|(worker, _)| *worker == w) {
                    let data = payload(RUN, *id, (*id % 3) as u32, *id / 3);
                    single.observe(&format!("shard-{w}"), &data, at(1001));
                }
            }
            concatenated.merge(single.tally());
            // Order is judged per worker (first deliveries within each), which one verifier
            // cannot see; everything else matches the concatenation exactly.
            let without_order = |t: &Tally| {
                let mut t = t.clone();
                t.runs.values_mut().for_each(|r| r.order_violations = 0);
                t
            };
            prop_assert_eq!(without_order(&merged), without_order(&concatenated));

            let expectation =
                Expectation { run_id: RUN, records, failed: failed.iter().copied().collect() };
            let verdict = judge(&merged, Some(&expectation), Scope::Whole);
            let run = &verdict.runs[0];
            let (distinct, duplicates, missing, violations) = naive(&deliveries, 3, records, &failed);
            prop_assert_eq!(run.distinct, distinct);
            prop_assert_eq!(run.duplicates, duplicates);
            prop_assert_eq!(run.missing, Some(missing));
            prop_assert_eq!(expectation.missing(&merged.runs.get(&RUN).cloned().unwrap_or_default().seen), missing);
            prop_assert_eq!(run.order_violations, violations);
            prop_assert_eq!(run.deliveries, deliveries.len() as u64);
            prop_assert_eq!(verdict.ok, missing == 0 && violations == 0);
        }

        #[test]
        fn the_verifier_never_panics_on_arbitrary_data(
            records in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 0..20),
        ) {
            let mut v = Verifier::new(None);
            for data in &records {
                let seen = v.observe("s", data, at(0));
                prop_assert!(matches!(seen, Seen::Foreign(_)) || data.len() >= 48);
            }
            prop_assert_eq!(v.tally().records(), records.len() as u64);
        }
    }
}
