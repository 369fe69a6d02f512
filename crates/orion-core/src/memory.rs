//! What ORION remembers: memories in the `memories` table, searchable by meaning.
//!
//! A memory is `{id, text, kind, embedding, embeddingVersion, createdAt, lastAccessed, meta}`;
//! the embedding is stored as a `Float32Array` with the version of the embedder that made it. The
//! worker holds an index of every memory (kind, times) and the vectors of the active embedder's
//! version: a memory is never compared with a vector of another version (those wait for the
//! re-embedding migration and are counted in [`MemoryStats::other_versions`]).
//!
//! Retention, per profile ([`MemoryConfig::for_profile`]) and adjustable by the host
//! ([`MemorySettings`]):
//! - `tool_result` memories expire `tool_result_ttl_ms` (24 h) after they were created: from then
//!   on they are not returned by `get`, `list` or `search`, and they are deleted with the next
//!   write (or at the next start);
//! - past `max_memories` (the profile's budget) the least recently used memories (by
//!   `lastAccessed`, which `search` updates for its hits (written within a second after the search
//!   answers, see [`Memories::flush_touches`]); ties by id) are deleted in the same
//!   transaction as the write that went over.
//!
//! Restoring a backup ([`Memories::restore`], in `restore.rs`) writes its memories in one
//! transaction and brings the index in line; see that module's docs.
//!
//! Durability: `add` resolves once its transaction has committed. `addMany` writes one transaction
//! per chunk of [`MemoryConfig::write_chunk`] memories; if a chunk fails, the chunks before it
//! stay written and the error says how many.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::clock::SharedClock;
use crate::embedding::{Embedder, EmbeddingModelInfo, LocalBoxFuture};
use crate::error::{Error, Result};
use crate::ids::IdClock;
use crate::profile::Profile;
use crate::store::{Row, Scan, Store, Table, WriteOp};
use crate::vector_index::VectorIndex;

/// What a memory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryKind {
    /// An exchange with the user.
    Conversation,
    /// What a tool returned (expires).
    ToolResult,
    /// Something the user or host told ORION to remember.
    Fact,
    /// The user's feedback on an answer.
    Feedback,
}

impl MemoryKind {
    /// Every kind.
    pub const ALL: [MemoryKind; 4] = [
        MemoryKind::Conversation,
        MemoryKind::ToolResult,
        MemoryKind::Fact,
        MemoryKind::Feedback,
    ];

    /// The kind's name as stored and on the wire.
    pub fn name(self) -> &'static str {
        match self {
            MemoryKind::Conversation => "conversation",
            MemoryKind::ToolResult => "tool_result",
            MemoryKind::Fact => "fact",
            MemoryKind::Feedback => "feedback",
        }
    }

    /// Parses a kind; an unknown one is `ERR_INVALID_INPUT` on `field`.
    pub fn parse(name: &str, field: &str) -> Result<Self> {
        MemoryKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| {
                Error::invalid_input(
                    field,
                    format!(
                        "unknown kind `{name}`; expected one of conversation, tool_result, fact, feedback"
                    ),
                )
            })
    }
}

/// Limits and retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryConfig {
    /// Longest text, in UTF-8 bytes.
    pub max_text_bytes: usize,
    /// Largest `meta`, serialised as JSON.
    pub max_meta_bytes: usize,
    /// How long a `tool_result` memory lives.
    pub tool_result_ttl_ms: u64,
    /// Memories kept before the least recently used are evicted.
    pub max_memories: usize,
    /// Memories per transaction in `add_many`.
    pub write_chunk: usize,
    /// Rows read per step while loading the index.
    pub load_chunk: usize,
}

/// 24 hours.
pub const TOOL_RESULT_TTL_MS: u64 = 24 * 60 * 60 * 1000;

impl MemoryConfig {
    /// The defaults for `profile` (its budget's `max_memories`).
    pub fn for_profile(profile: Profile) -> Self {
        Self {
            max_text_bytes: 64 * 1024,
            max_meta_bytes: 16 * 1024,
            tool_result_ttl_ms: TOOL_RESULT_TTL_MS,
            max_memories: profile.budget().max_memories as usize,
            write_chunk: 500,
            load_chunk: 5000,
        }
    }
}

/// The host's retention and size settings (`Orion.create({ memory })`), over the profile's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemorySettings {
    /// Memories kept before the least recently used are evicted (1 to 10 000 000).
    #[serde(default)]
    pub max_memories: Option<u64>,
    /// How long a `tool_result` memory lives, in ms.
    #[serde(default)]
    pub tool_result_ttl_ms: Option<u64>,
    /// Longest text, in UTF-8 bytes (1 to 1 MiB).
    #[serde(default)]
    pub max_text_bytes: Option<u64>,
}

impl MemoryConfig {
    /// `self` with the host's `settings` applied; out-of-range settings are `ERR_INVALID_INPUT`.
    pub fn with(mut self, settings: MemorySettings) -> Result<Self> {
        if let Some(max) = settings.max_memories {
            if !(1..=10_000_000).contains(&max) {
                return Err(Error::invalid_input(
                    "memory.maxMemories",
                    format!("must be from 1 to 10000000, got {max}"),
                ));
            }
            self.max_memories = max as usize;
        }
        if let Some(ttl) = settings.tool_result_ttl_ms {
            self.tool_result_ttl_ms = ttl;
        }
        if let Some(bytes) = settings.max_text_bytes {
            if !(1..=1 << 20).contains(&bytes) {
                return Err(Error::invalid_input(
                    "memory.maxTextBytes",
                    format!("must be from 1 to 1048576, got {bytes}"),
                ));
            }
            self.max_text_bytes = bytes as usize;
        }
        Ok(self)
    }
}

