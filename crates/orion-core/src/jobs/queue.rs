//! [`JobQueue`]: enqueue, control, status, and the poll-driven scheduler ([`JobQueue::tick`]).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll};

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use futures_util::future::{FutureExt, Shared};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::context::{CancelReason, CancelSignal, Handler, JobContext, JobError, ProgressSink};
use super::index::{Entry, Index, Journal, Reading};
use super::kept::KeptRecords;
use super::options::{JobOptions, RemovePolicy};
use super::record::{JobFailure, JobRecord, JobState};
use crate::clock::SharedClock;
use crate::embedding::LocalBoxFuture;
use crate::error::{Error, Result};
use crate::ids::IdClock;
use crate::input::{self, check_id};
use crate::store::{Fields, Guard, Guarded, Row, Scan, Store, Table, WriteOp};

/// The largest job `data`, serialised as JSON: 1 MiB.
pub const MAX_DATA_BYTES: usize = 1 << 20;
/// The most jobs a queue may run at once.
pub const MAX_CONCURRENCY: usize = 1000;

/// The `meta` row holding the paused queues (`{queues: [name, ...]}`).
pub const PAUSED_META_ID: &str = "jobs.paused";

/// What [`JobQueue::set_observer`] takes: a function of a job as it was just written.
pub type JobObserver = Rc<dyn Fn(&JobRecord)>;

/// How a queue instance runs its jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    /// How long a started job is held (ms) before another instance may take it back; renewed by
    /// [`JobQueue::tick`] while the handler runs. Default 30 s (BullMQ's lock duration).
    pub lease_ms: u64,
    /// How many times a job's lease may expire before the job fails instead of going back to
    /// waiting. Default 1 (BullMQ's `maxStalledCount`).
    pub max_stalled: u32,
    /// Seeds the jitter and the generated ids and names this instance's leases (the platform
    /// passes a random one; tests a fixed one).
    pub seed: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            lease_ms: 30_000,
            max_stalled: 1,
            seed: 0,
        }
    }
}

/// Which jobs [`JobQueue::list`] returns. On the wire `{state?, name?, limit?, after?}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct JobFilter {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs of this queue.
    pub name: Option<String>,
    /// At most this many (1 to 1000; default 100).
    pub limit: usize,
    /// Only jobs whose id sorts after this one (the `next` of the previous page).
    pub after: Option<String>,
}

impl Default for JobFilter {
    fn default() -> Self {
        Self {
            state: None,
            name: None,
            limit: 100,
            after: None,
        }
    }
}

/// A page of [`JobQueue::list`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobPage {
    /// The jobs, in id order (generated ids sort by creation).
    pub items: Vec<JobRecord>,
    /// Pass as `after` for the next page; `None` on the last.
    pub next: Option<String>,
}

/// How many jobs are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StateCounts {
    /// Ready to run.
    pub waiting: usize,
    /// Due later.
    pub delayed: usize,
    /// Held back by [`JobQueue::pause_job`].
    pub paused: usize,
    /// Running.
    pub active: usize,
    /// Done.
    pub completed: usize,
    /// Failed for good (the dead-letter set).
    pub failed: usize,
    /// Cancelled.
    pub cancelled: usize,
}

impl StateCounts {
    fn add(&mut self, state: JobState) {
        let slot = match state {
            JobState::Waiting => &mut self.waiting,
            JobState::Delayed => &mut self.delayed,
            JobState::Paused => &mut self.paused,
            JobState::Active => &mut self.active,
            JobState::Completed => &mut self.completed,
            JobState::Failed => &mut self.failed,
            JobState::Cancelled => &mut self.cancelled,
        };
        *slot += 1;
    }
}

/// What [`JobQueue::counts`] reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobCounts {
    /// Over every queue.
    pub all: StateCounts,
    /// Per queue name.
    pub queues: BTreeMap<String, StateCounts>,
    /// The paused queues.
    pub paused: Vec<String>,
}

/// What [`JobQueue::cancel`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job was pending (or held by another instance) and is now `cancelled`.
    Cancelled,
    /// The job runs here: its handler's signal fired, and the run ends it `cancelled`.
    Signalled,
    /// The job had already finished in this state; nothing changed.
    AlreadyFinished(JobState),
    /// There is no job with this id.
    NotFound,
}

/// One started attempt: a future that runs the handler and stores the outcome, resolving to the
/// state the job was left in (`waiting`/`delayed` for a retry), or `None` if the job was taken
/// over or deleted meanwhile (nothing is written then). An error means the outcome could not be
/// stored: the job stays `active` until its lease expires, then runs again (same idempotency key).
/// Dropping it abandons the attempt the same way.
#[must_use = "a job runs only when its JobRun is polled"]
pub struct JobRun {
    /// The job's id.
    pub id: String,
    future: LocalBoxFuture<'static, Result<Option<JobState>>>,
}

impl std::fmt::Debug for JobRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobRun").field("id", &self.id).finish()
    }
}

impl Future for JobRun {
    type Output = Result<Option<JobState>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.future.as_mut().poll(cx)
    }
}

struct Registered {
    handler: Handler,
    concurrency: usize,
}

/// A job this instance runs (or is starting: `record` is `None` until its start is stored).
struct InFlight {
    name: String,
    record: Option<JobRecord>,
    signal: CancelSignal,
    deadline: Option<u64>,
    /// [`JobQueue::refresh`] found its row cancelled or deleted by another instance: its lease is
    /// not renewed (that would write the row back `active`), and its run ends without writing its
    /// outcome over the row.
    revoked: bool,
}

struct State {
    index: Index,
    handlers: HashMap<String, Registered>,
    paused: BTreeSet<String>,
    in_flight: HashMap<String, InFlight>,
    /// Jobs being enqueued (written, not yet committed): a second enqueue of the same `jobId`
    /// returns this one.
    enqueuing: HashMap<String, JobRecord>,
    /// Waiting jobs this instance enqueued, as written (see [`KeptRecords`]); dropped when this
    /// instance changes or re-reads them. `(state, seq)` names the version a start checks for:
    /// a job's `data` and `options` never change.
    kept: KeptRecords,
    rng: fastrand::Rng,
    next_seq: u64,
    runs: u64,
    ids: IdClock,
}

impl State {
    fn take_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn in_flight_of(&self, name: &str) -> usize {
        self.in_flight.values().filter(|f| f.name == name).count()
    }
}

struct Inner {
    store: Rc<dyn Store>,
    clock: SharedClock,
    config: QueueConfig,
    /// Names this instance's leases.
    owner: String,
    state: RefCell<State>,
    /// Told of every job this instance writes finished, or failed and due for a retry.
    observer: RefCell<Option<JobObserver>>,
    /// The batches runs' outcomes are written in (see [`finish`]).
    ending: RefCell<EndingBatches>,
}

impl Inner {
    /// Tells the observer, if there is one, of `records` (written and committed). No borrow is
    /// held while it runs: it may call the queue.
    fn observe(&self, records: &[JobRecord]) {
        if records.is_empty() {
            return;
        }
        let observer = self.observer.borrow().clone();
        if let Some(observer) = observer {
            for record in records {
                observer(record);
            }
        }
    }
}

/// The journal of the index in `state` (for [`Reading`]).
fn journal(state: &mut State) -> &mut Journal {
    &mut state.index.journal
}

/// A change to the index, applied once the write that makes it has committed.
enum Change {
    /// The job's entry, as of its record (not the record: the index needs only the entry).
    Upsert(String, Box<Entry>),
    Remove(String),
}

impl Change {
    /// Indexes `record` as it is.
    fn upsert(record: &JobRecord) -> Self {
        Change::Upsert(record.id.clone(), Box::new(Entry::of(record)))
    }

    /// Indexes job `id` as its row `row` holds it (leaves it out if unreadable, as `open` does).
    fn stored(id: &str, row: &Row) -> Self {
        match JobRecord::from_row(row) {
            Ok(record) => Change::upsert(&record),
            Err(_) => Change::Remove(id.to_owned()),
        }
    }

    fn apply(self, index: &mut Index) {
        match self {
            Change::Upsert(id, entry) => index.put(id, *entry),
            Change::Remove(id) => index.remove(&id),
        }
    }
}

/// How an attempt ended.
enum Outcome {
    Returned(Result<Value, JobError>),
    Signalled(CancelReason),
}

/// A durable job queue over a [`Store`]: see the [module docs](super).
#[derive(Clone)]
pub struct JobQueue {
    inner: Rc<Inner>,
}

