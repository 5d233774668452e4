//! Building search segments from folded texts, and reading them lazily by pages
//! (`docs/proposals/search.md` §3.2–§3.4).
//!
//! A [`SegmentBuilder`] takes documents (an email id and its folded `header`, `body` and
//! `mime` streams) and lays out a [`PlainSegment`]; [`SearchPages::put`] seals and stores
//! it. A [`SegmentReader`] pins the trailer and the doc and frame tables of a stored
//! segment and answers queries through a [`PageCache`]: what a query needs of the
//! dictionary, word table and postings is read, on a miss, under the [`ReadPolicy`].

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use super::cache::{CacheKey, Cached, PageCache};
use crate::error::{Error, Result};
use crate::format::index::SegmentEntry;
use crate::format::search::{
    self, block_range, compress, decompress, page_payload, parse_docs, parse_frames, put_postings,
    read_block, Dictionary, DocEntry, Field, FrameEntry, PlainSegment, Region, SearchHeader,
    SegmentError, Trailer, WordEntry, WORD_ENTRY_LEN,
};
use crate::ids::EmailId;
use crate::index::SearchPages;

/// Raw text of `body ‖ mime` gathered per text-store frame before it is compressed.
pub(crate) const FRAME_TARGET: usize = 64 << 10;

/// The words of a folded text, as subslices of it (so that their positions tell a
/// query's planner which runs touch a separator).
///
/// This is the one seam with the text model: a word is a maximal run of alphanumeric
/// characters. The tokenizer of `mail::text::tokenize` (bigrams for scripts written
/// without spaces, `docs/proposals/search.md` §2.1) replaces it when the two slices meet.
pub(crate) fn words(folded: &str) -> impl Iterator<Item = &str> {
    folded
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
}

/// The folded text of one document, input of a [`SegmentBuilder`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DocText<'a> {
    /// Top-level header fields.
    pub(crate) header: &'a str,
    /// Text of the body's text parts.
    pub(crate) body: &'a str,
    /// MIME header lines of the non-root parts.
    pub(crate) mime: &'a str,
    /// Whether the text covers the whole message.
    pub(crate) complete: bool,
}

/// How a reader fetches what a query needs of the dictionary, word table and postings
/// when the cache lacks it (§3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum ReadPolicy {
    /// Read those three regions whole (one ranged GET), keep what the query needs (and
    /// what fits beside it): a cold query reads the same bytes whatever it asks.
    #[default]
    Oblivious,
    /// Read only the pages needed: fewer bytes, but the store learns roughly where in the
    /// dictionary the matched words are.
    Pages,
}

/// Accumulates documents and lays them out as a segment.
pub(crate) struct SegmentBuilder {
    page_class: u8,
    text_version: u32,
    docs: Vec<DocEntry>,
    postings: HashMap<Box<str>, [Vec<u32>; 3]>,
    frames: Vec<FrameEntry>,
    text: Vec<u8>,
    frame: Vec<u8>,
    text_len: u64,
}

impl SegmentBuilder {
    /// An empty builder of segments of `page_class` pages, recording `text_version` (the
    /// text model's versions) in the trailer.
    pub(crate) fn new(page_class: u8, text_version: u32) -> Self {
        Self {
            page_class,
            text_version,
            docs: Vec::new(),
            postings: HashMap::new(),
            frames: Vec::new(),
            text: Vec::new(),
            frame: Vec::new(),
            text_len: 0,
        }
    }

    /// Number of documents added.
    pub(crate) fn len(&self) -> usize {
        self.docs.len()
    }

    /// Whether no document was added.
    pub(crate) fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    /// Bytes of folded text added (all three fields).
    pub(crate) fn text_len(&self) -> u64 {
        self.text_len
    }

    /// Adds a document.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] above 2^32 − 1 documents or for a field of 4 GiB.
    pub(crate) fn add(&mut self, email: EmailId, text: &DocText<'_>) -> Result<()> {
        let doc = u32::try_from(self.docs.len())
            .ok()
            .filter(|&d| d < u32::MAX)
            .ok_or_else(|| Error::invalid("too many documents in one search segment"))?;
        let too_long = || Error::invalid("a text field of 4 GiB or more");
        let body_len = u32::try_from(text.body.len()).map_err(|_| too_long())?;
        let mime_len = u32::try_from(text.mime.len()).map_err(|_| too_long())?;
        for (field, stream) in Field::ALL
            .into_iter()
            .zip([text.header, text.body, text.mime])
        {
            for word in words(stream) {
                self.add_posting(word, field, doc);
            }
        }
        self.push_text(
            email,
            text.complete,
            text.body,
            text.mime,
            body_len,
            mime_len,
        );
        self.text_len += text.header.len() as u64;
        Ok(())
    }

