//! The load generator and verifier (`kinesis_examples::load`, behind `kinesis-load`) against
//! the substrate: what `produce` writes, `consume` workers read back and `verify` judges,
//! through the library functions the binary calls.
//!
//! - Two workers sharing one application (one lease table) read 2 000 KPL-aggregated records
//!   of a 2-shard stream; their JSON reports, merged as `kinesis-load verify` merges them,
//!   miss nothing.
//! - A shard split on `reshard`'s schedule while `produce` runs loses nothing and keeps every
//!   key's records in order, parents before children.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kinesis_common::{KinesisApi, StreamName};
use kinesis_consumer::{
    ConsumerConfig, DynamoLeaseStore, InitialPosition, LeaseStore, PollingSettings, Retrieval,
    WorkerId,
};
use kinesis_examples::load::report::{self, common_expectation};
use kinesis_examples::load::{
    ConsumeOptions, ConsumeReport, Expectation, Filler, KeyChooser, ProduceOptions, ProduceReport,
    Rate, ReshardAction, RunId, Schedule, Scope, SizeSpec, Tally, consume, judge, produce, reshard,
};
use kinesis_integration_tests::{
    Backend, create_stream, dynamodb, kinesis, sdk_config, unique_name, unique_stream,
};
use kinesis_producer::{Aggregation, ProducerConfig};

/// A run id no other test run uses.
fn run_id() -> RunId {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    RunId(nanos ^ (u64::from(std::process::id()) << 48))
}

fn produce_options(stream: &StreamName, records: u64, rate: Rate) -> ProduceOptions {
    ProduceOptions {
        stream: stream.clone(),
        run_id: run_id(),
        rate,
        size: SizeSpec::Uniform(60, 300),
        keys: KeyChooser::new(50, 0.2).unwrap(),
        records: Some(records),
        duration: None,
        filler: Filler::Random,
        seed: 7,
        producer: ProducerConfig {
            aggregation: Aggregation::PerShard,
            ..ProducerConfig::default()
        },
    }
}

/// Short lease timings, so that lease moves and children's starts take seconds, not the
/// KCL's tens of seconds.
fn consumer_config() -> ConsumerConfig {
    let mut c = ConsumerConfig::default();
    c.initial_position = InitialPosition::TrimHorizon;
    c.lease_duration = Duration::from_secs(6);
    c.renew_interval = Duration::from_secs(2);
    c.taker_interval = Duration::from_secs(2);
    c.parent_poll_interval = Duration::from_millis(500);
    let mut polling = PollingSettings::default();
    polling.idle_time_between_reads = Duration::from_millis(200);
    c.retrieval = Retrieval::Polling(polling);
    c
}

async fn worker(
    api: Arc<dyn KinesisApi>,
    leases: Arc<dyn LeaseStore>,
    stream: &StreamName,
    application: &str,
    name: &str,
    expectation: &Expectation,
    shared: bool,
) -> ConsumeReport {
    let options = ConsumeOptions {
        stream: stream.clone(),
        application: application.to_owned(),
        worker: Some(WorkerId::new(name)),
        consumer: consumer_config(),
        run_id: Some(expectation.run_id),
        expectation: Some(expectation.clone()),
        shared,
        idle: Duration::from_secs(8),
        timeout: Some(Duration::from_secs(120)),
    };
    consume(api, leases, options, None, std::future::pending()).await.unwrap()
}

async fn cleanup(api: &dyn KinesisApi, stream: &StreamName, table: &str) {
    api.delete_stream(stream).await.unwrap();
    dynamodb().await.unwrap().delete_table().table_name(table).send().await.unwrap();
}

fn assert_all_written(report: &ProduceReport, records: u64) {
    assert_eq!(report.records, records, "{}", report.render());
    assert_eq!(report.delivered, records, "{}", report.render());
    assert_eq!(report.failed, 0, "{}", report.render());
}

