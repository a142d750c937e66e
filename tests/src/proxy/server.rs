//! The async shell of the proxy: accepting connections, serving HTTP/1.1 (and h2c), drawing
//! faults, forwarding upstream, and the AWS-shaped answers the proxy makes itself. The
//! Kinesis write path (PutRecords, PutRecord) is in `writes`.
//!
//! Owns the shared state behind the [`LimitsProxy`](super::LimitsProxy) handle. Invariants:
//! only PutRecords and PutRecord bodies (and the answers to them that must be merged) are
//! buffered, up to [`MAX_INSPECTED_BODY`]; every other body streams through in both
//! directions, so SubscribeToShard's event stream reaches the client as the upstream sends
//! it; std locks are held only for short synchronous sections, never across an `.await`; an
//! injected reset closes the connection with a TCP RST and no answer.

use std::collections::HashMap;
use std::convert::Infallible;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use kinesis_common::KinesisApi;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::bucket::ShardBudget;
use super::config::{Faults, Limits, ProxyConfig, ServerError};
use super::faults::{self, Disposition, Draw};
use super::kinesis::{self, KinesisOp};
use super::shard_map::ShardMaps;
use super::stats::{Counters, ProxyStats};
use super::writes;

/// The largest PutRecords or PutRecord body (or upstream answer to one) the proxy reads.
/// Well above a 5 MiB request in base64 (about 6.7 MiB plus JSON), so the request caps, not
/// this, decide what is too large.
pub const MAX_INSPECTED_BODY: usize = 32 * 1024 * 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of everything the proxy sends, in either direction.
pub(crate) type ProxyBody = BoxBody<Bytes, BoxError>;

/// Where the proxy forwards to: `http://host:port` and an optional path prefix.
#[derive(Debug, Clone)]
pub(crate) struct Upstream {
    /// `scheme://authority`.
    origin: String,
    /// A path prefix without the trailing slash (usually empty).
    prefix: String,
    /// The URL as given, for the ListShards client.
    pub(crate) url: String,
}

impl Upstream {
    /// Parses an `http://` URL; `Err` says what is wrong with it.
    pub(crate) fn parse(url: &str) -> Result<Self, &'static str> {
        let uri: Uri = url.parse().map_err(|_| "not a URL")?;
        if uri.scheme_str() != Some("http") {
            return Err("only http:// upstreams are supported");
        }
        let authority = uri.authority().ok_or("the URL has no host")?;
        if uri.query().is_some() {
            return Err("the URL has a query");
        }
        Ok(Self {
            origin: format!("http://{authority}"),
            prefix: uri.path().trim_end_matches('/').to_owned(),
            url: url.to_owned(),
        })
    }

    fn uri_for(&self, request: &Uri) -> Result<Uri, http::Error> {
        let path = request.path_and_query().map_or("/", |p| p.as_str());
        Ok(format!("{}{}{}", self.origin, self.prefix, path).parse()?)
    }
}

/// The settings a request copies when it starts.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) limits: Limits,
    pub(crate) faults: Faults,
}

/// State shared by the accept loop, every connection and the handle.
pub(crate) struct Shared {
    upstream: Upstream,
    client: Client<HttpConnector, ProxyBody>,
    settings: Mutex<Settings>,
    /// The fault generator; locked before `budgets` and `counters` when taken together.
    pub(super) rng: Mutex<StdRng>,
    /// Per (stream, shard) write budgets; locked before `counters`.
    pub(super) budgets: Mutex<HashMap<(String, String), ShardBudget>>,
    pub(super) shard_maps: ShardMaps,
    pub(super) counters: Mutex<Counters>,
    request_ids: AtomicU64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("upstream", &self.upstream).finish_non_exhaustive()
    }
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves consistent (if partial) counters;
    // keep serving rather than poisoning every later request.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// State for a proxy to `upstream`, reading shard maps through `api`.
    pub(crate) fn new(upstream: Upstream, config: ProxyConfig, api: Arc<dyn KinesisApi>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Self {
            upstream,
            client,
            settings: Mutex::new(Settings { limits: config.limits, faults: config.faults }),
            rng: Mutex::new(StdRng::seed_from_u64(config.seed)),
            budgets: Mutex::new(HashMap::new()),
            shard_maps: ShardMaps::new(api, config.shard_map_max_age),
            counters: Mutex::new(Counters::new(Instant::now())),
            request_ids: AtomicU64::new(0),
        }
    }

    pub(crate) fn settings(&self) -> Settings {
        lock(&self.settings).clone()
    }

    pub(crate) fn set_faults(&self, faults: Faults) {
        lock(&self.settings).faults = faults;
    }

    /// New limits; every shard budget starts again, full.
    pub(crate) fn set_limits(&self, limits: Limits) {
        lock(&self.settings).limits = limits;
        lock(&self.budgets).clear();
    }

    pub(crate) fn stats(&self) -> ProxyStats {
        lock(&self.counters).snapshot()
    }

    pub(crate) fn reset_stats(&self) {
        *lock(&self.counters) = Counters::new(Instant::now());
    }

    fn request_id(&self) -> String {
        let n = self.request_ids.fetch_add(1, Ordering::Relaxed);
        format!("00000000-0000-4000-8000-{n:012x}")
    }
}

