//! What the queue knows of every job without reading the store: the ready order per queue, the
//! delayed timeline, the leases of active jobs, the finished sets (for `removeOn*` counts) and
//! the pending debounce keys. Rebuilt from the `jobs` table when a queue opens (and on
//! [`super::JobQueue::reload`]) and kept in step with every write the queue makes and every row
//! [`super::JobQueue::refresh`] reads again.
//!
//! Also the [`Journal`] the queue and the workflow engine keep of the ids they changed locally
//! while a refresh or reload awaited the store, so that what it read (possibly before the change)
//! does not overwrite the newer local change.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use foldhash::HashMap;

use super::record::{JobRecord, JobState};

/// Which ids an instance changed in its index while readers of the store were pending: a reader
/// takes a mark ([`Journal::begin`]) before it reads, and once it has read, leaves alone the ids
/// changed after its mark ([`Journal::touched_since`]). Ids are remembered only while a reader is
/// pending, so the journal stays empty otherwise.
#[derive(Debug, Default)]
pub(crate) struct Journal {
    /// Changes made so far (the mark of the latest).
    changes: u64,
    /// Readers pending.
    readers: usize,
    /// The mark of the latest change of each id changed while a reader was pending.
    touched: HashMap<String, u64>,
}

impl Journal {
    /// Records a change of `id`.
    pub fn touch(&mut self, id: &str) {
        self.changes += 1;
        if self.readers > 0 {
            self.touched.insert(id.to_owned(), self.changes);
        }
    }

    /// A reader starts: the mark to compare changes with.
    pub fn begin(&mut self) -> u64 {
        self.readers += 1;
        self.changes
    }

    /// A reader is done.
    pub fn end(&mut self) {
        self.readers = self.readers.saturating_sub(1);
        if self.readers == 0 {
            self.touched.clear();
        }
    }

    /// Whether `id` changed after `mark`.
    pub fn touched_since(&self, id: &str, mark: u64) -> bool {
        self.touched.get(id).is_some_and(|at| *at > mark)
    }

