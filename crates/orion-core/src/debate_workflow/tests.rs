//! Debates on the workflow engine, natively: a manual clock, `MemStore`, one executor per
//! "tab", and a scripted generator that can hang mid-debate as a page closed mid-answer would.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use futures_executor::LocalPool;
use futures_util::task::LocalSpawnExt;

use super::*;
use crate::clock::ManualClock;
use crate::coordinator::{AgentRole, DebateSettings};
use crate::generation::{FinishReason, GenerateRequest, Generated, GenerationSink};
use crate::jobs::CancelReason;
use crate::store::{MemStore, Store};
use crate::tasks::{TaskHooks, TaskSettings};
use crate::testing::{AnswersInOrder, ManualTimers};
use crate::workflows::WorkflowFilter;

/// Answers every agent with a sentence naming it, one word at a time; hangs (never answers) for
/// the agent `hang`, like a worker whose page closed mid-generation.
#[derive(Default)]
struct Agents {
    hang: Option<&'static str>,
    asked: RefCell<Vec<String>>,
}

impl AnswersInOrder for Agents {
    fn answer<'a>(
        &'a self,
        request: &'a GenerateRequest,
        index: usize,
        sink: &'a dyn GenerationSink,
    ) -> LocalBoxFuture<'a, Result<Generated>> {
        let agent = request.agent.clone().unwrap_or_default();
        self.asked.borrow_mut().push(agent.clone());
        if self.hang == Some(agent.as_str()) {
            return Box::pin(std::future::pending());
        }
        Box::pin(async move {
            let text = format!("The {agent} agent says Paris.");
            for word in text.split_inclusive(' ') {
                sink.text(index, word);
            }
            Ok(Generated {
                text,
                finish: FinishReason::EndOfTurn,
                prompt_tokens: 10,
                cached_tokens: 0,
                tokens: 5,
                prefill_ms: 1.0,
                decode_ms: 1.0,
            })
        })
    }
}

/// Records the stages and the text; cancels once a given stage starts.
#[derive(Default)]
struct Watch {
    stages: RefCell<Vec<DebateState>>,
    text: RefCell<Vec<(AgentRole, String)>>,
    cancel_at: Cell<Option<DebateState>>,
}

impl DebateObserver for Watch {
    fn stage(&self, state: DebateState) {
        self.stages.borrow_mut().push(state);
    }

    fn text(&self, role: AgentRole, text: &str) {
        self.text.borrow_mut().push((role, text.to_owned()));
    }

    fn cancelled(&self) -> bool {
        let at = self.cancel_at.get();
        at.is_some_and(|at| self.stages.borrow().contains(&at))
    }
}

/// One tab's worker: task engines on the shared store, the debate workflow registered with a
/// generator for resumed debates, and what it kept.
struct Tab {
    debates: Rc<WorkflowDebates>,
    tasks: Rc<Tasks>,
    pool: RefCell<LocalPool>,
    timers: Rc<ManualTimers>,
    kept: Rc<RefCell<Vec<NewMemory>>>,
}

impl Tab {
    fn open(
        store: &Rc<MemStore>,
        clock: &ManualClock,
        seed: u64,
        resumed_with: Option<Rc<Agents>>,
    ) -> Self {
        let pool = LocalPool::new();
        let spawner = pool.spawner();
        let timers = Rc::new(ManualTimers::default());
        let (sleeper, sleep_clock) = (Rc::clone(&timers), clock.clone());
        let hooks = TaskHooks {
            emit: Rc::new(|_| {}),
            publish: Rc::new(|_| {}),
            spawn: Rc::new(move |work| {
                spawner.spawn_local(work).expect("the executor is alive");
            }),
            sleep: Rc::new(move |ms| sleeper.sleep(&sleep_clock, ms)),
            alerts: Rc::new(|_| {}),
            schemas: Rc::new(crate::json_schema::JsonSchemas),
            report: Rc::new(|_| {}),
        };
        let shared_store: Rc<dyn Store> = store.clone();
        let tasks = crate::store::conformance::block_on(Tasks::open(
            shared_store,
            clock.shared(),
            seed,
            TaskSettings::default(),
            hooks.clone(),
        ))
        .expect("the task engines open");
        let generator: GeneratorSource = Rc::new(move || {
            let agents = resumed_with.clone();
            Box::pin(async move {
                match agents {
                    Some(agents) => Ok(agents as Rc<dyn Generator>),
                    None => Err(Error::model_load("models.llm", "no model here")),
                }
            })
        });
        let kept = Rc::new(RefCell::new(Vec::new()));
        let sink = Rc::clone(&kept);
        let keep: Keep = Rc::new(move |memory| {
            sink.borrow_mut().push(memory);
            Box::pin(async { Ok(()) })
        });
        let debates =
            WorkflowDebates::register(Rc::clone(&tasks), clock.shared(), seed, generator, keep)
                .expect("registers");
        tasks.become_leader();
        (hooks.spawn)(tasks.drive());
        let tab = Self {
            debates,
            tasks,
            pool: RefCell::new(pool),
            timers,
            kept,
        };
        tab.settle();
        tab
    }