/// Accepts connections until the task is aborted; aborting it also ends every connection.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, shared.clone()));
                }
                // Out of file descriptors or a connection that died while queued: pause so a
                // persistent error does not spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Closes the socket with an RST: `SO_LINGER` 0 on a duplicate of its descriptor, which is
/// then the last one open (the connection's own was closed by dropping the connection).
fn close_with_reset(duplicate: OwnedFd) {
    let _ = socket2::SockRef::from(&duplicate).set_linger(Some(Duration::ZERO));
    drop(duplicate);
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let duplicate = stream.as_fd().try_clone_to_owned().ok();
    let reset = Arc::new(Notify::new());
    let service = {
        let reset = reset.clone();
        service_fn(move |request| {
            let shared = shared.clone();
            let reset = reset.clone();
            async move { Ok::<_, Infallible>(handle(request, shared, reset).await) }
        })
    };
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    // `select!` drops the connection (and its descriptor) before running the chosen branch.
    tokio::select! {
        _ = connection => {}
        () = reset.notified() => {
            if let Some(duplicate) = duplicate {
                close_with_reset(duplicate);
            }
        }
    }
}

/// Asks the connection to reset and never answers.
async fn reset_connection(reset: Arc<Notify>) -> Response<ProxyBody> {
    reset.notify_one();
    std::future::pending().await
}

async fn handle(
    request: Request<Incoming>,
    shared: Arc<Shared>,
    reset: Arc<Notify>,
) -> Response<ProxyBody> {
    let shared = shared.as_ref();
    let target =
        request.headers().get("x-amz-target").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let operation = target.as_deref().map(kinesis::operation);
    lock(&shared.counters).request(operation.unwrap_or("-"));
    let Settings { limits, faults } = shared.settings();
    let faults = if faults.scope.includes(operation) { faults } else { Faults::none() };
    let draw =
        if faults.is_none() { Draw::CLEAN } else { faults::draw(&faults, &mut *lock(&shared.rng)) };

    if draw.disposition == Disposition::ResetBefore {
        lock(&shared.counters).reset_injected();
        return reset_connection(reset).await;
    }
    if !draw.delay.is_zero() {
        tokio::time::sleep(draw.delay).await;
    }
    if draw.disposition == Disposition::ErrorBefore {
        lock(&shared.counters).server_error_injected();
        return server_error(shared, faults.server_error);
    }

    let op = kinesis::kinesis_op(target.as_deref());
    let response = match op {
        Some(KinesisOp::PutRecords) => {
            writes::put_records(request, shared, limits, faults.clone()).await
        }
        Some(KinesisOp::PutRecord) => {
            writes::put_record(request, shared, limits, faults.clone()).await
        }
        _ => {
            let (parts, body) = request.into_parts();
            forward(shared, parts, boxed(body), None).await
        }
    };
    if op == Some(KinesisOp::ShardsChanged) && response.status().is_success() {
        shared.shard_maps.mark_all_stale();
    }

    let forwarded = response.extensions().get::<Local>().is_none();
    match draw.disposition {
        Disposition::ResetAfter if forwarded => {
            lock(&shared.counters).reset_injected();
            drop(response);
            reset_connection(reset).await
        }
        Disposition::ErrorAfter if forwarded && response.status().is_success() => {
            lock(&shared.counters).server_error_injected();
            server_error(shared, faults.server_error)
        }
        _ => response,
    }
}

/// Headers that describe one hop, not the message (RFC 9110, section 7.6.1), plus `Expect`:
/// the proxy's server answers `100-continue` itself when the body is first read, so the
/// upstream must not wait for a second one.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::EXPECT);
}

