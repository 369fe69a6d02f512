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

#[test]
fn a_backup_holds_every_memory_in_parts_and_exports_a_valid_file() {
    let (_, store, manager) = setup(2_500);
    let info =
        block_on(manager.create(BackupKind::Manual, Some("before".into()), &model())).unwrap();
    assert_eq!(info.item_count, 2_500);
    // The opening, three chunks of at most 1000 memories, the header.
    assert_eq!(info.parts, 5);
    assert_eq!(info.label.as_deref(), Some("before"));
    let document = block_on(manager.export(&info.id)).unwrap();
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
        block_on(manager.export(&info.id)),
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
