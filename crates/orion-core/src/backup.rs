//! Backups kept in the `backups` table: taken from a consistent snapshot of the memories, stored
//! as the file users download ([`crate::backup_file`]), listed, verified, exported and deleted,
//! with the automatic ones pruned to the newest few.
//!
//! # Storage
//!
//! A backup is one **info** row (`id` = the backup's id; `kind` `auto` or `manual`, `label`,
//! `createdAt`, `itemCount`, `bytes`, `embeddingVersion`, `checksum`, `parts`) and its document
//! cut into **part** rows (`<id>/<n>`, 5 hex digits; `kind` `part`, `text`), at most
//! [`ROWS_PER_PART`] memories each, so that no single IndexedDB record holds a whole large
//! database and an export can be read part by part. The `kind` index finds the info rows. The
//! info row and every part are written in one transaction, together with the deletion of the
//! automatic backups beyond the newest [`BackupConfig::keep_auto`]: a backup is there whole or
//! not at all, and never more than the configured number of automatic ones.
//!
//! # Consistency
//!
//! The memories are read with [`Store::visit_snapshot`], one read transaction: a backup is the
//! table as it was at one moment, whatever is written meanwhile. The transaction is read
//! `READ_ROWS` (250) rows per request, each read written into the current part before the next is
//! placed: in IndexedDB the worker answers other requests (memory searches) between the reads,
//! and no more than a part of the table is held at once. A stored backup keeps its parts until they
//! are written together; an export hands each part on as soon as it is written.
//!
//! # Restore and import
//!
//! [`BackupManager::restore`] reads a stored backup, validates its whole document
//! ([`decode_and_validate`]) and checks its header against the info row (id, item count,
//! checksum, size); [`BackupManager::import`] validates a file's text the same way. Both use this
//! store's text and meta limits, so that a row the memory layer could not hold is refused with
//! its exact path. Only then are the memories applied, by [`Memories::restore`], in one
//! transaction: any problem, before or during that write, leaves the database as it was.
//!
//! A file without ORION's header (one made by Dexie's `exportDB` from ORION's database) is
//! imported: every row is validated exactly as in ORION's own files, only there is no checksum
//! to check the rows against. Restoring a *stored* backup without a header is refused, since
//! ORION always writes one.

use std::cell::Cell;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::backup_file::{
    decode_and_validate, BackupHeader, BackupKind, BackupLimits, BackupMeta, BackupWriter,
};
use crate::clock::SharedClock;
use crate::embedding::EmbeddingModelInfo;
use crate::error::{Error, Result};
use crate::ids::IdClock;
use crate::input::{check_id, in_range};
use crate::memory::{Memories, RestoreOptions, RestoreReport};
use crate::store::{Row, Scan, SnapshotVisitor, Store, Table, WriteOp};

/// Memories per part row.
pub const ROWS_PER_PART: usize = 1_000;

/// Memories read per request while a backup is taken: the worker answers other requests between
/// two reads, so this bounds how long one waits for a backup (about 15 ms at 250).
const READ_ROWS: usize = 250;
const _: () = assert!(ROWS_PER_PART % READ_ROWS == 0, "a part is whole reads");

/// Parts read per transaction by [`BackupManager::export`] (a few MB), with progress after each.
const PARTS_PER_READ: usize = 4;

/// The longest label, in UTF-8 bytes.
pub const MAX_LABEL_BYTES: usize = crate::backup_file::MAX_LABEL_BYTES;

const PART_KIND: &str = "part";

/// How backups are taken and kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupConfig {
    /// Automatic backups kept (the newest); older ones are deleted when a new one is stored.
    /// Manual backups are kept until deleted. Default 5.
    pub keep_auto: usize,
    /// What a backup may hold.
    pub limits: BackupLimits,
}

impl Default for BackupConfig {
    fn default() -> Self {
        Self {
            keep_auto: 5,
            limits: BackupLimits::default(),
        }
    }
}

