//! [`WorkflowEngine`]: start, inspect, cancel and signal workflows, and the poll-driven scheduler
//! ([`WorkflowEngine::tick`]) whose [`WorkflowRun`]s drive them step by step.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::context::{Flight, StepContext};
use super::definition::{Step, StepError, WorkflowDefinition};
use super::options::{check_id, check_json_size, WorkflowFilter, WorkflowOptions, MAX_SIGNALS};
use super::record::{
    CompensateReason, SignalRecord, StepFailure, StepRecord, StepStatus, WorkflowFailure,
    WorkflowRecord, WorkflowStatus,
};
use crate::clock::SharedClock;
use crate::embedding::LocalBoxFuture;
use crate::error::{Error, Result};
use crate::ids::IdClock;
use crate::jobs::index::{Journal, Reading};
use crate::jobs::{CancelReason, CancelSignal};
use crate::store::{Guard, Guarded, Row, Scan, Store, Table, WriteOp};

/// What [`WorkflowEngine::set_observer`] takes: a function of a workflow as it was just written.
pub type WorkflowObserver = Rc<dyn Fn(&WorkflowRecord)>;

/// How an engine instance runs its workflows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// How long (ms) a run holds a workflow before another instance may take it over; renewed by
    /// [`WorkflowEngine::tick`] while the run goes on. Default 30 s, as the job queue's.
    pub lease_ms: u64,
    /// How many workflows this instance runs at once (1 to 1000). Default 100.
    pub max_running: usize,
    /// Seeds the backoff jitter and the generated ids and names this instance's leases and
    /// signals (the platform passes a random one; tests a fixed one).
    pub seed: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            lease_ms: 30_000,
            max_running: 100,
            seed: 0,
        }
    }
}

/// A page of [`WorkflowEngine::list_workflows`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowPage {
    /// The workflows, in id order (generated ids sort by creation).
    pub items: Vec<WorkflowRecord>,
    /// Pass as `after` for the next page; `None` on the last.
    pub next: Option<String>,
}

/// What [`WorkflowEngine::cancel_workflow`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The workflow runs here: its running step's signal fired, and the run compensates.
    Signalled,
    /// The cancellation is stored: whichever instance runs the workflow next (or holds it now)
    /// compensates it.
    Requested,
    /// The workflow had already finished in this status; nothing changed.
    AlreadyFinished(WorkflowStatus),
    /// There is no workflow with this id.
    NotFound,
}

/// One run of a workflow on this instance: a future that runs its steps (or compensations) from
/// its checkpoint until it finishes or waits out a retry's backoff, resolving to the status it
/// left the workflow in, or `None` if the workflow was taken over or deleted meanwhile (nothing
/// more is written then). An error means a write failed: the workflow stays leased until the
/// lease expires, then runs again from its last checkpoint. Dropping it abandons the run the same
/// way.
#[must_use = "a workflow runs only when its WorkflowRun is polled"]
pub struct WorkflowRun {
    /// The workflow's id.
    pub id: String,
    future: LocalBoxFuture<'static, Result<Option<WorkflowStatus>>>,
}

impl std::fmt::Debug for WorkflowRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkflowRun").field("id", &self.id).finish()
    }
}

impl Future for WorkflowRun {
    type Output = Result<Option<WorkflowStatus>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.future.as_mut().poll(cx)
    }
}

/// An unfinished workflow, as the scheduler sees it without reading the store.
#[derive(Debug, Clone)]
struct Entry {
    workflow_type: String,
    lease_until: u64,
    /// When it has something to do: its backoff ends, its timeout passes, or at once.
    due_at: u64,
}

impl Entry {
    /// The entry of an unfinished workflow; `None` for a finished one.
    fn of(record: &WorkflowRecord) -> Option<Self> {
        if record.status.is_finished() {
            return None;
        }
        let running = record.status == WorkflowStatus::Running;
        let next = record.next_run_at.unwrap_or(0);
        let due_at = if running && record.cancel_requested {
            0
        } else if running && record.paused {
            // Paused: nothing is due but its timeout (which still passes) or a cancellation.
            record.deadline_at?
        } else {
            match record.deadline_at {
                Some(deadline) if running => next.min(deadline),
                _ => next,
            }
        };
        Some(Self {
            workflow_type: record.workflow_type.clone(),
            lease_until: record.lease_until.unwrap_or(0),
            due_at,
        })
    }

    fn runnable_at(&self) -> u64 {
        self.lease_until.max(self.due_at)
    }
}

struct State {
    definitions: HashMap<String, Rc<WorkflowDefinition>>,
    /// Unfinished workflows.
    index: HashMap<String, Entry>,
    in_flight: HashMap<String, Rc<Flight>>,
    /// Workflows a tick is leasing (read, not yet written).
    starting: HashSet<String>,
    /// Workflows being started (written, not yet committed): a second start with the same id
    /// returns this one.
    creating: HashMap<String, WorkflowRecord>,
    rng: fastrand::Rng,
    runs: u64,
    signals: u64,
    ids: IdClock,
    /// The workflows whose entry changed while a refresh or reload was reading the store.
    journal: Journal,
}

impl State {
    /// Indexes `record` as the workflow `id` now is (forgetting it once finished).
    fn update(&mut self, id: &str, record: &WorkflowRecord) {
        self.journal.touch(id);
        match Entry::of(record) {
            Some(entry) => {
                self.index.insert(id.to_owned(), entry);
            }
            None => {
                self.index.remove(id);
            }
        }
    }

    /// Forgets workflow `id` (gone, or unreadable).
    fn forget(&mut self, id: &str) {
        self.journal.touch(id);
        self.index.remove(id);
    }
}

/// The journal in `state` (for [`Reading`]).
fn journal(state: &mut State) -> &mut Journal {
    &mut state.journal
}

/// A workflow's row as read again: `None` if gone, `Some(Err)` if unreadable.
type Stored = Option<Result<WorkflowRecord>>;

fn read_row(row: Option<Row>) -> Stored {
    row.map(|row| WorkflowRecord::from_row(&row))
}

pub(crate) struct Inner {
    store: Rc<dyn Store>,
    clock: SharedClock,
    config: EngineConfig,
    /// Names this instance's leases and signals.
    owner: String,
    state: RefCell<State>,
    /// Told of every workflow this instance writes finished.
    observer: RefCell<Option<WorkflowObserver>>,
}

impl Inner {
    /// Tells the observer, if there is one, of `record` (written and committed). No borrow is
    /// held while it runs: it may call the engine.
    fn observe(&self, record: &WorkflowRecord) {
        let observer = self.observer.borrow().clone();
        if let Some(observer) = observer {
            observer(record);
        }
    }
}

/// A durable workflow engine over a [`Store`]: see the [module docs](super).
#[derive(Clone)]
pub struct WorkflowEngine {
    inner: Rc<Inner>,
}

impl std::fmt::Debug for WorkflowEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkflowEngine")
            .field("owner", &self.inner.owner)
            .finish_non_exhaustive()
    }
}

