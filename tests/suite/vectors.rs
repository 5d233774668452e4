//! Known-answer vectors: a fixed seed gives exact bytes, so an accidental change of the
//! format (labels, header layout, nonce layout, chunking) fails here.
//!
//! `tests/vectors/blob_v1.txt` was written by this test with `MAILVAULT_WRITE_VECTORS=1`;
//! regenerate it only for a deliberate, versioned format change.

use mailvault::blob::BlobCipher;
use mailvault::crypto::{AccountKey, RandomSource};
use mailvault::format::{BlobKind, BlobPin};
use mailvault::ids::{AccountId, BlobId, DeploymentId};
use mailvault::testkit::pattern;
use sha2::{Digest, Sha256};

const FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/blob_v1.txt");
const SEED: u64 = 0x6d61_696c_7661_756c;
const C: usize = super::C;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// The vector file's content, computed from the seed.
fn compute() -> String {
    let rng = RandomSource::seeded(SEED);
    let deployment = DeploymentId::random(&rng);
    let account = AccountId::random(&rng);
    let key = AccountKey::generate(3, &rng);
    let cipher = BlobCipher::new(deployment, account, &key);
    let mut out = String::from("# mailvault blob format v1 known-answer vectors (seeded RNG, see tests/suite/vectors.rs)\n");
    out += &format!("seed {SEED:016x}\ndeployment {deployment}\naccount {account}\n");
    let cases = [
        (BlobKind::Message, 0),
        (BlobKind::Message, 13),
        (BlobKind::Attachment, C - 1),
        (BlobKind::Message, C),
        (BlobKind::Other, 2 * C + 1),
    ];
    for (i, (kind, len)) in cases.into_iter().enumerate() {
        let plain = pattern(i as u64, len);
        let (pin, stored) = cipher
            .seal(&rng, BlobId::random(&rng), kind, &plain)
            .unwrap();
        out += &format!("case {i} kind {} len {len}\n", kind.to_byte());
        out += &format!("  pin {}\n", hex(&pin.to_bytes()));
        out += &format!("  sha256 {}\n", hex(&Sha256::digest(&stored)));
        if stored.len() <= 256 {
            out += &format!("  stored {}\n", hex(&stored));
        }
    }
    out
}

#[test]
fn blob_format_matches_known_answers() {
    let computed = compute();
    if std::env::var("MAILVAULT_WRITE_VECTORS").as_deref() == Ok("1") {
        std::fs::write(FILE, &computed).unwrap();
    }
    let recorded = std::fs::read_to_string(FILE).expect("tests/vectors/blob_v1.txt is missing");
    assert_eq!(
        computed, recorded,
        "the blob format changed: bump the version or restore it"
    );
}

/// The recorded bytes open with the seeded key: the reading side is pinned too, with no
/// writer involved.
#[test]
fn recorded_blobs_open() {
    let recorded = std::fs::read_to_string(FILE).unwrap();
    let rng = RandomSource::seeded(SEED);
    let deployment = DeploymentId::random(&rng);
    let account = AccountId::random(&rng);
    let cipher = BlobCipher::new(deployment, account, &AccountKey::generate(3, &rng));
    let mut opened = 0;
    let mut pin = None;
    for line in recorded.lines() {
        let line = line.trim();
        if let Some(hex_pin) = line.strip_prefix("pin ") {
            pin = Some(BlobPin::parse(&unhex(hex_pin)).unwrap());
        } else if let Some(hex_stored) = line.strip_prefix("stored ") {
            let pin = pin.take().unwrap();
            let plain = cipher.open(&pin, &unhex(hex_stored)).unwrap();
            assert_eq!(plain.len() as u64, pin.len());
            opened += 1;
        }
    }
    assert_eq!(opened, 2, "the two small vectors carry their stored bytes");
}