/// When the first automatic backup is due, after the database's first start, by default.
pub const FIRST_AUTO_BACKUP_MS: u64 = 5 * 60 * 1000;

/// How often automatic backups are taken, by default.
pub const AUTO_BACKUP_EVERY_MS: u64 = 60 * 60 * 1000;

/// `init.backups`: the page's changes to when automatic backups are taken and how many are kept
/// (every field optional).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupSettings {
    /// Take automatic backups (default true). `false` removes the schedule; the automatic
    /// backups already taken stay until deleted.
    #[serde(default)]
    pub automatic: Option<bool>,
    /// Ms from the database's first start to the first automatic backup, 0 to 7 days
    /// (default 5 minutes).
    #[serde(default)]
    pub first_after_ms: Option<u64>,
    /// Ms between automatic backups, 1 minute to 30 days (default 1 hour).
    #[serde(default)]
    pub every_ms: Option<u64>,
    /// Automatic backups kept, the newest, 1 to 100 (default 5).
    #[serde(default)]
    pub keep_auto: Option<usize>,
}

/// When automatic backups are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoBackups {
    /// Ms from the database's first start to the first one.
    pub first_after_ms: u64,
    /// Ms between two.
    pub every_ms: u64,
}

impl Default for AutoBackups {
    fn default() -> Self {
        Self {
            first_after_ms: FIRST_AUTO_BACKUP_MS,
            every_ms: AUTO_BACKUP_EVERY_MS,
        }
    }
}

impl BackupSettings {
    /// The configuration and the automatic schedule (`None` when turned off) these settings
    /// give; a value out of range is `ERR_INVALID_INPUT` on `backups.<field>`.
    pub fn resolve(&self) -> Result<(BackupConfig, Option<AutoBackups>)> {
        const DAY_MS: u64 = 24 * 60 * 60 * 1000;
        let mut config = BackupConfig::default();
        let mut auto = AutoBackups::default();
        if let Some(keep) = in_range("backups.keepAuto", self.keep_auto, 1, 100)? {
            config.keep_auto = keep;
        }
        if let Some(ms) = in_range("backups.firstAfterMs", self.first_after_ms, 0, 7 * DAY_MS)? {
            auto.first_after_ms = ms;
        }
        if let Some(ms) = in_range("backups.everyMs", self.every_ms, 60_000, 30 * DAY_MS)? {
            auto.every_ms = ms;
        }
        Ok((config, self.automatic.unwrap_or(true).then_some(auto)))
    }
}

/// What `orion.backups.stats()` reports of the stored backups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupStats {
    /// Backups stored.
    pub count: usize,
    /// Of which automatic.
    pub auto: usize,
    /// Of which manual.
    pub manual: usize,
    /// Their documents' bytes, together.
    pub bytes: u64,
    /// When the newest was taken (ms), if any.
    pub newest_at: Option<u64>,
    /// When the oldest was taken (ms), if any.
    pub oldest_at: Option<u64>,
    /// Automatic backups kept.
    pub keep_auto: usize,
}

/// A stored backup, as `orion.backups.list()` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupInfo {
    /// Its id.
    pub id: String,
    /// `auto` or `manual`.
    pub kind: BackupKind,
    /// The user's label.
    pub label: Option<String>,
    /// When it was taken (ms).
    pub created_at: u64,
    /// How many memories it holds.
    pub item_count: u64,
    /// The size of its document, in bytes.
    pub bytes: u64,
    /// The embedder active when it was taken.
    pub embedding_version: String,
    /// `sha256:` and the hex SHA-256 of its rows ([`crate::backup_file`]).
    pub checksum: String,
    /// How many part rows hold its document.
    pub parts: u32,
}

impl BackupInfo {
    fn to_row(&self) -> Row {
        Row::new(self.id.clone())
            .with("kind", json!(self.kind.name()))
            .with("label", json!(self.label))
            .with("createdAt", json!(self.created_at))
            .with("itemCount", json!(self.item_count))
            .with("bytes", json!(self.bytes))
            .with("embeddingVersion", json!(self.embedding_version))
            .with("checksum", json!(self.checksum))
            .with("parts", json!(self.parts))
    }

