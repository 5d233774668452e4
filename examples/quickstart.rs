//! The main job on an embedded default (a local directory): create an account, store a
//! message for it, log in, find and read the message whole and by range, and show that
//! the stored bytes are unreadable. Sealed delivery (mail arriving while the user is
//! offline) joins this flow with the delivery layer.
//!
//! ```sh
//! cargo run --release --example quickstart            # uses ./mailvault-data
//! cargo run --release --example quickstart -- /some/dir
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use futures::TryStreamExt;
use mailvault::crypto::RandomSource;
use mailvault::directory::{Directory, FileDirectory, OfficerKeyEntry};
use mailvault::engine::{Provider, ProviderConfig};
use mailvault::format::{BlobKind, BlobPin};
use mailvault::ids::DeploymentId;
use mailvault::index::Batch;
use mailvault::keys::OfficerSecret;
use mailvault::storage::open_store;
use object_store::ObjectStoreExt;

const MESSAGE: &str = "From: Bob <bob@example.org>\r\n\
To: Alice <alice@example.org>\r\n\
Subject: The quarterly numbers\r\n\
\r\n\
Hi Alice,\r\n\
the numbers are in: revenue is up 12 percent.\r\n\
Bob\r\n";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "mailvault-data".to_string()),
    );
    let rng = RandomSource::os();

    // The server's pieces: a local store (fsynced) and the trusted directory (the
    // server's own database; here small files). The security officer's key pair is made
    // once; the secret half would be kept offline.
    let store = open_store(root.join("store").to_str().expect("UTF-8 path"))?;
    let directory = Arc::new(FileDirectory::open(root.join("directory"))?);
    let officer = OfficerSecret::generate(&rng);
    directory
        .set_officer_keys(vec![OfficerKeyEntry {
            key: officer.public(),
            current: true,
        }])
        .await?;
    let provider = Provider::new(
        store.clone(),
        DeploymentId::random(&rng),
        directory,
        ProviderConfig::default(),
    )
    .await?;

    // 1. Create an account (key model 5: keys made by the server, password + officer slot).
    let alice = provider
        .create_account("correct horse battery staple")
        .await?;
    println!("created account {alice}");

    // 2. Store a message for it: the body as an encrypted blob, its pin in the encrypted index.
    {
        let session = provider
            .unlock(alice, "correct horse battery staple")
            .await?;
        let mut writer = session.blobs().writer(BlobKind::Message);
        writer.write(MESSAGE.as_bytes()).await?;
        let pin = writer.finish().await?;
        let mut inbox = session.collection(b"INBOX").await?;
        let mut batch = Batch::new();
        batch.put(&b"uid:1"[..], pin.to_bytes().to_vec());
        inbox.commit(batch).await?;
        println!(
            "stored {} bytes of mail as blob {} ({} bytes stored)",
            pin.len(),
            pin.id,
            pin.stored_len()
        );
    }

    // 3. Log in (one Argon2id derivation), find the message, read it whole and by range.
    let session = provider
        .unlock(alice, "correct horse battery staple")
        .await?;
    let inbox = session.collection(b"INBOX").await?;
    let pin = BlobPin::parse(inbox.get(b"uid:1").expect("message 1 is in INBOX"))?;
    let whole: Vec<u8> = session
        .blobs()
        .get(&pin)
        .await?
        .try_fold(Vec::new(), |mut all, piece| async move {
            all.extend_from_slice(&piece);
            Ok(all)
        })
        .await?;
    assert_eq!(whole, MESSAGE.as_bytes());
    println!(
        "logged in and read message 1 whole: {} bytes, identical",
        whole.len()
    );
    let start = MESSAGE.find("revenue").expect("marker") as u64;
    let range = session.blobs().get_range(&pin, start..start + 25).await?;
    assert_eq!(
        &range[..],
        &MESSAGE.as_bytes()[start as usize..start as usize + 25]
    );
    println!(
        "read by range {}..{}: {:?}",
        start,
        start + 25,
        String::from_utf8_lossy(&range)
    );

    // 4. What the storage operator sees: random names and unreadable bytes.
    let objects: Vec<_> = store.list(None).try_collect().await?;
    let mut scanned = 0;
    for meta in &objects {
        let bytes = store.get(&meta.location).await?.bytes().await?;
        for needle in [
            "Alice",
            "alice@example.org",
            "quarterly",
            "revenue",
            "INBOX",
            "Seen",
        ] {
            let leaked = bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
                || meta.location.as_ref().contains(needle);
            assert!(
                !leaked,
                "plaintext {needle:?} leaked into {}",
                meta.location
            );
        }
        scanned += 1;
    }
    println!("scanned {scanned} stored objects under {}: no name, address, subject or mailbox in names or bytes", root.display());
    for meta in objects.iter().take(3) {
        println!("  {}", meta.location);
    }

    // 5. A wrong password is refused, with the same derivation cost as a right one.
    match provider.unlock(alice, "Tr0ub4dor&3").await {
        Err(mailvault::Error::WrongCredential) => println!("a wrong password is refused"),
        other => panic!("a wrong password must be refused, got {other:?}"),
    }
    Ok(())
}
