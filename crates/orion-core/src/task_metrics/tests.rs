use serde_json::json;

use super::*;
use crate::error::ErrorCode;

/// A time well past the epoch, on a minute boundary, so windows never saturate at 0.
const T0: u64 = 1_700_000_040_000;
const MIN: u64 = MINUTE_MS;
const SEC: u64 = 1_000;

fn report(m: &TaskMetrics, now: u64, window: Option<u64>) -> TaskMetricsReport {
    m.metrics(now, window).unwrap()
}

fn queue<'a>(r: &'a TaskMetricsReport, name: &str) -> &'a QueueMetrics {
    r.queues.iter().find(|q| q.queue == name).unwrap()
}

fn within(value: u64, expected: u64) -> bool {
    let tolerance = (expected as f64 / 32.0).ceil() as u64;
    value.abs_diff(expected) <= tolerance
}

fn invalid_field(result: Result<impl std::fmt::Debug>) -> String {
    match result {
        Err(Error::InvalidInput { field, .. }) => field,
        other => panic!("expected ERR_INVALID_INPUT, got {other:?}"),
    }
}

// --- histogram -------------------------------------------------------------------------------

#[test]
fn bins_cover_every_value_in_order_within_one_sixteenth() {
    let mut values: Vec<u64> = (0..5_000).collect();
    for e in 5..64 {
        let p = 1u64 << e;
        values.extend([p - 1, p, p + 1, p + p / 3]);
    }
    values.push(u64::MAX);
    let mut last_bin = 0u16;
    values.sort_unstable();
    for v in values {
        let bin = bin_of(v);
        assert!(usize::from(bin) < BINS, "{v} -> {bin}");
        assert!(bin >= last_bin, "bins are monotonic at {v}");
        last_bin = bin;
        let (lo, hi) = bin_range(bin);
        assert!(lo <= v && v <= hi, "{v} not in bin {bin} = [{lo}, {hi}]");
        if v < 32 {
            assert_eq!((lo, hi), (v, v));
        } else {
            assert!(
                (hi - lo + 1) as f64 <= lo as f64 / 16.0 + 1.0,
                "bin {bin} too wide"
            );
            let mid = bin_value(bin);
            assert!(mid.abs_diff(v) as f64 <= v as f64 / 32.0 + 1.0);
        }
    }
    assert_eq!(usize::from(bin_of(u64::MAX)) + 1, BINS);
}

#[test]
fn percentiles_of_a_uniform_distribution() {
    let mut m = TaskMetrics::new();
    for v in 1..=1_000 {
        m.record_completed("q", T0 + 10 * SEC, v, 2 * v).unwrap();
    }
    let r = report(&m, T0 + 20 * SEC, Some(MIN));
    let q = queue(&r, "q");
    let wait = q.stats.wait;
    assert_eq!(wait.count, 1_000);
    assert!(within(wait.p50.unwrap(), 500), "{wait:?}");
    assert!(within(wait.p90.unwrap(), 900), "{wait:?}");
    assert!(within(wait.p99.unwrap(), 990), "{wait:?}");
    assert_eq!(wait.max, Some(1_000));
    let run = q.stats.run;
    assert!(within(run.p50.unwrap(), 1_000), "{run:?}");
    assert!(within(run.p99.unwrap(), 1_980), "{run:?}");
    assert_eq!(run.max, Some(2_000));
}

#[test]
fn percentiles_are_exact_for_small_values_and_follow_the_tail() {
    let mut m = TaskMetrics::new();
    // 98 fast runs of 7 ms and 2 slow ones of 10 s: p50 and p90 are 7, p99 is slow.
    for i in 0..100 {
        let run = if i < 98 { 7 } else { 10_000 };
        m.record_completed("q", T0, 0, run).unwrap();
    }
    let r = report(&m, T0 + SEC, Some(MIN));
    let run = queue(&r, "q").stats.run;
    assert_eq!((run.p50, run.p90), (Some(7), Some(7)));
    assert!(within(run.p99.unwrap(), 10_000), "{run:?}");
    assert_eq!(run.max, Some(10_000));
    assert_eq!(queue(&r, "q").stats.wait.p99, Some(0));

    // With one slow run out of 100, p99 (rank 99) is still fast.
    let mut m = TaskMetrics::new();
    for i in 0..100 {
        m.record_completed("q", T0, 0, if i < 99 { 7 } else { 10_000 })
            .unwrap();
    }
    let run = queue(&report(&m, T0 + SEC, Some(MIN)), "q").stats.run;
    assert_eq!(run.p99, Some(7));
    assert_eq!(run.max, Some(10_000));
}

