//! Search segments (issue 14): the encrypted full-text index of a batch of emails, one
//! immutable object of fixed-size sealed pages that a reader fetches by range.
//!
//! ```text
//! search segment object
//!      0   4  magic "MVX1"
//!      4   1  version (1)
//!      5   1  page class c: a sealed page is 2^c bytes (9 ≤ c ≤ 16; 14 = 16 KiB by default)
//!      6   2  reserved, zero
//!      8  16  segment id (random; the manifest entry's)
//!     24   …  P pages, page i at 24 + i·2^c: nonce (24) ‖ ciphertext ‖ tag (16)
//!
//! page plaintext (2^c − 40 bytes): used length (u16) ‖ payload ‖ zero fill
//! ```
//!
//! `P = (stored length − 24) / 2^c`: the manifest pins the stored length, so a reader
//! finds any page without reading the header. Pages are sealed under the collection's
//! key with associated data binding deployment, account, collection, the header (so the
//! segment id) and the page number (`index::sealed`): a page cannot be moved to another
//! position, segment or account.
//!
//! The payloads of the pages, in order, hold six **regions**, each starting on a page of
//! its own and filling its pages completely but the last; then filler pages (empty
//! payloads, so that `P` is a Padmé length, [`padme`]); the **trailer** is the payload of
//! the last page:
//!
//! ```text
//! trailer
//!      4  docs (u32)        4  words (u32)        4  frames (u32)
//!      8  dictionary length, decompressed (u64)
//!      4  text version (u32: the text model's versions, opaque to this format)
//!      6 × region: first page (u32) ‖ page count (u32) ‖ byte length (u64), in the order
//!          docs, frames, dictionary, words, postings, text
//!
//! docs        per local doc (33 B): email id (16) ‖ flags (u8, bit 0: text complete)
//!             ‖ frame (u32) ‖ offset in the frame (u32) ‖ body length (u32) ‖ mime length (u32)
//! frames      per text-store frame (16 B): offset in the text region (u64)
//!             ‖ compressed length (u32) ‖ decompressed length (u32)
//! dictionary  zstd of "\0w₁\0w₂\0…\0wₙ\0": the distinct words, folded UTF-8, strictly
//!             increasing byte order
//! words       per word ordinal (5 B): offset of its postings block (u32) ‖ field mask (u8:
//!             bit 0 header, 1 body, 2 mime); the block runs to the next word's offset
//! postings    per word, per field of its mask in bit order, one posting list:
//!               tag 1: count (varint) ‖ first doc (varint) ‖ deltas ≥ 1 (varints)
//!               tag 2: bitmap of ⌈docs/8⌉ bytes, bit d of byte d/8 (LSB first), spare bits zero
//! text        zstd frames of the concatenated folded `body ‖ mime` of consecutive docs
//! ```
//!
//! Every parser here bounds each count by the bytes left, checks offsets against their
//! region and returns a [`SegmentError`] naming the malformed field (the crate reports
//! them as [`Error::Tampered`](crate::Error::Tampered): only a key holder writes pages).

use std::io::Read;

use crate::ids::{EmailId, SegmentId};

/// Magic bytes of a search segment.
pub const SEARCH_MAGIC: [u8; 4] = *b"MVX1";
/// Search segment format version.
pub const SEARCH_VERSION: u8 = 1;
/// Length of the clear header.
pub const HEADER_LEN: usize = 24;
/// Page class of new segments: 16 KiB sealed pages.
pub const DEFAULT_PAGE_CLASS: u8 = 14;
/// Smallest page class a reader accepts (512 B pages, for tests of many pages).
pub const MIN_PAGE_CLASS: u8 = 9;
/// Largest page class a reader accepts (its used length must fit a `u16`).
pub const MAX_PAGE_CLASS: u8 = 16;
/// Bytes a sealed page adds to its plaintext (nonce and tag).
pub const PAGE_SEAL_OVERHEAD: usize = 40;
/// Length of one doc table entry.
pub const DOC_ENTRY_LEN: usize = 33;
/// Length of one frame table entry.
pub const FRAME_ENTRY_LEN: usize = 16;
/// Length of one word table entry.
pub const WORD_ENTRY_LEN: usize = 5;
/// Length of the trailer.
pub const TRAILER_LEN: usize = 24 + REGIONS.len() * 16;
/// Largest decompressed text-store frame a reader accepts (a frame holds whole docs, and a
/// doc's folded text is capped at 8 MiB by the text model).
pub const MAX_FRAME_LEN: u32 = 16 << 20;
/// Largest decompressed dictionary a reader accepts.
pub const MAX_DICTIONARY_LEN: u64 = 1 << 30;
/// Field mask bits of all fields.
pub const ALL_FIELDS: u8 = 0b111;

const TAG_DELTA: u8 = 1;
const TAG_BITMAP: u8 = 2;

