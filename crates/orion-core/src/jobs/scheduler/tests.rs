use std::collections::BTreeSet;
use std::rc::Rc;

use chrono::{NaiveDate, TimeZone};
use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::clock::{Clock, ManualClock};
use crate::jobs::{JobFilter, QueueConfig};
use crate::store::conformance::block_on;
use crate::store::MemStore;

const HOUR: u64 = 3_600_000;

struct Fixture {
    clock: ManualClock,
    store: Rc<MemStore>,
    queue: JobQueue,
    scheduler: Scheduler,
}

fn open_queue(store: Rc<MemStore>, clock: &ManualClock, register: bool) -> JobQueue {
    let queue = block_on(JobQueue::open(
        store,
        clock.shared(),
        QueueConfig::default(),
    ))
    .unwrap();
    if register {
        queue
            .register("q", 1, |_| Box::pin(async { Ok(Value::Null) }))
            .unwrap();
    }
    queue
}

impl Fixture {
    fn at(now: u64) -> Self {
        let clock = ManualClock::new(now);
        let store = Rc::new(MemStore::new());
        let queue = open_queue(store.clone(), &clock, true);
        let scheduler = block_on(Scheduler::open(queue.clone())).unwrap();
        Self {
            clock,
            store,
            queue,
            scheduler,
        }
    }

    /// A new queue and scheduler over the same store and clock, as after a reload.
    fn reopen(&mut self) {
        self.queue = open_queue(self.store.clone(), &self.clock, true);
        self.scheduler = block_on(Scheduler::open(self.queue.clone())).unwrap();
    }

    fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    fn upsert(&self, id: &str, spec: ScheduleSpec) -> SchedulerRecord {
        self.upsert_data(id, spec, json!({"from": id}))
    }

    fn upsert_data(&self, id: &str, spec: ScheduleSpec, data: Value) -> SchedulerRecord {
        block_on(
            self.scheduler
                .upsert_scheduler(id, spec, JobTemplate::new("q", data)),
        )
        .unwrap()
    }

    fn get(&self, id: &str) -> SchedulerRecord {
        block_on(self.scheduler.get_scheduler(id)).unwrap().unwrap()
    }

    /// Ticks; the ids of the jobs enqueued.
    fn tick(&self) -> Vec<String> {
        block_on(self.scheduler.tick())
            .unwrap()
            .into_iter()
            .map(|job| job.id)
            .collect()
    }

    /// Every job id in the `jobs` table.
    fn job_ids(&self) -> Vec<String> {
        let filter = JobFilter {
            limit: 1000,
            ..JobFilter::default()
        };
        block_on(self.queue.list(filter))
            .unwrap()
            .items
            .into_iter()
            .map(|job| job.id)
            .collect()
    }
}

fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> u64 {
    let at = NaiveDate::from_ymd_opt(y, m, d)
        .unwrap()
        .and_hms_opt(h, min, 0)
        .unwrap()
        .and_utc();
    u64::try_from(at.timestamp_millis()).unwrap()
}

fn paris(y: i32, m: u32, d: u32, h: u32, min: u32) -> u64 {
    let at = chrono_tz::Europe::Paris
        .with_ymd_and_hms(y, m, d, h, min, 0)
        .single()
        .unwrap();
    u64::try_from(at.timestamp_millis()).unwrap()
}

fn ids(scheduler: &str, dues: impl IntoIterator<Item = u64>) -> Vec<String> {
    dues.into_iter()
        .map(|due| format!("{scheduler}:{due}"))
        .collect()
}

fn field_of(error: Error) -> String {
    match error {
        Error::InvalidInput { field, .. } => field,
        other => panic!("expected ERR_INVALID_INPUT, got {other:?}"),
    }
}

#[test]
fn every_fires_at_multiples_of_the_interval() {
    let f = Fixture::at(1_000_500);
    let record = f.upsert("s", ScheduleSpec::every(1000));
    assert_eq!(record.next_run_at, Some(1_001_000));
    assert_eq!((record.count, record.last_run_at), (0, None));
    assert_eq!(f.scheduler.next_wake_at(), Some(1_001_000));
    assert!(f.tick().is_empty(), "nothing is due yet");

    let mut fired = Vec::new();
    for _ in 0..5 {
        f.clock.set(f.scheduler.next_wake_at().unwrap());
        fired.extend(f.tick());
        assert!(
            f.tick().is_empty(),
            "a second tick at the same time fires nothing"
        );
    }
    assert_eq!(fired, ids("s", (1..=5).map(|k| 1_000_000 + k * 1000)));
    assert_eq!(f.job_ids(), fired);
    let job = block_on(f.queue.get("s:1001000")).unwrap().unwrap();
    assert_eq!((job.name.as_str(), &job.data), ("q", &json!({"from": "s"})));
    let record = f.get("s");
    assert_eq!(record.count, 5);
    assert_eq!(record.last_run_at, Some(1_005_000));
    assert_eq!(record.next_run_at, Some(1_006_000));
}

