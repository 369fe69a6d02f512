//! [`LocalGenerator`]: the [`Generator`] over a GGUF llama model in this worker.
//!
//! Generation is a loop of forward passes; between two passes the generator awaits the yield
//! function it was given, so the worker's event loop runs (cancellations arrive, other requests
//! are answered) and a long answer streams instead of blocking.

use std::cell::RefCell;
use std::collections::VecDeque;

use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use orion_core::embedding::LocalBoxFuture;
use orion_core::generation::{
    FinishReason, GenerateRequest, Generated, GenerationSink, Generator, GeneratorInfo, StopStrings,
};
use orion_core::{Error, SharedClock};

use crate::chat_template::{ChatTemplate, Message};
use crate::gguf::Gguf;
use crate::llama::{Llama, Sequence, Step, WeightFormat};
use crate::tokenizer::ModelTokenizer;

/// How the model is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// The weights' format in memory.
    pub format: WeightFormat,
    /// The longest sequence (prompt and answer) served; at most the model's own context.
    pub max_context: usize,
    /// Conversations whose cache is kept for their next turn (least recently used dropped).
    pub cached_conversations: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            format: WeightFormat::AsStored,
            max_context: 2048,
            cached_conversations: 4,
        }
    }
}

/// Awaited between forward passes: lets the host's event loop run.
pub type Yield = Box<dyn Fn() -> LocalBoxFuture<'static, ()>>;

/// A loaded model: weights, tokenizer and chat template.
pub struct LocalModel {
    llama: Llama,
    tokenizer: ModelTokenizer,
    template: ChatTemplate,
    name: String,
    max_context: usize,
}

impl LocalModel {
    /// Parses and loads the GGUF file in `bytes`. Any problem with the file is
    /// [`Error::ModelLoad`] naming `source_name`.
    pub fn load(bytes: &[u8], source_name: &str, options: &LoadOptions) -> Result<Self, Error> {
        let gguf = Gguf::parse(bytes, source_name)?;
        let tokenizer = ModelTokenizer::from_gguf(&gguf)?;
        let template = ChatTemplate::new(gguf.string("tokenizer.chat_template")?, source_name)?;
        let llama = Llama::load(&gguf, options.format, options.max_context)?;
        if llama.config().vocab < tokenizer.vocab_size() {
            return Err(gguf.error(format!(
                "the tokenizer has {} tokens but the model only {}",
                tokenizer.vocab_size(),
                llama.config().vocab
            )));
        }
        let name = gguf
            .optional("general.name")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_else(|| source_name.rsplit('/').next().unwrap_or(source_name).into());
        Ok(Self {
            max_context: llama.config().context_length,
            llama,
            tokenizer,
            template,
            name,
        })
    }

    /// The model's name from its metadata.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &ModelTokenizer {
        &self.tokenizer
    }

    /// The chat template.
    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    /// The transformer.
    pub fn llama(&self) -> &Llama {
        &self.llama
    }

    /// The conversation of `request` as chat messages.
    pub fn messages(request: &GenerateRequest) -> Vec<Message> {
        let mut messages = Vec::with_capacity(request.history.len() + 2);
        if let Some(system) = &request.system {
            messages.push(Message::new("system", system));
        }
        messages.extend(
            request
                .history
                .iter()
                .map(|t| Message::new(&t.role, &t.content)),
        );
        messages.push(Message::new("user", &request.prompt));
        messages
    }

    /// The prompt of `request` as token ids, ending with the assistant's cue.
    pub fn prompt_ids(&self, request: &GenerateRequest) -> Result<Vec<u32>, Error> {
        self.template
            .encode(&self.tokenizer, &Self::messages(request), true)
    }
}

/// One generation in progress.
pub struct Decoding {
    sequence: Sequence,
    /// Tokens read into `sequence`, in order.
    read: Vec<u32>,
    /// Tokens to read on the next forward pass.
    pending: Vec<u32>,
    generated: Vec<u32>,
    /// The answer's text, cut at a stop string.
    text: StopStrings,
    sampler: LogitsProcessor,
    repetition_penalty: f32,
    max_tokens: usize,
    finish: Option<FinishReason>,
    prompt_tokens: usize,
    cached_tokens: usize,
    conversation: Option<String>,
    started_ms: u64,
    prefill_ms: Option<u64>,
    finished_ms: u64,
}

