//! The encrypted index: a model-based test against a `BTreeMap` with crashes through
//! every `FaultyStore` mode, concurrent writers with and without compare-and-swap,
//! attacks (replay, swap, deletion, flipped bytes, rollback) and request counting.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use mailvault::crypto::{AccountKey, RandomSource};
use mailvault::directory::{Directory, MemoryDirectory};
use mailvault::ids::{AccountId, DeploymentId};
use mailvault::index::{Batch, Collection, IndexConfig, IndexStore};
use mailvault::storage::{
    CommitMode, CountingStore, DynStore, Fault, FaultMode, FaultyStore, NoCasStore, RequestKind,
};
use mailvault::Error;
use object_store::{ObjectStoreExt, PutPayload};
use proptest::prelude::*;

/// One account's index on one store, with a shared trusted directory.
#[derive(Clone)]
pub struct Setup {
    store: DynStore,
    mode: CommitMode,
    deployment: DeploymentId,
    account: AccountId,
    key: Arc<AccountKey>,
    directory: Arc<MemoryDirectory>,
}

impl Setup {
    fn new(store: DynStore, mode: CommitMode) -> Self {
        let rng = RandomSource::os();
        Self {
            store,
            mode,
            deployment: DeploymentId::random(&rng),
            account: AccountId::random(&rng),
            key: Arc::new(AccountKey::generate(1, &rng)),
            directory: Arc::new(MemoryDirectory::new()),
        }
    }

    fn index_on(&self, store: DynStore) -> IndexStore {
        IndexStore::with_mode(store, self.deployment, self.directory.clone(), self.mode)
    }

    async fn open(&self, name: &[u8]) -> mailvault::Result<Collection> {
        self.index_on(self.store.clone())
            .open(self.account, &self.key, name)
            .await
    }
}

fn memory() -> DynStore {
    super::memory()
}

fn no_cas() -> DynStore {
    Arc::new(NoCasStore::new(super::memory()))
}

fn contents(c: &Collection) -> BTreeMap<Vec<u8>, Vec<u8>> {
    c.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect()
}

fn batch_of(ops: &[(u8, Option<u8>)]) -> Batch {
    let mut batch = Batch::new();
    for (k, v) in ops {
        let key = format!("key-{k:03}").into_bytes();
        match v {
            Some(v) => batch.put(key, vec![*v; 1 + (*v as usize % 7)]),
            None => batch.delete(key),
        };
    }
    batch
}

fn apply(model: &mut BTreeMap<Vec<u8>, Vec<u8>>, batch: &Batch) {
    for (k, v) in batch.iter() {
        match v {
            Some(v) => model.insert(k.to_vec(), v.to_vec()),
            None => model.remove(&k[..]),
        };
    }
}

#[tokio::test]
async fn commit_reopen_and_read() {
    for (store, mode) in [
        (memory(), CommitMode::CompareAndSwap),
        (no_cas(), CommitMode::WriterUnique),
    ] {
        let setup = Setup::new(store, mode);
        let mut c = setup.open(b"flags").await.unwrap();
        assert!(c.is_empty());
        let mut batch = Batch::new();
        batch
            .put(&b"a"[..], &b"1"[..])
            .put(&b"b"[..], &b"2"[..])
            .put(&b"c"[..], &b"3"[..]);
        let info = c.commit(batch).await.unwrap();
        assert_eq!(info.generation, 1);
        let mut batch = Batch::new();
        batch.delete(&b"b"[..]);
        c.commit(batch).await.unwrap();
        let reopened = setup.open(b"flags").await.unwrap();
        assert_eq!(reopened.generation(), 2);
        assert_eq!(reopened.len(), 2);
        assert_eq!(reopened.get(b"a").unwrap(), b"1");
        assert!(reopened.get(b"b").is_none());
        let keys: Vec<_> = reopened
            .range(
                std::ops::Bound::Included(&b"b"[..]),
                std::ops::Bound::Unbounded,
            )
            .map(|(k, _)| k.to_vec())
            .collect();
        assert_eq!(keys, vec![b"c".to_vec()]);
        // Another collection of the same account is separate.
        assert!(setup.open(b"other").await.unwrap().is_empty());
        // Changes since generation 1: the deletion of b.
        let changes = reopened.changes_since(1).unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].key.as_ref(), b"b");
        assert_eq!(changes[0].value, None);
        assert!(!reopened.changed_since(2).await.unwrap());
        assert!(reopened.changed_since(1).await.unwrap());
    }
}

#[derive(Debug, Clone)]
enum Op {
    Commit(Vec<(u8, Option<u8>)>),
    Reopen,
    Compact,
    Crash(Vec<(u8, Option<u8>)>, u64, FaultMode),
}

