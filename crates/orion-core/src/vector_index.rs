//! Exact top-k search by cosine over unit vectors held contiguously in memory.
//!
//! Vectors are unit length (the embedders normalise them), so cosine is a dot product. They live in
//! one `Vec<f32>`, row after row, and a removal moves the last row into the hole, so the scan
//! is a straight pass over memory. The dot product runs eight independent accumulators, a shape
//! LLVM turns into wasm `f32x4` (or AVX) instructions when SIMD is enabled, without unsafe
//! intrinsics. At 100 000 vectors the f32 scan reads 154 MB per query and is bound by memory
//! bandwidth, so a search first scans 8-bit copies of the vectors with a rigorous error bound,
//! narrows the rows that can still be in the top k with a tighter bound (the f32 query against
//! their codes), and computes exact similarities for those only: about 20–30 of 100 000 in
//! measurements with the hashing embedder, against 100–300 after the first bound alone.
//!
//! A row may be held by its codes alone for a while ([`VectorIndex::insert_codes`]: a start loads
//! a saved index's codes, a quarter of its bytes, and the exact vectors later); a search then
//! names the shortlisted rows whose exact vectors it needs ([`VectorIndex::missing`]) and the
//! caller supplies them ([`VectorIndex::fill`]) before ranking. An approximate index (HNSW) is not
//! used: results stay exact, and at the sizes the profiles allow (≤ 100 000 vectors) the scan is
//! measured in `docs/BENCHMARKS.md`.

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
    /// The vectors again as 8-bit codes, row after row: the first pass of a search reads these
    /// (a quarter of the memory traffic; the scan is bound by memory bandwidth).
    codes: Vec<i8>,
    /// Per row: the code scale (`x ≈ scale × code`) and the L1 norm of the codes, for the bound
    /// on the first pass's error.
    code_scales: Vec<(f32, f32)>,
    /// Per row: whether `data` holds its exact vector (rows inserted by their codes alone do not,
    /// until filled).
    exact: Vec<bool>,
    /// How many rows are not exact.
    inexact: usize,
}

/// The first pass of a search ([`VectorIndex::shortlist`]): every key that may be among the `k`
/// most similar; [`VectorIndex::rank`] computes their exact similarities.
#[derive(Debug, Clone)]
pub struct Shortlist<K> {
    keys: Vec<K>,
    k: usize,
    min_similarity: f32,
}

impl<K> Shortlist<K> {
    /// The keys shortlisted.
    pub fn keys(&self) -> &[K] {
        &self.keys
    }
}

impl<K: Clone + Eq + std::hash::Hash + Ord> VectorIndex<K> {
    /// An empty index of `dims`-dimensional vectors.
    pub fn new(dims: usize) -> Self {
        Self {
            dims,
            data: Vec::new(),
            keys: Vec::new(),
            slots: HashMap::new(),
            codes: Vec::new(),
            code_scales: Vec::new(),
            exact: Vec::new(),
            inexact: 0,
        }
    }

    /// Makes room for `additional` more vectors at once (a load knows how many are coming).
    pub fn reserve(&mut self, additional: usize) {
        self.data.reserve(additional * self.dims);
        self.codes.reserve(additional * self.dims);
        self.keys.reserve(additional);
        self.slots.reserve(additional);
        self.code_scales.reserve(additional);
        self.exact.reserve(additional);
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
        let slot = self.slot_for(key);
        let start = slot * self.dims;
        self.data[start..start + self.dims].copy_from_slice(vector);
        self.code_scales[slot] = quantize_into(vector, &mut self.codes[start..start + self.dims]);
        self.set_exact(slot, true);
        true
    }

    /// Inserts or replaces `key` by its 8-bit codes and their scale alone, as [`VectorIndex::codes`]
    /// gave them: the first pass of a search reads it, and it ranks once its exact vector is
    /// [filled](VectorIndex::fill). Returns `false` (and changes nothing) when the codes have the
    /// wrong dimension or the scale is not a finite non-negative number.
    pub fn insert_codes(&mut self, key: K, codes: &[i8], scale: f32) -> bool {
        if codes.len() != self.dims || !scale.is_finite() || scale < 0.0 {
            return false;
        }
        let slot = self.slot_for(key);
        let start = slot * self.dims;
        self.codes[start..start + self.dims].copy_from_slice(codes);
        let l1 = codes.iter().map(|c| f32::from(c.unsigned_abs())).sum();
        self.code_scales[slot] = (scale, l1);
        self.set_exact(slot, false);
        true
    }