impl std::fmt::Debug for JobQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobQueue")
            .field("owner", &self.inner.owner)
            .finish_non_exhaustive()
    }
}

impl JobQueue {
    /// Opens the queue on `store`: reads every job into the index (unreadable rows are skipped)
    /// and the paused queues. Jobs left `active` by a previous instance are taken back once their
    /// lease expires.
    pub async fn open(
        store: Rc<dyn Store>,
        clock: SharedClock,
        config: QueueConfig,
    ) -> Result<Self> {
        let index = load_index(store.as_ref()).await?;
        let paused = load_paused(store.as_ref()).await?;
        let mut rng = fastrand::Rng::with_seed(config.seed);
        let owner = format!("q{:08x}", rng.u32(..));
        let next_seq = index.max_seq;
        Ok(Self {
            inner: Rc::new(Inner {
                store,
                clock,
                config,
                owner,
                state: RefCell::new(State {
                    index,
                    handlers: HashMap::new(),
                    paused,
                    in_flight: HashMap::new(),
                    enqueuing: HashMap::new(),
                    kept: KeptRecords::default(),
                    rng,
                    next_seq,
                    runs: 0,
                    ids: IdClock::default(),
                }),
                observer: RefCell::new(None),
                ending: RefCell::new(EndingBatches::default()),
            }),
        })
    }

    /// Sets (or replaces) the observer: called with the record as written each time this
    /// instance writes a job `completed`, `failed` (for good) or `cancelled`, and each time an
    /// attempt fails but will be retried (the record is then `waiting` or `delayed`, with `error`
    /// set and `attemptsMade` counting the failed attempt) — including an attempt lost with a
    /// worker that died, found when its lease expired. Called synchronously once the write has
    /// committed, with no borrow of the queue held (it may call the queue), once per such write.
    /// A job removed at once by `removeOnComplete`/`removeOnFail` is reported as it would have
    /// been written. Changes other instances write (a cancellation from another tab, seen by
    /// [`JobQueue::refresh`]) are reported by their own observers, not this one.
    pub fn set_observer(&self, observer: JobObserver) {
        *self.inner.observer.borrow_mut() = Some(observer);
    }

    /// Reads these jobs again from the store and brings the index up to date with them (another
    /// instance enqueued, cancelled, paused, resumed or retried them): a job now stored is indexed
    /// as stored, one gone (or unreadable, as at [`JobQueue::open`]) is forgotten. A job this
    /// instance changed meanwhile keeps its newer local state; `seq` numbers taken afterwards
    /// stay above every `seq` read. For a job this instance is running (or starting), the stored
    /// row is not adopted (its run owns it) — except that if another instance cancelled or
    /// deleted it, its handler's signal fires with [`CancelReason::Cancelled`], its lease is no
    /// longer renewed, and its run ends without writing its outcome over the row (resolving
    /// `None`). Ids are checked like `id` elsewhere (`ERR_INVALID_INPUT` on `ids[i]`); duplicates
    /// are read once.
    pub async fn refresh(&self, ids: &[String]) -> Result<()> {
        let unique = crate::input::unique_ids(ids)?;
        if unique.is_empty() {
            return Ok(());
        }
        let inner = &self.inner;
        let reading = Reading::begin(&inner.state, journal);
        let mut rows = Vec::with_capacity(unique.len());
        for chunk in unique.chunks(REFRESH_CHUNK) {
            rows.extend(inner.store.get(Table::Jobs, chunk.to_vec()).await?);
        }
        let mut state = inner.state.borrow_mut();
        for (id, row) in unique.iter().zip(rows) {
            state.kept.remove(id);
            let stored = read_row(row);
            if state.in_flight.contains_key(id) {
                revoke_if_cancelled(&mut state, id, &stored, reading.mark);
                continue;
            }
            if state.index.journal.touched_since(id, reading.mark) {
                continue;
            }
            match stored {
                Stored::Record(record) => {
                    state.next_seq = state.next_seq.max(record.seq);
                    state.index.upsert(&record);
                }
                Stored::Gone | Stored::Unreadable => state.index.remove(id),
            }
        }
        drop(state);
        drop(reading);
        Ok(())
    }

    /// Rebuilds the index from the whole `jobs` table, as [`JobQueue::open`] builds it, and reads
    /// the paused queues again: for an instance that becomes the one running the queues after
    /// others changed the store. Handlers, runs in flight and their leases are kept; jobs this
    /// instance changed while the table was read keep their newer local state; the runs here
    /// whose rows another instance cancelled or deleted are signalled as by
    /// [`JobQueue::refresh`]; `seq` numbers taken afterwards stay above every `seq` read.
    pub async fn reload(&self) -> Result<()> {
        let inner = &self.inner;
        let reading = Reading::begin(&inner.state, journal);
        let mut index = load_index(inner.store.as_ref()).await?;
        let paused = load_paused(inner.store.as_ref()).await?;
        // The runs here: their rows, read after the table, settle whether they were revoked.
        let flying: Vec<String> = inner.state.borrow().in_flight.keys().cloned().collect();
        let rows = if flying.is_empty() {
            Vec::new()
        } else {
            inner.store.get(Table::Jobs, flying.clone()).await?
        };
        let mut state = inner.state.borrow_mut();
        let state = &mut *state;
        for (id, row) in flying.iter().zip(rows) {
            if state.in_flight.contains_key(id) {
                revoke_if_cancelled(state, id, &read_row(row), reading.mark);
            }
        }
        index.journal = std::mem::take(&mut state.index.journal);
        // What this instance changed meanwhile, and its runs, stay as it knows them (a revoked
        // run's job is already indexed as stored).
        let keep: Vec<String> = index
            .journal
            .touched_ids_since(reading.mark)
            .into_iter()
            .chain(
                state
                    .in_flight
                    .iter()
                    .filter(|(_, flight)| !flight.revoked)
                    .map(|(id, _)| id.clone()),
            )
            .collect();
        for id in &keep {
            index.copy_from(&state.index, id);
        }
        index.max_seq = index.max_seq.max(state.index.max_seq);
        state.next_seq = state.next_seq.max(index.max_seq);
        state.index = index;
        state.paused = paused;
        state.kept.clear();
        Ok(())
    }

    /// Holds a pending job back: a `waiting` or `delayed` job becomes `paused` and does not start
    /// until [`JobQueue::resume_job`] (a delayed one keeps its `nextRunAt`). A paused job stays
    /// cancellable, and keeps its debounce id: a newer job enqueued with that debounce id within
    /// the ttl replaces it (and is not paused). Pausing a paused job returns it as it is. A job
    /// that is `active` (running, here or elsewhere) or finished cannot be paused
    /// (`ERR_INVALID_INPUT` on `id`, as is an unknown id).
    pub async fn pause_job(&self, id: &str) -> Result<JobRecord> {
        check_id("id", id)?;
        let mut record = self.pausable(id).await?;
        match record.state {
            JobState::Paused => return Ok(record),
            JobState::Waiting | JobState::Delayed => {}
            state => return Err(Error::invalid_input("id", not_pausable(id, state))),
        }
        record.state = JobState::Paused;
        self.write_one(&record).await?;
        Ok(record)
    }

    /// Lets a paused job start again: it becomes `waiting`, behind the jobs of its priority
    /// already waiting (a new `seq`: FIFO from the resume), or `delayed` if its `nextRunAt` is
    /// still ahead. A job that is not paused is returned as it is. An unknown id is
    /// `ERR_INVALID_INPUT` on `id`.
    pub async fn resume_job(&self, id: &str) -> Result<JobRecord> {
        check_id("id", id)?;
        let Some(mut record) = self.read(id).await? else {
            return Err(no_such_job(id));
        };
        if record.state != JobState::Paused {
            return Ok(record);
        }
        let now = self.inner.clock.now_ms();
        match record.next_run_at {
            Some(due) if due > now => record.state = JobState::Delayed,
            _ => {
                record.state = JobState::Waiting;
                record.next_run_at = None;
                record.ready_at = Some(now);
                record.seq = self.inner.state.borrow_mut().take_seq();
            }
        }
        self.write_one(&record).await?;
        Ok(record)
    }

    /// Job `id` as stored, for [`JobQueue::pause_job`]: one running here is `active` whatever its
    /// row says (its start may not be written yet).
    async fn pausable(&self, id: &str) -> Result<JobRecord> {
        let running = || self.inner.state.borrow().in_flight.contains_key(id);
        if running() {
            return Err(Error::invalid_input(
                "id",
                not_pausable(id, JobState::Active),
            ));
        }
        let Some(record) = self.read(id).await? else {
            return Err(no_such_job(id));
        };
        if running() {
            return Err(Error::invalid_input(
                "id",
                not_pausable(id, JobState::Active),
            ));
        }
        Ok(record)
    }

