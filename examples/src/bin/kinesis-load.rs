//! `kinesis-load`: a load generator and verifier for Kinesis streams, built on this toolkit's
//! producer and consumer. The logic lives in `kinesis_examples::load`; this file is the
//! command line.
//!
//! ```text
//! kinesis-load produce --stream s --rate 2000 --size uniform:100..1KiB --keys 500 --duration 60s
//! kinesis-load consume --stream s --application app --run-id <id> --expect <n>
//! kinesis-load reshard --stream s --action split --every 30s --times 3
//! kinesis-load verify --reports a.json b.json
//! ```
//!
//! Against the local substrate: `eval "$(cargo xtask up --detach)"` first; against AWS, the
//! usual credentials.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use kinesis_common::compression::Codec;
use kinesis_common::{ConsumerName, StreamName};
use kinesis_consumer::{
    ConsumerConfig, DynamoLeaseStore, InitialPosition, LeaseStore, PollingSettings, Retrieval,
    WorkerId,
};
use kinesis_examples::load::audit;
use kinesis_examples::load::events::{self, EventLog};
use kinesis_examples::load::plot::{self, PlotFile};
use kinesis_examples::load::report::{self, OutputFile, SeriesReport, common_expectation};
use kinesis_examples::load::reshard::create_stream_if_missing;
use kinesis_examples::load::workload::parse_duration;
use kinesis_examples::load::{
    ConsumeOptions, ConsumeReport, Expectation, Filler, IdSet, KeyChooser, ProduceOptions,
    ProduceReport, ProgressSink, Rate, ReshardAction, RunId, Schedule, Scope, Series, SizeSpec,
    Tally, VerifyReport, judge,
};
use kinesis_producer::{Aggregation, Compression, ProducerConfig, RecordOrder};

/// Shown after `--help`.
const EXAMPLES: &str = "\
Examples:
  kinesis-load produce --stream s --create 4 --rate 2000 --size uniform:100..1KiB \\
      --keys 500 --hot-key-share 0.2 --duration 60s --report-json produced.json \\
      --plot produced.png --series-json produced-series.json
  kinesis-load reshard --stream s --action split --every 30s --times 3   # while produce runs
  kinesis-load consume --stream s --application app --produce-report produced.json

  Several workers sharing the shards (same --application), then the verdict:
  kinesis-load consume --stream s --application app --shared --idle 30s --report-json w1.json
  kinesis-load consume --stream s --application app --shared --idle 30s --report-json w2.json
  kinesis-load verify --reports w1.json w2.json --produce-report produced.json

  Workers that may be killed (consume --events w1.jsonl ...), judged from their events:
  kinesis-load verify --events w1.jsonl w2.jsonl --produce-report produced.json --lease-table app

Payload: a 48-byte header (magic KTKL, version, header length, flags, run id, record id,
per-key sequence, key index, checksum, send time), then filler to the requested size; data
in any other format is counted as foreign, never a crash. The layout is documented in the
module docs of kinesis_examples::load.

Against the local substrate: eval \"$(cargo xtask up --detach)\" first.";

/// Exit status when verification finds records missing, damaged or out of order.
const VERIFY_FAILED: u8 = 3;

/// Load generator and verifier for Kinesis Data Streams.
///
/// Exit status: 0 success; 1 an error (the stream is missing, AWS refused, ...); 2 bad
/// arguments; 3 verification failed (records missing, damaged or out of per-key order) or,
/// for `produce`, records not written.
#[derive(Debug, Parser)]
#[command(version, about, long_about, after_long_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write numbered records at a target rate and report throughput, latency and errors.
    Produce(ProduceArgs),
    /// Read records back with a consumer worker and verify them (loss, duplicates, order).
    Consume(ConsumeArgs),
    /// Split, merge or rescale the stream on a schedule while load runs.
    Reshard(ReshardArgs),
    /// Merge the --report-json files of consumers that shared the shards, and judge the run;
    /// or judge it from their --events files (lease sessions, checkpoints, deliveries).
    Verify(VerifyArgs),
}

