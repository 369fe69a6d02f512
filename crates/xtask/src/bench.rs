//! `cargo xtask bench embed`: measures the embedders in headless Chromium and writes
//! `docs/BENCHMARKS.md`.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{build, output_of, serve, setup};

/// Runs the benchmark named by `args` (only `embed` so far).
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("embed") | None => embed(root),
        Some(other) => bail!("unknown benchmark `{other}` (try `embed`)"),
    }
}

fn embed(root: &Path) -> Result<()> {
    setup::all(root)?;
    build::wasm(root, Some("release"))?;
    let server = serve::Server::start(root, 0)?;
    println!("running the embedding benchmark in headless Chromium (about a minute)");
    let output = Command::new("node")
        .arg("bench-embed.mjs")
        .arg(server.url())
        .current_dir(root.join("tests"))
        .output()
        .context("could not run node")?;
    if !output.status.success() {
        bail!(
            "the benchmark failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    let figures: Value = serde_json::from_str(line).context("reading the benchmark's output")?;

    let wasm =
        std::fs::read(root.join("pkg/wasm/orion_web_bg.wasm")).context("reading the wasm")?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&wasm)?;
    let gzipped = gz.finish()?.len();

    let mut rows = String::new();
    for profile in ["full", "lite", "micro"] {
        let p = &figures["profiles"][profile];
        rows.push_str(&format!(
            "| {profile} | `{}` | {:.0} | {:.1} | {:.1} |\n",
            p["version"].as_str().unwrap_or("?"),
            p["coldStartMs"].as_f64().unwrap_or(f64::NAN),
            p["oneAtATime"].as_f64().unwrap_or(f64::NAN),
            p["batched"].as_f64().unwrap_or(f64::NAN),
        ));
    }
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
    let doc = format!(
        "# Benchmarks\n\n\
Written by `cargo xtask bench embed` on {date}: {cpu}, {cores} cores, {chromium}, headless, \
ORION {version} (release build, wasm32 with `+simd128`, one thread).\n\n\
## Embeddings (`cargo xtask bench embed`)\n\n\
The 200 sentences of `shared/reference/minilm-reference.json`, embedded through the npm API \
(`orion.embed`) in the worker. Cold start: from `Orion.create` to the first embedding, with the \
model files already in Cache Storage (wasm compile, model load, first inference). One at a time: \
one `embed` call per sentence. Batched: 32 sentences per call.\n\n\
| profile | embedder version | cold start (ms) | sentences/s one at a time | sentences/s in batches of 32 |\n\
| --- | --- | ---: | ---: | ---: |\n\
{rows}\n\
`orion_web_bg.wasm`: {raw:.2} MB raw, {gz:.2} MB gzipped.\n\n\
Not measured yet: transformers.js side by side (issue 3 asks for it), peak memory.\n",
        version = env!("CARGO_PKG_VERSION"),
        raw = wasm.len() as f64 / 1e6,
        gz = gzipped as f64 / 1e6,
    );
    std::fs::create_dir_all(root.join("docs"))?;
    std::fs::write(root.join("docs/BENCHMARKS.md"), &doc)?;
    println!("{doc}");
    println!("written to docs/BENCHMARKS.md");
    Ok(())
}
