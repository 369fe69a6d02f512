//! Circuit breakers, one circuit per operation key.
//!
//! Semantics (ARCHITECTURE.md, "Resilience semantics"):
//! - `CLOSED` → `OPEN` after `failure_threshold` (5) consecutive failures;
//! - `OPEN` → `HALF_OPEN` once `open_timeout_ms` (30 s) have passed, checked from timestamps when a
//!   call arrives (no timers);
//! - `HALF_OPEN` admits at most `half_open_max_probes` (1) calls in flight; `success_threshold` (2)
//!   consecutive successes close the circuit, any failure reopens it and restarts the timeout.
//!
//! Every admitted call holds a [`Permit`] that must end in exactly one of
//! [`CircuitBreaker::record_success`], [`CircuitBreaker::record_failure`] or
//! [`CircuitBreaker::release`]. A result that arrives after the circuit changed state (its permit is
//! from an earlier state) is ignored: it says nothing about the circuit as it is now.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::clock::SharedClock;
use crate::error::{Error, Result};

/// Thresholds of one circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BreakerConfig {
    /// Consecutive failures that open a closed circuit.
    pub failure_threshold: u32,
    /// How long an open circuit rejects calls before it lets probes through.
    pub open_timeout_ms: u64,
    /// How many probe calls a half-open circuit admits at once.
    pub half_open_max_probes: u32,
    /// Consecutive probe successes that close a half-open circuit.
    pub success_threshold: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_timeout_ms: 30_000,
            half_open_max_probes: 1,
            success_threshold: 2,
        }
    }
}

/// The state of one circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BreakerState {
    /// Calls pass; failures are counted.
    Closed,
    /// Calls are rejected until the open timeout has passed.
    Open,
    /// A bounded number of probe calls decide whether to close or reopen.
    HalfOpen,
}

impl BreakerState {
    /// The state's name as JS sees it (`CLOSED`, `OPEN`, `HALF_OPEN`).
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "CLOSED",
            BreakerState::Open => "OPEN",
            BreakerState::HalfOpen => "HALF_OPEN",
        }
    }
}

/// Why a circuit changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransitionReason {
    /// `failure_threshold` consecutive failures while closed.
    FailureThreshold,
    /// The open timeout passed and a call arrived.
    TimeoutElapsed,
    /// A probe failed while half-open.
    ProbeFailed,
    /// `success_threshold` consecutive probes succeeded.
    ProbesSucceeded,
}

/// A state change of one circuit, emitted as an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BreakerTransition {
    /// The operation key.
    pub key: String,
    /// The state before.
    pub from: BreakerState,
    /// The state after.
    pub to: BreakerState,
    /// Why.
    pub reason: TransitionReason,
    /// When, on the breaker's clock.
    pub at_ms: u64,
}

/// The right to make one call through a circuit. Hand it back with the call's outcome.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a permit must be handed back with record_success, record_failure or release"]
pub struct Permit {
    key: String,
    epoch: u64,
    probe: bool,
}

impl Permit {
    /// The operation key this permit is for.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Whether this call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

/// The persistent part of one circuit: what a restarted worker needs to resume it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CircuitSnapshot {
    /// Its state.
    pub state: BreakerState,
    /// Consecutive failures while closed.
    pub consecutive_failures: u32,
    /// Consecutive probe successes while half-open.
    pub consecutive_successes: u32,
    /// When it last opened, if it did.
    pub opened_at_ms: Option<u64>,
    /// Its thresholds.
    pub config: BreakerConfig,
}

/// The persistent state of every circuit, keyed by operation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerSnapshot {
    /// One entry per operation key.
    pub circuits: BTreeMap<String, CircuitSnapshot>,
}

#[derive(Debug)]
struct Circuit {
    persisted: CircuitSnapshot,
    probes_in_flight: u32,
    /// Bumped on every transition so results of calls admitted in an earlier state are ignored.
    epoch: u64,
}

