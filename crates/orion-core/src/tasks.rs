//! One task API over the job queue, its schedulers and the workflow engine: what `orion.tasks`
//! talks to, and the loop that drives all three.
//!
//! # Tasks
//!
//! A task is named work the page (or the worker) defines once and schedules many times: a
//! **queue** task runs as a job ([`crate::jobs`]), a **workflow** task as a checkpointed workflow
//! ([`crate::workflows`]). The page defines a task with its kind, an optional JSON Schema for its
//! payload, a queue concurrency or a list of steps ([`TaskSpec`]); every payload is checked against
//! that schema before anything is stored. Its code runs in the page: each attempt is a `task_run`
//! event the page answers ([`host`]). [`Tasks::status`], [`Tasks::cancel`], [`Tasks::pause`] and
//! [`Tasks::resume`] take either kind's id and answer a [`TaskStatus`] with its `source`.
//!
//! # Driving: one leader per database
//!
//! Every tab's worker opens the engines on the same database, so each can schedule, read and
//! control tasks; only the **leader** (the holder of the database's Web Lock) ticks them: it alone
//! starts jobs, fires schedules and runs workflows. A worker that writes a task tells the others
//! ([`TaskChanges`], over a broadcast channel), and the leader re-reads those rows before its next
//! tick; a worker that becomes leader re-reads everything first. The loop ([`Tasks::drive`]) ticks
//! the schedulers, the queue and the workflows, hands the started runs to the platform's executor,
//! and sleeps until the earliest `next_wake_at` or until woken: by a write, by the end of a run,
//! or by another tab's changes.

pub(crate) mod definition;
mod host;
mod status;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use futures_channel::mpsc;
use futures_util::future::{select, Either};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use definition::{
    PayloadCheck, SchemaCompiler, StepSpec, TaskSource, TaskSpec, MAX_SCHEMA_BYTES, MAX_TASKS,
};
pub use host::{HostFailure, RunKind, TaskRun};
pub use status::{TaskPage, TaskStatus};

use crate::clock::SharedClock;
use crate::embedding::LocalBoxFuture;
use crate::error::{Error, Result};
use crate::input::{check_id, from_json_at};
use crate::jobs::{
    CancelOutcome, JobContext, JobCounts, JobFilter, JobOptions, JobQueue, JobState, JobTemplate,
    QueueConfig, ScheduleSpec, Scheduler, SchedulerRecord, MAX_CONCURRENCY,
};
use crate::protocol::Event;
use crate::store::Store;
use crate::task_metrics::{
    AlertEvent, AlertRules, TaskMetrics, TaskMetricsReport, WorkflowOutcome,
};
use crate::workflows::{
    EngineConfig, Step, StepContext, WorkflowDefinition, WorkflowEngine, WorkflowFilter,
    WorkflowOptions, WorkflowRecord, WorkflowStatus,
};
use definition::Registry;
use host::{HostRuns, ProgressFn};

/// Told of each workflow of one type that this worker ran to its end, as it was written.
pub type FinishedListener = Rc<dyn Fn(&WorkflowRecord)>;

/// Waits this many ms (the platform's timer).
pub type Sleep = Rc<dyn Fn(u64) -> LocalBoxFuture<'static, ()>>;

/// Runs a future to completion on the platform's executor.
pub type Spawn = Rc<dyn Fn(LocalBoxFuture<'static, ()>)>;

/// The rows one worker changed, for the others to re-read. On the wire `{jobs, workflows,
/// schedules}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TaskChanges {
    /// Job ids.
    pub jobs: Vec<String>,
    /// Workflow ids.
    pub workflows: Vec<String>,
    /// Whether a scheduler was added, changed or removed.
    pub schedules: bool,
    /// Whether a queue was paused or resumed.
    pub queues: bool,
}

impl TaskChanges {
    fn job(id: &str) -> Self {
        Self {
            jobs: vec![id.to_owned()],
            ..Self::default()
        }
    }

    fn workflow(id: &str) -> Self {
        Self {
            workflows: vec![id.to_owned()],
            ..Self::default()
        }
    }
}

