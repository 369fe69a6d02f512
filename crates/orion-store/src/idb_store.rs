//! [`IdbStore`]: the [`Store`] in IndexedDB.

use idb::{Database, TransactionMode};
use orion_core::embedding::LocalBoxFuture;
use orion_core::store::{
    check_scan, Fields, Guard, Guarded, QuotaRelief, Relief, Row, Scan, Snapshot, SnapshotVisitor,
    Store, Table, WriteOp,
};
use orion_core::Error;
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{IdbKeyRange, IdbObjectStore, IdbTransaction};

use crate::dom::{self, Outcome, Pending};
use crate::{row, schema};

/// ORION's tables in an IndexedDB database (see the crate docs for the schema and its history).
///
/// Every call is one transaction. The connection closes when the store is dropped, and also when
/// another connection asks for a newer version or deletes the database (so that it is not
/// blocked); calls after that fail with [`Error::Store`].
#[derive(Debug)]
pub struct IdbStore {
    database: Database,
    /// What a write that lacks quota runs before its one retry ([`Store::set_quota_relief`]).
    relief: QuotaRelief,
}

impl IdbStore {
    /// Opens the database `name` (ORION's is `orion`), creating it or upgrading it to
    /// [`SCHEMA_VERSION`](crate::SCHEMA_VERSION) in IndexedDB's upgrade transaction.
    ///
    /// Fails with [`Error::Store`] when IndexedDB is unavailable, the database has a newer version
    /// (a newer ORION wrote it) or lacks an object store or index this version needs.
    pub async fn open(name: &str) -> Result<IdbStore, Error> {
        Ok(Self {
            relief: QuotaRelief::default(),
            database: schema::open(name).await?,
        })
    }

    /// The database's name.
    pub fn name(&self) -> String {
        self.database.name()
    }

    /// A transaction over `tables` (deduplicated: IndexedDB refuses a repeated store name).
    fn transaction(
        &self,
        tables: impl IntoIterator<Item = Table>,
        mode: TransactionMode,
    ) -> Result<IdbTransaction, Error> {
        let mut names: Vec<&str> = tables.into_iter().map(Table::name).collect();
        names.sort_unstable();
        names.dedup();
        self.database
            .transaction(&names, mode)
            .map(IdbTransaction::from)
            .map_err(|error| dom::idb_error("starting a transaction", error))
    }

