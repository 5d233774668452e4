//! The conformance suite: every behaviour the crate relies on from a backend, and every
//! guarantee it gives on top, checked against one store. Run by one short test per
//! backend and per decorator (`tests/suite/backends.rs`).
//!
//! Each check works under a fresh random account and deletes what it wrote, so the suite
//! can run against a shared bucket.

use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutPayload};

use super::{collect_stream, pattern, scan_for_markers};
use crate::blob::{AccountBlobs, BlobConfig, BlobStore};
use crate::crypto::stream::CHUNK_SIZE;
use crate::crypto::{AccountKey, RandomSource};
use crate::error::Error;
use crate::format::{BlobKind, BlobPin};
use crate::ids::{AccountId, BlobId, DeploymentId};
use crate::storage::{naming, probe_capabilities, Capabilities, CommitMode, DynStore};

/// Runs the whole suite against `store`, which is expected to have `capabilities`.
///
/// # Panics
/// On the first behaviour that does not hold, with a message naming it.
pub async fn run(store: DynStore, capabilities: Capabilities) {
    probe(&store, capabilities).await;
    round_trips(&store).await;
    multipart(&store).await;
    tampering(&store).await;
    moved_blob(&store).await;
    delete(&store).await;
    no_plaintext(&store).await;
    index_flows(&store, capabilities).await;
    mail_flows(&store).await;
    delivery_flows(&store).await;
    key_flows(&store).await;
}

/// Sealed delivery and import: two deliveries (one under a model with an officer), a
/// forged one quarantined, import, read, a replayed envelope refused, the officer's
/// recovery from the blob alone.
pub async fn delivery_flows(store: &DynStore) {
    use crate::delivery::{Deliverer, DeliveryOptions, DeliverySigningKey};
    use crate::directory::{AccountRecord, Directory, KeyModel, MemoryDirectory, OfficerKeyEntry};
    use crate::index::IndexStore;
    use crate::keys::OfficerSecret;
    use crate::mail::{Mailstore, INBOX};
    let rng = RandomSource::os();
    let deployment = DeploymentId::random(&rng);
    let directory = std::sync::Arc::new(MemoryDirectory::new());
    let signing = DeliverySigningKey::generate(&rng);
    directory
        .set_delivery_key(signing.verifying_key())
        .await
        .expect("directory");
    let officer = OfficerSecret::generate(&rng);
    directory
        .set_officer_keys(vec![OfficerKeyEntry {
            key: officer.public(),
            current: true,
        }])
        .await
        .expect("directory");
    let account = AccountId::random(&rng);
    let key = AccountKey::generate(1, &rng);
    directory
        .set_account_record(
            &account,
            AccountRecord::new(
                KeyModel::DevicePasswordWithOfficer,
                vec![(1, key.public_key())],
                [3; 32],
            ),
        )
        .await
        .expect("directory");
    let deliverer = Deliverer::new(store.clone(), deployment, directory.clone(), signing);
    let body = b"Subject: conformance delivery\r\n\r\nsealed body".to_vec();
    let receipt = deliverer
        .deliver_bytes(account, &body, DeliveryOptions::default())
        .await
        .expect("deliver");
    let forger = Deliverer::new(
        store.clone(),
        deployment,
        directory.clone(),
        DeliverySigningKey::generate(&rng),
    );
    forger
        .deliver_bytes(account, &body, DeliveryOptions::default())
        .await
        .expect("forged delivery written");
    let recovered = BlobStore::new(store.clone(), deployment)
        .open_sealed_as_officer(
            account,
            receipt.blob,
            &officer,
            &directory
                .account_record(&account)
                .await
                .expect("directory")
                .expect("record"),
        )
        .await
        .expect("officer recovery");
    assert_eq!(recovered, body, "officer recovery on {store}");
    let index = IndexStore::new(store.clone(), deployment, directory.clone())
        .await
        .expect("index store");
    let blobs = BlobStore::new(store.clone(), deployment).account(account, &key);
    let mut mail = Mailstore::open(&index, blobs, &key)
        .await
        .expect("open mail");
    let verifying = directory.delivery_key().await.expect("key").expect("key");
    let envelope = naming::delivery_path(&account, &receipt.delivery);
    let saved = store
        .get(&envelope)
        .await
        .expect("envelope")
        .bytes()
        .await
        .expect("envelope");
    let report = mail
        .import_deliveries(std::slice::from_ref(&key), &verifying)
        .await
        .expect("import");
    assert_eq!(report.imported.len(), 1, "import on {store}");
    assert_eq!(
        report.quarantined.len(),
        1,
        "forgery quarantined on {store}"
    );
    let inbox = mail.mailbox_by_name(INBOX).expect("INBOX").id;
    let (_, _, uid) = report.imported[0];
    let email = mail.analyze(inbox, uid).await.expect("analyze");
    assert_eq!(&mail.read(&email).await.expect("read")[..], &body[..]);
    store.put(&envelope, saved.into()).await.expect("replay");
    let replay = mail
        .import_deliveries(std::slice::from_ref(&key), &verifying)
        .await
        .expect("import");
    assert!(
        replay.imported.is_empty() && replay.already_imported == 1,
        "replay on {store}"
    );
    assert_eq!(mail.select(inbox).await.expect("select").messages.len(), 1);
    cleanup(store, &account).await;
}

