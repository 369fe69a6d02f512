use std::cell::{Cell, RefCell};

use serde_json::json;

use super::*;
use crate::backup_file::decode_and_validate;
use crate::clock::ManualClock;
use crate::store::conformance::block_on;
use crate::store::MemStore;

fn model() -> EmbeddingModelInfo {
    EmbeddingModelInfo {
        id: "test/model".into(),
        version: "test/v1".into(),
        dims: 3,
    }
}

fn memory(n: usize) -> Row {
    Row::new(format!("m{n:06}"))
        .with("text", json!(format!("memory number {n}")))
        .with("kind", json!("fact"))
        .with("createdAt", json!(1_000 + n as u64))
        .with("lastAccessed", json!(1_000 + n as u64))
        .with("embeddingVersion", json!("test/v1"))
        .with("meta", json!({"n": n}))
        .with_vector("embedding", vec![n as f32, -0.5, 0.25])
}

fn setup(memories: usize) -> (ManualClock, Rc<MemStore>, BackupManager) {
    let clock = ManualClock::new(1_700_000_000_000);
    let store = Rc::new(MemStore::new());
    let rows: Vec<WriteOp> = (0..memories)
        .map(|n| WriteOp::Put(Table::Memories, memory(n)))
        .collect();
    if !rows.is_empty() {
        block_on(store.write(rows)).unwrap();
    }
    let manager = BackupManager::new(store.clone(), clock.shared(), BackupConfig::default(), 7);
    (clock, store, manager)
}

/// The parts `export` sends, in order, and what it answers.
fn export_parts(
    manager: &BackupManager,
    id: &str,
    progress: &dyn Fn(u64, u64),
) -> Result<(Vec<String>, Exported)> {
    let mut parts = Vec::new();
    let mut keep = |part| {
        parts.push(part);
        Ok(())
    };
    let exported = block_on(manager.export(id, &mut keep, progress))?;
    Ok((parts, exported))
}

/// The ids `list` answers, newest first.
fn listed_ids(manager: &BackupManager) -> Vec<String> {
    block_on(manager.list())
        .unwrap()
        .into_iter()
        .map(|info| info.id)
        .collect()
}

/// A stored backup's file.
fn export_text(manager: &BackupManager, id: &str) -> String {
    export_parts(manager, id, &|_, _| {}).unwrap().0.concat()
}

#[test]
fn an_export_without_an_id_is_a_backup_taken_now_and_not_stored() {
    let (clock, store, manager) = setup(1_200);
    let stored = block_on(manager.create(BackupKind::Manual, None, &model())).unwrap();
    block_on(store.write(vec![WriteOp::Put(Table::Memories, memory(5_000))])).unwrap();
    clock.advance(1_000);
    let mut parts = Vec::new();
    let progress = RefCell::new(Vec::new());
    let exported = block_on(manager.export_current(
        &model(),
        &mut |part| {
            parts.push(part);
            Ok(())
        },
        &|done, total| progress.borrow_mut().push((done, total)),
    ))
    .unwrap();
    // The opening, two chunks of at most 1000 memories (one read each), the header.
    assert_eq!(parts.len(), 4, "sent part by part");
    assert_eq!(*progress.borrow(), [(1_000, 1_201), (1_201, 1_201)]);
    let document = parts.concat();
    assert_eq!(
        exported,
        Exported {
            parts: 4,
            bytes: document.len() as u64,
            item_count: 1_201
        }
    );
    let contents = decode_and_validate(&document, &BackupLimits::default()).unwrap();
    assert_eq!(
        contents.memories.len(),
        1_201,
        "the memories as they are now"
    );
    let header = contents.header.unwrap();
    assert_eq!(header.item_count, 1_201);
    assert_ne!(header.backup_id, stored.id);
    assert_eq!(header.created_at, 1_700_000_001_000);
    let listed = listed_ids(&manager);
    assert_eq!(listed, [stored.id], "nothing stored");
}