#[test]
fn a_quantile_is_never_above_the_exact_max() {
    let mut m = TaskMetrics::new();
    m.record_completed("q", T0, 1_000_001, 1_000_001).unwrap();
    let wait = queue(&report(&m, T0, Some(MIN)), "q").stats.wait;
    assert!(wait.p50 <= wait.max);
    assert!(within(wait.p50.unwrap(), 1_000_001));
}

#[test]
fn no_samples_means_null_percentiles_and_rates() {
    let mut m = TaskMetrics::new();
    m.record_cancelled("q", T0).unwrap();
    let r = report(&m, T0, None);
    let q = queue(&r, "q");
    assert_eq!(q.stats.cancelled, 1);
    assert_eq!(q.stats.failure_rate, None);
    assert_eq!(q.stats.wait, Percentiles::default());
    let json = serde_json::to_value(q).unwrap();
    assert_eq!(json["failureRate"], Value::Null);
    assert_eq!(json["wait"]["p50"], Value::Null);
}

// --- buckets, windows, retention -------------------------------------------------------------

#[test]
fn counts_roll_over_into_minute_buckets() {
    let mut m = TaskMetrics::new();
    m.record_completed("q", T0, 1, 1).unwrap();
    m.record_completed("q", T0 + 59 * SEC, 1, 1).unwrap();
    m.record_failed("q", T0 + MIN, 1, 1, false).unwrap();
    m.record_failed("q", T0 + MIN + 1, 1, 1, true).unwrap();
    m.record_completed("q", T0 + 3 * MIN + 5, 1, 1).unwrap();
    let r = report(&m, T0 + 3 * MIN + 10, None);
    let q = queue(&r, "q");
    assert_eq!(
        q.per_minute,
        vec![
            MinutePoint {
                minute: T0,
                completed: 2,
                failed: 0
            },
            MinutePoint {
                minute: T0 + MIN,
                completed: 0,
                failed: 2
            },
            MinutePoint {
                minute: T0 + 3 * MIN,
                completed: 1,
                failed: 0
            },
        ]
    );
    assert_eq!(
        (q.stats.completed, q.stats.failed, q.stats.final_failed),
        (3, 2, 1)
    );
    assert_eq!(q.stats.failure_rate, Some(0.4));
}

#[test]
fn a_window_counts_the_minutes_overlapping_it() {
    let mut m = TaskMetrics::new();
    for i in 0..10 {
        m.record_completed("q", T0 + i * MIN + 30 * SEC, 5, 5)
            .unwrap();
    }
    let now = T0 + 9 * MIN + 40 * SEC;
    // (now - 5 min, now] overlaps minutes 4..=9.
    let r = report(&m, now, Some(5 * MIN));
    assert_eq!(r.from, T0 + 4 * MIN);
    assert_eq!(queue(&r, "q").stats.completed, 6);
    assert_eq!(queue(&r, "q").per_minute.len(), 6);
    // 6 completions from T0 + 4 min to now = 5 min 40 s.
    let expected = 6.0 / (5.0 + 40.0 / 60.0);
    assert!((r.totals.throughput_per_min - expected).abs() < 1e-9);
    // A window on a minute boundary does not take the minute before it.
    let r = report(&m, T0 + 9 * MIN, Some(2 * MIN));
    assert_eq!(r.from, T0 + 7 * MIN);
    assert_eq!(queue(&r, "q").stats.completed, 3);
    // Minutes after `now`'s are not counted.
    assert_eq!(report(&m, T0 + 4 * MIN, Some(MIN)).totals.completed, 2);
}

#[test]
fn everything_older_than_24_hours_expires() {
    let mut m = TaskMetrics::new();
    m.record_completed("q", T0, 10, 10).unwrap();
    m.record_completed("q", T0 + 2 * HOUR_MS, 20, 20).unwrap();
    let r = report(&m, T0 + 2 * HOUR_MS, None);
    assert_eq!(r.totals.completed, 2);
    assert_eq!(r.totals.wait.count, 2);

    // 24 h after the end of T0's minute, that minute is gone, from the report and from memory.
    let later = T0 + MIN + RETENTION_MS;
    m.record_completed("q", later, 30, 30).unwrap();
    let r = report(&m, later, None);
    assert_eq!(r.totals.completed, 2);
    assert_eq!(r.totals.wait.count, 2);
    assert_eq!(r.totals.wait.max, Some(30));
    let series = &m.queues["q"].series;
    assert_eq!(series.counts.len(), 2);
    assert!(series.counts.iter().all(|(minute, _)| *minute > T0 / MIN));

    // A record older than 24 h is dropped and counted.
    m.record_completed("q", T0 + 30 * SEC, 1, 1).unwrap();
    let r = report(&m, later, None);
    assert_eq!(r.totals.completed, 2);
    assert_eq!(r.dropped.stale, 1);

    // Another day of silence: evaluate forgets the queue altogether.
    m.evaluate(later + RETENTION_MS + MIN);
    assert!(m.queues.is_empty());
    assert!(report(&m, later + RETENTION_MS + MIN, None)
        .queues
        .is_empty());
}

