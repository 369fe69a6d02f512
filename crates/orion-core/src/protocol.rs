//! The message protocol between the page and the worker.
//!
//! Requests are objects `{v, id, type, ...fields}`: `v` is [`PROTOCOL_VERSION`], `id` an integer
//! the page chooses (0 to 2^32 - 1) and echoes back, `type` one of [`Request`]'s variants in
//! snake_case. The worker answers each request with exactly one [`Outgoing::Response`] or
//! [`Outgoing::Error`] carrying the same `id`, and may send [`Outgoing::Event`]s at any time.
//! A message whose `id` cannot be read is answered with an error whose `id` is `null`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::circuit_breaker::{BreakerConfig, BreakerTransition};
use crate::embedding::EmbeddingModelInfo;
use crate::error::{Error, ErrorCode};
use crate::health::{HealthConfig, HealthReport, HealthTransition};
use crate::memory::{MemoryPage, MemoryRecord, MemorySettings, MemoryStats, NewMemory, SearchHit};
use crate::model_source::{LlmSource, ModelSource};
use crate::profile::{Budget, DeviceFacts, Profile, ProfileRequest};

/// The protocol version this build speaks. Bump it on any incompatible change.
pub const PROTOCOL_VERSION: u32 = 1;

/// The id the page gives a request.
pub type RequestId = u32;

