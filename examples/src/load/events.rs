//! The event log of a chaos run: what each consumer worker did with its leases and records,
//! and what the chaos runner did to them, as JSON lines ([`Event`]).
//!
//! `kinesis-load consume --events FILE` appends one line per event as it happens, each with a
//! single `write` call and no buffering in the process, so that a worker killed with SIGKILL
//! leaves its history behind (at worst a last line cut short, which readers skip and count).
//! `kinesis-load verify --events` reads the files of every worker and of the runner and
//! judges the run ([`audit`](super::audit)).
//!
//! Every line is one JSON object with an `"ev"` tag and `t`, microseconds since the Unix
//! epoch by the writer's wall clock. All writers of a chaos run are processes on one host, so
//! their times compare. Positions are checkpoint texts: `TRIM_HORIZON`, `SHARD_END`, ... or
//! `<sequence>/<sub-sequence>`.
//!
//! Written by a worker (`consume --events`):
//!
//! | `ev` | fields | when |
//! |---|---|---|
//! | `worker` | `incarnation`, `worker`, `pid` | the consumer started (one per process) |
//! | `worker-stopped` | `incarnation` | it shut down gracefully |
//! | `init` | `session`, `incarnation`, `shard`, `checkpoint` | a processor started on a lease, from that checkpoint |
//! | `batch` | `session`, `shard`, `records`, `foreign`, `other_runs` | a batch was handed out, before it is checkpointed |
//! | `checkpoint-begin` | `session`, `shard`, `position` | a checkpoint write starts |
//! | `checkpoint-done` | `session`, `shard`, `position`, `outcome` | it ended: `ok`, `lease-lost` or `error: ...` |
//! | `end` | `session`, `shard`, `reason` | the processor ended: `shard-end`, `lease-lost`, `shutdown` |
//!
//! `records` holds `[sequence, sub-sequence, record id, key index, key sequence]` per
//! delivered payload of the run; `foreign`, `[sequence, sub-sequence, reason]` per record that
//! is not a payload. A *session* is one processor's life on one lease: a new one starts
//! whenever a worker (re)takes a lease, so a change of owner is a change of session.
//!
//! Written by the chaos runner: `produce` (`phase` start or end), `reshard` (`action`),
//! `kill` and `restart` (`worker`), `steal` (`shard`, `from`, `to`, `checkpoint`: the lease
//! item rewritten to a fake owner, directly in the table), `steal-held` (`shard`, `renewals`,
//! `checkpoint_unchanged`, `outcome`: how holding it went), `release` (`shard`: the fake
//! owner let go), `bad-input` (`shard`, `sequence`, `kind`: a record that is not a payload,
//! written directly to the stream).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::payload::micros_since_epoch;

/// One delivered payload: `[sequence, sub-sequence, record id, key index, key sequence]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivered(pub String, pub u64, pub u64, pub u32, pub u64);

/// One delivered record that is not a payload: `[sequence, sub-sequence, reason]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForeignRecord(pub String, pub u64, pub String);

/// Why a processor ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndReason {
    /// The shard was read to its end and `SHARD_END` checkpointed.
    ShardEnd,
    /// The lease was lost (taken by another worker, or not renewed in time).
    LeaseLost,
    /// The worker shut down gracefully.
    Shutdown,
}