    /// Writes one job as it is and indexes it.
    async fn write_one(&self, record: &JobRecord) -> Result<()> {
        self.inner
            .store
            .write(vec![WriteOp::Put(Table::Jobs, record.to_row()?)])
            .await?;
        let mut state = self.inner.state.borrow_mut();
        state.index.upsert(record);
        state.kept.remove(&record.id);
        Ok(())
    }

    /// Registers (or replaces) the handler of queue `name`, running at most `concurrency` (1 to
    /// 1000) of its jobs at once.
    pub fn register<F>(&self, name: &str, concurrency: usize, handler: F) -> Result<()>
    where
        F: Fn(JobContext) -> LocalBoxFuture<'static, Result<Value, JobError>> + 'static,
    {
        check_id("name", name)?;
        if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
            return Err(Error::invalid_input(
                "concurrency",
                format!("must be from 1 to {MAX_CONCURRENCY}, got {concurrency}"),
            ));
        }
        self.inner.state.borrow_mut().handlers.insert(
            name.to_owned(),
            Registered {
                handler: Rc::new(handler),
                concurrency,
            },
        );
        Ok(())
    }

    /// Whether queue `name` has a handler.
    pub fn is_registered(&self, name: &str) -> bool {
        self.inner.state.borrow().handlers.contains_key(name)
    }

    /// The store this queue keeps its jobs in (a [`super::Scheduler`] keeps its rows there too).
    pub(super) fn store(&self) -> Rc<dyn Store> {
        Rc::clone(&self.inner.store)
    }

    /// The clock this queue reads (a [`super::Scheduler`] reads the same one).
    pub(super) fn clock(&self) -> SharedClock {
        Rc::clone(&self.inner.clock)
    }

    /// Adds a job to queue `name`; resolves once it is stored. Validates first (nothing is
    /// written on error): `name` must have a handler, `data` must be at most 1 MiB of JSON, the
    /// options in range (`ERR_INVALID_INPUT` naming the field). With `jobId`, an existing job of
    /// that id is returned instead. With `debounce`, a pending job of the same debounce id younger
    /// than its ttl is deleted in the same transaction.
    pub async fn enqueue(&self, name: &str, data: Value, options: JobOptions) -> Result<JobRecord> {
        let job = (name.to_owned(), data, options);
        let mut records = self.add(vec![job], |_| String::new()).await?;
        records
            .pop()
            .ok_or_else(|| Error::Internal("an enqueue returned no job".into()))
    }

    /// Adds several jobs (BullMQ's `addBulk`), each `(name, data, options)`, in ONE transaction;
    /// resolves to one record per job, in order, once they are all stored. Every job is validated
    /// first, as [`JobQueue::enqueue`] does, and nothing is written if one is refused: the error
    /// names the job's field (`jobs[3].options.delay`, `jobs[0].name`). Each job means what it
    /// would mean enqueued alone, the jobs one after the other: a `jobId` already stored (or earlier in the
    /// batch) returns that job and adds nothing; a `debounce` id replaces the pending job of that
    /// id younger than its ttl, an earlier job of the batch too (which is then not written, and
    /// its record is returned as [`JobQueue::enqueue`] would have returned it before it was
    /// replaced). Waiting jobs run in the batch's order (FIFO within a priority). An empty batch
    /// writes nothing.
    pub async fn enqueue_bulk(
        &self,
        jobs: Vec<(String, Value, JobOptions)>,
    ) -> Result<Vec<JobRecord>> {
        self.add(jobs, |i| format!("jobs[{i}]")).await
    }

    /// What [`JobQueue::enqueue`] and [`JobQueue::enqueue_bulk`] do, the fields of job `i` named
    /// under `field(i)` (the empty string: at the top).
    async fn add(
        &self,
        jobs: Vec<(String, Value, JobOptions)>,
        field: impl Fn(usize) -> String,
    ) -> Result<Vec<JobRecord>> {
        let sizes = jobs
            .iter()
            .enumerate()
            .map(|(i, (name, data, options))| {
                self.check_job(name, data, options)
                    .map_err(|error| under(&field(i), error))
            })
            .collect::<Result<Vec<usize>>>()?;
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let known = self.known_jobs(&jobs).await?;
        let inner = &self.inner;
        let now = inner.clock.now_ms();
        let (out, records, sizes, ops, replaced) = {
            let mut state = inner.state.borrow_mut();
            let state = &mut *state;
            let plan = plan(state, jobs, &sizes, &known, now);
            // The replaced jobs first: a later job of the batch may take one's `jobId`.
            let mut ops = Vec::with_capacity(plan.written.len() + plan.replaced.len());
            for old in &plan.replaced {
                ops.push(WriteOp::Delete(Table::Jobs, old.clone()));
            }
            for record in &plan.written {
                ops.push(WriteOp::Put(Table::Jobs, record.to_row()?));
            }
            // Only a `jobId` can be asked for while the write is pending (a generated id is new).
            for record in plan.written.iter().filter(|r| r.options.job_id.is_some()) {
                state.enqueuing.insert(record.id.clone(), record.clone());
            }
            (plan.out, plan.written, plan.sizes, ops, plan.replaced)
        };
        let written = inner.store.write(ops).await;
        let mut state = inner.state.borrow_mut();
        for record in records.iter().filter(|r| r.options.job_id.is_some()) {
            state.enqueuing.remove(&record.id);
        }
        written?;
        for old in &replaced {
            state.index.remove(old);
            state.kept.remove(old);
        }
        for (record, size) in records.into_iter().zip(sizes) {
            state.index.upsert(&record);
            if record.state == JobState::Waiting {
                state.kept.keep(record, size);
            }
        }
        Ok(out)
    }

    /// One job as [`JobQueue::enqueue`] checks it: its fields named at the top (`name`, `data`,
    /// `options.delay`, ...). Answers the size of its `data`, serialised.
    fn check_job(&self, name: &str, data: &Value, options: &JobOptions) -> Result<usize> {
        if !self.is_registered(name) {
            check_id("name", name)?;
            return Err(Error::invalid_input(
                "name",
                format!("no handler is registered for `{name}`"),
            ));
        }
        let size = input::check_json_size("data", data, MAX_DATA_BYTES)?;
        options.validate()?;
        Ok(size)
    }

    /// The jobs already there under the `jobId`s of `jobs`: being enqueued by this instance, or
    /// stored (one read for all of them).
    async fn known_jobs(
        &self,
        jobs: &[(String, Value, JobOptions)],
    ) -> Result<HashMap<String, JobRecord>> {
        let mut known = HashMap::new();
        let mut missing = Vec::new();
        let mut seen = HashSet::new();
        for (_, _, options) in jobs {
            let Some(id) = &options.job_id else { continue };
            if !seen.insert(id) {
                continue;
            }
            match self.existing(id) {
                Some(record) => {
                    known.insert(id.clone(), record);
                }
                None => missing.push(id.clone()),
            }
        }
        if missing.is_empty() {
            return Ok(known);
        }
        let rows = self.inner.store.get(Table::Jobs, missing.clone()).await?;
        for (id, row) in missing.into_iter().zip(rows) {
            // Stored, or being enqueued by another call since the read began.
            let record = match row {
                Some(row) => Some(JobRecord::from_row(&row)?),
                None => self.existing(&id),
            };
            if let Some(record) = record {
                known.insert(id, record);
            }
        }
        Ok(known)
    }

    /// The job of this id this instance is enqueueing right now (written, not yet committed).
    fn existing(&self, id: &str) -> Option<JobRecord> {
        self.inner.state.borrow().enqueuing.get(id).cloned()
    }

    /// The job with this id, read from the store.
    pub async fn get(&self, id: &str) -> Result<Option<JobRecord>> {
        check_id("id", id)?;
        self.read(id).await
    }

    async fn read(&self, id: &str) -> Result<Option<JobRecord>> {
        let row = self
            .inner
            .store
            .get(Table::Jobs, vec![id.to_owned()])
            .await?
            .pop()
            .flatten();
        row.map(|row| JobRecord::from_row(&row)).transpose()
    }

    /// Jobs in id order, filtered by state and/or queue, read from the store.
    pub async fn list(&self, filter: JobFilter) -> Result<JobPage> {
        if !(1..=1000).contains(&filter.limit) {
            return Err(Error::invalid_input(
                "limit",
                format!("must be from 1 to 1000, got {}", filter.limit),
            ));
        }
        if let Some(name) = &filter.name {
            check_id("name", name)?;
        }
        if let Some(after) = &filter.after {
            check_id("after", after)?;
        }
        let mut items = Vec::new();
        let mut cursor = filter.after.clone();
        let want = filter.limit + 1;
        loop {
            let mut scan = Scan::first(want);
            scan.after = cursor.clone();
            scan = match (&filter.state, &filter.name) {
                (Some(state), _) => scan.where_eq("state", state.name()),
                (None, Some(name)) => scan.where_eq("name", name.clone()),
                (None, None) => scan,
            };
            let rows = self.inner.store.scan(Table::Jobs, scan).await?;
            let exhausted = rows.len() < want;
            cursor = rows.last().map(|row| row.id.clone()).or(cursor);
            for row in &rows {
                let record = JobRecord::from_row(row)?;
                if filter.name.as_ref().is_none_or(|name| *name == record.name) {
                    items.push(record);
                }
                if items.len() == want {
                    break;
                }
            }
            if items.len() == want {
                items.pop();
                let next = items.last().map(|record| record.id.clone());
                return Ok(JobPage { items, next });
            }
            if exhausted {
                return Ok(JobPage { items, next: None });
            }
        }
    }

    /// How many jobs are in each state, over all queues and per queue (from the index).
    pub fn counts(&self) -> JobCounts {
        let state = self.inner.state.borrow();
        let mut counts = JobCounts::default();
        for entry in state.index.entries.values() {
            counts.all.add(entry.state);
            counts
                .queues
                .entry(entry.name.clone())
                .or_default()
                .add(entry.state);
        }
        counts.paused = state.paused.iter().cloned().collect();
        counts
    }

    /// Cancels a job: a pending one becomes `cancelled` at once; one running here gets its
    /// cancellation signal and its run ends it `cancelled`; one `active` under another instance's
    /// lease is marked `cancelled` (that instance's outcome is then discarded).
    pub async fn cancel(&self, id: &str) -> Result<CancelOutcome> {
        check_id("id", id)?;
        if let Some(flight) = self.inner.state.borrow().in_flight.get(id) {
            flight.signal.fire(CancelReason::Cancelled);
            return Ok(CancelOutcome::Signalled);
        }
        let Some(mut record) = self.read(id).await? else {
            return Ok(CancelOutcome::NotFound);
        };
        if let Some(flight) = self.inner.state.borrow().in_flight.get(id) {
            flight.signal.fire(CancelReason::Cancelled);
            return Ok(CancelOutcome::Signalled);
        }
        if record.state.is_finished() {
            return Ok(CancelOutcome::AlreadyFinished(record.state));
        }
        let now = self.inner.clock.now_ms();
        record.state = JobState::Cancelled;
        record.finished_at = Some(now);
        clear_schedule(&mut record);
        self.write_one(&record).await?;
        self.inner.observe(std::slice::from_ref(&record));
        Ok(CancelOutcome::Cancelled)
    }

    /// Runs a failed job again: it becomes `waiting` with its attempts reset. Anything but a failed
    /// job is `ERR_INVALID_INPUT` on `id`.
    pub async fn retry(&self, id: &str) -> Result<JobRecord> {
        check_id("id", id)?;
        let Some(mut record) = self.read(id).await? else {
            return Err(no_such_job(id));
        };
        if record.state != JobState::Failed {
            return Err(Error::invalid_input(
                "id",
                format!(
                    "job `{id}` is {}; only failed jobs can be retried",
                    record.state.name()
                ),
            ));
        }
        record.state = JobState::Waiting;
        record.seq = self.inner.state.borrow_mut().take_seq();
        record.attempts_made = 0;
        record.stalled_count = 0;
        record.error = None;
        record.result = None;
        record.finished_at = None;
        record.progress = json!(0);
        record.ready_at = Some(self.inner.clock.now_ms());
        clear_schedule(&mut record);
        self.write_one(&record).await?;
        Ok(record)
    }

    /// Stops starting jobs of queue `name` (running ones go on; delayed ones still become
    /// waiting). Persisted in the `meta` table.
    pub async fn pause_queue(&self, name: &str) -> Result<()> {
        self.set_paused(name, true).await
    }

    /// Starts jobs of queue `name` again.
    pub async fn resume_queue(&self, name: &str) -> Result<()> {
        self.set_paused(name, false).await
    }

    /// Whether queue `name` is paused.
    pub fn is_paused(&self, name: &str) -> bool {
        self.inner.state.borrow().paused.contains(name)
    }

    async fn set_paused(&self, name: &str, paused: bool) -> Result<()> {
        check_id("name", name)?;
        let mut queues = self.inner.state.borrow().paused.clone();
        let changed = if paused {
            queues.insert(name.to_owned())
        } else {
            queues.remove(name)
        };
        if !changed {
            return Ok(());
        }
        let row = Row::new(PAUSED_META_ID).with("queues", json!(queues));
        self.inner
            .store
            .write(vec![WriteOp::Put(Table::Meta, row)])
            .await?;
        self.inner.state.borrow_mut().paused = queues;
        Ok(())
    }

    /// When [`JobQueue::tick`] next has something to do (ms on the clock): now if a job can
    /// start, else the earliest of a delayed job's due time, a timeout, a lease to renew or a
    /// lease to take back; `None` when nothing is pending.
    pub fn next_wake_at(&self) -> Option<u64> {
        let now = self.inner.clock.now_ms();
        let state = self.inner.state.borrow();
        let half_lease = self.inner.config.lease_ms / 2;
        let mut wake: Option<u64> = None;
        let mut at = |t: u64| wake = Some(wake.map_or(t, |w| w.min(t)));
        if let Some((due, _, _)) = state.index.delayed.first() {
            at(*due);
        }
        if let Some((until, _)) = state
            .index
            .leases
            .iter()
            .find(|(_, id)| !state.in_flight.contains_key(id))
        {
            at(*until);
        }
        for flight in state.in_flight.values() {
            if let Some(deadline) = flight.deadline {
                if flight.signal.reason().is_none() {
                    at(deadline);
                }
            }
            if let Some(until) = flight.record.as_ref().and_then(|r| r.lease_until) {
                at(until.saturating_sub(half_lease));
            }
        }
        if !startable(&state).is_empty() {
            at(now);
        }
        wake
    }

    /// Does what is due, then starts jobs: fires the signal of runs past their timeout, makes due
    /// delayed jobs waiting, takes back `active` jobs whose lease expired (their worker died: the
    /// lost run counts as an attempt) and renews the leases of runs here (one transaction), then
    /// starts as many waiting jobs as each unpaused queue's concurrency allows, in priority then
    /// FIFO order, writing them `active` under a lease in one transaction before any handler runs.
    /// Returns the started runs: poll them (they need no runtime), and tick again when one ends,
    /// after an enqueue, and at [`JobQueue::next_wake_at`].
    pub async fn tick(&self) -> Result<Vec<JobRun>> {
        let now = self.inner.clock.now_ms();
        self.fire_timeouts(now);
        self.maintain(now).await?;
        self.start(now).await
    }

    fn fire_timeouts(&self, now: u64) {
        let state = self.inner.state.borrow();
        for flight in state.in_flight.values() {
            if flight.deadline.is_some_and(|deadline| deadline <= now) {
                flight.signal.fire(CancelReason::Timeout);
            }
        }
    }

    /// Promotes due delayed jobs, takes back expired leases, renews the leases of runs here.
    async fn maintain(&self, now: u64) -> Result<()> {
        let inner = &self.inner;
        let (due, expired) = {
            let state = inner.state.borrow();
            let due: Vec<String> = state
                .index
                .delayed
                .iter()
                .take_while(|(at, _, _)| *at <= now)
                .map(|(_, _, id)| id.clone())
                .collect();
            let expired: Vec<String> = state
                .index
                .leases
                .iter()
                .take_while(|(until, _)| *until <= now)
                .filter(|(_, id)| !state.in_flight.contains_key(id))
                .map(|(_, id)| id.clone())
                .collect();
            (due, expired)
        };
        if due.is_empty() && expired.is_empty() && !self.lease_to_renew(now) {
            return Ok(());
        }
        let ids: Vec<String> = due.iter().chain(&expired).cloned().collect();
        let rows = if ids.is_empty() {
            Vec::new()
        } else {
            inner.store.get(Table::Jobs, ids.clone()).await?
        };
        let mut settling = Settling::default();
        let mut observed = Vec::new();
        let renewed: Vec<JobRecord>;
        {
            let mut state = inner.state.borrow_mut();
            for (i, (id, row)) in ids.iter().zip(rows).enumerate() {
                let expected = if i < due.len() {
                    JobState::Delayed
                } else {
                    JobState::Active
                };
                let Some(row) = row else {
                    settling.changes.push(Change::Remove(id.clone()));
                    continue;
                };
                let mut record = JobRecord::from_row(&row)?;
                if record.state != expected
                    || (expected == JobState::Active
                        && record.lease_until.is_some_and(|until| until > now))
                {
                    // Changed by another instance since the index saw it.
                    settling.changes.push(Change::upsert(&record));
                    continue;
                }
                if expected == JobState::Delayed {
                    record.state = JobState::Waiting;
                    record.seq = state.take_seq();
                    // Ready since it was due, however late this tick came.
                    record.ready_at = Some(record.next_run_at.map_or(now, |due| due.min(now)));
                    record.next_run_at = None;
                    settling.put(&record)?;
                } else {
                    record.attempts_made = record.attempts_made.saturating_add(1);
                    record.stalled_count = record.stalled_count.saturating_add(1);
                    record.lease_until = None;
                    record.run_id = None;
                    if record.stalled_count > inner.config.max_stalled {
                        record.error = Some(JobFailure {
                            message: format!(
                                "the job's lease expired {} times (its worker stopped each time)",
                                record.stalled_count
                            ),
                            retryable: false,
                        });
                        record.state = JobState::Failed;
                        record.finished_at = Some(now);
                        settling.settle(&state, &record, None)?;
                        observed.push(record);
                    } else {
                        record.error = Some(JobFailure {
                            message: "the job's lease expired: its worker stopped while running it"
                                .into(),
                            retryable: true,
                        });
                        record.state = JobState::Waiting;
                        record.seq = state.take_seq();
                        record.ready_at = Some(now);
                        settling.put(&record)?;
                        observed.push(record);
                    }
                }
            }
            // Taken after the read, so that a run that ended meanwhile is not written back active.
            let renew_before = now.saturating_add(inner.config.lease_ms / 2);
            renewed = state
                .in_flight
                .values()
                // A revoked run's row was cancelled or deleted: renewing would write it back.
                .filter(|flight| !flight.revoked)
                .filter_map(|flight| flight.record.as_ref())
                .filter(|record| {
                    record
                        .lease_until
                        .is_some_and(|until| until <= renew_before)
                })
                .map(|record| JobRecord {
                    lease_until: Some(now.saturating_add(inner.config.lease_ms)),
                    ..record.clone()
                })
                .collect();
        }
        // Each renewal only if the row is still this run's: one another instance cancelled,
        // deleted or took back stays as it wrote it.
        let renewals: Vec<Guarded> = renewed
            .iter()
            .map(|record| Guarded {
                id: record.id.clone(),
                expect: lease_expected(record),
                merge: Some(vec![("leaseUntil".into(), json!(record.lease_until))]),
                read_back: false,
            })
            .collect();
        let outcomes = inner
            .store
            .write_guarded(Table::Jobs, renewals, settling.ops)
            .await?;
        {
            let mut state = inner.state.borrow_mut();
            apply(&mut state.index, settling.changes);
            for (record, guard) in renewed.into_iter().zip(outcomes) {
                match guard {
                    Guard::Applied(_) => {
                        if let Some(flight) = state.in_flight.get_mut(&record.id) {
                            if let Some(current) = &mut flight.record {
                                current.lease_until = record.lease_until;
                                state.index.upsert(&record);
                            }
                        }
                    }
                    Guard::Refused(row) => lease_lost(&mut state, &record.id, Some(row)),
                    Guard::Missing => lease_lost(&mut state, &record.id, None),
                }
            }
        }
        inner.observe(&observed);
        Ok(())
    }

    /// Whether a run here holds a lease due for renewal (half of it has passed).
    fn lease_to_renew(&self, now: u64) -> bool {
        let renew_before = now.saturating_add(self.inner.config.lease_ms / 2);
        self.inner.state.borrow().in_flight.values().any(|flight| {
            !flight.revoked
                && flight
                    .record
                    .as_ref()
                    .and_then(|record| record.lease_until)
                    .is_some_and(|until| until <= renew_before)
        })
    }

    /// Starts what the queues' concurrency allows.
    async fn start(&self, now: u64) -> Result<Vec<JobRun>> {
        let inner = &self.inner;
        let picks = {
            let mut state = inner.state.borrow_mut();
            let picks = startable(&state);
            for (id, name) in &picks {
                state.in_flight.insert(
                    id.clone(),
                    InFlight {
                        name: name.clone(),
                        record: None,
                        signal: CancelSignal::new(),
                        deadline: None,
                        revoked: false,
                    },
                );
            }
            picks
        };
        if picks.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = picks.iter().map(|(id, _)| id.clone()).collect();
        let started = self.write_starts(&ids, now).await;
        let mut state = inner.state.borrow_mut();
        let (records, changes) = match started {
            Ok(started) => started,
            Err(error) => {
                for id in &ids {
                    state.in_flight.remove(id);
                }
                return Err(error);
            }
        };
        apply(&mut state.index, changes);
        let started: HashSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
        for id in &ids {
            if !started.contains(id.as_str()) {
                state.in_flight.remove(id);
            }
        }
        let mut runs = Vec::with_capacity(records.len());
        for record in records {
            let Some(handler) = state.handlers.get(&record.name).map(|r| r.handler.clone()) else {
                continue;
            };
            let Some(flight) = state.in_flight.get_mut(&record.id) else {
                continue;
            };
            flight.deadline = record.options.timeout.map(|t| now.saturating_add(t));
            let signal = flight.signal.clone();
            runs.push(run(Rc::clone(inner), &record, signal, handler));
            flight.record = Some(record);
        }
        Ok(runs)
    }

    /// Writes the picked jobs `active` under a lease, each only if its row is still the waiting
    /// job the index knows (same `seq`: not cancelled, paused, started or deleted by another
    /// instance meanwhile), in one transaction; the rows of jobs whose record it does not keep
    /// are read back in it.
    async fn write_starts(
        &self,
        ids: &[String],
        now: u64,
    ) -> Result<(Vec<JobRecord>, Vec<Change>)> {
        let inner = &self.inner;
        let lease_until = now.saturating_add(inner.config.lease_ms);
        let mut kept = Vec::with_capacity(ids.len());
        let guarded: Vec<Guarded> = {
            let mut state = inner.state.borrow_mut();
            ids.iter()
                .map(|id| {
                    let seq = state.index.entries.get(id).map(|entry| entry.seq);
                    let record = state
                        .kept
                        .remove(id)
                        .filter(|record| Some(record.seq) == seq);
                    state.runs += 1;
                    // Not `format!`: this is on every start's path.
                    let mut run_id = String::with_capacity(inner.owner.len() + 21);
                    run_id.push_str(&inner.owner);
                    run_id.push(':');
                    run_id.push_str(itoa::Buffer::new().format(state.runs));
                    let expect = vec![
                        ("state".into(), json!(JobState::Waiting.name())),
                        ("seq".into(), json!(seq)),
                    ];
                    let merge = vec![
                        ("state".into(), json!(JobState::Active.name())),
                        ("processedAt".into(), json!(now)),
                        ("leaseUntil".into(), json!(lease_until)),
                        ("runId".into(), json!(run_id)),
                        ("nextRunAt".into(), Value::Null),
                        ("debounceUntil".into(), Value::Null),
                    ];
                    let read_back = record.is_none();
                    // The same change, made to the kept record.
                    kept.push(record.map(|record| JobRecord {
                        state: JobState::Active,
                        processed_at: Some(now),
                        lease_until: Some(lease_until),
                        run_id: Some(run_id),
                        next_run_at: None,
                        debounce_until: None,
                        ..record
                    }));
                    Guarded {
                        id: id.clone(),
                        expect,
                        merge: Some(merge),
                        read_back,
                    }
                })
                .collect()
        };
        let outcomes = inner
            .store
            .write_guarded(Table::Jobs, guarded, Vec::new())
            .await?;
        let mut records = Vec::new();
        let mut changes = Vec::new();
        for ((id, guard), kept) in ids.iter().zip(outcomes).zip(kept) {
            let started = match (guard, kept) {
                (Guard::Applied(_), Some(record)) => record,
                (Guard::Applied(Some(row)), None) => match JobRecord::from_row(&row) {
                    Ok(record) => record,
                    // Unreadable: left out of the index, as `open` leaves such rows out.
                    Err(_) => {
                        changes.push(Change::Remove(id.clone()));
                        continue;
                    }
                },
                (Guard::Refused(row), _) => {
                    changes.push(Change::stored(id, &row));
                    continue;
                }
                (Guard::Applied(None) | Guard::Missing, _) => {
                    changes.push(Change::Remove(id.clone()));
                    continue;
                }
            };
            changes.push(Change::upsert(&started));
            records.push(started);
        }
        Ok((records, changes))
    }
}

