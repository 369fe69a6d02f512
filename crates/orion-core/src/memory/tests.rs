use serde_json::json;

use super::*;
use crate::clock::ManualClock;
use crate::embedding::LocalBoxFuture;
use crate::error::ErrorCode;
use crate::store::conformance::block_on;
use crate::store::{MemStore, Scan};
use crate::testing::WordsEmbedder;

/// The words embedder of these tests: 256 dimensions.
/// Saves `memories`' snapshot, its waits for quiet passing on `clock`.
fn save(memories: &Memories, clock: &ManualClock) {
    let clock = clock.clone();
    let sleep = move |ms: u64| -> LocalBoxFuture<'static, ()> {
        clock.advance(ms);
        Box::pin(async {})
    };
    block_on(memories.save_snapshot(&sleep)).unwrap();
}

fn words(version: &str) -> WordsEmbedder {
    WordsEmbedder::new(version, 256)
}

struct Fixture {
    clock: ManualClock,
    store: Rc<MemStore>,
    embedder: WordsEmbedder,
    memories: Memories,
}

fn config() -> MemoryConfig {
    MemoryConfig {
        max_memories: 100,
        write_chunk: 3,
        load_chunk: 4,
        ..MemoryConfig::for_profile(Profile::Full)
    }
}

fn fixture_with(store: Rc<MemStore>, config: MemoryConfig) -> Fixture {
    let clock = ManualClock::new(1_000_000);
    let embedder = words("words/v1");
    let memories = block_on(Memories::load(
        store.clone(),
        clock.shared(),
        config,
        embedder.info().clone(),
        42,
        &|_| {},
    ))
    .unwrap();
    Fixture {
        clock,
        store,
        embedder,
        memories,
    }
}

fn fixture() -> Fixture {
    fixture_with(Rc::new(MemStore::new()), config())
}

fn new(text: &str, kind: &str) -> NewMemory {
    NewMemory {
        text: text.into(),
        kind: Some(kind.into()),
        meta: None,
    }
}

impl Fixture {
    fn add(&self, text: &str, kind: &str) -> MemoryRecord {
        block_on(self.memories.add(&self.embedder, new(text, kind))).unwrap()
    }

    fn search(&self, query: &str, k: u64, kind: Option<&str>) -> Vec<SearchHit> {
        block_on(self.memories.search(&self.embedder, query, k, 0.0, kind)).unwrap()
    }

    fn count(&self) -> u64 {
        block_on(self.store.count(Table::Memories)).unwrap()
    }
}

fn texts(hits: &[SearchHit]) -> Vec<&str> {
    hits.iter().map(|h| h.text.as_str()).collect()
}

#[test]
fn add_stores_the_vector_with_its_version_and_get_reads_it_back() {
    let f = fixture();
    let record = block_on(f.memories.add(
        &f.embedder,
        NewMemory {
            text: "the cat sat on the mat".into(),
            kind: None,
            meta: Some(json!({"source": "test", "n": 1})),
        },
    ))
    .unwrap();
    assert_eq!(record.kind, MemoryKind::Fact, "the default kind");
    assert_eq!(record.created_at, 1_000_000);
    assert_eq!(record.embedding_version, "words/v1");
    assert!(record.id.starts_with('m') && record.id.len() == 30);
    let row = block_on(f.store.get(Table::Memories, vec![record.id.clone()]))
        .unwrap()
        .pop()
        .flatten()
        .unwrap();
    assert_eq!(row.vector_field("embedding").unwrap().len(), 256);
    assert!(!row.fields.contains_key("embedding"), "never a JSON array");
    let back = block_on(f.memories.get(&record.id)).unwrap().unwrap();
    assert_eq!(back, record);
    assert_eq!(back.meta, json!({"source": "test", "n": 1}));
    assert_eq!(block_on(f.memories.get("mnope")).unwrap(), None);
}

#[test]
fn search_ranks_by_meaning_filters_and_touches_its_hits() {
    let f = fixture();
    let cat = f.add("the cat sat on the mat", "fact");
    f.add("stock prices fell sharply today", "conversation");
    f.add("a cat chased the dog", "conversation");
    f.clock.advance(5_000);
    let hits = f.search("cat on a mat", 2, None);
    assert_eq!(
        texts(&hits),
        ["the cat sat on the mat", "a cat chased the dog"]
    );
    assert!(hits[0].similarity > hits[1].similarity);
    let only_conversation = f.search("cat on a mat", 5, Some("conversation"));
    assert!(only_conversation
        .iter()
        .all(|h| h.kind == MemoryKind::Conversation));
    assert_eq!(only_conversation[0].text, "a cat chased the dog");
    let strict = block_on(
        f.memories
            .search(&f.embedder, "cat on a mat", 5, 0.99, None),
    )
    .unwrap();
    assert!(strict.is_empty(), "{strict:?}");
    let before_flush = block_on(f.memories.get(&cat.id)).unwrap().unwrap();
    assert_eq!(
        before_flush.last_accessed, 1_000_000,
        "written after the answer"
    );
    block_on(f.memories.flush_touches()).unwrap();
    let touched = block_on(f.memories.get(&cat.id)).unwrap().unwrap();
    assert_eq!(touched.last_accessed, 1_005_000);
    // A hit deleted before its time is written is not brought back.
    f.clock.advance(1_000);
    f.search("cat on a mat", 1, None);
    block_on(
        f.store
            .write(vec![WriteOp::Delete(Table::Memories, cat.id.clone())]),
    )
    .unwrap();
    block_on(f.memories.flush_touches()).unwrap();
    assert_eq!(block_on(f.memories.get(&cat.id)).unwrap(), None);
    assert_eq!(touched.created_at, 1_000_000);
}

#[test]
fn touches_are_written_once_per_batch_of_searches() {
    let f = fixture();
    let cat = f.add("the cat sat on the mat", "fact");
    assert!(!f.memories.schedule_flush(), "nothing touched yet");
    f.clock.advance(10);
    f.search("cat", 1, None);
    assert!(f.memories.schedule_flush());
    f.clock.advance(10);
    f.search("cat on the mat", 1, None);
    assert!(!f.memories.schedule_flush(), "already scheduled");
    block_on(f.memories.flush_touches()).unwrap();
    let stored = block_on(f.memories.get(&cat.id)).unwrap().unwrap();
    assert_eq!(
        stored.last_accessed,
        cat.created_at + 20,
        "the later search's time"
    );
    assert!(!f.memories.schedule_flush(), "all written");
    f.search("cat", 1, None);
    assert!(f.memories.schedule_flush(), "a new batch");
}

