//! The figures of a chaos run, gathered from the reports its processes wrote (the producer's
//! `produced.json`, the verifier's `audit.json`, the proxies' stats lines) and from the
//! runner itself, and rendered as text for the terminal and as Markdown for RELIABILITY.md.
//! Pure: the caller reads the files.

use std::fmt::Write as _;

use serde_json::Value;

/// One step as it happened.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StepDone {
    /// What it did, in words.
    pub(crate) what: String,
    /// Seconds after the producer started.
    pub(crate) at_secs: f64,
}

/// Everything the summary shows.
#[derive(Debug, Clone, Default)]
pub(crate) struct Inputs {
    /// The command line.
    pub(crate) command: String,
    /// Records, rate, faults and timing of the plan, in words.
    pub(crate) setup: Vec<String>,
    /// Where the logs are.
    pub(crate) run_dir: String,
    /// `produced.json`.
    pub(crate) produce: Option<Value>,
    /// `audit.json`.
    pub(crate) audit: Option<Value>,
    /// The last stats line of each proxy, by name.
    pub(crate) proxies: Vec<(String, Option<Value>)>,
    /// Peak resident memory per process, KiB.
    pub(crate) peaks: Vec<(String, u64)>,
    /// The steps, as they happened.
    pub(crate) steps: Vec<StepDone>,
    /// Seconds the producer ran.
    pub(crate) production_secs: Option<f64>,
    /// Seconds from the producer's end until every record was delivered.
    pub(crate) drain_secs: Option<f64>,
    /// Seconds of the whole run, substrate start to verdict.
    pub(crate) total_secs: f64,
    /// What went wrong in the run itself (not the verdict).
    pub(crate) run_problems: Vec<String>,
}

fn num(v: Option<&Value>, pointer: &str) -> Option<f64> {
    v?.pointer(pointer)?.as_f64()
}

fn int(v: Option<&Value>, pointer: &str) -> u64 {
    num(v, pointer).map_or(0, |n| n as u64)
}

/// KiB as MiB with one decimal; `-` for a process that ended before it was sampled.
fn mib(kib: u64) -> String {
    if kib == 0 { "-".to_owned() } else { format!("{:.1}", kib as f64 / 1024.0) }
}

fn secs(v: Option<f64>) -> String {
    v.map_or("-".to_owned(), |s| format!("{s:.1} s"))
}

/// The key figures, extracted.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Figures {
    /// Records handed to the producer.
    pub(crate) records: u64,
    /// Written.
    pub(crate) written: u64,
    /// Not written.
    pub(crate) failed: u64,
    /// Producer retries of Kinesis records.
    pub(crate) retries: u64,
    /// Of which throttled.
    pub(crate) throttled: u64,
    /// Retries by error code, as text.
    pub(crate) retries_by_code: String,
    /// The most attempts one record took.
    pub(crate) max_attempts: u64,
    /// Distinct records delivered.
    pub(crate) distinct: u64,
    /// Lost.
    pub(crate) missing: u64,
    /// Deliveries beyond the first.
    pub(crate) duplicates: u64,
    /// Of which justified re-reads.
    pub(crate) rereads: u64,
    /// Of which producer copies.
    pub(crate) producer_copies: u64,
    /// Unjustified.
    pub(crate) unjustified: u64,
    /// Order violations.
    pub(crate) order_violations: u64,
    /// Checkpoints confirmed after a loss.
    pub(crate) after_loss: u64,
    /// Takeover after the kill: slowest shard.
    pub(crate) kill_takeover: Option<f64>,
    /// The steal: victim noticed after.
    pub(crate) steal_noticed: Option<f64>,
    /// The steal: taken back after the release.
    pub(crate) steal_taken_back: Option<f64>,
    /// Whether the audit passed.
    pub(crate) audit_ok: bool,
    /// The audit's problems.
    pub(crate) problems: Vec<String>,
}

