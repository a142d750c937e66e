//! `codec-bench`: this toolkit's KPL aggregation codec on the workload files that
//! `bench/codec-vs-reference.sh` also feeds to the awslabs reference libraries (Python and
//! Node `aws-kinesis-agg`), with raw MD5 over the same aggregates as the floor.
//!
//! - `run`: reads a workload file, then per run aggregates every user record into aggregates of
//!   at most `--max-size` bytes ([`AggregateBuilder::try_push`]; a full aggregate is closed and
//!   a new one started, as the reference aggregators do), de-aggregates every aggregate back
//!   (digest checked, no shard range), and computes the MD5 of every aggregate's bytes one by
//!   one (md-5, the floor). Prints one JSON line with the seconds of each run.
//!
//!   Both directions batch their digests as the producer and the consumer do: closed
//!   aggregates are sealed together ([`seal_all`]) a PutRecords request at a time (at most
//!   500 aggregates and 5 MiB with their one-byte partition keys, so four 1 MiB aggregates or
//!   a hundred 51 200-byte ones), and aggregates are de-aggregated a GetRecords page at a time
//!   ([`deaggregate_all`]: at most 10 000 records and 10 MiB). `--one-by-one` finishes and
//!   de-aggregates each aggregate alone instead ([`AggregateBuilder::finish`], [`deaggregate`]).
//!   The aggregates are the same bytes either way.
//! - `verify`: de-aggregates an aggregates file written by any of the three drivers and checks
//!   that it holds exactly the workload's records, in order. Exit status 1 if not.
//!
//! File formats (little-endian), shared with `bench/py_agg.py` and `bench/node_agg.js`:
//!
//! ```text
//! workload:   "KBW1" u32:count  { u16:key_len key u32:data_len data }*count
//! aggregates: "KBA1" u32:count  { u32:len aggregate }*count
//! ```

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use kinesis_common::aggregation::{
    AggregateBuilder, Deaggregated, DeaggregationOutcome, Unsealed, UserRecord, deaggregate,
    deaggregate_all, seal_all,
};
use kinesis_common::{HashKey, KinesisRecord, PartitionKey, SequenceNumber};

/// The magic of a workload file.
const WORKLOAD_MAGIC: &[u8; 4] = b"KBW1";
/// The magic of an aggregates file.
const AGGREGATES_MAGIC: &[u8; 4] = b"KBA1";
/// A Kinesis record's maximum data size, which is what the reference aggregators fill up to
/// by default (Python `aws_kinesis_agg.MAX_BYTES_PER_RECORD`, Node `KINESIS_MAX_PAYLOAD_BYTES`
/// plus magic and digest).
const ONE_MIB: usize = 1024 * 1024;
/// PutRecords: most records and bytes (data and partition keys) per request.
const REQUEST_RECORDS: usize = 500;
const REQUEST_BYTES: usize = 5 * ONE_MIB;
/// GetRecords: most records and bytes per page.
const PAGE_RECORDS: usize = 10_000;
const PAGE_BYTES: usize = 10 * ONE_MIB;

#[derive(Debug, Parser)]
#[command(version, about = "KPL codec throughput on a workload file, for the reference comparison")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Aggregate, de-aggregate and MD5 the workload; one JSON line of timings.
    Run {
        /// The workload file (`bench/gen_workload.py`).
        #[arg(long)]
        workload: PathBuf,
        /// Most bytes per aggregate (magic, protobuf and digest).
        #[arg(long, default_value_t = ONE_MIB)]
        max_size: usize,
        /// Timed runs, after one untimed warm-up run.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Write the aggregates of the first run to this file.
        #[arg(long)]
        write_aggregates: Option<PathBuf>,
        /// Finish and de-aggregate each aggregate alone, digests one at a time, instead of a
        /// PutRecords request's or a GetRecords page's at once.
        #[arg(long)]
        one_by_one: bool,
    },
    /// Check that an aggregates file holds exactly the workload's records, in order.
    Verify {
        /// The workload file.
        #[arg(long)]
        workload: PathBuf,
        /// The aggregates file (from any driver).
        #[arg(long)]
        aggregates: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Run { workload, max_size, runs, write_aggregates, one_by_one } => {
            run(&workload, max_size, runs, write_aggregates.as_deref(), one_by_one)
        }
        Command::Verify { workload, aggregates } => verify(&workload, &aggregates),
    }
}

/// Little-endian reader over a file's bytes; slices share the file's buffer.
struct Reader {
    data: Bytes,
    at: usize,
}

impl Reader {
    fn open(path: &Path, magic: &[u8; 4]) -> anyhow::Result<(Self, usize)> {
        let data = Bytes::from(std::fs::read(path).with_context(|| path.display().to_string())?);
        let mut reader = Self { data, at: 0 };
        ensure!(&reader.take(4)?[..] == magic, "{}: not a {magic:?} file", path.display());
        let count = reader.u32()? as usize;
        Ok((reader, count))
    }

