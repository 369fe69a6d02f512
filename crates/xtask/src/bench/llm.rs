//! `cargo xtask bench llm`: ORION's local LLM (orion-llm in wasm, one thread, the model's Q4_1
//! weights as stored and re-quantized to Q8_0) against wllama (llama.cpp in wasm, one thread) on
//! the same GGUF file and prompts, in headless Chromium (`tests/bench/llm.mjs`). Writes the
//! `llm` section of `docs/BENCHMARKS.md`.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

use super::{num, run_harness, write_section, Machine};
use crate::models;

/// Runs the benchmark and writes its section.
pub fn run(root: &Path) -> Result<()> {
    models::fetch(root)?;
    let figures = run_harness(root, "llm.mjs", "local LLM")?;
    // The raw figures too, for a look at what the tables leave out (per-pass times, texts).
    let raw = root.join("target/bench-llm.json");
    std::fs::write(&raw, figures.to_string())
        .with_context(|| format!("writing {}", raw.display()))?;
    write_section(root, "llm", &document(&figures, &Machine::read()))
}

/// `value` with `digits` decimals, or `n/a`.
fn fixed(value: f64, digits: usize) -> String {
    if value.is_finite() {
        format!("{value:.digits$}")
    } else {
        "n/a".to_owned()
    }
}

/// Bytes as MB (10^6), or `n/a`.
fn megabytes(bytes: f64) -> String {
    fixed(bytes / 1e6, 0)
}

/// The largest peak resident memory among an engine's renderer processes, and that process's
/// peak when the page had only just opened.
fn peak_memory(engine: &Value) -> (f64, f64) {
    let first = |list: &Value, key: &str| {
        list.as_array()
            .and_then(|l| l.first())
            .map_or(f64::NAN, |r| num(&r[key]))
    };
    (
        first(&engine["renderers"], "peakBytes"),
        first(&engine["idleRenderers"], "peakBytes"),
    )
}

