//! Issue 10, item 3 (second half): the trusted directory as the commit point of the index
//! on backends without conditional writes (Garage, `NoCasStore`).
//!
//! - a store that withholds the accepted manifest while a sibling of the same generation
//!   (or an older one) stays visible is refused with `Error::Rollback`;
//! - concurrent writers appending to one mailbox (tasks, two real processes, Garage) never
//!   give one UID twice, and UIDVALIDITY never changes;
//! - writers that lose the compare-and-set of the mark remove what they wrote: no sibling
//!   manifest, no orphan segment.
//!
//! Child processes are this test binary run again with an `#[ignore]`d entry point and an
//! environment variable saying what to do.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use mailvault::blob::BlobStore;
use mailvault::crypto::{AccountKey, RandomSource};
use mailvault::directory::{Directory, FileDirectory, MemoryDirectory};
use mailvault::ids::{AccountId, DeploymentId};
use mailvault::index::{Batch, Collection, IndexStore};
use mailvault::mail::{AppendOptions, Mailstore, INBOX};
use mailvault::storage::{naming, CommitMode, DynStore, GateStore, Hold, NoCasStore};
use mailvault::Error;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};

use super::mail::{concurrent_appends, MailSetup};

/// What a child process does, in its environment.
const CHILD: &str = "MAILVAULT_HARDENING_INDEX_CHILD";

/// One account's index on one store without compare-and-swap.
struct World {
    store: DynStore,
    deployment: DeploymentId,
    account: AccountId,
    key: Arc<AccountKey>,
    directory: Arc<MemoryDirectory>,
}

impl World {
    fn new(store: DynStore) -> Self {
        let rng = RandomSource::os();
        Self {
            store,
            deployment: DeploymentId::random(&rng),
            account: AccountId::random(&rng),
            key: Arc::new(AccountKey::generate(1, &rng)),
            directory: Arc::new(MemoryDirectory::new()),
        }
    }

    async fn open(&self) -> mailvault::Result<Collection> {
        self.open_on(self.store.clone()).await
    }

    async fn open_on(&self, store: DynStore) -> mailvault::Result<Collection> {
        IndexStore::with_mode(
            store,
            self.deployment,
            self.directory.clone(),
            CommitMode::WriterUnique,
        )
        .open(self.account, &self.key, b"c")
        .await
    }

    /// The manifests of the account's collections, by path.
    async fn manifests(&self) -> BTreeSet<String> {
        self.objects("/m/").await
    }

    async fn segments(&self) -> BTreeSet<String> {
        self.objects("/s/").await
    }

    async fn objects(&self, kind: &str) -> BTreeSet<String> {
        let prefix = naming::account_prefix(&self.account);
        let metas: Vec<ObjectMeta> = self.store.list(Some(&prefix)).try_collect().await.unwrap();
        metas
            .into_iter()
            .map(|m| m.location.to_string())
            .filter(|p| p.contains(kind))
            .collect()
    }
}

fn put(key: &str) -> Batch {
    let mut batch = Batch::new();
    batch.put(key.as_bytes().to_vec(), b"v".to_vec());
    batch
}

fn keys(c: &Collection) -> Vec<String> {
    c.iter()
        .map(|(k, _)| String::from_utf8(k.to_vec()).unwrap())
        .collect()
}

/// The generation of a manifest path (`…/m/<16 hex>-<writer>`).
fn generation_of(path: &str) -> u64 {
    let file = path.rsplit('/').next().unwrap();
    u64::from_str_radix(&file[..16], 16).unwrap()
}