    fn take(&mut self, n: usize) -> anyhow::Result<Bytes> {
        ensure!(self.at + n <= self.data.len(), "truncated file");
        let out = self.data.slice(self.at..self.at + n);
        self.at += n;
        Ok(out)
    }

    fn u16(&mut self) -> anyhow::Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?[..].try_into()?))
    }

    fn u32(&mut self) -> anyhow::Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?[..].try_into()?))
    }
}

fn read_workload(path: &Path) -> anyhow::Result<Vec<UserRecord>> {
    let (mut reader, count) = Reader::open(path, WORKLOAD_MAGIC)?;
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        let key_len = reader.u16()? as usize;
        let key = String::from_utf8(reader.take(key_len)?.to_vec())?;
        let data_len = reader.u32()? as usize;
        records.push(UserRecord::new(PartitionKey::new(key)?, reader.take(data_len)?));
    }
    Ok(records)
}

fn read_aggregates(path: &Path) -> anyhow::Result<Vec<Bytes>> {
    let (mut reader, count) = Reader::open(path, AGGREGATES_MAGIC)?;
    (0..count)
        .map(|_| {
            let len = reader.u32()? as usize;
            reader.take(len)
        })
        .collect()
}

fn write_aggregates(path: &Path, aggregates: &[Bytes]) -> anyhow::Result<()> {
    let mut out = Vec::with_capacity(8 + aggregates.iter().map(|a| 4 + a.len()).sum::<usize>());
    out.extend_from_slice(AGGREGATES_MAGIC);
    out.extend_from_slice(&u32::try_from(aggregates.len())?.to_le_bytes());
    for aggregate in aggregates {
        out.extend_from_slice(&u32::try_from(aggregate.len())?.to_le_bytes());
        out.extend_from_slice(aggregate);
    }
    std::fs::write(path, out).with_context(|| path.display().to_string())
}

/// The aggregates as GetRecords would return them: the KPL's one-byte outer partition key and
/// a sequence number shared by all (the decoder clones it into every user record).
fn as_kinesis_records(aggregates: &[Bytes]) -> anyhow::Result<Vec<KinesisRecord>> {
    let sequence_number =
        SequenceNumber::new("49590338271490256608559692538361571095921575989136588898")?;
    Ok(aggregates
        .iter()
        .map(|data| KinesisRecord {
            sequence_number: sequence_number.clone(),
            partition_key: "a".to_owned(),
            data: data.clone(),
            approximate_arrival: None,
        })
        .collect())
}

/// Closed aggregates waiting to be sealed a PutRecords request at a time.
struct Request {
    unsealed: Vec<Unsealed>,
    /// Their size in the request: data plus the one-byte outer partition key each.
    bytes: usize,
}

impl Request {
    fn add(&mut self, aggregate: Unsealed, sealed: &mut Vec<Bytes>) {
        let size = aggregate.len() + 1;
        if self.unsealed.len() == REQUEST_RECORDS || self.bytes + size > REQUEST_BYTES {
            self.seal(sealed);
        }
        self.bytes += size;
        self.unsealed.push(aggregate);
    }

    fn seal(&mut self, sealed: &mut Vec<Bytes>) {
        sealed.extend(seal_all(std::mem::take(&mut self.unsealed)));
        self.bytes = 0;
    }
}

/// Packs `records` in order into aggregates of at most `max_size` bytes.
fn aggregate(
    records: Vec<UserRecord>,
    max_size: usize,
    one_by_one: bool,
) -> anyhow::Result<Vec<Bytes>> {
    let mut aggregates = Vec::new();
    let mut request = Request { unsealed: Vec::new(), bytes: 0 };
    let mut close = |builder: &AggregateBuilder, aggregates: &mut Vec<Bytes>| {
        if one_by_one {
            aggregates.push(builder.finish());
        } else {
            request.add(builder.finish_unsealed(), aggregates);
        }
    };
    let mut builder = AggregateBuilder::new();
    for record in records {
        if let Err(rejected) = builder.try_push(record, max_size) {
            ensure!(!builder.is_empty(), "a record does not fit an aggregate of {max_size} bytes");
            close(&builder, &mut aggregates);
            builder.clear();
            builder.try_push(rejected.record, max_size)?;
        }
    }
    if !builder.is_empty() {
        close(&builder, &mut aggregates);
    }
    request.seal(&mut aggregates);
    Ok(aggregates)
}

