//! The verdict of a run from its [event files](super::events): `kinesis-load verify --events`.
//!
//! Unlike the tallies of [`verify`](super::verify), which each worker keeps in memory and
//! reports when it stops, the events survive a worker killed with SIGKILL, and they say which
//! *session* (one processor's life on one lease) delivered each record at which position and
//! what it checkpointed. That makes these rules checkable:
//!
//! - **Lost**: an expected record (ids `0..records` less those the producer reported failed)
//!   that no session delivered.
//! - **Per-key order**, across workers: for two records of one key, the earlier one (by key
//!   sequence) must have been first delivered no later than the later one was first
//!   delivered. Deliveries are compared by their writers' wall clocks (all processes run on
//!   one host); two first deliveries in the same microsecond by different batches are given
//!   the benefit of the doubt, within one batch the batch's order decides.
//! - **Duplicates** are sorted by cause. A record id delivered at *several positions* was
//!   written more than once by the producer (a write that succeeded but was answered with an
//!   error or a dropped connection, then retried): at-least-once writing, reported. A
//!   *position* delivered again is a re-read, justified only if it came from a later session
//!   of the shard (the shard changed owner, or the same worker took it again), after that
//!   session's starting checkpoint, and no earlier session of the shard had a confirmed
//!   checkpoint at or past it. This needs no clock: if an earlier holder confirmed a
//!   checkpoint past a record that a later holder read again, either the checkpoint was lost
//!   or it was written after the lease had changed hands. Any other repeat (twice in one
//!   session, or at or before the session's own starting checkpoint) is unjustified.
//! - **No session on a lease already taken**: a session that started after another worker had
//!   taken the lease hands out records from a checkpoint the holder may have passed. It shows
//!   as a session that never confirmed a checkpoint and reported the lease lost, while the
//!   session that started before it went on confirming checkpoints after its start (which
//!   the table's conditional writes allow only to the holder). Its deliveries are counted
//!   apart, and each such session fails the run.
//! - **No checkpoint after the lease was lost**: a checkpoint confirmed by a session whose
//!   write *began* after the next session of the shard had started (which is after that
//!   session took the lease), or after its own session reported the lease lost or ended (a
//!   kill included). The runner's forced steals count as sessions of the fake owner,
//!   starting at the steal.
//! - **Starting checkpoints**: every session must start at or past every checkpoint an
//!   earlier session confirmed (else a checkpoint was lost), and not past anything anyone
//!   wrote (a checkpoint begun by a worker killed before it heard the answer counts as
//!   written).
//! - **The final lease table** (`--lease-table`): each lease's checkpoint must be at or past
//!   the last confirmed one, and be one that was written.
//! - **Steals**: the worker that held a stolen lease must report it lost, and the runner
//!   must have seen the item's checkpoint unchanged while the fake owner held it.
//! - **Bad input**: each record the runner wrote that is not a payload must be delivered (as
//!   foreign data) at the position it was written to. Damaged payloads (checksum mismatch)
//!   always fail the run.
//!
//! It also measures: takeover times after a kill (kill to the next session's start, per
//! shard the killed worker held) and after a steal (the victim noticing; the release to the
//! next session's start).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;

use kinesis_common::{ExtendedSequenceNumber, SequenceNumber};
use serde::{Deserialize, Serialize};

use super::events::{Delivered, EndReason, Event};
use super::ids::IdSet;
use super::payload::{Foreign, RunId};
use super::verify::Expectation;

/// How many examples each rule lists.
const SAMPLE: usize = 10;

/// A lease as the table holds it at the end of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalLease {
    /// The shard.
    pub shard: String,
    /// Its owner, if any.
    pub owner: Option<String>,
    /// Its checkpoint, as a position text.
    pub checkpoint: String,
}

/// Duplicates by cause.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Duplicates {
    /// Deliveries beyond the first of each record.
    pub total: u64,
    /// Records written at more than one position by the producer.
    pub written_more_than_once: u64,
    /// Deliveries of the extra copies of those records (first delivery of each copy).
    pub producer_copies: u64,
    /// Re-reads of a position by a later session after an owner change, justified.
    pub rereads_justified: u64,
    /// Deliveries by sessions that started on a lease already taken (see
    /// [`Checkpoints::started_on_taken_lease`]).
    #[serde(default)]
    pub from_sessions_on_taken_leases: u64,
    /// Re-reads of a position that no rule justifies.
    pub unjustified: u64,
    /// Examples of unjustified ones.
    pub unjustified_sample: Vec<String>,
}

/// Checkpoints written and the rules about them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoints {
    /// Writes confirmed (`ok`).
    pub confirmed: u64,
    /// Writes begun and never answered (the worker was killed meanwhile).
    pub unanswered: u64,
    /// Writes refused because the lease was lost.
    pub refused_lease_lost: u64,
    /// Writes that failed otherwise.
    pub failed: u64,
    /// Confirmed writes begun after the lease had passed to another session.
    pub after_loss: u64,
    /// Sessions that started after another worker had taken the lease: they never confirmed a
    /// checkpoint and reported the lease lost, while the holder confirmed checkpoints after
    /// their start.
    #[serde(default)]
    pub started_on_taken_lease: u64,
    /// Sessions that started before a checkpoint an earlier holder had confirmed.
    pub stale_starts: u64,
    /// Sessions that started past anything written.
    pub phantom_starts: u64,
    /// Records delivered at or before their session's starting checkpoint.
    pub delivered_before_start: u64,
    /// Final lease checkpoints behind the last confirmed one, or never written.
    pub table_mismatches: u64,
    /// Leases of the final table compared.
    pub table_leases_checked: u64,
    /// Examples of violations of any of these rules.
    pub sample: Vec<String>,
}

/// One shard a killed worker held, and who took it over how fast.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Takeover {
    /// The shard.
    pub shard: String,
    /// Seconds from the kill (or release) to the next session's start; `None` if none started.
    pub after_secs: Option<f64>,
    /// The worker that took it.
    pub by: Option<String>,
}

/// One kill and what followed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KillReport {
    /// The worker killed.
    pub worker: String,
    /// Seconds since the first event.
    pub at_secs: f64,
    /// The shards it was processing.
    pub shards: Vec<Takeover>,
    /// Seconds until it was started again, if it was.
    pub restarted_after_secs: Option<f64>,
}

impl KillReport {
    /// The slowest takeover, if every shard was taken over.
    pub fn max_takeover_secs(&self) -> Option<f64> {
        self.shards.iter().map(|s| s.after_secs).try_fold(0.0_f64, |m, s| s.map(|s| m.max(s)))
    }
}

/// One forced steal and what followed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StealReport {
    /// The shard.
    pub shard: String,
    /// The worker it was taken from.
    pub victim: String,
    /// Seconds since the first event.
    pub at_secs: f64,
    /// Seconds until the victim reported the lease lost.
    pub noticed_after_secs: Option<f64>,
    /// Counter bumps by the fake owner.
    pub renewals: u64,
    /// Whether the checkpoint stayed unchanged while the fake owner held it.
    pub checkpoint_unchanged: Option<bool>,
    /// How the hold ended.
    pub hold_outcome: Option<String>,
    /// Seconds the fake owner held it (steal to release).
    pub held_secs: Option<f64>,
    /// After the release, who took it and how fast.
    pub taken_back: Option<Takeover>,
}

/// The bad records the runner wrote and whether they arrived.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadInput {
    /// Records written.
    pub written: u64,
    /// Of those, delivered (as foreign data, at their position).
    pub delivered: u64,
    /// Foreign deliveries (duplicates included), by reason.
    pub foreign_by_reason: BTreeMap<String, u64>,
    /// Foreign records at positions the runner did not declare.
    pub undeclared: u64,
}