fn op() -> impl Strategy<Value = Op> {
    let kv = (0u8..40, proptest::option::weighted(0.8, any::<u8>()));
    let batch = proptest::collection::vec(kv, 1..6);
    let mode = prop_oneof![
        Just(FaultMode::Fail),
        Just(FaultMode::Crash),
        Just(FaultMode::ApplyAndFail),
        Just(FaultMode::TearMultipart),
    ];
    prop_oneof![
        6 => batch.clone().prop_map(Op::Commit),
        1 => Just(Op::Reopen),
        1 => Just(Op::Compact),
        2 => (batch, 0u64..10, mode).prop_map(|(b, at, m)| Op::Crash(b, at, m)),
    ]
}

/// Runs `ops` against the index and a `BTreeMap`; after every reopen the two agree. A
/// commit that fails (crash) may or may not have happened: after it, the reopened state
/// must be the model with or without that batch, and the model follows it.
async fn run_model(setup: Setup, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut c = setup.open(b"model").await.unwrap();
    for op in ops {
        match op {
            Op::Commit(ops) => {
                let batch = batch_of(&ops);
                c.commit(batch.clone()).await.unwrap();
                apply(&mut model, &batch);
            }
            Op::Reopen => {
                c = setup.open(b"model").await.unwrap();
                prop_assert_eq!(&contents(&c), &model);
            }
            Op::Compact => {
                c.compact().await.unwrap();
                prop_assert_eq!(&contents(&c), &model);
            }
            Op::Crash(ops, at, mode) => {
                let batch = batch_of(&ops);
                let faulty = FaultyStore::new(setup.store.clone(), Some(Fault { at, mode }));
                let outcome = match setup
                    .index_on(Arc::new(faulty))
                    .open(setup.account, &setup.key, b"model")
                    .await
                {
                    Ok(mut crashing) => crashing.commit(batch.clone()).await.map(|_| ()),
                    Err(e) => Err(e),
                };
                c = setup.open(b"model").await.unwrap();
                let after = contents(&c);
                let mut with = model.clone();
                apply(&mut with, &batch);
                if outcome.is_ok() {
                    prop_assert_eq!(&after, &with, "acknowledged commit lost");
                } else {
                    prop_assert!(
                        after == model || after == with,
                        "half-applied batch after {:?} at {}",
                        mode,
                        at
                    );
                }
                model = after;
            }
        }
    }
    let c = setup.open(b"model").await.unwrap();
    prop_assert_eq!(&contents(&c), &model);
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn model_in_memory(ops in proptest::collection::vec(op(), 1..40)) {
        runtime().block_on(run_model(Setup::new(memory(), CommitMode::CompareAndSwap), ops))?;
    }

    #[test]
    fn model_local_filesystem(ops in proptest::collection::vec(op(), 1..25)) {
        let dir = tempfile::tempdir().unwrap();
        let store = mailvault::storage::open_store(dir.path().to_str().unwrap()).unwrap();
        runtime().block_on(run_model(Setup::new(store, CommitMode::CompareAndSwap), ops))?;
    }

    #[test]
    fn model_without_compare_and_swap(ops in proptest::collection::vec(op(), 1..40)) {
        runtime().block_on(run_model(Setup::new(no_cas(), CommitMode::WriterUnique), ops))?;
    }
}

/// `writers` handles commit `updates` batches each to one collection at once; every
/// acknowledged update is present exactly once and all readers agree. Returns the number
/// of concurrent heads merged.
pub async fn concurrent_writers(setup: &Setup, writers: usize, updates: usize) -> usize {
    let mut tasks = Vec::new();
    for w in 0..writers {
        let setup = setup.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = setup.open(b"shared").await.unwrap();
            let mut merged = 0;
            for i in 0..updates {
                let mut batch = Batch::new();
                batch.put(
                    format!("w{w}-{i:05}").into_bytes(),
                    format!("{w}:{i}").into_bytes(),
                );
                batch.put(format!("last-{w}").into_bytes(), i.to_string().into_bytes());
                let info = c.commit(batch).await.unwrap();
                assert!(info.committed);
                merged += info.merged_heads;
            }
            merged
        }));
    }
    let mut merged = 0;
    for task in tasks {
        merged += task.await.unwrap();
    }
    let a = setup.open(b"shared").await.unwrap();
    let b = setup.open(b"shared").await.unwrap();
    assert_eq!(contents(&a), contents(&b), "readers agree");
    assert_eq!(
        a.len(),
        writers * (updates + 1),
        "every acknowledged update present exactly once"
    );
    for w in 0..writers {
        for i in 0..updates {
            let value = a
                .get(format!("w{w}-{i:05}").as_bytes())
                .expect("update present");
            assert_eq!(value, format!("{w}:{i}").as_bytes());
        }
        let last = a.get(format!("last-{w}").as_bytes()).unwrap_or_else(|| {
            let keys: Vec<_> = a
                .iter()
                .map(|(k, _)| String::from_utf8_lossy(k).to_string())
                .filter(|k| k.starts_with("last"))
                .collect();
            panic!(
                "writer {w}'s last batch missing; len {} keys {keys:?} gen {}",
                a.len(),
                a.generation()
            )
        });
        assert_eq!(
            last,
            (updates - 1).to_string().as_bytes(),
            "each writer's batches in order"
        );
    }
    merged
}

