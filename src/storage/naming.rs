//! Object names. Every name the crate writes is made here, from random ids only: no login
//! name, mailbox name, timestamp or content hash ever appears in a name.
//!
//! ```text
//! a/<account id hex>/b/<blob id hex>     blobs
//! _probe/<random hex>                    capability probe scratch objects (deleted after)
//! ```

use object_store::path::Path;

use crate::ids::{AccountId, BlobId};

/// The prefix holding everything of one account.
pub fn account_prefix(account: &AccountId) -> Path {
    Path::from(format!("a/{}", account.to_hex()))
}

/// The object holding one blob.
pub fn blob_path(account: &AccountId, blob: &BlobId) -> Path {
    Path::from(format!("a/{}/b/{}", account.to_hex(), blob.to_hex()))
}

/// A scratch object of the capability probe.
pub fn probe_path(random: &BlobId) -> Path {
    Path::from(format!("_probe/{}", random.to_hex()))
}