/// A memory to add.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewMemory {
    /// The text (not empty, at most [`MemoryConfig::max_text_bytes`]).
    pub text: String,
    /// Its kind (default `fact`).
    #[serde(default)]
    pub kind: Option<String>,
    /// Any JSON object the host wants kept with it.
    #[serde(default)]
    pub meta: Option<Value>,
}

/// A stored memory, as the API returns it (without its vector).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryRecord {
    /// Its id.
    pub id: String,
    /// Its text.
    pub text: String,
    /// Its kind.
    pub kind: MemoryKind,
    /// When it was added (ms since the epoch, on the worker's clock).
    pub created_at: u64,
    /// When it was added or last returned by a search.
    pub last_accessed: u64,
    /// The version of the embedder that made its vector.
    pub embedding_version: String,
    /// The host's metadata (`{}` when none was given).
    pub meta: Value,
}

/// A search result.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchHit {
    /// The memory's id.
    pub id: String,
    /// Its text.
    pub text: String,
    /// Its kind.
    pub kind: MemoryKind,
    /// Cosine similarity to the query.
    pub similarity: f32,
    /// When it was added.
    pub created_at: u64,
}

/// A page of [`Memories::list`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryPage {
    /// The memories, in id order (which is creation order).
    pub items: Vec<MemoryRecord>,
    /// Pass as `after` for the next page; `None` on the last.
    pub next: Option<String>,
}

/// What [`Memories::stats`] reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStats {
    /// Memories stored (expired ones not yet deleted excluded).
    pub count: usize,
    /// Per kind.
    pub by_kind: BTreeMap<MemoryKind, usize>,
    /// Memories whose vectors the active embedder can search.
    pub searchable: usize,
    /// Memories embedded by another embedder version (not searchable until re-embedded).
    pub other_versions: usize,
    /// The active embedder's version.
    pub embedding_version: String,
    /// The budget: memories kept before LRU eviction.
    pub max_memories: usize,
    /// How long `tool_result` memories live.
    pub tool_result_ttl_ms: u64,
    /// Whether the index's saved snapshot, with the journal of changes since, lets the next start
    /// load fast: false while it is missing, stale or being written (in the background, after a
    /// read).
    pub index_saved: bool,
}

/// What the index knows of a memory without reading the store.
#[derive(Debug, Clone, Copy)]
struct Entry {
    kind: MemoryKind,
    created_at: u64,
    last_accessed: u64,
    searchable: bool,
}

struct State {
    entries: HashMap<String, Entry>,
    vectors: VectorIndex<String>,
    rng: fastrand::Rng,
    ids: IdClock,
}

/// The memory layer over a [`Store`], for one embedder version.
pub struct Memories {
    store: Rc<dyn Store>,
    clock: SharedClock,
    config: MemoryConfig,
    model: EmbeddingModelInfo,
    state: RefCell<State>,
    /// Ids written or deleted since the last [`Memories::take_changes`], for other workers.
    changes: RefCell<Vec<String>>,
    /// Search hits whose new `lastAccessed` is not written yet ([`Memories::flush_touches`]).
    touched: RefCell<HashMap<String, u64>>,
    /// Whether a write of `touched` is scheduled ([`Memories::schedule_flush`]).
    flush_scheduled: Cell<bool>,
    /// How many of [`Memories::journal_writes`] the saved snapshot covers ([`snapshot`]); `None`
    /// when there is none.
    saved_at: Cell<Option<usize>>,
    /// Whether a snapshot is being written (one at a time).
    saving: Cell<bool>,
    /// Journal rows this instance wrote: their changes are in the index already, so a snapshot
    /// need not re-read them (only other workers' rows).
    own_journal: RefCell<HashSet<String>>,
    /// The snapshot's exact vectors a start has not read yet ([`Memories::load_exact`]).
    pending_vectors: RefCell<snapshot::PendingVectors>,
    /// When the last request began (clock ms): a snapshot save waits for quiet.
    last_request: Cell<u64>,
    /// The vectors of memories of other embedder versions, once read
    /// ([`Memories::read_other_versions`]).
    other: RefCell<Option<other_versions::OtherVectors>>,
    /// Memory ids journaled in all: those the journal held at start, then every one this
    /// instance wrote (a save covers those counted when it began, not those made while it ran).
    journal_writes: Cell<usize>,
}

/// How long after a search the `lastAccessed` times of its hits (and of every search meanwhile)
/// are written ([`Memories::schedule_flush`]).
pub const TOUCH_FLUSH_DELAY_MS: u64 = 1_000;

/// A snapshot save writes its next block once no request has begun for this long
/// ([`Memories::save_snapshot`]).
pub const SAVE_QUIET_MS: u64 = 300;

/// ...but waits at most this long per block, so that steady traffic still lets it finish.
pub const SAVE_MAX_WAIT_MS: u64 = 2_000;

const EMBEDDING: &str = "embedding";

/// A search that needs more exact vectors than this while a start is still reading them waits for
/// them rather than read that many rows (each row read costs about as much as a thousand vectors
/// read in blocks).
const MAX_ROWS_FOR_VECTORS: usize = 256;

