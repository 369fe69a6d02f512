//! Exact top-k search by cosine over unit vectors held contiguously in memory.
//!
//! Vectors are unit length (the embedders normalise them), so cosine is a dot product. They live in
//! one `Vec<f32>`, row after row, and a removal moves the last row into the hole, so the scan
//! is a straight pass over memory. The dot product runs eight independent accumulators, a shape
//! LLVM turns into wasm `f32x4` (or AVX) instructions when SIMD is enabled, without unsafe
//! intrinsics. An approximate index (HNSW) is not used: at the sizes the profiles allow (≤ 100 000
//! vectors) the exact scan is within the latency target; see `docs/BENCHMARKS.md`.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// A search hit: the slot's key and its cosine similarity to the query.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit<K> {
    /// The key the vector was inserted with.
    pub key: K,
    /// Cosine similarity, in [-1, 1].
    pub similarity: f32,
}

/// Vectors of one dimension, by key.
#[derive(Debug, Clone)]
pub struct VectorIndex<K> {
    dims: usize,
    data: Vec<f32>,
    keys: Vec<K>,
    slots: HashMap<K, usize>,
}

impl<K: Clone + Eq + std::hash::Hash + Ord> VectorIndex<K> {
    /// An empty index of `dims`-dimensional vectors.
    pub fn new(dims: usize) -> Self {
        Self {
            dims,
            data: Vec::new(),
            keys: Vec::new(),
            slots: HashMap::new(),
        }
    }

    /// The vectors' dimension.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// How many vectors it holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether `key` has a vector here.
    pub fn contains(&self, key: &K) -> bool {
        self.slots.contains_key(key)
    }

    /// Inserts or replaces `key`'s vector. Returns `false` (and changes nothing) when the vector
    /// has the wrong dimension.
    pub fn upsert(&mut self, key: K, vector: &[f32]) -> bool {
        if vector.len() != self.dims {
            return false;
        }
        match self.slots.get(&key) {
            Some(&slot) => {
                let start = slot * self.dims;
                self.data[start..start + self.dims].copy_from_slice(vector);
            }
            None => {
                self.slots.insert(key.clone(), self.keys.len());
                self.keys.push(key);
                self.data.extend_from_slice(vector);
            }
        }
        true
    }

    /// Removes `key`'s vector; returns whether it was there.
    pub fn remove(&mut self, key: &K) -> bool {
        let Some(slot) = self.slots.remove(key) else {
            return false;
        };
        let last = self.keys.len() - 1;
        if slot != last {
            let (head, tail) = self.data.split_at_mut(last * self.dims);
            head[slot * self.dims..(slot + 1) * self.dims].copy_from_slice(&tail[..self.dims]);
            self.keys.swap(slot, last);
            self.slots.insert(self.keys[slot].clone(), slot);
        }
        self.keys.pop();
        self.data.truncate(last * self.dims);
        true
    }

    /// `key`'s vector, if it has one.
    pub fn get(&self, key: &K) -> Option<&[f32]> {
        let slot = *self.slots.get(key)?;
        self.data.get(slot * self.dims..(slot + 1) * self.dims)
    }

    /// Every key with its vector, in storage order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &[f32])> {
        self.keys
            .iter()
            .zip(self.data.chunks_exact(self.dims.max(1)))
    }

    /// Removes every vector.
    pub fn clear(&mut self) {
        self.data.clear();
        self.keys.clear();
        self.slots.clear();
    }

    /// The `k` keys most similar to `query` among those `accept` lets through, at least
    /// `min_similarity`, best first (ties broken by key, so results are deterministic).
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        min_similarity: f32,
        mut accept: impl FnMut(&K) -> bool,
    ) -> Vec<Hit<K>> {
        if query.len() != self.dims || k == 0 || self.dims == 0 {
            return Vec::new();
        }
        // A min-heap of the best k so far: its top is the weakest, replaced by anything better.
        let mut best: BinaryHeap<Candidate<'_, K>> = BinaryHeap::with_capacity(k + 1);
        for (row, key) in self.data.chunks_exact(self.dims).zip(&self.keys) {
            let similarity = dot(row, query);
            if similarity < min_similarity || similarity.is_nan() {
                continue;
            }
            let candidate = Candidate { similarity, key };
            if best.len() == k {
                match best.peek() {
                    Some(weakest) if candidate.cmp(weakest) == Ordering::Less => {}
                    _ => continue,
                }
            }
            if !accept(key) {
                continue;
            }
            best.push(candidate);
            if best.len() > k {
                best.pop();
            }
        }
        best.into_sorted_vec()
            .into_iter()
            .map(|c| Hit {
                key: c.key.clone(),
                similarity: c.similarity,
            })
            .collect()
    }
}

/// Orders candidates so that the *weakest* is the greatest: higher similarity is "less", and on
/// equal similarity the greater key is weaker.
struct Candidate<'a, K> {
    similarity: f32,
    key: &'a K,
}

impl<K: Ord> Ord for Candidate<'_, K> {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .similarity
            .total_cmp(&self.similarity)
            .then_with(|| self.key.cmp(other.key))
    }
}

impl<K: Ord> PartialOrd for Candidate<'_, K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<K: Ord> PartialEq for Candidate<'_, K> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl<K: Ord> Eq for Candidate<'_, K> {}

