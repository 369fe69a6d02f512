//! The reader: one pass over the text with serde_json's streaming deserializer, keeping the path
//! of every value it is in, so that a problem anywhere (a truncation included) names its field.
//!
//! Values outside the rows (Dexie's spine and ORION's header) are built as `serde_json::Value`s
//! and checked when they are complete; each memory row is built, checked and turned into a
//! [`Row`] on its own, so that only one row's JSON is held at a time; rows of tables ORION does
//! not import are walked without being built (a row list that comes before its `tableName`, which
//! neither ORION nor Dexie writes, is built row by row under the same budgets and sorted out once
//! the name is known). Budgets bound what is built: the values and string bytes outside the rows,
//! and per row.

use std::fmt::Write as _;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::{
    check_header, checksum_of, forbidden_key, key_path, row_path, BackupContents, BackupHeader,
    BackupLimits, RowSink, SkippedTable, VersionCount, EMBEDDING_FIELD, FORBIDDEN_KEYS,
    FORMAT_NAME, FORMAT_VERSION, HEADER_KEY, MAX_SAFE_INTEGER, MEMORIES, MIN_DATABASE_VERSION,
    ORION_TABLES,
};
use crate::error::{Error, Result};
use crate::input;

/// Values outside the rows (the spine, the header, unknown keys).
const SPINE_VALUES: usize = 100_000;
/// String bytes outside the rows.
const SPINE_BYTES: usize = 4 << 20;
/// How deep the rows are: root, `data`, `data.data`, an entry, `rows`, then the row itself.
const ROW_DEPTH: usize = 6;

/// One step of a path.
#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

/// The places the reader knows, by path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spot {
    FormatName,
    FormatVersion,
    Header,
    Data,
    DatabaseName,
    DatabaseVersion,
    Tables,
    Table(usize),
    Entries,
    Entry(usize),
    EntryTableName(usize),
    EntryInbound(usize),
    EntryRows(usize),
    Other,
}

fn spot(path: &[Seg]) -> Spot {
    use Seg::{Index, Key};
    match path {
        [Key(k)] => match k.as_str() {
            "formatName" => Spot::FormatName,
            "formatVersion" => Spot::FormatVersion,
            HEADER_KEY => Spot::Header,
            "data" => Spot::Data,
            _ => Spot::Other,
        },
        [Key(d), Key(k)] if d == "data" => match k.as_str() {
            "databaseName" => Spot::DatabaseName,
            "databaseVersion" => Spot::DatabaseVersion,
            "tables" => Spot::Tables,
            "data" => Spot::Entries,
            _ => Spot::Other,
        },
        [Key(d), Key(t), Index(k)] if d == "data" && t == "tables" => Spot::Table(*k),
        [Key(d), Key(e), Index(i)] if d == "data" && e == "data" => Spot::Entry(*i),
        [Key(d), Key(e), Index(i), Key(f)] if d == "data" && e == "data" => match f.as_str() {
            "tableName" => Spot::EntryTableName(*i),
            "inbound" => Spot::EntryInbound(*i),
            "rows" => Spot::EntryRows(*i),
            _ => Spot::Other,
        },
        _ => Spot::Other,
    }
}

/// What a table entry of `data.tables` says.
#[derive(Debug)]
struct TableInfo {
    name: String,
    row_count: u64,
}

/// What is known of an entry of `data.data`.
#[derive(Debug, Default)]
struct EntryInfo {
    table: Option<String>,
    /// Rows read (once `rows` was an array).
    rows: Option<usize>,
    /// Rows read before the entry's `tableName`, kept until it is known.
    pending: Vec<Value>,
}

/// What a budget bounds: the spine, or one row.
#[derive(Debug, Clone, Copy)]
struct Budget {
    values: usize,
    bytes: usize,
    row: bool,
}

struct Walk<'l> {
    limits: &'l BackupLimits,
    path: Vec<Seg>,
    depth: usize,
    max_depth: usize,
    budget: Budget,
    failure: Option<Error>,
    header: Option<BackupHeader>,
    tables: Vec<Option<TableInfo>>,
    entries: Vec<EntryInfo>,
    memories_entry: Option<usize>,
    sink: RowSink,
}

