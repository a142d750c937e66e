//! The part of the Kinesis JSON protocol (`awsJson1_1`) the proxy reads and writes:
//! recognising operations by `X-Amz-Target`, reading PutRecords and PutRecord bodies, the
//! request caps, merging a partial PutRecords answer, and AWS-shaped error bodies.
//!
//! Pure functions over bytes. Invariants: a body the proxy cannot read is never rejected here
//! (the caller forwards it unchanged and the upstream judges it); a merged PutRecords answer
//! has one result per original entry, in the original order, and a `FailedRecordCount` equal
//! to the number of results that carry an `ErrorCode`.

use kinesis_common::HashKey;
use serde_json::{Map, Value, json};

use super::config::RequestCaps;

/// The `X-Amz-Target` prefix of the Kinesis API version every SDK speaks.
const TARGET_PREFIX: &str = "Kinesis_20131202.";

/// The account the emulators (and the messages here) use when a request names none.
const DEFAULT_ACCOUNT: &str = "000000000000";

/// The content type of `awsJson1_1` requests and answers.
pub(crate) const JSON_CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// The error code of per-shard throttling (Kinesis API reference, PutRecords and PutRecord).
pub(crate) const THROTTLED: &str = "ProvisionedThroughputExceededException";

/// The operation of an `X-Amz-Target` value: the part after the last dot
/// (`Kinesis_20131202.PutRecords` → `PutRecords`, `DynamoDB_20120810.PutItem` → `PutItem`).
pub(crate) fn operation(target: &str) -> &str {
    target.rsplit_once('.').map_or(target, |(_, op)| op)
}

/// The Kinesis operations the proxy treats specially.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KinesisOp {
    /// PutRecords: limits per entry.
    PutRecords,
    /// PutRecord: limits for the whole request.
    PutRecord,
    /// An operation after which shard maps may be out of date.
    ShardsChanged,
    /// Anything else: forwarded as it is.
    Other,
}

/// The Kinesis operation of a request, or `None` for another protocol.
pub(crate) fn kinesis_op(target: Option<&str>) -> Option<KinesisOp> {
    let op = target?.strip_prefix(TARGET_PREFIX)?;
    Some(match op {
        "PutRecords" => KinesisOp::PutRecords,
        "PutRecord" => KinesisOp::PutRecord,
        "SplitShard" | "MergeShards" | "UpdateShardCount" | "CreateStream" | "DeleteStream" => {
            KinesisOp::ShardsChanged
        }
        _ => KinesisOp::Other,
    })
}

/// The stream a request writes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamRef {
    /// The stream's name (from `StreamName`, or the last part of `StreamARN`).
    pub(crate) name: String,
    /// The account from `StreamARN`, else the emulators' default.
    pub(crate) account: String,
}

fn stream_of(body: &Map<String, Value>) -> Option<StreamRef> {
    if let Some(name) = body.get("StreamName").and_then(Value::as_str) {
        return Some(StreamRef { name: name.to_owned(), account: DEFAULT_ACCOUNT.to_owned() });
    }
    // arn:aws:kinesis:<region>:<account>:stream/<name>
    let arn = body.get("StreamARN")?.as_str()?;
    let mut parts = arn.splitn(6, ':');
    let account = parts.nth(4)?;
    let name = parts.next()?.strip_prefix("stream/")?;
    Some(StreamRef { name: name.to_owned(), account: account.to_owned() })
}

/// One record of a PutRecords or PutRecord request, as the limits see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Where the record goes: its explicit hash key, else the MD5 of its partition key.
    pub(crate) hash: HashKey,
    /// Bytes of data after base64 decoding.
    pub(crate) data_bytes: u64,
    /// UTF-8 bytes of the partition key.
    pub(crate) key_bytes: u64,
}

impl Entry {
    /// The bytes the record counts for the shard and request limits: data plus partition key.
    pub(crate) fn size(&self) -> u64 {
        self.data_bytes + self.key_bytes
    }
}

