//! The message analysis (`Mailstore::parse_message`: what an append and a deliverer
//! compute from a message: envelope with groups and fields as written, MIME parts with
//! their `BODYSTRUCTURE` data, header block, preview) over arbitrary bytes: it never
//! panics, its offsets stay within the message, its header block is the message's start,
//! and its record round-trips.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailvault::format::mail::{EmailAnalysis, MAX_HEADER_BLOCK_LEN, MAX_PREVIEW_CHARS};
use mailvault::mail::Mailstore;

fuzz_target!(
    init: {
        // mail-parser has a `debug_assert!` that malformed mail reaches (message.rs,
        // "Invalid part ID"); the library catches mail-parser's panics and treats the
        // message as one it cannot parse. libfuzzer-sys's panic hook aborts before any
        // unwinding, which would report that caught panic as a crash: the default hook
        // lets the library's `catch_unwind` work, and a panic that escapes the target
        // still aborts (libfuzzer-sys catches it and aborts).
        drop(std::panic::take_hook());
    },
    |data: &[u8]| {
    let analysis = Mailstore::parse_message(data);
    for (i, part) in analysis.parts.iter().enumerate() {
        assert!(part.header_offset <= part.body_offset);
        assert!(part.body_offset <= part.end_offset);
        assert!(part.end_offset <= data.len() as u64);
        assert!(part.parent.map_or(i == 0, |p| (p as usize) < i));
        if let Some(size) = part.decoded_size {
            assert!(size <= part.body_len());
        }
    }
    if let Some(header) = &analysis.header_block {
        assert!(header.len() <= MAX_HEADER_BLOCK_LEN);
        assert!(data.starts_with(header));
    }
    if let Some(preview) = &analysis.preview {
        assert!(!preview.is_empty() && preview.chars().count() <= MAX_PREVIEW_CHARS);
        assert!(!preview.contains("  ") && preview.trim() == preview);
    }
    let bytes = analysis.to_bytes();
    assert_eq!(EmailAnalysis::parse(&bytes).unwrap(), analysis);
    }
);
