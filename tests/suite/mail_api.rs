//! Issue 12 (mail backend API), item 5: typed errors a server maps to protocol responses
//! without matching strings (`NO [TRYCREATE]`, `[ALREADYEXISTS]`, `[NONEXISTENT]`,
//! `[LIMIT]`), and `Error::is_transient` for retry decisions.

use mailvault::mail::{AppendOptions, PartSection, INBOX};
use mailvault::storage::CommitMode;
use mailvault::Error;

use super::mail::MailSetup;

const MESSAGE: &[u8] = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: hi\r\n\
MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nhello\r\n";

#[tokio::test]
async fn item_05_mailbox_and_message_errors_are_typed() {
    let setup = MailSetup::new(super::memory(), CommitMode::CompareAndSwap);
    let mut mail = setup.open().await;
    let inbox = mail.mailbox_by_name(INBOX).unwrap().id;
    let work = mail.create_mailbox("Work", None).await.unwrap();
    mail.create_mailbox("Old", None).await.unwrap();

    // A name taken: by creation and by rename.
    let again = mail.create_mailbox("Work", None).await;
    assert!(
        matches!(&again, Err(Error::MailboxExists { name }) if name == "Work"),
        "{again:?}"
    );
    let renamed = mail.rename_mailbox(work.id, "Old").await;
    assert!(
        matches!(&renamed, Err(Error::MailboxExists { name }) if name == "Old"),
        "{renamed:?}"
    );

    // A mailbox gone: every operation that names it.
    mail.delete_mailbox(work.id).await.unwrap();
    let gone = |r: &Result<(), Error>| matches!(r, Err(Error::NoSuchMailbox { .. }));
    assert!(gone(&mail.select(work.id).await.map(|_| ())));
    assert!(gone(&mail.status(work.id).map(|_| ())));
    assert!(gone(
        &mail
            .append(work.id, MESSAGE, AppendOptions::default())
            .await
            .map(|_| ())
    ));
    let appended = mail
        .append(inbox, MESSAGE, AppendOptions::default())
        .await
        .unwrap();
    assert!(gone(
        &mail.copy(inbox, &[appended.uid], work.id).await.map(|_| ())
    ));

    // A message, an email or a part that is not there.
    let missing = mail.email(inbox, appended.uid + 100);
    assert!(
        matches!(&missing, Err(Error::NoSuchMessage { what }) if what.contains("UID")),
        "{missing:?}"
    );
    let email = mail.email(inbox, appended.uid).unwrap();
    let part = mail.read_part(&email, 99, PartSection::Body).await;
    assert!(
        matches!(&part, Err(Error::NoSuchMessage { what }) if what.contains("part")),
        "{part:?}"
    );
    // None of these is worth retrying as it is.
    for e in [
        again.map(|_| ()),
        renamed,
        missing.map(|_| ()),
        part.map(|_| ()),
    ] {
        assert!(!e.unwrap_err().is_transient());
    }
}

/// The typed error must not change what a refused append cleans up: a mailbox deleted
/// while the append's body was uploading leaves no body behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_05_an_append_refused_with_no_such_mailbox_leaves_no_body() {
    use futures::TryStreamExt;
    use mailvault::storage::{GateStore, Hold};
    let setup = MailSetup::new(super::memory(), CommitMode::CompareAndSwap);
    let gated = GateStore::new(setup.store.clone());
    let gate = gated.gate();
    let mut appender = setup.open_on(std::sync::Arc::new(gated)).await.unwrap();
    let mut other = setup.open().await;
    let work = other.create_mailbox("Work", None).await.unwrap();
    appender.refresh().await.unwrap();
    let prefix = object_store::path::Path::from(format!("a/{}/b", setup.account.to_hex()));
    let bodies = || async {
        setup
            .store
            .list(Some(&prefix))
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .len()
    };
    let stored = bodies().await;
    gate.arm(Hold::Put, "/b/");
    let append = tokio::spawn(async move {
        appender
            .append(work.id, MESSAGE, AppendOptions::default())
            .await
    });
    gate.reached().await;
    other.delete_mailbox(work.id).await.unwrap();
    gate.open();
    let refused = append.await.unwrap();
    assert!(
        matches!(refused, Err(Error::NoSuchMailbox { .. })),
        "{refused:?}"
    );
    assert_eq!(
        bodies().await,
        stored,
        "the refused append left its body behind"
    );
}

