//! Keys of one collection, and sealing/opening of its segments and manifests.

use std::sync::Arc;

use bytes::Bytes;
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::crypto::kdf::{self, LABEL_INDEX_COLLECTION, LABEL_INDEX_INPUT, LABEL_INDEX_NAME};
use crate::crypto::record::RecordCipher;
use crate::crypto::{AccountKey, RandomSource};
use crate::error::{Error, Result};
use crate::format::index::{
    encode_record, parse_page, ManifestBody, ManifestHeader, Record, SegmentEntry, SegmentHeader,
    SegmentKind, Stamp, SEGMENT_HEADER_LEN,
};
use crate::ids::{AccountId, DeploymentId, SegmentId};

const AD_PAGE: &[u8] = b"mailvault/v1/index/page";
const AD_MANIFEST: &[u8] = b"mailvault/v1/index/manifest";
const AD_SEARCH_PAGE: &[u8] = b"mailvault/v1/search/page";

/// What identifies a segment about to be sealed.
pub(crate) struct NewSegment {
    pub(crate) id: SegmentId,
    pub(crate) kind: SegmentKind,
    /// The stamp of the commit that adds it.
    pub(crate) stamp: Stamp,
    /// For a compaction, the segments it replaces.
    pub(crate) covers: Vec<SegmentId>,
}

/// The keys of one collection of one account.
pub(crate) struct CollectionKeys {
    deployment: DeploymentId,
    account: AccountId,
    tag: [u8; 16],
    cipher: RecordCipher,
}

impl CollectionKeys {
    pub(crate) fn new(
        deployment: DeploymentId,
        account: AccountId,
        key: &AccountKey,
        name: &[u8],
    ) -> Self {
        let input = kdf::derive_key(
            key.master(),
            LABEL_INDEX_INPUT,
            &[deployment.as_bytes(), account.as_bytes()],
        );
        let mut tag = [0u8; 16];
        kdf::expand(&input, LABEL_INDEX_NAME, &[name], &mut tag);
        Self::with_input(deployment, account, &input, tag)
    }

    /// The keys of the collection whose tag is `tag` (as its object names show it),
    /// under `key`: what opens a collection found by listing, whose name is not known.
    /// Under another key than the collection's, nothing opens (`Tampered`).
    pub(crate) fn for_tag(
        deployment: DeploymentId,
        account: AccountId,
        key: &AccountKey,
        tag: [u8; 16],
    ) -> Self {
        let input = kdf::derive_key(
            key.master(),
            LABEL_INDEX_INPUT,
            &[deployment.as_bytes(), account.as_bytes()],
        );
        Self::with_input(deployment, account, &input, tag)
    }

    fn with_input(
        deployment: DeploymentId,
        account: AccountId,
        input: &crate::crypto::Key32,
        tag: [u8; 16],
    ) -> Self {
        let collection = kdf::derive_key(input, LABEL_INDEX_COLLECTION, &[&tag]);
        Self {
            deployment,
            account,
            tag,
            cipher: RecordCipher::new(&collection),
        }
    }

    /// The collection's opaque tag, as used in object names and directory records.
    pub(crate) fn tag_hex(&self) -> String {
        crate::ids::hex(&self.tag)
    }

    fn ad(&self, label: &[u8], header: &[u8], page: Option<u32>) -> Vec<u8> {
        let mut ad = Vec::with_capacity(label.len() + 48 + header.len() + 4);
        ad.extend_from_slice(label);
        ad.extend_from_slice(self.deployment.as_bytes());
        ad.extend_from_slice(self.account.as_bytes());
        ad.extend_from_slice(&self.tag);
        ad.extend_from_slice(header);
        if let Some(page) = page {
            ad.extend_from_slice(&page.to_be_bytes());
        }
        ad
    }

