//! Job schedulers: jobs enqueued on a fixed interval or a cron pattern, persisted in the `meta`
//! table and driven by [`Scheduler::tick`].
//!
//! A scheduler is `{id, spec, template}` plus its progress (`nextRunAt`, `lastRunAt`, `count`),
//! stored as the `meta` row `job-scheduler/<id>` ([`SCHEDULER_META_PREFIX`]). The spec
//! ([`ScheduleSpec`]) says when it fires: `every` ms (aligned on multiples of `every` counted from
//! `startDate`, or from the Unix epoch without one, like BullMQ) or a `cron` pattern (5 fields, or
//! 6 with seconds; parsed and evaluated by the `croner` crate) in the IANA time zone `tz` (default
//! UTC; DST gaps and folds are croner's business). Occurrences before `startDate` or after
//! `endDate` never fire; after `limit` firings the scheduler is done (`nextRunAt: null`). With
//! `immediately`, creating the scheduler also fires once, at once.
//!
//! # Firing
//!
//! Like [`JobQueue`], a scheduler owns no timer: the platform calls [`Scheduler::tick`] at
//! [`Scheduler::next_wake_at`]. A firing for the occurrence due at `dueMs` enqueues the template
//! with `jobId = "<schedulerId>:<dueMs>"`, *then* writes the scheduler's new progress. A crash
//! between the two, or two instances ticking the same scheduler, enqueues that occurrence again
//! with the same `jobId`, which the queue deduplicates (unless the first job was already removed,
//! e.g. by `removeOnComplete`). So one occurrence yields at most one job, and `nextRunAt` only
//! moves forward: it is always after `lastRunAt`, the due time of the latest firing.
//!
//! # Catch-up: what happens to occurrences the worker slept through
//!
//! When a tick finds several occurrences due (the tab was closed, the machine slept, the clock
//! jumped), the latest of them is *on time* if it is at most [`MISFIRE_GRACE_MS`] (60 s) old;
//! every other due occurrence is *missed*. The spec's `catchUp` decides:
//!
//! - `skip`: missed occurrences never fire; an on-time one does.
//! - `once` (the default): one job stands for all the due occurrences, missed or not; its `dueMs`
//!   is the latest one's.
//! - `all`: every due occurrence fires, oldest first, but at most the latest [`MAX_CATCH_UP`]
//!   (1000) per tick (older ones are dropped), and of those the earliest that `limit` allows.
//!   They are the occurrences ticking on time would have fired, across DST changes too.
//!
//! Then `nextRunAt` becomes the first occurrence after now. Each occurrence fires at most once.
//!
//! # Upserting
//!
//! [`Scheduler::upsert_scheduler`] creates a scheduler or replaces the spec and template of an
//! existing one, keeping its `count` and `lastRunAt`. When the timing (`every`, `cron`, `tz`,
//! `startDate`) is unchanged, `nextRunAt` is kept too, so an app that upserts its schedulers on
//! every start neither fires twice nor loses the occurrences it must catch up on; otherwise the
//! new timing starts after now. `immediately` fires on creation only.
//!
//! # Several instances
//!
//! Within one instance, ticks, upserts and removals run one at a time. Each instance caches only
//! the due times (for [`Scheduler::next_wake_at`]) and reads a scheduler's row again before firing
//! it; a scheduler created by another instance is seen after [`Scheduler::list_schedulers`],
//! [`Scheduler::reload`] or a reopen. The store has no compare-and-set, so two instances may both
//! fire an occurrence: the `jobId` makes that one job. ORION runs schedulers in one tab at a time
//! (the Web Lock holder).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::str::FromStr;

use chrono::DateTime;
use chrono_tz::Tz;
use croner::Cron;
use futures_util::lock::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::options::{check_max, JobOptions, MAX_DELAY_MS, MAX_ID_BYTES};
use super::queue::{check_json_size, JobQueue};
use super::record::JobRecord;
use crate::clock::SharedClock;
use crate::error::{Error, Result};
use crate::input::{check_id, from_json_at, record_from_row};
use crate::store::{Row, Scan, Store, Table, WriteOp};

