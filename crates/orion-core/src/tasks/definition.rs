//! What the page says about a task before scheduling it: its kind, its payload's JSON Schema, its
//! queue concurrency or its workflow steps.

use std::collections::HashMap;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::input::{check_id, check_json_size, from_json_at};
use crate::workflows::RetryPolicy;

/// The largest payload schema, in bytes of JSON.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;

/// The most tasks one worker may define (each holds a compiled schema).
pub const MAX_TASKS: usize = 1000;

/// Which engine runs a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TaskSource {
    /// A job in the queue: one handler call per attempt.
    Queue,
    /// A workflow: named steps, checkpointed one by one.
    Workflow,
}

impl TaskSource {
    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            TaskSource::Queue => "queue",
            TaskSource::Workflow => "workflow",
        }
    }
}

/// One step of a workflow task whose code runs in the page.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StepSpec {
    /// Unique within the workflow.
    pub name: String,
    /// Whether the page also has a compensation for it (run on a saga rollback).
    #[serde(default)]
    pub compensate: bool,
    /// Its retry policy, over the workflow's.
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
    /// Ms one attempt may run, over the workflow's `stepTimeout`.
    #[serde(default)]
    pub timeout: Option<u64>,
}

/// A task as the page defines it: `{name, kind, concurrency?, schema?, steps?}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TaskSpec {
    /// The task's name: its queue, or its workflow type.
    pub name: String,
    /// `queue` or `workflow`.
    pub kind: TaskSource,
    /// For a queue task: how many of its jobs run at once (1 to 1000, default 1).
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// A JSON Schema every payload must satisfy before anything is stored.
    #[serde(default)]
    pub schema: Option<Value>,
    /// For a workflow task: its steps, in order (at least one).
    #[serde(default)]
    pub steps: Vec<StepSpec>,
}

impl TaskSpec {
    /// A spec from the JSON the page sent; a problem is `ERR_INVALID_INPUT` naming the field
    /// under `task` (`task.steps[0].name`).
    pub fn from_json(value: Value) -> Result<Self> {
        let spec: Self = from_json_at("task", value)?;
        check_id("task.name", &spec.name)?;
        match spec.kind {
            TaskSource::Queue if !spec.steps.is_empty() => {
                return Err(Error::invalid_input(
                    "task.steps",
                    "a queue task has no steps (define it with kind `workflow`)",
                ))
            }
            TaskSource::Workflow if spec.concurrency.is_some() => {
                return Err(Error::invalid_input(
                    "task.concurrency",
                    "applies to queue tasks only",
                ))
            }
            TaskSource::Workflow if spec.steps.is_empty() => {
                return Err(Error::invalid_input(
                    "task.steps",
                    "a workflow task needs at least one step",
                ))
            }
            _ => {}
        }
        Ok(spec)
    }
}

/// A compiled payload schema.
#[derive(Clone)]
pub(crate) struct PayloadSchema(Rc<jsonschema::Validator>);

impl PayloadSchema {
    /// Compiles `schema`; a schema that is too large or not valid JSON Schema is
    /// `ERR_INVALID_INPUT` on `task.schema`.
    pub(crate) fn compile(schema: &Value) -> Result<Self> {
        check_json_size("task.schema", schema, MAX_SCHEMA_BYTES)?;
        jsonschema::validator_for(schema)
            .map(|validator| Self(Rc::new(validator)))
            .map_err(|error| Error::invalid_input("task.schema", error.to_string()))
    }

    /// `ERR_INVALID_INPUT` naming the first field of `payload` (`payload.items[2].qty`) that the
    /// schema rejects.
    pub(crate) fn check(&self, payload: &Value) -> Result<()> {
        match self.0.iter_errors(payload).next() {
            None => Ok(()),
            Some(error) => Err(Error::invalid_input(
                field_path("payload", &error.instance_path.to_string()),
                error.to_string(),
            )),
        }
    }
}

/// `payload` + a JSON pointer (`/items/2/qty`) as a field path (`payload.items[2].qty`).
fn field_path(root: &str, pointer: &str) -> String {
    let mut path = root.to_owned();
    for segment in pointer.split('/').skip(1) {
        let segment = segment.replace("~1", "/").replace("~0", "~");
        if !segment.is_empty() && segment.bytes().all(|b| b.is_ascii_digit()) {
            path.push_str(&format!("[{segment}]"));
        } else {
            path.push('.');
            path.push_str(&segment);
        }
    }
    path
}

