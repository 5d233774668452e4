//! Hardening of sealed delivery (issue 10): what an import checks of a pending body
//! (item 12), what a delivery signature covers and what a sealed header tells the store
//! (item 9), crypto-erase against the officer's copy of delivered mail (item 5).

use std::sync::Arc;

use mailvault::crypto::{AccountKey, RandomSource};
use mailvault::delivery::{
    Deliverer, DeliveryOptions, DeliveryReceipt, DeliverySigningKey, Rejection,
};
use mailvault::directory::{AccountRecord, Directory, KeyModel, MemoryDirectory};
use mailvault::ids::{AccountId, DeploymentId};
use mailvault::index::IndexStore;
use mailvault::keys::OfficerSecret;
use mailvault::mail::{ImportReport, Mailstore, INBOX};
use mailvault::storage::{naming, DynStore};
use object_store::ObjectStoreExt;

use super::C;

/// A deployment whose directory knows one account by its public key, under a key model
/// that co-seals deliveries to the officer.
struct World {
    store: DynStore,
    deployment: DeploymentId,
    directory: Arc<MemoryDirectory>,
    signing: [u8; 32],
    account: AccountId,
    key: AccountKey,
    officer: OfficerSecret,
}

impl World {
    async fn new(model: KeyModel) -> Self {
        Self::on(model, super::memory()).await
    }

    async fn on(model: KeyModel, store: DynStore) -> Self {
        let rng = RandomSource::os();
        let (directory, officer, signing) = super::directory_with_officer_and_signer(&rng).await;
        let account = AccountId::random(&rng);
        let key = AccountKey::generate(1, &rng);
        directory
            .set_account_record(
                &account,
                AccountRecord::new(model, vec![(1, key.public_key())], rand::random()),
            )
            .await
            .unwrap();
        Self {
            store,
            deployment: DeploymentId::random(&rng),
            directory,
            signing: *signing.to_bytes(),
            account,
            key,
            officer,
        }
    }

    fn deliverer(&self) -> Deliverer {
        Deliverer::new(
            self.store.clone(),
            self.deployment,
            self.directory.clone(),
            DeliverySigningKey::from_bytes(self.signing),
        )
    }

    async fn deliver(&self, body: &[u8]) -> DeliveryReceipt {
        self.deliverer()
            .deliver_bytes(self.account, body, DeliveryOptions::default())
            .await
            .unwrap()
    }

    async fn mail(&self) -> Mailstore {
        // The commit protocol the backend allows (probed).
        let index = IndexStore::new(self.store.clone(), self.deployment, self.directory.clone())
            .await
            .unwrap();
        let blobs = mailvault::blob::BlobStore::new(self.store.clone(), self.deployment)
            .account(self.account, &self.key);
        Mailstore::open(&index, blobs, &self.key).await.unwrap()
    }

    async fn import(&self) -> ImportReport {
        let verifying = self.directory.delivery_key().await.unwrap().unwrap();
        self.mail()
            .await
            .import_deliveries(std::slice::from_ref(&self.key), &verifying)
            .await
            .unwrap()
    }

    /// The account's record in the trusted directory.
    async fn record(&self) -> AccountRecord {
        self.directory
            .account_record(&self.account)
            .await
            .unwrap()
            .unwrap()
    }

    async fn stored(&self, path: &object_store::path::Path) -> Vec<u8> {
        self.store
            .get(path)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec()
    }
}

/// Item 12: a pending body with one byte appended, or with any byte of its stored header
/// changed, is not imported: it is quarantined as a bad body (both objects kept), for a
/// body of one chunk and one of several. The untouched delivery next to it imports. In
/// memory every header byte class is tried; on the S3 servers (where the object's size
/// comes from `Content-Range`) an appended byte and one flipped byte.
#[tokio::test]
async fn item_12_import_checks_the_stored_length_and_header() {
    let mut backends = vec![("memory", super::memory(), 0..10)];
    for name in ["GARAGE", "MOTO"] {
        match mailvault::testkit::s3_from_env(name) {
            Some(store) => backends.push((name, store, 6..7)),
            None => eprintln!("{name} not configured: item 12 runs in memory only"),
        }
    }
    for (backend, store, flips) in backends {
        for len in [200, 3 * C + 5] {
            item_12_cases(backend, &store, len, flips.clone()).await;
        }
    }
}

