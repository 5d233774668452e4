//! Issue 10, items 2, 3 and 11: the trusted directory as the commit point of keyrings.
//!
//! - item 2: two keyring changes made from the same generation both hold or one fails
//!   with `Conflict`, on every backend (the directory's compare-and-set decides);
//! - item 3: a keyring withheld by the store while a sibling of the same generation
//!   remains is refused (the mark names what was accepted by its digest);
//! - item 11: `FileDirectory` shared by real processes never lowers a mark.
//!
//! Child processes are this test binary run again with an `#[ignore]`d entry point and an
//! environment variable saying what to do.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use futures::TryStreamExt;
use mailvault::crypto::RandomSource;
use mailvault::directory::{Directory, FileDirectory, MemoryDirectory};
use mailvault::engine::{Provider, ProviderConfig};
use mailvault::format::slot::KdfParams;
use mailvault::ids::{AccountId, DeploymentId};
use mailvault::keys::{Credential, KdfGate};
use mailvault::storage::{naming, DynStore, NoCasStore};
use mailvault::testkit::churn;
use mailvault::Error;
use object_store::{ObjectStoreExt, PutPayload};

const CHEAP: KdfParams = KdfParams {
    m_kib: 256,
    t: 1,
    p: 1,
};

/// What a child process does, in its environment.
const CHILD: &str = "MAILVAULT_HARDENING_CHILD";

fn config() -> ProviderConfig {
    ProviderConfig {
        pepper: Some([3; 32]),
        kdf: CHEAP,
        limits: None,
        gate: KdfGate::new(2),
        ..ProviderConfig::default()
    }
}

async fn provider(
    store: &DynStore,
    deployment: DeploymentId,
    directory: Arc<dyn Directory>,
) -> Provider {
    Provider::new(store.clone(), deployment, directory, config())
        .await
        .unwrap()
}

/// The backends concurrency tests run on: InMemory with compare-and-swap, the same
/// without (as Garage), and Garage and moto when their settings are exported.
fn backends() -> Vec<(&'static str, DynStore)> {
    let mut out: Vec<(&'static str, DynStore)> = vec![
        ("memory", super::memory()),
        ("no-cas", Arc::new(NoCasStore::new(super::memory()))),
    ];
    for name in ["GARAGE", "MOTO"] {
        if let Some(store) = mailvault::testkit::s3_from_env(name) {
            out.push((name, store));
        }
    }
    out
}

/// Item 2: a password change and a slot change made from the same keyring generation
/// (two sessions of one account, as two servers would hold) both hold, or one of them
/// fails with `Conflict`; and a slot removal is not silently reverted by a concurrent
/// password change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_02_keyring_changes_from_one_generation_both_hold_or_conflict() {
    for (backend, store) in backends() {
        let rng = RandomSource::os();
        let (directory, _officer) = super::directory_with_officer(&rng).await;
        let provider = provider(&store, DeploymentId::random(&rng), directory).await;
        let account = provider.create_account("p0").await.unwrap();

        // A password change against an added device key.
        let mut first = provider.unlock(account, "p0").await.unwrap();
        let mut second = provider.unlock(account, "p0").await.unwrap();
        let changed = first.change_password("p1").await;
        let added = second.add_device_key().await;
        match (&changed, &added) {
            (Ok(()), Ok(device)) => {
                assert!(
                    provider.unlock(account, "p1").await.is_ok(),
                    "{backend}: the acknowledged password change was reverted"
                );
                assert!(
                    provider
                        .unlock_with(account, Credential::DeviceKey(device))
                        .await
                        .is_ok(),
                    "{backend}: the acknowledged device slot was reverted"
                );
            }
            (Ok(()), Err(Error::Conflict { .. })) | (Err(Error::Conflict { .. }), Ok(_)) => {}
            _ => panic!(
                "{backend}: unexpected outcome: password {:?}, device {:?}",
                changed.as_ref().err(),
                added.as_ref().err()
            ),
        }

        // A slot removal against a password change: a removed device must stay removed.
        let mut holder = provider
            .unlock(account, "p1")
            .await
            .or(provider.unlock(account, "p0").await)
            .unwrap();
        let device = holder.add_device_key().await.unwrap();
        let device_slot = holder.slots().last().unwrap().id;
        let password = if provider.unlock(account, "p1").await.is_ok() {
            "p1"
        } else {
            "p0"
        };
        let mut remover = provider.unlock(account, password).await.unwrap();
        let mut changer = provider.unlock(account, password).await.unwrap();
        let removed = remover.remove_slot(device_slot).await;
        let changed = changer.change_password("p2").await;
        match (&removed, &changed) {
            (Ok(()), Ok(())) => {
                assert!(
                    matches!(
                        provider
                            .unlock_with(account, Credential::DeviceKey(&device))
                            .await,
                        Err(Error::WrongCredential)
                    ),
                    "{backend}: the removed device slot came back (removal reverted)"
                );
                assert!(
                    provider.unlock(account, "p2").await.is_ok(),
                    "{backend}: the acknowledged password change was reverted"
                );
            }
            (Ok(()), Err(Error::Conflict { .. })) | (Err(Error::Conflict { .. }), Ok(())) => {}
            _ => panic!(
                "{backend}: unexpected outcome: removal {:?}, password {:?}",
                removed.as_ref().err(),
                changed.as_ref().err()
            ),
        }
    }
}

