//! Modified UTF-7 mailbox names (`mailvault-server`'s `mutf7`, hand-written): arbitrary
//! bytes as a name a client sends must decode or be refused without a panic; what decodes
//! is the canonical form (encoding it again gives the same bytes, so two spellings never
//! name one mailbox); and any UTF-8 name encodes to printable ASCII that decodes back.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailvault_server::mutf7;

fuzz_target!(|data: &[u8]| {
    if let Ok(name) = mutf7::decode(data) {
        assert_eq!(mutf7::encode(&name).as_bytes(), data);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let encoded = mutf7::encode(text);
        assert!(encoded.bytes().all(|b| (0x20..=0x7e).contains(&b)));
        assert_eq!(mutf7::decode(encoded.as_bytes()).as_deref(), Ok(text));
    }
});