#[test]
fn durations_older_than_an_hour_move_to_hour_histograms_and_still_count() {
    let mut m = TaskMetrics::new();
    // One sample a minute for 3 hours, at 100 ms then 1 000 ms then 10 000 ms.
    for i in 0..180u64 {
        let run = [100, 1_000, 10_000][(i / 60) as usize];
        m.record_completed("q", T0 + i * MIN, 0, run).unwrap();
    }
    let now = T0 + 179 * MIN + SEC;
    let series = &m.queues["q"].series;
    assert!(series.fine.len() <= 61, "{}", series.fine.len());
    assert!(!series.coarse.is_empty());
    // Every sample is in exactly one histogram.
    let (_, run) = series.histograms(&Window::new(now, RETENTION_MS));
    assert_eq!(run.total, 180);

    let r = report(&m, now, None);
    assert_eq!(r.totals.run.count, 180);
    assert!(within(r.totals.run.p50.unwrap(), 1_000));
    // The last 30 minutes: minute resolution, only the 10 s runs.
    let r = report(&m, now, Some(30 * MIN));
    assert_eq!(r.totals.run.count, 31);
    assert!(within(r.totals.run.p50.unwrap(), 10_000));
    // Out of order: a sample 2 h old goes straight to its hour.
    m.record_completed("q", now - 2 * HOUR_MS, 0, 1).unwrap();
    assert_eq!(report(&m, now, None).totals.run.count, 181);
}

#[test]
fn histogram_entries_of_a_series_are_bounded() {
    let mut m = TaskMetrics::new();
    let mut rng = fastrand::Rng::with_seed(7);
    let samples = 60_000u64;
    for i in 0..samples {
        // Hostile: values spread over the whole u64 range, across 2 h.
        let at = T0 + (i % 120) * MIN;
        m.record_failed("q", at, rng.u64(..), rng.u64(..), false)
            .unwrap();
    }
    let series = &m.queues["q"].series;
    let counted: usize = series
        .fine
        .iter()
        .chain(&series.coarse)
        .map(|(_, p)| p.entries())
        .sum();
    assert_eq!(series.entries, counted);
    assert!(
        series.entries <= MAX_HISTOGRAM_ENTRIES + 4 * 200,
        "{}",
        series.entries
    );
    // Counts stay exact.
    let r = report(&m, T0 + 120 * MIN, None);
    assert_eq!(r.totals.failed, samples);
    assert_eq!(r.totals.wait.count, samples);
}

#[test]
fn the_number_of_queues_is_bounded() {
    let mut m = TaskMetrics::new();
    for i in 0..MAX_QUEUES + 10 {
        m.record_completed(&format!("q{i}"), T0, 1, 1).unwrap();
    }
    assert_eq!(m.queues.len(), MAX_QUEUES);
    let r = report(&m, T0, None);
    assert_eq!(r.queues.len(), MAX_QUEUES);
    assert_eq!(r.dropped.capacity, 10);
    // Known queues still record.
    m.record_completed("q0", T0 + 1, 1, 1).unwrap();
    assert_eq!(queue(&report(&m, T0 + 1, None), "q0").stats.completed, 2);
    // Once the old ones have nothing left in 24 h, a new queue takes a free slot.
    let later = T0 + 2 * RETENTION_MS;
    m.observe_backlog("fresh", 3, later).unwrap();
    assert_eq!(m.queues.len(), 1);
    assert_eq!(queue(&report(&m, later, None), "fresh").backlog, Some(3));
}

#[test]
fn workflow_types_and_schedulers_are_bounded() {
    let mut m = TaskMetrics::new();
    for i in 0..MAX_WORKFLOW_TYPES + 3 {
        m.record_workflow(&format!("w{i}"), WorkflowOutcome::Completed, T0, 5)
            .unwrap();
    }
    for i in 0..MAX_SCHEDULERS + 4 {
        m.record_schedule_fire(&format!("s{i}"), T0, T0).unwrap();
    }
    assert_eq!(m.workflows.len(), MAX_WORKFLOW_TYPES);
    assert_eq!(m.schedulers.len(), MAX_SCHEDULERS);
    assert_eq!(report(&m, T0, None).dropped.capacity, 7);
}

#[test]
fn bad_names_are_invalid_input() {
    let mut m = TaskMetrics::new();
    assert_eq!(invalid_field(m.record_completed(" ", T0, 0, 0)), "queue");
    assert_eq!(
        invalid_field(m.record_cancelled(&"x".repeat(300), T0)),
        "queue"
    );
    assert_eq!(invalid_field(m.observe_backlog("a\nb", 1, T0)), "queue");
    assert_eq!(
        invalid_field(m.record_workflow("", WorkflowOutcome::Failed, T0, 0)),
        "workflowType"
    );
    assert_eq!(
        invalid_field(m.record_schedule_fire("", T0, T0)),
        "schedulerId"
    );
    assert_eq!(invalid_field(WorkflowOutcome::parse("running")), "status");
    assert!(m.queues.is_empty() && m.workflows.is_empty() && m.schedulers.is_empty());
}

