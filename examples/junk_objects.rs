//! A hostile store against a shared server process: a 2 GiB junk object is put at each
//! kind of path a session reads (a pending envelope, a message body behind its pin, an
//! index segment, an index manifest, a keyring) of a store in a local directory, and each
//! is refused with a typed error before its bytes are read. Run it under
//! `/usr/bin/time -v` to see the peak resident set size stay small (the suite's
//! `hardening_storage::item_10_junk_objects_are_refused_in_bounded_memory` does, and
//! requires under 64 MiB).
//!
//! ```sh
//! cargo run --release --example junk_objects                 # in a temporary directory
//! cargo run --release --example junk_objects -- /some/empty/dir
//! ```
//!
//! The junk files are sparse: creating them costs no disk space and no time.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mailvault::crypto::RandomSource;
use mailvault::delivery::{DeliveryOptions, DeliverySigningKey, Rejection};
use mailvault::directory::{Directory, MemoryDirectory, OfficerKeyEntry};
use mailvault::engine::{Provider, ProviderConfig};
use mailvault::format::slot::KdfParams;
use mailvault::ids::DeploymentId;
use mailvault::keys::OfficerSecret;
use mailvault::mail::INBOX;
use mailvault::storage::open_store;
use mailvault::Error;

/// Size of each junk object.
pub const JUNK_LEN: u64 = 2 << 30;

/// Replaces the file of every object whose path (relative to `store`) satisfies `pick`
/// with a sparse file of [`JUNK_LEN`] bytes. Returns how many were replaced.
fn plant_junk(store: &Path, pick: &dyn Fn(&str) -> bool) -> std::io::Result<usize> {
    let mut replaced = 0;
    let mut stack = vec![store.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let relative = path
                .strip_prefix(store)
                .expect("under the store")
                .to_string_lossy()
                .replace(std::path::MAIN_SEPARATOR, "/");
            if pick(&relative) {
                let file = std::fs::File::create(&path)?;
                file.set_len(JUNK_LEN)?;
                replaced += 1;
            }
        }
    }
    Ok(replaced)
}

/// The newest version file under `<store>/<prefix>` (version names sort by generation).
fn newest_under(store: &Path, prefix: &str) -> std::io::Result<String> {
    let mut names: Vec<String> = std::fs::read_dir(store.join(prefix))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.') && !n.contains('#'))
        .collect();
    names.sort();
    Ok(format!("{prefix}/{}", names.pop().expect("a version")))
}

fn refused<T>(what: &str, result: mailvault::Result<T>, expected: fn(&Error) -> bool) -> bool {
    match result {
        Err(e) if expected(&e) => {
            println!("{what}: refused ({e})");
            true
        }
        Err(e) => {
            println!("{what}: UNEXPECTED error {e:?}");
            false
        }
        Ok(_) => {
            println!("{what}: UNEXPECTEDLY accepted");
            false
        }
    }
}

