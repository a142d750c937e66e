//! The reports of `produce`, `consume` and `verify`: serializable (`--json`,
//! `--report-json`) and rendered as text for people; the per-second series of a `produce`
//! run (`--series-json`); [`OutputFile`], an output file checked before a run.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::histogram::Percentiles;
use super::ids::IdSet;
use super::payload::RunId;
use super::series::Series;
use super::verify::{Expectation, Tally, Verdict};

/// Why a run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopReason {
    /// The requested number of records was sent.
    Records,
    /// The requested duration passed.
    Duration,
    /// Every expected record arrived.
    Complete,
    /// No record arrived for the idle time.
    Idle,
    /// The time limit passed.
    Timeout,
    /// Ctrl-C, or the caller's stop signal.
    Interrupted,
    /// The producer or consumer closed.
    Closed,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopReason::Records => "record count reached",
            StopReason::Duration => "duration reached",
            StopReason::Complete => "every expected record arrived",
            StopReason::Idle => "idle",
            StopReason::Timeout => "timeout",
            StopReason::Interrupted => "interrupted",
            StopReason::Closed => "closed",
        })
    }
}

/// What `produce` did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProduceReport {
    /// The stream written.
    pub stream: String,
    /// The run id embedded in every record.
    pub run_id: RunId,
    /// Records handed to the producer: ids `0..records`.
    pub records: u64,
    /// Records written.
    pub delivered: u64,
    /// Records not written (expired, rejected, refused).
    pub failed: u64,
    /// Their ids.
    pub failed_ids: IdSet,
    /// Payload bytes written.
    pub bytes: u64,
    /// From the first send to the last outcome.
    #[serde(with = "super::duration_secs")]
    pub elapsed: Duration,
    /// Records written per second over `elapsed`.
    pub records_per_sec: f64,
    /// Payload MiB written per second over `elapsed`.
    pub mib_per_sec: f64,
    /// Send-to-delivery latency of the records written.
    pub latency: Percentiles,
    /// The most PutRecords attempts one record took.
    pub max_attempts: u32,
    /// Records written inside KPL aggregates.
    pub aggregated: u64,
    /// Kinesis records written (an aggregate counts once).
    pub kinesis_records: u64,
    /// PutRecords requests answered.
    pub put_records_requests: u64,
    /// Kinesis records sent again after a failure.
    pub retries: u64,
    /// Retries caused by throttling.
    pub throttled: u64,
    /// Aggregates written to another shard than predicted and sent again.
    pub wrong_shard: u64,
    /// Retries by AWS error code (empty when the process has another metrics recorder).
    pub retries_by_code: BTreeMap<String, u64>,
    /// Failed records by outcome and code, such as `expired:ProvisionedThroughputExceededException`.
    pub errors_by_code: BTreeMap<String, u64>,
    /// Records written per shard.
    pub per_shard: BTreeMap<String, u64>,
    /// Why sending stopped.
    pub stopped_by: StopReason,
}

impl ProduceReport {
    /// What a verifier should find of this run.
    pub fn expectation(&self) -> Expectation {
        Expectation { run_id: self.run_id, records: self.records, failed: self.failed_ids.clone() }
    }

    /// The report as text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "produce report: stream {}, run {}", self.stream, self.run_id);
        let _ = writeln!(
            out,
            "  records    {} sent, {} delivered, {} failed; stopped: {}",
            self.records, self.delivered, self.failed, self.stopped_by
        );
        let _ = writeln!(
            out,
            "  bytes      {} ({:.2} MiB) in {:.2} s: {:.0} records/s, {:.3} MiB/s",
            self.bytes,
            self.bytes as f64 / 1024.0 / 1024.0,
            self.elapsed.as_secs_f64(),
            self.records_per_sec,
            self.mib_per_sec
        );
        let _ = writeln!(out, "  latency    {}", render_percentiles(&self.latency));
        let _ = writeln!(
            out,
            "  kinesis    {} Kinesis records ({} user records aggregated) in {} PutRecords requests",
            self.kinesis_records, self.aggregated, self.put_records_requests
        );
        let _ = writeln!(
            out,
            "  retries    {} ({} throttled, {} wrong shard), at most {} attempt(s) per record{}",
            self.retries,
            self.throttled,
            self.wrong_shard,
            self.max_attempts,
            render_counts(&self.retries_by_code)
        );
        let _ =
            writeln!(out, "  errors     {}{}", self.failed, render_counts(&self.errors_by_code));
        let _ = writeln!(out, "  per shard  {}", render_list(&self.per_shard));
        let _ = writeln!(
            out,
            "  verify with: kinesis-load consume --stream {} --run-id {} --expect {}",
            self.stream, self.run_id, self.records
        );
        out
    }
}