/// The mailbox model end to end: create, append, select, read whole and by MIME part,
/// flag, copy, move, expunge (body deleted once unreferenced: at once with
/// compare-and-swap, after the grace period without), changes since a modseq, reopen.
pub async fn mail_flows(store: &DynStore) {
    use crate::directory::MemoryDirectory;
    use crate::index::IndexStore;
    use crate::mail::{AppendOptions, FlagChange, Flags, Mailstore, PartSection, INBOX};
    let rng = RandomSource::os();
    let deployment = DeploymentId::random(&rng);
    let directory = std::sync::Arc::new(MemoryDirectory::new());
    let index = IndexStore::new(store.clone(), deployment, directory)
        .await
        .expect("index store");
    let account = AccountId::random(&rng);
    let key = AccountKey::generate(1, &rng);
    let blobs = BlobStore::new(store.clone(), deployment).account(account, &key);
    let mut mail = Mailstore::open(&index, blobs.clone(), &key)
        .await
        .expect("open mail");
    let inbox = mail.mailbox_by_name(INBOX).expect("INBOX").id;
    let work = mail.create_mailbox("Work", None).await.expect("create");
    let raw = b"From: a@example.org\r\nSubject: conformance\r\nMIME-Version: 1.0\r\n\
        Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n\
        first\r\n--b\r\nContent-Type: text/plain\r\n\r\nsecond\r\n--b--\r\n";
    let a = mail
        .append(inbox, raw, AppendOptions::default())
        .await
        .expect("append");
    assert_eq!((a.uid, a.uid_validity), (1, 1), "first UID on {store}");
    let email = mail.email(inbox, 1).expect("email");
    assert_eq!(&mail.read(&email).await.expect("read")[..], &raw[..]);
    let second = Mailstore::imap_section(&email, &[2]).expect("BODY[2]");
    let body = mail
        .read_part(&email, second, PartSection::Body)
        .await
        .expect("part");
    assert_eq!(&body[..], b"second");
    let since = mail.modseq();
    let seen = Flags::from_names([Flags::SEEN]).expect("flag");
    mail.store_flags(inbox, &[1], FlagChange::Add(seen), None)
        .await
        .expect("flag");
    mail.copy(inbox, &[1], work.id).await.expect("copy");
    mail.move_messages(inbox, &[1], work.id)
        .await
        .expect("move");
    let changes = mail.changes_since(inbox, since).expect("changes");
    assert_eq!(changes.vanished, [1], "VANISHED on {store}");
    let view = mail.select(work.id).await.expect("select");
    assert_eq!(view.messages.len(), 2);
    assert!(view.messages.iter().all(|m| m.flags.contains(Flags::SEEN)));
    let mut reopened = Mailstore::open(&index, blobs.clone(), &key)
        .await
        .expect("reopen");
    assert_eq!(reopened.select(work.id).await.expect("select"), view);
    reopened.remove(work.id, &[1, 2]).await.expect("remove");
    reopened
        .collect_garbage(std::time::Duration::ZERO)
        .await
        .expect("collect garbage");
    assert!(
        matches!(blobs.read(&email.pin).await, Err(Error::NotFound { .. })),
        "body deleted once unreferenced on {store}"
    );
    cleanup(store, &account).await;
}

