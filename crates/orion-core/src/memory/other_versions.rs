//! Memories of another embedder version, searched with their own version's vectors until the
//! re-embedding migration ([`Memories::reembed`]) gives them one of the active version.
//!
//! The index holds the active version's vectors only. For a search, the caller passes the
//! embedders it has of other versions (the micro profile's hashing embedder is always at hand):
//! the query is embedded by each, and compared with the vectors of memories of that version only
//! (never a vector with one of another version); the hits of all versions are merged by
//! similarity. Memories of a version no embedder at hand makes are not searched until migrated.
//!
//! The other versions' vectors are read from their rows once, in the background
//! ([`Memories::read_other_versions`], for the versions the caller has an embedder of; until then
//! a search skips them), then kept in step with every change: a migration, a deletion, a restore
//! and another tab's writes each update them from the rows they touch.

use std::collections::HashMap;

use super::{Memories, SearchHit, EMBEDDING};
use crate::embedding::{cosine, Embedder};
use crate::error::{Error, Result};
use crate::store::{Row, Table};

/// Rows read per transaction when the other versions' vectors are read.
const READ_CHUNK: usize = 500;

/// The vectors of memories of other versions, for the versions wanted: by version, then by id.
#[derive(Debug, Default)]
pub(super) struct OtherVectors {
    wanted: Vec<String>,
    by_version: HashMap<String, HashMap<String, Vec<f32>>>,
}

impl OtherVectors {
    /// Holds `row`'s vector if it is of a wanted version (other than `active`), and forgets any
    /// other vector of it.
    fn note(&mut self, row: &Row, active: &str) {
        for vectors in self.by_version.values_mut() {
            vectors.remove(&row.id);
        }
        let (Ok(version), Ok(vector)) = (
            row.str_field("embeddingVersion"),
            row.vector_field(EMBEDDING),
        ) else {
            return;
        };
        if version != active && self.wanted.iter().any(|wanted| wanted == version) {
            self.by_version
                .entry(version.to_owned())
                .or_default()
                .insert(row.id.clone(), vector.to_vec());
        }
    }
}

impl Memories {
    /// [`Memories::search`], and the memories of the versions of `others` searched with a query
    /// vector of their own version; the best `k` of all, by similarity.
    pub async fn search_all_versions(
        &self,
        embedder: &dyn Embedder,
        others: &[&dyn Embedder],
        query: &str,
        k: u64,
        min_similarity: f64,
        kind: Option<&str>,
    ) -> Result<Vec<SearchHit>> {
        let mut hits = self
            .search(embedder, query, k, min_similarity, kind)
            .await?;
        let kind = self.check_search(query, k, min_similarity, kind)?;
        let mut scored: Vec<(String, f32)> = Vec::new();
        for other in others {
            let version = &other.info().version;
            if *version == self.model.version {
                continue;
            }
            let has_any = self
                .other
                .borrow()
                .as_ref()
                .and_then(|other| other.by_version.get(version))
                .is_some_and(|vectors| !vectors.is_empty());
            if !has_any {
                continue;
            }
            let query_vector = other
                .embed(&[query])
                .await?
                .pop()
                .ok_or_else(|| Error::Embedding("the embedder returned no vector".into()))?;
            let other_vectors = self.other.borrow();
            let state = self.state.borrow();
            let now = self.clock.now_ms();
            let Some(vectors) = other_vectors
                .as_ref()
                .and_then(|other| other.by_version.get(version))
            else {
                continue;
            };
            scored.extend(vectors.iter().filter_map(|(id, vector)| {
                let entry = state.entries.get(id)?;
                let wanted = !entry.searchable
                    && kind.is_none_or(|kind| entry.kind == kind)
                    && !self.expired_at(entry.kind, entry.created_at, now)
                    && vector.len() == query_vector.len();
                let similarity = wanted.then(|| cosine(&query_vector, vector))?;
                (f64::from(similarity) >= min_similarity).then(|| (id.clone(), similarity))
            }));
        }
        if scored.is_empty() {
            return Ok(hits);
        }
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        scored.truncate(k as usize);
        hits.extend(self.hits_of(scored).await?);
        hits.sort_by(|a, b| {
            b.similarity
                .total_cmp(&a.similarity)
                .then_with(|| a.id.cmp(&b.id))
        });
        hits.truncate(k as usize);
        Ok(hits)
    }

    /// Reads the vectors of the memories of the `wanted` versions (those the caller has an
    /// embedder of), a chunk per transaction, and keeps them in step from then on. Until it has
    /// run, [`Memories::search_all_versions`] searches the active version only.
    pub async fn read_other_versions(&self, wanted: Vec<String>) -> Result<()> {
        let ids = self.other_version_ids();
        let mut other = OtherVectors {
            wanted,
            by_version: HashMap::new(),
        };
        for chunk in ids.chunks(READ_CHUNK) {
            let rows = self.store.get(Table::Memories, chunk.to_vec()).await?;
            for row in rows.iter().flatten() {
                other.note(row, &self.model.version);
            }
        }
        // Rows changed meanwhile were noted in the index; they are noted here at their next
        // change, or re-embedded.
        *self.other.borrow_mut() = Some(other);
        Ok(())
    }

    /// Keeps the other versions' vectors in step with `rows`, just written or re-read.
    pub(super) fn note_other_rows<'a>(&self, rows: impl IntoIterator<Item = &'a Row>) {
        if let Some(other) = self.other.borrow_mut().as_mut() {
            for row in rows {
                other.note(row, &self.model.version);
            }
        }
    }

    /// Drops `ids` from the other versions' vectors (re-embedded or deleted).
    pub(super) fn drop_other_vectors(&self, ids: &[String]) {
        if let Some(other) = self.other.borrow_mut().as_mut() {
            for vectors in other.by_version.values_mut() {
                for id in ids {
                    vectors.remove(id);
                }
            }
        }
    }

    /// Forgets every other version's vector (a restore that cleared the memories), keeping the
    /// versions wanted.
    pub(super) fn clear_other_vectors(&self) {
        if let Some(other) = self.other.borrow_mut().as_mut() {
            other.by_version.clear();
        }
    }
}
