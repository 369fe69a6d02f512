//! The `llm_*` requests against scripted generators and a scripted page, on a manual clock.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use futures_executor::LocalPool;
use futures_util::task::LocalSpawnExt;
use serde_json::{json, Value};

use super::super::tests::fake_platform;
use super::*;
use crate::clock::ManualClock;
use crate::testing::{AnswersInOrder, ManualTimers};
use crate::ErrorCode;

/// Streams `pieces`, sleeping 10 ms before each (so a test can act between them); fails with
/// `fail` instead when set.
struct Scripted {
    pieces: Vec<&'static str>,
    fail: Option<Error>,
    sleep: crate::tasks::Sleep,
}

impl Scripted {
    async fn run(&self, index: usize, sink: &dyn GenerationSink) -> Result<Generated> {
        if let Some(error) = &self.fail {
            return Err(error.clone());
        }
        let mut text = String::new();
        let mut finish = FinishReason::EndOfTurn;
        for piece in &self.pieces {
            (self.sleep)(10).await;
            if sink.cancelled(index) {
                finish = FinishReason::Cancelled;
                break;
            }
            sink.text(index, piece);
            text.push_str(piece);
        }
        Ok(Generated {
            tokens: text.len() as u32,
            text,
            finish,
            prompt_tokens: 3,
            cached_tokens: 0,
            prefill_ms: 1.0,
            decode_ms: 2.0,
        })
    }
}

impl AnswersInOrder for Scripted {
    fn answer<'a>(
        &'a self,
        _request: &'a GenerateRequest,
        index: usize,
        sink: &'a dyn GenerationSink,
    ) -> LocalBoxFuture<'a, Result<Generated>> {
        Box::pin(self.run(index, sink))
    }
}

/// Loads the scripted generator, or fails with a 404 while `fail` is set; counts its calls.
struct Loader {
    fail: Cell<bool>,
    calls: Cell<u32>,
    generator: Rc<dyn Generator>,
}

impl GeneratorLoader for Loader {
    fn load(
        &self,
        source: &LlmSource,
        _settings: &LlmSettings,
        _heartbeat: Heartbeat,
    ) -> LocalBoxFuture<'static, Result<Rc<dyn Generator>>> {
        self.calls.set(self.calls.get() + 1);
        let result = if self.fail.get() {
            Err(Error::model_load(&source.url, "HTTP 404"))
        } else {
            Ok(Rc::clone(&self.generator))
        };
        Box::pin(async move { result })
    }
}

struct Harness {
    rt: WorkerRuntime,
    clock: ManualClock,
    timers: Rc<ManualTimers>,
    pool: LocalPool,
    /// Every message posted to the page (answers and events), in order.
    posted: Rc<RefCell<Vec<Value>>>,
    loader: Rc<Loader>,
}

fn harness(pieces: Vec<&'static str>, fail: Option<Error>) -> Harness {
    let clock = ManualClock::new(1_000);
    let timers = Rc::new(ManualTimers::default());
    let sleep: crate::tasks::Sleep = {
        let clock = clock.clone();
        let timers = Rc::clone(&timers);
        Rc::new(move |ms| timers.sleep(&clock, ms))
    };
    let posted = Rc::new(RefCell::new(Vec::new()));
    let loader = Rc::new(Loader {
        fail: Cell::new(false),
        calls: Cell::new(0),
        generator: Rc::new(Scripted {
            pieces,
            fail,
            sleep: Rc::clone(&sleep),
        }),
    });
    let (_, mut platform) = fake_platform(false);
    let sink = Rc::clone(&posted);
    platform.emit = Rc::new(move |event| {
        let message = crate::protocol::Outgoing::Event { v: 1, event };
        sink.borrow_mut()
            .push(serde_json::to_value(message).unwrap_or_default());
    });
    platform.sleep = sleep;
    platform.generators = loader.clone();
    Harness {
        rt: WorkerRuntime::new(clock.shared(), "9.9.9", platform),
        clock,
        timers,
        pool: LocalPool::new(),
        posted,
        loader,
    }
}

