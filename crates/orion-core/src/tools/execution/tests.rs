use std::cell::Cell;

use chrono_tz::Tz;
use futures_executor::block_on;
use serde_json::json;

use super::*;
use crate::circuit_breaker::{BreakerConfig, BreakerState, CircuitBreaker};
use crate::clock::{Clock, ManualClock};
use crate::embedding::LocalBoxFuture;
use crate::error::ErrorCode;
use crate::guard::LocalGuard;
use crate::health::{HealthConfig, HealthStatus, WorkerHealthMonitor};
use crate::json_schema::JsonSchemas;
use crate::testing::{tool_context, WordsEmbedder};

/// The words embedder of these tests: 64 dimensions.
fn words(version: &str) -> WordsEmbedder {
    WordsEmbedder::new(version, 64)
}

/// What a test tool's rules return as arguments.
#[derive(Clone, Copy)]
enum Args {
    /// `{"text": query}`, valid for [`schema`].
    Valid,
    /// `{"text": 42}`, which [`schema`] refuses.
    Invalid,
    /// None: the query does not carry them.
    Missing,
}

/// What a test tool does when run.
#[derive(Clone, Copy)]
enum Behaviour {
    Succeed,
    /// Fails with `Error::Tool` this many times, then succeeds.
    FailTimes(u32),
    /// Never finishes.
    Hang,
    /// Fails with `Error::InvalidInput`.
    InvalidInput,
    /// Fails with a non-retryable `Error::Tool`.
    FailFatal,
}

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
        "additionalProperties": false
    })
}

struct TestTool {
    spec: ToolSpec,
    /// The intent rule claims queries containing this word.
    claims: Option<&'static str>,
    args: Args,
    behaviour: Behaviour,
    calls: Cell<u32>,
}

impl TestTool {
    fn new(name: &str, description: &str, examples: &[&str]) -> Self {
        Self {
            spec: ToolSpec {
                name: name.into(),
                description: description.into(),
                examples: examples.iter().map(|e| (*e).to_owned()).collect(),
                parameters: schema(),
            },
            claims: None,
            args: Args::Valid,
            behaviour: Behaviour::Succeed,
            calls: Cell::new(0),
        }
    }

    fn named(name: &str) -> Self {
        Self::new(name, &format!("The {name} tool"), &[])
    }

    fn claims(mut self, word: &'static str) -> Self {
        self.claims = Some(word);
        self
    }

    fn args(mut self, args: Args) -> Self {
        self.args = args;
        self
    }

    fn behaves(mut self, behaviour: Behaviour) -> Self {
        self.behaviour = behaviour;
        self
    }

    fn read(&self, query: &str) -> Option<Value> {
        match self.args {
            Args::Valid => Some(json!({ "text": query })),
            Args::Invalid => Some(json!({ "text": 42 })),
            Args::Missing => None,
        }
    }
}

impl Tool for TestTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn intent(&self, query: &str) -> Option<Value> {
        let word = self.claims?;
        query
            .to_lowercase()
            .split(|c: char| !c.is_alphanumeric())
            .any(|w| w == word)
            .then(|| self.read(query))
            .flatten()
    }

    fn arguments(&self, query: &str) -> Option<Value> {
        self.read(query)
    }

    fn run<'a>(
        &'a self,
        arguments: &'a Value,
        _context: &'a ToolContext,
    ) -> LocalBoxFuture<'a, Result<ToolOutput>> {
        Box::pin(async move {
            self.calls.set(self.calls.get() + 1);
            let name = self.spec.name.clone();
            match self.behaviour {
                Behaviour::FailTimes(n) if self.calls.get() <= n => Err(Error::Tool {
                    tool: name,
                    reason: "flaky".into(),
                    retryable: true,
                }),
                Behaviour::FailFatal => Err(Error::Tool {
                    tool: name,
                    reason: "would fail again".into(),
                    retryable: false,
                }),
                Behaviour::Hang => futures_util::future::pending().await,
                Behaviour::InvalidInput => Err(Error::invalid_input("text", "is not a number")),
                Behaviour::Succeed | Behaviour::FailTimes(_) => Ok(ToolOutput {
                    text: format!("{name} ran"),
                    value: arguments.clone(),
                }),
            }
        })
    }
}

struct Harness {
    clock: ManualClock,
    /// Every sleep requested, in ms.
    sleeps: Rc<RefCell<Vec<u64>>>,
    manager: ToolExecutionManager,
    guard: LocalGuard,
    embedder: Rc<WordsEmbedder>,
}