#[test]
fn a_backup_holds_every_memory_in_parts_and_exports_a_valid_file() {
    let (_, store, manager) = setup(2_500);
    let info =
        block_on(manager.create(BackupKind::Manual, Some("before".into()), &model())).unwrap();
    assert_eq!(info.item_count, 2_500);
    // The opening, three chunks of at most 1000 memories, the header.
    assert_eq!(info.parts, 5);
    assert_eq!(info.label.as_deref(), Some("before"));
    let progress = RefCell::new(Vec::new());
    let (parts, exported) = export_parts(&manager, &info.id, &|done, total| {
        progress.borrow_mut().push((done, total));
    })
    .unwrap();
    assert_eq!(parts.len(), 5, "the stored parts, not one string");
    assert_eq!((exported.parts, exported.bytes), (5, info.bytes));
    // Four parts per read: the opening and three chunks, then the header.
    assert_eq!(*progress.borrow(), [(2_500, 2_500), (2_500, 2_500)]);
    let document = parts.concat();
    assert_eq!(document.len() as u64, info.bytes);
    let contents = decode_and_validate(&document, &BackupLimits::default()).unwrap();
    assert_eq!(contents.memories.len(), 2_500);
    assert_eq!(contents.checksum, info.checksum);
    let original = block_on(store.get(Table::Memories, vec!["m001234".into()])).unwrap();
    let restored = contents
        .memories
        .iter()
        .find(|row| row.id == "m001234")
        .unwrap();
    assert_eq!(Some(restored), original[0].as_ref());
    let verification = block_on(manager.verify(&info.id)).unwrap();
    assert_eq!(
        verification,
        Verification {
            valid: true,
            issues: vec![]
        }
    );
}

#[test]
fn only_the_newest_automatic_backups_are_kept_and_manual_ones_stay() {
    let (clock, store, manager) = setup(3);
    let manual = block_on(manager.create(BackupKind::Manual, None, &model())).unwrap();
    let mut autos = Vec::new();
    for _ in 0..7 {
        clock.advance(3_600_000);
        autos.push(block_on(manager.create(BackupKind::Auto, None, &model())).unwrap());
    }
    let listed = block_on(manager.list()).unwrap();
    let ids: Vec<&str> = listed.iter().map(|info| info.id.as_str()).collect();
    let mut expected: Vec<&str> = autos
        .iter()
        .rev()
        .take(5)
        .map(|info| info.id.as_str())
        .collect();
    expected.push(&manual.id);
    assert_eq!(
        ids, expected,
        "newest first; the two oldest automatic ones are gone"
    );
    // Their parts went with them.
    let rows = block_on(store.scan(Table::Backups, Scan::first(1_000))).unwrap();
    let per_backup = manual.parts as usize + 1;
    assert_eq!(rows.len(), 6 * per_backup);
    assert!(rows.iter().all(|row| !row.id.starts_with(&autos[0].id)));
}

#[test]
fn a_damaged_part_fails_verification_with_the_reason() {
    let (_, store, manager) = setup(10);
    let info = block_on(manager.create(BackupKind::Manual, None, &model())).unwrap();
    let id = part_id(&info.id, 1);
    let mut part = block_on(store.get(Table::Backups, vec![id])).unwrap()[0]
        .clone()
        .unwrap();
    let text = part.fields["text"]
        .as_str()
        .unwrap()
        .replace("memory number 3", "memory number 4");
    part.fields.insert("text".into(), json!(text));
    block_on(store.write(vec![WriteOp::Put(Table::Backups, part)])).unwrap();
    let verification = block_on(manager.verify(&info.id)).unwrap();
    assert!(!verification.valid);
    assert!(
        verification
            .issues
            .iter()
            .any(|issue| issue.contains("checksum")),
        "{:?}",
        verification.issues
    );

    let missing = part_id(&info.id, 2);
    block_on(store.write(vec![WriteOp::Delete(Table::Backups, missing)])).unwrap();
    let verification = block_on(manager.verify(&info.id)).unwrap();
    assert!(!verification.valid);
    assert!(
        verification.issues[0].contains("part 2"),
        "{:?}",
        verification.issues
    );
}

