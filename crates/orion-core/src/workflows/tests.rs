use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::{poll_fn, Future};
use std::rc::Rc;
use std::task::Poll;

use serde_json::{json, Value};

use super::*;
use crate::clock::{Clock, ManualClock};
use crate::error::{Error, Result};
use crate::jobs::CancelReason;
use crate::store::conformance::block_on;
use crate::store::{MemStore, Row, Store, Table, WriteOp};

const LEASE_MS: u64 = 10_000;

/// What the test steps did and will do.
#[derive(Default)]
struct World {
    /// `step#attempt` for every step attempt, `undo:step#attempt` for every compensation attempt.
    log: RefCell<Vec<String>>,
    /// The idempotency key of every attempt, in order.
    keys: RefCell<Vec<String>>,
    /// Errors the next attempts of a step (or `undo:step`) return, in order; then they succeed.
    failures: RefCell<HashMap<String, VecDeque<StepError>>>,
    /// Steps (or `undo:step`) that wait until released.
    holds: RefCell<HashSet<String>>,
    /// Released holds.
    released: RefCell<HashSet<String>>,
    /// Why held steps saw their signal fire.
    observed: RefCell<Vec<(String, CancelReason)>>,
}

impl World {
    fn fail(&self, step: &str, errors: Vec<StepError>) {
        self.failures
            .borrow_mut()
            .insert(step.to_owned(), errors.into());
    }

    fn hold(&self, step: &str) {
        self.holds.borrow_mut().insert(step.to_owned());
    }

    fn release(&self, step: &str) {
        self.holds.borrow_mut().remove(step);
        self.released.borrow_mut().insert(step.to_owned());
    }

    fn log(&self) -> Vec<String> {
        self.log.borrow().clone()
    }

    fn count(&self, entry: &str) -> usize {
        self.log
            .borrow()
            .iter()
            .filter(|e| e.split('#').next() == Some(entry))
            .count()
    }

    /// Runs the scripted behaviour of `key` (a step name or `undo:name`).
    async fn act(self: Rc<Self>, key: String, ctx: StepContext) -> Result<Value, StepError> {
        self.log.borrow_mut().push(format!("{key}#{}", ctx.attempt));
        self.keys.borrow_mut().push(ctx.idempotency_key.clone());
        if self.holds.borrow().contains(&key) {
            let world = Rc::clone(&self);
            let held = key.clone();
            let signal = ctx.signal().clone();
            let released = poll_fn(|_| {
                if world.released.borrow_mut().remove(&held) {
                    Poll::Ready(true)
                } else if let Some(reason) = signal.reason() {
                    world.observed.borrow_mut().push((held.clone(), reason));
                    Poll::Ready(false)
                } else {
                    Poll::Pending
                }
            })
            .await;
            if !released {
                return Err(StepError::retryable("stopped"));
            }
        }
        let failure = self
            .failures
            .borrow_mut()
            .get_mut(&key)
            .and_then(VecDeque::pop_front);
        if let Some(error) = failure {
            return Err(error);
        }
        let mut seen: Vec<&String> = ctx.results.keys().collect();
        seen.sort();
        Ok(json!({"step": key, "input": ctx.input, "seen": seen}))
    }
}

/// A scripted step named `name`, with a scripted compensation if `compensate`.
fn scripted(world: &Rc<World>, name: &str, compensate: bool) -> Step {
    let run_world = Rc::clone(world);
    let key = name.to_owned();
    let step = Step::new(name, move |ctx| {
        Box::pin(Rc::clone(&run_world).act(key.clone(), ctx))
    });
    if !compensate {
        return step;
    }
    let undo_world = Rc::clone(world);
    let undo = format!("undo:{name}");
    step.compensate(move |ctx| Box::pin(Rc::clone(&undo_world).act(undo.clone(), ctx)))
}

/// Steps `names`, each with a compensation.
fn saga(world: &Rc<World>, names: &[&str]) -> WorkflowDefinition {
    names
        .iter()
        .fold(WorkflowDefinition::new(), |definition, name| {
            definition.step(scripted(world, name, true))
        })
}

struct Fixture {
    world: Rc<World>,
    clock: ManualClock,
    store: Rc<MemStore>,
    engine: WorkflowEngine,
    runs: Vec<WorkflowRun>,
    definitions: Vec<(String, WorkflowDefinition)>,
    seed: u64,
}

fn open(store: Rc<dyn Store>, clock: &ManualClock, seed: u64) -> WorkflowEngine {
    let config = EngineConfig {
        lease_ms: LEASE_MS,
        seed,
        ..EngineConfig::default()
    };
    block_on(WorkflowEngine::open(store, clock.shared(), config)).unwrap()
}

impl Fixture {
    fn new() -> Self {
        let clock = ManualClock::new(1_000_000);
        let store = Rc::new(MemStore::new());
        let engine = open(store.clone(), &clock, 1);
        Self {
            world: Rc::new(World::default()),
            clock,
            store,
            engine,
            runs: Vec::new(),
            definitions: Vec::new(),
            seed: 1,
        }
    }

    fn register(&mut self, workflow_type: &str, definition: WorkflowDefinition) {
        self.engine
            .register(workflow_type, definition.clone())
            .unwrap();
        self.definitions
            .push((workflow_type.to_owned(), definition));
    }

    /// Drops the engine and every run mid-flight, as a closed tab does, and opens a new engine
    /// (another instance) on the same store with the same definitions.
    fn crash(&mut self) {
        self.runs.clear();
        self.seed += 1;
        self.engine = open(self.store.clone(), &self.clock, self.seed);
        for (workflow_type, definition) in &self.definitions {
            self.engine
                .register(workflow_type, definition.clone())
                .unwrap();
        }
    }

    fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    fn start(&self, workflow_type: &str, input: Value, options: Value) -> WorkflowRecord {
        let options = WorkflowOptions::from_json(options).unwrap();
        block_on(self.engine.start_workflow(workflow_type, input, options)).unwrap()
    }

    fn get(&self, id: &str) -> WorkflowRecord {
        block_on(self.engine.get_workflow(id)).unwrap().unwrap()
    }

    /// Ticks, then polls every run, until nothing makes progress; returns the finished runs.
    fn step(&mut self) -> Vec<(String, Result<Option<WorkflowStatus>>)> {
        let mut finished = Vec::new();
        for _ in 0..100 {
            let started = block_on(self.engine.tick()).unwrap();
            let progressed = !started.is_empty();
            self.runs.extend(started);
            let done = poll_all(&mut self.runs);
            let more = !done.is_empty();
            finished.extend(done);
            if !progressed && !more {
                break;
            }
        }
        finished
    }

    /// Steps, then jumps the clock to each wake-up, until nothing is pending.
    fn run_until_idle(&mut self) {
        for _ in 0..100 {
            self.step();
            match self.engine.next_wake_at() {
                Some(at) if at > self.now() => self.clock.set(at),
                _ => return,
            }
        }
        panic!("the workflows never settled");
    }
}

/// Polls every run once, removing the finished ones.
fn poll_all(runs: &mut Vec<WorkflowRun>) -> Vec<(String, Result<Option<WorkflowStatus>>)> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut finished = Vec::new();
    let mut pending = Vec::new();
    for mut run in runs.drain(..) {
        match std::pin::Pin::new(&mut run).poll(&mut cx) {
            Poll::Ready(result) => finished.push((run.id.clone(), result)),
            Poll::Pending => pending.push(run),
        }
    }
    *runs = pending;
    finished
}

fn invalid_field(error: Error) -> String {
    match error {
        Error::InvalidInput { field, .. } => field,
        other => panic!("expected ERR_INVALID_INPUT, got {other:?}"),
    }
}

