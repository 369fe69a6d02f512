//! Metrics and alerting for ORION's background tasks: the job queues ([`crate::jobs`]), their
//! schedulers and the workflows ([`crate::workflows`]).
//!
//! [`TaskMetrics`] is pure and synchronous: the task driver tells it what happened, with the time
//! (epoch ms) passed in — it reads no clock — and asks it for a report ([`TaskMetrics::metrics`],
//! `orion.tasks.metrics()`) and for alert transitions ([`TaskMetrics::evaluate`], sent to the page
//! as `alert` events; [`TaskMetrics::active_alerts`] for the health report).
//!
//! # What is recorded
//!
//! - per queue: each finished attempt of a job with its wait (ready → started) and run (started →
//!   finished) durations: [`record_completed`](TaskMetrics::record_completed),
//!   [`record_failed`](TaskMetrics::record_failed) (a failed attempt; `final_failure` when the job
//!   failed for good, i.e. no retry follows), [`record_cancelled`](TaskMetrics::record_cancelled)
//!   (no durations), and the number of waiting jobs, sampled on each driver tick
//!   ([`observe_backlog`](TaskMetrics::observe_backlog));
//! - per workflow type: each finished workflow with its outcome and run duration
//!   ([`record_workflow`](TaskMetrics::record_workflow));
//! - per scheduler: each occurrence fired, with its due and fire times
//!   ([`record_schedule_fire`](TaskMetrics::record_schedule_fire)); lateness = `firedAt - dueAt`
//!   (0 when fired early).
//!
//! # Storage, resolution and memory bound
//!
//! Each queue, workflow type (and the schedulers together) has a *series*:
//! - counters per minute (`⌊at / 60 000⌋`), kept for 24 h: a minute is dropped once it ends more
//!   than 24 h before the newest time seen (the newest record, or `now` of
//!   [`evaluate`](TaskMetrics::evaluate)); a record older than that is dropped (counted in
//!   `dropped.stale`). Only minutes with activity take memory (at most 1 441);
//! - durations in log-linear histograms (see below): per minute for the last hour (before the
//!   newest time seen), then merged into one histogram per quarter of an hour
//!   (`⌊at / 900 000⌋`) for the rest of the 24 h. So percentiles over a window within the last
//!   hour have minute resolution; over a longer window, the oldest quarter it
//!   touches is counted whole (it may include up to 14 minutes before the window, and the
//!   durations of up to 14 minutes more than 24 h ago).
//!
//! The histograms are written here rather than taken from a crate: `hdrhistogram` allocates a
//! dense counts array per histogram (kilobytes each, times one per minute and series) and brings
//! serialization dependencies we do not need in the worker's wasm; what we need — sparse bins,
//! merging, a nearest-rank quantile — is about a hundred lines. A duration `v` (ms) falls in bin
//! `v` when `v < 32`, else, with `e = ⌊log2 v⌋` and `s = e - 4`, in bin `16·s + ⌊v / 2^s⌋`: 16
//! linear bins per power of two, 976 bins for the whole `u64` range. A quantile is reported as the
//! middle of its bin (capped at the exact maximum), so it is within 1/32 (3.1 %) of a true sample
//! value of that rank; below 32 ms it is exact. `max` is exact.
//!
//! Memory is bounded whatever the input: at most [`MAX_QUEUES`] queues, [`MAX_WORKFLOW_TYPES`]
//! workflow types and [`MAX_SCHEDULERS`] schedulers are tracked (a record for one more is dropped,
//! counted in `dropped.capacity`, after forgetting the subjects with nothing in the last 24 h);
//! a series holds at most 1 441 minute counters (24 B each) and about [`MAX_HISTOGRAM_ENTRIES`]
//! histogram entries (8 B each; past it a sample goes to the nearest bin in use of its histogram, so
//! counts stay exact and only precision is lost). About 110 KiB per series at worst, under 60 MiB
//! in all; a busy queue (hundreds of jobs a minute) takes some 50 to 100 KiB.
//!
//! # Formulas
//!
//! A window of `W` ms at `now` covers the minutes overlapping `(now - W, now]`: from
//! `from = ⌊(now - W) / 60 000⌋ · 60 000` to `now`. Over it, per queue (and summed for `totals`):
//! - `completed`, `failed` (failed *attempts*, retried or not), `finalFailed` (jobs failed for
//!   good), `cancelled`: sums of the minute counters;
//! - `failureRate = failed / (completed + failed)` — per attempt; `null` without attempts;
//! - `throughputPerMin = completed / (max(now - from, 1 000) / 60 000)`;
//! - `wait` and `run`: `{count, p50, p90, p99, max}` in ms over every attempt (completed or
//!   failed), the `q` quantile being the sample of rank `⌈q · count⌉` (nearest rank);
//! - `backlog`: the last observed number of waiting jobs (whatever the window).
//!
//! Workflows per type likewise (`failed` counts workflows that ended `failed`, `compensated` or
//! `timedOut`; `failureRate = failed / (completed + failed)`), with `run` only. Schedules:
//! `fires` and `lateness` percentiles over the window, and per scheduler its last fire.
//!
//! # Alerts
//!
//! [`AlertRules`] (`configureAlerts`) holds up to three rules; [`TaskMetrics::evaluate`] checks
//! them at `now` (the driver calls it on each tick) and returns only transitions: an
//! [`AlertEvent`] `firing` when a rule's condition becomes true for a subject, `resolved` when it
//! stops (or when its rule is removed). Conditions:
//! - `taskFailureRate {threshold, window, minSamples}`, per queue: over the window,
//!   `completed + failed ≥ minSamples` and `failed / (completed + failed) > threshold`
//!   (`value` = the rate; a threshold of 1 never fires);
//! - `queueBacklog {threshold, window}`, per queue: every backlog observation for at least `window`
//!   ms — since the first of the current run of observations above the threshold — was above it
//!   (`waiting > threshold`); `value` = the last observation. One observation at or below the
//!   threshold resets the run (and resolves). When the threshold changes, a run restarts at the last
//!   observation. An observation more than 24 h old no longer counts (the alert resolves);
//! - `scheduleLate {seconds}`, per scheduler: it fired more than `seconds` after its due time
//!   (`value` = lateness in s). Fires on such an observation and resolves at the next fire that is
//!   on time (or once the scheduler has not fired for 24 h); a late fire followed by an on-time one
//!   between two evaluations yields both events.
//!
//! A window here is the one of the report (minutes overlapping `(now - window, now]`). A subject
//! with nothing recorded for 24 h is forgotten once its alerts have resolved.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::input::{check_id, from_json_at};
use crate::workflows::WorkflowStatus;