    /// Gives `key` its exact vector if it is held by its codes alone (then as [`upsert`]: the
    /// codes are computed again from it); returns whether it did.
    ///
    /// [`upsert`]: VectorIndex::upsert
    pub fn fill(&mut self, key: &K, vector: &[f32]) -> bool {
        match self.slots.get(key) {
            Some(&slot) if !self.exact[slot] => self.upsert(key.clone(), vector),
            _ => false,
        }
    }

    /// `key`'s 8-bit codes and their scale (what [`VectorIndex::insert_codes`] takes back).
    pub fn codes(&self, key: &K) -> Option<(&[i8], f32)> {
        let slot = *self.slots.get(key)?;
        let codes = self.codes.get(slot * self.dims..(slot + 1) * self.dims)?;
        Some((codes, self.code_scales.get(slot)?.0))
    }

    /// Whether every vector is held exactly (none by its codes alone).
    pub fn is_exact(&self) -> bool {
        self.inexact == 0
    }

    /// The keys held by their codes alone.
    pub fn inexact_keys(&self) -> Vec<K> {
        self.keys
            .iter()
            .zip(&self.exact)
            .filter(|(_, exact)| !**exact)
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// `key`'s slot, a new one (zeroed, counted as exact) when it has none.
    fn slot_for(&mut self, key: K) -> usize {
        if let Some(&slot) = self.slots.get(&key) {
            return slot;
        }
        let slot = self.keys.len();
        self.slots.insert(key.clone(), slot);
        self.keys.push(key);
        self.data.resize((slot + 1) * self.dims, 0.0);
        self.codes.resize((slot + 1) * self.dims, 0);
        self.code_scales.push((0.0, 0.0));
        self.exact.push(true);
        slot
    }

    fn set_exact(&mut self, slot: usize, exact: bool) {
        if self.exact[slot] != exact {
            self.exact[slot] = exact;
            if exact {
                self.inexact -= 1;
            } else {
                self.inexact += 1;
            }
        }
    }

    /// Removes `key`'s vector; returns whether it was there.
    pub fn remove(&mut self, key: &K) -> bool {
        let Some(slot) = self.slots.remove(key) else {
            return false;
        };
        let last = self.keys.len() - 1;
        self.set_exact(slot, true);
        if slot != last {
            let (head, tail) = self.data.split_at_mut(last * self.dims);
            head[slot * self.dims..(slot + 1) * self.dims].copy_from_slice(&tail[..self.dims]);
            let (head, tail) = self.codes.split_at_mut(last * self.dims);
            head[slot * self.dims..(slot + 1) * self.dims].copy_from_slice(&tail[..self.dims]);
            self.code_scales.swap(slot, last);
            self.exact.swap(slot, last);
            self.keys.swap(slot, last);
            self.slots.insert(self.keys[slot].clone(), slot);
        }
        self.keys.pop();
        self.data.truncate(last * self.dims);
        self.codes.truncate(last * self.dims);
        self.code_scales.pop();
        self.exact.pop();
        true
    }

    /// `key`'s exact vector, if it has one (not while it is held by its codes alone).
    pub fn get(&self, key: &K) -> Option<&[f32]> {
        let slot = *self.slots.get(key)?;
        if !self.exact[slot] {
            return None;
        }
        self.data.get(slot * self.dims..(slot + 1) * self.dims)
    }

    /// Removes every vector.
    pub fn clear(&mut self) {
        self.data.clear();
        self.keys.clear();
        self.slots.clear();
        self.codes.clear();
        self.code_scales.clear();
        self.exact.clear();
        self.inexact = 0;
    }

    /// The `k` keys most similar to `query` among those `accept` lets through, at least
    /// `min_similarity`, best first (ties broken by key, so results are deterministic).
    ///
    /// Exact, in two passes: [`VectorIndex::shortlist`] then [`VectorIndex::rank`]. Rows held by
    /// their codes alone are left out: a caller that may hold such rows fills the shortlist's
    /// [missing](VectorIndex::missing) vectors between the two.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        min_similarity: f32,
        accept: impl FnMut(&K) -> bool,
    ) -> Vec<Hit<K>> {
        let shortlist = self.shortlist(query, k, min_similarity, accept);
        self.rank(query, &shortlist)
    }

