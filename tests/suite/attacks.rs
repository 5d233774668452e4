//! Attacks on stored blobs, each expecting the opaque `Tampered` error: flipped bits,
//! truncation, swapped/duplicated/appended chunks, blobs moved to another id, account or
//! deployment, and stale pins.

use mailvault::blob::BlobCipher;
use mailvault::crypto::{AccountKey, RandomSource};
use mailvault::format::{BlobKind, BlobPin};
use mailvault::ids::{AccountId, BlobId, DeploymentId};
use mailvault::storage::naming;
use mailvault::testkit::{collect_stream, pattern};
use mailvault::Error;
use object_store::{ObjectStoreExt, PutPayload};

use super::{Fixture, C, HEADER, SEALED};

/// A blob of three full chunks and a short final one, sealed in memory.
fn sealed_blob(f: &Fixture) -> (BlobCipher, BlobPin, Vec<u8>, Vec<u8>) {
    let cipher = f.cipher();
    let plain = pattern(11, 3 * C + 100);
    let (pin, stored) = cipher
        .seal(&f.rng, BlobId::random(&f.rng), BlobKind::Message, &plain)
        .unwrap();
    (cipher, pin, stored, plain)
}

fn assert_tampered(result: mailvault::Result<impl Sized>, what: &str) {
    match result {
        Err(Error::Tampered) => {}
        Err(other) => panic!("{what}: expected Tampered, got {other:?}"),
        Ok(_) => panic!("{what}: accepted"),
    }
}

/// Both one-call read paths (one buffer, one buffer per chunk) refuse `stored`.
fn assert_opens_tampered(cipher: &BlobCipher, pin: &BlobPin, stored: &[u8], what: &str) {
    assert_tampered(cipher.open(pin, stored), what);
    assert_tampered(
        cipher.open_parts(pin, stored),
        &format!("{what} (open_parts)"),
    );
}

fn chunk(stored: &[u8], j: usize) -> &[u8] {
    let start = HEADER + j * SEALED;
    &stored[start..(start + SEALED).min(stored.len())]
}

#[test]
fn every_flipped_bit_class_is_detected() {
    let f = Fixture::new();
    let (cipher, pin, stored, _) = sealed_blob(&f);
    let mut positions: Vec<usize> = (0..HEADER).collect(); // every header byte
    for j in 0..4 {
        let start = HEADER + j * SEALED;
        let end = (start + SEALED).min(stored.len());
        positions.extend([start, start + 1, (start + end) / 2]); // chunk bodies
        positions.extend(end - 16..end); // every tag byte
    }
    for position in positions {
        for bit in [0x01, 0x80] {
            let mut bad = stored.clone();
            bad[position] ^= bit;
            assert_opens_tampered(&cipher, &pin, &bad, &format!("pinned, byte {position}"));
            // Without a pin, a flipped version byte reads as an unknown version and a
            // flipped epoch as an epoch without a key; either way it is refused.
            let unpinned = cipher.open_unpinned(pin.id, &bad);
            assert!(
                matches!(
                    unpinned,
                    Err(Error::Tampered)
                        | Err(Error::UnsupportedVersion { .. })
                        | Err(Error::EpochUnavailable { .. })
                ),
                "unpinned, byte {position}: {:?}",
                unpinned.map(|_| ())
            );
        }
    }
}

#[test]
fn truncation_at_every_boundary_and_inside_chunks_is_detected() {
    let f = Fixture::new();
    let (cipher, pin, stored, _) = sealed_blob(&f);
    let mut cuts: Vec<usize> = vec![0, 1, HEADER - 1, HEADER];
    for j in 1..=3 {
        let boundary = HEADER + j * SEALED;
        cuts.extend([
            boundary - 1,
            boundary,
            boundary + 1,
            boundary + 16,
            boundary - 17,
        ]);
    }
    cuts.extend((HEADER + 3 * SEALED..stored.len()).step_by(7)); // inside the final chunk
    cuts.extend([HEADER + SEALED / 2, HEADER + SEALED + 12345]);
    for cut in cuts {
        let short = &stored[..cut];
        assert_opens_tampered(&cipher, &pin, short, &format!("pinned cut at {cut}"));
        assert!(
            cipher.open_unpinned(pin.id, short).is_err(),
            "unpinned cut at {cut}"
        );
    }
}

