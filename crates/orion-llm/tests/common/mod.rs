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
