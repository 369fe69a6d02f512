//! What the integration tests share: the model file, a wall clock, a blocking executor and a
//! recording sink.

#![allow(dead_code)] // each test file uses its own part of this module

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use orion_core::embedding::LocalBoxFuture;
use orion_core::generation::GenerationSink;
use orion_core::{Clock, Error};
use orion_llm::{LoadOptions, LocalGenerator, LocalModel, WeightFormat};

/// The GGUF file the set-up step (`cargo xtask test`) unpacks.
pub const MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
);

/// The model's bytes; a clear failure when the set-up step has not run.
pub fn model_bytes() -> Result<Vec<u8>, String> {
    std::fs::read(MODEL).map_err(|e| {
        format!("{MODEL}: {e}; run `cargo xtask test` (or `cargo xtask demo`) once to fetch it")
    })
}

/// Milliseconds from the system clock.
pub struct Wall;

impl Clock for Wall {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// A generator over the model in `format`.
pub fn generator(format: WeightFormat) -> Result<LocalGenerator, Error> {
    let bytes = model_bytes().map_err(Error::Internal)?;
    let options = LoadOptions {
        format,
        ..LoadOptions::default()
    };
    let model = LocalModel::load(&bytes, "SmolLM2-135M-Instruct.Q4_1.gguf", &options)?;
    Ok(LocalGenerator::new(
        model,
        &options,
        Rc::new(Wall),
        Box::new(|| -> LocalBoxFuture<'static, ()> { Box::pin(async {}) }),
    ))
}

/// Runs `future` to completion on this thread. The generator's futures never wait on anything
/// outside themselves (the yield function is ready at once), so polling in a loop is enough.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

/// Records streamed text per request and cancels request `cancel_at.0` after `cancel_at.1`
/// pieces.
#[derive(Default)]
pub struct Recorder {
    pub pieces: RefCell<Vec<(usize, String)>>,
    pub cancel_at: Cell<Option<(usize, usize)>>,
}

impl Recorder {
    /// The pieces of request `index`, joined.
    pub fn text(&self, index: usize) -> String {
        self.pieces
            .borrow()
            .iter()
            .filter(|(i, _)| *i == index)
            .map(|(_, t)| t.as_str())
            .collect()
    }

    /// How many pieces request `index` received.
    pub fn count(&self, index: usize) -> usize {
        self.pieces
            .borrow()
            .iter()
            .filter(|(i, _)| *i == index)
            .count()
    }
}

impl GenerationSink for Recorder {
    fn text(&self, index: usize, text: &str) {
        self.pieces.borrow_mut().push((index, text.to_string()));
    }

    fn cancelled(&self, index: usize) -> bool {
        self.cancel_at
            .get()
            .is_some_and(|(i, after)| i == index && self.count(index) >= after)
    }
}

/// Reads a 200-token prompt in one pass and again in pieces of 70, 9, 64 and 57 (attention
/// chunks cut at other places, cached prefixes; every piece long enough to take the same matrix
/// path as the whole), and returns the largest difference between the two passes' logits for the
/// next token, relative to the largest logit, and whether both pick the same token.
pub fn one_pass_against_pieces(model: &LocalModel) -> Result<(f32, bool), Error> {
    let text = "The lighthouse keeper counted the ships that passed each night and wrote their \
                names in a book. "
        .repeat(12);
    let ids = model.tokenizer().encode(&text)?;
    let ids = ids
        .get(..200)
        .ok_or_else(|| Error::Internal(format!("only {} tokens", ids.len())))?;
    let llama = model.llama();
    let mut whole = llama.sequence();
    let expected = llama.forward(&mut [orion_llm::llama::Step {
        tokens: ids,
        sequence: &mut whole,
    }])?;
    let mut pieces = llama.sequence();
    let mut got = Vec::new();
    let mut at = 0;
    for len in [70, 9, 64, 57] {
        got = llama.forward(&mut [orion_llm::llama::Step {
            tokens: &ids[at..at + len],
            sequence: &mut pieces,
        }])?;
        at += len;
    }
    let (expected, got) = match (expected.first(), got.first()) {
        (Some(e), Some(g)) if e.len() == g.len() => (e, g),
        _ => return Err(Error::Internal("no logits".into())),
    };
    let largest = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
    let difference = expected
        .iter()
        .zip(got)
        .fold(0f32, |m, (e, g)| m.max((e - g).abs()));
    let argmax = |v: &[f32]| {
        v.iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
    };
    Ok((difference / largest, argmax(expected) == argmax(got)))
}