/// A fresh account with its own keys, on `store`.
pub fn fresh_account(store: &DynStore, config: BlobConfig) -> AccountBlobs {
    let rng = RandomSource::os();
    BlobStore::new(store.clone(), DeploymentId::random(&rng))
        .with_config(config)
        .account(AccountId::random(&rng), &AccountKey::generate(1, &rng))
}

/// Deletes every object of `account`.
pub async fn cleanup(store: &DynStore, account: &AccountId) {
    let prefix = naming::account_prefix(account);
    let paths: Vec<_> = store
        .list(Some(&prefix))
        .map_ok(|meta| meta.location)
        .try_collect()
        .await
        .expect("list account objects");
    for path in paths {
        // Garage on SQLite answers "database is locked" under load now and then: retry.
        let mut attempt = 0;
        loop {
            match store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => break,
                Err(e) if attempt >= 8 => panic!("delete account object: {e:?}"),
                Err(_) => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100 << attempt.min(4)))
                        .await;
                }
            }
        }
    }
}

/// The probe reports what the backend really does.
pub async fn probe(store: &DynStore, expected: Capabilities) {
    let found = probe_capabilities(store.as_ref())
        .await
        .expect("capability probe");
    assert_eq!(found, expected, "capability probe on {store}");
}

async fn check_reads(account: &AccountBlobs, pin: &BlobPin, plain: &[u8]) {
    assert_eq!(pin.len(), plain.len() as u64);
    assert_eq!(&account.read(pin).await.expect("read")[..], plain, "read");
    let streamed = collect_stream(account.get(pin).await.expect("get"))
        .await
        .expect("stream");
    assert_eq!(streamed, plain, "streamed read");
    let len = plain.len() as u64;
    let c = CHUNK_SIZE as u64;
    let mut ranges = vec![
        0..len,
        0..len.min(1),
        len.saturating_sub(1)..len,
        len / 3..len / 2,
    ];
    if len > c {
        ranges.extend([c - 1..c + 1, c..len, 1..c]);
    }
    for range in ranges {
        let got = account.get_range(pin, range.clone()).await.expect("range");
        assert_eq!(
            &got[..],
            &plain[range.start as usize..range.end as usize],
            "range {range:?}"
        );
    }
    assert!(matches!(
        account.get_range(pin, 0..len + 1).await,
        Err(Error::InvalidArgument(_))
    ));
}

/// Blobs of every edge length round-trip through put, get, read and ranges.
pub async fn round_trips(store: &DynStore) {
    let account = fresh_account(store, BlobConfig::default());
    let c = CHUNK_SIZE;
    for (i, len) in [0, 1, c - 1, c, c + 1, 3 * c, 3 * c + 7]
        .into_iter()
        .enumerate()
    {
        let plain = pattern(i as u64, len);
        let pin = account.put(BlobKind::Message, &plain).await.expect("put");
        check_reads(&account, &pin, &plain).await;
    }
    cleanup(store, &account.account()).await;
}

/// A blob above the multipart threshold goes up in parts and reads back.
pub async fn multipart(store: &DynStore) {
    let config = BlobConfig {
        multipart_threshold: 5 << 20,
        part_size: 5 << 20,
        parts_in_flight: 2,
    };
    let account = fresh_account(store, config);
    let plain = pattern(99, (12 << 20) + 3);
    let mut writer = account.writer(BlobKind::Attachment);
    for piece in plain.chunks(1 << 20) {
        writer.write(piece).await.expect("write");
    }
    let pin = writer.finish().await.expect("finish multipart");
    check_reads(&account, &pin, &plain).await;
    cleanup(store, &account.account()).await;
}

