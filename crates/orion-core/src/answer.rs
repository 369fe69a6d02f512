//! What `ask` resolves with: the answer, how sure ORION is, where it came from, and debug data.

use serde::{Deserialize, Serialize};

use crate::profile::Profile;

/// A formatted answer (`{response, confidence, provenance, debug, reasoningSteps}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AskResponse {
    /// The answer text.
    pub response: String,
    /// 0 to 1: 1 for an exact tool result, the quality score for generated answers.
    pub confidence: f32,
    /// Where the answer came from.
    pub provenance: Provenance,
    /// How it was produced.
    pub debug: DebugInfo,
    /// The steps taken, in order.
    pub reasoning_steps: Vec<ReasoningStep>,
}

/// Where an answer came from.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Provenance {
    /// The agents whose text went into the answer (`logical`, `creative`, `critical`,
    /// `synthesizer`, or `single` for one generation); empty when no model wrote it.
    pub from_agents: Vec<String>,
    /// The memories used, best first.
    pub memory_hits: Vec<MemoryHitRef>,
    /// The tool that answered, if one did.
    pub tool_used: Option<String>,
    /// Components the pipeline routed around because they were unhealthy or unavailable
    /// (`generator`, `embedder`, `store`, a tool's name).
    pub degraded: Vec<String>,
}

/// A memory an answer used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryHitRef {
    /// The memory's id.
    pub id: String,
    /// Its text.
    pub text: String,
    /// Cosine similarity to the query.
    pub similarity: f32,
}

/// How the answer was produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DebugInfo {
    /// From the request's arrival to the answer.
    pub inference_time_ms: f64,
    /// The computed quality of the answer.
    pub quality: Quality,
    /// Identifies this request in events and logs.
    pub trace_id: String,
    /// The profile that answered.
    pub profile: Profile,
    /// Which path answered: `tool`, `debate`, `single`, `memory` or `fallback`.
    pub route: String,
    /// Why a component was skipped, one line each (empty when nothing was).
    pub notes: Vec<String>,
}

/// A computed quality score and the signals it was made of (see `answer_quality`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Quality {
    /// 0 to 1.
    pub score: f32,
    /// `score` is below the flag threshold (0.6).
    pub low: bool,
    /// Each signal that went into the score, by name, 0 to 1.
    pub signals: Vec<QualitySignal>,
}

/// One measured signal of [`Quality`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QualitySignal {
    /// `agreement`, `coverage`, `support`, `length`, `repetition` or `exact`.
    pub name: String,
    /// 0 to 1 (1 is best).
    pub value: f32,
    /// Its weight in the score.
    pub weight: f32,
}

/// One step of answering.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReasoningStep {
    /// The stage (`tool_search`, `memory_search`, `llm_reasoning`, `multi_agent_parallel`,
    /// `multi_agent_critical`, `multi_agent_synthesis`, `format`).
    pub stage: String,
    /// What happened, in a sentence.
    pub detail: String,
    /// How long it took.
    pub duration_ms: f64,
    /// Whether it succeeded.
    pub ok: bool,
}
