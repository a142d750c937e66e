//! The lease-store contract suite against the in-memory store; the same checks run against
//! DynamoDB Local in `tests/tests/lease_store_dynamodb.rs`.

use kinesis_consumer::lease::InMemoryLeaseStore;
use kinesis_consumer::lease::contract;

fn fresh() -> InMemoryLeaseStore {
    InMemoryLeaseStore::new()
}

#[tokio::test]
async fn create_table_is_idempotent() {
    contract::create_table_is_idempotent(&fresh()).await;
}

#[tokio::test]
async fn missing_table_is_table_not_found() {
    contract::missing_table_is_table_not_found(&fresh()).await;
}

#[tokio::test]
async fn create_if_absent_creates_once() {
    contract::create_if_absent_creates_once(&fresh()).await;
}

#[tokio::test]
async fn renew_bumps_counter() {
    contract::renew_bumps_counter(&fresh()).await;
}

#[tokio::test]
async fn renew_with_stale_counter_conflicts() {
    contract::renew_with_stale_counter_conflicts(&fresh()).await;
}

#[tokio::test]
async fn repeated_write_is_idempotent() {
    contract::repeated_write_is_idempotent(&fresh()).await;
}

#[tokio::test]
async fn renew_by_another_owner_conflicts() {
    contract::renew_by_another_owner_conflicts(&fresh()).await;
}

#[tokio::test]
async fn write_to_missing_lease_conflicts() {
    contract::write_to_missing_lease_conflicts(&fresh()).await;
}

#[tokio::test]
async fn take_changes_owner_and_counts_switches() {
    contract::take_changes_owner_and_counts_switches(&fresh()).await;
}

#[tokio::test]
async fn release_clears_owner() {
    contract::release_clears_owner(&fresh()).await;
}

#[tokio::test]
async fn checkpoint_stores_position() {
    contract::checkpoint_stores_position(&fresh()).await;
}

#[tokio::test]
async fn checkpoint_after_take_conflicts() {
    contract::checkpoint_after_take_conflicts(&fresh()).await;
}

#[tokio::test]
async fn delete_is_conditional() {
    contract::delete_is_conditional(&fresh()).await;
}

#[tokio::test]
async fn list_reads_every_page() {
    contract::list_reads_every_page(&fresh().with_scan_page_size(7)).await;
}

#[tokio::test]
async fn shard_lineage_round_trips() {
    contract::shard_lineage_round_trips(&fresh()).await;
}

#[tokio::test]
async fn unknown_attributes_survive_writes() {
    let store = fresh();
    contract::unknown_attributes_survive_writes(&store, &store).await;
}

#[tokio::test]
async fn kcl_written_item_decodes() {
    let store = fresh();
    contract::kcl_written_item_decodes(&store, &store).await;
}

#[tokio::test]
async fn invalid_items_are_reported() {
    let store = fresh();
    contract::invalid_items_are_reported(&store, &store).await;
}

#[tokio::test]
async fn wrong_key_schema_is_rejected() {
    let store = fresh();
    contract::wrong_key_schema_is_rejected(&store, &store).await;
}