#[test]
fn an_empty_database_backs_up_and_deleting_removes_everything() {
    let (_, store, manager) = setup(0);
    let info = block_on(manager.create(BackupKind::Manual, None, &model())).unwrap();
    assert_eq!(info.item_count, 0);
    assert!(block_on(manager.verify(&info.id)).unwrap().valid);
    assert!(block_on(manager.delete(&info.id)).unwrap());
    assert!(!block_on(manager.delete(&info.id)).unwrap());
    assert_eq!(block_on(store.count(Table::Backups)).unwrap(), 0);
    assert!(block_on(manager.get(&info.id)).unwrap().is_none());
    assert!(matches!(
        export_parts(&manager, &info.id, &|_, _| {}),
        Err(Error::InvalidInput { field, .. }) if field == "id"
    ));
}

#[test]
fn a_memory_a_backup_may_not_hold_fails_the_backup_and_nothing_is_stored() {
    let (_, store, manager) = setup(3);
    let bad = memory(9).with("kind", json!("gossip"));
    block_on(store.write(vec![WriteOp::Put(Table::Memories, bad)])).unwrap();
    let error = block_on(manager.create(BackupKind::Manual, None, &model())).unwrap_err();
    assert!(
        matches!(&error, Error::BackupInvalid { path, .. } if path.ends_with(".kind")),
        "{error:?}"
    );
    assert_eq!(block_on(store.count(Table::Backups)).unwrap(), 0);
    let label = "x".repeat(MAX_LABEL_BYTES + 1);
    assert!(matches!(
        block_on(manager.create(BackupKind::Manual, Some(label), &model())),
        Err(Error::InvalidInput { field, .. }) if field == "label"
    ));
}

// ---- restore and import ----

use crate::memory::{MemoryConfig, OnConflict, RestoreOptions};
use crate::profile::Profile;

fn memories_on(store: &Rc<MemStore>, clock: &ManualClock) -> Memories {
    let config = MemoryConfig {
        max_memories: 1_000,
        ..MemoryConfig::for_profile(Profile::Full)
    };
    block_on(Memories::load(
        store.clone(),
        clock.shared(),
        config,
        model(),
        11,
        &|_| {},
    ))
    .unwrap()
}

fn memory_rows(store: &MemStore) -> Vec<Row> {
    block_on(store.scan(Table::Memories, Scan::first(100_000))).unwrap()
}

fn everything(store: &MemStore) -> crate::store::Snapshot {
    block_on(store.snapshot(Table::ALL.to_vec())).unwrap()
}

const CLEAR: RestoreOptions = RestoreOptions {
    clear_existing: true,
    on_conflict: OnConflict::Skip,
};

#[test]
fn a_restore_brings_back_exactly_the_backed_up_memories() {
    let (clock, store, manager) = setup(30);
    let memories = memories_on(&store, &clock);
    let original = memory_rows(&store);
    let info = block_on(manager.create(BackupKind::Manual, None, &model())).unwrap();
    block_on(memories.delete("m000003")).unwrap();
    block_on(memories.delete("m000017")).unwrap();

    // Without clearing, only the missing ones come back.
    let report =
        block_on(manager.restore(&info.id, RestoreOptions::default(), &memories, &|_| {})).unwrap();
    assert_eq!(
        (report.restored, report.skipped, report.replaced),
        (2, 28, 0)
    );
    assert_eq!(memory_rows(&store), original);

    block_on(memories.purge(None)).unwrap();
    let progress = std::cell::RefCell::new(Vec::new());
    let report = block_on(manager.restore(&info.id, CLEAR, &memories, &|n| {
        progress.borrow_mut().push(n)
    }))
    .unwrap();
    assert_eq!(
        (report.restored, report.skipped, report.replaced),
        (30, 0, 0)
    );
    assert_eq!(progress.borrow().last(), Some(&30));
    assert_eq!(memory_rows(&store), original);
    assert_eq!(memories.stats().count, 30);
    assert_eq!(memories.stats().searchable, 30);
}