impl Figures {
    /// Extracts the figures from the reports.
    pub(crate) fn of(inputs: &Inputs) -> Self {
        let p = inputs.produce.as_ref();
        let a = inputs.audit.as_ref();
        let retries_by_code = p
            .and_then(|p| p.get("retries_by_code"))
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k} {}", v.as_u64().unwrap_or(0)))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        let kill_takeover = a
            .and_then(|a| a.pointer("/kills/0/shards"))
            .and_then(Value::as_array)
            .and_then(|shards| {
                shards
                    .iter()
                    .try_fold(0.0_f64, |m, s| s.get("after_secs")?.as_f64().map(|v| m.max(v)))
            });
        Self {
            records: int(p, "/records"),
            written: int(p, "/delivered"),
            failed: int(p, "/failed"),
            retries: int(p, "/retries"),
            throttled: int(p, "/throttled"),
            retries_by_code,
            max_attempts: int(p, "/max_attempts"),
            distinct: int(a, "/distinct"),
            missing: int(a, "/missing"),
            duplicates: int(a, "/duplicates/total"),
            rereads: int(a, "/duplicates/rereads_justified"),
            producer_copies: int(a, "/duplicates/producer_copies"),
            unjustified: int(a, "/duplicates/unjustified"),
            order_violations: int(a, "/order_violations"),
            after_loss: int(a, "/checkpoints/after_loss"),
            kill_takeover,
            steal_noticed: num(a, "/steals/0/noticed_after_secs"),
            steal_taken_back: num(a, "/steals/0/taken_back/after_secs"),
            audit_ok: a.and_then(|a| a.get("ok")).and_then(Value::as_bool).unwrap_or(false),
            problems: a
                .and_then(|a| a.get("problems"))
                .and_then(Value::as_array)
                .map(|p| p.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
                .unwrap_or_default(),
        }
    }

    /// The verdict of the run: the audit passed, every record was written, and the run itself
    /// went as planned.
    pub(crate) fn passed(&self, inputs: &Inputs) -> bool {
        self.audit_ok && self.failed == 0 && self.records > 0 && inputs.run_problems.is_empty()
    }
}

/// The proxy stats of interest, as one line.
fn proxy_line(stats: &Value) -> String {
    let requests: u64 = stats
        .get("requests")
        .and_then(Value::as_object)
        .map_or(0, |m| m.values().filter_map(Value::as_u64).sum());
    let mut line = format!(
        "{requests} requests, {} answered 500, {} connections reset",
        int(Some(stats), "/server_errors_injected"),
        int(Some(stats), "/resets_injected")
    );
    let injected = int(Some(stats), "/entries_throttled_injected");
    let limited = int(Some(stats), "/entries_throttled");
    if injected + limited > 0 {
        line.push_str(&format!(
            ", {} PutRecords entries forwarded, {injected} throttled at random and {limited} over a shard's limit",
            int(Some(stats), "/entries_forwarded")
        ));
    }
    line
}

