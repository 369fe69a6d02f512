//! The memory store in the browser: IndexedDB through `orion-store`, kept in step across tabs.
//!
//! Each tab runs its own worker with its own index of the same database. After a write, a worker
//! publishes the ids it changed (`{ids: [...]}` on a `BroadcastChannel` that `worker.js` owns);
//! the others re-read those rows into their index, so a memory added in one tab is found by a
//! search in another. Task rows travel the same way (`{tasks: {...}}`), so that the leader runs
//! what another tab scheduled.

use std::rc::Rc;

use js_sys::{Array, Function, Object, Reflect};
use orion_core::embedding::LocalBoxFuture;
use orion_core::tasks::TaskChanges;
use orion_core::{Store, StoreOpener};
use serde::Serialize;
use wasm_bindgen::{JsCast, JsValue};

/// Most ids one change message may carry (a purge of every memory sends them in pieces).
const MAX_IDS_PER_MESSAGE: usize = 10_000;

/// Opens ORION's IndexedDB database.
pub struct IdbOpener;

impl StoreOpener for IdbOpener {
    #[cfg(target_arch = "wasm32")]
    fn open(
        &self,
        name: &str,
    ) -> LocalBoxFuture<'static, orion_core::error::Result<Rc<dyn Store>>> {
        let name = name.to_owned();
        Box::pin(
            async move { Ok(Rc::new(orion_store::IdbStore::open(&name).await?) as Rc<dyn Store>) },
        )
    }

    /// Natively (where this crate is only compiled and linted) there is no IndexedDB.
    #[cfg(not(target_arch = "wasm32"))]
    fn open(
        &self,
        _name: &str,
    ) -> LocalBoxFuture<'static, orion_core::error::Result<Rc<dyn Store>>> {
        Box::pin(async {
            Err(orion_core::Error::Store(
                "IndexedDB exists only in the browser".into(),
            ))
        })
    }
}

/// 64 random bits for ids, from the browser (`Math.random`, which is enough to keep the ids of
/// different workers apart; they are not secrets).
pub fn random_seed() -> u64 {
    let high = (js_sys::Math::random() * f64::from(u32::MAX)) as u64;
    let low = (js_sys::Math::random() * f64::from(u32::MAX)) as u64;
    high << 32 | low
}

/// Publishes changed ids through `publish` (`worker.js` posts them on its `BroadcastChannel`).
pub fn publisher(publish: Function) -> Rc<dyn Fn(Vec<String>)> {
    Rc::new(move |ids: Vec<String>| {
        for chunk in ids.chunks(MAX_IDS_PER_MESSAGE) {
            let array: Array = chunk.iter().map(|id| JsValue::from_str(id)).collect();
            let message = Object::new();
            if Reflect::set(&message, &"ids".into(), &array).is_ok() {
                // Another tab missing a change only leaves its index stale until it reloads.
                let _ = publish.call1(&JsValue::NULL, &message);
            }
        }
    })
}

/// Publishes changed task rows through `publish` as `{tasks: {jobs, workflows, schedules,
/// queues}}`.
pub fn task_publisher(publish: Function) -> Rc<dyn Fn(TaskChanges)> {
    Rc::new(move |changes: TaskChanges| {
        let serializer = serde_wasm_bindgen::Serializer::json_compatible();
        let Ok(changes) = changes.serialize(&serializer) else {
            return;
        };
        let message = Object::new();
        if Reflect::set(&message, &"tasks".into(), &changes).is_ok() {
            // Another tab missing a change re-reads everything when it becomes leader.
            let _ = publish.call1(&JsValue::NULL, &message);
        }
    })
}

/// The task changes of a message, if it is one: `{tasks: {jobs?, workflows?, schedules?,
/// queues?}}` naming at most [`MAX_IDS_PER_MESSAGE`] rows.
pub fn task_changes(message: &JsValue) -> Option<TaskChanges> {
    let changes = Reflect::get(message, &"tasks".into()).ok()?;
    if changes.is_undefined() {
        return None;
    }
    let changes: TaskChanges = serde_wasm_bindgen::from_value(changes).ok()?;
    (changes.jobs.len() + changes.workflows.len() <= MAX_IDS_PER_MESSAGE).then_some(changes)
}

/// The ids of a change message, if it is one: `{ids: string[]}` of at most
/// [`MAX_IDS_PER_MESSAGE`] strings.
pub fn changed_ids(message: &JsValue) -> Option<Vec<String>> {
    let ids = Reflect::get(message, &"ids".into()).ok()?;
    let array = ids.dyn_ref::<Array>()?;
    if array.length() as usize > MAX_IDS_PER_MESSAGE {
        return None;
    }
    array.iter().map(|id| id.as_string()).collect()
}
