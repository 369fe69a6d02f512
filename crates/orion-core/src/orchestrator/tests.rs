//! The pipeline natively: the real tools, memories over `MemStore`, a words embedder, a scripted
//! generator, a manual clock.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use super::*;
use crate::circuit_breaker::{BreakerConfig, CircuitBreaker};
use crate::clock::ManualClock;
use crate::error::ErrorCode;
use crate::generation::Generated;
use crate::guard::LocalGuard;
use crate::health::{HealthConfig, WorkerHealthMonitor};
use crate::json_schema::JsonSchemas;
use crate::memory::MemoryConfig;
use crate::runtime::builtin_tools;
use crate::store::conformance::block_on;
use crate::store::MemStore;
use crate::testing::{AnswersInOrder, WordsEmbedder};
use crate::tools::ToolPolicy;

/// Answers each agent with a canned text; records every request.
/// A clock and each agent's time to answer, in ms.
type Timing = (ManualClock, fn(&str) -> u64);

#[derive(Default)]
struct Scripted {
    requests: RefCell<Vec<GenerateRequest>>,
    fail: bool,
    /// Moves this clock on by each agent's time as it answers.
    timing: RefCell<Option<Timing>>,
}

impl Scripted {
    fn reply(
        &self,
        request: &GenerateRequest,
        index: usize,
        sink: &dyn GenerationSink,
    ) -> Result<Generated> {
        self.requests.borrow_mut().push(request.clone());
        if self.fail {
            return Err(Error::Generation("the model broke".into()));
        }
        let agent = request.agent.clone().unwrap_or_default();
        if let Some((clock, ms)) = &*self.timing.borrow() {
            clock.advance(ms(&agent));
        }
        let text = format!("The {agent} answer: Paris is the capital of France.");
        let mut finish = FinishReason::EndOfTurn;
        let mut written = String::new();
        for word in text.split_inclusive(' ') {
            if sink.cancelled(index) {
                finish = FinishReason::Cancelled;
                break;
            }
            sink.text(index, word);
            written.push_str(word);
        }
        Ok(Generated {
            text: written,
            finish,
            prompt_tokens: 10,
            cached_tokens: 0,
            tokens: 9,
            prefill_ms: 1.0,
            decode_ms: 1.0,
        })
    }
}

impl AnswersInOrder for Scripted {
    fn answer<'a>(
        &'a self,
        request: &'a GenerateRequest,
        index: usize,
        sink: &'a dyn GenerationSink,
    ) -> LocalBoxFuture<'a, Result<Generated>> {
        Box::pin(async move { self.reply(request, index, sink) })
    }
}

/// Records stages and tokens; cancels on demand.
#[derive(Default)]
struct Watch {
    stages: RefCell<Vec<Stage>>,
    tokens: RefCell<Vec<(String, String)>>,
    cancel_at: Cell<Option<Stage>>,
}

impl AskObserver for Watch {
    fn stage(&self, stage: Stage, _message: &str) {
        self.stages.borrow_mut().push(stage);
    }

    fn token(&self, agent: &str, text: &str) {
        self.tokens.borrow_mut().push((agent.into(), text.into()));
    }

    fn cancelled(&self) -> bool {
        let stages = self.stages.borrow();
        self.cancel_at.get().is_some_and(|at| stages.contains(&at))
    }
}

struct Fixture {
    clock: ManualClock,
    orchestrator: Orchestrator,
    embedder: Rc<WordsEmbedder>,
    memories: Rc<Memories>,
    guard: Rc<LocalGuard>,
    generator: Rc<Scripted>,
    loads: Rc<Cell<u32>>,
}

fn fixture_with(generator: Scripted, breaker: BreakerConfig) -> Fixture {
    let clock = ManualClock::new(1_790_000_000_000);
    let sleeper = clock.clone();
    // The wait passes when it is polled, as a timer's would: a race that the other side won
    // never moves the clock.
    let sleep: crate::tasks::Sleep = Rc::new(move |ms| {
        let sleeper = sleeper.clone();
        Box::pin(async move { sleeper.advance(ms) })
    });
    let mut tools = ToolExecutionManager::new(ToolPolicy::default(), clock.shared(), sleep);
    for tool in builtin_tools() {
        tools.register(tool, &JsonSchemas).unwrap();
    }
    let embedder = Rc::new(WordsEmbedder::new("words/v1", 256));
    let memories = block_on(Memories::load(
        Rc::new(MemStore::new()),
        clock.shared(),
        MemoryConfig::for_profile(Profile::Full),
        embedder.info().clone(),
        7,
        &|_| {},
    ))
    .unwrap();
    let guard = Rc::new(LocalGuard {
        breakers: RefCell::new(CircuitBreaker::new(clock.shared(), breaker)),
        health: RefCell::new(WorkerHealthMonitor::new(
            clock.shared(),
            HealthConfig::default(),
        )),
    });
    Fixture {
        orchestrator: Orchestrator::new(tools, OrchestratorSettings::default(), clock.shared(), 1),
        clock,
        embedder,
        memories: Rc::new(memories),
        guard,
        generator: Rc::new(generator),
        loads: Rc::new(Cell::new(0)),
    }
}