/// Rows re-read per transaction by [`Memories::refresh`].
const REFRESH_CHUNK: usize = 1_000;

/// What the index reads of each row at start (not the text or meta).
const INDEX_FIELDS: &[&str] = &[
    "kind",
    "createdAt",
    "lastAccessed",
    "embeddingVersion",
    EMBEDDING,
];

impl Memories {
    /// Loads the index from `store` in chunks (calling `progress(loaded)` after each), for vectors
    /// of `model`'s version, then deletes expired memories. `seed` makes ids unique across
    /// workers (the platform passes a random one).
    ///
    /// From a saved snapshot, this reads the vectors' 8-bit codes only: searches work at once,
    /// and [`Memories::load_exact`], run next in the background, reads the exact vectors.
    pub async fn load(
        store: Rc<dyn Store>,
        clock: SharedClock,
        config: MemoryConfig,
        model: EmbeddingModelInfo,
        seed: u64,
        progress: &dyn Fn(usize),
    ) -> Result<Self> {
        let memories = Self {
            state: RefCell::new(State {
                entries: HashMap::new(),
                vectors: VectorIndex::new(model.dims),
                rng: fastrand::Rng::with_seed(seed),
                ids: IdClock::default(),
            }),
            store,
            clock,
            config,
            model,
            changes: RefCell::new(Vec::new()),
            touched: RefCell::new(HashMap::new()),
            flush_scheduled: Cell::new(false),
            saved_at: Cell::new(None),
            saving: Cell::new(false),
            own_journal: RefCell::new(HashSet::new()),
            pending_vectors: RefCell::new(Vec::new()),
            last_request: Cell::new(0),
            other: RefCell::new(None),
            journal_writes: Cell::new(0),
        };
        let loaded = snapshot::load(&memories, progress).await?;
        let journal = snapshot::read_journal(&memories, &HashSet::new()).await?;
        if let (Some(pending), false) = (loaded, journal.reset) {
            memories.journal_writes.set(journal.changed.len());
            memories.saved_at.set(Some(0));
            memories.refresh(journal.changed).await?;
            *memories.pending_vectors.borrow_mut() = pending;
        } else {
            // No snapshot, or one a restore made stale: every row is read, after the journal, so
            // the index holds every change the journal rows read name (a reset included).
            memories.load_rows(progress).await?;
            memories
                .own_journal
                .borrow_mut()
                .extend(journal.rows.iter().cloned());
        }
        let expired = memories.expired_ids();
        if !expired.is_empty() {
            memories.commit(delete_ops(&expired), &expired).await?;
            memories.forget(&expired);
        }
        Ok(memories)
    }

    /// Whether the index should be saved ([`Memories::save_snapshot`]): none is saved yet, or
    /// more memories changed since than [`snapshot::JOURNAL_LIMIT`] or a quarter of the index
    /// (so that saves cost O(1) per change, amortised).
    pub fn wants_snapshot(&self) -> bool {
        // Not before the start's exact vectors are in: the save would read them row by row.
        !self.saving.get() && self.state.borrow().vectors.is_exact() && !self.snapshot_current()
    }

    /// Whether the saved snapshot plus the journal is small enough to start from.
    fn snapshot_current(&self) -> bool {
        let limit = snapshot::JOURNAL_LIMIT.max(self.state.borrow().entries.len() / 4);
        self.saved_at
            .get()
            .is_some_and(|at| self.journal_writes.get().saturating_sub(at) <= limit)
    }

    /// Waits until no request has begun for [`SAVE_QUIET_MS`], [`SAVE_MAX_WAIT_MS`] at most.
    async fn quiet(&self, sleep: &dyn Fn(u64) -> LocalBoxFuture<'static, ()>) {
        let started = self.clock.now_ms();
        loop {
            let now = self.clock.now_ms();
            let quiet_for = now.saturating_sub(self.last_request.get());
            let waited = now.saturating_sub(started);
            if quiet_for >= SAVE_QUIET_MS || waited >= SAVE_MAX_WAIT_MS {
                return;
            }
            sleep((SAVE_QUIET_MS - quiet_for).min(SAVE_MAX_WAIT_MS - waited)).await;
        }
    }

    /// Notes that a request begins (a snapshot save yields to it).
    fn begin_request(&self) {
        self.last_request.set(self.clock.now_ms());
    }

    /// Reads the exact vectors that [`Memories::load`] left for later, a few blocks per
    /// transaction (requests are answered in between). Until it is done, a search reads the
    /// vectors of the few memories it shortlisted from the table, so its results are exact
    /// either way; this only makes searches faster. Does nothing the second time.
    pub async fn load_exact(&self) -> Result<()> {
        snapshot::load_pending(self).await?;
        // Entries still without their vector (a block gone because another worker saved a newer
        // snapshot, or malformed) are read from their rows.
        let rest = self.state.borrow().vectors.inexact_keys();
        self.refresh(rest).await
    }

    /// Saves the index in packed blocks so that the next start loads fast (runs in the
    /// background; one at a time). Writing a block holds the worker and the database for a few
    /// milliseconds, so before each one the save yields to requests: it waits, with `sleep` (ms),
    /// until none has begun for [`SAVE_QUIET_MS`], or [`SAVE_MAX_WAIT_MS`] at most.
    pub async fn save_snapshot(
        &self,
        sleep: &dyn Fn(u64) -> LocalBoxFuture<'static, ()>,
    ) -> Result<()> {
        if self.saving.replace(true) {
            return Ok(());
        }
        let before = self.journal_writes.get();
        let result = snapshot::write(self, sleep).await;
        if result.is_ok() {
            // Writes made while it ran are not covered: their journal rows stay, and count.
            self.saved_at.set(Some(before));
        }
        self.saving.set(false);
        result
    }