#[test]
fn cron_in_paris_follows_the_dst_changes() {
    // Paris moves to summer time on 2025-03-30 and back on 2025-10-26: 9:00 there is 8:00 UTC
    // in winter and 7:00 UTC in summer.
    let f = Fixture::at(utc(2025, 3, 28, 12, 0));
    let spec = ScheduleSpec {
        tz: Some("Europe/Paris".into()),
        ..ScheduleSpec::cron("0 9 * * *")
    };
    let record = f.upsert("daily", spec);
    assert_eq!(record.next_run_at, Some(utc(2025, 3, 29, 8, 0)));
    let mut fired = Vec::new();
    for _ in 0..3 {
        f.clock.set(f.scheduler.next_wake_at().unwrap());
        fired.extend(f.tick());
    }
    assert_eq!(
        fired,
        ids(
            "daily",
            [
                utc(2025, 3, 29, 8, 0),
                utc(2025, 3, 30, 7, 0),
                utc(2025, 3, 31, 7, 0)
            ]
        )
    );
    for day in 29..=31 {
        assert!(fired.contains(&format!("daily:{}", paris(2025, 3, day, 9, 0))));
    }

    // And back to winter time in October.
    f.clock.set(utc(2025, 10, 25, 12, 0));
    f.tick(); // the missed days: one catch-up job (`once`)
    assert_eq!(f.get("daily").next_run_at, Some(utc(2025, 10, 26, 8, 0)));
    f.clock.set(utc(2025, 10, 26, 8, 0));
    assert_eq!(f.tick(), ids("daily", [paris(2025, 10, 26, 9, 0)]));
    assert_eq!(f.get("daily").next_run_at, Some(utc(2025, 10, 27, 8, 0)));

    // The same pattern without tz is read in UTC.
    let record = f.upsert("utc", ScheduleSpec::cron("0 9 * * *"));
    assert_eq!(record.next_run_at, Some(utc(2025, 10, 26, 9, 0)));
}

#[test]
fn cron_with_seconds_and_aliases() {
    let f = Fixture::at(utc(2025, 1, 1, 0, 0) + 1500);
    let record = f.upsert("secs", ScheduleSpec::cron("*/10 * * * * *"));
    assert_eq!(record.next_run_at, Some(utc(2025, 1, 1, 0, 0) + 10_000));
    let record = f.upsert("hourly", ScheduleSpec::cron("@hourly"));
    assert_eq!(record.next_run_at, Some(utc(2025, 1, 1, 1, 0)));
}

#[test]
fn start_date_end_date_and_limit_bound_the_firings() {
    let f = Fixture::at(1_000_000);
    let start = 1_005_500;
    let spec = ScheduleSpec {
        start_date: Some(start),
        end_date: Some(start + 3000),
        ..ScheduleSpec::every(1000)
    };
    // Occurrences are counted from startDate.
    assert_eq!(f.upsert("bounded", spec).next_run_at, Some(start));
    let mut fired = Vec::new();
    while let Some(at) = f.scheduler.next_wake_at() {
        f.clock.set(at);
        fired.extend(f.tick());
    }
    assert_eq!(fired, ids("bounded", (0..=3).map(|k| start + k * 1000)));
    let record = f.get("bounded");
    assert_eq!((record.next_run_at, record.count), (None, 4));

    let limited = ScheduleSpec {
        limit: Some(2),
        ..ScheduleSpec::every(1000)
    };
    f.upsert("limited", limited);
    let mut fired = Vec::new();
    for _ in 0..5 {
        f.clock.advance(1000);
        fired.extend(f.tick());
    }
    assert_eq!(fired.len(), 2);
    let record = f.get("limited");
    assert_eq!((record.next_run_at, record.count), (None, 2));
    assert_eq!(f.scheduler.next_wake_at(), None);

    // Raising the limit resumes it, from now.
    let raised = ScheduleSpec {
        limit: Some(3),
        ..ScheduleSpec::every(1000)
    };
    let record = f.upsert("limited", raised);
    assert_eq!(f.now(), 1_013_500);
    assert_eq!(record.next_run_at, Some(1_014_000));
    f.clock.set(1_014_000);
    f.tick();
    assert_eq!(f.get("limited").count, 3);
    assert_eq!(f.get("limited").next_run_at, None);

    // An endDate already past: stored, but never fires.
    let past = ScheduleSpec {
        end_date: Some(1000),
        immediately: true,
        ..ScheduleSpec::every(1000)
    };
    let record = f.upsert("past", past);
    assert_eq!((record.next_run_at, record.count), (None, 0));
}

