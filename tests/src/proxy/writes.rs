//! The Kinesis write path: PutRecords and PutRecord against the request caps and the
//! per-shard budgets, forwarding what is admitted and answering for what is not.
//!
//! Invariants: an entry is forwarded only if its shard's budget admitted it (or its shard is
//! unknown: no map, or a key outside every open shard, which also makes the map stale); every
//! decision of one request is taken at one instant under one hold of the locks, in the order
//! rng, budgets, counters; the client gets one result per entry it sent, in its order.

use std::time::Instant;

use http::header;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::bucket::ShardBudget;
use super::config::{Faults, Limits, ShardWriteLimit};
use super::faults;
use super::kinesis::{self, Entry, Slot, StreamRef};
use super::server::{
    ProxyBody, Shared, boxed, error_response, forward, full, json_response, lock, read_body,
    upstream_failure,
};
use super::shard_map::ShardMap;

/// Decides each entry: throttled by the fault, throttled by its shard's budget, or forwarded.
/// Every decision of one request uses the same `now`, so a request cannot outrun the bucket
/// by taking long to examine.
fn decide(
    shared: &Shared,
    stream: &StreamRef,
    entries: &[Entry],
    map: Option<&ShardMap>,
    limit: Option<&ShardWriteLimit>,
    faults: &Faults,
) -> Vec<Slot> {
    let now = Instant::now();
    let mut unmapped = false;
    let slots = {
        let mut rng = lock(&shared.rng);
        let mut budgets = lock(&shared.budgets);
        let mut counters = lock(&shared.counters);
        entries
            .iter()
            .map(|entry| {
                let shard = map.and_then(|m| m.shard_for(entry.hash));
                unmapped |= map.is_some() && shard.is_none();
                if faults::throttle_entry(faults, &mut *rng) {
                    counters.throttled_injected(1);
                    return Slot::Throttled { shard: shard.unwrap_or("unknown").to_owned() };
                }
                let Some(shard) = shard else { return Slot::Forward };
                if let Some(limit) = limit {
                    let budget = budgets
                        .entry((stream.name.clone(), shard.to_owned()))
                        .or_insert_with(|| ShardBudget::new(limit, now));
                    if !budget.try_admit(entry.size(), now) {
                        counters.shard_throttled(&stream.name, shard);
                        return Slot::Throttled { shard: shard.to_owned() };
                    }
                }
                counters.shard_accepted(&stream.name, shard, entry.size(), now);
                Slot::Forward
            })
            .collect()
    };
    if unmapped {
        // A key no open shard owns: the map predates a reshard.
        shared.shard_maps.mark_stale(&stream.name);
    }
    slots
}

fn count_forwarded(shared: &Shared, entries: &[Entry], slots: &[Slot]) {
    let (n, bytes) = entries
        .iter()
        .zip(slots)
        .filter(|(_, slot)| matches!(slot, Slot::Forward))
        .fold((0, 0), |(n, bytes), (entry, _)| (n + 1, bytes + entry.size()));
    lock(&shared.counters).forwarded(n, bytes);
}

pub(super) async fn put_records(
    request: Request<Incoming>,
    shared: &Shared,
    limits: Limits,
    faults: Faults,
) -> Response<ProxyBody> {
    let (parts, body) = request.into_parts();
    let bytes = match read_body(shared, boxed(body)).await {
        Ok(bytes) => bytes,
        Err(answer) => return answer,
    };
    let Some(request) = kinesis::parse_put_records(&bytes) else {
        // Not a body the proxy understands: the upstream answers it.
        let length = bytes.len();
        return forward(shared, parts, full(bytes), Some(length)).await;
    };
    if let Some(caps) = &limits.request
        && let Err(rejection) = kinesis::check_put_records(caps, &request.entries)
    {
        lock(&shared.counters).rejected();
        return error_response(
            shared,
            StatusCode::BAD_REQUEST,
            rejection.code(),
            &rejection.message(),
        );
    }
    let map = shared.shard_maps.get(&request.stream.name).await;
    let slots = decide(
        shared,
        &request.stream,
        &request.entries,
        map.as_deref(),
        limits.shard_write.as_ref(),
        &faults,
    );
    count_forwarded(shared, &request.entries, &slots);

    let forwarded = slots.iter().filter(|s| matches!(s, Slot::Forward)).count();
    if forwarded == 0 {
        return json_response(
            shared,
            StatusCode::OK,
            kinesis::all_throttled_answer(&request.stream, &slots),
        );
    }
    if forwarded == slots.len() {
        let length = bytes.len();
        return forward(shared, parts, full(bytes), Some(length)).await;
    }
    let body = request.forwarded_body(&slots);
    let length = body.len();
    let answer = forward(shared, parts, full(body), Some(length)).await;
    if answer.status() != StatusCode::OK {
        // The whole (smaller) request failed: that is the answer to the whole request.
        return answer;
    }
    let (mut answer_parts, answer_body) = answer.into_parts();
    let answer_bytes = match read_body(shared, answer_body).await {
        Ok(bytes) => bytes,
        Err(_) => return upstream_failure(shared, "could not read the upstream's answer"),
    };
    let Some(merged) = kinesis::merge_answer(&answer_bytes, &request.stream, &slots) else {
        return upstream_failure(
            shared,
            "the upstream's PutRecords answer does not fit the request",
        );
    };
    // The body changed: its length and any checksum of it no longer hold.
    answer_parts.headers.remove(header::CONTENT_LENGTH);
    answer_parts.headers.remove("x-amz-crc32");
    Response::from_parts(answer_parts, full(merged))
}

pub(super) async fn put_record(
    request: Request<Incoming>,
    shared: &Shared,
    limits: Limits,
    faults: Faults,
) -> Response<ProxyBody> {
    let (parts, body) = request.into_parts();
    let bytes = match read_body(shared, boxed(body)).await {
        Ok(bytes) => bytes,
        Err(answer) => return answer,
    };
    let length = bytes.len();
    let Some(request) = kinesis::parse_put_record(&bytes) else {
        return forward(shared, parts, full(bytes), Some(length)).await;
    };
    if let Some(caps) = &limits.request
        && let Err(rejection) = kinesis::check_put_record(caps, &request.entry)
    {
        lock(&shared.counters).rejected();
        return error_response(
            shared,
            StatusCode::BAD_REQUEST,
            rejection.code(),
            &rejection.message(),
        );
    }
    let map = shared.shard_maps.get(&request.stream.name).await;
    let entries = [request.entry];
    let slots = decide(
        shared,
        &request.stream,
        &entries,
        map.as_deref(),
        limits.shard_write.as_ref(),
        &faults,
    );
    count_forwarded(shared, &entries, &slots);
    match &slots[0] {
        Slot::Forward => forward(shared, parts, full(bytes), Some(length)).await,
        // PutRecord over the limit fails as a whole (Kinesis API reference, PutRecord).
        Slot::Throttled { shard } => error_response(
            shared,
            StatusCode::BAD_REQUEST,
            kinesis::THROTTLED,
            &kinesis::throttle_message(&request.stream, shard),
        ),
    }
}
