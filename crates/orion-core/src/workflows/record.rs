//! A workflow as stored: one row of the `workflows` table per workflow ([`WorkflowRecord`]), with
//! one [`StepRecord`] per step of its current run and the [`SignalRecord`]s it received.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::options::WorkflowOptions;
use crate::error::{Error, Result};
use crate::jobs::JobFailure;
use crate::store::Row;

/// Why a step (or its compensation) failed: the same shape as a job's failure, `{message,
/// retryable}`.
pub type StepFailure = JobFailure;

/// Where a workflow is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum WorkflowStatus {
    /// Running its steps forward (possibly waiting out a retry's backoff, see `nextRunAt`).
    Running,
    /// Running the compensations of its completed steps, newest first, after a failure, a
    /// cancellation or a timeout (`compensateReason` says which).
    Compensating,
    /// Finished: every step completed.
    Completed,
    /// Finished: a step failed for good and nothing was rolled back (no step had completed with a
    /// compensation), or a compensation failed too.
    Failed,
    /// Finished: a step failed for good and every compensation of the completed steps succeeded.
    Compensated,
    /// Finished: cancelled; the compensations of the completed steps ran.
    Cancelled,
    /// Finished: its `timeout` passed; the compensations of the completed steps ran.
    TimedOut,
}

impl WorkflowStatus {
    /// Every status.
    pub const ALL: [WorkflowStatus; 7] = [
        WorkflowStatus::Running,
        WorkflowStatus::Compensating,
        WorkflowStatus::Completed,
        WorkflowStatus::Failed,
        WorkflowStatus::Compensated,
        WorkflowStatus::Cancelled,
        WorkflowStatus::TimedOut,
    ];

    /// The status's name as stored (the `status` index) and on the wire.
    pub fn name(self) -> &'static str {
        match self {
            WorkflowStatus::Running => "running",
            WorkflowStatus::Compensating => "compensating",
            WorkflowStatus::Completed => "completed",
            WorkflowStatus::Failed => "failed",
            WorkflowStatus::Compensated => "compensated",
            WorkflowStatus::Cancelled => "cancelled",
            WorkflowStatus::TimedOut => "timedOut",
        }
    }

    /// Whether the workflow is done (nothing will run for it again).
    pub fn is_finished(self) -> bool {
        !matches!(self, WorkflowStatus::Running | WorkflowStatus::Compensating)
    }
}

/// Why a workflow is compensating, which decides its final status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CompensateReason {
    /// A step failed for good: ends `compensated` (or `failed`).
    Failed,
    /// [`super::WorkflowEngine::cancel_workflow`]: ends `cancelled`.
    Cancelled,
    /// The workflow's `timeout` passed: ends `timedOut`.
    TimedOut,
}

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StepStatus {
    /// Not started yet, or waiting out the backoff before its next attempt (`error` says why the
    /// last one failed).
    Pending,
    /// An attempt started (and, if the worker died, will be run again).
    Running,
    /// Its result is checkpointed; it never runs again in this run of the workflow.
    Completed,
    /// Failed for good: the workflow compensates.
    Failed,
    /// Stopped by a cancellation.
    Cancelled,
    /// Its compensation is running (or waiting out a backoff).
    Compensating,
    /// Its compensation completed.
    Compensated,
    /// Its compensation failed for good.
    CompensationFailed,
}

/// One step of the current run of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepRecord {
    /// The step's name, unique within its workflow type.
    pub name: String,
    /// Where it is.
    pub status: StepStatus,
    /// What it returned, once completed.
    pub result: Option<Value>,
    /// Why its last attempt failed, if it did.
    pub error: Option<StepFailure>,
    /// Attempts started (a run lost with its worker counts).
    pub attempts: u32,
    /// When its latest attempt started.
    pub started_at: Option<u64>,
    /// When it completed, failed or was cancelled.
    pub finished_at: Option<u64>,
    /// The last cursor a looping step checkpointed ([`super::StepContext::checkpoint`]).
    pub cursor: Option<Value>,
    /// Attempts of its compensation started.
    #[serde(default)]
    pub compensation_attempts: u32,
    /// Why its compensation's last attempt failed, if it did.
    #[serde(default)]
    pub compensation_error: Option<StepFailure>,
    /// When its compensation completed or failed for good.
    #[serde(default)]
    pub compensated_at: Option<u64>,
}

impl StepRecord {
    /// A step not started yet.
    pub fn pending(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            status: StepStatus::Pending,
            result: None,
            error: None,
            attempts: 0,
            started_at: None,
            finished_at: None,
            cursor: None,
            compensation_attempts: 0,
            compensation_error: None,
            compensated_at: None,
        }
    }
}