/// De-aggregates every aggregate; returns the user records found.
fn deaggregate_every(inputs: &[KinesisRecord], one_by_one: bool) -> anyhow::Result<usize> {
    let mut found = 0;
    let mut count = |deaggregated: Deaggregated| {
        if !matches!(deaggregated.outcome, DeaggregationOutcome::Aggregated) {
            bail!("not a valid aggregate: {:?}", deaggregated.outcome);
        }
        found += deaggregated.records.len();
        Ok(())
    };
    if one_by_one {
        for input in inputs {
            count(deaggregate(input, None))?;
        }
    } else {
        let mut rest = inputs;
        while !rest.is_empty() {
            // A GetRecords page: records up to the count and size limits.
            let mut bytes = 0;
            let page = rest
                .iter()
                .take(PAGE_RECORDS)
                .take_while(|r| {
                    bytes += r.data.len();
                    bytes <= PAGE_BYTES
                })
                .count()
                .max(1);
            let (now, later) = rest.split_at(page);
            for deaggregated in deaggregate_all(now, None) {
                count(deaggregated)?;
            }
            rest = later;
        }
    }
    Ok(found)
}

/// MD5 of every aggregate's bytes (md-5, the digest the codec itself uses, through
/// [`HashKey::from_partition_key_bytes`], which is exactly `Md5::digest`).
fn md5_all(aggregates: &[Bytes]) -> u128 {
    aggregates.iter().fold(0, |acc, a| acc ^ HashKey::from_partition_key_bytes(a).0)
}

fn run(
    workload: &Path,
    max_size: usize,
    runs: usize,
    write_to: Option<&Path>,
    one_by_one: bool,
) -> anyhow::Result<()> {
    let records = read_workload(workload)?;
    let user_bytes: usize = records.iter().map(|r| r.data.len()).sum();
    let (mut aggregate_secs, mut deaggregate_secs, mut md5_secs) = (vec![], vec![], vec![]);
    let mut summary = None;
    for run in 0..=runs {
        // The builder takes the records by value; the copy of the list (reference counts
        // only) is not timed.
        let input = records.clone();
        let started = Instant::now();
        let aggregates = aggregate(black_box(input), max_size, one_by_one)?;
        let aggregated = started.elapsed();

        let inputs = as_kinesis_records(&aggregates)?;
        let started = Instant::now();
        let found = deaggregate_every(black_box(&inputs), one_by_one)?;
        let deaggregated = started.elapsed();
        ensure!(found == records.len(), "de-aggregated {found} of {} records", records.len());

        let started = Instant::now();
        black_box(md5_all(black_box(&aggregates)));
        let digested = started.elapsed();

        if run == 0 {
            if let Some(path) = write_to {
                write_aggregates(path, &aggregates)?;
            }
            summary = Some((aggregates.len(), aggregates.iter().map(Bytes::len).sum::<usize>()));
            continue; // warm-up
        }
        aggregate_secs.push(aggregated.as_secs_f64());
        deaggregate_secs.push(deaggregated.as_secs_f64());
        md5_secs.push(digested.as_secs_f64());
    }
    let (count, aggregate_bytes) = summary.unwrap_or_default();
    println!(
        "{}",
        serde_json::json!({
            "impl": if one_by_one { "rust-one-by-one" } else { "rust" },
            "workload": workload.display().to_string(),
            "records": records.len(),
            "user_bytes": user_bytes,
            "max_size": max_size,
            "aggregates": count,
            "aggregate_bytes": aggregate_bytes,
            "aggregate_secs": aggregate_secs,
            "deaggregate_secs": deaggregate_secs,
            "md5_secs": md5_secs,
        })
    );
    Ok(())
}

fn verify(workload: &Path, aggregates: &Path) -> anyhow::Result<()> {
    let expected = read_workload(workload)?;
    let inputs = as_kinesis_records(&read_aggregates(aggregates)?)?;
    let mut next = expected.iter();
    for (n, input) in inputs.iter().enumerate() {
        let deaggregated = deaggregate(input, None);
        ensure!(
            matches!(deaggregated.outcome, DeaggregationOutcome::Aggregated),
            "aggregate {n}: {:?}",
            deaggregated.outcome
        );
        for (i, record) in deaggregated.records.iter().enumerate() {
            let Some(want) = next.next() else { bail!("more records than the workload") };
            ensure!(record.sub_sequence_number == Some(i as u64), "aggregate {n}: sub-sequence");
            ensure!(
                &*record.partition_key == want.partition_key.as_str() && record.data == want.data,
                "aggregate {n} record {i} differs from the workload"
            );
        }
    }
    ensure!(next.next().is_none(), "fewer records than the workload");
    println!(
        "ok: {} holds the {} records of {} in {} aggregates",
        aggregates.display(),
        expected.len(),
        workload.display(),
        inputs.len()
    );
    Ok(())
}
