use proptest::prelude::*;

use super::*;

fn ctx() -> FormatContext {
    FormatContext {
        trace_id: "trace-1".to_owned(),
        profile: Profile::Full,
        started_ms: 1_000,
        now_ms: 1_250,
        steps: vec![ReasoningStep {
            stage: "tool_search".to_owned(),
            detail: "chose the calculator".to_owned(),
            duration_ms: 3.0,
            ok: true,
        }],
        memory_hits: Vec::new(),
        degraded: Vec::new(),
        notes: Vec::new(),
    }
}

fn hit(id: &str, text: &str, similarity: f32) -> MemoryHitRef {
    MemoryHitRef {
        id: id.to_owned(),
        text: text.to_owned(),
        similarity,
    }
}

fn agent(name: &str, text: &str, vector: Option<Vec<f32>>) -> AgentAnswer {
    AgentAnswer {
        agent: name.to_owned(),
        text: text.to_owned(),
        vector,
    }
}

fn debate<'a>(agents: &'a [AgentAnswer], synthesis: Option<&'a AgentAnswer>) -> DebateAnswers<'a> {
    DebateAnswers {
        query: "What is the capital of France?",
        agents,
        synthesis,
        memory_vectors: &[],
    }
}

#[test]
fn tool_answers_are_exact_with_full_confidence() {
    let source = AnswerSource::Tool("calculator".to_owned());
    let r = ResponseFormatter::default().format_simple_response(
        ctx(),
        SimpleAnswer {
            query: "what is 12 * 7",
            text: "12 × 7 = 84",
            source: &source,
            answer_vector: None,
            memory_vectors: &[],
        },
    );
    assert_eq!(r.response, "12 × 7 = 84");
    assert_eq!(r.confidence, 1.0);
    assert_eq!(r.provenance.tool_used.as_deref(), Some("calculator"));
    assert!(r.provenance.from_agents.is_empty());
    assert_eq!(r.debug.route, "tool");
    assert_eq!(r.debug.quality.signals.len(), 1);
    assert_eq!(r.debug.quality.signals[0].name, "exact");
    assert_eq!(r.debug.inference_time_ms, 250.0);
    assert_eq!(r.debug.trace_id, "trace-1");
    assert_eq!(r.reasoning_steps.len(), 1);
}

#[test]
fn single_generations_are_cleaned_and_scored() {
    let source = AnswerSource::Single;
    let r = ResponseFormatter::default().format_simple_response(
        ctx(),
        SimpleAnswer {
            query: "What is the capital of France?",
            text: "  Assistant: The capital of France is Paris.\n\n\n\nIt is on the Seine.  ",
            source: &source,
            answer_vector: None,
            memory_vectors: &[],
        },
    );
    assert_eq!(
        r.response,
        "The capital of France is Paris.\n\nIt is on the Seine."
    );
    assert_eq!(r.provenance.from_agents, ["single"]);
    assert_eq!(r.provenance.tool_used, None);
    assert_eq!(r.debug.route, "single");
    assert_eq!(r.confidence, r.debug.quality.score);
    assert!(!r.debug.quality.low, "{:?}", r.debug.quality);
}

#[test]
fn memory_answers_take_the_memory_route_and_keep_the_hits() {
    let source = AnswerSource::Memory;
    let mut context = ctx();
    context.memory_hits = vec![hit("m1", "Your dog is called Rex.", 0.9)];
    let answer = [1.0, 0.0];
    let memories = vec![vec![1.0, 0.0]];
    let r = ResponseFormatter::default().format_simple_response(
        context,
        SimpleAnswer {
            query: "what is my dog called",
            text: "Your dog is called Rex.",
            source: &source,
            answer_vector: Some(&answer),
            memory_vectors: &memories,
        },
    );
    assert_eq!(r.debug.route, "memory");
    assert_eq!(r.provenance.memory_hits.len(), 1);
    let support = r.debug.quality.signals.iter().find(|s| s.name == "support");
    assert_eq!(support.map(|s| s.value), Some(1.0));
}

