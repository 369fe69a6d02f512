//! The memory index saved in packed blocks, so that a start reads a few dozen large records
//! instead of one row per memory.
//!
//! Layout, in the `meta` table, per embedder version `V`:
//! - `memory-index/V`: the header `{generation, blocks: [ids], count}`;
//! - `memory-index-block/V/<generation>/<n>`: up to [`BLOCK`] entries as parallel arrays (`ids`,
//!   `kinds`, `createdAt`, `lastAccessed`, `searchable`) and one `vectors` `Float32Array` holding
//!   the searchable entries' vectors back to back;
//! - `memory-journal/<time><random>`: `{ids}` changed by one write. Every write to `memories` adds
//!   its journal row in the same transaction, so a snapshot plus the journal always describes the
//!   table: a start loads the blocks, then re-reads the journal's ids from `memories`. A write
//!   that changes too many memories to list (a restore, [`super::restore`]) adds a **reset** row
//!   instead, `{ids: [], reset: true}`: whoever finds one it has not accounted for reads every
//!   row rather than trust a snapshot (a start falls back to reading the table; a snapshot being
//!   written rebuilds the index from the table first). Because the reset row sits in the journal,
//!   even a snapshot header that lands after it (one that was being written while the restore
//!   committed) is never trusted alone.
//!
//! A new snapshot is written in the background when none exists or the journal has grown: blocks
//! first, each in its own transaction (bounded memory), then the header in one transaction with
//! the deletion of the journal rows it covers and of every other snapshot (earlier generations,
//! other embedder versions: they relied on the journal rows deleted there). A crash before that
//! last transaction leaves the old snapshot in force; its unreferenced blocks are deleted by the
//! next snapshot. There is at most one snapshot in force.

use std::collections::HashSet;

use serde_json::{json, Value};

use super::{Entry, Memories, MemoryKind};
use crate::error::{Error, Result};
use crate::store::{Row, Scan, Table, WriteOp};

/// Entries per block: 500 vectors of 384 floats make a 0.8 MB record. Building and writing a
/// block holds the worker, so a request that arrives during a save waits for one block: measured
/// at 100 000 memories, searches during a save had a median of 45 ms with 2 000-entry blocks and
/// 21 ms with 500 (14–16 ms with no save running), while a start reads about the same per byte.
const BLOCK: usize = 500;

/// Journal ids past which a new snapshot is worth writing.
pub(super) const JOURNAL_LIMIT: usize = 2_000;

const JOURNAL_PREFIX: &str = "memory-journal/";

const HEADER_PREFIX: &str = "memory-index/";
const BLOCK_PREFIX: &str = "memory-index-block/";

fn header_id(version: &str) -> String {
    format!("{HEADER_PREFIX}{version}")
}

fn block_prefix(version: &str) -> String {
    format!("{BLOCK_PREFIX}{version}/")
}

/// The journal row recording that `ids` changed.
pub(super) fn journal_row(memories: &Memories, ids: &[String]) -> Row {
    let now = memories.clock.now_ms();
    let random = memories.state.borrow_mut().rng.u64(..);
    Row::new(format!("{JOURNAL_PREFIX}{now:013x}{random:016x}")).with("ids", json!(ids))
}

/// Every `meta` row whose id starts with `prefix`, reading only `fields`, in id order.
async fn rows_with_prefix(
    memories: &Memories,
    prefix: &str,
    fields: &'static [&'static str],
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut scan = Scan::first(1_000).after(prefix).only(fields);
    loop {
        let page = memories.store.scan(Table::Meta, scan.clone()).await?;
        let Some(last) = page.last() else { break };
        scan = scan.after(last.id.clone());
        let before = rows.len();
        rows.extend(
            page.into_iter()
                .take_while(|row| row.id.starts_with(prefix)),
        );
        if rows.len() - before < scan.limit {
            break;
        }
    }
    Ok(rows)
}

/// The journal row recording that too many memories changed to list: every row must be re-read.
pub(super) fn reset_row(memories: &Memories) -> Row {
    journal_row(memories, &[]).with("reset", true)
}