/// What enqueueing a batch of jobs writes.
struct Plan {
    /// The record answered for each job, in order.
    out: Vec<JobRecord>,
    /// The new jobs to store, in order.
    written: Vec<JobRecord>,
    /// The size of each written job's `data`, serialised.
    sizes: Vec<usize>,
    /// The stored pending jobs the batch's debounce ids replace (deleted in the same transaction).
    replaced: Vec<String>,
}

/// The records of `jobs` (validated, their `data` of `sizes`) at `now`, as enqueueing them one
/// after the other would make them (see [`JobQueue::enqueue_bulk`]); `known` holds the jobs
/// already there under their `jobId`s.
fn plan(
    state: &mut State,
    jobs: Vec<(String, Value, JobOptions)>,
    sizes: &[usize],
    known: &HashMap<String, JobRecord>,
    now: u64,
) -> Plan {
    let mut out = Vec::with_capacity(jobs.len());
    // `None` for a job a later one of the batch replaced.
    let mut written: Vec<Option<(JobRecord, usize)>> = Vec::with_capacity(jobs.len());
    // The batch's new jobs by `jobId` and by debounce id: positions in `written`.
    let mut by_id: HashMap<String, usize> = HashMap::new();
    let mut by_debounce: HashMap<String, usize> = HashMap::new();
    let mut replaced: Vec<String> = Vec::new();
    for ((name, data, options), &size) in jobs.into_iter().zip(sizes) {
        if let Some(job_id) = &options.job_id {
            let earlier = match by_id.get(job_id) {
                Some(&at) => written[at].as_ref().map(|(record, _)| record.clone()),
                // Unless an earlier job of the batch replaced it.
                None => known
                    .get(job_id)
                    .filter(|_| !replaced.contains(job_id))
                    .cloned(),
            };
            if let Some(record) = earlier {
                out.push(record);
                continue;
            }
        }
        if let Some(debounce) = &options.debounce {
            match by_debounce.remove(&debounce.id) {
                // An earlier job of the batch: pending, and as old as this one (a ttl is ≥ 1 ms).
                Some(at) => {
                    if let Some((old, _)) = written[at].take() {
                        by_id.remove(&old.id);
                    }
                }
                None => {
                    if let Some(old) = state.index.debounced(&debounce.id, now) {
                        replaced.push(old.to_owned());
                    }
                }
            }
        }
        let record = new_record(state, name, data, options, now);
        if record.options.job_id.is_some() {
            by_id.insert(record.id.clone(), written.len());
        }
        if let Some(debounce) = &record.options.debounce {
            by_debounce.insert(debounce.id.clone(), written.len());
        }
        out.push(record.clone());
        written.push(Some((record, size)));
    }
    let (written, sizes) = written.into_iter().flatten().unzip();
    Plan {
        out,
        written,
        sizes,
        replaced,
    }
}