#[test]
fn clean_strips_stacked_role_prefixes_case_insensitively() {
    let f = ResponseFormatter::default();
    assert_eq!(f.clean("ASSISTANT: answer: Paris"), "Paris");
    assert_eq!(f.clean("Synthesizer:\n  Paris"), "Paris");
    // A role word that is not a prefix stays.
    assert_eq!(
        f.clean("The assistant: a helper"),
        "The assistant: a helper"
    );
    assert_eq!(
        f.clean("\r\nline one\r\n\r\n\r\nline two\r\n"),
        "line one\n\nline two"
    );
    assert_eq!(f.clean("   \n\n  "), "");
}

#[test]
fn truncation_is_safe_on_multibyte_text() {
    let f = ResponseFormatter::new(10);
    let cut = f.clean("日本語のテキストはとても長いです");
    assert_eq!(cut.chars().count(), 10);
    assert!(cut.ends_with('…'));
    assert_eq!(cut, "日本語のテキストは…");
    let emoji = ResponseFormatter::new(4).clean("🦀🦀🦀🦀🦀🦀");
    assert_eq!(emoji, "🦀🦀🦀…");
    assert_eq!(ResponseFormatter::new(0).clean("abc"), "");
    assert_eq!(ResponseFormatter::new(3).clean("abc"), "abc");
}

#[test]
fn truncation_keeps_words_whole_and_notes_the_cut() {
    let f = ResponseFormatter::new(24);
    assert_eq!(
        f.clean("Paris is the capital city of France"),
        "Paris is the capital…"
    );
    let source = AnswerSource::Single;
    let r = f.format_simple_response(
        ctx(),
        SimpleAnswer {
            query: "capital of France",
            text: "Paris is the capital city of France",
            source: &source,
            answer_vector: None,
            memory_vectors: &[],
        },
    );
    assert!(r.response.chars().count() <= 24);
    assert_eq!(r.debug.notes, ["the answer was cut to 24 chars"]);
}

#[test]
fn debate_uses_the_synthesis_and_lists_the_contributors() {
    let agents = [
        agent(
            "logical",
            "Paris is the capital of France.",
            Some(vec![1.0, 0.0]),
        ),
        agent("creative", "", None),
        agent(
            "critical",
            "The capital of France is Paris.",
            Some(vec![1.0, 0.0]),
        ),
    ];
    let synthesis = agent(
        "synthesizer",
        "Synthesizer: The capital of France is Paris.",
        Some(vec![1.0, 0.0]),
    );
    let r = ResponseFormatter::default()
        .format_multi_agent_response(ctx(), debate(&agents, Some(&synthesis)));
    assert_eq!(r.response, "The capital of France is Paris.");
    assert_eq!(
        r.provenance.from_agents,
        ["logical", "critical", "synthesizer"]
    );
    assert_eq!(r.debug.route, "debate");
    assert_eq!(r.confidence, r.debug.quality.score);
    let agreement = r
        .debug
        .quality
        .signals
        .iter()
        .find(|s| s.name == "agreement");
    assert_eq!(agreement.map(|s| s.value), Some(1.0));
}

#[test]
fn disagreeing_agents_lower_the_confidence() {
    let synthesis = agent("synthesizer", "The capital of France is Paris.", None);
    let agreeing = [
        agent("logical", "Paris.", Some(vec![1.0, 0.0])),
        agent("critical", "Paris!", Some(vec![1.0, 0.0])),
    ];
    let disagreeing = [
        agent("logical", "Paris.", Some(vec![1.0, 0.0])),
        agent("critical", "Lyon.", Some(vec![0.0, 1.0])),
    ];
    let f = ResponseFormatter::default();
    let high = f.format_multi_agent_response(ctx(), debate(&agreeing, Some(&synthesis)));
    let low = f.format_multi_agent_response(ctx(), debate(&disagreeing, Some(&synthesis)));
    assert!(
        low.confidence < high.confidence,
        "{} vs {}",
        low.confidence,
        high.confidence
    );
}