/// The verdict of a run from its event files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Audit {
    /// The run judged.
    pub run_id: Option<RunId>,
    /// Records expected.
    pub expected: u64,
    /// Ids the producer reported as not written.
    pub producer_failed: u64,
    /// Deliveries of the run's payloads, duplicates included.
    pub deliveries: u64,
    /// Distinct records delivered.
    pub distinct: u64,
    /// Expected records never delivered.
    pub missing: u64,
    /// The first missing ids.
    pub missing_sample: Vec<u64>,
    /// Records first delivered after a later record of their key.
    pub order_violations: u64,
    /// Examples.
    pub order_sample: Vec<String>,
    /// Duplicates by cause.
    pub duplicates: Duplicates,
    /// Checkpoints and their rules.
    pub checkpoints: Checkpoints,
    /// Sessions (lease holdings), the fake owner's included.
    pub sessions: u64,
    /// Sessions after the first of each shard: changes of owner.
    pub owner_changes: u64,
    /// Shards seen.
    pub shards: u64,
    /// Worker processes seen.
    pub worker_processes: u64,
    /// Kills and takeovers.
    pub kills: Vec<KillReport>,
    /// Forced steals.
    pub steals: Vec<StealReport>,
    /// Bad input.
    pub bad_input: BadInput,
    /// Payloads of other runs.
    pub other_runs: u64,
    /// Event files that end in a line cut short (a killed writer).
    pub partial_lines: u64,
    /// Nothing lost, reordered, unjustified or written after a loss.
    pub ok: bool,
    /// Why not, in words.
    pub problems: Vec<String>,
}

/// A position text as events and the lease table write it.
pub fn parse_position(text: &str) -> Result<ExtendedSequenceNumber, String> {
    let (sequence, sub) = match text.split_once('/') {
        Some((sequence, sub)) => {
            (sequence, sub.parse::<u64>().map_err(|_| format!("bad position {text:?}"))?)
        }
        None => (text, 0),
    };
    ExtendedSequenceNumber::from_checkpoint(sequence, sub).map_err(|e| e.to_string())
}

/// Tracks, from events as they arrive, whether every expected record and every declared bad
/// record has been delivered (`verify --until-complete`).
#[derive(Debug, Default)]
pub struct Progress {
    seen: IdSet,
    shard_of_session: HashMap<String, String>,
    foreign_seen: HashSet<(String, String)>,
    declared: HashSet<(String, String)>,
}

impl Progress {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one event into account.
    pub fn observe(&mut self, event: &Event) {
        match event {
            Event::Init { session, shard, .. } => {
                self.shard_of_session.insert(session.clone(), shard.clone());
            }
            Event::Batch { shard, records, foreign, .. } => {
                for Delivered(_, _, id, _, _) in records {
                    self.seen.insert(*id);
                }
                for record in foreign {
                    self.foreign_seen.insert((shard.clone(), record.0.clone()));
                }
            }
            Event::BadInput { shard, sequence, .. } => {
                self.declared.insert((shard.clone(), sequence.clone()));
            }
            _ => {}
        }
    }

    /// Expected records not delivered yet, and declared bad records not delivered yet.
    pub fn outstanding(&self, expectation: &Expectation) -> (u64, u64) {
        let bad = self.declared.iter().filter(|k| !self.foreign_seen.contains(*k)).count();
        (expectation.missing(&self.seen), bad as u64)
    }

    /// Distinct records delivered so far.
    pub fn distinct(&self) -> u64 {
        self.seen.len()
    }
}

/// One session: a processor's life on one lease (or the fake owner's hold of a stolen one).
#[derive(Debug)]
struct Session {
    id: String,
    incarnation: String,
    /// The fake owner's name, for a forced steal.
    thief: Option<String>,
    shard: u32,
    start: ExtendedSequenceNumber,
    init_t: u64,
    end: Option<(u64, String)>,
    checkpoints: Vec<Checkpoint>,
    /// When it first reported the lease lost.
    lost_at: Option<u64>,
}

#[derive(Debug)]
struct Checkpoint {
    position: ExtendedSequenceNumber,
    begin: u64,
    done: Option<(u64, String)>,
}

impl Checkpoint {
    fn confirmed(&self) -> bool {
        self.done.as_ref().is_some_and(|(_, outcome)| outcome == "ok")
    }
}

#[derive(Debug, Clone)]
struct Delivery {
    id: u64,
    key: u32,
    kseq: u64,
    t: u64,
    batch: u32,
    idx: u32,
    session: u32,
    pos: ExtendedSequenceNumber,
}

/// Everything the audit reads, indexed.
struct Run {
    t0: u64,
    shards: Vec<String>,
    shard_index: HashMap<String, u32>,
    workers: HashMap<String, (String, u64)>,
    sessions: Vec<Session>,
    session_index: HashMap<String, u32>,
    deliveries: Vec<Delivery>,
    foreign: Vec<(u32, String, String)>,
    other_runs: u64,
    problems: Vec<String>,
}

impl Run {
    fn shard(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.shard_index.get(name) {
            return i;
        }
        let i = self.shards.len() as u32;
        self.shards.push(name.to_owned());
        self.shard_index.insert(name.to_owned(), i);
        i
    }

    fn secs(&self, t: u64) -> f64 {
        t.saturating_sub(self.t0) as f64 / 1e6
    }

    fn worker_of(&self, session: &Session) -> String {
        if let Some(thief) = &session.thief {
            return thief.clone();
        }
        self.workers.get(&session.incarnation).map_or_else(
            || format!("(unknown process {})", session.incarnation),
            |(worker, _)| worker.clone(),
        )
    }

    fn describe(&self, s: u32) -> String {
        let session = &self.sessions[s as usize];
        format!(
            "{} of {} (started at {} from {})",
            session.id,
            self.worker_of(session),
            fmt_secs(self.secs(session.init_t)),
            session.start
        )
    }
}

fn fmt_secs(secs: f64) -> String {
    format!("+{secs:.3}s")
}

fn push_sample(sample: &mut Vec<String>, text: impl FnOnce() -> String) {
    if sample.len() < SAMPLE {
        sample.push(text());
    }
}

