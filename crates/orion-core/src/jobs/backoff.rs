//! The wait before a retry: BullMQ's `fixed` and `exponential` (`delay * 2^(attempt-1)`)
//! strategies, capped, with optional jitter.

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::options::{check_max, MAX_DELAY_MS};
use crate::error::{Error, Result};

/// How the wait grows with the attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum BackoffKind {
    /// The same `delay` before every retry.
    Fixed,
    /// `delay * 2^(attempt-1)`: `delay`, `2 delay`, `4 delay`, ...
    Exponential,
}

/// A backoff strategy. On the wire either a number (a fixed delay in ms) or
/// `{type: 'fixed' | 'exponential', delay, jitter?, cap?}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BackoffSpec {
    #[serde(rename = "type")]
    kind: BackoffKind,
    delay: u64,
    #[serde(default)]
    jitter: f64,
    #[serde(default)]
    cap: Option<u64>,
}

/// A backoff strategy: the wait before retry `n` (after `n` failed attempts) is
/// `min(base(n), cap)` reduced by up to `jitter` of itself, at random.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Backoff {
    /// Fixed or exponential.
    #[serde(rename = "type")]
    pub kind: BackoffKind,
    /// The base delay in ms.
    pub delay: u64,
    /// 0 to 1: the fraction of the wait that is random. With jitter `j`, a computed wait `w`
    /// becomes a value in `(w * (1 - j), w]`, spreading retries of many jobs apart.
    pub jitter: f64,
    /// The longest wait in ms, applied before the jitter.
    pub cap: Option<u64>,
}

impl Backoff {
    /// A fixed wait of `delay` ms.
    pub fn fixed(delay: u64) -> Self {
        Self {
            kind: BackoffKind::Fixed,
            delay,
            jitter: 0.0,
            cap: None,
        }
    }

    /// `delay * 2^(attempt-1)` ms.
    pub fn exponential(delay: u64) -> Self {
        Self {
            kind: BackoffKind::Exponential,
            ..Self::fixed(delay)
        }
    }

    /// With this jitter (0 to 1).
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// With this cap in ms.
    pub fn with_cap(mut self, cap: u64) -> Self {
        self.cap = Some(cap);
        self
    }

    /// Checks the ranges; `field` is where the backoff was given (`options.backoff`).
    pub fn validate(&self, field: &str) -> Result<()> {
        check_max(&format!("{field}.delay"), self.delay, MAX_DELAY_MS)?;
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(Error::invalid_input(
                format!("{field}.jitter"),
                format!("must be from 0 to 1, got {}", self.jitter),
            ));
        }
        if let Some(cap) = self.cap {
            check_max(&format!("{field}.cap"), cap, MAX_DELAY_MS)?;
        }
        Ok(())
    }

    /// The wait before the next run after `attempts_made` (at least 1) failed attempts, without
    /// jitter: the largest value [`Backoff::delay_ms`] may return.
    pub fn base_delay_ms(&self, attempts_made: u32) -> u64 {
        let base = match self.kind {
            BackoffKind::Fixed => self.delay,
            BackoffKind::Exponential => {
                let shift = attempts_made.saturating_sub(1).min(63);
                self.delay.saturating_mul(1u64 << shift)
            }
        };
        let capped = self.cap.map_or(base, |cap| base.min(cap));
        capped.min(MAX_DELAY_MS)
    }

    /// The wait before the next run after `attempts_made` failed attempts, with the jitter drawn
    /// from `rng` (seeded, so tests are deterministic).
    pub fn delay_ms(&self, attempts_made: u32, rng: &mut fastrand::Rng) -> u64 {
        let wait = self.base_delay_ms(attempts_made);
        if self.jitter <= 0.0 || wait == 0 {
            return wait;
        }
        let spread = (wait as f64 * self.jitter * rng.f64()).floor() as u64;
        wait - spread.min(wait)
    }
}

impl<'de> Deserialize<'de> for Backoff {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        match Value::deserialize(deserializer)? {
            Value::Number(n) => n.as_u64().map(Backoff::fixed).ok_or_else(|| {
                D::Error::custom(format!(
                    "a fixed backoff must be a whole number of ms, got {n}"
                ))
            }),
            spec @ Value::Object(_) => {
                let spec: BackoffSpec = serde_path_to_error::deserialize(spec)
                    .map_err(|e| D::Error::custom(format!("`{}`: {}", e.path(), e.inner())))?;
                Ok(Backoff {
                    kind: spec.kind,
                    delay: spec.delay,
                    jitter: spec.jitter,
                    cap: spec.cap,
                })
            }
            other => Err(de::Error::invalid_type(
                unexpected(&other),
                &"a number of ms or {type, delay, jitter?, cap?}",
            )),
        }
    }
}

fn unexpected(value: &Value) -> de::Unexpected<'_> {
    match value {
        Value::Null => de::Unexpected::Unit,
        Value::Bool(b) => de::Unexpected::Bool(*b),
        Value::String(s) => de::Unexpected::Str(s),
        Value::Array(_) => de::Unexpected::Seq,
        _ => de::Unexpected::Map,
    }
}