/// Decoded length of base64 text, without decoding it.
fn base64_decoded_len(text: &str) -> u64 {
    let padding = text.bytes().rev().take_while(|&b| b == b'=').count();
    ((text.len() - padding) as u64 * 3) / 4
}

fn entry_of(record: &Map<String, Value>) -> Option<Entry> {
    let data = record.get("Data")?.as_str()?;
    let key = record.get("PartitionKey")?.as_str()?;
    let hash = match record.get("ExplicitHashKey").and_then(Value::as_str) {
        Some(explicit) => HashKey::from_decimal(explicit).ok()?,
        None => HashKey::from_partition_key_bytes(key.as_bytes()),
    };
    Some(Entry { hash, data_bytes: base64_decoded_len(data), key_bytes: key.len() as u64 })
}

/// A PutRecords request the proxy could read.
#[derive(Debug, Clone)]
pub(crate) struct PutRecordsRequest {
    body: Map<String, Value>,
    records: Vec<Value>,
    /// The target stream.
    pub(crate) stream: StreamRef,
    /// The entries, in request order.
    pub(crate) entries: Vec<Entry>,
}

/// Reads a PutRecords body; `None` if it is not one the proxy understands.
pub(crate) fn parse_put_records(bytes: &[u8]) -> Option<PutRecordsRequest> {
    let Value::Object(mut body) = serde_json::from_slice(bytes).ok()? else {
        return None;
    };
    let stream = stream_of(&body)?;
    let Value::Array(records) = body.remove("Records")? else {
        return None;
    };
    let entries =
        records.iter().map(|r| r.as_object().and_then(entry_of)).collect::<Option<Vec<_>>>()?;
    Some(PutRecordsRequest { body, records, stream, entries })
}

impl PutRecordsRequest {
    /// The request body holding only the entries whose slot is [`Slot::Forward`].
    pub(crate) fn forwarded_body(&self, slots: &[Slot]) -> Vec<u8> {
        let records: Vec<Value> = self
            .records
            .iter()
            .zip(slots)
            .filter(|(_, slot)| matches!(slot, Slot::Forward))
            .map(|(record, _)| record.clone())
            .collect();
        let mut body = self.body.clone();
        body.insert("Records".to_owned(), Value::Array(records));
        serde_json::to_vec(&Value::Object(body)).expect("a JSON map always serialises")
    }
}

/// A PutRecord request the proxy could read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PutRecordRequest {
    /// The target stream.
    pub(crate) stream: StreamRef,
    /// The record.
    pub(crate) entry: Entry,
}

/// Reads a PutRecord body; `None` if it is not one the proxy understands.
pub(crate) fn parse_put_record(bytes: &[u8]) -> Option<PutRecordRequest> {
    let Value::Object(body) = serde_json::from_slice(bytes).ok()? else {
        return None;
    };
    Some(PutRecordRequest { stream: stream_of(&body)?, entry: entry_of(&body)? })
}

/// Why a whole request is refused by the caps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// More entries than [`RequestCaps::max_records`].
    TooManyRecords { count: usize, max: usize },
    /// A record's data is over [`RequestCaps::max_record_bytes`]; `index` is its position in
    /// a PutRecords (none for PutRecord).
    RecordTooLarge { index: Option<usize>, data_bytes: u64, max: u64 },
    /// Data plus partition keys of all entries over [`RequestCaps::max_request_bytes`].
    RequestTooLarge { max: u64 },
}