#[test]
fn bad_input_is_a_typed_error_naming_the_field_and_writes_nothing() {
    let f = fixture();
    let writes = f.store.committed_writes();
    let long = "x".repeat(64 * 1024 + 1);
    let cases: Vec<(NewMemory, &str)> = vec![
        (new("", "fact"), "text"),
        (new(" \n\t ", "fact"), "text"),
        (new(&long, "fact"), "text"),
        (new("ok", "secret"), "kind"),
        (
            NewMemory {
                meta: Some(json!([1, 2])),
                ..new("ok", "fact")
            },
            "meta",
        ),
        (
            NewMemory {
                meta: Some(json!({"big": "y".repeat(20_000)})),
                ..new("ok", "fact")
            },
            "meta",
        ),
    ];
    for (memory, field) in cases {
        let error = block_on(f.memories.add(&f.embedder, memory)).unwrap_err();
        assert_eq!(error.code(), ErrorCode::InvalidInput, "{error}");
        assert!(
            matches!(&error, Error::InvalidInput { field: got, .. } if got == field),
            "{error}"
        );
    }
    for k in [0, 101, 1_000_000_000] {
        let error = block_on(f.memories.search(&f.embedder, "q", k, 0.0, None)).unwrap_err();
        assert!(matches!(&error, Error::InvalidInput { field, .. } if field == "k"));
    }
    let error = block_on(f.memories.search(&f.embedder, "q", 3, 2.0, None)).unwrap_err();
    assert!(matches!(&error, Error::InvalidInput { field, .. } if field == "minSimilarity"));
    let error = block_on(f.memories.search(&f.embedder, " ", 3, 0.0, None)).unwrap_err();
    assert!(matches!(&error, Error::InvalidInput { field, .. } if field == "query"));
    let error = block_on(f.memories.list(Some("nope"), 10, None)).unwrap_err();
    assert!(matches!(&error, Error::InvalidInput { field, .. } if field == "kind"));
    let error = block_on(f.memories.list(None, 0, None)).unwrap_err();
    assert!(matches!(&error, Error::InvalidInput { field, .. } if field == "limit"));
    assert_eq!(f.store.committed_writes(), writes);
    assert_eq!(f.count(), 0);
}

#[test]
fn add_many_validates_everything_first_then_writes_one_transaction_per_chunk() {
    let f = fixture();
    let mut items: Vec<NewMemory> = (0..10)
        .map(|i| new(&format!("memory number {i}"), "fact"))
        .collect();
    items[7].text = String::new();
    let error = block_on(f.memories.add_many(&f.embedder, items.clone(), &|_, _| {})).unwrap_err();
    assert!(matches!(&error, Error::InvalidInput { field, .. } if field == "items[7].text"));
    assert_eq!(f.count(), 0);
    assert_eq!(f.embedder.calls(), 0, "nothing embedded either");

    items[7].text = "memory number 7".into();
    let writes = f.store.committed_writes();
    let progress = RefCell::new(Vec::new());
    let records = block_on(f.memories.add_many(&f.embedder, items, &|done, total| {
        progress.borrow_mut().push((done, total));
    }))
    .unwrap();
    assert_eq!(records.len(), 10);
    assert_eq!(f.store.committed_writes() - writes, 4, "chunks of 3");
    assert_eq!(*progress.borrow(), [(3, 10), (6, 10), (9, 10), (10, 10)]);
    let mut ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
    let in_order = ids.clone();
    ids.sort_unstable();
    assert_eq!(ids, in_order, "ids sort in creation order");
    ids.dedup();
    assert_eq!(ids.len(), 10);
}

#[test]
fn tool_results_expire_after_24_hours() {
    let f = fixture();
    let tool = f.add("weather in paris is sunny", "tool_result");
    let fact = f.add("paris is the capital of france", "fact");
    f.clock.advance(TOOL_RESULT_TTL_MS - 1);
    assert_eq!(f.search("paris", 5, None).len(), 2);
    f.clock.advance(1);
    assert_eq!(texts(&f.search("paris", 5, None)), [fact.text.as_str()]);
    assert_eq!(block_on(f.memories.get(&tool.id)).unwrap(), None);
    let page = block_on(f.memories.list(None, 10, None)).unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(f.memories.stats().count, 1);
    assert_eq!(f.count(), 2, "deleted with the next write");
    f.add("another fact", "fact");
    assert_eq!(f.count(), 2);
    assert!(block_on(f.store.get(Table::Memories, vec![tool.id]))
        .unwrap()
        .pop()
        .flatten()
        .is_none());
}

#[test]
fn expired_memories_are_deleted_when_the_index_loads() {
    let f = fixture();
    f.add("old tool output", "tool_result");
    f.add("a fact", "fact");
    let store = f.store.clone();
    drop(f);
    let clock = ManualClock::new(1_000_000 + TOOL_RESULT_TTL_MS);
    let embedder = words("words/v1");
    let memories = block_on(Memories::load(
        store.clone(),
        clock.shared(),
        config(),
        embedder.info().clone(),
        1,
        &|_| {},
    ))
    .unwrap();
    assert_eq!(memories.stats().count, 1);
    assert_eq!(block_on(store.count(Table::Memories)).unwrap(), 1);
}

#[test]
fn past_the_budget_the_least_recently_used_are_evicted() {
    let f = fixture_with(
        Rc::new(MemStore::new()),
        MemoryConfig {
            max_memories: 4,
            ..config()
        },
    );
    let mut ids = Vec::new();
    for word in ["alpha", "bravo", "charlie", "delta"] {
        ids.push(f.add(word, "fact").id);
        f.clock.advance(10);
    }
    // alpha and charlie are used again; bravo and delta are the least recently used.
    assert_eq!(texts(&f.search("alpha", 1, None)), ["alpha"]);
    assert_eq!(texts(&f.search("charlie", 1, None)), ["charlie"]);
    f.clock.advance(10);
    let added = block_on(f.memories.add_many(
        &f.embedder,
        vec![new("echo", "fact"), new("foxtrot", "fact")],
        &|_, _| {},
    ))
    .unwrap();
    assert_eq!(added.len(), 2);
    assert_eq!(f.count(), 4);
    let left: Vec<String> = block_on(f.memories.list(None, 10, None))
        .unwrap()
        .items
        .into_iter()
        .map(|r| r.text)
        .collect();
    assert_eq!(left, ["alpha", "charlie", "echo", "foxtrot"]);
    assert_eq!(f.memories.stats().count, 4);
}

#[test]
fn a_quota_error_changes_nothing() {
    let f = fixture();
    f.add("first", "fact");
    f.store.set_max_rows(Some(2));
    let error = block_on(f.memories.add_many(
        &f.embedder,
        vec![new("second", "fact"), new("third", "fact")],
        &|_, _| {},
    ))
    .unwrap_err();
    assert_eq!(error.code(), ErrorCode::Quota);
    assert_eq!(f.count(), 1);
    assert_eq!(f.memories.stats().count, 1);
    assert_eq!(texts(&f.search("second third", 5, None)), ["first"]);
}