#[test]
fn extreme_times_and_durations_do_not_panic() {
    let mut m = TaskMetrics::new();
    for at in [0, 1, u64::MAX - 1, u64::MAX, 0] {
        m.record_completed("q", at, u64::MAX, u64::MAX).unwrap();
        m.record_failed("q", at, 0, u64::MAX, true).unwrap();
        m.observe_backlog("q", u64::MAX, at).unwrap();
        m.record_schedule_fire("s", u64::MAX, at).unwrap();
        m.record_schedule_fire("s", 0, at).unwrap();
        m.record_workflow("w", WorkflowOutcome::Cancelled, at, u64::MAX)
            .unwrap();
        m.metrics(at, None).unwrap();
        m.metrics(at, Some(MIN_WINDOW_MS)).unwrap();
    }
    m.configure_alerts(AlertRules {
        task_failure_rate: Some(FailureRateRule {
            threshold: 0.0,
            window: MIN_WINDOW_MS,
            min_samples: u64::MAX,
        }),
        queue_backlog: Some(BacklogRule {
            threshold: 1,
            window: MAX_WINDOW_MS,
        }),
        schedule_late: Some(ScheduleLateRule {
            seconds: MAX_LATE_SECONDS,
        }),
    })
    .unwrap();
    m.evaluate(0);
    m.evaluate(u64::MAX);
    let r = report(&m, u64::MAX, None);
    assert_eq!(r.totals.run.max, Some(u64::MAX));
}

// --- workflows and schedules -----------------------------------------------------------------

#[test]
fn workflows_are_reported_per_type() {
    let mut m = TaskMetrics::new();
    for (i, status) in [
        "completed",
        "completed",
        "compensated",
        "timedOut",
        "cancelled",
    ]
    .into_iter()
    .enumerate()
    {
        let outcome = WorkflowOutcome::parse(status).unwrap();
        m.record_workflow("order", outcome, T0 + i as u64, 100 * (i as u64 + 1))
            .unwrap();
    }
    m.record_workflow("mail", WorkflowOutcome::Failed, T0 + MIN, 10)
        .unwrap();
    let r = report(&m, T0 + MIN, Some(2 * MIN));
    let order = r
        .workflows
        .iter()
        .find(|w| w.workflow_type == "order")
        .unwrap();
    assert_eq!(
        (
            order.stats.completed,
            order.stats.failed,
            order.stats.cancelled
        ),
        (2, 2, 1)
    );
    assert_eq!(order.stats.failure_rate, Some(0.5));
    assert_eq!(order.stats.run.count, 5);
    assert_eq!(order.stats.run.max, Some(500));
    assert_eq!(
        order.per_minute,
        vec![MinutePoint {
            minute: T0,
            completed: 2,
            failed: 2
        }]
    );
    assert_eq!(r.workflow_totals.failed, 3);
    assert_eq!(r.workflows[0].workflow_type, "mail");
    assert_eq!(
        WorkflowOutcome::from_status(WorkflowStatus::Compensated),
        Some(WorkflowOutcome::Failed)
    );
    assert_eq!(WorkflowOutcome::from_status(WorkflowStatus::Running), None);
}

#[test]
fn schedule_lateness_is_reported() {
    let mut m = TaskMetrics::new();
    for i in 0..100u64 {
        // Lateness 0..=99 ms; one fired early (lateness 0).
        m.record_schedule_fire("tick", T0 + i * SEC, T0 + i * SEC + i)
            .unwrap();
    }
    m.record_schedule_fire("early", T0 + 200 * SEC, T0 + 100 * SEC)
        .unwrap();
    let r = report(&m, T0 + 200 * SEC, None);
    assert_eq!(r.schedules.fires, 101);
    let lateness = r.schedules.lateness;
    assert!(within(lateness.p50.unwrap(), 49), "{lateness:?}");
    assert!(within(lateness.p99.unwrap(), 98), "{lateness:?}");
    assert_eq!(lateness.max, Some(99));
    let tick = &r.schedules.schedulers[1];
    assert_eq!(tick.scheduler_id, "tick");
    assert_eq!((tick.fires, tick.last_lateness_ms), (100, 99));
    assert_eq!(r.schedules.schedulers[0].last_lateness_ms, 0);
}

// --- alerts ----------------------------------------------------------------------------------

fn failure_rule(threshold: f64, window: u64, min_samples: u64) -> AlertRules {
    AlertRules {
        task_failure_rate: Some(FailureRateRule {
            threshold,
            window,
            min_samples,
        }),
        ..AlertRules::default()
    }
}