/// A new job of queue `name` at `now`: its `jobId` or a generated id, the next `seq`, `waiting`
/// (or `delayed` with a `delay`).
fn new_record(
    state: &mut State,
    name: String,
    data: Value,
    options: JobOptions,
    now: u64,
) -> JobRecord {
    let id = match &options.job_id {
        Some(id) => id.clone(),
        None => state.ids.next("j", now, &mut state.rng),
    };
    let delayed = options.delay > 0;
    JobRecord {
        id,
        name,
        data,
        state: if delayed {
            JobState::Delayed
        } else {
            JobState::Waiting
        },
        seq: state.take_seq(),
        attempts_made: 0,
        stalled_count: 0,
        progress: json!(0),
        result: None,
        error: None,
        created_at: now,
        ready_at: (!delayed).then_some(now),
        processed_at: None,
        finished_at: None,
        next_run_at: delayed.then(|| now.saturating_add(options.delay)),
        lease_until: None,
        run_id: None,
        debounce_until: options.debounce.as_ref().map(|d| now.saturating_add(d.ttl)),
        options,
    }
}

/// `error` with its field put under `prefix` (`options.delay` → `jobs[3].options.delay`); an
/// empty prefix leaves it as it is.
fn under(prefix: &str, error: Error) -> Error {
    match error {
        Error::InvalidInput { field, reason } if !prefix.is_empty() => Error::InvalidInput {
            field: format!("{prefix}.{field}"),
            reason,
        },
        other => other,
    }
}

