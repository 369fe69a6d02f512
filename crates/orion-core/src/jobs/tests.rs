use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::clock::{Clock, ManualClock};
use crate::embedding::LocalBoxFuture;
use crate::error::{Error, Result};
use crate::store::conformance::{block_on, WakeFlag};
use crate::store::{MemStore, Scan, Snapshot, Store, Table, WriteOp};

/// What the test handlers did.
#[derive(Default)]
struct World {
    /// `(id, attempt, idempotency key, time)` of every handler call.
    calls: RefCell<Vec<(String, u32, String, u64)>>,
    /// Jobs whose handler is running, per queue.
    running: RefCell<HashMap<String, HashSet<String>>>,
    /// Concurrency limits the handlers check (per queue).
    limits: RefCell<HashMap<String, usize>>,
    /// Broken invariants, as text.
    violations: RefCell<Vec<String>>,
    /// Results for `hold` jobs, by id.
    releases: RefCell<HashMap<String, std::result::Result<Value, JobError>>>,
    /// Signals `watch` handlers observed.
    observed: RefCell<Vec<(String, CancelReason)>>,
    /// While set, `flaky` jobs fail fatally.
    flaky: Cell<bool>,
    clock: ManualClock,
}

/// Takes a job off [`World::running`] however its handler ends.
struct Running(Rc<World>, String, String);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(set) = self.0.running.borrow_mut().get_mut(&self.1) {
            set.remove(&self.2);
        }
    }
}

impl World {
    fn start(self: &Rc<Self>, ctx: &JobContext) -> Running {
        self.calls.borrow_mut().push((
            ctx.id.clone(),
            ctx.attempt,
            ctx.idempotency_key.clone(),
            self.clock.now_ms(),
        ));
        let mut running = self.running.borrow_mut();
        let set = running.entry(ctx.name.clone()).or_default();
        if !set.insert(ctx.id.clone()) {
            self.violations
                .borrow_mut()
                .push(format!("{} runs twice at once", ctx.id));
        }
        if let Some(limit) = self.limits.borrow().get(&ctx.name) {
            if set.len() > *limit {
                self.violations.borrow_mut().push(format!(
                    "{} runs {} jobs; its limit is {limit}",
                    ctx.name,
                    set.len()
                ));
            }
        }
        Running(self.clone(), ctx.name.clone(), ctx.id.clone())
    }

    /// Resolves with the result the test releases job `id` with.
    async fn released(&self, id: &str) -> std::result::Result<Value, JobError> {
        poll_fn(|_| match self.releases.borrow_mut().remove(id) {
            Some(result) => Poll::Ready(result),
            None => Poll::Pending,
        })
        .await
    }

    fn handler(
        self: &Rc<Self>,
    ) -> impl Fn(JobContext) -> LocalBoxFuture<'static, std::result::Result<Value, JobError>> {
        let world = self.clone();
        move |ctx: JobContext| {
            let world = world.clone();
            Box::pin(async move {
                let _running = world.start(&ctx);
                let mode = ctx.data["mode"].as_str().unwrap_or("ok").to_owned();
                match mode.as_str() {
                    "ok" => Ok(json!({"echo": ctx.data.clone()})),
                    "fail" => Err(JobError::retryable("boom")),
                    "fatal" => Err(JobError::fatal("broken for good")),
                    "flaky" if world.flaky.get() => Err(JobError::fatal("flaky")),
                    "flaky" => Ok(json!("fixed")),
                    "hold" => world.released(&ctx.id).await,
                    // Held, then reports progress; records the signal if the report was refused.
                    "late-progress" => {
                        let _ = world.released(&ctx.id).await;
                        let reported = ctx.report_progress(json!(75)).await;
                        if let (Err(Error::Cancelled(_)), Some(reason)) =
                            (&reported, ctx.cancel_reason())
                        {
                            world.observed.borrow_mut().push((ctx.id.clone(), reason));
                        }
                        reported.map(|()| json!("reported")).map_err(JobError::from)
                    }
                    "watch" => {
                        let reason = ctx.cancelled().await;
                        world.observed.borrow_mut().push((ctx.id.clone(), reason));
                        Err(JobError::retryable("stopped"))
                    }
                    "progress" => {
                        ctx.report_progress(json!(50))
                            .await
                            .map_err(JobError::from)?;
                        let bad = ctx.report_progress(json!(150)).await;
                        match bad {
                            Err(Error::InvalidInput { field, .. }) if field == "progress" => {
                                Ok(json!("done"))
                            }
                            other => Err(JobError::fatal(format!("{other:?}"))),
                        }
                    }
                    other => Err(JobError::fatal(format!("unknown mode {other}"))),
                }
            })
        }
    }
}

struct Fixture {
    world: Rc<World>,
    clock: ManualClock,
    store: Rc<MemStore>,
    queue: JobQueue,
    runs: Vec<JobRun>,
}

fn open(store: Rc<dyn Store>, clock: &ManualClock, seed: u64) -> JobQueue {
    let config = QueueConfig {
        lease_ms: 10_000,
        seed,
        ..QueueConfig::default()
    };
    block_on(JobQueue::open(store, clock.shared(), config)).unwrap()
}

impl Fixture {
    fn new() -> Self {
        let clock = ManualClock::new(1_000_000);
        let store = Rc::new(MemStore::new());
        let world = Rc::new(World {
            clock: clock.clone(),
            ..World::default()
        });
        let queue = open(store.clone(), &clock, 1);
        let fixture = Self {
            world,
            clock,
            store,
            queue,
            runs: Vec::new(),
        };
        fixture.register("q", 1);
        fixture
    }

    fn register(&self, name: &str, concurrency: usize) {
        self.queue
            .register(name, concurrency, self.world.handler())
            .unwrap();
        self.world
            .limits
            .borrow_mut()
            .insert(name.to_owned(), concurrency);
    }

    fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    fn add(&self, name: &str, data: Value, options: Value) -> JobRecord {
        let options = JobOptions::from_json(options).unwrap();
        block_on(self.queue.enqueue(name, data, options)).unwrap()
    }

    fn job(&self, id: &str) -> JobRecord {
        block_on(self.queue.get(id)).unwrap().unwrap()
    }

    /// Ticks, then polls every run until none makes progress; returns the finished runs.
    fn step(&mut self) -> Vec<(String, Result<Option<JobState>>)> {
        let mut finished = Vec::new();
        loop {
            let started = block_on(self.queue.tick()).unwrap();
            let progressed = !started.is_empty();
            self.runs.extend(started);
            let done = self.poll_runs();
            let more = !done.is_empty();
            finished.extend(done);
            if !progressed && !more {
                return finished;
            }
        }
    }

    /// Polls the runs, removing the finished ones, until a pass wakes none of them (they all
    /// wait on something outside: a release, the clock).
    fn poll_runs(&mut self) -> Vec<(String, Result<Option<JobState>>)> {
        let woken = Arc::new(WakeFlag::default());
        let waker = std::task::Waker::from(Arc::clone(&woken));
        let mut cx = std::task::Context::from_waker(&waker);
        let mut finished = Vec::new();
        loop {
            let mut pending = Vec::new();
            for mut run in self.runs.drain(..) {
                match std::pin::Pin::new(&mut run).poll(&mut cx) {
                    Poll::Ready(result) => finished.push((run.id.clone(), result)),
                    Poll::Pending => pending.push(run),
                }
            }
            self.runs = pending;
            if !woken.take() {
                return finished;
            }
        }
    }

    /// The ids in the order their handlers were called.
    fn called(&self) -> Vec<String> {
        self.world
            .calls
            .borrow()
            .iter()
            .map(|(id, ..)| id.clone())
            .collect()
    }

    fn call_times(&self, id: &str) -> Vec<u64> {
        self.world
            .calls
            .borrow()
            .iter()
            .filter(|(job, ..)| job == id)
            .map(|(.., at)| *at)
            .collect()
    }

    /// Starts a job of queue `q` here, then cancels it from another instance of the same store
    /// (no refresh tells this one).
    fn start_then_cancel_elsewhere(&mut self, data: Value, options: Value) -> JobRecord {
        let job = self.add("q", data, options);
        self.step();
        assert_eq!(self.job(&job.id).state, JobState::Active);
        let other = open(self.store.clone(), &self.clock, 7);
        assert_eq!(
            block_on(other.cancel(&job.id)).unwrap(),
            CancelOutcome::Cancelled
        );
        job
    }

    fn release(&self, id: &str, result: std::result::Result<Value, JobError>) {
        self.world
            .releases
            .borrow_mut()
            .insert(id.to_owned(), result);
    }
}

use std::future::Future;

fn invalid_field(error: Error) -> String {
    match error {
        Error::InvalidInput { field, .. } => field,
        other => panic!("expected ERR_INVALID_INPUT, got {other:?}"),
    }
}

#[test]
fn jobs_run_by_priority_then_fifo() {
    let mut f = Fixture::new();
    let priorities = [10, 1, 10, 20, 5, 1, 15, 5];
    let ids: Vec<String> = priorities
        .iter()
        .enumerate()
        .map(|(i, p)| f.add("q", json!({"i": i}), json!({"priority": p})).id)
        .collect();
    f.step();
    let mut expected: Vec<(u64, usize)> = priorities
        .iter()
        .enumerate()
        .map(|(i, p)| (*p, i))
        .collect();
    expected.sort();
    let expected: Vec<String> = expected.iter().map(|(_, i)| ids[*i].clone()).collect();
    assert_eq!(f.called(), expected);
    assert_eq!(f.queue.counts().all.completed, priorities.len());
    // Names work too.
    let named = JobOptions::from_json(json!({"priority": "background"})).unwrap();
    assert_eq!(named.priority, Priority::BACKGROUND);
}

#[test]
fn a_delayed_job_runs_when_due() {
    let mut f = Fixture::new();
    let t0 = f.now();
    let job = f.add("q", json!({}), json!({"delay": 1000}));
    assert_eq!(job.state, JobState::Delayed);
    assert_eq!(job.next_run_at, Some(t0 + 1000));
    assert_eq!(f.queue.next_wake_at(), Some(t0 + 1000));
    f.step();
    assert!(f.called().is_empty());
    f.clock.advance(999);
    f.step();
    assert!(f.called().is_empty());
    f.clock.advance(1);
    f.step();
    assert_eq!(f.call_times(&job.id), vec![t0 + 1000]);
    let done = f.job(&job.id);
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(done.result, Some(json!({"echo": {}})));
    assert_eq!(done.attempts_made, 1);
    assert_eq!(done.processed_at, Some(t0 + 1000));
    assert_eq!(done.finished_at, Some(t0 + 1000));
    assert_eq!(f.queue.next_wake_at(), None);
}

