//! The one error type of ORION, with a stable code per variant.
//!
//! Codes are part of the JS contract: they reach the page as the `code` property of an `Error`
//! and are listed in `pkg/index.d.ts` (a test keeps the two lists equal). Never rename a code.

use serde::{Deserialize, Serialize};

/// Every error ORION reports. Each variant maps to exactly one stable [`ErrorCode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A message from the page is not a valid request (not an object, unknown `type`, missing or
    /// mistyped field, unknown field).
    #[error("invalid message at `{path}`: {reason}")]
    InvalidMessage {
        /// Where in the message the first problem is (`.` for the message itself).
        path: String,
        /// What is wrong there.
        reason: String,
    },
    /// A message, or a part of it, exceeds a size or nesting limit.
    #[error("message too large at `{path}`: {size} exceeds the limit of {limit}")]
    MessageTooLarge {
        /// Where in the message the oversized part is.
        path: String,
        /// Its size (string length, element count or nesting depth).
        size: u64,
        /// The limit it broke.
        limit: u64,
    },
    /// The page speaks a protocol version this worker does not.
    #[error("unsupported protocol version {got}; this worker speaks version {supported}")]
    UnsupportedProtocol {
        /// The version the message carried.
        got: u64,
        /// The version this worker speaks.
        supported: u32,
    },
    /// A request arrived before `init`, or `init` arrived twice.
    #[error("{0}")]
    InitOrder(String),
    /// The circuit breaker for an operation is rejecting calls.
    #[error("circuit `{key}` is {state}: calls are rejected for {retry_after_ms} ms more")]
    CircuitOpen {
        /// The operation key.
        key: String,
        /// `OPEN` or `HALF_OPEN` (all probe slots taken).
        state: String,
        /// How long until a call may be admitted (0 when waiting for a probe to finish).
        retry_after_ms: u64,
    },
    /// A debug-only request was sent to a worker started without `debug: true`.
    #[error("`{0}` is a debug request; start the orchestrator with `debug: true` to use it")]
    DebugDisabled(String),
    /// The worker died (a panic or a fatal error) while the call was pending. Raised by the JS
    /// client; listed here so that every code lives in one place.
    #[error("the worker crashed: {0}")]
    WorkerCrashed(String),
    /// The worker could not start (the wasm failed to load or instantiate). Raised by the client.
    #[error("the worker failed to start: {0}")]
    WorkerStart(String),
    /// The orchestrator was closed; create a new one. Raised by the client.
    #[error("the orchestrator is closed")]
    Closed,
    /// A model file could not be fetched, parsed or verified.
    #[error("could not load the model from `{source_name}`: {reason}")]
    ModelLoad {
        /// The URL or file name at fault.
        source_name: String,
        /// What went wrong.
        reason: String,
    },
    /// Inference failed on valid input (a model bug, or out of memory).
    #[error("embedding failed: {0}")]
    Embedding(String),
    /// An argument of an API call is not acceptable (empty text, unknown kind, `k` out of range).
    #[error("invalid `{field}`: {reason}")]
    InvalidInput {
        /// The argument or field at fault, e.g. `text` or `items[3].kind`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The browser refused a write for lack of storage quota. Nothing was written.
    #[error("storage quota exceeded: {0}")]
    Quota(String),
    /// The database failed (could not open, a transaction aborted, a stored record is unreadable).
    #[error("storage failed: {0}")]
    Store(String),
    /// A bug: an invariant did not hold. The message says which.
    #[error("internal error: {0}")]
    Internal(String),
    /// A backup file (or a stored backup) is not acceptable: malformed JSON, a wrong format, a
    /// field of the wrong type or size, a bad checksum, mismatched counts. Nothing was written.
    #[error("invalid backup at `{path}`: {reason}")]
    BackupInvalid {
        /// Where in the document the first problem is, e.g. `data.data[0].rows[17].embedding`
        /// (`.` for the document itself).
        path: String,
        /// What is wrong there.
        reason: String,
    },
    /// Text generation failed on valid input (a model bug, out of memory, a host LLM that threw).
    #[error("generation failed: {0}")]
    Generation(String),
    /// The caller cancelled the operation (an `AbortSignal` fired). Nothing more will happen.
    #[error("cancelled: {0}")]
    Cancelled(String),
    /// An operation did not finish in its time limit.
    #[error("`{operation}` timed out after {ms} ms")]
    Timeout {
        /// What timed out, e.g. `llm_inference`.
        operation: String,
        /// The limit.
        ms: u64,
    },
    /// A tool failed on valid arguments (a host tool threw, a calculation had no result).
    #[error("tool `{tool}` failed: {reason}")]
    Tool {
        /// The tool's name.
        tool: String,
        /// What went wrong.
        reason: String,
        /// Whether another attempt could succeed (a page tool's error says; `false` for a
        /// failure that would repeat).
        retryable: bool,
    },
}