/// What a malformed search segment has wrong, field by field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SegmentError {
    /// The header does not start with [`SEARCH_MAGIC`].
    #[error("not a search segment")]
    Magic,
    /// A version this crate does not read.
    #[error("search segment version {0}")]
    Version(u8),
    /// A page class outside [`MIN_PAGE_CLASS`]..=[`MAX_PAGE_CLASS`].
    #[error("page class {0}")]
    PageClass(u8),
    /// Reserved header bytes are not zero.
    #[error("reserved bytes")]
    Reserved,
    /// The stored length is not the header plus a whole number of pages (at least one).
    #[error("stored length")]
    Length,
    /// A page's used length is above its capacity.
    #[error("page used length")]
    PageUsed,
    /// A page's fill after its used length is not zero.
    #[error("page fill")]
    PageFill,
    /// The trailer is short, long or inconsistent.
    #[error("trailer")]
    Trailer,
    /// A region is outside the pages, overlaps another, or its page count does not fit its
    /// length.
    #[error("region {0:?}")]
    Region(Region),
    /// A doc table entry is malformed (flags, locator outside its frame).
    #[error("doc table")]
    DocTable,
    /// A frame table entry is malformed (not contiguous, too large).
    #[error("frame table")]
    FrameTable,
    /// The dictionary is not strictly increasing NUL-separated UTF-8 words, or holds
    /// another number of words than the trailer says.
    #[error("dictionary")]
    Dictionary,
    /// A word table entry is malformed (offsets decreasing or outside the postings, empty
    /// or unknown field mask).
    #[error("word table")]
    WordTable,
    /// A posting list is malformed (unknown tag, doc out of range, not increasing, bad
    /// varint, bitmap spare bits, block not consumed exactly).
    #[error("postings")]
    Postings,
    /// Compressed bytes do not decompress to their declared length.
    #[error("compression")]
    Compression,
}

impl From<SegmentError> for crate::Error {
    fn from(e: SegmentError) -> Self {
        match e {
            SegmentError::Version(version) => crate::Error::UnsupportedVersion {
                object: "search segment",
                version,
            },
            _ => crate::Error::Tampered,
        }
    }
}

/// Result of this module's parsers.
pub type Result<T> = std::result::Result<T, SegmentError>;

/// A text field of a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    /// Top-level header fields.
    Header,
    /// Decoded text of the body's text parts.
    Body,
    /// MIME header lines of the non-root parts (attachment names).
    Mime,
}

impl Field {
    /// Every field, in mask bit order.
    pub const ALL: [Field; 3] = [Field::Header, Field::Body, Field::Mime];

    /// The field's bit in a field mask.
    pub fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The regions of a segment, in page order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Region {
    /// Local doc → email id and text-store locator.
    Docs,
    /// Text-store frame table.
    Frames,
    /// Compressed dictionary.
    Dictionary,
    /// Word ordinal → postings block and field mask.
    Words,
    /// Posting lists.
    Postings,
    /// Compressed folded texts.
    Text,
}

/// The regions in page order.
pub const REGIONS: [Region; 6] = [
    Region::Docs,
    Region::Frames,
    Region::Dictionary,
    Region::Words,
    Region::Postings,
    Region::Text,
];

/// The clear header of a search segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SearchHeader {
    /// The segment's id.
    pub id: SegmentId,
    /// Its page class: sealed pages of `2^page_class` bytes.
    pub page_class: u8,
}

impl SearchHeader {
    /// Serialized header (also the associated data that binds each page to it).
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&SEARCH_MAGIC);
        out[4] = SEARCH_VERSION;
        out[5] = self.page_class;
        out[8..24].copy_from_slice(self.id.as_bytes());
        out
    }

    /// Parses the first [`HEADER_LEN`] bytes of a segment.
    ///
    /// # Errors
    /// [`SegmentError::Magic`], [`SegmentError::Version`], [`SegmentError::PageClass`],
    /// [`SegmentError::Reserved`], or [`SegmentError::Length`] for fewer bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let header = bytes.get(..HEADER_LEN).ok_or(SegmentError::Length)?;
        if header[0..4] != SEARCH_MAGIC {
            return Err(SegmentError::Magic);
        }
        if header[4] != SEARCH_VERSION {
            return Err(SegmentError::Version(header[4]));
        }
        let page_class = header[5];
        if !(MIN_PAGE_CLASS..=MAX_PAGE_CLASS).contains(&page_class) {
            return Err(SegmentError::PageClass(page_class));
        }
        if header[6..8] != [0, 0] {
            return Err(SegmentError::Reserved);
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&header[8..24]);
        Ok(Self {
            id: SegmentId::from_bytes(id),
            page_class,
        })
    }

    /// Length of a sealed page.
    pub fn sealed_len(&self) -> usize {
        1 << self.page_class
    }

    /// Length of a page's plaintext.
    pub fn plain_len(&self) -> usize {
        self.sealed_len() - PAGE_SEAL_OVERHEAD
    }

    /// Payload bytes a page holds.
    pub fn capacity(&self) -> usize {
        self.plain_len() - 2
    }

    /// Number of pages of a segment of `stored_len` bytes.
    ///
    /// # Errors
    /// [`SegmentError::Length`] unless it is the header plus at least one whole page.
    pub fn pages(&self, stored_len: u64) -> Result<u32> {
        let body = stored_len
            .checked_sub(HEADER_LEN as u64)
            .ok_or(SegmentError::Length)?;
        let sealed = self.sealed_len() as u64;
        if body == 0 || body % sealed != 0 {
            return Err(SegmentError::Length);
        }
        u32::try_from(body / sealed).map_err(|_| SegmentError::Length)
    }

    /// Byte range of sealed page `i` in the object.
    pub fn page_range(&self, i: u32) -> std::ops::Range<u64> {
        let start = HEADER_LEN as u64 + u64::from(i) * self.sealed_len() as u64;
        start..start + self.sealed_len() as u64
    }
}

