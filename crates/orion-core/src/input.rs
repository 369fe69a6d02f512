//! Reading what the host sends and what the store holds into typed values, with the offending
//! field named: ids and names, JSON sizes, option objects and stored records. The job queue, its
//! schedulers and the workflow engine all check their input with these, so one rule means one
//! message everywhere.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::store::Row;

/// The longest id or name (a `jobId`, a queue or workflow type, a workflow id), in UTF-8 bytes.
pub const MAX_ID_BYTES: usize = 256;

/// An id or name: not blank, at most [`MAX_ID_BYTES`], no control characters; otherwise
/// `ERR_INVALID_INPUT` on `field`.
pub(crate) fn check_id(field: &str, id: &str) -> Result<()> {
    if id.trim().is_empty() {
        return Err(Error::invalid_input(field, "is empty"));
    }
    if id.len() > MAX_ID_BYTES {
        return Err(Error::invalid_input(
            field,
            format!("is {} bytes; at most {MAX_ID_BYTES}", id.len()),
        ));
    }
    if id.chars().any(char::is_control) {
        return Err(Error::invalid_input(field, "contains control characters"));
    }
    Ok(())
}

/// `value` when it is absent or within `low..=high`; else `ERR_INVALID_INPUT` on `field`,
/// saying the range.
pub(crate) fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    field: &str,
    value: Option<T>,
    low: T,
    high: T,
) -> Result<Option<T>> {
    match value {
        Some(v) if !(low <= v && v <= high) => Err(Error::invalid_input(
            field,
            format!("is {v}; it must be {low} to {high}"),
        )),
        other => Ok(other),
    }
}

/// `ids` checked as ids (`ERR_INVALID_INPUT` on `ids[i]`), sorted, each once: what a refresh
/// re-reads.
pub(crate) fn unique_ids(ids: &[String]) -> Result<Vec<String>> {
    for (i, id) in ids.iter().enumerate() {
        check_id(&format!("ids[{i}]"), id)?;
    }
    let mut unique = ids.to_vec();
    unique.sort();
    unique.dedup();
    Ok(unique)
}

/// `value` serialised is at most `max` bytes (answers how many), or `ERR_INVALID_INPUT` on
/// `field`.
pub(crate) fn check_json_size(field: &str, value: &Value, max: usize) -> Result<usize> {
    let mut counter = ByteCounter(0);
    let size = serde_json::to_writer(&mut counter, value).map_or(usize::MAX, |()| counter.0);
    if size > max {
        return Err(Error::invalid_input(
            field,
            format!("is {size} bytes of JSON; at most {max}"),
        ));
    }
    Ok(size)
}

/// Counts what is written to it: a size without the text (std has no counting writer).
struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 = self.0.saturating_add(bytes.len());
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The object `value` read as a `T`; a problem is `ERR_INVALID_INPUT` on the field under
/// `prefix` (e.g. `options.backoff.jitter`).
pub(crate) fn from_json_at<T: DeserializeOwned>(prefix: &str, value: Value) -> Result<T> {
    // serde would read a struct from an array too.
    if !value.is_object() {
        return Err(Error::invalid_input(prefix, "must be an object"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let reason = e.inner().to_string();
        let mut field = prefix.to_owned();
        let path = e.path().to_string();
        if path != "." {
            field = format!("{field}.{path}");
        }
        // serde reports a missing field at its parent; name the field itself.
        if let Some(missing) = reason
            .strip_prefix("missing field `")
            .and_then(|rest| rest.strip_suffix('`'))
        {
            field = format!("{field}.{missing}");
        }
        Error::invalid_input(field, reason)
    })
}

/// The record `row` holds, its `id` field being `id`; an unreadable row is `ERR_STORE` naming
/// `what` (e.g. "job `j1`") and the field.
pub(crate) fn record_from_row<T: DeserializeOwned>(row: &Row, id: &str, what: &str) -> Result<T> {
    // Deserialised from the row's fields by reference, with `id` put in their place: the queue
    // reads rows on every start, and copying each row's map first was a fifth of its time.
    let id = Value::String(id.to_owned());
    let fields = row
        .fields
        .iter()
        .filter(|(key, _)| key.as_str() != "id")
        .map(|(key, value)| (key.as_str(), value))
        .chain(std::iter::once(("id", &id)));
    let map = serde::de::value::MapDeserializer::<_, serde_json::Error>::new(fields);
    serde_path_to_error::deserialize(map)
        .map_err(|e| Error::Store(format!("{what}: field `{}`: {}", e.path(), e.inner())))
}
