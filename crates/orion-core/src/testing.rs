//! Test helpers shared by the crate's test modules: embedders, a tool context and the plumbing of
//! scripted generators.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::task::{Poll, Waker};

use chrono_tz::Tz;

use crate::clock::{Clock, ManualClock};
use crate::embedding::{normalize, Embedder, EmbeddingModelInfo, LocalBoxFuture};
use crate::error::Result;
use crate::generation::{GenerateRequest, Generated, GenerationSink, Generator, GeneratorInfo};
use crate::tools::{Tool, ToolContext};

/// Bag of words (lowercased, split on anything not alphanumeric, empty words dropped) hashed into
/// `dims` dimensions, L2-normalised: texts sharing words are similar. Counts its calls and logs
/// every text it embeds.
pub(crate) struct WordsEmbedder {
    info: EmbeddingModelInfo,
    calls: Cell<usize>,
    embedded: RefCell<Vec<String>>,
}

impl WordsEmbedder {
    /// Id `words`, `version`, `dims` dimensions (at least 2).
    pub(crate) fn new(version: &str, dims: usize) -> Self {
        assert!(dims >= 2, "a words embedder needs at least 2 dimensions");
        Self {
            info: EmbeddingModelInfo {
                id: "words".into(),
                version: version.into(),
                dims,
            },
            calls: Cell::new(0),
            embedded: RefCell::new(Vec::new()),
        }
    }

    /// The vector of `text`, without counting or logging it.
    pub(crate) fn vector(&self, text: &str) -> Vec<f32> {
        let dims = self.info.dims;
        let mut v = vec![0.0f32; dims];
        for word in text.split(|c: char| !c.is_alphanumeric()) {
            if word.is_empty() {
                continue;
            }
            let h = word.to_lowercase().bytes().fold(0x811c_9dc5u32, |h, b| {
                (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
            });
            v[(h % (dims as u32 - 1)) as usize] += 1.0;
        }
        // Any text, the empty one included, is a unit vector.
        v[dims - 1] += 0.01;
        normalize(&mut v);
        v
    }

    /// How many times `embed` was called (a batch is one call).
    pub(crate) fn calls(&self) -> usize {
        self.calls.get()
    }

    /// How many times `text` was embedded.
    pub(crate) fn times_embedded(&self, text: &str) -> usize {
        self.embedded.borrow().iter().filter(|t| *t == text).count()
    }
}

impl Embedder for WordsEmbedder {
    fn info(&self) -> &EmbeddingModelInfo {
        &self.info
    }

    fn embed<'a>(&'a self, texts: &'a [&'a str]) -> LocalBoxFuture<'a, Result<Vec<Vec<f32>>>> {
        self.calls.set(self.calls.get() + 1);
        self.embedded
            .borrow_mut()
            .extend(texts.iter().map(|t| (*t).to_owned()));
        Box::pin(async move { Ok(texts.iter().map(|t| self.vector(t)).collect()) })
    }
}

/// An embedder for contexts that never embed: one dimension, every vector `[1.0]`.
pub(crate) struct NoEmbedder(EmbeddingModelInfo);

impl Default for NoEmbedder {
    fn default() -> Self {
        Self(EmbeddingModelInfo {
            id: "none".into(),
            version: "none".into(),
            dims: 1,
        })
    }
}

impl Embedder for NoEmbedder {
    fn info(&self) -> &EmbeddingModelInfo {
        &self.0
    }

    fn embed<'a>(&'a self, texts: &'a [&'a str]) -> LocalBoxFuture<'a, Result<Vec<Vec<f32>>>> {
        Box::pin(async move { Ok(texts.iter().map(|_| vec![1.0]).collect()) })
    }
}

/// A tool context at `now_ms` in `time_zone`, with no memories and a [`NoEmbedder`]; a test that
/// needs more sets those fields (`ToolContext { memories, ..tool_context(0, Tz::UTC) }`).
pub(crate) fn tool_context(now_ms: u64, time_zone: Tz) -> ToolContext {
    ToolContext {
        now_ms,
        time_zone,
        memories: None,
        embedder: Rc::new(NoEmbedder::default()),
    }
}