async fn concurrent_writers_on(name: &str, expected: CommitMode) {
    let Some(store) = mailvault::testkit::s3_from_env(name) else {
        return;
    };
    let capabilities = mailvault::storage::probe_capabilities(store.as_ref())
        .await
        .unwrap();
    let mode = CommitMode::for_capabilities(capabilities);
    assert_eq!(mode, expected);
    let setup = Setup::new(store.clone(), mode);
    let started = std::time::Instant::now();
    let merged = concurrent_writers(&setup, 4, 500).await;
    eprintln!(
        "{name} ({mode:?}): 4 writers x 500 batched updates in {:.1} s, {merged} concurrent heads merged",
        started.elapsed().as_secs_f64()
    );
    mailvault::testkit::conformance::cleanup(&store, &setup.account).await;
}

/// 4 writers x 500 batched updates on moto_server (compare-and-swap).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_on_moto() {
    concurrent_writers_on("MOTO", CommitMode::CompareAndSwap).await;
}

/// 4 writers x 500 batched updates on Garage (no compare-and-swap: heads merged).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_on_garage() {
    concurrent_writers_on("GARAGE", CommitMode::WriterUnique).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_in_memory_and_without_cas() {
    concurrent_writers(&Setup::new(memory(), CommitMode::CompareAndSwap), 4, 40).await;
    let merged = concurrent_writers(&Setup::new(no_cas(), CommitMode::WriterUnique), 4, 40).await;
    eprintln!("without compare-and-swap: {merged} concurrent heads merged");
}

/// Read-modify-write updates are linearizable with compare-and-swap: concurrent
/// increments of one counter lose nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_modify_write_is_linearizable_with_cas() {
    let setup = Setup::new(memory(), CommitMode::CompareAndSwap);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let setup = setup.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = setup.open(b"counter").await.unwrap();
            for _ in 0..25 {
                c.update(|c| {
                    let n: u64 = c
                        .get(b"n")
                        .map(|v| String::from_utf8_lossy(v).parse().unwrap())
                        .unwrap_or(0);
                    let mut batch = Batch::new();
                    batch.put(&b"n"[..], (n + 1).to_string().into_bytes());
                    batch
                })
                .await
                .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let c = setup.open(b"counter").await.unwrap();
    assert_eq!(c.get(b"n").unwrap(), b"100");
}

async fn filled(setup: &Setup, name: &[u8], records: usize) -> Collection {
    let mut c = setup.open(name).await.unwrap();
    let mut batch = Batch::new();
    for i in 0..records {
        batch.put(format!("rec-{i:07}").into_bytes(), vec![b'v'; 40]);
    }
    c.commit(batch).await.unwrap();
    c.compact().await.unwrap();
    c
}

/// The cost of a point update, in requests and bytes, does not depend on the size of the
/// collection (compactions included, amortised over the updates).
#[tokio::test]
async fn update_cost_is_independent_of_collection_size() {
    let mut costs = Vec::new();
    for records in [1_000, 10_000] {
        let counting = CountingStore::new(memory());
        let setup = Setup::new(Arc::new(counting.clone()), CommitMode::CompareAndSwap);
        let mut c = filled(&setup, b"big", records).await;
        counting.reset();
        let updates = 64;
        for i in 0..updates {
            let mut batch = Batch::new();
            batch.put(format!("rec-{:07}", i * 7).into_bytes(), vec![b'w'; 40]);
            c.commit(batch).await.unwrap();
        }
        let requests = counting.requests().len() as f64 / updates as f64;
        let bytes = counting.bytes_written() as f64 / updates as f64;
        eprintln!(
            "{records} records: {requests:.2} requests and {bytes:.0} bytes written per update"
        );
        costs.push((requests, bytes));
    }
    assert_eq!(costs[0].0, costs[1].0, "requests per update");
    assert!(
        costs[1].1 <= costs[0].1 * 1.1,
        "bytes per update: {costs:?}"
    );
}

#[tokio::test]
async fn opening_reads_a_bounded_number_of_objects() {
    let counting = CountingStore::new(memory());
    let setup = Setup::new(Arc::new(counting.clone()), CommitMode::CompareAndSwap);
    let mut c = setup.open(b"tiers").await.unwrap();
    for i in 0..300 {
        let mut batch = Batch::new();
        batch.put(format!("k{i}").into_bytes(), vec![1u8; 10]);
        c.commit(batch).await.unwrap();
    }
    assert!(
        c.live_segments() <= 3 * 5,
        "{} live segments",
        c.live_segments()
    );
    counting.reset();
    let reopened = setup.open(b"tiers").await.unwrap();
    assert_eq!(reopened.len(), 300);
    let gets = counting.count(RequestKind::Get);
    assert!(gets <= c.live_segments() + 3, "{gets} GETs to open");
}

