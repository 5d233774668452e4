//! Delivers one big message through a local directory store, imports it and reads it
//! back, in bounded memory.
//!
//! A deliverer seals `--size-mib N` MiB (default 50) of a generated RFC 5322 message (a
//! `multipart/mixed` with a short text part and a base64 attachment) for an account under
//! key model 1 (`DeviceOnly`), streamed to [`Deliverer::deliver`] as a stream of 64 KiB
//! pieces made on demand: the message is never held whole. Then, unless `--no-import`,
//! the key holder imports it with [`Mailstore::import_deliveries`] (signature, envelope,
//! ranged check of the body's end; the body is not re-uploaded) and reads it back with
//! [`Mailstore::read_stream`], counting the bytes and checking their SHA-256 against the
//! generator's. Run it under `/usr/bin/time -v` to see the peak resident set size.
//!
//! ```text
//! cargo build --release --example deliver_big
//! /usr/bin/time -v target/release/examples/deliver_big --size-mib 50 [--no-import] [--dir /some/dir]
//! ```
//!
//! Without `--dir` the store lives in a temporary directory that is removed at the end.
//!
//! [`Deliverer::deliver`]: mailvault::delivery::Deliverer::deliver
//! [`Mailstore::import_deliveries`]: mailvault::mail::Mailstore::import_deliveries
//! [`Mailstore::read_stream`]: mailvault::mail::Mailstore::read_stream

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use mailvault::blob::BlobStore;
use mailvault::crypto::{AccountKey, RandomSource};
use mailvault::delivery::{Deliverer, DeliveryOptions, DeliverySigningKey};
use mailvault::directory::{AccountRecord, Directory, KeyModel, MemoryDirectory};
use mailvault::ids::{AccountId, DeploymentId};
use mailvault::index::IndexStore;
use mailvault::mail::Mailstore;
use sha2::{Digest, Sha256};

/// Size of each piece handed to the deliverer.
const PIECE: usize = 64 << 10;
/// A base64 line: 76 characters and CRLF.
const LINE: u64 = 78;
const BOUNDARY: &str = "=_deliver_big_0c4f";
const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// The generated message: `head`, then `lines` base64 lines of a pseudo-random
/// attachment, then `tail`; exactly `size` bytes, any slice of which can be made from its
/// offset alone.
struct Message {
    head: Vec<u8>,
    lines: u64,
    tail: Vec<u8>,
    size: u64,
}

impl Message {
    fn new(size: u64) -> Result<Self, String> {
        let head = |padding: usize| {
            format!(
                "Return-Path: <archive@partner.example.net>\r\n\
                 Received: from mx1.example.com by mail.example.com with LMTP;\r\n\
                 \tThu, 1 Jan 2026 00:00:00 +0000\r\n\
                 From: \"Archive Robot\" <archive@partner.example.net>\r\n\
                 To: \"Mail Owner\" <owner@example.com>\r\n\
                 Subject: Yearly archive export\r\n\
                 Date: Thu, 1 Jan 2026 00:00:00 +0000\r\n\
                 Message-ID: <export.2026@partner.example.net>\r\n\
                 MIME-Version: 1.0\r\n\
                 Content-Type: multipart/mixed; boundary=\"{BOUNDARY}\"\r\n\r\n\
                 --{BOUNDARY}\r\n\
                 Content-Type: text/plain; charset=utf-8\r\n\r\n\
                 The archive is attached.{}\r\n\
                 --{BOUNDARY}\r\n\
                 Content-Type: application/octet-stream; name=\"archive.bin\"\r\n\
                 Content-Transfer-Encoding: base64\r\n\
                 Content-Disposition: attachment; filename=\"archive.bin\"\r\n\r\n",
                ".".repeat(padding)
            )
            .into_bytes()
        };
        let tail = format!("--{BOUNDARY}--\r\n").into_bytes();
        let fixed = (head(0).len() + tail.len()) as u64;
        let room = size
            .checked_sub(fixed)
            .ok_or(format!("a message needs at least {fixed} bytes"))?;
        // Whole lines of base64; the rest pads the text part.
        let head = head((room % LINE) as usize);
        Ok(Self {
            head,
            lines: room / LINE,
            tail,
            size,
        })
    }

    /// Line `n` of the attachment.
    fn line(n: u64) -> [u8; LINE as usize] {
        let mut line = [0u8; LINE as usize];
        for (j, c) in line[..76].iter_mut().enumerate() {
            let k = n * 76 + j as u64;
            let mixed = k
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .rotate_left(29)
                .wrapping_mul(0xbf58_476d_1ce4_e5b9);
            *c = BASE64[(mixed >> 58) as usize];
        }
        line[76..].copy_from_slice(b"\r\n");
        line
    }

    /// The bytes from `offset` on, into `buf`.
    fn fill(&self, mut offset: u64, buf: &mut [u8]) {
        let head = self.head.len() as u64;
        let body_end = head + self.lines * LINE;
        let mut i = 0;
        while i < buf.len() {
            let take = if offset < head {
                let from = offset as usize;
                let take = (self.head.len() - from).min(buf.len() - i);
                buf[i..i + take].copy_from_slice(&self.head[from..from + take]);
                take
            } else if offset < body_end {
                let (n, col) = ((offset - head) / LINE, ((offset - head) % LINE) as usize);
                let take = (LINE as usize - col).min(buf.len() - i);
                buf[i..i + take].copy_from_slice(&Self::line(n)[col..col + take]);
                take
            } else {
                let from = (offset - body_end) as usize;
                let take = (self.tail.len() - from).min(buf.len() - i);
                buf[i..i + take].copy_from_slice(&self.tail[from..from + take]);
                take
            };
            i += take;
            offset += take as u64;
        }
    }
}

