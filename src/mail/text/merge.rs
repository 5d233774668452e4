//! Merging search segments (`docs/proposals/search.md` §3.5): several segments become one,
//! without the docs the caller's live set excludes (expunged emails) and with one doc per
//! email (the one of the latest segment), committed in place of its inputs.

use std::collections::{HashMap, HashSet};

use futures::{StreamExt, TryStreamExt};

use super::segment::{push_posting, SegmentBuilder};
use crate::error::{Error, Result};
use crate::format::index::SegmentEntry;
use crate::format::search::{
    page_payload, read_block, PlainSegment, SearchHeader, SegmentContents,
};
use crate::ids::{EmailId, SegmentId};
use crate::index::{Batch, Collection, SearchPages};

/// Reads the segment `entry` pins whole (length and SHA-256 checked), opens every page
/// and parses every region.
///
/// # Errors
/// [`Error::Tampered`] for any byte that does not authenticate or parse;
/// [`Error::UnsupportedVersion`]; backend failures.
pub(crate) async fn read_contents(
    pages: &SearchPages,
    entry: &SegmentEntry,
) -> Result<SegmentContents> {
    let stored = pages.read_whole(entry).await?;
    let header = SearchHeader::parse(&stored)?;
    if header.id != entry.id {
        return Err(Error::Tampered);
    }
    let count = header.pages(entry.stored_len)?;
    let (pages, records) = (pages.clone(), entry.records);
    crate::cpu::offload(stored.len(), move || {
        let capacity = header.capacity();
        let payloads = (0..count)
            .map(|i| {
                let range = header.page_range(i);
                let plain = pages.open_page(
                    &header,
                    i,
                    &stored[range.start as usize..range.end as usize],
                )?;
                Ok(page_payload(&plain, capacity)?.to_vec())
            })
            .collect::<Result<Vec<Vec<u8>>>>()?;
        let views: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        // Postings are checked as the merge reads them (each block once).
        let contents = SegmentContents::parse_deferring_postings(&views, capacity)?;
        if contents.trailer.docs != records {
            return Err(Error::Tampered);
        }
        Ok(contents)
    })
    .await?
}