fn policy() -> ToolPolicy {
    ToolPolicy {
        timeout_ms: 250,
        attempts: 3,
        backoff_ms: 100,
        min_similarity: 0.6,
    }
}

fn harness() -> Harness {
    harness_with(policy(), BreakerConfig::default())
}

fn harness_with(policy: ToolPolicy, breaker: BreakerConfig) -> Harness {
    let clock = ManualClock::new(1_000_000);
    let sleeps = Rc::new(RefCell::new(Vec::new()));
    // Resolves at once, having moved the clock by the time asked: a hanging tool loses its race
    // against the timeout deterministically.
    let sleep: Sleep = {
        let clock = clock.clone();
        let sleeps = Rc::clone(&sleeps);
        Rc::new(move |ms| {
            let clock = clock.clone();
            let sleeps = Rc::clone(&sleeps);
            Box::pin(async move {
                sleeps.borrow_mut().push(ms);
                clock.advance(ms);
            })
        })
    };
    let guard = LocalGuard {
        breakers: RefCell::new(CircuitBreaker::new(clock.shared(), breaker)),
        health: RefCell::new(WorkerHealthMonitor::new(
            clock.shared(),
            HealthConfig::default(),
        )),
    };
    Harness {
        manager: ToolExecutionManager::new(policy, clock.shared(), sleep),
        clock,
        sleeps,
        guard,
        embedder: Rc::new(words("words/v1")),
    }
}

/// Breakers that open after `failures` failures in a row.
fn opens_after(failures: u32) -> BreakerConfig {
    BreakerConfig {
        failure_threshold: failures,
        ..BreakerConfig::default()
    }
}

impl Harness {
    /// A tool named `name` that claims the queries with the word `name` and behaves so.
    fn register_claiming(&mut self, name: &'static str, behaviour: Behaviour) -> Rc<TestTool> {
        self.register(TestTool::named(name).claims(name).behaves(behaviour))
    }

    fn register(&mut self, tool: TestTool) -> Rc<TestTool> {
        let tool = Rc::new(tool);
        self.manager
            .register(Rc::clone(&tool) as Rc<dyn Tool>, &JsonSchemas)
            .unwrap();
        tool
    }

    fn choose_with(&self, query: &str, embedder: &WordsEmbedder) -> Option<Chosen> {
        let vector = embedder.vector(query);
        block_on(self.manager.choose(query, &vector, embedder)).unwrap()
    }

    fn choose(&self, query: &str) -> Option<Chosen> {
        self.choose_with(query, &self.embedder)
    }

    fn context(&self) -> ToolContext {
        ToolContext {
            embedder: Rc::clone(&self.embedder) as Rc<dyn Embedder>,
            ..tool_context(self.clock.now_ms(), Tz::UTC)
        }
    }

    fn execute(&self, chosen: &Chosen) -> Result<ToolRun> {
        block_on(self.manager.execute(chosen, &self.context(), &self.guard))
    }

    /// `query` chosen (it must be) and executed.
    fn run(&self, query: &str) -> Result<ToolRun> {
        let chosen = self.choose(query).expect("a tool is chosen");
        self.execute(&chosen)
    }

    fn sleeps(&self) -> Vec<u64> {
        self.sleeps.borrow().clone()
    }

    fn breaker(&self, tool: &str) -> BreakerState {
        self.guard
            .breakers
            .borrow()
            .state(&format!("{TOOL_BREAKER_PREFIX}{tool}"))
    }

    fn health(&self) -> HealthStatus {
        self.guard.health.borrow_mut().status(TOOLS_COMPONENT)
    }
}

fn invalid_field(error: Error) -> String {
    match error {
        Error::InvalidInput { field, .. } => field,
        other => panic!("expected ERR_INVALID_INPUT, got {other:?}"),
    }
}

fn similarity(a: &str, b: &str) -> f32 {
    let embedder = words("words/v1");
    cosine(&embedder.vector(a), &embedder.vector(b))
}

// --- register and specs -------------------------------------------------------------------

#[test]
fn register_rejects_a_duplicate_name_and_keeps_the_first() {
    let mut h = harness();
    h.register(TestTool::new("echo", "first", &[]));
    let error = h
        .manager
        .register(Rc::new(TestTool::new("echo", "second", &[])), &JsonSchemas)
        .unwrap_err();
    assert_eq!(invalid_field(error), "tools[echo].name");
    let specs = h.manager.specs();
    assert_eq!(specs.len(), 1);
    assert_eq!(specs[0].description, "first");
}

