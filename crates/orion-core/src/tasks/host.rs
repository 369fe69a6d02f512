//! Task code that runs in the page: each attempt of a page-defined job (or workflow step) is a
//! `task_run` event carrying a run id; the page answers with `tasks_result` (and may send
//! `tasks_progress` meanwhile). When the worker stops waiting — the job was cancelled, timed out,
//! or its lease was lost — the page gets `task_abort` for the run, so its `AbortSignal` fires.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};

use futures_channel::oneshot;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::embedding::LocalBoxFuture;
use crate::error::{Error, Result};
use crate::jobs::JobError;
use crate::protocol::Event;

/// Records progress (a job's) or a cursor (a step's checkpoint) for a run.
pub(crate) type ProgressFn = Rc<dyn Fn(Value) -> LocalBoxFuture<'static, Result<()>>>;

/// Which code of a task a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum RunKind {
    /// An attempt of a queue job.
    Job,
    /// An attempt of a workflow step.
    Step,
    /// An attempt of a step's compensation.
    Compensation,
}

/// What the page's handler gets for one run (the `task_run` event).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRun {
    /// Answer with this in `tasks_result`.
    pub run_id: String,
    /// The task's name (queue or workflow type).
    pub name: String,
    /// Job, step or compensation (`kind` names the event itself).
    pub role: RunKind,
    /// The job's or workflow's id.
    pub task_id: String,
    /// The step, for workflow runs.
    pub step: Option<String>,
    /// The job's data or the workflow's input.
    pub payload: Value,
    /// For a step: the results of the steps completed before it.
    pub results: Option<Map<String, Value>>,
    /// For a step: its last checkpointed cursor.
    pub cursor: Option<Value>,
    /// For a compensation: what the step being undone returned.
    pub step_result: Option<Value>,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The same for every attempt: key side effects on it so they happen once.
    pub idempotency_key: String,
}

/// How a page handler failed (in `tasks_result`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostFailure {
    /// The error's message.
    pub message: String,
    /// Whether another attempt could succeed (default true).
    #[serde(default = "retryable_by_default")]
    pub retryable: bool,
}

fn retryable_by_default() -> bool {
    true
}

struct Pending {
    answer: oneshot::Sender<std::result::Result<Value, JobError>>,
    progress: Option<ProgressFn>,
}

/// The runs waiting for the page.
pub(crate) struct HostRuns {
    emit: Rc<dyn Fn(Event)>,
    next: Cell<u64>,
    pending: RefCell<HashMap<String, Pending>>,
}

impl HostRuns {
    pub(crate) fn new(emit: Rc<dyn Fn(Event)>) -> Rc<Self> {
        Rc::new(Self {
            emit,
            next: Cell::new(0),
            pending: RefCell::new(HashMap::new()),
        })
    }

    /// Sends `run` (its `run_id` is filled in here) to the page and waits for its answer. The
    /// page's error comes back as the job error it described; dropping the future aborts the run
    /// in the page.
    pub(crate) fn call(
        self: &Rc<Self>,
        mut run: TaskRun,
        progress: Option<ProgressFn>,
    ) -> LocalBoxFuture<'static, std::result::Result<Value, JobError>> {
        let n = self.next.get().wrapping_add(1);
        self.next.set(n);
        run.run_id = format!("r{n}");
        let (answer, answered) = oneshot::channel();
        self.pending
            .borrow_mut()
            .insert(run.run_id.clone(), Pending { answer, progress });
        let abort = AbortOnDrop {
            runs: Rc::downgrade(self),
            run_id: run.run_id.clone(),
        };
        (self.emit)(Event::TaskRun(run));
        Box::pin(async move {
            let answer = answered.await;
            drop(abort);
            answer.unwrap_or_else(|_| {
                Err(JobError::retryable(
                    "the page's handler went away before it answered",
                ))
            })
        })
    }

    /// The page's answer to run `run_id`. An unknown run (it ended: cancelled, timed out, or
    /// already answered) is `ERR_INVALID_INPUT` on `runId`.
    pub(crate) fn answer(
        &self,
        run_id: &str,
        outcome: std::result::Result<Value, HostFailure>,
    ) -> Result<()> {
        let Some(pending) = self.pending.borrow_mut().remove(run_id) else {
            return Err(unknown_run(run_id));
        };
        let outcome = outcome.map_err(|failure| JobError {
            message: failure.message,
            retryable: failure.retryable,
        });
        // The receiver is gone only if the run was dropped at this very moment; nothing to do.
        let _ = pending.answer.send(outcome);
        Ok(())
    }

    /// Progress (or a step's cursor) reported by the page for run `run_id`.
    pub(crate) fn progress(
        &self,
        run_id: &str,
        value: Value,
    ) -> LocalBoxFuture<'static, Result<()>> {
        let progress = match self.pending.borrow().get(run_id) {
            Some(pending) => pending.progress.clone(),
            None => return Box::pin(std::future::ready(Err(unknown_run(run_id)))),
        };
        match progress {
            Some(progress) => progress(value),
            None => Box::pin(std::future::ready(Err(Error::invalid_input(
                "runId",
                "a compensation reports no progress",
            )))),
        }
    }

    /// How many runs wait for the page.
    pub(crate) fn waiting(&self) -> usize {
        self.pending.borrow().len()
    }
}