/// What the page can ask.
#[derive(Debug, Clone, PartialEq, Deserialize)]
// On the wire the variant is the `type` field; `decode` reshapes the message into serde's external
// tagging first, because serde's internal tagging buffers the fields and loses their paths.
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// The first request: configures the worker. Everything else is refused before it.
    Init {
        /// Allows debug-only requests such as `crash`.
        #[serde(default)]
        debug: bool,
        /// Breaker thresholds (defaults where absent).
        #[serde(default)]
        breaker: BreakerConfig,
        /// Health thresholds (defaults where absent).
        #[serde(default)]
        health: HealthConfig,
        /// The device profile to use (detected when `auto` or absent).
        #[serde(default)]
        profile: ProfileRequest,
        /// Where the model files are (boxed, like `llm`, to keep requests small).
        #[serde(default)]
        models: Box<Models>,
        /// The IndexedDB database that holds the memories (default `orion`).
        #[serde(default)]
        database: Option<String>,
        /// Retention and size settings over the profile's.
        #[serde(default)]
        memory: MemorySettings,
        /// How background tasks run.
        #[serde(default)]
        tasks: crate::tasks::TaskSettings,
        /// How text is generated: the local model's options, and the host function's limits
        /// when the page passed one (boxed: it would make every request larger).
        #[serde(default)]
        llm: Box<crate::llm_settings::LlmSettings>,
        /// The page's tools (their functions stay in the page; `tool_host_call` runs them).
        #[serde(default)]
        tools: Vec<crate::tools::HostToolSpec>,
        /// How `ask` answers (budgets, thresholds) over the defaults (boxed, like `llm`).
        #[serde(default)]
        ask: Box<crate::orchestrator::AskSettings>,
        /// When automatic backups are taken and how many are kept, over the defaults (boxed, like
        /// `llm`).
        #[serde(default)]
        backups: Box<crate::backup::BackupSettings>,
    },
    /// Round-trips `payload` (any JSON value).
    Ping {
        /// Echoed back unchanged.
        #[serde(default)]
        payload: Value,
    },
    /// The health report.
    Health {},
    /// Crate and protocol versions.
    Version {},
    /// The device profile and the embedder in use.
    Profile {},
    /// Sentence embeddings of `texts`.
    Embed {
        /// The texts, at most [`crate::runtime::MAX_EMBED_TEXTS`].
        texts: Vec<String>,
        /// Embed with this profile's embedder instead of the active one (loaded on first use).
        #[serde(default)]
        profile: Option<Profile>,
    },
    /// Stores a memory.
    MemoryAdd {
        /// The text.
        text: String,
        /// Its kind (default `fact`).
        #[serde(default)]
        kind: Option<String>,
        /// Host metadata (a JSON object).
        #[serde(default)]
        meta: Option<Value>,
    },
    /// Stores many memories, in chunks, with `memory_progress` events.
    MemoryAddMany {
        /// The memories, at most [`crate::runtime::MAX_ADD_MANY`].
        items: Vec<NewMemory>,
    },
    /// One memory by id (`null` when there is none).
    MemoryGet {
        /// Its id (`memoryId` on the wire: `id` is the request's).
        #[serde(rename = "memoryId")]
        memory_id: String,
    },
    /// Deletes a memory; answers whether there was one.
    MemoryDelete {
        /// Its id (`memoryId` on the wire).
        #[serde(rename = "memoryId")]
        memory_id: String,
    },
    /// A page of memories in creation order.
    MemoryList {
        /// Only this kind.
        #[serde(default)]
        kind: Option<String>,
        /// Page size (1 to 1000, default 100).
        #[serde(default)]
        limit: Option<f64>,
        /// Continue after this id (the previous page's `next`).
        #[serde(default)]
        after: Option<String>,
    },
    /// The memories most similar to `query`.
    MemorySearch {
        /// What to look for.
        query: String,
        /// How many (1 to 100, default 5).
        #[serde(default)]
        k: Option<f64>,
        /// The least similarity to return (-1 to 1, default 0).
        #[serde(default, rename = "minSimilarity")]
        min_similarity: Option<f64>,
        /// Only this kind.
        #[serde(default)]
        kind: Option<String>,
    },
    /// Deletes all memories, or those of one kind; answers how many.
    MemoryPurge {
        /// Only this kind.
        #[serde(default)]
        kind: Option<String>,
    },
    /// Counts and settings of the memory store.
    MemoryStats {},
    /// Defines a task whose code runs in the page ([`crate::tasks::TaskSpec`]).
    TasksDefine {
        /// `{name, kind, concurrency?, schema?, steps?}`.
        task: Value,
    },
    /// Schedules a task: a job (`source: queue`) or a workflow (`source: workflow`).
    TasksSchedule {
        /// Which engine.
        source: crate::tasks::TaskSource,
        /// The task's name.
        name: String,
        /// What its code gets (checked against the task's schema).
        #[serde(default)]
        payload: Value,
        /// Job options, or workflow options.
        #[serde(default)]
        options: Value,
    },
    /// A task's status (`null` when there is none).
    TasksStatus {
        /// The job's or workflow's id.
        #[serde(rename = "taskId")]
        task_id: String,
    },
    /// Cancels a task.
    TasksCancel {
        /// The job's or workflow's id.
        #[serde(rename = "taskId")]
        task_id: String,
    },
    /// Pauses a task.
    TasksPause {
        /// The job's or workflow's id.
        #[serde(rename = "taskId")]
        task_id: String,
    },
    /// Resumes a paused task.
    TasksResume {
        /// The job's or workflow's id.
        #[serde(rename = "taskId")]
        task_id: String,
    },
    /// Runs a failed job again.
    TasksRetry {
        /// The job's id.
        #[serde(rename = "taskId")]
        task_id: String,
    },
    /// Sends a signal to a running workflow.
    TasksSignal {
        /// The workflow's id.
        #[serde(rename = "taskId")]
        task_id: String,
        /// The signal's name.
        name: String,
        /// What it carries.
        #[serde(default)]
        payload: Value,
    },
    /// A page of tasks.
    TasksList {
        /// `{source?, state?, name?, limit?, after?}`.
        #[serde(default)]
        filter: Option<Value>,
    },
    /// Job counts per state and queue.
    TasksCounts {},
    /// Pauses or resumes a whole queue.
    TasksPauseQueue {
        /// The queue.
        name: String,
        /// `true` pauses, `false` resumes.
        paused: bool,
    },
    /// Creates or replaces a schedule.
    TasksUpsertSchedule {
        /// The schedule's id.
        #[serde(rename = "scheduleId")]
        schedule_id: String,
        /// `{every | cron, tz?, startDate?, endDate?, limit?, immediately?, catchUp?}`.
        spec: Value,
        /// `{name, data?, options?}`: the job it enqueues.
        template: Value,
    },
    /// Removes a schedule.
    TasksRemoveSchedule {
        /// The schedule's id.
        #[serde(rename = "scheduleId")]
        schedule_id: String,
    },
    /// Every schedule.
    TasksListSchedules {},
    /// The page's answer to a `task_run` event.
    TasksResult {
        /// The run's id.
        #[serde(rename = "runId")]
        run_id: String,
        /// What the handler returned, when it succeeded.
        #[serde(default)]
        value: Value,
        /// How it failed, when it did.
        #[serde(default)]
        error: Option<crate::tasks::HostFailure>,
    },
    /// Progress of a job run (or the cursor of a step run) in the page.
    TasksProgress {
        /// The run's id.
        #[serde(rename = "runId")]
        run_id: String,
        /// A number from 0 to 100 or any JSON (a step's cursor).
        progress: Value,
    },
    /// Task metrics over a window.
    TasksMetrics {
        /// The window in ms (1 s to 24 h; default 24 h).
        #[serde(default, rename = "windowMs")]
        window_ms: Option<u64>,
    },
    /// Replaces the task alert rules.
    TasksConfigureAlerts {
        /// `{taskFailureRate?, queueBacklog?, scheduleLate?}`.
        rules: Value,
    },
    /// Takes a manual backup of every memory.
    BackupsCreate {
        /// The user's label.
        #[serde(default)]
        label: Option<String>,
    },
    /// Every stored backup, newest first.
    BackupsList {},
    /// Counts and sizes of the stored backups.
    BackupsStats {},
    /// Checks a stored backup as an import would.
    BackupsVerify {
        /// The backup's id.
        #[serde(rename = "backupId")]
        backup_id: String,
    },
    /// A stored backup's file (the JSON users download), or without an id that of a backup taken
    /// now and not stored.
    BackupsExport {
        /// The backup's id.
        #[serde(rename = "backupId", default)]
        backup_id: Option<String>,
    },
    /// Deletes a stored backup.
    BackupsDelete {
        /// The backup's id.
        #[serde(rename = "backupId")]
        backup_id: String,
    },
    /// Restores a stored backup's memories (in one transaction).
    BackupsRestore {
        /// The backup's id.
        #[serde(rename = "backupId")]
        backup_id: String,
        /// `{clearExisting?, onConflict?: 'skip' | 'overwrite'}`.
        #[serde(default)]
        options: Value,
    },
    /// Imports a backup file's text (validated whole, then applied in one transaction).
    BackupsImport {
        /// The file's JSON text, whole or in consecutive pieces (a message's strings are at most
        /// 1 Mi UTF-16 units, and a backup file is often larger).
        text: BackupText,
        /// `{clearExisting?, onConflict?: 'skip' | 'overwrite'}`.
        #[serde(default)]
        options: Value,
    },
    /// Answers a question through the pipeline (`orion.ask`); `ask_status` and `ask_token`
    /// events stream its progress, tagged with this request's id.
    Ask {
        /// An [`crate::orchestrator::AskRequest`] (checked by the runtime, so a bad field is
        /// `ERR_INVALID_INPUT` naming it).
        request: Value,
    },
    /// Cancels a running `ask`: it rejects with `ERR_CANCELLED` at its next check (between
    /// stages and between generated tokens). Answers whether it was running.
    AskCancel {
        /// The id of the `ask` request.
        #[serde(rename = "requestId")]
        request_id: RequestId,
    },
    /// Generates text; `llm_token` events stream it, tagged with this request's id.
    LlmGenerate {
        /// A [`crate::generation::GenerateRequest`] (checked by the runtime, so a bad field is
        /// `ERR_INVALID_INPUT` naming it).
        request: Value,
    },
    /// Generates several texts together (the local model decodes them in one batch).
    LlmGenerateMany {
        /// [`crate::generation::GenerateRequest`]s, at most
        /// [`crate::runtime::MAX_GENERATE_MANY`].
        requests: Vec<Value>,
    },
    /// Cancels a running `llm_generate` or `llm_generate_many`: it resolves with
    /// `finish: 'cancelled'` and the text so far. Answers whether it was running.
    LlmCancel {
        /// The id of the generation request.
        #[serde(rename = "requestId")]
        request_id: RequestId,
    },
    /// A streamed piece of the page's LLM function's answer to an `llm_host_call`.
    LlmHostChunk {
        /// The call's id.
        #[serde(rename = "callId")]
        call_id: String,
        /// The piece.
        text: String,
    },
    /// The page's LLM function finished an `llm_host_call`.
    LlmHostResult {
        /// The call's id.
        #[serde(rename = "callId")]
        call_id: String,
        /// The whole text, when the function returned a string (absent when it streamed).
        #[serde(default)]
        text: Option<String>,
        /// How it failed, when it did.
        #[serde(default)]
        error: Option<crate::tasks::HostFailure>,
    },
    /// The page's answer to a `tool_host_call`: the tool's result, or how it failed.
    ToolHostResult {
        /// The call's id.
        #[serde(rename = "callId")]
        call_id: String,
        /// What the tool returned (any JSON value; absent when it failed).
        #[serde(default)]
        value: Option<Value>,
        /// How it failed, when it did.
        #[serde(default)]
        error: Option<crate::tasks::HostFailure>,
    },
    /// Debug only: makes the worker panic, to test crash recovery.
    Crash {},
}