fn statuses(record: &WorkflowRecord) -> Vec<StepStatus> {
    record.steps.iter().map(|step| step.status).collect()
}

#[test]
fn a_workflow_runs_its_steps_in_order_and_completes() {
    let mut f = Fixture::new();
    f.register("order", saga(&f.world, &["reserve", "charge", "ship"]));
    let t0 = f.now();
    let started = f.start("order", json!({"sku": 7}), json!({"workflowId": "o1"}));
    assert_eq!(started.status, WorkflowStatus::Running);
    assert_eq!(statuses(&started), vec![StepStatus::Pending; 3]);
    assert_eq!(f.engine.next_wake_at(), Some(t0));
    let finished = f.step();
    assert!(matches!(
        finished.as_slice(),
        [(id, Ok(Some(WorkflowStatus::Completed)))] if id == "o1"
    ));
    assert_eq!(f.world.log(), vec!["reserve#1", "charge#1", "ship#1"]);
    let done = f.get("o1");
    assert_eq!(done.status, WorkflowStatus::Completed);
    assert_eq!(statuses(&done), vec![StepStatus::Completed; 3]);
    // Each step saw the results of the ones before it; the workflow's result is the last one's.
    assert_eq!(
        done.result,
        Some(json!({"step": "ship", "input": {"sku": 7}, "seen": ["charge", "reserve"]}))
    );
    assert_eq!(
        done.step("reserve").and_then(|s| s.result.clone()).unwrap()["seen"],
        json!([])
    );
    assert_eq!(done.cursor, 3);
    assert_eq!(done.finished_at, Some(t0));
    assert_eq!(done.lease_until, None);
    assert_eq!(done.error, None);
    assert_eq!(
        *f.world.keys.borrow(),
        vec!["o1/reserve/0", "o1/charge/0", "o1/ship/0"]
    );
    assert_eq!(f.engine.next_wake_at(), None);
    // Nothing runs again.
    f.step();
    assert_eq!(f.world.log().len(), 3);
}

#[test]
fn a_reloaded_engine_resumes_after_the_last_completed_step() {
    let mut f = Fixture::new();
    f.register("order", saga(&f.world, &["a", "b", "c"]));
    f.world.hold("b");
    f.start("order", json!({}), json!({"workflowId": "w"}));
    f.step();
    assert_eq!(f.world.log(), vec!["a#1", "b#1"]);
    let mid = f.get("w");
    assert_eq!(
        statuses(&mid),
        vec![
            StepStatus::Completed,
            StepStatus::Running,
            StepStatus::Pending
        ]
    );
    assert_eq!(mid.cursor, 1);
    // The tab dies while `b` runs.
    f.crash();
    f.world.release("b");
    // The dead instance's lease still holds the workflow.
    f.step();
    assert_eq!(f.world.log(), vec!["a#1", "b#1"]);
    let expiry = mid.lease_until.unwrap();
    assert_eq!(f.engine.next_wake_at(), Some(expiry));
    f.clock.set(expiry);
    let finished = f.step();
    assert!(matches!(
        finished.as_slice(),
        [(_, Ok(Some(WorkflowStatus::Completed)))]
    ));
    // Only the interrupted step ran again, as its second attempt, with the same key.
    assert_eq!(f.world.log(), vec!["a#1", "b#1", "b#2", "c#1"]);
    assert_eq!(f.world.count("a"), 1);
    let keys = f.world.keys.borrow().clone();
    assert_eq!(keys.get(1), keys.get(2));
    let done = f.get("w");
    assert_eq!(done.status, WorkflowStatus::Completed);
    assert_eq!(done.step("b").map(|s| s.attempts), Some(2));
    // `c` still saw `a`'s checkpointed result.
    assert_eq!(done.result.unwrap()["seen"], json!(["a", "b"]));
}

#[test]
fn a_crash_between_steps_never_reruns_a_completed_step() {
    let mut f = Fixture::new();
    f.register("order", saga(&f.world, &["a", "b", "c"]));
    // `b` fails once and waits out a backoff: the run ends, holding nothing.
    f.world.fail("b", vec![StepError::retryable("flaky")]);
    let t0 = f.now();
    f.start(
        "order",
        json!({}),
        json!({"workflowId": "w", "retry": {"attempts": 3, "backoff": 1000}}),
    );
    f.step();
    assert_eq!(f.world.log(), vec!["a#1", "b#1"]);
    let sleeping = f.get("w");
    assert_eq!(sleeping.status, WorkflowStatus::Running);
    assert_eq!(sleeping.next_run_at, Some(t0 + 1000));
    assert_eq!(sleeping.lease_until, None);
    assert_eq!(
        sleeping.step("b").and_then(|s| s.error.clone()),
        Some(StepFailure {
            message: "flaky".into(),
            retryable: true
        })
    );
    f.crash();
    assert_eq!(f.engine.next_wake_at(), Some(t0 + 1000));
    f.run_until_idle();
    assert_eq!(f.world.log(), vec!["a#1", "b#1", "b#2", "c#1"]);
    assert_eq!(f.get("w").status, WorkflowStatus::Completed);
}

#[test]
fn retries_wait_out_the_backoff() {
    let mut f = Fixture::new();
    f.register("wf", saga(&f.world, &["a"]));
    f.world.fail(
        "a",
        vec![StepError::retryable("one"), StepError::retryable("two")],
    );
    let t0 = f.now();
    f.start(
        "wf",
        json!({}),
        json!({"workflowId": "w", "retry": {"attempts": 3, "backoff": {"type": "exponential", "delay": 100}}}),
    );
    f.step();
    assert_eq!(f.engine.next_wake_at(), Some(t0 + 100));
    f.clock.set(t0 + 99);
    f.step();
    assert_eq!(f.world.count("a"), 1);
    f.clock.set(t0 + 100);
    f.step();
    assert_eq!(f.world.count("a"), 2);
    assert_eq!(f.engine.next_wake_at(), Some(t0 + 300));
    f.clock.set(t0 + 300);
    f.step();
    let done = f.get("w");
    assert_eq!(done.status, WorkflowStatus::Completed);
    let a = done.step("a").cloned().unwrap();
    assert_eq!(a.attempts, 3);
    assert_eq!(a.error, None);
    assert_eq!(a.started_at, Some(t0 + 300));
}

#[test]
fn a_step_retry_policy_overrides_the_workflow_default() {
    let mut f = Fixture::new();
    let step = scripted(&f.world, "a", false).retry(RetryPolicy::new(2, None));
    f.register("wf", WorkflowDefinition::new().step(step));
    f.world.fail(
        "a",
        vec![StepError::retryable("one"), StepError::retryable("two")],
    );
    f.start(
        "wf",
        json!({}),
        json!({"workflowId": "w", "retry": {"attempts": 5}}),
    );
    f.run_until_idle();
    let done = f.get("w");
    // Two attempts, not five; nothing to compensate, so it failed.
    assert_eq!(done.status, WorkflowStatus::Failed);
    assert_eq!(f.world.log(), vec!["a#1", "a#2"]);
    assert_eq!(
        done.error,
        Some(WorkflowFailure {
            message: "step `a` failed: two".into(),
            step: Some("a".into())
        })
    );
}

