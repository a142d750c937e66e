//! No credential, signature or record payload in the logs, at any level.
//!
//! A subscriber records every span and event of every crate at `TRACE` (this toolkit's, the
//! AWS SDK's `aws_smithy_*`, `aws_sigv4`, `aws_runtime`, `aws_config`, hyper's and h2's)
//! while two producers (KPL aggregation on and off) write records and a consumer reads them
//! back through `SdkKinesis` and `DynamoLeaseStore` on the substrate, with a distinctive
//! secret access key and session token and distinctive payloads. Then:
//!
//! - nothing this toolkit logs, at any level, holds the secret key, the session token, a
//!   SigV4 signature or a payload (raw, base64 in any alignment, or as a byte list);
//! - nothing at all does once the AWS SDK's crates are capped at `DEBUG` by
//!   [`SDK_LOG_CEILING`], the filter the SDK's `TRACE` output needs: there the SDK prints
//!   whole request and response bodies (the payloads).
//!
//! Against `KTK_BACKEND=external` the real credentials of the default chain are looked for
//! instead of made-up ones.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use base64::Engine;
use kinesis_common::api::sdk::SDK_LOG_CEILING;
use kinesis_common::{ConsumerName, KinesisApi, SdkKinesis, ShardId, StreamName};
use kinesis_consumer::testing::{CheckpointPolicy, Recorder, RecordingProcessor};
use kinesis_consumer::{
    Consumer, ConsumerConfig, DynamoLeaseStore, InitialPosition, PollingSettings, Retrieval,
    WorkerId,
};
use kinesis_integration_tests::{Backend, create_stream, sdk_config, unique_name, unique_stream};
use kinesis_producer::{Aggregation, Producer, ProducerConfig, Record};
use tokio::time::Instant;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record as SpanRecord};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{EnvFilter, Registry};

/// Made up for this test: a secret access key and a session token nobody else would log.
const SECRET_ACCESS_KEY: &str = "LogRedactionSecretKey0123456789abcdefQRST";
const SESSION_TOKEN: &str = "LogRedactionSessionToken/9f8e7d6c5b4a39281706+ZYXWVUTSRQ==";

/// What was logged: one entry per event and per span (its fields at creation and each later
/// `record`), with the level and target it was logged under.
#[derive(Debug, Clone)]
struct Entry {
    level: Level,
    target: String,
    text: String,
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Entry>>>);

/// Renders every field with `Debug`, as `tracing_subscriber::fmt` does for non-string values.
struct Render<'a>(&'a mut String);

impl Visit for Render<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        let _ = write!(self.0, " {}={value:?}", field.name());
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        use std::fmt::Write as _;
        let _ = write!(self.0, " {}={value}", field.name());
    }
}

impl Capture {
    fn push(&self, level: Level, target: &str, text: String) {
        self.0.lock().unwrap().push(Entry { level, target: target.to_owned(), text });
    }

    fn entries(&self) -> Vec<Entry> {
        self.0.lock().unwrap().clone()
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut text = String::new();
        event.record(&mut Render(&mut text));
        self.push(*event.metadata().level(), event.metadata().target(), text);
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, _: &Id, _: Context<'_, S>) {
        let mut text = format!("span {}", attrs.metadata().name());
        attrs.record(&mut Render(&mut text));
        self.push(*attrs.metadata().level(), attrs.metadata().target(), text);
    }

    fn on_record(&self, id: &Id, values: &SpanRecord<'_>, ctx: Context<'_, S>) {
        let mut text = String::from("span record");
        values.record(&mut Render(&mut text));
        let (level, target) = ctx
            .metadata(id)
            .map_or((Level::TRACE, "unknown"), |meta| (*meta.level(), meta.target()));
        self.push(level, target, text);
    }
}

/// The capture, installed once for the whole test binary as the global subscriber with no
/// filter: every callsite of every crate is enabled at `TRACE`.
fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture = Capture::default();
        tracing::subscriber::set_global_default(Registry::default().with(capture.clone()))
            .expect("no other global subscriber in this test binary");
        capture
    })
}

/// Whether `EnvFilter::new(SDK_LOG_CEILING)` would let an entry through, with `TRACE` for
/// everything else (what an application that turns TRACE on and applies the ceiling logs).
fn passes_ceiling(entry: &Entry) -> bool {
    let ceilings = SDK_LOG_CEILING.split(',').map(|directive| {
        let (target, level) = directive.split_once('=').expect("target=level");
        (target, level.parse::<Level>().expect("a level"))
    });
    let mut best: Option<(usize, Level)> = None;
    for (target, level) in ceilings {
        if entry.target.starts_with(target) && best.is_none_or(|(len, _)| target.len() > len) {
            best = Some((target.len(), level));
        }
    }
    best.is_none_or(|(_, ceiling)| entry.level <= ceiling)
}