/// How many jobs [`JobQueue::refresh`] reads in one `get`.
const REFRESH_CHUNK: usize = 500;

/// Every readable job of the `jobs` table, indexed (unreadable rows are skipped).
async fn load_index(store: &dyn Store) -> Result<Index> {
    let mut index = Index::default();
    let mut scan = Scan::first(1000);
    loop {
        let rows = store.scan(Table::Jobs, scan.clone()).await?;
        let Some(last) = rows.last() else { break };
        scan = scan.after(last.id.clone());
        for row in &rows {
            if let Ok(record) = JobRecord::from_row(row) {
                index.upsert(&record);
            }
        }
    }
    Ok(index)
}

/// The paused queues, from their `meta` row (none if it is missing or unreadable).
async fn load_paused(store: &dyn Store) -> Result<BTreeSet<String>> {
    Ok(store
        .get(Table::Meta, vec![PAUSED_META_ID.to_owned()])
        .await?
        .pop()
        .flatten()
        .and_then(|row| row.fields.get("queues").cloned())
        .and_then(|queues| serde_json::from_value::<BTreeSet<String>>(queues).ok())
        .unwrap_or_default())
}

/// A job's row as read again.
enum Stored {
    Record(Box<JobRecord>),
    Gone,
    Unreadable,
}

fn read_row(row: Option<Row>) -> Stored {
    match row.map(|row| JobRecord::from_row(&row)) {
        Some(Ok(record)) => Stored::Record(Box::new(record)),
        Some(Err(_)) => Stored::Unreadable,
        None => Stored::Gone,
    }
}

/// Signals the run here of job `id` if its row, read after `mark`, says another instance
/// cancelled it, or deleted it (unless this instance wrote the job since `mark`: then the read
/// may predate that write).
fn revoke_if_cancelled(state: &mut State, id: &str, stored: &Stored, mark: u64) {
    let revoked = match stored {
        Stored::Record(record) => record.state == JobState::Cancelled,
        Stored::Gone => !state.index.journal.touched_since(id, mark),
        Stored::Unreadable => false,
    };
    if revoked {
        revoke(state, id, stored);
    }
}

/// Signals the run here of job `id` as cancelled (its row, `stored`, was cancelled or deleted by
/// another instance), stops renewing its lease and indexes the job as stored.
fn revoke(state: &mut State, id: &str, stored: &Stored) {
    let Some(flight) = state.in_flight.get_mut(id) else {
        return;
    };
    flight.revoked = true;
    flight.signal.fire(CancelReason::Cancelled);
    match stored {
        Stored::Record(record) => state.index.upsert(record),
        Stored::Gone | Stored::Unreadable => state.index.remove(id),
    }
}

/// A write guarded by the lease of the run here of job `id` was refused: its row (`None`: gone)
/// says another instance took the job back (the run's outcome will not be written, its lease is
/// no longer renewed), or cancelled or deleted it (the run is also signalled).
fn lease_lost(state: &mut State, id: &str, row: Option<Row>) {
    match read_row(row) {
        Stored::Record(ref row) if row.state != JobState::Cancelled => {
            if let Some(flight) = state.in_flight.get_mut(id) {
                flight.revoked = true;
            }
            state.index.upsert(row);
        }
        stored => revoke(state, id, &stored),
    }
}

fn no_such_job(id: &str) -> Error {
    Error::invalid_input("id", format!("there is no job `{id}`"))
}

fn not_pausable(id: &str, state: JobState) -> String {
    match state {
        JobState::Active => {
            format!("job `{id}` is active: a running job cannot be paused (cancel it instead)")
        }
        state => format!(
            "job `{id}` is {}: only waiting or delayed jobs can be paused",
            state.name()
        ),
    }
}