#[test]
fn immediately_fires_once_on_creation_only() {
    let f = Fixture::at(1_000_000);
    let spec = ScheduleSpec {
        immediately: true,
        ..ScheduleSpec::every(1000)
    };
    let record = f.upsert("now", spec.clone());
    assert_eq!(f.job_ids(), ids("now", [1_000_000]));
    assert_eq!(record.count, 1);
    assert_eq!(record.last_run_at, Some(1_000_000));
    // 1_000_000 is itself a multiple of 1000: it fired already, so the next one is later.
    assert_eq!(record.next_run_at, Some(1_001_000));
    assert!(f.tick().is_empty());

    // Upserting again (as an app does on each start) does not fire again.
    f.clock.advance(10);
    let record = f.upsert("now", spec);
    assert_eq!((record.count, record.next_run_at), (1, Some(1_001_000)));
    assert_eq!(f.job_ids().len(), 1);

    // immediately with limit 1: the immediate firing is the only one.
    let once = ScheduleSpec {
        immediately: true,
        limit: Some(1),
        ..ScheduleSpec::cron("* * * * *")
    };
    let record = f.upsert("once", once);
    assert_eq!((record.count, record.next_run_at), (1, None));
}

/// A scheduler hourly from `start`, ticked once on time, then the clock jumps 5.5 hours.
fn after_a_jump(catch_up: CatchUp, limit: Option<u64>) -> (Fixture, Vec<String>) {
    let f = Fixture::at(10 * HOUR + 1);
    let spec = ScheduleSpec {
        catch_up,
        limit,
        ..ScheduleSpec::every(HOUR)
    };
    f.upsert("h", spec);
    f.clock.set(11 * HOUR);
    assert_eq!(f.tick(), ids("h", [11 * HOUR]));
    // Due: 12h..=17h; 17h is 30 min late, so missed too.
    f.clock.set(17 * HOUR + HOUR / 2);
    let fired = f.tick();
    if limit.is_none() {
        assert_eq!(f.get("h").next_run_at, Some(18 * HOUR));
    }
    assert!(f.tick().is_empty(), "each occurrence fires at most once");
    (f, fired)
}

#[test]
fn catch_up_skip_fires_none_of_the_missed() {
    let (f, fired) = after_a_jump(CatchUp::Skip, None);
    assert!(fired.is_empty());
    let record = f.get("h");
    assert_eq!((record.count, record.last_run_at), (1, Some(11 * HOUR)));

    // A tick a little late (within the grace) still fires the occurrence.
    f.clock.set(18 * HOUR + MISFIRE_GRACE_MS);
    assert_eq!(f.tick(), ids("h", [18 * HOUR]));
}

#[test]
fn catch_up_once_fires_one_job_for_the_missed() {
    let (f, fired) = after_a_jump(CatchUp::Once, None);
    assert_eq!(fired, ids("h", [17 * HOUR]));
    let record = f.get("h");
    assert_eq!((record.count, record.last_run_at), (2, Some(17 * HOUR)));
}

#[test]
fn catch_up_all_fires_each_missed_within_limit_and_cap() {
    let (f, fired) = after_a_jump(CatchUp::All, None);
    assert_eq!(fired, ids("h", (12..=17).map(|h| h * HOUR)));
    assert_eq!(f.get("h").count, 7);

    // With a limit, the earliest ones it allows.
    let (f, fired) = after_a_jump(CatchUp::All, Some(4));
    assert_eq!(fired, ids("h", (12..=14).map(|h| h * HOUR)));
    let record = f.get("h");
    assert_eq!((record.count, record.next_run_at), (4, None));
    drop(f);

    // More than MAX_CATCH_UP missed: the latest MAX_CATCH_UP fire.
    let f = Fixture::at(1);
    let spec = ScheduleSpec {
        catch_up: CatchUp::All,
        ..ScheduleSpec::every(1000)
    };
    f.upsert("many", spec);
    f.clock.set(5_000_000);
    let fired = f.tick();
    assert_eq!(fired.len(), MAX_CATCH_UP);
    assert_eq!(fired.first(), Some(&"many:4001000".to_owned()));
    assert_eq!(fired.last(), Some(&"many:5000000".to_owned()));
    assert_eq!(f.get("many").next_run_at, Some(5_001_000));
}