#[tokio::test]
async fn garbage_collection_keeps_what_heads_reference() {
    for (store, mode) in [
        (memory(), CommitMode::CompareAndSwap),
        (no_cas(), CommitMode::WriterUnique),
    ] {
        let setup = Setup::new(store.clone(), mode);
        let mut c = setup.open(b"gc").await.unwrap();
        for i in 0..10u8 {
            c.commit(batch_of(&[(i, Some(i))])).await.unwrap();
        }
        c.compact().await.unwrap();
        let before: Vec<_> = store.list(None).try_collect().await.unwrap();
        // A long grace period keeps everything young.
        assert_eq!(
            c.collect_garbage(Duration::from_secs(3600))
                .await
                .unwrap()
                .segments,
            0
        );
        let report = c.collect_garbage(Duration::ZERO).await.unwrap();
        let after: Vec<_> = store.list(None).try_collect().await.unwrap();
        assert!(report.segments > 0 && report.manifests > 0, "{report:?}");
        assert_eq!(
            before.len() - after.len(),
            report.segments + report.manifests
        );
        let reopened = setup.open(b"gc").await.unwrap();
        assert_eq!(contents(&reopened), contents(&c));
        assert_eq!(reopened.len(), 10);
    }
}

// ---------------------------------------------------------------------- attacks

async fn objects_under(store: &DynStore, part: &str) -> Vec<object_store::path::Path> {
    let metas: Vec<_> = store.list(None).try_collect().await.unwrap();
    let mut paths: Vec<_> = metas
        .into_iter()
        .map(|m| m.location)
        .filter(|p| p.as_ref().contains(part))
        .collect();
    paths.sort();
    paths
}

async fn bytes_of(store: &DynStore, path: &object_store::path::Path) -> Bytes {
    store.get(path).await.unwrap().bytes().await.unwrap()
}

fn assert_err<T: std::fmt::Debug>(
    result: mailvault::Result<T>,
    what: &str,
    expected: fn(&Error) -> bool,
) {
    match result {
        Err(e) if expected(&e) => {}
        other => panic!("{what}: unexpected {other:?}"),
    }
}

/// Commits 3 000 records of incompressible values (the same for every call) to the
/// collection `x` of `setup`'s account in three batches, compacts them into one segment
/// and returns the records and that segment's path (the largest segment stored: the
/// batches' stay until a garbage collection).
async fn compacted_collection(
    setup: &Setup,
    page_size: usize,
) -> (Vec<(Vec<u8>, Vec<u8>)>, object_store::path::Path) {
    let index = setup
        .index_on(setup.store.clone())
        .with_config(IndexConfig {
            page_size,
            ..IndexConfig::default()
        });
    let mut c = index.open(setup.account, &setup.key, b"x").await.unwrap();
    // Values that do not compress (xorshift), so that the segment is large.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = |len: usize| {
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect::<Vec<u8>>()
    };
    for round in 0..3u32 {
        let mut batch = Batch::new();
        for i in 0..1_000u32 {
            let key = format!("k{:06}", round * 1_000 + i);
            batch.put(key.into_bytes(), noise(100 + (i % 7) as usize));
        }
        c.commit(batch).await.unwrap();
    }
    c.compact().await.unwrap();
    assert_eq!(c.live_segments(), 1);
    let records: Vec<(Vec<u8>, Vec<u8>)> =
        c.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
    assert_eq!(records.len(), 3_000);
    let prefix = format!("a/{}/", setup.account.to_hex());
    let mut largest = None;
    for path in objects_under(&setup.store, "/s/").await {
        if path.as_ref().starts_with(&prefix) {
            let len = bytes_of(&setup.store, &path).await.len();
            if largest.as_ref().is_none_or(|(l, _)| len > *l) {
                largest = Some((len, path));
            }
        }
    }
    (records, largest.unwrap().1)
}

/// Opens the collection `x` of `setup`'s account reading segments by ranges of `piece`.
async fn open_by_pieces(setup: &Setup, piece: u64) -> mailvault::Result<Collection> {
    let index = setup
        .index_on(setup.store.clone())
        .with_config(IndexConfig {
            fetch_piece: piece,
            ..IndexConfig::default()
        });
    index.open(setup.account, &setup.key, b"x").await
}