/// The `meta` rows of schedulers are `job-scheduler/<id>`.
pub const SCHEDULER_META_PREFIX: &str = "job-scheduler/";
/// The longest scheduler id, in UTF-8 bytes: room is left in a job id for `:` and a due time.
pub const MAX_SCHEDULER_ID_BYTES: usize = MAX_ID_BYTES - 21;
/// The most missed occurrences one scheduler fires in one tick under `catchUp: 'all'`.
pub const MAX_CATCH_UP: usize = 1000;
/// How late (ms) the latest due occurrence may be found and still count as on time, not missed.
pub const MISFIRE_GRACE_MS: u64 = 60_000;
/// The latest `startDate`/`endDate`: the end of the year 9999, in ms since the Unix epoch.
pub const MAX_DATE_MS: u64 = 253_402_300_799_999;

/// What a scheduler does with the occurrences it missed (see the module docs). On the wire
/// `'skip' | 'once' | 'all'`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CatchUp {
    /// Fire none of them; an on-time occurrence still fires.
    Skip,
    /// Fire one job for all of them.
    #[default]
    Once,
    /// Fire each of them (at most [`MAX_CATCH_UP`] per tick, and as `limit` allows).
    All,
}

/// When a scheduler fires, as `upsert_scheduler` accepts it (camelCase, unknown fields refused).
/// Exactly one of `every` and `cron` is required.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ScheduleSpec {
    /// Fire every this many ms (1 ms to one year), at multiples of it counted from `startDate`, or
    /// from the Unix epoch without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub every: Option<u64>,
    /// Fire at the times this cron pattern matches (5 fields, or 6 with seconds first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// The IANA time zone `cron` is read in (e.g. `Europe/Paris`); default UTC. Only with `cron`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tz: Option<String>,
    /// No occurrence before this time (ms since the Unix epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_date: Option<u64>,
    /// No occurrence after this time (ms since the Unix epoch; not before `startDate`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_date: Option<u64>,
    /// Fire at most this many times in all (at least 1); default unlimited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Fire once as the scheduler is created (not when it is replaced).
    pub immediately: bool,
    /// What to do with missed occurrences; default `once`.
    pub catch_up: CatchUp,
}

impl ScheduleSpec {
    /// Every `ms` milliseconds, with the other fields at their defaults.
    pub fn every(ms: u64) -> Self {
        Self {
            every: Some(ms),
            ..Self::default()
        }
    }

    /// At the times `pattern` matches, in UTC, with the other fields at their defaults.
    pub fn cron(pattern: impl Into<String>) -> Self {
        Self {
            cron: Some(pattern.into()),
            ..Self::default()
        }
    }

    /// A spec from the JSON the client sent. A problem is `ERR_INVALID_INPUT` naming the field,
    /// e.g. `spec.catchUp`.
    pub fn from_json(value: Value) -> Result<Self> {
        let spec: Self = from_json_at("spec", value)?;
        spec.validate()?;
        Ok(spec)
    }

    /// Checks the spec: exactly one of `every` (1 ms to one year) and `cron` (a valid pattern that
    /// matches some time), a known `tz` (with `cron` only), `endDate` not before `startDate`,
    /// `limit` at least 1. A problem is `ERR_INVALID_INPUT` naming the field.
    pub fn validate(&self) -> Result<()> {
        self.plan().map(drop)
    }

