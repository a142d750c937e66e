//! The substrate's DynamoDB engine does what the lease table needs: on-demand tables and
//! conditional writes whose failed condition comes back as `ConditionalCheckFailedException`.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use kinesis_integration_tests::{dynamodb, unique_name};

#[tokio::test]
async fn smoke_dynamodb_conditional_writes_on_a_lease_shaped_table() {
    let ddb = dynamodb().await.unwrap();
    let table = unique_name("leases");
    ddb.create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("leaseKey")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("leaseKey")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();

    let put = || {
        ddb.put_item()
            .table_name(&table)
            .item("leaseKey", AttributeValue::S("shardId-000000000000".into()))
            .item("leaseCounter", AttributeValue::N("1".into()))
            .condition_expression("attribute_not_exists(leaseKey)")
    };
    put().send().await.unwrap();
    let err = put().send().await.unwrap_err();
    assert!(
        err.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()),
        "{err:?}"
    );

    // A stale counter is refused; the current one is accepted.
    let renew = |counter: &str| {
        ddb.update_item()
            .table_name(&table)
            .key("leaseKey", AttributeValue::S("shardId-000000000000".into()))
            .update_expression("SET leaseCounter = leaseCounter + :one")
            .condition_expression("leaseCounter = :expected")
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":expected", AttributeValue::N(counter.into()))
    };
    renew("1").send().await.unwrap();
    let err = renew("1").send().await.unwrap_err();
    assert!(err.as_service_error().is_some_and(|e| e.is_conditional_check_failed_exception()));
    ddb.delete_table().table_name(&table).send().await.unwrap();
}