impl WorkflowEngine {
    /// Opens the engine on `store`: reads the unfinished (`running` and `compensating`) workflows
    /// through the `status` index (unreadable rows are skipped). Workflows still leased by a
    /// previous instance are taken over once their lease expires; the others run at the first
    /// tick that has their type registered.
    pub async fn open(
        store: Rc<dyn Store>,
        clock: SharedClock,
        config: EngineConfig,
    ) -> Result<Self> {
        if config.lease_ms < 2 {
            return Err(Error::invalid_input(
                "config.leaseMs",
                format!("must be at least 2, got {}", config.lease_ms),
            ));
        }
        if !(1..=1000).contains(&config.max_running) {
            return Err(Error::invalid_input(
                "config.maxRunning",
                format!("must be from 1 to 1000, got {}", config.max_running),
            ));
        }
        let index = load_index(store.as_ref()).await?;
        let mut rng = fastrand::Rng::with_seed(config.seed);
        let owner = format!("w{:08x}", rng.u32(..));
        Ok(Self {
            inner: Rc::new(Inner {
                store,
                clock,
                config,
                owner,
                state: RefCell::new(State {
                    definitions: HashMap::new(),
                    index,
                    in_flight: HashMap::new(),
                    starting: HashSet::new(),
                    creating: HashMap::new(),
                    rng,
                    runs: 0,
                    signals: 0,
                    ids: IdClock::default(),
                    journal: Journal::default(),
                }),
                observer: RefCell::new(None),
            }),
        })
    }

    /// Sets (or replaces) the observer: called with the record as written each time this
    /// instance writes a workflow finished (`completed`, `failed`, `compensated`, `cancelled` or
    /// `timedOut`), synchronously once the write has committed, with no borrow of the engine held
    /// (it may call the engine), once per workflow. Workflows other instances finish are reported
    /// by their own observers.
    pub fn set_observer(&self, observer: WorkflowObserver) {
        *self.inner.observer.borrow_mut() = Some(observer);
    }

    /// Reads these workflows again from the store and brings the scheduler's index up to date
    /// with them (another instance started, cancelled, signalled, paused or resumed them): an
    /// unfinished one is indexed as stored, a finished, gone or unreadable one forgotten; one this
    /// instance changed meanwhile keeps its newer local state. A workflow running here adopts at
    /// once what was stored for it, as at its next write: the signals appended, a cancellation
    /// (its running step's signal fires with [`CancelReason::Cancelled`] and it compensates), a
    /// pause or resume; if the row is gone, or another instance took the workflow over, the run
    /// stops and writes nothing more. Ids are checked like `id` elsewhere (`ERR_INVALID_INPUT`
    /// on `ids[i]`); duplicates are read once.
    pub async fn refresh(&self, ids: &[String]) -> Result<()> {
        let unique = crate::input::unique_ids(ids)?;
        if unique.is_empty() {
            return Ok(());
        }
        let inner = &self.inner;
        let reading = Reading::begin(&inner.state, journal);
        // Only the runs already here when the read starts: a row read earlier than a run's lease
        // was written would look taken over.
        let flights: HashMap<String, Rc<Flight>> = {
            let state = inner.state.borrow();
            unique
                .iter()
                .filter_map(|id| Some((id.clone(), Rc::clone(state.in_flight.get(id)?))))
                .collect()
        };
        let mut rows = Vec::with_capacity(unique.len());
        for chunk in unique.chunks(REFRESH_CHUNK) {
            rows.extend(inner.store.get(Table::Workflows, chunk.to_vec()).await?);
        }
        let mut adopt = Vec::new();
        {
            let mut state = inner.state.borrow_mut();
            for (id, row) in unique.iter().zip(rows) {
                let stored = read_row(row);
                if let Some(flight) = flights.get(id) {
                    adopt.push((Rc::clone(flight), stored));
                    continue;
                }
                if state.in_flight.contains_key(id)
                    || state.starting.contains(id)
                    || state.creating.contains_key(id)
                    || state.journal.touched_since(id, reading.mark)
                {
                    continue;
                }
                match stored {
                    Some(Ok(record)) => state.update(id, &record),
                    Some(Err(_)) | None => state.forget(id),
                }
            }
        }
        drop(reading);
        for (flight, stored) in adopt {
            adopt_stored(&flight, stored);
        }
        Ok(())
    }

    /// Rebuilds the scheduler's index from the unfinished workflows of the store, as
    /// [`WorkflowEngine::open`] builds it: for an instance that becomes the one running the
    /// workflows after others changed the store. Definitions and runs in flight are kept;
    /// workflows this instance changed while the store was read keep their newer local state; the
    /// runs here adopt what was stored for them as with [`WorkflowEngine::refresh`] (a
    /// cancellation signals the running step).
    pub async fn reload(&self) -> Result<()> {
        let inner = &self.inner;
        let reading = Reading::begin(&inner.state, journal);
        let flights: Vec<Rc<Flight>> = inner.state.borrow().in_flight.values().cloned().collect();
        let mut index = load_index(inner.store.as_ref()).await?;
        let ids: Vec<String> = flights.iter().map(|flight| flight.id()).collect();
        let rows = if ids.is_empty() {
            Vec::new()
        } else {
            inner.store.get(Table::Workflows, ids).await?
        };
        {
            let mut state = inner.state.borrow_mut();
            let state = &mut *state;
            // What this instance changed meanwhile, and what it is running, starting or
            // creating, stays as it knows it.
            let keep: Vec<String> = state
                .journal
                .touched_ids_since(reading.mark)
                .into_iter()
                .chain(state.in_flight.keys().cloned())
                .chain(state.starting.iter().cloned())
                .chain(state.creating.keys().cloned())
                .collect();
            for id in keep {
                match state.index.get(&id) {
                    Some(entry) => index.insert(id, entry.clone()),
                    None => index.remove(&id),
                };
            }
            state.index = index;
        }
        drop(reading);
        for (flight, row) in flights.iter().zip(rows) {
            adopt_stored(flight, read_row(row));
        }
        Ok(())
    }

    /// Pauses a running workflow: it starts no new step until [`WorkflowEngine::resume_workflow`].
    /// A step running now finishes (and is checkpointed, or retried per its policy) first; then
    /// the run releases the workflow. The flag is stored (`paused: true`, the status stays
    /// `running`): a paused workflow stays paused across reloads and instances. Its timeout still
    /// passes, and a cancellation still compensates it. Pausing a paused workflow returns it as it
    /// is. An unknown or finished workflow is `ERR_INVALID_INPUT` on `id`, as is a compensating
    /// one (a rollback cannot be paused). Resolves with the workflow as stored by this call.
    pub async fn pause_workflow(&self, id: &str) -> Result<WorkflowRecord> {
        self.set_paused(id, true).await
    }

    /// Resumes a paused workflow: its next step runs at the next tick (or after the backoff it
    /// was waiting out). A workflow that is not paused is returned as it is. An unknown id is
    /// `ERR_INVALID_INPUT` on `id`.
    pub async fn resume_workflow(&self, id: &str) -> Result<WorkflowRecord> {
        self.set_paused(id, false).await
    }

