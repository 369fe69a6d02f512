//! The llama architecture over candle's quantized matrix products, after candle-transformers'
//! `quantized_llama`, changed where ORION needs it:
//! - the key/value cache belongs to a [`Sequence`], not to the weights, so one loaded model
//!   serves many conversations and decodes several of them in one batch;
//! - the projections that read the same input are fused (q, k, v; gate, up) by concatenating
//!   their quantized rows, which is exact, and quantization of the activations happens once;
//! - the weights may be re-quantized at load time to Q8_0, which on wasm runs on ORION's own
//!   integer SIMD kernel (`q8_matmul.rs`), the embedding table shared with a tied output layer;
//! - causal attention reads a prompt in chunks of queries that see only their keys, and the
//!   softmax and the SiLU gate run on a vectorizable `exp` (`activations.rs`).

use std::sync::Arc;

use candle_core::quantized::{ggml_file, GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, IndexOp, Module, Tensor};
use candle_transformers::quantized_nn::RmsNorm;
use orion_core::Error;

use crate::activations;
use crate::gguf::Gguf;

/// The shape of a llama model, from the GGUF metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// Hidden size.
    pub dim: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (fewer than `heads` with grouped-query attention).
    pub kv_heads: usize,
    /// Feed-forward size.
    pub ffn_dim: usize,
    /// Longest sequence served: the model's trained context, or less if the loader asked.
    pub context_length: usize,
    /// RMS norm epsilon.
    pub rms_eps: f64,
    /// RoPE base frequency.
    pub rope_base: f32,
    /// Vocabulary size (rows of the embedding table).
    pub vocab: usize,
}

impl LlamaConfig {
    fn head_dim(&self) -> usize {
        self.dim / self.heads
    }

    fn read(gguf: &Gguf<'_>) -> Result<Self, Error> {
        let arch = gguf.string("general.architecture")?;
        if arch != "llama" {
            return Err(gguf.error(format!("architecture `{arch}` is not supported (llama)")));
        }
        let count = |key: &str| -> Result<usize, Error> {
            let v = gguf.unsigned(key)?;
            usize::try_from(v)
                .ok()
                .filter(|&v| v > 0 && v <= 1 << 20)
                .ok_or_else(|| gguf.error(format!("`{key}` = {v} is out of range")))
        };
        let dim = count("llama.embedding_length")?;
        let heads = count("llama.attention.head_count")?;
        let kv_heads = count("llama.attention.head_count_kv")?;
        let config = Self {
            dim,
            layers: count("llama.block_count")?,
            heads,
            kv_heads,
            ffn_dim: count("llama.feed_forward_length")?,
            context_length: count("llama.context_length")?,
            rms_eps: f64::from(gguf.float("llama.attention.layer_norm_rms_epsilon")?),
            rope_base: gguf
                .optional("llama.rope.freq_base")
                .map_or(Ok(10_000.0), |_| gguf.float("llama.rope.freq_base"))?,
            vocab: 0,
        };
        if dim % heads != 0 || heads % kv_heads != 0 || config.head_dim() % 2 != 0 {
            return Err(gguf.error(format!(
                "{heads} heads and {kv_heads} key/value heads do not divide the hidden size {dim}"
            )));
        }
        if let Some(rope) = gguf.optional("llama.rope.dimension_count") {
            let rope = rope.to_u32().unwrap_or(0) as usize;
            if rope != config.head_dim() {
                return Err(gguf.error(format!(
                    "partial rotary embeddings ({rope} of {}) are not supported",
                    config.head_dim()
                )));
            }
        }
        Ok(config)
    }
}

/// How the weights are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightFormat {
    /// As the file stores them.
    #[default]
    AsStored,
    /// Re-quantized to Q8_0 at load time, at about twice the memory of 4-bit weights: on wasm
    /// it runs on ORION's integer SIMD kernel (`q8_matmul.rs`), elsewhere on candle's.
    Q8_0,
}

/// From this many input rows on (a prompt being read), a linear layer that runs on candle
/// dequantizes its weights and multiplies in f32: gemm's SIMD f32 kernels are several times faster
/// per multiply-add than candle's int8 dot products, which pays for dequantizing once per pass.
/// Fewer rows (decoding) stay quantized: there the weights' memory traffic dominates. (On wasm,
/// Q8_0 weights take neither path: see [`Linear::Packed`].)
const DEQUANTIZED_FROM_ROWS: usize = 8;

