//! Runs the set through the real ask pipeline of one profile: the built-in tools, memories over
//! `MemStore` seeded with the set's facts, the profile's embedder and (for general questions) the
//! local LLM, on a fixed clock.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::rc::Rc;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};
use orion_core::answer::AskResponse;
use orion_core::embedding::LocalBoxFuture;
use orion_core::guard::LocalGuard;
use orion_core::json_schema::JsonSchemas;
use orion_core::memory::{Memories, MemoryConfig, NewMemory};
use orion_core::orchestrator::{
    AskObserver, AskRequest, GeneratorSource, Orchestrator, OrchestratorSettings, Resources, Stage,
};
use orion_core::runtime::builtin_tools;
use orion_core::tools::{ToolExecutionManager, ToolPolicy};
use orion_core::{
    BreakerConfig, CircuitBreaker, Embedder, Generator, HealthConfig, ManualClock, MemStore,
    Profile, WorkerHealthMonitor,
};

use crate::dataset::{Category, Dataset, Query};

/// The harness's "now": Monday 2026-11-23, 12:00:00 UTC (1_795_435_200_000 ms).
pub const NOW_MS: u64 = 1_795_435_200_000;
/// The user's time zone for every query.
pub const TIME_ZONE: &str = "UTC";

/// What one query produced.
pub struct Outcome {
    /// The answer, or the error `ask` rejected with.
    pub answer: std::result::Result<AskResponse, String>,
    /// Wall time of `ask`, ms.
    pub wall_ms: f64,
    /// The dataset ids of the seeded facts among the memory hits, best first.
    pub facts_hit: Vec<String>,
}

/// One profile's pipeline, ready to answer the set's queries.
pub struct Harness {
    profile: Profile,
    clock: ManualClock,
    orchestrator: Orchestrator,
    embedder: Rc<dyn Embedder>,
    memories: Rc<Memories>,
    generator: Option<GeneratorSource>,
    /// Store id → dataset id of each seeded fact.
    facts: HashMap<String, String>,
}