fn fixture() -> Fixture {
    fixture_with(Scripted::default(), BreakerConfig::default())
}

impl Fixture {
    fn resources(&self, profile: Profile) -> Resources {
        let generator: Rc<dyn Generator> = self.generator.clone();
        let loads = Rc::clone(&self.loads);
        Resources {
            profile,
            embedder: self.embedder.clone(),
            memories: Some(Rc::clone(&self.memories)),
            generator: Some(Rc::new(move || {
                loads.set(loads.get() + 1);
                let generator = Rc::clone(&generator);
                Box::pin(async move { Ok(generator) })
            })),
            guard: self.guard.clone(),
            degraded: Vec::new(),
            debates: None,
            background: None,
        }
    }

    fn ask_with(
        &self,
        query: &str,
        resources: &Resources,
        watch: &Rc<Watch>,
        conversation: Option<&str>,
    ) -> Result<AskResponse> {
        let request = AskRequest {
            query: query.into(),
            conversation_id: conversation.map(str::to_owned),
            time_zone: None,
        };
        block_on(self.orchestrator.ask(&request, resources, watch.clone()))
    }

    fn ask(&self, query: &str, profile: Profile) -> (Result<AskResponse>, Rc<Watch>) {
        let watch = Rc::new(Watch::default());
        let answer = self.ask_with(query, &self.resources(profile), &watch, None);
        (answer, watch)
    }

    fn remember(&self, text: &str) {
        block_on(self.memories.add(
            self.embedder.as_ref(),
            NewMemory {
                text: text.into(),
                kind: Some("fact".into()),
                meta: None,
            },
        ))
        .unwrap();
    }

    fn kinds(&self) -> Vec<String> {
        let page = block_on(self.memories.list(None, 100, None)).unwrap();
        page.items
            .iter()
            .map(|m| m.kind.name().to_owned())
            .collect()
    }
}

#[test]
fn a_tool_question_is_answered_exactly_without_the_model() {
    let f = fixture();
    let (answer, watch) = f.ask("What is 12 * 7?", Profile::Full);
    let answer = answer.unwrap();
    assert!(answer.response.contains("84"), "{}", answer.response);
    assert_eq!(answer.confidence, 1.0);
    assert_eq!(answer.provenance.tool_used.as_deref(), Some("calculator"));
    assert_eq!(answer.debug.route, "tool");
    assert!(!answer.debug.quality.low);
    assert_eq!(*watch.stages.borrow(), [Stage::ToolSearch]);
    assert_eq!(f.loads.get(), 0, "a tool answer must not load the model");
    // handleToolSuccess keeps the result as a tool_result memory.
    assert_eq!(f.kinds(), ["tool_result"]);
}

#[test]
fn micro_answers_memory_questions_from_its_templates() {
    let f = fixture();
    f.remember("My dog is called Rex and he is a beagle");
    f.remember("The office wifi password is on the fridge");
    let (answer, watch) = f.ask("What is my dog called?", Profile::Micro);
    let answer = answer.unwrap();
    assert_eq!(answer.debug.route, "fallback");
    assert!(answer.response.contains("Rex"), "{}", answer.response);
    assert_eq!(
        answer
            .provenance
            .memory_hits
            .first()
            .map(|h| h.text.as_str()),
        Some("My dog is called Rex and he is a beagle")
    );
    assert_eq!(
        *watch.stages.borrow(),
        [Stage::ToolSearch, Stage::MemorySearch]
    );
    assert_eq!(f.loads.get(), 0);
    assert!(f.generator.requests.borrow().is_empty());
}