/// A page's plaintext for `payload` (at most `capacity` bytes): its used length, the
/// payload and zero fill.
pub fn encode_page(payload: &[u8], capacity: usize) -> Vec<u8> {
    assert!(payload.len() <= capacity && capacity <= usize::from(u16::MAX));
    let mut out = Vec::with_capacity(capacity + 2);
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
    out.resize(capacity + 2, 0);
    out
}

/// The payload of an opened page of `capacity`.
///
/// # Errors
/// [`SegmentError::Length`] for a plaintext of another length,
/// [`SegmentError::PageUsed`], [`SegmentError::PageFill`].
pub fn page_payload(plain: &[u8], capacity: usize) -> Result<&[u8]> {
    if plain.len() != capacity + 2 {
        return Err(SegmentError::Length);
    }
    let used = usize::from(u16::from_be_bytes([plain[0], plain[1]]));
    if used > capacity {
        return Err(SegmentError::PageUsed);
    }
    if plain[2 + used..].iter().any(|&b| b != 0) {
        return Err(SegmentError::PageFill);
    }
    Ok(&plain[2..2 + used])
}

/// Padmé (Nikitin et al., PETS 2019): `n` rounded up so that its binary form keeps only
/// its ⌊log₂⌊log₂ n⌋⌋ + 1 top bits (at most 12% more, fewer distinct lengths).
pub fn padme(n: u64) -> u64 {
    if n < 2 {
        return n;
    }
    let e = 63 - u64::from(n.leading_zeros());
    let s = 64 - u64::from(e.leading_zeros());
    let zero_bits = e - s;
    let mask = (1u64 << zero_bits) - 1;
    (n + mask) & !mask
}

/// Where a region lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RegionSpan {
    /// Its first page.
    pub first_page: u32,
    /// Its number of pages.
    pub pages: u32,
    /// Its length in bytes.
    pub len: u64,
}

impl RegionSpan {
    /// The pages holding bytes `range` of the region (empty for an empty range).
    pub fn pages_of(&self, range: std::ops::Range<u64>, capacity: usize) -> std::ops::Range<u32> {
        if range.start >= range.end {
            return self.first_page..self.first_page;
        }
        let cap = capacity as u64;
        let first = self.first_page + (range.start / cap) as u32;
        let last = self.first_page + ((range.end - 1) / cap) as u32;
        first..last + 1
    }
}

/// What a segment holds and where: the last page's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Trailer {
    /// Number of local docs.
    pub docs: u32,
    /// Number of dictionary words.
    pub words: u32,
    /// Number of text-store frames.
    pub frames: u32,
    /// Decompressed dictionary length.
    pub dictionary_len: u64,
    /// The text model's versions when the segment was built (opaque here).
    pub text_version: u32,
    /// The regions, in [`REGIONS`] order.
    pub regions: [RegionSpan; 6],
}

impl Trailer {
    /// The span of `region`.
    pub fn region(&self, region: Region) -> RegionSpan {
        self.regions[region as usize]
    }

    /// Serialized trailer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(TRAILER_LEN);
        out.extend_from_slice(&self.docs.to_be_bytes());
        out.extend_from_slice(&self.words.to_be_bytes());
        out.extend_from_slice(&self.frames.to_be_bytes());
        out.extend_from_slice(&self.dictionary_len.to_be_bytes());
        out.extend_from_slice(&self.text_version.to_be_bytes());
        for span in &self.regions {
            out.extend_from_slice(&span.first_page.to_be_bytes());
            out.extend_from_slice(&span.pages.to_be_bytes());
            out.extend_from_slice(&span.len.to_be_bytes());
        }
        out
    }

    /// Parses the last page's payload of a segment of `pages` pages of `capacity`.
    ///
    /// # Errors
    /// [`SegmentError::Trailer`] for a wrong length or counts that do not fit their
    /// tables, [`SegmentError::Region`] for a region out of place.
    pub fn parse(payload: &[u8], pages: u32, capacity: usize) -> Result<Self> {
        if payload.len() != TRAILER_LEN {
            return Err(SegmentError::Trailer);
        }
        let u32_at = |i: usize| u32::from_be_bytes(payload[i..i + 4].try_into().expect("4"));
        let u64_at = |i: usize| u64::from_be_bytes(payload[i..i + 8].try_into().expect("8"));
        let mut trailer = Trailer {
            docs: u32_at(0),
            words: u32_at(4),
            frames: u32_at(8),
            dictionary_len: u64_at(12),
            text_version: u32_at(20),
            regions: [RegionSpan::default(); 6],
        };
        let mut next = 0u32;
        for (i, region) in REGIONS.iter().enumerate() {
            let at = 24 + 16 * i;
            let span = RegionSpan {
                first_page: u32_at(at),
                pages: u32_at(at + 4),
                len: u64_at(at + 8),
            };
            let needed = span.len.div_ceil(capacity as u64);
            if span.first_page != next || u64::from(span.pages) != needed {
                return Err(SegmentError::Region(*region));
            }
            next = next
                .checked_add(span.pages)
                .filter(|&end| end < pages)
                .ok_or(SegmentError::Region(*region))?;
            trailer.regions[i] = span;
        }
        let table = |region: Region, entry: usize, count: u32| {
            trailer.region(region).len == entry as u64 * u64::from(count)
        };
        if !table(Region::Docs, DOC_ENTRY_LEN, trailer.docs)
            || !table(Region::Frames, FRAME_ENTRY_LEN, trailer.frames)
            || !table(Region::Words, WORD_ENTRY_LEN, trailer.words)
            || trailer.dictionary_len > MAX_DICTIONARY_LEN
            || (trailer.words == 0) != (trailer.dictionary_len == 0)
            || (trailer.words > 0 && trailer.dictionary_len < 2 * u64::from(trailer.words) + 1)
        {
            return Err(SegmentError::Trailer);
        }
        Ok(trailer)
    }
}

