//! The multi-agent debate: four role-prompted generations over one [`Generator`].
//!
//! # Flow
//!
//! ```text
//! Idle ──launch_debate──▶ ParallelGeneration ──both answers──▶ Critical ──▶ Synthesis ──▶ Done
//!                                │ (neither answered)
//!                                └──────────────────────────▶ Failed ◀── cancel (any active state)
//! ```
//!
//! 1. **Parallel generation.** The logical agent (temperature 0.3) and the creative agent (0.9)
//!    answer the query in one [`Generator::generate_many`] call: the local model decodes them in
//!    one batch, a host generator runs them concurrently.
//! 2. **Critique.** The critical agent (0.5) reviews the answers.
//! 3. **Synthesis.** The synthesizer (0.7) writes the final answer from the query, the answers
//!    and the critique.
//!
//! The coordinator is a state machine: [`MultiAgentCoordinator::launch_debate`] returns the two
//! parallel requests and [`MultiAgentCoordinator::handle_agent_response`] records each answer and
//! says what to run next. [`MultiAgentCoordinator::run_debate`] drives it over a generator and
//! reports each stage and every streamed piece of text to a [`DebateObserver`].
//!
//! # Degradation
//!
//! A debate never hangs on one agent and ends with the best answer it has:
//! - one parallel agent failed: the debate continues with the other's answer;
//! - both failed: the debate is [`DebateState::Failed`];
//! - the critic failed or timed out: the synthesizer writes without a critique;
//! - the synthesizer failed: the debate is [`DebateState::Done`] and
//!   [`MultiAgentCoordinator::final_answer`] falls back to the logical, then the creative answer
//!   (the critique is a review, not an answer);
//! - the user cancelled: the debate stops at once and is [`DebateState::Failed`] with
//!   [`Error::Cancelled`].
//!
//! An agent that returns an empty text counts as failed. An agent stopped by its deadline counts
//! as timed out: its response is not `ok`, but the partial text is kept for display and debugging
//! (later stages and the final answer use only complete answers, because a text cut mid-sentence
//! misleads the critic and the synthesizer).
//!
//! # Time limits without timers
//!
//! Each stage has a deadline, [`DebateSettings::agent_timeout_ms`] after it started, read from
//! the [`Clock`]. Generators check [`GenerationSink::cancelled`] between tokens; the driver's sink
//! answers `true` once the deadline has passed or the observer reports a user cancel, so the
//! generation stops by itself and returns what it has with [`FinishReason::Cancelled`].
//!
//! Prompts are short on purpose: the local model is a 135M instruct model on a CPU, where every
//! prompt token costs time, and long instructions confuse it more than they guide it.

use std::fmt;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::clock::{Clock, SharedClock};
use crate::embedding::LocalBoxFuture;
use crate::error::{Error, Result};
use crate::generation::{
    FinishReason, GenerateRequest, Generated, GenerationSink, Generator, Turn, LOCAL_KIND,
    MAX_NEW_TOKENS, MAX_PROMPT_BYTES,
};

/// Debates started in this worker, for their review conversations' ids.
static DEBATES: AtomicU64 = AtomicU64::new(0);

/// The repetition penalty of every answer ORION generates: small instruct models such as
/// SmolLM2-135M fall into loops without one, and 1.1 breaks them without bending the wording.
pub const ANSWER_REPETITION_PENALTY: f32 = 1.1;

/// The system prompt of the logical agent.
pub const LOGICAL_PROMPT: &str =
    "You are a careful, logical assistant. Answer step by step, briefly and precisely.";
/// The system prompt of the creative agent.
pub const CREATIVE_PROMPT: &str =
    "You are a creative assistant. Answer with a fresh idea or a vivid example, in a few sentences.";
/// The system prompt of the critical agent and the synthesizer: one conversation in which the
/// critic reviews and the synthesizer then answers (see [`REVIEW_CONVERSATION_PREFIX`]).
pub const REVIEW_PROMPT: &str = "You check answers to a user's question. First list their mistakes in one or two sentences. When asked for the final answer, reply with only that answer.";
/// The synthesizer's turn after the critique.
pub const SYNTHESIS_INSTRUCTION: &str =
    "Reply with only the final, corrected answer to the question, in two or three sentences.";
