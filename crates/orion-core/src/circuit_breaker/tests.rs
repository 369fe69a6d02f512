use proptest::prelude::*;

use super::*;
use crate::clock::ManualClock;

const KEY: &str = "query_processing";

fn breaker() -> (ManualClock, CircuitBreaker) {
    let clock = ManualClock::new(1_000);
    let breaker = CircuitBreaker::new(clock.shared(), BreakerConfig::default());
    (clock, breaker)
}

fn fail(b: &mut CircuitBreaker, n: u32) {
    for _ in 0..n {
        let permit = b.try_acquire(KEY).unwrap();
        b.record_failure(permit);
    }
}

fn open(b: &mut CircuitBreaker) {
    fail(b, 5);
    assert_eq!(b.state(KEY), BreakerState::Open);
}

#[test]
fn opens_after_five_consecutive_failures() {
    let (_, mut b) = breaker();
    fail(&mut b, 4);
    assert_eq!(b.state(KEY), BreakerState::Closed);
    fail(&mut b, 1);
    assert_eq!(b.state(KEY), BreakerState::Open);
    let events = b.drain_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].from, BreakerState::Closed);
    assert_eq!(events[0].to, BreakerState::Open);
    assert_eq!(events[0].reason, TransitionReason::FailureThreshold);
    assert_eq!(events[0].at_ms, 1_000);
}

#[test]
fn a_success_resets_the_failure_count() {
    let (_, mut b) = breaker();
    fail(&mut b, 4);
    let permit = b.try_acquire(KEY).unwrap();
    b.record_success(permit);
    fail(&mut b, 4);
    assert_eq!(b.state(KEY), BreakerState::Closed);
    fail(&mut b, 1);
    assert_eq!(b.state(KEY), BreakerState::Open);
}

#[test]
fn open_rejects_until_the_timeout_then_admits_a_probe() {
    let (clock, mut b) = breaker();
    open(&mut b);
    b.drain_events();
    clock.advance(29_999);
    match b.try_acquire(KEY) {
        Err(Error::CircuitOpen {
            retry_after_ms,
            state,
            ..
        }) => {
            assert_eq!(retry_after_ms, 1);
            assert_eq!(state, "OPEN");
        }
        other => panic!("expected ERR_CIRCUIT_OPEN, got {other:?}"),
    }
    assert!(b.drain_events().is_empty());
    clock.advance(1);
    let probe = b.try_acquire(KEY).unwrap();
    assert!(probe.is_probe());
    assert_eq!(b.state(KEY), BreakerState::HalfOpen);
    let events = b.drain_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].reason, TransitionReason::TimeoutElapsed);
    assert_eq!(events[0].at_ms, 31_000);
    b.release(probe);
}

#[test]
fn half_open_admits_one_probe_at_a_time_and_two_successes_close() {
    let (clock, mut b) = breaker();
    open(&mut b);
    clock.advance(30_000);
    let first = b.try_acquire(KEY).unwrap();
    let busy = b.try_acquire(KEY).unwrap_err();
    assert_eq!(busy.code(), crate::ErrorCode::CircuitOpen);
    assert!(busy.to_string().contains("HALF_OPEN"), "{busy}");
    b.record_success(first);
    assert_eq!(b.state(KEY), BreakerState::HalfOpen);
    let second = b.try_acquire(KEY).unwrap();
    b.record_success(second);
    assert_eq!(b.state(KEY), BreakerState::Closed);
    let reasons: Vec<_> = b.drain_events().into_iter().map(|e| e.reason).collect();
    assert_eq!(
        reasons,
        [
            TransitionReason::FailureThreshold,
            TransitionReason::TimeoutElapsed,
            TransitionReason::ProbesSucceeded
        ]
    );
    // Closed again with a clean count.
    fail(&mut b, 4);
    assert_eq!(b.state(KEY), BreakerState::Closed);
}

#[test]
fn a_failed_probe_reopens_and_restarts_the_timeout() {
    let (clock, mut b) = breaker();
    open(&mut b);
    clock.advance(30_000);
    let probe = b.try_acquire(KEY).unwrap();
    assert!(b.try_acquire(KEY).is_err());
    // One success, then a failure: the success streak does not survive.
    b.record_success(probe);
    let probe = b.try_acquire(KEY).unwrap();
    clock.advance(500);
    b.record_failure(probe);
    assert_eq!(b.state(KEY), BreakerState::Open);
    let last = b.drain_events().pop().unwrap();
    assert_eq!(last.reason, TransitionReason::ProbeFailed);
    assert_eq!(last.at_ms, 31_500);
    clock.advance(29_999);
    assert!(b.try_acquire(KEY).is_err());
    clock.advance(1);
    let probe = b.try_acquire(KEY).unwrap();
    b.record_success(probe);
    // The streak restarted at zero in the new half-open period.
    assert_eq!(b.state(KEY), BreakerState::HalfOpen);
}