    /// Writes `ops` with the journal row naming `changed`, in one transaction.
    async fn commit(&self, mut ops: Vec<WriteOp>, changed: &[String]) -> Result<()> {
        let journal = (!changed.is_empty()).then(|| snapshot::journal_row(self, changed));
        if let Some(row) = &journal {
            ops.push(WriteOp::Put(Table::Meta, row.clone()));
        }
        self.store.write(ops).await?;
        if let Some(row) = journal {
            self.own_journal.borrow_mut().insert(row.id);
        }
        self.journal_writes
            .set(self.journal_writes.get() + changed.len());
        Ok(())
    }

    /// Builds the index from every row of `memories` (when there is no snapshot, or the journal
    /// says the snapshot cannot be trusted): read into a new index, which then replaces the
    /// current one at once (requests answered meanwhile see the old one whole, never a half).
    async fn load_rows(&self, progress: &dyn Fn(usize)) -> Result<()> {
        let mut scan = Scan::first(self.config.load_chunk.max(1)).only(INDEX_FIELDS);
        let mut entries = HashMap::new();
        let mut vectors = VectorIndex::new(self.model.dims);
        let mut loaded = 0;
        loop {
            let rows = self.store.scan(Table::Memories, scan.clone()).await?;
            let Some(last) = rows.last() else { break };
            scan = scan.after(last.id.clone());
            for row in &rows {
                // A row another version of ORION wrote wrongly is skipped, not fatal.
                if let Ok(entry) = self.index_row(&mut vectors, row) {
                    entries.insert(row.id.clone(), entry);
                }
            }
            loaded += rows.len();
            progress(loaded);
        }
        let mut state = self.state.borrow_mut();
        state.entries = entries;
        state.vectors = vectors;
        Ok(())
    }

    /// The limits and retention in force.
    pub fn config(&self) -> &MemoryConfig {
        &self.config
    }

    /// The embedder version this layer searches.
    pub fn model(&self) -> &EmbeddingModelInfo {
        &self.model
    }

    /// Adds one memory; resolves once it is committed.
    pub async fn add(&self, embedder: &dyn Embedder, memory: NewMemory) -> Result<MemoryRecord> {
        let validated = self.validate(memory, "")?;
        let mut records = self.write_chunk(embedder, vec![validated]).await?;
        records
            .pop()
            .ok_or_else(|| Error::Internal("an add stored nothing".into()))
    }

    /// Adds many memories, [`MemoryConfig::write_chunk`] per transaction, calling
    /// `progress(done, total)` after each chunk. Every item is validated before anything is
    /// written.
    pub async fn add_many(
        &self,
        embedder: &dyn Embedder,
        items: Vec<NewMemory>,
        progress: &dyn Fn(usize, usize),
    ) -> Result<Vec<MemoryRecord>> {
        let total = items.len();
        let validated = items
            .into_iter()
            .enumerate()
            .map(|(i, item)| self.validate(item, &format!("items[{i}].")))
            .collect::<Result<Vec<_>>>()?;
        let mut records = Vec::with_capacity(total);
        let mut rest = validated;
        while !rest.is_empty() {
            let tail = rest.split_off(self.config.write_chunk.max(1).min(rest.len()));
            let chunk = std::mem::replace(&mut rest, tail);
            let written = records.len();
            let stored = self.write_chunk(embedder, chunk).await.map_err(|error| {
                if written == 0 {
                    error
                } else {
                    annotate(error, written)
                }
            })?;
            records.extend(stored);
            progress(records.len(), total);
        }
        Ok(records)
    }

    /// The memory with this id, unless there is none or it expired.
    pub async fn get(&self, id: &str) -> Result<Option<MemoryRecord>> {
        self.begin_request();
        check_id(id)?;
        let row = self
            .store
            .get(Table::Memories, vec![id.to_owned()])
            .await?
            .pop()
            .flatten();
        let record = row.map(|row| record_of(&row)).transpose()?;
        Ok(record.filter(|record| !self.is_expired(record.kind, record.created_at)))
    }

    /// Deletes the memory with this id; returns whether there was one.
    pub async fn delete(&self, id: &str) -> Result<bool> {
        self.begin_request();
        check_id(id)?;
        let existed = self
            .store
            .get(Table::Memories, vec![id.to_owned()])
            .await?
            .pop()
            .flatten()
            .is_some();
        let mut ids = self.expired_ids();
        ids.push(id.to_owned());
        self.commit(delete_ops(&ids), &ids).await?;
        self.forget(&ids);
        Ok(existed)
    }

