use serde_json::{json, Value};

use super::*;
use crate::error::ErrorCode;

const VERSION: &str = "all-MiniLM-L6-v2/f32/max256";
const MICRO: &str = "orion-hashing-v1/384";

fn model(dims: usize) -> EmbeddingModelInfo {
    EmbeddingModelInfo {
        id: "sentence-transformers/all-MiniLM-L6-v2".into(),
        version: VERSION.into(),
        dims,
    }
}

fn meta_for(dims: usize) -> BackupMeta {
    BackupMeta {
        backup_id: "b0196a8f0c2e10000a1b2c3d4e5f6".into(),
        created_at: 1_754_000_000_000,
        kind: BackupKind::Manual,
        label: Some("before the upgrade — «ünïcode»".into()),
        embedding: model(dims),
    }
}

fn limits() -> BackupLimits {
    BackupLimits::default()
}

/// A unit vector; row 0's starts with values that must survive bit for bit.
fn vector(seed: u64, dims: usize) -> Vec<f32> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut v: Vec<f32> = (0..dims).map(|_| rng.f32() * 2.0 - 1.0).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    if seed == 0 && dims >= 6 {
        v[0] = -0.0;
        v[1] = f32::from_bits(1); // the smallest subnormal
        v[2] = -f32::from_bits(0x007f_ffff); // the largest subnormal, negative
        v[3] = f32::MIN_POSITIVE;
        v[4] = f32::MAX;
        v[5] = f32::MIN;
    }
    v
}

const TEXTS: [&str; 8] = [
    "The user's cat is called Miso",
    "Remind me: \"dentist\" on Tuesday\nat 9:30",
    "Ünïcödé — 日本語のテキスト 🐈‍⬛",
    "tool: weather(Paris) → 18 °C, light rain",
    "User said the summary was too long",
    "C:\\Users\\me\\notes.txt has the plan",
    "tab\there, and a line of plain text",
    "42",
];

fn sample_meta(i: usize) -> Value {
    match i % 4 {
        0 => json!({"source": "chat", "turn": i, "zeta": [1, 2.5, -0.0, null, true],
                    "alpha": {"b": 1, "a": "x"}}),
        1 => json!({}),
        2 => {
            json!({"tags": ["a", "b"], "score": 0.125, "ünï": "ç", "big": 9_007_199_254_740_991u64})
        }
        _ => json!({"nested": {"deep": {"deeper": [{"k": "v"}, [1e-7, 1e21]]}}}),
    }
}

fn sample_row_with(i: usize, dims: usize, version: &str) -> Row {
    let kinds = ["fact", "conversation", "tool_result", "feedback"];
    let id = format!(
        "m{:013x}{:04x}{:012x}",
        0x196_a8f0_c2e1_u64 + i as u64,
        i,
        0xa1b2_c3d4_e5f6_u64 ^ (i as u64 * 7919)
    );
    Row::new(id)
        .with("text", TEXTS[i % TEXTS.len()])
        .with("kind", kinds[i % kinds.len()])
        .with("createdAt", 1_753_000_000_000u64 + i as u64 * 60_000)
        .with("lastAccessed", 1_753_900_000_000u64 + i as u64)
        .with("embeddingVersion", version)
        .with("meta", sample_meta(i))
        .with_vector(EMBEDDING_FIELD, vector(i as u64, dims))
}

fn sample_rows(n: usize, dims: usize) -> Vec<Row> {
    (0..n).map(|i| sample_row_with(i, dims, VERSION)).collect()
}

fn export(rows: &[Row], dims: usize) -> String {
    encode(meta_for(dims), rows, &limits()).unwrap().0
}

fn invalid(text: &str) -> (String, String) {
    invalid_with(text, &limits())
}

fn invalid_with(text: &str, limits: &BackupLimits) -> (String, String) {
    match decode_and_validate(text, limits) {
        Ok(_) => panic!("accepted"),
        Err(Error::BackupInvalid { path, reason }) => (path, reason),
        Err(other) => panic!("not ERR_BACKUP_INVALID: {other:?}"),
    }
}

fn assert_same_rows(decoded: &[Row], rows: &[Row]) {
    assert_eq!(decoded.len(), rows.len());
    for (a, b) in decoded.iter().zip(rows) {
        assert_eq!(a.id, b.id);
        assert_eq!(a.fields, b.fields, "{}", a.id);
        let bits = |row: &Row| -> Vec<u32> {
            row.vectors[EMBEDDING_FIELD]
                .iter()
                .map(|x| x.to_bits())
                .collect()
        };
        assert_eq!(bits(a), bits(b), "{}", a.id);
        assert_eq!(a.vectors.len(), 1);
    }
}

/// Whether `path` is `prefix` or inside it (`rows[1]` is not inside `rows[12]`).
fn under(path: &str, prefix: &str) -> bool {
    path == prefix
        || (prefix != "."
            && (path.starts_with(&format!("{prefix}.")) || path.starts_with(&format!("{prefix}["))))
}

// --- round trips --------------------------------------------------------------------------

#[test]
fn rows_round_trip_bit_for_bit() {
    let rows = sample_rows(12, 384);
    let (text, header) = encode(meta_for(384), &rows, &limits()).unwrap();
    let contents = decode_and_validate(&text, &limits()).unwrap();
    assert_same_rows(&contents.memories, &rows);
    assert_eq!(contents.header.as_ref(), Some(&header));
    assert_eq!(contents.checksum, header.checksum);
    assert_eq!(contents.database_name, DATABASE_NAME);
    assert_eq!(contents.database_version, DATABASE_VERSION);
    assert!(contents.skipped_tables.is_empty());
    assert_eq!(header.item_count, 12);
    assert_eq!(
        header.embedding_versions,
        vec![VersionCount {
            version: VERSION.into(),
            dims: 384,
            count: 12
        }]
    );
    assert_eq!(header.embedding, BackupEmbedding::from(&model(384)));
    assert_eq!(header.orion_version, crate::CORE_VERSION);
    // Row 0's special values came back exactly.
    let v = &contents.memories[0].vectors[EMBEDDING_FIELD];
    assert_eq!(v[0].to_bits(), 0x8000_0000);
    assert_eq!(v[1].to_bits(), 1);
    assert_eq!(v[2].to_bits(), 0x807f_ffff);
    assert_eq!(v[4], f32::MAX);
}