impl<'l> Walk<'l> {
    fn new(limits: &'l BackupLimits) -> Self {
        Self {
            limits,
            path: Vec::new(),
            depth: 0,
            max_depth: ROW_DEPTH + limits.max_meta_depth,
            budget: Budget {
                values: SPINE_VALUES,
                bytes: SPINE_BYTES,
                row: false,
            },
            failure: None,
            header: None,
            tables: Vec::new(),
            entries: Vec::new(),
            memories_entry: None,
            sink: RowSink::new(),
        }
    }

    fn row_budget(&self) -> Budget {
        let limits = self.limits;
        let embedding = base64::encoded_len(limits.max_dims * 4, true).unwrap_or(usize::MAX);
        Budget {
            values: limits.max_meta_bytes.saturating_add(64),
            bytes: limits
                .max_text_bytes
                .saturating_add(limits.max_meta_bytes)
                .saturating_add(embedding)
                .saturating_add(4096)
                .saturating_mul(2),
            row: true,
        }
    }

    fn path_string(&self) -> String {
        render(&self.path)
    }

    /// Records `error` (the first one wins) and returns the error that stops serde.
    fn fail<E: de::Error>(&mut self, error: Error) -> E {
        if self.failure.is_none() {
            self.failure = Some(error);
        }
        E::custom("invalid backup")
    }

    fn here<E: de::Error>(&mut self, reason: impl Into<String>) -> E {
        let path = self.path_string();
        self.fail(Error::backup_invalid(path, reason))
    }

    fn enter<E: de::Error>(&mut self) -> Result<(), E> {
        self.depth += 1;
        if self.depth > self.max_depth {
            let reason = format!("nests deeper than {} levels", self.max_depth);
            return Err(self.here(reason));
        }
        Ok(())
    }

    fn spend<E: de::Error>(&mut self, bytes: usize) -> Result<(), E> {
        if self.budget.values == 0 {
            let reason = if self.budget.row {
                "is one value too many for a memory row".to_owned()
            } else {
                format!(
                    "is one value too many: the document may hold {SPINE_VALUES} outside its rows"
                )
            };
            return Err(self.here(reason));
        }
        self.budget.values -= 1;
        if bytes > self.limits.max_string_bytes {
            let reason = format!(
                "is {bytes} bytes; a string may have at most {}",
                self.limits.max_string_bytes
            );
            return Err(self.here(reason));
        }
        if bytes > self.budget.bytes {
            let reason = if self.budget.row {
                format!("is {bytes} bytes, more than is left for this memory row")
            } else {
                format!("is {bytes} bytes, more than is left of the {SPINE_BYTES} bytes of strings the document may hold outside its rows")
            };
            return Err(self.here(reason));
        }
        self.budget.bytes -= bytes;
        Ok(())
    }

    /// A key of an object: not forbidden, not seen before in it, not too long.
    fn key<E: de::Error>(&mut self, key: &str, seen: bool) -> Result<(), E> {
        let path = key_path(&self.path_string(), key);
        if FORBIDDEN_KEYS.contains(&key) {
            return Err(self.fail(forbidden_key(path)));
        }
        if seen {
            return Err(self.fail(Error::backup_invalid(path, "appears twice in its object")));
        }
        if key.len() > self.limits.max_string_bytes {
            let reason = format!(
                "is a key of {} bytes; at most {}",
                key.len(),
                self.limits.max_string_bytes
            );
            return Err(self.fail(Error::backup_invalid(path, reason)));
        }
        Ok(())
    }

    fn entry(&mut self, index: usize) -> &mut EntryInfo {
        if self.entries.len() <= index {
            self.entries.resize_with(index + 1, EntryInfo::default);
        }
        &mut self.entries[index]
    }