#[test]
fn a_damaged_or_mismatched_stored_backup_is_refused_and_nothing_changes() {
    let (clock, store, manager) = setup(12);
    let memories = memories_on(&store, &clock);
    let info = block_on(manager.create(BackupKind::Manual, None, &model())).unwrap();
    block_on(memories.delete("m000001")).unwrap();
    let assert_refused = |expected_path: &str| {
        let before = everything(&store);
        let stats = memories.stats();
        let error = block_on(manager.restore(&info.id, CLEAR, &memories, &|_| {})).unwrap_err();
        match &error {
            Error::BackupInvalid { path, .. } => assert_eq!(path, expected_path, "{error}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(everything(&store), before);
        assert_eq!(memories.stats(), stats);
    };

    // The info row says another checksum than the document.
    let mut row = block_on(store.get(Table::Backups, vec![info.id.clone()])).unwrap()[0]
        .clone()
        .unwrap();
    let good_row = row.clone();
    row.fields.insert(
        "checksum".into(),
        json!(format!("sha256:{}", "0".repeat(64))),
    );
    block_on(store.write(vec![WriteOp::Put(Table::Backups, row)])).unwrap();
    assert_refused("orion");
    block_on(store.write(vec![WriteOp::Put(Table::Backups, good_row)])).unwrap();

    // A row of a part edited: the document's own checksum fails.
    let id = part_id(&info.id, 1);
    let original_part = block_on(store.get(Table::Backups, vec![id.clone()])).unwrap()[0]
        .clone()
        .unwrap();
    let mut part = original_part.clone();
    let text = part.fields["text"]
        .as_str()
        .unwrap()
        .replace("memory number 3", "memory number X");
    part.fields.insert("text".into(), json!(text));
    block_on(store.write(vec![WriteOp::Put(Table::Backups, part)])).unwrap();
    assert_refused("orion.checksum");

    // A part missing.
    block_on(store.write(vec![WriteOp::Delete(Table::Backups, id)])).unwrap();
    assert_refused(".");

    // No such backup.
    assert!(matches!(
        block_on(manager.restore("b-none", CLEAR, &memories, &|_| {})),
        Err(Error::InvalidInput { field, .. }) if field == "id"
    ));
}

#[test]
fn an_exported_file_imports_into_another_database_identically() {
    let (clock, store, manager) = setup(25);
    let info = block_on(manager.create(BackupKind::Manual, None, &model())).unwrap();
    let text = export_text(&manager, &info.id);

    let (_, other_store, other_manager) = setup(0);
    let other = memories_on(&other_store, &clock);
    let report =
        block_on(other_manager.import(&text, RestoreOptions::default(), &other, &|_| {})).unwrap();
    assert_eq!(report.restored, 25);
    assert_eq!(memory_rows(&other_store), memory_rows(&store));
    assert_eq!(other.stats().count, 25);

    // Again: every id is there already.
    let report =
        block_on(other_manager.import(&text, RestoreOptions::default(), &other, &|_| {})).unwrap();
    assert_eq!((report.restored, report.skipped), (0, 25));

    // A file made by Dexie's exportDB has no ORION header: its rows are checked and imported.
    let mut document: Value = serde_json::from_str(&text).unwrap();
    document.as_object_mut().unwrap().remove("orion");
    let dexie = serde_json::to_string(&document).unwrap();
    let (_, third_store, third_manager) = setup(0);
    let third = memories_on(&third_store, &clock);
    let report = block_on(third_manager.import(&dexie, CLEAR, &third, &|_| {})).unwrap();
    assert_eq!(report.restored, 25);
    assert_eq!(memory_rows(&third_store), memory_rows(&store));
}

#[test]
fn a_bad_file_or_a_failed_write_leaves_the_database_byte_for_byte_unchanged() {
    let (clock, source, manager) = setup(20);
    let info = block_on(manager.create(BackupKind::Manual, None, &model())).unwrap();
    let text = export_text(&manager, &info.id);
    drop(source);

    let (_, store, target) = setup(5);
    let memories = memories_on(&store, &clock);
    block_on(target.create(BackupKind::Manual, Some("mine".into()), &model())).unwrap();
    let before = everything(&store);
    let stats = memories.stats();
    let unchanged = |what: &str| {
        assert_eq!(everything(&store), before, "{what}");
        assert_eq!(memories.stats(), stats, "{what}");
    };

    let mut variants = vec![
        (text[..text.len() / 2].to_owned(), None),
        (
            text.replacen("\"kind\":\"fact\"", "\"kind\":7", 1),
            Some("data.data[0].rows[0].kind"),
        ),
        (
            text.replacen("memory number 4", "memory number 5", 1),
            Some("orion.checksum"),
        ),
        (
            text.replacen(
                "{\"id\":\"m000002\"",
                "{\"__proto__\":1,\"id\":\"m000002\"",
                1,
            ),
            None,
        ),
        (String::new(), None),
    ];
    variants.push((
        text.replacen("\"formatName\":\"dexie\"", "\"formatName\":\"x\"", 1),
        None,
    ));
    for (variant, path) in variants {
        for options in [RestoreOptions::default(), CLEAR] {
            let error = block_on(target.import(&variant, options, &memories, &|_| {})).unwrap_err();
            match (&error, path) {
                (Error::BackupInvalid { path: got, .. }, Some(path)) => assert_eq!(got, path),
                (Error::BackupInvalid { .. }, None) => {}
                (other, _) => panic!("{other:?}"),
            }
            unchanged("bad file");
        }
    }

    // A valid file, but the store refuses the transaction (quota) midway through the import.
    store.set_max_rows(Some(
        before.iter().map(|(_, rows)| rows.len()).sum::<usize>() + 3,
    ));
    for options in [RestoreOptions::default(), CLEAR] {
        let error = block_on(target.import(&text, options, &memories, &|_| {})).unwrap_err();
        assert_eq!(error.code(), crate::error::ErrorCode::Quota);
        unchanged("quota");
    }
    store.set_max_rows(None);

    // Over the budget: refused before anything is written.
    let small = MemoryConfig {
        max_memories: 10,
        ..MemoryConfig::for_profile(Profile::Full)
    };
    let tight = block_on(Memories::load(
        store.clone(),
        clock.shared(),
        small,
        model(),
        12,
        &|_| {},
    ))
    .unwrap();
    let error = block_on(target.import(&text, CLEAR, &tight, &|_| {})).unwrap_err();
    assert!(
        matches!(&error, Error::InvalidInput { field, .. } if field == "memories"),
        "{error:?}"
    );
    unchanged("budget");

    let report = block_on(target.import(&text, CLEAR, &memories, &|_| {})).unwrap();
    assert_eq!(report.restored, 20);
}

#[test]
fn settings_resolve_to_a_config_and_a_schedule_and_refuse_out_of_range_values() {
    let (config, auto) = BackupSettings::default().resolve().unwrap();
    assert_eq!(config, BackupConfig::default());
    assert_eq!(auto, Some(AutoBackups::default()));
    let settings = BackupSettings {
        automatic: None,
        first_after_ms: Some(0),
        every_ms: Some(60_000),
        keep_auto: Some(100),
    };
    let (config, auto) = settings.resolve().unwrap();
    assert_eq!(config.keep_auto, 100);
    assert_eq!(
        auto,
        Some(AutoBackups {
            first_after_ms: 0,
            every_ms: 60_000
        })
    );
    let off = BackupSettings {
        automatic: Some(false),
        ..BackupSettings::default()
    };
    assert_eq!(off.resolve().unwrap().1, None);
    let too_often = BackupSettings {
        every_ms: Some(59_999),
        ..BackupSettings::default()
    };
    assert!(matches!(
        too_often.resolve(),
        Err(Error::InvalidInput { field, .. }) if field == "backups.everyMs"
    ));
}

#[test]
fn stats_count_sizes_and_dates_and_a_smaller_retention_keeps_fewer() {
    let clock = ManualClock::new(1_000);
    let store = Rc::new(MemStore::new());
    let rows: Vec<WriteOp> = (0..3)
        .map(|n| WriteOp::Put(Table::Memories, memory(n)))
        .collect();
    block_on(store.write(rows)).unwrap();
    let config = BackupConfig {
        keep_auto: 2,
        ..BackupConfig::default()
    };
    let manager = BackupManager::new(store, clock.shared(), config, 7);
    let manual = block_on(manager.create(BackupKind::Manual, None, &model())).unwrap();
    let mut autos = Vec::new();
    for _ in 0..4 {
        clock.advance(1_000);
        autos.push(block_on(manager.create(BackupKind::Auto, None, &model())).unwrap());
    }
    let stats = block_on(manager.stats()).unwrap();
    // The two newest automatic backups are the ones kept.
    let kept: Vec<String> = block_on(manager.list())
        .unwrap()
        .into_iter()
        .filter(|info| info.kind == BackupKind::Auto)
        .map(|info| info.id)
        .collect();
    assert_eq!(kept, [autos[3].id.clone(), autos[2].id.clone()]);
    assert_eq!(
        stats,
        BackupStats {
            count: 3,
            auto: 2,
            manual: 1,
            bytes: manual.bytes + autos[3].bytes + autos[2].bytes,
            newest_at: Some(5_000),
            oldest_at: Some(1_000),
            keep_auto: 2,
        }
    );
}

/// A store that records, at each snapshot read, how many backups are counted as being taken.
struct Watching {
    inner: Rc<MemStore>,
    taking: Rc<Cell<u32>>,
    seen: RefCell<Vec<u32>>,
}

impl Store for Watching {
    fn get(
        &self,
        table: Table,
        ids: Vec<String>,
    ) -> crate::embedding::LocalBoxFuture<'_, Result<Vec<Option<Row>>>> {
        self.inner.get(table, ids)
    }
    fn scan(
        &self,
        table: Table,
        scan: Scan,
    ) -> crate::embedding::LocalBoxFuture<'_, Result<Vec<Row>>> {
        self.inner.scan(table, scan)
    }
    fn count(&self, table: Table) -> crate::embedding::LocalBoxFuture<'_, Result<u64>> {
        self.inner.count(table)
    }
    fn write(&self, ops: Vec<WriteOp>) -> crate::embedding::LocalBoxFuture<'_, Result<()>> {
        self.inner.write(ops)
    }
    fn patch(
        &self,
        table: Table,
        patches: Vec<(String, serde_json::Map<String, Value>)>,
    ) -> crate::embedding::LocalBoxFuture<'_, Result<()>> {
        self.inner.patch(table, patches)
    }
    fn snapshot(
        &self,
        tables: Vec<Table>,
    ) -> crate::embedding::LocalBoxFuture<'_, Result<crate::store::Snapshot>> {
        self.inner.snapshot(tables)
    }
    fn visit_snapshot<'a>(
        &'a self,
        table: Table,
        chunk: usize,
        visitor: &'a mut dyn SnapshotVisitor,
    ) -> crate::embedding::LocalBoxFuture<'a, Result<()>> {
        self.seen.borrow_mut().push(self.taking.get());
        self.inner.visit_snapshot(table, chunk, visitor)
    }
}

