use std::cell::{Cell, RefCell};

use serde_json::json;

use super::*;
use crate::clock::ManualClock;
use crate::embedding::EmbeddingModelInfo;
use crate::health::HealthStatus;
use crate::store::conformance::block_on;
use crate::store::{MemStore, Table};
use crate::ErrorCode;

/// An embedder whose vectors are [text length, 1] normalised; fails on the text "fail".
struct LengthEmbedder(EmbeddingModelInfo);

impl LengthEmbedder {
    fn shared(version: &str) -> Rc<dyn Embedder> {
        Rc::new(Self(EmbeddingModelInfo {
            id: "test".into(),
            version: version.into(),
            dims: 2,
        }))
    }
}

impl Embedder for LengthEmbedder {
    fn info(&self) -> &EmbeddingModelInfo {
        &self.0
    }

    fn embed<'a>(
        &'a self,
        texts: &'a [&'a str],
    ) -> LocalBoxFuture<'a, crate::error::Result<Vec<Vec<f32>>>> {
        Box::pin(async move {
            texts
                .iter()
                .map(|t| match *t {
                    "fail" => Err(Error::Embedding("scripted failure".into())),
                    t => {
                        let mut v = vec![t.len() as f32, 1.0];
                        crate::embedding::normalize(&mut v);
                        Ok(v)
                    }
                })
                .collect()
        })
    }
}

/// Loads a "model" embedder versioned `model/<profile>`, or fails while `fail` is set; counts its
/// calls.
pub(super) struct FakeLoader {
    fail: Cell<bool>,
    calls: Cell<u32>,
}

impl EmbedderLoader for FakeLoader {
    fn load(
        &self,
        profile: Profile,
        source: &ModelSource,
        _heartbeat: Heartbeat,
    ) -> LocalBoxFuture<'static, crate::error::Result<Rc<dyn Embedder>>> {
        self.calls.set(self.calls.get() + 1);
        let result = if self.fail.get() {
            Err(Error::model_load(
                source.describe(crate::ModelFile::Weights),
                "HTTP 404",
            ))
        } else {
            Ok(LengthEmbedder::shared(&format!("model/{}", profile.name())))
        };
        Box::pin(async move { result })
    }
}

pub(super) fn fake_platform(fail: bool) -> (Rc<FakeLoader>, Platform) {
    let loader = Rc::new(FakeLoader {
        fail: Cell::new(fail),
        calls: Cell::new(0),
    });
    let platform = Platform {
        loader: loader.clone(),
        fallback: LengthEmbedder::shared("hashing/v1"),
        facts: DeviceFacts {
            hardware_concurrency: Some(8),
            device_memory_gb: Some(8.0),
            storage_quota_bytes: None,
            wasm_simd: true,
        },
        store: Rc::new(MemStoreOpener(Rc::new(MemStore::new()))),
        seed: 1,
        emit: Rc::new(|_| {}),
        // Everything here completes without waiting: run it to the end at once.
        spawn: Rc::new(|mut work| {
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            let _ = work.as_mut().poll(&mut cx);
        }),
        publish_memory_changes: Rc::new(|_| {}),
        request_leadership: Rc::new(|_| {}),
        publish_task_changes: Rc::new(|_| {}),
        sleep: Rc::new(|_| Box::pin(std::future::pending())),
        schemas: Rc::new(crate::json_schema::JsonSchemas),
        generators: Rc::new(NoLlm),
    };
    (loader, platform)
}

/// A platform without a local LLM.
struct NoLlm;

impl GeneratorLoader for NoLlm {
    fn load(
        &self,
        source: &LlmSource,
        _settings: &LlmSettings,
        _heartbeat: Heartbeat,
    ) -> LocalBoxFuture<'static, crate::error::Result<Rc<dyn crate::Generator>>> {
        let error = Error::model_load(&source.url, "no LLM in these tests");
        Box::pin(async move { Err(error) })
    }
}

/// Opens the same in-memory store every time.
struct MemStoreOpener(Rc<MemStore>);

impl StoreOpener for MemStoreOpener {
    fn open(&self, _name: &str) -> LocalBoxFuture<'static, crate::error::Result<Rc<dyn Store>>> {
        let store: Rc<dyn Store> = self.0.clone();
        Box::pin(async move { Ok(store) })
    }
}

fn runtime() -> (ManualClock, WorkerRuntime) {
    let clock = ManualClock::new(500);
    let (_, platform) = fake_platform(false);
    (
        clock.clone(),
        WorkerRuntime::new(clock.shared(), "9.9.9", platform),
    )
}

/// Runs a future that completes without waiting (every fake here is ready at once).
fn ready<T>(future: LocalBoxFuture<'static, T>) -> T {
    let mut future = future;
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(out) => out,
        std::task::Poll::Pending => panic!("the future did not complete"),
    }
}

pub(super) fn send(rt: &mut WorkerRuntime, message: Value) -> Vec<Value> {
    let reply = rt.handle(message);
    // Background work runs first and as far as it can without waiting (as an executor would run
    // it before the next message).
    for mut work in rt.take_background() {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let _ = work.as_mut().poll(&mut cx);
    }
    let messages = match reply {
        Reply::Send(messages) => messages,
        Reply::Spawn(future) => ready(future),
        Reply::Crash => panic!("unexpected crash"),
    };
    messages
        .iter()
        .map(|m| serde_json::to_value(m).unwrap())
        .collect()
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
        answer[0],
        json!({"type": "response", "v": 1, "id": 0,
                "result": {"core": CORE_VERSION, "web": "9.9.9", "protocol": 1}})
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
    assert!(matches!(
        rt.handle(json!({"v": 1, "id": 3, "type": "crash"})),
        Reply::Crash
    ));
}