#[test]
fn results_from_an_earlier_state_are_ignored() {
    let (clock, mut b) = breaker();
    let slow = b.try_acquire(KEY).unwrap();
    open(&mut b);
    clock.advance(30_000);
    let probe = b.try_acquire(KEY).unwrap();
    // The call admitted while closed fails late: it must not reopen the half-open circuit.
    b.record_failure(slow);
    assert_eq!(b.state(KEY), BreakerState::HalfOpen);
    assert_eq!(b.probes_in_flight(KEY), 1);
    b.record_success(probe);
    assert_eq!(b.probes_in_flight(KEY), 0);
}

#[test]
fn release_frees_the_probe_slot_without_counting() {
    let (clock, mut b) = breaker();
    open(&mut b);
    clock.advance(30_000);
    let probe = b.try_acquire(KEY).unwrap();
    b.release(probe);
    assert_eq!(b.probes_in_flight(KEY), 0);
    assert_eq!(b.state(KEY), BreakerState::HalfOpen);
    let probe = b.try_acquire(KEY).unwrap();
    b.record_success(probe);
    assert_eq!(b.state(KEY), BreakerState::HalfOpen);
}

#[test]
fn keys_are_independent_and_configurable() {
    let (clock, mut b) = breaker();
    b.configure(
        "tool:calc",
        BreakerConfig {
            failure_threshold: 2,
            open_timeout_ms: 1_000,
            half_open_max_probes: 3,
            success_threshold: 1,
        },
    );
    for _ in 0..2 {
        let p = b.try_acquire("tool:calc").unwrap();
        b.record_failure(p);
    }
    assert_eq!(b.state("tool:calc"), BreakerState::Open);
    assert_eq!(b.state(KEY), BreakerState::Closed);
    assert!(b.try_acquire(KEY).is_ok_and(|p| {
        b.release(p);
        true
    }));
    clock.advance(1_000);
    let probes: Vec<_> = (0..3)
        .map(|_| b.try_acquire("tool:calc").unwrap())
        .collect();
    assert!(b.try_acquire("tool:calc").is_err());
    let mut probes = probes.into_iter();
    b.record_success(probes.next().unwrap());
    assert_eq!(b.state("tool:calc"), BreakerState::Closed);
    // The other probes belong to the half-open period that ended: ignored.
    for p in probes {
        b.record_failure(p);
    }
    assert_eq!(b.state("tool:calc"), BreakerState::Closed);
}

#[test]
fn snapshot_survives_serialization_and_resumes_the_timeout() {
    let (_, mut b) = breaker();
    open(&mut b);
    fail_other(&mut b);
    let json = serde_json::to_string(&b.snapshot()).unwrap();
    assert!(json.contains("\"OPEN\""), "{json}");

    let (_, mut restarted) = breaker();
    restarted.restore(serde_json::from_str(&json).unwrap());
    assert_eq!(restarted.snapshot(), b.snapshot());
    assert_eq!(restarted.state(KEY), BreakerState::Open);
    assert_eq!(restarted.state("other"), BreakerState::Closed);
    // The other circuit kept its two failures: three more open it.
    for _ in 0..3 {
        let p = restarted.try_acquire("other").unwrap();
        restarted.record_failure(p);
    }
    assert_eq!(restarted.state("other"), BreakerState::Open);

    // The open timeout runs from the persisted opening time, not from the restore.
    let (clock2, mut resumed) = breaker();
    resumed.restore(serde_json::from_str(&json).unwrap());
    clock2.set(1_000 + 29_000);
    assert!(resumed.try_acquire(KEY).is_err());
    clock2.set(1_000 + 30_000);
    assert!(resumed.try_acquire(KEY).unwrap().is_probe());
}

fn fail_other(b: &mut CircuitBreaker) {
    for _ in 0..2 {
        let p = b.try_acquire("other").unwrap();
        b.record_failure(p);
    }
}

#[test]
fn a_half_open_snapshot_resumes_with_no_probe_in_flight() {
    let (clock, mut b) = breaker();
    open(&mut b);
    clock.advance(30_000);
    let stale = b.try_acquire(KEY).unwrap();
    let snapshot = b.snapshot();
    b.restore(snapshot);
    assert_eq!(b.state(KEY), BreakerState::HalfOpen);
    assert_eq!(b.probes_in_flight(KEY), 0);
    // A permit from before the restore counts for nothing.
    b.record_failure(stale);
    assert_eq!(b.state(KEY), BreakerState::HalfOpen);
    assert!(b.try_acquire(KEY).unwrap().is_probe());
}

