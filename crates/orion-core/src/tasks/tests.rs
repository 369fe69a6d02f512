//! The task facade and its loop, natively: a manual clock with manual timers, `MemStore`, and
//! one executor per "tab" that runs spawned work until it waits.

use std::cell::RefCell;
use std::rc::Rc;

use futures_executor::LocalPool;
use futures_util::task::LocalSpawnExt;
use serde_json::{json, Value};

use super::*;
use crate::clock::ManualClock;
use crate::store::MemStore;
use crate::testing::ManualTimers;

/// One tab's worker: its task engines on the shared store, its executor, what it emitted and
/// published.
struct Tab {
    tasks: Rc<Tasks>,
    pool: RefCell<LocalPool>,
    timers: Rc<ManualTimers>,
    events: Rc<RefCell<Vec<Event>>>,
    published: Rc<RefCell<Vec<TaskChanges>>>,
}

impl Tab {
    fn open(store: &Rc<MemStore>, clock: &ManualClock, seed: u64) -> Self {
        let pool = LocalPool::new();
        let spawner = pool.spawner();
        let timers = Rc::new(ManualTimers::default());
        let events = Rc::new(RefCell::new(Vec::new()));
        let published = Rc::new(RefCell::new(Vec::new()));
        let sink = Rc::clone(&events);
        let outbox = Rc::clone(&published);
        let sleeper = Rc::clone(&timers);
        let sleep_clock = clock.clone();
        let hooks = TaskHooks {
            emit: Rc::new(move |event| sink.borrow_mut().push(event)),
            publish: Rc::new(move |changes| outbox.borrow_mut().push(changes)),
            spawn: Rc::new(move |work| {
                spawner.spawn_local(work).expect("the executor is alive");
            }),
            sleep: Rc::new(move |ms| sleeper.sleep(&sleep_clock, ms)),
            alerts: Rc::new(|_| {}),
            schemas: Rc::new(super::definition::tests::TinySchemas),
            report: Rc::new(|outcome| {
                if let Err(reason) = outcome {
                    panic!("a tick failed: {reason}");
                }
            }),
        };
        let store: Rc<dyn Store> = store.clone();
        let tasks = crate::store::conformance::block_on(Tasks::open(
            store,
            clock.shared(),
            seed,
            TaskSettings::default(),
            hooks.clone(),
        ))
        .expect("opens");
        (hooks.spawn)(tasks.drive());
        let tab = Self {
            tasks,
            pool: RefCell::new(pool),
            timers,
            events,
            published,
        };
        tab.settle();
        tab
    }

    /// Runs everything that can run without the clock moving.
    fn settle(&self) {
        self.timers.fire();
        self.pool.borrow_mut().run_until_stalled();
    }

    /// Runs `future` to its end on this tab's executor.
    fn run<T: 'static>(&self, future: impl std::future::Future<Output = T> + 'static) -> T {
        let out = crate::testing::spawn_into_slot(&self.pool.borrow(), future);
        self.settle();
        let result = out.borrow_mut().take();
        result.expect("the future finished without outside work")
    }

    fn runs(&self) -> Vec<TaskRun> {
        self.events
            .borrow()
            .iter()
            .filter_map(|event| match event {
                Event::TaskRun(run) => Some(run.clone()),
                _ => None,
            })
            .collect()
    }

    fn aborts(&self) -> Vec<String> {
        self.events
            .borrow()
            .iter()
            .filter_map(|event| match event {
                Event::TaskAbort { run_id } => Some(run_id.clone()),
                _ => None,
            })
            .collect()
    }

    fn define(&self, spec: Value) {
        self.tasks
            .define(TaskSpec::from_json(spec).expect("a valid spec"))
            .expect("defines");
        self.settle();
    }

    fn schedule(
        &self,
        source: TaskSource,
        name: &str,
        payload: Value,
        options: Value,
    ) -> TaskStatus {
        let tasks = Rc::clone(&self.tasks);
        let name = name.to_owned();
        self.run(async move { tasks.schedule(source, &name, payload, options).await })
            .expect("schedules")
    }

    fn status(&self, id: &str) -> TaskStatus {
        let tasks = Rc::clone(&self.tasks);
        let id = id.to_owned();
        self.run(async move { tasks.status(&id).await })
            .expect("reads")
            .expect("exists")
    }

    fn answer(&self, run: &TaskRun, outcome: std::result::Result<Value, HostFailure>) {
        self.tasks
            .answer(&run.run_id, outcome)
            .expect("the run waits");
        self.settle();
    }

    /// Hands what this tab published to `other`, as the broadcast channel would.
    fn deliver_to(&self, other: &Tab) {
        for changes in self.published.take() {
            other.tasks.changed_elsewhere(changes);
        }
        other.settle();
    }
}