impl Rejection {
    /// The AWS error code: the model's length constraints fail as `ValidationException`, the
    /// request size check as `InvalidArgumentException` (Kinesis API reference, PutRecords).
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::TooManyRecords { .. } | Self::RecordTooLarge { .. } => "ValidationException",
            Self::RequestTooLarge { .. } => "InvalidArgumentException",
        }
    }

    /// The message, worded as AWS words it.
    pub(crate) fn message(&self) -> String {
        match self {
            Self::TooManyRecords { count, max } => format!(
                "1 validation error detected: Value '[{count} records]' at 'records' failed to \
                 satisfy constraint: Member must have length less than or equal to {max}"
            ),
            Self::RecordTooLarge { index, data_bytes, max } => {
                let at = match index {
                    Some(i) => format!("records.{}.member.data", i + 1),
                    None => "data".to_owned(),
                };
                format!(
                    "1 validation error detected: Value 'java.nio.HeapByteBuffer[pos=0 \
                     lim={data_bytes} cap={data_bytes}]' at '{at}' failed to satisfy \
                     constraint: Member must have length less than or equal to {max}"
                )
            }
            Self::RequestTooLarge { max } => {
                const MIB: u64 = 1024 * 1024;
                if max % MIB == 0 {
                    format!("Records size exceeds {} MB limit", max / MIB)
                } else {
                    format!("Records size exceeds {max} bytes limit")
                }
            }
        }
    }
}

/// Checks a PutRecords request against the caps: count first, then each record, then the
/// total, the order in which AWS validates (model constraints before the size check).
pub(crate) fn check_put_records(caps: &RequestCaps, entries: &[Entry]) -> Result<(), Rejection> {
    if entries.len() > caps.max_records {
        return Err(Rejection::TooManyRecords { count: entries.len(), max: caps.max_records });
    }
    if let Some((index, entry)) =
        entries.iter().enumerate().find(|(_, e)| e.data_bytes > caps.max_record_bytes)
    {
        return Err(Rejection::RecordTooLarge {
            index: Some(index),
            data_bytes: entry.data_bytes,
            max: caps.max_record_bytes,
        });
    }
    let total: u64 = entries.iter().map(Entry::size).sum();
    if total > caps.max_request_bytes {
        return Err(Rejection::RequestTooLarge { max: caps.max_request_bytes });
    }
    Ok(())
}

/// Checks a PutRecord request against the record cap.
pub(crate) fn check_put_record(caps: &RequestCaps, entry: &Entry) -> Result<(), Rejection> {
    if entry.data_bytes > caps.max_record_bytes {
        return Err(Rejection::RecordTooLarge {
            index: None,
            data_bytes: entry.data_bytes,
            max: caps.max_record_bytes,
        });
    }
    Ok(())
}

/// What the proxy decided for one PutRecords entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Slot {
    /// Sent upstream.
    Forward,
    /// Failed with `ProvisionedThroughputExceededException` for this shard.
    Throttled {
        /// The shard the entry maps to.
        shard: String,
    },
}

/// The message AWS gives a throttled entry or PutRecord.
pub(crate) fn throttle_message(stream: &StreamRef, shard: &str) -> String {
    format!(
        "Rate exceeded for shard {shard} in stream {} under account {}.",
        stream.name, stream.account
    )
}

fn throttled_result(stream: &StreamRef, shard: &str) -> Value {
    json!({ "ErrorCode": THROTTLED, "ErrorMessage": throttle_message(stream, shard) })
}

/// The answer to a PutRecords whose every entry was throttled.
pub(crate) fn all_throttled_answer(stream: &StreamRef, slots: &[Slot]) -> Vec<u8> {
    let records: Vec<Value> = slots
        .iter()
        .map(|slot| match slot {
            Slot::Throttled { shard } => throttled_result(stream, shard),
            Slot::Forward => throttled_result(stream, "unknown"),
        })
        .collect();
    let answer = json!({ "FailedRecordCount": records.len(), "Records": records });
    serde_json::to_vec(&answer).expect("a JSON value always serialises")
}