/// Runs a failing job until it stops retrying; returns the waits between its attempts.
fn waits_of(options: Value, attempts: usize) -> (Vec<u64>, JobRecord) {
    let mut f = Fixture::new();
    let job = f.add("q", json!({"mode": "fail"}), options);
    for _ in 0..attempts {
        f.step();
        if let Some(at) = f.queue.next_wake_at() {
            f.clock.set(at);
        }
    }
    let times = f.call_times(&job.id);
    let waits = times.windows(2).map(|w| w[1] - w[0]).collect();
    (waits, f.job(&job.id))
}

#[test]
fn fixed_backoff_waits_the_same_each_time() {
    let (waits, job) = waits_of(
        json!({"attempts": 4, "backoff": {"type": "fixed", "delay": 500}}),
        6,
    );
    assert_eq!(waits, vec![500, 500, 500]);
    assert_eq!(job.state, JobState::Failed);
    assert_eq!(job.attempts_made, 4);
    assert_eq!(
        job.error,
        Some(JobFailure {
            message: "boom".into(),
            retryable: true
        })
    );
    // A bare number is a fixed backoff.
    let (waits, _) = waits_of(json!({"attempts": 3, "backoff": 250}), 5);
    assert_eq!(waits, vec![250, 250]);
}

#[test]
fn exponential_backoff_doubles_up_to_the_cap() {
    let (waits, job) = waits_of(
        json!({"attempts": 5, "backoff": {"type": "exponential", "delay": 100}}),
        7,
    );
    assert_eq!(waits, vec![100, 200, 400, 800]);
    assert_eq!(job.attempts_made, 5);
    let (waits, _) = waits_of(
        json!({"attempts": 5, "backoff": {"type": "exponential", "delay": 100, "cap": 300}}),
        7,
    );
    assert_eq!(waits, vec![100, 200, 300, 300]);
    // Without a backoff a retry is at once.
    let (waits, _) = waits_of(json!({"attempts": 3}), 2);
    assert_eq!(waits, vec![0, 0]);
}

#[test]
fn jitter_stays_in_bounds_and_is_deterministic_under_a_seed() {
    let backoff = Backoff::exponential(1000).with_jitter(0.5).with_cap(5000);
    let mut rng = fastrand::Rng::with_seed(7);
    let mut seen = HashSet::new();
    for attempt in 1..=6 {
        let base = backoff.base_delay_ms(attempt);
        assert_eq!(
            base,
            [1000, 2000, 4000, 5000, 5000, 5000][attempt as usize - 1]
        );
        for _ in 0..200 {
            let wait = backoff.delay_ms(attempt, &mut rng);
            assert!(wait > base / 2 && wait <= base, "{wait} for {base}");
            seen.insert(wait);
        }
    }
    assert!(seen.len() > 100, "jitter spreads the waits");
    let draw = |seed| {
        let mut rng = fastrand::Rng::with_seed(seed);
        (1..=5)
            .map(|a| backoff.delay_ms(a, &mut rng))
            .collect::<Vec<_>>()
    };
    assert_eq!(draw(3), draw(3));
    // Through the queue, with the queue's seed.
    let options =
        json!({"attempts": 4, "backoff": {"type": "fixed", "delay": 1000, "jitter": 0.3}});
    let (first, _) = waits_of(options.clone(), 6);
    let (second, _) = waits_of(options, 6);
    assert_eq!(first, second);
    assert!(first.iter().all(|w| *w > 700 && *w <= 1000), "{first:?}");
}

#[test]
fn a_timeout_fails_the_attempt_and_signals_the_handler() {
    let mut f = Fixture::new();
    let t0 = f.now();
    let job = f.add(
        "q",
        json!({"mode": "watch"}),
        json!({"timeout": 1000, "attempts": 2}),
    );
    f.step();
    assert_eq!(f.runs.len(), 1);
    assert_eq!(f.job(&job.id).state, JobState::Active);
    assert_eq!(f.queue.next_wake_at(), Some(t0 + 1000));
    f.clock.advance(999);
    assert!(f.step().is_empty());
    f.clock.advance(1);
    let finished = f.step();
    // The first attempt timed out and the retry started at once (no backoff); it waits again.
    assert_eq!(finished.len(), 1);
    assert_eq!(finished[0].1.as_ref().unwrap(), &Some(JobState::Waiting));
    assert_eq!(f.runs.len(), 1);
    let record = f.job(&job.id);
    assert_eq!(record.state, JobState::Active);
    assert_eq!(record.attempts_made, 1);
    assert_eq!(
        record.error.as_ref().unwrap().message,
        "timed out after 1000 ms"
    );
    f.clock.advance(1000);
    f.step();
    let record = f.job(&job.id);
    assert_eq!(record.state, JobState::Failed);
    assert_eq!(record.attempts_made, 2);
    assert_eq!(
        *f.world.observed.borrow(),
        vec![
            (job.id.clone(), CancelReason::Timeout),
            (job.id.clone(), CancelReason::Timeout)
        ]
    );
    assert_eq!(f.call_times(&job.id), vec![t0, t0 + 1000]);
}

#[test]
fn a_handler_that_ignores_its_timeout_is_dropped() {
    let mut f = Fixture::new();
    let job = f.add("q", json!({"mode": "hold"}), json!({"timeout": 50}));
    f.step();
    f.clock.advance(50);
    f.step();
    assert!(f.runs.is_empty());
    assert!(
        f.world.running.borrow()["q"].is_empty(),
        "the handler was dropped"
    );
    assert_eq!(f.job(&job.id).state, JobState::Failed);
}

#[test]
fn a_job_id_already_present_is_not_added_again() {
    let mut f = Fixture::new();
    let first = f.add("q", json!({"v": 1}), json!({"jobId": "report-7"}));
    assert_eq!(first.id, "report-7");
    let again = f.add(
        "q",
        json!({"v": 2}),
        json!({"jobId": "report-7", "priority": 1}),
    );
    assert_eq!(again, first);
    f.step();
    let third = f.add("q", json!({"v": 3}), json!({"jobId": "report-7"}));
    assert_eq!(third.state, JobState::Completed);
    assert_eq!(third.data, json!({"v": 1}));
    assert_eq!(f.called(), vec!["report-7".to_owned()]);
    assert_eq!(block_on(f.store.count(Table::Jobs)).unwrap(), 1);
}

#[test]
fn a_debounced_job_replaces_the_pending_one_within_the_ttl() {
    let mut f = Fixture::new();
    block_on(f.queue.pause_queue("q")).unwrap();
    let debounce = json!({"debounce": {"id": "save", "ttl": 1000}});
    let first = f.add("q", json!({"v": 1}), debounce.clone());
    f.clock.advance(999);
    let second = f.add("q", json!({"v": 2}), debounce.clone());
    assert!(f
        .queue
        .get(&first.id)
        .now_or_never()
        .unwrap()
        .unwrap()
        .is_none());
    assert_eq!(f.queue.counts().all.waiting, 1);
    // The window is the pending job's: 1000 ms after `second`.
    f.clock.advance(1000);
    let third = f.add("q", json!({"v": 3}), debounce);
    assert_eq!(f.queue.counts().all.waiting, 2);
    block_on(f.queue.resume_queue("q")).unwrap();
    f.step();
    assert_eq!(f.called(), vec![second.id, third.id.clone()]);
    // Only pending jobs are replaced: a delayed one is, a finished one is not.
    let delayed = f.add(
        "q",
        json!({"v": 4}),
        json!({"delay": 500, "debounce": {"id": "late", "ttl": 1000}}),
    );
    let newer = f.add(
        "q",
        json!({"v": 5}),
        json!({"delay": 500, "debounce": {"id": "late", "ttl": 1000}}),
    );
    assert!(block_on(f.queue.get(&delayed.id)).unwrap().is_none());
    assert_eq!(f.job(&newer.id).state, JobState::Delayed);
    let after_done = f.add(
        "q",
        json!({"v": 6}),
        json!({"debounce": {"id": "save", "ttl": 1000}}),
    );
    assert_eq!(f.job(&third.id).state, JobState::Completed);
    assert_eq!(f.job(&after_done.id).state, JobState::Waiting);
}

trait NowOrNever: Future + Sized {
    fn now_or_never(self) -> Option<Self::Output> {
        Some(block_on(self))
    }
}
impl<F: Future> NowOrNever for F {}

#[test]
fn remove_on_complete_and_on_fail_keep_the_newest() {
    let mut f = Fixture::new();
    let kept: Vec<String> = (0..5)
        .map(|i| {
            f.clock.advance(10);
            f.add("q", json!({"i": i}), json!({"removeOnComplete": 2}))
                .id
        })
        .collect();
    f.step();
    let completed = block_on(f.queue.list(JobFilter {
        state: Some(JobState::Completed),
        ..JobFilter::default()
    }))
    .unwrap();
    let ids: Vec<String> = completed.items.iter().map(|j| j.id.clone()).collect();
    assert_eq!(ids, kept[3..].to_vec());
    f.add("q", json!({}), json!({"removeOnComplete": true}));
    f.step();
    assert_eq!(f.queue.counts().all.completed, 2);
    for _ in 0..3 {
        f.add("q", json!({"mode": "fatal"}), json!({"removeOnFail": 1}));
    }
    f.add("q", json!({"mode": "fatal"}), json!({"removeOnFail": true}));
    f.step();
    assert_eq!(f.queue.counts().all.failed, 1);
    // Failed jobs are kept by default: the dead-letter set.
    let dead = f.add("q", json!({"mode": "fatal"}), json!({}));
    f.step();
    assert_eq!(f.queue.counts().all.failed, 2);
    let record = f.job(&dead.id);
    assert!(!record.error.unwrap().retryable);
    assert_eq!(
        block_on(f.store.count(Table::Jobs)).unwrap(),
        4,
        "2 completed + 2 failed"
    );
}

#[test]
fn a_non_retryable_error_fails_at_once() {
    let mut f = Fixture::new();
    let job = f.add(
        "q",
        json!({"mode": "fatal"}),
        json!({"attempts": 5, "backoff": 10}),
    );
    f.step();
    let record = f.job(&job.id);
    assert_eq!(record.state, JobState::Failed);
    assert_eq!(record.attempts_made, 1);
    assert_eq!(record.error.unwrap().message, "broken for good");
}