/// Judges a run: `events` from every event file (any order), `expectation` from the produce
/// report, `leases` the final lease table if it was read, `partial_lines` as
/// [`read_all`](super::events::read_all) counted them.
pub fn audit(
    events: &[Event],
    expectation: Option<&Expectation>,
    leases: Option<&[FinalLease]>,
    partial_lines: u64,
) -> Audit {
    let mut run = Run {
        t0: events.iter().map(Event::time).min().unwrap_or(0),
        shards: Vec::new(),
        shard_index: HashMap::new(),
        workers: HashMap::new(),
        sessions: Vec::new(),
        session_index: HashMap::new(),
        deliveries: Vec::new(),
        foreign: Vec::new(),
        other_runs: 0,
        problems: Vec::new(),
    };
    let run_id = expectation.map(|e| e.run_id);
    index(&mut run, events);

    let mut audit = Audit {
        run_id,
        expected: 0,
        producer_failed: expectation.map_or(0, |e| e.failed.count_in(0..e.records)),
        deliveries: run.deliveries.len() as u64,
        distinct: 0,
        missing: 0,
        missing_sample: Vec::new(),
        order_violations: 0,
        order_sample: Vec::new(),
        duplicates: Duplicates::default(),
        checkpoints: Checkpoints::default(),
        sessions: run.sessions.len() as u64,
        owner_changes: 0,
        shards: run.shards.len() as u64,
        worker_processes: run.workers.len() as u64,
        kills: Vec::new(),
        steals: Vec::new(),
        bad_input: BadInput::default(),
        other_runs: run.other_runs,
        partial_lines,
        ok: false,
        problems: Vec::new(),
    };

    // Lost.
    let mut seen = IdSet::new();
    for d in &run.deliveries {
        seen.insert(d.id);
    }
    audit.distinct = seen.len();
    let (range, failed) = match expectation {
        Some(e) => (0..e.records, e.failed.clone()),
        None => (0..seen.max().map_or(0, |m| m + 1), IdSet::new()),
    };
    audit.expected = (range.end - range.start) - failed.count_in(range.clone());
    let (missing, sample) = seen.missing_in(range, &failed, 20);
    audit.missing = missing;
    audit.missing_sample = sample;

    // Sessions per shard, in start order.
    let mut by_shard: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for (i, s) in run.sessions.iter().enumerate() {
        by_shard.entry(s.shard).or_default().push(i as u32);
    }
    for list in by_shard.values_mut() {
        list.sort_by_key(|&i| (run.sessions[i as usize].init_t, i));
    }
    audit.owner_changes = by_shard.values().map(|l| l.len().saturating_sub(1) as u64).sum();

    check_order(&run, &mut audit);
    check_checkpoints(&run, &by_shard, leases, &mut audit);
    check_duplicates(&run, &by_shard, &mut audit);
    measure_kills(&run, events, &by_shard, &mut audit);
    measure_steals(&run, events, &by_shard, &mut audit);
    check_bad_input(&run, events, &mut audit);

    let mut problems = std::mem::take(&mut run.problems);
    problems.append(&mut audit.problems);
    if audit.missing > 0 {
        problems.push(format!(
            "{} of {} expected record(s) lost, first {:?}",
            audit.missing, audit.expected, audit.missing_sample
        ));
    }
    if audit.expected == 0 && audit.deliveries == 0 {
        problems.push("no record of the run was delivered: nothing to verify".to_owned());
    }
    if audit.order_violations > 0 {
        problems.push(format!("{} per-key order violation(s)", audit.order_violations));
    }
    if audit.duplicates.unjustified > 0 {
        problems.push(format!("{} unjustified duplicate(s)", audit.duplicates.unjustified));
    }
    let c = &audit.checkpoints;
    for (n, what) in [
        (c.after_loss, "checkpoint(s) confirmed after the lease had passed to another holder"),
        (
            c.started_on_taken_lease,
            "session(s) handed out records of a lease another worker had already taken",
        ),
        (c.stale_starts, "session(s) started before a checkpoint an earlier holder confirmed"),
        (c.phantom_starts, "session(s) started past any checkpoint written"),
        (c.delivered_before_start, "record(s) delivered at or before their session's checkpoint"),
        (
            c.table_mismatches,
            "final lease checkpoint(s) behind the last confirmed one or never written",
        ),
    ] {
        if n > 0 {
            problems.push(format!("{n} {what}"));
        }
    }
    let corrupt = audit.bad_input.foreign_by_reason.get(Foreign::ChecksumMismatch.as_str());
    if let Some(n) = corrupt.filter(|n| **n > 0) {
        problems.push(format!("{n} damaged payload(s) (checksum mismatch)"));
    }
    audit.ok = problems.is_empty();
    audit.problems = problems;
    audit
}

/// Builds sessions and deliveries from the events.
fn index(run: &mut Run, events: &[Event]) {
    // First the processes and sessions, so that the order of the files does not matter.
    let mut steals: Vec<&Event> = Vec::new();
    for event in events {
        match event {
            Event::Worker { t, incarnation, worker, .. } => {
                run.workers.insert(incarnation.clone(), (worker.clone(), *t));
            }
            Event::Init { t, session, incarnation, shard, checkpoint } => {
                let start = match parse_position(checkpoint) {
                    Ok(p) => p,
                    Err(e) => {
                        run.problems.push(format!("session {session}: {e}"));
                        continue;
                    }
                };
                let shard = run.shard(shard);
                run.session_index.insert(session.clone(), run.sessions.len() as u32);
                run.sessions.push(Session {
                    id: session.clone(),
                    incarnation: incarnation.clone(),
                    thief: None,
                    shard,
                    start,
                    init_t: *t,
                    end: None,
                    checkpoints: Vec::new(),
                    lost_at: None,
                });
            }
            Event::Steal { .. } => steals.push(event),
            _ => {}
        }
    }
    steals.sort_by_key(|e| e.time());
    for event in steals {
        let Event::Steal { t, shard, to, checkpoint, .. } = event else { continue };
        let Ok(start) = parse_position(checkpoint) else {
            run.problems.push(format!("steal of {shard}: bad checkpoint {checkpoint:?}"));
            continue;
        };
        let release = events
            .iter()
            .filter_map(|e| match e {
                Event::Release { t: r, shard: s } if s == shard && *r >= *t => Some(*r),
                _ => None,
            })
            .min();
        let id = format!("steal:{shard}@{t}");
        let shard = run.shard(shard);
        run.session_index.insert(id.clone(), run.sessions.len() as u32);
        run.sessions.push(Session {
            id,
            incarnation: String::new(),
            thief: Some(to.clone()),
            shard,
            start,
            init_t: *t,
            end: release.map(|r| (r, "released".to_owned())),
            checkpoints: Vec::new(),
            lost_at: None,
        });
    }

    let mut unknown = BTreeSet::new();
    let mut batch_no = 0u32;
    for event in events {
        match event {
            Event::Batch { t, session, records, foreign, other_runs, .. } => {
                let Some(&s) = run.session_index.get(session) else {
                    unknown.insert(session.clone());
                    continue;
                };
                batch_no += 1;
                run.other_runs += other_runs;
                let shard = run.sessions[s as usize].shard;
                for (idx, Delivered(sequence, sub, id, key, kseq)) in records.iter().enumerate() {
                    let Ok(sequence) = SequenceNumber::new(sequence.as_str()) else {
                        run.problems.push(format!("session {session}: bad sequence {sequence:?}"));
                        continue;
                    };
                    run.deliveries.push(Delivery {
                        id: *id,
                        key: *key,
                        kseq: *kseq,
                        t: *t,
                        batch: batch_no,
                        idx: idx as u32,
                        session: s,
                        pos: ExtendedSequenceNumber::new(sequence, *sub),
                    });
                }
                for record in foreign {
                    run.foreign.push((shard, record.0.clone(), record.2.clone()));
                }
            }
            Event::CheckpointBegin { t, session, position, .. } => {
                let Some(&s) = run.session_index.get(session) else {
                    unknown.insert(session.clone());
                    continue;
                };
                match parse_position(position) {
                    Ok(position) => run.sessions[s as usize].checkpoints.push(Checkpoint {
                        position,
                        begin: *t,
                        done: None,
                    }),
                    Err(e) => run.problems.push(format!("session {session}: {e}")),
                }
            }
            Event::CheckpointDone { t, session, position, outcome, .. } => {
                let Some(&s) = run.session_index.get(session) else {
                    unknown.insert(session.clone());
                    continue;
                };
                let Ok(position) = parse_position(position) else { continue };
                let session = &mut run.sessions[s as usize];
                if let Some(c) = session
                    .checkpoints
                    .iter_mut()
                    .rev()
                    .find(|c| c.position == position && c.done.is_none())
                {
                    c.done = Some((*t, outcome.clone()));
                }
                if outcome == "lease-lost" && session.lost_at.is_none_or(|l| l > *t) {
                    session.lost_at = Some(*t);
                }
            }
            Event::End { t, session, reason, .. } => {
                let Some(&s) = run.session_index.get(session) else {
                    unknown.insert(session.clone());
                    continue;
                };
                let session = &mut run.sessions[s as usize];
                let reason_text = match reason {
                    EndReason::ShardEnd => "shard-end",
                    EndReason::LeaseLost => "lease-lost",
                    EndReason::Shutdown => "shutdown",
                };
                session.end = Some((*t, reason_text.to_owned()));
                if *reason == EndReason::LeaseLost && session.lost_at.is_none_or(|l| l > *t) {
                    session.lost_at = Some(*t);
                }
            }
            _ => {}
        }
    }
    if !unknown.is_empty() {
        run.problems.push(format!(
            "events of {} session(s) without an init line, e.g. {:?}",
            unknown.len(),
            unknown.iter().take(3).collect::<Vec<_>>()
        ));
    }

    // A killed process's open sessions end at the kill.
    for event in events {
        let Event::Kill { t, worker } = event else { continue };
        let Some(incarnation) = incarnation_at(run, worker, *t) else { continue };
        for session in run.sessions.iter_mut() {
            if session.incarnation == incarnation && session.end.is_none() && session.init_t <= *t {
                session.end = Some((*t, "killed".to_owned()));
            }
        }
    }
}

