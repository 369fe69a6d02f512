//! Reference data shared by the native and the wasm parity tests. It is compiled in, so the wasm
//! tests need no file access.
#![allow(dead_code)] // each test binary uses a different part

use serde::Deserialize;

/// `shared/reference/minilm-reference.json`: sentences and PyTorch's embeddings of them.
#[derive(Deserialize)]
pub struct Reference {
    pub sentences: Vec<String>,
    pub embeddings: Vec<Vec<f32>>,
}

/// `shared/reference/sts.json`: scored pairs and PyTorch's Spearman on them.
#[derive(Deserialize)]
pub struct Sts {
    pub pairs: Vec<Pair>,
    pub pytorch_spearman_x100: f64,
}

#[derive(Deserialize)]
pub struct Pair {
    pub s1: String,
    pub s2: String,
    pub score: f64,
}

pub fn reference() -> Reference {
    let text = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/reference/minilm-reference.json"
    ));
    serde_json::from_str(text).unwrap()
}

pub fn sts() -> Sts {
    let text = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/reference/sts.json"
    ));
    serde_json::from_str(text).unwrap()
}

/// Texts that must embed to finite unit vectors: empty, blank, emoji, CJK, and far over 256 tokens.
pub fn edge_cases() -> Vec<String> {
    vec![
        String::new(),
        " \n\t ".into(),
        "🙂🎉🚀".into(),
        "東京は日本の首都です。".into(),
        "naïve café — ünïcödé".into(),
        "token ".repeat(2_000),
        "x".repeat(10_000),
    ]
}

/// The worst and the mean cosine of `vectors` against the reference embeddings, in order.
pub fn worst_and_mean_cosine(vectors: &[Vec<f32>], reference: &Reference) -> (f32, f32) {
    let cosines: Vec<f32> = vectors
        .iter()
        .zip(&reference.embeddings)
        .map(|(v, r)| orion_core::embedding::cosine(v, r))
        .collect();
    let worst = cosines.iter().copied().fold(1.0f32, f32::min);
    (worst, cosines.iter().sum::<f32>() / cosines.len() as f32)
}

pub fn is_unit(v: &[f32]) -> bool {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().all(|x| x.is_finite()) && (norm - 1.0).abs() < 1e-4
}

/// Spearman ×100 of an embedder's cosines against the human scores.
pub fn sts_spearman_x100(sts: &Sts, embed: impl Fn(&[&str]) -> Vec<Vec<f32>>) -> f64 {
    let left: Vec<&str> = sts.pairs.iter().map(|p| p.s1.as_str()).collect();
    let right: Vec<&str> = sts.pairs.iter().map(|p| p.s2.as_str()).collect();
    let (a, b) = (embed(&left), embed(&right));
    let cosines: Vec<f64> = a
        .iter()
        .zip(&b)
        .map(|(x, y)| f64::from(orion_core::embedding::cosine(x, y)))
        .collect();
    let scores: Vec<f64> = sts.pairs.iter().map(|p| p.score).collect();
    100.0 * orion_embed::evaluation::spearman(&cosines, &scores).unwrap()
}

/// The hashing embedder's vectors are pinned by a fingerprint (Σ v[i]·(i+1)) and their count of
/// non-zero entries, recorded once natively: the native and the wasm tests both check them, which
/// shows the vectors are the same on both platforms. A change here needs a new version string.
pub const HASHING_GOLDEN: [(&str, f64, usize); 4] = [
    ("The cat sat on the mat.", -250.879815191, 21),
    ("東京は日本の首都です。", -106.545830190, 11),
    ("🙂🎉", 159.806129813, 2),
    ("", -303.0, 1),
];

pub fn check_hashing_golden() {
    let hashing = orion_embed::HashingEmbedder::new();
    for (text, fingerprint, nonzero) in HASHING_GOLDEN {
        let v = hashing.embed_one(text);
        let ours: f64 = v
            .iter()
            .enumerate()
            .map(|(i, x)| f64::from(*x) * (i as f64 + 1.0))
            .sum();
        assert!((ours - fingerprint).abs() < 1e-6, "{text:?}: {ours}");
        assert_eq!(v.iter().filter(|x| **x != 0.0).count(), nonzero, "{text:?}");
    }
}
