//! The `backups_*` requests and the automatic backups.
//!
//! The backup manager opens after the store, the embedder and the task engines. It registers the
//! Rust job handler [`BACKUP_JOB`] and the schedule [`AUTO_BACKUP_SCHEDULE`]: by default first
//! [`crate::backup::FIRST_AUTO_BACKUP_MS`] after the database's first start, then every
//! [`crate::backup::AUTO_BACKUP_EVERY_MS`]
//! (`init.backups`, [`crate::backup::BackupSettings`], changes both, the number kept, or turns
//! them off). Being a schedule on the job engine, it fires in the leader tab only, once across
//! tabs, and catches up once after a sleep. Every backup request is accounted against the `store`
//! health component.
//!
//! `backups_restore` and `backups_import` also wait for the memory index: the backup manager
//! validates the document, the memory layer writes it in one transaction
//! ([`crate::memory::Memories::restore`]) and updates the index from the rows written, with
//! `memory_index` events (`loaded` = memories indexed so far, `done` at the end). The ids that
//! changed are then published to the other workers on the database, as after any memory write,
//! and they re-read them.

use std::rc::Rc;

use futures_util::FutureExt;
use serde_json::Value;

use super::{
    finish, json_body as json, Event, Reply, Request, RequestId, ResponseBody, WorkerRuntime,
    STORE_COMPONENT,
};
use crate::backup::{AutoBackups, BackupManager};
use crate::backup_file::BackupKind;
use crate::embedding::LocalBoxFuture;
use crate::error::{Error, Result};
use crate::jobs::{
    CatchUp, JobError, JobOptions, JobTemplate, Priority, RemovePolicy, ScheduleSpec,
};
use crate::memory::RestoreOptions;

/// The queue of automatic backups (a Rust handler in every worker).
pub const BACKUP_JOB: &str = "orion.backup";

/// The schedule of automatic backups.
pub const AUTO_BACKUP_SCHEDULE: &str = "orion.backups.auto";

/// The backup manager, once open.
pub(super) type BackupsFuture =
    futures_util::future::Shared<LocalBoxFuture<'static, Result<Rc<BackupManager>>>>;

impl WorkerRuntime {
    /// Opens the backup manager and sets up the automatic backups.
    pub(super) fn open_backups(&self) -> BackupsFuture {
        let store = self.store.clone();
        let tasks = self.tasks.clone();
        let embedder = self.embedder.clone();
        let clock = self.clock.clone();
        let seed = self.platform.seed.rotate_left(48) ^ 0x6261_636b;
        let shared = Rc::clone(&self.shared);
        let settings = self.backup_settings;
        let future: LocalBoxFuture<'static, Result<Rc<BackupManager>>> = Box::pin(async move {
            let result = async {
                let (config, auto) = settings.resolve()?;
                let (Some(store), Some(tasks), Some(embedder)) = (store, tasks, embedder) else {
                    return Err(Error::Internal(
                        "no store, tasks or embedder after init".into(),
                    ));
                };
                let store = store.await?;
                let tasks = tasks.await?;
                let model = embedder.await.info().clone();
                let now = clock.now_ms();
                let taking = Rc::clone(&shared.borrow().backups_taking);
                let manager = Rc::new(
                    BackupManager::new(Rc::clone(&store), clock, config, seed)
                        .counting_backups_in(taking),
                );
                // A write out of quota deletes the oldest automatic backups and is tried again.
                let relief = Rc::downgrade(&manager);
                store.set_quota_relief(Rc::new(move || {
                    let manager = relief.upgrade();
                    Box::pin(async move {
                        match manager {
                            Some(manager) => manager.free_space().await,
                            None => Ok(0),
                        }
                    })
                }));
                let handler = Rc::clone(&manager);
                tasks.queue().register(BACKUP_JOB, 1, move |_context| {
                    let manager = Rc::clone(&handler);
                    let model = model.clone();
                    Box::pin(async move {
                        match manager.create(BackupKind::Auto, None, &model).await {
                            Ok(info) => serde_json::to_value(info)
                                .map_err(|e| JobError::fatal(e.to_string())),
                            // A store error may pass; a memory the backup cannot hold will not.
                            Err(error @ Error::BackupInvalid { .. }) => {
                                Err(JobError::fatal(error.to_string()))
                            }
                            Err(error) => Err(JobError::retryable(error.to_string())),
                        }
                    })
                })?;
                schedule_auto_backups(&tasks, auto, now).await?;
                tasks.wake();
                Ok(manager)
            }
            .await;
            if let Err(error) = &result {
                shared
                    .borrow_mut()
                    .health
                    .record_failure(STORE_COMPONENT, &error.to_string());
            }
            result
        });
        future.shared()
    }

    pub(super) fn backups(&self, id: RequestId, request: Request) -> Reply {
        let (Some(backups), Some(embedder)) = (self.backups.clone(), self.embedder.clone()) else {
            let error = Error::Internal("no backup manager after init".into());
            return Reply::Send(finish(&self.shared, id, STORE_COMPONENT, Err(error)));
        };
        if matches!(
            request,
            Request::BackupsRestore { .. } | Request::BackupsImport { .. }
        ) {
            return self.restore(id, backups, request);
        }
        let shared = Rc::clone(&self.shared);
        let emit = Rc::clone(&self.platform.emit);
        Reply::Spawn(Box::pin(async move {
            let result = match backups.await {
                Ok(manager) => answer(&manager, embedder.await.info(), id, request, &*emit).await,
                Err(error) => Err(error),
            };
            finish(&shared, id, STORE_COMPONENT, result)
        }))
    }

    /// `backups_restore` and `backups_import`: through the backup manager into the memory layer.
    fn restore(&self, id: RequestId, backups: BackupsFuture, request: Request) -> Reply {
        let Some(memories) = self.memories.clone() else {
            let error = Error::Internal("no memory store after init".into());
            return Reply::Send(finish(&self.shared, id, STORE_COMPONENT, Err(error)));
        };
        let shared = Rc::clone(&self.shared);
        let emit = Rc::clone(&self.platform.emit);
        let publish = Rc::clone(&self.platform.publish_memory_changes);
        let tasks = self.tasks.clone();
        let clock = self.clock.clone();
        Reply::Spawn(Box::pin(async move {
            let result = async {
                // Options first: a bad one is refused without reading anything.
                let options = match &request {
                    Request::BackupsRestore { options, .. }
                    | Request::BackupsImport { options, .. } => {
                        RestoreOptions::parse(options, "options")?
                    }
                    _ => return Err(Error::Internal("not a restore".into())),
                };
                let manager = backups.await?;
                let memories = memories.await?;
                let progress = |loaded| {
                    emit(Event::MemoryIndex {
                        loaded,
                        done: false,
                    })
                };
                let report = match request {
                    Request::BackupsRestore { backup_id, .. } => {
                        manager
                            .restore(&backup_id, options, &memories, &progress)
                            .await
                    }
                    Request::BackupsImport { text, .. } => {
                        let text = text.join();
                        manager.import(&text, options, &memories, &progress).await
                    }
                    _ => Err(Error::Internal("not a restore".into())),
                };
                super::memory_requests::publish_changes(&memories, &*publish);
                let report = report?;
                emit(Event::MemoryIndex {
                    loaded: memories.stats().count,
                    done: true,
                });
                // Memories of another embedder version are searchable once re-embedded.
                // A failure to enqueue does not undo the restore: the next start enqueues it.
                if report.other_versions > 0 {
                    if let Err(error) =
                        super::migration::enqueue_when_open(tasks, clock.now_ms()).await
                    {
                        shared
                            .borrow_mut()
                            .health
                            .record_failure(STORE_COMPONENT, &error.to_string());
                    }
                }
                json(&report)
            }
            .await;
            finish(&shared, id, STORE_COMPONENT, result)
        }))
    }
}

