//! ORION's local text generation: a llama-architecture GGUF model (SmolLM2-135M-Instruct by
//! default) on candle's quantized kernels, with the tokenizer and the chat template read from the
//! file's metadata, behind `orion_core`'s [`Generator`](orion_core::Generator) contract.
mod activations;
pub mod chat_template;
pub mod generator;
pub mod gguf;
pub mod llama;
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod q8_matmul;
pub mod tokenizer;

pub use generator::{LoadOptions, LocalGenerator, LocalModel, Yield};
pub use llama::WeightFormat;