/// A backup file's text in a `backups_import` request: one string or consecutive pieces.
#[derive(Debug, Clone, PartialEq)]
pub enum BackupText {
    /// The whole text.
    Whole(String),
    /// The text in pieces, to be joined in order.
    Pieces(Vec<String>),
}

/// By hand rather than `#[serde(untagged)]`, which buffers the value and copies the string out
/// of the buffer: a file read from a `Blob` (`orion-web`) is moved in, all of it at once.
impl<'de> Deserialize<'de> for BackupText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;

        impl<'de> serde::de::Visitor<'de> for TextVisitor {
            type Value = BackupText;

            fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
                formatter.write_str("a string or an array of strings")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<BackupText, E> {
                Ok(BackupText::Whole(text.to_owned()))
            }

            fn visit_string<E: serde::de::Error>(self, text: String) -> Result<BackupText, E> {
                Ok(BackupText::Whole(text))
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<BackupText, A::Error> {
                let mut pieces = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
                while let Some(piece) = seq.next_element::<String>()? {
                    pieces.push(piece);
                }
                Ok(BackupText::Pieces(pieces))
            }
        }

        deserializer.deserialize_any(TextVisitor)
    }
}

impl BackupText {
    /// The whole text.
    pub fn join(self) -> String {
        match self {
            BackupText::Whole(text) => text,
            BackupText::Pieces(pieces) => pieces.concat(),
        }
    }
}

