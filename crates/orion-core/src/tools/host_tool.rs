//! Tools the page brings (`Orion.create({ tools })`): a spec in `init`, and a JS function the
//! worker calls through the client (`tool_host_call` event, `tool_host_result` answer).
//!
//! Host tools have no intent rules: they are chosen by similarity between the query and their
//! description and examples. Their arguments are then read from the query by the schema
//! ([`arguments_from_query`]): every number the query contains fills the `number`/`integer`
//! properties in order, a string property with an `enum` takes the first of its values the
//! query names, and the one remaining free-text string property takes the query itself. A
//! required property left unfilled means the query is not the tool's. Pages whose tools need
//! richer arguments should describe them with examples that match how users ask.

use std::rc::Rc;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{Tool, ToolContext, ToolOutput, ToolSpec};
use crate::embedding::LocalBoxFuture;
use crate::error::{Error, Result};
use crate::page_calls::PageCalls;
use crate::protocol::Event;
use crate::tasks::HostFailure;

/// The most host tools a page may bring.
pub const MAX_HOST_TOOLS: usize = 32;
/// The longest description, in bytes.
const MAX_DESCRIPTION_BYTES: usize = 1024;
/// The most examples per tool, and the longest, in bytes.
const MAX_EXAMPLES: usize = 16;
const MAX_EXAMPLE_BYTES: usize = 512;

/// What the page's tool function answered: its result, or how it failed.
pub type HostToolAnswer = std::result::Result<Value, HostFailure>;

/// One of `init.tools`: a page tool's spec (its function stays in the page).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostToolSpec {
    /// Unique name: letters, digits, `_`, `-` and `.`, 1 to 64 bytes.
    pub name: String,
    /// What it does (compared with queries).
    pub description: String,
    /// Queries it answers (compared with queries).
    #[serde(default)]
    pub examples: Vec<String>,
    /// JSON Schema of its arguments: an object schema.
    pub parameters: Value,
}

impl HostToolSpec {
    /// Checks the spec; `field` is where it sits (`tools[2]`).
    pub fn validate(&self, field: &str) -> Result<()> {
        let valid_name = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !valid_name {
            return Err(Error::invalid_input(
                format!("{field}.name"),
                "must be 1 to 64 letters, digits, `_`, `-` or `.`",
            ));
        }
        if self.description.trim().is_empty() || self.description.len() > MAX_DESCRIPTION_BYTES {
            return Err(Error::invalid_input(
                format!("{field}.description"),
                format!("must be 1 to {MAX_DESCRIPTION_BYTES} bytes"),
            ));
        }
        if self.examples.len() > MAX_EXAMPLES {
            return Err(Error::invalid_input(
                format!("{field}.examples"),
                format!("at most {MAX_EXAMPLES} examples"),
            ));
        }
        for (i, example) in self.examples.iter().enumerate() {
            if example.trim().is_empty() || example.len() > MAX_EXAMPLE_BYTES {
                return Err(Error::invalid_input(
                    format!("{field}.examples[{i}]"),
                    format!("must be 1 to {MAX_EXAMPLE_BYTES} bytes"),
                ));
            }
        }
        if self.parameters.get("type").and_then(Value::as_str) != Some("object") {
            return Err(Error::invalid_input(
                format!("{field}.parameters"),
                "must be an object schema (`type: 'object'`)",
            ));
        }
        Ok(())
    }
}

/// A page tool, called through the client.
pub struct HostTool {
    spec: ToolSpec,
    calls: Rc<PageCalls<HostToolAnswer>>,
}

impl HostTool {
    /// The tool of `spec`, calling the page through `calls`.
    pub fn new(spec: HostToolSpec, calls: Rc<PageCalls<HostToolAnswer>>) -> Self {
        Self {
            spec: ToolSpec {
                name: spec.name,
                description: spec.description,
                examples: spec.examples,
                parameters: spec.parameters,
            },
            calls,
        }
    }
}

impl Tool for HostTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn intent(&self, _query: &str) -> Option<Value> {
        None
    }

    fn arguments(&self, query: &str) -> Option<Value> {
        arguments_from_query(&self.spec.parameters, query)
    }

    fn run<'a>(
        &'a self,
        arguments: &'a Value,
        _context: &'a ToolContext,
    ) -> LocalBoxFuture<'a, Result<ToolOutput>> {
        let tool = self.spec.name.clone();
        let call = self.calls.call(|call_id| Event::ToolHostCall {
            call_id,
            tool: tool.clone(),
            arguments: arguments.clone(),
        });
        Box::pin(async move {
            match call.await {
                None => Err(Error::Tool {
                    tool,
                    reason: "the page went away before it answered".into(),
                    retryable: true,
                }),
                Some(Err(failure)) => Err(Error::Tool {
                    tool,
                    reason: failure.message,
                    retryable: failure.retryable,
                }),
                Some(Ok(value)) => {
                    let text = match &value {
                        Value::String(text) => text.clone(),
                        Value::Object(fields) => match fields.get("text") {
                            Some(Value::String(text)) => text.clone(),
                            _ => value.to_string(),
                        },
                        other => other.to_string(),
                    };
                    Ok(ToolOutput { text, value })
                }
            }
        })
    }
}