    /// Checks a complete value at a place the reader knows.
    fn complete(&mut self, value: &Value) -> Result<()> {
        let at = self.path_string();
        match spot(&self.path) {
            Spot::FormatName => {
                if value.as_str() != Some(FORMAT_NAME) {
                    return Err(Error::backup_invalid(
                        at,
                        format!("must be \"{FORMAT_NAME}\": this is not a Dexie export"),
                    ));
                }
            }
            Spot::FormatVersion => {
                if value.as_u64() != Some(FORMAT_VERSION) {
                    return Err(Error::backup_invalid(
                        at,
                        format!("must be {FORMAT_VERSION}"),
                    ));
                }
            }
            Spot::Header => {
                let header: BackupHeader =
                    input::from_json_at(HEADER_KEY, value.clone()).map_err(super::reframe)?;
                check_header(&header, self.limits)?;
                self.header = Some(header);
            }
            Spot::Data => {
                required(
                    value,
                    &at,
                    &["databaseName", "databaseVersion", "tables", "data"],
                )?;
            }
            Spot::DatabaseName => {
                let name = value
                    .as_str()
                    .ok_or_else(|| Error::backup_invalid(&at, "must be a string"))?;
                input::check_id(&at, name).map_err(super::reframe)?;
            }
            Spot::DatabaseVersion => match value.as_f64() {
                Some(version) if version.is_finite() && version >= MIN_DATABASE_VERSION => {}
                _ => {
                    return Err(Error::backup_invalid(
                        at,
                        format!("must be a number of at least {MIN_DATABASE_VERSION}"),
                    ))
                }
            },
            Spot::Tables | Spot::Entries => {
                if !value.is_array() {
                    return Err(Error::backup_invalid(at, "must be an array"));
                }
            }
            Spot::Table(index) => self.table(index, value, &at)?,
            Spot::EntryTableName(index) => {
                let name = known_table(value, &at)?;
                if let Some(other) = self
                    .entries
                    .iter()
                    .position(|entry| entry.table.as_deref() == Some(name))
                {
                    return Err(Error::backup_invalid(
                        at,
                        format!("names `{name}` again (data.data[{other}] has its rows)"),
                    ));
                }
                let name = name.to_owned();
                if name == MEMORIES {
                    self.memories_entry = Some(index);
                }
                self.entry(index).table = Some(name);
            }
            Spot::EntryInbound(_) => {
                if value != &Value::Bool(true) {
                    return Err(Error::backup_invalid(
                        at,
                        "must be true: ORION's tables key their rows by their `id` field",
                    ));
                }
            }
            Spot::EntryRows(_) => {
                if !value.is_array() {
                    return Err(Error::backup_invalid(at, "must be an array of rows"));
                }
            }
            Spot::Entry(index) => {
                required(value, &at, &["tableName", "inbound", "rows"])?;
                let entry = self.entry(index);
                let pending = std::mem::take(&mut entry.pending);
                if entry.table.as_deref() == Some(MEMORIES) {
                    for (row, value) in pending.into_iter().enumerate() {
                        self.sink.push(index, row, value, self.limits)?;
                    }
                }
            }
            Spot::Other => {}
        }
        Ok(())
    }

    fn table(&mut self, index: usize, value: &Value, at: &str) -> Result<()> {
        if !value.is_object() {
            return Err(Error::backup_invalid(at, "must be an object"));
        }
        required(value, at, &["name", "schema", "rowCount"])?;
        let name = known_table(&value["name"], &format!("{at}.name"))?;
        if let Some(other) = self
            .tables
            .iter()
            .position(|table| table.as_ref().is_some_and(|t| t.name == name))
        {
            return Err(Error::backup_invalid(
                format!("{at}.name"),
                format!("names `{name}` again (data.tables[{other}])"),
            ));
        }
        let schema = value["schema"]
            .as_str()
            .ok_or_else(|| Error::backup_invalid(format!("{at}.schema"), "must be a string"))?;
        if schema.split(',').next() != Some("id") {
            return Err(Error::backup_invalid(
                format!("{at}.schema"),
                "must start with the primary key `id` (inbound), as ORION's tables do",
            ));
        }
        let row_count = match value["rowCount"].as_u64() {
            Some(count) if count <= MAX_SAFE_INTEGER => count,
            _ => {
                return Err(Error::backup_invalid(
                    format!("{at}.rowCount"),
                    "must be a non-negative integer",
                ))
            }
        };
        if self.tables.len() <= index {
            self.tables.resize_with(index + 1, || None);
        }
        self.tables[index] = Some(TableInfo {
            name: name.to_owned(),
            row_count,
        });
        Ok(())
    }

