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
use std::sync::{Arc, OnceLock};

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
    #[cfg_attr(not(test), allow(dead_code))]
    Pages,
}

/// Records local doc `doc` in `lists` for `field` (docs in increasing order per field).
pub(crate) fn push_posting(lists: &mut [Vec<u32>; 3], field: Field, doc: u32) {
    let list = &mut lists[field as usize];
    if list.last() != Some(&doc) {
        list.push(doc);
    }
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

    /// Room for `docs` more docs and `text` more bytes of compressed text (a merge's
    /// inputs' sums).
    pub(crate) fn reserve(&mut self, docs: usize, text: usize) {
        self.docs.reserve(docs);
        self.text.reserve(text);
    }

    /// Bytes of folded text added (all three fields).
    #[cfg_attr(not(test), allow(dead_code))]
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

    /// Adds a doc of a merge (its doc table entry and texts; its words go to the
    /// [`WordSink`] of [`finish_with`](Self::finish_with)) under the next local doc
    /// number, returned.
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

    /// Adds the docs of a merge input's text-store frame whose docs are all kept, with
    /// the frame's compressed bytes as they are (not decompressed and compressed again):
    /// `docs` are that input's entries of the frame. Returns the first one's new local
    /// doc number (the others follow).
    pub(crate) fn add_merged_frame(
        &mut self,
        compressed: &[u8],
        raw_len: u32,
        docs: &[DocEntry],
    ) -> u32 {
        // The frame being filled is closed first if a doc refers to it.
        if self
            .docs
            .last()
            .is_some_and(|d| d.frame as usize == self.frames.len())
        {
            self.close_frame();
        }
        let first = self.docs.len() as u32;
        let frame = self.frames.len() as u32;
        self.frames.push(FrameEntry {
            offset: self.text.len() as u64,
            len: compressed.len() as u32,
            raw_len,
        });
        self.text.extend_from_slice(compressed);
        for doc in docs {
            self.docs.push(DocEntry { frame, ..*doc });
            self.text_len += u64::from(doc.body_len) + u64::from(doc.mime_len);
        }
        first
    }

    /// Records that local doc `doc` has `word` in `field` (docs in increasing order per
    /// word and field).
    fn add_posting(&mut self, word: &str, field: Field, doc: u32) {
        if !self.postings.contains_key(word) {
            self.postings.insert(word.into(), Default::default());
        }
        let lists = self.postings.get_mut(word).expect("just inserted");
        push_posting(lists, field, doc);
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
        let postings = std::mem::take(&mut self.postings);
        let mut words: Vec<(Box<str>, [Vec<u32>; 3])> = postings.into_iter().collect();
        words.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        self.finish_with(|sink| {
            for (word, lists) in &words {
                sink.push(word.as_bytes(), lists);
            }
            Ok(())
        })
        .expect("the builder's words cannot fail")
    }

    /// The segment's plaintext with the words `fill` pushes (in increasing byte order)
    /// in place of the builder's own: a merge streams its inputs' sorted dictionaries
    /// into the sink instead of gathering every word in a map.
    ///
    /// # Errors
    /// `fill`'s.
    pub(crate) fn finish_with(
        mut self,
        fill: impl FnOnce(&mut WordSink) -> Result<()>,
    ) -> Result<PlainSegment> {
        // The open frame, if a doc refers to it (even one of empty texts).
        if self
            .docs
            .last()
            .is_some_and(|d| d.frame as usize == self.frames.len())
        {
            self.close_frame();
        }
        let mut sink = WordSink::new(self.docs.len() as u32);
        fill(&mut sink)?;
        Ok(assemble(
            self.page_class,
            self.text_version,
            &self.docs,
            &self.frames,
            &self.text,
            sink,
        ))
    }
}

/// The dictionary, word table and postings of a segment being laid out, filled word by
/// word in increasing byte order (a builder's sorted words or a merge's stream).
pub(crate) struct WordSink {
    total: u32,
    dictionary: Vec<u8>,
    table: Vec<u8>,
    postings: Vec<u8>,
    count: u32,
}

impl WordSink {
    /// An empty sink for a segment of `total` docs.
    fn new(total: u32) -> Self {
        Self {
            total,
            dictionary: vec![0u8],
            table: Vec::new(),
            postings: Vec::new(),
            count: 0,
        }
    }

    /// Adds `word` (UTF-8, greater than every word before it) with its per-field posting lists
    /// (docs increasing); a word without any doc is left out.
    pub(crate) fn push(&mut self, word: &[u8], lists: &[Vec<u32>; 3]) {
        debug_assert!(self.count == 0 || word > self.last_word());
        let mut mask = 0u8;
        let start = self.postings.len() as u32;
        for (field, list) in Field::ALL.iter().zip(lists.iter()) {
            if !list.is_empty() {
                mask |= field.bit();
                put_postings(&mut self.postings, list, self.total);
            }
        }
        if mask == 0 {
            return;
        }
        self.dictionary.extend_from_slice(word);
        self.dictionary.push(0);
        WordEntry {
            postings: start,
            mask,
        }
        .put(&mut self.table);
        self.count += 1;
    }

    /// The last word pushed (for the order's debug check).
    fn last_word(&self) -> &[u8] {
        let inner = &self.dictionary[..self.dictionary.len() - 1];
        let start = inner.iter().rposition(|b| *b == 0).map_or(0, |i| i + 1);
        &inner[start..]
    }
}

