//! The debate as a checkpointed workflow on the job engine.
//!
//! When this worker runs the task engines (it is its database's leader), `ask` hands each debate
//! to [`WorkflowDebates`], which starts a workflow of type [`DEBATE_WORKFLOW`] whose input is the
//! [`DebateRequest`] and whose steps are the debate's stages:
//!
//! 1. `parallel_generation`: the logical and creative agents, as one batch;
//! 2. `critical`: the critical agent;
//! 3. `synthesis`: the synthesizer;
//! 4. `remember`: keeps the answer as a `conversation` memory when nobody waits for it.
//!
//! Each stage step rebuilds the debate from the input and the responses the steps before it
//! returned ([`MultiAgentCoordinator::resume`]), runs its generations
//! ([`MultiAgentCoordinator::run_stage`]) and returns its agents' responses, which the engine
//! writes before the next step starts: that write is the checkpoint. A stage with nothing to do
//! (the debate ended early) returns no response.
//!
//! # Live and resumed
//!
//! The asking `ask` registers itself under the workflow's id before starting it: its steps
//! stream their stages and text to the ask's observer, use the ask's generator, and stop when the
//! ask is cancelled. The ask waits for the workflow to finish ([`Tasks::on_finished`]) and builds
//! the outcome from the steps' results, so it answers exactly as an in-process debate would; then
//! it deletes the finished workflow ([`crate::workflows::WorkflowEngine::remove_finished`]), so
//! answered debates leave no rows behind. A resumed debate's row stays, as the record of what
//! happened after the reload.
//!
//! After a reload mid-debate, the asking page is gone; its workflow stays `running` under the
//! dead worker's lease. Once the lease has expired, the new leader takes it over and runs the
//! stages still to do, without streaming, over its own generator (loaded on first need), and the
//! `remember` step keeps the answer as a `conversation` memory, so the next question finds it. A
//! stage that cannot run there (no language model can load) fails the workflow cleanly: its
//! status and error say why, and nothing else changes.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use futures_channel::oneshot;
use serde_json::{json, Map, Value};

use crate::clock::SharedClock;
use crate::coordinator::{
    AgentResponse, AgentRole, DebateObserver, DebateOutcome, DebateRequest, DebateRunner,
    DebateState, MultiAgentCoordinator, REVIEW_CONVERSATION_PREFIX,
};
use crate::embedding::LocalBoxFuture;
use crate::error::{Error, Result};
use crate::generation::{GenerateRequest, Generator, LOCAL_KIND};
use crate::jobs::CancelSignal;
use crate::memory::NewMemory;
use crate::orchestrator::GeneratorSource;
use crate::tasks::Tasks;
use crate::workflows::{
    Step, StepContext, StepError, WorkflowDefinition, WorkflowOptions, WorkflowRecord,
    WorkflowStatus,
};

/// The workflow type of a debate.
pub const DEBATE_WORKFLOW: &str = "orion.debate";

/// The stage steps, in order.
pub const STAGE_STEPS: [&str; 3] = ["parallel_generation", "critical", "synthesis"];

/// The last step: keeps a resumed debate's answer.
pub const REMEMBER_STEP: &str = "remember";

/// A step attempt may run this much longer than the agent timeout (its prompt's reading, the
/// checkpoint's write) before the engine stops it.
const STEP_MARGIN_MS: u64 = 15_000;

/// Keeps a memory (the memory layer, once open).
pub type Keep = Rc<dyn Fn(NewMemory) -> LocalBoxFuture<'static, Result<()>>>;

/// What an asking `ask` gives the steps of its debate.
struct Live {
    generator: Rc<dyn Generator>,
    observer: Rc<dyn DebateObserver>,
    done: Option<oneshot::Sender<WorkflowRecord>>,
}

type LiveDebates = Rc<RefCell<HashMap<String, Live>>>;

/// Runs debates as [`DEBATE_WORKFLOW`] workflows on a worker's task engines (see the module
/// docs).
pub struct WorkflowDebates {
    tasks: Rc<Tasks>,
    clock: SharedClock,
    live: LiveDebates,
    /// Makes workflow ids unique across workers.
    seed: u64,
    started: Cell<u64>,
}