#[tokio::test]
async fn two_workers_sharing_an_application_together_see_every_aggregated_record() {
    let _backend = Backend::from_env().unwrap();
    let api = kinesis().await.unwrap();
    let stream = unique_stream("load-share");
    create_stream(api.as_ref(), &stream, 2).await.unwrap();

    let produced = produce(
        Arc::clone(&api),
        produce_options(&stream, 2_000, Rate::Max),
        None,
        std::future::pending(),
    )
    .await
    .unwrap();
    assert_all_written(&produced, 2_000);
    assert!(produced.aggregated > 0 && produced.kinesis_records < 2_000, "{}", produced.render());

    let application = unique_name("load-share");
    let leases: Arc<dyn LeaseStore> =
        Arc::new(DynamoLeaseStore::new(&sdk_config().await.unwrap(), application.clone()));
    // Created once up front, so the two workers starting together do not race to create it.
    leases.create_table_if_missing().await.unwrap();
    let expectation = produced.expectation();
    let (a, b) = tokio::join!(
        worker(api.clone(), leases.clone(), &stream, &application, "w-a", &expectation, true),
        worker(api.clone(), leases.clone(), &stream, &application, "w-b", &expectation, true),
    );
    for share in [&a, &b] {
        assert!(share.verdict.ok, "{}", share.render());
        assert_eq!(share.verdict.runs[0].missing, None, "a share leaves missing to the merge");
    }

    // As `kinesis-load verify --reports a.json b.json` does: through the JSON files.
    let dir = std::env::temp_dir().join(unique_name("load-share-reports"));
    std::fs::create_dir_all(&dir).unwrap();
    let paths: Vec<PathBuf> = [&a, &b]
        .iter()
        .map(|r| {
            let path = dir.join(format!("{}.json", r.worker));
            report::write_json(&path, *r).unwrap();
            path
        })
        .collect();
    let reports: Vec<ConsumeReport> = paths.iter().map(|p| report::read_json(p).unwrap()).collect();
    std::fs::remove_dir_all(&dir).unwrap();
    let expectation = common_expectation(None, &reports).unwrap();
    assert_eq!(expectation.as_ref(), Some(&produced.expectation()));
    let mut merged = Tally::default();
    for r in &reports {
        merged.merge(&r.tally);
    }
    let verdict = judge(&merged, expectation.as_ref(), Scope::Whole);
    let run = &verdict.runs[0];
    assert!(verdict.ok, "{verdict:?}\n{}\n{}", a.render(), b.render());
    assert_eq!(run.missing, Some(0));
    assert_eq!(run.distinct, 2_000);
    assert_eq!(run.order_violations, 0);
    assert_eq!(verdict.foreign, 0);
    assert_eq!(run.deliveries, a.tally.deliveries() + b.tally.deliveries());
    cleanup(api.as_ref(), &stream, &application).await;
}

#[tokio::test]
async fn a_split_while_producing_loses_nothing_and_keeps_every_key_in_order() {
    let _backend = Backend::from_env().unwrap();
    let api = kinesis().await.unwrap();
    let stream = unique_stream("load-split");
    create_stream(api.as_ref(), &stream, 2).await.unwrap();

    // About four seconds of load; the split comes after one.
    let options = produce_options(&stream, 2_000, Rate::Records(500.0));
    let schedule =
        Schedule { first_after: Duration::from_secs(1), every: Duration::from_secs(1), times: 1 };
    let (produced, events) = tokio::join!(
        produce(Arc::clone(&api), options, None, std::future::pending()),
        reshard(
            Arc::clone(&api),
            &stream,
            &ReshardAction::Split,
            schedule,
            None,
            std::future::pending()
        ),
    );
    let (produced, events) = (produced.unwrap(), events.unwrap());
    assert_all_written(&produced, 2_000);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].open_shards, 3, "{events:?}");
    assert!(
        produced.per_shard.len() >= 3,
        "records went to the children too: {:?}",
        produced.per_shard
    );

    let application = unique_name("load-split");
    let leases: Arc<dyn LeaseStore> =
        Arc::new(DynamoLeaseStore::new(&sdk_config().await.unwrap(), application.clone()));
    let expectation = produced.expectation();
    let report =
        worker(api.clone(), leases, &stream, &application, "w-1", &expectation, false).await;
    assert!(report.verdict.ok, "{}", report.render());
    assert_eq!(report.stopped_by, kinesis_examples::load::StopReason::Complete);
    let run = &report.verdict.runs[0];
    assert_eq!((run.missing, run.distinct, run.order_violations), (Some(0), 2_000, 0));
    assert!(report.tally.per_shard.len() >= 3, "{:?}", report.tally.per_shard);
    cleanup(api.as_ref(), &stream, &application).await;
}
