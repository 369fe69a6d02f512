//! How good an answer is, computed from measurable signals (never asked of a model).
//!
//! [`evaluate`] turns [`QualityInputs`] into a [`Quality`]: a score in [0, 1], the `low` flag and
//! the signals it was made of. Each signal is in [0, 1] (1 is best) and is present only when it
//! can be measured:
//!
//! | signal | weight | measured as | present when |
//! | --- | ---: | --- | --- |
//! | `agreement` | 0.25 | mean pairwise cosine of the agents' answer embeddings, mapped (below) | ≥ 2 agent vectors |
//! | `coverage` | 0.20 | share of the query's key terms found in the answer | the query has key terms |
//! | `support` | 0.20 | best cosine between the answer and a retrieved memory, mapped (below) | an answer vector and ≥ 1 memory vector |
//! | `length` | 0.15 | the length curve (below) on the answer's word count | always |
//! | `repetition` | 0.20 | distinct word trigrams ÷ all word trigrams | the answer has ≥ 3 words |
//! | `exact` | 1 | 1: a tool computed the answer | the answer is a tool's |
//!
//! **Score** = Σ weightᵢ·valueᵢ ÷ Σ weightᵢ over the present signals, so weights renormalise when a
//! signal is absent; the weights reported in [`Quality::signals`] are the renormalised ones (they
//! sum to 1). `low` = score < [`LOW_QUALITY_THRESHOLD`].
//!
//! **Exact answers** (tool results) carry only the `exact` signal, so they score 1: the text of a
//! computed result is short by design and not a generation, so length, repetition and coverage
//! would measure nothing about it.
//!
//! **Cosine mapping** (agreement and support): MiniLM cosines of related sentences fall around
//! 0.5–0.9 and of unrelated ones around 0–0.2, so a cosine `c` maps linearly from
//! [`COSINE_FLOOR`] (0.2 → 0) to [`COSINE_CEILING`] (0.8 → 1), clamped: identical vectors give 1,
//! orthogonal (or opposite) ones give 0.
//!
//! **Key terms** (coverage): the query lowercased, split on anything not alphanumeric, minus a
//! small English stop-word list and minus words under 3 characters (numbers are kept whatever
//! their length, since `12` matters in `what is 12 * 7`), with light suffix stripping (`ies` →
//! `y`, a plural `s` dropped) applied to the query and the answer alike.
//!
//! **Length curve** on the answer's word count `w`: 0 for an empty answer; `w / 5` below 5 words
//! (a one-word answer scores 0.2); 1 from 5 to 250 words; `250 / w` above (0.5 at 500 words).
//!
//! Non-finite numbers (NaN vectors, a zero vector) never reach the score: a NaN signal counts as
//! 0, and every value is clamped to [0, 1].

use std::collections::HashSet;

use crate::answer::{Quality, QualitySignal};
use crate::embedding::cosine;

/// A score below this is flagged `low`.
pub const LOW_QUALITY_THRESHOLD: f32 = 0.6;

/// The cosine that maps to 0 (unrelated MiniLM sentences score about 0–0.2).
pub const COSINE_FLOOR: f32 = 0.2;

/// The cosine that maps to 1 (closely related MiniLM sentences score 0.8 and more).
pub const COSINE_CEILING: f32 = 0.8;

const AGREEMENT_WEIGHT: f32 = 0.25;
const COVERAGE_WEIGHT: f32 = 0.20;
const SUPPORT_WEIGHT: f32 = 0.20;
const LENGTH_WEIGHT: f32 = 0.15;
const REPETITION_WEIGHT: f32 = 0.20;
const EXACT_WEIGHT: f32 = 1.0;

/// Below this many words an answer is too short to be a full answer.
const LENGTH_MIN_WORDS: usize = 5;
/// Above this many words an answer is longer than a chat answer should be.
const LENGTH_MAX_WORDS: usize = 250;
/// Repetition is measured on word n-grams of this size.
const NGRAM: usize = 3;
/// Words shorter than this (in chars) are not key terms, unless they are numbers.
const MIN_TERM_CHARS: usize = 3;

/// Words that carry no topic: a query's key terms are its other words.
const STOP_WORDS: &[&str] = &[
    "a", "about", "after", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be",
    "because", "been", "before", "being", "but", "by", "can", "could", "did", "do", "does",
    "doing", "for", "from", "had", "has", "have", "having", "he", "her", "here", "hers", "him",
    "his", "how", "i", "if", "in", "into", "is", "it", "its", "just", "me", "more", "most", "my",
    "no", "not", "now", "of", "on", "or", "our", "ours", "please", "she", "should", "so", "some",
    "tell", "than", "that", "the", "their", "them", "then", "there", "these", "they", "this",
    "those", "to", "too", "very", "was", "we", "were", "what", "when", "where", "which", "while",
    "who", "whom", "why", "will", "with", "would", "you", "your", "yours",
];

/// What [`evaluate`] measures an answer with.
#[derive(Debug, Clone, Copy, Default)]
pub struct QualityInputs<'a> {
    /// The user's query.
    pub query: &'a str,
    /// The answer as the user will see it.
    pub answer: &'a str,
    /// The answer's embedding, when it was embedded.
    pub answer_vector: Option<&'a [f32]>,
    /// The embeddings of each agent's answer in a debate (empty outside a debate).
    pub agent_vectors: &'a [Vec<f32>],
    /// The embeddings of the memories retrieved for the query.
    pub memory_vectors: &'a [Vec<f32>],
    /// A tool computed the answer.
    pub exact: bool,
}