/// What the journal holds beyond the rows an index accounted for.
pub(super) struct Journal {
    /// The ids of every journal row (accounted for or not).
    pub rows: Vec<String>,
    /// The memory ids named by the rows not accounted for.
    pub changed: Vec<String>,
    /// Whether a row not accounted for is a reset: the whole table must be re-read.
    pub reset: bool,
}

/// The journal: its rows' ids and every memory id they name, except those named by the rows in
/// `known` (changes the index holds already).
pub(super) async fn read_journal(memories: &Memories, known: &HashSet<String>) -> Result<Journal> {
    let rows = rows_with_prefix(memories, JOURNAL_PREFIX, &["ids", "reset"]).await?;
    let mut ids = Vec::new();
    let mut reset = false;
    for row in rows.iter().filter(|row| !known.contains(&row.id)) {
        reset |= row.fields.get("reset") == Some(&Value::Bool(true));
        if let Some(Value::Array(changed)) = row.fields.get("ids") {
            ids.extend(
                changed
                    .iter()
                    .filter_map(|id| id.as_str().map(str::to_owned)),
            );
        }
    }
    Ok(Journal {
        rows: rows.into_iter().map(|row| row.id).collect(),
        changed: ids,
        reset,
    })
}

/// Loads the saved snapshot of this version into the index; `Ok(false)` when there is none.
pub(super) async fn load(memories: &Memories, progress: &dyn Fn(usize)) -> Result<bool> {
    let version = memories.model.version.clone();
    let Some(header) = memories
        .store
        .get(Table::Meta, vec![header_id(&version)])
        .await?
        .pop()
        .flatten()
    else {
        return Ok(false);
    };
    let blocks: Vec<String> = match header.fields.get("blocks") {
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter_map(|b| b.as_str().map(str::to_owned))
            .collect(),
        _ => return Ok(false),
    };
    let rows = memories.store.get(Table::Meta, blocks).await?;
    // A block missing or unreadable means the snapshot cannot be trusted: load from the rows.
    let Some(rows) = rows.into_iter().collect::<Option<Vec<Row>>>() else {
        return Ok(false);
    };
    for row in &rows {
        if unpack(memories, row).is_err() {
            let mut state = memories.state.borrow_mut();
            state.entries.clear();
            state.vectors.clear();
            return Ok(false);
        }
        progress(memories.state.borrow().entries.len());
    }
    Ok(true)
}

fn unpack(memories: &Memories, row: &Row) -> Result<()> {
    let bad = || Error::Store(format!("index block `{}` is malformed", row.id));
    let array = |name: &str| match row.fields.get(name) {
        Some(Value::Array(items)) => Ok(items),
        _ => Err(bad()),
    };
    let ids = array("ids")?;
    let kinds = array("kinds")?;
    let created = array("createdAt")?;
    let accessed = array("lastAccessed")?;
    let searchable = array("searchable")?;
    let vectors = row.vector_field("vectors")?;
    let dims = memories.model.dims;
    let n = ids.len();
    if [kinds.len(), created.len(), accessed.len(), searchable.len()] != [n; 4] {
        return Err(bad());
    }
    let with_vectors = searchable
        .iter()
        .filter(|s| s.as_bool() == Some(true))
        .count();
    if vectors.len() != with_vectors * dims {
        return Err(bad());
    }
    let mut state = memories.state.borrow_mut();
    let mut next_vector = vectors.chunks_exact(dims.max(1));
    for i in 0..n {
        let id = ids[i].as_str().ok_or_else(bad)?.to_owned();
        let kind =
            MemoryKind::parse(kinds[i].as_str().ok_or_else(bad)?, "kind").map_err(|_| bad())?;
        let entry = Entry {
            kind,
            created_at: created[i].as_u64().ok_or_else(bad)?,
            last_accessed: accessed[i].as_u64().ok_or_else(bad)?,
            searchable: searchable[i].as_bool().ok_or_else(bad)?,
        };
        if entry.searchable {
            let vector = next_vector.next().ok_or_else(bad)?;
            state.vectors.upsert(id.clone(), vector);
        }
        state.entries.insert(id, entry);
    }
    Ok(())
}