struct Args {
    size: u64,
    import: bool,
    dir: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        size: 50 << 20,
        import: true,
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--size-mib" => {
                let value = it.next().ok_or("--size-mib needs a value")?;
                let mib: u64 = value
                    .parse()
                    .map_err(|e| format!("--size-mib {value}: {e}"))?;
                args.size = mib << 20;
            }
            "--no-import" => args.import = false,
            "--dir" => args.dir = Some(it.next().ok_or("--dir needs a value")?.into()),
            "-h" | "--help" => {
                return Err("usage: deliver_big [--size-mib N] [--no-import] [--dir DIR]".into());
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn mib_per_s(bytes: u64, time: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / time.as_secs_f64()
}

/// Peak resident set size of this process so far (Linux), in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn print_peak_rss(when: &str) {
    if let Some(kib) = peak_rss_kib() {
        println!("peak RSS {when}: {kib} KiB");
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let message = Message::new(args.size)?;
    let temp = match &args.dir {
        Some(_) => None,
        None => Some(tempfile::tempdir()?),
    };
    let root = args
        .dir
        .clone()
        .unwrap_or_else(|| temp.as_ref().expect("a temporary directory").path().into());
    let root_str = root.to_str().ok_or("the store directory must be UTF-8")?;

    // The deployment: a store, a directory that knows the account by its public key, and
    // the provider's delivery signing key.
    let rng = RandomSource::os();
    let store = mailvault::storage::open_store(root_str)?;
    let deployment = DeploymentId::random(&rng);
    let directory = Arc::new(MemoryDirectory::new());
    let signing = DeliverySigningKey::generate(&rng);
    let verifying = signing.verifying_key();
    directory.set_delivery_key(verifying).await?;
    let (account, key) = (AccountId::random(&rng), AccountKey::generate(1, &rng));
    directory
        .set_account_record(
            &account,
            AccountRecord::new(KeyModel::DeviceOnly, vec![(1, key.public_key())], [7; 32]),
        )
        .await?;
    let deliverer = Deliverer::new(store.clone(), deployment, directory.clone(), signing);

    println!(
        "store: {} (local directory, fsync on)\nmessage: {} bytes ({} MiB), delivered in {} KiB \
         pieces",
        root.display(),
        args.size,
        args.size >> 20,
        PIECE >> 10
    );

    // Deliver: the pieces are made (and hashed) as the deliverer pulls them.
    let started = Instant::now();
    let mut generated = Sha256::new();
    let mut offset = 0u64;
    let pieces = std::iter::from_fn(|| {
        if offset >= message.size {
            return None;
        }
        let mut piece = vec![0u8; PIECE.min((message.size - offset) as usize)];
        message.fill(offset, &mut piece);
        generated.update(&piece);
        offset += piece.len() as u64;
        Some(Ok(Bytes::from(piece)))
    });
    let receipt = deliverer
        .deliver(
            account,
            futures::stream::iter(pieces),
            DeliveryOptions {
                mailbox: "INBOX".into(),
                flags: vec!["$Incoming".into()],
                ..DeliveryOptions::default()
            },
        )
        .await?;
    let deliver_time = started.elapsed();
    let generated = generated.finalize();
    if receipt.size != args.size {
        return Err(format!("delivered {} bytes, expected {}", receipt.size, args.size).into());
    }
    println!(
        "deliver: {} bytes sealed and stored in {:.2?} ({:.0} MiB/s, generating included); \
         delivery {}",
        receipt.size,
        deliver_time,
        mib_per_s(receipt.size, deliver_time),
        receipt.delivery
    );
    print_peak_rss("after delivery");
    if !args.import {
        return Ok(());
    }

    // Import, as the key holder.
    let started = Instant::now();
    let index = IndexStore::new(store.clone(), deployment, directory.clone()).await?;
    let blobs = BlobStore::new(store, deployment).account(account, &key);
    let mut mail = Mailstore::open(&index, blobs, &key).await?;
    let opened = started.elapsed();
    let started = Instant::now();
    let report = mail
        .import_deliveries(std::slice::from_ref(&key), &verifying)
        .await?;
    let import_time = started.elapsed();
    let &[(delivery, mailbox, uid)] = report.imported.as_slice() else {
        return Err(format!("expected one import, got {report:?}").into());
    };
    if delivery != receipt.delivery {
        return Err(format!("imported {delivery}, delivered {}", receipt.delivery).into());
    }
    println!(
        "import: delivery imported as UID {uid} in {:.2?} (mail handle opened in {:.2?})",
        import_time, opened
    );
    print_peak_rss("after import");

    // Read back as a stream, counting and hashing.
    let started = Instant::now();
    let email = mail.email(mailbox, uid)?;
    let mut stream = mail.read_stream(&email).await?;
    let mut read = Sha256::new();
    let (mut bytes, mut pieces, mut largest) = (0u64, 0u64, 0usize);
    while let Some(piece) = stream.next().await {
        let piece = piece?;
        read.update(&piece);
        bytes += piece.len() as u64;
        pieces += 1;
        largest = largest.max(piece.len());
    }
    let read_time = started.elapsed();
    let read = read.finalize();
    if bytes != args.size {
        return Err(format!("read {bytes} bytes, expected {}", args.size).into());
    }
    if read != generated {
        return Err(format!(
            "SHA-256 mismatch: read {}, generated {}",
            hex(&read),
            hex(&generated)
        )
        .into());
    }
    println!(
        "read: {bytes} bytes in {:.2?} ({:.0} MiB/s), {pieces} pieces of at most {} KiB; \
         SHA-256 {} matches the generator",
        read_time,
        mib_per_s(bytes, read_time),
        largest >> 10,
        hex(&read)
    );
    print_peak_rss("at the end");
    Ok(())
}
