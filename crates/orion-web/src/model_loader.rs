//! Model files: fetched with progress, verified, cached in Cache Storage. The embedder's three
//! files are loaded here; the local LLM's GGUF goes through the same steps (`llm_loader`).
//!
//! A file is taken from the cache when present; otherwise it is fetched, checked (HTTP status, not
//! an HTML page, as many bytes as announced, the SHA-256 the host gave) and, only once the model
//! built from it has loaded, stored in the cache. So a bad download is never cached, and a second
//! start works offline. A cached file that no longer matches the host's SHA-256 is fetched again.
//! Files the page provided as bytes are verified the same way and never cached (the page has them).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use js_sys::{Function, Reflect, Uint8Array};
use orion_core::embedding::{Embedder, LocalBoxFuture};
use orion_core::model_source::Sha256;
use orion_core::profile::Profile;
use orion_core::protocol::{Event, Outgoing};
use orion_core::runtime::{EmbedderLoader, Heartbeat};
use orion_core::{Error, ModelFile, ModelLocation, ModelSource, PROTOCOL_VERSION};
use orion_embed::{MiniLm, ModelFiles, Precision};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    Cache, Headers, ReadableStreamDefaultReader, Response, ResponseInit, WorkerGlobalScope,
};

use crate::headroom;
use crate::post_message as post;
use crate::provided_files::ProvidedFiles;

/// The Cache Storage cache that holds model files. Bump the suffix when the layout changes.
pub const MODEL_CACHE: &str = "orion-models-v1";

/// Progress is reported at most every this many bytes per file.
const PROGRESS_STEP: u64 = 1 << 20;

/// The files the page provided as bytes, set when `init` carries them. Kept for the worker's life,
/// so that an `embed` asking for another profile can load it too.
pub type ProvidedSlot = Rc<RefCell<Option<Rc<ProvidedFiles>>>>;

/// Loads MiniLM from the host's URLs or bytes, reporting progress through `post`.
pub struct WebModelLoader {
    post: Function,
    provided: ProvidedSlot,
}

impl WebModelLoader {
    /// A loader that posts progress events through `post` and reads provided files from
    /// `provided`.
    pub fn new(post: Function, provided: ProvidedSlot) -> Self {
        Self { post, provided }
    }
}

/// One file's bytes and, when they came from the network, the URL to cache them under.
pub(crate) struct Loaded {
    pub(crate) bytes: Bytes,
    cache_as: Option<String>,
}

/// A file to fetch.
pub(crate) struct FileSpec {
    /// How progress events name it (`model.safetensors`).
    pub(crate) name: String,
    /// Where it is; also its key in the cache.
    pub(crate) url: String,
    /// What it must hash to, when the host said.
    pub(crate) sha256: Option<Sha256>,
}

/// A file's bytes: downloaded (or read from the cache), or provided by the page.
pub(crate) enum Bytes {
    Fetched(Vec<u8>),
    Provided(Rc<ProvidedFiles>, ModelFile),
}

impl Bytes {
    /// The bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Fetched(bytes) => bytes,
            Bytes::Provided(files, file) => files.get(*file).unwrap_or_default(),
        }
    }
}

impl EmbedderLoader for WebModelLoader {
    fn load(
        &self,
        profile: Profile,
        source: &ModelSource,
        heartbeat: Heartbeat,
    ) -> LocalBoxFuture<'static, orion_core::error::Result<Rc<dyn Embedder>>> {
        let progress = Progress::new(self.post.clone(), heartbeat);
        let source = source.clone();
        let provided = self.provided.borrow().clone();
        let precision = match profile {
            Profile::Lite | Profile::Micro => Precision::Q8_0,
            Profile::Full => Precision::F32,
        };
        Box::pin(async move {
            let cache = match source.location {
                ModelLocation::Url(_) => open_cache().await,
                ModelLocation::Provided => None,
            };
            let files = match (&source.location, provided) {
                (ModelLocation::Url(_), _) => {
                    let specs: Vec<FileSpec> = ModelFile::ALL
                        .into_iter()
                        .map(|file| FileSpec {
                            name: file.file_name().to_owned(),
                            url: source.describe(file),
                            sha256: source.sha256.get(file),
                        })
                        .collect();
                    fetch_files(&specs, cache.as_ref(), &progress).await?
                }
                (ModelLocation::Provided, Some(provided)) => {
                    let mut files = Vec::with_capacity(ModelFile::ALL.len());
                    for file in ModelFile::ALL {
                        let bytes = Bytes::Provided(Rc::clone(&provided), file);
                        check_digest(bytes.as_slice(), source.sha256.get(file))
                            .await
                            .map_err(|reason| Error::model_load(source.describe(file), reason))?;
                        files.push(Loaded {
                            bytes,
                            cache_as: None,
                        });
                    }
                    files
                }
                (ModelLocation::Provided, None) => {
                    return Err(Error::model_load(
                        source.describe(ModelFile::Config),
                        "`provided` was set but no bytes came with `init` \
                         (pass them as `models.embedding.files`)",
                    ))
                }
            };
            let [config, tokenizer, weights] = &files[..] else {
                return Err(Error::Internal("expected three model files".into()));
            };
            headroom::ensure(weights.bytes.as_slice().len() + headroom::WORKING_MEMORY)
                .map_err(|reason| Error::model_load(source.describe(ModelFile::Weights), reason))?;
            let model = MiniLm::load(
                ModelFiles {
                    config: config.bytes.as_slice(),
                    tokenizer: tokenizer.bytes.as_slice(),
                    weights: weights.bytes.as_slice(),
                },
                precision,
            )
            .map_err(|error| match error {
                Error::ModelLoad {
                    source_name,
                    reason,
                } => {
                    let file = ModelFile::ALL
                        .into_iter()
                        .find(|file| file.file_name() == source_name);
                    Error::ModelLoad {
                        source_name: file.map_or(source_name, |file| source.describe(file)),
                        reason,
                    }
                }
                other => other,
            })?;
            cache_files(cache.as_ref(), &files).await;
            Ok(Rc::new(model) as Rc<dyn Embedder>)
        })
    }
}

