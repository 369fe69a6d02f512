//! The debate against a scripted generator on a manual clock.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use futures_executor::block_on;

use super::*;
use crate::embedding::LocalBoxFuture;
use crate::generation::GeneratorInfo;
use crate::testing::scripted_info;
use crate::{ErrorCode, ManualClock};

/// Each "token" of the scripted generator takes this long on the manual clock.
const MS_PER_TOKEN: u64 = 10;
/// The agent timeout of the tests: 100 tokens.
const TIMEOUT_MS: u64 = 1_000;
/// A stalled agent that ignores nothing still ends here, so a broken deadline fails the test
/// instead of hanging it.
const MAX_STEPS: u32 = 10_000;

const LOGICAL: &[&str] = &["Twelve ", "times ", "seven ", "is 84."];
const CREATIVE: &[&str] = &["Picture ", "twelve ", "boxes ", "of seven."];
const CRITIQUE: &[&str] = &["Both ", "are right."];
const SYNTHESIS: &[&str] = &["12 × 7 ", "= 84."];

/// What the scripted generator does for one agent.
#[derive(Clone)]
enum Script {
    /// Streams these pieces, one per token, then ends its turn.
    Answer(&'static [&'static str]),
    /// Fails at once.
    Fail(Error),
    /// Streams `la ` until cancelled.
    Stall,
}

/// A call the generator received.
#[derive(Debug, Clone, PartialEq)]
enum Call {
    One(String),
    Many(Vec<String>),
}

/// Answers each agent (by the request's `agent`) from its script. A batch decodes round-robin,
/// one token per request per step, and the clock moves [`MS_PER_TOKEN`] per step, like the local
/// model's batched decoding.
struct Scripted {
    /// What [`Generator::info`] says it is (local unless a test says host).
    kind: &'static str,
    clock: ManualClock,
    scripts: HashMap<AgentRole, Script>,
    requests: RefCell<Vec<GenerateRequest>>,
    calls: RefCell<Vec<Call>>,
    tokens: Cell<u32>,
}

/// One request of a batch being decoded.
struct Slot {
    script: Script,
    text: String,
    tokens: u32,
    result: Option<Result<Generated>>,
}

impl Scripted {
    fn new(clock: &ManualClock) -> Self {
        let scripts = [
            (AgentRole::Logical, Script::Answer(LOGICAL)),
            (AgentRole::Creative, Script::Answer(CREATIVE)),
            (AgentRole::Critical, Script::Answer(CRITIQUE)),
            (AgentRole::Synthesizer, Script::Answer(SYNTHESIS)),
        ];
        Self {
            kind: crate::generation::LOCAL_KIND,
            clock: clock.clone(),
            scripts: scripts.into_iter().collect(),
            requests: RefCell::default(),
            calls: RefCell::default(),
            tokens: Cell::new(0),
        }
    }

    fn with(mut self, role: AgentRole, script: Script) -> Self {
        self.scripts.insert(role, script);
        self
    }

    fn script(&self, request: &GenerateRequest) -> Script {
        AgentRole::ALL
            .into_iter()
            .find(|role| request.agent.as_deref() == Some(role.as_str()))
            .and_then(|role| self.scripts.get(&role).cloned())
            .unwrap_or_else(|| Script::Fail(Error::Generation("no script".into())))
    }

    fn run(
        &self,
        requests: &[GenerateRequest],
        sink: &dyn GenerationSink,
    ) -> Vec<Result<Generated>> {
        self.requests.borrow_mut().extend(requests.iter().cloned());
        let mut slots: Vec<Slot> = requests
            .iter()
            .map(|request| {
                let script = self.script(request);
                let result = match &script {
                    Script::Fail(error) => Some(Err(error.clone())),
                    _ => None,
                };
                Slot {
                    script,
                    text: String::new(),
                    tokens: 0,
                    result,
                }
            })
            .collect();
        for _ in 0..MAX_STEPS {
            if slots.iter().all(|s| s.result.is_some()) {
                break;
            }
            let mut decoded = false;
            for (index, slot) in slots.iter_mut().enumerate() {
                if slot.result.is_some() {
                    continue;
                }
                if sink.cancelled(index) {
                    slot.result = Some(Ok(generated(
                        &slot.text,
                        slot.tokens,
                        FinishReason::Cancelled,
                    )));
                    continue;
                }
                let piece = match &slot.script {
                    Script::Answer(pieces) => pieces.get(slot.tokens as usize).copied(),
                    _ => Some("la "),
                };
                match piece {
                    Some(piece) => {
                        sink.text(index, piece);
                        slot.text.push_str(piece);
                        slot.tokens += 1;
                        self.tokens.set(self.tokens.get() + 1);
                        decoded = true;
                    }
                    None => {
                        slot.result = Some(Ok(generated(
                            &slot.text,
                            slot.tokens,
                            FinishReason::EndOfTurn,
                        )))
                    }
                }
            }
            // A decoding step takes time; noticing the end of a turn does not.
            if decoded {
                self.clock.advance(MS_PER_TOKEN);
            }
        }
        slots
            .into_iter()
            .map(|s| {
                s.result
                    .unwrap_or_else(|| Err(Error::Internal("still running at MAX_STEPS".into())))
            })
            .collect()
    }

