//! The worker's request loop, without the platform: decode, dispatch, account, answer.
//!
//! `orion-web` feeds every message from the page to [`WorkerRuntime::handle`] and posts what comes
//! back; it owns nothing but the glue. Quick requests are answered at once ([`Reply::Send`]);
//! requests that wait for a model or run inference come back as a future ([`Reply::Spawn`]) that
//! the platform runs on its executor. Components tracked in the health report: `protocol` (a
//! rejected message counts as its failure), `runtime` (a request whose handler failed; refusals
//! such as `ERR_INIT_ORDER` are the caller's mistake and count as handled) and `embedder` (model
//! loading and inference).

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use futures_util::future::{FutureExt, Shared};
use serde_json::Value;

use crate::circuit_breaker::{BreakerConfig, CircuitBreaker};
use crate::clock::SharedClock;
use crate::embedding::{Embedder, LocalBoxFuture};
use crate::error::Error;
use crate::health::{HealthConfig, WorkerHealthMonitor};
use crate::profile::{choose, DeviceFacts, Profile, ProfileRequest};
use crate::protocol::{
    self, EmbedResult, Envelope, Event, ModelUrls, Outgoing, Pong, ProfileInfo, Request, RequestId,
    ResponseBody, VersionInfo, PROTOCOL_VERSION,
};
use crate::CORE_VERSION;

/// The health component for message decoding.
pub const PROTOCOL_COMPONENT: &str = "protocol";
/// The health component for request handling.
pub const RUNTIME_COMPONENT: &str = "runtime";
/// The health component for model loading and inference.
pub const EMBEDDER_COMPONENT: &str = "embedder";

/// Texts one `embed` request may carry.
pub const MAX_EMBED_TEXTS: usize = 1024;

/// What the platform must do with a handled message.
pub enum Reply {
    /// Post these messages, in order.
    Send(Vec<Outgoing>),
    /// Run this future; post the messages it resolves to.
    Spawn(LocalBoxFuture<'static, Vec<Outgoing>>),
    /// Debug `crash`: panic now, as a bug would. The page must see the worker die.
    Crash,
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Send(messages) => f.debug_tuple("Send").field(messages).finish(),
            Reply::Spawn(_) => f.write_str("Spawn(..)"),
            Reply::Crash => f.write_str("Crash"),
        }
    }
}

/// Called by a loader whenever it makes progress, so that a long download is not taken for a hang
/// (the health monitor's heartbeat timeout).
pub type Heartbeat = Rc<dyn Fn()>;

/// Loads model-backed embedders: the platform fetches, verifies and caches the files.
pub trait EmbedderLoader {
    /// The embedder for `profile` from the model files under `base_url`; calls `heartbeat` as the
    /// download progresses.
    fn load(
        &self,
        profile: Profile,
        base_url: &str,
        heartbeat: Heartbeat,
    ) -> LocalBoxFuture<'static, crate::error::Result<Rc<dyn Embedder>>>;
}

/// What the platform provides.
pub struct Platform {
    /// Loads MiniLM for the full and lite profiles.
    pub loader: Rc<dyn EmbedderLoader>,
    /// The embedder that needs no model (micro, and the fallback when loading fails).
    pub fallback: Rc<dyn Embedder>,
    /// What the device is.
    pub facts: DeviceFacts,
}

type EmbedderFuture = Shared<LocalBoxFuture<'static, Rc<dyn Embedder>>>;

/// State that asynchronous work shares with the request loop. Never borrowed across an await.
struct Common {
    health: WorkerHealthMonitor,
    breakers: CircuitBreaker,
    events: VecDeque<Event>,
    profile: Option<ProfileInfo>,
}

type SharedState = Rc<RefCell<Common>>;

/// The worker's state between messages.
pub struct WorkerRuntime {
    clock: SharedClock,
    shared: SharedState,
    platform: Platform,
    web_version: String,
    debug: bool,
    embedder: Option<EmbedderFuture>,
}

impl WorkerRuntime {
    /// A runtime waiting for `init`. `web_version` is the platform crate's version.
    pub fn new(clock: SharedClock, web_version: &str, platform: Platform) -> Self {
        let mut health = WorkerHealthMonitor::new(clock.clone(), HealthConfig::default());
        health.register(PROTOCOL_COMPONENT);
        health.register(RUNTIME_COMPONENT);
        let shared = Common {
            health,
            breakers: CircuitBreaker::new(clock.clone(), BreakerConfig::default()),
            events: VecDeque::new(),
            profile: None,
        };
        Self {
            clock,
            shared: Rc::new(RefCell::new(shared)),
            platform,
            web_version: web_version.to_owned(),
            debug: false,
            embedder: None,
        }
    }