    /// Appends a doc's `body ‖ mime` to the text store and its doc table entry (its words
    /// are the caller's).
    fn push_text(
        &mut self,
        email: EmailId,
        complete: bool,
        body: &str,
        mime: &str,
        body_len: u32,
        mime_len: u32,
    ) {
        if !self.frame.is_empty() && self.frame.len() + body.len() + mime.len() > FRAME_TARGET {
            self.close_frame();
        }
        let offset = self.frame.len() as u32;
        self.frame.extend_from_slice(body.as_bytes());
        self.frame.extend_from_slice(mime.as_bytes());
        self.docs.push(DocEntry {
            email,
            complete,
            frame: self.frames.len() as u32,
            offset,
            body_len,
            mime_len,
        });
        self.text_len += (body.len() + mime.len()) as u64;
    }

    /// Adds a doc of a merge (its doc table entry and texts; its words go through
    /// [`add_posting`](Self::add_posting)) under the next local doc number, returned.
    pub(crate) fn add_merged(&mut self, doc: &DocEntry, body: &str, mime: &str) -> u32 {
        let local = self.docs.len() as u32;
        self.push_text(
            doc.email,
            doc.complete,
            body,
            mime,
            doc.body_len,
            doc.mime_len,
        );
        local
    }

    /// Records that local doc `doc` has `word` in `field` (docs in increasing order per
    /// word and field).
    pub(crate) fn add_posting(&mut self, word: &str, field: Field, doc: u32) {
        let lists = match self.postings.get_mut(word) {
            Some(lists) => lists,
            None => self.postings.entry(word.into()).or_default(),
        };
        let list = &mut lists[field as usize];
        if list.last() != Some(&doc) {
            list.push(doc);
        }
    }

    fn close_frame(&mut self) {
        let compressed = compress(&self.frame);
        self.frames.push(FrameEntry {
            offset: self.text.len() as u64,
            len: compressed.len() as u32,
            raw_len: self.frame.len() as u32,
        });
        self.text.extend_from_slice(&compressed);
        self.frame.clear();
    }

    /// The segment's plaintext.
    pub(crate) fn finish(mut self) -> PlainSegment {
        if !self.frame.is_empty() || (self.frames.is_empty() && !self.docs.is_empty()) {
            self.close_frame();
        }
        let mut words: Vec<(Box<str>, [Vec<u32>; 3])> = self.postings.into_iter().collect();
        words.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        assemble(
            self.page_class,
            self.text_version,
            &self.docs,
            &self.frames,
            &self.text,
            words.iter().map(|(w, lists)| (&**w, lists)),
        )
    }
}

/// Lays out a segment from its tables, its compressed text region and its words in
/// increasing byte order with their per-field posting lists (the builder's and a
/// merge's common last step).
pub(crate) fn assemble<'a>(
    page_class: u8,
    text_version: u32,
    docs: &[DocEntry],
    frames: &[FrameEntry],
    text: &[u8],
    words: impl Iterator<Item = (&'a str, &'a [Vec<u32>; 3])>,
) -> PlainSegment {
    let total = docs.len() as u32;
    let mut dictionary = vec![0u8];
    let mut table = Vec::new();
    let mut postings = Vec::new();
    let mut count = 0u32;
    for (word, lists) in words {
        let mut mask = 0u8;
        let start = postings.len() as u32;
        for (field, list) in Field::ALL.iter().zip(lists.iter()) {
            if !list.is_empty() {
                mask |= field.bit();
                put_postings(&mut postings, list, total);
            }
        }
        if mask == 0 {
            continue;
        }
        dictionary.extend_from_slice(word.as_bytes());
        dictionary.push(0);
        WordEntry {
            postings: start,
            mask,
        }
        .put(&mut table);
        count += 1;
    }
    let (dictionary_len, compressed) = if count == 0 {
        (0, Vec::new())
    } else {
        (dictionary.len() as u64, compress(&dictionary))
    };
    let mut doc_table = Vec::with_capacity(docs.len() * search::DOC_ENTRY_LEN);
    for d in docs {
        d.put(&mut doc_table);
    }
    let mut frame_table = Vec::with_capacity(frames.len() * search::FRAME_ENTRY_LEN);
    for f in frames {
        f.put(&mut frame_table);
    }
    let trailer = Trailer {
        docs: total,
        words: count,
        frames: frames.len() as u32,
        dictionary_len,
        text_version,
        ..Trailer::default()
    };
    PlainSegment::layout(
        page_class,
        trailer,
        [
            &doc_table,
            &frame_table,
            &compressed,
            &table,
            &postings,
            text,
        ],
    )
}

