//! What the storage operator sees: every object name and byte, scanned for plaintext.
//! Shared by the examples (`#[path]`-included; not an example of its own).

use futures::TryStreamExt;
use mailvault::storage::DynStore;
use object_store::ObjectStoreExt;

/// Reads every object of `store` and panics if a needle appears in a name or in the
/// bytes. Returns the object names.
pub async fn assert_unreadable(
    store: &DynStore,
    needles: &[&str],
) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let objects: Vec<_> = store.list(None).try_collect().await?;
    let mut names = Vec::with_capacity(objects.len());
    for meta in &objects {
        let bytes = store.get(&meta.location).await?.bytes().await?;
        for needle in needles {
            let leaked = bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
                || meta.location.as_ref().contains(needle);
            assert!(
                !leaked,
                "plaintext {needle:?} leaked into {}",
                meta.location
            );
        }
        names.push(meta.location.to_string());
    }
    Ok(names)
}