    /// The validated timing.
    fn plan(&self) -> Result<Plan> {
        let timing = match (self.every, &self.cron) {
            (Some(every), None) => {
                if every == 0 {
                    return Err(Error::invalid_input("spec.every", "must be at least 1 ms"));
                }
                check_max("spec.every", every, MAX_DELAY_MS)?;
                if self.tz.is_some() {
                    return Err(Error::invalid_input(
                        "spec.tz",
                        "applies only to `cron`, not to `every`",
                    ));
                }
                Timing::Every(every)
            }
            (None, Some(pattern)) => {
                let cron = Cron::from_str(pattern)
                    .map_err(|e| Error::invalid_input("spec.cron", e.to_string()))?;
                let tz = match &self.tz {
                    None => Tz::UTC,
                    Some(name) => Tz::from_str(name).map_err(|_| {
                        Error::invalid_input(
                            "spec.tz",
                            format!("unknown IANA time zone `{name}` (e.g. `Europe/Paris`)"),
                        )
                    })?,
                };
                // A valid pattern can still name no real time (`0 0 30 2 *`): croner finds no
                // occurrence of it, which is better refused now than discovered as a silent
                // scheduler.
                let from = at_second(0, tz);
                if from
                    .and_then(|from| cron.find_next_occurrence(&from, true).ok())
                    .is_none()
                {
                    return Err(Error::invalid_input(
                        "spec.cron",
                        format!("`{pattern}` matches no time"),
                    ));
                }
                Timing::Cron(Box::new(cron), tz)
            }
            _ => {
                return Err(Error::invalid_input(
                    "spec",
                    "needs exactly one of `every` (ms) and `cron`",
                ))
            }
        };
        for (field, date) in [
            ("spec.startDate", self.start_date),
            ("spec.endDate", self.end_date),
        ] {
            if let Some(date) = date.filter(|date| *date > MAX_DATE_MS) {
                return Err(Error::invalid_input(
                    field,
                    format!("must be at most {MAX_DATE_MS} (ms since the Unix epoch), got {date}"),
                ));
            }
        }
        if let (Some(start), Some(end)) = (self.start_date, self.end_date) {
            if end < start {
                return Err(Error::invalid_input(
                    "spec.endDate",
                    format!("must not be before startDate ({start}), got {end}"),
                ));
            }
        }
        if self.limit == Some(0) {
            return Err(Error::invalid_input("spec.limit", "must be at least 1"));
        }
        Ok(Plan {
            timing,
            start: self.start_date,
            end: self.end_date,
            limit: self.limit,
        })
    }

    /// Whether `other` fires at the same times (bounds and limit aside).
    fn same_timing(&self, other: &ScheduleSpec) -> bool {
        self.every == other.every
            && self.cron == other.cron
            && self.tz == other.tz
            && self.start_date == other.start_date
    }
}

/// The job a scheduler enqueues at each firing. On the wire `{name, data?, options?}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobTemplate {
    /// The queue (a registered handler's name).
    pub name: String,
    /// What the handler gets; default `null`.
    #[serde(default)]
    pub data: Value,
    /// How the job runs. `jobId` must be unset: the scheduler sets it to
    /// `<schedulerId>:<dueMs>`.
    #[serde(default)]
    pub options: JobOptions,
}

impl JobTemplate {
    /// A job of queue `name` with `data` and default options.
    pub fn new(name: impl Into<String>, data: Value) -> Self {
        Self {
            name: name.into(),
            data,
            options: JobOptions::default(),
        }
    }

    /// A template from the JSON the client sent. A problem is `ERR_INVALID_INPUT` naming the
    /// field, e.g. `template.options.delay`.
    pub fn from_json(value: Value) -> Result<Self> {
        let template: Self = from_json_at("template", value)?;
        template.validate()?;
        Ok(template)
    }

    /// Checks what does not depend on the queue: the name, the size of `data`, the options.
    fn validate(&self) -> Result<()> {
        check_id("template.name", &self.name)?;
        check_json_size("template.data", &self.data)?;
        self.options
            .validate()
            .map_err(|e| prefix_field("template", e))?;
        if self.options.job_id.is_some() {
            return Err(Error::invalid_input(
                "template.options.jobId",
                "is set by the scheduler (`<schedulerId>:<dueMs>`); leave it out",
            ));
        }
        Ok(())
    }
}

/// A scheduler as stored and reported (fields camelCase).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchedulerRecord {
    /// The scheduler's id (its row is `job-scheduler/<id>`).
    pub id: String,
    /// When it fires.
    pub spec: ScheduleSpec,
    /// What it enqueues.
    pub template: JobTemplate,
    /// The due time of its next occurrence (ms); `null` once it is done (`limit` reached, past
    /// `endDate`).
    pub next_run_at: Option<u64>,
    /// The due time of the latest occurrence it fired (ms), if any.
    pub last_run_at: Option<u64>,
    /// How many times it fired (jobs enqueued; one for a `catchUp: 'once'` firing).
    pub count: u64,
    /// When it was created (ms on the clock).
    pub created_at: u64,
    /// When it last changed: upserted or fired.
    pub updated_at: u64,
}

