//! `cargo xtask chaos`: proves "at-least-once with per-key order, no loss under throttling,
//! resharding, crashes and bad input" end to end, with the project's own binaries on the
//! default substrate.
//!
//! One run:
//! 1. builds `kinesis-load` and `limits-proxy`, starts kinesis-mock + DynamoDB Local, and two
//!    `limits-proxy` instances, one in front of each emulator, injecting faults into every
//!    request (server errors before and after forwarding, connection resets, added latency;
//!    for Kinesis also 30 % of PutRecords entries throttled, on top of AWS's per-shard limits);
//! 2. creates a stream with [`plan::SHARDS`] shards (directly) and starts three workers,
//!    `kinesis-load consume --shared --events`, sharing one application, through the proxies;
//! 3. starts `kinesis-load produce` through the Kinesis proxy and, while it runs, follows the
//!    [`Plan`]'s schedule: bad records written directly to the stream, a split, a SIGKILL of
//!    the worker holding the most leases, a lease forcibly stolen (the runner rewrites the
//!    item's owner and counter directly in DynamoDB Local, holds it under a fake owner while
//!    checking that its checkpoint does not move, then releases it), a merge, and the restart
//!    of the killed worker under its worker id;
//! 4. waits until the workers' event files show every record delivered
//!    (`kinesis-load verify --until-complete`), stops the workers gracefully (SIGINT), then
//!    judges the run with `kinesis-load verify --events ... --lease-table` (see the
//!    `kinesis_examples::load::audit` module for the rules) and prints a summary, also written to
//!    `summary.txt` and `summary.md` in the run folder (`target/chaos/run-<time>/`, with
//!    every process's log and event file).
//!
//! What the runner itself does is logged to `runner.jsonl`, in the workers' event format,
//! so the verifier sees the kill, the steal and the bad records.
//!
//! The run fails (the command exits non-zero) when the verdict fails, when a record was not
//! written, or when the run did not go as planned (a worker died on its own, a step slipped
//! past the end of production): a run that did not exercise what it claims proves nothing.

mod aws;
mod children;
mod plan;
mod summary;

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use self::aws::{LeaseItem, LeaseTable, Stream, Write};
use self::children::{Id, Procs};
use self::plan::{Action, Plan, RECORD_TTL, SHARDS, THIEF_RENEW, millis_arg, parse_duration};
use self::summary::{Inputs, StepDone};
use crate::backend::{Backend, Ctx, Running, StartOptions};
use crate::install::{self, Selection};
use crate::{proc, state};

/// The fake owner of a stolen lease.
const THIEF: &str = "chaos-thief";
/// How long the workers get to balance the first leases.
const BALANCE_LIMIT: Duration = Duration::from_secs(120);
/// How long a worker gets to shut down gracefully.
const STOP_LIMIT: Duration = Duration::from_secs(60);
/// How long a reshard step may take.
const RESHARD_LIMIT: Duration = Duration::from_secs(120);
/// Poll interval of the runner's waits.
const POLL: Duration = Duration::from_millis(100);
/// `cargo xtask chaos` flags.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ChaosArgs {
    /// The CI version: 10 000 records over 40 s, with the same faults and steps (a few
    /// minutes on 2 cores).
    #[arg(long)]
    pub(crate) short: bool,
    /// Records to produce (default 100 000; 10 000 with --short).
    #[arg(long)]
    pub(crate) records: Option<u64>,
    /// How long production runs, such as 100s or 5m (default 100 s; 40 s with --short); the
    /// rate is records / duration and the steps fall at fixed fractions of it.
    #[arg(long, value_parser = parse_duration)]
    pub(crate) duration: Option<Duration>,
    /// The consumers' lease duration (their failover time); renewals every third of it,
    /// taker cycles every half.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub(crate) lease_duration: Duration,
    /// Seed of the proxies' faults and of the producer's keys and sizes (default: random,
    /// printed).
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    /// Build and run the binaries with the release profile (default: dev, as CI builds).
    #[arg(long)]
    pub(crate) release: bool,
    /// Folder for the logs, event files and reports (default target/chaos/run-SECONDS, the
    /// start time in seconds since the Unix epoch).
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
}

impl ChaosArgs {
    /// The short run `cargo xtask test` does.
    pub(crate) fn short() -> Self {
        Self {
            short: true,
            records: None,
            duration: None,
            lease_duration: Duration::from_secs(5),
            seed: None,
            release: false,
            out: None,
        }
    }

    /// The command line that repeats this run (the seed included).
    fn command(&self, seed: u64) -> String {
        let mut text = "cargo xtask chaos".to_owned();
        if self.short {
            text.push_str(" --short");
        }
        if let Some(records) = self.records {
            text.push_str(&format!(" --records {records}"));
        }
        if let Some(duration) = self.duration {
            text.push_str(&format!(" --duration {}", millis_arg(duration)));
        }
        if self.lease_duration != Duration::from_secs(5) {
            text.push_str(&format!(" --lease-duration {}", millis_arg(self.lease_duration)));
        }
        if self.release {
            text.push_str(" --release");
        }
        text.push_str(&format!(" --seed {seed}"));
        text
    }
}

