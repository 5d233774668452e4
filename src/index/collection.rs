//! One open collection: its in-memory view, and the commit, refresh, compaction and
//! garbage-collection protocols.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use sha2::{Digest, Sha256};

mod rekey;
pub(crate) use rekey::Side;
mod search;

pub(crate) use search::SearchPages;

use super::sealed::{CollectionKeys, Loaded, NewSegment, SegmentOpener};
use super::{Batch, IndexConfig, IndexStore};
use crate::crypto::{AccountKey, RandomSource};
use crate::directory::{Directory, Mark};
use crate::error::{Error, Result};
use crate::format::index::{
    ManifestBody, ManifestHeader, Record, SegmentEntry, SegmentKind, Stamp, MAX_GENERATION,
    MAX_KEY_LEN, MAX_MANIFEST_LEN,
};
use crate::ids::{AccountId, SegmentId, WriterId};
use crate::storage::commit::{Backoff, Published, VersionName, VersionedObjects};
use crate::storage::{self, naming, CommitMode, DynStore};

/// Bits of a packed stamp that hold the writer slot; the generation takes the rest.
const SLOT_BITS: u32 = 24;

/// The newest version of one key, as merged from every live segment: key and value in one
/// slice (`key ‖ value`), its stamp packed in one word (generation in the high 40 bits,
/// writer slot in the low 24) and whether it is a deletion. 48 bytes besides the record's
/// own bytes. Ordered and compared by key only, so the view is a set of versions.
#[derive(Debug, Clone)]
struct Version {
    bytes: Bytes,
    key_len: u32,
    deleted: bool,
    stamp: u64,
}

impl Version {
    fn new(bytes: Bytes, key_len: usize, deleted: bool, generation: u64, writer: u32) -> Self {
        debug_assert!(generation < MAX_GENERATION && writer < (1 << SLOT_BITS));
        Self {
            bytes,
            key_len: key_len as u32,
            deleted,
            stamp: (generation << SLOT_BITS) | u64::from(writer),
        }
    }

    fn key(&self) -> &[u8] {
        &self.bytes[..self.key_len as usize]
    }

    fn value(&self) -> Option<&[u8]> {
        (!self.deleted).then(|| &self.bytes[self.key_len as usize..])
    }

    fn generation(&self) -> u64 {
        self.stamp >> SLOT_BITS
    }

    fn writer(&self) -> u32 {
        (self.stamp & ((1 << SLOT_BITS) - 1)) as u32
    }
}

impl PartialEq for Version {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Version {}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(other.key())
    }
}

impl std::borrow::Borrow<[u8]> for Version {
    fn borrow(&self) -> &[u8] {
        self.key()
    }
}

/// One change reported by [`Collection::changes_since`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The key.
    pub key: Bytes,
    /// Its value now, or `None` if it was deleted.
    pub value: Option<Bytes>,
    /// Generation of the commit that made the change.
    pub generation: u64,
}

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitInfo {
    /// The collection's generation after the commit.
    pub generation: u64,
    /// Whether something was written (an empty batch writes nothing).
    pub committed: bool,
    /// Attempts made (more than one after lost races: compare-and-swap conflicts, or the
    /// directory's compare-and-set lost without compare-and-swap).
    pub attempts: u32,
    /// Concurrent heads merged by this commit: only the first commit of a collection of
    /// the older writer-unique scheme (a mark without digest) merges any; each is a
    /// conflict that was resolved by merging.
    pub merged_heads: usize,
}

/// What [`Collection::collect_garbage`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GcReport {
    /// Superseded manifests deleted.
    pub manifests: usize,
    /// Unreferenced segments deleted (superseded by compaction, or orphans of failed
    /// commits).
    pub segments: usize,
}

/// The writers of a view's versions, by slot: what a bulk build of the view needs,
/// taken from the collection to the blocking pool and back.
struct WriterTable {
    list: Vec<WriterId>,
    slots: HashMap<WriterId, u32>,
}

impl WriterTable {
    fn slot(&mut self, writer: WriterId) -> u32 {
        if let Some(&slot) = self.slots.get(&writer) {
            return slot;
        }
        let slot = self.list.len() as u32;
        self.list.push(writer);
        self.slots.insert(writer, slot);
        slot
    }

    /// The versions of one segment's records (sorted and unique, as stored), with
    /// writer slots assigned.
    fn versions_of(&mut self, entry: &SegmentEntry, records: Vec<Loaded>) -> Vec<Version> {
        let mut last: Option<(WriterId, u32)> = None;
        let mut versions = Vec::with_capacity(records.len());
        for record in records {
            let stamp = record.stamp.unwrap_or(entry.stamp);
            let slot = match last {
                Some((writer, slot)) if writer == stamp.writer => slot,
                _ => {
                    let slot = self.slot(stamp.writer);
                    last = Some((stamp.writer, slot));
                    slot
                }
            };
            versions.push(Version::new(
                record.bytes,
                record.key_len,
                record.deleted,
                stamp.generation,
                slot,
            ));
        }
        versions
    }

    /// Whether `a` was written after `b` (the greater stamp wins a merge).
    fn newer(&self, a: &Version, b: &Version) -> bool {
        (a.generation(), self.list[a.writer() as usize])
            > (b.generation(), self.list[b.writer() as usize])
    }

    /// Merges two sorted, unique runs of versions into one; of two versions of a key the
    /// newer is kept.
    fn merge_runs(&self, a: Vec<Version>, b: Vec<Version>) -> Vec<Version> {
        if a.is_empty() {
            return b;
        }
        let mut out = Vec::with_capacity(a.len() + b.len());
        let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
        loop {
            let order = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) => x.key().cmp(y.key()),
                (Some(_), None) => {
                    out.extend(a);
                    break;
                }
                (None, _) => {
                    out.extend(b);
                    break;
                }
            };
            match order {
                std::cmp::Ordering::Less => out.extend(a.next()),
                std::cmp::Ordering::Greater => out.extend(b.next()),
                std::cmp::Ordering::Equal => {
                    let (x, y) = (a.next().expect("peeked"), b.next().expect("peeked"));
                    out.push(if self.newer(&y, &x) { y } else { x });
                }
            }
        }
        out
    }
}

/// The parts of a collection that a merge of versions changes, borrowed together (from
/// the collection, or from what it sent to the blocking pool).
struct ViewParts<'a> {
    view: &'a mut BTreeSet<Version>,
    writers: &'a mut Vec<WriterId>,
    writer_slots: &'a mut HashMap<WriterId, u32>,
    present: &'a mut usize,
}

impl ViewParts<'_> {
    fn writer_slot(&mut self, writer: WriterId) -> u32 {
        if let Some(&slot) = self.writer_slots.get(&writer) {
            return slot;
        }
        let slot = self.writers.len() as u32;
        self.writers.push(writer);
        self.writer_slots.insert(writer, slot);
        slot
    }

    /// Merges one record version (`bytes` = key ‖ value): the greater stamp wins.
    fn merge_version(&mut self, bytes: Bytes, key_len: usize, deleted: bool, stamp: Stamp) {
        let slot = self.writer_slot(stamp.writer);
        let version = Version::new(bytes, key_len, deleted, stamp.generation, slot);
        match self.view.get(version.key()) {
            Some(existing) => {
                let theirs = (
                    existing.generation(),
                    self.writers[existing.writer() as usize],
                );
                if (stamp.generation, stamp.writer) > theirs {
                    let was = !existing.deleted;
                    *self.present = *self.present + usize::from(!deleted) - usize::from(was);
                    self.view.replace(version);
                }
            }
            None => {
                *self.present += usize::from(!deleted);
                self.view.insert(version);
            }
        }
    }

    /// Merges a record committed by this handle (key and value apart).
    fn merge_record(&mut self, key: &[u8], stamp: Stamp, value: Option<&Bytes>) {
        let mut bytes = Vec::with_capacity(key.len() + value.map_or(0, Bytes::len));
        bytes.extend_from_slice(key);
        if let Some(value) = value {
            bytes.extend_from_slice(value);
        }
        self.merge_version(Bytes::from(bytes), key.len(), value.is_none(), stamp);
    }
}