#[test]
fn the_document_has_dexies_shape_and_one_row_per_line() {
    let rows = sample_rows(3, 384);
    let text = export(&rows, 384);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert_eq!(
        lines[0],
        r#"{"formatName":"dexie","formatVersion":1,"data":{"databaseName":"orion","databaseVersion":0.2,"tables":[{"name":"memories","schema":"id,[kind+id]","rowCount":3}],"data":[{"tableName":"memories","inbound":true,"rows":["#
    );
    assert!(lines[1].starts_with(&format!("{{\"id\":\"{}\",\"text\":", rows[0].id)));
    assert!(lines[1]
        .ends_with(r#""$types":{"embedding":"float32array2","embedding.buffer":"arraybuffer"}},"#));
    assert!(lines[3].ends_with("}}"));
    assert!(lines[4].starts_with(r#"]}]},"orion":{"format":"orion-backup","formatVersion":1,"#));
    assert!(text.ends_with("}}\n"));
    let value: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        value["data"]["data"][0]["rows"][0]["embedding"]["length"],
        384
    );
    assert_eq!(
        value["data"]["data"][0]["rows"][0]["embedding"]["byteOffset"],
        0
    );
}

#[test]
fn the_module_docs_example_encodes_as_shown() {
    let row = Row::new("m0196a8f0c2e10000a1b2c3d4e5f6")
        .with("text", "The user's cat is called Miso")
        .with("kind", "fact")
        .with("createdAt", 1_754_000_000_000u64)
        .with("lastAccessed", 1_754_000_000_000u64)
        .with("embeddingVersion", VERSION)
        .with("meta", json!({"source": "chat"}))
        .with_vector(EMBEDDING_FIELD, vec![1.0, -0.0]);
    let mut meta = meta_for(2);
    meta.label = Some("before the upgrade".into());
    let (text, _) = encode(meta, &[row], &limits()).unwrap();
    let line = text.lines().nth(1).unwrap();
    assert_eq!(
        line,
        r#"{"id":"m0196a8f0c2e10000a1b2c3d4e5f6","text":"The user's cat is called Miso","kind":"fact","createdAt":1754000000000,"lastAccessed":1754000000000,"embeddingVersion":"all-MiniLM-L6-v2/f32/max256","meta":{"source":"chat"},"embedding":{"buffer":"AACAPwAAAIA=","byteOffset":0,"length":2},"$types":{"embedding":"float32array2","embedding.buffer":"arraybuffer"}}"#
    );
}

#[test]
fn the_writer_in_chunks_writes_the_same_bytes() {
    let rows = sample_rows(10, 64);
    let (whole, header) = encode(meta_for(64), &rows, &limits()).unwrap();
    for chunk in [1, 3, 7, 10] {
        let (mut writer, mut text) =
            BackupWriter::begin(meta_for(64), rows.len() as u64, &limits()).unwrap();
        for part in rows.chunks(chunk) {
            text.push_str(&writer.rows(part).unwrap());
        }
        let (last, chunked_header) = writer.finish().unwrap();
        text.push_str(&last);
        assert_eq!(text, whole, "chunks of {chunk}");
        assert_eq!(chunked_header, header);
    }
}

#[test]
fn an_empty_backup_is_valid_and_hashes_nothing() {
    let (text, header) = encode(meta_for(384), &[], &limits()).unwrap();
    assert_eq!(header.checksum, EMPTY_CHECKSUM);
    assert_eq!(header.item_count, 0);
    let contents = decode_and_validate(&text, &limits()).unwrap();
    assert!(contents.memories.is_empty());
    assert_eq!(contents.checksum, EMPTY_CHECKSUM);
}

// --- the checksum ---------------------------------------------------------------------------

#[test]
fn the_checksum_is_sha256_of_canonical_row_lines() {
    let rows = sample_rows(4, 16);
    let (text, header) = encode(meta_for(16), &rows, &limits()).unwrap();
    // By the definition: each row line (the writer's rows are canonical) without its comma, + \n.
    let mut hasher = Sha256::new();
    for line in text.lines().skip(1).take(4) {
        hasher.update(line.trim_end_matches(',').as_bytes());
        hasher.update(b"\n");
    }
    assert_eq!(
        header.checksum,
        format!("sha256:{}", hex(&hasher.finalize()))
    );
}

#[test]
fn the_checksum_is_stable() {
    // A change here breaks every backup users hold: the canonical form must never change.
    let rows = [
        Row::new("m0196a8f0c2e10000a1b2c3d4e5f6")
            .with("text", "Ünïcode \"quoted\"\n🐈")
            .with("kind", "fact")
            .with("createdAt", 1_754_000_000_000u64)
            .with("lastAccessed", 1_754_000_000_001u64)
            .with("embeddingVersion", VERSION)
            .with(
                "meta",
                json!({"z": [1, 2.5, -0.0, 1e21, null], "a": {"y": true, "b": "ç"}}),
            )
            .with_vector(EMBEDDING_FIELD, vec![0.5, -0.0, f32::from_bits(1), -0.25]),
        Row::new("m0196a8f0c2e20000a1b2c3d4e5f7")
            .with("text", "second")
            .with("kind", "tool_result")
            .with("createdAt", 0)
            .with("lastAccessed", 9_007_199_254_740_991u64)
            .with("embeddingVersion", VERSION)
            .with("meta", json!({}))
            .with_vector(EMBEDDING_FIELD, vec![1.0, 0.0, 0.0, 0.0]),
    ];
    let (text, header) = encode(meta_for(4), &rows, &limits()).unwrap();
    assert_eq!(
        text.lines().nth(1).unwrap(),
        r#"{"id":"m0196a8f0c2e10000a1b2c3d4e5f6","text":"Ünïcode \"quoted\"\n🐈","kind":"fact","createdAt":1754000000000,"lastAccessed":1754000000001,"embeddingVersion":"all-MiniLM-L6-v2/f32/max256","meta":{"a":{"b":"ç","y":true},"z":[1,2.5,-0.0,1e+21,null]},"embedding":{"buffer":"AAAAPwAAAIABAAAAAACAvg==","byteOffset":0,"length":4},"$types":{"embedding":"float32array2","embedding.buffer":"arraybuffer"}},"#
    );
    // Computed independently (Python's hashlib over the two lines above plus `\n` each).
    assert_eq!(header.checksum, STABLE_CHECKSUM);
}

const STABLE_CHECKSUM: &str =
    "sha256:671b588a4a1284d49932ce0539820ef3864afade04c4177d880fe1e565b9835b";

#[test]
fn the_checksum_ignores_formatting_and_key_order() {
    let rows = sample_rows(6, 32);
    let text = export(&rows, 32);
    // Re-serialised with every object's keys sorted (serde_json's map) and pretty-printed: the
    // rows now come before `tables` and `tableName`, the header before the data.
    let value: Value = serde_json::from_str(&text).unwrap();
    let pretty = serde_json::to_string_pretty(&value).unwrap();
    assert_ne!(pretty, text);
    let contents = decode_and_validate(&pretty, &limits()).unwrap();
    assert_same_rows(&contents.memories, &rows);
    assert_eq!(
        Some(contents.checksum),
        contents.header.map(|header| header.checksum)
    );
}

#[test]
fn rows_in_another_order_break_the_checksum() {
    let rows = sample_rows(4, 8);
    let text = export(&rows, 8);
    let mut value: Value = serde_json::from_str(&text).unwrap();
    let list = value["data"]["data"][0]["rows"].as_array_mut().unwrap();
    list.swap(0, 2);
    let (path, _) = invalid(&value.to_string());
    assert_eq!(path, "orion.checksum");
}

// --- what is accepted -----------------------------------------------------------------------

/// The output of dexie-export-import 4.4.0's `exportDB` (dexie 4.4.7, fake-indexeddb in Node)
/// for a database made like ORION's (`orion`, version 2, five stores keyed by `id`, `by_<field>`
/// indexes on `[field, id]`), holding two memories: embeddings `Float32Array [1.5, -0, 3e-45, -2]`
/// and `[0.25, 0.5, -1, 0]`, the second with arrays in its meta (which typeson tags
/// `arrayNonindexKeys`, escaping `.` as `~1` and `~` as `~0` in key paths).
const DEXIE_EXPORT: &str = r#"{"formatName":"dexie","formatVersion":1,"data":{"databaseName":"orion","databaseVersion":0.2,"tables":[{"name":"backups","schema":"id,[kind+id]","rowCount":0},{"name":"jobs","schema":"id,[name+id],[state+id]","rowCount":0},{"name":"memories","schema":"id,[kind+id]","rowCount":2},{"name":"meta","schema":"id","rowCount":0},{"name":"workflows","schema":"id,[status+id]","rowCount":0}],"data":[{"tableName":"backups","inbound":true,"rows":[]},{"tableName":"jobs","inbound":true,"rows":[]},{"tableName":"memories","inbound":true,"rows":[{"id":"m1","text":"hello","kind":"fact","createdAt":1,"lastAccessed":2,"embeddingVersion":"v","meta":{},"embedding":{"buffer":"AADAPwAAAIACAAAAAAAAwA==","byteOffset":0,"length":4},"$types":{"embedding":"float32array2","embedding.buffer":"arraybuffer"}},{"id":"m2","text":"with arrays","kind":"conversation","createdAt":3,"lastAccessed":4,"embeddingVersion":"v","meta":{"tags":["a","b"],"a.b":{"c~d":[[1],[]]},"n":null},"embedding":{"buffer":"AACAPgAAAD8AAIC/AAAAAA==","byteOffset":0,"length":4},"$types":{"meta.tags":"arrayNonindexKeys","meta.a~1b.c~0d":"arrayNonindexKeys","meta.a~1b.c~0d.0":"arrayNonindexKeys","meta.a~1b.c~0d.1":"arrayNonindexKeys","embedding":"float32array2","embedding.buffer":"arraybuffer"}}]},{"tableName":"meta","inbound":true,"rows":[]},{"tableName":"workflows","inbound":true,"rows":[]}]}}"#;

#[test]
fn a_file_made_by_dexie_export_db_is_read() {
    let contents = decode_and_validate(DEXIE_EXPORT, &limits()).unwrap();
    assert_eq!(contents.header, None);
    assert_eq!(contents.database_version, 0.2);
    let names: Vec<&str> = contents
        .skipped_tables
        .iter()
        .map(|table| table.name.as_str())
        .collect();
    assert_eq!(names, ["backups", "jobs", "meta", "workflows"]);
    let expected = [
        Row::new("m1")
            .with("text", "hello")
            .with("kind", "fact")
            .with("createdAt", 1)
            .with("lastAccessed", 2)
            .with("embeddingVersion", "v")
            .with("meta", json!({}))
            .with_vector(EMBEDDING_FIELD, vec![1.5, -0.0, f32::from_bits(2), -2.0]),
        Row::new("m2")
            .with("text", "with arrays")
            .with("kind", "conversation")
            .with("createdAt", 3)
            .with("lastAccessed", 4)
            .with("embeddingVersion", "v")
            .with(
                "meta",
                json!({"tags": ["a", "b"], "a.b": {"c~d": [[1], []]}, "n": null}),
            )
            .with_vector(EMBEDDING_FIELD, vec![0.25, 0.5, -1.0, 0.0]),
    ];
    assert_same_rows(&contents.memories, &expected);
    assert_eq!(
        contents.embedding_versions,
        vec![VersionCount {
            version: "v".into(),
            dims: 4,
            count: 2
        }]
    );
}

#[test]
fn typeson_array_tags_must_name_arrays_in_meta() {
    let tags = r#""meta.tags":"arrayNonindexKeys","#;
    let at = "data.data[2].rows[1].$types";
    for (bad, path) in [
        (
            r#""meta.n":"arrayNonindexKeys","#,
            format!(r#"{at}["meta.n"]"#),
        ),
        (
            r#""meta.a~1b":"arrayNonindexKeys","#,
            format!(r#"{at}["meta.a~1b"]"#),
        ),
        (
            r#""meta.a.b":"arrayNonindexKeys","#,
            format!(r#"{at}["meta.a.b"]"#),
        ),
        (
            r#""meta.tags.5":"arrayNonindexKeys","#,
            format!(r#"{at}["meta.tags.5"]"#),
        ),
        (r#""text":"arrayNonindexKeys","#, format!("{at}.text")),
        (r#""meta.tags":"date","#, format!(r#"{at}["meta.tags"]"#)),
        (
            r#""meta.tags":["arrayNonindexKeys"],"#,
            format!(r#"{at}["meta.tags"]"#),
        ),
    ] {
        let text = DEXIE_EXPORT.replacen(tags, bad, 1);
        assert_ne!(text, DEXIE_EXPORT);
        assert_eq!(invalid(&text).0, path, "{bad}");
    }
}

#[test]
fn rows_of_skipped_tables_are_checked_but_not_kept() {
    // A backups row with a large payload and any shape: walked, not built. (Edited in the text:
    // Dexie writes `tableName` before `rows`, which is what lets the reader skip them.)
    let with_row = |row: &str| {
        DEXIE_EXPORT
            .replacen(
                r#"{"tableName":"backups","inbound":true,"rows":[]}"#,
                &format!(r#"{{"tableName":"backups","inbound":true,"rows":[{row}]}}"#),
                1,
            )
            .replacen(
                r#""schema":"id,[kind+id]","rowCount":0"#,
                r#""schema":"id,[kind+id]","rowCount":1"#,
                1,
            )
    };
    let payload = "x".repeat(3 << 20);
    let row = format!(r#"{{"id":"b1","payload":"{payload}","nested":[[[{{"a":1}}]]]}}"#);
    let contents = decode_and_validate(&with_row(&row), &limits()).unwrap();
    assert_eq!(contents.skipped_tables[0].rows, 1);
    assert_eq!(contents.memories.len(), 2);
    let polluted = row.replacen(r#"{"a":1}"#, r#"{"a":1,"__proto__":{}}"#, 1);
    let (path, _) = invalid(&with_row(&polluted));
    assert_eq!(path, "data.data[0].rows[0].nested[0][0][0].__proto__");
    let repeated = row.replacen(r#""id":"b1","#, r#""id":"b1","id":"b2","#, 1);
    let (path, _) = invalid(&with_row(&repeated));
    assert_eq!(path, "data.data[0].rows[0].id");
}

#[test]
fn a_file_without_header_is_read_and_reports_it() {
    let rows = sample_rows(5, 16);
    let text = export(&rows, 16);
    let mut value: Value = serde_json::from_str(&text).unwrap();
    let checksum = value["orion"]["checksum"].clone();
    value.as_object_mut().unwrap().remove("orion");
    let contents = decode_and_validate(&value.to_string(), &limits()).unwrap();
    assert_eq!(contents.header, None);
    assert_eq!(json!(contents.checksum), checksum);
    assert_same_rows(&contents.memories, &rows);
}

#[test]
fn the_header_may_come_first_and_unknown_dexie_keys_are_tolerated() {
    let rows = sample_rows(3, 16);
    let text = export(&rows, 16);
    let value: Value = serde_json::from_str(&text).unwrap();
    let moved = format!(
        r#"{{"orion":{},"comment":"made by hand","formatName":"dexie","formatVersion":1,"data":{}}}"#,
        value["orion"], value["data"]
    );
    let mut value: Value = serde_json::from_str(&moved).unwrap();
    value["data"]["exportedBy"] = json!({"tool": "x"});
    value["data"]["tables"][0]["extra"] = json!(1);
    value["data"]["data"][0]["note"] = json!([1, 2]);
    let contents = decode_and_validate(&value.to_string(), &limits()).unwrap();
    assert_same_rows(&contents.memories, &rows);
}

#[test]
fn a_backup_taken_during_a_migration_holds_both_versions() {
    let mut rows: Vec<Row> = (0..4).map(|i| sample_row_with(i, 384, VERSION)).collect();
    rows.extend((4..7).map(|i| sample_row_with(i, 256, MICRO)));
    let (text, header) = encode(meta_for(384), &rows, &limits()).unwrap();
    assert_eq!(
        header.embedding_versions,
        vec![
            VersionCount {
                version: VERSION.into(),
                dims: 384,
                count: 4
            },
            VersionCount {
                version: MICRO.into(),
                dims: 256,
                count: 3
            },
        ]
    );
    let contents = decode_and_validate(&text, &limits()).unwrap();
    assert_same_rows(&contents.memories, &rows);
    assert_eq!(contents.embedding_versions, header.embedding_versions);
}

#[test]
fn meta_key_order_does_not_matter() {
    let rows = sample_rows(2, 8);
    let text = export(&rows, 8);
    let reordered = text.replacen(
        r#""meta":{"alpha":{"a":"x","b":1}"#,
        r#""meta":{"alpha":{"b":1,"a":"x"}"#,
        1,
    );
    assert_ne!(reordered, text);
    decode_and_validate(&reordered, &limits()).unwrap();
}

// --- the writer refuses what the reader would ------------------------------------------------

#[test]
fn the_writer_refuses_bad_rows() {
    let write = |rows: &[Row]| match encode(meta_for(8), rows, &limits()) {
        Err(Error::BackupInvalid { path, .. }) => path,
        other => panic!("{other:?}"),
    };
    let mut rows = sample_rows(3, 8);
    rows[1].vectors.get_mut(EMBEDDING_FIELD).unwrap()[3] = f32::NAN;
    assert_eq!(write(&rows), "data.data[0].rows[1].embedding");
    let mut rows = sample_rows(3, 8);
    rows[2].vectors.get_mut(EMBEDDING_FIELD).unwrap()[0] = f32::NEG_INFINITY;
    assert_eq!(write(&rows), "data.data[0].rows[2].embedding");
    let mut rows = sample_rows(3, 8);
    rows[2].id = rows[0].id.clone();
    assert_eq!(write(&rows), "data.data[0].rows[2].id");
    let mut rows = sample_rows(3, 8);
    rows[1].vectors.insert(EMBEDDING_FIELD.into(), vec![0.5; 7]);
    assert_eq!(write(&rows), "data.data[0].rows[1].embedding");
    let mut rows = sample_rows(3, 8);
    rows[0].fields.insert("secret".into(), json!(1));
    assert_eq!(write(&rows), "data.data[0].rows[0].secret");
    let mut rows = sample_rows(3, 8);
    rows[0]
        .fields
        .insert("meta".into(), json!({"a": {"__proto__": {}}}));
    assert_eq!(write(&rows), "data.data[0].rows[0].meta.a.__proto__");
    let mut rows = sample_rows(3, 8);
    rows[2].fields.insert("kind".into(), json!("memo"));
    assert_eq!(write(&rows), "data.data[0].rows[2].kind");
    // Another version keeps one length for all its rows.
    let mut rows: Vec<Row> = (0..3).map(|i| sample_row_with(i, 4, MICRO)).collect();
    rows[2].vectors.insert(EMBEDDING_FIELD.into(), vec![0.5; 5]);
    assert_eq!(write(&rows), "data.data[0].rows[2].embedding");
    let mut meta = meta_for(8);
    meta.label = Some("line\nbreak".into());
    assert!(matches!(
        encode(meta, &[], &limits()),
        Err(Error::BackupInvalid { path, .. }) if path == "orion.label"
    ));
}

#[test]
fn the_writer_holds_the_caller_to_its_count() {
    let rows = sample_rows(3, 8);
    let (mut writer, _) = BackupWriter::begin(meta_for(8), 2, &limits()).unwrap();
    assert!(matches!(writer.rows(&rows), Err(Error::Internal(_))));
    let (mut writer, _) = BackupWriter::begin(meta_for(8), 4, &limits()).unwrap();
    writer.rows(&rows).unwrap();
    assert!(matches!(writer.finish(), Err(Error::Internal(_))));
    // A failed chunk leaves the writer unusable rather than half-advanced.
    let (mut writer, _) = BackupWriter::begin(meta_for(8), 3, &limits()).unwrap();
    let mut bad = rows.clone();
    bad[1].fields.insert("kind".into(), json!("memo"));
    assert!(matches!(
        writer.rows(&bad),
        Err(Error::BackupInvalid { .. })
    ));
    assert!(matches!(writer.rows(&rows), Err(Error::Internal(_))));
    assert!(matches!(writer.finish(), Err(Error::Internal(_))));
}

#[test]
fn the_error_has_its_stable_code() {
    let error = Error::backup_invalid("data.data[0].rows[17].embedding", "is wrong");
    assert_eq!(error.code(), ErrorCode::BackupInvalid);
    assert_eq!(error.code().as_str(), "ERR_BACKUP_INVALID");
    assert_eq!(
        error.to_string(),
        "invalid backup at `data.data[0].rows[17].embedding`: is wrong"
    );
}

#[test]
fn paths_quote_keys_that_are_not_identifiers() {
    assert_eq!(key_path(".", "data"), "data");
    assert_eq!(key_path("", "$types"), "$types");
    assert_eq!(
        key_path("a.$types", "embedding.buffer"),
        r#"a.$types["embedding.buffer"]"#
    );
    assert_eq!(key_path("m", "ünï"), r#"m["ünï"]"#);
    assert_eq!(key_path("m", ""), r#"m[""]"#);
}

// --- the corrupted corpus -------------------------------------------------------------------

/// One step into a JSON value, for building corrupted copies.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    At(usize),
}

fn render(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(key) => {
                let plain = key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
                if !plain {
                    out.push_str(&format!("[{}]", serde_json::to_string(key).unwrap()));
                } else if out.is_empty() {
                    out.push_str(key);
                } else {
                    out.push('.');
                    out.push_str(key);
                }
            }
            Step::At(index) => out.push_str(&format!("[{index}]")),
        }
    }
    out
}

fn at_mut<'a>(value: &'a mut Value, path: &[Step]) -> &'a mut Value {
    path.iter().fold(value, |value, step| match step {
        Step::Key(key) => &mut value[key.as_str()],
        Step::At(index) => &mut value[*index],
    })
}

/// Every value's path, not descending into `meta` (whose contents may be anything).
fn paths(value: &Value, path: Vec<Step>, out: &mut Vec<Vec<Step>>) {
    if !path.is_empty() {
        out.push(path.clone());
    }
    if matches!(path.last(), Some(Step::Key(key)) if key == "meta") {
        return;
    }
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                let mut next = path.clone();
                next.push(Step::Key(key.clone()));
                paths(item, next, out);
            }
        }
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                let mut next = path.clone();
                next.push(Step::At(index));
                paths(item, next, out);
            }
        }
        _ => {}
    }
}

/// A value of another JSON type.
fn flipped(value: &Value) -> Value {
    match value {
        Value::String(_) => json!(7),
        Value::Number(_) => json!("7"),
        Value::Bool(_) => json!("true"),
        Value::Null => json!(7),
        Value::Object(_) => json!([]),
        Value::Array(_) => json!({}),
    }
}

struct Variant {
    name: String,
    text: String,
    expect: String,
}

struct Corpus {
    variants: Vec<Variant>,
}

impl Corpus {
    fn add(&mut self, name: impl Into<String>, text: impl Into<String>, expect: impl Into<String>) {
        self.variants.push(Variant {
            name: name.into(),
            text: text.into(),
            expect: expect.into(),
        });
    }

    fn edit(&mut self, base: &Value, name: &str, expect: &str, change: impl FnOnce(&mut Value)) {
        let mut value = base.clone();
        change(&mut value);
        self.add(name, value.to_string(), expect);
    }
}

const ROWS: &str = "data.data[0].rows";

fn corpus_base() -> (Vec<Row>, String) {
    let rows = sample_rows(8, 384);
    let text = export(&rows, 384);
    (rows, text)
}

/// Truncations: rows and the header precisely, Dexie's short prefix loosely.
fn truncations(corpus: &mut Corpus, text: &str) {
    let lines: Vec<(usize, usize)> = text
        .split_inclusive('\n')
        .scan(0, |start, line| {
            let span = (*start, *start + line.len());
            *start += line.len();
            Some(span)
        })
        .collect();
    let rows = lines.len() - 2;
    let header_start = text.find(r#","orion":{"#).unwrap() + r#","orion":"#.len();
    let header_end = text.len() - 2; // the header's closing brace, then the root's, then \n
    let step = text.len() / 150;
    let mut offsets: Vec<usize> = (0..text.len() - 1).step_by(step).collect();
    offsets.extend([
        1,
        2,
        text.len() - 2,
        text.len() - 3,
        header_start,
        header_start + 1,
    ]);
    offsets.sort_unstable();
    offsets.dedup();
    for cut in offsets {
        let expect = if cut == 0 || cut >= header_end {
            ".".to_owned()
        } else if cut >= header_start && cut < header_end {
            "orion".to_owned()
        } else if let Some(row) = (1..=rows).find(|&l| cut > lines[l].0 && cut < lines[l].1) {
            let body_end = lines[row].0
                + text[lines[row].0..lines[row].1]
                    .trim_end_matches([',', '\n'])
                    .len();
            if cut < body_end {
                format!("{ROWS}[{}]", row - 1)
            } else {
                ROWS.to_owned()
            }
        } else {
            // Dexie's spine, the boundaries between rows, or the few bytes closing the data:
            // somewhere on the way from the root to the rows.
            "~spine".to_owned()
        };
        corpus.add(format!("truncated at {cut}"), &text[..cut], expect);
    }
}

fn flips_and_removals(corpus: &mut Corpus, base: &Value) {
    let mut all = Vec::new();
    paths(base, Vec::new(), &mut all);
    for path in &all {
        let name = render(path);
        corpus.edit(base, &format!("{name} of another type"), &name, |value| {
            let target = at_mut(value, path);
            *target = flipped(target);
        });
        let Some((Step::Key(last), parent)) = path.split_last() else {
            continue; // array elements are not removed here (counts are tested below)
        };
        if name == HEADER_KEY {
            continue; // a file without a header is Dexie's, and valid
        }
        corpus.edit(base, &format!("{name} removed"), &name, |value| {
            at_mut(value, parent).as_object_mut().unwrap().remove(last);
        });
    }
}

/// Replaces the first occurrence of `from` in row `row`'s line.
fn edit_row_text(text: &str, row: usize, from: &str, to: &str) -> String {
    let mut lines: Vec<String> = text.split_inclusive('\n').map(str::to_owned).collect();
    assert!(lines[row + 1].contains(from), "{from} not in row {row}");
    lines[row + 1] = lines[row + 1].replacen(from, to, 1);
    lines.concat()
}

fn buffer_with(values: &[f32]) -> String {
    let bytes: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
    STANDARD.encode(bytes)
}

fn specific(corpus: &mut Corpus, text: &str, base: &Value, rows: &[Row]) {
    let row = |j: usize, field: &str| format!("{ROWS}[{j}].{field}");
    // Not a backup at all.
    for (name, doc) in [
        ("empty", String::new()),
        ("null", "null".into()),
        ("an array", "[]".into()),
        ("a string", "\"dexie\"".into()),
        ("not JSON", "hello".into()),
        ("a byte-order mark", format!("\u{feff}{text}")),
        ("trailing garbage", format!("{text}x")),
        ("two documents", format!("{text}{{}}")),
    ] {
        corpus.add(name, doc, ".");
    }
    let b = base;
    // Dexie's part.
    corpus.edit(b, "formatName Dexie", "formatName", |v| {
        v["formatName"] = json!("Dexie")
    });
    corpus.edit(b, "formatVersion 2", "formatVersion", |v| {
        v["formatVersion"] = json!(2)
    });
    corpus.edit(b, "formatVersion 1.0", "formatVersion", |v| {
        v["formatVersion"] = json!(1.0)
    });
    corpus.edit(b, "databaseVersion 0", "data.databaseVersion", |v| {
        v["data"]["databaseVersion"] = json!(0)
    });
    corpus.edit(b, "databaseVersion negative", "data.databaseVersion", |v| {
        v["data"]["databaseVersion"] = json!(-2)
    });
    corpus.edit(b, "databaseName empty", "data.databaseName", |v| {
        v["data"]["databaseName"] = json!("")
    });
    corpus.edit(b, "databaseName huge", "data.databaseName", |v| {
        v["data"]["databaseName"] = json!("o".repeat(300))
    });
    // (`base` has its keys sorted, so `data.data` comes before `data.tables`.)
    corpus.edit(b, "an unknown table", "data.data[1].tableName", |v| {
        v["data"]["tables"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "secrets", "schema": "id", "rowCount": 0}));
        v["data"]["data"]
            .as_array_mut()
            .unwrap()
            .push(json!({"tableName": "secrets", "inbound": true, "rows": []}));
    });
    corpus.edit(
        b,
        "another ORION table in ORION's file",
        "data.tables[1].name",
        |v| {
            v["data"]["tables"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "backups", "schema": "id,[kind+id]", "rowCount": 0}));
            v["data"]["data"]
                .as_array_mut()
                .unwrap()
                .push(json!({"tableName": "backups", "inbound": true, "rows": []}));
        },
    );
    corpus.edit(b, "memories listed twice", "data.tables[1].name", |v| {
        let again = v["data"]["tables"][0].clone();
        v["data"]["tables"].as_array_mut().unwrap().push(again);
    });
    corpus.edit(b, "memories rows twice", "data.data[1].tableName", |v| {
        let again = v["data"]["data"][0].clone();
        v["data"]["data"].as_array_mut().unwrap().push(again);
    });
    corpus.edit(
        b,
        "rows of an unlisted table",
        "data.data[1].tableName",
        |v| {
            v["data"]["data"]
                .as_array_mut()
                .unwrap()
                .push(json!({"tableName": "jobs", "inbound": true, "rows": []}));
        },
    );
    corpus.edit(
        b,
        "a listed table without rows",
        "data.tables[1].name",
        |v| {
            v["data"]["tables"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "jobs", "schema": "id", "rowCount": 0}));
        },
    );
    corpus.edit(b, "no memories at all", "data.tables", |v| {
        v["data"]["tables"][0]["name"] = json!("meta");
        v["data"]["data"][0]["tableName"] = json!("meta");
        v.as_object_mut().unwrap().remove("orion");
    });
    corpus.edit(b, "tableName unknown", "data.data[0].tableName", |v| {
        v["data"]["data"][0]["tableName"] = json!("secrets")
    });
    corpus.edit(b, "schema with another key", "data.tables[0].schema", |v| {
        v["data"]["tables"][0]["schema"] = json!("++key,kind")
    });
    corpus.edit(b, "inbound false", "data.data[0].inbound", |v| {
        v["data"]["data"][0]["inbound"] = json!(false)
    });
    corpus.edit(b, "rowCount + 1", "data.tables[0].rowCount", |v| {
        v["data"]["tables"][0]["rowCount"] = json!(rows.len() + 1)
    });
    corpus.edit(b, "rowCount - 1", "data.tables[0].rowCount", |v| {
        v["data"]["tables"][0]["rowCount"] = json!(rows.len() - 1)
    });
    corpus.edit(b, "rowCount negative", "data.tables[0].rowCount", |v| {
        v["data"]["tables"][0]["rowCount"] = json!(-1)
    });
    corpus.edit(b, "a row removed", "data.tables[0].rowCount", |v| {
        v["data"]["data"][0]["rows"].as_array_mut().unwrap().pop();
    });
    corpus.edit(b, "a row added", "data.tables[0].rowCount", |v| {
        let mut extra = v["data"]["data"][0]["rows"][0].clone();
        extra["id"] = json!("m-extra");
        v["data"]["data"][0]["rows"]
            .as_array_mut()
            .unwrap()
            .push(extra);
    });
    corpus.edit(
        b,
        "a row added and counted in data.tables",
        "orion.itemCount",
        |v| {
            let mut extra = v["data"]["data"][0]["rows"][0].clone();
            extra["id"] = json!("m-extra");
            v["data"]["data"][0]["rows"]
                .as_array_mut()
                .unwrap()
                .push(extra);
            v["data"]["tables"][0]["rowCount"] = json!(rows.len() + 1);
        },
    );
    // The header.
    corpus.edit(b, "itemCount + 1", "orion.itemCount", |v| {
        v["orion"]["itemCount"] = json!(rows.len() + 1)
    });
    corpus.edit(
        b,
        "itemCount and version count + 1",
        "orion.itemCount",
        |v| {
            v["orion"]["itemCount"] = json!(rows.len() + 1);
            v["orion"]["embeddingVersions"][0]["count"] = json!(rows.len() + 1);
        },
    );
    corpus.edit(
        b,
        "a version count of 0",
        "orion.embeddingVersions[0].count",
        |v| v["orion"]["embeddingVersions"][0]["count"] = json!(0),
    );
    corpus.edit(
        b,
        "versions out of order",
        "orion.embeddingVersions[1].version",
        |v| {
            v["orion"]["embeddingVersions"]
                .as_array_mut()
                .unwrap()
                .push(json!({"version": "a-first", "dims": 8, "count": 1}));
            v["orion"]["itemCount"] = json!(rows.len() + 1);
        },
    );
    corpus.edit(
        b,
        "a version no row has",
        "orion.embeddingVersions[0].count",
        |v| {
            v["orion"]["embeddingVersions"][0]["count"] = json!(rows.len() - 1);
            v["orion"]["embeddingVersions"]
                .as_array_mut()
                .unwrap()
                .insert(0, json!({"version": "a-first", "dims": 8, "count": 1}));
        },
    );
    corpus.edit(
        b,
        "header dims differ from its version's",
        "orion.embedding.dims",
        |v| v["orion"]["embedding"]["dims"] = json!(512),
    );
    corpus.edit(
        b,
        "the version's dims differ from the rows'",
        &format!("{ROWS}[0].embedding"),
        |v| {
            v["orion"]["embeddingVersions"][0]["dims"] = json!(383);
            v["orion"]["embedding"]["dims"] = json!(383);
        },
    );
    corpus.edit(b, "dims 0", "orion.embedding.dims", |v| {
        v["orion"]["embedding"]["dims"] = json!(0)
    });
    corpus.edit(b, "dims 5000", "orion.embedding.dims", |v| {
        v["orion"]["embedding"]["dims"] = json!(5000)
    });
    corpus.edit(b, "kind weekly", "orion.kind", |v| {
        v["orion"]["kind"] = json!("weekly")
    });
    corpus.edit(b, "format other", "orion.format", |v| {
        v["orion"]["format"] = json!("orion-backup-2")
    });
    corpus.edit(b, "format version 2", "orion.formatVersion", |v| {
        v["orion"]["formatVersion"] = json!(2)
    });
    corpus.edit(b, "label too long", "orion.label", |v| {
        v["orion"]["label"] = json!("l".repeat(2000))
    });
    corpus.edit(b, "label with a newline", "orion.label", |v| {
        v["orion"]["label"] = json!("a\nb")
    });
    corpus.edit(b, "backupId empty", "orion.backupId", |v| {
        v["orion"]["backupId"] = json!(" ")
    });
    corpus.edit(b, "createdAt beyond 2^53", "orion.createdAt", |v| {
        v["orion"]["createdAt"] = json!(1u64 << 53)
    });
    corpus.edit(b, "an unknown header field", "orion.extra", |v| {
        v["orion"]["extra"] = json!(true)
    });
    corpus.edit(
        b,
        "an unknown header embedding field",
        "orion.embedding.extra",
        |v| v["orion"]["embedding"]["extra"] = json!(true),
    );
    for (name, checksum) in [
        ("checksum off by one digit", {
            let c = b["orion"]["checksum"].as_str().unwrap();
            let last = if c.ends_with('0') { "1" } else { "0" };
            format!("{}{last}", &c[..c.len() - 1])
        }),
        (
            "checksum of another algorithm",
            format!("md5:{}", "0".repeat(32)),
        ),
        (
            "checksum in upper case",
            b["orion"]["checksum"]
                .as_str()
                .unwrap()
                .to_uppercase()
                .replace("SHA256", "sha256"),
        ),
        ("checksum too short", "sha256:abc".into()),
    ] {
        corpus.edit(b, name, "orion.checksum", |v| {
            v["orion"]["checksum"] = json!(checksum)
        });
    }
    corpus.edit(b, "a text changed", "orion.checksum", |v| {
        v["data"]["data"][0]["rows"][3]["text"] = json!("a different memory")
    });
    corpus.edit(b, "a time changed", "orion.checksum", |v| {
        v["data"]["data"][0]["rows"][5]["lastAccessed"] = json!(1)
    });
    corpus.edit(b, "an embedding changed", "orion.checksum", |v| {
        let mut values = rows[6].vectors[EMBEDDING_FIELD].clone();
        values[100] = 0.25;
        v["data"]["data"][0]["rows"][6]["embedding"]["buffer"] = json!(buffer_with(&values));
    });
    // Rows.
    let r = |v: &mut Value, j: usize, field: &str, new: Value| {
        v["data"]["data"][0]["rows"][j][field] = new
    };
    corpus.edit(b, "text over 64 KiB", &row(1, "text"), |v| {
        r(v, 1, "text", json!("t".repeat(70_000)))
    });
    corpus.edit(b, "text of 2 MiB", &row(1, "text"), |v| {
        r(v, 1, "text", json!("t".repeat(2 << 20)))
    });
    corpus.edit(b, "text blank", &row(2, "text"), |v| {
        r(v, 2, "text", json!("   "))
    });
    corpus.edit(b, "text empty", &row(2, "text"), |v| {
        r(v, 2, "text", json!(""))
    });
    corpus.edit(b, "kind unknown", &row(3, "kind"), |v| {
        r(v, 3, "kind", json!("memo"))
    });
    corpus.edit(b, "createdAt negative", &row(4, "createdAt"), |v| {
        r(v, 4, "createdAt", json!(-1))
    });
    corpus.edit(b, "createdAt fractional", &row(4, "createdAt"), |v| {
        r(v, 4, "createdAt", json!(1.5))
    });
    corpus.edit(b, "createdAt beyond 2^53", &row(4, "createdAt"), |v| {
        r(v, 4, "createdAt", json!(1u64 << 53))
    });
    corpus.edit(b, "createdAt 1e300", &row(4, "createdAt"), |v| {
        r(v, 4, "createdAt", json!(1e300))
    });
    corpus.edit(b, "lastAccessed null", &row(5, "lastAccessed"), |v| {
        r(v, 5, "lastAccessed", Value::Null)
    });
    corpus.edit(
        b,
        "embeddingVersion blank",
        &row(0, "embeddingVersion"),
        |v| r(v, 0, "embeddingVersion", json!("")),
    );
    corpus.edit(
        b,
        "embeddingVersion huge",
        &row(0, "embeddingVersion"),
        |v| r(v, 0, "embeddingVersion", json!("v".repeat(300))),
    );
    corpus.edit(
        b,
        "embeddingVersion with a bell",
        &row(0, "embeddingVersion"),
        |v| r(v, 0, "embeddingVersion", json!("v\u{7}")),
    );
    corpus.edit(
        b,
        "embeddingVersion not in the header",
        &row(6, "embeddingVersion"),
        |v| r(v, 6, "embeddingVersion", json!("other/v1")),
    );
    corpus.edit(b, "id too long", &row(7, "id"), |v| {
        r(v, 7, "id", json!("m".repeat(65)))
    });
    corpus.edit(b, "id blank", &row(7, "id"), |v| r(v, 7, "id", json!("")));
    corpus.edit(b, "id with a newline", &row(7, "id"), |v| {
        r(v, 7, "id", json!("m\n1"))
    });
    corpus.edit(b, "id repeated", &row(3, "id"), |v| {
        let first = v["data"]["data"][0]["rows"][1]["id"].clone();
        r(v, 3, "id", first);
    });
    corpus.edit(b, "an unknown row field", &row(2, "extra"), |v| {
        r(v, 2, "extra", json!(1))
    });
    corpus.edit(
        b,
        "a row of another table's shape",
        &format!("{ROWS}[2]"),
        |v| v["data"]["data"][0]["rows"][2] = json!("a string"),
    );
    corpus.edit(b, "a null row", &format!("{ROWS}[0]"), |v| {
        v["data"]["data"][0]["rows"][0] = Value::Null
    });
    corpus.edit(b, "meta over 16 KiB", &row(1, "meta"), |v| {
        r(v, 1, "meta", json!({"blob": "m".repeat(17_000)}))
    });
    corpus.edit(b, "meta a string", &row(1, "meta"), |v| {
        r(v, 1, "meta", json!("{}"))
    });
    corpus.edit(b, "meta 40 levels deep", &row(1, "meta"), |v| {
        let deep = (0..40).fold(json!(1), |inner, _| json!({"d": inner}));
        r(v, 1, "meta", deep);
    });
    corpus.edit(b, "meta a deep array", &row(1, "meta"), |v| {
        let deep = (0..40).fold(json!(1), |inner, _| json!([inner]));
        r(v, 1, "meta", json!({"a": deep}));
    });
    // Prototype pollution, everywhere.
    corpus.edit(
        b,
        "__proto__ in meta",
        &format!("{}.__proto__", row(1, "meta")),
        |v| v["data"]["data"][0]["rows"][1]["meta"]["__proto__"] = json!({"isAdmin": true}),
    );
    corpus.edit(
        b,
        "constructor deep in meta",
        &format!("{}.list[1].constructor", row(2, "meta")),
        |v| {
            v["data"]["data"][0]["rows"][2]["meta"]["list"] =
                json!([{}, {"constructor": {"prototype": 1}}])
        },
    );
    corpus.edit(b, "__proto__ in a row", &row(4, "__proto__"), |v| {
        r(v, 4, "__proto__", json!({}))
    });
    corpus.edit(b, "prototype at the top", "prototype", |v| {
        v["prototype"] = json!({})
    });
    corpus.edit(b, "constructor in data", "data.constructor", |v| {
        v["data"]["constructor"] = json!(1)
    });
    corpus.edit(b, "__proto__ in the header", "orion.__proto__", |v| {
        v["orion"]["__proto__"] = json!(1)
    });
    corpus.edit(
        b,
        "__proto__ in a table entry",
        "data.tables[0].__proto__",
        |v| v["data"]["tables"][0]["__proto__"] = json!(1),
    );
    corpus.edit(
        b,
        "__proto__ in a rows entry",
        "data.data[0].__proto__",
        |v| v["data"]["data"][0]["__proto__"] = json!(1),
    );
    corpus.edit(
        b,
        "__proto__ in $types",
        &format!("{}.__proto__", row(0, "$types")),
        |v| v["data"]["data"][0]["rows"][0]["$types"]["__proto__"] = json!("arraybuffer"),
    );
    corpus.edit(
        b,
        "__proto__ in the embedding",
        &format!("{}.__proto__", row(0, "embedding")),
        |v| v["data"]["data"][0]["rows"][0]["embedding"]["__proto__"] = json!(1),
    );
    corpus.add(
        "__proto__ spelled with an escape",
        edit_row_text(
            text,
            0,
            r#""meta":{"#,
            r#""meta":{"\u005f_proto__":{"polluted":1},"#,
        ),
        format!("{}.__proto__", row(0, "meta")),
    );
    corpus.add(
        "a key repeated in a row",
        edit_row_text(text, 5, r#""text":"#, r#""text":"first","text":"#),
        row(5, "text"),
    );
    corpus.add(
        "a key repeated at the top",
        text.replacen(
            r#""formatName":"dexie","#,
            r#""formatName":"dexie","formatName":"dexie","#,
            1,
        ),
        "formatName",
    );
    // Sizes outside the rows.
    corpus.edit(b, "a huge unknown string", "comment", |v| {
        v["comment"] = json!("c".repeat(2 << 20))
    });
    corpus.edit(b, "a huge unknown array", "junk", |v| {
        v["junk"] = json!(vec![0; 200_000])
    });
    corpus.edit(b, "a deep unknown value", "deep", |v| {
        v["deep"] = (0..60).fold(json!(1), |inner, _| json!([inner]));
    });
    corpus.edit(b, "a huge key", &key_path(".", &"k".repeat(2 << 20)), |v| {
        v["k".repeat(2 << 20)] = json!(1)
    });
    // Embeddings.
    let e = |j: usize, field: &str| format!("{ROWS}[{j}].embedding.{field}");
    let buffer = |v: &Value, j: usize| {
        v["data"]["data"][0]["rows"][j]["embedding"]["buffer"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let set_buffer = |v: &mut Value, j: usize, s: String| {
        v["data"]["data"][0]["rows"][j]["embedding"]["buffer"] = json!(s)
    };
    corpus.edit(b, "base64 with a bad character", &e(1, "buffer"), |v| {
        let s = buffer(v, 1);
        set_buffer(v, 1, format!("!{}", &s[1..]));
    });
    corpus.edit(b, "base64 with a space", &e(1, "buffer"), |v| {
        let s = buffer(v, 1);
        set_buffer(v, 1, format!("{} {}", &s[..10], &s[11..]));
    });
    corpus.edit(b, "base64 url-safe", &e(1, "buffer"), |v| {
        let s = buffer(v, 1);
        set_buffer(v, 1, format!("-{}", &s[1..]));
    });
    corpus.edit(b, "base64 four characters short", &e(2, "buffer"), |v| {
        let s = buffer(v, 2);
        set_buffer(v, 2, s[4..].to_owned());
    });
    corpus.edit(b, "base64 four characters long", &e(2, "buffer"), |v| {
        let s = buffer(v, 2);
        set_buffer(v, 2, format!("AAAA{s}"));
    });
    corpus.edit(b, "length one short", &e(3, "buffer"), |v| {
        v["data"]["data"][0]["rows"][3]["embedding"]["length"] = json!(383)
    });
    corpus.edit(b, "length 0", &e(3, "length"), |v| {
        v["data"]["data"][0]["rows"][3]["embedding"]["length"] = json!(0)
    });
    corpus.edit(b, "length 5000", &e(3, "length"), |v| {
        v["data"]["data"][0]["rows"][3]["embedding"]["length"] = json!(5000)
    });
    corpus.edit(b, "byteOffset 4", &e(3, "byteOffset"), |v| {
        v["data"]["data"][0]["rows"][3]["embedding"]["byteOffset"] = json!(4)
    });
    corpus.edit(b, "an unknown embedding field", &e(3, "type"), |v| {
        v["data"]["data"][0]["rows"][3]["embedding"]["type"] = json!("f32")
    });
    for (name, value) in [
        ("NaN", f32::NAN),
        ("infinity", f32::INFINITY),
        ("-infinity", f32::NEG_INFINITY),
    ] {
        corpus.edit(
            b,
            &format!("an embedding holding {name}"),
            &format!("{ROWS}[4].embedding"),
            |v| {
                let mut values = rows[4].vectors[EMBEDDING_FIELD].clone();
                values[17] = value;
                set_buffer(v, 4, buffer_with(&values));
            },
        );
    }
    corpus.edit(
        b,
        "an embedding of 383 dimensions",
        &format!("{ROWS}[5].embedding"),
        |v| {
            let values = &rows[5].vectors[EMBEDDING_FIELD][..383];
            set_buffer(v, 5, buffer_with(values));
            v["data"]["data"][0]["rows"][5]["embedding"]["length"] = json!(383);
        },
    );
    corpus.edit(
        b,
        "an embedding as an array of numbers",
        &format!("{ROWS}[5].embedding"),
        |v| r(v, 5, "embedding", json!([0.1, 0.2])),
    );
    corpus.edit(
        b,
        "typeson-registry's type name",
        &format!("{}.embedding", row(0, "$types")),
        |v| v["data"]["data"][0]["rows"][0]["$types"]["embedding"] = json!("float32array"),
    );
    corpus.edit(
        b,
        "an extra type",
        &format!("{}.meta", row(0, "$types")),
        |v| v["data"]["data"][0]["rows"][0]["$types"]["meta"] = json!("date"),
    );
}

/// Variants on a tiny document whose embeddings need base64 padding.
fn padded(corpus: &mut Corpus) {
    let rows: Vec<Row> = (0..2).map(|i| sample_row_with(i, 2, VERSION)).collect();
    let (text, _) = encode(meta_for(2), &rows, &limits()).unwrap();
    let value: Value = serde_json::from_str(&text).unwrap();
    let buffer = value["data"]["data"][0]["rows"][1]["embedding"]["buffer"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(buffer.ends_with('='), "{buffer}");
    let at = format!("{ROWS}[1].embedding.buffer");
    let mut set = |name: &str, new: String| {
        corpus.edit(&value, name, &at, |v| {
            v["data"]["data"][0]["rows"][1]["embedding"]["buffer"] = json!(new)
        });
    };
    set(
        "base64 without padding",
        buffer.trim_end_matches('=').to_owned(),
    );
    // The last character before the padding carries 2 unused bits: set one.
    let bytes = buffer.as_bytes();
    let last = bytes[bytes.len() - 2];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let index = alphabet.iter().position(|c| *c == last).unwrap();
    let odd = alphabet[index ^ 1] as char;
    set(
        "base64 with non-zero trailing bits",
        format!("{}{odd}=", &buffer[..buffer.len() - 2]),
    );
    set(
        "base64 padding in the middle",
        format!("{}=A", &buffer[..buffer.len() - 2]),
    );
}

#[test]
fn at_least_200_corrupted_exports_are_refused_at_the_right_path() {
    let (rows, text) = corpus_base();
    let base: Value = serde_json::from_str(&text).unwrap();
    decode_and_validate(&text, &limits()).unwrap();
    decode_and_validate(&base.to_string(), &limits()).unwrap();
    let mut corpus = Corpus {
        variants: Vec::new(),
    };
    truncations(&mut corpus, &text);
    let truncated = corpus.variants.len();
    flips_and_removals(&mut corpus, &base);
    let edited = corpus.variants.len() - truncated;
    specific(&mut corpus, &text, &base, &rows);
    padded(&mut corpus);
    let spine = [".", "formatName", "formatVersion", "data"];
    let mut wrong = Vec::new();
    for variant in &corpus.variants {
        let outcome = decode_and_validate(&variant.text, &limits());
        let fits = match &outcome {
            Err(Error::BackupInvalid { path, .. }) => match variant.expect.as_str() {
                "~spine" => spine.iter().any(|prefix| under(path, prefix)),
                expect => under(path, expect),
            },
            _ => false,
        };
        if !fits {
            wrong.push(format!(
                "{}: expected ERR_BACKUP_INVALID under `{}`, got {:?}",
                variant.name,
                variant.expect,
                outcome.map(|_| "accepted").map_err(|e| e
                    .to_string()
                    .chars()
                    .take(300)
                    .collect::<String>())
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {}:\n{}",
        wrong.len(),
        corpus.variants.len(),
        wrong.join("\n")
    );
    eprintln!(
        "{} corrupted variants: {truncated} truncations, {edited} fields of another type or \
         removed, {} others",
        corpus.variants.len(),
        corpus.variants.len() - truncated - edited
    );
    assert!(truncated >= 100, "{truncated} truncations");
    assert!(edited >= 200, "{edited} flipped or removed fields");
    assert!(
        corpus.variants.len() >= 400,
        "{} variants",
        corpus.variants.len()
    );
    // Most truncations land in the rows or the header and were held to their exact row.
    let precise = corpus.variants[..truncated]
        .iter()
        .filter(|variant| {
            variant.expect.starts_with(&format!("{ROWS}[")) || variant.expect == "orion"
        })
        .count();
    assert!(precise * 10 >= truncated * 8, "{precise} of {truncated}");
}

#[test]
fn limits_are_the_callers() {
    let rows = sample_rows(4, 16);
    let text = export(&rows, 16);
    let small = BackupLimits {
        max_document_bytes: 100,
        ..limits()
    };
    assert_eq!(invalid_with(&text, &small).0, ".");
    let few = BackupLimits {
        max_rows: 3,
        ..limits()
    };
    assert_eq!(invalid_with(&text, &few).0, format!("{ROWS}[3]"));
    let short = BackupLimits {
        max_text_bytes: 10,
        ..limits()
    };
    assert_eq!(invalid_with(&text, &short).0, format!("{ROWS}[0].text"));
    let config = crate::memory::MemoryConfig::for_profile(crate::profile::Profile::Full);
    assert_eq!(BackupLimits::for_memory(&config).max_text_bytes, 64 * 1024);
}

#[test]
fn a_headerless_file_keeps_one_length_per_version() {
    let mut rows: Vec<Row> = (0..3).map(|i| sample_row_with(i, 8, VERSION)).collect();
    rows.push(sample_row_with(3, 4, MICRO));
    let text = export(&rows, 8);
    let mut value: Value = serde_json::from_str(&text).unwrap();
    value.as_object_mut().unwrap().remove("orion");
    let contents = decode_and_validate(&value.to_string(), &limits()).unwrap();
    assert_eq!(contents.embedding_versions.len(), 2);
    let other = sample_row_with(1, 7, VERSION);
    let mut odd = value.clone();
    odd["data"]["data"][0]["rows"][2]["embedding"] = json!({
        "buffer": buffer_with(&other.vectors[EMBEDDING_FIELD]), "byteOffset": 0, "length": 7
    });
    let (path, reason) = invalid(&odd.to_string());
    assert_eq!(path, format!("{ROWS}[2].embedding"));
    assert!(reason.contains("data.data[0].rows[0]"), "{reason}");
}

#[test]
fn errors_name_the_first_bad_row_in_document_order() {
    let rows = sample_rows(8, 16);
    let text = export(&rows, 16);
    let mut value: Value = serde_json::from_str(&text).unwrap();
    value["data"]["data"][0]["rows"][6]["kind"] = json!("memo");
    value["data"]["data"][0]["rows"][2]["text"] = json!(5);
    assert_eq!(invalid(&value.to_string()).0, format!("{ROWS}[2].text"));
    let (path, reason) = invalid(&text[..text.len() / 2]);
    assert!(path.starts_with(&format!("{ROWS}[")), "{path}");
    assert!(reason.contains("truncated"), "{reason}");
}
