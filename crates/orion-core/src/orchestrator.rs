//! The request pipeline of `ask`: tools, memory, the debate or one generation, then formatting.
//!
//! One request, in order (ARCHITECTURE.md "One request, end to end"):
//! 1. the circuit `query_processing` admits it (`ERR_CIRCUIT_OPEN` otherwise);
//! 2. `tool_search`: the [`ToolExecutionManager`] looks for a tool by its intent rules, then,
//!    once the profile's embedder has embedded the query (component `embedder`), by similarity;
//!    if embedding fails, tools go by intent rules only and memory search is skipped. A tool runs;
//!    its result is answered with confidence 1 and kept as a `tool_result` memory
//!    (`handleToolSuccess`; after the answer when [`Resources::background`] is given). A failed
//!    tool is noted and the pipeline goes on;
//! 3. `memory_search` (the query embedded now if the intent rules spared it so far): the best
//!    [`OrchestratorSettings::memory_k`] memories above
//!    [`OrchestratorSettings::memory_min_similarity`] (component `store`);
//! 4. with no tool (`handleNoTool`): on micro, or when the generator is unhealthy or cannot
//!    load, a template answer from the memories (`formatFallbackResponse`). Otherwise, on full
//!    (and on lite for queries of at least [`OrchestratorSettings::lite_debate_min_words`]
//!    words) the multi-agent debate (`multi_agent_parallel`, `multi_agent_critical`,
//!    `multi_agent_synthesis`); else one generation (`llm_reasoning`). Text streams as token
//!    events. With [`Resources::debates`] the debate runs as a checkpointed workflow
//!    ([`crate::debate_workflow`]), with the same events and outcome;
//! 5. the answer is formatted with a computed quality ([`crate::answer_quality`]);
//! 6. the exchange joins the conversation's history and, when the request succeeded through a
//!    model, is kept as a `conversation` memory.
//!
//! Whatever was routed around is named in `provenance.degraded` and explained in `debug.notes`.
//! Cancellation is checked between stages and between generated tokens; a cancelled request
//! rejects with `ERR_CANCELLED`.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::answer::{AskResponse, MemoryHitRef, ReasoningStep};
use crate::clock::SharedClock;
use crate::conversation::{Conversations, HistoryPolicy};
use crate::coordinator::{
    AgentResponse, AgentRole, DebateObserver, DebateRequest, DebateRunner, DebateSettings,
    DebateState, MultiAgentCoordinator, ANSWER_REPETITION_PENALTY, MEMORIES_HEADER,
};
use crate::embedding::{Embedder, LocalBoxFuture};
use crate::error::{Error, Result};
use crate::generation::{FinishReason, GenerateRequest, GenerationSink, Generator};
use crate::guard::Guard;
use crate::input::in_range;
use crate::memory::{Memories, NewMemory};
use crate::profile::Profile;
use crate::response_formatter::{
    AgentAnswer, AnswerSource, DebateAnswers, FormatContext, ResponseFormatter, SimpleAnswer,
};
use crate::tools::{ToolContext, ToolExecutionManager};

/// The circuit every `ask` runs under.
pub const QUERY_BREAKER: &str = "query_processing";
/// The health component of the pipeline as a whole.
pub const ORCHESTRATOR_COMPONENT: &str = "orchestrator";
/// The longest query, in bytes.
pub const MAX_QUERY_BYTES: usize = 8 * 1024;

const EMBEDDER: &str = "embedder";
const STORE: &str = "store";
const GENERATOR: &str = "generator";
const EMBED_BREAKER: &str = "embedding";
const MEMORY_BREAKER: &str = "memory_search";
const MEMORY_WRITE_BREAKER: &str = "memory_write";

/// A stage of answering, as status events name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Looking for a tool and running it.
    ToolSearch,
    /// Searching memories.
    MemorySearch,
    /// One generation.
    LlmReasoning,
    /// The logical and creative agents, together.
    MultiAgentParallel,
    /// The critical agent.
    MultiAgentCritical,
    /// The synthesizer.
    MultiAgentSynthesis,
    /// Formatting the answer.
    Format,
}

impl Stage {
    /// The name used in events and reasoning steps.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::ToolSearch => "tool_search",
            Stage::MemorySearch => "memory_search",
            Stage::LlmReasoning => "llm_reasoning",
            Stage::MultiAgentParallel => "multi_agent_parallel",
            Stage::MultiAgentCritical => "multi_agent_critical",
            Stage::MultiAgentSynthesis => "multi_agent_synthesis",
            Stage::Format => "format",
        }
    }
}

