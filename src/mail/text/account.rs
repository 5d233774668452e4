//! Text search of an account's mail ([`Mailstore::search_texts`]) and the indexing of
//! what its text index lacks ([`Mailstore::index_texts`]).

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use futures::StreamExt;
use rayon::prelude::*;

use super::extract::{extract_message, ExtractedText};
use super::fold::fold;
use super::index::{Plan, TextIndex, SEGMENT_DOCS, SEGMENT_TEXT};
use super::matches::Matches;
use super::oracle::{Oracle, TextKey};
use crate::error::{Error, Result};
use crate::ids::{EmailId, SegmentId};
use crate::mail::Mailstore;

/// Bodies read at once while indexing.
const READ_AHEAD: usize = 8;

/// One email read and extracted: its text and its header block.
struct Read {
    email: EmailId,
    text: ExtractedText,
    header: Vec<u8>,
}

impl Mailstore {
    /// For each text key, which emails of `emails` match it (RFC 9051 `BODY`, `TEXT`
    /// and `HEADER`, with the semantics of [`oracle`](super::oracle): the decoded text,
    /// folded with `i;unicode-casemap`): exactly the answer of a scan of every body, as
    /// their positions in `emails` ([`Matches`]: a bit per email of the list, so that a
    /// key matching all of a 100 000-email mailbox takes 12.5 KB).
    ///
    /// The account's text index answers for the emails it covers; an email it lacks is
    /// read and scanned, and its text added to the index on the way, so the next search
    /// finds it indexed. [`index_texts`](Self::index_texts) does that part ahead, in
    /// steps, for a caller that holds a lock around each call.
    ///
    /// # Errors
    /// Reading a body fails (as [`read`](Self::read)); [`Error::Tampered`] for an
    /// index segment that does not authenticate; [`Error::InvalidArgument`] for a list
    /// of 2³² − 1 emails or more; backend failures.
    pub async fn search_texts(&self, emails: &[EmailId], keys: &[TextKey]) -> Result<Vec<Matches>> {
        let len = u32::try_from(emails.len())
            .ok()
            .filter(|&n| n < u32::MAX)
            .ok_or_else(|| Error::invalid("a search over 2^32 - 1 emails or more"))?;
        let mut out = vec![Matches::none(len); keys.len()];
        if keys.is_empty() || emails.is_empty() {
            return Ok(out);
        }
        let oracle = Oracle::new(keys, self.config.max_parse_len);
        let mut slot = self.text.lock().await;
        let (index, buffer) = slot.get_with_buffer().await?;
        // What the index answers, and what it lacks (each email at its first position).
        let partition = index.partition(emails)?;
        // Texts extracted at append, not in a segment yet: scanned (no body read) when
        // the record keeps the header block that `HEADER` keys need.
        let mut scanned = HashSet::new();
        for &(p, email) in partition.uncovered.iter().filter(|_| !buffer.is_empty()) {
            let Some(text) = buffer.get(&email) else {
                continue;
            };
            let Some(header) = self.email_by_id(email).ok().and_then(|r| r.header_block) else {
                continue;
            };
            scanned.insert(email);
            let read = Read {
                email,
                text: text.clone(),
                header,
            };
            answer(&oracle, &read, p, &mut out);
        }
        // The rest is read, scanned and indexed.
        let missing: HashMap<EmailId, u32> = partition
            .uncovered
            .iter()
            .filter(|(_, e)| !scanned.contains(e))
            .map(|&(p, e)| (e, p))
            .collect();
        let order: Vec<EmailId> = partition
            .uncovered
            .iter()
            .map(|(_, e)| *e)
            .filter(|e| missing.contains_key(e))
            .collect();
        self.index_missing(index, &order, |read| {
            if let Some(&p) = missing.get(&read.email) {
                answer(&oracle, read, p, &mut out);
            }
        })
        .await?;
        // Indexing them may have merged segments and dropped expunged emails: where the
        // covered emails are is looked up again (the scanned ones, now covered, get the
        // same answer from the index).
        let repeats = partition.repeats.clone();
        let covered = if missing.is_empty() {
            partition.covered
        } else {
            index.partition(emails)?.covered
        };
        let found = index
            .find(keys, &covered, &|e| {
                self.email_by_id(*e).ok().and_then(|r| r.header_block)
            })
            .await?;
        for (set, found) in out.iter_mut().zip(&found.matches) {
            set.union(found);
        }
        // Emails whose header blocks are stored apart (with the rest of their details):
        // read in chunks, in the order stored (so that each chunk reads its own pages
        // once), and verified by the index again on the keys that read header blocks (the
        // others' answers for them are final). Sized at once: a HEADER key leaves every
        // email of the mailbox unverified. Each as (where its details are, its
        // position), where in one word: the segment's rank among the details segments
        // met, and the offset in it (16 bytes an email, where the segment's id and the
        // offset took 32).
        let mut apart: Vec<(u64, u32)> = Vec::with_capacity(found.unverified.len());
        let mut segments: HashMap<SegmentId, u64> = HashMap::new();
        let mut unverified = Vec::new();
        for p in found.unverified.positions() {
            let email = emails[p];
            let p = p as u32;
            let at = self.email_by_id(email).ok().and_then(|r| r.stored_details);
            match at.filter(|at| at.offset <= u64::from(u32::MAX)) {
                Some(at) => {
                    let met = segments.len() as u64;
                    let rank = *segments.entry(at.segment).or_insert(met);
                    apart.push((rank << 32 | at.offset, p));
                }
                None => unverified.push((p, email)),
            }
        }
        // In the order stored: each segment's together, by offset.
        apart.sort_unstable();
        let header_keys: Vec<usize> = (0..keys.len())
            .filter(|&i| match &keys[i] {
                TextKey::Header(..) => true,
                TextKey::Text(s) => !matches!(Plan::of(&fold(s)), Plan::Word(_)),
                TextKey::Body(_) => false,
            })
            .collect();
        let again_keys: Vec<TextKey> = header_keys.iter().map(|&i| keys[i].clone()).collect();
        for chunk in apart.chunks(crate::mail::details::HEADER_CHUNK) {
            let ids: Vec<EmailId> = chunk.iter().map(|&(_, p)| emails[p as usize]).collect();
            let blocks = self.header_blocks(&ids).await?;
            let mut places = Matches::none(len);
            chunk.iter().for_each(|&(_, p)| places.insert(p));
            let again = index
                .find(&again_keys, &covered.within(&places), &|e| {
                    blocks.get(e).cloned()
                })
                .await?;
            for (&i, found) in header_keys.iter().zip(&again.matches) {
                out[i].union(found);
            }
            unverified.extend(again.unverified.positions().map(|p| (p as u32, emails[p])));
        }
        // What the index could not verify: scanned, and the scan decides.
        let at: HashMap<EmailId, u32> = unverified.iter().map(|&(p, e)| (e, p)).collect();
        let order: Vec<EmailId> = unverified.iter().map(|(_, e)| *e).collect();
        for chunk in self.chunks(&order) {
            for read in self.read_texts(&chunk).await? {
                let Some(&p) = at.get(&read.email) else {
                    continue;
                };
                for set in out.iter_mut() {
                    set.remove(p);
                }
                answer(&oracle, &read, p, &mut out);
            }
        }
        // An email listed twice matches at each of its positions.
        for &(first, again) in repeats.iter() {
            for set in out.iter_mut().filter(|s| s.contains(first as usize)) {
                set.insert(again);
            }
        }
        Ok(out)
    }

