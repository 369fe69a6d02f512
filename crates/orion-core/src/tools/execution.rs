//! `ToolExecutionManager`: finds the tool for a query and runs it safely.
//!
//! Choice, in order:
//! 1. explicit intent: the first registered tool whose [`Tool::intent`] rule claims the query
//!    (built-in rules are precise, so at most one claims a query in practice);
//! 2. similarity: the query's embedding against each tool's description and examples (the best
//!    of them per tool); the best tool at or above [`ToolPolicy::min_similarity`] is chosen if
//!    it can read its arguments from the query ([`Tool::arguments`]).
//!
//! The arguments are checked against the tool's JSON Schema before any call; a query whose
//! arguments fail the schema is not the tool's (no call, the pipeline goes on). Each call runs
//! under the circuit `tool:<name>` and counts against the health component `tools`; it has
//! [`ToolPolicy::timeout_ms`] per attempt and up to [`ToolPolicy::attempts`] attempts, waiting
//! `backoffMs * 2^(attempt-1)` between (the job queue's exponential [`Backoff`]). Bad arguments
//! (`ERR_INVALID_INPUT`) and failures the tool marked non-retryable are not retried: they would
//! fail again. A timed-out attempt is not retried either: the tool hung once already.

use std::cell::RefCell;
use std::rc::Rc;

use futures_util::future::{select, Either};
use serde::Serialize;
use serde_json::Value;

use super::{Tool, ToolContext, ToolOutput, ToolSpec};
use crate::clock::SharedClock;
use crate::embedding::{cosine, Embedder};
use crate::error::{Error, Result};
use crate::guard::Guard;
use crate::jobs::Backoff;
use crate::tasks::{PayloadCheck, SchemaCompiler, Sleep};

/// The health component every tool call counts against.
pub const TOOLS_COMPONENT: &str = "tools";
/// The circuit of a tool is this prefix and its name.
pub const TOOL_BREAKER_PREFIX: &str = "tool:";
/// The most tools one manager holds.
pub const MAX_TOOLS: usize = 64;

/// How tools are chosen and called.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ToolPolicy {
    /// Ms one attempt may take.
    pub timeout_ms: u64,
    /// Attempts per call (1 = no retry).
    pub attempts: u32,
    /// The wait before the first retry; it doubles for each later one.
    pub backoff_ms: u64,
    /// The least cosine similarity between the query and a tool's description or examples for
    /// the tool to be considered without an intent rule.
    pub min_similarity: f32,
}

impl Default for ToolPolicy {
    fn default() -> Self {
        Self {
            timeout_ms: 5_000,
            attempts: 2,
            backoff_ms: 100,
            min_similarity: 0.6,
        }
    }
}

/// How a tool was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase", tag = "by")]
pub enum Choice {
    /// Its intent rule claimed the query.
    Intent,
    /// Its description or examples were this similar to the query.
    Similarity {
        /// The cosine similarity.
        similarity: f32,
    },
}

/// A tool chosen for a query, with its checked arguments.
#[derive(Clone)]
pub struct Chosen {
    tool: Rc<dyn Tool>,
    /// The arguments, valid for the tool's schema.
    pub arguments: Value,
    /// How it was chosen.
    pub choice: Choice,
}

impl Chosen {
    /// The chosen tool's name.
    pub fn name(&self) -> &str {
        &self.tool.spec().name
    }

    /// Whether the tool's result is kept as a `tool_result` memory ([`Tool::keeps_result`]).
    pub fn keeps_result(&self) -> bool {
        self.tool.keeps_result()
    }
}

impl std::fmt::Debug for Chosen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chosen")
            .field("tool", &self.name())
            .field("arguments", &self.arguments)
            .field("choice", &self.choice)
            .finish()
    }
}

/// A finished tool call.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolRun {
    /// The tool's name.
    pub tool: String,
    /// The arguments it ran with.
    pub arguments: Value,
    /// What it returned.
    pub output: ToolOutput,
    /// Attempts it took.
    pub attempts: u32,
    /// How it was chosen.
    pub choice: Choice,
}

