use super::*;
use crate::clock::{Clock, ManualClock};

const C: &str = "embedder";

fn monitor() -> (ManualClock, WorkerHealthMonitor) {
    let clock = ManualClock::new(0);
    let monitor = WorkerHealthMonitor::new(clock.shared(), HealthConfig::default());
    (clock, monitor)
}

/// Records `ok` successes and `failed` failures, interleaved so that no failure streak forms.
fn mix(m: &mut WorkerHealthMonitor, ok: u32, failed: u32) {
    for i in 0..(ok + failed) {
        if i < failed {
            m.record_failure(C, "boom");
        }
        if i < ok {
            m.record_success(C);
        }
    }
}

#[test]
fn unknown_and_new_components_are_healthy() {
    let (_, mut m) = monitor();
    assert_eq!(m.status("never-seen"), HealthStatus::Healthy);
    m.register(C);
    let report = m.report();
    assert_eq!(report.status, HealthStatus::Healthy);
    assert_eq!(report.components.len(), 1);
    assert_eq!(report.components[0].name, C);
    assert_eq!(report.components[0].reason, HealthReason::Ok);
    assert!(m.drain_events().is_empty());
}

#[test]
fn three_consecutive_failures_make_it_unhealthy_and_a_success_recovers() {
    let (_, mut m) = monitor();
    m.record_failure(C, "a");
    m.record_failure(C, "b");
    assert_eq!(m.status(C), HealthStatus::Healthy);
    m.record_failure(C, "c");
    assert_eq!(m.status(C), HealthStatus::Unhealthy);
    let row = m.report().components.remove(0);
    assert_eq!(row.reason, HealthReason::ConsecutiveFailures { count: 3 });
    assert_eq!(row.last_error.as_deref(), Some("c"));
    // Only 3 samples: below the minimum, so the 100 % error rate does not count once the streak ends.
    m.record_success(C);
    assert_eq!(m.status(C), HealthStatus::Healthy);
    let events = m.drain_events();
    assert_eq!(events.len(), 2);
    assert_eq!(
        (events[0].from, events[0].to),
        (HealthStatus::Healthy, HealthStatus::Unhealthy)
    );
    assert_eq!(
        (events[1].from, events[1].to),
        (HealthStatus::Unhealthy, HealthStatus::Healthy)
    );
}

#[test]
fn error_rate_needs_the_minimum_sample() {
    let (_, mut m) = monitor();
    // 2 failures in 9 results: 22 %, but only 9 samples.
    mix(&mut m, 7, 2);
    assert_eq!(m.status(C), HealthStatus::Healthy);
    m.record_success(C);
    // 2 in 10: exactly 20 %, which is not above 20 %: degraded.
    assert_eq!(m.status(C), HealthStatus::Degraded);
}

#[test]
fn error_rate_thresholds() {
    let cases = [
        (19, 1, HealthStatus::Healthy),    // 5 %
        (10, 1, HealthStatus::Healthy),    // 9.1 %
        (9, 1, HealthStatus::Degraded),    // 10 %
        (17, 3, HealthStatus::Degraded),   // 15 %
        (8, 2, HealthStatus::Degraded),    // 20 %
        (15, 4, HealthStatus::Unhealthy),  // 21 %
        (10, 10, HealthStatus::Unhealthy), // 50 %
    ];
    for (ok, failed, expected) in cases {
        let (_, mut m) = monitor();
        mix(&mut m, ok, failed);
        let row = m.report().components.remove(0);
        assert_eq!(row.status, expected, "{failed} failures in {}", ok + failed);
        assert_eq!(row.window_samples, ok + failed);
        if expected != HealthStatus::Healthy {
            assert!(matches!(row.reason, HealthReason::ErrorRate { .. }));
        }
    }
}

#[test]
fn old_results_leave_the_rolling_window() {
    let (clock, mut m) = monitor();
    mix(&mut m, 10, 5);
    assert_eq!(m.status(C), HealthStatus::Unhealthy);
    clock.advance(30_000);
    mix(&mut m, 10, 0);
    // 5 of 25 in the window: 20 %.
    assert_eq!(m.status(C), HealthStatus::Degraded);
    clock.advance(30_001);
    // The first 15 fell out of the window: 0 of 10.
    assert_eq!(m.status(C), HealthStatus::Healthy);
    assert_eq!(m.report().components[0].window_samples, 10);
    clock.advance(30_000);
    let row = m.report().components.remove(0);
    assert_eq!(row.window_samples, 0);
    assert_eq!(row.total_calls, 25);
    assert_eq!(row.total_failures, 5);
}

