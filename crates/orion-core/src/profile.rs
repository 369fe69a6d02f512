//! Device profiles: how much ORION does on this device.
//!
//! Rules, applied to what the worker can read about the device ([`DeviceFacts`]):
//! - **micro** when wasm SIMD is missing, or fewer than 2 logical cores, or under 2 GB of device
//!   memory, or under 200 MB of storage quota: tools and memory only, no language model;
//! - **lite** when fewer than 4 cores, or under 4 GB of memory, or under 1 GB of quota;
//! - **full** otherwise.
//!
//! Browsers hide some facts (`navigator.deviceMemory` is Chromium-only and capped at 8): a missing
//! fact does not count against the device. The host can force a profile.
//!
//! Each profile has a [`Budget`] ([`Profile::budget`]):
//!
//! | profile | embedder | memories kept | debate |
//! | --- | --- | ---: | --- |
//! | full | MiniLM f32 | 100 000 | every query |
//! | lite | MiniLM Q8_0 | 20 000 | long queries only |
//! | micro | MiniLM Q8_0, or hashing without a model | 5 000 | never |
//!
//! "Memories kept" is the memory store's size limit, past which the least recently used memories
//! are evicted. Every profile runs MiniLM when the host gives a model: micro the same 8-bit
//! weights as lite (about 24 MB in memory), because recalling memories by meaning needs a semantic
//! model. The hashing embedder is micro's when no model is given, and every profile's fallback
//! when the model cannot load. Model memory is not budgeted by a fixed figure: before a load, the
//! loader checks that the worker can get the weights' size plus working memory, and falls back to
//! micro's hashing embedder if not.

use serde::{Deserialize, Serialize};

/// What the runtime does on this device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// MiniLM f32 embeddings, local or host LLM, full debate.
    Full,
    /// Smaller budgets; debate only for long queries.
    Lite,
    /// MiniLM Q8_0 (hashing without a model); tools and memory only.
    Micro,
}

impl Profile {
    /// The profile's name as on the wire (`full`, `lite`, `micro`).
    pub fn name(self) -> &'static str {
        match self {
            Profile::Full => "full",
            Profile::Lite => "lite",
            Profile::Micro => "micro",
        }
    }
}

/// What a profile may spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Budget {
    /// Memories the store keeps before evicting the least recently used.
    pub max_memories: u32,
}

impl Profile {
    /// This profile's budget (see the module's table).
    pub fn budget(self) -> Budget {
        let max_memories = match self {
            Profile::Full => 100_000,
            Profile::Lite => 20_000,
            Profile::Micro => 5_000,
        };
        Budget { max_memories }
    }
}

/// What the host asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProfileRequest {
    /// Detect from the device.
    #[default]
    Auto,
    /// Force full.
    Full,
    /// Force lite.
    Lite,
    /// Force micro.
    Micro,
}

/// What the worker could read about the device. `None` means the browser does not say.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceFacts {
    /// `navigator.hardwareConcurrency`.
    pub hardware_concurrency: Option<u32>,
    /// `navigator.deviceMemory`, in GB.
    pub device_memory_gb: Option<f64>,
    /// `navigator.storage.estimate()`'s quota, in bytes.
    pub storage_quota_bytes: Option<f64>,
    /// Whether the browser validates a module that uses wasm SIMD.
    pub wasm_simd: bool,
}

/// The profile for `request` on a device with `facts`.
pub fn choose(request: ProfileRequest, facts: &DeviceFacts) -> Profile {
    match request {
        ProfileRequest::Full => Profile::Full,
        ProfileRequest::Lite => Profile::Lite,
        ProfileRequest::Micro => Profile::Micro,
        ProfileRequest::Auto => detect(facts),
    }
}

fn detect(facts: &DeviceFacts) -> Profile {
    let below = |value: Option<f64>, limit: f64| value.is_some_and(|v| v < limit);
    let cores = facts.hardware_concurrency.map(f64::from);
    let memory = facts.device_memory_gb;
    let quota = facts.storage_quota_bytes;
    const MB: f64 = 1024.0 * 1024.0;
    if !facts.wasm_simd || below(cores, 2.0) || below(memory, 2.0) || below(quota, 200.0 * MB) {
        Profile::Micro
    } else if below(cores, 4.0) || below(memory, 4.0) || below(quota, 1024.0 * MB) {
        Profile::Lite
    } else {
        Profile::Full
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(cores: u32, memory: f64, quota_mb: f64) -> DeviceFacts {
        DeviceFacts {
            hardware_concurrency: Some(cores),
            device_memory_gb: Some(memory),
            storage_quota_bytes: Some(quota_mb * 1024.0 * 1024.0),
            wasm_simd: true,
        }
    }

    #[test]
    fn detection_rules() {
        let auto = ProfileRequest::Auto;
        assert_eq!(choose(auto, &facts(8, 8.0, 10_000.0)), Profile::Full);
        assert_eq!(choose(auto, &facts(4, 4.0, 1024.0)), Profile::Full);
        assert_eq!(choose(auto, &facts(3, 8.0, 10_000.0)), Profile::Lite);
        assert_eq!(choose(auto, &facts(8, 3.0, 10_000.0)), Profile::Lite);
        assert_eq!(choose(auto, &facts(8, 8.0, 500.0)), Profile::Lite);
        assert_eq!(choose(auto, &facts(1, 8.0, 10_000.0)), Profile::Micro);
        assert_eq!(choose(auto, &facts(8, 1.0, 10_000.0)), Profile::Micro);
        assert_eq!(choose(auto, &facts(8, 8.0, 100.0)), Profile::Micro);
        let no_simd = DeviceFacts {
            wasm_simd: false,
            ..facts(8, 8.0, 10_000.0)
        };
        assert_eq!(choose(auto, &no_simd), Profile::Micro);
    }

    #[test]
    fn unknown_facts_do_not_count_against_the_device() {
        let unknown = DeviceFacts {
            wasm_simd: true,
            ..DeviceFacts::default()
        };
        assert_eq!(choose(ProfileRequest::Auto, &unknown), Profile::Full);
    }

    #[test]
    fn the_host_can_force_a_profile() {
        let weak = facts(1, 0.5, 10.0);
        assert_eq!(choose(ProfileRequest::Full, &weak), Profile::Full);
        assert_eq!(choose(ProfileRequest::Lite, &weak), Profile::Lite);
        assert_eq!(
            choose(ProfileRequest::Micro, &facts(16, 8.0, 1e6)),
            Profile::Micro
        );
    }
}