#[test]
fn the_index_loads_in_chunks_and_skips_other_versions_and_broken_rows() {
    let store = Rc::new(MemStore::new());
    let old = fixture_with(store.clone(), config());
    for i in 0..6 {
        old.add(&format!("old memory {i}"), "fact");
    }
    // Rows of another embedder version, and one another program broke.
    let other = words("words/v0");
    let other_memories = block_on(Memories::load(
        store.clone(),
        old.clock.shared(),
        config(),
        other.info().clone(),
        7,
        &|_| {},
    ))
    .unwrap();
    block_on(other_memories.add(&other, new("older memory", "fact"))).unwrap();
    block_on(store.write(vec![WriteOp::Put(
        Table::Memories,
        Row::new("broken").with("text", 3),
    )]))
    .unwrap();
    let progress = RefCell::new(Vec::new());
    let memories = block_on(Memories::load(
        store.clone(),
        old.clock.shared(),
        config(),
        old.embedder.info().clone(),
        9,
        &|loaded| progress.borrow_mut().push(loaded),
    ))
    .unwrap();
    assert_eq!(*progress.borrow(), [4, 8]);
    let stats = memories.stats();
    assert_eq!(stats.count, 7);
    assert_eq!(stats.searchable, 6);
    assert_eq!(stats.other_versions, 1);
    let hits = block_on(memories.search(&old.embedder, "older memory", 10, -1.0, None)).unwrap();
    assert_eq!(hits.len(), 6, "the v0 vector is never compared");
    assert!(hits.iter().all(|h| h.text.starts_with("old memory")));
}

#[test]
fn list_pages_by_kind_and_purge_deletes() {
    let f = fixture();
    for i in 0..7 {
        let kind = if i % 2 == 0 { "fact" } else { "feedback" };
        f.add(&format!("item {i}"), kind);
    }
    let first = block_on(f.memories.list(Some("fact"), 2, None)).unwrap();
    assert_eq!(first.items.len(), 2);
    let second = block_on(f.memories.list(Some("fact"), 2, first.next.clone())).unwrap();
    assert_eq!(second.next, None, "a full last page says it is the last");
    let all: Vec<String> = [first, second]
        .into_iter()
        .flat_map(|p| p.items.into_iter().map(|r| r.text))
        .collect();
    assert_eq!(all, ["item 0", "item 2", "item 4", "item 6"]);
    assert_eq!(block_on(f.memories.purge(Some("feedback"))).unwrap(), 3);
    assert_eq!(f.memories.stats().by_kind[&MemoryKind::Feedback], 0);
    assert_eq!(f.count(), 4);
    assert_eq!(block_on(f.memories.purge(None)).unwrap(), 4);
    assert_eq!(f.count(), 0);
    assert!(f.search("item", 5, None).is_empty());
}

#[test]
fn delete_says_whether_it_deleted_and_refresh_picks_up_other_workers() {
    let f = fixture();
    let record = f.add("to be deleted", "fact");
    assert!(block_on(f.memories.delete(&record.id)).unwrap());
    assert!(!block_on(f.memories.delete(&record.id)).unwrap());
    assert!(f.search("deleted", 5, None).is_empty());

    // Another tab's worker on the same database.
    let tab = fixture_with(f.store.clone(), config());
    let theirs = tab.add("written in another tab", "fact");
    assert!(f.search("another tab", 5, None).is_empty());
    let changes = tab.memories.take_changes();
    assert_eq!(changes, std::slice::from_ref(&theirs.id));
    assert!(tab.memories.take_changes().is_empty());
    block_on(f.memories.refresh(changes)).unwrap();
    assert_eq!(
        texts(&f.search("another tab", 5, None)),
        ["written in another tab"]
    );
    block_on(tab.memories.delete(&theirs.id)).unwrap();
    block_on(f.memories.refresh(tab.memories.take_changes())).unwrap();
    assert!(f.search("another tab", 5, None).is_empty());
}

fn reload(store: &Rc<MemStore>, clock: &ManualClock, progress: &RefCell<Vec<usize>>) -> Memories {
    let embedder = words("words/v1");
    block_on(Memories::load(
        store.clone(),
        clock.shared(),
        config(),
        embedder.info().clone(),
        5,
        &|loaded| progress.borrow_mut().push(loaded),
    ))
    .unwrap()
}

/// The saved snapshot's header row of `words/v1`.
fn snapshot_header(store: &MemStore) -> Row {
    block_on(store.get(Table::Meta, vec!["memory-index/words/v1".into()]))
        .unwrap()
        .pop()
        .flatten()
        .unwrap()
}

fn meta_ids(store: &MemStore) -> Vec<String> {
    block_on(store.scan(Table::Meta, Scan::first(10_000)))
        .unwrap()
        .into_iter()
        .map(|row| row.id)
        .collect()
}

