//! `limits-proxy`: the [`LimitsProxy`] as a command, for benchmarks and manual use.
//!
//! Prints the bound socket address (`127.0.0.1:PORT`) as the first line of stdout, then runs
//! until interrupted (SIGINT or SIGTERM), printing the proxy's stats as one JSON line on
//! stderr every `--stats-every` and once at exit.
//!
//! ```text
//! limits-proxy --upstream http://127.0.0.1:4567 --seed 7 --error-before 0.01 --latency 2ms
//! ```

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use kinesis_integration_tests::proxy::{
    FaultScope, Faults, Fraction, Limits, LimitsProxy, ProxyConfig, ProxyStats, RequestCaps,
    ServerError, ShardWriteLimit,
};

/// A loopback proxy that enforces AWS-like Kinesis limits and injects faults in front of a
/// Kinesis or DynamoDB emulator.
#[derive(Debug, Parser)]
#[command(name = "limits-proxy", version)]
struct Args {
    /// The emulator to forward to, such as http://127.0.0.1:4568 (plain http only).
    #[arg(long)]
    upstream: String,

    /// Where to listen; must be a loopback address. Port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,

    /// Seed of the generator that draws faults.
    #[arg(long, default_value_t = 0)]
    seed: u64,

    /// Turn off the per-shard write limits.
    #[arg(long)]
    no_shard_limits: bool,

    /// Records per second per shard (AWS: 1000).
    #[arg(long, default_value_t = 1000)]
    records_per_second: u32,

    /// Bytes (data + partition key) per second per shard (AWS: 1 MiB).
    #[arg(long, default_value_t = 1024 * 1024)]
    bytes_per_second: u64,

    /// Unused capacity a shard may save up, as time at the full rate (e.g. 1s, 500ms).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    burst: Duration,

    /// Turn off the PutRecords/PutRecord request caps.
    #[arg(long)]
    no_request_caps: bool,

    /// Entries per PutRecords (AWS: 500).
    #[arg(long, default_value_t = 500)]
    max_records: usize,

    /// Data plus partition keys per PutRecords (AWS: 5 MiB).
    #[arg(long, default_value_t = 5 * 1024 * 1024)]
    max_request_bytes: u64,

    /// Data bytes per record (AWS: 1 MiB).
    #[arg(long, default_value_t = 1024 * 1024)]
    max_record_bytes: u64,

    /// How long a stream's shard map is trusted before it is listed again.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    shard_map_max_age: Duration,

    /// Share of requests answered with a server error without forwarding (0 to 1).
    #[arg(long, default_value = "0", value_parser = parse_fraction)]
    error_before: Fraction,

    /// Share of requests forwarded, then answered with a server error if the upstream
    /// succeeded (0 to 1).
    #[arg(long, default_value = "0", value_parser = parse_fraction)]
    error_after: Fraction,

    /// The server error injected.
    #[arg(long, value_enum, default_value_t = ServerErrorArg::InternalFailure)]
    server_error: ServerErrorArg,

    /// Share of requests whose connection is reset before forwarding (0 to 1).
    #[arg(long, default_value = "0", value_parser = parse_fraction)]
    reset_before: Fraction,

    /// Share of requests whose connection is reset after the upstream answered (0 to 1).
    #[arg(long, default_value = "0", value_parser = parse_fraction)]
    reset_after: Fraction,

    /// Delay added before forwarding (e.g. 5ms).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    latency: Duration,

    /// Uniform random delay added on top of --latency, up to this much.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    latency_jitter: Duration,

    /// Share of PutRecords entries throttled even under the limits (0 to 1).
    #[arg(long, default_value = "0", value_parser = parse_fraction)]
    throttle_entries: Fraction,

    /// Inject faults only into these operations (X-Amz-Target operation names, comma
    /// separated, e.g. PutRecords,PutRecord). Default: every request.
    #[arg(long, value_delimiter = ',')]
    fault_operations: Vec<String>,

    /// Print stats to stderr this often (0s: only at exit).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    stats_every: Duration,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ServerErrorArg {
    /// HTTP 500 InternalFailure.
    InternalFailure,
    /// HTTP 503 ServiceUnavailable.
    ServiceUnavailable,
}

