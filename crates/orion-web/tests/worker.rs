//! orion-web in a real dedicated worker in headless Chromium (`cargo xtask test` runs these with
//! wasm-bindgen-test-runner): the breaker on the web clock, the protocol round trip through
//! `OrionWorker`, and the message guard on values only a browser can produce.
#![cfg(target_arch = "wasm32")]
// `#[wasm_bindgen_test]` functions are tests, but clippy does not know it: a failed unwrap here is a
// failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;
use std::rc::Rc;

use gloo_timers::future::TimeoutFuture;
use js_sys::{Array, Function, Map, Object, Reflect};
use orion_core::{BreakerConfig, BreakerState, CircuitBreaker, Clock, ErrorCode};
use orion_web::{check_message, Limits, OrionWorker, WebClock};
use serde::Serialize;
use serde_json::{json, Value};
use wasm_bindgen::prelude::*;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_dedicated_worker);

/// An `OrionWorker` whose posted messages land in a list instead of going to a page.
struct Harness {
    worker: OrionWorker,
    posted: Rc<RefCell<Vec<Value>>>,
    published: Rc<RefCell<Vec<JsValue>>>,
    _post: Closure<dyn FnMut(JsValue)>,
    _publish: Closure<dyn FnMut(JsValue)>,
    /// The lock names the worker asked for.
    leadership: Rc<RefCell<Vec<JsValue>>>,
    _lead: Closure<dyn FnMut(JsValue)>,
}

impl Harness {
    fn new() -> Self {
        let posted = Rc::new(RefCell::new(Vec::new()));
        let sink = Rc::clone(&posted);
        let post = Closure::<dyn FnMut(JsValue)>::new(move |message: JsValue| {
            let value: Value = serde_wasm_bindgen::from_value(message).unwrap();
            sink.borrow_mut().push(value);
        });
        let published = Rc::new(RefCell::new(Vec::new()));
        let sink = Rc::clone(&published);
        let publish = Closure::<dyn FnMut(JsValue)>::new(move |message: JsValue| {
            sink.borrow_mut().push(message);
        });
        let leadership = Rc::new(RefCell::new(Vec::new()));
        let sink = Rc::clone(&leadership);
        let lead = Closure::<dyn FnMut(JsValue)>::new(move |name: JsValue| {
            sink.borrow_mut().push(name);
        });
        let function: &Function = post.as_ref().unchecked_ref();
        let publish_function: &Function = publish.as_ref().unchecked_ref();
        Self {
            worker: OrionWorker::new(
                function.clone(),
                JsValue::UNDEFINED,
                publish_function.clone(),
                lead.as_ref().unchecked_ref::<Function>().clone(),
            ),
            posted,
            published,
            _post: post,
            _publish: publish,
            leadership,
            _lead: lead,
        }
    }

    /// Sends `message` and returns everything the worker posted up to its answer (some answers,
    /// like `init`'s, come from a spawned task, so this waits for them).
    async fn send(&mut self, message: JsValue) -> Vec<Value> {
        self.worker.handle(message);
        for _ in 0..1_000 {
            let answered = self
                .posted
                .borrow()
                .iter()
                .any(|m| m["type"] == "response" || m["type"] == "error");
            if answered {
                break;
            }
            TimeoutFuture::new(1).await;
        }
        self.posted.borrow_mut().drain(..).collect()
    }

    async fn send_json(&mut self, message: Value) -> Vec<Value> {
        let serializer = serde_wasm_bindgen::Serializer::json_compatible();
        self.send(message.serialize(&serializer).unwrap()).await
    }
}

fn object(entries: &[(&str, JsValue)]) -> JsValue {
    let object = Object::new();
    for (key, value) in entries {
        Reflect::set(&object, &JsValue::from_str(key), value).unwrap();
    }
    object.into()
}

fn ping_with(id: u32, payload: JsValue) -> JsValue {
    object(&[
        ("v", 1.into()),
        ("id", id.into()),
        ("type", "ping".into()),
        ("payload", payload),
    ])
}

#[wasm_bindgen_test]
async fn the_breaker_opens_and_half_opens_on_the_web_clock() {
    let clock = WebClock::shared();
    let config = BreakerConfig {
        open_timeout_ms: 60,
        ..BreakerConfig::default()
    };
    let mut breaker = CircuitBreaker::new(clock.clone(), config);
    for _ in 0..5 {
        let permit = breaker.try_acquire("fetch").unwrap();
        breaker.record_failure(permit);
    }
    assert_eq!(breaker.state("fetch"), BreakerState::Open);
    let refused = breaker.try_acquire("fetch").unwrap_err();
    assert_eq!(refused.code(), ErrorCode::CircuitOpen);

    let before = clock.now_ms();
    TimeoutFuture::new(80).await;
    assert!(
        clock.now_ms() >= before + 60,
        "the web clock did not advance"
    );
    let probe = breaker.try_acquire("fetch").unwrap();
    assert!(probe.is_probe());
    assert_eq!(breaker.state("fetch"), BreakerState::HalfOpen);
    breaker.record_success(probe);
    let probe = breaker.try_acquire("fetch").unwrap();
    breaker.record_success(probe);
    assert_eq!(breaker.state("fetch"), BreakerState::Closed);
    let reasons: Vec<_> = breaker
        .drain_events()
        .iter()
        .map(|e| serde_json::to_value(e.reason).unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            json!("failure_threshold"),
            json!("timeout_elapsed"),
            json!("probes_succeeded")
        ]
    );
}

