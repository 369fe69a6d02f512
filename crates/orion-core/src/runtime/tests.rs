use serde_json::json;

use super::*;
use crate::clock::ManualClock;
use crate::health::HealthStatus;
use crate::ErrorCode;

fn runtime() -> (ManualClock, WorkerRuntime) {
    let clock = ManualClock::new(500);
    (clock.clone(), WorkerRuntime::new(clock.shared(), "9.9.9"))
}

fn send(rt: &mut WorkerRuntime, message: Value) -> Vec<Value> {
    match rt.handle(message) {
        Reply::Send(messages) => messages
            .iter()
            .map(|m| serde_json::to_value(m).unwrap())
            .collect(),
        Reply::Crash => panic!("unexpected crash"),
    }
}

fn init(rt: &mut WorkerRuntime, debug: bool) {
    let answer = send(rt, json!({"v": 1, "id": 0, "type": "init", "debug": debug}));
    assert_eq!(answer[0]["type"], "response", "{answer:?}");
}

#[test]
fn init_then_ping_round_trips_the_payload() {
    let (_, mut rt) = runtime();
    let answer = send(&mut rt, json!({"v": 1, "id": 0, "type": "init"}));
    assert_eq!(
        answer,
        [json!({"type": "response", "v": 1, "id": 0,
                "result": {"core": CORE_VERSION, "web": "9.9.9", "protocol": 1}})]
    );
    let payload = json!({"nested": [1, 2, {"x": "ü"}]});
    let answer = send(
        &mut rt,
        json!({"v": 1, "id": 7, "type": "ping", "payload": payload}),
    );
    assert_eq!(answer[0]["id"], 7);
    assert_eq!(answer[0]["result"]["payload"], payload);
    assert_eq!(answer[0]["result"]["atMs"], 500);
}

#[test]
fn requests_before_init_and_a_second_init_are_refused() {
    let (_, mut rt) = runtime();
    let answer = send(&mut rt, json!({"v": 1, "id": 1, "type": "ping"}));
    assert_eq!(answer[0]["error"]["code"], ErrorCode::InitOrder.as_str());
    assert_eq!(answer[0]["id"], 1);
    init(&mut rt, false);
    let answer = send(&mut rt, json!({"v": 1, "id": 2, "type": "init"}));
    assert_eq!(answer[0]["error"]["code"], ErrorCode::InitOrder.as_str());
}

#[test]
fn crash_is_debug_only() {
    let (_, mut rt) = runtime();
    init(&mut rt, false);
    let answer = send(&mut rt, json!({"v": 1, "id": 3, "type": "crash"}));
    assert_eq!(
        answer[0]["error"]["code"],
        ErrorCode::DebugDisabled.as_str()
    );

    let (_, mut rt) = runtime();
    init(&mut rt, true);
    assert_eq!(
        rt.handle(json!({"v": 1, "id": 3, "type": "crash"})),
        Reply::Crash
    );
}

#[test]
fn the_health_report_has_both_components() {
    let (_, mut rt) = runtime();
    init(&mut rt, false);
    let answer = send(&mut rt, json!({"v": 1, "id": 4, "type": "health"}));
    let report = &answer[0]["result"];
    assert_eq!(report["status"], "healthy");
    let names: Vec<_> = report["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, [PROTOCOL_COMPONENT, RUNTIME_COMPONENT]);
    // The report is made before the health request itself is counted: only `init` so far.
    assert_eq!(report["components"][1]["pending"], 0);
    assert_eq!(report["components"][1]["totalCalls"], 1);
}

#[test]
fn malformed_messages_count_against_the_protocol_and_emit_a_transition() {
    let (_, mut rt) = runtime();
    init(&mut rt, false);
    send(&mut rt, json!({"v": 1, "id": "x", "type": "ping"}));
    send(&mut rt, json!("junk"));
    let answer = send(&mut rt, json!({"v": 1, "id": 5, "type": "nope"}));
    assert_eq!(answer[0]["type"], "error");
    assert_eq!(answer[0]["id"], 5);
    assert_eq!(answer[1]["type"], "event");
    assert_eq!(answer[1]["event"]["kind"], "health_transition");
    assert_eq!(answer[1]["event"]["component"], PROTOCOL_COMPONENT);
    assert_eq!(answer[1]["event"]["to"], "unhealthy");
    // The worker keeps serving; a good message ends the streak.
    let answer = send(&mut rt, json!({"v": 1, "id": 6, "type": "ping"}));
    assert_eq!(answer[0]["type"], "response");
    assert_eq!(answer[1]["event"]["to"], "healthy");
    assert_eq!(rt.health.status(PROTOCOL_COMPONENT), HealthStatus::Healthy);
}

#[test]
fn init_applies_the_configured_thresholds_and_keeps_history() {
    let (_, mut rt) = runtime();
    send(&mut rt, json!(1));
    let answer = send(
        &mut rt,
        json!({"v": 1, "id": 0, "type": "init", "health": {"unhealthyConsecutiveFailures": 1},
               "breaker": {"failureThreshold": 1}}),
    );
    assert_eq!(answer[0]["type"], "response");
    // The rejected message before init is still on record.
    let answer = send(&mut rt, json!({"v": 1, "id": 1, "type": "health"}));
    assert_eq!(answer[0]["result"]["components"][0]["totalFailures"], 1);
    let answer = send(&mut rt, json!(null));
    assert_eq!(answer[1]["event"]["to"], "unhealthy");
    let permit = rt.breakers().try_acquire("op").unwrap();
    rt.breakers().record_failure(permit);
    assert!(rt.breakers().try_acquire("op").is_err());
}

#[test]
fn platform_rejections_are_answered_and_counted() {
    let (_, mut rt) = runtime();
    let error = Error::MessageTooLarge {
        path: "payload".into(),
        size: 50_000_000,
        limit: 1_048_576,
    };
    let answer: Vec<Value> = rt
        .reject(Some(8), &error)
        .iter()
        .map(|m| serde_json::to_value(m).unwrap())
        .collect();
    assert_eq!(answer[0]["id"], 8);
    assert_eq!(answer[0]["error"]["code"], "ERR_MESSAGE_TOO_LARGE");
    assert_eq!(rt.health.report().components[0].total_failures, 1);
}