    fn from_row(row: &Row) -> Result<Self> {
        let unreadable = |field: &str| {
            Error::Store(format!(
                "backup `{}`: its `{field}` is missing or not what was stored",
                row.id
            ))
        };
        let number = |field: &str| {
            row.fields
                .get(field)
                .and_then(Value::as_u64)
                .ok_or_else(|| unreadable(field))
        };
        let text = |field: &str| {
            row.fields
                .get(field)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| unreadable(field))
        };
        let kind = match row.fields.get("kind").and_then(Value::as_str) {
            Some("auto") => BackupKind::Auto,
            Some("manual") => BackupKind::Manual,
            _ => return Err(unreadable("kind")),
        };
        Ok(Self {
            id: row.id.clone(),
            kind,
            label: row
                .fields
                .get("label")
                .and_then(Value::as_str)
                .map(str::to_owned),
            created_at: number("createdAt")?,
            item_count: number("itemCount")?,
            bytes: number("bytes")?,
            embedding_version: text("embeddingVersion")?,
            checksum: text("checksum")?,
            parts: u32::try_from(number("parts")?).map_err(|_| unreadable("parts"))?,
        })
    }

    fn part_ids(&self) -> Vec<String> {
        (0..self.parts).map(|n| part_id(&self.id, n)).collect()
    }
}

fn part_id(backup: &str, n: u32) -> String {
    format!("{backup}/{n:05x}")
}

/// What [`BackupManager::verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// Whether the backup can be restored as it is.
    pub valid: bool,
    /// What is wrong with it (empty when valid).
    pub issues: Vec<String>,
}

/// Backups over a [`Store`]: see the [module docs](self).
pub struct BackupManager {
    store: Rc<dyn Store>,
    clock: SharedClock,
    config: BackupConfig,
    ids: std::cell::RefCell<(IdClock, fastrand::Rng)>,
    /// Backups being taken (reading `memories` in one transaction) now.
    taking: Rc<Cell<u32>>,
}

impl BackupManager {
    /// A manager of the backups in `store`; `seed` keeps its ids apart from other workers'.
    pub fn new(store: Rc<dyn Store>, clock: SharedClock, config: BackupConfig, seed: u64) -> Self {
        Self {
            store,
            clock,
            config,
            ids: std::cell::RefCell::new((IdClock::default(), fastrand::Rng::with_seed(seed))),
            taking: Rc::default(),
        }
    }

    /// Counts the backups being taken in `taking` (shared with the caller) rather than a counter
    /// of its own. While it is above 0 a read transaction over `memories` is open, and a write
    /// there would wait for it to end, as would every read placed after that write: a caller
    /// holds back writes that can wait (search hits' `lastAccessed`) meanwhile.
    pub fn counting_backups_in(mut self, taking: Rc<Cell<u32>>) -> Self {
        self.taking = taking;
        self
    }