    /// Handles one message from the page, already converted to JSON.
    pub fn handle(&mut self, message: Value) -> Reply {
        match protocol::decode(message) {
            Ok(envelope) => {
                self.shared
                    .borrow_mut()
                    .health
                    .record_success(PROTOCOL_COMPONENT);
                self.dispatch(envelope)
            }
            Err(rejection) => Reply::Send(self.reject(rejection.id, &rejection.error)),
        }
    }

    /// Answers a message the platform refused before decoding (too large, too deep, not
    /// convertible), counting it against the protocol.
    pub fn reject(&mut self, id: Option<RequestId>, error: &Error) -> Vec<Outgoing> {
        self.shared
            .borrow_mut()
            .health
            .record_failure(PROTOCOL_COMPONENT, &error.to_string());
        with_events(&self.shared, Outgoing::error(id, error))
    }

    /// Queues an event for the page (for example model download progress), posted with the next
    /// answer; [`WorkerRuntime::take_events`] takes them sooner.
    pub fn push_event(&self, event: Event) {
        self.shared.borrow_mut().events.push_back(event);
    }

    /// Every event not yet posted, as messages.
    pub fn take_events(&self) -> Vec<Outgoing> {
        drain_events(&self.shared)
    }

    /// Runs `f` on the circuit breakers, for components that guard their calls with them.
    pub fn with_breakers<T>(&self, f: impl FnOnce(&mut CircuitBreaker) -> T) -> T {
        f(&mut self.shared.borrow_mut().breakers)
    }

    fn dispatch(&mut self, Envelope { id, request }: Envelope) -> Reply {
        let initialized = self.embedder.is_some();
        // Quick requests are handled synchronously and are never pending; `work_started` is for
        // the asynchronous work below.
        let result = match request {
            Request::Init {
                debug,
                breaker,
                health,
                profile,
                models,
            } if !initialized => {
                self.init(debug, breaker, health, profile, models);
                let version = ResponseBody::Version(self.version());
                return Reply::Spawn(self.answer_after_load(id, version));
            }
            Request::Init { .. } => Err(Error::InitOrder(
                "`init` was already received; a worker is initialised once".into(),
            )),
            other if !initialized => Err(Error::InitOrder(format!(
                "`{}` arrived before `init`; send `init` first",
                other.kind()
            ))),
            Request::Ping { payload } => Ok(ResponseBody::Pong(Pong {
                payload,
                at_ms: self.clock.now_ms(),
            })),
            Request::Health {} => Ok(ResponseBody::Health(
                self.shared.borrow_mut().health.report(),
            )),
            Request::Version {} => Ok(ResponseBody::Version(self.version())),
            Request::Profile {} => match self.shared.borrow().profile.clone() {
                Some(info) => Ok(ResponseBody::Profile(info)),
                None => Err(Error::Internal("no profile after init".into())),
            },
            Request::Embed { texts } => return self.embed(id, texts),
            Request::Crash {} if self.debug => return Reply::Crash,
            Request::Crash {} => Err(Error::DebugDisabled("crash".into())),
        };
        Reply::Send(finish(&self.shared, id, RUNTIME_COMPONENT, result))
    }

