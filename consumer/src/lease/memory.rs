//! [`InMemoryLeaseStore`]: the lease table in memory, for tests of the lease coordinator,
//! the shard consumer and the checkpointer (behind the `test-util` feature).
//!
//! It keeps raw items exactly as DynamoDB would (so unknown attributes survive, and a test can
//! plant a malformed or KCL-written item), evaluates the same conditions and applies the same
//! updates as the DynamoDB adapter, and runs the same lease logic (`table.rs`). The contract
//! suite checks that it behaves like DynamoDB Local. Deterministic: no clocks, no randomness;
//! faults happen exactly where a test injects them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use kinesis_common::{ExtendedSequenceNumber, ShardId};

use super::contract::RawTable;
use super::error::{LeaseStoreError, LeaseWriteError, Message};
use super::item::{self, RawItem};
use super::table::{Condition, LeaseOps, Table, TableError, Update};
use super::{CreateOutcome, Lease, LeaseScan, LeaseStore, WorkerId};

/// A DynamoDB operation of the in-memory store, for fault injection and call counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Operation {
    /// DescribeTable / CreateTable.
    CreateTable,
    /// GetItem.
    GetItem,
    /// One Scan page.
    Scan,
    /// PutItem (create if absent).
    PutItem,
    /// UpdateItem (renew, take, release, checkpoint, update children).
    UpdateItem,
    /// DeleteItem.
    DeleteItem,
}

impl Operation {
    fn name(self) -> &'static str {
        match self {
            Self::CreateTable => "CreateTable",
            Self::GetItem => "GetItem",
            Self::Scan => "Scan",
            Self::PutItem => "PutItem",
            Self::UpdateItem => "UpdateItem",
            Self::DeleteItem => "DeleteItem",
        }
    }
}

/// A failure to inject into the next call of an [`Operation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// The call is refused for capacity; nothing is written.
    Throttled,
    /// The call fails with a 5xx; nothing is written.
    Transient,
    /// The write is applied, then its answer is lost and the SDK's retry fails the condition:
    /// the caller sees a failed condition although its write succeeded.
    AppliedThenConditionFailed,
    /// The write is applied, then the call fails with a 5xx (retries exhausted).
    AppliedThenTransient,
}

#[derive(Debug, Default)]
struct State {
    table_exists: bool,
    /// The key schema when a test made the table with the wrong one.
    wrong_schema: Option<String>,
    items: BTreeMap<String, RawItem>,
    faults: HashMap<Operation, VecDeque<Fault>>,
    calls: HashMap<Operation, u64>,
}

/// The lease table in memory. See the module docs.
#[derive(Debug)]
pub struct InMemoryLeaseStore {
    state: Mutex<State>,
    scan_page_size: usize,
}

impl Default for InMemoryLeaseStore {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryLeaseStore {
    /// A store whose table does not exist yet (as with a fresh DynamoDB table name): call
    /// [`LeaseStore::create_table_if_missing`] first, or use [`InMemoryLeaseStore::with_table`].
    pub fn new() -> Self {
        Self { state: Mutex::new(State::default()), scan_page_size: 100 }
    }

    /// A store whose table exists and is empty.
    pub fn with_table() -> Self {
        let store = Self::new();
        store.lock().table_exists = true;
        store
    }

    /// Scans return at most `items` items per page (DynamoDB pages at 1 MB), so tests can
    /// cover pagination.
    pub fn with_scan_page_size(mut self, items: usize) -> Self {
        self.scan_page_size = items.max(1);
        self
    }

    /// The next call of `operation` fails with `fault`. Faults queue up per operation.
    pub fn inject(&self, operation: Operation, fault: Fault) {
        self.lock().faults.entry(operation).or_default().push_back(fault);
    }

    /// Deletes the table and every item in it, as `DeleteTable` would: later calls answer
    /// [`LeaseStoreError::TableNotFound`] until the table is created again.
    pub fn delete_table(&self) {
        let mut state = self.lock();
        state.table_exists = false;
        state.items.clear();
    }