impl Circuit {
    fn new(config: BreakerConfig) -> Self {
        Self {
            persisted: CircuitSnapshot {
                state: BreakerState::Closed,
                consecutive_failures: 0,
                consecutive_successes: 0,
                opened_at_ms: None,
                config,
            },
            probes_in_flight: 0,
            epoch: 0,
        }
    }
}

/// Circuit breakers for any number of operation keys. Circuits are created on first use with the
/// default config, or with the one given to [`CircuitBreaker::configure`].
pub struct CircuitBreaker {
    clock: SharedClock,
    default_config: BreakerConfig,
    circuits: BTreeMap<String, Circuit>,
    events: VecDeque<BreakerTransition>,
}

/// Transitions kept while nobody drains them; older ones are dropped first.
const MAX_PENDING_EVENTS: usize = 256;

impl CircuitBreaker {
    /// Breakers that use `default_config` for keys without a config of their own.
    pub fn new(clock: SharedClock, default_config: BreakerConfig) -> Self {
        Self {
            clock,
            default_config,
            circuits: BTreeMap::new(),
            events: VecDeque::new(),
        }
    }

    /// Sets the thresholds of one key. Its current state and counters are kept.
    pub fn configure(&mut self, key: &str, config: BreakerConfig) {
        self.circuit(key).persisted.config = config;
    }

    /// Asks to make a call for `key`. Fails with [`Error::CircuitOpen`] while the circuit rejects calls.
    pub fn try_acquire(&mut self, key: &str) -> Result<Permit> {
        let now = self.clock.now_ms();
        let circuit = self.circuit(key);
        if circuit.persisted.state == BreakerState::Open {
            let opened = circuit.persisted.opened_at_ms.unwrap_or(now);
            // A clock that jumped backwards restarts the timeout rather than wedging the circuit.
            let opened = opened.min(now);
            circuit.persisted.opened_at_ms = Some(opened);
            let ready_at = opened.saturating_add(circuit.persisted.config.open_timeout_ms);
            if now < ready_at {
                return Err(Error::CircuitOpen {
                    key: key.to_owned(),
                    state: BreakerState::Open.as_str().to_owned(),
                    retry_after_ms: ready_at - now,
                });
            }
            self.transition(
                key,
                BreakerState::HalfOpen,
                TransitionReason::TimeoutElapsed,
                now,
            );
        }
        let circuit = self.circuit(key);
        match circuit.persisted.state {
            BreakerState::Closed => Ok(Permit {
                key: key.to_owned(),
                epoch: circuit.epoch,
                probe: false,
            }),
            BreakerState::HalfOpen
                if circuit.probes_in_flight < circuit.persisted.config.half_open_max_probes =>
            {
                circuit.probes_in_flight += 1;
                Ok(Permit {
                    key: key.to_owned(),
                    epoch: circuit.epoch,
                    probe: true,
                })
            }
            state => Err(Error::CircuitOpen {
                key: key.to_owned(),
                state: state.as_str().to_owned(),
                retry_after_ms: 0,
            }),
        }
    }

    /// The call made under `permit` succeeded.
    pub fn record_success(&mut self, permit: Permit) {
        let now = self.clock.now_ms();
        let Some(circuit) = self.current(&permit) else {
            return;
        };
        match circuit.persisted.state {
            BreakerState::Closed => circuit.persisted.consecutive_failures = 0,
            BreakerState::HalfOpen => {
                circuit.probes_in_flight = circuit.probes_in_flight.saturating_sub(1);
                circuit.persisted.consecutive_successes += 1;
                if circuit.persisted.consecutive_successes
                    >= circuit.persisted.config.success_threshold
                {
                    self.transition(
                        &permit.key,
                        BreakerState::Closed,
                        TransitionReason::ProbesSucceeded,
                        now,
                    );
                }
            }
            BreakerState::Open => {}
        }
    }