/// The conversation id of a debate's review starts with this. The critic and the synthesizer
/// share it, with one system prompt, so the synthesizer's prompt extends the critic's: a local
/// model keeps the critic's conversation in its cache and reads only the new turn, instead of the
/// question and both answers again (the longest prompt of the debate).
pub const REVIEW_CONVERSATION_PREFIX: &str = "orion-debate/";
/// Introduces the memories in a system prompt.
pub const MEMORIES_HEADER: &str = "Things you know about the user:";

/// Longest [`DebateSettings::max_prompt_chars`]: a character is at most 4 bytes, and the labels
/// and memories around the clipped texts must still fit in [`MAX_PROMPT_BYTES`].
pub const MAX_PROMPT_CHARS: usize = MAX_PROMPT_BYTES / 8;
/// Shortest [`DebateSettings::max_prompt_chars`]: below this a clipped answer says nothing.
pub const MIN_PROMPT_CHARS: usize = 64;

/// One agent of the debate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentRole {
    /// Answers step by step (temperature 0.3).
    Logical,
    /// Answers with ideas and examples (temperature 0.9).
    Creative,
    /// Reviews the two answers (temperature 0.5).
    Critical,
    /// Writes the final answer (temperature 0.7).
    Synthesizer,
}

impl AgentRole {
    /// Every role, in the order they run (also their seed offsets).
    pub const ALL: [AgentRole; 4] = [
        AgentRole::Logical,
        AgentRole::Creative,
        AgentRole::Critical,
        AgentRole::Synthesizer,
    ];

    /// The role's name, as requests' `agent` and provenance's `fromAgents` carry it.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentRole::Logical => "logical",
            AgentRole::Creative => "creative",
            AgentRole::Critical => "critical",
            AgentRole::Synthesizer => "synthesizer",
        }
    }

    /// The sampling temperature: low where precision matters, high for variety.
    pub fn temperature(self) -> f32 {
        match self {
            AgentRole::Logical => 0.3,
            AgentRole::Creative => 0.9,
            AgentRole::Critical => 0.5,
            AgentRole::Synthesizer => 0.7,
        }
    }

    /// The role's position in [`AgentRole::ALL`], added to the debate's seed so that agents
    /// sample differently yet reproducibly.
    pub fn index(self) -> usize {
        match self {
            AgentRole::Logical => 0,
            AgentRole::Creative => 1,
            AgentRole::Critical => 2,
            AgentRole::Synthesizer => 3,
        }
    }

    /// The role's system prompt, without memories.
    pub fn system_prompt(self) -> &'static str {
        match self {
            AgentRole::Logical => LOGICAL_PROMPT,
            AgentRole::Creative => CREATIVE_PROMPT,
            AgentRole::Critical | AgentRole::Synthesizer => REVIEW_PROMPT,
        }
    }
}

impl fmt::Display for AgentRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a debate is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DebateState {
    /// No debate has started since the coordinator was made or reset.
    Idle,
    /// The logical and creative agents are answering.
    ParallelGeneration,
    /// The critical agent is reviewing.
    Critical,
    /// The synthesizer is writing the final answer.
    Synthesis,
    /// The debate ended with at least one answer.
    Done,
    /// The debate ended without an answer, or was cancelled; see
    /// [`MultiAgentCoordinator::failure`].
    Failed,
}

impl DebateState {
    /// Whether a debate in this state is still running.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            DebateState::ParallelGeneration | DebateState::Critical | DebateState::Synthesis
        )
    }

    /// The state's name, as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            DebateState::Idle => "idle",
            DebateState::ParallelGeneration => "parallel_generation",
            DebateState::Critical => "critical",
            DebateState::Synthesis => "synthesis",
            DebateState::Done => "done",
            DebateState::Failed => "failed",
        }
    }
}

impl fmt::Display for DebateState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How debates run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DebateSettings {
    /// Most tokens each agent generates.
    pub max_tokens: u32,
    /// How long each stage may take, from its start (the two parallel agents share one limit).
    pub agent_timeout_ms: u64,
    /// Agent `i` (in [`AgentRole::ALL`]) samples with `seed + i`: the same seed and inputs give
    /// the same debate.
    pub seed: u64,
    /// Most memories put into a prompt (the first ones given, which callers pass best first).
    pub max_memories_in_prompt: usize,
    /// Most characters of a prompt's texts: the query and the answers it quotes share this, and
    /// the memories get a quarter of it. Longer texts are clipped with `…`.
    pub max_prompt_chars: usize,
}