impl SchedulerRecord {
    fn to_row(&self) -> Result<Row> {
        match serde_json::to_value(self) {
            Ok(Value::Object(mut fields)) => {
                // The id is the row's key.
                fields.remove("id");
                Ok(Row {
                    id: meta_id(&self.id),
                    fields,
                    vectors: Default::default(),
                    bytes: Default::default(),
                })
            }
            Ok(_) => Err(Error::Internal(
                "a scheduler did not serialise to an object".into(),
            )),
            Err(e) => Err(Error::Internal(format!("scheduler `{}`: {e}", self.id))),
        }
    }

    /// The record a row holds; an unreadable row is an `ERR_STORE` naming it.
    fn from_row(row: &Row) -> Result<Self> {
        let Some(id) = row.id.strip_prefix(SCHEDULER_META_PREFIX) else {
            return Err(Error::Store(format!(
                "row `{}` is not a job scheduler",
                row.id
            )));
        };
        record_from_row(row, id, &format!("job scheduler `{id}`"))
    }
}

/// When a scheduler's occurrences fall.
#[derive(Debug, Clone)]
enum Timing {
    Every(u64),
    Cron(Box<Cron>, Tz),
}

/// A validated spec's timing and bounds.
#[derive(Debug, Clone)]
struct Plan {
    timing: Timing,
    start: Option<u64>,
    end: Option<u64>,
    limit: Option<u64>,
}

impl Plan {
    /// The first occurrence at or after `t`, within `startDate..=endDate`.
    fn first_at_or_after(&self, t: u64) -> Option<u64> {
        let t = t.max(self.start.unwrap_or(0));
        let occurrence = match &self.timing {
            Timing::Every(every) => {
                let base = self.start.unwrap_or(0);
                let steps = (t - base).div_ceil(*every);
                steps
                    .checked_mul(*every)
                    .and_then(|offset| base.checked_add(offset))?
            }
            // Cron times are whole seconds; croner ignores the ms of its start, so the search
            // starts at the first whole second not before `t`.
            Timing::Cron(cron, tz) => {
                let from = at_second(t.div_ceil(1000), *tz)?;
                let found = cron.find_next_occurrence(&from, true).ok()?;
                u64::try_from(found.timestamp_millis()).ok()?
            }
        };
        (occurrence <= self.end.unwrap_or(u64::MAX)).then_some(occurrence)
    }

    /// The last occurrence at or before `t`, not before `startDate` (the caller bounds `t` by
    /// `endDate`).
    fn last_at_or_before(&self, t: u64) -> Option<u64> {
        let start = self.start.unwrap_or(0);
        if t < start {
            return None;
        }
        let occurrence = match &self.timing {
            Timing::Every(every) => start + (t - start) / every * every,
            Timing::Cron(cron, tz) => {
                let from = at_second(t / 1000, *tz)?;
                let found = cron.find_previous_occurrence(&from, true).ok()?;
                u64::try_from(found.timestamp_millis()).ok()?
            }
        };
        (occurrence >= start).then_some(occurrence)
    }

    /// `at`, a due time found under this plan's timing, if the bounds and limit still allow it
    /// (they may have changed since).
    fn keep(&self, count: u64, at: u64) -> Option<u64> {
        let allowed = self.limit.is_none_or(|limit| count < limit)
            && self.start.is_none_or(|start| at >= start)
            && self.end.is_none_or(|end| at <= end);
        allowed.then_some(at)
    }

    /// The next due time of a scheduler that fired `count` times, the latest at `last`: the first
    /// occurrence at or after `from` and after `last`, unless `limit` is reached.
    fn next_run(&self, count: u64, last: Option<u64>, from: u64) -> Option<u64> {
        if self.limit.is_some_and(|limit| count >= limit) {
            return None;
        }
        let after_last = last.map_or(0, |last| last.saturating_add(1));
        self.first_at_or_after(from.max(after_last))
    }

