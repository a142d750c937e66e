//! [`DynamoLeaseStore`]: the lease table in DynamoDB, over `aws-sdk-dynamodb`.
//!
//! The only module of the crate that names DynamoDB SDK types. It translates between SDK
//! attribute values and [`RawValue`], renders the shared conditions and updates of `table.rs`
//! as expressions, and classifies SDK failures into [`LeaseStoreError`].
//!
//! Retries: the client keeps the SDK's standard retries (throttling and 5xx answers are
//! retried with backoff by the SDK). A retried conditional write whose first attempt was
//! applied fails its condition; `table.rs` recognises that case by re-reading the item.
//!
//! TLS: the client refuses plain `http://` endpoints except on loopback hosts (DynamoDB
//! Local) until [`DynamoLeaseStore::allow_plain_http`] is called, as `SdkKinesis` does; see
//! `kinesis_common::api::endpoint`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ReturnValue,
    ScalarAttributeType, TableDescription, TableStatus,
};
use kinesis_common::api::endpoint;
use kinesis_common::api::sdk::PlainHttpGuard;
use kinesis_common::{ExtendedSequenceNumber, ShardId};

use super::error::{LeaseStoreError, LeaseWriteError, Message};
use super::item::{self, RawItem, RawValue};
use super::table::{Condition, LeaseOps, OwnerCondition, Table, TableError, Update};
use super::{CreateOutcome, Lease, LeaseScan, LeaseStore, WorkerId};

/// How long [`LeaseStore::create_table_if_missing`] waits for a new table to become `ACTIVE`.
///
/// On-demand tables usually become active within seconds; the KCL waits up to several
/// minutes (`DynamoDBLeaseRefresher.waitUntilLeaseTableExists`), so a slow region is not an
/// error too early.
pub const DEFAULT_TABLE_ACTIVE_TIMEOUT: Duration = Duration::from_secs(300);

/// How often the table status is polled while waiting for `ACTIVE`.
const ACTIVE_POLL: Duration = Duration::from_millis(200);

/// The lease table in DynamoDB. See the module docs.
#[derive(Debug, Clone)]
pub struct DynamoLeaseStore {
    client: Client,
    /// The same client without the plain-HTTP guard, for `allow_plain_http`.
    unguarded: Client,
    table: String,
    scan_page_size: Option<i32>,
    active_timeout: Duration,
}

impl DynamoLeaseStore {
    /// A store for `table`, with a client built from `config` (standard SDK retries).
    pub fn new(config: &aws_types::SdkConfig, table: impl Into<String>) -> Self {
        Self::from_client(Client::new(config), table)
    }

    /// A store for `table` over a client you configured yourself, with the plain-HTTP guard
    /// added.
    pub fn from_client(client: Client, table: impl Into<String>) -> Self {
        kinesis_common::api::sdk::warn_if_sdk_traces_bodies();
        let guard = PlainHttpGuard::new("DynamoLeaseStore::allow_plain_http()");
        Self {
            client: Client::from_conf(client.config().to_builder().interceptor(guard).build()),
            unguarded: client,
            table: table.into(),
            scan_page_size: None,
            active_timeout: DEFAULT_TABLE_ACTIVE_TIMEOUT,
        }
    }

    /// Scans ask for at most `items` items per page (DynamoDB's own limit is 1 MB per page).
    /// Useful to test pagination; large tables need no setting.
    pub fn with_scan_page_size(mut self, items: u32) -> Self {
        self.scan_page_size = Some(i32::try_from(items.max(1)).unwrap_or(i32::MAX));
        self
    }

    /// How long to wait for a created table to become `ACTIVE`.
    pub fn with_table_active_timeout(mut self, timeout: Duration) -> Self {
        self.active_timeout = timeout;
        self
    }

    /// Allows plain `http://` endpoints on any host, not only loopback: for DynamoDB Local on
    /// another machine or a TLS-terminating proxy on a network you trust. Leases, checkpoints
    /// and signed requests then travel unencrypted.
    pub fn allow_plain_http(mut self) -> Self {
        self.client = self.unguarded.clone();
        self
    }

    /// The table's name.
    pub fn table_name(&self) -> &str {
        &self.table
    }

