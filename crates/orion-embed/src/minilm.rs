//! all-MiniLM-L6-v2 on candle: in f32 (the full profile's embedder, candle-transformers' BERT) or
//! with Q8_0 linear weights (the lite profile's, [`crate::quantized_bert`]).
//!
//! Matches sentence-transformers: WordPiece tokens with [CLS]/[SEP], truncation at 256 tokens,
//! mean pooling over real tokens only (the attention mask), L2 normalisation.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use orion_core::embedding::{normalize, LocalBoxFuture};
use orion_core::error::{Error, Result};
use orion_core::{Embedder, EmbeddingModelInfo};
use tokenizers::{Tokenizer, TruncationParams};

use crate::quantized_bert::QuantizedBert;

/// The model's id.
pub const MINILM_ID: &str = "sentence-transformers/all-MiniLM-L6-v2";

/// sentence-transformers' `max_seq_length` for this model. (Its `tokenizer.json` says 128 and pads
/// to 128; both are overridden.)
const MAX_TOKENS: usize = 256;

/// Texts embedded in one forward pass. Texts are sorted by length first, so a batch holds texts of
/// similar length and padding costs little.
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
    /// Linear layers quantized to Q8_0 at load time (the same files): a quarter of the weight
    /// memory in those layers; vectors stay within cosine 0.995 of f32. Its vectors get their own
    /// version, so they are never compared with f32 ones.
    Q8_0,
}

impl Precision {
    fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Q8_0 => "q8_0",
        }
    }
}

enum Encoder {
    F32(BertModel),
    Q8_0(QuantizedBert),
}

/// all-MiniLM-L6-v2.
pub struct MiniLm {
    encoder: Encoder,
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
        let encoder = match precision {
            Precision::F32 => BertModel::load(weights, &config).map(Encoder::F32),
            Precision::Q8_0 => QuantizedBert::load(weights, &config).map(Encoder::Q8_0),
        }
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
                .forward(&batch_tokens)
                .map_err(|e| Error::Embedding(e.to_string()))?;
            for (&i, mut vector) in batch.iter().zip(pooled) {
                normalize(&mut vector);
                vectors[i] = vector;
            }
        }
        Ok(vectors)
    }

    /// Mean-pooled hidden states of one batch, padded to its longest text.
    fn forward(&self, batch: &[&[u32]]) -> candle_core::Result<Vec<Vec<f32>>> {
        let len = batch.iter().map(|t| t.len()).max().unwrap_or(0).max(1);
        let mut ids = Vec::with_capacity(batch.len() * len);
        let mut mask = Vec::with_capacity(batch.len() * len);
        for tokens in batch {
            ids.extend_from_slice(tokens);
            mask.extend(std::iter::repeat_n(1u32, tokens.len()));
            let pad = len - tokens.len();
            ids.extend(std::iter::repeat_n(0u32, pad));
            mask.extend(std::iter::repeat_n(0u32, pad));
        }
        let shape = (batch.len(), len);
        let ids = Tensor::from_vec(ids, shape, &Device::Cpu)?;
        let mask = Tensor::from_vec(mask, shape, &Device::Cpu)?;
        let token_types = ids.zeros_like()?;
        let hidden = match &self.encoder {
            Encoder::F32(model) => model.forward(&ids, &token_types, Some(&mask))?,
            Encoder::Q8_0(model) => model.forward(&ids, &token_types, &mask)?,
        };
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?;
        summed.broadcast_div(&counts)?.to_vec2::<f32>()
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
