//! Health of the worker's components (embedder, generator, tools, store, tasks, ...).
//!
//! Semantics (ARCHITECTURE.md, "Resilience semantics"), per component:
//! - `unhealthy` at `unhealthy_consecutive_failures` (3) consecutive failures, or an error rate
//!   above `unhealthy_error_rate` (20 %), or when work is pending and neither a heartbeat nor a
//!   result arrived for `heartbeat_timeout_ms` (10 s);
//! - `degraded` at an error rate from `degraded_error_rate` (10 %) up to the unhealthy rate;
//! - `healthy` otherwise.
//!
//! Error rates are taken over a rolling window (`window_ms`) and only once it holds at least
//! `min_samples` results, so one early failure does not condemn a component.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::clock::SharedClock;

/// Thresholds of the monitor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct HealthConfig {
    /// Consecutive failures that make a component unhealthy.
    pub unhealthy_consecutive_failures: u32,
    /// An error rate above this makes a component unhealthy.
    pub unhealthy_error_rate: f64,
    /// An error rate at or above this (and not above the unhealthy rate) makes it degraded.
    pub degraded_error_rate: f64,
    /// The rolling window over which error rates are computed.
    pub window_ms: u64,
    /// Results the window must hold before its error rate counts.
    pub min_samples: u32,
    /// With work pending, silence longer than this makes a component unhealthy.
    pub heartbeat_timeout_ms: u64,
    /// Results kept per component (the oldest go first), bounding memory under heavy load.
    pub max_samples: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            unhealthy_consecutive_failures: 3,
            unhealthy_error_rate: 0.20,
            degraded_error_rate: 0.10,
            window_ms: 60_000,
            min_samples: 10,
            heartbeat_timeout_ms: 10_000,
            max_samples: 1_000,
        }
    }
}

/// How a component is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Working normally.
    Healthy,
    /// Working, with an elevated error rate.
    Degraded,
    /// Failing or stuck: route around it or restart it.
    Unhealthy,
}

/// Why a component has its status.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HealthReason {
    /// Nothing is wrong.
    Ok,
    /// This many failures in a row.
    ConsecutiveFailures {
        /// The streak length.
        count: u32,
    },
    /// The window's error rate.
    ErrorRate {
        /// Failures / results in the window, 0 to 1.
        rate: f64,
    },
    /// Work is pending and nothing was heard for this long.
    HeartbeatTimeout {
        /// Milliseconds since the last heartbeat or result.
        silent_ms: u64,
    },
    /// The component could not start (a model that failed to load) and is out of service until
    /// it is started again; `lastError` says why.
    Unavailable,
}

/// A change of a component's status, emitted as an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthTransition {
    /// The component.
    pub component: String,
    /// The status before.
    pub from: HealthStatus,
    /// The status after.
    pub to: HealthStatus,
    /// Why it has the new status.
    pub reason: HealthReason,
    /// When, on the monitor's clock.
    pub at_ms: u64,
}

/// One result in the rolling window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// When it was recorded.
    pub at_ms: u64,
    /// Whether the call succeeded.
    pub ok: bool,
}

/// The persistent part of one component's record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentSnapshot {
    /// Results in the window, oldest first.
    pub samples: VecDeque<Sample>,
    /// The current failure streak.
    pub consecutive_failures: u32,
    /// The last failure's message.
    pub last_error: Option<String>,
    /// When the last success was recorded.
    pub last_success_ms: Option<u64>,
    /// When the last failure was recorded.
    pub last_failure_ms: Option<u64>,
    /// Results recorded since the component was first seen.
    pub total_calls: u64,
    /// Failures recorded since the component was first seen.
    pub total_failures: u64,
}

/// The persistent state of the monitor, keyed by component.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthSnapshot {
    /// One entry per component.
    pub components: BTreeMap<String, ComponentSnapshot>,
}

/// One row of the health report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentReport {
    /// The component's name.
    pub name: String,
    /// Its status.
    pub status: HealthStatus,
    /// Why.
    pub reason: HealthReason,
    /// Its failure streak.
    pub consecutive_failures: u32,
    /// The error rate over the window (even below the minimum sample).
    pub error_rate: f64,
    /// Results in the window.
    pub window_samples: u32,
    /// Calls started and not yet finished.
    pub pending: u32,
    /// The last failure's message.
    pub last_error: Option<String>,
    /// When the last success was recorded.
    pub last_success_ms: Option<u64>,
    /// When the last failure was recorded.
    pub last_failure_ms: Option<u64>,
    /// Results recorded since the component was first seen.
    pub total_calls: u64,
    /// Failures recorded since the component was first seen.
    pub total_failures: u64,
}