    fn init(
        &mut self,
        debug: bool,
        breaker: BreakerConfig,
        health: HealthConfig,
        request: ProfileRequest,
        models: ModelUrls,
    ) {
        self.debug = debug;
        let profile = choose(request, &self.platform.facts);
        {
            let mut shared = self.shared.borrow_mut();
            shared.breakers = CircuitBreaker::new(self.clock.clone(), breaker);
            let mut monitor = WorkerHealthMonitor::new(self.clock.clone(), health);
            monitor.restore(shared.health.snapshot());
            monitor.register(EMBEDDER_COMPONENT);
            shared.health = monitor;
            shared.profile = Some(ProfileInfo {
                requested: request,
                chosen: profile,
                active: profile,
                facts: self.platform.facts,
                embedding: None,
                fallback_reason: None,
            });
        }
        let fallback = Rc::clone(&self.platform.fallback);
        let load = match (profile, models.embedding) {
            (Profile::Micro, _) => None,
            (_, None) => Some(Err(
                "no embedding model URL was given (`models.embedding`)".to_owned()
            )),
            (_, Some(url)) => {
                let shared = Rc::clone(&self.shared);
                let heartbeat: Heartbeat = Rc::new(move || {
                    // Never called while the state is borrowed; if it were, skip one beat
                    // rather than panic.
                    if let Ok(mut state) = shared.try_borrow_mut() {
                        state.health.heartbeat(EMBEDDER_COMPONENT);
                    }
                });
                Some(Ok(self.platform.loader.load(profile, &url, heartbeat)))
            }
        };
        let shared = Rc::clone(&self.shared);
        let future: LocalBoxFuture<'static, Rc<dyn Embedder>> = Box::pin(async move {
            let loaded = match load {
                None => Ok(None),
                Some(Err(reason)) => Err(reason),
                Some(Ok(loading)) => {
                    shared.borrow_mut().health.work_started(EMBEDDER_COMPONENT);
                    loading.await.map(Some).map_err(|e| e.to_string())
                }
            };
            let mut state = shared.borrow_mut();
            let embedder = match loaded {
                Ok(Some(model)) => {
                    state.health.record_success(EMBEDDER_COMPONENT);
                    model
                }
                Ok(None) => fallback,
                Err(reason) => {
                    state.health.record_failure(EMBEDDER_COMPONENT, &reason);
                    state.events.push_back(Event::EmbedderFallback {
                        reason: reason.clone(),
                        model: fallback.info().clone(),
                    });
                    if let Some(info) = state.profile.as_mut() {
                        info.active = Profile::Micro;
                        info.fallback_reason = Some(reason);
                    }
                    fallback
                }
            };
            if let Some(info) = state.profile.as_mut() {
                info.embedding = Some(embedder.info().clone());
            }
            embedder
        });
        self.embedder = Some(future.shared());
    }

    /// Answers `id` with `body` once the embedder is ready (so `Orion.create` resolves with a
    /// usable orchestrator), with the events that happened meanwhile.
    fn answer_after_load(
        &self,
        id: RequestId,
        body: ResponseBody,
    ) -> LocalBoxFuture<'static, Vec<Outgoing>> {
        let embedder = self.embedder.clone();
        let shared = Rc::clone(&self.shared);
        Box::pin(async move {
            if let Some(embedder) = embedder {
                embedder.await;
            }
            finish(&shared, id, RUNTIME_COMPONENT, Ok(body))
        })
    }

    fn embed(&self, id: RequestId, texts: Vec<String>) -> Reply {
        if texts.len() > MAX_EMBED_TEXTS {
            let error = Error::MessageTooLarge {
                path: "texts".into(),
                size: texts.len() as u64,
                limit: MAX_EMBED_TEXTS as u64,
            };
            return Reply::Send(finish(&self.shared, id, RUNTIME_COMPONENT, Err(error)));
        }
        let Some(embedder) = self.embedder.clone() else {
            let error = Error::Internal("no embedder after init".into());
            return Reply::Send(finish(&self.shared, id, RUNTIME_COMPONENT, Err(error)));
        };
        let shared = Rc::clone(&self.shared);
        Reply::Spawn(Box::pin(async move {
            let embedder = embedder.await;
            shared.borrow_mut().health.work_started(EMBEDDER_COMPONENT);
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let result = embedder.embed(&refs).await.map(|vectors| {
                ResponseBody::Embedded(EmbedResult {
                    vectors,
                    model: embedder.info().clone(),
                })
            });
            finish(&shared, id, EMBEDDER_COMPONENT, result)
        }))
    }

    fn version(&self) -> VersionInfo {
        VersionInfo {
            core: CORE_VERSION.to_owned(),
            web: self.web_version.clone(),
            protocol: PROTOCOL_VERSION,
        }
    }
}

/// Accounts for a finished request against `component` and builds its answer and events.
fn finish(
    shared: &SharedState,
    id: RequestId,
    component: &str,
    result: crate::error::Result<ResponseBody>,
) -> Vec<Outgoing> {
    let answer = {
        let mut state = shared.borrow_mut();
        match result {
            Ok(result) => {
                state.health.record_success(component);
                Outgoing::Response {
                    v: PROTOCOL_VERSION,
                    id,
                    result,
                }
            }
            Err(error) => {
                match error {
                    Error::Internal(_) | Error::Embedding(_) | Error::ModelLoad { .. } => {
                        state.health.record_failure(component, &error.to_string())
                    }
                    _ => state.health.record_success(component),
                }
                Outgoing::error(Some(id), &error)
            }
        }
    };
    with_events(shared, answer)
}

/// `answer` followed by the events that happened while producing it.
fn with_events(shared: &SharedState, answer: Outgoing) -> Vec<Outgoing> {
    std::iter::once(answer)
        .chain(drain_events(shared))
        .collect()
}

fn drain_events(shared: &SharedState) -> Vec<Outgoing> {
    let mut state = shared.borrow_mut();
    let breaker_events = state.breakers.drain_events();
    let health_events = state.health.drain_events();
    let mut events: Vec<Event> = state.events.drain(..).collect();
    events.extend(breaker_events.into_iter().map(Event::BreakerTransition));
    events.extend(health_events.into_iter().map(Event::HealthTransition));
    events
        .into_iter()
        .map(|event| Outgoing::Event {
            v: PROTOCOL_VERSION,
            event,
        })
        .collect()
}

#[cfg(test)]
mod tests;