impl Default for DebateSettings {
    /// 96 tokens (a few sentences, a few seconds on a CPU), 30 s per stage, seed 42, 3 memories,
    /// 1600 characters (about 400 tokens, so four 96-token texts fit a synthesis prompt).
    fn default() -> Self {
        Self {
            max_tokens: 96,
            agent_timeout_ms: 30_000,
            seed: 42,
            max_memories_in_prompt: 3,
            max_prompt_chars: 1_600,
        }
    }
}

impl DebateSettings {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        if self.max_tokens == 0 || self.max_tokens > MAX_NEW_TOKENS {
            return Err(Error::invalid_input(
                "maxTokens",
                format!("is {}; it must be 1 to {MAX_NEW_TOKENS}", self.max_tokens),
            ));
        }
        if self.agent_timeout_ms == 0 {
            return Err(Error::invalid_input("agentTimeoutMs", "must be at least 1"));
        }
        if !(MIN_PROMPT_CHARS..=MAX_PROMPT_CHARS).contains(&self.max_prompt_chars) {
            return Err(Error::invalid_input(
                "maxPromptChars",
                format!(
                    "is {}; it must be {MIN_PROMPT_CHARS} to {MAX_PROMPT_CHARS}",
                    self.max_prompt_chars
                ),
            ));
        }
        Ok(())
    }
}

/// What one agent produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentResponse {
    /// Who answered.
    pub role: AgentRole,
    /// The answer, trimmed; for a timed-out agent, the partial text (possibly empty).
    pub text: String,
    /// The agent finished with a non-empty text.
    pub ok: bool,
    /// Why it is not `ok`.
    pub error: Option<String>,
    /// Tokens generated.
    pub tokens: u32,
    /// From the start of the agent's stage to its answer (for the two parallel agents, the
    /// batch's time so far).
    pub duration_ms: u64,
}

/// What to do after [`MultiAgentCoordinator::handle_agent_response`].
#[derive(Debug, Clone, PartialEq)]
pub enum NextStep {
    /// Wait for the other parallel agent.
    Wait,
    /// Run this request for this role and hand its result back.
    Run {
        /// The agent to run.
        role: AgentRole,
        /// Its request.
        request: GenerateRequest,
    },
    /// The debate is [`DebateState::Done`]; see [`MultiAgentCoordinator::final_answer`].
    Done,
    /// The debate is [`DebateState::Failed`]; see [`MultiAgentCoordinator::failure`].
    Failed,
}

/// Watches a debate run by [`MultiAgentCoordinator::run_debate`].
pub trait DebateObserver {
    /// The debate entered `state` (the orchestrator turns these into the status events
    /// `multi_agent_parallel`, `multi_agent_critical` and `multi_agent_synthesis`).
    fn stage(&self, state: DebateState);
    /// New text streamed by `role`.
    fn text(&self, role: AgentRole, text: &str);
    /// Whether the user cancelled the request; checked between tokens.
    fn cancelled(&self) -> bool;
}

/// A debate to run: what [`MultiAgentCoordinator::run_debate`] takes, as one value (the input of
/// a debate workflow, see [`crate::debate_workflow`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DebateRequest {
    /// The question.
    pub query: String,
    /// The memories for the prompts, best first.
    pub memories: Vec<String>,
    /// How the debate runs.
    pub settings: DebateSettings,
    /// Whether a debate that ends with nobody waiting for it (resumed after a reload) keeps its
    /// answer as a `conversation` memory, as `ask` keeps the answers it returns.
    pub remember: bool,
}

/// Runs whole debates outside the asking future, e.g. as checkpointed workflows on the job engine
/// ([`crate::debate_workflow::WorkflowDebates`]). The orchestrator hands its debates to one when
/// its resources have one.
pub trait DebateRunner {
    /// Runs `debate` over `generator` to its end, reporting to `observer` as
    /// [`MultiAgentCoordinator::run_debate`] does and ending with the same kind of outcome.
    fn run(
        &self,
        debate: DebateRequest,
        generator: Rc<dyn Generator>,
        observer: Rc<dyn DebateObserver>,
    ) -> LocalBoxFuture<'static, Result<DebateOutcome>>;
}