#[test]
fn cancel_pending_and_running_jobs() {
    let mut f = Fixture::new();
    f.register("w", 5);
    let waiting = f.add("q", json!({}), json!({}));
    let delayed = f.add("q", json!({}), json!({"delay": 100}));
    assert_eq!(
        block_on(f.queue.cancel(&waiting.id)).unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(
        block_on(f.queue.cancel(&delayed.id)).unwrap(),
        CancelOutcome::Cancelled
    );
    f.clock.advance(200);
    f.step();
    assert!(f.called().is_empty());
    assert_eq!(f.job(&delayed.id).state, JobState::Cancelled);
    assert_eq!(f.job(&delayed.id).next_run_at, None);

    let active = f.add("w", json!({"mode": "watch"}), json!({"attempts": 3}));
    f.step();
    assert_eq!(f.job(&active.id).state, JobState::Active);
    assert_eq!(
        block_on(f.queue.cancel(&active.id)).unwrap(),
        CancelOutcome::Signalled
    );
    let finished = f.step();
    assert_eq!(finished[0].1.as_ref().unwrap(), &Some(JobState::Cancelled));
    assert_eq!(
        *f.world.observed.borrow(),
        vec![(active.id.clone(), CancelReason::Cancelled)]
    );
    let record = f.job(&active.id);
    assert_eq!(record.state, JobState::Cancelled);
    assert_eq!(record.attempts_made, 1, "no retry after a cancel");
    assert_eq!(
        block_on(f.queue.cancel(&active.id)).unwrap(),
        CancelOutcome::AlreadyFinished(JobState::Cancelled)
    );
    assert_eq!(
        block_on(f.queue.cancel("nope")).unwrap(),
        CancelOutcome::NotFound
    );
    // A handler that ignores the signal is dropped.
    let stubborn = f.add("w", json!({"mode": "hold"}), json!({}));
    f.step();
    block_on(f.queue.cancel(&stubborn.id)).unwrap();
    f.step();
    assert_eq!(f.job(&stubborn.id).state, JobState::Cancelled);
    assert!(f.runs.is_empty());
}

#[test]
fn retry_runs_a_failed_job_again_with_attempts_reset() {
    let mut f = Fixture::new();
    f.world.flaky.set(true);
    let job = f.add("q", json!({"mode": "flaky"}), json!({"attempts": 2}));
    f.step();
    assert_eq!(f.job(&job.id).state, JobState::Failed);
    let error = block_on(f.queue.retry("missing")).unwrap_err();
    assert_eq!(invalid_field(error), "id");
    f.world.flaky.set(false);
    let again = block_on(f.queue.retry(&job.id)).unwrap();
    assert_eq!(again.state, JobState::Waiting);
    assert_eq!(again.attempts_made, 0);
    assert_eq!(again.error, None);
    f.step();
    let record = f.job(&job.id);
    assert_eq!(record.state, JobState::Completed);
    assert_eq!(record.attempts_made, 1);
    let error = block_on(f.queue.retry(&job.id)).unwrap_err();
    assert_eq!(invalid_field(error), "id");
    let attempts: Vec<u32> = f.world.calls.borrow().iter().map(|c| c.1).collect();
    assert_eq!(attempts, vec![1, 1]);
}

#[test]
fn a_paused_queue_starts_nothing_until_resumed_and_stays_paused_across_reopen() {
    let mut f = Fixture::new();
    f.register("other", 1);
    block_on(f.queue.pause_queue("q")).unwrap();
    let job = f.add("q", json!({}), json!({}));
    let other = f.add("other", json!({}), json!({}));
    f.step();
    assert_eq!(f.called(), vec![other.id]);
    assert_eq!(f.queue.counts().queues["q"].waiting, 1);
    assert_eq!(f.queue.counts().paused, vec!["q".to_owned()]);
    // Persisted: a queue opened on the same store is paused too.
    let reopened = open(f.store.clone(), &f.clock, 2);
    assert!(reopened.is_paused("q"));
    block_on(f.queue.resume_queue("q")).unwrap();
    assert_eq!(f.queue.next_wake_at(), Some(f.now()));
    f.step();
    assert_eq!(f.job(&job.id).state, JobState::Completed);
    assert!(!open(f.store.clone(), &f.clock, 3).is_paused("q"));
}

#[test]
fn progress_is_stored_and_checked() {
    let mut f = Fixture::new();
    let job = f.add("q", json!({"mode": "progress"}), json!({}));
    f.step();
    let record = f.job(&job.id);
    assert_eq!(record.result, Some(json!("done")), "{record:?}");
    assert_eq!(record.progress, json!(50));
}

#[test]
fn list_filters_by_state_and_name_and_pages() {
    let mut f = Fixture::new();
    f.register("other", 1);
    block_on(f.queue.pause_queue("other")).unwrap();
    let q: Vec<String> = (0..5)
        .map(|_| f.add("q", json!({}), json!({})).id)
        .collect();
    let o: Vec<String> = (0..3)
        .map(|_| f.add("other", json!({}), json!({})).id)
        .collect();
    f.step();
    let list = |filter: JobFilter| {
        block_on(f.queue.list(filter))
            .unwrap()
            .items
            .into_iter()
            .map(|j| j.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        list(JobFilter {
            state: Some(JobState::Waiting),
            ..JobFilter::default()
        }),
        o
    );
    assert_eq!(
        list(JobFilter {
            name: Some("q".into()),
            ..JobFilter::default()
        }),
        q
    );
    assert!(list(JobFilter {
        name: Some("q".into()),
        state: Some(JobState::Waiting),
        ..JobFilter::default()
    })
    .is_empty());
    let page = block_on(f.queue.list(JobFilter {
        limit: 3,
        ..JobFilter::default()
    }))
    .unwrap();
    assert_eq!(page.items.len(), 3);
    let next = block_on(f.queue.list(JobFilter {
        limit: 5,
        after: page.next.clone(),
        ..JobFilter::default()
    }))
    .unwrap();
    assert_eq!(next.items.len(), 5);
    assert_eq!(next.next, None);
    let filter: JobFilter =
        serde_json::from_value(json!({"state": "failed", "name": "q", "limit": 10})).unwrap();
    assert_eq!(filter.state, Some(JobState::Failed));
    let error = block_on(f.queue.list(JobFilter {
        limit: 0,
        ..JobFilter::default()
    }))
    .unwrap_err();
    assert_eq!(invalid_field(error), "limit");
    let counts = f.queue.counts();
    assert_eq!(counts.all.completed, 5);
    assert_eq!(counts.all.waiting, 3);
    assert_eq!(counts.queues["other"].waiting, 3);
    assert_eq!(counts.queues["q"].completed, 5);
}

#[test]
fn a_job_whose_worker_died_is_retried_after_its_lease() {
    let mut f = Fixture::new();
    let t0 = f.now();
    let job = f.add("q", json!({"mode": "hold"}), json!({}));
    f.step();
    let active = f.job(&job.id);
    assert_eq!(active.state, JobState::Active);
    assert_eq!(active.lease_until, Some(t0 + 10_000));
    // The lease is renewed while the handler runs.
    f.clock.advance(6_000);
    f.step();
    assert_eq!(f.job(&job.id).lease_until, Some(t0 + 16_000));
    // The worker dies: the run and the queue are gone, the row says active.
    let Fixture {
        world,
        clock,
        store,
        queue,
        runs,
    } = f;
    drop(runs);
    drop(queue);
    let queue = open(store.clone(), &clock, 2);
    let mut f = Fixture {
        world,
        clock,
        store,
        queue,
        runs: Vec::new(),
    };
    f.register("q", 1);
    f.clock.advance(9_999);
    f.step();
    assert_eq!(f.called().len(), 1, "not before the lease expires");
    assert_eq!(f.queue.next_wake_at(), Some(t0 + 16_000));
    f.clock.advance(1);
    f.step();
    assert_eq!(f.called().len(), 2, "taken back and run again");
    let record = f.job(&job.id);
    assert_eq!(record.state, JobState::Active);
    assert_eq!(record.attempts_made, 1);
    assert_eq!(record.stalled_count, 1);
    f.release(&job.id, Ok(json!("ok")));
    f.step();
    let record = f.job(&job.id);
    assert_eq!(record.state, JobState::Completed);
    assert_eq!(record.attempts_made, 2);
    let calls = f.world.calls.borrow().clone();
    assert_eq!(calls[0].2, calls[1].2, "the same idempotency key");
    assert_eq!((calls[0].1, calls[1].1), (1, 2));
}

#[test]
fn a_job_that_keeps_losing_its_worker_fails() {
    let mut f = Fixture::new();
    let job = f.add("q", json!({"mode": "hold"}), json!({"attempts": 10}));
    for seed in 2..4 {
        f.step();
        assert_eq!(f.job(&job.id).state, JobState::Active);
        f.runs.clear();
        f.queue = open(f.store.clone(), &f.clock, seed);
        f.register("q", 1);
        f.clock.advance(10_000);
    }
    f.step();
    let record = f.job(&job.id);
    assert_eq!(record.state, JobState::Failed, "{record:?}");
    assert_eq!(record.stalled_count, 2);
    assert!(!record.error.unwrap().retryable);
}

/// A store whose writes fail while `fail` is set (a worker killed before its write committed).
/// A [`MemStore`] whose writes fail while `fail` is set, and wait while `held` is set (the test
/// polls again after clearing it: a transaction in flight).
struct FlakyStore {
    inner: Rc<MemStore>,
    fail: Cell<bool>,
    held: Cell<bool>,
}

impl Store for FlakyStore {
    fn get(&self, table: Table, ids: Vec<String>) -> LocalBoxFuture<'_, Result<Vec<Option<Row>>>> {
        self.inner.get(table, ids)
    }
    fn scan(&self, table: Table, scan: Scan) -> LocalBoxFuture<'_, Result<Vec<Row>>> {
        self.inner.scan(table, scan)
    }
    fn count(&self, table: Table) -> LocalBoxFuture<'_, Result<u64>> {
        self.inner.count(table)
    }
    fn write(&self, ops: Vec<WriteOp>) -> LocalBoxFuture<'_, Result<()>> {
        if self.fail.get() {
            return Box::pin(std::future::ready(Err(Error::Store("killed".into()))));
        }
        Box::pin(async move {
            poll_fn(|_| match self.held.get() {
                true => Poll::Pending,
                false => Poll::Ready(()),
            })
            .await;
            self.inner.write(ops).await
        })
    }
    fn patch(
        &self,
        table: Table,
        patches: Vec<(String, serde_json::Map<String, Value>)>,
    ) -> LocalBoxFuture<'_, Result<()>> {
        if self.fail.get() {
            return Box::pin(std::future::ready(Err(Error::Store("killed".into()))));
        }
        self.inner.patch(table, patches)
    }
    fn snapshot(&self, tables: Vec<Table>) -> LocalBoxFuture<'_, Result<Snapshot>> {
        self.inner.snapshot(tables)
    }
}

use crate::store::Row;