    async fn set_paused(&self, id: &str, paused: bool) -> Result<WorkflowRecord> {
        check_id("id", id)?;
        let inner = &self.inner;
        let flight = inner.state.borrow().in_flight.get(id).cloned();
        if let Some(flight) = flight {
            let current = flight.record.borrow().clone();
            if current.paused == paused {
                return Ok(current);
            }
            if paused {
                check_pausable(&current)?;
            }
            flight.record.borrow_mut().paused = paused;
            flight.pause_intent.set(Some(paused));
            if persist(inner, &flight).await? {
                return Ok(flight.record.borrow().clone());
            }
            // The run lost the workflow meanwhile: change it through the store.
        }
        let Some(record) = self.read(id).await? else {
            return Err(Error::invalid_input(
                "id",
                format!("there is no workflow `{id}`"),
            ));
        };
        if record.paused == paused {
            return Ok(record);
        }
        if paused {
            check_pausable(&record)?;
        }
        // A patch, not a whole-row write (see `cancel_workflow`): the holder adopts it at its
        // next write or lease renewal, or at once on a refresh.
        let now = inner.clock.now_ms();
        let mut fields = Map::new();
        fields.insert("paused".into(), Value::Bool(paused));
        fields.insert("updatedAt".into(), json!(now));
        inner
            .store
            .patch(Table::Workflows, vec![(id.to_owned(), fields)])
            .await?;
        let updated = WorkflowRecord {
            paused,
            updated_at: now,
            ..record
        };
        inner.state.borrow_mut().update(id, &updated);
        Ok(updated)
    }

    /// Registers (or replaces) the definition of workflow type `workflow_type`. An invalid
    /// definition is `ERR_INVALID_INPUT` naming the field (`definition.steps[1].name`). A
    /// replacement applies to runs started afterwards; a stored workflow whose step the new
    /// definition lacks fails (and compensates) when it resumes.
    pub fn register(&self, workflow_type: &str, definition: WorkflowDefinition) -> Result<()> {
        check_id("type", workflow_type)?;
        definition.validate()?;
        self.inner
            .state
            .borrow_mut()
            .definitions
            .insert(workflow_type.to_owned(), Rc::new(definition));
        Ok(())
    }

    /// Whether workflow type `workflow_type` has a definition.
    pub fn is_registered(&self, workflow_type: &str) -> bool {
        self.inner
            .state
            .borrow()
            .definitions
            .contains_key(workflow_type)
    }

    /// Starts a workflow of type `workflow_type` with `input`; resolves once it is stored
    /// (`running`, its steps `pending`); the next tick runs it. Validates first (nothing is written
    /// on error): the type must be registered, `input` at most 1 MiB of JSON, the options in range
    /// (`ERR_INVALID_INPUT` naming the field). With `workflowId`, an existing workflow of that id is
    /// returned instead, whatever its status.
    pub async fn start_workflow(
        &self,
        workflow_type: &str,
        input: Value,
        options: WorkflowOptions,
    ) -> Result<WorkflowRecord> {
        let inner = &self.inner;
        let Some(definition) = inner.state.borrow().definitions.get(workflow_type).cloned() else {
            check_id("type", workflow_type)?;
            return Err(Error::invalid_input(
                "type",
                format!("no workflow type `{workflow_type}` is registered"),
            ));
        };
        check_json_size("input", &input)?;
        options.validate()?;
        if let Some(id) = &options.workflow_id {
            if let Some(existing) = self.creating(id) {
                return Ok(existing);
            }
            if let Some(existing) = self.read(id).await? {
                return Ok(existing);
            }
            // Started by a concurrent call while this one read the store.
            if let Some(existing) = self.creating(id) {
                return Ok(existing);
            }
        }
        let now = inner.clock.now_ms();
        let record = {
            let mut state = inner.state.borrow_mut();
            let state = &mut *state;
            let id = match &options.workflow_id {
                Some(id) => id.clone(),
                None => state.ids.next("wf", now, &mut state.rng),
            };
            let record = WorkflowRecord {
                id,
                workflow_type: workflow_type.to_owned(),
                status: WorkflowStatus::Running,
                input,
                steps: fresh_steps(&definition),
                cursor: 0,
                run: 0,
                signals: Vec::new(),
                created_at: now,
                updated_at: now,
                finished_at: None,
                result: None,
                error: None,
                compensate_reason: None,
                cancel_requested: false,
                paused: false,
                lease_until: None,
                run_id: None,
                next_run_at: None,
                deadline_at: options.timeout.map(|timeout| now.saturating_add(timeout)),
                options,
            };
            state.creating.insert(record.id.clone(), record.clone());
            record
        };
        let written = match record.to_row() {
            Ok(row) => {
                inner
                    .store
                    .write(vec![WriteOp::Put(Table::Workflows, row)])
                    .await
            }
            Err(error) => Err(error),
        };
        let mut state = inner.state.borrow_mut();
        state.creating.remove(&record.id);
        written?;
        state.update(&record.id, &record);
        Ok(record)
    }

    fn creating(&self, id: &str) -> Option<WorkflowRecord> {
        self.inner.state.borrow().creating.get(id).cloned()
    }

    /// The workflow with this id, read from the store.
    pub async fn get_workflow(&self, id: &str) -> Result<Option<WorkflowRecord>> {
        check_id("id", id)?;
        self.read(id).await
    }

    /// Deletes the workflow `id` if it has finished, in any status; `Ok(false)` if there is no
    /// such workflow or it has not finished (it is left alone). The row is deleted only if its
    /// status is still the finished one read, so a workflow never disappears mid-run.
    pub async fn remove_finished(&self, id: &str) -> Result<bool> {
        let Some(record) = self.get_workflow(id).await? else {
            return Ok(false);
        };
        if !record.status.is_finished() {
            return Ok(false);
        }
        let guarded = Guarded {
            id: id.to_owned(),
            expect: vec![("status".into(), json!(record.status.name()))],
            merge: None,
            read_back: false,
        };
        let outcome = self
            .inner
            .store
            .write_guarded(Table::Workflows, vec![guarded], Vec::new())
            .await?;
        let removed = matches!(outcome.first(), Some(Guard::Applied(_)));
        if removed {
            self.inner.state.borrow_mut().forget(id);
        }
        Ok(removed)
    }

    async fn read(&self, id: &str) -> Result<Option<WorkflowRecord>> {
        read(&self.inner, id).await
    }

    /// Workflows in id order, optionally only those in one status (through the `status` index),
    /// read from the store.
    pub async fn list_workflows(&self, filter: WorkflowFilter) -> Result<WorkflowPage> {
        if !(1..=1000).contains(&filter.limit) {
            return Err(Error::invalid_input(
                "limit",
                format!("must be from 1 to 1000, got {}", filter.limit),
            ));
        }
        if let Some(after) = &filter.after {
            check_id("after", after)?;
        }
        let mut scan = Scan::first(filter.limit + 1);
        scan.after = filter.after.clone();
        if let Some(status) = filter.status {
            scan = scan.where_eq("status", status.name());
        }
        let rows = self.inner.store.scan(Table::Workflows, scan).await?;
        let mut items = rows
            .iter()
            .map(WorkflowRecord::from_row)
            .collect::<Result<Vec<_>>>()?;
        let next = if items.len() > filter.limit {
            items.truncate(filter.limit);
            items.last().map(|record| record.id.clone())
        } else {
            None
        };
        Ok(WorkflowPage { items, next })
    }

