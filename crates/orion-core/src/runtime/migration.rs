//! The re-embedding migration on the job engine.
//!
//! Memories embedded by another embedder version than the active one (a profile change, a model
//! upgrade, a restored or imported backup from another device) are re-embedded by the Rust job
//! handler [`REEMBED_JOB`], [`BATCH`] memories per transaction ([`Memories::reembed`]), with
//! `embedding_migration` events and the job's progress after each batch. A committed batch is the
//! checkpoint: a migration stopped by a reload, a crash or a closed tab is enqueued again at the
//! next start (and any attempt the job engine recovers finds only what is left), so it resumes
//! where it stopped. It runs in the leader tab, like every job; the other tabs learn of each batch
//! as of any memory write.

use std::rc::Rc;

use serde_json::{json, Value};

use super::{Event, TasksFuture, WorkerRuntime, STORE_COMPONENT};
use crate::embedding::{Embedder, LocalBoxFuture};
use crate::error::Result;
use crate::jobs::{JobError, JobOptions, Priority, RemovePolicy};
use crate::memory::Memories;
use crate::tasks::Tasks;

/// The queue of the re-embedding migration (a Rust handler in every worker).
pub const REEMBED_JOB: &str = "orion.reembed";

/// Memories re-embedded per transaction: a checkpoint every few seconds with the MiniLM model.
pub const BATCH: usize = 64;

impl WorkerRuntime {
    /// Once the task engine, the memories and the embedder are open: registers the migration's
    /// handler, enqueues a migration if any memory has another version, and reads the vectors of
    /// those of the hashing embedder's version ([`Memories::read_other_versions`]). A failure is
    /// counted against the `store` component (the memories' or tasks' own failure is theirs).
    pub(super) fn open_migration(&self) -> LocalBoxFuture<'static, ()> {
        let (Some(tasks), Some(memories), Some(embedder)) = (
            self.tasks.clone(),
            self.memories.clone(),
            self.embedder.clone(),
        ) else {
            return Box::pin(async {});
        };
        let emit = Rc::clone(&self.platform.emit);
        let publish = Rc::clone(&self.platform.publish_memory_changes);
        let clock = self.clock.clone();
        let shared = Rc::clone(&self.shared);
        let hashing = Rc::clone(&self.platform.fallback);
        Box::pin(async move {
            let (Ok(tasks), Ok(memories)) = (tasks.await, memories.await) else {
                return;
            };
            let embedder = embedder.await;
            let opened = open(
                &tasks,
                Rc::clone(&memories),
                embedder,
                emit,
                publish,
                clock.now_ms(),
            )
            .await;
            // Memories of the hashing embedder's version are searched with its vectors meanwhile.
            let read = memories
                .read_other_versions(vec![hashing.info().version.clone()])
                .await;
            if let Err(error) = opened.and(read) {
                shared
                    .borrow_mut()
                    .health
                    .record_failure(STORE_COMPONENT, &error.to_string());
            }
        })
    }
}

/// Registers the migration's handler on `tasks`, and enqueues a migration if `memories` holds
/// any memory of another version.
async fn open(
    tasks: &Tasks,
    memories: Rc<Memories>,
    embedder: Rc<dyn Embedder>,
    emit: Rc<dyn Fn(Event)>,
    publish: Rc<dyn Fn(Vec<String>)>,
    now: u64,
) -> Result<()> {
    let handler = Rc::clone(&memories);
    tasks.queue().register(REEMBED_JOB, 1, move |context| {
        let memories = Rc::clone(&handler);
        let embedder = Rc::clone(&embedder);
        let emit = Rc::clone(&emit);
        let publish = Rc::clone(&publish);
        Box::pin(async move {
            let mut migrated = 0;
            loop {
                let before = memories.to_reembed();
                let step = memories
                    .reembed(&*embedder, BATCH)
                    .await
                    .map_err(|error| JobError::retryable(error.to_string()))?;
                super::memory_requests::publish_changes(&memories, &*publish);
                migrated += step.migrated;
                emit(Event::EmbeddingMigration {
                    migrated: migrated as u64,
                    remaining: step.remaining as u64,
                    done: step.remaining == 0,
                });
                let _ = context
                    .report_progress(json!({"migrated": migrated, "remaining": step.remaining}))
                    .await;
                // Done, or stuck (nothing moved): a later start tries again.
                if step.remaining == 0 || step.remaining >= before {
                    return Ok(json!({"migrated": migrated, "remaining": step.remaining}));
                }
            }
        })
    })?;
    if memories.to_reembed() > 0 {
        enqueue(tasks, now).await?;
    }
    Ok(())
}

/// Enqueues a migration (after a restore or an import of memories of another version).
pub(super) async fn enqueue(tasks: &Tasks, now: u64) -> Result<()> {
    let options = JobOptions {
        priority: Priority::new(15)?,
        attempts: 5,
        // One per start or restore: an attempt recovered from an earlier page finds only the
        // memories still to do.
        job_id: Some(format!("{REEMBED_JOB}/{now}")),
        remove_on_complete: RemovePolicy::KeepLast(10),
        ..JobOptions::default()
    };
    tasks
        .queue()
        .enqueue(REEMBED_JOB, Value::Null, options)
        .await?;
    tasks.wake();
    Ok(())
}

/// [`enqueue`] once the task engine is open, for the request handlers.
pub(super) async fn enqueue_when_open(tasks: Option<TasksFuture>, now: u64) -> Result<()> {
    match tasks {
        Some(tasks) => enqueue(&*tasks.await?, now).await,
        None => Ok(()),
    }
}