#[test]
fn catch_up_of_cron_after_a_long_sleep() {
    let f = Fixture::at(utc(2025, 6, 1, 0, 0));
    let spec = ScheduleSpec {
        catch_up: CatchUp::All,
        tz: Some("America/New_York".into()),
        ..ScheduleSpec::cron("30 8 * * 1-5")
    };
    f.upsert("weekdays", spec);
    // Sunday 1 June to Sunday 8 June: Monday to Friday at 8:30 New York (EDT, UTC-4).
    f.clock.set(utc(2025, 6, 8, 0, 0));
    assert_eq!(
        f.tick(),
        ids("weekdays", (2..=6).map(|d| utc(2025, 6, d, 12, 30)))
    );
    assert_eq!(f.get("weekdays").next_run_at, Some(utc(2025, 6, 9, 12, 30)));
}

/// Catching up with `all` fires the same occurrences as ticking on time would have, also across
/// a DST gap (02:30 does not exist in Paris on 2025-03-30) and fold (it happens twice on
/// 2025-10-26).
#[test]
fn catch_up_all_matches_firing_on_time_across_dst() {
    for (from, to) in [
        (utc(2025, 3, 28, 12, 0), utc(2025, 4, 1, 12, 0)),
        (utc(2025, 10, 24, 12, 0), utc(2025, 10, 28, 12, 0)),
    ] {
        let spec = ScheduleSpec {
            tz: Some("Europe/Paris".into()),
            catch_up: CatchUp::All,
            ..ScheduleSpec::cron("30 2 * * *")
        };
        let on_time = Fixture::at(from);
        on_time.upsert("s", spec.clone());
        let mut expected = Vec::new();
        while let Some(at) = on_time.scheduler.next_wake_at().filter(|at| *at <= to) {
            on_time.clock.set(at);
            expected.extend(on_time.tick());
        }
        assert_eq!(expected.len(), 4, "{expected:?}");

        let late = Fixture::at(from);
        late.upsert("s", spec);
        late.clock.set(to);
        assert_eq!(late.tick(), expected);
        assert_eq!(late.get("s").next_run_at, on_time.scheduler.next_wake_at());
    }

    // Due first at a time moved out of the gap (03:00 CEST), which only a forward search finds.
    let spec = ScheduleSpec {
        tz: Some("Europe/Paris".into()),
        catch_up: CatchUp::All,
        ..ScheduleSpec::cron("30 2 * * *")
    };
    let f = Fixture::at(utc(2025, 3, 30, 0, 0));
    assert_eq!(
        f.upsert("s", spec).next_run_at,
        Some(utc(2025, 3, 30, 1, 0))
    );
    f.clock.set(utc(2025, 4, 1, 12, 0));
    assert_eq!(
        f.tick(),
        ids(
            "s",
            [
                utc(2025, 3, 30, 1, 0),
                utc(2025, 3, 31, 0, 30),
                utc(2025, 4, 1, 0, 30)
            ]
        )
    );
}

#[test]
fn upsert_replaces_spec_and_template_without_double_firing() {
    let f = Fixture::at(1_000_000);
    f.upsert("s", ScheduleSpec::every(1000));
    f.clock.set(1_001_000);
    assert_eq!(f.tick(), ids("s", [1_001_000]));

    // Same timing, new data and limit: progress kept, the next firing uses the new template.
    f.clock.set(1_001_500);
    let spec = ScheduleSpec {
        limit: Some(10),
        ..ScheduleSpec::every(1000)
    };
    let record = f.upsert_data("s", spec, json!({"v": 2}));
    assert_eq!(record.next_run_at, Some(1_002_000));
    assert_eq!((record.count, record.last_run_at), (1, Some(1_001_000)));
    assert_eq!(record.created_at, 1_000_000);
    assert!(f.tick().is_empty());
    f.clock.set(1_002_000);
    assert_eq!(f.tick(), ids("s", [1_002_000]));
    let job = block_on(f.queue.get("s:1002000")).unwrap().unwrap();
    assert_eq!(job.data, json!({"v": 2}));

    // A new timing starts from now.
    f.clock.set(1_002_100);
    let record = f.upsert("s", ScheduleSpec::every(5000));
    assert_eq!(record.next_run_at, Some(1_005_000));
    assert_eq!(record.count, 2);

    // Upserting the same spec while overdue keeps the occurrences to catch up on.
    f.clock.set(1_020_000);
    let record = f.upsert("s", ScheduleSpec::every(5000));
    assert_eq!(record.next_run_at, Some(1_005_000));
    assert_eq!(f.tick(), ids("s", [1_020_000]));
    assert_eq!(f.get("s").next_run_at, Some(1_025_000));

    // A cron replacing an interval.
    let record = f.upsert("s", ScheduleSpec::cron("0 * * * *"));
    assert_eq!(record.next_run_at, Some(HOUR));
    assert_eq!(f.scheduler.next_wake_at(), Some(HOUR));
}