#[test]
fn the_health_report_has_every_component() {
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
    assert_eq!(
        names,
        [
            EMBEDDER_COMPONENT,
            GENERATOR_COMPONENT,
            ASK_COMPONENT,
            PROTOCOL_COMPONENT,
            RUNTIME_COMPONENT,
            STORE_COMPONENT,
            TASKS_COMPONENT,
            crate::tools::TOOLS_COMPONENT,
        ]
    );
    // The report is made before the health request itself is counted: only `init` so far.
    let runtime = component(&answer[0], RUNTIME_COMPONENT);
    assert_eq!(runtime["pending"], 0);
    assert_eq!(runtime["totalCalls"], 1);
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
    let status = rt.shared.borrow_mut().health.status(PROTOCOL_COMPONENT);
    assert_eq!(status, HealthStatus::Healthy);
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
    assert_eq!(
        component(&answer[0], PROTOCOL_COMPONENT)["totalFailures"],
        1
    );
    let answer = send(&mut rt, json!(null));
    assert_eq!(answer[1]["event"]["to"], "unhealthy");
    rt.with_breakers(|b| {
        let permit = b.try_acquire("op").unwrap();
        b.record_failure(permit);
        assert!(b.try_acquire("op").is_err());
    });
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
    let report = rt.shared.borrow_mut().health.report();
    assert_eq!(report.components[0].total_failures, 1);
}

pub(super) fn init_with(rt: &mut WorkerRuntime, init: Value) -> Vec<Value> {
    let mut message = json!({"v": 1, "id": 0, "type": "init"});
    if let (Some(m), Some(extra)) = (message.as_object_mut(), init.as_object()) {
        m.extend(extra.clone());
    }
    send(rt, message)
}