    fn agents(requests: &[GenerateRequest]) -> Vec<String> {
        requests
            .iter()
            .map(|r| r.agent.clone().unwrap_or_default())
            .collect()
    }

    fn request(&self, role: AgentRole) -> GenerateRequest {
        self.requests
            .borrow()
            .iter()
            .find(|r| r.agent.as_deref() == Some(role.as_str()))
            .cloned()
            .unwrap()
    }
}

fn generated(text: &str, tokens: u32, finish: FinishReason) -> Generated {
    Generated {
        text: text.to_owned(),
        finish,
        prompt_tokens: 5,
        cached_tokens: 0,
        tokens,
        prefill_ms: 1.0,
        decode_ms: 2.0,
    }
}

impl Generator for Scripted {
    fn info(&self) -> GeneratorInfo {
        GeneratorInfo {
            kind: self.kind.into(),
            ..scripted_info()
        }
    }

    fn generate<'a>(
        &'a self,
        request: &'a GenerateRequest,
        sink: &'a dyn GenerationSink,
    ) -> LocalBoxFuture<'a, Result<Generated>> {
        Box::pin(async move {
            self.calls
                .borrow_mut()
                .push(Call::One(request.agent.clone().unwrap_or_default()));
            let mut results = self.run(std::slice::from_ref(request), sink);
            results
                .pop()
                .unwrap_or_else(|| Err(Error::Internal("no result".into())))
        })
    }

    fn generate_many<'a>(
        &'a self,
        requests: &'a [GenerateRequest],
        sink: &'a dyn GenerationSink,
    ) -> LocalBoxFuture<'a, Vec<Result<Generated>>> {
        Box::pin(async move {
            self.calls
                .borrow_mut()
                .push(Call::Many(Self::agents(requests)));
            self.run(requests, sink)
        })
    }
}

/// Records what the debate reports; cancels once `cancel_after_texts` pieces have streamed.
#[derive(Default)]
struct Watcher {
    stages: RefCell<Vec<DebateState>>,
    texts: RefCell<Vec<(AgentRole, String)>>,
    cancelled: Cell<bool>,
    cancel_after_texts: Option<usize>,
    cancel_on_role: Option<AgentRole>,
}

impl Watcher {
    fn streamed(&self, role: AgentRole) -> String {
        self.texts
            .borrow()
            .iter()
            .filter(|(r, _)| *r == role)
            .map(|(_, t)| t.as_str())
            .collect()
    }
}

impl DebateObserver for Watcher {
    fn stage(&self, state: DebateState) {
        self.stages.borrow_mut().push(state);
    }

    fn text(&self, role: AgentRole, text: &str) {
        let mut texts = self.texts.borrow_mut();
        texts.push((role, text.to_owned()));
        let enough = self.cancel_after_texts.is_some_and(|n| texts.len() >= n);
        let role_matches = self.cancel_on_role.is_none_or(|r| r == role);
        if enough && role_matches {
            self.cancelled.set(true);
        }
    }

    fn cancelled(&self) -> bool {
        self.cancelled.get()
    }
}

fn settings() -> DebateSettings {
    DebateSettings {
        agent_timeout_ms: TIMEOUT_MS,
        ..DebateSettings::default()
    }
}

fn coordinator(clock: &ManualClock) -> MultiAgentCoordinator {
    MultiAgentCoordinator::new(clock.shared(), settings())
}

const QUERY: &str = "What is 12 * 7?";

/// Runs a debate with `generator` and returns the coordinator and the outcome.
fn debate(
    clock: &ManualClock,
    generator: &Scripted,
    memories: &[String],
    watcher: &Watcher,
) -> (MultiAgentCoordinator, DebateOutcome) {
    let mut coordinator = coordinator(clock);
    let outcome = block_on(coordinator.run_debate(generator, QUERY, memories, watcher)).unwrap();
    (coordinator, outcome)
}