#[test]
fn a_saved_snapshot_plus_the_journal_gives_the_same_index() {
    let f = fixture();
    assert!(f.memories.wants_snapshot(), "nothing saved yet");
    assert!(!f.memories.stats().index_saved);
    let items = (0..12)
        .map(|i| new(&format!("snapshot memory {i}"), "fact"))
        .collect();
    let added = block_on(f.memories.add_many(&f.embedder, items, &|_, _| {})).unwrap();
    save(&f.memories, &f.clock);
    assert!(!f.memories.wants_snapshot());
    assert!(f.memories.stats().index_saved);
    let journal: Vec<String> = meta_ids(&f.store)
        .into_iter()
        .filter(|id| id.starts_with("memory-journal/"))
        .collect();
    assert!(
        journal.is_empty(),
        "covered journal rows are deleted: {journal:?}"
    );

    // Changes after the snapshot go to the journal, from this worker and from another.
    block_on(f.memories.delete(&added[3].id)).unwrap();
    let late = f.add("written after the snapshot", "feedback");
    let other = fixture_with(f.store.clone(), config());
    let theirs = other.add("written by another tab", "conversation");
    let expected_stats = {
        block_on(f.memories.refresh(vec![theirs.id.clone()])).unwrap();
        f.memories.stats()
    };

    let progress = RefCell::new(Vec::new());
    let reloaded = reload(&f.store, &f.clock, &progress);
    assert_eq!(*progress.borrow(), [12], "one block, not row by row");
    assert_eq!(reloaded.stats(), expected_stats);
    let embedder = words("words/v1");
    let search = |query: &str| {
        block_on(reloaded.search(&embedder, query, 3, 0.5, None))
            .unwrap()
            .into_iter()
            .map(|hit| hit.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(search("written after the snapshot"), [late.id]);
    assert_eq!(search("written by another tab"), [theirs.id]);
    assert!(!search("snapshot memory 3").contains(&added[3].id));
    assert!(search("snapshot memory 5").contains(&added[5].id));
}

/// Every hit of `query` (id and similarity) among all memories.
fn ranked(memories: &Memories, query: &str) -> Vec<(String, f32)> {
    let embedder = words("words/v1");
    block_on(memories.search(&embedder, query, 100, -1.0, None))
        .unwrap()
        .into_iter()
        .map(|hit| (hit.id, hit.similarity))
        .collect()
}

#[test]
fn a_start_searches_by_the_codes_and_reads_the_exact_vectors_after() {
    let f = fixture();
    let items = (0..40)
        .map(|i| {
            new(
                &format!("note {i} about topic {} and {}", i % 7, i % 5),
                "fact",
            )
        })
        .collect();
    block_on(f.memories.add_many(&f.embedder, items, &|_, _| {})).unwrap();
    save(&f.memories, &f.clock);
    let inexact = |m: &Memories| m.state.borrow().vectors.inexact_keys().len();
    let queries = ["topic 3 and 4", "note 12", "topic 6"];
    let ranks_alike = |reloaded: &Memories| {
        for query in queries {
            assert_eq!(
                ranked(reloaded, query),
                ranked(&f.memories, query),
                "{query}"
            );
        }
    };

    let progress = RefCell::new(Vec::new());
    let reloaded = reload(&f.store, &f.clock, &progress);
    assert_eq!(inexact(&reloaded), 40, "held by their codes alone");
    assert!(
        !reloaded.wants_snapshot(),
        "no save before the vectors are in"
    );
    let top3 = |m: &Memories, query: &str| {
        let embedder = words("words/v1");
        block_on(m.search(&embedder, query, 3, -1.0, None))
            .unwrap()
            .into_iter()
            .map(|hit| (hit.id, hit.similarity))
            .collect::<Vec<_>>()
    };
    assert_eq!(top3(&reloaded, queries[0]), top3(&f.memories, queries[0]));
    let filled = 40 - inexact(&reloaded);
    assert!(
        (3..40).contains(&filled),
        "the search read its shortlist's vectors only ({filled})"
    );
    ranks_alike(&reloaded);
    block_on(reloaded.load_exact()).unwrap();
    assert_eq!(inexact(&reloaded), 0);
    ranks_alike(&reloaded);

    // A vectors row gone (a newer snapshot replaced this one): those memories are read from
    // their rows instead.
    let vectors_row = meta_ids(&f.store)
        .into_iter()
        .find(|id| id.ends_with("/vectors"))
        .unwrap();
    block_on(
        f.store
            .write(vec![WriteOp::Delete(Table::Meta, vectors_row)]),
    )
    .unwrap();
    let reloaded = reload(&f.store, &f.clock, &progress);
    block_on(reloaded.load_exact()).unwrap();
    assert_eq!(inexact(&reloaded), 0);
    ranks_alike(&reloaded);

    // A header of an earlier format is not read: the rows are.
    let header = snapshot_header(&f.store);
    block_on(
        f.store
            .write(vec![WriteOp::Put(Table::Meta, header.with("format", 1))]),
    )
    .unwrap();
    let progress = RefCell::new(Vec::new());
    let reloaded = reload(&f.store, &f.clock, &progress);
    assert_eq!(inexact(&reloaded), 0);
    assert_eq!(
        *progress.borrow(),
        (1..=10).map(|n| n * 4).collect::<Vec<_>>()
    );
    assert!(
        reloaded.wants_snapshot(),
        "it saves one of this format next"
    );
}

#[test]
fn a_search_shortlisting_widely_during_a_start_reads_the_vectors_first() {
    let config = MemoryConfig {
        max_memories: 1_000,
        write_chunk: 1_000,
        ..config()
    };
    let f = fixture_with(Rc::new(MemStore::new()), config);
    let items = (0..600)
        .map(|i| new(&format!("memory {i}"), "fact"))
        .collect();
    block_on(f.memories.add_many(&f.embedder, items, &|_, _| {})).unwrap();
    save(&f.memories, &f.clock);
    let reloaded = block_on(Memories::load(
        f.store.clone(),
        f.clock.shared(),
        config,
        f.embedder.info().clone(),
        7,
        &|_| {},
    ))
    .unwrap();
    assert_eq!(reloaded.state.borrow().vectors.inexact_keys().len(), 600);
    // Every memory can be in the top 100 above -1: more than MAX_ROWS_FOR_VECTORS to read.
    let wide = |m: &Memories| {
        block_on(m.search(&f.embedder, "nothing alike", 100, -1.0, None))
            .unwrap()
            .into_iter()
            .map(|hit| (hit.id, hit.similarity))
            .collect::<Vec<_>>()
    };
    assert_eq!(wide(&reloaded), wide(&f.memories));
    assert!(
        reloaded.state.borrow().vectors.is_exact(),
        "the search read the start's vectors"
    );
    block_on(reloaded.load_exact()).unwrap();
    assert_eq!(wide(&reloaded), wide(&f.memories));
}

#[test]
fn a_snapshot_save_yields_to_requests_between_blocks() {
    let f = fixture_with(
        Rc::new(MemStore::new()),
        MemoryConfig {
            max_memories: 2_000,
            write_chunk: 1_000,
            ..config()
        },
    );
    let items = (0..1_200)
        .map(|i| new(&format!("memory {i}"), "fact"))
        .collect();
    block_on(f.memories.add_many(&f.embedder, items, &|_, _| {})).unwrap();
    let blocks = |f: &Fixture| {
        meta_ids(&f.store)
            .iter()
            .filter(|id| id.starts_with("memory-index-block/") && !id.ends_with("/vectors"))
            .count()
    };
    let slept = RefCell::new(Vec::new());

    // A request has just begun: the first block waits until it is SAVE_QUIET_MS old.
    f.clock.advance(SAVE_QUIET_MS - 100);
    f.search("memory 7", 1, None);
    let sleep = |ms: u64| -> LocalBoxFuture<'static, ()> {
        slept.borrow_mut().push(ms);
        f.clock.advance(ms);
        Box::pin(async {})
    };
    block_on(f.memories.save_snapshot(&sleep)).unwrap();
    assert_eq!(blocks(&f), 3);
    assert_eq!(
        *slept.borrow(),
        [SAVE_QUIET_MS],
        "then quiet: no more waits"
    );

    // Requests never stop: each block waits SAVE_MAX_WAIT_MS at most, then goes ahead.
    slept.borrow_mut().clear();
    let busy = |ms: u64| -> LocalBoxFuture<'static, ()> {
        slept.borrow_mut().push(ms);
        f.clock.advance(ms);
        f.memories.begin_request();
        Box::pin(async {})
    };
    f.memories.begin_request();
    block_on(f.memories.save_snapshot(&busy)).unwrap();
    assert_eq!(blocks(&f), 3, "the new snapshot replaced the old one");
    let waited: u64 = slept.borrow().iter().sum();
    assert_eq!(waited, 3 * SAVE_MAX_WAIT_MS);
}