/// The keyring objects of `account`: names and bytes.
async fn keyring_objects(
    store: &DynStore,
    account: &AccountId,
) -> Vec<(object_store::path::Path, bytes::Bytes)> {
    let metas: Vec<_> = store
        .list(Some(&naming::keyring_prefix(account)))
        .try_collect()
        .await
        .unwrap();
    let mut out = Vec::new();
    for meta in metas {
        let bytes = store
            .get(&meta.location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        out.push((meta.location, bytes));
    }
    out
}

/// Item 3: without compare-and-swap, a writer that published a keyring of generation 2
/// and never had it accepted (it crashed before the directory recorded it: here, it
/// recorded it in a directory of its own) leaves a sibling of the accepted generation 2.
/// A store that withholds the accepted keyring and offers the sibling must be caught:
/// the directory knows which keyring of generation 2 it accepted.
#[tokio::test]
async fn item_03_withheld_keyring_with_a_sibling_of_its_generation_is_refused() {
    let rng = RandomSource::os();
    let store: DynStore = Arc::new(NoCasStore::new(super::memory()));
    let deployment = DeploymentId::random(&rng);
    let (directory, officer) = super::directory_with_officer(&rng).await;
    let trusted = provider(&store, deployment, directory.clone()).await;
    let account = trusted.create_account("p0").await.unwrap();

    // The writer whose commit never reached the trusted directory.
    let elsewhere = Arc::new(MemoryDirectory::new());
    elsewhere
        .set_officer_keys(vec![mailvault::directory::OfficerKeyEntry {
            key: officer.public(),
            current: true,
        }])
        .await
        .unwrap();
    let record = directory.account_record(&account).await.unwrap().unwrap();
    elsewhere
        .set_account_record(&account, record)
        .await
        .unwrap();
    let stray = provider(&store, deployment, elsewhere).await;
    let mut unaccepted = stray.unlock(account, "p0").await.unwrap();
    let mut accepted = trusted.unlock(account, "p0").await.unwrap();
    unaccepted.change_password("stray").await.unwrap();
    let sibling = keyring_objects(&store, &account).await;
    accepted.change_password("accepted").await.unwrap();
    assert!(trusted.unlock(account, "accepted").await.is_ok());

    // The store withholds the accepted keyring and offers the stray sibling.
    for (path, _) in keyring_objects(&store, &account).await {
        store.delete(&path).await.unwrap();
    }
    for (path, bytes) in sibling {
        store.put(&path, PutPayload::from(bytes)).await.unwrap();
    }
    let stray_login = trusted.unlock(account, "stray").await;
    assert!(
        stray_login.is_err(),
        "the store replaced the accepted keyring of generation 2 by an unaccepted sibling: \
         the password of a change never acknowledged opens the account"
    );
    let accepted_login = trusted.unlock(account, "accepted").await;
    assert!(
        matches!(accepted_login, Err(Error::Tampered)),
        "the object at the accepted generation is not the accepted one: {accepted_login:?}"
    );
    // Nothing at all at the accepted generation: a rollback.
    for (path, _) in keyring_objects(&store, &account).await {
        store.delete(&path).await.unwrap();
    }
    let withheld = trusted.unlock(account, "accepted").await;
    assert!(
        matches!(withheld, Err(Error::Rollback { seen: 2, found: 0 })),
        "{withheld:?}"
    );
}

/// Item 11: two processes raising marks of one record in one `FileDirectory` (one the
/// odd generations, the other the even ones). After each raise a process reads the mark
/// back: it must be at least what it raised; at the end the mark is the highest raised.
#[test]
fn item_11_file_directory_shared_by_two_processes_never_lowers_a_mark() {
    let root = tempfile::tempdir().unwrap();
    const RAISES: u64 = 300;
    let spawned: Vec<_> = (1..=2u64)
        .map(|first| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--ignored",
                    "--exact",
                    "hardening_directory::child_raise_marks",
                    "--test-threads=1",
                ])
                .env(CHILD, format!("{}|{first}|{RAISES}", root.path().display()))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in spawned {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "a process sharing the FileDirectory failed:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mark = runtime.block_on(async {
        FileDirectory::open(root.path())
            .unwrap()
            .high_water_mark(&AccountId::from_bytes([7; 16]), "i-shared")
            .await
            .unwrap()
    });
    assert_eq!(mark, 2 * RAISES, "the final mark is not the highest raised");
}

