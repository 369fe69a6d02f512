//! The storage contract: tables of rows, read in one transaction per call and written in atomic
//! batches.
//!
//! IndexedDB shapes this API. Its transactions end as soon as the code awaits anything but the
//! database, so a transaction cannot span arbitrary async work; instead every call here is one
//! transaction: [`Store::write`] applies a whole batch atomically (all of it or, on any error,
//! none of it), [`Store::snapshot`] reads whole tables consistently, [`Store::write_guarded`]
//! changes rows only if they still hold what the caller last saw (compare-and-set, checked and
//! written in one transaction). Rows are JSON objects with a
//! string `id` plus f32 vectors and byte strings, which IndexedDB stores as `Float32Array`s and
//! `Uint8Array`s (never as arrays of numbers). Implementations: [`MemStore`] here (native code and tests) and `IdbStore` in
//! `orion-store` (IndexedDB through rexie); both pass [`conformance`].

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::embedding::LocalBoxFuture;
use crate::error::{Error, Result};

mod mem;
mod quota_relief;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

pub use mem::MemStore;
pub use quota_relief::{QuotaRelief, Relief};

/// The tables of the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// What ORION remembers ([`crate::memory`]).
    Memories,
    /// Backups and their payloads.
    Backups,
    /// Background jobs.
    Jobs,
    /// Workflow checkpoints.
    Workflows,
    /// Settings, schema version, breaker states.
    Meta,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 5] = [
        Table::Memories,
        Table::Backups,
        Table::Jobs,
        Table::Workflows,
        Table::Meta,
    ];

    /// The object store's name.
    pub fn name(self) -> &'static str {
        match self {
            Table::Memories => "memories",
            Table::Backups => "backups",
            Table::Jobs => "jobs",
            Table::Workflows => "workflows",
            Table::Meta => "meta",
        }
    }

    /// The fields this table is indexed on: [`Scan::index`] may filter on them. (In IndexedDB each
    /// is a compound index `[field, id]`, so rows with one value come out ordered by id.)
    pub fn indexed_fields(self) -> &'static [&'static str] {
        match self {
            Table::Memories => &["kind"],
            Table::Backups => &["kind"],
            Table::Jobs => &["state", "name"],
            Table::Workflows => &["status"],
            Table::Meta => &[],
        }
    }
}

/// One stored record.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The primary key.
    pub id: String,
    /// The JSON fields (an `id` field here is ignored: [`Row::id`] is the key).
    pub fields: Map<String, Value>,
    /// Vector fields, stored as `Float32Array`s. Their names must not clash with `fields`.
    pub vectors: BTreeMap<String, Vec<f32>>,
    /// Byte fields, stored as `Uint8Array`s. Their names must not clash with the others.
    pub bytes: BTreeMap<String, Vec<u8>>,
}

impl Row {
    /// An empty row with key `id`.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            fields: Map::new(),
            vectors: BTreeMap::new(),
            bytes: BTreeMap::new(),
        }
    }

    /// Sets a JSON field.
    pub fn with(mut self, field: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(field.to_owned(), value.into());
        self
    }

    /// Sets a vector field.
    pub fn with_vector(mut self, field: &str, vector: Vec<f32>) -> Self {
        self.vectors.insert(field.to_owned(), vector);
        self
    }

    /// Sets a byte field.
    pub fn with_bytes(mut self, field: &str, bytes: Vec<u8>) -> Self {
        self.bytes.insert(field.to_owned(), bytes);
        self
    }

    /// A string field, or a `Store` error naming the row and field.
    pub fn str_field(&self, field: &str) -> Result<&str> {
        self.fields
            .get(field)
            .and_then(Value::as_str)
            .ok_or_else(|| self.malformed(field, "a string"))
    }

    /// A non-negative integer field, or a `Store` error naming the row and field.
    pub fn u64_field(&self, field: &str) -> Result<u64> {
        self.fields
            .get(field)
            .and_then(Value::as_u64)
            .ok_or_else(|| self.malformed(field, "a non-negative integer"))
    }

    /// A vector field, or a `Store` error naming the row and field.
    pub fn vector_field(&self, field: &str) -> Result<&[f32]> {
        self.vectors
            .get(field)
            .map(Vec::as_slice)
            .ok_or_else(|| self.malformed(field, "a Float32Array"))
    }

    /// A byte field, or a `Store` error naming the row and field.
    pub fn bytes_field(&self, field: &str) -> Result<&[u8]> {
        self.bytes
            .get(field)
            .map(Vec::as_slice)
            .ok_or_else(|| self.malformed(field, "a Uint8Array"))
    }

    fn malformed(&self, field: &str, expected: &str) -> Error {
        Error::Store(format!(
            "row `{}`: field `{field}` is missing or not {expected}",
            self.id
        ))
    }
}