    /// Takes a backup of every memory, as they are at one moment, and stores it (pruning
    /// automatic backups beyond [`BackupConfig::keep_auto`] in the same transaction). `embedding`
    /// is the active embedder, recorded in the backup. A label over [`MAX_LABEL_BYTES`] is
    /// `ERR_INVALID_INPUT` on `label`; a stored memory a backup may not hold is
    /// `ERR_BACKUP_INVALID` naming it, and nothing is written.
    pub async fn create(
        &self,
        kind: BackupKind,
        label: Option<String>,
        embedding: &EmbeddingModelInfo,
    ) -> Result<BackupInfo> {
        if let Some(label) = &label {
            if label.len() > MAX_LABEL_BYTES || label.chars().any(char::is_control) {
                return Err(Error::invalid_input(
                    "label",
                    format!("must be at most {MAX_LABEL_BYTES} bytes, without control characters"),
                ));
            }
        }
        let mut parts = Vec::new();
        let mut keep = |part| {
            parts.push(part);
            Ok(())
        };
        let info = self
            .take(kind, label, embedding, &mut keep, &|_, _| {})
            .await?;
        let id = info.id.clone();
        let mut ops = vec![WriteOp::Put(Table::Backups, info.to_row())];
        for (n, text) in (0u32..).zip(parts) {
            ops.push(WriteOp::Put(
                Table::Backups,
                Row::new(part_id(&id, n))
                    .with("kind", json!(PART_KIND))
                    .with("backupId", json!(id))
                    .with("text", Value::String(text)),
            ));
        }
        if kind == BackupKind::Auto {
            // The new one counts among the kept.
            let autos = self.autos_newest_first().await?;
            for old in autos.iter().skip(self.config.keep_auto.saturating_sub(1)) {
                ops.extend(deletion(old));
            }
        }
        self.store.write(ops).await?;
        Ok(info)
    }

    /// A backup of every memory as they are at one moment (one read transaction, read
    /// [`READ_ROWS`] rows at a time): its document goes to `sink` part by part as it is
    /// written, with `progress(memories, total)` after each part; answers its info. Stores
    /// nothing.
    async fn take(
        &self,
        kind: BackupKind,
        label: Option<String>,
        embedding: &EmbeddingModelInfo,
        sink: &mut dyn FnMut(String) -> Result<()>,
        progress: &dyn Fn(u64, u64),
    ) -> Result<BackupInfo> {
        let now = self.clock.now_ms();
        let id = {
            let mut ids = self.ids.borrow_mut();
            let (clock, rng) = &mut *ids;
            clock.next("b", now, rng)
        };
        let meta = BackupMeta {
            backup_id: id.clone(),
            created_at: now,
            kind,
            label: label.clone(),
            embedding: embedding.clone(),
        };
        let _counted = Counted::new(&self.taking);
        let mut taking = Taking {
            meta: Some(meta),
            limits: &self.config.limits,
            writer: None,
            sink,
            progress,
            total: 0,
            done: 0,
            bytes: 0,
            parts: 0,
            part: String::new(),
            part_rows: 0,
        };
        self.store
            .visit_snapshot(Table::Memories, READ_ROWS, &mut taking)
            .await?;
        taking.end_part()?;
        let writer = taking
            .writer
            .take()
            .ok_or_else(|| Error::Internal("the snapshot gave no count".into()))?;
        let (last, header) = writer.finish()?;
        taking.emit(last)?;
        Ok(BackupInfo {
            id,
            kind,
            label,
            created_at: now,
            item_count: header.item_count,
            bytes: taking.bytes,
            embedding_version: embedding.version.clone(),
            checksum: header.checksum,
            parts: taking.parts,
        })
    }

    /// The document of a backup taken now and not stored, part by part to `sink` (as
    /// [`BackupManager::export`]): what `export()` without an id gives.
    pub async fn export_current(
        &self,
        embedding: &EmbeddingModelInfo,
        sink: &mut dyn FnMut(String) -> Result<()>,
        progress: &dyn Fn(u64, u64),
    ) -> Result<Exported> {
        let info = self
            .take(BackupKind::Manual, None, embedding, sink, progress)
            .await?;
        Ok(Exported::of(&info))
    }

    /// Makes room after a write ran out of quota ([`Store::set_quota_relief`]): deletes every
    /// automatic backup but the newest, in one transaction; manual ones are never touched.
    /// Answers how many it deleted.
    pub async fn free_space(&self) -> Result<usize> {
        let autos = self.autos_newest_first().await?;
        let old = autos.get(1..).unwrap_or_default();
        if old.is_empty() {
            return Ok(0);
        }
        self.store
            .write(old.iter().flat_map(deletion).collect())
            .await?;
        Ok(old.len())
    }