    /// Adds to the account's text index the texts of at most `max` emails of `emails`
    /// it lacks (reading their bodies), then merges its segments as needed. Returns how
    /// many were indexed: 0 when every email of `emails` that still exists is covered
    /// (an email gone since the list was made, expunged by another session, is not
    /// counted: a caller stepping until 0 ends).
    ///
    /// # Errors
    /// As [`search_texts`](Self::search_texts).
    pub async fn index_texts(&self, emails: &[EmailId], max: usize) -> Result<usize> {
        let mut slot = self.text.lock().await;
        let (index, buffer) = slot.get_with_buffer().await?;
        let missing: Vec<EmailId> = index
            .partition(emails)?
            .uncovered
            .iter()
            .map(|(_, e)| *e)
            .filter(|e| !buffer.contains_key(e) && self.email_by_id(*e).is_ok())
            .take(max)
            .collect();
        self.index_missing(index, &missing, |_| {}).await
    }

    /// How many emails of `emails` the account's text index covers (a segment or this
    /// handle's buffer holds their text): the progress of indexing, whose state is
    /// what the index covers (so an indexing stopped at any point resumes where it was).
    ///
    /// # Errors
    /// As [`search_texts`](Self::search_texts) (the index is opened).
    pub async fn texts_covered(&self, emails: &[EmailId]) -> Result<usize> {
        let mut slot = self.text.lock().await;
        let (index, buffer) = slot.get_with_buffer().await?;
        let partition = index.partition(emails)?;
        let unique = emails.len() - partition.repeats.len();
        let lacking = partition
            .uncovered
            .iter()
            .filter(|(_, e)| !buffer.contains_key(e))
            .count();
        Ok(unique - lacking)
    }

    /// Writes the texts this handle extracted at append and holds in memory as a
    /// segment of the text index (what it does by itself every 512 appends and when
    /// the handle is dropped). A crash before loses only them: their emails are then
    /// indexed by reading their bodies.
    ///
    /// # Errors
    /// Backend failures; [`Error::Moved`] after a root rotation.
    pub async fn flush_texts(&self) -> Result<()> {
        let mut slot = self.text.lock().await;
        slot.flush(&|e| self.index.get(&crate::mail::keys::email(e)).is_some())
            .await
    }