/// How a debate run by [`MultiAgentCoordinator::run_debate`] ended.
#[derive(Debug, Clone, PartialEq)]
pub struct DebateOutcome {
    /// [`DebateState::Done`] or [`DebateState::Failed`].
    pub state: DebateState,
    /// The best answer (see [`MultiAgentCoordinator::final_answer`]); `None` when failed.
    pub answer: Option<AgentResponse>,
    /// Every agent's response, in the order they arrived.
    pub responses: Vec<AgentResponse>,
    /// Why the debate failed.
    pub error: Option<Error>,
}

/// Runs debates, one at a time. See the [module documentation](self).
pub struct MultiAgentCoordinator {
    clock: SharedClock,
    settings: DebateSettings,
    state: DebateState,
    /// The query, trimmed (clipped only when put into a prompt).
    query: String,
    /// The conversation in which the synthesizer continues the critic's (a local generator,
    /// which caches it; see [`REVIEW_CONVERSATION_PREFIX`]); `None` for self-contained prompts.
    review_conversation: Option<String>,
    /// The memories that go into prompts: non-empty, at most `max_memories_in_prompt`.
    memories: Vec<String>,
    responses: Vec<AgentResponse>,
    /// When the current stage started, for deadlines and durations.
    stage_started_ms: u64,
    failure: Option<Error>,
}

impl MultiAgentCoordinator {
    /// An idle coordinator reading time from `clock`.
    pub fn new(clock: SharedClock, settings: DebateSettings) -> Self {
        Self {
            clock,
            settings,
            state: DebateState::Idle,
            query: String::new(),
            review_conversation: None,
            memories: Vec::new(),
            responses: Vec::new(),
            stage_started_ms: 0,
            failure: None,
        }
    }

    /// The settings the next debate runs with.
    pub fn settings(&self) -> &DebateSettings {
        &self.settings
    }

    /// Changes the settings (for a profile switch); refused while a debate is active, whose
    /// requests already carry the old ones.
    pub fn set_settings(&mut self, settings: DebateSettings) -> Result<()> {
        if self.is_debate_active() {
            return Err(Error::invalid_input(
                "settings",
                "cannot change while a debate is active",
            ));
        }
        self.settings = settings;
        Ok(())
    }

    /// Where the debate is.
    pub fn state(&self) -> DebateState {
        self.state
    }

    /// Whether a debate is running (neither idle nor ended).
    pub fn is_debate_active(&self) -> bool {
        self.state.is_active()
    }

    /// Every response so far, in the order they arrived.
    pub fn get_debate_responses(&self) -> &[AgentResponse] {
        &self.responses
    }

    /// The response of `role`, if it has answered.
    pub fn response(&self, role: AgentRole) -> Option<&AgentResponse> {
        self.responses.iter().find(|r| r.role == role)
    }

    /// Why the debate failed (both parallel agents failed, or it was cancelled).
    pub fn failure(&self) -> Option<&Error> {
        self.failure.as_ref()
    }

    /// When the current stage must end (its start plus the agent timeout), while active.
    pub fn deadline_ms(&self) -> Option<u64> {
        self.is_debate_active().then(|| {
            self.stage_started_ms
                .saturating_add(self.settings.agent_timeout_ms)
        })
    }

    /// The debate's answer once it is [`DebateState::Done`]: the synthesizer's if it succeeded,
    /// else the logical agent's, else the creative agent's. The critique is never the answer.
    pub fn final_answer(&self) -> Option<&AgentResponse> {
        if self.state != DebateState::Done {
            return None;
        }
        [
            AgentRole::Synthesizer,
            AgentRole::Logical,
            AgentRole::Creative,
        ]
        .into_iter()
        .find_map(|role| self.answer(role))
    }

    /// Forgets the debate, whatever its state, and returns to [`DebateState::Idle`]. A caller
    /// that abandons an active debate must also stop its generations (the coordinator does not
    /// own them).
    pub fn reset(&mut self) {
        self.state = DebateState::Idle;
        self.query.clear();
        self.memories.clear();
        self.responses.clear();
        self.stage_started_ms = 0;
        self.failure = None;
        self.review_conversation = None;
    }

