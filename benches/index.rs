//! Encrypted index: cost of opening, committing, compacting and change queries, against
//! a reference for opening.
//!
//! Every collection holds N records (N = 1k, 10k, 100k; keys `uid:0000001`, values of
//! 60 bytes), committed in 10 batches and then compacted once (one live segment: the
//! steady state), on an in-memory store and on a local directory (fsync on). The data is
//! built once per backend and size and reused by every group.
//!
//! Groups:
//! - `open/{memory,local}/N`: [`IndexStore::open`] of the collection (manifest, segment,
//!   digest, every page opened, the in-memory view built);
//!   `open/reference/N`: the same records as plain `(key, value)` pairs in bincode, sealed
//!   with XChaCha20-Poly1305 in pages of about 32 KiB, opened and decoded into a
//!   `BTreeMap` on one core (no I/O): what an ordinary encrypted key/value file costs;
//! - `point_update`: one commit of a one-key batch (tier compactions included);
//! - `batch_append`: one commit of 100 new keys (the keys are deleted again outside the
//!   timed part, so the collection keeps its size, and a full compaction outside the timed
//!   part purges the tombstones every 20 appends);
//! - `changes_since/{mem_changes,changed_since}`: `changes_since(generation - 10)` from
//!   memory, and `changed_since(generation)` (one request);
//! - `compaction`: a full `compact()` after 8 point updates.
//!
//! After criterion's groups, a custom measurement: the latency of 500 point updates in a
//! row from the steady state (mean, p50, p99, max), at 1k and 100k records alternately,
//! three rounds, and the ratio 100k/1k. Environment: `MAILVAULT_BENCH_NO_LATENCY=1` skips
//! it, `MAILVAULT_BENCH_LATENCY_ONLY=1` runs only it; `MAILVAULT_BENCH_UPDATES=N` (updates
//! per round), `MAILVAULT_BENCH_LATENCY_BACKENDS=memory,local` and
//! `MAILVAULT_BENCH_LATENCY_SIZE=1000|100000` (one size alone, for profiling) narrow it.
//!
//! Run with `cargo bench --bench index --features testkit`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use criterion::{black_box, BatchSize, BenchmarkGroup, BenchmarkId, Criterion};
use criterion::{measurement::WallTime, Throughput};
use futures::TryStreamExt;
use mailvault::crypto::{AccountKey, RandomSource};
use mailvault::directory::MemoryDirectory;
use mailvault::ids::{AccountId, DeploymentId};
use mailvault::index::{Batch, Collection, IndexStore};
use mailvault::storage::{naming, open_store, DynStore};
use tokio::runtime::Runtime;

const SIZES: [usize; 3] = [1_000, 10_000, 100_000];
const VALUE_LEN: usize = 60;
const PAGE: usize = 32 * 1024;
const NAME: &[u8] = b"flags";
/// Point updates per latency run (`MAILVAULT_BENCH_UPDATES` overrides).
const LATENCY_UPDATES: usize = 500;