/// Child of item 11 (run only by it): raises generations `first, first + 2, …`.
#[test]
#[ignore = "run by item_11 in a child process"]
fn child_raise_marks() {
    let spec = std::env::var(CHILD).expect("run by item_11 only");
    let fields: Vec<&str> = spec.split('|').collect();
    let (root, first, raises): (&Path, u64, u64) = (
        Path::new(fields[0]),
        fields[1].parse().unwrap(),
        fields[2].parse().unwrap(),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let directory = FileDirectory::open(root).unwrap();
        let account = AccountId::from_bytes([7; 16]);
        for i in 0..raises {
            let generation = first + 2 * i;
            directory
                .raise_high_water_mark(&account, "i-shared", generation)
                .await
                .unwrap_or_else(|e| panic!("raise to {generation}: {e}"));
            let seen = directory
                .high_water_mark(&account, "i-shared")
                .await
                .unwrap();
            assert!(
                seen >= generation,
                "raised the mark to {generation}, then read {seen}: another process lowered it"
            );
        }
    });
}

/// Item 2's acceptance: 4 processes, each with its own `Provider`, change the password and
/// add and remove slots of one account at once (10 s by default,
/// `MAILVAULT_CHURN_SECONDS` to change it; `MAILVAULT_CHURN_WORKERS` for another number of
/// processes, at most 4: each holds its device slot and up to two more, beside the
/// password and officer slots, under the keyring's 16), on a local directory wrapped as a store
/// without compare-and-swap, and on Garage when it is configured; afterwards every
/// acknowledged change holds and the last password change in commit order opens the
/// account (`testkit::churn::check`).
#[test]
fn item_02_four_processes_churning_one_keyring_lose_no_acknowledged_change() {
    let seconds: f64 = std::env::var("MAILVAULT_CHURN_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10.0);
    let workers: usize = std::env::var("MAILVAULT_CHURN_WORKERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut specs = vec![None];
    if mailvault::testkit::s3_from_env("GARAGE").is_some() {
        specs.push(Some("s3:GARAGE".to_string()));
    }
    for spec in specs {
        let root = tempfile::tempdir().unwrap();
        let spec = spec.unwrap_or_else(|| format!("dir:{}", root.path().join("store").display()));
        let run = runtime
            .block_on(churn::drive(
                &spec,
                root.path(),
                workers,
                std::time::Duration::from_secs_f64(seconds),
                |args| {
                    let mut command = Command::new(std::env::current_exe().unwrap());
                    command
                        .args([
                            "--ignored",
                            "--exact",
                            "hardening_directory::child_churn_worker",
                            "--test-threads=1",
                            "--nocapture",
                        ])
                        .env(CHILD, args.join("\n"));
                    command
                },
            ))
            .unwrap_or_else(|e| panic!("{spec}: {e}"));
        let conflicts: u64 = run.workers.iter().map(|w| w.conflicts).sum();
        eprintln!(
            "{spec}: {} acknowledged changes in {:.1} s, {conflicts} conflicts, final generation {}",
            run.report.acknowledged,
            run.elapsed.as_secs_f64(),
            run.report.final_generation
        );
        // What failed, by operation and kind of error.
        let mut kinds = std::collections::BTreeMap::<String, usize>::new();
        for line in run.failures.lines() {
            let op = line
                .split("(op ")
                .nth(1)
                .and_then(|s| s.get(..1))
                .unwrap_or("?");
            let error = line.split("failed: ").nth(1).unwrap_or(line);
            let error = error.split(':').next().unwrap_or(error);
            *kinds.entry(format!("op {op}: {error}")).or_default() += 1;
        }
        eprintln!("{spec}: failed changes: {kinds:?}");
        // Removals that failed, in full: each began nothing, or the worker would have
        // stopped (a failed removal must leave the slot).
        for line in run.failures.lines().filter(|l| l.contains("(op 2)")) {
            eprintln!("{spec}: {line}");
        }
        assert!(
            run.workers.iter().all(|w| w.acknowledged > 0),
            "{spec}: a worker never committed: {:?}",
            run.workers
        );
        assert!(run.report.password_changes > 0 && run.report.slots_removed > 0);
    }
}

/// Child of the churn (run only by it): one worker process.
#[test]
#[ignore = "run by item_02 in a child process"]
fn child_churn_worker() {
    let spec = std::env::var(CHILD).expect("run by item_02 only");
    let args: Vec<String> = spec.split('\n').map(str::to_string).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(churn::worker_main(&args))
        .unwrap_or_else(|e| panic!("churn worker: {e}"));
}
