//! ORION's worker runtime for the browser.
//!
//! The npm package's `worker.js` creates one [`OrionWorker`] in a dedicated Web Worker and hands it
//! every message from the page. Everything that decides anything lives in `orion-core`; this crate
//! only converts between JS values and the core's types, guards against hostile messages before
//! copying them into wasm memory, and reports panics to the page before the instance dies.

mod bench_llm;
mod bench_tasks;
mod clock;
pub mod headroom;
mod import_file;
mod llm_loader;
mod memory_sync;
mod message_guard;
mod model_loader;
mod panic_report;
mod provided_files;

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::Function;
use orion_core::protocol::{Event, Outgoing, RequestId};
use orion_core::PROTOCOL_VERSION;
use orion_core::{DeviceFacts, Platform, Reply, WorkerRuntime};
use orion_embed::HashingEmbedder;
use serde::Serialize;
use wasm_bindgen::prelude::*;

pub use clock::WebClock;
pub use llm_loader::WebGeneratorLoader;
pub use message_guard::{check_message, Limits};
pub use model_loader::{ProvidedSlot, WebModelLoader, MODEL_CACHE};

/// This crate's version, reported by `orion.version()` as `web`.
pub const WEB_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The orchestrator as the worker script sees it: messages in, messages out through `post`.
#[wasm_bindgen]
pub struct OrionWorker {
    runtime: WorkerRuntime,
    post: Function,
    limits: Limits,
    provided: ProvidedSlot,
}

#[wasm_bindgen]
impl OrionWorker {
    /// A worker that answers through `post(message)` (in `worker.js`, `self.postMessage`), on a
    /// device described by `facts` (`{hardwareConcurrency, deviceMemoryGb, storageQuotaBytes,
    /// wasmSimd}`, read by `worker.js`; unreadable facts count as unknown).
    ///
    /// `publish(message)` tells the workers of other tabs which memories changed (in `worker.js`,
    /// a `BroadcastChannel`); they pass the message to [`OrionWorker::memories_changed`].
    ///
    /// `requestLeadership(name)` asks for the exclusive lock `name` (in `worker.js`, a Web Lock
    /// held until the worker ends) and calls [`OrionWorker::leadership_gained`] once it is held.
    #[wasm_bindgen(constructor)]
    pub fn new(
        post: Function,
        facts: JsValue,
        publish: Function,
        request_leadership: Function,
    ) -> OrionWorker {
        panic_report::install(post.clone());
        let facts: DeviceFacts = serde_wasm_bindgen::from_value(facts).unwrap_or_default();
        let provided: ProvidedSlot = Rc::new(RefCell::new(None));
        let emit_target = post.clone();
        let platform = Platform {
            loader: Rc::new(WebModelLoader::new(post.clone(), Rc::clone(&provided))),
            fallback: Rc::new(HashingEmbedder::new()),
            facts,
            store: Rc::new(memory_sync::IdbOpener),
            seed: memory_sync::random_seed(),
            emit: Rc::new(move |event| match event {
                Event::BackupPart {
                    request_id,
                    index,
                    text,
                } => post_backup_part(&emit_target, request_id, index, &text),
                event => post_message(
                    &emit_target,
                    &Outgoing::Event {
                        v: PROTOCOL_VERSION,
                        event,
                    },
                ),
            }),
            publish_memory_changes: memory_sync::publisher(publish.clone()),
            publish_task_changes: memory_sync::task_publisher(publish),
            sleep: Rc::new(|ms| {
                // setTimeout takes at most 2^31 - 1 ms; the loop wakes and sleeps again.
                let ms = u32::try_from(ms.min(i32::MAX as u64)).unwrap_or(i32::MAX as u32);
                Box::pin(gloo_timers::future::TimeoutFuture::new(ms))
            }),
            request_leadership: Rc::new(move |name| {
                if let Err(error) = request_leadership.call1(&JsValue::NULL, &name.into()) {
                    web_sys::console::error_2(
                        &"ORION: asking for leadership failed".into(),
                        &error,
                    );
                }
            }),
            spawn: Rc::new(wasm_bindgen_futures::spawn_local),
            schemas: Rc::new(orion_core::json_schema::JsonSchemas),
            generators: Rc::new(WebGeneratorLoader::new(post.clone())),
        };
        OrionWorker {
            runtime: WorkerRuntime::new(WebClock::shared(), WEB_VERSION, platform),
            post,
            limits: Limits::default(),
            provided,
        }
    }

    /// Handles one message from the page. Never throws for a bad message: it is answered with an
    /// error. Throws only when the instance dies (a panic), after posting a `crashed` message.
    pub fn handle(&mut self, message: JsValue) {
        let reply = match self
            .take_provided_files(&message)
            .and_then(|()| import_file::take(&message))
        {
            Ok(file) => self.handle_json(&message, file),
            Err(error) => Reply::Send(
                self.runtime
                    .reject(message_guard::peek_id(&message), &error),
            ),
        };
        self.deliver(reply);
    }