/// The process of `worker` that was running at `t` (the last one started before it).
fn incarnation_at(run: &Run, worker: &str, t: u64) -> Option<String> {
    run.workers
        .iter()
        .filter(|(_, (w, started))| w == worker && *started <= t)
        .max_by_key(|(_, (_, started))| *started)
        .map(|(incarnation, _)| incarnation.clone())
}

/// Per-key order of first deliveries, across every session.
fn check_order(run: &Run, audit: &mut Audit) {
    let mut order: Vec<u32> = (0..run.deliveries.len() as u32).collect();
    order.sort_by_key(|&i| {
        let d = &run.deliveries[i as usize];
        (d.t, d.batch, d.idx)
    });
    let mut first: HashSet<u64> = HashSet::new();
    let mut per_key: HashMap<u32, Vec<u32>> = HashMap::new();
    for i in order {
        let d = &run.deliveries[i as usize];
        if first.insert(d.id) {
            per_key.entry(d.key).or_default().push(i);
        }
    }
    let mut keys: Vec<u32> = per_key.keys().copied().collect();
    keys.sort_unstable();
    for key in keys {
        let mut list = per_key.remove(&key).unwrap_or_default();
        list.sort_by_key(|&i| std::cmp::Reverse(run.deliveries[i as usize].kseq));
        // The earliest first delivery among records later in the key.
        let mut earliest: Option<&Delivery> = None;
        for i in list {
            let d = &run.deliveries[i as usize];
            if let Some(m) = earliest {
                let later = d.t > m.t || (d.t == m.t && d.batch == m.batch && d.idx > m.idx);
                if later {
                    audit.order_violations += 1;
                    push_sample(&mut audit.order_sample, || {
                        format!(
                            "key-{key}: #{} (record {}) first delivered at {} by {}, after #{} (record {}) at {} by {}",
                            d.kseq,
                            d.id,
                            fmt_secs(run.secs(d.t)),
                            run.describe(d.session),
                            m.kseq,
                            m.id,
                            fmt_secs(run.secs(m.t)),
                            run.describe(m.session)
                        )
                    });
                }
            }
            if earliest.is_none_or(|m| (d.t, d.batch, d.idx) < (m.t, m.batch, m.idx)) {
                earliest = Some(d);
            }
        }
    }
}

/// For each session, the highest checkpoint confirmed by sessions of its shard that started
/// before it, and the highest position written or started from by them.
fn prior_maxima(
    run: &Run,
    by_shard: &BTreeMap<u32, Vec<u32>>,
) -> HashMap<u32, (Option<ExtendedSequenceNumber>, Option<ExtendedSequenceNumber>)> {
    let mut out = HashMap::new();
    for list in by_shard.values() {
        let mut confirmed: Option<ExtendedSequenceNumber> = None;
        let mut written: Option<ExtendedSequenceNumber> = None;
        for &s in list {
            out.insert(s, (confirmed.clone(), written.clone()));
            let session = &run.sessions[s as usize];
            for c in &session.checkpoints {
                if c.confirmed() && confirmed.as_ref().is_none_or(|m| c.position > *m) {
                    confirmed = Some(c.position.clone());
                }
                if written.as_ref().is_none_or(|m| c.position > *m) {
                    written = Some(c.position.clone());
                }
            }
            if written.as_ref().is_none_or(|m| session.start > *m) {
                written = Some(session.start.clone());
            }
        }
    }
    out
}

/// Sessions that started on a lease another worker had already taken: a session that never
/// confirmed a checkpoint and reported the lease lost, started while the session before it
/// was still confirming checkpoints (which only the holder can).
fn sessions_on_taken_leases(run: &Run, by_shard: &BTreeMap<u32, Vec<u32>>) -> HashSet<u32> {
    let mut out = HashSet::new();
    for list in by_shard.values() {
        for pair in list.windows(2) {
            let (before, after) =
                (&run.sessions[pair[0] as usize], &run.sessions[pair[1] as usize]);
            let held_later =
                before.checkpoints.iter().any(|c| c.confirmed() && c.begin > after.init_t);
            let zombie = after.thief.is_none()
                && after.lost_at.is_some()
                && !after.checkpoints.iter().any(Checkpoint::confirmed);
            if held_later && zombie {
                out.insert(pair[1]);
            }
        }
    }
    out
}