#[test]
fn register_rejects_a_schema_that_does_not_compile() {
    let mut h = harness();
    let mut tool = TestTool::named("broken");
    tool.spec.parameters = json!({"type": "nonsense"});
    let error = h.manager.register(Rc::new(tool), &JsonSchemas).unwrap_err();
    assert_eq!(error.code(), ErrorCode::InvalidInput);
    assert_eq!(invalid_field(error), "tools[broken].parameters");
    assert!(h.manager.specs().is_empty());
    // The name is still free.
    h.register(TestTool::named("broken"));
    assert_eq!(h.manager.specs().len(), 1);
}

#[test]
fn register_rejects_empty_blank_and_overlong_names() {
    let mut h = harness();
    for name in [String::new(), "   ".to_owned(), "x".repeat(65)] {
        let error = h
            .manager
            .register(Rc::new(TestTool::named(&name)), &JsonSchemas)
            .unwrap_err();
        assert_eq!(invalid_field(error), "tools[].name", "{name:?}");
    }
    assert!(h.manager.specs().is_empty());
    h.register(TestTool::named(&"x".repeat(64)));
    assert_eq!(h.manager.specs().len(), 1);
}

#[test]
fn register_holds_at_most_max_tools() {
    let mut h = harness();
    for i in 0..MAX_TOOLS {
        h.register(TestTool::named(&format!("tool{i}")));
    }
    let error = h
        .manager
        .register(Rc::new(TestTool::named("one_too_many")), &JsonSchemas)
        .unwrap_err();
    assert_eq!(invalid_field(error), "tools");
    let specs = h.manager.specs();
    assert_eq!(specs.len(), MAX_TOOLS);
    assert!(specs.iter().all(|s| s.name != "one_too_many"));
}

#[test]
fn specs_are_in_registration_order() {
    let mut h = harness();
    assert!(h.manager.specs().is_empty());
    for name in ["zeta", "alpha", "mid"] {
        h.register(TestTool::new(
            name,
            &format!("{name} does"),
            &["an example"],
        ));
    }
    let specs = h.manager.specs();
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["zeta", "alpha", "mid"]);
    assert_eq!(specs[1].description, "alpha does");
    assert_eq!(specs[1].examples, ["an example"]);
    assert_eq!(specs[1].parameters, schema());
}

// --- choice by intent ---------------------------------------------------------------------

#[test]
fn intent_chooses_the_first_registered_tool_that_claims_the_query() {
    let mut h = harness();
    h.register(TestTool::named("calc").claims("calculate"));
    h.register(TestTool::named("weather").claims("weather"));
    h.register(TestTool::named("weather_too").claims("weather"));

    let chosen = h.choose("What is the weather in Paris?").unwrap();
    assert_eq!(chosen.name(), "weather");
    assert_eq!(chosen.choice, Choice::Intent);
    assert_eq!(
        chosen.arguments,
        json!({"text": "What is the weather in Paris?"})
    );

    let chosen = h.choose("calculate 12 * 7").unwrap();
    assert_eq!(chosen.name(), "calc");
    assert_eq!(chosen.choice, Choice::Intent);

    assert!(h.choose("tell me a story").is_none());
}

#[test]
fn intent_arguments_that_fail_the_schema_are_not_chosen() {
    let mut h = harness();
    // Its description is the query itself: not even similarity may pick it with bad arguments.
    h.register(
        TestTool::new("bad", "calculate the sum", &[])
            .claims("calculate")
            .args(Args::Invalid),
    );
    assert!(h.choose("calculate the sum").is_none());

    h.register(TestTool::named("good").claims("calculate"));
    let chosen = h.choose("calculate the sum").unwrap();
    assert_eq!(chosen.name(), "good");
    assert_eq!(chosen.choice, Choice::Intent);
}

#[test]
fn intent_beats_a_more_similar_tool() {
    let mut h = harness();
    h.register(TestTool::new(
        "similar",
        "convert celsius to fahrenheit",
        &[],
    ));
    h.register(TestTool::new("claimer", "unrelated words entirely", &[]).claims("celsius"));
    let chosen = h.choose("convert celsius to fahrenheit").unwrap();
    assert_eq!(chosen.name(), "claimer");
    assert_eq!(chosen.choice, Choice::Intent);
}

