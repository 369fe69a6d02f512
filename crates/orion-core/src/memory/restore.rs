//! Restoring memories from a backup ([`Memories::restore`]): validated rows written in one
//! transaction, never half-applied, with the index kept true.
//!
//! - **Options.** `clearExisting` empties the table first (in the same transaction); otherwise
//!   `onConflict` decides for ids already stored: `skip` (default: the stored memory stays) or
//!   `overwrite` (the backup's replaces it). With `clearExisting`, `onConflict` has nothing to
//!   decide and is ignored.
//! - **Rows.** Every row is checked before anything is written (id, kind, times, text and meta
//!   sizes against this store's limits, the vector's length when the row has the active
//!   embedder's version); a bad one is `ERR_BACKUP_INVALID` at `memories[i].<field>` (`i` the
//!   row's position among the backup's memories). Rows of another embedding version are stored
//!   as they are and left out of the vector index (never compared with the active version's
//!   vectors) until the re-embedding migration rewrites them; they are counted in
//!   [`RestoreReport::other_versions`]. `tool_result` memories already expired are not restored
//!   (counted as skipped).
//! - **Budget.** A restore that would leave more memories than `maxMemories` is refused with
//!   `ERR_INVALID_INPUT` on `memories` before anything is written: evicting to make room would
//!   silently delete memories the user asked to keep or to get back. (The count is taken just
//!   before the write; another tab adding meanwhile can go over it, and its next write evicts as
//!   usual.)
//! - **Snapshot and journal.** A restore of at most [`snapshot::JOURNAL_LIMIT`] memories without
//!   `clearExisting` adds an ordinary journal row naming them. A larger one, or any with
//!   `clearExisting`, deletes the active version's snapshot header and adds a *reset* journal row
//!   (see [`snapshot`]) in the same transaction: the next start reads every row, and a snapshot
//!   written concurrently is never trusted without re-reading.
//! - **Index.** Once the transaction has committed, the index is updated from the rows just
//!   written, which are exactly what changed: with `clearExisting` a new index is built from them
//!   and replaces the old one at once; otherwise each written row is indexed (replacing its old
//!   entry). Nothing is re-read from the store, and no request sees a half-built index. `progress`
//!   is called with the number of rows indexed, every [`PROGRESS_EVERY`] and at the end.
//! - **Other tabs.** The ids that changed (with `clearExisting`: every id this index held, and
//!   every id written) go through [`Memories::take_changes`], which the runtime publishes to the
//!   other workers on the database; they re-read those ids ([`Memories::refresh`]). A worker that
//!   misses the message still finds the reset row in the journal at its next snapshot or start.
//! - **Failure.** Any error (a bad row, the budget, the store refusing the write, e.g. for quota)
//!   leaves the database and the index exactly as they were: the only write is the one
//!   transaction.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use serde_json::Value;

use super::{check_id, record_of, snapshot, stored_kind, Memories, MemoryKind, EMBEDDING};
use crate::error::{Error, Result};
use crate::store::{Row, Scan, Table, WriteOp};
use crate::vector_index::VectorIndex;

/// Rows indexed between two progress calls.
pub const PROGRESS_EVERY: usize = 5_000;

/// What a restore does with a memory whose id is already stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnConflict {
    /// Keep the stored one (default).
    #[default]
    Skip,
    /// Replace it with the backup's.
    Overwrite,
}

/// `{clearExisting, onConflict}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    /// Delete every stored memory first (in the same transaction).
    pub clear_existing: bool,
    /// For ids already stored, when not clearing.
    pub on_conflict: OnConflict,
}

impl RestoreOptions {
    /// Parses `{clearExisting?: boolean, onConflict?: 'skip' | 'overwrite'}` (`null` or absent:
    /// the defaults). A problem is `ERR_INVALID_INPUT` naming the field under `field` (e.g.
    /// `options.onConflict`); unknown keys are refused.
    pub fn parse(value: &Value, field: &str) -> Result<Self> {
        let mut options = Self::default();
        let object = match value {
            Value::Null => return Ok(options),
            Value::Object(object) => object,
            _ => {
                return Err(Error::invalid_input(
                    field,
                    "must be an object {clearExisting?, onConflict?}",
                ))
            }
        };
        for (key, value) in object {
            let name = format!("{field}.{key}");
            match key.as_str() {
                "clearExisting" => match value {
                    Value::Null => {}
                    Value::Bool(clear) => options.clear_existing = *clear,
                    _ => return Err(Error::invalid_input(name, "must be true or false")),
                },
                "onConflict" => match value {
                    Value::Null => {}
                    Value::String(s) if s == "skip" => options.on_conflict = OnConflict::Skip,
                    Value::String(s) if s == "overwrite" => {
                        options.on_conflict = OnConflict::Overwrite
                    }
                    _ => {
                        return Err(Error::invalid_input(
                            name,
                            "must be \"skip\" or \"overwrite\"",
                        ))
                    }
                },
                _ => {
                    return Err(Error::invalid_input(
                        name,
                        "unknown option; expected clearExisting or onConflict",
                    ))
                }
            }
        }
        Ok(options)
    }
}