#[test]
fn item_05_transient_errors_are_those_a_retry_can_cure() {
    let backend = Error::from(object_store::Error::Generic {
        store: "S3",
        source: "connection reset".into(),
    });
    assert!(matches!(backend, Error::Backend { .. }));
    assert!(backend.is_transient());
    assert!(Error::Conflict { path: "x".into() }.is_transient());
    assert!(Error::Moved.is_transient());
    for permanent in [
        Error::Tampered,
        Error::WrongCredential,
        Error::NotFound { path: "x".into() },
        Error::NoSuchMailbox {
            mailbox: "x".into(),
        },
        Error::MailboxExists { name: "x".into() },
        Error::NoSuchMessage { what: "x".into() },
        Error::LimitReached("x".into()),
        Error::Rollback { seen: 2, found: 1 },
        Error::InvalidArgument("x".into()),
    ] {
        assert!(!permanent.is_transient(), "{permanent:?}");
    }
}

mod shared {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use mailvault::crypto::RandomSource;
    use mailvault::delivery::{DeliveryOptions, DeliverySigningKey};
    use mailvault::directory::{Directory, FileDirectory, OfficerKeyEntry};
    use mailvault::engine::{AccountRegistry, Provider, ProviderConfig, ShareConfig};
    use mailvault::ids::{AccountId, DeploymentId};
    use mailvault::keys::OfficerSecret;
    use mailvault::mail::{AppendOptions, INBOX};
    use mailvault::storage::DynStore;

    fn config() -> ProviderConfig {
        mailvault::testkit::cheap_provider_config()
    }

    /// An account on `store` with a `FileDirectory` under `root` (officer key and the
    /// provider's delivery key set), and the signing key of the deliverer.
    async fn world(store: DynStore, root: &std::path::Path) -> (Provider, AccountId, [u8; 32]) {
        let rng = RandomSource::os();
        let directory = Arc::new(FileDirectory::open(root).unwrap());
        directory
            .set_officer_keys(vec![OfficerKeyEntry {
                key: OfficerSecret::generate(&rng).public(),
                current: true,
            }])
            .await
            .unwrap();
        let signing = DeliverySigningKey::generate(&rng);
        directory
            .set_delivery_key(signing.verifying_key())
            .await
            .unwrap();
        let provider = Provider::new(store, DeploymentId::random(&rng), directory, config())
            .await
            .unwrap();
        let account = provider.create_account("pw").await.unwrap();
        (provider, account, *signing.to_bytes())
    }

    /// Item 1: the connections of one account share one handle, opened once (100 logins
    /// at once), whose writes every connection sees at once and whose subscribers hear
    /// of; the account closes with its last connection.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn item_01_connections_share_one_account_handle() {
        let root = tempfile::tempdir().unwrap();
        let (provider, account, _) = world(super::super::memory(), root.path()).await;
        let provider = Arc::new(provider);
        let registry = Arc::new(AccountRegistry::new());
        let unlocks = Arc::new(AtomicUsize::new(0));
        let mut logins = Vec::new();
        for _ in 0..100 {
            let (registry, provider, unlocks) =
                (registry.clone(), provider.clone(), unlocks.clone());
            logins.push(tokio::spawn(async move {
                registry
                    .get_or_open(account, ShareConfig::default(), || async move {
                        unlocks.fetch_add(1, Ordering::SeqCst);
                        provider.unlock(account, "pw").await
                    })
                    .await
                    .unwrap()
            }));
        }
        let mut connections = Vec::new();
        for login in logins {
            connections.push(login.await.unwrap());
        }
        assert_eq!(
            unlocks.load(Ordering::SeqCst),
            1,
            "the account was opened more than once"
        );
        assert!(connections.iter().all(|c| c.same(&connections[0])));
        assert_eq!(registry.open_accounts(), 1);

        // Connections that select the same mailbox between two changes share one view.
        let inbox = connections[0]
            .read()
            .await
            .mailbox_by_name(INBOX)
            .unwrap()
            .id;
        let first = connections[1].view(inbox).await.unwrap();
        let second = connections[2].view(inbox).await.unwrap();
        assert!(
            Arc::ptr_eq(&first, &second),
            "two SELECTs computed two views"
        );