/// Watches one `ask`: its stages, its streamed text, and whether the caller cancelled.
pub trait AskObserver {
    /// The request entered `stage`.
    fn stage(&self, stage: Stage, message: &str);
    /// New text from `agent` (`single`, `logical`, `creative`, `critical`, `synthesizer`).
    fn token(&self, agent: &str, text: &str);
    /// Whether the caller cancelled; checked between stages and tokens.
    fn cancelled(&self) -> bool;
}

/// One `ask`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AskRequest {
    /// The question.
    pub query: String,
    /// Turns of one conversation share history.
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// The user's IANA time zone (the page's `Intl` zone), for date and time answers.
    #[serde(default)]
    pub time_zone: Option<String>,
}

impl AskRequest {
    /// Checks the request; the time zone, parsed (UTC when absent).
    pub fn validate(&self) -> Result<Tz> {
        if self.query.trim().is_empty() {
            return Err(Error::invalid_input("query", "must not be empty"));
        }
        if self.query.len() > MAX_QUERY_BYTES {
            return Err(Error::invalid_input(
                "query",
                format!(
                    "is {} bytes; the limit is {MAX_QUERY_BYTES}",
                    self.query.len()
                ),
            ));
        }
        if let Some(id) = &self.conversation_id {
            if id.is_empty() || id.len() > 256 {
                return Err(Error::invalid_input(
                    "conversationId",
                    "must be 1 to 256 bytes",
                ));
            }
        }
        match &self.time_zone {
            None => Ok(Tz::UTC),
            Some(name) => name.parse::<Tz>().map_err(|_| {
                Error::invalid_input("timeZone", format!("`{name}` is not an IANA time zone"))
            }),
        }
    }
}

/// How the pipeline answers.
#[derive(Debug, Clone, PartialEq)]
pub struct OrchestratorSettings {
    /// Memories retrieved per query.
    pub memory_k: u64,
    /// The least similarity of a retrieved memory.
    pub memory_min_similarity: f64,
    /// On lite, queries of at least this many words get the debate.
    pub lite_debate_min_words: usize,
    /// Tokens of one generation (outside the debate).
    pub single_max_tokens: u32,
    /// The debate's settings.
    pub debate: DebateSettings,
    /// How much history a generation sees.
    pub history: HistoryPolicy,
    /// Keep each exchange answered by a model as a `conversation` memory.
    pub remember_exchanges: bool,
}

impl Default for OrchestratorSettings {
    /// Budgets for a 135M model on a CPU: 64 tokens per debate agent and 128 for one
    /// generation keep a debate within seconds; memories at cosine 0.3 or more (MiniLM scores
    /// related sentences from about 0.3).
    fn default() -> Self {
        Self {
            memory_k: 5,
            memory_min_similarity: 0.3,
            lite_debate_min_words: 12,
            single_max_tokens: 128,
            debate: DebateSettings {
                max_tokens: 64,
                ..DebateSettings::default()
            },
            history: HistoryPolicy::default(),
            remember_exchanges: true,
        }
    }
}

/// `init.ask`: the page's changes to [`OrchestratorSettings`] (every field optional).
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AskSettings {
    /// Memories retrieved per query, 1 to 20.
    #[serde(default)]
    pub memory_k: Option<u64>,
    /// The least similarity of a retrieved memory, -1 to 1.
    #[serde(default)]
    pub memory_min_similarity: Option<f64>,
    /// On lite, queries of at least this many words get the debate (1 to 1000).
    #[serde(default)]
    pub lite_debate_min_words: Option<usize>,
    /// Tokens of one generation, 1 to 4096.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// Tokens of each debate agent, 1 to 4096.
    #[serde(default)]
    pub agent_max_tokens: Option<u32>,
    /// Ms each debate stage may take.
    #[serde(default)]
    pub agent_timeout_ms: Option<u64>,
    /// Keep model-written exchanges as `conversation` memories.
    #[serde(default)]
    pub remember_exchanges: Option<bool>,
}