/// Runs the chaos test; `Ok(true)` if the verdict passed.
pub(crate) fn run(ctx: &Ctx, args: &ChaosArgs) -> Result<bool> {
    let plan = Plan::new(args.short, args.records, args.duration, args.lease_duration)?;
    let seed = args.seed.unwrap_or_else(|| now_micros() ^ u64::from(std::process::id()) << 40);
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let dir = match &args.out {
        Some(dir) => dir.clone(),
        None => {
            let base = target_dir(ctx).join("chaos");
            let dir = base.join(format!("run-{stamp}"));
            // Another run started in the same second (CI and a developer, say).
            if dir.exists() {
                base.join(format!("run-{stamp}-{}", std::process::id()))
            } else {
                dir
            }
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    eprintln!(
        "chaos: {} records over {:.0} s ({} records/s), seed {seed}; logs in {}",
        plan.records,
        plan.production.as_secs_f64(),
        plan.rate,
        dir.display()
    );
    let bins = build(ctx, args.release)?;
    install::install(&ctx.layout, Selection::for_backend(Backend::KinesisMock))?;
    let started = Instant::now();
    let mut running = Running::start(ctx, Backend::KinesisMock, StartOptions::default())?;
    let result = Chaos::new(ctx, &plan, seed, &dir, bins, &running, stamp).and_then(|mut chaos| {
        let driven = chaos.drive();
        chaos.finish(driven, args.command(seed), started)
    });
    let stopped = running.stop();
    let passed = result?;
    stopped?;
    Ok(passed)
}

/// Where cargo puts its output.
fn target_dir(ctx: &Ctx) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| if dir.is_absolute() { dir } else { ctx.layout.root().join(dir) })
        .unwrap_or_else(|| ctx.layout.root().join("target"))
}

/// The binaries a run needs.
#[derive(Debug, Clone)]
struct Bins {
    kinesis_load: PathBuf,
    limits_proxy: PathBuf,
}

/// Builds `kinesis-load` and `limits-proxy`. In the dev profile the whole workspace's tests
/// are part of the build, so that features unify as in `cargo nextest run --workspace` and
/// the test build's artifacts are reused (only the two binaries are linked after it).
fn build(ctx: &Ctx, release: bool) -> Result<Bins> {
    let args: Vec<&str> = if release {
        vec![
            "build",
            "--release",
            "-p",
            "kinesis-examples",
            "--bin",
            "kinesis-load",
            "-p",
            "kinesis-integration-tests",
            "--bin",
            "limits-proxy",
        ]
    } else {
        vec!["build", "--workspace", "--tests", "--bin", "kinesis-load", "--bin", "limits-proxy"]
    };
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("chaos: cargo {}", args.join(" "));
    let mut child = Command::new(&program)
        .args(&args)
        .current_dir(ctx.layout.root())
        .spawn()
        .context("starting cargo")?;
    let status = proc::wait_interruptible(&mut child)?;
    proc::bail_if_interrupted()?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    let dir = target_dir(ctx).join(if release { "release" } else { "debug" });
    let bins =
        Bins { kinesis_load: dir.join("kinesis-load"), limits_proxy: dir.join("limits-proxy") };
    for bin in [&bins.kinesis_load, &bins.limits_proxy] {
        if !bin.is_file() {
            bail!("{} is missing after the build", bin.display());
        }
    }
    Ok(bins)
}

/// Microseconds since the Unix epoch.
fn now_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// `runner.jsonl`: what the runner does, in the workers' event format.
struct RunnerLog {
    file: Mutex<File>,
    path: PathBuf,
}

impl RunnerLog {
    fn create(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { file: Mutex::new(file), path: path.to_owned() })
    }

    /// Appends one event; `event` must be an object with `ev` and `t`.
    fn write(&self, event: Value) -> Result<()> {
        let mut line = event.to_string();
        line.push('\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.write_all(line.as_bytes()).with_context(|| format!("writing {}", self.path.display()))
    }
}

/// One worker id and its processes.
struct Worker {
    id: String,
    proc: Option<Id>,
    /// Its event files, one per process.
    events: Vec<PathBuf>,
    killed: bool,
}

/// The thread that holds a stolen lease, and the flag that cuts the hold short.
struct Hold {
    thread: JoinHandle<Result<()>>,
    stop: Arc<AtomicBool>,
}

struct Chaos<'a> {
    ctx: &'a Ctx,
    plan: &'a Plan,
    seed: u64,
    dir: PathBuf,
    bins: Bins,
    running: &'a Running,
    procs: Procs,
    log: Arc<RunnerLog>,
    stream_name: String,
    application: String,
    run_id: String,
    kinesis_direct: String,
    dynamodb_direct: String,
    kinesis_proxy: Option<(Id, String)>,
    dynamodb_proxy: Option<(Id, String)>,
    stream: Stream,
    table: LeaseTable,
    workers: Vec<Worker>,
    producer: Option<Id>,
    produce_started: Option<Instant>,
    produce_ended: Option<Instant>,
    drain_secs: Option<f64>,
    /// The killed worker and the shards it held.
    killed: Option<(usize, Vec<String>)>,
    hold: Option<Hold>,
    steps: Vec<StepDone>,
    /// When each planned action happened, seconds after the producer started.
    happened: Vec<(Action, f64)>,
    problems: Vec<String>,
    bad_records: u64,
    /// Set once the workers are asked to stop: exits of workers and proxies are expected from
    /// then on.
    winding_down: bool,
}

