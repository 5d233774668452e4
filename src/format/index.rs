//! Index objects: immutable segments of sorted records sealed in pages, and the manifest
//! that lists the live segments of one collection at one generation.
//!
//! ```text
//! segment object
//!      0   4  magic "MVS1"
//!      4   1  version (1)
//!      5   1  kind: 1 batch (records take the stamp of their manifest entry),
//!                   2 compacted (every record carries its own stamp)
//!                   (3 is a search segment, a layout of its own: `format::search`)
//!      6   2  reserved, zero
//!      8  16  segment id
//!     24   4  page count (u32)
//!     28   …  pages, each: u32 sealed length ‖ sealed page (24-byte nonce ‖ ciphertext ‖ tag)
//!
//! page plaintext: records, sorted by key (strictly increasing across the segment)
//!     1  flags: bit 0 tombstone; other bits zero
//!     2  key length (u16), then the key
//!    24  stamp (u64 generation ‖ 16-byte writer id)   (compacted segments only)
//!     4  value length (u32), then the value            (not for tombstones)
//!
//! manifest object
//!      0   4  magic "MVM1"
//!      4   1  version (1)
//!      5   3  reserved, zero
//!      8   8  generation (u64)
//!     16  16  writer id
//!     32   …  sealed body (24-byte nonce ‖ ciphertext ‖ tag)
//!
//! manifest body plaintext
//!     2  parent count (u16), then per parent: generation (u64) ‖ writer id (16)
//!     8  tombstones purged through generation (u64): deletions committed up to it are no
//!        longer recorded (a full compaction dropped them)
//!     4  segment count (u32), then per segment:
//!        id (16) ‖ stamp generation (u64) ‖ stamp writer (16) ‖ kind (1)
//!        ‖ stored length (u64) ‖ SHA-256 of the stored object (32) ‖ record count (u32)
//!        ‖ covered count (u16) ‖ ids of the segments a compaction replaced (16 each)
//! ```

use bytes::Bytes;

use super::reader::Reader;
use crate::error::{Error, Result};
use crate::ids::{SegmentId, WriterId};

/// Magic bytes of a segment.
pub const SEGMENT_MAGIC: [u8; 4] = *b"MVS1";
/// Magic bytes of a manifest.
pub const MANIFEST_MAGIC: [u8; 4] = *b"MVM1";
/// Index format version.
pub const INDEX_VERSION: u8 = 1;
/// Length of a segment header.
pub const SEGMENT_HEADER_LEN: usize = 28;
/// The largest manifest a reader accepts, checked before its bytes are read; writers
/// never publish a larger one. A manifest lists the live segments (a number logarithmic
/// in the collection's size) and the heads it merges, so real ones stay far below it.
pub const MAX_MANIFEST_LEN: usize = 16 << 20;
/// Length of a manifest header.
pub const MANIFEST_HEADER_LEN: usize = 32;
/// Length of one segment entry in a manifest body, without its covered ids.
pub const SEGMENT_ENTRY_LEN: usize = 87;
/// Longest key a record may have.
pub const MAX_KEY_LEN: usize = u16::MAX as usize;
/// Generations are below 2^40 (a trillion commits): readers refuse larger ones, so that
/// a stamp packs into one word in memory.
pub const MAX_GENERATION: u64 = 1 << 40;

/// When and by whom a record was committed. Orders concurrent writes: the greater stamp
/// wins (generation first, then writer id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp {
    /// Generation of the manifest that committed the record.
    pub generation: u64,
    /// The committing writer.
    pub writer: WriterId,
}

/// How a segment's records get their stamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SegmentKind {
    /// One committed batch: every record has the stamp of the segment's manifest entry.
    Batch,
    /// The result of a compaction: every record carries its own stamp.
    Compacted,
    /// A search segment (`format::search`): listed by the manifest of the `search`
    /// collection, never loaded into a collection's view but read by pages
    /// (`mail::text::segment`); its record count is its number of documents.
    Search,
}

impl SegmentKind {
    fn to_byte(self) -> u8 {
        match self {
            SegmentKind::Batch => 1,
            SegmentKind::Compacted => 2,
            SegmentKind::Search => 3,
        }
    }

