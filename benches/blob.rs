//! Blob sealing and opening throughput, against references.
//!
//! Groups (each for 4 KiB, 64 KiB, 1 MiB and 16 MiB, with byte throughput):
//! - `raw_aead/{seal,open}`: one ChaCha20-Poly1305 call over the whole buffer on one
//!   core, no framing, no allocation: the ceiling of a single core;
//!   `raw_aead/seal_all_cores`: the same cipher over 64 KiB pieces of the buffer in
//!   place on every core (rayon): the ceiling of any parallel chunked format here;
//! - `mailvault/{seal,open}`: [`BlobCipher::seal`] / [`BlobCipher::open`] in memory
//!   (64 KiB chunks on all cores, key derivation and commitment check included), into
//!   one buffer; `mailvault/{seal,open}_parts`: [`BlobCipher::seal_parts`] /
//!   [`BlobCipher::open_parts`], the same work into one buffer per chunk (what
//!   `AccountBlobs::put` uploads);
//! - `age/{encrypt,decrypt}`: the `age` crate to one X25519 recipient, in memory (the same
//!   STREAM construction, single core, plus the X25519 header);
//! - `range/{4k_of_64m,full_64m}`: a 4 KiB range read against a whole read of a 64 MiB
//!   blob on an in-memory object store.
//!
//! Run with `cargo bench --bench blob --features testkit`.

use std::io::{Read, Write};
use std::iter;
use std::sync::Arc;
use std::time::Duration;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, BenchmarkGroup};
use criterion::{measurement::WallTime, BenchmarkId, Criterion, Throughput};
use mailvault::blob::{BlobCipher, BlobStore};
use mailvault::crypto::{AccountKey, RandomSource};
use mailvault::format::BlobKind;
use mailvault::ids::{AccountId, BlobId, DeploymentId};
use object_store::memory::InMemory;
use rayon::prelude::*;

const SIZES: [(usize, &str); 4] = [
    (4 << 10, "4KiB"),
    (64 << 10, "64KiB"),
    (1 << 20, "1MiB"),
    (16 << 20, "16MiB"),
];

/// Deterministic, incompressible-enough plaintext.
fn data(len: usize) -> Vec<u8> {
    mailvault::testkit::pattern(0, len)
}

/// Modest settings so that the whole file runs in a few minutes on a small machine.
fn configure(group: &mut BenchmarkGroup<'_, WallTime>, len: usize) {
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    group.sample_size(if len >= 1 << 20 { 10 } else { 20 });
    group.throughput(Throughput::Bytes(len as u64));
}

