use std::cell::RefCell;
use std::rc::Rc;

use chrono_tz::Tz;
use futures_executor::block_on;

use super::*;
use crate::circuit_breaker::{BreakerConfig, CircuitBreaker};
use crate::clock::ManualClock;
use crate::embedding::Embedder;
use crate::error::ErrorCode;
use crate::guard::LocalGuard;
use crate::health::{HealthConfig, WorkerHealthMonitor};
use crate::json_schema::JsonSchemas;
use crate::memory::{MemoryConfig, MemoryKind};
use crate::profile::Profile;
use crate::store::MemStore;
use crate::tasks::{SchemaCompiler, Sleep};
use crate::testing::{tool_context, WordsEmbedder};
use crate::tools::{Choice, ToolExecutionManager, ToolPolicy};

/// The words embedder of these tests: 64 dimensions.
fn words() -> WordsEmbedder {
    WordsEmbedder::new("words/v1", 64)
}

fn context(memories: Option<Rc<Memories>>) -> ToolContext {
    ToolContext {
        memories,
        embedder: Rc::new(words()),
        ..tool_context(1_000_000, Tz::UTC)
    }
}

/// A context over a fresh in-memory store.
fn context_with_memories() -> (ToolContext, Rc<Memories>) {
    let clock = ManualClock::new(1_000_000);
    let memories = Rc::new(
        block_on(Memories::load(
            Rc::new(MemStore::new()),
            clock.shared(),
            MemoryConfig::for_profile(Profile::Full),
            words().info().clone(),
            7,
            &|_| {},
        ))
        .unwrap(),
    );
    (context(Some(Rc::clone(&memories))), memories)
}

fn remember(query: &str) -> Option<Value> {
    Remember::default().intent(query)
}

fn search(query: &str) -> Option<Value> {
    MemorySearch::default().intent(query)
}

// --- intent rules -------------------------------------------------------------------------

#[test]
fn remember_claims_requests_to_remember_a_fact() {
    for (query, text) in [
        ("Remember that my dog is called Rex", "my dog is called Rex"),
        (
            "Please remember my sister's name is Anna",
            "my sister's name is Anna",
        ),
        (
            "Note that the meeting moved to 4pm",
            "the meeting moved to 4pm",
        ),
        ("please remember that the code is 1234.", "the code is 1234"),
        ("  REMEMBER: buy milk!  ", "buy milk"),
        (
            "Keep in mind that I am allergic to peanuts",
            "I am allergic to peanuts",
        ),
        (
            "Don't forget that the car needs an MOT",
            "the car needs an MOT",
        ),
        (
            "Do not forget that Zoë flies on Monday",
            "Zoë flies on Monday",
        ),
        ("Remember to water the plants", "to water the plants"),
        // Lowercasing İ changes its byte length; the text is cut from the original.
        ("REMEMBER THAT İstanbul is big", "İstanbul is big"),
    ] {
        assert_eq!(remember(query), Some(json!({ "text": text })), "{query}");
    }
}

#[test]
fn remember_leaves_questions_and_statements_alone() {
    for query in [
        "Remember when we went to Paris?",
        "Remember when we went to Paris",
        "Remember what I said about the car",
        "Remember who won the match",
        "Remember if the oven is off",
        "Do you remember my dog?",
        "What do you remember about my dog?",
        "I remember nothing",
        "remember",
        "Remember:   ",
        "remembering things is hard",
        "Notes that matter",
        "rememberé the café",
        "",
    ] {
        assert_eq!(remember(query), None, "{query:?}");
    }
}

#[test]
fn memory_search_claims_explicit_searches() {
    for (query, topic) in [
        ("What do you remember about my car?", "my car"),
        ("What do you remember about X", "X"),
        (
            "What did I tell you about the project deadline?",
            "the project deadline",
        ),
        ("Search my memories for birthdays", "birthdays"),
        ("search memory for passwords.", "passwords"),
        ("Recall what I said about Anna", "Anna"),
        ("What do you know about me and cooking?", "cooking"),
    ] {
        assert_eq!(search(query), Some(json!({ "query": topic })), "{query}");
    }
}

#[test]
fn memory_search_leaves_other_queries_alone() {
    for query in [
        "When is my dentist appointment?",
        "Remember that my dog is called Rex",
        "Do you remember my dog?",
        "What do you remember about?",
        "What do you remember about   ?",
        "search my memories",
        "Tell me what you remember about my car",
        "What is 12 * 7?",
        "",
    ] {
        assert_eq!(search(query), None, "{query:?}");
    }
}

#[test]
fn each_example_is_claimed_by_its_own_tool_only() {
    let remember = Remember::default();
    let search = MemorySearch::default();
    for example in &remember.spec().examples {
        assert!(remember.intent(example).is_some(), "{example}");
        assert!(search.intent(example).is_none(), "{example}");
    }
    for example in &search.spec().examples {
        assert!(search.intent(example).is_some(), "{example}");
        assert!(remember.intent(example).is_none(), "{example}");
    }
}

#[test]
fn intent_arguments_satisfy_the_tools_schemas() {
    let remember = Remember::default();
    let search = MemorySearch::default();
    let remember_check = JsonSchemas.compile(&remember.spec().parameters).unwrap();
    let search_check = JsonSchemas.compile(&search.spec().parameters).unwrap();
    let arguments = remember
        .intent("Remember that my dog is called Rex")
        .unwrap();
    assert_eq!(remember_check.first_error(&arguments), None);
    let arguments = search.intent("Search my memories for birthdays").unwrap();
    assert_eq!(search_check.first_error(&arguments), None);
    // And the schemas are strict.
    assert!(remember_check.first_error(&json!({"text": ""})).is_some());
    assert!(remember_check
        .first_error(&json!({"text": "x", "kind": "fact"}))
        .is_some());
    assert!(search_check.first_error(&json!({})).is_some());
}

