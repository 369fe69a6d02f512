//! `ask` and `ask_cancel`: the [`Orchestrator`] wired to the worker's embedder, memories,
//! generator, breakers and health.
//!
//! An `ask` waits for the embedder (so it answers with the active profile) and for the memory
//! layer; a store that failed to open is routed around (`provenance.degraded` says `store`). The
//! generator is fetched only when the pipeline needs one, so a tool or micro answer never loads
//! the local model. Stages stream as `ask_status` events and generated text as `ask_token`
//! events; `ask_cancel` makes the request reject with `ERR_CANCELLED` at its next check.

use std::cell::Cell;
use std::rc::Rc;

use super::{
    finish, json_body, strip_request_prefix, Reply, Request, RequestId, SharedState, WorkerRuntime,
    EMBEDDER_COMPONENT, RUNTIME_COMPONENT,
};
use crate::circuit_breaker::Permit;
use crate::coordinator::DebateRunner;
use crate::error::{Error, Result};
use crate::guard::{settle, Guard};
use crate::health::HealthStatus;
use crate::input::from_json_at;
use crate::orchestrator::{
    AskObserver, AskRequest, AskSettings, Orchestrator, OrchestratorSettings, Resources, Stage,
    ORCHESTRATOR_COMPONENT,
};
use crate::protocol::Event;
use crate::tools::{
    calculator::Calculator, date_time::DateTime, units::UnitConverter, HostTool, HostToolSpec,
    MemorySearch, Remember, Tool, ToolExecutionManager, ToolPolicy, MAX_HOST_TOOLS,
};

/// The health component of `ask` as a whole.
pub const ASK_COMPONENT: &str = ORCHESTRATOR_COMPONENT;

/// The built-in tools, in the order their intent rules are asked.
pub fn builtin_tools() -> Vec<Rc<dyn Tool>> {
    vec![
        Rc::new(Remember::default()),
        Rc::new(MemorySearch::default()),
        Rc::new(DateTime::new()),
        Rc::new(UnitConverter::new()),
        Rc::new(Calculator::new()),
    ]
}

impl WorkerRuntime {
    /// Builds the orchestrator with the built-in tools and the page's (at `init`); a bad page
    /// tool refuses the init.
    pub(super) fn start_orchestrator(
        &mut self,
        host_tools: Vec<HostToolSpec>,
        settings: AskSettings,
    ) -> Result<()> {
        let settings = settings.apply(OrchestratorSettings::default())?;
        let mut tools = ToolExecutionManager::new(
            ToolPolicy::default(),
            self.clock.clone(),
            Rc::clone(&self.platform.sleep),
        );
        for tool in builtin_tools() {
            tools.register(tool, self.platform.schemas.as_ref())?;
        }
        if host_tools.len() > MAX_HOST_TOOLS {
            return Err(Error::invalid_input(
                "tools",
                format!("at most {MAX_HOST_TOOLS} tools may be given"),
            ));
        }
        for (i, spec) in host_tools.into_iter().enumerate() {
            spec.validate(&format!("tools[{i}]"))?;
            let tool = HostTool::new(spec, Rc::clone(&self.tool_calls));
            tools.register(Rc::new(tool), self.platform.schemas.as_ref())?;
        }
        self.orchestrator = Some(Rc::new(Orchestrator::new(
            tools,
            settings,
            self.clock.clone(),
            self.platform.seed,
        )));
        Ok(())
    }

    pub(super) fn ask(&mut self, id: RequestId, request: Request) -> Reply {
        let result = match request {
            Request::Ask { request } => {
                match from_json_at::<AskRequest>("request", request).map_err(strip_request_prefix) {
                    Ok(request) => match request.validate() {
                        Ok(_) => return self.answer(id, request),
                        Err(error) => Err(error),
                    },
                    Err(error) => Err(error),
                }
            }
            Request::ToolHostResult {
                call_id,
                value,
                error,
            } => {
                let answer = match error {
                    Some(failure) => Err(failure),
                    None => Ok(value.unwrap_or(serde_json::Value::Null)),
                };
                if self.tool_calls.answer(&call_id, answer) {
                    json_body(&serde_json::Value::Null)
                } else {
                    Err(Error::invalid_input(
                        "callId",
                        format!(
                            "no tool call `{call_id}` is waiting (it was answered, timed out or \
                             cancelled)"
                        ),
                    ))
                }
            }
            Request::AskCancel { request_id } => {
                let flag = self.shared.borrow().asks.get(&request_id).cloned();
                if let Some(flag) = &flag {
                    flag.set(true);
                }
                json_body(&flag.is_some())
            }
            other => Err(Error::Internal(format!(
                "`{}` is not an ask request",
                other.kind()
            ))),
        };
        Reply::Send(finish(&self.shared, id, RUNTIME_COMPONENT, result))
    }

