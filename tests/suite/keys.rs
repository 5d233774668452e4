//! Key slots through the public API: every credential kind, the KDF gate, hostile costs,
//! and keyring/slot parsers on edge input.

use mailvault::crypto::RandomSource;
use mailvault::format::keyring::{
    write_bound, KeyringBody, KeyringObject, OfficerRecord, RootStanza,
};
use mailvault::format::slot::{KdfParams, KeySlot, SLOT_LEN};
use mailvault::ids::{AccountId, DeploymentId, WriterId};
use mailvault::keys::{
    Credential, DeviceKey, KdfGate, KdfLimits, OfficerSecret, RecoveryCode, RootKey, SlotBinding,
    SlotLock, DEFAULT_KDF,
};
use mailvault::Error;

fn binding(rng: &RandomSource) -> SlotBinding {
    SlotBinding::new(
        DeploymentId::random(rng),
        AccountId::random(rng),
        rng.bytes32_for_tests(),
        None,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_credential_opens_its_slot_through_the_gate() {
    let rng = RandomSource::os();
    let b = binding(&rng);
    let gate = KdfGate::new(2);
    let limits = KdfLimits::default();
    let root = RootKey::generate(&rng);
    let code = RecoveryCode::generate(&rng);
    let device = DeviceKey::generate(&rng);
    let officer = OfficerSecret::generate(&rng);
    let password = b
        .seal(
            SlotLock::Password("hunter2", DEFAULT_KDF),
            &root,
            &rng,
            1,
            &KdfGate::new(1),
        )
        .await
        .unwrap();
    let recovery = b
        .seal(
            SlotLock::RecoveryCode(&code),
            &root,
            &rng,
            1,
            &KdfGate::new(1),
        )
        .await
        .unwrap();
    let on_device = b
        .seal(
            SlotLock::DeviceKey(&device),
            &root,
            &rng,
            1,
            &KdfGate::new(1),
        )
        .await
        .unwrap();
    let officer_slot = b
        .seal(
            SlotLock::Officer(&officer.public()),
            &root,
            &rng,
            1,
            &KdfGate::new(1),
        )
        .await
        .unwrap();
    for (slot, credential) in [
        (&password, Credential::Password("hunter2")),
        (&recovery, Credential::RecoveryCode(code.as_str())),
        (&on_device, Credential::DeviceKey(&device)),
    ] {
        let opened = b.open(slot, credential, &limits, &gate).await.unwrap();
        assert!(opened.same_as(&root));
    }
    // An officer slot opens only through the keyring store, which writes the officer
    // log first (see hardening_keys::item_08_officer_unlocks_are_logged_in_the_directory_first).
    let officer_open = b
        .open(&officer_slot, Credential::Officer(&officer), &limits, &gate)
        .await;
    assert!(matches!(officer_open, Err(Error::InvalidArgument(_))));
    let wrong = b
        .open(&password, Credential::Password("hunter3"), &limits, &gate)
        .await;
    assert!(matches!(wrong, Err(Error::WrongCredential)));
    let mismatched = b
        .open(&password, Credential::DeviceKey(&device), &limits, &gate)
        .await;
    assert!(matches!(mismatched, Err(Error::WrongCredential)));
    // A slot copied into another account's keyring opens nothing there.
    let other = binding(&rng);
    let moved = other
        .open(&on_device, Credential::DeviceKey(&device), &limits, &gate)
        .await;
    assert!(matches!(moved, Err(Error::WrongCredential)));
}

#[tokio::test]
async fn hostile_costs_in_storage_are_refused_before_allocation() {
    let rng = RandomSource::os();
    let b = binding(&rng);
    let root = RootKey::generate(&rng);
    let cheap = KdfParams {
        m_kib: 64,
        t: 1,
        p: 1,
    };
    let slot = b
        .seal(
            SlotLock::Password("pw", cheap),
            &root,
            &rng,
            1,
            &KdfGate::new(1),
        )
        .await
        .unwrap();
    let mut bytes = slot.to_bytes();
    bytes[32..36].copy_from_slice(&(4u32 << 20).to_be_bytes()); // 4 GiB
    let hostile = KeySlot::parse(&bytes).unwrap();
    let result = b
        .open(
            &hostile,
            Credential::Password("pw"),
            &KdfLimits::default(),
            &KdfGate::new(1),
        )
        .await;
    assert!(matches!(result, Err(Error::ExcessiveWork { m_kib, .. }) if m_kib == 4 << 20));
}

#[tokio::test]
async fn slot_and_keyring_parsers_refuse_malformed_input() {
    let rng = RandomSource::os();
    let b = binding(&rng);
    let root = RootKey::generate(&rng);
    let slot = b
        .seal(
            SlotLock::DeviceKey(&DeviceKey::generate(&rng)),
            &root,
            &rng,
            1,
            &KdfGate::new(1),
        )
        .await
        .unwrap();
    let bytes = slot.to_bytes();
    assert!(matches!(
        KeySlot::parse(&bytes[..SLOT_LEN - 1]),
        Err(Error::Tampered)
    ));
    let mut v2 = bytes;
    v2[4] = 2;
    assert!(matches!(
        KeySlot::parse(&v2),
        Err(Error::UnsupportedVersion { version: 2, .. })
    ));
    let mut kind = bytes;
    kind[5] = 9;
    assert!(matches!(KeySlot::parse(&kind), Err(Error::Tampered)));

    let writer = WriterId::random(&rng);
    let stanza = RootStanza {
        public: [1; 32],
        ephemeral: [2; 32],
        wrapped: [3; 48],
    };
    let mut keyring = write_bound(7, &writer, &[slot.clone(), slot.clone()], &[stanza; 2]);
    keyring.extend_from_slice(&[0u8; 40]);
    let parsed = KeyringObject::parse(&keyring).unwrap();
    assert_eq!(
        (parsed.generation, parsed.writer, parsed.slots.len()),
        (7, writer, 2)
    );
    assert_eq!(parsed.stanzas, [stanza; 2]);
    assert_eq!(parsed.sealed_body.len(), 40);
    assert!(matches!(
        KeyringObject::parse(&keyring[..100]),
        Err(Error::Tampered)
    ));
    let mut too_many = keyring.clone();
    too_many[5] = 17;
    assert!(matches!(
        KeyringObject::parse(&too_many),
        Err(Error::Tampered)
    ));
    let body = KeyringBody {
        epochs: Vec::new(),
        records: vec![OfficerRecord {
            kind: 1,
            time: 5,
            officer: [3; 32],
        }],
        retiring: None,
    };
    let encoded = body.to_bytes();
    assert_eq!(KeyringBody::parse(&encoded).unwrap(), body);
    assert!(KeyringBody::parse(&encoded[..encoded.len() - 1]).is_err());
    let rotating = KeyringBody {
        retiring: Some(zeroize::Zeroizing::new([4; 32])),
        ..KeyringBody::default()
    };
    let encoded = rotating.to_bytes();
    assert_eq!(KeyringBody::parse(&encoded).unwrap(), rotating);
    assert!(KeyringBody::parse(&encoded[..encoded.len() - 1]).is_err());
    assert!(
        !format!("{rotating:?}").contains("4, 4"),
        "no secret in Debug"
    );
}

mod keyring {
    use std::sync::Arc;

    use mailvault::crypto::RandomSource;
    use mailvault::directory::MemoryDirectory;
    use mailvault::format::slot::{KdfParams, SlotKind};
    use mailvault::ids::{AccountId, DeploymentId};
    use mailvault::keys::{
        Credential, DeviceKey, KeyringStore, RecoveryCode, SlotBinding, SlotLock,
    };
    use mailvault::storage::{CommitMode, CountingStore, DynStore, RequestKind};
    use mailvault::Error;
    use object_store::{ObjectStoreExt, PutPayload};

    const CHEAP: KdfParams = KdfParams {
        m_kib: 256,
        t: 1,
        p: 1,
    };

    struct Account {
        store: DynStore,
        keyrings: KeyringStore,
        account: AccountId,
        deployment: DeploymentId,
        secret: [u8; 32],
    }

    impl Account {
        fn new(store: DynStore, mode: CommitMode) -> Self {
            let rng = RandomSource::os();
            let deployment = DeploymentId::random(&rng);
            Self {
                keyrings: KeyringStore::new(
                    store.clone(),
                    deployment,
                    Arc::new(MemoryDirectory::new()),
                    mode,
                ),
                store,
                account: AccountId::random(&rng),
                deployment,
                secret: rng.bytes32_for_tests(),
            }
        }

        fn binding(&self) -> SlotBinding {
            SlotBinding::new(self.deployment, self.account, self.secret, None)
        }
    }

    #[tokio::test]
    async fn password_change_rewrites_one_slot_and_the_old_password_stops_working() {
        for mode in [CommitMode::CompareAndSwap, CommitMode::WriterUnique] {
            let counting = CountingStore::new(crate::memory());
            let a = Account::new(Arc::new(counting.clone()), mode);
            let rng = RandomSource::os();
            let code = RecoveryCode::generate(&rng);
            let device = DeviceKey::generate(&rng);
            let mut keyring = a
                .keyrings
                .create(
                    a.account,
                    a.binding(),
                    vec![
                        SlotLock::Password("old password", CHEAP),
                        SlotLock::RecoveryCode(&code),
                        SlotLock::DeviceKey(&device),
                    ],
                )
                .await
                .unwrap();
            let key_before = keyring.current_key().unwrap().epoch();
            counting.reset();
            keyring
                .change_password("new password", CHEAP)
                .await
                .unwrap();
            // Only keyring objects were written: nothing re-encrypted.
            let written = counting.names_written();
            assert_eq!(written.len(), 1, "{written:?}");
            assert!(written[0].starts_with(&format!("a/{}/k/", a.account.to_hex())));
            assert_eq!(
                counting.count(RequestKind::Delete),
                1,
                "the superseded keyring deleted at once"
            );
            let unlocked = a
                .keyrings
                .unlock(a.account, a.binding(), Credential::Password("new password"))
                .await
                .unwrap();
            assert!(unlocked.same_root_as(&keyring));
            assert_eq!(unlocked.current_key().unwrap().epoch(), key_before);
            let old = a
                .keyrings
                .unlock(a.account, a.binding(), Credential::Password("old password"))
                .await;
            assert!(matches!(old, Err(Error::WrongCredential)), "{mode:?}");
            // Other slots still open the account.
            for credential in [
                Credential::RecoveryCode(code.as_str()),
                Credential::DeviceKey(&device),
            ] {
                let other = a
                    .keyrings
                    .unlock(a.account, a.binding(), credential)
                    .await
                    .unwrap();
                assert!(other.same_root_as(&keyring));
            }
            // A scan of every stored object finds no slot the old password opens.
            let objects: Vec<_> = futures::TryStreamExt::try_collect::<Vec<_>>(a.store.list(None))
                .await
                .unwrap();
            assert_eq!(objects.len(), 1, "only the newest keyring remains");
            let kinds: Vec<_> = unlocked.slots().iter().map(|s| s.kind).collect();
            assert_eq!(
                kinds.iter().filter(|k| **k == SlotKind::Password).count(),
                1
            );
        }
    }

    #[tokio::test]
    async fn an_older_keyring_replayed_is_refused_and_a_tampered_one_detected() {
        let a = Account::new(crate::memory(), CommitMode::CompareAndSwap);
        let mut keyring = a
            .keyrings
            .create(
                a.account,
                a.binding(),
                vec![SlotLock::Password("one", CHEAP)],
            )
            .await
            .unwrap();
        let prefix = format!("a/{}/k/", a.account.to_hex());
        let list = |store: DynStore| async move {
            let metas: Vec<_> = futures::TryStreamExt::try_collect::<Vec<_>>(store.list(None))
                .await
                .unwrap();
            metas.into_iter().map(|m| m.location).collect::<Vec<_>>()
        };
        let first = list(a.store.clone()).await.remove(0);
        assert!(first.as_ref().starts_with(&prefix));
        let old_bytes = a.store.get(&first).await.unwrap().bytes().await.unwrap();
        keyring.change_password("two", CHEAP).await.unwrap();
        // Replay: the old generation put back, the new one withheld.
        let newest = list(a.store.clone()).await.remove(0);
        let new_bytes = a.store.get(&newest).await.unwrap().bytes().await.unwrap();
        a.store.delete(&newest).await.unwrap();
        a.store
            .put(&first, PutPayload::from(old_bytes))
            .await
            .unwrap();
        let replayed = a
            .keyrings
            .unlock(a.account, a.binding(), Credential::Password("one"))
            .await;
        assert!(
            matches!(replayed, Err(Error::Rollback { seen: 2, found: 1 })),
            "{replayed:?}"
        );
        // Restored, then one byte of the sealed body flipped: the password still opens
        // its slot, and the body fails.
        a.store.delete(&first).await.unwrap();
        let mut flipped = new_bytes.to_vec();
        let n = flipped.len();
        flipped[n - 3] ^= 1;
        a.store
            .put(&newest, PutPayload::from(flipped))
            .await
            .unwrap();
        let tampered = a
            .keyrings
            .unlock(a.account, a.binding(), Credential::Password("two"))
            .await;
        assert!(matches!(tampered, Err(Error::Tampered)), "{tampered:?}");
        // Truncated, and an unknown version.
        a.store
            .put(&newest, PutPayload::from(new_bytes.slice(..100)))
            .await
            .unwrap();
        let truncated = a
            .keyrings
            .unlock(a.account, a.binding(), Credential::Password("two"))
            .await;
        assert!(matches!(truncated, Err(Error::Tampered)));
        let mut v9 = new_bytes.to_vec();
        v9[4] = 9;
        a.store.put(&newest, PutPayload::from(v9)).await.unwrap();
        let unknown = a
            .keyrings
            .unlock(a.account, a.binding(), Credential::Password("two"))
            .await;
        assert!(matches!(
            unknown,
            Err(Error::UnsupportedVersion { version: 9, .. })
        ));
        a.store
            .put(&newest, PutPayload::from(new_bytes))
            .await
            .unwrap();
        a.keyrings
            .unlock(a.account, a.binding(), Credential::Password("two"))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn erasing_the_account_secret_makes_every_copy_useless() {
        let a = Account::new(crate::memory(), CommitMode::CompareAndSwap);
        let rng = RandomSource::os();
        let device = DeviceKey::generate(&rng);
        a.keyrings
            .create(
                a.account,
                a.binding(),
                vec![
                    SlotLock::Password("pw", CHEAP),
                    SlotLock::DeviceKey(&device),
                ],
            )
            .await
            .unwrap();
        // The directory secret is gone (a new one, or none): nothing opens, whatever the
        // copy of the bucket.
        let erased = SlotBinding::new(a.deployment, a.account, rng.bytes32_for_tests(), None);
        for credential in [Credential::Password("pw"), Credential::DeviceKey(&device)] {
            let result = a
                .keyrings
                .unlock(a.account, erased.clone(), credential)
                .await;
            assert!(matches!(result, Err(Error::WrongCredential)));
        }
    }
}

mod export {
    use std::sync::Arc;

    use mailvault::crypto::RandomSource;
    use mailvault::directory::MemoryDirectory;
    use mailvault::ids::{AccountId, DeploymentId};
    use mailvault::keys::{KeyExport, KeyringStore, SlotBinding, EXPORT_KDF};
    use mailvault::storage::CommitMode;
    use mailvault::Error;

    /// Key models 1 and 2: no slot on the server at all; the root key travels in a
    /// passphrase-protected export file to a second device, which opens the account.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_device_only_keyring_moves_to_a_second_device_by_export() {
        let rng = RandomSource::os();
        let store = crate::memory();
        let deployment = DeploymentId::random(&rng);
        let account = AccountId::random(&rng);
        let binding = SlotBinding::new(deployment, account, [0; 32], None);
        let first = KeyringStore::new(
            store.clone(),
            deployment,
            Arc::new(MemoryDirectory::new()),
            CommitMode::CompareAndSwap,
        );
        let keyring = first
            .create(account, binding.clone(), Vec::new())
            .await
            .unwrap();
        assert!(keyring.slots().is_empty(), "nothing on the server opens it");
        let text = keyring.export("a long passphrase").await.unwrap();
        assert!(text.starts_with("-----BEGIN MAILVAULT KEY EXPORT-----"));
        let export = KeyExport::parse(&text).unwrap();
        assert_eq!(export.account, account);

        // The second device has its own directory state.
        let second = KeyringStore::new(
            store.clone(),
            deployment,
            Arc::new(MemoryDirectory::new()),
            CommitMode::CompareAndSwap,
        );
        let imported = second
            .import(&export, "a long passphrase", binding.clone())
            .await
            .unwrap();
        assert!(imported.same_root_as(&keyring));
        assert_eq!(
            imported.current_key().unwrap().epoch(),
            keyring.current_key().unwrap().epoch()
        );
        let wrong = second
            .import(&export, "another passphrase", binding.clone())
            .await;
        assert!(matches!(wrong, Err(Error::WrongCredential)));

        // Stronger costs than server slots, recorded in the file.
        let hex_costs = format!(
            "{:08x}{:08x}{:08x}",
            EXPORT_KDF.m_kib, EXPORT_KDF.t, EXPORT_KDF.p
        );
        let flat: String = text
            .lines()
            .skip(1)
            .take_while(|l| !l.starts_with("-----"))
            .collect();
        assert_eq!(&flat[2 * (40 + 32)..2 * (40 + 44)], hex_costs);

        // An altered file, a file of another deployment, and garbage.
        let mut altered: Vec<char> = text.chars().collect();
        let at = text.find('\n').unwrap() + 1 + 2 * (40 + 150);
        altered[at] = if altered[at] == '0' { '1' } else { '0' };
        let altered: String = altered.into_iter().collect();
        let tampered = second
            .import(
                &KeyExport::parse(&altered).unwrap(),
                "a long passphrase",
                binding.clone(),
            )
            .await;
        assert!(matches!(tampered, Err(Error::Tampered)), "{tampered:?}");
        let elsewhere = KeyringStore::new(
            store,
            DeploymentId::random(&rng),
            Arc::new(MemoryDirectory::new()),
            CommitMode::CompareAndSwap,
        );
        assert!(matches!(
            elsewhere
                .import(&export, "a long passphrase", binding)
                .await,
            Err(Error::InvalidArgument(_))
        ));
        assert!(KeyExport::parse("hello").is_err());
    }
}
