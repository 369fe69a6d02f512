//! [`MemStore`]: the [`Store`] in memory, for native code and tests.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use super::{
    check_scan, Guard, Guarded, QuotaRelief, Relief, Row, Scan, Snapshot, Store, Table, WriteOp,
};
use crate::embedding::LocalBoxFuture;
use crate::error::{Error, Result};

/// Tables in memory. Writes are atomic like IndexedDB's: a batch is checked against the quota
/// before any of it is applied.
#[derive(Debug, Default)]
pub struct MemStore {
    tables: RefCell<HashMap<Table, BTreeMap<String, Row>>>,
    /// Rows the store may hold before writes fail with [`Error::Quota`] (tests of quota handling).
    max_rows: Cell<Option<usize>>,
    writes: Cell<u64>,
    relief: QuotaRelief,
}

impl MemStore {
    /// An empty store without a quota.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes writes that would leave more than `rows` rows in all fail with [`Error::Quota`], as a
    /// browser out of storage quota does; `None` lifts the limit.
    pub fn set_max_rows(&self, rows: Option<usize>) {
        self.max_rows.set(rows);
    }

    /// How many write batches were committed (tests count transactions with it).
    pub fn committed_writes(&self) -> u64 {
        self.writes.get()
    }

    /// Checks `ops` against the quota, then applies them, all or nothing; a lack of quota asks
    /// the relief ([`Store::set_quota_relief`]) and checks once more.
    async fn apply(&self, ops: Vec<WriteOp>) -> Result<()> {
        let checked = self.check_quota(&self.tables.borrow(), &ops);
        if let Err(error) = checked {
            let again = || async { self.check_quota(&self.tables.borrow(), &ops) };
            self.relief.retry(error, again).await?;
        }
        apply_ops(&mut self.tables.borrow_mut(), ops);
        self.writes.set(self.writes.get() + 1);
        Ok(())
    }

    /// [`Error::Quota`] if `ops` would leave more rows than the quota allows.
    fn check_quota(&self, tables: &Tables, ops: &[WriteOp]) -> Result<()> {
        if let Some(max) = self.max_rows.get() {
            let after = rows_after(tables, ops);
            if after > max {
                return Err(Error::Quota(format!(
                    "the write would hold {after} rows; the quota allows {max}"
                )));
            }
        }
        Ok(())
    }

    /// [`Store::write_guarded`] in place: rows are checked and merged where they are, copied
    /// only to answer them.
    fn apply_guarded(
        &self,
        table: Table,
        changes: Vec<Guarded>,
        then: Vec<WriteOp>,
    ) -> Result<Vec<Guard>> {
        if changes.is_empty() && then.is_empty() {
            return Ok(Vec::new());
        }
        let mut tables = self.tables.borrow_mut();
        // Merges and deletes never add rows: only `then` can go over the quota.
        self.check_quota(&tables, &then)?;
        let rows = tables.entry(table).or_default();
        let outcomes = changes
            .into_iter()
            .map(|change| {
                let Some(row) = rows.get_mut(&change.id) else {
                    return Guard::Missing;
                };
                if !change.matches(row) {
                    return Guard::Refused(row.clone());
                }
                match change.merge {
                    Some(fields) => {
                        row.merge(fields);
                        Guard::Applied(change.read_back.then(|| row.clone()))
                    }
                    None => {
                        rows.remove(&change.id);
                        Guard::Applied(None)
                    }
                }
            })
            .collect();
        apply_ops(&mut tables, then);
        self.writes.set(self.writes.get() + 1);
        Ok(outcomes)
    }
}

type Tables = HashMap<Table, BTreeMap<String, Row>>;

/// Applies `ops` in order (checked against the quota already).
fn apply_ops(tables: &mut Tables, ops: Vec<WriteOp>) {
    for op in ops {
        match op {
            WriteOp::Put(table, row) => {
                tables.entry(table).or_default().insert(row.id.clone(), row);
            }
            WriteOp::Delete(table, id) => {
                if let Some(rows) = tables.get_mut(&table) {
                    rows.remove(&id);
                }
            }
            WriteOp::Clear(table) => {
                tables.remove(&table);
            }
        }
    }
}

/// How many rows there would be after `ops`, without applying them.
fn rows_after(tables: &Tables, ops: &[WriteOp]) -> usize {
    let mut counts: HashMap<Table, usize> = Table::ALL
        .iter()
        .map(|table| (*table, tables.get(table).map_or(0, BTreeMap::len)))
        .collect();
    // Rows whose presence the batch changed so far; a cleared table starts from nothing.
    let mut present: HashMap<(Table, &str), bool> = HashMap::new();
    let mut cleared: Vec<Table> = Vec::new();
    for op in ops {
        let table = op.table();
        let was = |present: &HashMap<(Table, &str), bool>, id: &str| {
            present.get(&(table, id)).copied().unwrap_or_else(|| {
                !cleared.contains(&table) && tables.get(&table).is_some_and(|r| r.contains_key(id))
            })
        };
        let count = counts.entry(table).or_default();
        match op {
            WriteOp::Put(_, row) => {
                if !was(&present, &row.id) {
                    *count += 1;
                }
                present.insert((table, &row.id), true);
            }
            WriteOp::Delete(_, id) => {
                if was(&present, id) {
                    *count -= 1;
                }
                present.insert((table, id), false);
            }
            WriteOp::Clear(_) => {
                *count = 0;
                present.retain(|(t, _), _| *t != table);
                cleared.push(table);
            }
        }
    }
    counts.values().sum()
}