#[test]
fn failure_rate_alert_fires_once_and_resolves_once() {
    let mut m = TaskMetrics::new();
    m.configure_alerts(failure_rule(0.2, 5 * MIN, 1)).unwrap();
    for i in 0..8 {
        m.record_completed("emails", T0 + i * SEC, 1, 1).unwrap();
    }
    m.record_completed("other", T0, 1, 1).unwrap();
    assert!(m.evaluate(T0 + 10 * SEC).is_empty());

    // 3 failures out of 11 attempts: 27 % > 20 %.
    for i in 0..3 {
        m.record_failed("emails", T0 + 20 * SEC + i, 1, 1, i == 2)
            .unwrap();
    }
    let events = m.evaluate(T0 + 30 * SEC);
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(
        (e.rule, e.subject.as_str(), e.state),
        (AlertKind::TaskFailureRate, "emails", AlertState::Firing)
    );
    assert!((e.value - 3.0 / 11.0).abs() < 1e-12);
    assert_eq!((e.threshold, e.at), (0.2, T0 + 30 * SEC));
    assert!(e.message.contains("27.3 %"), "{}", e.message);
    assert_eq!(m.active_alerts(), events);

    // Still failing: no new event, the active alert follows the value.
    m.record_failed("emails", T0 + 40 * SEC, 1, 1, false)
        .unwrap();
    assert!(m.evaluate(T0 + 50 * SEC).is_empty());
    let active = m.active_alerts();
    assert_eq!(active.len(), 1);
    assert!((active[0].value - 4.0 / 12.0).abs() < 1e-12);
    assert_eq!(active[0].at, T0 + 30 * SEC);

    // The window slides past the failures: resolved, once.
    let later = T0 + 7 * MIN;
    let events = m.evaluate(later);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].state, AlertState::Resolved);
    assert_eq!((events[0].value, events[0].at), (0.0, later));
    assert!(m.active_alerts().is_empty());
    assert!(m.evaluate(later + SEC).is_empty());
}

#[test]
fn failure_rate_resolves_when_successes_dilute_it() {
    let mut m = TaskMetrics::new();
    m.configure_alerts(failure_rule(0.5, 10 * MIN, 1)).unwrap();
    m.record_failed("q", T0, 1, 1, true).unwrap();
    assert_eq!(m.evaluate(T0 + 1).len(), 1);
    m.record_completed("q", T0 + 2, 1, 1).unwrap();
    // 1 of 2 = 50 %: not above the threshold.
    let events = m.evaluate(T0 + 3);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].state, AlertState::Resolved);
    assert_eq!(events[0].value, 0.5);
}

#[test]
fn failure_rate_waits_for_min_samples() {
    let mut m = TaskMetrics::new();
    m.configure_alerts(failure_rule(0.1, MIN, 3)).unwrap();
    m.record_failed("q", T0, 1, 1, true).unwrap();
    assert!(
        m.evaluate(T0 + 1).is_empty(),
        "1 failure of 1 is below minSamples"
    );
    m.record_failed("q", T0 + 2, 1, 1, true).unwrap();
    assert!(m.evaluate(T0 + 3).is_empty());
    m.record_completed("q", T0 + 4, 1, 1).unwrap();
    let events = m.evaluate(T0 + 5);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].state, AlertState::Firing);
    // Cancellations are not attempts.
    let mut m = TaskMetrics::new();
    m.configure_alerts(failure_rule(0.0, MIN, 1)).unwrap();
    m.record_cancelled("q", T0).unwrap();
    assert!(m.evaluate(T0 + 1).is_empty());
}

#[test]
fn backlog_must_stay_above_the_threshold_for_the_whole_window() {
    let mut m = TaskMetrics::new();
    m.configure_alerts(AlertRules {
        queue_backlog: Some(BacklogRule {
            threshold: 100,
            window: MIN,
        }),
        ..AlertRules::default()
    })
    .unwrap();
    let mut now = T0;
    // Above for 50 s, then one dip: the run restarts.
    for _ in 0..=5 {
        m.observe_backlog("q", 150, now).unwrap();
        assert!(m.evaluate(now).is_empty());
        now += 10 * SEC;
    }
    m.observe_backlog("q", 100, now).unwrap(); // at the threshold is not above
    assert!(m.evaluate(now).is_empty());
    now += 10 * SEC;
    let run_start = now;
    while now < run_start + MIN {
        m.observe_backlog("q", 500, now).unwrap();
        assert!(
            m.evaluate(now).is_empty(),
            "fired early at +{} ms",
            now - run_start
        );
        now += 10 * SEC;
    }
    m.observe_backlog("q", 501, now).unwrap();
    let events = m.evaluate(now);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0].rule, events[0].state),
        (AlertKind::QueueBacklog, AlertState::Firing)
    );
    assert_eq!((events[0].value, events[0].threshold), (501.0, 100.0));
    assert!(m.evaluate(now + SEC).is_empty());
    assert_eq!(m.active_alerts().len(), 1);
    // One observation at or below the threshold resolves it.
    m.observe_backlog("q", 3, now + 2 * SEC).unwrap();
    let events = m.evaluate(now + 2 * SEC);
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].state, events[0].value),
        (AlertState::Resolved, 3.0)
    );
    // An older observation is ignored.
    m.observe_backlog("q", 10_000, now).unwrap();
    assert_eq!(
        queue(&report(&m, now + 2 * SEC, None), "q").backlog,
        Some(3)
    );
}