/// A signal a workflow received: appended durably, read by steps in arrival order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignalRecord {
    /// Unique per signal (the receiving engine instance and a counter), so that appends made by
    /// two instances merge without loss or duplication.
    pub id: String,
    /// The signal's name.
    pub name: String,
    /// What it carries.
    pub payload: Value,
    /// When it arrived (ms on the engine's clock).
    pub at: u64,
}

/// Why a workflow did not complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowFailure {
    /// What went wrong.
    pub message: String,
    /// The step at fault, if any.
    pub step: Option<String>,
}

/// One workflow, as stored in the `workflows` table (fields camelCase; `status` is indexed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowRecord {
    /// The workflow's id (the row's key; not repeated among the row's fields).
    pub id: String,
    /// The workflow type: the name its definition is registered under.
    #[serde(rename = "type")]
    pub workflow_type: String,
    /// Where it is.
    pub status: WorkflowStatus,
    /// What its steps get (replaced by `continue_as_new`).
    pub input: Value,
    /// Its options, with the defaults filled in.
    pub options: WorkflowOptions,
    /// The steps of the current run, in definition order.
    pub steps: Vec<StepRecord>,
    /// The index of the next step to run forward (`steps.len()` once every step completed).
    pub cursor: u32,
    /// How many times it continued as new (0 for the first run); part of idempotency keys.
    pub run: u32,
    /// The signals received in the current run, in arrival order.
    pub signals: Vec<SignalRecord>,
    /// When it was started (ms on the engine's clock).
    pub created_at: u64,
    /// When it was last written.
    pub updated_at: u64,
    /// When it finished.
    pub finished_at: Option<u64>,
    /// What its last step returned, once completed.
    pub result: Option<Value>,
    /// Why it did not complete, once it failed, was cancelled or timed out.
    pub error: Option<WorkflowFailure>,
    /// Why it compensates (set when compensation starts).
    pub compensate_reason: Option<CompensateReason>,
    /// A cancellation was asked for; the run holding it acts on it.
    #[serde(default)]
    pub cancel_requested: bool,
    /// Paused by [`super::WorkflowEngine::pause_workflow`]: a `running` workflow that starts no
    /// new step until [`super::WorkflowEngine::resume_workflow`] (the step running when it was
    /// paused finishes and is checkpointed first). Its status stays `running`: show it as paused
    /// when this is set ([`WorkflowRecord::is_paused`]). Only a running workflow is ever paused;
    /// rows written before the field existed read as not paused.
    #[serde(default)]
    pub paused: bool,
    /// Until when an engine instance holds it; past this another instance takes it over.
    pub lease_until: Option<u64>,
    /// The run holding the lease (instance and run number), so that a run that lost its lease
    /// does not overwrite the workflow.
    pub run_id: Option<String>,
    /// When it may run again (after a retry's backoff); `None` is at once.
    pub next_run_at: Option<u64>,
    /// When its `timeout` passes.
    pub deadline_at: Option<u64>,
}

impl WorkflowRecord {
    /// The row this record is stored as.
    pub fn to_row(&self) -> Result<Row> {
        match serde_json::to_value(self) {
            Ok(Value::Object(mut fields)) => {
                fields.remove("id");
                Ok(Row {
                    id: self.id.clone(),
                    fields,
                    vectors: Default::default(),
                    bytes: Default::default(),
                })
            }
            Ok(_) => Err(Error::Internal(
                "a workflow did not serialise to an object".into(),
            )),
            Err(e) => Err(Error::Internal(format!("workflow `{}`: {e}", self.id))),
        }
    }

    /// The record a row holds; an unreadable row is an `ERR_STORE` naming it and the field.
    pub fn from_row(row: &Row) -> Result<Self> {
        crate::input::record_from_row(row, &row.id, &format!("workflow `{}`", row.id))
    }

    /// The results of the completed steps of the current run, by step name.
    pub fn results(&self) -> Map<String, Value> {
        self.steps
            .iter()
            .filter(|step| step_has_completed(step.status))
            .map(|step| {
                (
                    step.name.clone(),
                    step.result.clone().unwrap_or(Value::Null),
                )
            })
            .collect()
    }

    /// Whether it is a running workflow held by
    /// [`super::WorkflowEngine::pause_workflow`] (what to show instead of `running`).
    pub fn is_paused(&self) -> bool {
        self.paused && self.status == WorkflowStatus::Running
    }

    /// The step named `name` of the current run.
    pub fn step(&self, name: &str) -> Option<&StepRecord> {
        self.steps.iter().find(|step| step.name == name)
    }
}

/// Whether a step in this status had completed forward (compensation may have followed).
pub(crate) fn step_has_completed(status: StepStatus) -> bool {
    matches!(
        status,
        StepStatus::Completed
            | StepStatus::Compensating
            | StepStatus::Compensated
            | StepStatus::CompensationFailed
    )
}
