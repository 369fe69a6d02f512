//! Text generation: the contract every generator meets (the local SmolLM2 in `orion-llm`, the
//! host page's LLM function in `orion-web`, scripted generators in tests), and the checks every
//! request passes before any of them sees it.

mod stop_strings;

use serde::{Deserialize, Serialize};

pub use stop_strings::StopStrings;

use crate::embedding::LocalBoxFuture;
use crate::error::{Error, Result};

/// Longest prompt or system text, in bytes.
pub const MAX_PROMPT_BYTES: usize = 64 * 1024;
/// Most tokens one request may generate.
pub const MAX_NEW_TOKENS: u32 = 4096;
/// Most stop strings per request, and the longest one in bytes.
pub const MAX_STOPS: usize = 8;
/// See [`MAX_STOPS`].
pub const MAX_STOP_BYTES: usize = 64;

/// One earlier turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Turn {
    /// `user` or `assistant`.
    pub role: String,
    /// What was said.
    pub content: String,
}

/// What to generate and how.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GenerateRequest {
    /// The system prompt; the model's default when absent.
    #[serde(default)]
    pub system: Option<String>,
    /// The user's message.
    pub prompt: String,
    /// Earlier turns, oldest first.
    #[serde(default)]
    pub history: Vec<Turn>,
    /// Requests of one conversation share the model's cache: a turn that extends the previous
    /// one reads only its new tokens.
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// Which agent asks (`logical`, `creative`, …), for the host LLM and for health accounting.
    #[serde(default)]
    pub agent: Option<String>,
    /// 0 is greedy (always the likeliest token); up to 2.
    #[serde(default)]
    pub temperature: f32,
    /// Nucleus sampling: keep the likeliest tokens whose probabilities sum to this (0, 1].
    #[serde(default)]
    pub top_p: Option<f32>,
    /// Keep only the `top_k` likeliest tokens.
    #[serde(default)]
    pub top_k: Option<u32>,
    /// Divides the logits of tokens already generated (1 = off); 1 to 2.
    #[serde(default = "one")]
    pub repetition_penalty: f32,
    /// The same seed, request and model give the same text.
    #[serde(default)]
    pub seed: u64,
    /// Most tokens to generate.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// Generation ends before the first of these strings; the string is not returned.
    #[serde(default)]
    pub stop: Vec<String>,
}

fn one() -> f32 {
    1.0
}

fn default_max_tokens() -> u32 {
    256
}

impl GenerateRequest {
    /// A request for `prompt` with the defaults: greedy, 256 tokens.
    pub fn new(prompt: impl Into<String>) -> Self {
        Self {
            system: None,
            prompt: prompt.into(),
            history: Vec::new(),
            conversation_id: None,
            agent: None,
            temperature: 0.0,
            top_p: None,
            top_k: None,
            repetition_penalty: 1.0,
            seed: 0,
            max_tokens: default_max_tokens(),
            stop: Vec::new(),
        }
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        let text = |field: &str, value: &str, may_be_empty: bool| -> Result<()> {
            if !may_be_empty && value.trim().is_empty() {
                return Err(Error::invalid_input(field, "must not be empty"));
            }
            if value.len() > MAX_PROMPT_BYTES {
                return Err(Error::invalid_input(
                    field,
                    format!("is {} bytes; the limit is {MAX_PROMPT_BYTES}", value.len()),
                ));
            }
            Ok(())
        };
        text("prompt", &self.prompt, false)?;
        if let Some(system) = &self.system {
            text("system", system, true)?;
        }
        for (i, turn) in self.history.iter().enumerate() {
            if turn.role != "user" && turn.role != "assistant" {
                return Err(Error::invalid_input(
                    format!("history[{i}].role"),
                    "must be `user` or `assistant`",
                ));
            }
            text(&format!("history[{i}].content"), &turn.content, true)?;
        }
        let range = |field: &str, value: f32, low: f32, high: f32, low_open: bool| -> Result<()> {
            let above = if low_open { value > low } else { value >= low };
            if !(value.is_finite() && above && value <= high) {
                let bracket = if low_open { "(" } else { "[" };
                return Err(Error::invalid_input(
                    field,
                    format!("is {value}; it must be in {bracket}{low}, {high}]"),
                ));
            }
            Ok(())
        };
        range("temperature", self.temperature, 0.0, 2.0, false)?;
        if let Some(p) = self.top_p {
            range("topP", p, 0.0, 1.0, true)?;
        }
        if self.top_k == Some(0) {
            return Err(Error::invalid_input("topK", "must be at least 1"));
        }
        range(
            "repetitionPenalty",
            self.repetition_penalty,
            1.0,
            2.0,
            false,
        )?;
        if self.max_tokens == 0 || self.max_tokens > MAX_NEW_TOKENS {
            return Err(Error::invalid_input(
                "maxTokens",
                format!("is {}; it must be 1 to {MAX_NEW_TOKENS}", self.max_tokens),
            ));
        }
        if self.stop.len() > MAX_STOPS {
            return Err(Error::invalid_input(
                "stop",
                format!("has {} strings; the limit is {MAX_STOPS}", self.stop.len()),
            ));
        }
        for (i, stop) in self.stop.iter().enumerate() {
            if stop.is_empty() || stop.len() > MAX_STOP_BYTES {
                return Err(Error::invalid_input(
                    format!("stop[{i}]"),
                    format!("must be 1 to {MAX_STOP_BYTES} bytes"),
                ));
            }
        }
        Ok(())
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FinishReason {
    /// The model ended its turn.
    EndOfTurn,
    /// A stop string appeared.
    Stop,
    /// `max_tokens` were generated.
    Length,
    /// The caller cancelled; the text is what was generated until then.
    Cancelled,
}

/// A finished generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Generated {
    /// The text, without the stop string or end-of-turn token.
    pub text: String,
    /// Why it ended.
    pub finish: FinishReason,
    /// Tokens in the prompt.
    pub prompt_tokens: u32,
    /// Prompt tokens found in the conversation's cache and not read again.
    pub cached_tokens: u32,
    /// Tokens generated.
    pub tokens: u32,
    /// Time reading the prompt.
    pub prefill_ms: f64,
    /// Time generating.
    pub decode_ms: f64,
}

/// Where a generator reports progress and learns about cancellation. `index` is the request's
/// position in a [`Generator::generate_many`] batch (0 for [`Generator::generate`]).
pub trait GenerationSink {
    /// New text of request `index` (whole characters, possibly several tokens).
    fn text(&self, index: usize, text: &str);
    /// Whether request `index` was cancelled; checked between tokens.
    fn cancelled(&self, index: usize) -> bool;
}

/// A sink that reports nothing and never cancels.
pub struct Silent;

impl GenerationSink for Silent {
    fn text(&self, _index: usize, _text: &str) {}
    fn cancelled(&self, _index: usize) -> bool {
        false
    }
}

/// [`GeneratorInfo::kind`] of a generator that runs in this worker (the local model).
pub const LOCAL_KIND: &str = "local";
/// [`GeneratorInfo::kind`] of the page's LLM function.
pub const HOST_KIND: &str = "host";

/// What a generator is, for health and debug data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GeneratorInfo {
    /// [`LOCAL_KIND`] or [`HOST_KIND`].
    pub kind: String,
    /// The model, e.g. `SmolLM2-135M-Instruct.Q4_1` (or what the host says).
    pub model: String,
}