#[test]
fn a_failure_compensates_the_completed_steps_newest_first() {
    let mut f = Fixture::new();
    f.register(
        "order",
        saga(&f.world, &["reserve", "charge", "notify", "ship"]),
    );
    f.world.fail("ship", vec![StepError::fatal("no courier")]);
    f.start(
        "order",
        json!({}),
        json!({"workflowId": "w", "retry": {"attempts": 5}}),
    );
    f.run_until_idle();
    assert_eq!(
        f.world.log(),
        vec![
            "reserve#1",
            "charge#1",
            "notify#1",
            "ship#1",
            "undo:notify#1",
            "undo:charge#1",
            "undo:reserve#1"
        ]
    );
    let done = f.get("w");
    assert_eq!(done.status, WorkflowStatus::Compensated);
    assert_eq!(done.compensate_reason, Some(CompensateReason::Failed));
    assert_eq!(
        done.error,
        Some(WorkflowFailure {
            message: "step `ship` failed: no courier".into(),
            step: Some("ship".into())
        })
    );
    assert_eq!(
        statuses(&done),
        vec![
            StepStatus::Compensated,
            StepStatus::Compensated,
            StepStatus::Compensated,
            StepStatus::Failed
        ]
    );
    // A compensation's key is its step's, marked; it got the step's result.
    assert!(f
        .world
        .keys
        .borrow()
        .contains(&"w/charge/0/compensate".to_owned()));
}

#[test]
fn steps_without_compensation_are_skipped_and_a_failed_compensation_fails_the_workflow() {
    let mut f = Fixture::new();
    let definition = WorkflowDefinition::new()
        .step(scripted(&f.world, "a", true))
        .step(scripted(&f.world, "b", false))
        .step(scripted(&f.world, "c", true))
        .step(scripted(&f.world, "d", false));
    f.register("wf", definition);
    f.world.fail("d", vec![StepError::fatal("broken")]);
    f.world
        .fail("undo:c", vec![StepError::fatal("cannot undo")]);
    f.start("wf", json!({}), json!({"workflowId": "w"}));
    f.run_until_idle();
    assert_eq!(
        f.world.log(),
        vec!["a#1", "b#1", "c#1", "d#1", "undo:c#1", "undo:a#1"]
    );
    let done = f.get("w");
    assert_eq!(done.status, WorkflowStatus::Failed);
    assert_eq!(
        statuses(&done),
        vec![
            StepStatus::Compensated,
            StepStatus::Completed,
            StepStatus::CompensationFailed,
            StepStatus::Failed
        ]
    );
    assert_eq!(
        done.step("c").and_then(|s| s.compensation_error.clone()),
        Some(StepFailure {
            message: "cannot undo".into(),
            retryable: false
        })
    );
}

#[test]
fn a_crash_during_compensation_resumes_without_rerunning_finished_compensations() {
    let mut f = Fixture::new();
    f.register("order", saga(&f.world, &["a", "b", "c", "d"]));
    f.world.fail("d", vec![StepError::fatal("broken")]);
    f.world.hold("undo:b");
    f.start("order", json!({}), json!({"workflowId": "w"}));
    f.step();
    assert_eq!(
        f.world.log(),
        vec!["a#1", "b#1", "c#1", "d#1", "undo:c#1", "undo:b#1"]
    );
    let mid = f.get("w");
    assert_eq!(mid.status, WorkflowStatus::Compensating);
    assert_eq!(
        statuses(&mid),
        vec![
            StepStatus::Completed,
            StepStatus::Compensating,
            StepStatus::Compensated,
            StepStatus::Failed
        ]
    );
    f.crash();
    f.world.release("undo:b");
    f.clock.set(mid.lease_until.unwrap());
    f.step();
    assert_eq!(
        f.world.log(),
        vec!["a#1", "b#1", "c#1", "d#1", "undo:c#1", "undo:b#1", "undo:b#2", "undo:a#1"]
    );
    let done = f.get("w");
    assert_eq!(done.status, WorkflowStatus::Compensated);
    assert_eq!(done.step("b").map(|s| s.compensation_attempts), Some(2));
    assert_eq!(done.step("c").map(|s| s.compensation_attempts), Some(1));
}

#[test]
fn cancelling_a_running_workflow_signals_its_step_and_compensates() {
    let mut f = Fixture::new();
    f.register("order", saga(&f.world, &["a", "b", "c"]));
    f.world.hold("b");
    f.start("order", json!({}), json!({"workflowId": "w"}));
    f.step();
    let outcome = block_on(f.engine.cancel_workflow("w")).unwrap();
    assert_eq!(outcome, CancelOutcome::Signalled);
    f.step();
    assert_eq!(
        *f.world.observed.borrow(),
        vec![("b".to_owned(), CancelReason::Cancelled)]
    );
    assert_eq!(f.world.log(), vec!["a#1", "b#1", "undo:a#1"]);
    let done = f.get("w");
    assert_eq!(done.status, WorkflowStatus::Cancelled);
    assert_eq!(
        statuses(&done),
        vec![
            StepStatus::Compensated,
            StepStatus::Cancelled,
            StepStatus::Pending
        ]
    );
    assert_eq!(
        done.error,
        Some(WorkflowFailure {
            message: "cancelled".into(),
            step: Some("b".into())
        })
    );
    assert_eq!(
        block_on(f.engine.cancel_workflow("w")).unwrap(),
        CancelOutcome::AlreadyFinished(WorkflowStatus::Cancelled)
    );
    assert_eq!(
        block_on(f.engine.cancel_workflow("nope")).unwrap(),
        CancelOutcome::NotFound
    );
}

#[test]
fn cancelling_a_workflow_not_running_here_is_stored_and_acted_on() {
    let mut f = Fixture::new();
    f.register("order", saga(&f.world, &["a", "b"]));
    f.world.fail("b", vec![StepError::retryable("later")]);
    f.start(
        "order",
        json!({}),
        json!({"workflowId": "w", "retry": {"attempts": 2, "backoff": 60000}}),
    );
    f.step();
    // Waiting out its backoff; cancelled from a fresh instance.
    f.crash();
    assert_eq!(
        block_on(f.engine.cancel_workflow("w")).unwrap(),
        CancelOutcome::Requested
    );
    assert!(f.get("w").cancel_requested);
    assert_eq!(f.engine.next_wake_at(), Some(f.now()));
    f.step();
    assert_eq!(f.world.log(), vec!["a#1", "b#1", "undo:a#1"]);
    assert_eq!(f.get("w").status, WorkflowStatus::Cancelled);
}

#[test]
fn a_cancellation_from_another_instance_reaches_the_holder_at_its_lease_renewal() {
    let mut f = Fixture::new();
    f.register("order", saga(&f.world, &["a", "b"]));
    f.world.hold("b");
    f.start("order", json!({}), json!({"workflowId": "w"}));
    f.step();
    let other = open(f.store.clone(), &f.clock, 99);
    assert_eq!(
        block_on(other.cancel_workflow("w")).unwrap(),
        CancelOutcome::Requested
    );
    // The holder adopts it when it renews its lease (half the lease on).
    f.clock.advance(LEASE_MS / 2);
    f.step();
    assert_eq!(f.world.log(), vec!["a#1", "b#1", "undo:a#1"]);
    assert_eq!(f.get("w").status, WorkflowStatus::Cancelled);
}

/// A step that waits for the signal `approval` and returns its payload.
fn approval_step() -> Step {
    Step::new("approve", |ctx| {
        Box::pin(async move {
            let early = ctx.signals("approval");
            let payload = ctx.wait_for_signal("approval").await;
            Ok(json!({"payload": payload, "early": early.len()}))
        })
    })
}