/// A stored blob altered in place (bit flip, truncation) fails to read, with `Tampered`.
pub async fn tampering(store: &DynStore) {
    let account = fresh_account(store, BlobConfig::default());
    let plain = pattern(5, 2 * CHUNK_SIZE + 100);
    let pin = account.put(BlobKind::Message, &plain).await.expect("put");
    let path = naming::blob_path(&account.account(), &pin.id);
    let original = store.get(&path).await.unwrap().bytes().await.unwrap();
    for position in [5usize, 50, 80, CHUNK_SIZE + 90, original.len() - 1] {
        let mut bad = original.to_vec();
        bad[position] ^= 0x20;
        store.put(&path, PutPayload::from(bad)).await.unwrap();
        assert!(
            matches!(account.read(&pin).await, Err(Error::Tampered)),
            "flip at {position}"
        );
        let streamed = collect_stream(account.get(&pin).await.unwrap()).await;
        assert!(
            matches!(streamed, Err(Error::Tampered)),
            "streamed flip at {position}"
        );
    }
    // A blob read in several pieces (reads are opened about 1 MiB at a time): a flip in
    // the chunk split between two pieces, in a later piece, and in the final chunk.
    let long_plain = pattern(6, 17 * CHUNK_SIZE + 5);
    let long = account
        .put(BlobKind::Message, &long_plain)
        .await
        .expect("put");
    let long_path = naming::blob_path(&account.account(), &long.id);
    let long_original = store.get(&long_path).await.unwrap().bytes().await.unwrap();
    let piece = 16 * crate::crypto::stream::SEALED_CHUNK_SIZE;
    for position in [
        piece - 3,
        piece + 3,
        piece + CHUNK_SIZE,
        long_original.len() - 2,
    ] {
        let mut bad = long_original.to_vec();
        bad[position] ^= 0x01;
        store.put(&long_path, PutPayload::from(bad)).await.unwrap();
        assert!(
            matches!(account.read(&long).await, Err(Error::Tampered)),
            "flip at {position} of a long blob"
        );
        let streamed = collect_stream(account.get(&long).await.unwrap()).await;
        assert!(
            matches!(streamed, Err(Error::Tampered)),
            "streamed flip at {position} of a long blob"
        );
    }
    store
        .put(&long_path, PutPayload::from(long_original))
        .await
        .unwrap();
    check_reads(&account, &long, &long_plain).await;
    let truncated = original.slice(..original.len() - 1);
    store.put(&path, PutPayload::from(truncated)).await.unwrap();
    assert!(matches!(account.read(&pin).await, Err(Error::Tampered)));
    assert!(matches!(
        account.get(&pin).await.map(|_| ()),
        Err(Error::Tampered)
    ));
    // The last chunk's range now ends short.
    let last = pin.len() - 10..pin.len();
    assert!(matches!(
        account.get_range(&pin, last).await,
        Err(Error::Tampered)
    ));
    cleanup(store, &account.account()).await;
}

/// A blob copied under another id fails its commitment.
pub async fn moved_blob(store: &DynStore) {
    let account = fresh_account(store, BlobConfig::default());
    let pin = account.put(BlobKind::Message, b"moved").await.expect("put");
    let other = BlobId::random(&RandomSource::os());
    let bytes = store
        .get(&naming::blob_path(&account.account(), &pin.id))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    store
        .put(
            &naming::blob_path(&account.account(), &other),
            PutPayload::from(bytes),
        )
        .await
        .unwrap();
    let moved = BlobPin::parse(&{
        let mut raw = pin.to_bytes();
        raw[1..17].copy_from_slice(other.as_bytes());
        raw
    })
    .unwrap();
    assert!(matches!(account.read(&moved).await, Err(Error::Tampered)));
    assert!(matches!(
        account.get_range(&moved, 0..2).await,
        Err(Error::Tampered)
    ));
    cleanup(store, &account.account()).await;
}

/// Deleted blobs are gone (`NotFound`); deleting twice succeeds.
pub async fn delete(store: &DynStore) {
    let account = fresh_account(store, BlobConfig::default());
    let pin = account
        .put(BlobKind::Message, b"to delete")
        .await
        .expect("put");
    account.delete(&pin.id).await.expect("delete");
    assert!(matches!(
        account.read(&pin).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        account.get_range(&pin, 0..2).await,
        Err(Error::NotFound { .. })
    ));
    account.delete(&pin.id).await.expect("second delete");
}