#[test]
fn writes_made_while_a_snapshot_is_saved_still_count_towards_the_next() {
    let store = Rc::new(MemStore::new());
    let clock = ManualClock::new(1_000_000);
    let e = words("words/v1");
    let config = MemoryConfig {
        max_memories: 10_000,
        write_chunk: 1_000,
        ..config()
    };
    let memories = Rc::new(
        block_on(Memories::load(
            store.clone(),
            clock.shared(),
            config,
            e.info().clone(),
            42,
            &|_| {},
        ))
        .unwrap(),
    );
    let items = |from: usize, n: usize| {
        (from..from + n)
            .map(|i| new(&format!("memory {i}"), "fact"))
            .collect::<Vec<_>>()
    };
    block_on(memories.add_many(&e, items(0, 600), &|_, _| {})).unwrap();
    // While the save waits for quiet before a block, a bulk write comes in.
    let written = Rc::new(Cell::new(false));
    let sleep = {
        let (memories, clock, written) = (Rc::clone(&memories), clock.clone(), written.clone());
        move |ms: u64| -> LocalBoxFuture<'static, ()> {
            clock.advance(ms);
            let memories = Rc::clone(&memories);
            let first = !written.replace(true);
            Box::pin(async move {
                if first {
                    let e = words("words/v1");
                    let late = items(600, snapshot::JOURNAL_LIMIT + 1);
                    memories.add_many(&e, late, &|_, _| {}).await.unwrap();
                }
            })
        }
    };
    memories.begin_request();
    block_on(memories.save_snapshot(&sleep)).unwrap();
    assert!(written.get());
    assert!(
        !memories.stats().index_saved,
        "the snapshot misses the late write's {} memories",
        snapshot::JOURNAL_LIMIT + 1
    );
    assert!(memories.wants_snapshot());
    save(&memories, &clock);
    assert!(memories.stats().index_saved);
}

#[test]
fn a_snapshot_takes_in_other_workers_journaled_writes_it_was_not_told_of() {
    let f = fixture();
    // The fixtures share a seed: a different time keeps this worker's ids apart from the other's.
    f.clock.advance(1);
    let mine = f.add("written here", "fact");
    let other = fixture_with(f.store.clone(), config());
    let theirs = other.add("written by another tab unannounced", "conversation");
    assert_eq!(f.memories.stats().count, 1, "not told of the other write");

    save(&f.memories, &f.clock);
    assert_eq!(f.memories.stats().count, 2);
    let embedder = words("words/v1");
    let found = block_on(
        f.memories
            .search(&embedder, "another tab unannounced", 1, 0.5, None),
    )
    .unwrap();
    assert_eq!(found.first().map(|hit| &hit.id), Some(&theirs.id));

    let progress = RefCell::new(Vec::new());
    let reloaded = reload(&f.store, &f.clock, &progress);
    assert_eq!(reloaded.stats().count, 2);
    assert!(block_on(reloaded.get(&mine.id)).unwrap().is_some());
}

#[test]
fn a_broken_snapshot_falls_back_to_reading_every_row() {
    let f = fixture();
    for i in 0..5 {
        f.add(&format!("note {i}"), "fact");
    }
    save(&f.memories, &f.clock);
    let block = meta_ids(&f.store)
        .into_iter()
        .find(|id| id.starts_with("memory-index-block/"))
        .unwrap();
    block_on(f.store.write(vec![WriteOp::Put(
        Table::Meta,
        Row::new(block).with("ids", json!(["only one"])),
    )]))
    .unwrap();
    let progress = RefCell::new(Vec::new());
    let reloaded = reload(&f.store, &f.clock, &progress);
    assert_eq!(reloaded.stats().count, 5);
    assert!(reloaded.wants_snapshot(), "it saves a good one next");
}

#[test]
fn purging_everything_drops_the_snapshot_and_many_changes_ask_for_a_new_one() {
    let f = fixture();
    f.add("to be purged", "fact");
    save(&f.memories, &f.clock);
    block_on(f.memories.purge(None)).unwrap();
    let progress = RefCell::new(Vec::new());
    let reloaded = reload(&f.store, &f.clock, &progress);
    assert_eq!(reloaded.stats().count, 0);
    assert!(!meta_ids(&f.store)
        .iter()
        .any(|id| id == "memory-index/words/v1"));

    let f = fixture_with(
        Rc::new(MemStore::new()),
        MemoryConfig {
            write_chunk: 1000,
            ..config()
        },
    );
    save(&f.memories, &f.clock);
    let items: Vec<NewMemory> = (0..snapshot::JOURNAL_LIMIT + 1)
        .map(|i| new(&format!("bulk {i}"), "fact"))
        .collect();
    assert!(!f.memories.wants_snapshot());
    block_on(f.memories.add_many(&f.embedder, items, &|_, _| {})).unwrap();
    assert!(f.memories.wants_snapshot());
}

#[test]
fn a_snapshot_replaces_every_other_one_since_it_consumes_the_journal() {
    let f = fixture();
    f.add("shared memory", "fact");
    save(&f.memories, &f.clock);
    // A worker of another embedder version snapshots the same table.
    let v2 = words("words/v2");
    let other = block_on(Memories::load(
        f.store.clone(),
        f.clock.shared(),
        config(),
        v2.info().clone(),
        3,
        &|_| {},
    ))
    .unwrap();
    save(&other, &f.clock);
    let snapshots: Vec<String> = meta_ids(&f.store)
        .into_iter()
        .filter(|id| id.starts_with("memory-index"))
        .collect();
    assert!(
        snapshots.iter().all(|id| id.contains("words/v2")),
        "{snapshots:?}"
    );
    // The first version's next start reads the rows, and a delete since is not missed.
    f.add("added later", "fact");
    let progress = RefCell::new(Vec::new());
    let reloaded = reload(&f.store, &f.clock, &progress);
    assert_eq!(reloaded.stats().count, 2);
    assert_eq!(
        *progress.borrow(),
        [2],
        "no snapshot of its version: row by row"
    );
}

// ---- restore ----

fn everything(store: &MemStore) -> crate::store::Snapshot {
    block_on(store.snapshot(Table::ALL.to_vec())).unwrap()
}

/// A memory row as a backup holds it, embedded by `embedder`.
fn backup_row(embedder: &WordsEmbedder, id: &str, text: &str, kind: &str, at: u64) -> Row {
    let vector = block_on(embedder.embed(&[text])).unwrap().pop().unwrap();
    Row::new(id)
        .with("text", text)
        .with("kind", kind)
        .with("createdAt", at)
        .with("lastAccessed", at)
        .with("embeddingVersion", embedder.info().version.clone())
        .with("meta", json!({"from": "backup"}))
        .with_vector(EMBEDDING, vector)
}

