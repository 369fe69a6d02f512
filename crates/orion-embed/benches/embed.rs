//! Native MiniLM throughput on the 200 reference sentences: one at a time and in batches of 32,
//! for the full (f32) and lite (Q8_0) encoders. `cargo bench -p orion-embed --bench embed`.
//!
//! A plain `harness = false` bench (median of a few timed rounds after a warm-up) rather than
//! criterion: criterion is not in the workspace's dependency set, and these runs only need
//! sentences/s to compare before and after a change, and a stable binary to run `perf` on.
//! Filter with arguments: `f32`, `q8`, `single`, `batched` (all by default); `ORION_BENCH_ROUNDS`
//! sets the rounds.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;
use std::time::Instant;

use orion_embed::{MiniLm, ModelFiles, Precision};

fn read(path: PathBuf) -> Vec<u8> {
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let model = root.join("models/all-MiniLM-L6-v2");
    let (config, tokenizer, weights) = (
        read(model.join("config.json")),
        read(model.join("tokenizer.json")),
        read(model.join("model.safetensors")),
    );
    let reference: serde_json::Value = serde_json::from_slice(&read(
        root.join("../shared/reference/minilm-reference.json"),
    ))
    .unwrap();
    let sentences: Vec<&str> = reference["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |name: &str| {
        let known = ["f32", "q8", "single", "batched"];
        let mine: Vec<&String> = args
            .iter()
            .filter(|a| known.contains(&a.as_str()))
            .collect();
        let group = |g: &[&str]| mine.iter().any(|a| g.contains(&a.as_str()));
        if ["f32", "q8"].contains(&name) {
            !group(&["f32", "q8"]) || mine.iter().any(|a| *a == name)
        } else {
            !group(&["single", "batched"]) || mine.iter().any(|a| *a == name)
        }
    };
    let rounds: usize = std::env::var("ORION_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    for (name, precision) in [("f32", Precision::F32), ("q8", Precision::Q8_0)] {
        if !wanted(name) {
            continue;
        }
        let files = ModelFiles {
            config: &config,
            tokenizer: &tokenizer,
            weights: &weights,
        };
        let minilm = MiniLm::load(files, precision).unwrap();
        for mode in ["single", "batched"] {
            if !wanted(mode) {
                continue;
            }
            let run = || match mode {
                "single" => {
                    for s in &sentences {
                        std::hint::black_box(minilm.embed_now(&[s]).unwrap());
                    }
                }
                _ => {
                    for chunk in sentences.chunks(32) {
                        std::hint::black_box(minilm.embed_now(chunk).unwrap());
                    }
                }
            };
            run();
            let mut rates: Vec<f64> = (0..rounds)
                .map(|_| {
                    let start = Instant::now();
                    run();
                    sentences.len() as f64 / start.elapsed().as_secs_f64()
                })
                .collect();
            rates.sort_by(f64::total_cmp);
            println!(
                "{name:>4} {mode:>8}: {:7.1} sentences/s (median of {rounds}; min {:.1}, max {:.1})",
                rates[rates.len() / 2],
                rates[0],
                rates[rates.len() - 1]
            );
        }
    }
}
