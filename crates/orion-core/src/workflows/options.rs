//! What `start_workflow` and `list_workflows` accept: [`WorkflowOptions`] and [`WorkflowFilter`],
//! in the JSON shape the JS client sends (camelCase, unknown fields refused), validated before
//! anything is stored; and the per-step [`RetryPolicy`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::record::WorkflowStatus;
use crate::error::{Error, Result};
pub(crate) use crate::input::check_id;
use crate::input::{self, from_json_at};
use crate::jobs::{Backoff, MAX_ATTEMPTS, MAX_DATA_BYTES, MAX_TIMEOUT_MS};

/// The largest workflow input, step result, cursor or signal payload, serialised as JSON: 1 MiB,
/// the same bound as a job's data.
pub const MAX_INPUT_BYTES: usize = MAX_DATA_BYTES;
/// The most signals one run of a workflow keeps; `continue_as_new` starts the count again.
pub const MAX_SIGNALS: usize = 1000;
/// The most steps a workflow definition may have.
pub const MAX_STEPS: usize = 1000;
/// The longest workflow `timeout`: thirty days, in ms (a workflow outlives many page loads).
pub const MAX_WORKFLOW_TIMEOUT_MS: u64 = 30 * 24 * 60 * 60 * 1000;

/// How often a step (or a compensation) may run and how long to wait between runs. On the wire
/// `{attempts?, backoff?}`; `backoff` takes the job queue's shapes (a number of ms, or `{type:
/// 'fixed' | 'exponential', delay, jitter?, cap?}`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// How many times a step may run in all (1 to 1000); default 1 (no retry).
    pub attempts: u32,
    /// The wait before each retry; none retries at once.
    pub backoff: Option<Backoff>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 1,
            backoff: None,
        }
    }
}

impl RetryPolicy {
    /// `attempts` runs in all, retrying after `backoff`.
    pub fn new(attempts: u32, backoff: Option<Backoff>) -> Self {
        Self { attempts, backoff }
    }

    /// Checks the ranges; `field` is where the policy was given (`options.retry`).
    pub fn validate(&self, field: &str) -> Result<()> {
        if !(1..=MAX_ATTEMPTS).contains(&self.attempts) {
            return Err(Error::invalid_input(
                format!("{field}.attempts"),
                format!("must be from 1 to {MAX_ATTEMPTS}, got {}", self.attempts),
            ));
        }
        if let Some(backoff) = &self.backoff {
            backoff.validate(&format!("{field}.backoff"))?;
        }
        Ok(())
    }
}

/// How a workflow runs, as `start_workflow` accepts it. Every field may be omitted on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WorkflowOptions {
    /// The workflow's id: if a workflow with this id exists (in any status), it is returned and
    /// nothing is started. Default: a generated id.
    pub workflow_id: Option<String>,
    /// The retry policy of every step (and compensation) whose definition sets none.
    pub retry: Option<RetryPolicy>,
    /// Ms from the start after which the workflow times out: the running step is signalled and
    /// the completed steps are compensated.
    pub timeout: Option<u64>,
    /// Ms one attempt of a step (or compensation) may run before it fails, retryably, and is
    /// signalled; for steps whose definition sets none.
    pub step_timeout: Option<u64>,
}

impl WorkflowOptions {
    /// Options from the JSON the client sent (`null` means all defaults). A problem is
    /// `ERR_INVALID_INPUT` naming the field, e.g. `options.retry.attempts`.
    pub fn from_json(value: Value) -> Result<Self> {
        if value.is_null() {
            return Ok(Self::default());
        }
        let options: Self = from_json_at("options", value)?;
        options.validate()?;
        Ok(options)
    }

    /// Checks every range; a problem is `ERR_INVALID_INPUT` naming the field.
    pub fn validate(&self) -> Result<()> {
        if let Some(id) = &self.workflow_id {
            check_id("options.workflowId", id)?;
        }
        if let Some(retry) = &self.retry {
            retry.validate("options.retry")?;
        }
        check_timeout("options.timeout", self.timeout, MAX_WORKFLOW_TIMEOUT_MS)?;
        check_timeout("options.stepTimeout", self.step_timeout, MAX_TIMEOUT_MS)?;
        Ok(())
    }
}

/// Which workflows [`super::WorkflowEngine::list_workflows`] returns. On the wire `{status?,
/// limit?, after?}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct WorkflowFilter {
    /// Only workflows in this status (read through the `status` index).
    pub status: Option<WorkflowStatus>,
    /// At most this many (1 to 1000; default 100).
    pub limit: usize,
    /// Only workflows whose id sorts after this one (the `next` of the previous page).
    pub after: Option<String>,
}

impl Default for WorkflowFilter {
    fn default() -> Self {
        Self {
            status: None,
            limit: 100,
            after: None,
        }
    }
}

/// A timeout of at least 1 ms and at most `max`, or `ERR_INVALID_INPUT` on `field`.
pub(crate) fn check_timeout(field: &str, value: Option<u64>, max: u64) -> Result<()> {
    match value {
        Some(0) => Err(Error::invalid_input(field, "must be at least 1")),
        Some(ms) if ms > max => Err(Error::invalid_input(
            field,
            format!("must be at most {max} ms, got {ms}"),
        )),
        _ => Ok(()),
    }
}

/// `value` serialised is at most [`MAX_INPUT_BYTES`], or `ERR_INVALID_INPUT` on `field`.
pub(crate) fn check_json_size(field: &str, value: &Value) -> Result<()> {
    input::check_json_size(field, value, MAX_INPUT_BYTES).map(drop)
}
