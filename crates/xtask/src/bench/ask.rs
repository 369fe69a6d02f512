//! `cargo xtask bench ask`: the latency of `orion.ask` through the npm API in headless Chromium
//! (`tests/bench/ask.mjs`): tool and memory answers on micro and lite, one generation on lite and
//! the multi-agent debate on full with the local LLM. Writes the `ask` section of
//! `docs/BENCHMARKS.md` and the raw figures to `target/bench-ask.json`.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

use super::{median, num, run_harness, verdict, write_section, Machine};
use crate::models;

/// Issue 7's bound on a tool answer on micro, p50 and p95, ms.
const TOOL_TARGET_MS: f64 = 50.0;
/// Issue 7's bound on a full debate with the local LLM, ms.
const DEBATE_TARGET_MS: f64 = 20_000.0;

/// The debate's stages, as `reasoningSteps` names them, with their column titles.
const DEBATE_STAGES: [(&str, &str); 3] = [
    ("multi_agent_parallel", "parallel (logical + creative)"),
    ("multi_agent_critical", "critical"),
    ("multi_agent_synthesis", "synthesis"),
];
/// The debate's agents, as `onToken` names them, with the index of their stage.
const AGENTS: [(&str, usize); 4] = [
    ("logical", 0),
    ("creative", 0),
    ("critical", 1),
    ("synthesizer", 2),
];

/// Runs the benchmark and writes its section.
pub fn run(root: &Path) -> Result<()> {
    models::fetch(root)?;
    let figures = run_harness(root, "ask.mjs", "ask latency")?;
    // The raw figures too: every ask's time, route, steps and (for generated answers) text.
    let raw = root.join("target/bench-ask.json");
    std::fs::write(&raw, figures.to_string())
        .with_context(|| format!("writing {}", raw.display()))?;
    write_section(root, "ask", &document(&figures, &Machine::read()))
}

/// Milliseconds with no decimals, or `n/a`.
fn ms(value: f64) -> String {
    if value.is_finite() {
        format!("{value:.0}")
    } else {
        "n/a".to_owned()
    }
}

/// Milliseconds as seconds with one decimal, or `n/a`.
fn seconds(value: f64) -> String {
    if value.is_finite() {
        format!("{:.1}", value / 1000.0)
    } else {
        "n/a".to_owned()
    }
}

