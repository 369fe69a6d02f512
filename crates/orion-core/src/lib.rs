//! ORION's domain core.
//!
//! Everything here is plain Rust: no wasm-bindgen, no web-sys, no I/O and no wall clock. Time comes
//! from a [`Clock`], so every timeout and breaker is deterministic under a [`ManualClock`] in tests.
//! Platform crates (`orion-web`) adapt these types to the browser.

pub mod answer;
pub mod answer_quality;
pub mod backup;
pub mod backup_file;
pub mod circuit_breaker;
pub mod clock;
pub mod conversation;
pub mod coordinator;
pub mod debate_workflow;
pub mod embedding;
pub mod error;
pub mod generation;
pub mod guard;
pub mod health;
pub mod host_llm;
mod ids;
pub mod input;
pub mod jobs;
#[cfg(feature = "json-schema")]
pub mod json_schema;
pub mod llm_settings;
pub mod memory;
pub mod model_source;
pub mod orchestrator;
pub mod page_calls;
pub mod profile;
pub mod protocol;
pub mod response_formatter;
pub mod runtime;
pub mod store;
pub mod task_metrics;
pub mod tasks;
#[cfg(test)]
pub(crate) mod testing;
pub mod tools;
pub mod vector_index;
pub mod workflows;

pub use circuit_breaker::{BreakerConfig, BreakerState, CircuitBreaker, Permit};
pub use clock::{Clock, ManualClock, SharedClock};
pub use embedding::{Embedder, EmbeddingModelInfo};
pub use error::{Error, ErrorCode};
pub use generation::{GenerateRequest, Generated, GenerationSink, Generator};
pub use health::{HealthConfig, HealthReport, HealthStatus, WorkerHealthMonitor};
pub use host_llm::{HostLlm, HostLlmConfig};
pub use llm_settings::{LlmSettings, LlmWeights};
pub use model_source::{LlmSource, ModelFile, ModelLocation, ModelSource};
pub use profile::{DeviceFacts, Profile, ProfileRequest};
pub use protocol::{Envelope, Event, Outgoing, Request, PROTOCOL_VERSION};
pub use runtime::{
    EmbedderLoader, GeneratorLoader, Heartbeat, Platform, Reply, StoreOpener, WorkerRuntime,
};
pub use store::{Fields, Guard, Guarded, MemStore, Row, Scan, Store, Table, WriteOp};

/// The version of this crate, reported by `orion.version()`.
pub const CORE_VERSION: &str = env!("CARGO_PKG_VERSION");