/// Item 3 (a): two writers commit from one state; the store then withholds every
/// manifest that holds the first writer's change and keeps the second writer's first
/// attempt (a sibling of the accepted generation, built on the older state) visible. A
/// reader must refuse that with `Error::Rollback`, not open a state without the
/// acknowledged change. The store also keeps what the writers delete, so the sibling is
/// there whatever the commit protocol does with a lost race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_03_withheld_accepted_head_behind_a_sibling_is_rollback() {
    let bucket = super::memory();
    let world = World::new(Arc::new(NoCasStore::new(Arc::new(
        GateStore::new(bucket.clone()).keeping_deleted(),
    ))));
    let mut first = world.open().await.unwrap();
    first.commit(put("k0")).await.unwrap();
    let mut a = world.open().await.unwrap();
    // b loads the state, then stalls before writing its segment while a commits.
    let gated = GateStore::new(world.store.clone());
    let gate = gated.gate();
    let mut b = world.open_on(Arc::new(gated)).await.unwrap();
    gate.arm(Hold::Put, "/s/");
    let before = world.manifests().await;
    let b_commit = tokio::spawn(async move { b.commit(put("b")).await.map(|_| ()) });
    gate.reached().await;
    a.commit(put("a")).await.unwrap();
    let after_a = world.manifests().await;
    gate.open();
    b_commit.await.unwrap().unwrap();
    let after_b = world.manifests().await;
    let of_a: Vec<&String> = after_a.difference(&before).collect();
    let mut of_b: Vec<&String> = after_b.difference(&after_a).collect();
    of_b.sort_by_key(|p| generation_of(p));
    assert_eq!(
        keys(&world.open().await.unwrap()),
        ["a", "b", "k0"],
        "both acknowledged changes are there before the attack"
    );
    // The attack: withhold a's manifests, and every manifest of b but its first attempt.
    for path in of_a.iter().chain(of_b.iter().skip(1)) {
        bucket.delete(&Path::from(path.as_str())).await.unwrap();
    }
    match world.open().await {
        Err(Error::Rollback { .. }) => {}
        Err(e) => panic!("withholding must be reported as Rollback, got {e:?}"),
        Ok(c) => panic!(
            "the store withheld the accepted manifest behind a sibling, and the reader opened \
             generation {} with {:?}: a's acknowledged change is silently gone",
            c.generation(),
            keys(&c)
        ),
    }
    // And an older manifest offered alone (every newer one withheld) is refused too.
    let world = World::new(Arc::new(NoCasStore::new(super::memory())));
    let mut c = world.open().await.unwrap();
    c.commit(put("k0")).await.unwrap();
    c.commit(put("k1")).await.unwrap();
    let newest = world
        .manifests()
        .await
        .into_iter()
        .max_by_key(|p| generation_of(p))
        .unwrap();
    world.store.delete(&Path::from(newest)).await.unwrap();
    assert!(
        matches!(world.open().await, Err(Error::Rollback { .. })),
        "an older manifest offered as the newest must be refused"
    );
}

/// Item 3 (b): four servers (tasks) append to one INBOX at once without compare-and-swap:
/// no UID is ever given twice and UIDVALIDITY never changes (the directory's
/// compare-and-set makes the loser reload and take the next UID, as on moto).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn item_03_concurrent_appends_without_cas_never_give_a_uid_twice() {
    let setup = MailSetup::new(
        Arc::new(NoCasStore::new(super::memory())),
        CommitMode::WriterUnique,
    );
    let changes = concurrent_appends(&setup, 4, 40).await;
    assert_eq!(
        changes, 0,
        "without compare-and-swap a UID was given twice and repaired by a UIDVALIDITY change"
    );
}

/// Item 3 (b) on Garage (when its settings are exported): 4 writers × 50 appends.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn item_03_concurrent_appends_on_garage_never_give_a_uid_twice() {
    let Some(store) = mailvault::testkit::s3_from_env("GARAGE") else {
        return;
    };
    let capabilities = mailvault::storage::probe_capabilities(store.as_ref())
        .await
        .unwrap();
    assert_eq!(
        CommitMode::for_capabilities(capabilities),
        CommitMode::WriterUnique
    );
    let setup = MailSetup::new(store.clone(), CommitMode::WriterUnique);
    let changes = concurrent_appends(&setup, 4, 50).await;
    mailvault::testkit::conformance::cleanup(&store, &setup.account).await;
    assert_eq!(
        changes, 0,
        "on Garage a UID was given twice and repaired by a UIDVALIDITY change"
    );
}

const PROCESS_APPENDS: usize = 15;

fn process_account() -> (DeploymentId, AccountId, AccountKey) {
    (
        DeploymentId::from_bytes([5; 16]),
        AccountId::from_bytes([6; 16]),
        AccountKey::generate(1, &RandomSource::seeded(11)),
    )
}