/// What a restore did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreReport {
    /// Memories written (new ones and replaced ones).
    pub restored: usize,
    /// Memories of the backup not written: already stored (`onConflict: skip`) or expired.
    pub skipped: usize,
    /// Of those restored, how many replaced a stored memory with the same id.
    pub replaced: usize,
    /// Of those restored, how many carry another embedding version than the active embedder's
    /// (stored, not searchable until re-embedded).
    pub other_versions: usize,
}

impl Memories {
    /// Writes the memories of a validated backup ([`crate::backup_file::BackupContents`]'s
    /// rows) in one transaction: see the [module docs](self).
    pub async fn restore(
        &self,
        rows: Vec<Row>,
        options: RestoreOptions,
        progress: &dyn Fn(usize),
    ) -> Result<RestoreReport> {
        self.check_rows(&rows)?;
        let now = self.clock.now_ms();
        let mut report = RestoreReport::default();
        // Rows that expired already are not brought back.
        let (rows, expired): (Vec<Row>, Vec<Row>) = rows.into_iter().partition(|row| {
            stored_kind(row).is_ok_and(|kind| kind != MemoryKind::ToolResult)
                || row
                    .u64_field("createdAt")
                    .is_ok_and(|created| !self.expired_at(MemoryKind::ToolResult, created, now))
        });
        report.skipped += expired.len();
        let mut ops = Vec::new();
        let mut removed = Vec::new();
        let to_write: Vec<Row> = if options.clear_existing {
            ops.push(WriteOp::Clear(Table::Memories));
            rows
        } else {
            // Expired memories still stored go now, as with every write.
            removed = self.expired_ids();
            let gone: HashSet<&String> = removed.iter().collect();
            let stored: HashSet<String> = self
                .stored_ids()
                .await?
                .into_iter()
                .filter(|id| !gone.contains(id))
                .collect();
            let mut writing = Vec::with_capacity(rows.len());
            for row in rows {
                if !stored.contains(&row.id) {
                    writing.push(row);
                } else if options.on_conflict == OnConflict::Overwrite {
                    report.replaced += 1;
                    writing.push(row);
                } else {
                    report.skipped += 1;
                }
            }
            let after = stored.len() + writing.len() - report.replaced;
            self.check_budget(after)?;
            ops.extend(super::delete_ops(&removed));
            writing
        };
        if options.clear_existing {
            self.check_budget(to_write.len())?;
        }
        report.restored = to_write.len();
        report.other_versions = to_write
            .iter()
            .filter(|row| row.str_field("embeddingVersion").ok() != Some(&self.model.version))
            .count();
        let written: Vec<String> = to_write.iter().map(|row| row.id.clone()).collect();
        ops.extend(
            to_write
                .iter()
                .map(|row| WriteOp::Put(Table::Memories, row.clone())),
        );
        let mut changed = removed.clone();
        changed.extend(written.iter().cloned());
        if !options.clear_existing && changed.len() <= snapshot::JOURNAL_LIMIT {
            self.commit(ops, &changed).await?;
        } else {
            let reset = snapshot::reset_row(self);
            ops.push(snapshot::forget(&self.model.version));
            ops.push(WriteOp::Put(Table::Meta, reset.clone()));
            self.store.write(ops).await?;
            self.own_journal.borrow_mut().insert(reset.id);
            self.saved_at.set(None);
        }
        // Committed: the index, and the other versions' vectors, follow the rows written.
        self.index_restored(&to_write, &removed, options.clear_existing, progress);
        if options.clear_existing {
            self.clear_other_vectors();
        }
        self.note_other_rows(&to_write);
        Ok(report)
    }