#[test]
fn a_step_waits_for_a_durable_signal() {
    let mut f = Fixture::new();
    f.register("approval", WorkflowDefinition::new().step(approval_step()));
    f.start("approval", json!({}), json!({"workflowId": "w"}));
    f.step();
    assert_eq!(f.get("w").status, WorkflowStatus::Running);
    block_on(f.engine.signal("w", "other", json!(1))).unwrap();
    f.step();
    assert_eq!(f.get("w").status, WorkflowStatus::Running);
    block_on(f.engine.signal("w", "approval", json!({"by": "ann"}))).unwrap();
    let stored = f.get("w");
    assert_eq!(stored.signals.len(), 2);
    assert_eq!(
        stored.signals.get(1).map(|s| s.name.as_str()),
        Some("approval")
    );
    f.step();
    let done = f.get("w");
    assert_eq!(done.status, WorkflowStatus::Completed);
    assert_eq!(
        done.result,
        Some(json!({"payload": {"by": "ann"}, "early": 0}))
    );
    // A finished workflow takes no more signals; neither does an unknown one.
    let finished = block_on(f.engine.signal("w", "approval", json!(2))).unwrap_err();
    assert_eq!(invalid_field(finished), "id");
    let unknown = block_on(f.engine.signal("nope", "approval", json!(2))).unwrap_err();
    assert_eq!(invalid_field(unknown), "id");
    let big = json!("x".repeat(MAX_INPUT_BYTES));
    let error = block_on(f.engine.signal("w", "approval", big)).unwrap_err();
    assert_eq!(invalid_field(error), "payload");
}

#[test]
fn signals_sent_before_the_step_or_through_another_instance_arrive() {
    let mut f = Fixture::new();
    f.register("approval", WorkflowDefinition::new().step(approval_step()));
    // Sent before the workflow ever ran: stored, read at once.
    f.start("approval", json!({}), json!({"workflowId": "early"}));
    block_on(f.engine.signal("early", "approval", json!("yes"))).unwrap();
    f.step();
    assert_eq!(
        f.get("early").result,
        Some(json!({"payload": "yes", "early": 1}))
    );
    // Sent through an instance not running it: patched into the row, adopted at renewal.
    f.start("approval", json!({}), json!({"workflowId": "late"}));
    f.step();
    let other = open(f.store.clone(), &f.clock, 99);
    block_on(other.signal("late", "approval", json!("ok"))).unwrap();
    f.step();
    assert_eq!(f.get("late").status, WorkflowStatus::Running);
    f.clock.advance(LEASE_MS / 2);
    f.step();
    let done = f.get("late");
    assert_eq!(done.status, WorkflowStatus::Completed);
    assert_eq!(done.result, Some(json!({"payload": "ok", "early": 0})));
    assert_eq!(done.signals.len(), 1);
}

/// A step looping over `input.items` from its checkpointed cursor, recording each item processed;
/// it stops for good (pending) at `input.stopAt` the first time it gets there.
fn looping_step(processed: Rc<RefCell<Vec<u64>>>, stopped: Rc<RefCell<bool>>) -> Step {
    Step::new("loop", move |ctx| {
        let processed = Rc::clone(&processed);
        let stopped = Rc::clone(&stopped);
        Box::pin(async move {
            let items = ctx.input["items"].as_u64().unwrap_or(0);
            let stop_at = ctx.input["stopAt"].as_u64();
            let mut next = ctx.cursor().and_then(|c| c.as_u64()).unwrap_or(0);
            while next < items {
                if stop_at == Some(next) && !*stopped.borrow() {
                    *stopped.borrow_mut() = true;
                    // The worker dies here.
                    std::future::pending::<()>().await;
                }
                processed.borrow_mut().push(next);
                next += 1;
                ctx.checkpoint(json!(next)).await.map_err(StepError::from)?;
            }
            Ok(json!(next))
        })
    })
}

#[test]
fn a_looping_step_resumes_from_its_checkpointed_cursor() {
    let mut f = Fixture::new();
    let processed = Rc::new(RefCell::new(Vec::new()));
    let stopped = Rc::new(RefCell::new(false));
    f.register(
        "batch",
        WorkflowDefinition::new().step(looping_step(processed.clone(), stopped.clone())),
    );
    f.start(
        "batch",
        json!({"items": 8, "stopAt": 5}),
        json!({"workflowId": "w"}),
    );
    f.step();
    assert_eq!(*processed.borrow(), vec![0, 1, 2, 3, 4]);
    let mid = f.get("w");
    assert_eq!(
        mid.step("loop").and_then(|s| s.cursor.clone()),
        Some(json!(5))
    );
    f.crash();
    f.clock.set(mid.lease_until.unwrap());
    f.step();
    // Items 0 to 4 were not processed again.
    assert_eq!(*processed.borrow(), vec![0, 1, 2, 3, 4, 5, 6, 7]);
    let done = f.get("w");
    assert_eq!(done.status, WorkflowStatus::Completed);
    assert_eq!(done.result, Some(json!(8)));
    assert_eq!(done.step("loop").map(|s| s.attempts), Some(2));
}

#[test]
fn continue_as_new_replaces_the_history_under_the_same_id() {
    let mut f = Fixture::new();
    let keys = Rc::new(RefCell::new(Vec::new()));
    let seen = Rc::clone(&keys);
    let counter = Step::new("count", move |ctx| {
        let seen = Rc::clone(&seen);
        Box::pin(async move {
            seen.borrow_mut().push(ctx.idempotency_key.clone());
            let n = ctx.input["n"].as_u64().unwrap_or(0);
            if n < 3 {
                ctx.continue_as_new(json!({"n": n + 1}))
                    .map_err(StepError::from)?;
            }
            Ok(json!(n))
        })
    });
    let done_step = Step::new("report", |ctx| {
        Box::pin(async move { Ok(json!({"last": ctx.results["count"].clone(), "run": ctx.run})) })
    });
    f.register(
        "loop",
        WorkflowDefinition::new().step(counter).step(done_step),
    );
    f.start("loop", json!({"n": 0}), json!({"workflowId": "w"}));
    block_on(f.engine.signal("w", "dropped", json!(null))).unwrap();
    f.run_until_idle();
    assert_eq!(
        *keys.borrow(),
        vec!["w/count/0", "w/count/1", "w/count/2", "w/count/3"]
    );
    let done = f.get("w");
    assert_eq!(done.status, WorkflowStatus::Completed);
    assert_eq!(done.run, 3);
    assert_eq!(done.input, json!({"n": 3}));
    assert_eq!(done.result, Some(json!({"last": 3, "run": 3})));
    // Only the last run's history is kept; the signals went with the first run.
    assert_eq!(done.steps.len(), 2);
    assert_eq!(done.step("count").map(|s| s.attempts), Some(1));
    assert!(done.signals.is_empty());
    assert_eq!(block_on(f.store.count(Table::Workflows)).unwrap(), 1);
}

#[test]
fn a_step_past_its_timeout_is_signalled_and_retried() {
    let mut f = Fixture::new();
    f.register("wf", saga(&f.world, &["a", "b"]));
    f.world.hold("b");
    let t0 = f.now();
    f.start(
        "wf",
        json!({}),
        json!({"workflowId": "w", "stepTimeout": 500, "retry": {"attempts": 2}}),
    );
    f.step();
    assert_eq!(f.engine.next_wake_at(), Some(t0 + 500));
    f.clock.set(t0 + 500);
    f.step();
    // The second attempt timed out too: the workflow compensated.
    assert_eq!(f.engine.next_wake_at(), Some(t0 + 1000));
    f.clock.set(t0 + 1000);
    f.step();
    assert_eq!(f.world.log(), vec!["a#1", "b#1", "b#2", "undo:a#1"]);
    assert_eq!(
        *f.world.observed.borrow(),
        vec![
            ("b".to_owned(), CancelReason::Timeout),
            ("b".to_owned(), CancelReason::Timeout)
        ]
    );
    let done = f.get("w");
    assert_eq!(done.status, WorkflowStatus::Compensated);
    assert_eq!(
        done.step("b").and_then(|s| s.error.clone()),
        Some(StepFailure {
            message: "the attempt timed out".into(),
            retryable: true
        })
    );
}

