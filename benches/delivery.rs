//! Sealed delivery: cost of one delivery against a bound of what it must compute, and
//! cost of importing a delivery into a mailbox.
//!
//! One account under [`KeyModel::DeviceOnly`] (no officer), known to a
//! [`MemoryDirectory`] by its public key, on an in-memory store
//! (`open_store("memory://")`). The messages are realistic RFC 5322 texts of exactly
//! 8 KiB (`text/plain`: trace headers, DKIM signature, From, To, Subject, Date,
//! Message-ID, MIME headers, English-looking text) and 100 KiB (`multipart/mixed`: a text
//! part and a base64 PDF attachment). The deliverer writes to a fresh in-memory store
//! every [`FRESH_STORE_EVERY`] deliveries (outside the timed part), so that the store does
//! not grow with the number of iterations. Before the groups, one delivery of each size
//! is imported, analysed and read back (MIME structure and bytes checked).
//!
//! Groups:
//! - `deliver/{8KiB,100KiB}`: [`Deliverer::deliver_bytes`] of one message: directory
//!   look-up, file key wrapped for the account (X25519), body sealed (STREAM, 64 KiB
//!   chunks) and stored, envelope sealed, signed (Ed25519) and stored; throughput in
//!   deliveries per second;
//!   `bound/{8KiB,100KiB}`: the same run's reference: an X25519 ephemeral key pair (32
//!   random bytes from the OS, `PublicKey::from`), one Diffie-Hellman with the account's
//!   public key, a second X25519 key pair (every sealed header has a second stanza of
//!   the same shape, the officer's or a decoy), one Ed25519 signature over 256 bytes, ChaCha20-Poly1305 encryption of
//!   the same message bytes in 64 KiB chunks into a fresh buffer (what the STREAM
//!   payload costs), and SHA-256 of the sealed bytes (the body digest the envelope
//!   signs since envelope version 2): the public-key work, the AEAD and the digest no
//!   delivery can avoid, no I/O;
//! - `import/per_message`: [`Mailstore::import_deliveries`] on a long-lived handle, in
//!   batches of [`IMPORT_BATCH`] 8 KiB deliveries delivered outside the timed part; the
//!   time is per imported message. The imported messages are removed again outside the
//!   timed part, so the mailbox stays small.
//!
//! After criterion's groups, custom measurements:
//! - deliver against the bound with medians of our own (interleaved runs: 200 at 8 KiB,
//!   100 at 100 KiB) and the ratio deliveries/s ÷ bound/s (target ≥ 0.8);
//! - import per message, median of [`IMPORT_BATCHES`] batches of our own;
//! - requests and bytes per delivery (through a [`CountingStore`] under the deliverer),
//!   per import of one message alone, and per message of a batch (through a
//!   [`CountingStore`] under the store the [`Mailstore`] uses).
//!
//! Run with `cargo bench --bench delivery --features testkit`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use criterion::measurement::WallTime;
use criterion::{black_box, BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use ed25519_dalek::Signer;
use mailvault::delivery::{Deliverer, DeliveryOptions};
use mailvault::ids::MailboxId;
use mailvault::mail::{Mailstore, INBOX};
use mailvault::storage::{open_store, CountingStore, RequestKind};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use tokio::runtime::Runtime;

/// Message sizes of the `deliver` and `bound` groups, with the runs of our own medians.
const SIZES: [(usize, &str, usize); 2] = [(8 << 10, "8KiB", 200), (100 << 10, "100KiB", 100)];
/// Plaintext chunk of a blob (`crypto::stream`).
const CHUNK: usize = 64 * 1024;
/// Bytes the bound signs. (A delivery signs its envelope with the domain, deployment and
/// account: about 400 bytes with default options, one SHA-512 block more.)
const SIGNED_LEN: usize = 256;
/// Deliveries before the deliverer moves to a fresh in-memory store (untimed).
const FRESH_STORE_EVERY: usize = 200;
/// Deliveries imported by one `import_deliveries` call.
const IMPORT_BATCH: usize = 50;
/// Batches of our own import median.
const IMPORT_BATCHES: usize = 20;
/// Size of the imported messages.
const IMPORT_SIZE: usize = 8 << 10;
/// 2026-01-01T00:00:00Z.
const BASE_DATE: i64 = 1_767_225_600;

// ---------------------------------------------------------------------------- messages

/// 32 words the text of the messages is made of.
const WORDS: &str = "the meeting budget report is attached please review before friday we should \
    discuss next steps with team about project timeline and deliverables thanks for your \
    quick reply regards schedule call tomorrow morning";

/// About `len` bytes of English-looking text in CRLF lines of at most 72 characters.
fn text(seed: u64, len: usize) -> String {
    let noise = mailvault::testkit::pattern(seed, len / 3 + 16);
    let words: Vec<&str> = WORDS.split_whitespace().collect();
    let mut out = String::with_capacity(len + 80);
    let mut line = 0;
    for byte in noise.iter().cycle() {
        if out.len() >= len {
            break;
        }
        let word = words[usize::from(byte & 31)];
        if line + word.len() + 1 > 72 {
            out.push_str("\r\n");
            line = 0;
        } else if line > 0 {
            out.push(' ');
            line += 1;
        }
        out.push_str(word);
        line += word.len();
    }
    out.push_str("\r\n");
    out
}

fn base64_lines(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len() / 57 * 78 + 80);
    for line in data.chunks(57) {
        for group in line.chunks(3) {
            let b = [
                group[0],
                group.get(1).copied().unwrap_or(0),
                group.get(2).copied().unwrap_or(0),
            ];
            let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
            for (k, shift) in [18, 12, 6, 0].into_iter().enumerate() {
                out.push(if k <= group.len() {
                    char::from(ALPHABET[(n >> shift) as usize & 63])
                } else {
                    '='
                });
            }
        }
        out.push_str("\r\n");
    }
    out
}