/// What must never be logged, each with a name for the failure message.
struct Needles(Vec<(String, String)>);

impl Needles {
    fn new(secret: &str, token: Option<&str>, payloads: &[String]) -> Self {
        let mut needles = vec![
            ("secret access key".to_owned(), secret.to_owned()),
            ("SigV4 signature".to_owned(), "Signature=".to_owned()),
        ];
        if let Some(token) = token {
            needles.push(("session token".to_owned(), token.to_owned()));
        }
        for payload in payloads {
            let bytes = payload.as_bytes();
            needles.push((format!("payload {payload:?}"), payload.clone()));
            // Base64 of a payload inside a larger buffer (a KPL aggregate, a JSON body):
            // whatever its offset, the encoding of its bytes from the first 3-byte boundary
            // on appears verbatim.
            for skip in 0..3 {
                let whole = (bytes.len() - skip) / 3 * 3;
                let encoded =
                    base64::engine::general_purpose::STANDARD.encode(&bytes[skip..skip + whole]);
                needles.push((format!("payload {payload:?} in base64"), encoded));
            }
            // A byte slice printed with `Debug`: `[108, 111, 103, ...]`.
            let list: Vec<String> = bytes.iter().map(u8::to_string).collect();
            needles.push((format!("payload {payload:?} as a byte list"), list.join(", ")));
        }
        Self(needles)
    }

    /// Every entry that holds a needle, with the needle's name.
    fn find<'a>(&self, entries: impl Iterator<Item = &'a Entry>) -> Vec<String> {
        let mut found = Vec::new();
        for entry in entries {
            for (name, needle) in &self.0 {
                if entry.text.contains(needle.as_str()) {
                    let shown: String = entry.text.chars().take(300).collect();
                    found.push(format!("{name} at {} {}: {shown}", entry.level, entry.target));
                }
            }
        }
        found
    }
}

fn consumer_config(retrieval: Retrieval) -> ConsumerConfig {
    let mut config = ConsumerConfig::default();
    config.initial_position = InitialPosition::TrimHorizon;
    config.taker_interval = Duration::from_secs(2);
    config.cleanup_interval = Duration::from_secs(600);
    config.retrieval = retrieval;
    config
}