/// Stores the downloaded `files` in the cache: call it once the model built from them has loaded,
/// so that a bad download is never cached.
pub(crate) async fn cache_files(cache: Option<&Cache>, files: &[Loaded]) {
    let Some(cache) = cache else {
        return;
    };
    for file in files {
        if let Some(url) = &file.cache_as {
            store(cache, url, file.bytes.as_slice()).await;
        }
    }
}

/// The model cache, unless Cache Storage is unavailable (insecure origins).
pub(crate) async fn open_cache() -> Option<Cache> {
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
    // The size travels with the copy, so a start from the cache knows the overall total too.
    let init = ResponseInit::new();
    if let Ok(headers) = Headers::new() {
        let _ = headers.set("content-length", &bytes.len().to_string());
        init.set_headers(&headers);
    }
    let Ok(response) = Response::new_with_opt_buffer_source_and_init(Some(&body), &init) else {
        return;
    };
    // A failed put (quota) only costs the next start a download.
    let _ = JsFuture::from(cache.put_with_str(url, &response)).await;
}

/// A file whose response is open (headers read) but whose body is not read yet.
struct Opened {
    name: String,
    url: String,
    response: Response,
    /// Its size, when known (not for compressed or chunked responses).
    total: Option<u64>,
    cached: bool,
}

/// Fetches every file of `specs` (from the cache when there): all responses are opened first, so
/// the overall size is known before the bodies are read one after another. Each is checked (HTTP
/// status, not an HTML page, complete, its digest); a stale cached copy is fetched again.
pub(crate) async fn fetch_files(
    specs: &[FileSpec],
    cache: Option<&Cache>,
    progress: &Progress,
) -> orion_core::error::Result<Vec<Loaded>> {
    let mut opened = Vec::with_capacity(specs.len());
    for spec in specs {
        let url = spec.url.clone();
        let cached = match cache {
            Some(cache) => cached_response(cache, &url).await,
            None => None,
        };
        opened.push(match cached {
            Some(response) => Opened {
                name: spec.name.clone(),
                total: content_length(&response),
                url,
                response,
                cached: true,
            },
            None => open_network(spec.name.clone(), url).await?,
        });
    }
    let totals: Option<u64> = opened.iter().map(|o| o.total).sum();
    progress.overall_total.set(totals);
    let mut files = Vec::with_capacity(opened.len());
    for (opened, spec) in opened.into_iter().zip(specs) {
        let expected = spec.sha256;
        let bytes = read_body(&opened, progress).await?;
        let digest = check_digest(&bytes, expected).await;
        let loaded = match (digest, opened.cached) {
            (Ok(()), cached) => Loaded {
                bytes: Bytes::Fetched(bytes),
                cache_as: (!cached).then(|| opened.url.clone()),
            },
            // A stale cached copy (the host now names another digest) is fetched again.
            (Err(_), true) => {
                let fresh = open_network(opened.name.clone(), opened.url.clone()).await?;
                let bytes = read_body(&fresh, progress).await?;
                check_digest(&bytes, expected)
                    .await
                    .map_err(|reason| Error::model_load(&opened.url, reason))?;
                Loaded {
                    bytes: Bytes::Fetched(bytes),
                    cache_as: Some(opened.url),
                }
            }
            (Err(reason), false) => return Err(Error::model_load(&opened.url, reason)),
        };
        progress.finished_file(loaded.bytes.as_slice().len() as u64);
        files.push(loaded);
    }
    Ok(files)
}