    /// The call made under `permit` failed.
    pub fn record_failure(&mut self, permit: Permit) {
        let now = self.clock.now_ms();
        let Some(circuit) = self.current(&permit) else {
            return;
        };
        match circuit.persisted.state {
            BreakerState::Closed => {
                circuit.persisted.consecutive_failures += 1;
                if circuit.persisted.consecutive_failures
                    >= circuit.persisted.config.failure_threshold
                {
                    self.transition(
                        &permit.key,
                        BreakerState::Open,
                        TransitionReason::FailureThreshold,
                        now,
                    );
                }
            }
            BreakerState::HalfOpen => self.transition(
                &permit.key,
                BreakerState::Open,
                TransitionReason::ProbeFailed,
                now,
            ),
            BreakerState::Open => {}
        }
    }

    /// The call made under `permit` ended without an outcome (cancelled): frees its probe slot and
    /// counts neither way.
    pub fn release(&mut self, permit: Permit) {
        if let Some(circuit) = self.current(&permit) {
            if permit.probe {
                circuit.probes_in_flight = circuit.probes_in_flight.saturating_sub(1);
            }
        }
    }

    /// The stored state of `key` (`CLOSED` for a key never used). An `OPEN` circuit whose timeout
    /// has passed still reads `OPEN` until a call arrives.
    pub fn state(&self, key: &str) -> BreakerState {
        self.circuits
            .get(key)
            .map_or(BreakerState::Closed, |c| c.persisted.state)
    }

    /// Probe calls currently in flight for `key`.
    pub fn probes_in_flight(&self, key: &str) -> u32 {
        self.circuits.get(key).map_or(0, |c| c.probes_in_flight)
    }

    /// The persistent state of every circuit.
    pub fn snapshot(&self) -> BreakerSnapshot {
        BreakerSnapshot {
            circuits: self
                .circuits
                .iter()
                .map(|(key, c)| (key.clone(), c.persisted.clone()))
                .collect(),
        }
    }

    /// Replaces every circuit with the ones in `snapshot` (as a restarted worker resumes them).
    /// No call is in flight after a restore; permits issued before it are ignored.
    pub fn restore(&mut self, snapshot: BreakerSnapshot) {
        let next_epoch = self
            .circuits
            .values()
            .map(|c| c.epoch + 1)
            .max()
            .unwrap_or(0);
        self.circuits = snapshot
            .circuits
            .into_iter()
            .map(|(key, persisted)| {
                let circuit = Circuit {
                    persisted,
                    probes_in_flight: 0,
                    epoch: next_epoch,
                };
                (key, circuit)
            })
            .collect();
    }

    /// Takes the transitions that happened since the last call, oldest first.
    pub fn drain_events(&mut self) -> Vec<BreakerTransition> {
        self.events.drain(..).collect()
    }

    fn circuit(&mut self, key: &str) -> &mut Circuit {
        let config = self.default_config;
        self.circuits
            .entry(key.to_owned())
            .or_insert_with(|| Circuit::new(config))
    }

    fn current(&mut self, permit: &Permit) -> Option<&mut Circuit> {
        self.circuits
            .get_mut(&permit.key)
            .filter(|c| c.epoch == permit.epoch)
    }

    fn transition(&mut self, key: &str, to: BreakerState, reason: TransitionReason, now: u64) {
        let circuit = self.circuit(key);
        let from = circuit.persisted.state;
        circuit.persisted.state = to;
        circuit.epoch += 1;
        circuit.probes_in_flight = 0;
        circuit.persisted.consecutive_failures = 0;
        circuit.persisted.consecutive_successes = 0;
        if to == BreakerState::Open {
            circuit.persisted.opened_at_ms = Some(now);
        }
        if self.events.len() == MAX_PENDING_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(BreakerTransition {
            key: key.to_owned(),
            from,
            to,
            reason,
            at_ms: now,
        });
    }
}

#[cfg(test)]
mod tests;