    /// The checks that need the whole document.
    fn finish(mut self, root: Value) -> Result<BackupContents> {
        let Value::Object(root) = root else {
            return Err(Error::backup_invalid(
                ".",
                "must be a JSON object (a dexie-export-import file)",
            ));
        };
        for key in ["formatName", "formatVersion", "data"] {
            if !root.contains_key(key) {
                return Err(Error::backup_invalid(key, "is missing"));
            }
        }
        let data = root
            .get("data")
            .and_then(Value::as_object)
            .ok_or_else(|| Error::Internal("`data` was checked".into()))?;
        let database_name = data
            .get("databaseName")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let database_version = data
            .get("databaseVersion")
            .and_then(Value::as_f64)
            .unwrap_or_default();
        let tables: Vec<TableInfo> = std::mem::take(&mut self.tables)
            .into_iter()
            .flatten()
            .collect();
        // Every entry's table is listed, with as many rows as it says; every table has an entry.
        for (index, entry) in self.entries.iter().enumerate() {
            let name = entry.table.as_deref().unwrap_or_default();
            if !tables.iter().any(|table| table.name == name) {
                return Err(Error::backup_invalid(
                    format!("data.data[{index}].tableName"),
                    format!("names `{name}`, which data.tables does not list"),
                ));
            }
        }
        let mut skipped = Vec::new();
        for (index, table) in tables.iter().enumerate() {
            let Some(entry) = self
                .entries
                .iter()
                .position(|entry| entry.table.as_deref() == Some(table.name.as_str()))
            else {
                return Err(Error::backup_invalid(
                    format!("data.tables[{index}].name"),
                    format!("names `{}`, whose rows data.data lacks", table.name),
                ));
            };
            let rows = self.entries[entry].rows.unwrap_or_default() as u64;
            if rows != table.row_count {
                return Err(Error::backup_invalid(
                    format!("data.tables[{index}].rowCount"),
                    format!(
                        "is {}, but data.data[{entry}].rows holds {rows} rows",
                        table.row_count
                    ),
                ));
            }
            if table.name != MEMORIES {
                skipped.push(SkippedTable {
                    name: table.name.clone(),
                    rows,
                });
            }
        }
        if self.memories_entry.is_none() {
            return Err(Error::backup_invalid(
                "data.tables",
                "lists no `memories` table: there is nothing to import",
            ));
        }
        let memories_entry = self.memories_entry.unwrap_or_default();
        let sink = self.sink;
        if let Some(header) = &self.header {
            check_against_header(header, &tables, &sink, memories_entry)?;
        } else {
            // Without a header, every row of a version has the length of its first row.
            for (index, row) in sink.rows.iter().enumerate() {
                let version = row.str_field("embeddingVersion")?;
                let dims = row.vector_field(EMBEDDING_FIELD)?.len() as u64;
                if let Some((first_dims, _, first)) = sink.versions.get(version) {
                    if *first_dims != dims {
                        return Err(Error::backup_invalid(
                            format!("{}.{EMBEDDING_FIELD}", row_path(memories_entry, index)),
                            format!(
                                "has {dims} dimensions; {} of the same version has {first_dims}",
                                row_path(memories_entry, *first)
                            ),
                        ));
                    }
                }
            }
        }
        Ok(BackupContents {
            header: self.header,
            database_name,
            database_version,
            checksum: checksum_of(&sink.hasher),
            embedding_versions: sink
                .versions
                .iter()
                .map(|(version, (dims, count, _))| VersionCount {
                    version: version.clone(),
                    dims: *dims,
                    count: *count,
                })
                .collect(),
            memories: sink.rows,
            skipped_tables: skipped,
        })
    }
}