/// The waiting jobs to start now: per registered, unpaused queue, as many as its free
/// concurrency, in `(priority, seq)` order.
fn startable(state: &State) -> Vec<(String, String)> {
    let mut picks = Vec::new();
    for (name, registered) in &state.handlers {
        if state.paused.contains(name) {
            continue;
        }
        let free = registered
            .concurrency
            .saturating_sub(state.in_flight_of(name));
        if free == 0 {
            continue;
        }
        let Some(ready) = state.index.ready.get(name) else {
            continue;
        };
        picks.extend(
            ready
                .iter()
                .filter(|(_, _, id)| !state.in_flight.contains_key(id))
                .take(free)
                .map(|(_, _, id)| (id.clone(), name.clone())),
        );
    }
    picks
}

fn apply(index: &mut Index, changes: Vec<Change>) {
    for change in changes {
        change.apply(index);
    }
}

/// Clears what only a pending or active job has.
fn clear_schedule(record: &mut JobRecord) {
    record.next_run_at = None;
    record.lease_until = None;
    record.run_id = None;
    record.debounce_until = None;
}

/// The writes of jobs being written finished together (the runs that ended in one turn, or the
/// leases that expired in one tick), and the index changes they make once committed.
#[derive(Default)]
struct Settling {
    /// Writes made whatever the guarded ones find.
    ops: Vec<WriteOp>,
    changes: Vec<Change>,
    /// The finished jobs' own writes when they are guarded (see [`Settling::settle`]), and the
    /// index change each makes if it is applied.
    guarded: Vec<(Guarded, Change)>,
    /// Per `(queue, state)`: the finished jobs this batch keeps, oldest first, and how many of
    /// the index's oldest it deletes, so that a `removeOn*` count also covers the batch's own jobs
    /// (the index learns of them only once the write has committed).
    finished: HashMap<(String, JobState), (Vec<String>, usize)>,
}

impl Settling {
    /// Writes `record` as it is and indexes it once committed.
    fn put(&mut self, record: &JobRecord) -> Result<()> {
        self.ops.push(WriteOp::Put(Table::Jobs, record.to_row()?));
        self.changes.push(Change::upsert(record));
        Ok(())
    }

    /// Deletes job `id`.
    fn delete(&mut self, id: String) {
        self.ops.push(WriteOp::Delete(Table::Jobs, id.clone()));
        self.changes.push(Change::Remove(id));
    }

    /// Writes `record` (`keep`) or deletes it; with `expect`, only if its row matches, and only
    /// the fields an attempt's end changes (the row is the one the attempt ran under).
    fn own(&mut self, record: &JobRecord, keep: bool, expect: Option<Fields>) -> Result<()> {
        let Some(expect) = expect else {
            return match keep {
                true => self.put(record),
                false => {
                    self.delete(record.id.clone());
                    Ok(())
                }
            };
        };
        let (merge, change) = match keep {
            true => (Some(record.outcome_fields()?), Change::upsert(record)),
            false => (None, Change::Remove(record.id.clone())),
        };
        let guarded = Guarded {
            id: record.id.clone(),
            expect,
            merge,
            read_back: false,
        };
        self.guarded.push((guarded, change));
        Ok(())
    }

    /// Writes a finished job per its `removeOn*` policy: kept, deleted, or kept with the older
    /// finished jobs of its queue beyond the count deleted. With `expect`, the job's own write is
    /// made only if its row still matches (the older jobs' deletes are made anyway).
    fn settle(&mut self, state: &State, record: &JobRecord, expect: Option<Fields>) -> Result<()> {
        let policy = match record.state {
            JobState::Completed => record.options.remove_on_complete,
            JobState::Failed => record.options.remove_on_fail,
            _ => RemovePolicy::Keep,
        };
        let keep = match policy {
            RemovePolicy::Keep => return self.own(record, true, expect),
            RemovePolicy::Remove | RemovePolicy::KeepLast(0) => {
                return self.own(record, false, expect)
            }
            RemovePolicy::KeepLast(keep) => usize::try_from(keep).unwrap_or(usize::MAX),
        };
        let key = (record.name.clone(), record.state);
        let indexed = state.index.finished_oldest_first(&key.0, key.1);
        let (mut kept, mut dropped) = self.finished.remove(&key).unwrap_or_default();
        // The index's finished jobs not yet deleted, the batch's, and this one.
        let total = indexed.len().saturating_sub(dropped) + kept.len() + 1;
        let mut excess = total.saturating_sub(keep);
        let doomed: Vec<String> = indexed
            .skip(dropped)
            .filter(|id| **id != record.id)
            .take(excess)
            .cloned()
            .collect();
        excess -= doomed.len();
        dropped += doomed.len();
        for id in doomed {
            self.delete(id);
        }
        // Written earlier in this batch: deleted after that write, in the same transaction.
        let excess = excess.min(kept.len());
        for id in kept.drain(..excess) {
            self.delete(id);
        }
        kept.push(record.id.clone());
        self.finished.insert(key, (kept, dropped));
        self.own(record, true, expect)
    }
}

/// The run of one attempt of `record`.
fn run(inner: Rc<Inner>, record: &JobRecord, signal: CancelSignal, handler: Handler) -> JobRun {
    let weak = Rc::downgrade(&inner);
    let progress_id = record.id.clone();
    let progress: ProgressSink =
        Rc::new(move |value| Box::pin(report_progress(weak.clone(), progress_id.clone(), value)));
    let context = JobContext {
        id: record.id.clone(),
        name: record.name.clone(),
        data: record.data.clone(),
        attempt: record.next_attempt(),
        idempotency_key: record.id.clone(),
        signal: signal.clone(),
        progress,
    };
    let guard = InFlightGuard {
        inner,
        id: record.id.clone(),
    };
    let future = async move {
        let outcome = match signal.reason() {
            // Cancelled between the start and the first poll: the handler never runs.
            Some(reason) => Outcome::Signalled(reason),
            None => {
                let mut attempt = handler(context);
                poll_fn(|cx| {
                    if let Poll::Ready(result) = attempt.as_mut().poll(cx) {
                        return Poll::Ready(Outcome::Returned(result));
                    }
                    signal.poll_fired(cx).map(Outcome::Signalled)
                })
                .await
            }
        };
        let finished = finish(&guard.inner, &guard.id, outcome, signal.reason()).await;
        drop(guard);
        finished
    };
    JobRun {
        id: record.id.clone(),
        future: Box::pin(future),
    }
}

/// Takes a job off this instance's in-flight set however its run ends (even when dropped).
struct InFlightGuard {
    inner: Rc<Inner>,
    id: String,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if let Ok(mut state) = self.inner.state.try_borrow_mut() {
            state.in_flight.remove(&self.id);
        }
    }
}

/// `value` serialised is at most [`MAX_DATA_BYTES`], or `ERR_INVALID_INPUT` on `field`.
pub(super) fn check_json_size(field: &str, value: &Value) -> Result<()> {
    input::check_json_size(field, value, MAX_DATA_BYTES).map(drop)
}

async fn report_progress(inner: Weak<Inner>, id: String, progress: Value) -> Result<()> {
    if let Some(n) = progress.as_f64() {
        if !(0.0..=100.0).contains(&n) {
            return Err(Error::invalid_input(
                "progress",
                format!("a number must be from 0 to 100, got {n}"),
            ));
        }
    }
    check_json_size("progress", &progress)?;
    let Some(inner) = inner.upgrade() else {
        return Err(Error::Closed);
    };
    let expect = {
        let mut state = inner.state.borrow_mut();
        let Some(record) = state.in_flight.get_mut(&id).and_then(|f| f.record.as_mut()) else {
            return Err(Error::invalid_input(
                "progress",
                format!("job `{id}` is not running"),
            ));
        };
        record.progress = progress.clone();
        lease_expected(record)
    };
    // Only while the row is still this run's: a job another instance cancelled, deleted or took
    // back stays as it wrote it (a plain put of the record would write it back `active`).
    let change = Guarded {
        id: id.clone(),
        expect,
        merge: Some(vec![("progress".into(), progress)]),
        read_back: false,
    };
    let guard = inner
        .store
        .write_guarded(Table::Jobs, vec![change], Vec::new())
        .await?
        .into_iter()
        .next();
    let row = match guard {
        Some(Guard::Applied(_)) => return Ok(()),
        Some(Guard::Refused(row)) => Some(row),
        Some(Guard::Missing) | None => None,
    };
    lease_lost(&mut inner.state.borrow_mut(), &id, row);
    Err(Error::Cancelled(format!(
        "job `{id}` was cancelled, deleted or taken back by another tab: its progress was not stored"
    )))
}

