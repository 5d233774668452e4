//! Parsers of stored key material: a key slot, a keyring object (header and slots), and a
//! decrypted keyring body. Each must refuse or round-trip exactly, never panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailvault::format::keyring::{write_bound, KeyringBody, KeyringObject};
use mailvault::format::slot::KeySlot;

fuzz_target!(|data: &[u8]| {
    if let Ok(slot) = KeySlot::parse(data) {
        assert_eq!(&slot.to_bytes()[..], data);
    }
    if let Ok(keyring) = KeyringObject::parse(data) {
        let bound = write_bound(keyring.generation, &keyring.writer, &keyring.slots);
        assert_eq!(&bound[..], keyring.bound);
        assert_eq!(keyring.bound.len() + keyring.sealed_body.len(), data.len());
    }
    if let Ok(body) = KeyringBody::parse(data) {
        assert_eq!(&body.to_bytes()[..], data);
        assert_eq!(KeyringBody::parse(&body.to_bytes()).unwrap(), body);
    }
});