/// Asserts that `answer` is an `ERR_INVALID_INPUT` error whose message names `field`.
pub(super) fn assert_invalid_input(answer: &[Value], field: &str) {
    assert_eq!(
        answer[0]["error"]["code"], "ERR_INVALID_INPUT",
        "{answer:?}"
    );
    assert!(
        answer[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains(field),
        "{answer:?}"
    );
}

#[test]
fn embed_uses_the_loaded_model_and_reports_it() {
    let clock = ManualClock::new(0);
    let (loader, platform) = fake_platform(false);
    let mut rt = WorkerRuntime::new(clock.shared(), "1", platform);
    init_with(&mut rt, json!({"models": {"embedding": "/models/minilm"}}));
    assert_eq!(loader.calls.get(), 1);
    let answer = send(
        &mut rt,
        json!({"v": 1, "id": 1, "type": "embed", "texts": ["abc", ""]}),
    );
    assert_eq!(answer[0]["result"]["model"]["version"], "model/full");
    let vectors = answer[0]["result"]["vectors"].as_array().unwrap();
    assert_eq!(vectors.len(), 2);
    assert_eq!(vectors[1], json!([0.0, 1.0]));
    let profile = send(&mut rt, json!({"v": 1, "id": 2, "type": "profile"}));
    assert_eq!(profile[0]["result"]["chosen"], "full");
    assert_eq!(profile[0]["result"]["active"], "full");
    assert_eq!(profile[0]["result"]["embedding"]["version"], "model/full");
    assert_eq!(profile[0]["result"]["fallbackReason"], Value::Null);
    // The model is loaded once, not per request.
    send(
        &mut rt,
        json!({"v": 1, "id": 3, "type": "embed", "texts": ["x"]}),
    );
    assert_eq!(loader.calls.get(), 1);
}

#[test]
fn a_failed_load_falls_back_to_micro_with_an_event_and_health() {
    let clock = ManualClock::new(0);
    let (_, platform) = fake_platform(true);
    let mut rt = WorkerRuntime::new(clock.shared(), "1", platform);
    let answer = init_with(&mut rt, json!({"models": {"embedding": "/m"}}));
    assert_eq!(answer[0]["type"], "response");
    let fallback = answer
        .iter()
        .find(|m| m["event"]["kind"] == "embedder_fallback")
        .expect("a fallback event");
    assert!(fallback["event"]["reason"]
        .as_str()
        .unwrap()
        .contains("/m/model.safetensors"));
    assert_eq!(fallback["event"]["model"]["version"], "hashing/v1");
    assert_eq!(fallback["event"]["code"], "ERR_MODEL_LOAD");
    let answer = send(
        &mut rt,
        json!({"v": 1, "id": 1, "type": "embed", "texts": ["abc"]}),
    );
    assert_eq!(answer[0]["result"]["model"]["version"], "hashing/v1");
    let profile = send(&mut rt, json!({"v": 1, "id": 2, "type": "profile"}));
    assert_eq!(profile[0]["result"]["chosen"], "full");
    assert_eq!(profile[0]["result"]["active"], "micro");
    assert_eq!(profile[0]["result"]["budget"]["maxMemories"], 5_000);
    let health = send(&mut rt, json!({"v": 1, "id": 3, "type": "health"}));
    let embedder = &health[0]["result"]["components"][0];
    assert_eq!(embedder["name"], EMBEDDER_COMPONENT);
    assert_eq!(embedder["totalFailures"], 1);
    assert!(embedder["lastError"].as_str().unwrap().contains("HTTP 404"));
}

/// A runtime initialised with `init` over a loader that fails when `fail`: whether init fell
/// back, the version `embed` answers with, the profile, and how many loads were made.
fn started_with(init: Value, fail: bool) -> (bool, Value, Value, u32) {
    let (loader, platform) = fake_platform(fail);
    let mut rt = WorkerRuntime::new(ManualClock::new(0).shared(), "1", platform);
    let answer = init_with(&mut rt, init);
    let fell_back = answer
        .iter()
        .any(|m| m["event"]["kind"] == "embedder_fallback");
    let embedded = send(
        &mut rt,
        json!({"v": 1, "id": 1, "type": "embed", "texts": ["a"]}),
    );
    let profile = send(&mut rt, json!({"v": 1, "id": 2, "type": "profile"}));
    (
        fell_back,
        embedded[0]["result"]["model"]["version"].clone(),
        profile[0]["result"].clone(),
        loader.calls.get(),
    )
}

#[test]
fn micro_runs_the_model_when_given_one_and_hashing_otherwise() {
    let with_model = json!({"profile": "micro", "models": {"embedding": "/m"}});
    let (fell_back, version, profile, loads) = started_with(with_model.clone(), false);
    assert!(!fell_back);
    assert_eq!(version, "model/micro");
    assert_eq!(profile["active"], "micro");
    assert_eq!(loads, 1);

    // Without a model, hashing is micro's embedder: no load, no fallback.
    let (fell_back, version, profile, loads) = started_with(json!({"profile": "micro"}), false);
    assert!(!fell_back);
    assert_eq!(version, "hashing/v1");
    assert_eq!(profile["fallbackReason"], Value::Null);
    assert_eq!(loads, 0);

    // A model profile without a model falls back to micro's hashing embedder.
    let (fell_back, version, profile, loads) = started_with(json!({"profile": "lite"}), false);
    assert!(fell_back);
    assert_eq!(version, "hashing/v1");
    assert_eq!(profile["requested"], "lite");
    assert_eq!(profile["active"], "micro");
    assert_eq!(loads, 0);

    // Micro's model failing to load: the hashing embedder, and why.
    let (fell_back, version, profile, loads) = started_with(with_model, true);
    assert!(fell_back);
    assert_eq!(version, "hashing/v1");
    assert_eq!(profile["active"], "micro");
    assert!(profile["fallbackReason"].is_string());
    assert_eq!(loads, 1);
}

#[test]
fn embed_errors_and_limits_are_typed() {
    let (_, mut rt) = runtime();
    init(&mut rt, false);
    let answer = send(
        &mut rt,
        json!({"v": 1, "id": 1, "type": "embed", "texts": ["ok", "fail"]}),
    );
    assert_eq!(answer[0]["error"]["code"], "ERR_EMBEDDING");
    let many: Vec<String> = (0..=MAX_EMBED_TEXTS).map(|i| i.to_string()).collect();
    let answer = send(
        &mut rt,
        json!({"v": 1, "id": 2, "type": "embed", "texts": many}),
    );
    assert_eq!(answer[0]["error"]["code"], "ERR_MESSAGE_TOO_LARGE");
    let answer = send(
        &mut rt,
        json!({"v": 1, "id": 3, "type": "embed", "texts": [1]}),
    );
    assert_eq!(answer[0]["error"]["code"], "ERR_INVALID_MESSAGE");
    assert!(answer[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("texts[0]"));
}

fn embed_as(rt: &mut WorkerRuntime, id: u32, profile: &str) -> Value {
    let answer = send(
        rt,
        json!({"v": 1, "id": id, "type": "embed", "texts": ["abc"], "profile": profile}),
    );
    answer[0].clone()
}

#[test]
fn embed_can_ask_for_another_profile_which_loads_once_on_demand() {
    let clock = ManualClock::new(0);
    let (loader, platform) = fake_platform(false);
    let mut rt = WorkerRuntime::new(clock.shared(), "1", platform);
    init_with(&mut rt, json!({"models": {"embedding": "/m"}}));
    assert_eq!(loader.calls.get(), 1);
    let full = embed_as(&mut rt, 1, "full");
    assert_eq!(full["result"]["model"]["version"], "model/full");
    assert_eq!(loader.calls.get(), 1, "full needs no new load");
    for id in 3..5 {
        let lite = embed_as(&mut rt, id, "lite");
        assert_eq!(lite["result"]["model"]["version"], "model/lite");
    }
    assert_eq!(loader.calls.get(), 2, "lite is loaded once");
    // Given a model, micro runs it too.
    let micro = embed_as(&mut rt, 5, "micro");
    assert_eq!(micro["result"]["model"]["version"], "model/micro");
    assert_eq!(loader.calls.get(), 3);
    // The active embedder is unchanged.
    let answer = send(
        &mut rt,
        json!({"v": 1, "id": 9, "type": "embed", "texts": ["x"]}),
    );
    assert_eq!(answer[0]["result"]["model"]["version"], "model/full");
    let profile = send(&mut rt, json!({"v": 1, "id": 10, "type": "profile"}));
    assert_eq!(profile[0]["result"]["active"], "full");
}

#[test]
fn an_on_demand_load_that_fails_is_an_error_and_is_retried_next_time() {
    let clock = ManualClock::new(0);
    let (loader, platform) = fake_platform(false);
    let mut rt = WorkerRuntime::new(clock.shared(), "1", platform);
    init_with(
        &mut rt,
        json!({"profile": "micro", "models": {"embedding": "/m"}}),
    );
    loader.fail.set(true);
    let failed = embed_as(&mut rt, 1, "lite");
    assert_eq!(failed["error"]["code"], "ERR_MODEL_LOAD");
    assert!(failed["error"]["message"]
        .as_str()
        .unwrap()
        .contains("/m/model.safetensors"));
    loader.fail.set(false);
    let lite = embed_as(&mut rt, 2, "lite");
    assert_eq!(lite["result"]["model"]["version"], "model/lite");
    assert_eq!(
        loader.calls.get(),
        3,
        "micro's own load, the failed one, the retry"
    );
    let health = send(&mut rt, json!({"v": 1, "id": 3, "type": "health"}));
    let embedder = &health[0]["result"]["components"][0];
    assert_eq!(embedder["totalFailures"], 1);
}

#[test]
fn asking_for_a_model_profile_without_a_model_or_after_a_fallback_is_an_error() {
    let clock = ManualClock::new(0);
    let (loader, platform) = fake_platform(false);
    let mut rt = WorkerRuntime::new(clock.shared(), "1", platform);
    init_with(&mut rt, json!({"profile": "micro"}));
    let failed = embed_as(&mut rt, 1, "full");
    assert_eq!(failed["error"]["code"], "ERR_MODEL_LOAD");
    assert!(failed["error"]["message"]
        .as_str()
        .unwrap()
        .contains("models.embedding"));
    assert_eq!(loader.calls.get(), 0);

    // The chosen profile fell back: asking for it explicitly tries again, and says why it failed.
    let (loader, platform) = fake_platform(true);
    let mut rt = WorkerRuntime::new(clock.shared(), "1", platform);
    init_with(&mut rt, json!({"models": {"embedding": "/m"}}));
    let failed = embed_as(&mut rt, 1, "full");
    assert_eq!(failed["error"]["code"], "ERR_MODEL_LOAD");
    assert_eq!(loader.calls.get(), 2);
    let bad = embed_as(&mut rt, 2, "huge");
    assert_eq!(bad["error"]["code"], "ERR_INVALID_MESSAGE");
    assert!(bad["error"]["message"]
        .as_str()
        .unwrap()
        .contains("profile"));
}

/// A loader whose download finishes only when the test says so, keeping its heartbeat.
struct SlowLoader {
    heartbeat: RefCell<Option<Heartbeat>>,
    done: Rc<Cell<bool>>,
}

impl EmbedderLoader for SlowLoader {
    fn load(
        &self,
        _profile: Profile,
        _source: &ModelSource,
        heartbeat: Heartbeat,
    ) -> LocalBoxFuture<'static, crate::error::Result<Rc<dyn Embedder>>> {
        *self.heartbeat.borrow_mut() = Some(heartbeat);
        let done = Rc::clone(&self.done);
        Box::pin(std::future::poll_fn(move |_| {
            if done.get() {
                std::task::Poll::Ready(Ok(LengthEmbedder::shared("model/full")))
            } else {
                std::task::Poll::Pending
            }
        }))
    }
}

#[test]
fn a_long_download_that_makes_progress_is_not_a_hang() {
    let clock = ManualClock::new(0);
    let loader = Rc::new(SlowLoader {
        heartbeat: RefCell::new(None),
        done: Rc::new(Cell::new(false)),
    });
    let (_, mut platform) = fake_platform(false);
    platform.loader = loader.clone();
    let mut rt = WorkerRuntime::new(clock.shared(), "1", platform);
    let init = json!({"v": 1, "id": 0, "type": "init", "models": {"embedding": "/m"}});
    let Reply::Spawn(mut answer) = rt.handle(init) else {
        panic!("init answers after the model loads");
    };
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(answer.as_mut().poll(&mut cx).is_pending());
    let status = |rt: &WorkerRuntime| rt.shared.borrow_mut().health.status(EMBEDDER_COMPONENT);
    let heartbeat = loader
        .heartbeat
        .borrow()
        .clone()
        .expect("the loader got a heartbeat");
    for _ in 0..5 {
        clock.advance(9_000);
        heartbeat();
        assert_eq!(status(&rt), HealthStatus::Healthy);
    }
    // Silence past the timeout while loading is a hang.
    clock.advance(10_001);
    assert_eq!(status(&rt), HealthStatus::Unhealthy);
    loader.done.set(true);
    let messages = match answer.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(messages) => messages,
        std::task::Poll::Pending => panic!("the load finished"),
    };
    assert!(matches!(messages[0], Outgoing::Response { id: 0, .. }));
    assert_eq!(status(&rt), HealthStatus::Healthy);
}