async fn cached_response(cache: &Cache, url: &str) -> Option<Response> {
    JsFuture::from(cache.match_with_str(url))
        .await
        .ok()?
        .dyn_into::<Response>()
        .ok()
}

/// Requests `url` and checks the response's status and type; the body is read later.
async fn open_network(name: String, url: String) -> orion_core::error::Result<Opened> {
    let load_error = |reason: String| Error::model_load(&url, reason);
    let scope: WorkerGlobalScope = js_sys::global()
        .dyn_into()
        .map_err(|_| load_error("not running in a worker".into()))?;
    let response = JsFuture::from(scope.fetch_with_str(&url))
        .await
        .map_err(|e| load_error(format!("the request failed: {}", describe(&e))))?;
    let response: Response = response
        .dyn_into()
        .map_err(|_| load_error("fetch did not return a Response".into()))?;
    if !response.ok() {
        return Err(load_error(format!("HTTP {}", response.status())));
    }
    let content_type = response.headers().get("content-type").ok().flatten();
    if content_type.is_some_and(|t| t.trim_start().starts_with("text/html")) {
        return Err(load_error(
            "the server sent an HTML page, not the model file".into(),
        ));
    }
    Ok(Opened {
        name,
        total: content_length(&response),
        url,
        response,
        cached: false,
    })
}

/// The body's size from `Content-Length`, unless a content encoding makes it count compressed
/// bytes.
fn content_length(response: &Response) -> Option<u64> {
    let headers = response.headers();
    let header = |name: &str| headers.get(name).ok().flatten();
    match header("content-encoding") {
        Some(_) => None,
        None => header("content-length").and_then(|l| l.trim().parse::<u64>().ok()),
    }
}

/// Checks `bytes` against the SHA-256 the host gave, with the browser's WebCrypto (native code,
/// far faster than hashing 90 MB in wasm).
async fn check_digest(bytes: &[u8], expected: Option<Sha256>) -> Result<(), String> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let scope: WorkerGlobalScope = js_sys::global()
        .dyn_into()
        .map_err(|_| "not running in a worker".to_owned())?;
    let subtle = scope
        .crypto()
        .map_err(|e| format!("WebCrypto is unavailable: {}", describe(&e)))?
        .subtle();
    // `digest` copies its input before it returns, so passing a view of wasm memory is sound.
    let promise = subtle
        .digest_with_str_and_u8_array("SHA-256", bytes)
        .map_err(|e| format!("SHA-256 failed: {}", describe(&e)))?;
    let digest = JsFuture::from(promise)
        .await
        .map_err(|e| format!("SHA-256 failed: {}", describe(&e)))?;
    let actual = Uint8Array::new(&digest).to_vec();
    if actual == expected.0 {
        Ok(())
    } else {
        let actual: String = actual.iter().map(|b| format!("{b:02x}")).collect();
        Err(format!(
            "SHA-256 mismatch: expected {expected}, got {actual}"
        ))
    }
}

/// Reads `opened`'s body with progress; fails when it ends short of `Content-Length`.
async fn read_body(opened: &Opened, progress: &Progress) -> orion_core::error::Result<Vec<u8>> {
    let load_error = |reason: String| Error::model_load(&opened.url, reason);
    let name = opened.name.as_str();
    let Some(body) = opened.response.body() else {
        return Ok(Vec::new());
    };
    let reader: ReadableStreamDefaultReader = body
        .get_reader()
        .dyn_into()
        .map_err(|_| load_error("the response body cannot be read".into()))?;
    let mut bytes = Vec::with_capacity(opened.total.unwrap_or(0).min(1 << 30) as usize);
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
        // The end of the file is reported once, after the loop.
        if loaded - reported >= PROGRESS_STEP && opened.total != Some(loaded) {
            reported = loaded;
            progress.report(name, loaded, opened.total, opened.cached);
        }
    }
    let loaded = bytes.len() as u64;
    if let Some(total) = opened.total {
        if loaded != total {
            return Err(load_error(format!(
                "truncated: received {loaded} of {total} bytes"
            )));
        }
    }
    progress.report(name, loaded, Some(loaded), opened.cached);
    Ok(bytes)
}

/// Reports download progress to the page and keeps the loading component's heartbeat going.
pub(crate) struct Progress {
    post: Function,
    heartbeat: Heartbeat,
    /// Bytes of the files read completely.
    finished: Cell<u64>,
    overall_total: Cell<Option<u64>>,
}

impl Progress {
    /// Progress of one model's files, posted through `post`.
    pub(crate) fn new(post: Function, heartbeat: Heartbeat) -> Self {
        Self {
            post,
            heartbeat,
            finished: Cell::new(0),
            overall_total: Cell::new(None),
        }
    }

    fn finished_file(&self, bytes: u64) {
        self.finished.set(self.finished.get() + bytes);
    }

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
                    overall_loaded: self.finished.get() + loaded,
                    overall_total: self.overall_total.get(),
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