#[test]
fn remove_stops_a_scheduler() {
    let f = Fixture::at(1_000_000);
    f.upsert("a", ScheduleSpec::every(1000));
    f.upsert("b", ScheduleSpec::every(7000));
    assert!(block_on(f.scheduler.remove_scheduler("a")).unwrap());
    assert!(!block_on(f.scheduler.remove_scheduler("a")).unwrap());
    assert_eq!(block_on(f.scheduler.get_scheduler("a")).unwrap(), None);
    assert_eq!(f.scheduler.next_wake_at(), Some(1_001_000)); // 143 * 7000
    f.clock.set(1_010_000);
    assert_eq!(f.tick(), ids("b", [1_008_000]));
    block_on(f.scheduler.remove_scheduler("b")).unwrap();
    assert_eq!(f.scheduler.next_wake_at(), None);
    assert!(block_on(f.scheduler.list_schedulers()).unwrap().is_empty());
}

#[test]
fn list_returns_every_scheduler_and_nothing_else() {
    let f = Fixture::at(1_000_000);
    block_on(f.queue.pause_queue("q")).unwrap(); // a `meta` row of the queue
    for id in ["b", "a", "c/d"] {
        f.upsert(id, ScheduleSpec::every(1000));
    }
    block_on(f.store.write(vec![WriteOp::Put(
        Table::Meta,
        Row::new("zzz").with("x", 1),
    )]))
    .unwrap();
    let listed = block_on(f.scheduler.list_schedulers()).unwrap();
    let ids: Vec<&str> = listed.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c/d"]);
    assert!(listed.iter().all(|r| r.next_run_at == Some(1_001_000)));
    assert_eq!(
        serde_json::to_value(&listed[0]).unwrap(),
        json!({
            "id": "a",
            "spec": {"every": 1000, "immediately": false, "catchUp": "once"},
            "template": {"name": "q", "data": {"from": "a"}, "options": serde_json::to_value(JobOptions::default()).unwrap()},
            "nextRunAt": 1_001_000,
            "lastRunAt": null,
            "count": 0,
            "createdAt": 1_000_000,
            "updatedAt": 1_000_000,
        })
    );
}

#[test]
fn a_reopened_scheduler_continues_without_double_firing() {
    let mut f = Fixture::at(1_000_000);
    f.upsert("s", ScheduleSpec::every(1000));
    f.clock.set(1_002_000);
    assert_eq!(f.tick(), ids("s", [1_002_000]));
    let before = f.store.snapshot_rows(Table::Meta);

    f.reopen();
    assert_eq!(f.scheduler.next_wake_at(), Some(1_003_000));
    assert!(f.tick().is_empty());
    f.clock.set(1_003_000);
    assert_eq!(f.tick(), ids("s", [1_003_000]));
    assert_eq!(f.get("s").count, 2);

    // A crash after the enqueue but before the scheduler's row was saved: the row is as before,
    // so the next instance fires 1_003_000 again, and the queue keeps the one job of that id.
    block_on(
        f.store.write(
            before
                .into_iter()
                .map(|row| WriteOp::Put(Table::Meta, row))
                .collect(),
        ),
    )
    .unwrap();
    f.reopen();
    assert_eq!(f.tick(), ids("s", [1_003_000]));
    assert_eq!(f.job_ids(), ids("s", [1_002_000, 1_003_000]));
    assert_eq!(f.get("s").count, 2);
}

#[test]
fn two_instances_on_one_store_enqueue_each_occurrence_once() {
    let f = Fixture::at(1_000_000);
    f.upsert("s", ScheduleSpec::every(1000));
    let other_queue = open_queue(f.store.clone(), &f.clock, true);
    let other = block_on(Scheduler::open(other_queue)).unwrap();
    f.clock.set(1_001_000);
    let first = f.tick();
    let second: Vec<String> = block_on(other.tick())
        .unwrap()
        .into_iter()
        .map(|job| job.id)
        .collect();
    // The other instance read the row again: already fired, nothing to do.
    assert_eq!(first, ids("s", [1_001_000]));
    assert!(second.is_empty());
    assert_eq!(other.next_wake_at(), Some(1_002_000));
    assert_eq!(f.job_ids(), first);
}