/// A segment larger than `IndexConfig::fetch_piece` is read by ranges, each opened as it
/// arrives (so that a large account's compacted segment is never in memory whole beside
/// its records): every GET of it asks for at most a piece, the collection opens the same
/// whether pieces split pages or hold several, and a flipped byte in a later piece, a
/// truncation, a byte more, another account's segment of the same length put in its
/// place or a relabelled version are refused.
#[tokio::test]
async fn a_segment_read_by_ranges_opens_the_same_and_refuses_what_was_changed() {
    let counting = CountingStore::new(memory());
    let store: DynStore = Arc::new(counting.clone());
    let setup = Setup::new(store.clone(), CommitMode::CompareAndSwap);
    let (expected, segment) = compacted_collection(&setup, 32 * 1024).await;
    let original = bytes_of(&store, &segment).await;
    assert!(original.len() > 300_000, "{} bytes", original.len());
    // Pieces smaller than a page (32 KiB), of several pages, and the whole segment.
    for piece in [4_093, 100_000, u64::MAX] {
        counting.reset();
        let opened = open_by_pieces(&setup, piece).await.unwrap();
        let got: Vec<(Vec<u8>, Vec<u8>)> = opened
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        assert!(got == expected, "piece {piece}: other records");
        let gets: Vec<_> = counting
            .requests()
            .into_iter()
            .filter(|r| r.kind == RequestKind::Get && r.path == segment.as_ref())
            .collect();
        let pieces = (original.len() as u64).div_ceil(piece.min(original.len() as u64));
        assert_eq!(gets.len() as u64, pieces, "piece {piece}: {gets:?}");
        assert!(
            gets.iter().all(|g| g.bytes <= piece),
            "piece {piece}: {gets:?}"
        );
        assert_eq!(
            gets.iter().map(|g| g.bytes).sum::<u64>(),
            original.len() as u64
        );
    }

    let replace = |bytes: Vec<u8>| {
        let (store, segment) = (store.clone(), segment.clone());
        async move { store.put(&segment, PutPayload::from(bytes)).await.unwrap() }
    };
    let tampered = |e: &Error| matches!(e, Error::Tampered);
    // A flipped byte in the third piece, in the middle, at the end.
    for at in [2 * 4_093 + 5, original.len() / 2, original.len() - 1] {
        let mut flipped = original.to_vec();
        flipped[at] ^= 0x10;
        replace(flipped).await;
        assert_err(
            open_by_pieces(&setup, 4_093).await,
            &format!("flipped byte {at}"),
            tampered,
        );
    }
    // Truncated, and one byte too many.
    replace(original[..original.len() - 1].to_vec()).await;
    assert_err(open_by_pieces(&setup, 4_093).await, "truncated", tampered);
    let mut longer = original.to_vec();
    longer.push(0);
    replace(longer).await;
    assert_err(
        open_by_pieces(&setup, 4_093).await,
        "one byte more",
        tampered,
    );
    // A relabelled version: not the pinned bytes, so tampering, not an unknown version.
    let mut relabelled = original.to_vec();
    relabelled[4] ^= 0x20;
    replace(relabelled).await;
    assert_err(
        open_by_pieces(&setup, 4_093).await,
        "segment version byte",
        tampered,
    );
    // Another account's compacted segment of the same records: the same length, so it
    // is read and refused piece by piece (another segment id, other keys).
    let other = Setup {
        account: AccountId::random(&RandomSource::os()),
        directory: Arc::new(MemoryDirectory::new()),
        ..setup.clone()
    };
    let (_, foreign) = compacted_collection(&other, 32 * 1024).await;
    let foreign = bytes_of(&store, &foreign).await;
    assert_eq!(foreign.len(), original.len());
    replace(foreign.to_vec()).await;
    assert_err(
        open_by_pieces(&setup, 4_093).await,
        "another account's segment",
        tampered,
    );
    // Restored: opens again.
    replace(original.to_vec()).await;
    assert_eq!(open_by_pieces(&setup, 4_093).await.unwrap().len(), 3_000);
}

/// The pieces of a segment of many small pages split it everywhere (in its header, in
/// the length before a page, in a page): pieces of every size from 1 to 40 bytes open the
/// same records; a page length claiming more than the bytes pinned is refused in the first piece.
#[tokio::test]
async fn a_segment_split_anywhere_opens_the_same() {
    let counting = CountingStore::new(memory());
    let setup = Setup::new(Arc::new(counting.clone()), CommitMode::CompareAndSwap);
    // Pages of about 1 KiB: a segment of about 400 pages.
    let (expected, segment) = compacted_collection(&setup, 1024).await;
    let original = bytes_of(&setup.store, &segment).await;
    for piece in (1..=40).chain([1_000, 4_096]) {
        let opened = open_by_pieces(&setup, piece).await.unwrap();
        assert_eq!(opened.len(), expected.len(), "piece {piece}");
        assert!(
            opened
                .iter()
                .zip(&expected)
                .all(|((k, v), (ek, ev))| k == &ek[..] && v == &ev[..]),
            "piece {piece}: other records"
        );
    }
    // The first page's length raised past the end of the segment (header: 28 bytes).
    let mut claimed = original.to_vec();
    claimed[28..32].copy_from_slice(&u32::MAX.to_be_bytes());
    setup
        .store
        .put(&segment, PutPayload::from(claimed))
        .await
        .unwrap();
    counting.reset();
    assert_err(
        open_by_pieces(&setup, 4_096).await,
        "a page longer than the segment",
        |e| matches!(e, Error::Tampered),
    );
    let gets = counting
        .requests()
        .into_iter()
        .filter(|r| r.kind == RequestKind::Get && r.path == segment.as_ref())
        .count();
    // Refused in the first piece (the second was being fetched meanwhile), not after
    // reading the rest of the segment while waiting for that page.
    assert!(gets <= 2, "{gets} GETs of the segment");
}