/// A mail store on a local directory (conditional writes ignored, as Garage does) with
/// its marks in a `FileDirectory`: what each process opens.
async fn process_mail(store_root: &std::path::Path, directory_root: &std::path::Path) -> Mailstore {
    let (deployment, account, key) = process_account();
    let local = mailvault::storage::open_store(store_root.to_str().unwrap()).unwrap();
    let store: DynStore = Arc::new(NoCasStore::new(local));
    let directory: Arc<dyn Directory> = Arc::new(FileDirectory::open(directory_root).unwrap());
    let index = IndexStore::with_mode(
        store.clone(),
        deployment,
        directory,
        CommitMode::WriterUnique,
    );
    let blobs = BlobStore::new(store, deployment).account(account, &key);
    Mailstore::open(&index, blobs, &key).await.unwrap()
}

fn process_message(seed: u64) -> Vec<u8> {
    format!(
        "From: a@example.org\r\nTo: b@example.org\r\nSubject: p{seed}\r\n\
         Message-ID: <p{seed}@example.org>\r\n\r\nbody {seed}\r\n"
    )
    .into_bytes()
}

/// Item 3 (b) with two real processes, each its own `Mailstore`, sharing one bucket (a
/// local directory without conditional writes) and one `FileDirectory`: every
/// acknowledged append has its own UID, under UIDVALIDITY 1.
#[test]
fn item_03_two_processes_appending_without_cas_never_give_a_uid_twice() {
    let store_root = tempfile::tempdir().unwrap();
    let directory_root = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // INBOX exists before the processes start.
    runtime.block_on(process_mail(store_root.path(), directory_root.path()));
    let spawned: Vec<_> = (0..2)
        .map(|w| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--ignored",
                    "--exact",
                    "hardening_index::child_appends",
                    "--test-threads=1",
                    "--nocapture",
                ])
                .env(
                    CHILD,
                    format!(
                        "{}|{}|{w}",
                        store_root.path().display(),
                        directory_root.path().display()
                    ),
                )
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut given: BTreeMap<(u32, u32), usize> = BTreeMap::new();
    for child in spawned {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "an appending process failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let acks: Vec<(u32, u32)> = stdout
            .lines()
            .filter_map(|l| l.split_once("ACK ").map(|(_, ack)| ack))
            .map(|l| {
                let (v, u) = l.split_once(' ').unwrap();
                (v.parse().unwrap(), u.parse().unwrap())
            })
            .collect();
        assert_eq!(acks.len(), PROCESS_APPENDS, "{stdout}");
        for ack in acks {
            *given.entry(ack).or_default() += 1;
        }
    }
    let twice: Vec<_> = given.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "(UIDVALIDITY, UID) given twice: {twice:?}"
    );
    let view = runtime.block_on(async {
        let mut mail = process_mail(store_root.path(), directory_root.path()).await;
        let inbox = mail.mailbox_by_name(INBOX).unwrap().id;
        mail.select(inbox).await.unwrap()
    });
    assert_eq!(view.mailbox.uid_validity, 1, "UIDVALIDITY changed");
    assert_eq!(view.messages.len(), 2 * PROCESS_APPENDS);
}

/// Child of item 3 (b) (run only by it): appends to INBOX and prints each acknowledgement.
#[test]
#[ignore = "run by item_03 in a child process"]
fn child_appends() {
    let spec = std::env::var(CHILD).expect("run by item_03 only");
    let fields: Vec<&str> = spec.split('|').collect();
    let w: u64 = fields[2].parse().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut mail = process_mail(
            std::path::Path::new(fields[0]),
            std::path::Path::new(fields[1]),
        )
        .await;
        let inbox = mail.mailbox_by_name(INBOX).unwrap().id;
        for i in 0..PROCESS_APPENDS as u64 {
            let a = mail
                .append(
                    inbox,
                    &process_message(w * 1000 + i),
                    AppendOptions::default(),
                )
                .await
                .unwrap();
            println!("ACK {} {}", a.uid_validity, a.uid);
        }
    });
}

