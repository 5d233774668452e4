//! Parsers of stored key material: a key slot, a keyring object (header and slots), a
//! decrypted keyring body, and an armored key export. Each must refuse or round-trip exactly, never panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailvault::format::keyring::{write_bound, KeyringBody, KeyringObject};
use mailvault::format::slot::KeySlot;
use mailvault::keys::KeyExport;

fuzz_target!(|data: &[u8]| {
    if let Ok(slot) = KeySlot::parse(data) {
        assert_eq!(&slot.to_bytes()[..], data);
    }
    if let Ok(keyring) = KeyringObject::parse(data) {
        let bound = write_bound(
            keyring.generation,
            &keyring.writer,
            &keyring.slots,
            &keyring.stanzas,
        );
        assert_eq!(&bound[..], keyring.bound);
        assert_eq!(keyring.bound.len() + keyring.sealed_body.len(), data.len());
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(export) = KeyExport::parse(text) {
            assert_eq!(KeyExport::parse(&export.to_armored()).unwrap(), export);
        }
    }
    if let Ok(body) = KeyringBody::parse(data) {
        assert_eq!(&body.to_bytes()[..], data);
        assert_eq!(KeyringBody::parse(&body.to_bytes()).unwrap(), body);
    }
});