    async fn autos_newest_first(&self) -> Result<Vec<BackupInfo>> {
        let mut autos = self.of_kind(BackupKind::Auto).await?;
        autos.sort_by(newest_first);
        Ok(autos)
    }

    /// Every backup, newest first.
    pub async fn list(&self) -> Result<Vec<BackupInfo>> {
        let mut all = self.of_kind(BackupKind::Auto).await?;
        all.extend(self.of_kind(BackupKind::Manual).await?);
        all.sort_by(newest_first);
        Ok(all)
    }

    async fn of_kind(&self, kind: BackupKind) -> Result<Vec<BackupInfo>> {
        let mut infos = Vec::new();
        let mut scan = Scan::first(500).where_eq("kind", kind.name());
        loop {
            let rows = self.store.scan(Table::Backups, scan.clone()).await?;
            let Some(last) = rows.last() else { break };
            scan = scan.after(last.id.clone());
            for row in &rows {
                // A row this version cannot read is reported by `get`, not hidden by `list`.
                if let Ok(info) = BackupInfo::from_row(row) {
                    infos.push(info);
                }
            }
        }
        Ok(infos)
    }

    /// Counts and sizes of the stored backups.
    pub async fn stats(&self) -> Result<BackupStats> {
        let all = self.list().await?;
        let auto = all
            .iter()
            .filter(|info| info.kind == BackupKind::Auto)
            .count();
        Ok(BackupStats {
            count: all.len(),
            auto,
            manual: all.len() - auto,
            bytes: all.iter().map(|info| info.bytes).sum(),
            newest_at: all.iter().map(|info| info.created_at).max(),
            oldest_at: all.iter().map(|info| info.created_at).min(),
            keep_auto: self.config.keep_auto,
        })
    }

