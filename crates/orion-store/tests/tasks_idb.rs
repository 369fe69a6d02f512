//! The job queue's and the workflow engine's delivery guarantees on a real `IdbStore`, in a
//! dedicated worker in headless Chromium (`cargo xtask test` runs these with
//! wasm-bindgen-test-runner). The native tests of `orion_core::jobs` and `orion_core::workflows`
//! show the same on `MemStore`; here every read and write is an IndexedDB transaction that
//! completes on the event loop, and a "crash" drops the run futures, the queue or engine and the
//! database connection, and a new instance opens its own connection to the same database.
//!
//! Time is a `ManualClock` (leases expire when the test says so); the runs are polled by [`drive`]
//! with the test's own waker, so IndexedDB's completions wake them.
#![cfg(target_arch = "wasm32")]
// `#[wasm_bindgen_test]` functions are tests, but clippy does not know it: a failed unwrap here is a
// failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::{Poll, Waker};

use js_sys::{Function, Promise, Reflect};
use orion_core::clock::ManualClock;
use orion_core::embedding::LocalBoxFuture;
use orion_core::jobs::{
    JobContext, JobError, JobOptions, JobQueue, JobRecord, JobState, QueueConfig,
};
use orion_core::workflows::{
    CompensateReason, EngineConfig, Step, StepContext, StepError, StepStatus, WorkflowDefinition,
    WorkflowEngine, WorkflowOptions, WorkflowRecord, WorkflowStatus,
};
use orion_core::Store;
use orion_store::IdbStore;
use serde_json::{json, Value};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

mod common;
use common::fresh;

wasm_bindgen_test_configure!(run_in_dedicated_worker);

/// The lease of the queues and engines here (ms on the manual clock).
const LEASE_MS: u64 = 10_000;
/// Real time after which [`drive`] gives up on runs that stopped making progress.
const STUCK_MS: i32 = 20_000;
const T0: u64 = 1_000_000;

/// Resolves after `ms` real milliseconds (the worker's `setTimeout`).
fn sleep(ms: i32) -> JsFuture {
    let promise = Promise::new(&mut |resolve, _reject| {
        let global = js_sys::global();
        let set_timeout: Function = Reflect::get(&global, &JsValue::from_str("setTimeout"))
            .unwrap()
            .unchecked_into();
        set_timeout
            .call2(&global, &resolve, &JsValue::from(ms))
            .unwrap();
    });
    JsFuture::from(promise)
}

/// Polls every run (with this task's waker, so that IndexedDB's completions wake them) until
/// `until()` holds after a round of polls or no run is left; returns the outputs of the runs that
/// finished, in the order they finished, and leaves the others in `runs`. Panics if nothing
/// settles within [`STUCK_MS`] of real time (a held handler nobody released, or a lost wake-up).
async fn drive<R: Future + Unpin>(runs: &mut Vec<R>, until: impl Fn() -> bool) -> Vec<R::Output> {
    let mut finished = Vec::new();
    let mut stuck = pin!(sleep(STUCK_MS));
    poll_fn(|cx| {
        let mut i = 0;
        while i < runs.len() {
            match Pin::new(&mut runs[i]).poll(cx) {
                Poll::Ready(output) => {
                    finished.push(output);
                    runs.remove(i);
                }
                Poll::Pending => i += 1,
            }
        }
        if runs.is_empty() || until() {
            return Poll::Ready(());
        }
        assert!(
            stuck.as_mut().poll(cx).is_pending(),
            "{} runs made no progress for {STUCK_MS} ms",
            runs.len()
        );
        Poll::Pending
    })
    .await;
    finished
}

/// Drives every run to its end.
async fn drive_all<R: Future + Unpin>(runs: &mut Vec<R>) -> Vec<R::Output> {
    drive(runs, || false).await
}

/// A new connection to the database `name`, as a restarted worker opens it.
async fn connect(name: &str) -> Rc<dyn Store> {
    Rc::new(IdbStore::open(name).await.unwrap())
}

/// Gates that held handlers and steps wait on, keyed by name; each release lets one waiting
/// attempt through.
#[derive(Default)]
struct Gates {
    released: RefCell<HashMap<String, usize>>,
    wakers: RefCell<Vec<Waker>>,
}

