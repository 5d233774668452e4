//! Key management: what a login costs against the bare Argon2id derivation it performs,
//! and what the key operations around it cost.
//!
//! Everything runs with [`DEFAULT_KDF`] (m = 19 MiB, t = 2, p = 1) on an in-memory store
//! (`memory://`, object_store's `InMemory`), a [`MemoryDirectory`] with one officer key,
//! a deployment pepper, and the default [`KdfGate`] (one permit per core).
//!
//! Groups:
//! - `login/mailvault`: [`Provider::unlock`] with the right password (directory record,
//!   keyring list and fetch, one Argon2id derivation under the gate on a blocking thread,
//!   HKDF, commitment check, slot and keyring body opened, high-water mark raised, session
//!   built); `login/raw_argon2`: one `argon2::Argon2` (Argon2id, V0x13, same costs, 32-byte
//!   output) `hash_password_into` on the benchmark thread: the reference. Target: ratio
//!   of medians ≤ 1.05. `login/raw_argon2_reused_memory`: the same derivation with
//!   `hash_password_into_with_memory` into a buffer kept across calls (no allocation).
//! - `login_wrong_password/mailvault`: the same login with a wrong password (it must cost
//!   the same derivation as the right one).
//! - `session_reuse/{collection_open,blob_read}`: work on an unlocked [`Session`]: opening
//!   a small index collection (16 records) and reading a small blob (4 KiB): a cached
//!   session does not pay the KDF.
//! - `password_change/mailvault`: [`Session::change_password`] (one derivation on the
//!   calling task, then one keyring publish and the deletion of the superseded one).
//! - `officer_recovery/officer_open`: [`Provider::officer_open`] (X25519, no Argon2; the
//!   action is recorded in the keyring, so each open publishes a generation). Every open
//!   appends an officer record to the keyring and the record count is a `u16`, so the
//!   benchmark moves to a fresh account every [`OPENS_PER_ACCOUNT`] opens (creations are
//!   not timed): the keyring stays small, as in real use.
//!
//! After criterion, the bench prints the ratios of criterion's medians (read from
//! `target/criterion/*/new/estimates.json`) and runs an interleaved check: login, wrong
//! password, raw Argon2 on the calling thread and raw Argon2 on a tokio blocking thread
//! alternated `MAILVAULT_BENCH_PAIRS` times (default 25; 0 skips it): medians, ratios and
//! minor page faults per call (`/proc/self/stat`). Interleaving cancels the drift of a
//! noisy shared machine; the fault counts show where a login's extra time goes (see
//! the note below).
//!
//! Note (glibc): the derivation's 19 MiB `Vec<Block>` is 64-byte aligned, so Rust's
//! system allocator calls `posix_memalign`, which asks the arena for size + 96 bytes. On
//! the gate's blocking threads (a per-thread arena) the holes left by earlier derivations
//! are exactly one derivation's size and are kept apart by small live allocations, so
//! none fits: every login maps a fresh 64 MiB sub-heap, faults its 4864 pages in, and
//! unmaps it on free. On the benchmark's main thread (main arena) the buffer merges back
//! into the top chunk and is reused without a fault. `GLIBC_TUNABLES=glibc.malloc.arena_max=1`
//! makes the two paths alike.
//!
//! Run with `cargo bench --bench keys --features testkit`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use argon2::{Algorithm, Argon2, Block, Params, Version};
use criterion::measurement::WallTime;
use criterion::{black_box, BenchmarkGroup, Criterion, SamplingMode};
use mailvault::crypto::RandomSource;
use mailvault::directory::{Directory, MemoryDirectory, OfficerKeyEntry};
use mailvault::engine::{Provider, ProviderConfig, Session};
use mailvault::format::BlobKind;
use mailvault::ids::{AccountId, DeploymentId};
use mailvault::index::Batch;
use mailvault::keys::{OfficerSecret, DEFAULT_KDF};
use mailvault::Error;
use tokio::runtime::Runtime;

const PASSWORD: &str = "correct horse battery staple";
const WRONG: &str = "correct horse battery stapler";
/// Officer opens per account before `officer_recovery` moves to a fresh one.
const OPENS_PER_ACCOUNT: u64 = 64;