/// The summary for the terminal.
pub(crate) fn render_text(inputs: &Inputs) -> String {
    let f = Figures::of(inputs);
    let mut out = String::new();
    let _ = writeln!(out, "\nchaos summary ({})", inputs.run_dir);
    for line in &inputs.setup {
        let _ = writeln!(out, "  {line}");
    }
    let _ = writeln!(
        out,
        "  producer     {} records, {} written, {} failed; {} retries ({} throttled; {}), at most {} attempts per record; ran {}",
        f.records,
        f.written,
        f.failed,
        f.retries,
        f.throttled,
        if f.retries_by_code.is_empty() { "-" } else { &f.retries_by_code },
        f.max_attempts,
        secs(inputs.production_secs)
    );
    let _ = writeln!(
        out,
        "  delivered    {} distinct, {} lost, {} order violations; all delivered {} after production ended",
        f.distinct,
        f.missing,
        f.order_violations,
        secs(inputs.drain_secs)
    );
    let _ = writeln!(
        out,
        "  duplicates   {} ({} re-read after an owner change, {} producer copies, {} unjustified)",
        f.duplicates, f.rereads, f.producer_copies, f.unjustified
    );
    let _ = writeln!(
        out,
        "  takeovers    after the kill {} (slowest shard); after the steal: noticed {}, taken back {} after the release",
        secs(f.kill_takeover),
        secs(f.steal_noticed),
        secs(f.steal_taken_back)
    );
    let _ = writeln!(out, "  checkpoints  {} confirmed after a lost lease", f.after_loss);
    for (name, stats) in &inputs.proxies {
        let _ = writeln!(
            out,
            "  {name:<12} {}",
            stats.as_ref().map_or("no stats".to_owned(), proxy_line)
        );
    }
    let _ = writeln!(out, "  steps (seconds after the producer started):");
    for step in &inputs.steps {
        let _ = writeln!(out, "    {:>6.1}  {}", step.at_secs, step.what);
    }
    let _ = writeln!(out, "  peak memory (VmHWM):");
    for (name, kib) in &inputs.peaks {
        let _ = writeln!(out, "    {name:<20} {:>9} MiB", mib(*kib));
    }
    for problem in f.problems.iter().chain(&inputs.run_problems) {
        let _ = writeln!(out, "  PROBLEM      {problem}");
    }
    let _ = writeln!(
        out,
        "  verdict      {} ({:.0} s in all)",
        if f.passed(inputs) { "PASS" } else { "FAIL" },
        inputs.total_secs
    );
    out
}

