//! Opening arbitrary and mutated stored blobs.
//!
//! 1. The whole input is taken as a stored object and opened without a pin
//!    (`open_unpinned`, then `open` and `open_parts` with the pin found) as a fixed blob
//!    id of a fixed account: it must never panic, and may only succeed for a blob this
//!    account really sealed under that id.
//! 2. The input also drives mutations (XOR, truncation, extension, splice, chunk swap) of
//!    blobs sealed once by the target itself (a one-chunk blob and a three-chunk blob),
//!    which are then opened with their real pins (`open`, `open_parts`): anything but the unchanged bytes must
//!    fail, and the unchanged bytes must open to the original plaintext.
//!
//! Input layout for the mutations: byte 0 picks the blob (bit 7) and the operation (low
//! bits), bytes 1..4 give an offset (24-bit big-endian), byte 4 a second parameter, and
//! the rest is the operand.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use mailvault::blob::BlobCipher;
use mailvault::crypto::{AccountKey, RandomSource};
use mailvault::format::{BlobKind, BlobPin};
use mailvault::ids::{AccountId, BlobId, DeploymentId};

/// Plaintext bytes per chunk of the blob format (64 KiB).
const CHUNK: usize = 64 * 1024;
/// Ciphertext bytes of a full chunk (chunk plus tag).
const SEALED_CHUNK: usize = CHUNK + 16;
/// Header length of a blob.
const HEADER: usize = 76;

/// The id `open_unpinned` is asked for; the seed corpus holds a blob sealed under it.
const FIXED_ID: [u8; 16] = *b"fuzz-blob-id-000";

struct Fixture {
    cipher: BlobCipher,
    blobs: [Sealed; 2],
}

struct Sealed {
    pin: BlobPin,
    stored: Vec<u8>,
    plaintext: Vec<u8>,
}

fn plaintext(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let cipher = BlobCipher::new(
        DeploymentId::from_bytes(*b"fuzz-deployment!"),
        AccountId::from_bytes(*b"fuzz-account-id!"),
        &AccountKey::generate(1, &RandomSource::seeded(7)),
    );
    let rng = RandomSource::seeded(8);
    let seal = |id: [u8; 16], kind: BlobKind, len: usize| {
        let plaintext = plaintext(len);
        let (pin, stored) = cipher
            .seal(&rng, BlobId::from_bytes(id), kind, &plaintext)
            .expect("sealing a small blob");
        Sealed {
            pin,
            stored,
            plaintext,
        }
    };
    let small = seal(FIXED_ID, BlobKind::Message, 100);
    // Two full chunks and a short final one.
    let large = seal(*b"fuzz-blob-id-001", BlobKind::Attachment, 2 * CHUNK + 1000);
    Fixture {
        blobs: [small, large],
        cipher,
    }
});

fn mutate(blob: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = blob.to_vec();
    let Some((&op, rest)) = data.split_first() else {
        return out;
    };
    let mut offset = 0usize;
    for &b in rest.iter().take(3) {
        offset = (offset << 8) | usize::from(b);
    }
    let param = rest.get(3).copied().unwrap_or(0);
    let operand = rest.get(4..).unwrap_or(&[]);
    let xor_at = |out: &mut Vec<u8>, at: usize| {
        if out.is_empty() {
            return;
        }
        let at = at % out.len();
        for (o, x) in out[at..].iter_mut().zip(operand) {
            *o ^= x;
        }
    };
    match op & 0x07 {
        // Flip bits.
        0 => xor_at(&mut out, offset),
        // Truncate, then flip bits near the end.
        1 => {
            out.truncate(offset % (blob.len() + 1));
            let len = out.len();
            xor_at(&mut out, len.saturating_sub(usize::from(param)));
        }
        // Extend with the operand.
        2 => out.extend_from_slice(operand),
        // Splice: replace everything from `offset` with the operand.
        3 => {
            out.truncate(offset % (blob.len() + 1));
            out.extend_from_slice(operand);
        }
        // Insert the operand at `offset`.
        4 => {
            let at = offset % (blob.len() + 1);
            out.splice(at..at, operand.iter().copied());
        }
        // Remove `param + 1` bytes at `offset`.
        5 => {
            let at = offset % (blob.len() + 1);
            let end = (at + usize::from(param) + 1).min(out.len());
            out.drain(at..end);
        }
        // Swap two chunks (or the header and a chunk), then flip bits.
        6 => {
            let chunks = (blob.len() - HEADER).div_ceil(SEALED_CHUNK);
            let a = offset % (chunks + 1);
            let b = usize::from(param) % (chunks + 1);
            let span = |k: usize| {
                if k == 0 {
                    0..HEADER
                } else {
                    let start = HEADER + (k - 1) * SEALED_CHUNK;
                    start..(start + SEALED_CHUNK).min(blob.len())
                }
            };
            let (ra, rb) = (span(a), span(b));
            if a != b {
                let (first, second) = if ra.start < rb.start {
                    (ra, rb)
                } else {
                    (rb, ra)
                };
                let mut rebuilt = Vec::with_capacity(blob.len());
                rebuilt.extend_from_slice(&blob[..first.start]);
                rebuilt.extend_from_slice(&blob[second.clone()]);
                rebuilt.extend_from_slice(&blob[first.end..second.start]);
                rebuilt.extend_from_slice(&blob[first.clone()]);
                rebuilt.extend_from_slice(&blob[second.end..]);
                out = rebuilt;
            }
            xor_at(&mut out, offset);
        }
        // Replace the whole object with the operand.
        _ => out = operand.to_vec(),
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let fixture = &*FIXTURE;

    // 1. Arbitrary bytes as a stored object of the fixed id.
    if let Ok((pin, plain)) = fixture
        .cipher
        .open_unpinned(BlobId::from_bytes(FIXED_ID), data)
    {
        // Only a blob this account sealed under this id may open.
        assert_eq!(pin.stored_len(), data.len() as u64);
        assert_eq!(pin.len(), plain.len() as u64);
        let parts = fixture.cipher.open_parts(&pin, data).map(|p| p.concat());
        assert_eq!(parts.ok().as_ref(), Some(&plain));
        assert_eq!(fixture.cipher.open(&pin, data).ok(), Some(plain));
    }

    // 2. Mutations of real blobs, opened with their real pins.
    let which = usize::from(data.first().map_or(0, |b| b >> 7));
    let blob = &fixture.blobs[which];
    let mutated = mutate(&blob.stored, data);
    let opened = fixture.cipher.open(&blob.pin, &mutated);
    let parts = fixture.cipher.open_parts(&blob.pin, &mutated);
    let unpinned = fixture.cipher.open_unpinned(blob.pin.id, &mutated);
    if mutated == blob.stored {
        assert_eq!(opened.ok().as_ref(), Some(&blob.plaintext));
        assert_eq!(
            parts.ok().map(|p| p.concat()).as_ref(),
            Some(&blob.plaintext)
        );
        let (pin, plain) = unpinned.expect("an unchanged blob opens without its pin");
        assert_eq!(pin, blob.pin);
        assert_eq!(plain, blob.plaintext);
    } else {
        assert!(opened.is_err(), "a mutated blob opened with its pin");
        assert!(
            parts.is_err(),
            "a mutated blob opened into parts with its pin"
        );
        assert!(unpinned.is_err(), "a mutated blob opened without its pin");
    }
});
