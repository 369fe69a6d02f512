//! The `memory_*` requests: opening the store, loading the index, and answering on it.
//!
//! The store opens and the index loads in the background after `init` (with `memory_index`
//! events); memory requests wait for that, other requests do not. From a saved snapshot the index
//! is ready once the vectors' 8-bit codes are in, and the exact vectors follow in the background
//! (searches meanwhile read the few they need from the table: see `Memories::load_exact`).
//! Every memory request is accounted against the `store` health component: quota and storage
//! errors count as failures, bad arguments do not.

use std::rc::Rc;

use futures_util::FutureExt;

use super::{
    finish, Common, Event, MemoriesFuture, Reply, Request, RequestId, ResponseBody, WorkerRuntime,
    MAX_ADD_MANY, STORE_COMPONENT,
};
use crate::embedding::LocalBoxFuture;
use crate::error::{Error, Result};
use crate::memory::{Memories, MemoryConfig, TOUCH_FLUSH_DELAY_MS};
use crate::tasks::Sleep;

impl WorkerRuntime {
    /// Opens the store and loads the memory index for the active embedder.
    pub(super) fn open_memories(&self) -> MemoriesFuture {
        let store = self.store.clone();
        let primary = self.embedder.clone();
        let shared = Rc::clone(&self.shared);
        let clock = self.clock.clone();
        let seed = self.platform.seed;
        let emit = Rc::clone(&self.platform.emit);
        let spawn = Rc::clone(&self.platform.spawn);
        let sleep = Rc::clone(&self.platform.sleep);
        let settings = self.memory_settings;
        let future: LocalBoxFuture<'static, Result<Rc<Memories>>> = Box::pin(async move {
            let result = async {
                let store = match store {
                    Some(store) => store.await?,
                    None => return Err(Error::Internal("no store after init".into())),
                };
                let embedder = match primary {
                    Some(primary) => primary.await,
                    None => return Err(Error::Internal("no embedder after init".into())),
                };
                let profile = active_profile(&shared.borrow())?;
                let progress = |loaded| {
                    emit(Event::MemoryIndex {
                        loaded,
                        done: false,
                    })
                };
                let config = MemoryConfig::for_profile(profile).with(settings)?;
                let memories = Memories::load(
                    store,
                    clock,
                    config,
                    embedder.info().clone(),
                    seed,
                    &progress,
                )
                .await?;
                emit(Event::MemoryIndex {
                    loaded: memories.stats().count,
                    done: true,
                });
                let memories = Rc::new(memories);
                let loading = Rc::clone(&memories);
                let (then_spawn, then_shared) = (Rc::clone(&spawn), Rc::clone(&shared));
                in_background(&spawn, &shared, async move {
                    loading.load_exact().await?;
                    save_snapshot_if_wanted(&loading, &then_spawn, &then_shared, &sleep);
                    Ok(())
                });
                Ok(memories)
            }
            .await;
            if let Err(error) = &result {
                let mut state = shared.borrow_mut();
                state
                    .health
                    .record_failure(STORE_COMPONENT, &error.to_string());
            }
            result
        });
        future.shared()
    }

    /// Another worker changed these memories: re-reads them into this worker's index.
    pub fn memories_changed(&self, ids: Vec<String>) -> Reply {
        let Some(memories) = self.memories.clone() else {
            return Reply::Send(Vec::new());
        };
        Reply::Spawn(Box::pin(async move {
            if let Ok(memories) = memories.await {
                // A failed refresh leaves the index as it was; the next start reloads it.
                let _ = memories.refresh(ids).await;
            }
            Vec::new()
        }))
    }

    pub(super) fn memory(&self, id: RequestId, request: Request) -> Reply {
        let (Some(memories), Some(embedder)) = (self.memories.clone(), self.embedder.clone())
        else {
            let error = Error::Internal("no memory store after init".into());
            return Reply::Send(finish(&self.shared, id, STORE_COMPONENT, Err(error)));
        };
        let shared = Rc::clone(&self.shared);
        let emit = Rc::clone(&self.platform.emit);
        let publish = Rc::clone(&self.platform.publish_memory_changes);
        let spawn = Rc::clone(&self.platform.spawn);
        let sleep = Rc::clone(&self.platform.sleep);
        // Memories of the hashing embedder's version (made on micro) are searched with its
        // vectors until they are re-embedded.
        let hashing = Rc::clone(&self.platform.fallback);
        Reply::Spawn(Box::pin(async move {
            let memories = match memories.await {
                Ok(memories) => memories,
                Err(error) => return finish(&shared, id, STORE_COMPONENT, Err(error)),
            };
            shared.borrow_mut().health.work_started(STORE_COMPONENT);
            let embedder = embedder.await;
            let embedder = embedder.as_ref();
            let result = match request {
                Request::MemoryAdd { text, kind, meta } => memories
                    .add(embedder, crate::memory::NewMemory { text, kind, meta })
                    .await
                    .map(ResponseBody::Memory),
                Request::MemoryAddMany { items } if items.len() > MAX_ADD_MANY => {
                    Err(Error::invalid_input(
                        "items",
                        format!("{} memories; at most {MAX_ADD_MANY} per call", items.len()),
                    ))
                }
                Request::MemoryAddMany { items } => {
                    let progress = |done, total| emit(Event::MemoryProgress { done, total });
                    memories
                        .add_many(embedder, items, &progress)
                        .await
                        .map(ResponseBody::Memories)
                }
                Request::MemoryGet { memory_id } => memories
                    .get(&memory_id)
                    .await
                    .map(ResponseBody::MaybeMemory),
                Request::MemoryDelete { memory_id } => {
                    memories.delete(&memory_id).await.map(ResponseBody::Deleted)
                }
                Request::MemoryList { kind, limit, after } => match whole("limit", limit, 100) {
                    Ok(limit) => memories
                        .list(kind.as_deref(), limit as usize, after)
                        .await
                        .map(ResponseBody::Page),
                    Err(error) => Err(error),
                },
                Request::MemorySearch {
                    query,
                    k,
                    min_similarity,
                    kind,
                } => match whole("k", k, 5) {
                    Ok(k) => memories
                        .search_all_versions(
                            embedder,
                            &[hashing.as_ref()],
                            &query,
                            k,
                            min_similarity.unwrap_or(0.0),
                            kind.as_deref(),
                        )
                        .await
                        .map(ResponseBody::Hits),
                    Err(error) => Err(error),
                },
                Request::MemoryPurge { kind } => memories
                    .purge(kind.as_deref())
                    .await
                    .map(ResponseBody::Purged),
                Request::MemoryStats {} => Ok(ResponseBody::MemoryStats(memories.stats())),
                other => Err(Error::Internal(format!(
                    "`{}` is not a memory request",
                    other.kind()
                ))),
            };
            flush_touches_later(&memories, &spawn, &shared, &sleep);
            // Not in the middle of writes (a bulk import would rewrite it over and over): the
            // next read saves it.
            let reading = matches!(
                &result,
                Ok(ResponseBody::Hits(_)
                    | ResponseBody::Page(_)
                    | ResponseBody::MaybeMemory(_)
                    | ResponseBody::MemoryStats(_))
            );
            if reading {
                save_snapshot_if_wanted(&memories, &spawn, &shared, &sleep);
            }
            publish_changes(&memories, &*publish);
            finish(&shared, id, STORE_COMPONENT, result)
        }))
    }
}