struct Registered {
    tool: Rc<dyn Tool>,
    check: Rc<dyn PayloadCheck>,
}

/// The embeddings of every tool's description and examples, for one embedder version.
struct ToolVectors {
    version: String,
    /// Per tool (in registration order), its texts' vectors.
    vectors: Vec<Vec<Vec<f32>>>,
}

/// Finds and runs tools.
pub struct ToolExecutionManager {
    tools: Vec<Registered>,
    policy: ToolPolicy,
    clock: SharedClock,
    sleep: Sleep,
    vectors: RefCell<Option<ToolVectors>>,
}

impl ToolExecutionManager {
    /// A manager with no tools.
    pub fn new(policy: ToolPolicy, clock: SharedClock, sleep: Sleep) -> Self {
        Self {
            tools: Vec::new(),
            policy,
            clock,
            sleep,
            vectors: RefCell::new(None),
        }
    }

    /// Adds `tool`, compiling its parameter schema with `schemas`. A duplicate name, a schema
    /// that does not compile or more than [`MAX_TOOLS`] tools is `ERR_INVALID_INPUT` (on
    /// `tools[name]`), and nothing is added.
    pub fn register(&mut self, tool: Rc<dyn Tool>, schemas: &dyn SchemaCompiler) -> Result<()> {
        let spec = tool.spec();
        let field = format!("tools[{}]", spec.name);
        if spec.name.trim().is_empty() || spec.name.len() > 64 {
            return Err(Error::invalid_input(
                "tools[].name",
                "must be 1 to 64 bytes",
            ));
        }
        if self.tools.iter().any(|t| t.tool.spec().name == spec.name) {
            return Err(Error::invalid_input(
                format!("{field}.name"),
                "a tool of this name is already registered",
            ));
        }
        if self.tools.len() >= MAX_TOOLS {
            return Err(Error::invalid_input(
                "tools",
                format!("at most {MAX_TOOLS} tools may be registered"),
            ));
        }
        let check = schemas
            .compile(&spec.parameters)
            .map_err(|reason| Error::invalid_input(format!("{field}.parameters"), reason))?;
        self.tools.push(Registered { tool, check });
        self.vectors.replace(None);
        Ok(())
    }

    /// Every tool's spec, in registration order.
    pub fn specs(&self) -> Vec<ToolSpec> {
        self.tools.iter().map(|t| t.tool.spec().clone()).collect()
    }

    /// The tool for `query` (see the module docs), or `None` when no tool should answer it.
    /// `query_vector` is the query embedded by `embedder`.
    pub async fn choose(
        &self,
        query: &str,
        query_vector: &[f32],
        embedder: &dyn Embedder,
    ) -> Result<Option<Chosen>> {
        if let Some(chosen) = self.choose_by_intent(query) {
            return Ok(Some(chosen));
        }
        self.choose_by_similarity(query, query_vector, embedder)
            .await
    }

    /// The first tool whose intent rules claim `query`, with valid arguments. Needs no
    /// embedding, so a caller can try it before embedding the query.
    pub fn choose_by_intent(&self, query: &str) -> Option<Chosen> {
        self.tools.iter().find_map(|registered| {
            let arguments = registered.tool.intent(query)?;
            registered
                .check
                .first_error(&arguments)
                .is_none()
                .then(|| Chosen {
                    tool: Rc::clone(&registered.tool),
                    arguments,
                    choice: Choice::Intent,
                })
        })
    }