#[test]
fn neither_keeps_its_result() {
    assert!(!Remember::default().keeps_result());
    assert!(!MemorySearch::default().keeps_result());
    assert_eq!(Remember::default().spec().name, "remember");
    assert_eq!(MemorySearch::default().spec().name, "memory_search");
}

// --- running ------------------------------------------------------------------------------

#[test]
fn remember_stores_a_fact_that_memory_search_finds() {
    let (context, memories) = context_with_memories();
    let output =
        block_on(Remember::default().run(&json!({"text": "my dog is called Rex"}), &context))
            .unwrap();
    assert_eq!(output.text, "I'll remember that: my dog is called Rex");
    assert_eq!(output.value["text"], "my dog is called Rex");
    let id = output.value["id"].as_str().unwrap().to_owned();
    let record = block_on(memories.get(&id)).unwrap().unwrap();
    assert_eq!(record.kind, MemoryKind::Fact);
    assert_eq!(record.text, "my dog is called Rex");

    block_on(Remember::default().run(
        &json!({"text": "the wifi password is on the fridge"}),
        &context,
    ))
    .unwrap();

    let output =
        block_on(MemorySearch::default().run(&json!({"query": "my dog"}), &context)).unwrap();
    assert_eq!(
        output.text,
        "Here is what I remember about my dog:\n- my dog is called Rex"
    );
    assert_eq!(output.value["query"], "my dog");
    let hits = output.value["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0]["id"], id.as_str());
    assert_eq!(hits[0]["text"], "my dog is called Rex");
    assert!(hits[0]["similarity"].as_f64().unwrap() >= 0.2);
}

#[test]
fn memory_search_says_when_it_remembers_nothing() {
    let (context, _memories) = context_with_memories();
    block_on(Remember::default().run(&json!({"text": "my dog is called Rex"}), &context)).unwrap();
    let output = block_on(
        MemorySearch::default().run(&json!({"query": "quantum physics lectures"}), &context),
    )
    .unwrap();
    assert_eq!(
        output.text,
        "I don't remember anything about quantum physics lectures."
    );
    assert_eq!(
        output.value,
        json!({"query": "quantum physics lectures", "hits": []})
    );
}

#[test]
fn without_a_memory_store_both_fail_as_tools() {
    let context = context(None);
    let remembered = block_on(Remember::default().run(&json!({"text": "a fact"}), &context));
    let searched = block_on(MemorySearch::default().run(&json!({"query": "a fact"}), &context));
    for result in [remembered, searched] {
        let error = result.unwrap_err();
        assert_eq!(error.code(), ErrorCode::Tool);
        assert!(
            matches!(&error, Error::Tool { tool, .. } if tool == "memory"),
            "{error:?}"
        );
    }
}

#[test]
fn missing_arguments_are_invalid_input() {
    let (context, memories) = context_with_memories();
    let error = block_on(Remember::default().run(&json!({}), &context)).unwrap_err();
    assert_eq!(error, Error::invalid_input("text", "is missing"));
    let error = block_on(MemorySearch::default().run(&json!({"query": 3}), &context)).unwrap_err();
    assert_eq!(error, Error::invalid_input("query", "is missing"));
    assert_eq!(memories.stats().count, 0);
}

#[test]
fn through_the_manager_remember_then_search() {
    let clock = ManualClock::new(1_000_000);
    let sleep: Sleep = Rc::new(|_| Box::pin(async {}));
    let mut manager = ToolExecutionManager::new(ToolPolicy::default(), clock.shared(), sleep);
    manager
        .register(Rc::new(Remember::default()), &JsonSchemas)
        .unwrap();
    manager
        .register(Rc::new(MemorySearch::default()), &JsonSchemas)
        .unwrap();
    let guard = LocalGuard {
        breakers: RefCell::new(CircuitBreaker::new(
            clock.shared(),
            BreakerConfig::default(),
        )),
        health: RefCell::new(WorkerHealthMonitor::new(
            clock.shared(),
            HealthConfig::default(),
        )),
    };
    let (context, memories) = context_with_memories();
    let embedder = words();
    let choose = |query: &str| {
        let vector = block_on(embedder.embed(&[query])).unwrap().remove(0);
        block_on(manager.choose(query, &vector, &embedder))
            .unwrap()
            .unwrap()
    };

    let chosen = choose("Remember that my sister's name is Anna.");
    assert_eq!(chosen.name(), "remember");
    assert_eq!(chosen.choice, Choice::Intent);
    let run = block_on(manager.execute(&chosen, &context, &guard)).unwrap();
    assert_eq!(run.attempts, 1);
    assert_eq!(run.arguments, json!({"text": "my sister's name is Anna"}));
    assert_eq!(memories.stats().count, 1);

    let chosen = choose("What do you remember about my sister?");
    assert_eq!(chosen.name(), "memory_search");
    let run = block_on(manager.execute(&chosen, &context, &guard)).unwrap();
    assert_eq!(
        run.output.value["hits"][0]["text"],
        "my sister's name is Anna"
    );
}