    /// Seals `records` (sorted by key, strictly increasing) as a segment of pages of about
    /// `page_size` plaintext bytes. Returns the stored bytes and the manifest entry
    /// (without stamp: the caller sets it).
    pub(crate) fn seal_segment(
        &self,
        rng: &RandomSource,
        spec: NewSegment,
        records: &[Record],
        page_size: usize,
    ) -> (Vec<u8>, SegmentEntry) {
        let NewSegment {
            id,
            kind,
            stamp,
            covers,
        } = spec;
        let mut pages: Vec<Vec<u8>> = Vec::new();
        let mut current = Vec::new();
        for record in records {
            encode_record(kind, record, &mut current);
            if current.len() >= page_size {
                pages.push(std::mem::take(&mut current));
            }
        }
        if !current.is_empty() || pages.is_empty() {
            pages.push(current);
        }
        let header = SegmentHeader {
            kind,
            id,
            pages: u32::try_from(pages.len()).expect("fewer than 2^32 pages"),
        }
        .to_bytes();
        let seal_page = |(i, page): (usize, &Vec<u8>)| {
            let mut out = Vec::with_capacity(page.len() + 44);
            self.cipher.seal(
                rng,
                &self.ad(AD_PAGE, &header, Some(i as u32)),
                page,
                &mut out,
            );
            out
        };
        let plain_len = pages.iter().map(Vec::len).sum();
        let sealed: Vec<Vec<u8>> = if crate::cpu::parallel(plain_len) {
            pages.par_iter().enumerate().map(seal_page).collect()
        } else {
            pages.iter().enumerate().map(seal_page).collect()
        };
        let mut stored = Vec::with_capacity(
            SEGMENT_HEADER_LEN + sealed.iter().map(|p| p.len() + 4).sum::<usize>(),
        );
        stored.extend_from_slice(&header);
        for page in &sealed {
            stored.extend_from_slice(&(page.len() as u32).to_be_bytes());
            stored.extend_from_slice(page);
        }
        let entry = SegmentEntry {
            id,
            stamp,
            kind,
            stored_len: stored.len() as u64,
            digest: Sha256::digest(&stored).into(),
            records: u32::try_from(records.len()).expect("fewer than 2^32 records per segment"),
            covers,
        };
        (stored, entry)
    }

    /// Opens a stored segment that `entry` pins, whole: its length, its SHA-256 and every
    /// page (see [`SegmentOpener`], fed once).
    pub(crate) fn open_segment(
        self: &Arc<Self>,
        entry: &SegmentEntry,
        stored: &[u8],
    ) -> Result<Vec<Loaded>> {
        if stored.len() as u64 != entry.stored_len {
            return Err(Error::Tampered);
        }
        let mut opener = SegmentOpener::new(Arc::clone(self), entry.clone());
        opener.feed(stored)?;
        opener.finish()
    }

    /// Seals page `index` of the search segment whose clear header is `header`
    /// (`format::search`): `nonce ‖ ciphertext ‖ tag`, bound to the deployment, account,
    /// collection, segment and position.
    pub(crate) fn seal_search_page(
        &self,
        rng: &RandomSource,
        header: &[u8],
        index: u32,
        plain: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(plain.len() + 40);
        self.cipher.seal(
            rng,
            &self.ad(AD_SEARCH_PAGE, header, Some(index)),
            plain,
            &mut out,
        );
        out
    }

    /// Opens page `index` of the search segment whose clear header is `header`.
    ///
    /// # Errors
    /// [`Error::Tampered`] unless it authenticates at this position of this segment.
    pub(crate) fn open_search_page(
        &self,
        header: &[u8],
        index: u32,
        sealed: &[u8],
    ) -> Result<Vec<u8>> {
        self.cipher
            .open(&self.ad(AD_SEARCH_PAGE, header, Some(index)), sealed)
            .ok_or(Error::Tampered)
    }

    pub(crate) fn seal_manifest(
        &self,
        rng: &RandomSource,
        header: &ManifestHeader,
        body: &ManifestBody,
    ) -> Vec<u8> {
        let header_bytes = header.to_bytes();
        let plain = body.to_bytes();
        let mut out = Vec::with_capacity(header_bytes.len() + plain.len() + 40);
        out.extend_from_slice(&header_bytes);
        self.cipher.seal(
            rng,
            &self.ad(AD_MANIFEST, &header_bytes, None),
            &plain,
            &mut out,
        );
        out
    }

    pub(crate) fn open_manifest(&self, stored: &[u8]) -> Result<(ManifestHeader, ManifestBody)> {
        let (header, sealed) = ManifestHeader::parse(stored)?;
        let plain = self
            .cipher
            .open(&self.ad(AD_MANIFEST, &header.to_bytes(), None), sealed)
            .ok_or(Error::Tampered)?;
        Ok((header, ManifestBody::parse(&plain)?))
    }
}

