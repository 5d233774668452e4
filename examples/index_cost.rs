//! What indexing the text costs on the way in (issue 14, point 1): the time of a
//! delivery and import of the same messages with and without the text (the deliverer
//! extracting and sealing it, the import writing a segment per batch), and of appends
//! with and without it (extracted from the append's parse, buffered, a segment per 512).
//!
//! `cargo run --release --example index_cost -- [MESSAGES] [ROUNDS]` (defaults 2000, 5):
//! the real-mail test corpus (`tests/corpus/mail-parser`) cycled to MESSAGES messages
//! (each with its own `X-Seq` header), on a local directory in a temporary folder; each
//! round runs both variants in turn (alternating which goes first), each on a fresh
//! account; prints the medians and their ratio (with ÷ without).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mailvault::blob::BlobStore;
use mailvault::crypto::{AccountKey, RandomSource};
use mailvault::delivery::{Deliverer, DeliveryOptions, DeliverySigningKey};
use mailvault::directory::{AccountRecord, Directory, KeyModel, MemoryDirectory};
use mailvault::ids::{AccountId, DeploymentId};
use mailvault::index::IndexStore;
use mailvault::mail::{AppendOptions, MailConfig, Mailstore, INBOX};
use mailvault::storage::{open_store, DynStore};

fn corpus(dir: &std::path::Path, out: &mut Vec<Vec<u8>>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            corpus(&path, out);
        } else if path.extension().is_some_and(|e| e == "eml") {
            if let Ok(bytes) = std::fs::read(&path) {
                out.push(bytes);
            }
        }
    }
}

/// A fresh account on a fresh local directory.
struct World {
    _dir: tempfile::TempDir,
    store: DynStore,
    deployment: DeploymentId,
    directory: Arc<MemoryDirectory>,
    signing: [u8; 32],
    verifying: [u8; 32],
    account: AccountId,
    key: AccountKey,
}

impl World {
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("a folder");
        let store = open_store(&format!("file://{}", dir.path().display())).expect("store");
        let rng = RandomSource::os();
        let directory = Arc::new(MemoryDirectory::new());
        let signing = DeliverySigningKey::generate(&rng);
        directory
            .set_delivery_key(signing.verifying_key())
            .await
            .expect("delivery key");
        let account = AccountId::random(&rng);
        let key = AccountKey::generate(1, &rng);
        directory
            .set_account_record(
                &account,
                AccountRecord::new(KeyModel::DeviceOnly, vec![(1, key.public_key())], [9; 32]),
            )
            .await
            .expect("account record");
        Self {
            _dir: dir,
            store,
            deployment: DeploymentId::random(&rng),
            directory,
            signing: *signing.to_bytes(),
            verifying: signing.verifying_key(),
            account,
            key,
        }
    }

    async fn mail(&self, config: MailConfig) -> Mailstore {
        let directory: Arc<dyn Directory> = self.directory.clone();
        let index = IndexStore::new(self.store.clone(), self.deployment, directory)
            .await
            .expect("index store");
        let blobs =
            BlobStore::new(self.store.clone(), self.deployment).account(self.account, &self.key);
        Mailstore::open_with(&index, blobs, &self.key, config)
            .await
            .expect("open mail")
    }

    /// Delivers `messages` (8 at once) with or without text, then imports them: the time
    /// of both.
    async fn deliver_and_import(&self, messages: &[Vec<u8>], text: bool) -> Duration {
        let deliverer = Deliverer::new(
            self.store.clone(),
            self.deployment,
            self.directory.clone(),
            DeliverySigningKey::from_bytes(self.signing),
        )
        .with_text(text);
        let started = Instant::now();
        futures::stream::iter(messages)
            .map(|m| deliverer.deliver_bytes(self.account, m, DeliveryOptions::default()))
            .buffer_unordered(8)
            .for_each(|r| async move {
                r.expect("delivery");
            })
            .await;
        let mut mail = self.mail(MailConfig::default()).await;
        let report = mail
            .import_deliveries(std::slice::from_ref(&self.key), &self.verifying)
            .await
            .expect("import");
        let elapsed = started.elapsed();
        assert_eq!(report.imported.len(), messages.len());
        elapsed
    }

    /// Appends `messages` one by one with or without text (the buffer flushed at the end).
    async fn append(&self, messages: &[Vec<u8>], text: bool) -> Duration {
        let config = MailConfig {
            index_appends: text,
            ..MailConfig::default()
        };
        let mut mail = self.mail(config).await;
        let inbox = mail.mailbox_by_name(INBOX).expect("inbox").id;
        let started = Instant::now();
        for m in messages {
            mail.append(inbox, m, AppendOptions::default())
                .await
                .expect("append");
        }
        mail.flush_texts().await.expect("flush");
        started.elapsed()
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let mut raw = Vec::new();
    corpus(
        std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/corpus/mail-parser"
        )),
        &mut raw,
    );
    assert!(!raw.is_empty(), "the corpus");
    let messages: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let mut m = format!("X-Seq: {i}\r\n").into_bytes();
            m.extend_from_slice(&raw[i % raw.len()]);
            m
        })
        .collect();
    let bytes: usize = messages.iter().map(Vec::len).sum();
    println!(
        "{n} messages ({:.1} MiB, the corpus's {} cycled), {rounds} rounds, local directory",
        bytes as f64 / (1 << 20) as f64,
        raw.len()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (mut import_with, mut import_without) = (Vec::new(), Vec::new());
    let (mut append_with, mut append_without) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for with in [round % 2 == 0, round % 2 == 1] {
            let d =
                rt.block_on(async { World::new().await.deliver_and_import(&messages, with).await });
            if with {
                &mut import_with
            } else {
                &mut import_without
            }
            .push(d);
            let a = rt.block_on(async { World::new().await.append(&messages, with).await });
            if with {
                &mut append_with
            } else {
                &mut append_without
            }
            .push(a);
        }
        eprintln!(
            "round {round}: delivery+import {:?} with text, {:?} without; append {:?} with, {:?} without",
            import_with.last().expect("a run"),
            import_without.last().expect("a run"),
            append_with.last().expect("a run"),
            append_without.last().expect("a run"),
        );
    }
    let report = |what: &str, with: Vec<Duration>, without: Vec<Duration>| {
        let (w, wo) = (median(with), median(without));
        println!(
            "{what:<18} with text {:>8.1} ms ({:>6.1} µs/message)   without {:>8.1} ms ({:>6.1} µs/message)   ratio {:.3}",
            w.as_secs_f64() * 1e3,
            w.as_secs_f64() * 1e6 / n as f64,
            wo.as_secs_f64() * 1e3,
            wo.as_secs_f64() * 1e6 / n as f64,
            w.as_secs_f64() / wo.as_secs_f64()
        );
    };
    report("delivery+import", import_with, import_without);
    report("append", append_with, append_without);
}