fn check_checkpoints(
    run: &Run,
    by_shard: &BTreeMap<u32, Vec<u32>>,
    leases: Option<&[FinalLease]>,
    audit: &mut Audit,
) {
    let c = &mut audit.checkpoints;
    let prior = prior_maxima(run, by_shard);
    let zombies = sessions_on_taken_leases(run, by_shard);
    c.started_on_taken_lease = zombies.len() as u64;
    let mut listed: Vec<u32> = zombies.iter().copied().collect();
    listed.sort_unstable();
    for z in listed {
        push_sample(&mut c.sample, || {
            format!(
                "{}: {} started after another worker had taken the lease (it never confirmed a \
                 checkpoint and reported the lease lost; the holder confirmed checkpoints after it started)",
                run.shards[run.sessions[z as usize].shard as usize],
                run.describe(z)
            )
        });
    }
    for list in by_shard.values() {
        for (k, &s) in list.iter().enumerate() {
            let session = &run.sessions[s as usize];
            // The next holder: the next session that did hold the lease when it started.
            let next = list[k + 1..]
                .iter()
                .find(|n| !zombies.contains(n))
                .map(|&n| &run.sessions[n as usize]);
            for ckpt in &session.checkpoints {
                match &ckpt.done {
                    None => c.unanswered += 1,
                    Some((_, outcome)) if outcome == "ok" => c.confirmed += 1,
                    Some((_, outcome)) if outcome == "lease-lost" => c.refused_lease_lost += 1,
                    Some(_) => c.failed += 1,
                }
                if !ckpt.confirmed() {
                    continue;
                }
                let after_next = next.filter(|n| n.init_t < ckpt.begin);
                // Its own report of the loss, or its end (a kill included): nothing of the
                // session can write after that.
                let ended = session.end.as_ref().map(|(t, _)| *t);
                let after_own_loss =
                    session.lost_at.into_iter().chain(ended).find(|l| *l < ckpt.begin);
                if after_next.is_some() || after_own_loss.is_some() {
                    c.after_loss += 1;
                    push_sample(&mut c.sample, || match after_next {
                        Some(n) => format!(
                            "{}: checkpoint {} begun at {} by {}, after {} had started at {}",
                            run.shards[session.shard as usize],
                            ckpt.position,
                            fmt_secs(run.secs(ckpt.begin)),
                            run.describe(s),
                            n.id,
                            fmt_secs(run.secs(n.init_t))
                        ),
                        None => format!(
                            "{}: checkpoint {} begun at {} by {}, after it reported the lease lost or ended",
                            run.shards[session.shard as usize],
                            ckpt.position,
                            fmt_secs(run.secs(ckpt.begin)),
                            run.describe(s)
                        ),
                    });
                }
            }
            if zombies.contains(&s) {
                continue;
            }
            let (confirmed, written) = prior.get(&s).cloned().unwrap_or((None, None));
            if let Some(confirmed) = confirmed.filter(|m| *m > session.start) {
                c.stale_starts += 1;
                push_sample(&mut c.sample, || {
                    format!(
                        "{}: {} started at {} though an earlier holder had confirmed {confirmed}",
                        run.shards[session.shard as usize],
                        run.describe(s),
                        session.start
                    )
                });
            }
            let phantom =
                !session.start.is_sentinel() && written.as_ref().is_none_or(|w| session.start > *w);
            if phantom {
                c.phantom_starts += 1;
                push_sample(&mut c.sample, || {
                    format!(
                        "{}: {} started at {}, past anything written before ({})",
                        run.shards[session.shard as usize],
                        run.describe(s),
                        session.start,
                        written.as_ref().map_or("nothing".to_owned(), ToString::to_string)
                    )
                });
            }
        }
    }
    for d in &run.deliveries {
        let session = &run.sessions[d.session as usize];
        if d.pos <= session.start {
            c.delivered_before_start += 1;
            push_sample(&mut c.sample, || {
                format!(
                    "{}: record {} at {} delivered by {}",
                    run.shards[session.shard as usize],
                    d.id,
                    d.pos,
                    run.describe(d.session)
                )
            });
        }
    }
    let Some(leases) = leases else { return };
    for lease in leases {
        let Some(&shard) = run.shard_index.get(&lease.shard) else { continue };
        let Some(list) = by_shard.get(&shard) else { continue };
        let Ok(table) = parse_position(&lease.checkpoint) else {
            c.table_mismatches += 1;
            push_sample(&mut c.sample, || {
                format!(
                    "{}: final checkpoint {:?} is not a position",
                    lease.shard, lease.checkpoint
                )
            });
            continue;
        };
        c.table_leases_checked += 1;
        let sessions = list.iter().map(|&s| &run.sessions[s as usize]);
        let mut confirmed: Option<&ExtendedSequenceNumber> = None;
        let mut written: HashSet<&ExtendedSequenceNumber> = HashSet::new();
        for session in sessions {
            written.insert(&session.start);
            for ckpt in &session.checkpoints {
                written.insert(&ckpt.position);
                if ckpt.confirmed() && confirmed.is_none_or(|m| ckpt.position > *m) {
                    confirmed = Some(&ckpt.position);
                }
            }
        }
        let behind = confirmed.is_some_and(|m| table < *m);
        if behind || !written.contains(&table) {
            c.table_mismatches += 1;
            push_sample(&mut c.sample, || {
                format!(
                    "{}: final checkpoint {table}, last confirmed {}",
                    lease.shard,
                    confirmed.map_or("none".to_owned(), ToString::to_string)
                )
            });
        }
    }
}

fn check_duplicates(run: &Run, by_shard: &BTreeMap<u32, Vec<u32>>, audit: &mut Audit) {
    let dup = &mut audit.duplicates;
    dup.total = audit.deliveries - audit.distinct;
    let prior = prior_maxima(run, by_shard);
    let zombies = sessions_on_taken_leases(run, by_shard);
    let mut order: Vec<u32> = (0..run.deliveries.len() as u32).collect();
    order.sort_by_key(|&i| {
        let d = &run.deliveries[i as usize];
        (d.id, d.t, d.batch, d.idx)
    });
    let mut i = 0;
    while i < order.len() {
        let id = run.deliveries[order[i] as usize].id;
        let mut j = i;
        while j < order.len() && run.deliveries[order[j] as usize].id == id {
            j += 1;
        }
        if j - i > 1 {
            // Deliveries of this record, by position, in time order.
            let mut positions: Vec<((u32, &ExtendedSequenceNumber), Vec<&Delivery>)> = Vec::new();
            for &k in &order[i..j] {
                let d = &run.deliveries[k as usize];
                let key = (run.sessions[d.session as usize].shard, &d.pos);
                match positions.iter_mut().find(|(p, _)| *p == key) {
                    Some((_, list)) => list.push(d),
                    None => positions.push((key, vec![d])),
                }
            }
            if positions.len() > 1 {
                dup.written_more_than_once += 1;
                dup.producer_copies += positions.len() as u64 - 1;
            }
            for ((shard, pos), list) in &positions {
                for (n, d) in list.iter().enumerate().skip(1) {
                    let session = &run.sessions[d.session as usize];
                    if zombies.contains(&d.session) {
                        dup.from_sessions_on_taken_leases += 1;
                        continue;
                    }
                    let why = if list[..n].iter().any(|e| e.session == d.session) {
                        Some("delivered twice in one session".to_owned())
                    } else if **pos <= session.start {
                        Some(format!("at or before the session's checkpoint {}", session.start))
                    } else {
                        match prior.get(&d.session).and_then(|(c, _)| c.clone()) {
                            Some(c) if c >= **pos => Some(format!(
                                "an earlier holder had confirmed checkpoint {c} at or past it"
                            )),
                            _ => None,
                        }
                    };
                    match why {
                        None => dup.rereads_justified += 1,
                        Some(why) => {
                            dup.unjustified += 1;
                            push_sample(&mut dup.unjustified_sample, || {
                                format!(
                                    "record {id} at {}/{pos} again by {}: {why}",
                                    run.shards[*shard as usize],
                                    run.describe(d.session)
                                )
                            });
                        }
                    }
                }
            }
        }
        i = j;
    }
}

fn next_session_after(
    run: &Run,
    by_shard: &BTreeMap<u32, Vec<u32>>,
    shard: u32,
    t: u64,
    real_only: bool,
) -> Option<u32> {
    by_shard.get(&shard)?.iter().copied().find(|&s| {
        let session = &run.sessions[s as usize];
        session.init_t > t && (!real_only || session.thief.is_none())
    })
}

fn measure_kills(
    run: &Run,
    events: &[Event],
    by_shard: &BTreeMap<u32, Vec<u32>>,
    audit: &mut Audit,
) {
    for event in events {
        let Event::Kill { t, worker } = event else { continue };
        let incarnation = incarnation_at(run, worker, *t);
        let mut shards = Vec::new();
        for session in &run.sessions {
            let killed = session.end.as_ref().is_some_and(|(e, r)| e == t && r == "killed");
            if !killed || Some(&session.incarnation) != incarnation.as_ref() {
                continue;
            }
            let next = next_session_after(run, by_shard, session.shard, *t, false);
            shards.push(Takeover {
                shard: run.shards[session.shard as usize].clone(),
                after_secs: next.map(|n| (run.sessions[n as usize].init_t - t) as f64 / 1e6),
                by: next.map(|n| run.worker_of(&run.sessions[n as usize])),
            });
        }
        shards.sort_by(|a, b| a.shard.cmp(&b.shard));
        let restarted = events
            .iter()
            .filter_map(|e| match e {
                Event::Restart { t: r, worker: w } if w == worker && r >= t => Some(*r),
                _ => None,
            })
            .min();
        audit.kills.push(KillReport {
            worker: worker.clone(),
            at_secs: run.secs(*t),
            shards,
            restarted_after_secs: restarted.map(|r| (r - t) as f64 / 1e6),
        });
    }
}

