//! The account's text index (issue 14, `docs/proposals/search.md` §2–§4): the search
//! segments of its `search` collection, which emails they cover, the exact answer of text
//! keys from them, new segments for the texts of emails they lack, and merges.
//!
//! Answers are exact: a key is answered from the segments only where that is the oracle's
//! answer ([`oracle`](super::oracle)); the rest is verified on the text store or the
//! header block, and an email the segments do not cover is read and scanned (and its text
//! indexed on the way). So a search gives the same result before, during and after
//! indexing; only its speed changes.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use super::cache::PageCache;
use super::extract::{extract_header, ExtractedText, EXTRACTION_VERSION};
use super::fold::{fold, UNICODE_VERSION};
use super::matches::Matches;
use super::merge::{merge_segments, MergeOutcome};
use super::oracle::{Oracle, TextKey};
use super::segment::{words, DocSet, DocText, ReadPolicy, SegmentBuilder, SegmentReader};
use crate::error::{Error, Result};
use crate::format::index::SegmentEntry;
use crate::format::search::{Field, DEFAULT_PAGE_CLASS};
use crate::ids::{AccountId, EmailId, SegmentId};
use crate::index::{Batch, Collection, CollectionKeys, IndexStore, Side};

/// Segment readers opened at once: each open is a read and a decryption on the blocking
/// pool, and every thread that allocates there may hold an allocator arena of its own (all
/// of a 100 000-message account's segments at once added up to 8 MiB to a session's peak).
const OPEN_AT_ONCE: usize = 4;

/// Name of the index collection that holds the search segments.
pub(crate) const COLLECTION: &[u8] = b"search";

/// Bytes of decrypted pages an account keeps (§3.3), and a thirty-second of that for
/// decompressed text frames (dictionaries are kept by their segments' readers).
const CACHE_BYTES: usize = 32 << 20;

/// Documents per segment written at once (a catch-up writes segments of this size).
pub(crate) const SEGMENT_DOCS: usize = 512;

/// Folded text per segment written at once.
pub(crate) const SEGMENT_TEXT: u64 = 8 << 20;

/// Segments of one size tier merged into one (§3.5).
const FANOUT: usize = 8;

/// Version of how words are cut for the dictionary (`segment::words`: maximal runs of
/// alphanumeric characters).
const WORDS_VERSION: u32 = 1;

/// What a segment's text depends on: the extraction, the word cutting and the Unicode
/// data of the folding. A segment of another version is ignored (its emails are read
/// and indexed again).
pub(crate) fn text_version() -> u32 {
    u32::from(EXTRACTION_VERSION) | WORDS_VERSION << 8 | u32::from(UNICODE_VERSION.0) << 16
}

/// A needle's plan: answered from the dictionary alone, or candidates to verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Plan {
    /// The empty needle: every message.
    Everything,
    /// One word without separators: the docs whose words contain it (exact).
    Word(Vec<u8>),
    /// Anything else (words and separators): candidates verified on the text.
    Phrase(String),
}

impl Plan {
    pub(super) fn of(folded: &str) -> Self {
        if folded.is_empty() {
            return Plan::Everything;
        }
        let mut w = words(folded);
        match (w.next(), w.next()) {
            (Some(word), None) if word.len() == folded.len() => {
                Plan::Word(word.as_bytes().to_vec())
            }
            _ => Plan::Phrase(folded.to_owned()),
        }
    }
}

/// What [`TextIndex::find`] answered, over the positions of the list searched.
#[derive(Debug)]
pub(crate) struct Found {
    /// Per key, the positions that match it.
    pub(crate) matches: Vec<Matches>,
    /// Positions of the emails whose answer the index cannot give (a header to verify
    /// and no header block kept in the email record): the caller scans them.
    pub(crate) unverified: Matches,
}

/// Where a list of emails is in the live segments: per segment (in the index's order),
/// each doc's position in the list, [`Scope::OUT`] for a doc whose email is not in it
/// (4 bytes a doc: what a search looks up instead of a set of the emails).
#[derive(Debug, Clone)]
pub(crate) struct Scope {
    positions: Arc<[Box<[u32]>]>,
    len: u32,
    /// The [`TextIndex::generation`] it was placed in.
    readers: u64,
}

impl Scope {
    /// The position of a doc whose email is out of scope.
    const OUT: u32 = u32::MAX;

    /// This scope narrowed to the positions of `within`.
    pub(crate) fn within(&self, within: &Matches) -> Scope {
        let keep = |p: u32| p != Scope::OUT && within.contains(p as usize);
        Scope {
            positions: self
                .positions
                .iter()
                .map(|positions| {
                    positions
                        .iter()
                        .map(|&p| if keep(p) { p } else { Scope::OUT })
                        .collect()
                })
                .collect(),
            len: self.len,
            readers: self.readers,
        }
    }
}

/// Emails sorted by [`TextIndex::partition`] (cheap to clone).
#[derive(Debug, Clone)]
pub(crate) struct Partition {
    emails: Arc<[EmailId]>,
    /// Where the emails a live segment covers are (the first position of each).
    pub(crate) covered: Scope,
    /// Positions of an email that is in the list before: (its first, this one).
    pub(crate) repeats: Arc<[(u32, u32)]>,
    /// The others, each once (at its first position), in the order given.
    pub(crate) uncovered: Arc<[(u32, EmailId)]>,
}