    fn key(key: &ShardId) -> HashMap<String, AttributeValue> {
        HashMap::from([(item::LEASE_KEY.to_owned(), AttributeValue::S(key.as_str().to_owned()))])
    }

    fn error<E>(&self, operation: &'static str, err: SdkError<E>) -> LeaseStoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        store_error(operation, &self.table, err)
    }

    async fn describe(&self) -> Result<Option<TableDescription>, LeaseStoreError> {
        match self.client.describe_table().table_name(&self.table).send().await {
            Ok(out) => Ok(out.table),
            Err(e) if e.code() == Some("ResourceNotFoundException") => Ok(None),
            Err(e) => Err(self.error("DescribeTable", e)),
        }
    }

    /// Checks the key schema of an existing table: exactly one HASH key `leaseKey` of type S
    /// (KCL DynamoDBLeaseSerializer.getKeySchema / getAttributeDefinitions).
    fn check_schema(&self, table: &TableDescription) -> Result<(), LeaseStoreError> {
        let keys = table.key_schema();
        let ok = keys.len() == 1
            && keys[0].attribute_name() == item::LEASE_KEY
            && keys[0].key_type() == &KeyType::Hash
            && table.attribute_definitions().iter().any(|d| {
                d.attribute_name() == item::LEASE_KEY
                    && d.attribute_type() == &ScalarAttributeType::S
            });
        if ok {
            return Ok(());
        }
        let mut found = String::from("[");
        for (i, key) in keys.iter().enumerate() {
            let ty = table
                .attribute_definitions()
                .iter()
                .find(|d| d.attribute_name() == key.attribute_name())
                .map(|d| d.attribute_type().as_str().to_owned())
                .unwrap_or_else(|| "?".into());
            if i > 0 {
                found.push_str(", ");
            }
            let _ = write!(found, "{} {} ({ty})", key.attribute_name(), key.key_type().as_str());
        }
        found.push(']');
        Err(LeaseStoreError::WrongSchema { table: self.table.clone(), found })
    }

    async fn wait_active(&self) -> Result<(), LeaseStoreError> {
        let deadline = tokio::time::Instant::now() + self.active_timeout;
        loop {
            let status = match self.describe().await? {
                Some(table) => {
                    self.check_schema(&table)?;
                    match table.table_status() {
                        Some(TableStatus::Active) => return Ok(()),
                        Some(other) => other.as_str().to_owned(),
                        None => "unknown".to_owned(),
                    }
                }
                // Just created: an eventually consistent DescribeTable may not see it yet.
                None => "not visible yet".to_owned(),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(LeaseStoreError::NotActive { table: self.table.clone(), status });
            }
            tokio::time::sleep(ACTIVE_POLL).await;
        }
    }
}

