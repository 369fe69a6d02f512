//! Tools: what ORION can do exactly instead of guessing with a language model.
//!
//! A [`Tool`] has a [`ToolSpec`] (name, description, examples, JSON-Schema parameters) and runs
//! with validated arguments. Built-in tools are Rust (calculator, date and time, unit conversion,
//! memory search, remember); host tools are the page's JS functions. Tool choice (see
//! `ToolExecutionManager`) first asks each tool's explicit intent rule ([`Tool::intent`]), then
//! compares the query with the tools' descriptions and examples by embedding similarity and asks
//! the chosen tool to read its arguments from the query ([`Tool::arguments`]).

use std::rc::Rc;

use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::embedding::{Embedder, LocalBoxFuture};
use crate::error::Result;
use crate::memory::Memories;

pub mod calculator;
pub mod date_time;
mod execution;
mod host_tool;
mod memory_tools;
pub mod units;

pub use execution::{
    Choice, Chosen, ToolExecutionManager, ToolPolicy, ToolRun, MAX_TOOLS, TOOLS_COMPONENT,
    TOOL_BREAKER_PREFIX,
};
pub use host_tool::{arguments_from_query, HostTool, HostToolAnswer, HostToolSpec, MAX_HOST_TOOLS};
pub use memory_tools::{MemorySearch, Remember};

/// What a tool is and takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolSpec {
    /// Unique name (`calculator`, `convert_units`, or the host's).
    pub name: String,
    /// What it does, in a sentence (compared with queries).
    pub description: String,
    /// Queries it answers (compared with queries).
    #[serde(default)]
    pub examples: Vec<String>,
    /// JSON Schema of its arguments (an object schema).
    pub parameters: Value,
}

/// What a tool returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolOutput {
    /// The answer as a sentence for the user (`12 × 7 = 84`).
    pub text: String,
    /// The result as data (`{"value": "84"}`).
    pub value: Value,
}

/// What a running tool may use besides its arguments.
#[derive(Clone)]
pub struct ToolContext {
    /// Now, in ms since the Unix epoch (from the runtime's clock).
    pub now_ms: u64,
    /// The user's time zone (the page's `Intl` zone; UTC when unknown).
    pub time_zone: Tz,
    /// The memory layer, when the store is open.
    pub memories: Option<Rc<Memories>>,
    /// The active embedder.
    pub embedder: Rc<dyn Embedder>,
}

/// A tool ORION can call.
pub trait Tool {
    /// Its name, description, examples and parameters.
    fn spec(&self) -> &ToolSpec;

    /// The arguments for `query` when an explicit intent rule says this tool must answer it
    /// (`what is 12 * 7` is the calculator's); `None` otherwise. Rules are precise: a query no
    /// tool should answer matches none.
    fn intent(&self, query: &str) -> Option<Value>;

    /// The arguments read from `query` once similarity chose this tool; `None` when the query
    /// does not carry them. The default is [`Tool::intent`].
    fn arguments(&self, query: &str) -> Option<Value> {
        self.intent(query)
    }

    /// Whether a successful result is kept as a `tool_result` memory (ORION's
    /// `handleToolSuccess`). The memory tools say no: their results are memories already.
    fn keeps_result(&self) -> bool {
        true
    }

    /// Runs with `arguments`, already checked against [`ToolSpec::parameters`].
    fn run<'a>(
        &'a self,
        arguments: &'a Value,
        context: &'a ToolContext,
    ) -> LocalBoxFuture<'a, Result<ToolOutput>>;
}