/// A set of local docs of one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DocSet {
    bits: Vec<u64>,
    len: u32,
}

impl DocSet {
    /// The empty set over `len` docs.
    pub(crate) fn empty(len: u32) -> Self {
        Self {
            bits: vec![0; (len as usize).div_ceil(64)],
            len,
        }
    }

    /// Every doc of `len`.
    pub(crate) fn full(len: u32) -> Self {
        let mut set = Self::empty(len);
        for d in 0..len {
            set.insert(d);
        }
        set
    }

    /// Adds `doc`.
    pub(crate) fn insert(&mut self, doc: u32) {
        self.bits[doc as usize / 64] |= 1 << (doc % 64);
    }

    /// Whether `doc` is in.
    pub(crate) fn contains(&self, doc: u32) -> bool {
        self.bits
            .get(doc as usize / 64)
            .is_some_and(|w| w & (1 << (doc % 64)) != 0)
    }

    /// Keeps the docs that are also in `other`.
    pub(crate) fn intersect(&mut self, other: &DocSet) {
        for (a, b) in self.bits.iter_mut().zip(&other.bits) {
            *a &= b;
        }
    }

    /// Adds the docs of `other`.
    pub(crate) fn union(&mut self, other: &DocSet) {
        for (a, b) in self.bits.iter_mut().zip(&other.bits) {
            *a |= b;
        }
    }

    /// The docs, increasing.
    pub(crate) fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.bits.iter().enumerate().flat_map(|(i, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                (w != 0).then(|| {
                    let bit = w.trailing_zeros();
                    w &= w - 1;
                    i as u32 * 64 + bit
                })
            })
        })
    }

    /// Number of docs in.
    pub(crate) fn count(&self) -> usize {
        self.bits.iter().map(|w| w.count_ones() as usize).sum()
    }
}

/// Local docs per field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldDocs(pub(crate) [DocSet; 3]);

impl FieldDocs {
    fn empty(len: u32) -> Self {
        Self([DocSet::empty(len), DocSet::empty(len), DocSet::empty(len)])
    }

    /// The docs of `field`.
    pub(crate) fn field(&self, field: Field) -> &DocSet {
        &self.0[field as usize]
    }
}

/// What a phrase query found in one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PhraseMatches {
    /// Docs whose header may contain the phrase: the caller verifies them on the header
    /// block (it is not in the text store).
    pub(crate) header_candidates: DocSet,
    /// Docs whose body contains it (verified).
    pub(crate) body: DocSet,
    /// Docs whose MIME header lines contain it (verified).
    pub(crate) mime: DocSet,
    /// Docs read from the text store to verify.
    pub(crate) verified: usize,
}

/// Pages a query needed and found neither in the cache nor in what it read.
struct Miss {
    dictionary: bool,
    pages: Vec<u32>,
}

/// Where a query attempt looks for pages: what this query read, then the cache.
struct Lookup<'a> {
    cache: &'a PageCache,
    id: crate::ids::SegmentId,
    read: &'a HashMap<u32, Bytes>,
    dictionary: Option<&'a Arc<Dictionary>>,
    touched: Vec<u32>,
    missing: Vec<u32>,
}

