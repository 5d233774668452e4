//! Object names. Every name the crate writes is made here, from random ids only: no login
//! name, mailbox name, timestamp or content hash ever appears in a name.
//!
//! ```text
//! a/<account id hex>/b/<blob id hex>                 blobs
//! a/<account id hex>/i/<collection tag>/m/<version>  index manifests (see `storage::commit`)
//! a/<account id hex>/i/<collection tag>/s/<seg hex>  index segments
//! a/<account id hex>/k/<version>                     keyrings (see `storage::commit`)
//! a/<account id hex>/d/<delivery id hex>             pending deliveries (envelopes)
//! _probe/<random hex>                    capability probe scratch objects (deleted after)
//! ```

use object_store::path::Path;

use crate::ids::{AccountId, BlobId, DeliveryId, SegmentId};

/// The prefix holding everything of one account.
pub fn account_prefix(account: &AccountId) -> Path {
    Path::from(format!("a/{}", account.to_hex()))
}

/// The object holding one blob.
pub fn blob_path(account: &AccountId, blob: &BlobId) -> Path {
    Path::from(format!("a/{}/b/{}", account.to_hex(), blob.to_hex()))
}

/// The prefix of an account's pending deliveries.
pub fn delivery_prefix(account: &AccountId) -> Path {
    Path::from(format!("a/{}/d", account.to_hex()))
}

/// The envelope of one pending delivery.
pub fn delivery_path(account: &AccountId, delivery: &DeliveryId) -> Path {
    Path::from(format!("a/{}/d/{}", account.to_hex(), delivery.to_hex()))
}

/// A scratch object of the capability probe.
pub fn probe_path(random: &BlobId) -> Path {
    Path::from(format!("_probe/{}", random.to_hex()))
}

/// The prefix of one index collection; `tag` is the collection's keyed-hash tag in hex.
pub fn collection_prefix(account: &AccountId, tag: &str) -> Path {
    Path::from(format!("a/{}/i/{tag}", account.to_hex()))
}

/// The prefix under which a collection's manifests are versioned.
pub fn manifest_prefix(account: &AccountId, tag: &str) -> Path {
    Path::from(format!("a/{}/i/{tag}/m", account.to_hex()))
}

/// The object holding one index segment.
pub fn segment_path(account: &AccountId, tag: &str, segment: &SegmentId) -> Path {
    Path::from(format!(
        "a/{}/i/{tag}/s/{}",
        account.to_hex(),
        segment.to_hex()
    ))
}

/// The prefix under which an account's keyring is versioned.
pub fn keyring_prefix(account: &AccountId) -> Path {
    Path::from(format!("a/{}/k", account.to_hex()))
}