/// Opens a segment that `entry` pins from its stored bytes fed in order, in pieces of
/// any size (a large segment read by ranges, so that its sealed bytes are never all in
/// memory at once): the header first, then each page as soon as it is whole, opened,
/// parsed and compacted (on the other cores when the piece is large) while the piece is
/// hashed. [`finish`](Self::finish) returns the records only once every byte arrived
/// and the SHA-256 of all of them is the pinned one.
///
/// Bytes other than the pinned ones are tampered with, whatever version they claim: a
/// header that does not parse makes the rest of the bytes only hashed, and its error
/// (an unknown version) is reported only if the digest holds; anything else malformed
/// fails at once with [`Error::Tampered`].
pub(crate) struct SegmentOpener {
    keys: Arc<CollectionKeys>,
    entry: SegmentEntry,
    hasher: Sha256,
    /// Bytes received beyond the last whole page.
    pending: Vec<u8>,
    received: u64,
    /// The header and its bytes, once parsed.
    header: Option<(SegmentHeader, [u8; SEGMENT_HEADER_LEN])>,
    header_error: Option<Error>,
    /// Pages opened so far.
    pages: u32,
    records: Vec<Loaded>,
}

impl SegmentOpener {
    pub(crate) fn new(keys: Arc<CollectionKeys>, entry: SegmentEntry) -> Self {
        // The record count is authenticated (the manifest's), but bounded by what the
        // stored bytes could hold before it sizes an allocation.
        let capacity = (entry.records as u64).min(entry.stored_len / 4) as usize;
        Self {
            keys,
            entry,
            hasher: Sha256::new(),
            pending: Vec::new(),
            received: 0,
            header: None,
            header_error: None,
            pages: 0,
            records: Vec::with_capacity(capacity),
        }
    }

    /// Takes the next `piece` of the stored bytes.
    ///
    /// # Errors
    /// [`Error::Tampered`] for more bytes than pinned, a header of another segment, a
    /// page that does not open or parse, or keys out of order.
    pub(crate) fn feed(&mut self, piece: &[u8]) -> Result<()> {
        self.received += piece.len() as u64;
        if self.received > self.entry.stored_len {
            return Err(Error::Tampered);
        }
        if self.header_error.is_some() {
            self.hasher.update(piece);
            return Ok(());
        }
        let bytes: &[u8] = if self.pending.is_empty() {
            piece
        } else {
            self.pending.extend_from_slice(piece);
            &self.pending
        };
        let mut at = 0usize;
        if self.header.is_none() {
            if bytes.len() < SEGMENT_HEADER_LEN {
                if self.pending.is_empty() {
                    self.pending.extend_from_slice(piece);
                }
                self.hasher.update(piece);
                return Ok(());
            }
            match SegmentHeader::parse_header(&bytes[..SEGMENT_HEADER_LEN]) {
                Ok(header) => {
                    if header.id != self.entry.id || header.kind != self.entry.kind {
                        return Err(Error::Tampered);
                    }
                    self.header = Some((header, header.to_bytes()));
                    at = SEGMENT_HEADER_LEN;
                }
                Err(e) => {
                    self.header_error = Some(e);
                    self.hasher.update(piece);
                    self.pending = Vec::new();
                    return Ok(());
                }
            }
        }
        // The whole pages in `bytes` from `at`. A length that would run past the pinned
        // bytes is refused at once (not waited for: the pieces would pile up).
        let offset = self.received - bytes.len() as u64;
        let mut sealed: Vec<&[u8]> = Vec::new();
        while let Some(len) = bytes.get(at..at + 4) {
            let len = u32::from_be_bytes(len.try_into().expect("four bytes"));
            let end = offset + at as u64 + 4 + u64::from(len);
            if end > self.entry.stored_len {
                return Err(Error::Tampered);
            }
            let Some(page) = bytes.get(at + 4..at + 4 + len as usize) else {
                break;
            };
            sealed.push(page);
            at += 4 + len as usize;
        }
        let (header, header_bytes) = self.header.as_ref().expect("parsed above");
        if self.pages as u64 + sealed.len() as u64 > u64::from(header.pages) {
            return Err(Error::Tampered);
        }
        let (kind, first) = (header.kind, self.pages);
        let keys = &self.keys;
        let open_page = |(i, page): (usize, &&[u8])| {
            let index = first + i as u32;
            let plain = keys
                .cipher
                .open(&keys.ad(AD_PAGE, header_bytes, Some(index)), page)
                .map(Bytes::from)
                .ok_or(Error::Tampered)?;
            let mut records = Vec::new();
            parse_page(kind, &plain, None, &mut records)?;
            let mut loaded = Vec::with_capacity(records.len());
            compact(&mut records, &mut loaded);
            Ok(loaded)
        };
        let hasher = &mut self.hasher;
        let opened = if crate::cpu::parallel(piece.len()) {
            rayon::join(
                || hasher.update(piece),
                || {
                    sealed
                        .par_iter()
                        .enumerate()
                        .map(open_page)
                        .collect::<Result<Vec<Vec<Loaded>>>>()
                },
            )
            .1
        } else {
            hasher.update(piece);
            sealed
                .iter()
                .enumerate()
                .map(open_page)
                .collect::<Result<Vec<Vec<Loaded>>>>()
        }?;
        self.pages += sealed.len() as u32;
        for page in opened {
            // Keys grow strictly within a page (checked by the parser) and across pages.
            if let (Some(last), Some(first)) = (self.records.last(), page.first()) {
                if last.key() >= first.key() {
                    return Err(Error::Tampered);
                }
            }
            self.records.extend(page);
        }
        // What is left of `bytes` waits for the next piece.
        if self.pending.is_empty() {
            self.pending.extend_from_slice(&piece[at..]);
        } else {
            self.pending.drain(..at);
        }
        Ok(())
    }