/// One doc table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocEntry {
    /// The email.
    pub email: EmailId,
    /// Whether the text covers the whole message (see the text model).
    pub complete: bool,
    /// Its text-store frame.
    pub frame: u32,
    /// Offset of its `body ‖ mime` in the decompressed frame.
    pub offset: u32,
    /// Length of its folded body.
    pub body_len: u32,
    /// Length of its folded MIME header lines.
    pub mime_len: u32,
}

impl DocEntry {
    /// Appends the entry.
    pub fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.email.as_bytes());
        out.push(u8::from(self.complete));
        for v in [self.frame, self.offset, self.body_len, self.mime_len] {
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
}

/// Parses the doc table against the frame table.
///
/// # Errors
/// [`SegmentError::DocTable`].
pub fn parse_docs(bytes: &[u8], frames: &[FrameEntry]) -> Result<Vec<DocEntry>> {
    if !bytes.len().is_multiple_of(DOC_ENTRY_LEN) {
        return Err(SegmentError::DocTable);
    }
    let mut docs = Vec::with_capacity(bytes.len() / DOC_ENTRY_LEN);
    for e in bytes.chunks_exact(DOC_ENTRY_LEN) {
        let u32_at = |i: usize| u32::from_be_bytes(e[i..i + 4].try_into().expect("4"));
        let complete = match e[16] {
            0 => false,
            1 => true,
            _ => return Err(SegmentError::DocTable),
        };
        let doc = DocEntry {
            email: EmailId::from_bytes(e[..16].try_into().expect("16")),
            complete,
            frame: u32_at(17),
            offset: u32_at(21),
            body_len: u32_at(25),
            mime_len: u32_at(29),
        };
        let frame = frames
            .get(doc.frame as usize)
            .ok_or(SegmentError::DocTable)?;
        let end = u64::from(doc.offset) + u64::from(doc.body_len) + u64::from(doc.mime_len);
        if end > u64::from(frame.raw_len) {
            return Err(SegmentError::DocTable);
        }
        docs.push(doc);
    }
    Ok(docs)
}

/// One text-store frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameEntry {
    /// Offset of its compressed bytes in the text region.
    pub offset: u64,
    /// Compressed length.
    pub len: u32,
    /// Decompressed length.
    pub raw_len: u32,
}

impl FrameEntry {
    /// Appends the entry.
    pub fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.offset.to_be_bytes());
        out.extend_from_slice(&self.len.to_be_bytes());
        out.extend_from_slice(&self.raw_len.to_be_bytes());
    }
}

/// Parses the frame table: frames contiguous from 0 to `text_len`.
///
/// # Errors
/// [`SegmentError::FrameTable`].
pub fn parse_frames(bytes: &[u8], text_len: u64) -> Result<Vec<FrameEntry>> {
    if !bytes.len().is_multiple_of(FRAME_ENTRY_LEN) {
        return Err(SegmentError::FrameTable);
    }
    let mut frames = Vec::with_capacity(bytes.len() / FRAME_ENTRY_LEN);
    let mut next = 0u64;
    for e in bytes.chunks_exact(FRAME_ENTRY_LEN) {
        let frame = FrameEntry {
            offset: u64::from_be_bytes(e[..8].try_into().expect("8")),
            len: u32::from_be_bytes(e[8..12].try_into().expect("4")),
            raw_len: u32::from_be_bytes(e[12..16].try_into().expect("4")),
        };
        if frame.offset != next || frame.raw_len > MAX_FRAME_LEN || frame.len == 0 {
            return Err(SegmentError::FrameTable);
        }
        next += u64::from(frame.len);
        frames.push(frame);
    }
    if next != text_len {
        return Err(SegmentError::FrameTable);
    }
    Ok(frames)
}

/// Compresses `raw` (a dictionary or a text-store frame).
pub fn compress(raw: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(raw, 3).expect("compression into a growable buffer")
}

/// Decompresses `compressed`, which must give exactly `len` bytes; memory grows with the
/// output, never beyond `len`.
///
/// # Errors
/// [`SegmentError::Compression`].
pub fn decompress(compressed: &[u8], len: u64) -> Result<Vec<u8>> {
    let decoder = zstd::stream::read::Decoder::with_buffer(compressed)
        .map_err(|_| SegmentError::Compression)?;
    let mut out = Vec::with_capacity(len.min(1 << 20) as usize);
    decoder
        .take(len + 1)
        .read_to_end(&mut out)
        .map_err(|_| SegmentError::Compression)?;
    if out.len() as u64 != len {
        return Err(SegmentError::Compression);
    }
    Ok(out)
}