    /// A message another tab's worker published (see the constructor's `publish`): its memory
    /// changes are read into this worker's index, its task changes into the task engines before
    /// their next tick. Anything malformed is ignored.
    #[wasm_bindgen(js_name = memoriesChanged)]
    pub fn memories_changed(&mut self, message: JsValue) {
        if let Some(ids) = memory_sync::changed_ids(&message) {
            let reply = self.runtime.memories_changed(ids);
            self.deliver(reply);
        }
        if let Some(changes) = memory_sync::task_changes(&message) {
            let reply = self.runtime.tasks_changed(changes);
            self.deliver(reply);
        }
    }

    /// The lock asked for through the constructor's `requestLeadership` is held: this worker now
    /// runs its database's schedules and workflows.
    #[wasm_bindgen(js_name = leadershipGained)]
    pub fn leadership_gained(&mut self) {
        self.runtime.leadership_gained();
        self.deliver(Reply::Send(Vec::new()));
    }
}

impl OrionWorker {
    /// Moves model bytes out of an `init` message into the loader's slot. Only the first `init`
    /// may set them (a second one is refused by the runtime anyway).
    fn take_provided_files(&self, message: &JsValue) -> Result<(), orion_core::Error> {
        if let Some(files) = provided_files::take(message)? {
            let mut slot = self.provided.borrow_mut();
            if slot.is_none() {
                *slot = Some(Rc::new(files));
            }
        }
        Ok(())
    }

    /// Checks and decodes `message`; `file` is an import's text taken out of it as bytes
    /// ([`import_file::take`]), put back as its `text`.
    fn handle_json(&mut self, message: &JsValue, file: Option<String>) -> Reply {
        match check_message(message, &self.limits)
            .and_then(|()| message_guard::to_json(message.clone()))
        {
            Ok(mut json) => {
                if let (Some(text), Some(fields)) = (file, json.as_object_mut()) {
                    fields.insert("text".to_owned(), serde_json::Value::String(text));
                }
                self.runtime.handle(json)
            }
            Err(error) => Reply::Send(self.runtime.reject(message_guard::peek_id(message), &error)),
        }
    }

    fn deliver(&mut self, reply: Reply) {
        for work in self.runtime.take_background() {
            wasm_bindgen_futures::spawn_local(work);
        }
        match reply {
            Reply::Send(messages) => messages.iter().for_each(|m| post_message(&self.post, m)),
            Reply::Spawn(work) => {
                let target = self.post.clone();
                wasm_bindgen_futures::spawn_local(async move {
                    for message in work.await {
                        post_message(&target, &message);
                    }
                });
            }
            Reply::Crash => panic!("a debug `crash` request asked the worker to panic"),
        }
    }
}

/// Posts a `backup_part` event with the part as UTF-8 bytes in a buffer moved to the page (not
/// copied), rather than as a string: the worker keeps no copy of the part once posted, and the
/// page can make a `Blob` of the parts without a string of the file (`backups.download`).
fn post_backup_part(target: &Function, request_id: RequestId, index: u32, text: &str) {
    let bytes = js_sys::Uint8Array::from(text.as_bytes());
    let event = js_sys::Object::new();
    let message = js_sys::Object::new();
    let set = |object: &js_sys::Object, key: &str, value: JsValue| {
        let _ = js_sys::Reflect::set(object, &JsValue::from_str(key), &value);
    };
    set(&event, "kind", "backup_part".into());
    set(&event, "requestId", request_id.into());
    set(&event, "index", index.into());
    set(&event, "bytes", bytes.clone().into());
    set(&message, "type", "event".into());
    set(&message, "v", PROTOCOL_VERSION.into());
    set(&message, "event", event.into());
    let transfer = js_sys::Array::of1(&bytes.buffer());
    if let Err(error) = target.call2(&JsValue::NULL, &message, &transfer) {
        web_sys::console::error_2(&"ORION: posting a backup part failed".into(), &error);
    }
}

/// Posts `message` to the page through `target`.
fn post_message(target: &Function, message: &Outgoing) {
    let serializer = serde_wasm_bindgen::Serializer::json_compatible();
    match message.serialize(&serializer) {
        Ok(value) => {
            if let Err(error) = target.call1(&JsValue::NULL, &value) {
                web_sys::console::error_2(&"ORION: posting a message failed".into(), &error);
            }
        }
        Err(error) => web_sys::console::error_1(
            &format!("ORION: could not convert a message for the page: {error}").into(),
        ),
    }
}