    /// Cancels a workflow. One running here has its running step signalled (a compensation is
    /// not interrupted) and its run compensates the completed steps, newest first, then ends it
    /// `cancelled`. Otherwise the request is stored (`cancelRequested`), and whichever instance
    /// runs the workflow next, or holds it now, does the same. A workflow already compensating
    /// finishes compensating as it was.
    pub async fn cancel_workflow(&self, id: &str) -> Result<CancelOutcome> {
        check_id("id", id)?;
        let inner = &self.inner;
        let flight = inner.state.borrow().in_flight.get(id).cloned();
        if let Some(flight) = flight {
            let status = flight.record.borrow().status;
            if status.is_finished() {
                return Ok(CancelOutcome::AlreadyFinished(status));
            }
            flight.request_cancel();
            if persist(inner, &flight).await? {
                // A compensating workflow is already being rolled back: nothing was interrupted.
                return Ok(if status == WorkflowStatus::Running {
                    CancelOutcome::Signalled
                } else {
                    CancelOutcome::Requested
                });
            }
            // The run lost the workflow meanwhile: ask whoever holds it now, through the store.
        }
        let Some(record) = self.read(id).await? else {
            return Ok(CancelOutcome::NotFound);
        };
        if record.status.is_finished() {
            return Ok(CancelOutcome::AlreadyFinished(record.status));
        }
        if record.cancel_requested {
            return Ok(CancelOutcome::Requested);
        }
        // A patch, not a whole-row write: the instance holding the workflow may be writing a
        // checkpoint right now, and only these fields are this call's to change.
        let mut fields = Map::new();
        fields.insert("cancelRequested".into(), Value::Bool(true));
        if record.status == WorkflowStatus::Running {
            // Due at once, even while it waits out a backoff.
            fields.insert("nextRunAt".into(), Value::Null);
        }
        inner
            .store
            .patch(Table::Workflows, vec![(id.to_owned(), fields)])
            .await?;
        let updated = WorkflowRecord {
            cancel_requested: true,
            ..record
        };
        inner.state.borrow_mut().update(id, &updated);
        Ok(CancelOutcome::Requested)
    }

    /// Appends a signal named `name` carrying `payload` to a workflow; resolves once it is stored.
    /// Steps read it with [`StepContext::signals`] or wait for it with
    /// [`StepContext::wait_for_signal`]. An unknown or finished workflow is `ERR_INVALID_INPUT` on
    /// `id`; a payload over 1 MiB on `payload`; more than [`MAX_SIGNALS`] in one run on `name`.
    pub async fn signal(&self, id: &str, name: &str, payload: Value) -> Result<()> {
        check_id("id", id)?;
        check_id("name", name)?;
        check_json_size("payload", &payload)?;
        let inner = &self.inner;
        let now = inner.clock.now_ms();
        let signal = {
            let mut state = inner.state.borrow_mut();
            state.signals += 1;
            SignalRecord {
                id: format!("{}:{}", inner.owner, state.signals),
                name: name.to_owned(),
                payload,
                at: now,
            }
        };
        let flight = inner.state.borrow().in_flight.get(id).cloned();
        if let Some(flight) = flight {
            {
                let mut record = flight.record.borrow_mut();
                check_signal_room(&record)?;
                record.signals.push(signal.clone());
            }
            flight.wake_waiters();
            if persist(inner, &flight).await? {
                return Ok(());
            }
        }
        let Some(mut record) = self.read(id).await? else {
            return Err(Error::invalid_input(
                "id",
                format!("there is no workflow `{id}`"),
            ));
        };
        check_signal_room(&record)?;
        if !record.signals.iter().any(|s| s.id == signal.id) {
            record.signals.push(signal);
        }
        // A patch of the signals alone, not the whole row (see `cancel_workflow`); the holder
        // merges signals it has not seen into its own writes.
        let mut fields = Map::new();
        fields.insert("signals".into(), json!(record.signals));
        fields.insert("updatedAt".into(), json!(now));
        inner
            .store
            .patch(Table::Workflows, vec![(id.to_owned(), fields)])
            .await
    }

    /// When [`WorkflowEngine::tick`] next has something to do (ms on the clock, never before now):
    /// now if a workflow can start, else the earliest of a backoff's end, a timeout, a lease to
    /// renew or a lease to take over; `None` when nothing is pending.
    pub fn next_wake_at(&self) -> Option<u64> {
        let inner = &self.inner;
        let now = inner.clock.now_ms();
        let state = inner.state.borrow();
        let half_lease = inner.config.lease_ms / 2;
        let mut wake: Option<u64> = None;
        let mut at = |t: u64| wake = Some(wake.map_or(t, |w| w.min(t)));
        for flight in state.in_flight.values() {
            let record = flight.record.borrow();
            if let Some(until) = record.lease_until {
                at(until.saturating_sub(half_lease));
            }
            if !flight.signal.borrow().is_cancelled() {
                if let Some(deadline) = flight.step_deadline.get() {
                    at(deadline);
                }
                if let Some(deadline) = record.deadline_at {
                    if record.status == WorkflowStatus::Running
                        && !flight.compensating_attempt.get()
                    {
                        at(deadline);
                    }
                }
            }
        }
        let full = state.in_flight.len() + state.starting.len() >= inner.config.max_running;
        for (id, entry) in &state.index {
            if state.in_flight.contains_key(id)
                || state.starting.contains(id)
                || !state.definitions.contains_key(&entry.workflow_type)
            {
                continue;
            }
            let runnable_at = entry.runnable_at();
            // At capacity, a due workflow waits for a run to end (the platform ticks then).
            if runnable_at > now || !full {
                at(runnable_at);
            }
        }
        wake.map(|w| w.max(now))
    }

    /// Does what is due, then starts workflows: fires the signal of steps past their timeout (and
    /// of the running step of workflows past theirs), renews the leases of runs here and adopts
    /// signals and cancellations other instances stored (one transaction), then leases the
    /// workflows that are due — new, past a backoff, past their timeout, asked to cancel, or whose
    /// lease expired (their instance died) — up to `max_running`, in one transaction before any
    /// step runs. Returns the started runs: poll them (they need no runtime), and tick again when
    /// one ends, after a start or a cancel, and at [`WorkflowEngine::next_wake_at`].
    pub async fn tick(&self) -> Result<Vec<WorkflowRun>> {
        let now = self.inner.clock.now_ms();
        self.fire_timeouts(now);
        self.renew(now).await?;
        self.start(now).await
    }

    fn fire_timeouts(&self, now: u64) {
        let state = self.inner.state.borrow();
        for flight in state.in_flight.values() {
            let signal = flight.signal.borrow();
            if flight.step_deadline.get().is_some_and(|d| d <= now) {
                signal.fire(CancelReason::Timeout);
            }
            let record = flight.record.borrow();
            let workflow_expired = record.status == WorkflowStatus::Running
                && record.deadline_at.is_some_and(|d| d <= now)
                && !flight.compensating_attempt.get();
            if workflow_expired && !signal.is_cancelled() {
                flight.timed_out.set(true);
                signal.fire(CancelReason::Timeout);
            }
        }
    }