// --- choice by similarity -----------------------------------------------------------------

#[test]
fn similarity_chooses_the_most_similar_tool_above_the_threshold() {
    let mut h = harness();
    h.register(TestTool::new(
        "weather",
        "Weather forecast for a city",
        &["will it rain in London tomorrow"],
    ));
    h.register(TestTool::new(
        "temperature",
        "Convert temperatures between celsius and fahrenheit",
        &["how many fahrenheit is 20 celsius"],
    ));
    h.register(TestTool::new("jokes", "Tell a joke", &[]));

    let query = "how many fahrenheit is 25 celsius";
    let expected = similarity(query, "how many fahrenheit is 20 celsius").max(similarity(
        query,
        "Convert temperatures between celsius and fahrenheit",
    ));
    assert!(expected >= 0.6, "{expected}");

    let chosen = h.choose(query).unwrap();
    assert_eq!(chosen.name(), "temperature");
    assert_eq!(chosen.arguments, json!({ "text": query }));
    let Choice::Similarity { similarity: got } = chosen.choice else {
        panic!("chosen by {:?}", chosen.choice);
    };
    assert!((got - expected).abs() < 1e-6, "{got} vs {expected}");

    // An example counts as much as the description.
    let chosen = h.choose("will it rain in London tomorrow?").unwrap();
    assert_eq!(chosen.name(), "weather");
    assert!(matches!(chosen.choice, Choice::Similarity { similarity } if similarity > 0.99));
}

#[test]
fn nothing_is_chosen_below_the_threshold() {
    let mut h = harness();
    h.register(TestTool::new(
        "temperature",
        "Convert temperatures between celsius and fahrenheit",
        &[],
    ));
    let query = "who painted the mona lisa";
    assert!(similarity(query, "Convert temperatures between celsius and fahrenheit") < 0.6);
    assert!(h.choose(query).is_none());
}

#[test]
fn the_threshold_is_inclusive() {
    let description = "Convert temperatures between celsius and fahrenheit";
    let query = "convert celsius please";
    let s = similarity(query, description);
    assert!(s > 0.0 && s < 1.0, "{s}");

    for (min_similarity, chosen) in [(s, true), (s + 0.001, false), (s - 0.001, true)] {
        let mut h = harness_with(
            ToolPolicy {
                min_similarity,
                ..policy()
            },
            BreakerConfig::default(),
        );
        h.register(TestTool::new("temperature", description, &[]));
        assert_eq!(h.choose(query).is_some(), chosen, "min {min_similarity}");
    }
}

#[test]
fn a_tool_without_arguments_for_the_query_gives_way_to_the_next_best() {
    let mut h = harness();
    let description = "convert celsius to fahrenheit now";
    let query = "convert celsius to fahrenheit";
    h.register(TestTool::new("best_silent", description, &[]).args(Args::Missing));
    h.register(TestTool::new("best_invalid", description, &[]).args(Args::Invalid));
    h.register(TestTool::new(
        "second",
        "convert celsius to fahrenheit degrees please",
        &[],
    ));
    let best = similarity(query, description);
    let second = similarity(query, "convert celsius to fahrenheit degrees please");
    assert!(best > second && second >= 0.6, "{best} {second}");

    let chosen = h.choose(query).unwrap();
    assert_eq!(chosen.name(), "second");
    let Choice::Similarity { similarity } = chosen.choice else {
        panic!("chosen by {:?}", chosen.choice);
    };
    assert!((similarity - second).abs() < 1e-6);
}

#[test]
fn no_next_best_above_the_threshold_means_no_tool() {
    let mut h = harness();
    h.register(TestTool::new("silent", "convert celsius to fahrenheit", &[]).args(Args::Missing));
    h.register(TestTool::new("far", "tell a joke about cats", &[]));
    assert!(h.choose("convert celsius to fahrenheit").is_none());
}

#[test]
fn tool_texts_are_embedded_once_per_embedder_version_and_registration() {
    let mut h = harness();
    h.register(TestTool::new(
        "temperature",
        "convert celsius",
        &["20 celsius"],
    ));
    h.choose("convert celsius");
    h.choose("something else");
    assert_eq!(h.embedder.times_embedded("convert celsius"), 1);
    assert_eq!(h.embedder.times_embedded("20 celsius"), 1);

    // A new tool is compared too (the cache is rebuilt).
    h.register(TestTool::new("weather", "weather forecast", &[]));
    assert_eq!(h.choose("weather forecast").unwrap().name(), "weather");
    assert_eq!(h.embedder.times_embedded("convert celsius"), 2);
    assert_eq!(h.embedder.times_embedded("weather forecast"), 1);

    // Another embedder version re-embeds.
    let other = words("words/v2");
    assert_eq!(
        h.choose_with("convert celsius", &other).unwrap().name(),
        "temperature"
    );
    assert_eq!(other.times_embedded("convert celsius"), 1);
    assert_eq!(other.times_embedded("weather forecast"), 1);
}

