//! The contract suite against `FakeKinesis`: the fake shows the Kinesis behaviour that the
//! toolkit relies on. The same checks run against kinesis-mock in the `tests` crate.
//!
//! Paused tokio time: the checks' polling sleeps advance the clock instead of waiting.

#![cfg(feature = "test-util")]

use kinesis_common::StreamName;
use kinesis_common::fake::{FakeKinesis, contract};

fn name(check: &str) -> StreamName {
    StreamName::new(format!("contract-{check}")).unwrap()
}

#[tokio::test(start_paused = true)]
async fn stream_lifecycle() {
    contract::stream_lifecycle(&FakeKinesis::new(), &name("lifecycle")).await;
}

#[tokio::test(start_paused = true)]
async fn unknown_stream_is_not_found() {
    contract::unknown_stream_is_not_found(&FakeKinesis::new(), &name("unknown")).await;
}

#[tokio::test(start_paused = true)]
async fn put_and_get_round_trip() {
    contract::put_and_get_round_trip(&FakeKinesis::new(), &name("round-trip")).await;
}

#[tokio::test(start_paused = true)]
async fn sequence_numbers_increase() {
    contract::sequence_numbers_increase(&FakeKinesis::new(), &name("sequence")).await;
}

#[tokio::test(start_paused = true)]
async fn explicit_hash_key_routes_to_owning_shard() {
    contract::explicit_hash_key_routes_to_owning_shard(&FakeKinesis::new(), &name("routing")).await;
}

#[tokio::test(start_paused = true)]
async fn iterator_positions() {
    contract::iterator_positions(&FakeKinesis::new(), &name("iterators")).await;
}

#[tokio::test(start_paused = true)]
async fn get_records_limit_is_respected() {
    contract::get_records_limit_is_respected(&FakeKinesis::new(), &name("limit")).await;
}

#[tokio::test(start_paused = true)]
async fn oversized_record_is_not_written() {
    contract::oversized_record_is_not_written(&FakeKinesis::new(), &name("oversized")).await;
}

#[tokio::test(start_paused = true)]
async fn split_shows_parent_and_children() {
    contract::split_shows_parent_and_children(&FakeKinesis::new(), &name("split")).await;
}

#[tokio::test(start_paused = true)]
async fn merge_shows_both_parents() {
    contract::merge_shows_both_parents(&FakeKinesis::new(), &name("merge")).await;
}

#[tokio::test(start_paused = true)]
async fn closed_shard_ends_with_children() {
    contract::closed_shard_ends_with_children(&FakeKinesis::new(), &name("closed")).await;
}

#[tokio::test(start_paused = true)]
async fn subscription_delivers_records() {
    contract::subscription_delivers_records(&FakeKinesis::new(), &name("subscribe")).await;
}

#[tokio::test(start_paused = true)]
async fn whole_suite_runs_on_one_fake() {
    contract::run_all(&FakeKinesis::new(), "suite").await;
}

#[tokio::test(start_paused = true)]
async fn suite_passes_with_zero_delays_too() {
    // Emulators configured with 10 ms delays are nearly instant; the checks must not depend on
    // seeing CREATING or UPDATING.
    let fake = FakeKinesis::builder()
        .create_delay(std::time::Duration::ZERO)
        .update_delay(std::time::Duration::ZERO)
        .consumer_delay(std::time::Duration::ZERO)
        .build();
    contract::run_all(&fake, "instant").await;
}