    /// The ids changed after `mark`.
    pub fn touched_ids_since(&self, mark: u64) -> Vec<String> {
        self.touched
            .iter()
            .filter(|(_, at)| **at > mark)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

/// A pending reader of a [`Journal`] kept in `cell`: begun on creation, ended on drop (so also
/// when the future reading is dropped mid-await).
pub(crate) struct Reading<'a, S> {
    cell: &'a RefCell<S>,
    journal: fn(&mut S) -> &mut Journal,
    /// Changes after this mark happened while the reader was pending.
    pub mark: u64,
}

impl<'a, S> Reading<'a, S> {
    /// Begins a reader of the journal `journal` finds in `cell`.
    pub fn begin(cell: &'a RefCell<S>, journal: fn(&mut S) -> &mut Journal) -> Self {
        let mark = journal(&mut cell.borrow_mut()).begin();
        Self {
            cell,
            journal,
            mark,
        }
    }
}

impl<S> Drop for Reading<'_, S> {
    fn drop(&mut self) {
        if let Ok(mut state) = self.cell.try_borrow_mut() {
            (self.journal)(&mut state).end();
        }
    }
}

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
    /// The entry of `record`.
    pub fn of(record: &JobRecord) -> Self {
        let debounce = match (&record.options.debounce, record.debounce_until) {
            // A paused job keeps its debounce id: a newer job with it replaces the paused one.
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
    /// Completed and failed jobs per queue.
    finished: HashMap<String, Finished>,
    /// Pending debounced jobs: debounce id → job id.
    pub debounce: HashMap<String, String>,
    /// The largest `seq` seen.
    pub max_seq: u64,
    /// The ids changed while a refresh or reload was reading the store.
    pub journal: Journal,
}

/// One queue's finished jobs by `(finishedAt, seq, id)`.
#[derive(Debug, Default)]
struct Finished {
    completed: BTreeSet<FinishedKey>,
    failed: BTreeSet<FinishedKey>,
}

impl Finished {
    /// The set of jobs in `state` (`None` unless completed or failed).
    fn of(&mut self, state: JobState) -> Option<&mut BTreeSet<FinishedKey>> {
        match state {
            JobState::Completed => Some(&mut self.completed),
            JobState::Failed => Some(&mut self.failed),
            _ => None,
        }
    }
}

impl Index {
    /// Records (or updates) a job.
    pub fn upsert(&mut self, record: &JobRecord) {
        self.put(record.id.clone(), Entry::of(record));
    }

    /// Makes `id`'s entry what it is in `other` (or forgets it if `other` lacks it).
    pub fn copy_from(&mut self, other: &Index, id: &str) {
        match other.entries.get(id) {
            Some(entry) => self.put(id.to_owned(), entry.clone()),
            None => self.remove(id),
        }
    }

    /// Records (or replaces) the entry of job `id`.
    pub fn put(&mut self, id: String, entry: Entry) {
        self.remove(&id);
        self.max_seq = self.max_seq.max(entry.seq);
        match entry.state {
            JobState::Waiting => {
                let ready = match self.ready.get_mut(&entry.name) {
                    Some(ready) => ready,
                    None => self.ready.entry(entry.name.clone()).or_default(),
                };
                ready.insert((entry.priority, entry.seq, id.clone()));
            }
            JobState::Delayed => {
                self.delayed
                    .insert((entry.next_run_at, entry.seq, id.clone()));
            }
            JobState::Active => {
                self.leases.insert((entry.lease_until, id.clone()));
            }
            JobState::Completed | JobState::Failed => {
                let finished = match self.finished.get_mut(&entry.name) {
                    Some(finished) => finished,
                    None => self.finished.entry(entry.name.clone()).or_default(),
                };
                if let Some(set) = finished.of(entry.state) {
                    set.insert((entry.finished_at, entry.seq, id.clone()));
                }
            }
            JobState::Paused | JobState::Cancelled => {}
        }
        if let Some((key, _)) = &entry.debounce {
            self.debounce.insert(key.clone(), id.clone());
        }
        self.entries.insert(id, entry);
    }

    /// Forgets a job.
    pub fn remove(&mut self, id: &str) {
        self.journal.touch(id);
        let Some((id, entry)) = self.entries.remove_entry(id) else {
            return;
        };
        if let Some((key, _)) = &entry.debounce {
            if self.debounce.get(key) == Some(&id) {
                self.debounce.remove(key);
            }
        }
        // The keys below are built from the entry's own id: forgetting a job allocates nothing.
        match entry.state {
            JobState::Waiting => {
                if let Some(ready) = self.ready.get_mut(&entry.name) {
                    ready.remove(&(entry.priority, entry.seq, id));
                    if ready.is_empty() {
                        self.ready.remove(&entry.name);
                    }
                }
            }
            JobState::Delayed => {
                self.delayed.remove(&(entry.next_run_at, entry.seq, id));
            }
            JobState::Active => {
                self.leases.remove(&(entry.lease_until, id));
            }
            JobState::Completed | JobState::Failed => {
                let set = self
                    .finished
                    .get_mut(&entry.name)
                    .and_then(|finished| finished.of(entry.state));
                if let Some(set) = set {
                    set.remove(&(entry.finished_at, entry.seq, id));
                }
            }
            JobState::Paused | JobState::Cancelled => {}
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

    /// The ids of the finished jobs of `queue` in `state`, oldest first.
    pub fn finished_oldest_first(
        &self,
        queue: &str,
        state: JobState,
    ) -> impl ExactSizeIterator<Item = &String> {
        static NONE: BTreeSet<FinishedKey> = BTreeSet::new();
        let set = match (self.finished.get(queue), state) {
            (Some(finished), JobState::Completed) => &finished.completed,
            (Some(finished), JobState::Failed) => &finished.failed,
            _ => &NONE,
        };
        set.iter().map(|(_, _, id)| id)
    }
}