    fn answer(&mut self, id: RequestId, request: AskRequest) -> Reply {
        let Some(orchestrator) = self.orchestrator.clone() else {
            let error = Error::Internal("no orchestrator after init".into());
            return Reply::Send(finish(&self.shared, id, RUNTIME_COMPONENT, Err(error)));
        };
        let embedder = self.embedder.clone();
        let memories = self.memories.clone();
        let (spawn, sleep) = (
            Rc::clone(&self.platform.spawn),
            Rc::clone(&self.platform.sleep),
        );
        let access = self.generator_access();
        let debates = self.debates.clone();
        let shared = Rc::clone(&self.shared);
        let cancelled = Rc::new(Cell::new(false));
        shared.borrow_mut().asks.insert(id, Rc::clone(&cancelled));
        let observer: Rc<dyn AskObserver> = Rc::new(Observer {
            request_id: id,
            emit: Rc::clone(&self.platform.emit),
            shared: Rc::clone(&shared),
            cancelled,
        });
        Reply::Spawn(Box::pin(async move {
            let result = async {
                let embedder = match embedder {
                    Some(embedder) => embedder.await,
                    None => return Err(Error::Internal("no embedder after init".into())),
                };
                let memories = match memories {
                    Some(memories) => memories.await.ok(),
                    None => None,
                };
                let (profile, fallback) = shared
                    .borrow()
                    .profile
                    .as_ref()
                    .map(|info| (info.active, info.fallback_reason.clone()))
                    .ok_or_else(|| Error::Internal("no profile after init".into()))?;
                // The embedding model failed to load: the worker runs on micro, and says so.
                let degraded = fallback
                    .map(|reason| {
                        (
                            EMBEDDER_COMPONENT.to_owned(),
                            format!(
                                "the embedding model could not load ({reason}); answering on micro"
                            ),
                        )
                    })
                    .into_iter()
                    .collect();
                let searched = memories.clone();
                let resources = Resources {
                    profile,
                    embedder,
                    memories,
                    generator: Some(Rc::new(move || access.get())),
                    guard: Rc::new(RuntimeGuard(Rc::clone(&shared))),
                    degraded,
                    debates: match debates {
                        // Only the leader runs workflows; elsewhere the debate runs here.
                        Some(debates) => debates
                            .await
                            .filter(|debates| debates.is_running_workflows())
                            .map(|debates| debates as Rc<dyn DebateRunner>),
                        None => None,
                    },
                    background: Some(Rc::clone(&spawn)),
                };
                let answer = orchestrator.ask(&request, &resources, observer).await;
                // The memory search touched its hits: their access times are written as a
                // `memory_search`'s are.
                if let Some(memories) = &searched {
                    super::memory_requests::flush_touches_later(memories, &spawn, &shared, &sleep);
                }
                json_body(&answer?)
            }
            .await;
            shared.borrow_mut().asks.remove(&id);
            // The orchestrator accounted for its components and for itself through the guard.
            finish(&shared, id, RUNTIME_COMPONENT, result)
        }))
    }
}

/// The runtime's breakers and health as a [`Guard`]; never borrowed across an await.
struct RuntimeGuard(SharedState);

impl Guard for RuntimeGuard {
    fn admit(&self, breaker: &str) -> Result<Permit> {
        self.0.borrow_mut().breakers.try_acquire(breaker)
    }

    fn started(&self, component: &str) {
        self.0.borrow_mut().health.work_started(component);
    }

    fn finished(&self, component: &str, permit: Permit, outcome: std::result::Result<(), &Error>) {
        let mut guard = self.0.borrow_mut();
        let state = &mut *guard;
        settle(
            &mut state.breakers,
            &mut state.health,
            component,
            permit,
            outcome,
        );
    }

    fn unhealthy(&self, component: &str) -> bool {
        self.0.borrow_mut().health.status(component) == HealthStatus::Unhealthy
    }
}

/// Streams an `ask`'s progress to the page.
struct Observer {
    request_id: RequestId,
    emit: Rc<dyn Fn(Event)>,
    shared: SharedState,
    cancelled: Rc<Cell<bool>>,
}

impl AskObserver for Observer {
    fn stage(&self, stage: Stage, message: &str) {
        (self.emit)(Event::AskStatus {
            request_id: self.request_id,
            stage,
            message: message.to_owned(),
        });
    }

    fn token(&self, agent: &str, text: &str) {
        if let Ok(mut state) = self.shared.try_borrow_mut() {
            state.health.heartbeat(super::GENERATOR_COMPONENT);
        }
        (self.emit)(Event::AskToken {
            request_id: self.request_id,
            agent: agent.to_owned(),
            text: text.to_owned(),
        });
    }

    fn cancelled(&self) -> bool {
        self.cancelled.get()
    }
}

#[cfg(test)]
mod tests;
