//! Text search of an account's mail ([`Mailstore::search_texts`]) and the indexing of
//! what its text index lacks ([`Mailstore::index_texts`]).

use std::collections::HashSet;

use bytes::Bytes;
use futures::StreamExt;
use rayon::prelude::*;

use super::extract::{extract_message, ExtractedText};
use super::fold::fold;
use super::index::{Plan, TextIndex, SEGMENT_DOCS, SEGMENT_TEXT};
use super::oracle::{Oracle, TextKey};
use crate::error::{Error, Result};
use crate::ids::EmailId;
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
    /// For each text key, the emails of `emails` that match it (RFC 9051 `BODY`, `TEXT`
    /// and `HEADER`, with the semantics of [`oracle`](super::oracle): the decoded text,
    /// folded with `i;unicode-casemap`): exactly the answer of a scan of every body.
    ///
    /// The account's text index answers for the emails it covers; an email it lacks is
    /// read and scanned, and its text added to the index on the way, so the next search
    /// finds it indexed. [`index_texts`](Self::index_texts) does that part ahead, in
    /// steps, for a caller that holds a lock around each call.
    ///
    /// # Errors
    /// Reading a body fails (as [`read`](Self::read)); [`Error::Tampered`] for an
    /// index segment that does not authenticate; backend failures.
    pub async fn search_texts(
        &self,
        emails: &[EmailId],
        keys: &[TextKey],
    ) -> Result<Vec<HashSet<EmailId>>> {
        let mut out = vec![HashSet::new(); keys.len()];
        if keys.is_empty() || emails.is_empty() {
            return Ok(out);
        }
        let oracle = Oracle::new(keys, self.config.max_parse_len);
        let mut slot = self.text.lock().await;
        let index = slot.get().await?;
        let missing = uncovered(index, emails);
        let mut scanned = HashSet::new();
        self.index_missing(index, &missing, |read| {
            scanned.insert(read.email);
            answer(&oracle, read, &mut out);
        })
        .await?;
        let covered: HashSet<EmailId> = emails
            .iter()
            .filter(|e| index.covers(e) && !scanned.contains(*e))
            .copied()
            .collect();
        let found = index
            .find(keys, &covered, &|e| {
                self.email_by_id(*e).ok().and_then(|r| r.header_block)
            })
            .await?;
        for (set, found) in out.iter_mut().zip(found.matches) {
            set.extend(found);
        }
        // Emails whose header blocks are stored apart (email records of version 4): read
        // in chunks, in the order stored (so that each chunk reads its own pages once),
        // and verified by the index again on the keys that read header blocks (the
        // others' answers for them are final).
        let mut apart = Vec::new();
        let mut unverified = Vec::new();
        for email in found.unverified {
            match self.email_by_id(email).ok().and_then(|r| r.stored_details) {
                Some(at) => apart.push(((at.segment, at.offset), email)),
                None => unverified.push(email),
            }
        }
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
            let chunk: Vec<EmailId> = chunk.iter().map(|(_, e)| *e).collect();
            let blocks = self.header_blocks(&chunk).await?;
            let scope: HashSet<EmailId> = chunk.into_iter().collect();
            let again = index
                .find(&again_keys, &scope, &|e| blocks.get(e).cloned())
                .await?;
            for (&i, found) in header_keys.iter().zip(again.matches) {
                out[i].extend(found);
            }
            unverified.extend(again.unverified);
        }
        // What the index could not verify: scanned, and the scan decides.
        for chunk in self.chunks(&unverified) {
            for read in self.read_texts(&chunk).await? {
                for set in out.iter_mut() {
                    set.remove(&read.email);
                }
                answer(&oracle, &read, &mut out);
            }
        }
        Ok(out)
    }

    /// Adds to the account's text index the texts of at most `max` emails of `emails`
    /// it lacks (reading their bodies), then merges its segments as needed. Returns how
    /// many were indexed: 0 when every email of `emails` is covered.
    ///
    /// # Errors
    /// As [`search_texts`](Self::search_texts).
    pub async fn index_texts(&self, emails: &[EmailId], max: usize) -> Result<usize> {
        let mut slot = self.text.lock().await;
        let index = slot.get().await?;
        let mut missing = uncovered(index, emails);
        missing.truncate(max);
        self.index_missing(index, &missing, |_| {}).await?;
        Ok(missing.len())
    }

    /// Reads, extracts and indexes `missing` in segments of bounded size, handing each
    /// email read to `each`; then merges.
    async fn index_missing(
        &self,
        index: &mut TextIndex,
        missing: &[EmailId],
        mut each: impl FnMut(&Read),
    ) -> Result<()> {
        if missing.is_empty() {
            return Ok(());
        }
        for chunk in self.chunks(missing) {
            let reads = self.read_texts(&chunk).await?;
            reads.iter().for_each(&mut each);
            let docs: Vec<(EmailId, ExtractedText)> =
                reads.into_iter().map(|r| (r.email, r.text)).collect();
            index.add(&docs).await?;
        }
        index
            .maintain(&|e| self.index.get(&crate::mail::keys::email(e)).is_some())
            .await
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

/// The emails of `emails` the index lacks, each once, in the order given.
fn uncovered(index: &TextIndex, emails: &[EmailId]) -> Vec<EmailId> {
    let mut seen = HashSet::new();
    emails
        .iter()
        .filter(|e| !index.covers(e) && seen.insert(**e))
        .copied()
        .collect()
}

/// Adds `read`'s email to the keys it matches.
fn answer(oracle: &Oracle, read: &Read, out: &mut [HashSet<EmailId>]) {
    for (set, matched) in out
        .iter_mut()
        .zip(oracle.matches_extracted(&read.text, &read.header))
    {
        if matched {
            set.insert(read.email);
        }
    }
}