#[test]
fn full_runs_the_debate_in_order_and_streams_each_agent() {
    let f = fixture();
    f.remember("My trip next spring is to the capital of France");
    let (answer, watch) = f.ask("What is the capital of France?", Profile::Full);
    let answer = answer.unwrap();
    assert_eq!(answer.debug.route, "debate");
    assert_eq!(
        *watch.stages.borrow(),
        [
            Stage::ToolSearch,
            Stage::MemorySearch,
            Stage::MultiAgentParallel,
            Stage::MultiAgentCritical,
            Stage::MultiAgentSynthesis
        ]
    );
    let agents: Vec<String> = f
        .generator
        .requests
        .borrow()
        .iter()
        .filter_map(|r| r.agent.clone())
        .collect();
    assert_eq!(agents, ["logical", "creative", "critical", "synthesizer"]);
    let temperatures: Vec<f32> = f
        .generator
        .requests
        .borrow()
        .iter()
        .map(|r| r.temperature)
        .collect();
    assert_eq!(temperatures, [0.3, 0.9, 0.5, 0.7]);
    // The relevant memory went into the agents' prompts.
    let logical = f.generator.requests.borrow()[0].clone();
    assert!(logical
        .system
        .unwrap_or_default()
        .contains("My trip next spring"));
    assert!(
        answer.response.starts_with("The synthesizer answer"),
        "{}",
        answer.response
    );
    assert!(answer
        .provenance
        .from_agents
        .contains(&"synthesizer".to_owned()));
    let streamed: std::collections::BTreeSet<String> = watch
        .tokens
        .borrow()
        .iter()
        .map(|(agent, _)| agent.clone())
        .collect();
    assert_eq!(streamed.len(), 4, "{streamed:?}");
    let steps: Vec<&str> = answer
        .reasoning_steps
        .iter()
        .map(|s| s.stage.as_str())
        .collect();
    assert!(steps.contains(&"multi_agent_synthesis"), "{steps:?}");
    // Agreement was measured across the agents.
    assert!(answer
        .debug
        .quality
        .signals
        .iter()
        .any(|s| s.name == "agreement"));
    // The exchange is remembered.
    assert!(f.kinds().contains(&"conversation".to_owned()));
}

#[test]
fn each_debate_step_lasts_from_its_stage_to_the_next() {
    let f = fixture();
    f.generator
        .timing
        .replace(Some((f.clock.clone(), |agent| match agent {
            "logical" => 100,
            "creative" => 200,
            "critical" => 400,
            _ => 800,
        })));
    let (answer, _) = f.ask("What is the capital of France?", Profile::Full);
    let durations: Vec<(String, f64)> = answer
        .unwrap()
        .reasoning_steps
        .into_iter()
        .filter(|s| s.stage.starts_with("multi_agent"))
        .map(|s| (s.stage, s.duration_ms))
        .collect();
    assert_eq!(
        durations,
        [
            ("multi_agent_parallel".to_owned(), 300.0),
            ("multi_agent_critical".to_owned(), 400.0),
            ("multi_agent_synthesis".to_owned(), 800.0),
        ]
    );
}

#[test]
fn lite_debates_only_long_questions() {
    let f = fixture();
    let (short, _) = f.ask("What is the capital of France?", Profile::Lite);
    assert_eq!(short.unwrap().debug.route, "single");
    let long = "Could you explain in some detail why Paris became the capital city of France and not Lyon?";
    let (answer, _) = f.ask(long, Profile::Lite);
    assert_eq!(answer.unwrap().debug.route, "debate");
}

#[test]
fn without_a_model_the_answer_comes_from_memory_and_says_so() {
    let f = fixture();
    f.remember("The capital of France is Paris");
    let mut resources = f.resources(Profile::Full);
    resources.generator = Some(Rc::new(|| {
        Box::pin(async { Err(Error::model_load("smollm.gguf", "404")) })
    }));
    let watch = Rc::new(Watch::default());
    let answer = f
        .ask_with("What is the capital of France?", &resources, &watch, None)
        .unwrap();
    assert_eq!(answer.debug.route, "fallback");
    assert!(answer.provenance.degraded.contains(&"generator".to_owned()));
    assert!(
        answer.debug.notes.iter().any(|n| n.contains("404")),
        "{:?}",
        answer.debug.notes
    );
    assert!(answer.response.contains("Paris"));
}

#[test]
fn an_unhealthy_generator_is_routed_around_without_loading() {
    let f = fixture();
    for _ in 0..3 {
        f.guard
            .health
            .borrow_mut()
            .record_failure("generator", "the model broke");
    }
    let (answer, _) = f.ask("What is the capital of France?", Profile::Full);
    let answer = answer.unwrap();
    assert_eq!(answer.debug.route, "fallback");
    assert!(answer.provenance.degraded.contains(&"generator".to_owned()));
    assert_eq!(f.loads.get(), 0);
}