fn text(pieces: &[&str]) -> String {
    pieces.concat()
}

#[test]
fn the_happy_path_runs_the_agents_in_order_with_their_temperatures() {
    let clock = ManualClock::new(1_000);
    let generator = Scripted::new(&clock);
    let (coordinator, outcome) = debate(&clock, &generator, &[], &Watcher::default());

    let requests = generator.requests.borrow();
    let order: Vec<_> = requests
        .iter()
        .map(|r| (r.agent.clone().unwrap_or_default(), r.temperature))
        .collect();
    assert_eq!(
        order,
        [
            ("logical".to_owned(), 0.3),
            ("creative".to_owned(), 0.9),
            ("critical".to_owned(), 0.5),
            ("synthesizer".to_owned(), 0.7),
        ]
    );
    for request in requests.iter() {
        assert_eq!(request.max_tokens, 96);
        assert!(request.validate().is_ok(), "{request:?}");
    }
    // The parallel agents answer alone; the critic and the synthesizer share one conversation.
    assert_eq!(requests[0].conversation_id, None);
    assert_eq!(requests[1].conversation_id, None);
    let review = requests[2].conversation_id.clone().unwrap();
    assert!(review.starts_with(REVIEW_CONVERSATION_PREFIX), "{review}");
    assert_eq!(
        requests[3].conversation_id.as_deref(),
        Some(review.as_str())
    );
    assert_eq!(requests[0].prompt, QUERY);
    assert_eq!(requests[0].system.as_deref(), Some(LOGICAL_PROMPT));
    assert_eq!(requests[1].system.as_deref(), Some(CREATIVE_PROMPT));
    // The critic sees both answers; the synthesizer sees them and the critique.
    let critic = &requests[2].prompt;
    assert!(
        critic.contains(&text(LOGICAL)) && critic.contains(&text(CREATIVE)),
        "{critic}"
    );
    // The synthesizer's turn extends the critic's conversation: the same system prompt, the
    // critic's prompt and critique as history, then the instruction.
    let synthesis = &requests[3];
    assert_eq!(synthesis.system, requests[2].system);
    assert_eq!(synthesis.prompt, SYNTHESIS_INSTRUCTION);
    let history: Vec<(&str, &str)> = synthesis
        .history
        .iter()
        .map(|t| (t.role.as_str(), t.content.as_str()))
        .collect();
    assert_eq!(
        history,
        [
            ("user", requests[2].prompt.as_str()),
            ("assistant", "Both are right.")
        ]
    );
    assert!(synthesis.validate().is_ok());

    assert_eq!(outcome.state, DebateState::Done);
    assert_eq!(coordinator.state(), DebateState::Done);
    assert!(!coordinator.is_debate_active());
    assert_eq!(outcome.error, None);
    let answer = outcome.answer.unwrap();
    assert_eq!(answer.role, AgentRole::Synthesizer);
    assert_eq!(answer.text, text(SYNTHESIS));
    let roles: Vec<_> = outcome.responses.iter().map(|r| r.role).collect();
    assert_eq!(roles, AgentRole::ALL);
    assert!(outcome.responses.iter().all(|r| r.ok && r.error.is_none()));
    assert_eq!(outcome.responses, coordinator.get_debate_responses());
    assert_eq!(coordinator.response(AgentRole::Logical).unwrap().tokens, 4);
    // Both parallel agents took the batch's 5 steps (4 tokens, then the end of turn).
    assert_eq!(
        coordinator
            .response(AgentRole::Logical)
            .unwrap()
            .duration_ms,
        40
    );
}

#[test]
fn a_host_generator_gets_a_self_contained_synthesis_prompt() {
    let clock = ManualClock::new(0);
    let mut generator = Scripted::new(&clock);
    generator.kind = crate::generation::HOST_KIND;
    let (_, outcome) = debate(&clock, &generator, &[], &Watcher::default());
    assert_eq!(outcome.state, DebateState::Done);
    // A page's function may read `prompt` alone: no history, no shared conversation.
    for request in generator.requests.borrow().iter() {
        assert_eq!(request.conversation_id, None);
        assert!(request.history.is_empty());
    }
    let synthesis = generator.request(AgentRole::Synthesizer).prompt;
    assert!(
        synthesis.starts_with("Question: What is 12 * 7?"),
        "{synthesis}"
    );
    assert!(synthesis.contains(&text(LOGICAL)) && synthesis.contains(&text(CREATIVE)));
    assert!(synthesis.contains("Review: Both are right."), "{synthesis}");
    assert!(synthesis.ends_with(SYNTHESIS_INSTRUCTION), "{synthesis}");
}