#[test]
fn a_backup_is_counted_as_being_taken_while_it_reads_the_memories() {
    let (clock, inner, _) = setup(30);
    let taking = Rc::new(Cell::new(0));
    let store = Rc::new(Watching {
        inner,
        taking: Rc::clone(&taking),
        seen: RefCell::new(Vec::new()),
    });
    let manager = BackupManager::new(store.clone(), clock.shared(), BackupConfig::default(), 7)
        .counting_backups_in(Rc::clone(&taking));
    block_on(manager.create(BackupKind::Auto, None, &model())).unwrap();
    block_on(manager.export_current(&model(), &mut |_| Ok(()), &|_, _| {})).unwrap();
    // A failing sink ends the export; the count still comes back down.
    let failed = block_on(manager.export_current(
        &model(),
        &mut |_| Err(Error::Store("the page is gone".into())),
        &|_, _| {},
    ));
    assert!(matches!(failed, Err(Error::Store(_))));
    assert_eq!(*store.seen.borrow(), [1, 1, 1]);
    assert_eq!(taking.get(), 0);
}

/// Rows in all tables of `store`.
fn rows_in(store: &MemStore) -> usize {
    [Table::Memories, Table::Backups]
        .into_iter()
        .map(|table| block_on(store.count(table)).unwrap() as usize)
        .sum()
}