#[async_trait]
impl Table for DynamoLeaseStore {
    async fn get_item(&self, key: &ShardId) -> Result<Option<RawItem>, LeaseStoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(key)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.error("GetItem", e))?;
        Ok(out.item.map(from_sdk_item))
    }

    async fn scan_items(&self) -> Result<Vec<RawItem>, LeaseStoreError> {
        let mut items = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_limit(self.scan_page_size)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| self.error("Scan", e))?;
            items.extend(out.items.unwrap_or_default().into_iter().map(from_sdk_item));
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return Ok(items),
            }
        }
    }

    async fn put_item_if_absent(&self, item: RawItem) -> Result<CreateOutcome, LeaseStoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(to_sdk_item(item)))
            .condition_expression("attribute_not_exists(#key)")
            .expression_attribute_names("#key", item::LEASE_KEY)
            .send()
            .await;
        match result {
            Ok(_) => Ok(CreateOutcome::Created),
            Err(e) if is_condition_failed(&e) => Ok(CreateOutcome::AlreadyExists),
            Err(e) => Err(self.error("PutItem", e)),
        }
    }

    async fn update_item(
        &self,
        key: &ShardId,
        condition: &Condition,
        update: &Update,
    ) -> Result<RawItem, TableError> {
        let mut expr = Expression::default();
        let condition = expr.condition(condition);
        let mut clauses = Vec::new();
        let sets: Vec<String> = update
            .set
            .iter()
            .map(|(name, value)| {
                let n = expr.name(name);
                let v = expr.value(value.clone());
                format!("{n} = {v}")
            })
            .collect();
        if !sets.is_empty() {
            clauses.push(format!("SET {}", sets.join(", ")));
        }
        let removes: Vec<String> = update.remove.iter().map(|name| expr.name(name)).collect();
        if !removes.is_empty() {
            clauses.push(format!("REMOVE {}", removes.join(", ")));
        }
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(key)))
            .update_expression(clauses.join(" "))
            .condition_expression(condition)
            .set_expression_attribute_names(Some(expr.names))
            .set_expression_attribute_values(Some(expr.values))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(out) => match out.attributes {
                Some(attributes) => Ok(from_sdk_item(attributes)),
                None => Err(TableError::Store(LeaseStoreError::Other {
                    operation: "UpdateItem",
                    source: Message("answer holds no attributes despite ALL_NEW".into()).into(),
                })),
            },
            Err(e) if is_condition_failed(&e) => Err(TableError::ConditionFailed),
            Err(e) => Err(TableError::Store(self.error("UpdateItem", e))),
        }
    }

    async fn delete_item(&self, key: &ShardId, condition: &Condition) -> Result<(), TableError> {
        let mut expr = Expression::default();
        let condition = expr.condition(condition);
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(Self::key(key)))
            .condition_expression(condition)
            .set_expression_attribute_names(Some(expr.names))
            .set_expression_attribute_values(Some(expr.values))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => Err(TableError::ConditionFailed),
            Err(e) => Err(TableError::Store(self.error("DeleteItem", e))),
        }
    }
}

#[async_trait]
impl LeaseStore for DynamoLeaseStore {
    async fn create_table_if_missing(&self) -> Result<CreateOutcome, LeaseStoreError> {
        if let Some(table) = self.describe().await? {
            self.check_schema(&table)?;
            self.wait_active().await?;
            return Ok(CreateOutcome::AlreadyExists);
        }
        // KCL DynamoDBLeaseRefresher.createLeaseTableIfNotExists: on-demand billing by default,
        // hash key leaseKey (S).
        let result = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(item::LEASE_KEY)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(|e| other("CreateTable", e))?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(item::LEASE_KEY)
                    .key_type(KeyType::Hash)
                    .build()
                    .map_err(|e| other("CreateTable", e))?,
            )
            .send()
            .await;
        let outcome = match result {
            Ok(_) => CreateOutcome::Created,
            // Another worker created it between our DescribeTable and CreateTable.
            Err(e) if e.code() == Some("ResourceInUseException") => CreateOutcome::AlreadyExists,
            Err(e) => return Err(self.error("CreateTable", e)),
        };
        self.wait_active().await?;
        Ok(outcome)
    }

    async fn list(&self) -> Result<LeaseScan, LeaseStoreError> {
        LeaseOps(self).list().await
    }

    async fn get(&self, key: &ShardId) -> Result<Option<Lease>, LeaseStoreError> {
        LeaseOps(self).get(key).await
    }

    async fn create_if_absent(&self, lease: &Lease) -> Result<CreateOutcome, LeaseStoreError> {
        LeaseOps(self).create_if_absent(lease).await
    }

    async fn renew(&self, lease: &Lease) -> Result<Lease, LeaseWriteError> {
        LeaseOps(self).renew(lease).await
    }

    async fn take(&self, lease: &Lease, new_owner: &WorkerId) -> Result<Lease, LeaseWriteError> {
        LeaseOps(self).take(lease, new_owner).await
    }

    async fn release(&self, lease: &Lease) -> Result<Lease, LeaseWriteError> {
        LeaseOps(self).release(lease).await
    }

    async fn checkpoint(
        &self,
        lease: &Lease,
        position: &ExtendedSequenceNumber,
    ) -> Result<Lease, LeaseWriteError> {
        LeaseOps(self).checkpoint(lease, position).await
    }

    async fn update_children(
        &self,
        lease: &Lease,
        children: &[ShardId],
    ) -> Result<Lease, LeaseWriteError> {
        LeaseOps(self).update_children(lease, children).await
    }

    async fn delete(&self, lease: &Lease) -> Result<(), LeaseWriteError> {
        LeaseOps(self).delete(lease).await
    }
}