#[test]
fn both_parallel_agents_go_in_one_generate_many() {
    let clock = ManualClock::new(0);
    let generator = Scripted::new(&clock);
    debate(&clock, &generator, &[], &Watcher::default());
    assert_eq!(
        *generator.calls.borrow(),
        [
            Call::Many(vec!["logical".into(), "creative".into()]),
            Call::One("critical".into()),
            Call::One("synthesizer".into()),
        ]
    );
}

#[test]
fn memories_appear_in_the_answering_prompts() {
    let clock = ManualClock::new(0);
    let generator = Scripted::new(&clock);
    let memories = vec![
        "The user's name is Ada.".to_owned(),
        "  ".to_owned(),
        "Ada likes tea.".to_owned(),
        "Ada lives in Lyon.".to_owned(),
        "Ada has a cat.".to_owned(),
    ];
    debate(&clock, &generator, &memories, &Watcher::default());
    let block = "Things you know about the user:\n- The user's name is Ada.\n- Ada likes tea.\n- Ada lives in Lyon.";
    for role in AgentRole::ALL {
        let system = generator.request(role).system.unwrap();
        assert!(system.starts_with(role.system_prompt()), "{system}");
        // Blank memories are skipped and at most three go in.
        assert!(system.ends_with(block), "{role}: {system}");
        assert!(!system.contains("cat"));
    }

    let clock = ManualClock::new(0);
    let generator = Scripted::new(&clock);
    debate(&clock, &generator, &[], &Watcher::default());
    for request in generator.requests.borrow().iter() {
        assert!(!request
            .system
            .as_deref()
            .unwrap_or("")
            .contains(MEMORIES_HEADER));
    }
}

#[test]
fn stages_and_text_are_observed_in_order() {
    let clock = ManualClock::new(0);
    let generator = Scripted::new(&clock);
    let watcher = Watcher::default();
    debate(&clock, &generator, &[], &watcher);
    assert_eq!(
        *watcher.stages.borrow(),
        [
            DebateState::ParallelGeneration,
            DebateState::Critical,
            DebateState::Synthesis,
            DebateState::Done,
        ]
    );
    assert_eq!(watcher.streamed(AgentRole::Logical), text(LOGICAL));
    assert_eq!(watcher.streamed(AgentRole::Creative), text(CREATIVE));
    assert_eq!(watcher.streamed(AgentRole::Critical), text(CRITIQUE));
    assert_eq!(watcher.streamed(AgentRole::Synthesizer), text(SYNTHESIS));
    // Batched: the parallel agents' tokens interleave.
    let first: Vec<_> = watcher
        .texts
        .borrow()
        .iter()
        .take(2)
        .map(|(r, _)| *r)
        .collect();
    assert_eq!(first, [AgentRole::Logical, AgentRole::Creative]);
}

#[test]
fn when_one_parallel_agent_fails_the_debate_continues_with_the_other() {
    let clock = ManualClock::new(0);
    let generator = Scripted::new(&clock).with(
        AgentRole::Creative,
        Script::Fail(Error::Generation("out of memory".into())),
    );
    let (coordinator, outcome) = debate(&clock, &generator, &[], &Watcher::default());
    assert_eq!(outcome.state, DebateState::Done);
    let creative = coordinator.response(AgentRole::Creative).unwrap();
    assert!(!creative.ok);
    assert_eq!(
        creative.error.as_deref(),
        Some("generation failed: out of memory")
    );
    let critic = generator.request(AgentRole::Critical).prompt;
    assert!(
        critic.contains(&format!("\n\nAnswer: {}", text(LOGICAL))),
        "{critic}"
    );
    assert!(!critic.contains("Answer 2"));
    let synthesis = generator.request(AgentRole::Synthesizer);
    assert_eq!(synthesis.prompt, SYNTHESIS_INSTRUCTION);
    assert_eq!(synthesis.history[0].content, critic);
    assert_eq!(outcome.answer.unwrap().text, text(SYNTHESIS));
}

#[test]
fn an_empty_answer_counts_as_a_failure() {
    let clock = ManualClock::new(0);
    let generator = Scripted::new(&clock).with(AgentRole::Logical, Script::Answer(&["  "]));
    let (coordinator, _) = debate(&clock, &generator, &[], &Watcher::default());
    let logical = coordinator.response(AgentRole::Logical).unwrap();
    assert!(!logical.ok);
    assert_eq!(logical.text, "");
    assert_eq!(
        logical.error.as_deref(),
        Some("the logical agent returned an empty answer")
    );
    let critic = generator.request(AgentRole::Critical).prompt;
    assert!(
        critic.contains(&format!("Answer: {}", text(CREATIVE))),
        "{critic}"
    );
}