fn restore(f: &Fixture, rows: Vec<Row>, options: RestoreOptions) -> Result<RestoreReport> {
    block_on(f.memories.restore(rows, options, &|_| {}))
}

fn ids_of(hits: &[SearchHit]) -> Vec<&str> {
    hits.iter().map(|h| h.id.as_str()).collect()
}

const CLEAR: RestoreOptions = RestoreOptions {
    clear_existing: true,
    on_conflict: OnConflict::Skip,
};

#[test]
fn restore_options_parse_with_typed_errors_naming_the_field() {
    assert_eq!(
        RestoreOptions::parse(&Value::Null, "options").unwrap(),
        RestoreOptions::default()
    );
    let parsed = RestoreOptions::parse(
        &json!({"clearExisting": true, "onConflict": "overwrite"}),
        "options",
    )
    .unwrap();
    assert!(parsed.clear_existing);
    assert_eq!(parsed.on_conflict, OnConflict::Overwrite);
    for (value, field) in [
        (json!({"clearExisting": "yes"}), "options.clearExisting"),
        (json!({"onConflict": "merge"}), "options.onConflict"),
        (json!({"onConflict": 1}), "options.onConflict"),
        (json!({"clear": true}), "options.clear"),
        (json!([true]), "options"),
    ] {
        match RestoreOptions::parse(&value, "options").unwrap_err() {
            Error::InvalidInput { field: f, .. } => assert_eq!(f, field, "{value}"),
            other => panic!("{value}: {other:?}"),
        }
    }
}

#[test]
fn restore_skips_existing_ids_by_default_and_overwrites_when_asked() {
    let f = fixture();
    let kept = f.add("the cat is called Miso", "fact");
    f.memories.take_changes();
    let backup_embedder = words("words/v1");
    let rows = vec![
        backup_row(
            &backup_embedder,
            &kept.id,
            "the dog is called Rex",
            "fact",
            5,
        ),
        backup_row(
            &backup_embedder,
            "m-restored-1",
            "tea with lemon",
            "conversation",
            6,
        ),
    ];
    let report = restore(&f, rows.clone(), RestoreOptions::default()).unwrap();
    assert_eq!(
        report,
        RestoreReport {
            restored: 1,
            skipped: 1,
            replaced: 0,
            other_versions: 0
        }
    );
    assert_eq!(f.count(), 2);
    assert_eq!(
        block_on(f.memories.get(&kept.id)).unwrap().unwrap().text,
        "the cat is called Miso"
    );
    assert_eq!(
        ids_of(&f.search("tea with lemon", 1, None)),
        ["m-restored-1"]
    );
    assert_eq!(f.memories.stats().count, 2);
    assert_eq!(f.memories.take_changes(), ["m-restored-1"]);

    let report = restore(
        &f,
        rows,
        RestoreOptions {
            clear_existing: false,
            on_conflict: OnConflict::Overwrite,
        },
    )
    .unwrap();
    assert_eq!(
        (report.restored, report.skipped, report.replaced),
        (2, 0, 2)
    );
    assert_eq!(f.count(), 2);
    let replaced = block_on(f.memories.get(&kept.id)).unwrap().unwrap();
    assert_eq!(replaced.text, "the dog is called Rex");
    assert_eq!(replaced.meta, json!({"from": "backup"}));
    assert_eq!(ids_of(&f.search("dog Rex", 1, None)), [kept.id.as_str()]);
    assert!(f
        .search("cat Miso", 2, None)
        .iter()
        .all(|h| h.similarity < 0.5));
}

#[test]
fn restore_with_clear_existing_leaves_exactly_the_backup_and_the_index_follows() {
    let f = fixture();
    let gone = f.add("to be replaced by the backup", "fact");
    save(&f.memories, &f.clock);
    let e = words("words/v1");
    let rows: Vec<Row> = (0..5)
        .map(|i| {
            backup_row(
                &e,
                &format!("m-b{i}"),
                &format!("backed up memory {i}"),
                "fact",
                10,
            )
        })
        .collect();
    let progress = RefCell::new(Vec::new());
    let report = block_on(
        f.memories
            .restore(rows.clone(), CLEAR, &|n| progress.borrow_mut().push(n)),
    )
    .unwrap();
    assert_eq!(report.restored, 5);
    assert_eq!(progress.borrow().last(), Some(&5));
    let stored = block_on(f.store.scan(Table::Memories, Scan::first(100))).unwrap();
    assert_eq!(stored, rows);
    assert_eq!(f.memories.stats().count, 5);
    assert_eq!(f.memories.stats().searchable, 5);
    assert_eq!(ids_of(&f.search("backed up memory 3", 1, None)), ["m-b3"]);
    assert!(block_on(f.memories.get(&gone.id)).unwrap().is_none());
    let changes = f.memories.take_changes();
    assert!(changes.contains(&gone.id) && changes.contains(&"m-b4".to_owned()));
    // The snapshot is gone and a reset row says why; a new start reads every row.
    let meta = meta_ids(&f.store);
    assert!(
        !meta.iter().any(|id| id == "memory-index/words/v1"),
        "{meta:?}"
    );
    assert!(f.memories.wants_snapshot());
    let progress = RefCell::new(Vec::new());
    let reloaded = reload(&f.store, &f.clock, &progress);
    assert_eq!(reloaded.stats(), f.memories.stats());
    // The next snapshot consumes the reset row, and a start from it is right too.
    save(&f.memories, &f.clock);
    assert!(!meta_ids(&f.store)
        .iter()
        .any(|id| id.starts_with("memory-journal/")));
    let reloaded = reload(&f.store, &f.clock, &RefCell::new(Vec::new()));
    assert_eq!(reloaded.stats(), f.memories.stats());
}

#[test]
fn a_snapshot_header_landing_after_a_restore_is_not_trusted() {
    let f = fixture();
    f.add("before the restore", "fact");
    save(&f.memories, &f.clock);
    let header = snapshot_header(&f.store);
    let e = words("words/v1");
    restore(
        &f,
        vec![backup_row(&e, "m-r", "restored one", "fact", 1)],
        CLEAR,
    )
    .unwrap();
    // A snapshot that was being written (in another tab) while the restore committed lands now.
    block_on(f.store.write(vec![WriteOp::Put(Table::Meta, header)])).unwrap();
    let reloaded = reload(&f.store, &f.clock, &RefCell::new(Vec::new()));
    assert_eq!(reloaded.stats().count, 1);
    let hits = block_on(reloaded.search(&e, "restored one", 5, 0.0, None)).unwrap();
    assert_eq!(ids_of(&hits), ["m-r"]);
}

