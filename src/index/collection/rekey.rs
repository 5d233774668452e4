//! Re-keying a collection: its records moved, stamps and generation kept, to the
//! collection of the same name under another key (the index side of a root rotation,
//! `docs/design.md` §10.5).

use futures::TryStreamExt;
use object_store::ObjectStoreExt;

use super::Collection;
use crate::crypto::AccountKey;
use crate::error::{Error, Result};
use crate::format::index::{SegmentEntry, SegmentKind};
use crate::ids::AccountId;
use crate::index::sealed::CollectionKeys;
use crate::index::CommitInfo;
use crate::index::IndexStore;
use crate::storage::commit::Backoff;
use crate::storage::naming;

impl Collection {
    /// Makes this collection hold exactly the view of `source` (the same collection under
    /// the previous key): every record and deletion with its stamp, in one compacted
    /// segment that covers whatever this collection held, published at a generation no
    /// lower than `source`'s, so that modseqs and `changes_since` carry on where the
    /// source left them. After a copy the source is looked at again, and copied again
    /// if a writer still holding the previous key committed to it meanwhile.
    /// Idempotent: a collection that already holds the source's view at its generation
    /// or above commits nothing, so a killed re-keying run can simply run again.
    ///
    /// # Errors
    /// As [`commit`](Self::commit) and [`refresh`](Self::refresh) of either collection.
    pub async fn copy_from(&mut self, source: &mut Collection) -> Result<CommitInfo> {
        let mut backoff = Backoff::new(self.config.max_attempts);
        let mut attempts = 0;
        let mut committed = false;
        loop {
            attempts += 1;
            source.refresh().await?;
            let records = source.view_records(false);
            let purged_through = source.purged_through;
            self.refresh().await?;
            if self.generation >= source.generation && self.view_records(false) == records {
                return Ok(CommitInfo {
                    generation: self.generation,
                    committed,
                    attempts,
                    merged_heads: 0,
                });
            }
            let covers = self.live.iter().map(|e| e.id).collect();
            let current = self.generation;
            // The copy's generation: at least the source's, above this collection's.
            self.generation = source.generation.max(current + 1) - 1;
            let mut segments: Vec<SegmentEntry> = Vec::new();
            let published = self
                .publish(
                    SegmentKind::Compacted,
                    &records,
                    covers,
                    &mut segments,
                    purged_through,
                )
                .await;
            match published {
                Ok(Some(stamp)) => {
                    self.view.clear();
                    self.loaded.clear();
                    self.present = 0;
                    self.after_publish(stamp, segments, purged_through);
                    let live = self.live.clone();
                    self.install(vec![stamp], live, purged_through).await?;
                    self.raise_mark().await?;
                    committed = true;
                    if attempts >= self.config.max_attempts {
                        // A writer with the previous key keeps committing to the source.
                        return Err(Error::Conflict {
                            path: format!(
                                "collection {} still written under its old key",
                                self.tag
                            ),
                        });
                    }
                }
                Ok(None) => {
                    self.generation = current;
                    backoff.wait(&self.rng, &self.next_manifest_path()).await?;
                }
                Err(e) => {
                    self.generation = current;
                    return Err(e);
                }
            }
        }
    }
}

impl IndexStore {
    /// Deletes every object of the collection `name` of `account` under `key`,
    /// manifests first (a handle still open on it then fails to refresh instead of
    /// reading a half-deleted collection), then segments, without opening it: what a
    /// root rotation does to the collection under the previous key once it is copied.
    /// Returns the objects deleted.
    ///
    /// # Errors
    /// Backend failures (what was deleted stays deleted; run it again).
    pub async fn delete_collection(
        &self,
        account: AccountId,
        key: &AccountKey,
        name: &[u8],
    ) -> Result<usize> {
        let tag = CollectionKeys::new(self.deployment, account, key, name).tag_hex();
        let prefix = naming::collection_prefix(&account, &tag);
        let mut paths: Vec<object_store::path::Path> = self
            .store
            .list(Some(&prefix))
            .map_ok(|m| m.location)
            .try_collect()
            .await?;
        paths.sort_by_key(|p| !p.as_ref().contains("/m/"));
        for path in &paths {
            match self.store.delete(path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(paths.len())
    }
}
