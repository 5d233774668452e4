//! The whole storage path as a server feels it: encrypted `put`, `read`, stream `get` and
//! a 4 KiB range read through [`AccountBlobs`], against plaintext `object_store` of the
//! same bytes on the same backend, in one process, interleaved (issue 11).
//!
//! Backends: InMemory, a local directory (fsync on, as [`open_store`] opens it; in
//! `$MAILVAULT_STORE_DIR`, default a temporary directory under `target/`), and Garage and
//! moto_server when their `MAILVAULT_S3_{GARAGE,MOTO}_*` variables are set
//! (`bash scripts/s3-servers.sh start && source .s3-servers/env.sh`). Sizes 16 KiB,
//! 256 KiB, 1 MiB and 16 MiB.
//!
//! Each round runs every operation once encrypted and once plain, the order alternating
//! from round to round, on objects written in that round (reads never hit a cache that
//! an earlier round warmed for one side only). Every put writes fresh bytes: a round
//! stamps its number into every 4 KiB of the plaintext (Garage skips blocks it already
//! holds, which would flatter repeated plaintext writes). Objects are deleted after each
//! round, outside the timed part. Where the encrypted put uploads in parts (stored size
//! above [`BlobConfig::multipart_threshold`]), a plaintext multipart upload in parts of
//! the same size is measured too.
//!
//! Reported per backend and size: the median of each operation, encrypted and plain,
//! the ratio plain time ÷ encrypted time (1.0 = as fast as plaintext; a throughput
//! ratio), and the requests each made (through a [`CountingStore`]). For put, read and
//! stream also the cipher alone on the same bytes in memory, timed in the same rounds
//! ([`BlobCipher::seal_parts`] / [`BlobCipher::open_parts`], on all cores), and the two
//! ratios it bounds: plain ÷ (plain + cipher), what a path that does its cipher work
//! after or before its I/O reaches, and plain ÷ max(plain, cipher), what a perfect
//! overlap of the two reaches (the cipher uses every core, so this one is reachable only
//! where the plain operation leaves the cores idle).
//!
//! Run with `cargo bench --bench store --features testkit`. Environment:
//! `MAILVAULT_STORE_ROUNDS` (default 15), `MAILVAULT_STORE_SIZES` (KiB, comma-separated),
//! `MAILVAULT_STORE_BACKENDS` (any of `memory,local,garage,moto`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use mailvault::blob::{AccountBlobs, BlobCipher, BlobConfig, BlobStore};
use mailvault::crypto::{AccountKey, RandomSource};
use mailvault::format::{BlobKind, BlobLayout};
use mailvault::ids::{AccountId, DeploymentId};
use mailvault::storage::{open_store, CountingStore, DynStore, RequestKind};
use object_store::path::Path;
use object_store::ObjectStoreExt;
use object_store::{PutPayload, WriteMultipart};
use tokio::runtime::Runtime;

const SIZES_KIB: [usize; 4] = [16, 256, 1024, 16 * 1024];
const RANGE: u64 = 4096;

/// The operations, in report order.
const OPS: [&str; 5] = ["put", "put (parts)", "read", "get stream", "range 4 KiB"];