#[test]
fn debate_without_synthesis_falls_back_to_the_best_agent_answer() {
    let agents = [
        agent(
            "creative",
            "Bananas bananas bananas bananas bananas bananas.",
            None,
        ),
        agent("logical", "The capital of France is Paris.", None),
    ];
    let empty = agent("synthesizer", "  \n ", None);
    for synthesis in [None, Some(&empty)] {
        let r = ResponseFormatter::default()
            .format_multi_agent_response(ctx(), debate(&agents, synthesis));
        assert_eq!(r.response, "The capital of France is Paris.");
        assert_eq!(r.provenance.from_agents, ["logical"]);
        assert_eq!(r.debug.route, "debate");
        assert!(
            r.debug.notes.iter().any(|n| n.contains("logical")),
            "{:?}",
            r.debug.notes
        );
    }
}

#[test]
fn a_drifting_synthesis_gives_way_to_a_clearly_better_agent_answer() {
    // The synthesis drifted: off the question, far from both agents, and looping.
    let agents = [
        agent(
            "logical",
            "The capital of France is Paris.",
            Some(vec![1.0, 0.0]),
        ),
        agent(
            "creative",
            "Paris, on the Seine, is France's capital.",
            Some(vec![0.9, 0.1]),
        ),
    ];
    let drifted = agent(
        "synthesizer",
        "Dear friend, I hope this letter finds you. I hope this letter finds you well.",
        Some(vec![0.0, 1.0]),
    );
    let r = ResponseFormatter::default()
        .format_multi_agent_response(ctx(), debate(&agents, Some(&drifted)));
    assert_eq!(r.response, "The capital of France is Paris.");
    assert_eq!(r.provenance.from_agents, ["logical"]);
    assert!(
        r.debug
            .notes
            .iter()
            .any(|n| n.contains("the synthesis scored")),
        "{:?}",
        r.debug.notes
    );
    // A synthesis as good as the agents keeps its place.
    let fine = agent(
        "synthesizer",
        "Paris is the capital of France.",
        Some(vec![1.0, 0.0]),
    );
    let r = ResponseFormatter::default()
        .format_multi_agent_response(ctx(), debate(&agents, Some(&fine)));
    assert_eq!(r.response, "Paris is the capital of France.");
    assert!(r.provenance.from_agents.contains(&"synthesizer".to_owned()));
}

#[test]
fn debate_with_no_answer_at_all_is_a_fallback_with_the_generator_degraded() {
    let agents = [agent("logical", "", None)];
    let mut context = ctx();
    context.memory_hits = vec![hit("m1", "Paris is the capital of France.", 0.8)];
    let r =
        ResponseFormatter::default().format_multi_agent_response(context, debate(&agents, None));
    assert_eq!(r.debug.route, "fallback");
    assert_eq!(r.provenance.degraded, ["generator"]);
    assert!(r.response.contains("Paris is the capital of France."));
    assert!(r.provenance.from_agents.is_empty());
}

#[test]
fn error_response_carries_the_code() {
    let error = Error::Timeout {
        operation: "llm_inference".to_owned(),
        ms: 30_000,
    };
    let r = ResponseFormatter::default().format_error_response(ctx(), &error);
    assert!(r.response.contains("ERR_TIMEOUT"), "{}", r.response);
    assert!(r.response.contains("took too long"), "{}", r.response);
    assert_eq!(r.confidence, 0.0);
    assert_eq!(r.debug.route, "error");
    assert!(r.debug.quality.low);
    assert_eq!(r.debug.notes, [error.to_string()]);
    let internal = ResponseFormatter::default()
        .format_error_response(ctx(), &Error::Internal("index out of sync".to_owned()));
    assert!(
        internal.response.contains("ERR_INTERNAL"),
        "{}",
        internal.response
    );
    assert!(
        !internal.response.contains("index out of sync"),
        "internal details stay in the notes"
    );
}