#[test]
fn swapped_duplicated_and_appended_chunks_are_detected() {
    let f = Fixture::new();
    let (cipher, pin, stored, _) = sealed_blob(&f);
    let header = &stored[..HEADER];
    let chunks: Vec<&[u8]> = (0..4).map(|j| chunk(&stored, j)).collect();
    let assemble = |order: &[usize]| -> Vec<u8> {
        let mut out = header.to_vec();
        for &j in order {
            out.extend_from_slice(chunks[j]);
        }
        out
    };
    let cases: [(&str, Vec<usize>); 6] = [
        ("swap 0 and 1", vec![1, 0, 2, 3]),
        ("swap 1 and 2", vec![0, 2, 1, 3]),
        ("duplicate 0 over 1", vec![0, 0, 2, 3]),
        ("drop a middle chunk", vec![0, 2, 3]),
        ("append a full chunk", vec![0, 1, 2, 3, 2]),
        ("final chunk earlier", vec![0, 1, 3]),
    ];
    for (what, order) in cases {
        let forged = assemble(&order);
        assert_opens_tampered(&cipher, &pin, &forged, what);
        assert!(
            cipher.open_unpinned(pin.id, &forged).is_err(),
            "unpinned: {what}"
        );
    }
    // Appending bytes after the final chunk.
    let mut longer = stored.clone();
    longer.extend_from_slice(&[0u8; 16]);
    assert_opens_tampered(&cipher, &pin, &longer, "trailing bytes");
    assert!(cipher.open_unpinned(pin.id, &longer).is_err());
}

#[test]
fn a_blob_moved_to_another_id_account_or_deployment_fails_its_commitment() {
    let f = Fixture::new();
    let (_, pin, stored, _) = sealed_blob(&f);
    // Another id, same keys.
    let other_id = BlobId::random(&f.rng);
    assert_tampered(
        f.cipher().open_unpinned(other_id, &stored).map(|_| ()),
        "other id",
    );
    // Another account sharing the very same account key: the context still differs.
    let other_account = BlobCipher::new(f.deployment, AccountId::random(&f.rng), &f.key);
    assert_opens_tampered(&other_account, &pin, &stored, "other account, pinned");
    assert_tampered(
        other_account.open_unpinned(pin.id, &stored).map(|_| ()),
        "other account",
    );
    // Another deployment.
    let other_deployment = BlobCipher::new(DeploymentId::random(&f.rng), f.account, &f.key);
    assert_opens_tampered(&other_deployment, &pin, &stored, "other deployment");
    // Another key of the same epoch (a different account's key).
    let stranger = BlobCipher::new(
        f.deployment,
        f.account,
        &AccountKey::generate(1, &RandomSource::os()),
    );
    assert_opens_tampered(&stranger, &pin, &stored, "other key");
    // A key of another epoch is reported as such.
    let later = BlobCipher::new(f.deployment, f.account, &AccountKey::generate(2, &f.rng));
    assert!(matches!(
        later.open(&pin, &stored),
        Err(Error::EpochUnavailable { epoch: 1 })
    ));
}

#[test]
fn a_relabelled_kind_fails_its_commitment() {
    let f = Fixture::new();
    let (cipher, pin, stored, _) = sealed_blob(&f);
    let mut raw = pin.to_bytes();
    raw[1 + 16 + 8 + 7] = BlobKind::Attachment.to_byte();
    let relabelled = BlobPin::parse(&raw).unwrap();
    let mut restamped = stored.clone();
    restamped[7] = BlobKind::Attachment.to_byte();
    assert_opens_tampered(&cipher, &relabelled, &restamped, "kind relabelled");
}