struct Fixture {
    rt: Runtime,
    provider: Provider,
    officer: OfficerSecret,
    /// The account every login benchmark unlocks (never modified by them).
    alice: AccountId,
}

impl Fixture {
    fn new() -> Self {
        let rt = Runtime::new().expect("tokio runtime");
        let rng = RandomSource::os();
        let officer = OfficerSecret::generate(&rng);
        let (provider, alice) = rt.block_on(async {
            let directory = Arc::new(MemoryDirectory::new());
            directory
                .set_officer_keys(vec![OfficerKeyEntry {
                    key: officer.public(),
                    current: true,
                }])
                .await
                .expect("officer keys");
            let store = mailvault::storage::open_store("memory://").expect("store");
            let config = ProviderConfig {
                pepper: Some([5; 32]),
                ..ProviderConfig::default()
            };
            assert_eq!(config.kdf, DEFAULT_KDF);
            let provider = Provider::new(store, DeploymentId::random(&rng), directory, config)
                .await
                .expect("provider");
            let alice = provider.create_account(PASSWORD).await.expect("account");
            (provider, alice)
        });
        Self {
            rt,
            provider,
            officer,
            alice,
        }
    }

    async fn unlock(&self, password: &str) -> Result<Session, Error> {
        self.provider.unlock(self.alice, password).await
    }
}

fn argon2_default() -> Argon2<'static> {
    let params = Params::new(DEFAULT_KDF.m_kib, DEFAULT_KDF.t, DEFAULT_KDF.p, Some(32))
        .expect("argon2 params");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// One raw derivation, as a password slot does it (32-byte salt, 32-byte output).
fn raw_argon2(argon: &Argon2<'_>, salt: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    argon
        .hash_password_into(black_box(PASSWORD.as_bytes()), black_box(salt), &mut out)
        .expect("argon2");
    out
}

/// Settings of the groups whose iterations take tens of milliseconds.
fn slow(group: &mut BenchmarkGroup<'_, WallTime>) {
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(15);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(6));
}

fn fast(group: &mut BenchmarkGroup<'_, WallTime>) {
    group.sample_size(20);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
}

fn login(c: &mut Criterion, fx: &Fixture) {
    let argon = argon2_default();
    let salt = [9u8; 32];
    let mut group = c.benchmark_group("login");
    slow(&mut group);
    group.bench_function("mailvault", |b| {
        b.to_async(&fx.rt)
            .iter(|| async { fx.unlock(PASSWORD).await.expect("login") })
    });
    group.bench_function("raw_argon2", |b| b.iter(|| raw_argon2(&argon, &salt)));
    // The same derivation into a buffer kept across calls: no allocation, no page fault,
    // no zero fill: the floor for a gate that kept one buffer per permit.
    let mut memory = vec![Block::default(); argon.params().block_count()];
    group.bench_function("raw_argon2_reused_memory", |b| {
        b.iter(|| {
            let mut out = [0u8; 32];
            argon
                .hash_password_into_with_memory(
                    black_box(PASSWORD.as_bytes()),
                    black_box(&salt),
                    &mut out,
                    &mut memory[..],
                )
                .expect("argon2");
            out
        })
    });
    group.finish();

    let mut group = c.benchmark_group("login_wrong_password");
    slow(&mut group);
    group.bench_function("mailvault", |b| {
        b.to_async(&fx.rt).iter(|| async {
            match fx.unlock(WRONG).await {
                Err(Error::WrongCredential) => {}
                other => panic!("expected WrongCredential, got {other:?}"),
            }
        })
    });
    group.finish();
}

fn session_reuse(c: &mut Criterion, fx: &Fixture) {
    let session = fx.rt.block_on(fx.unlock(PASSWORD)).expect("login");
    let pin = fx.rt.block_on(async {
        let mut flags = session.collection(b"flags").await.expect("collection");
        let mut batch = Batch::new();
        for uid in 0..16 {
            batch.put(format!("uid:{uid:07}").into_bytes(), &b"\\Seen"[..]);
        }
        flags.commit(batch).await.expect("commit");
        session
            .blobs()
            .put(BlobKind::Message, &[b'x'; 4096])
            .await
            .expect("put")
    });
    let session = &session;
    let mut group = c.benchmark_group("session_reuse");
    fast(&mut group);
    group.bench_function("collection_open", |b| {
        b.to_async(&fx.rt).iter(|| async {
            let flags = session.collection(b"flags").await.expect("open");
            assert_eq!(flags.len(), 16);
            flags
        })
    });
    group.bench_function("blob_read", |b| {
        b.to_async(&fx.rt)
            .iter(|| async { session.blobs().read(&pin).await.expect("read") })
    });
    group.finish();
}