/// A runtime on `store` whose emitted events and published changes are recorded.
struct MemoryHarness {
    rt: WorkerRuntime,
    store: Rc<MemStore>,
    events: Rc<RefCell<Vec<Event>>>,
    published: Rc<RefCell<Vec<Vec<String>>>>,
}

fn memory_harness(store: Rc<MemStore>) -> MemoryHarness {
    let clock = ManualClock::new(1_000);
    let (_, mut platform) = fake_platform(false);
    let events = Rc::new(RefCell::new(Vec::new()));
    let published = Rc::new(RefCell::new(Vec::new()));
    let sink = Rc::clone(&events);
    platform.emit = Rc::new(move |event| sink.borrow_mut().push(event));
    let sink = Rc::clone(&published);
    platform.publish_memory_changes = Rc::new(move |ids| sink.borrow_mut().push(ids));
    platform.store = Rc::new(MemStoreOpener(store.clone()));
    let mut rt = WorkerRuntime::new(clock.shared(), "1", platform);
    init_with(&mut rt, json!({"models": {"embedding": "/m"}}));
    MemoryHarness {
        rt,
        store,
        events,
        published,
    }
}

impl MemoryHarness {
    fn call(&mut self, id: u32, request: Value) -> Value {
        let mut message = json!({"v": 1, "id": id});
        if let (Some(m), Some(extra)) = (message.as_object_mut(), request.as_object()) {
            m.extend(extra.clone());
        }
        send(&mut self.rt, message).remove(0)
    }
}