#[test]
fn a_new_backlog_threshold_restarts_the_run_at_the_last_observation() {
    let mut m = TaskMetrics::new();
    m.observe_backlog("q", 50, T0).unwrap();
    m.configure_alerts(AlertRules {
        queue_backlog: Some(BacklogRule {
            threshold: 10,
            window: MIN,
        }),
        ..AlertRules::default()
    })
    .unwrap();
    m.observe_backlog("q", 50, T0 + 30 * SEC).unwrap();
    assert!(m.evaluate(T0 + 59 * SEC).is_empty());
    let events = m.evaluate(T0 + MIN);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].state, AlertState::Firing);
}

#[test]
fn schedule_late_fires_on_a_late_fire_and_resolves_on_the_next_on_time_one() {
    let mut m = TaskMetrics::new();
    m.configure_alerts(AlertRules {
        schedule_late: Some(ScheduleLateRule { seconds: 30.0 }),
        ..AlertRules::default()
    })
    .unwrap();
    m.record_schedule_fire("nightly", T0, T0 + 30 * SEC)
        .unwrap(); // exactly 30 s: not late
    assert!(m.evaluate(T0 + 31 * SEC).is_empty());

    let due = T0 + HOUR_MS;
    m.record_schedule_fire("nightly", due, due + 95 * SEC)
        .unwrap();
    let events = m.evaluate(due + 96 * SEC);
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(
        (e.rule, e.subject.as_str(), e.state),
        (AlertKind::ScheduleLate, "nightly", AlertState::Firing)
    );
    assert_eq!((e.value, e.threshold), (95.0, 30.0));
    assert!(e.message.contains("95.0 s"), "{}", e.message);
    // No new fire: still firing, no event.
    assert!(m.evaluate(due + 10 * MIN).is_empty());
    assert_eq!(m.active_alerts().len(), 1);

    let due = due + HOUR_MS;
    m.record_schedule_fire("nightly", due, due + SEC).unwrap();
    let events = m.evaluate(due + 2 * SEC);
    assert_eq!(events.len(), 1);
    assert_eq!(
        (events[0].state, events[0].value),
        (AlertState::Resolved, 1.0)
    );
    assert!(m.active_alerts().is_empty());
}

#[test]
fn a_late_fire_between_evaluations_is_not_lost() {
    let mut m = TaskMetrics::new();
    m.configure_alerts(AlertRules {
        schedule_late: Some(ScheduleLateRule { seconds: 1.5 }),
        ..AlertRules::default()
    })
    .unwrap();
    m.record_schedule_fire("s", T0, T0 + 5 * SEC).unwrap();
    m.record_schedule_fire("s", T0 + 10 * SEC, T0 + 10 * SEC)
        .unwrap();
    let events = m.evaluate(T0 + 11 * SEC);
    let states: Vec<_> = events.iter().map(|e| (e.state, e.value)).collect();
    assert_eq!(
        states,
        vec![(AlertState::Firing, 5.0), (AlertState::Resolved, 0.0)]
    );
    assert!(m.active_alerts().is_empty());
    assert!(m.evaluate(T0 + 12 * SEC).is_empty());
}

#[test]
fn removing_a_rule_resolves_its_alerts() {
    let mut m = TaskMetrics::new();
    m.configure_alerts(failure_rule(0.0, MIN, 1)).unwrap();
    m.record_failed("q", T0, 1, 1, true).unwrap();
    assert_eq!(m.evaluate(T0).len(), 1);
    m.configure_alerts(AlertRules::default()).unwrap();
    let events = m.evaluate(T0 + 1);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].state, AlertState::Resolved);
    assert_eq!(events[0].rule, AlertKind::TaskFailureRate);
    assert!(m.active_alerts().is_empty());
}