/// Nothing the account stored (names or bytes) contains its plaintext markers.
pub async fn no_plaintext(store: &DynStore) {
    let account = fresh_account(store, BlobConfig::default());
    let markers: [&[u8]; 3] = [
        b"MARKER-SUBJECT-7f3a",
        b"alice@example.org",
        b"MARKER-BODY-19c2",
    ];
    let mut body = Vec::new();
    for i in 0..2000 {
        body.extend_from_slice(markers[i % 3]);
        body.push(b' ');
    }
    for _ in 0..3 {
        account.put(BlobKind::Message, &body).await.expect("put");
    }
    let prefix = naming::account_prefix(&account.account());
    let (hits, objects) = scan_for_markers(store, Some(&prefix), &markers).await;
    assert_eq!(objects, 3, "the scan read every stored blob");
    assert!(hits.is_empty(), "plaintext found in the store: {hits:?}");
    cleanup(store, &account.account()).await;
}

/// The index on this backend: the commit mode the probe calls for, commits and deletions
/// read back after a reopen and a compaction, change detection between two handles, and
/// a withheld newest manifest refused as a rollback.
pub async fn index_flows(store: &DynStore, expected: Capabilities) {
    use crate::directory::MemoryDirectory;
    use crate::index::{Batch, IndexStore};
    let rng = RandomSource::os();
    let directory = std::sync::Arc::new(MemoryDirectory::new());
    let index = IndexStore::new(store.clone(), DeploymentId::random(&rng), directory)
        .await
        .expect("index store");
    assert_eq!(
        index.mode(),
        CommitMode::for_capabilities(expected),
        "commit mode on {store}"
    );
    let account = AccountId::random(&rng);
    let key = AccountKey::generate(1, &rng);
    let mut c = index
        .open(account, &key, b"conformance")
        .await
        .expect("open");
    for i in 0..6u32 {
        let mut batch = Batch::new();
        batch.put(format!("k{i}").into_bytes(), format!("v{i}").into_bytes());
        if i >= 2 {
            batch.delete(format!("k{}", i - 2).into_bytes());
        }
        c.commit(batch).await.expect("commit");
    }
    c.compact().await.expect("compact");
    let reopened = index
        .open(account, &key, b"conformance")
        .await
        .expect("reopen");
    let keys: Vec<_> = reopened
        .iter()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
    assert_eq!(
        keys,
        vec![
            (b"k4".to_vec(), b"v4".to_vec()),
            (b"k5".to_vec(), b"v5".to_vec())
        ]
    );

    // A second handle sees the first one's commit through the cheap check.
    let mut other = index
        .open(account, &key, b"conformance")
        .await
        .expect("second handle");
    let seen = other.generation();
    assert!(!other.changed_since(seen).await.expect("changed_since"));
    let mut batch = Batch::new();
    batch.put(&b"k9"[..], &b"v9"[..]);
    c.commit(batch).await.expect("commit");
    assert!(other.changed_since(seen).await.expect("changed_since"));
    assert!(other.refresh().await.expect("refresh"));
    assert_eq!(other.get(b"k9").map(|v| v.to_vec()), Some(b"v9".to_vec()));

    // Withholding the newest manifest is caught against the directory's mark.
    let prefix = naming::account_prefix(&account);
    let mut manifests: Vec<_> = store
        .list(Some(&prefix))
        .map_ok(|meta| meta.location)
        .try_filter(|p| futures::future::ready(p.as_ref().contains("/m/")))
        .try_collect()
        .await
        .expect("list manifests");
    manifests.sort();
    let newest = manifests.pop().expect("a manifest");
    store.delete(&newest).await.expect("delete newest manifest");
    assert!(
        matches!(
            index.open(account, &key, b"conformance").await,
            Err(Error::Rollback { .. })
        ),
        "a withheld manifest must be refused"
    );
    cleanup(store, &account).await;
}

