//! `cargo xtask bench backup`: ORION's backups and dexie-export-import on the same data, in one
//! headless Chromium run (`tests/bench/backup.mjs`): export and import throughput and the
//! renderer's peak memory at 10k and 100k memories, and memory-search latency while a backup of
//! 50k is taken. Writes the `backup` section of `docs/BENCHMARKS.md` and the raw figures to
//! `target/bench-backup.json`.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

use super::{num, ratio, run_harness, write_section, Machine};

/// Runs the benchmark and writes its section.
pub fn run(root: &Path) -> Result<()> {
    let figures = run_harness(root, "backup.mjs", "backup")?;
    let raw = root.join("target/bench-backup.json");
    std::fs::write(&raw, figures.to_string())
        .with_context(|| format!("writing {}", raw.display()))?;
    write_section(root, "backup", &document(&figures, &Machine::read()))
}

/// The operations measured at each size: (key in the figures, what it is).
const OPERATIONS: [(&str, &str); 5] = [
    (
        "orionExport",
        "ORION `backups.export()`: the file as a string in the page",
    ),
    (
        "orionDownload",
        "ORION `backups.download()`: the file saved from a Blob",
    ),
    (
        "dexieExport",
        "Dexie `exportDB` of ORION's `memories` table",
    ),
    (
        "orionImport",
        "ORION `backups.import(file)`: checked, one transaction, indexed",
    ),
    ("dexieImport", "Dexie `importDB` into a new database"),
];

/// Bytes as MB (10^6), one decimal.
fn mb(bytes: f64) -> String {
    format!("{:.1}", bytes / 1e6)
}

/// One operation's row: file size, time, throughput, the renderer's memory before and at peak.
fn operation_row(size: f64, what: &str, run: &Value, bytes: f64) -> String {
    let ms = num(&run["ms"]);
    let memory = &run["memory"];
    format!(
        "| {size:.0} | {what} | {} | {:.2} | {:.1} | {:.0} | {:.0} | **{:.0}** |\n",
        mb(bytes),
        ms / 1000.0,
        bytes / 1e6 / (ms / 1000.0),
        num(&memory["baseMB"]),
        num(&memory["peakMB"]),
        num(&memory["peakIncreaseMB"]),
    )
}

/// Median, p95 and max of a latency series, ms.
fn latency(stats: &Value) -> String {
    format!(
        "{:.1} / {:.1} / {:.1}",
        num(&stats["median"]),
        num(&stats["p95"]),
        num(&stats["max"])
    )
}

/// The section of `cargo xtask bench backup`.
pub fn document(figures: &Value, machine: &Machine) -> String {
    let runs = figures["runs"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let mut table = String::new();
    let mut ratios = String::new();
    for run in runs {
        let size = num(&run["size"]);
        // The file an operation wrote or read: exports measure their own, imports the one they read.
        let bytes = |key: &str| match key {
            "orionDownload" => num(&run["orionExport"]["bytes"]),
            _ => num(&run[key]["bytes"]),
        };
        for (key, what) in OPERATIONS {
            table.push_str(&operation_row(size, what, &run[key], bytes(key)));
        }
        let rate = |key: &str| bytes(key) / num(&run[key]["ms"]);
        let peak = |key: &str| num(&run[key]["memory"]["peakIncreaseMB"]);
        ratios.push_str(&format!(
            "| {size:.0} | {} | {} | {} | {} | {} |\n",
            ratio(rate("orionExport"), rate("dexieExport")),
            ratio(rate("orionDownload"), rate("dexieExport")),
            ratio(rate("orionImport"), rate("dexieImport")),
            ratio(peak("orionDownload"), peak("dexieExport")),
            ratio(peak("orionImport"), peak("dexieImport")),
        ));
    }
    let during = &figures["during"];
    let mut searches = String::new();
    for (n, backup) in during["backups"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .enumerate()
    {
        searches.push_str(&format!(
            "| backup {} | {:.2} | {} | {:.0} | {} |\n",
            n + 1,
            num(&backup["createMs"]) / 1000.0,
            mb(num(&backup["bytes"])),
            num(&backup["searches"]["n"]),
            latency(&backup["searches"]),
        ));
    }
    format!(
        "## Backups (`cargo xtask bench backup`)

Measured {machine}, in one run on a browser profile on disk; ORION's micro profile (the hashing \
embedder, 384 dimensions), memories of 100–200 characters added with `memory.addMany`. Raw \
figures in `target/bench-backup.json`.

### Export and import, ORION and dexie-export-import on the same memories

Each operation runs in a fresh page. Its memory is that page's renderer process, which runs the \
page and ORION's worker: its resident size when the operation starts (ORION's index loaded) and \
its peak (Linux `VmHWM`) during it. IndexedDB and Blob storage live in the browser's own \
processes and are not counted. Dexie runs on the page's main thread; ORION in its worker. \
Throughput is the file's size over the operation's time.

| memories | operation | file MB | s | MB/s | renderer MB at start | peak MB | peak rise MB |
| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |
{table}
ORION over Dexie (throughput: above 1 is faster; peak rise: below 1 is less memory):

| memories | export MB/s | download MB/s | import MB/s | peak rise, download | peak rise, import |
| ---: | ---: | ---: | ---: | ---: | ---: |
{ratios}
### Searches while a backup is taken

`memory.search` (k = 10) back to back at {memories:.0} memories, alone and while \
`backups.create()` runs in the same worker: the backup reads the memories in one read \
transaction, 250 per request, and the worker answers searches between the requests; then it writes its \
parts, pausing every 4 MB.

| | backup s | backup MB | searches | search ms, median / p95 / max |
| --- | ---: | ---: | ---: | --- |
| alone | | | {alone_n:.0} | {alone} |
{searches}",
        machine = machine.describe(),
        memories = num(&during["memories"]),
        alone_n = num(&during["alone"]["n"]),
        alone = latency(&during["alone"]),
    )
}
