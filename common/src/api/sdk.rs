//! The `aws-sdk-kinesis` adapter: [`SdkKinesis`] implements [`KinesisApi`] over the AWS SDK.
//!
//! This is the only module of the toolkit that names SDK types. It owns the translation from
//! SDK shapes to this crate's types and from SDK errors to [`ApiError`].
//!
//! Retries: the SDK retries a throttled call by itself, with a retry budget shared by the whole
//! client, but never the failed entries inside a successful PutRecords answer. The data plane
//! (PutRecords, GetRecords, GetShardIterator) therefore runs on a client with the SDK's retries
//! turned off and a per-attempt timeout, so the producer and consumer see every failure and
//! retry with their own jittered backoff. Control-plane calls (ListShards, stream and consumer
//! administration) keep the SDK's standard retries. SubscribeToShard runs without an operation
//! timeout, because its answer is an event stream that lives up to five minutes.
//!
//! TLS: every client refuses to send a request to a plain `http://` endpoint unless its host
//! is loopback (the local emulators) or the caller opted in with
//! [`SdkKinesis::allow_plain_http`]; see [`endpoint`]. The refusal happens
//! before the request is signed, and the call fails with a non-retryable [`ApiError`] that
//! names the endpoint.

use std::fmt::Debug;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::config::{
    Builder as ConfigBuilder, retry::RetryConfig, timeout::TimeoutConfig,
};
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::types as sdk;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::{Blob, DateTime};
use bytes::Bytes;

use super::endpoint::{self, PlainHttp};
use super::{
    ApiError, ApiErrorKind, ChildShard, ConsumerDescription, ConsumerStatus, GetRecordsOutput,
    KinesisApi, KinesisRecord, PutRecordsEntry, PutRecordsOutcome, Shard, ShardIterator,
    ShardIteratorPosition, StreamStatus, StreamSummary, SubscribeToShardEvent, Subscription,
};
use crate::{ConsumerName, HashKey, HashKeyRange, SequenceNumber, ShardId, StreamName};

/// `tracing_subscriber::EnvFilter` directives that keep the AWS SDK's crates at `DEBUG`:
/// append them to a filter whose default level is `TRACE`, for example
/// `EnvFilter::new(format!("trace,{SDK_LOG_CEILING}"))`. Appended to a quieter filter
/// (`warn`) they would turn the SDK's `DEBUG` output *on*, since a directive naming a target
/// overrides the default level; [`cap_sdk_logs`] builds the right directives for any filter.
///
/// At `TRACE` the SDK logs every HTTP response body it reads (`aws_smithy_runtime`: "read
/// HTTP response body", so GetRecords' record data, base64-encoded) and every event-stream
/// message it receives (`aws_smithy_http`: SubscribeToShard's records); `aws_sigv4` logs the
/// body it signs when the environment sets `LOG_SIGNABLE_BODY=true`. The `authorization`
/// header and the session token are printed redacted, and credentials print redacted at
/// every level. This toolkit's own crates log no record data, credential or signature at any
/// level; `tests/tests/log_redaction.rs` checks that, and that nothing leaks at all with this
/// ceiling. A directive naming a more specific target
/// (`aws_smithy_runtime::client::orchestrator=trace`) still overrides the ceiling, for
/// debugging against an emulator with test data. [`SdkKinesis::new`] warns once when the
/// SDK's `TRACE` output is enabled.
pub const SDK_LOG_CEILING: &str = "aws_smithy=debug,aws_sigv4=debug,aws_runtime=debug";

/// The SDK's crates whose output [`SDK_LOG_CEILING`] caps.
const SDK_LOG_TARGETS: [&str; 3] = ["aws_smithy", "aws_sigv4", "aws_runtime"];

