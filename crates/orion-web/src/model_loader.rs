//! Model files for the embedder: fetched with progress, verified, cached in Cache Storage.
//!
//! A file is taken from the cache when present; otherwise it is fetched, checked (HTTP status, not
//! an HTML page, as many bytes as announced) and, only once the model built from it has loaded,
//! stored in the cache. So a bad download is never cached, and a second start works offline.

use std::rc::Rc;

use js_sys::{Function, Reflect, Uint8Array};
use orion_core::embedding::{Embedder, LocalBoxFuture};
use orion_core::profile::Profile;
use orion_core::protocol::{Event, Outgoing};
use orion_core::runtime::{EmbedderLoader, Heartbeat};
use orion_core::{Error, PROTOCOL_VERSION};
use orion_embed::{MiniLm, ModelFiles, Precision};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Cache, ReadableStreamDefaultReader, Response, WorkerGlobalScope};

use crate::post;

/// The Cache Storage cache that holds model files. Bump the suffix when the layout changes.
pub const MODEL_CACHE: &str = "orion-models-v1";

/// The files of all-MiniLM-L6-v2 under the model's base URL.
const MINILM_FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

/// Progress is reported at most every this many bytes per file.
const PROGRESS_STEP: u64 = 1 << 20;

/// Loads MiniLM from the host's URLs, reporting progress through `post`.
pub struct WebModelLoader {
    post: Function,
}

impl WebModelLoader {
    /// A loader that posts progress events through `post`.
    pub fn new(post: Function) -> Self {
        Self { post }
    }
}

impl EmbedderLoader for WebModelLoader {
    fn load(
        &self,
        profile: Profile,
        base_url: &str,
        heartbeat: Heartbeat,
    ) -> LocalBoxFuture<'static, orion_core::error::Result<Rc<dyn Embedder>>> {
        let progress = Progress {
            post: self.post.clone(),
            heartbeat,
        };
        let base = base_url.trim_end_matches('/').to_owned();
        let precision = match profile {
            Profile::Lite => Precision::Q8_0,
            Profile::Full | Profile::Micro => Precision::F32,
        };
        Box::pin(async move {
            let cache = open_cache().await;
            let mut files = Vec::with_capacity(MINILM_FILES.len());
            for name in MINILM_FILES {
                let url = format!("{base}/{name}");
                let (bytes, from_network) =
                    fetch_file(&url, name, cache.as_ref(), &progress).await?;
                files.push((url, bytes, from_network));
            }
            let model = MiniLm::load(
                ModelFiles {
                    config: &files[0].1,
                    tokenizer: &files[1].1,
                    weights: &files[2].1,
                },
                precision,
            )
            .map_err(|error| match error {
                Error::ModelLoad {
                    source_name,
                    reason,
                } => Error::ModelLoad {
                    source_name: format!("{base}/{source_name}"),
                    reason,
                },
                other => other,
            })?;
            if let Some(cache) = &cache {
                for (url, bytes, from_network) in &files {
                    if *from_network {
                        store(cache, url, bytes).await;
                    }
                }
            }
            Ok(Rc::new(model) as Rc<dyn Embedder>)
        })
    }
}

async fn open_cache() -> Option<Cache> {
    let scope: WorkerGlobalScope = js_sys::global().dyn_into().ok()?;
    // Cache Storage is missing on insecure origins: then every start downloads again.
    let caches = scope.caches().ok()?;
    JsFuture::from(caches.open(MODEL_CACHE))
        .await
        .ok()?
        .dyn_into()
        .ok()
}

async fn store(cache: &Cache, url: &str, bytes: &[u8]) {
    let body = Uint8Array::from(bytes);
    let Ok(response) = Response::new_with_opt_buffer_source(Some(&body)) else {
        return;
    };
    // A failed put (quota) only costs the next start a download.
    let _ = JsFuture::from(cache.put_with_str(url, &response)).await;
}

