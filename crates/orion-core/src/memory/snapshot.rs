//! The memory index saved in packed blocks, so that a start reads a few dozen large records
//! instead of one row per memory, and only a quarter of the vectors' bytes before it can search.
//!
//! Layout, in the `meta` table, per embedder version `V`:
//! - `memory-index/V`: the header `{format, generation, blocks: [ids], count}`;
//! - `memory-index-block/V/<generation>/<n>`: up to [`BLOCK`] entries: `entries`, the JSON text of
//!   their ids, kinds, `createdAt`, `lastAccessed` and `searchable` flags (one string: a JSON
//!   array read element by element from IndexedDB costs a call into JS per element), and for the
//!   searchable ones, back to back, their 8-bit codes (`codes`, a `Uint8Array`) and code scales
//!   (`scales`, a `Float32Array`), which is what the first pass of a search reads;
//! - `memory-index-block/V/<generation>/<n>/vectors`: the same block's exact vectors, one
//!   `Float32Array`, four times the codes' size.
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
//! A start reads the header and the blocks, and the index can search as soon as they are in: it
//! holds those rows by their codes alone ([`VectorIndex::insert_codes`]). The exact vectors follow
//! in the background ([`super::Memories::load_exact`]); meanwhile a search reads the few shortlisted
//! rows it needs exactly from `memories` (or, when it shortlists many, waits for the vectors), so
//! results are exact throughout.
//!
//! A new snapshot is written in the background when none exists or the journal has grown: blocks
//! first, each with its vectors in its own transaction (bounded memory), then the header in one
//! transaction with the deletion of the journal rows it covers and of every other snapshot (earlier
//! generations, other embedder versions: they relied on the journal rows deleted there). A crash
//! before that last transaction leaves the old snapshot in force; its unreferenced blocks are
//! deleted by the next snapshot. There is at most one snapshot in force. A header of an earlier
//! [`FORMAT`] is not read: that start reads every row, and writes a snapshot of this format.
//!
//! [`VectorIndex::insert_codes`]: crate::vector_index::VectorIndex::insert_codes

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{Entry, Memories, MemoryKind};
use crate::embedding::LocalBoxFuture;
use crate::error::{Error, Result};
use crate::store::{Row, Scan, Table, WriteOp};

/// Entries per block: 500 vectors of 384 floats make a 0.8 MB record of vectors. Building and
/// writing a block holds the worker, so a request that arrives during a save waits for one block:
/// measured at 100 000 memories, searches during a save had a median of 45 ms with 2 000-entry
/// blocks and 21 ms with 500 (14–16 ms with no save running), while a start reads about the same
/// per byte.
const BLOCK: usize = 500;

/// The layout described above; headers of other formats are not read.
const FORMAT: u64 = 2;

/// Blocks of exact vectors read per transaction by [`load_pending`] (0.8 MB each): requests are
/// answered between reads. Measured at 100 000 memories, searches during the read took 30–60 ms
/// with 8 blocks per read and 20–30 ms with one.
const EXACT_READ: usize = 1;

const VECTORS_SUFFIX: &str = "/vectors";

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

/// The per-entry fields of a block, as its `entries` JSON text.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BlockEntries {
    ids: Vec<String>,
    kinds: Vec<MemoryKind>,
    created_at: Vec<u64>,
    last_accessed: Vec<u64>,
    searchable: Vec<bool>,
}

/// What a start still has to read after [`load`]: each block's vectors row, with the ids of the
/// searchable entries its vectors belong to, in order.
pub(super) type PendingVectors = Vec<(String, Vec<String>)>;

/// Loads the saved snapshot of this version into the index, the searchable entries by their codes
/// alone; `Ok(None)` when there is none (or none this code reads). The vectors still to read
/// ([`load_pending`]) otherwise.
pub(super) async fn load(
    memories: &Memories,
    progress: &dyn Fn(usize),
) -> Result<Option<PendingVectors>> {
    let version = memories.model.version.clone();
    let Some(header) = memories
        .store
        .get(Table::Meta, vec![header_id(&version)])
        .await?
        .pop()
        .flatten()
    else {
        return Ok(None);
    };
    if header.fields.get("format").and_then(Value::as_u64) != Some(FORMAT) {
        return Ok(None);
    }
    let blocks: Vec<String> = match header.fields.get("blocks") {
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter_map(|b| b.as_str().map(str::to_owned))
            .collect(),
        _ => return Ok(None),
    };
    let count = header.u64_field("count").unwrap_or(0);
    let rows = memories.store.get(Table::Meta, blocks).await?;
    // A block missing or unreadable means the snapshot cannot be trusted: load from the rows.
    let Some(rows) = rows.into_iter().collect::<Option<Vec<Row>>>() else {
        return Ok(None);
    };
    {
        // The count is a hint (from storage: capped by what the profile may hold).
        let reserve = usize::try_from(count)
            .unwrap_or(usize::MAX)
            .min(memories.config.max_memories);
        let mut state = memories.state.borrow_mut();
        state.entries.reserve(reserve);
        state.vectors.reserve(reserve);
    }
    let mut pending = Vec::with_capacity(rows.len());
    for row in &rows {
        match unpack(memories, row) {
            Ok(searchable) => pending.push((format!("{}{VECTORS_SUFFIX}", row.id), searchable)),
            Err(_) => {
                let mut state = memories.state.borrow_mut();
                state.entries.clear();
                state.vectors.clear();
                return Ok(None);
            }
        }
        progress(memories.state.borrow().entries.len());
    }
    Ok(Some(pending))
}