    async fn get_rows(&self, table: Table, ids: Vec<String>) -> Result<Vec<Option<Row>>, Error> {
        if ids.is_empty() {
            // IndexedDB has no use for a transaction without requests.
            return Ok(Vec::new());
        }
        let transaction = self.transaction([table], TransactionMode::ReadOnly)?;
        let store = object_store(&transaction, table)?;
        // Every request is placed before the first is awaited: one round of the event loop.
        let pending = ids
            .iter()
            .map(|id| {
                store
                    .get(&JsValue::from_str(id))
                    .map(Pending::new)
                    .map_err(|error| dom::thrown(&format!("reading `{}`", table.name()), &error))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut rows = Vec::with_capacity(pending.len());
        for request in pending {
            let record = request
                .result(&format!("reading `{}`", table.name()))
                .await?;
            rows.push(if record.is_undefined() {
                None
            } else {
                Some(row::from_js(table.name(), &record)?)
            });
        }
        Ok(rows)
    }

    async fn scan_rows(&self, table: Table, scan: Scan) -> Result<Vec<Row>, Error> {
        check_scan(table, &scan)?;
        if scan.limit == 0 {
            // getAll's count 0 means "no limit".
            return Ok(Vec::new());
        }
        let limit = u32::try_from(scan.limit).unwrap_or(u32::MAX);
        let context = format!("scanning `{}`", table.name());
        let transaction = self.transaction([table], TransactionMode::ReadOnly)?;
        let store = object_store(&transaction, table)?;
        let request = match &scan.index {
            None => {
                let range = ids_after(scan.after.as_deref(), &context)?;
                store.get_all_with_key_and_limit(&range, limit)
            }
            Some((field, value)) => {
                let index = store
                    .index(&schema::index_name(field))
                    .map_err(|error| dom::thrown(&context, &error))?;
                // Index keys are `[value, id]`; `[value]` sorts before all of them and
                // `[value, []]` after all of them (arrays sort after strings).
                let lower = match &scan.after {
                    Some(after) => key(&[value.into(), after.into()]),
                    None => key(&[value.into()]),
                };
                let upper = key(&[value.into(), js_sys::Array::new().into()]);
                let range = IdbKeyRange::bound_with_lower_open_and_upper_open(
                    &lower,
                    &upper,
                    scan.after.is_some(),
                    false,
                )
                .map_err(|error| dom::thrown(&context, &error))?;
                index.get_all_with_key_and_limit(&range, limit)
            }
        }
        .map_err(|error| dom::thrown(&context, &error))?;
        let records = Pending::new(request).result(&context).await?;
        records_to_rows(table, &records, scan.fields)
    }

    async fn count_rows(&self, table: Table) -> Result<u64, Error> {
        let context = format!("counting `{}`", table.name());
        let transaction = self.transaction([table], TransactionMode::ReadOnly)?;
        count_of(&object_store(&transaction, table)?, &context).await
    }

    /// One read transaction: the count, then `chunk` rows per `getAll` after the last id read.
    /// `visitor` runs between the requests, synchronously, so the transaction stays active; the
    /// worker answers other messages while each request is in flight.
    async fn visit_rows(
        &self,
        table: Table,
        chunk: usize,
        visitor: &mut dyn SnapshotVisitor,
    ) -> Result<(), Error> {
        let context = format!("reading `{}`", table.name());
        let transaction = self.transaction([table], TransactionMode::ReadOnly)?;
        let store = object_store(&transaction, table)?;
        visitor.count(count_of(&store, &context).await?)?;
        let limit = u32::try_from(chunk.max(1)).unwrap_or(u32::MAX);
        let mut after: Option<String> = None;
        loop {
            let range = ids_after(after.as_deref(), &context)?;
            let request = store
                .get_all_with_key_and_limit(&range, limit)
                .map_err(|error| dom::thrown(&context, &error))?;
            let records = Pending::new(request).result(&context).await?;
            let rows = records_to_rows(table, &records, None)?;
            let full = rows.len() >= chunk.max(1);
            after = rows.last().map(|row| row.id.clone());
            if !rows.is_empty() {
                visitor.rows(rows)?;
            }
            if !full {
                return Ok(());
            }
        }
    }

    async fn write_ops(&self, ops: Vec<WriteOp>) -> Result<(), Error> {
        if ops.is_empty() {
            // Nothing to commit, and IndexedDB refuses a transaction over no object store.
            return Ok(());
        }
        let count = ops.len();
        // What was converted is kept, so a retry after freeing space copies nothing again.
        let mut converted = Vec::with_capacity(count);
        match self.write_paced(ops, &mut converted).await {
            Err(error @ Error::Quota(_)) if converted.len() == count => {
                self.relief
                    .retry(error, || self.write_converted(&converted))
                    .await
            }
            other => other,
        }
    }

    /// One transaction: each write converted, then placed, in order. Once the writes placed
    /// since the last pause weigh [`PACE_BYTES`], the last one is awaited before going on (the
    /// transaction stays active: a request is in flight), so a large batch (a backup's parts)
    /// lets the worker answer other requests instead of converting and cloning it all at once.
    /// A write JS cannot hold, or a failed request, aborts the transaction: nothing is written.
    async fn write_paced(
        &self,
        ops: Vec<WriteOp>,
        converted: &mut Vec<(Table, Change)>,
    ) -> Result<(), Error> {
        let transaction = self.transaction(
            ops.iter().map(WriteOp::table).collect::<Vec<_>>(),
            TransactionMode::ReadWrite,
        )?;
        let outcome = Outcome::new(&transaction);
        let mut weight = 0;
        for op in ops {
            weight += weight_of(&op);
            let placed = convert_one(op).and_then(|change| {
                let request = place_one(&transaction, &change);
                converted.push(change);
                request
            });
            let request = match placed {
                Ok(request) => request,
                Err(error) => {
                    outcome.abort(&transaction).await;
                    return Err(error);
                }
            };
            if weight >= PACE_BYTES {
                weight = 0;
                // A failed request aborts the transaction by default; its outcome says why.
                if Pending::new(request).result("writing").await.is_err() {
                    break;
                }
            }
        }
        outcome.committed(&transaction).await
    }

    /// One transaction of converted writes, all placed at once: all of them or, on `Err`, none.
    async fn write_converted(&self, ops: &[(Table, Change)]) -> Result<(), Error> {
        let transaction = self.transaction(
            ops.iter().map(|(table, _)| *table),
            TransactionMode::ReadWrite,
        )?;
        let outcome = Outcome::new(&transaction);
        // Requests run in the order they are placed, all in this transaction. None is awaited:
        // a failed request aborts the transaction by default (nothing here cancels its error
        // event), and the abort reports the request's error in `IDBTransaction.error`.
        if let Err(error) = place(&transaction, ops) {
            // A request IndexedDB refused outright.
            outcome.abort(&transaction).await;
            return Err(error);
        }
        outcome.committed(&transaction).await
    }

    /// A patch is a guarded write that expects nothing: a missing row is skipped, never created.
    async fn patch_rows(
        &self,
        table: Table,
        patches: Vec<(String, Map<String, Value>)>,
    ) -> Result<(), Error> {
        let changes = patches
            .into_iter()
            .map(|(id, fields)| Guarded {
                id,
                expect: Vec::new(),
                merge: Some(
                    fields
                        .into_iter()
                        .map(|(name, value)| (name.into(), value))
                        .collect(),
                ),
                read_back: false,
            })
            .collect();
        self.write_guarded_rows(table, changes, Vec::new())
            .await
            .map(drop)
    }

    async fn write_guarded_rows(
        &self,
        table: Table,
        changes: Vec<Guarded>,
        then: Vec<WriteOp>,
    ) -> Result<Vec<Guard>, Error> {
        if changes.is_empty() {
            return self.write_ops(then).await.map(|()| Vec::new());
        }
        let context = format!("writing `{}`", table.name());
        // Converted first, so a value JS cannot hold fails before anything is written.
        let then = convert(then)?;
        let changes = changes
            .into_iter()
            .map(|change| {
                let merge = change
                    .merge
                    .map(|fields| row::fields_to_js(&change.id, &fields))
                    .transpose()?;
                Ok(GuardedJs {
                    id: change.id,
                    expect: change.expect,
                    merge,
                    read_back: change.read_back,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let tables = std::iter::once(table).chain(then.iter().map(|(table, _)| *table));
        let transaction = self.transaction(tables, TransactionMode::ReadWrite)?;
        let outcome = Outcome::new(&transaction);
        let store = object_store(&transaction, table)?;
        let outcomes: Rc<RefCell<Vec<Option<Guard>>>> =
            Rc::new(RefCell::new(vec![None; changes.len()]));
        let failure: Rc<RefCell<Option<Error>>> = Rc::new(RefCell::new(None));
        let mut then = Some(then);
        let last = changes.len() - 1;
        // Each row is read, checked and changed from its request's success event, where the
        // transaction is still active: no other transaction can change it in between. `then` is
        // placed from the last one's, after every change. The callbacks live until the
        // transaction has finished.
        let mut callbacks = Vec::with_capacity(changes.len());
        for (i, mut change) in changes.into_iter().enumerate() {
            let request = store
                .get(&JsValue::from_str(&change.id))
                .map_err(|error| dom::thrown(&context, &error))?;
            let on_success = {
                let request = request.clone();
                let store = store.clone();
                let transaction = transaction.clone();
                let outcomes = Rc::clone(&outcomes);
                let failure = Rc::clone(&failure);
                let context = context.clone();
                let mut then = if i == last { then.take() } else { None };
                Closure::<dyn FnMut()>::new(move || {
                    let decided = guard_one(&store, &request, table, &mut change, &context)
                        .and_then(|guard| match then.take() {
                            Some(then) => place(&transaction, &then).map(|()| guard),
                            None => Ok(guard),
                        });
                    match decided {
                        Ok(guard) => {
                            if let Some(slot) = outcomes.borrow_mut().get_mut(i) {
                                *slot = Some(guard);
                            }
                        }
                        Err(error) => {
                            failure.borrow_mut().get_or_insert(error);
                            let _ = transaction.abort();
                        }
                    }
                })
            };
            request.set_onsuccess(Some(on_success.as_ref().unchecked_ref()));
            callbacks.push(on_success);
        }
        let committed = outcome.committed(&transaction).await;
        drop(callbacks);
        if let Some(error) = failure.borrow_mut().take() {
            return Err(error);
        }
        committed?;
        let outcomes = std::mem::take(&mut *outcomes.borrow_mut());
        outcomes
            .into_iter()
            .map(|guard| {
                guard.ok_or_else(|| Error::Store(format!("{context}: a row was never read")))
            })
            .collect()
    }

    async fn snapshot_tables(&self, tables: Vec<Table>) -> Result<Snapshot, Error> {
        if tables.is_empty() {
            return Ok(Vec::new());
        }
        let transaction = self.transaction(tables.iter().copied(), TransactionMode::ReadOnly)?;
        let pending = tables
            .iter()
            .map(|table| {
                object_store(&transaction, *table)?
                    .get_all()
                    .map(Pending::new)
                    .map_err(|error| dom::thrown(&format!("reading `{}`", table.name()), &error))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut snapshot = Vec::with_capacity(tables.len());
        for (table, request) in tables.into_iter().zip(pending) {
            let records = request
                .result(&format!("reading `{}`", table.name()))
                .await?;
            snapshot.push((table, records_to_rows(table, &records, None)?));
        }
        Ok(snapshot)
    }
}

impl Drop for IdbStore {
    /// Closes the connection (once its transactions finish), so that it does not block another
    /// connection's upgrade or deletion of the database.
    fn drop(&mut self) {
        self.database.close();
    }
}

/// The key range of the ids after `after` (every id without one).
fn ids_after(after: Option<&str>, context: &str) -> Result<JsValue, Error> {
    match after {
        Some(after) => IdbKeyRange::lower_bound_with_open(&after.into(), true)
            .map(Into::into)
            .map_err(|error| dom::thrown(context, &error)),
        None => Ok(JsValue::UNDEFINED),
    }
}

/// The number of rows in `store`.
async fn count_of(store: &IdbObjectStore, context: &str) -> Result<u64, Error> {
    let request = store
        .count()
        .map_err(|error| dom::thrown(context, &error))?;
    let count = Pending::new(request).result(context).await?;
    match count.as_f64() {
        Some(count) if count >= 0.0 && count.fract() == 0.0 => Ok(count as u64),
        _ => Err(Error::Store(format!("{context}: the count is {count:?}"))),
    }
}

/// One write, ready for IndexedDB.
enum Change {
    Put(JsValue),
    Delete(JsValue),
    Clear,
}

/// Write operations as requests to place: a row JS cannot hold fails here, before a transaction.
fn convert(ops: Vec<WriteOp>) -> Result<Vec<(Table, Change)>, Error> {
    ops.into_iter().map(convert_one).collect()
}

fn convert_one(op: WriteOp) -> Result<(Table, Change), Error> {
    Ok(match op {
        WriteOp::Put(table, row) => (table, Change::Put(row::to_js(&row)?)),
        WriteOp::Delete(table, id) => (table, Change::Delete(JsValue::from_str(&id))),
        WriteOp::Clear(table) => (table, Change::Clear),
    })
}

/// Bytes of writes [`IdbStore::write_paced`] places between two pauses: a few ms of work.
const PACE_BYTES: usize = 4 << 20;

/// Roughly what a write costs to convert and clone: the bytes of its strings, vectors and bytes.
fn weight_of(op: &WriteOp) -> usize {
    match op {
        WriteOp::Put(_, row) => {
            let strings: usize = row
                .fields
                .values()
                .map(|value| match value {
                    Value::String(text) => text.len(),
                    _ => 8,
                })
                .sum();
            let vectors: usize = row.vectors.values().map(|v| v.len() * 4).sum();
            let bytes: usize = row.bytes.values().map(Vec::len).sum();
            row.id.len() + strings + vectors + bytes
        }
        WriteOp::Delete(_, id) => id.len(),
        WriteOp::Clear(_) => 0,
    }
}

/// A [`Guarded`] change ready for IndexedDB: the fields to merge as a JS object.
struct GuardedJs {
    id: String,
    expect: Fields,
    /// `None`: delete the row.
    merge: Option<JsValue>,
    read_back: bool,
}

/// Checks the row a guarded change's `get` read and, if it matches, changes it (see
/// [`Store::write_guarded`]).
fn guard_one(
    store: &IdbObjectStore,
    request: &web_sys::IdbRequest,
    table: Table,
    change: &mut GuardedJs,
    context: &str,
) -> Result<Guard, Error> {
    let record = request
        .result()
        .map_err(|error| dom::thrown(context, &error))?;
    if record.is_undefined() {
        return Ok(Guard::Missing);
    }
    if !change
        .expect
        .iter()
        .all(|(name, value)| row::field_equals(&record, name, value))
    {
        return row::from_js(table.name(), &record).map(Guard::Refused);
    }
    match change.merge.take() {
        Some(fields) => {
            let merged: js_sys::Object = js_sys::Object::assign(
                record.unchecked_ref::<js_sys::Object>(),
                fields.unchecked_ref::<js_sys::Object>(),
            );
            store
                .put(&merged)
                .map_err(|error| dom::thrown(context, &error))?;
            let back = if change.read_back {
                Some(row::from_js(table.name(), &merged)?)
            } else {
                None
            };
            Ok(Guard::Applied(back))
        }
        None => {
            store
                .delete(&JsValue::from_str(&change.id))
                .map_err(|error| dom::thrown(context, &error))?;
            Ok(Guard::Applied(None))
        }
    }
}

/// Places every request of a write batch, in order.
fn place(transaction: &IdbTransaction, ops: &[(Table, Change)]) -> Result<(), Error> {
    for change in ops {
        place_one(transaction, change)?;
    }
    Ok(())
}

fn place_one(
    transaction: &IdbTransaction,
    (table, change): &(Table, Change),
) -> Result<web_sys::IdbRequest, Error> {
    let store = object_store(transaction, *table)?;
    match change {
        Change::Put(record) => store.put(record),
        Change::Delete(id) => store.delete(id),
        Change::Clear => store.clear(),
    }
    .map_err(|error| dom::thrown(&format!("writing `{}`", table.name()), &error))
}

fn object_store(transaction: &IdbTransaction, table: Table) -> Result<IdbObjectStore, Error> {
    transaction
        .object_store(table.name())
        .map_err(|error| dom::thrown(&format!("opening `{}`", table.name()), &error))
}

/// A JS array, as a compound key.
fn key(parts: &[JsValue]) -> JsValue {
    parts.iter().collect::<js_sys::Array>().into()
}

/// A getAll result (an array of records) as rows.
fn records_to_rows(
    table: Table,
    records: &JsValue,
    fields: Option<&[&str]>,
) -> Result<Vec<Row>, Error> {
    if !js_sys::Array::is_array(records) {
        return Err(Error::Store(format!(
            "reading `{}`: getAll did not return an array",
            table.name()
        )));
    }
    js_sys::Array::from(records)
        .iter()
        .map(|record| row::from_js_fields(table.name(), &record, fields))
        .collect()
}

impl Store for IdbStore {
    fn get(
        &self,
        table: Table,
        ids: Vec<String>,
    ) -> LocalBoxFuture<'_, orion_core::error::Result<Vec<Option<Row>>>> {
        Box::pin(self.get_rows(table, ids))
    }

    fn scan(
        &self,
        table: Table,
        scan: Scan,
    ) -> LocalBoxFuture<'_, orion_core::error::Result<Vec<Row>>> {
        Box::pin(self.scan_rows(table, scan))
    }

    fn count(&self, table: Table) -> LocalBoxFuture<'_, orion_core::error::Result<u64>> {
        Box::pin(self.count_rows(table))
    }

    fn write(&self, ops: Vec<WriteOp>) -> LocalBoxFuture<'_, orion_core::error::Result<()>> {
        Box::pin(self.write_ops(ops))
    }

    fn set_quota_relief(&self, relief: Relief) {
        self.relief.set(relief);
    }

    fn patch(
        &self,
        table: Table,
        patches: Vec<(String, Map<String, Value>)>,
    ) -> LocalBoxFuture<'_, orion_core::error::Result<()>> {
        Box::pin(self.patch_rows(table, patches))
    }

    fn snapshot(
        &self,
        tables: Vec<Table>,
    ) -> LocalBoxFuture<'_, orion_core::error::Result<Snapshot>> {
        Box::pin(self.snapshot_tables(tables))
    }

    fn visit_snapshot<'a>(
        &'a self,
        table: Table,
        chunk: usize,
        visitor: &'a mut dyn SnapshotVisitor,
    ) -> LocalBoxFuture<'a, orion_core::error::Result<()>> {
        Box::pin(self.visit_rows(table, chunk, visitor))
    }

    /// Checks and changes each row in one transaction (not the trait's read, then write).
    fn write_guarded(
        &self,
        table: Table,
        changes: Vec<Guarded>,
        then: Vec<WriteOp>,
    ) -> LocalBoxFuture<'_, orion_core::error::Result<Vec<Guard>>> {
        Box::pin(self.write_guarded_rows(table, changes, then))
    }
}
