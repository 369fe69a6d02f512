//! Native parity with PyTorch's sentence-transformers. Needs the model files (`cargo xtask setup`).
#![cfg(not(target_arch = "wasm32"))]
// Helpers outside `#[test]` functions unwrap too: in a test, a panic is a failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use orion_core::embedding::cosine;
use orion_core::{Embedder, ErrorCode};
use orion_embed::{HashingEmbedder, MiniLm, ModelFiles, Precision};

fn model_file(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models/all-MiniLM-L6-v2")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run `cargo xtask setup` to fetch the model",
            path.display()
        )
    })
}

struct Files {
    config: Vec<u8>,
    tokenizer: Vec<u8>,
    weights: Vec<u8>,
}

fn files() -> &'static Files {
    static FILES: OnceLock<Files> = OnceLock::new();
    FILES.get_or_init(|| Files {
        config: model_file("config.json"),
        tokenizer: model_file("tokenizer.json"),
        weights: model_file("model.safetensors"),
    })
}

fn load(precision: Precision) -> MiniLm {
    let f = files();
    let files = ModelFiles {
        config: &f.config,
        tokenizer: &f.tokenizer,
        weights: &f.weights,
    };
    MiniLm::load(files, precision).unwrap()
}

fn minilm() -> MiniLm {
    load(Precision::F32)
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    // The futures are ready at once (inference is synchronous): poll once with a no-op waker.
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(out) => out,
        std::task::Poll::Pending => panic!("embedding futures complete immediately"),
    }
}

#[test]
fn full_matches_pytorch_on_every_reference_sentence() {
    let model = minilm();
    let reference = common::reference();
    let texts: Vec<&str> = reference.sentences.iter().map(String::as_str).collect();
    let vectors = block_on(model.embed(&texts)).unwrap();
    let mut worst = (1.0f32, "");
    for ((vector, expected), text) in vectors.iter().zip(&reference.embeddings).zip(&texts) {
        assert_eq!(vector.len(), 384);
        let c = cosine(vector, expected);
        if c < worst.0 {
            worst = (c, text);
        }
    }
    println!("full: worst cosine {:.8} on {:?}", worst.0, worst.1);
    assert!(worst.0 >= 0.99999, "cosine {} for {:?}", worst.0, worst.1);
}

#[test]
fn batching_and_order_do_not_change_the_vectors() {
    let reference = common::reference();
    let texts: Vec<&str> = reference
        .sentences
        .iter()
        .take(40)
        .map(String::as_str)
        .collect();
    let batched = minilm().embed_now(&texts).unwrap();
    let single = minilm().with_batch_size(1);
    for (text, expected) in texts.iter().zip(&batched) {
        let alone = single.embed_now(&[text]).unwrap();
        assert!(cosine(&alone[0], expected) > 0.999_999, "{text:?}");
    }
}

#[test]
fn full_spearman_on_sts_matches_pytorch() {
    let model = minilm();
    let sts = common::sts();
    let ours = common::sts_spearman_x100(&sts, |texts| model.embed_now(texts).unwrap());
    println!(
        "full: STS Spearman x100 {ours:.4} (PyTorch {:.4})",
        sts.pytorch_spearman_x100
    );
    assert!((ours - sts.pytorch_spearman_x100).abs() <= 0.05, "{ours}");
}

#[test]
fn hard_texts_embed_to_unit_vectors() {
    let model = minilm();
    let texts = common::edge_cases();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    for (text, vector) in texts.iter().zip(model.embed_now(&texts).unwrap()) {
        assert!(
            common::is_unit(&vector),
            "{:?}",
            &text[..text.len().min(20)]
        );
    }
    let hashing = HashingEmbedder::new();
    for text in &texts {
        assert!(common::is_unit(&hashing.embed_one(text)));
    }
}

#[test]
fn bad_model_files_fail_with_err_model_load_naming_the_file() {
    let f = files();
    let truncated = &f.weights[..f.weights.len() / 2];
    let html = b"<!doctype html><title>404</title>".as_slice();
    let cases = [
        (
            ModelFiles {
                config: html,
                tokenizer: &f.tokenizer,
                weights: &f.weights,
            },
            "config.json",
        ),
        (
            ModelFiles {
                config: &f.config,
                tokenizer: html,
                weights: &f.weights,
            },
            "tokenizer.json",
        ),
        (
            ModelFiles {
                config: &f.config,
                tokenizer: &f.tokenizer,
                weights: truncated,
            },
            "model.safetensors",
        ),
        (
            ModelFiles {
                config: &f.config,
                tokenizer: &f.tokenizer,
                weights: html,
            },
            "model.safetensors",
        ),
    ];
    for (files, name) in cases {
        let error = MiniLm::load(files, Precision::F32).err().unwrap();
        assert_eq!(error.code(), ErrorCode::ModelLoad);
        assert!(error.to_string().contains(name), "{error}");
    }
}

#[test]
fn hashing_quality_on_sts() {
    let hashing = HashingEmbedder::new();
    let sts = common::sts();
    let ours = common::sts_spearman_x100(&sts, |texts| {
        texts.iter().map(|t| hashing.embed_one(t)).collect()
    });
    println!("micro (hashing): STS Spearman x100 {ours:.2}");
    // Lexical overlap predicts similarity only partly; far below MiniLM's 86.8, far above chance.
    assert!(ours > 50.0, "{ours}");
}

#[test]
fn hashing_vectors_match_the_recorded_fingerprints() {
    common::check_hashing_golden();
}

#[test]
fn lite_stays_within_tolerance_of_pytorch() {
    let model = load(Precision::Q8_0);
    assert_eq!(model.info().version, "all-MiniLM-L6-v2/q8b32/max256");
    let reference = common::reference();
    let texts: Vec<&str> = reference.sentences.iter().map(String::as_str).collect();
    let vectors = model.embed_now(&texts).unwrap();
    let (worst, mean) = common::worst_and_mean_cosine(&vectors, &reference);
    println!("lite: worst cosine {worst:.6}, mean {mean:.6}");
    assert!(worst >= 0.995, "worst {worst}");
    assert!(mean >= 0.999, "mean {mean}");
}

#[test]
fn lite_spearman_on_sts_is_within_half_a_point() {
    let model = load(Precision::Q8_0);
    let sts = common::sts();
    let ours = common::sts_spearman_x100(&sts, |texts| model.embed_now(texts).unwrap());
    println!(
        "lite: STS Spearman x100 {ours:.4} (PyTorch {:.4})",
        sts.pytorch_spearman_x100
    );
    assert!((ours - sts.pytorch_spearman_x100).abs() <= 0.5, "{ours}");
}

#[test]
fn lite_embeds_hard_texts_to_unit_vectors() {
    let model = load(Precision::Q8_0);
    let texts = common::edge_cases();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    for vector in model.embed_now(&texts).unwrap() {
        assert!(common::is_unit(&vector));
    }
}
