//! Parsers of stored key material: a key slot, a keyring object (header and slots), a
//! decrypted keyring body, an armored key export, a companion's device key file and a
//! device enrollment. Each must refuse or round-trip exactly, never panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailvault::engine::DeviceEnrollment;
use mailvault::format::keyring::{write_bound, KeyringBody, KeyringObject};
use mailvault::format::slot::KeySlot;
use mailvault::keys::{DeviceKeyFile, KeyExport};

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
        if let Ok(file) = DeviceKeyFile::parse(text) {
            assert_eq!(DeviceKeyFile::parse(&file.to_armored()).unwrap(), file);
        }
        if let Ok(enrollment) = DeviceEnrollment::parse(text) {
            let armored = enrollment.to_armored();
            let again = DeviceEnrollment::parse(&armored).unwrap();
            assert_eq!(*again.to_armored(), *armored);
            assert_eq!(again.delivery_keys, enrollment.delivery_keys);
        }
    }
    if let Ok(body) = KeyringBody::parse(data) {
        assert_eq!(&body.to_bytes()[..], data);
        assert_eq!(KeyringBody::parse(&body.to_bytes()).unwrap(), body);
    }
});