/// A `produce` run second by second (`--series-json`): the series with what the run was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesReport {
    /// The stream written.
    pub stream: String,
    /// The run id embedded in every record.
    pub run_id: RunId,
    /// The run's parameters and totals, as the plot's title shows them.
    pub description: Vec<String>,
    /// The buckets.
    #[serde(flatten)]
    pub series: Series,
}

/// What one `consume` worker saw and its verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsumeReport {
    /// The stream read.
    pub stream: String,
    /// The application (and lease table) name.
    pub application: String,
    /// This worker's id.
    pub worker: String,
    /// `polling` or `fan-out:<consumer name>`.
    pub retrieval: String,
    /// The run verified, if one was named.
    pub run_id: Option<RunId>,
    /// What was expected, if known.
    pub expectation: Option<Expectation>,
    /// Whether this worker shared the shards with others (its missing count is left to
    /// `verify`).
    pub shared: bool,
    /// Why it stopped.
    pub stopped_by: StopReason,
    /// From start to stop.
    #[serde(with = "super::duration_secs")]
    pub elapsed: Duration,
    /// What it saw: the input of `verify`.
    pub tally: Tally,
    /// Its judgement.
    pub verdict: Verdict,
}

impl ConsumeReport {
    /// The report as text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "consume report: stream {}, application {}, worker {}, {}{}",
            self.stream,
            self.application,
            self.worker,
            self.retrieval,
            if self.shared { ", shared" } else { "" }
        );
        let records = self.tally.records();
        let _ = writeln!(
            out,
            "  records    {records} in {:.2} s ({:.0}/s); stopped: {}",
            self.elapsed.as_secs_f64(),
            records as f64 / self.elapsed.as_secs_f64().max(1e-9),
            self.stopped_by
        );
        let _ = writeln!(out, "  per shard  {}", render_list(&self.tally.per_shard));
        out.push_str(&render_verdict(&self.verdict));
        out
    }
}

/// The merge of several workers' reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// The workers merged.
    pub workers: Vec<String>,
    /// What was expected, if known.
    pub expectation: Option<Expectation>,
    /// Everything they saw together.
    pub tally: Tally,
    /// The judgement of the whole.
    pub verdict: Verdict,
}

impl VerifyReport {
    /// The report as text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "verify report: {} worker(s): {}",
            self.workers.len(),
            self.workers.join(", ")
        );
        let _ = writeln!(out, "  records    {}", self.tally.records());
        let _ = writeln!(out, "  per shard  {}", render_list(&self.tally.per_shard));
        out.push_str(&render_verdict(&self.verdict));
        out
    }
}

/// Finds the expectation the reports agree on: the one given, else the one the reports
/// carry (an error if they carry different ones).
pub fn common_expectation(
    given: Option<Expectation>,
    reports: &[ConsumeReport],
) -> anyhow::Result<Option<Expectation>> {
    if given.is_some() {
        return Ok(given);
    }
    let mut found: Option<&Expectation> = None;
    for report in reports {
        if let Some(e) = &report.expectation {
            match found {
                Some(f) if f != e => anyhow::bail!(
                    "the reports expect different runs or counts ({} of run {} and {} of run {}): \
                     give --expect and --run-id",
                    f.records,
                    f.run_id,
                    e.records,
                    e.run_id
                ),
                _ => found = Some(e),
            }
        }
    }
    Ok(found.cloned())
}

/// Reads a JSON report.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a report of this kind", path.display()))
}