/// One segment from `inputs` (in stamp order): the docs whose email `live` accepts, each
/// email once (from the last input that has it), texts recompressed, posting lists
/// renumbered. `None` when no doc is left.
///
/// # Errors
/// [`Error::InvalidArgument`] for inputs of different text versions; [`Error::Tampered`]
/// for a frame that does not decompress.
pub(crate) fn merge_contents(
    inputs: &[SegmentContents],
    live: &dyn Fn(&EmailId) -> bool,
    page_class: u8,
) -> Result<Option<PlainSegment>> {
    let Some(first) = inputs.first() else {
        return Ok(None);
    };
    let text_version = first.trailer.text_version;
    if inputs
        .iter()
        .any(|c| c.trailer.text_version != text_version)
    {
        return Err(Error::invalid("search segments of different text versions"));
    }
    // The input and local doc that keeps each email: the last one.
    let mut keeper: HashMap<EmailId, (usize, u32)> = HashMap::new();
    for (k, contents) in inputs.iter().enumerate() {
        for (d, doc) in contents.docs.iter().enumerate() {
            if live(&doc.email) {
                keeper.insert(doc.email, (k, d as u32));
            }
        }
    }
    if keeper.is_empty() {
        return Ok(None);
    }
    let mut builder = SegmentBuilder::new(page_class, text_version);
    builder.reserve(keeper.len(), inputs.iter().map(|c| c.text.len()).sum());
    // Per input, old local doc → new one (`None`: not kept), assigned in input order and
    // in doc order within one, so that postings stay increasing when streamed.
    let mut renumbers: Vec<Vec<Option<u32>>> = Vec::with_capacity(inputs.len());
    for (k, contents) in inputs.iter().enumerate() {
        let mut renumber: Vec<Option<u32>> = vec![None; contents.docs.len()];
        let docs = &contents.docs;
        let kept = |d: usize| keeper.get(&docs[d].email) == Some(&(k, d as u32));
        let mut d = 0;
        while d < docs.len() {
            // The run of docs in one frame (a builder writes a frame's docs together).
            let frame = docs[d].frame;
            let end = d + docs[d..].iter().take_while(|x| x.frame == frame).count();
            let raw_len = contents
                .frames
                .get(frame as usize)
                .ok_or(Error::Tampered)?
                .raw_len;
            // The run's texts tile the frame (as a builder writes them): nothing else is
            // in it, so copying it keeps no text of another doc.
            let mut at = 0u64;
            let tiles = docs[d..end].iter().all(|x| {
                let here = u64::from(x.offset) == at;
                at += u64::from(x.body_len) + u64::from(x.mime_len);
                here
            }) && at == u64::from(raw_len);
            if tiles && (d..end).all(kept) {
                // Every doc of the frame kept: its compressed bytes are copied as is.
                let compressed = contents.compressed_frame(frame as usize)?;
                let first = builder.add_merged_frame(compressed, raw_len, &docs[d..end]);
                for (j, slot) in renumber[d..end].iter_mut().enumerate() {
                    *slot = Some(first + j as u32);
                }
            } else if (d..end).any(kept) {
                // Some gone: the kept texts are compressed again without the others.
                let raw = contents.frame(frame as usize)?;
                for i in (d..end).filter(|&i| kept(i)) {
                    let doc = &docs[i];
                    let start = doc.offset as usize;
                    let mid = start + doc.body_len as usize;
                    let end = mid + doc.mime_len as usize;
                    let text = |range: std::ops::Range<usize>| {
                        raw.get(range)
                            .and_then(|b| std::str::from_utf8(b).ok())
                            .ok_or(Error::Tampered)
                    };
                    renumber[i] = Some(builder.add_merged(doc, text(start..mid)?, text(mid..end)?));
                }
            }
            d = end;
        }
        renumbers.push(renumber);
    }
    let merged = builder.finish_with(|sink| {
        // The inputs' dictionaries are sorted: merged as they stream (a tournament of
        // each input's next word), each word once with the postings of every input that
        // has it (no map of all the words).
        let mut words = Tournament::new(
            inputs
                .iter()
                .map(|c| c.dictionary.word_bytes().enumerate())
                .collect(),
        );
        let mut lists: [Vec<u32>; 3] = Default::default();
        while let Some(head) = words.peek() {
            for list in &mut lists {
                list.clear();
            }
            // Every input whose next word this is, in input order (the tournament orders
            // equal words by input): their docs were renumbered in that order.
            while let Some((k, ordinal)) = words.take_if(&head) {
                let contents = &inputs[k];
                let renumber = &renumbers[k];
                read_block(
                    contents.block(ordinal),
                    contents.words[ordinal].mask,
                    contents.trailer.docs,
                    &mut |field, doc| {
                        if let Some(new) = renumber[doc as usize] {
                            push_posting(&mut lists, field, new);
                        }
                    },
                )?;
            }
            sink.push(head.word, &lists);
        }
        Ok(())
    })?;
    Ok(Some(merged))
}

/// A word of an input's dictionary as a merge orders it: by its bytes. Most comparisons
/// are of the first eight bytes as one big-endian number (zero-padded: words hold no zero
/// byte, so a shorter word that is a prefix of another orders first, as bytes do); only
/// words longer than eight bytes that share those go on to compare the rest.
#[derive(Debug, Clone, Copy)]
struct Word<'a> {
    prefix: u64,
    word: &'a [u8],
    ordinal: usize,
}