/// The bytes of `url`, from the cache or the network, and whether they came from the network.
async fn fetch_file(
    url: &str,
    name: &str,
    cache: Option<&Cache>,
    progress: &Progress,
) -> orion_core::error::Result<(Vec<u8>, bool)> {
    if let Some(cache) = cache {
        if let Ok(hit) = JsFuture::from(cache.match_with_str(url)).await {
            if let Ok(response) = hit.dyn_into::<Response>() {
                let bytes = read_body(url, name, &response, None, progress, true).await?;
                return Ok((bytes, false));
            }
        }
    }
    let load_error = |reason: String| Error::model_load(url, reason);
    let scope: WorkerGlobalScope = js_sys::global()
        .dyn_into()
        .map_err(|_| load_error("not running in a worker".into()))?;
    let response = JsFuture::from(scope.fetch_with_str(url))
        .await
        .map_err(|e| load_error(format!("the request failed: {}", describe(&e))))?;
    let response: Response = response
        .dyn_into()
        .map_err(|_| load_error("fetch did not return a Response".into()))?;
    if !response.ok() {
        return Err(load_error(format!("HTTP {}", response.status())));
    }
    let headers = response.headers();
    let header = |name: &str| headers.get(name).ok().flatten();
    if header("content-type").is_some_and(|t| t.trim_start().starts_with("text/html")) {
        return Err(load_error(
            "the server sent an HTML page, not the model file".into(),
        ));
    }
    // With a content encoding, Content-Length counts compressed bytes: not comparable.
    let total = match header("content-encoding") {
        Some(_) => None,
        None => header("content-length").and_then(|l| l.trim().parse::<u64>().ok()),
    };
    let bytes = read_body(url, name, &response, total, progress, false).await?;
    if let Some(total) = total {
        if bytes.len() as u64 != total {
            return Err(load_error(format!(
                "truncated: received {} of {total} bytes",
                bytes.len()
            )));
        }
    }
    Ok((bytes, true))
}

async fn read_body(
    url: &str,
    name: &str,
    response: &Response,
    total: Option<u64>,
    progress: &Progress,
    cached: bool,
) -> orion_core::error::Result<Vec<u8>> {
    let load_error = |reason: String| Error::model_load(url, reason);
    let Some(body) = response.body() else {
        return Ok(Vec::new());
    };
    let reader: ReadableStreamDefaultReader = body
        .get_reader()
        .dyn_into()
        .map_err(|_| load_error("the response body cannot be read".into()))?;
    let mut bytes = Vec::with_capacity(total.unwrap_or(0).min(1 << 30) as usize);
    let mut reported = 0u64;
    loop {
        let chunk = JsFuture::from(reader.read())
            .await
            .map_err(|e| load_error(format!("the download broke off: {}", describe(&e))))?;
        let done = Reflect::get(&chunk, &"done".into())
            .ok()
            .and_then(|d| d.as_bool())
            .unwrap_or(true);
        if done {
            break;
        }
        if let Ok(value) = Reflect::get(&chunk, &"value".into()) {
            if let Some(array) = value.dyn_ref::<Uint8Array>() {
                let start = bytes.len();
                bytes.resize(start + array.length() as usize, 0);
                array.copy_to(&mut bytes[start..]);
            }
        }
        let loaded = bytes.len() as u64;
        if loaded - reported >= PROGRESS_STEP {
            reported = loaded;
            progress.report(name, loaded, total, cached);
        }
    }
    let loaded = bytes.len() as u64;
    progress.report(name, loaded, total.or(Some(loaded)), cached);
    Ok(bytes)
}

/// Reports download progress to the page and keeps the embedder's heartbeat going.
struct Progress {
    post: Function,
    heartbeat: Heartbeat,
}

impl Progress {
    fn report(&self, file: &str, loaded: u64, total: Option<u64>, cached: bool) {
        (self.heartbeat)();
        post(
            &self.post,
            &Outgoing::Event {
                v: PROTOCOL_VERSION,
                event: Event::ModelProgress {
                    file: file.to_owned(),
                    loaded,
                    total,
                    cached,
                },
            },
        );
    }
}

fn describe(error: &JsValue) -> String {
    error
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| error.as_string())
        .unwrap_or_else(|| format!("{error:?}"))
}