    /// The most similar tool to `query_vector` (embedded by `embedder`) above the policy's
    /// floor that can take its arguments from `query`.
    pub async fn choose_by_similarity(
        &self,
        query: &str,
        query_vector: &[f32],
        embedder: &dyn Embedder,
    ) -> Result<Option<Chosen>> {
        let scores = self.similarities(query_vector, embedder).await?;
        let mut ranked: Vec<(usize, f32)> = scores.into_iter().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        for (index, similarity) in ranked {
            if similarity < self.policy.min_similarity {
                break;
            }
            let Some(registered) = self.tools.get(index) else {
                continue;
            };
            if let Some(arguments) = registered.tool.arguments(query) {
                if registered.check.first_error(&arguments).is_none() {
                    return Ok(Some(Chosen {
                        tool: Rc::clone(&registered.tool),
                        arguments,
                        choice: Choice::Similarity { similarity },
                    }));
                }
            }
        }
        Ok(None)
    }

    /// The best similarity of `query_vector` to each tool's texts, in registration order.
    async fn similarities(
        &self,
        query_vector: &[f32],
        embedder: &dyn Embedder,
    ) -> Result<Vec<f32>> {
        let version = &embedder.info().version;
        let stale = self
            .vectors
            .borrow()
            .as_ref()
            .is_none_or(|cached| &cached.version != version);
        if stale {
            let mut vectors = Vec::with_capacity(self.tools.len());
            for registered in &self.tools {
                let spec = registered.tool.spec();
                let texts: Vec<&str> = std::iter::once(spec.description.as_str())
                    .chain(spec.examples.iter().map(String::as_str))
                    .collect();
                vectors.push(embedder.embed(&texts).await?);
            }
            self.vectors.replace(Some(ToolVectors {
                version: version.clone(),
                vectors,
            }));
        }
        let cached = self.vectors.borrow();
        Ok(cached.as_ref().map_or_else(Vec::new, |cached| {
            cached
                .vectors
                .iter()
                .map(|texts| {
                    texts
                        .iter()
                        .map(|vector| cosine(query_vector, vector))
                        .fold(f32::NEG_INFINITY, f32::max)
                })
                .collect()
        }))
    }

    /// Runs `chosen` under its circuit, with the policy's timeout and retries, accounted by
    /// `guard`.
    pub async fn execute(
        &self,
        chosen: &Chosen,
        context: &ToolContext,
        guard: &dyn Guard,
    ) -> Result<ToolRun> {
        let name = chosen.name().to_owned();
        let breaker = format!("{TOOL_BREAKER_PREFIX}{name}");
        let backoff = Backoff::exponential(self.policy.backoff_ms);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let permit = guard.admit(&breaker)?;
            guard.started(TOOLS_COMPONENT);
            let outcome = self.attempt(chosen, context).await;
            guard.finished(TOOLS_COMPONENT, permit, outcome.as_ref().map(|_| ()));
            match outcome {
                Ok(output) => {
                    return Ok(ToolRun {
                        tool: name,
                        arguments: chosen.arguments.clone(),
                        output,
                        attempts,
                        choice: chosen.choice,
                    })
                }
                Err(error) => {
                    let retryable = !matches!(
                        error,
                        Error::InvalidInput { .. }
                            | Error::Timeout { .. }
                            | Error::Cancelled(_)
                            | Error::Tool {
                                retryable: false,
                                ..
                            }
                    );
                    if !retryable || attempts >= self.policy.attempts {
                        return Err(error);
                    }
                    (self.sleep)(backoff.base_delay_ms(attempts)).await;
                }
            }
        }
    }

    /// One attempt, raced against its time limit.
    async fn attempt(&self, chosen: &Chosen, context: &ToolContext) -> Result<ToolOutput> {
        let started = self.clock.now_ms();
        let timeout = self.policy.timeout_ms;
        let run = chosen.tool.run(&chosen.arguments, context);
        match select(run, (self.sleep)(timeout)).await {
            Either::Left((outcome, _)) => outcome,
            Either::Right(((), _)) => Err(Error::Timeout {
                operation: format!("{TOOL_BREAKER_PREFIX}{}", chosen.name()),
                ms: self.clock.now_ms().saturating_sub(started).max(timeout),
            }),
        }
    }
}

#[cfg(test)]
mod tests;