#[wasm_bindgen_test]
fn these_tests_run_in_a_dedicated_worker() {
    let scope = Object::get_prototype_of(&js_sys::global());
    let name = Reflect::get(&scope.constructor(), &"name".into()).unwrap();
    assert_eq!(
        name.as_string().as_deref(),
        Some("DedicatedWorkerGlobalScope")
    );
}

#[wasm_bindgen_test]
fn the_web_clock_reads_wall_time() {
    let now = WebClock.now_ms() as f64;
    assert!((now - js_sys::Date::now()).abs() < 1_000.0);
}

#[wasm_bindgen_test]
async fn a_protocol_round_trip_through_the_worker() {
    let mut h = Harness::new();
    let answer = h.send_json(json!({"v": 1, "id": 1, "type": "init"})).await;
    assert_eq!(answer[0]["type"], "response");
    assert_eq!(answer[0]["result"]["web"], orion_web::WEB_VERSION);

    let payload = json!({"text": "héllo ✓ 中文", "n": [1, 2.5, -3], "ok": true, "none": null});
    let answer = h
        .send_json(json!({"v": 1, "id": 2, "type": "ping", "payload": payload}))
        .await;
    assert_eq!(answer.len(), 1);
    assert_eq!(answer[0]["id"], 2);
    assert_eq!(answer[0]["result"]["payload"], payload);
    let at = answer[0]["result"]["atMs"].as_f64().unwrap();
    assert!((at - js_sys::Date::now()).abs() < 5_000.0);

    let answer = h
        .send_json(json!({"v": 1, "id": 3, "type": "health"}))
        .await;
    assert_eq!(answer[0]["result"]["status"], "healthy");
    assert_eq!(answer[0]["result"]["leader"], false);

    // `init` asked for the default database's leader lock; the grant makes this worker leader.
    let asked: Vec<Option<String>> = h
        .leadership
        .borrow()
        .iter()
        .map(|n| n.as_string())
        .collect();
    assert_eq!(asked, [Some("orion-leader/orion".to_owned())]);
    h.worker.leadership_gained();
    let answer = h
        .send_json(json!({"v": 1, "id": 4, "type": "health"}))
        .await;
    // The `leadership` event was posted first, then the answer.
    assert_eq!(answer[0]["event"]["kind"], "leadership");
    assert_eq!(answer[0]["event"]["database"], "orion");
    assert_eq!(answer[1]["result"]["leader"], true);
}