    /// The occurrences to fire now, oldest first, for a scheduler due at `next` that fired
    /// `count` times: see the catch-up policy in the module docs.
    fn due(&self, catch_up: CatchUp, next: u64, count: u64, now: u64) -> Vec<u64> {
        let upto = now.min(self.end.unwrap_or(u64::MAX));
        let left = self.limit.map_or(usize::MAX, |limit| {
            usize::try_from(limit.saturating_sub(count)).unwrap_or(usize::MAX)
        });
        if next > upto {
            return Vec::new();
        }
        // `next` was found forward, so it is an occurrence, and due. The latest due one is found
        // backward, then checked forward: croner moves a fixed time that falls in a DST gap past
        // the gap going forward only, so the backward search misses it.
        let mut latest = self
            .last_at_or_before(upto)
            .filter(|at| *at >= next)
            .unwrap_or(next);
        for _ in 0..MAX_CATCH_UP {
            match latest
                .checked_add(1)
                .and_then(|t| self.first_at_or_after(t))
                .filter(|at| *at <= upto)
            {
                Some(later) => latest = later,
                None => break,
            }
        }
        let mut due = match catch_up {
            CatchUp::Skip if now.saturating_sub(latest) > MISFIRE_GRACE_MS => Vec::new(),
            CatchUp::Skip | CatchUp::Once => vec![latest],
            CatchUp::All => {
                // Walks back to see whether more than MAX_CATCH_UP are due; if so the firings
                // start at the MAX_CATCH_UP-th latest, else at `next`. They are then listed
                // forward, as on-time firings are found: a cron time that a DST fold repeats is
                // one occurrence forward (croner) but two backward.
                let mut earliest = latest;
                let mut seen = 1;
                while seen < MAX_CATCH_UP {
                    let Some(earlier) = earliest
                        .checked_sub(1)
                        .and_then(|t| self.last_at_or_before(t))
                        .filter(|at| *at >= next)
                    else {
                        break;
                    };
                    earliest = earlier;
                    seen += 1;
                }
                let from = if seen == MAX_CATCH_UP { earliest } else { next };
                // Each next one is searched from just after the previous one, as on time: a
                // search *from* a gap-moved occurrence would not find that occurrence again.
                let mut due = vec![from];
                while due.len() < MAX_CATCH_UP.min(left) {
                    let Some(at) = due
                        .last()
                        .and_then(|at| at.checked_add(1))
                        .and_then(|t| self.first_at_or_after(t))
                        .filter(|at| *at <= upto)
                    else {
                        break;
                    };
                    due.push(at);
                }
                due
            }
        };
        due.truncate(left);
        due
    }
}

/// The instant `secs` after the Unix epoch, in `tz`.
fn at_second(secs: u64, tz: Tz) -> Option<DateTime<Tz>> {
    let secs = i64::try_from(secs).ok()?;
    DateTime::from_timestamp(secs, 0).map(|utc| utc.with_timezone(&tz))
}

/// What the cache keeps of a scheduler: enough for [`Scheduler::next_wake_at`] and to know which
/// rows a tick must read.
#[derive(Debug, Clone)]
struct Pending {
    next_run_at: Option<u64>,
    name: String,
}

struct Inner {
    queue: JobQueue,
    store: Rc<dyn Store>,
    clock: SharedClock,
    pending: RefCell<BTreeMap<String, Pending>>,
    /// Serialises ticks, upserts and removals of this instance: each reads a row, awaits, then
    /// writes it, and two of them interleaving would lose one's write.
    lock: Mutex<()>,
}