fn send_spec() -> Value {
    json!({
        "name": "send",
        "kind": "queue",
        "concurrency": 2,
        "schema": {"type": "object", "required": ["to"], "properties": {"to": {"type": "string"}}}
    })
}

#[test]
fn a_leaders_page_job_runs_in_the_page_and_its_answer_completes_it() {
    let clock = ManualClock::new(1_000);
    let store = Rc::new(MemStore::new());
    let tab = Tab::open(&store, &clock, 1);
    tab.define(send_spec());
    let job = tab.schedule(TaskSource::Queue, "send", json!({"to": "ada"}), Value::Null);
    assert_eq!(job.state, "waiting");
    assert!(
        tab.runs().is_empty(),
        "a worker that does not lead runs nothing"
    );

    tab.tasks.become_leader();
    tab.settle();
    let runs = tab.runs();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].task_id, job.id);
    assert_eq!(runs[0].payload, json!({"to": "ada"}));
    assert_eq!(runs[0].role, RunKind::Job);
    assert_eq!(runs[0].attempt, 1);
    assert_eq!(tab.status(&job.id).state, "active");

    tab.answer(&runs[0], Ok(json!({"sent": true})));
    let done = tab.status(&job.id);
    assert_eq!(done.state, "completed");
    assert_eq!(done.result, Some(json!({"sent": true})));
    assert_eq!(done.source, TaskSource::Queue);
}

#[test]
fn a_payload_that_breaks_the_schema_is_refused_and_nothing_is_stored() {
    let clock = ManualClock::new(1_000);
    let store = Rc::new(MemStore::new());
    let tab = Tab::open(&store, &clock, 1);
    tab.define(send_spec());
    let tasks = Rc::clone(&tab.tasks);
    let error = tab
        .run(async move {
            tasks
                .schedule(TaskSource::Queue, "send", json!({"to": 7}), Value::Null)
                .await
        })
        .unwrap_err();
    assert!(
        matches!(&error, Error::InvalidInput { field, .. } if field == "payload.to"),
        "{error:?}"
    );
    assert_eq!(tab.tasks.counts().jobs.all.waiting, 0);
    assert!(tab.published.borrow().is_empty());
}

#[test]
fn a_retryable_page_failure_retries_with_the_same_idempotency_key() {
    let clock = ManualClock::new(1_000);
    let store = Rc::new(MemStore::new());
    let tab = Tab::open(&store, &clock, 1);
    tab.define(send_spec());
    tab.tasks.become_leader();
    let job = tab.schedule(
        TaskSource::Queue,
        "send",
        json!({"to": "ada"}),
        json!({"attempts": 3, "backoff": {"type": "fixed", "delay": 500}}),
    );
    tab.settle();
    let first = tab.runs()[0].clone();
    tab.answer(
        &first,
        Err(HostFailure {
            message: "offline".into(),
            retryable: true,
        }),
    );
    assert_eq!(tab.status(&job.id).state, "delayed");
    assert_eq!(tab.runs().len(), 1, "not before the backoff");
    clock.advance(500);
    tab.settle();
    let runs = tab.runs();
    assert_eq!(runs.len(), 2, "the timer woke the loop for the retry");
    assert_eq!(runs[1].attempt, 2);
    assert_eq!(runs[1].idempotency_key, first.idempotency_key);
    assert_eq!(tab.status(&job.id).error.as_deref(), Some("offline"));
}

#[test]
fn cancelling_a_running_page_job_aborts_it_in_the_page() {
    let clock = ManualClock::new(1_000);
    let store = Rc::new(MemStore::new());
    let tab = Tab::open(&store, &clock, 1);
    tab.define(send_spec());
    tab.tasks.become_leader();
    let job = tab.schedule(TaskSource::Queue, "send", json!({"to": "ada"}), Value::Null);
    tab.settle();
    let run = tab.runs()[0].clone();
    let tasks = Rc::clone(&tab.tasks);
    let id = job.id.clone();
    tab.run(async move { tasks.cancel(&id).await }).unwrap();
    tab.settle();
    assert_eq!(tab.aborts(), vec![run.run_id.clone()]);
    assert_eq!(tab.status(&job.id).state, "cancelled");
    assert!(
        tab.tasks.answer(&run.run_id, Ok(json!(1))).is_err(),
        "a late answer is refused"
    );
}