impl Harness {
    fn send(&mut self, message: Value) {
        let reply = self.rt.handle(message);
        for work in self.rt.take_background() {
            let _ = self.pool.spawner().spawn_local(work);
        }
        match reply {
            Reply::Send(messages) => self.post(messages),
            Reply::Spawn(work) => {
                let posted = Rc::clone(&self.posted);
                let _ = self.pool.spawner().spawn_local(async move {
                    let messages = work.await;
                    posted.borrow_mut().extend(
                        messages
                            .iter()
                            .map(|m| serde_json::to_value(m).unwrap_or_default()),
                    );
                });
            }
            Reply::Crash => panic!("unexpected crash"),
        }
        self.pool.run_until_stalled();
    }

    fn post(&self, messages: Vec<crate::protocol::Outgoing>) {
        self.posted.borrow_mut().extend(
            messages
                .iter()
                .map(|m| serde_json::to_value(m).unwrap_or_default()),
        );
    }

    fn init(&mut self, extra: Value) {
        let mut message = json!({"v": 1, "id": 0, "type": "init", "profile": "micro"});
        if let (Some(target), Value::Object(fields)) = (message.as_object_mut(), extra) {
            target.extend(fields);
        }
        self.send(message);
        assert_eq!(self.answer(0)["type"], "response", "{:?}", self.posted);
    }

    /// Advances the clock by `ms` in 10 ms steps, running whatever wakes.
    fn advance(&mut self, ms: u64) {
        let mut left = ms;
        while left > 0 {
            let step = left.min(10);
            self.clock.advance(step);
            left -= step;
            self.timers.fire();
            self.pool.run_until_stalled();
        }
    }

    /// The answer to request `id` (`Null` while there is none).
    fn answer(&self, id: u32) -> Value {
        self.posted
            .borrow()
            .iter()
            .find(|m| m["id"] == id && (m["type"] == "response" || m["type"] == "error"))
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// The events of `kind` posted so far.
    fn events(&self, kind: &str) -> Vec<Value> {
        self.posted
            .borrow()
            .iter()
            .filter(|m| m["type"] == "event" && m["event"]["kind"] == kind)
            .map(|m| m["event"].clone())
            .collect()
    }

    fn generate(&mut self, id: u32, request: Value) {
        self.send(json!({"v": 1, "id": id, "type": "llm_generate", "request": request}));
    }

    fn generator_health(&mut self) -> Value {
        self.send(json!({"v": 1, "id": 999, "type": "health"}));
        let answer = self.answer(999);
        self.posted.borrow_mut().retain(|m| m["id"] != 999);
        answer["result"]["components"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["name"] == GENERATOR_COMPONENT))
            .cloned()
            .unwrap_or(Value::Null)
    }
}

fn code(answer: &Value) -> &str {
    answer["error"]["code"].as_str().unwrap_or("")
}

const MODEL: &str = "https://example.test/models/smol.gguf";