/// Placeholders for an expression: every attribute name goes through `#n<i>` (some lease
/// attribute names could collide with DynamoDB reserved words) and every value through `:v<i>`.
#[derive(Default)]
struct Expression {
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Expression {
    fn name(&mut self, attribute: &str) -> String {
        if let Some((placeholder, _)) = self.names.iter().find(|(_, a)| *a == attribute) {
            return placeholder.clone();
        }
        let placeholder = format!("#n{}", self.names.len());
        self.names.insert(placeholder.clone(), attribute.to_owned());
        placeholder
    }

    fn value(&mut self, value: RawValue) -> String {
        let placeholder = format!(":v{}", self.values.len());
        self.values.insert(placeholder.clone(), to_sdk_value(value));
        placeholder
    }

    fn condition(&mut self, condition: &Condition) -> String {
        let counter = self.name(item::LEASE_COUNTER);
        let expected = self.value(item::number(condition.counter));
        let mut text = format!("{counter} = {expected}");
        match &condition.owner {
            OwnerCondition::Any => {}
            OwnerCondition::Is(owner) => {
                let name = self.name(item::LEASE_OWNER);
                let value = self.value(RawValue::S(owner.as_str().to_owned()));
                let _ = write!(text, " AND {name} = {value}");
            }
            OwnerCondition::Absent => {
                let name = self.name(item::LEASE_OWNER);
                let _ = write!(text, " AND attribute_not_exists({name})");
            }
        }
        text
    }
}

fn is_condition_failed<E: ProvideErrorMetadata>(err: &SdkError<E>) -> bool {
    err.code() == Some("ConditionalCheckFailedException")
}

fn other(
    operation: &'static str,
    err: impl std::error::Error + Send + Sync + 'static,
) -> LeaseStoreError {
    LeaseStoreError::Other { operation, source: err.into() }
}

/// Classifies an SDK failure (DynamoDB error codes from the DynamoDB API reference, "Common
/// errors" and each operation's errors).
fn store_error<E>(operation: &'static str, table: &str, err: SdkError<E>) -> LeaseStoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if let Some(refused) = endpoint::refusal_in(&err) {
        // Nothing was signed or sent; trying again cannot help.
        return LeaseStoreError::Other { operation, source: Box::new(refused.clone()) };
    }
    let status = err.raw_response().map(|r| r.status().as_u16());
    match &err {
        SdkError::ServiceError(_) => match err.code() {
            Some(
                "ProvisionedThroughputExceededException"
                | "ThrottlingException"
                | "RequestLimitExceeded"
                | "LimitExceededException",
            ) => LeaseStoreError::Throttled { operation, source: err.into() },
            Some("ResourceNotFoundException") => {
                LeaseStoreError::TableNotFound { table: table.to_owned() }
            }
            Some(
                "AccessDeniedException"
                | "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "MissingAuthenticationTokenException"
                | "IncompleteSignatureException"
                | "ExpiredTokenException",
            ) => LeaseStoreError::AccessDenied { operation, source: err.into() },
            Some("InternalServerError" | "ServiceUnavailable" | "InternalFailure") => {
                LeaseStoreError::Transient { operation, source: err.into() }
            }
            _ if status.is_some_and(|s| s >= 500) => {
                LeaseStoreError::Transient { operation, source: err.into() }
            }
            _ if status == Some(403) => {
                LeaseStoreError::AccessDenied { operation, source: err.into() }
            }
            _ => LeaseStoreError::Other { operation, source: err.into() },
        },
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            LeaseStoreError::Transient { operation, source: err.into() }
        }
        SdkError::DispatchFailure(_) if kinesis_common::api::sdk::is_credentials_error(&err) => {
            LeaseStoreError::AccessDenied { operation, source: Box::new(NoCredentials(err.into())) }
        }
        SdkError::DispatchFailure(failure) if !failure.is_user() => {
            LeaseStoreError::Transient { operation, source: err.into() }
        }
        _ => LeaseStoreError::Other { operation, source: err.into() },
    }
}