    /// The records, once every pinned byte arrived and their SHA-256 is the pinned one.
    ///
    /// # Errors
    /// [`Error::Tampered`] for missing bytes or pages, a wrong digest or record count;
    /// the header's error (an unknown version) when the bytes are the pinned ones.
    pub(crate) fn finish(self) -> Result<Vec<Loaded>> {
        let digest_ok = self.received == self.entry.stored_len
            && self.hasher.finalize().as_slice() == self.entry.digest;
        if let Some(e) = self.header_error {
            return Err(if digest_ok { e } else { Error::Tampered });
        }
        let complete = self.pending.is_empty()
            && self
                .header
                .as_ref()
                .is_some_and(|(header, _)| header.pages == self.pages);
        if !digest_ok || !complete || self.records.len() != self.entry.records as usize {
            return Err(Error::Tampered);
        }
        Ok(self.records)
    }
}

/// One record as loaded from a segment: its key and value in one slice of a buffer that
/// holds only record bytes (not the decrypted page with its stamps, lengths and flags).
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    /// `key ‖ value`.
    pub(crate) bytes: Bytes,
    pub(crate) key_len: usize,
    /// Its own stamp (compacted segments).
    pub(crate) stamp: Option<Stamp>,
    pub(crate) deleted: bool,
}

impl Loaded {
    pub(crate) fn key(&self) -> &[u8] {
        &self.bytes[..self.key_len]
    }

    /// Back to the format's record (for a compaction's output).
    pub(crate) fn into_record(self, stamp: Stamp) -> Record {
        Record {
            key: self.bytes.slice(..self.key_len),
            stamp: Some(self.stamp.unwrap_or(stamp)),
            value: (!self.deleted).then(|| self.bytes.slice(self.key_len..)),
        }
    }
}

/// Moves the keys and values of one page's records into one buffer of just those bytes
/// and appends them to `out`.
fn compact(records: &mut Vec<Record>, out: &mut Vec<Loaded>) {
    let size = records
        .iter()
        .map(|r| r.key.len() + r.value.as_ref().map_or(0, Bytes::len))
        .sum();
    let mut buffer = Vec::with_capacity(size);
    let mut spans = Vec::with_capacity(records.len());
    for r in records.iter() {
        let start = buffer.len();
        buffer.extend_from_slice(&r.key);
        if let Some(value) = &r.value {
            buffer.extend_from_slice(value);
        }
        spans.push(start..buffer.len());
    }
    let buffer = Bytes::from(buffer);
    for (r, span) in records.drain(..).zip(spans) {
        out.push(Loaded {
            bytes: buffer.slice(span),
            key_len: r.key.len(),
            stamp: r.stamp,
            deleted: r.value.is_none(),
        });
    }
}
