//! The retrier's judgement: what one PutRecords outcome means for the Kinesis record it
//! answers.
//!
//! Rules:
//! - a write to the predicted shard (or of a record that was not predicted, or not
//!   aggregated: Kinesis placed it by its own hash key, so wherever it went is right) delivers
//!   every user record it carries;
//! - a write of an aggregate to another shard than predicted (the shard map was stale: the
//!   shard was split or merged) delivers only if every user record's hash key lies inside the
//!   actual shard's range. Otherwise the KCL would drop the whole aggregate on that shard
//!   (its hash-range filter), so every user record is sent again after the shard map is
//!   refreshed. The KPL acknowledges the in-range records of such an aggregate, which the KCL
//!   then drops: that is data loss this rule avoids.
//! - throttling, passing faults and busy resources are retried (throttling fails at once under
//!   `fail_if_throttled`); anything else (invalid argument, unknown stream, access denied) is
//!   final. A whole request refused as an invalid argument is the exception (Kinesis refuses
//!   all of a PutRecords call for one record over the stream's record size limit, say, and
//!   writes nothing): the pipeline sends each half of it on its own, halving again until the
//!   bad records are alone and rejected, so the others are written. A record in a request of
//!   `n` takes at most `ceil(log2(n)) + 1` attempts that way.
//!
//! Pure: no clock, no I/O.

use kinesis_common::{ApiError, ApiErrorKind, PutRecordsOutcome, SequenceNumber, ShardId};

use crate::aggregator::KinesisEntry;
use crate::shard_map::ShardMap;

/// What to do with a Kinesis record after its PutRecords answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Written: complete every user record.
    Delivered {
        shard_id: ShardId,
        sequence_number: SequenceNumber,
        /// The write went to another shard than predicted: the shard map is stale.
        refresh_map: bool,
    },
    /// Written to the wrong shard for some of its user records: refresh the shard map and
    /// send every user record again.
    WrongShard { shard_id: ShardId, sequence_number: SequenceNumber },
    /// Try again after a backoff.
    Retry { error: ApiError },
    /// Fail every user record with this error.
    Reject { error: ApiError },
}

/// Judges one entry's outcome.
pub(crate) fn classify(
    entry: &KinesisEntry,
    outcome: &PutRecordsOutcome,
    map: &ShardMap,
    fail_if_throttled: bool,
) -> Verdict {
    match outcome {
        PutRecordsOutcome::Written { shard_id, sequence_number } => {
            let wrong = entry.predicted.as_ref().is_some_and(|p| p != shard_id);
            if !wrong {
                return Verdict::Delivered {
                    shard_id: shard_id.clone(),
                    sequence_number: sequence_number.clone(),
                    refresh_map: false,
                };
            }
            let all_inside = !entry.aggregated
                || map.range(shard_id).is_some_and(|range| {
                    entry.users.iter().all(|p| range.contains(p.record.hash_key()))
                });
            if all_inside {
                Verdict::Delivered {
                    shard_id: shard_id.clone(),
                    sequence_number: sequence_number.clone(),
                    refresh_map: true,
                }
            } else {
                Verdict::WrongShard {
                    shard_id: shard_id.clone(),
                    sequence_number: sequence_number.clone(),
                }
            }
        }
        PutRecordsOutcome::Failed(error) => classify_error(error, fail_if_throttled),
    }
}