#[test]
fn schedulers_of_an_unregistered_queue_wait_for_its_handler() {
    let f = Fixture::at(1_000_000);
    f.upsert("s", ScheduleSpec::every(1000));
    let (clock, store) = (f.clock.clone(), f.store.clone());
    drop(f);
    // After a reload, before the handler is registered.
    let queue = open_queue(store.clone(), &clock, false);
    let scheduler = block_on(Scheduler::open(queue.clone())).unwrap();
    clock.set(1_005_000);
    assert_eq!(scheduler.next_wake_at(), None);
    assert!(block_on(scheduler.tick()).unwrap().is_empty());
    queue
        .register("q", 1, |_| Box::pin(async { Ok(Value::Null) }))
        .unwrap();
    assert_eq!(scheduler.next_wake_at(), Some(1_001_000));
    let fired: Vec<String> = block_on(scheduler.tick())
        .unwrap()
        .into_iter()
        .map(|job| job.id)
        .collect();
    assert_eq!(fired, ids("s", [1_005_000])); // catchUp `once`
}

#[test]
fn bad_input_is_refused_naming_the_field() {
    let f = Fixture::at(1_000_000);
    let upsert = |id: &str, spec: ScheduleSpec, template: JobTemplate| {
        field_of(block_on(f.scheduler.upsert_scheduler(id, spec, template)).unwrap_err())
    };
    let q = || JobTemplate::new("q", Value::Null);
    let cron = |pattern: &str, tz: Option<&str>| ScheduleSpec {
        tz: tz.map(str::to_owned),
        ..ScheduleSpec::cron(pattern)
    };
    assert_eq!(upsert("s", cron("61 * * * *", None), q()), "spec.cron");
    assert_eq!(upsert("s", cron("not a cron", None), q()), "spec.cron");
    assert_eq!(upsert("s", cron("", None), q()), "spec.cron");
    assert_eq!(upsert("s", cron("0 0 30 2 *", None), q()), "spec.cron");
    assert_eq!(
        upsert("s", cron("0 9 * * *", Some("Mars/Olympus")), q()),
        "spec.tz"
    );
    assert_eq!(upsert("s", ScheduleSpec::every(0), q()), "spec.every");
    assert_eq!(
        upsert("s", ScheduleSpec::every(MAX_DELAY_MS + 1), q()),
        "spec.every"
    );
    let tz_with_every = ScheduleSpec {
        tz: Some("UTC".into()),
        ..ScheduleSpec::every(1000)
    };
    assert_eq!(upsert("s", tz_with_every, q()), "spec.tz");
    assert_eq!(upsert("s", ScheduleSpec::default(), q()), "spec");
    let both = ScheduleSpec {
        every: Some(1000),
        ..ScheduleSpec::cron("* * * * *")
    };
    assert_eq!(upsert("s", both, q()), "spec");
    let backwards = ScheduleSpec {
        start_date: Some(2000),
        end_date: Some(1000),
        ..ScheduleSpec::every(1000)
    };
    assert_eq!(upsert("s", backwards, q()), "spec.endDate");
    let far = ScheduleSpec {
        start_date: Some(MAX_DATE_MS + 1),
        ..ScheduleSpec::every(1000)
    };
    assert_eq!(upsert("s", far, q()), "spec.startDate");
    let no_limit = ScheduleSpec {
        limit: Some(0),
        ..ScheduleSpec::every(1000)
    };
    assert_eq!(upsert("s", no_limit, q()), "spec.limit");
    let every = || ScheduleSpec::every(1000);
    assert_eq!(
        upsert("s", every(), JobTemplate::new("nobody", Value::Null)),
        "template.name"
    );
    assert_eq!(
        upsert("s", every(), JobTemplate::new("", Value::Null)),
        "template.name"
    );
    let with_id = JobTemplate {
        options: JobOptions {
            job_id: Some("mine".into()),
            ..JobOptions::default()
        },
        ..q()
    };
    assert_eq!(upsert("s", every(), with_id), "template.options.jobId");
    let bad_attempts = JobTemplate {
        options: JobOptions {
            attempts: 0,
            ..JobOptions::default()
        },
        ..q()
    };
    assert_eq!(
        upsert("s", every(), bad_attempts),
        "template.options.attempts"
    );
    assert_eq!(upsert("", every(), q()), "id");
    assert_eq!(
        upsert(&"x".repeat(MAX_SCHEDULER_ID_BYTES + 1), every(), q()),
        "id"
    );
    // The longest id still makes a valid job id.
    let long = "x".repeat(MAX_SCHEDULER_ID_BYTES);
    let spec = ScheduleSpec {
        immediately: true,
        ..ScheduleSpec::every(1000)
    };
    let record = block_on(f.scheduler.upsert_scheduler(&long, spec, q())).unwrap();
    assert_eq!(record.count, 1);
    block_on(f.scheduler.remove_scheduler(&long)).unwrap();
    assert!(block_on(f.scheduler.list_schedulers()).unwrap().is_empty());
    assert_eq!(
        field_of(block_on(f.scheduler.get_scheduler("")).unwrap_err()),
        "id"
    );
}