/// Job schedulers feeding a [`JobQueue`], persisted in the `meta` table of the queue's store: see
/// the module docs of `jobs/scheduler.rs`, summed up here.
///
/// [`Scheduler::upsert_scheduler`] creates or replaces a scheduler (`every` ms or a `cron` pattern
/// in a time zone, bounded by `startDate`/`endDate`/`limit`); [`Scheduler::tick`], called at
/// [`Scheduler::next_wake_at`], enqueues the due occurrences with `jobId =
/// "<schedulerId>:<dueMs>"` (so none is enqueued twice) and advances `nextRunAt`. Occurrences
/// found more than [`MISFIRE_GRACE_MS`] late are missed: `catchUp` `skip` drops them, `once` fires
/// one job for them all, `all` fires each (the latest [`MAX_CATCH_UP`] at most).
#[derive(Clone)]
pub struct Scheduler {
    inner: Rc<Inner>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("schedulers", &self.inner.pending.borrow().len())
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// Opens the schedulers stored with `queue`'s jobs, enqueueing into `queue` on its clock.
    /// Unreadable rows are skipped.
    pub async fn open(queue: JobQueue) -> Result<Self> {
        let store = queue.store();
        let clock = queue.clock();
        let pending = load_pending(store.as_ref()).await?;
        Ok(Self {
            inner: Rc::new(Inner {
                queue,
                store,
                clock,
                pending: RefCell::new(pending),
                lock: Mutex::new(()),
            }),
        })
    }

    /// Reads every scheduler row again, as [`Scheduler::open`] does (unreadable rows are
    /// skipped): for an instance that becomes the one firing the schedulers after others created,
    /// changed or removed some. Waits for this instance's tick, upsert or removal in progress, if
    /// any, and runs under the same lock.
    pub async fn reload(&self) -> Result<()> {
        let _serial = self.inner.lock.lock().await;
        let pending = load_pending(self.inner.store.as_ref()).await?;
        *self.inner.pending.borrow_mut() = pending;
        Ok(())
    }

    /// Creates scheduler `id` (1 to [`MAX_SCHEDULER_ID_BYTES`] bytes) or replaces its spec and
    /// template, keeping its `count`, `lastRunAt` and, if its timing is unchanged, `nextRunAt`
    /// (so upserting the same scheduler again fires nothing twice). A new scheduler with
    /// `immediately` fires once now (unless past its `endDate`). The template's queue must have a
    /// handler. Invalid input is `ERR_INVALID_INPUT` naming the field (`id`, `spec.cron`,
    /// `spec.tz`, `template.name`, ...); nothing is written then.
    pub async fn upsert_scheduler(
        &self,
        id: &str,
        spec: ScheduleSpec,
        template: JobTemplate,
    ) -> Result<SchedulerRecord> {
        check_scheduler_id(id)?;
        let plan = spec.plan()?;
        template.validate()?;
        if !self.inner.queue.is_registered(&template.name) {
            return Err(Error::invalid_input(
                "template.name",
                format!("no handler is registered for `{}`", template.name),
            ));
        }
        let _serial = self.inner.lock.lock().await;
        let now = self.inner.clock.now_ms();
        // An unreadable old row is replaced like a missing one.
        let old = self.read(id).await?.and_then(|old| old.ok());
        let mut record = SchedulerRecord {
            id: id.to_owned(),
            next_run_at: None,
            last_run_at: old.as_ref().and_then(|old| old.last_run_at),
            count: old.as_ref().map_or(0, |old| old.count),
            created_at: old.as_ref().map_or(now, |old| old.created_at),
            updated_at: now,
            spec,
            template,
        };
        // A new timing starts after now: an occurrence at this very ms fires only with
        // `immediately` (as in BullMQ).
        let after_now = now.saturating_add(1);
        record.next_run_at = match &old {
            // The same timing, still pending: `nextRunAt` stays as it is. Overdue, it keeps the
            // occurrences to catch up on; and it is not searched again, because croner finds a
            // time it moved out of a DST gap only when searching from before the gap.
            Some(old) if old.spec.same_timing(&record.spec) && old.next_run_at.is_some() => old
                .next_run_at
                .and_then(|next| plan.keep(record.count, next)),
            // A new timing, or a finished scheduler whose limit or end may have been raised.
            Some(_) => plan.next_run(record.count, record.last_run_at, after_now),
            None => {
                if record.spec.immediately && record.spec.end_date.is_none_or(|end| now <= end) {
                    // Enqueued before the row is written: a crash in between loses no firing.
                    self.fire(&record, now).await?;
                    record.count = 1;
                    record.last_run_at = Some(now);
                }
                plan.next_run(record.count, record.last_run_at, after_now)
            }
        };
        self.save(&record).await?;
        Ok(record)
    }