/// How one attempt ended, waiting for the write of its batch.
struct Ending {
    /// The job as this run holds it (with its latest progress).
    record: JobRecord,
    outcome: Outcome,
    /// The reason its signal fired, if it did.
    signalled: Option<CancelReason>,
}

/// What a batch of endings resolves to: each ending's result by job id.
type Endings = Rc<HashMap<String, Result<Option<JobState>>>>;

/// The write of a batch of endings, awaited by each of its runs.
type BatchWrite = Shared<LocalBoxFuture<'static, Endings>>;

/// The batches of endings: the one runs ending now join, and the latest one closed.
#[derive(Default)]
struct EndingBatches {
    /// Open: its write waits for the previous batch's.
    open: Option<(Rc<RefCell<Vec<Ending>>>, BatchWrite)>,
    /// The latest batch's write (the one the next batch waits for).
    latest: Option<BatchWrite>,
}

/// Stores how an attempt ended, unless the job was taken over or deleted meanwhile. Endings are
/// written in batches, one after the other (group commit): the runs that end while a batch is
/// being written make up the next, checked and written in one transaction. A read and a write
/// transaction per job kept IndexedDB below a thousand jobs a second.
async fn finish(
    inner: &Rc<Inner>,
    id: &str,
    outcome: Outcome,
    signalled: Option<CancelReason>,
) -> Result<Option<JobState>> {
    // Taken from the run: from here on no tick may renew its lease. A renewal written from the
    // stale `active` copy while the outcome's write is in flight would commit after it (IndexedDB
    // commits in creation order) and put the finished job back to `active`.
    let record = inner
        .state
        .borrow_mut()
        .in_flight
        .get_mut(id)
        .and_then(|flight| flight.record.take());
    let Some(record) = record else {
        return Err(Error::Internal(format!(
            "job `{id}` finished but was not running"
        )));
    };
    let write = {
        let mut batches = inner.ending.borrow_mut();
        let batches = &mut *batches;
        let (endings, write) = batches.open.get_or_insert_with(|| {
            let endings = Rc::new(RefCell::new(Vec::new()));
            let write = batch_write(
                Rc::downgrade(inner),
                Rc::clone(&endings),
                batches.latest.take(),
            );
            batches.latest = Some(write.clone());
            (endings, write)
        });
        endings.borrow_mut().push(Ending {
            record,
            outcome,
            signalled,
        });
        write.clone()
    };
    // Any of the batch's runs drives its write: it goes on if some of them are dropped (and the
    // next batch holds it too).
    let endings = write.await;
    // Missing only when the queue was dropped before the batch was written.
    endings.get(id).cloned().unwrap_or(Err(Error::Closed))
}

/// The write of the batch `endings`: once `previous` is written, closes the batch (later endings
/// make a new one) and stores its outcomes.
fn batch_write(
    inner: Weak<Inner>,
    endings: Rc<RefCell<Vec<Ending>>>,
    previous: Option<BatchWrite>,
) -> BatchWrite {
    let write = async move {
        if let Some(previous) = previous {
            previous.await;
        }
        let Some(inner) = inner.upgrade() else {
            return Rc::new(HashMap::new());
        };
        {
            let mut batches = inner.ending.borrow_mut();
            if batches
                .open
                .as_ref()
                .is_some_and(|(open, _)| Rc::ptr_eq(open, &endings))
            {
                batches.open = None;
            }
        }
        let endings = std::mem::take(&mut *endings.borrow_mut());
        Rc::new(write_endings(&inner, endings).await)
    };
    let write: LocalBoxFuture<'static, Endings> = Box::pin(write);
    write.shared()
}

/// Stores the outcomes of `endings` in one transaction, each only if its job is still `active`
/// under the run's lease (another instance may have cancelled, deleted or taken it back: then
/// nothing is written over it), then indexes and reports them.
async fn write_endings(
    inner: &Rc<Inner>,
    endings: Vec<Ending>,
) -> HashMap<String, Result<Option<JobState>>> {
    let now = inner.clock.now_ms();
    let mut results = HashMap::with_capacity(endings.len());
    let mut settling = Settling::default();
    // The record each guarded write writes, in the same order.
    let mut records = Vec::with_capacity(endings.len());
    {
        let mut state = inner.state.borrow_mut();
        for ending in endings {
            let expect = lease_expected(&ending.record);
            let record = decide_ending(&mut state, ending, now);
            match settling.settle(&state, &record, Some(expect)) {
                Ok(()) => records.push(record),
                Err(error) => {
                    results.insert(record.id, Err(error));
                }
            }
        }
    }
    let (guarded, changes): (Vec<Guarded>, Vec<Change>) = settling.guarded.into_iter().unzip();
    let outcomes = match inner
        .store
        .write_guarded(Table::Jobs, guarded, settling.ops)
        .await
    {
        Ok(outcomes) => outcomes,
        Err(error) => {
            for record in records {
                results.insert(record.id, Err(error.clone()));
            }
            return results;
        }
    };
    let mut written = Vec::with_capacity(records.len());
    {
        let mut state = inner.state.borrow_mut();
        let index = &mut state.index;
        for ((record, change), guard) in records.into_iter().zip(changes).zip(outcomes) {
            match guard {
                Guard::Applied(_) => {
                    change.apply(index);
                    results.insert(record.id.clone(), Ok(Some(record.state)));
                    written.push(record);
                }
                // Taken over, cancelled or deleted by another instance: indexed as it is now.
                Guard::Refused(row) => {
                    Change::stored(&record.id, &row).apply(index);
                    results.insert(record.id, Ok(None));
                }
                Guard::Missing => {
                    index.remove(&record.id);
                    results.insert(record.id, Ok(None));
                }
            }
        }
        // In the order of the write: the unguarded deletes came after the guarded writes.
        apply(index, settling.changes);
    }
    inner.observe(&written);
    results
}

/// What the row of a job running under `record`'s lease holds: the guard of the run's writes
/// (lease renewals, progress, its outcome).
fn lease_expected(record: &JobRecord) -> Fields {
    vec![
        ("state".into(), json!(JobState::Active.name())),
        ("runId".into(), json!(record.run_id)),
    ]
}

/// The record `ending`'s job is left as: finished, or waiting or delayed for a retry.
fn decide_ending(state: &mut State, ending: Ending, now: u64) -> JobRecord {
    let Ending {
        mut record,
        outcome,
        signalled,
    } = ending;
    record.attempts_made = record.attempts_made.saturating_add(1);
    record.lease_until = None;
    record.run_id = None;
    let failure = match outcome {
        Outcome::Returned(Ok(value)) => {
            record.state = JobState::Completed;
            record.result = Some(value);
            record.error = None;
            None
        }
        Outcome::Returned(Err(error)) => Some(match signalled {
            Some(reason) => signal_failure(&record, reason),
            None => JobFailure {
                message: error.message,
                retryable: error.retryable,
            },
        }),
        Outcome::Signalled(reason) => Some(signal_failure(&record, reason)),
    };
    if let Some(failure) = failure {
        let retry = failure.retryable && record.attempts_made < record.options.attempts;
        let cancelled = signalled == Some(CancelReason::Cancelled);
        record.error = Some(failure);
        if cancelled {
            record.state = JobState::Cancelled;
        } else if retry {
            let wait = record.options.backoff.map_or(0, |backoff| {
                backoff.delay_ms(record.attempts_made, &mut state.rng)
            });
            if wait > 0 {
                record.state = JobState::Delayed;
                record.next_run_at = Some(now.saturating_add(wait));
            } else {
                record.state = JobState::Waiting;
                record.seq = state.take_seq();
                record.ready_at = Some(now);
            }
        } else {
            record.state = JobState::Failed;
        }
    }
    if record.state.is_finished() {
        record.finished_at = Some(now);
    }
    record
}

fn signal_failure(record: &JobRecord, reason: CancelReason) -> JobFailure {
    match reason {
        CancelReason::Cancelled => JobFailure {
            message: "cancelled while running".into(),
            retryable: false,
        },
        CancelReason::Timeout => JobFailure {
            message: format!(
                "timed out after {} ms",
                record.options.timeout.unwrap_or_default()
            ),
            retryable: true,
        },
    }
}
