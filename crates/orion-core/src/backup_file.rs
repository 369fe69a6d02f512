//! The backup file users download and import: its format, a streaming writer and a validating
//! reader. Pure: text in, rows out (and back); the BackupManager reads the store and writes it.
//!
//! # The document
//!
//! A backup file is a JSON document that `dexie-export-import`'s `importDB` accepts (checked
//! against its source, version 4.x: `import.ts`, `json-structure.ts`, `tson*.ts`), with ORION's
//! header beside Dexie's fields:
//!
//! ```json
//! {"formatName":"dexie","formatVersion":1,"data":{"databaseName":"orion","databaseVersion":0.2,
//! "tables":[{"name":"memories","schema":"id,[kind+id]","rowCount":1}],
//! "data":[{"tableName":"memories","inbound":true,"rows":[
//! {"id":"m0196a8f0c2e10000a1b2c3d4e5f6","text":"The user's cat is called Miso","kind":"fact",
//!  "createdAt":1754000000000,"lastAccessed":1754000000000,
//!  "embeddingVersion":"all-MiniLM-L6-v2/f32/max256","meta":{"source":"chat"},
//!  "embedding":{"buffer":"AACAPwAAAIA=","byteOffset":0,"length":2},
//!  "$types":{"embedding":"float32array2","embedding.buffer":"arraybuffer"}}
//! ]}]},
//! "orion":{"format":"orion-backup","formatVersion":1,"backupId":"b0196a8f0c2e10000a1b2c3d4e5f6",
//! "createdAt":1754000000000,"kind":"manual","label":"before the upgrade","orionVersion":"0.1.0",
//! "embedding":{"model":"sentence-transformers/all-MiniLM-L6-v2",
//!  "version":"all-MiniLM-L6-v2/f32/max256","dims":2},
//! "embeddingVersions":[{"version":"all-MiniLM-L6-v2/f32/max256","dims":2,"count":1}],
//! "itemCount":1,"checksum":"sha256:…64 hex digits…"}}
//! ```
//!
//! (Line breaks added here; the writer puts each row on a line of its own and nothing else.)
//!
//! - **Dexie's part.** `importDB` reads `formatName` (must be `"dexie"`), `formatVersion` (at most
//!   1), `data.databaseName`, `data.databaseVersion`, `data.tables` (name, schema string, row
//!   count: the schema creates the database, the counts only feed its progress callback) and then
//!   streams `data.data[]`, reviving each row with typeson. It ignores every other key, which is
//!   why ORION's header can sit at the top level under [`HEADER_KEY`]. Dexie's streaming parser
//!   needs `data.tables` before `data.data`, so the writer writes them in that order.
//! - **`databaseVersion` is 0.2.** Dexie multiplies versions by ten when it opens IndexedDB, so
//!   ORION's schema version 2 (`orion_store::SCHEMA_VERSION`) is Dexie's 0.2: that is what
//!   Dexie's own `exportDB` writes for ORION's database (measured with dexie 4.4.7), and an
//!   `importDB` of this file creates an IndexedDB database of version 2. The schema string
//!   `id,[kind+id]` is what Dexie reads for ORION's `memories` store (key path `id`, index on
//!   `[kind, id]`).
//! - **Embeddings** are `Float32Array`s encoded the way dexie-export-import encodes them itself:
//!   its typeson type `float32array2` replaces the array by `{buffer, byteOffset, length}` and its
//!   type `arraybuffer` replaces the buffer by standard base64 (with padding) of its bytes, i.e.
//!   the little-endian f32 values; the row's `$types` names both, so `importDB` revives a real
//!   `Float32Array` (typeson revives the buffer first, then the typed array; `$types` is dropped).
//!   ORION writes `byteOffset` 0 and exactly `4 × length` bytes, and reads nothing else.
//! - **ORION's header** (`"orion"`, [`BackupHeader`]) comes last, after the rows, so that a
//!   single pass can write the file: the checksum, the item count and the list of embedding
//!   versions are known only once every row has been written. A reader finds it wherever it is.
//!
//! # Which tables
//!
//! Only `memories`: they are what the user cannot get back. Not exported:
//! - `backups`: a backup of backups would nest every older backup in the newest, and a restore
//!   must not bring back backups the user deleted;
//! - `jobs` and `workflows`: this worker's runtime state (leases, schedules, runs in flight);
//!   restored elsewhere they would run side effects again;
//! - `meta`: the schema version, per-device settings and breaker states, and the memory index's
//!   snapshot and journal, which are derived from the memories and rebuilt from them.
//!
//! A file made by Dexie's `exportDB` from ORION's database holds all five tables: the reader
//! accepts it, takes the `memories` rows and reports the others in
//! [`BackupContents::skipped_tables`] (their rows are checked for syntax, nesting and
//! prototype-pollution keys, then dropped). Such a file has no ORION header and so no checksum;
//! [`BackupContents::header`] is `None` and the caller decides whether to accept it.
//!
//! # Rows and their canonical form
//!
//! A memory row is `{id, text, kind, createdAt, lastAccessed, embeddingVersion, meta, embedding,
//! $types}`, every field required, nothing else allowed (see [`check_row`] for the rules).
//! `$types` is `{"embedding":"float32array2","embedding.buffer":"arraybuffer"}`; in files made by
//! Dexie it also tags every array inside `meta` as `arrayNonindexKeys` (typeson's
//! structured-cloning preset does so for any array, and reviving leaves it as it is), which the
//! reader accepts for key paths that do name an array in `meta`, and drops. Its
//! **canonical JSON** is those fields in that order, without whitespace, strings escaped as
//! serde_json escapes them (`"`, `\` and control characters only; other characters as UTF-8),
//! integers in decimal, `meta` with the keys of every object sorted by their UTF-8 bytes (numbers
//! in it as serde_json prints an `f64` or integer), and the embedding as above. The writer writes
//! rows in exactly this form.
//!
//! # Checksum
//!
//! `checksum` is `"sha256:"` followed by the lowercase hex SHA-256 of the concatenation, for every
//! memory row in the order the document lists them (the writer's order: the store's, ascending
//! id), of the row's canonical JSON bytes followed by one `\n` (0x0A). An empty backup's checksum
//! is the SHA-256 of nothing. The reader re-encodes each row it read canonically, so the checksum
//! does not depend on whitespace or key order in the file, only on the rows' content and order.
//!
//! # Reading
//!
//! [`decode_and_validate`] checks the whole document before returning anything, so that a
//! caller can write nothing unless all of it is good. Every problem is
//! [`Error::BackupInvalid`] (`ERR_BACKUP_INVALID`) with the path of the first bad field, e.g.
//! `data.data[0].rows[17].embedding` (object keys after dots, or as `["…"]` when they are not
//! identifiers; array indexes in brackets; `.` for the document itself). Problems are found in
//! document order while it is parsed (syntax and truncation, types, sizes, prototype-pollution
//! keys, duplicate keys or ids, each row on its own); checks that relate parts to each other run
//! at the end, in this order: required top-level fields, tables against their rows (names and
//! counts), header against the rows (ORION-only tables, item count, versions, dimensions,
//! checksum). Unknown keys are rejected in ORION's parts (the header, the rows) and tolerated in
//! Dexie's (the top level, `data`, table entries, row-list entries), where they are still
//! checked for prototype keys and sizes.