    fn from_byte(byte: u8) -> Result<Self> {
        match byte {
            1 => Ok(SegmentKind::Batch),
            2 => Ok(SegmentKind::Compacted),
            3 => Ok(SegmentKind::Search),
            _ => Err(Error::Tampered),
        }
    }
}

/// One record of a segment page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The key.
    pub key: Bytes,
    /// Its own stamp (compacted segments only).
    pub stamp: Option<Stamp>,
    /// The value, or `None` for a deletion (tombstone).
    pub value: Option<Bytes>,
}

fn read_stamp(r: &mut Reader<'_>) -> Result<Stamp> {
    let generation = r.u64()?;
    if generation >= MAX_GENERATION {
        return Err(Error::Tampered);
    }
    Ok(Stamp {
        generation,
        writer: WriterId::from_bytes(r.array()?),
    })
}

fn check_version(version: u8, object: &'static str) -> Result<()> {
    if version == INDEX_VERSION {
        Ok(())
    } else {
        Err(Error::UnsupportedVersion { object, version })
    }
}

/// The header of a segment object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// How its records get their stamps.
    pub kind: SegmentKind,
    /// Its id.
    pub id: SegmentId,
    /// Number of pages.
    pub pages: u32,
}

impl SegmentHeader {
    /// Serialized header.
    pub fn to_bytes(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut out = [0u8; SEGMENT_HEADER_LEN];
        out[0..4].copy_from_slice(&SEGMENT_MAGIC);
        out[4] = INDEX_VERSION;
        out[5] = self.kind.to_byte();
        out[8..24].copy_from_slice(self.id.as_bytes());
        out[24..28].copy_from_slice(&self.pages.to_be_bytes());
        out
    }

    /// Parses a whole segment object into its header and its sealed pages.
    ///
    /// # Errors
    /// [`Error::UnsupportedVersion`] for another version; [`Error::Tampered`] for any
    /// malformed byte or length.
    pub fn parse(bytes: &[u8]) -> Result<(Self, Vec<&[u8]>)> {
        let header = Self::parse_header(bytes)?;
        let mut r = Reader::new(&bytes[SEGMENT_HEADER_LEN..]);
        let pages = header.pages;
        // Each page needs at least its length prefix: bound the count before allocating.
        if pages as usize > r.remaining().len() / 4 {
            return Err(Error::Tampered);
        }
        let mut sealed = Vec::with_capacity(pages as usize);
        for _ in 0..pages {
            let len = r.u32()? as usize;
            sealed.push(r.take(len)?);
        }
        if !r.is_empty() {
            return Err(Error::Tampered);
        }
        Ok((header, sealed))
    }

    /// Parses the header alone, from the first [`SEGMENT_HEADER_LEN`] bytes of a segment
    /// object (what a reader of a segment arriving in pieces parses first).
    ///
    /// # Errors
    /// As [`parse`](Self::parse).
    pub fn parse_header(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        if r.take(4)? != SEGMENT_MAGIC {
            return Err(Error::Tampered);
        }
        check_version(r.u8()?, "index segment")?;
        let kind = SegmentKind::from_byte(r.u8()?)?;
        if kind == SegmentKind::Search || r.take(2)? != [0, 0] {
            return Err(Error::Tampered);
        }
        let id = SegmentId::from_bytes(r.array()?);
        let pages = r.u32()?;
        Ok(Self { kind, id, pages })
    }
}

/// Appends one record in page encoding.
pub fn encode_record(kind: SegmentKind, record: &Record, out: &mut Vec<u8>) {
    let key_len =
        u16::try_from(record.key.len()).expect("keys are checked against MAX_KEY_LEN on entry");
    out.push(u8::from(record.value.is_none()));
    out.extend_from_slice(&key_len.to_be_bytes());
    out.extend_from_slice(&record.key);
    if kind == SegmentKind::Compacted {
        let stamp = record.stamp.expect("compacted records carry their stamp");
        out.extend_from_slice(&stamp.generation.to_be_bytes());
        out.extend_from_slice(stamp.writer.as_bytes());
    }
    if let Some(value) = &record.value {
        let len = u32::try_from(value.len()).expect("values are checked against u32 on entry");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(value);
    }
}