impl Store for MemStore {
    fn get(&self, table: Table, ids: Vec<String>) -> LocalBoxFuture<'_, Result<Vec<Option<Row>>>> {
        let tables = self.tables.borrow();
        let rows = tables.get(&table);
        let found = ids
            .iter()
            .map(|id| rows.and_then(|rows| rows.get(id)).cloned())
            .collect();
        Box::pin(std::future::ready(Ok(found)))
    }

    fn scan(&self, table: Table, scan: Scan) -> LocalBoxFuture<'_, Result<Vec<Row>>> {
        let result = check_scan(table, &scan).map(|()| {
            let tables = self.tables.borrow();
            let Some(rows) = tables.get(&table) else {
                return Vec::new();
            };
            let start = match &scan.after {
                Some(after) => Bound::Excluded(after.clone()),
                None => Bound::Unbounded,
            };
            rows.range((start, Bound::Unbounded))
                .map(|(_, row)| row)
                .filter(|row| match &scan.index {
                    Some((field, value)) => {
                        row.fields.get(*field).and_then(|v| v.as_str()) == Some(value.as_str())
                    }
                    None => true,
                })
                .take(scan.limit)
                .map(|row| match scan.fields {
                    Some(fields) => row.clone().project(fields),
                    None => row.clone(),
                })
                .collect()
        });
        Box::pin(std::future::ready(result))
    }

    fn count(&self, table: Table) -> LocalBoxFuture<'_, Result<u64>> {
        let count = self.tables.borrow().get(&table).map_or(0, BTreeMap::len);
        Box::pin(std::future::ready(Ok(count as u64)))
    }

    fn write(&self, ops: Vec<WriteOp>) -> LocalBoxFuture<'_, Result<()>> {
        Box::pin(self.apply(ops))
    }

    fn set_quota_relief(&self, relief: Relief) {
        self.relief.set(relief);
    }

    fn write_guarded(
        &self,
        table: Table,
        changes: Vec<Guarded>,
        then: Vec<WriteOp>,
    ) -> LocalBoxFuture<'_, Result<Vec<Guard>>> {
        Box::pin(std::future::ready(self.apply_guarded(table, changes, then)))
    }

    fn patch(
        &self,
        table: Table,
        patches: Vec<(String, serde_json::Map<String, serde_json::Value>)>,
    ) -> LocalBoxFuture<'_, Result<()>> {
        let mut tables = self.tables.borrow_mut();
        if let Some(rows) = tables.get_mut(&table) {
            for (id, fields) in patches {
                if let Some(row) = rows.get_mut(&id) {
                    row.fields.extend(fields);
                }
            }
        }
        drop(tables);
        self.writes.set(self.writes.get() + 1);
        Box::pin(std::future::ready(Ok(())))
    }

    fn snapshot(&self, tables: Vec<Table>) -> LocalBoxFuture<'_, Result<Snapshot>> {
        let all = self.tables.borrow();
        let snapshot = tables
            .into_iter()
            .map(|table| {
                let rows = all
                    .get(&table)
                    .map(|rows| rows.values().cloned().collect())
                    .unwrap_or_default();
                (table, rows)
            })
            .collect();
        Box::pin(std::future::ready(Ok(snapshot)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance;

    #[test]
    fn mem_store_passes_the_conformance_suite() {
        let failures = conformance::block_on(conformance::run(&|| {
            Box::pin(async { Ok(Box::new(MemStore::new()) as Box<dyn Store>) })
        }));
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn the_quota_refuses_a_whole_batch() {
        let store = MemStore::new();
        store.set_max_rows(Some(3));
        let put = |id: &str| WriteOp::Put(Table::Memories, Row::new(id));
        conformance::block_on(store.write(vec![put("a"), put("b")])).unwrap();
        let error = conformance::block_on(store.write(vec![put("c"), put("d")])).unwrap_err();
        assert!(matches!(error, Error::Quota(_)), "{error}");
        assert_eq!(
            conformance::block_on(store.count(Table::Memories)).unwrap(),
            2
        );
        // Replacing and deleting within the batch counts what remains.
        conformance::block_on(store.write(vec![
            WriteOp::Delete(Table::Memories, "a".into()),
            put("c"),
            put("d"),
            put("b"),
        ]))
        .unwrap();
        assert_eq!(
            conformance::block_on(store.count(Table::Memories)).unwrap(),
            3
        );
        assert_eq!(store.committed_writes(), 2);
    }
}
