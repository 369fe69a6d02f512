//! Greedy generation in wasm, in a dedicated worker in headless Chromium, against the llama.cpp
//! reference. The model is fetched from the server `cargo xtask test` runs (ORION_TEST_ASSETS,
//! compiled in).
#![cfg(target_arch = "wasm32")]
// `#[wasm_bindgen_test]` functions are tests, but clippy does not know it: a failed unwrap here is
// a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::rc::Rc;

use orion_core::embedding::LocalBoxFuture;
use orion_core::generation::{GenerateRequest, Silent, Turn};
use orion_core::{Clock, Generator};
use orion_llm::{LoadOptions, LocalGenerator, LocalModel, WeightFormat};
use serde::Deserialize;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_dedicated_worker);

const ASSETS: &str = match option_env!("ORION_TEST_ASSETS") {
    Some(url) => url,
    None => "http://127.0.0.1:18086",
};

const REFERENCE: &str = include_str!("fixtures/generation_reference.json");

#[derive(Deserialize)]
struct Reference {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    content: String,
}

#[derive(Deserialize)]
struct Case {
    messages: Vec<Message>,
    prompt_ids: Vec<u32>,
    text: String,
    stopped_on_eog: bool,
}

struct Performance;

impl Clock for Performance {
    fn now_ms(&self) -> u64 {
        js_sys::Date::now() as u64
    }
}

async fn model_bytes() -> Vec<u8> {
    let scope: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    let url = format!("{ASSETS}/models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
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

fn request_of(case: &Case) -> GenerateRequest {
    let (last, earlier) = case.messages.split_last().unwrap();
    let (system, turns) = match earlier.split_first() {
        Some((first, rest)) if first.role == "system" => (Some(first.content.clone()), rest),
        _ => (None, earlier),
    };
    GenerateRequest {
        system,
        history: turns
            .iter()
            .map(|m| Turn {
                role: m.role.clone(),
                content: m.content.clone(),
            })
            .collect(),
        max_tokens: 16,
        ..GenerateRequest::new(last.content.clone())
    }
}

/// The cases whose every step has a clear favourite in the reference (France, Germany): any
/// correct implementation produces them exactly.
fn clear_cases() -> Vec<Case> {
    let reference: Reference = serde_json::from_str(REFERENCE).unwrap();
    reference
        .cases
        .into_iter()
        .filter(|c| c.stopped_on_eog && c.text.starts_with("The capital of"))
        .collect()
}

#[wasm_bindgen_test]
async fn greedy_generation_matches_llama_cpp_in_wasm() {
    let bytes = model_bytes().await;
    let cases = clear_cases();
    assert_eq!(cases.len(), 2);
    for format in [WeightFormat::AsStored, WeightFormat::Q8_0] {
        let options = LoadOptions {
            format,
            ..LoadOptions::default()
        };
        let model = LocalModel::load(&bytes, "SmolLM2", &options).unwrap();
        let generator = LocalGenerator::new(
            model,
            &options,
            Rc::new(Performance),
            Box::new(|| -> LocalBoxFuture<'static, ()> { Box::pin(async {}) }),
        );
        for case in &cases {
            let request = request_of(case);
            assert_eq!(
                generator.model().prompt_ids(&request).unwrap(),
                case.prompt_ids
            );
            let generated = generator.generate(&request, &Silent).await.unwrap();
            assert_eq!(generated.text, case.text, "{format:?}");
        }
    }
}

/// The wasm kernels (the integer Q8_0 product among them) read a prompt in one pass as they
/// read it in pieces.
#[wasm_bindgen_test]
async fn a_prompt_read_in_one_pass_or_in_pieces_gives_the_same_next_token_in_wasm() {
    let bytes = model_bytes().await;
    for format in [WeightFormat::AsStored, WeightFormat::Q8_0] {
        let options = LoadOptions {
            format,
            ..LoadOptions::default()
        };
        let model = LocalModel::load(&bytes, "SmolLM2", &options).unwrap();
        let (difference, same_pick) = common::one_pass_against_pieces(&model).unwrap();
        assert!(
            difference < 1e-3,
            "{format:?}: relative difference {difference}"
        );
        assert!(same_pick, "{format:?}");
    }
}

#[wasm_bindgen_test]
async fn truncated_model_is_refused_in_wasm() {
    let bytes = model_bytes().await;
    for cut in [16, 100_000, bytes.len() / 2] {
        let error = LocalModel::load(&bytes[..cut], "cut.gguf", &LoadOptions::default())
            .err()
            .unwrap();
        assert_eq!(error.code(), orion_core::ErrorCode::ModelLoad, "{cut}");
    }
}