impl Lookup<'_> {
    fn dictionary(&mut self) -> Option<Arc<Dictionary>> {
        if let Some(d) = self.dictionary {
            return Some(d.clone());
        }
        match self.cache.get(&CacheKey::Dictionary(self.id)) {
            Some(Cached::Dictionary(d)) => Some(d),
            _ => None,
        }
    }

    fn page(&mut self, page: u32) -> Option<Bytes> {
        if let Some(b) = self.read.get(&page) {
            self.touched.push(page);
            return Some(b.clone());
        }
        match self.cache.get(&CacheKey::Page(self.id, page)) {
            Some(Cached::Bytes(b)) => Some(b),
            _ => {
                self.missing.push(page);
                None
            }
        }
    }
}

/// A stored search segment, open: its trailer and its doc and frame tables in memory,
/// the rest read by pages through a [`PageCache`].
#[derive(Debug)]
pub(crate) struct SegmentReader {
    entry: SegmentEntry,
    header: SearchHeader,
    pages: u32,
    trailer: Trailer,
    docs: Vec<DocEntry>,
    frames: Vec<FrameEntry>,
    source: SearchPages,
    policy: ReadPolicy,
}

impl SegmentReader {
    /// Opens the segment `entry` pins: reads its header, its last page (the trailer) and
    /// its doc and frame tables (three ranged GETs).
    ///
    /// # Errors
    /// [`Error::Tampered`] for anything that does not authenticate or parse (a page
    /// flipped, swapped or from another segment or account, a truncated object);
    /// [`Error::UnsupportedVersion`]; backend failures.
    pub(crate) async fn open(
        source: SearchPages,
        entry: &SegmentEntry,
        policy: ReadPolicy,
    ) -> Result<Self> {
        if entry.kind != crate::format::index::SegmentKind::Search {
            return Err(Error::invalid("not a search segment"));
        }
        let raw = source
            .read_range(entry, 0..search::HEADER_LEN as u64)
            .await?;
        let header = SearchHeader::parse(&raw)?;
        if header.id != entry.id {
            return Err(Error::Tampered);
        }
        let pages = header.pages(entry.stored_len)?;
        let mut reader = Self {
            entry: entry.clone(),
            header,
            pages,
            trailer: Trailer::default(),
            docs: Vec::new(),
            frames: Vec::new(),
            source,
            policy,
        };
        let last = reader.read_pages(pages - 1..pages).await?;
        reader.trailer = Trailer::parse(&last[0], pages, header.capacity())?;
        if reader.trailer.docs != entry.records {
            return Err(Error::Tampered);
        }
        let (docs, frames) = (
            reader.trailer.region(Region::Docs),
            reader.trailer.region(Region::Frames),
        );
        let tables = reader
            .read_pages(docs.first_page..frames.first_page + frames.pages)
            .await?;
        let capacity = header.capacity();
        let all: Vec<&[u8]> = tables.iter().map(|p| &p[..]).collect();
        let mut padded: Vec<&[u8]> = vec![&[]; (frames.first_page + frames.pages) as usize];
        padded[docs.first_page as usize..].copy_from_slice(&all);
        let frame_bytes = search::region_bytes(&reader.trailer, Region::Frames, &padded, capacity)?;
        let doc_bytes = search::region_bytes(&reader.trailer, Region::Docs, &padded, capacity)?;
        reader.frames = parse_frames(&frame_bytes, reader.trailer.region(Region::Text).len)?;
        reader.docs = parse_docs(&doc_bytes, &reader.frames)?;
        Ok(reader)
    }

    /// Its manifest entry.
    pub(crate) fn entry(&self) -> &SegmentEntry {
        &self.entry
    }

    /// Its trailer.
    pub(crate) fn trailer(&self) -> &Trailer {
        &self.trailer
    }

    /// Its doc table: local doc `d` is `docs()[d]`.
    pub(crate) fn docs(&self) -> &[DocEntry] {
        &self.docs
    }

    /// Reads and opens pages `range`: one ranged GET. Returns their payloads.
    async fn read_pages(&self, range: Range<u32>) -> Result<Vec<Bytes>> {
        if range.is_empty() {
            return Ok(Vec::new());
        }
        if range.end > self.pages {
            return Err(Error::Tampered);
        }
        let bytes = self
            .source
            .read_range(
                &self.entry,
                self.header.page_range(range.start).start
                    ..self.header.page_range(range.end - 1).end,
            )
            .await?;
        let sealed = self.header.sealed_len();
        if bytes.len() != sealed * range.len() {
            return Err(Error::Tampered);
        }
        let capacity = self.header.capacity();
        let (header, source) = (self.header, self.source.clone());
        crate::cpu::offload(bytes.len(), move || {
            range
                .zip(bytes.chunks(sealed))
                .map(|(i, page)| {
                    let plain = source.open_page(&header, i, page)?;
                    Ok(Bytes::copy_from_slice(page_payload(&plain, capacity)?))
                })
                .collect::<Result<Vec<Bytes>>>()
        })
        .await?
    }