async fn item_12_cases(backend: &str, store: &DynStore, len: usize, flips: std::ops::Range<usize>) {
    let body = mailvault::testkit::pattern(len as u64, len);
    let flips = [0usize, 9, 20, 44, 60, 100, 130, 180, 220, 239][flips].to_vec();
    for flip in std::iter::once(None).chain(flips.into_iter().map(Some)) {
        let case = match flip {
            None => format!("{backend}, {len} bytes, one byte appended"),
            Some(at) => format!("{backend}, {len} bytes, header byte {at} flipped"),
        };
        let w = World::on(KeyModel::DevicePasswordWithOfficer, store.clone()).await;
        let bad = w.deliver(&body).await;
        let good = w.deliver(&body).await;
        let path = naming::blob_path(&w.account, &bad.blob);
        let mut stored = w.stored(&path).await;
        match flip {
            None => stored.push(0),
            Some(at) => stored[at] ^= 0x01,
        }
        w.store.put(&path, stored.clone().into()).await.unwrap();

        let report = w.import().await;
        let imported: Vec<_> = report.imported.iter().map(|(d, _, _)| *d).collect();
        assert_eq!(imported, [good.delivery], "{case}: imported {report:?}");
        assert_eq!(
            report.quarantined,
            [(bad.delivery, Rejection::BadBody)],
            "{case}"
        );
        // Both objects stay, as they were, for inspection.
        assert_eq!(w.stored(&path).await, stored, "{case}");
        let envelope = naming::delivery_path(&w.account, &bad.delivery);
        assert!(w.store.head(&envelope).await.is_ok(), "{case}");
    }
}

/// Item 9: under key model 4 the officer knows every delivered body's file key. With
/// write access to the bucket it swaps a delivered body for another of the same length
/// sealed under that key, before or after the import. The import cannot see it (it
/// reads no body), but the first full read does: the envelope signs the digest of the
/// stored body, which the pin keeps. `analyze`, a whole read and a streamed read all
/// fail; the untouched delivery next to it reads.
#[tokio::test]
async fn item_09_a_body_swapped_under_the_same_file_key_fails_its_first_full_read() {
    for before_import in [true, false] {
        let w = World::new(KeyModel::DevicePasswordWithOfficer).await;
        let genuine = b"Subject: genuine\r\n\r\npay invoice 1 to account A".to_vec();
        let forged = b"Subject: FORGED!\r\n\r\npay invoice 1 to account B".to_vec();
        assert_eq!(genuine.len(), forged.len());
        let target = w.deliver(&genuine).await;
        let control = w.deliver(&genuine).await;
        let blobs = mailvault::blob::BlobStore::new(w.store.clone(), w.deployment);
        let swap = || async {
            let bytes = blobs
                .forge_sealed_as_officer(
                    w.account,
                    target.blob,
                    &w.officer,
                    &w.record().await,
                    &forged,
                )
                .await
                .unwrap();
            let path = naming::blob_path(&w.account, &target.blob);
            w.store.put(&path, bytes.into()).await.unwrap();
        };
        if before_import {
            swap().await;
        }
        let report = w.import().await;
        assert_eq!(report.imported.len(), 2, "{report:?}");
        if !before_import {
            swap().await;
        }
        let mut mail = w.mail().await;
        let inbox = mail.mailbox_by_name(INBOX).unwrap().id;
        let uid_of = |delivery| {
            report
                .imported
                .iter()
                .find(|(d, _, _)| *d == delivery)
                .unwrap()
                .2
        };
        let (swapped, kept) = (uid_of(target.delivery), uid_of(control.delivery));
        let case = if before_import {
            "swapped before the import"
        } else {
            "swapped after"
        };
        let email = mail.email(inbox, swapped).unwrap();
        let streamed =
            async { mailvault::testkit::collect_stream(mail.read_stream(&email).await?).await };
        assert!(
            matches!(streamed.await, Err(mailvault::Error::Tampered)),
            "{case}: a streamed read of the swapped body"
        );
        let read = mail.read(&email).await;
        assert!(
            matches!(read, Err(mailvault::Error::Tampered)),
            "{case}: the swapped body read as {:?}",
            read.map(|b| String::from_utf8_lossy(&b).into_owned())
        );
        // The metadata is the deliverer's analysis of the genuine plaintext, sealed and
        // signed in the envelope (issue 12 item 3): never the forged body's.
        let analyzed = mail.analyze(inbox, swapped).await;
        assert!(
            matches!(&analyzed, Ok(e) if e.envelope.subject.as_deref() == Some("genuine")),
            "{case}: analyze gave {:?}",
            analyzed.map(|e| e.envelope.subject)
        );
        let email = mail.analyze(inbox, kept).await.unwrap();
        assert_eq!(email.envelope.subject.as_deref(), Some("genuine"));
        assert_eq!(&mail.read(&email).await.unwrap()[..], &genuine[..]);
    }
}

