//! Search segments (issue 14): the clear header, the page plaintext, and every region
//! parser of the decrypted pages (trailer, doc and frame tables, the zstd dictionary, the
//! word table, every posting list, every text-store frame).
//!
//! Input: pages of 512-byte class as `u16 length ‖ payload` runs (the seeds in
//! `corpus/search_segment` are segments the tests build). Nothing may panic or allocate
//! beyond what the input justifies; whatever parses re-encodes to the same tables and
//! trailer, and every doc's text slices lie inside its decompressed frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailvault::format::search::{
    encode_page, page_payload, read_postings, Dictionary, SearchHeader, SegmentContents,
    PAGE_SEAL_OVERHEAD,
};

const CAPACITY: usize = (1 << 9) - PAGE_SEAL_OVERHEAD - 2;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = SearchHeader::parse(data) {
        assert_eq!(&header.to_bytes()[..], &data[..24]);
        let _ = header.pages(data.len() as u64);
    }
    if let Ok(payload) = page_payload(data, data.len().saturating_sub(2)) {
        assert_eq!(encode_page(payload, data.len() - 2), data);
    }
    let mut at = 0;
    let _ = read_postings(
        data,
        &mut at,
        (data.len() as u32).wrapping_mul(3) % 5000,
        &mut |_| {},
    );

    // Pages as length-prefixed runs.
    let mut pages: Vec<&[u8]> = Vec::new();
    let mut rest = data;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])) % (CAPACITY + 1);
        let len = len.min(rest.len() - 2);
        pages.push(&rest[2..2 + len]);
        rest = &rest[2 + len..];
    }
    let Ok(contents) = SegmentContents::parse(&pages, CAPACITY) else {
        return;
    };
    assert_eq!(
        contents.trailer.to_bytes(),
        *pages.last().expect("a trailer page")
    );
    let mut docs = Vec::new();
    for d in &contents.docs {
        d.put(&mut docs);
    }
    let mut frames = Vec::new();
    for f in &contents.frames {
        f.put(&mut frames);
    }
    let mut words = Vec::new();
    for w in &contents.words {
        w.put(&mut words);
    }
    let region = |r| {
        mailvault::format::search::region_bytes(&contents.trailer, r, &pages, CAPACITY)
            .expect("parsed")
    };
    use mailvault::format::search::Region;
    assert_eq!(docs, region(Region::Docs));
    assert_eq!(frames, region(Region::Frames));
    assert_eq!(words, region(Region::Words));
    // The dictionary's words, re-encoded, give the same dictionary.
    let list: Vec<&str> = (0..contents.dictionary.len())
        .map(|i| contents.dictionary.word(i))
        .collect();
    if !list.is_empty() {
        assert_eq!(
            Dictionary::encode(list.iter().copied()),
            contents.dictionary.as_bytes()
        );
        for w in &list {
            assert!(contents.dictionary.ordinal(w).is_some());
            let found = contents.dictionary.find(w.as_bytes());
            assert!(found.contains(&contents.dictionary.ordinal(w).expect("found")));
        }
    }
    for i in 0..contents.frames.len() {
        if let Ok(frame) = contents.frame(i) {
            for d in contents.docs.iter().filter(|d| d.frame as usize == i) {
                let end = d.offset as usize + d.body_len as usize + d.mime_len as usize;
                assert!(end <= frame.len());
            }
        }
    }
});
