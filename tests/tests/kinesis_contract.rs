//! The `KinesisApi` contract suite (`kinesis_common::fake::contract`) against the substrate's
//! Kinesis engine through `SdkKinesis`: the same checks `FakeKinesis` passes in
//! `common/tests/fake_contract.rs`, so the fake cannot drift from a real engine.
//!
//! One test per check, each on a fresh stream, so a failure names the behaviour that broke.

use kinesis_common::fake::contract;
use kinesis_integration_tests::{kinesis, unique_stream};

macro_rules! contract_tests {
    ($($name:ident => $check:ident,)*) => {$(
        #[tokio::test]
        async fn $name() {
            let api = kinesis().await.unwrap();
            contract::$check(api.as_ref(), &unique_stream(stringify!($check))).await;
        }
    )*};
}

contract_tests! {
    contract_stream_lifecycle => stream_lifecycle,
    contract_unknown_stream_is_not_found => unknown_stream_is_not_found,
    smoke_contract_put_and_get_round_trip => put_and_get_round_trip,
    contract_sequence_numbers_increase => sequence_numbers_increase,
    contract_explicit_hash_key_routes_to_owning_shard => explicit_hash_key_routes_to_owning_shard,
    contract_iterator_positions => iterator_positions,
    contract_get_records_limit_is_respected => get_records_limit_is_respected,
    contract_oversized_record_is_not_written => oversized_record_is_not_written,
    contract_split_shows_parent_and_children => split_shows_parent_and_children,
    contract_merge_shows_both_parents => merge_shows_both_parents,
    contract_closed_shard_ends_with_children => closed_shard_ends_with_children,
    contract_subscription_delivers_records => subscription_delivers_records,
}