/// One minute, the resolution of the counters.
pub const MINUTE_MS: u64 = 60_000;
/// One hour: durations have minute resolution for this long, then [`COARSE_MS`] resolution.
pub const HOUR_MS: u64 = 3_600_000;
/// The resolution of durations older than an hour: 15 minutes.
pub const COARSE_MS: u64 = 900_000;
/// Minutes per [`COARSE_MS`] slot.
const COARSE_MINUTES: u64 = COARSE_MS / MINUTE_MS;
/// How long metrics are kept: 24 h. Also the longest window.
pub const RETENTION_MS: u64 = 86_400_000;
/// The shortest window of a report or an alert rule: 1 s.
pub const MIN_WINDOW_MS: u64 = 1_000;
/// The longest window of a report or an alert rule: 24 h.
pub const MAX_WINDOW_MS: u64 = RETENTION_MS;
/// The most queues tracked at once.
pub const MAX_QUEUES: usize = 256;
/// The most workflow types tracked at once.
pub const MAX_WORKFLOW_TYPES: usize = 256;
/// The most schedulers tracked at once.
pub const MAX_SCHEDULERS: usize = 1_024;
/// The most histogram entries (bins in use) of one series, across its minute and 15-minute
/// histograms (an empty histogram still takes its first entry past it).
pub const MAX_HISTOGRAM_ENTRIES: usize = 8_192;
/// The largest `scheduleLate.seconds`: 24 h.
pub const MAX_LATE_SECONDS: f64 = 86_400.0;

// ---------------------------------------------------------------------------------------------
// Histogram
// ---------------------------------------------------------------------------------------------

/// log2 of the linear bins per power of two.
const SUB_BITS: u32 = 4;
/// Linear bins per power of two.
const SUB: u64 = 1 << SUB_BITS;
/// Bins for the whole `u64` range: `bin_of(u64::MAX) + 1`.
const BINS: usize = 976;

/// The bin of a value (module doc): exact below `2 · SUB`, then `SUB` bins per power of two.
fn bin_of(v: u64) -> u16 {
    if v < 2 * SUB {
        return v as u16; // < 32
    }
    let e = 63 - v.leading_zeros(); // ⌊log2 v⌋ ≥ 5
    let shift = e - SUB_BITS;
    let mantissa = v >> shift; // in [SUB, 2·SUB)
                               // At most 59 · 16 + 31 = 975.
    (u64::from(shift) * SUB + mantissa) as u16
}

/// The smallest and largest values of a bin.
fn bin_range(bin: u16) -> (u64, u64) {
    let b = u64::from(bin);
    if b < 2 * SUB {
        return (b, b);
    }
    let shift = (b / SUB).saturating_sub(1).min(63);
    let mantissa = b % SUB + SUB;
    let lo = mantissa.checked_shl(shift as u32).unwrap_or(u64::MAX);
    let width = 1u64.checked_shl(shift as u32).unwrap_or(u64::MAX);
    (lo, lo.saturating_add(width - 1))
}

/// The value a quantile falling in `bin` is reported as: the middle of the bin.
fn bin_value(bin: u16) -> u64 {
    let (lo, hi) = bin_range(bin);
    lo + (hi - lo) / 2
}

/// A sparse histogram: the bins in use, in order, with their counts, and the exact maximum.
#[derive(Debug, Clone, Default)]
struct Histogram {
    bins: Vec<(u16, u32)>,
    max: u64,
}

impl Histogram {
    /// Adds one sample; returns the entries created (0 or 1). Without `may_grow`, a sample whose
    /// bin is not in use goes to the nearest bin in use (if any).
    fn add(&mut self, value: u64, may_grow: bool) -> usize {
        self.max = self.max.max(value);
        self.add_bin(bin_of(value), 1, may_grow)
    }

    fn add_bin(&mut self, bin: u16, count: u32, may_grow: bool) -> usize {
        match self.bins.binary_search_by_key(&bin, |&(b, _)| b) {
            Ok(i) => {
                if let Some(entry) = self.bins.get_mut(i) {
                    entry.1 = entry.1.saturating_add(count);
                }
                0
            }
            Err(i) if may_grow || self.bins.is_empty() => {
                self.bins.insert(i, (bin, count));
                1
            }
            Err(i) => {
                // `i` is where `bin` would go: its neighbours are `i - 1` and `i`.
                let below = i
                    .checked_sub(1)
                    .and_then(|j| self.bins.get(j).map(|e| (j, e.0)));
                let above = self.bins.get(i).map(|e| (i, e.0));
                let nearest = match (below, above) {
                    (Some((j, b)), Some((k, a))) => {
                        if bin - b <= a - bin {
                            j
                        } else {
                            k
                        }
                    }
                    (Some((j, _)), None) => j,
                    (None, Some((k, _))) => k,
                    (None, None) => return 0,
                };
                if let Some(entry) = self.bins.get_mut(nearest) {
                    entry.1 = entry.1.saturating_add(count);
                }
                0
            }
        }
    }

    /// Adds every sample of `other`; returns the entries created. `budget` says how many entries
    /// may still be created.
    fn merge(&mut self, other: &Histogram, mut budget: usize) -> usize {
        if other.bins.is_empty() {
            return 0;
        }
        self.max = self.max.max(other.max);
        let mut created = 0;
        for &(bin, count) in &other.bins {
            let added = self.add_bin(bin, count, budget > 0);
            created += added;
            budget = budget.saturating_sub(added);
        }
        created
    }
}

/// Histograms merged over a window, dense, for quantiles.
#[derive(Debug, Clone)]
struct Merged {
    counts: Vec<u64>,
    total: u64,
    max: Option<u64>,
}

impl Merged {
    fn new() -> Self {
        Self {
            counts: vec![0; BINS],
            total: 0,
            max: None,
        }
    }

    fn add(&mut self, h: &Histogram) {
        if h.bins.is_empty() {
            return;
        }
        for &(bin, count) in &h.bins {
            if let Some(slot) = self.counts.get_mut(usize::from(bin)) {
                *slot = slot.saturating_add(u64::from(count));
            }
            self.total = self.total.saturating_add(u64::from(count));
        }
        self.max = Some(self.max.map_or(h.max, |m| m.max(h.max)));
    }

    fn add_merged(&mut self, other: &Merged) {
        for (slot, count) in self.counts.iter_mut().zip(&other.counts) {
            *slot = slot.saturating_add(*count);
        }
        self.total = self.total.saturating_add(other.total);
        self.max = match (self.max, other.max) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }

