//! all-MiniLM-L6-v2 on candle: in f32 (the full profile's embedder) or with Q8_0 linear weights
//! (the lite profile's), both on the BERT encoder of [`crate::bert`].
//!
//! Matches sentence-transformers: WordPiece tokens with [CLS]/[SEP], truncation at 256 tokens,
//! mean pooling over real tokens only (the attention mask), L2 normalisation.

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::Config;
use orion_core::embedding::{normalize, LocalBoxFuture};
use orion_core::error::{Error, Result};
use orion_core::{Embedder, EmbeddingModelInfo};
use tokenizers::{Tokenizer, TruncationParams};

use crate::bert::{Bert, LinearKind};

/// The model's id.
pub const MINILM_ID: &str = "sentence-transformers/all-MiniLM-L6-v2";

/// sentence-transformers' `max_seq_length` for this model. (Its `tokenizer.json` says 128 and pads
/// to 128; both are overridden.)
const MAX_TOKENS: usize = 256;

/// Texts embedded in one forward pass. Their tokens are packed without padding (see
/// [`crate::bert`]), so a batch costs the sum of its texts' lengths; larger batches give the
/// linear layers' matmuls more rows to amortise over.
const DEFAULT_BATCH_SIZE: usize = 32;

/// The bytes of the model's files.
#[derive(Debug, Clone, Copy)]
pub struct ModelFiles<'a> {
    /// `config.json`.
    pub config: &'a [u8],
    /// `tokenizer.json`.
    pub tokenizer: &'a [u8],
    /// `model.safetensors`.
    pub weights: &'a [u8],
}

/// The weights MiniLM runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// f32 everywhere: matches PyTorch to about 1e-7.
    F32,
    /// Linear layers quantized at load time (the same files) to Q8_0's scheme, 8-bit values in
    /// blocks of 32 with one scale: a quarter of the weight memory in those layers; vectors stay
    /// within cosine 0.995 of f32. Each batch expands a layer's weights to f32 for the matmul
    /// (see [`crate::bert`]), so lite saves memory, not time. Its vectors get their own version,
    /// so they are never compared with f32 ones.
    Q8_0,
}

impl Precision {
    fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Q8_0 => "q8b32",
        }
    }

    fn linear_kind(self) -> LinearKind {
        match self {
            Precision::F32 => LinearKind::F32,
            Precision::Q8_0 => LinearKind::Q8_0,
        }
    }
}

/// all-MiniLM-L6-v2.
pub struct MiniLm {
    encoder: Bert,
    tokenizer: Tokenizer,
    info: EmbeddingModelInfo,
    batch_size: usize,
}

impl MiniLm {
    /// Loads the model from its files at `precision`. Fails with `ERR_MODEL_LOAD` naming the file
    /// at fault.
    pub fn load(files: ModelFiles<'_>, precision: Precision) -> Result<Self> {
        let config: Config = serde_json::from_slice(files.config)
            .map_err(|e| Error::model_load("config.json", e))?;
        let mut tokenizer = Tokenizer::from_bytes(files.tokenizer)
            .map_err(|e| Error::model_load("tokenizer.json", e))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..TruncationParams::default()
            }))
            .map_err(|e| Error::model_load("tokenizer.json", e))?;
        let weights = VarBuilder::from_slice_safetensors(files.weights, DType::F32, &Device::Cpu)
            .map_err(|e| Error::model_load("model.safetensors", e))?;
        let encoder = Bert::load(weights, &config, precision.linear_kind())
            .map_err(|e| Error::model_load("model.safetensors", e))?;
        Ok(Self {
            encoder,
            tokenizer,
            info: EmbeddingModelInfo {
                id: MINILM_ID.into(),
                version: format!("all-MiniLM-L6-v2/{}/max{MAX_TOKENS}", precision.name()),
                dims: config.hidden_size,
            },
            batch_size: DEFAULT_BATCH_SIZE,
        })
    }

    /// Sets how many texts go through the model at once (at least 1).
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Embeds `texts` synchronously (the worker has one thread; the async trait method wraps this).
    pub fn embed_now(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let mut tokens = Vec::with_capacity(texts.len());
        for text in texts {
            let encoding = self
                .tokenizer
                .encode(*text, true)
                .map_err(|e| Error::Embedding(format!("tokenizing failed: {e}")))?;
            tokens.push(encoding.get_ids().to_vec());
        }
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| tokens[i].len());
        let mut vectors = vec![Vec::new(); texts.len()];
        for batch in order.chunks(self.batch_size) {
            let batch_tokens: Vec<&[u32]> = batch.iter().map(|&i| tokens[i].as_slice()).collect();
            let pooled = self
                .encoder
                .forward(&batch_tokens)
                .map_err(|e| Error::Embedding(e.to_string()))?;
            for (&i, mut vector) in batch.iter().zip(pooled) {
                normalize(&mut vector);
                vectors[i] = vector;
            }
        }
        Ok(vectors)
    }
}

impl Embedder for MiniLm {
    fn info(&self) -> &EmbeddingModelInfo {
        &self.info
    }

    fn embed<'a>(&'a self, texts: &'a [&'a str]) -> LocalBoxFuture<'a, Result<Vec<Vec<f32>>>> {
        Box::pin(async move { self.embed_now(texts) })
    }
}