impl Gates {
    fn release(&self, key: &str) {
        *self
            .released
            .borrow_mut()
            .entry(key.to_owned())
            .or_default() += 1;
        for waker in self.wakers.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    /// Resolves once `key` is released (taking the release).
    async fn pass(&self, key: &str) {
        poll_fn(|cx| {
            let mut released = self.released.borrow_mut();
            match released.get_mut(key) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    Poll::Ready(())
                }
                _ => {
                    self.wakers.borrow_mut().push(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await;
    }
}

// ---------------------------------------------------------------------------------------------
// Jobs
// ---------------------------------------------------------------------------------------------

/// What the job handlers did. A job's `data.mode` says what its handler does: `hold` waits until
/// the test releases the job, `effect` applies a side effect keyed by the idempotency key (at most
/// once per key), `fail-once` fails retryably at its first attempt; all return `{attempt}`.
#[derive(Default)]
struct Jobs {
    /// `(job id, attempt, idempotency key)` of every handler call, in order.
    calls: RefCell<Vec<(String, u32, String)>>,
    /// Jobs whose handler is running now.
    running: RefCell<HashSet<String>>,
    /// Jobs seen running twice at once.
    violations: RefCell<Vec<String>>,
    /// Idempotency keys whose side effect was applied.
    effects: RefCell<Vec<String>>,
    gates: Gates,
}

/// Takes a job off [`Jobs::running`] however its handler ends (returns or is dropped).
struct Running(Rc<Jobs>, String);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.borrow_mut().remove(&self.1);
    }
}

impl Jobs {
    fn calls_of(&self, id: &str) -> Vec<(u32, String)> {
        self.calls
            .borrow()
            .iter()
            .filter(|(job, ..)| job == id)
            .map(|(_, attempt, key)| (*attempt, key.clone()))
            .collect()
    }

    fn call_count(&self) -> usize {
        self.calls.borrow().len()
    }

    async fn handle(self: Rc<Self>, ctx: JobContext) -> Result<Value, JobError> {
        self.calls
            .borrow_mut()
            .push((ctx.id.clone(), ctx.attempt, ctx.idempotency_key.clone()));
        if !self.running.borrow_mut().insert(ctx.id.clone()) {
            self.violations
                .borrow_mut()
                .push(format!("{} runs twice at once", ctx.id));
        }
        let _running = Running(Rc::clone(&self), ctx.id.clone());
        match ctx.data["mode"].as_str().unwrap_or("ok") {
            "hold" => self.gates.pass(&ctx.id).await,
            "effect" => {
                let mut effects = self.effects.borrow_mut();
                if !effects.contains(&ctx.idempotency_key) {
                    effects.push(ctx.idempotency_key.clone());
                }
            }
            "fail-once" if ctx.attempt == 1 => return Err(JobError::retryable("flaky")),
            _ => {}
        }
        Ok(json!({"attempt": ctx.attempt}))
    }
}

/// A queue instance on `store` (seed `seed` names its leases) running queue `q` with `world`'s
/// handler, `concurrency` at a time.
async fn open_queue(
    store: Rc<dyn Store>,
    clock: &ManualClock,
    seed: u64,
    world: &Rc<Jobs>,
    concurrency: usize,
) -> JobQueue {
    let config = QueueConfig {
        lease_ms: LEASE_MS,
        seed,
        ..QueueConfig::default()
    };
    let queue = JobQueue::open(store, clock.shared(), config).await.unwrap();
    let handler_world = Rc::clone(world);
    queue
        .register("q", concurrency, move |ctx| {
            Box::pin(Rc::clone(&handler_world).handle(ctx))
        })
        .unwrap();
    queue
}

async fn enqueue(queue: &JobQueue, mode: &str, options: Value) -> JobRecord {
    let options = JobOptions::from_json(options).unwrap();
    queue
        .enqueue("q", json!({"mode": mode}), options)
        .await
        .unwrap()
}

async fn job(queue: &JobQueue, id: &str) -> JobRecord {
    queue.get(id).await.unwrap().unwrap()
}

fn ids(runs: &[orion_core::jobs::JobRun]) -> Vec<String> {
    runs.iter().map(|run| run.id.clone()).collect()
}

/// Within an instance a job never runs twice at once and the concurrency holds; a second instance
/// (its own connection, its index stale: it opened before the first started anything) starts only
/// the jobs still waiting in the database, and while the first renews its leases through
/// IndexedDB the second takes nothing back, even at the original lease's expiry.
#[wasm_bindgen_test]
async fn no_job_runs_twice_at_once_within_or_across_instances() {
    let world = Rc::new(Jobs::default());
    let clock = ManualClock::new(T0);
    let store = fresh("jobs-once").await.unwrap();
    let name = store.name();
    let a = open_queue(Rc::new(store), &clock, 1, &world, 2).await;
    let mut jobs = Vec::new();
    for _ in 0..5 {
        jobs.push(enqueue(&a, "hold", json!({})).await.id);
    }
    // Opened now, B's index has all five waiting.
    let b = open_queue(connect(&name).await, &clock, 2, &world, 5).await;

    let mut a_runs = a.tick().await.unwrap();
    assert_eq!(ids(&a_runs), jobs[..2], "A starts its concurrency, FIFO");
    drive(&mut a_runs, || world.call_count() == 2).await;
    for _ in 0..3 {
        let more = a.tick().await.unwrap();
        assert!(more.is_empty(), "A is at its concurrency: {:?}", ids(&more));
        drive(&mut a_runs, || true).await;
    }
    assert_eq!(a_runs.len(), 2);

    // B's stale index picks all five; it re-reads them and starts only the three still waiting.
    let mut b_runs = b.tick().await.unwrap();
    assert_eq!(ids(&b_runs), jobs[2..], "B starts only the waiting jobs");
    drive(&mut b_runs, || world.call_count() == 5).await;
    assert!(b.tick().await.unwrap().is_empty());
    for id in &jobs {
        let record = job(&a, id).await;
        assert_eq!(record.state, JobState::Active, "{id}");
        assert_eq!(record.lease_until, Some(T0 + LEASE_MS), "{id}");
    }

    // Half a lease on, each instance renews its own leases.
    clock.advance(LEASE_MS / 2);
    assert!(a.tick().await.unwrap().is_empty());
    assert!(b.tick().await.unwrap().is_empty());
    for id in &jobs {
        let record = job(&b, id).await;
        assert_eq!(
            record.lease_until,
            Some(T0 + LEASE_MS / 2 + LEASE_MS),
            "{id}"
        );
    }
    // At the first lease's expiry neither takes back the other's (renewed) jobs.
    clock.set(T0 + LEASE_MS);
    assert!(a.tick().await.unwrap().is_empty());
    assert!(b.tick().await.unwrap().is_empty());
    assert_eq!(world.call_count(), 5);
    assert_eq!(world.running.borrow().len(), 5);

    for id in &jobs {
        world.gates.release(id);
    }
    let mut outcomes = drive_all(&mut a_runs).await;
    outcomes.extend(drive_all(&mut b_runs).await);
    assert_eq!(outcomes.len(), 5);
    for outcome in outcomes {
        assert_eq!(outcome.unwrap(), Some(JobState::Completed));
    }
    assert!(a.tick().await.unwrap().is_empty());
    assert!(b.tick().await.unwrap().is_empty());
    for id in &jobs {
        let record = job(&a, id).await;
        assert_eq!(record.state, JobState::Completed, "{id}");
        assert_eq!(record.attempts_made, 1, "{id}");
        assert_eq!(record.stalled_count, 0, "{id}");
        assert_eq!(record.lease_until, None, "{id}");
        assert_eq!(world.calls_of(id), vec![(1, id.clone())], "{id} ran once");
    }
    assert!(
        world.violations.borrow().is_empty(),
        "{:?}",
        world.violations.borrow()
    );
}

/// A worker dies while its job is active (the run, the queue and the connection are dropped): a
/// new instance on a new connection takes the job back only once the lease has expired, runs it
/// as attempt 2 with the same idempotency key, and completes it.
#[wasm_bindgen_test]
async fn a_job_whose_worker_died_is_retried_after_its_lease() {
    let world = Rc::new(Jobs::default());
    let clock = ManualClock::new(T0);
    let store = fresh("jobs-died").await.unwrap();
    let name = store.name();
    let queue = open_queue(Rc::new(store), &clock, 1, &world, 1).await;
    let id = enqueue(&queue, "hold", json!({})).await.id;
    let mut runs = queue.tick().await.unwrap();
    drive(&mut runs, || world.call_count() == 1).await;
    let active = job(&queue, &id).await;
    assert_eq!(active.state, JobState::Active);
    assert_eq!(active.lease_until, Some(T0 + LEASE_MS));
    assert_eq!(active.attempts_made, 0);

    // The worker dies.
    drop(runs);
    drop(queue);
    assert!(world.running.borrow().is_empty(), "the handler was dropped");
    let queue = open_queue(connect(&name).await, &clock, 2, &world, 1).await;
    assert_eq!(queue.next_wake_at(), Some(T0 + LEASE_MS));
    clock.set(T0 + LEASE_MS - 1);
    assert!(queue.tick().await.unwrap().is_empty(), "still leased");
    assert_eq!(job(&queue, &id).await.state, JobState::Active);

    clock.set(T0 + LEASE_MS);
    let mut runs = queue.tick().await.unwrap();
    assert_eq!(ids(&runs), vec![id.clone()], "taken back and run again");
    drive(&mut runs, || world.call_count() == 2).await;
    let retried = job(&queue, &id).await;
    assert_eq!(retried.state, JobState::Active);
    assert_eq!(
        retried.attempts_made, 1,
        "the lost run counts as an attempt"
    );
    assert_eq!(retried.stalled_count, 1);
    assert_eq!(retried.lease_until, Some(T0 + 2 * LEASE_MS));

    world.gates.release(&id);
    let outcomes = drive_all(&mut runs).await;
    assert!(matches!(
        outcomes.as_slice(),
        [Ok(Some(JobState::Completed))]
    ));
    let done = job(&queue, &id).await;
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(done.attempts_made, 2);
    assert_eq!(done.result, Some(json!({"attempt": 2})));
    assert_eq!(
        world.calls_of(&id),
        vec![(1, id.clone()), (2, id.clone())],
        "attempts 1 and 2, with the same idempotency key"
    );
    assert!(world.violations.borrow().is_empty());
}

/// The handler finished (its side effect applied) but its outcome was never stored (the worker
/// died as the transaction was to commit, here a write the store refuses): the job stays active in
/// the database, is taken back at the lease's expiry by the same instance, runs exactly once more
/// with the same idempotency key (so the side effect is not applied again) and is completed;
/// nothing runs after that.
#[wasm_bindgen_test]
async fn a_crash_between_handler_finished_and_state_saved_completes_the_job_once_more() {
    let world = Rc::new(Jobs::default());
    let clock = ManualClock::new(T0);
    let store = Rc::new(Counting {
        inner: fresh("jobs-crash").await.unwrap(),
        writes: std::cell::Cell::new(0),
        kill: std::cell::Cell::new(false),
    });
    let queue = open_queue(store.clone(), &clock, 1, &world, 1).await;
    let id = enqueue(&queue, "effect", json!({})).await.id;
    let mut runs = queue.tick().await.unwrap();
    store.kill.set(true);
    let finished = drive_all(&mut runs).await;
    assert!(
        matches!(finished.as_slice(), [Err(orion_core::Error::Store(_))]),
        "{finished:?}"
    );
    store.kill.set(false);
    assert_eq!(*world.effects.borrow(), vec![id.clone()]);
    let stuck = job(&queue, &id).await;
    assert_eq!(stuck.state, JobState::Active, "the outcome was never saved");
    assert_eq!(stuck.attempts_made, 0);
    assert_eq!(stuck.result, None);

    assert!(queue.tick().await.unwrap().is_empty(), "still leased");
    clock.advance(LEASE_MS - 1);
    assert!(queue.tick().await.unwrap().is_empty(), "still leased");
    clock.advance(1);
    let mut runs = queue.tick().await.unwrap();
    assert_eq!(ids(&runs), vec![id.clone()], "taken back after the lease");
    let outcomes = drive_all(&mut runs).await;
    assert!(matches!(
        outcomes.as_slice(),
        [Ok(Some(JobState::Completed))]
    ));
    let done = job(&queue, &id).await;
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(done.attempts_made, 2);
    assert_eq!(done.stalled_count, 1);
    assert_eq!(done.result, Some(json!({"attempt": 2})));
    assert_eq!(
        world.calls_of(&id),
        vec![(1, id.clone()), (2, id.clone())],
        "one more run, with the same idempotency key"
    );
    assert_eq!(*world.effects.borrow(), vec![id.clone()], "the effect once");

    // Completed for good: no further run, however long we wait.
    clock.advance(10 * LEASE_MS);
    assert!(queue.tick().await.unwrap().is_empty());
    assert_eq!(queue.next_wake_at(), None);
    assert_eq!(world.call_count(), 2);
}

/// An instance freezes mid-run (no tick renews its lease); after the lease a second instance on
/// its own connection takes the job over and completes it. When the frozen handler then finishes,
/// its run sees the job is no longer its own and writes nothing: the job stays completed with the
/// second run's result.
#[wasm_bindgen_test]
async fn a_run_whose_lease_was_taken_over_does_not_write_its_outcome() {
    let world = Rc::new(Jobs::default());
    let clock = ManualClock::new(T0);
    let store = fresh("jobs-takeover").await.unwrap();
    let name = store.name();
    let frozen = open_queue(Rc::new(store), &clock, 1, &world, 1).await;
    let id = enqueue(&frozen, "hold", json!({})).await.id;
    let mut frozen_runs = frozen.tick().await.unwrap();
    drive(&mut frozen_runs, || world.call_count() == 1).await;

    let other = open_queue(connect(&name).await, &clock, 2, &world, 1).await;
    clock.set(T0 + LEASE_MS - 1);
    assert!(other.tick().await.unwrap().is_empty(), "still leased");
    clock.set(T0 + LEASE_MS);
    let mut other_runs = other.tick().await.unwrap();
    assert_eq!(ids(&other_runs), vec![id.clone()]);
    drive(&mut other_runs, || world.call_count() == 2).await;
    world.gates.release(&id);
    let outcomes = drive_all(&mut other_runs).await;
    assert!(matches!(
        outcomes.as_slice(),
        [Ok(Some(JobState::Completed))]
    ));
    let done = job(&other, &id).await;
    assert_eq!(done.result, Some(json!({"attempt": 2})));

    // The frozen run wakes up and finishes its attempt 1.
    world.gates.release(&id);
    let stale = drive_all(&mut frozen_runs).await;
    assert!(matches!(stale.as_slice(), [Ok(None)]), "{stale:?}");
    let after = job(&frozen, &id).await;
    assert_eq!(after, done, "the stale run wrote nothing");
    assert_eq!(after.state, JobState::Completed);
    assert_eq!(after.attempts_made, 2);
    assert_eq!(
        world.calls_of(&id),
        vec![(1, id.clone()), (2, id.clone())],
        "the same idempotency key for both"
    );
    assert!(frozen.tick().await.unwrap().is_empty());
    assert!(other.tick().await.unwrap().is_empty());
    assert_eq!(world.call_count(), 2);
}

/// A handler's retryable error runs the job again with the same idempotency key.
#[wasm_bindgen_test]
async fn a_retried_job_keeps_its_idempotency_key() {
    let world = Rc::new(Jobs::default());
    let clock = ManualClock::new(T0);
    let store = fresh("jobs-retry").await.unwrap();
    let queue = open_queue(Rc::new(store), &clock, 1, &world, 1).await;
    let id = enqueue(&queue, "fail-once", json!({"attempts": 3}))
        .await
        .id;
    let mut runs = queue.tick().await.unwrap();
    let outcomes = drive_all(&mut runs).await;
    assert!(matches!(outcomes.as_slice(), [Ok(Some(JobState::Waiting))]));
    let waiting = job(&queue, &id).await;
    assert_eq!(waiting.attempts_made, 1);
    assert_eq!(
        waiting.error.map(|e| (e.message, e.retryable)),
        Some(("flaky".into(), true))
    );
    let mut runs = queue.tick().await.unwrap();
    let outcomes = drive_all(&mut runs).await;
    assert!(matches!(
        outcomes.as_slice(),
        [Ok(Some(JobState::Completed))]
    ));
    let done = job(&queue, &id).await;
    assert_eq!(done.attempts_made, 2);
    assert_eq!(done.error, None);
    assert_eq!(world.calls_of(&id), vec![(1, id.clone()), (2, id.clone())]);
    assert!(queue.tick().await.unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Workflows
// ---------------------------------------------------------------------------------------------

/// What the steps did and will do. Keys are step names, `undo:<step>` for compensations.
#[derive(Default)]
struct Steps {
    /// `key#attempt` of every attempt, in order.
    log: RefCell<Vec<String>>,
    /// `(key, idempotency key)` of every attempt, in order.
    keys: RefCell<Vec<(String, String)>>,
    /// Errors the next attempts of a key return, in order.
    failures: RefCell<HashMap<String, VecDeque<StepError>>>,
    /// Keys whose attempts wait at a gate until released.
    holds: RefCell<HashSet<String>>,
    gates: Gates,
}

impl Steps {
    fn log(&self) -> Vec<String> {
        self.log.borrow().clone()
    }

    fn logged(&self, entry: &str) -> bool {
        self.log.borrow().iter().any(|e| e == entry)
    }

    fn keys_of(&self, key: &str) -> Vec<String> {
        self.keys
            .borrow()
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, idempotency)| idempotency.clone())
            .collect()
    }

    async fn act(self: Rc<Self>, key: String, ctx: StepContext) -> Result<Value, StepError> {
        self.log.borrow_mut().push(format!("{key}#{}", ctx.attempt));
        self.keys
            .borrow_mut()
            .push((key.clone(), ctx.idempotency_key.clone()));
        if self.holds.borrow().contains(&key) {
            self.gates.pass(&key).await;
        }
        if let Some(error) = self
            .failures
            .borrow_mut()
            .get_mut(&key)
            .and_then(VecDeque::pop_front)
        {
            return Err(error);
        }
        let mut seen: Vec<&String> = ctx.results.keys().collect();
        seen.sort();
        Ok(json!({"step": key, "attempt": ctx.attempt, "seen": seen}))
    }
}

/// Steps `names`, each with a compensation, all scripted by `world`.
fn saga(world: &Rc<Steps>, names: &[&str]) -> WorkflowDefinition {
    names
        .iter()
        .fold(WorkflowDefinition::new(), |definition, name| {
            let run_world = Rc::clone(world);
            let undo_world = Rc::clone(world);
            let key = (*name).to_owned();
            let undo = format!("undo:{name}");
            definition.step(
                Step::new(*name, move |ctx| {
                    Box::pin(Rc::clone(&run_world).act(key.clone(), ctx))
                })
                .compensate(move |ctx| Box::pin(Rc::clone(&undo_world).act(undo.clone(), ctx))),
            )
        })
}

async fn open_engine(
    store: Rc<dyn Store>,
    clock: &ManualClock,
    seed: u64,
    definition: &WorkflowDefinition,
) -> WorkflowEngine {
    let config = EngineConfig {
        lease_ms: LEASE_MS,
        seed,
        ..EngineConfig::default()
    };
    let engine = WorkflowEngine::open(store, clock.shared(), config)
        .await
        .unwrap();
    engine.register("order", definition.clone()).unwrap();
    engine
}

async fn start(engine: &WorkflowEngine, options: Value) -> WorkflowRecord {
    let options = WorkflowOptions::from_json(options).unwrap();
    engine
        .start_workflow("order", json!({"sku": 7}), options)
        .await
        .unwrap()
}

async fn workflow(engine: &WorkflowEngine, id: &str) -> WorkflowRecord {
    engine.get_workflow(id).await.unwrap().unwrap()
}

fn statuses(record: &WorkflowRecord) -> Vec<StepStatus> {
    record.steps.iter().map(|step| step.status).collect()
}

fn attempts(record: &WorkflowRecord) -> Vec<u32> {
    record.steps.iter().map(|step| step.attempts).collect()
}

/// The engine instance is dropped (with its run and its connection) while step `b` runs; a new
/// instance on a new connection resumes at the lease's expiry from the last completed step: `a`
/// never runs again, `b` runs as attempt 2 with the same idempotency key, and `c` sees `a`'s
/// result read back from IndexedDB.
#[wasm_bindgen_test]
async fn a_workflow_resumes_from_its_last_completed_step_on_a_new_engine() {
    let world = Rc::new(Steps::default());
    world.holds.borrow_mut().insert("b".into());
    let definition = saga(&world, &["a", "b", "c"]);
    let clock = ManualClock::new(T0);
    let store = fresh("workflow-resume").await.unwrap();
    let name = store.name();
    let engine = open_engine(Rc::new(store), &clock, 1, &definition).await;
    start(&engine, json!({"workflowId": "w"})).await;
    let mut runs = engine.tick().await.unwrap();
    assert_eq!(runs.len(), 1);
    drive(&mut runs, || world.logged("b#1")).await;
    assert_eq!(world.log(), vec!["a#1", "b#1"]);
    let mid = workflow(&engine, "w").await;
    assert_eq!(mid.status, WorkflowStatus::Running);
    assert_eq!(
        statuses(&mid),
        vec![
            StepStatus::Completed,
            StepStatus::Running,
            StepStatus::Pending
        ]
    );
    assert_eq!(attempts(&mid), vec![1, 1, 0]);
    assert_eq!(mid.cursor, 1);
    assert_eq!(mid.lease_until, Some(T0 + LEASE_MS));
    let a_result = mid.step("a").and_then(|s| s.result.clone()).unwrap();

    // The tab dies mid-step.
    drop(runs);
    drop(engine);
    world.holds.borrow_mut().clear();
    let engine = open_engine(connect(&name).await, &clock, 2, &definition).await;
    assert_eq!(engine.next_wake_at(), Some(T0 + LEASE_MS));
    clock.set(T0 + LEASE_MS - 1);
    assert!(engine.tick().await.unwrap().is_empty(), "still leased");
    clock.set(T0 + LEASE_MS);
    let mut runs = engine.tick().await.unwrap();
    assert_eq!(runs.len(), 1);
    let outcomes = drive_all(&mut runs).await;
    assert!(
        matches!(outcomes.as_slice(), [Ok(Some(WorkflowStatus::Completed))]),
        "{outcomes:?}"
    );
    assert_eq!(world.log(), vec!["a#1", "b#1", "b#2", "c#1"]);
    assert_eq!(world.keys_of("a"), vec!["w/a/0"]);
    assert_eq!(world.keys_of("b"), vec!["w/b/0", "w/b/0"], "same key");
    let done = workflow(&engine, "w").await;
    assert_eq!(done.status, WorkflowStatus::Completed);
    assert_eq!(statuses(&done), vec![StepStatus::Completed; 3]);
    assert_eq!(attempts(&done), vec![1, 2, 1]);
    assert_eq!(
        done.step("a").and_then(|s| s.result.clone()),
        Some(a_result)
    );
    assert_eq!(
        done.result,
        Some(json!({"step": "c", "attempt": 1, "seen": ["a", "b"]}))
    );
    assert_eq!(done.lease_until, None);
    assert!(engine.tick().await.unwrap().is_empty());
    assert_eq!(engine.next_wake_at(), None);
    assert_eq!(world.log().len(), 4);
}

/// Step `b` returned but the instance died before its result was stored: the row still says `b`
/// is running (and `a` completed), so the next instance runs `b` once more, with the same key, and
/// never `a`.
#[wasm_bindgen_test]
async fn a_step_that_finished_unsaved_runs_once_more_and_no_completed_step_reruns() {
    let world = Rc::new(Steps::default());
    let definition = saga(&world, &["a", "b", "c"]);
    let clock = ManualClock::new(T0);
    let store = fresh("workflow-unsaved").await.unwrap();
    let name = store.name();
    let engine = open_engine(Rc::new(store), &clock, 1, &definition).await;
    start(&engine, json!({"workflowId": "w"})).await;
    let mut runs = engine.tick().await.unwrap();
    // Stop polling in the round where `b` returned.
    let finished = drive(&mut runs, || world.logged("b#1")).await;
    assert!(finished.is_empty());
    drop(runs);
    drop(engine);

    let engine = open_engine(connect(&name).await, &clock, 2, &definition).await;
    let mid = workflow(&engine, "w").await;
    assert_eq!(
        statuses(&mid),
        vec![
            StepStatus::Completed,
            StepStatus::Running,
            StepStatus::Pending
        ]
    );
    assert_eq!(mid.step("b").and_then(|s| s.result.clone()), None);
    assert!(engine.tick().await.unwrap().is_empty(), "still leased");
    clock.set(mid.lease_until.unwrap());
    let mut runs = engine.tick().await.unwrap();
    let outcomes = drive_all(&mut runs).await;
    assert!(matches!(
        outcomes.as_slice(),
        [Ok(Some(WorkflowStatus::Completed))]
    ));
    assert_eq!(world.log(), vec!["a#1", "b#1", "b#2", "c#1"]);
    assert_eq!(world.keys_of("b"), vec!["w/b/0", "w/b/0"]);
    let done = workflow(&engine, "w").await;
    assert_eq!(done.status, WorkflowStatus::Completed);
    assert_eq!(attempts(&done), vec![1, 2, 1]);
}

/// A non-retryable failure is not retried (although the policy allows 5 attempts) and the
/// completed steps are compensated newest first, each with its own key and its step's result.
#[wasm_bindgen_test]
async fn a_non_retryable_failure_compensates_the_completed_steps_in_reverse() {
    let world = Rc::new(Steps::default());
    world
        .failures
        .borrow_mut()
        .insert("ship".into(), [StepError::fatal("no courier")].into());
    let definition = saga(&world, &["reserve", "charge", "notify", "ship"]);
    let clock = ManualClock::new(T0);
    let store = fresh("workflow-saga").await.unwrap();
    let engine = open_engine(Rc::new(store), &clock, 1, &definition).await;
    start(
        &engine,
        json!({"workflowId": "w", "retry": {"attempts": 5}}),
    )
    .await;
    let mut runs = engine.tick().await.unwrap();
    let outcomes = drive_all(&mut runs).await;
    assert!(
        matches!(outcomes.as_slice(), [Ok(Some(WorkflowStatus::Compensated))]),
        "{outcomes:?}"
    );
    assert_eq!(
        world.log(),
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
    assert_eq!(world.keys_of("undo:charge"), vec!["w/charge/0/compensate"]);
    let done = workflow(&engine, "w").await;
    assert_eq!(done.status, WorkflowStatus::Compensated);
    assert_eq!(done.compensate_reason, Some(CompensateReason::Failed));
    assert_eq!(
        statuses(&done),
        vec![
            StepStatus::Compensated,
            StepStatus::Compensated,
            StepStatus::Compensated,
            StepStatus::Failed
        ]
    );
    assert_eq!(attempts(&done), vec![1, 1, 1, 1]);
    let compensations: Vec<u32> = done.steps.iter().map(|s| s.compensation_attempts).collect();
    assert_eq!(compensations, vec![1, 1, 1, 0]);
    assert!(done.error.unwrap().message.contains("no courier"));
    assert!(engine.tick().await.unwrap().is_empty());
    assert_eq!(world.log().len(), 7);
}

/// The instance dies during a compensation; the next one, on a new connection, finishes the
/// compensations in reverse without re-running the one that had finished (`undo:notify`) or any
/// step.
#[wasm_bindgen_test]
async fn a_crash_during_compensation_resumes_without_rerunning_finished_compensations() {
    let world = Rc::new(Steps::default());
    world
        .failures
        .borrow_mut()
        .insert("ship".into(), [StepError::fatal("no courier")].into());
    world.holds.borrow_mut().insert("undo:charge".into());
    let definition = saga(&world, &["reserve", "charge", "notify", "ship"]);
    let clock = ManualClock::new(T0);
    let store = fresh("workflow-saga-crash").await.unwrap();
    let name = store.name();
    let engine = open_engine(Rc::new(store), &clock, 1, &definition).await;
    start(&engine, json!({"workflowId": "w"})).await;
    let mut runs = engine.tick().await.unwrap();
    drive(&mut runs, || world.logged("undo:charge#1")).await;
    let mid = workflow(&engine, "w").await;
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
    drop(runs);
    drop(engine);
    world.holds.borrow_mut().clear();

    let engine = open_engine(connect(&name).await, &clock, 2, &definition).await;
    assert!(engine.tick().await.unwrap().is_empty(), "still leased");
    clock.set(mid.lease_until.unwrap());
    let mut runs = engine.tick().await.unwrap();
    let outcomes = drive_all(&mut runs).await;
    assert!(
        matches!(outcomes.as_slice(), [Ok(Some(WorkflowStatus::Compensated))]),
        "{outcomes:?}"
    );
    assert_eq!(
        world.log(),
        vec![
            "reserve#1",
            "charge#1",
            "notify#1",
            "ship#1",
            "undo:notify#1",
            "undo:charge#1",
            "undo:charge#2",
            "undo:reserve#1"
        ]
    );
    assert_eq!(
        world.keys_of("undo:charge"),
        vec!["w/charge/0/compensate", "w/charge/0/compensate"]
    );
    let done = workflow(&engine, "w").await;
    assert_eq!(done.status, WorkflowStatus::Compensated);
    let compensations: Vec<u32> = done.steps.iter().map(|s| s.compensation_attempts).collect();
    assert_eq!(compensations, vec![1, 2, 1, 0]);
    assert_eq!(attempts(&done), vec![1, 1, 1, 1]);
    assert!(engine.tick().await.unwrap().is_empty());
}

// A renewal must not put a finished job back to `active` (found here: MemStore cannot show it).

/// IdbStore, counting the writes placed through it (IdbStore places a write's requests when the
/// write is first polled, so IndexedDB commits writes in the order they were counted), and
/// refusing guarded writes (a job's start or outcome) while `kill` is set.
struct Counting {
    inner: IdbStore,
    writes: std::cell::Cell<usize>,
    kill: std::cell::Cell<bool>,
}

impl Store for Counting {
    fn get(
        &self,
        table: orion_core::Table,
        ids: Vec<String>,
    ) -> LocalBoxFuture<'_, orion_core::error::Result<Vec<Option<orion_core::Row>>>> {
        self.inner.get(table, ids)
    }
    fn scan(
        &self,
        table: orion_core::Table,
        scan: orion_core::Scan,
    ) -> LocalBoxFuture<'_, orion_core::error::Result<Vec<orion_core::Row>>> {
        self.inner.scan(table, scan)
    }
    fn count(
        &self,
        table: orion_core::Table,
    ) -> LocalBoxFuture<'_, orion_core::error::Result<u64>> {
        self.inner.count(table)
    }
    fn write(
        &self,
        ops: Vec<orion_core::WriteOp>,
    ) -> LocalBoxFuture<'_, orion_core::error::Result<()>> {
        self.writes.set(self.writes.get() + 1);
        self.inner.write(ops)
    }
    fn patch(
        &self,
        table: orion_core::Table,
        patches: Vec<(String, serde_json::Map<String, Value>)>,
    ) -> LocalBoxFuture<'_, orion_core::error::Result<()>> {
        self.inner.patch(table, patches)
    }
    fn snapshot(
        &self,
        tables: Vec<orion_core::Table>,
    ) -> LocalBoxFuture<'_, orion_core::error::Result<orion_core::store::Snapshot>> {
        self.inner.snapshot(tables)
    }
    fn write_guarded(
        &self,
        table: orion_core::Table,
        changes: Vec<orion_core::Guarded>,
        then: Vec<orion_core::WriteOp>,
    ) -> LocalBoxFuture<'_, orion_core::error::Result<Vec<orion_core::Guard>>> {
        if self.kill.get() {
            return Box::pin(std::future::ready(Err(orion_core::Error::Store(
                "killed".into(),
            ))));
        }
        self.writes.set(self.writes.get() + 1);
        self.inner.write_guarded(table, changes, then)
    }
}