impl<'a> Chaos<'a> {
    fn new(
        ctx: &'a Ctx,
        plan: &'a Plan,
        seed: u64,
        dir: &Path,
        bins: Bins,
        running: &'a Running,
        stamp: u64,
    ) -> Result<Self> {
        let entries = match running.state_file() {
            Some(file) => state::read(file)?,
            None => bail!("the substrate has no state file"),
        };
        let endpoint = |key: &str| {
            state::get(&entries, key)
                .map(str::to_owned)
                .with_context(|| format!("{key} is missing from the substrate's state file"))
        };
        let kinesis_direct = endpoint("AWS_ENDPOINT_URL_KINESIS")?;
        let dynamodb_direct = endpoint("AWS_ENDPOINT_URL_DYNAMODB")?;
        let procs = Procs::new();
        for server in state::servers(&entries) {
            procs.watch(&server.name, server.pid);
        }
        let stream_name = format!("chaos-{stamp}");
        let application = format!("chaos-app-{stamp}");
        let (stream, table) = ctx.rt.block_on(async {
            (
                Stream::new(&aws::direct_config(&kinesis_direct).await, &stream_name),
                LeaseTable::new(&aws::direct_config(&dynamodb_direct).await, &application),
            )
        });
        let workers = Plan::worker_ids()
            .into_iter()
            .map(|id| Worker { id, proc: None, events: Vec::new(), killed: false })
            .collect();
        Ok(Self {
            ctx,
            plan,
            seed,
            dir: dir.to_owned(),
            bins,
            running,
            procs,
            log: Arc::new(RunnerLog::create(&dir.join("runner.jsonl"))?),
            stream_name,
            application,
            run_id: format!("{:016x}", seed.rotate_left(17) ^ stamp),
            kinesis_direct,
            dynamodb_direct,
            kinesis_proxy: None,
            dynamodb_proxy: None,
            stream,
            table,
            workers,
            producer: None,
            produce_started: None,
            produce_ended: None,
            drain_secs: None,
            killed: None,
            hold: None,
            steps: Vec::new(),
            happened: Vec::new(),
            problems: Vec::new(),
            bad_records: 0,
            winding_down: false,
        })
    }

    /// Seconds since the producer started.
    fn since_produce(&self) -> f64 {
        self.produce_started.map_or(0.0, |s| s.elapsed().as_secs_f64())
    }

    fn step_done(&mut self, action: Option<Action>, what: String) {
        let at = self.since_produce();
        eprintln!("chaos: [{at:>6.1}s] {what}");
        if let Some(action) = action {
            self.happened.push((action, at));
        }
        self.steps.push(StepDone { what, at_secs: at });
    }

    /// A `kinesis-load` command with the environment contract and, if `proxied`, the proxies'
    /// endpoints instead of the emulators'.
    fn kinesis_load(&self, proxied: bool) -> Command {
        let mut cmd = Command::new(&self.bins.kinesis_load);
        self.running.apply_env(&mut cmd);
        cmd.current_dir(&self.dir).env("RUST_LOG", "warn");
        if proxied {
            if let Some((_, url)) = &self.kinesis_proxy {
                cmd.env("AWS_ENDPOINT_URL_KINESIS", url);
            }
            if let Some((_, url)) = &self.dynamodb_proxy {
                cmd.env("AWS_ENDPOINT_URL_DYNAMODB", url);
            }
        }
        cmd
    }

    /// The whole run up to the final verdict (the summary is [`finish`](Self::finish)'s).
    fn drive(&mut self) -> Result<()> {
        self.start_proxies()?;
        self.ctx.rt.block_on(self.stream.create(SHARDS, Duration::from_secs(60)))?;
        eprintln!("chaos: stream {} with {SHARDS} shards created", self.stream_name);
        for n in 0..self.workers.len() {
            self.start_worker(n)?;
        }
        self.wait_balanced()?;
        self.start_producer()?;
        let plan = self.plan;
        for step in &plan.steps {
            self.wait_until(self.produce_started.map_or_else(Instant::now, |s| s + step.at))?;
            match step.action {
                Action::BadInput(n) => self.bad_input(n)?,
                Action::Split => self.reshard("split")?,
                Action::Kill => self.kill()?,
                Action::Steal => self.steal()?,
                Action::Merge => self.reshard("merge")?,
                Action::Restart => self.restart()?,
            }
        }
        self.wait_producer()?;
        if let Some(hold) = self.hold.take() {
            match hold.thread.join() {
                Ok(result) => result?,
                Err(_) => bail!("the thread holding the stolen lease panicked"),
            }
        }
        self.check_schedule();
        self.wait_complete()?;
        self.stop_workers()?;
        self.stop_proxies();
        self.final_verify()
    }

    fn start_proxies(&mut self) -> Result<()> {
        let specs = [
            ("kinesis-proxy", self.kinesis_direct.clone(), &self.plan.kinesis_faults, 0),
            ("dynamodb-proxy", self.dynamodb_direct.clone(), &self.plan.dynamodb_faults, 1),
        ];
        for (name, upstream, faults, n) in specs {
            let mut cmd = Command::new(&self.bins.limits_proxy);
            cmd.args(["--upstream", &upstream, "--seed", &self.seed.wrapping_add(n).to_string()])
                .args(faults.args())
                .args(["--stats-every", "5s"])
                .current_dir(&self.dir);
            if n == 1 {
                cmd.args(["--no-shard-limits", "--no-request-caps"]);
            }
            let log = self.dir.join(format!("{name}.log"));
            let (id, addr) =
                self.procs.spawn_first_line(name, cmd, &log, Duration::from_secs(30))?;
            let url = format!("http://{addr}");
            eprintln!("chaos: {name} at {url} -> {upstream}");
            if n == 0 {
                self.kinesis_proxy = Some((id, url));
            } else {
                self.dynamodb_proxy = Some((id, url));
            }
        }
        Ok(())
    }

