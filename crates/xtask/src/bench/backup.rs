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

/// The section of `cargo xtask bench backup`.
pub fn document(figures: &Value, machine: &Machine) -> String {
    let _ = (num, ratio);
    format!("{figures}\n{}", machine.describe())
}