/// Lays out a segment from its tables, its compressed text region and its words (the
/// builder's and a merge's common last step).
fn assemble(
    page_class: u8,
    text_version: u32,
    docs: &[DocEntry],
    frames: &[FrameEntry],
    text: &[u8],
    words: WordSink,
) -> PlainSegment {
    let WordSink {
        total,
        dictionary,
        table,
        postings,
        count,
    } = words;
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

    /// Takes `doc` out.
    pub(crate) fn remove(&mut self, doc: u32) {
        if let Some(w) = self.bits.get_mut(doc as usize / 64) {
            *w &= !(1 << (doc % 64));
        }
    }

    /// Whether no doc is in.
    pub(crate) fn is_empty(&self) -> bool {
        self.bits.iter().all(|w| *w == 0)
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
        self.dictionary.cloned()
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
    /// The dictionary, once a query has read it: kept while the segment is open, outside
    /// the page cache (every query scans it whole, so an evicted dictionary would make
    /// the next query read the segment's index regions again).
    dictionary: OnceLock<Arc<Dictionary>>,
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
            dictionary: OnceLock::new(),
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

    /// Bytes of the dictionary it keeps in memory (0 before a query read it).
    pub(crate) fn pinned_len(&self) -> usize {
        self.dictionary.get().map_or(0, |d| d.heap_len())
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
        let sealed = self.fetch(range.clone()).await?;
        Ok(self
            .open_pages(&sealed, range.start, range.collect())
            .await?
            .into_iter()
            .map(|(_, payload)| payload)
            .collect())
    }

    /// The sealed pages `range`: one ranged GET (none for an empty range: the regions of
    /// a segment without documents).
    async fn fetch(&self, range: Range<u32>) -> Result<Bytes> {
        if range.is_empty() {
            return Ok(Bytes::new());
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
        if bytes.len() != self.header.sealed_len() * range.len() {
            return Err(Error::Tampered);
        }
        Ok(bytes)
    }

    /// Opens `pages` of `sealed`, the sealed pages from `first` on ([`fetch`](Self::fetch)).
    /// Returns their payloads, in the order given.
    async fn open_pages(
        &self,
        sealed: &Bytes,
        first: u32,
        pages: Vec<u32>,
    ) -> Result<Vec<(u32, Bytes)>> {
        let len = self.header.sealed_len();
        let capacity = self.header.capacity();
        let (header, source, sealed) = (self.header, self.source.clone(), sealed.clone());
        crate::cpu::offload(len * pages.len(), move || {
            pages
                .into_iter()
                .map(|i| {
                    let at = (i.checked_sub(first).ok_or(Error::Tampered)? as usize) * len;
                    let page = sealed.get(at..at + len).ok_or(Error::Tampered)?;
                    let plain = source.open_page(&header, i, page)?;
                    Ok((i, Bytes::copy_from_slice(page_payload(&plain, capacity)?)))
                })
                .collect::<Result<Vec<(u32, Bytes)>>>()
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
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) async fn find(&self, cache: &PageCache, pattern: &[u8]) -> Result<FieldDocs> {
        Ok(self
            .find_all(cache, &[pattern.to_vec()], &mut None)
            .await?
            .pop()
            .expect("one answer per pattern"))
    }

    /// [`find`](Self::find) for several patterns at once (one read on a miss). `sealed`
    /// holds the regions a miss read under the oblivious policy: the calls of one query
    /// share it, so that a query reads them at most once per segment whatever its keys.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub(crate) async fn find_all(
        &self,
        cache: &PageCache,
        patterns: &[Vec<u8>],
        sealed: &mut Option<Bytes>,
    ) -> Result<Vec<FieldDocs>> {
        let id = self.entry.id;
        let mut read: HashMap<u32, Bytes> = HashMap::new();
        let mut dictionary: Option<Arc<Dictionary>> = self.dictionary.get().cloned();
        // At most: dictionary, then word table, then postings (a read for each under the
        // page by page policy; one GET of all three at the first miss under the
        // oblivious policy, whose later attempts open more of what it read).
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
                    let mut wanted = miss.pages;
                    if miss.dictionary {
                        let span = self.trailer.region(Region::Dictionary);
                        wanted.extend(span.first_page..span.first_page + span.pages);
                    }
                    wanted.retain(|p| !read.contains_key(p));
                    match self.policy {
                        ReadPolicy::Oblivious => {
                            // One GET of the three regions whatever the query needs (at
                            // most one per query: later attempts and keys open more of
                            // the same bytes); only what it needs is opened, and of the
                            // word table and postings what the cache has room for
                            // besides (the dictionary is kept by the reader).
                            let all = self.index_pages();
                            if sealed.is_none() {
                                *sealed = Some(self.fetch(all.clone()).await?);
                            }
                            let page = self.header.capacity() + 64;
                            let room = (cache.room() / page).saturating_sub(wanted.len());
                            let words = self.trailer.region(Region::Words).first_page;
                            let along: Vec<u32> = (words..all.end)
                                .filter(|p| !read.contains_key(p) && !wanted.contains(p))
                                .filter(|p| !cache.contains(&CacheKey::Page(id, *p)))
                                .take(room)
                                .collect();
                            wanted.extend(along);
                            let bytes = sealed.as_ref().expect("fetched above");
                            for (page, payload) in self.open_pages(bytes, all.start, wanted).await?
                            {
                                read.insert(page, payload);
                            }
                        }
                        ReadPolicy::Pages => {
                            for run in runs(wanted.into_iter()) {
                                let start = run.start;
                                for (i, payload) in
                                    self.read_pages(run).await?.into_iter().enumerate()
                                {
                                    read.insert(start + i as u32, payload);
                                }
                            }
                        }
                    }
                    if miss.dictionary {
                        let d = Arc::new(self.dictionary_from(&read).await?);
                        // Another query may have pinned it meanwhile: the same words.
                        dictionary = Some(self.dictionary.get_or_init(|| d).clone());
                    }
                }
            }
        }
        Err(Error::Tampered)
    }

    /// The dictionary from its pages in `read`: decompressed and parsed off the executor
    /// (megabytes for a segment of 32 768 docs).
    async fn dictionary_from(&self, read: &HashMap<u32, Bytes>) -> Result<Dictionary> {
        let span = self.trailer.region(Region::Dictionary);
        let mut compressed = Vec::with_capacity(span.len as usize);
        for page in span.first_page..span.first_page + span.pages {
            compressed.extend_from_slice(read.get(&page).ok_or(Error::Tampered)?);
        }
        if compressed.len() as u64 != span.len {
            return Err(Error::Tampered);
        }
        let (words, raw_len) = (self.trailer.words, self.trailer.dictionary_len);
        crate::cpu::offload(raw_len as usize, move || {
            let raw = if words == 0 {
                Vec::new()
            } else {
                decompress(&compressed, raw_len)?
            };
            Ok(Dictionary::parse(raw, words)?)
        })
        .await?
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
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) async fn find_phrase(
        &self,
        cache: &PageCache,
        needle: &str,
    ) -> Result<PhraseMatches> {
        self.find_phrase_within(cache, needle, &DocSet::full(self.trailer.docs), &mut None)
            .await
    }

    /// [`find_phrase`](Self::find_phrase) for the docs of `within` only: no other doc is
    /// read from the text store or answered (a search in one mailbox of a large account).
    /// `sealed` as [`find_all`](Self::find_all)'s.
    ///
    /// # Errors
    /// As [`open`](Self::open).
    pub(crate) async fn find_phrase_within(
        &self,
        cache: &PageCache,
        needle: &str,
        within: &DocSet,
        sealed: &mut Option<Bytes>,
    ) -> Result<PhraseMatches> {
        let total = self.trailer.docs;
        let patterns = anchored_words(needle);
        let mut candidates = FieldDocs(std::array::from_fn(|_| {
            let mut all = DocSet::full(total);
            all.intersect(within);
            all
        }));
        if !patterns.is_empty() {
            for found in self.find_all(cache, &patterns, sealed).await? {
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

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::{BTreeSet, HashSet};

    use object_store::memory::InMemory;
    use object_store::ObjectStoreExt;
    use proptest::prelude::*;

    use super::*;
    use crate::crypto::{AccountKey, RandomSource};
    use crate::directory::MemoryDirectory;
    use crate::format::search::{DEFAULT_PAGE_CLASS, MIN_PAGE_CLASS};
    use crate::ids::{AccountId, DeploymentId};
    use crate::index::{Batch, Collection, IndexStore};
    use crate::storage::{CountingStore, DynStore, RequestKind};

    /// One document of a test: its email and folded fields.
    #[derive(Debug, Clone)]
    pub(crate) struct Doc {
        pub(crate) email: EmailId,
        pub(crate) header: String,
        pub(crate) body: String,
        pub(crate) mime: String,
    }

    impl Doc {
        pub(crate) fn text(&self) -> DocText<'_> {
            DocText {
                header: &self.header,
                body: &self.body,
                mime: &self.mime,
                complete: true,
            }
        }

        fn field(&self, field: Field) -> &str {
            match field {
                Field::Header => &self.header,
                Field::Body => &self.body,
                Field::Mime => &self.mime,
            }
        }
    }

    /// An account's `search` collection on a counted memory store.
    pub(crate) struct World {
        pub(crate) counting: CountingStore,
        pub(crate) index: IndexStore,
        pub(crate) account: AccountId,
        pub(crate) key: Arc<AccountKey>,
    }

    impl World {
        pub(crate) async fn new() -> Self {
            let rng = RandomSource::os();
            let memory: DynStore = Arc::new(InMemory::new());
            let counting = CountingStore::new(memory);
            let store: DynStore = Arc::new(counting.clone());
            let index = IndexStore::new(
                store,
                DeploymentId::random(&rng),
                Arc::new(MemoryDirectory::new()),
            )
            .await
            .expect("index");
            Self {
                counting,
                index,
                account: AccountId::random(&rng),
                key: Arc::new(AccountKey::generate(1, &rng)),
            }
        }

        pub(crate) async fn collection(&self) -> Collection {
            self.index
                .open(self.account, &self.key, b"search")
                .await
                .expect("collection")
        }
    }

    pub(crate) fn build(docs: &[Doc], page_class: u8) -> PlainSegment {
        let mut builder = SegmentBuilder::new(page_class, 1);
        for d in docs {
            builder.add(d.email, &d.text()).expect("add");
        }
        builder.finish()
    }

    /// Builds, stores and commits a segment of `docs`.
    pub(crate) async fn store(c: &mut Collection, docs: &[Doc], page_class: u8) -> SegmentEntry {
        let entry = c
            .search_pages()
            .put(build(docs, page_class))
            .await
            .expect("put");
        c.commit_segments(vec![entry.clone()], Vec::new(), Batch::new())
            .await
            .expect("commit");
        c.search_segments()
            .find(|e| e.id == entry.id)
            .cloned()
            .expect("listed")
    }

    /// Docs of random words over a small alphabet (so that words share substrings), with
    /// separators and non-ASCII letters.
    pub(crate) fn doc_strategy() -> impl Strategy<Value = (String, String, String)> {
        let text = "([abcé1ß]{1,6}[ ,.@-]{1,2}){0,12}";
        (text, text, text)
    }

    fn naive(docs: &[Doc], field: Field, needle: &str) -> BTreeSet<u32> {
        (0..docs.len() as u32)
            .filter(|&d| docs[d as usize].field(field).contains(needle))
            .collect()
    }

    fn set(docs: &DocSet) -> BTreeSet<u32> {
        docs.iter().collect()
    }

    fn docs_of(texts: Vec<(String, String, String)>) -> Vec<Doc> {
        let rng = RandomSource::os();
        texts
            .into_iter()
            .map(|(header, body, mime)| Doc {
                email: EmailId::random(&rng),
                header,
                body,
                mime,
            })
            .collect()
    }

    /// The runtime of the measurements run by hand: two workers, as the machine's cores.
    pub(crate) fn measuring_runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    /// Checks every needle against a naive scan of `docs` through `reader`.
    async fn check(reader: &SegmentReader, cache: &PageCache, docs: &[Doc], needles: &[String]) {
        for needle in needles {
            let one_word = words(needle).next() == Some(needle.as_str());
            if one_word {
                let found = reader.find(cache, needle.as_bytes()).await.expect("find");
                for field in Field::ALL {
                    assert_eq!(
                        set(found.field(field)),
                        naive(docs, field, needle),
                        "word {needle:?} in {field:?}"
                    );
                }
            }
            if needle.is_empty() {
                continue;
            }
            let phrase = reader.find_phrase(cache, needle).await.expect("phrase");
            assert_eq!(
                set(&phrase.body),
                naive(docs, Field::Body, needle),
                "{needle:?} in body"
            );
            assert_eq!(
                set(&phrase.mime),
                naive(docs, Field::Mime, needle),
                "{needle:?} in mime"
            );
            let header = naive(docs, Field::Header, needle);
            assert!(
                header.is_subset(&set(&phrase.header_candidates)),
                "{needle:?}: header candidates miss a match"
            );
        }
    }

    /// Needles: substrings of the docs' texts (inside words, across separators) and
    /// random strings.
    fn needles(docs: &[Doc], picks: &[(usize, usize, usize)], random: &[String]) -> Vec<String> {
        let mut out: Vec<String> = random.to_vec();
        for &(d, a, b) in picks {
            let Some(doc) = docs.get(d % docs.len().max(1)) else {
                continue;
            };
            for text in [&doc.header, &doc.body, &doc.mime] {
                let chars: Vec<char> = text.chars().collect();
                if chars.is_empty() {
                    continue;
                }
                let (a, b) = (a % chars.len(), b % chars.len());
                let (a, b) = (a.min(b), a.max(b) + 1);
                out.push(chars[a..b.min(chars.len())].iter().collect());
                // The word around position a, and a piece of it.
                if let Some(w) = words(text).find(|w| w.len() > 1) {
                    out.push(w.to_owned());
                    out.push(w.chars().skip(1).collect());
                }
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Build → store on the memory backend → query: equal to a naive scan of the same
        /// input, for words, infixes, phrases, random strings; both read policies, a
        /// cache large enough and one that holds almost nothing.
        #[test]
        fn queries_equal_a_naive_scan(
            texts in prop::collection::vec(doc_strategy(), 0..40),
            picks in prop::collection::vec((0usize..100, 0usize..200, 0usize..200), 1..12),
            random in prop::collection::vec("[abcé1ß ,.@-]{1,4}", 1..8),
        ) {
            let docs = docs_of(texts);
            let needles = needles(&docs, &picks, &random);
            runtime().block_on(async {
                let world = World::new().await;
                let mut c = world.collection().await;
                let entry = store(&mut c, &docs, MIN_PAGE_CLASS).await;
                for (policy, budget) in [
                    (ReadPolicy::Oblivious, 1 << 20),
                    (ReadPolicy::Pages, 1 << 20),
                    (ReadPolicy::Oblivious, 600),
                    (ReadPolicy::Pages, 600),
                ] {
                    let reader = SegmentReader::open(c.search_pages(), &entry, policy).await.expect("open");
                    let emails: Vec<EmailId> = reader.docs().iter().map(|d| d.email).collect();
                    assert_eq!(emails, docs.iter().map(|d| d.email).collect::<Vec<_>>());
                    let cache = PageCache::new(budget);
                    check(&reader, &cache, &docs, &needles).await;
                    // Warm: the same answers again.
                    check(&reader, &cache, &docs, &needles).await;
                }
            });
        }
    }

    fn sample_docs(n: usize, seed: u64, word_len: usize) -> Vec<Doc> {
        // Deterministic words per seed: doc i uses words (i·7 + j) mod 50 of a vocabulary
        // of 50 words of `word_len` letters drawn from the seed.
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut letter = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (b'a' + (state % 26) as u8) as char
        };
        let vocabulary: Vec<String> = (0..50)
            .map(|_| (0..word_len).map(|_| letter()).collect())
            .collect();
        let rng = RandomSource::os();
        (0..n)
            .map(|i| {
                let pick = |k: usize| vocabulary[(i * 7 + k * 3) % 50].clone();
                Doc {
                    email: EmailId::random(&rng),
                    header: format!("subject: {} {}\n", pick(0), pick(1)),
                    body: (0..30).map(pick).collect::<Vec<_>>().join(" "),
                    mime: format!("filename: {}.pdf\n", pick(2)),
                }
            })
            .collect()
    }

    /// A doc of empty texts after a full frame refers to a frame of its own, which the
    /// builder must write.
    #[tokio::test]
    async fn empty_texts_after_a_full_frame() {
        let world = World::new().await;
        let mut c = world.collection().await;
        let mut docs = docs_of(vec![
            (
                String::new(),
                "word ".repeat(FRAME_TARGET / 4),
                String::new(),
            ),
            ("subject: x".into(), String::new(), String::new()),
        ]);
        docs.push(docs_of(vec![(String::new(), String::new(), String::new())]).remove(0));
        let entry = store(&mut c, &docs, MIN_PAGE_CLASS).await;
        read_everything(&c, &entry).await.unwrap();
        let reader = SegmentReader::open(c.search_pages(), &entry, ReadPolicy::Pages)
            .await
            .unwrap();
        let cache = PageCache::new(1 << 20);
        assert_eq!(
            reader.text_of(&cache, 2).await.unwrap(),
            (String::new(), String::new())
        );
        let found = reader.find(&cache, b"x").await.unwrap();
        assert_eq!(set(found.field(Field::Header)), BTreeSet::from([1]));
    }

    /// Committing search segments keeps the collection's record segments tiered, as
    /// committing records does: each `commit_segments` publishes a (here empty) record
    /// segment beside the search segment, and without tier compaction an index fed in
    /// small steps left one per step for every open to read (227 at 100 000 messages in
    /// the search bench).
    #[tokio::test]
    async fn search_commits_keep_record_segments_bounded() {
        let world = World::new().await;
        let mut c = world.collection().await;
        let docs = docs_of(vec![("subject: x".into(), "body".into(), String::new())]);
        for _ in 0..40 {
            store(&mut c, &docs, MIN_PAGE_CLASS).await;
        }
        let search = c.search_segments().count();
        assert_eq!(search, 40);
        let records = c.live_segments() - search;
        assert!(
            records < c.config().fanout,
            "{records} record segments after 40 search commits"
        );
        // A fresh open sees the same.
        let again = world.collection().await;
        assert_eq!(again.search_segments().count(), 40);
        assert_eq!(again.live_segments() - 40, records);
    }

    #[tokio::test]
    async fn phrase_and_anchors() {
        let world = World::new().await;
        let mut c = world.collection().await;
        let docs = docs_of(vec![
            (
                "from: bob@example.org".into(),
                "the meeting is at noon".into(),
                String::new(),
            ),
            (
                "from: alice".into(),
                "meetings moved; bob@example.net".into(),
                "filename: report.pdf".into(),
            ),
        ]);
        let entry = store(&mut c, &docs, MIN_PAGE_CLASS).await;
        let reader = SegmentReader::open(c.search_pages(), &entry, ReadPolicy::Oblivious)
            .await
            .unwrap();
        let cache = PageCache::new(1 << 20);
        let found = reader.find(&cache, b"eting").await.unwrap();
        assert_eq!(set(found.field(Field::Body)), BTreeSet::from([0, 1]));
        let found = reader.find(&cache, b"\0meeting\0").await.unwrap();
        assert_eq!(set(found.field(Field::Body)), BTreeSet::from([0]));
        let phrase = reader.find_phrase(&cache, "bob@example.").await.unwrap();
        assert_eq!(set(&phrase.body), BTreeSet::from([1]));
        assert_eq!(set(&phrase.header_candidates), BTreeSet::from([0]));
        let phrase = reader.find_phrase(&cache, "t.pdf").await.unwrap();
        assert_eq!(set(&phrase.mime), BTreeSet::from([1]));
        assert_eq!(phrase.verified, 1);
        let phrase = reader.find_phrase(&cache, "the meeting").await.unwrap();
        assert_eq!(set(&phrase.body), BTreeSet::from([0]));
        // Separators only: every doc is a candidate, verified.
        let phrase = reader.find_phrase(&cache, "; ").await.unwrap();
        assert_eq!(set(&phrase.body), BTreeSet::from([1]));
        assert_eq!(phrase.verified, 2);
    }

    /// The store learns nothing from which word a cold query asks for: with the
    /// oblivious policy, queries for a common, a rare and an absent word make the same
    /// requests (objects and byte ranges).
    #[tokio::test]
    async fn cold_oblivious_reads_do_not_depend_on_the_query() {
        let world = World::new().await;
        let mut c = world.collection().await;
        let docs = sample_docs(300, 1, 7);
        let entry = store(&mut c, &docs, MIN_PAGE_CLASS).await;
        let common = words(&docs[0].body).next().unwrap().to_owned();
        let rare = docs[299].mime.clone();
        let mut seen = Vec::new();
        for needle in [common.as_str(), &rare[10..14], "zzzzzz", "q"] {
            let reader = SegmentReader::open(c.search_pages(), &entry, ReadPolicy::Oblivious)
                .await
                .unwrap();
            world.counting.reset();
            let cache = PageCache::new(1 << 20);
            reader.find(&cache, needle.as_bytes()).await.unwrap();
            let requests: Vec<(String, Option<Range<u64>>)> = world
                .counting
                .requests()
                .into_iter()
                .map(|r| (r.path, r.range))
                .collect();
            assert_eq!(requests.len(), 1, "one ranged GET of the index regions");
            seen.push(requests);
            // Warm: nothing read.
            world.counting.reset();
            reader.find(&cache, needle.as_bytes()).await.unwrap();
            assert_eq!(
                world.counting.count(RequestKind::Get),
                0,
                "warm query {needle:?}"
            );
        }
        assert!(seen.windows(2).all(|w| w[0] == w[1]), "{seen:?}");
        // The page policy reads less, and depends on the query.
        let reader = SegmentReader::open(c.search_pages(), &entry, ReadPolicy::Pages)
            .await
            .unwrap();
        world.counting.reset();
        reader
            .find(&PageCache::new(1 << 20), b"zzzzzz")
            .await
            .unwrap();
        let pages_bytes: u64 = world.counting.requests().iter().map(|r| r.bytes).sum();
        let oblivious = seen[0][0].1.clone().unwrap();
        assert!(pages_bytes < oblivious.end - oblivious.start);
    }

    /// A cache too small for what queries need: warm queries miss, and each miss is one
    /// GET of the same range whatever the query (only the pages needed are opened), with
    /// the same answers as a scan; the dictionary, kept by the reader, is not read again.
    #[tokio::test]
    async fn warm_misses_read_the_regions_whole_once() {
        let world = World::new().await;
        let mut c = world.collection().await;
        let docs = sample_docs(300, 2, 7);
        let entry = store(&mut c, &docs, MIN_PAGE_CLASS).await;
        let reader = SegmentReader::open(c.search_pages(), &entry, ReadPolicy::Oblivious)
            .await
            .unwrap();
        let capacity = reader.header.capacity();
        let cache = PageCache::with_budgets(3 * (capacity + 64), 0);
        let common = words(&docs[0].body).next().unwrap().to_owned();
        let rare = docs[299].mime[10..14].to_owned();
        let needles = [common.as_str(), rare.as_str(), "zzzzzz", "q", "e"];
        let mut ranges = HashSet::new();
        let mut warm_reads = 0;
        for round in 0..3 {
            for needle in needles {
                world.counting.reset();
                let found = reader.find(&cache, needle.as_bytes()).await.unwrap();
                for field in Field::ALL {
                    assert_eq!(
                        set(found.field(field)),
                        naive(&docs, field, needle),
                        "{needle:?}"
                    );
                }
                let requests = world.counting.requests();
                assert!(requests.len() <= 1, "{needle:?}: {requests:?}");
                if round > 0 {
                    warm_reads += requests.len();
                }
                ranges.extend(requests.into_iter().map(|r| r.range));
            }
        }
        assert!(
            warm_reads > 0,
            "the cache is small enough for warm queries to miss"
        );
        assert_eq!(ranges.len(), 1, "every read is the same range: {ranges:?}");
        assert!(reader.pinned_len() > 0);
        // A query of several keys (words, then phrases) reads the regions once at most.
        let index_range = ranges.into_iter().next().unwrap();
        let mut query_reads = 0;
        for round in 0..3 {
            world.counting.reset();
            let mut sealed = None;
            for needle in needles {
                reader
                    .find_all(&cache, &[needle.as_bytes().to_vec()], &mut sealed)
                    .await
                    .unwrap();
            }
            for phrase in [format!("{common} {common}"), "e q".into()] {
                reader
                    .find_phrase_within(&cache, &phrase, &DocSet::full(300), &mut sealed)
                    .await
                    .unwrap();
            }
            let index_reads = world
                .counting
                .requests()
                .into_iter()
                .filter(|r| r.range == index_range)
                .count();
            assert!(index_reads <= 1, "round {round}: {index_reads} reads");
            query_reads += index_reads;
        }
        assert!(query_reads > 0, "the keys together miss");
    }

    async fn stored_bytes(world: &World, c: &Collection, entry: &SegmentEntry) -> Bytes {
        let store: DynStore = Arc::new(world.counting.clone());
        store
            .get(&c.search_pages().path(&entry.id))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
    }

    async fn overwrite(world: &World, c: &Collection, entry: &SegmentEntry, bytes: Vec<u8>) {
        let store: DynStore = Arc::new(world.counting.clone());
        store
            .put(&c.search_pages().path(&entry.id), bytes.into())
            .await
            .unwrap();
    }

    /// Opens `entry` and reads everything a reader can: every word's postings and every
    /// doc's text.
    async fn read_everything(c: &Collection, entry: &SegmentEntry) -> Result<()> {
        let reader = SegmentReader::open(c.search_pages(), entry, ReadPolicy::Oblivious).await?;
        let cache = PageCache::new(1 << 24);
        reader.find(&cache, b"").await?;
        for doc in 0..reader.docs().len() as u32 {
            reader.text_of(&cache, doc).await?;
        }
        Ok(())
    }

    #[tokio::test]
    async fn tampering_is_refused_with_a_typed_error() {
        let world = World::new().await;
        let mut c = world.collection().await;
        let docs = sample_docs(40, 2, 6);
        let a = store(&mut c, &docs, MIN_PAGE_CLASS).await;
        let b = store(&mut c, &sample_docs(40, 3, 6), MIN_PAGE_CLASS).await;
        read_everything(&c, &a).await.unwrap();
        let original = stored_bytes(&world, &c, &a).await.to_vec();
        let header = SearchHeader::parse(&original).unwrap();
        let pages = header.pages(a.stored_len).unwrap();
        assert!(pages > 8, "{pages} pages");
        let trailer = SegmentReader::open(c.search_pages(), &a, ReadPolicy::Oblivious)
            .await
            .unwrap()
            .trailer()
            .to_owned();
        let text = trailer.region(Region::Text);
        let filler = text.first_page + text.pages..pages - 1;
        let page = |i: u32| header.page_range(i).start as usize..header.page_range(i).end as usize;
        // A flipped byte in any page (or the header).
        for i in 0..pages {
            for at in [page(i).start, page(i).start + 30, page(i).end - 1] {
                let mut bytes = original.clone();
                bytes[at] ^= 0x40;
                overwrite(&world, &c, &a, bytes).await;
                // A merge reads the whole object: always refused.
                let whole = super::super::merge::read_contents(&c.search_pages(), &a).await;
                assert!(matches!(whole, Err(Error::Tampered)), "page {i}: {whole:?}");
                // A reader refuses it when it reads that page (never the filler).
                let lazy = read_everything(&c, &a).await;
                if filler.contains(&i) {
                    assert!(lazy.is_ok(), "filler page {i} is never read");
                } else {
                    assert!(matches!(lazy, Err(Error::Tampered)), "page {i}: {lazy:?}");
                }
            }
        }
        let mut bytes = original.clone();
        bytes[2] ^= 1; // the magic
        overwrite(&world, &c, &a, bytes).await;
        assert!(matches!(
            read_everything(&c, &a).await,
            Err(Error::Tampered)
        ));
        // Two pages swapped within the segment: the trailer with the first doc page, and
        // two postings pages.
        for (x, y) in [
            (0, pages - 1),
            (
                trailer.region(Region::Postings).first_page,
                trailer.region(Region::Words).first_page,
            ),
        ] {
            let mut bytes = original.clone();
            let (px, py) = (original[page(x)].to_vec(), original[page(y)].to_vec());
            bytes[page(x)].copy_from_slice(&py);
            bytes[page(y)].copy_from_slice(&px);
            overwrite(&world, &c, &a, bytes).await;
            let lazy = read_everything(&c, &a).await;
            assert!(
                matches!(lazy, Err(Error::Tampered)),
                "pages {x}, {y}: {lazy:?}"
            );
        }
        // A page of another segment at the same position.
        let other = stored_bytes(&world, &c, &b).await.to_vec();
        for i in [0, 2, pages - 1] {
            let mut bytes = original.clone();
            bytes[page(i)].copy_from_slice(&other[page(i)]);
            overwrite(&world, &c, &a, bytes).await;
            let lazy = read_everything(&c, &a).await;
            assert!(
                matches!(lazy, Err(Error::Tampered)),
                "page {i} of b: {lazy:?}"
            );
        }
        // Truncated (the last page, or one byte).
        for cut in [header.sealed_len(), 1] {
            overwrite(&world, &c, &a, original[..original.len() - cut].to_vec()).await;
            let lazy = SegmentReader::open(c.search_pages(), &a, ReadPolicy::Oblivious).await;
            assert!(matches!(lazy, Err(Error::Tampered)), "cut {cut}: {lazy:?}");
        }
        overwrite(&world, &c, &a, original.clone()).await;
        read_everything(&c, &a).await.unwrap();
        // The segment moved to another account (same store, same deployment, same
        // collection name), under the same entry.
        let other_account = World {
            counting: world.counting.clone(),
            index: world.index.clone(),
            account: AccountId::random(&RandomSource::os()),
            key: world.key.clone(),
        };
        let mut moved = other_account.collection().await;
        let entry = store(&mut moved, &docs, MIN_PAGE_CLASS).await;
        let mut copy = original.clone();
        copy[8..24].copy_from_slice(entry.id.as_bytes());
        let copied_entry = SegmentEntry {
            stored_len: copy.len() as u64,
            ..entry.clone()
        };
        overwrite(&other_account, &moved, &copied_entry, copy).await;
        let lazy = read_everything(&moved, &copied_entry).await;
        assert!(matches!(lazy, Err(Error::Tampered)), "moved: {lazy:?}");
    }

    /// Two segments of same-size documents with different words are stored in objects of
    /// the same size, and no word appears in the stored bytes.
    #[tokio::test]
    async fn sizes_do_not_depend_on_words_and_words_do_not_appear() {
        let world = World::new().await;
        let mut c = world.collection().await;
        for n in [1usize, 30, 400] {
            let a = sample_docs(n, 10 + n as u64, 9);
            let b = sample_docs(n, 20 + n as u64, 9);
            let (ea, eb) = (
                store(&mut c, &a, DEFAULT_PAGE_CLASS).await,
                store(&mut c, &b, DEFAULT_PAGE_CLASS).await,
            );
            assert_eq!(ea.stored_len, eb.stored_len, "{n} docs");
            let pages = SearchHeader::parse(&stored_bytes(&world, &c, &ea).await)
                .unwrap()
                .pages(ea.stored_len)
                .unwrap();
            assert_eq!(
                u64::from(pages),
                crate::format::search::padme(u64::from(pages))
            );
            for (entry, docs) in [(&ea, &a), (&eb, &b)] {
                let stored = stored_bytes(&world, &c, entry).await;
                for doc in docs {
                    for w in words(&doc.body).chain(words(&doc.header)) {
                        assert!(
                            memchr::memmem::find(&stored, w.as_bytes()).is_none(),
                            "{w:?} in the stored segment"
                        );
                    }
                }
            }
        }
    }

    #[tokio::test]
    async fn the_view_never_loads_search_segments() {
        let world = World::new().await;
        let mut c = world.collection().await;
        let mut batch = Batch::new();
        batch.put(&b"v"[..], &b"1"[..]);
        c.commit(batch).await.unwrap();
        let entry = store(&mut c, &sample_docs(20, 5, 5), MIN_PAGE_CLASS).await;
        for _ in 0..6 {
            let mut batch = Batch::new();
            batch.put(&b"w"[..], &b"2"[..]);
            c.commit(batch).await.unwrap();
        }
        c.compact().await.unwrap();
        // A fresh handle: the record kept, the search segment listed and not loaded.
        world.counting.reset();
        let fresh = world.collection().await;
        assert_eq!(fresh.len(), 2);
        assert_eq!(fresh.get(b"v"), Some(&b"1"[..]));
        assert_eq!(
            fresh.search_segments().cloned().collect::<Vec<_>>(),
            vec![entry.clone()]
        );
        let path = fresh.search_pages().path(&entry.id).to_string();
        assert!(
            world.counting.requests().iter().all(|r| r.path != path),
            "the open read the search segment"
        );
    }

    /// Merge of two segments into one: the docs the live set excludes are gone, an email
    /// in both is kept once (from the later), the answers equal a naive scan of what is
    /// left; a merge whose inputs another writer merged first is lost and leaves nothing.
    #[tokio::test]
    async fn merge_drops_dead_docs_and_replaces_its_inputs() {
        use super::super::merge::{merge_segments, MergeOutcome};
        let world = World::new().await;
        let mut c = world.collection().await;
        let first = sample_docs(60, 7, 6);
        let mut second = sample_docs(50, 8, 6);
        second[0].email = first[5].email; // re-indexed in the later segment
        let a = store(&mut c, &first, MIN_PAGE_CLASS).await;
        let b = store(&mut c, &second, MIN_PAGE_CLASS).await;
        let dead: BTreeSet<EmailId> = first.iter().step_by(3).map(|d| d.email).collect();
        let live = |e: &EmailId| !dead.contains(e);
        let mut other = world.collection().await;
        let outcome = merge_segments(&mut c, &[a.clone(), b.clone()], &live, MIN_PAGE_CLASS)
            .await
            .unwrap();
        let MergeOutcome::Merged(Some(merged)) = outcome else {
            panic!("{outcome:?}");
        };
        assert_eq!(
            c.search_segments().cloned().collect::<Vec<_>>(),
            vec![merged.clone()]
        );
        let expected: Vec<Doc> = first
            .iter()
            .filter(|d| live(&d.email) && d.email != second[0].email)
            .chain(second.iter())
            .cloned()
            .collect();
        assert_eq!(merged.records as usize, expected.len());
        let reader = SegmentReader::open(c.search_pages(), &merged, ReadPolicy::Oblivious)
            .await
            .unwrap();
        let emails: Vec<EmailId> = reader.docs().iter().map(|d| d.email).collect();
        assert_eq!(emails, expected.iter().map(|d| d.email).collect::<Vec<_>>());
        let cache = PageCache::new(1 << 20);
        let mut needles: Vec<String> = expected
            .iter()
            .flat_map(|d| words(&d.body).take(2).map(str::to_owned))
            .collect();
        needles.extend(["ab", "pdf", "ject: "].map(str::to_owned));
        check(&reader, &cache, &expected, &needles).await;
        // The other handle still sees a and b: its merge loses.
        other.refresh().await.unwrap();
        let stale = [a.clone(), b.clone()];
        let objects = |w: &World| {
            let counting = w.counting.clone();
            async move {
                let store: DynStore = Arc::new(counting);
                use futures::TryStreamExt;
                store
                    .list(None)
                    .try_collect::<Vec<_>>()
                    .await
                    .unwrap()
                    .len()
            }
        };
        let before = objects(&world).await;
        let outcome = merge_segments(&mut other, &stale, &live, MIN_PAGE_CLASS)
            .await
            .unwrap();
        assert_eq!(outcome, MergeOutcome::Lost);
        assert_eq!(
            objects(&world).await,
            before,
            "the lost merge's segment is deleted"
        );
        // Everything dead: the inputs are dropped.
        let outcome = merge_segments(&mut c, &[merged], &|_| false, MIN_PAGE_CLASS)
            .await
            .unwrap();
        assert_eq!(outcome, MergeOutcome::Merged(None));
        assert_eq!(c.search_segments().count(), 0);
    }

    /// A merge copies the compressed frames whose docs are all kept and compresses again
    /// those that lose a doc: bodies of ~20 KB make frames of three docs; the first frame
    /// of the first input loses two, the others keep all. Every kept doc's text reads
    /// back as it was and queries equal a naive scan.
    #[tokio::test]
    async fn merge_copies_whole_frames_and_recompresses_partial_ones() {
        use super::super::merge::{merge_segments, MergeOutcome};
        let world = World::new().await;
        let mut c = world.collection().await;
        let big = |mut docs: Vec<Doc>| {
            for (i, d) in docs.iter_mut().enumerate() {
                let line = format!("{} {i}\n", d.body);
                d.body = line.repeat(20_000 / line.len() + 1);
            }
            docs
        };
        let first = big(sample_docs(20, 11, 6));
        let second = big(sample_docs(10, 12, 6));
        let a = store(&mut c, &first, MIN_PAGE_CLASS).await;
        let b = store(&mut c, &second, MIN_PAGE_CLASS).await;
        let input = SegmentReader::open(c.search_pages(), &a, ReadPolicy::Oblivious)
            .await
            .unwrap();
        assert_eq!(input.docs()[2].frame, 0, "three docs per frame");
        assert_eq!(input.docs()[3].frame, 1, "three docs per frame");
        let dead: BTreeSet<EmailId> = [first[0].email, first[1].email].into();
        let live = |e: &EmailId| !dead.contains(e);
        let outcome = merge_segments(&mut c, &[a, b], &live, MIN_PAGE_CLASS)
            .await
            .unwrap();
        let MergeOutcome::Merged(Some(merged)) = outcome else {
            panic!("{outcome:?}");
        };
        let expected: Vec<Doc> = first[2..].iter().chain(&second).cloned().collect();
        let reader = SegmentReader::open(c.search_pages(), &merged, ReadPolicy::Oblivious)
            .await
            .unwrap();
        let cache = PageCache::new(8 << 20);
        assert_eq!(reader.docs().len(), expected.len());
        for (d, doc) in expected.iter().enumerate() {
            assert_eq!(reader.docs()[d].email, doc.email);
            let (body, mime) = reader.text_of(&cache, d as u32).await.unwrap();
            assert_eq!(
                (body.as_str(), mime.as_str()),
                (doc.body.as_str(), doc.mime.as_str()),
                "doc {d}"
            );
        }
        // The kept doc of the partial frame is alone in a frame of its own; the whole
        // frames follow as they were (three docs each).
        let frames: Vec<u32> = reader.docs().iter().map(|d| d.frame).collect();
        assert_eq!(frames[..4], [0, 1, 1, 1], "{frames:?}");
        let needles: Vec<String> = expected
            .iter()
            .flat_map(|d| words(&d.body).take(2).map(str::to_owned))
            .chain(["7\n".to_owned(), "pdf".to_owned()])
            .collect();
        check(&reader, &cache, &expected, &needles).await;
    }

    /// Writes the seeds of the `search_segment` fuzz target (segments of 512-byte pages
    /// as `u16 length ‖ payload` runs): `cargo test --release --all-features --lib
    /// write_fuzz_seeds -- --ignored`.
    #[test]
    #[ignore]
    fn write_fuzz_seeds() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/search_segment");
        std::fs::create_dir_all(&dir).unwrap();
        let mut sets = vec![
            Vec::new(),
            sample_docs(1, 1, 4),
            sample_docs(12, 2, 6),
            sample_docs(200, 3, 3),
        ];
        sets.push(docs_of(vec![(
            "from: bob@example.org".into(),
            "café ß 1 2 3 naïve".into(),
            "filename: r.pdf".into(),
        )]));
        for (i, docs) in sets.iter_mut().enumerate() {
            for d in docs.iter_mut() {
                d.email = EmailId::from_bytes([i as u8; 16]);
            }
            let plain = build(docs, MIN_PAGE_CLASS);
            let mut out = Vec::new();
            for page in &plain.pages {
                out.extend_from_slice(&(page.len() as u16).to_be_bytes());
                out.extend_from_slice(page);
            }
            std::fs::write(dir.join(format!("seed-{i}")), out).unwrap();
        }
    }

    /// Size and latency on 100 000 synthetic documents (Zipf-distributed words of a 40 000
    /// word vocabulary, seven unique ids per document, ≈ 2.85 KB of folded text each) in
    /// 8 segments of 12 500, as merges leave them: `cargo test --release --all-features
    /// --lib measure_hundred_thousand -- --ignored --nocapture`. Prints the stored size
    /// over the text and the query latencies; asserts nothing but the answers' sanity.
    #[test]
    #[ignore]
    fn measure_hundred_thousand() {
        use std::time::Instant;
        let docs_total = 100_000usize;
        let per_segment = 12_500usize;
        struct Gen {
            state: u64,
            cumulative: Vec<f64>,
        }
        impl Gen {
            fn next(&mut self) -> u64 {
                self.state ^= self.state << 13;
                self.state ^= self.state >> 7;
                self.state ^= self.state << 17;
                self.state
            }
            /// A word ordinal, Zipf(1)-distributed.
            fn zipf(&mut self) -> usize {
                let total = *self.cumulative.last().unwrap();
                let u = (self.next() % 1_000_000_007) as f64 / 1_000_000_007.0 * total;
                self.cumulative
                    .partition_point(|&c| c < u)
                    .min(self.cumulative.len() - 1)
            }
            fn text(&mut self, vocabulary: &[String], words: usize) -> String {
                let mut out = String::new();
                for i in 0..words {
                    out.push_str(&vocabulary[self.zipf()]);
                    out.push(if i % 12 == 11 { '\n' } else { ' ' });
                }
                out
            }
        }
        let mut g = Gen {
            state: 0x2545_F491_4F6C_DD1D,
            cumulative: Vec::new(),
        };
        let vocabulary: Vec<String> = (0..40_000)
            .map(|_| {
                let len = 2 + (g.next() % 6 + g.next() % 6) as usize;
                (0..len)
                    .map(|_| (b'a' + (g.next() % 26) as u8) as char)
                    .collect()
            })
            .collect();
        g.cumulative = (1..=vocabulary.len())
            .scan(0.0, |acc, k| {
                *acc += 1.0 / k as f64;
                Some(*acc)
            })
            .collect();
        let rt = measuring_runtime();
        rt.block_on(async {
            let world = World::new().await;
            let mut c = world.collection().await;
            let rng = RandomSource::os();
            let (mut stored, mut input) = (0u64, 0u64);
            let started = Instant::now();
            let mut entries = Vec::new();
            for s in 0..docs_total / per_segment {
                let mut builder = SegmentBuilder::new(DEFAULT_PAGE_CLASS, 1);
                for d in 0..per_segment {
                    let n = s * per_segment + d;
                    let v = &vocabulary;
                    let header = format!(
                        "from: {} <{}@{}.example>\nto: {}\nsubject: {}\nmessage-id: <{:016x}@mx{}.example>\nreferences: <{:016x}@mx.example>\nreceived: from mx{} id {:012x}\n",
                        g.text(v, 2).trim(), v[g.zipf()], v[g.zipf()], g.text(v, 2).trim(), g.text(v, 6).trim(),
                        g.next(), n % 97, g.next(), n % 13, g.next()
                    );
                    let body = g.text(v, 330);
                    let mime = format!("content-type: application/pdf\nfilename: {}-{:08x}.pdf\n", v[g.zipf()], g.next());
                    builder
                        .add(EmailId::random(&rng), &DocText { header: &header, body: &body, mime: &mime, complete: true })
                        .unwrap();
                }
                input += builder.text_len();
                let plain = builder.finish();
                let entry = c.search_pages().put(plain).await.unwrap();
                stored += entry.stored_len;
                entries.push(entry);
            }
            c.commit_segments(entries, Vec::new(), Batch::new()).await.unwrap();
            let entries: Vec<SegmentEntry> = c.search_segments().cloned().collect();
            println!(
                "{docs_total} docs in {} segments built and stored in {:.1} s: text {} KiB, stored {} KiB = {:.1}% of the text",
                entries.len(),
                started.elapsed().as_secs_f64(),
                input / 1024,
                stored / 1024,
                100.0 * stored as f64 / input as f64
            );
            let cache = PageCache::new(64 << 20);
            let started = Instant::now();
            let mut readers = Vec::new();
            for e in &entries {
                readers.push(SegmentReader::open(c.search_pages(), e, ReadPolicy::Oblivious).await.unwrap());
            }
            println!("open (trailers, doc and frame tables): {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
            let mut by_region = [0u64; 6];
            let mut dictionary_raw = 0u64;
            for r in &readers {
                for (i, region) in crate::format::search::REGIONS.iter().enumerate() {
                    by_region[i] += r.trailer().region(*region).len;
                }
                dictionary_raw += r.trailer().dictionary_len;
            }
            println!(
                "stored by region, % of the text: docs {:.1}, frames {:.2}, dictionary {:.1} (raw {:.1}), words {:.1}, postings {:.1}, text store {:.1}; pages and padding {:.1}",
                100.0 * by_region[0] as f64 / input as f64,
                100.0 * by_region[1] as f64 / input as f64,
                100.0 * by_region[2] as f64 / input as f64,
                100.0 * dictionary_raw as f64 / input as f64,
                100.0 * by_region[3] as f64 / input as f64,
                100.0 * by_region[4] as f64 / input as f64,
                100.0 * by_region[5] as f64 / input as f64,
                100.0 * (stored - by_region.iter().sum::<u64>()) as f64 / input as f64,
            );
            let query = |needle: &'static str| {
                let readers = &readers;
                let cache = &cache;
                async move {
                    let started = Instant::now();
                    let mut hits = 0;
                    for r in readers {
                        hits += r.find(cache, needle.as_bytes()).await.unwrap().0.iter().map(DocSet::count).sum::<usize>();
                    }
                    (started.elapsed().as_secs_f64() * 1e3, hits)
                }
            };
            let common: &'static str = Box::leak(vocabulary[3].clone().into_boxed_str());
            let rare: &'static str = Box::leak(vocabulary[39_000].clone().into_boxed_str());
            let infix: &'static str = Box::leak(vocabulary[500][1..3].to_owned().into_boxed_str());
            let (cold, hits) = query(rare).await;
            println!("cold first query (oblivious: every segment's index regions read): {cold:.1} ms, {hits} hits");
            let mut warm = Vec::new();
            for needle in [common, rare, infix, "zzzzq"] {
                for _ in 0..5 {
                    let (ms, hits) = query(needle).await;
                    warm.push(ms);
                    if needle == "zzzzq" {
                        assert_eq!(hits, 0);
                    }
                }
                println!("warm {needle:?}: {:.2} ms, {} hits", query(needle).await.0, query(needle).await.1);
            }
            warm.sort_by(|a, b| a.partial_cmp(b).unwrap());
            println!("warm one-word queries: median {:.2} ms; cache {:?}", warm[warm.len() / 2], cache.stats());
            let phrase: &'static str = Box::leak(format!("{} {}", vocabulary[10], vocabulary[11]).into_boxed_str());
            let started = Instant::now();
            let mut verified = 0;
            let mut found = 0;
            for r in &readers {
                let m = r.find_phrase(&cache, phrase).await.unwrap();
                verified += m.verified;
                found += m.body.count();
            }
            println!("phrase {phrase:?}: {:.1} ms, {verified} docs verified, {found} found", started.elapsed().as_secs_f64() * 1e3);
        });
    }
}