fn rfc2822(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .expect("a valid date")
        .to_rfc2822()
}

/// The headers an MTA hands over: trace fields, a DKIM signature, the originator's.
fn headers(seed: u64, content_type: &str) -> String {
    let date = rfc2822(BASE_DATE + seed as i64 * 61);
    let dkim = base64_lines(&mailvault::testkit::pattern(seed ^ 0xD41, 96));
    let dkim = dkim.trim_end().replace("\r\n", "\r\n\t");
    format!(
        "Return-Path: <reports@partner.example.net>\r\n\
         Delivered-To: owner@example.com\r\n\
         Received: from mx2.example.com (mx2.example.com [192.0.2.25])\r\n\
         \tby mail.example.com with LMTP id {seed:08x}\r\n\tfor <owner@example.com>; {date}\r\n\
         Received: from outbound.partner.example.net (outbound.partner.example.net \
         [198.51.100.7])\r\n\tby mx2.example.com (Postfix) with ESMTPS id 4Xq{seed:06X}\r\n\
         \tfor <owner@example.com>; {date}\r\n\
         DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=partner.example.net;\r\n\
         \ts=mail2026; t={}; h=from:to:subject:date:message-id;\r\n\
         \tbh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;\r\n\tb={dkim}\r\n\
         From: \"Quarterly Reports\" <reports@partner.example.net>\r\n\
         To: \"Mail Owner\" <owner@example.com>\r\n\
         Cc: \"Team\" <team@example.com>\r\n\
         Subject: Re: project update and budget review #{seed}\r\n\
         Date: {date}\r\n\
         Message-ID: <{seed}.{:08x}@partner.example.net>\r\n\
         In-Reply-To: <{}.1a2b3c4d@example.com>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: {content_type}\r\n\r\n",
        BASE_DATE + seed as i64 * 61,
        seed.wrapping_mul(0x9E37_79B9) as u32,
        seed.wrapping_sub(1),
    )
}

/// Fills `m` up to exactly `len` bytes with text lines, then appends `trailer`.
fn pad_to(mut m: String, len: usize, trailer: &str, seed: u64) -> Vec<u8> {
    let room = len
        .checked_sub(m.len() + trailer.len())
        .expect("headers fit in the message size");
    let line = room.checked_sub(2).expect("room for a line ending");
    let mut body = text(seed, room);
    // Cut to size without leaving a bare CR, then end the last line.
    body.truncate(line);
    while body.ends_with(['\r', '\n']) {
        body.pop();
    }
    while body.len() < line {
        body.push('.');
    }
    body.push_str("\r\n");
    m.push_str(&body);
    m.push_str(trailer);
    assert_eq!(m.len(), len, "message of exactly {len} bytes");
    m.into_bytes()
}