/// Item 9: every sealed header has the same shape, whether or not the key model names
/// an officer: the same stanza count, and in the officer's place an X25519 public key as
/// a real wrap has (never random bytes, half of which no X25519 public key can be: their
/// top bit is set). The store cannot tell which bodies an officer can open.
#[tokio::test]
async fn item_09_every_sealed_header_has_the_same_shape() {
    let with = World::new(KeyModel::DevicePasswordWithOfficer).await;
    let without = World::new(KeyModel::DeviceOnly).await;
    let mut headers = Vec::new();
    for w in [&with, &without] {
        for _ in 0..32 {
            let receipt = w.deliver(b"Subject: x\r\n\r\nbody").await;
            let stored = w
                .stored(&naming::blob_path(&w.account, &receipt.blob))
                .await;
            headers.push((w.account == with.account, stored[..240].to_vec()));
        }
    }
    let shape = |h: &[u8]| h[44..48].to_vec();
    let first = shape(&headers[0].1);
    for (officer, header) in &headers {
        assert_eq!(
            shape(header),
            first,
            "officer {officer}: the recipients bytes differ"
        );
        // Both stanzas' ephemeral keys look like X25519 public keys (top bit clear).
        for at in [48 + 31, 128 + 31] {
            assert_eq!(header[at] & 0x80, 0, "officer {officer}: byte {at}");
        }
    }
}

/// Every object of `from`, copied into a new in-memory store: a backup of the bucket.
async fn backup_of(from: &DynStore) -> DynStore {
    use futures::TryStreamExt;
    let to = super::memory();
    let objects: Vec<_> = from.list(None).try_collect().await.unwrap();
    for meta in objects {
        let bytes = from
            .get(&meta.location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        to.put(&meta.location, bytes.into()).await.unwrap();
    }
    to
}

/// Item 5: crypto-erase reaches the officer's copy of delivered mail. Under key model 4
/// bodies are delivered while officer key A is current, then after A was retired for B;
/// one is imported, one still pending. Before the erase, each officer key opens the
/// bodies sealed to it from a copy of the bucket. After `erase_account`, that pre-erase
/// copy and every officer secret, retired included, open no body.
#[tokio::test]
async fn item_05_after_erase_no_officer_key_opens_a_delivered_body_of_a_backup() {
    use mailvault::directory::OfficerKeyEntry;
    let w = World::new(KeyModel::DevicePasswordWithOfficer).await;
    let retired = OfficerSecret::from_bytes(*w.officer.to_bytes());
    let first = w.deliver(b"Subject: one\r\n\r\nunder officer key A").await;
    let current = OfficerSecret::generate(&RandomSource::os());
    w.directory
        .set_officer_keys(vec![
            OfficerKeyEntry {
                key: retired.public(),
                current: false,
            },
            OfficerKeyEntry {
                key: current.public(),
                current: true,
            },
        ])
        .await
        .unwrap();
    let second = w.deliver(b"Subject: two\r\n\r\nunder officer key B").await;
    assert_eq!(w.import().await.imported.len(), 2);
    let third = w.deliver(b"Subject: three\r\n\r\npending").await;
    let deliveries = [(&first, &retired), (&second, &current), (&third, &current)];

    let backup = backup_of(&w.store).await;
    let blobs = mailvault::blob::BlobStore::new(backup.clone(), w.deployment);
    // Before the erase, each body opens with the officer key it was sealed to and the
    // account's directory record.
    let record = w.record().await;
    for (receipt, officer) in deliveries {
        let body = blobs
            .open_sealed_as_officer(w.account, receipt.blob, officer, &record)
            .await
            .unwrap();
        assert_eq!(body.len() as u64, receipt.size);
    }
    drop(record);

    w.directory.erase_account(&w.account).await.unwrap();
    assert!(w
        .directory
        .account_record(&w.account)
        .await
        .unwrap()
        .is_none());
    // What is left to try: the record is gone, so any stand-in for its secret.
    let stand_ins = [[0u8; 32], rand::random()]
        .map(|secret| AccountRecord::new(KeyModel::DevicePasswordWithOfficer, Vec::new(), secret));
    for (i, officer) in [&retired, &current].into_iter().enumerate() {
        for ((receipt, _), record) in deliveries
            .iter()
            .flat_map(|d| stand_ins.iter().map(move |r| (*d, r)))
        {
            let opened = blobs
                .open_sealed_as_officer(w.account, receipt.blob, officer, record)
                .await;
            assert!(
                matches!(opened, Err(mailvault::Error::Tampered)),
                "officer key {i} opened body {} of the pre-erase backup after the erase: {:?}",
                receipt.blob,
                opened.map(|b| String::from_utf8_lossy(&b).into_owned())
            );
        }
    }
}
