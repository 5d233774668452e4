//! Layer 6: the encrypted index: per-account ordered key/value collections.
//!
//! A collection is written in batches. Each commit writes one immutable, encrypted
//! **segment** (its records sealed in pages of about 32 KiB, not one AEAD call per
//! record) and one encrypted **manifest** that lists the live segments, published with
//! the commit protocol of [`crate::storage::commit`]:
//!
//! - on backends with compare-and-swap, generation N+1 is created with `PutMode::Create`;
//!   a writer that loses reloads, recomputes its batch on the new state
//!   ([`Collection::update`]) and retries with jittered backoff, so updates are
//!   linearizable;
//! - on backends without it (Garage), each writer publishes under its own name and the
//!   trusted [`Directory`] is the commit point: the commit compare-and-sets the
//!   collection's mark from (N, digest of the accepted manifest N) to (N+1, digest of its
//!   own manifest); a writer that loses deletes what it wrote, reloads and retries, so
//!   updates are linearizable there too, and readers load the one manifest the mark
//!   names. Collections written by the older scheme (heads merged by readers, the
//!   greater stamp of a key winning) still open, and their first commit pins them.
//!
//! Segments are merged in size tiers (compaction), so a collection stays a bounded,
//! logarithmic number of objects; superseded objects are deleted after a grace period
//! ([`Collection::collect_garbage`]). Every object is bound to its deployment, account,
//! collection and generation; the newest generation seen (and, without compare-and-swap,
//! the digest of the manifest accepted at it) is kept in the trusted [`Directory`], and
//! an older or withheld state is refused ([`Error::Rollback`]).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> mailvault::Result<()> {
//! use std::sync::Arc;
//! use mailvault::crypto::{AccountKey, RandomSource};
//! use mailvault::directory::MemoryDirectory;
//! use mailvault::ids::{AccountId, DeploymentId};
//! use mailvault::index::{Batch, IndexStore};
//!
//! let rng = RandomSource::os();
//! let store = mailvault::storage::open_store("memory://")?;
//! let index = IndexStore::new(store, DeploymentId::random(&rng), Arc::new(MemoryDirectory::new())).await?;
//! let key = AccountKey::generate(1, &rng);
//! let mut flags = index.open(AccountId::random(&rng), &key, b"flags").await?;
//!
//! let mut batch = Batch::new();
//! batch.put(&b"uid:1"[..], &b"\\Seen"[..]).put(&b"uid:2"[..], &b""[..]);
//! flags.commit(batch).await?;
//! assert_eq!(flags.get(b"uid:1").map(|v| &v[..]), Some(&b"\\Seen"[..]));
//! # Ok(())
//! # }
//! ```

mod collection;
mod sealed;

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;

pub(crate) use collection::{merge_live, SearchPages, Side};
pub use collection::{Change, Collection, CommitInfo, GcReport};
pub(crate) use sealed::CollectionKeys;

use crate::crypto::{AccountKey, RandomSource};
use crate::directory::Directory;
use crate::error::Result;
use crate::ids::{AccountId, DeploymentId};
use crate::storage::{probe_capabilities, CommitMode, DynStore};

/// Tuning of the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexConfig {
    /// Plaintext bytes per sealed page.
    pub page_size: usize,
    /// Segments of one size tier that trigger their merge into the next tier.
    pub fanout: usize,
    /// Commit attempts before giving up with [`crate::Error::Conflict`].
    pub max_attempts: u32,
    /// Segments fetched at once when loading.
    pub fetch_concurrency: usize,
    /// A segment larger than this is read by ranges of this many bytes, each opened as
    /// it arrives while the next is fetched, so that a large (compacted) segment's
    /// sealed bytes are never all in memory beside the records they give. At least 1.
    /// 2 MiB by default: the open of a 100 000-message account (a 66 MB segment) peaks
    /// at 123–128 MiB instead of 182 (whole) or 137 (8 MiB pieces, whose buffers the
    /// allocator keeps); see BENCHMARKS.md.
    pub fetch_piece: u64,
    /// A commit that takes longer than this, from the load of the state it builds on to
    /// the acknowledgement of its manifest, checks before it is acknowledged that what its
    /// manifest lists is still stored and still on the newest chain (a garbage collection
    /// may have run while it stalled). Garbage collection must run with a grace period at
    /// least this long for such commits to be safe ([`Collection::collect_garbage`]).
    pub verify_after: std::time::Duration,
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            page_size: 32 * 1024,
            fanout: 4,
            max_attempts: 500,
            fetch_concurrency: 8,
            fetch_piece: 2 << 20,
            verify_after: std::time::Duration::from_secs(1),
        }
    }
}

/// The encrypted index of one deployment on one object store.
#[derive(Debug, Clone)]
pub struct IndexStore {
    store: DynStore,
    deployment: DeploymentId,
    directory: Arc<dyn Directory>,
    mode: CommitMode,
    rng: RandomSource,
    config: IndexConfig,
}

impl IndexStore {
    /// The trusted directory this index commits through.
    pub(crate) fn directory(&self) -> &Arc<dyn Directory> {
        &self.directory
    }

    /// The index on `store`, with the commit mode its capability probe calls for.
    ///
    /// # Errors
    /// A backend failure during the probe.
    pub async fn new(
        store: DynStore,
        deployment: DeploymentId,
        directory: Arc<dyn Directory>,
    ) -> Result<Self> {
        let mode = CommitMode::for_capabilities(probe_capabilities(store.as_ref()).await?);
        Ok(Self::with_mode(store, deployment, directory, mode))
    }

