//! Email details stored apart (`docs/design.md` §11.2): the MIME parts, header block and
//! preview of an email record (version 4 on) can live in a **details segment** of the mail
//! collection instead of in the record, so that the index a session keeps in memory
//! holds what listing, sorting and metadata search read (pin, fixed fields, envelope) and
//! not what `BODYSTRUCTURE`, part fetches, `BODY[HEADER]`, JMAP `bodyStructure`/`preview`
//! and text search's header verification read.
//!
//! A details segment is a paged segment as the search segments are (`docs/design.md`
//! §15.2: `MVX1` header, fixed-size pages each sealed under a key of the collection and
//! bound to the segment id and its index; listed in the manifest as kind 3, never loaded
//! into the view), whose page payloads, concatenated, are the details records of its
//! emails one after the other; every page but the last is full. A record names its
//! details by segment id, page class, offset and length ([`DetailsLocation`]): a read is
//! one ranged GET of the pages holding them (and a few after, read ahead), through a
//! small page cache of its own ([`DETAILS_CACHE_BYTES`]).
//!
//! [`Mailstore::store_details`] writes them (called by [`Mailstore::compact`]): the
//! details of every analyzed email whose record holds them, in creation order, in
//! segments of at most [`SEGMENT_PAYLOAD`] bytes; each segment is committed first, then
//! the records that did not change meanwhile are rewritten to name it. Records of
//! version 1 to 3 and records written since hold their details: both forms are read.
//! A record naming a segment the manifest no longer lists (a copy made by a root rotation
//! before it carried details segments along, or a damaged store) has its details
//! computed from the body again, as an analysis would.

use sha2::{Digest, Sha256};

use super::*;
use crate::format::index::SegmentEntry;
use crate::format::mail::{DetailsLocation, EmailDetails};
use crate::format::search::{
    page_payload, PlainSegment, SearchHeader, Trailer, DEFAULT_PAGE_CLASS,
};
use crate::mail::text::cache::{CacheKey, Cached, PageCache};

/// Bytes of details records per details segment (a segment is built in memory).
pub(crate) const SEGMENT_PAYLOAD: usize = 16 << 20;

/// Budget of a mailstore's details page cache (128 pages of 16 KiB: what reads in the
/// order stored, a chunk of header blocks or a run of fetches, use again is the pages
/// just read and read ahead).
pub(crate) const DETAILS_CACHE_BYTES: usize = 2 << 20;

/// Pages read past the last one a read needs (a FETCH over a mailbox reads details in
/// about the order they were stored: creation order).
const READ_AHEAD_PAGES: u32 = 7;

/// Emails whose details a text search reads at once (sorted by where they are stored):
/// their header blocks are held together (2 048 of the test corpus' held 10 MB at the
/// peak of a session's search; 512 hold 2.5).
pub(crate) const HEADER_CHUNK: usize = 512;

/// The page cache of a mailstore's details segments.
pub(crate) fn details_cache() -> PageCache {
    PageCache::with_budgets(DETAILS_CACHE_BYTES, 0)
}

impl Mailstore {
    /// `email` with its details (MIME parts, header block, preview) in it: as it is when
    /// its record holds them; read from its details segment when they are stored apart
    /// ([`EmailRecord::stored_details`]): one ranged GET of the pages holding them unless
    /// the page cache has them; computed from the body again (a whole read and a parse)
    /// when the segment is no longer listed.
    ///
    /// What `BODYSTRUCTURE`, part fetches, JMAP `bodyStructure`, `preview` and
    /// `header:*` need before they read [`EmailRecord::parts`],
    /// [`header_block`](EmailRecord::header_block) or [`preview`](EmailRecord::preview).
    ///
    /// # Errors
    /// [`Error::Tampered`] for a page that does not authenticate or details that do not
    /// parse; as [`read`](Self::read) for the body; backend failures.
    pub async fn with_details(&self, email: EmailRecord) -> Result<EmailRecord> {
        let Some(location) = email.stored_details else {
            return Ok(email);
        };
        let details = self.read_details(&email, &location).await?;
        email.with_details(details)
    }

