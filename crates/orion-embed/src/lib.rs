//! ORION's embedders, each an [`orion_core::Embedder`]:
//! - [`MiniLm`]: sentence-transformers' all-MiniLM-L6-v2 in f32 on candle, loaded from the bytes of
//!   `config.json`, `tokenizer.json` and `model.safetensors`;
//! - [`HashingEmbedder`]: word and character n-grams with signed feature hashing, for devices that
//!   cannot load a model.
//!
//! Both run the same natively and in wasm32; the parity tests run in both.

pub mod evaluation;
mod hashing;
mod minilm;

pub use hashing::HashingEmbedder;
pub use minilm::{MiniLm, ModelFiles, MINILM_ID};