/// `user_filter` (`tracing_subscriber::EnvFilter` directives, as in `RUST_LOG`) with the AWS
/// SDK's crates capped at the filter's default level or `DEBUG`, whichever is quieter.
///
/// `warn` becomes `warn,aws_smithy=warn,aws_sigv4=warn,aws_runtime=warn` (the SDK stays
/// quiet), `trace` becomes `trace,aws_smithy=debug,...` (no record data from the SDK, see
/// [`SDK_LOG_CEILING`]), and a filter without a default level leaves the SDK off. A directive
/// the user wrote for a more specific SDK target (`aws_smithy_runtime=trace`) still wins, for
/// debugging against an emulator with test data.
///
/// ```
/// use kinesis_common::api::sdk::cap_sdk_logs;
///
/// assert_eq!(cap_sdk_logs("info"), "info,aws_smithy=info,aws_sigv4=info,aws_runtime=info");
/// assert_eq!(
///     cap_sdk_logs("trace,kinesis_consumer=info"),
///     "trace,kinesis_consumer=info,aws_smithy=debug,aws_sigv4=debug,aws_runtime=debug"
/// );
/// ```
pub fn cap_sdk_logs(user_filter: &str) -> String {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let rank = |word: &str| LEVELS.iter().position(|level| level.eq_ignore_ascii_case(word));
    // The default level is the last directive that is a bare level; without one, EnvFilter
    // enables nothing that no directive names.
    let default = user_filter.split(',').map(str::trim).filter_map(rank).next_back().unwrap_or(0);
    let cap = LEVELS[default.min(4)];
    let mut filter = user_filter.trim().trim_end_matches(',').to_owned();
    for target in SDK_LOG_TARGETS {
        if !filter.is_empty() {
            filter.push(',');
        }
        filter.push_str(target);
        filter.push('=');
        filter.push_str(cap);
    }
    filter
}

/// Warns, once per process, when the installed subscriber enables the AWS SDK's `TRACE`
/// output, which holds record data (see [`SDK_LOG_CEILING`]). Called when an adapter is
/// built; public so the consumer's DynamoDB lease store does the same.
pub fn warn_if_sdk_traces_bodies() {
    static WARNED: std::sync::Once = std::sync::Once::new();
    let traces = tracing::enabled!(
        target: "aws_smithy_runtime::client::orchestrator::http",
        tracing::Level::TRACE
    ) || tracing::enabled!(
        target: "aws_smithy_http::event_stream::receiver",
        tracing::Level::TRACE
    );
    if traces {
        WARNED.call_once(|| {
            tracing::warn!(
                "TRACE logging is on for the AWS SDK, which then logs request and response \
                 bodies, record data included: cap it with the directives in \
                 kinesis_common::api::sdk::SDK_LOG_CEILING ({SDK_LOG_CEILING})"
            );
        });
    }
}

/// How long one data-plane attempt may take before it counts as a transient failure.
///
/// The KPL's default `RequestTimeout` is 6 s; a PutRecords of 5 MiB on a slow link needs a
/// few seconds, and GetRecords answers within a second or two on a healthy stream.
pub const DEFAULT_DATA_PLANE_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(6);

/// [`KinesisApi`] over `aws-sdk-kinesis`.
///
/// Build it from an [`aws_config::SdkConfig`] with [`SdkKinesis::new`], which derives the
/// three clients described in the module docs; or hand over clients you configured yourself
/// with [`SdkKinesis::from_clients`].
///
/// Either way, plain `http://` endpoints are accepted only on loopback hosts until
/// [`SdkKinesis::allow_plain_http`] is called.
#[derive(Debug, Clone)]
pub struct SdkKinesis {
    data: Client,
    control: Client,
    stream: Client,
    /// The same three clients without the plain-HTTP guard, for `allow_plain_http`.
    unguarded: Box<[Client; 3]>,
}

impl SdkKinesis {
    /// Clients derived from `config`, with the default data-plane attempt timeout.
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Self::with_attempt_timeout(config, DEFAULT_DATA_PLANE_ATTEMPT_TIMEOUT)
    }

    /// Like [`SdkKinesis::new`], with the data-plane per-attempt timeout given.
    pub fn with_attempt_timeout(config: &aws_config::SdkConfig, attempt_timeout: Duration) -> Self {
        let data = ConfigBuilder::from(config)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(attempt_timeout)
                    .build(),
            )
            .build();
        let control = ConfigBuilder::from(config).build();
        let stream = ConfigBuilder::from(config)
            .timeout_config(
                TimeoutConfig::builder().connect_timeout(Duration::from_secs(5)).build(),
            )
            .build();
        Self::from_clients(
            Client::from_conf(data),
            Client::from_conf(control),
            Client::from_conf(stream),
        )
    }

    /// Uses the given clients as they are, with the plain-HTTP guard added: `data` for
    /// PutRecords, GetRecords and GetShardIterator, `control` for everything else but
    /// SubscribeToShard, `stream` for SubscribeToShard.
    pub fn from_clients(data: Client, control: Client, stream: Client) -> Self {
        warn_if_sdk_traces_bodies();
        let guarded = |client: &Client| {
            Client::from_conf(
                client.config().to_builder().interceptor(PlainHttpGuard::new(OPT_IN)).build(),
            )
        };
        Self {
            data: guarded(&data),
            control: guarded(&control),
            stream: guarded(&stream),
            unguarded: Box::new([data, control, stream]),
        }
    }

    /// Allows plain `http://` endpoints on any host, not only loopback: for an emulator on
    /// another machine or a TLS-terminating proxy on a network you trust. Records, partition
    /// keys and signed requests (with the session token) then travel unencrypted.
    pub fn allow_plain_http(self) -> Self {
        let [data, control, stream] = (*self.unguarded).clone();
        Self { data, control, stream, unguarded: self.unguarded }
    }
}