    /// Renews the leases of runs here due for it (half the lease passed), after checking in the
    /// store that each is still theirs and adopting what other instances wrote.
    async fn renew(&self, now: u64) -> Result<()> {
        let inner = &self.inner;
        let renew_before = now.saturating_add(inner.config.lease_ms / 2);
        let due: Vec<Rc<Flight>> = inner
            .state
            .borrow()
            .in_flight
            .values()
            .filter(|flight| !flight.lost.get())
            .filter(|flight| {
                flight
                    .record
                    .borrow()
                    .lease_until
                    .is_some_and(|until| until <= renew_before)
            })
            .cloned()
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = due.iter().map(|flight| flight.id()).collect();
        let rows = inner.store.get(Table::Workflows, ids).await?;
        let mut ops = Vec::new();
        for (flight, row) in due.iter().zip(rows) {
            let stored = row.map(|row| WorkflowRecord::from_row(&row));
            match stored {
                Some(Ok(stored)) if stored.run_id.as_deref() == Some(flight.run_id.as_str()) => {
                    flight.merge(&stored);
                    let mut record = flight.record.borrow_mut();
                    // A run that released its lease (to wait out a backoff) is ending: keep it so.
                    if record.lease_until.is_some() {
                        record.lease_until = Some(now.saturating_add(inner.config.lease_ms));
                        record.updated_at = now;
                        ops.push(WriteOp::Put(Table::Workflows, record.to_row()?));
                    }
                }
                // Taken over, deleted or unreadable: this run stops and writes nothing more.
                _ => flight.lose(),
            }
        }
        if !ops.is_empty() {
            inner.store.write(ops).await?;
        }
        Ok(())
    }

    /// Leases the due workflows and starts their runs.
    async fn start(&self, now: u64) -> Result<Vec<WorkflowRun>> {
        let inner = &self.inner;
        let picks: Vec<String> = {
            let mut state = inner.state.borrow_mut();
            let room = inner
                .config
                .max_running
                .saturating_sub(state.in_flight.len() + state.starting.len());
            let mut due: Vec<(u64, &String)> = state
                .index
                .iter()
                .filter(|(id, entry)| {
                    entry.runnable_at() <= now
                        && !state.in_flight.contains_key(*id)
                        && !state.starting.contains(*id)
                        && state.definitions.contains_key(&entry.workflow_type)
                })
                .map(|(id, entry)| (entry.due_at, id))
                .collect();
            due.sort();
            let picks: Vec<String> = due
                .into_iter()
                .take(room)
                .map(|(_, id)| id.clone())
                .collect();
            state.starting.extend(picks.iter().cloned());
            picks
        };
        if picks.is_empty() {
            return Ok(Vec::new());
        }
        let leased = self.lease(&picks, now).await;
        let mut state = inner.state.borrow_mut();
        for id in &picks {
            state.starting.remove(id);
        }
        let leased = leased?;
        let mut runs = Vec::with_capacity(leased.len());
        for (record, run_id) in leased {
            let Some(definition) = state.definitions.get(&record.workflow_type).cloned() else {
                continue;
            };
            let id = record.id.clone();
            state.update(&id, &record);
            let flight = Rc::new(Flight::new(record, run_id));
            state.in_flight.insert(id.clone(), Rc::clone(&flight));
            runs.push(run(Rc::clone(inner), flight, definition));
        }
        Ok(runs)
    }

    /// Reads the picked workflows and writes those still due as leased by new runs here, in one
    /// transaction.
    async fn lease(&self, ids: &[String], now: u64) -> Result<Vec<(WorkflowRecord, String)>> {
        let inner = &self.inner;
        let rows = inner.store.get(Table::Workflows, ids.to_vec()).await?;
        let mut leased = Vec::new();
        let mut ops = Vec::new();
        {
            let mut state = inner.state.borrow_mut();
            for (id, row) in ids.iter().zip(rows) {
                let record = match row.map(|row| WorkflowRecord::from_row(&row)) {
                    Some(Ok(record)) => record,
                    // Gone, or unreadable: nothing can run it; forget it rather than retry forever.
                    _ => {
                        state.forget(id);
                        continue;
                    }
                };
                let due = Entry::of(&record).is_some_and(|entry| entry.runnable_at() <= now);
                if !due || !state.definitions.contains_key(&record.workflow_type) {
                    // Changed by another instance since the index saw it.
                    state.update(id, &record);
                    continue;
                }
                state.runs += 1;
                let run_id = format!("{}:{}", inner.owner, state.runs);
                let record = WorkflowRecord {
                    lease_until: Some(now.saturating_add(inner.config.lease_ms)),
                    run_id: Some(run_id.clone()),
                    updated_at: now,
                    ..record
                };
                ops.push(WriteOp::Put(Table::Workflows, record.to_row()?));
                leased.push((record, run_id));
            }
        }
        if !ops.is_empty() {
            inner.store.write(ops).await?;
        }
        Ok(leased)
    }
}

/// How many workflows [`WorkflowEngine::refresh`] reads in one `get`.
const REFRESH_CHUNK: usize = 500;

/// The scheduler's entries of every readable unfinished (`running` or `compensating`) workflow of
/// the store, read through the `status` index (unreadable rows are skipped).
async fn load_index(store: &dyn Store) -> Result<HashMap<String, Entry>> {
    let mut index = HashMap::new();
    for status in [WorkflowStatus::Running, WorkflowStatus::Compensating] {
        let mut scan = Scan::first(500).where_eq("status", status.name());
        loop {
            let rows = store.scan(Table::Workflows, scan.clone()).await?;
            let Some(last) = rows.last() else { break };
            scan = scan.after(last.id.clone());
            for row in &rows {
                if let Some(entry) = WorkflowRecord::from_row(row)
                    .ok()
                    .as_ref()
                    .and_then(Entry::of)
                {
                    index.insert(row.id.clone(), entry);
                }
            }
        }
    }
    Ok(index)
}

/// Makes a run here adopt its row as read again: what other instances patched in (signals, a
/// cancellation, a pause or resume) if the run still holds it; if the row is gone, or another
/// instance took the workflow over (holds it, or finished it), the run stops. A row the run
/// released itself (to wait out a backoff, to pause, or as it finished) has nothing to adopt; an
/// unreadable one is left to the run's next write to report.
fn adopt_stored(flight: &Flight, stored: Stored) {
    match stored {
        Some(Ok(stored)) => match stored.run_id.as_deref() {
            Some(run_id) if run_id == flight.run_id => flight.merge(&stored),
            Some(_) => flight.lose(),
            None if stored.status.is_finished() && !flight.record.borrow().status.is_finished() => {
                flight.lose()
            }
            None => {}
        },
        None => flight.lose(),
        Some(Err(_)) => {}
    }
}

