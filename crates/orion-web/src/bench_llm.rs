//! `BenchLlm`: ORION's local text generation measured in the browser, for `cargo xtask bench llm`
//! (`tests/bench/llm.mjs` drives it in a dedicated worker of its own, `llm-worker.mjs`).
//!
//! It measures the Rust engine, not the page ↔ worker protocol: a [`LocalModel`] loaded from the
//! bytes the worker fetched, in the [`WeightFormat`] asked for, behind a [`LocalGenerator`] whose
//! yield function is an immediately ready future (nothing else runs in that worker). Every call
//! is synchronous and runs to the end; times are `performance.now()` in ms.
//!
//! - [`BenchLlm::decode`] runs one request pass by pass and times each pass: either through the
//!   generator ([`LocalGenerator::start`] and [`LocalGenerator::step`], which ends at the end of
//!   turn or `maxTokens`), or, with `ignoreEos`, straight on the model ([`orion_llm::llama::Llama`]
//!   forward passes with greedy picks), for exactly `maxTokens` tokens whatever they are, as
//!   llama.cpp's `ignore_eos` does.
//! - [`BenchLlm::generate_sequential`] and [`BenchLlm::generate_many`] time several requests
//!   one after another ([`Generator::generate`]) and together in one batch
//!   ([`Generator::generate_many`]).

use futures_util::FutureExt;
use orion_core::generation::{GenerateRequest, Generated, Generator, Silent};
use orion_core::{Clock, Error};
use orion_llm::llama::Step;
use orion_llm::{LoadOptions, LocalGenerator, LocalModel, WeightFormat};
use serde::Serialize;
use wasm_bindgen::prelude::*;

#[wasm_bindgen]
extern "C" {
    /// `performance.now()`: ms, sub-millisecond, in a window or a worker.
    #[wasm_bindgen(js_namespace = performance, js_name = now)]
    fn performance_now() -> f64;
}

/// The generator's clock: `performance.now()` in whole ms (it only needs differences).
struct PerformanceClock;

impl Clock for PerformanceClock {
    fn now_ms(&self) -> u64 {
        performance_now().max(0.0) as u64
    }
}

fn js_error(error: impl std::fmt::Display) -> JsValue {
    js_sys::Error::new(&error.to_string()).into()
}

fn to_js(value: &impl Serialize) -> Result<JsValue, JsValue> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(js_error)
}

fn request(value: JsValue) -> Result<GenerateRequest, JsValue> {
    serde_wasm_bindgen::from_value(value).map_err(js_error)
}

/// What [`BenchLlm::decode`] answers (ms unless named otherwise).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct DecodeResult {
    /// `generator` or `model` (with `ignoreEos`).
    path: &'static str,
    prompt_tokens: usize,
    /// Tokens generated (the first one comes out of the prefill pass).
    tokens: usize,
    /// Tokenizing the prompt (chat template included).
    tokenize_ms: f64,
    /// The first forward pass over the whole prompt, with the pick of the first token.
    prefill_ms: f64,
    /// From the call to the first token: tokenizing and the prefill pass.
    first_token_ms: f64,
    /// Every later pass, one token each.
    decode_ms: f64,
    /// Each pass's time, the prefill first.
    steps_ms: Vec<f64>,
    /// The generated token ids.
    ids: Vec<u32>,
    /// Their text.
    text: String,
}

/// What [`BenchLlm::generate_sequential`] and [`BenchLlm::generate_many`] answer.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct BatchResult {
    /// From the call to the last request's end.
    total_ms: f64,
    /// Each request's own figures, as the generator reports them.
    results: Vec<Generated>,
}

/// A model loaded for the benchmark.
#[wasm_bindgen]
pub struct BenchLlm {
    generator: LocalGenerator,
    load_ms: f64,
}

#[wasm_bindgen]
impl BenchLlm {
    /// Loads the GGUF file in `bytes` with weights `format` (`as-stored` or `q8_0`), serving up
    /// to `max_context` tokens per sequence. Throws if the file does not load.
    #[wasm_bindgen(constructor)]
    pub fn new(bytes: &[u8], format: &str, max_context: u32) -> Result<BenchLlm, JsValue> {
        let format = match format {
            "as-stored" => WeightFormat::AsStored,
            "q8_0" => WeightFormat::Q8_0,
            other => return Err(js_error(format!("unknown weight format `{other}`"))),
        };
        let options = LoadOptions {
            format,
            max_context: max_context as usize,
            cached_conversations: 0,
        };
        let started = performance_now();
        let model = LocalModel::load(bytes, "bench.gguf", &options).map_err(js_error)?;
        let load_ms = performance_now() - started;
        let generator = LocalGenerator::new(
            model,
            &options,
            std::rc::Rc::new(PerformanceClock),
            Box::new(|| Box::pin(std::future::ready(()))),
        );
        Ok(BenchLlm { generator, load_ms })
    }

    /// Parsing and loading the file, ms.
    #[wasm_bindgen(getter, js_name = loadMs)]
    pub fn load_ms(&self) -> f64 {
        self.load_ms
    }

    /// `{text, ids}`: the prompt of `request` (a `GenerateRequest` as JSON, e.g. `{prompt,
    /// maxTokens}`) as the chat template renders it, and as the token ids ORION reads.
    #[wasm_bindgen(js_name = promptOf)]
    pub fn prompt_of(&self, request: JsValue) -> Result<JsValue, JsValue> {
        #[derive(Serialize)]
        struct Prompt {
            text: String,
            ids: Vec<u32>,
        }
        let request = self::request(request)?;
        let model = self.generator.model();
        let text = model
            .template()
            .render(&LocalModel::messages(&request), true)
            .map_err(js_error)?;
        let ids = model.prompt_ids(&request).map_err(js_error)?;
        to_js(&Prompt { text, ids })
    }