    /// The nearest-rank `q` quantile: the bin holding the sample of rank `⌈q · total⌉`.
    fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        // A float-to-int `as` saturates; the rank is then clamped to 1..=total.
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0u64;
        for (bin, count) in self.counts.iter().enumerate() {
            seen = seen.saturating_add(*count);
            if seen >= rank {
                let value = bin_value(u16::try_from(bin).unwrap_or(u16::MAX));
                return Some(self.max.map_or(value, |m| value.min(m)));
            }
        }
        self.max
    }

    fn percentiles(&self) -> Percentiles {
        Percentiles {
            count: self.total,
            p50: self.quantile(0.50),
            p90: self.quantile(0.90),
            p99: self.quantile(0.99),
            max: if self.total == 0 { None } else { self.max },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Series: minute counters and minute/15-minute histograms
// ---------------------------------------------------------------------------------------------

/// The counters of one minute. For the schedule series, `completed` counts fires.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    completed: u32,
    failed: u32,
    final_failed: u32,
    cancelled: u32,
}

/// Counters summed over a window.
#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    completed: u64,
    failed: u64,
    final_failed: u64,
    cancelled: u64,
}

impl Sums {
    fn add(&mut self, c: &Counts) {
        self.completed = self.completed.saturating_add(u64::from(c.completed));
        self.failed = self.failed.saturating_add(u64::from(c.failed));
        self.final_failed = self.final_failed.saturating_add(u64::from(c.final_failed));
        self.cancelled = self.cancelled.saturating_add(u64::from(c.cancelled));
    }

    fn add_sums(&mut self, s: &Sums) {
        self.completed = self.completed.saturating_add(s.completed);
        self.failed = self.failed.saturating_add(s.failed);
        self.final_failed = self.final_failed.saturating_add(s.final_failed);
        self.cancelled = self.cancelled.saturating_add(s.cancelled);
    }

    fn failure_rate(&self) -> Option<f64> {
        let attempts = self.completed.saturating_add(self.failed);
        (attempts > 0).then(|| self.failed as f64 / attempts as f64)
    }
}

/// The two duration histograms of a slot: wait and run for a queue, run (`b`) for a workflow
/// type, lateness (`a`) for the schedules.
#[derive(Debug, Clone, Default)]
struct Pair {
    a: Histogram,
    b: Histogram,
}

impl Pair {
    fn entries(&self) -> usize {
        self.a.bins.len() + self.b.bins.len()
    }
}

/// A duration sample: for histogram `a` or `b`.
#[derive(Debug, Clone, Copy)]
enum Sample {
    A(u64),
    B(u64),
}

fn minute_end(minute: u64) -> u64 {
    minute.saturating_add(1).saturating_mul(MINUTE_MS)
}

fn coarse_end(slot: u64) -> u64 {
    slot.saturating_add(1).saturating_mul(COARSE_MS)
}

/// The slot of `key` in a deque sorted by key, created if absent.
fn slot_mut<T: Default>(deque: &mut VecDeque<(u64, T)>, key: u64) -> Option<&mut T> {
    let i = deque.partition_point(|(k, _)| *k < key);
    if !matches!(deque.get(i), Some((k, _)) if *k == key) {
        deque.insert(i, (key, T::default()));
    }
    deque.get_mut(i).map(|(_, v)| v)
}

/// The slots of a deque sorted by key with `from ≤ key ≤ to`.
fn slots_in<T>(
    deque: &VecDeque<(u64, T)>,
    from: u64,
    to: u64,
) -> impl Iterator<Item = &(u64, T)> + '_ {
    let start = deque.partition_point(|(k, _)| *k < from);
    deque.range(start..).take_while(move |(k, _)| *k <= to)
}

/// The minutes a report or a rule looks at: those overlapping `(now - window, now]`.
#[derive(Debug, Clone, Copy)]
struct Window {
    now: u64,
    from_minute: u64,
    to_minute: u64,
}

impl Window {
    fn new(now: u64, window_ms: u64) -> Self {
        Self {
            now,
            from_minute: now.saturating_sub(window_ms) / MINUTE_MS,
            to_minute: now / MINUTE_MS,
        }
    }

    /// The start of the oldest minute covered.
    fn start_ms(&self) -> u64 {
        self.from_minute.saturating_mul(MINUTE_MS)
    }

    /// Minutes from the start of the oldest minute covered to `now` (at least 1 s).
    fn span_minutes(&self) -> f64 {
        self.now.saturating_sub(self.start_ms()).max(1_000) as f64 / MINUTE_MS as f64
    }
}

/// Counters and histograms of one queue, workflow type, or of the schedules.
#[derive(Debug, Clone, Default)]
struct Series {
    /// The newest time seen (a record, or an evaluation's `now`).
    latest_at: Option<u64>,
    /// Minute counters, by minute, within 24 h of `latest_at`.
    counts: VecDeque<(u64, Counts)>,
    /// Minute histograms, by minute, within 1 h of `latest_at`.
    fine: VecDeque<(u64, Pair)>,
    /// 15-minute histograms, by `⌊minute / 15⌋`, within 24 h of `latest_at`, for minutes before
    /// those of `fine`.
    coarse: VecDeque<(u64, Pair)>,
    /// Histogram entries in `fine` and `coarse`.
    entries: usize,
}

impl Series {
    /// Moves the reference time to `now` if later: drops what is older than 24 h and merges the
    /// minute histograms older than 1 h into their 15-minute slot's.
    fn advance(&mut self, now: u64) {
        if self.latest_at.is_some_and(|latest| latest >= now) {
            return;
        }
        self.latest_at = Some(now);
        let day_cut = now.saturating_sub(RETENTION_MS);
        while self
            .counts
            .front()
            .is_some_and(|(m, _)| minute_end(*m) <= day_cut)
        {
            self.counts.pop_front();
        }
        let hour_cut = now.saturating_sub(HOUR_MS);
        while self
            .fine
            .front()
            .is_some_and(|(m, _)| minute_end(*m) <= hour_cut)
        {
            let Some((minute, pair)) = self.fine.pop_front() else {
                break;
            };
            self.entries = self.entries.saturating_sub(pair.entries());
            let budget = MAX_HISTOGRAM_ENTRIES.saturating_sub(self.entries);
            if let Some(dest) = slot_mut(&mut self.coarse, minute / COARSE_MINUTES) {
                let created = dest.a.merge(&pair.a, budget);
                let created = created + dest.b.merge(&pair.b, budget.saturating_sub(created));
                self.entries += created;
            }
        }
        while self
            .coarse
            .front()
            .is_some_and(|(slot, _)| coarse_end(*slot) <= day_cut)
        {
            if let Some((_, pair)) = self.coarse.pop_front() {
                self.entries = self.entries.saturating_sub(pair.entries());
            }
        }
    }

    /// Records an event at `at`; `false` (nothing recorded) when it is older than 24 h.
    fn record(&mut self, at: u64, count: impl FnOnce(&mut Counts), samples: &[Sample]) -> bool {
        self.advance(at);
        let latest = self.latest_at.unwrap_or(at);
        let minute = at / MINUTE_MS;
        if minute_end(minute) <= latest.saturating_sub(RETENTION_MS) {
            return false;
        }
        if let Some(counts) = slot_mut(&mut self.counts, minute) {
            count(counts);
        }
        if samples.is_empty() {
            return true;
        }
        let Series {
            fine,
            coarse,
            entries,
            ..
        } = self;
        let pair = if minute_end(minute) > latest.saturating_sub(HOUR_MS) {
            slot_mut(fine, minute)
        } else {
            slot_mut(coarse, minute / COARSE_MINUTES)
        };
        if let Some(pair) = pair {
            for sample in samples {
                let may_grow = *entries < MAX_HISTOGRAM_ENTRIES;
                *entries += match *sample {
                    Sample::A(v) => pair.a.add(v, may_grow),
                    Sample::B(v) => pair.b.add(v, may_grow),
                };
            }
        }
        true
    }

