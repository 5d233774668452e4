//! What the trusted directory costs as the commit point of a versioned record (issue 10,
//! item 3; the decision and these figures are in `docs/design.md` §7). Measures, one
//! operation at a time:
//!
//! - a mark read and a compare-and-set on `MemoryDirectory` and on `FileDirectory` (a
//!   flock, a read, a fsynced write to a temporary file, a rename and a fsync of the
//!   folder);
//! - a one-key index commit on a local directory, with compare-and-swap
//!   (LocalFileSystem) and without (wrapped in `NoCasStore`, as Garage: the commit is
//!   the compare-and-set of the collection's mark in the directory), the marks in a
//!   `FileDirectory` (each commit writes its mark there) and in a `MemoryDirectory` (the
//!   difference is what the directory costs);
//! - a keyring commit (an officer record appended: no key derivation) on the same
//!   stores: a PUT, the directory's compare-and-set, a LIST and the DELETE of the
//!   superseded generation.
//!
//! ```sh
//! cargo run --release --all-features --example commit_point_cost            # 300 rounds
//! cargo run --release --all-features --example commit_point_cost -- 1000
//! ```

use std::sync::Arc;
use std::time::Instant;

use mailvault::crypto::{AccountKey, RandomSource};
use mailvault::directory::{Directory, FileDirectory, Mark, MemoryDirectory};
use mailvault::ids::{AccountId, DeploymentId};
use mailvault::index::{Batch, IndexStore};
use mailvault::keys::{KeyringStore, SlotBinding, SlotLock};
use mailvault::storage::{open_store, CommitMode, DynStore, NoCasStore};

fn per_op(started: Instant, rounds: u32) -> String {
    let micros = started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds);
    if micros >= 1000.0 {
        format!("{:.2} ms", micros / 1000.0)
    } else if micros >= 1.0 {
        format!("{micros:.1} µs")
    } else {
        format!("{:.0} ns", micros * 1000.0)
    }
}

async fn directory_ops(name: &str, directory: &dyn Directory, rounds: u32) {
    let account = AccountId::from_bytes([1; 16]);
    let started = Instant::now();
    for _ in 0..rounds {
        directory.mark(&account, "keyring").await.unwrap();
    }
    let read = per_op(started, rounds);
    let mut mark = Mark::NONE;
    let started = Instant::now();
    for generation in 1..=u64::from(rounds) {
        let mut digest = [0u8; 32];
        digest[..8].copy_from_slice(&generation.to_be_bytes());
        let next = Mark::new(generation, digest);
        assert!(directory
            .compare_and_set_mark(&account, "keyring", mark, next)
            .await
            .unwrap());
        mark = next;
    }
    println!(
        "| {name} | mark read {read} | compare-and-set {} |",
        per_op(started, rounds)
    );
}

async fn commits(name: &str, store: DynStore, mode: CommitMode, rounds: u32) {
    let root = tempfile::tempdir().unwrap();
    let file: Arc<dyn Directory> = Arc::new(FileDirectory::open(root.path()).unwrap());
    for (directory, which) in [
        (file, "FileDirectory"),
        (
            Arc::new(MemoryDirectory::new()) as Arc<dyn Directory>,
            "MemoryDirectory",
        ),
    ] {
        commits_with(
            &format!("{name}, marks in {which}"),
            store.clone(),
            mode,
            rounds,
            directory,
        )
        .await;
    }
}

async fn commits_with(
    name: &str,
    store: DynStore,
    mode: CommitMode,
    rounds: u32,
    directory: Arc<dyn Directory>,
) {
    let rng = RandomSource::os();
    let deployment = DeploymentId::random(&rng);
    let account = AccountId::random(&rng);
    let index = IndexStore::with_mode(store.clone(), deployment, directory.clone(), mode);
    let mut collection = index
        .open(account, &AccountKey::generate(1, &rng), b"bench")
        .await
        .unwrap();
    let started = Instant::now();
    for i in 0..rounds {
        let mut batch = Batch::new();
        batch.put(format!("k{}", i % 50).into_bytes(), vec![7u8; 60]);
        collection.commit(batch).await.unwrap();
    }
    let index_commit = per_op(started, rounds);
    let keyrings = KeyringStore::new(store, deployment, directory, mode);
    let binding = SlotBinding::new(deployment, account, [9; 32], None);
    let mut keyring = keyrings
        .create(
            account,
            binding,
            vec![SlotLock::DeviceKey(&mailvault::keys::DeviceKey::generate(
                &rng,
            ))],
        )
        .await
        .unwrap();
    let started = Instant::now();
    for _ in 0..rounds {
        keyring.record_officer_action(3, [5; 32]).await.unwrap();
    }
    println!(
        "| {name} | index commit {index_commit} | keyring commit {} |",
        per_op(started, rounds)
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    println!("{rounds} rounds, one operation at a time");
    directory_ops("MemoryDirectory", &MemoryDirectory::new(), rounds * 100).await;
    let root = tempfile::tempdir().unwrap();
    directory_ops(
        "FileDirectory",
        &FileDirectory::open(root.path()).unwrap(),
        rounds,
    )
    .await;
    let local = tempfile::tempdir().unwrap();
    commits(
        "local, compare-and-swap",
        open_store(local.path().to_str().unwrap()).unwrap(),
        CommitMode::CompareAndSwap,
        rounds,
    )
    .await;
    let local = tempfile::tempdir().unwrap();
    commits(
        "local as no-CAS (through the directory)",
        Arc::new(NoCasStore::new(
            open_store(local.path().to_str().unwrap()).unwrap(),
        )),
        CommitMode::WriterUnique,
        rounds,
    )
    .await;
    if let Some(garage) = mailvault::testkit::s3_from_env("GARAGE") {
        commits(
            "Garage (no CAS, through the directory)",
            garage,
            CommitMode::WriterUnique,
            rounds / 3,
        )
        .await;
    }
}
