//! The page's own LLM function as a [`Generator`] (`Orion.create({ llm })`).
//!
//! Each attempt of a generation is an `llm_host_call` event carrying a call id and the request;
//! the page runs its function and answers with `llm_host_chunk` (streamed pieces, from an async
//! iterable) and one `llm_host_result` (the whole text when the function returned a string, or
//! its error). When the worker stops waiting — the attempt timed out, the caller cancelled — the
//! page gets `llm_host_abort` for the call, so the function's `AbortSignal` fires.
//!
//! Every attempt has [`HostLlmConfig::timeout_ms`] to finish, counted on the worker's clock, so a
//! function that never settles never holds the worker. A failed attempt is tried again (up to
//! [`HostLlmConfig::attempts`], waiting `backoffMs * 2^(attempt-1)` between, the job queue's
//! exponential [`Backoff`]) when the function's error was not marked `retryable: false` and
//! nothing was streamed yet; a timeout is not retried (the function hung once already). The
//! circuit breaker and health accounting wrap the whole request in the runtime
//! (`runtime::llm_requests`), as they do for the local model.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};

use futures_channel::mpsc;
use futures_util::future::{join_all, select, Either};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::clock::SharedClock;
use crate::embedding::LocalBoxFuture;
use crate::error::{Error, Result};
use crate::generation::{
    FinishReason, GenerateRequest, Generated, GenerationSink, Generator, GeneratorInfo,
    StopStrings, HOST_KIND,
};
use crate::jobs::Backoff;
use crate::protocol::Event;
use crate::tasks::{HostFailure, Sleep};

/// The operation named by a host call's timeout error (`ERR_TIMEOUT`).
pub const HOST_LLM_OPERATION: &str = "llm_inference";
/// An attempt's time limit unless the page sets `llmOptions.timeoutMs`.
pub const DEFAULT_HOST_TIMEOUT_MS: u64 = 60_000;
/// The longest time limit a page may set.
pub const MAX_HOST_TIMEOUT_MS: u64 = 10 * 60_000;
/// The most attempts a page may ask for.
pub const MAX_HOST_ATTEMPTS: u32 = 5;
/// The longest base backoff a page may set.
pub const MAX_HOST_BACKOFF_MS: u64 = 60_000;
/// How often a waiting call looks at its deadline and at cancellation.
const POLL_MS: u64 = 50;

/// `llm.host` in `init`: the host function's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostLlmConfig {
    /// Ms one attempt may take, from the call to its result.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Attempts per generation (1 = no retry).
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// The wait before the first retry; it doubles for each later one.
    #[serde(default = "default_backoff")]
    pub backoff_ms: u64,
}

fn default_timeout() -> u64 {
    DEFAULT_HOST_TIMEOUT_MS
}

fn default_attempts() -> u32 {
    2
}

fn default_backoff() -> u64 {
    500
}

impl Default for HostLlmConfig {
    fn default() -> Self {
        Self {
            timeout_ms: default_timeout(),
            attempts: default_attempts(),
            backoff_ms: default_backoff(),
        }
    }
}

impl HostLlmConfig {
    /// Checks the ranges; `field` is where the settings were given (`llm.host`).
    pub fn validate(&self, field: &str) -> Result<()> {
        if !(1..=MAX_HOST_TIMEOUT_MS).contains(&self.timeout_ms) {
            return Err(Error::invalid_input(
                format!("{field}.timeoutMs"),
                format!(
                    "is {}; it must be 1 to {MAX_HOST_TIMEOUT_MS}",
                    self.timeout_ms
                ),
            ));
        }
        if !(1..=MAX_HOST_ATTEMPTS).contains(&self.attempts) {
            return Err(Error::invalid_input(
                format!("{field}.attempts"),
                format!("is {}; it must be 1 to {MAX_HOST_ATTEMPTS}", self.attempts),
            ));
        }
        if self.backoff_ms > MAX_HOST_BACKOFF_MS {
            return Err(Error::invalid_input(
                format!("{field}.backoffMs"),
                format!(
                    "is {}; it must be at most {MAX_HOST_BACKOFF_MS}",
                    self.backoff_ms
                ),
            ));
        }
        Ok(())
    }
}

/// What the page's function gets (the `llm_host_call` event).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostLlmCall {
    /// Answer with this in `llm_host_chunk` and `llm_host_result`.
    pub call_id: String,
    /// What to generate.
    pub request: GenerateRequest,
    /// 1 for the first attempt.
    pub attempt: u32,
}

