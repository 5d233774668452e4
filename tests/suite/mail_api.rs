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
                ..ShareConfig::default()
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
        crate::on_shared_backends(delivery_wakes_subscribers).await;
    }

    /// Item 2, a login after many deliveries (issue 13's first LOGIN): a handle opened
    /// over more pending deliveries than `import_at_open` is open at once and answers a
    /// read before they are imported; its poller imports them in the background (not
    /// waiting for its interval), a batch per commit: a subscriber hears of batches as
    /// they land and ends with every delivery once, UIDs in delivery order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn item_02_a_handle_over_many_pending_deliveries_opens_before_importing_them() {
        const N: usize = 300;
        let root = tempfile::tempdir().unwrap();
        let (provider, account, signing) = world(super::super::memory(), root.path()).await;
        let deliverer = provider.deliverer(DeliverySigningKey::from_bytes(signing));
        for n in 0..N {
            let body = format!(
                "From: bob@example.org\r\nTo: alice@example.org\r\nSubject: delivery {n}\r\n\r\nhello {n}\r\n"
            );
            deliverer
                .deliver_bytes(account, body.as_bytes(), DeliveryOptions::default())
                .await
                .unwrap();
        }
        let share = ShareConfig {
            // Only the poll the open starts at once imports.
            poll_interval: Duration::from_secs(3600),
            gc_interval: None,
            import_at_open: 10,
            import_batch: 25,
            ..ShareConfig::default()
        };
        let handle = mailvault::engine::SharedAccount::open(
            provider.unlock(account, "pw").await.unwrap(),
            share,
        )
        .await
        .unwrap();
        let mut listener = handle.subscribe();
        let count = |mail: &mailvault::mail::Mailstore| {
            let inbox = mail.mailbox_by_name(INBOX).unwrap().id;
            mail.view(inbox).unwrap().messages.len()
        };
        let first = count(&*handle.read().await);
        assert!(first < N, "the open waited for the import ({first} of {N})");
        let mut seen = vec![first];
        let deadline = Instant::now() + Duration::from_secs(120);
        while *seen.last().unwrap() < N {
            tokio::time::timeout_at(deadline.into(), listener.changed())
                .await
                .unwrap_or_else(|_| panic!("not all imported: {seen:?}"))
                .unwrap();
            let now = count(&*handle.read().await);
            if now != *seen.last().unwrap() {
                seen.push(now);
            }
        }
        eprintln!("messages seen by a subscriber: {seen:?}");
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]) && seen.iter().any(|&n| n > first && n < N),
            "imported in batches, each heard of: {seen:?}"
        );
        let mail = handle.read().await;
        let inbox = mail.mailbox_by_name(INBOX).unwrap().id;
        let view = mail.view(inbox).unwrap();
        let mut bodies = Vec::new();
        for m in &view.messages {
            let email = mail.email(inbox, m.uid).unwrap();
            bodies.push(mail.read(&email).await.unwrap());
        }
        let expected: Vec<Vec<u8>> = (0..N)
            .map(|n| {
                format!(
                    "From: bob@example.org\r\nTo: alice@example.org\r\nSubject: delivery {n}\r\n\r\nhello {n}\r\n"
                )
                .into_bytes()
            })
            .collect();
        assert!(
            bodies == expected,
            "every delivery once, UIDs in delivery order"
        );
        let uids: Vec<u32> = view.messages.iter().map(|m| m.uid).collect();
        assert_eq!(uids, (1..=N as u32).collect::<Vec<_>>());
        drop(mail);
        // (A sync waits for the poller's pass to end.)
        let again = handle.sync().await.unwrap();
        assert!(again.imported.is_empty(), "{again:?}");
        assert_eq!(handle.read().await.deliveries_waiting().await.unwrap(), 0);
        assert!(handle.last_poll_error().is_none());
    }

    /// The live index records of `messages` delivered and imported into one account:
    /// (kind, records, key bytes, value bytes) per kind, printed, and the bytes per
    /// message.
    async fn index_per_message(name: &str, messages: &[Vec<u8>]) -> (Vec<(u8, f64)>, f64) {
        let root = tempfile::tempdir().unwrap();
        let (provider, account, signing) = world(super::super::memory(), root.path()).await;
        let deliverer = provider.deliverer(DeliverySigningKey::from_bytes(signing));
        for m in messages {
            deliverer
                .deliver_bytes(account, m, DeliveryOptions::default())
                .await
                .unwrap();
        }
        let share = ShareConfig {
            poll_interval: Duration::from_secs(3600),
            gc_interval: None,
            import_at_open: u64::MAX,
            ..ShareConfig::default()
        };
        let handle = mailvault::engine::SharedAccount::open(
            provider.unlock(account, "pw").await.unwrap(),
            share,
        )
        .await
        .unwrap();
        let mail = handle.read().await;
        let inbox = mail.mailbox_by_name(INBOX).unwrap().id;
        let view = mail.view(inbox).unwrap();
        assert_eq!(view.messages.len(), messages.len(), "{name}");
        assert!(mail.unanalyzed(&view).unwrap().is_empty(), "{name}");
        let n = messages.len() as f64;
        let usage = mail.index_usage();
        let total: u64 = usage.iter().map(|u| u.key_bytes + u.value_bytes).sum();
        for u in &usage {
            eprintln!(
                "{name}: {} {:6} records, {:8.1} key + {:8.1} value bytes per message",
                u.kind as char,
                u.records,
                u.key_bytes as f64 / n,
                u.value_bytes as f64 / n
            );
        }
        eprintln!("{name}: {:.1} bytes per message in all", total as f64 / n);
        let per_kind = usage
            .iter()
            .map(|u| (u.kind, (u.key_bytes + u.value_bytes) as f64 / n))
            .collect();
        (per_kind, total as f64 / n)
    }

    /// Issue 13, stored size: what the live index holds per delivered message, for the
    /// benchmark's `smtp-source` messages (a short header, 10 KB of text) and for the
    /// real-mail corpus (header blocks of up to several KiB), printed by kind.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stored_index_bytes_per_delivered_message() {
        let smtp_source: Vec<Vec<u8>> = (0..200)
            .map(|n| {
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
            })
            .collect();
        let (_, small) = index_per_message("smtp-source", &smtp_source).await;
        let corpus: Vec<Vec<u8>> = crate::mail::corpus().into_iter().map(|(_, m)| m).collect();
        let (_, real) = index_per_message("corpus", &corpus).await;
        // 1 378 and 1 957 bytes when this test was written (the email record is 1 158 of
        // the first: its body's pin 369, preview 256, envelope, header block 162, MIME
        // part): a record that grows fails here before it shows in a benchmark.
        assert!(small < 1450.0, "{small} bytes per smtp-source message");
        assert!(real < 2050.0, "{real} bytes per corpus message");
    }
}

