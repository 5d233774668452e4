//! Search segments in a collection (issue 14, `docs/proposals/search.md` §3.1): the
//! manifest lists them beside the record segments, the view never loads them, and a
//! commit can add already-stored ones (and drop those a merge replaced) through the
//! same commit protocol as any batch.

use std::collections::HashSet;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use object_store::ObjectStoreExt;
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::Collection;
use crate::crypto::RandomSource;
use crate::error::{Error, Result};
use crate::format::index::{SegmentEntry, SegmentKind, Stamp};
use crate::format::search::{encode_page, PlainSegment, SearchHeader};
use crate::ids::{AccountId, SegmentId, WriterId};
use crate::index::sealed::CollectionKeys;
use crate::index::Batch;
use crate::storage::commit::Backoff;
use crate::storage::{self, naming, DynStore};

use super::CommitInfo;

/// Stores, reads and seals the pages of one collection's search segments: what a search
/// segment reader or builder needs of the collection, without the collection.
#[derive(Clone)]
pub(crate) struct SearchPages {
    store: DynStore,
    account: AccountId,
    tag: String,
    keys: Arc<CollectionKeys>,
    rng: RandomSource,
}

impl std::fmt::Debug for SearchPages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchPages")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

/// The manifest entry of search segment `id` stored as `stored` with `docs` documents,
/// before the commit that lists it sets its stamp.
fn unstamped(id: SegmentId, stored: &[u8], docs: u32) -> SegmentEntry {
    SegmentEntry {
        id,
        stamp: Stamp {
            generation: 0,
            writer: WriterId::from_bytes([0; 16]),
        },
        kind: SegmentKind::Search,
        stored_len: stored.len() as u64,
        digest: Sha256::digest(stored).into(),
        records: docs,
        covers: Vec::new(),
    }
}

impl SearchPages {
    /// Seals `plain` under a new random segment id and stores it (never overwriting).
    /// Returns its manifest entry, to commit with [`Collection::commit_segments`] (its stamp
    /// is set by that commit).
    ///
    /// # Errors
    /// Backend failures.
    pub(crate) async fn put(&self, plain: PlainSegment) -> Result<SegmentEntry> {
        let id = SegmentId::random(&self.rng);
        // Sealing and hashing a merge's output take tens of milliseconds: off the
        // executor (and the plaintext freed there too).
        let bytes = plain.pages.len() << plain.page_class;
        let pages = self.clone();
        let (stored, entry) = crate::cpu::offload(bytes, move || {
            let stored = pages.seal(id, &plain);
            let entry = unstamped(id, &stored, plain.trailer.docs);
            (stored, entry)
        })
        .await?;
        self.store
            .put_opts(
                &self.path(&id),
                Bytes::from(stored).into(),
                object_store::PutMode::Create.into(),
            )
            .await?;
        Ok(entry)
    }

    /// The stored bytes of `plain` as segment `id`: header, then every page sealed at its
    /// position (on all cores for a large segment).
    pub(crate) fn seal(&self, id: SegmentId, plain: &PlainSegment) -> Vec<u8> {
        let header = SearchHeader {
            id,
            page_class: plain.page_class,
        };
        let header_bytes = header.to_bytes();
        let capacity = header.capacity();
        let seal = |(i, payload): (usize, &Vec<u8>)| {
            self.keys.seal_search_page(
                &self.rng,
                &header_bytes,
                i as u32,
                &encode_page(payload, capacity),
            )
        };
        let sealed: Vec<Vec<u8>> = if crate::cpu::parallel(plain.pages.len() * header.sealed_len())
        {
            plain.pages.par_iter().enumerate().map(seal).collect()
        } else {
            plain.pages.iter().enumerate().map(seal).collect()
        };
        let mut stored =
            Vec::with_capacity(header_bytes.len() + sealed.len() * header.sealed_len());
        stored.extend_from_slice(&header_bytes);
        for page in sealed {
            debug_assert_eq!(page.len(), header.sealed_len());
            stored.extend_from_slice(&page);
        }
        stored
    }