    /// The pages of the dictionary, word table and postings (contiguous).
    fn index_pages(&self) -> Range<u32> {
        let first = self.trailer.region(Region::Dictionary).first_page;
        let postings = self.trailer.region(Region::Postings);
        first..postings.first_page + postings.pages
    }

    /// Local docs per field whose words contain `pattern` (a folded needle within one
    /// word; with a leading NUL, at a word's start; with a trailing NUL, at its end):
    /// exact, no verification (§2.2).
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub(crate) async fn find(&self, cache: &PageCache, pattern: &[u8]) -> Result<FieldDocs> {
        Ok(self
            .find_all(cache, &[pattern.to_vec()])
            .await?
            .pop()
            .expect("one answer per pattern"))
    }

    /// [`find`](Self::find) for several patterns at once (one read on a miss).
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub(crate) async fn find_all(
        &self,
        cache: &PageCache,
        patterns: &[Vec<u8>],
    ) -> Result<Vec<FieldDocs>> {
        let id = self.entry.id;
        let mut read: HashMap<u32, Bytes> = HashMap::new();
        let mut dictionary: Option<Arc<Dictionary>> = None;
        // At most: dictionary, then word table, then postings (page by page policy); the
        // oblivious policy reads all three at the first miss.
        for _ in 0..4 {
            let mut lookup = Lookup {
                cache,
                id,
                read: &read,
                dictionary: dictionary.as_ref(),
                touched: Vec::new(),
                missing: Vec::new(),
            };
            match self.attempt(&mut lookup, patterns)? {
                Ok(found) => {
                    // Keep what this query used (evicting older entries), then what
                    // fits beside it of what was read along.
                    let touched = std::mem::take(&mut lookup.touched);
                    for page in &touched {
                        cache.insert(
                            CacheKey::Page(id, *page),
                            Cached::Bytes(read[page].clone()),
                            false,
                        );
                    }
                    let dictionary = self.trailer.region(Region::Dictionary);
                    let compressed =
                        dictionary.first_page..dictionary.first_page + dictionary.pages;
                    for (page, bytes) in &read {
                        if !touched.contains(page) && !compressed.contains(page) {
                            cache.insert(
                                CacheKey::Page(id, *page),
                                Cached::Bytes(bytes.clone()),
                                true,
                            );
                        }
                    }
                    return Ok(found);
                }
                Err(miss) => {
                    let wanted: Vec<u32> = match self.policy {
                        ReadPolicy::Oblivious => self.index_pages().collect(),
                        ReadPolicy::Pages => {
                            let mut pages = miss.pages;
                            if miss.dictionary {
                                let span = self.trailer.region(Region::Dictionary);
                                pages.extend(span.first_page..span.first_page + span.pages);
                            }
                            pages
                        }
                    };
                    for run in runs(wanted.into_iter().filter(|p| !read.contains_key(p))) {
                        let start = run.start;
                        for (i, payload) in self.read_pages(run).await?.into_iter().enumerate() {
                            read.insert(start + i as u32, payload);
                        }
                    }
                    if miss.dictionary {
                        let d = Arc::new(self.dictionary_from(&read)?);
                        cache.insert(
                            CacheKey::Dictionary(id),
                            Cached::Dictionary(d.clone()),
                            false,
                        );
                        dictionary = Some(d);
                    }
                }
            }
        }
        Err(Error::Tampered)
    }