/// How a caller of [`SdkKinesis`] opts in to plain HTTP, for the refusal message.
const OPT_IN: &str = "SdkKinesis::allow_plain_http()";

/// An SDK interceptor that refuses, before signing, a request whose URL is plain `http://` to
/// a host that is not loopback (see [`endpoint`]). The SDK reports the
/// refusal as a dispatch failure with the [`endpoint::PlainHttpRefused`] in its source chain
/// ([`endpoint::refusal_in`] finds it). Public so the consumer's DynamoDB lease store guards
/// its client the same way.
#[derive(Debug, Clone)]
pub struct PlainHttpGuard {
    opt_in: &'static str,
}

impl PlainHttpGuard {
    /// A guard whose refusals name `opt_in`, the way the adapter's caller allows plain HTTP.
    pub fn new(opt_in: &'static str) -> Self {
        Self { opt_in }
    }
}

impl Intercept for PlainHttpGuard {
    fn name(&self) -> &'static str {
        "PlainHttpGuard"
    }

    fn read_before_signing(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        endpoint::check_endpoint(context.request().uri(), PlainHttp::LoopbackOnly, self.opt_in)?;
        Ok(())
    }
}

/// Reads the HTTP status of a raw response where the response type carries one.
trait RawStatus {
    fn http_status(&self) -> Option<u16>;
}

impl RawStatus for aws_smithy_runtime_api::http::Response {
    fn http_status(&self) -> Option<u16> {
        Some(self.status().as_u16())
    }
}

impl RawStatus for aws_smithy_types::event_stream::RawMessage {
    fn http_status(&self) -> Option<u16> {
        None
    }
}

