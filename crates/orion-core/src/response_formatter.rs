//! Turns what the pipeline produced into the [`AskResponse`] that `ask` resolves with.
//!
//! Four formatters, one per way a request ends:
//! - [`ResponseFormatter::format_simple_response`]: one answer (a tool's result, a single
//!   generation, or a memory answer);
//! - [`ResponseFormatter::format_multi_agent_response`]: a debate's synthesis (or its best agent
//!   answer when the synthesis is missing);
//! - [`ResponseFormatter::format_error_response`]: a failure, with the error's stable code;
//! - [`ResponseFormatter::format_fallback_response`]: no model could answer, so a template over
//!   the best memories, or an honest "I can't".
//!
//! The orchestrator passes what it gathered along the way in a [`FormatContext`]. Generated text
//! is cleaned ([`ResponseFormatter::clean`]) before it is measured by [`answer_quality`], so the
//! quality describes the text the user sees.

use crate::answer::{AskResponse, DebugInfo, MemoryHitRef, Provenance, Quality, ReasoningStep};
use crate::answer_quality::{self, QualityInputs};
use crate::error::{Error, ErrorCode};
use crate::profile::Profile;

/// The longest response by default, in chars (about 600 words: longer than any chat answer
/// should be, short enough to bound a runaway generation).
pub const DEFAULT_MAX_CHARS: usize = 4_000;

/// How many memories the fallback template quotes at most.
pub const FALLBACK_MEMORIES: usize = 3;

/// The confidence of a fallback answer that has no memory to offer.
pub const NO_MEMORY_CONFIDENCE: f32 = 0.1;

/// Role labels that models leak at the start of their text (`Assistant: …`); compared
/// case-insensitively and stripped repeatedly.
const ROLE_PREFIXES: &[&str] = &[
    "assistant:",
    "answer:",
    "response:",
    "ai:",
    "orion:",
    "synthesizer:",
    "synthesis:",
    "logical:",
    "creative:",
    "critical:",
];

/// How much better an agent's answer must score than the synthesis to replace it: the synthesis
/// wins near-ties, since it was written to weigh the others.
pub const SYNTHESIS_MARGIN: f32 = 0.1;

/// What the orchestrator knows about the request when it formats the answer.
#[derive(Debug, Clone)]
pub struct FormatContext {
    /// Identifies the request in events and logs.
    pub trace_id: String,
    /// The profile that answered.
    pub profile: Profile,
    /// When the request arrived, in the runtime clock's ms.
    pub started_ms: u64,
    /// Now, in the same clock's ms.
    pub now_ms: u64,
    /// The steps taken so far, in order.
    pub steps: Vec<ReasoningStep>,
    /// The memories retrieved for the query, best first.
    pub memory_hits: Vec<MemoryHitRef>,
    /// Components the pipeline routed around.
    pub degraded: Vec<String>,
    /// Why a component was skipped, one line each.
    pub notes: Vec<String>,
}

/// Where a single answer came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerSource {
    /// The named tool computed it.
    Tool(String),
    /// One generation, without debate.
    Single,
    /// A memory answered it directly.
    Memory,
}

/// One answer, for [`ResponseFormatter::format_simple_response`].
#[derive(Debug, Clone, Copy)]
pub struct SimpleAnswer<'a> {
    /// The user's query.
    pub query: &'a str,
    /// The answer's text, as produced.
    pub text: &'a str,
    /// Where it came from.
    pub source: &'a AnswerSource,
    /// The answer's embedding, when it was embedded (for the `support` signal).
    pub answer_vector: Option<&'a [f32]>,
    /// The embeddings of the retrieved memories (for the `support` signal).
    pub memory_vectors: &'a [Vec<f32>],
}

/// One agent's answer in a debate.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentAnswer {
    /// The agent (`logical`, `creative`, `critical`, `synthesizer`).
    pub agent: String,
    /// Its text; an empty text counts as no contribution.
    pub text: String,
    /// The text's embedding, when it was embedded.
    pub vector: Option<Vec<f32>>,
}

/// A debate's outcome, for [`ResponseFormatter::format_multi_agent_response`].
#[derive(Debug, Clone, Copy)]
pub struct DebateAnswers<'a> {
    /// The user's query.
    pub query: &'a str,
    /// The answers of the agents that returned (failed agents are left out, with a note).
    pub agents: &'a [AgentAnswer],
    /// The synthesizer's answer, if it returned.
    pub synthesis: Option<&'a AgentAnswer>,
    /// The embeddings of the retrieved memories (for the `support` signal).
    pub memory_vectors: &'a [Vec<f32>],
}