#[test]
fn the_local_model_loads_on_the_first_generation_and_streams_its_text() {
    let mut h = harness(vec!["The capital", " of France", " is Paris."], None);
    h.init(json!({"models": {"llm": MODEL}}));
    assert_eq!(h.loader.calls.get(), 0, "nothing loads at init");
    h.generate(1, json!({"prompt": "Capital of France?", "maxTokens": 16}));
    h.advance(30);
    let answer = h.answer(1);
    assert_eq!(answer["result"]["text"], "The capital of France is Paris.");
    assert_eq!(answer["result"]["finish"], "endOfTurn");
    assert_eq!(answer["result"]["promptTokens"], 3);
    let tokens = h.events("llm_token");
    let streamed: String = tokens
        .iter()
        .map(|t| t["text"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(streamed, "The capital of France is Paris.");
    assert!(tokens
        .iter()
        .all(|t| t["requestId"] == 1 && t["index"] == 0));
    h.generate(2, json!({"prompt": "Again?"}));
    h.advance(30);
    assert_eq!(h.answer(2)["type"], "response");
    assert_eq!(h.loader.calls.get(), 1, "the model loads once");
    assert_eq!(h.generator_health()["status"], "healthy");
}

#[test]
fn a_batch_answers_in_order_with_indexed_tokens() {
    let mut h = harness(vec!["a", "b"], None);
    h.init(json!({"models": {"llm": MODEL}}));
    h.send(json!({"v": 1, "id": 1, "type": "llm_generate_many",
                  "requests": [{"prompt": "one"}, {"prompt": "two"}]}));
    h.advance(50);
    let answer = h.answer(1);
    assert_eq!(answer["result"][0]["text"], "ab");
    assert_eq!(answer["result"][1]["text"], "ab");
    let indexes: Vec<i64> = h
        .events("llm_token")
        .iter()
        .filter_map(|t| t["index"].as_i64())
        .collect();
    assert_eq!(indexes, vec![0, 0, 1, 1]);
}

#[test]
fn bad_requests_are_invalid_input_naming_the_field() {
    let mut h = harness(vec!["x"], None);
    h.init(json!({"models": {"llm": MODEL}}));
    let cases = [
        (json!({"prompt": "  "}), "`prompt`"),
        (json!({"prompt": "hi", "temperature": 3}), "`temperature`"),
        (
            json!({"prompt": "hi", "temperature": "hot"}),
            "`temperature`",
        ),
        (json!({"prompt": "hi", "maxTokens": 0}), "`maxTokens`"),
        (json!({"prompt": "hi", "stop": ["a", ""]}), "`stop[1]`"),
        (json!({"prompt": "hi", "bogus": 1}), "bogus"),
        (json!({"temperature": 1}), "`prompt`"),
        (json!("just text"), "`request`"),
    ];
    for (i, (request, field)) in cases.into_iter().enumerate() {
        let id = 10 + i as u32;
        h.generate(id, request.clone());
        let answer = h.answer(id);
        assert_eq!(code(&answer), "ERR_INVALID_INPUT", "{request}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(field), "{request}: {message}");
    }
    h.send(json!({"v": 1, "id": 30, "type": "llm_generate_many",
                  "requests": [{"prompt": "ok"}, {"prompt": "hi", "maxTokens": 0}]}));
    let message = h.answer(30)["error"]["message"].clone();
    assert!(
        message
            .as_str()
            .unwrap_or("")
            .contains("`requests[1].maxTokens`"),
        "{message}"
    );
    h.send(json!({"v": 1, "id": 31, "type": "llm_generate_many", "requests": []}));
    assert_eq!(code(&h.answer(31)), "ERR_INVALID_INPUT");
    assert_eq!(
        h.loader.calls.get(),
        0,
        "invalid requests never load the model"
    );
    assert_eq!(h.generator_health()["totalCalls"], 0);
}

#[test]
fn a_cancelled_generation_resolves_with_the_text_so_far() {
    let mut h = harness(vec!["one", " two", " three"], None);
    h.init(json!({"models": {"llm": MODEL}}));
    h.generate(1, json!({"prompt": "count"}));
    h.advance(10);
    assert_eq!(h.events("llm_token").len(), 1);
    h.send(json!({"v": 1, "id": 2, "type": "llm_cancel", "requestId": 1}));
    assert_eq!(h.answer(2)["result"], true);
    h.advance(10);
    let answer = h.answer(1);
    assert_eq!(answer["result"]["finish"], "cancelled");
    assert_eq!(answer["result"]["text"], "one");
    h.send(json!({"v": 1, "id": 3, "type": "llm_cancel", "requestId": 1}));
    assert_eq!(h.answer(3)["result"], false, "it is no longer running");
}

#[test]
fn a_failed_load_fails_fast_marks_the_generator_unavailable_and_is_retried_later() {
    let mut h = harness(vec!["ok"], None);
    h.loader.fail.set(true);
    h.init(json!({"models": {"llm": MODEL}}));
    h.generate(1, json!({"prompt": "hi"}));
    let answer = h.answer(1);
    assert_eq!(code(&answer), "ERR_MODEL_LOAD", "{answer}");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains(MODEL));
    let row = h.generator_health();
    assert_eq!(row["status"], "unhealthy", "{row}");
    assert_eq!(row["reason"]["kind"], "unavailable");
    assert!(row["lastError"].as_str().unwrap_or("").contains("HTTP 404"));
    // Other requests still work.
    h.send(json!({"v": 1, "id": 2, "type": "ping"}));
    assert_eq!(h.answer(2)["type"], "response");
    // Within the breaker's open time the error comes back without another download.
    h.generate(3, json!({"prompt": "hi"}));
    assert_eq!(code(&h.answer(3)), "ERR_MODEL_LOAD");
    assert_eq!(h.loader.calls.get(), 1);
    // Once it has passed, the next generation loads again.
    h.loader.fail.set(false);
    h.advance(30_000);
    h.generate(4, json!({"prompt": "hi"}));
    h.advance(20);
    assert_eq!(h.answer(4)["result"]["text"], "ok");
    assert_eq!(h.loader.calls.get(), 2);
    assert_eq!(h.generator_health()["reason"]["kind"], "ok");
}

#[test]
fn without_a_model_or_a_host_function_generation_is_a_model_load_error() {
    let mut h = harness(vec!["ok"], None);
    h.init(json!({}));
    h.generate(1, json!({"prompt": "hi"}));
    let answer = h.answer(1);
    assert_eq!(code(&answer), "ERR_MODEL_LOAD");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("models.llm"));
    assert_eq!(h.loader.calls.get(), 0);
}

#[test]
fn failing_generations_open_the_llm_inference_circuit() {
    let mut h = harness(vec![], Some(Error::Generation("out of memory".into())));
    h.init(json!({"models": {"llm": MODEL}}));
    for id in 1..=5 {
        h.generate(id, json!({"prompt": "hi"}));
        assert_eq!(code(&h.answer(id)), "ERR_GENERATION");
    }
    h.generate(6, json!({"prompt": "hi"}));
    let answer = h.answer(6);
    assert_eq!(code(&answer), "ERR_CIRCUIT_OPEN");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains(LLM_INFERENCE_BREAKER));
    assert_eq!(h.generator_health()["status"], "unhealthy");
    assert!(h
        .events("breaker_transition")
        .iter()
        .any(|e| e["key"] == LLM_INFERENCE_BREAKER && e["to"] == "OPEN"));
}