    /// Nothing in the last 24 h. Every sample came with a count of its minute, so without counts
    /// what may be left in a 15-minute histogram is from more than 24 h ago.
    fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    fn sums(&self, w: &Window) -> Sums {
        let mut sums = Sums::default();
        for (_, c) in slots_in(&self.counts, w.from_minute, w.to_minute) {
            sums.add(c);
        }
        sums
    }

    fn per_minute(&self, w: &Window) -> Vec<MinutePoint> {
        slots_in(&self.counts, w.from_minute, w.to_minute)
            .map(|(m, c)| MinutePoint {
                minute: m.saturating_mul(MINUTE_MS),
                completed: u64::from(c.completed),
                failed: u64::from(c.failed),
            })
            .collect()
    }

    /// The histograms over the window: the minute ones overlapping it and, if it reaches before
    /// them, the 15-minute ones overlapping the part before them.
    fn histograms(&self, w: &Window) -> (Merged, Merged) {
        let (mut a, mut b) = (Merged::new(), Merged::new());
        // Every sample in `coarse` is from a minute before `fine_from` (`advance` and `record`
        // put one there only then, and `latest_at` only grows).
        let fine_from = self
            .latest_at
            .map_or(0, |latest| latest.saturating_sub(HOUR_MS) / MINUTE_MS);
        let coarse = if w.from_minute < fine_from {
            let to = w.to_minute.min(fine_from - 1);
            Some(slots_in(
                &self.coarse,
                w.from_minute / COARSE_MINUTES,
                to / COARSE_MINUTES,
            ))
        } else {
            None
        };
        let slots =
            coarse
                .into_iter()
                .flatten()
                .chain(slots_in(&self.fine, w.from_minute, w.to_minute));
        for (_, pair) in slots {
            a.add(&pair.a);
            b.add(&pair.b);
        }
        (a, b)
    }
}

// ---------------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------------

/// How a workflow ended, for [`TaskMetrics::record_workflow`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum WorkflowOutcome {
    /// Every step completed.
    Completed,
    /// Failed for good: `failed`, `compensated` or `timedOut`.
    Failed,
    /// Cancelled.
    Cancelled,
}

impl WorkflowOutcome {
    /// Reads a status name: `completed`, `failed`, `cancelled`, or the failures `compensated` and
    /// `timedOut`; anything else is `ERR_INVALID_INPUT` on `status`.
    pub fn parse(status: &str) -> Result<Self> {
        match status {
            "completed" => Ok(Self::Completed),
            "failed" | "compensated" | "timedOut" => Ok(Self::Failed),
            "cancelled" => Ok(Self::Cancelled),
            other => Err(Error::invalid_input(
                "status",
                format!(
                    "`{}` is not a finished workflow status (completed, failed, compensated, \
                     cancelled, timedOut)",
                    other.chars().take(64).collect::<String>()
                ),
            )),
        }
    }

    /// The outcome of a finished workflow's status; `None` while it runs or compensates.
    pub fn from_status(status: WorkflowStatus) -> Option<Self> {
        match status {
            WorkflowStatus::Completed => Some(Self::Completed),
            WorkflowStatus::Failed | WorkflowStatus::Compensated | WorkflowStatus::TimedOut => {
                Some(Self::Failed)
            }
            WorkflowStatus::Cancelled => Some(Self::Cancelled),
            WorkflowStatus::Running | WorkflowStatus::Compensating => None,
        }
    }
}

/// Duration percentiles over a window, in ms (`null` without samples).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Percentiles {
    /// Samples in the window.
    pub count: u64,
    /// Median, within 3.1 % (exact below 32 ms).
    pub p50: Option<u64>,
    /// 90th percentile, within 3.1 %.
    pub p90: Option<u64>,
    /// 99th percentile, within 3.1 %.
    pub p99: Option<u64>,
    /// The largest sample, exact.
    pub max: Option<u64>,
}

/// One minute of a queue's or workflow type's activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MinutePoint {
    /// The minute's start, epoch ms.
    pub minute: u64,
    /// Jobs (workflows) completed in it.
    pub completed: u64,
    /// Failed attempts (failed workflows) in it.
    pub failed: u64,
}

/// Job counts and durations over a window: one queue's, or all queues' together.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobStats {
    /// Jobs completed.
    pub completed: u64,
    /// Failed attempts, retried or not.
    pub failed: u64,
    /// Jobs that failed for good (their last attempt, or a non-retryable error).
    pub final_failed: u64,
    /// Jobs cancelled.
    pub cancelled: u64,
    /// `completed` per minute of the window.
    pub throughput_per_min: f64,
    /// `failed / (completed + failed)`, per attempt; `null` without attempts.
    pub failure_rate: Option<f64>,
    /// From ready to started, every attempt.
    pub wait: Percentiles,
    /// From started to finished, every attempt.
    pub run: Percentiles,
}

/// One queue's metrics over a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueMetrics {
    /// The queue's name.
    pub queue: String,
    /// Counts and durations.
    #[serde(flatten)]
    pub stats: JobStats,
    /// The last observed number of waiting jobs; `null` if never observed.
    pub backlog: Option<u64>,
    /// When `backlog` was observed.
    pub backlog_at: Option<u64>,
    /// The minutes of the window with activity, oldest first.
    pub per_minute: Vec<MinutePoint>,
}

/// Workflow counts and run durations over a window: one type's, or all types' together.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowStats {
    /// Workflows completed.
    pub completed: u64,
    /// Workflows failed (`failed`, `compensated` or `timedOut`).
    pub failed: u64,
    /// Workflows cancelled.
    pub cancelled: u64,
    /// `completed` per minute of the window.
    pub throughput_per_min: f64,
    /// `failed / (completed + failed)`; `null` when neither happened.
    pub failure_rate: Option<f64>,
    /// From start to finish.
    pub run: Percentiles,
}

/// One workflow type's metrics over a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowMetrics {
    /// The workflow type.
    pub workflow_type: String,
    /// Counts and durations.
    #[serde(flatten)]
    pub stats: WorkflowStats,
    /// The minutes of the window with activity, oldest first.
    pub per_minute: Vec<MinutePoint>,
}

