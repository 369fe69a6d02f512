//! The `llm_*` requests: text generation on the worker's [`Generator`], streamed to the page.
//!
//! The generator is the page's LLM function when it passed one ([`HostLlm`]); otherwise the local
//! model of `models.llm`, loaded by the platform's [`GeneratorLoader`] on the first generation
//! (never at `init`). A failed load leaves everything else working: the `generator` health
//! component is unhealthy (reason `unavailable`, `lastError` says why) and generations fail fast
//! with that `ERR_MODEL_LOAD`. The load is tried again by the first generation after the
//! breaker's open time (`breaker.openTimeoutMs`, 30 s by default): it goes through the circuit
//! `llm_load`, which opens at the first failure and closes at the first success.
//!
//! Each generation runs under the circuit `llm_inference` (model and host failures and timeouts
//! count; invalid requests and cancellations do not) and is accounted against `generator`, with a
//! heartbeat per streamed piece. Text streams as `llm_token` events `{requestId, index, text}`;
//! `llm_cancel` makes the generator stop at its next token, and the request then resolves with
//! `finish: 'cancelled'` and the text so far.

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;

use futures_util::future::{FutureExt, Shared};
use serde_json::Value;

use super::{
    finish, heartbeat, json_body, strip_request_prefix, Heartbeat, Reply, Request, RequestId,
    SharedState, WorkerRuntime, RUNTIME_COMPONENT,
};
use crate::embedding::LocalBoxFuture;
use crate::error::{Error, Result};
use crate::generation::{FinishReason, GenerateRequest, Generated, GenerationSink, Generator};
use crate::host_llm::HostLlm;
use crate::input::from_json_at;
use crate::llm_settings::LlmSettings;
use crate::model_source::LlmSource;
use crate::protocol::{Event, ResponseBody};

/// The health component for text generation (loading the local LLM, and every generation).
pub const GENERATOR_COMPONENT: &str = "generator";
/// The circuit every generation runs under.
pub const LLM_INFERENCE_BREAKER: &str = "llm_inference";
/// The circuit loads of the local LLM run under (opens at the first failure).
pub const LLM_LOAD_BREAKER: &str = "llm_load";
/// Requests one `llm_generate_many` may carry.
pub const MAX_GENERATE_MANY: usize = 16;

/// Loads the local LLM: the platform fetches, verifies and caches the GGUF file.
pub trait GeneratorLoader {
    /// The generator over the model in `source`, loaded with `settings`; calls `heartbeat` as
    /// the download progresses.
    fn load(
        &self,
        source: &LlmSource,
        settings: &LlmSettings,
        heartbeat: Heartbeat,
    ) -> LocalBoxFuture<'static, Result<Rc<dyn Generator>>>;
}

/// The local LLM, loading or loaded.
type GeneratorFuture = Shared<LocalBoxFuture<'static, Result<Rc<dyn Generator>>>>;

/// The generator and the generations running, shared with their futures.
#[derive(Default)]
pub(super) struct LlmState {
    /// The page's LLM function, when it passed one.
    host: Option<Rc<HostLlm>>,
    /// The local LLM's load; removed when it fails, so a later generation may try again.
    loading: Option<GeneratorFuture>,
    /// Why the last load failed (what generations answer while `llm_load` is open).
    failure: Option<Error>,
    /// The cancellation flag of each running generation, by request id.
    running: HashMap<RequestId, Rc<Cell<bool>>>,
}

impl WorkerRuntime {
    /// Creates the host generator when `init.llm.host` says the page has an LLM function.
    pub(super) fn start_host_llm(&mut self) {
        if let Some(config) = self.llm_settings.host {
            let host = HostLlm::new(
                config,
                self.clock.clone(),
                Rc::clone(&self.platform.sleep),
                Rc::clone(&self.platform.emit),
            );
            self.shared.borrow_mut().llm.host = Some(host);
        }
    }

