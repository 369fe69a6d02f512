//! One status shape for jobs and workflows, as `orion.tasks.status(id)` answers it.

use serde::Serialize;
use serde_json::{json, Value};

use super::TaskSource;
use crate::jobs::JobRecord;
use crate::workflows::{StepStatus, WorkflowRecord, WorkflowStatus};

/// A task's state, whichever engine runs it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatus {
    /// The job's or workflow's id.
    pub id: String,
    /// `queue` or `workflow`.
    pub source: TaskSource,
    /// The queue, or the workflow type.
    pub name: String,
    /// A job's state (`waiting`, `delayed`, `paused`, `active`, `completed`, `failed`,
    /// `cancelled`) or a workflow's status (`running`, `paused`, `compensating`, `completed`,
    /// `failed`, `compensated`, `cancelled`, `timedOut`).
    pub state: String,
    /// A job's reported progress; for a workflow, the percentage of its steps completed.
    pub progress: Value,
    /// A job's attempts made; for a workflow, the attempts of all its steps.
    pub attempts: u32,
    /// Why the last attempt failed (a job's), or why the workflow did not complete.
    pub error: Option<String>,
    /// What the job's handler or the workflow's last step returned.
    pub result: Option<Value>,
    /// For a workflow: the step running or next to run.
    pub step: Option<String>,
    /// When it was created (ms).
    pub created_at: u64,
    /// When it finished (ms).
    pub finished_at: Option<u64>,
}

impl TaskStatus {
    /// The status of a job.
    pub fn of_job(record: &JobRecord) -> Self {
        Self {
            id: record.id.clone(),
            source: TaskSource::Queue,
            name: record.name.clone(),
            state: record.state.name().to_owned(),
            progress: record.progress.clone(),
            attempts: record.attempts_made,
            error: record.error.as_ref().map(|e| e.message.clone()),
            result: record.result.clone(),
            step: None,
            created_at: record.created_at,
            finished_at: record.finished_at,
        }
    }

    /// The status of a workflow.
    pub fn of_workflow(record: &WorkflowRecord) -> Self {
        let total = record.steps.len();
        let completed = record
            .steps
            .iter()
            .filter(|step| step.status == StepStatus::Completed)
            .count();
        let progress = if total == 0 {
            0.0
        } else {
            (completed as f64) * 100.0 / (total as f64)
        };
        let state = if record.paused && record.status == WorkflowStatus::Running {
            "paused"
        } else {
            record.status.name()
        };
        let step = match record.status {
            WorkflowStatus::Running | WorkflowStatus::Compensating => record
                .steps
                .get(record.cursor as usize)
                .map(|step| step.name.clone()),
            _ => None,
        };
        Self {
            id: record.id.clone(),
            source: TaskSource::Workflow,
            name: record.workflow_type.clone(),
            state: state.to_owned(),
            progress: json!(progress),
            attempts: record.steps.iter().map(|step| step.attempts).sum(),
            error: record.error.as_ref().map(|e| e.message.clone()),
            result: record.result.clone(),
            step,
            created_at: record.created_at,
            finished_at: record.finished_at,
        }
    }
}

/// A page of [`super::Tasks::list`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskPage {
    /// The tasks, in id order.
    pub items: Vec<TaskStatus>,
    /// Pass as `after` for the next page; `None` on the last.
    pub next: Option<String>,
}
