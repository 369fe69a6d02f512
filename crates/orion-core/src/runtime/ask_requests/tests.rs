//! `ask` through the protocol: events, answers, refusals and health.

use std::cell::RefCell;
use std::rc::Rc;

use serde_json::{json, Value};

use super::super::tests::{assert_invalid_input, fake_platform, init_with, send};
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
    // The result is kept as a memory after the answer, by the platform's executor.
    assert!(result["debug"]["notes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|note| note
            .as_str()
            .unwrap()
            .contains("kept as a memory after the answer")));
    let kept = h.call(3, json!({"type": "memory_list", "kind": "tool_result"}));
    let items = kept["result"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{kept}");
    assert!(items[0]["text"].as_str().unwrap().contains("84"));
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

fn weather_tool() -> Value {
    json!({
        "name": "weather",
        "description": "Current weather for a city",
        "examples": ["What is the weather in Oslo today?"],
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}
    })
}

fn poll(
    future: &mut crate::embedding::LocalBoxFuture<'static, Vec<crate::protocol::Outgoing>>,
) -> Option<Vec<Value>> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(messages) => Some(
            messages
                .iter()
                .map(|m| serde_json::to_value(m).unwrap())
                .collect(),
        ),
        std::task::Poll::Pending => None,
    }
}

#[test]
fn a_page_tool_is_called_through_the_page_and_answers() {
    let mut h = harness(json!({"models": {"embedding": "/m"}, "tools": [weather_tool()]}));
    let reply = h.rt.handle(json!({"v": 1, "id": 1, "type": "ask",
        "request": {"query": "What is the weather in Oslo today?"}}));
    let Reply::Spawn(mut answer) = reply else {
        panic!("an ask runs asynchronously")
    };
    assert!(poll(&mut answer).is_none(), "the tool waits for the page");
    let call = h
        .events
        .borrow()
        .iter()
        .find_map(|event| match event {
            Event::ToolHostCall {
                call_id,
                tool,
                arguments,
            } => Some((call_id.clone(), tool.clone(), arguments.clone())),
            _ => None,
        })
        .expect("a tool_host_call event");
    assert_eq!(call.1, "weather");
    assert_eq!(call.2, json!({"city": "What is the weather in Oslo today"}));
    let delivered = h.call(
        2,
        json!({"type": "tool_host_result", "callId": call.0, "value": "Sunny, 12 °C"}),
    );
    assert_eq!(delivered["type"], "response", "{delivered}");
    let answer = poll(&mut answer).expect("answered once the page did");
    let result = &answer[0]["result"];
    assert_eq!(result["response"], "Sunny, 12 °C", "{answer:?}");
    assert_eq!(result["provenance"]["toolUsed"], "weather");
    // A second answer for the same call is refused.
    let late = h.call(
        3,
        json!({"type": "tool_host_result", "callId": call.0, "value": "again"}),
    );
    assert_eq!(late["error"]["code"], "ERR_INVALID_INPUT", "{late}");
}

#[test]
fn a_bad_page_tool_refuses_the_init() {
    let clock = ManualClock::new(0);
    let (_, platform) = fake_platform(false);
    let mut rt = WorkerRuntime::new(clock.shared(), "1", platform);
    let mut tool = weather_tool();
    tool["parameters"] = json!({"type": "nonsense"});
    let answer = init_with(&mut rt, json!({"tools": [weather_tool(), tool]}));
    assert_invalid_input(&answer, "tools[1].parameters");
    let answer = init_with(&mut rt, json!({"tools": [weather_tool(), weather_tool()]}));
    assert!(
        answer[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already registered"),
        "{answer:?}"
    );
}

#[test]
fn ask_settings_are_checked_at_init() {
    let clock = ManualClock::new(0);
    let (_, platform) = fake_platform(false);
    let mut rt = WorkerRuntime::new(clock.shared(), "1", platform);
    for (settings, field) in [
        (json!({"memoryK": 0}), "ask.memoryK"),
        (
            json!({"memoryMinSimilarity": 1.5}),
            "ask.memoryMinSimilarity",
        ),
        (json!({"agentMaxTokens": 5000}), "ask.agentMaxTokens"),
    ] {
        let answer = init_with(&mut rt, json!({"ask": settings}));
        assert_invalid_input(&answer, field);
    }
    let answer = init_with(&mut rt, json!({"ask": {"unknown": 1}}));
    assert_eq!(
        answer[0]["error"]["code"], "ERR_INVALID_MESSAGE",
        "{answer:?}"
    );
    let answer = init_with(
        &mut rt,
        json!({"ask": {"memoryK": 3, "liteDebateMinWords": 4, "rememberExchanges": false}}),
    );
    assert_eq!(answer[0]["type"], "response", "{answer:?}");
}

#[test]
fn an_embedding_model_that_failed_to_load_is_named_in_every_answer() {
    let clock = ManualClock::new(0);
    let (_, platform) = fake_platform(true);
    let mut rt = WorkerRuntime::new(clock.shared(), "1", platform);
    init_with(&mut rt, json!({"models": {"embedding": "/m"}}));
    let answer = send(
        &mut rt,
        json!({"v": 1, "id": 1, "type": "ask", "request": {"query": "What is 2 + 2?"}}),
    )
    .remove(0);
    let result = &answer["result"];
    assert_eq!(result["debug"]["profile"], "micro", "{answer}");
    assert_eq!(result["provenance"]["degraded"], json!(["embedder"]));
    assert!(result["debug"]["notes"][0]
        .as_str()
        .unwrap()
        .contains("could not load"));
    assert!(result["response"].as_str().unwrap().contains('4'));
}