/// The quality of an answer: its signals and their renormalised weighted mean (see the module
/// docs for the formula).
pub fn evaluate(inputs: &QualityInputs<'_>) -> Quality {
    let mut raw: Vec<(&str, f32, f32)> = Vec::new();
    if inputs.exact {
        raw.push(("exact", 1.0, EXACT_WEIGHT));
    } else {
        if let Some(value) = agreement(inputs.agent_vectors) {
            raw.push(("agreement", value, AGREEMENT_WEIGHT));
        }
        if let Some(value) = coverage(inputs.query, inputs.answer) {
            raw.push(("coverage", value, COVERAGE_WEIGHT));
        }
        if let Some(value) = inputs
            .answer_vector
            .and_then(|answer| support(answer, inputs.memory_vectors))
        {
            raw.push(("support", value, SUPPORT_WEIGHT));
        }
        raw.push(("length", length(inputs.answer), LENGTH_WEIGHT));
        if let Some(value) = repetition(inputs.answer) {
            raw.push(("repetition", value, REPETITION_WEIGHT));
        }
    }
    combine(&raw)
}

/// Renormalises the weights over the present signals and takes the weighted mean.
fn combine(raw: &[(&str, f32, f32)]) -> Quality {
    let total: f32 = raw.iter().map(|(_, _, weight)| weight).sum();
    let signals: Vec<QualitySignal> = raw
        .iter()
        .map(|&(name, value, weight)| QualitySignal {
            name: name.to_owned(),
            value: unit(value),
            weight: if total > 0.0 { weight / total } else { 0.0 },
        })
        .collect();
    let score = unit(signals.iter().map(|s| s.value * s.weight).sum());
    Quality {
        score,
        low: score < LOW_QUALITY_THRESHOLD,
        signals,
    }
}

/// Clamps to [0, 1]; NaN counts as 0 so that a broken input lowers the score instead of
/// poisoning it.
fn unit(x: f32) -> f32 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

/// Maps a cosine to [0, 1] between [`COSINE_FLOOR`] and [`COSINE_CEILING`].
fn map_cosine(c: f32) -> f32 {
    unit((c - COSINE_FLOOR) / (COSINE_CEILING - COSINE_FLOOR))
}

/// Mean pairwise cosine of the agents' answers, mapped; `None` with fewer than two.
fn agreement(vectors: &[Vec<f32>]) -> Option<f32> {
    let mut sum = 0.0;
    let mut pairs = 0u32;
    for (i, a) in vectors.iter().enumerate() {
        for b in &vectors[i + 1..] {
            sum += map_cosine(cosine(a, b));
            pairs += 1;
        }
    }
    (pairs > 0).then(|| sum / pairs as f32)
}

/// Best cosine between the answer and a memory, mapped; `None` without memories.
fn support(answer: &[f32], memories: &[Vec<f32>]) -> Option<f32> {
    memories
        .iter()
        .map(|memory| map_cosine(cosine(answer, memory)))
        .reduce(f32::max)
}

/// Share of the query's key terms that the answer contains; `None` when the query has none.
fn coverage(query: &str, answer: &str) -> Option<f32> {
    let terms = key_terms(query);
    if terms.is_empty() {
        return None;
    }
    let answer_words: HashSet<String> = words(answer).map(|w| stem(&w)).collect();
    let found = terms.iter().filter(|t| answer_words.contains(*t)).count();
    Some(found as f32 / terms.len() as f32)
}

/// The length curve (see the module docs).
fn length(answer: &str) -> f32 {
    let count = words(answer).count();
    if count == 0 {
        0.0
    } else if count < LENGTH_MIN_WORDS {
        count as f32 / LENGTH_MIN_WORDS as f32
    } else if count <= LENGTH_MAX_WORDS {
        1.0
    } else {
        LENGTH_MAX_WORDS as f32 / count as f32
    }
}

/// Distinct word trigrams ÷ all word trigrams; `None` when there is no trigram.
fn repetition(answer: &str) -> Option<f32> {
    let all: Vec<String> = words(answer).collect();
    let grams: Vec<&[String]> = all.windows(NGRAM).collect();
    if grams.is_empty() {
        return None;
    }
    let distinct: HashSet<&[String]> = grams.iter().copied().collect();
    Some(distinct.len() as f32 / grams.len() as f32)
}

/// The text's words, lowercased (anything not alphanumeric separates words).
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// The query's distinct key terms, stemmed.
fn key_terms(query: &str) -> HashSet<String> {
    words(query)
        .filter(|w| !STOP_WORDS.contains(&w.as_str()))
        .filter(|w| w.chars().count() >= MIN_TERM_CHARS || w.chars().all(|c| c.is_numeric()))
        .map(|w| stem(&w))
        .collect()
}

/// Light suffix stripping so that `cats` matches `cat` and `cities` matches `city`; words of 3
/// chars or fewer and `-ss`/`-us`/`-is` endings (`class`, `status`, `analysis`) are left alone.
fn stem(word: &str) -> String {
    if word.chars().count() <= 3 {
        return word.to_owned();
    }
    if let Some(base) = word.strip_suffix("ies") {
        return format!("{base}y");
    }
    if ["ss", "us", "is"].iter().any(|end| word.ends_with(end)) {
        return word.to_owned();
    }
    word.strip_suffix('s').unwrap_or(word).to_owned()
}

#[cfg(test)]
mod tests;