/// Reads every record of the stream with a consumer of its own (lease table included) and
/// returns their data, sorted.
async fn read_back(
    config: &aws_config::SdkConfig,
    kinesis: Arc<dyn KinesisApi>,
    stream: &StreamName,
    retrieval: Retrieval,
    count: usize,
) -> Vec<String> {
    let table = unique_name("log-redaction-leases");
    let store = Arc::new(DynamoLeaseStore::new(config, table.clone()));
    let recorder = Recorder::new();
    let processors = recorder.clone();
    let consumer = Consumer::builder(kinesis, store)
        .stream(stream.clone())
        .application_name(table)
        .worker_id(WorkerId::new("log-redaction"))
        .config(consumer_config(retrieval))
        .start(move |_: &ShardId| {
            RecordingProcessor::new(processors.clone(), CheckpointPolicy::EveryBatch)
        })
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while recorder.record_count() < count {
        assert!(Instant::now() < deadline, "records read: {} of {count}", recorder.record_count());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    consumer.shutdown().await.unwrap();
    let mut read: Vec<String> = recorder
        .records()
        .into_iter()
        .map(|(_, record)| String::from_utf8(record.data.to_vec()).unwrap())
        .collect();
    read.sort();
    read
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_signatures_and_payloads_are_not_logged_at_any_level() {
    let capture = capture();
    let base = sdk_config().await.unwrap();
    let (config, secret, token) = if Backend::from_env().unwrap() == Backend::External {
        let provider = base.credentials_provider().expect("the default credentials chain");
        let credentials = provider.provide_credentials().await.expect("AWS credentials");
        let secret = credentials.secret_access_key().to_owned();
        let token = credentials.session_token().map(str::to_owned);
        (base, secret, token)
    } else {
        let credentials = Credentials::new(
            "AKIALOGREDACTIONTEST",
            SECRET_ACCESS_KEY,
            Some(SESSION_TOKEN.to_owned()),
            None,
            "log-redaction-test",
        );
        let config = base
            .into_builder()
            .credentials_provider(SharedCredentialsProvider::new(credentials))
            .build();
        (config, SECRET_ACCESS_KEY.to_owned(), Some(SESSION_TOKEN.to_owned()))
    };

    let kinesis: Arc<dyn KinesisApi> = Arc::new(SdkKinesis::new(&config));
    let stream = unique_stream("log-redaction");
    create_stream(kinesis.as_ref(), &stream, 1).await.unwrap();

    // Records written by two producers: KPL aggregates, and one Kinesis record per record.
    let mut payloads = Vec::new();
    for (name, aggregation) in [("aggregated", Aggregation::PerShard), ("plain", Aggregation::Off)]
    {
        let producer_config = ProducerConfig { aggregation, ..ProducerConfig::default() };
        let producer = Producer::builder(kinesis.clone())
            .stream(stream.clone())
            .config(producer_config)
            .start()
            .await
            .unwrap();
        let mut receipts = Vec::new();
        for i in 0..10 {
            let payload = format!("log-redaction-payload-{name}-{i:02}-q7Zx4Vw9Lm2Rt8Kp");
            let record = Record::new(format!("key-{}", i % 3), payload.clone().into_bytes());
            receipts.push(producer.send(record).await.unwrap());
            payloads.push(payload);
        }
        for receipt in receipts {
            receipt.await.unwrap();
        }
        producer.shutdown().await;
    }

    // Consumers read them back, polling (GetRecords) and with enhanced fan-out
    // (SubscribeToShard); their lease tables go through the DynamoDB adapter.
    let mut expected = payloads.clone();
    expected.sort();
    let mut polling = PollingSettings::default();
    polling.idle_time_between_reads = Duration::from_millis(200);
    let fan_out = ConsumerName::new(unique_name("log-redaction")).unwrap();
    for retrieval in [Retrieval::Polling(polling), Retrieval::FanOut { consumer_name: fan_out }] {
        let read = read_back(&config, kinesis.clone(), &stream, retrieval, payloads.len()).await;
        assert_eq!(read, expected, "every record read back");
    }
    kinesis.delete_stream(&stream).await.unwrap();

    // A positive control: the search finds what it looks for.
    let needles = Needles::new(&secret, token.as_deref(), &payloads);
    tracing::trace!(target: "log_redaction_probe", data = ?payloads[0].as_bytes());
    let entries = capture.entries();
    let probe: Vec<&Entry> = entries.iter().filter(|e| e.target == "log_redaction_probe").collect();
    assert_eq!(needles.find(probe.into_iter()).len(), 1, "the probe's byte list is found");
    let entries: Vec<Entry> =
        entries.into_iter().filter(|e| e.target != "log_redaction_probe").collect();

    // The capture saw the SDK's and the toolkit's logs at every level, down to TRACE.
    let seen = |prefix: &str, level: Level| {
        entries.iter().any(|e| e.target.starts_with(prefix) && e.level == level)
    };
    assert!(seen("aws_smithy_runtime", Level::TRACE), "SDK TRACE events captured");
    assert!(seen("aws_sigv4", Level::TRACE), "signing events captured");
    assert!(entries.iter().any(|e| e.target.starts_with("kinesis_")), "toolkit events captured");
    // The adapters noticed the SDK's TRACE output and said how to cap it.
    let warned = entries
        .iter()
        .filter(|e| e.level == Level::WARN && e.text.contains("SDK_LOG_CEILING"))
        .count();
    assert_eq!(warned, 1, "one warning about the SDK's TRACE output");

    let ours = needles.find(entries.iter().filter(|e| !e.target.starts_with("aws_")));
    assert!(ours.is_empty(), "logged outside the AWS SDK:\n{}", ours.join("\n"));
    let with_ceiling = needles.find(entries.iter().filter(|e| passes_ceiling(e)));
    assert!(
        with_ceiling.is_empty(),
        "logged although the SDK is capped by SDK_LOG_CEILING ({SDK_LOG_CEILING}):\n{}",
        with_ceiling.join("\n")
    );
    // What the ceiling holds back (for the record; the SDK's TRACE output is its business).
    let held_back = needles.find(entries.iter().filter(|e| !passes_ceiling(e)));
    let mut targets: Vec<&str> = held_back
        .iter()
        .filter_map(|line| line.split(" at TRACE ").nth(1))
        .filter_map(|rest| rest.split(':').next())
        .collect();
    targets.sort_unstable();
    targets.dedup();
    eprintln!(
        "SDK TRACE output holding secrets or payloads, held back by the ceiling: {targets:?}"
    );
}

#[test]
fn the_ceiling_parses_as_an_env_filter_and_caps_the_sdk_at_debug() {
    EnvFilter::try_new(SDK_LOG_CEILING).expect("valid EnvFilter directives");
    let entry =
        |level, target: &str| Entry { level, target: target.to_owned(), text: String::new() };
    assert!(!passes_ceiling(&entry(Level::TRACE, "aws_smithy_runtime::client::orchestrator")));
    assert!(!passes_ceiling(&entry(Level::TRACE, "aws_smithy_http::event_stream::receiver")));
    assert!(!passes_ceiling(&entry(Level::TRACE, "aws_sigv4::http_request::sign")));
    assert!(passes_ceiling(&entry(Level::DEBUG, "aws_smithy_runtime::client::orchestrator")));
    assert!(passes_ceiling(&entry(Level::TRACE, "kinesis_consumer::scheduler")));
    assert!(passes_ceiling(&entry(Level::TRACE, "h2::codec")));
}

/// Whether `filter` enables events of the SDK's orchestrator and signer at `level`, as a
/// subscriber built from it decides.
fn sdk_enabled(filter: &str, level: Level) -> (bool, bool) {
    let subscriber = Registry::default().with(EnvFilter::try_new(filter).expect("valid filter"));
    tracing::subscriber::with_default(subscriber, || {
        let smithy = match level {
            Level::TRACE => tracing::enabled!(
                target: "aws_smithy_runtime::client::orchestrator::http",
                Level::TRACE
            ),
            Level::DEBUG => tracing::enabled!(
                target: "aws_smithy_runtime::client::orchestrator::http",
                Level::DEBUG
            ),
            Level::INFO => tracing::enabled!(
                target: "aws_smithy_runtime::client::orchestrator::http",
                Level::INFO
            ),
            _ => tracing::enabled!(
                target: "aws_smithy_runtime::client::orchestrator::http",
                Level::WARN
            ),
        };
        let sigv4 = match level {
            Level::TRACE => {
                tracing::enabled!(target: "aws_sigv4::http_request::sign", Level::TRACE)
            }
            Level::DEBUG => {
                tracing::enabled!(target: "aws_sigv4::http_request::sign", Level::DEBUG)
            }
            Level::INFO => tracing::enabled!(target: "aws_sigv4::http_request::sign", Level::INFO),
            _ => tracing::enabled!(target: "aws_sigv4::http_request::sign", Level::WARN),
        };
        (smithy, sigv4)
    })
}

#[test]
fn cap_sdk_logs_never_raises_the_sdk_above_the_default_level_and_caps_it_at_debug() {
    use kinesis_common::api::sdk::cap_sdk_logs;
    // A quiet filter keeps the SDK quiet (appending SDK_LOG_CEILING alone would enable DEBUG).
    assert_eq!(sdk_enabled(&cap_sdk_logs("warn"), Level::WARN), (true, true));
    assert_eq!(sdk_enabled(&cap_sdk_logs("warn"), Level::INFO), (false, false));
    assert_eq!(
        sdk_enabled(&cap_sdk_logs("warn,kinesis_consumer=info"), Level::INFO),
        (false, false)
    );
    assert_eq!(sdk_enabled(&format!("warn,{SDK_LOG_CEILING}"), Level::DEBUG), (true, true));
    // A verbose filter keeps the SDK at DEBUG: no record data.
    assert_eq!(sdk_enabled(&cap_sdk_logs("trace"), Level::DEBUG), (true, true));
    assert_eq!(sdk_enabled(&cap_sdk_logs("TRACE,hyper=info"), Level::TRACE), (false, false));
    assert_eq!(sdk_enabled(&cap_sdk_logs("info"), Level::DEBUG), (false, false));
    assert_eq!(sdk_enabled(&cap_sdk_logs("info"), Level::INFO), (true, true));
    // No default level: EnvFilter enables nothing unnamed, and the SDK stays off.
    assert_eq!(sdk_enabled(&cap_sdk_logs("kinesis_producer=trace"), Level::WARN), (false, false));
    assert_eq!(sdk_enabled(&cap_sdk_logs(""), Level::WARN), (false, false));
    // A more specific SDK target the user names still wins, for debugging on test data.
    assert_eq!(
        sdk_enabled(&cap_sdk_logs("warn,aws_smithy_runtime=trace"), Level::TRACE),
        (true, false)
    );
}