    /// Removes scheduler `id`; resolves whether it existed. Jobs it already enqueued stay.
    pub async fn remove_scheduler(&self, id: &str) -> Result<bool> {
        check_scheduler_id(id)?;
        let _serial = self.inner.lock.lock().await;
        let existed = self.read(id).await?.is_some();
        self.inner
            .store
            .write(vec![WriteOp::Delete(Table::Meta, meta_id(id))])
            .await?;
        self.inner.pending.borrow_mut().remove(id);
        Ok(existed)
    }

    /// Scheduler `id` as stored, with its `nextRunAt`, `lastRunAt` and `count`.
    pub async fn get_scheduler(&self, id: &str) -> Result<Option<SchedulerRecord>> {
        check_scheduler_id(id)?;
        let _serial = self.inner.lock.lock().await;
        let record = self.read(id).await?.transpose()?;
        let mut pending = self.inner.pending.borrow_mut();
        match &record {
            Some(record) => pending.insert(id.to_owned(), pending_of(record)),
            None => pending.remove(id),
        };
        Ok(record)
    }

    /// Every scheduler as stored, in id order (also refreshing this instance's view of those
    /// other instances created or removed).
    pub async fn list_schedulers(&self) -> Result<Vec<SchedulerRecord>> {
        let _serial = self.inner.lock.lock().await;
        let records = scan_rows(self.inner.store.as_ref())
            .await?
            .iter()
            .map(SchedulerRecord::from_row)
            .collect::<Result<Vec<_>>>()?;
        *self.inner.pending.borrow_mut() = records
            .iter()
            .map(|record| (record.id.clone(), pending_of(record)))
            .collect();
        Ok(records)
    }

    /// When [`Scheduler::tick`] next has something to do (ms on the clock): the earliest
    /// `nextRunAt` of the schedulers whose queue has a handler; `None` when none is pending.
    pub fn next_wake_at(&self) -> Option<u64> {
        self.inner
            .pending
            .borrow()
            .values()
            .filter(|pending| self.inner.queue.is_registered(&pending.name))
            .filter_map(|pending| pending.next_run_at)
            .min()
    }

    /// Fires the due schedulers: for each whose `nextRunAt` has come and whose queue has a
    /// handler (the others wait for one), reads its row, enqueues the occurrences its catch-up
    /// policy fires, then stores its new `nextRunAt`, `lastRunAt` and `count`. Returns the jobs
    /// enqueued (tick the queue next). On a store error it stops; what it did not store is
    /// fired again by the next tick, under the same job ids.
    pub async fn tick(&self) -> Result<Vec<JobRecord>> {
        let _serial = self.inner.lock.lock().await;
        let now = self.inner.clock.now_ms();
        let due: Vec<String> = self
            .inner
            .pending
            .borrow()
            .iter()
            .filter(|(_, pending)| {
                pending.next_run_at.is_some_and(|next| next <= now)
                    && self.inner.queue.is_registered(&pending.name)
            })
            .map(|(id, _)| id.clone())
            .collect();
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self
            .inner
            .store
            .get(Table::Meta, due.iter().map(|id| meta_id(id)).collect())
            .await?;
        let mut jobs = Vec::new();
        for (id, row) in due.iter().zip(rows) {
            // Read again: another instance may have fired, changed or removed it meanwhile. An
            // unreadable row or spec is left alone (it is reported by `list_schedulers`).
            let Some(mut record) = row.and_then(|row| SchedulerRecord::from_row(&row).ok()) else {
                self.inner.pending.borrow_mut().remove(id);
                continue;
            };
            let Ok(plan) = record.spec.plan() else {
                self.inner.pending.borrow_mut().remove(id);
                continue;
            };
            let Some(next) = record.next_run_at.filter(|next| *next <= now) else {
                self.remember(&record);
                continue;
            };
            if !self.inner.queue.is_registered(&record.template.name) {
                self.remember(&record);
                continue;
            }
            let fired = plan.due(record.spec.catch_up, next, record.count, now);
            for at in &fired {
                jobs.push(self.fire(&record, *at).await?);
            }
            if let Some(last) = fired.last() {
                record.count = record.count.saturating_add(fired.len() as u64);
                record.last_run_at = Some(*last);
            }
            // Everything due up to now is dealt with: fired or, per the policy, dropped.
            record.next_run_at =
                plan.next_run(record.count, record.last_run_at, now.saturating_add(1));
            record.updated_at = now;
            self.save(&record).await?;
        }
        Ok(jobs)
    }