/// Classifies an SDK failure. `op` names the Kinesis operation for the message.
fn api_error<E, R>(op: &'static str, err: SdkError<E, R>) -> ApiError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: RawStatus + Debug + Send + Sync + 'static,
{
    if let Some(refused) = endpoint::refusal_in(&err) {
        // Nothing was signed or sent; trying again cannot help.
        return ApiError::new(ApiErrorKind::Other, format!("{op} was not sent"))
            .with_source(refused.clone());
    }
    let (kind, code, message) = match &err {
        SdkError::ServiceError(ctx) => {
            let code = err.code().map(str::to_owned);
            let message = err.message().unwrap_or_default().to_owned();
            let status = ctx.raw().http_status();
            let kind = match (&code, status) {
                (Some(code), status) => match ApiErrorKind::from_code(code) {
                    // An unknown code on a 5xx answer is still a server-side fault.
                    ApiErrorKind::Other if status.is_some_and(|s| s >= 500) => {
                        ApiErrorKind::Transient
                    }
                    kind => kind,
                },
                (None, Some(s)) if s >= 500 => ApiErrorKind::Transient,
                (None, Some(403)) => ApiErrorKind::AccessDenied,
                (None, Some(429)) => ApiErrorKind::Throttled,
                _ => ApiErrorKind::Other,
            };
            let message = match status {
                Some(s) if message.is_empty() => format!("{op} failed with HTTP {s}"),
                _ => message,
            };
            (kind, code, message)
        }
        SdkError::TimeoutError(_) => (ApiErrorKind::Transient, None, format!("{op} timed out")),
        SdkError::DispatchFailure(_) if is_credentials_error(&err) => (
            ApiErrorKind::AccessDenied,
            None,
            format!(
                "{op} could not be signed: no usable AWS credentials (set AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY, a profile, or a role, or give the SdkConfig a \
                 credentials provider)"
            ),
        ),
        SdkError::DispatchFailure(failure) => {
            let kind =
                if failure.is_user() { ApiErrorKind::Other } else { ApiErrorKind::Transient };
            (kind, None, format!("{op} could not be sent"))
        }
        SdkError::ResponseError(_) => {
            (ApiErrorKind::Transient, None, format!("{op} answer could not be read"))
        }
        SdkError::ConstructionFailure(_) => {
            (ApiErrorKind::InvalidArgument, None, format!("{op} request could not be built"))
        }
        _ => (ApiErrorKind::Other, None, format!("{op} failed")),
    };
    let mut error = ApiError::new(kind, message).with_source(err);
    if let Some(code) = code {
        error = error.with_code(code);
    }
    error
}

/// Whether an SDK failure (or any error in its source chain) comes from missing or unusable
/// credentials: no credentials provider at all (the SDK finds "no identity resolver" for
/// SigV4), or a provider that could not load any (`CredentialsError`). Retrying cannot fix
/// either, so callers classify them as access denied. Public so the DynamoDB lease store
/// classifies its SDK failures the same way.
pub fn is_credentials_error(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(current) = next {
        if current
            .downcast_ref::<aws_credential_types::provider::error::CredentialsError>()
            .is_some()
            || current.to_string().contains("no identity resolver")
        {
            return true;
        }
        next = current.source();
    }
    false
}

/// Classifies a failure of an open SubscribeToShard event stream. The SDK leaves the code out
/// of the metadata of an exception the stream carries (aws-sdk-kinesis 1.130: kinesis-mock's
/// `ResourceInUseException` for a second subscription arrives that way, with `code: None`), so
/// [`api_error`] alone would make every such exception `Other`, which is not retryable; the
/// code is taken from the exception's type instead.
fn stream_error(
    op: &'static str,
    err: SdkError<
        sdk::error::SubscribeToShardEventStreamError,
        aws_smithy_types::event_stream::RawMessage,
    >,
) -> ApiError {
    use sdk::error::SubscribeToShardEventStreamError as E;
    let code = match err.as_service_error() {
        Some(exception) if exception.code().is_none() => match exception {
            E::ResourceNotFoundException(_) => Some("ResourceNotFoundException"),
            E::ResourceInUseException(_) => Some("ResourceInUseException"),
            E::KmsDisabledException(_) => Some("KMSDisabledException"),
            E::KmsInvalidStateException(_) => Some("KMSInvalidStateException"),
            E::KmsAccessDeniedException(_) => Some("KMSAccessDeniedException"),
            E::KmsNotFoundException(_) => Some("KMSNotFoundException"),
            E::KmsOptInRequired(_) => Some("KMSOptInRequired"),
            E::KmsThrottlingException(_) => Some("KMSThrottlingException"),
            E::InternalFailureException(_) => Some("InternalFailureException"),
            _ => None,
        },
        _ => None,
    };
    match code {
        Some(code) => {
            let message =
                err.message().map_or_else(|| format!("{op} failed: {code}"), str::to_owned);
            ApiError::new(ApiErrorKind::from_code(code), message).with_code(code).with_source(err)
        }
        None => api_error(op, err),
    }
}

/// An answer from the service that does not fit the API's documented shape.
fn malformed(op: &'static str, what: impl std::fmt::Display) -> ApiError {
    ApiError::new(ApiErrorKind::Other, format!("{op} answer is malformed: {what}"))
}

fn shard_id(op: &'static str, id: &str) -> Result<ShardId, ApiError> {
    ShardId::new(id).map_err(|e| malformed(op, e))
}

fn sequence(op: &'static str, text: &str) -> Result<SequenceNumber, ApiError> {
    SequenceNumber::new(text).map_err(|e| malformed(op, e))
}

fn hash_range(
    op: &'static str,
    range: Option<&sdk::HashKeyRange>,
) -> Result<HashKeyRange, ApiError> {
    let range = range.ok_or_else(|| malformed(op, "a shard has no hash key range"))?;
    HashKeyRange::from_decimal(range.starting_hash_key(), range.ending_hash_key())
        .map_err(|e| malformed(op, e))
}

fn convert_shard(shard: &sdk::Shard) -> Result<Shard, ApiError> {
    const OP: &str = "ListShards";
    let range = shard
        .sequence_number_range()
        .ok_or_else(|| malformed(OP, "a shard has no sequence number range"))?;
    Ok(Shard {
        id: shard_id(OP, shard.shard_id())?,
        parent: shard.parent_shard_id().map(|p| shard_id(OP, p)).transpose()?,
        adjacent_parent: shard.adjacent_parent_shard_id().map(|p| shard_id(OP, p)).transpose()?,
        hash_range: hash_range(OP, shard.hash_key_range())?,
        starting_sequence: sequence(OP, range.starting_sequence_number())?,
        ending_sequence: range.ending_sequence_number().map(|s| sequence(OP, s)).transpose()?,
    })
}

fn convert_record(op: &'static str, record: sdk::Record) -> Result<KinesisRecord, ApiError> {
    let sequence_number = sequence(op, record.sequence_number())?;
    let partition_key = record.partition_key().unwrap_or_default().to_owned();
    let approximate_arrival =
        record.approximate_arrival_timestamp().and_then(|t| SystemTime::try_from(*t).ok());
    // Take the blob's buffer without copying it.
    let data = Bytes::from(record.data.into_inner());
    Ok(KinesisRecord { sequence_number, partition_key, data, approximate_arrival })
}

fn convert_child(op: &'static str, child: &sdk::ChildShard) -> Result<ChildShard, ApiError> {
    Ok(ChildShard {
        shard_id: shard_id(op, child.shard_id())?,
        parent_shards: child
            .parent_shards()
            .iter()
            .map(|p| shard_id(op, p))
            .collect::<Result<_, _>>()?,
        hash_range: hash_range(op, child.hash_key_range())?,
    })
}

fn convert_consumer_status(status: &sdk::ConsumerStatus) -> ConsumerStatus {
    match status {
        sdk::ConsumerStatus::Active => ConsumerStatus::Active,
        sdk::ConsumerStatus::Deleting => ConsumerStatus::Deleting,
        _ => ConsumerStatus::Creating,
    }
}

fn consumer(
    op: &'static str,
    name: &str,
    arn: &str,
    status: &sdk::ConsumerStatus,
) -> Result<ConsumerDescription, ApiError> {
    Ok(ConsumerDescription {
        name: ConsumerName::new(name).map_err(|e| malformed(op, e))?,
        arn: arn.to_owned(),
        status: convert_consumer_status(status),
    })
}

/// The SDK's iterator type and the sequence number or timestamp it needs.
fn iterator_parts(
    position: &ShardIteratorPosition,
) -> (sdk::ShardIteratorType, Option<String>, Option<DateTime>) {
    match position {
        ShardIteratorPosition::TrimHorizon => (sdk::ShardIteratorType::TrimHorizon, None, None),
        ShardIteratorPosition::Latest => (sdk::ShardIteratorType::Latest, None, None),
        ShardIteratorPosition::AtSequenceNumber(s) => {
            (sdk::ShardIteratorType::AtSequenceNumber, Some(s.as_str().to_owned()), None)
        }
        ShardIteratorPosition::AfterSequenceNumber(s) => {
            (sdk::ShardIteratorType::AfterSequenceNumber, Some(s.as_str().to_owned()), None)
        }
        ShardIteratorPosition::AtTimestamp(t) => {
            (sdk::ShardIteratorType::AtTimestamp, None, Some(DateTime::from(*t)))
        }
    }
}

fn to_i32(op: &'static str, what: &str, value: u32) -> Result<i32, ApiError> {
    i32::try_from(value).map_err(|_| {
        ApiError::new(ApiErrorKind::InvalidArgument, format!("{op}: {what} {value} is too large"))
    })
}

#[async_trait]
impl KinesisApi for SdkKinesis {
    async fn list_shards(&self, stream: &StreamName) -> Result<Vec<Shard>, ApiError> {
        let mut shards = Vec::new();
        let mut next_token: Option<String> = None;
        loop {
            // ListShards takes either the stream name or a next token, never both
            // (Kinesis API reference, ListShards).
            let request = match next_token.take() {
                Some(token) => self.control.list_shards().next_token(token),
                None => self.control.list_shards().stream_name(stream.as_str()),
            };
            let page = request.send().await.map_err(|e| api_error("ListShards", e))?;
            for shard in page.shards() {
                shards.push(convert_shard(shard)?);
            }
            match page.next_token() {
                Some(token) if !token.is_empty() => next_token = Some(token.to_owned()),
                _ => return Ok(shards),
            }
        }
    }

    async fn describe_stream_summary(
        &self,
        stream: &StreamName,
    ) -> Result<StreamSummary, ApiError> {
        const OP: &str = "DescribeStreamSummary";
        let out = self
            .control
            .describe_stream_summary()
            .stream_name(stream.as_str())
            .send()
            .await
            .map_err(|e| api_error(OP, e))?;
        let summary =
            out.stream_description_summary().ok_or_else(|| malformed(OP, "no summary"))?;
        let status = match summary.stream_status() {
            sdk::StreamStatus::Creating => StreamStatus::Creating,
            sdk::StreamStatus::Deleting => StreamStatus::Deleting,
            sdk::StreamStatus::Updating => StreamStatus::Updating,
            _ => StreamStatus::Active,
        };
        Ok(StreamSummary {
            name: StreamName::new(summary.stream_name()).map_err(|e| malformed(OP, e))?,
            arn: summary.stream_arn().to_owned(),
            status,
            open_shard_count: u32::try_from(summary.open_shard_count()).unwrap_or(0),
            retention: Duration::from_secs(
                u64::try_from(summary.retention_period_hours()).unwrap_or(0) * 3600,
            ),
        })
    }

    async fn put_records(
        &self,
        stream: &StreamName,
        entries: Vec<PutRecordsEntry>,
    ) -> Result<Vec<PutRecordsOutcome>, ApiError> {
        const OP: &str = "PutRecords";
        let count = entries.len();
        let mut records = Vec::with_capacity(count);
        for entry in entries {
            let built = sdk::PutRecordsRequestEntry::builder()
                // The SDK owns a Vec; one copy of the payload is unavoidable here.
                .data(Blob::new(entry.data.to_vec()))
                .partition_key(entry.partition_key.into_string())
                .set_explicit_hash_key(entry.explicit_hash_key.map(|k| k.to_string()))
                .build()
                .map_err(|e| {
                    ApiError::new(ApiErrorKind::InvalidArgument, format!("{OP} entry: {e}"))
                })?;
            records.push(built);
        }
        let out = self
            .data
            .put_records()
            .stream_name(stream.as_str())
            .set_records(Some(records))
            .send()
            .await
            .map_err(|e| api_error(OP, e))?;
        if out.records().len() != count {
            return Err(malformed(
                OP,
                format!("{} results for {count} entries", out.records().len()),
            ));
        }
        out.records()
            .iter()
            .map(|result| {
                match (result.error_code(), result.shard_id(), result.sequence_number()) {
                    (Some(code), _, _) => Ok(PutRecordsOutcome::Failed(ApiError::from_code(
                        code,
                        result.error_message().unwrap_or_default(),
                    ))),
                    (None, Some(shard), Some(seq)) => Ok(PutRecordsOutcome::Written {
                        shard_id: shard_id(OP, shard)?,
                        sequence_number: sequence(OP, seq)?,
                    }),
                    _ => Err(malformed(OP, "an entry has neither an error nor a sequence number")),
                }
            })
            .collect()
    }

    async fn get_shard_iterator(
        &self,
        stream: &StreamName,
        shard: &ShardId,
        position: ShardIteratorPosition,
    ) -> Result<ShardIterator, ApiError> {
        const OP: &str = "GetShardIterator";
        let (kind, seq, timestamp) = iterator_parts(&position);
        let out = self
            .data
            .get_shard_iterator()
            .stream_name(stream.as_str())
            .shard_id(shard.as_str())
            .shard_iterator_type(kind)
            .set_starting_sequence_number(seq)
            .set_timestamp(timestamp)
            .send()
            .await
            .map_err(|e| api_error(OP, e))?;
        out.shard_iterator()
            .map(|i| ShardIterator(i.to_owned()))
            .ok_or_else(|| malformed(OP, "no iterator"))
    }

    async fn get_records(
        &self,
        iterator: &ShardIterator,
        limit: Option<u32>,
    ) -> Result<GetRecordsOutput, ApiError> {
        const OP: &str = "GetRecords";
        let limit = limit.map(|l| to_i32(OP, "limit", l)).transpose()?;
        let out = self
            .data
            .get_records()
            .shard_iterator(&iterator.0)
            .set_limit(limit)
            .send()
            .await
            .map_err(|e| api_error(OP, e))?;
        let next_iterator = out.next_shard_iterator().map(|i| ShardIterator(i.to_owned()));
        let millis_behind_latest = out.millis_behind_latest().and_then(|m| u64::try_from(m).ok());
        let child_shards =
            out.child_shards().iter().map(|c| convert_child(OP, c)).collect::<Result<_, _>>()?;
        let records =
            out.records.into_iter().map(|r| convert_record(OP, r)).collect::<Result<_, _>>()?;
        Ok(GetRecordsOutput { records, next_iterator, millis_behind_latest, child_shards })
    }

    async fn create_stream(&self, stream: &StreamName, shard_count: u32) -> Result<(), ApiError> {
        const OP: &str = "CreateStream";
        self.control
            .create_stream()
            .stream_name(stream.as_str())
            .shard_count(to_i32(OP, "shard count", shard_count)?)
            .stream_mode_details(
                sdk::StreamModeDetails::builder()
                    .stream_mode(sdk::StreamMode::Provisioned)
                    .build()
                    .map_err(|e| ApiError::new(ApiErrorKind::InvalidArgument, e.to_string()))?,
            )
            .send()
            .await
            .map_err(|e| api_error(OP, e))?;
        Ok(())
    }

    async fn delete_stream(&self, stream: &StreamName) -> Result<(), ApiError> {
        self.control
            .delete_stream()
            .stream_name(stream.as_str())
            .enforce_consumer_deletion(true)
            .send()
            .await
            .map_err(|e| api_error("DeleteStream", e))?;
        Ok(())
    }

    async fn split_shard(
        &self,
        stream: &StreamName,
        shard: &ShardId,
        new_starting_hash_key: HashKey,
    ) -> Result<(), ApiError> {
        self.control
            .split_shard()
            .stream_name(stream.as_str())
            .shard_to_split(shard.as_str())
            .new_starting_hash_key(new_starting_hash_key.to_string())
            .send()
            .await
            .map_err(|e| api_error("SplitShard", e))?;
        Ok(())
    }

    async fn merge_shards(
        &self,
        stream: &StreamName,
        shard: &ShardId,
        adjacent: &ShardId,
    ) -> Result<(), ApiError> {
        self.control
            .merge_shards()
            .stream_name(stream.as_str())
            .shard_to_merge(shard.as_str())
            .adjacent_shard_to_merge(adjacent.as_str())
            .send()
            .await
            .map_err(|e| api_error("MergeShards", e))?;
        Ok(())
    }

    async fn update_shard_count(&self, stream: &StreamName, target: u32) -> Result<(), ApiError> {
        const OP: &str = "UpdateShardCount";
        self.control
            .update_shard_count()
            .stream_name(stream.as_str())
            .target_shard_count(to_i32(OP, "target shard count", target)?)
            .scaling_type(sdk::ScalingType::UniformScaling)
            .send()
            .await
            .map_err(|e| api_error(OP, e))?;
        Ok(())
    }

    async fn register_stream_consumer(
        &self,
        stream_arn: &str,
        name: &ConsumerName,
    ) -> Result<ConsumerDescription, ApiError> {
        const OP: &str = "RegisterStreamConsumer";
        let out = self
            .control
            .register_stream_consumer()
            .stream_arn(stream_arn)
            .consumer_name(name.as_str())
            .send()
            .await
            .map_err(|e| api_error(OP, e))?;
        let c = out.consumer().ok_or_else(|| malformed(OP, "no consumer"))?;
        consumer(OP, c.consumer_name(), c.consumer_arn(), c.consumer_status())
    }

    async fn describe_stream_consumer(
        &self,
        stream_arn: &str,
        name: &ConsumerName,
    ) -> Result<ConsumerDescription, ApiError> {
        const OP: &str = "DescribeStreamConsumer";
        let out = self
            .control
            .describe_stream_consumer()
            .stream_arn(stream_arn)
            .consumer_name(name.as_str())
            .send()
            .await
            .map_err(|e| api_error(OP, e))?;
        let c = out.consumer_description().ok_or_else(|| malformed(OP, "no consumer"))?;
        consumer(OP, c.consumer_name(), c.consumer_arn(), c.consumer_status())
    }

    async fn deregister_stream_consumer(
        &self,
        stream_arn: &str,
        name: &ConsumerName,
    ) -> Result<(), ApiError> {
        self.control
            .deregister_stream_consumer()
            .stream_arn(stream_arn)
            .consumer_name(name.as_str())
            .send()
            .await
            .map_err(|e| api_error("DeregisterStreamConsumer", e))?;
        Ok(())
    }

    async fn subscribe_to_shard(
        &self,
        consumer_arn: &str,
        shard: &ShardId,
        position: ShardIteratorPosition,
    ) -> Result<Box<dyn Subscription>, ApiError> {
        const OP: &str = "SubscribeToShard";
        let (kind, seq, timestamp) = iterator_parts(&position);
        let starting = sdk::StartingPosition::builder()
            .r#type(kind)
            .set_sequence_number(seq)
            .set_timestamp(timestamp)
            .build()
            .map_err(|e| ApiError::new(ApiErrorKind::InvalidArgument, format!("{OP}: {e}")))?;
        let out = self
            .stream
            .subscribe_to_shard()
            .consumer_arn(consumer_arn)
            .shard_id(shard.as_str())
            .starting_position(starting)
            .send()
            .await
            .map_err(|e| api_error(OP, e))?;
        Ok(Box::new(SdkSubscription { events: out.event_stream }))
    }
}

/// A SubscribeToShard event stream from the SDK.
struct SdkSubscription {
    events: aws_sdk_kinesis::primitives::event_stream::EventReceiver<
        sdk::SubscribeToShardEventStream,
        sdk::error::SubscribeToShardEventStreamError,
    >,
}

#[async_trait]
impl Subscription for SdkSubscription {
    async fn next_event(&mut self) -> Result<Option<SubscribeToShardEvent>, ApiError> {
        const OP: &str = "SubscribeToShard";
        loop {
            let Some(message) = self.events.recv().await.map_err(|e| stream_error(OP, e))? else {
                return Ok(None);
            };
            let sdk::SubscribeToShardEventStream::SubscribeToShardEvent(event) = message else {
                // A newer service may send event types this SDK does not know; skip them.
                continue;
            };
            let continuation = match event.continuation_sequence_number() {
                "" => None,
                text => Some(sequence(OP, text)?),
            };
            let millis_behind_latest = u64::try_from(event.millis_behind_latest()).ok();
            let child_shards = event
                .child_shards()
                .iter()
                .map(|c| convert_child(OP, c))
                .collect::<Result<_, _>>()?;
            let records = event
                .records
                .into_iter()
                .map(|r| convert_record(OP, r))
                .collect::<Result<_, _>>()?;
            return Ok(Some(SubscribeToShardEvent {
                records,
                continuation_sequence_number: continuation,
                millis_behind_latest,
                child_shards,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use aws_smithy_types::error::ErrorMetadata;
    use aws_smithy_types::event_stream::RawMessage;

    use super::*;

    #[test]
    fn an_exception_inside_the_event_stream_keeps_its_kind() {
        // As the SDK builds it from an exception message: no code in the metadata.
        let in_use = sdk::error::SubscribeToShardEventStreamError::ResourceInUseException(
            sdk::error::ResourceInUseException::builder()
                .message("Another active subscription exists")
                .meta(
                    ErrorMetadata::builder().message("Another active subscription exists").build(),
                )
                .build(),
        );
        let error = stream_error(
            "SubscribeToShard",
            SdkError::service_error(in_use, RawMessage::invalid(None)),
        );
        assert_eq!(error.kind(), ApiErrorKind::ResourceInUse);
        assert_eq!(error.code(), Some("ResourceInUseException"));
        assert!(error.is_retryable());
        assert_eq!(error.message(), "Another active subscription exists");

        let internal = sdk::error::SubscribeToShardEventStreamError::InternalFailureException(
            sdk::error::InternalFailureException::builder().build(),
        );
        let error = stream_error(
            "SubscribeToShard",
            SdkError::service_error(internal, RawMessage::invalid(None)),
        );
        assert_eq!(error.kind(), ApiErrorKind::Transient);
        assert_eq!(error.message(), "SubscribeToShard failed: InternalFailureException");
    }
}