/// A running workflow can be paused; a compensating or finished one cannot (`ERR_INVALID_INPUT`
/// on `id`).
fn check_pausable(record: &WorkflowRecord) -> Result<()> {
    match record.status {
        WorkflowStatus::Running => Ok(()),
        WorkflowStatus::Compensating => Err(Error::invalid_input(
            "id",
            format!(
                "workflow `{}` is compensating: a rollback cannot be paused",
                record.id
            ),
        )),
        status => Err(Error::invalid_input(
            "id",
            format!(
                "workflow `{}` is {}: only a running workflow can be paused",
                record.id,
                status.name()
            ),
        )),
    }
}

async fn read(inner: &Inner, id: &str) -> Result<Option<WorkflowRecord>> {
    let row = inner
        .store
        .get(Table::Workflows, vec![id.to_owned()])
        .await?
        .pop()
        .flatten();
    row.map(|row| WorkflowRecord::from_row(&row)).transpose()
}

fn check_signal_room(record: &WorkflowRecord) -> Result<()> {
    if record.status.is_finished() {
        return Err(Error::invalid_input(
            "id",
            format!(
                "workflow `{}` is {}: it takes no more signals",
                record.id,
                record.status.name()
            ),
        ));
    }
    if record.signals.len() >= MAX_SIGNALS {
        return Err(Error::invalid_input(
            "name",
            format!(
                "workflow `{}` holds {MAX_SIGNALS} signals, the most one run keeps; continue it as new to clear them",
                record.id
            ),
        ));
    }
    Ok(())
}

/// Writes the run's record, unless the run no longer holds the workflow: reads the stored row
/// first, adopts the signals and cancellation other instances patched in, then puts the whole
/// record in one transaction. `Ok(false)` when the workflow was taken over or deleted (nothing is
/// written, and the run stops).
pub(crate) async fn persist(inner: &Inner, flight: &Flight) -> Result<bool> {
    if flight.lost.get() {
        return Ok(false);
    }
    let id = flight.id();
    let Some(stored) = read(inner, &id).await? else {
        flight.lose();
        return Ok(false);
    };
    if stored.run_id.as_deref() != Some(flight.run_id.as_str()) {
        flight.lose();
        return Ok(false);
    }
    flight.merge(&stored);
    // The row is taken from the record with no await since, so writes leave in the order the
    // record changed and the last one holds every change.
    let (row, paused) = {
        let mut record = flight.record.borrow_mut();
        record.updated_at = inner.clock.now_ms();
        (record.to_row()?, record.paused)
    };
    inner
        .store
        .write(vec![WriteOp::Put(Table::Workflows, row)])
        .await?;
    // A pause or resume asked for here is stored now (unless another came since the row left).
    if flight.pause_intent.get() == Some(paused) {
        flight.pause_intent.set(None);
    }
    Ok(true)
}

/// The steps of a new run, all pending.
/// Step `index` of `record`; a missing one is an internal error (indexes come from its own steps).
fn step_mut(record: &mut WorkflowRecord, index: usize) -> Result<&mut StepRecord> {
    let id = &record.id;
    record
        .steps
        .get_mut(index)
        .ok_or_else(|| Error::Internal(format!("workflow `{id}` has no step {index}")))
}

fn fresh_steps(definition: &WorkflowDefinition) -> Vec<StepRecord> {
    definition
        .steps()
        .iter()
        .map(|step| StepRecord::pending(step.name()))
        .collect()
}

/// Takes a workflow off this instance's in-flight set however its run ends (even when dropped),
/// leaving the scheduler's entry as the run left the record.
struct InFlightGuard {
    inner: Rc<Inner>,
    flight: Rc<Flight>,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if let Ok(mut state) = self.inner.state.try_borrow_mut() {
            let id = self.flight.id();
            state.in_flight.remove(&id);
            if let Ok(record) = self.flight.record.try_borrow() {
                state.update(&id, &record);
            }
        }
    }
}

fn run(inner: Rc<Inner>, flight: Rc<Flight>, definition: Rc<WorkflowDefinition>) -> WorkflowRun {
    let id = flight.id();
    let future = async move {
        let _guard = InFlightGuard {
            inner: Rc::clone(&inner),
            flight: Rc::clone(&flight),
        };
        drive(&inner, &flight, &definition).await
    };
    WorkflowRun {
        id,
        future: Box::pin(future),
    }
}

/// Forward (the step) or backward (its compensation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Forward,
    Compensation,
}

/// What the run does next, decided from the record alone (so a resumed run decides the same).
enum Plan {
    /// Run an attempt of the step at this index, or of its compensation.
    Attempt(usize, Direction),
    /// The record changed (a transition): write it, then plan again.
    Changed,
    /// Paused before its next step: release the workflow (one write) and end the run.
    Pause,
    /// Finished in this status; nothing to do.
    Done(WorkflowStatus),
}

/// How an attempt's run went.
enum AttemptEnd {
    /// Plan the next thing.
    Continue,
    /// The lease is released until `nextRunAt` (a retry's backoff); the run ends.
    Sleep(WorkflowStatus),
    /// The run no longer holds the workflow.
    Lost,
}

/// How an attempt ended.
enum Outcome {
    Returned(Result<Value, StepError>),
    /// The attempt's signal fired (the step was dropped).
    Signalled,
}

async fn drive(
    inner: &Rc<Inner>,
    flight: &Rc<Flight>,
    definition: &WorkflowDefinition,
) -> Result<Option<WorkflowStatus>> {
    loop {
        if flight.lost.get() {
            return Ok(None);
        }
        let now = inner.clock.now_ms();
        let plan = plan(&mut flight.record.borrow_mut(), definition, flight, now);
        match plan {
            Plan::Done(status) => return Ok(Some(status)),
            Plan::Changed => {
                if !persist(inner, flight).await? {
                    return Ok(None);
                }
                let record = flight.record.borrow().clone();
                if record.status.is_finished() {
                    inner.observe(&record);
                }
            }
            Plan::Pause => {
                {
                    let mut record = flight.record.borrow_mut();
                    record.lease_until = None;
                    record.run_id = None;
                }
                if !persist(inner, flight).await? {
                    return Ok(None);
                }
                return Ok(Some(WorkflowStatus::Running));
            }
            Plan::Attempt(index, direction) => {
                match attempt(inner, flight, definition, index, direction).await? {
                    AttemptEnd::Continue => {}
                    AttemptEnd::Sleep(status) => return Ok(Some(status)),
                    AttemptEnd::Lost => return Ok(None),
                }
            }
        }
    }
}