/// The duration of the step `stage` of an ask (summed, should it appear twice), or NaN.
fn step_ms(ask: &Value, stage: &str) -> f64 {
    let steps = ask["steps"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let matching: Vec<f64> = steps
        .iter()
        .filter(|s| s["stage"] == stage)
        .map(|s| num(&s["durationMs"]))
        .collect();
    if matching.is_empty() {
        f64::NAN
    } else {
        matching.iter().sum()
    }
}

/// When `stage` started, ms after the call, by the page's `onStatus` (NaN if it did not).
fn started_ms(ask: &Value, stage: &str) -> f64 {
    ask["stages"]
        .as_array()
        .and_then(|stages| stages.iter().find(|s| s["stage"] == stage))
        .map_or(f64::NAN, |s| num(&s["atMs"]))
}

/// How long debate stage `index` lasted on the page: from its `onStatus` to the next stage's, or
/// to the answer for the last one (which includes formatting the answer).
fn stage_ms(ask: &Value, index: usize) -> f64 {
    let end = DEBATE_STAGES
        .get(index + 1)
        .map_or(num(&ask["wallMs"]), |(next, _)| started_ms(ask, next));
    end - started_ms(ask, DEBATE_STAGES[index].0)
}

/// `tool 95, fallback 5`: how many asks took each route.
fn routes(series: &Value) -> String {
    series["routes"]
        .as_object()
        .map(|routes| {
            routes
                .iter()
                .map(|(route, n)| format!("{route} {}", num(n)))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_else(|| "?".into())
}

/// A row of the latency table: page and worker p50 / p95 / max of one series.
fn latency_row(what: &str, series: &Value) -> String {
    let (wall, worker) = (&series["wall"], &series["worker"]);
    format!(
        "| {what} | {:.0} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |\n",
        num(&wall["n"]),
        routes(series),
        num(&wall["p50"]),
        num(&wall["p95"]),
        num(&wall["max"]),
        num(&worker["p50"]),
        num(&worker["p95"]),
        num(&worker["max"]),
    )
}

/// The rows of generated answers: one per ask, then the median of each column.
fn generated_rows(runs: &[Value], columns: &[&dyn Fn(&Value) -> f64]) -> String {
    let mut rows = String::new();
    for ask in runs {
        let cells: Vec<String> = columns.iter().map(|c| ms(c(ask))).collect();
        rows.push_str(&format!(
            "| {} | {} | {} |\n",
            ask["query"].as_str().unwrap_or("?"),
            ask["route"].as_str().unwrap_or("?"),
            cells.join(" | ")
        ));
    }
    let medians: Vec<String> = columns
        .iter()
        .map(|c| {
            let values: Vec<f64> = runs.iter().map(c).filter(|v| v.is_finite()).collect();
            format!("**{}**", ms(median(&values)))
        })
        .collect();
    rows.push_str(&format!("| median | | {} |\n", medians.join(" | ")));
    rows
}

/// The section of `cargo xtask bench ask`.
pub fn document(figures: &Value, machine: &Machine) -> String {
    let (micro, micro_model, lite) = (&figures["micro"], &figures["microModel"], &figures["lite"]);
    let mut latency = String::new();
    for (what, series) in [
        ("micro, tool", &micro["tool"]),
        ("micro, memory", &micro["memory"]),
        ("micro with the model, tool", &micro_model["tool"]),
        ("micro with the model, memory", &micro_model["memory"]),
        ("lite, tool", &lite["tool"]),
        ("lite, memory", &lite["memory"]),
    ] {
        latency.push_str(&latency_row(what, series));
    }

    let full = &figures["full"];
    let debates = full["runs"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let wall = |a: &Value| num(&a["wallMs"]);
    let worker = |a: &Value| num(&a["inferenceTimeMs"]);
    let stage = |index: usize| move |a: &Value| stage_ms(a, index);
    let tokens = |agent: &'static str| move |a: &Value| num(&a["tokens"][agent]);
    let (parallel, critical, synthesis) = (stage(0), stage(1), stage(2));
    let agent_tokens = AGENTS.map(|(agent, _)| tokens(agent));
    let mut debate_columns: Vec<&dyn Fn(&Value) -> f64> =
        vec![&wall, &worker, &parallel, &critical, &synthesis];
    debate_columns.extend(agent_tokens.iter().map(|f| f as &dyn Fn(&Value) -> f64));
    let debate_rows = generated_rows(debates, &debate_columns);
    let debate_median = median(&debates.iter().map(wall).collect::<Vec<_>>());
    let median_of = |f: &dyn Fn(&Value) -> f64| {
        median(
            &debates
                .iter()
                .map(f)
                .filter(|v| v.is_finite())
                .collect::<Vec<_>>(),
        )
    };
    // Where each agent's time went: reading its prompt (to the first token) and generating.
    let mut agent_rows = String::new();
    for (agent, index) in AGENTS {
        let stage_name = DEBATE_STAGES[index].0;
        let first = |a: &Value| num(&a["firstTokenMs"][agent]) - started_ms(a, stage_name);
        let generating = |a: &Value| num(&a["lastTokenMs"][agent]) - num(&a["firstTokenMs"][agent]);
        let rate = |a: &Value| (num(&a["tokens"][agent]) - 1.0) / generating(a) * 1000.0;
        agent_rows.push_str(&format!(
            "| {agent} | `{stage_name}` | {} | {} | {} | {} | {:.1} |\n",
            ms(median_of(&first)),
            ms(median_of(&generating)),
            ms(median_of(&|a: &Value| num(&a["tokens"][agent]))),
            ms(median_of(&|a: &Value| num(&a["chars"][agent]))),
            median_of(&rate),
        ));
    }
    // The answer's own step times, shown beside the page's for comparison.
    let steps = DEBATE_STAGES
        .iter()
        .map(|(name, _)| {
            format!(
                "`{name}` {} ms",
                ms(median_of(&|a: &Value| step_ms(a, name)))
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    // What the later prompts quote (before clipping): the critic the two parallel answers, the
    // synthesizer those and the critique.
    let quoted = |agents: &[(&str, usize)]| {
        let lengths: Vec<f64> = debates
            .iter()
            .map(|a| {
                agents
                    .iter()
                    .map(|(agent, _)| num(&a["chars"][*agent]))
                    .sum()
            })
            .collect();
        ms(median(&lengths))
    };
    let critic_quotes = quoted(&AGENTS[..2]);
    let synthesis_quotes = quoted(&AGENTS[..3]);

    let single_runs = figures["liteSingle"]["runs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let llm_step = |a: &Value| step_ms(a, "llm_reasoning");
    let single_tokens = tokens("single");
    let single_rows = generated_rows(single_runs, &[&wall, &worker, &llm_step, &single_tokens]);

    // The first ask minus the later ask of the same question (same text, see ask.mjs).
    let load = |run: &Value| {
        let later = run["runs"]
            .as_array()
            .and_then(|r| r.first())
            .map_or(f64::NAN, wall);
        (
            num(&run["first"]["wallMs"]) - later,
            run["sameFirstText"].as_bool() == Some(true),
        )
    };
    let (full_load, full_same) = load(full);
    let (lite_load, lite_same) = load(&figures["liteSingle"]);
    let same = |same: bool| {
        if same {
            "the same text both times"
        } else {
            "**not** the same text both times, so this is rough"
        }
    };

    let (micro_tool, model_tool) = (&micro["tool"]["wall"], &micro_model["tool"]["wall"]);
    let mut targets = String::new();
    for (what, bound, value) in [
        (
            "tool answer on micro, p50",
            TOOL_TARGET_MS,
            num(&micro_tool["p50"]),
        ),
        (
            "tool answer on micro, p95",
            TOOL_TARGET_MS,
            num(&micro_tool["p95"]),
        ),
        (
            "tool answer on micro with the model, p50",
            TOOL_TARGET_MS,
            num(&model_tool["p50"]),
        ),
        (
            "tool answer on micro with the model, p95",
            TOOL_TARGET_MS,
            num(&model_tool["p95"]),
        ),
        (
            "full debate with the local LLM, median",
            DEBATE_TARGET_MS,
            debate_median,
        ),
    ] {
        let (shown, limit) = if bound >= 1000.0 {
            (
                format!("{} s", seconds(value)),
                format!("≤ {} s", seconds(bound)),
            )
        } else {
            (format!("{value:.1} ms"), format!("≤ {bound:.0} ms"))
        };
        targets.push_str(&format!(
            "| {what} | {limit} | {shown} | {} |\n",
            verdict(value, bound, true)
        ));
    }

    let example = &micro["memory"]["example"];
    let stages: Vec<String> = DEBATE_STAGES
        .iter()
        .map(|(_, title)| format!("{title}, ms"))
        .collect();
    format!(
        "## Asking (`cargo xtask bench ask`)\n\n\
Written by `cargo xtask bench ask` {machine}, ORION {version} (release build, wasm32 with \
`+simd128`, one thread).\n\n\
`orion.ask` through the npm API, one orchestrator per page (`/fixture/blank.html`, the strict \
policy), each with a database of its own. **page** is `performance.now()` on the page around \
`await orion.ask(query, {{ timeZone: 'UTC', onStatus, onToken }})`; **worker** is the answer's \
`debug.inferenceTimeMs`. Percentiles are nearest-rank.\n\n\
- Tool answers: {tool_asks:.0} asks on micro ({lite_asks:.0} on lite) cycling through \
{questions} questions (arithmetic, unit conversions, dates and times, e.g. \"What is 12 * 7?\", \
\"Convert 5 km to miles\", \"What day of the week is 2027-01-01?\"), after {warm:.0} unmeasured \
asks. Each answer is also stored as a `tool_result` memory, after the answer.\n\
- Memory answers: {memories:.0} synthetic facts stored with one `memory.addMany` (\"{fact}\"), \
then questions about them (\"{question}\") that no tool answers: on micro and lite without a \
language model they are answered from the memories ({micro_asks:.0} on micro, {lite_mem_asks:.0} \
on lite, after {warm:.0} unmeasured). Storing them took {micro_seed} ms on micro, {model_seed} ms \
on micro with the model, {lite_seed} ms on lite.\n\
- micro runs without a model (the hashing embedder), and with `models.embedding` (the same \
8-bit all-MiniLM-L6-v2 as lite); lite runs that model. A tool question that the intent rules \
claim is answered without embedding it; any other question is embedded (tool similarity and \
memory search).\n\n\
| profile, answer | asks | routes | page p50, ms | page p95 | page max | worker p50, ms | worker p95 | worker max |\n\
| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n\
{latency}\n\
Memory answers with at least one memory hit: {micro_hits:.0} of {micro_asks:.0} on micro, \
{model_hits:.0} of {micro_asks:.0} on micro with the model, {lite_hits:.0} of {lite_mem_asks:.0} \
on lite.\n\n\
### The debate on full, with the local LLM\n\n\
`Orion.create({{ profile: 'full', models: {{ embedding: '/models/all-MiniLM-L6-v2/', llm: \
'/models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf' }}, llmOptions: {{ weights: \
'q8_0' }} }})`: SmolLM2-135M-Instruct re-quantized to Q8_0 at load time, with the profile's \
debate settings (at most 64 tokens per agent, 1600 characters of query and quoted answers per \
prompt). The logical and creative agents run as one batch, then the critical agent, then the \
synthesizer. A first ask loads the model; then each question once, the `conversation` memories \
of earlier answers purged before every ask (not timed), so every debate starts from an empty \
memory. Stage times are the page's: from a stage's `onStatus` to the next one's (the last to \
the answer). Tokens are `onToken` pieces per agent.\n\n\
| question | route | page, ms | worker, ms | {stages} | logical tokens | creative tokens | critical tokens | synthesizer tokens |\n\
| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n\
{debate_rows}\n\
The answer's own `reasoningSteps` give, as medians: {steps}.\n\n\
Per agent (medians): the wait from its stage's start to its first token (reading its prompt, \
the two parallel agents as one batch), then generating the rest:\n\n\
| agent | stage | to first token, ms | first → last token, ms | tokens | characters | tokens/s after the first |\n\
| --- | --- | ---: | ---: | ---: | ---: | ---: |\n\
{agent_rows}\n\
Besides the question and its system prompt, the critic's prompt quotes the logical and creative \
answers (median {critic_quotes} characters together) and the synthesizer's those and the \
critique (median {synthesis_quotes} characters), each clipped to its share of the 1600.\n\n\
Loading the model (the first ask of \"{first_question}\" minus its later ask, {full_same}): \
**{full_load} ms**.\n\n\
For comparison, lite with the same model answers these short questions with one generation \
(at most 128 tokens), after its own first ask (model load {lite_load} ms, {lite_same}):\n\n\
| question | route | page, ms | worker, ms | generation step, ms | tokens |\n\
| --- | --- | ---: | ---: | ---: | ---: |\n\
{single_rows}\n\
### Against issue 7's targets\n\n\
| target | bound | measured (page) | |\n\
| --- | ---: | ---: | --- |\n\
{targets}",
        machine = machine.describe(),
        version = env!("CARGO_PKG_VERSION"),
        tool_asks = num(&micro["tool"]["wall"]["n"]),
        lite_asks = num(&lite["tool"]["wall"]["n"]),
        questions = figures["toolQuestions"].as_array().map_or(0, Vec::len),
        warm = num(&figures["warmAsks"]),
        memories = num(&figures["memories"]),
        fact = example["fact"].as_str().unwrap_or("?"),
        question = example["question"].as_str().unwrap_or("?"),
        micro_asks = num(&micro["memory"]["wall"]["n"]),
        lite_mem_asks = num(&lite["memory"]["wall"]["n"]),
        micro_seed = ms(num(&micro["memory"]["seedMs"])),
        lite_seed = ms(num(&lite["memory"]["seedMs"])),
        model_seed = ms(num(&micro_model["memory"]["seedMs"])),
        micro_hits = num(&micro["memory"]["withMemoryHits"]),
        model_hits = num(&micro_model["memory"]["withMemoryHits"]),
        lite_hits = num(&lite["memory"]["withMemoryHits"]),
        stages = stages.join(" | "),
        first_question = full["first"]["query"].as_str().unwrap_or("?"),
        full_load = ms(full_load),
        full_same = same(full_same),
        lite_load = ms(lite_load),
        lite_same = same(lite_same),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ask_document_has_every_series_stage_and_target() {
        let stats = |p50: f64, p95: f64| serde_json::json!({ "p50": p50, "p95": p95, "max": p95 * 2.0, "n": 100 });
        let series = |p50: f64, p95: f64| {
            serde_json::json!({
                "routes": { "tool": 100 }, "withMemoryHits": 40, "seedMs": 1234.0,
                "example": { "fact": "Omar Berg works as a carpenter.", "question": "What job does Omar Berg have?" },
                "wall": stats(p50, p95), "worker": stats(p50 / 2.0, p95 / 2.0),
            })
        };
        let step = |stage: &str, ms: f64| serde_json::json!({ "stage": stage, "durationMs": ms });
        let debate = |query: &str, total: f64| {
            serde_json::json!({
                "query": query, "route": "debate", "wallMs": total, "inferenceTimeMs": total - 100.0,
                "steps": [step("tool_search", 5.0), step("memory_search", 10.0), step("multi_agent_parallel", 9000.0),
                          step("multi_agent_critical", 6000.0), step("multi_agent_synthesis", 7000.0)],
                "tokens": { "logical": 64, "creative": 60, "critical": 50, "synthesizer": 64 },
                "chars": { "logical": 200, "creative": 250, "critical": 150, "synthesizer": 300 },
                "stages": [{ "stage": "multi_agent_parallel", "atMs": 100.0 }, { "stage": "multi_agent_critical", "atMs": 9100.0 },
                           { "stage": "multi_agent_synthesis", "atMs": 15100.0 }],
                "firstTokenMs": { "logical": 1100.0, "creative": 1100.0, "critical": 11100.0, "synthesizer": 17100.0 },
                "lastTokenMs": { "logical": 9000.0, "creative": 9000.0, "critical": 15000.0, "synthesizer": 21000.0 },
            })
        };
        let single = |query: &str| {
            serde_json::json!({
                "query": query, "route": "single", "wallMs": 4000.0, "inferenceTimeMs": 3900.0,
                "steps": [step("llm_reasoning", 3800.0)], "tokens": { "single": 100 },
            })
        };
        let figures = serde_json::json!({
            "toolQuestions": ["a", "b"], "warmAsks": 5, "memories": 1000,
            "micro": { "tool": series(2.0, 60.0), "memory": series(3.0, 4.0) },
            "lite": { "tool": series(20.0, 30.0), "memory": series(25.0, 35.0) },
            "full": {
                "first": { "query": "Why?", "wallMs": 25_000.0 },
                "runs": [debate("Why?", 22_000.0), debate("How?", 18_000.0), debate("What?", 30_000.0)],
                "sameFirstText": true,
            },
            "liteSingle": { "first": { "wallMs": 7000.0 }, "runs": [single("Why?")], "sameFirstText": false },
        });
        let doc = document(&figures, &crate::bench::tests::test_machine());
        for needle in [
            "## Asking (`cargo xtask bench ask`)",
            "| micro, tool | 100 | tool 100 | 2.0 | 60.0 | 120.0 | 1.0 | 30.0 | 60.0 |",
            "| lite, memory | 100 | tool 100 | 25.0 | 35.0 | 70.0 | 12.5 | 17.5 | 35.0 |",
            "| Why? | debate | 22000 | 21900 | 9000 | 6000 | 6900 | 64 | 60 | 50 | 64 |",
            "| median | | **22000** | **21900** | **9000** | **6000** | **6900** | **64** | **60** | **50** | **64** |",
            "| logical | `multi_agent_parallel` | 1000 | 7900 | 64 | 200 | 8.0 |",
            "| synthesizer | `multi_agent_synthesis` | 2000 | 3900 | 64 | 300 | 16.2 |",
            "`multi_agent_parallel` 9000 ms, `multi_agent_critical` 6000 ms, `multi_agent_synthesis` 7000 ms",
            "**3000 ms**",
            "(median 450 characters together) and the synthesizer's those and the critique (median 600 characters)",
            "(model load 3000 ms, **not** the same text",
            "| Why? | single | 4000 | 3900 | 3800 | 100 |",
            "| tool answer on micro, p50 | ≤ 50 ms | 2.0 ms | **met** |",
            "| tool answer on micro, p95 | ≤ 50 ms | 60.0 ms | not met |",
            "| full debate with the local LLM, median | ≤ 20.0 s | 22.0 s | not met |",
            "Storing them took 1234 ms on micro",
            "40 of 100 on micro",
        ] {
            assert!(doc.contains(needle), "missing {needle:?} in\n{doc}");
        }
    }
}