#[test]
fn pausing_a_waiting_job_holds_it_until_resumed() {
    let clock = ManualClock::new(1_000);
    let store = Rc::new(MemStore::new());
    let tab = Tab::open(&store, &clock, 1);
    tab.define(send_spec());
    let job = tab.schedule(TaskSource::Queue, "send", json!({"to": "ada"}), Value::Null);
    let tasks = Rc::clone(&tab.tasks);
    let id = job.id.clone();
    let paused = tab
        .run(async move { tasks.pause(&id).await })
        .unwrap()
        .unwrap();
    assert_eq!(paused.state, "paused");
    tab.tasks.become_leader();
    tab.settle();
    assert!(tab.runs().is_empty());
    let tasks = Rc::clone(&tab.tasks);
    let id = job.id.clone();
    tab.run(async move { tasks.resume(&id).await }).unwrap();
    tab.settle();
    assert_eq!(tab.runs().len(), 1);
}

#[test]
fn a_page_workflow_runs_step_by_step_and_compensates_on_a_fatal_failure() {
    let clock = ManualClock::new(1_000);
    let store = Rc::new(MemStore::new());
    let tab = Tab::open(&store, &clock, 1);
    tab.define(json!({
        "name": "order",
        "kind": "workflow",
        "steps": [{"name": "reserve", "compensate": true}, {"name": "charge"}]
    }));
    tab.tasks.become_leader();
    let flow = tab.schedule(
        TaskSource::Workflow,
        "order",
        json!({"sku": "x"}),
        json!({"workflowId": "order-1"}),
    );
    assert_eq!(flow.id, "order-1");
    assert_eq!(flow.source, TaskSource::Workflow);
    tab.settle();
    let reserve = tab.runs()[0].clone();
    assert_eq!(reserve.step.as_deref(), Some("reserve"));
    assert_eq!(reserve.role, RunKind::Step);
    tab.answer(&reserve, Ok(json!({"held": 1})));
    let charge = tab.runs()[1].clone();
    assert_eq!(charge.step.as_deref(), Some("charge"));
    assert_eq!(
        charge.results.as_ref().and_then(|r| r.get("reserve")),
        Some(&json!({"held": 1}))
    );
    tab.answer(
        &charge,
        Err(HostFailure {
            message: "card declined".into(),
            retryable: false,
        }),
    );
    let undo = tab.runs()[2].clone();
    assert_eq!(undo.role, RunKind::Compensation);
    assert_eq!(undo.step.as_deref(), Some("reserve"));
    assert_eq!(undo.step_result, Some(json!({"held": 1})));
    tab.answer(&undo, Ok(Value::Null));
    let done = tab.status("order-1");
    assert_eq!(done.state, "compensated");
    assert_eq!(tab.runs().len(), 3);
}

#[test]
fn the_leader_runs_what_another_tab_scheduled_once_told() {
    let clock = ManualClock::new(1_000);
    let store = Rc::new(MemStore::new());
    let leader = Tab::open(&store, &clock, 1);
    let other = Tab::open(&store, &clock, 2);
    for tab in [&leader, &other] {
        tab.define(send_spec());
    }
    leader.tasks.become_leader();
    leader.settle();
    let job = other.schedule(TaskSource::Queue, "send", json!({"to": "bo"}), Value::Null);
    other.settle();
    assert!(other.runs().is_empty());
    assert!(leader.runs().is_empty(), "not told yet");
    other.deliver_to(&leader);
    let runs = leader.runs();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].task_id, job.id);
}

#[test]
fn a_schedule_fires_on_the_leader_when_its_timer_is_due() {
    let clock = ManualClock::new(1_000);
    let store = Rc::new(MemStore::new());
    let tab = Tab::open(&store, &clock, 1);
    tab.define(send_spec());
    tab.tasks.become_leader();
    let tasks = Rc::clone(&tab.tasks);
    tab.run(async move {
        tasks
            .upsert_schedule(
                "nightly",
                json!({"every": 60_000}),
                json!({"name": "send", "data": {"to": "ops"}}),
            )
            .await
    })
    .unwrap();
    tab.settle();
    assert!(tab.runs().is_empty());
    // `every` aligns occurrences to multiples of the interval (as BullMQ does): due at 60 000.
    clock.advance(58_999);
    tab.settle();
    assert!(tab.runs().is_empty(), "not before it is due");
    clock.advance(1);
    tab.settle();
    let runs = tab.runs();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].task_id, "nightly:60000");
}