/// The section of `cargo xtask bench llm`.
pub fn document(figures: &Value, machine: &Machine) -> String {
    let orion = &figures["orion"];
    let wllama = &figures["wllama"];
    let engines = [
        ("ORION, Q4_1 as stored", &orion["as-stored"]),
        ("ORION, re-quantized to Q8_0", &orion["q8_0"]),
        ("wllama, Q4_1", wllama),
    ];
    let prompts = [("short", "short"), ("long", "long")];

    let mut speed = String::new();
    for (prompt, key) in prompts {
        for (name, engine) in engines {
            let d = &engine["decode"][key];
            if d.is_null() {
                continue;
            }
            speed.push_str(&format!(
                "| {prompt} | {name} | {:.0} | {} | {} | {} | {} |\n",
                num(&d["promptTokens"]),
                fixed(num(&d["prefillTokS"]), 1),
                fixed(num(&d["decodeTokS"]), 1),
                fixed(num(&d["firstTokenMs"]), 0),
                fixed(num(&d["tokens"]), 0),
            ));
        }
    }

    let mut ratios = String::new();
    for (prompt, key) in prompts {
        let w = &wllama["decode"][key];
        for (name, engine) in &engines[..2] {
            let d = &engine["decode"][key];
            let ratio = |field: &str, inverse: bool| {
                let (a, b) = (num(&d[field]), num(&w[field]));
                let r = if inverse { b / a } else { a / b };
                if r.is_finite() {
                    format!("{r:.2}×")
                } else {
                    "n/a".to_owned()
                }
            };
            ratios.push_str(&format!(
                "| {prompt} | {name} | {} | {} | {} |\n",
                ratio("prefillTokS", false),
                ratio("decodeTokS", false),
                ratio("firstTokenMs", true),
            ));
        }
    }

    let mut llama_own = String::new();
    for (prompt, key) in prompts {
        let w = &wllama["decode"][key];
        llama_own.push_str(&format!(
            "| {prompt} | {:.0} | {:.0} | {} | {} |\n",
            num(&w["promptTokens"]),
            num(&w["orionPromptTokens"]),
            fixed(num(&w["llamaPrefillTokS"]), 1),
            fixed(num(&w["llamaDecodeTokS"]), 1),
        ));
    }

    let mut generator = String::new();
    for (prompt, key) in prompts {
        for (name, engine) in &engines[..2] {
            let g = &engine["generator"][key];
            generator.push_str(&format!(
                "| {prompt} | {name} | {:.0} | {} | {} | {} |\n",
                num(&g["tokens"]),
                fixed(num(&g["prefillTokS"]), 1),
                fixed(num(&g["decodeTokS"]), 1),
                fixed(num(&g["firstTokenMs"]), 0),
            ));
        }
    }

    let mut batching = String::new();
    for (name, engine) in &engines[..2] {
        for n in ["2", "3"] {
            let b = &engine["batching"][n];
            batching.push_str(&format!(
                "| {name} | {n} | {:.0} / {:.0} | {} | {} | **{}** | {} |\n",
                num(&b["sequentialTokens"]),
                num(&b["manyTokens"]),
                fixed(num(&b["sequentialMs"]), 0),
                fixed(num(&b["manyMs"]), 0),
                fixed(num(&b["ratio"]), 2),
                if b["sameText"].as_bool() == Some(true) {
                    "yes"
                } else {
                    "no"
                },
            ));
        }
    }

    let mut memory = String::new();
    for (name, engine) in engines {
        let (peak, idle) = peak_memory(engine);
        let wasm = num(&engine["memory"]["wasmMemoryBytes"]);
        // ORION's worker fetches the file then loads it; wllama's `loadModelFromUrl` does both.
        let load =
            num(&engine["load"]["loadMs"]) + engine["load"]["fetchMs"].as_f64().unwrap_or(0.0);
        memory.push_str(&format!(
            "| {name} | {} | {} | {} | {} |\n",
            fixed(load, 0),
            megabytes(peak),
            megabytes(idle),
            if wasm.is_finite() {
                megabytes(wasm)
            } else {
                "not readable".to_owned()
            },
        ));
    }

    let prompt_text = |key: &str| {
        figures["prompts"][key]["prompt"]
            .as_str()
            .unwrap_or("?")
            .chars()
            .take(80)
            .collect::<String>()
    };
    let batch_prompts = figures["batchPrompts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|p| format!("\"{p}\""))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let version = env!("CARGO_PKG_VERSION");
    let busy = match machine.load.parse::<f64>() {
        Ok(load) if machine.cores > 0 && load > machine.cores as f64 => format!(
            "**The machine was busy (load average {load} on {} cores): every figure is lower \
than on an idle machine, and the engines, measured one after the other, did not run under the \
same load, so their ratios are rough.**\n\n",
            machine.cores
        ),
        _ => String::new(),
    };
    format!(
        "## Local LLM (`cargo xtask bench llm`)\n\n\
Written by `cargo xtask bench llm` {machine}, ORION {version} (release build, wasm32 with \
`+simd128`, one thread), wllama {wllama_version} (llama.cpp in wasm, `n_threads: 1`).\n\n\
{busy}\
Model: SmolLM2-135M-Instruct, `{model}` ({model_mb} MB), the same file for both engines. \
Each engine runs in a headless Chromium of its own (one page, a fresh renderer process), one \
after the other. ORION runs in a dedicated worker of the benchmark's own that loads \
`pkg/wasm/orion_web.js` and calls `BenchLlm` (`crates/orion-web/src/bench_llm.rs`): \
`LocalModel::load` with `WeightFormat::AsStored` (Q4_1) or `WeightFormat::Q8_0` (re-quantized at \
load time; this file's embedding table, which is also the output layer, is Q8_0 already), \
`max_context` {ctx:.0}. wllama runs its own \
worker, `loadModelFromUrl(url, {{ n_threads: 1, n_ctx: {ctx:.0}, useCache: false }})`, its wasm \
from the served `node_modules` and `setCompat(null)` (nothing from a CDN).\n\n\
Prompts, in ORION's chat template (SmolLM2's, with its default system prompt): **short** \
\"{short}\", **long** a 16-sentence passage then \"Summarize the passage above in a few \
sentences.\" wllama gets the exact text ORION's template renders (llama.cpp's prompt token count \
is checked against ORION's below). Each figure is the median of {runs:.0} runs after a warm-up; \
{tokens:.0} tokens, greedy, end of turn ignored: ORION's `BenchLlm.decode(…, ignoreEos)` runs the \
model's forward passes itself with greedy picks; wllama `createCompletion({{ temperature: 0, \
ignore_eos: true, cache_prompt: false, stream: true }})`. Prefill = the prompt's tokens ÷ the time \
to the first token (the first pass and its pick; for wllama the first streamed text, measured on \
the page, so it includes wllama's worker round trips); decode = the other {later:.0} tokens ÷ the \
rest of the time. Time to first token includes tokenizing the prompt.\n\n\
### Speed, one thread\n\n\
| prompt | engine | prompt tokens | prefill tokens/s | decode tokens/s | first token, ms | tokens |\n\
| --- | --- | ---: | ---: | ---: | ---: | ---: |\n\
{speed}\n\
ORION ÷ wllama (above 1 is ORION faster):\n\n\
| prompt | ORION | prefill | decode | first token |\n\
| --- | --- | ---: | ---: | ---: |\n\
{ratios}\n\
llama.cpp's own timings of the same runs (not streamed; inside its worker, no round trips):\n\n\
| prompt | llama.cpp prompt tokens | ORION prompt tokens | prefill tokens/s | decode tokens/s |\n\
| --- | ---: | ---: | ---: | ---: |\n\
{llama_own}\n\
Through ORION's generator (`LocalGenerator::start` then `step` until it ends: sampling, \
detokenizing, stop strings; it stops at the end of turn), one run, up to {tokens:.0} tokens:\n\n\
| prompt | ORION | tokens | prefill tokens/s | decode tokens/s | first token, ms |\n\
| --- | --- | ---: | ---: | ---: | ---: |\n\
{generator}\n\
### Batching: `generate_many` against one request after another\n\n\
`Generator::generate_many` of the first 2 and all 3 of {batch_prompts} (up to {tokens:.0} tokens \
each, greedy, ending at the end of turn), against `Generator::generate` of each in turn, same \
worker, one run each. Ratio = batch wall time ÷ sequential wall time (below 1 is a gain).\n\n\
| ORION | prompts | tokens, sequential / batch | sequential, ms | `generate_many`, ms | ratio | same text |\n\
| --- | ---: | ---: | ---: | ---: | ---: | --- |\n\
{batching}\n\
### Load time and memory\n\n\
Peak memory is the peak resident set (`VmHWM` in `/proc/<pid>/status`) of the renderer process \
that runs the page and its workers (found through the DevTools protocol's \
`SystemInfo.getProcessInfo`), at the end of the engine's run: it includes the file's bytes as \
fetched and every copy made while loading. `performance.measureUserAgentSpecificMemory` was not \
used: it reports the JS heap, not the wasm memory where both engines keep their weights. ORION's \
wasm memory is its linear memory's size at the end (it never shrinks, so it is also its peak); \
wllama's worker is not reachable from the page.\n\n\
| engine | fetch + load, ms | renderer peak, MB | renderer peak when the page opened, MB | wasm memory, MB |\n\
| --- | ---: | ---: | ---: | ---: |\n\
{memory}",
        machine = machine.describe(),
        wllama_version = wllama["version"].as_str().unwrap_or("?"),
        model = figures["model"].as_str().unwrap_or("?"),
        model_mb = megabytes(num(&figures["modelBytes"])),
        ctx = num(&figures["maxContext"]),
        short = prompt_text("short"),
        runs = num(&figures["runs"]),
        tokens = num(&figures["tokens"]),
        later = num(&figures["tokens"]) - 1.0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_llm_document_has_every_engine_and_ratio() {
        let decode = |prefill: f64, decode: f64| {
            serde_json::json!({
                "promptTokens": 40, "tokens": 64, "prefillTokS": prefill, "decodeTokS": decode,
                "firstTokenMs": 1000.0 * 40.0 / prefill, "orionPromptTokens": 40,
                "llamaPrefillTokS": prefill, "llamaDecodeTokS": decode,
            })
        };
        let engine = |prefill: f64, dec: f64| {
            serde_json::json!({
                "decode": { "short": decode(prefill, dec), "long": decode(prefill, dec) },
                "generator": { "short": decode(prefill, dec), "long": decode(prefill, dec) },
                "batching": {
                    "2": { "sequentialMs": 1000.0, "manyMs": 600.0, "ratio": 0.6, "sequentialTokens": 128, "manyTokens": 128, "sameText": true },
                    "3": { "sequentialMs": 1500.0, "manyMs": 750.0, "ratio": 0.5, "sequentialTokens": 192, "manyTokens": 192, "sameText": false },
                },
                "load": { "loadMs": 2000.0 },
                "renderers": [{ "peakBytes": 300e6 }],
                "idleRenderers": [{ "peakBytes": 50e6 }],
                "memory": { "wasmMemoryBytes": 200e6 },
            })
        };
        let figures = serde_json::json!({
            "runs": 3, "tokens": 64, "maxContext": 1024, "model": "/models/x.gguf", "modelBytes": 98e6,
            "prompts": { "short": { "prompt": "Hello" }, "long": { "prompt": "Long" } },
            "batchPrompts": ["a", "b", "c"],
            "orion": { "as-stored": engine(20.0, 10.0), "q8_0": engine(40.0, 30.0) },
            "wllama": { "version": "3.8.1", "decode": { "short": decode(20.0, 15.0), "long": decode(20.0, 15.0) },
                        "load": { "loadMs": 1000.0 }, "renderers": [{ "peakBytes": 250e6 }] },
        });
        let doc = document(&figures, &crate::bench::tests::test_machine());
        for needle in [
            "## Local LLM (`cargo xtask bench llm`)",
            "| short | ORION, Q4_1 as stored | 40 | 20.0 | 10.0 | 2000 | 64 |",
            "| long | wllama, Q4_1 | 40 | 20.0 | 15.0 | 2000 | 64 |",
            "| short | ORION, re-quantized to Q8_0 | 2.00× | 2.00× | 2.00× |",
            "| ORION, Q4_1 as stored | 3 | 192 / 192 | 1500 | 750 | **0.50** | no |",
            "| wllama, Q4_1 | 1000 | 250 | n/a | not readable |",
            "| ORION, Q4_1 as stored | 2000 | 300 | 50 | 200 |",
            "wllama 3.8.1",
        ] {
            assert!(doc.contains(needle), "missing {needle:?} in\n{doc}");
        }
    }
}