    /// The backup with this id, if there is one.
    pub async fn get(&self, id: &str) -> Result<Option<BackupInfo>> {
        check_id("id", id)?;
        let row = self
            .store
            .get(Table::Backups, vec![id.to_owned()])
            .await?
            .pop()
            .flatten();
        match row {
            Some(row) if row.fields.get("kind").and_then(Value::as_str) != Some(PART_KIND) => {
                BackupInfo::from_row(&row).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// The backup's document (the file users download) in its stored parts, read a few parts per
    /// transaction and handed to `sink` in order, calling `progress(memories, total)` after each
    /// read: the caller joins them where it needs the text (the page, or a `Blob`), so the worker
    /// never holds more than a few parts of a large backup.
    pub async fn export(
        &self,
        id: &str,
        sink: &mut dyn FnMut(String) -> Result<()>,
        progress: &dyn Fn(u64, u64),
    ) -> Result<Exported> {
        let info = self.require(id).await?;
        let ids = info.part_ids();
        let mut n: usize = 0;
        for group in ids.chunks(PARTS_PER_READ) {
            let rows = self.store.get(Table::Backups, group.to_vec()).await?;
            for row in rows {
                let text = row
                    .and_then(|mut row| row.fields.remove("text"))
                    .and_then(|text| match text {
                        Value::String(text) => Some(text),
                        _ => None,
                    })
                    .ok_or_else(|| {
                        Error::Store(format!(
                            "backup `{id}`: its part {n} is missing or unreadable"
                        ))
                    })?;
                sink(text)?;
                n += 1;
            }
            // Part 0 opens the document; parts 1.. hold ROWS_PER_PART memories each.
            let rows = (n.saturating_sub(1) * ROWS_PER_PART) as u64;
            progress(rows.min(info.item_count), info.item_count);
        }
        Ok(Exported::of(&info))
    }

    /// The backup's whole document, for the checks that parse it.
    async fn document(&self, id: &str) -> Result<String> {
        let mut document = String::new();
        self.export(
            id,
            &mut |part| {
                document.push_str(&part);
                Ok(())
            },
            &|_, _| {},
        )
        .await?;
        Ok(document)
    }

    /// Checks a stored backup as an import would, and against what was recorded when it was
    /// taken (id, item count, checksum, size).
    pub async fn verify(&self, id: &str) -> Result<Verification> {
        let info = self.require(id).await?;
        let document = match self.document(id).await {
            Ok(document) => document,
            Err(Error::Store(reason)) => {
                return Ok(Verification {
                    valid: false,
                    issues: vec![reason],
                })
            }
            Err(other) => return Err(other),
        };
        let mut issues = Vec::new();
        if document.len() as u64 != info.bytes {
            issues.push(format!(
                "the document is {} bytes; {} were stored",
                document.len(),
                info.bytes
            ));
        }
        match decode_and_validate(&document, &self.config.limits) {
            Err(error) => issues.push(error.to_string()),
            Ok(contents) => match contents.header {
                None => issues.push("the document has no ORION header".into()),
                Some(header) => issues.extend(mismatches(&info, &header)),
            },
        }
        Ok(Verification {
            valid: issues.is_empty(),
            issues,
        })
    }

    /// Deletes a backup; answers whether there was one.
    pub async fn delete(&self, id: &str) -> Result<bool> {
        let Some(info) = self.get(id).await? else {
            return Ok(false);
        };
        self.store.write(deletion(&info)).await?;
        Ok(true)
    }

    /// Restores a stored backup into `memories` (see the module docs): `ERR_INVALID_INPUT` on
    /// `id` when there is no such backup, `ERR_BACKUP_INVALID` when its document is damaged or
    /// disagrees with what was recorded; [`Memories::restore`] for the rest. `progress` is
    /// called as the index takes in the restored memories.
    pub async fn restore(
        &self,
        id: &str,
        options: RestoreOptions,
        memories: &Memories,
        progress: &dyn Fn(usize),
    ) -> Result<RestoreReport> {
        let info = self.require(id).await?;
        let document = self.document(id).await.map_err(|error| match error {
            Error::Store(reason) => Error::backup_invalid(".", reason),
            other => other,
        })?;
        if document.len() as u64 != info.bytes {
            return Err(Error::backup_invalid(
                ".",
                format!(
                    "the document is {} bytes; {} were stored",
                    document.len(),
                    info.bytes
                ),
            ));
        }
        let contents = decode_and_validate(&document, &self.limits_for(memories))?;
        let Some(header) = &contents.header else {
            return Err(Error::backup_invalid(
                crate::backup_file::HEADER_KEY,
                "the stored backup has no ORION header",
            ));
        };
        let issues = mismatches(&info, header);
        if !issues.is_empty() {
            return Err(Error::backup_invalid(
                crate::backup_file::HEADER_KEY,
                issues.join("; "),
            ));
        }
        memories.restore(contents.memories, options, progress).await
    }

    /// Imports a backup file's text into `memories` (see the module docs): every problem in
    /// the file is `ERR_BACKUP_INVALID` with its path, found before anything is written.
    pub async fn import(
        &self,
        text: &str,
        options: RestoreOptions,
        memories: &Memories,
        progress: &dyn Fn(usize),
    ) -> Result<RestoreReport> {
        let contents = decode_and_validate(text, &self.limits_for(memories))?;
        memories.restore(contents.memories, options, progress).await
    }

    /// The configured limits, with the memory store's own text and meta limits.
    fn limits_for(&self, memories: &Memories) -> BackupLimits {
        BackupLimits {
            max_text_bytes: memories.config().max_text_bytes,
            max_meta_bytes: memories.config().max_meta_bytes,
            ..self.config.limits
        }
    }

    async fn require(&self, id: &str) -> Result<BackupInfo> {
        self.get(id)
            .await?
            .ok_or_else(|| Error::invalid_input("id", format!("there is no backup `{id}`")))
    }
}

/// What an export sent, for the caller to check that every part arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Exported {
    /// Parts sent, in order.
    pub parts: u32,
    /// Their length in all, in UTF-8 bytes.
    pub bytes: u64,
    /// Memories in the document.
    pub item_count: u64,
}

impl Exported {
    fn of(info: &BackupInfo) -> Self {
        Self {
            parts: info.parts,
            bytes: info.bytes,
            item_count: info.item_count,
        }
    }
}

/// One backup being taken, counted while it lives.
struct Counted<'a>(&'a Cell<u32>);

impl<'a> Counted<'a> {
    fn new(counter: &'a Cell<u32>) -> Self {
        counter.set(counter.get() + 1);
        Self(counter)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// [`BackupManager::take`]'s side of [`Store::visit_snapshot`]: writes the rows of each read into
/// the current part, and hands each part on once it holds [`ROWS_PER_PART`] memories.
struct Taking<'a> {
    /// The header's fields, until the count is known.
    meta: Option<BackupMeta>,
    limits: &'a BackupLimits,
    writer: Option<BackupWriter>,
    sink: &'a mut dyn FnMut(String) -> Result<()>,
    progress: &'a dyn Fn(u64, u64),
    total: u64,
    done: u64,
    bytes: u64,
    parts: u32,
    /// The part being written and its memories: [`ROWS_PER_PART`] make a part.
    part: String,
    part_rows: usize,
}

impl Taking<'_> {
    /// Sends the part being written, if it holds any memory.
    fn end_part(&mut self) -> Result<()> {
        if self.part_rows == 0 {
            return Ok(());
        }
        self.part_rows = 0;
        let part = std::mem::take(&mut self.part);
        self.emit(part)?;
        (self.progress)(self.done.min(self.total), self.total);
        Ok(())
    }

