//! Index segments: the parsers of untrusted segment bytes and page plaintexts, and
//! opening a collection whose stored segment is the input.
//!
//! 1. `SegmentHeader::parse` on the input: whatever parses must serialise back (header,
//!    then each sealed page behind its length) to the very input.
//! 2. `parse_page` on the input as a page of either kind, without and with an `after` key
//!    (the last byte of the input gives the length of a slice of the input taken as that
//!    key): whatever parses must re-encode with `encode_record` to the very input, with
//!    keys strictly increasing (and above `after`), stamps exactly on compacted records;
//!    a bound only removes pages from the accepted set, never changes their records.
//! 3. The input replaces the stored segment of a real collection (one committed batch,
//!    fresh in-memory store), which is then opened, reading the segment whole and by
//!    ranges of a few bytes (`IndexConfig::fetch_piece`): the manifest pins the
//!    segment's length and SHA-256, so anything but the real segment must fail as
//!    tampered.
//!
//! Nothing may panic.
#![no_main]

#[path = "common/index_fixture.rs"]
mod index_fixture;

use bytes::Bytes;
use index_fixture::FIXTURE;
use libfuzzer_sys::fuzz_target;
use mailvault::format::index::{
    encode_record, parse_page, Record, SegmentHeader, SegmentKind, SEGMENT_HEADER_LEN,
};
use mailvault::index::IndexConfig;
use mailvault::Error;

fn check_header(data: &[u8]) {
    let Ok((header, pages)) = SegmentHeader::parse(data) else {
        return;
    };
    assert!(data.len() >= SEGMENT_HEADER_LEN);
    assert_eq!(pages.len(), header.pages as usize);
    let mut again = header.to_bytes().to_vec();
    for page in &pages {
        again.extend_from_slice(&(page.len() as u32).to_be_bytes());
        again.extend_from_slice(page);
    }
    assert_eq!(&again[..], data, "a segment does not round-trip");
    let (reparsed, repages) = SegmentHeader::parse(&again).expect("a serialised segment parses");
    assert_eq!(reparsed, header);
    assert_eq!(repages, pages);
}

fn parse(kind: SegmentKind, page: &Bytes, after: Option<&[u8]>) -> Option<Vec<Record>> {
    let mut records = Vec::new();
    parse_page(kind, page, after, &mut records).ok()?;

    let mut again = Vec::with_capacity(page.len());
    for record in &records {
        assert_eq!(
            record.stamp.is_some(),
            kind == SegmentKind::Compacted,
            "stamp presence does not follow the kind"
        );
        encode_record(kind, record, &mut again);
    }
    assert_eq!(&again[..], &page[..], "a page does not round-trip");
    for pair in records.windows(2) {
        assert!(pair[0].key < pair[1].key, "keys do not increase strictly");
    }
    if let (Some(after), Some(first)) = (after, records.first()) {
        assert!(&first.key[..] > after, "a key is not above the bound");
    }
    Some(records)
}

fn check_page(kind: SegmentKind, page: &Bytes) {
    let unbounded = parse(kind, page, None);

    // A bound taken from the input.
    if let Some(&n) = page.last() {
        let end = page.len() - 1;
        let after = &page[end - usize::from(n).min(end)..end];
        if let Some(bounded) = parse(kind, page, Some(after)) {
            assert_eq!(
                unbounded.as_ref(),
                Some(&bounded),
                "a bound changed the records of a page"
            );
        }
    }

    // Bounds taken from the records: the first key itself must be refused, anything just
    // below it accepted.
    if let Some(first) = unbounded.as_ref().and_then(|r| r.first()) {
        assert!(
            parse(kind, page, Some(&first.key[..])).is_none(),
            "a page accepted a key equal to its bound"
        );
        if let Some((_, below)) = first.key.split_last() {
            assert_eq!(parse(kind, page, Some(below)), unbounded);
        }
        assert_eq!(
            parse(kind, page, Some(b"")).is_some(),
            !first.key.is_empty()
        );
    }
}

fuzz_target!(|data: &[u8]| {
    // 1. The segment header and page framing.
    check_header(data);

    // 2. The input as a page plaintext of either kind.
    let page = Bytes::copy_from_slice(data);
    check_page(SegmentKind::Batch, &page);
    check_page(SegmentKind::Compacted, &page);

    // 3. The real open path: the segment read whole, and read by ranges of a size taken
    //    from the input (split anywhere: in the header, a length prefix, a page).
    let fixture = &*FIXTURE;
    let real = fixture.segment_bytes();
    let piece = 1 + data.first().map_or(0, |&b| u64::from(b) % 97);
    for config in [
        IndexConfig::default(),
        IndexConfig {
            fetch_piece: piece,
            ..IndexConfig::default()
        },
    ] {
        match fixture.open_replaced_with(fixture.segment, data, config) {
            Ok(collection) => {
                assert_eq!(data, &real[..], "a forged segment opened");
                fixture.check_opened(&collection);
            }
            Err(Error::Tampered) => {
                assert_ne!(data, &real[..], "the real segment failed to open")
            }
            Err(e) => panic!("unexpected error opening a forged segment: {e:?}"),
        }
    }
});