/// Words between two sampled starts of a [`Dictionary`]: [`Dictionary::word`] and
/// [`Dictionary::ordinal`] walk at most this many words from a sample.
const DICTIONARY_SAMPLE: usize = 32;

/// The decompressed dictionary: `"\0w₁\0…\0wₙ\0"` and where every
/// [`DICTIONARY_SAMPLE`]th word starts (kept in memory while a segment is open: the
/// starts of every word would add four bytes per word, a third of a dictionary of
/// identifiers and short words).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dictionary {
    bytes: Vec<u8>,
    samples: Vec<u32>,
    len: usize,
}

impl Dictionary {
    /// The dictionary of `words` (strictly increasing, non-empty, NUL-free).
    pub fn encode<'a>(words: impl IntoIterator<Item = &'a str>) -> Vec<u8> {
        let mut out = vec![0u8];
        for w in words {
            out.extend_from_slice(w.as_bytes());
            out.push(0);
        }
        out
    }

    /// Checks a decompressed dictionary of `words` words.
    ///
    /// # Errors
    /// [`SegmentError::Dictionary`].
    pub fn parse(bytes: Vec<u8>, words: u32) -> Result<Self> {
        if words == 0 {
            return if bytes.is_empty() {
                Ok(Self {
                    bytes,
                    samples: Vec::new(),
                    len: 0,
                })
            } else {
                Err(SegmentError::Dictionary)
            };
        }
        if bytes.first() != Some(&0)
            || bytes.last() != Some(&0)
            || std::str::from_utf8(&bytes).is_err()
            || u32::try_from(bytes.len()).is_err()
        {
            return Err(SegmentError::Dictionary);
        }
        let mut samples = Vec::with_capacity((words as usize).div_ceil(DICTIONARY_SAMPLE));
        let mut len = 0usize;
        let mut previous: Option<&[u8]> = None;
        let mut start = 1usize;
        for end in memchr::memchr_iter(0, &bytes[1..]).map(|i| i + 1) {
            let word = &bytes[start..end];
            if word.is_empty() || previous.is_some_and(|p| p >= word) || len == words as usize {
                return Err(SegmentError::Dictionary);
            }
            if len.is_multiple_of(DICTIONARY_SAMPLE) {
                samples.push(start as u32);
            }
            len += 1;
            previous = Some(word);
            start = end + 1;
        }
        if len != words as usize {
            return Err(SegmentError::Dictionary);
        }
        Ok(Self {
            bytes,
            samples,
            len,
        })
    }

    /// Number of words.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it has no word.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The word starting at byte `start`.
    fn word_at(&self, start: usize) -> &str {
        let end = start + memchr::memchr(0, &self.bytes[start..]).expect("checked at parse");
        std::str::from_utf8(&self.bytes[start..end]).expect("checked at parse")
    }

    /// Word `ordinal` (walks from the nearest sample; [`words`](Self::words) for all).
    ///
    /// # Panics
    /// If `ordinal` is not below [`len`](Self::len).
    pub fn word(&self, ordinal: usize) -> &str {
        assert!(ordinal < self.len, "word {ordinal} of {}", self.len);
        let mut start = self.samples[ordinal / DICTIONARY_SAMPLE] as usize;
        for _ in 0..ordinal % DICTIONARY_SAMPLE {
            start += memchr::memchr(0, &self.bytes[start..]).expect("checked at parse") + 1;
        }
        self.word_at(start)
    }

    /// Every word, in order.
    pub fn words(&self) -> impl Iterator<Item = &str> + '_ {
        self.word_bytes()
            .map(|w| std::str::from_utf8(w).expect("checked at parse"))
    }

    /// Every word's bytes, in order (UTF-8, checked at parse; what a merge compares).
    pub fn word_bytes(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let inner = match self.bytes.len() {
            0 => &[][..],
            n => &self.bytes[1..n - 1],
        };
        inner.split(|b| *b == 0).filter(|_| self.len > 0)
    }

    /// The raw `"\0w₁\0…\0"` bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Bytes held in memory (for a cache's budget).
    pub fn heap_len(&self) -> usize {
        self.bytes.len() + 4 * self.samples.len()
    }

    /// Ordinals (increasing, each once) of the words in which `pattern` occurs, where
    /// `pattern` may begin and end with a NUL to anchor it at a word's start or end. A
    /// `pattern` of word bytes never spans two words (words hold no NUL). One pass over
    /// the dictionary: the ordinal of each match counts the NULs since the previous one.
    pub fn find(&self, pattern: &[u8]) -> Vec<u32> {
        let mut out: Vec<u32> = Vec::new();
        if self.len == 0 {
            return out;
        }
        if pattern.is_empty() {
            return (0..self.len as u32).collect();
        }
        let leading = usize::from(pattern.first() == Some(&0));
        // `(at, ordinal)`: a byte of word `ordinal` (the first word starts at 1).
        let (mut at, mut ordinal) = (1usize, 0u32);
        for found in memchr::memmem::find_iter(&self.bytes, pattern) {
            // The match's first word byte; later matches start later.
            let pos = found + leading;
            if pos >= self.bytes.len() {
                break; // `pattern` is one NUL, found at the end
            }
            ordinal += memchr::memchr_iter(0, &self.bytes[at..pos]).count() as u32;
            at = pos;
            if out.last() != Some(&ordinal) {
                out.push(ordinal);
            }
        }
        out
    }

    /// The ordinal of exactly `word`.
    pub fn ordinal(&self, word: &str) -> Option<u32> {
        if self.len == 0 {
            return None;
        }
        // The last sample not after `word`, then at most a sample's words.
        let block = self
            .samples
            .partition_point(|&s| self.word_at(s as usize).as_bytes() <= word.as_bytes());
        let block = block.checked_sub(1)?;
        let mut start = self.samples[block] as usize;
        let last = (self.len - block * DICTIONARY_SAMPLE).min(DICTIONARY_SAMPLE);
        for i in 0..last {
            let here = self.word_at(start);
            match here.as_bytes().cmp(word.as_bytes()) {
                std::cmp::Ordering::Less => start += here.len() + 1,
                std::cmp::Ordering::Equal => return Some((block * DICTIONARY_SAMPLE + i) as u32),
                std::cmp::Ordering::Greater => return None,
            }
        }
        None
    }
}