#[tokio::test]
async fn a_replayed_older_manifest_is_refused() {
    let setup = Setup::new(memory(), CommitMode::CompareAndSwap);
    let mut c = setup.open(b"x").await.unwrap();
    for i in 0..3u8 {
        c.commit(batch_of(&[(i, Some(i))])).await.unwrap();
    }
    let manifests = objects_under(&setup.store, "/m/").await;
    assert_eq!(manifests.len(), 3);
    // Generation 2's bytes relabelled as generation 3: the name no longer matches the
    // authenticated header.
    let old = bytes_of(&setup.store, &manifests[1]).await;
    setup
        .store
        .put(&manifests[2], PutPayload::from(old))
        .await
        .unwrap();
    assert_err(setup.open(b"x").await, "relabelled manifest", |e| {
        matches!(e, Error::Tampered)
    });
    // Withholding generation 3 altogether: the directory remembers it was seen.
    setup.store.delete(&manifests[2]).await.unwrap();
    assert_err(
        setup.open(b"x").await,
        "withheld manifest, new session",
        |e| matches!(e, Error::Rollback { seen: 3, found: 2 }),
    );
    // And a session that saw generation 3 refuses to go back to 2, whatever its
    // directory says.
    // The session that saw generation 3 refuses to go back to 2 by itself.
    assert_eq!(c.generation(), 3);
    assert_err(c.refresh().await, "session going back", |e| {
        matches!(e, Error::Rollback { seen: 3, found: 2 })
    });
    // The documented limit: a session with neither memory nor directory mark cannot
    // tell a withheld newest manifest from a real generation 2.
    let forgetful = Setup {
        directory: Arc::new(MemoryDirectory::new()),
        ..setup.clone()
    };
    assert_eq!(forgetful.open(b"x").await.unwrap().generation(), 2);
}

#[tokio::test]
async fn a_withheld_head_is_refused_without_cas() {
    let setup = Setup::new(no_cas(), CommitMode::WriterUnique);
    let mut c = setup.open(b"x").await.unwrap();
    for i in 0..3u8 {
        c.commit(batch_of(&[(i, Some(i))])).await.unwrap();
    }
    let manifests = objects_under(&setup.store, "/m/").await;
    setup.store.delete(manifests.last().unwrap()).await.unwrap();
    assert_err(setup.open(b"x").await, "withheld head", |e| {
        matches!(e, Error::Rollback { seen: 3, found: 2 })
    });
    assert_eq!(
        setup
            .directory
            .high_water_mark(&setup.account, &record_of(&setup.store).await)
            .await
            .unwrap(),
        3
    );
}

async fn record_of(store: &DynStore) -> String {
    let path = objects_under(store, "/m/").await.remove(0);
    let tag = path.as_ref().split('/').nth(3).unwrap().to_string();
    format!("i-{tag}")
}

#[tokio::test]
async fn segments_swapped_between_accounts_or_generations_deleted_or_flipped_are_refused() {
    let store = memory();
    let alice = Setup::new(store.clone(), CommitMode::CompareAndSwap);
    let bob = Setup {
        account: AccountId::random(&RandomSource::os()),
        directory: Arc::new(MemoryDirectory::new()),
        ..alice.clone()
    };
    let mut a = alice.open(b"x").await.unwrap();
    let mut b = bob.open(b"x").await.unwrap();
    a.commit(batch_of(&[(1, Some(1))])).await.unwrap();
    a.commit(batch_of(&[(2, Some(2))])).await.unwrap();
    b.commit(batch_of(&[(1, Some(9))])).await.unwrap();
    let prefix_a = format!("a/{}/", alice.account.to_hex());
    let prefix_b = format!("a/{}/", bob.account.to_hex());
    let segs_a: Vec<_> = objects_under(&store, "/s/")
        .await
        .into_iter()
        .filter(|p| p.as_ref().starts_with(&prefix_a))
        .collect();
    let segs_b: Vec<_> = objects_under(&store, "/s/")
        .await
        .into_iter()
        .filter(|p| p.as_ref().starts_with(&prefix_b))
        .collect();
    let original = bytes_of(&store, &segs_a[0]).await;

    // Bob's segment put in place of one of Alice's.
    store
        .put(
            &segs_a[0],
            PutPayload::from(bytes_of(&store, &segs_b[0]).await),
        )
        .await
        .unwrap();
    assert_err(
        alice.open(b"x").await,
        "segment from another account",
        |e| matches!(e, Error::Tampered),
    );
    // Alice's other segment (another generation) in its place.
    store
        .put(
            &segs_a[0],
            PutPayload::from(bytes_of(&store, &segs_a[1]).await),
        )
        .await
        .unwrap();
    assert_err(
        alice.open(b"x").await,
        "segment from another generation",
        |e| matches!(e, Error::Tampered),
    );
    // A flipped byte.
    let mut flipped = original.to_vec();
    let n = flipped.len();
    flipped[n - 5] ^= 1;
    store
        .put(&segs_a[0], PutPayload::from(flipped))
        .await
        .unwrap();
    assert_err(alice.open(b"x").await, "flipped segment byte", |e| {
        matches!(e, Error::Tampered)
    });
    // A flipped version byte: the bytes are not the pinned ones, so this is tampering,
    // not an unknown version (found by the index_segment fuzz target).
    let mut relabelled = original.to_vec();
    relabelled[4] ^= 0x20;
    store
        .put(&segs_a[0], PutPayload::from(relabelled))
        .await
        .unwrap();
    assert_err(alice.open(b"x").await, "segment version byte", |e| {
        matches!(e, Error::Tampered)
    });
    // Deleted.
    store.delete(&segs_a[0]).await.unwrap();
    assert_err(alice.open(b"x").await, "deleted segment", |e| {
        matches!(e, Error::NotFound { .. })
    });
    // Restored: readable again.
    store
        .put(&segs_a[0], PutPayload::from(original))
        .await
        .unwrap();
    assert_eq!(alice.open(b"x").await.unwrap().len(), 2);
    // A flipped manifest byte.
    let manifest = objects_under(&store, "/m/")
        .await
        .into_iter()
        .find(|p| p.as_ref().starts_with(&prefix_a))
        .unwrap();
    let newest = objects_under(&store, "/m/")
        .await
        .into_iter()
        .rfind(|p| p.as_ref().starts_with(&prefix_a))
        .unwrap();
    let mut m = bytes_of(&store, &newest).await.to_vec();
    let n = m.len();
    m[n - 1] ^= 0x40;
    store.put(&newest, PutPayload::from(m)).await.unwrap();
    assert_err(alice.open(b"x").await, "flipped manifest byte", |e| {
        matches!(e, Error::Tampered)
    });
    let _ = manifest;
}