#[test]
fn init_refuses_bad_llm_settings() {
    let mut h = harness(vec![], None);
    h.send(json!({"v": 1, "id": 0, "type": "init", "llm": {"host": {"timeoutMs": 0}}}));
    let answer = h.answer(0);
    assert_eq!(code(&answer), "ERR_INVALID_INPUT");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("llm.host.timeoutMs"));
}

// The page's LLM function.

fn host_harness(host: Value) -> Harness {
    let mut h = harness(vec!["local"], None);
    h.init(json!({"models": {"llm": MODEL}, "llm": {"host": host}}));
    h
}

fn host_calls(h: &Harness) -> Vec<Value> {
    h.events("llm_host_call")
}

#[test]
fn a_host_function_that_returns_a_string_answers_and_wins_over_the_local_model() {
    let mut h = host_harness(json!({"timeoutMs": 1000}));
    h.generate(
        1,
        json!({"system": "Be brief.", "prompt": "hi", "agent": "logical"}),
    );
    let calls = host_calls(&h);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["request"]["system"], "Be brief.");
    assert_eq!(calls[0]["request"]["agent"], "logical");
    assert_eq!(calls[0]["attempt"], 1);
    let call_id = calls[0]["callId"].clone();
    h.send(
        json!({"v": 1, "id": 2, "type": "llm_host_result", "callId": call_id, "text": "Hello!"}),
    );
    h.advance(50);
    let answer = h.answer(1);
    assert_eq!(answer["result"]["text"], "Hello!", "{answer}");
    assert_eq!(h.events("llm_token")[0]["text"], "Hello!");
    assert_eq!(h.loader.calls.get(), 0, "the local model is never loaded");
    assert!(h.events("llm_host_abort").is_empty());
    // A late answer for the same call is refused.
    h.send(json!({"v": 1, "id": 3, "type": "llm_host_result", "callId": call_id, "text": "x"}));
    assert_eq!(code(&h.answer(3)), "ERR_INVALID_INPUT");
}