/// Sets up the schedule of automatic backups, or removes it when `auto` is `None`. An existing
/// schedule at the same interval is kept as it is (its next due time survives reloads); a
/// changed interval takes effect from the last backup, or from now plus the first delay when none
/// was taken yet.
async fn schedule_auto_backups(
    tasks: &crate::tasks::Tasks,
    auto: Option<AutoBackups>,
    now: u64,
) -> Result<()> {
    let existing = tasks.get_schedule(AUTO_BACKUP_SCHEDULE).await?;
    let Some(auto) = auto else {
        if existing.is_some() {
            tasks.remove_schedule(AUTO_BACKUP_SCHEDULE).await?;
        }
        return Ok(());
    };
    if existing
        .as_ref()
        .is_some_and(|record| record.spec.every == Some(auto.every_ms))
    {
        return Ok(());
    }
    let start = match existing.and_then(|record| record.last_run_at) {
        Some(last) => last.saturating_add(auto.every_ms),
        None => now.saturating_add(auto.first_after_ms),
    };
    // A start already reached fires at once: the scheduler's next occurrence after a past
    // start date would be a whole interval away.
    let due_now = start <= now;
    let spec = ScheduleSpec {
        start_date: (!due_now).then_some(start),
        immediately: due_now,
        catch_up: CatchUp::Once,
        ..ScheduleSpec::every(auto.every_ms)
    };
    let template = JobTemplate {
        options: JobOptions {
            priority: Priority::new(20)?,
            attempts: 3,
            remove_on_complete: RemovePolicy::KeepLast(10),
            ..JobOptions::default()
        },
        ..JobTemplate::new(BACKUP_JOB, Value::Null)
    };
    tasks
        .upsert_builtin_schedule(AUTO_BACKUP_SCHEDULE, spec, template)
        .await?;
    Ok(())
}

async fn answer(
    manager: &BackupManager,
    model: &crate::embedding::EmbeddingModelInfo,
    id: RequestId,
    request: Request,
    emit: &dyn Fn(Event),
) -> Result<ResponseBody> {
    let mut index = 0;
    let mut send = |text| {
        emit(Event::BackupPart {
            request_id: id,
            index,
            text,
        });
        index += 1;
        Ok(())
    };
    let exported = |done, total| {
        emit(Event::BackupProgress {
            operation: "export".into(),
            done,
            total,
        })
    };
    match request {
        Request::BackupsCreate { label } => {
            json(&manager.create(BackupKind::Manual, label, model).await?)
        }
        Request::BackupsList {} => json(&manager.list().await?),
        Request::BackupsStats {} => json(&manager.stats().await?),
        Request::BackupsVerify { backup_id } => json(&manager.verify(&backup_id).await?),
        Request::BackupsExport {
            backup_id: Some(backup_id),
        } => json(&manager.export(&backup_id, &mut send, &exported).await?),
        Request::BackupsExport { backup_id: None } => {
            json(&manager.export_current(model, &mut send, &exported).await?)
        }
        Request::BackupsDelete { backup_id } => json(&manager.delete(&backup_id).await?),
        other => Err(Error::Internal(format!(
            "`{}` is not a backup request",
            other.kind()
        ))),
    }
}
