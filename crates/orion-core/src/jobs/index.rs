//! What the queue knows of every job without reading the store: the ready order per queue, the
//! delayed timeline, the leases of active jobs, the finished sets (for `removeOn*` counts) and
//! the pending debounce keys. Rebuilt from the `jobs` table when a queue opens and kept in step
//! with every write the queue makes.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::record::{JobRecord, JobState};

/// One job, as the index sees it.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub name: String,
    pub state: JobState,
    pub priority: u8,
    pub seq: u64,
    pub next_run_at: u64,
    pub lease_until: u64,
    pub finished_at: u64,
    pub debounce: Option<(String, u64)>,
}

impl Entry {
    fn of(record: &JobRecord) -> Self {
        let debounce = match (&record.options.debounce, record.debounce_until) {
            (Some(d), Some(until)) if record.state.is_pending() => Some((d.id.clone(), until)),
            _ => None,
        };
        Self {
            name: record.name.clone(),
            state: record.state,
            priority: record.options.priority.level(),
            seq: record.seq,
            next_run_at: record.next_run_at.unwrap_or(0),
            lease_until: record.lease_until.unwrap_or(0),
            finished_at: record.finished_at.unwrap_or(0),
            debounce,
        }
    }
}

/// `(priority, seq, id)`: the order waiting jobs start in.
pub(crate) type ReadyKey = (u8, u64, String);

/// `(finishedAt, seq, id)`: the order finished jobs age out in.
pub(crate) type FinishedKey = (u64, u64, String);

#[derive(Debug, Default)]
pub(crate) struct Index {
    pub entries: HashMap<String, Entry>,
    /// Waiting jobs per queue.
    pub ready: BTreeMap<String, BTreeSet<ReadyKey>>,
    /// Delayed jobs by `(nextRunAt, seq, id)`.
    pub delayed: BTreeSet<(u64, u64, String)>,
    /// Active jobs by `(leaseUntil, id)`.
    pub leases: BTreeSet<(u64, String)>,
    /// Completed and failed jobs per `(queue, state)` by `(finishedAt, seq, id)`.
    pub finished: HashMap<(String, JobState), BTreeSet<FinishedKey>>,
    /// Pending debounced jobs: debounce id → job id.
    pub debounce: HashMap<String, String>,
    /// The largest `seq` seen.
    pub max_seq: u64,
}

impl Index {
    /// Records (or updates) a job.
    pub fn upsert(&mut self, record: &JobRecord) {
        self.remove(&record.id);
        let entry = Entry::of(record);
        let id = record.id.clone();
        self.max_seq = self.max_seq.max(entry.seq);
        match entry.state {
            JobState::Waiting => {
                self.ready.entry(entry.name.clone()).or_default().insert((
                    entry.priority,
                    entry.seq,
                    id.clone(),
                ));
            }
            JobState::Delayed => {
                self.delayed
                    .insert((entry.next_run_at, entry.seq, id.clone()));
            }
            JobState::Active => {
                self.leases.insert((entry.lease_until, id.clone()));
            }
            JobState::Completed | JobState::Failed => {
                self.finished
                    .entry((entry.name.clone(), entry.state))
                    .or_default()
                    .insert((entry.finished_at, entry.seq, id.clone()));
            }
            JobState::Cancelled => {}
        }
        if let Some((key, _)) = &entry.debounce {
            self.debounce.insert(key.clone(), id.clone());
        }
        self.entries.insert(id, entry);
    }

    /// Forgets a job.
    pub fn remove(&mut self, id: &str) {
        let Some(entry) = self.entries.remove(id) else {
            return;
        };
        let id = id.to_owned();
        match entry.state {
            JobState::Waiting => {
                if let Some(ready) = self.ready.get_mut(&entry.name) {
                    ready.remove(&(entry.priority, entry.seq, id.clone()));
                    if ready.is_empty() {
                        self.ready.remove(&entry.name);
                    }
                }
            }
            JobState::Delayed => {
                self.delayed
                    .remove(&(entry.next_run_at, entry.seq, id.clone()));
            }
            JobState::Active => {
                self.leases.remove(&(entry.lease_until, id.clone()));
            }
            JobState::Completed | JobState::Failed => {
                if let Some(set) = self.finished.get_mut(&(entry.name.clone(), entry.state)) {
                    set.remove(&(entry.finished_at, entry.seq, id.clone()));
                }
            }
            JobState::Cancelled => {}
        }
        if let Some((key, _)) = &entry.debounce {
            if self.debounce.get(key) == Some(&id) {
                self.debounce.remove(key);
            }
        }
    }

    /// The pending job a new job with debounce id `key` replaces at `now`, if any.
    pub fn debounced(&self, key: &str, now: u64) -> Option<&str> {
        let id = self.debounce.get(key)?;
        let entry = self.entries.get(id)?;
        match &entry.debounce {
            Some((_, until)) if entry.state.is_pending() && now < *until => Some(id),
            _ => None,
        }
    }

    /// The ids of finished jobs of `queue` in `state` beyond the newest `keep`.
    pub fn beyond_newest(&self, queue: &str, state: JobState, keep: u64) -> Vec<String> {
        let Some(set) = self.finished.get(&(queue.to_owned(), state)) else {
            return Vec::new();
        };
        let keep = usize::try_from(keep).unwrap_or(usize::MAX);
        let excess = set.len().saturating_sub(keep);
        set.iter()
            .take(excess)
            .map(|(_, _, id)| id.clone())
            .collect()
    }
}