    /// The details `location` names, of the email `email`.
    async fn read_details(
        &self,
        email: &EmailRecord,
        location: &DetailsLocation,
    ) -> Result<EmailDetails> {
        let entry = self
            .index
            .search_segments()
            .find(|e| e.id == location.segment)
            .cloned();
        match entry {
            Some(entry) => {
                let bytes = self.details_bytes(&entry, location).await?;
                EmailDetails::parse(&bytes, email.size)
            }
            None => {
                // As at append: a body above the parse limit is parsed for its header only.
                let limit = self.config.max_parse_len;
                let analysis = if email.size > limit as u64 {
                    let prefix = self.read_range(email, 0..limit as u64).await?;
                    mime::analyze_blocking(prefix.to_vec(), true, false)
                        .await?
                        .0
                } else {
                    mime::analyze_blocking(self.read(email).await?.to_vec(), false, false)
                        .await?
                        .0
                };
                Ok(EmailDetails {
                    parts: analysis.parts,
                    header_block: analysis.header_block,
                    preview: analysis.preview,
                })
            }
        }
    }

    /// Bytes `location` names in the details segment `entry`: the pages holding them from
    /// the cache, the missing ones (and up to [`READ_AHEAD_PAGES`] after them) in one
    /// ranged GET.
    async fn details_bytes(
        &self,
        entry: &SegmentEntry,
        location: &DetailsLocation,
    ) -> Result<Vec<u8>> {
        let header = SearchHeader {
            id: location.segment,
            page_class: location.page_class,
        };
        let capacity = header.capacity() as u64;
        let pages = header.pages(entry.stored_len)?;
        let end = location.offset + u64::from(location.len);
        let first = location.offset / capacity;
        let last = (end - 1) / capacity;
        if last >= u64::from(pages) {
            return Err(Error::Tampered);
        }
        let (first, last) = (first as u32, last as u32);
        let mut payloads: Vec<Option<Bytes>> = (first..=last)
            .map(
                |i| match self.details_cache.get(&CacheKey::Page(location.segment, i)) {
                    Some(Cached::Bytes(b)) => Some(b),
                    _ => None,
                },
            )
            .collect();
        if let Some(missing) = payloads.iter().position(Option::is_none) {
            let from = first + missing as u32;
            let to = last.saturating_add(READ_AHEAD_PAGES).min(pages - 1);
            let pages_io = self.index.search_pages();
            let range = header.page_range(from).start..header.page_range(to).end;
            let sealed = pages_io.read_range(entry, range).await?;
            let sealed_len = header.sealed_len();
            for (n, chunk) in sealed.chunks(sealed_len).enumerate() {
                let i = from + n as u32;
                let plain = pages_io.open_page(&header, i, chunk)?;
                let payload = Bytes::copy_from_slice(page_payload(&plain, capacity as usize)?);
                if i <= last {
                    payloads[(i - first) as usize] = Some(payload.clone());
                }
                // Pages read ahead are cached too (evicting the least recently used): the
                // next details read are most likely in them.
                self.details_cache.insert(
                    CacheKey::Page(location.segment, i),
                    Cached::Bytes(payload),
                    false,
                );
            }
        }
        let mut out = Vec::with_capacity(location.len as usize);
        for (n, payload) in payloads.into_iter().enumerate() {
            let payload = payload.ok_or(Error::Tampered)?;
            let start = (u64::from(first) + n as u64) * capacity;
            let from = location.offset.max(start) - start;
            let to = (end.min(start + capacity) - start) as usize;
            out.extend_from_slice(payload.get(from as usize..to).ok_or(Error::Tampered)?);
        }
        Ok(out)
    }

    /// The header blocks of `emails` (those that have one), read from their records or
    /// details segments in the order given (for text search's header verification,
    /// which reads many and gives them in the order their segments hold them, so that
    /// each page is read once).
    ///
    /// # Errors
    /// As [`with_details`](Self::with_details).
    pub(crate) async fn header_blocks(
        &self,
        emails: &[EmailId],
    ) -> Result<HashMap<EmailId, Vec<u8>>> {
        let mut out = HashMap::with_capacity(emails.len());
        for email in emails {
            let record = match self.email_by_id(*email) {
                Ok(record) => record,
                Err(Error::NoSuchMessage { .. }) => continue,
                Err(e) => return Err(e),
            };
            if let Some(block) = self.with_details(record).await?.header_block {
                out.insert(*email, block);
            }
        }
        Ok(out)
    }

