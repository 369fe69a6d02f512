//! Scores each answer and sums a profile's figures; prints them and every miss.

use serde::Serialize;

use crate::dataset::{Category, Query, Value};
use crate::harness::Outcome;
use crate::matching;

/// The least cosine similarity (MiniLM f32) between a generated answer and its reference for the
/// answer to count as relevant.
pub const RELEVANCE_THRESHOLD: f32 = 0.6;

/// Embeds answers and references for the relevance check.
pub type Judge<'a> = &'a dyn Fn(&[&str]) -> anyhow::Result<Vec<Vec<f32>>>;

/// One query's result.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// The query's id.
    pub id: String,
    /// Its category.
    pub category: Category,
    /// The query.
    pub query: String,
    /// The tool that should have answered.
    pub expected_tool: Option<String>,
    /// The tool that answered.
    pub tool: Option<String>,
    /// The pipeline's route (`tool`, `debate`, `single`, `fallback`, ...), or `error`.
    pub route: String,
    /// The answer text, or the error.
    pub response: String,
    /// The tool choice was right (`null` expected and no tool, or the expected tool).
    pub routed: bool,
    /// For tool queries: the expected tool answered and its answer holds the value.
    pub correct: Option<bool>,
    /// For memory queries: the expected fact is among the memory hits.
    pub recalled: Option<bool>,
    /// The dataset ids of the facts among the memory hits, best first.
    pub facts_hit: Vec<String>,
    /// For general queries answered by the LLM: the cosine with the reference.
    pub relevance: Option<f32>,
    /// Wall time of `ask`, ms.
    pub wall_ms: f64,
}

/// Scores `outcome` for `query`; `judge` embeds for the relevance check.
pub fn score(query: &Query, outcome: Outcome, judge: Option<Judge<'_>>) -> anyhow::Result<Record> {
    let expect = &query.expect;
    let (tool, route, response) = match &outcome.answer {
        Ok(answer) => (
            answer.provenance.tool_used.clone(),
            answer.debug.route.clone(),
            answer.response.clone(),
        ),
        Err(error) => (None, "error".to_owned(), error.clone()),
    };
    let routed = tool == expect.tool;
    let correct = expect.value.as_ref().map(|value| {
        routed
            && matching::matches(
                query.category,
                &query.query,
                &response,
                value,
                expect.tolerance,
            )
    });
    let recalled = expect
        .memory
        .as_ref()
        .map(|fact| outcome.facts_hit.contains(fact));
    let generated = matches!(route.as_str(), "single" | "debate");
    let relevance = match (&expect.reference, judge) {
        (Some(reference), Some(judge)) if generated => {
            let vectors = judge(&[response.as_str(), reference.as_str()])?;
            match vectors.as_slice() {
                [answer, reference] => Some(cosine(answer, reference)),
                _ => anyhow::bail!("the judge returned {} vectors for 2 texts", vectors.len()),
            }
        }
        _ => None,
    };
    Ok(Record {
        id: query.id.clone(),
        category: query.category,
        query: query.query.clone(),
        expected_tool: expect.tool.clone(),
        tool,
        route,
        response,
        routed,
        correct,
        recalled,
        facts_hit: outcome.facts_hit,
        relevance,
        wall_ms: outcome.wall_ms,
    })
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let denominator = norm(a) * norm(b);
    if denominator == 0.0 {
        0.0
    } else {
        dot / denominator
    }
}

/// `hits` of `total`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Ratio {
    /// How many met the criterion.
    pub hits: usize,
    /// How many were measured.
    pub total: usize,
}

impl Ratio {
    fn count(&mut self, hit: bool) {
        self.total += 1;
        self.hits += usize::from(hit);
    }

    /// As a percentage, `n/a` when nothing was measured.
    pub fn percent(&self) -> String {
        if self.total == 0 {
            "n/a".into()
        } else {
            format!("{:.1}%", 100.0 * self.hits as f64 / self.total as f64)
        }
    }
}

/// Wall time of one category's queries.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Latency {
    /// The category.
    pub category: Category,
    /// Its queries.
    pub queries: usize,
    /// Median, ms.
    pub p50_ms: f64,
    /// 95th percentile (nearest rank), ms.
    pub p95_ms: f64,
}

/// One profile's figures.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// `micro`, `lite` or `full`.
    pub profile: String,
    /// The embedder's version.
    pub embedder: String,
    /// Whether the local LLM answered general questions.
    pub llm: bool,
    /// Chosen tool (or none) as expected, over every query.
    pub routing: Ratio,
    /// Tool queries that the expected tool answered with the expected value, over those the
    /// expected tool answered (target 100%).
    pub tool_exact: Ratio,
    /// Tool queries answered by the expected tool with the expected value, over all tool queries.
    pub tool_end_to_end: Ratio,
    /// Memory queries whose fact is among the (at most 5) memory hits.
    pub recall_at_5: Ratio,
    /// General questions answered by the LLM whose answer is relevant.
    pub relevance: Ratio,
    /// Routing per category.
    pub routing_by_category: Vec<(Category, Ratio)>,
    /// Wall time per category.
    pub latency: Vec<Latency>,
    /// Every query's result.
    pub records: Vec<Record>,
}