#[test]
fn specs_and_templates_from_json() {
    let spec = ScheduleSpec::from_json(json!({
        "cron": "0 9 * * *", "tz": "Europe/Paris", "startDate": 5, "endDate": 10,
        "limit": 3, "immediately": true, "catchUp": "all"
    }))
    .unwrap();
    assert_eq!(spec.catch_up, CatchUp::All);
    assert_eq!(
        (spec.start_date, spec.end_date, spec.limit),
        (Some(5), Some(10), Some(3))
    );
    assert_eq!(
        ScheduleSpec::from_json(json!({"every": 5}))
            .unwrap()
            .catch_up,
        CatchUp::Once
    );
    let field = |value: Value| field_of(ScheduleSpec::from_json(value).unwrap_err());
    assert_eq!(
        field(json!({"every": 5, "catchUp": "sometimes"})),
        "spec.catchUp"
    );
    assert_eq!(field(json!({"every": -5})), "spec.every");
    assert_eq!(field(json!({"every": 0})), "spec.every");
    assert_eq!(field(json!({"cron": 5})), "spec.cron");
    assert_eq!(
        field(json!({"cron": "0 9 * * *", "tz": "Nowhere"})),
        "spec.tz"
    );
    assert_eq!(field(json!({"every": 5, "when": "now"})), "spec.when");
    assert_eq!(field(json!([1])), "spec");

    let template = JobTemplate::from_json(json!({
        "name": "q", "data": {"a": 1}, "options": {"priority": "high", "attempts": 3}
    }))
    .unwrap();
    assert_eq!(template.options.attempts, 3);
    let field = |value: Value| field_of(JobTemplate::from_json(value).unwrap_err());
    assert_eq!(
        field(json!({"name": "q", "options": {"priority": 99}})),
        "template.options.priority"
    );
    assert_eq!(
        field(json!({"name": "q", "options": {"delay": MAX_DELAY_MS + 1}})),
        "template.options.delay"
    );
    assert_eq!(
        field(json!({"name": "q", "options": {"jobId": "x"}})),
        "template.options.jobId"
    );
    assert_eq!(field(json!({"data": 1})), "template.name");
    assert_eq!(field(json!(null)), "template");
}

#[test]
fn unreadable_rows_are_skipped_on_open_and_reported_by_list() {
    let mut f = Fixture::at(1_000_000);
    f.upsert("good", ScheduleSpec::every(1000));
    block_on(f.store.write(vec![WriteOp::Put(
        Table::Meta,
        Row::new("job-scheduler/bad").with("spec", "nonsense"),
    )]))
    .unwrap();
    f.reopen();
    assert_eq!(f.scheduler.next_wake_at(), Some(1_001_000));
    let error = block_on(f.scheduler.list_schedulers()).unwrap_err();
    assert!(
        matches!(error, Error::Store(ref m) if m.contains("bad")),
        "{error:?}"
    );
    assert!(matches!(
        block_on(f.scheduler.get_scheduler("bad")),
        Err(Error::Store(_))
    ));
    // It can be replaced or removed.
    f.upsert("bad", ScheduleSpec::every(2000));
    assert_eq!(f.get("bad").next_run_at, Some(1_002_000));
    assert!(block_on(f.scheduler.remove_scheduler("bad")).unwrap());
}

trait SnapshotRows {
    fn snapshot_rows(&self, table: Table) -> Vec<Row>;
}

impl SnapshotRows for MemStore {
    fn snapshot_rows(&self, table: Table) -> Vec<Row> {
        block_on(self.snapshot(vec![table]))
            .unwrap()
            .into_iter()
            .flat_map(|(_, rows)| rows)
            .collect()
    }
}

/// One step of the property test.
#[derive(Debug, Clone)]
enum Step {
    /// Advance the clock this many ms and tick.
    Advance(u64),
    /// Reopen the queue and scheduler (a reload).
    Reopen,
    /// Upsert the same spec again (an app restart).
    Upsert,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (0u64..20_000).prop_map(Step::Advance),
        2 => (0u64..50 * HOUR).prop_map(Step::Advance),
        1 => Just(Step::Reopen),
        1 => Just(Step::Upsert),
    ]
}