impl AskSettings {
    /// `base` with these changes; a value out of range is `ERR_INVALID_INPUT` on `ask.<field>`.
    pub fn apply(&self, mut base: OrchestratorSettings) -> Result<OrchestratorSettings> {
        let max_new = crate::generation::MAX_NEW_TOKENS;
        if let Some(k) = in_range("ask.memoryK", self.memory_k, 1, 20)? {
            base.memory_k = k;
        }
        if let Some(min) = in_range(
            "ask.memoryMinSimilarity",
            self.memory_min_similarity,
            -1.0,
            1.0,
        )? {
            base.memory_min_similarity = min;
        }
        if let Some(words) = in_range(
            "ask.liteDebateMinWords",
            self.lite_debate_min_words,
            1,
            1000,
        )? {
            base.lite_debate_min_words = words;
        }
        if let Some(tokens) = in_range("ask.maxTokens", self.max_tokens, 1, max_new)? {
            base.single_max_tokens = tokens;
        }
        if let Some(tokens) = in_range("ask.agentMaxTokens", self.agent_max_tokens, 1, max_new)? {
            base.debate.max_tokens = tokens;
        }
        if let Some(ms) = in_range("ask.agentTimeoutMs", self.agent_timeout_ms, 1, 10 * 60_000)? {
            base.debate.agent_timeout_ms = ms;
        }
        if let Some(remember) = self.remember_exchanges {
            base.remember_exchanges = remember;
        }
        Ok(base)
    }
}

/// Gets the generator when the pipeline needs one (loading the local model on first need).
pub type GeneratorSource = Rc<dyn Fn() -> LocalBoxFuture<'static, Result<Rc<dyn Generator>>>>;

/// What one `ask` works with.
#[derive(Clone)]
pub struct Resources {
    /// The profile that answers.
    pub profile: Profile,
    /// The active embedder.
    pub embedder: Rc<dyn Embedder>,
    /// The memory layer; `None` when the store could not open (routed around).
    pub memories: Option<Rc<Memories>>,
    /// The generator; `None` when there is none to load.
    pub generator: Option<GeneratorSource>,
    /// Breakers and health.
    pub guard: Rc<dyn Guard>,
    /// Components routed around before the request arrived, each with why (the embedding model
    /// that failed to load, so the worker runs on micro).
    pub degraded: Vec<(String, String)>,
    /// Runs debates as checkpointed workflows (when this worker runs the job engine); `None`
    /// runs them in the asking future.
    pub debates: Option<Rc<dyn DebateRunner>>,
    /// Runs work that the answer need not wait for (keeping a tool's result as a memory, which
    /// embeds it); `None` does that work before answering.
    pub background: Option<Background>,
}

/// Runs a future to its end without anyone awaiting it (the platform's executor).
pub type Background = Rc<dyn Fn(LocalBoxFuture<'static, ()>)>;

/// Answers `ask`.
pub struct Orchestrator {
    tools: ToolExecutionManager,
    settings: OrchestratorSettings,
    clock: SharedClock,
    formatter: ResponseFormatter,
    conversations: RefCell<Conversations>,
    requests: Cell<u64>,
    /// Makes trace ids unique across workers.
    seed: u64,
}

/// One `ask` on its way through the pipeline.
#[derive(Clone, Copy)]
struct Turn<'a> {
    request: &'a AskRequest,
    query: &'a str,
    resources: &'a Resources,
    observer: &'a dyn AskObserver,
    /// The same observer, for a debate that runs outside this future.
    shared_observer: &'a Rc<dyn AskObserver>,
}

/// The memories found for the query: their texts for the prompts, their vectors for the
/// quality's `support` signal.
struct Grounding {
    texts: Vec<String>,
    vectors: Vec<Vec<f32>>,
}

/// What the pipeline gathered on its way, for the formatter.
struct Trace {
    id: String,
    started_ms: u64,
    steps: Vec<ReasoningStep>,
    degraded: Vec<String>,
    notes: Vec<String>,
    hits: Vec<MemoryHitRef>,
}

impl Orchestrator {
    /// An orchestrator over `tools`.
    pub fn new(
        tools: ToolExecutionManager,
        settings: OrchestratorSettings,
        clock: SharedClock,
        seed: u64,
    ) -> Self {
        Self {
            tools,
            settings,
            clock,
            formatter: ResponseFormatter::default(),
            conversations: RefCell::new(Conversations::default()),
            requests: Cell::new(0),
            seed,
        }
    }