    /// Ends an active debate as cancelled by the user: [`DebateState::Failed`] with
    /// [`Error::Cancelled`]. Does nothing when no debate is active (an ended debate keeps its
    /// outcome).
    pub fn cancel(&mut self, reason: impl Into<String>) {
        self.fail(Error::Cancelled(reason.into()));
    }

    /// Ends an active debate as [`DebateState::Failed`] with `error` (what stopped it before it
    /// ended); the responses gathered so far are kept. Does nothing when no debate is active.
    pub fn fail(&mut self, error: Error) {
        if self.is_debate_active() {
            self.state = DebateState::Failed;
            self.failure = Some(error);
        }
    }

    /// Starts a debate on `query` with `memories` (best first) and returns the logical and
    /// creative requests, to run together.
    ///
    /// Errors ([`Error::InvalidInput`], nothing changes): a debate is active, the query is empty,
    /// or the settings are invalid. A debate that ended is replaced.
    pub fn launch_debate(
        &mut self,
        query: &str,
        memories: &[String],
    ) -> Result<Vec<GenerateRequest>> {
        if self.is_debate_active() {
            return Err(Error::invalid_input(
                "query",
                format!("a debate is already active ({})", self.state),
            ));
        }
        let query = query.trim();
        if query.is_empty() {
            return Err(Error::invalid_input("query", "must not be empty"));
        }
        self.settings.validate()?;
        self.reset();
        self.query = query.to_owned();
        self.memories = memories
            .iter()
            .map(|m| m.trim())
            .filter(|m| !m.is_empty())
            .take(self.settings.max_memories_in_prompt)
            .map(str::to_owned)
            .collect();
        self.enter(DebateState::ParallelGeneration);
        let prompt = clip(&self.query, self.settings.max_prompt_chars);
        Ok(vec![
            self.request(AgentRole::Logical, prompt.clone(), true),
            self.request(AgentRole::Creative, prompt, true),
        ])
    }

    /// Records the result of `role`'s generation and advances the debate.
    ///
    /// A result with [`FinishReason::Cancelled`] is taken as the agent's deadline having passed
    /// (a user cancel goes through [`MultiAgentCoordinator::cancel`] instead): a timeout, with
    /// the partial text kept.
    ///
    /// A response that the current state does not expect (an unknown stage, a second answer from
    /// the same agent, any answer when no debate is active) is an [`Error::Internal`] and changes
    /// nothing.
    pub fn handle_agent_response(
        &mut self,
        role: AgentRole,
        result: Result<Generated>,
    ) -> Result<NextStep> {
        let response = self.response_from(role, result);
        self.accept(response)
    }

    /// Records a response made earlier (by [`MultiAgentCoordinator::handle_agent_response`], in
    /// this or another worker) and advances the debate, as that method does.
    pub fn accept(&mut self, response: AgentResponse) -> Result<NextStep> {
        let role = response.role;
        let expected = match self.state {
            DebateState::ParallelGeneration => {
                matches!(role, AgentRole::Logical | AgentRole::Creative)
                    && self.response(role).is_none()
            }
            DebateState::Critical => role == AgentRole::Critical,
            DebateState::Synthesis => role == AgentRole::Synthesizer,
            DebateState::Idle | DebateState::Done | DebateState::Failed => false,
        };
        if !expected {
            return Err(Error::Internal(format!(
                "the debate is {} and does not expect an answer from the {role} agent",
                self.state
            )));
        }
        self.responses.push(response);
        Ok(match self.state {
            DebateState::ParallelGeneration => self.after_parallel(),
            DebateState::Critical => {
                self.enter(DebateState::Synthesis);
                NextStep::Run {
                    role: AgentRole::Synthesizer,
                    request: self.synthesis_request(),
                }
            }
            // Only the synthesizer is expected here (checked above); its answer ends the debate
            // whatever it is, because the final answer falls back to the parallel answers.
            _ => {
                self.state = DebateState::Done;
                NextStep::Done
            }
        })
    }