#[test]
fn the_sample_count_is_bounded() {
    let clock = ManualClock::new(0);
    let config = HealthConfig {
        max_samples: 50,
        ..HealthConfig::default()
    };
    let mut m = WorkerHealthMonitor::new(clock.shared(), config);
    mix(&mut m, 30, 10);
    assert_eq!(m.status(C), HealthStatus::Unhealthy);
    mix(&mut m, 50, 0);
    let row = m.report().components.remove(0);
    assert_eq!(row.window_samples, 50);
    assert_eq!(row.status, HealthStatus::Healthy);
}

#[test]
fn pending_work_without_a_heartbeat_for_ten_seconds_is_unhealthy() {
    let (clock, mut m) = monitor();
    m.work_started(C);
    clock.advance(10_000);
    assert_eq!(m.status(C), HealthStatus::Healthy);
    clock.advance(1);
    assert_eq!(m.status(C), HealthStatus::Unhealthy);
    assert_eq!(
        m.report().components[0].reason,
        HealthReason::HeartbeatTimeout { silent_ms: 10_001 }
    );
    m.heartbeat(C);
    assert_eq!(m.status(C), HealthStatus::Healthy);
    clock.advance(9_000);
    m.heartbeat(C);
    clock.advance(9_000);
    assert_eq!(m.status(C), HealthStatus::Healthy);
    m.record_success(C);
    // Nothing pending: silence is fine.
    clock.advance(60_000);
    assert_eq!(m.status(C), HealthStatus::Healthy);
    assert_eq!(m.report().components[0].pending, 0);
}

#[test]
fn idle_time_before_work_starts_does_not_count() {
    let (clock, mut m) = monitor();
    m.register(C);
    clock.advance(50_000);
    m.work_started(C);
    clock.advance(5_000);
    assert_eq!(m.status(C), HealthStatus::Healthy);
    // A second call does not reset the first one's silence.
    m.work_started(C);
    clock.advance(5_001);
    assert_eq!(m.status(C), HealthStatus::Unhealthy);
    m.record_success(C);
    assert_eq!(m.report().components[0].pending, 1);
    assert_eq!(m.status(C), HealthStatus::Healthy);
}

#[test]
fn the_report_shows_the_worst_status_and_sorted_rows() {
    let (_, mut m) = monitor();
    m.register("store");
    for _ in 0..3 {
        m.record_failure("generator", "oom");
    }
    mix(&mut m, 9, 1);
    let report = m.report();
    assert_eq!(report.status, HealthStatus::Unhealthy);
    let names: Vec<_> = report.components.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["embedder", "generator", "store"]);
    let statuses: Vec<_> = report.components.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [
            HealthStatus::Degraded,
            HealthStatus::Unhealthy,
            HealthStatus::Healthy
        ]
    );
}

#[test]
fn snapshot_survives_serialization() {
    let (clock, mut m) = monitor();
    mix(&mut m, 12, 3);
    m.work_started(C);
    let json = serde_json::to_string(&m.snapshot()).unwrap();
    let restored_clock = ManualClock::new(clock.now_ms());
    let mut restored = WorkerHealthMonitor::new(restored_clock.shared(), HealthConfig::default());
    restored.restore(serde_json::from_str(&json).unwrap());
    assert_eq!(restored.snapshot(), m.snapshot());
    assert_eq!(restored.status(C), HealthStatus::Degraded);
    // Pending work is not carried over, so a long silence is no heartbeat failure.
    restored_clock.advance(20_000);
    assert_eq!(restored.report().components[0].pending, 0);
    // The window still applies to restored samples.
    restored_clock.advance(60_000);
    assert_eq!(restored.status(C), HealthStatus::Healthy);
    // Restoring is not a transition; moving out of the window afterwards is.
    let events = restored.drain_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].to, HealthStatus::Healthy);
}

#[test]
fn config_deserializes_with_defaults_for_missing_fields() {
    let config: HealthConfig = serde_json::from_str(r#"{"minSamples": 4}"#).unwrap();
    assert_eq!(config.min_samples, 4);
    assert_eq!(
        config,
        HealthConfig {
            min_samples: 4,
            ..HealthConfig::default()
        }
    );
}

#[test]
fn an_unavailable_component_is_unhealthy_until_it_is_back() {
    let (_, mut m) = monitor();
    m.register(C);
    m.record_failure(C, "could not load the model");
    m.set_unavailable(C, true);
    let report = m.report();
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert_eq!(report.components[0].reason, HealthReason::Unavailable);
    assert_eq!(
        report.components[0].last_error.as_deref(),
        Some("could not load the model")
    );
    m.set_unavailable(C, false);
    m.record_success(C);
    assert_eq!(m.status(C), HealthStatus::Healthy);
    let events = m.drain_events();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].reason, HealthReason::Unavailable);
}