fn password_change(c: &mut Criterion, fx: &Fixture) {
    // An account of its own: the login benchmarks keep their password.
    let (bob, session) = fx.rt.block_on(async {
        let bob = fx.provider.create_account(PASSWORD).await.expect("account");
        (bob, fx.provider.unlock(bob, PASSWORD).await.expect("login"))
    });
    let session = Arc::new(tokio::sync::Mutex::new(session));
    let mut group = c.benchmark_group("password_change");
    slow(&mut group);
    let mut round = 0u64;
    group.bench_function("mailvault", |b| {
        b.to_async(&fx.rt).iter_custom(|iters| {
            let session = session.clone();
            round += 1;
            let round = round;
            async move {
                let mut session = session.lock().await;
                let started = Instant::now();
                for i in 0..iters {
                    session
                        .change_password(&format!("password {round}/{i}"))
                        .await
                        .expect("change");
                }
                started.elapsed()
            }
        })
    });
    group.finish();
    // The first password stopped working at the first change.
    if round > 0 {
        let opened = fx.rt.block_on(fx.provider.unlock(bob, PASSWORD));
        assert!(matches!(opened, Err(Error::WrongCredential)));
    }
}

fn officer_recovery(c: &mut Criterion, fx: &Fixture) {
    let mut group = c.benchmark_group("officer_recovery");
    group.sample_size(20);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    group.sampling_mode(SamplingMode::Flat);
    let current: Arc<std::sync::Mutex<(Option<AccountId>, u64)>> = Arc::default();
    group.bench_function("officer_open", |b| {
        b.to_async(&fx.rt).iter_custom(|iters| {
            let current = current.clone();
            async move {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let account = {
                        let (account, opens) = *current.lock().unwrap();
                        match account {
                            Some(a) if opens < OPENS_PER_ACCOUNT => a,
                            _ => {
                                let a = fx.provider.create_account(PASSWORD).await.expect("acct");
                                *current.lock().unwrap() = (Some(a), 0);
                                a
                            }
                        }
                    };
                    let started = Instant::now();
                    let session = fx
                        .provider
                        .officer_open(account, &fx.officer)
                        .await
                        .expect("officer open");
                    drop(black_box(session));
                    timed += started.elapsed();
                    current.lock().unwrap().1 += 1;
                }
                timed
            }
        })
    });
    group.finish();
}

/// Criterion's output directory, as criterion finds it.
fn criterion_dir() -> std::path::PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return home.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("criterion")
}