        // A write through one connection: the others see it at once, and hear of it.
        let mut listener = connections[99].subscribe();
        let before = *listener.borrow_and_update();
        let appended = connections[0]
            .write()
            .await
            .append(inbox, super::MESSAGE, AppendOptions::default())
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(1), listener.changed())
            .await
            .expect("the subscriber was not told of the write")
            .unwrap();
        assert_eq!(*listener.borrow(), appended.modseq);
        assert!(appended.modseq > before);
        let seen = connections[42].read().await.email(inbox, appended.uid);
        assert!(seen.is_ok(), "{seen:?}");
        let after = connections[3].view(inbox).await.unwrap();
        assert_eq!(after.messages.len(), first.messages.len() + 1);
        assert_eq!(
            first.messages.len(),
            second.messages.len(),
            "a kept view changed"
        );

        // The last connection gone, the account is closed.
        drop(listener);
        connections.clear();
        assert_eq!(registry.open_accounts(), 0);
        assert!(registry.get(&account).is_none());
    }

    /// Item 2: a delivery made elsewhere (another provider on its own connection to the
    /// same bucket and directory, as another process) is imported by the handle's poller
    /// and heard of by its subscribers within a poll interval, in delivery order.
    async fn delivery_wakes_subscribers(name: &str, mine: DynStore, theirs: DynStore) {
        let root = tempfile::tempdir().unwrap();
        let (provider, account, signing) = world(mine, root.path()).await;
        let interval = Duration::from_millis(250);
        let handle = mailvault::engine::SharedAccount::open(
            provider.unlock(account, "pw").await.unwrap(),
            ShareConfig {
                poll_interval: interval,
                import_deliveries: true,
            },
        )
        .await
        .unwrap();
        let mut listener = handle.subscribe();
        listener.borrow_and_update();

        // The other side: its own store handle and its own directory handle.
        let directory = Arc::new(FileDirectory::open(root.path()).unwrap());
        let deployment = provider.deployment();
        let other = Provider::new(theirs, deployment, directory, config())
            .await
            .unwrap();
        let deliverer = other.deliverer(DeliverySigningKey::from_bytes(signing));
        let mut delays = Vec::new();
        for n in 0..3 {
            let body = format!(
                "From: bob@example.org\r\nTo: alice@example.org\r\nSubject: delivery {n}\r\n\r\nhello {n}\r\n"
            );
            deliverer
                .deliver_bytes(account, body.as_bytes(), DeliveryOptions::default())
                .await
                .unwrap();
            let delivered = Instant::now();
            tokio::time::timeout(interval + Duration::from_secs(2), listener.changed())
                .await
                .unwrap_or_else(|_| panic!("{name}: delivery {n} was not heard of"))
                .unwrap();
            delays.push(delivered.elapsed());
        }
        eprintln!("{name}: delivery to notification {delays:?} (poll interval {interval:?})");
        assert!(
            delays
                .iter()
                .all(|d| *d <= interval + Duration::from_secs(1)),
            "{name}: {delays:?}"
        );
        let mail = handle.read().await;
        let inbox = mail.mailbox_by_name(INBOX).unwrap().id;
        let view = mail.view(inbox).unwrap();
        let mut bodies = Vec::new();
        for m in &view.messages {
            let email = mail.email(inbox, m.uid).unwrap();
            let body = mail.read(&email).await.unwrap();
            bodies.push(
                String::from_utf8_lossy(&body)
                    .lines()
                    .last()
                    .unwrap_or("")
                    .to_string(),
            );
        }
        assert_eq!(
            bodies,
            ["hello 0", "hello 1", "hello 2"],
            "{name}: UIDs follow delivery order"
        );
        assert!(handle.last_poll_error().is_none(), "{name}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn item_02_a_delivery_elsewhere_wakes_subscribers_within_a_poll_interval() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_str().unwrap().to_string();
        let open = || mailvault::storage::open_store(&path).unwrap();
        delivery_wakes_subscribers("local", open(), open()).await;
        for name in ["GARAGE", "MOTO"] {
            if let (Some(mine), Some(theirs)) = (
                mailvault::testkit::s3_from_env(name),
                mailvault::testkit::s3_from_env(name),
            ) {
                delivery_wakes_subscribers(name, mine, theirs).await;
            }
        }
    }
}