/// Builds an account with an imported message and a pending delivery in `root`, plants a
/// junk object at each kind of path and checks that each is refused with a typed error.
/// Returns whether every junk object was refused.
///
/// # Errors
/// A failure of the set-up (before any junk is planted), or of the local disk.
pub async fn run(root: &Path) -> Result<bool, Box<dyn std::error::Error>> {
    let rng = RandomSource::os();
    let store_dir = root.join("store");
    std::fs::create_dir_all(&store_dir)?;
    let store = open_store(store_dir.to_str().expect("UTF-8 path"))?;
    let directory = Arc::new(MemoryDirectory::new());
    let officer = OfficerSecret::generate(&rng);
    let signing = DeliverySigningKey::generate(&rng);
    directory.set_delivery_key(signing.verifying_key()).await?;
    directory
        .set_officer_keys(vec![OfficerKeyEntry {
            key: officer.public(),
            current: true,
        }])
        .await?;
    // Cheap password costs: the point is the memory of reads, not of Argon2id.
    let config = ProviderConfig {
        kdf: KdfParams {
            m_kib: 1024,
            t: 1,
            p: 1,
        },
        ..ProviderConfig::default()
    };
    let provider = Provider::new(store, DeploymentId::random(&rng), directory, config).await?;
    let account = provider.create_account("password").await?;
    let deliverer = provider.deliverer(signing);
    let message = b"Subject: hello\r\n\r\nA small message.\r\n";
    let options = || DeliveryOptions {
        mailbox: INBOX.into(),
        ..DeliveryOptions::default()
    };
    deliverer.deliver_bytes(account, message, options()).await?;
    let mut session = provider.unlock(account, "password").await?;
    let mut mail = session.mailstore().await?;
    session.import_deliveries(&mut mail).await?;
    let inbox = mail.mailbox_by_name(INBOX).expect("INBOX").id;
    let email = mail.email(inbox, 1)?;
    // A second delivery stays pending: its envelope is the first junk target.
    let pending = deliverer
        .deliver_bytes(account, message, options())
        .await?
        .delivery;

    let account_dir = format!("a/{}", account.to_hex());
    let mut all = true;

    // 1. A pending envelope.
    let n = plant_junk(&store_dir, &|p| p.starts_with(&format!("{account_dir}/d/")))?;
    assert_eq!(n, 1, "one pending envelope");
    let report = session.import_deliveries(&mut mail).await?;
    let quarantined = report
        .quarantined
        .iter()
        .any(|(id, why)| *id == pending && *why == Rejection::Malformed);
    println!(
        "envelope: {} (quarantined: {:?})",
        if quarantined { "refused" } else { "UNEXPECTED" },
        report.quarantined
    );
    all &= quarantined && report.imported.is_empty();

    // 2. The body behind a pin (read whole, and streamed).
    let body = format!("{account_dir}/b/{}", email.pin.id.to_hex());
    plant_junk(&store_dir, &|p| p == body)?;
    all &= refused("pin target (whole read)", mail.read(&email).await, |e| {
        matches!(e, Error::Tampered)
    });
    all &= refused(
        "pin target (stream)",
        mail.read_stream(&email).await.map(|_| ()),
        |e| matches!(e, Error::Tampered),
    );
    drop(mail);

    // 3. Index segments (their manifest pins their length).
    let n = plant_junk(&store_dir, &|p| {
        p.starts_with(&format!("{account_dir}/i/")) && p.contains("/s/")
    })?;
    assert!(n > 0, "segments");
    all &= refused("segment", session.mailstore().await.map(|_| ()), |e| {
        matches!(e, Error::Tampered)
    });

    // 4. The newest index manifest.
    let collections: Vec<String> = std::fs::read_dir(store_dir.join(&account_dir).join("i"))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    for tag in &collections {
        let manifest = newest_under(&store_dir, &format!("{account_dir}/i/{tag}/m"))?;
        plant_junk(&store_dir, &|p| p == manifest)?;
    }
    all &= refused("manifest", session.mailstore().await.map(|_| ()), |e| {
        matches!(e, Error::TooLarge { .. })
    });

    // 5. The newest keyring.
    let keyring = newest_under(&store_dir, &format!("{account_dir}/k"))?;
    plant_junk(&store_dir, &|p| p == keyring)?;
    all &= refused(
        "keyring",
        provider.unlock(account, "password").await.map(|_| ()),
        |e| matches!(e, Error::TooLarge { .. }),
    );
    Ok(all)
}

/// Peak resident set size of this process so far, in KiB (Linux), if known.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[allow(dead_code)] // The suite includes this file for `run` only.
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let temporary;
    let root: PathBuf = match std::env::args().nth(1) {
        Some(dir) => PathBuf::from(dir),
        None => {
            temporary = tempfile::tempdir()?;
            temporary.path().to_path_buf()
        }
    };
    let all = run(&root).await?;
    if let Some(kib) = peak_rss_kib() {
        println!("peak resident set size: {} KiB", kib);
    }
    if !all {
        eprintln!("some junk object was not refused");
        std::process::exit(1);
    }
    Ok(())
}