#[test]
fn fallback_quotes_the_best_memories_first() {
    let mut context = ctx();
    context.profile = Profile::Micro;
    context.memory_hits = vec![
        hit("m1", "You parked on level 3.", 0.55),
        hit("m2", "Your car is a blue Golf.", 0.72),
        hit("m3", "", 0.99),
        hit("m4", "You like\n\ntea.", 0.40),
        hit("m5", "Weak match.", 0.10),
    ];
    let r = ResponseFormatter::default().format_fallback_response(context, "where is my car");
    assert_eq!(
        r.response,
        "Here is what I remember:\n- Your car is a blue Golf.\n- You parked on level 3.\n- You like tea."
    );
    let ids: Vec<&str> = r
        .provenance
        .memory_hits
        .iter()
        .map(|h| h.id.as_str())
        .collect();
    assert_eq!(ids, ["m2", "m1", "m4"]);
    assert!((r.confidence - 0.72).abs() < 1e-6);
    assert_eq!(r.debug.route, "fallback");
    assert_eq!(r.debug.profile, Profile::Micro);
}

#[test]
fn fallback_with_one_memory_quotes_it_inline() {
    let mut context = ctx();
    context.memory_hits = vec![hit("m1", "Your dog is called Rex.", 0.8)];
    let r = ResponseFormatter::default().format_fallback_response(context, "dog name");
    assert_eq!(
        r.response,
        "Here is what I remember: Your dog is called Rex."
    );
    assert!((r.confidence - 0.8).abs() < 1e-6);
}

#[test]
fn fallback_without_memories_is_honest_and_unsure() {
    let r = ResponseFormatter::default().format_fallback_response(ctx(), "write me a poem");
    assert!(r
        .response
        .starts_with("I can't answer that without a language model"));
    assert!(r.response.contains("calculation"));
    assert_eq!(r.confidence, NO_MEMORY_CONFIDENCE);
    assert!(r.provenance.memory_hits.is_empty());
}

#[test]
fn a_clock_that_went_backwards_gives_zero_time() {
    let mut context = ctx();
    context.now_ms = 10;
    let r = ResponseFormatter::default().format_fallback_response(context, "q");
    assert_eq!(r.debug.inference_time_ms, 0.0);
}

#[test]
fn the_wire_shape_is_camel_case() {
    let r = ResponseFormatter::default().format_fallback_response(ctx(), "q");
    let json = serde_json::to_value(&r).unwrap();
    for key in [
        "response",
        "confidence",
        "provenance",
        "debug",
        "reasoningSteps",
    ] {
        assert!(json.get(key).is_some(), "{key}");
    }
    for key in ["fromAgents", "memoryHits", "toolUsed", "degraded"] {
        assert!(json["provenance"].get(key).is_some(), "{key}");
    }
    for key in [
        "inferenceTimeMs",
        "quality",
        "traceId",
        "profile",
        "route",
        "notes",
    ] {
        assert!(json["debug"].get(key).is_some(), "{key}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn clean_never_exceeds_max_chars_nor_panics(text in "\\PC{0,200}", max in 0usize..60) {
        let cleaned = ResponseFormatter::new(max).clean(&text);
        prop_assert!(cleaned.chars().count() <= max);
        prop_assert_eq!(cleaned.trim(), cleaned.as_str());
    }

    #[test]
    fn confidence_is_always_within_0_and_1(
        text in "\\PC{0,200}",
        similarity in prop::num::f32::ANY,
    ) {
        let f = ResponseFormatter::default();
        let mut context = ctx();
        context.memory_hits = vec![hit("m", &text, similarity)];
        let r = f.format_fallback_response(context, &text);
        prop_assert!((0.0..=1.0).contains(&r.confidence), "{}", r.confidence);
        let source = AnswerSource::Single;
        let r = f.format_simple_response(ctx(), SimpleAnswer {
            query: &text,
            text: &text,
            source: &source,
            answer_vector: None,
            memory_vectors: &[],
        });
        prop_assert!((0.0..=1.0).contains(&r.confidence), "{}", r.confidence);
    }
}