    /// The tool manager (to register host tools).
    pub fn tools_mut(&mut self) -> &mut ToolExecutionManager {
        &mut self.tools
    }

    /// The tool manager.
    pub fn tools(&self) -> &ToolExecutionManager {
        &self.tools
    }

    /// Answers `request` (see the module docs).
    pub async fn ask(
        &self,
        request: &AskRequest,
        resources: &Resources,
        observer: Rc<dyn AskObserver>,
    ) -> Result<AskResponse> {
        let time_zone = request.validate()?;
        let permit = resources.guard.admit(QUERY_BREAKER)?;
        resources.guard.started(ORCHESTRATOR_COMPONENT);
        let outcome = self
            .pipeline(request, time_zone, resources, &observer)
            .await;
        resources
            .guard
            .finished(ORCHESTRATOR_COMPONENT, permit, outcome.as_ref().map(|_| ()));
        outcome
    }

    fn trace_id(&self) -> String {
        let n = self.requests.get() + 1;
        self.requests.set(n);
        format!("{:08x}-{n}", self.seed & 0xffff_ffff)
    }

    async fn pipeline(
        &self,
        request: &AskRequest,
        time_zone: Tz,
        resources: &Resources,
        shared_observer: &Rc<dyn AskObserver>,
    ) -> Result<AskResponse> {
        let observer = shared_observer.as_ref();
        let query = request.query.trim();
        let mut trace = Trace {
            id: self.trace_id(),
            started_ms: self.clock.now_ms(),
            steps: Vec::new(),
            degraded: Vec::new(),
            notes: Vec::new(),
            hits: Vec::new(),
        };
        for (component, why) in &resources.degraded {
            trace.degraded.push(component.clone());
            trace.notes.push(why.clone());
        }
        let guard = resources.guard.as_ref();

        // Tools. Intent rules need no embedding: a query they claim is answered without one.
        observer.stage(Stage::ToolSearch, "looking for a tool");
        let started = self.clock.now_ms();
        let mut query_vector = None;
        let chosen = match self.tools.choose_by_intent(query) {
            Some(chosen) => Some(chosen),
            None => {
                let vector =
                    query_vector.insert(self.query_vector(query, resources, &mut trace).await);
                check_cancelled(observer)?;
                match vector {
                    Some(vector) => self
                        .tools
                        .choose_by_similarity(query, vector, resources.embedder.as_ref())
                        .await
                        .unwrap_or_else(|error| {
                            trace.notes.push(format!("tool choice failed: {error}"));
                            None
                        }),
                    None => None,
                }
            }
        };
        if let Some(chosen) = chosen {
            let context = ToolContext {
                now_ms: self.clock.now_ms(),
                time_zone,
                memories: resources.memories.clone(),
                embedder: Rc::clone(&resources.embedder),
            };
            let outcome = self.tools.execute(&chosen, &context, guard).await;
            check_cancelled(observer)?;
            match outcome {
                Ok(run) => {
                    trace.step(
                        Stage::ToolSearch,
                        format!("`{}` answered", run.tool),
                        started,
                        self.clock.now_ms(),
                        true,
                    );
                    self.handle_tool_success(&chosen, &run.output.text, resources, &mut trace)
                        .await;
                    let response = self.formatter.format_simple_response(
                        self.context(resources, &mut trace),
                        SimpleAnswer {
                            query,
                            text: &run.output.text,
                            source: &AnswerSource::Tool(run.tool.clone()),
                            answer_vector: None,
                            memory_vectors: &[],
                        },
                    );
                    self.remember_turn(request, query, &response.response);
                    return Ok(response);
                }
                Err(error) => {
                    trace.degraded.push(chosen.name().to_owned());
                    trace
                        .notes
                        .push(format!("tool `{}` failed: {error}", chosen.name()));
                    trace.step(
                        Stage::ToolSearch,
                        format!("`{}` failed: {}", chosen.name(), error.code()),
                        started,
                        self.clock.now_ms(),
                        false,
                    );
                }
            }
        } else {
            trace.step(
                Stage::ToolSearch,
                "no tool fits".into(),
                started,
                self.clock.now_ms(),
                true,
            );
        }
        check_cancelled(observer)?;

        // Memories.
        let query_vector = match query_vector {
            Some(vector) => vector,
            None => self.query_vector(query, resources, &mut trace).await,
        };
        check_cancelled(observer)?;
        let memory_vectors = match &query_vector {
            Some(vector) => {
                self.search_memories(query, vector, resources, observer, &mut trace)
                    .await
            }
            None => Vec::new(),
        };
        check_cancelled(observer)?;

        // No tool: micro answers from its templates (`handleNoTool`).
        if resources.profile == Profile::Micro {
            trace
                .notes
                .push("the micro profile answers without a language model".into());
            let response = self
                .formatter
                .format_fallback_response(self.context(resources, &mut trace), query);
            self.remember_turn(request, query, &response.response);
            return Ok(response);
        }
        let generator = match self.generator(resources).await {
            Ok(generator) => generator,
            Err(reason) => {
                trace.degraded.push(GENERATOR.into());
                trace.notes.push(reason);
                let response = self
                    .formatter
                    .format_fallback_response(self.context(resources, &mut trace), query);
                self.remember_turn(request, query, &response.response);
                return Ok(response);
            }
        };
        check_cancelled(observer)?;

        let debate = match resources.profile {
            Profile::Full => true,
            Profile::Lite => {
                query.split_whitespace().count() >= self.settings.lite_debate_min_words
            }
            Profile::Micro => false,
        };
        let grounding = Grounding {
            texts: trace.hits.iter().map(|hit| hit.text.clone()).collect(),
            vectors: memory_vectors,
        };
        let turn = Turn {
            request,
            query,
            resources,
            observer,
            shared_observer,
        };
        let response = if debate {
            self.debate(&turn, &grounding, &generator, &mut trace)
                .await?
        } else {
            self.single(&turn, &grounding, generator.as_ref(), &mut trace)
                .await?
        };
        self.remember_turn(request, query, &response.response);
        if self.settings.remember_exchanges && response.debug.route != "fallback" {
            // A failure is in the `store` health; the answer stands.
            let _ = keep(
                resources,
                NewMemory {
                    text: format!("Q: {query}\nA: {}", response.response),
                    kind: Some("conversation".into()),
                    meta: None,
                },
            )
            .await;
        }
        Ok(response)
    }

