//! How the worker gets its text generator: the local model's load options and, when the page
//! passed an LLM function, the host generator's settings (`init.llm` on the wire).
//!
//! When the page gives a function, the host generator is used and the local model is never
//! loaded, even if `models.llm` names one.

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::host_llm::HostLlmConfig;

/// The longest context a page may ask the local model to serve (SmolLM2's own is 8192).
pub const MAX_CONTEXT_LIMIT: u32 = 8192;

/// How the local model's weights are held in memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum LlmWeights {
    /// Re-quantized to Q8_0 at load time (the default): in wasm it runs on an integer SIMD
    /// kernel, while Q4_1 has only candle's scalar one, so this decodes about 6 times faster and
    /// reads prompts about twice as fast, at about twice the memory.
    #[default]
    #[serde(rename = "q8_0")]
    Q8_0,
    /// As the GGUF file stores them.
    #[serde(rename = "as-stored")]
    AsStored,
}

/// `init.llm`: `{weights?, maxContext?, host?}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LlmSettings {
    /// The local model's weight format.
    #[serde(default)]
    pub weights: LlmWeights,
    /// The longest sequence (prompt and answer) the local model serves; the loader's default
    /// (2048) when absent, and never more than the model's own context.
    #[serde(default)]
    pub max_context: Option<u32>,
    /// Present when the page passed an LLM function: generation goes to it.
    #[serde(default)]
    pub host: Option<HostLlmConfig>,
}

impl LlmSettings {
    /// Checks the ranges; errors name the field under `llm`.
    pub fn validate(&self) -> Result<()> {
        if let Some(max) = self.max_context {
            if !(16..=MAX_CONTEXT_LIMIT).contains(&max) {
                return Err(Error::invalid_input(
                    "llm.maxContext",
                    format!("is {max}; it must be 16 to {MAX_CONTEXT_LIMIT}"),
                ));
            }
        }
        match &self.host {
            Some(host) => host.validate("llm.host"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn settings_read_with_defaults_and_are_checked() {
        let settings: LlmSettings = serde_json::from_value(json!({})).unwrap();
        assert_eq!(settings.weights, LlmWeights::Q8_0);
        assert!(settings.host.is_none());
        let settings: LlmSettings =
            serde_json::from_value(json!({"weights": "as-stored", "maxContext": 4})).unwrap();
        assert_eq!(settings.weights, LlmWeights::AsStored);
        match settings.validate() {
            Err(Error::InvalidInput { field, .. }) => assert_eq!(field, "llm.maxContext"),
            other => panic!("{other:?}"),
        }
        assert!(serde_json::from_value::<LlmSettings>(json!({"weights": "q4"})).is_err());
    }
}