/// The median point estimate (ns) of `group/function` in this run's estimates.
fn criterion_median(id: &str) -> Option<f64> {
    let path = criterion_dir().join(id).join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let at = text.find("\"median\"")?;
    let rest = &text[at..];
    let at = rest.find("\"point_estimate\":")? + "\"point_estimate\":".len();
    let rest = rest[at..].trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn ms(ns: f64) -> String {
    format!("{:.3} ms", ns / 1e6)
}

fn report_criterion_ratios() {
    let ids = [
        "login/mailvault",
        "login/raw_argon2",
        "login_wrong_password/mailvault",
        "session_reuse/collection_open",
        "session_reuse/blob_read",
        "password_change/mailvault",
        "officer_recovery/officer_open",
        "login/raw_argon2_reused_memory",
    ];
    println!("\ncriterion medians (latest estimates on disk):");
    let medians: Vec<Option<f64>> = ids.iter().map(|id| criterion_median(id)).collect();
    for (id, m) in ids.iter().zip(&medians) {
        match m {
            Some(ns) => println!("  {id:<34} {}", ms(*ns)),
            None => println!("  {id:<34} (no estimate: filtered out?)"),
        }
    }
    let ratio = |a: usize, b: usize| medians[a].zip(medians[b]).map(|(a, b)| a / b);
    if let Some(r) = ratio(0, 1) {
        let verdict = if r <= 1.05 { "meets" } else { "MISSES" };
        println!("  login / raw_argon2                 {r:.4}  ({verdict} the 1.05 target)");
    }
    if let Some(r) = ratio(0, 7) {
        println!("  login / raw_argon2_reused_memory   {r:.4}");
    }
    if let Some(r) = ratio(1, 7) {
        println!("  raw_argon2 / reused_memory         {r:.4}");
    }
    if let Some(r) = ratio(2, 0) {
        println!("  wrong password / login             {r:.4}");
    }
    if let Some(r) = ratio(5, 1) {
        println!("  password_change / raw_argon2       {r:.4}");
    }
    if let Some(r) = ratio(0, 3) {
        println!("  login / session collection_open    {r:.0}x");
    }
    if let Some(r) = ratio(0, 4) {
        println!("  login / session blob_read          {r:.0}x");
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Minor page faults of the process so far (`/proc/self/stat`, field 10).
fn minor_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name (field 2) is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    after
        .split_whitespace()
        .nth(7)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Login, wrong password, raw Argon2 on the calling thread and raw Argon2 on a tokio
/// blocking thread (as the gate runs it) alternated, rotating the order each round, so
/// that all four see the same machine state; minor page faults counted for each.
fn interleaved(fx: &Fixture) {
    let rounds: usize = std::env::var("MAILVAULT_BENCH_PAIRS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25);
    if rounds == 0 {
        return;
    }
    let argon = Arc::new(argon2_default());
    let salt = [9u8; 32];
    const NAMES: [&str; 4] = [
        "login (right password)",
        "login (wrong password)",
        "raw Argon2id, this thread",
        "raw Argon2id, spawn_blocking",
    ];
    let mut times: [Vec<f64>; 4] = Default::default();
    let mut faults = [0u64; 4];
    for round in 0..rounds {
        for k in 0..4 {
            let which = (round + k) % 4;
            let faults_before = minor_faults();
            let started = Instant::now();
            match which {
                0 => drop(fx.rt.block_on(fx.unlock(PASSWORD)).expect("login")),
                1 => {
                    let r = fx.rt.block_on(fx.unlock(WRONG));
                    assert!(matches!(r, Err(Error::WrongCredential)));
                }
                2 => {
                    black_box(raw_argon2(&argon, &salt));
                }
                _ => {
                    let argon = argon.clone();
                    let out = fx
                        .rt
                        .block_on(fx.rt.spawn_blocking(move || raw_argon2(&argon, &salt)))
                        .expect("blocking task");
                    black_box(out);
                }
            }
            times[which].push(started.elapsed().as_nanos() as f64);
            faults[which] += minor_faults() - faults_before;
        }
    }
    let medians: Vec<f64> = times.iter_mut().map(|t| median(t)).collect();
    println!("\ninterleaved check ({rounds} rounds, medians; minor page faults per call):");
    for (i, name) in NAMES.iter().enumerate() {
        println!(
            "  {name:<30} {}  {:>6} faults",
            ms(medians[i]),
            faults[i] / rounds as u64
        );
    }
    println!(
        "  login / raw (this thread)      {:.4}",
        medians[0] / medians[2]
    );
    println!(
        "  login / raw (spawn_blocking)   {:.4}",
        medians[0] / medians[3]
    );
    println!(
        "  wrong / login                  {:.4}",
        medians[1] / medians[0]
    );
    println!(
        "  (one derivation touches {} pages of 4 KiB)",
        DEFAULT_KDF.m_kib / 4
    );
}

fn main() {
    let fx = Fixture::new();
    let mut c = Criterion::default().configure_from_args();
    login(&mut c, &fx);
    session_reuse(&mut c, &fx);
    password_change(&mut c, &fx);
    officer_recovery(&mut c, &fx);
    c.final_summary();
    // `cargo test --benches` runs each benchmark once (no `--bench`): no report then.
    if std::env::args().any(|a| a == "--bench") {
        report_criterion_ratios();
        interleaved(&fx);
    }
}