/// One line of an event file; see the [module docs](self) for who writes what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "kebab-case")]
pub enum Event {
    /// A worker process started its consumer.
    Worker {
        /// Microseconds since the Unix epoch.
        t: u64,
        /// This process's id in the log (unique per process).
        incarnation: String,
        /// The worker id, as in the lease table.
        worker: String,
        /// The process id.
        pid: u32,
    },
    /// A worker process shut down gracefully.
    WorkerStopped {
        /// Microseconds since the Unix epoch.
        t: u64,
        /// The process.
        incarnation: String,
    },
    /// A processor started on a lease.
    Init {
        /// Microseconds since the Unix epoch.
        t: u64,
        /// The session's id.
        session: String,
        /// The process.
        incarnation: String,
        /// The shard.
        shard: String,
        /// The lease's checkpoint, where processing resumes (after it).
        checkpoint: String,
    },
    /// A batch handed to the processor, logged before it is checkpointed.
    Batch {
        /// Microseconds since the Unix epoch.
        t: u64,
        /// The session.
        session: String,
        /// The shard.
        shard: String,
        /// The payloads of the run, in order.
        records: Vec<Delivered>,
        /// Records that are not payloads.
        #[serde(default)]
        foreign: Vec<ForeignRecord>,
        /// Payloads of other runs.
        #[serde(default)]
        other_runs: u64,
    },
    /// A checkpoint write starts.
    CheckpointBegin {
        /// Microseconds since the Unix epoch.
        t: u64,
        /// The session.
        session: String,
        /// The shard.
        shard: String,
        /// The position written.
        position: String,
    },
    /// A checkpoint write ended.
    CheckpointDone {
        /// Microseconds since the Unix epoch.
        t: u64,
        /// The session.
        session: String,
        /// The shard.
        shard: String,
        /// The position written.
        position: String,
        /// `ok`, `lease-lost` or `error: <why>`.
        outcome: String,
    },
    /// A processor ended.
    End {
        /// Microseconds since the Unix epoch.
        t: u64,
        /// The session.
        session: String,
        /// The shard.
        shard: String,
        /// Why.
        reason: EndReason,
    },
    /// The runner started (`start`) or saw the end of (`end`) the producer.
    Produce {
        /// Microseconds since the Unix epoch.
        t: u64,
        /// `start` or `end`.
        phase: String,
    },
    /// The runner resharded the stream.
    Reshard {
        /// Microseconds since the Unix epoch.
        t: u64,
        /// What was done.
        action: String,
    },
    /// The runner killed a worker process with SIGKILL.
    Kill {
        /// Microseconds since the Unix epoch (just before the signal).
        t: u64,
        /// The worker id.
        worker: String,
    },
    /// The runner started a killed worker again, with the same worker id.
    Restart {
        /// Microseconds since the Unix epoch.
        t: u64,
        /// The worker id.
        worker: String,
    },
    /// The runner rewrote a held lease's owner and counter in the table.
    Steal {
        /// Microseconds since the Unix epoch (just before the write).
        t: u64,
        /// The shard.
        shard: String,
        /// The worker that held it.
        from: String,
        /// The fake owner.
        to: String,
        /// The lease's checkpoint when stolen.
        checkpoint: String,
    },
    /// How holding a stolen lease went.
    StealHeld {
        /// Microseconds since the Unix epoch.
        t: u64,
        /// The shard.
        shard: String,
        /// Counter bumps made by the fake owner.
        renewals: u64,
        /// Whether the checkpoint stayed what it was at the steal while the fake owner held it.
        checkpoint_unchanged: bool,
        /// `held`, or what ended the hold early.
        outcome: String,
    },
    /// The runner released a stolen lease (no owner).
    Release {
        /// Microseconds since the Unix epoch (just after the write).
        t: u64,
        /// The shard.
        shard: String,
    },
    /// The runner wrote a record that is not a payload directly to the stream.
    BadInput {
        /// Microseconds since the Unix epoch.
        t: u64,
        /// Where it was written.
        shard: String,
        /// Its sequence number.
        sequence: String,
        /// What kind of bad input it is.
        kind: String,
    },
}

impl Event {
    /// When it happened, in microseconds since the Unix epoch.
    pub fn time(&self) -> u64 {
        match self {
            Event::Worker { t, .. }
            | Event::WorkerStopped { t, .. }
            | Event::Init { t, .. }
            | Event::Batch { t, .. }
            | Event::CheckpointBegin { t, .. }
            | Event::CheckpointDone { t, .. }
            | Event::End { t, .. }
            | Event::Produce { t, .. }
            | Event::Reshard { t, .. }
            | Event::Kill { t, .. }
            | Event::Restart { t, .. }
            | Event::Steal { t, .. }
            | Event::StealHeld { t, .. }
            | Event::Release { t, .. }
            | Event::BadInput { t, .. } => *t,
        }
    }
}

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> u64 {
    micros_since_epoch(SystemTime::now())
}

/// A worker's event file, appended to with one `write` per event.
#[derive(Debug)]
pub struct EventLog {
    file: Mutex<File>,
    path: PathBuf,
    incarnation: String,
    sessions: AtomicU64,
}

impl EventLog {
    /// Opens `path` for appending (created if missing). The incarnation is made of the process
    /// id and the time, so two processes writing one file stay apart.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("--events {}: cannot open the file", path.display()))?;
        Ok(Self {
            file: Mutex::new(file),
            path: path.to_owned(),
            incarnation: format!("{}-{:x}", std::process::id(), now_micros()),
            sessions: AtomicU64::new(0),
        })
    }

    /// This process's id in the log.
    pub fn incarnation(&self) -> &str {
        &self.incarnation
    }

    /// A new session id.
    pub fn new_session(&self) -> String {
        let n = self.sessions.fetch_add(1, Ordering::Relaxed);
        format!("{}/{n}", self.incarnation)
    }

    /// Appends one event as a line, with one `write` call.
    pub fn write(&self, event: &Event) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(event)?;
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.write_all(&line)
            .with_context(|| format!("appending to the event file {}", self.path.display()))
    }
}

/// Reads event files as they grow: each [`poll`](Self::poll) returns the lines completed since
/// the last one. A file that does not exist yet reads as empty.
#[derive(Debug)]
pub struct EventTail {
    files: Vec<TailedFile>,
}

#[derive(Debug)]
struct TailedFile {
    path: PathBuf,
    offset: u64,
    /// Bytes after the last newline read so far.
    partial: Vec<u8>,
    /// Lines read so far (for error messages).
    lines: u64,
}

impl EventTail {
    /// Tails `paths`.
    pub fn new(paths: &[PathBuf]) -> Self {
        let files = paths
            .iter()
            .map(|path| TailedFile { path: path.clone(), offset: 0, partial: Vec::new(), lines: 0 })
            .collect();
        Self { files }
    }