/// The summary as a Markdown section for RELIABILITY.md.
pub(crate) fn render_markdown(inputs: &Inputs) -> String {
    let f = Figures::of(inputs);
    let mut out = String::new();
    let _ = writeln!(out, "Command: `{}`\n", inputs.command);
    for line in &inputs.setup {
        let _ = writeln!(out, "- {line}");
    }
    let _ = writeln!(out, "\n| figure | value |\n|---|---|");
    let rows = [
        ("verdict", if f.passed(inputs) { "PASS".to_owned() } else { "FAIL".to_owned() }),
        (
            "records produced / written / failed",
            format!("{} / {} / {}", f.records, f.written, f.failed),
        ),
        ("records delivered (distinct) / lost", format!("{} / {}", f.distinct, f.missing)),
        ("per-key order violations", f.order_violations.to_string()),
        (
            "duplicate deliveries",
            format!(
                "{} ({} re-reads after an owner change, {} copies written twice by the producer, {} unjustified)",
                f.duplicates, f.rereads, f.producer_copies, f.unjustified
            ),
        ),
        ("checkpoints confirmed after a lost lease", f.after_loss.to_string()),
        ("takeover after SIGKILL (slowest shard)", secs(f.kill_takeover)),
        ("steal noticed by the victim", secs(f.steal_noticed)),
        ("stolen lease taken back after release", secs(f.steal_taken_back)),
        (
            "producer retries (throttled)",
            format!(
                "{} ({}); by code: {}; at most {} attempts",
                f.retries,
                f.throttled,
                if f.retries_by_code.is_empty() { "-" } else { &f.retries_by_code },
                f.max_attempts
            ),
        ),
        (
            "production time / drain after it",
            format!("{} / {}", secs(inputs.production_secs), secs(inputs.drain_secs)),
        ),
        ("whole run", format!("{:.0} s", inputs.total_secs)),
    ];
    for (name, value) in rows {
        let _ = writeln!(out, "| {name} | {value} |");
    }
    for (name, stats) in &inputs.proxies {
        let _ = writeln!(
            out,
            "| {name} | {} |",
            stats.as_ref().map_or("no stats".to_owned(), proxy_line)
        );
    }
    let _ = writeln!(out, "\nSteps (seconds after the producer started):\n");
    for step in &inputs.steps {
        let _ = writeln!(out, "- {:.1} s: {}", step.at_secs, step.what);
    }
    let _ = writeln!(
        out,
        "\nPeak resident memory (VmHWM, sampled every 0.2 s):\n\n| process | MiB |\n|---|---|"
    );
    for (name, kib) in &inputs.peaks {
        let _ = writeln!(out, "| {name} | {} |", mib(*kib));
    }
    for problem in f.problems.iter().chain(&inputs.run_problems) {
        let _ = writeln!(out, "\nProblem: {problem}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> Inputs {
        Inputs {
            command: "cargo xtask chaos --short".into(),
            produce: Some(serde_json::json!({
                "records": 10, "delivered": 10, "failed": 0, "retries": 7, "throttled": 5,
                "retries_by_code": {"ProvisionedThroughputExceededException": 5, "InternalFailure": 2},
                "max_attempts": 4
            })),
            audit: Some(serde_json::json!({
                "ok": true, "distinct": 10, "missing": 0, "order_violations": 0,
                "duplicates": {"total": 3, "rereads_justified": 2, "producer_copies": 1, "unjustified": 0},
                "checkpoints": {"after_loss": 0},
                "kills": [{"shards": [{"after_secs": 6.5}, {"after_secs": 7.25}]}],
                "steals": [{"noticed_after_secs": 1.5, "taken_back": {"after_secs": 2.0}}],
                "problems": []
            })),
            proxies: vec![(
                "kinesis proxy".into(),
                Some(serde_json::json!({
                    "requests": {"PutRecords": 40, "GetRecords": 60},
                    "server_errors_injected": 5, "resets_injected": 1,
                    "entries_forwarded": 30, "entries_throttled_injected": 12, "entries_throttled": 0
                })),
            )],
            peaks: vec![("producer".into(), 2048)],
            total_secs: 61.0,
            ..Inputs::default()
        }
    }

    #[test]
    fn figures_come_from_the_reports() {
        let inputs = inputs();
        let f = Figures::of(&inputs);
        assert_eq!((f.records, f.written, f.failed, f.retries, f.throttled), (10, 10, 0, 7, 5));
        assert_eq!((f.duplicates, f.rereads, f.producer_copies), (3, 2, 1));
        assert_eq!(f.kill_takeover, Some(7.25));
        assert_eq!((f.steal_noticed, f.steal_taken_back), (Some(1.5), Some(2.0)));
        assert!(f.passed(&inputs));
        let text = render_text(&inputs);
        assert!(text.contains("verdict      PASS"), "{text}");
        assert!(text.contains("100 requests, 5 answered 500, 1 connections reset"), "{text}");
        let md = render_markdown(&inputs);
        assert!(md.contains("| takeover after SIGKILL (slowest shard) | 7.2 s |"), "{md}");
        assert!(md.contains("| producer | 2.0 |"), "{md}");
    }

    #[test]
    fn a_failed_write_a_run_problem_or_a_missing_audit_fails_the_run() {
        let mut inputs = inputs();
        inputs.run_problems.push("the merge happened after production ended".into());
        assert!(!Figures::of(&inputs).passed(&inputs));
        let mut inputs = self::tests::inputs();
        inputs.produce.as_mut().unwrap()["failed"] = 1.into();
        assert!(!Figures::of(&inputs).passed(&inputs));
        let mut inputs = self::tests::inputs();
        inputs.audit = None;
        assert!(!Figures::of(&inputs).passed(&inputs));
        assert!(render_text(&inputs).contains("verdict      FAIL"));
        // A shard never taken over leaves the takeover unknown.
        let mut inputs = self::tests::inputs();
        inputs.audit.as_mut().unwrap()["kills"][0]["shards"][1]["after_secs"] = Value::Null;
        assert_eq!(Figures::of(&inputs).kill_takeover, None);
    }
}