/// One word table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WordEntry {
    /// Offset of the word's postings block in the postings region.
    pub postings: u32,
    /// Its fields.
    pub mask: u8,
}

impl WordEntry {
    /// Appends the entry.
    pub fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.postings.to_be_bytes());
        out.push(self.mask);
    }

    /// Parses one entry of [`WORD_ENTRY_LEN`] bytes.
    ///
    /// # Errors
    /// [`SegmentError::WordTable`] for an empty or unknown field mask.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let bytes: &[u8; WORD_ENTRY_LEN] = bytes.try_into().map_err(|_| SegmentError::WordTable)?;
        let mask = bytes[4];
        if mask == 0 || mask & !ALL_FIELDS != 0 {
            return Err(SegmentError::WordTable);
        }
        Ok(Self {
            postings: u32::from_be_bytes(bytes[..4].try_into().expect("4")),
            mask,
        })
    }
}

/// The postings block of word `ordinal` within a postings region of `postings_len`: from
/// its entry to the next one's (or the region's end).
///
/// # Errors
/// [`SegmentError::WordTable`] for a block that ends before it starts or beyond the region.
pub fn block_range(
    entry: &WordEntry,
    next: Option<&WordEntry>,
    postings_len: u64,
) -> Result<std::ops::Range<u64>> {
    let start = u64::from(entry.postings);
    let end = next.map_or(postings_len, |n| u64::from(n.postings));
    if start > end || end > postings_len {
        return Err(SegmentError::WordTable);
    }
    Ok(start..end)
}

fn put_varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_varint(bytes: &[u8], at: &mut usize) -> Result<u32> {
    let mut value = 0u64;
    for i in 0..5 {
        let b = *bytes.get(*at).ok_or(SegmentError::Postings)?;
        *at += 1;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return u32::try_from(value).map_err(|_| SegmentError::Postings);
        }
    }
    Err(SegmentError::Postings)
}

/// Appends the posting list of `docs` (strictly increasing, non-empty, each below
/// `total`): a delta list or a bitmap, whichever is smaller.
pub fn put_postings(out: &mut Vec<u8>, docs: &[u32], total: u32) {
    debug_assert!(!docs.is_empty() && docs.windows(2).all(|w| w[0] < w[1]));
    let bitmap_len = (total as usize).div_ceil(8);
    let start = out.len();
    // A delta list takes at least a byte per doc and one for the count: a list longer
    // than the bitmap is a bitmap without encoding it first.
    if docs.len() < bitmap_len {
        out.push(TAG_DELTA);
        put_varint(out, docs.len() as u32);
        let mut previous = None;
        for &d in docs {
            put_varint(out, previous.map_or(d, |p| d - p));
            previous = Some(d);
        }
        if out.len() - start - 1 <= bitmap_len {
            return;
        }
        out.truncate(start);
    }
    out.push(TAG_BITMAP);
    let bits = out.len();
    out.resize(bits + bitmap_len, 0);
    for &d in docs {
        out[bits + d as usize / 8] |= 1 << (d % 8);
    }
}

/// Reads one posting list at `*at` of `block`, calling `each` on its docs in increasing
/// order, and advances `*at` past it.
///
/// # Errors
/// [`SegmentError::Postings`].
pub fn read_postings(
    block: &[u8],
    at: &mut usize,
    total: u32,
    each: &mut dyn FnMut(u32),
) -> Result<()> {
    let tag = *block.get(*at).ok_or(SegmentError::Postings)?;
    *at += 1;
    match tag {
        TAG_DELTA => {
            let count = read_varint(block, at)?;
            // Each doc takes at least one byte: bound the count by the bytes left.
            if count == 0 || count as usize > block.len() - *at || count > total {
                return Err(SegmentError::Postings);
            }
            let mut doc: Option<u32> = None;
            for _ in 0..count {
                let v = read_varint(block, at)?;
                let next = match doc {
                    None => v,
                    Some(_) if v == 0 => return Err(SegmentError::Postings),
                    Some(d) => d.checked_add(v).ok_or(SegmentError::Postings)?,
                };
                if next >= total {
                    return Err(SegmentError::Postings);
                }
                each(next);
                doc = Some(next);
            }
            Ok(())
        }
        TAG_BITMAP => {
            let len = (total as usize).div_ceil(8);
            let bits = block.get(*at..*at + len).ok_or(SegmentError::Postings)?;
            *at += len;
            if !total.is_multiple_of(8) && bits[len - 1] >> (total % 8) != 0 {
                return Err(SegmentError::Postings);
            }
            let mut any = false;
            for (i, &byte) in bits.iter().enumerate() {
                let mut b = byte;
                while b != 0 {
                    let bit = b.trailing_zeros();
                    each(i as u32 * 8 + bit);
                    b &= b - 1;
                    any = true;
                }
            }
            if any {
                Ok(())
            } else {
                Err(SegmentError::Postings)
            }
        }
        _ => Err(SegmentError::Postings),
    }
}