#[test]
fn a_workflow_past_its_timeout_compensates_and_ends_timed_out() {
    let mut f = Fixture::new();
    f.register("wf", saga(&f.world, &["a", "b", "c"]));
    f.world.hold("b");
    let t0 = f.now();
    let started = f.start("wf", json!({}), json!({"workflowId": "w", "timeout": 2000}));
    assert_eq!(started.deadline_at, Some(t0 + 2000));
    f.step();
    assert_eq!(f.engine.next_wake_at(), Some(t0 + 2000));
    f.clock.set(t0 + 2000);
    f.step();
    assert_eq!(f.world.log(), vec!["a#1", "b#1", "undo:a#1"]);
    let done = f.get("w");
    assert_eq!(done.status, WorkflowStatus::TimedOut);
    assert_eq!(
        done.error,
        Some(WorkflowFailure {
            message: "the workflow timed out after 2000 ms".into(),
            step: Some("b".into())
        })
    );
    assert_eq!(done.step("b").map(|s| s.status), Some(StepStatus::Failed));
}

#[test]
fn a_workflow_times_out_while_waiting_out_a_backoff() {
    let mut f = Fixture::new();
    f.register("wf", saga(&f.world, &["a", "b"]));
    f.world.fail("b", vec![StepError::retryable("later")]);
    let t0 = f.now();
    f.start(
        "wf",
        json!({}),
        json!({"workflowId": "w", "timeout": 1000, "retry": {"attempts": 2, "backoff": 5000}}),
    );
    f.step();
    assert_eq!(f.engine.next_wake_at(), Some(t0 + 1000));
    f.run_until_idle();
    assert_eq!(f.world.log(), vec!["a#1", "b#1", "undo:a#1"]);
    assert_eq!(f.get("w").status, WorkflowStatus::TimedOut);
}

#[test]
fn bad_input_is_refused_naming_the_field_and_writes_nothing() {
    let mut f = Fixture::new();
    f.register("wf", saga(&f.world, &["a"]));
    let start = |workflow_type: &str, input: Value, options: WorkflowOptions| {
        block_on(f.engine.start_workflow(workflow_type, input, options)).unwrap_err()
    };
    assert_eq!(
        invalid_field(start("nope", json!({}), WorkflowOptions::default())),
        "type"
    );
    assert_eq!(
        invalid_field(start("", json!({}), WorkflowOptions::default())),
        "type"
    );
    let big = json!({"blob": "x".repeat(MAX_INPUT_BYTES)});
    assert_eq!(
        invalid_field(start("wf", big, WorkflowOptions::default())),
        "input"
    );
    let bad_options = [
        (json!({"retry": {"attempts": 0}}), "options.retry.attempts"),
        (
            json!({"retry": {"attempts": 2, "backoff": {"type": "fixed", "delay": 1, "jitter": 2}}}),
            "options.retry.backoff.jitter",
        ),
        (json!({"timeout": 0}), "options.timeout"),
        (
            json!({"stepTimeout": MAX_WORKFLOW_TIMEOUT_MS}),
            "options.stepTimeout",
        ),
        (json!({"workflowId": " "}), "options.workflowId"),
        (json!({"bogus": 1}), "options.bogus"),
        (json!({"timeout": "soon"}), "options.timeout"),
        (json!([1]), "options"),
    ];
    for (options, field) in bad_options {
        let error = WorkflowOptions::from_json(options.clone()).unwrap_err();
        assert_eq!(invalid_field(error), field, "{options}");
    }
    let unchecked = WorkflowOptions {
        retry: Some(RetryPolicy::new(0, None)),
        ..WorkflowOptions::default()
    };
    assert_eq!(
        invalid_field(start("wf", json!({}), unchecked)),
        "options.retry.attempts"
    );
    assert_eq!(block_on(f.store.count(Table::Workflows)).unwrap(), 0);
    // Definitions and lookups are checked too.
    let empty = f.engine.register("empty", WorkflowDefinition::new());
    assert_eq!(invalid_field(empty.unwrap_err()), "definition.steps");
    let twice = WorkflowDefinition::new()
        .step(scripted(&f.world, "a", false))
        .step(scripted(&f.world, "a", false));
    assert_eq!(
        invalid_field(f.engine.register("twice", twice).unwrap_err()),
        "definition.steps[1].name"
    );
    let slash = WorkflowDefinition::new().step(scripted(&f.world, "a/b", false));
    assert_eq!(
        invalid_field(f.engine.register("slash", slash).unwrap_err()),
        "definition.steps[0].name"
    );
    let slow = WorkflowDefinition::new().step(scripted(&f.world, "a", false).timeout(0));
    assert_eq!(
        invalid_field(f.engine.register("slow", slow).unwrap_err()),
        "definition.steps[0].timeout"
    );
    assert!(!f.engine.is_registered("twice"));
    let filter = WorkflowFilter {
        limit: 0,
        ..WorkflowFilter::default()
    };
    assert_eq!(
        invalid_field(block_on(f.engine.list_workflows(filter)).unwrap_err()),
        "limit"
    );
    assert_eq!(
        invalid_field(block_on(f.engine.get_workflow("")).unwrap_err()),
        "id"
    );
    f.step();
    assert!(f.world.log().is_empty());
}

#[test]
fn starting_an_existing_workflow_id_returns_the_existing_workflow() {
    let mut f = Fixture::new();
    f.register("wf", saga(&f.world, &["a"]));
    let first = f.start("wf", json!({"v": 1}), json!({"workflowId": "same"}));
    let second = f.start("wf", json!({"v": 2}), json!({"workflowId": "same"}));
    assert_eq!(first, second);
    assert_eq!(second.input, json!({"v": 1}));
    f.step();
    let third = f.start("wf", json!({"v": 3}), json!({"workflowId": "same"}));
    assert_eq!(third.status, WorkflowStatus::Completed);
    assert_eq!(third.input, json!({"v": 1}));
    assert_eq!(f.world.count("a"), 1);
    assert_eq!(block_on(f.store.count(Table::Workflows)).unwrap(), 1);
    // Without an id, each start is a new workflow, with ids sorting by creation.
    let x = f.start("wf", json!({}), json!(null));
    let y = f.start("wf", json!({}), json!(null));
    assert_ne!(x.id, y.id);
    assert!(x.id < y.id);
}

#[test]
fn workflows_list_by_status_in_pages() {
    let mut f = Fixture::new();
    f.register("wf", saga(&f.world, &["a"]));
    for i in 0..5 {
        f.start("wf", json!({}), json!({"workflowId": format!("w{i}")}));
    }
    f.step();
    f.world.hold("a");
    f.start("wf", json!({}), json!({"workflowId": "w5"}));
    f.step();
    let running = WorkflowFilter {
        status: Some(WorkflowStatus::Running),
        ..WorkflowFilter::default()
    };
    let page = block_on(f.engine.list_workflows(running)).unwrap();
    assert_eq!(
        page.items.iter().map(|w| w.id.as_str()).collect::<Vec<_>>(),
        vec!["w5"]
    );
    let mut filter = WorkflowFilter {
        status: Some(WorkflowStatus::Completed),
        limit: 2,
        after: None,
    };
    let mut ids = Vec::new();
    loop {
        let page = block_on(f.engine.list_workflows(filter.clone())).unwrap();
        ids.extend(page.items.into_iter().map(|w| w.id));
        match page.next {
            Some(next) => filter.after = Some(next),
            None => break,
        }
    }
    assert_eq!(ids, vec!["w0", "w1", "w2", "w3", "w4"]);
    let filter: WorkflowFilter =
        serde_json::from_value(json!({"status": "timedOut", "limit": 3})).unwrap();
    assert_eq!(filter.status, Some(WorkflowStatus::TimedOut));
}