fn env_list(name: &str) -> Option<Vec<String>> {
    std::env::var(name)
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// Plaintext of `len` bytes, fresh for `round`: the round's number in every 4 KiB.
fn fresh(base: &[u8], round: u64) -> Vec<u8> {
    let mut data = base.to_vec();
    for block in data.chunks_mut(4096) {
        let n = block.len().min(8);
        block[..n].copy_from_slice(&round.to_le_bytes()[..n]);
    }
    data
}

/// Times of one side (encrypted or plain) of each operation, and its requests.
#[derive(Default)]
struct Side {
    times: BTreeMap<&'static str, Vec<Duration>>,
    requests: BTreeMap<&'static str, usize>,
}

impl Side {
    fn record(&mut self, op: &'static str, took: Duration, requests: usize) {
        self.times.entry(op).or_default().push(took);
        self.requests.insert(op, requests);
    }
}

/// One backend under test: the store as the crate sees it, counted.
struct Backend {
    name: String,
    counting: CountingStore,
    store: DynStore,
    blobs: AccountBlobs,
    config: BlobConfig,
    /// The cipher alone, in memory, on the same bytes: the reference for the bounds.
    cipher: BlobCipher,
}

impl Backend {
    fn new(name: &str, inner: DynStore) -> Self {
        let counting = CountingStore::new(inner);
        let store: DynStore = Arc::new(counting.clone());
        let rng = RandomSource::os();
        let mut config = BlobConfig::default();
        let kib = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
        };
        if let Some(k) = kib("MAILVAULT_STORE_THRESHOLD_KIB") {
            config.multipart_threshold = k << 10;
        }
        if let Some(k) = kib("MAILVAULT_STORE_PART_KIB") {
            config.part_size = k << 10;
        }
        let (deployment, account) = (DeploymentId::random(&rng), AccountId::random(&rng));
        let key = AccountKey::generate(1, &rng);
        let blobs = BlobStore::new(store.clone(), deployment)
            .with_config(config)
            .account(account, &key);
        let cipher = BlobCipher::new(deployment, account, &key);
        Self {
            name: name.to_string(),
            counting,
            store,
            blobs,
            config,
            cipher,
        }
    }

    /// Runs `op`, returning its time and the requests it made.
    async fn timed<T, F: std::future::Future<Output = T>>(&self, op: F) -> (T, Duration, usize) {
        self.counting.reset();
        let started = Instant::now();
        let out = op.await;
        let took = started.elapsed();
        let requests = self
            .counting
            .requests()
            .iter()
            .filter(|r| r.kind != RequestKind::MultipartAbort)
            .count();
        (out, took, requests)
    }

    async fn round(
        &self,
        len: usize,
        base: &[u8],
        round: u64,
        sides: (&mut Side, &mut Side, &mut Side),
    ) {
        let (enc, plain, cipher) = sides;
        let data = fresh(base, round);
        // The cipher alone on the same bytes, in memory (what `put` seals, what `read`
        // opens): the reference for the bounds.
        {
            let rng = RandomSource::os();
            let id = mailvault::ids::BlobId::random(&rng);
            let started = Instant::now();
            let (pin, sealed) = self
                .cipher
                .seal_parts(&rng, id, BlobKind::Message, &data)
                .expect("seal");
            cipher.record("seal", started.elapsed(), 0);
            let stored: Vec<u8> = sealed.iter().flat_map(|b| b.iter().copied()).collect();
            let started = Instant::now();
            let opened = self.cipher.open_parts(&pin, &stored).expect("open");
            cipher.record("open", started.elapsed(), 0);
            assert_eq!(opened.iter().map(Bytes::len).sum::<usize>(), len);
        }
        let path = Path::from(format!("plain/{round}-{len}"));
        let parts_path = Path::from(format!("plain/{round}-{len}-parts"));
        let stored_len = BlobLayout::for_plaintext(len as u64)
            .expect("a valid size")
            .ciphertext_len();
        let in_parts = stored_len > self.config.multipart_threshold as u64;
        let mid = (len as u64 / 2).min(len as u64 - RANGE);
        let encrypted_first = round.is_multiple_of(2);

        // put
        let mut pin = None;
        for side in order(encrypted_first) {
            if side {
                let (p, took, n) = self.timed(self.blobs.put(BlobKind::Message, &data)).await;
                pin = Some(p.expect("encrypted put"));
                enc.record("put", took, n);
            } else {
                let payload = PutPayload::from(Bytes::from(data.clone()));
                let (r, took, n) = self.timed(self.store.put(&path, payload)).await;
                r.expect("plain put");
                plain.record("put", took, n);
            }
        }
        if in_parts {
            let part = self.config.part_size;
            let (r, took, n) = self
                .timed(async {
                    let upload = self.store.put_multipart(&parts_path).await?;
                    let mut writer = WriteMultipart::new_with_chunk_size(upload, part);
                    writer.write(&data);
                    writer.finish().await
                })
                .await;
            r.expect("plain multipart put");
            plain.record("put (parts)", took, n);
        }
        let pin = pin.expect("the encrypted side ran");

        // read
        for side in order(!encrypted_first) {
            if side {
                let (r, took, n) = self.timed(self.blobs.read(&pin)).await;
                assert_eq!(r.expect("encrypted read").len(), len);
                enc.record("read", took, n);
            } else {
                let (r, took, n) = self
                    .timed(async { self.store.get(&path).await?.bytes().await })
                    .await;
                assert_eq!(r.expect("plain read").len(), len);
                plain.record("read", took, n);
            }
        }

        // get stream
        for side in order(encrypted_first) {
            if side {
                let (r, took, n) = self
                    .timed(async {
                        let mut stream = self.blobs.get(&pin).await?;
                        let mut total = 0;
                        while let Some(chunk) = stream.next().await {
                            total += chunk?.len();
                        }
                        mailvault::Result::<usize>::Ok(total)
                    })
                    .await;
                assert_eq!(r.expect("encrypted stream"), len);
                enc.record("get stream", took, n);
            } else {
                let (r, took, n) = self
                    .timed(async {
                        let mut stream = self.store.get(&path).await?.into_stream();
                        let mut total = 0;
                        while let Some(chunk) = stream.next().await {
                            total += chunk?.len();
                        }
                        object_store::Result::<usize>::Ok(total)
                    })
                    .await;
                assert_eq!(r.expect("plain stream"), len);
                plain.record("get stream", took, n);
            }
        }

        // range
        for side in order(!encrypted_first) {
            if side {
                let (r, took, n) = self
                    .timed(self.blobs.get_range(&pin, mid..mid + RANGE))
                    .await;
                assert_eq!(
                    r.expect("encrypted range")[..],
                    data[mid as usize..(mid + RANGE) as usize]
                );
                enc.record("range 4 KiB", took, n);
            } else {
                let (r, took, n) = self
                    .timed(self.store.get_range(&path, mid..mid + RANGE))
                    .await;
                assert_eq!(r.expect("plain range").len() as u64, RANGE);
                plain.record("range 4 KiB", took, n);
            }
        }

        // Clean up, untimed.
        self.blobs.delete(&pin.id).await.expect("delete blob");
        self.store.delete(&path).await.expect("delete plain");
        if in_parts {
            self.store.delete(&parts_path).await.expect("delete parts");
        }
    }
}