use std::collections::{BTreeMap, HashSet};
use std::io::Write as _;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::embedding::EmbeddingModelInfo;
use crate::error::{Error, Result};
use crate::input;
use crate::memory::MemoryKind;
use crate::store::Row;

mod decode;
#[cfg(test)]
mod tests;

/// Dexie's `formatName`.
pub const FORMAT_NAME: &str = "dexie";
/// Dexie's `formatVersion` (dexie-export-import's `VERSION`).
pub const FORMAT_VERSION: u64 = 1;
/// The `databaseName` ORION writes (the reader accepts any).
pub const DATABASE_NAME: &str = "orion";
/// The `databaseVersion` ORION writes: its IndexedDB schema version 2 as Dexie counts (÷ 10).
pub const DATABASE_VERSION: f64 = 0.2;
/// The smallest `databaseVersion` Dexie accepts.
pub const MIN_DATABASE_VERSION: f64 = 0.1;
/// The table a backup holds.
pub const MEMORIES: &str = "memories";
/// The Dexie schema string of `memories`: primary key `id` (inbound), index `[kind+id]`.
pub const MEMORIES_SCHEMA: &str = "id,[kind+id]";
/// The top-level key of ORION's header.
pub const HEADER_KEY: &str = "orion";
/// The header's `format`.
pub const HEADER_FORMAT: &str = "orion-backup";
/// The header's `formatVersion`.
pub const HEADER_VERSION: u64 = 1;
/// The row field holding the embedding.
pub const EMBEDDING_FIELD: &str = "embedding";
/// dexie-export-import's typeson type for a `Float32Array`.
pub const TYPED_ARRAY_TYPE: &str = "float32array2";
/// dexie-export-import's typeson type for an `ArrayBuffer` (standard base64).
pub const ARRAY_BUFFER_TYPE: &str = "arraybuffer";
/// The longest memory id, in bytes (what `orion.memory.get` accepts).
pub const MAX_MEMORY_ID_BYTES: usize = 64;
/// The longest label, in UTF-8 bytes.
pub const MAX_LABEL_BYTES: usize = 1024;
/// The most embedding versions one backup may hold.
pub const MAX_EMBEDDING_VERSIONS: usize = 64;
/// 2^53 - 1: integers beyond this do not survive a JS number.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;
/// Keys refused anywhere in a document: assigning them to a JS object can change its prototype.
pub const FORBIDDEN_KEYS: [&str; 3] = ["__proto__", "constructor", "prototype"];

const CHECKSUM_PREFIX: &str = "sha256:";
/// Every table of ORION's database (`crate::store::Table`), for files made by Dexie.
const ORION_TABLES: [&str; 5] = ["memories", "backups", "jobs", "workflows", "meta"];
/// A memory row's JSON fields, in canonical order (the embedding and `$types` follow).
const ROW_FIELDS: [&str; 6] = [
    "text",
    "kind",
    "createdAt",
    "lastAccessed",
    "embeddingVersion",
    "meta",
];
const TYPES_KEY: &str = "$types";
const BUFFER_PATH: &str = "embedding.buffer";

/// What the reader and the writer accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupLimits {
    /// The longest document, in bytes (default 1 GiB).
    pub max_document_bytes: usize,
    /// The most memories (default 10 000 000, the largest `maxMemories`).
    pub max_rows: usize,
    /// The longest memory text, in UTF-8 bytes (default 64 KiB, as the memory store).
    pub max_text_bytes: usize,
    /// The largest `meta`, as JSON (default 16 KiB, as the memory store).
    pub max_meta_bytes: usize,
    /// The deepest `meta` (`{}` is 1; default 32, the protocol's nesting limit).
    pub max_meta_depth: usize,
    /// The longest embedding (default 4096).
    pub max_dims: usize,
    /// The longest string or key anywhere else, in UTF-8 bytes (default 1 MiB).
    pub max_string_bytes: usize,
}

impl Default for BackupLimits {
    fn default() -> Self {
        Self {
            max_document_bytes: 1 << 30,
            max_rows: 10_000_000,
            max_text_bytes: 64 * 1024,
            max_meta_bytes: 16 * 1024,
            max_meta_depth: 32,
            max_dims: 4096,
            max_string_bytes: 1 << 20,
        }
    }
}