#[test]
fn memory_requests_round_trip_through_the_protocol() {
    let mut h = memory_harness(Rc::new(MemStore::new()));
    let added = h.call(
        1,
        json!({"type": "memory_add", "text": "hello there", "kind": "fact", "meta": {"a": 1}}),
    );
    let id = added["result"]["id"].as_str().unwrap().to_owned();
    assert_eq!(added["result"]["embeddingVersion"], "model/full");
    assert_eq!(added["result"]["meta"], json!({"a": 1}));
    let many = h.call(2, json!({"type": "memory_add_many", "items": [{"text": "one"}, {"text": "two", "kind": "feedback"}]}));
    assert_eq!(many["result"].as_array().unwrap().len(), 2);
    let got = h.call(3, json!({"type": "memory_get", "memoryId": id}));
    assert_eq!(got["result"]["text"], "hello there");
    let missing = h.call(4, json!({"type": "memory_get", "memoryId": "mnone"}));
    assert_eq!(missing["result"], Value::Null);
    let hits = h.call(
        5,
        json!({"type": "memory_search", "query": "hello there", "k": 2, "minSimilarity": -1}),
    );
    assert_eq!(hits["result"][0]["text"], "hello there");
    assert!((hits["result"][0]["similarity"].as_f64().unwrap() - 1.0).abs() < 1e-6);
    let page = h.call(6, json!({"type": "memory_list", "kind": "feedback"}));
    assert_eq!(page["result"]["items"][0]["text"], "two");
    assert_eq!(page["result"]["next"], Value::Null);
    let stats = h.call(7, json!({"type": "memory_stats"}));
    assert_eq!(stats["result"]["count"], 3);
    assert_eq!(stats["result"]["byKind"]["feedback"], 1);
    assert_eq!(stats["result"]["maxMemories"], 100_000);
    let deleted = h.call(8, json!({"type": "memory_delete", "memoryId": id}));
    assert_eq!(deleted["result"], true);
    let purged = h.call(9, json!({"type": "memory_purge"}));
    assert_eq!(purged["result"], 2);
    assert_eq!(block_on(h.store.count(Table::Memories)).unwrap(), 0);
    // Index loading and add_many progress went to the page at once; changes to other workers.
    let events = h.events.borrow();
    assert!(events.contains(&Event::MemoryIndex {
        loaded: 0,
        done: true
    }));
    assert!(events.contains(&Event::MemoryProgress { done: 2, total: 2 }));
    let published = h.published.borrow();
    assert_eq!(
        published.len(),
        4,
        "add, add_many, delete, purge: {published:?}"
    );
    assert_eq!(published[1].len(), 2);
}

#[test]
fn memory_requests_refuse_bad_input_with_the_field_and_count_storage_failures() {
    let store = Rc::new(MemStore::new());
    let mut h = memory_harness(store.clone());
    let cases = [
        (json!({"type": "memory_add", "text": "  "}), "text"),
        (
            json!({"type": "memory_add", "text": "x", "kind": "gossip"}),
            "kind",
        ),
        (json!({"type": "memory_search", "query": "x", "k": 0}), "k"),
        (
            json!({"type": "memory_search", "query": "x", "k": 1e9}),
            "k",
        ),
        (
            json!({"type": "memory_search", "query": "x", "k": 1.5}),
            "k",
        ),
        (json!({"type": "memory_list", "limit": -3}), "limit"),
        (
            json!({"type": "memory_add_many", "items": [{"text": "ok"}, {"text": ""}]}),
            "items[1].text",
        ),
    ];
    for (i, (request, field)) in cases.into_iter().enumerate() {
        let answer = h.call(i as u32 + 1, request.clone());
        assert_eq!(answer["error"]["code"], "ERR_INVALID_INPUT", "{request}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("`{field}`")),
            "{request}: {message}"
        );
    }
    assert_eq!(block_on(store.count(Table::Memories)).unwrap(), 0);
    let health = h.call(20, json!({"type": "health"}));
    assert_eq!(
        component(&health, STORE_COMPONENT)["totalFailures"],
        0,
        "bad input is not a store failure"
    );

    store.set_max_rows(Some(0));
    let answer = h.call(21, json!({"type": "memory_add", "text": "no room"}));
    assert_eq!(answer["error"]["code"], "ERR_QUOTA");
    let health = h.call(22, json!({"type": "health"}));
    let store_health = component(&health, STORE_COMPONENT);
    assert_eq!(store_health["totalFailures"], 1);
    assert!(store_health["lastError"]
        .as_str()
        .unwrap()
        .contains("quota"));
}