fn order(first: bool) -> [bool; 2] {
    [first, !first]
}

fn label(len: usize) -> String {
    if len >= 1 << 20 {
        format!("{} MiB", len >> 20)
    } else {
        format!("{} KiB", len >> 10)
    }
}

fn backends(local_dir: &std::path::Path) -> Vec<Backend> {
    let wanted = env_list("MAILVAULT_STORE_BACKENDS").unwrap_or_else(|| {
        ["memory", "local", "garage", "moto"]
            .map(String::from)
            .to_vec()
    });
    let mut out = Vec::new();
    for name in wanted {
        let store = match name.as_str() {
            "memory" => Some(open_store("memory://").expect("memory store")),
            "local" => Some(
                open_store(local_dir.to_str().expect("a UTF-8 temporary path"))
                    .expect("local store"),
            ),
            "garage" => mailvault::testkit::s3_from_env("GARAGE"),
            "moto" => mailvault::testkit::s3_from_env("MOTO"),
            other => panic!("unknown backend {other} (memory, local, garage, moto)"),
        };
        if let Some(store) = store {
            out.push(Backend::new(&name, store));
        }
    }
    out
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let rounds: u64 = std::env::var("MAILVAULT_STORE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let sizes: Vec<usize> = env_list("MAILVAULT_STORE_SIZES")
        .map(|v| {
            v.iter()
                .map(|s| s.parse::<usize>().expect("sizes in KiB") << 10)
                .collect()
        })
        .unwrap_or_else(|| SIZES_KIB.iter().map(|k| k << 10).collect());
    let parent = std::env::var("MAILVAULT_STORE_DIR").unwrap_or_else(|_| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
        std::fs::create_dir_all(&dir).expect("target/");
        dir.to_string_lossy().into_owned()
    });
    let local = tempfile::tempdir_in(parent).expect("a temporary directory");
    let rt = Runtime::new().expect("tokio runtime");
    let backends = backends(local.path());

    println!(
        "storage path: encrypted (AccountBlobs) against plaintext object_store on the same \
         backend; medians of {rounds} interleaved rounds; ratio = plain time / encrypted time"
    );
    for backend in &backends {
        println!("\n## {}\n", backend.name);
        println!(
            "| size | operation | encrypted | plain | ratio | cipher alone | bound serial / overlapped | requests enc / plain |\n|---|---|---|---|---|---|---|---|"
        );
        for &len in &sizes {
            let base = mailvault::testkit::pattern(len as u64, len);
            let (mut enc, mut plain, mut cipher) =
                (Side::default(), Side::default(), Side::default());
            // One warm-up round, untimed (connections, page cache of the directory).
            rt.block_on(backend.round(
                len,
                &base,
                u64::MAX,
                (
                    &mut Side::default(),
                    &mut Side::default(),
                    &mut Side::default(),
                ),
            ));
            for round in 0..rounds {
                rt.block_on(backend.round(len, &base, round, (&mut enc, &mut plain, &mut cipher)));
            }
            for op in OPS {
                let (e, p) = (enc.times.get(op), plain.times.get(op));
                let (e_req, p_req) = (enc.requests.get(op), plain.requests.get(op));
                let show = |t: Option<&Vec<Duration>>| {
                    t.map_or("".to_string(), |t| format!("{:.2?}", median(t.clone())))
                };
                let ratio = match (op, e, p) {
                    (_, Some(e), Some(p)) => format!(
                        "{:.2}",
                        median(p.clone()).as_secs_f64() / median(e.clone()).as_secs_f64()
                    ),
                    // The plain multipart upload against the encrypted put (in parts too).
                    ("put (parts)", None, Some(p)) => format!(
                        "{:.2}",
                        median(p.clone()).as_secs_f64()
                            / median(enc.times["put"].clone()).as_secs_f64()
                    ),
                    _ => continue,
                };
                let enc_shown = if op == "put (parts)" {
                    show(enc.times.get("put"))
                } else {
                    show(e)
                };
                let e_req = if op == "put (parts)" {
                    enc.requests.get("put")
                } else {
                    e_req
                };
                // The bounds: the plain operation plus the cipher on the same bytes done
                // after it (serial), or hidden behind it (overlapped).
                let work = match op {
                    "put" | "put (parts)" => cipher.times.get("seal"),
                    "read" | "get stream" => cipher.times.get("open"),
                    _ => None,
                };
                let bounds = match (work, p) {
                    (Some(c), Some(p)) => {
                        let (c, p) = (
                            median(c.clone()).as_secs_f64(),
                            median(p.clone()).as_secs_f64(),
                        );
                        format!(
                            "{:.2?} | {:.2} / {:.2}",
                            Duration::from_secs_f64(c),
                            p / (p + c),
                            p / p.max(c)
                        )
                    }
                    _ => " | ".to_string(),
                };
                println!(
                    "| {} | {op} | {enc_shown} | {} | {ratio} | {bounds} | {} / {} |",
                    label(len),
                    show(p),
                    e_req.map_or("".into(), |n| n.to_string()),
                    p_req.map_or("".into(), |n| n.to_string()),
                );
            }
        }
    }
}