impl Harness {
    /// A fresh pipeline over a new store holding the set's facts. `generator` answers general
    /// questions (none: they get the pipeline's answer without a model).
    pub fn new(
        profile: Profile,
        embedder: Rc<dyn Embedder>,
        generator: Option<Rc<dyn Generator>>,
        dataset: &Dataset,
    ) -> Result<Self> {
        let clock = ManualClock::new(NOW_MS);
        let sleeper = clock.clone();
        // Retries' back-off and timeouts on the manual clock: a wait ends when it is polled, so
        // a run never sleeps, and the clock moves only where a wait really happened.
        let sleep: orion_core::tasks::Sleep = Rc::new(move |ms| {
            let sleeper = sleeper.clone();
            Box::pin(async move { sleeper.advance(ms) })
        });
        let mut tools = ToolExecutionManager::new(ToolPolicy::default(), clock.shared(), sleep);
        for tool in builtin_tools() {
            tools
                .register(tool, &JsonSchemas)
                .map_err(|e| anyhow!("registering a built-in tool: {e}"))?;
        }
        let memories = block_on(Memories::load(
            Rc::new(MemStore::new()),
            clock.shared(),
            MemoryConfig::for_profile(profile),
            embedder.info().clone(),
            7,
            &|_| {},
        ))
        .map_err(|e| anyhow!("opening the memory store: {e}"))?;
        let seeds = dataset
            .facts
            .iter()
            .map(|fact| NewMemory {
                text: fact.text.clone(),
                kind: Some("fact".into()),
                meta: None,
            })
            .collect();
        let records = block_on(memories.add_many(embedder.as_ref(), seeds, &|_, _| {}))
            .map_err(|e| anyhow!("seeding the memories: {e}"))?;
        let facts = records
            .into_iter()
            .zip(&dataset.facts)
            .map(|(record, fact)| (record.id, fact.id.clone()))
            .collect();
        let generator = generator.map(|generator| -> GeneratorSource {
            Rc::new(
                move || -> LocalBoxFuture<'static, orion_core::error::Result<Rc<dyn Generator>>> {
                    let generator = Rc::clone(&generator);
                    Box::pin(async move { Ok(generator) })
                },
            )
        });
        Ok(Self {
            profile,
            orchestrator: Orchestrator::new(
                tools,
                OrchestratorSettings::default(),
                clock.shared(),
                1,
            ),
            clock,
            embedder,
            memories: Rc::new(memories),
            generator,
            facts,
        })
    }

    /// Asks `query` and puts the store back as seeded.
    pub fn ask(&self, query: &Query) -> Result<Outcome> {
        let request = AskRequest {
            query: query.query.clone(),
            conversation_id: None,
            time_zone: Some(TIME_ZONE.into()),
        };
        let resources = Resources {
            profile: self.profile,
            embedder: Rc::clone(&self.embedder),
            memories: Some(Rc::clone(&self.memories)),
            // Only general questions are for the model: the other categories are scored before
            // any generation (tool choice, memory hits), so a generation would only cost time.
            generator: (query.category == Category::General)
                .then(|| self.generator.clone())
                .flatten(),
            // Fresh breakers and health per query: one query's failures must not route the next.
            guard: Rc::new(LocalGuard {
                breakers: RefCell::new(CircuitBreaker::new(
                    self.clock.shared(),
                    BreakerConfig::default(),
                )),
                health: RefCell::new(WorkerHealthMonitor::new(
                    self.clock.shared(),
                    HealthConfig::default(),
                )),
            }),
            degraded: Vec::new(),
            debates: None,
            background: None,
        };
        let started = Instant::now();
        let answer = block_on(self.orchestrator.ask(&request, &resources, Rc::new(Quiet)));
        let wall_ms = started.elapsed().as_secs_f64() * 1000.0;
        self.reset()?;
        let facts_hit = match &answer {
            Ok(answer) => answer
                .provenance
                .memory_hits
                .iter()
                .filter_map(|hit| self.facts.get(&hit.id).cloned())
                .collect(),
            Err(_) => Vec::new(),
        };
        Ok(Outcome {
            answer: answer.map_err(|e| e.to_string()),
            wall_ms,
            facts_hit,
        })
    }

    /// Deletes what the last query added (tool results, remembered exchanges), so that every
    /// query is asked against the seeded facts alone and the set's order does not matter.
    fn reset(&self) -> Result<()> {
        let seeded: HashSet<&String> = self.facts.keys().collect();
        let mut after = None;
        loop {
            let page = block_on(self.memories.list(None, 1000, after))
                .map_err(|e| anyhow!("listing the memories: {e}"))?;
            for record in &page.items {
                if !seeded.contains(&record.id) {
                    block_on(self.memories.delete(&record.id))
                        .map_err(|e| anyhow!("deleting memory {}: {e}", record.id))?;
                }
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(()),
            }
        }
    }
}

/// Watches nothing and never cancels.
struct Quiet;

impl AskObserver for Quiet {
    fn stage(&self, _stage: Stage, _message: &str) {}

    fn token(&self, _agent: &str, _text: &str) {}

    fn cancelled(&self) -> bool {
        false
    }
}

/// Runs `future` on this thread. Everything the pipeline awaits here is ready when polled (the
/// in-memory store, the manual clock's waits, the generator's yield), so polling in a loop ends.
pub fn block_on<F: Future>(future: F) -> F::Output {
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(value) = future.as_mut().poll(&mut context) {
            return value;
        }
    }
}

/// A wall clock for the generator's own timings (prefill and decode speed).
pub struct Wall;

impl orion_core::Clock for Wall {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// The local LLM from its GGUF file, as stored.
pub fn local_generator(path: &std::path::Path) -> Result<Rc<dyn Generator>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let options = orion_llm::LoadOptions::default();
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("model.gguf");
    let model = orion_llm::LocalModel::load(&bytes, name, &options)
        .map_err(|e| anyhow!("loading {}: {e}", path.display()))?;
    Ok(Rc::new(orion_llm::LocalGenerator::new(
        model,
        &options,
        Rc::new(Wall),
        Box::new(|| -> LocalBoxFuture<'static, ()> { Box::pin(async {}) }),
    )))
}