impl Request {
    /// The request's `type` as it appears on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Init { .. } => "init",
            Request::Ping { .. } => "ping",
            Request::Health {} => "health",
            Request::Version {} => "version",
            Request::Profile {} => "profile",
            Request::Embed { .. } => "embed",
            Request::MemoryAdd { .. } => "memory_add",
            Request::MemoryAddMany { .. } => "memory_add_many",
            Request::MemoryGet { .. } => "memory_get",
            Request::MemoryDelete { .. } => "memory_delete",
            Request::MemoryList { .. } => "memory_list",
            Request::MemorySearch { .. } => "memory_search",
            Request::MemoryPurge { .. } => "memory_purge",
            Request::MemoryStats {} => "memory_stats",
            Request::TasksDefine { .. } => "tasks_define",
            Request::TasksSchedule { .. } => "tasks_schedule",
            Request::TasksStatus { .. } => "tasks_status",
            Request::TasksCancel { .. } => "tasks_cancel",
            Request::TasksPause { .. } => "tasks_pause",
            Request::TasksResume { .. } => "tasks_resume",
            Request::TasksRetry { .. } => "tasks_retry",
            Request::TasksSignal { .. } => "tasks_signal",
            Request::TasksList { .. } => "tasks_list",
            Request::TasksCounts {} => "tasks_counts",
            Request::TasksPauseQueue { .. } => "tasks_pause_queue",
            Request::TasksUpsertSchedule { .. } => "tasks_upsert_schedule",
            Request::TasksRemoveSchedule { .. } => "tasks_remove_schedule",
            Request::TasksListSchedules {} => "tasks_list_schedules",
            Request::TasksResult { .. } => "tasks_result",
            Request::TasksProgress { .. } => "tasks_progress",
            Request::TasksMetrics { .. } => "tasks_metrics",
            Request::TasksConfigureAlerts { .. } => "tasks_configure_alerts",
            Request::BackupsCreate { .. } => "backups_create",
            Request::BackupsList {} => "backups_list",
            Request::BackupsStats {} => "backups_stats",
            Request::BackupsVerify { .. } => "backups_verify",
            Request::BackupsExport { .. } => "backups_export",
            Request::BackupsDelete { .. } => "backups_delete",
            Request::BackupsRestore { .. } => "backups_restore",
            Request::BackupsImport { .. } => "backups_import",
            Request::LlmGenerate { .. } => "llm_generate",
            Request::LlmGenerateMany { .. } => "llm_generate_many",
            Request::LlmCancel { .. } => "llm_cancel",
            Request::Ask { .. } => "ask",
            Request::AskCancel { .. } => "ask_cancel",
            Request::ToolHostResult { .. } => "tool_host_result",
            Request::LlmHostChunk { .. } => "llm_host_chunk",
            Request::LlmHostResult { .. } => "llm_host_result",
            Request::Crash {} => "crash",
        }
    }
}

