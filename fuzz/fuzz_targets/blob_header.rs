//! Parsers of untrusted bytes: the blob header (symmetric and sealed) and the blob pin
//! (versions 1 and 3).
//!
//! Neither may panic, and whatever parses must serialise back to the very bytes it was
//! parsed from (the header from the first 76 bytes of its input, the pin from all of it):
//! a format with two encodings of one value would let a pin and a stored header disagree
//! while comparing equal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailvault::format::blob::{SealedHeader, HEADER_LEN, SEALED_HEADER_LEN};
use mailvault::format::pin::{PIN_LEN, SEALED_PIN_LEN};
use mailvault::format::{BlobHeader, BlobLayout, BlobPin};

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = BlobHeader::parse(data) {
        assert!(data.len() >= HEADER_LEN);
        assert_eq!(&header.to_bytes()[..], &data[..HEADER_LEN]);
        assert_eq!(&header.committed_prefix()[..], &data[..44]);
        assert_eq!(BlobHeader::parse(&header.to_bytes()).ok(), Some(header));
    }

    if let Ok(header) = SealedHeader::parse(data) {
        assert!(data.len() >= SEALED_HEADER_LEN);
        assert_eq!(&header.to_bytes()[..], &data[..SEALED_HEADER_LEN]);
        assert_eq!(SealedHeader::parse(&header.to_bytes()).ok(), Some(header));
    }

    if let Ok(pin) = BlobPin::parse(data) {
        let sealed = pin.sealed_key().is_some();
        assert_eq!(data.len(), if sealed { SEALED_PIN_LEN } else { PIN_LEN });
        assert_eq!(&pin.to_bytes()[..], data);
        assert_eq!(BlobPin::parse(&pin.to_bytes()).ok(), Some(pin));
        // The stored length has exactly one parse, and it agrees with the plaintext
        // length both ways.
        let layout = pin.layout();
        let header_len = if sealed {
            SEALED_HEADER_LEN
        } else {
            HEADER_LEN
        };
        assert_eq!(
            BlobLayout::with_header(header_len, pin.len()).ok(),
            Some(layout),
            "pin length {} does not round-trip",
            pin.stored_len()
        );
        assert_eq!(
            BlobLayout::for_ciphertext_with_header(header_len, pin.stored_len()).ok(),
            Some(layout)
        );
    }
});