#[test]
fn events_are_ordered_by_rule_then_subject() {
    let mut m = TaskMetrics::new();
    m.configure_alerts(AlertRules {
        task_failure_rate: Some(FailureRateRule {
            threshold: 0.0,
            window: MIN,
            min_samples: 1,
        }),
        queue_backlog: Some(BacklogRule {
            threshold: 1,
            window: SEC,
        }),
        schedule_late: Some(ScheduleLateRule { seconds: 1.0 }),
    })
    .unwrap();
    for q in ["b", "a"] {
        m.record_failed(q, T0, 1, 1, false).unwrap();
        m.observe_backlog(q, 2, T0).unwrap();
    }
    m.record_schedule_fire("s", T0, T0 + 2 * SEC).unwrap();
    let events = m.evaluate(T0 + 2 * SEC);
    let keys: Vec<_> = events
        .iter()
        .map(|e| (e.rule.as_str(), e.subject.as_str()))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("taskFailureRate", "a"),
            ("taskFailureRate", "b"),
            ("queueBacklog", "a"),
            ("queueBacklog", "b"),
            ("scheduleLate", "s"),
        ]
    );
}

// --- rules: validation and serde -------------------------------------------------------------

#[test]
fn rules_read_from_camel_case_json() {
    let rules = AlertRules::from_json(json!({
        "taskFailureRate": {"threshold": 0.25, "window": 300000, "minSamples": 10},
        "queueBacklog": {"threshold": 1000, "window": 60000},
        "scheduleLate": {"seconds": 90}
    }))
    .unwrap();
    assert_eq!(
        rules.task_failure_rate,
        Some(FailureRateRule {
            threshold: 0.25,
            window: 300_000,
            min_samples: 10
        })
    );
    assert_eq!(
        rules.queue_backlog,
        Some(BacklogRule {
            threshold: 1000,
            window: 60_000
        })
    );
    assert_eq!(
        rules.schedule_late,
        Some(ScheduleLateRule { seconds: 90.0 })
    );
    // minSamples defaults to 1; a rule may be left out or null.
    let rules = AlertRules::from_json(json!({
        "taskFailureRate": {"threshold": 0.5, "window": 1000},
        "queueBacklog": null
    }))
    .unwrap();
    assert_eq!(rules.task_failure_rate.map(|r| r.min_samples), Some(1));
    assert_eq!(rules.queue_backlog, None);
    assert_eq!(
        serde_json::to_value(rules).unwrap(),
        json!({
            "taskFailureRate": {"threshold": 0.5, "window": 1000, "minSamples": 1}
        })
    );
    assert_eq!(
        AlertRules::from_json(json!({})).unwrap(),
        AlertRules::default()
    );
}

#[test]
fn invalid_rules_name_the_field() {
    let cases = [
        (
            json!({"taskFailureRate": {"threshold": 1.5, "window": 60000}}),
            "taskFailureRate.threshold",
        ),
        (
            json!({"taskFailureRate": {"threshold": -0.1, "window": 60000}}),
            "taskFailureRate.threshold",
        ),
        (
            json!({"taskFailureRate": {"threshold": "x", "window": 60000}}),
            "taskFailureRate.threshold",
        ),
        (
            json!({"taskFailureRate": {"threshold": 0.1, "window": 999}}),
            "taskFailureRate.window",
        ),
        (
            json!({"taskFailureRate": {"threshold": 0.1, "window": 86400001}}),
            "taskFailureRate.window",
        ),
        (
            json!({"taskFailureRate": {"threshold": 0.1, "window": -5}}),
            "taskFailureRate.window",
        ),
        (
            json!({"taskFailureRate": {"threshold": 0.1}}),
            "taskFailureRate.window",
        ),
        (
            json!({"taskFailureRate": {"threshold": 0.1, "window": 1000, "minSamples": 0}}),
            "taskFailureRate.minSamples",
        ),
        (
            json!({"taskFailureRate": {"threshold": 0.1, "window": 1000, "extra": 1}}),
            "taskFailureRate.extra",
        ),
        (
            json!({"queueBacklog": {"threshold": 0, "window": 60000}}),
            "queueBacklog.threshold",
        ),
        (
            json!({"queueBacklog": {"threshold": 5, "window": 0}}),
            "queueBacklog.window",
        ),
        (
            json!({"scheduleLate": {"seconds": 0}}),
            "scheduleLate.seconds",
        ),
        (
            json!({"scheduleLate": {"seconds": -1}}),
            "scheduleLate.seconds",
        ),
        (
            json!({"scheduleLate": {"seconds": 86401}}),
            "scheduleLate.seconds",
        ),
        (json!({"scheduleLate": 30}), "scheduleLate"),
        (json!([1]), "rules"),
    ];
    for (value, field) in cases {
        let result = AlertRules::from_json(value.clone());
        assert_eq!(
            result.as_ref().err().map(Error::code),
            Some(ErrorCode::InvalidInput),
            "{value}"
        );
        assert_eq!(invalid_field(result), field, "{value}");
    }
    assert_eq!(
        invalid_field(AlertRules::from_json(json!({"backlog": {}}))),
        "backlog"
    );

    // configure_alerts validates too, and keeps the rules in force.
    let mut m = TaskMetrics::new();
    let good = failure_rule(0.3, MIN, 1);
    m.configure_alerts(good).unwrap();
    let nan = failure_rule(f64::NAN, MIN, 1);
    assert_eq!(
        invalid_field(m.configure_alerts(nan)),
        "taskFailureRate.threshold"
    );
    let inf = AlertRules {
        schedule_late: Some(ScheduleLateRule {
            seconds: f64::INFINITY,
        }),
        ..AlertRules::default()
    };
    assert_eq!(
        invalid_field(m.configure_alerts(inf)),
        "scheduleLate.seconds"
    );
    assert_eq!(m.alert_rules(), &good);
}