/// The row of `name` in a health answer.
fn component(health: &Value, name: &str) -> Value {
    health["result"]["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap()
}

/// A database that cannot be opened (IndexedDB disabled, say).
struct BrokenOpener;

impl StoreOpener for BrokenOpener {
    fn open(&self, _name: &str) -> LocalBoxFuture<'static, crate::error::Result<Rc<dyn Store>>> {
        Box::pin(async { Err(Error::Store("IndexedDB is not available".into())) })
    }
}

#[test]
fn without_a_database_memory_requests_fail_and_the_rest_works() {
    let clock = ManualClock::new(0);
    let (_, mut platform) = fake_platform(false);
    platform.store = Rc::new(BrokenOpener);
    let mut rt = WorkerRuntime::new(clock.shared(), "1", platform);
    init_with(&mut rt, json!({}));
    let answer = send(&mut rt, json!({"v": 1, "id": 1, "type": "memory_stats"}));
    assert_eq!(answer[0]["error"]["code"], "ERR_STORE");
    let answer = send(
        &mut rt,
        json!({"v": 1, "id": 2, "type": "embed", "texts": ["still"]}),
    );
    assert_eq!(answer[0]["type"], "response");
}

#[test]
fn changes_from_another_worker_reach_the_index() {
    let store = Rc::new(MemStore::new());
    let mut first = memory_harness(store.clone());
    let mut second = memory_harness(store);
    let added = second.call(
        1,
        json!({"type": "memory_add", "text": "from the other tab"}),
    );
    let search =
        json!({"type": "memory_search", "query": "from the other tab", "minSimilarity": 0.99});
    assert_eq!(first.call(2, search.clone())["result"], json!([]));
    let changed = second.published.borrow().last().cloned().unwrap();
    match first.rt.memories_changed(changed) {
        Reply::Spawn(work) => assert!(ready(work).is_empty()),
        other => panic!("{other:?}"),
    }
    let hits = first.call(3, search);
    assert_eq!(hits["result"][0]["id"], added["result"]["id"]);
}