fn plan(
    record: &mut WorkflowRecord,
    definition: &WorkflowDefinition,
    flight: &Flight,
    now: u64,
) -> Plan {
    match record.status {
        WorkflowStatus::Running => {
            if record.cancel_requested {
                let step = interrupt_current(record, StepStatus::Cancelled, "cancelled", now);
                begin_compensation(
                    record,
                    CompensateReason::Cancelled,
                    "cancelled".into(),
                    step,
                );
                return Plan::Changed;
            }
            if record.deadline_at.is_some_and(|deadline| deadline <= now) || flight.timed_out.get()
            {
                let message = timeout_message(record);
                let step = interrupt_current(record, StepStatus::Failed, &message, now);
                begin_compensation(record, CompensateReason::TimedOut, message, step);
                return Plan::Changed;
            }
            let cursor = usize::try_from(record.cursor).unwrap_or(usize::MAX);
            let Some(step) = record.steps.get(cursor) else {
                record.status = WorkflowStatus::Completed;
                record.result = Some(
                    record
                        .steps
                        .last()
                        .and_then(|step| step.result.clone())
                        .unwrap_or(Value::Null),
                );
                finish(record, now);
                return Plan::Changed;
            };
            if definition.find(&step.name).is_some() {
                if record.paused {
                    return Plan::Pause;
                }
                return Plan::Attempt(cursor, Direction::Forward);
            }
            // The definition changed since the workflow started: the step cannot run.
            let message = format!(
                "workflow type `{}` has no step `{}` any more",
                record.workflow_type, step.name
            );
            let step = interrupt_current(record, StepStatus::Failed, &message, now);
            begin_compensation(record, CompensateReason::Failed, message, step);
            Plan::Changed
        }
        WorkflowStatus::Compensating => {
            let next = record.steps.iter().enumerate().rev().find(|(_, step)| {
                matches!(
                    step.status,
                    StepStatus::Completed | StepStatus::Compensating
                ) && definition
                    .find(&step.name)
                    .is_some_and(Step::has_compensation)
            });
            if let Some((index, _)) = next {
                return Plan::Attempt(index, Direction::Compensation);
            }
            let compensation_failed = record
                .steps
                .iter()
                .any(|step| step.status == StepStatus::CompensationFailed);
            let compensated = record
                .steps
                .iter()
                .any(|step| step.status == StepStatus::Compensated);
            record.status = match record.compensate_reason {
                Some(CompensateReason::Cancelled) => WorkflowStatus::Cancelled,
                Some(CompensateReason::TimedOut) => WorkflowStatus::TimedOut,
                Some(CompensateReason::Failed) | None if compensated && !compensation_failed => {
                    WorkflowStatus::Compensated
                }
                Some(CompensateReason::Failed) | None => WorkflowStatus::Failed,
            };
            finish(record, now);
            Plan::Changed
        }
        status => Plan::Done(status),
    }
}

fn timeout_message(record: &WorkflowRecord) -> String {
    format!(
        "the workflow timed out after {} ms",
        record.options.timeout.unwrap_or_default()
    )
}

/// Ends the step at the cursor, if an attempt of it started, as `status` with `message`; returns
/// its name.
fn interrupt_current(
    record: &mut WorkflowRecord,
    status: StepStatus,
    message: &str,
    now: u64,
) -> Option<String> {
    let cursor = usize::try_from(record.cursor).unwrap_or(usize::MAX);
    let step = record.steps.get_mut(cursor)?;
    if step.attempts == 0 {
        return None;
    }
    step.status = status;
    step.error = Some(StepFailure {
        message: message.to_owned(),
        retryable: false,
    });
    step.finished_at = Some(now);
    Some(step.name.clone())
}

/// Turns the workflow around: its completed steps are compensated next, newest first.
fn begin_compensation(
    record: &mut WorkflowRecord,
    reason: CompensateReason,
    message: String,
    step: Option<String>,
) {
    record.status = WorkflowStatus::Compensating;
    // A rollback is never paused.
    record.paused = false;
    record.compensate_reason = Some(reason);
    record.error = Some(WorkflowFailure { message, step });
    record.next_run_at = None;
}

/// Clears what only an unfinished workflow has.
fn finish(record: &mut WorkflowRecord, now: u64) {
    record.finished_at = Some(now);
    record.lease_until = None;
    record.run_id = None;
    record.next_run_at = None;
}

/// Runs one attempt of a step (or its compensation): writes its start, runs it against its
/// signal, then writes how it ended.
async fn attempt(
    inner: &Rc<Inner>,
    flight: &Rc<Flight>,
    definition: &WorkflowDefinition,
    index: usize,
    direction: Direction,
) -> Result<AttemptEnd> {
    let now = inner.clock.now_ms();
    let started = {
        let mut record = flight.record.borrow_mut();
        record.next_run_at = None;
        let (id, workflow_type, input, run) = (
            record.id.clone(),
            record.workflow_type.clone(),
            record.input.clone(),
            record.run,
        );
        let results = record.results();
        let step_timeout = record.options.step_timeout;
        let default_retry = record.options.retry;
        let step = step_mut(&mut record, index)?;
        let Some(definition) = definition.find(&step.name) else {
            return Err(Error::Internal(format!(
                "workflow `{id}`: step `{}` is not defined",
                step.name
            )));
        };
        let (attempt, body, key, step_result) = match direction {
            Direction::Forward => {
                step.status = StepStatus::Running;
                step.attempts = step.attempts.saturating_add(1);
                step.started_at = Some(now);
                (
                    step.attempts,
                    Rc::clone(&definition.run),
                    format!("{id}/{}/{run}", step.name),
                    None,
                )
            }
            Direction::Compensation => {
                let Some(compensation) = &definition.compensation else {
                    return Err(Error::Internal(format!(
                        "workflow `{id}`: step `{}` has no compensation",
                        step.name
                    )));
                };
                step.status = StepStatus::Compensating;
                step.compensation_attempts = step.compensation_attempts.saturating_add(1);
                (
                    step.compensation_attempts,
                    Rc::clone(compensation),
                    format!("{id}/{}/{run}/compensate", step.name),
                    Some(step.result.clone().unwrap_or(Value::Null)),
                )
            }
        };
        let context = StepContext {
            workflow_id: id,
            workflow_type,
            step: step.name.clone(),
            input,
            results,
            step_result,
            attempt,
            run,
            idempotency_key: key,
            index,
            signal: CancelSignal::new(),
            flight: Rc::clone(flight),
            engine: Rc::downgrade(inner),
        };
        let timeout = definition.timeout_ms.or(step_timeout);
        let retry = definition.retry.or(default_retry).unwrap_or_default();
        (context, body, timeout, retry)
    };
    let (context, body, timeout, retry) = started;
    *flight.continue_as_new.borrow_mut() = None;
    // The start is durable before the step runs: a crash from here on re-runs this attempt's
    // step, counted as an attempt.
    if !persist(inner, flight).await? {
        return Ok(AttemptEnd::Lost);
    }
    let signal = context.signal.clone();
    *flight.signal.borrow_mut() = signal.clone();
    flight
        .compensating_attempt
        .set(direction == Direction::Compensation);
    let now = inner.clock.now_ms();
    flight
        .step_deadline
        .set(timeout.map(|ms| now.saturating_add(ms)));
    // A cancellation that arrived while the start was being written stops the step before it runs.
    if direction == Direction::Forward && flight.record.borrow().cancel_requested {
        signal.fire(CancelReason::Cancelled);
    }
    let name = context.step.clone();
    let outcome = match signal.reason() {
        Some(_) => Outcome::Signalled,
        None => {
            let mut running = body(context);
            poll_fn(|cx| {
                if let Poll::Ready(result) = running.as_mut().poll(cx) {
                    return Poll::Ready(Outcome::Returned(result));
                }
                signal.poll_fired(cx).map(|_| Outcome::Signalled)
            })
            .await
        }
    };
    flight.step_deadline.set(None);
    flight.compensating_attempt.set(false);
    if flight.lost.get() {
        return Ok(AttemptEnd::Lost);
    }
    let now = inner.clock.now_ms();
    let sleep = {
        let mut record = flight.record.borrow_mut();
        let workflow_timed_out = flight.timed_out.get();
        let end = match direction {
            Direction::Forward => end_forward(
                &mut record,
                index,
                outcome,
                signal.reason(),
                workflow_timed_out,
                flight.continue_as_new.borrow_mut().take(),
                definition,
                now,
            ),
            Direction::Compensation => end_compensation(&mut record, index, outcome, now),
        }?;
        match end {
            Ended::Failed(message, retryable, attempts)
                if retryable && attempts < retry.attempts =>
            {
                set_retrying(&mut record, index, direction, &message, retryable);
                let wait = retry.backoff.map_or(0, |backoff| {
                    backoff.delay_ms(attempts, &mut inner.state.borrow_mut().rng)
                });
                if wait > 0 {
                    // Sleeping holds nothing: the lease goes, and whichever instance ticks once
                    // the backoff ends runs the retry.
                    record.next_run_at = Some(now.saturating_add(wait));
                    record.lease_until = None;
                    record.run_id = None;
                    Some(record.status)
                } else {
                    None
                }
            }
            Ended::Failed(message, retryable, _) => {
                give_up(
                    &mut record,
                    index,
                    direction,
                    &name,
                    message,
                    retryable,
                    now,
                );
                None
            }
            Ended::Done => None,
        }
    };
    if !persist(inner, flight).await? {
        return Ok(AttemptEnd::Lost);
    }
    Ok(match sleep {
        Some(status) => AttemptEnd::Sleep(status),
        None => AttemptEnd::Continue,
    })
}