    pub(super) fn llm(&mut self, id: RequestId, request: Request) -> Reply {
        let result = match request {
            Request::LlmGenerate { request } => match parse(request, None) {
                Ok(request) => return self.generate(id, vec![request], false),
                Err(error) => Err(error),
            },
            Request::LlmGenerateMany { requests } => match parse_many(requests) {
                Ok(requests) => return self.generate(id, requests, true),
                Err(error) => Err(error),
            },
            Request::LlmCancel { request_id } => {
                let state = self.shared.borrow();
                let flag = state.llm.running.get(&request_id);
                if let Some(flag) = flag {
                    flag.set(true);
                }
                json_body(&flag.is_some())
            }
            Request::LlmHostChunk { call_id, text } => self
                .host()
                .and_then(|host| host.chunk(&call_id, text))
                .and_then(|()| json_body(&Value::Null)),
            Request::LlmHostResult {
                call_id,
                text,
                error,
            } => self
                .host()
                .and_then(|host| host.answer(&call_id, error.map_or(Ok(text), Err)))
                .and_then(|()| json_body(&Value::Null)),
            other => Err(Error::Internal(format!(
                "`{}` is not an LLM request",
                other.kind()
            ))),
        };
        Reply::Send(finish(&self.shared, id, RUNTIME_COMPONENT, result))
    }

    fn host(&self) -> Result<Rc<HostLlm>> {
        self.shared.borrow().llm.host.clone().ok_or_else(|| {
            Error::invalid_input(
                "callId",
                "no LLM function was given to Orion.create, so no call is waiting",
            )
        })
    }

    /// Runs `requests` (validated) on the generator: one `llm_generate`, or a batch.
    fn generate(&self, id: RequestId, requests: Vec<GenerateRequest>, many: bool) -> Reply {
        let generator = self.generator();
        let shared = Rc::clone(&self.shared);
        let cancelled = Rc::new(Cell::new(false));
        shared
            .borrow_mut()
            .llm
            .running
            .insert(id, Rc::clone(&cancelled));
        let sink = StreamSink {
            request_id: id,
            emit: Rc::clone(&self.platform.emit),
            shared: Rc::clone(&shared),
            cancelled,
        };
        Reply::Spawn(Box::pin(async move {
            let result = run(&shared, generator, &requests, many, &sink).await;
            shared.borrow_mut().llm.running.remove(&id);
            // A refusal by the breaker is not the generator's failure.
            let component = match &result {
                Err(Error::CircuitOpen { .. }) => RUNTIME_COMPONENT,
                _ => GENERATOR_COMPONENT,
            };
            finish(&shared, id, component, result)
        }))
    }

    /// The generator: the host's, or the local LLM (loading it on first need).
    fn generator(&self) -> LocalBoxFuture<'static, Result<Rc<dyn Generator>>> {
        self.generator_access().get()
    }

    /// What gets the generator, for work that outlives this call (an `ask`).
    pub(super) fn generator_access(&self) -> GeneratorAccess {
        GeneratorAccess {
            shared: Rc::clone(&self.shared),
            loader: Rc::clone(&self.platform.generators),
            source: self.llm_source.clone(),
            settings: self.llm_settings,
        }
    }
}

/// Gets the worker's generator: the host's, or the local LLM, loading it on first need.
#[derive(Clone)]
pub(super) struct GeneratorAccess {
    shared: SharedState,
    loader: Rc<dyn GeneratorLoader>,
    source: Option<LlmSource>,
    settings: LlmSettings,
}

impl GeneratorAccess {
    /// The generator, once loaded.
    pub(super) fn get(&self) -> LocalBoxFuture<'static, Result<Rc<dyn Generator>>> {
        let mut state = self.shared.borrow_mut();
        if let Some(host) = &state.llm.host {
            let host: Rc<dyn Generator> = host.clone();
            return Box::pin(std::future::ready(Ok(host)));
        }
        if let Some(loading) = &state.llm.loading {
            return Box::pin(loading.clone());
        }
        let Some(source) = &self.source else {
            return Box::pin(std::future::ready(Err(Error::model_load(
                "models.llm",
                "no local LLM was given: pass `models.llm` (a GGUF file's URL) or an `llm` \
                 function to Orion.create",
            ))));
        };
        let permit = match state.breakers.try_acquire(LLM_LOAD_BREAKER) {
            Ok(permit) => permit,
            Err(open) => {
                let error = state.llm.failure.clone().unwrap_or(open);
                return Box::pin(std::future::ready(Err(error)));
            }
        };
        state.health.work_started(GENERATOR_COMPONENT);
        drop(state);
        let loading = self.loader.load(
            source,
            &self.settings,
            heartbeat(&self.shared, GENERATOR_COMPONENT),
        );
        let shared = Rc::clone(&self.shared);
        let future: LocalBoxFuture<'static, Result<Rc<dyn Generator>>> = Box::pin(async move {
            let result = loading.await;
            let mut guard = shared.borrow_mut();
            let state = &mut *guard;
            match &result {
                Ok(_) => {
                    state.breakers.record_success(permit);
                    state.health.set_unavailable(GENERATOR_COMPONENT, false);
                    state.health.record_success(GENERATOR_COMPONENT);
                    state.llm.failure = None;
                }
                Err(error) => {
                    state.breakers.record_failure(permit);
                    state
                        .health
                        .record_failure(GENERATOR_COMPONENT, &error.to_string());
                    state.health.set_unavailable(GENERATOR_COMPONENT, true);
                    state.llm.failure = Some(error.clone());
                    state.llm.loading = None;
                }
            }
            result
        });
        let future = future.shared();
        self.shared.borrow_mut().llm.loading = Some(future.clone());
        Box::pin(future)
    }
}