#[test]
fn a_report_window_is_validated() {
    let m = TaskMetrics::new();
    assert_eq!(invalid_field(m.metrics(T0, Some(0))), "window");
    assert_eq!(
        invalid_field(m.metrics(T0, Some(RETENTION_MS + 1))),
        "window"
    );
    assert_eq!(report(&m, T0, None).window_ms, RETENTION_MS);
}

#[test]
fn the_report_and_events_serialise_in_camel_case() {
    let mut m = TaskMetrics::new();
    m.configure_alerts(failure_rule(0.0, MIN, 1)).unwrap();
    m.record_failed("q", T0, 3, 4, true).unwrap();
    m.observe_backlog("q", 7, T0).unwrap();
    m.record_workflow("w", WorkflowOutcome::Completed, T0, 9)
        .unwrap();
    m.record_schedule_fire("s", T0, T0 + 2).unwrap();
    let events = m.evaluate(T0);
    let json = serde_json::to_value(report(&m, T0, Some(MIN))).unwrap();
    let q = &json["queues"][0];
    for key in [
        "queue",
        "completed",
        "failed",
        "finalFailed",
        "cancelled",
        "throughputPerMin",
        "failureRate",
        "wait",
        "run",
        "backlog",
        "backlogAt",
        "perMinute",
    ] {
        assert!(q.get(key).is_some(), "queues[0].{key} missing in {q}");
    }
    assert_eq!(q["finalFailed"], 1);
    assert_eq!(
        q["wait"],
        json!({"count": 1, "p50": 3, "p90": 3, "p99": 3, "max": 3})
    );
    assert_eq!(
        q["perMinute"],
        json!([{"minute": T0, "completed": 0, "failed": 1}])
    );
    assert_eq!(json["workflows"][0]["workflowType"], "w");
    assert_eq!(json["workflowTotals"]["completed"], 1);
    assert_eq!(json["schedules"]["schedulers"][0]["lastLatenessMs"], 2);
    assert_eq!(json["dropped"], json!({"capacity": 0, "stale": 0}));
    for key in ["at", "windowMs", "from", "totals"] {
        assert!(json.get(key).is_some(), "{key} missing");
    }
    let event = serde_json::to_value(&events[0]).unwrap();
    assert_eq!(event["rule"], "taskFailureRate");
    assert_eq!(event["state"], "firing");
    assert_eq!(event["subject"], "q");
    for key in ["value", "threshold", "at", "message"] {
        assert!(event.get(key).is_some(), "{key} missing");
    }
    // The report reads back.
    let back: TaskMetricsReport = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(serde_json::to_value(back).unwrap(), json);
}

#[test]
fn alerts_of_subjects_silent_for_24_hours_resolve_and_the_subjects_are_forgotten() {
    let mut m = TaskMetrics::new();
    m.configure_alerts(AlertRules {
        queue_backlog: Some(BacklogRule {
            threshold: 1,
            window: SEC,
        }),
        schedule_late: Some(ScheduleLateRule { seconds: 1.0 }),
        ..AlertRules::default()
    })
    .unwrap();
    m.observe_backlog("gone", 50, T0).unwrap();
    m.record_schedule_fire("removed", T0, T0 + 10 * SEC)
        .unwrap();
    assert_eq!(m.evaluate(T0 + 10 * SEC).len(), 2);
    // Still firing a day later, then resolved: neither was heard of for 24 h.
    assert!(m.evaluate(T0 + RETENTION_MS - 1).is_empty());
    let events = m.evaluate(T0 + RETENTION_MS + 10 * SEC);
    let states: Vec<_> = events.iter().map(|e| (e.rule, e.state)).collect();
    assert_eq!(
        states,
        vec![
            (AlertKind::QueueBacklog, AlertState::Resolved),
            (AlertKind::ScheduleLate, AlertState::Resolved),
        ]
    );
    assert!(m.active_alerts().is_empty());
    assert!(m.evaluate(T0 + RETENTION_MS + 11 * SEC).is_empty());
    assert!(m.queues.is_empty() && m.schedulers.is_empty());
}