    /// Runs `request` pass by pass and times each pass (see the module docs): `{path,
    /// promptTokens, tokens, tokenizeMs, prefillMs, firstTokenMs, decodeMs, stepsMs, ids,
    /// text}`. With `ignore_eos`, exactly `maxTokens` tokens, greedy.
    pub fn decode(&self, request: JsValue, ignore_eos: bool) -> Result<JsValue, JsValue> {
        let request = self::request(request)?;
        let result = if ignore_eos {
            self.decode_model(&request)
        } else {
            self.decode_generator(&request)
        }
        .map_err(js_error)?;
        to_js(&result)
    }

    /// Runs `requests` (an array of `GenerateRequest`s) one after another with
    /// [`Generator::generate`]: `{totalMs, results}`.
    #[wasm_bindgen(js_name = generateSequential)]
    pub fn generate_sequential(&self, requests: JsValue) -> Result<JsValue, JsValue> {
        let requests: Vec<GenerateRequest> =
            serde_wasm_bindgen::from_value(requests).map_err(js_error)?;
        let started = performance_now();
        let mut results = Vec::with_capacity(requests.len());
        for request in &requests {
            let generated = self
                .generator
                .generate(request, &Silent)
                .now_or_never()
                .ok_or_else(|| js_error("generate did not finish at once"))?
                .map_err(js_error)?;
            results.push(generated);
        }
        to_js(&BatchResult {
            total_ms: performance_now() - started,
            results,
        })
    }

    /// Runs `requests` together in one batch with [`Generator::generate_many`]: `{totalMs,
    /// results}`.
    #[wasm_bindgen(js_name = generateMany)]
    pub fn generate_many(&self, requests: JsValue) -> Result<JsValue, JsValue> {
        let requests: Vec<GenerateRequest> =
            serde_wasm_bindgen::from_value(requests).map_err(js_error)?;
        let started = performance_now();
        let outcomes = self
            .generator
            .generate_many(&requests, &Silent)
            .now_or_never()
            .ok_or_else(|| js_error("generate_many did not finish at once"))?;
        let total_ms = performance_now() - started;
        let results = outcomes
            .into_iter()
            .collect::<Result<Vec<_>, Error>>()
            .map_err(js_error)?;
        to_js(&BatchResult { total_ms, results })
    }
}

impl BenchLlm {
    /// Through the generator: it stops at the end of turn or at `max_tokens`.
    fn decode_generator(&self, request: &GenerateRequest) -> Result<DecodeResult, Error> {
        let started = performance_now();
        let mut decodings = [self.generator.start(request)?];
        let tokenize_ms = performance_now() - started;
        let prompt_tokens = self.generator.model().prompt_ids(request)?.len();
        let mut steps_ms = Vec::new();
        let mut first_token_ms = 0.0;
        while !decodings.iter().all(|d| d.finished()) {
            let t = performance_now();
            self.generator.step(&mut decodings, &Silent)?;
            let now = performance_now();
            if steps_ms.is_empty() {
                first_token_ms = now - started;
            }
            steps_ms.push(now - t);
        }
        let [decoding] = decodings;
        let ids = decoding.generated().to_vec();
        let text = self.generator.model().tokenizer().decode(&ids)?;
        Ok(Self::summary(
            "generator",
            prompt_tokens,
            tokenize_ms,
            first_token_ms,
            steps_ms,
            ids,
            text,
        ))
    }

    /// Straight on the model: exactly `max_tokens` greedy tokens, end of turn or not.
    fn decode_model(&self, request: &GenerateRequest) -> Result<DecodeResult, Error> {
        let model = self.generator.model();
        let llama = model.llama();
        let started = performance_now();
        let prompt = model.prompt_ids(request)?;
        let tokenize_ms = performance_now() - started;
        let mut sequence = llama.sequence();
        let mut pending = prompt.clone();
        let mut ids = Vec::with_capacity(request.max_tokens as usize);
        let mut steps_ms = Vec::with_capacity(request.max_tokens as usize);
        let mut first_token_ms = 0.0;
        while ids.len() < request.max_tokens as usize {
            let t = performance_now();
            let logits = llama.forward(&mut [Step {
                tokens: &pending,
                sequence: &mut sequence,
            }])?;
            let token = logits
                .first()
                .and_then(|l| argmax(l))
                .ok_or_else(|| Error::Generation("the model returned no logits".into()))?;
            let now = performance_now();
            if steps_ms.is_empty() {
                first_token_ms = now - started;
            }
            steps_ms.push(now - t);
            ids.push(token);
            pending = vec![token];
        }
        let text = model.tokenizer().decode(&ids)?;
        Ok(Self::summary(
            "model",
            prompt.len(),
            tokenize_ms,
            first_token_ms,
            steps_ms,
            ids,
            text,
        ))
    }

    fn summary(
        path: &'static str,
        prompt_tokens: usize,
        tokenize_ms: f64,
        first_token_ms: f64,
        steps_ms: Vec<f64>,
        ids: Vec<u32>,
        text: String,
    ) -> DecodeResult {
        DecodeResult {
            path,
            prompt_tokens,
            tokens: ids.len(),
            tokenize_ms,
            prefill_ms: steps_ms.first().copied().unwrap_or(0.0),
            first_token_ms,
            decode_ms: steps_ms.iter().skip(1).sum(),
            steps_ms,
            ids,
            text,
        }
    }
}

/// The index of the largest logit (the first on ties), as greedy sampling picks it.
fn argmax(logits: &[f32]) -> Option<u32> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in logits.iter().enumerate() {
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.and_then(|(i, _)| u32::try_from(i).ok())
}