impl BackupLimits {
    /// The defaults with the memory store's text and meta limits.
    pub fn for_memory(config: &crate::memory::MemoryConfig) -> Self {
        Self {
            max_text_bytes: config.max_text_bytes,
            max_meta_bytes: config.max_meta_bytes,
            ..Self::default()
        }
    }
}

/// Whether a backup was taken by the scheduler or asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupKind {
    /// Taken by the scheduler; only the newest few are kept.
    Auto,
    /// Asked for by the user (`orion.backups.create`); kept until deleted.
    Manual,
}

impl BackupKind {
    /// The kind's name in the header.
    pub fn name(self) -> &'static str {
        match self {
            BackupKind::Auto => "auto",
            BackupKind::Manual => "manual",
        }
    }
}

/// An embedder as the header records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupEmbedding {
    /// The model, e.g. `sentence-transformers/all-MiniLM-L6-v2` ([`EmbeddingModelInfo::id`]).
    pub model: String,
    /// Its version string, as rows carry it in `embeddingVersion`.
    pub version: String,
    /// Vector length.
    pub dims: u64,
}

impl From<&EmbeddingModelInfo> for BackupEmbedding {
    fn from(info: &EmbeddingModelInfo) -> Self {
        Self {
            model: info.id.clone(),
            version: info.version.clone(),
            dims: info.dims as u64,
        }
    }
}

/// How many memories of one embedding version a backup holds, and their vector length.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VersionCount {
    /// The `embeddingVersion`.
    pub version: String,
    /// The length of every vector of that version.
    pub dims: u64,
    /// How many memories have it (at least 1).
    pub count: u64,
}

/// ORION's header: what a backup is, under [`HEADER_KEY`].
///
/// A database being migrated to a new embedder holds memories of two versions, and a backup
/// taken meanwhile must hold them all: so besides the embedder active when the backup was taken
/// (`embedding`), the header lists every version its rows carry (`embeddingVersions`, sorted by
/// version, with their dimensions and counts). Every row's `embeddingVersion` must be listed,
/// its vector must have the listed length, and the counts must add up to `itemCount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupHeader {
    /// [`HEADER_FORMAT`].
    pub format: String,
    /// [`HEADER_VERSION`].
    pub format_version: u64,
    /// The backup's id.
    pub backup_id: String,
    /// When it was taken (ms since the epoch).
    pub created_at: u64,
    /// Automatic or manual.
    pub kind: BackupKind,
    /// The user's label (`null` when none; the key is required).
    #[serde(deserialize_with = "present_option")]
    pub label: Option<String>,
    /// The version of orion-core that wrote it.
    pub orion_version: String,
    /// The embedder active when it was taken.
    pub embedding: BackupEmbedding,
    /// Every embedding version the rows carry, sorted by version.
    pub embedding_versions: Vec<VersionCount>,
    /// How many memories it holds.
    pub item_count: u64,
    /// `sha256:` and the hex SHA-256 of the canonical rows (see the module docs).
    pub checksum: String,
}

/// An `Option` whose key must be present (serde would default a missing one to `None`).
fn present_option<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Option::deserialize(deserializer)
}

/// What the writer is told before the rows.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupMeta {
    /// The backup's id.
    pub backup_id: String,
    /// When it was taken (ms since the epoch).
    pub created_at: u64,
    /// Automatic or manual.
    pub kind: BackupKind,
    /// The user's label.
    pub label: Option<String>,
    /// The embedder active when it was taken.
    pub embedding: EmbeddingModelInfo,
}

/// A table of a Dexie export that is not imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedTable {
    /// Its name.
    pub name: String,
    /// How many rows the file holds for it.
    pub rows: u64,
}

/// A document that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupContents {
    /// ORION's header; `None` for a file made by Dexie's `exportDB`.
    pub header: Option<BackupHeader>,
    /// `data.databaseName`.
    pub database_name: String,
    /// `data.databaseVersion`.
    pub database_version: f64,
    /// The memory rows, in document order, as the store holds them: `text`, `kind`,
    /// `createdAt`, `lastAccessed`, `embeddingVersion`, `meta` fields and the `embedding`
    /// vector.
    pub memories: Vec<Row>,
    /// The other tables of a Dexie export, in document order (none for ORION's own files).
    pub skipped_tables: Vec<SkippedTable>,
    /// The checksum of the rows read (equal to the header's when there is one).
    pub checksum: String,
    /// The embedding versions of the rows read, sorted by version.
    pub embedding_versions: Vec<VersionCount>,
}

/// Reads a backup file, checking everything (see the module docs) before returning anything.
/// Every problem is [`Error::BackupInvalid`] naming the first bad field.
pub fn decode_and_validate(text: &str, limits: &BackupLimits) -> Result<BackupContents> {
    decode::decode(text, limits)
}

/// Writes a backup file in pieces: [`BackupWriter::begin`], then [`BackupWriter::rows`] for
/// each chunk of rows (in the store's order), then [`BackupWriter::finish`]. The pieces,
/// concatenated, are the document; nothing but the ids and per-version counts is kept between
/// calls, so a worker can export a large database chunk by chunk.
#[derive(Debug)]
pub struct BackupWriter {
    meta: BackupMeta,
    limits: BackupLimits,
    declared: u64,
    written: u64,
    hasher: Sha256,
    ids: HashSet<String>,
    versions: BTreeMap<String, (u64, u64)>,
    scratch: Vec<u8>,
    failed: bool,
}