/// One collection of one account, open. Reads are served from memory; writes go
/// through [`commit`](Self::commit) or [`update`](Self::update).
pub struct Collection {
    store: DynStore,
    directory: Arc<dyn Directory>,
    rng: RandomSource,
    config: IndexConfig,
    account: AccountId,
    keys: Arc<CollectionKeys>,
    tag: String,
    record: String,
    objects: VersionedObjects,
    writer: WriterId,
    generation: u64,
    heads: Vec<Stamp>,
    purged_through: u64,
    /// Without compare-and-swap: the directory's mark that the loaded state is (the
    /// accepted manifest's generation and digest; without a digest, a mark of the older
    /// writer-unique scheme), and so what this handle's next commit compare-and-sets
    /// from. `None` before the first load.
    accepted: Option<Mark>,
    /// Manifests known (legacy writer-unique state, and garbage collection): their
    /// parents, to tell heads apart.
    manifests: HashMap<VersionName, (ManifestHeader, ManifestBody)>,
    live: Vec<SegmentEntry>,
    loaded: HashSet<SegmentId>,
    view: BTreeSet<Version>,
    present: usize,
    writers: Vec<WriterId>,
    writer_slots: HashMap<WriterId, u32>,
    /// When the state this handle builds on was loaded (the start of the last refresh).
    loaded_at: Instant,
    /// The view (with its writer table) was taken off this handle for work on the
    /// blocking pool, or an install began, and neither finished: the future was dropped
    /// meanwhile. The next load forgets what is left and rebuilds the view from the
    /// store (a dropped commit may have been committed: its records are in the store,
    /// not in the view).
    view_away: bool,
}

impl std::fmt::Debug for Collection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collection")
            .field("account", &self.account)
            .field("generation", &self.generation)
            .field("records", &self.present)
            .finish_non_exhaustive()
    }
}

fn tier(records: u32) -> u32 {
    let mut tier = 0;
    let mut size = u64::from(records);
    while size > 0 {
        size /= 4;
        tier += 1;
    }
    tier
}

/// The segments that are live given every listed entry: one entry per id, minus those a
/// live compaction replaced, in stamp order.
pub(crate) fn merge_live(entries: impl IntoIterator<Item = SegmentEntry>) -> Vec<SegmentEntry> {
    let mut by_id: HashMap<SegmentId, SegmentEntry> = HashMap::new();
    for entry in entries {
        by_id.entry(entry.id).or_insert(entry);
    }
    let covered: HashSet<SegmentId> = by_id
        .values()
        .flat_map(|e| e.covers.iter().copied())
        .collect();
    let mut live: Vec<SegmentEntry> = by_id
        .into_values()
        .filter(|e| !covered.contains(&e.id))
        .collect();
    live.sort_by(|a, b| a.stamp.cmp(&b.stamp).then(a.id.cmp(&b.id)));
    live
}

impl Collection {
    pub(super) async fn open(
        index: &IndexStore,
        account: AccountId,
        key: &AccountKey,
        name: &[u8],
    ) -> Result<Self> {
        let keys = Arc::new(CollectionKeys::new(index.deployment, account, key, name));
        Self::open_keyed(index, account, keys).await
    }

    /// As [`open`](Self::open), with the collection's keys derived beforehand (a caller
    /// that opens the collection later, without the account key at hand).
    pub(super) async fn open_keyed(
        index: &IndexStore,
        account: AccountId,
        keys: Arc<CollectionKeys>,
    ) -> Result<Self> {
        let tag = keys.tag_hex();
        let writer = WriterId::random(&index.rng);
        let objects = VersionedObjects::new(
            index.store.clone(),
            naming::manifest_prefix(&account, &tag),
            index.mode,
            writer,
        )
        .with_max_len(MAX_MANIFEST_LEN as u64);
        let mut collection = Self {
            store: index.store.clone(),
            directory: index.directory.clone(),
            rng: index.rng.clone(),
            config: index.config,
            account,
            keys,
            record: format!("i-{tag}"),
            tag,
            objects,
            writer,
            generation: 0,
            heads: Vec::new(),
            purged_through: 0,
            accepted: None,
            manifests: HashMap::new(),
            live: Vec::new(),
            loaded: HashSet::new(),
            view: BTreeSet::new(),
            present: 0,
            writers: Vec::new(),
            writer_slots: HashMap::new(),
            loaded_at: Instant::now(),
            view_away: false,
        };
        match index.mode {
            CommitMode::CompareAndSwap => {
                let mark = collection
                    .directory
                    .high_water_mark(&account, &collection.record)
                    .await?;
                collection.bootstrap_cas(mark).await?;
            }
            CommitMode::WriterUnique => {
                collection.refresh_directory().await?;
            }
        }
        Ok(collection)
    }