/// What a scripted test generator reports about itself.
pub(crate) fn scripted_info() -> GeneratorInfo {
    GeneratorInfo {
        kind: crate::generation::LOCAL_KIND.into(),
        model: "scripted".into(),
    }
}

/// A scripted generator that answers requests one at a time: `generate` is request 0, and
/// `generate_many` answers request `i` as index `i`, in order, each after the one before.
pub(crate) trait AnswersInOrder {
    fn answer<'a>(
        &'a self,
        request: &'a GenerateRequest,
        index: usize,
        sink: &'a dyn GenerationSink,
    ) -> LocalBoxFuture<'a, Result<Generated>>;
}

impl<T: AnswersInOrder> Generator for T {
    fn info(&self) -> GeneratorInfo {
        scripted_info()
    }

    fn generate<'a>(
        &'a self,
        request: &'a GenerateRequest,
        sink: &'a dyn GenerationSink,
    ) -> LocalBoxFuture<'a, Result<Generated>> {
        self.answer(request, 0, sink)
    }

    fn generate_many<'a>(
        &'a self,
        requests: &'a [GenerateRequest],
        sink: &'a dyn GenerationSink,
    ) -> LocalBoxFuture<'a, Vec<Result<Generated>>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(requests.len());
            for (index, request) in requests.iter().enumerate() {
                out.push(self.answer(request, index, sink).await);
            }
            out
        })
    }
}

/// Queries no built-in tool answers: chat, facts, memories.
pub(crate) const CHAT_QUERIES: &[&str] = &[
    "What is the capital of France?",
    "Tell me a story about 3 dragons",
    "Who wrote Hamlet?",
    "I have 2 cats",
    "What is love?",
    "Remember that my meeting is at 3pm",
    "What time do I usually wake up?",
    "version 2.0 release notes",
    "Explain quantum computing in 5 sentences",
];

/// A built-in tool's spec is complete: named `name`, 6 to 10 examples, each of which the tool's
/// own intent reads.
pub(crate) fn assert_spec_complete(tool: &dyn Tool, name: &str) {
    let spec = tool.spec();
    assert_eq!(spec.name, name);
    assert!((6..=10).contains(&spec.examples.len()));
    for example in &spec.examples {
        assert!(tool.intent(example).is_some(), "{example}");
    }
}

/// Timers on a [`ManualClock`]: a sleep ends once the clock has passed its due time and
/// [`ManualTimers::fire`] ran (as a platform timer would fire).
#[derive(Default)]
pub(crate) struct ManualTimers {
    waiting: RefCell<Vec<Waker>>,
}

impl ManualTimers {
    /// A sleep of `ms` on `clock`, from now.
    pub(crate) fn sleep(
        self: &Rc<Self>,
        clock: &ManualClock,
        ms: u64,
    ) -> LocalBoxFuture<'static, ()> {
        let due = clock.now_ms().saturating_add(ms);
        let clock = clock.clone();
        let timers = Rc::clone(self);
        Box::pin(std::future::poll_fn(move |cx| {
            if clock.now_ms() >= due {
                Poll::Ready(())
            } else {
                timers.waiting.borrow_mut().push(cx.waker().clone());
                Poll::Pending
            }
        }))
    }

    /// Wakes every sleep, so that those now due end.
    pub(crate) fn fire(&self) {
        for waker in self.waiting.take() {
            waker.wake();
        }
    }
}

/// Spawns `future` on `pool`; its output lands in the returned slot once it finishes.
pub(crate) fn spawn_into_slot<T: 'static>(
    pool: &futures_executor::LocalPool,
    future: impl std::future::Future<Output = T> + 'static,
) -> Rc<RefCell<Option<T>>> {
    use futures_util::task::LocalSpawnExt;
    let slot = Rc::new(RefCell::new(None));
    let out = Rc::clone(&slot);
    pool.spawner()
        .spawn_local(async move {
            *out.borrow_mut() = Some(future.await);
        })
        .expect("the executor is alive");
    slot
}
