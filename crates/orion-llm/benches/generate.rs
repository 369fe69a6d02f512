//! Native generation speed: prefill and decode tokens/s for each weight format, and the
//! batching ratio of `generate_many`. `cargo bench -p orion-llm`; the browser figures come from
//! `cargo xtask bench llm`.

use std::rc::Rc;
use std::time::Instant;

use orion_core::embedding::LocalBoxFuture;
use orion_core::generation::{GenerateRequest, Silent};
use orion_core::{Clock, Generator};
use orion_llm::{LoadOptions, LocalGenerator, LocalModel, WeightFormat};

struct Wall;

impl Clock for Wall {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

const PROMPTS: [&str; 3] = [
    "What is the capital of France? Answer in one sentence.",
    "List three primary colors.",
    "Write a haiku about the sea.",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
    );
    let bytes = std::fs::read(path)?;
    let long = format!(
        "{} Summarise the text above in one sentence.",
        "The quick brown fox jumps over the lazy dog near the river bank. ".repeat(20)
    );
    for format in [WeightFormat::AsStored, WeightFormat::Q8_0] {
        let options = LoadOptions {
            format,
            ..LoadOptions::default()
        };
        let started = Instant::now();
        let model = LocalModel::load(&bytes, "SmolLM2", &options)?;
        let load = started.elapsed();
        let generator = LocalGenerator::new(
            model,
            &options,
            Rc::new(Wall),
            Box::new(|| -> LocalBoxFuture<'static, ()> { Box::pin(async {}) }),
        );
        println!("{format:?}: loaded in {load:.2?}");
        for prompt in [PROMPTS[0], long.as_str()] {
            let request = GenerateRequest {
                max_tokens: 64,
                stop: vec!["\u{0}".into()],
                ..GenerateRequest::new(prompt)
            };
            let out = block_on(generator.generate(&request, &Silent))?;
            println!(
                "  {} prompt tokens: prefill {:.1} tokens/s, decode {:.1} tokens/s ({} tokens)",
                out.prompt_tokens,
                f64::from(out.prompt_tokens) / out.prefill_ms * 1e3,
                f64::from(out.tokens.saturating_sub(1)) / out.decode_ms * 1e3,
                out.tokens
            );
        }
        let requests: Vec<GenerateRequest> = PROMPTS
            .iter()
            .map(|p| GenerateRequest {
                max_tokens: 32,
                ..GenerateRequest::new(*p)
            })
            .collect();
        for n in [2, 3] {
            let started = Instant::now();
            for request in &requests[..n] {
                block_on(generator.generate(request, &Silent))?;
            }
            let alone = started.elapsed();
            let started = Instant::now();
            block_on(generator.generate_many(&requests[..n], &Silent));
            let together = started.elapsed();
            println!("  generate_many of {n}: {together:.2?} vs {alone:.2?} one after another (ratio {:.2})", together.as_secs_f64() / alone.as_secs_f64());
        }
    }
    Ok(())
}
