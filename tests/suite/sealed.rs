//! Sealed blobs (envelope 2): written with public keys only, pinned by the key holder
//! (file key re-wrapped, no X25519 on later reads), recovered by an officer from the blob
//! alone; attacks on headers, pins and recipients.

use mailvault::blob::{officer_binding, BlobStore, SealedOfficer, SealedRecipients};
use mailvault::crypto::{AccountKey, RandomSource};
use mailvault::directory::{AccountRecord, KeyModel};
use mailvault::format::blob::SEALED_HEADER_LEN;
use mailvault::format::{BlobKind, BlobPin};
use mailvault::ids::{AccountId, DeploymentId};
use mailvault::keys::OfficerSecret;
use mailvault::storage::{naming, DynStore};
use mailvault::Error;
use object_store::ObjectStoreExt;

use super::{memory, C};

struct World {
    store: DynStore,
    blobs: BlobStore,
    account: AccountId,
    key: AccountKey,
    officer: OfficerSecret,
    /// The account's directory record (its secret binds the officer's wraps).
    record: AccountRecord,
}

fn world() -> World {
    let rng = RandomSource::os();
    let store = memory();
    World {
        blobs: BlobStore::new(store.clone(), DeploymentId::random(&rng)),
        store,
        account: AccountId::random(&rng),
        key: AccountKey::generate(1, &rng),
        officer: OfficerSecret::generate(&rng),
        record: AccountRecord::new(KeyModel::DevicePasswordWithOfficer, Vec::new(), [5; 32]),
    }
}

impl World {
    fn recipients(&self, officer: bool) -> SealedRecipients {
        SealedRecipients {
            account: self.account,
            epoch: self.key.epoch(),
            public_key: self.key.public_key(),
            officer: officer.then(|| SealedOfficer {
                public_key: self.officer.public().to_bytes(),
                binding: officer_binding(&self.record, &self.blobs.deployment(), &self.account),
            }),
        }
    }

    async fn seal(&self, body: &[u8], officer: bool) -> mailvault::blob::SealedBlob {
        let mut writer = self
            .blobs
            .sealed_writer(&self.recipients(officer), BlobKind::Message)
            .unwrap();
        for piece in body.chunks(10_000) {
            writer.write(piece).await.unwrap();
        }
        writer.finish().await.unwrap()
    }
}

#[tokio::test]
async fn sealed_round_trips_through_a_pin_and_by_range() {
    let w = world();
    let account = w.blobs.account(w.account, &w.key);
    for len in [0, 1, C - 1, C, C + 1, 3 * C + 5] {
        let body = mailvault::testkit::pattern(len as u64, len);
        let sealed = w.seal(&body, false).await;
        assert_eq!(sealed.len(), len as u64);
        let pin = account.pin_sealed(&sealed, &w.key).unwrap();
        assert!(pin.sealed_key().is_some());
        let pin = BlobPin::parse(&pin.to_bytes()).unwrap();
        assert_eq!(&account.read(&pin).await.unwrap()[..], &body[..], "{len}");
        let streamed = mailvault::testkit::collect_stream(account.get(&pin).await.unwrap())
            .await
            .unwrap();
        assert_eq!(streamed, body);
        if len > 10 {
            let range = (len as u64 / 3)..(len as u64 - 2);
            let part = account.get_range(&pin, range.clone()).await.unwrap();
            assert_eq!(&part[..], &body[range.start as usize..range.end as usize]);
        }
    }
}

#[tokio::test]
async fn the_officer_recovers_from_the_blob_alone_and_only_when_wrapped_for() {
    let w = world();
    let body = b"From: x@example.org\r\n\r\nfor the record".to_vec();
    let with = w.seal(&body, true).await;
    let recovered = w
        .blobs
        .open_sealed_as_officer(w.account, with.id, &w.officer, &w.record)
        .await
        .unwrap();
    assert_eq!(recovered, body);
    let without = w.seal(&body, false).await;
    assert!(matches!(
        w.blobs
            .open_sealed_as_officer(w.account, without.id, &w.officer, &w.record)
            .await,
        Err(Error::Tampered)
    ));
    let other = OfficerSecret::generate(&RandomSource::os());
    assert!(matches!(
        w.blobs
            .open_sealed_as_officer(w.account, with.id, &other, &w.record)
            .await,
        Err(Error::Tampered)
    ));
    // Both headers have the same length: the store cannot tell the models apart.
    let stored = |id| {
        let store = w.store.clone();
        let path = naming::blob_path(&w.account, &id);
        async move { store.head(&path).await.unwrap().size }
    };
    assert_eq!(stored(with.id).await, stored(without.id).await);
}

#[tokio::test]
async fn wrong_keys_altered_headers_and_low_order_recipients_are_refused() {
    let w = world();
    let account = w.blobs.account(w.account, &w.key);
    let sealed = w.seal(b"secret body", true).await;

    // Another account's key, or another epoch.
    let stranger = AccountKey::generate(1, &RandomSource::os());
    assert!(matches!(
        account.pin_sealed(&sealed, &stranger),
        Err(Error::Tampered)
    ));
    let later = AccountKey::generate(2, &RandomSource::os());
    assert!(matches!(
        account.pin_sealed(&sealed, &later),
        Err(Error::EpochUnavailable { epoch: 1 })
    ));

    // Every byte of the header matters: the wrap or the commitment fails.
    let bytes = sealed.header.to_bytes();
    for at in 0..SEALED_HEADER_LEN {
        let mut flipped = bytes;
        flipped[at] ^= 0x01;
        let Ok(header) = mailvault::format::blob::SealedHeader::parse(&flipped) else {
            continue;
        };
        let altered = mailvault::blob::SealedBlob { header, ..sealed };
        assert!(account.pin_sealed(&altered, &w.key).is_err(), "byte {at}");
    }

    // A pin whose re-wrapped key or header was altered reads nothing.
    let pin = account.pin_sealed(&sealed, &w.key).unwrap();
    let raw = pin.to_bytes();
    for at in [30, 200, raw.len() - 40, raw.len() - 1] {
        let mut bad = raw.clone();
        bad[at] ^= 0x80;
        if let Ok(bad) = BlobPin::parse(&bad) {
            assert!(account.read(&bad).await.is_err(), "pin byte {at}");
        }
    }

    // The stored body flipped: the read fails.
    let path = naming::blob_path(&w.account, &sealed.id);
    let last = w.store.head(&path).await.unwrap().size as usize - 1;
    mailvault::testkit::flip_stored_byte(&w.store, &path, last, 1).await;
    assert!(matches!(account.read(&pin).await, Err(Error::Tampered)));

    // Low-order public keys are refused by the writer.
    for bad in [[0u8; 32], {
        let mut one = [0u8; 32];
        one[0] = 1;
        one
    }] {
        let to = SealedRecipients {
            public_key: bad,
            ..w.recipients(false)
        };
        assert!(matches!(
            w.blobs.sealed_writer(&to, BlobKind::Message),
            Err(Error::InvalidArgument(_))
        ));
    }
}

#[tokio::test]
async fn nothing_readable_in_a_sealed_blob() {
    let w = world();
    let marker = b"SealedMarkerText-1234";
    let mut body = b"Subject: hello\r\n\r\n".to_vec();
    body.extend_from_slice(marker);
    w.seal(&body, true).await;
    let (hits, objects) =
        mailvault::testkit::scan_for_markers(&w.store, None, &[&marker[..], b"Subject"]).await;
    assert_eq!(objects, 1);
    assert!(hits.is_empty(), "{hits:?}");
}