/// A quantized linear layer, `y = x W^T`.
enum Linear {
    /// Q8_0 weights on wasm: the integer SIMD kernel of `q8_matmul.rs`, for prompts and
    /// decoding alike (in Chromium it beats both of candle's paths, see `docs/BENCHMARKS.md`).
    #[cfg(target_arch = "wasm32")]
    Packed(crate::q8_matmul::PackedQ8),
    /// Any other type, and every type natively: candle's kernels.
    Candle {
        weights: Arc<QTensor>,
        quantized: QMatMul,
    },
}

impl Linear {
    fn new(weights: Arc<QTensor>) -> candle_core::Result<Self> {
        #[cfg(target_arch = "wasm32")]
        if let Some(packed) = crate::q8_matmul::PackedQ8::pack(&weights)? {
            return Ok(Self::Packed(packed));
        }
        Ok(Self::Candle {
            quantized: QMatMul::from_arc(weights.clone())?,
            weights,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            #[cfg(target_arch = "wasm32")]
            Self::Packed(packed) => packed.forward(x),
            Self::Candle { weights, .. } if x.dim(0)? >= DEQUANTIZED_FROM_ROWS => {
                x.matmul(&weights.dequantize(&Device::Cpu)?.t()?)
            }
            Self::Candle { quantized, .. } => quantized.forward(x),
        }
    }

    /// Rows `ids` of `W` (an embedding lookup), `(ids, cols)`.
    fn rows(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            #[cfg(target_arch = "wasm32")]
            Self::Packed(packed) => packed.rows(&ids.to_vec1::<u32>()?),
            Self::Candle { weights, .. } => weights.embedding(ids),
        }
    }
}

struct Block {
    attn_norm: RmsNorm,
    /// q, k and v stacked: `dim + 2 * kv_dim` output rows.
    qkv: Linear,
    out: Linear,
    ffn_norm: RmsNorm,
    /// gate and up stacked: `2 * ffn_dim` output rows.
    gate_up: Linear,
    down: Linear,
}

/// A loaded llama model. Immutable: the state of a generation lives in [`Sequence`].
pub struct Llama {
    config: LlamaConfig,
    /// The token embedding table, as a matrix whose rows are looked up.
    embeddings: Arc<Linear>,
    blocks: Vec<Block>,
    norm: RmsNorm,
    /// The output layer: the same matrix as `embeddings` when they are tied (SmolLM2).
    output: Arc<Linear>,
    cos: Tensor,
    sin: Tensor,
}

/// The key/value cache of one sequence: what the model has read so far.
pub struct Sequence {
    layers: Vec<LayerCache>,
    len: usize,
}

struct LayerCache {
    /// `(1, kv_heads, capacity, head_dim)`; the first `len` positions are valid.
    k: Option<Tensor>,
    v: Option<Tensor>,
}

/// Query positions attended together: a chunk reads only the keys up to its last position, so
/// a prompt skips most of the masked half of its score matrix.
const ATTENTION_CHUNK: usize = 64;

/// Positions are added to a cache this many at a time, to avoid a copy per token.
const CACHE_GROWTH: usize = 256;

impl Sequence {
    /// How many tokens the cache holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every position from `len` on (a conversation that diverged from what was read).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    fn append(
        &mut self,
        layer: usize,
        k: &Tensor,
        v: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let len = self.len;
        let cache = self
            .layers
            .get_mut(layer)
            .ok_or_else(|| candle_core::Error::Msg(format!("no cache for layer {layer}")))?;
        let added = k.dim(2)?;
        let grow = |store: &mut Option<Tensor>, src: &Tensor| -> candle_core::Result<Tensor> {
            let capacity = store.as_ref().map_or(0, |t| t.dim(2).unwrap_or(0));
            if len + added > capacity {
                let (b, h, _, d) = src.dims4()?;
                let more = (len + added - capacity).div_ceil(CACHE_GROWTH) * CACHE_GROWTH;
                let extra = Tensor::zeros((b, h, more, d), src.dtype(), src.device())?;
                *store = Some(match store.take() {
                    Some(t) => Tensor::cat(&[&t, &extra], 2)?,
                    None => extra,
                });
            }
            let data = store
                .as_mut()
                .ok_or_else(|| candle_core::Error::Msg("cache not allocated".into()))?;
            data.slice_set(src, 2, len)?;
            data.narrow(2, 0, len + added)
        };
        let k = grow(&mut cache.k, k)?;
        let v = grow(&mut cache.v, v)?;
        Ok((k, v))
    }
}

