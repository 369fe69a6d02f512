//! A job as stored: one row of the `jobs` table per job ([`JobRecord`]), in one of the
//! [`JobState`]s.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::options::JobOptions;
use crate::error::{Error, Result};
use crate::store::{Fields, Row};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum JobState {
    /// Ready to run, in priority then FIFO order.
    Waiting,
    /// Waiting for `nextRunAt` (a `delay`, or the backoff before a retry).
    Delayed,
    /// Held back by [`super::JobQueue::pause_job`]: never started until
    /// [`super::JobQueue::resume_job`] makes it `waiting` (or `delayed`, if its `nextRunAt` is
    /// still ahead) again. It can still be cancelled, and a newer job with its debounce id still
    /// replaces it.
    Paused,
    /// Running, under a lease until `leaseUntil`.
    Active,
    /// Finished: its handler returned a result.
    Completed,
    /// Finished: its last attempt failed (or its error was not retryable). Kept as the dead-letter
    /// set until `removeOnFail` removes it or [`super::JobQueue::retry`] runs it again.
    Failed,
    /// Finished: cancelled before or while it ran.
    Cancelled,
}

impl JobState {
    /// Every state.
    pub const ALL: [JobState; 7] = [
        JobState::Waiting,
        JobState::Delayed,
        JobState::Paused,
        JobState::Active,
        JobState::Completed,
        JobState::Failed,
        JobState::Cancelled,
    ];

    /// The state's name as stored (the `state` index) and on the wire.
    pub fn name(self) -> &'static str {
        match self {
            JobState::Waiting => "waiting",
            JobState::Delayed => "delayed",
            JobState::Paused => "paused",
            JobState::Active => "active",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// Parses a state; an unknown one is `ERR_INVALID_INPUT` on `field`.
    pub fn parse(name: &str, field: &str) -> Result<Self> {
        JobState::ALL
            .into_iter()
            .find(|state| state.name() == name)
            .ok_or_else(|| {
                Error::invalid_input(
                    field,
                    format!(
                        "unknown state `{name}`; expected one of waiting, delayed, paused, active, completed, failed, cancelled"
                    ),
                )
            })
    }

    /// Whether the job is done (completed, failed or cancelled).
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Cancelled
        )
    }

    /// Whether the job has yet to start (waiting, delayed or paused).
    pub fn is_pending(self) -> bool {
        matches!(
            self,
            JobState::Waiting | JobState::Delayed | JobState::Paused
        )
    }
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobFailure {
    /// What went wrong.
    pub message: String,
    /// Whether another attempt could succeed.
    pub retryable: bool,
}

/// One job, as stored in the `jobs` table (fields camelCase; `state` and `name` are indexed). An
/// unset optional field is left out of the row (a missing field reads as `None`, as `null`
/// does): a new job's row is then about half the size, and half the work to build.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobRecord {
    /// The job's id (the row's key; not repeated among the row's fields).
    pub id: String,
    /// The queue: the name its handler is registered under.
    pub name: String,
    /// What the handler gets.
    pub data: Value,
    /// Where it is.
    pub state: JobState,
    /// Its options, with the defaults filled in.
    pub options: JobOptions,
    /// The FIFO key within a priority: taken from a counter each time the job becomes waiting.
    pub seq: u64,
    /// Attempts that ended (completed, failed, timed out, cancelled, or lost with their worker).
    pub attempts_made: u32,
    /// Times its lease expired while active (its worker died or froze).
    pub stalled_count: u32,
    /// What the handler last reported: 0 to 100, or any JSON.
    pub progress: Value,
    /// What the handler returned, once completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Why the last attempt failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<JobFailure>,
    /// When it was enqueued (ms on the queue's clock).
    pub created_at: u64,
    /// When it last became ready to run (`waiting`): enqueued without a delay, its delay or a
    /// retry's backoff ended (the due time, even if the tick that promoted it came later),
    /// resumed, retried, or taken back from a worker that died. Kept while it runs and once it
    /// finished, so that `processedAt - readyAt` is the wait in the queue of its latest attempt.
    /// `None` while a delay is pending, and in rows written before the field existed (fall back to
    /// `createdAt` then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_at: Option<u64>,
    /// When its latest attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processed_at: Option<u64>,
    /// When it finished (completed, failed for good or cancelled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
    /// When a delayed job becomes due; kept on a paused job that was delayed, so that resuming it
    /// before then delays it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run_at: Option<u64>,
    /// Until when an active job's worker holds it; past this the job is taken back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<u64>,
    /// The run holding the lease (queue instance and run number), so that a worker that lost its
    /// lease does not overwrite the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// For a debounced pending job: until when a newer job with the same debounce id replaces it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debounce_until: Option<u64>,
}

impl JobRecord {
    /// The row this record is stored as.
    pub fn to_row(&self) -> Result<Row> {
        match serde_json::to_value(self) {
            Ok(Value::Object(mut fields)) => Ok(Row {
                id: self.id.clone(),
                fields: {
                    fields.remove("id");
                    fields
                },
                vectors: Default::default(),
                bytes: Default::default(),
            }),
            Ok(_) => Err(Error::Internal(
                "a job did not serialise to an object".into(),
            )),
            Err(e) => Err(Error::Internal(format!("job `{}`: {e}", self.id))),
        }
    }

    /// The fields the end of an attempt may change, as stored: merged into the row the attempt
    /// ran under, they make this record's row (without writing `data` and `options` again).
    pub(crate) fn outcome_fields(&self) -> Result<Fields> {
        let fields = [
            ("state", serde_json::to_value(self.state)),
            ("attemptsMade", serde_json::to_value(self.attempts_made)),
            ("seq", serde_json::to_value(self.seq)),
            ("progress", serde_json::to_value(&self.progress)),
            ("result", serde_json::to_value(&self.result)),
            ("error", serde_json::to_value(&self.error)),
            ("readyAt", serde_json::to_value(self.ready_at)),
            ("finishedAt", serde_json::to_value(self.finished_at)),
            ("nextRunAt", serde_json::to_value(self.next_run_at)),
            ("leaseUntil", serde_json::to_value(self.lease_until)),
            ("runId", serde_json::to_value(&self.run_id)),
        ];
        fields
            .into_iter()
            .map(|(name, value)| {
                value
                    .map(|value| (name.into(), value))
                    .map_err(|e| Error::Internal(format!("job `{}`: {e}", self.id)))
            })
            .collect()
    }

    /// The record a row holds; an unreadable row is an `ERR_STORE` naming it.
    pub fn from_row(row: &Row) -> Result<Self> {
        crate::input::record_from_row(row, &row.id, &format!("job `{}`", row.id))
    }

    /// The attempt a run of it now would be (1 for the first).
    pub fn next_attempt(&self) -> u32 {
        self.attempts_made.saturating_add(1)
    }
}