fn latency_updates() -> usize {
    std::env::var("MAILVAULT_BENCH_UPDATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(LATENCY_UPDATES)
}

/// Backends of the latency measurement (`MAILVAULT_BENCH_LATENCY_BACKENDS`, comma-separated,
/// overrides).
fn latency_backends() -> Vec<String> {
    std::env::var("MAILVAULT_BENCH_LATENCY_BACKENDS")
        .map(|v| v.split(',').map(str::to_string).collect())
        .unwrap_or_else(|_| vec!["memory".into(), "local".into()])
}

fn record_key(i: usize) -> Vec<u8> {
    format!("uid:{i:07}").into_bytes()
}

/// Deterministic value of `VALUE_LEN` bytes for record `i`, version `version`.
fn value(i: usize, version: u64) -> Vec<u8> {
    mailvault::testkit::pattern(i as u64 ^ (version << 40), VALUE_LEN)
}

/// One collection of `records` records in its steady state, on one backend.
struct Fixture {
    backend: &'static str,
    records: usize,
    index: IndexStore,
    account: AccountId,
    key: Arc<AccountKey>,
    /// The writer's handle, mutated by the update groups.
    collection: Collection,
    /// Stored bytes of its live segments after the setup.
    segment_bytes: u64,
    /// Version counter for values written by the update groups.
    version: u64,
    /// Next key index of a point update (a stride through every key).
    cursor: usize,
}

impl Fixture {
    async fn build(backend: &'static str, store: DynStore, records: usize) -> Self {
        let rng = RandomSource::os();
        let index = IndexStore::new(
            store.clone(),
            DeploymentId::random(&rng),
            Arc::new(MemoryDirectory::new()),
        )
        .await
        .expect("index store");
        let account = AccountId::random(&rng);
        let key = Arc::new(AccountKey::generate(1, &rng));
        let mut collection = index.open(account, &key, NAME).await.expect("open");
        let per_batch = records / 10;
        for start in (0..records).step_by(per_batch) {
            let mut batch = Batch::new();
            for i in start..(start + per_batch).min(records) {
                batch.put(record_key(i), value(i, 0));
            }
            collection.commit(batch).await.expect("commit");
        }
        collection.compact().await.expect("compact");
        collection
            .collect_garbage(Duration::ZERO)
            .await
            .expect("gc");
        assert_eq!(collection.len(), records);
        assert_eq!(collection.live_segments(), 1);
        let prefix = naming::account_prefix(&account);
        let segment_bytes = store
            .list(Some(&prefix))
            .try_collect::<Vec<_>>()
            .await
            .expect("list")
            .iter()
            .filter(|m| m.location.as_ref().contains("/s/"))
            .map(|m| m.size)
            .sum();
        Self {
            backend,
            records,
            index,
            account,
            key,
            collection,
            segment_bytes,
            version: 1,
            cursor: 0,
        }
    }

    async fn open(&self) -> Collection {
        self.index
            .open(self.account, &self.key, NAME)
            .await
            .expect("open")
    }

    /// The next one-key batch: a new value for an existing key.
    fn point_batch(&mut self) -> Batch {
        let i = self.cursor % self.records;
        self.cursor = self.cursor.wrapping_add(7919);
        self.version += 1;
        let mut batch = Batch::new();
        batch.put(record_key(i), value(i, self.version));
        batch
    }

    async fn point_update(&mut self) {
        let batch = self.point_batch();
        self.collection.commit(batch).await.expect("commit");
    }

    /// Back to the steady state: one live segment, nothing to collect.
    async fn settle(&mut self) {
        self.collection.compact().await.expect("compact");
        self.collection
            .collect_garbage(Duration::ZERO)
            .await
            .expect("gc");
    }
}

fn label(records: usize) -> String {
    format!("{}k", records / 1000)
}

struct Backends {
    rt: Runtime,
    _dir: tempfile::TempDir,
    fixtures: Vec<Fixture>,
}

fn build_all() -> Backends {
    let rt = Runtime::new().expect("tokio runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut fixtures = Vec::new();
    for (backend, store) in [
        ("memory", open_store("memory://").expect("memory store")),
        (
            "local",
            open_store(dir.path().to_str().expect("utf-8 tempdir")).expect("local store"),
        ),
    ] {
        for records in SIZES {
            let started = Instant::now();
            let fixture = rt.block_on(Fixture::build(backend, store.clone(), records));
            eprintln!(
                "setup {backend}/{}: {} records, {} segment bytes ({:.1} B/record), built in {:.2?}",
                label(records),
                fixture.records,
                fixture.segment_bytes,
                fixture.segment_bytes as f64 / records as f64,
                started.elapsed()
            );
            fixtures.push(fixture);
        }
    }
    Backends {
        rt,
        _dir: dir,
        fixtures,
    }
}

fn configure(group: &mut BenchmarkGroup<'_, WallTime>, records: usize) {
    group.warm_up_time(Duration::from_millis(300));
    group.measurement_time(Duration::from_secs(2));
    group.sample_size(if records >= 100_000 { 10 } else { 15 });
}

// ---------------------------------------------------------------------------- reference

/// The same records as bincode `Vec<(key, value)>` pages of about `PAGE` bytes, each
/// sealed with XChaCha20-Poly1305 (`nonce`, `ciphertext ‖ tag`).
struct Reference {
    cipher: XChaCha20Poly1305,
    pages: Vec<([u8; 24], Vec<u8>)>,
    sealed_bytes: usize,
}

impl Reference {
    fn new(records: usize) -> Self {
        let cipher = XChaCha20Poly1305::new(&[7u8; 32].into());
        let mut pages = Vec::new();
        let mut current: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut size = 0;
        let mut nonce = [0u8; 24];
        let mut seal = |page: &Vec<(Vec<u8>, Vec<u8>)>, pages: &mut Vec<([u8; 24], Vec<u8>)>| {
            nonce[..8].copy_from_slice(&(pages.len() as u64).to_be_bytes());
            let plain = bincode::serialize(page).expect("bincode");
            let sealed = cipher
                .encrypt(
                    XNonce::from_slice(&nonce),
                    Payload {
                        msg: &plain,
                        aad: b"reference",
                    },
                )
                .expect("seal");
            pages.push((nonce, sealed));
        };
        for i in 0..records {
            let (k, v) = (record_key(i), value(i, 0));
            size += k.len() + v.len() + 16;
            current.push((k, v));
            if size >= PAGE {
                seal(&current, &mut pages);
                current.clear();
                size = 0;
            }
        }
        if !current.is_empty() {
            seal(&current, &mut pages);
        }
        let sealed_bytes = pages.iter().map(|(n, c)| n.len() + c.len()).sum();
        let reference = Self {
            cipher,
            pages,
            sealed_bytes,
        };
        let map = reference.open();
        assert_eq!(map.len(), records);
        assert_eq!(
            map.get(&record_key(records - 1)),
            Some(&value(records - 1, 0))
        );
        reference
    }

    fn open(&self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let mut map = BTreeMap::new();
        for (nonce, sealed) in &self.pages {
            let plain = self
                .cipher
                .decrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: sealed,
                        aad: b"reference",
                    },
                )
                .expect("open");
            let page: Vec<(Vec<u8>, Vec<u8>)> = bincode::deserialize(&plain).expect("decode");
            map.extend(page);
        }
        map
    }
}