#[wasm_bindgen_test]
async fn refused_messages_are_answered_with_their_id_when_it_can_be_read() {
    let mut h = Harness::new();
    h.send_json(json!({"v": 1, "id": 1, "type": "init"})).await;

    let long = JsValue::from_str(&"y".repeat(2 * 1024 * 1024));
    let answer = h.send(ping_with(5, long)).await;
    assert_eq!(answer[0]["id"], 5);
    assert_eq!(answer[0]["error"]["code"], "ERR_MESSAGE_TOO_LARGE");
    assert!(answer[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("`payload`"));

    let answer = h
        .send(object(&[
            ("v", 1.into()),
            ("id", "five".into()),
            ("type", "ping".into()),
        ]))
        .await;
    assert_eq!(answer[0]["id"], Value::Null);
    assert_eq!(answer[0]["error"]["code"], "ERR_INVALID_MESSAGE");

    let answer = h.send(JsValue::UNDEFINED).await;
    assert_eq!(answer[0]["id"], Value::Null);
    assert_eq!(answer[0]["error"]["code"], "ERR_INVALID_MESSAGE");

    let answer = h.send_json(json!({"v": 1, "id": 6, "type": "ping"})).await;
    assert_eq!(answer[0]["type"], "response");
}

#[wasm_bindgen_test]
fn the_guard_walks_bounded_and_names_the_path() {
    let limits = Limits {
        max_string_len: 8,
        max_depth: 4,
        max_values: 50,
    };
    let ok = object(&[("a", Array::of2(&1.into(), &"short".into()).into())]);
    assert!(check_message(&ok, &limits).is_ok());

    let long = object(&[("a", Array::of2(&1.into(), &"far too long".into()).into())]);
    let error = check_message(&long, &limits).unwrap_err();
    assert_eq!(error.code(), ErrorCode::MessageTooLarge);
    assert!(error.to_string().contains("`a[1]`"), "{error}");

    let cyclic = Object::new();
    Reflect::set(&cyclic, &"me".into(), &cyclic).unwrap();
    let error = check_message(&cyclic, &limits).unwrap_err();
    assert_eq!(error.code(), ErrorCode::MessageTooLarge);
    assert!(error.to_string().contains("me.me.me.me"), "{error}");

    let wide = Array::new();
    for i in 0..60 {
        wide.push(&i.into());
    }
    let error = check_message(&wide.into(), &limits).unwrap_err();
    assert_eq!(error.code(), ErrorCode::MessageTooLarge);

    let map = object(&[("m", Map::new().into())]);
    let error = check_message(&map, &limits).unwrap_err();
    assert_eq!(error.code(), ErrorCode::InvalidMessage);
    assert!(error.to_string().contains("Map"), "{error}");

    let big = JsValue::bigint_from_str("12345678901234567890");
    let error = check_message(&object(&[("b", big)]), &limits).unwrap_err();
    assert!(error.to_string().contains("BigInt"), "{error}");

    let bare: Object = Object::create(&JsValue::NULL.unchecked_into());
    assert!(check_message(&bare.into(), &limits).is_ok());

    // A lone surrogate cannot become Rust text without being altered: refused, with its path.
    let lone = js_sys::JsString::from_char_code1(0xd800);
    let error = check_message(&object(&[("text", lone.into())]), &limits).unwrap_err();
    assert_eq!(error.code(), ErrorCode::InvalidInput);
    assert!(error.to_string().contains("`text`"), "{error}");
    let pair = js_sys::JsString::from_char_code2(0xd83d, 0xde00);
    assert!(check_message(&object(&[("text", pair.into())]), &limits).is_ok());
}

#[wasm_bindgen_test]
fn memory_headroom_is_checked_without_aborting() {
    assert!(orion_web::headroom::ensure(64 << 20).is_ok());
    // More than wasm32's 4 GiB address space: an error, not an abort of the instance.
    let error = orion_web::headroom::ensure(usize::MAX - 4096).unwrap_err();
    assert!(error.contains("not enough memory"), "{error}");
    let error = orion_web::headroom::ensure(u32::MAX as usize).unwrap_err();
    assert!(error.contains("not enough memory"), "{error}");
    // The worker is still alive and can allocate.
    assert_eq!(vec![1u8; 1 << 20].len(), 1 << 20);
}

#[wasm_bindgen_test]
async fn memories_persist_in_indexeddb_through_the_worker() {
    let database = format!("orion-worker-test-{}", js_sys::Math::random());
    let mut first = Harness::new();
    let init = json!({"v": 1, "id": 1, "type": "init", "profile": "micro", "database": database});
    let answer = answer_of(first.send_json(init.clone()).await);
    assert_eq!(answer["type"], "response", "{answer:?}");
    let added = answer_of(
        first
            .send_json(json!({"v": 1, "id": 2, "type": "memory_add", "text": "the quick brown fox", "kind": "fact"}))
            .await,
    );
    let id = added["result"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{added:?}"))
        .to_owned();
    let published = first.published.borrow_mut().drain(..).collect::<Vec<_>>();
    assert_eq!(published.len(), 1, "the change went to other tabs");

    // A second worker (another tab) on the same database finds it after loading its index.
    let mut second = Harness::new();
    second.send_json(init).await;
    let hit = answer_of(
        second
            .send_json(json!({"v": 1, "id": 3, "type": "memory_search", "query": "the quick brown fox", "k": 1}))
            .await,
    );
    assert_eq!(hit["result"][0]["id"], id.as_str());
    assert!(hit["result"][0]["similarity"].as_f64().unwrap() > 0.99);

    // And a change published by the second reaches the first's index.
    let added = answer_of(
        second
            .send_json(
                json!({"v": 1, "id": 4, "type": "memory_add", "text": "lazy dogs sleep all day"}),
            )
            .await,
    );
    let change = second.published.borrow_mut().pop().unwrap();
    first.worker.memories_changed(change);
    TimeoutFuture::new(50).await;
    let hit = answer_of(
        first
            .send_json(json!({"v": 1, "id": 5, "type": "memory_search", "query": "lazy dogs sleep all day", "k": 1}))
            .await,
    );
    assert_eq!(hit["result"][0]["id"], added["result"]["id"]);
    let stats = answer_of(
        first
            .send_json(json!({"v": 1, "id": 6, "type": "memory_stats"}))
            .await,
    );
    assert_eq!(stats["result"]["count"], 2, "{stats:?}");
}

/// The answer among the messages a request produced (events may come before it).
fn answer_of(messages: Vec<Value>) -> Value {
    messages
        .iter()
        .find(|m| m["type"] == "response" || m["type"] == "error")
        .cloned()
        .unwrap_or_else(|| panic!("no answer in {messages:?}"))
}