/// What `orion.health()` returns: the worst status and one row per component, sorted by name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthReport {
    /// The worst status of any component (`healthy` when there are none).
    pub status: HealthStatus,
    /// When the report was made, on the monitor's clock.
    pub at_ms: u64,
    /// One row per component.
    pub components: Vec<ComponentReport>,
    /// Whether this worker holds its database's leader lock (the one worker of all tabs on the
    /// database that runs schedules and workflows). The monitor does not know: the runtime sets it.
    #[serde(default)]
    pub leader: bool,
    /// The task alerts firing now (`orion.tasks.monitoring.configureAlerts`); the runtime sets
    /// them.
    #[serde(default)]
    pub alerts: Vec<crate::task_metrics::AlertEvent>,
}

#[derive(Debug, Default)]
struct Component {
    persisted: ComponentSnapshot,
    pending: u32,
    last_progress_ms: u64,
    status: Option<HealthStatus>,
    /// Out of service ([`WorkerHealthMonitor::set_unavailable`]).
    unavailable: bool,
}

/// Tracks every component's calls and judges its health.
pub struct WorkerHealthMonitor {
    clock: SharedClock,
    config: HealthConfig,
    components: BTreeMap<String, Component>,
    events: VecDeque<HealthTransition>,
}

/// Transitions kept while nobody drains them; older ones are dropped first.
const MAX_PENDING_EVENTS: usize = 256;

impl WorkerHealthMonitor {
    /// A monitor with no components.
    pub fn new(clock: SharedClock, config: HealthConfig) -> Self {
        Self {
            clock,
            config,
            components: BTreeMap::new(),
            events: VecDeque::new(),
        }
    }

    /// Makes `component` appear in reports before its first call.
    pub fn register(&mut self, component: &str) {
        let now = self.clock.now_ms();
        self.component(component, now);
        self.evaluate(component, now);
    }

    /// A call to `component` started: from now on, silence counts against it.
    pub fn work_started(&mut self, component: &str) {
        let now = self.clock.now_ms();
        let c = self.component(component, now);
        if c.pending == 0 {
            c.last_progress_ms = now;
        }
        c.pending = c.pending.saturating_add(1);
        self.evaluate(component, now);
    }

    /// `component` showed it is alive while working (for example a progress report).
    pub fn heartbeat(&mut self, component: &str) {
        let now = self.clock.now_ms();
        self.component(component, now).last_progress_ms = now;
        self.evaluate(component, now);
    }

    /// A call to `component` succeeded (ends one pending call, if any).
    pub fn record_success(&mut self, component: &str) {
        self.record(component, None);
    }

    /// A call to `component` failed with `error` (ends one pending call, if any).
    pub fn record_failure(&mut self, component: &str, error: &str) {
        self.record(component, Some(error));
    }

    /// Marks `component` out of service (unhealthy, reason `unavailable`) or back in service.
    /// Call [`WorkerHealthMonitor::record_failure`] too, so the report says why.
    pub fn set_unavailable(&mut self, component: &str, unavailable: bool) {
        let now = self.clock.now_ms();
        self.component(component, now).unavailable = unavailable;
        self.evaluate(component, now);
    }

    /// The current status of `component` (`healthy` for one never seen).
    pub fn status(&mut self, component: &str) -> HealthStatus {
        let now = self.clock.now_ms();
        if self.components.contains_key(component) {
            self.evaluate(component, now).0
        } else {
            HealthStatus::Healthy
        }
    }

    /// A report on every component, judged now.
    pub fn report(&mut self) -> HealthReport {
        let now = self.clock.now_ms();
        let names: Vec<String> = self.components.keys().cloned().collect();
        let mut rows = Vec::with_capacity(names.len());
        for name in names {
            let (status, reason) = self.evaluate(&name, now);
            if let Some(c) = self.components.get(&name) {
                let (failures, samples) = window_counts(&c.persisted.samples);
                rows.push(ComponentReport {
                    name,
                    status,
                    reason,
                    consecutive_failures: c.persisted.consecutive_failures,
                    error_rate: rate(failures, samples),
                    window_samples: samples,
                    pending: c.pending,
                    last_error: c.persisted.last_error.clone(),
                    last_success_ms: c.persisted.last_success_ms,
                    last_failure_ms: c.persisted.last_failure_ms,
                    total_calls: c.persisted.total_calls,
                    total_failures: c.persisted.total_failures,
                });
            }
        }
        HealthReport {
            status: rows
                .iter()
                .map(|r| r.status)
                .max()
                .unwrap_or(HealthStatus::Healthy),
            at_ms: now,
            components: rows,
            leader: false,
            alerts: Vec::new(),
        }
    }