    // ------------------------------------------------------------------ reads

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.view.get(key).and_then(Version::value)
    }

    /// The values of `keys` (`None` for a key without a record), as [`get`](Self::get)
    /// gives them, for keys in ascending order: one walk along the view, which seeks
    /// from the root only past a gap of more than a few records, where a lookup per key
    /// would seek every time (each step of a seek reads a record's key: with the records
    /// of a large index out of the cache, a lookup costs about a microsecond). A key out
    /// of order is looked up on its own, so the answer never depends on the order.
    pub fn get_ascending<'a, K: AsRef<[u8]>>(&'a self, keys: &[K]) -> Vec<Option<&'a [u8]>> {
        /// Records read along the walk before seeking instead.
        const STEPS: usize = 8;
        let mut out = Vec::with_capacity(keys.len());
        let mut cursor: Option<std::collections::btree_set::Range<'a, Version>> = None;
        // The first version the cursor gave that is not below the last key.
        let mut pending: Option<&'a Version> = None;
        let mut previous: Option<&[u8]> = None;
        for key in keys {
            let key = key.as_ref();
            if previous.is_some_and(|p| p > key) {
                cursor = None;
                pending = None;
            }
            previous = Some(key);
            let mut answer = None;
            if let Some(walk) = cursor.as_mut() {
                for _ in 0..STEPS {
                    let Some(v) = pending.take().or_else(|| walk.next()) else {
                        // The walk reached the end of the view: no key beyond.
                        answer = Some(None);
                        break;
                    };
                    match v.key().cmp(key) {
                        std::cmp::Ordering::Less => {}
                        std::cmp::Ordering::Equal => {
                            // Kept: the next key may be the same.
                            pending = Some(v);
                            answer = Some(v.value());
                            break;
                        }
                        std::cmp::Ordering::Greater => {
                            pending = Some(v);
                            answer = Some(None);
                            break;
                        }
                    }
                }
            }
            let value = match answer {
                Some(value) => value,
                None => {
                    let mut walk = self
                        .view
                        .range::<[u8], _>((Bound::Included(key), Bound::Unbounded));
                    pending = walk.next();
                    cursor = Some(walk);
                    pending.filter(|v| v.key() == key).and_then(Version::value)
                }
            };
            out.push(value);
        }
        out
    }

    /// The records with keys between `start` and `end`, in key order.
    pub fn range<'a>(
        &'a self,
        start: Bound<&'a [u8]>,
        end: Bound<&'a [u8]>,
    ) -> impl DoubleEndedIterator<Item = (&'a [u8], &'a [u8])> + 'a {
        self.view
            .range::<[u8], _>((start, end))
            .filter_map(|v| v.value().map(|value| (v.key(), value)))
    }

    /// The records whose key starts with `prefix`, in key order.
    pub fn prefix<'a>(
        &'a self,
        prefix: &[u8],
    ) -> impl DoubleEndedIterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let mut end = prefix.to_vec();
        let end = loop {
            match end.pop() {
                Some(u8::MAX) => continue,
                Some(last) => {
                    end.push(last + 1);
                    break Bound::Excluded(end);
                }
                None => break Bound::Unbounded,
            }
        };
        let end_ref = match &end {
            Bound::Excluded(e) => Bound::Excluded(e.as_slice()),
            _ => Bound::Unbounded,
        };
        self.view
            .range::<[u8], _>((Bound::Included(prefix), end_ref))
            .filter_map(|v| v.value().map(|value| (v.key(), value)))
    }

    /// Every record, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.view
            .iter()
            .filter_map(|v| v.value().map(|value| (v.key(), value)))
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.present
    }

    /// Whether the collection holds no record.
    pub fn is_empty(&self) -> bool {
        self.present == 0
    }

    /// The newest generation this handle has loaded.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The commit mode in use.
    pub fn mode(&self) -> CommitMode {
        self.objects.mode()
    }

    /// How many heads the loaded state merges: one (or none when empty), except in a
    /// collection of the older writer-unique scheme where writers committed concurrently
    /// on a backend without compare-and-swap and nobody has committed on top of all of
    /// them yet.
    pub fn concurrent_heads(&self) -> usize {
        self.heads.len()
    }

    /// The number of live segments (what opening reads, besides the manifest).
    pub fn live_segments(&self) -> usize {
        self.live.len()
    }

    /// The changes committed after `generation`, from memory; `None` when `generation`
    /// is so old that deletions since then were purged by a compaction (the caller must
    /// then resynchronise from [`iter`](Self::iter)).
    pub fn changes_since(&self, generation: u64) -> Option<Vec<Change>> {
        if generation < self.purged_through {
            return None;
        }
        Some(
            self.view
                .iter()
                .filter(|v| v.generation() > generation)
                .map(|v| Change {
                    key: v.bytes.slice(..v.key_len as usize),
                    value: (!v.deleted).then(|| v.bytes.slice(v.key_len as usize..)),
                    generation: v.generation(),
                })
                .collect(),
        )
    }

    /// Whether a newer generation than `generation` was committed: one small request on
    /// backends with compare-and-swap (a probe of the next generation), one read of the
    /// directory's mark otherwise (the commit point there). For change notification
    /// (IDLE, push) without reloading.
    ///
    /// # Errors
    /// A backend failure.
    pub async fn changed_since(&self, generation: u64) -> Result<bool> {
        match self.objects.mode() {
            CommitMode::CompareAndSwap => {
                let next = self.objects.path(&self.objects.own_name(generation + 1));
                match self.store.head(&next).await {
                    Ok(_) => Ok(true),
                    Err(object_store::Error::NotFound { .. }) => Ok(false),
                    Err(e) => Err(e.into()),
                }
            }
            CommitMode::WriterUnique => Ok(self
                .directory
                .high_water_mark(&self.account, &self.record)
                .await?
                > generation),
        }
    }

    // ------------------------------------------------------------------ loading

    /// Merges one record version (`bytes` = key ‖ value) into the view: the greater
    /// stamp wins.
    fn merge_version(&mut self, bytes: Bytes, key_len: usize, deleted: bool, stamp: Stamp) {
        let mut parts = ViewParts {
            view: &mut self.view,
            writers: &mut self.writers,
            writer_slots: &mut self.writer_slots,
            present: &mut self.present,
        };
        parts.merge_version(bytes, key_len, deleted, stamp);
    }

    /// Merges the records this handle committed (stamped `stamp`) into the view: in
    /// place for a small batch, on the blocking pool for a large one (the view goes
    /// along and comes back; while it is away the handle counts no segment as loaded,
    /// so that a commit cancelled meanwhile leaves a handle whose next refresh rebuilds
    /// its view from every live segment).
    async fn merge_records(&mut self, records: Arc<Vec<Record>>, stamp: Stamp) -> Result<()> {
        let bytes = records
            .iter()
            .map(|r| r.key.len() + r.value.as_ref().map_or(0, Bytes::len))
            .sum();
        if bytes < crate::cpu::IN_PLACE_BYTES {
            for record in records.iter() {
                self.merge_record(&record.key, stamp, record.value.as_ref());
            }
            return Ok(());
        }
        self.view_away = true;
        let loaded = std::mem::take(&mut self.loaded);
        let mut view = std::mem::take(&mut self.view);
        let mut writers = std::mem::take(&mut self.writers);
        let mut writer_slots = std::mem::take(&mut self.writer_slots);
        let mut present = std::mem::take(&mut self.present);
        let merged = crate::cpu::offload(bytes, move || {
            let mut parts = ViewParts {
                view: &mut view,
                writers: &mut writers,
                writer_slots: &mut writer_slots,
                present: &mut present,
            };
            for record in records.iter() {
                parts.merge_record(&record.key, stamp, record.value.as_ref());
            }
            (view, writers, writer_slots, present)
        })
        .await?;
        (self.view, self.writers, self.writer_slots, self.present) = merged;
        self.loaded = loaded;
        self.view_away = false;
        Ok(())
    }

    /// Merges a record committed by this handle (key and value apart) into the view.
    fn merge_record(&mut self, key: &[u8], stamp: Stamp, value: Option<&Bytes>) {
        let mut parts = ViewParts {
            view: &mut self.view,
            writers: &mut self.writers,
            writer_slots: &mut self.writer_slots,
            present: &mut self.present,
        };
        parts.merge_record(key, stamp, value);
    }

    /// Builds an empty view from segments at once (every open, and every rebuild after a
    /// compaction): their sorted runs are merged, smallest first, and the set is
    /// bulk-built from the result instead of key by key. Off the executor thread when the
    /// segments are large (the writer table goes along and comes back).
    async fn build_view(&mut self, fetched: Vec<(SegmentEntry, Vec<Loaded>)>) -> Result<()> {
        debug_assert!(self.view.is_empty());
        let bytes = fetched.iter().map(|(e, _)| e.stored_len as usize).sum();
        let ids: Vec<SegmentId> = fetched.iter().map(|(e, _)| e.id).collect();
        let mut writers = WriterTable {
            list: std::mem::take(&mut self.writers),
            slots: std::mem::take(&mut self.writer_slots),
        };
        let (writers, view, present) = crate::cpu::offload(bytes, move || {
            let mut runs = Vec::with_capacity(fetched.len());
            for (entry, records) in fetched {
                runs.push(writers.versions_of(&entry, records));
            }
            runs.sort_by_key(Vec::len);
            let mut merged = Vec::new();
            for run in runs {
                merged = writers.merge_runs(merged, run);
            }
            let present = merged.iter().filter(|v| !v.deleted).count();
            (writers, merged.into_iter().collect(), present)
        })
        .await?;
        self.writers = writers.list;
        self.writer_slots = writers.slots;
        self.view = view;
        self.present = present;
        self.loaded.extend(ids);
        Ok(())
    }

    /// Merges one more segment into a loaded view, key by key.
    fn apply_segment(&mut self, entry: &SegmentEntry, records: Vec<Loaded>) {
        for record in records {
            let stamp = record.stamp.unwrap_or(entry.stamp);
            self.merge_version(record.bytes, record.key_len, record.deleted, stamp);
        }
        self.loaded.insert(entry.id);
    }

    /// Fetches a segment and opens it (off the executor thread when it is large).
    ///
    /// A segment larger than [`IndexConfig::fetch_piece`] (a compacted one) is read by
    /// ranges of that size, the next one fetched while the last is opened: its sealed
    /// bytes are never all in memory beside the records they give (a session's open of a
    /// large account would otherwise hold both at its peak).
    async fn fetch_segment(&self, entry: &SegmentEntry) -> Result<Vec<Loaded>> {
        let path = naming::segment_path(&self.account, &self.tag, &entry.id);
        let step = self.config.fetch_piece.max(1);
        if entry.stored_len <= step {
            let stored = storage::get_exact(self.store.as_ref(), &path, entry.stored_len).await?;
            let (keys, entry) = (self.keys.clone(), entry.clone());
            return crate::cpu::offload(stored.len(), move || keys.open_segment(&entry, &stored))
                .await?;
        }
        let size = entry.stored_len;
        let piece = |at: u64| {
            let path = &path;
            async move {
                storage::get_range_of(self.store.as_ref(), path, at..(at + step).min(size), size)
                    .await
            }
        };
        let mut opener = SegmentOpener::new(self.keys.clone(), entry.clone());
        let mut next = piece(0).await?;
        let mut at = next.len() as u64;
        while !next.is_empty() {
            let bytes = std::mem::take(&mut next);
            let open =
                crate::cpu::offload(bytes.len(), move || opener.feed(&bytes).map(|()| opener));
            let fetch = async {
                if at < size {
                    piece(at).await
                } else {
                    Ok(Bytes::new())
                }
            };
            let (opened, fetched) = futures::join!(open, fetch);
            opener = opened??;
            next = fetched?;
            at += next.len() as u64;
        }
        opener.finish()
    }

    /// Fetches and opens segments, several at once, in the given order.
    async fn fetch_segments(
        &self,
        entries: Vec<SegmentEntry>,
    ) -> Result<Vec<(SegmentEntry, Vec<Loaded>)>> {
        let this = self;
        futures::stream::iter(entries)
            .map(|entry| async move {
                let records = this.fetch_segment(&entry).await?;
                Ok::<_, Error>((entry, records))
            })
            .buffered(self.config.fetch_concurrency)
            .try_collect()
            .await
    }

    /// Makes `live` the set of live segments: loads the new ones, or rebuilds the view
    /// when some loaded segment is no longer live (a compaction replaced it).
    async fn install(
        &mut self,
        heads: Vec<Stamp>,
        live: Vec<SegmentEntry>,
        purged_through: u64,
    ) -> Result<()> {
        self.view_away = true;
        let live_ids: HashSet<SegmentId> = live.iter().map(|e| e.id).collect();
        if !self.loaded.iter().all(|id| live_ids.contains(id)) {
            self.drop_view();
            self.loaded.clear();
            self.present = 0;
        }
        // Search segments are read by pages (`mail::text`), never into the view.
        let missing: Vec<SegmentEntry> = live
            .iter()
            .filter(|e| e.kind != SegmentKind::Search && !self.loaded.contains(&e.id))
            .cloned()
            .collect();
        let fetched = self.fetch_segments(missing).await?;
        if self.view.is_empty() {
            self.build_view(fetched).await?;
        } else {
            for (entry, records) in fetched {
                self.apply_segment(&entry, records);
            }
        }
        self.live = live;
        self.heads = heads;
        self.purged_through = purged_through;
        self.view_away = false;
        Ok(())
    }

    fn open_manifest(
        &self,
        name: &VersionName,
        stored: &[u8],
    ) -> Result<(ManifestHeader, ManifestBody)> {
        let (header, body) = self.keys.open_manifest(stored)?;
        // The name must match the authenticated header: a manifest copied to another
        // generation or writer name is refused.
        if header.generation != name.generation || name.writer.is_some_and(|w| w != header.writer) {
            return Err(Error::Tampered);
        }
        Ok((header, body))
    }

    /// Raises the directory's mark to the loaded generation (compare-and-swap: the
    /// store's conditional create is the commit point, the mark only guards against
    /// rollback). Without compare-and-swap the mark is the commit point and moves only by
    /// the compare-and-set of a commit ([`commit_mark`](Self::commit_mark)).
    async fn raise_mark(&self) -> Result<()> {
        if self.objects.mode() == CommitMode::WriterUnique {
            return Ok(());
        }
        self.directory
            .raise_high_water_mark(&self.account, &self.record, self.generation)
            .await
    }

    /// Whether the loaded state is one chain of accepted manifests (nothing older can be
    /// merged back): with compare-and-swap, and without it once the directory's mark
    /// names the accepted manifest.
    fn linear(&self) -> bool {
        self.objects.mode() == CommitMode::CompareAndSwap
            || self.accepted.is_some_and(|m| m.has_digest())
    }

    /// The commit point without compare-and-swap: compare-and-sets the directory's mark
    /// from the one the loaded state is to `committed`. Returns whether this commit won.
    ///
    /// # Errors
    /// A directory failure that hides the outcome (the mark is then read: if it is
    /// `committed`, the commit won).
    async fn commit_mark(&mut self, committed: Mark) -> Result<bool> {
        let expected = self.accepted.unwrap_or(Mark::NONE);
        let swapped = match self
            .directory
            .compare_and_set_mark(&self.account, &self.record, expected, committed)
            .await
        {
            Ok(swapped) => swapped,
            Err(e) => match self.directory.mark(&self.account, &self.record).await {
                Ok(mark) if mark == committed => true,
                _ => return Err(e),
            },
        };
        if swapped {
            self.accepted = Some(committed);
        }
        Ok(swapped)
    }

    /// First load with compare-and-swap: probe upwards from the directory's mark, or
    /// from the newest listed generation when there is no mark or its manifest is gone.
    async fn bootstrap_cas(&mut self, mark: u64) -> Result<()> {
        if mark > 0 {
            self.generation = mark - 1;
            self.refresh_cas().await?;
            if !self.heads.is_empty() {
                return Ok(());
            }
        }
        let newest = self.objects.newest_listed().await?;
        if newest < mark {
            return Err(Error::Rollback {
                seen: mark,
                found: newest,
            });
        }
        if newest > 0 {
            self.generation = newest - 1;
            self.refresh_cas().await?;
        }
        Ok(())
    }

    async fn refresh_cas(&mut self) -> Result<bool> {
        self.refresh_cas_jumping(4).await
    }

    /// [`refresh_cas`](Self::refresh_cas), jumping forward by listing at most `jumps`
    /// times (a store that lists a manifest it then does not serve withholds it).
    async fn refresh_cas_jumping(&mut self, jumps: u32) -> Result<bool> {
        let mut newest = None;
        loop {
            let name = self.objects.own_name(self.generation + 1);
            match self.objects.fetch(&name).await? {
                Some(stored) => {
                    newest = Some(self.open_manifest(&name, &stored)?);
                    self.generation += 1;
                }
                None => break,
            }
        }
        // Nothing more at the next generation. A root rotation's copy is published at its
        // source's generation (modseqs carry on), above generations no manifest holds:
        // the directory's high-water mark, raised after every commit, is then above this
        // handle. Jump forward to what the listing shows.
        let mark = self
            .directory
            .high_water_mark(&self.account, &self.record)
            .await?;
        if mark > self.generation {
            let listed = self.objects.newest_listed().await?;
            if listed > self.generation {
                return self.jump_to(listed, jumps).await;
            }
        }
        if newest.is_none() && !self.heads.is_empty() {
            // Nothing newer, unless our own generation is gone: withheld, or deleted by
            // the garbage collector while this handle was idle for longer than the grace
            // period. Jump forward by listing; refuse to go back.
            let current = self.objects.path(&self.objects.own_name(self.generation));
            if let Err(object_store::Error::NotFound { .. }) = self.store.head(&current).await {
                let listed = self.objects.newest_listed().await?;
                if listed <= self.generation {
                    return Err(Error::Rollback {
                        seen: self.generation,
                        found: listed,
                    });
                }
                return self.jump_to(listed, jumps).await;
            }
        }
        let Some((header, body)) = newest else {
            return Ok(false);
        };
        let stamp = Stamp {
            generation: header.generation,
            writer: header.writer,
        };
        let live = merge_live(body.segments);
        self.install(vec![stamp], live, body.purged_through).await?;
        self.raise_mark().await?;
        Ok(true)
    }

    /// Goes on refreshing from generation `listed`, which the listing shows above this
    /// handle's.
    async fn jump_to(&mut self, listed: u64, jumps: u32) -> Result<bool> {
        if jumps == 0 {
            return Err(Error::Rollback {
                seen: listed,
                found: self.generation,
            });
        }
        let before = self.generation;
        self.generation = listed - 1;
        let refreshed = Box::pin(self.refresh_cas_jumping(jumps - 1)).await;
        if refreshed.is_err() && !self.heads.iter().any(|h| h.generation == self.generation) {
            // Failed before the state it jumped to was installed: the handle stays at the
            // generation of the state it holds.
            self.generation = before;
        }
        refreshed
    }

    /// Refresh without compare-and-swap: the directory's mark is the commit point. With a
    /// digest, the live state is the one manifest of the mark's generation whose SHA-256
    /// is the digest (manifests of other writers at that generation lost, or are in
    /// flight above it): one read of the mark when nothing changed, otherwise one listing
    /// and one manifest. Without a digest (a collection written by the older writer-unique
    /// scheme, not committed through the directory since), the heads are merged as that
    /// scheme did, until the next commit pins the merged state.
    async fn refresh_directory(&mut self) -> Result<bool> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mark = self.directory.mark(&self.account, &self.record).await?;
            if self.accepted == Some(mark) {
                return Ok(false);
            }
            if mark == Mark::NONE {
                // Nothing committed yet: manifests present are commits in flight, or
                // losers and crashes that never committed.
                self.accepted = Some(mark);
                return Ok(false);
            }
            if !mark.has_digest() {
                return self.refresh_legacy(mark).await;
            }
            let names = self.objects.list().await?;
            let mut candidates: Vec<VersionName> = names
                .iter()
                .filter(|n| n.generation == mark.generation)
                .copied()
                .collect();
            candidates.sort();
            for name in candidates {
                let Some(stored) = self.objects.fetch(&name).await? else {
                    continue;
                };
                if Sha256::digest(&stored)[..] != mark.digest {
                    continue;
                }
                let (header, body) = self.open_manifest(&name, &stored)?;
                let stamp = Stamp {
                    generation: header.generation,
                    writer: header.writer,
                };
                self.manifests.clear();
                self.generation = header.generation;
                self.install(vec![stamp], merge_live(body.segments), body.purged_through)
                    .await?;
                self.accepted = Some(mark);
                return Ok(true);
            }
            // Not there: a newer commit may have moved the mark and the garbage collector
            // removed what the old one named. Look again while the mark moves.
            let moved = self.directory.mark(&self.account, &self.record).await? != mark;
            if moved && attempts < 8 {
                continue;
            }
            // The accepted manifest is withheld (whatever else stands beside or below it).
            return Err(Error::Rollback {
                seen: mark.generation,
                found: names
                    .iter()
                    .map(|n| n.generation)
                    .filter(|g| *g < mark.generation)
                    .max()
                    .unwrap_or(0),
            });
        }
    }

    /// Loads a collection whose mark has no digest (written by the older writer-unique
    /// scheme): the heads among the manifests up to the mark's generation, merged. Those
    /// above it were never acknowledged by that scheme (a commit raised the mark before
    /// it was acknowledged), and may be commits of this scheme in flight: ignored.
    async fn refresh_legacy(&mut self, mark: Mark) -> Result<bool> {
        let names: HashSet<VersionName> = self
            .objects
            .list()
            .await?
            .into_iter()
            .filter(|n| n.generation <= mark.generation)
            .collect();
        self.manifests.retain(|name, _| names.contains(name));
        self.load_manifests(names.iter()).await?;
        let superseded: HashSet<Stamp> = self
            .manifests
            .values()
            .flat_map(|(_, b)| b.parents.iter().copied())
            .collect();
        let mut heads: Vec<Stamp> = self
            .manifests
            .values()
            .map(|(h, _)| Stamp {
                generation: h.generation,
                writer: h.writer,
            })
            .filter(|s| !superseded.contains(s))
            .collect();
        heads.sort();
        heads.dedup();
        let newest = heads.iter().map(|s| s.generation).max().unwrap_or(0);
        if newest < mark.generation.max(self.generation) {
            return Err(Error::Rollback {
                seen: mark.generation.max(self.generation),
                found: newest,
            });
        }
        if heads == self.heads && !self.heads.is_empty() {
            self.accepted = Some(mark);
            return Ok(false);
        }
        let head_set: HashSet<Stamp> = heads.iter().copied().collect();
        let mut entries = Vec::new();
        let mut purged_through = 0;
        for (header, body) in self.manifests.values() {
            if head_set.contains(&Stamp {
                generation: header.generation,
                writer: header.writer,
            }) {
                entries.extend(body.segments.iter().cloned());
                purged_through = purged_through.max(body.purged_through);
            }
        }
        self.generation = newest;
        self.install(heads, merge_live(entries), purged_through)
            .await?;
        self.accepted = Some(mark);
        Ok(true)
    }

    /// Loads what other writers committed since this handle last looked. Returns whether
    /// anything changed.
    ///
    /// # Errors
    /// As [`IndexStore::open`];
    /// [`Error::Moved`] once a root rotation moved the collection under another key.
    pub async fn refresh(&mut self) -> Result<bool> {
        let changed = self.load_newer().await?;
        self.refuse_moved()?;
        Ok(changed)
    }

    /// [`refresh`](Self::refresh), a moved collection included (what the rotation moving
    /// it reads).
    async fn load_newer(&mut self) -> Result<bool> {
        self.loaded_at = Instant::now();
        if self.view_away {
            self.forget_view();
        }
        let changed = match self.objects.mode() {
            CommitMode::CompareAndSwap => self.refresh_cas().await?,
            CommitMode::WriterUnique => self.refresh_directory().await?,
        };
        self.view_away = false;
        Ok(changed)
    }

    /// Empties the view; a large one is freed off the executor thread (its size counted
    /// as the versions themselves: the records they point to are shared buffers).
    fn drop_view(&mut self) {
        let bytes = self.view.len() * std::mem::size_of::<Version>();
        crate::cpu::drop_off(std::mem::take(&mut self.view), bytes);
    }

    /// Forgets a view left incomplete by a dropped future (see `view_away`), so that
    /// the next load installs the newest state whole: nothing counts as loaded, and the
    /// state it was loaded from is read again (with compare-and-swap from the
    /// generation below this handle's, without from the directory's mark).
    fn forget_view(&mut self) {
        self.drop_view();
        self.loaded.clear();
        self.present = 0;
        self.writers.clear();
        self.writer_slots.clear();
        self.live.clear();
        self.accepted = None;
        self.generation = self.generation.saturating_sub(1);
    }

    // ------------------------------------------------------------------ writes

    /// Commits `batch` atomically. On a lost race (a compare-and-swap conflict, or
    /// without compare-and-swap a lost compare-and-set of the directory's mark) the batch
    /// is rebased on the newer state and retried.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a key longer than 65 535 bytes or a value of 4 GiB
    /// or more; [`Error::Conflict`] after too many lost races; backend errors (the batch
    /// is then not acknowledged: it may or may not be visible after a reload).
    pub async fn commit(&mut self, batch: Batch) -> Result<CommitInfo> {
        self.update(move |_| batch.clone()).await
    }

    /// Computes a batch from the current state and commits it; on a conflict the state is
    /// reloaded and `make_batch` runs again, so read-modify-write updates (allocating the
    /// next UID) are linearizable on every backend.
    ///
    /// # Errors
    /// As [`commit`](Self::commit).
    pub async fn update<F>(&mut self, make_batch: F) -> Result<CommitInfo>
    where
        F: FnMut(&Collection) -> Batch,
    {
        self.update_or_close(make_batch, false).await
    }

    /// [`update`](Self::update), or with `closing` the commit of the moved marker (see
    /// `rekey.rs`): refused by no check, and a no-op once the marker is there. Every
    /// other commit fails with [`Error::Moved`] on a state that holds the marker, so the
    /// marker is linearized with every writer like any commit.
    async fn update_or_close<F>(&mut self, mut make_batch: F, closing: bool) -> Result<CommitInfo>
    where
        F: FnMut(&Collection) -> Batch,
    {
        let mut backoff = Backoff::new(self.config.max_attempts);
        let mut attempts = 0;
        loop {
            attempts += 1;
            self.load_newer().await?;
            if closing && self.moved() {
                return Ok(CommitInfo {
                    generation: self.generation,
                    committed: false,
                    attempts,
                    merged_heads: 0,
                });
            }
            self.refuse_moved()?;
            let batch = make_batch(self);
            if batch.is_empty() {
                return Ok(CommitInfo {
                    generation: self.generation,
                    committed: false,
                    attempts,
                    merged_heads: 0,
                });
            }
            if !closing {
                check_batch(&batch)?;
            }
            let records = batch.to_records();
            let mut segments: Vec<SegmentEntry> = self.live.clone();
            match self
                .publish(
                    SegmentKind::Batch,
                    records.clone(),
                    Vec::new(),
                    &mut segments,
                    self.purged_through,
                )
                .await?
            {
                Some(info) => {
                    let entry = segments.last().cloned().expect("the new segment is listed");
                    let merged_heads = self.heads.len().saturating_sub(1);
                    self.merge_records(records, entry.stamp).await?;
                    self.after_publish(info, segments, self.purged_through);
                    self.loaded.insert(entry.id);
                    self.raise_mark().await?;
                    if closing {
                        return Ok(CommitInfo {
                            generation: self.generation,
                            committed: true,
                            attempts,
                            merged_heads,
                        });
                    }
                    if self.heads_merged() {
                        // Concurrent commits are merged, not ordered: a rotation may have
                        // closed the collection beside this commit, and copied it without
                        // it. Not acknowledged then.
                        self.load_newer().await?;
                        self.refuse_moved()?;
                    }
                    // The batch is committed: a failed compaction after it (lost races
                    // until its attempts ran out, a backend error) is left for a later
                    // commit or `compact`, never reported as the commit's failure.
                    if let Err(e) = self.compact_tiers().await {
                        tracing::debug!(error = %e, "tier compaction after a commit failed");
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

    /// Writes a segment of `records` and publishes the next manifest listing `segments`
    /// plus that segment (appended to `segments`). Returns the new manifest's stamp, or
    /// `None` when another writer won the generation (compare-and-swap).
    async fn publish(
        &mut self,
        kind: SegmentKind,
        records: Arc<Vec<Record>>,
        covers: Vec<SegmentId>,
        segments: &mut Vec<SegmentEntry>,
        purged_through: u64,
    ) -> Result<Option<Stamp>> {
        let added = segments.len();
        self.publish_adding(kind, records, covers, segments, added, purged_through)
            .await
    }

    /// [`publish`](Self::publish), where the entries of `segments` from `added` on were
    /// stored beforehand by the caller (search segments) and take the new stamp.
    async fn publish_adding(
        &mut self,
        kind: SegmentKind,
        records: Arc<Vec<Record>>,
        covers: Vec<SegmentId>,
        segments: &mut Vec<SegmentEntry>,
        added: usize,
        purged_through: u64,
    ) -> Result<Option<Stamp>> {
        let generation = self.generation + 1;
        let stamp = Stamp {
            generation,
            writer: self.writer,
        };
        for entry in &mut segments[added..] {
            entry.stamp = stamp;
        }
        let id = SegmentId::random(&self.rng);
        let spec = NewSegment {
            id,
            kind,
            stamp,
            covers,
        };
        // Encoding and sealing a large segment (a compaction) is CPU work: off the
        // executor thread, over the same records (no copy of their bytes).
        let bytes = records
            .iter()
            .map(|r| r.key.len() + r.value.as_ref().map_or(0, Bytes::len))
            .sum();
        let (keys, rng, page_size) = (self.keys.clone(), self.rng.clone(), self.config.page_size);
        let (stored, entry) = crate::cpu::offload(bytes, move || {
            keys.seal_segment(&rng, spec, &records, page_size)
        })
        .await?;
        let path = naming::segment_path(&self.account, &self.tag, &id);
        let stored = Bytes::from(stored);
        self.store
            .put_opts(
                &path,
                stored.clone().into(),
                object_store::PutMode::Create.into(),
            )
            .await?;
        segments.push(entry);
        let header = ManifestHeader {
            generation,
            writer: self.writer,
        };
        let body = ManifestBody {
            parents: self.heads.clone(),
            purged_through,
            segments: segments.clone(),
        };
        let sealed = self.keys.seal_manifest(&self.rng, &header, &body);
        if sealed.len() > MAX_MANIFEST_LEN {
            let _ = self.store.delete(&path).await;
            return Err(Error::invalid(
                "the manifest would exceed the size readers accept",
            ));
        }
        let committed = Mark::new(generation, Sha256::digest(&sealed).into());
        let sealed = Bytes::from(sealed);
        let published = match self.objects.publish(generation, sealed.to_vec()).await {
            Ok(published) => published,
            Err(e) => {
                // The write may have landed (a lost response). Look before reporting.
                if self.landed(&header).await {
                    Published::Done
                } else {
                    return Err(e);
                }
            }
        };
        // On a conflict, the manifest may be our own earlier attempt (a retried request).
        if published == Published::Conflict && !self.landed(&header).await {
            let _ = self.store.delete(&path).await;
            segments.pop();
            return Ok(None);
        }
        let manifest_path = self.objects.path(&self.objects.own_name(generation));
        if self.loaded_at.elapsed() >= self.config.verify_after
            && !self.still_valid(&stamp, &path, &stored, segments).await?
        {
            // Built on a state that garbage collection removed while this commit stalled:
            // withdraw it, unacknowledged, and retry on the newest state.
            self.objects
                .delete(&self.objects.own_name(generation))
                .await?;
            let _ = self.store.delete(&path).await;
            segments.pop();
            return Ok(None);
        }
        match self.objects.mode() {
            CommitMode::CompareAndSwap => {}
            CommitMode::WriterUnique => {
                if !self.commit_mark(committed).await? {
                    // Another writer committed first: remove what this attempt wrote
                    // (nobody reads it: the mark never named it) and retry.
                    let _ = self
                        .objects
                        .delete(&self.objects.own_name(generation))
                        .await;
                    let _ = self.store.delete(&path).await;
                    segments.pop();
                    return Ok(None);
                }
                if self.loaded_at.elapsed() >= self.config.verify_after {
                    // A garbage collection may have taken the manifest (in flight for
                    // longer than the grace period) or the segment while this commit
                    // stalled: the same bytes again make the accepted state whole.
                    self.restore(&manifest_path, &sealed).await?;
                    self.restore(&path, &stored).await?;
                }
            }
        }
        Ok(Some(stamp))
    }

    /// Stores `bytes` at `path` again if the object is gone (same bytes, so the pins and
    /// digests that name it still hold).
    async fn restore(&self, path: &object_store::path::Path, bytes: &Bytes) -> Result<()> {
        if self.stored(path).await? {
            return Ok(());
        }
        match self
            .store
            .put_opts(
                path,
                bytes.clone().into(),
                object_store::PutMode::Create.into(),
            )
            .await
        {
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the manifest this handle has just published (`stamp`, listing `segments`,
    /// the last of which it wrote itself at `path` with the bytes `stored`) can be
    /// acknowledged after a stall: its own segment is stored (stored again, same bytes
    /// and so same pin, if the garbage collector removed it as an orphan meanwhile), and
    /// it is not a stale head: with compare-and-swap, no other manifest took the next
    /// generation on top of another one (ours then re-created a generation that had been
    /// collected); without, every segment it inherited is still stored.
    async fn still_valid(
        &self,
        stamp: &Stamp,
        path: &object_store::path::Path,
        stored: &Bytes,
        segments: &[SegmentEntry],
    ) -> Result<bool> {
        self.restore(path, stored).await?;
        match self.objects.mode() {
            CommitMode::CompareAndSwap => {
                if self.objects.newest_listed().await? <= stamp.generation {
                    return Ok(true);
                }
                // Newer generations exist: ours is on the chain only if the next one was
                // built on it.
                let next = self.objects.own_name(stamp.generation + 1);
                match self.objects.fetch(&next).await? {
                    None => Ok(false),
                    Some(bytes) => Ok(self.open_manifest(&next, &bytes)?.1.parents.contains(stamp)),
                }
            }
            // Built on the accepted manifest: the compare-and-set of the mark decides
            // whether it still is, and the garbage collector never removes what the
            // accepted manifest lists.
            CommitMode::WriterUnique if self.linear() => Ok(true),
            CommitMode::WriterUnique => {
                for entry in &segments[..segments.len().saturating_sub(1)] {
                    let inherited = naming::segment_path(&self.account, &self.tag, &entry.id);
                    if !self.stored(&inherited).await? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
        }
    }

    /// Whether an object exists (one HEAD).
    async fn stored(&self, path: &object_store::path::Path) -> Result<bool> {
        storage::exists(self.store.as_ref(), path).await
    }

    /// Where the next generation's manifest of this writer goes.
    fn next_manifest_path(&self) -> object_store::path::Path {
        self.objects
            .path(&self.objects.own_name(self.generation + 1))
    }

    /// Whether the manifest with `header` is stored (authenticated and ours).
    async fn landed(&self, header: &ManifestHeader) -> bool {
        let name = self.objects.own_name(header.generation);
        match self.objects.fetch(&name).await {
            Ok(Some(stored)) => {
                matches!(self.keys.open_manifest(&stored), Ok((h, _)) if h == *header)
            }
            _ => false,
        }
    }

    fn after_publish(&mut self, stamp: Stamp, live: Vec<SegmentEntry>, purged_through: u64) {
        self.generation = stamp.generation;
        self.heads = vec![stamp];
        self.live = merge_live(live);
        self.purged_through = purged_through;
    }

    /// Merges size tiers that have filled up: whenever `fanout` live segments share a
    /// tier (a power of four of their record count), they and every smaller segment are
    /// merged into one. Keeps the number of objects an open reads logarithmic, and the
    /// bytes rewritten per update amortised.
    pub(super) async fn compact_tiers(&mut self) -> Result<()> {
        let mut per_tier: BTreeMap<u32, usize> = BTreeMap::new();
        for entry in self.record_segments() {
            *per_tier.entry(tier(entry.records)).or_default() += 1;
        }
        let Some((&full_tier, _)) = per_tier.iter().find(|(_, &n)| n >= self.config.fanout) else {
            return Ok(());
        };
        let inputs: Vec<SegmentEntry> = self
            .record_segments()
            .filter(|e| tier(e.records) <= full_tier)
            .cloned()
            .collect();
        self.compact_segments(inputs).await.map(|_| ())
    }

    /// Merges every live segment into one (dropping deletions where that is safe) and
    /// commits it.
    ///
    /// # Errors
    /// As [`commit`](Self::commit).
    pub async fn compact(&mut self) -> Result<CommitInfo> {
        self.refresh().await?;
        let inputs = self.record_segments().cloned().collect();
        self.compact_segments(inputs).await
    }

    async fn compact_segments(&mut self, mut inputs: Vec<SegmentEntry>) -> Result<CommitInfo> {
        let mut backoff = Backoff::new(self.config.max_attempts);
        let mut attempts = 0;
        loop {
            attempts += 1;
            if inputs.len() < 2 && !(inputs.len() == 1 && self.view.iter().any(|v| v.deleted)) {
                return Ok(CommitInfo {
                    generation: self.generation,
                    committed: false,
                    attempts,
                    merged_heads: 0,
                });
            }
            let input_ids: HashSet<SegmentId> = inputs.iter().map(|e| e.id).collect();
            let full = self.record_segments().all(|e| input_ids.contains(&e.id));
            // Deletions can be forgotten only when nothing older can reappear: a full
            // compaction of a single chain of accepted manifests (compare-and-swap, or the
            // directory's mark naming the accepted manifest).
            let purge = full && self.linear();
            let records = Arc::new(if full {
                self.view_records(purge).await
            } else {
                self.merge_inputs(&inputs).await?
            });
            let mut segments: Vec<SegmentEntry> = self
                .live
                .iter()
                .filter(|e| !input_ids.contains(&e.id))
                .cloned()
                .collect();
            let covers = self.covers_of(&inputs);
            let purged_through = if purge {
                self.generation
            } else {
                self.purged_through
            };
            match self
                .publish(
                    SegmentKind::Compacted,
                    records,
                    covers,
                    &mut segments,
                    purged_through,
                )
                .await?
            {
                Some(stamp) => {
                    let entry = segments
                        .last()
                        .cloned()
                        .expect("the compacted segment is listed");
                    self.after_publish(stamp, segments, purged_through);
                    if purge {
                        self.view.retain(|v| !v.deleted);
                    }
                    self.loaded.retain(|id| !input_ids.contains(id));
                    self.loaded.insert(entry.id);
                    self.raise_mark().await?;
                    return Ok(CommitInfo {
                        generation: self.generation,
                        committed: true,
                        attempts,
                        merged_heads: 0,
                    });
                }
                None => {
                    backoff.wait(&self.rng, &self.next_manifest_path()).await?;
                    self.refresh().await?;
                    let live_ids: HashSet<SegmentId> =
                        self.record_segments().map(|e| e.id).collect();
                    inputs.retain(|e| live_ids.contains(&e.id));
                }
            }
        }
    }

    /// What a compaction of `inputs` covers: the inputs and, while heads are merged (a
    /// collection of the older writer-unique scheme not yet committed through the
    /// directory), what they covered themselves that a manifest in the store still lists.
    /// Coverage is thus transitive: a head published late (by a writer that stalled
    /// across two compactions) that lists segments replaced twice over does not bring
    /// them back. (On one chain of accepted manifests readers never meet such a head.)
    fn covers_of(&self, inputs: &[SegmentEntry]) -> Vec<SegmentId> {
        let mut covers: Vec<SegmentId> = inputs.iter().map(|e| e.id).collect();
        if !self.linear() {
            let listed: HashSet<SegmentId> = self
                .manifests
                .values()
                .flat_map(|(_, body)| body.segments.iter().map(|e| e.id))
                .collect();
            let mut seen: HashSet<SegmentId> = covers.iter().copied().collect();
            for id in inputs.iter().flat_map(|e| e.covers.iter()) {
                if listed.contains(id) && seen.insert(*id) {
                    covers.push(*id);
                }
            }
            covers.truncate(usize::from(u16::MAX));
        }
        covers
    }

    /// Every version in the view, with its stamp, as records of a compacted segment. A
    /// large view is walked in steps with a yield between them, so the executor thread
    /// is never held for long and the view never leaves the handle.
    async fn view_records(&self, drop_deletions: bool) -> Vec<Record> {
        const STEP: usize = 4096;
        let mut records = Vec::with_capacity(self.view.len());
        let versions = self.view.iter().filter(|v| !drop_deletions || !v.deleted);
        for (i, v) in versions.enumerate() {
            if i % STEP == STEP - 1 {
                tokio::task::yield_now().await;
            }
            records.push(Record {
                key: v.bytes.slice(..v.key_len as usize),
                stamp: Some(Stamp {
                    generation: v.generation(),
                    writer: self.writers[v.writer() as usize],
                }),
                value: (!v.deleted).then(|| v.bytes.slice(v.key_len as usize..)),
            });
        }
        records
    }

    /// The newest version of each key among `inputs` only, re-read from the store.
    /// The merge runs off the executor thread when the inputs are large.
    async fn merge_inputs(&self, inputs: &[SegmentEntry]) -> Result<Vec<Record>> {
        let fetched = self.fetch_segments(inputs.to_vec()).await?;
        let bytes = inputs.iter().map(|e| e.stored_len as usize).sum();
        crate::cpu::offload(bytes, move || {
            let mut merged: BTreeMap<Bytes, Record> = BTreeMap::new();
            for (entry, records) in fetched {
                for loaded in records {
                    let record = loaded.into_record(entry.stamp);
                    match merged.get(&record.key) {
                        Some(existing) if existing.stamp >= record.stamp => {}
                        _ => {
                            merged.insert(record.key.clone(), record);
                        }
                    }
                }
            }
            merged.into_values().collect()
        })
        .await
    }

    /// The tuning this collection was opened with.
    pub fn config(&self) -> &IndexConfig {
        &self.config
    }

    /// Deletes what no reader can need any more: manifests superseded for longer than
    /// `grace`, and segments that no remaining manifest lists and that were last listed
    /// (or, for orphans of failed commits, written) longer than `grace` ago. The grace
    /// period runs from **supersession**, not creation: a reader that loaded a manifest
    /// just before a compaction replaced it can still fetch its segments, however old
    /// they are. Heads, and everything they list, are never deleted.
    ///
    /// Concurrent commits are safe when `grace` is at least
    /// [`IndexConfig::verify_after`](super::IndexConfig::verify_after): a commit that
    /// stalls longer checks its manifest before acknowledging it.
    ///
    /// # Errors
    /// A backend failure (what was deleted before it stays deleted).
    pub async fn collect_garbage(&mut self, grace: Duration) -> Result<GcReport> {
        // List first, then load: every manifest listed is then known, with its parents.
        let prefix = naming::collection_prefix(&self.account, &self.tag);
        let metas: Vec<object_store::ObjectMeta> =
            self.store.list(Some(&prefix)).try_collect().await?;
        self.refresh().await?;
        let cutoff = chrono_now_minus(grace);
        let now = chrono::Utc::now();
        let mut manifest_times: BTreeMap<VersionName, chrono::DateTime<chrono::Utc>> =
            BTreeMap::new();
        let mut segment_metas = Vec::new();
        for meta in metas {
            let Some(file) = meta.location.filename() else {
                continue;
            };
            if meta.location.as_ref().contains("/m/") {
                if let Some(name) = VersionName::parse(file) {
                    manifest_times.insert(name, meta.last_modified);
                }
            } else {
                segment_metas.push(meta);
            }
        }
        // When each manifest was superseded: when the first manifest naming it as a
        // parent (with compare-and-swap, the next generation) was written.
        let heads: HashSet<Stamp> = self.heads.iter().copied().collect();
        let mut superseded_at: HashMap<VersionName, chrono::DateTime<chrono::Utc>> = HashMap::new();
        match self.objects.mode() {
            CommitMode::CompareAndSwap => {
                let mut later: Option<chrono::DateTime<chrono::Utc>> = None;
                for (name, time) in manifest_times.iter().rev() {
                    if name.generation < self.generation {
                        superseded_at.insert(*name, later.unwrap_or(now));
                    }
                    later = Some(*time);
                }
            }
            CommitMode::WriterUnique => {
                self.load_manifests(manifest_times.keys()).await?;
                // The committed manifests: the heads (the accepted manifest; several for
                // a collection of the older scheme) and their ancestors. A manifest is
                // superseded when the first committed manifest naming it as a parent
                // was written.
                let mut committed: HashSet<VersionName> = HashSet::new();
                let mut todo: Vec<Stamp> = self.heads.clone();
                while let Some(stamp) = todo.pop() {
                    let name = VersionName {
                        generation: stamp.generation,
                        writer: Some(stamp.writer),
                    };
                    if committed.insert(name) {
                        if let Some((_, body)) = self.manifests.get(&name) {
                            todo.extend(body.parents.iter().copied());
                        }
                    }
                }
                for name in &committed {
                    let Some((_, body)) = self.manifests.get(name) else {
                        continue;
                    };
                    let written = manifest_times.get(name).copied().unwrap_or(now);
                    for parent in &body.parents {
                        let parent = VersionName {
                            generation: parent.generation,
                            writer: Some(parent.writer),
                        };
                        let at = superseded_at.entry(parent).or_insert(written);
                        *at = (*at).min(written);
                    }
                }
                for (name, written) in &manifest_times {
                    let stamp = name.writer.map(|writer| Stamp {
                        generation: name.generation,
                        writer,
                    });
                    if stamp.is_none_or(|s| heads.contains(&s)) {
                        continue;
                    }
                    if name.generation > self.generation {
                        // Above the accepted generation: a commit in flight (its
                        // compare-and-set not made yet), or one that crashed before it.
                        // Kept for the grace period from its writing; a commit that
                        // stalls longer stores it again once accepted.
                        superseded_at.entry(*name).or_insert(*written);
                    } else {
                        // Not committed and never to be (the mark is past its
                        // generation: a loser left behind), or superseded so long ago
                        // that its successor was collected.
                        superseded_at.entry(*name).or_insert(cutoff);
                    }
                }
            }
        }
        let doomed: Vec<VersionName> = superseded_at
            .iter()
            .filter(|(name, at)| **at <= cutoff && manifest_times.contains_key(name))
            .map(|(name, _)| *name)
            .collect();
        // Segments any remaining manifest lists stay, and so do those younger than the
        // grace period (a commit in flight may be about to list them).
        let mut kept: HashSet<String> = self.live.iter().map(|e| e.id.to_hex()).collect();
        let doomed_set: HashSet<VersionName> = doomed.iter().copied().collect();
        for name in manifest_times.keys().filter(|n| !doomed_set.contains(n)) {
            let segments = match self.manifests.get(name) {
                Some((_, body)) => body.segments.clone(),
                None if name.generation >= self.generation => continue,
                None => match self.objects.fetch(name).await? {
                    Some(stored) => self.open_manifest(name, &stored)?.1.segments,
                    None => continue,
                },
            };
            kept.extend(segments.iter().map(|e| e.id.to_hex()));
        }
        let mut report = GcReport::default();
        for name in &doomed {
            self.objects.delete(name).await?;
            self.manifests.remove(name);
            report.manifests += 1;
        }
        if self.linear() {
            // Only garbage collection needs every manifest: on one chain of accepted
            // manifests a refresh reads the accepted one only.
            self.manifests.clear();
        }
        for meta in segment_metas {
            let file = meta.location.filename().unwrap_or_default();
            if meta.last_modified > cutoff || kept.contains(file) {
                continue;
            }
            match self.store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => report.segments += 1,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(report)
    }
}

impl Collection {
    /// Loads into `self.manifests` those of `names` not known yet (gone ones are
    /// skipped).
    async fn load_manifests(&mut self, names: impl Iterator<Item = &VersionName>) -> Result<()> {
        let unknown: Vec<VersionName> = names
            .filter(|n| !self.manifests.contains_key(n))
            .copied()
            .collect();
        let objects = &self.objects;
        let fetched: Vec<(VersionName, Option<Bytes>)> = futures::stream::iter(unknown)
            .map(|name| async move { Ok::<_, Error>((name, objects.fetch(&name).await?)) })
            .buffered(self.config.fetch_concurrency)
            .try_collect()
            .await?;
        for (name, stored) in fetched {
            if let Some(stored) = stored {
                let opened = self.open_manifest(&name, &stored)?;
                self.manifests.insert(name, opened);
            }
        }
        Ok(())
    }
}

fn chrono_now_minus(grace: Duration) -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now() - chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX)
}

fn check_batch(batch: &Batch) -> Result<()> {
    for (key, value) in batch.iter() {
        if key == rekey::MOVED {
            return Err(Error::invalid("this index key is reserved"));
        }
        if key.len() > MAX_KEY_LEN {
            return Err(Error::invalid("index keys are at most 65535 bytes"));
        }
        if value.is_some_and(|v| u32::try_from(v.len()).is_err()) {
            return Err(Error::invalid("index values are under 4 GiB"));
        }
    }
    Ok(())
}
