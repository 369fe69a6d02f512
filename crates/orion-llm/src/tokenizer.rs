//! The model's tokenizer, built with the `tokenizers` crate from the GGUF metadata: the
//! vocabulary (`tokenizer.ggml.tokens`), the BPE merges, the token types (control tokens become
//! special tokens) and the pre-tokenizer named by `tokenizer.ggml.pre`.
//!
//! candle ships a GGUF tokenizer builder too, but only for native targets and without SmolLM's
//! pre-tokenizer (digits split one by one), so this one is ORION's.

use std::collections::HashMap;

use orion_core::Error;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::tokenizer::DecodeStream;
use tokenizers::{
    AddedToken, DecoderWrapper, ModelWrapper, NormalizerWrapper, PostProcessorWrapper,
    PreTokenizerWrapper, Tokenizer,
};

use crate::gguf::Gguf;

/// `tokenizer.ggml.token_type` of a control token (`<|im_start|>`, `<|endoftext|>`).
const CONTROL: i64 = 3;

/// A byte-level BPE tokenizer with the model's special tokens.
pub struct ModelTokenizer {
    inner: Tokenizer,
    /// Control tokens by text, for the chat template's special parts.
    specials: HashMap<String, u32>,
    eos: u32,
    bos: Option<u32>,
}

impl ModelTokenizer {
    /// Builds the tokenizer from the metadata of `gguf`.
    pub fn from_gguf(gguf: &Gguf<'_>) -> Result<Self, Error> {
        let model = gguf.string("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(gguf.error(format!(
                "tokenizer model `{model}` is not supported (only byte-level BPE, `gpt2`)"
            )));
        }
        let tokens = gguf.strings("tokenizer.ggml.tokens")?;
        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(id, token)| (token.to_string(), id as u32))
            .collect();
        let merges = gguf
            .strings("tokenizer.ggml.merges")?
            .into_iter()
            .enumerate()
            .map(|(i, merge)| {
                merge
                    .split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| {
                        gguf.error(format!("`tokenizer.ggml.merges[{i}]` is not a pair"))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| gguf.error(format!("the BPE vocabulary is inconsistent: {e}")))?;
        let mut inner = Tokenizer::new(bpe);
        let pre = gguf
            .optional("tokenizer.ggml.pre")
            .and_then(|v| v.to_string().ok())
            .map_or("gpt2", String::as_str);
        // Both as llama.cpp and the models' own tokenizer.json do it: GPT-2's byte-level split,
        // and for SmolLM each digit on its own first.
        let byte_level = ByteLevel::new(false, true, true);
        match pre {
            "smollm" => {
                inner.with_pre_tokenizer(Some(Sequence::new(vec![
                    Digits::new(true).into(),
                    byte_level.into(),
                ])));
            }
            "gpt2" | "default" => {
                inner.with_pre_tokenizer(Some(byte_level));
            }
            other => {
                return Err(gguf.error(format!("pre-tokenizer `{other}` is not supported")));
            }
        }
        inner.with_decoder(Some(ByteLevelDecoder::default()));

        let types = gguf.integers("tokenizer.ggml.token_type")?;
        if types.len() != tokens.len() {
            return Err(gguf.error(format!(
                "{} token types for {} tokens",
                types.len(),
                tokens.len()
            )));
        }
        let specials: HashMap<String, u32> = types
            .iter()
            .zip(&tokens)
            .enumerate()
            .filter(|(_, (&kind, _))| kind == CONTROL)
            .map(|(id, (_, token))| (token.to_string(), id as u32))
            .collect();
        inner
            .add_special_tokens(
                specials
                    .keys()
                    .map(|t| AddedToken::from(t.clone(), true))
                    .collect::<Vec<_>>(),
            )
            .map_err(|e| gguf.error(format!("the special tokens are unusable: {e}")))?;
        // Text is text: `<|im_end|>` typed by a user must not end their turn. Special tokens
        // enter a prompt only through `special_id`.
        inner.set_encode_special_tokens(true);

        let id = |key: &str| -> Result<Option<u32>, Error> {
            match gguf.optional(key) {
                None => Ok(None),
                Some(_) => {
                    let id = gguf.unsigned(key)?;
                    if id as usize >= tokens.len() {
                        return Err(gguf.error(format!("`{key}` {id} is not a token")));
                    }
                    Ok(Some(id as u32))
                }
            }
        };
        let eos = id("tokenizer.ggml.eos_token_id")?
            .ok_or_else(|| gguf.error("the metadata has no `tokenizer.ggml.eos_token_id`"))?;
        let add_bos = gguf
            .optional("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(false);
        let bos = if add_bos {
            id("tokenizer.ggml.bos_token_id")?
        } else {
            None
        };
        Ok(Self {
            inner,
            specials,
            eos,
            bos,
        })
    }

    /// The ids of `text`, read as plain text: special-token strings in it stay text.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, Error> {
        self.inner
            .encode_fast(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| Error::Internal(format!("tokenizing failed: {e}")))
    }

    /// The text of `ids`, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String, Error> {
        self.inner
            .decode(ids, true)
            .map_err(|e| Error::Internal(format!("detokenizing failed: {e}")))
    }

    /// The id of control token `text` (`<|im_start|>`), if the vocabulary has it.
    pub fn special_id(&self, text: &str) -> Option<u32> {
        self.specials.get(text).copied()
    }

    /// The first control-token string in `text`: its byte offset, length and id (the longest
    /// one where several start at the same place).
    pub fn find_special(&self, text: &str) -> Option<(usize, usize, u32)> {
        self.specials
            .iter()
            .filter_map(|(token, &id)| text.find(token.as_str()).map(|at| (at, token.len(), id)))
            .min_by_key(|&(at, len, _)| (at, std::cmp::Reverse(len)))
    }

    /// Whether `id` is a control token.
    pub fn is_special(&self, id: u32) -> bool {
        self.specials.values().any(|&s| s == id)
    }

    /// The end-of-sequence token.
    pub fn eos(&self) -> u32 {
        self.eos
    }

    /// The token to start every sequence with, when the model wants one.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// The number of tokens in the vocabulary, special ones included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Turns a stream of ids into text pieces that are always whole UTF-8.
    pub fn stream(&self) -> TextStream<'_> {
        TextStream(self.inner.decode_stream(true))
    }
}

/// Incremental detokenization: [`TextStream::push`] returns the text that the new token
/// completes. A token can end inside a UTF-8 character (byte-level BPE splits emoji); such bytes
/// are held back until the character is whole.
pub struct TextStream<'a>(
    DecodeStream<
        'a,
        ModelWrapper,
        NormalizerWrapper,
        PreTokenizerWrapper,
        PostProcessorWrapper,
        DecoderWrapper,
    >,
);

impl TextStream<'_> {
    /// Adds `id`; returns the new text, possibly empty.
    pub fn push(&mut self, id: u32) -> Result<String, Error> {
        self.0
            .step(id)
            .map(Option::unwrap_or_default)
            .map_err(|e| Error::Internal(format!("detokenizing failed: {e}")))
    }
}