/// What the page sent for a call.
enum Message {
    /// A streamed piece.
    Chunk(String),
    /// The end: the whole text (when the function returned a string), nothing more (when it
    /// streamed), or its error.
    Done(std::result::Result<Option<String>, HostFailure>),
}

/// How one attempt ended.
enum Attempt {
    Done(Generated),
    Failed {
        error: Error,
        retryable: bool,
        streamed: bool,
    },
}

/// The host generator: the page's LLM function, called through events.
pub struct HostLlm {
    config: HostLlmConfig,
    clock: SharedClock,
    sleep: Sleep,
    emit: Rc<dyn Fn(Event)>,
    next: Cell<u64>,
    pending: RefCell<HashMap<String, mpsc::UnboundedSender<Message>>>,
    me: Weak<HostLlm>,
}

impl HostLlm {
    /// A host generator that posts calls through `emit` and waits on `sleep` (the platform's
    /// timer) with time read from `clock`.
    pub fn new(
        config: HostLlmConfig,
        clock: SharedClock,
        sleep: Sleep,
        emit: Rc<dyn Fn(Event)>,
    ) -> Rc<Self> {
        Rc::new_cyclic(|me| Self {
            config,
            clock,
            sleep,
            emit,
            next: Cell::new(0),
            pending: RefCell::new(HashMap::new()),
            me: me.clone(),
        })
    }

    /// A streamed piece of call `call_id` (`llm_host_chunk`). An unknown call (it ended:
    /// answered, timed out or cancelled) is `ERR_INVALID_INPUT` on `callId`.
    pub fn chunk(&self, call_id: &str, text: String) -> Result<()> {
        let pending = self.pending.borrow();
        let sender = pending.get(call_id).ok_or_else(|| unknown_call(call_id))?;
        // The receiver is gone only while the attempt is being dropped; nothing to do then.
        let _ = sender.unbounded_send(Message::Chunk(text));
        Ok(())
    }

    /// The end of call `call_id` (`llm_host_result`): its whole text, `None` when it streamed,
    /// or how it failed.
    pub fn answer(
        &self,
        call_id: &str,
        outcome: std::result::Result<Option<String>, HostFailure>,
    ) -> Result<()> {
        let sender = self
            .pending
            .borrow_mut()
            .remove(call_id)
            .ok_or_else(|| unknown_call(call_id))?;
        let _ = sender.unbounded_send(Message::Done(outcome));
        Ok(())
    }

    /// How many calls wait for the page.
    pub fn waiting(&self) -> usize {
        self.pending.borrow().len()
    }

    /// Every attempt of request `index` of a batch.
    async fn run(
        &self,
        request: &GenerateRequest,
        index: usize,
        sink: &dyn GenerationSink,
    ) -> Result<Generated> {
        let attempts = self.config.attempts.max(1);
        let backoff = Backoff::exponential(self.config.backoff_ms);
        let mut attempt = 1;
        loop {
            match self.attempt(request, index, attempt, sink).await {
                Attempt::Done(generated) => return Ok(generated),
                Attempt::Failed {
                    error,
                    retryable,
                    streamed,
                } => {
                    if !retryable || streamed || attempt >= attempts {
                        return Err(error);
                    }
                    if self.wait(backoff.base_delay_ms(attempt), index, sink).await {
                        return Ok(cancelled(String::new(), 0));
                    }
                    attempt += 1;
                }
            }
        }
    }

    /// Waits `ms`, in slices, unless request `index` is cancelled meanwhile (then `true`).
    async fn wait(&self, ms: u64, index: usize, sink: &dyn GenerationSink) -> bool {
        let until = self.clock.now_ms().saturating_add(ms);
        loop {
            if sink.cancelled(index) {
                return true;
            }
            let now = self.clock.now_ms();
            if now >= until {
                return false;
            }
            (self.sleep)((until - now).min(POLL_MS)).await;
        }
    }