/// Parses one opened page. Keys and values are slices of `page` (no copy). `after` is the
/// last key of the previous page: keys must increase strictly across the segment.
///
/// # Errors
/// [`Error::Tampered`] for any malformed byte, length or key order.
pub fn parse_page(
    kind: SegmentKind,
    page: &Bytes,
    after: Option<&[u8]>,
    records: &mut Vec<Record>,
) -> Result<()> {
    let mut r = Reader::new(page);
    let mut previous: Option<&[u8]> = after;
    while !r.is_empty() {
        let flags = r.u8()?;
        if flags > 1 {
            return Err(Error::Tampered);
        }
        let key_len = r.u16()? as usize;
        let key_bytes = r.take(key_len)?;
        if previous.is_some_and(|p| p >= key_bytes) {
            return Err(Error::Tampered);
        }
        previous = Some(key_bytes);
        let key = page.slice_ref(key_bytes);
        let stamp = match kind {
            SegmentKind::Compacted => Some(read_stamp(&mut r)?),
            SegmentKind::Batch | SegmentKind::Search => None,
        };
        let value = if flags == 1 {
            None
        } else {
            let len = r.u32()? as usize;
            Some(page.slice_ref(r.take(len)?))
        };
        records.push(Record { key, stamp, value });
    }
    Ok(())
}

/// The header of a manifest object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ManifestHeader {
    /// Its generation.
    pub generation: u64,
    /// The writer that committed it.
    pub writer: WriterId,
}

impl ManifestHeader {
    /// Serialized header.
    pub fn to_bytes(&self) -> [u8; MANIFEST_HEADER_LEN] {
        let mut out = [0u8; MANIFEST_HEADER_LEN];
        out[0..4].copy_from_slice(&MANIFEST_MAGIC);
        out[4] = INDEX_VERSION;
        out[8..16].copy_from_slice(&self.generation.to_be_bytes());
        out[16..32].copy_from_slice(self.writer.as_bytes());
        out
    }

    /// Parses a manifest object into its header and its sealed body.
    ///
    /// # Errors
    /// [`Error::UnsupportedVersion`] for another version; [`Error::Tampered`] otherwise.
    pub fn parse(bytes: &[u8]) -> Result<(Self, &[u8])> {
        let mut r = Reader::new(bytes);
        if r.take(4)? != MANIFEST_MAGIC {
            return Err(Error::Tampered);
        }
        check_version(r.u8()?, "index manifest")?;
        if r.take(3)? != [0, 0, 0] {
            return Err(Error::Tampered);
        }
        let generation = r.u64()?;
        if generation >= MAX_GENERATION {
            return Err(Error::Tampered);
        }
        let writer = WriterId::from_bytes(r.array()?);
        Ok((Self { generation, writer }, r.remaining()))
    }
}

/// One live segment as a manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SegmentEntry {
    /// The segment's id (its object name).
    pub id: SegmentId,
    /// Stamp of the commit that added it (the stamp of its records, for a batch).
    pub stamp: Stamp,
    /// Batch or compacted.
    pub kind: SegmentKind,
    /// Length of the stored object.
    pub stored_len: u64,
    /// SHA-256 of the stored object.
    pub digest: [u8; 32],
    /// Number of records.
    pub records: u32,
    /// For a compacted segment: the segments whose records it contains (they are dropped
    /// wherever this entry is live). Empty for a batch.
    pub covers: Vec<SegmentId>,
}

/// The decrypted body of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ManifestBody {
    /// The manifests this one supersedes (merged heads).
    pub parents: Vec<Stamp>,
    /// Deletions committed up to this generation are no longer recorded.
    pub purged_through: u64,
    /// The live segments.
    pub segments: Vec<SegmentEntry>,
}