    /// Moves the details of every analyzed email whose record holds them to details
    /// segments (see the [module documentation](self)); returns how many emails' records
    /// now name them. A record changed meanwhile by another writer keeps its details
    /// (the segment then holds a copy nothing names).
    ///
    /// # Errors
    /// As [`refresh`](Self::refresh) and the commits; [`Error::Tampered`] for a record
    /// that does not parse.
    #[tracing::instrument(level = "debug", skip_all, fields(account = %self.account(), requests = tracing::field::Empty, bytes_read = tracing::field::Empty, bytes_written = tracing::field::Empty))]
    pub async fn store_details(&mut self) -> Result<usize> {
        metered(async move {
            self.refresh().await?;
            // Creation order: a FETCH over a mailbox reads them in about this order.
            let mut inline: Vec<(u64, EmailId)> = Vec::new();
            for (k, v) in self.index.prefix(&[keys::EMAIL]) {
                let record = EmailRecord::parse(v)?;
                if record.stored_details.is_none() && !record.details().is_empty() {
                    let id = EmailId::from_bytes(keys::tagged_id(k).ok_or(Error::Tampered)?);
                    inline.push((record.created_modseq, id));
                }
            }
            inline.sort_unstable();
            let mut moved = 0;
            let mut at = 0;
            while at < inline.len() {
                let mut payload = Vec::new();
                // (email, what its record was, where its details are)
                let mut placed: Vec<(EmailId, [u8; 32], u64, u32)> = Vec::new();
                while at < inline.len() && payload.len() < SEGMENT_PAYLOAD {
                    let id = inline[at].1;
                    at += 1;
                    let Some(bytes) = self.index.get(&keys::email(&id)) else {
                        continue;
                    };
                    let details = EmailRecord::parse(bytes)?.details().to_bytes();
                    placed.push((
                        id,
                        Sha256::digest(bytes).into(),
                        payload.len() as u64,
                        details.len() as u32,
                    ));
                    payload.extend_from_slice(&details);
                }
                if placed.is_empty() {
                    continue;
                }
                moved += self.commit_details(payload, placed).await?;
            }
            Ok(moved)
        })
        .await
    }

    /// Stores `payload` as a details segment, lists it, then rewrites each record of
    /// `placed` still as it was to name its details there.
    async fn commit_details(
        &mut self,
        payload: Vec<u8>,
        placed: Vec<(EmailId, [u8; 32], u64, u32)>,
    ) -> Result<usize> {
        let page_class = DEFAULT_PAGE_CLASS;
        let capacity = SearchHeader {
            id: crate::ids::SegmentId::from_bytes([0; 16]),
            page_class,
        }
        .capacity();
        let plain = PlainSegment {
            page_class,
            pages: payload.chunks(capacity).map(<[u8]>::to_vec).collect(),
            trailer: Trailer {
                docs: placed.len() as u32,
                ..Trailer::default()
            },
        };
        drop(payload);
        let pages = self.index.search_pages();
        let entry = pages.put(plain).await?;
        let segment = entry.id;
        self.index
            .commit_segments(vec![entry], Vec::new(), crate::index::Batch::new())
            .await?;
        self.write(move |c, _| {
            let mut plan = Plan::new();
            let mut moved = 0;
            for (id, was, offset, len) in &placed {
                let key = keys::email(id);
                let Some(bytes) = c.get(&key) else {
                    continue;
                };
                if Sha256::digest(bytes).as_slice() != was {
                    continue;
                }
                let record = EmailRecord {
                    parts: Vec::new(),
                    header_block: None,
                    preview: None,
                    stored_details: Some(DetailsLocation {
                        segment,
                        page_class,
                        offset: *offset,
                        len: *len,
                    }),
                    ..EmailRecord::parse(bytes)?
                };
                plan.batch.put(key, record.to_bytes());
                moved += 1;
            }
            Ok((plan, moved))
        })
        .await
    }
}