impl BackupWriter {
    /// Starts a backup of `item_count` memories: returns the writer and the document's first
    /// piece (everything up to the first row). `meta` is checked as the reader would check the
    /// header.
    pub fn begin(
        meta: BackupMeta,
        item_count: u64,
        limits: &BackupLimits,
    ) -> Result<(Self, String)> {
        if item_count > limits.max_rows as u64 || item_count > MAX_SAFE_INTEGER {
            return Err(Error::backup_invalid(
                "orion.itemCount",
                format!("is {item_count}; at most {}", limits.max_rows),
            ));
        }
        let writer = Self {
            meta,
            limits: *limits,
            declared: item_count,
            written: 0,
            hasher: Sha256::new(),
            ids: HashSet::new(),
            versions: BTreeMap::new(),
            scratch: Vec::new(),
            failed: false,
        };
        check_header(&writer.header(String::from(EMPTY_CHECKSUM)), limits)?;
        // In Dexie's own order: name, schema, rowCount.
        let tables = format!(
            r#"[{{"name":"{MEMORIES}","schema":"{MEMORIES_SCHEMA}","rowCount":{item_count}}}]"#
        );
        let first = format!(
            "{{\"formatName\":\"{FORMAT_NAME}\",\"formatVersion\":{FORMAT_VERSION},\"data\":{{\
             \"databaseName\":\"{DATABASE_NAME}\",\"databaseVersion\":{DATABASE_VERSION},\
             \"tables\":{tables},\"data\":[{{\"tableName\":\"{MEMORIES}\",\"inbound\":true,\
             \"rows\":["
        );
        Ok((writer, first))
    }

    /// The next rows, as the next piece of the document. Each row is checked ([`check_row`]),
    /// as are its id (not seen before) and its vector's length (the active embedder's for its
    /// version, and the same for every row of a version). After an error the writer refuses
    /// every further call: the document cannot be completed.
    pub fn rows(&mut self, rows: &[Row]) -> Result<String> {
        let mut out = Vec::new();
        self.rows_into(rows, &mut out)?;
        String::from_utf8(out).map_err(internal)
    }

    fn rows_into(&mut self, rows: &[Row], out: &mut Vec<u8>) -> Result<()> {
        if self.failed {
            return Err(Error::Internal(
                "this backup writer failed earlier; start again".into(),
            ));
        }
        let result = self.write_rows(rows, out);
        self.failed = result.is_err();
        result
    }

    fn write_rows(&mut self, rows: &[Row], out: &mut Vec<u8>) -> Result<()> {
        if self.written + rows.len() as u64 > self.declared {
            return Err(Error::Internal(format!(
                "the backup was begun with {} memories and {} more are written after {}",
                self.declared,
                rows.len(),
                self.written
            )));
        }
        for row in rows {
            let at = row_path(0, self.written as usize);
            check_row(row, &at, &self.limits)?;
            if !self.ids.insert(row.id.clone()) {
                return Err(Error::backup_invalid(
                    format!("{at}.id"),
                    format!("repeats the id `{}` of an earlier row", row.id),
                ));
            }
            let version = row.str_field("embeddingVersion")?;
            let dims = row.vector_field(EMBEDDING_FIELD)?.len() as u64;
            if version == self.meta.embedding.version && dims != self.meta.embedding.dims as u64 {
                return Err(Error::backup_invalid(
                    format!("{at}.{EMBEDDING_FIELD}"),
                    format!(
                        "has {dims} dimensions; the active embedder `{version}` makes {}",
                        self.meta.embedding.dims
                    ),
                ));
            }
            let known = self.versions.len();
            let entry = self.versions.entry(version.to_owned());
            if let std::collections::btree_map::Entry::Vacant(_) = entry {
                if known >= MAX_EMBEDDING_VERSIONS {
                    return Err(Error::backup_invalid(
                        format!("{at}.embeddingVersion"),
                        format!(
                            "is one embedding version too many: at most {MAX_EMBEDDING_VERSIONS}"
                        ),
                    ));
                }
            }
            let (expected, count) = entry.or_insert((dims, 0));
            if *expected != dims {
                return Err(Error::backup_invalid(
                    format!("{at}.{EMBEDDING_FIELD}"),
                    format!(
                        "has {dims} dimensions; earlier rows of version `{version}` have {expected}"
                    ),
                ));
            }
            *count += 1;
            self.scratch.clear();
            write_canonical_row(&mut self.scratch, row)?;
            self.hasher.update(&self.scratch);
            self.hasher.update(b"\n");
            out.extend_from_slice(if self.written == 0 { b"\n" } else { b",\n" });
            out.extend_from_slice(&self.scratch);
            self.written += 1;
        }
        Ok(())
    }

    /// The document's last piece (ORION's header) and the header itself. Fails if fewer rows were
    /// written than [`BackupWriter::begin`] was told.
    pub fn finish(self) -> Result<(String, BackupHeader)> {
        if self.failed {
            return Err(Error::Internal(
                "this backup writer failed earlier; start again".into(),
            ));
        }
        if self.written != self.declared {
            return Err(Error::Internal(format!(
                "the backup was begun with {} memories and {} were written",
                self.declared, self.written
            )));
        }
        let header = self.header(checksum_of(&self.hasher));
        check_header(&header, &self.limits)?;
        let json = serde_json::to_string(&header).map_err(internal)?;
        Ok((format!("\n]}}]}},\"{HEADER_KEY}\":{json}}}\n"), header))
    }

    fn header(&self, checksum: String) -> BackupHeader {
        BackupHeader {
            format: HEADER_FORMAT.to_owned(),
            format_version: HEADER_VERSION,
            backup_id: self.meta.backup_id.clone(),
            created_at: self.meta.created_at,
            kind: self.meta.kind,
            label: self.meta.label.clone(),
            orion_version: crate::CORE_VERSION.to_owned(),
            embedding: BackupEmbedding::from(&self.meta.embedding),
            embedding_versions: self
                .versions
                .iter()
                .map(|(version, (dims, count))| VersionCount {
                    version: version.clone(),
                    dims: *dims,
                    count: *count,
                })
                .collect(),
            item_count: self.written,
            checksum,
        }
    }
}