    /// The index on `store` in a given commit mode (when the capabilities are known).
    pub fn with_mode(
        store: DynStore,
        deployment: DeploymentId,
        directory: Arc<dyn Directory>,
        mode: CommitMode,
    ) -> Self {
        Self {
            store,
            deployment,
            directory,
            mode,
            rng: RandomSource::os(),
            config: IndexConfig::default(),
        }
    }

    /// Uses `rng` for ids, nonces and backoff.
    pub fn with_rng(mut self, rng: RandomSource) -> Self {
        self.rng = rng;
        self
    }

    /// Uses `config`.
    pub fn with_config(mut self, config: IndexConfig) -> Self {
        self.config = config;
        self
    }

    /// The commit mode in use.
    pub fn mode(&self) -> CommitMode {
        self.mode
    }

    /// Opens (or creates, when empty) the collection `name` of `account`. The name never
    /// reaches the store: objects are named after a keyed hash of it.
    ///
    /// # Errors
    /// [`crate::Error::Rollback`] if the store offers an older generation than the
    /// directory has recorded; [`crate::Error::Tampered`] for objects that fail
    /// authentication; [`crate::Error::NotFound`] for a segment that a manifest lists
    /// but the store lost; [`crate::Error::Moved`] for a collection a root rotation moved
    /// under another key; backend errors.
    pub async fn open(
        &self,
        account: AccountId,
        key: &AccountKey,
        name: &[u8],
    ) -> Result<Collection> {
        let collection = Collection::open(self, account, key, name).await?;
        collection.refuse_moved()?;
        Ok(collection)
    }

    /// The keys of the collection `name` of `account` (no request): what
    /// [`open_keyed`](Self::open_keyed) takes, for a caller that opens a collection
    /// later, when the account key is no longer at hand.
    pub(crate) fn collection_keys(
        &self,
        account: AccountId,
        key: &AccountKey,
        name: &[u8],
    ) -> Arc<CollectionKeys> {
        Arc::new(CollectionKeys::new(self.deployment, account, key, name))
    }

    /// As [`open`](Self::open), with keys from [`collection_keys`](Self::collection_keys).
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub(crate) async fn open_keyed(
        &self,
        account: AccountId,
        keys: Arc<CollectionKeys>,
    ) -> Result<Collection> {
        let collection = Collection::open_keyed(self, account, keys).await?;
        collection.refuse_moved()?;
        Ok(collection)
    }
}

/// A set of changes to one collection, committed atomically. Later changes to a key in
/// the same batch replace earlier ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    ops: BTreeMap<Bytes, Option<Bytes>>,
}

impl Batch {
    /// The batch's operations as records to publish (no stamp yet; a deletion is a
    /// record without a value).
    pub(crate) fn to_records(&self) -> std::sync::Arc<Vec<crate::format::index::Record>> {
        std::sync::Arc::new(
            self.ops
                .iter()
                .map(|(key, value)| crate::format::index::Record {
                    key: key.clone(),
                    stamp: None,
                    value: value.clone(),
                })
                .collect(),
        )
    }

    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> &mut Self {
        self.ops.insert(key.into(), Some(value.into()));
        self
    }

    /// Deletes `key`.
    pub fn delete(&mut self, key: impl Into<Bytes>) -> &mut Self {
        self.ops.insert(key.into(), None);
        self
    }

    /// What the batch does to `key`: `Some(Some(value))` sets it, `Some(None)` deletes
    /// it, `None` leaves it alone.
    pub fn get(&self, key: &[u8]) -> Option<Option<&Bytes>> {
        self.ops.get(key).map(Option::as_ref)
    }

    /// Whether the batch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Number of keys changed.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// The changes, by key (`None`: deletion).
    pub fn iter(&self) -> impl Iterator<Item = (&Bytes, Option<&Bytes>)> {
        self.ops.iter().map(|(k, v)| (k, v.as_ref()))
    }

    /// The changes to keys starting with `prefix`, by key (`None`: deletion): a range of
    /// the batch, not a scan of it.
    pub fn prefix<'a>(
        &'a self,
        prefix: &'a [u8],
    ) -> impl Iterator<Item = (&'a Bytes, Option<&'a Bytes>)> + 'a {
        self.ops
            .range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k, v.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_prefix_is_the_range_of_keys_with_the_prefix() {
        let mut batch = Batch::new();
        batch.put(&b"a\xff"[..], &b"1"[..]);
        batch.put(&b"ab"[..], &b"2"[..]);
        batch.delete(&b"abc"[..]);
        batch.put(&b"ab\xff\xff"[..], &b"3"[..]);
        batch.put(&b"ac"[..], &b"4"[..]);
        batch.put(&b"b"[..], &b"5"[..]);
        let got: Vec<(&[u8], Option<&[u8]>)> = batch
            .prefix(b"ab")
            .map(|(k, v)| (k.as_ref(), v.map(|v| v.as_ref())))
            .collect();
        assert_eq!(
            got,
            vec![
                (&b"ab"[..], Some(&b"2"[..])),
                (&b"abc"[..], None),
                (&b"ab\xff\xff"[..], Some(&b"3"[..])),
            ]
        );
        assert_eq!(batch.prefix(b"").count(), batch.len());
        assert_eq!(batch.prefix(b"z").count(), 0);
    }
}