/// Reads a word's postings block: one list per field of `mask` in bit order, calling
/// `each(field, doc)`; the block must be consumed exactly.
///
/// # Errors
/// [`SegmentError::Postings`].
pub fn read_block(
    block: &[u8],
    mask: u8,
    total: u32,
    each: &mut dyn FnMut(Field, u32),
) -> Result<()> {
    let mut at = 0;
    for field in Field::ALL {
        if mask & field.bit() != 0 {
            read_postings(block, &mut at, total, &mut |d| each(field, d))?;
        }
    }
    if at != block.len() {
        return Err(SegmentError::Postings);
    }
    Ok(())
}

/// The plaintext of a segment before sealing: its page payloads, trailer last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainSegment {
    /// Page class of the pages.
    pub page_class: u8,
    /// Page payloads (each at most the class's capacity), Padmé-padded, trailer last.
    pub pages: Vec<Vec<u8>>,
    /// The trailer (also in the last page).
    pub trailer: Trailer,
}

impl PlainSegment {
    /// Lays out `regions` (in [`REGIONS`] order) in pages of `page_class`, pads the page
    /// count to Padmé with empty pages and appends the trailer page. The trailer's region
    /// spans are computed here; its counts are the caller's.
    pub fn layout(page_class: u8, mut trailer: Trailer, regions: [&[u8]; 6]) -> Self {
        let capacity = (1usize << page_class) - PAGE_SEAL_OVERHEAD - 2;
        let mut pages: Vec<Vec<u8>> = Vec::new();
        for (i, bytes) in regions.iter().enumerate() {
            trailer.regions[i] = RegionSpan {
                first_page: pages.len() as u32,
                pages: bytes.len().div_ceil(capacity) as u32,
                len: bytes.len() as u64,
            };
            pages.extend(bytes.chunks(capacity).map(<[u8]>::to_vec));
        }
        let total = padme(pages.len() as u64 + 1).max(1) as usize;
        pages.resize(total - 1, Vec::new());
        pages.push(trailer.to_bytes());
        Self {
            page_class,
            pages,
            trailer,
        }
    }
}

/// Every region of a segment, parsed and checked: what a merge reads, and what the fuzz
/// target drives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentContents {
    /// The trailer.
    pub trailer: Trailer,
    /// The doc table.
    pub docs: Vec<DocEntry>,
    /// The frame table.
    pub frames: Vec<FrameEntry>,
    /// The dictionary.
    pub dictionary: Dictionary,
    /// The word table.
    pub words: Vec<WordEntry>,
    /// The postings region.
    pub postings: Vec<u8>,
    /// The text region (compressed frames).
    pub text: Vec<u8>,
}

/// The bytes of `region` from the page payloads of a segment.
///
/// # Errors
/// [`SegmentError::Region`] when a page of the region is not full but the last, or the
/// bytes do not add up to its length.
pub fn region_bytes(
    trailer: &Trailer,
    region: Region,
    pages: &[&[u8]],
    capacity: usize,
) -> Result<Vec<u8>> {
    let span = trailer.region(region);
    let first = span.first_page as usize;
    let list = pages
        .get(first..first + span.pages as usize)
        .ok_or(SegmentError::Region(region))?;
    let mut out = Vec::with_capacity(span.len.min(1 << 24) as usize);
    for (i, page) in list.iter().enumerate() {
        if i + 1 < list.len() && page.len() != capacity {
            return Err(SegmentError::Region(region));
        }
        out.extend_from_slice(page);
    }
    if out.len() as u64 != span.len {
        return Err(SegmentError::Region(region));
    }
    Ok(out)
}

impl SegmentContents {
    /// Parses the page payloads of a whole segment (every page opened, in order) of page
    /// `capacity`: trailer, tables, dictionary, word table and every posting list.
    /// Filler pages must be empty.
    ///
    /// # Errors
    /// The [`SegmentError`] of the first malformed field.
    pub fn parse(pages: &[&[u8]], capacity: usize) -> Result<Self> {
        let contents = Self::parse_deferring_postings(pages, capacity)?;
        for ordinal in 0..contents.words.len() {
            read_block(
                contents.block(ordinal),
                contents.words[ordinal].mask,
                contents.trailer.docs,
                &mut |_, _| {},
            )?;
        }
        Ok(contents)
    }