    /// The events of every line completed since the last poll, file by file.
    pub fn poll(&mut self) -> anyhow::Result<Vec<Event>> {
        let mut events = Vec::new();
        for file in &mut self.files {
            file.poll(&mut events)?;
        }
        Ok(events)
    }

    /// Files whose last bytes are not a complete line (a writer killed in mid-line, or one
    /// writing right now).
    pub fn partial_lines(&self) -> u64 {
        self.files.iter().filter(|f| !f.partial.iter().all(u8::is_ascii_whitespace)).count() as u64
    }
}

impl TailedFile {
    fn poll(&mut self, events: &mut Vec<Event>) -> anyhow::Result<()> {
        let mut file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(e).with_context(|| format!("reading {}", self.path.display()));
            }
        };
        file.seek(SeekFrom::Start(self.offset))
            .with_context(|| format!("reading {}", self.path.display()))?;
        let mut fresh = Vec::new();
        file.read_to_end(&mut fresh).with_context(|| format!("reading {}", self.path.display()))?;
        self.offset += fresh.len() as u64;
        self.partial.extend_from_slice(&fresh);
        let Some(last_newline) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return Ok(());
        };
        let rest = self.partial.split_off(last_newline + 1);
        let complete = std::mem::replace(&mut self.partial, rest);
        for line in complete.split(|&b| b == b'\n') {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            self.lines += 1;
            let event = parse_line(line).with_context(|| {
                format!("{} line {}: not an event line", self.path.display(), self.lines)
            })?;
            events.push(event);
        }
        Ok(())
    }
}

/// Parses one line.
pub fn parse_line(line: &[u8]) -> anyhow::Result<Event> {
    Ok(serde_json::from_slice(line)?)
}

/// Every complete event of `paths`, and how many files end in a line cut short.
pub fn read_all(paths: &[PathBuf]) -> anyhow::Result<(Vec<Event>, u64)> {
    for path in paths {
        if !path.exists() {
            anyhow::bail!("event file {} does not exist", path.display());
        }
    }
    let mut tail = EventTail::new(paths);
    let events = tail.poll()?;
    Ok((events, tail.partial_lines()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ktk-events-{}-{}", std::process::id(), name));
        let _ = std::fs::remove_file(&dir);
        dir
    }

    #[test]
    fn events_round_trip_as_tagged_lines() {
        let event = Event::Batch {
            t: 7,
            session: "1-a/0".into(),
            shard: "shardId-000000000001".into(),
            records: vec![Delivered("4959".into(), 2, 17, 3, 5)],
            foreign: vec![ForeignRecord("4960".into(), 0, "bad-magic".into())],
            other_runs: 0,
        };
        let line = serde_json::to_string(&event).unwrap();
        assert!(line.starts_with(r#"{"ev":"batch","t":7,"#), "{line}");
        assert!(line.contains(r#""records":[["4959",2,17,3,5]]"#), "{line}");
        assert_eq!(parse_line(line.as_bytes()).unwrap(), event);
        let end: Event = serde_json::from_str(
            r#"{"ev":"end","t":1,"session":"s","shard":"x","reason":"lease-lost"}"#,
        )
        .unwrap();
        assert_eq!(end.time(), 1);
        assert!(matches!(end, Event::End { reason: EndReason::LeaseLost, .. }));
        // Runner lines, as the chaos runner writes them.
        let steal: Event = serde_json::from_str(
            r#"{"ev":"steal-held","t":3,"shard":"x","renewals":4,"checkpoint_unchanged":true,"outcome":"held"}"#,
        )
        .unwrap();
        assert!(matches!(steal, Event::StealHeld { renewals: 4, .. }));
    }

    #[test]
    fn the_tail_returns_complete_lines_only_and_counts_a_line_cut_short() {
        let path = temp("tail");
        let log = EventLog::open(&path).unwrap();
        let mut tail = EventTail::new(std::slice::from_ref(&path));
        assert!(tail.poll().unwrap().is_empty());
        let stopped = Event::WorkerStopped { t: 1, incarnation: log.incarnation().to_owned() };
        log.write(&stopped).unwrap();
        assert_eq!(tail.poll().unwrap(), vec![stopped.clone()]);
        // A writer killed in mid-line.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(br#"{"ev":"worker-sto"#)
            .unwrap();
        assert!(tail.poll().unwrap().is_empty());
        assert_eq!(tail.partial_lines(), 1);
        let (all, partial) = read_all(std::slice::from_ref(&path)).unwrap();
        assert_eq!((all, partial), (vec![stopped], 1));
        assert_ne!(log.new_session(), log.new_session());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_bad_line_names_its_file_and_line() {
        let path = temp("bad");
        std::fs::write(&path, "{\"ev\":\"worker-stopped\",\"t\":1,\"incarnation\":\"i\"}\nnope\n")
            .unwrap();
        let error = read_all(std::slice::from_ref(&path)).unwrap_err();
        assert!(format!("{error:#}").contains("line 2: not an event line"), "{error:#}");
        assert!(read_all(&[temp("missing")]).is_err());
        std::fs::remove_file(&path).unwrap();
    }
}