#[test]
fn a_crash_between_handler_finished_and_state_saved_runs_the_job_again() {
    let clock = ManualClock::new(5_000);
    let store = Rc::new(FlakyStore {
        inner: Rc::new(MemStore::new()),
        fail: Cell::new(false),
        held: Cell::new(false),
    });
    let world = Rc::new(World {
        clock: clock.clone(),
        ..World::default()
    });
    let queue = open(store.clone(), &clock, 9);
    queue.register("q", 1, world.handler()).unwrap();
    let job = block_on(queue.enqueue("q", json!({"mode": "hold"}), JobOptions::default())).unwrap();
    let mut runs = block_on(queue.tick()).unwrap();
    assert_eq!(runs.len(), 1);
    let mut run = runs.pop().unwrap();
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(std::pin::Pin::new(&mut run).poll(&mut cx).is_pending());
    // The handler finishes, and the outcome's write dies.
    world
        .releases
        .borrow_mut()
        .insert(job.id.clone(), Ok(json!("sent")));
    store.fail.set(true);
    let result = block_on(&mut run);
    assert!(matches!(result, Err(Error::Store(_))), "{result:?}");
    store.fail.set(false);
    let stuck = block_on(queue.get(&job.id)).unwrap().unwrap();
    assert_eq!(stuck.state, JobState::Active);
    assert!(block_on(queue.tick()).unwrap().is_empty(), "still leased");
    clock.advance(10_000);
    let mut runs = block_on(queue.tick()).unwrap();
    assert_eq!(runs.len(), 1, "taken back after the lease");
    world
        .releases
        .borrow_mut()
        .insert(job.id.clone(), Ok(json!("sent")));
    let state = block_on(runs.pop().unwrap()).unwrap();
    assert_eq!(state, Some(JobState::Completed));
    let done = block_on(queue.get(&job.id)).unwrap().unwrap();
    assert_eq!(done.attempts_made, 2);
    let calls = world.calls.borrow();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].2, job.id);
    assert_eq!(calls[1].2, job.id, "the same idempotency key on the rerun");
}

#[test]
fn a_failed_start_write_starts_nothing() {
    let mut f = Fixture::new();
    let job = f.add("q", json!({}), json!({}));
    f.store.set_max_rows(Some(0));
    assert!(matches!(block_on(f.queue.tick()), Err(Error::Quota(_))));
    f.store.set_max_rows(None);
    f.step();
    assert_eq!(f.called(), vec![job.id]);
}

#[test]
fn bad_input_names_the_field_and_writes_nothing() {
    let f = Fixture::new();
    let writes = f.store.committed_writes();
    let error = block_on(f.queue.enqueue("nobody", json!({}), JobOptions::default())).unwrap_err();
    assert_eq!(invalid_field(error), "name");
    let cases = [
        (json!({"priority": 0}), "options.priority"),
        (json!({"priority": 21}), "options.priority"),
        (json!({"priority": 1.5}), "options.priority"),
        (json!({"priority": "urgent"}), "options.priority"),
        (json!({"delay": -1}), "options.delay"),
        (json!({"delay": MAX_DELAY_MS + 1}), "options.delay"),
        (json!({"attempts": 0}), "options.attempts"),
        (json!({"attempts": 1001}), "options.attempts"),
        (
            json!({"backoff": {"type": "linear", "delay": 1}}),
            "options.backoff",
        ),
        (json!({"backoff": {"type": "fixed"}}), "options.backoff"),
        (json!({"backoff": "fast"}), "options.backoff"),
        (
            json!({"backoff": {"type": "fixed", "delay": 1, "jitter": 1.5}}),
            "options.backoff.jitter",
        ),
        (
            json!({"backoff": {"type": "exponential", "delay": 1, "cap": MAX_DELAY_MS + 1}}),
            "options.backoff.cap",
        ),
        (json!({"timeout": 0}), "options.timeout"),
        (json!({"jobId": " "}), "options.jobId"),
        (json!({"jobId": "x".repeat(300)}), "options.jobId"),
        (json!({"debounce": {"id": "d"}}), "options.debounce.ttl"),
        (
            json!({"debounce": {"id": "d", "ttl": 0}}),
            "options.debounce.ttl",
        ),
        (
            json!({"debounce": {"id": "", "ttl": 5}}),
            "options.debounce.id",
        ),
        (json!({"removeOnComplete": -1}), "options.removeOnComplete"),
        (json!({"removeOnFail": "yes"}), "options.removeOnFail"),
        (json!({"bogus": 1}), "options.bogus"),
        (json!([1]), "options"),
    ];
    for (options, field) in cases {
        let error = JobOptions::from_json(options.clone()).unwrap_err();
        assert_eq!(error.code(), crate::ErrorCode::InvalidInput, "{options}");
        assert_eq!(invalid_field(error), field, "{options}");
    }
    let options = JobOptions {
        attempts: 0,
        ..JobOptions::default()
    };
    let error = block_on(f.queue.enqueue("q", json!({}), options)).unwrap_err();
    assert_eq!(invalid_field(error), "options.attempts");
    let big = json!("x".repeat(MAX_DATA_BYTES));
    let error = block_on(f.queue.enqueue("q", big, JobOptions::default())).unwrap_err();
    assert_eq!(invalid_field(error), "data");
    assert_eq!(
        invalid_field(f.queue.register("", 1, f.world.handler()).unwrap_err()),
        "name"
    );
    assert_eq!(
        invalid_field(f.queue.register("z", 0, f.world.handler()).unwrap_err()),
        "concurrency"
    );
    assert_eq!(f.store.committed_writes(), writes);
    assert_eq!(block_on(f.store.count(Table::Jobs)).unwrap(), 0);
}

#[test]
fn options_parse_from_the_client_shape() {
    let options = JobOptions::from_json(json!({
        "priority": 5,
        "delay": 100,
        "attempts": 3,
        "backoff": {"type": "exponential", "delay": 1000, "jitter": 0.2, "cap": 60000},
        "timeout": 5000,
        "jobId": "a",
        "debounce": {"id": "d", "ttl": 300},
        "removeOnComplete": true,
        "removeOnFail": 100,
    }))
    .unwrap();
    assert_eq!(
        options,
        JobOptions {
            priority: Priority::HIGH,
            delay: 100,
            attempts: 3,
            backoff: Some(Backoff::exponential(1000).with_jitter(0.2).with_cap(60000)),
            timeout: Some(5000),
            job_id: Some("a".into()),
            debounce: Some(Debounce {
                id: "d".into(),
                ttl: 300
            }),
            remove_on_complete: RemovePolicy::Remove,
            remove_on_fail: RemovePolicy::KeepLast(100),
        }
    );
    assert_eq!(
        JobOptions::from_json(Value::Null).unwrap(),
        JobOptions::default()
    );
    assert_eq!(
        JobOptions::from_json(json!({})).unwrap(),
        JobOptions::default()
    );
    // Stored options read back the same.
    let back: JobOptions = serde_json::from_value(serde_json::to_value(&options).unwrap()).unwrap();
    assert_eq!(back, options);
}

#[test]
fn jobs_survive_a_reopen_in_fifo_order() {
    let mut f = Fixture::new();
    block_on(f.queue.pause_queue("q")).unwrap();
    let ids: Vec<String> = (0..4)
        .map(|i| f.add("q", json!({"i": i}), json!({})).id)
        .collect();
    f.queue = open(f.store.clone(), &f.clock, 5);
    f.register("q", 1);
    let later = f.add("q", json!({}), json!({}));
    block_on(f.queue.resume_queue("q")).unwrap();
    f.step();
    let mut expected = ids;
    expected.push(later.id);
    assert_eq!(f.called(), expected);
}

#[derive(Debug, Clone)]
enum Op {
    Enqueue { queue: usize, priority: u64 },
    Tick,
    Finish { pick: usize, ok: bool },
    Cancel { pick: usize },
    Advance { ms: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..2usize, prop::sample::select(vec![1u64, 5, 10, 15, 20]))
            .prop_map(|(queue, priority)| Op::Enqueue { queue, priority }),
        3 => Just(Op::Tick),
        3 => (any::<usize>(), any::<bool>()).prop_map(|(pick, ok)| Op::Finish { pick, ok }),
        1 => any::<usize>().prop_map(|pick| Op::Cancel { pick }),
        1 => (0..3000u64).prop_map(|ms| Op::Advance { ms }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn concurrency_is_never_exceeded_and_no_job_runs_twice_at_once(
        ops in prop::collection::vec(op(), 1..120)
    ) {
        let mut f = Fixture::new();
        f.register("a", 1);
        f.register("b", 3);
        let queues = ["a", "b"];
        for op in ops {
            match op {
                Op::Enqueue { queue, priority } => {
                    f.add(
                        queues[queue],
                        json!({"mode": "hold"}),
                        json!({"priority": priority, "attempts": 2, "timeout": 2000}),
                    );
                }
                Op::Tick => {
                    f.step();
                }
                Op::Finish { pick, ok } => {
                    let running: Vec<String> = f.runs.iter().map(|r| r.id.clone()).collect();
                    if !running.is_empty() {
                        let id = &running[pick % running.len()];
                        let result = if ok { Ok(json!(1)) } else { Err(JobError::retryable("x")) };
                        f.release(id, result);
                        f.poll_runs();
                    }
                }
                Op::Cancel { pick } => {
                    let running: Vec<String> = f.runs.iter().map(|r| r.id.clone()).collect();
                    if !running.is_empty() {
                        block_on(f.queue.cancel(&running[pick % running.len()])).unwrap();
                        f.poll_runs();
                    }
                }
                Op::Advance { ms } => f.clock.advance(ms),
            }
            let counts = f.queue.counts();
            prop_assert!(counts.queues.get("a").map_or(0, |c| c.active) <= 1);
            prop_assert!(counts.queues.get("b").map_or(0, |c| c.active) <= 3);
            prop_assert!(f.world.violations.borrow().is_empty(), "{:?}", f.world.violations.borrow());
        }
        // Everything drains once the handlers finish.
        for _ in 0..400 {
            let running: Vec<String> = f.runs.iter().map(|r| r.id.clone()).collect();
            for id in &running {
                f.release(id, Ok(json!(1)));
            }
            f.step();
            if let Some(at) = f.queue.next_wake_at() {
                f.clock.set(at.max(f.now()));
            } else {
                break;
            }
        }
        let counts = f.queue.counts().all;
        prop_assert_eq!(counts.waiting + counts.delayed + counts.active, 0, "{:?}", counts);
        prop_assert!(f.world.violations.borrow().is_empty());
    }
}

#[test]
fn a_job_is_one_camel_case_row_indexed_on_state_and_name() {
    let f = Fixture::new();
    let job = f.add("q", json!({"x": 1}), json!({"delay": 5, "priority": "low"}));
    let row = block_on(f.store.get(Table::Jobs, vec![job.id.clone()]))
        .unwrap()
        .pop()
        .flatten()
        .unwrap();
    assert_eq!(row.fields["state"], json!("delayed"));
    assert_eq!(row.fields["name"], json!("q"));
    assert_eq!(row.fields["options"]["priority"], json!(15));
    for field in ["attemptsMade", "createdAt", "nextRunAt", "progress"] {
        assert!(row.fields.contains_key(field), "{field}");
    }
    assert!(!row.fields.contains_key("id"));
    assert_eq!(JobRecord::from_row(&row).unwrap(), job);
    // The API shape carries the id.
    assert_eq!(serde_json::to_value(&job).unwrap()["id"], json!(job.id));
    let mut bad = row.clone();
    bad.fields.insert("state".into(), json!("lost"));
    assert!(matches!(JobRecord::from_row(&bad), Err(Error::Store(_))));
}

/// Another instance (another tab) on the fixture's store, with the same handlers.
fn other_tab(f: &Fixture, seed: u64) -> JobQueue {
    let other = open(f.store.clone(), &f.clock, seed);
    other.register("q", 1, f.world.handler()).unwrap();
    other
}

fn ids(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|id| (*id).to_owned()).collect()
}