    /// The dictionary from its pages in `read`.
    fn dictionary_from(&self, read: &HashMap<u32, Bytes>) -> Result<Dictionary> {
        let span = self.trailer.region(Region::Dictionary);
        let mut compressed = Vec::with_capacity(span.len as usize);
        for page in span.first_page..span.first_page + span.pages {
            compressed.extend_from_slice(read.get(&page).ok_or(Error::Tampered)?);
        }
        if compressed.len() as u64 != span.len {
            return Err(Error::Tampered);
        }
        let raw = if self.trailer.words == 0 {
            Vec::new()
        } else {
            decompress(&compressed, self.trailer.dictionary_len)?
        };
        Ok(Dictionary::parse(raw, self.trailer.words)?)
    }

    /// Bytes `range` of `region` from pages found by `lookup`, or `None` (the missing
    /// pages noted in it).
    fn region_range(
        &self,
        lookup: &mut Lookup<'_>,
        region: Region,
        range: Range<u64>,
    ) -> Option<Vec<u8>> {
        let span = self.trailer.region(region);
        let capacity = self.header.capacity() as u64;
        let mut out = Vec::with_capacity((range.end - range.start) as usize);
        let mut complete = true;
        for page in span.pages_of(range.clone(), capacity as usize) {
            let Some(payload) = lookup.page(page) else {
                complete = false;
                continue;
            };
            if !complete {
                continue;
            }
            let page_start = u64::from(page - span.first_page) * capacity;
            let from = range.start.max(page_start) - page_start;
            let to = range.end.min(page_start + capacity) - page_start;
            match payload.get(from as usize..to as usize) {
                Some(bytes) => out.extend_from_slice(bytes),
                None => return Some(Vec::new()), // malformed: caught by the length check
            }
        }
        complete.then_some(out)
    }

    /// One try at answering `patterns` from what `lookup` finds. `Ok(Err(miss))` when a
    /// page is missing.
    fn attempt(
        &self,
        lookup: &mut Lookup<'_>,
        patterns: &[Vec<u8>],
    ) -> Result<std::result::Result<Vec<FieldDocs>, Miss>> {
        let total = self.trailer.docs;
        let Some(dictionary) = lookup.dictionary() else {
            return Ok(Err(Miss {
                dictionary: true,
                pages: Vec::new(),
            }));
        };
        let postings_len = self.trailer.region(Region::Postings).len;
        let mut answers = Vec::with_capacity(patterns.len());
        for pattern in patterns {
            let mut docs = FieldDocs::empty(total);
            for ordinal in dictionary.find(pattern) {
                let at = u64::from(ordinal) * WORD_ENTRY_LEN as u64;
                let end =
                    (at + 2 * WORD_ENTRY_LEN as u64).min(self.trailer.region(Region::Words).len);
                let Some(entries) = self.region_range(lookup, Region::Words, at..end) else {
                    continue;
                };
                if entries.len() as u64 != end - at {
                    return Err(Error::Tampered);
                }
                let entry = WordEntry::parse(&entries[..WORD_ENTRY_LEN])?;
                let next = entries
                    .get(WORD_ENTRY_LEN..)
                    .filter(|n| !n.is_empty())
                    .map(WordEntry::parse)
                    .transpose()?;
                let range = block_range(&entry, next.as_ref(), postings_len)?;
                let Some(block) = self.region_range(lookup, Region::Postings, range.clone()) else {
                    continue;
                };
                if block.len() as u64 != range.end - range.start {
                    return Err(Error::Tampered);
                }
                read_block(&block, entry.mask, total, &mut |field, doc| {
                    docs.0[field as usize].insert(doc);
                })?;
            }
            answers.push(docs);
        }
        if lookup.missing.is_empty() {
            Ok(Ok(answers))
        } else {
            let mut pages = std::mem::take(&mut lookup.missing);
            pages.sort_unstable();
            pages.dedup();
            Ok(Err(Miss {
                dictionary: false,
                pages,
            }))
        }
    }

    /// The folded `body` and `mime` of local doc `doc`, from its text-store frame (read
    /// by pages, through the cache).
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub(crate) async fn text_of(&self, cache: &PageCache, doc: u32) -> Result<(String, String)> {
        let entry = *self.docs.get(doc as usize).ok_or(Error::Tampered)?;
        let frame = self.frame(cache, entry.frame).await?;
        let start = entry.offset as usize;
        let mid = start + entry.body_len as usize;
        let end = mid + entry.mime_len as usize;
        let text = |range: Range<usize>| {
            frame
                .get(range)
                .and_then(|b| std::str::from_utf8(b).ok())
                .map(str::to_owned)
                .ok_or(Error::from(SegmentError::DocTable))
        };
        Ok((text(start..mid)?, text(mid..end)?))
    }