/// Gets the generator and runs the generation under the `llm_inference` circuit.
async fn run(
    shared: &SharedState,
    generator: LocalBoxFuture<'static, Result<Rc<dyn Generator>>>,
    requests: &[GenerateRequest],
    many: bool,
    sink: &StreamSink,
) -> Result<ResponseBody> {
    let generator = generator.await?;
    let permit = shared
        .borrow_mut()
        .breakers
        .try_acquire(LLM_INFERENCE_BREAKER)?;
    shared.borrow_mut().health.work_started(GENERATOR_COMPONENT);
    let results = match (many, requests) {
        (false, [request]) => vec![generator.generate(request, sink).await],
        _ => generator.generate_many(requests, sink).await,
    };
    let failed = results.iter().find_map(|result| result.as_ref().err());
    {
        let mut state = shared.borrow_mut();
        match failed {
            Some(
                Error::Generation(_)
                | Error::Timeout { .. }
                | Error::Internal(_)
                | Error::ModelLoad { .. },
            ) => state.breakers.record_failure(permit),
            Some(_) => state.breakers.release(permit),
            None if results
                .iter()
                .all(|r| matches!(r, Ok(g) if g.finish == FinishReason::Cancelled)) =>
            {
                state.breakers.release(permit)
            }
            None => state.breakers.record_success(permit),
        }
    }
    let generated: Vec<Generated> = results.into_iter().collect::<Result<_>>()?;
    match (many, generated.as_slice()) {
        (false, [one]) => json_body(one),
        _ => json_body(&generated),
    }
}

/// Streams a generation's text to the page and tells the generator when it was cancelled.
struct StreamSink {
    request_id: RequestId,
    emit: Rc<dyn Fn(Event)>,
    shared: SharedState,
    cancelled: Rc<Cell<bool>>,
}

impl GenerationSink for StreamSink {
    fn text(&self, index: usize, text: &str) {
        if let Ok(mut state) = self.shared.try_borrow_mut() {
            state.health.heartbeat(GENERATOR_COMPONENT);
        }
        (self.emit)(Event::LlmToken {
            request_id: self.request_id,
            index,
            text: text.to_owned(),
        });
    }

    fn cancelled(&self, _index: usize) -> bool {
        self.cancelled.get()
    }
}

/// Reads and checks one request; errors name the field as the caller wrote it (`temperature`,
/// or `requests[2].temperature` in a batch).
fn parse(value: Value, index: Option<usize>) -> Result<GenerateRequest> {
    let label = match index {
        Some(i) => format!("requests[{i}]"),
        None => "request".to_owned(),
    };
    let relabel = |error: Error, from_json: bool| match (error, index) {
        (error, None) if from_json => strip_request_prefix(error),
        (Error::InvalidInput { field, reason }, Some(_)) if !from_json => Error::InvalidInput {
            field: format!("{label}.{field}"),
            reason,
        },
        (error, _) => error,
    };
    let request: GenerateRequest =
        from_json_at(&label, value).map_err(|error| relabel(error, true))?;
    request.validate().map_err(|error| relabel(error, false))?;
    Ok(request)
}

fn parse_many(values: Vec<Value>) -> Result<Vec<GenerateRequest>> {
    if values.is_empty() || values.len() > MAX_GENERATE_MANY {
        return Err(Error::invalid_input(
            "requests",
            format!(
                "has {} requests; it must have 1 to {MAX_GENERATE_MANY}",
                values.len()
            ),
        ));
    }
    values
        .into_iter()
        .enumerate()
        .map(|(i, value)| parse(value, Some(i)))
        .collect()
}

#[cfg(test)]
mod tests;