/// Where the models are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Models {
    /// The embedding model's `config.json`, `tokenizer.json` and `model.safetensors`.
    #[serde(default)]
    pub embedding: Option<ModelSource>,
    /// The local LLM's GGUF file, loaded on the first generation.
    #[serde(default)]
    pub llm: Option<LlmSource>,
}

/// A decoded request with its id.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The page's id for it.
    pub id: RequestId,
    /// The request.
    pub request: Request,
}

/// A message that could not be decoded, with its id if that much could be read.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// The request id, when the message carried a valid one.
    pub id: Option<RequestId>,
    /// What is wrong with it.
    pub error: Error,
}

/// Decodes a message from the page. Checks `id` first, so that any later problem can be
/// answered to the right caller, then `v`, then the request itself.
pub fn decode(message: Value) -> Result<Envelope, Rejection> {
    let Value::Object(mut fields) = message else {
        return Err(Rejection {
            id: None,
            error: Error::invalid(
                ".",
                format!("expected a request object, got {}", kind_of(&message)),
            ),
        });
    };
    let id = take_id(&mut fields).map_err(|error| Rejection { id: None, error })?;
    let reject = |error| Rejection {
        id: Some(id),
        error,
    };
    check_version(fields.remove("v")).map_err(reject)?;
    let kind = match fields.remove("type") {
        Some(Value::String(kind)) => kind,
        Some(other) => {
            return Err(reject(Error::invalid(
                "type",
                format!("expected a string, got {}", kind_of(&other)),
            )))
        }
        None => return Err(reject(Error::invalid("type", "missing field"))),
    };
    let tagged = Value::Object(Map::from_iter([(kind.clone(), Value::Object(fields))]));
    let request = serde_path_to_error::deserialize(tagged).map_err(|e| {
        let path = e.path().to_string();
        let path = match path.strip_prefix(&kind) {
            Some(field) if !field.is_empty() => field.trim_start_matches('.').to_owned(),
            // Errors about the variant itself, or about the fields as a whole.
            _ if e.inner().to_string().contains("unknown variant") => "type".to_owned(),
            _ => ".".to_owned(),
        };
        reject(Error::invalid(path, e.into_inner().to_string()))
    })?;
    Ok(Envelope { id, request })
}

fn take_id(fields: &mut Map<String, Value>) -> Result<RequestId, Error> {
    match fields.remove("id") {
        None => Err(Error::invalid("id", "missing field")),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| RequestId::try_from(n).ok())
            .ok_or_else(|| {
                Error::invalid(
                    "id",
                    format!("expected an integer from 0 to 2^32 - 1, got {n}"),
                )
            }),
        Some(other) => Err(Error::invalid(
            "id",
            format!("expected an integer, got {}", kind_of(&other)),
        )),
    }
}

fn check_version(v: Option<Value>) -> Result<(), Error> {
    match v {
        None => Err(Error::invalid("v", "missing field (the protocol version)")),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(got) if got == u64::from(PROTOCOL_VERSION) => Ok(()),
            Some(got) => Err(Error::UnsupportedProtocol {
                got,
                supported: PROTOCOL_VERSION,
            }),
            None => Err(Error::invalid("v", format!("expected an integer, got {n}"))),
        },
        Some(other) => Err(Error::invalid(
            "v",
            format!("expected an integer, got {}", kind_of(&other)),
        )),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// An error as it travels to the page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    /// The stable code.
    pub code: ErrorCode,
    /// A message for people.
    pub message: String,
}