#[test]
fn choices_serialise_with_their_kind() {
    assert_eq!(
        serde_json::to_value(Choice::Intent).unwrap(),
        json!({"by": "intent"})
    );
    assert_eq!(
        serde_json::to_value(Choice::Similarity { similarity: 0.75 }).unwrap(),
        json!({"by": "similarity", "similarity": 0.75})
    );
}

// --- execute ------------------------------------------------------------------------------

#[test]
fn a_successful_call_takes_one_attempt() {
    let mut h = harness();
    let tool = h.register(TestTool::named("echo").claims("echo"));
    let run = h.run("echo hello").unwrap();
    assert_eq!(
        run,
        ToolRun {
            tool: "echo".into(),
            arguments: json!({"text": "echo hello"}),
            output: ToolOutput {
                text: "echo ran".into(),
                value: json!({"text": "echo hello"}),
            },
            attempts: 1,
            choice: Choice::Intent,
        }
    );
    assert_eq!(tool.calls.get(), 1);
    assert!(h.sleeps().is_empty());
    assert_eq!(h.breaker("echo"), BreakerState::Closed);
    assert_eq!(h.health(), HealthStatus::Healthy);
    assert_eq!(
        serde_json::to_value(&run).unwrap()["choice"],
        json!({"by": "intent"})
    );
}

#[test]
fn failures_are_retried_with_exponential_backoff() {
    let mut h = harness();
    let tool = h.register_claiming("flaky", Behaviour::FailTimes(2));
    let start = h.clock.now_ms();
    let run = h.run("flaky call").unwrap();
    assert_eq!(run.attempts, 3);
    assert_eq!(run.output.text, "flaky ran");
    assert_eq!(tool.calls.get(), 3);
    assert_eq!(h.sleeps(), [100, 200]);
    assert_eq!(h.clock.now_ms() - start, 300);
    // The success closes the streak: the circuit stays closed.
    assert_eq!(h.breaker("flaky"), BreakerState::Closed);
}

#[test]
fn the_last_failure_is_returned_after_every_attempt() {
    let mut h = harness();
    let tool = h.register_claiming("broken", Behaviour::FailTimes(u32::MAX));
    let error = h.run("broken call").unwrap_err();
    assert!(
        matches!(&error, Error::Tool { tool, reason, .. } if tool == "broken" && reason == "flaky"),
        "{error:?}"
    );
    assert_eq!(tool.calls.get(), 3);
    // No wait after the last attempt.
    assert_eq!(h.sleeps(), [100, 200]);
}

#[test]
fn one_attempt_means_no_retry() {
    let mut h = harness_with(
        ToolPolicy {
            attempts: 1,
            ..policy()
        },
        BreakerConfig::default(),
    );
    let tool = h.register_claiming("flaky", Behaviour::FailTimes(1));
    assert_eq!(h.run("flaky").unwrap_err().code(), ErrorCode::Tool);
    assert_eq!(tool.calls.get(), 1);
    assert!(h.sleeps().is_empty());
}

#[test]
fn invalid_input_is_not_retried_and_does_not_count_against_the_tool() {
    let mut h = harness_with(policy(), opens_after(2));
    let tool = h.register_claiming("picky", Behaviour::InvalidInput);
    let error = h.run("picky call").unwrap_err();
    assert_eq!(invalid_field(error), "text");
    assert_eq!(tool.calls.get(), 1);
    assert!(h.sleeps().is_empty());

    for _ in 0..5 {
        assert_eq!(
            h.run("picky call").unwrap_err().code(),
            ErrorCode::InvalidInput
        );
    }
    assert_eq!(tool.calls.get(), 6);
    assert_eq!(h.breaker("picky"), BreakerState::Closed);
    assert_eq!(h.health(), HealthStatus::Healthy);
    assert!(!h.guard.unhealthy(TOOLS_COMPONENT));
}