impl Decoding {
    /// Whether generation has ended.
    pub fn finished(&self) -> bool {
        self.finish.is_some()
    }

    /// The tokens generated so far.
    pub fn generated(&self) -> &[u32] {
        &self.generated
    }

    fn result(&self) -> Generated {
        let prefill = self.prefill_ms.unwrap_or(self.finished_ms);
        Generated {
            text: self.text.text().to_owned(),
            finish: self.finish.unwrap_or(FinishReason::Cancelled),
            prompt_tokens: self.prompt_tokens as u32,
            cached_tokens: self.cached_tokens as u32,
            tokens: self.generated.len() as u32,
            prefill_ms: prefill.saturating_sub(self.started_ms) as f64,
            decode_ms: self.finished_ms.saturating_sub(prefill) as f64,
        }
    }
}

/// Caches of recent conversations, most recent last.
struct Conversations {
    entries: VecDeque<(String, Vec<u32>, Sequence)>,
    capacity: usize,
}

impl Conversations {
    fn take(&mut self, id: &str) -> Option<(Vec<u32>, Sequence)> {
        let at = self.entries.iter().position(|(key, _, _)| key == id)?;
        self.entries.remove(at).map(|(_, read, seq)| (read, seq))
    }

    fn put(&mut self, id: String, read: Vec<u32>, sequence: Sequence) {
        if self.capacity == 0 {
            return;
        }
        while self.entries.len() >= self.capacity {
            self.entries.pop_front();
        }
        self.entries.push_back((id, read, sequence));
    }
}

/// The local [`Generator`].
pub struct LocalGenerator {
    model: LocalModel,
    conversations: RefCell<Conversations>,
    clock: SharedClock,
    yield_now: Yield,
}

impl LocalGenerator {
    /// A generator over `model`; `yield_now` is awaited between forward passes.
    pub fn new(
        model: LocalModel,
        options: &LoadOptions,
        clock: SharedClock,
        yield_now: Yield,
    ) -> Self {
        Self {
            model,
            conversations: RefCell::new(Conversations {
                entries: VecDeque::new(),
                capacity: options.cached_conversations,
            }),
            clock,
            yield_now,
        }
    }

    /// The model.
    pub fn model(&self) -> &LocalModel {
        &self.model
    }

    /// Prepares `request` (validated): its prompt ids, and the conversation's cache when the
    /// prompt extends what that cache read.
    pub fn start(&self, request: &GenerateRequest) -> Result<Decoding, Error> {
        request.validate()?;
        let prompt = self.model.prompt_ids(request)?;
        let budget = prompt.len() + request.max_tokens as usize;
        if budget > self.model.max_context {
            return Err(Error::invalid_input(
                "prompt",
                format!(
                    "{} prompt tokens and maxTokens {} exceed the context of {} tokens",
                    prompt.len(),
                    request.max_tokens,
                    self.model.max_context
                ),
            ));
        }
        let cached = request
            .conversation_id
            .as_deref()
            .and_then(|id| self.conversations.borrow_mut().take(id));
        let (mut read, mut sequence) =
            cached.unwrap_or_else(|| (Vec::new(), self.model.llama.sequence()));
        // At least the last prompt token must be read again: its logits pick the first token.
        let shared = read
            .iter()
            .zip(&prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len() - 1);
        sequence.truncate(shared);
        read.truncate(shared);
        let sampling = match (request.temperature, request.top_k, request.top_p) {
            (0.0, _, _) => Sampling::ArgMax,
            (_, Some(1), _) => Sampling::ArgMax,
            (t, None, None) => Sampling::All {
                temperature: t.into(),
            },
            (t, Some(k), None) => Sampling::TopK {
                k: k as usize,
                temperature: t.into(),
            },
            (t, None, Some(p)) => Sampling::TopP {
                p: p.into(),
                temperature: t.into(),
            },
            (t, Some(k), Some(p)) => Sampling::TopKThenTopP {
                k: k as usize,
                p: p.into(),
                temperature: t.into(),
            },
        };
        let now = self.clock.now_ms();
        Ok(Decoding {
            sequence,
            pending: prompt[shared..].to_vec(),
            read,
            generated: Vec::new(),
            text: StopStrings::new(&request.stop),
            sampler: LogitsProcessor::from_sampling(request.seed, sampling),
            repetition_penalty: request.repetition_penalty,
            max_tokens: request.max_tokens as usize,
            finish: None,
            prompt_tokens: prompt.len(),
            cached_tokens: shared,
            conversation: request.conversation_id.clone(),
            started_ms: now,
            prefill_ms: None,
            finished_ms: now,
        })
    }

