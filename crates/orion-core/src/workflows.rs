//! Durable workflows: a Temporal-style engine persisted in the `workflows` table.
//!
//! A workflow type is a [`WorkflowDefinition`]: named [`Step`]s run in order, each an async
//! function of a [`StepContext`] (the workflow's input, the results of the steps before it, an
//! idempotency key, a cancellation signal, cursor checkpoints and signals) returning a JSON value
//! or a [`StepError`] (retryable or not), optionally with a compensation. Definitions are
//! registered by type ([`WorkflowEngine::register`]); [`WorkflowEngine::start_workflow`] stores a
//! workflow as a row `{type, status, input, options, steps: [{name, status, result, error,
//! attempts, startedAt, finishedAt, cursor, ...}], cursor, run, signals, createdAt, updatedAt,
//! finishedAt, result, error, leaseUntil, ...}` (indexed on `status`).
//!
//! # States
//!
//! `running` → `completed` when every step completed (the result is the last step's). A step's
//! retryable error (or an attempt past its timeout) runs it again while its [`RetryPolicy`]
//! allows, after the backoff (the workflow stays `running`, with `nextRunAt`); a non-retryable
//! error, or retries exhausted, turns the workflow `compensating`, as do a cancellation and the
//! workflow's `timeout`. Compensating runs the compensations of the completed steps, newest first
//! (each with the same retry policy; one that fails for good is recorded and the next one still
//! runs), then ends the workflow: `compensated` after a failure whose compensations all succeeded,
//! `failed` after a failure with nothing to compensate or a compensation that failed, `cancelled`
//! or `timedOut`. `error` says why; each step's `status`, `error` and `compensationError` say
//! where.
//!
//! # Pausing
//!
//! [`WorkflowEngine::pause_workflow`] stores `paused: true` on a running workflow (its status
//! stays `running`; [`WorkflowRecord::is_paused`] says what to show): the step running then
//! finishes and is checkpointed, then the run releases the workflow and no new step starts until
//! [`WorkflowEngine::resume_workflow`] — in this instance or any other, after any reload. Its
//! timeout still passes and a cancellation still compensates it; a compensating workflow cannot be
//! paused.
//!
//! # Durability: checkpoints
//!
//! Every transition is one atomic write of the whole row, made before the next thing runs: an
//! attempt's start (step `running`, attempts + 1), a step's result (step `completed`, cursor + 1),
//! a failure, a compensation's start and end, a cursor checkpoint ([`StepContext::checkpoint`]), a
//! signal. After a crash or a reload, a new engine over the same store resumes each workflow from
//! its last write: a completed step never runs again (its result is read back for the steps after
//! it), a finished compensation never runs again, and a looping step reads back its cursor. A
//! workflow that loops forever keeps its row bounded with [`StepContext::continue_as_new`]: once
//! the step completes, the steps' history and signals are replaced by a fresh run with the new
//! input, same id, `run` + 1.
//!
//! # Delivery: at least once, under a lease
//!
//! A run leases its workflow (`leaseUntil`, `runId`) in one write before any step runs, and ticks
//! renew the lease while it runs. If the instance dies mid-step, the workflow stays leased until
//! the lease expires; the next tick of any instance then takes it over and runs the interrupted
//! step again (its attempt counted) — so a step may run more than once, with the same idempotency
//! key `workflowId/stepName/run` every time (`.../compensate` for its compensation) to make its
//! side effects happen once. Before each write a run reads the row back: if another instance took
//! the workflow over (or it was deleted) the run stops without writing. Signals and cancellations
//! from an instance not running the workflow are patched into the row and adopted by the holder at
//! its next write or lease renewal. The store has no compare-and-set, so two instances racing on
//! one row can still both act; ORION runs engines in one tab at a time (the Web Lock holder).
//!
//! An instance that runs the workflows learns of the starts, cancellations, signals, pauses and
//! resumes other instances stored through [`WorkflowEngine::refresh`] (the ids they changed; a
//! workflow running here adopts its row at once, so a cancellation signals its running step) or
//! rebuilds its view with [`WorkflowEngine::reload`] (when it becomes the one running them).
//! [`WorkflowEngine::set_observer`] is told of each workflow this instance writes finished.
//!
//! # Running: poll-driven, no timers
//!
//! Like [`crate::jobs::JobQueue`], the engine owns no timer and spawns nothing. The platform calls
//! [`WorkflowEngine::tick`], which does what is due and returns [`WorkflowRun`]s (futures needing
//! no runtime) to poll, and arms a timer for [`WorkflowEngine::next_wake_at`] (backoffs, step and
//! workflow timeouts, lease renewals and takeovers). A timeout fires the running step's
//! [`CancelSignal`](crate::jobs::CancelSignal) and the step is dropped at its next await point.

mod context;
mod definition;
mod engine;
mod options;
mod record;

pub use context::{SignalWait, StepContext};
pub use definition::{Step, StepError, StepFn, WorkflowDefinition};
pub use engine::{
    CancelOutcome, EngineConfig, WorkflowEngine, WorkflowObserver, WorkflowPage, WorkflowRun,
};
pub use options::{
    RetryPolicy, WorkflowFilter, WorkflowOptions, MAX_INPUT_BYTES, MAX_SIGNALS, MAX_STEPS,
    MAX_WORKFLOW_TIMEOUT_MS,
};
pub use record::{
    CompensateReason, SignalRecord, StepFailure, StepRecord, StepStatus, WorkflowFailure,
    WorkflowRecord, WorkflowStatus,
};

#[cfg(test)]
mod tests;