#[test]
fn a_clock_that_jumps_back_restarts_the_timeout_instead_of_wedging() {
    let (clock, mut b) = breaker();
    clock.set(1_000_000);
    open(&mut b);
    clock.set(5_000);
    assert!(b.try_acquire(KEY).is_err());
    clock.set(35_000);
    assert!(b.try_acquire(KEY).is_ok_and(|p| p.is_probe()));
}

#[test]
fn config_deserializes_with_defaults_for_missing_fields() {
    let config: BreakerConfig = serde_json::from_str(r#"{"failureThreshold": 3}"#).unwrap();
    assert_eq!(config.failure_threshold, 3);
    assert_eq!(config.open_timeout_ms, 30_000);
    assert_eq!(config.half_open_max_probes, 1);
    assert_eq!(config.success_threshold, 2);
}

#[derive(Debug, Clone)]
enum Op {
    Acquire,
    Succeed(usize),
    Fail(usize),
    Release(usize),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Acquire),
        2 => any::<usize>().prop_map(Op::Succeed),
        2 => any::<usize>().prop_map(Op::Fail),
        1 => any::<usize>().prop_map(Op::Release),
        1 => (0u64..40_000).prop_map(Op::Advance),
    ]
}

fn config() -> impl Strategy<Value = BreakerConfig> {
    (1u32..6, 1u64..50_000, 1u32..4, 1u32..4).prop_map(
        |(failure_threshold, open_timeout_ms, half_open_max_probes, success_threshold)| {
            BreakerConfig {
                failure_threshold,
                open_timeout_ms,
                half_open_max_probes,
                success_threshold,
            }
        },
    )
}

proptest! {
    /// However calls interleave, a half-open circuit never has more probes in flight than allowed.
    #[test]
    fn half_open_never_exceeds_its_probe_limit(config in config(), ops in prop::collection::vec(op(), 1..300)) {
        let clock = ManualClock::new(0);
        let mut b = CircuitBreaker::new(clock.shared(), config);
        let mut outstanding: Vec<Permit> = Vec::new();
        for op in ops {
            match op {
                Op::Acquire => {
                    if let Ok(p) = b.try_acquire(KEY) {
                        prop_assert!(!p.is_probe() || b.state(KEY) == BreakerState::HalfOpen);
                        outstanding.push(p);
                    }
                }
                Op::Succeed(i) if !outstanding.is_empty() => {
                    let p = outstanding.swap_remove(i % outstanding.len());
                    b.record_success(p);
                }
                Op::Fail(i) if !outstanding.is_empty() => {
                    let p = outstanding.swap_remove(i % outstanding.len());
                    b.record_failure(p);
                }
                Op::Release(i) if !outstanding.is_empty() => {
                    let p = outstanding.swap_remove(i % outstanding.len());
                    b.release(p);
                }
                Op::Advance(ms) => clock.advance(ms),
                _ => {}
            }
            prop_assert!(b.probes_in_flight(KEY) <= config.half_open_max_probes);
            if b.state(KEY) == BreakerState::HalfOpen {
                let epoch = b.circuits[KEY].epoch;
                let live_probes = outstanding.iter().filter(|p| p.probe && p.epoch == epoch).count();
                prop_assert!(live_probes as u32 <= config.half_open_max_probes);
                prop_assert_eq!(live_probes as u32, b.probes_in_flight(KEY));
            }
        }
    }

    /// An open circuit rejects calls before its timeout and admits one as soon as it has passed.
    #[test]
    fn open_admits_a_call_once_the_timeout_has_passed(
        config in config(),
        start in 0u64..1_000_000_000,
        wait in 0u64..100_000,
        idle_calls in 0usize..5,
    ) {
        let clock = ManualClock::new(start);
        let mut b = CircuitBreaker::new(clock.shared(), config);
        for _ in 0..config.failure_threshold {
            let p = b.try_acquire(KEY).unwrap();
            b.record_failure(p);
        }
        prop_assert_eq!(b.state(KEY), BreakerState::Open);
        for _ in 0..idle_calls {
            clock.advance(wait / 10);
            let _ = b.try_acquire(KEY).map(|p| b.release(p));
        }
        clock.set(start + wait);
        let result = b.try_acquire(KEY);
        if wait >= config.open_timeout_ms {
            prop_assert!(result.is_ok());
        } else {
            prop_assert!(result.is_err());
            prop_assert_eq!(b.state(KEY), BreakerState::Open);
        }
    }
}