/// One change in a [`Store::write`] batch.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    /// Inserts or replaces the row with this id (the whole row: absent fields are gone).
    Put(Table, Row),
    /// Deletes the row with this id, if any.
    Delete(Table, String),
    /// Deletes every row of the table.
    Clear(Table),
}

impl WriteOp {
    /// The table it changes.
    pub fn table(&self) -> Table {
        match self {
            WriteOp::Put(table, _) | WriteOp::Delete(table, _) | WriteOp::Clear(table) => *table,
        }
    }
}

/// Which rows [`Store::scan`] returns: ordered by id, those after `after`, at most `limit`.
#[derive(Debug, Clone, PartialEq)]
pub struct Scan {
    /// Only rows whose id sorts after this one (for paging: pass the last id of the previous page).
    pub after: Option<String>,
    /// At most this many rows.
    pub limit: usize,
    /// Only rows whose indexed field (one of [`Table::indexed_fields`]) equals this string.
    pub index: Option<(&'static str, String)>,
    /// Read only these fields (JSON, vector or bytes) of each row; `None` reads them all. Loading an
    /// index needs a few small fields of every row: skipping the rest saves most of the work.
    pub fields: Option<&'static [&'static str]>,
}

impl Scan {
    /// The first `limit` rows.
    pub fn first(limit: usize) -> Self {
        Self {
            after: None,
            limit,
            index: None,
            fields: None,
        }
    }

    /// Reads only `fields` of each row.
    pub fn only(mut self, fields: &'static [&'static str]) -> Self {
        self.fields = Some(fields);
        self
    }

    /// Continues after `id`.
    pub fn after(mut self, id: impl Into<String>) -> Self {
        self.after = Some(id.into());
        self
    }

    /// Filters on an indexed field.
    pub fn where_eq(mut self, field: &'static str, value: impl Into<String>) -> Self {
        self.index = Some((field, value.into()));
        self
    }
}

/// Whole tables read together: each table with its rows in id order.
pub type Snapshot = Vec<(Table, Vec<Row>)>;

/// What [`Store::visit_snapshot`] hands a table's rows to.
pub trait SnapshotVisitor {
    /// The number of rows in the snapshot, before any of them.
    fn count(&mut self, rows: u64) -> Result<()>;
    /// The next rows, in id order (never empty).
    fn rows(&mut self, rows: Vec<Row>) -> Result<()>;
}

