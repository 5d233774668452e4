//! Layer 4: what the embedding server trusts, kept outside the object store.
//!
//! The object store is not trusted: it can withhold or replay objects. What must not be
//! rolled back lives here, in the server's own database, behind the [`Directory`] trait.
//! For now that is the **high-water marks**: for each account and each versioned record
//! (an index collection, later the keyring), the newest generation any session has seen.
//! A session refuses to load anything older ([`crate::Error::Rollback`]).
//!
//! Two implementations ship: [`MemoryDirectory`] (tests, examples) and
//! [`FileDirectory`] (one small fsynced file per mark in a local directory).

mod file;
mod memory;

use async_trait::async_trait;

pub use file::FileDirectory;
pub use memory::MemoryDirectory;

use crate::error::Result;
use crate::ids::AccountId;

/// The name of one versioned record of an account, as the directory keys it. Opaque (the
/// index derives it from a keyed hash), printable ASCII.
pub type RecordName = str;

/// Trusted state of the embedding server.
#[async_trait]
pub trait Directory: Send + Sync + std::fmt::Debug {
    /// The newest generation seen of `record` of `account` (0 if none).
    ///
    /// # Errors
    /// The directory's own storage failed.
    async fn high_water_mark(&self, account: &AccountId, record: &RecordName) -> Result<u64>;

    /// Raises the mark to `generation` if it is higher; never lowers it.
    ///
    /// # Errors
    /// The directory's own storage failed; the mark must then be treated as not raised.
    async fn raise_high_water_mark(
        &self,
        account: &AccountId,
        record: &RecordName,
        generation: u64,
    ) -> Result<()>;
}