// ---------------------------------------------------------------------------- groups

fn open_group(c: &mut Criterion, b: &Backends) {
    let mut group = c.benchmark_group("open");
    for records in SIZES {
        configure(&mut group, records);
        group.throughput(Throughput::Elements(records as u64));
        let reference = Reference::new(records);
        eprintln!(
            "reference/{}: {} sealed bytes ({:.1} B/record)",
            label(records),
            reference.sealed_bytes,
            reference.sealed_bytes as f64 / records as f64
        );
        group.bench_function(BenchmarkId::new("reference", label(records)), |bench| {
            bench.iter_with_large_drop(|| black_box(&reference).open())
        });
        for fixture in b.fixtures.iter().filter(|f| f.records == records) {
            let opened = b.rt.block_on(fixture.open());
            assert_eq!(opened.len(), records);
            assert_eq!(opened.live_segments(), 1);
            drop(opened);
            group.bench_function(BenchmarkId::new(fixture.backend, label(records)), |bench| {
                bench.iter_with_large_drop(|| b.rt.block_on(fixture.open()))
            });
        }
    }
    group.finish();
}

fn point_update_group(c: &mut Criterion, b: &mut Backends) {
    let mut group = c.benchmark_group("point_update");
    for fixture in &mut b.fixtures {
        configure(&mut group, fixture.records);
        let rt = &b.rt;
        group.bench_function(
            BenchmarkId::new(fixture.backend, label(fixture.records)),
            |bench| bench.iter(|| rt.block_on(fixture.point_update())),
        );
    }
    group.finish();
}