#[test]
fn a_small_restore_is_journaled_and_keeps_the_snapshot() {
    let f = fixture();
    f.add("already here", "fact");
    save(&f.memories, &f.clock);
    let e = words("words/v1");
    restore(
        &f,
        vec![backup_row(&e, "m-small", "a small restore", "feedback", 3)],
        RestoreOptions::default(),
    )
    .unwrap();
    assert!(meta_ids(&f.store)
        .iter()
        .any(|id| id == "memory-index/words/v1"));
    let progress = RefCell::new(Vec::new());
    let reloaded = reload(&f.store, &f.clock, &progress);
    assert_eq!(
        *progress.borrow(),
        [1],
        "the snapshot's one block, then the journal"
    );
    assert_eq!(reloaded.stats(), f.memories.stats());
    let hits = block_on(reloaded.search(&e, "a small restore", 1, 0.0, None)).unwrap();
    assert_eq!(ids_of(&hits), ["m-small"]);
}

#[test]
fn other_workers_follow_a_restore_by_the_published_ids_or_the_reset_row() {
    let f = fixture();
    f.add("old memory", "fact");
    let other = fixture_with(f.store.clone(), config());
    assert_eq!(other.memories.stats().count, 1);
    let e = words("words/v1");
    let rows = (0..3)
        .map(|i| {
            backup_row(
                &e,
                &format!("m-o{i}"),
                &format!("from the backup {i}"),
                "fact",
                9,
            )
        })
        .collect();
    restore(&f, rows, CLEAR).unwrap();
    // Told: it re-reads the published ids.
    block_on(other.memories.refresh(f.memories.take_changes())).unwrap();
    assert_eq!(other.memories.stats(), f.memories.stats());
    // Not told: its next snapshot finds the reset row and re-reads everything.
    let third = fixture_with(f.store.clone(), config());
    restore(
        &f,
        vec![backup_row(&e, "m-o9", "restored while not told", "fact", 9)],
        CLEAR,
    )
    .unwrap();
    assert_eq!(third.memories.stats().count, 3);
    save(&third.memories, &third.clock);
    // What each index holds (whether each has a snapshot of its own differs).
    let held = |memories: &Memories| MemoryStats {
        index_saved: false,
        ..memories.stats()
    };
    assert!(third.memories.stats().index_saved);
    assert_eq!(held(&third.memories), held(&f.memories));
    let reloaded = reload(&f.store, &f.clock, &RefCell::new(Vec::new()));
    assert_eq!(held(&reloaded), held(&f.memories));
}

#[test]
fn restored_memories_of_another_version_are_stored_but_never_searched() {
    let f = fixture();
    let old = words("words/v0");
    let current = words("words/v1");
    let mut odd = backup_row(&old, "m-old", "an old version memory", "fact", 1);
    // Another version may have other dimensions.
    odd.vectors.insert(EMBEDDING.into(), vec![1.0, 0.0]);
    let rows = vec![
        odd,
        backup_row(&current, "m-new", "a current version memory", "fact", 1),
    ];
    let report = restore(&f, rows, RestoreOptions::default()).unwrap();
    assert_eq!((report.restored, report.other_versions), (2, 1));
    let stats = f.memories.stats();
    assert_eq!(
        (stats.count, stats.searchable, stats.other_versions),
        (2, 1, 1)
    );
    assert_eq!(
        ids_of(&f.search("an old version memory", 5, None)),
        ["m-new"]
    );
    let stored = block_on(f.memories.get("m-old")).unwrap().unwrap();
    assert_eq!(stored.embedding_version, "words/v0");
}

#[test]
fn expired_tool_results_are_not_restored() {
    let f = fixture();
    let e = words("words/v1");
    f.clock.advance(2 * TOOL_RESULT_TTL_MS);
    let now = f.clock.shared().now_ms();
    let rows = vec![
        backup_row(&e, "m-stale", "an old tool result", "tool_result", 0),
        backup_row(&e, "m-fresh", "a fresh tool result", "tool_result", now),
    ];
    let report = restore(&f, rows, RestoreOptions::default()).unwrap();
    assert_eq!((report.restored, report.skipped), (1, 1));
    assert_eq!(f.count(), 1);
}

/// A store whose writes fail while `fail` is set, as an aborted IndexedDB transaction does.
struct FailingStore {
    inner: Rc<MemStore>,
    fail: Cell<bool>,
}

impl Store for FailingStore {
    fn get(&self, table: Table, ids: Vec<String>) -> LocalBoxFuture<'_, Result<Vec<Option<Row>>>> {
        self.inner.get(table, ids)
    }
    fn scan(&self, table: Table, scan: Scan) -> LocalBoxFuture<'_, Result<Vec<Row>>> {
        self.inner.scan(table, scan)
    }
    fn count(&self, table: Table) -> LocalBoxFuture<'_, Result<u64>> {
        self.inner.count(table)
    }
    fn write(&self, ops: Vec<WriteOp>) -> LocalBoxFuture<'_, Result<()>> {
        if self.fail.get() {
            return Box::pin(std::future::ready(Err(Error::Store(
                "the transaction aborted".into(),
            ))));
        }
        self.inner.write(ops)
    }
    fn patch(
        &self,
        table: Table,
        patches: Vec<(String, Map<String, Value>)>,
    ) -> LocalBoxFuture<'_, Result<()>> {
        self.inner.patch(table, patches)
    }
    fn snapshot(&self, tables: Vec<Table>) -> LocalBoxFuture<'_, Result<crate::store::Snapshot>> {
        self.inner.snapshot(tables)
    }
}