/// ORION's own files: only `memories`, and the rows agree with the header.
fn check_against_header(
    header: &BackupHeader,
    tables: &[TableInfo],
    sink: &RowSink,
    entry: usize,
) -> Result<()> {
    if let Some(index) = tables.iter().position(|table| table.name != MEMORIES) {
        return Err(Error::backup_invalid(
            format!("data.tables[{index}].name"),
            format!("must be `{MEMORIES}`: an ORION backup holds no other table"),
        ));
    }
    let rows = sink.rows.len() as u64;
    if header.item_count != rows {
        return Err(Error::backup_invalid(
            format!("{HEADER_KEY}.itemCount"),
            format!(
                "is {}, but the file holds {rows} memories",
                header.item_count
            ),
        ));
    }
    for (index, row) in sink.rows.iter().enumerate() {
        let at = row_path(entry, index);
        let version = row.str_field("embeddingVersion")?;
        let dims = row.vector_field(EMBEDDING_FIELD)?.len() as u64;
        let Some(listed) = header
            .embedding_versions
            .iter()
            .find(|listed| listed.version == version)
        else {
            return Err(Error::backup_invalid(
                format!("{at}.embeddingVersion"),
                format!("is `{version}`, which orion.embeddingVersions does not list"),
            ));
        };
        if listed.dims != dims {
            return Err(Error::backup_invalid(
                format!("{at}.{EMBEDDING_FIELD}"),
                format!(
                    "has {dims} dimensions; the header gives version `{version}` {}",
                    listed.dims
                ),
            ));
        }
    }
    for (index, listed) in header.embedding_versions.iter().enumerate() {
        let count = sink
            .versions
            .get(&listed.version)
            .map_or(0, |(_, count, _)| *count);
        if count != listed.count {
            return Err(Error::backup_invalid(
                format!("{HEADER_KEY}.embeddingVersions[{index}].count"),
                format!(
                    "is {}, but {count} memories have version `{}`",
                    listed.count, listed.version
                ),
            ));
        }
    }
    let checksum = checksum_of(&sink.hasher);
    if header.checksum != checksum {
        return Err(Error::backup_invalid(
            format!("{HEADER_KEY}.checksum"),
            format!("does not match the rows, whose checksum is {checksum}"),
        ));
    }
    Ok(())
}

/// `value` is an object with every key of `keys`.
fn required(value: &Value, at: &str, keys: &[&str]) -> Result<()> {
    let Value::Object(map) = value else {
        return Err(Error::backup_invalid(at, "must be an object"));
    };
    if let Some(key) = keys.iter().find(|key| !map.contains_key(**key)) {
        return Err(Error::backup_invalid(key_path(at, key), "is missing"));
    }
    Ok(())
}

/// A table name of ORION's database.
fn known_table<'v>(value: &'v Value, at: &str) -> Result<&'v str> {
    let name = value
        .as_str()
        .ok_or_else(|| Error::backup_invalid(at, "must be a string"))?;
    if !ORION_TABLES.contains(&name) {
        return Err(Error::backup_invalid(
            at,
            format!(
                "names `{}`, which is not a table of ORION's database ({})",
                name.chars().take(64).collect::<String>(),
                ORION_TABLES.join(", ")
            ),
        ));
    }
    Ok(name)
}

/// The path as the errors print it.
fn render(path: &[Seg]) -> String {
    if path.is_empty() {
        return ".".to_owned();
    }
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(key) => out = key_path(&out, key),
            Seg::Index(index) => {
                let _ = write!(out, "[{index}]");
            }
        }
    }
    out
}

/// Builds a value, checking it on the way.
struct Node<'w, 'l> {
    w: &'w mut Walk<'l>,
}

impl<'de> DeserializeSeed<'de> for Node<'_, '_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_, '_> {
    type Value = Value;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.w.spend(0)?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.w.spend(0)?;
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.w.spend(0)?;
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.w.spend(0)?;
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.w.spend(v.len())?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.w.spend(v.len())?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.w.spend(0)?;
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let w = self.w;
        w.spend(0)?;
        w.enter()?;
        let value = if let Spot::EntryRows(entry) = spot(&w.path) {
            read_rows(w, entry, &mut seq)?;
            Value::Array(Vec::new())
        } else {
            let mut items = Vec::new();
            loop {
                w.path.push(Seg::Index(items.len()));
                let Some(item) = seq.next_element_seed(Node { w: &mut *w })? else {
                    w.path.pop();
                    break;
                };
                if w.path.len() <= 4 {
                    let checked = w.complete(&item);
                    checked.map_err(|e| w.fail(e))?;
                }
                w.path.pop();
                items.push(item);
            }
            Value::Array(items)
        };
        w.depth -= 1;
        Ok(value)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let w = self.w;
        w.spend(0)?;
        w.enter()?;
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            w.key(&key, object.contains_key(&key))?;
            w.spend(key.len())?;
            w.path.push(Seg::Key(key));
            let item = map.next_value_seed(Node { w: &mut *w })?;
            if w.path.len() <= 4 {
                let checked = w.complete(&item);
                checked.map_err(|e| w.fail(e))?;
            }
            let Some(Seg::Key(key)) = w.path.pop() else {
                return Err(w.fail(Error::Internal("the reader lost its path".into())));
            };
            object.insert(key, item);
        }
        w.depth -= 1;
        Ok(Value::Object(object))
    }
}