#[test]
fn the_host_can_set_retention_and_bad_settings_are_refused() {
    let clock = ManualClock::new(0);
    let (_, platform) = fake_platform(false);
    let mut rt = WorkerRuntime::new(clock.shared(), "1", platform);
    init_with(
        &mut rt,
        json!({"memory": {"maxMemories": 7, "toolResultTtlMs": 1000, "maxTextBytes": 10}}),
    );
    let stats = send(&mut rt, json!({"v": 1, "id": 1, "type": "memory_stats"}));
    assert_eq!(stats[0]["result"]["maxMemories"], 7);
    assert_eq!(stats[0]["result"]["toolResultTtlMs"], 1000);
    let long = send(
        &mut rt,
        json!({"v": 1, "id": 2, "type": "memory_add", "text": "eleven char"}),
    );
    assert_eq!(long[0]["error"]["code"], "ERR_INVALID_INPUT");

    let (_, platform) = fake_platform(false);
    let mut rt = WorkerRuntime::new(clock.shared(), "1", platform);
    // Refused at init, so `Orion.create` rejects; the worker is still waiting for a good init.
    let refused = init_with(&mut rt, json!({"memory": {"maxMemories": 0}}));
    assert_eq!(refused[0]["error"]["code"], "ERR_INVALID_INPUT");
    assert!(refused[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("memory.maxMemories"));
    let accepted = init_with(&mut rt, json!({}));
    assert_eq!(accepted[0]["type"], "response");
}

#[test]
fn init_asks_for_the_databases_leader_lock_and_health_says_once_granted() {
    let clock = ManualClock::new(1_000);
    let (_, mut platform) = fake_platform(false);
    let asked = Rc::new(RefCell::new(Vec::new()));
    let events = Rc::new(RefCell::new(Vec::new()));
    let sink = Rc::clone(&asked);
    platform.request_leadership = Rc::new(move |name| sink.borrow_mut().push(name));
    let sink = Rc::clone(&events);
    platform.emit = Rc::new(move |event| sink.borrow_mut().push(event));
    let mut rt = WorkerRuntime::new(clock.shared(), "1", platform);
    init_with(&mut rt, json!({"database": "notes", "profile": "micro"}));
    assert_eq!(*asked.borrow(), ["orion-leader/notes"]);

    let leader = |rt: &mut WorkerRuntime| {
        send(rt, json!({"v": 1, "id": 7, "type": "health"}))[0]["result"]["leader"].clone()
    };
    assert_eq!(
        leader(&mut rt),
        json!(false),
        "not before the lock is granted"
    );
    let leadership = |events: &RefCell<Vec<Event>>| {
        events
            .borrow()
            .iter()
            .filter(|e| matches!(e, Event::Leadership { .. }))
            .count()
    };
    assert_eq!(leadership(&events), 0);

    rt.leadership_gained();
    rt.leadership_gained();
    assert_eq!(leader(&mut rt), json!(true));
    assert_eq!(
        leadership(&events),
        1,
        "one event, however often the platform says so"
    );
    assert!(events.borrow().iter().any(|e| *e
        == Event::Leadership {
            database: "notes".into()
        }));
}

#[test]
fn backups_are_taken_listed_verified_exported_and_scheduled_hourly() {
    let (_, mut platform) = fake_platform(false);
    let events = Rc::new(RefCell::new(Vec::new()));
    let sink = Rc::clone(&events);
    platform.emit = Rc::new(move |event| sink.borrow_mut().push(event));
    let mut rt = WorkerRuntime::new(ManualClock::new(500).shared(), "9.9.9", platform);
    init(&mut rt, false);
    let added = send(
        &mut rt,
        json!({"v": 1, "id": 1, "type": "memory_add", "text": "Alice likes tea", "kind": "fact"}),
    );
    assert_eq!(added[0]["type"], "response", "{added:?}");
    let created = send(
        &mut rt,
        json!({"v": 1, "id": 2, "type": "backups_create", "label": "first"}),
    );
    let backup = &created[0]["result"];
    assert_eq!(backup["kind"], "manual");
    assert_eq!(backup["itemCount"], 1);
    assert_eq!(backup["label"], "first");
    let id = backup["id"].as_str().unwrap().to_owned();

    let listed = send(&mut rt, json!({"v": 1, "id": 3, "type": "backups_list"}));
    assert_eq!(listed[0]["result"].as_array().unwrap().len(), 1);
    let verified = send(
        &mut rt,
        json!({"v": 1, "id": 4, "type": "backups_verify", "backupId": id}),
    );
    assert_eq!(verified[0]["result"], json!({"valid": true, "issues": []}));
    let exported = send(
        &mut rt,
        json!({"v": 1, "id": 5, "type": "backups_export", "backupId": id}),
    );
    // The file comes in its stored parts, as events; the page joins them.
    let document = exported_text(&events.borrow(), 5, &exported[0]["result"]);
    let contents = crate::backup_file::decode_and_validate(
        &document,
        &crate::backup_file::BackupLimits::default(),
    )
    .unwrap();
    assert_eq!(contents.memories.len(), 1);
    assert_eq!(contents.header.unwrap().backup_id, id);

    // The automatic backups: a schedule on the job engine, first due 5 minutes after the start.
    let schedules = send(
        &mut rt,
        json!({"v": 1, "id": 6, "type": "tasks_list_schedules"}),
    );
    let auto = schedules[0]["result"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "orion.backups.auto")
        .cloned()
        .expect("the automatic backup schedule");
    assert_eq!(auto["nextRunAt"], 500 + 300_000);
    assert_eq!(auto["spec"]["every"], 3_600_000);
    assert_eq!(auto["template"]["name"], "orion.backup");

    let deleted = send(
        &mut rt,
        json!({"v": 1, "id": 7, "type": "backups_delete", "backupId": id}),
    );
    assert_eq!(deleted[0]["result"], true);
    let bad = send(
        &mut rt,
        json!({"v": 1, "id": 8, "type": "backups_export", "backupId": id}),
    );
    assert_eq!(bad[0]["error"]["code"], "ERR_INVALID_INPUT");
}

/// The file a `backups_export` request `id` sent in `backup_part` events, checked against its
/// answer (`{parts, bytes, itemCount}`).
fn exported_text(events: &[Event], id: RequestId, answer: &Value) -> String {
    let parts: Vec<(u32, &str)> = events
        .iter()
        .filter_map(|event| match event {
            Event::BackupPart {
                request_id,
                index,
                text,
            } if *request_id == id => Some((*index, text.as_str())),
            _ => None,
        })
        .collect();
    let indexes: Vec<u32> = parts.iter().map(|(index, _)| *index).collect();
    assert_eq!(
        indexes,
        (0..indexes.len() as u32).collect::<Vec<_>>(),
        "in order, none missing"
    );
    assert_eq!(answer["parts"], parts.len());
    let text: String = parts.iter().map(|(_, text)| *text).collect();
    assert_eq!(answer["bytes"], text.len());
    text
}

/// The automatic backup schedule, if there is one.
fn auto_backup_schedule(rt: &mut WorkerRuntime) -> Option<Value> {
    let schedules = send(
        rt,
        json!({"v": 1, "id": 90, "type": "tasks_list_schedules"}),
    );
    schedules[0]["result"]
        .as_array()?
        .iter()
        .find(|s| s["id"] == "orion.backups.auto")
        .cloned()
}

#[test]
fn backup_settings_change_the_schedule_and_retention_and_stats_count_the_backups() {
    let (_, mut rt) = runtime();
    let answer = init_with(
        &mut rt,
        json!({"backups": {"firstAfterMs": 60_000, "everyMs": 120_000, "keepAuto": 2}}),
    );
    assert_eq!(answer[0]["type"], "response", "{answer:?}");
    let auto = auto_backup_schedule(&mut rt).expect("the automatic backup schedule");
    assert_eq!(auto["nextRunAt"], 500 + 60_000);
    assert_eq!(auto["spec"]["every"], 120_000);

    let stats = send(&mut rt, json!({"v": 1, "id": 1, "type": "backups_stats"}));
    assert_eq!(
        stats[0]["result"],
        json!({"count": 0, "auto": 0, "manual": 0, "bytes": 0,
               "newestAt": null, "oldestAt": null, "keepAuto": 2})
    );
    send(
        &mut rt,
        json!({"v": 1, "id": 2, "type": "memory_add", "text": "Alice likes tea"}),
    );
    let created = send(&mut rt, json!({"v": 1, "id": 3, "type": "backups_create"}));
    let bytes = created[0]["result"]["bytes"].as_u64().unwrap();
    assert!(bytes > 0);
    let stats = send(&mut rt, json!({"v": 1, "id": 4, "type": "backups_stats"}));
    assert_eq!(stats[0]["result"]["count"], 1);
    assert_eq!(stats[0]["result"]["manual"], 1);
    assert_eq!(stats[0]["result"]["bytes"], bytes);
    assert_eq!(stats[0]["result"]["newestAt"], 500);

    // No delay: the first backup is due at once, not an interval later.
    let (_, mut now) = runtime();
    let answer = init_with(&mut now, json!({"backups": {"firstAfterMs": 0}}));
    assert_eq!(answer[0]["type"], "response", "{answer:?}");
    let auto = auto_backup_schedule(&mut now).expect("the automatic backup schedule");
    assert_eq!(auto["count"], 1, "{auto}");
    assert_eq!(auto["lastRunAt"], 500, "{auto}");

    // Turned off: no schedule at all.
    let (_, mut off) = runtime();
    let answer = init_with(&mut off, json!({"backups": {"automatic": false}}));
    assert_eq!(answer[0]["type"], "response", "{answer:?}");
    assert_eq!(auto_backup_schedule(&mut off), None);
}

#[test]
fn backup_settings_out_of_range_refuse_the_init() {
    for (settings, field) in [
        (json!({"everyMs": 1_000}), "backups.everyMs"),
        (json!({"keepAuto": 0}), "backups.keepAuto"),
        (
            json!({"firstAfterMs": 8 * 86_400_000_u64}),
            "backups.firstAfterMs",
        ),
    ] {
        let (_, mut rt) = runtime();
        let answer = init_with(&mut rt, json!({ "backups": settings }));
        assert_invalid_input(&answer, field);
    }
    let (_, mut rt) = runtime();
    let answer = init_with(&mut rt, json!({"backups": {"hourly": true}}));
    assert_eq!(
        answer[0]["error"]["code"], "ERR_INVALID_MESSAGE",
        "{answer:?}"
    );
}

#[test]
fn backups_restore_and_import_through_the_protocol() {
    let mut h = memory_harness(Rc::new(MemStore::new()));
    for (i, text) in ["Alice likes tea", "Bob plays chess", "Carol sails"]
        .iter()
        .enumerate()
    {
        let added = h.call(10 + i as u32, json!({"type": "memory_add", "text": text}));
        assert_eq!(added["type"], "response", "{added}");
    }
    let created = h.call(20, json!({"type": "backups_create"}));
    let id = created["result"]["id"].as_str().unwrap().to_owned();
    let purged = h.call(21, json!({"type": "memory_purge"}));
    assert_eq!(purged["result"], 3);
    h.events.borrow_mut().clear();
    h.published.borrow_mut().clear();

    let restored = h.call(
        22,
        json!({"type": "backups_restore", "backupId": id, "options": {"clearExisting": true}}),
    );
    assert_eq!(
        restored["result"],
        json!({"restored": 3, "skipped": 0, "replaced": 0, "otherVersions": 0}),
        "{restored}"
    );
    let stats = h.call(23, json!({"type": "memory_stats"}));
    assert_eq!(stats["result"]["count"], 3);
    let hits = h.call(
        24,
        json!({"type": "memory_search", "query": "Bob plays chess", "k": 3, "minSimilarity": -1}),
    );
    // (The fake embedder's vectors are all alike: every restored memory is searchable.)
    let mut texts: Vec<&str> = hits["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|hit| hit["text"].as_str().unwrap())
        .collect();
    texts.sort_unstable();
    assert_eq!(texts, ["Alice likes tea", "Bob plays chess", "Carol sails"]);
    assert!(h.events.borrow().iter().any(|e| matches!(
        e,
        Event::MemoryIndex {
            loaded: 3,
            done: true
        }
    )));
    assert_eq!(h.published.borrow().len(), 1, "the other tabs are told");
    assert_eq!(h.published.borrow()[0].len(), 3);

    // Import of the exported file into a second database: identical memories.
    let exported = h.call(25, json!({"type": "backups_export", "backupId": id}));
    let text = exported_text(&h.events.borrow(), 25, &exported["result"]);
    let mut second = memory_harness(Rc::new(MemStore::new()));
    let (a, b) = text.split_at(text.len() / 2);
    let imported = second.call(
        30,
        json!({"type": "backups_import", "text": [a, b], "options": {"onConflict": "overwrite"}}),
    );
    assert_eq!(imported["result"]["restored"], 3, "{imported}");
    let list =
        |h: &mut MemoryHarness, id| h.call(id, json!({"type": "memory_list"}))["result"].clone();
    assert_eq!(list(&mut second, 31), list(&mut h, 26));

    // Bad options and bad files are typed errors, and nothing changes.
    let before = list(&mut second, 32);
    let bad = second.call(
        33,
        json!({"type": "backups_import", "text": text, "options": {"onConflict": "merge"}}),
    );
    assert_eq!(bad["error"]["code"], "ERR_INVALID_INPUT", "{bad}");
    let message = bad["error"]["message"].as_str().unwrap();
    assert!(message.contains("`options.onConflict`"), "{bad}");
    let corrupted = text.replacen("\"kind\":\"fact\"", "\"kind\":1", 1);
    let bad = second.call(
        34,
        json!({"type": "backups_import", "text": corrupted, "options": {"clearExisting": true}}),
    );
    assert_eq!(bad["error"]["code"], "ERR_BACKUP_INVALID", "{bad}");
    let message = bad["error"]["message"].as_str().unwrap();
    assert!(message.contains("data.data[0].rows[0].kind"), "{bad}");
    assert_eq!(list(&mut second, 35), before);
    let missing = second.call(36, json!({"type": "backups_restore", "backupId": "b-none"}));
    assert_eq!(missing["error"]["code"], "ERR_INVALID_INPUT", "{missing}");
}