/// Arguments for `schema` read from `query` (see the module docs); `None` when a required
/// property cannot be filled.
pub fn arguments_from_query(schema: &Value, query: &str) -> Option<Value> {
    let properties = schema.get("properties")?.as_object()?;
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let lower = query.to_lowercase();
    let mut numbers = numbers_in(query).into_iter();
    let mut arguments = Map::new();
    let mut free_text = Vec::new();
    for (name, property) in properties {
        match property.get("type").and_then(Value::as_str) {
            Some("number") => {
                if let Some(n) = numbers.next().and_then(serde_json::Number::from_f64) {
                    arguments.insert(name.clone(), Value::Number(n));
                }
            }
            Some("integer") => {
                if let Some(n) = numbers
                    .next()
                    .filter(|n| n.fract() == 0.0 && n.abs() < 9e15)
                {
                    arguments.insert(name.clone(), Value::from(n as i64));
                }
            }
            Some("string") => match property.get("enum").and_then(Value::as_array) {
                Some(values) => {
                    let named = values
                        .iter()
                        .filter_map(Value::as_str)
                        .find(|value| lower.contains(&value.to_lowercase()));
                    if let Some(value) = named {
                        arguments.insert(name.clone(), Value::from(value));
                    }
                }
                None => free_text.push(name.clone()),
            },
            _ => {}
        }
    }
    // Only an unambiguous free-text property gets the query.
    if let [name] = free_text.as_slice() {
        let text = query.trim().trim_end_matches(['?', '.', '!']).trim();
        arguments.insert(name.clone(), Value::from(text));
    }
    required
        .iter()
        .all(|name| arguments.contains_key(*name))
        .then_some(Value::Object(arguments))
}

/// The numbers written in `text`, in order (`-3`, `2.5`, `1,000`).
fn numbers_in(text: &str) -> Vec<f64> {
    let mut numbers = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let continues = c.is_ascii_digit()
            || (matches!(c, '.' | ',')
                && !current.is_empty()
                && chars.peek().is_some_and(char::is_ascii_digit))
            || (c == '-' && current.is_empty() && chars.peek().is_some_and(char::is_ascii_digit));
        if continues {
            if c != ',' {
                current.push(c);
            }
        } else if !current.is_empty() {
            numbers.extend(current.parse::<f64>().ok());
            current.clear();
        }
    }
    if !current.is_empty() {
        numbers.extend(current.parse::<f64>().ok());
    }
    numbers
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn arguments_fill_numbers_enums_and_the_one_free_text() {
        let schema = json!({
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "units": {"type": "string", "enum": ["metric", "imperial"]}
            },
            "required": ["city", "days"]
        });
        assert_eq!(
            arguments_from_query(&schema, "Weather in Oslo for 3 days, imperial please?"),
            Some(json!({
                "city": "Weather in Oslo for 3 days, imperial please",
                "days": 3,
                "units": "imperial"
            }))
        );
        assert_eq!(arguments_from_query(&schema, "Weather in Oslo"), None);
        let two_texts = json!({"type": "object", "properties": {
            "from": {"type": "string"}, "to": {"type": "string"}}, "required": ["from"]});
        assert_eq!(arguments_from_query(&two_texts, "from here to there"), None);
        let optional = json!({"type": "object", "properties": {"n": {"type": "number"}}});
        assert_eq!(
            arguments_from_query(&optional, "no numbers"),
            Some(json!({}))
        );
    }

    #[test]
    fn numbers_are_read_in_order_with_signs_decimals_and_separators() {
        assert_eq!(numbers_in("-3 and 2.5, then 1,000."), [-3.0, 2.5, 1000.0]);
        assert_eq!(numbers_in("no digits"), Vec::<f64>::new());
        assert_eq!(numbers_in("a-b 7"), [7.0]);
    }

    #[test]
    fn specs_are_checked_field_by_field() {
        let good = HostToolSpec {
            name: "weather.now".into(),
            description: "Current weather for a city".into(),
            examples: vec!["weather in Oslo".into()],
            parameters: json!({"type": "object", "properties": {}}),
        };
        assert_eq!(good.validate("tools[0]"), Ok(()));
        let field = |spec: HostToolSpec| match spec.validate("tools[0]") {
            Err(Error::InvalidInput { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            field(HostToolSpec {
                name: "has space".into(),
                ..good.clone()
            }),
            "tools[0].name"
        );
        assert_eq!(
            field(HostToolSpec {
                description: " ".into(),
                ..good.clone()
            }),
            "tools[0].description"
        );
        assert_eq!(
            field(HostToolSpec {
                examples: vec!["".into()],
                ..good.clone()
            }),
            "tools[0].examples[0]"
        );
        assert_eq!(
            field(HostToolSpec {
                parameters: json!({"type": "string"}),
                ..good
            }),
            "tools[0].parameters"
        );
    }
}
