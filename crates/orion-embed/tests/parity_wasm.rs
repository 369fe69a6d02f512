//! Parity with PyTorch in wasm, in a dedicated worker in headless Chromium. The model files are
//! fetched from the server `cargo xtask test` runs (ORION_TEST_ASSETS, compiled in).
#![cfg(target_arch = "wasm32")]
// `#[wasm_bindgen_test]` functions are tests, but clippy does not know it: a failed unwrap here is a
// failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use orion_core::embedding::cosine;
use orion_embed::{MiniLm, ModelFiles, Precision};
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_dedicated_worker);

const ASSETS: &str = match option_env!("ORION_TEST_ASSETS") {
    Some(url) => url,
    None => "http://127.0.0.1:18086",
};

async fn fetch(name: &str) -> Vec<u8> {
    let scope: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    let url = format!("{ASSETS}/models/all-MiniLM-L6-v2/{name}");
    let response = JsFuture::from(scope.fetch_with_str(&url))
        .await
        .unwrap_or_else(|e| panic!("{url}: {e:?}; run these tests through `cargo xtask test`"));
    let response: web_sys::Response = response.unchecked_into();
    assert!(response.ok(), "{url}: HTTP {}", response.status());
    let buffer = JsFuture::from(response.array_buffer().unwrap())
        .await
        .unwrap();
    js_sys::Uint8Array::new(&buffer).to_vec()
}

async fn load(precision: Precision) -> MiniLm {
    let config = fetch("config.json").await;
    let tokenizer = fetch("tokenizer.json").await;
    let weights = fetch("model.safetensors").await;
    let files = ModelFiles {
        config: &config,
        tokenizer: &tokenizer,
        weights: &weights,
    };
    MiniLm::load(files, precision).unwrap()
}

async fn minilm() -> MiniLm {
    load(Precision::F32).await
}

#[wasm_bindgen_test]
async fn full_matches_pytorch_on_every_reference_sentence_in_wasm() {
    let model = minilm().await;
    let reference = common::reference();
    let texts: Vec<&str> = reference.sentences.iter().map(String::as_str).collect();
    let vectors = model.embed_now(&texts).unwrap();
    for ((vector, expected), text) in vectors.iter().zip(&reference.embeddings).zip(&texts) {
        let c = cosine(vector, expected);
        assert!(c >= 0.99999, "cosine {c} for {text:?}");
    }
}

#[wasm_bindgen_test]
async fn full_spearman_on_sts_matches_pytorch_in_wasm() {
    let model = minilm().await;
    let sts = common::sts();
    let ours = common::sts_spearman_x100(&sts, |texts| model.embed_now(texts).unwrap());
    assert!(
        (ours - sts.pytorch_spearman_x100).abs() <= 0.05,
        "{ours} vs {}",
        sts.pytorch_spearman_x100
    );
}

#[wasm_bindgen_test]
async fn hard_texts_embed_to_unit_vectors_in_wasm() {
    let model = minilm().await;
    let texts = common::edge_cases();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    for vector in model.embed_now(&texts).unwrap() {
        assert!(common::is_unit(&vector));
    }
}

#[wasm_bindgen_test]
fn hashing_vectors_are_the_same_as_natively() {
    common::check_hashing_golden();
}

#[wasm_bindgen_test]
async fn lite_stays_within_tolerance_of_pytorch_in_wasm() {
    let model = load(Precision::Q8_0).await;
    let reference = common::reference();
    let texts: Vec<&str> = reference.sentences.iter().map(String::as_str).collect();
    let vectors = model.embed_now(&texts).unwrap();
    let (worst, mean) = common::worst_and_mean_cosine(&vectors, &reference);
    assert!(worst >= 0.995, "worst {worst}");
    assert!(mean >= 0.999, "mean {mean}");
}

#[wasm_bindgen_test]
async fn lite_spearman_on_sts_is_within_half_a_point_in_wasm() {
    let model = load(Precision::Q8_0).await;
    let sts = common::sts();
    let ours = common::sts_spearman_x100(&sts, |texts| model.embed_now(texts).unwrap());
    assert!((ours - sts.pytorch_spearman_x100).abs() <= 0.5, "{ours}");
}