/// Item 7: quotas and limits, checked inside the commit for sessions, and by the
/// deliverer (which holds no key) from the usage sessions publish in the directory, with
/// the deliveries still waiting for import counted.
mod quota {
    use futures::TryStreamExt;
    use mailvault::crypto::RandomSource;
    use mailvault::delivery::{DeliveryOptions, Recipient};
    use mailvault::directory::{AccountLimits, AccountRecord, Directory, KeyModel};
    use mailvault::engine::Provider;
    use mailvault::ids::{AccountId, DeploymentId};
    use mailvault::mail::{AppendOptions, FlagChange, Flags, INBOX};
    use mailvault::storage::{naming, CommitMode, DynStore};
    use mailvault::Error;

    use super::super::mail::MailSetup;

    /// A message of exactly `len` bytes.
    fn message(len: usize) -> Vec<u8> {
        let mut m = b"Subject: sized\r\n\r\n".to_vec();
        m.resize(len, b'x');
        m
    }

    async fn bodies(store: &DynStore, account: &AccountId) -> usize {
        store
            .list(Some(&naming::account_prefix(account)))
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .iter()
            .filter(|m| m.location.as_ref().contains("/b/"))
            .count()
    }

    async fn limit(setup: &MailSetup, limits: AccountLimits) {
        let mut record = AccountRecord::new(KeyModel::DeviceOnly, Vec::new(), [1; 32]);
        record.limits = limits;
        setup
            .directory
            .set_account_record(&setup.account, record)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn item_07_appends_and_copies_beyond_the_quota_are_refused_and_leave_nothing() {
        let setup = MailSetup::new(super::super::memory(), CommitMode::CompareAndSwap);
        limit(
            &setup,
            AccountLimits {
                storage: Some(1000),
                message_size: Some(700),
            },
        )
        .await;
        let mut mail = setup.open().await;
        assert_eq!(mail.limits().storage, Some(1000));
        let inbox = mail.mailbox_by_name(INBOX).unwrap().id;
        let archive = mail.create_mailbox("Archive", None).await.unwrap().id;
        let first = mail
            .append(inbox, &message(600), AppendOptions::default())
            .await
            .unwrap();
        let refused = mail
            .append(inbox, &message(600), AppendOptions::default())
            .await;
        assert!(
            matches!(
                refused,
                Err(Error::OverQuota {
                    limit: 1000,
                    used: 1200
                })
            ),
            "{refused:?}"
        );
        assert_eq!(
            bodies(&setup.store, &setup.account).await,
            1,
            "no orphan body"
        );
        let copy = mail.copy(inbox, &[first.uid], archive).await;
        assert!(matches!(copy, Err(Error::OverQuota { .. })), "{copy:?}");
        // A move adds nothing: allowed at the limit.
        mail.move_messages(inbox, &[first.uid], archive)
            .await
            .unwrap();
        let big = mail
            .append(inbox, &message(800), AppendOptions::default())
            .await;
        assert!(matches!(big, Err(Error::TooBig { limit: 700 })), "{big:?}");
        assert_eq!(bodies(&setup.store, &setup.account).await, 1);
        assert!(!Error::OverQuota { limit: 1, used: 2 }.is_transient());
        // Room again once something is expunged.
        mail.store_flags(
            archive,
            &[1],
            FlagChange::Add(Flags::from_names(["\\Deleted"]).unwrap()),
            None,
        )
        .await
        .unwrap();
        mail.expunge(archive, None).await.unwrap();
        mail.append(inbox, &message(600), AppendOptions::default())
            .await
            .unwrap();
        assert_eq!(mail.quota().unwrap().bytes, 600);
    }

    /// With compare-and-swap the check is inside the commit: of two appends that each fit
    /// alone but not together, one is refused, however they interleave.
    async fn concurrent_appends_cannot_both_pass(store: DynStore, label: &str) {
        let setup = MailSetup::new(store, CommitMode::CompareAndSwap);
        limit(
            &setup,
            AccountLimits {
                storage: Some(1000),
                message_size: None,
            },
        )
        .await;
        let mut a = setup.open().await;
        let mut b = setup.open().await;
        let inbox = a.mailbox_by_name(INBOX).unwrap().id;
        let body = message(600);
        let (ra, rb) = tokio::join!(
            a.append(inbox, &body, AppendOptions::default()),
            b.append(inbox, &body, AppendOptions::default())
        );
        let refused = [&ra, &rb]
            .iter()
            .filter(|r| matches!(r, Err(Error::OverQuota { .. })))
            .count();
        assert_eq!(refused, 1, "{label}: {ra:?} {rb:?}");
        let mut fresh = setup.open().await;
        fresh.refresh().await.unwrap();
        assert_eq!(fresh.quota().unwrap().bytes, 600, "{label}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn item_07_two_writers_cannot_both_pass_the_quota_with_compare_and_swap() {
        for _ in 0..10 {
            concurrent_appends_cannot_both_pass(super::super::memory(), "memory").await;
        }
        if let Some(store) = mailvault::testkit::s3_from_env("MOTO") {
            concurrent_appends_cannot_both_pass(store, "moto").await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn item_07_the_deliverer_refuses_over_quota_counting_pending_deliveries() {
        let rng = RandomSource::os();
        let store = super::super::memory();
        let (directory, _officer, signing) =
            super::super::directory_with_officer_and_signer(&rng).await;
        let provider = Provider::new(
            store.clone(),
            DeploymentId::random(&rng),
            directory.clone(),
            mailvault::testkit::cheap_provider_config(),
        )
        .await
        .unwrap();
        let alice = provider.create_account("pw").await.unwrap();
        let bob = provider.create_account("pw").await.unwrap();
        let mut record = directory.account_record(&alice).await.unwrap().unwrap();
        record.limits = AccountLimits {
            storage: Some(10_000),
            message_size: Some(5_000),
        };
        directory.set_account_record(&alice, record).await.unwrap();
        let deliverer = provider.deliverer(signing);
        let to_alice = || DeliveryOptions {
            mailbox: INBOX.into(),
            ..DeliveryOptions::default()
        };

        // `n` deliveries of 3000 bytes accepted, then the next one's outcome.
        let fill = |n: usize| {
            let deliverer = &deliverer;
            async move {
                for _ in 0..n {
                    deliverer
                        .deliver_bytes(alice, &message(3000), to_alice())
                        .await
                        .unwrap();
                }
                deliverer
                    .deliver_bytes(alice, &message(3000), to_alice())
                    .await
            }
        };
        // Three pending deliveries (nothing imported, nothing published) count.
        let refused = fill(3).await;
        assert!(
            matches!(
                refused,
                Err(Error::OverQuota {
                    limit: 10_000,
                    used: 12_000
                })
            ),
            "{refused:?}"
        );
        assert_eq!(
            bodies(&store, &alice).await,
            3,
            "the refused body is deleted"
        );

        // One message to both: too big for Alice's limit, fine for Bob, who gets it.
        let results = deliverer
            .deliver_to_many(
                &[Recipient::new(alice), Recipient::new(bob)],
                &message(6000),
            )
            .await
            .unwrap();
        assert!(
            matches!(results[0], Err(Error::TooBig { limit: 5_000 })),
            "{:?}",
            results[0]
        );
        assert_eq!(results[1].as_ref().unwrap().size, 6000);

        // Imported, then two expunged, the usage published: room for two more.
        let mut session = provider.unlock(alice, "pw").await.unwrap();
        let mut mail = session.mailstore().await.unwrap();
        // A session counts the pending deliveries too.
        let inbox = mail.mailbox_by_name(INBOX).unwrap().id;
        let appended = mail
            .append(inbox, &message(2000), AppendOptions::default())
            .await;
        assert!(
            matches!(
                appended,
                Err(Error::OverQuota {
                    limit: 10_000,
                    used: 11_000
                })
            ),
            "{appended:?}"
        );
        assert_eq!(
            session
                .import_deliveries(&mut mail)
                .await
                .unwrap()
                .imported
                .len(),
            3
        );
        let published = mail.publish_usage().await.unwrap();
        assert_eq!((published.stored, published.imported), (9000, 9000));
        mail.store_flags(
            inbox,
            &[1, 2],
            FlagChange::Add(Flags::from_names(["\\Deleted"]).unwrap()),
            None,
        )
        .await
        .unwrap();
        mail.expunge(inbox, None).await.unwrap();
        // Not yet published: the deliverer still counts 9000.
        assert!(deliverer
            .deliver_bytes(alice, &message(3000), to_alice())
            .await
            .is_err());
        mail.publish_usage().await.unwrap();
        let refused = fill(2).await;
        assert!(
            matches!(refused, Err(Error::OverQuota { .. })),
            "{refused:?}"
        );
        // Acknowledged deliveries are imported even beyond the quota (never lost).
        assert_eq!(
            session
                .import_deliveries(&mut mail)
                .await
                .unwrap()
                .imported
                .len(),
            2
        );
        assert_eq!(mail.quota().unwrap().bytes, 9000);
    }

    #[tokio::test]
    async fn item_07_limits_persist_in_a_file_directory() {
        let root = tempfile::tempdir().unwrap();
        let account = AccountId::random(&RandomSource::os());
        let mut record = AccountRecord::new(KeyModel::ServerManaged, vec![(1, [3; 32])], [4; 32]);
        record.limits = AccountLimits {
            storage: Some(5 << 30),
            message_size: Some(50 << 20),
        };
        mailvault::directory::FileDirectory::open(root.path())
            .unwrap()
            .set_account_record(&account, record)
            .await
            .unwrap();
        let read = mailvault::directory::FileDirectory::open(root.path())
            .unwrap()
            .account_record(&account)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read.limits.storage, Some(5 << 30));
        assert_eq!(read.limits.message_size, Some(50 << 20));
        assert_eq!(read.public_keys, vec![(1, [3; 32])]);
    }
}

/// Item 3: two divergences from an independent parser (Python's `email`) on real mail.
mod analysis {
    use mailvault::mail::{AppendOptions, Mailstore, PartSection, INBOX};
    use mailvault::storage::CommitMode;

    use super::super::mail::MailSetup;

    #[tokio::test]
    async fn item_03_a_content_type_without_subtype_is_text_plain() {
        let setup = MailSetup::new(super::super::memory(), CommitMode::CompareAndSwap);
        let mut mail = setup.open().await;
        let inbox = mail.mailbox_by_name(INBOX).unwrap().id;
        let appended = mail
            .append(
                inbox,
                b"From: a@example.org\r\nMIME-Version: 1.0\r\n\
Content-Type: text; charset=us-ascii\r\n\r\nhello\r\n",
                AppendOptions::default(),
            )
            .await
            .unwrap();
        let email = mail.email(inbox, appended.uid).unwrap();
        let root = &email.parts[0];
        // Python: get_content_type() == 'text/plain', charset us-ascii.
        assert_eq!(
            (root.content_type.as_str(), root.subtype.as_str()),
            ("text", "plain")
        );
        assert!(root
            .params
            .iter()
            .any(|(k, v)| k == "charset" && v == "us-ascii"));
    }

    #[tokio::test]
    async fn item_03_repeated_delimiter_lines_are_not_part_of_the_next_header() {
        let setup = MailSetup::new(super::super::memory(), CommitMode::CompareAndSwap);
        let mut mail = setup.open().await;
        let inbox = mail.mailbox_by_name(INBOX).unwrap().id;
        let message = b"From: a@example.org\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=B\r\n\r\npreamble\r\n--B\r\n--B\r\n\
Content-Type: text/plain\r\n\r\nfirst\r\n--B\r\nContent-Type: text/html\r\n\r\n\
<p>second</p>\r\n--B--\r\n";
        let appended = mail
            .append(inbox, message, AppendOptions::default())
            .await
            .unwrap();
        let email = mail.email(inbox, appended.uid).unwrap();
        // Python: multipart/mixed, text/plain 'first', text/html '<p>second</p>'.
        let types: Vec<String> = email
            .parts
            .iter()
            .map(|p| format!("{}/{}", p.content_type, p.subtype))
            .collect();
        assert_eq!(types, ["multipart/mixed", "text/plain", "text/html"]);
        let first = Mailstore::imap_section(&email, &[1]).unwrap();
        let header = mail
            .read_part(&email, first, PartSection::Header)
            .await
            .unwrap();
        assert_eq!(
            &header[..],
            b"Content-Type: text/plain\r\n\r\n",
            "BODY[1.MIME]"
        );
        let body = mail
            .read_part(&email, first, PartSection::Body)
            .await
            .unwrap();
        assert_eq!(&body[..], b"first");
    }
}
