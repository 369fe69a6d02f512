//! Memories of another embedder version, searched with their own version's vectors until the
//! re-embedding migration ([`Memories::reembed`]) gives them one of the active version.
//!
//! The index holds the active version's vectors only. For a search, the caller passes the
//! embedders it has of other versions (the micro profile's hashing embedder is always at hand):
//! the query is embedded by each, and compared with the vectors of memories of that version only
//! (never a vector with one of another version); the hits of all versions are merged by
//! similarity. Memories of a version no embedder at hand makes are not searched until migrated.
//!
//! The other versions' vectors are read from their rows at the first such search and kept (a
//! migration only removes from them); a restore or another tab's change makes them read again.

use std::collections::HashMap;

use super::{Memories, SearchHit, EMBEDDING};
use crate::embedding::{cosine, Embedder};
use crate::error::{Error, Result};
use crate::store::Table;

/// Rows read per transaction when the other versions' vectors are read.
const READ_CHUNK: usize = 500;

/// The vectors of memories of other versions: by version, then by memory id.
pub(super) type OtherVectors = HashMap<String, HashMap<String, Vec<f32>>>;

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
        if self.to_reembed() == 0 {
            return Ok(hits);
        }
        let kind = self.check_search(query, k, min_similarity, kind)?;
        self.read_other_versions().await?;
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
                .and_then(|by_version| by_version.get(version))
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
            let Some(vectors) = other_vectors.as_ref().and_then(|v| v.get(version)) else {
                continue;
            };
            scored.extend(vectors.iter().filter_map(|(id, vector)| {
                let entry = state.entries.get(id)?;
                let wanted = !entry.searchable
                    && kind.is_none_or(|kind| entry.kind == kind)
                    && !self.expired_at(entry.kind, entry.created_at, now)
                    && vector.len() == query_vector.len();
                let similarity = cosine(&query_vector, vector);
                (wanted && f64::from(similarity) >= min_similarity)
                    .then(|| (id.clone(), similarity))
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

    /// Reads the vectors of the memories of other versions, unless they are held already.
    async fn read_other_versions(&self) -> Result<()> {
        if self.other.borrow().is_some() {
            return Ok(());
        }
        let mut ids: Vec<String> = self
            .state
            .borrow()
            .entries
            .iter()
            .filter(|(_, entry)| !entry.searchable)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort_unstable();
        let mut by_version = OtherVectors::new();
        for chunk in ids.chunks(READ_CHUNK) {
            let rows = self.store.get(Table::Memories, chunk.to_vec()).await?;
            for row in rows.into_iter().flatten() {
                let (Ok(version), Ok(vector)) = (
                    row.str_field("embeddingVersion"),
                    row.vector_field(EMBEDDING),
                ) else {
                    continue;
                };
                if version != self.model.version {
                    let vector = vector.to_vec();
                    by_version
                        .entry(version.to_owned())
                        .or_default()
                        .insert(row.id.clone(), vector);
                }
            }
        }
        *self.other.borrow_mut() = Some(by_version);
        Ok(())
    }

    /// Drops `ids` from the other versions' vectors (re-embedded or deleted).
    pub(super) fn drop_other_vectors(&self, ids: &[String]) {
        if let Some(by_version) = self.other.borrow_mut().as_mut() {
            for vectors in by_version.values_mut() {
                for id in ids {
                    vectors.remove(id);
                }
            }
        }
    }

    /// Forgets the other versions' vectors: the next search that needs them reads them again.
    pub(super) fn reread_other_vectors(&self) {
        *self.other.borrow_mut() = None;
    }
}