#[test]
fn a_write_out_of_quota_deletes_the_oldest_automatic_backups_and_is_tried_once_more() {
    let (clock, store, manager) = setup(3);
    let manager = Rc::new(manager);
    let relief = Rc::clone(&manager);
    store.set_quota_relief(Rc::new(move || {
        let manager = Rc::clone(&relief);
        Box::pin(async move { manager.free_space().await })
    }));
    let manual =
        block_on(manager.create(BackupKind::Manual, Some("mine".into()), &model())).unwrap();
    let mut autos = Vec::new();
    for _ in 0..3 {
        clock.advance(3_600_000);
        autos.push(block_on(manager.create(BackupKind::Auto, None, &model())).unwrap());
    }
    // Room for one more row; three new memories do not fit until two old backups are gone.
    store.set_max_rows(Some(rows_in(&store) + 1));
    let new: Vec<WriteOp> = (10..13)
        .map(|n| WriteOp::Put(Table::Memories, memory(n)))
        .collect();
    block_on(store.write(new)).unwrap();
    assert_eq!(block_on(store.count(Table::Memories)).unwrap(), 6);
    let kept = listed_ids(&manager);
    assert_eq!(
        kept,
        [autos[2].id.clone(), manual.id.clone()],
        "the newest automatic one and the manual one"
    );

    // Still too large: ERR_QUOTA, and nothing else is lost.
    store.set_max_rows(Some(rows_in(&store)));
    let error = block_on(store.write(vec![WriteOp::Put(Table::Memories, memory(20))])).unwrap_err();
    assert!(
        matches!(&error, Error::Quota(reason) if reason.contains("no automatic backup to delete")),
        "{error:?}"
    );
    assert_eq!(block_on(store.count(Table::Memories)).unwrap(), 6);
    assert_eq!(block_on(manager.list()).unwrap().len(), 2);
    assert!(block_on(manager.verify(&autos[2].id)).unwrap().valid);

    // Room made, but not enough: tried once more only, and the error says what was deleted.
    store.set_max_rows(None);
    clock.advance(3_600_000);
    let newest = block_on(manager.create(BackupKind::Auto, None, &model())).unwrap();
    store.set_max_rows(Some(rows_in(&store) + 1));
    let many: Vec<WriteOp> = (100..150)
        .map(|n| WriteOp::Put(Table::Memories, memory(n)))
        .collect();
    let error = block_on(store.write(many)).unwrap_err();
    assert!(
        matches!(&error, Error::Quota(reason) if reason.contains("still, after deleting 1 automatic backups")),
        "{error:?}"
    );
    assert_eq!(block_on(store.count(Table::Memories)).unwrap(), 6);
    let kept = listed_ids(&manager);
    assert_eq!(kept, [newest.id, manual.id]);
}