/// A tick that renews leases while a run's outcome write is in flight must not write the job
/// back `active`: the run reports `Completed`, so the row must say so, and a later instance must
/// not run the job again.
#[wasm_bindgen_test]
async fn a_lease_renewal_racing_an_outcome_write_does_not_revert_the_job() {
    let world = Rc::new(Jobs::default());
    let clock = ManualClock::new(T0);
    let inner = fresh("jobs-renewal-race").await.unwrap();
    let name = inner.name();
    let store = Rc::new(Counting {
        inner,
        writes: std::cell::Cell::new(0),
        kill: std::cell::Cell::new(false),
    });
    let queue = open_queue(store.clone(), &clock, 1, &world, 1).await;
    let id = enqueue(&queue, "effect", json!({})).await.id;
    let mut runs = queue.tick().await.unwrap();
    // Half a lease later a renewal is due (the platform's timer tick at next_wake_at).
    clock.advance(LEASE_MS / 2);
    assert_eq!(queue.next_wake_at(), Some(T0 + LEASE_MS / 2));
    // Poll the run until its outcome write is placed (the handler returns at once).
    let before = store.writes.get();
    drive(&mut runs, || store.writes.get() > before).await;
    // The timer tick runs while that write is in flight: it renews the job's lease.
    assert!(queue.tick().await.unwrap().is_empty());
    let outcomes = drive_all(&mut runs).await;
    assert!(matches!(
        outcomes.as_slice(),
        [Ok(Some(JobState::Completed))]
    ));
    assert_eq!(queue.counts().all.completed, 1);
    let stored = job(&queue, &id).await;
    // At HEAD: state Active, attemptsMade 0, result None, leaseUntil T0 + 15000, runId set.
    assert_eq!(stored.state, JobState::Completed, "{stored:?}");
    // ... and a new instance after that lease then runs the completed job again (attempt 2).
    drop(queue);
    let queue = open_queue(connect(&name).await, &clock, 2, &world, 1).await;
    clock.advance(LEASE_MS);
    let mut again = queue.tick().await.unwrap();
    drive_all(&mut again).await;
    assert_eq!(world.calls_of(&id), vec![(1, id.clone())], "ran once");
}
