//! The micro profile's embedder: no model, no download, the same vector on every platform.

use fnv::FnvHasher;
use orion_core::embedding::{normalize, LocalBoxFuture};
use orion_core::error::Result;
use orion_core::{Embedder, EmbeddingModelInfo};
use std::hash::Hasher;

/// Signed feature hashing of word unigrams and bigrams and of character trigrams, into `dims`
/// dimensions, L2-normalised. Similar wording gives similar vectors; meaning does not. The hash is
/// FNV-1a over UTF-8 bytes, so vectors are identical on every platform and across releases of
/// the same version string.
#[derive(Debug, Clone)]
pub struct HashingEmbedder {
    info: EmbeddingModelInfo,
}

/// Word features weigh most; bigrams add word order; trigrams catch morphology and scripts
/// without spaces (CJK).
const WORD_WEIGHT: f32 = 1.0;
const BIGRAM_WEIGHT: f32 = 0.7;
const TRIGRAM_WEIGHT: f32 = 0.4;

impl HashingEmbedder {
    /// The embedder ORION uses on micro devices: 384 dimensions, like MiniLM, though the two
    /// spaces are unrelated (their versions differ).
    pub fn new() -> Self {
        Self::with_dims(384)
    }

    /// An embedder with `dims` dimensions (at least 1).
    pub fn with_dims(dims: usize) -> Self {
        let dims = dims.max(1);
        Self {
            info: EmbeddingModelInfo {
                id: "orion/hashing".into(),
                version: format!("orion-hashing-v1/{dims}"),
                dims,
            },
        }
    }

    /// Embeds one text.
    pub fn embed_one(&self, text: &str) -> Vec<f32> {
        let mut vector = vec![0.0; self.info.dims];
        let lower = text.to_lowercase();
        let words: Vec<&str> = lower
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        for word in &words {
            self.add(&mut vector, &["w", word], WORD_WEIGHT);
            let chars: Vec<char> = std::iter::once('<')
                .chain(word.chars())
                .chain(std::iter::once('>'))
                .collect();
            for trigram in chars.windows(3) {
                let trigram: String = trigram.iter().collect();
                self.add(&mut vector, &["c", &trigram], TRIGRAM_WEIGHT);
            }
        }
        for pair in words.windows(2) {
            self.add(&mut vector, &["b", pair[0], pair[1]], BIGRAM_WEIGHT);
        }
        if words.is_empty() {
            // Emoji, punctuation or nothing at all: hash the visible characters, or a marker for
            // an empty text, so every text gets a unit vector.
            let visible: Vec<char> = lower.chars().filter(|c| !c.is_whitespace()).collect();
            for c in &visible {
                self.add(&mut vector, &["s", c.encode_utf8(&mut [0; 4])], WORD_WEIGHT);
            }
            if visible.is_empty() {
                self.add(&mut vector, &["empty"], WORD_WEIGHT);
            }
        }
        normalize(&mut vector);
        vector
    }

    fn add(&self, vector: &mut [f32], parts: &[&str], weight: f32) {
        let mut hasher = FnvHasher::default();
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                // A separator that cannot occur in a part keeps ("ab","c") apart from ("a","bc").
                hasher.write(&[0xff]);
            }
            hasher.write(part.as_bytes());
        }
        let hash = hasher.finish();
        let index = (hash % vector.len() as u64) as usize;
        let sign = if hash >> 63 == 0 { 1.0 } else { -1.0 };
        if let Some(slot) = vector.get_mut(index) {
            *slot += sign * weight;
        }
    }
}

impl Default for HashingEmbedder {
    fn default() -> Self {
        Self::new()
    }
}

impl Embedder for HashingEmbedder {
    fn info(&self) -> &EmbeddingModelInfo {
        &self.info
    }

    fn embed<'a>(&'a self, texts: &'a [&'a str]) -> LocalBoxFuture<'a, Result<Vec<Vec<f32>>>> {
        Box::pin(async move { Ok(texts.iter().map(|t| self.embed_one(t)).collect()) })
    }
}

#[cfg(test)]
mod tests {
    use orion_core::embedding::cosine;

    use super::*;

    fn unit(v: &[f32]) -> bool {
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        (norm - 1.0).abs() < 1e-5 && v.iter().all(|x| x.is_finite())
    }

    #[test]
    fn every_text_gets_a_finite_unit_vector() {
        let e = HashingEmbedder::new();
        let long = "word ".repeat(5_000);
        for text in [
            "",
            "   \n\t",
            "🙂🎉",
            "東京は日本の首都です",
            "a",
            "!!!",
            long.as_str(),
        ] {
            let v = e.embed_one(text);
            assert_eq!(v.len(), 384);
            assert!(unit(&v), "{text:?}");
        }
    }

    #[test]
    fn similar_wording_is_closer_than_unrelated_text() {
        let e = HashingEmbedder::new();
        let a = e.embed_one("The cat sat on the mat.");
        let b = e.embed_one("A cat was sitting on the mat");
        let c = e.embed_one("Quarterly revenue grew by twelve percent.");
        assert!(cosine(&a, &b) > cosine(&a, &c) + 0.2);
        assert!((cosine(&a, &e.embed_one("the CAT sat on the mat")) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn the_version_names_the_dimensions() {
        assert_eq!(
            HashingEmbedder::new().info().version,
            "orion-hashing-v1/384"
        );
        assert_eq!(HashingEmbedder::with_dims(0).info().dims, 1);
    }
}
