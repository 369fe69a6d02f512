//! `ask` through the protocol: events, answers, refusals and health.

use std::cell::RefCell;
use std::rc::Rc;

use serde_json::{json, Value};

use super::super::tests::{fake_platform, init_with, send};
use super::*;
use crate::clock::ManualClock;

struct Harness {
    rt: WorkerRuntime,
    events: Rc<RefCell<Vec<Event>>>,
}

fn harness(init: Value) -> Harness {
    let clock = ManualClock::new(1_790_000_000_000);
    let (_, mut platform) = fake_platform(false);
    let events = Rc::new(RefCell::new(Vec::new()));
    let sink = Rc::clone(&events);
    platform.emit = Rc::new(move |event| sink.borrow_mut().push(event));
    let mut rt = WorkerRuntime::new(clock.shared(), "1", platform);
    let answer = init_with(&mut rt, init);
    assert_eq!(answer[0]["type"], "response", "{answer:?}");
    Harness { rt, events }
}

impl Harness {
    fn call(&mut self, id: u32, request: Value) -> Value {
        let mut message = json!({"v": 1, "id": id});
        if let (Some(m), Some(extra)) = (message.as_object_mut(), request.as_object()) {
            m.extend(extra.clone());
        }
        send(&mut self.rt, message).remove(0)
    }

    fn stages(&self, request_id: u32) -> Vec<String> {
        self.events
            .borrow()
            .iter()
            .filter_map(|event| match event {
                Event::AskStatus {
                    request_id: id,
                    stage,
                    ..
                } if *id == request_id => Some(stage.as_str().to_owned()),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn a_tool_question_is_answered_with_its_status_events() {
    let mut h = harness(json!({"models": {"embedding": "/m"}}));
    let answer = h.call(
        1,
        json!({"type": "ask", "request": {"query": "What is 12 * 7?", "timeZone": "Europe/Paris"}}),
    );
    assert_eq!(answer["type"], "response", "{answer}");
    let result = &answer["result"];
    assert!(
        result["response"].as_str().unwrap().contains("84"),
        "{result}"
    );
    assert_eq!(result["provenance"]["toolUsed"], "calculator");
    assert_eq!(result["confidence"], 1.0);
    assert_eq!(result["debug"]["route"], "tool");
    assert_eq!(result["debug"]["profile"], "full");
    assert_eq!(h.stages(1), ["tool_search"]);
    let health = h.call(2, json!({"type": "health"}));
    let names: Vec<&str> = health["result"]["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(
        names.contains(&"orchestrator") && names.contains(&"tools"),
        "{names:?}"
    );
}

#[test]
fn without_a_language_model_a_general_question_falls_back_and_says_why() {
    let mut h = harness(json!({"models": {"embedding": "/m"}}));
    let answer = h.call(
        1,
        json!({"type": "ask", "request": {"query": "Why is the sky blue?"}}),
    );
    let result = &answer["result"];
    assert_eq!(result["debug"]["route"], "fallback", "{answer}");
    assert_eq!(result["provenance"]["degraded"], json!(["generator"]));
    assert_eq!(h.stages(1), ["tool_search", "memory_search"]);
}

#[test]
fn bad_asks_are_refused_with_the_field_and_cancel_answers_whether_it_ran() {
    let mut h = harness(json!({"models": {"embedding": "/m"}}));
    for (request, field) in [
        (json!({"query": " "}), "query"),
        (
            json!({"query": "hi", "timeZone": "Nowhere/Else"}),
            "timeZone",
        ),
        (json!({"query": "hi", "extra": 1}), "extra"),
        (json!({"query": 7}), "query"),
    ] {
        let answer = h.call(1, json!({"type": "ask", "request": request}));
        assert_eq!(answer["error"]["code"], "ERR_INVALID_INPUT", "{answer}");
        assert!(
            answer["error"]["message"].as_str().unwrap().contains(field),
            "{answer}"
        );
    }
    let cancelled = h.call(2, json!({"type": "ask_cancel", "requestId": 99}));
    assert_eq!(cancelled["result"], false);
}