/// A placeholder checksum for checking the header before the rows are written.
const EMPTY_CHECKSUM: &str =
    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The whole document for `rows` at once, and its header. For large databases prefer
/// [`BackupWriter`], which needs no more than one chunk of rows at a time.
pub fn encode(
    meta: BackupMeta,
    rows: &[Row],
    limits: &BackupLimits,
) -> Result<(String, BackupHeader)> {
    let (mut writer, first) = BackupWriter::begin(meta, rows.len() as u64, limits)?;
    let mut out = first.into_bytes();
    writer.rows_into(rows, &mut out)?;
    let (last, header) = writer.finish()?;
    out.extend_from_slice(last.as_bytes());
    Ok((String::from_utf8(out).map_err(internal)?, header))
}

/// Checks that `row` is a memory row a backup may hold; problems are
/// [`Error::BackupInvalid`] on a field under `at` (e.g. `data.data[0].rows[3].text`):
/// - `id`: not blank, no control characters, at most [`MAX_MEMORY_ID_BYTES`];
/// - `text`: a string, not blank, at most [`BackupLimits::max_text_bytes`];
/// - `kind`: `conversation`, `tool_result`, `fact` or `feedback`;
/// - `createdAt`, `lastAccessed`: integers from 0 to 2^53 - 1;
/// - `embeddingVersion`: a string, not blank, at most 256 bytes, no control characters;
/// - `meta`: an object, at most [`BackupLimits::max_meta_bytes`] as JSON and
///   [`BackupLimits::max_meta_depth`] deep, without [`FORBIDDEN_KEYS`];
/// - the `embedding` vector: 1 to [`BackupLimits::max_dims`] finite numbers (no NaN or
///   infinity; negative zero and subnormals are kept bit for bit);
/// - no other field or vector.
pub fn check_row(row: &Row, at: &str, limits: &BackupLimits) -> Result<()> {
    check_row_fields(row, at, limits)?;
    let vector = row
        .vectors
        .get(EMBEDDING_FIELD)
        .ok_or_else(|| Error::backup_invalid(format!("{at}.{EMBEDDING_FIELD}"), "is missing"))?;
    check_vector(vector, &format!("{at}.{EMBEDDING_FIELD}"), limits)?;
    if let Some(name) = row.vectors.keys().find(|name| *name != EMBEDDING_FIELD) {
        return Err(Error::backup_invalid(
            key_path(at, name),
            "is not a field of a memory",
        ));
    }
    Ok(())
}

/// The checks of [`check_row`] on the id and the JSON fields.
fn check_row_fields(row: &Row, at: &str, limits: &BackupLimits) -> Result<()> {
    let field = |name: &str| format!("{at}.{name}");
    input::check_id(&field("id"), &row.id).map_err(reframe)?;
    if row.id.len() > MAX_MEMORY_ID_BYTES {
        return Err(Error::backup_invalid(
            field("id"),
            format!("is {} bytes; at most {MAX_MEMORY_ID_BYTES}", row.id.len()),
        ));
    }
    let get = |name: &str| {
        row.fields
            .get(name)
            .ok_or_else(|| Error::backup_invalid(field(name), "is missing"))
    };
    let string = |name: &str| {
        get(name)?
            .as_str()
            .ok_or_else(|| Error::backup_invalid(field(name), "must be a string"))
    };
    let text = string("text")?;
    if text.trim().is_empty() {
        return Err(Error::backup_invalid(field("text"), "is empty"));
    }
    if text.len() > limits.max_text_bytes {
        return Err(Error::backup_invalid(
            field("text"),
            format!("is {} bytes; at most {}", text.len(), limits.max_text_bytes),
        ));
    }
    let kind = string("kind")?;
    if kind.len() > 32 {
        return Err(Error::backup_invalid(
            field("kind"),
            "is not a memory kind (conversation, tool_result, fact, feedback)",
        ));
    }
    MemoryKind::parse(kind, &field("kind")).map_err(reframe)?;
    for name in ["createdAt", "lastAccessed"] {
        match get(name)?.as_u64() {
            Some(time) if time <= MAX_SAFE_INTEGER => {}
            _ => {
                return Err(Error::backup_invalid(
                    field(name),
                    "must be an integer from 0 to 2^53 - 1 (ms since the epoch)",
                ))
            }
        }
    }
    input::check_id(&field("embeddingVersion"), string("embeddingVersion")?).map_err(reframe)?;
    let meta = get("meta")?;
    if !meta.is_object() {
        return Err(Error::backup_invalid(field("meta"), "must be an object"));
    }
    check_json(meta, &field("meta"), 1, limits.max_meta_depth)?;
    let size = canonical_len(meta)?;
    if size > limits.max_meta_bytes {
        return Err(Error::backup_invalid(
            field("meta"),
            format!("is {size} bytes of JSON; at most {}", limits.max_meta_bytes),
        ));
    }
    if let Some(name) = row
        .fields
        .keys()
        .find(|name| !ROW_FIELDS.contains(&name.as_str()) && *name != "id")
    {
        return Err(Error::backup_invalid(
            key_path(at, name),
            "is not a field of a memory",
        ));
    }
    Ok(())
}

/// An embedding's length and values.
fn check_vector(vector: &[f32], at: &str, limits: &BackupLimits) -> Result<()> {
    if vector.is_empty() || vector.len() > limits.max_dims {
        return Err(Error::backup_invalid(
            at,
            format!(
                "has {} dimensions; from 1 to {}",
                vector.len(),
                limits.max_dims
            ),
        ));
    }
    if let Some(index) = vector.iter().position(|x| !x.is_finite()) {
        return Err(Error::backup_invalid(
            at,
            format!(
                "holds {} at index {index}; only finite numbers",
                vector[index]
            ),
        ));
    }
    Ok(())
}