    fn emit(&mut self, part: String) -> Result<()> {
        self.bytes += part.len() as u64;
        self.parts = self
            .parts
            .checked_add(1)
            .ok_or_else(|| Error::Internal("a backup of more than 2^32 parts".into()))?;
        (self.sink)(part)
    }
}

impl SnapshotVisitor for Taking<'_> {
    fn count(&mut self, rows: u64) -> Result<()> {
        let meta = self
            .meta
            .take()
            .ok_or_else(|| Error::Internal("the snapshot gave two counts".into()))?;
        let (writer, first) = BackupWriter::begin(meta, rows, self.limits)?;
        self.writer = Some(writer);
        self.total = rows;
        self.emit(first)
    }

    fn rows(&mut self, rows: Vec<Row>) -> Result<()> {
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| Error::Internal("the snapshot gave rows before a count".into()))?;
        self.part.push_str(&writer.rows(&rows)?);
        self.part_rows += rows.len();
        self.done += rows.len() as u64;
        if self.part_rows >= ROWS_PER_PART {
            self.end_part()?;
        }
        Ok(())
    }
}

/// Orders backups newest first (by id among those taken in the same millisecond).
fn newest_first(a: &BackupInfo, b: &BackupInfo) -> std::cmp::Ordering {
    (b.created_at, &b.id).cmp(&(a.created_at, &a.id))
}

/// The writes that delete a backup: its info row and its parts.
fn deletion(info: &BackupInfo) -> Vec<WriteOp> {
    std::iter::once(info.id.clone())
        .chain(info.part_ids())
        .map(|id| WriteOp::Delete(Table::Backups, id))
        .collect()
}

/// Where a stored backup's document disagrees with its info row.
fn mismatches(info: &BackupInfo, header: &BackupHeader) -> Vec<String> {
    let mut issues = Vec::new();
    if header.backup_id != info.id {
        issues.push(format!(
            "the document is backup `{}`, stored as `{}`",
            header.backup_id, info.id
        ));
    }
    if header.item_count != info.item_count {
        issues.push(format!(
            "the document holds {} memories; {} were recorded",
            header.item_count, info.item_count
        ));
    }
    if header.checksum != info.checksum {
        issues.push(format!(
            "the document's checksum is {}; {} was recorded",
            header.checksum, info.checksum
        ));
    }
    issues
}

#[cfg(test)]
mod tests;