#[test]
fn a_streaming_host_function_streams_its_chunks() {
    let mut h = host_harness(json!({}));
    h.generate(1, json!({"prompt": "hi"}));
    let call_id = host_calls(&h)[0]["callId"].clone();
    for (i, piece) in ["Hel", "lo", "!"].iter().enumerate() {
        h.send(json!({"v": 1, "id": 10 + i, "type": "llm_host_chunk", "callId": call_id, "text": piece}));
        h.advance(50);
    }
    assert_eq!(h.events("llm_token").len(), 3);
    h.send(json!({"v": 1, "id": 20, "type": "llm_host_result", "callId": call_id}));
    h.advance(50);
    let answer = h.answer(1);
    assert_eq!(answer["result"]["text"], "Hello!");
    assert_eq!(answer["result"]["tokens"], 3);
}

#[test]
fn a_host_function_that_ignores_stop_strings_is_cut_at_the_first_and_aborted() {
    let mut h = host_harness(json!({}));
    h.generate(1, json!({"prompt": "hi", "stop": ["\nUser:"]}));
    let call_id = host_calls(&h)[0]["callId"].clone();
    for (i, piece) in ["Paris.", "\nUs", "er: and", " more"].iter().enumerate() {
        h.send(json!({"v": 1, "id": 10 + i, "type": "llm_host_chunk", "callId": call_id, "text": piece}));
        h.advance(50);
    }
    let answer = h.answer(1);
    assert_eq!(answer["result"]["text"], "Paris.", "{answer}");
    assert_eq!(answer["result"]["finish"], "stop");
    // "\nUs" was held back, and nothing of the stop string or after it was streamed.
    let streamed: Vec<Value> = h
        .events("llm_token")
        .iter()
        .map(|e| e["text"].clone())
        .collect();
    assert_eq!(streamed, vec![json!("Paris.")]);
    assert_eq!(
        h.events("llm_host_abort"),
        vec![json!({"kind": "llm_host_abort", "callId": call_id})],
        "the page is told to stop"
    );
    // A whole answer is cut the same way, and held-back text that never became a stop string
    // is streamed at the end.
    h.generate(2, json!({"prompt": "hi", "stop": ["END"]}));
    let call_id = host_calls(&h)[1]["callId"].clone();
    h.send(json!({"v": 1, "id": 20, "type": "llm_host_result", "callId": call_id, "text": "one END two"}));
    h.advance(50);
    assert_eq!(h.answer(2)["result"]["text"], "one ");
    assert_eq!(h.answer(2)["result"]["finish"], "stop");
    h.generate(3, json!({"prompt": "hi", "stop": ["END"]}));
    let call_id = host_calls(&h)[2]["callId"].clone();
    h.send(
        json!({"v": 1, "id": 30, "type": "llm_host_chunk", "callId": call_id, "text": "the EN"}),
    );
    h.send(json!({"v": 1, "id": 31, "type": "llm_host_result", "callId": call_id}));
    h.advance(50);
    assert_eq!(h.answer(3)["result"]["text"], "the EN");
    assert_eq!(h.answer(3)["result"]["finish"], "endOfTurn");
    let last: Vec<Value> = h
        .events("llm_token")
        .iter()
        .skip(2)
        .map(|e| e["text"].clone())
        .collect();
    assert_eq!(last, vec![json!("the "), json!("EN")]);
}