    /// The query's vector; `None` when it could not be embedded, which `trace` records (tools
    /// then go by intent rules only, and memory search is skipped).
    async fn query_vector(
        &self,
        query: &str,
        resources: &Resources,
        trace: &mut Trace,
    ) -> Option<Vec<f32>> {
        match self.embed_query(query, resources).await {
            Ok(vector) => Some(vector),
            Err(error) => {
                trace.degraded.push(EMBEDDER.into());
                trace.notes.push(format!(
                    "the query could not be embedded ({error}); tools by rule only, no memory search"
                ));
                None
            }
        }
    }

    async fn embed_query(&self, query: &str, resources: &Resources) -> Result<Vec<f32>> {
        let guard = resources.guard.as_ref();
        let permit = guard.admit(EMBED_BREAKER)?;
        guard.started(EMBEDDER);
        let result = resources
            .embedder
            .embed(&[query])
            .await
            .and_then(|mut vectors| {
                vectors
                    .pop()
                    .ok_or_else(|| Error::Embedding("the embedder returned no vector".into()))
            });
        guard.finished(EMBEDDER, permit, result.as_ref().map(|_| ()));
        result
    }

    /// `handleToolSuccess`: keeps the result as a `tool_result` memory (it expires after the
    /// profile's time to live).
    async fn handle_tool_success(
        &self,
        chosen: &crate::tools::Chosen,
        text: &str,
        resources: &Resources,
        trace: &mut Trace,
    ) {
        if !chosen.keeps_result() {
            return;
        }
        let memory = NewMemory {
            text: text.to_owned(),
            kind: Some("tool_result".into()),
            meta: Some(serde_json::json!({ "tool": chosen.name() })),
        };
        // Embedding the result costs as much as the rest of a tool answer: it is kept after the
        // answer when the platform can run it. A failure then shows in the `store` health.
        match &resources.background {
            Some(background) => {
                let resources = resources.clone();
                background(Box::pin(async move {
                    let _ = keep(&resources, memory).await;
                }));
                trace
                    .notes
                    .push("the tool's result is kept as a memory after the answer".into());
            }
            None => {
                if let Err(error) = keep(resources, memory).await {
                    trace.notes.push(format!("a memory was not kept: {error}"));
                }
            }
        }
    }