/// Builds [`AskResponse`]s; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseFormatter {
    /// Responses are cut to this many chars (an ellipsis included).
    pub max_chars: usize,
}

impl Default for ResponseFormatter {
    fn default() -> Self {
        Self {
            max_chars: DEFAULT_MAX_CHARS,
        }
    }
}

impl ResponseFormatter {
    /// A formatter cutting responses at `max_chars` chars.
    pub fn new(max_chars: usize) -> Self {
        Self { max_chars }
    }

    /// Cleans generated text: trims it, drops leaked role prefixes (`Assistant:`), trims trailing
    /// spaces on each line, collapses runs of blank lines into one, and cuts it to
    /// [`Self::max_chars`] chars (at a word boundary when one is near, ending in `…`). Never
    /// splits a UTF-8 char.
    pub fn clean(&self, text: &str) -> String {
        self.clean_cut(text).0
    }

    /// [`Self::clean`], and whether the text had to be cut.
    fn clean_cut(&self, text: &str) -> (String, bool) {
        let mut rest = text.trim();
        while let Some(stripped) = strip_role_prefix(rest) {
            rest = stripped.trim_start();
        }
        let mut out = String::with_capacity(rest.len());
        let mut blank_run = false;
        for line in rest.lines().map(str::trim_end) {
            if line.is_empty() {
                blank_run = true;
                continue;
            }
            if !out.is_empty() {
                out.push_str(if blank_run { "\n\n" } else { "\n" });
            }
            out.push_str(line);
            blank_run = false;
        }
        truncate_chars(&out, self.max_chars)
    }

    /// One answer: a tool's result (confidence 1, `toolUsed` set, quality `exact`), a single
    /// generation (`fromAgents: ["single"]`) or a memory answer; confidence is the quality score
    /// except for tools.
    pub fn format_simple_response(
        &self,
        mut ctx: FormatContext,
        answer: SimpleAnswer<'_>,
    ) -> AskResponse {
        let response = self.clean_noting(answer.text, &mut ctx.notes);
        let exact = matches!(answer.source, AnswerSource::Tool(_));
        let quality = answer_quality::evaluate(&QualityInputs {
            query: answer.query,
            answer: &response,
            answer_vector: answer.answer_vector,
            agent_vectors: &[],
            memory_vectors: answer.memory_vectors,
            exact,
        });
        let (route, from_agents, tool_used) = match answer.source {
            AnswerSource::Tool(name) => ("tool", Vec::new(), Some(name.clone())),
            AnswerSource::Single => ("single", vec!["single".to_owned()], None),
            AnswerSource::Memory => ("memory", Vec::new(), None),
        };
        let confidence = if exact { 1.0 } else { quality.score };
        let provenance = Provenance {
            from_agents,
            memory_hits: std::mem::take(&mut ctx.memory_hits),
            tool_used,
            degraded: std::mem::take(&mut ctx.degraded),
        };
        assemble(ctx, response, confidence, provenance, quality, route)
    }