/// The key layer on this backend (key model 5): create an account, log in, change the
/// password (the old one stops working), officer recovery, and crypto-erase.
pub async fn key_flows(store: &DynStore) {
    use crate::directory::{Directory, MemoryDirectory, OfficerKeyEntry};
    use crate::engine::{Provider, ProviderConfig};
    use crate::format::slot::KdfParams;
    use crate::keys::{KdfGate, OfficerSecret};
    let rng = RandomSource::os();
    let directory = std::sync::Arc::new(MemoryDirectory::new());
    let officer = OfficerSecret::generate(&rng);
    directory
        .set_officer_keys(vec![OfficerKeyEntry {
            key: officer.public(),
            current: true,
        }])
        .await
        .expect("officer keys");
    let config = ProviderConfig {
        pepper: None,
        kdf: KdfParams {
            m_kib: 1024,
            t: 1,
            p: 1,
        },
        limits: None,
        gate: KdfGate::new(2),
        ..ProviderConfig::default()
    };
    let provider = Provider::new(store.clone(), DeploymentId::random(&rng), directory, config)
        .await
        .expect("provider");
    let account = provider
        .create_account("first")
        .await
        .expect("create account");
    let mut session = provider.unlock(account, "first").await.expect("login");
    let pin = session
        .blobs()
        .put(BlobKind::Message, b"kept across password changes")
        .await
        .expect("put");
    session
        .change_password("second")
        .await
        .expect("change password");
    assert!(matches!(
        provider.unlock(account, "first").await,
        Err(Error::WrongCredential)
    ));
    let again = provider
        .unlock(account, "second")
        .await
        .expect("login with the new password");
    assert_eq!(
        &again.blobs().read(&pin).await.expect("read")[..],
        b"kept across password changes"
    );
    let recovered = provider
        .officer_open(account, &officer)
        .await
        .expect("officer open");
    assert_eq!(
        &recovered.blobs().read(&pin).await.expect("read")[..],
        b"kept across password changes"
    );
    provider.erase_account(account).await.expect("erase");
    assert!(provider.unlock(account, "second").await.is_err());
    device_models(&provider, &officer).await;
    let left: Vec<_> = store
        .list(Some(&naming::account_prefix(&account)))
        .try_collect()
        .await
        .expect("list");
    assert!(left.is_empty(), "erase leaves nothing: {left:?}");
}

/// Key models 1 to 4 on this backend: keys made on the device, the keyring checked
/// against policy by the provider, and the mail opened by whoever the model allows.
async fn device_models(provider: &crate::engine::Provider, officer: &crate::keys::OfficerSecret) {
    use crate::directory::KeyModel;
    use crate::format::slot::KdfParams;
    use crate::keys::{Credential, KeyExport, SlotLock};
    let cheap = KdfParams {
        m_kib: 1024,
        t: 1,
        p: 1,
    };
    for model in [
        KeyModel::DeviceOnly,
        KeyModel::DeviceWithExport,
        KeyModel::DevicePassword,
        KeyModel::DevicePasswordWithOfficer,
    ] {
        let enrollment = provider.enroll(model).await.expect("enroll");
        let account = enrollment.account;
        let mut locks = Vec::new();
        if matches!(
            model,
            KeyModel::DevicePassword | KeyModel::DevicePasswordWithOfficer
        ) {
            locks.push(SlotLock::Password("on the device", cheap));
        }
        let officer_key = officer.public();
        if model == KeyModel::DevicePasswordWithOfficer {
            locks.push(SlotLock::Officer(&officer_key));
        }
        let keyring = provider
            .keyrings()
            .create(account, enrollment.binding.clone(), locks)
            .await
            .expect("keyring made on the device");
        provider
            .accept_keyring(account, keyring.epoch_public_keys())
            .await
            .expect("keyring accepted");
        let export = keyring.export("carry me").await.expect("export");
        let writer = provider.companion_session(keyring).expect("device session");
        let pin = writer
            .blobs()
            .put(BlobKind::Message, b"device mail")
            .await
            .expect("put");
        let reader = match model {
            KeyModel::DeviceOnly | KeyModel::DeviceWithExport => {
                let export = KeyExport::parse(&export).expect("parse export");
                let keyring = provider
                    .keyrings()
                    .import(&export, "carry me", enrollment.binding.clone())
                    .await
                    .expect("import on a second device");
                provider
                    .companion_session(keyring)
                    .expect("second device session")
            }
            KeyModel::DevicePassword => {
                let keyring = provider
                    .keyrings()
                    .unlock(
                        account,
                        enrollment.binding.clone(),
                        Credential::Password("on the device"),
                    )
                    .await
                    .expect("device login");
                provider.companion_session(keyring).expect("session")
            }
            _ => provider
                .officer_open(account, officer)
                .await
                .expect("officer recovery"),
        };
        assert_eq!(
            &reader.blobs().read(&pin).await.expect("read")[..],
            b"device mail",
            "{model:?}"
        );
        provider.erase_account(account).await.expect("erase");
    }
}