/// Writes a JSON report.
pub fn write_json<T: Serialize>(path: &Path, report: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

/// An output file created before a run, so that a path that cannot be written fails at once
/// rather than after the run; removed again if it is dropped unwritten.
#[derive(Debug)]
pub struct OutputFile {
    path: PathBuf,
    flag: &'static str,
    file: Option<File>,
}

impl OutputFile {
    /// Creates (or truncates) `path`; `flag` names the option in errors (`--plot`).
    pub fn create(path: &Path, flag: &'static str) -> anyhow::Result<Self> {
        let file = File::create(path)
            .with_context(|| format!("{flag} {}: cannot create the file", path.display()))?;
        Ok(OutputFile { path: path.to_owned(), flag, file: Some(file) })
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `bytes` as the file's content.
    pub fn write(mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let Some(file) = self.file.take() else { anyhow::bail!("{} written twice", self.flag) };
        let mut out = BufWriter::new(file);
        out.write_all(bytes)
            .and_then(|()| out.flush())
            .with_context(|| format!("{} {}: writing the file", self.flag, self.path.display()))
    }

    /// Writes `value` as pretty JSON.
    pub fn write_json<T: Serialize>(self, value: &T) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(value)? + "\n";
        self.write(text.as_bytes())
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        // Never written (the run failed): leave no empty file that looks like a result.
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn render_verdict(verdict: &Verdict) -> String {
    let mut out = String::new();
    for run in &verdict.runs {
        let missing = match run.missing {
            Some(m) => format!("{m} missing"),
            None => "missing left to `verify` (shared shards)".to_owned(),
        };
        let basis = if run.by_expectation { "expected" } else { "ids below the highest seen" };
        let _ = writeln!(
            out,
            "  run {}  {} {basis}, {} distinct, {} duplicate deliveries, {missing}, {} order violations",
            run.run_id, run.expected, run.distinct, run.duplicates, run.order_violations
        );
        if !run.missing_sample.is_empty() {
            let _ = writeln!(out, "    first missing ids: {:?}", run.missing_sample);
        }
        if run.unexpected > 0 || run.written_although_failed > 0 {
            let _ = writeln!(
                out,
                "    {} id(s) beyond the expected range, {} written although reported failed",
                run.unexpected, run.written_although_failed
            );
        }
        let _ = writeln!(out, "    end to end {}", render_percentiles(&run.latency));
    }
    let _ = writeln!(
        out,
        "  other      {} foreign record(s) ({} damaged), {} of other runs",
        verdict.foreign, verdict.corrupt, verdict.other_runs
    );
    if verdict.ok {
        let _ = writeln!(out, "  verdict    OK");
    } else {
        let _ = writeln!(out, "  verdict    FAILED: {}", verdict.problems.join("; "));
    }
    out
}

fn render_percentiles(p: &Percentiles) -> String {
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
    format!(
        "p50 {} ms, p90 {} ms, p99 {} ms, p99.9 {} ms, max {} ms ({} samples)",
        ms(p.p50),
        ms(p.p90),
        ms(p.p99),
        ms(p.p999),
        ms(p.max),
        p.count
    )
}

fn render_list(counts: &BTreeMap<String, u64>) -> String {
    let items: Vec<String> = counts.iter().map(|(k, n)| format!("{k}: {n}")).collect();
    items.join(", ")
}

fn render_counts(counts: &BTreeMap<String, u64>) -> String {
    if counts.is_empty() {
        return String::new();
    }
    format!(" ({})", render_list(counts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::verify::{Scope, judge};

    fn consume_report(worker: &str, expectation: Option<Expectation>) -> ConsumeReport {
        let tally = Tally::default();
        ConsumeReport {
            stream: "s".into(),
            application: "a".into(),
            worker: worker.into(),
            retrieval: "polling".into(),
            run_id: None,
            verdict: judge(&tally, expectation.as_ref(), Scope::Share),
            expectation,
            shared: true,
            stopped_by: StopReason::Idle,
            elapsed: Duration::from_secs(1),
            tally,
        }
    }

    #[test]
    fn reports_round_trip_through_json_files() {
        let report = consume_report("w1", None);
        let dir = std::env::temp_dir().join(format!("kinesis-load-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w1.json");
        write_json(&path, &report).unwrap();
        assert_eq!(read_json::<ConsumeReport>(&path).unwrap(), report);
        std::fs::write(&path, "{}").unwrap();
        let err = read_json::<ConsumeReport>(&path).unwrap_err();
        assert!(err.to_string().contains("not a report"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn output_files_fail_early_and_are_removed_unless_written() {
        let dir = std::env::temp_dir().join(format!("kinesis-load-out-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = OutputFile::create(&dir.join("missing/s.json"), "--series-json").unwrap_err();
        assert!(format!("{err:#}").contains("--series-json"), "{err:#}");
        let path = dir.join("s.json");
        drop(OutputFile::create(&path, "--series-json").unwrap());
        assert!(!path.exists(), "an unwritten output file is removed");
        let file = OutputFile::create(&path, "--series-json").unwrap();
        file.write_json(&serde_json::json!({"a": 1})).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\n  \"a\": 1\n}\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reports_must_agree_on_the_expectation_unless_one_is_given() {
        let e = |n| Expectation { run_id: RunId(1), records: n, failed: IdSet::new() };
        let same = [consume_report("a", Some(e(10))), consume_report("b", None)];
        assert_eq!(common_expectation(None, &same).unwrap(), Some(e(10)));
        let differ = [consume_report("a", Some(e(10))), consume_report("b", Some(e(11)))];
        assert!(common_expectation(None, &differ).is_err());
        assert_eq!(common_expectation(Some(e(5)), &differ).unwrap(), Some(e(5)));
    }

    #[test]
    fn a_failed_verdict_says_why() {
        let report = consume_report("w", None);
        let mut text = report.render();
        assert!(text.contains("verdict    OK"), "{text}");
        let mut failed = report.clone();
        failed.verdict = judge(&failed.tally, None, Scope::Whole);
        text = failed.render();
        assert!(text.contains("FAILED: no record of the run arrived"), "{text}");
    }
}
