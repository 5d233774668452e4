//! Re-keying a collection: its records moved, stamps and generation kept, to the
//! collection of the same name under another key (the index side of a root rotation,
//! `docs/design.md` §10.5).

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::ObjectStoreExt;

use super::Collection;
use crate::crypto::AccountKey;
use crate::error::{Error, Result};
use crate::format::index::{SegmentEntry, SegmentKind, Stamp};
use crate::ids::AccountId;
use crate::index::sealed::CollectionKeys;
use crate::index::Batch;
use crate::index::CommitInfo;
use crate::index::IndexStore;
use crate::storage::commit::{Backoff, VersionName};
use crate::storage::{naming, CommitMode};

/// The reserved record key of the moved marker: committed to a collection by the root
/// rotation that moves it, through the ordinary commit protocol, before its final copy.
/// Every commit on a state holding it fails with [`Error::Moved`], so every commit
/// acknowledged before it is in the final copy and none is acknowledged after it.
/// Callers cannot commit it (`InvalidArgument`); it is never copied.
pub(super) const MOVED: &[u8] = b"\x00mailvault/v1/moved";

impl Collection {
    /// Whether a root rotation closed this collection (the loaded state holds the moved
    /// marker).
    pub(crate) fn moved(&self) -> bool {
        self.get(MOVED).is_some()
    }

    /// [`Error::Moved`] when the loaded state holds the moved marker.
    pub(crate) fn refuse_moved(&self) -> Result<()> {
        if self.moved() {
            return Err(Error::Moved);
        }
        Ok(())
    }

    /// Whether concurrent commits are merged as heads instead of ordered (a collection
    /// of the older scheme without compare-and-swap, whose mark names no manifest): a
    /// commit there may stand beside the moved marker instead of before or after it, and
    /// looks again once published. Through the directory's compare-and-set, or with
    /// compare-and-swap, commits are ordered.
    pub(super) fn heads_merged(&self) -> bool {
        !self.linear()
    }

    /// Moves `source` (the same collection under the previous key) here: this collection
    /// is made to hold exactly the source's view (every record and deletion with its
    /// stamp, in one compacted segment that covers whatever this collection held,
    /// published at a generation no lower than the source's, so that modseqs and
    /// `changes_since` carry on where the source left them); then the source is closed
    /// by committing the moved marker to it ([`MOVED`]: from then on its writers and
    /// readers get [`Error::Moved`]); then its final state (every commit acknowledged
    /// before the marker) is copied again. Deleting the source afterwards loses no
    /// acknowledged write. Idempotent: a collection that already holds the source's view
    /// at its generation or above commits nothing, a closed source is not closed again,
    /// and once the final copy is made (the source closed, this collection at its
    /// generation or above) nothing is copied again, so a killed re-keying run can simply
    /// run again without replacing what was written here since the final copy.
    ///
    /// # Errors
    /// As [`commit`](Self::commit) and [`refresh`](Self::refresh) of either collection.
    pub async fn copy_from(&mut self, source: &mut Collection) -> Result<CommitInfo> {
        // First copy: the collection exists under the new key before the source closes,
        // so sessions of the new keyring open it here from then on.
        self.copy_view(source).await?;
        source.update_or_close(|_| closing_batch(), true).await?;
        self.copy_view(source).await
    }

