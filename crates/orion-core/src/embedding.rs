//! Sentence embeddings: the contract every embedder (MiniLM f32, MiniLM quantized, hashing) meets.

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use crate::error::Result;

/// A boxed future that need not be `Send`: the worker is one thread.
pub type LocalBoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// What an embedder is. Vectors of different `version`s are never compared: a version change
/// means re-embedding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmbeddingModelInfo {
    /// The model, e.g. `sentence-transformers/all-MiniLM-L6-v2`.
    pub id: String,
    /// Model id, revision and variant, e.g. `all-MiniLM-L6-v2@main/f32`.
    pub version: String,
    /// Vector length.
    pub dims: usize,
}

/// Turns texts into unit vectors (mean-pooled over real tokens, L2-normalised).
pub trait Embedder {
    /// What this embedder is.
    fn info(&self) -> &EmbeddingModelInfo;

    /// One vector of `info().dims` numbers per text, in order. Any text embeds, including the
    /// empty string: the result is always a finite unit vector.
    fn embed<'a>(&'a self, texts: &'a [&'a str]) -> LocalBoxFuture<'a, Result<Vec<Vec<f32>>>>;
}

/// Scales `vector` to unit length in place. A zero (or non-finite) vector cannot be normalised;
/// it is left as a zero vector and `false` is returned.
pub fn normalize(vector: &mut [f32]) -> bool {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if !(norm.is_finite() && norm > 0.0) {
        vector.iter_mut().for_each(|x| *x = 0.0);
        return false;
    }
    vector.iter_mut().for_each(|x| *x /= norm);
    true
}

/// The cosine similarity of two vectors of the same length (0 when either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_makes_unit_vectors_and_refuses_zero() {
        let mut v = vec![3.0, 4.0];
        assert!(normalize(&mut v));
        assert_eq!(v, [0.6, 0.8]);
        let mut zero = vec![0.0; 3];
        assert!(!normalize(&mut zero));
        let mut nan = vec![f32::NAN, 1.0];
        assert!(!normalize(&mut nan));
        assert_eq!(nan, [0.0, 0.0]);
    }

    #[test]
    fn cosine_of_parallel_orthogonal_and_zero_vectors() {
        assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-6);
        assert_eq!(cosine(&[1.0, 0.0], &[0.0, 1.0]), 0.0);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 1.0]), 0.0);
    }
}
