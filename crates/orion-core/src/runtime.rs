//! The worker's request loop, without the platform: decode, dispatch, account, answer.
//!
//! `orion-web` feeds every message from the page to [`WorkerRuntime::handle`] and posts what comes
//! back; it owns nothing but the glue. Two components are tracked in the health report:
//! `protocol` (a rejected message counts as its failure) and `runtime` (a request whose handler
//! failed counts as its failure; refusals such as `ERR_INIT_ORDER` are the caller's mistake and
//! count as handled).

use serde_json::Value;

use crate::circuit_breaker::{BreakerConfig, CircuitBreaker};
use crate::clock::SharedClock;
use crate::error::Error;
use crate::health::{HealthConfig, WorkerHealthMonitor};
use crate::protocol::{
    self, Envelope, Event, Outgoing, Pong, Request, RequestId, ResponseBody, VersionInfo,
    PROTOCOL_VERSION,
};
use crate::CORE_VERSION;

/// The health component for message decoding.
pub const PROTOCOL_COMPONENT: &str = "protocol";
/// The health component for request handling.
pub const RUNTIME_COMPONENT: &str = "runtime";

/// What the platform must do with a handled message.
#[derive(Debug, PartialEq)]
pub enum Reply {
    /// Post these messages, in order.
    Send(Vec<Outgoing>),
    /// Debug `crash`: panic now, as a bug would. The page must see the worker die.
    Crash,
}

/// The worker's state between messages.
pub struct WorkerRuntime {
    clock: SharedClock,
    breakers: CircuitBreaker,
    health: WorkerHealthMonitor,
    web_version: String,
    debug: bool,
    initialized: bool,
}

impl WorkerRuntime {
    /// A runtime waiting for `init`. `web_version` is the platform crate's version.
    pub fn new(clock: SharedClock, web_version: &str) -> Self {
        let mut health = WorkerHealthMonitor::new(clock.clone(), HealthConfig::default());
        health.register(PROTOCOL_COMPONENT);
        health.register(RUNTIME_COMPONENT);
        Self {
            breakers: CircuitBreaker::new(clock.clone(), BreakerConfig::default()),
            clock,
            health,
            web_version: web_version.to_owned(),
            debug: false,
            initialized: false,
        }
    }

    /// Handles one message from the page, already converted to JSON.
    pub fn handle(&mut self, message: Value) -> Reply {
        match protocol::decode(message) {
            Ok(envelope) => {
                self.health.record_success(PROTOCOL_COMPONENT);
                self.dispatch(envelope)
            }
            Err(rejection) => Reply::Send(self.reject(rejection.id, &rejection.error)),
        }
    }

    /// Answers a message the platform refused before decoding (too large, too deep, not
    /// convertible), counting it against the protocol.
    pub fn reject(&mut self, id: Option<RequestId>, error: &Error) -> Vec<Outgoing> {
        self.health
            .record_failure(PROTOCOL_COMPONENT, &error.to_string());
        self.with_events(Outgoing::error(id, error))
    }

    /// The circuit breakers, for components that guard their calls with them.
    pub fn breakers(&mut self) -> &mut CircuitBreaker {
        &mut self.breakers
    }

    fn dispatch(&mut self, Envelope { id, request }: Envelope) -> Reply {
        // Every request is handled synchronously, so none is ever pending: `work_started` is for
        // the asynchronous work (inference, storage) that reports heartbeats.
        let result = match request {
            Request::Init {
                debug,
                breaker,
                health,
            } if !self.initialized => {
                self.initialized = true;
                self.debug = debug;
                self.breakers = CircuitBreaker::new(self.clock.clone(), breaker);
                let mut monitor = WorkerHealthMonitor::new(self.clock.clone(), health);
                monitor.restore(self.health.snapshot());
                self.health = monitor;
                Ok(ResponseBody::Version(self.version()))
            }
            Request::Init { .. } => Err(Error::InitOrder(
                "`init` was already received; a worker is initialised once".into(),
            )),
            other if !self.initialized => Err(Error::InitOrder(format!(
                "`{}` arrived before `init`; send `init` first",
                other.kind()
            ))),
            Request::Ping { payload } => Ok(ResponseBody::Pong(Pong {
                payload,
                at_ms: self.clock.now_ms(),
            })),
            Request::Health {} => Ok(ResponseBody::Health(self.health.report())),
            Request::Version {} => Ok(ResponseBody::Version(self.version())),
            Request::Crash {} if self.debug => return Reply::Crash,
            Request::Crash {} => Err(Error::DebugDisabled("crash".into())),
        };
        let answer = match result {
            Ok(result) => {
                self.health.record_success(RUNTIME_COMPONENT);
                Outgoing::Response {
                    v: PROTOCOL_VERSION,
                    id,
                    result,
                }
            }
            Err(error) => {
                match error {
                    Error::Internal(_) => self
                        .health
                        .record_failure(RUNTIME_COMPONENT, &error.to_string()),
                    _ => self.health.record_success(RUNTIME_COMPONENT),
                }
                Outgoing::error(Some(id), &error)
            }
        };
        Reply::Send(self.with_events(answer))
    }

    fn version(&self) -> VersionInfo {
        VersionInfo {
            core: CORE_VERSION.to_owned(),
            web: self.web_version.clone(),
            protocol: PROTOCOL_VERSION,
        }
    }

    /// `answer` followed by the events that happened while producing it.
    fn with_events(&mut self, answer: Outgoing) -> Vec<Outgoing> {
        let breaker_events = self
            .breakers
            .drain_events()
            .into_iter()
            .map(Event::BreakerTransition);
        let health_events = self
            .health
            .drain_events()
            .into_iter()
            .map(Event::HealthTransition);
        std::iter::once(answer)
            .chain(
                breaker_events
                    .chain(health_events)
                    .map(|event| Outgoing::Event {
                        v: PROTOCOL_VERSION,
                        event,
                    }),
            )
            .collect()
    }
}

#[cfg(test)]
mod tests;