    /// Runs everything that can run without the clock moving.
    fn settle(&self) {
        for _ in 0..50 {
            self.timers.fire();
            self.pool.borrow_mut().run_until_stalled();
        }
    }

    /// Starts a debate the way `ask` does; its outcome lands in the returned slot.
    fn ask(
        &self,
        generator: Rc<Agents>,
        watch: Rc<Watch>,
    ) -> Rc<RefCell<Option<Result<DebateOutcome>>>> {
        let running = self.debates.run(request(), generator, watch);
        let slot = crate::testing::spawn_into_slot(&self.pool.borrow(), running);
        self.settle();
        slot
    }

    fn debate_workflows(&self) -> Vec<WorkflowRecord> {
        let page = crate::store::conformance::block_on(
            self.tasks
                .engine()
                .list_workflows(WorkflowFilter::default()),
        )
        .expect("lists");
        page.items
            .into_iter()
            .filter(|w| w.workflow_type == DEBATE_WORKFLOW)
            .collect()
    }
}

fn request() -> DebateRequest {
    DebateRequest {
        query: "What is the capital of France?".into(),
        memories: vec!["The user lives in Lyon.".into()],
        settings: DebateSettings::default(),
        remember: true,
    }
}

fn texts(outcome: &DebateOutcome) -> Vec<(AgentRole, String, bool)> {
    outcome
        .responses
        .iter()
        .map(|r| (r.role, r.text.clone(), r.ok))
        .collect()
}

#[test]
fn a_debate_runs_as_a_checkpointed_workflow_with_the_in_process_outcome() {
    let (store, clock) = (Rc::new(MemStore::new()), ManualClock::new(1_000_000));
    let tab = Tab::open(&store, &clock, 1, None);
    let (agents, watch) = (Rc::new(Agents::default()), Rc::new(Watch::default()));
    let slot = tab.ask(Rc::clone(&agents), Rc::clone(&watch));
    let outcome = slot.take().expect("answered").expect("a debate");

    // The same debate in the asking future, for comparison.
    let (reference_agents, reference_watch) = (Agents::default(), Watch::default());
    let debate = request();
    let reference = crate::store::conformance::block_on(
        MultiAgentCoordinator::new(clock.shared(), debate.settings.clone()).run_debate(
            &reference_agents,
            &debate.query,
            &debate.memories,
            &reference_watch,
        ),
    )
    .expect("runs");
    assert_eq!(outcome.state, DebateState::Done);
    assert_eq!(texts(&outcome), texts(&reference));
    assert_eq!(outcome.answer, reference.answer);
    assert_eq!(*watch.stages.borrow(), *reference_watch.stages.borrow());
    assert_eq!(*watch.text.borrow(), *reference_watch.text.borrow());
    assert_eq!(
        *agents.asked.borrow(),
        ["logical", "creative", "critical", "synthesizer"]
    );

    // Each stage's responses were checkpointed by its step; the ask keeps the answer itself.
    // The ask answered and keeps the answer itself: the workflow's row is gone.
    assert!(tab.debate_workflows().is_empty());
    assert!(tab.kept.borrow().is_empty());
}

#[test]
fn a_cancelled_ask_stops_its_debate_workflow() {
    let (store, clock) = (Rc::new(MemStore::new()), ManualClock::new(1_000_000));
    let tab = Tab::open(&store, &clock, 1, None);
    let agents = Rc::new(Agents::default());
    let watch = Rc::new(Watch::default());
    watch.cancel_at.set(Some(DebateState::Critical));
    let slot = tab.ask(Rc::clone(&agents), Rc::clone(&watch));
    let outcome = slot.take().expect("answered").expect("an outcome");
    assert_eq!(outcome.state, DebateState::Failed);
    assert!(
        matches!(outcome.error, Some(Error::Cancelled(_))),
        "{:?}",
        outcome.error
    );
    // The critic never ran, and nothing after it.
    assert_eq!(*agents.asked.borrow(), ["logical", "creative"]);
    assert!(tab.debate_workflows().is_empty());
    assert!(tab.kept.borrow().is_empty());
}