#[test]
fn a_failure_the_tool_marks_non_retryable_is_not_retried_but_counts() {
    let mut h = harness();
    let tool = h.register_claiming("fatal", Behaviour::FailFatal);
    let error = h.run("fatal call").unwrap_err();
    assert!(
        matches!(
            &error,
            Error::Tool {
                retryable: false,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(tool.calls.get(), 1);
    assert!(h.sleeps().is_empty());
    let failures = h
        .guard
        .health
        .borrow_mut()
        .report()
        .components
        .iter()
        .find(|c| c.name == TOOLS_COMPONENT)
        .map(|c| c.total_failures);
    assert_eq!(failures, Some(1));
}

#[test]
fn a_hanging_tool_times_out_once_without_retry() {
    let mut h = harness();
    let tool = h.register_claiming("slow", Behaviour::Hang);
    let start = h.clock.now_ms();
    let error = h.run("slow call").unwrap_err();
    assert_eq!(error.code(), ErrorCode::Timeout);
    assert_eq!(
        error,
        Error::Timeout {
            operation: "tool:slow".into(),
            ms: 250,
        }
    );
    assert_eq!(tool.calls.get(), 1);
    // Only the time limit was waited for: no backoff, no second attempt.
    assert_eq!(h.sleeps(), [250]);
    assert_eq!(h.clock.now_ms() - start, 250);
}

#[test]
fn the_circuit_opens_after_the_threshold_and_then_fails_fast() {
    let mut h = harness_with(
        ToolPolicy {
            attempts: 1,
            ..policy()
        },
        opens_after(2),
    );
    let broken = h.register_claiming("broken", Behaviour::FailTimes(u32::MAX));
    let healthy = h.register(TestTool::named("fine").claims("fine"));

    assert_eq!(h.run("broken").unwrap_err().code(), ErrorCode::Tool);
    assert_eq!(h.breaker("broken"), BreakerState::Closed);
    assert_eq!(h.run("broken").unwrap_err().code(), ErrorCode::Tool);
    assert_eq!(h.breaker("broken"), BreakerState::Open);
    assert_eq!(broken.calls.get(), 2);

    let error = h.run("broken").unwrap_err();
    assert_eq!(error.code(), ErrorCode::CircuitOpen);
    assert!(
        matches!(&error, Error::CircuitOpen { key, .. } if key == "tool:broken"),
        "{error:?}"
    );
    assert_eq!(
        broken.calls.get(),
        2,
        "an open circuit does not call the tool"
    );

    // Each tool has its own circuit.
    assert_eq!(h.run("fine").unwrap().attempts, 1);
    assert_eq!(healthy.calls.get(), 1);
    assert_eq!(h.breaker("fine"), BreakerState::Closed);
}

#[test]
fn a_circuit_that_opens_during_retries_stops_them() {
    let mut h = harness_with(policy(), opens_after(2));
    let tool = h.register_claiming("broken", Behaviour::FailTimes(u32::MAX));
    let error = h.run("broken").unwrap_err();
    assert_eq!(error.code(), ErrorCode::CircuitOpen);
    assert_eq!(tool.calls.get(), 2);
    assert_eq!(h.breaker("broken"), BreakerState::Open);
}

#[test]
fn timeouts_count_against_the_circuit() {
    let mut h = harness_with(policy(), opens_after(2));
    let tool = h.register_claiming("slow", Behaviour::Hang);
    assert_eq!(h.run("slow").unwrap_err().code(), ErrorCode::Timeout);
    assert_eq!(h.run("slow").unwrap_err().code(), ErrorCode::Timeout);
    assert_eq!(h.breaker("slow"), BreakerState::Open);
    assert_eq!(h.run("slow").unwrap_err().code(), ErrorCode::CircuitOpen);
    assert_eq!(tool.calls.get(), 2);
}

#[test]
fn the_tools_component_becomes_unhealthy_after_failures() {
    let mut h = harness();
    h.register_claiming("broken", Behaviour::FailTimes(u32::MAX));
    h.register(TestTool::named("fine").claims("fine"));
    h.run("fine").unwrap();
    assert_eq!(h.health(), HealthStatus::Healthy);
    assert!(!h.guard.unhealthy(TOOLS_COMPONENT));

    // Three attempts, three consecutive failures (the default health threshold).
    assert_eq!(h.run("broken").unwrap_err().code(), ErrorCode::Tool);
    assert_eq!(h.health(), HealthStatus::Unhealthy);
    assert!(h.guard.unhealthy(TOOLS_COMPONENT));
}