    /// One forward pass over every unfinished decoding: reads what each has pending and picks
    /// its next token. New text goes to `sink` under the decoding's index.
    pub fn step(&self, decodings: &mut [Decoding], sink: &dyn GenerationSink) -> Result<(), Error> {
        let mut active: Vec<(usize, &mut Decoding)> = decodings
            .iter_mut()
            .enumerate()
            .filter(|(_, d)| d.finish.is_none())
            .collect();
        if active.is_empty() {
            return Ok(());
        }
        let pending: Vec<Vec<u32>> = active
            .iter_mut()
            .map(|(_, d)| std::mem::take(&mut d.pending))
            .collect();
        let mut steps: Vec<Step<'_>> = active
            .iter_mut()
            .zip(&pending)
            .map(|((_, d), tokens)| Step {
                tokens,
                sequence: &mut d.sequence,
            })
            .collect();
        let logits = self.model.llama.forward(&mut steps)?;
        drop(steps);
        let now = self.clock.now_ms();
        for (((index, decoding), logits), read) in active.into_iter().zip(logits).zip(pending) {
            decoding.read.extend(read);
            decoding.prefill_ms.get_or_insert(now);
            decoding.finished_ms = now;
            let token = self.sample(decoding, logits)?;
            self.accept(index, decoding, token, sink)?;
        }
        Ok(())
    }

    fn sample(&self, decoding: &mut Decoding, logits: Vec<f32>) -> Result<u32, Error> {
        let fail = |e: candle_core::Error| Error::Generation(format!("sampling failed: {e}"));
        let mut logits = Tensor::new(logits.as_slice(), &Device::Cpu).map_err(fail)?;
        if decoding.repetition_penalty != 1.0 && !decoding.generated.is_empty() {
            logits = candle_transformers::utils::apply_repeat_penalty(
                &logits,
                decoding.repetition_penalty,
                &decoding.generated,
            )
            .map_err(fail)?;
        }
        decoding.sampler.sample(&logits).map_err(fail)
    }

    fn accept(
        &self,
        index: usize,
        decoding: &mut Decoding,
        token: u32,
        sink: &dyn GenerationSink,
    ) -> Result<(), Error> {
        let tokenizer = &self.model.tokenizer;
        // Control tokens never belong to the answer: `<|im_end|>`, `<|endoftext|>` and the
        // like end the turn.
        let ended = if token == tokenizer.eos() || tokenizer.is_special(token) {
            Some(FinishReason::EndOfTurn)
        } else {
            decoding.generated.push(token);
            let text = tokenizer.decode(&decoding.generated)?;
            // Wait while the last token ends inside a character.
            if !text.ends_with('\u{FFFD}') {
                if let Some(piece) = decoding.text.set(text) {
                    sink.text(index, &piece);
                }
            }
            if decoding.text.stopped() {
                Some(FinishReason::Stop)
            } else if decoding.generated.len() >= decoding.max_tokens {
                Some(FinishReason::Length)
            } else {
                None
            }
        };
        match ended {
            Some(reason) => self.end(index, decoding, reason, sink),
            None => decoding.pending = vec![token],
        }
        Ok(())
    }