/// What the tasks need from the platform.
#[derive(Clone)]
pub struct TaskHooks {
    /// Posts an event to the page at once (`task_run`, `task_abort`).
    pub emit: Rc<dyn Fn(Event)>,
    /// Tells the other workers on the database which rows this one changed.
    pub publish: Rc<dyn Fn(TaskChanges)>,
    /// Runs started jobs and workflows.
    pub spawn: Spawn,
    /// The timer the loop sleeps on.
    pub sleep: Sleep,
    /// Told of each tick's outcome (the `tasks` health component).
    pub report: Rc<dyn Fn(std::result::Result<(), String>)>,
    /// Told which alerts fire after each evaluation (for the health report).
    pub alerts: Rc<dyn Fn(Vec<AlertEvent>)>,
    /// Compiles the payload schemas of page-defined tasks.
    pub schemas: Rc<dyn SchemaCompiler>,
}

/// How long the loop waits after a failed tick before the next one, in ms.
pub const TICK_RETRY_MS: u64 = 1_000;

/// How often the loop re-evaluates alert rules while any is configured, in ms: a backlog alert
/// must see the backlog last, and a failure-rate alert resolves as its window slides on.
pub const ALERT_EVALUATION_MS: u64 = 5_000;

/// How the task engines run, from `Orion.create({tasks})`. On the wire `{leaseMs?}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskSettings {
    /// How long (ms) a running job or workflow is held before another worker may take it back
    /// when its worker died (500 to 3,600,000; default 30,000). Shorter means a faster takeover
    /// after a crash, and more lease renewals while tasks run.
    #[serde(default)]
    pub lease_ms: Option<u32>,
}

impl TaskSettings {
    /// Checks the ranges: `ERR_INVALID_INPUT` on `tasks.leaseMs`.
    pub fn validate(&self) -> Result<()> {
        match self.lease_ms {
            Some(ms) if !(500..=3_600_000).contains(&ms) => Err(Error::invalid_input(
                "tasks.leaseMs",
                format!("must be from 500 to 3600000 ms, got {ms}"),
            )),
            _ => Ok(()),
        }
    }
}

/// Options of a workflow task as `tasks.complex.schedule` takes them: the workflow options plus
/// the type to run. (The workflow options refuse unknown fields; serde cannot here, with flatten.)
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ComplexOptions {
    #[serde(default)]
    workflow_type: Option<String>,
    #[serde(flatten)]
    options: Map<String, Value>,
}

/// Which tasks [`Tasks::list`] returns. On the wire `{source?, state?, name?, limit?, after?}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskFilter {
    /// `queue` (default) or `workflow`.
    #[serde(default)]
    pub source: Option<TaskSource>,
    /// Only this state (a job state, or a workflow status).
    #[serde(default)]
    pub state: Option<String>,
    /// Only this queue (queue tasks).
    #[serde(default)]
    pub name: Option<String>,
    /// At most this many (1 to 1000; default 100).
    #[serde(default)]
    pub limit: Option<usize>,
    /// After this id (the previous page's `next`).
    #[serde(default)]
    pub after: Option<String>,
}

/// Counts for `tasks.counts()`: jobs per state and queue, and the runs waiting for the page.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskCounts {
    /// The queue's counts.
    pub jobs: JobCounts,
    /// Page handler calls in flight.
    pub host_runs: usize,
    /// Whether this worker drives the tasks (is its database's leader).
    pub leader: bool,
}

/// The task engines of one worker: see the [module docs](self).
pub struct Tasks {
    queue: JobQueue,
    scheduler: Scheduler,
    engine: WorkflowEngine,
    clock: SharedClock,
    registry: RefCell<Registry>,
    host: Rc<HostRuns>,
    hooks: TaskHooks,
    leader: Cell<bool>,
    /// Set when this worker became leader: re-read everything before the next tick.
    reload: Cell<bool>,
    /// Rows other workers changed, to re-read before the next tick.
    changed: RefCell<TaskChanges>,
    wake: mpsc::UnboundedSender<()>,
    woken: RefCell<Option<mpsc::UnboundedReceiver<()>>>,
    metrics: Rc<RefCell<TaskMetrics>>,
    /// By workflow type.
    finished: Rc<RefCell<HashMap<String, FinishedListener>>>,
}