    /// Runs a whole debate over `generator`: the two parallel agents in one
    /// [`Generator::generate_many`] call, then the critic and the synthesizer, reporting each
    /// state (including the final one) and each piece of streamed text to `observer`.
    ///
    /// Errors are those of [`MultiAgentCoordinator::launch_debate`] (nothing ran); a debate
    /// that ran always ends in an outcome, [`DebateState::Failed`] with [`Error::Cancelled`] when
    /// the observer reported a cancel.
    pub async fn run_debate(
        &mut self,
        generator: &dyn Generator,
        query: &str,
        memories: &[String],
        observer: &dyn DebateObserver,
    ) -> Result<DebateOutcome> {
        let review = (generator.info().kind == LOCAL_KIND).then(|| {
            format!(
                "{REVIEW_CONVERSATION_PREFIX}{}",
                DEBATES.fetch_add(1, Ordering::Relaxed)
            )
        });
        let mut pending = self.resume(query, memories, review, &[])?;
        while !pending.is_empty() {
            pending = self.run_stage(generator, pending, observer).await?;
        }
        Ok(self.finish(observer))
    }

    /// Starts a debate on `query` with `memories` and records `responses` made earlier (by
    /// another run of the same debate, with the same settings), then returns the generations
    /// to run next: both parallel agents', one agent's, or none when the debate ended. The
    /// synthesizer continues the critic's conversation `review_conversation` if given (a
    /// local generator, which caches it).
    ///
    /// Errors: those of [`MultiAgentCoordinator::launch_debate`] and
    /// [`MultiAgentCoordinator::accept`] (a response the debate does not expect).
    pub fn resume(
        &mut self,
        query: &str,
        memories: &[String],
        review_conversation: Option<String>,
        responses: &[AgentResponse],
    ) -> Result<Vec<(AgentRole, GenerateRequest)>> {
        let requests = self.launch_debate(query, memories)?;
        self.review_conversation = review_conversation;
        let mut pending: Vec<(AgentRole, GenerateRequest)> =
            [AgentRole::Logical, AgentRole::Creative]
                .into_iter()
                .zip(requests)
                .collect();
        for response in responses {
            let role = response.role;
            pending = match self.accept(response.clone())? {
                NextStep::Wait => pending.into_iter().filter(|(r, _)| *r != role).collect(),
                NextStep::Run { role, request } => vec![(role, request)],
                NextStep::Done | NextStep::Failed => Vec::new(),
            };
        }
        Ok(pending)
    }

    /// Runs one stage's generations (`pending`, from [`MultiAgentCoordinator::resume`] or an
    /// earlier stage), reporting the stage and its text to `observer`, records their responses
    /// and returns the next stage's generations: none once the debate ended. Two generations
    /// run as one [`Generator::generate_many`] batch. A cancel reported by the observer ends the
    /// debate as [`DebateState::Failed`] with [`Error::Cancelled`].
    pub async fn run_stage(
        &mut self,
        generator: &dyn Generator,
        pending: Vec<(AgentRole, GenerateRequest)>,
        observer: &dyn DebateObserver,
    ) -> Result<Vec<(AgentRole, GenerateRequest)>> {
        if pending.is_empty() || !self.is_debate_active() {
            return Ok(Vec::new());
        }
        observer.stage(self.state);
        let (roles, requests): (Vec<AgentRole>, Vec<GenerateRequest>) = pending.into_iter().unzip();
        let results = if observer.cancelled() {
            Vec::new()
        } else {
            let sink = self.sink(observer, &roles);
            match requests.as_slice() {
                [one] => vec![generator.generate(one, &sink).await],
                many => generator.generate_many(many, &sink).await,
            }
        };
        if observer.cancelled() {
            self.cancel("the debate was cancelled");
            return Ok(Vec::new());
        }
        let mut results = results.into_iter();
        let mut next = NextStep::Wait;
        for role in roles {
            let result = results.next().unwrap_or_else(|| {
                Err(Error::Internal(format!(
                    "the generator returned no result for the {role} agent"
                )))
            });
            next = self.handle_agent_response(role, result)?;
        }
        Ok(match next {
            NextStep::Run { role, request } => vec![(role, request)],
            NextStep::Wait | NextStep::Done | NextStep::Failed => Vec::new(),
        })
    }