fn measure_steals(
    run: &Run,
    events: &[Event],
    by_shard: &BTreeMap<u32, Vec<u32>>,
    audit: &mut Audit,
) {
    for event in events {
        let Event::Steal { t, shard, from, .. } = event else { continue };
        let shard_no = run.shard_index.get(shard).copied();
        let victim = shard_no.and_then(|n| {
            by_shard.get(&n)?.iter().rev().copied().find(|&s| {
                let session = &run.sessions[s as usize];
                session.thief.is_none() && session.init_t < *t && run.worker_of(session) == *from
            })
        });
        let held = events.iter().find_map(|e| match e {
            Event::StealHeld { t: h, shard: s, renewals, checkpoint_unchanged, outcome }
                if s == shard && h >= t =>
            {
                Some((*renewals, *checkpoint_unchanged, outcome.clone()))
            }
            _ => None,
        });
        let release = events
            .iter()
            .filter_map(|e| match e {
                Event::Release { t: r, shard: s } if s == shard && r >= t => Some(*r),
                _ => None,
            })
            .min();
        let mut report = StealReport {
            shard: shard.clone(),
            victim: from.clone(),
            at_secs: run.secs(*t),
            noticed_after_secs: None,
            renewals: held.as_ref().map_or(0, |h| h.0),
            checkpoint_unchanged: held.as_ref().map(|h| h.1),
            hold_outcome: held.as_ref().map(|h| h.2.clone()),
            held_secs: release.map(|r| (r - t) as f64 / 1e6),
            taken_back: None,
        };
        match victim.map(|v| &run.sessions[v as usize]) {
            None => run_problem(
                audit,
                format!(
                    "steal of {shard} at {}: no session of {from} held it",
                    fmt_secs(run.secs(*t))
                ),
            ),
            Some(v) if v.end.as_ref().is_some_and(|(e, _)| e < t) => run_problem(
                audit,
                format!(
                    "steal of {shard} at {}: {from}'s session had already ended",
                    fmt_secs(run.secs(*t))
                ),
            ),
            Some(v) => match v.lost_at.filter(|l| l >= t) {
                Some(l) => report.noticed_after_secs = Some((l - t) as f64 / 1e6),
                None => run_problem(
                    audit,
                    format!(
                        "steal of {shard} at {}: {from} never reported the lease lost",
                        fmt_secs(run.secs(*t))
                    ),
                ),
            },
        }
        if held.as_ref().is_some_and(|h| !h.1) {
            run_problem(
                audit,
                format!(
                    "steal of {shard}: the checkpoint changed while the fake owner held the lease"
                ),
            );
        }
        if let (Some(r), Some(n)) = (release, shard_no) {
            let next = next_session_after(run, by_shard, n, r, true);
            report.taken_back = Some(Takeover {
                shard: shard.clone(),
                after_secs: next.map(|s| (run.sessions[s as usize].init_t - r) as f64 / 1e6),
                by: next.map(|s| run.worker_of(&run.sessions[s as usize])),
            });
        }
        audit.steals.push(report);
    }
}

fn run_problem(audit: &mut Audit, problem: String) {
    audit.problems.push(problem);
}

fn check_bad_input(run: &Run, events: &[Event], audit: &mut Audit) {
    let bad = &mut audit.bad_input;
    let mut delivered: HashSet<(&str, &str)> = HashSet::new();
    for (shard, sequence, reason) in &run.foreign {
        *bad.foreign_by_reason.entry(reason.clone()).or_default() += 1;
        delivered.insert((run.shards[*shard as usize].as_str(), sequence.as_str()));
    }
    let mut declared: HashSet<(&str, &str)> = HashSet::new();
    let mut missing = Vec::new();
    for event in events {
        let Event::BadInput { shard, sequence, kind, .. } = event else { continue };
        bad.written += 1;
        declared.insert((shard.as_str(), sequence.as_str()));
        if delivered.contains(&(shard.as_str(), sequence.as_str())) {
            bad.delivered += 1;
        } else {
            missing.push(format!("{kind} at {shard}/{sequence}"));
        }
    }
    bad.undeclared = delivered.iter().filter(|k| !declared.contains(*k)).count() as u64;
    if !missing.is_empty() {
        let n = missing.len();
        missing.truncate(SAMPLE);
        audit.problems.push(format!("{n} bad record(s) written but never delivered: {missing:?}"));
    }
}

