//! What a workflow type is: a [`WorkflowDefinition`], an ordered list of named [`Step`]s, each an
//! async function of a [`StepContext`] with an optional compensation.

use std::collections::HashSet;
use std::rc::Rc;

use serde_json::Value;

use super::context::StepContext;
use super::options::{check_id, check_timeout, RetryPolicy, MAX_STEPS};
use crate::embedding::LocalBoxFuture;
use crate::error::{Error, Result};
use crate::jobs::{JobError, MAX_TIMEOUT_MS};

/// Why a step (or a compensation) attempt failed, as it says: `{message, retryable}`. A retryable
/// error runs the step again while its retry policy allows; a non-retryable one fails the
/// workflow at once, which then compensates. The same type as a job handler's error, so one
/// adapter serves both.
pub type StepError = JobError;

/// A step's (or a compensation's) body: called once per attempt with everything the attempt needs
/// in its [`StepContext`]; its future's output decides the attempt. One argument in, one JSON
/// value out, so a JS function `async (ctx) => value` can be bridged to it.
pub type StepFn = Rc<dyn Fn(StepContext) -> LocalBoxFuture<'static, Result<Value, StepError>>>;

/// One named step of a workflow.
#[derive(Clone)]
pub struct Step {
    pub(crate) name: String,
    pub(crate) run: StepFn,
    pub(crate) compensation: Option<StepFn>,
    pub(crate) retry: Option<RetryPolicy>,
    pub(crate) timeout_ms: Option<u64>,
}

impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Step")
            .field("name", &self.name)
            .field("compensation", &self.compensation.is_some())
            .field("retry", &self.retry)
            .field("timeout_ms", &self.timeout_ms)
            .finish_non_exhaustive()
    }
}

impl Step {
    /// A step named `name` (unique within its workflow) running `run`.
    pub fn new<F>(name: impl Into<String>, run: F) -> Self
    where
        F: Fn(StepContext) -> LocalBoxFuture<'static, Result<Value, StepError>> + 'static,
    {
        Self {
            name: name.into(),
            run: Rc::new(run),
            compensation: None,
            retry: None,
            timeout_ms: None,
        }
    }

    /// Undoes the step if the workflow fails, is cancelled or times out after it completed: run
    /// once per attempt, newest completed step first. Its context carries the step's result
    /// ([`StepContext::step_result`]); its own return value is discarded.
    pub fn compensate<F>(mut self, compensation: F) -> Self
    where
        F: Fn(StepContext) -> LocalBoxFuture<'static, Result<Value, StepError>> + 'static,
    {
        self.compensation = Some(Rc::new(compensation));
        self
    }

    /// Retries this step (and its compensation) per `retry`, whatever the workflow's options say.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Fails (retryably) an attempt of this step (or its compensation) running longer than `ms`,
    /// whatever the workflow's `stepTimeout` says.
    pub fn timeout(mut self, ms: u64) -> Self {
        self.timeout_ms = Some(ms);
        self
    }

    /// The step's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the step has a compensation.
    pub fn has_compensation(&self) -> bool {
        self.compensation.is_some()
    }
}

/// A workflow type: its steps, run in order. Registered with
/// [`super::WorkflowEngine::register`].
#[derive(Debug, Clone, Default)]
pub struct WorkflowDefinition {
    pub(crate) steps: Vec<Step>,
}

impl WorkflowDefinition {
    /// A definition with no steps yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a step.
    pub fn step(mut self, step: Step) -> Self {
        self.steps.push(step);
        self
    }

    /// The steps, in order.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The step named `name`.
    pub fn find(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|step| step.name == name)
    }

    /// Checks the definition: 1 to [`MAX_STEPS`] steps with valid, distinct names, retry policies
    /// and timeouts in range (`ERR_INVALID_INPUT` on `definition.steps[i]....`).
    pub fn validate(&self) -> Result<()> {
        if self.steps.is_empty() || self.steps.len() > MAX_STEPS {
            return Err(Error::invalid_input(
                "definition.steps",
                format!("must have 1 to {MAX_STEPS} steps, got {}", self.steps.len()),
            ));
        }
        let mut names = HashSet::new();
        for (i, step) in self.steps.iter().enumerate() {
            let field = format!("definition.steps[{i}]");
            check_id(&format!("{field}.name"), &step.name)?;
            // Step names key the checkpoints and idempotency keys: two steps sharing one would
            // share a result.
            if !names.insert(step.name.as_str()) {
                return Err(Error::invalid_input(
                    format!("{field}.name"),
                    format!("`{}` names two steps", step.name),
                ));
            }
            // `/` separates the parts of an idempotency key.
            if step.name.contains('/') {
                return Err(Error::invalid_input(
                    format!("{field}.name"),
                    "must not contain `/`",
                ));
            }
            if let Some(retry) = &step.retry {
                retry.validate(&format!("{field}.retry"))?;
            }
            check_timeout(&format!("{field}.timeout"), step.timeout_ms, MAX_TIMEOUT_MS)?;
        }
        Ok(())
    }
}