fn spec() -> impl Strategy<Value = ScheduleSpec> {
    let timing = prop_oneof![
        (500u64..30_000).prop_map(ScheduleSpec::every),
        prop::sample::select(vec![
            "* * * * *",
            "*/7 * * * * *",
            "0 */2 * * *",
            "30 9 * * 1-5",
            "0 0 1 * *",
        ])
        .prop_map(ScheduleSpec::cron),
    ];
    let catch_up = prop::sample::select(vec![CatchUp::Skip, CatchUp::Once, CatchUp::All]);
    (
        timing,
        catch_up,
        prop::option::of(1u64..50),
        any::<bool>(),
        prop::option::of(0u64..100_000),
    )
        .prop_map(
            |(timing, catch_up, limit, immediately, start)| ScheduleSpec {
                catch_up,
                limit,
                immediately,
                start_date: start.map(|s| 1_700_000_000_000 + s),
                tz: timing.cron.as_ref().map(|_| "Europe/Paris".to_owned()),
                ..timing
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the clock does, no due time fires twice, nothing fires before it is due,
    /// `nextRunAt` stays after `lastRunAt` and after now, and `count` matches the jobs.
    #[test]
    fn never_fires_an_occurrence_twice(spec in spec(), steps in prop::collection::vec(step(), 1..40)) {
        let mut f = Fixture::at(1_700_000_000_000);
        let mut fired: BTreeSet<u64> = BTreeSet::new();
        let record = f.upsert("p", spec.clone());
        if record.count == 1 {
            fired.insert(record.last_run_at.unwrap());
        }
        for step in steps {
            match step {
                Step::Advance(ms) => {
                    f.clock.advance(ms);
                    let now = f.now();
                    for id in f.tick() {
                        let due: u64 = id.strip_prefix("p:").unwrap().parse().unwrap();
                        prop_assert!(due <= now, "{due} fired at {now}");
                        prop_assert!(fired.insert(due), "{due} fired twice");
                        if let Some(start) = spec.start_date {
                            prop_assert!(due >= start);
                        }
                    }
                }
                Step::Reopen => f.reopen(),
                Step::Upsert => {
                    let record = f.upsert("p", spec.clone());
                    prop_assert_eq!(record.count, fired.len() as u64);
                }
            }
            let record = f.get("p");
            prop_assert_eq!(record.count, fired.len() as u64);
            prop_assert_eq!(record.last_run_at, fired.last().copied());
            if let Some(limit) = spec.limit {
                prop_assert!(record.count <= limit);
            }
            if let Some(next) = record.next_run_at {
                prop_assert!(record.last_run_at.is_none_or(|last| next > last));
                if matches!(step, Step::Advance(_)) {
                    prop_assert!(next > f.now(), "after a tick nothing is due");
                }
            }
            let jobs = f.queue.counts().all;
            prop_assert_eq!(jobs.waiting + jobs.delayed, fired.len());
        }
    }
}

fn timing() -> impl Strategy<Value = ScheduleSpec> {
    let cron = (
        prop::sample::select(vec![
            "30 2 * * *",
            "0 * * * *",
            "*/20 1-3 * * *",
            "15 0 * * 0",
            "0 0 L * *",
        ]),
        prop::sample::select(vec![
            "UTC",
            "Europe/Paris",
            "America/New_York",
            "Australia/Lord_Howe",
        ]),
    )
        .prop_map(|(pattern, tz)| ScheduleSpec {
            tz: Some(tz.to_owned()),
            ..ScheduleSpec::cron(pattern)
        });
    prop_oneof![(1000u64..10 * HOUR).prop_map(ScheduleSpec::every), cron]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Catching up with `all` after one long sleep fires exactly what ticking at every due time
    /// would have (here across DST changes too), and ends with the same `nextRunAt`.
    #[test]
    fn catching_up_all_equals_firing_on_time(
        timing in timing(),
        // Around the 2025 DST changes of Europe, America and Lord Howe (UTC+10:30/+11).
        start in prop::sample::select(vec![
            utc(2025, 3, 8, 0, 0), utc(2025, 3, 28, 0, 0), utc(2025, 4, 4, 0, 0),
            utc(2025, 10, 2, 0, 0), utc(2025, 10, 24, 0, 0), utc(2025, 10, 31, 0, 0),
            // Just before the Paris gap and fold.
            utc(2025, 3, 30, 0, 0), utc(2025, 10, 26, 0, 0),
        ]),
        offset in 0u64..HOUR,
        hours in 1u64..72,
    ) {
        let spec = ScheduleSpec { catch_up: CatchUp::All, ..timing };
        let from = start + offset;
        let to = from + hours * HOUR;
        let on_time = Fixture::at(from);
        on_time.upsert("s", spec.clone());
        let mut expected = Vec::new();
        while let Some(at) = on_time.scheduler.next_wake_at().filter(|at| *at <= to) {
            on_time.clock.set(at);
            expected.extend(on_time.tick());
        }
        prop_assume!(expected.len() <= MAX_CATCH_UP);
        let late = Fixture::at(from);
        late.upsert("s", spec);
        late.clock.set(to);
        prop_assert_eq!(late.tick(), expected);
        prop_assert_eq!(late.get("s").next_run_at, on_time.scheduler.next_wake_at());
    }
}