/// Parses `250ms`, `2s`, `1.5s`, `100us`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("{text:?} is not a duration"))?;
    let seconds = match unit {
        "s" | "" if value == 0.0 => 0.0,
        "s" => value,
        "ms" => value / 1e3,
        "us" => value / 1e6,
        _ => return Err(format!("{text:?}: the unit must be s, ms or us")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

fn parse_fraction(text: &str) -> Result<Fraction, String> {
    let value: f64 = text.parse().map_err(|_| format!("{text:?} is not a number"))?;
    Fraction::new(value).map_err(|e| e.to_string())
}

impl Args {
    fn config(&self) -> ProxyConfig {
        let shard_write = (!self.no_shard_limits).then_some(ShardWriteLimit {
            records_per_second: self.records_per_second,
            bytes_per_second: self.bytes_per_second,
            burst: self.burst,
        });
        let request = (!self.no_request_caps).then_some(RequestCaps {
            max_records: self.max_records,
            max_request_bytes: self.max_request_bytes,
            max_record_bytes: self.max_record_bytes,
        });
        let scope = if self.fault_operations.is_empty() {
            FaultScope::Everything
        } else {
            FaultScope::Operations(self.fault_operations.clone())
        };
        let faults = Faults {
            scope,
            error_before_forward: self.error_before,
            error_after_forward: self.error_after,
            server_error: match self.server_error {
                ServerErrorArg::InternalFailure => ServerError::InternalFailure,
                ServerErrorArg::ServiceUnavailable => ServerError::ServiceUnavailable,
            },
            reset_before_forward: self.reset_before,
            reset_after_forward: self.reset_after,
            latency: self.latency,
            latency_jitter: self.latency_jitter,
            throttle_entries: self.throttle_entries,
        };
        ProxyConfig {
            limits: Limits { shard_write, request },
            faults,
            seed: self.seed,
            shard_map_max_age: self.shard_map_max_age,
        }
    }
}

fn print_stats(stats: &ProxyStats) {
    match serde_json::to_string(stats) {
        Ok(line) => eprintln!("{line}"),
        Err(e) => eprintln!("limits-proxy: could not print stats: {e}"),
    }
}

async fn interrupted() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("waiting for SIGINT"),
        _ = term.recv() => Ok(()),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let proxy = LimitsProxy::start_on(&args.upstream, args.listen, args.config())
        .await
        .context("starting the proxy")?;
    // The first line of stdout is the address, for scripts that start the proxy.
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}", proxy.local_addr())?;
        stdout.flush()?;
    }
    eprintln!("limits-proxy: {} -> {}", proxy.endpoint(), args.upstream);

    let stop = interrupted();
    tokio::pin!(stop);
    if args.stats_every.is_zero() {
        stop.await?;
    } else {
        let mut ticks = tokio::time::interval(args.stats_every);
        ticks.tick().await;
        loop {
            tokio::select! {
                result = &mut stop => { result?; break; }
                _ = ticks.tick() => print_stats(&proxy.stats()),
            }
        }
    }
    print_stats(&proxy.stats());
    proxy.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_s_ms_and_us() {
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("100us").unwrap(), Duration::from_micros(100));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5m").is_err());
        assert!(parse_duration("ms").is_err());
    }

    #[test]
    fn flags_build_the_config() {
        let args = Args::parse_from([
            "limits-proxy",
            "--upstream",
            "http://127.0.0.1:1",
            "--error-before",
            "0.25",
            "--fault-operations",
            "PutRecords,PutRecord",
            "--no-request-caps",
        ]);
        let config = args.config();
        assert_eq!(config.faults.error_before_forward.get(), 0.25);
        assert_eq!(config.faults.scope, FaultScope::operations(["PutRecords", "PutRecord"]));
        assert_eq!(config.limits.request, None);
        assert_eq!(config.limits.shard_write, Some(ShardWriteLimit::aws()));
        assert!(
            Args::try_parse_from(["limits-proxy", "--upstream", "x", "--reset-after", "2"])
                .is_err()
        );
    }
}
