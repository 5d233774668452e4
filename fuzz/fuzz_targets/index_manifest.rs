//! Index manifests: the parsers of untrusted manifest bytes, and opening a collection
//! whose stored manifest is the input.
//!
//! 1. `ManifestHeader::parse` on the input: whatever parses must serialise back to the
//!    first 32 bytes and leave the rest as the sealed body.
//! 2. `ManifestBody::parse` on the input and on the bytes after the 32-byte header (a
//!    decrypted body is untrusted too: a key holder may have written it): whatever parses
//!    must serialise back to the very bytes it came from and re-parse to an equal value.
//! 3. The input is stored as generation 1 of a real collection (fresh in-memory store
//!    holding the collection's one committed batch) and the collection is opened: it
//!    must fail as tampered (or unsupported version), except for the real manifest.
//!
//! Nothing may panic.
#![no_main]

#[path = "common/index_fixture.rs"]
mod index_fixture;

use index_fixture::FIXTURE;
use libfuzzer_sys::fuzz_target;
use mailvault::format::index::{ManifestBody, ManifestHeader, MANIFEST_HEADER_LEN};
use mailvault::Error;

fn check_body(bytes: &[u8]) {
    if let Ok(body) = ManifestBody::parse(bytes) {
        let again = body.to_bytes();
        assert_eq!(&again[..], bytes, "a manifest body does not round-trip");
        assert_eq!(ManifestBody::parse(&again).ok(), Some(body));
    }
}

fuzz_target!(|data: &[u8]| {
    // 1. The header.
    if let Ok((header, sealed)) = ManifestHeader::parse(data) {
        assert!(data.len() >= MANIFEST_HEADER_LEN);
        assert_eq!(&header.to_bytes()[..], &data[..MANIFEST_HEADER_LEN]);
        assert_eq!(sealed, &data[MANIFEST_HEADER_LEN..]);
        let bytes = header.to_bytes();
        let (again, rest) = ManifestHeader::parse(&bytes).expect("a serialised header parses");
        assert_eq!(again, header);
        assert!(rest.is_empty());
    }

    // 2. The body, whole input and after a header.
    check_body(data);
    if let Some(body) = data.get(MANIFEST_HEADER_LEN..) {
        check_body(body);
    }

    // 3. The real decrypt path.
    let fixture = &*FIXTURE;
    let real = fixture.manifest_bytes();
    match fixture.open_replaced(fixture.manifest, data) {
        Ok(collection) => {
            assert_eq!(data, &real[..], "a forged manifest opened");
            fixture.check_opened(&collection);
        }
        Err(Error::Tampered | Error::UnsupportedVersion { .. }) => {
            assert_ne!(data, &real[..], "the real manifest failed to open");
        }
        Err(e) => panic!("unexpected error opening a forged manifest: {e:?}"),
    }
});