    /// Memories in id (creation) order, `limit` (1 to 1000) after `after`, of one kind or all.
    pub async fn list(
        &self,
        kind: Option<&str>,
        limit: usize,
        after: Option<String>,
    ) -> Result<MemoryPage> {
        self.begin_request();
        let kind = kind.map(|k| MemoryKind::parse(k, "kind")).transpose()?;
        if !(1..=1000).contains(&limit) {
            return Err(Error::invalid_input(
                "limit",
                format!("must be from 1 to 1000, got {limit}"),
            ));
        }
        if let Some(after) = &after {
            check_id(after).map_err(|_| Error::invalid_input("after", "not a memory id"))?;
        }
        let mut items = Vec::new();
        let mut cursor = after;
        // Expired rows are skipped, so a page may take more than one read.
        loop {
            let mut scan = Scan::first(limit - items.len());
            scan.after = cursor.clone();
            if let Some(kind) = kind {
                scan = scan.where_eq("kind", kind.name());
            }
            let rows = self.store.scan(Table::Memories, scan).await?;
            let exhausted = rows.len() < limit - items.len();
            cursor = rows.last().map(|row| row.id.clone()).or(cursor);
            for row in &rows {
                let record = record_of(row)?;
                if !self.is_expired(record.kind, record.created_at) {
                    items.push(record);
                }
            }
            if exhausted {
                return Ok(MemoryPage { items, next: None });
            }
            if items.len() == limit {
                let next = match items.last() {
                    Some(last) => self
                        .has_after(kind, &last.id)
                        .await?
                        .then(|| last.id.clone()),
                    None => None,
                };
                return Ok(MemoryPage { items, next });
            }
        }
    }

    /// Whether a row (of `kind`) follows `id`, so that a full page knows whether it is the last.
    async fn has_after(&self, kind: Option<MemoryKind>, id: &str) -> Result<bool> {
        let mut scan = Scan::first(1).after(id);
        if let Some(kind) = kind {
            scan = scan.where_eq("kind", kind.name());
        }
        Ok(!self.store.scan(Table::Memories, scan).await?.is_empty())
    }

    /// The `k` (1 to 100) memories most similar to `query`, at least `min_similarity`, of one
    /// kind or all, best first. Their `lastAccessed` becomes now.
    pub async fn search(
        &self,
        embedder: &dyn Embedder,
        query: &str,
        k: u64,
        min_similarity: f64,
        kind: Option<&str>,
    ) -> Result<Vec<SearchHit>> {
        let kind = self.check_search(query, k, min_similarity, kind)?;
        let vector = self.embed_one(embedder, query).await?;
        self.search_vector(&vector, k, min_similarity, kind).await
    }

    /// [`Memories::search`] with `query` already embedded by `embedder` as `vector`, for callers
    /// that embedded it for something else first (the `ask` pipeline).
    pub async fn search_embedded(
        &self,
        embedder: &dyn Embedder,
        query: &str,
        vector: &[f32],
        k: u64,
        min_similarity: f64,
        kind: Option<&str>,
    ) -> Result<Vec<SearchHit>> {
        let kind = self.check_search(query, k, min_similarity, kind)?;
        self.check_embedder(embedder)?;
        if vector.len() != self.model.dims {
            return Err(Error::Internal(format!(
                "a query vector of {} dimensions for an index of {}",
                vector.len(),
                self.model.dims
            )));
        }
        self.search_vector(vector, k, min_similarity, kind).await
    }

    /// Checks a search's arguments; the kind, parsed.
    fn check_search(
        &self,
        query: &str,
        k: u64,
        min_similarity: f64,
        kind: Option<&str>,
    ) -> Result<Option<MemoryKind>> {
        if query.trim().is_empty() {
            return Err(Error::invalid_input("query", "is empty"));
        }
        self.check_text_size(query, "query")?;
        if !(1..=100).contains(&k) {
            return Err(Error::invalid_input(
                "k",
                format!("must be from 1 to 100, got {k}"),
            ));
        }
        if !(-1.0..=1.0).contains(&min_similarity) {
            return Err(Error::invalid_input(
                "minSimilarity",
                format!("must be from -1 to 1, got {min_similarity}"),
            ));
        }
        kind.map(|k| MemoryKind::parse(k, "kind")).transpose()
    }

    /// The search itself, over a checked query vector.
    async fn search_vector(
        &self,
        vector: &[f32],
        k: u64,
        min_similarity: f64,
        kind: Option<MemoryKind>,
    ) -> Result<Vec<SearchHit>> {
        self.begin_request();
        let (shortlist, missing) = {
            let state = self.state.borrow();
            let now = self.clock.now_ms();
            let shortlist =
                state
                    .vectors
                    .shortlist(vector, k as usize, min_similarity as f32, |id| {
                        state.entries.get(id).is_some_and(|entry| {
                            kind.is_none_or(|kind| entry.kind == kind)
                                && !self.expired_at(entry.kind, entry.created_at, now)
                        })
                    });
            let missing = state.vectors.missing(&shortlist);
            (shortlist, missing)
        };
        let missing = if missing.len() > MAX_ROWS_FOR_VECTORS {
            // Too many to read row by row (a query close to nothing shortlists widely): read the
            // rest of the start's vectors first, at most a second or so at 100 000 memories.
            snapshot::load_pending(self).await?;
            self.state.borrow().vectors.missing(&shortlist)
        } else {
            missing
        };
        if !missing.is_empty() {
            // Shortlisted memories held by their codes alone (a start is still reading the exact
            // vectors): their vectors come from their rows.
            let rows = self.store.get(Table::Memories, missing).await?;
            let mut state = self.state.borrow_mut();
            for row in rows.iter().flatten() {
                if row.str_field("embeddingVersion").ok() == Some(self.model.version.as_str()) {
                    if let Ok(embedding) = row.vector_field(EMBEDDING) {
                        state.vectors.fill(&row.id, embedding);
                    }
                }
            }
        }
        let hits = self
            .state
            .borrow()
            .vectors
            .rank(vector, &shortlist)
            .into_iter()
            .map(|hit| (hit.key, hit.similarity))
            .collect();
        self.hits_of(hits).await
    }