    /// The best memories for `query`, recorded in `trace`; their vectors, for the quality's
    /// `support` signal.
    async fn search_memories(
        &self,
        query: &str,
        query_vector: &[f32],
        resources: &Resources,
        observer: &dyn AskObserver,
        trace: &mut Trace,
    ) -> Vec<Vec<f32>> {
        observer.stage(Stage::MemorySearch, "searching memories");
        let started = self.clock.now_ms();
        let Some(memories) = &resources.memories else {
            trace.degraded.push(STORE.into());
            trace
                .notes
                .push("the memory store is not open; no memories were searched".into());
            return Vec::new();
        };
        let guard = resources.guard.as_ref();
        let hits = match guard.admit(MEMORY_BREAKER) {
            Err(error) => Err(error),
            Ok(permit) => {
                guard.started(STORE);
                // The query was embedded for tool choice already.
                let hits = memories
                    .search_embedded(
                        resources.embedder.as_ref(),
                        query,
                        query_vector,
                        self.settings.memory_k,
                        self.settings.memory_min_similarity,
                        None,
                    )
                    .await;
                guard.finished(STORE, permit, hits.as_ref().map(|_| ()));
                hits
            }
        };
        match hits {
            Ok(hits) => {
                trace.step(
                    Stage::MemorySearch,
                    format!("{} memories found", hits.len()),
                    started,
                    self.clock.now_ms(),
                    true,
                );
                trace.hits = hits
                    .into_iter()
                    .map(|hit| MemoryHitRef {
                        id: hit.id,
                        text: hit.text,
                        similarity: hit.similarity,
                    })
                    .collect();
                let texts: Vec<&str> = trace.hits.iter().map(|hit| hit.text.as_str()).collect();
                if texts.is_empty() {
                    return Vec::new();
                }
                resources.embedder.embed(&texts).await.unwrap_or_default()
            }
            Err(error) => {
                trace.degraded.push(STORE.into());
                trace.notes.push(format!("memory search failed: {error}"));
                trace.step(
                    Stage::MemorySearch,
                    format!("failed: {}", error.code()),
                    started,
                    self.clock.now_ms(),
                    false,
                );
                Vec::new()
            }
        }
    }

    /// The generator, or why the pipeline must do without one.
    async fn generator(
        &self,
        resources: &Resources,
    ) -> std::result::Result<Rc<dyn Generator>, String> {
        if resources.guard.unhealthy(GENERATOR) {
            return Err("the generator is unhealthy; answering from memory".into());
        }
        let Some(source) = &resources.generator else {
            return Err("no language model is configured; answering from memory".into());
        };
        source().await.map_err(|error| {
            format!("the language model is unavailable ({error}); answering from memory")
        })
    }

    async fn single(
        &self,
        turn: &Turn<'_>,
        grounding: &Grounding,
        generator: &dyn Generator,
        trace: &mut Trace,
    ) -> Result<AskResponse> {
        let Turn {
            request,
            query,
            resources,
            observer,
            ..
        } = *turn;
        let (memories, memory_vectors) = (&grounding.texts, &grounding.vectors);
        observer.stage(Stage::LlmReasoning, "thinking");
        let started = self.clock.now_ms();
        let history = request
            .conversation_id
            .as_deref()
            .map(|id| {
                self.conversations
                    .borrow()
                    .context(id, self.settings.history)
            })
            .unwrap_or_default();
        let mut system = String::from(
            "You are ORION, a helpful assistant running on the user's device. Answer briefly and precisely.",
        );
        if let Some(summary) = &history.summary {
            system.push('\n');
            system.push_str(summary);
        }
        if !memories.is_empty() {
            system.push('\n');
            system.push_str(MEMORIES_HEADER);
            for memory in memories
                .iter()
                .take(self.settings.debate.max_memories_in_prompt)
            {
                system.push_str("\n- ");
                system.push_str(memory);
            }
        }
        let mut generation = GenerateRequest::new(query);
        generation.system = Some(system);
        generation.history = history.turns;
        generation.conversation_id = request.conversation_id.clone();
        generation.agent = Some("single".into());
        generation.temperature = 0.3;
        generation.max_tokens = self.settings.single_max_tokens;
        generation.seed = self.settings.debate.seed;
        generation.repetition_penalty = ANSWER_REPETITION_PENALTY;
        generation.validate()?;
        let guard = resources.guard.as_ref();
        let permit = guard.admit(crate::runtime::LLM_INFERENCE_BREAKER)?;
        guard.started(GENERATOR);
        let sink = AskSink {
            observer,
            agent: "single",
        };
        let result = generator.generate(&generation, &sink).await;
        guard.finished(GENERATOR, permit, result.as_ref().map(|_| ()));
        let generated = result?;
        if generated.finish == FinishReason::Cancelled {
            return Err(Error::Cancelled("the request was cancelled".into()));
        }
        trace.step(
            Stage::LlmReasoning,
            format!("{} tokens generated", generated.tokens),
            started,
            self.clock.now_ms(),
            true,
        );
        let answer_vector = self
            .embed_answers(&[&generated.text], resources)
            .await
            .pop();
        Ok(self.formatter.format_simple_response(
            self.context(resources, trace),
            SimpleAnswer {
                query,
                text: &generated.text,
                source: &AnswerSource::Single,
                answer_vector: answer_vector.as_deref(),
                memory_vectors,
            },
        ))
    }

