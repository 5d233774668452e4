//! Streams a big blob through a local directory store and back, in bounded memory.
//!
//! Writes `--size-mib N` MiB (default 1024) of generated plaintext through
//! `AccountBlobs::writer` in 256 KiB pieces, into a fresh local directory store (fsync
//! on), then reads it back with `AccountBlobs::get` as a stream, checking every byte
//! against the generator. Nothing the size of the blob is ever held in memory: run it
//! under `/usr/bin/time -v` to see the peak resident set size stay flat.
//!
//! ```text
//! cargo run --release --example stream_big -- --size-mib 1024 [--dir /some/dir]
//! ```
//!
//! Without `--dir` the store lives in a temporary directory that is removed at the end.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mailvault::blob::BlobStore;
use mailvault::crypto::{AccountKey, RandomSource};
use mailvault::format::BlobKind;
use mailvault::ids::{AccountId, DeploymentId};

/// Size of each `write` call.
const PIECE: usize = 256 << 10;

/// The plaintext byte at `offset`: a mixed 64-bit counter, 8 bytes per word, so that any
/// slice can be regenerated from its offset alone.
fn fill(offset: u64, buf: &mut [u8]) {
    let word = |k: u64| {
        k.wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29)
            .to_le_bytes()
    };
    let mut pos = offset;
    let mut i = 0;
    while i < buf.len() {
        let w = word(pos / 8);
        let from = (pos % 8) as usize;
        let take = (8 - from).min(buf.len() - i);
        buf[i..i + take].copy_from_slice(&w[from..from + take]);
        i += take;
        pos += take as u64;
    }
}

struct Args {
    size: u64,
    dir: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        size: 1024 << 20,
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
            "--dir" => args.dir = Some(it.next().ok_or("--dir needs a value")?.into()),
            "-h" | "--help" => {
                return Err("usage: stream_big [--size-mib N] [--dir DIR]".into());
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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let temp = match &args.dir {
        Some(_) => None,
        None => Some(tempfile::tempdir()?),
    };
    let root = args
        .dir
        .clone()
        .unwrap_or_else(|| temp.as_ref().expect("a temporary directory").path().into());
    let root_str = root.to_str().ok_or("the store directory must be UTF-8")?;

    let rng = RandomSource::os();
    let store = mailvault::storage::open_store(root_str)?;
    let blobs = BlobStore::new(store, DeploymentId::random(&rng));
    let account = blobs.account(AccountId::random(&rng), &AccountKey::generate(1, &rng));

    println!(
        "store: {} (local directory, fsync on)\nplaintext: {} bytes ({} MiB), written in {} KiB pieces",
        root.display(),
        args.size,
        args.size >> 20,
        PIECE >> 10
    );

    // Write.
    let started = Instant::now();
    let mut writer = account.writer(BlobKind::Attachment);
    let mut piece = vec![0u8; PIECE];
    let mut written = 0u64;
    while written < args.size {
        let len = PIECE.min((args.size - written) as usize);
        fill(written, &mut piece[..len]);
        writer.write(&piece[..len]).await?;
        written += len as u64;
    }
    let pin = writer.finish().await?;
    let write_time = started.elapsed();
    assert_eq!(pin.len(), args.size);
    println!(
        "write: {} bytes stored for {} of plaintext in {:.2?} ({:.0} MiB/s)",
        pin.stored_len(),
        pin.len(),
        write_time,
        mib_per_s(pin.len(), write_time)
    );
    if let Some(kib) = peak_rss_kib() {
        println!("peak RSS after write: {} KiB", kib);
    }

    // Read back as a stream, checking every byte.
    let started = Instant::now();
    let mut stream = account.get(&pin).await?;
    let mut expected = Vec::new();
    let mut read = 0u64;
    let mut pieces = 0u64;
    let mut largest = 0usize;
    while let Some(got) = stream.next().await {
        let got = got?;
        expected.resize(got.len(), 0);
        fill(read, &mut expected);
        if got[..] != expected[..] {
            let at = got
                .iter()
                .zip(&expected)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            return Err(format!("mismatch at plaintext byte {}", read + at as u64).into());
        }
        read += got.len() as u64;
        pieces += 1;
        largest = largest.max(got.len());
    }
    let read_time = started.elapsed();
    if read != args.size {
        return Err(format!("read {read} bytes, expected {}", args.size).into());
    }
    println!(
        "read: {} bytes verified in {:.2?} ({:.0} MiB/s), {} pieces of at most {} KiB",
        read,
        read_time,
        mib_per_s(read, read_time),
        pieces,
        largest >> 10
    );
    if let Some(kib) = peak_rss_kib() {
        println!("peak RSS: {} KiB", kib);
    }
    Ok(())
}