    /// Enqueues `record`'s job for the occurrence due at `due`.
    async fn fire(&self, record: &SchedulerRecord, due: u64) -> Result<JobRecord> {
        let mut options = record.template.options.clone();
        options.job_id = Some(format!("{}:{due}", record.id));
        self.inner
            .queue
            .enqueue(&record.template.name, record.template.data.clone(), options)
            .await
    }

    /// Scheduler `id`'s row: `None` if there is none, `Some(Err)` if it is unreadable.
    async fn read(&self, id: &str) -> Result<Option<Result<SchedulerRecord>>> {
        let row = self
            .inner
            .store
            .get(Table::Meta, vec![meta_id(id)])
            .await?
            .pop()
            .flatten();
        Ok(row.map(|row| SchedulerRecord::from_row(&row)))
    }

    async fn save(&self, record: &SchedulerRecord) -> Result<()> {
        self.inner
            .store
            .write(vec![WriteOp::Put(Table::Meta, record.to_row()?)])
            .await?;
        self.remember(record);
        Ok(())
    }

    fn remember(&self, record: &SchedulerRecord) {
        self.inner
            .pending
            .borrow_mut()
            .insert(record.id.clone(), pending_of(record));
    }
}

fn pending_of(record: &SchedulerRecord) -> Pending {
    Pending {
        next_run_at: record.next_run_at,
        name: record.template.name.clone(),
    }
}

fn meta_id(id: &str) -> String {
    format!("{SCHEDULER_META_PREFIX}{id}")
}

fn check_scheduler_id(id: &str) -> Result<()> {
    check_id("id", id)?;
    if id.len() > MAX_SCHEDULER_ID_BYTES {
        return Err(Error::invalid_input(
            "id",
            format!(
                "is {} bytes; a scheduler id is at most {MAX_SCHEDULER_ID_BYTES}",
                id.len()
            ),
        ));
    }
    Ok(())
}

/// What the cache keeps of every readable scheduler row (unreadable ones are skipped).
async fn load_pending(store: &dyn Store) -> Result<BTreeMap<String, Pending>> {
    let mut pending = BTreeMap::new();
    for row in scan_rows(store).await? {
        if let Ok(record) = SchedulerRecord::from_row(&row) {
            pending.insert(record.id.clone(), pending_of(&record));
        }
    }
    Ok(pending)
}

/// Every scheduler row: the `meta` rows whose ids start with the prefix, which sort together.
async fn scan_rows(store: &dyn Store) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut scan = Scan::first(1000).after(SCHEDULER_META_PREFIX);
    loop {
        let page = store.scan(Table::Meta, scan.clone()).await?;
        let last_page = page.len() < scan.limit;
        let Some(last) = page.last().map(|row| row.id.clone()) else {
            break;
        };
        let mut past_prefix = false;
        for row in page {
            if row.id.starts_with(SCHEDULER_META_PREFIX) {
                rows.push(row);
            } else {
                past_prefix = true;
                break;
            }
        }
        if last_page || past_prefix {
            break;
        }
        scan = scan.after(last);
    }
    Ok(rows)
}

/// `error` with its field put under `prefix` (`options.delay` → `template.options.delay`).
fn prefix_field(prefix: &str, error: Error) -> Error {
    match error {
        Error::InvalidInput { field, reason } => Error::InvalidInput {
            field: format!("{prefix}.{field}"),
            reason,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests;
