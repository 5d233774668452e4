//! Issue 12, item 10: the companion kit. A device keeps its keyring in a key file sealed
//! under its device key, opens its account with a store scoped to that account and a
//! local directory, writes nothing to probe the bucket, and sees what the provider
//! delivers (sealed to public keys only) within a poll interval, in delivery order.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use mailvault::crypto::RandomSource;
use mailvault::delivery::{DeliveryOptions, DeliverySigningKey};
use mailvault::directory::{Directory, FileDirectory, KeyModel, OfficerKeyEntry};
use mailvault::engine::{Companion, CompanionConfig, DeviceEnrollment, Provider};
use mailvault::ids::{AccountId, DeploymentId};
use mailvault::keys::{DeviceKey, OfficerSecret};
use mailvault::mail::INBOX;
use mailvault::storage::{naming, AccountScopedStore, CountingStore, DynStore, RequestKind};
use mailvault::Error;
use object_store::ObjectStoreExt;

const POLL: Duration = Duration::from_millis(250);

fn config() -> CompanionConfig {
    let mut config = CompanionConfig::default();
    config.share.poll_interval = POLL;
    config
}

/// The provider side (its own `FileDirectory` under `root`, an officer key and the
/// delivery key set) and its delivery signing key.
async fn provider(store: DynStore, root: &std::path::Path) -> (Provider, DeliverySigningKey) {
    let (provider, signing, _) = provider_and_officer(store, root).await;
    (provider, signing)
}

/// [`provider`], with the deployment's officer secret.
async fn provider_and_officer(
    store: DynStore,
    root: &std::path::Path,
) -> (Provider, DeliverySigningKey, OfficerSecret) {
    let rng = RandomSource::os();
    let directory = Arc::new(FileDirectory::open(root).unwrap());
    let officer = OfficerSecret::generate(&rng);
    directory
        .set_officer_keys(vec![OfficerKeyEntry {
            key: officer.public(),
            current: true,
        }])
        .await
        .unwrap();
    let signing = DeliverySigningKey::generate(&rng);
    directory
        .set_delivery_key(signing.verifying_key())
        .await
        .unwrap();
    let provider = Provider::new(
        store,
        DeploymentId::random(&rng),
        directory,
        mailvault::testkit::cheap_provider_config(),
    )
    .await
    .unwrap();
    (provider, signing, officer)
}

/// The enrollment flow of key model 1: the provider enrolls, the device creates its
/// keyring and key file (its enrollment carried as text), the provider accepts the
/// public keys. Returns the account and the device key.
async fn enroll(
    provider: &Provider,
    device_store: DynStore,
    local: &std::path::Path,
) -> (AccountId, DeviceKey) {
    let enrollment = provider
        .device_enrollment(KeyModel::DeviceOnly)
        .await
        .unwrap();
    let carried = DeviceEnrollment::parse(&enrollment.to_armored()).unwrap();
    assert_eq!(carried.account, enrollment.account);
    assert_eq!(carried.delivery_keys, enrollment.delivery_keys);
    let device_key = DeviceKey::generate(&RandomSource::os());
    let public_keys = Companion::create(device_store, local, &carried, &device_key, config())
        .await
        .unwrap();
    provider
        .accept_keyring(carried.account, public_keys)
        .await
        .unwrap();
    (carried.account, device_key)
}

fn message(n: usize) -> String {
    format!("From: bob@example.org\r\nTo: alice@example.org\r\nSubject: delivery {n}\r\n\r\nhello {n}\r\n")
}