impl WorkflowDebates {
    /// Registers the debate workflow on `tasks`. A debate resumed with nobody waiting gets its
    /// generator from `generator` and keeps its answer with `keep`.
    pub fn register(
        tasks: Rc<Tasks>,
        clock: SharedClock,
        seed: u64,
        generator: GeneratorSource,
        keep: Keep,
    ) -> Result<Rc<Self>> {
        let live: LiveDebates = Rc::default();
        let mut definition = WorkflowDefinition::new();
        for (index, name) in STAGE_STEPS.into_iter().enumerate() {
            let (live, clock, generator) = (Rc::clone(&live), clock.clone(), generator.clone());
            definition = definition.step(Step::new(name, move |context| {
                Box::pin(run_stage(
                    index,
                    context,
                    Rc::clone(&live),
                    clock.clone(),
                    generator.clone(),
                ))
            }));
        }
        let (waiting, remember_clock) = (Rc::clone(&live), clock.clone());
        definition = definition.step(Step::new(REMEMBER_STEP, move |context| {
            Box::pin(remember(
                context,
                Rc::clone(&waiting),
                remember_clock.clone(),
                Rc::clone(&keep),
            ))
        }));
        tasks.engine().register(DEBATE_WORKFLOW, definition)?;
        let finished = Rc::clone(&live);
        tasks.on_finished(
            DEBATE_WORKFLOW,
            Rc::new(move |record: &WorkflowRecord| {
                let done = finished
                    .borrow_mut()
                    .get_mut(&record.id)
                    .and_then(|live| live.done.take());
                if let Some(done) = done {
                    // The ask may have gone (its future dropped): nobody to tell.
                    let _ = done.send(record.clone());
                }
            }),
        );
        Ok(Rc::new(Self {
            tasks,
            clock,
            live,
            seed,
            started: Cell::new(0),
        }))
    }

    /// Whether debates can run here now: only the leader runs workflows.
    pub fn is_running_workflows(&self) -> bool {
        self.tasks.is_leader()
    }
}

impl DebateRunner for WorkflowDebates {
    fn run(
        &self,
        debate: DebateRequest,
        generator: Rc<dyn Generator>,
        observer: Rc<dyn DebateObserver>,
    ) -> LocalBoxFuture<'static, Result<DebateOutcome>> {
        let n = self.started.get() + 1;
        self.started.set(n);
        let id = format!("{DEBATE_WORKFLOW}-{:08x}-{n}", self.seed & 0xffff_ffff);
        let (tasks, clock, live) = (
            Rc::clone(&self.tasks),
            self.clock.clone(),
            Rc::clone(&self.live),
        );
        Box::pin(async move {
            debate.settings.validate()?;
            let input = serde_json::to_value(&debate)
                .map_err(|e| Error::Internal(format!("the debate's input: {e}")))?;
            let step_timeout = debate.settings.agent_timeout_ms + STEP_MARGIN_MS;
            let options = WorkflowOptions {
                workflow_id: Some(id.clone()),
                step_timeout: Some(step_timeout),
                // Every stage at its longest, and the memory's write: a debate never hangs.
                timeout: Some(step_timeout * (STAGE_STEPS.len() as u64 + 1)),
                ..WorkflowOptions::default()
            };
            // Registered before the start, so that the first step finds it whenever it runs.
            let (done, finished) = oneshot::channel();
            live.borrow_mut().insert(
                id.clone(),
                Live {
                    generator,
                    observer: Rc::clone(&observer),
                    done: Some(done),
                },
            );
            // Removed however this future ends (answered, failed, or dropped by a cancel).
            let _registered = Registered {
                live: Rc::clone(&live),
                id: id.clone(),
            };
            tasks
                .engine()
                .start_workflow(DEBATE_WORKFLOW, input, options)
                .await?;
            tasks.wake();
            let record = finished
                .await
                .map_err(|_| Error::Internal(format!("the debate workflow `{id}` ended unseen")))?;
            // The ask has the outcome and keeps the answer itself: the workflow's row goes. A
            // failure to delete it leaves a finished row behind, which is harmless.
            let _ = tasks.engine().remove_finished(&id).await;
            let mut outcome = outcome_of(&record, &debate, clock)?;
            // A stage stopped by the ask's cancel failed its workflow: it was a cancel.
            if observer.cancelled() && outcome.state == DebateState::Failed {
                outcome.error = Some(Error::Cancelled("the debate was cancelled".into()));
            }
            // The final state, as an in-process debate reports it.
            observer.stage(outcome.state);
            Ok(outcome)
        })
    }
}

/// Removes a live debate from the registry when dropped.
struct Registered {
    live: LiveDebates,
    id: String,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut live) = self.live.try_borrow_mut() {
            live.remove(&self.id);
        }
    }
}

/// The debate's outcome from its workflow's record: every response the stages returned, and,
/// if the workflow ended before the debate did, why.
fn outcome_of(
    record: &WorkflowRecord,
    debate: &DebateRequest,
    clock: SharedClock,
) -> Result<DebateOutcome> {
    let responses = responses_before(&record.results(), STAGE_STEPS.len())
        .map_err(|e| Error::Internal(format!("debate workflow `{}`: {e}", record.id)))?;
    let (mut coordinator, _) = replay(debate, clock, None, &responses)?;
    if coordinator.is_debate_active() {
        let why = record.error.as_ref().map_or_else(
            || format!("the debate workflow ended {}", record.status.name()),
            |failure| failure.message.clone(),
        );
        coordinator.fail(if record.status == WorkflowStatus::Cancelled {
            Error::Cancelled(why)
        } else {
            Error::Generation(why)
        });
    }
    Ok(coordinator.outcome())
}

/// `debate` rebuilt from `responses` made earlier, and the generations it runs next (see
/// [`MultiAgentCoordinator::resume`]).
fn replay(
    debate: &DebateRequest,
    clock: SharedClock,
    review: Option<String>,
    responses: &[AgentResponse],
) -> Result<(MultiAgentCoordinator, Vec<(AgentRole, GenerateRequest)>)> {
    let mut coordinator = MultiAgentCoordinator::new(clock, debate.settings.clone());
    let pending = coordinator.resume(&debate.query, &debate.memories, review, responses)?;
    Ok((coordinator, pending))
}