fn batch_append_group(c: &mut Criterion, b: &mut Backends) {
    let mut group = c.benchmark_group("batch_append");
    /// Appends between two full compactions (each adds 100 tombstones).
    const SETTLE_EVERY: u64 = 20;
    let mut next = 2_000_000usize;
    for fixture in &mut b.fixtures {
        configure(&mut group, fixture.records);
        // The untimed part (a delete, a compaction every 20 appends) costs more than the
        // timed one: a shorter target keeps the group's wall time reasonable.
        group.measurement_time(Duration::from_millis(500));
        let mut appended = 0u64;
        let rt = &b.rt;
        group.bench_function(
            BenchmarkId::new(fixture.backend, label(fixture.records)),
            |bench| {
                bench.iter_custom(|iters| {
                    rt.block_on(async {
                        let mut timed = Duration::ZERO;
                        for _ in 0..iters {
                            let mut append = Batch::new();
                            let mut undo = Batch::new();
                            for _ in 0..100 {
                                append.put(record_key(next), value(next, 0));
                                undo.delete(record_key(next));
                                next += 1;
                            }
                            let started = Instant::now();
                            fixture.collection.commit(append).await.expect("commit");
                            timed += started.elapsed();
                            // Untimed: keep the collection at its size, and purge the
                            // tombstones now and then.
                            fixture.collection.commit(undo).await.expect("delete");
                            appended += 1;
                            if appended.is_multiple_of(SETTLE_EVERY) {
                                fixture.settle().await;
                            }
                        }
                        timed
                    })
                })
            },
        );
        b.rt.block_on(fixture.settle());
        assert_eq!(fixture.collection.len(), fixture.records);
    }
    group.finish();
}

fn changes_group(c: &mut Criterion, b: &mut Backends) {
    let mut group = c.benchmark_group("changes_since");
    for fixture in &mut b.fixtures {
        configure(&mut group, fixture.records);
        for _ in 0..20 {
            b.rt.block_on(fixture.point_update());
        }
        let collection = &fixture.collection;
        let since = collection.generation() - 10;
        let changes = collection.changes_since(since).expect("not purged");
        assert!(!changes.is_empty() && changes.len() <= 10);
        group.bench_function(
            BenchmarkId::new(
                format!("mem_changes/{}", fixture.backend),
                label(fixture.records),
            ),
            |bench| bench.iter(|| black_box(collection.changes_since(black_box(since)))),
        );
        let generation = collection.generation();
        assert!(!b.rt.block_on(collection.changed_since(generation)).unwrap());
        group.bench_function(
            BenchmarkId::new(
                format!("changed_since/{}", fixture.backend),
                label(fixture.records),
            ),
            |bench| {
                bench.iter(|| {
                    b.rt.block_on(collection.changed_since(black_box(generation)))
                        .expect("changed_since")
                })
            },
        );
    }
    group.finish();
}

fn compaction_group(c: &mut Criterion, b: &mut Backends) {
    let mut group = c.benchmark_group("compaction");
    for fixture in &mut b.fixtures {
        configure(&mut group, fixture.records);
        b.rt.block_on(fixture.settle());
        let rt = &b.rt;
        let (backend, records) = (fixture.backend, fixture.records);
        let cell = RefCell::new(fixture);
        group.bench_function(BenchmarkId::new(backend, label(records)), |bench| {
            bench.iter_batched(
                || {
                    let mut guard = cell.borrow_mut();
                    let fixture: &mut Fixture = &mut guard;
                    rt.block_on(async {
                        for _ in 0..8 {
                            fixture.point_update().await;
                        }
                    });
                    assert!(fixture.collection.live_segments() > 1);
                },
                |()| {
                    let mut guard = cell.borrow_mut();
                    let collection: &mut Collection = &mut guard.collection;
                    let info = rt.block_on(collection.compact()).expect("compact");
                    assert!(info.committed);
                },
                BatchSize::PerIteration,
            )
        });
        let fixture = cell.into_inner();
        b.rt.block_on(fixture.settle());
    }
    group.finish();
}

// ---------------------------------------------------------------------------- latency