impl Audit {
    /// The report as text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "audit of {}: {}",
            self.run_id.map_or("every run".to_owned(), |r| format!("run {r}")),
            if self.ok { "OK" } else { "FAILED" }
        );
        let _ = writeln!(
            out,
            "  records      {} expected ({} failed at the producer), {} delivered, {} lost{}",
            self.expected,
            self.producer_failed,
            self.distinct,
            self.missing,
            if self.missing > 0 {
                format!(", first {:?}", self.missing_sample)
            } else {
                String::new()
            }
        );
        let d = &self.duplicates;
        let _ = writeln!(
            out,
            "  duplicates   {} deliveries beyond the first: {} re-read after an owner change (justified), \
             {} copies of {} record(s) the producer wrote more than once, {} from sessions on leases \
             already taken, {} unjustified",
            d.total,
            d.rereads_justified,
            d.producer_copies,
            d.written_more_than_once,
            d.from_sessions_on_taken_leases,
            d.unjustified
        );
        let _ = writeln!(out, "  order        {} per-key violation(s)", self.order_violations);
        let c = &self.checkpoints;
        let _ = writeln!(
            out,
            "  checkpoints  {} confirmed, {} unanswered (killed), {} refused as lease lost, {} failed; \
             after loss {}, sessions on taken leases {}, stale starts {}, phantom starts {}, \
             before start {}, final table {} of {} wrong",
            c.confirmed,
            c.unanswered,
            c.refused_lease_lost,
            c.failed,
            c.after_loss,
            c.started_on_taken_lease,
            c.stale_starts,
            c.phantom_starts,
            c.delivered_before_start,
            c.table_mismatches,
            c.table_leases_checked
        );
        let _ = writeln!(
            out,
            "  leases       {} sessions on {} shards by {} worker process(es), {} owner change(s)",
            self.sessions, self.shards, self.worker_processes, self.owner_changes
        );
        for kill in &self.kills {
            let _ = writeln!(
                out,
                "  kill         {} at {}: {} shard(s) taken over, slowest after {}{}",
                kill.worker,
                fmt_secs(kill.at_secs),
                kill.shards.len(),
                kill.max_takeover_secs()
                    .map_or("(not all taken over)".to_owned(), |s| format!("{s:.1} s")),
                kill.restarted_after_secs
                    .map_or(String::new(), |r| format!("; restarted after {r:.1} s"))
            );
            for s in &kill.shards {
                let _ = writeln!(
                    out,
                    "                 {} by {} after {}",
                    s.shard,
                    s.by.as_deref().unwrap_or("nobody"),
                    s.after_secs.map_or("-".to_owned(), |a| format!("{a:.1} s"))
                );
            }
        }
        for steal in &self.steals {
            let _ = writeln!(
                out,
                "  steal        {} from {} at {}: noticed after {}, held {} ({} renewals, checkpoint {}), taken back by {} after {}",
                steal.shard,
                steal.victim,
                fmt_secs(steal.at_secs),
                steal.noticed_after_secs.map_or("never".to_owned(), |s| format!("{s:.1} s")),
                steal.held_secs.map_or("-".to_owned(), |s| format!("{s:.1} s")),
                steal.renewals,
                match steal.checkpoint_unchanged {
                    Some(true) => "unchanged",
                    Some(false) => "CHANGED",
                    None => "not checked",
                },
                steal.taken_back.as_ref().and_then(|t| t.by.as_deref()).unwrap_or("nobody"),
                steal
                    .taken_back
                    .as_ref()
                    .and_then(|t| t.after_secs)
                    .map_or("-".to_owned(), |s| format!("{s:.1} s"))
            );
        }
        let b = &self.bad_input;
        let _ = writeln!(
            out,
            "  bad input    {} written, {} delivered; foreign deliveries {:?}, {} undeclared",
            b.written, b.delivered, b.foreign_by_reason, b.undeclared
        );
        if self.partial_lines > 0 {
            let _ = writeln!(
                out,
                "  note         {} event file(s) end in a line cut short (a killed worker), ignored",
                self.partial_lines
            );
        }
        for sample in self
            .order_sample
            .iter()
            .chain(&self.duplicates.unjustified_sample)
            .chain(&self.checkpoints.sample)
        {
            let _ = writeln!(out, "  example      {sample}");
        }
        for problem in &self.problems {
            let _ = writeln!(out, "  PROBLEM      {problem}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::events::ForeignRecord;

    const RUN: RunId = RunId(9);
    const S: &str = "shardId-000000000000";

    fn expect(records: u64) -> Expectation {
        Expectation { run_id: RUN, records, failed: IdSet::new() }
    }

    fn worker(t: u64, inc: &str, w: &str) -> Event {
        Event::Worker { t, incarnation: inc.into(), worker: w.into(), pid: 1 }
    }

    fn init(t: u64, session: &str, inc: &str, checkpoint: &str) -> Event {
        Event::Init {
            t,
            session: session.into(),
            incarnation: inc.into(),
            shard: S.into(),
            checkpoint: checkpoint.into(),
        }
    }

    /// A batch of records `(sequence, id)`, all of key 0 with key sequence = id.
    fn batch(t: u64, session: &str, records: &[(u64, u64)]) -> Event {
        Event::Batch {
            t,
            session: session.into(),
            shard: S.into(),
            records: records
                .iter()
                .map(|&(seq, id)| Delivered(seq.to_string(), 0, id, 0, id))
                .collect(),
            foreign: Vec::new(),
            other_runs: 0,
        }
    }

    fn ckpt(t: u64, session: &str, seq: u64, outcome: Option<&str>) -> Vec<Event> {
        let position = format!("{seq}/0");
        let mut out = vec![Event::CheckpointBegin {
            t,
            session: session.into(),
            shard: S.into(),
            position: position.clone(),
        }];
        if let Some(outcome) = outcome {
            out.push(Event::CheckpointDone {
                t: t + 1,
                session: session.into(),
                shard: S.into(),
                position,
                outcome: outcome.into(),
            });
        }
        out
    }

    fn end(t: u64, session: &str, reason: EndReason) -> Event {
        Event::End { t, session: session.into(), shard: S.into(), reason }
    }

    /// w1 reads records 0..4 at sequences 10..14, checkpoints 12, is killed; w2 takes over from
    /// 12 and reads 13..14 again, then the rest.
    fn handover() -> Vec<Event> {
        let mut events = vec![
            worker(1, "a", "w1"),
            worker(1, "b", "w2"),
            init(10, "a/0", "a", "TRIM_HORIZON"),
            batch(20, "a/0", &[(10, 0), (11, 1), (12, 2)]),
        ];
        events.extend(ckpt(21, "a/0", 12, Some("ok")));
        events.push(batch(30, "a/0", &[(13, 3), (14, 4)]));
        events.extend(ckpt(31, "a/0", 14, None)); // killed before the answer
        events.push(Event::Kill { t: 40, worker: "w1".into() });
        events.push(init(50, "b/0", "b", "12/0"));
        events.push(batch(60, "b/0", &[(13, 3), (14, 4), (15, 5)]));
        events.extend(ckpt(61, "b/0", 15, Some("ok")));
        events.push(end(70, "b/0", EndReason::Shutdown));
        events
    }

    #[test]
    fn rereads_after_a_kill_are_justified_and_the_takeover_is_measured() {
        let leases = [FinalLease { shard: S.into(), owner: None, checkpoint: "15/0".into() }];
        let audit = audit(&handover(), Some(&expect(6)), Some(&leases), 0);
        assert!(audit.ok, "{}", audit.render());
        assert_eq!((audit.distinct, audit.missing, audit.deliveries), (6, 0, 8));
        assert_eq!(audit.duplicates.rereads_justified, 2);
        assert_eq!(audit.duplicates.unjustified, 0);
        assert_eq!(audit.checkpoints.unanswered, 1);
        assert_eq!(audit.checkpoints.table_leases_checked, 1);
        assert_eq!(audit.owner_changes, 1);
        let kill = &audit.kills[0];
        assert_eq!(kill.shards.len(), 1);
        assert_eq!(kill.shards[0].by.as_deref(), Some("w2"));
        assert!((kill.max_takeover_secs().unwrap() - 10e-6).abs() < 1e-9);
    }

    #[test]
    fn a_session_starting_before_a_confirmed_checkpoint_makes_rereads_unjustified() {
        // w2 starts from 11 though w1 confirmed 12: a lost checkpoint.
        let events: Vec<Event> = handover()
            .into_iter()
            .map(|e| match e {
                Event::Init { session, .. } if session == "b/0" => init(50, "b/0", "b", "11/0"),
                other => other,
            })
            .chain([batch(55, "b/0", &[(12, 2)])])
            .collect();
        let audit = audit(&events, Some(&expect(6)), None, 0);
        assert!(!audit.ok);
        assert_eq!(audit.checkpoints.stale_starts, 1, "{}", audit.render());
        assert_eq!(audit.duplicates.unjustified, 1, "{}", audit.render());
        assert!(audit.duplicates.unjustified_sample[0].contains("had confirmed checkpoint 12/0"));
    }

    #[test]
    fn a_checkpoint_confirmed_after_the_next_holder_started_is_flagged() {
        let mut events = handover();
        // w1 (not killed after all) confirms 14 at 55, after w2 started at 50.
        events.retain(|e| !matches!(e, Event::Kill { .. } | Event::CheckpointBegin { t: 31, .. }));
        events.extend(ckpt(55, "a/0", 14, Some("ok")));
        let audit = audit(&events, Some(&expect(6)), None, 0);
        assert_eq!(audit.checkpoints.after_loss, 1, "{}", audit.render());
        // And w2's rereads of 13 and 14 are no longer justified: w1 confirmed past them.
        assert_eq!(audit.duplicates.unjustified, 2);
        assert!(!audit.ok);
    }

    #[test]
    fn a_session_started_on_a_lease_already_taken_is_named_as_such() {
        // w2 took the lease first but started after w1 had taken it over (it waited on a
        // parent): w1 confirms, w2 reads the same records from TRIM_HORIZON and is refused.
        let mut events = vec![
            worker(1, "a", "w1"),
            worker(1, "b", "w2"),
            init(10, "a/0", "a", "TRIM_HORIZON"),
            init(11, "b/0", "b", "TRIM_HORIZON"),
            batch(12, "a/0", &[(10, 0), (11, 1)]),
        ];
        events.extend(ckpt(13, "a/0", 11, Some("ok")));
        events.push(batch(14, "b/0", &[(10, 0), (11, 1)]));
        events.extend(ckpt(15, "b/0", 11, Some("lease-lost")));
        events.push(end(16, "b/0", EndReason::LeaseLost));
        let audit = audit_of(&events, 2);
        let c = &audit.checkpoints;
        assert_eq!(c.started_on_taken_lease, 1, "{}", audit.render());
        assert_eq!((c.after_loss, c.stale_starts), (0, 0), "w1 held it: {}", audit.render());
        assert_eq!(audit.duplicates.from_sessions_on_taken_leases, 2);
        assert_eq!(audit.duplicates.unjustified, 0);
        assert!(!audit.ok);
        assert!(audit.problems.iter().any(|p| p.contains("already taken")), "{:?}", audit.problems);
        // Had w2 confirmed a checkpoint too, both would have written: a broken fence.
        let mut fenced = events.clone();
        fenced.extend(ckpt(17, "b/0", 11, Some("ok")));
        let broken = audit_of(&fenced, 2);
        assert_eq!(broken.checkpoints.started_on_taken_lease, 0);
        assert!(broken.checkpoints.after_loss > 0, "{}", broken.render());
    }

    #[test]
    fn a_checkpoint_after_the_session_ended_is_flagged() {
        let mut events = handover();
        // w1 was killed at 40: a confirmed checkpoint begun at 45 cannot be its.
        events.extend(ckpt(45, "a/0", 13, Some("ok")));
        let audit = audit_of(&events, 6);
        assert_eq!(audit.checkpoints.after_loss, 1, "{}", audit.render());
        assert!(!audit.ok);
    }

    #[test]
    fn a_forced_steal_counts_as_a_holder_and_the_victim_must_notice() {
        let mut events = vec![worker(1, "a", "w1"), init(10, "a/0", "a", "TRIM_HORIZON")];
        events.push(batch(20, "a/0", &[(10, 0)]));
        events.extend(ckpt(21, "a/0", 10, Some("ok")));
        events.push(Event::Steal {
            t: 30,
            shard: S.into(),
            from: "w1".into(),
            to: "thief".into(),
            checkpoint: "10/0".into(),
        });
        events.push(batch(31, "a/0", &[(11, 1)]));
        events.extend(ckpt(32, "a/0", 11, Some("lease-lost")));
        events.push(end(33, "a/0", EndReason::LeaseLost));
        events.push(Event::StealHeld {
            t: 40,
            shard: S.into(),
            renewals: 3,
            checkpoint_unchanged: true,
            outcome: "held".into(),
        });
        events.push(Event::Release { t: 41, shard: S.into() });
        events.push(worker(42, "b", "w2"));
        events.push(init(50, "b/0", "b", "10/0"));
        events.push(batch(51, "b/0", &[(11, 1)]));
        let audit = audit(&events, Some(&expect(2)), None, 0);
        assert!(audit.ok, "{}", audit.render());
        let steal = &audit.steals[0];
        assert!((steal.noticed_after_secs.unwrap() - 3e-6).abs() < 1e-9);
        assert_eq!(steal.taken_back.as_ref().unwrap().by.as_deref(), Some("w2"));
        assert_eq!(audit.checkpoints.refused_lease_lost, 1);
        assert_eq!(audit.duplicates.rereads_justified, 1);

        // Had the victim's checkpoint been confirmed after the steal, it would be a violation.
        let confirmed: Vec<Event> = events
            .iter()
            .cloned()
            .map(|e| match e {
                Event::CheckpointDone { t: 33, session, shard, position, .. } => {
                    Event::CheckpointDone { t: 33, session, shard, position, outcome: "ok".into() }
                }
                other => other,
            })
            .filter(|e| !matches!(e, Event::End { .. }))
            .collect();
        let bad = audit_of(&confirmed, 2);
        assert_eq!(bad.checkpoints.after_loss, 1, "{}", bad.render());
        assert!(bad.problems.iter().any(|p| p.contains("never reported the lease lost")));
    }

    fn audit_of(events: &[Event], records: u64) -> Audit {
        audit(events, Some(&expect(records)), None, 0)
    }

    #[test]
    fn order_is_judged_across_workers_by_first_delivery() {
        let events = vec![
            worker(1, "a", "w1"),
            init(10, "a/0", "a", "TRIM_HORIZON"),
            // Within one batch the order decides.
            batch(20, "a/0", &[(10, 0), (12, 2), (11, 1)]),
        ];
        let audit1 = audit_of(&events, 3);
        assert_eq!(audit1.order_violations, 1, "{}", audit1.render());
        // Across batches, time decides: record 1 first seen after record 2.
        let events = vec![
            worker(1, "a", "w1"),
            init(10, "a/0", "a", "TRIM_HORIZON"),
            batch(20, "a/0", &[(10, 0), (12, 2)]),
            batch(30, "a/0", &[(13, 1)]),
        ];
        assert_eq!(audit_of(&events, 3).order_violations, 1);
        // A duplicate of an earlier record later on is not a violation.
        let events = vec![
            worker(1, "a", "w1"),
            init(10, "a/0", "a", "TRIM_HORIZON"),
            batch(20, "a/0", &[(10, 0), (11, 1)]),
            batch(30, "a/0", &[(12, 0), (13, 2)]),
        ];
        let audit3 = audit_of(&events, 3);
        assert_eq!(audit3.order_violations, 0);
        // Record 0 at two positions: written twice by the producer.
        assert_eq!(audit3.duplicates.written_more_than_once, 1);
        assert_eq!(audit3.duplicates.unjustified, 0);
        assert!(audit3.ok, "{}", audit3.render());
    }

    #[test]
    fn repeats_within_a_session_and_before_the_start_are_unjustified() {
        let events = vec![
            worker(1, "a", "w1"),
            init(10, "a/0", "a", "11/0"),
            batch(20, "a/0", &[(11, 1), (12, 2)]),
            batch(30, "a/0", &[(12, 2)]),
        ];
        let audit = audit_of(&events, 3);
        assert_eq!(audit.duplicates.unjustified, 1, "{}", audit.render());
        assert_eq!(audit.checkpoints.delivered_before_start, 1);
        assert_eq!(audit.checkpoints.phantom_starts, 1, "nobody wrote 11/0");
        assert_eq!(audit.missing, 1);
        assert!(!audit.ok);
    }

    #[test]
    fn bad_input_must_arrive_and_the_final_table_must_match() {
        let mut events = handover();
        events.push(Event::BadInput {
            t: 5,
            shard: S.into(),
            sequence: "99".into(),
            kind: "random".into(),
        });
        let leases = [FinalLease { shard: S.into(), owner: None, checkpoint: "13/0".into() }];
        let audit1 = audit(&events, Some(&expect(6)), Some(&leases), 1);
        assert!(
            audit1.problems.iter().any(|p| p.contains("never delivered")),
            "{:?}",
            audit1.problems
        );
        assert_eq!(audit1.checkpoints.table_mismatches, 1);
        assert_eq!(audit1.partial_lines, 1);
        events.push(Event::Batch {
            t: 65,
            session: "b/0".into(),
            shard: S.into(),
            records: Vec::new(),
            foreign: vec![ForeignRecord("99".into(), 0, "bad-magic".into())],
            other_runs: 0,
        });
        let audit2 = audit(&events, Some(&expect(6)), None, 0);
        assert!(audit2.ok, "{}", audit2.render());
        assert_eq!((audit2.bad_input.written, audit2.bad_input.delivered), (1, 1));
    }

    #[test]
    fn progress_counts_what_is_outstanding() {
        let mut progress = Progress::new();
        for e in handover() {
            progress.observe(&e);
        }
        assert_eq!(progress.outstanding(&expect(7)), (1, 0));
        progress.observe(&Event::BadInput {
            t: 1,
            shard: S.into(),
            sequence: "5".into(),
            kind: "x".into(),
        });
        assert_eq!(progress.outstanding(&expect(6)), (0, 1));
        assert_eq!(progress.distinct(), 6);
    }

    #[test]
    fn positions_parse_as_written() {
        assert_eq!(parse_position("TRIM_HORIZON").unwrap(), ExtendedSequenceNumber::TrimHorizon);
        assert_eq!(
            parse_position("123/4").unwrap(),
            ExtendedSequenceNumber::new(SequenceNumber::new("123").unwrap(), 4)
        );
        assert!(parse_position("12/x").is_err());
        assert!(parse_position("nope").is_err());
    }
}