    /// A debate's answer: the synthesis when it has text, otherwise the agent answer of highest
    /// quality (with a note). The synthesis is also replaced by the best agent answer when that
    /// scores more than [`SYNTHESIS_MARGIN`] higher (with a note). `fromAgents` lists the agents whose text went into the answer
    /// (every contributing agent and `synthesizer`, or the one agent used). Confidence is the
    /// quality score, with `agreement` measured over the agents' embeddings. When no agent
    /// produced text, this is [`Self::format_fallback_response`] with `generator` degraded.
    pub fn format_multi_agent_response(
        &self,
        mut ctx: FormatContext,
        debate: DebateAnswers<'_>,
    ) -> AskResponse {
        // Each agent's cleaned text, and whether it was cut.
        let contributors: Vec<(&AgentAnswer, (String, bool))> = debate
            .agents
            .iter()
            .map(|a| (a, self.clean_cut(&a.text)))
            .filter(|(_, (text, _))| !text.is_empty())
            .collect();
        let agent_vectors: Vec<Vec<f32>> = contributors
            .iter()
            .filter_map(|(a, _)| a.vector.clone())
            .collect();
        let measure = |text: &str, vector: Option<&[f32]>| {
            answer_quality::evaluate(&QualityInputs {
                query: debate.query,
                answer: text,
                answer_vector: vector,
                agent_vectors: &agent_vectors,
                memory_vectors: debate.memory_vectors,
                exact: false,
            })
        };

        let synthesis = debate
            .synthesis
            .map(|s| (s, self.clean_cut(&s.text)))
            .filter(|(_, (text, _))| !text.is_empty())
            .map(|(s, cleaned)| {
                let quality = measure(&cleaned.0, s.vector.as_deref());
                (s, cleaned, quality)
            });
        let best = contributors
            .iter()
            .map(|(a, cleaned)| {
                (
                    *a,
                    cleaned.clone(),
                    measure(&cleaned.0, a.vector.as_deref()),
                )
            })
            .reduce(|best, next| {
                if next.2.score > best.2.score {
                    next
                } else {
                    best
                }
            });
        // The synthesis answers unless it is missing, or an agent's own answer scores clearly
        // better: a small model's synthesizer sometimes drifts off the question.
        let use_agent = match (&synthesis, &best) {
            (None, _) => true,
            (Some((_, _, quality)), Some((_, _, agent))) => {
                agent.score > quality.score + SYNTHESIS_MARGIN
            }
            (Some(_), None) => false,
        };
        let (response, quality, from_agents) = match (synthesis, best) {
            (Some((synthesis, (response, cut), quality)), _) if !use_agent => {
                self.note_cut(cut, &mut ctx.notes);
                let mut from: Vec<String> =
                    contributors.iter().map(|(a, _)| a.agent.clone()).collect();
                from.push(synthesis.agent.clone());
                (response, quality, from)
            }
            (synthesis, Some((agent, (response, cut), quality))) => {
                ctx.notes.push(match synthesis {
                    None => format!(
                        "the synthesis was missing or empty; answered with the {} agent's answer",
                        agent.agent
                    ),
                    Some((_, _, rejected)) => format!(
                        "the synthesis scored {:.2}, below the {} agent's {:.2}; answered with the \
                         agent's answer",
                        rejected.score, agent.agent, quality.score
                    ),
                });
                self.note_cut(cut, &mut ctx.notes);
                (response, quality, vec![agent.agent.clone()])
            }
            (_, None) => {
                ctx.notes
                    .push("no agent of the debate produced an answer".to_owned());
                if !ctx.degraded.iter().any(|d| d == "generator") {
                    ctx.degraded.push("generator".to_owned());
                }
                return self.format_fallback_response(ctx, debate.query);
            }
        };
        let provenance = Provenance {
            from_agents,
            memory_hits: std::mem::take(&mut ctx.memory_hits),
            tool_used: None,
            degraded: std::mem::take(&mut ctx.degraded),
        };
        let confidence = quality.score;
        assemble(ctx, response, confidence, provenance, quality, "debate")
    }

    /// A failure: a message for the user that names the error's stable code, confidence 0,
    /// route `error`; the error's full text goes into the notes.
    pub fn format_error_response(&self, mut ctx: FormatContext, error: &Error) -> AskResponse {
        let code = error.code();
        let (response, _) = truncate_chars(
            &format!("{} (error code {code}).", user_message(code)),
            self.max_chars,
        );
        ctx.notes.push(error.to_string());
        let provenance = Provenance {
            from_agents: Vec::new(),
            memory_hits: std::mem::take(&mut ctx.memory_hits),
            tool_used: None,
            degraded: std::mem::take(&mut ctx.degraded),
        };
        let quality = Quality {
            score: 0.0,
            low: true,
            signals: Vec::new(),
        };
        assemble(ctx, response, 0.0, provenance, quality, "error")
    }

    /// No model could answer (the micro profile, or the generator is unavailable): the best
    /// [`FALLBACK_MEMORIES`] memories as "Here is what I remember: …", or an honest "I can't
    /// answer that without a language model" with what ORION can do instead. Confidence is the
    /// best memory's similarity, or [`NO_MEMORY_CONFIDENCE`] without memories. Route `fallback`.
    pub fn format_fallback_response(&self, mut ctx: FormatContext, query: &str) -> AskResponse {
        let mut hits = std::mem::take(&mut ctx.memory_hits);
        hits.retain(|h| !h.text.trim().is_empty());
        // Best first, whatever order the caller passed; NaN similarities sort last.
        hits.sort_by(|a, b| nan_low(b.similarity).total_cmp(&nan_low(a.similarity)));
        hits.truncate(FALLBACK_MEMORIES);

        let (text, confidence) = match hits.as_slice() {
            [] => (
                "I can't answer that without a language model. I can still do a calculation, \
                 tell the date or time, convert units, or recall something you told me."
                    .to_owned(),
                NO_MEMORY_CONFIDENCE,
            ),
            [only] => (
                format!("Here is what I remember: {}", one_line(&only.text)),
                nan_low(only.similarity).clamp(0.0, 1.0),
            ),
            many => {
                let list: Vec<String> = many
                    .iter()
                    .map(|h| format!("- {}", one_line(&h.text)))
                    .collect();
                (
                    format!("Here is what I remember:\n{}", list.join("\n")),
                    nan_low(many[0].similarity).clamp(0.0, 1.0),
                )
            }
        };
        let response = self.clean_noting(&text, &mut ctx.notes);
        let quality = answer_quality::evaluate(&QualityInputs {
            query,
            answer: &response,
            ..QualityInputs::default()
        });
        let provenance = Provenance {
            from_agents: Vec::new(),
            memory_hits: hits,
            tool_used: None,
            degraded: std::mem::take(&mut ctx.degraded),
        };
        assemble(ctx, response, confidence, provenance, quality, "fallback")
    }