    /// The search hits of `(id, similarity)` pairs, best first, read from their rows; each hit's
    /// `lastAccessed` becomes now ([`Memories::flush_touches`] writes it).
    async fn hits_of(&self, hits: Vec<(String, f32)>) -> Result<Vec<SearchHit>> {
        if hits.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = hits.iter().map(|(id, _)| id.clone()).collect();
        let rows = self.store.get(Table::Memories, ids).await?;
        let now = self.clock.now_ms();
        let mut results = Vec::with_capacity(hits.len());
        let mut touched = Vec::with_capacity(hits.len());
        let mut gone = Vec::new();
        for ((id, similarity), row) in hits.into_iter().zip(rows) {
            // Deleted by another tab since the index saw it.
            let Some(row) = row else {
                gone.push(id);
                continue;
            };
            let record = record_of(&row)?;
            results.push(SearchHit {
                id: record.id,
                text: record.text,
                kind: record.kind,
                similarity,
                created_at: record.created_at,
            });
            touched.push(row.id);
        }
        let mut state = self.state.borrow_mut();
        for id in &touched {
            if let Some(entry) = state.entries.get_mut(id) {
                entry.last_accessed = now;
            }
        }
        drop(state);
        self.touched
            .borrow_mut()
            .extend(touched.into_iter().map(|id| (id, now)));
        self.forget(&gone);
        Ok(results)
    }

    /// Whether the caller should write the recent search hits' `lastAccessed` times
    /// ([`Memories::flush_touches`]) after [`TOUCH_FLUSH_DELAY_MS`]: true once per batch of
    /// touches, false while a write is already scheduled or there is nothing to write.
    pub fn schedule_flush(&self) -> bool {
        !self.touched.borrow().is_empty() && !self.flush_scheduled.replace(true)
    }

    /// Writes the `lastAccessed` times of recent search hits. Searches answer without waiting
    /// for this write (the platform runs it [`TOUCH_FLUSH_DELAY_MS`] after the first unwritten
    /// one, for every search meanwhile: a write on `memories` makes the next search's read wait
    /// for its commit); until it lands, the index already orders evictions by the new times, and
    /// a crash in between loses only those times.
    pub async fn flush_touches(&self) -> Result<()> {
        // Touches from now on need a write of their own.
        self.flush_scheduled.set(false);
        let touched = std::mem::take(&mut *self.touched.borrow_mut());
        if touched.is_empty() {
            return Ok(());
        }
        let patches = touched
            .into_iter()
            .map(|(id, at)| {
                let mut fields = Map::new();
                fields.insert("lastAccessed".to_owned(), Value::from(at));
                (id, fields)
            })
            .collect();
        self.store.patch(Table::Memories, patches).await
    }

    /// Deletes every memory, or those of one kind; returns how many.
    pub async fn purge(&self, kind: Option<&str>) -> Result<usize> {
        self.begin_request();
        let kind = kind.map(|k| MemoryKind::parse(k, "kind")).transpose()?;
        let Some(kind) = kind else {
            let count = self.store.count(Table::Memories).await? as usize;
            let ids: Vec<String> = self.state.borrow().entries.keys().cloned().collect();
            self.commit(
                vec![
                    WriteOp::Clear(Table::Memories),
                    snapshot::forget(&self.model.version),
                ],
                &ids,
            )
            .await?;
            self.saved_at.set(None);
            self.forget(&ids);
            return Ok(count);
        };
        let mut ids = Vec::new();
        let mut scan = Scan::first(self.config.load_chunk.max(1))
            .where_eq("kind", kind.name())
            .only(&[]);
        loop {
            let rows = self.store.scan(Table::Memories, scan.clone()).await?;
            let Some(last) = rows.last() else { break };
            scan = scan.after(last.id.clone());
            ids.extend(rows.into_iter().map(|row| row.id));
        }
        // One transaction: a purge is all or nothing.
        self.commit(delete_ops(&ids), &ids).await?;
        self.forget(&ids);
        Ok(ids.len())
    }

    /// Counts and settings.
    pub fn stats(&self) -> MemoryStats {
        let state = self.state.borrow();
        let now = self.clock.now_ms();
        let mut by_kind: BTreeMap<MemoryKind, usize> =
            MemoryKind::ALL.into_iter().map(|kind| (kind, 0)).collect();
        let mut count = 0;
        let mut searchable = 0;
        for entry in state.entries.values() {
            if self.expired_at(entry.kind, entry.created_at, now) {
                continue;
            }
            count += 1;
            *by_kind.entry(entry.kind).or_default() += 1;
            searchable += usize::from(entry.searchable);
        }
        MemoryStats {
            count,
            by_kind,
            searchable,
            other_versions: count - searchable,
            embedding_version: self.model.version.clone(),
            max_memories: self.config.max_memories,
            tool_result_ttl_ms: self.config.tool_result_ttl_ms,
            index_saved: !self.saving.get() && self.snapshot_current(),
        }
    }