/// One sequence's share of a forward pass: the tokens it adds and its cache.
pub struct Step<'a> {
    /// The new tokens (the prompt's unread part, or one sampled token).
    pub tokens: &'a [u32],
    /// The sequence they extend.
    pub sequence: &'a mut Sequence,
}

impl Llama {
    /// Loads the weights of `gguf` in `format`, for sequences of up to `max_context` tokens
    /// (or the model's own context, if shorter).
    pub fn load(gguf: &Gguf<'_>, format: WeightFormat, max_context: usize) -> Result<Self, Error> {
        let mut config = LlamaConfig::read(gguf)?;
        config.context_length = config.context_length.min(max_context.max(1));
        let head_dim = config.head_dim();
        let kv_dim = config.kv_heads * head_dim;
        let embeddings = gguf.tensor("token_embd.weight")?;
        let (vocab, width) = embeddings
            .shape()
            .dims2()
            .map_err(|_| gguf.error("`token_embd.weight` is not a matrix"))?;
        if width != config.dim {
            return Err(gguf.error(format!(
                "`token_embd.weight` rows have {width} numbers, not {}",
                config.dim
            )));
        }
        config.vocab = vocab;
        let embeddings =
            Arc::new(Linear::new(Arc::new(embeddings)).map_err(|e| gguf.error(e.to_string()))?);
        let linear = |names: &[&str], rows: &[usize], cols: usize| -> Result<Linear, Error> {
            let parts = names
                .iter()
                .zip(rows)
                .map(|(name, &rows)| {
                    let t = gguf.tensor(name)?;
                    if t.shape().dims() != [rows, cols] {
                        return Err(gguf.error(format!(
                            "`{name}` has shape {:?}, expected [{rows}, {cols}]",
                            t.shape().dims()
                        )));
                    }
                    Ok(t)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let fused = stack_rows(parts).map_err(|e| gguf.error(format!("{}: {e}", names[0])))?;
            let fused = requantize(fused, format).map_err(|e| gguf.error(e.to_string()))?;
            Linear::new(Arc::new(fused)).map_err(|e| gguf.error(e.to_string()))
        };
        let norm = |name: &str| -> Result<RmsNorm, Error> {
            let t = gguf.tensor(name)?;
            if t.shape().dims() != [config.dim] {
                return Err(gguf.error(format!("`{name}` is not a vector of {}", config.dim)));
            }
            RmsNorm::from_qtensor(t, config.rms_eps).map_err(|e| gguf.error(e.to_string()))
        };
        let mut blocks = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let p = |name: &str| format!("blk.{i}.{name}.weight");
            blocks.push(Block {
                attn_norm: norm(&p("attn_norm"))?,
                qkv: linear(
                    &[&p("attn_q"), &p("attn_k"), &p("attn_v")],
                    &[config.dim, kv_dim, kv_dim],
                    config.dim,
                )?,
                out: linear(&[&p("attn_output")], &[config.dim], config.dim)?,
                ffn_norm: norm(&p("ffn_norm"))?,
                gate_up: linear(
                    &[&p("ffn_gate"), &p("ffn_up")],
                    &[config.ffn_dim, config.ffn_dim],
                    config.dim,
                )?,
                down: linear(&[&p("ffn_down")], &[config.dim], config.ffn_dim)?,
            });
        }
        let output = if gguf.has_tensor("output.weight") {
            Arc::new(linear(&["output.weight"], &[vocab], config.dim)?)
        } else {
            // Tied embeddings (SmolLM2): the embedding table is the output layer.
            embeddings.clone()
        };
        let (cos, sin) = rope_tables(&config).map_err(|e| gguf.error(e.to_string()))?;
        Ok(Self {
            norm: norm("output_norm.weight")?,
            config,
            embeddings,
            blocks,
            output,
            cos,
            sin,
        })
    }

    /// The model's shape.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// An empty sequence.
    pub fn sequence(&self) -> Sequence {
        Sequence {
            layers: (0..self.config.layers)
                .map(|_| LayerCache { k: None, v: None })
                .collect(),
            len: 0,
        }
    }

    /// Reads each step's tokens into its sequence and returns, per step, the logits for the
    /// token after its last one. All steps share the weight reads: several sequences decoding
    /// one token each cost little more than one.
    pub fn forward(&self, steps: &mut [Step<'_>]) -> Result<Vec<Vec<f32>>, Error> {
        self.forward_inner(steps)
            .map_err(|e| Error::Generation(format!("the model failed: {e}")))
    }

    fn forward_inner(&self, steps: &mut [Step<'_>]) -> candle_core::Result<Vec<Vec<f32>>> {
        let cfg = &self.config;
        let total: usize = steps.iter().map(|s| s.tokens.len()).sum();
        if total == 0 || steps.iter().any(|s| s.tokens.is_empty()) {
            candle_core::bail!("every sequence needs at least one new token");
        }
        for step in steps.iter() {
            if step.sequence.len + step.tokens.len() > cfg.context_length {
                candle_core::bail!(
                    "{} tokens exceed the context of {}",
                    step.sequence.len + step.tokens.len(),
                    cfg.context_length
                );
            }
            if let Some(&bad) = step.tokens.iter().find(|&&t| t as usize >= cfg.vocab) {
                candle_core::bail!("token {bad} is not in the vocabulary");
            }
        }
        let ids: Vec<u32> = steps
            .iter()
            .flat_map(|s| s.tokens.iter().copied())
            .collect();
        let ids = Tensor::new(ids.as_slice(), &Device::Cpu)?;
        let mut x = self.embeddings.rows(&ids)?;
        let head_dim = cfg.head_dim();
        let kv_dim = cfg.kv_heads * head_dim;
        for (layer, block) in self.blocks.iter().enumerate() {
            let h = block.attn_norm.forward(&x)?;
            let qkv = block.qkv.forward(&h)?;
            let mut attended = Vec::with_capacity(steps.len());
            let mut row = 0;
            for step in steps.iter_mut() {
                let n = step.tokens.len();
                let part = qkv.narrow(0, row, n)?;
                row += n;
                let q = part.narrow(1, 0, cfg.dim)?;
                let k = part.narrow(1, cfg.dim, kv_dim)?;
                let v = part.narrow(1, cfg.dim + kv_dim, kv_dim)?;
                attended.push(self.attention(layer, step.sequence, (&q, &k, &v))?);
            }
            let a = Tensor::cat(&attended, 0)?;
            x = (block.out.forward(&a)? + x)?;
            let h = block.ffn_norm.forward(&x)?;
            let gate_up = block.gate_up.forward(&h)?;
            let h = activations::silu_gate(&gate_up, cfg.ffn_dim)?;
            x = (block.down.forward(&h)? + x)?;
        }
        // Only the last position of each sequence is needed for the next token.
        let mut last = Vec::with_capacity(steps.len());
        let mut row = 0;
        for step in steps.iter_mut() {
            row += step.tokens.len();
            last.push(x.i(row - 1..row)?);
            step.sequence.len += step.tokens.len();
        }
        let x = self.norm.forward(&Tensor::cat(&last, 0)?)?;
        let logits = self.output.forward(&x)?;
        logits.to_dtype(DType::F32)?.to_vec2()
    }

    /// Causal self-attention of `n` new positions of one sequence; `q`, `k`, `v` are `(n, _)`.
    fn attention(
        &self,
        layer: usize,
        sequence: &mut Sequence,
        (q, k, v): (&Tensor, &Tensor, &Tensor),
    ) -> candle_core::Result<Tensor> {
        let cfg = &self.config;
        let head_dim = cfg.head_dim();
        let n = q.dim(0)?;
        let start = sequence.len;
        let heads = |t: &Tensor, count: usize| -> candle_core::Result<Tensor> {
            t.reshape((1, n, count, head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let cos = self.cos.narrow(0, start, n)?;
        let sin = self.sin.narrow(0, start, n)?;
        // The score scale goes on the queries: fewer numbers than the scores.
        let q = (candle_nn::rotary_emb::rope_i(&heads(q, cfg.heads)?, &cos, &sin)?
            * (1.0 / (head_dim as f64).sqrt()))?;
        let k = candle_nn::rotary_emb::rope_i(&heads(k, cfg.kv_heads)?, &cos, &sin)?;
        let v = heads(v, cfg.kv_heads)?;
        let (k, v) = sequence.append(layer, &k, &v)?;
        let (k, v) = (k.contiguous()?, v.contiguous()?);
        // Grouped-query attention without copying keys and values for every query head: the
        // `groups` query heads that share a key/value head are stacked as rows of one matrix.
        let groups = cfg.heads / cfg.kv_heads;
        let mut chunks = Vec::with_capacity(n.div_ceil(ATTENTION_CHUNK));
        for first in (0..n).step_by(ATTENTION_CHUNK) {
            let len = ATTENTION_CHUNK.min(n - first);
            let keys = start + first + len;
            let q = q.narrow(2, first, len)?.contiguous()?.reshape((
                1,
                cfg.kv_heads,
                groups * len,
                head_dim,
            ))?;
            // Rows are `groups` query heads times `len` positions; position `i` sees
            // `start + first + i + 1` keys.
            let scores = q.matmul(&k.narrow(2, 0, keys)?.t()?)?;
            let weights = activations::causal_softmax(&scores, start + first + 1, len)?;
            chunks.push(
                weights
                    .matmul(&v.narrow(2, 0, keys)?)?
                    .reshape((1, cfg.heads, len, head_dim))?,
            );
        }
        Tensor::cat(&chunks, 2)?
            .transpose(1, 2)?
            .reshape((n, cfg.dim))
    }
}

/// Stacks matrices with the same row length and type into one, row after row. Quantized rows
/// are independent blocks, so concatenating the bytes is exact.
fn stack_rows(parts: Vec<QTensor>) -> candle_core::Result<QTensor> {
    if parts.len() == 1 {
        return parts
            .into_iter()
            .next()
            .ok_or_else(|| candle_core::Error::Msg("nothing to stack".into()));
    }
    let first = parts
        .first()
        .ok_or_else(|| candle_core::Error::Msg("nothing to stack".into()))?;
    let dtype = first.dtype();
    let cols = first.shape().dims2()?.1;
    let mut rows = 0;
    let mut bytes = Vec::new();
    for part in &parts {
        let (r, c) = part.shape().dims2()?;
        if part.dtype() != dtype || c != cols {
            candle_core::bail!("the fused projections differ in type or width");
        }
        rows += r;
        bytes.extend_from_slice(&part.data()?);
    }
    ggml_file::qtensor_from_ggml(dtype, &bytes, vec![rows, cols], &Device::Cpu)
}

fn requantize(tensor: QTensor, format: WeightFormat) -> candle_core::Result<QTensor> {
    match format {
        WeightFormat::AsStored => Ok(tensor),
        WeightFormat::Q8_0 if tensor.dtype() == GgmlDType::Q8_0 => Ok(tensor),
        WeightFormat::Q8_0 => QTensor::quantize(&tensor.dequantize(&Device::Cpu)?, GgmlDType::Q8_0),
    }
}

/// RoPE's cos and sin for every position, `(context, head_dim / 2)`.
fn rope_tables(cfg: &LlamaConfig) -> candle_core::Result<(Tensor, Tensor)> {
    let head_dim = cfg.head_dim();
    let inv: Vec<f32> = (0..head_dim)
        .step_by(2)
        .map(|i| 1.0 / cfg.rope_base.powf(i as f32 / head_dim as f32))
        .collect();
    let inv = Tensor::new(inv.as_slice(), &Device::Cpu)?.reshape((1, head_dim / 2))?;
    let positions = Tensor::arange(0, cfg.context_length as u32, &Device::Cpu)?
        .to_dtype(DType::F32)?
        .reshape((cfg.context_length, 1))?;
    let angles = positions.matmul(&inv)?;
    Ok((angles.cos()?, angles.sin()?))
}