    /// [`Self::clean`], adding a note when the text had to be cut.
    fn clean_noting(&self, text: &str, notes: &mut Vec<String>) -> String {
        let (cleaned, cut) = self.clean_cut(text);
        self.note_cut(cut, notes);
        cleaned
    }

    /// Says in the notes that the answer was cut, so a short answer is not mistaken for the
    /// model's whole output.
    fn note_cut(&self, cut: bool, notes: &mut Vec<String>) {
        if cut {
            notes.push(format!("the answer was cut to {} chars", self.max_chars));
        }
    }
}

/// The response from its parts, with `inferenceTimeMs` from the context's clock readings.
fn assemble(
    ctx: FormatContext,
    response: String,
    confidence: f32,
    provenance: Provenance,
    quality: Quality,
    route: &str,
) -> AskResponse {
    AskResponse {
        response,
        confidence: nan_low(confidence).clamp(0.0, 1.0),
        provenance,
        debug: DebugInfo {
            // A clock that went backwards gives 0, not a huge unsigned difference.
            inference_time_ms: ctx.now_ms.saturating_sub(ctx.started_ms) as f64,
            quality,
            trace_id: ctx.trace_id,
            profile: ctx.profile,
            route: route.to_owned(),
            notes: ctx.notes,
        },
        reasoning_steps: ctx.steps,
    }
}

/// `text` without one leading role prefix, if it has one.
fn strip_role_prefix(text: &str) -> Option<&str> {
    ROLE_PREFIXES.iter().find_map(|prefix| {
        // `get` is `None` when the prefix length is not a char boundary of `text`.
        let head = text.get(..prefix.len())?;
        head.eq_ignore_ascii_case(prefix)
            .then(|| &text[prefix.len()..])
    })
}

/// `text` cut to at most `max` chars: at the last space in the final fifth of the cut when there
/// is one (so words stay whole), then `…`; and whether it was cut.
fn truncate_chars(text: &str, max: usize) -> (String, bool) {
    if text.chars().count() <= max {
        return (text.to_owned(), false);
    }
    if max == 0 {
        return (String::new(), true);
    }
    let keep = max - 1;
    // The byte offset of char `keep` is a char boundary, so slicing there cannot panic.
    let end = text.char_indices().nth(keep).map_or(text.len(), |(i, _)| i);
    let head = &text[..end];
    let word_floor = head.len() - head.len() / 5;
    let head = match head.rfind(char::is_whitespace) {
        Some(space) if space >= word_floor && space > 0 => &head[..space],
        _ => head,
    };
    (format!("{}…", head.trim_end()), true)
}

/// Memory text on one line, for the template.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// NaN as the lowest similarity.
fn nan_low(x: f32) -> f32 {
    if x.is_nan() {
        f32::NEG_INFINITY
    } else {
        x
    }
}

/// What the user is told for each kind of failure (the code follows it).
fn user_message(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::Timeout => "Sorry, answering took too long",
        ErrorCode::Cancelled => "The request was cancelled",
        ErrorCode::CircuitOpen => {
            "Sorry, that part of ORION is paused after repeated failures; try again shortly"
        }
        ErrorCode::InvalidInput | ErrorCode::InvalidMessage | ErrorCode::MessageTooLarge => {
            "Sorry, I could not read that request"
        }
        ErrorCode::ModelLoad => "Sorry, the language model could not be loaded",
        ErrorCode::Generation | ErrorCode::Embedding => "Sorry, the model failed while answering",
        ErrorCode::Quota | ErrorCode::Store => "Sorry, ORION's storage failed while answering",
        _ => "Sorry, something went wrong while answering",
    }
}

#[cfg(test)]
mod tests;