/// The whole flow on one backend: the companion opens with no write and no request
/// outside its account, the provider (keys: none) cannot open the account, and every
/// delivery is heard of within a poll interval and imported in delivery order.
async fn companion_flow(name: &str, provider_store: DynStore, device_store: DynStore) {
    let provider_root = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    let (provider, signing, officer) =
        provider_and_officer(provider_store, provider_root.path()).await;
    let (account, device_key) = enroll(&provider, device_store.clone(), local.path()).await;

    // The provider holds the public keys only: no login, no officer, nothing opens.
    let login = provider.unlock(account, "any password").await;
    assert!(matches!(login, Err(Error::WrongCredential)), "{name}");
    let officer_open = provider.officer_open(account, &officer).await;
    assert!(
        matches!(officer_open, Err(Error::WrongCredential)),
        "{name}"
    );
    assert!(provider
        .keyrings()
        .stored_slots(&account)
        .await
        .unwrap()
        .is_empty());

    let counting = CountingStore::new(device_store);
    let companion = Companion::open(
        Arc::new(counting.clone()),
        local.path(),
        &device_key,
        config(),
    )
    .await
    .unwrap();
    assert_eq!(companion.account(), account);
    let opened = counting.requests();
    let written: Vec<_> = opened
        .iter()
        .filter(|r| {
            !matches!(
                r.kind,
                RequestKind::Get | RequestKind::Head | RequestKind::List
            )
        })
        .collect();
    assert!(written.is_empty(), "{name}: open wrote {written:?}");
    let prefix = format!("{}/", naming::account_prefix(&account));
    assert!(
        opened.iter().all(|r| r.path.starts_with(&prefix)),
        "{name}: a request outside the account: {opened:?}"
    );

    let handle = companion.handle().clone();
    let mut listener = handle.subscribe();
    listener.borrow_and_update();
    let deliverer = provider.deliverer(signing);
    let mut delays = Vec::new();
    for n in 0..3 {
        deliverer
            .deliver_bytes(account, message(n).as_bytes(), DeliveryOptions::default())
            .await
            .unwrap();
        let delivered = Instant::now();
        tokio::time::timeout(POLL + Duration::from_secs(2), listener.changed())
            .await
            .unwrap_or_else(|_| panic!("{name}: delivery {n} was not seen"))
            .unwrap();
        delays.push(delivered.elapsed());
    }
    eprintln!("{name}: delivery to the companion {delays:?} (poll interval {POLL:?})");
    assert!(
        delays.iter().all(|d| *d <= POLL + Duration::from_secs(1)),
        "{name}: {delays:?}"
    );
    let mail = handle.read().await;
    let inbox = mail.mailbox_by_name(INBOX).unwrap().id;
    let view = mail.view(inbox).unwrap();
    let mut bodies = Vec::new();
    for m in &view.messages {
        let email = mail.email(inbox, m.uid).unwrap();
        bodies.push(mail.read(&email).await.unwrap().to_vec());
    }
    let expected: Vec<Vec<u8>> = (0..3).map(|n| message(n).into_bytes()).collect();
    assert_eq!(
        bodies, expected,
        "{name}: byte-exact, UIDs in delivery order"
    );
    drop(mail);
    assert!(handle.last_poll_error().is_none(), "{name}");
    // Every request the companion made, polls and imports included, was the account's.
    let all = counting.requests();
    assert!(
        all.iter().all(|r| r.path.starts_with(&prefix)),
        "{name}: a request outside the account"
    );
    assert!(all.iter().any(|r| r.kind == RequestKind::List));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_10_a_companion_sees_deliveries_within_a_poll_interval() {
    super::on_shared_backends(companion_flow).await;
}

/// A companion reopened later (a restart of the device) imports what was delivered
/// while it was closed, in delivery order, and its second open writes nothing either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_10_a_reopened_companion_imports_what_arrived_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let store = mailvault::storage::open_store(dir.path().to_str().unwrap()).unwrap();
    let provider_root = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    let (provider, signing) = provider(store.clone(), provider_root.path()).await;
    let (account, device_key) = enroll(&provider, store.clone(), local.path()).await;
    drop(
        Companion::open(store.clone(), local.path(), &device_key, config())
            .await
            .unwrap(),
    );
    let deliverer = provider.deliverer(signing);
    for n in 0..2 {
        deliverer
            .deliver_bytes(account, message(n).as_bytes(), DeliveryOptions::default())
            .await
            .unwrap();
    }
    let counting = CountingStore::new(store);
    let companion = Companion::open(
        Arc::new(counting.clone()),
        local.path(),
        &device_key,
        config(),
    )
    .await
    .unwrap();
    let mail = companion.handle().read().await;
    let inbox = mail.mailbox_by_name(INBOX).unwrap().id;
    assert_eq!(mail.view(inbox).unwrap().messages.len(), 2);
    // Writes there are, now: the import's (index commit, envelopes deleted), no probe.
    assert!(counting
        .requests()
        .iter()
        .all(|r| !r.path.starts_with("_probe")));
}

/// The key file: another device key is a wrong credential; a damaged, truncated or
/// foreign file and a missing one are typed errors; nothing panics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_10_key_file_wrong_key_tampered_and_absent() {
    let store = super::memory();
    let provider_root = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    let (provider, _) = provider(store.clone(), provider_root.path()).await;
    let (_, device_key) = enroll(&provider, store.clone(), local.path()).await;
    let open = |key: DeviceKey| {
        let (store, path) = (store.clone(), local.path().to_path_buf());
        async move { Companion::open(store, &path, &key, config()).await }
    };
    let other = DeviceKey::generate(&RandomSource::os());
    assert!(matches!(open(other).await, Err(Error::WrongCredential)));

    let key_path = Companion::key_file_path(local.path());
    let good = std::fs::read_to_string(&key_path).unwrap();
    let same_key = || DeviceKey::from_file_string(&device_key.to_file_string()).unwrap();
    // A hex digit changed anywhere in the body (header, slot, wrap, checksum).
    let lines: Vec<&str> = good.lines().collect();
    for line in 1..lines.len() - 1 {
        for column in [0, 31, 63] {
            let mut changed: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
            let Some(c) = changed[line].chars().nth(column) else {
                continue;
            };
            let flipped = if c == '0' { '1' } else { '0' };
            changed[line].replace_range(column..column + 1, &flipped.to_string());
            std::fs::write(&key_path, changed.join("\n") + "\n").unwrap();
            let outcome = open(same_key()).await;
            assert!(
                matches!(outcome, Err(Error::Tampered)),
                "line {line} column {column}: {outcome:?}"
            );
        }
    }
    // Truncated, emptied, not a key file, gone.
    for (text, tampered) in [
        (good[..good.len() / 2].to_string(), false),
        (good.replace(lines[2], ""), true),
        (String::new(), false),
        ("mailvault-device-key-v1:00".to_string(), false),
    ] {
        std::fs::write(&key_path, &text).unwrap();
        let outcome = open(same_key()).await;
        if tampered {
            assert!(matches!(outcome, Err(Error::Tampered)), "{outcome:?}");
        } else {
            assert!(
                matches!(outcome, Err(Error::InvalidArgument(_))),
                "{outcome:?}"
            );
        }
    }
    std::fs::remove_file(&key_path).unwrap();
    assert!(matches!(
        open(same_key()).await,
        Err(Error::NotFound { .. })
    ));
    std::fs::write(&key_path, &good).unwrap();
    assert!(open(same_key()).await.is_ok());
}