/// A call that could not be signed for want of credentials; the SDK's reason is the source.
#[derive(Debug, thiserror::Error)]
#[error(
    "no usable AWS credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile, or a \
     role, or give the SdkConfig a credentials provider)"
)]
struct NoCredentials(#[source] Box<dyn std::error::Error + Send + Sync>);

fn from_sdk_value(value: AttributeValue) -> RawValue {
    match value {
        AttributeValue::S(s) => RawValue::S(s),
        AttributeValue::N(n) => RawValue::N(n),
        AttributeValue::Ss(set) => RawValue::Ss(set),
        AttributeValue::Ns(set) => RawValue::Ns(set),
        AttributeValue::B(blob) => RawValue::B(blob.into_inner()),
        AttributeValue::Bool(b) => RawValue::Bool(b),
        AttributeValue::Null(_) => RawValue::Null,
        AttributeValue::L(_) => RawValue::Other("a list (L)"),
        AttributeValue::M(_) => RawValue::Other("a map (M)"),
        AttributeValue::Bs(_) => RawValue::Other("a binary set (BS)"),
        _ => RawValue::Other("an unknown type"),
    }
}

fn to_sdk_value(value: RawValue) -> AttributeValue {
    match value {
        RawValue::S(s) => AttributeValue::S(s),
        RawValue::N(n) => AttributeValue::N(n),
        RawValue::Ss(set) => AttributeValue::Ss(set),
        RawValue::Ns(set) => AttributeValue::Ns(set),
        RawValue::B(bytes) => AttributeValue::B(Blob::new(bytes)),
        RawValue::Bool(b) => AttributeValue::Bool(b),
        // Only this module's own values are written, and it never writes these.
        RawValue::Null | RawValue::Other(_) => AttributeValue::Null(true),
    }
}

fn from_sdk_item(item: HashMap<String, AttributeValue>) -> RawItem {
    item.into_iter().map(|(k, v)| (k, from_sdk_value(v))).collect()
}

fn to_sdk_item(item: RawItem) -> HashMap<String, AttributeValue> {
    item.into_iter().map(|(k, v)| (k, to_sdk_value(v))).collect()
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    fn config(endpoint: &str) -> aws_types::SdkConfig {
        aws_types::SdkConfig::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_types::region::Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .credentials_provider(aws_types::sdk_config::SharedCredentialsProvider::new(
                aws_sdk_dynamodb::config::Credentials::new("id", "secret", None, None, "test"),
            ))
            .build()
    }

    /// A listener on loopback and a plain-HTTP URL for it whose host is not loopback:
    /// `0.0.0.0`, which Linux routes to the loopback interface.
    fn listener() -> (TcpListener, String) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://0.0.0.0:{}", listener.local_addr().unwrap().port());
        (listener, url)
    }

    #[tokio::test]
    async fn plain_http_to_a_host_that_is_not_loopback_is_refused_before_anything_is_sent() {
        let (listener, endpoint) = listener();
        let store = DynamoLeaseStore::new(&config(&endpoint), "leases");
        let error = store.create_table_if_missing().await.unwrap_err();
        assert!(matches!(error, LeaseStoreError::Other { operation: "DescribeTable", .. }));
        assert!(!error.is_retryable());
        let source = std::error::Error::source(&error).map(ToString::to_string);
        assert_eq!(
            source.as_deref(),
            Some(
                format!(
                    "plain HTTP endpoint {endpoint} refused: use https, a loopback emulator, or \
                     DynamoLeaseStore::allow_plain_http()"
                )
                .as_str()
            )
        );
        // A refused call returns only after it would have connected: nothing is waiting.
        listener.set_nonblocking(true).unwrap();
        let accepted = listener.accept().map(drop).map_err(|e| e.kind());
        assert_eq!(accepted, Err(std::io::ErrorKind::WouldBlock), "nothing may connect");
    }

    #[tokio::test]
    async fn allow_plain_http_sends_to_any_host() {
        let (listener, endpoint) = listener();
        let store = DynamoLeaseStore::new(&config(&endpoint), "leases")
            .allow_plain_http()
            .with_table_active_timeout(Duration::from_secs(1));
        let call = tokio::spawn(async move { store.create_table_if_missing().await });
        // The request arrives: the guard let it through.
        tokio::task::spawn_blocking(move || listener.accept().unwrap()).await.unwrap();
        call.abort();
    }
}