/// The open text index of one account.
pub(crate) struct TextIndex {
    collection: Collection,
    /// The live segments of the current text version, in stamp order.
    readers: Vec<Arc<SegmentReader>>,
    /// The last list of emails [`partition`](Self::partition)ed and its answer, until
    /// the segments change: a server searches the same mailbox again and again, and
    /// comparing the list is a scan of it where placing each email is a random access
    /// into a map of them all.
    memo: Option<Partition>,
    /// Counts the changes of `readers` (what a [`Scope`] was placed in).
    generation: u64,
    cache: PageCache,
    policy: ReadPolicy,
    page_class: u8,
}

impl std::fmt::Debug for TextIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextIndex")
            .field("segments", &self.readers.len())
            .field(
                "docs",
                &self.readers.iter().map(|r| r.docs().len()).sum::<usize>(),
            )
            .field(
                "dictionaries",
                &self.readers.iter().map(|r| r.pinned_len()).sum::<usize>(),
            )
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl TextIndex {
    /// Opens the index of `account` (its manifest, then every live segment's trailer and
    /// doc table).
    ///
    /// # Errors
    /// As [`IndexStore::open`] and [`SegmentReader::open`].
    pub(crate) async fn open(
        index: &IndexStore,
        account: AccountId,
        keys: Arc<CollectionKeys>,
    ) -> Result<Self> {
        Self::with_collection(index.open_keyed(account, keys).await?).await
    }

    /// The index of an open `collection` (refreshed here): its live segments opened.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    async fn with_collection(mut collection: Collection) -> Result<Self> {
        collection.refresh().await?;
        let mut me = Self {
            collection,
            readers: Vec::new(),
            memo: None,
            generation: 0,
            cache: PageCache::new(CACHE_BYTES),
            policy: ReadPolicy::default(),
            page_class: DEFAULT_PAGE_CLASS,
        };
        me.sync().await?;
        Ok(me)
    }

    /// Loads what other writers committed (one manifest request when nothing changed).
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub(crate) async fn refresh(&mut self) -> Result<()> {
        if self.collection.refresh().await? {
            self.sync().await?;
        }
        Ok(())
    }

    /// Opens the readers of the live segments not open yet, drops those of segments no
    /// longer live.
    async fn sync(&mut self) -> Result<()> {
        let live: Vec<SegmentEntry> = self.collection.search_segments().cloned().collect();
        let mut open: HashMap<SegmentId, Arc<SegmentReader>> =
            self.readers.drain(..).map(|r| (r.entry().id, r)).collect();
        let pages = self.collection.search_pages();
        let policy = self.policy;
        let closed: Vec<SegmentEntry> = live
            .iter()
            .filter(|e| !open.contains_key(&e.id))
            .cloned()
            .collect();
        let new: Vec<SegmentReader> = futures::stream::iter(closed)
            .map(move |e| {
                let pages = pages.clone();
                async move { SegmentReader::open(pages, &e, policy).await }
            })
            .buffered(OPEN_AT_ONCE)
            .try_collect()
            .await?;
        for reader in new {
            open.insert(reader.entry().id, Arc::new(reader));
        }
        let version = text_version();
        self.readers = live
            .iter()
            .filter_map(|e| open.remove(&e.id))
            .filter(|r| r.trailer().text_version == version)
            .collect();
        self.memo = None;
        self.generation += 1;
        Ok(())
    }

    /// Where the emails of `emails` a live segment covers are, and the others (each once,
    /// in the order given). Remembered for the same list until the segments change.
    ///
    /// # Errors
    /// [`crate::Error::InvalidArgument`] for a list of `u32::MAX` emails or more.
    pub(crate) fn partition(&mut self, emails: &[EmailId]) -> crate::Result<Partition> {
        if let Some(memo) = &self.memo {
            if memo.emails[..] == *emails {
                return Ok(memo.clone());
            }
        }
        let len = u32::try_from(emails.len())
            .ok()
            .filter(|&n| n < Scope::OUT)
            .ok_or_else(|| crate::Error::invalid("a search over 2^32 - 1 emails or more"))?;
        let mut first: HashMap<EmailId, u32> = HashMap::with_capacity(emails.len());
        let mut repeats = Vec::new();
        for (p, email) in (0..len).zip(emails) {
            match first.entry(*email) {
                Entry::Occupied(at) => repeats.push((*at.get(), p)),
                Entry::Vacant(slot) => {
                    slot.insert(p);
                }
            }
        }
        let covered = self.scope(len, &|e| first.get(e).copied());
        let mut placed = Matches::none(len);
        for positions in covered.positions.iter() {
            for &p in positions.iter().filter(|&&p| p != Scope::OUT) {
                placed.insert(p);
            }
        }
        let uncovered: Vec<(u32, EmailId)> = (0..len)
            .zip(emails)
            .filter(|(p, e)| !placed.contains(*p as usize) && first.get(*e) == Some(p))
            .map(|(p, e)| (p, *e))
            .collect();
        let partition = Partition {
            emails: emails.into(),
            covered,
            repeats: repeats.into(),
            uncovered: uncovered.into(),
        };
        self.memo = Some(partition.clone());
        Ok(partition)
    }

    /// The scope of a list of `len` emails, `position` giving where an email is in it.
    fn scope(&self, len: u32, position: &dyn Fn(&EmailId) -> Option<u32>) -> Scope {
        Scope {
            positions: self
                .readers
                .iter()
                .map(|r| {
                    r.docs()
                        .iter()
                        .map(|d| position(&d.email).unwrap_or(Scope::OUT))
                        .collect()
                })
                .collect(),
            len,
            readers: self.generation,
        }
    }

    /// Stores the texts `docs` as one segment and commits it.
    ///
    /// # Errors
    /// Backend failures; [`crate::Error::Moved`] after a root rotation.
    pub(crate) async fn add(&mut self, docs: &[(EmailId, ExtractedText)]) -> Result<()> {
        if docs.is_empty() {
            return Ok(());
        }
        store_segment(&mut self.collection, docs, self.page_class).await?;
        self.sync().await
    }

    /// Merges segments of one size tier when there are [`FANOUT`] of them, dropping the
    /// docs of emails `live` says are gone. Another writer's merge of the same segments
    /// wins (nothing is lost: its merge has the same docs).
    ///
    /// # Errors
    /// As [`merge_segments`].
    pub(crate) async fn maintain(
        &mut self,
        live: &(dyn Fn(&EmailId) -> bool + Sync),
    ) -> Result<()> {
        loop {
            let mut tiers: HashMap<u32, Vec<SegmentEntry>> = HashMap::new();
            for reader in &self.readers {
                tiers
                    .entry(tier(reader.trailer().docs))
                    .or_default()
                    .push(reader.entry().clone());
            }
            let Some(inputs) = tiers
                .into_values()
                .filter(|t| t.len() >= FANOUT)
                .min_by_key(|t| t.first().map(|e| e.stamp))
            else {
                return Ok(());
            };
            let inputs = &inputs[..FANOUT];
            let outcome =
                merge_segments(&mut self.collection, inputs, live, self.page_class).await?;
            if outcome == MergeOutcome::Lost {
                self.collection.refresh().await?;
            }
            // The merged segments' pages leave the cache as it evicts.
            self.sync().await?;
        }
    }

    /// For each key, the positions of `scope` (a [`partition`](Self::partition)'s covered
    /// emails, or part of them: [`Scope::within`]) whose emails match it.
    ///
    /// `header_block` gives an email's header block from its record (for `HEADER` keys
    /// and for header candidates of phrases); an email without one is returned in
    /// [`Found::unverified`] when its answer depends on it.
    ///
    /// # Errors
    /// [`crate::Error::Tampered`] for a segment page that does not authenticate or
    /// parse; [`crate::Error::InvalidArgument`] for a scope placed before the segments
    /// last changed; backend failures.
    pub(crate) async fn find(
        &self,
        keys: &[TextKey],
        scope: &Scope,
        header_block: &(dyn Fn(&EmailId) -> Option<Vec<u8>> + Sync),
    ) -> Result<Found> {
        let mut found = Found {
            matches: vec![Matches::none(scope.len); keys.len()],
            unverified: Matches::none(scope.len),
        };
        if scope.readers != self.generation {
            return Err(Error::invalid("a search scope of other segments"));
        }
        if keys.is_empty() {
            return Ok(found);
        }
        // HEADER keys: on the header blocks the records keep (every field, unshortened,
        // excluded ones too: what the segments' header postings do not hold).
        if keys.iter().any(|k| matches!(k, TextKey::Header(..))) {
            let oracle = Oracle::new(keys, usize::MAX);
            let names: Vec<Option<Vec<u8>>> = keys
                .iter()
                .map(|k| match k {
                    TextKey::Header(name, _) => Some(name.as_bytes().to_ascii_lowercase()),
                    _ => None,
                })
                .collect();
            let mut seen = Matches::none(scope.len);
            for (reader, positions) in self.readers.iter().zip(scope.positions.iter()) {
                for (doc, &p) in reader.docs().iter().zip(positions.iter()) {
                    if p == Scope::OUT || seen.contains(p as usize) {
                        continue;
                    }
                    seen.insert(p);
                    let email = doc.email;
                    let Some(block) = header_block(&email) else {
                        found.unverified.insert(p);
                        continue;
                    };
                    // Most blocks lack a rare field's name: skip parsing them.
                    let lower = block.to_ascii_lowercase();
                    let named: Vec<bool> = names
                        .iter()
                        .map(|n| {
                            n.as_ref()
                                .is_some_and(|n| memchr::memmem::find(&lower, n).is_some())
                        })
                        .collect();
                    if !named.iter().any(|&n| n) {
                        continue;
                    }
                    for (i, m) in oracle.matches_header_block(&block).into_iter().enumerate() {
                        if m == Some(true) && named[i] {
                            found.matches[i].insert(p);
                        }
                    }
                }
            }
        }
        let plans: Vec<Option<(Plan, bool)>> = keys
            .iter()
            .map(|k| match k {
                TextKey::Body(s) => Some((Plan::of(&fold(s)), false)),
                TextKey::Text(s) => Some((Plan::of(&fold(s)), true)),
                TextKey::Header(..) => None,
            })
            .collect();
        let words: Vec<(usize, Vec<u8>)> = plans
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match p {
                Some((Plan::Word(w), _)) => Some((i, w.clone())),
                _ => None,
            })
            .collect();
        let patterns: Vec<Vec<u8>> = words.iter().map(|(_, w)| w.clone()).collect();
        for (reader, positions) in self.readers.iter().zip(scope.positions.iter()) {
            let docs = reader.docs();
            let mut within = DocSet::empty(reader.trailer().docs);
            for (d, &p) in positions.iter().enumerate() {
                if p != Scope::OUT {
                    within.insert(d as u32);
                }
            }
            if within.is_empty() {
                continue;
            }
            let position = |d: u32| positions[d as usize];
            // What a miss reads of this segment, shared by the query's keys.
            let mut sealed = None;
            if !patterns.is_empty() {
                let answers = reader.find_all(&self.cache, &patterns, &mut sealed).await?;
                for ((i, _), fields) in words.iter().zip(answers) {
                    let text = plans[*i].as_ref().is_some_and(|(_, text)| *text);
                    let mut set = fields.field(Field::Body).clone();
                    if text {
                        set.union(fields.field(Field::Header));
                        set.union(fields.field(Field::Mime));
                    }
                    set.intersect(&within);
                    set.iter()
                        .for_each(|d| found.matches[*i].insert(position(d)));
                }
            }
            for (i, plan) in plans.iter().enumerate() {
                match plan {
                    Some((Plan::Everything, _)) => {
                        within
                            .iter()
                            .for_each(|d| found.matches[i].insert(position(d)));
                    }
                    Some((Plan::Phrase(needle), text)) => {
                        let m = reader
                            .find_phrase_within(&self.cache, needle, &within, &mut sealed)
                            .await?;
                        m.body
                            .iter()
                            .for_each(|d| found.matches[i].insert(position(d)));
                        if *text {
                            m.mime
                                .iter()
                                .for_each(|d| found.matches[i].insert(position(d)));
                            let finder = memchr::memmem::Finder::new(needle.as_bytes());
                            for d in m.header_candidates.iter() {
                                let p = position(d);
                                if found.matches[i].contains(p as usize) {
                                    continue;
                                }
                                let email = docs[d as usize].email;
                                match header_block(&email) {
                                    Some(block) => {
                                        let header = extract_header(&block);
                                        if finder.find(header.as_bytes()).is_some() {
                                            found.matches[i].insert(p);
                                        }
                                    }
                                    None => found.unverified.insert(p),
                                }
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(found)
    }
}

/// Stores the texts `docs` as one search segment of `collection` and commits it (a
/// lost compare-and-swap only republishes the manifest: appending a segment never
/// conflicts with another writer's content).
///
/// # Errors
/// Backend failures; [`crate::Error::Moved`] after a root rotation.
async fn store_segment(
    collection: &mut Collection,
    docs: &[(EmailId, ExtractedText)],
    page_class: u8,
) -> Result<()> {
    // Building a segment takes tens of milliseconds per 512 texts: off the executor, on
    // a copy of the texts (callers keep theirs to try again elsewhere).
    let docs = docs.to_vec();
    let bytes = docs
        .iter()
        .map(|(_, t)| t.header.len() + t.body.len() + t.mime.len())
        .sum();
    let plain = crate::cpu::offload(bytes, move || {
        let mut builder = SegmentBuilder::new(page_class, text_version());
        for (email, text) in &docs {
            builder.add(
                *email,
                &DocText {
                    header: &text.header,
                    body: &text.body,
                    mime: &text.mime,
                    complete: text.complete,
                },
            )?;
        }
        Ok::<_, crate::Error>(builder.finish())
    })
    .await??;
    let entry = collection.search_pages().put(plain).await?;
    collection
        .commit_segments(vec![entry], Vec::new(), Batch::new())
        .await?;
    Ok(())
}

/// Looks a followed rotation is given per open or store: each rotation overtaking one
/// moves the collection once, and the next rotation needs a new keyring.
const LOOKS: usize = 3;

/// Where the collection of a followed rotation (its `(old, new)` keys) is now, and its
/// keys there ([`IndexStore::rotating_side`]: the final copy made when it is due).
///
/// # Errors
/// As [`IndexStore::rotating_side`].
async fn located(
    index: &IndexStore,
    account: AccountId,
    (old, new): &(Arc<CollectionKeys>, Arc<CollectionKeys>),
) -> Result<(Side, Arc<CollectionKeys>)> {
    let side = index
        .rotating_side(account, old.clone(), new.clone())
        .await?;
    let keys = match side {
        Side::Old => old.clone(),
        Side::New => new.clone(),
    };
    Ok((side, keys))
}

/// The account's text index, opened at its first use (a session that never searches
/// text reads nothing of it), and the texts this handle extracted at append that no
/// segment holds yet (proposal §3.6).
///
/// **The buffer.** An append (or a transaction's appends) hands the texts of its
/// messages here after its mail commit: no request, so an append stays one mail commit.
/// The buffer is written as one segment when it holds [`SEGMENT_DOCS`] texts or
/// [`SEGMENT_TEXT`] bytes, when [`flush`](Self::flush) is called, and when the slot is
/// dropped (the handle closes: a task on the current runtime writes it). Writing it does
/// not open the index: a handle that never searches opens only the collection (one
/// manifest read), never the segments' readers. A search answers buffered emails from
/// the buffer (a scan of their texts, no body read). A crash loses the buffer and
/// nothing else: those emails are not covered, so the next search (or the re-index)
/// reads their bodies.
pub(crate) struct TextSlot {
    index: IndexStore,
    account: AccountId,
    /// The keys of the collection this slot opens (or has open).
    keys: Arc<CollectionKeys>,
    /// While a root rotation is under way: the collection's keys under the previous root
    /// and under the new one. Each open looks where the collection is then
    /// ([`IndexStore::rotating_side`]), and an open index or writer that meets the
    /// rotation's close (`Moved`) is opened again where the collection went.
    following: Option<(Arc<CollectionKeys>, Arc<CollectionKeys>)>,
    open: Option<TextIndex>,
    /// The collection alone, opened to store segments by a handle that has not searched.
    writer: Option<Collection>,
    /// Texts extracted at append, not in a segment yet.
    buffer: HashMap<EmailId, ExtractedText>,
    /// Their bytes.
    buffered: usize,
}

impl std::fmt::Debug for TextSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextSlot")
            .field("open", &self.open)
            .field("buffered", &self.buffer.len())
            .finish_non_exhaustive()
    }
}

impl TextSlot {
    /// The slot of `account`'s index, with the keys of its collection.
    pub(crate) fn new(index: IndexStore, account: AccountId, keys: Arc<CollectionKeys>) -> Self {
        Self {
            index,
            account,
            keys,
            following: None,
            open: None,
            writer: None,
            buffer: HashMap::new(),
            buffered: 0,
        }
    }

    /// Makes the slot follow a root rotation under way: `old` and `new` are the keys of
    /// the collection under the previous root and under the new one. Nothing is opened
    /// yet.
    pub(crate) fn follow_rotation(&mut self, old: Arc<CollectionKeys>, new: Arc<CollectionKeys>) {
        self.open = None;
        self.writer = None;
        // Until a look says otherwise: what is written under the old keys after the
        // close is refused (`Moved`), what is written under the new ones before the
        // final copy would be replaced by it.
        self.keys = old.clone();
        self.following = Some((old, new));
    }

    /// The keys to open the collection with now: where a rotation being followed has
    /// the collection (the final copy made here when it is due); the slot's keys
    /// otherwise. Once the collection is under the new keys, the rotation is no longer
    /// followed.
    ///
    /// # Errors
    /// As [`IndexStore::rotating_side`].
    async fn current_keys(&mut self) -> Result<Arc<CollectionKeys>> {
        if let Some(following) = &self.following {
            let (side, keys) = located(&self.index, self.account, following).await?;
            self.keys = keys;
            if side == Side::New {
                self.following = None;
            }
        }
        Ok(self.keys.clone())
    }

    /// Whether `result` failed because the rotation being followed moved the collection
    /// from under the slot (its close, or its deletion after the final copy): the slot
    /// then opens it again where it went.
    fn overtaken<T>(&self, result: &Result<T>) -> bool {
        self.following.is_some()
            && matches!(
                result,
                Err(Error::Moved | Error::NotFound { .. } | Error::Rollback { .. })
            )
    }

    /// Opens the index where the collection is (following a rotation: a rotation that
    /// moves it between the look and the open makes the open look again).
    ///
    /// # Errors
    /// As [`TextIndex::open`] and [`IndexStore::rotating_side`].
    async fn open_index(&mut self) -> Result<TextIndex> {
        let mut looks = 1;
        loop {
            let keys = self.current_keys().await?;
            let opened = TextIndex::open(&self.index, self.account, keys).await;
            if looks < LOOKS && self.overtaken(&opened) {
                looks += 1;
                continue;
            }
            return opened;
        }
    }

    /// The index, opened or refreshed.
    ///
    /// # Errors
    /// As [`TextIndex::open`].
    pub(crate) async fn get(&mut self) -> Result<&mut TextIndex> {
        // An index whose refresh fails is opened again next time.
        let index = match (self.open.take(), self.writer.take()) {
            (Some(mut index), _) => {
                let refreshed = index.refresh().await;
                if self.overtaken(&refreshed) {
                    self.open_index().await?
                } else {
                    refreshed?;
                    index
                }
            }
            (None, Some(collection)) => {
                let opened = TextIndex::with_collection(collection).await;
                if self.overtaken(&opened) {
                    self.open_index().await?
                } else {
                    opened?
                }
            }
            (None, None) => self.open_index().await?,
        };
        Ok(self.open.insert(index))
    }

    /// The index, opened or refreshed (as [`get`](Self::get)), and the buffer.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub(crate) async fn get_with_buffer(
        &mut self,
    ) -> Result<(&mut TextIndex, &HashMap<EmailId, ExtractedText>)> {
        self.get().await?;
        let index = self.open.as_mut().expect("opened by get");
        Ok((index, &self.buffer))
    }

    /// Adds texts to the buffer; returns whether it is full (time to
    /// [`flush`](Self::flush)).
    pub(crate) fn buffer(
        &mut self,
        docs: impl IntoIterator<Item = (EmailId, ExtractedText)>,
    ) -> bool {
        for (email, text) in docs {
            self.buffered += text.len();
            if let Some(old) = self.buffer.insert(email, text) {
                self.buffered -= old.len();
            }
        }
        self.buffer.len() >= SEGMENT_DOCS || self.buffered as u64 >= SEGMENT_TEXT
    }

    /// Writes the buffer's texts of the emails `live` keeps as one segment (nothing when
    /// there are none) and empties it. On a failure the buffer is emptied too: its emails
    /// are then indexed by reading their bodies, as after a crash.
    ///
    /// # Errors
    /// As [`store`](Self::store).
    pub(crate) async fn flush(&mut self, live: &(dyn Fn(&EmailId) -> bool + Sync)) -> Result<()> {
        let docs: Vec<(EmailId, ExtractedText)> = std::mem::take(&mut self.buffer)
            .into_iter()
            .filter(|(email, _)| live(email))
            .collect();
        self.buffered = 0;
        self.store(&docs).await
    }

    /// Stores the texts `docs` as one segment (through the open index, or through the
    /// collection alone when the index is not open: its segments are not read).
    ///
    /// # Errors
    /// As [`TextIndex::add`].
    pub(crate) async fn store(&mut self, docs: &[(EmailId, ExtractedText)]) -> Result<()> {
        if docs.is_empty() {
            return Ok(());
        }
        if let Some(index) = self.open.as_mut() {
            // While a rotation is followed, the collection is looked at first: pages
            // sealed under the old keys after its close would stay in the store (the
            // commit is refused, the pages are written before it).
            let added = if self.following.is_some() {
                match index.refresh().await {
                    Ok(()) => index.add(docs).await,
                    Err(e) => Err(e),
                }
            } else {
                index.add(docs).await
            };
            if !self.overtaken(&added) {
                return added;
            }
            // Moved by the rotation followed: stored where the collection went.
            self.open = None;
        }
        let mut looks = 1;
        loop {
            let following = self.following.is_some();
            let stored = match self.writer.as_mut() {
                Some(collection) if following => match collection.refresh().await {
                    Ok(_) => store_segment(collection, docs, DEFAULT_PAGE_CLASS).await,
                    Err(e) => Err(e),
                },
                Some(collection) => store_segment(collection, docs, DEFAULT_PAGE_CLASS).await,
                None => {
                    let keys = self.current_keys().await?;
                    match self.index.open_keyed(self.account, keys).await {
                        Ok(collection) => {
                            let collection = self.writer.insert(collection);
                            store_segment(collection, docs, DEFAULT_PAGE_CLASS).await
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            if looks < LOOKS && self.overtaken(&stored) {
                looks += 1;
                self.writer = None;
                continue;
            }
            return stored;
        }
    }
}

impl Drop for TextSlot {
    /// A buffer left is written by a task on the current runtime (none: it is lost, as
    /// in a crash, and its emails are indexed by reading their bodies).
    fn drop(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let docs: Vec<(EmailId, ExtractedText)> = self.buffer.drain().collect();
        let collection = match self.open.take() {
            Some(index) => Some(index.collection),
            None => self.writer.take(),
        };
        let (index, account, keys) = (self.index.clone(), self.account, self.keys.clone());
        let following = self.following.take();
        runtime.spawn(async move {
            let stored = async {
                let mut collection = match (collection, following) {
                    (Some(collection), None) => collection,
                    (None, None) => index.open_keyed(account, keys).await?,
                    // Following a rotation: stored where the collection is now.
                    (_, Some(following)) => {
                        let (_, keys) = located(&index, account, &following).await?;
                        index.open_keyed(account, keys).await?
                    }
                };
                store_segment(&mut collection, &docs, DEFAULT_PAGE_CLASS).await
            };
            if let Err(e) = stored.await {
                tracing::warn!(%account, error = %e, "texts of appended mail not indexed");
            }
        });
    }
}

impl TextSlot {
    /// Collects the garbage of the index's collection (segments a merge replaced,
    /// superseded manifests) when this handle opened it: the handle that merges.
    ///
    /// # Errors
    /// As [`Collection::collect_garbage`].
    pub(crate) async fn collect_garbage(
        &mut self,
        grace: std::time::Duration,
    ) -> Result<Option<crate::index::GcReport>> {
        match &mut self.open {
            Some(index) => Ok(Some(index.collection.collect_garbage(grace).await?)),
            None => Ok(None),
        }
    }
}

/// The size tier of a segment of `docs` documents: 0 below [`FANOUT`] half-full segments
/// of [`SEGMENT_DOCS`], one more for each factor of [`FANOUT`]. Counted from half a
/// segment so that a merge of [`FANOUT`] segments of one tier lands in the next even when
/// its inputs were not full (eight imports of 488 emails make 3 904 documents: tier 1,
/// not a tier 0 merged again with seven small ones).
fn tier(docs: u32) -> u32 {
    let mut n = docs as usize / (SEGMENT_DOCS / 2);
    let mut t = 0;
    while n >= FANOUT {
        n /= FANOUT;
        t += 1;
    }
    t
}

#[cfg(test)]
mod tests {
    use super::{tier, Plan, FANOUT, SEGMENT_DOCS};

    #[test]
    fn plans() {
        assert_eq!(Plan::of(""), Plan::Everything);
        assert_eq!(Plan::of("meet"), Plan::Word(b"meet".to_vec()));
        assert_eq!(Plan::of("οδοσ"), Plan::Word("οδοσ".as_bytes().to_vec()));
        assert_eq!(Plan::of("a b"), Plan::Phrase("a b".into()));
        assert_eq!(Plan::of(" a"), Plan::Phrase(" a".into()));
        assert_eq!(Plan::of("@"), Plan::Phrase("@".into()));
        assert_eq!(Plan::of("x.org"), Plan::Phrase("x.org".into()));
    }

    #[test]
    fn tiers() {
        assert_eq!(tier(1), 0);
        assert_eq!(tier(SEGMENT_DOCS as u32), 0);
        assert_eq!(tier((SEGMENT_DOCS * FANOUT / 2 - 1) as u32), 0);
        // A merge of a tier's segments is in the next tier, full or not.
        for per in [SEGMENT_DOCS / 2, SEGMENT_DOCS - 24, SEGMENT_DOCS] {
            let merged = per * FANOUT;
            assert_eq!(tier(merged as u32), 1, "{FANOUT} of {per}");
            assert_eq!(tier((merged * FANOUT) as u32), 2, "{FANOUT} of {merged}");
        }
    }
}

/// Measurements on generated mail, run by hand (ignored).
#[cfg(all(test, feature = "testkit"))]
mod measure {
    use std::time::{Duration, Instant};

    use super::super::extract::{extract_message, ExtractedText};
    use super::super::oracle::TextKey;
    use super::super::segment::tests::{measuring_runtime, World};
    use super::{TextIndex, SEGMENT_DOCS};
    use crate::crypto::RandomSource;
    use crate::format::search::REGIONS;
    use crate::ids::EmailId;
    use crate::testkit::mailgen::MailGen;

    /// Frequency ranks of the English words searched (as `benches/search.rs`).
    const RANKS: [usize; 8] = [2, 12, 60, 300, 1_500, 6_000, 20_000, 38_000];

    fn median(mut v: Vec<Duration>) -> Duration {
        v.sort();
        v[v.len() / 2]
    }

    /// Rounds of one-word `TEXT` queries for `words`: one, then `MEASURE_ROUNDS` (5) timed.
    async fn warm(
        index: &TextIndex,
        words: &[String],
        scope: &super::Scope,
    ) -> (Vec<Duration>, Vec<Vec<Duration>>, Vec<usize>) {
        let mut all = Vec::new();
        let mut per_word = vec![Vec::new(); words.len()];
        let mut hits = vec![0; words.len()];
        let rounds: usize = std::env::var("MEASURE_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5);
        for round in 0..=rounds {
            for (i, w) in words.iter().enumerate() {
                let keys = [TextKey::Text(w.clone())];
                let t = Instant::now();
                let found = index.find(&keys, scope, &|_| None).await.unwrap();
                let e = t.elapsed();
                hits[i] = found.matches[0].len();
                if round > 0 {
                    all.push(e);
                    per_word[i].push(e);
                }
            }
        }
        (all, per_word, hits)
    }

    /// The text index alone over `MEASURE_DOCS` (100 000) messages of `MailGen` (seed 1),
    /// built as imports build it (segments of 512, merged by tiers) on a memory store:
    /// its segments, warm one-word `TEXT` queries over every email and the first query of
    /// a fresh index. `cargo test --release --all-features --lib measure_mailgen --
    /// --ignored --nocapture`. Asserts nothing but that queries find something.
    #[test]
    #[ignore]
    fn measure_mailgen() {
        let n: usize = std::env::var("MEASURE_DOCS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100_000);
        let rt = measuring_runtime();
        rt.block_on(async {
            let world = World::new().await;
            let mut index = TextIndex::with_collection(world.collection().await)
                .await
                .unwrap();
            if let Some(mib) = std::env::var("MEASURE_CACHE_MIB").ok().and_then(|v| v.parse::<usize>().ok()) {
                index.cache = super::PageCache::new(mib << 20);
            }
            let mut gen = MailGen::new(1);
            let rng = RandomSource::os();
            let started = Instant::now();
            let (mut emails, mut text_len) = (Vec::with_capacity(n), 0usize);
            let (mut indexing, mut merging) = (Duration::ZERO, Duration::ZERO);
            while emails.len() < n {
                let batch: Vec<(EmailId, ExtractedText)> = (0..SEGMENT_DOCS.min(n - emails.len()))
                    .map(|_| {
                        let t = extract_message(&gen.next_message(), usize::MAX);
                        text_len += t.header.len() + t.body.len() + t.mime.len();
                        (EmailId::random(&rng), t)
                    })
                    .collect();
                emails.extend(batch.iter().map(|(e, _)| *e));
                let t = Instant::now();
                index.add(&batch).await.unwrap();
                let m = Instant::now();
                index.maintain(&|_| true).await.unwrap();
                merging += m.elapsed();
                indexing += t.elapsed();
            }
            println!(
                "{n} messages, {} MiB of text, built in {:.1} s ({:.1} s indexing, of which {:.3} s merging)",
                text_len >> 20,
                started.elapsed().as_secs_f64(),
                indexing.as_secs_f64(),
                merging.as_secs_f64()
            );
            let mut totals = [0u64; 6];
            for r in &index.readers {
                let t = r.trailer();
                let lens: Vec<u64> = REGIONS.iter().map(|g| t.region(*g).len).collect();
                for (a, b) in totals.iter_mut().zip(&lens) {
                    *a += b;
                }
                println!(
                    "segment of {:>6} docs: {:>7} words, dictionary {:>6} KiB raw; regions (KiB) {:?}",
                    t.docs,
                    t.words,
                    t.dictionary_len >> 10,
                    lens.iter().map(|l| l >> 10).collect::<Vec<_>>()
                );
            }
            println!(
                "all segments: regions (KiB) {:?}",
                totals.iter().map(|l| l >> 10).collect::<Vec<_>>()
            );
            let scope = index.partition(&emails).unwrap().covered;
            let words: Vec<String> = RANKS.iter().map(|&r| gen.word(r).to_owned()).collect();
            let (all, per_word, hits) = warm(&index, &words, &scope).await;
            assert!(hits[0] > 0, "{hits:?}");
            println!(
                "warm one-word TEXT, median over {} words × 5 rounds: {:.2} ms; dictionaries {} KiB; cache {:?}",
                words.len(),
                median(all).as_secs_f64() * 1e3,
                index.readers.iter().map(|r| r.pinned_len()).sum::<usize>() >> 10,
                index.cache.stats()
            );
            for ((w, times), h) in words.iter().zip(per_word).zip(&hits) {
                println!(
                    "  {w:>20} ({h:>6} matches): {:.2} ms",
                    median(times).as_secs_f64() * 1e3
                );
            }
            for _ in 0..3 {
                let t = Instant::now();
                let mut fresh = TextIndex::with_collection(world.collection().await)
                    .await
                    .unwrap();
                let opened = t.elapsed();
                let keys = [TextKey::Text(words[4].clone())];
                let t = Instant::now();
                let scope = fresh.partition(&emails).unwrap().covered;
                fresh.find(&keys, &scope, &|_| None).await.unwrap();
                println!(
                    "fresh index: open {:.1} ms, first search {:.1} ms",
                    opened.as_secs_f64() * 1e3,
                    t.elapsed().as_secs_f64() * 1e3
                );
            }
        });
    }

    /// The merge of `FANOUT` segments of `SEGMENT_DOCS` generated messages (seed 1) into
    /// one, on the plaintext (no store, no sealing): median of `MEASURE_ROUNDS` (9)
    /// rounds. `cargo test --release --all-features --lib measure_merge -- --ignored
    /// --nocapture`. Asserts the merge keeps every doc.
    #[test]
    #[ignore]
    fn measure_merge() {
        use super::super::merge::merge_contents;
        use super::super::segment::{DocText, SegmentBuilder};
        use super::{text_version, DEFAULT_PAGE_CLASS, FANOUT};
        use crate::format::search::{SearchHeader, SegmentContents};
        use crate::ids::SegmentId;

        let mut gen = MailGen::new(1);
        let rng = RandomSource::os();
        let inputs: Vec<SegmentContents> = (0..FANOUT)
            .map(|_| {
                let mut builder = SegmentBuilder::new(DEFAULT_PAGE_CLASS, text_version());
                for _ in 0..SEGMENT_DOCS {
                    let t = extract_message(&gen.next_message(), usize::MAX);
                    let text = DocText {
                        header: &t.header,
                        body: &t.body,
                        mime: &t.mime,
                        complete: t.complete,
                    };
                    builder.add(EmailId::random(&rng), &text).unwrap();
                }
                let plain = builder.finish();
                let capacity = SearchHeader {
                    id: SegmentId::from_bytes([0; 16]),
                    page_class: plain.page_class,
                }
                .capacity();
                let views: Vec<&[u8]> = plain.pages.iter().map(Vec::as_slice).collect();
                SegmentContents::parse(&views, capacity).unwrap()
            })
            .collect();
        let rounds: usize = std::env::var("MEASURE_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(9);
        let mut times = Vec::new();
        for _ in 0..rounds {
            let t = Instant::now();
            let merged = merge_contents(&inputs, &|_| true, DEFAULT_PAGE_CLASS)
                .unwrap()
                .unwrap();
            times.push(t.elapsed());
            assert_eq!(merged.trailer.docs as usize, FANOUT * SEGMENT_DOCS);
        }
        println!(
            "merge of {FANOUT} × {SEGMENT_DOCS} docs ({} words in): median {:.2} ms over {rounds}",
            inputs.iter().map(|c| c.words.len()).sum::<usize>(),
            median(times).as_secs_f64() * 1e3
        );
    }
}