#[test]
fn refresh_picks_up_another_instances_enqueue_and_the_leader_runs_it() {
    let mut f = Fixture::new();
    let other = other_tab(&f, 2);
    let job = block_on(other.enqueue("q", json!({}), JobOptions::default())).unwrap();
    // The leader does not know of it yet.
    assert_eq!(f.queue.next_wake_at(), None);
    f.step();
    assert!(f.called().is_empty());
    // Unknown and duplicate ids are fine; bad ones are named.
    block_on(
        f.queue
            .refresh(&[job.id.clone(), job.id.clone(), "gone".into()]),
    )
    .unwrap();
    let error = block_on(f.queue.refresh(&[job.id.clone(), String::new()])).unwrap_err();
    assert_eq!(invalid_field(error), "ids[1]");
    assert_eq!(f.queue.counts().all.waiting, 1);
    assert_eq!(f.queue.next_wake_at(), Some(f.now()));
    f.step();
    assert_eq!(f.called(), vec![job.id.clone()]);
    assert_eq!(f.job(&job.id).state, JobState::Completed);
    // A job the other tab cancelled or paused leaves the leader's ready set on refresh.
    block_on(f.queue.pause_queue("q")).unwrap();
    let a = f.add("q", json!({}), json!({}));
    let b = f.add("q", json!({}), json!({}));
    block_on(other.cancel(&a.id)).unwrap();
    block_on(other.pause_job(&b.id)).unwrap();
    block_on(f.queue.refresh(&[a.id.clone(), b.id.clone()])).unwrap();
    let counts = f.queue.counts().all;
    assert_eq!((counts.waiting, counts.cancelled, counts.paused), (0, 1, 1));
    block_on(f.queue.resume_queue("q")).unwrap();
    f.step();
    assert_eq!(f.called(), vec![job.id]);
}

#[test]
fn refresh_of_a_job_cancelled_elsewhere_signals_the_running_handler() {
    let mut f = Fixture::new();
    let other = other_tab(&f, 2);
    let job = f.add("q", json!({"mode": "watch"}), json!({"attempts": 3}));
    let mut runs = block_on(f.queue.tick()).unwrap();
    assert_eq!(runs.len(), 1);
    f.runs.append(&mut runs);
    f.poll_runs();
    // The other tab does not run it: it marks the row cancelled.
    assert_eq!(
        block_on(other.cancel(&job.id)).unwrap(),
        CancelOutcome::Cancelled
    );
    // Refreshing an unrelated job changes nothing for the run.
    block_on(f.queue.refresh(&ids(&["unrelated"]))).unwrap();
    f.poll_runs();
    assert!(f.world.observed.borrow().is_empty());
    block_on(f.queue.refresh(std::slice::from_ref(&job.id))).unwrap();
    // Half the lease later a tick would renew it: a revoked run's lease is not renewed, so the
    // row is not written back `active`.
    f.clock.advance(6_000);
    assert!(block_on(f.queue.tick()).unwrap().is_empty());
    assert_eq!(f.job(&job.id).state, JobState::Cancelled);
    let finished = f.poll_runs();
    assert_eq!(
        *f.world.observed.borrow(),
        vec![(job.id.clone(), CancelReason::Cancelled)]
    );
    assert!(
        matches!(finished.as_slice(), [(id, Ok(None))] if *id == job.id),
        "{finished:?}"
    );
    let record = f.job(&job.id);
    assert_eq!(record.state, JobState::Cancelled);
    assert_eq!(record.lease_until, None);
    assert_eq!(f.queue.counts().all.cancelled, 1);
    assert_eq!(f.queue.counts().all.active, 0);
    f.step();
    assert_eq!(f.world.calls.borrow().len(), 1, "no retry");

    // A running job whose row was deleted is signalled too.
    let gone = f.add("q", json!({"mode": "watch"}), json!({}));
    f.runs.extend(block_on(f.queue.tick()).unwrap());
    f.poll_runs();
    block_on(
        f.store
            .write(vec![WriteOp::Delete(Table::Jobs, gone.id.clone())]),
    )
    .unwrap();
    block_on(f.queue.refresh(std::slice::from_ref(&gone.id))).unwrap();
    let finished = f.poll_runs();
    assert!(
        matches!(finished.as_slice(), [(_, Ok(None))]),
        "{finished:?}"
    );
    assert_eq!(
        f.world.observed.borrow().last(),
        Some(&(gone.id.clone(), CancelReason::Cancelled))
    );
    assert_eq!(block_on(f.queue.get(&gone.id)).unwrap(), None);
    assert_eq!(f.queue.counts().all.active, 0);

    // A running job still active in the store is left running.
    let kept = f.add("q", json!({"mode": "hold"}), json!({}));
    f.runs.extend(block_on(f.queue.tick()).unwrap());
    f.poll_runs();
    block_on(f.queue.refresh(std::slice::from_ref(&kept.id))).unwrap();
    f.release(&kept.id, Ok(json!("fine")));
    let finished = f.poll_runs();
    assert!(
        matches!(finished.as_slice(), [(_, Ok(Some(JobState::Completed)))]),
        "{finished:?}"
    );
}

#[test]
fn reload_rebuilds_the_index_after_another_instances_changes() {
    let mut f = Fixture::new();
    f.register("w", 5);
    let other = other_tab(&f, 2);
    other.register("w", 5, f.world.handler()).unwrap();
    // The leader knows one job and runs another.
    let known = f.add("q", json!({}), json!({"delay": 100}));
    let running = f.add("w", json!({"mode": "hold"}), json!({}));
    f.runs.extend(block_on(f.queue.tick()).unwrap());
    f.poll_runs();
    assert_eq!(f.called(), vec![running.id.clone()]);
    // Meanwhile the other tab cancels the known one, enqueues three, pauses queue `w`.
    block_on(other.cancel(&known.id)).unwrap();
    let added: Vec<String> = (0..3)
        .map(|i| {
            block_on(other.enqueue("q", json!({"i": i}), JobOptions::default()))
                .unwrap()
                .id
        })
        .collect();
    block_on(other.pause_queue("w")).unwrap();
    block_on(f.queue.reload()).unwrap();
    let counts = f.queue.counts();
    assert_eq!(counts.all.waiting, 3);
    assert_eq!(counts.all.delayed, 0);
    assert_eq!(counts.all.cancelled, 1);
    assert_eq!(counts.all.active, 1, "the run here is kept");
    assert_eq!(counts.paused, vec!["w".to_owned()]);
    assert!(f.queue.is_paused("w"));
    // The seq counter went past the other tab's: a job enqueued here now runs after them.
    let last = f.add("q", json!({}), json!({}));
    let newest = added.iter().map(|id| f.job(id).seq).max().unwrap();
    assert!(last.seq > newest, "{} <= {newest}", last.seq);
    f.step();
    let mut expected = vec![running.id.clone()];
    expected.extend(added);
    expected.push(last.id);
    assert_eq!(f.called(), expected);
    // The run survived the reload and ends as usual.
    f.release(&running.id, Ok(json!("ok")));
    let finished = f.poll_runs();
    assert!(
        matches!(finished.as_slice(), [(_, Ok(Some(JobState::Completed)))]),
        "{finished:?}"
    );
    assert_eq!(f.queue.counts().all.active, 0);
    assert_eq!(f.queue.counts().all.completed, 5);
}

/// A store whose reads, while `gated`, take their result at once but resolve only once `open`
/// (as IndexedDB reads that resolve after other work ran).
struct GatedStore {
    inner: MemStore,
    gated: Cell<bool>,
    open: Rc<Cell<bool>>,
}

impl GatedStore {
    fn wait<T: 'static>(&self, result: T) -> LocalBoxFuture<'_, T> {
        if !self.gated.get() {
            return Box::pin(std::future::ready(result));
        }
        let open = Rc::clone(&self.open);
        let mut result = Some(result);
        Box::pin(poll_fn(move |_| {
            if open.get() {
                if let Some(result) = result.take() {
                    return Poll::Ready(result);
                }
            }
            Poll::Pending
        }))
    }
}

impl Store for GatedStore {
    fn get(&self, table: Table, ids: Vec<String>) -> LocalBoxFuture<'_, Result<Vec<Option<Row>>>> {
        let result = block_on(self.inner.get(table, ids));
        self.wait(result)
    }
    fn scan(&self, table: Table, scan: Scan) -> LocalBoxFuture<'_, Result<Vec<Row>>> {
        let result = block_on(self.inner.scan(table, scan));
        self.wait(result)
    }
    fn count(&self, table: Table) -> LocalBoxFuture<'_, Result<u64>> {
        self.inner.count(table)
    }
    fn write(&self, ops: Vec<WriteOp>) -> LocalBoxFuture<'_, Result<()>> {
        self.inner.write(ops)
    }
    fn patch(
        &self,
        table: Table,
        patches: Vec<(String, serde_json::Map<String, Value>)>,
    ) -> LocalBoxFuture<'_, Result<()>> {
        self.inner.patch(table, patches)
    }
    fn snapshot(&self, tables: Vec<Table>) -> LocalBoxFuture<'_, Result<Snapshot>> {
        self.inner.snapshot(tables)
    }
}

#[test]
fn a_reload_or_refresh_keeps_what_this_instance_changed_while_it_read() {
    let clock = ManualClock::new(1_000);
    let store = Rc::new(GatedStore {
        inner: MemStore::new(),
        gated: Cell::new(false),
        open: Rc::new(Cell::new(false)),
    });
    let world = Rc::new(World {
        clock: clock.clone(),
        ..World::default()
    });
    let queue = open(store.clone(), &clock, 3);
    queue.register("q", 1, world.handler()).unwrap();
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());

    // The reload reads the table, then a job is enqueued here before the read resolves.
    store.gated.set(true);
    let mut reload = Box::pin(queue.reload());
    assert!(reload.as_mut().poll(&mut cx).is_pending());
    store.gated.set(false);
    let job = block_on(queue.enqueue("q", json!({}), JobOptions::default())).unwrap();
    store.open.set(true);
    let Poll::Ready(reloaded) = reload.as_mut().poll(&mut cx) else {
        panic!("the reload should end");
    };
    reloaded.unwrap();
    assert_eq!(queue.counts().all.waiting, 1, "the enqueue is not lost");

    // A refresh reads the job waiting; it is cancelled here before the read resolves.
    store.open.set(false);
    store.gated.set(true);
    let refresh_ids = vec![job.id.clone()];
    let mut refresh = Box::pin(queue.refresh(&refresh_ids));
    assert!(refresh.as_mut().poll(&mut cx).is_pending());
    store.gated.set(false);
    block_on(queue.cancel(&job.id)).unwrap();
    store.open.set(true);
    let Poll::Ready(refreshed) = refresh.as_mut().poll(&mut cx) else {
        panic!("the refresh should end");
    };
    refreshed.unwrap();
    let counts = queue.counts().all;
    assert_eq!((counts.waiting, counts.cancelled), (0, 1));
    assert!(block_on(queue.tick()).unwrap().is_empty());
    assert!(world.calls.borrow().is_empty());
}