    /// The first pass of a search: reads the 8-bit codes, and for each row an estimate of the
    /// similarity and a bound on its error, from which it keeps exactly the accepted rows whose
    /// upper bound reaches the k-th best lower bound (any row of the true top k does).
    pub fn shortlist(
        &self,
        query: &[f32],
        k: usize,
        min_similarity: f32,
        mut accept: impl FnMut(&K) -> bool,
    ) -> Shortlist<K> {
        let mut shortlist = Shortlist {
            keys: Vec::new(),
            k,
            min_similarity,
        };
        if query.len() != self.dims || k == 0 || self.dims == 0 {
            return shortlist;
        }
        let (query_codes, (query_scale, query_l1)) = quantize(query);
        // |q·x − estimate| ≤ qs·xs/2 · (‖q codes‖₁ + ‖x codes‖₁) + dims·qs·xs/4, plus float
        // rounding, which the slack covers.
        let slack = 1e-4;
        let mut estimates = Vec::with_capacity(self.keys.len());
        // The k best lower bounds among accepted rows, smallest on top.
        let mut lower_bounds: BinaryHeap<std::cmp::Reverse<OrderedF32>> =
            BinaryHeap::with_capacity(k + 1);
        for (slot, (codes, &(scale, l1))) in self
            .codes
            .chunks_exact(self.dims)
            .zip(&self.code_scales)
            .enumerate()
        {
            let estimate = dot_i8(codes, &query_codes) as f32 * scale * query_scale;
            let error =
                query_scale * scale * (0.5 * (query_l1 + l1) + 0.25 * self.dims as f32) + slack;
            estimates.push(estimate + error);
            let lower = estimate - error;
            let full = lower_bounds.len() == k;
            let better = lower_bounds
                .peek()
                .is_none_or(|weakest| lower > weakest.0 .0);
            if (!full || better) && accept(&self.keys[slot]) {
                lower_bounds.push(std::cmp::Reverse(OrderedF32(lower)));
                if lower_bounds.len() > k {
                    lower_bounds.pop();
                }
            }
        }
        let threshold = match lower_bounds.peek() {
            Some(weakest) if lower_bounds.len() == k => weakest.0 .0.max(min_similarity),
            _ => min_similarity,
        };
        let candidates: Vec<usize> = estimates
            .iter()
            .enumerate()
            .filter(|(slot, upper)| **upper >= threshold && accept(&self.keys[*slot]))
            .map(|(slot, _)| slot)
            .collect();
        shortlist.keys = self
            .refine(query, k, min_similarity, candidates)
            .into_iter()
            .map(|slot| self.keys[slot].clone())
            .collect();
        shortlist
    }

    /// Narrows the first pass's candidates with a tighter bound, still from the codes: the query
    /// in f32 against a row's codes leaves only the row's rounding, |q·x − xs·(q·x codes)| ≤
    /// xs/2 · ‖q‖₁. Costs a few f32 products per candidate; the rows it drops need no exact vector
    /// (which a start may still have to read from storage).
    fn refine(
        &self,
        query: &[f32],
        k: usize,
        min_similarity: f32,
        slots: Vec<usize>,
    ) -> Vec<usize> {
        if slots.len() <= k {
            return slots;
        }
        let query_l1: f32 = query.iter().map(|x| x.abs()).sum();
        let bounds: Vec<(f32, f32)> = slots
            .iter()
            .map(|&slot| {
                let (scale, _) = self.code_scales[slot];
                let start = slot * self.dims;
                let estimate = scale * dot_codes(&self.codes[start..start + self.dims], query);
                let error = scale * 0.5 * query_l1 + 1e-4;
                (estimate - error, estimate + error)
            })
            .collect();
        let mut lowers: Vec<f32> = bounds.iter().map(|b| b.0).collect();
        // The k-th best lower bound: at least k rows reach it, so no row below it is in the top k.
        let (_, kth, _) = lowers.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
        let threshold = kth.max(min_similarity);
        slots
            .into_iter()
            .zip(bounds)
            .filter(|(_, (_, upper))| *upper >= threshold)
            .map(|(slot, _)| slot)
            .collect()
    }