    /// [`parse`](Self::parse) but for the posting lists' contents: every block's bounds
    /// are checked, not what is in it. For a reader that reads every block through
    /// [`read_block`] (which checks each list as it goes) and stops at its first error: a
    /// merge, which would otherwise decode every list twice.
    ///
    /// # Errors
    /// As [`parse`](Self::parse), but for malformed lists.
    pub fn parse_deferring_postings(pages: &[&[u8]], capacity: usize) -> Result<Self> {
        let count = u32::try_from(pages.len()).map_err(|_| SegmentError::Length)?;
        let last = pages.last().ok_or(SegmentError::Length)?;
        let trailer = Trailer::parse(last, count, capacity)?;
        let regions_end = trailer.region(Region::Text);
        let filler = (regions_end.first_page + regions_end.pages) as usize;
        if pages[filler..pages.len() - 1].iter().any(|p| !p.is_empty()) {
            return Err(SegmentError::Trailer);
        }
        let bytes = |region| region_bytes(&trailer, region, pages, capacity);
        let text = bytes(Region::Text)?;
        let frames = parse_frames(&bytes(Region::Frames)?, text.len() as u64)?;
        let docs = parse_docs(&bytes(Region::Docs)?, &frames)?;
        if docs.len() != trailer.docs as usize {
            return Err(SegmentError::Trailer);
        }
        let dictionary = if trailer.words == 0 {
            if trailer.region(Region::Dictionary).len != 0 {
                return Err(SegmentError::Dictionary);
            }
            Dictionary::parse(Vec::new(), 0)?
        } else {
            Dictionary::parse(
                decompress(&bytes(Region::Dictionary)?, trailer.dictionary_len)?,
                trailer.words,
            )?
        };
        let table = bytes(Region::Words)?;
        let words = table
            .chunks_exact(WORD_ENTRY_LEN)
            .map(WordEntry::parse)
            .collect::<Result<Vec<_>>>()?;
        let postings = bytes(Region::Postings)?;
        if words.first().is_some_and(|w| w.postings != 0) {
            return Err(SegmentError::WordTable);
        }
        for (i, entry) in words.iter().enumerate() {
            block_range(entry, words.get(i + 1), postings.len() as u64)?;
        }
        if words.is_empty() && !postings.is_empty() {
            return Err(SegmentError::Postings);
        }
        Ok(Self {
            trailer,
            docs,
            frames,
            dictionary,
            words,
            postings,
            text,
        })
    }

    /// The postings block of word `ordinal` (checked at parse).
    pub fn block(&self, ordinal: usize) -> &[u8] {
        let start = self.words[ordinal].postings as usize;
        let end = self
            .words
            .get(ordinal + 1)
            .map_or(self.postings.len(), |w| w.postings as usize);
        &self.postings[start..end]
    }

    /// The compressed bytes of text-store frame `index`, as stored.
    ///
    /// # Errors
    /// [`SegmentError::FrameTable`] for no such frame.
    pub fn compressed_frame(&self, index: usize) -> Result<&[u8]> {
        let frame = self.frames.get(index).ok_or(SegmentError::FrameTable)?;
        let start = usize::try_from(frame.offset).map_err(|_| SegmentError::FrameTable)?;
        self.text
            .get(start..start + frame.len as usize)
            .ok_or(SegmentError::FrameTable)
    }

    /// The decompressed text-store frame `index`.
    ///
    /// # Errors
    /// [`SegmentError::FrameTable`] for no such frame; [`SegmentError::Compression`].
    pub fn frame(&self, index: usize) -> Result<Vec<u8>> {
        let frame = self.frames.get(index).ok_or(SegmentError::FrameTable)?;
        let start = frame.offset as usize;
        decompress(
            &self.text[start..start + frame.len as usize],
            u64::from(frame.raw_len),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::Dictionary;

    proptest! {
        /// Sampled starts answer as a list of the words would: `find` (anchored or not),
        /// `word`, `ordinal`, `words`, across many samples.
        #[test]
        fn dictionary_equals_a_word_list(
            words in prop::collection::btree_set("[a-d]{1,5}", 0..300),
            patterns in prop::collection::vec(("[a-d]{1,3}", any::<bool>(), any::<bool>()), 1..8),
        ) {
            let words: Vec<String> = words.into_iter().collect::<BTreeSet<_>>().into_iter().collect();
            let dictionary = if words.is_empty() {
                Dictionary::parse(Vec::new(), 0).unwrap()
            } else {
                Dictionary::parse(
                    Dictionary::encode(words.iter().map(String::as_str)),
                    words.len() as u32,
                )
                .unwrap()
            };
            prop_assert_eq!(dictionary.len(), words.len());
            prop_assert!(dictionary.words().eq(words.iter().map(String::as_str)));
            for (i, w) in words.iter().enumerate() {
                prop_assert_eq!(dictionary.word(i), w.as_str());
                prop_assert_eq!(dictionary.ordinal(w), Some(i as u32));
            }
            for (pattern, start, end) in patterns {
                let want: Vec<u32> = (0..words.len() as u32)
                    .filter(|&i| {
                        let w = &words[i as usize];
                        match (start, end) {
                            (true, true) => *w == pattern,
                            (true, false) => w.starts_with(&pattern),
                            (false, true) => w.ends_with(&pattern),
                            (false, false) => w.contains(&pattern),
                        }
                    })
                    .collect();
                let mut anchored = Vec::new();
                if start {
                    anchored.push(0);
                }
                anchored.extend_from_slice(pattern.as_bytes());
                if end {
                    anchored.push(0);
                }
                prop_assert_eq!(dictionary.find(&anchored), want, "{:?}", anchored);
                prop_assert_eq!(
                    dictionary.ordinal(&pattern),
                    words.binary_search(&pattern).ok().map(|i| i as u32)
                );
            }
        }
    }
}