#[test]
fn a_scheduler_reload_sees_schedulers_another_instance_upserted() {
    let mut f = Fixture::new();
    let other = other_tab(&f, 2);
    let leader = block_on(Scheduler::open(f.queue.clone())).unwrap();
    let elsewhere = block_on(Scheduler::open(other)).unwrap();
    let t0 = f.now();
    block_on(elsewhere.upsert_scheduler(
        "tick",
        ScheduleSpec::every(1_000),
        JobTemplate::new("q", json!({"from": "schedule"})),
    ))
    .unwrap();
    assert_eq!(leader.next_wake_at(), None);
    block_on(leader.reload()).unwrap();
    let due = t0 - t0 % 1_000 + 1_000;
    assert_eq!(leader.next_wake_at(), Some(due));
    f.clock.set(due);
    let fired = block_on(leader.tick()).unwrap();
    assert_eq!(fired.len(), 1);
    f.step();
    assert_eq!(f.called(), vec![format!("tick:{due}")]);
    // Removed elsewhere: gone after the next reload.
    block_on(elsewhere.remove_scheduler("tick")).unwrap();
    block_on(leader.reload()).unwrap();
    assert_eq!(leader.next_wake_at(), None);
}

#[test]
fn a_paused_job_never_starts_and_resumes_fifo_from_the_resume() {
    let mut f = Fixture::new();
    block_on(f.queue.pause_queue("q")).unwrap();
    let a = f.add("q", json!({"i": "a"}), json!({}));
    let b = f.add("q", json!({"i": "b"}), json!({}));
    let paused = block_on(f.queue.pause_job(&a.id)).unwrap();
    assert_eq!(paused.state, JobState::Paused);
    assert_eq!(f.job(&a.id).state, JobState::Paused);
    // Idempotent.
    assert_eq!(block_on(f.queue.pause_job(&a.id)).unwrap(), paused);
    let c = f.add("q", json!({"i": "c"}), json!({}));
    assert_eq!(f.queue.counts().all.paused, 1);
    assert_eq!(f.queue.counts().queues["q"].paused, 1);
    let page = block_on(f.queue.list(JobFilter {
        state: Some(JobState::Paused),
        ..JobFilter::default()
    }))
    .unwrap();
    assert_eq!(
        page.items.iter().map(|j| j.id.clone()).collect::<Vec<_>>(),
        vec![a.id.clone()]
    );
    assert_eq!(
        JobState::parse("paused", "state").unwrap(),
        JobState::Paused
    );
    block_on(f.queue.resume_queue("q")).unwrap();
    f.step();
    assert_eq!(f.called(), vec![b.id.clone(), c.id.clone()]);
    assert_eq!(f.job(&a.id).state, JobState::Paused, "never started");
    assert_eq!(f.queue.next_wake_at(), None);
    // It stays paused across a reopen.
    f.queue = open(f.store.clone(), &f.clock, 7);
    f.register("q", 1);
    assert_eq!(f.queue.counts().all.paused, 1);
    // Resumed, it waits behind the jobs already waiting (FIFO from the resume).
    block_on(f.queue.pause_queue("q")).unwrap();
    let d = f.add("q", json!({"i": "d"}), json!({}));
    f.clock.advance(50);
    let resumed = block_on(f.queue.resume_job(&a.id)).unwrap();
    assert_eq!(resumed.state, JobState::Waiting);
    assert_eq!(resumed.ready_at, Some(f.now()));
    // Resuming a job that is not paused returns it as it is.
    assert_eq!(block_on(f.queue.resume_job(&a.id)).unwrap(), resumed);
    let e = f.add("q", json!({"i": "e"}), json!({}));
    block_on(f.queue.resume_queue("q")).unwrap();
    f.step();
    assert_eq!(
        f.called(),
        vec![b.id, c.id, d.id.clone(), a.id.clone(), e.id]
    );
    assert_eq!(f.job(&a.id).state, JobState::Completed);
    assert_eq!(f.job(&d.id).state, JobState::Completed);
}

#[test]
fn a_paused_delayed_job_is_delayed_again_or_waiting_on_resume() {
    let mut f = Fixture::new();
    let t0 = f.now();
    let early = f.add("q", json!({}), json!({"delay": 1000}));
    let late = f.add("q", json!({}), json!({"delay": 1000}));
    block_on(f.queue.pause_job(&early.id)).unwrap();
    block_on(f.queue.pause_job(&late.id)).unwrap();
    assert_eq!(f.job(&early.id).next_run_at, Some(t0 + 1000));
    assert_eq!(f.queue.next_wake_at(), None);
    // Past its due time, a paused job is not promoted.
    f.clock.set(t0 + 500);
    let resumed = block_on(f.queue.resume_job(&early.id)).unwrap();
    assert_eq!(resumed.state, JobState::Delayed);
    assert_eq!(f.queue.next_wake_at(), Some(t0 + 1000));
    f.clock.set(t0 + 2000);
    f.step();
    assert_eq!(f.called(), vec![early.id.clone()]);
    let done = f.job(&early.id);
    // Ready from its due time, started at the (late) tick.
    assert_eq!(done.ready_at, Some(t0 + 1000));
    assert_eq!(done.processed_at, Some(t0 + 2000));
    let resumed = block_on(f.queue.resume_job(&late.id)).unwrap();
    assert_eq!(resumed.state, JobState::Waiting);
    assert_eq!(resumed.next_run_at, None);
    f.step();
    assert_eq!(f.called(), vec![early.id, late.id]);
}

#[test]
fn only_waiting_or_delayed_jobs_can_be_paused() {
    let mut f = Fixture::new();
    let reason = |error: Error| match error {
        Error::InvalidInput { field, reason } => {
            assert_eq!(field, "id");
            reason
        }
        other => panic!("expected ERR_INVALID_INPUT, got {other:?}"),
    };
    assert!(reason(block_on(f.queue.pause_job("nope")).unwrap_err()).contains("no job"));
    assert!(reason(block_on(f.queue.resume_job("nope")).unwrap_err()).contains("no job"));
    assert_eq!(
        invalid_field(block_on(f.queue.pause_job("")).unwrap_err()),
        "id"
    );
    let running = f.add("q", json!({"mode": "hold"}), json!({}));
    f.step();
    assert!(reason(block_on(f.queue.pause_job(&running.id)).unwrap_err()).contains("active"));
    // Active elsewhere too (another instance holds it).
    let other = other_tab(&f, 2);
    assert!(reason(block_on(other.pause_job(&running.id)).unwrap_err()).contains("active"));
    f.release(&running.id, Ok(json!(1)));
    f.step();
    assert!(reason(block_on(f.queue.pause_job(&running.id)).unwrap_err()).contains("completed"));
    // A paused job can be cancelled.
    block_on(f.queue.pause_queue("q")).unwrap();
    let job = f.add("q", json!({}), json!({}));
    block_on(f.queue.pause_job(&job.id)).unwrap();
    assert_eq!(
        block_on(f.queue.cancel(&job.id)).unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(f.job(&job.id).state, JobState::Cancelled);
    assert!(reason(block_on(f.queue.pause_job(&job.id)).unwrap_err()).contains("cancelled"));
    let counts = f.queue.counts().all;
    assert_eq!((counts.paused, counts.cancelled), (0, 1));
}

#[test]
fn a_newer_debounced_job_replaces_a_paused_one() {
    let mut f = Fixture::new();
    let options = json!({"debounce": {"id": "save", "ttl": 1000}});
    let first = f.add("q", json!({"v": 1}), options.clone());
    block_on(f.queue.pause_job(&first.id)).unwrap();
    let second = f.add("q", json!({"v": 2}), options);
    assert_eq!(block_on(f.queue.get(&first.id)).unwrap(), None);
    assert_eq!(second.state, JobState::Waiting);
    assert_eq!(f.queue.counts().all.paused, 0);
    f.step();
    assert_eq!(f.called(), vec![second.id]);
}

#[test]
fn the_observer_sees_each_completion_failure_retry_and_cancellation_once() {
    let mut f = Fixture::new();
    f.register("w", 5);
    type Seen = Vec<(String, JobState, bool, u32)>;
    let seen: Rc<RefCell<Seen>> = Rc::default();
    let queue = f.queue.clone();
    let log = Rc::clone(&seen);
    f.queue.set_observer(Rc::new(move |record: &JobRecord| {
        // No borrow of the queue is held: it can be called from here.
        let _ = queue.counts();
        log.borrow_mut().push((
            record.id.clone(),
            record.state,
            record.error.is_some(),
            record.attempts_made,
        ));
    }));
    let ok = f.add("w", json!({}), json!({}));
    let failing = f.add("w", json!({"mode": "fail"}), json!({"attempts": 2}));
    let pending = f.add("w", json!({}), json!({"delay": 10_000}));
    let running = f.add("w", json!({"mode": "watch"}), json!({}));
    let removed = f.add("w", json!({"mode": "fatal"}), json!({"removeOnFail": true}));
    block_on(f.queue.cancel(&pending.id)).unwrap();
    f.step();
    block_on(f.queue.cancel(&running.id)).unwrap();
    f.step();
    // Cancelling a finished job again reports nothing.
    block_on(f.queue.cancel(&running.id)).unwrap();
    let mut events = seen.borrow().clone();
    events.sort();
    let mut expected = vec![
        (ok.id.clone(), JobState::Completed, false, 1),
        (failing.id.clone(), JobState::Waiting, true, 1),
        (failing.id.clone(), JobState::Failed, true, 2),
        (pending.id.clone(), JobState::Cancelled, false, 0),
        (running.id.clone(), JobState::Cancelled, true, 1),
        (removed.id.clone(), JobState::Failed, true, 1),
    ];
    expected.sort();
    assert_eq!(events, expected);
    assert_eq!(block_on(f.queue.get(&removed.id)).unwrap(), None);

    // An attempt lost with its worker: a retry, then a final failure (after `maxStalled`).
    seen.borrow_mut().clear();
    let lost = f.add("w", json!({"mode": "hold"}), json!({"attempts": 5}));
    f.step();
    f.runs.clear();
    for _ in 0..2 {
        let other = open(f.store.clone(), &f.clock, 9);
        other.register("w", 5, f.world.handler()).unwrap();
        f.queue = other;
        let log = Rc::clone(&seen);
        f.queue.set_observer(Rc::new(move |record: &JobRecord| {
            log.borrow_mut()
                .push((record.id.clone(), record.state, true, record.attempts_made));
        }));
        f.clock.advance(10_000);
        f.step();
        f.runs.clear();
    }
    assert_eq!(
        *seen.borrow(),
        vec![
            (lost.id.clone(), JobState::Waiting, true, 1),
            (lost.id.clone(), JobState::Failed, true, 2),
        ]
    );
}

#[test]
fn a_job_records_when_it_became_ready_for_wait_times() {
    let mut f = Fixture::new();
    let t0 = f.now();
    block_on(f.queue.pause_queue("q")).unwrap();
    let job = f.add(
        "q",
        json!({"mode": "fail"}),
        json!({"attempts": 2, "backoff": 100}),
    );
    assert_eq!(job.ready_at, Some(t0));
    assert_eq!(job.created_at, t0);
    f.clock.advance(500);
    block_on(f.queue.resume_queue("q")).unwrap();
    f.step();
    let retrying = f.job(&job.id);
    assert_eq!(retrying.state, JobState::Delayed);
    assert_eq!(retrying.processed_at, Some(t0 + 500));
    assert_eq!(retrying.ready_at, Some(t0), "first wait: 500 ms");
    f.clock.advance(300);
    f.step();
    let failed = f.job(&job.id);
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(failed.ready_at, Some(t0 + 600), "due after the backoff");
    assert_eq!(failed.processed_at, Some(t0 + 800));
    assert_eq!(failed.finished_at, Some(t0 + 800));
    assert_eq!(failed.created_at, t0);
    // Rows written before the field existed still read.
    let mut row = failed.to_row().unwrap();
    row.fields.remove("readyAt");
    assert_eq!(JobRecord::from_row(&row).unwrap().ready_at, None);
}

/// A job as the bulk tests write it: queue, data, options as the client sends them.
type Job<'a> = (&'a str, Value, Value);