#[test]
fn a_schedule_template_is_checked_against_its_tasks_schema() {
    let clock = ManualClock::new(1_000);
    let store = Rc::new(MemStore::new());
    let tab = Tab::open(&store, &clock, 1);
    tab.define(send_spec());
    let tasks = Rc::clone(&tab.tasks);
    let error = tab
        .run(async move {
            tasks
                .upsert_schedule(
                    "bad",
                    json!({"every": 1000}),
                    json!({"name": "send", "data": {}}),
                )
                .await
        })
        .unwrap_err();
    assert!(
        matches!(&error, Error::InvalidInput { field, .. } if field == "template.data"),
        "{error:?}"
    );
}

#[test]
fn a_new_leader_takes_over_a_job_whose_leader_died_mid_run() {
    let clock = ManualClock::new(1_000);
    let store = Rc::new(MemStore::new());
    let first = Tab::open(&store, &clock, 1);
    first.define(send_spec());
    first.tasks.become_leader();
    let job = first.schedule(TaskSource::Queue, "send", json!({"to": "ada"}), Value::Null);
    first.settle();
    let lost = first.runs()[0].clone();
    // The tab closes with the run unanswered: its worker, executor and loop are gone.
    drop(first);

    let second = Tab::open(&store, &clock, 2);
    second.define(send_spec());
    second.tasks.become_leader();
    second.settle();
    assert!(second.runs().is_empty(), "the lease still holds");
    clock.advance(30_000);
    second.settle();
    let runs = second.runs();
    assert_eq!(runs.len(), 1, "taken back after the lease expired");
    assert_eq!(runs[0].task_id, job.id);
    assert_eq!(runs[0].attempt, 2);
    assert_eq!(runs[0].idempotency_key, lost.idempotency_key);
    second.answer(&runs[0], Ok(json!("done")));
    assert_eq!(second.status(&job.id).state, "completed");
}

#[test]
fn status_of_an_unknown_id_is_none() {
    let clock = ManualClock::new(1_000);
    let store = Rc::new(MemStore::new());
    let tab = Tab::open(&store, &clock, 1);
    let tasks = Rc::clone(&tab.tasks);
    assert_eq!(
        tab.run(async move { tasks.status("nope").await }).unwrap(),
        None
    );
}

#[test]
fn outcomes_feed_the_metrics_and_a_failure_rate_alert_fires_and_resolves() {
    let clock = ManualClock::new(1_000);
    let store = Rc::new(MemStore::new());
    let tab = Tab::open(&store, &clock, 1);
    tab.define(send_spec());
    tab.tasks
        .configure_alerts(json!({"taskFailureRate": {"threshold": 0.4, "window": 60_000}}))
        .unwrap();
    tab.tasks.become_leader();
    tab.settle();
    for to in ["a", "b"] {
        tab.schedule(TaskSource::Queue, "send", json!({ "to": to }), Value::Null);
    }
    tab.settle();
    let runs = tab.runs();
    assert_eq!(runs.len(), 2);
    clock.advance(40);
    tab.answer(&runs[0], Ok(json!(1)));
    tab.answer(
        &runs[1],
        Err(HostFailure {
            message: "bounced".into(),
            retryable: false,
        }),
    );
    let report = tab.tasks.metrics(Some(60_000)).unwrap();
    let send = report
        .queues
        .iter()
        .find(|q| q.queue == "send")
        .expect("the queue is tracked");
    assert_eq!(
        (
            send.stats.completed,
            send.stats.failed,
            send.stats.final_failed
        ),
        (1, 1, 1)
    );
    assert_eq!(send.stats.run.max, Some(40));

    // The loop evaluates the rules at its next wake-up: 1 failure in 2 attempts is over 0.4.
    clock.advance(ALERT_EVALUATION_MS);
    tab.settle();
    let alerts: Vec<_> = tab
        .events
        .borrow()
        .iter()
        .filter_map(|e| match e {
            Event::Alert(alert) => Some((alert.subject.clone(), alert.state)),
            _ => None,
        })
        .collect();
    assert_eq!(
        alerts,
        vec![("send".to_owned(), crate::task_metrics::AlertState::Firing)]
    );

    // Once the failure's minute is out of the window, it resolves.
    clock.advance(120_000);
    tab.settle();
    let last = tab.events.borrow().iter().rev().find_map(|e| match e {
        Event::Alert(alert) => Some(alert.state),
        _ => None,
    });
    assert_eq!(last, Some(crate::task_metrics::AlertState::Resolved));
}