/// How an attempt's outcome left the step, before the retry policy is applied.
enum Ended {
    /// Completed, cancelled or timed out with the workflow: nothing more to decide.
    Done,
    /// Failed with `(message, retryable, attempts so far)`: the retry policy decides what next.
    Failed(String, bool, u32),
}

#[allow(clippy::too_many_arguments)]
fn end_forward(
    record: &mut WorkflowRecord,
    index: usize,
    outcome: Outcome,
    signalled: Option<CancelReason>,
    workflow_timed_out: bool,
    continue_as_new: Option<Value>,
    definition: &WorkflowDefinition,
    now: u64,
) -> Result<Ended> {
    let step = step_mut(record, index)?;
    let failure = match outcome {
        Outcome::Returned(Ok(value)) => match check_json_size("result", &value) {
            Ok(()) => {
                step.status = StepStatus::Completed;
                step.result = Some(value);
                step.error = None;
                step.finished_at = Some(now);
                record.cursor = u32::try_from(index.saturating_add(1)).unwrap_or(u32::MAX);
                if let Some(input) = continue_as_new {
                    record.run = record.run.saturating_add(1);
                    record.input = input;
                    record.steps = fresh_steps(definition);
                    record.cursor = 0;
                    record.signals.clear();
                    record.result = None;
                }
                return Ok(Ended::Done);
            }
            // A result too large to checkpoint would be too large every time.
            Err(error) => StepFailure {
                message: error.to_string(),
                retryable: false,
            },
        },
        Outcome::Returned(Err(error)) if signalled.is_none() => StepFailure {
            message: error.message,
            retryable: error.retryable,
        },
        Outcome::Returned(Err(_)) | Outcome::Signalled => match signalled {
            Some(CancelReason::Cancelled) => {
                step.status = StepStatus::Cancelled;
                step.error = Some(StepFailure {
                    message: "cancelled while running".into(),
                    retryable: false,
                });
                step.finished_at = Some(now);
                let name = step.name.clone();
                begin_compensation(
                    record,
                    CompensateReason::Cancelled,
                    "cancelled".into(),
                    Some(name),
                );
                return Ok(Ended::Done);
            }
            _ if workflow_timed_out => {
                let message = timeout_message(record);
                if let Some(step) = record.steps.get_mut(index) {
                    step.status = StepStatus::Failed;
                    step.error = Some(StepFailure {
                        message: message.clone(),
                        retryable: false,
                    });
                    step.finished_at = Some(now);
                }
                let name = record.steps.get(index).map(|step| step.name.clone());
                begin_compensation(record, CompensateReason::TimedOut, message, name);
                return Ok(Ended::Done);
            }
            _ => StepFailure {
                message: "the attempt timed out".into(),
                retryable: true,
            },
        },
    };
    let attempts = step.attempts;
    Ok(Ended::Failed(failure.message, failure.retryable, attempts))
}

fn end_compensation(
    record: &mut WorkflowRecord,
    index: usize,
    outcome: Outcome,
    now: u64,
) -> Result<Ended> {
    let step = step_mut(record, index)?;
    let failure = match outcome {
        Outcome::Returned(Ok(_)) => {
            step.status = StepStatus::Compensated;
            step.compensation_error = None;
            step.compensated_at = Some(now);
            return Ok(Ended::Done);
        }
        Outcome::Returned(Err(error)) => StepFailure {
            message: error.message,
            retryable: error.retryable,
        },
        Outcome::Signalled => StepFailure {
            message: "the attempt timed out".into(),
            retryable: true,
        },
    };
    Ok(Ended::Failed(
        failure.message,
        failure.retryable,
        step.compensation_attempts,
    ))
}

/// Records a failed attempt that will be retried.
fn set_retrying(
    record: &mut WorkflowRecord,
    index: usize,
    direction: Direction,
    message: &str,
    retryable: bool,
) {
    let Some(step) = record.steps.get_mut(index) else {
        return;
    };
    let failure = Some(StepFailure {
        message: message.to_owned(),
        retryable,
    });
    match direction {
        Direction::Forward => {
            step.status = StepStatus::Pending;
            step.error = failure;
        }
        Direction::Compensation => {
            // Stays `compensating`: the plan picks it up again.
            step.compensation_error = failure;
        }
    }
}

/// Records a failed attempt with no retry left: the step fails (and the workflow compensates), or
/// the compensation fails (and the next one runs).
fn give_up(
    record: &mut WorkflowRecord,
    index: usize,
    direction: Direction,
    name: &str,
    message: String,
    retryable: bool,
    now: u64,
) {
    let Some(step) = record.steps.get_mut(index) else {
        return;
    };
    let failure = StepFailure {
        message: message.clone(),
        retryable,
    };
    match direction {
        Direction::Forward => {
            step.status = StepStatus::Failed;
            step.error = Some(failure);
            step.finished_at = Some(now);
            begin_compensation(
                record,
                CompensateReason::Failed,
                format!("step `{name}` failed: {message}"),
                Some(name.to_owned()),
            );
        }
        Direction::Compensation => {
            step.status = StepStatus::CompensationFailed;
            step.compensation_error = Some(failure);
            step.compensated_at = Some(now);
        }
    }
}