#[tokio::test]
async fn nothing_readable_in_the_store() {
    let setup = Setup::new(memory(), CommitMode::CompareAndSwap);
    let mut c = setup.open(b"INBOX-secret-name").await.unwrap();
    let mut batch = Batch::new();
    batch.put(&b"subject:quarterly-report"[..], &b"alice@example.org"[..]);
    c.commit(batch).await.unwrap();
    let markers: [&[u8]; 3] = [
        b"INBOX-secret-name",
        b"quarterly-report",
        b"alice@example.org",
    ];
    let (hits, objects) = mailvault::testkit::scan_for_markers(&setup.store, None, &markers).await;
    assert!(objects >= 2);
    assert!(hits.is_empty(), "{hits:?}");
}

/// A commit crashed at each of its backend operations, in each mode: afterwards the
/// collection holds the batch (acknowledged, or applied but unacknowledged) or not, never
/// a part of it, and a later commit works.
#[tokio::test]
async fn commit_under_every_fault_at_every_operation() {
    for (store_fn, mode) in [
        (memory as fn() -> DynStore, CommitMode::CompareAndSwap),
        (no_cas, CommitMode::WriterUnique),
    ] {
        // Count the operations of open + commit on a collection with history.
        let probe = Setup::new(store_fn(), mode);
        let mut c = probe.open(b"f").await.unwrap();
        c.commit(batch_of(&[(1, Some(1)), (2, Some(2))]))
            .await
            .unwrap();
        let counter = FaultyStore::new(probe.store.clone(), None);
        let mut counted = probe
            .index_on(Arc::new(counter.clone()))
            .open(probe.account, &probe.key, b"f")
            .await
            .unwrap();
        counted.commit(batch_of(&[(3, Some(3))])).await.unwrap();
        let ops = counter.ops();
        assert!(ops >= 4, "{ops}");
        let mut fired = 0;
        for at in 0..ops {
            for fault_mode in [FaultMode::Fail, FaultMode::Crash, FaultMode::ApplyAndFail] {
                let setup = Setup::new(store_fn(), mode);
                let mut c = setup.open(b"f").await.unwrap();
                let base = batch_of(&[(1, Some(1)), (2, Some(2))]);
                c.commit(base.clone()).await.unwrap();
                let batch = batch_of(&[(2, None), (3, Some(3)), (4, Some(4))]);
                let faulty = FaultyStore::new(
                    setup.store.clone(),
                    Some(Fault {
                        at,
                        mode: fault_mode,
                    }),
                );
                let outcome = match setup
                    .index_on(Arc::new(faulty.clone()))
                    .open(setup.account, &setup.key, b"f")
                    .await
                {
                    Ok(mut crashing) => crashing.commit(batch.clone()).await.map(|_| ()),
                    Err(e) => Err(e),
                };
                fired += usize::from(faulty.fired());
                let mut without = BTreeMap::new();
                apply(&mut without, &base);
                let mut with = without.clone();
                apply(&mut with, &batch);
                let mut after = setup.open(b"f").await.unwrap();
                let state = contents(&after);
                match outcome {
                    Ok(()) => assert_eq!(state, with, "acknowledged at {at} {fault_mode:?}"),
                    Err(_) => assert!(
                        state == with || state == without,
                        "partial at {at} {fault_mode:?}: {state:?}"
                    ),
                }
                after.commit(batch_of(&[(9, Some(9))])).await.unwrap();
                assert_eq!(setup.open(b"f").await.unwrap().len(), state.len() + 1);
            }
        }
        assert!(
            fired as u64 >= 3 * ops - 3,
            "faults fired {fired} of {}",
            3 * ops
        );
    }
}