    /// Stores the search segment `entry` of the collection `from` (the same collection
    /// under another root: a root rotation's copy) in this collection as segment `id`
    /// (the same id, so that whatever names the segment by id, email records naming
    /// their details, names the copy; another one only to replace a copy that was lost):
    /// every page opened under `from`'s keys and sealed again under this collection's,
    /// at the same position. Returns the copy's manifest entry (to publish; its stamp is
    /// set by that commit). A copy that an earlier or concurrent run stored already is
    /// kept if every page of it opens under this collection's keys, and written again
    /// with the same bytes, so that it counts as new for garbage collection (which
    /// removes unlisted segments older than its grace period) and a concurrent run that
    /// listed it still finds the bytes it pinned.
    ///
    /// # Errors
    /// [`Error::Tampered`] for a source that is not the pinned bytes, or a copy already
    /// stored that does not open; [`Error::NotFound`]; backend failures.
    pub(crate) async fn copy_from(
        &self,
        from: &SearchPages,
        entry: &SegmentEntry,
        id: SegmentId,
    ) -> Result<SegmentEntry> {
        let stored = from.read_whole(entry).await?;
        let header = SearchHeader::parse(&stored)?;
        let pages = header.pages(entry.stored_len)?;
        if header.id != entry.id || entry.kind != SegmentKind::Search {
            return Err(Error::Tampered);
        }
        let target = SearchHeader { id, ..header };
        let (from, to) = (from.clone(), self.clone());
        let copy = crate::cpu::offload(stored.len(), move || {
            let (old, new) = (header.to_bytes(), target.to_bytes());
            let sealed_len = header.sealed_len();
            // Each page sealed again straight into its place in the copy.
            let mut copy = vec![0u8; stored.len()];
            copy[..new.len()].copy_from_slice(&new);
            let reseal = |(i, out): (usize, &mut [u8])| {
                let range = header.page_range(i as u32);
                let sealed = &stored[range.start as usize..range.end as usize];
                let plain = from.keys.open_search_page(&old, i as u32, sealed)?;
                let again = to.keys.seal_search_page(&to.rng, &new, i as u32, &plain);
                if again.len() != out.len() {
                    return Err(Error::Tampered);
                }
                out.copy_from_slice(&again);
                Ok(())
            };
            let body = &mut copy[new.len()..];
            if crate::cpu::parallel(stored.len()) {
                body.par_chunks_mut(sealed_len)
                    .enumerate()
                    .try_for_each(reseal)?;
            } else {
                body.chunks_mut(sealed_len)
                    .enumerate()
                    .try_for_each(reseal)?;
            }
            debug_assert_eq!(body.len(), pages as usize * sealed_len);
            Ok::<_, Error>(copy)
        })
        .await??;
        let path = self.path(&id);
        let mut copy = Bytes::from(copy);
        let create = object_store::PutMode::Create.into();
        match self
            .store
            .put_opts(&path, copy.clone().into(), create)
            .await
        {
            Ok(_) => {}
            Err(object_store::Error::AlreadyExists { .. }) => {
                let there =
                    storage::get_exact(self.store.as_ref(), &path, copy.len() as u64).await?;
                let header_bytes = target.to_bytes();
                if there.get(..header_bytes.len()) != Some(&header_bytes[..]) {
                    return Err(Error::Tampered);
                }
                for i in 0..pages {
                    let range = target.page_range(i);
                    self.keys.open_search_page(
                        &header_bytes,
                        i,
                        &there[range.start as usize..range.end as usize],
                    )?;
                }
                self.store.put(&path, there.clone().into()).await?;
                copy = there;
            }
            Err(e) => return Err(e.into()),
        }
        Ok(unstamped(id, &copy, entry.records))
    }

    /// Whether segment `id` is stored (one HEAD).
    ///
    /// # Errors
    /// Backend failures.
    pub(crate) async fn exists(&self, id: &SegmentId) -> Result<bool> {
        storage::exists(self.store.as_ref(), &self.path(id)).await
    }

    /// Where segment `id` is stored.
    pub(crate) fn path(&self, id: &SegmentId) -> object_store::path::Path {
        naming::segment_path(&self.account, &self.tag, id)
    }

    /// Bytes `range` of the segment `entry` pins: one ranged GET, refused unless the
    /// object still has the pinned length.
    ///
    /// # Errors
    /// [`Error::Tampered`] for another length; [`Error::NotFound`]; backend failures.
    pub(crate) async fn read_range(
        &self,
        entry: &SegmentEntry,
        range: Range<u64>,
    ) -> Result<Bytes> {
        if range.end > entry.stored_len || range.start > range.end {
            return Err(Error::Tampered);
        }
        storage::get_range_of(
            self.store.as_ref(),
            &self.path(&entry.id),
            range,
            entry.stored_len,
        )
        .await
    }

    /// The whole segment `entry` pins, checked against its length and SHA-256 (what a
    /// merge reads).
    ///
    /// # Errors
    /// [`Error::Tampered`] for other bytes; [`Error::NotFound`]; backend failures.
    pub(crate) async fn read_whole(&self, entry: &SegmentEntry) -> Result<Bytes> {
        let stored =
            storage::get_exact(self.store.as_ref(), &self.path(&entry.id), entry.stored_len)
                .await?;
        let digest = entry.digest;
        crate::cpu::offload(stored.len(), move || {
            if Sha256::digest(&stored).as_slice() != digest {
                return Err(Error::Tampered);
            }
            Ok(stored)
        })
        .await?
    }

    /// Opens sealed page `index` of the segment whose header is `header`.
    ///
    /// # Errors
    /// [`Error::Tampered`] unless it authenticates as that page of that segment of this
    /// collection and account.
    pub(crate) fn open_page(
        &self,
        header: &SearchHeader,
        index: u32,
        sealed: &[u8],
    ) -> Result<Vec<u8>> {
        self.keys
            .open_search_page(&header.to_bytes(), index, sealed)
    }

