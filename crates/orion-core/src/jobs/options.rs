//! What `enqueue` accepts: [`JobOptions`], in the JSON shape the JS client sends (camelCase, unknown
//! fields refused), with BullMQ's defaults, validated before anything is stored.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use super::backoff::Backoff;
use crate::error::{Error, Result};
use crate::input::{check_id, from_json_at};

/// The longest `delay`, backoff `delay`/`cap` and debounce `ttl`: one year, in ms.
pub const MAX_DELAY_MS: u64 = 365 * 24 * 60 * 60 * 1000;
/// The longest `timeout`: one week, in ms.
pub const MAX_TIMEOUT_MS: u64 = 7 * 24 * 60 * 60 * 1000;
/// The most `attempts` a job may have.
pub const MAX_ATTEMPTS: u32 = 1000;
pub use crate::input::MAX_ID_BYTES;

/// A job's priority: 1 (critical) to 20 (background); lower runs first, and jobs of one priority
/// run in the order they became ready (FIFO). On the wire a number from 1 to 20 or one of the names
/// `critical`, `high`, `normal`, `low`, `background`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Priority(u8);

impl Priority {
    /// 1: runs before everything else.
    pub const CRITICAL: Priority = Priority(1);
    /// 5.
    pub const HIGH: Priority = Priority(5);
    /// 10, the default.
    pub const NORMAL: Priority = Priority(10);
    /// 15.
    pub const LOW: Priority = Priority(15);
    /// 20: runs when nothing else waits.
    pub const BACKGROUND: Priority = Priority(20);

    const NAMES: [(&'static str, Priority); 5] = [
        ("critical", Priority::CRITICAL),
        ("high", Priority::HIGH),
        ("normal", Priority::NORMAL),
        ("low", Priority::LOW),
        ("background", Priority::BACKGROUND),
    ];

    /// A priority from 1 to 20; anything else is `ERR_INVALID_INPUT` on `options.priority`.
    pub fn new(level: u64) -> Result<Self> {
        match u8::try_from(level) {
            Ok(level @ 1..=20) => Ok(Priority(level)),
            _ => Err(Error::invalid_input(
                "options.priority",
                range_reason(level),
            )),
        }
    }

    /// The level, 1 to 20.
    pub fn level(self) -> u8 {
        self.0
    }
}

impl Default for Priority {
    fn default() -> Self {
        Priority::NORMAL
    }
}

fn range_reason(level: impl fmt::Display) -> String {
    format!("must be an integer from 1 (critical) to 20 (background), got {level}")
}

impl Serialize for Priority {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_u8(self.0)
    }
}