/// The tasks defined in this worker, by name.
#[derive(Default)]
pub(crate) struct Registry {
    tasks: HashMap<String, (TaskSource, Option<PayloadSchema>)>,
}

impl Registry {
    /// Adds (or replaces) a task; more than [`MAX_TASKS`] distinct names is refused.
    pub(crate) fn define(&mut self, spec: &TaskSpec) -> Result<()> {
        let schema = spec
            .schema
            .as_ref()
            .map(PayloadSchema::compile)
            .transpose()?;
        if !self.tasks.contains_key(&spec.name) && self.tasks.len() >= MAX_TASKS {
            return Err(Error::invalid_input(
                "task.name",
                format!("at most {MAX_TASKS} tasks can be defined"),
            ));
        }
        self.tasks.insert(spec.name.clone(), (spec.kind, schema));
        Ok(())
    }

    /// Checks that `name` is a task of `source` and that `payload` fits its schema.
    pub(crate) fn check(&self, source: TaskSource, name: &str, payload: &Value) -> Result<()> {
        match self.tasks.get(name) {
            Some((kind, Some(schema))) if *kind == source => schema.check(payload),
            Some((kind, None)) if *kind == source => Ok(()),
            Some((kind, _)) => Err(Error::invalid_input(
                "name",
                format!(
                    "`{name}` is a {} task, not a {} task",
                    kind.name(),
                    source.name()
                ),
            )),
            // Tasks defined inside the worker (Rust handlers) have no schema here; the engines
            // themselves refuse names nothing handles.
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn field_of(error: Error) -> String {
        match error {
            Error::InvalidInput { field, .. } => field,
            other => panic!("expected ERR_INVALID_INPUT, got {other:?}"),
        }
    }

    #[test]
    fn a_payload_is_checked_against_its_tasks_schema_with_the_bad_field_named() {
        let mut registry = Registry::default();
        let spec = TaskSpec::from_json(json!({
            "name": "send",
            "kind": "queue",
            "schema": {
                "type": "object",
                "required": ["to", "items"],
                "properties": {
                    "to": {"type": "string", "minLength": 1},
                    "items": {"type": "array", "items": {"type": "object",
                        "properties": {"qty": {"type": "integer", "minimum": 1}}}}
                }
            }
        }))
        .unwrap();
        registry.define(&spec).unwrap();
        let ok = json!({"to": "a", "items": [{"qty": 1}]});
        assert!(registry.check(TaskSource::Queue, "send", &ok).is_ok());
        let bad = json!({"to": "a", "items": [{"qty": 1}, {"qty": 1}, {"qty": 0}]});
        let error = registry.check(TaskSource::Queue, "send", &bad).unwrap_err();
        assert_eq!(field_of(error), "payload.items[2].qty");
        let missing = json!({"items": []});
        let error = registry
            .check(TaskSource::Queue, "send", &missing)
            .unwrap_err();
        assert_eq!(field_of(error), "payload");
        let error = registry
            .check(TaskSource::Workflow, "send", &ok)
            .unwrap_err();
        assert_eq!(field_of(error), "name");
    }

    #[test]
    fn bad_definitions_name_their_field() {
        let cases = [
            (json!({"name": "", "kind": "queue"}), "task.name"),
            (json!({"name": "a", "kind": "cron"}), "task.kind"),
            (
                json!({"name": "a", "kind": "queue", "steps": [{"name": "s"}]}),
                "task.steps",
            ),
            (json!({"name": "a", "kind": "workflow"}), "task.steps"),
            (
                json!({"name": "a", "kind": "workflow", "concurrency": 2, "steps": [{"name": "s"}]}),
                "task.concurrency",
            ),
            (json!({"name": "a", "kind": "queue", "extra": 1}), "task"),
        ];
        for (value, field) in cases {
            let error = TaskSpec::from_json(value.clone()).unwrap_err();
            assert!(
                field_of(error).starts_with(field),
                "{value} should fail on {field}"
            );
        }
        let spec = TaskSpec::from_json(json!({
            "name": "a", "kind": "queue", "schema": {"type": "nonsense"}
        }))
        .unwrap();
        let error = Registry::default().define(&spec).unwrap_err();
        assert_eq!(field_of(error), "task.schema");
    }

    #[test]
    fn a_remote_reference_is_refused_rather_than_fetched() {
        let spec = TaskSpec::from_json(json!({
            "name": "a", "kind": "queue",
            "schema": {"$ref": "https://example.com/schema.json"}
        }))
        .unwrap();
        let error = Registry::default().define(&spec).unwrap_err();
        assert_eq!(field_of(error), "task.schema");
    }
}