/// The rows of `data.data[entry]`: memories built and checked one at a time, other tables'
/// walked and dropped, rows of a table not yet named kept for later.
fn read_rows<'de, A: SeqAccess<'de>>(
    w: &mut Walk<'_>,
    entry: usize,
    seq: &mut A,
) -> Result<(), A::Error> {
    let table = w.entry(entry).table.clone();
    let mut index = 0;
    loop {
        w.path.push(Seg::Index(index));
        let more = match table.as_deref() {
            Some(name) if name != MEMORIES => seq.next_element_seed(Skim { w: &mut *w })?.is_some(),
            _ => {
                let row_budget = w.row_budget();
                let spine = std::mem::replace(&mut w.budget, row_budget);
                let item = seq.next_element_seed(Node { w: &mut *w })?;
                w.budget = spine;
                match item {
                    None => false,
                    Some(value) if table.is_some() => {
                        let limits = w.limits;
                        let pushed = w.sink.push(entry, index, value, limits);
                        pushed.map_err(|e| w.fail(e))?;
                        true
                    }
                    Some(value) => {
                        w.entry(entry).pending.push(value);
                        true
                    }
                }
            }
        };
        w.path.pop();
        if !more {
            break;
        }
        index += 1;
    }
    w.entry(entry).rows = Some(index);
    Ok(())
}

/// Walks a value without building it: keys and nesting are checked, strings are not kept.
struct Skim<'w, 'l> {
    w: &'w mut Walk<'l>,
}

impl<'de> DeserializeSeed<'de> for Skim<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skim<'_, '_> {
    type Value = ();

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let w = self.w;
        w.enter()?;
        let mut index = 0;
        loop {
            w.path.push(Seg::Index(index));
            let more = seq.next_element_seed(Skim { w: &mut *w })?.is_some();
            w.path.pop();
            if !more {
                break;
            }
            index += 1;
        }
        w.depth -= 1;
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let w = self.w;
        w.enter()?;
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let repeated = seen.contains(&key);
            w.key(&key, repeated)?;
            w.path.push(Seg::Key(key));
            map.next_value_seed(Skim { w: &mut *w })?;
            if let Some(Seg::Key(key)) = w.path.pop() {
                seen.insert(key);
            }
        }
        w.depth -= 1;
        Ok(())
    }
}

pub(super) fn decode(text: &str, limits: &BackupLimits) -> Result<BackupContents> {
    decode_unclipped(text, limits).map_err(|error| match error {
        Error::BackupInvalid { path, reason } => Error::BackupInvalid {
            path,
            reason: clip(reason),
        },
        other => other,
    })
}

/// A reason may quote the file (serde's "unknown variant `…`"): at most 300 bytes of it.
fn clip(reason: String) -> String {
    const MAX: usize = 300;
    if reason.len() <= MAX {
        return reason;
    }
    let mut end = MAX;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &reason[..end])
}

fn decode_unclipped(text: &str, limits: &BackupLimits) -> Result<BackupContents> {
    if text.len() > limits.max_document_bytes {
        return Err(Error::backup_invalid(
            ".",
            format!(
                "is {} bytes; a backup may have at most {}",
                text.len(),
                limits.max_document_bytes
            ),
        ));
    }
    let mut walk = Walk::new(limits);
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let parsed = Node { w: &mut walk }
        .deserialize(&mut deserializer)
        .and_then(|root| deserializer.end().map(|()| root));
    match parsed {
        Ok(root) => walk.finish(root),
        Err(error) => Err(walk
            .failure
            .take()
            .unwrap_or_else(|| Error::backup_invalid(walk.path_string(), describe(&error)))),
    }
}

/// serde_json's message, said for a backup.
fn describe(error: &serde_json::Error) -> String {
    match error.classify() {
        serde_json::error::Category::Eof => format!("the file ends early (truncated?): {error}"),
        _ => format!("is not valid JSON: {error}"),
    }
}