    /// How the debate stands: its state, best answer, responses and failure.
    pub fn outcome(&self) -> DebateOutcome {
        DebateOutcome {
            state: self.state,
            answer: self.final_answer().cloned(),
            responses: self.responses.clone(),
            error: self.failure.clone(),
        }
    }

    /// Reports the final state and packs the outcome.
    fn finish(&self, observer: &dyn DebateObserver) -> DebateOutcome {
        observer.stage(self.state);
        self.outcome()
    }

    /// The sink for the current stage's generation of `roles` (by batch index).
    fn sink<'a>(
        &'a self,
        observer: &'a dyn DebateObserver,
        roles: &'a [AgentRole],
    ) -> DeadlineSink<'a> {
        DeadlineSink {
            observer,
            clock: self.clock.as_ref(),
            deadline_ms: self
                .stage_started_ms
                .saturating_add(self.settings.agent_timeout_ms),
            roles,
        }
    }

    /// Once both parallel agents answered: the critic's turn, or failure if neither succeeded.
    fn after_parallel(&mut self) -> NextStep {
        let (Some(logical), Some(creative)) = (
            self.response(AgentRole::Logical),
            self.response(AgentRole::Creative),
        ) else {
            return NextStep::Wait;
        };
        if !logical.ok && !creative.ok {
            let why = |r: &AgentResponse| r.error.clone().unwrap_or_default();
            self.failure = Some(Error::Generation(format!(
                "neither agent answered (logical: {}; creative: {})",
                why(logical),
                why(creative)
            )));
            self.state = DebateState::Failed;
            return NextStep::Failed;
        }
        self.enter(DebateState::Critical);
        NextStep::Run {
            role: AgentRole::Critical,
            request: self.critic_request(),
        }
    }

    /// The question and the parallel answers that succeeded, clipped to share the prompt budget
    /// with `extra` more texts.
    fn answers_prompt(&self, extra: usize) -> (String, usize) {
        let answers = self.parallel_answers();
        let share = self.settings.max_prompt_chars / (1 + answers.len() + extra);
        let mut prompt = format!("Question: {}", clip(&self.query, share));
        push_answers(&mut prompt, &answers, share);
        (prompt, share)
    }

    /// The critic reviews the parallel answers that succeeded, opening the review conversation.
    fn critic_request(&self) -> GenerateRequest {
        let (mut prompt, _) = self.answers_prompt(0);
        prompt.push_str("\n\nWhat is wrong or missing?");
        self.review_request(AgentRole::Critical, prompt)
    }

    /// The synthesizer answers in the critic's conversation when there is a critique and the
    /// generator is local (its prompt then extends the critic's, see
    /// [`REVIEW_CONVERSATION_PREFIX`]); otherwise from one self-contained prompt: the question,
    /// the answers and the critique if any (a page's LLM function may well read `prompt` alone).
    fn synthesis_request(&self) -> GenerateRequest {
        match self.answer(AgentRole::Critical) {
            Some(critique) if self.review_conversation.is_some() => {
                let mut request = self.critic_request();
                request.history = vec![
                    Turn {
                        role: "user".into(),
                        content: request.prompt,
                    },
                    Turn {
                        role: "assistant".into(),
                        content: critique.text.clone(),
                    },
                ];
                request.prompt = SYNTHESIS_INSTRUCTION.to_owned();
                self.with_role(request, AgentRole::Synthesizer)
            }
            critique => {
                let (mut prompt, share) = self.answers_prompt(usize::from(critique.is_some()));
                if let Some(critique) = critique {
                    prompt.push_str("\n\nReview: ");
                    prompt.push_str(&clip(&critique.text, share));
                }
                prompt.push_str("\n\n");
                prompt.push_str(SYNTHESIS_INSTRUCTION);
                self.review_request(AgentRole::Synthesizer, prompt)
            }
        }
    }

    /// A request of the review conversation: the shared system prompt (with memories), the
    /// debate's conversation id.
    fn review_request(&self, role: AgentRole, prompt: String) -> GenerateRequest {
        GenerateRequest {
            conversation_id: self.review_conversation.clone(),
            ..self.request(role, prompt, true)
        }
    }

    /// `request` as `role`'s: its agent name, temperature and seed.
    fn with_role(&self, request: GenerateRequest, role: AgentRole) -> GenerateRequest {
        GenerateRequest {
            agent: Some(role.as_str().to_owned()),
            temperature: role.temperature(),
            seed: self.settings.seed.wrapping_add(role.index() as u64),
            ..request
        }
    }

    /// The successful answers of the logical and creative agents, in that order.
    fn parallel_answers(&self) -> Vec<&str> {
        [AgentRole::Logical, AgentRole::Creative]
            .into_iter()
            .filter_map(|role| self.answer(role))
            .map(|r| r.text.as_str())
            .collect()
    }

    /// `role`'s response if it is a usable answer.
    fn answer(&self, role: AgentRole) -> Option<&AgentResponse> {
        self.response(role).filter(|r| r.ok)
    }

    /// A request for `role` with its temperature, seed and budget; memories go into the system
    /// prompt when `with_memories`.
    fn request(&self, role: AgentRole, prompt: String, with_memories: bool) -> GenerateRequest {
        let mut system = role.system_prompt().to_owned();
        if with_memories && !self.memories.is_empty() {
            let share = self.settings.max_prompt_chars / 4 / self.memories.len();
            system.push_str("\n\n");
            system.push_str(MEMORIES_HEADER);
            for memory in &self.memories {
                system.push_str("\n- ");
                system.push_str(&clip(memory, share));
            }
        }
        self.with_role(
            GenerateRequest {
                system: Some(system),
                max_tokens: self.settings.max_tokens,
                repetition_penalty: ANSWER_REPETITION_PENALTY,
                ..GenerateRequest::new(prompt)
            },
            role,
        )
    }

    /// Turns a generation's result into `role`'s response.
    fn response_from(&self, role: AgentRole, result: Result<Generated>) -> AgentResponse {
        let duration_ms = self.clock.now_ms().saturating_sub(self.stage_started_ms);
        let (text, tokens, error) = match result {
            Ok(generated) => {
                let text = generated.text.trim().to_owned();
                let error = if generated.finish == FinishReason::Cancelled {
                    Some(
                        Error::Timeout {
                            operation: format!("{role}_agent"),
                            ms: self.settings.agent_timeout_ms,
                        }
                        .to_string(),
                    )
                } else if text.is_empty() {
                    Some(format!("the {role} agent returned an empty answer"))
                } else {
                    None
                };
                (text, generated.tokens, error)
            }
            Err(error) => (String::new(), 0, Some(error.to_string())),
        };
        AgentResponse {
            role,
            text,
            ok: error.is_none(),
            error,
            tokens,
            duration_ms,
        }
    }

    /// Moves to `state`, which starts a stage (and its deadline) now.
    fn enter(&mut self, state: DebateState) {
        self.state = state;
        self.stage_started_ms = self.clock.now_ms();
    }
}