/// A message of exactly `len` bytes: `text/plain` up to 16 KiB, `multipart/mixed` with a
/// base64 PDF attachment of about two thirds of the size above.
fn message(seed: u64, len: usize) -> Vec<u8> {
    if len <= 16 << 10 {
        let m = headers(seed, "text/plain; charset=utf-8");
        return pad_to(m, len, "", seed);
    }
    const BOUNDARY: &str = "=_delivery_bench_5e1d";
    let mut m = headers(seed, &format!("multipart/mixed; boundary=\"{BOUNDARY}\""));
    m.push_str(&format!(
        "This is a multi-part message in MIME format.\r\n\
         --{BOUNDARY}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n{}\
         --{BOUNDARY}\r\n\
         Content-Type: application/pdf; name=\"report-q4.pdf\"\r\n\
         Content-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=\"report-q4.pdf\"\r\n\r\n",
        text(seed ^ 0x7E, 2048),
    ));
    let raw = (len * 2 / 3) / 78 * 57;
    m.push_str(&base64_lines(&mailvault::testkit::pattern(
        seed ^ 0xAD,
        raw,
    )));
    m.push_str(&format!(
        "--{BOUNDARY}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    ));
    pad_to(m, len, &format!("--{BOUNDARY}--\r\n"), seed ^ 0x51)
}

// ---------------------------------------------------------------------------- fixtures

/// The account the benchmark delivers to (one home: `testkit::DeliveryWorld`).
use mailvault::testkit::DeliveryWorld as World;

/// A deliverer that moves to a fresh in-memory store every [`FRESH_STORE_EVERY`]
/// deliveries.
struct Sender<'w> {
    world: &'w World,
    deliverer: Deliverer,
    delivered: usize,
}

impl<'w> Sender<'w> {
    fn new(world: &'w World) -> Self {
        Self {
            world,
            deliverer: world.deliverer(open_store("memory://").expect("memory store")),
            delivered: 0,
        }
    }

    /// Called outside the timed part before each delivery.
    fn prepare(&mut self) {
        if self.delivered >= FRESH_STORE_EVERY {
            self.deliverer = self
                .world
                .deliverer(open_store("memory://").expect("memory store"));
            self.delivered = 0;
        }
        self.delivered += 1;
    }

    async fn deliver(&self, body: &[u8]) -> mailvault::delivery::DeliveryReceipt {
        self.deliverer
            .deliver_bytes(self.world.account, body, DeliveryOptions::default())
            .await
            .expect("deliver")
    }
}

/// The bound: what a delivery cannot avoid computing.
struct Bound {
    recipient: x25519_dalek::PublicKey,
    signing: ed25519_dalek::SigningKey,
    signed: [u8; SIGNED_LEN],
    cipher: ChaCha20Poly1305,
}

impl Bound {
    fn new(world: &World) -> Self {
        let mut signed = [0u8; SIGNED_LEN];
        OsRng.fill_bytes(&mut signed);
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        Self {
            recipient: x25519_dalek::PublicKey::from(world.key.public_key()),
            signing: ed25519_dalek::SigningKey::from_bytes(&world.signing),
            signed,
            cipher: ChaCha20Poly1305::new(&key.into()),
        }
    }

    /// Ephemeral key pair, one agreement, one signature, the payload sealed in chunks and
    /// its digest. Returns the ephemeral public key, the shared secret, the signature,
    /// the sealed payload and its SHA-256.
    fn run(
        &self,
        body: &[u8],
    ) -> (
        [u8; 32],
        [u8; 32],
        ed25519_dalek::Signature,
        Vec<u8>,
        [u8; 32],
    ) {
        let mut seed = [0u8; 32];
        OsRng.fill_bytes(&mut seed);
        let ephemeral = x25519_dalek::StaticSecret::from(seed);
        let public = x25519_dalek::PublicKey::from(&ephemeral);
        let shared = ephemeral.diffie_hellman(&self.recipient);
        // Every sealed header has a second stanza of the same shape (the officer's, or a
        // decoy when the key model names no officer): one more X25519 key pair, so that
        // its public key is a real curve point.
        OsRng.fill_bytes(&mut seed);
        let second = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(seed));
        black_box(second);
        let signature = self.signing.sign(&self.signed);
        // Full chunks, then a strictly shorter final one (empty when the body is a whole
        // number of chunks), as the STREAM payload has.
        let chunks = body.len() / CHUNK + 1;
        let mut out = Vec::with_capacity(body.len() + chunks * 16);
        let pieces = body
            .chunks(CHUNK)
            .chain((body.len().is_multiple_of(CHUNK)).then_some(&body[body.len()..]));
        for (index, chunk) in pieces.enumerate() {
            let mut nonce = [0u8; 12];
            nonce[3..11].copy_from_slice(&(index as u64).to_be_bytes());
            nonce[11] = u8::from(index + 1 == chunks);
            let start = out.len();
            out.extend_from_slice(chunk);
            let tag = self
                .cipher
                .encrypt_in_place_detached(Nonce::from_slice(&nonce), b"", &mut out[start..])
                .expect("seal");
            out.extend_from_slice(&tag);
        }
        let digest: [u8; 32] = Sha256::digest(&out).into();
        (public.to_bytes(), shared.to_bytes(), signature, out, digest)
    }
}