    /// One call of the page's function, until its result, its deadline or a cancellation.
    async fn attempt(
        &self,
        request: &GenerateRequest,
        index: usize,
        attempt: u32,
        sink: &dyn GenerationSink,
    ) -> Attempt {
        let n = self.next.get().wrapping_add(1);
        self.next.set(n);
        let call_id = format!("l{n}");
        let (sender, mut receiver) = mpsc::unbounded();
        self.pending.borrow_mut().insert(call_id.clone(), sender);
        // Dropped on every way out: tells the page to stop a call still pending.
        let _abort = AbortOnDrop {
            host: self.me.clone(),
            call_id: call_id.clone(),
        };
        let started = self.clock.now_ms();
        let deadline = started.saturating_add(self.config.timeout_ms);
        (self.emit)(Event::LlmHostCall(HostLlmCall {
            call_id,
            request: request.clone(),
            attempt,
        }));
        // The function may ignore `request.stop`: the worker cuts the text itself.
        let mut text = StopStrings::new(&request.stop);
        let mut pieces = 0u32;
        loop {
            if sink.cancelled(index) {
                return Attempt::Done(cancelled(text.text().to_owned(), pieces));
            }
            let now = self.clock.now_ms();
            if now >= deadline {
                return Attempt::Failed {
                    error: Error::Timeout {
                        operation: HOST_LLM_OPERATION.to_owned(),
                        ms: self.config.timeout_ms,
                    },
                    retryable: false,
                    streamed: pieces > 0,
                };
            }
            let tick = (self.sleep)((deadline - now).min(POLL_MS));
            let message = match select(receiver.next(), tick).await {
                Either::Left((message, _)) => message,
                Either::Right(_) => continue,
            };
            match message {
                Some(Message::Chunk(piece)) => {
                    if !piece.is_empty() {
                        pieces += 1;
                        if let Some(piece) = text.push(&piece) {
                            sink.text(index, &piece);
                        }
                    }
                    if !text.stopped() {
                        continue;
                    }
                    // A stop string ended the answer: the call is dropped (and aborted) here.
                }
                Some(Message::Done(Ok(whole))) => {
                    if let Some(whole) = whole.filter(|w| !w.is_empty()) {
                        pieces = pieces.max(1);
                        if let Some(piece) = text.set(whole) {
                            sink.text(index, &piece);
                        }
                    }
                    if let Some(piece) = text.finish() {
                        sink.text(index, &piece);
                    }
                }
                Some(Message::Done(Err(failure))) => {
                    return Attempt::Failed {
                        error: Error::Generation(format!(
                            "the page's LLM function failed: {}",
                            failure.message
                        )),
                        retryable: failure.retryable,
                        streamed: pieces > 0,
                    }
                }
                None => {
                    return Attempt::Failed {
                        error: Error::Generation(
                            "the page's LLM call ended without an answer".into(),
                        ),
                        retryable: true,
                        streamed: pieces > 0,
                    }
                }
            }
            let elapsed = self.clock.now_ms().saturating_sub(started);
            return Attempt::Done(Generated {
                finish: if text.stopped() {
                    FinishReason::Stop
                } else {
                    FinishReason::EndOfTurn
                },
                text: text.text().to_owned(),
                prompt_tokens: 0,
                cached_tokens: 0,
                tokens: pieces,
                prefill_ms: 0.0,
                decode_ms: elapsed as f64,
            });
        }
    }
}

impl Generator for HostLlm {
    fn info(&self) -> GeneratorInfo {
        GeneratorInfo {
            kind: HOST_KIND.into(),
            model: "host".into(),
        }
    }

    fn generate<'a>(
        &'a self,
        request: &'a GenerateRequest,
        sink: &'a dyn GenerationSink,
    ) -> LocalBoxFuture<'a, Result<Generated>> {
        Box::pin(self.run(request, 0, sink))
    }

    fn generate_many<'a>(
        &'a self,
        requests: &'a [GenerateRequest],
        sink: &'a dyn GenerationSink,
    ) -> LocalBoxFuture<'a, Vec<Result<Generated>>> {
        Box::pin(join_all(
            requests
                .iter()
                .enumerate()
                .map(|(index, request)| self.run(request, index, sink)),
        ))
    }
}

/// A generation the caller cancelled, with what came before.
fn cancelled(text: String, pieces: u32) -> Generated {
    Generated {
        text,
        finish: FinishReason::Cancelled,
        prompt_tokens: 0,
        cached_tokens: 0,
        tokens: pieces,
        prefill_ms: 0.0,
        decode_ms: 0.0,
    }
}

fn unknown_call(call_id: &str) -> Error {
    Error::invalid_input(
        "callId",
        format!("no LLM call `{call_id}` is waiting (it was answered, cancelled or timed out)"),
    )
}

/// Tells the page to stop a call the worker no longer waits for.
struct AbortOnDrop {
    host: Weak<HostLlm>,
    call_id: String,
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        let Some(host) = self.host.upgrade() else {
            return;
        };
        let was_pending = host.pending.borrow_mut().remove(&self.call_id).is_some();
        if was_pending {
            (host.emit)(Event::LlmHostAbort {
                call_id: self.call_id.clone(),
            });
        }
    }
}

#[cfg(test)]
mod tests;