#[test]
fn a_hung_host_function_times_out_and_is_aborted() {
    let mut h = host_harness(json!({"timeoutMs": 2000, "attempts": 3}));
    h.generate(1, json!({"prompt": "hi"}));
    let call_id = host_calls(&h)[0]["callId"].clone();
    h.advance(1_990);
    assert_eq!(h.answer(1), Value::Null, "still waiting");
    h.advance(20);
    let answer = h.answer(1);
    assert_eq!(code(&answer), "ERR_TIMEOUT", "{answer}");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("2000 ms"));
    assert_eq!(
        h.events("llm_host_abort"),
        vec![json!({"kind": "llm_host_abort", "callId": call_id})]
    );
    assert_eq!(host_calls(&h).len(), 1, "a timeout is not retried");
    assert_eq!(h.generator_health()["totalFailures"], 1);
}

#[test]
fn a_retryable_host_failure_is_retried_after_the_backoff() {
    let mut h = host_harness(json!({"attempts": 2, "backoffMs": 500}));
    h.generate(1, json!({"prompt": "hi"}));
    let first = host_calls(&h)[0]["callId"].clone();
    h.send(
        json!({"v": 1, "id": 2, "type": "llm_host_result", "callId": first,
                  "error": {"message": "rate limited"}}),
    );
    h.advance(400);
    assert_eq!(host_calls(&h).len(), 1, "waiting out the backoff");
    h.advance(200);
    let calls = host_calls(&h);
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1]["attempt"], 2);
    h.send(json!({"v": 1, "id": 3, "type": "llm_host_result", "callId": calls[1]["callId"], "text": "ok"}));
    h.advance(50);
    assert_eq!(h.answer(1)["result"]["text"], "ok");
}

#[test]
fn a_non_retryable_host_failure_is_a_generation_error_at_once() {
    let mut h = host_harness(json!({"attempts": 3}));
    h.generate(1, json!({"prompt": "hi"}));
    let call_id = host_calls(&h)[0]["callId"].clone();
    h.send(
        json!({"v": 1, "id": 2, "type": "llm_host_result", "callId": call_id,
                  "error": {"message": "bad key", "retryable": false}}),
    );
    h.advance(50);
    let answer = h.answer(1);
    assert_eq!(code(&answer), "ERR_GENERATION");
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("bad key"));
    assert_eq!(host_calls(&h).len(), 1);
}

#[test]
fn cancelling_a_host_call_aborts_it_in_the_page() {
    let mut h = host_harness(json!({}));
    h.generate(1, json!({"prompt": "hi"}));
    let call_id = host_calls(&h)[0]["callId"].clone();
    h.send(json!({"v": 1, "id": 2, "type": "llm_host_chunk", "callId": call_id, "text": "par"}));
    h.advance(50);
    h.send(json!({"v": 1, "id": 3, "type": "llm_cancel", "requestId": 1}));
    h.advance(50);
    let answer = h.answer(1);
    assert_eq!(answer["result"]["finish"], "cancelled");
    assert_eq!(answer["result"]["text"], "par");
    assert_eq!(h.events("llm_host_abort").len(), 1);
}

#[test]
fn failing_host_calls_open_the_circuit_without_calling_the_page_again() {
    let mut h = host_harness(json!({"attempts": 1}));
    for id in 1..=5u32 {
        h.generate(id, json!({"prompt": "hi"}));
        let calls = host_calls(&h);
        let call_id = calls[calls.len() - 1]["callId"].clone();
        h.send(
            json!({"v": 1, "id": 100 + id, "type": "llm_host_result", "callId": call_id,
                      "error": {"message": "down"}}),
        );
        h.advance(50);
        assert_eq!(code(&h.answer(id)), "ERR_GENERATION");
    }
    h.generate(6, json!({"prompt": "hi"}));
    assert_eq!(code(&h.answer(6)), "ERR_CIRCUIT_OPEN");
    assert_eq!(host_calls(&h).len(), 5);
}

#[test]
fn host_answers_without_a_host_function_are_refused() {
    let mut h = harness(vec![], None);
    h.init(json!({}));
    h.send(json!({"v": 1, "id": 1, "type": "llm_host_result", "callId": "l1", "text": "x"}));
    let answer = h.answer(1);
    assert_eq!(code(&answer), ErrorCode::InvalidInput.as_str());
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("`callId`"));
}
