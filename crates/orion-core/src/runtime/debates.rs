//! Debates as checkpointed workflows ([`crate::debate_workflow`]) in this worker.
//!
//! Once the task engines are open, every worker registers the debate workflow, so that the one
//! leading its database can run the debates its `ask`s start and take over those that a closed
//! or reloaded page left half done. A resumed debate loads the worker's own generator and keeps
//! its answer in the memories, with the active embedder.

use std::rc::Rc;

use futures_util::future::{FutureExt, Shared};

use super::{WorkerRuntime, TASKS_COMPONENT};
use crate::debate_workflow::{Keep, WorkflowDebates};
use crate::embedding::LocalBoxFuture;
use crate::error::Error;

/// The debate runner, once the task engines are open; `None` if they could not open.
pub(super) type DebatesFuture = Shared<LocalBoxFuture<'static, Option<Rc<WorkflowDebates>>>>;

impl WorkerRuntime {
    /// Registers the debate workflow once the task engines are open. A failure is counted
    /// against the `tasks` component, and `ask` then debates in its own future.
    pub(super) fn open_debates(&self) -> DebatesFuture {
        let (tasks, memories, embedder) = (
            self.tasks.clone(),
            self.memories.clone(),
            self.embedder.clone(),
        );
        let access = self.generator_access();
        let clock = self.clock.clone();
        // Not the memories' nor the tasks' seed: workflow ids must not collide with theirs.
        let seed = self.platform.seed.rotate_left(48) ^ 0x6465_6261;
        let shared = Rc::clone(&self.shared);
        let publish = Rc::clone(&self.platform.publish_memory_changes);
        let keep: Keep = Rc::new(move |memory| {
            let (memories, embedder, publish) =
                (memories.clone(), embedder.clone(), Rc::clone(&publish));
            Box::pin(async move {
                let (Some(memories), Some(embedder)) = (memories, embedder) else {
                    return Err(Error::Internal("no memories after init".into()));
                };
                let memories = memories.await?;
                let embedder = embedder.await;
                memories.add(embedder.as_ref(), memory).await?;
                super::memory_requests::publish_changes(&memories, &*publish);
                Ok(())
            })
        });
        let future: LocalBoxFuture<'static, _> = Box::pin(async move {
            let tasks = tasks?.await.ok()?;
            let generator = Rc::new(move || access.get());
            match WorkflowDebates::register(tasks, clock, seed, generator, keep) {
                Ok(debates) => Some(debates),
                Err(error) => {
                    shared
                        .borrow_mut()
                        .health
                        .record_failure(TASKS_COMPONENT, &error.to_string());
                    None
                }
            }
        });
        future.shared()
    }
}