/// The stable code of an [`Error`], as JS sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ErrorCode {
    /// See [`Error::InvalidMessage`].
    #[serde(rename = "ERR_INVALID_MESSAGE")]
    InvalidMessage,
    /// See [`Error::MessageTooLarge`].
    #[serde(rename = "ERR_MESSAGE_TOO_LARGE")]
    MessageTooLarge,
    /// See [`Error::UnsupportedProtocol`].
    #[serde(rename = "ERR_UNSUPPORTED_PROTOCOL")]
    UnsupportedProtocol,
    /// See [`Error::InitOrder`].
    #[serde(rename = "ERR_INIT_ORDER")]
    InitOrder,
    /// See [`Error::CircuitOpen`].
    #[serde(rename = "ERR_CIRCUIT_OPEN")]
    CircuitOpen,
    /// See [`Error::DebugDisabled`].
    #[serde(rename = "ERR_DEBUG_DISABLED")]
    DebugDisabled,
    /// See [`Error::WorkerCrashed`].
    #[serde(rename = "ERR_WORKER_CRASHED")]
    WorkerCrashed,
    /// See [`Error::WorkerStart`].
    #[serde(rename = "ERR_WORKER_START")]
    WorkerStart,
    /// See [`Error::Closed`].
    #[serde(rename = "ERR_CLOSED")]
    Closed,
    /// See [`Error::ModelLoad`].
    #[serde(rename = "ERR_MODEL_LOAD")]
    ModelLoad,
    /// See [`Error::Embedding`].
    #[serde(rename = "ERR_EMBEDDING")]
    Embedding,
    /// See [`Error::Internal`].
    #[serde(rename = "ERR_INTERNAL")]
    Internal,
    /// See [`Error::InvalidInput`].
    #[serde(rename = "ERR_INVALID_INPUT")]
    InvalidInput,
    /// See [`Error::Quota`].
    #[serde(rename = "ERR_QUOTA")]
    Quota,
    /// See [`Error::Store`].
    #[serde(rename = "ERR_STORE")]
    Store,
    /// See [`Error::BackupInvalid`].
    #[serde(rename = "ERR_BACKUP_INVALID")]
    BackupInvalid,
    /// See [`Error::Generation`].
    #[serde(rename = "ERR_GENERATION")]
    Generation,
    /// See [`Error::Cancelled`].
    #[serde(rename = "ERR_CANCELLED")]
    Cancelled,
    /// See [`Error::Timeout`].
    #[serde(rename = "ERR_TIMEOUT")]
    Timeout,
    /// See [`Error::Tool`].
    #[serde(rename = "ERR_TOOL")]
    Tool,
}

impl ErrorCode {
    /// Every code, in declaration order.
    pub const ALL: [ErrorCode; 20] = [
        ErrorCode::InvalidMessage,
        ErrorCode::MessageTooLarge,
        ErrorCode::UnsupportedProtocol,
        ErrorCode::InitOrder,
        ErrorCode::CircuitOpen,
        ErrorCode::DebugDisabled,
        ErrorCode::WorkerCrashed,
        ErrorCode::WorkerStart,
        ErrorCode::Closed,
        ErrorCode::ModelLoad,
        ErrorCode::Embedding,
        ErrorCode::Internal,
        ErrorCode::InvalidInput,
        ErrorCode::Quota,
        ErrorCode::Store,
        ErrorCode::BackupInvalid,
        ErrorCode::Generation,
        ErrorCode::Cancelled,
        ErrorCode::Timeout,
        ErrorCode::Tool,
    ];

