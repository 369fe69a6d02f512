//! What a step gets for one attempt: [`StepContext`] (input, earlier results, idempotency key,
//! cancellation, cursor checkpoints, signals, continue-as-new); and [`Flight`], the state a running
//! workflow shares between the engine, its run and its steps' contexts.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};

use serde_json::{Map, Value};

use super::engine::{persist, Inner};
use super::options::check_json_size;
use super::record::{SignalRecord, StepStatus, WorkflowRecord, WorkflowStatus};
use crate::embedding::LocalBoxFuture;
use crate::error::{Error, Result};
use crate::jobs::{CancelReason, CancelSignal, Cancelled};

/// A workflow this engine instance is running: its record as this run sees it (ahead of the
/// store only between a change and the write that follows at once), and the run's signals.
pub(crate) struct Flight {
    /// The record; every write of the workflow by this instance is a copy of it.
    pub record: RefCell<WorkflowRecord>,
    /// The run holding the lease.
    pub run_id: String,
    /// The signal of the attempt running now (a new one per attempt).
    pub signal: RefCell<CancelSignal>,
    /// When the running attempt times out.
    pub step_deadline: Cell<Option<u64>>,
    /// Whether the running attempt is a compensation (cancellation and the workflow's timeout do
    /// not interrupt compensations: they are what both lead to).
    pub compensating_attempt: Cell<bool>,
    /// The workflow's timeout fired while a step ran.
    pub timed_out: Cell<bool>,
    /// The lease went to another instance, or the row was deleted: nothing more is written.
    pub lost: Cell<bool>,
    /// `continue_as_new` was asked for by the running step.
    pub continue_as_new: RefCell<Option<Value>>,
    /// Steps waiting for a signal.
    pub waiters: RefCell<Vec<Waker>>,
    /// A pause or resume asked for on this instance and not yet written: until a write carries
    /// it, [`Flight::merge`] keeps it rather than the stored `paused` flag.
    pub pause_intent: Cell<Option<bool>>,
}

impl Flight {
    pub fn new(record: WorkflowRecord, run_id: String) -> Self {
        Self {
            record: RefCell::new(record),
            run_id,
            signal: RefCell::new(CancelSignal::new()),
            step_deadline: Cell::new(None),
            compensating_attempt: Cell::new(false),
            timed_out: Cell::new(false),
            lost: Cell::new(false),
            continue_as_new: RefCell::new(None),
            waiters: RefCell::new(Vec::new()),
            pause_intent: Cell::new(None),
        }
    }

    pub fn id(&self) -> String {
        self.record.borrow().id.clone()
    }

    /// Records a cancellation and stops the running step (not a compensation).
    pub fn request_cancel(&self) {
        let running = {
            let mut record = self.record.borrow_mut();
            record.cancel_requested = true;
            record.status == WorkflowStatus::Running
        };
        if running && !self.compensating_attempt.get() {
            self.signal.borrow().fire(CancelReason::Cancelled);
        }
    }

    /// Stops everything: this run no longer holds the workflow.
    pub fn lose(&self) {
        self.lost.set(true);
        self.signal.borrow().fire(CancelReason::Cancelled);
    }

    /// Adopts what another instance wrote into the stored row meanwhile: signals it appended, a
    /// cancellation it asked for, and a pause or resume (unless this instance asked for one that
    /// is not written yet; a workflow no longer running is never paused).
    pub fn merge(&self, stored: &WorkflowRecord) {
        let added = {
            let mut record = self.record.borrow_mut();
            if self.pause_intent.get().is_none()
                && record.status == WorkflowStatus::Running
                && stored.status == WorkflowStatus::Running
            {
                record.paused = stored.paused;
            }
            let mut added = false;
            // Signals of the current run only: a run that continued as new dropped the old ones.
            if stored.run == record.run {
                for signal in &stored.signals {
                    if !record.signals.iter().any(|s| s.id == signal.id) {
                        record.signals.push(signal.clone());
                        added = true;
                    }
                }
            }
            added
        };
        if added {
            self.wake_waiters();
        }
        if stored.cancel_requested && !self.record.borrow().cancel_requested {
            self.request_cancel();
        }
    }

    pub fn wake_waiters(&self) {
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for waker in waiters {
            waker.wake();
        }
    }
}

/// What a step (or compensation) gets for one attempt.
#[derive(Clone)]
pub struct StepContext {
    /// The workflow's id.
    pub workflow_id: String,
    /// The workflow's type.
    pub workflow_type: String,
    /// This step's name.
    pub step: String,
    /// The workflow's input (of the current run, after `continue_as_new`).
    pub input: Value,
    /// The results of the steps completed so far in this run, by step name.
    pub results: Map<String, Value>,
    /// For a compensation, what the step being undone returned; `None` when running the step.
    pub step_result: Option<Value>,
    /// This attempt's number: 1 for the first, 2 for the first retry, ... (an attempt lost with
    /// its worker counts).
    pub attempt: u32,
    /// How many times the workflow continued as new before this run.
    pub run: u32,
    /// `workflowId/stepName/run` (`.../compensate` for a compensation): the same for every
    /// attempt, so side effects keyed by it happen once although a step may run more than once.
    pub idempotency_key: String,
    pub(crate) index: usize,
    pub(crate) signal: CancelSignal,
    pub(crate) flight: Rc<Flight>,
    pub(crate) engine: Weak<Inner>,
}