/// Sends a request upstream and passes the answer back, streaming its body. A rewritten body
/// comes with its new length.
pub(super) async fn forward(
    shared: &Shared,
    mut parts: http::request::Parts,
    body: ProxyBody,
    rewritten_length: Option<usize>,
) -> Response<ProxyBody> {
    let uri = match shared.upstream.uri_for(&parts.uri) {
        Ok(uri) => uri,
        Err(e) => return upstream_failure(shared, &format!("bad upstream URI: {e}")),
    };
    parts.uri = uri;
    // The upstream client speaks HTTP/1.1, whatever the client spoke to the proxy.
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    if let Some(length) = rewritten_length {
        parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    match shared.client.request(Request::from_parts(parts, body)).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, boxed(body))
        }
        Err(e) => upstream_failure(shared, &format!("limits proxy could not reach upstream: {e}")),
    }
}

pub(super) fn boxed(body: Incoming) -> ProxyBody {
    body.map_err(|e| Box::new(e) as BoxError).boxed()
}

pub(super) fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

/// Marks an answer the proxy made itself, without the upstream: faults "after forwarding"
/// do not apply to it.
#[derive(Debug, Clone, Copy)]
struct Local;

pub(super) fn json_response(
    shared: &Shared,
    status: StatusCode,
    body: Vec<u8>,
) -> Response<ProxyBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.extensions_mut().insert(Local);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kinesis::JSON_CONTENT_TYPE));
    if let Ok(id) = HeaderValue::from_str(&shared.request_id()) {
        headers.insert(HeaderName::from_static("x-amzn-requestid"), id);
    }
    response
}

/// An AWS JSON error: `__type` and `message` in the body, the code in `x-amzn-ErrorType`.
pub(super) fn error_response(
    shared: &Shared,
    status: StatusCode,
    code: &str,
    message: &str,
) -> Response<ProxyBody> {
    let mut response = json_response(shared, status, kinesis::error_body(code, message));
    if let Ok(code) = HeaderValue::from_str(code) {
        response.headers_mut().insert(HeaderName::from_static("x-amzn-errortype"), code);
    }
    response
}

fn server_error(shared: &Shared, error: ServerError) -> Response<ProxyBody> {
    // Status codes and messages of the AWS common errors (Kinesis API reference).
    match error {
        ServerError::InternalFailure => error_response(
            shared,
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalFailure",
            "The request processing has failed because of an unknown error, exception or failure.",
        ),
        ServerError::ServiceUnavailable => error_response(
            shared,
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "The request has failed due to a temporary failure of the server.",
        ),
    }
}

pub(super) fn upstream_failure(shared: &Shared, message: &str) -> Response<ProxyBody> {
    lock(&shared.counters).upstream_failure();
    error_response(shared, StatusCode::BAD_GATEWAY, "InternalFailure", message)
}

/// Reads a body the proxy must inspect, or the answer to send instead.
pub(super) async fn read_body(
    shared: &Shared,
    mut body: ProxyBody,
) -> Result<Bytes, Response<ProxyBody>> {
    // By hand rather than with `http_body_util::Limited`, whose boxed-error bound defeats
    // rustc's `Send` inference for the handler futures.
    let mut collected = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            error_response(
                shared,
                StatusCode::BAD_REQUEST,
                "SerializationException",
                &format!("could not read the body: {e}"),
            )
        })?;
        if let Ok(data) = frame.into_data() {
            if collected.len() + data.len() > MAX_INSPECTED_BODY {
                return Err(error_response(
                    shared,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "InvalidArgumentException",
                    &format!("body is larger than {MAX_INSPECTED_BODY} bytes"),
                ));
            }
            collected.extend_from_slice(&data);
        }
    }
    Ok(collected.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls_must_be_plain_http_with_a_host() {
        let upstream = Upstream::parse("http://127.0.0.1:4568").unwrap();
        let uri = upstream.uri_for(&"/".parse().unwrap()).unwrap();
        assert_eq!(uri.to_string(), "http://127.0.0.1:4568/");
        let prefixed = Upstream::parse("http://localhost:1/base/").unwrap();
        assert_eq!(
            prefixed.uri_for(&"/x?y=1".parse().unwrap()).unwrap().to_string(),
            "http://localhost:1/base/x?y=1"
        );
        assert!(Upstream::parse("https://127.0.0.1:4567").is_err());
        assert!(Upstream::parse("127.0.0.1:4567").is_err());
        assert!(Upstream::parse("not a url").is_err());
    }
}
