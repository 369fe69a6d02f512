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

/// Compiles JSON Schemas. The platform brings the validator (`orion-web` uses the maintained
/// `jsonschema` crate): JSON Schema implementations hash with a randomly seeded hasher, and in the
/// browser that seed comes from the platform, which this crate must not depend on.
pub trait SchemaCompiler {
    /// A check for `schema`; a schema that is not valid JSON Schema (or names a remote `$ref`)
    /// is `Err(why)`.
    fn compile(&self, schema: &Value) -> std::result::Result<Rc<dyn PayloadCheck>, String>;
}

/// A compiled schema.
pub trait PayloadCheck {
    /// The first place `value` breaks the schema, if any: a JSON pointer to the field
    /// (`/items/2/qty`; empty for the value itself) and why.
    fn first_error(&self, value: &Value) -> Option<(String, String)>;
}

/// A compiled payload schema.
#[derive(Clone)]
pub(crate) struct PayloadSchema(Rc<dyn PayloadCheck>);

impl PayloadSchema {
    /// Compiles `schema`; a schema that is too large or not valid JSON Schema is
    /// `ERR_INVALID_INPUT` on `task.schema`.
    pub(crate) fn compile(schema: &Value, compiler: &dyn SchemaCompiler) -> Result<Self> {
        check_json_size("task.schema", schema, MAX_SCHEMA_BYTES)?;
        compiler
            .compile(schema)
            .map(Self)
            .map_err(|reason| Error::invalid_input("task.schema", reason))
    }

    /// `ERR_INVALID_INPUT` naming the first field of `payload` (`payload.items[2].qty`) that the
    /// schema rejects.
    pub(crate) fn check(&self, payload: &Value) -> Result<()> {
        match self.0.first_error(payload) {
            None => Ok(()),
            Some((pointer, reason)) => Err(Error::invalid_input(
                field_path("payload", &pointer),
                reason,
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
    pub(crate) fn define(&mut self, spec: &TaskSpec, compiler: &dyn SchemaCompiler) -> Result<()> {
        let schema = spec
            .schema
            .as_ref()
            .map(|schema| PayloadSchema::compile(schema, compiler))
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
pub(crate) mod tests {
    use serde_json::json;

    use super::*;

    /// A stand-in for the platform's JSON Schema validator: `type` (`object`, `string`,
    /// `integer`), `required` and `properties`, recursively; anything else in a schema is an
    /// error, so that tests cannot lean on what it does not check.
    pub(crate) struct TinySchemas;

    struct Tiny(Value);

    impl SchemaCompiler for TinySchemas {
        fn compile(&self, schema: &Value) -> std::result::Result<Rc<dyn PayloadCheck>, String> {
            fn known(schema: &Value) -> bool {
                schema.as_object().is_some_and(|fields| {
                    fields.iter().all(|(key, value)| match key.as_str() {
                        "type" => matches!(value.as_str(), Some("object" | "string" | "integer")),
                        "required" => value.is_array(),
                        "properties" => value
                            .as_object()
                            .is_some_and(|properties| properties.values().all(known)),
                        _ => false,
                    })
                })
            }
            if known(schema) {
                Ok(Rc::new(Tiny(schema.clone())))
            } else {
                Err(format!("not a schema this stand-in knows: {schema}"))
            }
        }
    }

    impl PayloadCheck for Tiny {
        fn first_error(&self, value: &Value) -> Option<(String, String)> {
            fn check(schema: &Value, value: &Value, at: &str) -> Option<(String, String)> {
                let wrong = match schema.get("type").and_then(Value::as_str) {
                    Some("object") => !value.is_object(),
                    Some("string") => !value.is_string(),
                    Some("integer") => !(value.is_i64() || value.is_u64()),
                    _ => false,
                };
                if wrong {
                    return Some((at.to_owned(), "has the wrong type".into()));
                }
                for name in schema["required"].as_array().into_iter().flatten() {
                    let name = name.as_str().unwrap_or_default();
                    if value.get(name).is_none() {
                        return Some((at.to_owned(), format!("lacks `{name}`")));
                    }
                }
                let properties = schema["properties"].as_object()?;
                properties.iter().find_map(|(name, inner)| {
                    let field = value.get(name)?;
                    check(inner, field, &format!("{at}/{name}"))
                })
            }
            check(&self.0, value, "")
        }
    }

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
                "required": ["to"],
                "properties": {"to": {"type": "string"}, "box": {"type": "object",
                    "properties": {"qty": {"type": "integer"}}}}
            }
        }))
        .unwrap();
        registry.define(&spec, &TinySchemas).unwrap();
        let ok = json!({"to": "a", "box": {"qty": 1}});
        assert!(registry.check(TaskSource::Queue, "send", &ok).is_ok());
        let bad = json!({"to": "a", "box": {"qty": "one"}});
        let error = registry.check(TaskSource::Queue, "send", &bad).unwrap_err();
        assert_eq!(field_of(error), "payload.box.qty");
        let missing = json!({"box": {}});
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
    fn a_pointer_becomes_a_field_path() {
        assert_eq!(field_path("payload", ""), "payload");
        assert_eq!(
            field_path("payload", "/items/2/qty"),
            "payload.items[2].qty"
        );
        assert_eq!(field_path("payload", "/a~1b/c~0d"), "payload.a/b.c~d");
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
        let error = Registry::default().define(&spec, &TinySchemas).unwrap_err();
        assert_eq!(field_of(error), "task.schema");
    }
}
