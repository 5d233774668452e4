//! Memory held by an open index collection, per record, beyond the value bytes.
//!
//! Builds a collection of N records (keys `uid:0000001`, values of V bytes) in a temporary
//! local directory and compacts it to one segment, then opens the collection again and
//! reports what the open handle holds: the resident set (`VmRSS`, after
//! `malloc_trim` so that freed memory is not counted) and the live heap bytes (a counting
//! allocator), each per record minus V. For comparison, the same records in plain
//! `BTreeMap`s.
//!
//! The open is measured in a child process of its own, so that what the build left in
//! the allocator does not blur the resident set. Needs the `testkit` feature (a seeded key
//! shared by the two processes).
//!
//! ```sh
//! cargo run --release --features testkit --example index_memory                # N = 100000, V = 60
//! cargo run --release --features testkit --example index_memory -- 100000 200  # N, V
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[cfg(not(feature = "testkit"))]
fn main() {
    eprintln!(
        "index_memory needs the `testkit` feature: \
         cargo run --release --features testkit --example index_memory"
    );
}

#[cfg(feature = "testkit")]
fn main() -> mailvault::Result<()> {
    run::main()
}

#[cfg(feature = "testkit")]
mod run {
    use super::{Ordering, LIVE};
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use mailvault::crypto::{AccountKey, RandomSource};
    use mailvault::directory::MemoryDirectory;
    use mailvault::ids::{AccountId, DeploymentId};
    use mailvault::index::{Batch, IndexStore};
    use mailvault::storage::{open_store, CommitMode};

    extern "C" {
        /// glibc: returns free memory at the top of the heap and in free pages to the system.
        fn malloc_trim(pad: usize) -> i32;
    }

    fn trim() {
        // SAFETY: glibc's malloc_trim has no preconditions.
        unsafe {
            malloc_trim(0);
        }
    }

    /// Resident set size in bytes (`VmRSS` of /proc/self/status).
    fn rss() -> usize {
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .expect("VmRSS line");
        let kib: usize = line
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .expect("VmRSS value");
        kib * 1024
    }

    fn heap() -> usize {
        LIVE.load(Ordering::Relaxed)
    }

    fn record_key(i: usize) -> Vec<u8> {
        format!("uid:{i:07}").into_bytes()
    }

    fn value(i: usize, len: usize) -> Vec<u8> {
        mailvault::testkit::pattern(i as u64, len)
    }

    /// A snapshot of the heap and the resident set (after trimming).
    #[derive(Clone, Copy)]
    struct Mark {
        heap: usize,
        rss: usize,
    }

    fn mark() -> Mark {
        trim();
        Mark {
            heap: heap(),
            rss: rss(),
        }
    }

    fn report(what: &str, before: Mark, after: Mark, records: usize, value_len: usize) {
        let per = |a: usize, b: usize| (a as f64 - b as f64) / records as f64 - value_len as f64;
        println!(
            "{what:<44} heap {:>7.1} B/record   rss {:>7.1} B/record   (minus V = {value_len})",
            per(after.heap, before.heap),
            per(after.rss, before.rss),
        );
    }

    /// Stands for the index's per-key entry (generation, writer slot, value).
    #[allow(dead_code)]
    struct EntryLike {
        generation: u64,
        writer: u32,
        value: Option<Bytes>,
    }

    const NAME: &[u8] = b"flags";
    const WARM_UP: &[u8] = b"warm-up";

    /// Fixed identities and a seeded key, so that the measuring child process opens what the
    /// parent built.
    fn index_on(dir: &str) -> mailvault::Result<(IndexStore, AccountId, AccountKey)> {
        let store = open_store(dir)?;
        let index = IndexStore::with_mode(
            store,
            DeploymentId::from_bytes([1; 16]),
            Arc::new(MemoryDirectory::new()),
            CommitMode::CompareAndSwap,
        );
        let key = AccountKey::generate(1, &RandomSource::seeded(7));
        Ok((index, AccountId::from_bytes([2; 16]), key))
    }

    async fn build(
        dir: &str,
        name: &[u8],
        records: usize,
        value_len: usize,
    ) -> mailvault::Result<()> {
        let (index, account, key) = index_on(dir)?;
        let mut writer = index.open(account, &key, name).await?;
        let per_batch = (records / 10).max(1);
        for start in (0..records).step_by(per_batch) {
            let mut batch = Batch::new();
            for i in start..(start + per_batch).min(records) {
                batch.put(record_key(i), value(i, value_len));
            }
            writer.commit(batch).await?;
        }
        writer.compact().await?;
        writer.collect_garbage(Duration::ZERO).await?;
        assert_eq!(writer.live_segments(), 1);
        Ok(())
    }