#[test]
fn a_run_that_lost_its_lease_writes_nothing() {
    let mut f = Fixture::new();
    f.register("wf", saga(&f.world, &["a", "b"]));
    f.world.hold("a");
    f.start("wf", json!({}), json!({"workflowId": "w"}));
    f.step();
    // This instance freezes (no ticks renew its lease); another takes the workflow over.
    let other = open(f.store.clone(), &f.clock, 42);
    other.register("wf", saga(&f.world, &["a", "b"])).unwrap();
    f.clock.advance(LEASE_MS);
    let mut other_runs = block_on(other.tick()).unwrap();
    assert_eq!(other_runs.len(), 1);
    f.world.release("a");
    let finished = poll_all(&mut other_runs);
    assert!(matches!(
        finished.as_slice(),
        [(_, Ok(Some(WorkflowStatus::Completed)))]
    ));
    // The frozen run wakes up: it sees the row is not its own and stops without writing.
    f.world.release("a");
    let stale = poll_all(&mut f.runs);
    assert!(matches!(stale.as_slice(), [(_, Ok(None))]), "{stale:?}");
    let done = f.get("w");
    assert_eq!(done.status, WorkflowStatus::Completed);
    assert_eq!(f.world.log(), vec!["a#1", "a#2", "b#1"]);
}

#[test]
fn an_unreadable_row_is_a_store_error_not_a_panic() {
    let f = Fixture::new();
    let row = Row::new("bad").with("status", "running").with("steps", 3);
    block_on(f.store.write(vec![WriteOp::Put(Table::Workflows, row)])).unwrap();
    let error = block_on(f.engine.get_workflow("bad")).unwrap_err();
    assert!(matches!(error, Error::Store(_)), "{error:?}");
    // A new engine skips it; ticking does nothing with it.
    let engine = open(f.store.clone(), &f.clock, 7);
    assert_eq!(engine.next_wake_at(), None);
    assert!(block_on(engine.tick()).unwrap().is_empty());
}

#[test]
fn a_workflow_of_an_unregistered_type_waits_for_its_definition() {
    let mut f = Fixture::new();
    f.register("wf", saga(&f.world, &["a"]));
    f.start("wf", json!({}), json!({"workflowId": "w"}));
    // Reopened without registering `wf`: the workflow stays put.
    f.definitions.clear();
    f.crash();
    f.step();
    assert_eq!(f.engine.next_wake_at(), None);
    assert_eq!(f.get("w").status, WorkflowStatus::Running);
    f.register("wf", saga(&f.world, &["a"]));
    f.step();
    assert_eq!(f.get("w").status, WorkflowStatus::Completed);
}

#[test]
fn cancelling_a_compensating_workflow_does_not_interrupt_its_compensation() {
    let mut f = Fixture::new();
    f.register("wf", saga(&f.world, &["a", "b"]));
    f.world.fail("b", vec![StepError::fatal("broken")]);
    f.world.hold("undo:a");
    f.start("wf", json!({}), json!({"workflowId": "w"}));
    f.step();
    assert_eq!(f.get("w").status, WorkflowStatus::Compensating);
    assert_eq!(
        block_on(f.engine.cancel_workflow("w")).unwrap(),
        CancelOutcome::Requested
    );
    f.step();
    assert!(f.world.observed.borrow().is_empty());
    f.world.release("undo:a");
    f.step();
    let done = f.get("w");
    // Still ends as the failure it was compensating for.
    assert_eq!(done.status, WorkflowStatus::Compensated);
    assert_eq!(f.world.log(), vec!["a#1", "b#1", "undo:a#1"]);
}

#[test]
fn an_oversized_step_result_fails_the_step_for_good() {
    let mut f = Fixture::new();
    let huge = Step::new("huge", |_ctx| {
        Box::pin(async move { Ok(json!("x".repeat(MAX_INPUT_BYTES))) })
    });
    f.register(
        "wf",
        WorkflowDefinition::new()
            .step(scripted(&f.world, "a", true))
            .step(huge),
    );
    f.start(
        "wf",
        json!({}),
        json!({"workflowId": "w", "retry": {"attempts": 3}}),
    );
    f.run_until_idle();
    let done = f.get("w");
    assert_eq!(done.status, WorkflowStatus::Compensated);
    let step = done.step("huge").cloned().unwrap();
    assert_eq!(step.attempts, 1);
    assert_eq!(step.result, None);
    assert!(step
        .error
        .is_some_and(|e| !e.retryable && e.message.contains("`result`")));
}

#[test]
fn a_step_missing_from_a_changed_definition_fails_the_workflow() {
    let mut f = Fixture::new();
    f.register("wf", saga(&f.world, &["a", "b"]));
    f.world.hold("b");
    f.start("wf", json!({}), json!({"workflowId": "w"}));
    f.step();
    // Reloaded with a definition that renamed `b`.
    f.definitions = vec![("wf".into(), saga(&f.world, &["a", "b2"]))];
    f.crash();
    f.clock.advance(LEASE_MS);
    f.step();
    let done = f.get("w");
    assert_eq!(done.status, WorkflowStatus::Compensated);
    assert_eq!(
        done.error,
        Some(WorkflowFailure {
            message: "workflow type `wf` has no step `b` any more".into(),
            step: Some("b".into())
        })
    );
    assert_eq!(f.world.log(), vec!["a#1", "b#1", "undo:a#1"]);
}

#[test]
fn a_checkpoint_after_the_attempt_ended_is_refused() {
    let mut f = Fixture::new();
    let kept: Rc<RefCell<Option<StepContext>>> = Rc::new(RefCell::new(None));
    let keep = Rc::clone(&kept);
    let step = Step::new("a", move |ctx| {
        *keep.borrow_mut() = Some(ctx);
        Box::pin(async { Ok(json!(1)) })
    });
    f.register("wf", WorkflowDefinition::new().step(step));
    f.start("wf", json!({}), json!({"workflowId": "w"}));
    f.step();
    let ctx = kept.borrow_mut().take().unwrap();
    let error = block_on(ctx.checkpoint(json!(5))).unwrap_err();
    assert_eq!(invalid_field(error), "cursor");
    assert_eq!(f.get("w").step("a").and_then(|s| s.cursor.clone()), None);
    let big = ctx.continue_as_new(json!("x".repeat(MAX_INPUT_BYTES)));
    assert_eq!(invalid_field(big.unwrap_err()), "input");
}

#[test]
fn engine_config_is_checked() {
    let store: Rc<dyn Store> = Rc::new(MemStore::new());
    let clock = ManualClock::new(0);
    let bad = EngineConfig {
        max_running: 0,
        ..EngineConfig::default()
    };
    let error = block_on(WorkflowEngine::open(store, clock.shared(), bad)).unwrap_err();
    assert_eq!(invalid_field(error), "config.maxRunning");
}

#[test]
fn an_instance_runs_at_most_max_running_workflows_at_once() {
    let mut f = Fixture::new();
    let config = EngineConfig {
        lease_ms: LEASE_MS,
        max_running: 1,
        seed: 5,
    };
    f.engine = block_on(WorkflowEngine::open(
        f.store.clone(),
        f.clock.shared(),
        config,
    ))
    .unwrap();
    f.register("wf", saga(&f.world, &["a"]));
    f.world.hold("a");
    f.start("wf", json!({}), json!({"workflowId": "w1"}));
    f.start("wf", json!({}), json!({"workflowId": "w2"}));
    f.step();
    assert_eq!(f.world.log(), vec!["a#1"]);
    // Full: the waiting workflow is not a reason to wake before the lease renewal.
    assert_eq!(f.engine.next_wake_at(), Some(f.now() + LEASE_MS / 2));
    f.world.release("a");
    f.world.hold("a");
    f.step();
    assert_eq!(f.world.log(), vec!["a#1", "a#1"]);
    assert_eq!(f.get("w1").status, WorkflowStatus::Completed);
    assert_eq!(f.get("w2").status, WorkflowStatus::Running);
    f.world.release("a");
    f.step();
    assert_eq!(f.get("w2").status, WorkflowStatus::Completed);
}

