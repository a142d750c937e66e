//! The lease-store contract suite against the substrate's DynamoDB (DynamoDB Local or
//! LocalStack) through `DynamoLeaseStore`; the same checks run against the in-memory store in
//! `consumer/tests/lease_contract.rs`. Each check gets its own fresh table. Planted items are
//! written with the raw SDK, attribute types exactly as a KCL 2.x worker writes them.

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use kinesis_consumer::lease::contract::{self, RawTable, async_trait};
use kinesis_consumer::lease::item::{RawItem, RawValue};
use kinesis_consumer::lease::{DynamoLeaseStore, LeaseStore};
use kinesis_integration_tests::{dynamodb, unique_name};

/// A store on a fresh table name, and raw access to the same table.
struct Fixture {
    store: DynamoLeaseStore,
    raw: Raw,
}

struct Raw {
    client: Client,
    table: String,
}

async fn fixture() -> Fixture {
    let client = dynamodb().await.expect("substrate DynamoDB client");
    let table = unique_name("leases");
    Fixture {
        store: DynamoLeaseStore::from_client(client.clone(), table.clone()).with_scan_page_size(7),
        raw: Raw { client, table },
    }
}

impl Fixture {
    async fn finish(self) {
        // Best effort: a table left behind by a failed check is harmless on an emulator.
        let _ = self.raw.client.delete_table().table_name(&self.raw.table).send().await;
    }
}

fn to_sdk(value: RawValue) -> AttributeValue {
    match value {
        RawValue::S(s) => AttributeValue::S(s),
        RawValue::N(n) => AttributeValue::N(n),
        RawValue::Ss(set) => AttributeValue::Ss(set),
        RawValue::Ns(set) => AttributeValue::Ns(set),
        RawValue::B(bytes) => AttributeValue::B(Blob::new(bytes)),
        RawValue::Bool(b) => AttributeValue::Bool(b),
        other => panic!("the tests do not plant {other:?}"),
    }
}

fn from_sdk(value: AttributeValue) -> RawValue {
    match value {
        AttributeValue::S(s) => RawValue::S(s),
        AttributeValue::N(n) => RawValue::N(n),
        AttributeValue::Ss(set) => RawValue::Ss(set),
        AttributeValue::Ns(set) => RawValue::Ns(set),
        AttributeValue::B(blob) => RawValue::B(blob.into_inner()),
        AttributeValue::Bool(b) => RawValue::Bool(b),
        other => panic!("unexpected attribute value {other:?}"),
    }
}

#[async_trait]
impl RawTable for Raw {
    async fn put_raw(&self, item: RawItem) {
        let item: HashMap<String, AttributeValue> =
            item.into_iter().map(|(k, v)| (k, to_sdk(v))).collect();
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .expect("raw PutItem");
    }

    async fn get_raw(&self, key: &str) -> Option<RawItem> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("leaseKey", AttributeValue::S(key.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .expect("raw GetItem");
        out.item.map(|item| item.into_iter().map(|(k, v)| (k, from_sdk(v))).collect())
    }

    async fn create_table_with_wrong_key(&self) {
        self.client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("id")
                    .attribute_type(ScalarAttributeType::N)
                    .build()
                    .unwrap(),
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("id")
                    .key_type(KeyType::Hash)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .expect("raw CreateTable");
    }
}

macro_rules! contract_checks {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            let f = fixture().await;
            contract::$name(&f.store).await;
            f.finish().await;
        }
    )*};
}

macro_rules! raw_contract_checks {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() {
            let f = fixture().await;
            contract::$name(&f.store, &f.raw).await;
            f.finish().await;
        }
    )*};
}

contract_checks!(
    create_table_is_idempotent,
    missing_table_is_table_not_found,
    create_if_absent_creates_once,
    renew_bumps_counter,
    renew_with_stale_counter_conflicts,
    repeated_write_is_idempotent,
    renew_by_another_owner_conflicts,
    write_to_missing_lease_conflicts,
    take_changes_owner_and_counts_switches,
    release_clears_owner,
    checkpoint_stores_position,
    checkpoint_after_take_conflicts,
    delete_is_conditional,
    list_reads_every_page,
    shard_lineage_round_trips,
);

raw_contract_checks!(
    unknown_attributes_survive_writes,
    kcl_written_item_decodes,
    invalid_items_are_reported,
    wrong_key_schema_is_rejected,
);

/// The table the adapter creates is what a KCL 2.x worker expects: on-demand billing, one
/// HASH key `leaseKey` of type S.
#[tokio::test]
async fn created_table_is_on_demand_and_keyed_by_lease_key() {
    let f = fixture().await;
    f.store.create_table_if_missing().await.unwrap();
    let table =
        f.raw.client.describe_table().table_name(&f.raw.table).send().await.unwrap().table.unwrap();
    let keys = table.key_schema();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].attribute_name(), "leaseKey");
    assert_eq!(keys[0].key_type(), &KeyType::Hash);
    assert_eq!(
        table.billing_mode_summary().and_then(|b| b.billing_mode()),
        Some(&BillingMode::PayPerRequest)
    );
    f.finish().await;
}

/// The LocalStack smoke subset: a lease's life (create, renew, take, checkpoint, release) and
/// a KCL-written item, on LocalStack's DynamoDB.
#[tokio::test]
async fn smoke_lease_life_on_this_backend() {
    // Each check expects a table of its own.
    let f = fixture().await;
    contract::create_if_absent_creates_once(&f.store).await;
    f.finish().await;
    let f = fixture().await;
    contract::take_changes_owner_and_counts_switches(&f.store).await;
    f.finish().await;
    let f = fixture().await;
    contract::checkpoint_stores_position(&f.store).await;
    f.finish().await;
    let f = fixture().await;
    contract::release_clears_owner(&f.store).await;
    f.finish().await;
    let f = fixture().await;
    contract::kcl_written_item_decodes(&f.store, &f.raw).await;
    f.finish().await;
}