fn bulk(f: &Fixture, jobs: &[Job]) -> Result<Vec<JobRecord>> {
    let jobs = jobs
        .iter()
        .map(|(name, data, options)| {
            // Read, not validated: enqueue_bulk checks the ranges.
            let options: JobOptions = serde_json::from_value(options.clone()).unwrap();
            ((*name).to_owned(), data.clone(), options)
        })
        .collect();
    block_on(f.queue.enqueue_bulk(jobs))
}

fn all_jobs(f: &Fixture) -> Vec<JobRecord> {
    let filter = JobFilter {
        limit: 1000,
        ..JobFilter::default()
    };
    block_on(f.queue.list(filter)).unwrap().items
}

#[test]
fn enqueue_bulk_stores_every_job_in_one_transaction_and_runs_them_in_order() {
    let mut f = Fixture::new();
    f.register("r", 1);
    let writes = f.store.committed_writes();
    let jobs: Vec<Job> = (0..50)
        .map(|i| {
            let queue = if i % 2 == 0 { "q" } else { "r" };
            (queue, json!({ "i": i }), json!({}))
        })
        .collect();
    let records = bulk(&f, &jobs).unwrap();
    assert_eq!(f.store.committed_writes(), writes + 1, "one transaction");
    assert_eq!(records.len(), 50);
    for (i, record) in records.iter().enumerate() {
        assert_eq!(record.data, json!({ "i": i }));
        assert_eq!(record.state, JobState::Waiting);
        assert_eq!(f.job(&record.id), *record);
    }
    assert_eq!(f.queue.counts().all.waiting, 50);
    f.step();
    let ran = f.called();
    let order = |queue: &str| -> Vec<String> {
        records
            .iter()
            .filter(|r| r.name == queue)
            .map(|r| r.id.clone())
            .collect()
    };
    for queue in ["q", "r"] {
        let ran_here: Vec<String> = ran
            .iter()
            .filter(|id| order(queue).contains(id))
            .cloned()
            .collect();
        assert_eq!(
            ran_here,
            order(queue),
            "FIFO in the batch's order on {queue}"
        );
    }
    assert_eq!(f.queue.counts().all.completed, 50);
    // An empty batch writes nothing.
    let writes = f.store.committed_writes();
    assert!(bulk(&f, &[]).unwrap().is_empty());
    assert_eq!(f.store.committed_writes(), writes);
}

#[test]
fn enqueue_bulk_names_the_jobs_field_and_writes_nothing_on_error() {
    let f = Fixture::new();
    let writes = f.store.committed_writes();
    let ok = ("q", json!({}), json!({}));
    let cases: Vec<(Vec<Job>, &str)> = vec![
        (
            vec![
                ok.clone(),
                ok.clone(),
                ok.clone(),
                ("q", json!({}), json!({"delay": MAX_DELAY_MS + 1})),
            ],
            "jobs[3].options.delay",
        ),
        (
            vec![("nobody", json!({}), json!({})), ok.clone()],
            "jobs[0].name",
        ),
        (vec![ok.clone(), ("", json!({}), json!({}))], "jobs[1].name"),
        (
            vec![
                ok.clone(),
                ok.clone(),
                ("q", json!("x".repeat(MAX_DATA_BYTES)), json!({})),
            ],
            "jobs[2].data",
        ),
        (
            vec![
                ok.clone(),
                ("q", json!({}), json!({"debounce": {"id": "d", "ttl": 0}})),
            ],
            "jobs[1].options.debounce.ttl",
        ),
        (
            vec![("q", json!({}), json!({"jobId": " "})), ok.clone()],
            "jobs[0].options.jobId",
        ),
    ];
    for (jobs, field) in cases {
        let error = bulk(&f, &jobs).unwrap_err();
        assert_eq!(error.code(), crate::ErrorCode::InvalidInput, "{field}");
        assert_eq!(invalid_field(error), field);
    }
    // Options built in Rust are checked too.
    let jobs = vec![
        ("q".to_owned(), json!({}), JobOptions::default()),
        (
            "q".to_owned(),
            json!({}),
            JobOptions {
                attempts: 0,
                ..JobOptions::default()
            },
        ),
    ];
    let error = block_on(f.queue.enqueue_bulk(jobs)).unwrap_err();
    assert_eq!(invalid_field(error), "jobs[1].options.attempts");
    assert_eq!(f.store.committed_writes(), writes);
    assert_eq!(block_on(f.store.count(Table::Jobs)).unwrap(), 0);
    assert_eq!(f.queue.counts().all, StateCounts::default());
}

#[test]
fn enqueue_bulk_keeps_job_ids_and_debounce_as_enqueue_does() {
    let f = Fixture::new();
    block_on(f.queue.pause_queue("q")).unwrap();
    let stored = f.add("q", json!({"v": 0}), json!({"jobId": "report"}));
    let pending = f.add(
        "q",
        json!({"v": 0}),
        json!({"debounce": {"id": "save", "ttl": 1000}}),
    );
    let records = bulk(
        &f,
        &[
            ("q", json!({"v": 1}), json!({"jobId": "report"})),
            ("q", json!({"v": 2}), json!({"jobId": "fresh"})),
            (
                "q",
                json!({"v": 3}),
                json!({"jobId": "fresh", "priority": 1}),
            ),
            (
                "q",
                json!({"v": 4}),
                json!({"debounce": {"id": "save", "ttl": 1000}}),
            ),
            (
                "q",
                json!({"v": 5}),
                json!({"debounce": {"id": "save", "ttl": 1000}}),
            ),
        ],
    )
    .unwrap();
    assert_eq!(records[0], stored, "a stored jobId is returned, not added");
    assert_eq!(records[1].id, "fresh");
    assert_eq!(
        records[2], records[1],
        "the batch's first job of a jobId wins"
    );
    // Job 3 replaced the stored pending job, then job 4 replaced job 3.
    assert!(block_on(f.queue.get(&pending.id)).unwrap().is_none());
    assert!(block_on(f.queue.get(&records[3].id)).unwrap().is_none());
    assert_eq!(f.job(&records[4].id), records[4]);
    let data: Vec<Value> = all_jobs(&f).into_iter().map(|r| r.data).collect();
    assert_eq!(data.len(), 3);
    for v in [0, 2, 5] {
        assert!(data.contains(&json!({ "v": v })), "{data:?}");
    }
    assert_eq!(f.queue.counts().all.waiting, 3);
    // A replaced job's jobId is free again for a later job of the batch.
    let records = bulk(
        &f,
        &[
            (
                "q",
                json!({"v": 6}),
                json!({"jobId": "k", "debounce": {"id": "x", "ttl": 9}}),
            ),
            (
                "q",
                json!({"v": 7}),
                json!({"debounce": {"id": "x", "ttl": 9}}),
            ),
            ("q", json!({"v": 8}), json!({"jobId": "k"})),
        ],
    )
    .unwrap();
    assert_eq!(f.job("k").data, json!({"v": 8}));
    assert_eq!(records[2].data, json!({"v": 8}));
    assert_eq!(f.job(&records[1].id).data, json!({"v": 7}));
}

#[test]
fn enqueue_bulk_makes_what_enqueueing_one_by_one_makes() {
    let prepare = || {
        let f = Fixture::new();
        f.register("r", 2);
        block_on(f.queue.pause_queue("q")).unwrap();
        f.add("q", json!({}), json!({"jobId": "old"}));
        f.add(
            "r",
            json!({}),
            json!({"debounce": {"id": "d1", "ttl": 500}}),
        );
        f.clock.advance(10);
        f.add("q", json!({}), json!({"debounce": {"id": "d2", "ttl": 5}}));
        f.clock.advance(10);
        f
    };
    let jobs: Vec<Job> = vec![
        ("q", json!({"n": 0}), json!({})),
        (
            "r",
            json!({"n": 1}),
            json!({"priority": "high", "attempts": 3, "backoff": 10}),
        ),
        ("q", json!({"n": 2}), json!({"jobId": "old"})),
        ("q", json!({"n": 3}), json!({"delay": 50})),
        (
            "r",
            json!({"n": 4}),
            json!({"debounce": {"id": "d1", "ttl": 500}}),
        ),
        (
            "q",
            json!({"n": 5}),
            json!({"debounce": {"id": "d2", "ttl": 5}}),
        ),
        (
            "q",
            json!({"n": 6}),
            json!({"jobId": "new", "removeOnComplete": true}),
        ),
        ("r", json!({"n": 7}), json!({"jobId": "new"})),
        ("q", json!({"n": 8}), json!({"timeout": 100, "priority": 1})),
    ];
    let mut one = prepare();
    let singly: Vec<JobRecord> = jobs
        .iter()
        .map(|(name, data, options)| one.add(name, data.clone(), options.clone()))
        .collect();
    let mut all = prepare();
    let writes = all.store.committed_writes();
    let bulked = bulk(&all, &jobs).unwrap();
    assert_eq!(all.store.committed_writes(), writes + 1);
    assert_eq!(bulked, singly);
    assert_eq!(all_jobs(&all), all_jobs(&one));
    assert_eq!(all.queue.counts(), one.queue.counts());
    for f in [&mut one, &mut all] {
        block_on(f.queue.resume_queue("q")).unwrap();
        f.clock.advance(100);
        f.step();
    }
    // The same jobs ran in the same order on each queue (the queues' turns within a tick follow
    // a hash map's order, which differs between the two instances).
    let called_on = |f: &Fixture, queue: &str| -> Vec<String> {
        let jobs = all_jobs(f);
        f.called()
            .into_iter()
            .filter(|id| jobs.iter().any(|job| job.id == *id && job.name == queue))
            .collect()
    };
    for queue in ["q", "r"] {
        assert_eq!(called_on(&all, queue), called_on(&one, queue), "{queue}");
    }
    assert_eq!(all.called().len(), one.called().len());
    assert_eq!(all_jobs(&all), all_jobs(&one));
}

