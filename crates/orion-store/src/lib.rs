//! ORION's IndexedDB storage: [`IdbStore`], the browser implementation of
//! [`orion_core::store::Store`] (the contract, and `MemStore`, its in-memory reference, live in
//! orion-core; both pass `orion_core::store::conformance`).
//!
//! IndexedDB only exists in the browser, so the crate is empty unless compiled for wasm32.
//!
//! # Schema
//!
//! One database (ORION's is named `orion`), one object store per [`orion_core::Table`], each with
//! key path `id`. A row is stored as a plain object `{id, ...fields, ...vectors, ...bytes}` in
//! which every vector is a `Float32Array` and every byte field a `Uint8Array`.
//!
//! Schema history ([`SCHEMA_VERSION`] is the current one):
//!
//! - **1**: the object stores `memories`, `backups`, `jobs`, `workflows` and `meta`, key path `id`,
//!   no indexes.
//! - **2**: for each field of `Table::indexed_fields`, an index `by_<field>` on the compound key
//!   path `[field, "id"]` (not unique, not multi-entry). Rows with one value come out in id order,
//!   and a scan `Scan { after, index: (field, value) }` is the key range `[value, after]`
//!   (exclusive) to `[value, []]`: arrays sort after every string in IndexedDB, so `[value, []]`
//!   is above every `[value, id]`. Rows whose field is missing or not a valid key are simply not in
//!   the index, which matches `MemStore` (it compares the field with a string).
//!
//! Upgrades run in IndexedDB's upgrade transaction (idb's `DatabaseBuilder`, the builder rexie
//! forwards to, declares the whole version-2 schema and adds what an older database lacks), so an
//! interrupted upgrade leaves the old version intact.
//!
//! # Why idb rather than rexie's wrappers
//!
//! rexie 0.6.2 wraps idb 0.6 (the same crate and version this one uses, so nothing more is
//! compiled), but its `Transaction` never exposes the underlying `IDBTransaction`, and
//! `Transaction::done()` turns an abort into `Ok(TransactionResult::Aborted)` without the reason.
//! Chromium checks storage quota when a readwrite transaction commits, after every request has
//! succeeded, and reports a lack of quota only as `IDBTransaction.error` (a `QuotaExceededError`
//! `DOMException`) followed by the transaction's `abort` event: through rexie that reason is lost,
//! so [`Error::Quota`](orion_core::Error::Quota) could not be told from any other abort. This
//! crate therefore opens the database with idb's builder (what rexie's builder calls), takes the
//! `IDBTransaction` idb hands out and reads its `error` when the transaction aborts. rexie itself
//! is used by the tests, to write version-1 fixtures and records ORION did not write.
//!
//! # Failures
//!
//! Every failure is an [`orion_core::Error`]: a `QuotaExceededError` (from a request or the
//! aborted transaction) is `Quota`, anything else from IndexedDB is `Store` with the DOM error's
//! name and message, and so is a stored record that is not a row (not a plain object, no string
//! id, or a value that is neither JSON nor a `Float32Array` nor a `Uint8Array`). Nothing here panics on what
//! IndexedDB returns: a panic would abort the worker.

#[cfg(target_arch = "wasm32")]
mod dom;
#[cfg(target_arch = "wasm32")]
mod idb_store;
#[cfg(target_arch = "wasm32")]
mod row;
#[cfg(target_arch = "wasm32")]
mod schema;

#[cfg(target_arch = "wasm32")]
pub use idb_store::IdbStore;
#[cfg(target_arch = "wasm32")]
pub use schema::SCHEMA_VERSION;