impl<'a> Word<'a> {
    /// What an exhausted input's head is: after every word (words are UTF-8, which has
    /// no byte `0xFF`, so no word's prefix is all ones).
    const END: Word<'static> = Word {
        prefix: u64::MAX,
        word: &[],
        ordinal: 0,
    };

    fn new(next: Option<(usize, &'a [u8])>) -> Self {
        let Some((ordinal, word)) = next else {
            return Word::END;
        };
        let split = word.len().min(8);
        let mut prefix = [0u8; 8];
        prefix[..split].copy_from_slice(&word[..split]);
        Self {
            prefix: u64::from_be_bytes(prefix),
            word,
            ordinal,
        }
    }

    fn is_end(&self) -> bool {
        self.prefix == u64::MAX
    }

    fn cmp_word(&self, other: &Self) -> std::cmp::Ordering {
        match self.prefix.cmp(&other.prefix) {
            // Equal prefixes: the same first bytes, and if one word is shorter than
            // eight, the same word (the other's next byte would be zero).
            std::cmp::Ordering::Equal if self.word.len() >= 8 => {
                self.word[8..].cmp(&other.word[8.min(other.word.len())..])
            }
            order => order,
        }
    }
}

/// The k-way merge of sorted word streams: a tree of losers over each input's next word
/// (log₂ k comparisons per word read; equal words come out in input order).
struct Tournament<'a, I> {
    inputs: Vec<I>,
    heads: Vec<Word<'a>>,
    /// `[0]`: the input whose head is least; `[1..k]`: the loser of each inner node
    /// (node `n`'s children are `2n` and `2n + 1`, input `i` is leaf `k + i`).
    tree: Vec<usize>,
}

impl<'a, I: Iterator<Item = (usize, &'a [u8])>> Tournament<'a, I> {
    fn new(mut inputs: Vec<I>) -> Self {
        let heads = inputs.iter_mut().map(|i| Word::new(i.next())).collect();
        let mut tournament = Self {
            tree: vec![0; inputs.len().max(1)],
            inputs,
            heads,
        };
        if !tournament.inputs.is_empty() {
            tournament.tree[0] = tournament.play(1);
        }
        tournament
    }

    /// Whether input `a`'s head goes before input `b`'s.
    fn before(&self, a: usize, b: usize) -> bool {
        self.heads[a]
            .cmp_word(&self.heads[b])
            .then(a.cmp(&b))
            .is_lt()
    }

    /// The winner of the subtree at `node`, recording its inner nodes' losers.
    fn play(&mut self, node: usize) -> usize {
        let k = self.inputs.len();
        if node >= k {
            return node - k;
        }
        let (a, b) = (self.play(2 * node), self.play(2 * node + 1));
        let (winner, loser) = if self.before(a, b) { (a, b) } else { (b, a) };
        self.tree[node] = loser;
        winner
    }

    /// The least head.
    fn peek(&self) -> Option<Word<'a>> {
        self.heads
            .get(self.tree[0])
            .copied()
            .filter(|h| !h.is_end())
    }

    /// The input and ordinal of the least head if it is `word`'s word, advancing that
    /// input.
    fn take_if(&mut self, word: &Word<'a>) -> Option<(usize, usize)> {
        let k = self.tree[0];
        let head = self.peek().filter(|h| h.cmp_word(word).is_eq())?;
        self.heads[k] = Word::new(self.inputs[k].next());
        let mut winner = k;
        let mut node = (k + self.inputs.len()) / 2;
        while node > 0 {
            if self.before(self.tree[node], winner) {
                std::mem::swap(&mut self.tree[node], &mut winner);
            }
            node /= 2;
        }
        self.tree[0] = winner;
        Some((k, head.ordinal))
    }
}

/// Liveness lookups a merge makes between two yields to the executor (about a
/// millisecond's worth).
const LOOKUPS_PER_TURN: usize = 1024;

/// What a merge did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MergeOutcome {
    /// The inputs are replaced by this segment (`None`: every doc was dead, the inputs
    /// are dropped).
    Merged(Option<SegmentEntry>),
    /// Another writer merged or dropped one of the inputs first: nothing was committed
    /// (the merged segment was deleted).
    Lost,
}