    /// Brings the index up to date with rows another worker changed: `ids` are re-read from the
    /// store (present rows are indexed, missing ones forgotten).
    pub async fn refresh(&self, ids: Vec<String>) -> Result<()> {
        // In chunks, each its own read: requests are answered between them rather than after the
        // whole list (a snapshot may refresh tens of thousands of ids).
        for chunk in ids.chunks(REFRESH_CHUNK) {
            let rows = self.store.get(Table::Memories, chunk.to_vec()).await?;
            self.drop_other_vectors(chunk);
            self.note_other_rows(rows.iter().flatten());
            let mut state = self.state.borrow_mut();
            for (id, row) in chunk.iter().zip(rows) {
                match row.map(|row| {
                    self.index_row(&mut state.vectors, &row)
                        .map(|e| (row.id, e))
                }) {
                    Some(Ok((id, entry))) => {
                        state.entries.insert(id, entry);
                    }
                    _ => {
                        state.entries.remove(id);
                        state.vectors.remove(id);
                    }
                }
            }
        }
        Ok(())
    }

    fn validate(&self, memory: NewMemory, prefix: &str) -> Result<Validated> {
        let field = |name: &str| format!("{prefix}{name}");
        if memory.text.trim().is_empty() {
            return Err(Error::invalid_input(field("text"), "is empty"));
        }
        self.check_text_size(&memory.text, &field("text"))?;
        let kind = match &memory.kind {
            Some(kind) => MemoryKind::parse(kind, &field("kind"))?,
            None => MemoryKind::Fact,
        };
        let meta = match memory.meta {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(meta)) => meta,
            Some(_) => {
                return Err(Error::invalid_input(
                    field("meta"),
                    "must be a plain object",
                ))
            }
        };
        let meta_bytes = serde_json::to_vec(&meta).map_or(usize::MAX, |json| json.len());
        if meta_bytes > self.config.max_meta_bytes {
            return Err(Error::invalid_input(
                field("meta"),
                format!(
                    "is {meta_bytes} bytes as JSON; the limit is {}",
                    self.config.max_meta_bytes
                ),
            ));
        }
        Ok(Validated {
            text: memory.text,
            kind,
            meta,
        })
    }

    fn check_text_size(&self, text: &str, field: &str) -> Result<()> {
        if text.len() > self.config.max_text_bytes {
            return Err(Error::invalid_input(
                field,
                format!(
                    "is {} bytes; the limit is {}",
                    text.len(),
                    self.config.max_text_bytes
                ),
            ));
        }
        Ok(())
    }

    async fn embed_one(&self, embedder: &dyn Embedder, text: &str) -> Result<Vec<f32>> {
        self.check_embedder(embedder)?;
        embedder
            .embed(&[text])
            .await?
            .pop()
            .ok_or_else(|| Error::Embedding("the embedder returned no vector".into()))
    }

    /// The vectors of `texts` by `embedder`, which must be this layer's, one of the right size
    /// per text.
    async fn embed_checked(
        &self,
        embedder: &dyn Embedder,
        texts: &[&str],
    ) -> Result<Vec<Vec<f32>>> {
        self.check_embedder(embedder)?;
        let vectors = embedder.embed(texts).await?;
        if vectors.len() != texts.len() || vectors.iter().any(|v| v.len() != self.model.dims) {
            return Err(Error::Embedding(
                "the embedder returned vectors of the wrong number or size".into(),
            ));
        }
        Ok(vectors)
    }

    fn check_embedder(&self, embedder: &dyn Embedder) -> Result<()> {
        if embedder.info() == &self.model {
            Ok(())
        } else {
            Err(Error::Internal(format!(
                "the memory index is for `{}`, not `{}`",
                self.model.version,
                embedder.info().version
            )))
        }
    }

    async fn write_chunk(
        &self,
        embedder: &dyn Embedder,
        chunk: Vec<Validated>,
    ) -> Result<Vec<MemoryRecord>> {
        self.begin_request();
        let texts: Vec<&str> = chunk.iter().map(|m| m.text.as_str()).collect();
        let vectors = self.embed_checked(embedder, &texts).await?;
        let now = self.clock.now_ms();
        let mut records = Vec::with_capacity(chunk.len());
        let mut rows = Vec::with_capacity(chunk.len());
        for (memory, vector) in chunk.into_iter().zip(vectors) {
            let record = MemoryRecord {
                id: self.next_id(now),
                text: memory.text,
                kind: memory.kind,
                created_at: now,
                last_accessed: now,
                embedding_version: self.model.version.clone(),
                meta: Value::Object(memory.meta),
            };
            rows.push(row_of(&record, vector));
            records.push(record);
        }
        let mut removed = self.expired_ids();
        removed.extend(self.evictions(&removed, rows.len()));
        let mut ops = delete_ops(&removed);
        ops.extend(
            rows.iter()
                .map(|row| WriteOp::Put(Table::Memories, row.clone())),
        );
        let mut changed = removed.clone();
        changed.extend(rows.iter().map(|row| row.id.clone()));
        self.commit(ops, &changed).await?;
        self.forget(&removed);
        self.index_written(&rows);
        Ok(records)
    }

    /// Brings the index (and the other versions' vectors) in line with `rows`, just committed,
    /// and records them as changed for other workers.
    fn index_written(&self, rows: &[Row]) {
        let mut state = self.state.borrow_mut();
        for row in rows {
            if let Ok(entry) = self.index_row(&mut state.vectors, row) {
                state.entries.insert(row.id.clone(), entry);
            }
        }
        drop(state);
        self.note_other_rows(rows);
        self.changes
            .borrow_mut()
            .extend(rows.iter().map(|row| row.id.clone()));
    }

    /// The least recently used memories to delete so that `adding` more fit the budget, after
    /// `removed` are gone.
    fn evictions(&self, removed: &[String], adding: usize) -> Vec<String> {
        let state = self.state.borrow();
        let remaining = state.entries.len().saturating_sub(removed.len());
        let excess = (remaining + adding).saturating_sub(self.config.max_memories);
        if excess == 0 {
            return Vec::new();
        }
        let mut candidates: Vec<(u64, &String)> = state
            .entries
            .iter()
            .filter(|(id, _)| !removed.contains(id))
            .map(|(id, entry)| (entry.last_accessed, id))
            .collect();
        let excess = excess.min(candidates.len());
        if excess < candidates.len() {
            candidates.select_nth_unstable(excess);
        }
        candidates.truncate(excess);
        candidates.into_iter().map(|(_, id)| id.clone()).collect()
    }

    fn expired_ids(&self) -> Vec<String> {
        let now = self.clock.now_ms();
        self.state
            .borrow()
            .entries
            .iter()
            .filter(|(_, entry)| self.expired_at(entry.kind, entry.created_at, now))
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn is_expired(&self, kind: MemoryKind, created_at: u64) -> bool {
        self.expired_at(kind, created_at, self.clock.now_ms())
    }

    fn expired_at(&self, kind: MemoryKind, created_at: u64, now: u64) -> bool {
        kind == MemoryKind::ToolResult
            && now >= created_at.saturating_add(self.config.tool_result_ttl_ms)
    }

    fn forget(&self, ids: &[String]) {
        let mut state = self.state.borrow_mut();
        for id in ids {
            state.entries.remove(id);
            state.vectors.remove(id);
        }
        drop(state);
        self.drop_other_vectors(ids);
        self.changes.borrow_mut().extend(ids.iter().cloned());
    }

    /// The ids of memories this layer wrote or deleted since the last call: other workers on the
    /// same database pass them to [`Memories::refresh`].
    pub fn take_changes(&self) -> Vec<String> {
        std::mem::take(&mut self.changes.borrow_mut())
    }

    /// Indexes `row`'s vector if it has the active version; returns what the index keeps of it.
    /// Reads only [`INDEX_FIELDS`].
    fn index_row(&self, vectors: &mut VectorIndex<String>, row: &Row) -> Result<Entry> {
        let kind = stored_kind(row)?;
        let created_at = row.u64_field("createdAt")?;
        let last_accessed = row.u64_field("lastAccessed")?;
        let searchable = row.str_field("embeddingVersion")? == self.model.version
            && vectors.upsert(row.id.clone(), row.vector_field(EMBEDDING)?);
        if !searchable {
            vectors.remove(&row.id);
        }
        Ok(Entry {
            kind,
            created_at,
            last_accessed,
            searchable,
        })
    }

    /// Ids sort by creation time: 13 hex digits of milliseconds, 4 of a sequence number within
    /// the millisecond, then 12 random ones so that workers in several tabs never collide.
    fn next_id(&self, now: u64) -> String {
        let state = &mut *self.state.borrow_mut();
        state.ids.next("m", now, &mut state.rng)
    }
}