impl From<&Error> for WireError {
    fn from(error: &Error) -> Self {
        Self {
            code: error.code(),
            message: error.to_string(),
        }
    }
}

/// Crate and protocol versions, as `orion.version()` reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    /// `orion-core`'s version.
    pub core: String,
    /// The platform crate's version (`orion-web`).
    pub web: String,
    /// [`PROTOCOL_VERSION`].
    pub protocol: u32,
}

/// The answer to `ping`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pong {
    /// The request's payload, unchanged.
    pub payload: Value,
    /// When the worker handled it, on the worker's clock.
    pub at_ms: u64,
}

/// The answer to `embed`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EmbedResult {
    /// One unit vector per text, in order.
    pub vectors: Vec<Vec<f32>>,
    /// The embedder that made them (compare only vectors of the same version).
    pub model: EmbeddingModelInfo,
}

/// The answer to `profile`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileInfo {
    /// What the host asked for.
    pub requested: ProfileRequest,
    /// What the rules chose for this device.
    pub chosen: Profile,
    /// What runs: `micro` after a fallback.
    pub active: Profile,
    /// The active profile's budget.
    pub budget: Budget,
    /// What the worker read about the device.
    pub facts: DeviceFacts,
    /// The embedder in use (`None` while the model loads).
    pub embedding: Option<EmbeddingModelInfo>,
    /// Why the model-backed embedder is not in use, if it is not.
    pub fallback_reason: Option<String>,
}

/// The result of a successful request.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ResponseBody {
    /// For `init` and `version`.
    Version(VersionInfo),
    /// For `ping`.
    Pong(Pong),
    /// For `health`.
    Health(HealthReport),
    /// For `embed`.
    Embedded(EmbedResult),
    /// For `profile`.
    Profile(ProfileInfo),
    /// For `memory_add`.
    Memory(MemoryRecord),
    /// For `memory_get` (`null` when there is none).
    MaybeMemory(Option<MemoryRecord>),
    /// For `memory_add_many`.
    Memories(Vec<MemoryRecord>),
    /// For `memory_search`.
    Hits(Vec<SearchHit>),
    /// For `memory_list`.
    Page(MemoryPage),
    /// For `memory_stats`.
    MemoryStats(MemoryStats),
    /// For `memory_delete`: whether there was one.
    Deleted(bool),
    /// For `memory_purge`: how many were deleted.
    Purged(usize),
    /// For the `tasks_*` and `backups_*` requests: their answer, as their module serialises it.
    Json(Value),
}