impl Tasks {
    /// Opens the queue, the schedulers and the workflows on `store`. `seed` makes the ids and
    /// lease names of this worker unique.
    pub async fn open(
        store: Rc<dyn Store>,
        clock: SharedClock,
        seed: u64,
        settings: TaskSettings,
        hooks: TaskHooks,
    ) -> Result<Rc<Self>> {
        settings.validate()?;
        let queue_defaults = QueueConfig::default();
        let queue = JobQueue::open(
            Rc::clone(&store),
            clock.clone(),
            QueueConfig {
                seed,
                lease_ms: settings.lease_ms.map_or(queue_defaults.lease_ms, u64::from),
                ..queue_defaults
            },
        )
        .await?;
        let scheduler = Scheduler::open(queue.clone()).await?;
        let engine_defaults = EngineConfig::default();
        let engine = WorkflowEngine::open(
            store,
            clock.clone(),
            EngineConfig {
                seed: seed.rotate_left(17),
                lease_ms: settings
                    .lease_ms
                    .map_or(engine_defaults.lease_ms, u64::from),
                ..engine_defaults
            },
        )
        .await?;
        let (wake, woken) = mpsc::unbounded();
        let metrics = Rc::new(RefCell::new(TaskMetrics::new()));
        queue.set_observer(job_observer(&metrics, clock.clone()));
        let finished = Rc::new(RefCell::new(HashMap::new()));
        engine.set_observer(workflow_observer(
            &metrics,
            clock.clone(),
            Rc::clone(&finished),
        ));
        Ok(Rc::new(Self {
            queue,
            scheduler,
            engine,
            clock,
            registry: RefCell::new(Registry::default()),
            host: HostRuns::new(Rc::clone(&hooks.emit)),
            hooks,
            leader: Cell::new(false),
            reload: Cell::new(false),
            changed: RefCell::new(TaskChanges::default()),
            wake,
            woken: RefCell::new(Some(woken)),
            metrics,
            finished,
        }))
    }

    /// The job queue, for tasks whose handlers are Rust (registered with
    /// [`JobQueue::register`]).
    pub fn queue(&self) -> &JobQueue {
        &self.queue
    }

    /// The workflow engine, for workflows whose steps are Rust.
    pub fn engine(&self) -> &WorkflowEngine {
        &self.engine
    }

    /// Tells `listener` of each workflow of `workflow_type` that this worker runs to its end
    /// (completed, failed, compensated, cancelled or timed out), replacing an earlier listener.
    pub fn on_finished(&self, workflow_type: &str, listener: FinishedListener) {
        self.finished
            .borrow_mut()
            .insert(workflow_type.to_owned(), listener);
    }