/// Item 3 (c): four writers commit to one collection at once without compare-and-swap.
/// Losers remove what they wrote: afterwards each generation has exactly one manifest
/// (no sibling, no loser's manifest) and there is exactly one segment per commit (no
/// loser's segment), before any garbage collection; after one with no grace period,
/// one manifest and the live segments remain, and the collection reads the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn item_03_losers_clean_up_after_themselves() {
    let world = Arc::new(World::new(Arc::new(NoCasStore::new(super::memory()))));
    let mut tasks = Vec::new();
    for w in 0..4 {
        let world = world.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = world.open().await.unwrap();
            for i in 0..25 {
                c.commit(put(&format!("w{w}-{i:03}"))).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut reader = world.open().await.unwrap();
    let generation = reader.generation();
    let manifests = world.manifests().await;
    let mut per_generation: BTreeMap<u64, usize> = BTreeMap::new();
    for path in &manifests {
        *per_generation.entry(generation_of(path)).or_default() += 1;
    }
    let siblings: Vec<_> = per_generation.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        siblings.is_empty(),
        "generations with several manifests (concurrent heads or losers left behind): {siblings:?}"
    );
    assert_eq!(
        per_generation.keys().copied().collect::<Vec<_>>(),
        (1..=generation).collect::<Vec<_>>(),
        "one manifest per generation, none above the accepted one"
    );
    assert_eq!(
        world.segments().await.len() as u64,
        generation,
        "one segment per commit: a loser's segment was left behind"
    );
    let before = keys(&reader);
    assert_eq!(before.len(), 100);
    let report = reader.collect_garbage(Duration::ZERO).await.unwrap();
    assert_eq!(world.manifests().await.len(), 1, "{report:?}");
    assert_eq!(
        world.segments().await.len(),
        reader.live_segments(),
        "{report:?}: segments left that no manifest lists"
    );
    assert_eq!(keys(&world.open().await.unwrap()), before);
}

/// Item 3, migration: a collection written by the older writer-unique scheme (two
/// concurrent heads, its mark a bare generation in the `FileDirectory`, as older
/// versions wrote it) still opens, merging its heads; its first commit goes through the
/// directory (the mark gains the digest of the manifest that merges them), and garbage
/// collection then keeps that manifest alone.
#[tokio::test]
async fn item_03_a_collection_of_the_older_scheme_opens_and_migrates() {
    let marks = tempfile::tempdir().unwrap();
    let world = World::new(Arc::new(NoCasStore::new(super::memory())));
    let open = |root: &std::path::Path| {
        let index = IndexStore::with_mode(
            world.store.clone(),
            world.deployment,
            Arc::new(FileDirectory::open(root).unwrap()),
            CommitMode::WriterUnique,
        );
        let (account, key) = (world.account, world.key.clone());
        async move { index.open(account, &key, b"c").await }
    };
    let mut c = open(marks.path()).await.unwrap();
    c.commit(put("k0")).await.unwrap();
    // Two servers that each decided alone (two copies of the directory) leave two heads
    // of one generation, as the older scheme did under concurrent commits.
    let copied = tempfile::tempdir().unwrap();
    let account_dir = marks.path().join(world.account.to_hex());
    std::fs::create_dir_all(copied.path().join(world.account.to_hex())).unwrap();
    let mut mark_file = None;
    for entry in std::fs::read_dir(&account_dir).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(
            &path,
            copied
                .path()
                .join(world.account.to_hex())
                .join(path.file_name().unwrap()),
        )
        .unwrap();
        if path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("i-")
        {
            mark_file = Some(path);
        }
    }
    let mark_file = mark_file.expect("the collection's mark file");
    let mut other = open(copied.path()).await.unwrap();
    c.commit(put("a")).await.unwrap();
    other.commit(put("b")).await.unwrap();
    assert_eq!(c.generation(), other.generation());
    std::fs::write(&mark_file, format!("{}\n", c.generation())).unwrap();
    // It opens: both heads merged.
    let mut legacy = open(marks.path()).await.unwrap();
    assert_eq!(legacy.concurrent_heads(), 2);
    assert_eq!(keys(&legacy), ["a", "b", "k0"]);
    // Its first commit merges them and pins the result in the directory.
    let info = legacy.commit(put("c")).await.unwrap();
    assert_eq!(info.merged_heads, 1);
    let text = std::fs::read_to_string(&mark_file).unwrap();
    let (generation, digest) = text.trim().split_once(' ').expect("a mark with digest");
    assert_eq!(generation, info.generation.to_string());
    assert_eq!(digest.len(), 64);
    let mut migrated = open(marks.path()).await.unwrap();
    assert_eq!(migrated.concurrent_heads(), 1);
    assert_eq!(keys(&migrated), ["a", "b", "c", "k0"]);
    migrated.collect_garbage(Duration::ZERO).await.unwrap();
    assert_eq!(world.manifests().await.len(), 1);
    assert_eq!(world.segments().await.len(), migrated.live_segments());
    assert_eq!(
        keys(&open(marks.path()).await.unwrap()),
        ["a", "b", "c", "k0"]
    );
}
