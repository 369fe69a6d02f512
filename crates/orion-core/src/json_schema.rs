//! JSON Schema for task payloads and tool arguments, with the maintained `jsonschema` crate
//! (without its network and file resolvers: a remote `$ref` is an invalid schema, never a fetch).
//!
//! Behind the `json-schema` feature: `jsonschema` hashes with a randomly seeded hasher, and in
//! the browser that seed comes from `getrandom`'s `wasm_js` backend, which only the platform
//! crate turns on.

use std::rc::Rc;

use crate::tasks::{PayloadCheck, SchemaCompiler};
use serde_json::Value;

/// Compiles schemas with `jsonschema` (drafts 4 to 2020-12, by `$schema`; 2020-12 without one).
pub struct JsonSchemas;

struct Compiled(jsonschema::Validator);

impl SchemaCompiler for JsonSchemas {
    fn compile(&self, schema: &Value) -> Result<Rc<dyn PayloadCheck>, String> {
        jsonschema::validator_for(schema)
            .map(|validator| Rc::new(Compiled(validator)) as Rc<dyn PayloadCheck>)
            .map_err(|error| error.to_string())
    }
}

impl PayloadCheck for Compiled {
    fn first_error(&self, value: &Value) -> Option<(String, String)> {
        self.0
            .iter_errors(value)
            .next()
            .map(|error| (error.instance_path.to_string(), error.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_first_error_is_a_pointer_to_the_field() -> Result<(), String> {
        let check = JsonSchemas.compile(&json!({
            "type": "object",
            "required": ["to"],
            "properties": {"items": {"type": "array", "items": {"type": "object",
                "properties": {"qty": {"type": "integer", "minimum": 1}}}}}
        }))?;
        assert_eq!(
            check.first_error(&json!({"to": "a", "items": [{"qty": 2}]})),
            None
        );
        let (pointer, _) = check
            .first_error(&json!({"to": "a", "items": [{"qty": 1}, {"qty": 0}]}))
            .ok_or("a zero quantity passed")?;
        assert_eq!(pointer, "/items/1/qty");
        let (pointer, reason) = check
            .first_error(&json!({"items": []}))
            .ok_or("a missing `to` passed")?;
        assert_eq!(pointer, "");
        assert!(reason.contains("to"), "{reason}");
        Ok(())
    }

    #[test]
    fn invalid_schemas_and_remote_references_are_refused() {
        assert!(JsonSchemas.compile(&json!({"type": "nonsense"})).is_err());
        assert!(JsonSchemas
            .compile(&json!({"$ref": "https://example.com/schema.json"}))
            .is_err());
    }
}