/// A blob rewritten in place under the same id (a replay of another version): the pin of
/// the old version refuses the new bytes on every read path, and the reverse.
#[tokio::test]
async fn a_pin_from_another_version_is_refused_on_every_read_path() {
    let f = Fixture::new();
    let store = super::memory();
    let blobs = f.blobs(&store);
    let v1 = pattern(1, 2 * C + 5);
    let old = blobs.put(BlobKind::Message, &v1).await.unwrap();
    let path = naming::blob_path(&f.account, &old.id);
    let old_bytes = store.get(&path).await.unwrap().bytes().await.unwrap();
    let mut writer = blobs.writer_for_id(old.id, BlobKind::Message);
    writer.write(&pattern(2, 2 * C + 5)).await.unwrap();
    // Same id and length: only the pin tells the versions apart. The writer's
    // conditional create refuses to overwrite, so install the new version by hand.
    assert!(matches!(writer.finish().await, Err(Error::Conflict { .. })));
    let (new_pin, new_bytes) = f
        .cipher()
        .seal(&f.rng, old.id, BlobKind::Message, &pattern(2, 2 * C + 5))
        .unwrap();
    store.put(&path, PutPayload::from(new_bytes)).await.unwrap();
    assert_eq!(new_pin.stored_len(), old.stored_len());
    assert_tampered(blobs.read(&old).await, "read");
    assert_tampered(
        collect_stream(blobs.get(&old).await.unwrap()).await,
        "stream",
    );
    assert_tampered(blobs.get_range(&old, 10..20).await, "range");
    assert_tampered(
        blobs.get_range(&old, C as u64 + 3..C as u64 + 9).await,
        "range in chunk 1",
    );
    assert_eq!(
        &blobs.get_range(&new_pin, 0..10).await.unwrap()[..],
        &pattern(2, 10)[..]
    );
    // Replaying the old bytes is refused by the new pin.
    store.put(&path, PutPayload::from(old_bytes)).await.unwrap();
    assert_tampered(blobs.read(&new_pin).await, "replayed old version");
    assert_tampered(
        blobs.get_range(&new_pin, 0..10).await,
        "replayed old version, range",
    );
    assert_eq!(&blobs.read(&old).await.unwrap()[..], &v1[..]);
}

/// Tampering through the store: a flipped byte in chunk 1 fails every read path that
/// touches chunk 1, while ranges of untouched chunks still read (no false alarms).
#[tokio::test]
async fn store_reads_detect_a_flipped_byte_where_it_is() {
    let f = Fixture::new();
    let store = super::memory();
    let blobs = f.blobs(&store);
    let plain = pattern(3, 3 * C + 100);
    let pin = blobs.put(BlobKind::Message, &plain).await.unwrap();
    let path = naming::blob_path(&f.account, &pin.id);
    let mut bytes = store
        .get(&path)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    bytes[HEADER + SEALED + 500] ^= 4;
    store.put(&path, PutPayload::from(bytes)).await.unwrap();
    assert_tampered(blobs.read(&pin).await, "read");
    assert_tampered(
        collect_stream(blobs.get(&pin).await.unwrap()).await,
        "stream",
    );
    assert_tampered(
        blobs.get_range(&pin, C as u64..C as u64 + 1).await,
        "range in chunk 1",
    );
    assert_tampered(
        blobs.get_range(&pin, 10..2 * C as u64).await,
        "range over chunks 0-1",
    );
    let untouched = 2 * C as u64 + 7..3 * C as u64 + 50;
    assert_eq!(
        &blobs.get_range(&pin, untouched.clone()).await.unwrap()[..],
        &plain[untouched.start as usize..untouched.end as usize]
    );
}

/// The streaming reader never releases plaintext of a chunk that fails, and ends with an
/// error rather than a clean short end when the object is cut.
#[tokio::test]
async fn a_truncated_stream_ends_in_an_error_not_a_short_success() {
    let f = Fixture::new();
    let store = super::memory();
    let blobs = f.blobs(&store);
    let plain = pattern(4, 40 * C + 3);
    let pin = blobs.put(BlobKind::Message, &plain).await.unwrap();
    let path = naming::blob_path(&f.account, &pin.id);
    let bytes = store.get(&path).await.unwrap().bytes().await.unwrap();
    // Same length as announced by the pin, but the tail replaced: the size check passes
    // and only the final chunk's authentication can fail.
    let mut cut = bytes.to_vec();
    let n = cut.len();
    cut[n - 40..].fill(0);
    store.put(&path, PutPayload::from(cut)).await.unwrap();
    let mut stream = blobs.get(&pin).await.unwrap();
    use futures::StreamExt;
    let mut released = 0usize;
    let mut failed = false;
    while let Some(piece) = stream.next().await {
        match piece {
            Ok(bytes) => {
                assert_eq!(&bytes[..], &plain[released..released + bytes.len()]);
                released += bytes.len();
            }
            Err(e) => {
                assert!(matches!(e, Error::Tampered));
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "the stream must end with an error");
    assert!(released < plain.len());
}