/// The dot product of two equally long slices, in a shape that vectorises.
///
/// Eight independent sums over fixed-size `[f32; 8]` blocks: with the block length known, LLVM
/// drops the bounds checks and emits two `f32x4` multiply-adds per block on wasm32 with
/// `simd128` (and AVX on x86), where a loop over slices stays scalar.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let len = a.len().min(b.len());
    let blocks = len / LANES * LANES;
    let mut sums = [0.0f32; LANES];
    for (x, y) in a[..blocks]
        .chunks_exact(LANES)
        .zip(b[..blocks].chunks_exact(LANES))
    {
        if let (Ok(x), Ok(y)) = (<&[f32; LANES]>::try_from(x), <&[f32; LANES]>::try_from(y)) {
            for lane in 0..LANES {
                sums[lane] += x[lane] * y[lane];
            }
        }
    }
    let tail: f32 = a[blocks..len]
        .iter()
        .zip(&b[blocks..len])
        .map(|(x, y)| x * y)
        .sum();
    let pairs = [
        sums[0] + sums[4],
        sums[1] + sums[5],
        sums[2] + sums[6],
        sums[3] + sums[7],
    ];
    (pairs[0] + pairs[2]) + (pairs[1] + pairs[3]) + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedding::normalize;
    use proptest::prelude::*;

    fn unit(seed: u64, dims: usize) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut v: Vec<f32> = (0..dims)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % 2001) as f32 / 1000.0 - 1.0
            })
            .collect();
        normalize(&mut v);
        v
    }

    fn brute_force(
        vectors: &[(u32, Vec<f32>)],
        query: &[f32],
        k: usize,
        min: f32,
    ) -> Vec<(u32, f32)> {
        let mut all: Vec<(u32, f32)> = vectors
            .iter()
            .map(|(key, v)| (*key, v.iter().zip(query).map(|(a, b)| a * b).sum::<f32>()))
            .filter(|(_, s)| *s >= min)
            .collect();
        all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(k);
        all
    }

    #[test]
    fn dot_matches_the_naive_sum_for_any_length() {
        for len in [0, 1, 7, 8, 9, 383, 384, 385] {
            let a = unit(len as u64 + 1, len.max(1))[..len].to_vec();
            let b = unit(len as u64 + 99, len.max(1))[..len].to_vec();
            let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - naive).abs() < 1e-5, "len {len}");
        }
    }

    #[test]
    fn remove_moves_the_last_vector_into_the_hole() {
        let mut index = VectorIndex::new(2);
        for (key, v) in [(1u32, [1.0, 0.0]), (2, [0.0, 1.0]), (3, [0.6, 0.8])] {
            assert!(index.upsert(key, &v));
        }
        assert!(index.remove(&1));
        assert!(!index.remove(&1));
        assert_eq!(index.len(), 2);
        let hits = index.search(&[0.6, 0.8], 1, -1.0, |_| true);
        assert_eq!(hits[0].key, 3);
        assert!((hits[0].similarity - 1.0).abs() < 1e-6);
        assert!(!index.upsert(4, &[1.0, 0.0, 0.0]), "wrong dimension");
        assert!(index.upsert(2, &[0.6, 0.8]), "replace");
        let hits = index.search(&[0.6, 0.8], 5, 0.99, |_| true);
        let keys: Vec<u32> = hits.iter().map(|h| h.key).collect();
        assert_eq!(keys, [2, 3], "ties broken by key");
    }

    #[test]
    fn filters_and_thresholds_apply_before_the_cut() {
        let mut index = VectorIndex::new(3);
        for key in 0..100u32 {
            index.upsert(key, &unit(u64::from(key), 3));
        }
        let query = unit(7, 3);
        let even = index.search(&query, 10, -1.0, |k| k % 2 == 0);
        assert_eq!(even.len(), 10);
        assert!(even.iter().all(|h| h.key % 2 == 0));
        assert!(index.search(&query, 10, 1.01, |_| true).is_empty());
        assert!(index.search(&query, 0, -1.0, |_| true).is_empty());
        assert!(index.search(&[1.0], 3, -1.0, |_| true).is_empty());
    }

    proptest! {
        #[test]
        fn search_equals_brute_force(
            seeds in proptest::collection::vec(0u64..1_000_000, 1..200),
            removals in proptest::collection::vec(0usize..200, 0..50),
            query_seed in 0u64..1_000_000,
            k in 1usize..20,
            min in -1.0f32..0.5,
        ) {
            let dims = 16;
            let mut index = VectorIndex::new(dims);
            let mut live: Vec<(u32, Vec<f32>)> = Vec::new();
            for (key, seed) in seeds.iter().enumerate() {
                let v = unit(*seed, dims);
                index.upsert(key as u32, &v);
                live.push((key as u32, v));
            }
            for r in removals {
                if !live.is_empty() {
                    let (key, _) = live.remove(r % live.len());
                    prop_assert!(index.remove(&key));
                }
            }
            let query = unit(query_seed, dims);
            let expected = brute_force(&live, &query, k, min);
            let got = index.search(&query, k, min, |_| true);
            prop_assert_eq!(got.len(), expected.len());
            for (hit, (key, similarity)) in got.iter().zip(&expected) {
                prop_assert!((hit.similarity - similarity).abs() < 1e-5);
                // Equal similarities may order either way within float noise; the sets match.
                if (hit.similarity - similarity).abs() > 1e-6 {
                    prop_assert_eq!(hit.key, *key);
                }
            }
        }
    }
}
