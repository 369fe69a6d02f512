//! The worker's request loop, without the platform: decode, dispatch, account, answer.
//!
//! `orion-web` feeds every message from the page to [`WorkerRuntime::handle`] and posts what comes
//! back; it owns nothing but the glue. Quick requests are answered at once ([`Reply::Send`]);
//! requests that wait for a model or run inference come back as a future ([`Reply::Spawn`]) that
//! the platform runs on its executor. Components tracked in the health report: `protocol` (a
//! rejected message counts as its failure), `runtime` (a request whose handler failed; refusals
//! such as `ERR_INIT_ORDER` are the caller's mistake and count as handled), `embedder` (model
//! loading and inference) and `generator` (text generation: loading the local LLM, and every
//! generation, local or host).

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use futures_util::future::{FutureExt, Shared};
use serde_json::Value;

use crate::circuit_breaker::{BreakerConfig, CircuitBreaker};
use crate::clock::SharedClock;
use crate::embedding::{Embedder, LocalBoxFuture};
use crate::error::Error;
use crate::guard::is_component_failure;
use crate::health::{HealthConfig, WorkerHealthMonitor};
use crate::llm_settings::LlmSettings;
use crate::memory::{Memories, MemoryConfig, MemorySettings};
use crate::model_source::{LlmSource, ModelSource};
use crate::orchestrator::Orchestrator;
use crate::page_calls::PageCalls;
use crate::profile::{choose, DeviceFacts, Profile, ProfileRequest};
use crate::protocol::{
    self, EmbedResult, Envelope, Event, Models, Outgoing, Pong, ProfileInfo, Request, RequestId,
    ResponseBody, VersionInfo, PROTOCOL_VERSION,
};
use crate::store::Store;
use crate::tasks::{Sleep, TaskChanges, TaskSettings, Tasks};
use crate::tools::HostToolAnswer;
use crate::CORE_VERSION;

pub use ask_requests::{builtin_tools, ASK_COMPONENT};
pub use llm_requests::{
    GeneratorLoader, GENERATOR_COMPONENT, LLM_INFERENCE_BREAKER, LLM_LOAD_BREAKER,
    MAX_GENERATE_MANY,
};
pub use task_requests::TASKS_COMPONENT;

/// The health component for message decoding.
pub const PROTOCOL_COMPONENT: &str = "protocol";
/// The health component for request handling.
pub const RUNTIME_COMPONENT: &str = "runtime";
/// The health component for model loading and inference.
pub const EMBEDDER_COMPONENT: &str = "embedder";

/// The health component for the memory store (IndexedDB).
pub const STORE_COMPONENT: &str = "store";

/// Texts one `embed` request may carry.
pub const MAX_EMBED_TEXTS: usize = 1024;

/// Memories one `memory_add_many` request may carry.
pub const MAX_ADD_MANY: usize = 10_000;

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
    /// The embedder for `profile` from the model files of `source`; calls
    /// `heartbeat` as the download progresses.
    fn load(
        &self,
        profile: Profile,
        source: &ModelSource,
        heartbeat: Heartbeat,
    ) -> LocalBoxFuture<'static, crate::error::Result<Rc<dyn Embedder>>>;
}

/// The database ORION uses unless `init` names another.
pub const DEFAULT_DATABASE: &str = "orion";

/// Opens the database.
pub trait StoreOpener {
    /// The database `name`, opened (and upgraded to the current schema).
    fn open(&self, name: &str) -> LocalBoxFuture<'static, crate::error::Result<Rc<dyn Store>>>;
}