/// Appends the answers to a critic or synthesis prompt, numbered when there are two.
fn push_answers(prompt: &mut String, answers: &[&str], share: usize) {
    for (i, answer) in answers.iter().enumerate() {
        let label = if answers.len() == 1 {
            "Answer".to_owned()
        } else {
            format!("Answer {}", i + 1)
        };
        prompt.push_str(&format!("\n\n{label}: {}", clip(answer, share)));
    }
}

/// `text` trimmed and cut to at most `max_chars` characters, ending with `…` when cut.
fn clip(text: &str, max_chars: usize) -> String {
    let text = text.trim();
    if text.chars().nth(max_chars).is_none() {
        return text.to_owned();
    }
    let kept: String = text.chars().take(max_chars.saturating_sub(1)).collect();
    format!("{}…", kept.trim_end())
}

/// Forwards streamed text to the observer with its role, and stops generation once the stage's
/// deadline has passed or the user cancelled.
struct DeadlineSink<'a> {
    observer: &'a dyn DebateObserver,
    clock: &'a dyn Clock,
    deadline_ms: u64,
    /// The role of each batch index.
    roles: &'a [AgentRole],
}

impl GenerationSink for DeadlineSink<'_> {
    fn text(&self, index: usize, text: &str) {
        if let Some(role) = self.roles.get(index) {
            self.observer.text(*role, text);
        }
    }

    fn cancelled(&self, _index: usize) -> bool {
        self.observer.cancelled() || self.clock.now_ms() >= self.deadline_ms
    }
}

#[cfg(test)]
mod tests;
