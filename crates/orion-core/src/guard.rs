//! Accounting for one call of a component: its circuit breaker admits it, and its outcome counts
//! in the breaker and in the health monitor.
//!
//! The orchestrator and the tool manager take a [`Guard`] instead of the breakers and the monitor
//! themselves, because the runtime keeps those in state it shares with other requests and must
//! not hold borrowed across an await. [`LocalGuard`] owns its own, for native tests and the
//! evaluation harness.

use std::cell::RefCell;

use crate::circuit_breaker::{CircuitBreaker, Permit};
use crate::error::{Error, Result};
use crate::health::{HealthStatus, WorkerHealthMonitor};

/// Admits calls and accounts for their outcomes.
pub trait Guard {
    /// Admits one call under circuit `breaker`; `ERR_CIRCUIT_OPEN` when it refuses.
    fn admit(&self, breaker: &str) -> Result<Permit>;
    /// Work on `component` started (its heartbeat timeout applies until the outcome).
    fn started(&self, component: &str);
    /// The call admitted by `permit` ended with `outcome`, accounted against `component`.
    fn finished(&self, component: &str, permit: Permit, outcome: std::result::Result<(), &Error>);
    /// Whether `component` is unhealthy now, so that the pipeline should route around it.
    fn unhealthy(&self, component: &str) -> bool;
}

/// Whether `error` is the component's fault (it counts against its breaker and health), rather
/// than the caller's (bad input) or a decision (cancellation, an open breaker elsewhere).
pub fn is_component_failure(error: &Error) -> bool {
    matches!(
        error,
        Error::Internal(_)
            | Error::Embedding(_)
            | Error::Generation(_)
            | Error::Timeout { .. }
            | Error::ModelLoad { .. }
            | Error::Store(_)
            | Error::Quota(_)
            | Error::Tool { .. }
    )
}

/// Settles `permit` on `breakers` and `health` by `outcome`: a component failure counts against
/// both; anything else releases the permit without a verdict and counts as handled.
pub fn settle(
    breakers: &mut CircuitBreaker,
    health: &mut WorkerHealthMonitor,
    component: &str,
    permit: Permit,
    outcome: std::result::Result<(), &Error>,
) {
    match outcome {
        Ok(()) => {
            breakers.record_success(permit);
            health.record_success(component);
        }
        Err(error) if is_component_failure(error) => {
            breakers.record_failure(permit);
            health.record_failure(component, &error.to_string());
        }
        Err(_) => {
            breakers.release(permit);
            health.record_success(component);
        }
    }
}

/// A guard that owns its breakers and monitor.
pub struct LocalGuard {
    /// The circuits.
    pub breakers: RefCell<CircuitBreaker>,
    /// The components' health.
    pub health: RefCell<WorkerHealthMonitor>,
}

impl Guard for LocalGuard {
    fn admit(&self, breaker: &str) -> Result<Permit> {
        self.breakers.borrow_mut().try_acquire(breaker)
    }

    fn started(&self, component: &str) {
        self.health.borrow_mut().work_started(component);
    }

    fn finished(&self, component: &str, permit: Permit, outcome: std::result::Result<(), &Error>) {
        settle(
            &mut self.breakers.borrow_mut(),
            &mut self.health.borrow_mut(),
            component,
            permit,
            outcome,
        );
    }

    fn unhealthy(&self, component: &str) -> bool {
        self.health.borrow_mut().status(component) == HealthStatus::Unhealthy
    }
}
