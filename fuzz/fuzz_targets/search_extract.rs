//! The search text model (`mail::text`) over arbitrary bytes: extraction never panics,
//! keeps within its size bound, yields folded streams (fixed points of `fold`) whose
//! `header` is what the header block alone gives; folding is idempotent on any text; the
//! oracle finds a word of the body it extracted; `classify`'s within-word answers agree
//! with the words of the text.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailvault::mail::text::extract::{extract_header, extract_message, MAX_TEXT_LEN};
use mailvault::mail::text::fold::fold;
use mailvault::mail::text::oracle::{matches, TextKey};
use mailvault::mail::text::tokenize::{classify, words, Shape};
use mailvault::mail::Mailstore;

fuzz_target!(
    init: {
        // As in `mail_analysis`: the library catches mail-parser's debug assertions.
        drop(std::panic::take_hook());
    },
    |data: &[u8]| {
    // The first byte picks a parse limit, so the header-only path is reached too.
    let Some((&pick, raw)) = data.split_first() else { return };
    let limit = if pick & 1 == 0 { 64 << 20 } else { usize::from(pick) * 4 };
    let text = extract_message(raw, limit);
    assert!(text.len() <= MAX_TEXT_LEN);
    for stream in [&text.header, &text.body, &text.mime] {
        assert_eq!(&fold(stream), stream);
    }
    // The header block an email record keeps (what verification of header matches reads).
    if raw.len() <= limit {
        if let Some(block) = Mailstore::parse_message(raw).header_block {
            assert_eq!(extract_header(&block), text.header);
        }
    }
    if raw.len() > limit {
        assert!(!text.complete && text.body.is_empty() && text.mime.is_empty());
    }

    let lossy = String::from_utf8_lossy(raw);
    let folded = fold(&lossy);
    assert_eq!(fold(&folded), folded);

    if let Some(word) = words(&text.body).next() {
        assert!(matches(raw, &TextKey::Body(word.to_owned()), limit));
        assert!(matches(raw, &TextKey::Text(word.to_owned()), limit));
    }
    // A needle cut from the input itself: if it is within one word, some word has it.
    let needle: String = folded.chars().skip(3).take(4).collect();
    if classify(&needle) == Shape::WithinWord {
        assert_eq!(
            folded.contains(&needle),
            words(&folded).any(|w| w.contains(&needle)),
            "{needle:?}"
        );
    }
});