/// Judges a failure: of one entry, or of a whole request (which applies to every entry).
pub(crate) fn classify_error(error: &ApiError, fail_if_throttled: bool) -> Verdict {
    if error.kind() == ApiErrorKind::Throttled && fail_if_throttled {
        return Verdict::Reject { error: error.clone() };
    }
    if error.is_retryable() {
        Verdict::Retry { error: error.clone() }
    } else {
        Verdict::Reject { error: error.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pending::tests::pending;
    use crate::shard_map::tests::shard;
    use kinesis_common::{HashKey, PartitionKey, PutRecordsEntry};
    use std::time::Instant;

    /// An entry predicted for shard 0 holding user records with the given hash keys.
    fn entry(hash_keys: &[u128], aggregated: bool) -> KinesisEntry {
        let now = Instant::now();
        let users = hash_keys
            .iter()
            .map(|k| {
                let (mut p, _) = pending("k", "v", now);
                p.record.set_hash_key(HashKey(*k));
                p
            })
            .collect();
        KinesisEntry {
            predicted: Some(ShardId::new("shardId-000000000000").unwrap()),
            entry: PutRecordsEntry {
                partition_key: PartitionKey::new("a").unwrap(),
                explicit_hash_key: None,
                data: "x".into(),
            },
            unsealed: None,
            users,
            aggregated,
            deadline: now,
            attempts: 0,
        }
    }

    fn written(id: u32) -> PutRecordsOutcome {
        PutRecordsOutcome::Written {
            shard_id: ShardId::new(format!("shardId-{id:012}")).unwrap(),
            sequence_number: SequenceNumber::new("123").unwrap(),
        }
    }

    /// Shard 0 was split into 1 (0..=99) and 2 (100..).
    fn split_map() -> ShardMap {
        ShardMap::new(
            &[shard(0, 0, u128::MAX, false), shard(1, 0, 99, true), shard(2, 100, u128::MAX, true)],
            Instant::now(),
        )
        .unwrap()
    }

    #[test]
    fn a_write_to_the_predicted_shard_delivers() {
        let v = classify(&entry(&[5, 500], true), &written(0), &split_map(), false);
        assert!(matches!(v, Verdict::Delivered { refresh_map: false, .. }), "{v:?}");
    }

    #[test]
    fn a_mixed_aggregate_on_the_wrong_shard_is_sent_again_whole() {
        // Records 5 and 500 were aggregated for the parent; Kinesis put the aggregate on child
        // 1, which owns 5 but not 500. The KCL would drop the whole aggregate there.
        let v = classify(&entry(&[5, 500], true), &written(1), &split_map(), false);
        assert!(
            matches!(&v, Verdict::WrongShard { shard_id, .. } if shard_id.as_str() == "shardId-000000000001"),
            "{v:?}"
        );
    }

    #[test]
    fn an_aggregate_wholly_inside_the_actual_shard_delivers_and_refreshes() {
        let v = classify(&entry(&[5, 50], true), &written(1), &split_map(), false);
        assert!(matches!(v, Verdict::Delivered { refresh_map: true, .. }), "{v:?}");
    }

    #[test]
    fn an_unknown_actual_shard_counts_as_wrong() {
        let v = classify(&entry(&[5, 50], true), &written(7), &split_map(), false);
        assert!(matches!(v, Verdict::WrongShard { .. }), "{v:?}");
    }

    #[test]
    fn a_plain_record_is_right_wherever_kinesis_put_it() {
        let v = classify(&entry(&[500], false), &written(1), &split_map(), false);
        assert!(matches!(v, Verdict::Delivered { refresh_map: true, .. }), "{v:?}");
    }

    #[test]
    fn failures_retry_only_when_retrying_can_help() {
        let map = split_map();
        let e = entry(&[1], false);
        let throttled =
            ApiError::from_code("ProvisionedThroughputExceededException", "Rate exceeded");
        let fail =
            |err: &ApiError, fit| classify(&e, &PutRecordsOutcome::Failed(err.clone()), &map, fit);
        assert!(matches!(fail(&throttled, false), Verdict::Retry { .. }));
        assert!(matches!(fail(&throttled, true), Verdict::Reject { .. }));
        let internal = ApiError::from_code("InternalFailure", "");
        assert!(matches!(fail(&internal, false), Verdict::Retry { .. }));
        let kms = ApiError::from_code("KMSAccessDeniedException", "");
        assert!(matches!(fail(&kms, false), Verdict::Reject { .. }));
        let missing = ApiError::from_code("ResourceNotFoundException", "Stream x not found");
        assert!(matches!(classify_error(&missing, false), Verdict::Reject { .. }));
    }
}