/// A commit whose batch is published is acknowledged, even when the tier compaction that
/// follows it fails: compaction is maintenance (a later commit or `compact` does it), and
/// reporting the durable commit as failed makes its caller believe it lost (found on
/// moto, where four writers kept a compaction losing until its attempts ran out and
/// `commit` returned `Conflict` for a batch already committed).
#[tokio::test]
async fn a_commit_is_acknowledged_when_the_compaction_after_it_fails() {
    /// Three commits (one below the fanout of 4), then the fourth through `store`.
    async fn fourth_commit(setup: &Setup, store: DynStore) -> mailvault::Result<()> {
        let mut c = setup.open(b"tiers").await.unwrap();
        for i in 0..3 {
            let mut batch = Batch::new();
            batch.put(format!("k{i}").into_bytes(), b"v".to_vec());
            c.commit(batch).await.unwrap();
        }
        let mut c = setup
            .index_on(store)
            .open(setup.account, &setup.key, b"tiers")
            .await?;
        let mut batch = Batch::new();
        batch.put(b"k3".to_vec(), b"v".to_vec());
        c.commit(batch).await.map(|_| ())
    }
    let mut failed_compactions = 0;
    for at in 0..24u64 {
        let setup = Setup::new(memory(), CommitMode::CompareAndSwap);
        let faulty = FaultyStore::new(
            setup.store.clone(),
            Some(Fault {
                at,
                mode: FaultMode::Fail,
            }),
        );
        let outcome = fourth_commit(&setup, Arc::new(faulty.clone())).await;
        let durable = setup.open(b"tiers").await.unwrap().get(b"k3").is_some();
        // A fault without effect: an error means nothing was committed.
        assert!(
            outcome.is_ok() || !durable,
            "fault at {at}: the committed batch was reported failed: {outcome:?}"
        );
        failed_compactions += usize::from(outcome.is_ok() && faulty.fired());
    }
    assert!(
        failed_compactions > 0,
        "a fault hit a compaction after a commit"
    );
}

/// `Collection::get_ascending` answers as `get` does, key by key, whatever the keys asked:
/// present, deleted, absent, before the first and after the last record, repeated, close
/// together (the walk) and far apart (a seek), and out of order (looked up on their own).
#[tokio::test]
async fn get_ascending_answers_as_get() {
    let setup = Setup::new(memory(), CommitMode::CompareAndSwap);
    let mut c = setup.open(b"walk").await.unwrap();
    let mut batch = Batch::new();
    // Every third key of 0..600 present; every 30th of those deleted by a later commit
    // (so that the view holds deletions as well).
    for i in (0..600).step_by(3) {
        batch.put(
            format!("k-{i:04}").into_bytes(),
            format!("v{i}").into_bytes(),
        );
    }
    c.commit(batch).await.unwrap();
    let mut batch = Batch::new();
    for i in (0..600).step_by(30) {
        batch.delete(format!("k-{i:04}").into_bytes());
    }
    c.commit(batch).await.unwrap();
    let key = |i: usize| format!("k-{i:04}").into_bytes();
    let lists: Vec<Vec<Vec<u8>>> = vec![
        (0..620).map(key).collect(),
        (0..620).step_by(2).map(key).collect(),
        (0..620).step_by(97).map(key).collect(),
        vec![key(3), key(3), key(3), key(4), key(6), key(6)],
        vec![b"a".to_vec(), key(3), b"z".to_vec(), b"z".to_vec()],
        vec![key(300), key(3), key(599), key(6), key(9), b"a".to_vec()],
        (0..620).rev().step_by(7).map(key).collect(),
        Vec::new(),
    ];
    for keys in lists {
        let walked = c.get_ascending(&keys);
        let looked_up: Vec<Option<&[u8]>> = keys.iter().map(|k| c.get(k)).collect();
        assert_eq!(
            walked,
            looked_up,
            "keys {:?}",
            keys.iter()
                .map(|k| String::from_utf8_lossy(k))
                .collect::<Vec<_>>()
        );
    }
    // The test sees what it means to: some present, some deleted, some absent.
    let all: Vec<Vec<u8>> = (0..620).map(key).collect();
    let walked = c.get_ascending(&all);
    assert_eq!(walked[3], Some(&b"v3"[..]));
    assert_eq!(walked[30], None);
    assert_eq!(walked[4], None);
    assert_eq!(walked.iter().flatten().count(), 200 - 20);
}