impl ManifestBody {
    /// Serialized body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            6 + self.parents.len() * 24 + self.segments.len() * SEGMENT_ENTRY_LEN,
        );
        let parents =
            u16::try_from(self.parents.len()).expect("a manifest merges fewer than 65536 heads");
        out.extend_from_slice(&parents.to_be_bytes());
        for parent in &self.parents {
            out.extend_from_slice(&parent.generation.to_be_bytes());
            out.extend_from_slice(parent.writer.as_bytes());
        }
        out.extend_from_slice(&self.purged_through.to_be_bytes());
        let count = u32::try_from(self.segments.len()).expect("segment count fits u32");
        out.extend_from_slice(&count.to_be_bytes());
        for s in &self.segments {
            out.extend_from_slice(s.id.as_bytes());
            out.extend_from_slice(&s.stamp.generation.to_be_bytes());
            out.extend_from_slice(s.stamp.writer.as_bytes());
            out.push(s.kind.to_byte());
            out.extend_from_slice(&s.stored_len.to_be_bytes());
            out.extend_from_slice(&s.digest);
            out.extend_from_slice(&s.records.to_be_bytes());
            let covers = u16::try_from(s.covers.len())
                .expect("a compaction covers fewer than 65536 segments");
            out.extend_from_slice(&covers.to_be_bytes());
            for id in &s.covers {
                out.extend_from_slice(id.as_bytes());
            }
        }
        out
    }

    /// Parses a decrypted body.
    ///
    /// # Errors
    /// [`Error::Tampered`] for any malformed byte or length.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let parents = r.u16()? as usize;
        if parents > r.remaining().len() / 24 {
            return Err(Error::Tampered);
        }
        let parents = (0..parents)
            .map(|_| read_stamp(&mut r))
            .collect::<Result<Vec<_>>>()?;
        let purged_through = r.u64()?;
        let count = r.u32()? as usize;
        if count > r.remaining().len() / SEGMENT_ENTRY_LEN {
            return Err(Error::Tampered);
        }
        let mut segments = Vec::with_capacity(count);
        for _ in 0..count {
            let id = SegmentId::from_bytes(r.array()?);
            let stamp = read_stamp(&mut r)?;
            let kind = SegmentKind::from_byte(r.u8()?)?;
            let stored_len = r.u64()?;
            let digest = r.array()?;
            let records = r.u32()?;
            let covered = r.u16()? as usize;
            if covered > r.remaining().len() / 16 || (kind == SegmentKind::Batch && covered != 0) {
                return Err(Error::Tampered);
            }
            let covers = (0..covered)
                .map(|_| r.array().map(SegmentId::from_bytes))
                .collect::<Result<Vec<_>>>()?;
            segments.push(SegmentEntry {
                id,
                stamp,
                kind,
                stored_len,
                digest,
                records,
                covers,
            });
        }
        if !r.is_empty() {
            return Err(Error::Tampered);
        }
        Ok(Self {
            parents,
            purged_through,
            segments,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_round_trip_and_order_check() {
        let mut page = Vec::new();
        let stamp = Stamp {
            generation: 9,
            writer: WriterId::from_bytes([3; 16]),
        };
        let records = vec![
            Record {
                key: Bytes::from_static(b"a"),
                stamp: Some(stamp),
                value: Some(Bytes::from_static(b"1")),
            },
            Record {
                key: Bytes::from_static(b"b"),
                stamp: Some(stamp),
                value: None,
            },
        ];
        for r in &records {
            encode_record(SegmentKind::Compacted, r, &mut page);
        }
        let page = Bytes::from(page);
        let mut parsed = Vec::new();
        parse_page(SegmentKind::Compacted, &page, None, &mut parsed).unwrap();
        assert_eq!(parsed, records);
        let mut again = Vec::new();
        assert!(parse_page(SegmentKind::Compacted, &page, Some(b"a"), &mut again).is_err());
    }

    #[test]
    fn manifest_body_round_trip() {
        let w = WriterId::from_bytes([1; 16]);
        let body = ManifestBody {
            parents: vec![Stamp {
                generation: 4,
                writer: w,
            }],
            purged_through: 2,
            segments: vec![SegmentEntry {
                id: SegmentId::from_bytes([2; 16]),
                stamp: Stamp {
                    generation: 5,
                    writer: w,
                },
                kind: SegmentKind::Batch,
                stored_len: 100,
                digest: [7; 32],
                records: 3,
                covers: Vec::new(),
            }],
        };
        let bytes = body.to_bytes();
        assert_eq!(ManifestBody::parse(&bytes).unwrap(), body);
        assert!(ManifestBody::parse(&bytes[..bytes.len() - 1]).is_err());
    }
}