#[test]
fn a_stalled_parallel_agent_times_out_and_the_debate_continues() {
    let clock = ManualClock::new(0);
    let generator = Scripted::new(&clock).with(AgentRole::Creative, Script::Stall);
    let (coordinator, outcome) = debate(&clock, &generator, &[], &Watcher::default());
    assert_eq!(outcome.state, DebateState::Done);
    let creative = coordinator.response(AgentRole::Creative).unwrap();
    assert!(!creative.ok);
    assert_eq!(
        creative.error.as_deref(),
        Some("`creative_agent` timed out after 1000 ms")
    );
    assert_eq!(creative.duration_ms, TIMEOUT_MS);
    // The partial text is kept for the record but never quoted to later agents.
    assert!(creative.text.starts_with("la la"), "{}", creative.text);
    assert!(!generator
        .request(AgentRole::Critical)
        .prompt
        .contains("la la"));
    assert!(coordinator.response(AgentRole::Logical).unwrap().ok);
}

#[test]
fn when_both_parallel_agents_fail_the_debate_fails() {
    let clock = ManualClock::new(0);
    let generator = Scripted::new(&clock)
        .with(
            AgentRole::Logical,
            Script::Fail(Error::Generation("model bug".into())),
        )
        .with(AgentRole::Creative, Script::Stall);
    let watcher = Watcher::default();
    let (coordinator, outcome) = debate(&clock, &generator, &[], &watcher);
    assert_eq!(outcome.state, DebateState::Failed);
    assert_eq!(coordinator.state(), DebateState::Failed);
    assert_eq!(outcome.answer, None);
    assert_eq!(coordinator.final_answer(), None);
    let error = outcome.error.unwrap();
    assert_eq!(error.code(), ErrorCode::Generation);
    let message = error.to_string();
    assert!(
        message.contains("model bug") && message.contains("timed out"),
        "{message}"
    );
    assert_eq!(coordinator.failure(), Some(&error));
    assert_eq!(generator.calls.borrow().len(), 1);
    assert_eq!(
        *watcher.stages.borrow(),
        [DebateState::ParallelGeneration, DebateState::Failed]
    );
}

#[test]
fn when_the_critic_times_out_the_synthesizer_writes_without_a_critique() {
    let clock = ManualClock::new(0);
    let generator = Scripted::new(&clock).with(AgentRole::Critical, Script::Stall);
    let watcher = Watcher::default();
    let (coordinator, outcome) = debate(&clock, &generator, &[], &watcher);
    let critic = coordinator.response(AgentRole::Critical).unwrap();
    assert!(!critic.ok);
    assert_eq!(
        critic.error.as_deref(),
        Some("`critical_agent` timed out after 1000 ms")
    );
    assert_eq!(critic.tokens, 100);
    let synthesis = generator.request(AgentRole::Synthesizer).prompt;
    assert!(!synthesis.contains("Review"), "{synthesis}");
    assert!(synthesis.contains(&text(LOGICAL)) && synthesis.contains(&text(CREATIVE)));
    assert_eq!(outcome.state, DebateState::Done);
    assert_eq!(outcome.answer.unwrap().role, AgentRole::Synthesizer);
    assert_eq!(
        *watcher.stages.borrow(),
        [
            DebateState::ParallelGeneration,
            DebateState::Critical,
            DebateState::Synthesis,
            DebateState::Done,
        ]
    );
}

#[test]
fn when_the_synthesizer_fails_the_best_available_answer_is_final() {
    let clock = ManualClock::new(0);
    let generator = Scripted::new(&clock).with(
        AgentRole::Synthesizer,
        Script::Fail(Error::Generation("boom".into())),
    );
    let (coordinator, outcome) = debate(&clock, &generator, &[], &Watcher::default());
    assert_eq!(outcome.state, DebateState::Done);
    let answer = outcome.answer.unwrap();
    assert_eq!(answer.role, AgentRole::Logical);
    assert_eq!(answer.text, text(LOGICAL));
    assert_eq!(coordinator.final_answer(), Some(&answer));

    // Without the logical answer, the creative one; the critique never is the answer.
    let clock = ManualClock::new(0);
    let generator = Scripted::new(&clock)
        .with(AgentRole::Synthesizer, Script::Stall)
        .with(
            AgentRole::Logical,
            Script::Fail(Error::Generation("boom".into())),
        );
    let (_, outcome) = debate(&clock, &generator, &[], &Watcher::default());
    assert_eq!(outcome.answer.unwrap().role, AgentRole::Creative);
}