fn unknown_run(run_id: &str) -> Error {
    Error::invalid_input(
        "runId",
        format!("no run `{run_id}` is waiting (it was answered, cancelled or timed out)"),
    )
}

/// Tells the page to stop a run the worker no longer waits for.
struct AbortOnDrop {
    runs: Weak<HostRuns>,
    run_id: String,
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        let Some(runs) = self.runs.upgrade() else {
            return;
        };
        let was_pending = runs.pending.borrow_mut().remove(&self.run_id).is_some();
        if was_pending {
            (runs.emit)(Event::TaskAbort {
                run_id: self.run_id.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;
    use serde_json::json;

    use super::*;

    fn run() -> TaskRun {
        TaskRun {
            run_id: String::new(),
            name: "send".into(),
            role: RunKind::Job,
            task_id: "j1".into(),
            step: None,
            payload: json!({"to": "a"}),
            results: None,
            cursor: None,
            step_result: None,
            attempt: 1,
            idempotency_key: "j1".into(),
        }
    }

    type Recorded = Rc<RefCell<Vec<Event>>>;

    fn recorder() -> (Recorded, Rc<dyn Fn(Event)>) {
        let events = Rc::new(RefCell::new(Vec::new()));
        let sink = Rc::clone(&events);
        (events, Rc::new(move |event| sink.borrow_mut().push(event)))
    }

    #[test]
    fn the_pages_answer_resolves_the_run_and_a_second_answer_is_refused() {
        let (events, emit) = recorder();
        let runs = HostRuns::new(emit);
        let mut call = runs.call(run(), None);
        assert!(call.as_mut().now_or_never().is_none());
        let run_id = match events.borrow().first() {
            Some(Event::TaskRun(run)) => run.run_id.clone(),
            other => panic!("expected a task_run event, got {other:?}"),
        };
        runs.answer(&run_id, Ok(json!(7))).unwrap();
        assert_eq!(call.now_or_never().unwrap().unwrap(), json!(7));
        assert!(runs.answer(&run_id, Ok(json!(8))).is_err());
        assert_eq!(events.borrow().len(), 1, "no abort after an answer");
    }

    #[test]
    fn a_failure_keeps_its_retryability() {
        let (events, emit) = recorder();
        let runs = HostRuns::new(emit);
        let call = runs.call(run(), None);
        let run_id = match events.borrow().first() {
            Some(Event::TaskRun(run)) => run.run_id.clone(),
            _ => unreachable!(),
        };
        let failure = HostFailure {
            message: "no".into(),
            retryable: false,
        };
        runs.answer(&run_id, Err(failure)).unwrap();
        let error = call.now_or_never().unwrap().unwrap_err();
        assert!(!error.retryable);
        assert_eq!(error.message, "no");
    }

    #[test]
    fn dropping_an_unanswered_run_aborts_it_in_the_page() {
        let (events, emit) = recorder();
        let runs = HostRuns::new(emit);
        drop(runs.call(run(), None));
        assert_eq!(runs.waiting(), 0);
        let events = events.borrow();
        assert!(
            matches!(events.as_slice(), [Event::TaskRun(started), Event::TaskAbort { run_id }] if &started.run_id == run_id)
        );
    }
}