/// A long-lived mail handle that imports what a deliverer on the same store delivers.
/// Its account is its own: the directory records the generation of the account's index,
/// so a second store for one account would be refused as a rollback.
struct Importer {
    world: World,
    deliverer: Deliverer,
    mail: Mailstore,
    inbox: MailboxId,
    body: Vec<u8>,
}

impl Importer {
    async fn new() -> Self {
        let world = World::new().await;
        let store = open_store("memory://").expect("memory store");
        let mail = world.mail(store.clone()).await;
        let inbox = mail.mailbox_by_name(INBOX).expect("the inbox").id;
        Self {
            deliverer: world.deliverer(store),
            world,
            mail,
            inbox,
            body: message(7, IMPORT_SIZE),
        }
    }

    async fn deliver(&self, n: usize) {
        for _ in 0..n {
            self.deliverer
                .deliver_bytes(self.world.account, &self.body, DeliveryOptions::default())
                .await
                .expect("deliver");
        }
    }

    /// Delivers `IMPORT_BATCH` messages (untimed), imports them (timed), removes them
    /// again (untimed). Returns the time of the import.
    async fn batch(&mut self) -> Duration {
        self.deliver(IMPORT_BATCH).await;
        let started = Instant::now();
        let report = self
            .mail
            .import_deliveries(std::slice::from_ref(&self.world.key), &self.world.verifying)
            .await
            .expect("import");
        let elapsed = started.elapsed();
        assert_eq!(report.imported.len(), IMPORT_BATCH, "{report:?}");
        assert!(report.quarantined.is_empty(), "{report:?}");
        let uids: Vec<u32> = report.imported.iter().map(|(_, _, uid)| *uid).collect();
        self.mail.remove(self.inbox, &uids).await.expect("remove");
        elapsed
    }
}

struct Bench {
    rt: Runtime,
    world: World,
    /// The messages of `SIZES`, in order.
    bodies: Vec<Vec<u8>>,
}

/// Runs `f` on a thread of its own, for the setup: glibc's malloc then serves it from
/// another arena than the main thread's, whose arena the timed parts use (see
/// `benches/mail.rs`).
fn off_main_arena<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| scope.spawn(f).join().expect("setup thread"))
}

fn build() -> Bench {
    let rt = Runtime::new().expect("tokio runtime");
    let world = off_main_arena(|| rt.block_on(World::new()));
    let bodies: Vec<Vec<u8>> = SIZES.iter().map(|&(len, ..)| message(1, len)).collect();
    // Sanity: a delivery of each size imports and reads back byte for byte (an account
    // of its own: see `Importer`).
    off_main_arena(|| {
        rt.block_on(async {
            let world = World::new().await;
            let store = open_store("memory://").expect("memory store");
            let deliverer = world.deliverer(store.clone());
            for body in &bodies {
                let receipt = deliverer
                    .deliver_bytes(world.account, body, DeliveryOptions::default())
                    .await
                    .expect("deliver");
                assert_eq!(receipt.size, body.len() as u64);
            }
            let mut mail = world.mail(store).await;
            let report = mail
                .import_deliveries(std::slice::from_ref(&world.key), &world.verifying)
                .await
                .expect("import");
            assert_eq!(report.imported.len(), bodies.len(), "{report:?}");
            let mut read = Vec::new();
            for (_, mailbox, uid) in report.imported {
                let email = mail.analyze(mailbox, uid).await.expect("analyze");
                assert!(email.envelope.subject.is_some(), "a parsed message");
                let parts: Vec<String> = email
                    .parts
                    .iter()
                    .map(|p| format!("{}/{}", p.content_type, p.subtype))
                    .collect();
                let expected: &[&str] = if email.size > 16 << 10 {
                    &[
                        "multipart/mixed",
                        "text/plain",
                        "application/pdf",
                        "text/plain",
                    ]
                } else {
                    &["text/plain"]
                };
                assert_eq!(parts, expected, "MIME structure of {} bytes", email.size);
                read.push(mail.read(&email).await.expect("read").to_vec());
            }
            read.sort_by_key(Vec::len);
            assert!(read == bodies, "the delivered bodies read back");
        })
    });
    Bench { rt, world, bodies }
}

fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    group.sample_size(20);
}

// ---------------------------------------------------------------------------- groups

fn deliver_groups(c: &mut Criterion, b: &Bench) {
    let bound = Bound::new(&b.world);
    for name in ["deliver", "bound"] {
        let mut group = c.benchmark_group(name);
        configure(&mut group);
        group.throughput(Throughput::Elements(1));
        for (&(_, label, _), body) in SIZES.iter().zip(&b.bodies) {
            if name == "bound" {
                group.bench_function(BenchmarkId::from_parameter(label), |bench| {
                    bench.iter_with_large_drop(|| bound.run(black_box(body)))
                });
                continue;
            }
            let mut sender = Sender::new(&b.world);
            group.bench_function(BenchmarkId::from_parameter(label), |bench| {
                bench.iter_custom(|iters| {
                    b.rt.block_on(async {
                        let mut timed = Duration::ZERO;
                        for _ in 0..iters {
                            sender.prepare();
                            let started = Instant::now();
                            black_box(sender.deliver(black_box(body)).await);
                            timed += started.elapsed();
                        }
                        timed
                    })
                })
            });
        }
        group.finish();
    }
}

fn import_group(c: &mut Criterion, b: &Bench) {
    let mut importer = off_main_arena(|| b.rt.block_on(Importer::new()));
    let mut group = c.benchmark_group("import");
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    group.sample_size(10);
    group.throughput(Throughput::Elements(1));
    group.bench_function("per_message", |bench| {
        bench.iter_custom(|iters| {
            // Whole batches; the time is scaled to `iters` messages.
            let batches = (iters as usize).div_ceil(IMPORT_BATCH);
            let mut timed = Duration::ZERO;
            for _ in 0..batches {
                timed += b.rt.block_on(importer.batch());
            }
            timed.mul_f64(iters as f64 / (batches * IMPORT_BATCH) as f64)
        })
    });
    group.finish();
}

// ---------------------------------------------------------------------------- reports

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn per_second(d: Duration) -> f64 {
    1.0 / d.as_secs_f64()
}

/// Deliver against the bound, interleaved runs, per size.
fn deliver_report(b: &Bench) {
    let bound = Bound::new(&b.world);
    println!(
        "\ndeliver_bytes against the bound (X25519 key pair + DH, a second X25519 key pair, Ed25519 signature over \
         {SIGNED_LEN} B, ChaCha20-Poly1305 in 64 KiB chunks, SHA-256 of the sealed bytes), medians of interleaved runs; \
         target: deliveries/s / bound/s >= 0.8"
    );
    for (&(len, label, runs), body) in SIZES.iter().zip(&b.bodies) {
        let mut sender = Sender::new(&b.world);
        let (mut deliver_t, mut bound_t) = (Vec::new(), Vec::new());
        // Warm-up, untimed.
        for _ in 0..10 {
            sender.prepare();
            b.rt.block_on(sender.deliver(body));
            black_box(bound.run(body));
        }
        for _ in 0..runs {
            sender.prepare();
            let started = Instant::now();
            let receipt = b.rt.block_on(sender.deliver(black_box(body)));
            deliver_t.push(started.elapsed());
            black_box(receipt);
            let started = Instant::now();
            let sealed = black_box(bound.run(black_box(body)));
            bound_t.push(started.elapsed());
            drop(sealed);
        }
        let (deliver, bound_m) = (median(deliver_t), median(bound_t));
        let ratio = per_second(deliver) / per_second(bound_m);
        println!(
            "  {label:>6} ({len} B): deliver {deliver:>9.2?} ({:>7.0}/s)  bound {bound_m:>9.2?} \
             ({:>7.0}/s)  ratio {ratio:.2} {}  ({runs} runs)",
            per_second(deliver),
            per_second(bound_m),
            if ratio >= 0.8 { "(met)" } else { "(NOT met)" },
        );
    }
}

