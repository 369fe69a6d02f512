//! The re-embedding migration ([`Memories::reembed`]): memories embedded by another embedder
//! version (a profile change, a model upgrade, a backup from another device) get a vector of the
//! active version, a batch at a time.
//!
//! Each batch reads its rows, embeds their texts with the active embedder and writes them back in
//! one transaction (with a journal row, like any write): a committed batch is the checkpoint, so
//! a migration stopped anywhere (a closed page, a crash) resumes with the memories still to do,
//! and is done when none is left. Until its batch is written a memory keeps its old vector and
//! stays out of the index: searches never compare vectors of two versions. A memory deleted or
//! re-embedded by another tab between the batch's read and write is written back as read (the
//! window is one batch's embedding time; the other tab's index learns of it from the change).

use serde::Serialize;

use super::{record_of, row_of, Memories};
use crate::embedding::Embedder;
use crate::error::Result;
use crate::store::{Table, WriteOp};

/// What one [`Memories::reembed`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reembedded {
    /// Memories given a vector of the active version by this call.
    pub migrated: usize,
    /// Memories of another version still to do.
    pub remaining: usize,
}

impl Memories {
    /// The ids of the memories of another embedder version, oldest first.
    pub(super) fn other_version_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .state
            .borrow()
            .entries
            .iter()
            .filter(|(_, entry)| !entry.searchable)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Memories of another embedder version, waiting for [`Memories::reembed`].
    pub fn to_reembed(&self) -> usize {
        self.state
            .borrow()
            .entries
            .values()
            .filter(|entry| !entry.searchable)
            .count()
    }

    /// Re-embeds up to `batch` memories of another embedder version with `embedder` (the active
    /// one), in one transaction; see the [module docs](self).
    pub async fn reembed(&self, embedder: &dyn Embedder, batch: usize) -> Result<Reembedded> {
        // Oldest first, so that a migration goes through the memories in a stable order.
        let mut ids = self.other_version_ids();
        ids.truncate(batch.max(1));
        let rows = self.store.get(Table::Memories, ids.clone()).await?;
        let mut records = Vec::with_capacity(rows.len());
        let mut gone = Vec::new();
        for (id, row) in ids.into_iter().zip(rows) {
            match row.map(|row| record_of(&row)) {
                Some(Ok(record)) => records.push(record),
                // Deleted meanwhile, or unreadable: the index forgets it rather than retry it.
                _ => gone.push(id),
            }
        }
        self.forget(&gone);
        let mut migrated = 0;
        if !records.is_empty() {
            let texts: Vec<&str> = records.iter().map(|r| r.text.as_str()).collect();
            let vectors = self.embed_checked(embedder, &texts).await?;
            let rows: Vec<_> = records
                .into_iter()
                .zip(vectors)
                .map(|(mut record, vector)| {
                    record.embedding_version = self.model.version.clone();
                    row_of(&record, vector)
                })
                .collect();
            let changed: Vec<String> = rows.iter().map(|row| row.id.clone()).collect();
            let ops = rows
                .iter()
                .map(|row| WriteOp::Put(Table::Memories, row.clone()))
                .collect();
            self.commit(ops, &changed).await?;
            self.index_written(&rows);
            migrated = rows.len();
        }
        Ok(Reembedded {
            migrated,
            remaining: self.to_reembed(),
        })
    }
}