    async fn debate(
        &self,
        turn: &Turn<'_>,
        grounding: &Grounding,
        generator: &Rc<dyn Generator>,
        trace: &mut Trace,
    ) -> Result<AskResponse> {
        let Turn {
            query,
            resources,
            shared_observer,
            ..
        } = *turn;
        let (memories, memory_vectors) = (&grounding.texts, &grounding.vectors);
        let guard = resources.guard.as_ref();
        let permit = guard.admit(crate::runtime::LLM_INFERENCE_BREAKER)?;
        guard.started(GENERATOR);
        let watcher = Rc::new(DebateWatch {
            observer: Rc::clone(shared_observer),
            clock: self.clock.clone(),
            stages: RefCell::new(Vec::new()),
        });
        let outcome = match &resources.debates {
            Some(runner) => {
                let debate = DebateRequest {
                    query: query.to_owned(),
                    memories: memories.clone(),
                    settings: self.settings.debate.clone(),
                    remember: self.settings.remember_exchanges,
                };
                let observer: Rc<dyn DebateObserver> = watcher.clone();
                runner.run(debate, Rc::clone(generator), observer).await
            }
            None => {
                // A coordinator per debate: concurrent `ask`s never share a debate's state.
                let mut coordinator =
                    MultiAgentCoordinator::new(self.clock.clone(), self.settings.debate.clone());
                coordinator
                    .run_debate(generator.as_ref(), query, memories, watcher.as_ref())
                    .await
            }
        };
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(error) => {
                guard.finished(GENERATOR, permit, Err(&error));
                return Err(error);
            }
        };
        let failure = outcome.error.clone();
        match &failure {
            Some(error) => guard.finished(GENERATOR, permit, Err(error)),
            None => guard.finished(GENERATOR, permit, Ok(())),
        }
        if let Some(Error::Cancelled(reason)) = failure {
            return Err(Error::Cancelled(reason));
        }
        let stages = watcher.stages.take();
        let now = self.clock.now_ms();
        for (i, (state, at)) in stages.iter().enumerate() {
            if let Some(stage) = debate_stage(*state) {
                // A stage lasts until the next one begins (the last one, until now).
                let end = stages.get(i + 1).map_or(now, |(_, next)| *next);
                trace.step(stage, format!("debate: {}", state.as_str()), *at, end, true);
            }
        }
        for response in &outcome.responses {
            if let Some(error) = &response.error {
                trace
                    .notes
                    .push(format!("{} agent: {error}", response.role));
            }
        }
        let ok: Vec<&AgentResponse> = outcome
            .responses
            .iter()
            .filter(|r| r.ok && r.role != AgentRole::Critical && r.role != AgentRole::Synthesizer)
            .collect();
        let synthesis = outcome
            .responses
            .iter()
            .find(|r| r.ok && r.role == AgentRole::Synthesizer);
        let mut texts: Vec<&str> = ok.iter().map(|r| r.text.as_str()).collect();
        if let Some(synthesis) = synthesis {
            texts.push(&synthesis.text);
        }
        let mut vectors = self.embed_answers(&texts, resources).await.into_iter();
        let agents: Vec<AgentAnswer> = ok
            .iter()
            .map(|r| AgentAnswer {
                agent: r.role.as_str().to_owned(),
                text: r.text.clone(),
                vector: vectors.next(),
            })
            .collect();
        let synthesis = synthesis.map(|r| AgentAnswer {
            agent: r.role.as_str().to_owned(),
            text: r.text.clone(),
            vector: vectors.next(),
        });
        if let Some(error) = failure {
            trace.degraded.push(GENERATOR.into());
            trace.notes.push(format!("the debate failed: {error}"));
        }
        Ok(self.formatter.format_multi_agent_response(
            self.context(resources, trace),
            DebateAnswers {
                query,
                agents: &agents,
                synthesis: synthesis.as_ref(),
                memory_vectors,
            },
        ))
    }

    /// Embeds answers for the quality signals; a failure leaves those signals out.
    async fn embed_answers(&self, texts: &[&str], resources: &Resources) -> Vec<Vec<f32>> {
        if texts.is_empty() {
            return Vec::new();
        }
        resources.embedder.embed(texts).await.unwrap_or_default()
    }

    fn context(&self, resources: &Resources, trace: &mut Trace) -> FormatContext {
        FormatContext {
            trace_id: trace.id.clone(),
            profile: resources.profile,
            started_ms: trace.started_ms,
            now_ms: self.clock.now_ms(),
            steps: std::mem::take(&mut trace.steps),
            memory_hits: std::mem::take(&mut trace.hits),
            degraded: std::mem::take(&mut trace.degraded),
            notes: std::mem::take(&mut trace.notes),
        }
    }

    fn remember_turn(&self, request: &AskRequest, query: &str, answer: &str) {
        if let Some(id) = &request.conversation_id {
            self.conversations.borrow_mut().record(id, query, answer);
        }
    }
}