/// What the platform provides.
pub struct Platform {
    /// Loads MiniLM for a profile (f32 for full, Q8_0 for lite and micro).
    pub loader: Rc<dyn EmbedderLoader>,
    /// The embedder that needs no model (micro, and the fallback when loading fails).
    pub fallback: Rc<dyn Embedder>,
    /// What the device is.
    pub facts: DeviceFacts,
    /// Opens the database that holds memories.
    pub store: Rc<dyn StoreOpener>,
    /// Random bits for ids (unique across workers).
    pub seed: u64,
    /// Posts an event to the page at once (progress of long requests).
    pub emit: Rc<dyn Fn(Event)>,
    /// Runs work that no answer waits for (writing search hits' access times).
    pub spawn: Rc<dyn Fn(LocalBoxFuture<'static, ()>)>,
    /// Tells other workers on the same database which memories changed (they call
    /// [`WorkerRuntime::memories_changed`] with them).
    pub publish_memory_changes: Rc<dyn Fn(Vec<String>)>,
    /// Asks for the exclusive lock of this name, held until the worker ends (in the browser, a
    /// Web Lock); once granted, the platform calls [`WorkerRuntime::leadership_gained`].
    pub request_leadership: Rc<dyn Fn(String)>,
    /// Tells other workers on the same database which task rows changed (they call
    /// [`WorkerRuntime::tasks_changed`] with them).
    pub publish_task_changes: Rc<dyn Fn(TaskChanges)>,
    /// A timer: resolves after this many ms (the task loop sleeps on it).
    pub sleep: Sleep,
    /// Compiles the JSON Schemas of task payloads.
    pub schemas: Rc<dyn crate::tasks::SchemaCompiler>,
    /// Loads the local LLM (`models.llm`) on the first generation.
    pub generators: Rc<dyn GeneratorLoader>,
}

/// The leader lock of database `name` is `orion-leader/<name>`.
pub const LEADER_LOCK_PREFIX: &str = "orion-leader/";

/// The embedder of the active profile: never fails, since a failed load falls back to micro.
type EmbedderFuture = Shared<LocalBoxFuture<'static, Rc<dyn Embedder>>>;

/// An embedder loaded because `embed` asked for another profile than the active one.
type OnDemandFuture = Shared<LocalBoxFuture<'static, crate::error::Result<Rc<dyn Embedder>>>>;

/// The memory layer, once the store is open and the index loaded.
type MemoriesFuture = Shared<LocalBoxFuture<'static, crate::error::Result<Rc<Memories>>>>;

/// The worker's database, once open (memories and tasks share it).
type StoreFuture = Shared<LocalBoxFuture<'static, crate::error::Result<Rc<dyn Store>>>>;

/// The task engines, once open.
type TasksFuture = Shared<LocalBoxFuture<'static, crate::error::Result<Rc<Tasks>>>>;

/// State that asynchronous work shares with the request loop. Never borrowed across an await.
struct Common {
    health: WorkerHealthMonitor,
    breakers: CircuitBreaker,
    events: VecDeque<Event>,
    profile: Option<ProfileInfo>,
    /// Embedders of other profiles, by profile; a failed load is removed so a later call retries.
    on_demand: HashMap<Profile, OnDemandFuture>,
    /// The task alerts firing now (health shows them).
    alerts: Vec<crate::task_metrics::AlertEvent>,
    /// The generator and the generations running.
    llm: llm_requests::LlmState,
    /// The cancellation flag of each running `ask`, by request id.
    asks: HashMap<RequestId, Rc<Cell<bool>>>,
    /// Backups being taken now ([`crate::backup::BackupManager::counting_backups_in`]).
    backups_taking: Rc<Cell<u32>>,
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
    source: Option<ModelSource>,
    memories: Option<MemoriesFuture>,
    store: Option<StoreFuture>,
    tasks: Option<TasksFuture>,
    backups: Option<backup_requests::BackupsFuture>,
    /// Runs debates as workflows, once the task engines are open.
    debates: Option<debates::DebatesFuture>,
    database: String,
    /// Whether the platform granted this worker its database's leader lock.
    leader: Rc<Cell<bool>>,
    memory_settings: MemorySettings,
    task_settings: TaskSettings,
    background: Vec<LocalBoxFuture<'static, ()>>,
    /// The local LLM's file, when `models.llm` named one.
    llm_source: Option<LlmSource>,
    /// `init.llm`.
    llm_settings: LlmSettings,
    /// `init.backups`, checked at init.
    backup_settings: crate::backup::BackupSettings,
    /// Answers `ask`, once initialised.
    orchestrator: Option<Rc<Orchestrator>>,
    /// Calls of the page's tools waiting for their answers.
    tool_calls: Rc<PageCalls<HostToolAnswer>>,
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
            on_demand: HashMap::new(),
            alerts: Vec::new(),
            llm: llm_requests::LlmState::default(),
            asks: HashMap::new(),
            backups_taking: Rc::default(),
        };
        let tool_calls = PageCalls::new(Rc::clone(&platform.emit), "t", |call_id| {
            Event::ToolHostAbort { call_id }
        });
        Self {
            clock,
            shared: Rc::new(RefCell::new(shared)),
            platform,
            web_version: web_version.to_owned(),
            debug: false,
            embedder: None,
            source: None,
            memories: None,
            store: None,
            tasks: None,
            backups: None,
            debates: None,
            database: DEFAULT_DATABASE.to_owned(),
            leader: Rc::new(Cell::new(false)),
            memory_settings: MemorySettings::default(),
            task_settings: TaskSettings::default(),
            background: Vec::new(),
            llm_source: None,
            llm_settings: LlmSettings::default(),
            backup_settings: crate::backup::BackupSettings::default(),
            orchestrator: None,
            tool_calls,
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
                database,
                memory,
                tasks,
                llm,
                tools,
                ask,
                backups,
            } if !initialized => {
                // Bad settings refuse the init (so `Orion.create` rejects) before anything starts.
                match MemoryConfig::for_profile(Profile::Full)
                    .with(memory)
                    .and_then(|_| tasks.validate())
                    .and_then(|()| llm.validate())
                    .and_then(|()| backups.resolve().map(|_| ()))
                    .and_then(|()| self.start_orchestrator(tools, *ask))
                {
                    Err(error) => Err(error),
                    Ok(_) => {
                        self.database = database.unwrap_or_else(|| DEFAULT_DATABASE.to_owned());
                        (self.platform.request_leadership)(format!(
                            "{LEADER_LOCK_PREFIX}{}",
                            self.database
                        ));
                        self.memory_settings = memory;
                        self.task_settings = tasks;
                        self.llm_settings = *llm;
                        self.backup_settings = *backups;
                        self.init(debug, breaker, health, profile, *models);
                        let version = ResponseBody::Version(self.version());
                        return Reply::Spawn(self.answer_after_load(id, version));
                    }
                }
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
            Request::Health {} => {
                let mut state = self.shared.borrow_mut();
                let mut report = state.health.report();
                report.leader = self.leader.get();
                report.alerts = state.alerts.clone();
                Ok(ResponseBody::Health(report))
            }
            Request::Version {} => Ok(ResponseBody::Version(self.version())),
            Request::Profile {} => match self.shared.borrow().profile.clone() {
                Some(info) => Ok(ResponseBody::Profile(info)),
                None => Err(Error::Internal("no profile after init".into())),
            },
            Request::Embed { texts, profile } => return self.embed(id, texts, profile),
            Request::MemoryAdd { .. }
            | Request::MemoryAddMany { .. }
            | Request::MemoryGet { .. }
            | Request::MemoryDelete { .. }
            | Request::MemoryList { .. }
            | Request::MemorySearch { .. }
            | Request::MemoryPurge { .. }
            | Request::MemoryStats {} => return self.memory(id, request),
            Request::TasksDefine { .. }
            | Request::TasksSchedule { .. }
            | Request::TasksStatus { .. }
            | Request::TasksCancel { .. }
            | Request::TasksPause { .. }
            | Request::TasksResume { .. }
            | Request::TasksRetry { .. }
            | Request::TasksSignal { .. }
            | Request::TasksList { .. }
            | Request::TasksCounts {}
            | Request::TasksPauseQueue { .. }
            | Request::TasksUpsertSchedule { .. }
            | Request::TasksRemoveSchedule { .. }
            | Request::TasksListSchedules {}
            | Request::TasksResult { .. }
            | Request::TasksProgress { .. }
            | Request::TasksMetrics { .. }
            | Request::TasksConfigureAlerts { .. } => return self.tasks(id, request),
            Request::BackupsCreate { .. }
            | Request::BackupsList {}
            | Request::BackupsStats {}
            | Request::BackupsVerify { .. }
            | Request::BackupsExport { .. }
            | Request::BackupsDelete { .. }
            | Request::BackupsRestore { .. }
            | Request::BackupsImport { .. } => return self.backups(id, request),
            Request::LlmGenerate { .. }
            | Request::LlmGenerateMany { .. }
            | Request::LlmCancel { .. }
            | Request::LlmHostChunk { .. }
            | Request::LlmHostResult { .. } => return self.llm(id, request),
            Request::Ask { .. } | Request::AskCancel { .. } | Request::ToolHostResult { .. } => {
                return self.ask(id, request)
            }
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
        models: Models,
    ) {
        self.debug = debug;
        let profile = choose(request, &self.platform.facts);
        {
            let mut shared = self.shared.borrow_mut();
            shared.breakers = CircuitBreaker::new(self.clock.clone(), breaker);
            let mut monitor = WorkerHealthMonitor::new(self.clock.clone(), health);
            monitor.restore(shared.health.snapshot());
            monitor.register(EMBEDDER_COMPONENT);
            monitor.register(STORE_COMPONENT);
            monitor.register(TASKS_COMPONENT);
            monitor.register(GENERATOR_COMPONENT);
            monitor.register(ASK_COMPONENT);
            monitor.register(crate::tools::TOOLS_COMPONENT);
            shared.health = monitor;
            // A failed load of the local LLM is not retried until the breaker's open time passed.
            shared.breakers.configure(
                LLM_LOAD_BREAKER,
                BreakerConfig {
                    failure_threshold: 1,
                    success_threshold: 1,
                    ..breaker
                },
            );
            shared.profile = Some(ProfileInfo {
                requested: request,
                chosen: profile,
                active: profile,
                budget: profile.budget(),
                facts: self.platform.facts,
                embedding: None,
                fallback_reason: None,
            });
        }
        self.source = models.embedding;
        self.llm_source = models.llm;
        self.start_host_llm();
        let fallback = Rc::clone(&self.platform.fallback);
        let load = match (profile, &self.source) {
            // Micro runs MiniLM too when a model is given; without one, the hashing embedder is
            // its embedder, not a fallback.
            (Profile::Micro, None) => None,
            (_, None) => Some(Err(Error::model_load(
                "models.embedding",
                "no embedding model was given",
            ))),
            (_, Some(source)) => Some(Ok(self.platform.loader.load(
                profile,
                source,
                self.heartbeat(EMBEDDER_COMPONENT),
            ))),
        };
        let shared = Rc::clone(&self.shared);
        let future: LocalBoxFuture<'static, Rc<dyn Embedder>> = Box::pin(async move {
            let loaded = match load {
                None => Ok(None),
                Some(Err(reason)) => Err(reason),
                Some(Ok(loading)) => {
                    shared.borrow_mut().health.work_started(EMBEDDER_COMPONENT);
                    loading.await.map(Some)
                }
            };
            let mut state = shared.borrow_mut();
            let embedder = match loaded {
                Ok(Some(model)) => {
                    state.health.record_success(EMBEDDER_COMPONENT);
                    model
                }
                Ok(None) => fallback,
                Err(error) => {
                    let reason = error.to_string();
                    state.health.record_failure(EMBEDDER_COMPONENT, &reason);
                    state.events.push_back(Event::EmbedderFallback {
                        reason: reason.clone(),
                        code: error.code(),
                        model: fallback.info().clone(),
                    });
                    if let Some(info) = state.profile.as_mut() {
                        info.active = Profile::Micro;
                        info.budget = Profile::Micro.budget();
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
        let opener = Rc::clone(&self.platform.store);
        let database = self.database.clone();
        let store: LocalBoxFuture<'static, _> =
            Box::pin(async move { opener.open(&database).await });
        self.store = Some(store.shared());
        let memories = self.open_memories();
        // The index loads now, not at the first memory request; the task loop starts now.
        self.background.push(Box::pin(memories.clone().map(|_| ())));
        self.memories = Some(memories);
        let tasks = self.open_tasks();
        self.background.push(Box::pin(tasks.clone().map(|_| ())));
        self.tasks = Some(tasks);
        let debates = self.open_debates();
        self.background.push(Box::pin(debates.clone().map(|_| ())));
        self.debates = Some(debates);
        let backups = self.open_backups();
        self.background.push(Box::pin(backups.clone().map(|_| ())));
        self.backups = Some(backups);
        let migration = self.open_migration();
        self.background.push(migration);
    }

    /// The platform granted the lock asked for through [`Platform::request_leadership`]: this
    /// worker is its database's leader from now on (`health().leader`, a `leadership` event).
    pub fn leadership_gained(&mut self) {
        if self.leader.replace(true) {
            return;
        }
        (self.platform.emit)(Event::Leadership {
            database: self.database.clone(),
        });
        // Before the engines open, opening sees the flag instead.
        if let Some(tasks) = self.tasks.clone() {
            self.background.push(Box::pin(async move {
                if let Ok(tasks) = tasks.await {
                    tasks.become_leader();
                }
            }));
        }
    }

    /// Work to run on the platform's executor that answers no request (loading the memory
    /// index). Take it after every [`WorkerRuntime::handle`].
    pub fn take_background(&mut self) -> Vec<LocalBoxFuture<'static, ()>> {
        std::mem::take(&mut self.background)
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

    /// Keeps `component`'s heartbeat going while a model downloads.
    fn heartbeat(&self, component: &'static str) -> Heartbeat {
        heartbeat(&self.shared, component)
    }

    fn embed(&self, id: RequestId, texts: Vec<String>, profile: Option<Profile>) -> Reply {
        if texts.len() > MAX_EMBED_TEXTS {
            let error = Error::MessageTooLarge {
                path: "texts".into(),
                size: texts.len() as u64,
                limit: MAX_EMBED_TEXTS as u64,
            };
            return Reply::Send(finish(&self.shared, id, RUNTIME_COMPONENT, Err(error)));
        }
        let Some(primary) = self.embedder.clone() else {
            let error = Error::Internal("no embedder after init".into());
            return Reply::Send(finish(&self.shared, id, RUNTIME_COMPONENT, Err(error)));
        };
        let shared = Rc::clone(&self.shared);
        let on_demand = profile.map(|profile| self.on_demand(profile));
        Reply::Spawn(Box::pin(async move {
            let active = primary.await;
            let embedder = match on_demand {
                None => Ok(active),
                // The primary was loading this profile: it counts unless it fell back to micro.
                Some(OnDemand::Active(wanted)) => match shared.borrow().profile.as_ref() {
                    Some(info) if info.active == wanted => Ok(active),
                    // The reason already names the file at fault.
                    Some(info) => Err(Error::model_load(
                        format!("the {} model", wanted.name()),
                        info.fallback_reason.clone().unwrap_or_default(),
                    )),
                    None => Err(Error::Internal("no profile after init".into())),
                },
                Some(OnDemand::Fallback(embedder)) => Ok(embedder),
                Some(OnDemand::Load(load)) => {
                    shared.borrow_mut().health.work_started(EMBEDDER_COMPONENT);
                    load.await
                }
                Some(OnDemand::Failed(error)) => Err(error),
            };
            let embedder = match embedder {
                Ok(embedder) => embedder,
                Err(error) => return finish(&shared, id, EMBEDDER_COMPONENT, Err(error)),
            };
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

    /// How to get `profile`'s embedder for an `embed` that asked for it.
    fn on_demand(&self, profile: Profile) -> OnDemand {
        let state = self.shared.borrow();
        let active = state.profile.as_ref().map(|info| info.active);
        // While the primary loads, `active` is still the chosen profile: waiting for it is right.
        if active == Some(profile) {
            return OnDemand::Active(profile);
        }
        if profile == Profile::Micro && self.source.is_none() {
            return OnDemand::Fallback(Rc::clone(&self.platform.fallback));
        }
        if let Some(load) = state.on_demand.get(&profile) {
            return OnDemand::Load(load.clone());
        }
        drop(state);
        let Some(source) = &self.source else {
            return OnDemand::Failed(Error::model_load(
                "models.embedding",
                format!(
                    "no embedding model was given, so the {} profile cannot run",
                    profile.name()
                ),
            ));
        };
        let loading =
            self.platform
                .loader
                .load(profile, source, self.heartbeat(EMBEDDER_COMPONENT));
        let shared = Rc::clone(&self.shared);
        let load: LocalBoxFuture<'static, _> = Box::pin(async move {
            let result = loading.await;
            if result.is_err() {
                shared.borrow_mut().on_demand.remove(&profile);
            }
            result
        });
        let load = load.shared();
        self.shared
            .borrow_mut()
            .on_demand
            .insert(profile, load.clone());
        OnDemand::Load(load)
    }

    fn version(&self) -> VersionInfo {
        VersionInfo {
            core: CORE_VERSION.to_owned(),
            web: self.web_version.clone(),
            protocol: PROTOCOL_VERSION,
        }
    }
}

/// Where an `embed` for a given profile gets its embedder.
enum OnDemand {
    /// The active embedder is (or is loading as) that profile's.
    Active(Profile),
    /// Micro without a model: the hashing embedder, always there.
    Fallback(Rc<dyn Embedder>),
    /// Loading or loaded on demand.
    Load(OnDemandFuture),
    /// Cannot be had.
    Failed(Error),
}

/// Keeps `component`'s heartbeat going while a model downloads.
fn heartbeat(shared: &SharedState, component: &'static str) -> Heartbeat {
    let shared = Rc::clone(shared);
    Rc::new(move || {
        // Never called while the state is borrowed; if it were, skip one beat rather than panic.
        if let Ok(mut state) = shared.try_borrow_mut() {
            state.health.heartbeat(component);
        }
    })
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
                if is_component_failure(&error) {
                    state.health.record_failure(component, &error.to_string());
                } else {
                    state.health.record_success(component);
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

/// An input error on `request.query` named as the caller wrote the field: `query`. Any other
/// error is unchanged.
fn strip_request_prefix(error: Error) -> Error {
    match error {
        Error::InvalidInput { field, reason } => Error::InvalidInput {
            field: field
                .strip_prefix("request.")
                .map_or(field.clone(), str::to_owned),
            reason,
        },
        other => other,
    }
}

/// A `tasks_*` or `backups_*` answer: `value` as JSON.
fn json_body(value: &impl serde::Serialize) -> crate::error::Result<ResponseBody> {
    serde_json::to_value(value)
        .map(ResponseBody::Json)
        .map_err(|e| Error::Internal(format!("an answer did not serialise: {e}")))
}

mod ask_requests;
mod backup_requests;
mod debates;
mod llm_requests;
mod memory_requests;
mod migration;
mod task_requests;
#[cfg(test)]
mod tests;