/// Indexes one block's entries (the searchable ones by their codes); returns the searchable ids.
fn unpack(memories: &Memories, row: &Row) -> Result<Vec<String>> {
    let bad = || Error::Store(format!("index block `{}` is malformed", row.id));
    let entries: BlockEntries =
        serde_json::from_str(row.str_field("entries")?).map_err(|_| bad())?;
    let codes = row.bytes_field("codes")?;
    let scales = row.vector_field("scales")?;
    let dims = memories.model.dims;
    let n = entries.ids.len();
    let lengths = [
        entries.kinds.len(),
        entries.created_at.len(),
        entries.last_accessed.len(),
        entries.searchable.len(),
    ];
    let with_vectors = entries.searchable.iter().filter(|s| **s).count();
    if lengths != [n; 4] || scales.len() != with_vectors || codes.len() != with_vectors * dims {
        return Err(bad());
    }
    let mut state = memories.state.borrow_mut();
    let mut next = codes.chunks_exact(dims.max(1)).zip(scales);
    let mut row_codes: Vec<i8> = Vec::with_capacity(dims);
    let mut searchable_ids = Vec::with_capacity(with_vectors);
    for (i, id) in entries.ids.into_iter().enumerate() {
        let entry = Entry {
            kind: entries.kinds[i],
            created_at: entries.created_at[i],
            last_accessed: entries.last_accessed[i],
            searchable: entries.searchable[i],
        };
        if entry.searchable {
            let (bytes, &scale) = next.next().ok_or_else(bad)?;
            row_codes.clear();
            // The codes are stored as the bytes of their two's complement.
            row_codes.extend(bytes.iter().map(|&b| b as i8));
            if !state.vectors.insert_codes(id.clone(), &row_codes, scale) {
                return Err(bad());
            }
            searchable_ids.push(id.clone());
        }
        state.entries.insert(id, entry);
    }
    Ok(searchable_ids)
}

/// Reads the exact vectors of the entries [`load`] indexed by their codes, taking a few blocks at a
/// time from the queue [`super::Memories::load_exact`] and a search both drain; returns once the
/// queue is empty (a block another caller took may still be on its way).
pub(super) async fn load_pending(memories: &Memories) -> Result<()> {
    let dims = memories.model.dims;
    loop {
        let group: PendingVectors = {
            let mut pending = memories.pending_vectors.borrow_mut();
            let n = pending.len().min(EXACT_READ);
            pending.drain(..n).collect()
        };
        if group.is_empty() {
            return Ok(());
        }
        let ids = group.iter().map(|(id, _)| id.clone()).collect();
        let rows = memories.store.get(Table::Meta, ids).await?;
        let mut state = memories.state.borrow_mut();
        for ((_, keys), row) in group.iter().zip(rows) {
            let Some(vectors) = row
                .as_ref()
                .and_then(|row| row.vector_field("vectors").ok())
            else {
                continue;
            };
            if vectors.len() != keys.len() * dims {
                continue;
            }
            for (key, vector) in keys.iter().zip(vectors.chunks_exact(dims.max(1))) {
                // Only entries still held by their codes: a change read since is newer.
                state.vectors.fill(key, vector);
            }
        }
    }
}

/// Writes a snapshot of the index as it is now, covering the journal rows read first.
pub(super) async fn write(
    memories: &Memories,
    sleep: &dyn Fn(u64) -> LocalBoxFuture<'static, ()>,
) -> Result<()> {
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
    // Entries still held by their codes alone get their vectors first (a save normally waits
    // until the start's `Memories::load_exact` is done: see `Memories::wants_snapshot`).
    let inexact = memories.state.borrow().vectors.inexact_keys();
    memories.refresh(inexact).await?;
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
        memories.quiet(sleep).await;
        let (block, vectors) = {
            let state = memories.state.borrow();
            let dims = memories.model.dims;
            let mut entries = BlockEntries {
                ids: Vec::with_capacity(chunk.len()),
                kinds: Vec::with_capacity(chunk.len()),
                created_at: Vec::with_capacity(chunk.len()),
                last_accessed: Vec::with_capacity(chunk.len()),
                searchable: Vec::with_capacity(chunk.len()),
            };
            let mut codes: Vec<u8> = Vec::with_capacity(chunk.len() * dims);
            let mut scales = Vec::new();
            let mut vectors = Vec::with_capacity(chunk.len() * dims);
            for id in chunk {
                let Some(entry) = state.entries.get(id) else {
                    continue;
                };
                let indexed = entry
                    .searchable
                    .then(|| state.vectors.get(id).zip(state.vectors.codes(id)))
                    .flatten();
                if let Some((vector, (row_codes, scale))) = indexed {
                    vectors.extend_from_slice(vector);
                    codes.extend(row_codes.iter().map(|&c| c as u8));
                    scales.push(scale);
                }
                entries.ids.push(id.clone());
                entries.kinds.push(entry.kind);
                entries.created_at.push(entry.created_at);
                entries.last_accessed.push(entry.last_accessed);
                entries.searchable.push(indexed.is_some());
            }
            let entries = serde_json::to_string(&entries)
                .map_err(|error| Error::Internal(format!("index block: {error}")))?;
            let id = format!("{prefix}{n:05}");
            let vectors = Row::new(format!("{id}{VECTORS_SUFFIX}")).with_vector("vectors", vectors);
            let block = Row::new(id)
                .with("entries", entries)
                .with_bytes("codes", codes)
                .with_vector("scales", scales);
            (block, vectors)
        };
        block_ids.push(block.id.clone());
        memories
            .store
            .write(vec![
                WriteOp::Put(Table::Meta, block),
                WriteOp::Put(Table::Meta, vectors),
            ])
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
        .with("format", FORMAT)
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
