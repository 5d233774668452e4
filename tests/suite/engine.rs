//! The transparent flavor end to end (key model 5): account creation, login, password
//! change, officer open/reset/audit with records the user sees, parameter upgrade, a
//! login storm through the gate, and crypto-erase against a copy of the bucket.

use std::sync::Arc;

use futures::TryStreamExt;
use mailvault::crypto::RandomSource;
use mailvault::directory::{AccountRecord, Directory, KeyModel, MemoryDirectory, OfficerKeyEntry};
use mailvault::engine::{officer_action, Provider, ProviderConfig};
use mailvault::format::slot::{KdfParams, SlotKind};
use mailvault::format::BlobKind;
use mailvault::ids::DeploymentId;
use mailvault::index::Batch;
use mailvault::keys::{KdfGate, OfficerSecret};
use mailvault::storage::DynStore;
use mailvault::Error;
use object_store::{ObjectStoreExt, PutPayload};

const CHEAP: KdfParams = KdfParams {
    m_kib: 256,
    t: 1,
    p: 1,
};

struct Deployment {
    store: DynStore,
    directory: Arc<MemoryDirectory>,
    officer: OfficerSecret,
    deployment: DeploymentId,
}

impl Deployment {
    async fn new() -> Self {
        let rng = RandomSource::os();
        let (directory, officer) = super::directory_with_officer(&rng).await;
        Self {
            store: super::memory(),
            directory,
            officer,
            deployment: DeploymentId::random(&rng),
        }
    }

    async fn provider(&self, kdf: KdfParams) -> Provider {
        self.provider_on(self.store.clone(), kdf).await
    }