    /// Deletes a stored segment that no commit listed (a merge that lost its race).
    ///
    /// # Errors
    /// Backend failures.
    pub(crate) async fn delete(&self, id: &SegmentId) -> Result<()> {
        match self.store.delete(&self.path(id)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

impl Collection {
    /// The live record segments (kinds 1 and 2: those of the view).
    pub(super) fn record_segments(&self) -> impl Iterator<Item = &SegmentEntry> {
        self.live.iter().filter(|e| e.kind != SegmentKind::Search)
    }

    /// The live search segments, in stamp order.
    pub(crate) fn search_segments(&self) -> impl Iterator<Item = &SegmentEntry> {
        self.live.iter().filter(|e| e.kind == SegmentKind::Search)
    }

    /// Access to this collection's search segment objects.
    pub(crate) fn search_pages(&self) -> SearchPages {
        SearchPages {
            store: self.store.clone(),
            account: self.account,
            tag: self.tag.clone(),
            keys: self.keys.clone(),
            rng: self.rng.clone(),
        }
    }

    /// Publishes the next manifest listing the search segments `add` (stored beforehand
    /// with [`SearchPages::put`]), without the live segments `covers` (those a merge into
    /// `add` replaced), and `batch` as a record segment. On a lost race the state is
    /// reloaded and the manifest published again on it (the segment objects are not
    /// rewritten) as long as every segment of `covers` is still live.
    ///
    /// # Errors
    /// [`Error::Conflict`] when a segment of `covers` is no longer live (another writer
    /// merged it: the caller deletes its merged segment) or after too many lost races;
    /// [`Error::InvalidArgument`] for an entry of `add` that is not a search segment or a
    /// malformed batch; [`Error::Moved`]; backend failures.
    pub(crate) async fn commit_segments(
        &mut self,
        add: Vec<SegmentEntry>,
        covers: Vec<SegmentId>,
        batch: Batch,
    ) -> Result<CommitInfo> {
        if add.iter().any(|e| e.kind != SegmentKind::Search) {
            return Err(Error::invalid("only search segments are added by entry"));
        }
        if add.is_empty() && covers.is_empty() && batch.is_empty() {
            return Ok(CommitInfo {
                generation: self.generation,
                committed: false,
                attempts: 0,
                merged_heads: 0,
            });
        }
        let covered: HashSet<SegmentId> = covers.iter().copied().collect();
        let records = batch.to_records();
        let mut backoff = Backoff::new(self.config.max_attempts);
        let mut attempts = 0;
        loop {
            attempts += 1;
            self.load_newer().await?;
            self.refuse_moved()?;
            let live: HashSet<SegmentId> = self.search_segments().map(|e| e.id).collect();
            if !covered.iter().all(|id| live.contains(id)) {
                return Err(Error::Conflict {
                    path: format!(
                        "search segments of collection {} merged meanwhile",
                        self.tag
                    ),
                });
            }
            super::check_batch(&batch)?;
            let mut segments: Vec<SegmentEntry> = self
                .live
                .iter()
                .filter(|e| !covered.contains(&e.id))
                .cloned()
                .collect();
            let added = segments.len();
            segments.extend(add.iter().cloned().enumerate().map(|(i, mut e)| {
                // One listing of what the merge replaced is enough for readers that merge
                // heads (`merge_live`).
                e.covers = if i == 0 { covers.clone() } else { Vec::new() };
                e
            }));
            let purged_through = self.purged_through;
            match self
                .publish_adding(
                    SegmentKind::Batch,
                    records.clone(),
                    Vec::new(),
                    &mut segments,
                    added,
                    purged_through,
                )
                .await?
            {
                Some(stamp) => {
                    let entry = segments
                        .last()
                        .cloned()
                        .expect("the record segment is listed");
                    let merged_heads = self.heads.len().saturating_sub(1);
                    self.merge_records(records, entry.stamp).await?;
                    self.after_publish(stamp, segments, purged_through);
                    self.loaded.insert(entry.id);
                    self.raise_mark().await?;
                    if self.heads_merged() {
                        self.load_newer().await?;
                        self.refuse_moved()?;
                    }
                    // Each publish adds a record segment (the batch's, often empty): keep
                    // them tiered as `commit` does, or an index fed in small steps leaves
                    // one per step for every open to read. A failed compaction is left
                    // for a later commit, never reported as this commit's failure.
                    if let Err(e) = self.compact_tiers().await {
                        tracing::debug!(error = %e, "tier compaction after a search commit failed");
                    }
                    return Ok(CommitInfo {
                        generation: self.generation,
                        committed: true,
                        attempts,
                        merged_heads,
                    });
                }
                None => backoff.wait(&self.rng, &self.next_manifest_path()).await?,
            }
        }
    }
}