    /// Starts worker `n`: a new process with a new event file.
    fn start_worker(&mut self, n: usize) -> Result<()> {
        let plan = self.plan;
        let worker = &self.workers[n];
        let incarnation = worker.events.len() + 1;
        let suffix = if incarnation <= 1 { String::new() } else { format!("-{incarnation}") };
        let events = self.dir.join(format!("{}{suffix}.jsonl", worker.id));
        let report = self.dir.join(format!("{}{suffix}.json", worker.id));
        let safety = plan.production * 3 + plan.complete_within + Duration::from_secs(600);
        let mut cmd = self.kinesis_load(true);
        cmd.env("RUST_LOG", "warn,kinesis_consumer=info")
            .args(["consume", "--stream", &self.stream_name, "--application", &self.application])
            .args(["--worker-id", &worker.id, "--run-id", &self.run_id, "--shared"])
            .args(["--idle", "24h", "--timeout", &millis_arg(safety)])
            .args(["--lease-duration", &millis_arg(plan.lease_duration)])
            .args(["--taker-interval", &millis_arg(plan.taker_interval)])
            .arg("--events")
            .arg(&events)
            .arg("--report-json")
            .arg(&report)
            .arg("--progress");
        let name = format!("{}{suffix}", worker.id);
        let id = self.procs.spawn(&name, cmd, &self.dir.join(format!("{name}.log")))?;
        let worker = &mut self.workers[n];
        worker.proc = Some(id);
        worker.events.push(events);
        worker.killed = false;
        Ok(())
    }

    /// Fails if a worker or a proxy exited on its own; notes the producer's end.
    fn check_children(&mut self) -> Result<()> {
        // Ctrl-C reaches the children too: say "interrupted", not that they exited.
        proc::bail_if_interrupted()?;
        for n in 0..self.workers.len() {
            if self.winding_down {
                break;
            }
            let Some(id) = self.workers[n].proc.filter(|_| !self.workers[n].killed) else {
                continue;
            };
            let p = self.procs.get(id);
            let Some(status) = p.try_wait()? else { continue };
            let (name, log, tail) = (p.name().to_owned(), p.log().to_owned(), p.tail(30));
            bail!(
                "worker {name} exited on its own ({status}); last lines of {}:\n{tail}",
                log.display()
            );
        }
        let proxies = [self.kinesis_proxy.clone(), self.dynamodb_proxy.clone()];
        for (id, _) in proxies.into_iter().flatten().filter(|_| !self.winding_down) {
            let p = self.procs.get(id);
            if let Some(status) = p.try_wait()? {
                bail!("{} exited on its own ({status}):\n{}", p.name(), p.tail(3));
            }
        }
        if let (Some(id), None) = (self.producer, self.produce_ended)
            && self.procs.get(id).try_wait()?.is_some()
        {
            self.produce_ended = Some(Instant::now());
            self.log.write(json!({"ev": "produce", "t": now_micros(), "phase": "end"}))?;
            self.step_done(None, "the producer finished".to_owned());
        }
        Ok(())
    }

    /// Waits until `deadline`, watching the children.
    fn wait_until(&mut self, deadline: Instant) -> Result<()> {
        loop {
            self.check_children()?;
            let now = Instant::now();
            if now >= deadline {
                return Ok(());
            }
            proc::bail_if_interrupted()?;
            std::thread::sleep(POLL.min(deadline - now));
        }
    }

