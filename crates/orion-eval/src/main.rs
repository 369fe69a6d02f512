//! ORION's answer-quality evaluation (`cargo xtask eval` runs it): the queries of `tests/eval/`
//! through the real ask pipeline on the micro, lite and full profiles, scored for tool routing,
//! exact tool answers, memory recall@5 and, where the local LLM answered, relevance against
//! reference answers. `tests/eval/README.md` explains the set and the rules.
//!
//! ```text
//! orion-eval [--profile micro|lite|full]... [--json PATH] [--models DIR] [--dataset DIR] [--no-llm]
//! ```
//!
//! It exits non-zero only when it cannot run (a missing file, a model that does not load): a
//! missed target is a measurement, not a failure.

mod dataset;
mod harness;
mod matching;
mod report;

use std::path::{Path, PathBuf};
use std::rc::Rc;

use anyhow::{anyhow, bail, Context, Result};
use orion_core::{Embedder, Generator, Profile};
use orion_embed::{HashingEmbedder, MiniLm, ModelFiles, Precision};
use serde::Serialize;

use crate::dataset::Dataset;
use crate::report::{Judge, Summary, RELEVANCE_THRESHOLD};

/// The local LLM, under the models folder.
const LLM_FILE: &str = "SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf";
/// MiniLM's folder, under the models folder.
const MINILM_DIR: &str = "all-MiniLM-L6-v2";

/// The command line.
struct Options {
    profiles: Vec<Profile>,
    json: Option<PathBuf>,
    models: PathBuf,
    dataset: PathBuf,
    llm: bool,
}

/// What `--json` writes.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report<'a> {
    /// The harness's clock, ms since the epoch.
    now_ms: u64,
    time_zone: &'static str,
    relevance_threshold: f32,
    queries: usize,
    facts: usize,
    profiles: &'a [Summary],
}

fn main() {
    if let Err(error) = run() {
        eprintln!("orion-eval: error: {error:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let options = parse(std::env::args().skip(1))?;
    let dataset = Dataset::load(&options.dataset)?;
    println!(
        "{} queries, {} seeded facts, clock 2026-11-23T12:00:00Z, zone {}",
        dataset.queries.len(),
        dataset.facts.len(),
        harness::TIME_ZONE
    );
    // MiniLM f32 is both full's embedder and the relevance judge; the 8-bit model is lite's and
    // micro's. Each is loaded once.
    let minilm = Rc::new(load_minilm(&options.models, Precision::F32)?);
    let quantized = if options
        .profiles
        .iter()
        .any(|p| matches!(p, Profile::Lite | Profile::Micro))
    {
        Some(Rc::new(load_minilm(&options.models, Precision::Q8_0)?))
    } else {
        None
    };
    let generator: Option<Rc<dyn Generator>> = if options.llm
        && options
            .profiles
            .iter()
            .any(|p| matches!(p, Profile::Lite | Profile::Full))
    {
        let path = options.models.join(LLM_FILE);
        println!("loading {}", path.display());
        Some(harness::local_generator(&path)?)
    } else {
        None
    };
    let judge_with = |texts: &[&str]| -> Result<Vec<Vec<f32>>> {
        minilm
            .embed_now(texts)
            .map_err(|e| anyhow!("embedding for the relevance check: {e}"))
    };
    let judge: Judge<'_> = &judge_with;

    let mut runs: Vec<(String, Profile, Rc<dyn Embedder>)> = Vec::new();
    for &profile in &options.profiles {
        let embedder: Rc<dyn Embedder> = match profile {
            Profile::Micro | Profile::Lite => {
                quantized.clone().context("MiniLM Q8_0 was not loaded")?
            }
            Profile::Full => minilm.clone(),
        };
        runs.push((profile.name().to_owned(), profile, embedder));
        // Micro without a model runs the hashing embedder: measured too, since hosts may not
        // serve a model to small devices.
        if profile == Profile::Micro {
            runs.push((
                "micro, no model".to_owned(),
                profile,
                Rc::new(HashingEmbedder::new()),
            ));
        }
    }
    let mut summaries = Vec::new();
    for (label, profile, embedder) in runs {
        let generator = match profile {
            Profile::Micro => None,
            Profile::Lite | Profile::Full => generator.clone(),
        };
        let version = embedder.info().version.clone();
        let llm = generator.is_some();
        println!(
            "running {label} ({version}{})",
            if llm { ", local LLM" } else { "" }
        );
        let harness = harness::Harness::new(profile, embedder, generator, &dataset)?;
        let mut records = Vec::with_capacity(dataset.queries.len());
        for query in &dataset.queries {
            let outcome = harness.ask(query)?;
            records.push(report::score(query, outcome, Some(judge))?);
        }
        let summary = report::summarize(&label, &version, llm, records);
        report::print(&summary, &dataset.queries);
        summaries.push(summary);
    }

    if let Some(path) = &options.json {
        let report = Report {
            now_ms: harness::NOW_MS,
            time_zone: harness::TIME_ZONE,
            relevance_threshold: RELEVANCE_THRESHOLD,
            queries: dataset.queries.len(),
            facts: dataset.facts.len(),
            profiles: &summaries,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let text = serde_json::to_string_pretty(&report).context("serializing the report")?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("\nreport written to {}", path.display());
    }
    Ok(())
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Options> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut options = Options {
        profiles: Vec::new(),
        json: None,
        models: root.join("models"),
        dataset: root.join("tests/eval"),
        llm: true,
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--profile" => {
                let profile = match value("--profile")?.as_str() {
                    "micro" => Profile::Micro,
                    "lite" => Profile::Lite,
                    "full" => Profile::Full,
                    other => bail!("unknown profile `{other}` (micro, lite or full)"),
                };
                if !options.profiles.contains(&profile) {
                    options.profiles.push(profile);
                }
            }
            "--json" => options.json = Some(PathBuf::from(value("--json")?)),
            "--models" => options.models = PathBuf::from(value("--models")?),
            "--dataset" => options.dataset = PathBuf::from(value("--dataset")?),
            "--no-llm" => options.llm = false,
            "--help" | "-h" => {
                println!("usage: orion-eval [--profile micro|lite|full]... [--json PATH] [--models DIR] [--dataset DIR] [--no-llm]");
                std::process::exit(0);
            }
            other => bail!("unknown option `{other}` (see --help)"),
        }
    }
    if options.profiles.is_empty() {
        options.profiles = vec![Profile::Micro, Profile::Lite, Profile::Full];
    }
    Ok(options)
}

/// MiniLM from `models/all-MiniLM-L6-v2/`.
fn load_minilm(models: &Path, precision: Precision) -> Result<MiniLm> {
    let dir = models.join(MINILM_DIR);
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).with_context(|| {
            format!(
                "reading {} (run `cargo xtask setup` to fetch the models)",
                path.display()
            )
        })
    };
    let (config, tokenizer, weights) = (
        read("config.json")?,
        read("tokenizer.json")?,
        read("model.safetensors")?,
    );
    MiniLm::load(
        ModelFiles {
            config: &config,
            tokenizer: &tokenizer,
            weights: &weights,
        },
        precision,
    )
    .map_err(|e| anyhow!("loading MiniLM ({precision:?}): {e}"))
}