/// Output options every command shares.
#[derive(Debug, Args)]
struct Output {
    /// Print the final report as JSON on stdout instead of text.
    #[arg(long)]
    json: bool,
    /// Also write the final report as JSON to this file (`verify` reads consumers' files).
    #[arg(long, value_name = "FILE")]
    report_json: Option<PathBuf>,
    /// Print progress once a second on stderr even when stderr is not a terminal (it is
    /// printed on a terminal anyway).
    #[arg(long)]
    progress: bool,
    /// Never print progress.
    #[arg(long, conflicts_with = "progress")]
    no_progress: bool,
}

impl Output {
    fn sink(&self) -> Option<ProgressSink> {
        let show = !self.no_progress && (self.progress || std::io::stderr().is_terminal());
        show.then(|| Arc::new(|line: &str| eprintln!("{line}")) as ProgressSink)
    }
}

#[derive(Debug, Args)]
struct ProduceArgs {
    /// The stream to write to.
    #[arg(long)]
    stream: String,
    /// Create the stream with this many shards if it does not exist.
    #[arg(long, value_name = "SHARDS")]
    create: Option<u32>,
    /// Target rate: `max` (as fast as the producer accepts), records per second (`1000` or
    /// `1000/s`), or bytes per second (`2MiB/s`, `512KiB/s`).
    #[arg(long, default_value = "1000", value_parser = parse_rate)]
    rate: Rate,
    /// Payload size in bytes, at least 48 (the header): fixed (`100`, `4KiB`), uniform
    /// (`uniform:50..500`, both ends included) or exponential with a mean (`exp:1KiB`).
    #[arg(long, default_value = "100", value_parser = parse_size)]
    size: SizeSpec,
    /// Distinct partition keys, `key-0` .. `key-<N-1>`.
    #[arg(long, default_value_t = 1000)]
    keys: u32,
    /// Share of records sent with the hot key `key-0` (0 to 1); the rest are spread
    /// uniformly over all keys.
    #[arg(long, default_value_t = 0.0)]
    hot_key_share: f64,
    /// Stop after this many records.
    #[arg(long)]
    records: Option<u64>,
    /// Stop after this long (`30s`, `5m`, `1h`). Without --records or --duration, runs
    /// until Ctrl-C.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// The run id to embed (16 hex digits); random by default. `consume --run-id` takes it.
    #[arg(long, value_parser = parse_run_id)]
    run_id: Option<RunId>,
    /// Seed of the key and size choice; random by default.
    #[arg(long)]
    seed: Option<u64>,
    /// What fills payloads after the header: pseudo-random bytes or compressible text.
    #[arg(long, value_enum, default_value_t = Filler::Random)]
    filler: Filler,
    /// How user records are packed into Kinesis records.
    #[arg(long, value_enum, default_value_t = AggregationArg::PerShard)]
    aggregation: AggregationArg,
    /// Most user records per aggregate (default: no limit but the size).
    #[arg(long)]
    aggregation_max_count: Option<usize>,
    /// Most bytes per aggregate (`50KiB`, the KPL's default).
    #[arg(long, default_value = "50KiB", value_parser = parse_size_bytes)]
    aggregation_max_size: usize,
    /// Compress Kinesis records (this toolkit's consumer undoes it).
    #[arg(long, value_enum, default_value_t = CompressionArg::None)]
    compression: CompressionArg,
    /// The codec's level (default: the codec's own).
    #[arg(long)]
    compression_level: Option<i32>,
    /// Records smaller than this are sent uncompressed.
    #[arg(long, default_value = "512", value_parser = parse_size_bytes)]
    compression_min_size: usize,
    /// Per-key order: `per-key` keeps each key's records in order through retries;
    /// `relaxed` (the KPL's behaviour) may reorder them for throughput, and `consume` then
    /// reports the order violations it sees.
    #[arg(long, value_enum, default_value_t = OrderArg::PerKey)]
    record_order: OrderArg,
    /// How long a record may wait to be aggregated and sent.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    max_buffered_time: Duration,
    /// How long a record may take to be written, retries included, before it fails.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    record_ttl: Duration,
    /// Per-shard rate ceiling in percent of the shard limits (1 000 records/s, 1 MiB/s).
    #[arg(long, default_value_t = 150)]
    rate_limit_percent: u32,
    /// Most PutRecords requests in flight.
    #[arg(long, default_value_t = 24)]
    max_in_flight: usize,
    /// Draw the run as a PNG (1280x1000): user records sent and delivered per second with
    /// the payload MiB/s; the send-to-delivery latency (p50, p99, max) of the records
    /// delivered in each second; the producer's retries, throttled retries and failed records
    /// per second; titled with the run's parameters and totals. A delivery counts in the
    /// second it completed. The file is created before the run starts, so a path that cannot
    /// be written fails at once.
    #[arg(long, value_name = "FILE.png")]
    plot: Option<PathBuf>,
    /// Write the same per-second series as JSON: the run's description, `interval_secs`, and
    /// one point per second with `start` and `length` (seconds since the run started),
    /// `sent`, `delivered`, `bytes`, `failed`, `latency` (percentiles in seconds), `retries`
    /// and `throttled` (counts in that second). Created before the run starts, like --plot.
    #[arg(long, value_name = "FILE")]
    series_json: Option<PathBuf>,
    #[command(flatten)]
    output: Output,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AggregationArg {
    /// Each user record is its own Kinesis record.
    Off,
    /// KPL aggregation of records predicted for the same shard.
    PerShard,
    /// Aggregate only records with the same partition key.
    SameKey,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CompressionArg {
    /// No compression.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OrderArg {
    /// Each key's records are written in send order.
    PerKey,
    /// As the KPL: retries may overtake.
    Relaxed,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PositionArg {
    /// From the oldest record kept.
    TrimHorizon,
    /// Only records written after the start.
    Latest,
}

#[derive(Debug, Args)]
struct ConsumeArgs {
    /// The stream to read.
    #[arg(long)]
    stream: String,
    /// The application name, shared by the workers that split the shards among them; also
    /// the DynamoDB lease table's name (created if missing).
    #[arg(long)]
    application: String,
    /// This worker's id (default: host name and a random suffix).
    #[arg(long)]
    worker_id: Option<String>,
    /// Read with enhanced fan-out through this registered stream consumer (registered if
    /// missing) instead of polling.
    #[arg(long, value_name = "CONSUMER_NAME")]
    fan_out: Option<String>,
    /// Where to start a stream that has no leases yet.
    #[arg(long, value_enum, default_value_t = PositionArg::TrimHorizon)]
    initial_position: PositionArg,
    /// Verify this run only (records of other runs are counted and ignored).
    #[arg(long, value_parser = parse_run_id)]
    run_id: Option<RunId>,
    /// Expect records `0..N` of --run-id: stop once all arrived, and count the ones that
    /// did not as missing.
    #[arg(long, value_name = "N", requires = "run_id")]
    expect: Option<u64>,
    /// Take the run id, the record count and the ids known to have failed from a
    /// `produce --report-json` file (instead of --run-id and --expect).
    #[arg(long, value_name = "FILE", conflicts_with = "expect")]
    produce_report: Option<PathBuf>,
    /// Other workers share the shards: report what this one saw and leave missing records
    /// to `kinesis-load verify`.
    #[arg(long)]
    shared: bool,
    /// Stop after this long without a record.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    idle: Duration,
    /// Stop after this long in any case.
    #[arg(long, value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Lease duration (the KCL's failover time); renewal every third of it.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    lease_duration: Duration,
    /// How often this worker looks for leases to take (default: twice the lease duration).
    #[arg(long, value_parser = parse_duration)]
    taker_interval: Option<Duration>,
    /// Polling only: the wait after a GetRecords call that returned nothing.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    idle_between_reads: Duration,
    /// Append this worker's lease and delivery events to this file as JSON lines (each
    /// session's starting checkpoint, every batch before it is checkpointed, every checkpoint
    /// write, lost leases), written as they happen so that they survive the worker being
    /// killed; `kinesis-load verify --events` judges a run from them.
    #[arg(long, value_name = "FILE")]
    events: Option<PathBuf>,
    #[command(flatten)]
    output: Output,
}

#[derive(Debug, Args)]
struct ReshardArgs {
    /// The stream.
    #[arg(long)]
    stream: String,
    /// `split` the widest open shard in the middle; `merge` the narrowest two adjacent open
    /// shards; `scale` to --to shards (UpdateShardCount, uniform scaling).
    #[arg(long, value_enum)]
    action: ActionArg,
    /// Shard counts for `scale`, used in turn (`--to 4 --to 8`); AWS allows at most doubling
    /// or halving in one step.
    #[arg(long, value_name = "SHARDS", required_if_eq("action", "scale"))]
    to: Vec<u32>,
    /// Time between steps.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    every: Duration,
    /// How many steps.
    #[arg(long, default_value_t = 1)]
    times: u32,
    /// Delay before the first step (default: --every).
    #[arg(long, value_parser = parse_duration)]
    first_after: Option<Duration>,
    #[command(flatten)]
    output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ActionArg {
    /// SplitShard.
    Split,
    /// MergeShards.
    Merge,
    /// UpdateShardCount.
    Scale,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// The consumers' --report-json files.
    #[arg(long, num_args = 1.., required_unless_present = "events", value_name = "FILE")]
    reports: Vec<PathBuf>,
    /// Judge the run from the workers' `consume --events` files (and a chaos runner's)
    /// instead of their reports: records lost, per-key order across workers, duplicates
    /// justified only by a change of lease owner after the last checkpoint, no checkpoint
    /// written after a lease was lost. Survives workers killed with SIGKILL.
    #[arg(long, num_args = 1.., conflicts_with = "reports", value_name = "FILE")]
    events: Vec<PathBuf>,
    /// With --events: also check the final checkpoints in this application's lease table.
    #[arg(long, requires = "events", value_name = "APPLICATION")]
    lease_table: Option<String>,
    /// With --events: only wait until the files show every expected record (and every bad
    /// record the runner declared) delivered, at most this long; exit 0 then, 3 if the time
    /// ran out. Judges nothing: run verify again once the workers have stopped.
    #[arg(long, requires = "events", value_name = "DURATION", value_parser = parse_duration)]
    until_complete: Option<Duration>,
    /// Judge this run (default: the run the reports expect, else every run seen).
    #[arg(long, value_parser = parse_run_id)]
    run_id: Option<RunId>,
    /// Expect records `0..N` of --run-id.
    #[arg(long, value_name = "N", requires = "run_id")]
    expect: Option<u64>,
    /// Take the expectation from a `produce --report-json` file.
    #[arg(long, value_name = "FILE", conflicts_with = "expect")]
    produce_report: Option<PathBuf>,
    #[command(flatten)]
    output: Output,
}

fn parse_rate(s: &str) -> Result<Rate, String> {
    s.parse()
}

fn parse_size(s: &str) -> Result<SizeSpec, String> {
    s.parse()
}

fn parse_size_bytes(s: &str) -> Result<usize, String> {
    kinesis_examples::load::workload::parse_bytes(s).map(|n| n as usize)
}

fn parse_run_id(s: &str) -> Result<RunId, String> {
    s.parse()
}

#[tokio::main]
async fn main() -> ExitCode {
    // RUST_LOG, with the AWS SDK no more verbose than the default level and at DEBUG at most:
    // its TRACE output holds record data.
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".to_owned());
    let capped = kinesis_common::api::sdk::cap_sdk_logs;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(capped(&filter))
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(capped("warn"))),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Produce(args) => produce(args).await,
        Command::Consume(args) => consume(args).await,
        Command::Reshard(args) => reshard(args).await,
        Command::Verify(args) => verify(args).await,
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(VERIFY_FAILED),
        Err(e) => {
            eprintln!("kinesis-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A random number from the operating system's generator.
fn random_u64() -> u64 {
    use rand::{Rng, SeedableRng};
    rand::rngs::SmallRng::from_os_rng().random()
}

/// Completes on Ctrl-C (never, if the handler cannot be installed); a second Ctrl-C ends the
/// process at once, as the handler, once installed, stays for the process's life.
async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
    eprintln!("stopping: finishing the run and its report (Ctrl-C again to quit at once)");
    tokio::spawn(async {
        let _ = tokio::signal::ctrl_c().await;
        std::process::exit(130);
    });
}

/// Prints a report as text or JSON and writes its file; `ok` is passed through.
fn emit<T: serde::Serialize>(
    output: &Output,
    report: &T,
    text: String,
    ok: bool,
) -> anyhow::Result<bool> {
    if let Some(path) = &output.report_json {
        report::write_json(path, report)?;
    }
    if output.json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{text}");
    }
    Ok(ok)
}

async fn produce(args: ProduceArgs) -> anyhow::Result<bool> {
    let stream = StreamName::new(args.stream.clone())?;
    // Output files are created now, so that an unwritable path fails before the run.
    let plot_file = args.plot.as_deref().map(PlotFile::create).transpose()?;
    let series_file =
        args.series_json.as_deref().map(|p| OutputFile::create(p, "--series-json")).transpose()?;
    let kinesis = kinesis_examples::kinesis().await;
    if let Some(shards) = args.create
        && create_stream_if_missing(kinesis.as_ref(), &stream, shards).await?
    {
        eprintln!("created stream {stream} with {shards} shards");
    }
    let keys = KeyChooser::new(args.keys, args.hot_key_share).map_err(anyhow::Error::msg)?;
    let config = ProducerConfig {
        aggregation: match args.aggregation {
            AggregationArg::Off => Aggregation::Off,
            AggregationArg::PerShard => Aggregation::PerShard,
            AggregationArg::SameKey => Aggregation::SamePartitionKey,
        },
        aggregation_max_count: args.aggregation_max_count.unwrap_or(usize::MAX),
        aggregation_max_size: args.aggregation_max_size,
        compression: match args.compression {
            CompressionArg::None => None,
            CompressionArg::Gzip => Some(Codec::Gzip),
            CompressionArg::Zstd => Some(Codec::Zstd),
        }
        .map(|codec| Compression {
            codec,
            level: args.compression_level,
            min_size: args.compression_min_size,
        }),
        record_order: match args.record_order {
            OrderArg::PerKey => RecordOrder::PerKey,
            OrderArg::Relaxed => RecordOrder::Relaxed,
        },
        record_max_buffered_time: args.max_buffered_time,
        record_ttl: args.record_ttl,
        rate_limit_percent: args.rate_limit_percent,
        max_in_flight_requests: args.max_in_flight,
        ..ProducerConfig::default()
    };
    let run_id = args.run_id.unwrap_or_else(|| RunId(random_u64()));
    let options = ProduceOptions {
        stream: stream.clone(),
        run_id,
        rate: args.rate,
        size: args.size,
        keys,
        records: args.records,
        duration: args.duration,
        filler: args.filler,
        seed: args.seed.unwrap_or_else(random_u64),
        producer: config,
    };
    eprintln!(
        "producing to {stream}: run {run_id}, rate {}, size {}, {} keys{}, until {}",
        args.rate,
        args.size,
        args.keys,
        if args.hot_key_share > 0.0 {
            format!(" ({:.0}% to key-0)", args.hot_key_share * 100.0)
        } else {
            String::new()
        },
        match (args.records, args.duration) {
            (Some(n), Some(d)) => format!("{n} records or {d:?}"),
            (Some(n), None) => format!("{n} records"),
            (None, Some(d)) => format!("{d:?}"),
            (None, None) => "Ctrl-C".to_owned(),
        }
    );
    let (report, series): (ProduceReport, Series) = kinesis_examples::load::produce_with_series(
        kinesis,
        options.clone(),
        args.output.sink(),
        ctrl_c(),
    )
    .await?;
    let text = report.render();
    let ok = emit(&args.output, &report, text, report.failed == 0)?;
    if plot_file.is_some() || series_file.is_some() {
        let labels = plot::describe_run(&options, args.hot_key_share, &report);
        if let Some(file) = series_file {
            let path = file.path().display().to_string();
            let description = std::iter::once(labels.title.clone()).chain(labels.lines.clone());
            file.write_json(&SeriesReport {
                stream: report.stream.clone(),
                run_id: report.run_id,
                description: description.collect(),
                series: series.clone(),
            })?;
            eprintln!("series written to {path}");
        }
        if let Some(file) = plot_file {
            let path = file.path().display().to_string();
            file.write(&series, &labels)?;
            eprintln!("plot written to {path}");
        }
    }
    Ok(ok)
}

/// The expectation from --produce-report, or --run-id with --expect.
fn expectation(
    produce_report: Option<&PathBuf>,
    run_id: Option<RunId>,
    expect: Option<u64>,
) -> anyhow::Result<Option<Expectation>> {
    if let Some(path) = produce_report {
        let report: ProduceReport = report::read_json(path)?;
        return Ok(Some(report.expectation()));
    }
    Ok(match (run_id, expect) {
        (Some(run_id), Some(records)) => {
            Some(Expectation { run_id, records, failed: IdSet::new() })
        }
        _ => None,
    })
}

async fn consume(args: ConsumeArgs) -> anyhow::Result<bool> {
    let stream = StreamName::new(args.stream.clone())?;
    let expectation = expectation(args.produce_report.as_ref(), args.run_id, args.expect)?;
    let sdk = kinesis_examples::sdk_config().await;
    let kinesis = kinesis_examples::kinesis().await;
    let leases: Arc<dyn LeaseStore> =
        Arc::new(DynamoLeaseStore::new(&sdk, args.application.clone()));
    let mut config = ConsumerConfig::default();
    config.initial_position = match args.initial_position {
        PositionArg::TrimHorizon => InitialPosition::TrimHorizon,
        PositionArg::Latest => InitialPosition::Latest,
    };
    config.lease_duration = args.lease_duration;
    config.renew_interval = args.lease_duration / 3;
    config.taker_interval = args.taker_interval.unwrap_or(args.lease_duration * 2);
    config.retrieval = match &args.fan_out {
        Some(name) => Retrieval::FanOut { consumer_name: ConsumerName::new(name.clone())? },
        None => {
            let mut polling = PollingSettings::default();
            polling.idle_time_between_reads = args.idle_between_reads;
            Retrieval::Polling(polling)
        }
    };
    let options = ConsumeOptions {
        stream,
        application: args.application.clone(),
        worker: args.worker_id.clone().map(WorkerId::new),
        consumer: config,
        run_id: args.run_id.or(expectation.as_ref().map(|e| e.run_id)),
        expectation,
        shared: args.shared,
        idle: args.idle,
        timeout: args.timeout,
    };
    let events = args.events.as_deref().map(EventLog::open).transpose()?.map(Arc::new);
    let report: ConsumeReport = kinesis_examples::load::consume_with_events(
        kinesis,
        leases,
        options,
        events,
        args.output.sink(),
        ctrl_c(),
    )
    .await
    .context("consume")?;
    let text = report.render();
    let ok = report.verdict.ok;
    emit(&args.output, &report, text, ok)
}

async fn reshard(args: ReshardArgs) -> anyhow::Result<bool> {
    let stream = StreamName::new(args.stream.clone())?;
    let kinesis = kinesis_examples::kinesis().await;
    let action = match args.action {
        ActionArg::Split => ReshardAction::Split,
        ActionArg::Merge => ReshardAction::Merge,
        ActionArg::Scale => ReshardAction::Scale(args.to.clone()),
    };
    let schedule = Schedule {
        first_after: args.first_after.unwrap_or(args.every),
        every: args.every,
        times: args.times,
    };
    // Each step is a line worth seeing as it happens, terminal or not.
    let sink = (!args.output.no_progress && !args.output.json)
        .then(|| Arc::new(|line: &str| eprintln!("{line}")) as ProgressSink);
    let events =
        kinesis_examples::load::reshard(kinesis, &stream, &action, schedule, sink, ctrl_c())
            .await?;
    let mut text = format!("reshard report: stream {stream}, {} step(s)\n", events.len());
    for e in &events {
        text.push_str(&format!(
            "  at {:>6.1} s  {} (active after {:.1} s; {} open shards)\n",
            e.at.as_secs_f64(),
            e.action,
            e.took.as_secs_f64(),
            e.open_shards
        ));
    }
    emit(&args.output, &events, text, true)
}

async fn verify(args: VerifyArgs) -> anyhow::Result<bool> {
    if !args.events.is_empty() {
        return verify_events(args).await;
    }
    let reports: Vec<ConsumeReport> =
        args.reports.iter().map(|p| report::read_json(p)).collect::<anyhow::Result<_>>()?;
    let given = expectation(args.produce_report.as_ref(), args.run_id, args.expect)?;
    let expectation = common_expectation(given, &reports)?;
    let mut tally = Tally::default();
    for r in &reports {
        tally.merge(&r.tally);
    }
    if let (Some(run), None) = (args.run_id, &expectation) {
        tally.runs.retain(|id, _| *id == run);
    }
    let verdict = judge(&tally, expectation.as_ref(), Scope::Whole);
    let report = VerifyReport {
        workers: reports.iter().map(|r| r.worker.clone()).collect(),
        expectation,
        tally,
        verdict,
    };
    let text = report.render();
    let ok = report.verdict.ok;
    emit(&args.output, &report, text, ok)
}

/// `verify --events`: waits for completion, or judges the run from the event files.
async fn verify_events(args: VerifyArgs) -> anyhow::Result<bool> {
    let expectation = expectation(args.produce_report.as_ref(), args.run_id, args.expect)?;
    if let Some(limit) = args.until_complete {
        let Some(expectation) = &expectation else {
            anyhow::bail!("--until-complete needs --produce-report, or --run-id with --expect");
        };
        return wait_complete(&args.events, expectation, limit, args.output.sink()).await;
    }
    let (events, partial) = events::read_all(&args.events)?;
    let leases = match &args.lease_table {
        Some(application) => Some(final_leases(application).await?),
        None => None,
    };
    let audit = audit::audit(&events, expectation.as_ref(), leases.as_deref(), partial);
    let text = audit.render();
    let ok = audit.ok;
    emit(&args.output, &audit, text, ok)
}

/// Tails the event files until every expected record and declared bad record was delivered.
async fn wait_complete(
    files: &[PathBuf],
    expectation: &Expectation,
    limit: Duration,
    progress: Option<ProgressSink>,
) -> anyhow::Result<bool> {
    let started = tokio::time::Instant::now();
    let mut tail = events::EventTail::new(files);
    let mut seen = audit::Progress::new();
    let mut next_line = started;
    loop {
        for event in tail.poll()? {
            seen.observe(&event);
        }
        let (records, bad) = seen.outstanding(expectation);
        let waited = started.elapsed();
        if records == 0 && bad == 0 {
            eprintln!(
                "complete after {:.1} s: every expected record ({}) and declared bad record delivered",
                waited.as_secs_f64(),
                expectation.expected()
            );
            return Ok(true);
        }
        if waited >= limit {
            eprintln!(
                "not complete after {:.0} s: {records} expected record(s) and {bad} bad record(s) not delivered",
                limit.as_secs_f64()
            );
            return Ok(false);
        }
        if let Some(sink) = progress.as_ref().filter(|_| tokio::time::Instant::now() >= next_line) {
            sink(&format!(
                "[{:>5.0}s] waiting: {} delivered, {records} expected and {bad} bad record(s) outstanding",
                waited.as_secs_f64(),
                seen.distinct()
            ));
            next_line += Duration::from_secs(1);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The application's lease table as it is now, read with the consumer's own lease store.
async fn final_leases(application: &str) -> anyhow::Result<Vec<audit::FinalLease>> {
    let sdk = kinesis_examples::sdk_config().await;
    let store = DynamoLeaseStore::new(&sdk, application.to_owned());
    let scan = store.list().await.with_context(|| format!("reading lease table {application}"))?;
    Ok(scan
        .leases
        .into_iter()
        .map(|lease| audit::FinalLease {
            shard: lease.key.to_string(),
            owner: lease.owner.map(|o| o.to_string()),
            checkpoint: lease.checkpoint.to_string(),
        })
        .collect())
}