struct Validated {
    text: String,
    kind: MemoryKind,
    meta: Map<String, Value>,
}

fn annotate(error: Error, written: usize) -> Error {
    let note = format!(" ({written} memories before this chunk were stored)");
    match error {
        Error::Quota(reason) => Error::Quota(reason + &note),
        Error::Store(reason) => Error::Store(reason + &note),
        Error::Embedding(reason) => Error::Embedding(reason + &note),
        other => other,
    }
}

fn check_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > 64 {
        return Err(Error::invalid_input("id", "not a memory id"));
    }
    Ok(())
}

fn delete_ops(ids: &[String]) -> Vec<WriteOp> {
    ids.iter()
        .map(|id| WriteOp::Delete(Table::Memories, id.clone()))
        .collect()
}

fn row_of(record: &MemoryRecord, vector: Vec<f32>) -> Row {
    Row::new(record.id.clone())
        .with("text", record.text.clone())
        .with("kind", record.kind.name())
        .with("createdAt", record.created_at)
        .with("lastAccessed", record.last_accessed)
        .with("embeddingVersion", record.embedding_version.clone())
        .with("meta", record.meta.clone())
        .with_vector(EMBEDDING, vector)
}

/// A stored row's kind; an unknown one is a `Store` error (the row is broken, not the caller).
fn stored_kind(row: &Row) -> Result<MemoryKind> {
    MemoryKind::parse(row.str_field("kind")?, "kind")
        .map_err(|_| Error::Store(format!("row `{}`: unknown kind", row.id)))
}

fn record_of(row: &Row) -> Result<MemoryRecord> {
    let kind = stored_kind(row)?;
    Ok(MemoryRecord {
        id: row.id.clone(),
        text: row.str_field("text")?.to_owned(),
        kind,
        created_at: row.u64_field("createdAt")?,
        last_accessed: row.u64_field("lastAccessed")?,
        embedding_version: row.str_field("embeddingVersion")?.to_owned(),
        meta: row
            .fields
            .get("meta")
            .cloned()
            .unwrap_or_else(|| Value::Object(Map::new())),
    })
}

mod other_versions;
mod reembed;
mod restore;
mod snapshot;
#[cfg(test)]
mod tests;

pub use reembed::Reembedded;
pub use restore::{OnConflict, RestoreOptions, RestoreReport};