impl Trace {
    fn step(&mut self, stage: Stage, detail: String, started: u64, now: u64, ok: bool) {
        self.steps.push(ReasoningStep {
            stage: stage.as_str().to_owned(),
            detail,
            duration_ms: now.saturating_sub(started) as f64,
            ok,
        });
    }
}

/// Adds a memory under the `memory_write` circuit, accounted in the `store` health. Without a
/// store there is nothing to keep it in, which is not an error.
async fn keep(resources: &Resources, memory: NewMemory) -> Result<()> {
    let Some(memories) = &resources.memories else {
        return Ok(());
    };
    let guard = resources.guard.as_ref();
    let permit = guard.admit(MEMORY_WRITE_BREAKER)?;
    guard.started(STORE);
    let result = memories.add(resources.embedder.as_ref(), memory).await;
    guard.finished(STORE, permit, result.as_ref().map(|_| ()));
    result.map(|_| ())
}

fn check_cancelled(observer: &dyn AskObserver) -> Result<()> {
    if observer.cancelled() {
        Err(Error::Cancelled("the request was cancelled".into()))
    } else {
        Ok(())
    }
}

fn debate_stage(state: DebateState) -> Option<Stage> {
    match state {
        DebateState::ParallelGeneration => Some(Stage::MultiAgentParallel),
        DebateState::Critical => Some(Stage::MultiAgentCritical),
        DebateState::Synthesis => Some(Stage::MultiAgentSynthesis),
        _ => None,
    }
}

/// Streams one generation's text to the observer.
struct AskSink<'a> {
    observer: &'a dyn AskObserver,
    agent: &'a str,
}

impl GenerationSink for AskSink<'_> {
    fn text(&self, _index: usize, text: &str) {
        self.observer.token(self.agent, text);
    }

    fn cancelled(&self, _index: usize) -> bool {
        self.observer.cancelled()
    }
}

/// Turns the debate's progress into status events, remembering when each stage began.
struct DebateWatch {
    observer: Rc<dyn AskObserver>,
    clock: SharedClock,
    stages: RefCell<Vec<(DebateState, u64)>>,
}

impl DebateObserver for DebateWatch {
    fn stage(&self, state: DebateState) {
        self.stages.borrow_mut().push((state, self.clock.now_ms()));
        if let Some(stage) = debate_stage(state) {
            self.observer.stage(stage, state.as_str());
        }
    }

    fn text(&self, role: AgentRole, text: &str) {
        self.observer.token(role.as_str(), text);
    }

    fn cancelled(&self) -> bool {
        self.observer.cancelled()
    }
}

#[cfg(test)]
mod tests;