/// Tells the other workers on the database which memories `memories` wrote or deleted since the
/// last call, if any.
pub(super) fn publish_changes(memories: &Memories, publish: &dyn Fn(Vec<String>)) {
    let changed = memories.take_changes();
    if !changed.is_empty() {
        publish(changed);
    }
}

/// Writes the search hits' `lastAccessed` times [`TOUCH_FLUSH_DELAY_MS`] from now, unless a write
/// is already scheduled (one write for every search meanwhile), and not while a backup is being
/// taken: that write would wait for the backup's read of `memories` to end, and so would every
/// search's read placed after it.
pub(super) fn flush_touches_later(
    memories: &Rc<Memories>,
    spawn: &Rc<dyn Fn(LocalBoxFuture<'static, ()>)>,
    shared: &super::SharedState,
    sleep: &Sleep,
) {
    if !memories.schedule_flush() {
        return;
    }
    let memories = Rc::clone(memories);
    let sleep = Rc::clone(sleep);
    let taking = Rc::clone(&shared.borrow().backups_taking);
    in_background(spawn, shared, async move {
        sleep(TOUCH_FLUSH_DELAY_MS).await;
        while taking.get() > 0 {
            sleep(TOUCH_FLUSH_DELAY_MS).await;
        }
        memories.flush_touches().await
    });
}

/// Saves the index's snapshot in the background when it is missing or stale, so that the next
/// start loads fast.
fn save_snapshot_if_wanted(
    memories: &Rc<Memories>,
    spawn: &Rc<dyn Fn(LocalBoxFuture<'static, ()>)>,
    shared: &super::SharedState,
    sleep: &Sleep,
) {
    if !memories.wants_snapshot() {
        return;
    }
    let memories = Rc::clone(memories);
    let sleep = Rc::clone(sleep);
    in_background(spawn, shared, async move {
        memories.save_snapshot(&*sleep).await
    });
}

/// Runs store `work` that no answer waits for; a failure counts against the store's health.
fn in_background(
    spawn: &Rc<dyn Fn(LocalBoxFuture<'static, ()>)>,
    shared: &super::SharedState,
    work: impl std::future::Future<Output = Result<()>> + 'static,
) {
    let shared = Rc::clone(shared);
    spawn(Box::pin(async move {
        if let Err(error) = work.await {
            let mut state = shared.borrow_mut();
            state
                .health
                .record_failure(STORE_COMPONENT, &error.to_string());
        }
    }));
}

fn active_profile(state: &Common) -> Result<crate::profile::Profile> {
    state
        .profile
        .as_ref()
        .map(|info| info.active)
        .ok_or_else(|| Error::Internal("no profile after init".into()))
}

/// A whole number from a JSON number (JS has no integers), `default` when absent.
fn whole(field: &str, value: Option<f64>, default: u64) -> Result<u64> {
    match value {
        None => Ok(default),
        Some(v) if v.is_finite() && v.fract() == 0.0 && v >= 0.0 => Ok(v as u64),
        Some(v) => Err(Error::invalid_input(
            field,
            format!("must be a whole number, got {v}"),
        )),
    }
}
