//! What a handler gets and returns: [`JobContext`] (data, id, attempt, idempotency key, progress,
//! cancellation) and [`JobError`].

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use serde_json::Value;

use crate::embedding::LocalBoxFuture;
use crate::error::Result;

/// A job handler: called once per attempt; its future's output decides the attempt.
pub type Handler = Rc<dyn Fn(JobContext) -> LocalBoxFuture<'static, Result<Value, JobError>>>;

/// Why an attempt failed, as the handler says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct JobError {
    /// What went wrong (kept on the job as `error.message`).
    pub message: String,
    /// Whether another attempt could succeed. A non-retryable error fails the job at once, whatever
    /// attempts remain.
    pub retryable: bool,
}

impl JobError {
    /// An error worth retrying (per the job's `attempts` and `backoff`).
    pub fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }

    /// An error no retry can fix: the job fails now.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }
}

impl From<crate::Error> for JobError {
    /// ORION errors are retryable unless they are about the input.
    fn from(error: crate::Error) -> Self {
        let retryable = !matches!(
            error,
            crate::Error::InvalidInput { .. } | crate::Error::InvalidMessage { .. }
        );
        Self {
            message: error.to_string(),
            retryable,
        }
    }
}

/// Why a running job was told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// [`super::JobQueue::cancel`]: the job ends `cancelled`.
    Cancelled,
    /// Its `timeout` passed: the attempt fails (retryably).
    Timeout,
}

#[derive(Debug, Default)]
struct SignalState {
    reason: Option<CancelReason>,
    wakers: Vec<Waker>,
}

/// A one-shot cancellation signal, like an `AbortSignal`: fired once, observed by polling
/// [`CancelSignal::reason`] or awaiting [`CancelSignal::cancelled`]. Clones share the signal.
#[derive(Debug, Clone, Default)]
pub struct CancelSignal {
    state: Rc<RefCell<SignalState>>,
}

impl CancelSignal {
    /// A signal not fired yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fires the signal (the first reason wins) and wakes whoever awaits it.
    pub fn fire(&self, reason: CancelReason) {
        let wakers = {
            let mut state = self.state.borrow_mut();
            if state.reason.is_some() {
                return;
            }
            state.reason = Some(reason);
            std::mem::take(&mut state.wakers)
        };
        for waker in wakers {
            waker.wake();
        }
    }

    /// Why it fired, if it has.
    pub fn reason(&self) -> Option<CancelReason> {
        self.state.borrow().reason
    }

    /// Whether it fired.
    pub fn is_cancelled(&self) -> bool {
        self.reason().is_some()
    }

    /// Resolves when the signal fires (at once if it has).
    pub fn cancelled(&self) -> Cancelled {
        Cancelled {
            signal: self.clone(),
        }
    }

    /// Ready with the reason if fired; otherwise registers `cx`'s waker.
    pub(crate) fn poll_fired(&self, cx: &mut Context<'_>) -> Poll<CancelReason> {
        let mut state = self.state.borrow_mut();
        match state.reason {
            Some(reason) => Poll::Ready(reason),
            None => {
                if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    state.wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

/// The future of [`CancelSignal::cancelled`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct Cancelled {
    signal: CancelSignal,
}

impl Future for Cancelled {
    type Output = CancelReason;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<CancelReason> {
        self.signal.poll_fired(cx)
    }
}

/// Saves a job's progress; made by the queue for each run.
pub(crate) type ProgressSink = Rc<dyn Fn(Value) -> LocalBoxFuture<'static, Result<()>>>;

/// What a handler gets for one attempt of a job.
#[derive(Clone)]
pub struct JobContext {
    /// The job's id.
    pub id: String,
    /// The queue (handler) name.
    pub name: String,
    /// The job's data, as enqueued.
    pub data: Value,
    /// This attempt's number: 1 for the first run, 2 for the first retry, ... (a run lost with its
    /// worker counts as an attempt).
    pub attempt: u32,
    /// The same for every attempt of this job (its id): side effects keyed by it happen once even
    /// though the job may run more than once (delivery is at least once).
    pub idempotency_key: String,
    pub(crate) signal: CancelSignal,
    pub(crate) progress: ProgressSink,
}

impl std::fmt::Debug for JobContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobContext")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("attempt", &self.attempt)
            .field("idempotency_key", &self.idempotency_key)
            .field("cancelled", &self.signal.reason())
            .finish_non_exhaustive()
    }
}

impl JobContext {
    /// Records progress (a number from 0 to 100, or any other JSON) on the job; resolves once
    /// stored. A number outside 0 to 100 is `ERR_INVALID_INPUT` on `progress`.
    pub fn report_progress(&self, progress: Value) -> LocalBoxFuture<'static, Result<()>> {
        (self.progress)(progress)
    }

    /// Whether the job was cancelled or timed out; a handler should stop soon after (it is dropped
    /// at its next await point otherwise).
    pub fn is_cancelled(&self) -> bool {
        self.signal.is_cancelled()
    }

    /// Why it was told to stop, if it was.
    pub fn cancel_reason(&self) -> Option<CancelReason> {
        self.signal.reason()
    }

    /// Resolves when the job is cancelled or times out.
    pub fn cancelled(&self) -> Cancelled {
        self.signal.cancelled()
    }

    /// The cancellation signal itself, to hand to sub-tasks.
    pub fn signal(&self) -> &CancelSignal {
        &self.signal
    }
}