impl Fixture {
    /// Another instance (another tab) on the same store, with the same definitions.
    fn other_tab(&self, seed: u64) -> WorkflowEngine {
        let other = open(self.store.clone(), &self.clock, seed);
        for (workflow_type, definition) in &self.definitions {
            other.register(workflow_type, definition.clone()).unwrap();
        }
        other
    }
}

fn ids(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|id| (*id).to_owned()).collect()
}

#[test]
fn refresh_picks_up_a_workflow_another_instance_started() {
    let mut f = Fixture::new();
    f.register("order", saga(&f.world, &["a", "b"]));
    let other = f.other_tab(50);
    let options = WorkflowOptions::from_json(json!({"workflowId": "w"})).unwrap();
    block_on(other.start_workflow("order", json!({}), options)).unwrap();
    assert_eq!(f.engine.next_wake_at(), None);
    f.step();
    assert!(f.world.log().is_empty());
    let error = block_on(f.engine.refresh(&ids(&["w", ""]))).unwrap_err();
    assert_eq!(invalid_field(error), "ids[1]");
    block_on(f.engine.refresh(&ids(&["w", "w", "unknown"]))).unwrap();
    assert_eq!(f.engine.next_wake_at(), Some(f.now()));
    f.step();
    assert_eq!(f.world.log(), vec!["a#1", "b#1"]);
    assert_eq!(f.get("w").status, WorkflowStatus::Completed);
    // Refreshing a finished one forgets it.
    block_on(f.engine.refresh(&ids(&["w"]))).unwrap();
    assert_eq!(f.engine.next_wake_at(), None);
}

#[test]
fn refresh_of_a_workflow_cancelled_elsewhere_signals_its_running_step() {
    let mut f = Fixture::new();
    f.register("order", saga(&f.world, &["a", "b", "c"]));
    f.world.hold("b");
    f.start("order", json!({}), json!({"workflowId": "w"}));
    f.step();
    let other = f.other_tab(50);
    assert_eq!(
        block_on(other.cancel_workflow("w")).unwrap(),
        CancelOutcome::Requested
    );
    // Without a refresh the holder would learn of it only at its lease renewal.
    f.step();
    assert!(f.world.observed.borrow().is_empty());
    block_on(f.engine.refresh(&ids(&["w"]))).unwrap();
    let finished = f.step();
    assert!(
        matches!(
            finished.as_slice(),
            [(_, Ok(Some(WorkflowStatus::Cancelled)))]
        ),
        "{finished:?}"
    );
    assert_eq!(
        *f.world.observed.borrow(),
        vec![("b".to_owned(), CancelReason::Cancelled)]
    );
    assert_eq!(f.world.log(), vec!["a#1", "b#1", "undo:a#1"]);
    assert_eq!(f.get("w").status, WorkflowStatus::Cancelled);

    // A running workflow whose row was deleted stops, writing nothing.
    f.world.hold("a");
    f.start("order", json!({}), json!({"workflowId": "gone"}));
    f.step();
    block_on(
        f.store
            .write(vec![WriteOp::Delete(Table::Workflows, "gone".into())]),
    )
    .unwrap();
    block_on(f.engine.refresh(&ids(&["gone"]))).unwrap();
    let finished = f.step();
    assert!(
        matches!(finished.as_slice(), [(id, Ok(None))] if id == "gone"),
        "{finished:?}"
    );
    assert_eq!(block_on(f.engine.get_workflow("gone")).unwrap(), None);
}

#[test]
fn reload_after_another_instances_changes() {
    let mut f = Fixture::new();
    f.register("order", saga(&f.world, &["a", "b"]));
    f.register("held", saga(&f.world, &["x", "y"]));
    // The leader runs one workflow, and another waits out a long backoff.
    f.world.hold("x");
    f.start("held", json!({}), json!({"workflowId": "running"}));
    f.world.fail("b", vec![StepError::retryable("later")]);
    f.start(
        "order",
        json!({}),
        json!({"workflowId": "sleeping", "retry": {"attempts": 2, "backoff": 600000}}),
    );
    f.step();
    assert_eq!(f.world.log(), vec!["x#1", "a#1", "b#1"]);
    // Another tab starts one, and cancels both of the leader's.
    let other = f.other_tab(50);
    let options = WorkflowOptions::from_json(json!({"workflowId": "new"})).unwrap();
    block_on(other.start_workflow("order", json!({}), options)).unwrap();
    for id in ["running", "sleeping"] {
        assert_eq!(
            block_on(other.cancel_workflow(id)).unwrap(),
            CancelOutcome::Requested
        );
    }
    block_on(f.engine.reload()).unwrap();
    assert_eq!(f.engine.next_wake_at(), Some(f.now()));
    f.step();
    assert!(f
        .world
        .observed
        .borrow()
        .contains(&("x".to_owned(), CancelReason::Cancelled)));
    assert_eq!(f.get("new").status, WorkflowStatus::Completed);
    assert_eq!(f.get("sleeping").status, WorkflowStatus::Cancelled);
    assert_eq!(f.get("running").status, WorkflowStatus::Cancelled);
    assert_eq!(f.world.count("undo:a"), 1, "the sleeping one rolled back");
    assert!(f.runs.is_empty());
    assert_eq!(f.engine.next_wake_at(), None);
}

#[test]
fn a_paused_workflow_stops_between_steps_and_continues_after_resume_across_a_reopen() {
    let mut f = Fixture::new();
    f.register("order", saga(&f.world, &["a", "b", "c"]));
    f.world.hold("b");
    f.start("order", json!({}), json!({"workflowId": "w"}));
    f.step();
    let paused = block_on(f.engine.pause_workflow("w")).unwrap();
    assert!(paused.paused && paused.is_paused());
    assert_eq!(paused.status, WorkflowStatus::Running);
    assert!(f.get("w").paused, "stored at once");
    // The running step finishes and is checkpointed; the next one does not start.
    f.world.release("b");
    let finished = f.step();
    assert!(
        matches!(
            finished.as_slice(),
            [(_, Ok(Some(WorkflowStatus::Running)))]
        ),
        "{finished:?}"
    );
    assert_eq!(f.world.log(), vec!["a#1", "b#1"]);
    let stopped = f.get("w");
    assert!(stopped.is_paused());
    assert_eq!(stopped.cursor, 2);
    assert_eq!(stopped.lease_until, None);
    assert_eq!(
        statuses(&stopped),
        vec![
            StepStatus::Completed,
            StepStatus::Completed,
            StepStatus::Pending
        ]
    );
    assert_eq!(f.engine.next_wake_at(), None);
    // Idempotent.
    assert!(block_on(f.engine.pause_workflow("w")).unwrap().paused);
    // Still paused in a new instance, even once any lease would have expired.
    f.crash();
    f.clock.advance(LEASE_MS * 2);
    assert_eq!(f.engine.next_wake_at(), None);
    f.step();
    assert_eq!(f.world.log(), vec!["a#1", "b#1"]);
    let resumed = block_on(f.engine.resume_workflow("w")).unwrap();
    assert!(!resumed.paused);
    assert_eq!(f.engine.next_wake_at(), Some(f.now()));
    // Resuming a workflow that is not paused returns it as it is.
    assert_eq!(block_on(f.engine.resume_workflow("w")).unwrap(), f.get("w"));
    f.step();
    assert_eq!(f.world.log(), vec!["a#1", "b#1", "c#1"]);
    let done = f.get("w");
    assert_eq!(done.status, WorkflowStatus::Completed);
    assert!(!done.paused);
}

