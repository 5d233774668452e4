//! A login storm: many concurrent logins of one account through one [`Provider`], and
//! the memory they take. The [`KdfGate`] lets `permits` Argon2id derivations (19 MiB each
//! with `DEFAULT_KDF`) run at once; the other logins wait for a permit holding nothing
//! but a few small buffers, so the peak resident set should stay under
//!
//! ```text
//! resident set before the storm + permits × 19 MiB + 4 MiB (waiting tasks, thread stacks)
//! ```
//!
//! whatever the number of concurrent logins.
//!
//! Creates one account (`DEFAULT_KDF`, in-memory store and directory), spawns all the
//! logins at once (`tokio::spawn`), and reports the wall time, the throughput, the p50,
//! p99 and max latency of each login (from its spawn to its session), and the memory: the
//! resident set before the storm, the peak (`VmHWM` from `/proc/self/status`, and the
//! largest `VmRSS` and thread count seen by a sampler thread every 2 ms) against the
//! bound above.
//!
//! With glibc's malloc the peak is far above the bound (hundreds of MiB for two permits),
//! although no more than `permits` derivations ever run at once: the derivation's buffer
//! is a 64-byte aligned `Vec<argon2::Block>`, so it comes from `posix_memalign`, which
//! asks for 19 MiB + 96 bytes; the holes earlier derivations left (exactly 19 MiB, kept
//! apart by small live allocations) never fit, so the arenas keep growing and the holes
//! stay resident. It grows with the number of blocking threads (the gate's permits), not
//! with the number of logins. Forcing such buffers onto `mmap`
//! (`GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1048576`) brings the peak back within
//! about 1 MiB of `before + permits × 19 MiB`.
//!
//! ```sh
//! cargo run --release --example login_storm            # default gate (one permit per core), 200 logins
//! cargo run --release --example login_storm -- 8       # a gate of 8 permits
//! cargo run --release --example login_storm -- 8 400   # 8 permits, 400 logins
//! /usr/bin/time -v target/release/examples/login_storm 2
//! GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1048576 target/release/examples/login_storm 2
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mailvault::crypto::RandomSource;
use mailvault::directory::{Directory, MemoryDirectory, OfficerKeyEntry};
use mailvault::engine::{Provider, ProviderConfig};
use mailvault::ids::DeploymentId;
use mailvault::keys::{KdfGate, OfficerSecret, DEFAULT_KDF};

const PASSWORD: &str = "correct horse battery staple";
/// The constant of the bound: the waiting tasks, the blocking threads' stacks and arenas.
const SLACK_KIB: u64 = 4 * 1024;

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`) or as a count (`Threads`).
fn status(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .find_map(|line| {
            let rest = line.strip_prefix(field)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Nearest-rank percentile of sorted `v`.
fn percentile(v: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let permits: Option<usize> = args
        .next()
        .map(|a| a.parse().expect("first argument: gate permits"));
    let logins: usize = args.next().map_or(200, |a| {
        a.parse().expect("second argument: number of logins")
    });
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(storm(permits, logins, cores));
}

async fn storm(permits: Option<usize>, logins: usize, cores: usize) {
    let rng = RandomSource::os();
    let officer = OfficerSecret::generate(&rng);
    let directory = Arc::new(MemoryDirectory::new());
    directory
        .set_officer_keys(vec![OfficerKeyEntry {
            key: officer.public(),
            current: true,
        }])
        .await
        .expect("officer keys");
    let store = mailvault::storage::open_store("memory://").expect("store");
    let mut config = ProviderConfig {
        pepper: Some([5; 32]),
        ..ProviderConfig::default()
    };
    // Without an argument: the default gate, one permit per core.
    let permits = permits.unwrap_or(cores);
    config.gate = KdfGate::new(permits);
    let provider = Arc::new(
        Provider::new(store, DeploymentId::random(&rng), directory, config)
            .await
            .expect("provider"),
    );
    let account = provider.create_account(PASSWORD).await.expect("account");
    let per_derivation_kib = u64::from(DEFAULT_KDF.m_kib);

    let rss_before = status("VmRSS");
    let hwm_before = status("VmHWM");
    let threads_before = status("Threads");

    // A sampler thread (outside the runtime): the largest VmRSS and thread count seen.
    let stop = Arc::new(AtomicBool::new(false));
    let max_rss = Arc::new(AtomicU64::new(rss_before));
    let max_threads = Arc::new(AtomicU64::new(threads_before));
    let sampler = {
        let (stop, max_rss, max_threads) = (stop.clone(), max_rss.clone(), max_threads.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                max_rss.fetch_max(status("VmRSS"), Ordering::Relaxed);
                max_threads.fetch_max(status("Threads"), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };

    println!(
        "login storm: {logins} concurrent logins, gate of {permits} permits, {cores} cores, \
         Argon2id m={} KiB t={} p={}",
        DEFAULT_KDF.m_kib, DEFAULT_KDF.t, DEFAULT_KDF.p
    );
    let started = Instant::now();
    let tasks: Vec<_> = (0..logins)
        .map(|_| {
            let provider = provider.clone();
            let spawned = Instant::now();
            tokio::spawn(async move {
                let session = provider.unlock(account, PASSWORD).await.expect("login");
                let latency = spawned.elapsed();
                drop(session);
                latency
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(logins);
    for task in tasks {
        latencies.push(task.await.expect("login task"));
    }
    let wall = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");

    latencies.sort();
    let hwm = status("VmHWM");
    let rss_after = status("VmRSS");
    let bound = rss_before + permits as u64 * per_derivation_kib + SLACK_KIB;
    println!("wall time          {:.3} s", wall.as_secs_f64());
    println!(
        "throughput         {:.1} logins/s ({:.1} ms of wall time per login)",
        logins as f64 / wall.as_secs_f64(),
        wall.as_secs_f64() * 1e3 / logins as f64
    );
    println!(
        "latency            p50 {}  p99 {}  min {}  max {}",
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        ms(latencies[0]),
        ms(latencies[latencies.len() - 1])
    );
    println!(
        "resident set       before the storm {:.1} MiB (VmHWM then {:.1} MiB: account creation)",
        mib(rss_before),
        mib(hwm_before)
    );
    println!(
        "                   peak VmHWM {:.1} MiB, largest sampled VmRSS {:.1} MiB, after {:.1} MiB",
        mib(hwm),
        mib(max_rss.load(Ordering::Relaxed)),
        mib(rss_after)
    );
    println!(
        "                   growth over the storm {:.1} MiB = {:.2} derivations of {:.0} MiB",
        mib(hwm.saturating_sub(rss_before)),
        hwm.saturating_sub(rss_before) as f64 / per_derivation_kib as f64,
        mib(per_derivation_kib)
    );
    println!(
        "bound              before + {permits} × {:.0} MiB + {:.0} MiB = {:.1} MiB: peak is {} ({:+.1} MiB)",
        mib(per_derivation_kib),
        mib(SLACK_KIB),
        mib(bound),
        if hwm <= bound { "within" } else { "ABOVE" },
        mib(hwm) - mib(bound)
    );
    println!(
        "threads            {threads_before} before, at most {} during the storm",
        max_threads.load(Ordering::Relaxed)
    );
}