    /// In a fresh process: opens the collection and reports what the handle holds.
    async fn measure(dir: &str, records: usize, value_len: usize) -> mailvault::Result<()> {
        let (index, account, key) = index_on(dir)?;
        // Warm-up on a small collection: rayon's pool, the runtime's blocking threads.
        drop(index.open(account, &key, WARM_UP).await?);
        let before = mark();
        let collection = index.open(account, &key, NAME).await?;
        let untrimmed = rss();
        let after = mark();
        assert_eq!(collection.len(), records);
        println!(
            "open handle: heap +{:.1} MiB, rss +{:.1} MiB (+{:.1} MiB before malloc_trim)",
            (after.heap - before.heap) as f64 / 1048576.0,
            (after.rss as f64 - before.rss as f64) / 1048576.0,
            (untrimmed as f64 - before.rss as f64) / 1048576.0,
        );
        report(
            "mailvault Collection (fresh process)",
            before,
            after,
            records,
            value_len,
        );
        drop(collection);
        Ok(())
    }

    #[tokio::main(flavor = "current_thread")]
    pub async fn main() -> mailvault::Result<()> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        if args.first().map(String::as_str) == Some("--measure") {
            let records = args[2].parse().expect("N");
            let value_len = args[3].parse().expect("V");
            return measure(&args[1], records, value_len).await;
        }
        let records: usize = args.first().map_or(100_000, |a| a.parse().expect("N"));
        let value_len: usize = args.get(1).map_or(60, |a| a.parse().expect("V"));

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_str().expect("utf-8 path").to_string();
        let started = Instant::now();
        build(&path, NAME, records, value_len).await?;
        build(&path, WARM_UP, 10, value_len).await?;
        println!(
            "{records} records of {value_len}-byte values built in {:.2?}",
            started.elapsed()
        );
        let status = std::process::Command::new(std::env::current_exe().expect("current exe"))
            .args([
                "--measure",
                &path,
                &records.to_string(),
                &value_len.to_string(),
            ])
            .status()
            .expect("measuring process");
        assert!(status.success(), "measuring process failed");

        // References: the same records in plain maps.
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..records)
            .map(|i| (record_key(i), value(i, value_len)))
            .collect();
        let before = mark();
        let mut map = BTreeMap::new();
        for (k, v) in pairs.iter().cloned() {
            map.insert(k, v);
        }
        report(
            "BTreeMap<Vec,Vec>, inserted in order",
            before,
            mark(),
            records,
            value_len,
        );
        drop(map);
        let before = mark();
        let map: BTreeMap<Vec<u8>, Vec<u8>> = pairs.iter().cloned().collect();
        report(
            "BTreeMap<Vec,Vec>, from a sorted iterator",
            before,
            mark(),
            records,
            value_len,
        );
        drop(map);

        // The shape of the index's view (Bytes keys, 48-byte entries with Bytes values), keys
        // and values as slices of shared pages of about 32 KiB (counted), built by insertion
        // and in bulk.
        let stride = 11 + value_len;
        let per_page = (32 * 1024 / stride).max(1);
        let make_pages = || -> Vec<Bytes> {
            pairs
                .chunks(per_page)
                .map(|chunk| {
                    let mut page = Vec::with_capacity(chunk.len() * stride);
                    for (k, v) in chunk {
                        page.extend_from_slice(k);
                        page.extend_from_slice(v);
                    }
                    Bytes::from(page)
                })
                .collect()
        };
        let slices = |pages: &[Bytes]| -> Vec<(Bytes, EntryLike)> {
            pages
                .iter()
                .flat_map(|page| {
                    (0..page.len() / stride).map(move |j| {
                        let at = j * stride;
                        (
                            page.slice(at..at + 11),
                            EntryLike {
                                generation: 1,
                                writer: 0,
                                value: Some(page.slice(at + 11..at + stride)),
                            },
                        )
                    })
                })
                .collect()
        };
        for bulk in [false, true] {
            let before = mark();
            let pages = make_pages();
            let entries = slices(&pages);
            drop(pages);
            let map: BTreeMap<Bytes, EntryLike> = if bulk {
                entries.into_iter().collect()
            } else {
                let mut map = BTreeMap::new();
                for (k, e) in entries {
                    map.insert(k, e);
                }
                map
            };
            report(
                if bulk {
                    "BTreeMap<Bytes,Entry> on pages, bulk-built"
                } else {
                    "BTreeMap<Bytes,Entry> on pages, inserted"
                },
                before,
                mark(),
                records,
                value_len,
            );
            drop(map);
        }
        Ok(())
    }
}