    /// How many calls of `operation` were made (including failed ones).
    pub fn calls(&self, operation: Operation) -> u64 {
        self.lock().calls.get(&operation).copied().unwrap_or(0)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the store from the test's own assertions.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts the call, checks the table, and takes the next injected fault of `op`.
    fn begin(
        &self,
        op: Operation,
    ) -> Result<(MutexGuard<'_, State>, Option<Fault>), LeaseStoreError> {
        let mut state = self.lock();
        *state.calls.entry(op).or_default() += 1;
        let fault = state.faults.get_mut(&op).and_then(VecDeque::pop_front);
        match fault {
            Some(Fault::Throttled) => {
                return Err(LeaseStoreError::Throttled {
                    operation: op.name(),
                    source: Message("injected throttling".into()).into(),
                });
            }
            Some(Fault::Transient) => return Err(transient(op)),
            _ => {}
        }
        if op != Operation::CreateTable && !state.table_exists {
            return Err(LeaseStoreError::TableNotFound { table: "in-memory".into() });
        }
        Ok((state, fault))
    }
}

fn transient(op: Operation) -> LeaseStoreError {
    LeaseStoreError::Transient {
        operation: op.name(),
        source: Message("injected HTTP 500".into()).into(),
    }
}

/// What an applied write answers when a fault says its answer is lost.
fn after_applied<T>(op: Operation, fault: Option<Fault>, answer: T) -> Result<T, TableError> {
    match fault {
        Some(Fault::AppliedThenConditionFailed) => Err(TableError::ConditionFailed),
        Some(Fault::AppliedThenTransient) => Err(TableError::Store(transient(op))),
        _ => Ok(answer),
    }
}

#[async_trait]
impl Table for InMemoryLeaseStore {
    async fn get_item(&self, key: &ShardId) -> Result<Option<RawItem>, LeaseStoreError> {
        let (state, _) = self.begin(Operation::GetItem)?;
        Ok(state.items.get(key.as_str()).cloned())
    }

    async fn scan_items(&self) -> Result<Vec<RawItem>, LeaseStoreError> {
        // Page by page, each page a separate call, as the DynamoDB adapter does: a fault can
        // hit any page.
        let mut items = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let (state, _) = self.begin(Operation::Scan)?;
            let page: Vec<(&String, &RawItem)> = state
                .items
                .iter()
                .filter(|(k, _)| start.as_ref().is_none_or(|s| *k > s))
                .take(self.scan_page_size)
                .collect();
            let full = page.len() == self.scan_page_size;
            start = page.last().map(|(k, _)| (*k).clone());
            items.extend(page.into_iter().map(|(_, v)| v.clone()));
            if !full || start.is_none() {
                return Ok(items);
            }
        }
    }

    async fn put_item_if_absent(&self, item: RawItem) -> Result<CreateOutcome, LeaseStoreError> {
        let (mut state, fault) = self.begin(Operation::PutItem)?;
        let key = item::key_text(&item);
        if state.items.contains_key(&key) {
            return Ok(CreateOutcome::AlreadyExists);
        }
        state.items.insert(key, item);
        match fault {
            // The first attempt wrote it; the retry finds it: the caller hears "exists".
            Some(Fault::AppliedThenConditionFailed) => Ok(CreateOutcome::AlreadyExists),
            Some(Fault::AppliedThenTransient) => Err(transient(Operation::PutItem)),
            _ => Ok(CreateOutcome::Created),
        }
    }

    async fn update_item(
        &self,
        key: &ShardId,
        condition: &Condition,
        update: &Update,
    ) -> Result<RawItem, TableError> {
        let (mut state, fault) = self.begin(Operation::UpdateItem)?;
        let Some(item) = state.items.get_mut(key.as_str()) else {
            return Err(TableError::ConditionFailed);
        };
        if !condition.holds(item) {
            return Err(TableError::ConditionFailed);
        }
        update.apply(item);
        let answer = item.clone();
        after_applied(Operation::UpdateItem, fault, answer)
    }

    async fn delete_item(&self, key: &ShardId, condition: &Condition) -> Result<(), TableError> {
        let (mut state, fault) = self.begin(Operation::DeleteItem)?;
        match state.items.get(key.as_str()) {
            Some(item) if condition.holds(item) => {
                state.items.remove(key.as_str());
                after_applied(Operation::DeleteItem, fault, ())
            }
            _ => Err(TableError::ConditionFailed),
        }
    }
}

#[async_trait]
impl LeaseStore for InMemoryLeaseStore {
    async fn create_table_if_missing(&self) -> Result<CreateOutcome, LeaseStoreError> {
        let (mut state, _) = self.begin(Operation::CreateTable)?;
        if let Some(found) = &state.wrong_schema {
            return Err(LeaseStoreError::WrongSchema {
                table: "in-memory".into(),
                found: found.clone(),
            });
        }
        if state.table_exists {
            Ok(CreateOutcome::AlreadyExists)
        } else {
            state.table_exists = true;
            Ok(CreateOutcome::Created)
        }
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

#[async_trait]
impl RawTable for InMemoryLeaseStore {
    async fn put_raw(&self, item: RawItem) {
        let mut state = self.lock();
        state.items.insert(item::key_text(&item), item);
    }

    async fn get_raw(&self, key: &str) -> Option<RawItem> {
        self.lock().items.get(key).cloned()
    }

    async fn create_table_with_wrong_key(&self) {
        let mut state = self.lock();
        state.table_exists = true;
        state.wrong_schema = Some("[id HASH (N)]".into());
    }
}