#[test]
fn a_user_cancel_stops_the_debate_promptly() {
    let clock = ManualClock::new(0);
    let generator = Scripted::new(&clock);
    let watcher = Watcher {
        cancel_after_texts: Some(1),
        ..Watcher::default()
    };
    let (coordinator, outcome) = debate(&clock, &generator, &[], &watcher);
    assert_eq!(outcome.state, DebateState::Failed);
    assert_eq!(outcome.error.map(|e| e.code()), Some(ErrorCode::Cancelled));
    assert_eq!(outcome.answer, None);
    // One token, then both agents saw the cancel; nothing else ran or was recorded.
    assert_eq!(generator.tokens.get(), 1);
    assert_eq!(generator.calls.borrow().len(), 1);
    assert!(coordinator.get_debate_responses().is_empty());
    assert_eq!(
        *watcher.stages.borrow(),
        [DebateState::ParallelGeneration, DebateState::Failed]
    );
}

#[test]
fn a_user_cancel_during_the_critique_skips_the_synthesis() {
    let clock = ManualClock::new(0);
    let generator = Scripted::new(&clock);
    let watcher = Watcher {
        cancel_after_texts: Some(1),
        cancel_on_role: Some(AgentRole::Critical),
        ..Watcher::default()
    };
    let (coordinator, outcome) = debate(&clock, &generator, &[], &watcher);
    assert_eq!(outcome.state, DebateState::Failed);
    assert_eq!(
        coordinator.failure().map(Error::code),
        Some(ErrorCode::Cancelled)
    );
    assert_eq!(generator.calls.borrow().len(), 2);
    assert_eq!(watcher.streamed(AgentRole::Critical), "Both ");
    assert_eq!(
        *watcher.stages.borrow(),
        [
            DebateState::ParallelGeneration,
            DebateState::Critical,
            DebateState::Failed,
        ]
    );
}

#[test]
fn the_same_seed_gives_the_same_requests() {
    let run = |seed: u64| {
        let clock = ManualClock::new(0);
        let generator = Scripted::new(&clock);
        let mut coordinator =
            MultiAgentCoordinator::new(clock.shared(), DebateSettings { seed, ..settings() });
        let memories = vec!["Ada likes tea.".to_owned()];
        block_on(coordinator.run_debate(&generator, QUERY, &memories, &Watcher::default()))
            .unwrap();
        generator.requests.take()
    };
    // Each debate has a review conversation of its own, so that two never share a cache;
    // everything else is the same for the same seed.
    let without_conversation = |mut requests: Vec<GenerateRequest>| {
        let ids: Vec<Option<String>> = requests
            .iter_mut()
            .map(|r| r.conversation_id.take())
            .collect();
        (requests, ids)
    };
    let (first, first_ids) = without_conversation(run(7));
    let (again, again_ids) = without_conversation(run(7));
    assert_eq!(first, again);
    assert_ne!(first_ids[2], again_ids[2]);
    let seeds: Vec<u64> = first.iter().map(|r| r.seed).collect();
    assert_eq!(seeds, [7, 8, 9, 10]);
    let other: Vec<u64> = run(100).iter().map(|r| r.seed).collect();
    assert_eq!(other, [100, 101, 102, 103]);
    // Wrapping, not overflowing.
    let top: Vec<u64> = run(u64::MAX).iter().map(|r| r.seed).collect();
    assert_eq!(top, [u64::MAX, 0, 1, 2]);
}

#[test]
fn an_unexpected_response_is_an_error_and_changes_nothing() {
    let clock = ManualClock::new(0);
    let mut coordinator = coordinator(&clock);
    let ok = || Ok(generated("An answer.", 2, FinishReason::EndOfTurn));

    let error = coordinator
        .handle_agent_response(AgentRole::Logical, ok())
        .unwrap_err();
    assert_eq!(error.code(), ErrorCode::Internal);
    assert_eq!(coordinator.state(), DebateState::Idle);

    coordinator.launch_debate(QUERY, &[]).unwrap();
    for role in [AgentRole::Critical, AgentRole::Synthesizer] {
        assert!(coordinator.handle_agent_response(role, ok()).is_err());
    }
    assert!(coordinator.get_debate_responses().is_empty());
    assert_eq!(
        coordinator.handle_agent_response(AgentRole::Logical, ok()),
        Ok(NextStep::Wait)
    );
    // A second logical answer.
    assert!(coordinator
        .handle_agent_response(AgentRole::Logical, ok())
        .is_err());
    assert_eq!(coordinator.get_debate_responses().len(), 1);
    assert_eq!(coordinator.state(), DebateState::ParallelGeneration);
}