/// Writes a snapshot of the index as it is now, covering the journal rows read first.
pub(super) async fn write(memories: &Memories) -> Result<()> {
    // This worker's own journal rows describe changes its index already holds: only other
    // workers' rows are re-read (a refresh of a whole `addMany` of 100 000 ids took seconds).
    let own = memories.own_journal.borrow().clone();
    let Journal {
        rows: journal_rows,
        changed,
        reset,
    } = read_journal(memories, &own).await?;
    if reset {
        // Another worker restored a backup: whatever it told this one, re-read every memory the
        // table or the index holds (id by id, so that writes answered meanwhile stay indexed).
        let mut ids = memories.stored_ids().await?;
        let stored: HashSet<&String> = ids.iter().collect();
        let indexed: Vec<String> = memories
            .state
            .borrow()
            .entries
            .keys()
            .filter(|id| !stored.contains(id))
            .cloned()
            .collect();
        ids.extend(indexed);
        memories.refresh(ids).await?;
    } else {
        memories.refresh(changed).await?;
    }
    let version = memories.model.version.clone();
    let generation = format!("{:016x}", memories.state.borrow_mut().rng.u64(..));
    let prefix = format!("{}{generation}/", block_prefix(&version));
    let ids: Vec<String> = {
        let state = memories.state.borrow();
        let mut ids: Vec<String> = state.entries.keys().cloned().collect();
        ids.sort_unstable();
        ids
    };
    let mut block_ids = Vec::new();
    for (n, chunk) in ids.chunks(BLOCK).enumerate() {
        let row = {
            let state = memories.state.borrow();
            let mut kept = Vec::with_capacity(chunk.len());
            let mut vectors = Vec::new();
            for id in chunk {
                let Some(entry) = state.entries.get(id) else {
                    continue;
                };
                let vector = entry.searchable.then(|| state.vectors.get(id)).flatten();
                if let Some(vector) = vector {
                    vectors.extend_from_slice(vector);
                }
                kept.push((id.clone(), *entry, vector.is_some()));
            }
            Row::new(format!("{prefix}{n:05}"))
                .with("ids", json!(kept.iter().map(|k| &k.0).collect::<Vec<_>>()))
                .with(
                    "kinds",
                    json!(kept.iter().map(|k| k.1.kind.name()).collect::<Vec<_>>()),
                )
                .with(
                    "createdAt",
                    json!(kept.iter().map(|k| k.1.created_at).collect::<Vec<_>>()),
                )
                .with(
                    "lastAccessed",
                    json!(kept.iter().map(|k| k.1.last_accessed).collect::<Vec<_>>()),
                )
                .with(
                    "searchable",
                    json!(kept.iter().map(|k| k.2).collect::<Vec<_>>()),
                )
                .with_vector("vectors", vectors)
        };
        block_ids.push(row.id.clone());
        memories
            .store
            .write(vec![WriteOp::Put(Table::Meta, row)])
            .await?;
    }
    // Blocks of this version that the new header will not name: earlier generations.
    // Everything of other snapshots goes: earlier generations' blocks, and the headers and blocks
    // of other embedder versions, whose snapshots would miss the journal rows deleted below.
    let mut stale: Vec<String> = rows_with_prefix(memories, BLOCK_PREFIX, &[])
        .await?
        .into_iter()
        .map(|row| row.id)
        .filter(|id| !id.starts_with(&prefix))
        .collect();
    stale.extend(
        rows_with_prefix(memories, HEADER_PREFIX, &[])
            .await?
            .into_iter()
            .map(|row| row.id)
            .filter(|id| *id != header_id(&version)),
    );
    let header = Row::new(header_id(&version))
        .with("generation", generation)
        .with("blocks", json!(block_ids))
        .with("count", ids.len());
    let journal_rows_deleted = journal_rows.clone();
    let mut ops = vec![WriteOp::Put(Table::Meta, header)];
    ops.extend(
        journal_rows
            .into_iter()
            .chain(stale)
            .map(|id| WriteOp::Delete(Table::Meta, id)),
    );
    memories.store.write(ops).await?;
    let mut own = memories.own_journal.borrow_mut();
    for id in &journal_rows_deleted {
        own.remove(id);
    }
    Ok(())
}

/// Ops that make every snapshot of `version` invalid (after a purge of the table).
pub(super) fn forget(version: &str) -> WriteOp {
    WriteOp::Delete(Table::Meta, header_id(version))
}
