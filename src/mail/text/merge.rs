//! Merging search segments (`docs/proposals/search.md` §3.5): several segments become one,
//! without the docs the caller's live set excludes (expunged emails) and with one doc per
//! email (the one of the latest segment), committed in place of its inputs.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

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
        // The inputs' dictionaries are sorted: merged as they stream (a heap of each
        // input's next word), each word once with the postings of every input that has
        // it (no map of all the words).
        let mut cursors: Vec<_> = inputs
            .iter()
            .map(|c| c.dictionary.word_bytes().enumerate())
            .collect();
        let mut heads: BinaryHeap<Reverse<(&[u8], usize, usize)>> = BinaryHeap::new();
        for (k, cursor) in cursors.iter_mut().enumerate() {
            if let Some((ordinal, word)) = cursor.next() {
                heads.push(Reverse((word, k, ordinal)));
            }
        }
        let mut lists: [Vec<u32>; 3] = Default::default();
        while let Some(Reverse((word, _, _))) = heads.peek().copied() {
            for list in &mut lists {
                list.clear();
            }
            // Every input whose next word this is, in input order (the heap orders equal
            // words by input): their docs were renumbered in that order.
            while let Some(Reverse((_, k, ordinal))) =
                heads.peek().copied().filter(|Reverse((w, ..))| *w == word)
            {
                heads.pop();
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
                if let Some((ordinal, next)) = cursors[k].next() {
                    heads.push(Reverse((next, k, ordinal)));
                }
            }
            sink.push(word, &lists);
        }
        Ok(())
    })?;
    Ok(Some(merged))
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