#[test]
fn the_state_machine_can_be_driven_by_hand() {
    let clock = ManualClock::new(500);
    let mut coordinator = coordinator(&clock);
    let requests = coordinator
        .launch_debate("  Why is the sky blue?  ", &[])
        .unwrap();
    let agents: Vec<_> = requests.iter().map(|r| r.agent.as_deref()).collect();
    assert_eq!(agents, [Some("logical"), Some("creative")]);
    assert_eq!(requests[0].prompt, "Why is the sky blue?");
    assert_eq!(coordinator.state(), DebateState::ParallelGeneration);
    assert_eq!(coordinator.deadline_ms(), Some(1_500));

    clock.advance(300);
    let step = coordinator
        .handle_agent_response(
            AgentRole::Creative,
            Ok(generated("Air scatters blue.", 3, FinishReason::Stop)),
        )
        .unwrap();
    assert_eq!(step, NextStep::Wait);
    // A cancelled finish is the deadline: a timeout with the partial text kept.
    let step = coordinator
        .handle_agent_response(
            AgentRole::Logical,
            Ok(generated(" Rayleigh ", 1, FinishReason::Cancelled)),
        )
        .unwrap();
    let NextStep::Run { role, request } = step else {
        panic!("expected the critic, got {step:?}");
    };
    assert_eq!(role, AgentRole::Critical);
    assert_eq!(request.agent.as_deref(), Some("critical"));
    let logical = coordinator.response(AgentRole::Logical).unwrap();
    assert_eq!((logical.ok, logical.text.as_str()), (false, "Rayleigh"));
    assert_eq!(logical.duration_ms, 300);
    assert_eq!(coordinator.state(), DebateState::Critical);
    assert_eq!(coordinator.deadline_ms(), Some(1_800));

    let step = coordinator
        .handle_agent_response(
            AgentRole::Critical,
            Err(Error::Timeout {
                operation: "llm_inference".into(),
                ms: 9,
            }),
        )
        .unwrap();
    assert!(matches!(
        step,
        NextStep::Run {
            role: AgentRole::Synthesizer,
            ..
        }
    ));
    assert_eq!(coordinator.state(), DebateState::Synthesis);
    assert_eq!(coordinator.final_answer(), None, "not done yet");
    let step = coordinator
        .handle_agent_response(AgentRole::Synthesizer, Err(Error::Generation("x".into())))
        .unwrap();
    assert_eq!(step, NextStep::Done);
    assert_eq!(coordinator.deadline_ms(), None);
    assert_eq!(
        coordinator.final_answer().map(|r| r.text.as_str()),
        Some("Air scatters blue.")
    );
    // An ended debate is replaced by the next one.
    assert!(coordinator.launch_debate(QUERY, &[]).is_ok());
    assert!(coordinator.get_debate_responses().is_empty());
}

#[test]
fn launching_checks_the_query_the_settings_and_that_no_debate_is_active() {
    let clock = ManualClock::new(0);
    let mut coordinator = coordinator(&clock);
    let field = |result: Result<Vec<GenerateRequest>>| match result {
        Err(Error::InvalidInput { field, .. }) => field,
        other => panic!("expected invalid input, got {other:?}"),
    };
    assert_eq!(field(coordinator.launch_debate(" \n", &[])), "query");
    assert_eq!(coordinator.state(), DebateState::Idle);

    coordinator
        .set_settings(DebateSettings {
            max_tokens: 0,
            ..settings()
        })
        .unwrap();
    assert_eq!(field(coordinator.launch_debate(QUERY, &[])), "maxTokens");
    assert_eq!(coordinator.state(), DebateState::Idle);

    coordinator.set_settings(settings()).unwrap();
    coordinator.launch_debate(QUERY, &[]).unwrap();
    assert_eq!(field(coordinator.launch_debate("Another?", &[])), "query");
    assert!(coordinator.set_settings(settings()).is_err());
    assert_eq!(coordinator.state(), DebateState::ParallelGeneration);

    // run_debate reports the same error without running anything.
    let generator = Scripted::new(&clock);
    let result = block_on(coordinator.run_debate(&generator, QUERY, &[], &Watcher::default()));
    assert_eq!(
        result.map(|_| ()).map_err(|e| e.code()),
        Err(ErrorCode::InvalidInput)
    );
    assert!(generator.calls.borrow().is_empty());
}

