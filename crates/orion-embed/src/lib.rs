//! ORION's embedders, each an [`orion_core::Embedder`]:
//! - [`MiniLm`]: sentence-transformers' all-MiniLM-L6-v2 on candle, loaded from the bytes of
//!   `config.json`, `tokenizer.json` and `model.safetensors`, in f32 (full) or with Q8_0 linear
//!   layers (lite);
//! - [`HashingEmbedder`]: word and character n-grams with signed feature hashing, for devices that
//!   cannot load a model.
//!
//! Both run the same natively and in wasm32; the parity tests run in both.

mod bert;
pub mod evaluation;
mod hashing;
mod minilm;

pub use hashing::HashingEmbedder;
pub use minilm::{MiniLm, ModelFiles, Precision, MINILM_ID};
