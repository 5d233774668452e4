//! Parsers of a pending delivery: the envelope object (delivery and blob ids, the body's
//! sealed header, delivery number, sealed body, signature) and the opened envelope body (stored length and
//! digest, mailbox, date, flags, from version 4 the message's analysis, from version 5 its
//! searchable text).
//! Neither may panic; what parses must describe its input exactly.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailvault::format::delivery::{
    DeliveryEnvelope, EnvelopeObject, ENVELOPE_BODY_VERSION, ENVELOPE_PREFIX_LEN,
    MAX_ENVELOPE_TEXT_LEN, SIGNATURE_LEN,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(object) = EnvelopeObject::parse(data) {
        assert_eq!(
            object.signed.len() + SIGNATURE_LEN,
            data.len(),
            "the signature is the last 64 bytes"
        );
        assert_eq!(
            object.sealed_body.len() + ENVELOPE_PREFIX_LEN,
            object.signed.len()
        );
        let prefix = EnvelopeObject::prefix(
            &object.delivery,
            &object.blob,
            &object.header,
            object.number,
            object.sealed_body.len(),
        );
        assert_eq!(&prefix[..], &data[..ENVELOPE_PREFIX_LEN]);
        assert_eq!(
            object.number.to_be_bytes(),
            data[280..288],
            "the delivery number"
        );
    }
    if let Ok(envelope) = DeliveryEnvelope::parse(data) {
        let written = envelope.to_bytes();
        if let Some(text) = &envelope.text {
            assert!(text.len() <= MAX_ENVELOPE_TEXT_LEN, "the text is bounded");
        }
        assert_eq!(written[0], ENVELOPE_BODY_VERSION);
        match data[0] {
            ENVELOPE_BODY_VERSION => assert_eq!(written, data),
            4 => {
                // A version-4 body (no text) is written as version 5 without one.
                assert_eq!(envelope.text, None);
                assert_eq!(&written[1..written.len() - 1], &data[1..]);
                assert_eq!(written.last(), Some(&0));
            }
            3 => {
                // A version-3 body (no analysis, no text): both absent.
                assert_eq!(envelope.analysis, None);
                assert_eq!(envelope.text, None);
                assert_eq!(&written[1..written.len() - 2], &data[1..]);
                assert_eq!(&written[written.len() - 2..], &[0, 0]);
            }
            version => panic!("version {version} parsed"),
        }
    }
});