    /// Every id in the `memories` table (reading no fields), in id order.
    pub(super) async fn stored_ids(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        let mut scan = Scan::first(self.config.load_chunk.max(1)).only(&[]);
        loop {
            let rows = self.store.scan(Table::Memories, scan.clone()).await?;
            let Some(last) = rows.last() else { break };
            scan = scan.after(last.id.clone());
            ids.extend(rows.into_iter().map(|row| row.id));
        }
        Ok(ids)
    }

    fn check_budget(&self, after: usize) -> Result<()> {
        let max = self.config.max_memories;
        if after > max {
            return Err(Error::invalid_input(
                "memories",
                format!(
                    "the restore would leave {after} memories; the budget (maxMemories) is {max}: \
                     restore with clearExisting, delete memories first, or raise maxMemories"
                ),
            ));
        }
        Ok(())
    }

    /// Every row is one this store can hold and index; the first problem is
    /// `ERR_BACKUP_INVALID` at `memories[i].<field>`.
    fn check_rows(&self, rows: &[Row]) -> Result<()> {
        let mut seen = HashSet::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            let bad = |field: &str, reason: String| {
                Error::backup_invalid(format!("memories[{i}].{field}"), reason)
            };
            if check_id(&row.id).is_err() {
                return Err(bad("id", "is not a memory id".into()));
            }
            if !seen.insert(row.id.as_str()) {
                return Err(bad("id", format!("`{}` appears twice", row.id)));
            }
            let record = record_of(row).map_err(|error| bad("", error.to_string()))?;
            if record.text.trim().is_empty() {
                return Err(bad("text", "is empty".into()));
            }
            if record.text.len() > self.config.max_text_bytes {
                return Err(bad(
                    "text",
                    format!(
                        "is {} bytes; this store's limit is {}",
                        record.text.len(),
                        self.config.max_text_bytes
                    ),
                ));
            }
            if !record.meta.is_object() {
                return Err(bad("meta", "must be an object".into()));
            }
            let meta_bytes = serde_json::to_vec(&record.meta).map_or(usize::MAX, |j| j.len());
            if meta_bytes > self.config.max_meta_bytes {
                return Err(bad(
                    "meta",
                    format!(
                        "is {meta_bytes} bytes as JSON; this store's limit is {}",
                        self.config.max_meta_bytes
                    ),
                ));
            }
            let vector = row
                .vector_field(EMBEDDING)
                .map_err(|_| bad(EMBEDDING, "is missing".into()))?;
            if record.embedding_version == self.model.version && vector.len() != self.model.dims {
                return Err(bad(
                    EMBEDDING,
                    format!(
                        "has {} dimensions; the active embedder `{}` makes {}",
                        vector.len(),
                        self.model.version,
                        self.model.dims
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Brings the index in line with a committed restore (see the module docs).
    fn index_restored(
        &self,
        written: &[Row],
        removed: &[String],
        cleared: bool,
        progress: &dyn Fn(usize),
    ) {
        let mut changes: Vec<String> = Vec::new();
        if cleared {
            let mut entries = HashMap::with_capacity(written.len());
            let mut vectors = VectorIndex::new(self.model.dims);
            for (n, row) in written.iter().enumerate() {
                if let Ok(entry) = self.index_row(&mut vectors, row) {
                    entries.insert(row.id.clone(), entry);
                }
                if (n + 1) % PROGRESS_EVERY == 0 {
                    progress(n + 1);
                }
            }
            let mut state = self.state.borrow_mut();
            changes.extend(state.entries.keys().cloned());
            state.entries = entries;
            state.vectors = vectors;
            self.touched.borrow_mut().clear();
        } else {
            self.forget(removed);
            let mut state = self.state.borrow_mut();
            let mut touched = self.touched.borrow_mut();
            for (n, row) in written.iter().enumerate() {
                touched.remove(&row.id);
                match self.index_row(&mut state.vectors, row) {
                    Ok(entry) => {
                        state.entries.insert(row.id.clone(), entry);
                    }
                    Err(_) => {
                        state.entries.remove(&row.id);
                        state.vectors.remove(&row.id);
                    }
                }
                if (n + 1) % PROGRESS_EVERY == 0 {
                    progress(n + 1);
                }
            }
        }
        progress(written.len());
        changes.extend(written.iter().map(|row| row.id.clone()));
        self.changes.borrow_mut().extend(changes);
    }
}