    /// The persistent state of every component. Pending calls are not part of it: a restarted
    /// worker has none.
    pub fn snapshot(&self) -> HealthSnapshot {
        HealthSnapshot {
            components: self
                .components
                .iter()
                .map(|(name, c)| (name.clone(), c.persisted.clone()))
                .collect(),
        }
    }

    /// Replaces every component with the ones in `snapshot`.
    pub fn restore(&mut self, snapshot: HealthSnapshot) {
        let now = self.clock.now_ms();
        self.components = snapshot
            .components
            .into_iter()
            .map(|(name, persisted)| {
                let component = Component {
                    persisted,
                    pending: 0,
                    last_progress_ms: now,
                    status: None,
                    unavailable: false,
                };
                (name, component)
            })
            .collect();
        let names: Vec<String> = self.components.keys().cloned().collect();
        for name in names {
            self.evaluate(&name, now);
        }
    }

    /// Takes the status changes since the last call, oldest first. A component's first status is
    /// not a change; only later ones are reported.
    pub fn drain_events(&mut self) -> Vec<HealthTransition> {
        self.events.drain(..).collect()
    }

    fn record(&mut self, component: &str, error: Option<&str>) {
        let now = self.clock.now_ms();
        let max_samples = self.config.max_samples.max(1) as usize;
        let c = self.component(component, now);
        c.pending = c.pending.saturating_sub(1);
        c.last_progress_ms = now;
        let p = &mut c.persisted;
        p.total_calls += 1;
        match error {
            None => {
                p.consecutive_failures = 0;
                p.last_success_ms = Some(now);
            }
            Some(message) => {
                p.consecutive_failures = p.consecutive_failures.saturating_add(1);
                p.total_failures += 1;
                p.last_failure_ms = Some(now);
                p.last_error = Some(message.to_owned());
            }
        }
        if p.samples.len() >= max_samples {
            p.samples.pop_front();
        }
        p.samples.push_back(Sample {
            at_ms: now,
            ok: error.is_none(),
        });
        self.evaluate(component, now);
    }

    fn component(&mut self, name: &str, now: u64) -> &mut Component {
        self.components
            .entry(name.to_owned())
            .or_insert_with(|| Component {
                last_progress_ms: now,
                ..Component::default()
            })
    }

    /// Judges `name` now, emitting a transition if its status changed.
    fn evaluate(&mut self, name: &str, now: u64) -> (HealthStatus, HealthReason) {
        let config = self.config;
        let Some(c) = self.components.get_mut(name) else {
            return (HealthStatus::Healthy, HealthReason::Ok);
        };
        let horizon = now.saturating_sub(config.window_ms);
        while c
            .persisted
            .samples
            .front()
            .is_some_and(|s| s.at_ms < horizon)
        {
            c.persisted.samples.pop_front();
        }
        let (failures, samples) = window_counts(&c.persisted.samples);
        let error_rate = rate(failures, samples);
        let silent_ms = now.saturating_sub(c.last_progress_ms);
        let (status, reason) = if c.unavailable {
            (HealthStatus::Unhealthy, HealthReason::Unavailable)
        } else if c.persisted.consecutive_failures >= config.unhealthy_consecutive_failures {
            (
                HealthStatus::Unhealthy,
                HealthReason::ConsecutiveFailures {
                    count: c.persisted.consecutive_failures,
                },
            )
        } else if c.pending > 0 && silent_ms > config.heartbeat_timeout_ms {
            (
                HealthStatus::Unhealthy,
                HealthReason::HeartbeatTimeout { silent_ms },
            )
        } else if samples >= config.min_samples && error_rate > config.unhealthy_error_rate {
            (
                HealthStatus::Unhealthy,
                HealthReason::ErrorRate { rate: error_rate },
            )
        } else if samples >= config.min_samples && error_rate >= config.degraded_error_rate {
            (
                HealthStatus::Degraded,
                HealthReason::ErrorRate { rate: error_rate },
            )
        } else {
            (HealthStatus::Healthy, HealthReason::Ok)
        };
        let previous = c.status.replace(status);
        if let Some(from) = previous.filter(|from| *from != status) {
            if self.events.len() == MAX_PENDING_EVENTS {
                self.events.pop_front();
            }
            self.events.push_back(HealthTransition {
                component: name.to_owned(),
                from,
                to: status,
                reason,
                at_ms: now,
            });
        }
        (status, reason)
    }
}

fn window_counts(samples: &VecDeque<Sample>) -> (u32, u32) {
    let failures = samples.iter().filter(|s| !s.ok).count() as u32;
    (failures, samples.len() as u32)
}

fn rate(failures: u32, samples: u32) -> f64 {
    if samples == 0 {
        0.0
    } else {
        f64::from(failures) / f64::from(samples)
    }
}

#[cfg(test)]
mod tests;