    /// Defines (or redefines) a task whose code runs in the page.
    pub fn define(&self, spec: TaskSpec) -> Result<()> {
        let mut registry = self.registry.borrow_mut();
        match spec.kind {
            TaskSource::Queue => {
                let concurrency = spec.concurrency.unwrap_or(1);
                if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
                    return Err(Error::invalid_input(
                        "task.concurrency",
                        format!("must be from 1 to {MAX_CONCURRENCY}, got {concurrency}"),
                    ));
                }
                registry.define(&spec, &*self.hooks.schemas)?;
                let host = Rc::clone(&self.host);
                self.queue
                    .register(&spec.name, concurrency, move |context| {
                        job_run(&host, context)
                    })?;
            }
            TaskSource::Workflow => {
                let mut definition = WorkflowDefinition::new();
                for step in &spec.steps {
                    definition = definition.step(page_step(&self.host, step));
                }
                // The definition checks names and policies, naming `definition.steps[i]...`.
                self.engine
                    .register(&spec.name, definition)
                    .map_err(|error| rename_field(error, "definition", "task"))?;
                registry.define(&spec, &*self.hooks.schemas)?;
            }
        }
        drop(registry);
        self.wake();
        Ok(())
    }

    /// Schedules a task: `queue` enqueues a job with [`JobOptions`] (`priority`, `attempts`,
    /// `backoff`, `delay`, `jobId`, `debounce`, ...), `workflow` starts a workflow with
    /// `{workflowType?, workflowId?, retry?, timeout?, stepTimeout?}` (the type defaults to
    /// `name`). The payload is checked against the task's schema first; nothing is stored on error.
    pub async fn schedule(
        &self,
        source: TaskSource,
        name: &str,
        payload: Value,
        options: Value,
    ) -> Result<TaskStatus> {
        check_id("name", name)?;
        match source {
            TaskSource::Queue => {
                let options = JobOptions::from_json(options)?;
                self.registry.borrow().check(source, name, &payload)?;
                let record = self.queue.enqueue(name, payload, options).await?;
                self.changed_here(TaskChanges::job(&record.id));
                Ok(TaskStatus::of_job(&record))
            }
            TaskSource::Workflow => {
                let options = if options.is_null() {
                    Value::Object(Map::new())
                } else {
                    options
                };
                let ComplexOptions {
                    workflow_type,
                    options,
                } = from_json_at("options", options)?;
                let workflow_type = workflow_type.unwrap_or_else(|| name.to_owned());
                check_id("options.workflowType", &workflow_type)?;
                let options = WorkflowOptions::from_json(Value::Object(options))?;
                self.registry
                    .borrow()
                    .check(source, &workflow_type, &payload)?;
                let record = self
                    .engine
                    .start_workflow(&workflow_type, payload, options)
                    .await?;
                self.changed_here(TaskChanges::workflow(&record.id));
                Ok(TaskStatus::of_workflow(&record))
            }
        }
    }

    /// The task with this id: a job if the queue has one, else a workflow; `None` if neither.
    pub async fn status(&self, id: &str) -> Result<Option<TaskStatus>> {
        check_id("taskId", id)?;
        if let Some(job) = self.queue.get(id).await? {
            return Ok(Some(TaskStatus::of_job(&job)));
        }
        Ok(self
            .engine
            .get_workflow(id)
            .await?
            .map(|workflow| TaskStatus::of_workflow(&workflow)))
    }

    /// Cancels a task: a pending job is cancelled at once, a running one gets its signal (the
    /// page's `AbortSignal` fires) and ends `cancelled`; a workflow compensates its completed
    /// steps and ends `cancelled`. Answers the status after; `None` for an unknown id.
    pub async fn cancel(&self, id: &str) -> Result<Option<TaskStatus>> {
        check_id("taskId", id)?;
        match self.queue.cancel(id).await? {
            CancelOutcome::NotFound => {
                self.engine.cancel_workflow(id).await?;
                self.changed_here(TaskChanges::workflow(id));
            }
            _ => self.changed_here(TaskChanges::job(id)),
        }
        self.status(id).await
    }

    /// Pauses a task: a waiting or delayed job stays `paused` until resumed; a running workflow
    /// starts no further step. `None` for an unknown id.
    pub async fn pause(&self, id: &str) -> Result<Option<TaskStatus>> {
        self.pause_or_resume(id, true).await
    }

    /// Resumes a paused task. `None` for an unknown id.
    pub async fn resume(&self, id: &str) -> Result<Option<TaskStatus>> {
        self.pause_or_resume(id, false).await
    }

    async fn pause_or_resume(&self, id: &str, pause: bool) -> Result<Option<TaskStatus>> {
        check_id("taskId", id)?;
        if self.queue.get(id).await?.is_some() {
            let record = if pause {
                self.queue.pause_job(id).await?
            } else {
                self.queue.resume_job(id).await?
            };
            self.changed_here(TaskChanges::job(id));
            return Ok(Some(TaskStatus::of_job(&record)));
        }
        if self.engine.get_workflow(id).await?.is_none() {
            return Ok(None);
        }
        let record = if pause {
            self.engine.pause_workflow(id).await?
        } else {
            self.engine.resume_workflow(id).await?
        };
        self.changed_here(TaskChanges::workflow(id));
        Ok(Some(TaskStatus::of_workflow(&record)))
    }

    /// Runs a failed job again (its attempts start over).
    pub async fn retry(&self, id: &str) -> Result<TaskStatus> {
        check_id("taskId", id)?;
        let record = self.queue.retry(id).await?;
        self.changed_here(TaskChanges::job(id));
        Ok(TaskStatus::of_job(&record))
    }

    /// Sends signal `name` with `payload` to a running workflow.
    pub async fn signal(&self, id: &str, name: &str, payload: Value) -> Result<()> {
        self.engine.signal(id, name, payload).await?;
        self.changed_here(TaskChanges::workflow(id));
        Ok(())
    }

    /// A page of tasks of one source, in id order.
    pub async fn list(&self, filter: TaskFilter) -> Result<TaskPage> {
        let limit = filter.limit.unwrap_or(100);
        match filter.source.unwrap_or(TaskSource::Queue) {
            TaskSource::Queue => {
                let state = filter
                    .state
                    .as_deref()
                    .map(|state| JobState::parse(state, "filter.state"))
                    .transpose()?;
                let page = self
                    .queue
                    .list(JobFilter {
                        state,
                        name: filter.name,
                        limit,
                        after: filter.after,
                    })
                    .await?;
                Ok(TaskPage {
                    items: page.items.iter().map(TaskStatus::of_job).collect(),
                    next: page.next,
                })
            }
            TaskSource::Workflow => {
                if filter.name.is_some() {
                    return Err(Error::invalid_input(
                        "filter.name",
                        "filters queue tasks only",
                    ));
                }
                let status = filter
                    .state
                    .map(|state| {
                        WorkflowStatus::ALL
                            .into_iter()
                            .find(|status| status.name() == state)
                            .ok_or_else(|| {
                                Error::invalid_input(
                                    "filter.state",
                                    format!("`{state}` is not a workflow status"),
                                )
                            })
                    })
                    .transpose()?;
                let page = self
                    .engine
                    .list_workflows(WorkflowFilter {
                        status,
                        limit,
                        after: filter.after,
                    })
                    .await?;
                Ok(TaskPage {
                    items: page.items.iter().map(TaskStatus::of_workflow).collect(),
                    next: page.next,
                })
            }
        }
    }

    /// Jobs per state and queue.
    pub fn counts(&self) -> TaskCounts {
        TaskCounts {
            jobs: self.queue.counts(),
            host_runs: self.host.waiting(),
            leader: self.leader.get(),
        }
    }

    /// Pauses (`true`) or resumes a whole queue.
    pub async fn pause_queue(&self, name: &str, pause: bool) -> Result<()> {
        if pause {
            self.queue.pause_queue(name).await?;
        } else {
            self.queue.resume_queue(name).await?;
        }
        self.changed_here(TaskChanges {
            queues: true,
            ..TaskChanges::default()
        });
        Ok(())
    }

    /// Creates or replaces scheduler `id`, enqueueing `template` (a queue task, its data checked
    /// against the task's schema) per `spec`.
    pub async fn upsert_schedule(
        &self,
        id: &str,
        spec: Value,
        template: Value,
    ) -> Result<SchedulerRecord> {
        let spec = ScheduleSpec::from_json(spec)?;
        let template = JobTemplate::from_json(template)?;
        self.registry
            .borrow()
            .check(TaskSource::Queue, &template.name, &template.data)
            .map_err(|error| rename_field(error, "payload", "template.data"))?;
        let record = self.scheduler.upsert_scheduler(id, spec, template).await?;
        self.changed_here(TaskChanges {
            schedules: true,
            ..TaskChanges::default()
        });
        Ok(record)
    }

    /// Scheduler `id`, if there is one.
    pub async fn get_schedule(&self, id: &str) -> Result<Option<SchedulerRecord>> {
        self.scheduler.get_scheduler(id).await
    }

    /// Creates or replaces one of the worker's built-in schedulers: typed, and naming a queue with
    /// a Rust handler, so the page's task registry is not consulted.
    pub async fn upsert_builtin_schedule(
        &self,
        id: &str,
        spec: ScheduleSpec,
        template: JobTemplate,
    ) -> Result<SchedulerRecord> {
        let record = self.scheduler.upsert_scheduler(id, spec, template).await?;
        self.changed_here(TaskChanges {
            schedules: true,
            ..TaskChanges::default()
        });
        Ok(record)
    }

    /// Removes scheduler `id`; answers whether there was one.
    pub async fn remove_schedule(&self, id: &str) -> Result<bool> {
        let removed = self.scheduler.remove_scheduler(id).await?;
        self.changed_here(TaskChanges {
            schedules: true,
            ..TaskChanges::default()
        });
        Ok(removed)
    }

    /// Every scheduler.
    pub async fn list_schedules(&self) -> Result<Vec<SchedulerRecord>> {
        self.scheduler.list_schedulers().await
    }

    /// Completed and failed counts per queue and minute, wait and run percentiles, workflow and
    /// schedule figures, over the last `window_ms` (default 24 h). They cover the jobs and
    /// workflows this worker ran or changed since it started: the leader's are the whole picture.
    pub fn metrics(&self, window_ms: Option<u64>) -> Result<TaskMetricsReport> {
        self.metrics
            .borrow()
            .metrics(self.clock.now_ms(), window_ms)
    }

    /// Replaces the alert rules (`{taskFailureRate?, queueBacklog?, scheduleLate?}`); alerts then
    /// reach the page as `alert` events and show in the health report.
    pub fn configure_alerts(&self, rules: Value) -> Result<AlertRules> {
        let rules = AlertRules::from_json(rules)?;
        self.metrics.borrow_mut().configure_alerts(rules)?;
        self.wake();
        Ok(rules)
    }

    /// The page's answer to a `task_run`.
    pub fn answer(
        &self,
        run_id: &str,
        outcome: std::result::Result<Value, HostFailure>,
    ) -> Result<()> {
        self.host.answer(run_id, outcome)
    }

    /// Progress (a job's) or a cursor (a step's checkpoint) the page reports for a run.
    pub fn progress(&self, run_id: &str, value: Value) -> LocalBoxFuture<'static, Result<()>> {
        self.host.progress(run_id, value)
    }

    /// Another worker changed these rows: re-read them before the next tick.
    pub fn changed_elsewhere(&self, changes: TaskChanges) {
        {
            let mut pending = self.changed.borrow_mut();
            pending.jobs.extend(changes.jobs);
            pending.workflows.extend(changes.workflows);
            pending.schedules |= changes.schedules;
            pending.queues |= changes.queues;
        }
        self.wake();
    }

    /// This worker now drives the tasks: it re-reads everything, then ticks.
    pub fn become_leader(&self) {
        if !self.leader.replace(true) {
            self.reload.set(true);
            self.wake();
        }
    }

    /// Whether this worker drives the tasks.
    pub fn is_leader(&self) -> bool {
        self.leader.get()
    }

    /// Wakes the loop for a tick (after a write, a definition, the end of a run).
    pub fn wake(&self) {
        // Fails only once the loop is gone, when there is nothing left to wake.
        let _ = self.wake.unbounded_send(());
    }

    fn changed_here(&self, changes: TaskChanges) {
        (self.hooks.publish)(changes);
        self.wake();
    }

    /// The loop that drives the tasks while this worker leads; run it once on the platform's
    /// executor (a second call returns at once).
    pub fn drive(self: &Rc<Self>) -> LocalBoxFuture<'static, ()> {
        let Some(mut woken) = self.woken.borrow_mut().take() else {
            return Box::pin(std::future::ready(()));
        };
        let tasks = Rc::clone(self);
        Box::pin(async move {
            loop {
                let outcome = tasks.tick().await;
                // At least 1 ms, so that work that cannot start yet does not spin; after a failed
                // tick (the store refusing), a second, so that a broken store is not hammered.
                let least = if outcome.is_ok() { 1 } else { TICK_RETRY_MS };
                (tasks.hooks.report)(outcome.map_err(|error| error.to_string()));
                let delay = tasks
                    .next_wake_at()
                    .map(|at| at.saturating_sub(tasks.clock.now_ms()).max(least));
                let wait_for_wake = woken.next();
                let woke = match delay {
                    Some(ms) => match select(wait_for_wake, (tasks.hooks.sleep)(ms)).await {
                        Either::Left((woke, _)) => woke.is_some(),
                        Either::Right(_) => true,
                    },
                    None => wait_for_wake.await.is_some(),
                };
                if !woke {
                    return;
                }
                // Many wake-ups make one tick.
                while woken.try_recv().is_ok() {}
            }
        })
    }

    fn next_wake_at(&self) -> Option<u64> {
        if !self.leader.get() {
            return None;
        }
        let alerting = *self.metrics.borrow().alert_rules() != AlertRules::default();
        let evaluation = alerting.then(|| self.clock.now_ms().saturating_add(ALERT_EVALUATION_MS));
        [
            self.scheduler.next_wake_at(),
            self.queue.next_wake_at(),
            self.engine.next_wake_at(),
            evaluation,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Records the backlogs and schedule fires of a tick, then evaluates the alert rules: each
    /// transition is an `alert` event.
    fn account(&self, fired: &[crate::jobs::JobRecord]) {
        let now = self.clock.now_ms();
        let transitions = {
            let mut metrics = self.metrics.borrow_mut();
            for job in fired {
                // Scheduler job ids are `<schedulerId>:<dueMs>`.
                if let Some((scheduler, due)) = job.id.rsplit_once(':') {
                    if let Ok(due) = due.parse::<u64>() {
                        let _ = metrics.record_schedule_fire(scheduler, due, now);
                    }
                }
            }
            for (queue, counts) in &self.queue.counts().queues {
                let _ = metrics.observe_backlog(queue, counts.waiting as u64, now);
            }
            metrics.evaluate(now)
        };
        if transitions.is_empty() {
            return;
        }
        for alert in transitions {
            (self.hooks.emit)(Event::Alert(alert));
        }
        (self.hooks.alerts)(self.metrics.borrow().active_alerts());
    }

    /// Re-reads what changed, then (as leader) fires due schedules and starts jobs and workflows.
    async fn tick(self: &Rc<Self>) -> Result<()> {
        if self.reload.replace(false) {
            self.queue.reload().await?;
            self.scheduler.reload().await?;
            self.engine.reload().await?;
            self.changed.take();
        }
        let changes = self.changed.take();
        if !changes.jobs.is_empty() {
            self.queue.refresh(&changes.jobs).await?;
        }
        if !changes.workflows.is_empty() {
            self.engine.refresh(&changes.workflows).await?;
        }
        if changes.schedules {
            self.scheduler.reload().await?;
        }
        if changes.queues {
            self.queue.reload().await?;
        }
        if !self.leader.get() {
            return Ok(());
        }
        let fired = self.scheduler.tick().await?;
        let runs = self.queue.tick().await?;
        self.account(&fired);
        for run in runs {
            let tasks = Rc::downgrade(self);
            (self.hooks.spawn)(Box::pin(async move {
                // A run's own failures are stored on the job (or retried after its lease).
                let _ = run.await;
                if let Some(tasks) = tasks.upgrade() {
                    tasks.wake();
                }
            }));
        }
        for run in self.engine.tick().await? {
            let tasks = Rc::downgrade(self);
            (self.hooks.spawn)(Box::pin(async move {
                let _ = run.await;
                if let Some(tasks) = tasks.upgrade() {
                    tasks.wake();
                }
            }));
        }
        Ok(())
    }
}

/// Feeds the metrics with every job outcome the queue writes: wait is ready → started, run is
/// started → outcome.
fn job_observer(
    metrics: &Rc<RefCell<TaskMetrics>>,
    clock: SharedClock,
) -> crate::jobs::JobObserver {
    let metrics = Rc::downgrade(metrics);
    Rc::new(move |job: &crate::jobs::JobRecord| {
        let Some(metrics) = metrics.upgrade() else {
            return;
        };
        let Ok(mut metrics) = metrics.try_borrow_mut() else {
            return;
        };
        let at = job.finished_at.unwrap_or_else(|| clock.now_ms());
        let started = job.processed_at.unwrap_or(at);
        let ready = job.ready_at.unwrap_or(job.created_at);
        let wait = started.saturating_sub(ready);
        let run = at.saturating_sub(started);
        // A refused name only means this queue is not tracked; the job itself is fine.
        let _ = match job.state {
            JobState::Completed => metrics.record_completed(&job.name, at, wait, run),
            JobState::Failed => metrics.record_failed(&job.name, at, wait, run, true),
            JobState::Cancelled => metrics.record_cancelled(&job.name, at),
            _ if job.error.is_some() => metrics.record_failed(&job.name, at, wait, run, false),
            _ => Ok(()),
        };
    })
}

/// Feeds the metrics with every workflow that finishes.
fn workflow_observer(
    metrics: &Rc<RefCell<TaskMetrics>>,
    clock: SharedClock,
    listeners: Rc<RefCell<HashMap<String, FinishedListener>>>,
) -> crate::workflows::WorkflowObserver {
    let metrics = Rc::downgrade(metrics);
    Rc::new(move |workflow: &WorkflowRecord| {
        let Some(outcome) = WorkflowOutcome::from_status(workflow.status) else {
            return;
        };
        if let Some(Ok(mut metrics)) = metrics.upgrade().as_ref().map(|m| m.try_borrow_mut()) {
            let at = workflow.finished_at.unwrap_or_else(|| clock.now_ms());
            let _ = metrics.record_workflow(
                &workflow.workflow_type,
                outcome,
                at,
                at.saturating_sub(workflow.created_at),
            );
        }
        // Cloned out first: a listener may register another.
        let listener = listeners.borrow().get(&workflow.workflow_type).cloned();
        if let Some(listener) = listener {
            listener(workflow);
        }
    })
}

/// One attempt of a page-defined job: a `task_run` the page answers.
fn job_run(
    host: &Rc<HostRuns>,
    context: JobContext,
) -> LocalBoxFuture<'static, std::result::Result<Value, crate::jobs::JobError>> {
    let reporter = context.clone();
    let progress: ProgressFn = Rc::new(move |value| reporter.report_progress(value));
    host.call(
        TaskRun {
            run_id: String::new(),
            name: context.name.clone(),
            role: RunKind::Job,
            task_id: context.id.clone(),
            step: None,
            payload: context.data.clone(),
            results: None,
            cursor: None,
            step_result: None,
            attempt: context.attempt,
            idempotency_key: context.idempotency_key.clone(),
        },
        Some(progress),
    )
}