/// A page asks, the parallel stage is checkpointed, and the page goes away during the critic's
/// generation: its worker's executor is dropped with everything on it.
fn abandoned_mid_debate(store: &Rc<MemStore>, clock: &ManualClock) {
    let tab = Tab::open(store, clock, 1, None);
    let agents = Rc::new(Agents {
        hang: Some("critical"),
        ..Agents::default()
    });
    let slot = tab.ask(Rc::clone(&agents), Rc::new(Watch::default()));
    assert!(slot.borrow().is_none(), "the critic hangs");
    assert_eq!(*agents.asked.borrow(), ["logical", "creative", "critical"]);
    let workflows = tab.debate_workflows();
    assert_eq!(workflows[0].status, WorkflowStatus::Running);
    assert_eq!(
        workflows[0].steps[0].status,
        crate::workflows::StepStatus::Completed
    );
}

#[test]
fn a_debate_left_by_a_reload_is_taken_over_from_its_checkpoint_and_its_answer_kept() {
    let (store, clock) = (Rc::new(MemStore::new()), ManualClock::new(1_000_000));
    abandoned_mid_debate(&store, &clock);

    // The reloaded page's worker leads now; the dead worker's lease runs out.
    let agents = Rc::new(Agents::default());
    let tab = Tab::open(&store, &clock, 2, Some(Rc::clone(&agents)));
    clock.advance(31_000);
    tab.settle();

    let workflows = tab.debate_workflows();
    let [workflow] = workflows.as_slice() else {
        panic!("one debate workflow, got {}", workflows.len());
    };
    assert_eq!(
        workflow.status,
        WorkflowStatus::Completed,
        "{:?}",
        workflow.error
    );
    // The parallel answers came from the checkpoint: only the later stages ran again.
    assert_eq!(*agents.asked.borrow(), ["critical", "synthesizer"]);
    let names: Vec<&str> = workflow.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["parallel_generation", "critical", "synthesis", "remember"]
    );
    let roles = |step: usize| -> Vec<String> {
        let result = workflow.steps[step].result.clone().unwrap_or_default();
        let responses: Vec<AgentResponse> = serde_json::from_value(result).unwrap();
        responses.iter().map(|r| r.role.to_string()).collect()
    };
    assert_eq!(roles(0), ["logical", "creative"]);
    assert_eq!(roles(1), ["critical"]);
    assert_eq!(roles(2), ["synthesizer"]);
    assert_eq!(
        workflow.steps[1].attempts, 2,
        "the interrupted critic ran again"
    );
    assert_eq!(workflow.steps[3].result, Some(json!({ "kept": true })));
    let kept = tab.kept.borrow();
    let [memory] = kept.as_slice() else {
        panic!("one memory kept, got {}", kept.len());
    };
    assert_eq!(
        memory.text,
        "Q: What is the capital of France?\nA: The synthesizer agent says Paris."
    );
    assert_eq!(memory.kind.as_deref(), Some("conversation"));
    assert_eq!(memory.meta.as_ref().unwrap()["resumed"], true);
}

#[test]
fn a_debate_left_by_a_reload_fails_cleanly_where_no_model_can_load() {
    let (store, clock) = (Rc::new(MemStore::new()), ManualClock::new(1_000_000));
    abandoned_mid_debate(&store, &clock);

    let tab = Tab::open(&store, &clock, 2, None);
    clock.advance(31_000);
    tab.settle();

    let workflows = tab.debate_workflows();
    let workflow = &workflows[0];
    assert!(workflow.status.is_finished());
    assert_ne!(workflow.status, WorkflowStatus::Completed);
    let error = workflow.error.as_ref().expect("says why");
    assert!(
        error
            .message
            .contains("no language model to resume the debate with"),
        "{error:?}"
    );
    assert!(tab.kept.borrow().is_empty());
}

#[test]
fn the_engine_stopping_a_stage_stops_its_generation() {
    let signal = CancelSignal::new();
    let observer = StepObserver {
        inner: Rc::new(Quiet),
        signal: signal.clone(),
    };
    assert!(!observer.cancelled());
    signal.fire(CancelReason::Timeout);
    assert!(observer.cancelled());
}