#[test]
fn every_failed_restore_leaves_the_store_and_the_index_as_they_were() {
    let inner = Rc::new(MemStore::new());
    let store = Rc::new(FailingStore {
        inner: inner.clone(),
        fail: Cell::new(false),
    });
    let clock = ManualClock::new(1_000_000);
    let e = words("words/v1");
    let memories = block_on(Memories::load(
        store.clone(),
        clock.shared(),
        MemoryConfig {
            max_memories: 4,
            ..config()
        },
        e.info().clone(),
        42,
        &|_| {},
    ))
    .unwrap();
    block_on(memories.add(&e, new("kept memory one", "fact"))).unwrap();
    block_on(memories.add(&e, new("kept memory two", "fact"))).unwrap();
    save(&memories, &clock);
    memories.take_changes();
    let good = |n: usize| -> Vec<Row> {
        (0..n)
            .map(|i| {
                backup_row(
                    &e,
                    &format!("m-f{i}"),
                    &format!("failing restore {i}"),
                    "fact",
                    1,
                )
            })
            .collect()
    };
    let before = everything(&inner);
    let stats = memories.stats();
    let check_unchanged = |what: &str| {
        assert_eq!(everything(&inner), before, "{what}");
        assert_eq!(memories.stats(), stats, "{what}");
        assert!(memories.take_changes().is_empty(), "{what}");
        let hits = block_on(memories.search(&e, "failing restore 1", 5, 0.5, None)).unwrap();
        assert!(hits.is_empty(), "{what}");
    };

    let mut long = good(1);
    long[0]
        .fields
        .insert("text".into(), json!("x".repeat(70 * 1024)));
    let mut dims = good(2);
    dims[1].vectors.insert(EMBEDDING.into(), vec![0.5; 3]);
    let mut twice = good(2);
    twice[1].id = twice[0].id.clone();
    let mut kind = good(2);
    kind[1].fields.insert("kind".into(), json!("dream"));
    for (rows, path) in [
        (long, "memories[0].text"),
        (dims, "memories[1].embedding"),
        (twice, "memories[1].id"),
        (kind, "memories[1]."),
    ] {
        for options in [RestoreOptions::default(), CLEAR] {
            match block_on(memories.restore(rows.clone(), options, &|_| {})).unwrap_err() {
                Error::BackupInvalid { path: p, .. } => assert_eq!(p, path),
                other => panic!("{path}: {other:?}"),
            }
            check_unchanged(path);
        }
    }
    // Over the budget (2 stored + 3 new > 4), refused before writing; with clearExisting 5 > 4.
    for options in [RestoreOptions::default(), CLEAR] {
        let rows = if options.clear_existing {
            good(5)
        } else {
            good(3)
        };
        let error = block_on(memories.restore(rows, options, &|_| {})).unwrap_err();
        assert_eq!(error.code(), ErrorCode::InvalidInput);
        assert!(error.to_string().contains("maxMemories"), "{error}");
        check_unchanged("budget");
    }
    // The store refuses the transaction: quota, or an abort.
    for options in [RestoreOptions::default(), CLEAR] {
        inner.set_max_rows(Some(3));
        let error = block_on(memories.restore(good(2), options, &|_| {})).unwrap_err();
        assert_eq!(error.code(), ErrorCode::Quota);
        inner.set_max_rows(None);
        check_unchanged("quota");
        store.fail.set(true);
        let error = block_on(memories.restore(good(2), options, &|_| {})).unwrap_err();
        assert!(matches!(error, Error::Store(_)), "{error:?}");
        store.fail.set(false);
        check_unchanged("abort");
    }
    // And then it works.
    let report = block_on(memories.restore(good(2), RestoreOptions::default(), &|_| {})).unwrap();
    assert_eq!(report.restored, 2);
    assert_eq!(memories.stats().count, 4);
}

#[test]
fn a_search_with_the_query_already_embedded_finds_the_same_hits() {
    let f = fixture();
    f.add("the cat sleeps on the sofa", "fact");
    f.add("stock prices rose today", "fact");
    let query = "where does the cat sleep";
    let by_text = block_on(f.memories.search(&f.embedder, query, 5, 0.0, None)).unwrap();
    let vector = block_on(f.embedder.embed(&[query])).unwrap().remove(0);
    let by_vector = block_on(
        f.memories
            .search_embedded(&f.embedder, query, &vector, 5, 0.0, None),
    )
    .unwrap();
    let ids = |hits: &[SearchHit]| hits.iter().map(|h| h.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&by_vector), ids(&by_text));
    assert_eq!(
        by_vector.first().map(|h| h.text.as_str()),
        Some("the cat sleeps on the sofa")
    );
    let short = block_on(
        f.memories
            .search_embedded(&f.embedder, query, &[1.0], 5, 0.0, None),
    );
    assert_eq!(short.unwrap_err().code(), ErrorCode::Internal);
    let bad_k = block_on(
        f.memories
            .search_embedded(&f.embedder, query, &vector, 0, 0.0, None),
    );
    assert_eq!(bad_k.unwrap_err().code(), ErrorCode::InvalidInput);
}

#[test]
fn memories_of_another_version_are_re_embedded_in_batches_and_a_stop_resumes() {
    // Memories made by `words/v0`, then a start on `words/v1`.
    let old = fixture();
    let v0 = words("words/v0");
    let sentences = [
        "green tea in the morning",
        "the meeting moved to thursday",
        "carol sails on weekends",
        "bob answered the survey",
        "alice prefers green tea",
    ];
    let mut old_memories = Vec::new();
    {
        let memories = block_on(Memories::load(
            old.store.clone(),
            old.clock.shared(),
            config(),
            v0.info().clone(),
            7,
            &|_| {},
        ))
        .unwrap();
        for text in sentences {
            old_memories.push(block_on(memories.add(&v0, new(text, "fact"))).unwrap());
        }
    }
    let f = fixture_with(old.store.clone(), config());
    let stats = f.memories.stats();
    assert_eq!((stats.searchable, stats.other_versions), (0, 5));
    assert!(
        f.search("green tea", 5, None).is_empty(),
        "never compared across versions"
    );

    let first = block_on(f.memories.reembed(&f.embedder, 2)).unwrap();
    assert_eq!(
        first,
        Reembedded {
            migrated: 2,
            remaining: 3
        }
    );
    assert_eq!(f.memories.take_changes().len(), 2, "other tabs are told");
    // A stop here: a new start sees the two batches' worth done, and goes on from there.
    let resumed = fixture_with(old.store.clone(), config());
    assert_eq!(resumed.memories.stats().other_versions, 3);
    let mut batches = vec![];
    loop {
        let step = block_on(resumed.memories.reembed(&resumed.embedder, 2)).unwrap();
        batches.push(step);
        if step.remaining == 0 {
            break;
        }
    }
    assert_eq!(
        batches,
        [
            Reembedded {
                migrated: 2,
                remaining: 1
            },
            Reembedded {
                migrated: 1,
                remaining: 0
            }
        ]
    );
    let stats = resumed.memories.stats();
    assert_eq!((stats.searchable, stats.other_versions), (5, 0));
    // Every memory as it was, with the active version's vector of its text.
    for before in &old_memories {
        let after = block_on(resumed.memories.get(&before.id)).unwrap().unwrap();
        assert_eq!(after.embedding_version, "words/v1");
        assert_eq!(
            (&after.text, after.created_at, &after.meta),
            (&before.text, before.created_at, &before.meta)
        );
        let row = block_on(resumed.store.get(Table::Memories, vec![before.id.clone()])).unwrap();
        let vector = row[0]
            .as_ref()
            .unwrap()
            .vector_field(EMBEDDING)
            .unwrap()
            .to_vec();
        assert_eq!(
            vector,
            block_on(resumed.embedder.embed(&[before.text.as_str()])).unwrap()[0]
        );
    }
    let hits = resumed.search("green tea", 2, None);
    assert_eq!(
        texts(&hits),
        ["alice prefers green tea", "green tea in the morning"]
    );
    assert_eq!(
        block_on(resumed.memories.reembed(&resumed.embedder, 2)).unwrap(),
        Reembedded {
            migrated: 0,
            remaining: 0
        }
    );
}