/// One scheduler's last fire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchedulerMetrics {
    /// The scheduler's id.
    pub scheduler_id: String,
    /// Fires recorded since it has been tracked (it is forgotten after 24 h without a fire).
    pub fires: u64,
    /// The due time of its latest fire.
    pub last_due_at: u64,
    /// When its latest fire happened.
    pub last_fired_at: u64,
    /// `lastFiredAt - lastDueAt` (0 when early), ms.
    pub last_lateness_ms: u64,
}

/// Schedule fires over a window.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleMetrics {
    /// Fires in the window, all schedulers.
    pub fires: u64,
    /// Lateness (`firedAt - dueAt`) of those fires, ms.
    pub lateness: Percentiles,
    /// Every tracked scheduler, by id.
    pub schedulers: Vec<SchedulerMetrics>,
}

/// Records not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DroppedRecords {
    /// For a new queue, workflow type or scheduler beyond the limits ([`MAX_QUEUES`], ...).
    pub capacity: u64,
    /// Older than 24 h when recorded.
    pub stale: u64,
}

/// The report of [`TaskMetrics::metrics`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskMetricsReport {
    /// `now` of the report.
    pub at: u64,
    /// The window asked for, ms.
    pub window_ms: u64,
    /// The start of the oldest minute counted (the window, rounded out to whole minutes).
    pub from: u64,
    /// All queues together.
    pub totals: JobStats,
    /// Per queue, by name.
    pub queues: Vec<QueueMetrics>,
    /// All workflow types together.
    pub workflow_totals: WorkflowStats,
    /// Per workflow type, by type.
    pub workflows: Vec<WorkflowMetrics>,
    /// Schedule fires and lateness.
    pub schedules: ScheduleMetrics,
    /// Records not kept since the metrics were created.
    pub dropped: DroppedRecords,
}

/// The `taskFailureRate` rule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailureRateRule {
    /// Fires above this rate (0 to 1; 1 never fires).
    pub threshold: f64,
    /// Over this window, ms (1 s to 24 h).
    pub window: u64,
    /// Attempts the window must hold (at least 1; default 1).
    #[serde(default = "one")]
    pub min_samples: u64,
}

fn one() -> u64 {
    1
}

/// The `queueBacklog` rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BacklogRule {
    /// Fires when more jobs than this wait (at least 1)...
    pub threshold: u64,
    /// ...for this long, ms (1 s to 24 h).
    pub window: u64,
}

/// The `scheduleLate` rule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScheduleLateRule {
    /// Fires when a scheduler fires more than this many seconds after its due time (over 0, at
    /// most [`MAX_LATE_SECONDS`]).
    pub seconds: f64,
}

impl ScheduleLateRule {
    fn threshold_ms(&self) -> u64 {
        // Finite and in (0, 86 400] once validated; `as` saturates anyway.
        (self.seconds * 1_000.0).round() as u64
    }
}

/// The alert rules (`configureAlerts`); each is optional.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AlertRules {
    /// Failure rate of a queue's attempts over a window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_failure_rate: Option<FailureRateRule>,
    /// A queue's waiting jobs above a threshold for a whole window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_backlog: Option<BacklogRule>,
    /// A scheduler firing late.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_late: Option<ScheduleLateRule>,
}

fn check_window(field: &str, window: u64) -> Result<()> {
    if !(MIN_WINDOW_MS..=MAX_WINDOW_MS).contains(&window) {
        return Err(Error::invalid_input(
            field,
            format!("is {window} ms; must be from {MIN_WINDOW_MS} ms (1 s) to {MAX_WINDOW_MS} ms (24 h)"),
        ));
    }
    Ok(())
}

impl AlertRules {
    /// Reads rules from JSON and validates them; a problem is `ERR_INVALID_INPUT` naming the
    /// field, e.g. `taskFailureRate.threshold` (`rules` for the object itself).
    pub fn from_json(value: Value) -> Result<Self> {
        let rules: AlertRules = from_json_at("rules", value).map_err(|e| match e {
            Error::InvalidInput { field, reason } => Error::InvalidInput {
                field: field
                    .strip_prefix("rules.")
                    .map_or(field.clone(), str::to_owned),
                reason,
            },
            other => other,
        })?;
        rules.validate()?;
        Ok(rules)
    }