/// The responses that the first `stages` stage steps returned, in order.
fn responses_before(
    results: &Map<String, Value>,
    stages: usize,
) -> std::result::Result<Vec<AgentResponse>, String> {
    let mut responses = Vec::new();
    for name in STAGE_STEPS.iter().take(stages) {
        let Some(value) = results.get(*name) else {
            break;
        };
        let stage: Vec<AgentResponse> = serde_json::from_value(value.clone())
            .map_err(|e| format!("the results of `{name}` are unreadable: {e}"))?;
        responses.extend(stage);
    }
    Ok(responses)
}

fn input_of(context: &StepContext) -> std::result::Result<DebateRequest, StepError> {
    serde_json::from_value(context.input.clone())
        .map_err(|e| StepError::fatal(format!("the debate's input is unreadable: {e}")))
}

/// One stage step: rebuilds the debate, runs the stage and returns its responses.
async fn run_stage(
    index: usize,
    context: StepContext,
    live: LiveDebates,
    clock: SharedClock,
    generators: GeneratorSource,
) -> std::result::Result<Value, StepError> {
    let debate = input_of(&context)?;
    let earlier = responses_before(&context.results, index).map_err(StepError::fatal)?;
    let asking = live
        .borrow()
        .get(&context.workflow_id)
        .map(|live| (Rc::clone(&live.generator), Rc::clone(&live.observer)));
    let (generator, observer) = match asking {
        Some(asking) => asking,
        None => {
            let generator = generators().await.map_err(|error| {
                StepError::fatal(format!(
                    "no language model to resume the debate with: {error}"
                ))
            })?;
            let quiet: Rc<dyn DebateObserver> = Rc::new(Quiet);
            (generator, quiet)
        }
    };
    // One review conversation per debate, whichever worker runs which stage.
    let review = (generator.info().kind == LOCAL_KIND)
        .then(|| format!("{REVIEW_CONVERSATION_PREFIX}{}", context.workflow_id));
    let (mut coordinator, pending) = replay(&debate, clock, review, &earlier)
        .map_err(|error| StepError::fatal(error.to_string()))?;
    let observer = StepObserver {
        inner: observer,
        signal: context.signal().clone(),
    };
    coordinator
        .run_stage(generator.as_ref(), pending, &observer)
        .await
        .map_err(|error| StepError::fatal(error.to_string()))?;
    if let Some(Error::Cancelled(reason)) = coordinator.failure() {
        return Err(StepError::fatal(reason.clone()));
    }
    let made = coordinator
        .get_debate_responses()
        .get(earlier.len()..)
        .unwrap_or_default();
    serde_json::to_value(made).map_err(|e| StepError::fatal(e.to_string()))
}

/// The last step: with nobody waiting for the answer (the debate resumed after a reload), keeps
/// it as a `conversation` memory, as `ask` keeps those it returns.
async fn remember(
    context: StepContext,
    live: LiveDebates,
    clock: SharedClock,
    keep: Keep,
) -> std::result::Result<Value, StepError> {
    if live.borrow().contains_key(&context.workflow_id) {
        return Ok(json!({ "kept": false }));
    }
    let debate = input_of(&context)?;
    let responses =
        responses_before(&context.results, STAGE_STEPS.len()).map_err(StepError::fatal)?;
    let (coordinator, _) = replay(&debate, clock, None, &responses)
        .map_err(|error| StepError::fatal(error.to_string()))?;
    let answer = coordinator.final_answer().map(|answer| answer.text.clone());
    let (Some(answer), true) = (answer, debate.remember) else {
        return Ok(json!({ "kept": false }));
    };
    keep(NewMemory {
        text: format!("Q: {}\nA: {answer}", debate.query.trim()),
        kind: Some("conversation".into()),
        meta: Some(json!({ "debateWorkflow": context.workflow_id, "resumed": true })),
    })
    .await
    .map_err(|error| StepError::retryable(error.to_string()))?;
    Ok(json!({ "kept": true }))
}

/// Reports to the ask's observer, and stops the generation when the ask is cancelled or the
/// engine stops the attempt (a timeout, a takeover, a cancelled workflow).
struct StepObserver {
    inner: Rc<dyn DebateObserver>,
    signal: CancelSignal,
}

impl DebateObserver for StepObserver {
    fn stage(&self, state: DebateState) {
        self.inner.stage(state);
    }

    fn text(&self, role: AgentRole, text: &str) {
        self.inner.text(role, text);
    }

    fn cancelled(&self) -> bool {
        self.inner.cancelled() || self.signal.is_cancelled()
    }
}

/// A resumed debate streams to nobody.
struct Quiet;

impl DebateObserver for Quiet {
    fn stage(&self, _state: DebateState) {}

    fn text(&self, _role: AgentRole, _text: &str) {}

    fn cancelled(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests;
