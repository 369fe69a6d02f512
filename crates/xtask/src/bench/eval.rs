//! `cargo xtask eval`: answer quality, measured by the evaluation set of `tests/eval/` through
//! the real ask pipeline natively (`crates/orion-eval`, release build) on the micro, lite and
//! full profiles. Writes the `eval` section of `docs/BENCHMARKS.md`; the raw report (every
//! query's answer) is kept in `target/eval.json`.
//!
//! Options (`--profile micro|lite|full`, repeatable; `--no-llm`) are passed to `orion-eval`.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::{num, write_command_section, Machine};
use crate::{models, run_checked};

/// The targets of issue 7, item 5: (figure key, label, target as shown, target as a share).
const TARGETS: &[(&str, &str, &str, Option<f64>)] = &[
    ("routing", "Tool routing accuracy", "≥ 98%", Some(0.98)),
    (
        "toolExact",
        "Exact tool answers (the expected tool answered)",
        "100%",
        Some(1.0),
    ),
    (
        "toolEndToEnd",
        "Exact tool answers, end to end (over all tool queries)",
        "—",
        None,
    ),
    ("recallAt5", "Memory recall@5", "≥ 95%", Some(0.95)),
    (
        "relevance",
        "General answers judged relevant (local LLM)",
        "—",
        None,
    ),
];

/// Runs the evaluation and writes its section.
pub fn run(root: &Path, args: &[String]) -> Result<()> {
    for arg in args {
        if !matches!(
            arg.as_str(),
            "--profile" | "micro" | "lite" | "full" | "--no-llm"
        ) {
            bail!("unknown eval option `{arg}` (use --profile micro|lite|full, --no-llm)");
        }
    }
    models::fetch(root)?;
    let report = root.join("target/eval.json");
    run_checked(
        Command::new("cargo")
            .args(["run", "--release", "-p", "orion-eval", "--"])
            .args(args)
            .arg("--json")
            .arg(&report)
            .current_dir(root),
    )?;
    let text = std::fs::read_to_string(&report)
        .with_context(|| format!("reading {}", report.display()))?;
    let figures: Value = serde_json::from_str(&text).context("reading the evaluation report")?;
    write_command_section(root, "eval", &document(&figures, &Machine::read()))
}

/// `hits/total` of a ratio as a percentage with its counts.
fn ratio(value: &Value) -> String {
    let (hits, total) = (num(&value["hits"]), num(&value["total"]));
    if total > 0.0 {
        format!("{:.1}% ({hits}/{total})", 100.0 * hits / total)
    } else {
        "n/a".to_owned()
    }
}

fn share(value: &Value) -> Option<f64> {
    let (hits, total) = (num(&value["hits"]), num(&value["total"]));
    (total > 0.0).then(|| hits / total)
}