    async fn frame(&self, cache: &PageCache, index: u32) -> Result<Bytes> {
        let key = CacheKey::Frame(self.entry.id, index);
        if let Some(Cached::Bytes(b)) = cache.get(&key) {
            return Ok(b);
        }
        let frame = *self.frames.get(index as usize).ok_or(Error::Tampered)?;
        let span = self.trailer.region(Region::Text);
        let range = frame.offset..frame.offset + u64::from(frame.len);
        let pages = span.pages_of(range.clone(), self.header.capacity());
        let start = pages.start;
        let payloads = self.read_pages(pages).await?;
        let capacity = self.header.capacity() as u64;
        let mut compressed = Vec::with_capacity(frame.len as usize);
        for (i, payload) in payloads.iter().enumerate() {
            let page_start = u64::from(start - span.first_page + i as u32) * capacity;
            let from = range.start.max(page_start) - page_start;
            let to = range.end.min(page_start + capacity) - page_start;
            compressed.extend_from_slice(
                payload
                    .get(from as usize..to as usize)
                    .ok_or(Error::Tampered)?,
            );
        }
        let raw = Bytes::from(decompress(&compressed, u64::from(frame.raw_len))?);
        cache.insert(key, Cached::Bytes(raw.clone()), false);
        Ok(raw)
    }

    /// Local docs whose fields contain the folded `needle`, for a needle that is not
    /// within one word (a phrase, words with punctuation, leading or trailing
    /// separators): candidates from the postings of its words (each word anchored where
    /// the needle has a separator beside it), then body and MIME candidates verified on
    /// the text store. A needle of one word without separators is [`find`](Self::find)'s.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub(crate) async fn find_phrase(
        &self,
        cache: &PageCache,
        needle: &str,
    ) -> Result<PhraseMatches> {
        let total = self.trailer.docs;
        let patterns = anchored_words(needle);
        let mut candidates = FieldDocs(std::array::from_fn(|_| DocSet::full(total)));
        if !patterns.is_empty() {
            for found in self.find_all(cache, &patterns).await? {
                for (c, f) in candidates.0.iter_mut().zip(found.0.iter()) {
                    c.intersect(f);
                }
            }
        }
        let [header_candidates, body_candidates, mime_candidates] = candidates.0;
        let mut body = DocSet::empty(total);
        let mut mime = DocSet::empty(total);
        let mut either = body_candidates.clone();
        either.union(&mime_candidates);
        let mut verified = 0;
        let finder = memchr::memmem::Finder::new(needle.as_bytes());
        for doc in either.iter() {
            let (b, m) = self.text_of(cache, doc).await?;
            verified += 1;
            if body_candidates.contains(doc) && finder.find(b.as_bytes()).is_some() {
                body.insert(doc);
            }
            if mime_candidates.contains(doc) && finder.find(m.as_bytes()).is_some() {
                mime.insert(doc);
            }
        }
        Ok(PhraseMatches {
            header_candidates,
            body,
            mime,
            verified,
        })
    }
}

/// The dictionary patterns of a needle's words: each word, with a NUL before it when the
/// needle has a separator before it (the doc's word starts there) and after it when one
/// follows (the doc's word ends there).
pub(crate) fn anchored_words(needle: &str) -> Vec<Vec<u8>> {
    let base = needle.as_ptr() as usize;
    words(needle)
        .map(|w| {
            let start = w.as_ptr() as usize - base;
            let end = start + w.len();
            let mut p = Vec::with_capacity(w.len() + 2);
            if start > 0 {
                p.push(0);
            }
            p.extend_from_slice(w.as_bytes());
            if end < needle.len() {
                p.push(0);
            }
            p
        })
        .collect()
}

/// Increasing runs of consecutive pages.
fn runs(pages: impl Iterator<Item = u32>) -> Vec<Range<u32>> {
    let mut sorted: Vec<u32> = pages.collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<Range<u32>> = Vec::new();
    for p in sorted {
        match out.last_mut() {
            Some(r) if r.end == p => r.end += 1,
            _ => out.push(p..p + 1),
        }
    }
    out
}
