//! The local LLM: its GGUF file fetched, verified and cached like the embedder's files
//! (`model_loader`), then loaded by `orion-llm` into a [`LocalGenerator`] that yields to the
//! worker's event loop between forward passes (so `llm_cancel` and other requests are handled
//! mid-generation).

use std::rc::Rc;

use js_sys::{Function, Promise};
use orion_core::embedding::LocalBoxFuture;
use orion_core::runtime::{GeneratorLoader, Heartbeat};
use orion_core::{Error, Generator, LlmSettings, LlmSource, LlmWeights};
use orion_llm::{LoadOptions, LocalGenerator, LocalModel, WeightFormat, Yield};
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;
use web_sys::MessageChannel;

use crate::clock::WebClock;
use crate::headroom;
use crate::model_loader::{cache_files, fetch_files, open_cache, FileSpec, Progress};

/// Loads the local LLM from the host's URL, reporting progress through `post`.
pub struct WebGeneratorLoader {
    post: Function,
}

impl WebGeneratorLoader {
    /// A loader that posts `model_progress` events through `post`.
    pub fn new(post: Function) -> Self {
        Self { post }
    }
}

impl GeneratorLoader for WebGeneratorLoader {
    fn load(
        &self,
        source: &LlmSource,
        settings: &LlmSettings,
        heartbeat: Heartbeat,
    ) -> LocalBoxFuture<'static, orion_core::error::Result<Rc<dyn Generator>>> {
        let progress = Progress::new(self.post.clone(), heartbeat);
        let spec = FileSpec {
            name: source.file_name().to_owned(),
            url: source.url.clone(),
            sha256: source.sha256,
        };
        let defaults = LoadOptions::default();
        let options = LoadOptions {
            format: match settings.weights {
                LlmWeights::Q8_0 => WeightFormat::Q8_0,
                LlmWeights::AsStored => WeightFormat::AsStored,
            },
            max_context: settings
                .max_context
                .map_or(defaults.max_context, |max| max as usize),
            ..defaults
        };
        Box::pin(async move {
            let cache = open_cache().await;
            let files = fetch_files(std::slice::from_ref(&spec), cache.as_ref(), &progress).await?;
            let [file] = &files[..] else {
                return Err(Error::Internal("expected one GGUF file".into()));
            };
            let bytes = file.bytes.as_slice();
            // The file stays in memory while the weights are built from it (Q8_0 takes about 1.7
            // times a Q4_1 file), plus the caches and activations of a generation.
            headroom::ensure(bytes.len().saturating_mul(2) + headroom::WORKING_MEMORY)
                .map_err(|reason| Error::model_load(&spec.url, reason))?;
            let model = LocalModel::load(bytes, &spec.url, &options)?;
            cache_files(cache.as_ref(), &files).await;
            drop(files);
            let generator = LocalGenerator::new(model, &options, WebClock::shared(), yield_now());
            Ok(Rc::new(generator) as Rc<dyn Generator>)
        })
    }
}

/// Yields to the event loop through a `MessageChannel` message: unlike `setTimeout(0)`, it is not
/// clamped to 4 ms when nested, and it lets queued messages from the page run first.
fn yield_now() -> Yield {
    Box::new(|| {
        Box::pin(async {
            if message_channel_turn().await.is_err() {
                gloo_timers::future::TimeoutFuture::new(0).await;
            }
        })
    })
}

async fn message_channel_turn() -> Result<(), JsValue> {
    let channel = MessageChannel::new()?;
    let port = channel.port1();
    let turn = Promise::new(&mut |resolve, _reject| port.set_onmessage(Some(&resolve)));
    channel.port2().post_message(&JsValue::UNDEFINED)?;
    JsFuture::from(turn).await?;
    port.set_onmessage(None);
    port.close();
    channel.port2().close();
    Ok(())
}