    /// The shortlisted keys held by their codes alone: [`VectorIndex::rank`] leaves them out
    /// unless they are [filled](VectorIndex::fill) first.
    pub fn missing(&self, shortlist: &Shortlist<K>) -> Vec<K> {
        shortlist
            .keys
            .iter()
            .filter(|key| self.slots.get(key).is_some_and(|&slot| !self.exact[slot]))
            .cloned()
            .collect()
    }

    /// The second pass of a search: the exact similarities of the shortlisted keys the index
    /// still holds exactly, the best `k` of those at least the minimum, best first.
    pub fn rank(&self, query: &[f32], shortlist: &Shortlist<K>) -> Vec<Hit<K>> {
        let k = shortlist.k;
        let mut best: BinaryHeap<Candidate<'_, K>> = BinaryHeap::with_capacity(k + 1);
        for key in &shortlist.keys {
            let Some(vector) = self.get(key) else {
                continue;
            };
            let similarity = dot(vector, query);
            if similarity < shortlist.min_similarity || similarity.is_nan() {
                continue;
            }
            best.push(Candidate { similarity, key });
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

/// An f32 with a total order (for the heap of lower bounds).
#[derive(Clone, Copy, PartialEq)]
struct OrderedF32(f32);

impl Eq for OrderedF32 {}

impl PartialOrd for OrderedF32 {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrderedF32 {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// `vector` as 8-bit codes with their scale (`x ≈ scale × code`) and the codes' L1 norm.
fn quantize(vector: &[f32]) -> (Vec<i8>, (f32, f32)) {
    let mut codes = vec![0; vector.len()];
    let scale = quantize_into(vector, &mut codes);
    (codes, scale)
}

/// Writes `vector`'s 8-bit codes into `codes`; returns their scale and L1 norm.
fn quantize_into(vector: &[f32], codes: &mut [i8]) -> (f32, f32) {
    let max = vector
        .iter()
        .filter(|x| x.is_finite())
        .fold(0.0f32, |m, x| m.max(x.abs()));
    if max == 0.0 {
        codes.fill(0);
        return (0.0, 0.0);
    }
    let scale = max / 127.0;
    let mut l1 = 0.0;
    for (code, x) in codes.iter_mut().zip(vector) {
        // Ties to even: one wasm instruction (`f32.nearest`), where `round` is a libm call; the
        // error bound only needs the nearest code.
        *code = (x / scale).round_ties_even().clamp(-127.0, 127.0) as i8;
        l1 += f32::from(code.unsigned_abs());
    }
    (scale, l1)
}

/// The dot product of 8-bit codes, summed in i32 over fixed-size blocks (vectorises like
/// [`dot`]).
fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    const LANES: usize = 16;
    let len = a.len().min(b.len());
    let blocks = len / LANES * LANES;
    let mut sums = [0i32; LANES];
    for (x, y) in a[..blocks]
        .chunks_exact(LANES)
        .zip(b[..blocks].chunks_exact(LANES))
    {
        if let (Ok(x), Ok(y)) = (<&[i8; LANES]>::try_from(x), <&[i8; LANES]>::try_from(y)) {
            for lane in 0..LANES {
                sums[lane] += i32::from(x[lane]) * i32::from(y[lane]);
            }
        }
    }
    let tail: i32 = a[blocks..len]
        .iter()
        .zip(&b[blocks..len])
        .map(|(x, y)| i32::from(*x) * i32::from(*y))
        .sum();
    sums.iter().sum::<i32>() + tail
}

/// The dot product of 8-bit codes with an f32 vector (vectorises like [`dot`]).
fn dot_codes(codes: &[i8], vector: &[f32]) -> f32 {
    const LANES: usize = 8;
    let len = codes.len().min(vector.len());
    let blocks = len / LANES * LANES;
    let mut sums = [0.0f32; LANES];
    for (x, y) in codes[..blocks]
        .chunks_exact(LANES)
        .zip(vector[..blocks].chunks_exact(LANES))
    {
        if let (Ok(x), Ok(y)) = (<&[i8; LANES]>::try_from(x), <&[f32; LANES]>::try_from(y)) {
            for lane in 0..LANES {
                sums[lane] += f32::from(x[lane]) * y[lane];
            }
        }
    }
    let tail: f32 = codes[blocks..len]
        .iter()
        .zip(&vector[blocks..len])
        .map(|(x, y)| f32::from(*x) * y)
        .sum();
    sums.iter().sum::<f32>() + tail
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

    #[test]
    fn rows_held_by_their_codes_rank_once_filled() {
        let dims = 32;
        let mut exact = VectorIndex::new(dims);
        for key in 0..200u32 {
            exact.upsert(key, &unit(u64::from(key) + 5, dims));
        }
        let mut coded = VectorIndex::new(dims);
        coded.reserve(200);
        for key in 0..200u32 {
            let (codes, scale) = exact.codes(&key).unwrap();
            assert!(coded.insert_codes(key, codes, scale));
        }
        assert!(!coded.is_exact());
        assert_eq!(coded.inexact_keys().len(), 200);
        assert_eq!(coded.get(&3), None, "no exact vector yet");
        let query = unit(999, dims);
        let shortlist = coded.shortlist(&query, 5, -1.0, |_| true);
        assert_eq!(
            shortlist.keys(),
            exact.shortlist(&query, 5, -1.0, |_| true).keys(),
            "the codes alone give the same shortlist"
        );
        assert!(shortlist.keys().len() >= 5);
        assert!(
            coded.rank(&query, &shortlist).is_empty(),
            "nothing exact to rank"
        );
        let missing = coded.missing(&shortlist);
        assert_eq!(missing, shortlist.keys());
        for key in &missing {
            assert!(coded.fill(key, exact.get(key).unwrap()));
            assert!(!coded.fill(key, exact.get(key).unwrap()), "filled once");
        }
        assert!(coded.missing(&shortlist).is_empty());
        assert_eq!(
            coded.rank(&query, &shortlist),
            exact.search(&query, 5, -1.0, |_| true)
        );
        let unfilled = coded.inexact_keys();
        assert_eq!(unfilled.len(), 200 - missing.len());
        assert!(coded.remove(&unfilled[0]));
        for key in &unfilled[1..] {
            assert!(coded.fill(key, exact.get(key).unwrap()));
        }
        assert!(coded.is_exact());
        let (codes, scale) = exact.codes(&7).unwrap();
        assert!(
            !coded.insert_codes(7, &codes[..3], scale),
            "wrong dimension"
        );
        assert!(!coded.insert_codes(7, codes, f32::NAN), "bad scale");
        assert!(coded.is_exact(), "a refused insert changes nothing");
    }

    proptest! {
        #[test]
        fn filtered_search_equals_filtered_brute_force(
            seeds in proptest::collection::vec(0u64..1_000_000, 1..300),
            query_seed in 0u64..1_000_000,
            k in 1usize..12,
            min in -1.0f32..0.9,
            modulus in 1u32..5,
        ) {
            let dims = 48;
            let mut index = VectorIndex::new(dims);
            let mut kept: Vec<(u32, Vec<f32>)> = Vec::new();
            for (key, seed) in seeds.iter().enumerate() {
                let v = unit(*seed, dims);
                index.upsert(key as u32, &v);
                if key as u32 % modulus == 0 {
                    kept.push((key as u32, v));
                }
            }
            let query = unit(query_seed, dims);
            let expected = brute_force(&kept, &query, k, min);
            let got = index.search(&query, k, min, |key| key % modulus == 0);
            prop_assert_eq!(got.len(), expected.len());
            for (hit, (key, similarity)) in got.iter().zip(&expected) {
                prop_assert!((hit.similarity - similarity).abs() < 1e-5);
                if (hit.similarity - similarity).abs() > 1e-6 {
                    prop_assert_eq!(hit.key, *key);
                }
            }
        }

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