/// No forbidden key and no deeper than `max_depth` (`value` is at `depth`).
fn check_json(value: &Value, at: &str, depth: usize, max_depth: usize) -> Result<()> {
    let deeper =
        |at: &str| Error::backup_invalid(at, format!("nests deeper than {max_depth} levels"));
    match value {
        Value::Object(map) => {
            if depth > max_depth {
                return Err(deeper(at));
            }
            for (key, item) in map {
                let path = key_path(at, key);
                if FORBIDDEN_KEYS.contains(&key.as_str()) {
                    return Err(forbidden_key(path));
                }
                check_json(item, &path, depth + 1, max_depth)?;
            }
        }
        Value::Array(items) => {
            if depth > max_depth {
                return Err(deeper(at));
            }
            for (index, item) in items.iter().enumerate() {
                check_json(item, &format!("{at}[{index}]"), depth + 1, max_depth)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn forbidden_key(path: String) -> Error {
    Error::backup_invalid(
        path,
        "is a key that could change a JS object's prototype (__proto__, constructor, prototype)",
    )
}

/// The header's own checks (not those against the rows).
fn check_header(header: &BackupHeader, limits: &BackupLimits) -> Result<()> {
    let at = |field: &str| format!("{HEADER_KEY}.{field}");
    if header.format != HEADER_FORMAT {
        return Err(Error::backup_invalid(
            at("format"),
            format!("must be `{HEADER_FORMAT}`"),
        ));
    }
    if header.format_version != HEADER_VERSION {
        return Err(Error::backup_invalid(
            at("formatVersion"),
            format!(
                "is {}; this ORION reads version {HEADER_VERSION}",
                header.format_version
            ),
        ));
    }
    input::check_id(&at("backupId"), &header.backup_id).map_err(reframe)?;
    if header.created_at > MAX_SAFE_INTEGER {
        return Err(Error::backup_invalid(at("createdAt"), "is beyond 2^53 - 1"));
    }
    if let Some(label) = &header.label {
        if label.len() > MAX_LABEL_BYTES {
            return Err(Error::backup_invalid(
                at("label"),
                format!("is {} bytes; at most {MAX_LABEL_BYTES}", label.len()),
            ));
        }
        if label.chars().any(char::is_control) {
            return Err(Error::backup_invalid(
                at("label"),
                "contains control characters",
            ));
        }
    }
    input::check_id(&at("orionVersion"), &header.orion_version).map_err(reframe)?;
    input::check_id(&at("embedding.model"), &header.embedding.model).map_err(reframe)?;
    input::check_id(&at("embedding.version"), &header.embedding.version).map_err(reframe)?;
    check_dims(header.embedding.dims, &at("embedding.dims"), limits)?;
    if header.embedding_versions.len() > MAX_EMBEDDING_VERSIONS {
        return Err(Error::backup_invalid(
            at("embeddingVersions"),
            format!("lists more than {MAX_EMBEDDING_VERSIONS} versions"),
        ));
    }
    let mut total: u64 = 0;
    for (index, entry) in header.embedding_versions.iter().enumerate() {
        let entry_at = |field: &str| format!("{HEADER_KEY}.embeddingVersions[{index}].{field}");
        input::check_id(&entry_at("version"), &entry.version).map_err(reframe)?;
        if index > 0 && header.embedding_versions[index - 1].version >= entry.version {
            return Err(Error::backup_invalid(
                entry_at("version"),
                "is out of order: versions are listed once each, sorted",
            ));
        }
        check_dims(entry.dims, &entry_at("dims"), limits)?;
        if entry.count == 0 {
            return Err(Error::backup_invalid(
                entry_at("count"),
                "is 0: only versions that rows carry are listed",
            ));
        }
        if entry.version == header.embedding.version && entry.dims != header.embedding.dims {
            return Err(Error::backup_invalid(
                at("embedding.dims"),
                format!(
                    "is {}, but embeddingVersions[{index}] gives that version {} dimensions",
                    header.embedding.dims, entry.dims
                ),
            ));
        }
        total = total.saturating_add(entry.count);
    }
    if header.item_count > limits.max_rows as u64 || header.item_count > MAX_SAFE_INTEGER {
        return Err(Error::backup_invalid(
            at("itemCount"),
            format!("is {}; at most {}", header.item_count, limits.max_rows),
        ));
    }
    if total != header.item_count {
        return Err(Error::backup_invalid(
            at("itemCount"),
            format!(
                "is {}, but embeddingVersions counts {total} memories",
                header.item_count
            ),
        ));
    }
    let digits = header.checksum.strip_prefix(CHECKSUM_PREFIX);
    if !digits.is_some_and(|digits| {
        digits.len() == 64
            && digits
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }) {
        return Err(Error::backup_invalid(
            at("checksum"),
            "must be `sha256:` and 64 lowercase hex digits",
        ));
    }
    Ok(())
}

fn check_dims(dims: u64, at: &str, limits: &BackupLimits) -> Result<()> {
    if dims == 0 || dims > limits.max_dims as u64 {
        return Err(Error::backup_invalid(
            at,
            format!("is {dims}; from 1 to {}", limits.max_dims),
        ));
    }
    Ok(())
}

/// An `InvalidInput` from a shared check (input.rs, memory kinds) as a backup problem.
fn reframe(error: Error) -> Error {
    match error {
        Error::InvalidInput { field, reason } => Error::BackupInvalid {
            path: field,
            reason,
        },
        other => other,
    }
}

fn internal(error: impl std::fmt::Display) -> Error {
    Error::Internal(format!("writing a backup: {error}"))
}

/// The path of row `row` of `data.data[entry]`.
fn row_path(entry: usize, row: usize) -> String {
    format!("data.data[{entry}].rows[{row}]")
}

/// `at` followed by `key`: `.key` when it is an identifier, `["key"]` otherwise.
pub(crate) fn key_path(at: &str, key: &str) -> String {
    let mut chars = key.chars();
    let identifier = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    let separator = if at.is_empty() || at == "." { "" } else { "." };
    let at = if at == "." { "" } else { at };
    if key.len() > 64 {
        // A path in a message, not a way to find the key again.
        let start: String = key.chars().take(32).collect();
        let quoted = serde_json::to_string(&start).unwrap_or_default();
        return format!("{at}[{}…]", quoted.trim_end_matches('"'));
    }
    if identifier {
        format!("{at}{separator}{key}")
    } else {
        let quoted = serde_json::to_string(key).unwrap_or_else(|_| format!("{key:?}"));
        format!("{at}[{quoted}]")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(64), |mut out, b| {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        out
    })
}

/// The `"sha256:…"` of canonical rows hashed so far.
fn checksum_of(hasher: &Sha256) -> String {
    format!("{CHECKSUM_PREFIX}{}", hex(&hasher.clone().finalize()))
}

/// Writes `row`, already checked, in canonical form (module docs).
fn write_canonical_row(out: &mut Vec<u8>, row: &Row) -> Result<()> {
    out.extend_from_slice(b"{\"id\":");
    write_json(out, &Value::String(row.id.clone()))?;
    for name in ROW_FIELDS {
        out.push(b',');
        write_json(out, &Value::String(name.to_owned()))?;
        out.push(b':');
        let value = row.fields.get(name).unwrap_or(&Value::Null);
        write_canonical(out, value)?;
    }
    let vector = row
        .vectors
        .get(EMBEDDING_FIELD)
        .map_or(&[][..], Vec::as_slice);
    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
    out.extend_from_slice(b",\"embedding\":{\"buffer\":\"");
    let start = out.len();
    let len = base64::encoded_len(bytes.len(), true)
        .ok_or_else(|| Error::Internal("an embedding too long to encode".into()))?;
    out.resize(start + len, 0);
    STANDARD
        .encode_slice(&bytes, &mut out[start..])
        .map_err(internal)?;
    write!(
        out,
        "\",\"byteOffset\":0,\"length\":{}}},\"{TYPES_KEY}\":{{\"{EMBEDDING_FIELD}\":\"{TYPED_ARRAY_TYPE}\",\"{BUFFER_PATH}\":\"{ARRAY_BUFFER_TYPE}\"}}}}",
        vector.len()
    )
    .map_err(internal)
}

/// `value` with the keys of every object sorted by their UTF-8 bytes, no whitespace.
fn write_canonical(out: &mut Vec<u8>, value: &Value) -> Result<()> {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (index, (key, item)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, key).map_err(internal)?;
                out.push(b':');
                write_canonical(out, item)?;
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_canonical(out, item)?;
            }
            out.push(b']');
        }
        scalar => write_json(out, scalar)?,
    }
    Ok(())
}

fn write_json(out: &mut Vec<u8>, value: &Value) -> Result<()> {
    serde_json::to_writer(&mut *out, value).map_err(internal)
}

/// The length of `value`'s canonical JSON.
fn canonical_len(value: &Value) -> Result<usize> {
    let mut out = Vec::new();
    write_canonical(&mut out, value)?;
    Ok(out.len())
}

/// A JSON row of a memories table (already checked for syntax, forbidden and duplicate keys and
/// string sizes) as a store row, checked ([`check_row`]).
fn row_from_json(value: Value, at: &str, limits: &BackupLimits) -> Result<Row> {
    let Value::Object(mut map) = value else {
        return Err(Error::backup_invalid(at, "must be an object (a memory)"));
    };
    let id = match map.remove("id") {
        Some(Value::String(id)) => id,
        Some(_) => {
            return Err(Error::backup_invalid(
                format!("{at}.id"),
                "must be a string",
            ))
        }
        None => return Err(Error::backup_invalid(format!("{at}.id"), "is missing")),
    };
    let embedding = map.remove(EMBEDDING_FIELD);
    let types = map.remove(TYPES_KEY);
    let mut row = Row::new(id);
    row.fields = map;
    check_row_fields(&row, at, limits)?;
    let embedding_at = format!("{at}.{EMBEDDING_FIELD}");
    let vector = match embedding {
        Some(embedding) => decode_embedding(embedding, &embedding_at, limits)?,
        None => return Err(Error::backup_invalid(embedding_at, "is missing")),
    };
    check_vector(&vector, &embedding_at, limits)?;
    check_types(types, &key_path(at, TYPES_KEY), row.fields.get("meta"))?;
    row.vectors.insert(EMBEDDING_FIELD.to_owned(), vector);
    Ok(row)
}

/// `{buffer, byteOffset: 0, length}` with `buffer` the canonical base64 of `4 × length` bytes.
fn decode_embedding(value: Value, at: &str, limits: &BackupLimits) -> Result<Vec<f32>> {
    let Value::Object(map) = value else {
        return Err(Error::backup_invalid(
            at,
            "must be {buffer, byteOffset, length}: a Float32Array as dexie-export-import writes it",
        ));
    };
    for key in map.keys() {
        if !["buffer", "byteOffset", "length"].contains(&key.as_str()) {
            return Err(Error::backup_invalid(
                key_path(at, key),
                "is not a field of an encoded Float32Array",
            ));
        }
    }
    let field = |name: &str| {
        map.get(name)
            .ok_or_else(|| Error::backup_invalid(format!("{at}.{name}"), "is missing"))
    };
    let buffer = field("buffer")?
        .as_str()
        .ok_or_else(|| Error::backup_invalid(format!("{at}.buffer"), "must be a base64 string"))?;
    if field("byteOffset")?.as_u64() != Some(0) {
        return Err(Error::backup_invalid(
            format!("{at}.byteOffset"),
            "must be 0: ORION reads whole buffers only",
        ));
    }
    let length = match field("length")?.as_u64() {
        Some(length) if length >= 1 && length <= limits.max_dims as u64 => length as usize,
        _ => {
            return Err(Error::backup_invalid(
                format!("{at}.length"),
                format!("must be an integer from 1 to {}", limits.max_dims),
            ))
        }
    };
    let expected = base64::encoded_len(length * 4, true).unwrap_or(usize::MAX);
    if buffer.len() != expected {
        return Err(Error::backup_invalid(
            format!("{at}.buffer"),
            format!(
                "is {} characters; the base64 of {length} f32 values takes {expected}",
                buffer.len()
            ),
        ));
    }
    let bytes = STANDARD.decode(buffer).map_err(|error| {
        Error::backup_invalid(
            format!("{at}.buffer"),
            format!("is not canonical standard base64: {error}"),
        )
    })?;
    if bytes.len() != length * 4 {
        return Err(Error::backup_invalid(
            format!("{at}.buffer"),
            format!(
                "holds {} bytes; {length} f32 values take {}",
                bytes.len(),
                length * 4
            ),
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// `$types` must map `embedding` to `float32array2` and `embedding.buffer` to `arraybuffer`. It
/// may also map key paths of arrays inside `meta` to `arrayNonindexKeys`: typeson's
/// structured-cloning preset, which dexie-export-import registers, tags every array so, and
/// reviving leaves a plain array as it is. Nothing else is accepted (a `Date` or `NaN` in `meta`
/// could not have come from ORION).
fn check_types(types: Option<Value>, at: &str, meta: Option<&Value>) -> Result<()> {
    let Some(types) = types else {
        return Err(Error::backup_invalid(
            at,
            "is missing: without it importDB would not revive the embedding as a Float32Array",
        ));
    };
    let Value::Object(map) = types else {
        return Err(Error::backup_invalid(at, "must be an object"));
    };
    let expected = [
        (EMBEDDING_FIELD, TYPED_ARRAY_TYPE),
        (BUFFER_PATH, ARRAY_BUFFER_TYPE),
    ];
    for (key, name) in expected {
        match map.get(key) {
            Some(Value::String(found)) if found == name => {}
            Some(_) => {
                return Err(Error::backup_invalid(
                    key_path(at, key),
                    format!("must be `{name}`"),
                ))
            }
            None => return Err(Error::backup_invalid(key_path(at, key), "is missing")),
        }
    }
    for (key, name) in &map {
        if expected.iter().any(|(k, _)| k == key) {
            continue;
        }
        let array = name.as_str() == Some(ARRAY_TYPE)
            && meta.is_some_and(|meta| is_array_in_meta(meta, key));
        if !array {
            return Err(Error::backup_invalid(
                key_path(at, key),
                format!("is not a type ORION reads (only `{ARRAY_TYPE}` for an array in meta)"),
            ));
        }
    }
    Ok(())
}

/// typeson's tag for an array (any array: it also handles non-index keys, which JSON has not).
const ARRAY_TYPE: &str = "arrayNonindexKeys";

/// Whether the typeson key path `path` (components joined by `.`, in which `~1` stands for `.`
/// and `~0` for `~`) names an array inside the row's `meta`.
fn is_array_in_meta(meta: &Value, path: &str) -> bool {
    let Some(rest) = path.strip_prefix("meta.") else {
        return false;
    };
    let mut node = meta;
    for part in rest.split('.') {
        let part = part.replace("~1", ".").replace("~0", "~");
        let next = match node {
            Value::Object(map) => map.get(&part),
            Value::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        };
        match next {
            Some(next) => node = next,
            None => return false,
        }
    }
    node.is_array()
}

/// Rows of the memories table as they are read: ids seen, versions, the running checksum.
#[derive(Debug)]
struct RowSink {
    rows: Vec<Row>,
    ids: std::collections::HashMap<String, usize>,
    /// Per version: (dims, count, index of its first row).
    versions: BTreeMap<String, (u64, u64, usize)>,
    hasher: Sha256,
    scratch: Vec<u8>,
}

impl RowSink {
    fn new() -> Self {
        Self {
            rows: Vec::new(),
            ids: std::collections::HashMap::new(),
            versions: BTreeMap::new(),
            hasher: Sha256::new(),
            scratch: Vec::new(),
        }
    }

    /// Takes row `index` of `data.data[entry]`.
    fn push(
        &mut self,
        entry: usize,
        index: usize,
        value: Value,
        limits: &BackupLimits,
    ) -> Result<()> {
        let at = row_path(entry, index);
        if self.rows.len() >= limits.max_rows {
            return Err(Error::backup_invalid(
                at,
                format!("is one memory too many: at most {}", limits.max_rows),
            ));
        }
        let row = row_from_json(value, &at, limits)?;
        if let Some(first) = self.ids.get(&row.id) {
            return Err(Error::backup_invalid(
                format!("{at}.id"),
                format!("repeats the id of {}", row_path(entry, *first)),
            ));
        }
        let version = row.str_field("embeddingVersion")?.to_owned();
        let dims = row.vector_field(EMBEDDING_FIELD)?.len() as u64;
        let known = self.versions.len();
        match self.versions.get_mut(&version) {
            Some((_, count, _)) => *count += 1,
            None if known >= MAX_EMBEDDING_VERSIONS => {
                return Err(Error::backup_invalid(
                    format!("{at}.embeddingVersion"),
                    format!("is one embedding version too many: at most {MAX_EMBEDDING_VERSIONS}"),
                ))
            }
            None => {
                self.versions.insert(version, (dims, 1, self.rows.len()));
            }
        }
        self.scratch.clear();
        write_canonical_row(&mut self.scratch, &row)?;
        self.hasher.update(&self.scratch);
        self.hasher.update(b"\n");
        self.ids.insert(row.id.clone(), index);
        self.rows.push(row);
        Ok(())
    }
}
