//! The memory tools: "remember this" (`remember`) and an explicit search of what ORION remembers
//! (`memory_search`). Questions that merely need a memory ("when is my dentist appointment?")
//! are not theirs: the pipeline's memory stage answers those.

use serde_json::{json, Value};

use super::{Tool, ToolContext, ToolOutput, ToolSpec};
use crate::embedding::LocalBoxFuture;
use crate::error::{Error, Result};
use crate::memory::{Memories, NewMemory};

/// Hits `memory_search` returns.
const SEARCH_K: u64 = 5;
/// The least similarity of a `memory_search` hit.
const SEARCH_MIN_SIMILARITY: f64 = 0.2;

/// Phrases that make a statement a request to remember what follows.
const REMEMBER_PREFIXES: &[&str] = &[
    "please remember that ",
    "please remember ",
    "remember that ",
    "remember: ",
    "remember ",
    "note that ",
    "keep in mind that ",
    "don't forget that ",
    "do not forget that ",
];

/// Phrases that ask to search the memories for what follows.
const SEARCH_PREFIXES: &[&str] = &[
    "what do you remember about ",
    "what do you know about me and ",
    "what did i tell you about ",
    "search my memories for ",
    "search my memory for ",
    "search memories for ",
    "search memory for ",
    "recall what i said about ",
];

/// The text after the first of `prefixes` that starts `query` (case-insensitively), trimmed of
/// a final `.`/`?`/`!`; `None` when none does or nothing follows.
fn after_prefix<'a>(query: &'a str, prefixes: &[&str]) -> Option<&'a str> {
    let trimmed = query.trim();
    let lower = trimmed.to_lowercase();
    // Lowercasing can change byte lengths outside ASCII; the prefixes are ASCII, so a match on
    // the lowercased text is at the same byte offset when the matched part is ASCII.
    prefixes.iter().find_map(|prefix| {
        let head = trimmed.get(..prefix.len())?;
        if lower.starts_with(prefix) && head.is_ascii() {
            let rest = trimmed.get(prefix.len()..)?.trim();
            let rest = rest.trim_end_matches(['.', '?', '!']).trim();
            (!rest.is_empty()).then_some(rest)
        } else {
            None
        }
    })
}

/// The spec of a memory tool whose one argument, `field`, is a string of 1 to 4096 characters.
fn text_spec(name: &str, description: &str, examples: &[&str], field: &str) -> ToolSpec {
    ToolSpec {
        name: name.into(),
        description: description.into(),
        examples: examples.iter().map(|e| (*e).into()).collect(),
        parameters: json!({
            "type": "object",
            "properties": {field: {"type": "string", "minLength": 1, "maxLength": 4096}},
            "required": [field],
            "additionalProperties": false
        }),
    }
}

fn memories(context: &ToolContext) -> Result<&Memories> {
    context.memories.as_deref().ok_or_else(|| Error::Tool {
        tool: "memory".into(),
        reason: "the memory store is not open".into(),
        retryable: false,
    })
}

/// Stores a fact the user asks ORION to remember.
pub struct Remember {
    spec: ToolSpec,
}

impl Default for Remember {
    fn default() -> Self {
        Self {
            spec: text_spec(
                "remember",
                "Remember a fact the user states for later questions.",
                &[
                    "Remember that my dentist appointment is on Friday at 3pm",
                    "Please remember my sister's name is Anna",
                    "Note that the wifi password is on the fridge",
                    "Keep in mind that I am allergic to peanuts",
                ],
                "text",
            ),
        }
    }
}

impl Tool for Remember {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn keeps_result(&self) -> bool {
        false
    }

    fn intent(&self, query: &str) -> Option<Value> {
        // "Remember when …?" and "remember what I said?" are questions, not facts to keep.
        if query.trim_end().ends_with('?') {
            return None;
        }
        let text = after_prefix(query, REMEMBER_PREFIXES)?;
        let first = text.split_whitespace().next()?.to_lowercase();
        if ["what", "when", "who", "where", "why", "how", "which", "if"].contains(&first.as_str()) {
            return None;
        }
        Some(json!({ "text": text }))
    }

    fn run<'a>(
        &'a self,
        arguments: &'a Value,
        context: &'a ToolContext,
    ) -> LocalBoxFuture<'a, Result<ToolOutput>> {
        Box::pin(async move {
            let text = arguments
                .get("text")
                .and_then(Value::as_str)
                .ok_or_else(|| Error::invalid_input("text", "is missing"))?;
            let record = memories(context)?
                .add(
                    context.embedder.as_ref(),
                    NewMemory {
                        text: text.to_owned(),
                        kind: Some("fact".into()),
                        meta: None,
                    },
                )
                .await?;
            Ok(ToolOutput {
                text: format!("I'll remember that: {text}"),
                value: json!({ "id": record.id, "text": text }),
            })
        })
    }
}

/// Searches what ORION remembers, when asked to explicitly.
pub struct MemorySearch {
    spec: ToolSpec,
}

impl Default for MemorySearch {
    fn default() -> Self {
        Self {
            spec: text_spec(
                "memory_search",
                "Search what the user told ORION earlier.",
                &[
                    "What do you remember about my car?",
                    "What did I tell you about the project deadline?",
                    "Search my memories for birthdays",
                ],
                "query",
            ),
        }
    }
}

impl Tool for MemorySearch {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn keeps_result(&self) -> bool {
        false
    }

    fn intent(&self, query: &str) -> Option<Value> {
        after_prefix(query, SEARCH_PREFIXES).map(|topic| json!({ "query": topic }))
    }

    fn run<'a>(
        &'a self,
        arguments: &'a Value,
        context: &'a ToolContext,
    ) -> LocalBoxFuture<'a, Result<ToolOutput>> {
        Box::pin(async move {
            let query = arguments
                .get("query")
                .and_then(Value::as_str)
                .ok_or_else(|| Error::invalid_input("query", "is missing"))?;
            let hits = memories(context)?
                .search(
                    context.embedder.as_ref(),
                    query,
                    SEARCH_K,
                    SEARCH_MIN_SIMILARITY,
                    None,
                )
                .await?;
            let text = if hits.is_empty() {
                format!("I don't remember anything about {query}.")
            } else {
                let lines: Vec<String> = hits.iter().map(|hit| format!("- {}", hit.text)).collect();
                format!(
                    "Here is what I remember about {query}:\n{}",
                    lines.join("\n")
                )
            };
            let value = json!({
                "query": query,
                "hits": hits.iter().map(|hit| json!({
                    "id": hit.id, "text": hit.text, "similarity": hit.similarity
                })).collect::<Vec<_>>(),
            });
            Ok(ToolOutput { text, value })
        })
    }
}

#[cfg(test)]
mod tests;
