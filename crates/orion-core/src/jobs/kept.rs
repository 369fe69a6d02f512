//! The records of waiting jobs an instance enqueued, kept until they start so that a start need
//! not read them back (it still checks each row in its write). Bounded by an estimate of the
//! memory they take rather than by a count: a burst of small jobs is kept whole, a few large ones
//! are not kept at all.

use foldhash::HashMap;

use super::record::JobRecord;

/// How much memory, estimated, kept records may take: 32 MiB.
pub(crate) const KEPT_BYTES: usize = 32 << 20;
/// The largest `data` (serialised) of a kept record: larger jobs are read back at their start.
pub(crate) const KEPT_DATA_BYTES: usize = 4_096;
/// A kept record's estimated size beside its `data`: the record, its strings, its map entry.
const RECORD_BYTES: usize = 1_024;

/// Kept records by job id, with their estimated size.
#[derive(Debug, Default)]
pub(crate) struct KeptRecords {
    records: HashMap<String, (JobRecord, usize)>,
    bytes: usize,
}

impl KeptRecords {
    /// Keeps `record`, whose `data` serialises to `data_bytes`, if it is small enough and the
    /// budget has room; replaces a record of the same id.
    pub fn keep(&mut self, record: JobRecord, data_bytes: usize) {
        if data_bytes > KEPT_DATA_BYTES {
            return;
        }
        // A parsed `data` takes about twice its JSON.
        let size = RECORD_BYTES + 2 * data_bytes;
        if self.bytes + size > KEPT_BYTES {
            return;
        }
        self.bytes += size;
        if let Some((_, replaced)) = self.records.insert(record.id.clone(), (record, size)) {
            self.bytes -= replaced;
        }
    }

    /// Takes the record of job `id` out, if it is kept.
    pub fn remove(&mut self, id: &str) -> Option<JobRecord> {
        let (record, size) = self.records.remove(id)?;
        self.bytes -= size;
        Some(record)
    }

    /// Forgets every record.
    pub fn clear(&mut self) {
        self.records.clear();
        self.bytes = 0;
    }

    /// How many records are kept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.records.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::JobOptions;
    use serde_json::json;

    fn record(id: &str) -> JobRecord {
        serde_json::from_value(json!({
            "id": id, "name": "q", "data": {}, "state": "waiting",
            "options": JobOptions::default(), "seq": 1, "attemptsMade": 0, "stalledCount": 0,
            "progress": 0, "createdAt": 0,
        }))
        .unwrap()
    }

    #[test]
    fn the_budget_bounds_what_is_kept_and_frees_what_is_taken() {
        let mut kept = KeptRecords::default();
        let fits = KEPT_BYTES / RECORD_BYTES;
        for i in 0..fits + 10 {
            kept.keep(record(&format!("j{i}")), 0);
        }
        assert_eq!(kept.len(), fits);
        assert!(kept.remove("j0").is_some());
        assert!(kept.remove("j0").is_none());
        kept.keep(record("late"), 0);
        assert_eq!(kept.len(), fits, "the freed room is used again");
        kept.keep(record("big"), KEPT_DATA_BYTES + 1);
        assert!(kept.remove("big").is_none(), "large data is never kept");
        kept.clear();
        assert_eq!(kept.len(), 0);
        kept.keep(record("again"), KEPT_DATA_BYTES);
        assert!(kept.remove("again").is_some());
    }
}
