//! The `tasks_*` requests: opening the task engines on the worker's database, driving them while
//! this worker leads, and answering on them.
//!
//! The engines open in the background after `init`; task requests wait for that. Every task
//! request and every tick of the loop is accounted against the `tasks` health component: storage
//! errors count as failures, bad arguments do not.

use std::rc::Rc;

use futures_util::FutureExt;
use serde_json::Value;

use super::{
    finish, json_body as json, Reply, Request, RequestId, ResponseBody, TasksFuture, WorkerRuntime,
};
use crate::embedding::LocalBoxFuture;
use crate::error::{Error, Result};
use crate::input::from_json_at;
use crate::tasks::{TaskChanges, TaskFilter, TaskHooks, TaskSpec, Tasks};

/// The health component for background tasks (jobs, schedules, workflows).
pub const TASKS_COMPONENT: &str = "tasks";

impl WorkerRuntime {
    /// Opens the task engines on the worker's store and starts their loop.
    pub(super) fn open_tasks(&self) -> TasksFuture {
        let store = self.store.clone();
        let clock = self.clock.clone();
        // Not the memories' seed: the two id spaces must not collide.
        let seed = self.platform.seed.rotate_left(32) ^ 0x7461_736b;
        let report_to = Rc::clone(&self.shared);
        let alerts_to = Rc::clone(&self.shared);
        let hooks = TaskHooks {
            emit: Rc::clone(&self.platform.emit),
            publish: Rc::clone(&self.platform.publish_task_changes),
            spawn: Rc::clone(&self.platform.spawn),
            sleep: Rc::clone(&self.platform.sleep),
            schemas: Rc::clone(&self.platform.schemas),
            alerts: Rc::new(move |alerts| {
                if let Ok(mut state) = alerts_to.try_borrow_mut() {
                    state.alerts = alerts;
                }
            }),
            report: Rc::new(move |outcome| {
                if let Ok(mut state) = report_to.try_borrow_mut() {
                    match outcome {
                        Ok(()) => state.health.record_success(TASKS_COMPONENT),
                        Err(reason) => state.health.record_failure(TASKS_COMPONENT, &reason),
                    }
                }
            }),
        };
        let settings = self.task_settings;
        let spawn = Rc::clone(&self.platform.spawn);
        let leader = Rc::clone(&self.leader);
        let shared = Rc::clone(&self.shared);
        let future: LocalBoxFuture<'static, Result<Rc<Tasks>>> = Box::pin(async move {
            let result = async {
                let store = match store {
                    Some(store) => store.await?,
                    None => return Err(Error::Internal("no store after init".into())),
                };
                let tasks = Tasks::open(store, clock, seed, settings, hooks).await?;
                if leader.get() {
                    tasks.become_leader();
                }
                spawn(tasks.drive());
                Ok(tasks)
            }
            .await;
            if let Err(error) = &result {
                shared
                    .borrow_mut()
                    .health
                    .record_failure(TASKS_COMPONENT, &error.to_string());
            }
            result
        });
        future.shared()
    }

    /// Another worker changed these task rows: this worker re-reads them before its next tick.
    pub fn tasks_changed(&self, changes: TaskChanges) -> Reply {
        let Some(tasks) = self.tasks.clone() else {
            return Reply::Send(Vec::new());
        };
        Reply::Spawn(Box::pin(async move {
            if let Ok(tasks) = tasks.await {
                tasks.changed_elsewhere(changes);
            }
            Vec::new()
        }))
    }

    pub(super) fn tasks(&self, id: RequestId, request: Request) -> Reply {
        let Some(tasks) = self.tasks.clone() else {
            let error = Error::Internal("no task engines after init".into());
            return Reply::Send(finish(&self.shared, id, TASKS_COMPONENT, Err(error)));
        };
        let shared = Rc::clone(&self.shared);
        Reply::Spawn(Box::pin(async move {
            let result = match tasks.await {
                Ok(tasks) => answer(&tasks, request).await,
                Err(error) => Err(error),
            };
            finish(&shared, id, TASKS_COMPONENT, result)
        }))
    }
}

async fn answer(tasks: &Tasks, request: Request) -> Result<ResponseBody> {
    match request {
        Request::TasksDefine { task } => {
            tasks.define(TaskSpec::from_json(task)?)?;
            json(&Value::Null)
        }
        Request::TasksSchedule {
            source,
            name,
            payload,
            options,
        } => json(&tasks.schedule(source, &name, payload, options).await?),
        Request::TasksStatus { task_id } => json(&tasks.status(&task_id).await?),
        Request::TasksCancel { task_id } => json(&tasks.cancel(&task_id).await?),
        Request::TasksPause { task_id } => json(&tasks.pause(&task_id).await?),
        Request::TasksResume { task_id } => json(&tasks.resume(&task_id).await?),
        Request::TasksRetry { task_id } => json(&tasks.retry(&task_id).await?),
        Request::TasksSignal {
            task_id,
            name,
            payload,
        } => {
            tasks.signal(&task_id, &name, payload).await?;
            json(&Value::Null)
        }
        Request::TasksList { filter } => {
            let filter: TaskFilter = match filter {
                None | Some(Value::Null) => TaskFilter::default(),
                Some(value) => from_json_at("filter", value)?,
            };
            json(&tasks.list(filter).await?)
        }
        Request::TasksCounts {} => json(&tasks.counts()),
        Request::TasksPauseQueue { name, paused } => {
            tasks.pause_queue(&name, paused).await?;
            json(&Value::Null)
        }
        Request::TasksUpsertSchedule {
            schedule_id,
            spec,
            template,
        } => json(&tasks.upsert_schedule(&schedule_id, spec, template).await?),
        Request::TasksRemoveSchedule { schedule_id } => {
            json(&tasks.remove_schedule(&schedule_id).await?)
        }
        Request::TasksListSchedules {} => json(&tasks.list_schedules().await?),
        Request::TasksResult {
            run_id,
            value,
            error,
        } => {
            tasks.answer(&run_id, error.map_or(Ok(value), Err))?;
            json(&Value::Null)
        }
        Request::TasksMetrics { window_ms } => json(&tasks.metrics(window_ms)?),
        Request::TasksConfigureAlerts { rules } => json(&tasks.configure_alerts(rules)?),
        Request::TasksProgress { run_id, progress } => {
            tasks.progress(&run_id, progress).await?;
            json(&Value::Null)
        }
        other => Err(Error::Internal(format!(
            "`{}` is not a task request",
            other.kind()
        ))),
    }
}