impl std::fmt::Debug for StepContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepContext")
            .field("workflow_id", &self.workflow_id)
            .field("step", &self.step)
            .field("attempt", &self.attempt)
            .field("run", &self.run)
            .field("idempotency_key", &self.idempotency_key)
            .field("cancelled", &self.signal.reason())
            .finish_non_exhaustive()
    }
}

impl StepContext {
    /// Whether this attempt was told to stop (cancelled, timed out, or the workflow was taken
    /// over); the step is dropped at its next await point anyway.
    pub fn is_cancelled(&self) -> bool {
        self.signal.is_cancelled()
    }

    /// Why it was told to stop, if it was.
    pub fn cancel_reason(&self) -> Option<CancelReason> {
        self.signal.reason()
    }

    /// Resolves when this attempt is told to stop.
    pub fn cancelled(&self) -> Cancelled {
        self.signal.cancelled()
    }

    /// The cancellation signal itself, to hand to sub-tasks.
    pub fn signal(&self) -> &CancelSignal {
        &self.signal
    }

    /// Whether this is a compensation rather than the step itself.
    pub fn is_compensation(&self) -> bool {
        self.step_result.is_some()
    }

    /// The cursor this step last checkpointed (in this or an earlier attempt), to resume a loop
    /// from; `None` at the first attempt.
    pub fn cursor(&self) -> Option<Value> {
        self.flight
            .record
            .borrow()
            .steps
            .get(self.index)
            .and_then(|step| step.cursor.clone())
    }

    /// Stores `cursor` as this step's progress, in one write; resolves once it is durable. A step
    /// re-run after a crash reads it back with [`StepContext::cursor`] and continues from there.
    /// More than 1 MiB of JSON is `ERR_INVALID_INPUT` on `cursor`; calling it after the attempt
    /// ended too.
    pub fn checkpoint(&self, cursor: Value) -> LocalBoxFuture<'static, Result<()>> {
        let stored = self.set_cursor(cursor);
        let flight = Rc::clone(&self.flight);
        let engine = self.engine.clone();
        Box::pin(async move {
            stored?;
            let Some(inner) = engine.upgrade() else {
                return Err(Error::Closed);
            };
            if persist(&inner, &flight).await? {
                Ok(())
            } else {
                Err(lost(&flight))
            }
        })
    }

    fn set_cursor(&self, cursor: Value) -> Result<()> {
        check_json_size("cursor", &cursor)?;
        let mut record = self.flight.record.borrow_mut();
        match record.steps.get_mut(self.index) {
            Some(step)
                if step.name == self.step
                    && step.status == StepStatus::Running
                    && step.attempts == self.attempt =>
            {
                step.cursor = Some(cursor);
                Ok(())
            }
            _ => Err(Error::invalid_input(
                "cursor",
                format!(
                    "attempt {} of step `{}` is not running",
                    self.attempt, self.step
                ),
            )),
        }
    }

    /// The payloads of the signals named `name` received so far in this run, oldest first.
    pub fn signals(&self, name: &str) -> Vec<Value> {
        self.flight
            .record
            .borrow()
            .signals
            .iter()
            .filter(|signal| signal.name == name)
            .map(|signal| signal.payload.clone())
            .collect()
    }

    /// Resolves with the payload of the first signal named `name` of this run, at once if it has
    /// arrived. A step re-run gets the same one (signals are stored, in arrival order).
    pub fn wait_for_signal(&self, name: &str) -> SignalWait {
        self.wait_for_nth_signal(name, 0)
    }

    /// Resolves with the payload of signal number `n` (from 0) named `name` of this run: a loop
    /// consuming signals one by one passes the count it has handled (its cursor).
    pub fn wait_for_nth_signal(&self, name: &str, n: usize) -> SignalWait {
        SignalWait {
            flight: Rc::clone(&self.flight),
            name: name.to_owned(),
            n,
        }
    }

    /// Once this step completes, starts the workflow over with `input`: same id, the run counter
    /// incremented, the steps' history and the signals dropped (keeping the record bounded for a
    /// workflow that loops forever). Ignored if the attempt fails; not for compensations
    /// (`ERR_INVALID_INPUT` on `input`, as is an input over 1 MiB).
    pub fn continue_as_new(&self, input: Value) -> Result<()> {
        if self.is_compensation() {
            return Err(Error::invalid_input(
                "input",
                "a compensation cannot continue the workflow as new",
            ));
        }
        check_json_size("input", &input)?;
        *self.flight.continue_as_new.borrow_mut() = Some(input);
        Ok(())
    }
}

/// The error of a write refused because the run no longer holds the workflow.
pub(crate) fn lost(flight: &Flight) -> Error {
    Error::Store(format!(
        "workflow `{}` is no longer held by this run (taken over by another instance, or deleted)",
        flight.id()
    ))
}

/// The future of [`StepContext::wait_for_signal`].
#[must_use = "futures do nothing unless awaited"]
pub struct SignalWait {
    flight: Rc<Flight>,
    name: String,
    n: usize,
}

impl std::fmt::Debug for SignalWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalWait")
            .field("name", &self.name)
            .field("n", &self.n)
            .finish()
    }
}

impl Future for SignalWait {
    type Output = Value;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Value> {
        let found = self
            .flight
            .record
            .borrow()
            .signals
            .iter()
            .filter(|signal| signal.name == self.name)
            .nth(self.n)
            .map(|signal: &SignalRecord| signal.payload.clone());
        match found {
            Some(payload) => Poll::Ready(payload),
            None => {
                let mut waiters = self.flight.waiters.borrow_mut();
                if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                    waiters.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}