/// Field values by name, as [`Guarded`] checks and merges them. The names are mostly the caller's
/// constants: a guarded write of a thousand rows then allocates no names.
pub type Fields = Vec<(Cow<'static, str>, Value)>;

/// A change [`Store::write_guarded`] makes to one row only if the row is still as expected: a
/// compare-and-set, so that a row another tab changed meanwhile is not overwritten.
#[derive(Debug, Clone, PartialEq)]
pub struct Guarded {
    /// The row's id.
    pub id: String,
    /// The fields the stored row must hold, with exactly these values (`null` also matches a
    /// missing field).
    pub expect: Fields,
    /// Fields to merge into the row (`Some`), or delete it (`None`).
    pub merge: Option<Fields>,
    /// Answer the row as merged ([`Guard::Applied`]).
    pub read_back: bool,
}

impl Guarded {
    /// Whether `row` is as expected.
    pub fn matches(&self, row: &Row) -> bool {
        self.expect
            .iter()
            .all(|(name, value)| row.fields.get(name.as_ref()).unwrap_or(&Value::Null) == value)
    }
}

/// What [`Store::write_guarded`] did to one row.
#[derive(Debug, Clone, PartialEq)]
pub enum Guard {
    /// Changed as asked; with the row as merged when it was asked for ([`Guarded::read_back`]).
    Applied(Option<Row>),
    /// Left alone: the row as stored did not match.
    Refused(Row),
    /// Left alone: there is no such row.
    Missing,
}

/// Tables of rows, one transaction per call. Futures are `?Send`: the worker has one thread.
pub trait Store {
    /// The rows with these ids, in the same order (`None` where there is none), read in one
    /// transaction.
    fn get(&self, table: Table, ids: Vec<String>) -> LocalBoxFuture<'_, Result<Vec<Option<Row>>>>;

    /// Rows in id order, per `scan`.
    fn scan(&self, table: Table, scan: Scan) -> LocalBoxFuture<'_, Result<Vec<Row>>>;

    /// How many rows the table has.
    fn count(&self, table: Table) -> LocalBoxFuture<'_, Result<u64>>;

    /// Applies `ops` in order in one transaction: once the future resolves `Ok`, every change is
    /// committed (durable across a page crash); on `Err`, none is. A lack of quota is
    /// [`Error::Quota`].
    fn write(&self, ops: Vec<WriteOp>) -> LocalBoxFuture<'_, Result<()>>;

    /// Merges `fields` into each existing row named in `patches`, in one transaction; a row that
    /// does not exist (deleted meanwhile, perhaps by another tab) is skipped, never created.
    fn patch(
        &self,
        table: Table,
        patches: Vec<(String, Map<String, Value>)>,
    ) -> LocalBoxFuture<'_, Result<()>>;

    /// Every row of `tables`, read in one transaction (a consistent snapshot), in table order.
    fn snapshot(&self, tables: Vec<Table>) -> LocalBoxFuture<'_, Result<Snapshot>>;

    /// Sets what the store does when [`Store::write`] fails for lack of quota: runs `relief`
    /// (which deletes the oldest automatic backups) and, if it freed anything, tries the write
    /// once more; if that fails too, the answer is [`Error::Quota`] and nothing else is lost.
    /// A store that cannot run out of quota ignores it (this default).
    fn set_quota_relief(&self, relief: Relief) {
        drop(relief);
    }

    /// Every row of `table` in id order, read in one transaction (a consistent snapshot) and
    /// handed to `visitor` at most `chunk` rows at a time, after the count of rows the snapshot
    /// holds. An error from `visitor` ends the read and is answered.
    ///
    /// This default reads the whole table with [`Store::snapshot`], then hands it out. A store
    /// with asynchronous reads reads one chunk per request instead (`IdbStore` does), so that a
    /// large table is never held whole, and other work runs while each chunk is read.
    fn visit_snapshot<'a>(
        &'a self,
        table: Table,
        chunk: usize,
        visitor: &'a mut dyn SnapshotVisitor,
    ) -> LocalBoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let rows = self
                .snapshot(vec![table])
                .await?
                .pop()
                .map(|(_, rows)| rows)
                .unwrap_or_default();
            visitor.count(rows.len() as u64)?;
            let mut rows = rows.into_iter().peekable();
            while rows.peek().is_some() {
                visitor.rows(rows.by_ref().take(chunk.max(1)).collect())?;
            }
            Ok(())
        })
    }

    /// Applies each of `changes` to its row of `table` if the row matches (see [`Guarded`]),
    /// then `then`, all in one transaction (on `Err`, nothing is written); answers what became of
    /// each change, in order.
    ///
    /// This default reads, then writes: two transactions, right for a store nothing else writes
    /// in between (`MemStore`, whose calls complete at once). A store shared with other tabs
    /// checks and writes in the same transaction (`IdbStore` does).
    fn write_guarded(
        &self,
        table: Table,
        changes: Vec<Guarded>,
        then: Vec<WriteOp>,
    ) -> LocalBoxFuture<'_, Result<Vec<Guard>>> {
        Box::pin(async move {
            let ids = changes.iter().map(|change| change.id.clone()).collect();
            let rows = self.get(table, ids).await?;
            let mut ops = Vec::with_capacity(changes.len() + then.len());
            let mut outcomes = Vec::with_capacity(changes.len());
            for (change, row) in changes.into_iter().zip(rows) {
                outcomes.push(match row {
                    None => Guard::Missing,
                    Some(row) if !change.matches(&row) => Guard::Refused(row),
                    Some(mut row) => match change.merge {
                        Some(fields) => {
                            row.merge(fields);
                            let back = change.read_back.then(|| row.clone());
                            ops.push(WriteOp::Put(table, row));
                            Guard::Applied(back)
                        }
                        None => {
                            ops.push(WriteOp::Delete(table, row.id));
                            Guard::Applied(None)
                        }
                    },
                });
            }
            ops.extend(then);
            if !ops.is_empty() {
                self.write(ops).await?;
            }
            Ok(outcomes)
        })
    }
}

impl Row {
    /// Sets `fields`, replacing the values of those it has (without allocating their names again).
    pub fn merge(&mut self, fields: Fields) {
        for (name, value) in fields {
            match self.fields.get_mut(name.as_ref()) {
                Some(slot) => *slot = value,
                None => {
                    self.fields.insert(name.into_owned(), value);
                }
            }
        }
    }

    /// Keeps only `fields` (JSON, vector or bytes); the id stays.
    pub fn project(mut self, fields: &[&str]) -> Self {
        self.fields
            .retain(|name, _| fields.contains(&name.as_str()));
        self.vectors
            .retain(|name, _| fields.contains(&name.as_str()));
        self.bytes.retain(|name, _| fields.contains(&name.as_str()));
        self
    }
}

/// Checks a scan's index against the table's indexes.
pub fn check_scan(table: Table, scan: &Scan) -> Result<()> {
    match &scan.index {
        Some((field, _)) if !table.indexed_fields().contains(field) => Err(Error::Internal(
            format!("table `{}` has no index on `{field}`", table.name()),
        )),
        _ => Ok(()),
    }
}