    /// Checks every rule: `taskFailureRate.threshold` in 0..=1, `.window` 1 s..=24 h,
    /// `.minSamples` ≥ 1; `queueBacklog.threshold` ≥ 1, `.window` 1 s..=24 h;
    /// `scheduleLate.seconds` over 0 and at most 86 400. `ERR_INVALID_INPUT` names the field.
    pub fn validate(&self) -> Result<()> {
        if let Some(rule) = &self.task_failure_rate {
            if !(rule.threshold.is_finite() && (0.0..=1.0).contains(&rule.threshold)) {
                return Err(Error::invalid_input(
                    "taskFailureRate.threshold",
                    format!("is {}; must be from 0 to 1", rule.threshold),
                ));
            }
            check_window("taskFailureRate.window", rule.window)?;
            if rule.min_samples == 0 {
                return Err(Error::invalid_input(
                    "taskFailureRate.minSamples",
                    "is 0; must be at least 1",
                ));
            }
        }
        if let Some(rule) = &self.queue_backlog {
            if rule.threshold == 0 {
                return Err(Error::invalid_input(
                    "queueBacklog.threshold",
                    "is 0; must be at least 1",
                ));
            }
            check_window("queueBacklog.window", rule.window)?;
        }
        if let Some(rule) = &self.schedule_late {
            if !(rule.seconds.is_finite() && rule.seconds > 0.0 && rule.seconds <= MAX_LATE_SECONDS)
            {
                return Err(Error::invalid_input(
                    "scheduleLate.seconds",
                    format!(
                        "is {}; must be over 0 and at most {MAX_LATE_SECONDS}",
                        rule.seconds
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Which rule an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AlertKind {
    /// `taskFailureRate`; the subject is a queue.
    TaskFailureRate,
    /// `queueBacklog`; the subject is a queue.
    QueueBacklog,
    /// `scheduleLate`; the subject is a scheduler id.
    ScheduleLate,
}

impl AlertKind {
    /// The rule's name, as in [`AlertRules`].
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::TaskFailureRate => "taskFailureRate",
            AlertKind::QueueBacklog => "queueBacklog",
            AlertKind::ScheduleLate => "scheduleLate",
        }
    }
}

/// Whether an alert starts or ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AlertState {
    /// The condition became true.
    Firing,
    /// The condition stopped being true (or its rule was removed).
    Resolved,
}

/// An alert transition (the page's `alert` event), or a firing alert (the health report).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertEvent {
    /// The rule.
    pub rule: AlertKind,
    /// The queue, or the scheduler id.
    pub subject: String,
    /// `firing` or `resolved`.
    pub state: AlertState,
    /// The measure: failure rate (0 to 1), waiting jobs, or lateness in s. For a firing alert
    /// in [`TaskMetrics::active_alerts`], its latest value.
    pub value: f64,
    /// The rule's threshold, in the unit of `value`.
    pub threshold: f64,
    /// When the transition was seen (the `now` of [`TaskMetrics::evaluate`]); for a firing alert,
    /// when it started.
    pub at: u64,
    /// A sentence for people.
    pub message: String,
}

// ---------------------------------------------------------------------------------------------
// TaskMetrics
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct Backlog {
    waiting: u64,
    at: u64,
    /// The first observation of the current run above the backlog rule's threshold.
    above_since: Option<u64>,
}

#[derive(Debug, Clone, Default)]
struct QueueState {
    series: Series,
    backlog: Option<Backlog>,
}

#[derive(Debug, Clone)]
struct SchedulerState {
    fires: u64,
    last_due_at: u64,
    last_fired_at: u64,
    last_lateness_ms: u64,
    /// The worst lateness since the last evaluation.
    peak_since_eval: Option<u64>,
}

type AlertKey = (AlertKind, String);

/// A rule's condition for one subject at one evaluation.
struct Observation {
    kind: AlertKind,
    subject: String,
    value: f64,
    threshold: f64,
    condition: bool,
    /// `scheduleLate`: a late fire since the last evaluation, already followed by an on-time one.
    transient_peak: Option<f64>,
    /// The window of the rule (ms), or 0.
    window_ms: u64,
}

fn human_ms(ms: u64) -> String {
    if ms % HOUR_MS == 0 {
        format!("{} h", ms / HOUR_MS)
    } else if ms % MINUTE_MS == 0 {
        format!("{} min", ms / MINUTE_MS)
    } else if ms % 1_000 == 0 {
        format!("{} s", ms / 1_000)
    } else {
        format!("{ms} ms")
    }
}

impl Observation {
    fn message(&self, state: AlertState, value: f64) -> String {
        let (s, w, t) = (&self.subject, human_ms(self.window_ms), self.threshold);
        match (self.kind, state) {
            (AlertKind::TaskFailureRate, AlertState::Firing) => format!(
                "queue `{s}`: {:.1} % of attempts failed over the last {w} (threshold {:.1} %)",
                value * 100.0,
                t * 100.0
            ),
            (AlertKind::TaskFailureRate, AlertState::Resolved) => format!(
                "queue `{s}`: failure rate back to {:.1} % over the last {w} (threshold {:.1} %)",
                value * 100.0,
                t * 100.0
            ),
            (AlertKind::QueueBacklog, AlertState::Firing) => {
                format!("queue `{s}`: {value} jobs waiting, above {t} for {w} or more")
            }
            (AlertKind::QueueBacklog, AlertState::Resolved) => {
                format!("queue `{s}`: backlog down to {value} waiting jobs (threshold {t})")
            }
            (AlertKind::ScheduleLate, AlertState::Firing) => {
                format!("scheduler `{s}` fired {value:.1} s after its due time (threshold {t} s)")
            }
            (AlertKind::ScheduleLate, AlertState::Resolved) => format!(
                "scheduler `{s}` fired on time again ({value:.1} s after its due time; threshold \
                 {t} s)"
            ),
        }
    }

    fn event(&self, state: AlertState, value: f64, at: u64) -> AlertEvent {
        AlertEvent {
            rule: self.kind,
            subject: self.subject.clone(),
            state,
            value,
            threshold: self.threshold,
            at,
            message: self.message(state, value),
        }
    }
}

/// Metrics and alerts of the background tasks (module doc). Feed it with the `record_*` and
/// `observe_*` methods, read it with [`metrics`](Self::metrics), and call
/// [`evaluate`](Self::evaluate) on each tick for the alert transitions.
#[derive(Debug, Clone, Default)]
pub struct TaskMetrics {
    queues: BTreeMap<String, QueueState>,
    workflows: BTreeMap<String, Series>,
    schedulers: BTreeMap<String, SchedulerState>,
    schedules: Series,
    rules: AlertRules,
    active: BTreeMap<AlertKey, AlertEvent>,
    dropped: DroppedRecords,
}

impl TaskMetrics {
    /// Empty metrics, no alert rule.
    pub fn new() -> Self {
        Self::default()
    }

    /// The queue's state, created if there is room (after forgetting idle subjects).
    fn queue_mut(&mut self, queue: &str, at: u64) -> Option<&mut QueueState> {
        if !self.queues.contains_key(queue) {
            if self.queues.len() >= MAX_QUEUES {
                self.prune(at);
            }
            if self.queues.len() >= MAX_QUEUES {
                self.dropped.capacity = self.dropped.capacity.saturating_add(1);
                return None;
            }
            self.queues.insert(queue.to_owned(), QueueState::default());
        }
        self.queues.get_mut(queue)
    }

    fn record_job(
        &mut self,
        queue: &str,
        at: u64,
        count: impl FnOnce(&mut Counts),
        samples: &[Sample],
    ) -> Result<()> {
        check_id("queue", queue)?;
        let recorded = match self.queue_mut(queue, at) {
            Some(state) => state.series.record(at, count, samples),
            None => return Ok(()),
        };
        if !recorded {
            self.dropped.stale = self.dropped.stale.saturating_add(1);
        }
        Ok(())
    }

    /// A job of `queue` completed at `at`, after waiting `wait_ms` (ready → started) and running
    /// `run_ms`. `ERR_INVALID_INPUT` on `queue` for a blank, overlong or control-character name.
    pub fn record_completed(
        &mut self,
        queue: &str,
        at: u64,
        wait_ms: u64,
        run_ms: u64,
    ) -> Result<()> {
        self.record_job(
            queue,
            at,
            |c| c.completed = c.completed.saturating_add(1),
            &[Sample::A(wait_ms), Sample::B(run_ms)],
        )
    }

    /// An attempt of a job of `queue` failed at `at` (a timeout or a lost lease included);
    /// `final_failure` when the job failed for good (no retry follows).
    pub fn record_failed(
        &mut self,
        queue: &str,
        at: u64,
        wait_ms: u64,
        run_ms: u64,
        final_failure: bool,
    ) -> Result<()> {
        self.record_job(
            queue,
            at,
            |c| {
                c.failed = c.failed.saturating_add(1);
                if final_failure {
                    c.final_failed = c.final_failed.saturating_add(1);
                }
            },
            &[Sample::A(wait_ms), Sample::B(run_ms)],
        )
    }

    /// A job of `queue` was cancelled at `at`.
    pub fn record_cancelled(&mut self, queue: &str, at: u64) -> Result<()> {
        self.record_job(
            queue,
            at,
            |c| c.cancelled = c.cancelled.saturating_add(1),
            &[],
        )
    }

    /// `waiting` jobs wait in `queue` at `at` (called by the driver on each tick). An observation
    /// older than the last one of the queue is ignored.
    pub fn observe_backlog(&mut self, queue: &str, waiting: u64, at: u64) -> Result<()> {
        check_id("queue", queue)?;
        let threshold = self.rules.queue_backlog.map(|r| r.threshold);
        let Some(state) = self.queue_mut(queue, at) else {
            return Ok(());
        };
        let previous = state.backlog;
        if previous.is_some_and(|b| b.at > at) {
            return Ok(());
        }
        let above_since = match threshold {
            Some(t) if waiting > t => previous.and_then(|b| b.above_since).or(Some(at)),
            _ => None,
        };
        state.backlog = Some(Backlog {
            waiting,
            at,
            above_since,
        });
        Ok(())
    }

    /// A workflow of `workflow_type` ended at `at` with `outcome` after running `run_ms`.
    /// `ERR_INVALID_INPUT` on `workflowType` for a bad name.
    pub fn record_workflow(
        &mut self,
        workflow_type: &str,
        outcome: WorkflowOutcome,
        at: u64,
        run_ms: u64,
    ) -> Result<()> {
        check_id("workflowType", workflow_type)?;
        if !self.workflows.contains_key(workflow_type) {
            if self.workflows.len() >= MAX_WORKFLOW_TYPES {
                self.prune(at);
            }
            if self.workflows.len() >= MAX_WORKFLOW_TYPES {
                self.dropped.capacity = self.dropped.capacity.saturating_add(1);
                return Ok(());
            }
            self.workflows
                .insert(workflow_type.to_owned(), Series::default());
        }
        let Some(series) = self.workflows.get_mut(workflow_type) else {
            return Ok(());
        };
        let recorded = series.record(
            at,
            |c| match outcome {
                WorkflowOutcome::Completed => c.completed = c.completed.saturating_add(1),
                WorkflowOutcome::Failed => c.failed = c.failed.saturating_add(1),
                WorkflowOutcome::Cancelled => c.cancelled = c.cancelled.saturating_add(1),
            },
            &[Sample::B(run_ms)],
        );
        if !recorded {
            self.dropped.stale = self.dropped.stale.saturating_add(1);
        }
        Ok(())
    }

    /// Scheduler `scheduler_id` fired the occurrence due at `due_at` at `fired_at`. Lateness is
    /// `fired_at - due_at` (0 when early). `ERR_INVALID_INPUT` on `schedulerId` for a bad id.
    pub fn record_schedule_fire(
        &mut self,
        scheduler_id: &str,
        due_at: u64,
        fired_at: u64,
    ) -> Result<()> {
        check_id("schedulerId", scheduler_id)?;
        let lateness = fired_at.saturating_sub(due_at);
        if !self.schedulers.contains_key(scheduler_id) {
            if self.schedulers.len() >= MAX_SCHEDULERS {
                self.prune(fired_at);
            }
            if self.schedulers.len() >= MAX_SCHEDULERS {
                self.dropped.capacity = self.dropped.capacity.saturating_add(1);
                return Ok(());
            }
            self.schedulers.insert(
                scheduler_id.to_owned(),
                SchedulerState {
                    fires: 0,
                    last_due_at: due_at,
                    last_fired_at: fired_at,
                    last_lateness_ms: lateness,
                    peak_since_eval: None,
                },
            );
        }
        if !self.schedules.record(
            fired_at,
            |c| c.completed = c.completed.saturating_add(1),
            &[Sample::A(lateness)],
        ) {
            self.dropped.stale = self.dropped.stale.saturating_add(1);
            return Ok(());
        }
        if let Some(state) = self.schedulers.get_mut(scheduler_id) {
            state.fires = state.fires.saturating_add(1);
            state.peak_since_eval =
                Some(state.peak_since_eval.map_or(lateness, |p| p.max(lateness)));
            if fired_at >= state.last_fired_at {
                state.last_due_at = due_at;
                state.last_fired_at = fired_at;
                state.last_lateness_ms = lateness;
            }
        }
        Ok(())
    }

    /// Forgets, as of `now`, what is older than 24 h, and the subjects left with nothing (no
    /// minute in 24 h, no backlog observed in 24 h, no scheduler fire in 24 h, no firing alert).
    fn prune(&mut self, now: u64) {
        let day_cut = now.saturating_sub(RETENTION_MS);
        let active = &self.active;
        let alerting =
            |kind: AlertKind, subject: &str| active.contains_key(&(kind, subject.to_owned()));
        self.queues.retain(|name, q| {
            q.series.advance(now);
            !q.series.is_empty()
                || q.backlog.is_some_and(|b| b.at > day_cut)
                || alerting(AlertKind::TaskFailureRate, name)
                || alerting(AlertKind::QueueBacklog, name)
        });
        self.workflows.retain(|_, series| {
            series.advance(now);
            !series.is_empty()
        });
        self.schedules.advance(now);
        self.schedulers
            .retain(|id, s| s.last_fired_at > day_cut || alerting(AlertKind::ScheduleLate, id));
    }

    /// Replaces the alert rules (validated first: `ERR_INVALID_INPUT` naming the field, and the
    /// rules in force are kept). Alerts of a removed rule resolve at the next
    /// [`evaluate`](Self::evaluate); a new threshold applies from then on.
    pub fn configure_alerts(&mut self, rules: AlertRules) -> Result<()> {
        rules.validate()?;
        let old = self.rules.queue_backlog.map(|r| r.threshold);
        let new = rules.queue_backlog.map(|r| r.threshold);
        if old != new {
            // The history of observations is not kept: a run above the new threshold starts at
            // the last observation.
            for q in self.queues.values_mut() {
                if let Some(b) = &mut q.backlog {
                    b.above_since = match new {
                        Some(t) if b.waiting > t => Some(b.at),
                        _ => None,
                    };
                }
            }
        }
        self.rules = rules;
        Ok(())
    }

    /// The alert rules in force.
    pub fn alert_rules(&self) -> &AlertRules {
        &self.rules
    }

    /// Checks the rules at `now` and returns the transitions since the last call, by rule then
    /// subject (module doc, "Alerts"); also forgets what is older than 24 h.
    pub fn evaluate(&mut self, now: u64) -> Vec<AlertEvent> {
        self.prune(now);
        // A backlog observation or a scheduler fire older than this no longer holds an alert.
        let day_cut = now.saturating_sub(RETENTION_MS);
        let mut observed = Vec::new();
        if let Some(rule) = self.rules.task_failure_rate {
            let w = Window::new(now, rule.window);
            for (name, q) in &self.queues {
                let sums = q.series.sums(&w);
                let attempts = sums.completed.saturating_add(sums.failed);
                let rate = sums.failure_rate().unwrap_or(0.0);
                observed.push(Observation {
                    kind: AlertKind::TaskFailureRate,
                    subject: name.clone(),
                    value: rate,
                    threshold: rule.threshold,
                    condition: attempts >= rule.min_samples && rate > rule.threshold,
                    transient_peak: None,
                    window_ms: rule.window,
                });
            }
        }
        if let Some(rule) = self.rules.queue_backlog {
            for (name, q) in &self.queues {
                let Some(b) = q.backlog else { continue };
                observed.push(Observation {
                    kind: AlertKind::QueueBacklog,
                    subject: name.clone(),
                    value: b.waiting as f64,
                    threshold: rule.threshold as f64,
                    condition: b.waiting > rule.threshold
                        && b.at > day_cut
                        && b.above_since
                            .is_some_and(|t| now.saturating_sub(t) >= rule.window),
                    transient_peak: None,
                    window_ms: rule.window,
                });
            }
        }
        if let Some(rule) = self.rules.schedule_late {
            let threshold_ms = rule.threshold_ms();
            for (id, s) in &self.schedulers {
                let late = s.last_lateness_ms > threshold_ms && s.last_fired_at > day_cut;
                observed.push(Observation {
                    kind: AlertKind::ScheduleLate,
                    subject: id.clone(),
                    value: s.last_lateness_ms as f64 / 1_000.0,
                    threshold: rule.seconds,
                    condition: late,
                    transient_peak: s
                        .peak_since_eval
                        .filter(|p| !late && *p > threshold_ms)
                        .map(|p| p as f64 / 1_000.0),
                    window_ms: 0,
                });
            }
        }
        for s in self.schedulers.values_mut() {
            s.peak_since_eval = None;
        }

        let mut events = Vec::new();
        let mut seen = BTreeSet::new();
        for obs in observed {
            let key = (obs.kind, obs.subject.clone());
            let was_firing = self.active.contains_key(&key);
            if obs.condition && was_firing {
                if let Some(active) = self.active.get_mut(&key) {
                    active.value = obs.value;
                    active.threshold = obs.threshold;
                    active.message = obs.message(AlertState::Firing, obs.value);
                }
            } else if obs.condition {
                let event = obs.event(AlertState::Firing, obs.value, now);
                self.active.insert(key.clone(), event.clone());
                events.push(event);
            } else if was_firing {
                self.active.remove(&key);
                events.push(obs.event(AlertState::Resolved, obs.value, now));
            } else if let Some(peak) = obs.transient_peak {
                events.push(obs.event(AlertState::Firing, peak, now));
                events.push(obs.event(AlertState::Resolved, obs.value, now));
            }
            seen.insert(key);
        }
        let orphans: Vec<AlertKey> = self
            .active
            .keys()
            .filter(|key| !seen.contains(*key))
            .cloned()
            .collect();
        for key in orphans {
            if let Some(mut event) = self.active.remove(&key) {
                event.state = AlertState::Resolved;
                event.at = now;
                event.message = format!(
                    "{} on `{}`: no longer evaluated (rule removed, or nothing recorded for 24 h)",
                    key.0.as_str(),
                    key.1
                );
                events.push(event);
            }
        }
        // Stable: a subject's `firing` stays before its `resolved`.
        events.sort_by(|a, b| (a.rule, &a.subject).cmp(&(b.rule, &b.subject)));
        events
    }

    /// The firing alerts, by rule then subject, for the health report: each as its `firing`
    /// event (`at` = when it started), with the value of the last evaluation.
    pub fn active_alerts(&self) -> Vec<AlertEvent> {
        self.active.values().cloned().collect()
    }

    /// The report over the last `window_ms` (default and at most 24 h, at least 1 s) at `now`
    /// (module doc, "Formulas"). `ERR_INVALID_INPUT` on `window` out of range.
    pub fn metrics(&self, now: u64, window_ms: Option<u64>) -> Result<TaskMetricsReport> {
        let window_ms = window_ms.unwrap_or(RETENTION_MS);
        check_window("window", window_ms)?;
        let w = Window::new(now, window_ms);
        let span = w.span_minutes();

        let mut total_sums = Sums::default();
        let (mut total_wait, mut total_run) = (Merged::new(), Merged::new());
        let mut queues = Vec::with_capacity(self.queues.len());
        for (name, q) in &self.queues {
            let sums = q.series.sums(&w);
            let (wait, run) = q.series.histograms(&w);
            total_sums.add_sums(&sums);
            total_wait.add_merged(&wait);
            total_run.add_merged(&run);
            queues.push(QueueMetrics {
                queue: name.clone(),
                stats: job_stats(&sums, &wait, &run, span),
                backlog: q.backlog.map(|b| b.waiting),
                backlog_at: q.backlog.map(|b| b.at),
                per_minute: q.series.per_minute(&w),
            });
        }

        let mut wf_sums = Sums::default();
        let mut wf_run = Merged::new();
        let mut workflows = Vec::with_capacity(self.workflows.len());
        for (name, series) in &self.workflows {
            let sums = series.sums(&w);
            let (_, run) = series.histograms(&w);
            wf_sums.add_sums(&sums);
            wf_run.add_merged(&run);
            workflows.push(WorkflowMetrics {
                workflow_type: name.clone(),
                stats: workflow_stats(&sums, &run, span),
                per_minute: series.per_minute(&w),
            });
        }

        let (lateness, _) = self.schedules.histograms(&w);
        let schedules = ScheduleMetrics {
            fires: self.schedules.sums(&w).completed,
            lateness: lateness.percentiles(),
            schedulers: self
                .schedulers
                .iter()
                .map(|(id, s)| SchedulerMetrics {
                    scheduler_id: id.clone(),
                    fires: s.fires,
                    last_due_at: s.last_due_at,
                    last_fired_at: s.last_fired_at,
                    last_lateness_ms: s.last_lateness_ms,
                })
                .collect(),
        };

        Ok(TaskMetricsReport {
            at: now,
            window_ms,
            from: w.start_ms(),
            totals: job_stats(&total_sums, &total_wait, &total_run, span),
            queues,
            workflow_totals: workflow_stats(&wf_sums, &wf_run, span),
            workflows,
            schedules,
            dropped: self.dropped,
        })
    }
}

fn job_stats(sums: &Sums, wait: &Merged, run: &Merged, span_minutes: f64) -> JobStats {
    JobStats {
        completed: sums.completed,
        failed: sums.failed,
        final_failed: sums.final_failed,
        cancelled: sums.cancelled,
        throughput_per_min: sums.completed as f64 / span_minutes,
        failure_rate: sums.failure_rate(),
        wait: wait.percentiles(),
        run: run.percentiles(),
    }
}

fn workflow_stats(sums: &Sums, run: &Merged, span_minutes: f64) -> WorkflowStats {
    WorkflowStats {
        completed: sums.completed,
        failed: sums.failed,
        cancelled: sums.cancelled,
        throughput_per_min: sums.completed as f64 / span_minutes,
        failure_rate: sums.failure_rate(),
        run: run.percentiles(),
    }
}

#[cfg(test)]
mod tests;