    /// Hands the texts extracted by appends just committed to the buffer, and writes
    /// it when full. Never fails (the appends are committed): a failure to write is
    /// logged and those emails are indexed later by reading their bodies.
    pub(crate) async fn buffer_texts(&mut self, docs: Vec<(EmailId, ExtractedText)>) {
        if docs.is_empty() {
            return;
        }
        let live = |e: &EmailId| self.index.get(&crate::mail::keys::email(e)).is_some();
        let slot = self.text.get_mut();
        if slot.buffer(docs) {
            if let Err(e) = slot.flush(&live).await {
                tracing::warn!(account = %self.blobs.account(), error = %e, "texts of appended mail not indexed");
            }
        }
    }

    /// Stores the texts of deliveries about to be imported as one segment of the text
    /// index, before their mail commit (a crash between leaves texts of emails that do
    /// not exist yet: they are never answered, and merges drop them). Never fails: a
    /// failure is logged and those emails are indexed later by reading their bodies.
    pub(crate) async fn store_texts(&mut self, docs: &[(EmailId, ExtractedText)]) {
        if docs.is_empty() {
            return;
        }
        let account = self.blobs.account();
        if let Err(e) = self.text.get_mut().store(docs).await {
            tracing::warn!(%account, error = %e, "texts of imported mail not indexed");
        }
    }

    /// Reads, extracts and indexes `missing` in segments of bounded size, handing each
    /// email read to `each`; then merges. Returns how many were read (those gone
    /// meanwhile are not).
    async fn index_missing(
        &self,
        index: &mut TextIndex,
        missing: &[EmailId],
        mut each: impl FnMut(&Read),
    ) -> Result<usize> {
        if missing.is_empty() {
            return Ok(0);
        }
        let mut read = 0;
        for chunk in self.chunks(missing) {
            let reads = self.read_texts(&chunk).await?;
            read += reads.len();
            reads.iter().for_each(&mut each);
            let docs: Vec<(EmailId, ExtractedText)> =
                reads.into_iter().map(|r| (r.email, r.text)).collect();
            index.add(&docs).await?;
        }
        index
            .maintain(&|e| self.index.get(&crate::mail::keys::email(e)).is_some())
            .await?;
        Ok(read)
    }

    /// `emails` cut in chunks of at most [`SEGMENT_DOCS`] emails and about
    /// [`SEGMENT_TEXT`] bytes of message (an email gone meanwhile counts nothing).
    fn chunks(&self, emails: &[EmailId]) -> Vec<Vec<EmailId>> {
        let mut out: Vec<Vec<EmailId>> = Vec::new();
        let mut bytes = 0u64;
        for email in emails {
            let size = self.email_by_id(*email).map_or(0, |r| r.size);
            match out.last_mut() {
                Some(last) if last.len() < SEGMENT_DOCS && bytes + size <= SEGMENT_TEXT => {
                    last.push(*email);
                    bytes += size;
                }
                _ => {
                    out.push(vec![*email]);
                    bytes = size;
                }
            }
        }
        out
    }

    /// The emails of `emails` read and extracted (those gone meanwhile left out).
    async fn read_texts(&self, emails: &[EmailId]) -> Result<Vec<Read>> {
        let bodies: Vec<Result<Option<(EmailId, Bytes)>>> =
            futures::stream::iter(emails.iter().copied())
                .map(|email| async move {
                    let record = match self.email_by_id(email) {
                        Ok(record) => record,
                        Err(Error::NoSuchMessage { .. }) => return Ok(None),
                        Err(e) => return Err(e),
                    };
                    Ok(Some((email, self.read(&record).await?)))
                })
                .buffered(READ_AHEAD)
                .collect()
                .await;
        let bodies: Vec<(EmailId, Bytes)> = bodies
            .into_iter()
            .filter_map(Result::transpose)
            .collect::<Result<_>>()?;
        let max_parse_len = self.config.max_parse_len;
        tokio::task::spawn_blocking(move || {
            bodies
                .par_iter()
                .map(|(email, raw)| {
                    let end = crate::mail::mime::header_end(raw);
                    Read {
                        email: *email,
                        text: extract_message(raw, max_parse_len),
                        header: raw[..end].to_vec(),
                    }
                })
                .collect()
        })
        .await
        .map_err(|e| Error::InvalidArgument(format!("text extraction did not finish: {e}")))
    }
}

/// Adds `read`'s email, at `position`, to the keys it matches.
fn answer(oracle: &Oracle, read: &Read, position: u32, out: &mut [Matches]) {
    for (set, matched) in out
        .iter_mut()
        .zip(oracle.matches_extracted(&read.text, &read.header))
    {
        if matched {
            set.insert(position);
        }
    }
}