/// The generated part of `docs/BENCHMARKS.md`.
fn document(figures: &Value, machine: &Machine) -> String {
    let profiles = figures["profiles"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let names: Vec<&str> = profiles
        .iter()
        .map(|p| p["profile"].as_str().unwrap_or("?"))
        .collect();
    let header = |first: &str, extra: &[&str]| {
        let mut columns = vec![first];
        columns.extend_from_slice(extra);
        columns.extend(names.iter().copied());
        format!(
            "| {} |\n|{}\n",
            columns.join(" | "),
            "---|".repeat(columns.len())
        )
    };
    let mut out = String::from("## Answer quality (`cargo xtask eval`)\n\n");
    out.push_str(&format!(
        "Measured on {}: {}, {} cores (load average {} when the run ended), native release build. \
         {} queries and {} seeded facts (`tests/eval/`, whose README gives the matching rules), \
         the clock fixed at 2026-11-23T12:00:00Z, time zone {}. Embedders: {}. The local LLM \
         (SmolLM2-135M-Instruct Q4_1) answers the general questions where marked; an answer is \
         relevant when its MiniLM f32 embedding has a cosine of at least {} with the \
         reference answer's.\n\n",
        machine.date,
        machine.cpu,
        machine.cores,
        machine.load,
        num(&figures["queries"]),
        num(&figures["facts"]),
        figures["timeZone"].as_str().unwrap_or("?"),
        profiles
            .iter()
            .map(|p| format!(
                "{} `{}`{}",
                p["profile"].as_str().unwrap_or("?"),
                p["embedder"].as_str().unwrap_or("?"),
                if p["llm"].as_bool() == Some(true) {
                    " + LLM"
                } else {
                    ""
                }
            ))
            .collect::<Vec<_>>()
            .join(", "),
        num(&figures["relevanceThreshold"]),
    ));
    out.push_str(&header("Figure", &["Target"]));
    for (key, label, target, goal) in TARGETS {
        let cells: Vec<String> = profiles
            .iter()
            .map(|p| {
                let value = &p[key];
                let verdict = match (goal, share(value)) {
                    (Some(goal), Some(got)) if got >= *goal => " **met**",
                    (Some(_), Some(_)) => " not met",
                    _ => "",
                };
                format!("{}{verdict}", ratio(value))
            })
            .collect();
        out.push_str(&format!("| {label} | {target} | {} |\n", cells.join(" | ")));
    }

    out.push_str("\n### Tool routing by category\n\n");
    out.push_str(&header("Category", &[]));
    let categories = [
        "arithmetic",
        "dates",
        "units",
        "memory",
        "general",
        "no_tool",
    ];
    for category in categories {
        let cells: Vec<String> = profiles
            .iter()
            .map(|p| {
                p["routingByCategory"]
                    .as_array()
                    .and_then(|rows| rows.iter().find(|row| row[0] == category))
                    .map_or_else(|| "n/a".to_owned(), |row| ratio(&row[1]))
            })
            .collect();
        out.push_str(&format!("| {category} | {} |\n", cells.join(" | ")));
    }

    out.push_str("\n### Wall time of `ask` per query, p50 / p95 ms\n\n");
    out.push_str(&header("Category", &[]));
    for category in categories {
        let cells: Vec<String> = profiles
            .iter()
            .map(|p| {
                p["latency"]
                    .as_array()
                    .and_then(|rows| rows.iter().find(|row| row["category"] == category))
                    .map_or_else(
                        || "n/a".to_owned(),
                        |row| format!("{:.1} / {:.1}", num(&row["p50Ms"]), num(&row["p95Ms"])),
                    )
            })
            .collect();
        out.push_str(&format!("| {category} | {} |\n", cells.join(" | ")));
    }

    out.push_str("\n### Misses\n\n");
    for profile in profiles {
        let misses = misses(profile, num(&figures["relevanceThreshold"]));
        out.push_str(&format!(
            "**{}** ({}):{}",
            profile["profile"].as_str().unwrap_or("?"),
            misses.len(),
            if misses.is_empty() {
                " none\n\n"
            } else {
                "\n\n"
            }
        ));
        for miss in &misses {
            out.push_str(&format!("- {miss}\n"));
        }
        if !misses.is_empty() {
            out.push('\n');
        }
    }
    out
}

/// One line per missed query of `profile`: its id, query, what was missed and the answer.
fn misses(profile: &Value, threshold: f64) -> Vec<String> {
    let records = profile["records"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    records
        .iter()
        .filter_map(|r| {
            let tool = |v: &Value| v.as_str().unwrap_or("none").to_owned();
            let mut why = Vec::new();
            if r["routed"] == false {
                why.push(format!(
                    "tool {} (expected {})",
                    tool(&r["tool"]),
                    tool(&r["expectedTool"])
                ));
            } else if r["correct"] == false {
                why.push("wrong value".to_owned());
            }
            if r["recalled"] == false {
                why.push(format!("fact not recalled (hits {})", r["factsHit"]));
            }
            if r["relevance"].as_f64().is_some_and(|v| v < threshold) {
                why.push(format!("relevance {:.2}", num(&r["relevance"])));
            }
            if why.is_empty() {
                return None;
            }
            let response: String = r["response"]
                .as_str()
                .unwrap_or_default()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .replace('|', "\\|");
            let cut = response
                .char_indices()
                .nth(120)
                .map_or(response.as_str(), |(at, _)| &response[..at]);
            Some(format!(
                "`{}` {:?}: {}; got `{}`: {}{}",
                r["id"].as_str().unwrap_or("?"),
                r["query"].as_str().unwrap_or("?"),
                why.join(", "),
                r["route"].as_str().unwrap_or("?"),
                cut,
                if cut.len() < response.len() {
                    "…"
                } else {
                    ""
                }
            ))
        })
        .collect()
}