/// Generates text.
pub trait Generator {
    /// What this generator is.
    fn info(&self) -> GeneratorInfo;

    /// One generation. The request has passed [`GenerateRequest::validate`].
    fn generate<'a>(
        &'a self,
        request: &'a GenerateRequest,
        sink: &'a dyn GenerationSink,
    ) -> LocalBoxFuture<'a, Result<Generated>>;

    /// Several generations, together where the generator can (the local model decodes them in
    /// one batch; a host may run them concurrently). Results are in request order.
    fn generate_many<'a>(
        &'a self,
        requests: &'a [GenerateRequest],
        sink: &'a dyn GenerationSink,
    ) -> LocalBoxFuture<'a, Vec<Result<Generated>>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(request: &GenerateRequest) -> Option<String> {
        match request.validate() {
            Err(Error::InvalidInput { field, .. }) => Some(field),
            Err(other) => panic!("unexpected error {other:?}"),
            Ok(()) => None,
        }
    }

    #[test]
    fn a_plain_request_is_valid() {
        assert_eq!(field_of(&GenerateRequest::new("Hello")), None);
    }

    #[test]
    fn each_bad_field_is_named() {
        let base = GenerateRequest::new("Hello");
        let cases: Vec<(&str, GenerateRequest)> = vec![
            ("prompt", GenerateRequest::new("  \n")),
            (
                "prompt",
                GenerateRequest::new("x".repeat(MAX_PROMPT_BYTES + 1)),
            ),
            (
                "temperature",
                GenerateRequest {
                    temperature: -0.1,
                    ..base.clone()
                },
            ),
            (
                "temperature",
                GenerateRequest {
                    temperature: f32::NAN,
                    ..base.clone()
                },
            ),
            (
                "temperature",
                GenerateRequest {
                    temperature: 2.5,
                    ..base.clone()
                },
            ),
            (
                "topP",
                GenerateRequest {
                    top_p: Some(0.0),
                    ..base.clone()
                },
            ),
            (
                "topP",
                GenerateRequest {
                    top_p: Some(1.5),
                    ..base.clone()
                },
            ),
            (
                "topK",
                GenerateRequest {
                    top_k: Some(0),
                    ..base.clone()
                },
            ),
            (
                "repetitionPenalty",
                GenerateRequest {
                    repetition_penalty: 0.5,
                    ..base.clone()
                },
            ),
            (
                "maxTokens",
                GenerateRequest {
                    max_tokens: 0,
                    ..base.clone()
                },
            ),
            (
                "maxTokens",
                GenerateRequest {
                    max_tokens: MAX_NEW_TOKENS + 1,
                    ..base.clone()
                },
            ),
            (
                "stop",
                GenerateRequest {
                    stop: vec!["a".into(); MAX_STOPS + 1],
                    ..base.clone()
                },
            ),
            (
                "stop[1]",
                GenerateRequest {
                    stop: vec!["a".into(), String::new()],
                    ..base.clone()
                },
            ),
            (
                "history[0].role",
                GenerateRequest {
                    history: vec![Turn {
                        role: "system".into(),
                        content: "x".into(),
                    }],
                    ..base.clone()
                },
            ),
        ];
        for (field, request) in cases {
            assert_eq!(field_of(&request).as_deref(), Some(field), "{request:?}");
        }
    }

    #[test]
    fn requests_read_from_json_with_defaults() -> std::result::Result<(), serde_json::Error> {
        let request: GenerateRequest =
            serde_json::from_str(r#"{"prompt":"Hi","maxTokens":8,"stop":["\n"]}"#)?;
        assert_eq!(request.max_tokens, 8);
        assert_eq!(request.repetition_penalty, 1.0);
        assert_eq!(request.temperature, 0.0);
        assert!(serde_json::from_str::<GenerateRequest>(r#"{"prompt":"Hi","bogus":1}"#).is_err());
        Ok(())
    }
}
