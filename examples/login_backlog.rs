//! The first login after many deliveries (issue 13's benchmark row "first LOGIN + SELECT
//! after 10 000 deliveries", without the server): `--messages N` (10 000 by default)
//! sealed deliveries of 10 KB to each of two accounts on a local directory (a store and a
//! `FileDirectory` in a temporary folder, as `mailvault serve` has them), then
//! - the account opened as before, importing everything at open
//!   (`ShareConfig::import_at_open = u64::MAX`): the time of the open;
//! - the other opened with the default (`import_at_open` 64): the time of the open, of
//!   the first read, and until a subscriber sees all N, imported in the background.
//!
//! Each import pass logs where its time went (the library's `import pass` debug event:
//! listing, envelope reads, key work, body checks, commits, deletes), printed here.
//!
//! ```sh
//! cargo run --release --features testkit --example login_backlog -- --messages 10000
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use mailvault::delivery::{DeliveryOptions, DeliverySigningKey};
use mailvault::directory::{Directory, FileDirectory, OfficerKeyEntry};
use mailvault::engine::{Provider, ShareConfig, SharedAccount};
use mailvault::ids::DeploymentId;
use mailvault::keys::OfficerSecret;
use mailvault::mail::INBOX;
use tracing_subscriber::layer::SubscriberExt;

/// Prints the library's `import pass` events.
struct PrintImportPasses;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PrintImportPasses {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Fields(String);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!(" {}={value:?}", field.name()));
            }
        }
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        if fields.0.contains("import pass") {
            println!("  {}", fields.0.trim());
        }
    }
}

fn message(n: usize) -> Vec<u8> {
    let mut m = format!(
        "From: <sender@localhost>\r\nTo: <alice@localhost>\r\n\
         Date: Sun,  6 Dec 2026 08:00:{:02} +0000 (UTC)\r\n\
         Message-Id: <20261206080000.{n}@localhost>\r\nSubject: bench message\r\n\r\n",
        n % 60
    )
    .into_bytes();
    while m.len() < 10240 {
        m.extend_from_slice(b"La de da de da 1.\r\nLa de da de da 2.\r\n");
    }
    m
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> mailvault::Result<()> {
    let mut messages = 10_000usize;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--messages" => messages = it.next().and_then(|v| v.parse().ok()).unwrap_or(messages),
            other => panic!("unknown argument {other:?}"),
        }
    }
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(PrintImportPasses))
        .expect("one subscriber");
    let folder = tempfile::tempdir().expect("a temporary folder");
    let store = mailvault::storage::open_store(&folder.path().join("store").display().to_string())?;
    let rng = mailvault::crypto::RandomSource::os();
    let directory = Arc::new(FileDirectory::open(folder.path().join("directory"))?);
    directory
        .set_officer_keys(vec![OfficerKeyEntry {
            key: OfficerSecret::generate(&rng).public(),
            current: true,
        }])
        .await?;
    let signing = DeliverySigningKey::generate(&rng);
    directory.set_delivery_key(signing.verifying_key()).await?;
    let config = mailvault::testkit::cheap_provider_config();
    let provider = Provider::new(store, DeploymentId::random(&rng), directory, config).await?;
    let (before, after) = (
        provider.create_account("pw").await?,
        provider.create_account("pw").await?,
    );
    let deliverer = Arc::new(provider.deliverer(signing));
    let started = Instant::now();
    for account in [before, after] {
        // Ten at a time, as ten LMTP sessions deliver.
        let mut tasks = Vec::new();
        for lane in 0..10 {
            let deliverer = deliverer.clone();
            tasks.push(tokio::spawn(async move {
                for n in (lane..messages).step_by(10) {
                    deliverer
                        .deliver_bytes(account, &message(n), DeliveryOptions::default())
                        .await?;
                }
                Ok::<(), mailvault::Error>(())
            }));
        }
        for task in tasks {
            task.await.expect("a delivery task")?;
        }
    }
    println!(
        "delivered 2 × {messages} in {:.2?} ({:.0}/s)",
        started.elapsed(),
        (2 * messages) as f64 / started.elapsed().as_secs_f64()
    );
    let quiet = ShareConfig {
        poll_interval: Duration::from_secs(3600),
        gc_interval: None,
        ..ShareConfig::default()
    };
    let count = |handle: SharedAccount| async move {
        let mail = handle.read().await;
        let inbox = mail.mailbox_by_name(INBOX).expect("INBOX").id;
        mail.view(inbox).map(|v| v.messages.len())
    };

    println!("import at open (as before):");
    let session = provider.unlock(before, "pw").await?;
    let started = Instant::now();
    let handle = SharedAccount::open(
        session,
        ShareConfig {
            import_at_open: u64::MAX,
            ..quiet
        },
    )
    .await?;
    let opened = started.elapsed();
    assert_eq!(count(handle.clone()).await?, messages);
    println!("  open {opened:.2?} (all {messages} imported)");
    drop(handle);

    println!("import in the background (the default):");
    let session = provider.unlock(after, "pw").await?;
    let started = Instant::now();
    let handle = SharedAccount::open(session, quiet).await?;
    let opened = started.elapsed();
    let mut changes = handle.subscribe();
    let first = count(handle.clone()).await?;
    let first_read = started.elapsed();
    let mut n = first;
    while n < messages {
        changes.changed().await.expect("the handle is open");
        n = count(handle.clone()).await?;
    }
    println!(
        "  open {opened:.2?}, first read {first_read:.2?} ({first} messages), all {messages} \
         imported after {:.2?}",
        started.elapsed()
    );
    Ok(())
}