    /// Ends `decoding` for `reason`, streaming what was held back.
    fn end(
        &self,
        index: usize,
        decoding: &mut Decoding,
        reason: FinishReason,
        sink: &dyn GenerationSink,
    ) {
        decoding.finish = Some(reason);
        if let Some(piece) = decoding.text.finish() {
            sink.text(index, &piece);
        }
        self.finish(decoding);
    }

    /// Ends `decoding` and keeps its cache for the conversation's next turn.
    fn finish(&self, decoding: &mut Decoding) {
        decoding.finished_ms = self.clock.now_ms();
        if let Some(id) = decoding.conversation.take() {
            let sequence = std::mem::replace(&mut decoding.sequence, self.model.llama.sequence());
            let read = std::mem::take(&mut decoding.read);
            self.conversations.borrow_mut().put(id, read, sequence);
        }
    }

    /// Runs `decodings` to the end together, yielding between passes and honouring
    /// cancellation.
    async fn run(
        &self,
        decodings: &mut [Decoding],
        sink: &dyn GenerationSink,
    ) -> Result<(), Error> {
        loop {
            for (index, decoding) in decodings.iter_mut().enumerate() {
                if decoding.finish.is_none() && sink.cancelled(index) {
                    decoding.finish = Some(FinishReason::Cancelled);
                    self.finish(decoding);
                }
            }
            if decodings.iter().all(Decoding::finished) {
                return Ok(());
            }
            self.step(decodings, sink)?;
            (self.yield_now)().await;
        }
    }
}

impl Generator for LocalGenerator {
    fn info(&self) -> GeneratorInfo {
        GeneratorInfo {
            kind: orion_core::generation::LOCAL_KIND.into(),
            model: self.model.name.clone(),
        }
    }

    fn generate<'a>(
        &'a self,
        request: &'a GenerateRequest,
        sink: &'a dyn GenerationSink,
    ) -> LocalBoxFuture<'a, Result<Generated, Error>> {
        Box::pin(async move {
            let mut decodings = [self.start(request)?];
            self.run(&mut decodings, sink).await?;
            let [decoding] = decodings;
            Ok(decoding.result())
        })
    }

    fn generate_many<'a>(
        &'a self,
        requests: &'a [GenerateRequest],
        sink: &'a dyn GenerationSink,
    ) -> LocalBoxFuture<'a, Vec<Result<Generated, Error>>> {
        Box::pin(async move {
            let mut results: Vec<Option<Result<Generated, Error>>> =
                Vec::with_capacity(requests.len());
            let mut decodings = Vec::new();
            let mut slots = Vec::new();
            for (i, request) in requests.iter().enumerate() {
                match self.start(request) {
                    Ok(decoding) => {
                        decodings.push(decoding);
                        slots.push(i);
                        results.push(None);
                    }
                    Err(e) => results.push(Some(Err(e))),
                }
            }
            let batch_sink = Remapped {
                sink,
                slots: &slots,
            };
            let outcome = self.run(&mut decodings, &batch_sink).await;
            for (decoding, &slot) in decodings.iter().zip(&slots) {
                if let Some(entry) = results.get_mut(slot) {
                    *entry = Some(match &outcome {
                        Ok(()) => Ok(decoding.result()),
                        Err(e) => Err(e.clone()),
                    });
                }
            }
            results
                .into_iter()
                .map(|r| r.unwrap_or_else(|| Err(Error::Internal("a batch slot was lost".into()))))
                .collect()
        })
    }
}

/// Reports a batch's events under the requests' own indices.
struct Remapped<'a> {
    sink: &'a dyn GenerationSink,
    slots: &'a [usize],
}

impl GenerationSink for Remapped<'_> {
    fn text(&self, index: usize, text: &str) {
        if let Some(&slot) = self.slots.get(index) {
            self.sink.text(slot, text);
        }
    }

    fn cancelled(&self, index: usize) -> bool {
        self.slots
            .get(index)
            .is_some_and(|&slot| self.sink.cancelled(slot))
    }
}