#[test]
fn settings_are_validated() {
    assert_eq!(DebateSettings::default().validate(), Ok(()));
    let bad = [
        DebateSettings {
            max_tokens: MAX_NEW_TOKENS + 1,
            ..DebateSettings::default()
        },
        DebateSettings {
            agent_timeout_ms: 0,
            ..DebateSettings::default()
        },
        DebateSettings {
            max_prompt_chars: MIN_PROMPT_CHARS - 1,
            ..DebateSettings::default()
        },
        DebateSettings {
            max_prompt_chars: MAX_PROMPT_CHARS + 1,
            ..DebateSettings::default()
        },
    ];
    for settings in bad {
        assert!(settings.validate().is_err(), "{settings:?}");
    }
}

#[test]
fn reset_returns_to_idle_and_forgets_the_debate() {
    let clock = ManualClock::new(0);
    let generator = Scripted::new(&clock).with(AgentRole::Logical, Script::Fail(Error::Closed));
    let (mut coordinator, _) = debate(&clock, &generator, &[], &Watcher::default());
    assert_eq!(coordinator.get_debate_responses().len(), 4);
    coordinator.reset();
    assert_eq!(coordinator.state(), DebateState::Idle);
    assert!(coordinator.get_debate_responses().is_empty());
    assert_eq!(coordinator.final_answer(), None);
    assert_eq!(coordinator.failure(), None);

    // Reset also abandons an active debate, and cancel leaves an idle one alone.
    coordinator.launch_debate(QUERY, &[]).unwrap();
    assert!(coordinator.is_debate_active());
    coordinator.reset();
    assert!(!coordinator.is_debate_active());
    coordinator.cancel("late");
    assert_eq!(coordinator.state(), DebateState::Idle);
    assert_eq!(coordinator.failure(), None);
}

#[test]
fn long_texts_are_clipped_to_the_prompt_budget() {
    let clock = ManualClock::new(0);
    let mut coordinator = MultiAgentCoordinator::new(
        clock.shared(),
        DebateSettings {
            max_prompt_chars: 100,
            ..settings()
        },
    );
    let query = "é".repeat(5_000);
    let memories = vec!["m".repeat(500), "n".repeat(500)];
    let requests = coordinator.launch_debate(&query, &memories).unwrap();
    let prompt = &requests[0].prompt;
    assert_eq!(prompt.chars().count(), 100);
    assert!(prompt.ends_with('…'));
    // The memories share a quarter of the budget: 12 characters each.
    let system = requests[0].system.as_deref().unwrap();
    assert!(
        system.ends_with(&format!("\n- {}…", "n".repeat(11))),
        "{system}"
    );
    assert!(requests.iter().all(|r| r.validate().is_ok()));

    // Critic: the query and two answers share the budget.
    let long = "word ".repeat(200);
    coordinator
        .handle_agent_response(
            AgentRole::Logical,
            Ok(generated(&long, 200, FinishReason::Length)),
        )
        .unwrap();
    let step = coordinator
        .handle_agent_response(
            AgentRole::Creative,
            Ok(generated(&long, 200, FinishReason::Length)),
        )
        .unwrap();
    let NextStep::Run { request, .. } = step else {
        panic!("expected the critic, got {step:?}");
    };
    let labels = "Question: \n\nAnswer 1: \n\nAnswer 2: \n\nWhat is wrong or missing?";
    assert!(request.prompt.chars().count() <= 100 + labels.chars().count());
}

#[test]
fn clip_cuts_on_characters() {
    assert_eq!(clip("  short  ", 10), "short");
    assert_eq!(clip("abcdef", 6), "abcdef");
    assert_eq!(clip("abcdefg", 6), "abcde…");
    assert_eq!(clip("ab cdefg", 4), "ab…");
    assert_eq!(clip("ééééé", 3), "éé…");
}

#[test]
fn names_serialize_in_snake_case() {
    let json = serde_json::to_value([
        DebateState::ParallelGeneration,
        DebateState::Synthesis,
        DebateState::Failed,
    ])
    .unwrap();
    assert_eq!(
        json,
        serde_json::json!(["parallel_generation", "synthesis", "failed"])
    );
    for state in [
        DebateState::Idle,
        DebateState::ParallelGeneration,
        DebateState::Critical,
        DebateState::Synthesis,
        DebateState::Done,
        DebateState::Failed,
    ] {
        assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
    }
    for role in AgentRole::ALL {
        assert_eq!(serde_json::to_value(role).unwrap(), role.as_str());
        assert_eq!(AgentRole::ALL[role.index()], role);
    }
}