    /// Makes this collection hold exactly the view of `source` (the moved marker left
    /// out), looking at the source again after each copy and copying again if a writer
    /// still holding the previous key committed to it meanwhile.
    async fn copy_view(&mut self, source: &mut Collection) -> Result<CommitInfo> {
        let mut backoff = Backoff::new(self.config.max_attempts);
        let mut attempts = 0;
        let mut committed = false;
        loop {
            attempts += 1;
            source.load_newer().await?;
            let mut records = source.view_records(false).await;
            records.retain(|r| r.key.as_ref() != MOVED);
            let records = Arc::new(records);
            let purged_through = source.purged_through;
            let searched: Vec<SegmentEntry> = source.search_segments().cloned().collect();
            self.refresh().await?;
            // A closed source's final copy is published at its generation or above (the
            // first copy lies below the close): this collection holds it already, and
            // whatever differs was written here since and is kept.
            let final_copy_made = source.moved() && self.generation >= source.generation;
            // The source's search segments (its text index, or its email details) are
            // here when this collection lists each (in any order: a copy lists those an
            // earlier copy brought before those it brings, by stamp, whatever the
            // source's order; no reader depends on it, an email's text being the same in
            // every segment) and each is still stored (garbage collection removes an
            // unlisted segment older than its grace period: a copy whose manifest was
            // published longer than that after the copy was stored may be gone).
            let pages = self.search_pages();
            let mut here: Vec<SegmentEntry> = Vec::new();
            for entry in self.search_segments() {
                if searched.iter().any(|e| e.id == entry.id) && pages.exists(&entry.id).await? {
                    here.push(entry.clone());
                }
            }
            let same_search =
                here.len() == searched.len() && self.search_segments().count() == here.len();
            if final_copy_made
                || self.generation >= source.generation
                    && same_search
                    && self.view_records(false).await == *records
            {
                return Ok(CommitInfo {
                    generation: self.generation,
                    committed,
                    attempts,
                    merged_heads: 0,
                });
            }
            // Those not here come along, sealed again under this collection's keys with
            // their ids (one lost since it was listed is stored again under its id: the
            // same texts, pages that authenticate for any reader of it).
            let from = source.search_pages();
            let mut segments = here;
            let kept = segments.len();
            for entry in &searched {
                if !segments[..kept].iter().any(|e| e.id == entry.id) {
                    segments.push(pages.copy_from(&from, entry, entry.id).await?);
                }
            }
            let covers = self
                .live
                .iter()
                .filter(|e| !segments.iter().any(|k| k.id == e.id))
                .map(|e| e.id)
                .collect();
            let current = self.generation;
            // The copy's generation: at least the source's, above this collection's.
            self.generation = source.generation.max(current + 1) - 1;
            let published = self
                .publish_adding(
                    SegmentKind::Compacted,
                    records,
                    covers,
                    &mut segments,
                    kept,
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

impl Collection {
    /// Deletes every object of this collection, closed by [`copy_from`](Self::copy_from),
    /// but the moved marker's manifest and its segment, manifests first. Those two stay
    /// as a tombstone: a writer that stalled from before the marker until after this
    /// deletion then publishes beside the marker (it loses the generation, or merges the
    /// marker as a head) instead of into an empty collection, and gets an error instead
    /// of an acknowledgement. Returns the objects deleted.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a collection not closed; backend failures (what was
    /// deleted stays deleted; run it again).
    pub(crate) async fn delete_moved(&self) -> Result<usize> {
        let Some(marker) = self.view.get(MOVED) else {
            return Err(Error::invalid("the collection is not closed"));
        };
        let stamp = Stamp {
            generation: marker.generation(),
            writer: self.writers[marker.writer() as usize],
        };
        let manifest = self.objects.path(&VersionName {
            generation: stamp.generation,
            writer: (self.objects.mode() == CommitMode::WriterUnique).then_some(stamp.writer),
        });
        let mut keep = vec![manifest];
        keep.extend(
            self.live
                .iter()
                .filter(|e| e.stamp == stamp)
                .map(|e| naming::segment_path(&self.account, &self.tag, &e.id)),
        );
        let prefix = naming::collection_prefix(&self.account, &self.tag);
        let mut paths: Vec<object_store::path::Path> = self
            .store
            .list(Some(&prefix))
            .map_ok(|m| m.location)
            .try_collect()
            .await?;
        paths.retain(|p| !keep.contains(p));
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

/// The batch that closes a collection: the moved marker.
fn closing_batch() -> Batch {
    let mut batch = Batch::new();
    batch.put(MOVED, &b""[..]);
    batch
}

/// Which of a collection's two places to use while a root rotation moves it
/// ([`IndexStore::rotating_side`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// Under the previous root's key: not copied whole under the new key yet.
    Old,
    /// Under the new root's key.
    New,
}

impl IndexStore {
    /// While a root rotation is under way, where the collection of `old` (its keys under
    /// the previous root) and `new` (under the new root) is to be used.
    ///
    /// The rotation copies a collection twice ([`Collection::copy_from`]): a first copy
    /// while the old collection stays open, then, once it is closed, the final one. Only
    /// the final copy is complete: the first lacks what was written since, and what is
    /// written to it the final copy replaces. So the copy is used only once the old
    /// collection is closed and the copy's generation reached the closed one's (the
    /// final copy publishes at the source's generation or above; the first copy's is
    /// below the close), or once the old collection is deleted; while the old one is
    /// open, it is used (what is written there the final copy carries over). When the
    /// old collection is closed and its final copy not made yet (the rotation killed
    /// between the two, or still running), the final copy is made here, as a resumed run
    /// of the rotation would make it, and the copy is used.
    ///
    /// # Errors
    /// As [`Collection::copy_from`] when making the final copy; a concurrent run of the
    /// rotation making it first is not an error.
    pub(crate) async fn rotating_side(
        &self,
        account: AccountId,
        old: Arc<CollectionKeys>,
        new: Arc<CollectionKeys>,
    ) -> Result<Side> {
        let mut copy = self.open_keyed(account, new).await?;
        let fresh = copy.generation() == 0;
        match Collection::open_keyed(self, account, old).await {
            // Open: used until it is closed.
            Ok(source) if !source.moved() => Ok(Side::Old),
            // Nothing under the new key, and the old collection unreadable: its open
            // reports why.
            Err(Error::NotFound { .. } | Error::Rollback { .. }) if fresh => Ok(Side::Old),
            Ok(source) if copy.generation() >= source.generation() => Ok(Side::New),
            // Closed by a rotation that has not made its final copy (killed, or still
            // running): made here, as any run of the rotation makes it (idempotent).
            // Also when nothing is under the new key yet: the first copy of a collection
            // that held nothing commits nothing, and a closed one is not opened again.
            Ok(mut source) => {
                copy.copy_from(&mut source).await?;
                Ok(Side::New)
            }
            // Deleted after its final copy (its tombstone left).
            Err(Error::NotFound { .. } | Error::Rollback { .. }) => Ok(Side::New),
            Err(e) => Err(e),
        }
    }

    /// [`open`](Self::open), a collection closed by a root rotation included: what the
    /// rotation moving it (and a run resuming it) reads.
    ///
    /// # Errors
    /// As [`open`](Self::open), without [`Error::Moved`].
    pub(crate) async fn open_to_move(
        &self,
        account: AccountId,
        key: &AccountKey,
        name: &[u8],
    ) -> Result<Collection> {
        Collection::open(self, account, key, name).await
    }

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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use object_store::memory::InMemory;

    use crate::crypto::{AccountKey, RandomSource};
    use crate::directory::MemoryDirectory;
    use crate::ids::{AccountId, DeploymentId};
    use crate::index::{Batch, IndexConfig, IndexStore};
    use crate::storage::{CommitMode, DynStore};

    /// A copy is published at its source's generation, above the collection's own (so
    /// that modseqs carry on): with compare-and-swap that leaves generations no manifest
    /// holds. A handle opened on the collection before the copy (here empty, as another
    /// session re-keying the same rotation holds it) sees the copy on its next refresh,
    /// and its own run of the same copy ends at once: before, it probed the generation
    /// above its own, found nothing, and lost every publish to the copy until its
    /// attempts ran out (500, ~50 s of backoff: a slot removal racing another session's
    /// re-keying took that long with compare-and-swap).
    #[tokio::test]
    async fn a_handle_opened_before_a_copy_sees_it() {
        for mode in [CommitMode::CompareAndSwap, CommitMode::WriterUnique] {
            let rng = RandomSource::os();
            let store: DynStore = Arc::new(InMemory::new());
            let index = IndexStore::with_mode(
                store,
                DeploymentId::random(&rng),
                Arc::new(MemoryDirectory::new()),
                mode,
            )
            // Without the fix the racer's copy lost every attempt: fail in a second.
            .with_config(IndexConfig {
                max_attempts: 20,
                ..IndexConfig::default()
            });
            let account = AccountId::random(&rng);
            let (old, new) = (AccountKey::generate(1, &rng), AccountKey::generate(2, &rng));
            let mut writer = index.open(account, &old, b"mail").await.unwrap();
            for i in 0..3u8 {
                let mut batch = Batch::new();
                batch.put(vec![b'k', i], vec![i]);
                writer.commit(batch).await.unwrap();
            }
            let mut early = index.open(account, &new, b"mail").await.unwrap();
            let mut racer = index.open(account, &new, b"mail").await.unwrap();
            assert_eq!((early.generation(), racer.generation()), (0, 0));
            let mut target = index.open(account, &new, b"mail").await.unwrap();
            let mut source = index.open_to_move(account, &old, b"mail").await.unwrap();
            target.copy_from(&mut source).await.unwrap();
            assert!(
                target.generation() >= 3,
                "{mode:?}: {}",
                target.generation()
            );

            early.refresh().await.unwrap();
            assert_eq!(early.generation(), target.generation(), "{mode:?}");
            assert_eq!(early.get(b"k\x02"), Some(&[2u8][..]), "{mode:?}");
            // The same copy run again from a handle opened before it: nothing to do.
            let mut again = index.open_to_move(account, &old, b"mail").await.unwrap();
            let info = racer.copy_from(&mut again).await.unwrap();
            assert!(
                !info.committed && info.attempts <= 2,
                "{mode:?}: the finished copy was made again: {info:?}"
            );
        }
    }
}