#[test]
fn a_failed_bulk_write_indexes_nothing_and_frees_its_job_ids() {
    let mut f = Fixture::new();
    f.store.set_max_rows(Some(2));
    let jobs = [
        ("q", json!({}), json!({"jobId": "a"})),
        ("q", json!({}), json!({})),
        ("q", json!({}), json!({})),
    ];
    assert!(matches!(bulk(&f, &jobs), Err(Error::Quota(_))));
    assert_eq!(block_on(f.store.count(Table::Jobs)).unwrap(), 0);
    assert_eq!(f.queue.counts().all, StateCounts::default());
    assert!(f.step().is_empty());
    f.store.set_max_rows(None);
    let records = bulk(&f, &jobs).unwrap();
    assert_eq!(records[0].id, "a");
    f.step();
    assert_eq!(f.queue.counts().all.completed, 3);
}

/// `f` with its queue on a [`FlakyStore`] over its store, running queue `b` 10 at a time.
fn with_held_writes(f: &mut Fixture) -> Rc<FlakyStore> {
    let held = Rc::new(FlakyStore {
        inner: f.store.clone(),
        fail: Cell::new(false),
        held: Cell::new(false),
    });
    f.queue = open(held.clone(), &f.clock, 3);
    f.register("b", 10);
    held
}

#[test]
fn runs_ending_while_outcomes_are_written_store_theirs_in_one_transaction() {
    let mut f = Fixture::new();
    let held = with_held_writes(&mut f);
    let old: Vec<String> = (0..2)
        .map(|i| {
            f.add("b", json!({ "i": i }), json!({"removeOnComplete": 3}))
                .id
        })
        .collect();
    f.step();
    f.clock.advance(10);
    let batch: Vec<String> = (0..6)
        .map(|i| {
            f.add("b", json!({ "i": i }), json!({"removeOnComplete": 3}))
                .id
        })
        .collect();
    let started = block_on(f.queue.tick()).unwrap();
    assert_eq!(started.len(), 6);
    f.runs.extend(started);
    // The first outcome's write is in flight while the other five runs end.
    held.held.set(true);
    assert!(f.poll_runs().is_empty());
    let writes = f.store.committed_writes();
    held.held.set(false);
    let finished = f.poll_runs();
    assert_eq!(finished.len(), 6);
    assert!(finished
        .iter()
        .all(|(_, result)| result == &Ok(Some(JobState::Completed))));
    assert_eq!(
        f.store.committed_writes(),
        writes + 2,
        "the first outcome, then the other five in one transaction"
    );
    // `removeOnComplete: 3` counts the batch's own jobs: of the 8 completed, the newest 3 stay.
    let completed = block_on(f.queue.list(JobFilter {
        state: Some(JobState::Completed),
        ..JobFilter::default()
    }))
    .unwrap();
    let ids: Vec<String> = completed.items.iter().map(|j| j.id.clone()).collect();
    assert_eq!(ids, batch[3..].to_vec());
    assert_eq!(block_on(f.store.count(Table::Jobs)).unwrap(), 3);
    assert!(old
        .iter()
        .all(|id| block_on(f.queue.get(id)).unwrap().is_none()));
    assert_eq!(f.queue.counts().all.completed, 3);
}

#[test]
fn a_batch_skips_the_jobs_taken_from_it_and_outlives_a_dropped_run() {
    let mut f = Fixture::new();
    let held = with_held_writes(&mut f);
    let jobs: Vec<String> = (0..4)
        .map(|i| f.add("b", json!({ "mode": "hold", "i": i }), json!({})).id)
        .collect();
    f.step();
    assert_eq!(f.queue.counts().all.active, 4);
    // Another tab cancels the third job; this one has not seen it yet.
    let other = open(f.store.clone(), &f.clock, 7);
    assert_eq!(
        block_on(other.cancel(&jobs[2])).unwrap(),
        CancelOutcome::Cancelled
    );
    // The first job's outcome is being written while the three others end.
    f.release(&jobs[0], Ok(json!("done")));
    held.held.set(true);
    assert!(f.poll_runs().is_empty());
    for id in &jobs[1..] {
        f.release(id, Ok(json!("done")));
    }
    assert!(f.poll_runs().is_empty());
    // The second run, in the next batch, is dropped before that batch is written: the others
    // write its outcome anyway.
    let second = f.runs.iter().position(|run| run.id == jobs[1]).unwrap();
    drop(f.runs.remove(second));
    held.held.set(false);
    let mut finished = f.poll_runs();
    finished.sort_by_key(|(id, _)| jobs.iter().position(|job| job == id));
    assert_eq!(
        finished,
        vec![
            (jobs[0].clone(), Ok(Some(JobState::Completed))),
            (jobs[2].clone(), Ok(None)),
            (jobs[3].clone(), Ok(Some(JobState::Completed)))
        ]
    );
    assert_eq!(f.job(&jobs[1]).state, JobState::Completed);
    assert_eq!(
        f.job(&jobs[2]).state,
        JobState::Cancelled,
        "not overwritten"
    );
    assert_eq!(f.job(&jobs[3]).state, JobState::Completed);
    let counts = f.queue.counts().all;
    assert_eq!(
        (counts.completed, counts.cancelled, counts.active),
        (3, 1, 0)
    );
}

#[test]
fn an_outcome_merged_into_the_started_row_is_the_finished_row() {
    let mut f = Fixture::new();
    let job = f.add("q", json!({"mode": "hold"}), json!({"attempts": 3}));
    f.step();
    let started = f.job(&job.id);
    assert_eq!(started.state, JobState::Active);
    let mut finished = started.clone();
    finished.state = JobState::Waiting;
    finished.attempts_made = 1;
    finished.seq += 7;
    finished.progress = json!({"step": 2});
    finished.result = Some(json!("partial"));
    finished.error = Some(JobFailure {
        message: "boom".into(),
        retryable: true,
    });
    finished.ready_at = Some(5);
    finished.finished_at = Some(6);
    finished.next_run_at = Some(7);
    finished.lease_until = None;
    finished.run_id = None;
    let outcome = finished.outcome_fields().unwrap();
    let mut merged = started.to_row().unwrap();
    merged.merge(outcome.clone());
    // The outcome clears what the finished record lacks (`null`), where the record's own row
    // leaves it out: the same record.
    assert_eq!(JobRecord::from_row(&merged).unwrap(), finished);
    let cleared = ["leaseUntil", "runId"];
    let own_row = finished.to_row().unwrap();
    for (name, value) in &merged.fields {
        match own_row.fields.get(name) {
            Some(own) => assert_eq!(own, value, "field `{name}`"),
            None => assert!(
                value.is_null() && cleared.contains(&name.as_str()),
                "{name}"
            ),
        }
    }
    // Every field is either written by an outcome or one an attempt's end never changes: a new
    // field must be put on one side or the other.
    finished.processed_at = Some(4);
    finished.lease_until = Some(8);
    finished.run_id = Some("r".into());
    finished.debounce_until = Some(9);
    let unchanged = [
        "name",
        "data",
        "options",
        "createdAt",
        "processedAt",
        "stalledCount",
        "debounceUntil",
    ];
    for name in finished.to_row().unwrap().fields.keys() {
        assert!(
            outcome.iter().any(|(field, _)| field == name) != unchanged.contains(&name.as_str()),
            "field `{name}`"
        );
    }
}

#[test]
fn progress_reported_after_another_tab_cancelled_the_job_leaves_it_cancelled() {
    let mut f = Fixture::new();
    let job = f.start_then_cancel_elsewhere(json!({"mode": "late-progress"}), json!({}));
    f.release(&job.id, Ok(Value::Null));
    let finished = f.step();
    assert_eq!(
        finished,
        vec![(job.id.clone(), Ok(None))],
        "outcome not written"
    );
    assert_eq!(
        *f.world.observed.borrow(),
        vec![(job.id.clone(), CancelReason::Cancelled)],
        "the report was refused and the run signalled"
    );
    let stored = f.job(&job.id);
    assert_eq!(stored.state, JobState::Cancelled, "not written back active");
    assert_eq!(stored.progress, json!(0));
    assert_eq!(f.queue.counts().all.cancelled, 1);
}

#[test]
fn a_lease_renewal_finds_a_job_cancelled_elsewhere_and_signals_its_handler() {
    let mut f = Fixture::new();
    let job = f.start_then_cancel_elsewhere(json!({"mode": "watch"}), json!({"attempts": 3}));
    // Half a lease later the renewal is refused, and the run is told.
    f.clock.advance(5_000);
    let finished = f.step();
    assert_eq!(finished, vec![(job.id.clone(), Ok(None))]);
    assert_eq!(
        *f.world.observed.borrow(),
        vec![(job.id.clone(), CancelReason::Cancelled)]
    );
    let stored = f.job(&job.id);
    assert_eq!(stored.state, JobState::Cancelled, "not written back active");
    assert_eq!(stored.lease_until, None);
    assert_eq!(f.queue.counts().all.cancelled, 1);
    assert_eq!(f.queue.counts().all.active, 0);
}

#[test]
fn a_job_starts_alike_from_its_kept_record_or_its_row_read_back() {
    let mut f = Fixture::new();
    f.register("b", 10);
    // Small data: kept since its enqueue. Over 4 KiB: read back at its start.
    let small = f.add("b", json!({"n": 1}), json!({}));
    let big = f.add("b", json!({"text": "x".repeat(5000)}), json!({}));
    let writes = f.store.committed_writes();
    let finished = f.step();
    assert_eq!(finished.len(), 2);
    assert_eq!(
        f.store.committed_writes(),
        writes + 3,
        "both started in one write, then each outcome (nothing else in flight to join)"
    );
    for job in [&small, &big] {
        let done = f.job(&job.id);
        assert_eq!(done.state, JobState::Completed);
        assert_eq!(done.attempts_made, 1);
        assert_eq!(done.result, Some(json!({"echo": job.data})));
        assert_eq!(done.data, job.data);
        assert_eq!(done.created_at, job.created_at);
        assert_eq!(done.processed_at, Some(f.now()));
        assert_eq!((done.lease_until, done.run_id.clone()), (None, None));
    }
}