impl<'de> Deserialize<'de> for Priority {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct PriorityVisitor;
        impl Visitor<'_> for PriorityVisitor {
            type Value = Priority;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer from 1 to 20 or critical, high, normal, low, background")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Priority, E> {
                Priority::new(v).map_err(|_| E::custom(range_reason(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Priority, E> {
                u64::try_from(v)
                    .ok()
                    .and_then(|v| Priority::new(v).ok())
                    .ok_or_else(|| E::custom(range_reason(v)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<Priority, E> {
                if v.fract() == 0.0 && (1.0..=20.0).contains(&v) {
                    Ok(Priority(v as u8))
                } else {
                    Err(E::custom(range_reason(v)))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Priority, E> {
                Priority::NAMES
                    .iter()
                    .find(|(name, _)| *name == v)
                    .map(|(_, priority)| *priority)
                    .ok_or_else(|| {
                        E::custom(format!(
                            "unknown priority `{v}`; expected 1 to 20 or critical, high, normal, low, background"
                        ))
                    })
            }
        }
        deserializer.deserialize_any(PriorityVisitor)
    }
}

/// What happens to a finished job (`removeOnComplete`, `removeOnFail`): `false` keeps it (the
/// default: failed jobs are the dead-letter set), `true` deletes it as it finishes, a count `n`
/// keeps only the `n` most recently finished jobs of its queue in that state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RemovePolicy {
    /// Keep it (`false`).
    #[default]
    Keep,
    /// Delete it when it finishes (`true`).
    Remove,
    /// Keep the newest `n` finished jobs of the queue in this state.
    KeepLast(u64),
}

impl Serialize for RemovePolicy {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            RemovePolicy::Keep => serializer.serialize_bool(false),
            RemovePolicy::Remove => serializer.serialize_bool(true),
            RemovePolicy::KeepLast(n) => serializer.serialize_u64(*n),
        }
    }
}

impl<'de> Deserialize<'de> for RemovePolicy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct PolicyVisitor;
        impl Visitor<'_> for PolicyVisitor {
            type Value = RemovePolicy;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true, false or a count of jobs to keep")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> std::result::Result<RemovePolicy, E> {
                Ok(if v {
                    RemovePolicy::Remove
                } else {
                    RemovePolicy::Keep
                })
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<RemovePolicy, E> {
                Ok(RemovePolicy::KeepLast(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<RemovePolicy, E> {
                u64::try_from(v)
                    .map(RemovePolicy::KeepLast)
                    .map_err(|_| E::custom(format!("a count must not be negative, got {v}")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<RemovePolicy, E> {
                if v.fract() == 0.0 && (0.0..9.0e15).contains(&v) {
                    Ok(RemovePolicy::KeepLast(v as u64))
                } else {
                    Err(E::custom(format!(
                        "must be true, false or a whole count, got {v}"
                    )))
                }
            }
        }
        deserializer.deserialize_any(PolicyVisitor)
    }
}

/// `debounce: {id, ttl}`: while a job enqueued with this debounce id is still pending (waiting or
/// delayed) and less than `ttl` ms old, a newer job with the same id replaces it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Debounce {
    /// The debounce key (1 to 256 bytes).
    pub id: String,
    /// How long (ms, at least 1) a pending job may be replaced.
    pub ttl: u64,
}

/// How a job is run, as `enqueue` accepts it. Every field may be omitted on the wire; the unset
/// optional ones are left out when written (every stored job carries its options).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct JobOptions {
    /// 1 (critical) to 20 (background); default 10 (normal).
    pub priority: Priority,
    /// Ms to wait before the job may run (the job is `delayed` until then); default 0.
    pub delay: u64,
    /// How many times the job may run in all (1 to 1000); default 1 (no retry).
    pub attempts: u32,
    /// The wait before each retry; none retries at once. On the wire a number (a fixed delay) or
    /// `{type: 'fixed' | 'exponential', delay, jitter?, cap?}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// Ms an attempt may run before it fails (retryably) and its handler is signalled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// The job's id: if a job with this id exists (in any state), it is returned and nothing is
    /// added. Default: a generated id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// Replace a pending job of the same debounce id enqueued less than `ttl` ms ago.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub debounce: Option<Debounce>,
    /// What to do with the job once completed; default keep.
    pub remove_on_complete: RemovePolicy,
    /// What to do with the job once failed for good; default keep (the dead-letter set).
    pub remove_on_fail: RemovePolicy,
}

impl Default for JobOptions {
    fn default() -> Self {
        Self {
            priority: Priority::NORMAL,
            delay: 0,
            attempts: 1,
            backoff: None,
            timeout: None,
            job_id: None,
            debounce: None,
            remove_on_complete: RemovePolicy::Keep,
            remove_on_fail: RemovePolicy::Keep,
        }
    }
}

impl JobOptions {
    /// Options from the JSON the client sent (`null` means all defaults). A problem is
    /// `ERR_INVALID_INPUT` naming the field, e.g. `options.backoff.jitter`.
    pub fn from_json(value: Value) -> Result<Self> {
        if value.is_null() {
            return Ok(Self::default());
        }
        let options: Self = from_json_at("options", value)?;
        options.validate()?;
        Ok(options)
    }

    /// Checks every range; a problem is `ERR_INVALID_INPUT` naming the field.
    pub fn validate(&self) -> Result<()> {
        check_max("options.delay", self.delay, MAX_DELAY_MS)?;
        if !(1..=MAX_ATTEMPTS).contains(&self.attempts) {
            return Err(Error::invalid_input(
                "options.attempts",
                format!("must be from 1 to {MAX_ATTEMPTS}, got {}", self.attempts),
            ));
        }
        if let Some(backoff) = &self.backoff {
            backoff.validate("options.backoff")?;
        }
        if let Some(timeout) = self.timeout {
            if timeout == 0 {
                return Err(Error::invalid_input(
                    "options.timeout",
                    "must be at least 1",
                ));
            }
            check_max("options.timeout", timeout, MAX_TIMEOUT_MS)?;
        }
        if let Some(id) = &self.job_id {
            check_id("options.jobId", id)?;
        }
        if let Some(debounce) = &self.debounce {
            check_id("options.debounce.id", &debounce.id)?;
            if debounce.ttl == 0 {
                return Err(Error::invalid_input(
                    "options.debounce.ttl",
                    "must be at least 1",
                ));
            }
            check_max("options.debounce.ttl", debounce.ttl, MAX_DELAY_MS)?;
        }
        Ok(())
    }
}

/// `value` at most `max`, or `ERR_INVALID_INPUT` on `field`.
pub(crate) fn check_max(field: &str, value: u64, max: u64) -> Result<()> {
    if value > max {
        return Err(Error::invalid_input(
            field,
            format!("must be at most {max} ms, got {value}"),
        ));
    }
    Ok(())
}
