//! BERT with Q8_0 weights in its linear layers: the lite profile's encoder.
//!
//! candle-transformers' BERT takes only f32/f16 weights, and candle has no quantized BERT, so this
//! encoder is written here on candle's quantized matmul. It follows candle-transformers' `bert`
//! (post-norm layers, erf GELU) and loads the same `model.safetensors`, quantizing each linear
//! weight to Q8_0 at load time; embeddings, biases and layer norms stay f32.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{embedding, layer_norm, Embedding, LayerNorm, VarBuilder};
use candle_transformers::models::bert::Config;
use candle_transformers::quantized_nn::Linear;

/// A BERT encoder whose linear layers run on Q8_0 weights.
pub struct QuantizedBert {
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    token_type_embeddings: Embedding,
    embeddings_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    head_size: usize,
}

struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attention_output: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

fn quantized_linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Linear> {
    let weight = vb.get((out_dim, in_dim), "weight")?;
    let bias = vb.get(out_dim, "bias")?;
    Linear::from_arc(
        Arc::new(QTensor::quantize(&weight, GgmlDType::Q8_0)?),
        Some(bias),
    )
}

impl QuantizedBert {
    /// Loads the encoder from f32 weights, quantizing the linear layers.
    pub fn load(vb: VarBuilder, config: &Config) -> Result<Self> {
        let hidden = config.hidden_size;
        let norm = |vb: VarBuilder| layer_norm(hidden, config.layer_norm_eps, vb);
        let embeddings = vb.pp("embeddings");
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let vb = vb.pp(format!("encoder.layer.{i}"));
                let attention = vb.pp("attention");
                Ok(Layer {
                    query: quantized_linear(hidden, hidden, attention.pp("self.query"))?,
                    key: quantized_linear(hidden, hidden, attention.pp("self.key"))?,
                    value: quantized_linear(hidden, hidden, attention.pp("self.value"))?,
                    attention_output: quantized_linear(
                        hidden,
                        hidden,
                        attention.pp("output.dense"),
                    )?,
                    attention_norm: norm(attention.pp("output.LayerNorm"))?,
                    intermediate: quantized_linear(
                        hidden,
                        config.intermediate_size,
                        vb.pp("intermediate.dense"),
                    )?,
                    output: quantized_linear(
                        config.intermediate_size,
                        hidden,
                        vb.pp("output.dense"),
                    )?,
                    output_norm: norm(vb.pp("output.LayerNorm"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            word_embeddings: embedding(
                config.vocab_size,
                hidden,
                embeddings.pp("word_embeddings"),
            )?,
            position_embeddings: embedding(
                config.max_position_embeddings,
                hidden,
                embeddings.pp("position_embeddings"),
            )?,
            token_type_embeddings: embedding(
                config.type_vocab_size,
                hidden,
                embeddings.pp("token_type_embeddings"),
            )?,
            embeddings_norm: norm(embeddings.pp("LayerNorm"))?,
            layers,
            heads: config.num_attention_heads,
            head_size: hidden / config.num_attention_heads,
        })
    }

    /// Hidden states `[batch, len, hidden]` for token ids `[batch, len]` and a 0/1 mask.
    pub fn forward(&self, ids: &Tensor, token_types: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (batch, len) = ids.dims2()?;
        let positions = Tensor::arange(0u32, len as u32, ids.device())?;
        let mut xs = self
            .word_embeddings
            .forward(ids)?
            .add(&self.token_type_embeddings.forward(token_types)?)?
            .broadcast_add(&self.position_embeddings.forward(&positions)?)?;
        xs = self.embeddings_norm.forward(&xs)?;
        // Padding gets the most negative f32 before the softmax, as in candle-transformers.
        let mask = mask.to_dtype(DType::F32)?.reshape((batch, 1, 1, len))?;
        let bias = ((1.0 - mask)? * f64::from(f32::MIN))?;
        let scale = 1.0 / (self.head_size as f64).sqrt();
        for layer in &self.layers {
            let heads = |t: Tensor| -> Result<Tensor> {
                t.reshape((batch, len, self.heads, self.head_size))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let q = heads(layer.query.forward(&xs)?)?;
            let k = heads(layer.key.forward(&xs)?)?;
            let v = heads(layer.value.forward(&xs)?)?;
            let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&bias)?;
            let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
            let context = probs.matmul(&v)?.transpose(1, 2)?.contiguous()?.reshape((
                batch,
                len,
                self.heads * self.head_size,
            ))?;
            let attended = layer
                .attention_norm
                .forward(&(layer.attention_output.forward(&context)? + &xs)?)?;
            let inner = layer.intermediate.forward(&attended)?.gelu_erf()?;
            xs = layer
                .output_norm
                .forward(&(layer.output.forward(&inner)? + &attended)?)?;
        }
        Ok(xs)
    }
}