/// Sums `records`.
pub fn summarize(profile: &str, embedder: &str, llm: bool, records: Vec<Record>) -> Summary {
    let mut summary = Summary {
        profile: profile.to_owned(),
        embedder: embedder.to_owned(),
        llm,
        routing: Ratio::default(),
        tool_exact: Ratio::default(),
        tool_end_to_end: Ratio::default(),
        recall_at_5: Ratio::default(),
        relevance: Ratio::default(),
        routing_by_category: Vec::new(),
        latency: Vec::new(),
        records: Vec::new(),
    };
    for record in &records {
        summary.routing.count(record.routed);
        if let Some(correct) = record.correct {
            summary.tool_end_to_end.count(correct);
            if record.routed {
                summary.tool_exact.count(correct);
            }
        }
        if let Some(recalled) = record.recalled {
            summary.recall_at_5.count(recalled);
        }
        if let Some(relevance) = record.relevance {
            summary.relevance.count(relevance >= RELEVANCE_THRESHOLD);
        }
    }
    for category in Category::ALL {
        let of: Vec<&Record> = records.iter().filter(|r| r.category == category).collect();
        if of.is_empty() {
            continue;
        }
        let mut routing = Ratio::default();
        for record in &of {
            routing.count(record.routed);
        }
        summary.routing_by_category.push((category, routing));
        let mut times: Vec<f64> = of.iter().map(|r| r.wall_ms).collect();
        times.sort_by(f64::total_cmp);
        summary.latency.push(Latency {
            category,
            queries: of.len(),
            p50_ms: percentile(&times, 0.5),
            p95_ms: percentile(&times, 0.95),
        });
    }
    summary.records = records;
    summary
}

/// The nearest-rank percentile of sorted `values`.
fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let rank = (p * values.len() as f64).ceil().max(1.0) as usize;
    values[rank.min(values.len()) - 1]
}

/// Prints the figures and every miss of `summary`.
pub fn print(summary: &Summary, queries: &[Query]) {
    println!(
        "\n== {} ({}{}) ==",
        summary.profile,
        summary.embedder,
        if summary.llm { ", local LLM" } else { "" }
    );
    println!(
        "tool routing        {:>7}  ({}/{})   target >= 98%",
        summary.routing.percent(),
        summary.routing.hits,
        summary.routing.total
    );
    println!(
        "tool answers exact  {:>7}  ({}/{})   target 100% (end to end: {} of {})",
        summary.tool_exact.percent(),
        summary.tool_exact.hits,
        summary.tool_exact.total,
        summary.tool_end_to_end.hits,
        summary.tool_end_to_end.total
    );
    println!(
        "memory recall@5     {:>7}  ({}/{})   target >= 95%",
        summary.recall_at_5.percent(),
        summary.recall_at_5.hits,
        summary.recall_at_5.total
    );
    println!(
        "general relevance   {:>7}  ({}/{})   cosine >= {RELEVANCE_THRESHOLD}",
        summary.relevance.percent(),
        summary.relevance.hits,
        summary.relevance.total
    );
    for ((category, routing), latency) in summary.routing_by_category.iter().zip(&summary.latency) {
        println!(
            "  {:<10} routing {:>6} ({}/{})  p50 {:>8.1} ms  p95 {:>8.1} ms",
            category.name(),
            routing.percent(),
            routing.hits,
            routing.total,
            latency.p50_ms,
            latency.p95_ms
        );
    }
    let expected = |id: &str| queries.iter().find(|q| q.id == id);
    let mut misses = 0;
    for record in &summary.records {
        let Some(query) = expected(&record.id) else {
            continue;
        };
        let mut why = Vec::new();
        if !record.routed {
            why.push(format!(
                "tool {} (expected {})",
                record.tool.as_deref().unwrap_or("none"),
                record.expected_tool.as_deref().unwrap_or("none")
            ));
        } else if record.correct == Some(false) {
            let value = query
                .expect
                .value
                .as_ref()
                .map_or_else(String::new, Value::to_string);
            why.push(format!("value (expected {value})"));
        }
        if record.recalled == Some(false) {
            why.push(format!(
                "recall (expected {}, hits {:?})",
                query.expect.memory.as_deref().unwrap_or_default(),
                record.facts_hit
            ));
        }
        if let Some(relevance) = record.relevance.filter(|r| *r < RELEVANCE_THRESHOLD) {
            why.push(format!(
                "relevance {relevance:.2} (reference: {})",
                query.expect.reference.as_deref().unwrap_or_default()
            ));
        }
        if why.is_empty() {
            continue;
        }
        if misses == 0 {
            println!("misses:");
        }
        misses += 1;
        println!(
            "  {} {:?}: {}\n      got [{}] {:?}",
            record.id,
            record.query,
            why.join("; "),
            record.route,
            one_line(&record.response)
        );
    }
    if misses == 0 {
        println!("no misses");
    }
}

/// `text` on one line, cut at 200 characters.
fn one_line(text: &str) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(200) {
        Some((at, _)) => format!("{}…", &flat[..at]),
        None => flat,
    }
}