#[test]
fn a_failing_model_degrades_the_debate_to_a_fallback() {
    let f = fixture_with(
        Scripted {
            fail: true,
            ..Scripted::default()
        },
        BreakerConfig::default(),
    );
    let (answer, _) = f.ask("What is the capital of France?", Profile::Full);
    let answer = answer.unwrap();
    assert_eq!(answer.debug.route, "fallback");
    assert!(answer.provenance.degraded.contains(&"generator".to_owned()));
}

#[test]
fn cancelling_stops_the_request() {
    let f = fixture();
    let watch = Rc::new(Watch::default());
    watch.cancel_at.set(Some(Stage::MultiAgentParallel));
    let error = f
        .ask_with(
            "What is the capital of France?",
            &f.resources(Profile::Full),
            &watch,
            None,
        )
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::Cancelled);
    assert!(!watch.stages.borrow().contains(&Stage::MultiAgentCritical));
    let watch = Rc::new(Watch::default());
    watch.cancel_at.set(Some(Stage::ToolSearch));
    let error = f
        .ask_with("What is 2 + 2?", &f.resources(Profile::Full), &watch, None)
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::Cancelled);
}

#[test]
fn an_open_query_breaker_refuses_at_once() {
    let f = fixture_with(
        Scripted::default(),
        BreakerConfig {
            failure_threshold: 1,
            ..BreakerConfig::default()
        },
    );
    let permit = f.guard.admit(QUERY_BREAKER).unwrap();
    f.guard.breakers.borrow_mut().record_failure(permit);
    let (answer, watch) = f.ask("What is 2 + 2?", Profile::Full);
    assert_eq!(answer.unwrap_err().code(), ErrorCode::CircuitOpen);
    assert!(watch.stages.borrow().is_empty());
    f.clock.advance(BreakerConfig::default().open_timeout_ms);
    assert!(f.ask("What is 2 + 2?", Profile::Full).0.is_ok());
}

#[test]
fn bad_requests_are_refused_before_anything_runs() {
    let f = fixture();
    for (query, zone, field) in [
        ("   ", None, "query"),
        ("What time is it?", Some("Mars/Olympus"), "timeZone"),
    ] {
        let request = AskRequest {
            query: query.into(),
            conversation_id: None,
            time_zone: zone.map(str::to_owned),
        };
        let watch = Rc::new(Watch::default());
        let error = block_on(f.orchestrator.ask(
            &request,
            &f.resources(Profile::Full),
            watch.clone(),
        ))
        .unwrap_err();
        assert!(
            matches!(&error, Error::InvalidInput { field: got, .. } if got == field),
            "{error:?}"
        );
        assert!(watch.stages.borrow().is_empty());
    }
    let huge = "x".repeat(MAX_QUERY_BYTES + 1);
    assert_eq!(
        f.ask(&huge, Profile::Full).0.unwrap_err().code(),
        ErrorCode::InvalidInput
    );
    assert!(f.kinds().is_empty());
}

#[test]
fn a_conversation_carries_its_history_into_the_next_generation() {
    let f = fixture();
    let resources = f.resources(Profile::Lite);
    let watch = Rc::new(Watch::default());
    f.ask_with(
        "What is the capital of France?",
        &resources,
        &watch,
        Some("c1"),
    )
    .unwrap();
    f.ask_with("And what about Italy?", &resources, &watch, Some("c1"))
        .unwrap();
    let requests = f.generator.requests.borrow();
    let last = requests.last().unwrap();
    assert_eq!(last.conversation_id.as_deref(), Some("c1"));
    let history: Vec<&str> = last.history.iter().map(|t| t.content.as_str()).collect();
    assert_eq!(history.first(), Some(&"What is the capital of France?"));
    assert_eq!(history.len(), 2);
}

#[test]
fn without_a_store_the_pipeline_still_answers() {
    let f = fixture();
    let mut resources = f.resources(Profile::Full);
    resources.memories = None;
    let watch = Rc::new(Watch::default());
    let answer = f
        .ask_with("What is the capital of France?", &resources, &watch, None)
        .unwrap();
    assert_eq!(answer.debug.route, "debate");
    assert!(answer.provenance.degraded.contains(&"store".to_owned()));
    let tool = f
        .ask_with("What is 6 * 7?", &resources, &watch, None)
        .unwrap();
    assert!(tool.response.contains("42"));
}