    /// The code as JS sees it, e.g. `"ERR_CIRCUIT_OPEN"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidMessage => "ERR_INVALID_MESSAGE",
            ErrorCode::MessageTooLarge => "ERR_MESSAGE_TOO_LARGE",
            ErrorCode::UnsupportedProtocol => "ERR_UNSUPPORTED_PROTOCOL",
            ErrorCode::InitOrder => "ERR_INIT_ORDER",
            ErrorCode::CircuitOpen => "ERR_CIRCUIT_OPEN",
            ErrorCode::DebugDisabled => "ERR_DEBUG_DISABLED",
            ErrorCode::WorkerCrashed => "ERR_WORKER_CRASHED",
            ErrorCode::WorkerStart => "ERR_WORKER_START",
            ErrorCode::Closed => "ERR_CLOSED",
            ErrorCode::ModelLoad => "ERR_MODEL_LOAD",
            ErrorCode::Embedding => "ERR_EMBEDDING",
            ErrorCode::Internal => "ERR_INTERNAL",
            ErrorCode::InvalidInput => "ERR_INVALID_INPUT",
            ErrorCode::Quota => "ERR_QUOTA",
            ErrorCode::Store => "ERR_STORE",
            ErrorCode::BackupInvalid => "ERR_BACKUP_INVALID",
            ErrorCode::Generation => "ERR_GENERATION",
            ErrorCode::Cancelled => "ERR_CANCELLED",
            ErrorCode::Timeout => "ERR_TIMEOUT",
            ErrorCode::Tool => "ERR_TOOL",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// The stable code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidMessage { .. } => ErrorCode::InvalidMessage,
            Error::MessageTooLarge { .. } => ErrorCode::MessageTooLarge,
            Error::UnsupportedProtocol { .. } => ErrorCode::UnsupportedProtocol,
            Error::InitOrder(_) => ErrorCode::InitOrder,
            Error::CircuitOpen { .. } => ErrorCode::CircuitOpen,
            Error::DebugDisabled(_) => ErrorCode::DebugDisabled,
            Error::WorkerCrashed(_) => ErrorCode::WorkerCrashed,
            Error::WorkerStart(_) => ErrorCode::WorkerStart,
            Error::Closed => ErrorCode::Closed,
            Error::ModelLoad { .. } => ErrorCode::ModelLoad,
            Error::Embedding(_) => ErrorCode::Embedding,
            Error::Internal(_) => ErrorCode::Internal,
            Error::InvalidInput { .. } => ErrorCode::InvalidInput,
            Error::Quota(_) => ErrorCode::Quota,
            Error::Store(_) => ErrorCode::Store,
            Error::BackupInvalid { .. } => ErrorCode::BackupInvalid,
            Error::Generation(_) => ErrorCode::Generation,
            Error::Cancelled(_) => ErrorCode::Cancelled,
            Error::Timeout { .. } => ErrorCode::Timeout,
            Error::Tool { .. } => ErrorCode::Tool,
        }
    }

    /// A shorthand for [`Error::ModelLoad`].
    pub fn model_load(source_name: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Error::ModelLoad {
            source_name: source_name.into(),
            reason: reason.to_string(),
        }
    }

    /// A shorthand for [`Error::InvalidInput`].
    pub fn invalid_input(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// A shorthand for [`Error::BackupInvalid`].
    pub fn backup_invalid(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::BackupInvalid {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// A shorthand for [`Error::InvalidMessage`].
    pub fn invalid(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidMessage {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// A `Result` with ORION's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_names_match_as_str() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_value(code).unwrap_or_default();
            assert_eq!(json, serde_json::Value::from(code.as_str()));
        }
    }

    #[test]
    fn codes_are_unique_and_prefixed() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(code.as_str().starts_with("ERR_"), "{code}");
            assert!(seen.insert(code.as_str()), "duplicate {code}");
        }
    }
}