/// Creating a device twice in one folder, or for a model whose keyring holds slots,
/// is refused; a malformed enrollment is a typed error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_10_enrollment_errors_are_typed() {
    let store = super::memory();
    let provider_root = tempfile::tempdir().unwrap();
    let local = tempfile::tempdir().unwrap();
    let (provider, _) = provider(store.clone(), provider_root.path()).await;
    let enrollment = provider
        .device_enrollment(KeyModel::DeviceOnly)
        .await
        .unwrap();
    let key = DeviceKey::generate(&RandomSource::os());
    Companion::create(store.clone(), local.path(), &enrollment, &key, config())
        .await
        .unwrap();
    let again = Companion::create(store.clone(), local.path(), &enrollment, &key, config()).await;
    assert!(matches!(again, Err(Error::InvalidArgument(_))), "{again:?}");
    let other = tempfile::tempdir().unwrap();
    let twice = Companion::create(store.clone(), other.path(), &enrollment, &key, config()).await;
    assert!(matches!(twice, Err(Error::Conflict { .. })), "{twice:?}");
    let model3 = provider
        .device_enrollment(KeyModel::DevicePassword)
        .await
        .unwrap();
    let refused = Companion::create(store.clone(), other.path(), &model3, &key, config()).await;
    assert!(
        matches!(refused, Err(Error::InvalidArgument(_))),
        "{refused:?}"
    );
    assert!(matches!(
        provider.device_enrollment(KeyModel::ServerManaged).await,
        Err(Error::InvalidArgument(_))
    ));

    let text = enrollment.to_armored();
    assert!(!format!("{enrollment:?}").contains("secret"));
    let lines: Vec<&str> = text.lines().collect();
    for bad in [
        String::new(),
        text.replace(lines[1], &lines[1][..10]),
        text.replace(lines[1], &"zz".repeat(32)),
        text.replacen("4d564e3101", "4d564e3109", 1),
    ] {
        let parsed = DeviceEnrollment::parse(&bad);
        assert!(
            matches!(
                parsed,
                Err(Error::InvalidArgument(_)) | Err(Error::UnsupportedVersion { .. })
            ),
            "{parsed:?}"
        );
    }
}

/// The scoped store refuses every request outside its account, listings of the whole
/// bucket included, without reaching the store.
#[tokio::test]
async fn item_10_an_account_scoped_store_stays_in_its_account() {
    let rng = RandomSource::os();
    let (mine, theirs) = (AccountId::random(&rng), AccountId::random(&rng));
    let inner = CountingStore::new(super::memory());
    let scoped: DynStore = Arc::new(AccountScopedStore::new(Arc::new(inner.clone()), &mine));
    let inside = object_store::path::Path::from(format!("{}/x", naming::account_prefix(&mine)));
    let outside = object_store::path::Path::from(format!("{}/x", naming::account_prefix(&theirs)));
    scoped.put(&inside, b"a".to_vec().into()).await.unwrap();
    assert!(scoped.put(&outside, b"a".to_vec().into()).await.is_err());
    assert!(scoped.get(&outside).await.is_err());
    assert!(scoped.delete(&outside).await.is_err());
    assert!(scoped.list(None).try_collect::<Vec<_>>().await.is_err());
    assert!(scoped
        .list(Some(&naming::account_prefix(&theirs)))
        .try_collect::<Vec<_>>()
        .await
        .is_err());
    assert_eq!(
        scoped
            .list(Some(&naming::account_prefix(&mine)))
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .len(),
        1
    );
    // A sibling whose hex starts with the account's is not the account.
    let sibling = object_store::path::Path::from(format!("{}0/x", naming::account_prefix(&mine)));
    assert!(scoped.get(&sibling).await.is_err());
    assert!(inner
        .requests()
        .iter()
        .all(|r| r.path.starts_with(naming::account_prefix(&mine).as_ref())));
}