/// Something that happened in the worker, pushed to the page.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(
    tag = "kind",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum Event {
    /// A circuit changed state.
    BreakerTransition(BreakerTransition),
    /// A component's health changed.
    HealthTransition(HealthTransition),
    /// A model file is downloading (or being read from the cache).
    ModelProgress {
        /// The file's name.
        file: String,
        /// Bytes so far.
        loaded: u64,
        /// Bytes in all, when known.
        total: Option<u64>,
        /// Whether it came from Cache Storage.
        cached: bool,
        /// Bytes so far over all of the model's files.
        overall_loaded: u64,
        /// Bytes in all over all of the model's files, once every file's size is known.
        overall_total: Option<u64>,
    },
    /// The next part of the file a `backups_export` request sends: the page joins the parts in
    /// order (the request's answer says how many there are), so that the worker never builds the
    /// file as one string. `orion-web` posts it with the text as UTF-8 bytes (`bytes`, a
    /// `Uint8Array` whose buffer is transferred) rather than `text`.
    BackupPart {
        /// The `backups_export` request's id.
        request_id: RequestId,
        /// The part's place, from 0.
        index: u32,
        /// The part's text.
        text: String,
    },
    /// The re-embedding migration wrote another batch (see `runtime::migration`).
    EmbeddingMigration {
        /// Memories re-embedded by this run so far.
        migrated: u64,
        /// Memories of another embedder version still to do.
        remaining: u64,
        /// Whether none is left.
        done: bool,
    },
    /// `backups_export` read (or took) another part of the file.
    BackupProgress {
        /// What is under way: `"export"`.
        operation: String,
        /// Memories so far.
        done: u64,
        /// Memories in the backup.
        total: u64,
    },
    /// `memory_add_many` stored another chunk.
    MemoryProgress {
        /// Memories stored so far.
        done: usize,
        /// Memories in the request.
        total: usize,
    },
    /// This worker became the leader of its database: of all the tabs' workers on it, it is the
    /// one that runs schedules and workflows, until it ends.
    Leadership {
        /// The database led.
        database: String,
    },
    /// An alert rule started or stopped firing.
    Alert(crate::task_metrics::AlertEvent),
    /// Run a task's code in the page and answer with `tasks_result`.
    TaskRun(crate::tasks::TaskRun),
    /// The worker stopped waiting for a run (cancelled, timed out, lease lost): abort it.
    TaskAbort {
        /// The run.
        run_id: String,
    },
    /// The memory index is loading from IndexedDB (memory requests wait for it).
    MemoryIndex {
        /// Memories read so far.
        loaded: usize,
        /// Whether loading finished.
        done: bool,
    },
    /// A piece of generated text of request `request_id` (`index` in an `llm_generate_many`
    /// batch, 0 otherwise).
    LlmToken {
        /// The generation request's id.
        request_id: RequestId,
        /// The request's position in its batch.
        index: usize,
        /// The new text.
        text: String,
    },
    /// An `ask` entered a stage (`tool_search`, `memory_search`, `llm_reasoning`,
    /// `multi_agent_parallel`, `multi_agent_critical`, `multi_agent_synthesis`).
    AskStatus {
        /// The `ask` request's id.
        request_id: RequestId,
        /// The stage.
        stage: crate::orchestrator::Stage,
        /// What is happening, for people.
        message: String,
    },
    /// A piece of an `ask`'s generated text, from one agent (`single`, `logical`, `creative`,
    /// `critical`, `synthesizer`).
    AskToken {
        /// The `ask` request's id.
        request_id: RequestId,
        /// The agent writing.
        agent: String,
        /// The new text.
        text: String,
    },
    /// Run the page's tool `tool` with `arguments` and answer with `tool_host_result`.
    ToolHostCall {
        /// The call.
        call_id: String,
        /// The tool's name.
        tool: String,
        /// Its arguments, valid for its schema.
        arguments: Value,
    },
    /// The worker stopped waiting for a tool call (timed out, cancelled): abort it.
    ToolHostAbort {
        /// The call.
        call_id: String,
    },
    /// Run the page's LLM function and answer with `llm_host_chunk`/`llm_host_result`.
    LlmHostCall(crate::host_llm::HostLlmCall),
    /// The worker stopped waiting for an LLM call (timed out, cancelled): abort it.
    LlmHostAbort {
        /// The call.
        call_id: String,
    },
    /// The model could not be loaded: the hashing embedder (micro) is used instead.
    EmbedderFallback {
        /// Why.
        reason: String,
        /// The error's code (`ERR_MODEL_LOAD` for a model that could not be fetched, verified or
        /// parsed).
        code: ErrorCode,
        /// The embedder now in use.
        model: EmbeddingModelInfo,
    },
}

/// A message from the worker to the page.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Outgoing {
    /// A request succeeded.
    Response {
        /// [`PROTOCOL_VERSION`].
        v: u32,
        /// The request's id.
        id: RequestId,
        /// What it returned.
        result: ResponseBody,
    },
    /// A request failed, or a message could not be decoded.
    Error {
        /// [`PROTOCOL_VERSION`].
        v: u32,
        /// The request's id; `None` when the message had no readable id.
        id: Option<RequestId>,
        /// Why.
        error: WireError,
    },
    /// The worker panicked and is about to die; every pending request is lost. Sent from the
    /// panic hook, so it carries no id.
    Crashed {
        /// [`PROTOCOL_VERSION`].
        v: u32,
        /// The panic message.
        message: String,
    },
    /// An event.
    Event {
        /// [`PROTOCOL_VERSION`].
        v: u32,
        /// What happened.
        event: Event,
    },
}

impl Outgoing {
    /// An error answer to request `id`.
    pub fn error(id: Option<RequestId>, error: &Error) -> Self {
        Outgoing::Error {
            v: PROTOCOL_VERSION,
            id,
            error: error.into(),
        }
    }
}

#[cfg(test)]
mod tests;