/// Import per message, median of our own batches.
fn import_report(b: &Bench) {
    let mut importer = off_main_arena(|| b.rt.block_on(Importer::new()));
    b.rt.block_on(importer.batch());
    let times: Vec<Duration> = (0..IMPORT_BATCHES)
        .map(|_| b.rt.block_on(importer.batch()) / IMPORT_BATCH as u32)
        .collect();
    let per_message = median(times);
    println!(
        "\nimport_deliveries: {per_message:.2?} per message ({:.0} messages/s), median of \
         {IMPORT_BATCHES} batches of {IMPORT_BATCH} deliveries of {IMPORT_SIZE} B on a \
         long-lived handle",
        per_second(per_message)
    );
}

/// Requests and bytes per operation.
struct Cost {
    requests: f64,
    by_kind: Vec<(RequestKind, f64)>,
    written: f64,
    read: f64,
}

impl Cost {
    fn of(counting: &CountingStore, ops: usize) -> Self {
        let requests = counting.requests();
        let per = |n: usize| n as f64 / ops as f64;
        let mut by_kind: Vec<(RequestKind, f64)> = Vec::new();
        for r in &requests {
            match by_kind.iter_mut().find(|(k, _)| *k == r.kind) {
                Some((_, n)) => *n += 1.0,
                None => by_kind.push((r.kind, 1.0)),
            }
        }
        for (_, n) in &mut by_kind {
            *n /= ops as f64;
        }
        Cost {
            requests: per(requests.len()),
            by_kind,
            written: counting.bytes_written() as f64 / ops as f64,
            read: requests
                .iter()
                .filter(|r| r.kind == RequestKind::Get)
                .map(|r| r.bytes)
                .sum::<u64>() as f64
                / ops as f64,
        }
    }

    fn print(&self, what: &str) {
        let kinds: Vec<String> = self
            .by_kind
            .iter()
            .map(|(k, n)| format!("{n:.2} {k:?}"))
            .collect();
        println!(
            "  {what:<34} {:>6.2} requests ({})  {:>8.0} B written  {:>8.0} B read",
            self.requests,
            kinds.join(", "),
            self.written,
            self.read
        );
    }
}

/// Requests per delivery (counted under the deliverer) and per import (counted under the
/// store the `Mailstore` uses).
fn request_report(b: &Bench) {
    println!("\nrequests and bytes (CountingStore)");
    b.rt.block_on(async {
        let world = &b.world;
        for (&(_, label, _), body) in SIZES.iter().zip(&b.bodies) {
            let counting = CountingStore::new(open_store("memory://").expect("memory store"));
            let deliverer = world.deliverer(Arc::new(counting.clone()));
            deliverer
                .deliver_bytes(world.account, body, DeliveryOptions::default())
                .await
                .expect("deliver");
            Cost::of(&counting, 1).print(&format!("deliver/{label}"));
        }

        // An account of its own for the mail handle (see `Importer`).
        let world = &World::new().await;
        let store = open_store("memory://").expect("memory store");
        let deliverer = world.deliverer(store.clone());
        let counting = CountingStore::new(store);
        let mut mail = world.mail(Arc::new(counting.clone())).await;
        let inbox = mail.mailbox_by_name(INBOX).expect("the inbox").id;
        let body = message(7, IMPORT_SIZE);
        let keys = std::slice::from_ref(&world.key);
        for (n, what) in [
            (1, "import/one message alone".to_string()),
            (
                IMPORT_BATCH,
                format!("import/per message of {IMPORT_BATCH}"),
            ),
        ] {
            for _ in 0..n {
                deliverer
                    .deliver_bytes(world.account, &body, DeliveryOptions::default())
                    .await
                    .expect("deliver");
            }
            counting.reset();
            let report = mail
                .import_deliveries(keys, &world.verifying)
                .await
                .expect("import");
            assert_eq!(report.imported.len(), n);
            Cost::of(&counting, n).print(&what);
            let uids: Vec<u32> = report.imported.iter().map(|(_, _, uid)| *uid).collect();
            mail.remove(inbox, &uids).await.expect("remove");
        }
        counting.reset();
        let report = mail
            .import_deliveries(keys, &world.verifying)
            .await
            .expect("import");
        assert!(report.imported.is_empty());
        Cost::of(&counting, 1).print("import/nothing pending");
    });
}

fn main() {
    let bench = build();
    let mut c = Criterion::default().configure_from_args();
    deliver_groups(&mut c, &bench);
    import_group(&mut c, &bench);
    c.final_summary();
    deliver_report(&bench);
    import_report(&bench);
    request_report(&bench);
}
