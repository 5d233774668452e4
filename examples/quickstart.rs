//! The main job on an embedded default: store a message body encrypted in a local
//! directory, show that the stored bytes are unreadable, and read it back whole and by
//! range.
//!
//! ```sh
//! cargo run --release --example quickstart            # uses ./mailvault-data
//! cargo run --release --example quickstart -- /some/dir
//! ```

use futures::TryStreamExt;
use mailvault::blob::BlobStore;
use mailvault::crypto::{AccountKey, RandomSource};
use mailvault::format::BlobKind;
use mailvault::ids::{AccountId, DeploymentId};
use mailvault::storage::{naming, open_store};
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
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "mailvault-data".to_string());
    let rng = RandomSource::os();

    // A local directory store: every write is fsynced before it is acknowledged.
    let store = open_store(&dir)?;
    let deployment = DeploymentId::random(&rng);
    let blobs = BlobStore::new(store.clone(), deployment);

    // One account with a fresh key (keyrings and password slots come with the `keys` layer).
    let account = AccountId::random(&rng);
    let key = AccountKey::generate(1, &rng);
    let alice = blobs.account(account, &key);

    // Store the body, streamed in two pieces. Keep the pin: it is how the blob is read back.
    let mut writer = alice.writer(BlobKind::Message);
    let (head, body) = MESSAGE.split_at(MESSAGE.find("\r\n\r\n").unwrap() + 4);
    writer.write(head.as_bytes()).await?;
    writer.write(body.as_bytes()).await?;
    let pin = writer.finish().await?;
    println!(
        "stored {} bytes of mail as blob {} ({} bytes on disk)",
        pin.len(),
        pin.id,
        pin.stored_len()
    );

    // What the storage operator sees: a random name and unreadable bytes.
    let path = naming::blob_path(&account, &pin.id);
    let stored = store.get(&path).await?.bytes().await?;
    println!("object name: {dir}/{path}");
    println!("stored bytes (first 64): {}", hex(&stored[..64]));
    for needle in ["Alice", "alice@example.org", "quarterly", "revenue"] {
        let found = stored.windows(needle.len()).any(|w| w == needle.as_bytes());
        assert!(!found, "plaintext {needle:?} leaked into storage");
        println!("  {needle:>18}: not in the stored bytes");
    }

    // Read it back whole (a stream of authenticated pieces)...
    let whole: Vec<u8> = alice
        .get(&pin)
        .await?
        .try_fold(Vec::new(), |mut all, piece| async move {
            all.extend_from_slice(&piece);
            Ok(all)
        })
        .await?;
    assert_eq!(whole, MESSAGE.as_bytes());
    println!("read back whole: {} bytes, identical", whole.len());

    // ...and by range: one ranged GET over the chunk that holds it.
    let start = MESSAGE.find("revenue").unwrap() as u64;
    let range = alice.get_range(&pin, start..start + 25).await?;
    println!(
        "read by range {}..{}: {:?}",
        start,
        start + 25,
        String::from_utf8_lossy(&range)
    );
    assert_eq!(
        &range[..],
        &MESSAGE.as_bytes()[start as usize..start as usize + 25]
    );

    // A wrong key cannot read it, and says so without detail.
    let mallory = blobs.account(account, &AccountKey::generate(1, &rng));
    match mallory.read(&pin).await {
        Err(mailvault::Error::Tampered) => {
            println!("a different key is refused: stored data failed authentication")
        }
        other => panic!("a different key must be refused, got {other:?}"),
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