/// Merges the live search segments `inputs` of `collection` into one and commits it in
/// their place (§3.5).
///
/// # Errors
/// As [`read_contents`], [`merge_contents`] and [`Collection::commit_segments`] (but
/// `Conflict`, which is [`MergeOutcome::Lost`]).
pub(crate) async fn merge_segments(
    collection: &mut Collection,
    inputs: &[SegmentEntry],
    live: &(dyn Fn(&EmailId) -> bool + Sync),
    page_class: u8,
) -> Result<MergeOutcome> {
    let pages = collection.search_pages();
    // Two read and opened at once (each off the executor), in order: the cores share the
    // decryption, and only two inputs' sealed bytes are held beside the parsed ones.
    let reads = inputs.iter().cloned().map(|entry| {
        let pages = pages.clone();
        async move { read_contents(&pages, &entry).await }
    });
    let contents: Vec<SegmentContents> = futures::stream::iter(reads)
        .buffered(2)
        .try_collect()
        .await?;
    // The merge takes up to hundreds of milliseconds (32 768 docs): off the executor,
    // with the emails gone looked up here (the caller's `live` reads its index), letting
    // other tasks run every `LOOKUPS_PER_TURN` lookups.
    let mut dead: HashSet<EmailId> = HashSet::new();
    let mut looked = 0;
    for c in &contents {
        for doc in &c.docs {
            if !live(&doc.email) {
                dead.insert(doc.email);
            }
            looked += 1;
            if looked % LOOKUPS_PER_TURN == 0 {
                tokio::task::yield_now().await;
            }
        }
    }
    let bytes = inputs.iter().map(|e| e.stored_len as usize).sum();
    let merged = crate::cpu::offload(bytes, move || {
        merge_contents(&contents, &|e| !dead.contains(e), page_class)
    })
    .await??;
    let entry = match merged {
        Some(plain) => Some(pages.put(plain).await?),
        None => None,
    };
    let covers: Vec<SegmentId> = inputs.iter().map(|e| e.id).collect();
    let add: Vec<SegmentEntry> = entry.iter().cloned().collect();
    match collection.commit_segments(add, covers, Batch::new()).await {
        Ok(_) => Ok(MergeOutcome::Merged(entry.and_then(|e| {
            collection.search_segments().find(|l| l.id == e.id).cloned()
        }))),
        Err(Error::Conflict { .. }) => {
            if let Some(e) = &entry {
                pages.delete(&e.id).await?;
            }
            Ok(MergeOutcome::Lost)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{Tournament, Word};

    /// Words of a small alphabet around the eight-byte prefix, so that many share it.
    fn word() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), Just(0xC3u8)], 0..12)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// Words compare as their bytes do, whatever their lengths around the prefix (`b`
        /// shares a start with `a`, so that the rest decides).
        #[test]
        fn words_compare_as_bytes(a in word(), cut in 0usize..12, tail in word()) {
            let b = [&a[..cut.min(a.len())], &tail[..]].concat();
            let (x, y) = (Word::new(Some((0, &a))), Word::new(Some((0, &b))));
            prop_assert_eq!(x.cmp_word(&y), a.cmp(&b));
            prop_assert!(Word::END.cmp_word(&x).is_gt());
        }

        /// The tournament yields every input's words in byte order, equal words in
        /// input order.
        #[test]
        fn tournament_merges_in_order(
            mut inputs in proptest::collection::vec(
                proptest::collection::vec(word().prop_filter("non-empty", |w| !w.is_empty()), 0..20),
                0..10,
            ),
        ) {
            for input in &mut inputs {
                input.sort();
                input.dedup();
            }
            let mut expected: Vec<(Vec<u8>, usize, usize)> = inputs
                .iter()
                .enumerate()
                .flat_map(|(k, words)| {
                    words.iter().enumerate().map(move |(o, w)| (w.clone(), k, o))
                })
                .collect();
            expected.sort();
            let mut tournament = Tournament::new(
                inputs
                    .iter()
                    .map(|words| words.iter().map(Vec::as_slice).enumerate())
                    .collect(),
            );
            let mut got = Vec::new();
            while let Some(head) = tournament.peek() {
                while let Some((k, o)) = tournament.take_if(&head) {
                    got.push((head.word.to_vec(), k, o));
                }
            }
            prop_assert_eq!(got, expected);
        }
    }
}