    async fn provider_on(&self, store: DynStore, kdf: KdfParams) -> Provider {
        let config = ProviderConfig {
            pepper: Some([5; 32]),
            kdf,
            limits: None,
            gate: KdfGate::new(2),
            ..ProviderConfig::default()
        };
        Provider::new(store, self.deployment, self.directory.clone(), config)
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_5_login_password_change_and_officer_tools() {
    let d = Deployment::new().await;
    let provider = d.provider(CHEAP).await;
    let alice = provider.create_account("first password").await.unwrap();
    let record = d.directory.account_record(&alice).await.unwrap().unwrap();
    assert_eq!(record.model, KeyModel::ServerManaged);
    assert_eq!(record.public_keys.len(), 1);

    let mut session = provider.unlock(alice, "first password").await.unwrap();
    let kinds: Vec<_> = session.slots().iter().map(|s| s.kind).collect();
    assert_eq!(kinds, vec![SlotKind::Password, SlotKind::Officer]);
    let pin = session
        .blobs()
        .put(BlobKind::Message, b"Subject: hello")
        .await
        .unwrap();
    let mut flags = session.collection(b"flags").await.unwrap();
    let mut batch = Batch::new();
    batch.put(&b"uid:1"[..], &b"\\Seen"[..]);
    flags.commit(batch).await.unwrap();
    assert!(matches!(
        provider.unlock(alice, "wrong").await,
        Err(Error::WrongCredential)
    ));

    session.change_password("second password").await.unwrap();
    assert!(matches!(
        provider.unlock(alice, "first password").await,
        Err(Error::WrongCredential)
    ));
    let again = provider.unlock(alice, "second password").await.unwrap();
    assert_eq!(
        &again.blobs().read(&pin).await.unwrap()[..],
        b"Subject: hello"
    );
    assert_eq!(
        again.collection(b"flags").await.unwrap().get(b"uid:1"),
        Some(&b"\\Seen"[..])
    );
    assert!(again.officer_records().is_empty());

    // The officer opens the account, resets the password and audits it; the user sees it all.
    let officer_session = provider.officer_open(alice, &d.officer).await.unwrap();
    assert_eq!(
        &officer_session.blobs().read(&pin).await.unwrap()[..],
        b"Subject: hello"
    );
    provider
        .officer_reset_password(alice, &d.officer, "reset by officer")
        .await
        .unwrap();
    assert!(matches!(
        provider.unlock(alice, "second password").await,
        Err(Error::WrongCredential)
    ));
    let report = provider
        .officer_audit(alice, &d.officer, &[])
        .await
        .unwrap();
    assert!(report.consistent);
    assert_eq!(report.matching_epochs, vec![1]);
    let user = provider.unlock(alice, "reset by officer").await.unwrap();
    let actions: Vec<u8> = user.officer_records().iter().map(|r| r.kind).collect();
    assert_eq!(
        actions,
        vec![
            officer_action::OPENED,
            officer_action::RESET_PASSWORD,
            officer_action::AUDITED
        ]
    );
    assert!(user
        .officer_records()
        .iter()
        .all(|r| r.officer == d.officer.public().to_bytes()));
    // Another officer key opens nothing.
    let stranger = OfficerSecret::generate(&RandomSource::os());
    assert!(matches!(
        provider.officer_open(alice, &stranger).await,
        Err(Error::WrongCredential)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weaker_stored_costs_are_raised_at_the_next_login() {
    let d = Deployment::new().await;
    let alice = d.provider(CHEAP).await.create_account("pw").await.unwrap();
    let stronger = KdfParams {
        m_kib: 1024,
        t: 2,
        p: 1,
    };
    let provider = d.provider(stronger).await;
    provider.unlock(alice, "pw").await.unwrap();
    let objects: Vec<_> = d.store.list(None).try_collect().await.unwrap();
    let keyring = objects
        .iter()
        .find(|m| m.location.as_ref().contains("/k/"))
        .unwrap();
    let bytes = d
        .store
        .get(&keyring.location)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let parsed = mailvault::format::keyring::KeyringObject::parse(&bytes).unwrap();
    let password = parsed
        .slots
        .iter()
        .find(|s| s.kind == SlotKind::Password)
        .unwrap();
    assert_eq!(password.kdf, stronger);
    provider.unlock(alice, "pw").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_storm_goes_through_the_gate() {
    let d = Deployment::new().await;
    let provider = Arc::new(d.provider(CHEAP).await);
    let alice = provider.create_account("pw").await.unwrap();
    let mut logins = Vec::new();
    for i in 0..24 {
        let provider = provider.clone();
        logins.push(tokio::spawn(async move {
            let password = if i % 3 == 0 { "nope" } else { "pw" };
            provider.unlock(alice, password).await.map(|_| ())
        }));
    }
    let mut ok = 0;
    for (i, login) in logins.into_iter().enumerate() {
        match login.await.unwrap() {
            Ok(()) => ok += 1,
            Err(Error::WrongCredential) => assert_eq!(i % 3, 0),
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(ok, 16);
}

/// A login for a name the server does not know costs what a wrong password costs (one
/// derivation through the login gate, at the deployment's costs), so that the time of a
/// failed login does not tell whether the account exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_login_costs_a_derivation_like_a_wrong_password() {
    let d = Deployment::new().await;
    let gate = KdfGate::new(1);
    let config = ProviderConfig {
        pepper: Some([5; 32]),
        kdf: CHEAP,
        limits: None,
        gate: gate.clone(),
        ..ProviderConfig::default()
    };
    let provider = Provider::new(d.store.clone(), d.deployment, d.directory.clone(), config)
        .await
        .unwrap();
    let alice = provider.create_account("pw").await.unwrap();
    let before = gate.derivations();
    let wrong = provider.unlock(alice, "nope").await;
    assert!(matches!(wrong, Err(Error::WrongCredential)), "{wrong:?}");
    let for_a_wrong_password = gate.derivations() - before;
    let before = gate.derivations();
    let unknown = provider.reject_unknown_login("nope").await;
    assert!(matches!(unknown, Error::WrongCredential), "{unknown:?}");
    assert_eq!(for_a_wrong_password, 1);
    assert_eq!(gate.derivations() - before, for_a_wrong_password);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erase_leaves_nothing_openable_even_in_a_copy_of_the_bucket() {
    let d = Deployment::new().await;
    let provider = d.provider(CHEAP).await;
    let alice = provider.create_account("pw").await.unwrap();
    let session = provider.unlock(alice, "pw").await.unwrap();
    session
        .blobs()
        .put(BlobKind::Message, b"secret mail")
        .await
        .unwrap();
    // A backup of the bucket taken before the erase.
    let backup = super::memory();
    let objects: Vec<_> = d.store.list(None).try_collect().await.unwrap();
    for meta in &objects {
        let bytes = d
            .store
            .get(&meta.location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        backup
            .put(&meta.location, PutPayload::from(bytes))
            .await
            .unwrap();
    }
    let record_before = d.directory.account_record(&alice).await.unwrap().unwrap();
    provider.erase_account(alice).await.unwrap();
    let left: Vec<_> = d.store.list(None).try_collect().await.unwrap();
    assert!(
        left.iter()
            .all(|m| !m.location.as_ref().contains(&alice.to_hex())),
        "{left:?}"
    );
    assert!(matches!(
        provider.unlock(alice, "pw").await,
        Err(Error::NotFound { .. })
    ));
    // On the backup, with the account record restored from an old copy of the directory
    // minus its secret (which erase destroyed): neither the password nor the officer
    // opens anything.
    let on_backup = d.provider_on(backup, CHEAP).await;
    let guessed = AccountRecord::new(
        record_before.model,
        record_before.public_keys.clone(),
        [0; 32],
    );
    d.directory
        .set_account_record(&alice, guessed)
        .await
        .unwrap();
    assert!(matches!(
        on_backup.unlock(alice, "pw").await,
        Err(Error::WrongCredential)
    ));
    assert!(matches!(
        on_backup.officer_open(alice, &d.officer).await,
        Err(Error::WrongCredential)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_management_on_a_session() {
    use mailvault::keys::Credential;
    let d = Deployment::new().await;
    let provider = d.provider(CHEAP).await;
    let alice = provider.create_account("pw").await.unwrap();
    let mut session = provider.unlock(alice, "pw").await.unwrap();
    let code = session.add_recovery_code().await.unwrap();
    let device = session.add_device_key().await.unwrap();
    let kinds: Vec<_> = session.slots().iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        vec![
            SlotKind::Password,
            SlotKind::Officer,
            SlotKind::RecoveryCode,
            SlotKind::DeviceKey
        ]
    );
    provider
        .unlock_with(alice, Credential::RecoveryCode(code.as_str()))
        .await
        .unwrap();
    let file = device.to_file_string();
    let from_file = mailvault::keys::DeviceKey::from_file_string(&file).unwrap();
    provider
        .unlock_with(alice, Credential::DeviceKey(&from_file))
        .await
        .unwrap();
    // Model 5 keeps its officer slot.
    let officer_slot = super::officer_slot(&session);
    assert!(matches!(
        session.remove_slot(officer_slot).await,
        Err(Error::InvalidArgument(_))
    ));
    // Removing the recovery slot makes the code useless at once.
    let recovery_slot = session
        .slots()
        .iter()
        .find(|s| s.kind == SlotKind::RecoveryCode)
        .unwrap()
        .id;
    session.remove_slot(recovery_slot).await.unwrap();
    let gone = provider
        .unlock_with(alice, Credential::RecoveryCode(code.as_str()))
        .await;
    assert!(matches!(gone, Err(Error::WrongCredential)));
    provider.unlock(alice, "pw").await.unwrap();
}

/// Each of the five key models end to end, on InMemory and on LocalFileSystem: who makes
/// the keys, what the server stores, who opens the mail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_five_key_models_end_to_end() {
    use mailvault::keys::{Credential, KeyExport, SlotLock};
    let dir = tempfile::tempdir().unwrap();
    let local = mailvault::storage::open_store(dir.path().to_str().unwrap()).unwrap();
    for store in [super::memory(), local] {
        let mut d = Deployment::new().await;
        d.store = store;
        let provider = d.provider(CHEAP).await;
        for model in [
            KeyModel::DeviceOnly,
            KeyModel::DeviceWithExport,
            KeyModel::DevicePassword,
            KeyModel::DevicePasswordWithOfficer,
            KeyModel::ServerManaged,
        ] {
            let (account, writer, reader) = match model {
                KeyModel::ServerManaged => {
                    let account = provider.create_account("pw").await.unwrap();
                    let writer = provider.unlock(account, "pw").await.unwrap();
                    let reader = provider.officer_open(account, &d.officer).await.unwrap();
                    (account, writer, reader)
                }
                _ => {
                    // On the device: keys made there, slots bound with the enrollment.
                    let enrollment = provider.enroll(model).await.unwrap();
                    let account = enrollment.account;
                    let locks = match model {
                        KeyModel::DevicePassword | KeyModel::DevicePasswordWithOfficer => {
                            vec![SlotLock::Password("device password", CHEAP)]
                        }
                        _ => Vec::new(),
                    };
                    let mut keyring = provider
                        .keyrings()
                        .create(account, enrollment.binding.clone(), locks)
                        .await
                        .unwrap();
                    let public_keys = keyring.epoch_public_keys();
                    if model == KeyModel::DevicePasswordWithOfficer {
                        // Without an officer slot the server refuses the keyring.
                        let refused = provider.accept_keyring(account, public_keys.clone()).await;
                        assert!(matches!(refused, Err(Error::InvalidArgument(_))));
                        keyring
                            .add_slot(SlotLock::Officer(&d.officer.public()))
                            .await
                            .unwrap();
                    }
                    provider
                        .accept_keyring(account, public_keys.clone())
                        .await
                        .unwrap();
                    let record = d.directory.account_record(&account).await.unwrap().unwrap();
                    assert_eq!(
                        record.public_keys, public_keys,
                        "the directory holds the public keys"
                    );
                    let stored = provider.keyrings().stored_slots(&account).await.unwrap();
                    match model {
                        KeyModel::DeviceOnly | KeyModel::DeviceWithExport => {
                            assert!(stored.is_empty())
                        }
                        KeyModel::DevicePassword => assert_eq!(stored.len(), 1),
                        _ => assert_eq!(stored.len(), 2),
                    }
                    let reader = match model {
                        KeyModel::DeviceOnly => provider.companion_session(
                            provider
                                .keyrings()
                                .import(
                                    &KeyExport::parse(
                                        &keyring.export("same device backup").await.unwrap(),
                                    )
                                    .unwrap(),
                                    "same device backup",
                                    enrollment.binding.clone(),
                                )
                                .await
                                .unwrap(),
                        ),
                        KeyModel::DeviceWithExport => {
                            let file = keyring.export("to my laptop").await.unwrap();
                            let second_device = provider
                                .keyrings()
                                .import(
                                    &KeyExport::parse(&file).unwrap(),
                                    "to my laptop",
                                    enrollment.binding.clone(),
                                )
                                .await
                                .unwrap();
                            provider.companion_session(second_device)
                        }
                        KeyModel::DevicePassword => provider.companion_session(
                            provider
                                .keyrings()
                                .unlock(
                                    account,
                                    enrollment.binding.clone(),
                                    Credential::Password("device password"),
                                )
                                .await
                                .unwrap(),
                        ),
                        _ => Ok(provider.officer_open(account, &d.officer).await.unwrap()),
                    }
                    .unwrap();
                    (
                        account,
                        provider.companion_session(keyring).unwrap(),
                        reader,
                    )
                }
            };
            let pin = writer
                .blobs()
                .put(BlobKind::Message, b"model test")
                .await
                .unwrap();
            assert_eq!(
                &reader.blobs().read(&pin).await.unwrap()[..],
                b"model test",
                "{model:?}"
            );
            let _ = account;
        }
    }
}

/// A new epoch: no password needed, new blobs sealed under it, old blobs and the index
/// still readable (also after a fresh login), the directory lists both public keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_an_epoch_keeps_older_data_readable() {
    let d = Deployment::new().await;
    let provider = d.provider(CHEAP).await;
    let alice = provider.create_account("pw").await.unwrap();
    let mut session = provider.unlock(alice, "pw").await.unwrap();
    let old = session
        .blobs()
        .put(BlobKind::Message, b"before")
        .await
        .unwrap();
    let mut inbox = session.collection(b"INBOX").await.unwrap();
    let mut batch = Batch::new();
    batch.put(&b"uid:1"[..], &b"x"[..]);
    inbox.commit(batch).await.unwrap();
    assert_eq!(session.add_epoch().await.unwrap(), 2);
    let new = session
        .blobs()
        .put(BlobKind::Message, b"after")
        .await
        .unwrap();
    assert_eq!((old.header.epoch, new.header.epoch), (1, 2));
    let record = d.directory.account_record(&alice).await.unwrap().unwrap();
    assert_eq!(
        record
            .public_keys
            .iter()
            .map(|(e, _)| *e)
            .collect::<Vec<_>>(),
        vec![1, 2]
    );
    let fresh = provider.unlock(alice, "pw").await.unwrap();
    assert_eq!(&fresh.blobs().read(&old).await.unwrap()[..], b"before");
    assert_eq!(&fresh.blobs().read(&new).await.unwrap()[..], b"after");
    assert_eq!(
        fresh.collection(b"INBOX").await.unwrap().get(b"uid:1"),
        Some(&b"x"[..])
    );
    // The officer's audit reproduces both epochs.
    let report = provider
        .officer_audit(alice, &d.officer, &[b"INBOX"])
        .await
        .unwrap();
    assert!(report.consistent);
    assert_eq!(report.matching_epochs, vec![1, 2]);
}

/// Model 4 with a dishonest device: its officer slot names the current officer key (so
/// the server accepts the keyring) but wraps another root key. The officer's audit fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_of_an_officer_slot_wrapping_another_key_fails() {
    use mailvault::keys::{RootKey, SlotLock};
    let d = Deployment::new().await;
    let provider = d.provider(CHEAP).await;
    let enrollment = provider
        .enroll(KeyModel::DevicePasswordWithOfficer)
        .await
        .unwrap();
    let mut keyring = provider
        .keyrings()
        .create(
            enrollment.account,
            enrollment.binding.clone(),
            vec![SlotLock::Password("pw", CHEAP)],
        )
        .await
        .unwrap();
    let rng = RandomSource::os();
    let decoy = enrollment
        .binding
        .seal(
            SlotLock::Officer(&d.officer.public()),
            &RootKey::generate(&rng),
            &rng,
            0,
            &mailvault::keys::KdfGate::new(1),
        )
        .await
        .unwrap();
    keyring.add_sealed_slot(decoy).await.unwrap();
    provider
        .accept_keyring(enrollment.account, keyring.epoch_public_keys())
        .await
        .unwrap();
    let audit = provider
        .officer_audit(enrollment.account, &d.officer, &[])
        .await;
    assert!(matches!(audit, Err(Error::Tampered)), "{audit:?}");
    // An honest officer slot passes.
    let honest = provider
        .enroll(KeyModel::DevicePasswordWithOfficer)
        .await
        .unwrap();
    let keyring = provider
        .keyrings()
        .create(
            honest.account,
            honest.binding.clone(),
            vec![
                SlotLock::Password("pw", CHEAP),
                SlotLock::Officer(&d.officer.public()),
            ],
        )
        .await
        .unwrap();
    provider
        .accept_keyring(honest.account, keyring.epoch_public_keys())
        .await
        .unwrap();
    assert!(
        provider
            .officer_audit(honest.account, &d.officer, &[])
            .await
            .unwrap()
            .consistent
    );
}

/// Officer key rotation: the retired key keeps opening the old slot until the account is
/// re-sealed to the new current key, after which the old slot can go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn officer_key_rotation_and_re_sealing() {
    let d = Deployment::new().await;
    let provider = d.provider(CHEAP).await;
    let alice = provider.create_account("pw").await.unwrap();
    let new_officer = OfficerSecret::generate(&RandomSource::os());
    d.directory
        .set_officer_keys(vec![
            OfficerKeyEntry {
                key: d.officer.public(),
                current: false,
            },
            OfficerKeyEntry {
                key: new_officer.public(),
                current: true,
            },
        ])
        .await
        .unwrap();
    // The retired key still opens the slot sealed to it; the new one opens nothing yet.
    provider.officer_open(alice, &d.officer).await.unwrap();
    assert!(matches!(
        provider.officer_open(alice, &new_officer).await,
        Err(Error::WrongCredential)
    ));
    let mut session = provider.unlock(alice, "pw").await.unwrap();
    let old_slot = super::officer_slot(&session);
    // Removing the only officer slot while the old key is retired: refused (model 5
    // needs a slot for a current officer key, and this one is not current any more, so
    // re-seal first).
    assert!(matches!(
        session.remove_slot(old_slot).await,
        Err(Error::InvalidArgument(_))
    ));
    session.add_officer_slot().await.unwrap();
    session.remove_slot(old_slot).await.unwrap();
    provider.officer_open(alice, &new_officer).await.unwrap();
    assert!(matches!(
        provider.officer_open(alice, &d.officer).await,
        Err(Error::WrongCredential)
    ));
}

/// Issue 12 item 9: the provider's settings reach the layers under it: the blob upload
/// settings (a small multipart threshold makes an append a multipart upload), the mail
/// settings (a small parse limit makes an append parse the header only); settings that
/// cannot work are refused with a typed error, not a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn item_09_provider_config_reaches_blobs_index_and_mail() {
    let d = Deployment::new().await;
    let message = |body_len: usize| {
        let mut m = b"From: a@example.org\r\nSubject: big\r\nContent-Type: multipart/mixed; \
boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
            .to_vec();
        m.extend(std::iter::repeat_n(b'x', body_len));
        m.extend_from_slice(b"\r\n--b--\r\n");
        m
    };
    let big = message(300 << 10);
    for tuned in [false, true] {
        let counting = mailvault::storage::CountingStore::new(d.store.clone());
        let mut config = ProviderConfig {
            kdf: CHEAP,
            gate: KdfGate::new(2),
            ..ProviderConfig::default()
        };
        if tuned {
            config.blobs.multipart_threshold = 64 << 10;
            config.blobs.part_size = 64 << 10;
            config.mail.max_parse_len = 1024;
            config.index.page_size = 512;
        }
        let provider = Provider::new(
            Arc::new(counting.clone()),
            d.deployment,
            d.directory.clone(),
            config,
        )
        .await
        .unwrap();
        let account = provider.create_account("pw").await.unwrap();
        let session = provider.unlock(account, "pw").await.unwrap();
        let mut mail = session.mailstore().await.unwrap();
        let inbox = mail.mailbox_by_name(mailvault::mail::INBOX).unwrap().id;
        counting.reset();
        let appended = mail
            .append(inbox, &big, mailvault::mail::AppendOptions::default())
            .await
            .unwrap();
        let parts = counting.count(mailvault::storage::RequestKind::MultipartPart);
        let email = mail.email(inbox, appended.uid).unwrap();
        if tuned {
            assert!(parts >= 4, "300 KiB in 64 KiB parts: {parts} parts");
            assert!(
                email.parts.len() <= 1,
                "header only: {:?}",
                email.parts.len()
            );
        } else {
            assert_eq!(parts, 0, "one PUT under the default threshold");
            assert!(
                email.parts.len() >= 2,
                "parsed whole: {:?}",
                email.parts.len()
            );
        }
        assert_eq!(&mail.read(&email).await.unwrap()[..], &big[..]);
        assert_eq!(email.envelope.subject.as_deref(), Some("big"));
    }
    for broken in [
        |c: &mut ProviderConfig| c.blobs.part_size = 0,
        |c: &mut ProviderConfig| c.blobs.parts_in_flight = 0,
        |c: &mut ProviderConfig| c.index.page_size = 0,
        |c: &mut ProviderConfig| c.index.fanout = 1,
        |c: &mut ProviderConfig| c.mail.max_parse_len = 0,
    ] {
        let mut config = ProviderConfig::default();
        broken(&mut config);
        let refused = Provider::new(d.store.clone(), d.deployment, d.directory.clone(), config)
            .await
            .unwrap_err();
        assert!(matches!(refused, Error::InvalidArgument(_)), "{refused:?}");
    }
}

/// What a test subscriber saw, on the threads that asked for it: the names of the spans
/// opened, with their field names, and the field names of the events. Installed once as
/// the global default of the test binary (a scoped default misses callsites whose
/// interest another test's thread cached meanwhile), recording only on a thread that set
/// [`RECORDING`].
#[derive(Clone, Default)]
struct Seen(Arc<std::sync::Mutex<Vec<String>>>);

thread_local! {
    static RECORDING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl Seen {
    fn push(&self, line: String) {
        if RECORDING.with(std::cell::Cell::get) {
            self.0.lock().unwrap().push(line);
        }
    }

    /// The global recorder, installed on first use.
    fn global() -> Seen {
        static SEEN: std::sync::OnceLock<Seen> = std::sync::OnceLock::new();
        SEEN.get_or_init(|| {
            use tracing_subscriber::layer::SubscriberExt;
            let seen = Seen::default();
            tracing::subscriber::set_global_default(
                tracing_subscriber::registry().with(seen.clone()),
            )
            .expect("no other global subscriber in the test binary");
            seen
        })
        .clone()
    }
}

/// A span's recorded values as `name=value` pairs.
#[derive(Default)]
struct Values(Vec<String>);

impl tracing::field::Visit for Values {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push(format!("{}={value:?}", field.name()));
    }
}

impl<S> tracing_subscriber::Layer<S> for Seen
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut recorded = Values::default();
        values.record(&mut recorded);
        if let Some(span) = ctx.span(id) {
            self.push(format!(
                "record {:?} {} {}",
                std::thread::current().id(),
                span.name(),
                recorded.0.join(" ")
            ));
        }
    }

    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let fields: Vec<&str> = attrs.metadata().fields().iter().map(|f| f.name()).collect();
        self.push(format!("span {} {fields:?}", attrs.metadata().name()));
    }

    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let fields: Vec<&str> = event.metadata().fields().iter().map(|f| f.name()).collect();
        self.push(format!("event {fields:?}"));
    }
}

/// Issue 12 item 9: the public operations an operator follows open a span with the
/// account, and every mail commit reports its attempts and merged heads.
#[tokio::test(flavor = "current_thread")]
async fn item_09_public_operations_open_spans_with_the_account() {
    let seen = Seen::global();
    RECORDING.with(|r| r.set(true));
    let d = Deployment::new().await;
    let provider = d.provider(CHEAP).await;
    let account = provider.create_account("pw").await.unwrap();
    let session = provider.unlock(account, "pw").await.unwrap();
    let mut mail = session.mailstore().await.unwrap();
    let inbox = mail.mailbox_by_name(mailvault::mail::INBOX).unwrap().id;
    let appended = mail
        .append(
            inbox,
            b"Subject: traced\r\n\r\nhi\r\n",
            mailvault::mail::AppendOptions::default(),
        )
        .await
        .unwrap();
    let email = mail.email(inbox, appended.uid).unwrap();
    mail.read(&email).await.unwrap();
    mail.expunge(inbox, None).await.unwrap();
    let seen = seen.0.lock().unwrap().clone();
    for name in ["unlock", "append_stream", "read", "expunge"] {
        let prefix = format!("span {name} ");
        assert!(
            seen.iter()
                .any(|s| s.starts_with(&prefix) && s.contains("\"account\"")),
            "no span {name} with the account: {seen:#?}"
        );
    }
    assert!(
        seen.iter().any(|s| s.starts_with("event")
            && s.contains("\"attempts\"")
            && s.contains("\"merged_heads\"")),
        "no commit event: {seen:#?}"
    );
}

/// The `requests`, `bytes_read` and `bytes_written` values last recorded on a span
/// named `span` on this thread in `seen` (each recorded on its own).
fn recorded(seen: &[String], span: &str) -> std::collections::HashMap<String, u64> {
    let prefix = format!("record {:?} {span} ", std::thread::current().id());
    let mut values = std::collections::HashMap::new();
    for line in seen.iter().rev().filter(|s| s.starts_with(&prefix)) {
        for (k, v) in line[prefix.len()..]
            .split(' ')
            .filter_map(|pair| pair.split_once('='))
        {
            values
                .entry(k.to_owned())
                .or_insert_with(|| v.parse().unwrap());
        }
        if values.len() == 3 {
            return values;
        }
    }
    panic!("no requests and bytes recorded on {span}: {seen:#?}")
}

/// Issue 12 item 9: the span of a public mail operation records the requests and bytes
/// the operation made the store serve: exactly what a `CountingStore` under the metered
/// store saw during it.
#[tokio::test(flavor = "current_thread")]
async fn item_09_operation_spans_record_requests_and_bytes() {
    let seen = Seen::global();
    RECORDING.with(|r| r.set(true));
    let counting =
        mailvault::storage::CountingStore::new(Arc::new(object_store::memory::InMemory::new()));
    let store: DynStore = Arc::new(mailvault::storage::MeteredStore::new(Arc::new(
        counting.clone(),
    )));
    let d = Deployment::new().await;
    let provider = d.provider_on(store, CHEAP).await;
    let account = provider.create_account("pw").await.unwrap();
    let session = provider.unlock(account, "pw").await.unwrap();
    let mut mail = session.mailstore().await.unwrap();
    let inbox = mail.mailbox_by_name(mailvault::mail::INBOX).unwrap().id;
    let body = format!("Subject: metered\r\n\r\n{}\r\n", "x".repeat(20_000));

    counting.reset();
    let appended = mail
        .append(
            inbox,
            body.as_bytes(),
            mailvault::mail::AppendOptions::default(),
        )
        .await
        .unwrap();
    let append = recorded(&seen.0.lock().unwrap(), "append_stream");
    assert_eq!(append["requests"], counting.requests().len() as u64);
    assert_eq!(append["bytes_written"], counting.bytes_written());
    assert!(append["bytes_written"] > body.len() as u64, "{append:?}");

    let email = mail.email(inbox, appended.uid).unwrap();
    counting.reset();
    mail.read(&email).await.unwrap();
    let read = recorded(&seen.0.lock().unwrap(), "read");
    let served: u64 = counting.requests().iter().map(|r| r.bytes).sum();
    assert_eq!(read["requests"], counting.requests().len() as u64);
    assert_eq!(read["bytes_read"], served);
    assert!(read["bytes_read"] >= body.len() as u64, "{read:?}");
    assert_eq!(read["bytes_written"], 0);

    // A transaction's span too (two appends, one commit).
    counting.reset();
    let mut tx = mailvault::mail::Transaction::new();
    tx.append([inbox], body.clone().into_bytes(), Default::default());
    tx.append([inbox], body.clone().into_bytes(), Default::default());
    mail.commit(tx).await.unwrap();
    let commit = recorded(&seen.0.lock().unwrap(), "commit");
    assert_eq!(commit["requests"], counting.requests().len() as u64);
    assert_eq!(commit["bytes_written"], counting.bytes_written());
}

/// The key operations of the operator's tool (`mailvault account export-key|import-key|
/// rotate-root`, issue 15): an export restores access once the password is lost, a wrong
/// passphrase opens nothing, a rotation begun and not finished is seen as such and
/// finished, an export older than the rotation opens nothing, and the directory's
/// accepted keyring generation follows every change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_export_restores_access_until_the_next_root_rotation() {
    use mailvault::keys::KeyExport;
    let d = Deployment::new().await;
    let provider = d.provider(CHEAP).await;
    let alice = provider.create_account("forgotten").await.unwrap();
    let generation = |p: &Provider| {
        let p = p.clone();
        async move { p.keyrings().accepted_generation(&alice).await.unwrap() }
    };
    let created = generation(&provider).await;
    assert!(created >= 1, "{created}");
    let session = provider.unlock(alice, "forgotten").await.unwrap();
    let pin = session
        .blobs()
        .put(BlobKind::Message, b"kept mail")
        .await
        .unwrap();
    let export = KeyExport::parse(&session.export_key("export passphrase").await.unwrap()).unwrap();
    assert_eq!(export.account, alice);
    drop(session);

    assert!(matches!(
        provider.import_key(&export, "wrong passphrase").await,
        Err(Error::WrongCredential)
    ));
    let mut restored = provider
        .import_key(&export, "export passphrase")
        .await
        .unwrap();
    assert_eq!(
        &restored.blobs().read(&pin).await.unwrap()[..],
        b"kept mail"
    );
    restored.change_password("new password").await.unwrap();
    assert!(generation(&provider).await > created);
    assert!(matches!(
        provider.unlock(alice, "forgotten").await,
        Err(Error::WrongCredential)
    ));
    let mut session = provider.unlock(alice, "new password").await.unwrap();
    assert_eq!(session.epochs(), vec![1]);

    // A rotation begun (the long part not run): seen by a fresh session, finished there.
    assert!(!session.rotating());
    session.begin_rotation().await.unwrap();
    assert!(session.rotating());
    let mut fresh = provider.unlock(alice, "new password").await.unwrap();
    assert!(fresh.rotating());
    assert_eq!(fresh.epochs(), vec![1, 2]);
    fresh.finish_rotation().await.unwrap();
    assert!(!fresh.rotating());
    assert_eq!(&fresh.blobs().read(&pin).await.unwrap()[..], b"kept mail");
    // The export holds the previous root: it opens nothing now.
    assert!(matches!(
        provider.import_key(&export, "export passphrase").await,
        Err(Error::Tampered)
    ));
    // Erased: nothing to import into.
    provider.erase_account(alice).await.unwrap();
    assert_eq!(generation(&provider).await, 0);
    assert!(matches!(
        provider.import_key(&export, "export passphrase").await,
        Err(Error::NotFound { .. })
    ));
}