    /// Waits until `done` says so (checked every 250 ms), at most `limit`; false if it never did.
    fn wait_for(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&mut Self) -> Result<bool>,
    ) -> Result<bool> {
        let deadline = Instant::now() + limit;
        loop {
            self.check_children()?;
            if done(self)? {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            proc::bail_if_interrupted()?;
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn scan(&self) -> Result<Vec<LeaseItem>> {
        self.ctx.rt.block_on(self.table.scan())
    }

    /// Waits until the first leases are all owned by the workers and balanced: the taker's
    /// fair shares differ by one at most (4 leases on 3 workers: 2/1/1), so nobody holds two
    /// more than another.
    fn wait_balanced(&mut self) -> Result<()> {
        let started = Instant::now();
        let workers: Vec<String> = self.workers.iter().map(|w| w.id.clone()).collect();
        let owned = self.wait_for(BALANCE_LIMIT, |chaos| {
            let items = chaos.scan()?;
            let held: Vec<usize> = workers
                .iter()
                .map(|w| items.iter().filter(|i| i.owner.as_ref() == Some(w)).count())
                .collect();
            let spread = held.iter().max().zip(held.iter().min()).map_or(0, |(max, min)| max - min);
            Ok(items.len() >= SHARDS as usize
                && items.iter().all(|i| i.owner.as_ref().is_some_and(|o| workers.contains(o)))
                && spread <= 1)
        })?;
        let items = self.scan()?;
        if !owned {
            bail!(
                "the workers did not take and balance the {SHARDS} leases within {BALANCE_LIMIT:?}: {items:?}"
            );
        }
        let shares: Vec<String> = workers
            .iter()
            .map(|w| {
                format!("{w} {}", items.iter().filter(|i| i.owner.as_ref() == Some(w)).count())
            })
            .collect();
        eprintln!(
            "chaos: the workers hold the leases after {:.1} s ({})",
            started.elapsed().as_secs_f64(),
            shares.join(", ")
        );
        self.steps.push(StepDone {
            what: format!("leases held before production: {}", shares.join(", ")),
            at_secs: 0.0,
        });
        Ok(())
    }

    fn start_producer(&mut self) -> Result<()> {
        let plan = self.plan;
        let mut cmd = self.kinesis_load(true);
        cmd.args(["produce", "--stream", &self.stream_name])
            .args(["--records", &plan.records.to_string(), "--rate", &plan.rate.to_string()])
            .args(["--keys", &plan.keys.to_string(), "--size", plan::SIZE])
            .args(["--run-id", &self.run_id, "--seed", &self.seed.to_string()])
            .args(["--record-ttl", &millis_arg(RECORD_TTL)])
            .args(["--report-json", "produced.json", "--progress"]);
        let log = self.dir.join("producer.log");
        self.producer = Some(self.procs.spawn("producer", cmd, &log)?);
        self.produce_started = Some(Instant::now());
        self.log.write(json!({"ev": "produce", "t": now_micros(), "phase": "start"}))?;
        self.step_done(None, format!("producer started (run {})", self.run_id));
        Ok(())
    }

    /// Writes `n` records that are not payloads directly to the stream.
    fn bad_input(&mut self, n: usize) -> Result<()> {
        let mut written = Vec::new();
        for _ in 0..n {
            let index = self.bad_records;
            self.bad_records += 1;
            let (kind, data) = bad_record(index);
            let key = format!(
                "key-{}",
                (self.seed.wrapping_add(index * 7919)) % u64::from(self.plan.keys)
            );
            let (shard, sequence) = self.ctx.rt.block_on(self.stream.put(&key, data))?;
            self.log.write(json!({
                "ev": "bad-input", "t": now_micros(), "shard": shard, "sequence": sequence, "kind": kind
            }))?;
            written.push(kind);
        }
        self.step_done(
            Some(Action::BadInput(n)),
            format!("wrote {n} bad records directly ({})", written.join(", ")),
        );
        Ok(())
    }

    /// Runs `kinesis-load reshard` directly against the emulator.
    fn reshard(&mut self, action: &str) -> Result<()> {
        let report = self.dir.join(format!("reshard-{action}.json"));
        let mut cmd = self.kinesis_load(false);
        cmd.args(["reshard", "--stream", &self.stream_name, "--action", action])
            .args(["--times", "1", "--first-after", "0s", "--no-progress", "--report-json"])
            .arg(&report);
        let log = self.dir.join(format!("reshard-{action}.log"));
        let id = self.procs.spawn(&format!("reshard {action}"), cmd, &log)?;
        let status = self.wait_exit(id, RESHARD_LIMIT)?;
        if !status.is_some_and(|s| s.success()) {
            let p = self.procs.get(id);
            bail!("`kinesis-load reshard --action {action}` failed ({status:?}):\n{}", p.tail(20));
        }
        let events: Value = read_json(&report)?;
        let what = events
            .pointer("/0/action")
            .and_then(Value::as_str)
            .map_or_else(|| action.to_owned(), str::to_owned);
        let open = events.pointer("/0/open_shards").and_then(Value::as_u64).unwrap_or(0);
        self.log.write(json!({"ev": "reshard", "t": now_micros(), "action": what}))?;
        let planned = if action == "split" { Action::Split } else { Action::Merge };
        self.step_done(Some(planned), format!("{what} ({open} open shards)"));
        Ok(())
    }

    /// Waits for a child to exit while watching the others; `None` if it did not in time.
    fn wait_exit(&mut self, id: Id, limit: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.procs.get(id).try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            self.check_children()?;
            proc::bail_if_interrupted()?;
            std::thread::sleep(POLL);
        }
    }

    /// SIGKILLs the live worker holding the most leases.
    fn kill(&mut self) -> Result<()> {
        let mut chosen = None;
        let found = self.wait_for(Duration::from_secs(30), |chaos| {
            let items = chaos.scan()?;
            let held = |id: &str| -> Vec<String> {
                items
                    .iter()
                    .filter(|i| i.owner.as_deref() == Some(id) && i.checkpoint != "SHARD_END")
                    .map(|i| i.shard.clone())
                    .collect()
            };
            chosen = chaos
                .workers
                .iter()
                .enumerate()
                .filter(|(_, w)| !w.killed && w.proc.is_some())
                .map(|(n, w)| (n, held(&w.id)))
                .filter(|(_, shards)| !shards.is_empty())
                .max_by_key(|(n, shards)| (shards.len(), std::cmp::Reverse(*n)));
            Ok(chosen.is_some())
        })?;
        let (n, shards) = match (found, chosen) {
            (true, Some(chosen)) => chosen,
            _ => bail!("no live worker held a lease to be killed with"),
        };
        let id = self.workers[n].proc.context("the worker has no process")?;
        self.procs.sample_now();
        let worker = self.workers[n].id.clone();
        self.log.write(json!({"ev": "kill", "t": now_micros(), "worker": worker}))?;
        self.workers[n].killed = true;
        let status = self.procs.get(id).kill()?;
        self.step_done(
            Some(Action::Kill),
            format!("SIGKILL {worker} ({status}), which held {}", shards.join(", ")),
        );
        self.killed = Some((n, shards));
        Ok(())
    }

    /// Starts the killed worker again once its leases were taken over.
    fn restart(&mut self) -> Result<()> {
        let Some((n, shards)) = self.killed.clone() else { bail!("nothing was killed") };
        let victim = self.workers[n].id.clone();
        let limit = self.plan.lease_duration * 4 + Duration::from_secs(30);
        let taken = self.wait_for(limit, |chaos| {
            let items = chaos.scan()?;
            Ok(shards.iter().all(|shard| {
                items.iter().find(|i| i.shard == *shard).is_none_or(|i| {
                    i.owner.as_deref() != Some(victim.as_str()) || i.checkpoint == "SHARD_END"
                })
            }))
        })?;
        if !taken {
            self.problems.push(format!(
                "the leases of the killed {victim} were not taken over within {limit:?}: {:?}",
                self.scan()?
            ));
        }
        self.start_worker(n)?;
        self.log.write(json!({"ev": "restart", "t": now_micros(), "worker": victim}))?;
        self.step_done(
            Some(Action::Restart),
            format!("restarted {victim} under the same worker id"),
        );
        Ok(())
    }

    /// Rewrites a lease that a live worker is processing to the fake owner, then holds and
    /// releases it on a thread of its own.
    fn steal(&mut self) -> Result<()> {
        let limit = self.plan.production.mul_f64(0.15).max(Duration::from_secs(10));
        let mut stolen: Option<(LeaseItem, String, u64)> = None;
        // A lease whose checkpoint moved since the previous scan under the same owner: that
        // owner is processing it right now (its session has started and checkpoints).
        let mut previous: Vec<LeaseItem> = Vec::new();
        self.wait_for(limit, |chaos| {
            let open: Vec<String> = chaos
                .ctx
                .rt
                .block_on(chaos.stream.shards())?
                .into_iter()
                .filter(|s| s.open)
                .map(|s| s.id)
                .collect();
            let live: Vec<&str> =
                chaos.workers.iter().filter(|w| !w.killed).map(|w| w.id.as_str()).collect();
            let items = chaos.scan()?;
            let candidate = items.iter().find(|i| {
                i.owner.as_deref().is_some_and(|o| live.contains(&o))
                    && i.has_progress()
                    && open.contains(&i.shard)
                    && previous.iter().any(|p| {
                        p.shard == i.shard && p.owner == i.owner && p.checkpoint != i.checkpoint
                    })
            });
            let Some(item) = candidate.cloned() else {
                previous = items;
                return Ok(false);
            };
            previous = items;
            match chaos.ctx.rt.block_on(chaos.table.reassign(&item, Some(THIEF)))? {
                Write::Done(stored) => {
                    let t = now_micros();
                    let victim = item.owner.clone().unwrap_or_default();
                    stolen = Some((stored, victim, t));
                    Ok(true)
                }
                // The owner renewed or checkpointed meanwhile: try again.
                Write::Changed(_) => Ok(false),
            }
        })?;
        let Some((item, victim, t)) = stolen else {
            bail!("found no lease being processed by a live worker to steal within {limit:?}");
        };
        self.log.write(json!({
            "ev": "steal", "t": t, "shard": item.shard, "from": victim, "to": THIEF,
            "checkpoint": item.checkpoint
        }))?;
        self.step_done(
            Some(Action::Steal),
            format!(
                "stole {} from {victim} in the table (checkpoint {}); holding it as {THIEF} for {:.0} s",
                item.shard,
                item.checkpoint,
                self.plan.steal_hold.as_secs_f64()
            ),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let handle = self.ctx.rt.handle().clone();
            let table = self.table.clone();
            let log = Arc::clone(&self.log);
            let stop = Arc::clone(&stop);
            let hold = self.plan.steal_hold;
            std::thread::spawn(move || hold_stolen(&handle, &table, item, hold, &log, &stop))
        };
        self.hold = Some(Hold { thread, stop });
        Ok(())
    }

    fn wait_producer(&mut self) -> Result<()> {
        let plan = self.plan;
        let limit = plan.production * 2 + RECORD_TTL + Duration::from_secs(60);
        let id = self.producer.context("no producer")?;
        let status = self.wait_exit(id, limit)?;
        self.check_children()?;
        match status {
            Some(status) if status.success() => {}
            Some(status) if status.code() == Some(3) => {
                self.problems.push("the producer could not write every record".to_owned());
            }
            Some(status) => {
                let p = self.procs.get(id);
                bail!("the producer failed ({status}):\n{}", p.tail(30));
            }
            None => {
                let p = self.procs.get(id);
                bail!("the producer did not finish within {limit:?}:\n{}", p.tail(30));
            }
        }
        Ok(())
    }

    /// Every planned step must have happened while the producer was still writing.
    fn check_schedule(&mut self) {
        let Some(ended) =
            self.produce_ended.zip(self.produce_started).map(|(e, s)| (e - s).as_secs_f64())
        else {
            return;
        };
        for step in &self.plan.steps {
            match self.happened.iter().find(|(a, _)| *a == step.action) {
                None => self.problems.push(format!("step '{}' never happened", step.action)),
                Some((_, at))
                    if *at > ended
                        && !matches!(step.action, Action::Restart | Action::BadInput(_)) =>
                {
                    self.problems.push(format!(
                        "step '{}' happened at {at:.1} s, after production ended at {ended:.1} s: \
                         the run did not test it under load; give a longer --duration",
                        step.action
                    ));
                }
                Some(_) => {}
            }
        }
    }

    /// Every event file written so far, the runner's included.
    fn event_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self
            .workers
            .iter()
            .flat_map(|w| w.events.iter().cloned())
            .filter(|p| p.exists())
            .collect();
        files.push(self.log.path.clone());
        files
    }

    /// `kinesis-load verify --until-complete`.
    fn wait_complete(&mut self) -> Result<()> {
        let plan = self.plan;
        let mut cmd = self.kinesis_load(false);
        cmd.args(["verify", "--produce-report", "produced.json"])
            .args(["--until-complete", &millis_arg(plan.complete_within), "--progress", "--events"])
            .args(self.event_files());
        let log = self.dir.join("verify-wait.log");
        let id = self.procs.spawn("verify (wait)", cmd, &log)?;
        let status = self.wait_exit(id, plan.complete_within + Duration::from_secs(30))?;
        match status.and_then(|s| s.code()) {
            Some(0) => {
                // To within the verifier's 250 ms polling.
                self.drain_secs = self.produce_ended.map(|e| e.elapsed().as_secs_f64());
                self.step_done(None, "every record delivered".to_owned());
            }
            Some(3) => {
                let tail = self.procs.get(id).tail(3);
                self.step_done(None, format!("not every record delivered in time:\n{tail}"));
            }
            _ => {
                let tail = self.procs.get(id).tail(20);
                bail!("`kinesis-load verify --until-complete` failed ({status:?}):\n{tail}");
            }
        }
        Ok(())
    }

    /// SIGINT to every live worker; they checkpoint, release their leases and report.
    fn stop_workers(&mut self) -> Result<()> {
        self.winding_down = true;
        let live: Vec<(String, Id)> = self
            .workers
            .iter()
            .filter(|w| !w.killed)
            .filter_map(|w| Some((w.id.clone(), w.proc?)))
            .collect();
        for (_, id) in &live {
            self.procs.get(*id).signal("INT")?;
        }
        for (worker, id) in live {
            let p = self.procs.get(id);
            match p.wait_for(STOP_LIMIT)? {
                Some(status) if status.success() => {}
                Some(status) => self.problems.push(format!(
                    "worker {worker} ended with {status} after SIGINT; see {}",
                    p.log().display()
                )),
                None => {
                    let _ = p.kill();
                    self.problems.push(format!(
                        "worker {worker} did not stop within {STOP_LIMIT:?} of SIGINT; killed"
                    ));
                }
            }
        }
        self.step_done(None, "workers stopped gracefully (SIGINT)".to_owned());
        Ok(())
    }

    /// SIGTERM to the proxies; they print their final stats.
    fn stop_proxies(&mut self) {
        for (id, _) in
            [self.kinesis_proxy.clone(), self.dynamodb_proxy.clone()].into_iter().flatten()
        {
            let p = self.procs.get(id);
            if p.signal("TERM").is_err()
                || !matches!(p.wait_for(Duration::from_secs(15)), Ok(Some(_)))
            {
                let _ = p.kill();
            }
        }
    }

    /// The proxies' last stats lines.
    fn proxy_stats(&mut self) -> Vec<(String, Option<Value>)> {
        let mut out = Vec::new();
        for (label, proxy) in [
            ("kinesis proxy", self.kinesis_proxy.clone()),
            ("dynamodb proxy", self.dynamodb_proxy.clone()),
        ] {
            let Some((id, _)) = proxy else { continue };
            let log = self.procs.get(id).log().to_owned();
            let stats = std::fs::read_to_string(&log).ok().and_then(|text| {
                text.lines()
                    .rev()
                    .filter_map(|line| serde_json::from_str::<Value>(line).ok())
                    .find(|v| v.get("requests").is_some())
            });
            out.push((label.to_owned(), stats));
        }
        out
    }

    /// `kinesis-load verify --events ... --lease-table`: the verdict, in `audit.json`.
    fn final_verify(&mut self) -> Result<()> {
        let mut cmd = self.kinesis_load(false);
        cmd.args(["verify", "--produce-report", "produced.json", "--report-json", "audit.json"])
            .args(["--lease-table", &self.application, "--events"])
            .args(self.event_files());
        let log = self.dir.join("verify.log");
        let id = self.procs.spawn("verify", cmd, &log)?;
        let status = self.wait_exit(id, Duration::from_secs(300))?;
        match status.and_then(|s| s.code()) {
            Some(0 | 3) => Ok(()),
            _ => {
                let tail = self.procs.get(id).tail(20);
                bail!("`kinesis-load verify --events` failed ({status:?}):\n{tail}")
            }
        }
    }

    /// Stops what is left, gathers the figures, prints and writes the summary; the verdict.
    fn finish(&mut self, driven: Result<()>, command: String, started: Instant) -> Result<bool> {
        if let Some(hold) = self.hold.take() {
            hold.stop.store(true, Ordering::Relaxed);
            let _ = hold.thread.join();
        }
        if driven.is_err() {
            // Let the workers release their leases and write their reports; their logs help.
            let live: Vec<Id> =
                self.workers.iter().filter(|w| !w.killed).filter_map(|w| w.proc).collect();
            for &id in &live {
                let _ = self.procs.get(id).signal("INT");
            }
            for id in live {
                let _ = self.procs.get(id).wait_for(Duration::from_secs(10));
            }
            self.stop_proxies();
        }
        let peaks = self.procs.peaks();
        self.procs.kill_all();
        if let Err(error) = driven {
            eprintln!("chaos: run dir {}", self.dir.display());
            return Err(error);
        }
        let plan = self.plan;
        let produce: Option<Value> = read_json(&self.dir.join("produced.json")).ok();
        let audit: Option<Value> = read_json(&self.dir.join("audit.json")).ok();
        if let Ok(text) = std::fs::read_to_string(self.dir.join("verify.log")) {
            eprintln!("{text}");
        }
        let when = |action: Action| {
            self.happened
                .iter()
                .find(|(a, _)| *a == action)
                .map_or("-".to_owned(), |(_, at)| format!("{at:.0} s"))
        };
        let setup = vec![
            format!(
                "workload: {} records in {:.0} s ({} records/s), {} keys, payloads {} bytes, KPL aggregation, per-key order, \
                 record TTL {:.0} s; stream of {SHARDS} shards, split at {} and merged at {} after production started",
                plan.records,
                plan.production.as_secs_f64(),
                plan.rate,
                plan.keys,
                plan::SIZE.trim_start_matches("uniform:"),
                RECORD_TTL.as_secs_f64(),
                when(Action::Split),
                when(Action::Merge)
            ),
            format!(
                "consumers: {} workers (`kinesis-load consume --shared`, polling, one application), lease duration {:.1} s, \
                 taker interval {:.1} s; the one holding the most leases SIGKILLed at {} and restarted with its worker id at {}; \
                 a lease stolen in the table at {} and held as {THIEF} for {:.0} s",
                self.workers.len(),
                plan.lease_duration.as_secs_f64(),
                plan.taker_interval.as_secs_f64(),
                when(Action::Kill),
                when(Action::Restart),
                when(Action::Steal),
                plan.steal_hold.as_secs_f64()
            ),
            format!(
                "Kinesis proxy (producer and consumers): {}, AWS per-shard write limits",
                plan.kinesis_faults.describe()
            ),
            format!("DynamoDB proxy (lease table): {}", plan.dynamodb_faults.describe()),
            format!(
                "bad input: {} records that are not payloads written directly to the stream (random bytes, text, \
                 KPL magic with garbage, KPL magic alone, one byte, an unknown payload version)",
                self.bad_records
            ),
        ];
        let inputs = Inputs {
            command,
            setup,
            run_dir: self.dir.display().to_string(),
            produce,
            audit,
            proxies: self.proxy_stats(),
            peaks,
            steps: self.steps.clone(),
            production_secs: self
                .produce_ended
                .zip(self.produce_started)
                .map(|(e, s)| (e - s).as_secs_f64()),
            drain_secs: self.drain_secs,
            total_secs: started.elapsed().as_secs_f64(),
            run_problems: self.problems.clone(),
        };
        let text = summary::render_text(&inputs);
        eprint!("{text}");
        std::fs::write(self.dir.join("summary.txt"), &text)
            .with_context(|| format!("writing {}", self.dir.join("summary.txt").display()))?;
        std::fs::write(self.dir.join("summary.md"), summary::render_markdown(&inputs))
            .with_context(|| format!("writing {}", self.dir.join("summary.md").display()))?;
        let figures = summary::Figures::of(&inputs);
        Ok(figures.passed(&inputs))
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// Holds a stolen lease as the fake owner for `hold` (bumping its counter so nobody thinks
/// it expired, and checking that its checkpoint stays put), then releases it.
fn hold_stolen(
    handle: &tokio::runtime::Handle,
    table: &LeaseTable,
    mut item: LeaseItem,
    hold: Duration,
    log: &RunnerLog,
    stop: &AtomicBool,
) -> Result<()> {
    let started = Instant::now();
    let original = item.checkpoint.clone();
    let (mut renewals, mut unchanged, mut ours) = (0u64, true, true);
    let mut outcome = "held".to_owned();
    while started.elapsed() < hold && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(THIEF_RENEW.min(hold.saturating_sub(started.elapsed())));
        match handle.block_on(table.reassign(&item, Some(THIEF))) {
            Ok(Write::Done(stored)) => {
                renewals += 1;
                if stored.checkpoint != original {
                    unchanged = false;
                }
                item = stored;
            }
            Ok(Write::Changed(now)) => {
                outcome = format!(
                    "taken by {} after {:.1} s",
                    now.and_then(|i| i.owner).unwrap_or_else(|| "nobody (deleted)".to_owned()),
                    started.elapsed().as_secs_f64()
                );
                ours = false;
                break;
            }
            Err(error) => eprintln!("chaos: renewing the stolen lease failed: {error:#}; retrying"),
        }
    }
    log.write(json!({
        "ev": "steal-held", "t": now_micros(), "shard": item.shard, "renewals": renewals,
        "checkpoint_unchanged": unchanged, "outcome": outcome
    }))?;
    if !ours {
        return Ok(());
    }
    for _ in 0..10 {
        match handle.block_on(table.reassign(&item, None)) {
            Ok(Write::Done(_)) => {
                log.write(json!({"ev": "release", "t": now_micros(), "shard": item.shard}))?;
                eprintln!(
                    "chaos: released the stolen lease of {} after {:.1} s",
                    item.shard,
                    started.elapsed().as_secs_f64()
                );
                return Ok(());
            }
            Ok(Write::Changed(_)) => return Ok(()),
            Err(error) => {
                eprintln!("chaos: releasing the stolen lease failed: {error:#}; retrying")
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("could not release the stolen lease of {}", item.shard)
}

/// The `n`-th bad record: its kind and data. None of them is a load-generator payload.
fn bad_record(n: u64) -> (&'static str, Vec<u8>) {
    const KPL_MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
    match n % 6 {
        0 => {
            // Pseudo-random bytes, never starting with either magic.
            let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut data: Vec<u8> = (0..64)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            data[0] = 0xFF;
            ("random-bytes", data)
        }
        1 => ("text", format!("chaos: not a kinesis-load payload #{n}").into_bytes()),
        2 => {
            let mut data = KPL_MAGIC.to_vec();
            data.extend([0xAB; 40]);
            ("kpl-magic-garbage", data)
        }
        3 => ("kpl-magic-only", KPL_MAGIC.to_vec()),
        4 => ("one-byte", vec![0]),
        _ => {
            let mut data = b"KTKL".to_vec();
            data.push(9);
            data.resize(48, 0);
            ("unknown-version", data)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_records_cover_every_kind_and_none_is_a_payload() {
        let kinds: std::collections::BTreeSet<&str> = (0..6).map(|n| bad_record(n).0).collect();
        assert_eq!(kinds.len(), 6);
        for n in 0..24 {
            let (kind, data) = bad_record(n);
            assert!(!data.is_empty(), "{kind}");
            assert!(
                !(data.starts_with(b"KTKL") && data.get(4) == Some(&1)),
                "{kind} looks like a payload"
            );
        }
        assert_ne!(bad_record(0).1, bad_record(6).1, "random bytes differ per record");
    }

    #[test]
    fn the_command_line_repeats_the_run() {
        let mut args = ChaosArgs::short();
        assert_eq!(args.command(7), "cargo xtask chaos --short --seed 7");
        args.short = false;
        args.records = Some(5000);
        args.duration = Some(Duration::from_secs(60));
        args.release = true;
        assert_eq!(
            args.command(1),
            "cargo xtask chaos --records 5000 --duration 60000ms --release --seed 1"
        );
    }

    #[test]
    fn the_runner_log_writes_event_lines() {
        let path =
            std::env::temp_dir().join(format!("xtask-chaos-runner-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let log = RunnerLog::create(&path).unwrap();
        log.write(json!({"ev": "kill", "t": 5, "worker": "chaos-w1"})).unwrap();
        log.write(json!({"ev": "release", "t": 6, "shard": "s"})).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "{\"ev\":\"kill\",\"t\":5,\"worker\":\"chaos-w1\"}\n{\"ev\":\"release\",\"shard\":\"s\",\"t\":6}\n"
        );
        let _ = std::fs::remove_file(&path);
    }
}