#[test]
fn a_pause_and_resume_from_another_instance_reach_the_leader() {
    let mut f = Fixture::new();
    f.register("order", saga(&f.world, &["a", "b", "c"]));
    f.world.hold("b");
    f.start("order", json!({}), json!({"workflowId": "w"}));
    f.step();
    let other = f.other_tab(50);
    assert!(block_on(other.pause_workflow("w")).unwrap().paused);
    block_on(f.engine.refresh(&ids(&["w"]))).unwrap();
    f.world.release("b");
    f.step();
    assert_eq!(f.world.log(), vec!["a#1", "b#1"]);
    assert!(f.get("w").is_paused());
    assert!(!block_on(other.resume_workflow("w")).unwrap().paused);
    // The leader forgot the paused workflow; the refresh brings it back.
    assert_eq!(f.engine.next_wake_at(), None);
    block_on(f.engine.refresh(&ids(&["w"]))).unwrap();
    f.step();
    assert_eq!(f.world.log(), vec!["a#1", "b#1", "c#1"]);
    assert_eq!(f.get("w").status, WorkflowStatus::Completed);
}

#[test]
fn a_held_workflow_adopts_a_pause_at_its_next_write_without_a_refresh() {
    let mut f = Fixture::new();
    f.register("order", saga(&f.world, &["a", "b", "c"]));
    f.world.hold("b");
    f.start("order", json!({}), json!({"workflowId": "w"}));
    f.step();
    let other = f.other_tab(50);
    block_on(other.pause_workflow("w")).unwrap();
    f.world.release("b");
    f.step();
    assert_eq!(f.world.log(), vec!["a#1", "b#1"]);
    assert!(f.get("w").is_paused());
}

#[test]
fn only_a_running_workflow_can_be_paused() {
    let mut f = Fixture::new();
    f.register("wf", saga(&f.world, &["a", "b"]));
    let reason = |error: Error| match error {
        Error::InvalidInput { field, reason } => {
            assert_eq!(field, "id");
            reason
        }
        other => panic!("expected ERR_INVALID_INPUT, got {other:?}"),
    };
    assert!(reason(block_on(f.engine.pause_workflow("nope")).unwrap_err()).contains("no workflow"));
    assert!(
        reason(block_on(f.engine.resume_workflow("nope")).unwrap_err()).contains("no workflow")
    );
    f.start("wf", json!({}), json!({"workflowId": "done"}));
    f.step();
    assert!(reason(block_on(f.engine.pause_workflow("done")).unwrap_err()).contains("completed"));
    // Compensating: here (the run holds it) and from another instance.
    f.world.fail("b", vec![StepError::fatal("broken")]);
    f.world.hold("undo:a");
    f.start("wf", json!({}), json!({"workflowId": "undo"}));
    f.step();
    assert_eq!(f.get("undo").status, WorkflowStatus::Compensating);
    assert!(
        reason(block_on(f.engine.pause_workflow("undo")).unwrap_err()).contains("compensating")
    );
    let other = f.other_tab(50);
    assert!(reason(block_on(other.pause_workflow("undo")).unwrap_err()).contains("compensating"));
    assert!(!f.get("undo").paused);
    f.world.release("undo:a");
    f.step();
    assert_eq!(f.get("undo").status, WorkflowStatus::Compensated);
}

#[test]
fn a_paused_workflow_still_times_out_and_can_be_cancelled() {
    let mut f = Fixture::new();
    f.register("wf", saga(&f.world, &["a", "b"]));
    f.world.hold("a");
    let t0 = f.now();
    f.start("wf", json!({}), json!({"workflowId": "t", "timeout": 5000}));
    f.start("wf", json!({}), json!({"workflowId": "c"}));
    f.step();
    block_on(f.engine.pause_workflow("t")).unwrap();
    block_on(f.engine.pause_workflow("c")).unwrap();
    // One release lets one held step go.
    f.world.release("a");
    f.step();
    f.world.release("a");
    f.step();
    assert!(f.runs.is_empty());
    assert_eq!(f.world.count("a"), 2);
    assert_eq!(f.world.count("b"), 0);
    // Only the timeout is pending.
    assert_eq!(f.engine.next_wake_at(), Some(t0 + 5000));
    f.run_until_idle();
    let timed_out = f.get("t");
    assert_eq!(timed_out.status, WorkflowStatus::TimedOut);
    assert!(!timed_out.paused, "a rollback is not paused");
    assert_eq!(
        block_on(f.engine.cancel_workflow("c")).unwrap(),
        CancelOutcome::Requested
    );
    f.step();
    assert_eq!(f.get("c").status, WorkflowStatus::Cancelled);
    assert_eq!(f.world.count("b"), 0);
    assert_eq!(f.world.count("undo:a"), 2);
}

#[test]
fn the_observer_sees_each_finished_workflow_once() {
    let mut f = Fixture::new();
    f.register("wf", saga(&f.world, &["a", "b"]));
    let seen: Rc<RefCell<Vec<(String, WorkflowStatus)>>> = Rc::default();
    let log = Rc::clone(&seen);
    let engine = f.engine.clone();
    f.engine
        .set_observer(Rc::new(move |record: &WorkflowRecord| {
            // No borrow of the engine is held: it can be called from here.
            let _ = engine.next_wake_at();
            assert!(record.finished_at.is_some());
            log.borrow_mut().push((record.id.clone(), record.status));
        }));
    f.start("wf", json!({}), json!({"workflowId": "ok"}));
    f.step();
    f.world.fail("b", vec![StepError::fatal("broken")]);
    f.start("wf", json!({}), json!({"workflowId": "undone"}));
    f.step();
    f.world.fail("a", vec![StepError::fatal("broken")]);
    f.start("wf", json!({}), json!({"workflowId": "failed"}));
    f.step();
    f.world.hold("b");
    f.start("wf", json!({}), json!({"workflowId": "cancelled"}));
    f.step();
    block_on(f.engine.cancel_workflow("cancelled")).unwrap();
    f.step();
    f.run_until_idle();
    block_on(f.engine.cancel_workflow("cancelled")).unwrap();
    f.step();
    assert_eq!(
        *seen.borrow(),
        vec![
            ("ok".to_owned(), WorkflowStatus::Completed),
            ("undone".to_owned(), WorkflowStatus::Compensated),
            ("failed".to_owned(), WorkflowStatus::Failed),
            ("cancelled".to_owned(), WorkflowStatus::Cancelled),
        ]
    );
}

#[test]
fn a_row_written_before_the_paused_flag_reads_as_not_paused() {
    let f = Fixture::new();
    f.engine.register("wf", saga(&f.world, &["a"])).unwrap();
    let record = f.start("wf", json!({}), json!({"workflowId": "old"}));
    let mut row = record.to_row().unwrap();
    assert_eq!(row.fields.remove("paused"), Some(json!(false)));
    let read = WorkflowRecord::from_row(&row).unwrap();
    assert!(!read.paused && !read.is_paused());
    assert_eq!(read, record);
}

#[test]
fn only_a_finished_workflow_can_be_removed() {
    let mut f = Fixture::new();
    f.register("order", saga(&f.world, &["reserve", "charge"]));
    f.start("order", json!({}), json!({"workflowId": "o1"}));
    assert!(!block_on(f.engine.remove_finished("o1")).unwrap());
    assert_eq!(f.get("o1").status, WorkflowStatus::Running);
    assert!(!block_on(f.engine.remove_finished("nothing")).unwrap());
    f.step();
    assert_eq!(f.get("o1").status, WorkflowStatus::Completed);
    assert!(block_on(f.engine.remove_finished("o1")).unwrap());
    assert_eq!(block_on(f.engine.get_workflow("o1")).unwrap(), None);
    assert!(!block_on(f.engine.remove_finished("o1")).unwrap());
}