/// A workflow step (and its compensation) whose code runs in the page.
fn page_step(host: &Rc<HostRuns>, spec: &StepSpec) -> Step {
    let runner = Rc::clone(host);
    let mut step = Step::new(spec.name.clone(), move |context: StepContext| {
        let checkpointer = context.clone();
        let progress: ProgressFn = Rc::new(move |cursor| checkpointer.checkpoint(cursor));
        runner.call(step_run(&context, RunKind::Step), Some(progress))
    });
    if spec.compensate {
        let compensator = Rc::clone(host);
        step = step.compensate(move |context: StepContext| {
            compensator.call(step_run(&context, RunKind::Compensation), None)
        });
    }
    if let Some(retry) = spec.retry {
        step = step.retry(retry);
    }
    if let Some(ms) = spec.timeout {
        step = step.timeout(ms);
    }
    step
}

fn step_run(context: &StepContext, role: RunKind) -> TaskRun {
    TaskRun {
        run_id: String::new(),
        name: context.workflow_type.clone(),
        role,
        task_id: context.workflow_id.clone(),
        step: Some(context.step.clone()),
        payload: context.input.clone(),
        results: Some(context.results.clone()),
        cursor: context.cursor(),
        step_result: context.step_result.clone(),
        attempt: context.attempt,
        idempotency_key: context.idempotency_key.clone(),
    }
}

/// `error` with its field's leading `from` replaced by `to` (`definition.steps[0]` →
/// `task.steps[0]`).
fn rename_field(error: Error, from: &str, to: &str) -> Error {
    match error {
        Error::InvalidInput { field, reason } => match field.strip_prefix(from) {
            Some(rest) => Error::InvalidInput {
                field: format!("{to}{rest}"),
                reason,
            },
            None => Error::InvalidInput { field, reason },
        },
        other => other,
    }
}

#[cfg(test)]
mod tests;