fn raw_aead(c: &mut Criterion) {
    let cipher = ChaCha20Poly1305::new(Key::from_slice(&[7u8; 32]));
    let nonce = Nonce::from_slice(&[0u8; 12]);
    let mut group = c.benchmark_group("raw_aead");
    for (len, label) in SIZES {
        configure(&mut group, len);
        let plain = data(len);

        // Re-encrypting the previous iteration's output costs the same as the first
        // encryption, so one buffer serves every iteration.
        let mut buf = plain.clone();
        group.bench_function(BenchmarkId::new("seal", label), |b| {
            b.iter(|| {
                cipher
                    .encrypt_in_place_detached(nonce, b"", black_box(&mut buf[..]))
                    .expect("seal")
            })
        });

        // The same cipher on every core: 64 KiB pieces of the buffer sealed in place in
        // parallel (no framing, no allocation, no copy), the ceiling of any parallel
        // chunked format on this machine.
        group.bench_function(BenchmarkId::new("seal_all_cores", label), |b| {
            b.iter(|| {
                buf.par_chunks_mut(64 << 10).for_each(|piece| {
                    black_box(
                        cipher
                            .encrypt_in_place_detached(nonce, b"", piece)
                            .expect("seal"),
                    );
                })
            })
        });

        // Opening needs a valid tag each time (a failing tag check skips the
        // decryption): a fresh copy of the ciphertext per iteration, copied outside the
        // timed part.
        let mut sealed = plain.clone();
        let tag = cipher
            .encrypt_in_place_detached(nonce, b"", &mut sealed)
            .expect("seal");
        let mut check = sealed.clone();
        cipher
            .decrypt_in_place_detached(nonce, b"", &mut check, &tag)
            .expect("open");
        assert_eq!(check, plain);
        group.bench_function(BenchmarkId::new("open", label), |b| {
            b.iter_batched_ref(
                || sealed.clone(),
                |buf| {
                    cipher
                        .decrypt_in_place_detached(nonce, b"", black_box(&mut buf[..]), &tag)
                        .expect("open")
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

fn fixed_cipher(rng: &RandomSource) -> BlobCipher {
    BlobCipher::new(
        DeploymentId::from_bytes([1; 16]),
        AccountId::from_bytes([2; 16]),
        &AccountKey::generate(1, rng),
    )
}

fn mailvault_cipher(c: &mut Criterion) {
    let rng = RandomSource::seeded(1);
    let cipher = fixed_cipher(&rng);
    let id = BlobId::from_bytes([3; 16]);
    let mut group = c.benchmark_group("mailvault");
    for (len, label) in SIZES {
        configure(&mut group, len);
        let plain = data(len);
        group.bench_function(BenchmarkId::new("seal", label), |b| {
            b.iter(|| {
                cipher
                    .seal(&rng, id, BlobKind::Message, black_box(&plain))
                    .expect("seal")
            })
        });

        let (pin, stored) = cipher
            .seal(&rng, id, BlobKind::Message, &plain)
            .expect("seal");
        assert_eq!(cipher.open(&pin, &stored).expect("open"), plain);
        group.bench_function(BenchmarkId::new("open", label), |b| {
            b.iter(|| cipher.open(&pin, black_box(&stored)).expect("open"))
        });

        // The same bytes as upload parts (header, then one buffer per chunk), as
        // `AccountBlobs::put` stores them, and opened into one buffer per chunk.
        let (parts_pin, parts) = cipher
            .seal_parts(&rng, id, BlobKind::Message, &plain)
            .expect("seal_parts");
        let joined: Vec<u8> = parts.iter().flat_map(|part| part.iter().copied()).collect();
        assert_eq!(joined.len(), stored.len());
        assert_eq!(cipher.open(&parts_pin, &joined).expect("open parts"), plain);
        group.bench_function(BenchmarkId::new("seal_parts", label), |b| {
            b.iter(|| {
                cipher
                    .seal_parts(&rng, id, BlobKind::Message, black_box(&plain))
                    .expect("seal_parts")
            })
        });
        assert_eq!(
            cipher
                .open_parts(&pin, &stored)
                .expect("open_parts")
                .concat(),
            plain
        );
        group.bench_function(BenchmarkId::new("open_parts", label), |b| {
            b.iter(|| {
                cipher
                    .open_parts(&pin, black_box(&stored))
                    .expect("open_parts")
            })
        });
    }
    group.finish();
}

fn age_encrypt(plain: &[u8], recipient: &age::x25519::Recipient) -> Vec<u8> {
    let encryptor = age::Encryptor::with_recipients(iter::once(recipient as &dyn age::Recipient))
        .expect("encryptor");
    let mut out = Vec::with_capacity(plain.len() + plain.len() / 4096 + 512);
    let mut writer = encryptor.wrap_output(&mut out).expect("age header");
    writer.write_all(plain).expect("age write");
    writer.finish().expect("age finish");
    out
}

fn age_decrypt(sealed: &[u8], identity: &age::x25519::Identity) -> Vec<u8> {
    let decryptor = age::Decryptor::new_buffered(sealed).expect("age header");
    let mut reader = decryptor
        .decrypt(iter::once(identity as &dyn age::Identity))
        .expect("age identity");
    let mut out = Vec::with_capacity(sealed.len());
    reader.read_to_end(&mut out).expect("age read");
    out
}

fn age_reference(c: &mut Criterion) {
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public();
    let mut group = c.benchmark_group("age");
    for (len, label) in SIZES {
        configure(&mut group, len);
        let plain = data(len);
        group.bench_function(BenchmarkId::new("encrypt", label), |b| {
            b.iter(|| age_encrypt(black_box(&plain), &recipient))
        });

        let sealed = age_encrypt(&plain, &recipient);
        assert_eq!(age_decrypt(&sealed, &identity), plain);
        group.bench_function(BenchmarkId::new("decrypt", label), |b| {
            b.iter(|| age_decrypt(black_box(&sealed), &identity))
        });
    }
    group.finish();
}

fn range_reads(c: &mut Criterion) {
    const BLOB: usize = 64 << 20;
    const RANGE: u64 = 4096;
    // Inside one chunk, away from both ends of the blob.
    const AT: u64 = 40_000_000;

    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let rng = RandomSource::seeded(2);
    let blobs = BlobStore::new(Arc::new(InMemory::new()), DeploymentId::from_bytes([1; 16]))
        .with_rng(rng.clone());
    let account = blobs.account(
        AccountId::from_bytes([2; 16]),
        &AccountKey::generate(1, &rng),
    );
    let plain = data(BLOB);
    let pin = rt
        .block_on(account.put(BlobKind::Attachment, &plain))
        .expect("put 64 MiB");
    let range = AT..AT + RANGE;
    let piece = rt
        .block_on(account.get_range(&pin, range.clone()))
        .expect("get_range");
    assert_eq!(&piece[..], &plain[AT as usize..(AT + RANGE) as usize]);
    let whole = rt.block_on(account.read(&pin)).expect("read");
    assert_eq!(&whole[..], &plain[..]);
    drop((piece, whole));

    let mut group = c.benchmark_group("range");
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));

    group.sample_size(20);
    group.throughput(Throughput::Bytes(RANGE));
    group.bench_function("4k_of_64m", |b| {
        b.to_async(&rt)
            .iter(|| async { account.get_range(&pin, range.clone()).await.expect("range") })
    });

    group.sample_size(10);
    group.throughput(Throughput::Bytes(BLOB as u64));
    group.bench_function("full_64m", |b| {
        b.to_async(&rt)
            .iter(|| async { account.read(&pin).await.expect("read") })
    });
    group.finish();
}

criterion_group!(
    benches,
    raw_aead,
    mailvault_cipher,
    age_reference,
    range_reads
);
criterion_main!(benches);