struct Latency {
    mean: Duration,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl Latency {
    fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        Latency {
            mean: samples.iter().sum::<Duration>() / samples.len() as u32,
            p50: percentile(&samples, 50.0),
            p99: percentile(&samples, 99.0),
            max: samples[samples.len() - 1],
        }
    }

    fn print(&self, what: &str) {
        println!(
            "  {what:<22} mean {:>9.2?}  p50 {:>9.2?}  p99 {:>9.2?}  max {:>9.2?}",
            self.mean, self.p50, self.p99, self.max
        );
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `updates` point updates in a row from the steady state, each timed.
fn measure_latency(rt: &Runtime, fixture: &mut Fixture, updates: usize) -> Vec<Duration> {
    rt.block_on(async {
        fixture.settle().await;
        fixture.cursor = 0;
        let mut samples = Vec::with_capacity(updates);
        for _ in 0..updates {
            let batch = fixture.point_batch();
            let started = Instant::now();
            fixture.collection.commit(batch).await.expect("commit");
            samples.push(started.elapsed());
        }
        samples
    })
}

/// Rounds of the latency measurement; the sizes alternate within a round, so that load
/// from elsewhere on the machine falls on both.
const LATENCY_ROUNDS: usize = 3;

fn latency_report(b: &mut Backends) {
    let updates = latency_updates();
    println!(
        "\nupdate latency: {LATENCY_ROUNDS} rounds of {updates} point updates in a row \
         from the steady state, compactions included"
    );
    for backend in latency_backends() {
        let backend = backend.as_str();
        let sizes = [1_000, 100_000];
        let mut pooled: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
        // For profiling one size alone: `MAILVAULT_BENCH_LATENCY_SIZE=1000` or `100000`.
        let only: Option<usize> = std::env::var("MAILVAULT_BENCH_LATENCY_SIZE")
            .ok()
            .and_then(|v| v.parse().ok());
        for round in 0..LATENCY_ROUNDS {
            let mut results = Vec::new();
            for (slot, records) in sizes.into_iter().enumerate() {
                if only.is_some_and(|only| only != records) {
                    continue;
                }
                let fixture = b
                    .fixtures
                    .iter_mut()
                    .find(|f| f.backend == backend && f.records == records)
                    .expect("fixture");
                let samples = measure_latency(&b.rt, fixture, updates);
                pooled[slot].extend_from_slice(&samples);
                let latency = Latency::of(samples);
                latency.print(&format!("{backend}/{} round {}", label(records), round + 1));
                results.push(latency);
            }
            if results.len() == 2 {
                print_ratio(&format!("{backend} round {}", round + 1), &results);
            }
        }
        if only.is_some() {
            continue;
        }
        let results: Vec<Latency> = pooled.into_iter().map(Latency::of).collect();
        for (latency, records) in results.iter().zip(sizes) {
            latency.print(&format!("{backend}/{} all", label(records)));
        }
        print_ratio(&format!("{backend} all rounds"), &results);
    }
}

fn print_ratio(what: &str, results: &[Latency]) {
    let ratio =
        |f: fn(&Latency) -> Duration| f(&results[1]).as_secs_f64() / f(&results[0]).as_secs_f64();
    println!(
        "  {what:<22} 100k/1k: mean {:.2}  p50 {:.2}  p99 {:.2}  (target <= 1.3)",
        ratio(|l| l.mean),
        ratio(|l| l.p50),
        ratio(|l| l.p99)
    );
}

fn main() {
    let only_latency = std::env::var_os("MAILVAULT_BENCH_LATENCY_ONLY").is_some();
    let no_latency = std::env::var_os("MAILVAULT_BENCH_NO_LATENCY").is_some();
    let mut backends = build_all();
    if !only_latency {
        let mut c = Criterion::default().configure_from_args();
        open_group(&mut c, &backends);
        point_update_group(&mut c, &mut backends);
        batch_append_group(&mut c, &mut backends);
        changes_group(&mut c, &mut backends);
        compaction_group(&mut c, &mut backends);
        c.final_summary();
    }
    if !no_latency {
        latency_report(&mut backends);
    }
}
