//! The evaluation set: `tests/eval/queries.json` and the facts of `tests/eval/memories.json`.

use std::collections::HashSet;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// What a query tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// The calculator.
    Arithmetic,
    /// The date and time tool.
    Dates,
    /// The unit converter.
    Units,
    /// Answerable from a seeded memory.
    Memory,
    /// General knowledge, for the local LLM.
    General,
    /// Must not trigger any tool.
    NoTool,
}

impl Category {
    /// Every category, in report order.
    pub const ALL: [Category; 6] = [
        Category::Arithmetic,
        Category::Dates,
        Category::Units,
        Category::Memory,
        Category::General,
        Category::NoTool,
    ];

    /// The name used in the dataset and the report.
    pub fn name(self) -> &'static str {
        match self {
            Category::Arithmetic => "arithmetic",
            Category::Dates => "dates",
            Category::Units => "units",
            Category::Memory => "memory",
            Category::General => "general",
            Category::NoTool => "no_tool",
        }
    }
}

/// An expected value: a number (matched with a tolerance) or a string (matched by its shape, see
/// the README).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// A number.
    Number(f64),
    /// A big integer, a date, a time of day or a word.
    Text(String),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Number(n) => write!(f, "{n}"),
            Value::Text(t) => f.write_str(t),
        }
    }
}

/// What a query should produce.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The tool that must answer; `None` when no tool may.
    pub tool: Option<String>,
    /// The tool's answer.
    #[serde(default)]
    pub value: Option<Value>,
    /// The largest accepted absolute difference from a numeric `value` (a default per category
    /// otherwise).
    #[serde(default)]
    pub tolerance: Option<f64>,
    /// The id of the seeded fact that must be among the memory hits.
    #[serde(default)]
    pub memory: Option<String>,
    /// A reference answer for the relevance check.
    #[serde(default)]
    pub reference: Option<String>,
}

/// One query of the set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Query {
    /// Unique in the set.
    pub id: String,
    /// What it tests.
    pub category: Category,
    /// What is asked.
    pub query: String,
    /// What should come of it.
    pub expect: Expect,
}

/// A fact the harness seeds before the queries run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fact {
    /// Its id in the dataset (queries name it in `expect.memory`).
    pub id: String,
    /// The memory's text.
    pub text: String,
}

/// The whole set, checked.
pub struct Dataset {
    /// The queries, in file order.
    pub queries: Vec<Query>,
    /// The facts to seed.
    pub facts: Vec<Fact>,
}

impl Dataset {
    /// Reads and checks `dir/queries.json` and `dir/memories.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let queries: Vec<Query> = read_json(&dir.join("queries.json"))?;
        let facts: Vec<Fact> = read_json(&dir.join("memories.json"))?;
        let dataset = Self { queries, facts };
        dataset.check()?;
        Ok(dataset)
    }

    /// Refuses a set whose entries cannot be scored as the README says.
    fn check(&self) -> Result<()> {
        let mut facts = HashSet::new();
        for fact in &self.facts {
            if !facts.insert(fact.id.as_str()) {
                bail!("memories.json: the fact id `{}` is repeated", fact.id);
            }
        }
        let mut ids = HashSet::new();
        for query in &self.queries {
            let id = &query.id;
            if !ids.insert(id.as_str()) {
                bail!("queries.json: the id `{id}` is repeated");
            }
            let expect = &query.expect;
            let tool_category = matches!(
                query.category,
                Category::Arithmetic | Category::Dates | Category::Units
            );
            if tool_category != expect.tool.is_some() {
                bail!("queries.json `{id}`: only arithmetic, dates and units expect a tool");
            }
            if expect.tool.is_some() != expect.value.is_some() {
                bail!(
                    "queries.json `{id}`: a query that expects a tool needs a `value`, and only it"
                );
            }
            match (&expect.memory, query.category) {
                (Some(fact), Category::Memory) if !facts.contains(fact.as_str()) => {
                    bail!("queries.json `{id}`: no fact `{fact}` in memories.json")
                }
                (Some(_), Category::Memory) => {}
                (None, Category::Memory) => {
                    bail!("queries.json `{id}`: a memory query needs `memory`")
                }
                (Some(_), _) => bail!("queries.json `{id}`: only memory queries name a fact"),
                (None, _) => {}
            }
            if (query.category == Category::General) != expect.reference.is_some() {
                bail!("queries.json `{id}`: general queries, and only they, need a `reference`");
            }
        }
        Ok(())
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}