/// Merges the upstream's answer for the forwarded entries with the throttled ones, in the
/// original order; `None` if the answer does not have one result per forwarded entry.
pub(crate) fn merge_answer(upstream: &[u8], stream: &StreamRef, slots: &[Slot]) -> Option<Vec<u8>> {
    let Value::Object(mut answer) = serde_json::from_slice(upstream).ok()? else {
        return None;
    };
    let Value::Array(results) = answer.remove("Records")? else {
        return None;
    };
    let forwarded = slots.iter().filter(|s| matches!(s, Slot::Forward)).count();
    if results.len() != forwarded {
        return None;
    }
    let mut results = results.into_iter();
    let merged: Vec<Value> = slots
        .iter()
        .map(|slot| match slot {
            Slot::Forward => results.next().expect("counted above"),
            Slot::Throttled { shard } => throttled_result(stream, shard),
        })
        .collect();
    let failed = merged.iter().filter(|r| r.get("ErrorCode").is_some_and(|c| !c.is_null())).count();
    answer.insert("FailedRecordCount".to_owned(), json!(failed));
    answer.insert("Records".to_owned(), Value::Array(merged));
    Some(serde_json::to_vec(&Value::Object(answer)).expect("a JSON map always serialises"))
}

/// The body of an AWS JSON error: `{"__type": code, "message": message}`, which the SDKs
/// read (with the `x-amzn-ErrorType` header, which the caller also sets).
pub(crate) fn error_body(code: &str, message: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({ "__type": code, "message": message }))
        .expect("a JSON value always serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_records_body(n: usize, data: &str) -> Vec<u8> {
        let records: Vec<Value> =
            (0..n).map(|i| json!({ "Data": data, "PartitionKey": format!("key-{i}") })).collect();
        serde_json::to_vec(&json!({ "StreamName": "s", "Records": records })).unwrap()
    }

    #[test]
    fn operations_are_read_from_the_target_header() {
        assert_eq!(operation("Kinesis_20131202.PutRecords"), "PutRecords");
        assert_eq!(operation("DynamoDB_20120810.PutItem"), "PutItem");
        assert_eq!(kinesis_op(Some("Kinesis_20131202.PutRecord")), Some(KinesisOp::PutRecord));
        assert_eq!(kinesis_op(Some("Kinesis_20131202.SplitShard")), Some(KinesisOp::ShardsChanged));
        assert_eq!(kinesis_op(Some("DynamoDB_20120810.PutItem")), None);
        assert_eq!(kinesis_op(None), None);
    }

    #[test]
    fn base64_lengths_account_for_padding() {
        assert_eq!(base64_decoded_len(""), 0);
        assert_eq!(base64_decoded_len("QQ=="), 1);
        assert_eq!(base64_decoded_len("QUI="), 2);
        assert_eq!(base64_decoded_len("QUJD"), 3);
        assert_eq!(base64_decoded_len("QQ"), 1);
    }

    #[test]
    fn entries_route_by_explicit_hash_key_else_by_partition_key_md5() {
        let body = json!({ "StreamARN": "arn:aws:kinesis:us-east-1:123456789012:stream/orders",
            "Records": [
                { "Data": "QUJD", "PartitionKey": "k", "ExplicitHashKey": "42" },
                { "Data": "QUJD", "PartitionKey": "k" },
            ] });
        let request = parse_put_records(&serde_json::to_vec(&body).unwrap()).unwrap();
        assert_eq!(
            request.stream,
            StreamRef { name: "orders".into(), account: "123456789012".into() }
        );
        assert_eq!(request.entries[0].hash, HashKey(42));
        assert_eq!(request.entries[1].hash, HashKey::from_partition_key_bytes(b"k"));
        assert_eq!(request.entries[1].size(), 4);
    }

    #[test]
    fn unreadable_bodies_are_not_understood() {
        assert!(parse_put_records(b"not json").is_none());
        assert!(parse_put_records(br#"{"StreamName":"s","Records":[{"Data":1}]}"#).is_none());
        assert!(
            parse_put_records(
                br#"{"StreamName":"s","Records":[{"Data":"","PartitionKey":"k","ExplicitHashKey":"x"}]}"#
            )
            .is_none()
        );
        assert!(parse_put_record(br#"{"Data":"","PartitionKey":"k"}"#).is_none());
    }

    #[test]
    fn caps_reject_count_then_record_then_total() {
        let caps = RequestCaps::aws();
        let entry = |data_bytes| Entry { hash: HashKey(0), data_bytes, key_bytes: 10 };
        let many = vec![entry(1); 501];
        assert_eq!(
            check_put_records(&caps, &many).unwrap_err(),
            Rejection::TooManyRecords { count: 501, max: 500 }
        );
        let big = vec![entry(1), entry(1024 * 1024 + 1)];
        let err = check_put_records(&caps, &big).unwrap_err();
        assert_eq!(err.code(), "ValidationException");
        assert!(err.message().contains("'records.2.member.data'"), "{}", err.message());
        // Five records of exactly 1 MiB plus their keys exceed 5 MiB.
        let full = vec![entry(1024 * 1024); 5];
        let err = check_put_records(&caps, &full).unwrap_err();
        assert_eq!(err.code(), "InvalidArgumentException");
        assert_eq!(err.message(), "Records size exceeds 5 MB limit");
        assert!(check_put_records(&caps, &[entry(1024 * 1024)]).is_ok());
        assert!(check_put_record(&caps, &entry(1024 * 1024 + 1)).is_err());
    }

    #[test]
    fn forwarded_body_keeps_only_forwarded_entries_and_other_fields() {
        let request = parse_put_records(&put_records_body(3, "QUJD")).unwrap();
        let slots = [
            Slot::Forward,
            Slot::Throttled { shard: "shardId-000000000000".into() },
            Slot::Forward,
        ];
        let body: Value = serde_json::from_slice(&request.forwarded_body(&slots)).unwrap();
        assert_eq!(body["StreamName"], "s");
        let keys: Vec<_> =
            body["Records"].as_array().unwrap().iter().map(|r| r["PartitionKey"].clone()).collect();
        assert_eq!(keys, [json!("key-0"), json!("key-2")]);
    }

    #[test]
    fn merged_answer_puts_throttled_entries_back_in_place_and_counts_all_failures() {
        let stream = StreamRef { name: "s".into(), account: DEFAULT_ACCOUNT.into() };
        let upstream = json!({ "FailedRecordCount": 1, "EncryptionType": "NONE", "Records": [
            { "SequenceNumber": "1", "ShardId": "shardId-000000000000" },
            { "ErrorCode": "InternalFailure", "ErrorMessage": "x" },
        ] });
        let slots = [
            Slot::Throttled { shard: "shardId-000000000001".into() },
            Slot::Forward,
            Slot::Forward,
        ];
        let merged =
            merge_answer(&serde_json::to_vec(&upstream).unwrap(), &stream, &slots).unwrap();
        let merged: Value = serde_json::from_slice(&merged).unwrap();
        assert_eq!(merged["FailedRecordCount"], 2);
        assert_eq!(merged["EncryptionType"], "NONE");
        assert_eq!(merged["Records"][0]["ErrorCode"], THROTTLED);
        assert_eq!(
            merged["Records"][0]["ErrorMessage"],
            "Rate exceeded for shard shardId-000000000001 in stream s under account 000000000000."
        );
        assert_eq!(merged["Records"][1]["SequenceNumber"], "1");
        assert_eq!(merged["Records"][2]["ErrorCode"], "InternalFailure");
        // An answer with the wrong number of results is not merged.
        assert!(
            merge_answer(&serde_json::to_vec(&upstream).unwrap(), &stream, &slots[1..2]).is_none()
        );
    }

    #[test]
    fn all_throttled_answer_fails_every_entry() {
        let stream = StreamRef { name: "s".into(), account: DEFAULT_ACCOUNT.into() };
        let slots = vec![Slot::Throttled { shard: "shardId-000000000000".into() }; 3];
        let answer: Value = serde_json::from_slice(&all_throttled_answer(&stream, &slots)).unwrap();
        assert_eq!(answer["FailedRecordCount"], 3);
        assert_eq!(answer["Records"].as_array().unwrap().len(), 3);
    }
}
