//! Durable background jobs: a BullMQ-style queue persisted in the `jobs` table.
//!
//! A job is a row `{name, data, state, options, attemptsMade, progress, result, error,
//! createdAt, readyAt, processedAt, finishedAt, nextRunAt, leaseUntil, ...}` in the `jobs` table (indexed on
//! `state` and `name`). [`JobQueue::enqueue`] validates and stores it; handlers registered by
//! queue name ([`JobQueue::register`], with a per-queue concurrency) run it.
//!
//! # States
//!
//! `waiting` → `active` → `completed` | `failed` | `cancelled`, with `delayed` before `waiting`
//! when the job has a `delay` or waits out a retry's backoff, and `paused` for a waiting or
//! delayed job held back by [`JobQueue::pause_job`] until [`JobQueue::resume_job`] (which makes it
//! waiting again, last of its priority, or delayed if its `nextRunAt` is ahead; a paused job
//! can be cancelled, and a newer job with its debounce id replaces it). Waiting jobs start by priority (1
//! critical, 5 high, 10 normal, 15 low, 20 background; lower first), FIFO within a priority in
//! the order they became waiting. A handler's retryable error (or a timeout) retries the job while
//! `attemptsMade < attempts`, after the backoff (`fixed`, or `exponential` = `delay *
//! 2^(attempt-1)`, capped, with optional jitter); a non-retryable error fails it at once. Failed
//! jobs are kept — the dead-letter set — until `removeOnFail` removes them or
//! [`JobQueue::retry`] runs them again.
//!
//! # Running: poll-driven, no timers
//!
//! The queue owns no timer and spawns nothing. The platform calls [`JobQueue::tick`], which does
//! what is due and returns the started runs ([`JobRun`], futures needing no runtime) for it to
//! poll, and arms a timer for [`JobQueue::next_wake_at`]. Timeouts are checked on tick: a run past
//! its `timeout` gets its cancellation signal and ends as a (retryable) failed attempt.
//!
//! # Delivery: at least once, under a lease
//!
//! Starting a job writes it `active` with `leaseUntil = now + lease` in one transaction *before*
//! its handler runs; the outcome is written in one transaction after. Both are compare-and-set
//! writes ([`crate::store::Store::write_guarded`]): a start only if the row is still the waiting
//! job the queue picked (same `seq`), an outcome only if the row is still `active` under the
//! run's lease (`runId`), each checked and written in the same transaction, so a job another
//! instance cancelled, paused, deleted or took back meanwhile is left as that instance wrote it.
//! The jobs picked in one tick start in one transaction, and the outcomes of the runs that end
//! while one batch of outcomes is being written are written together in the next (group commit).
//! While the handler runs,
//! ticks renew the lease. If the worker dies (a crash, a closed tab) the job stays `active`
//! until its lease expires; the next tick of any queue instance on the store then takes it back:
//! the lost run counts as an attempt and the job waits again (after `maxStalled` such losses it
//! fails). So a handler may run more than once for one job — after a crash between "handler
//! finished" and "state saved" too — and gets an idempotency key, the same for every attempt, to
//! make its side effects happen once. Within one instance a job never runs twice at once (the
//! instance tracks its in-flight jobs); across instances the lease guards it, and a run whose
//! lease was taken over does not write its outcome.
//!
//! Other writes (enqueue, cancel, pause, retry, lease renewals, promoting delayed jobs, taking back
//! expired leases) read, then write; ORION runs queues in one tab at a time (the Web Lock holder),
//! and the other tabs' writes reach it through refresh.
//!
//! # Several instances: refresh and reload
//!
//! Each instance keeps an index of the jobs in memory, in step with its own writes only. An
//! instance that runs the queues learns of another instance's writes through
//! [`JobQueue::refresh`] (the ids it changed: re-read and re-indexed; a job running here that the
//! other instance cancelled gets its signal) or rebuilds everything with [`JobQueue::reload`]
//! (when it becomes the one running them); [`Scheduler::reload`] does the same for schedulers.
//! Neither overwrites what the instance itself changed while it read the store.
//!
//! # Metrics
//!
//! [`JobQueue::set_observer`] is told of each job this instance writes finished, and of each
//! failed attempt that will be retried. A record carries what wait and run times need:
//! `createdAt`, `readyAt` (when it last became ready to run), `processedAt` (when its latest
//! attempt started) and `finishedAt`.
//!
//! # Schedulers
//!
//! A [`Scheduler`] enqueues jobs into a queue on an interval (`every` ms) or a `cron` pattern in
//! an IANA time zone, bounded by `startDate`, `endDate` and `limit`, persisted as `meta` rows
//! `job-scheduler/<id>` and driven, like the queue, by [`Scheduler::tick`] at
//! [`Scheduler::next_wake_at`]. Each occurrence is enqueued with `jobId = "<schedulerId>:<dueMs>"`,
//! so it becomes one job at most; occurrences missed while the worker was away are skipped, fired
//! once, or fired each, per the scheduler's `catchUp` ([`CatchUp`]).

mod backoff;
mod context;
pub(crate) mod index;
mod kept;
mod options;
mod queue;
mod record;
mod scheduler;

pub use backoff::{Backoff, BackoffKind};
pub use context::{CancelReason, CancelSignal, Cancelled, Handler, JobContext, JobError};
pub use options::{
    Debounce, JobOptions, Priority, RemovePolicy, MAX_ATTEMPTS, MAX_DELAY_MS, MAX_ID_BYTES,
    MAX_TIMEOUT_MS,
};
pub use queue::{
    CancelOutcome, JobCounts, JobFilter, JobObserver, JobPage, JobQueue, JobRun, QueueConfig,
    StateCounts, MAX_CONCURRENCY, MAX_DATA_BYTES, PAUSED_META_ID,
};
pub use record::{JobFailure, JobRecord, JobState};
pub use scheduler::{
    CatchUp, JobTemplate, ScheduleSpec, Scheduler, SchedulerRecord, MAX_CATCH_UP, MAX_DATE_MS,
    MAX_SCHEDULER_ID_BYTES, MISFIRE_GRACE_MS, SCHEDULER_META_PREFIX,
};

#[cfg(test)]
mod tests;
