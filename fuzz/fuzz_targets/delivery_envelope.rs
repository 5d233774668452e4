//! Parsers of a pending delivery: the envelope object (delivery and blob ids, the body's
//! sealed header, delivery number, sealed body, signature) and the opened envelope body (stored length and
//! digest, mailbox, date, flags, from version 4 the message's analysis, from version 5 its
//! searchable text, from version 6 zero padding to a Padmé length).
//! Neither may panic; what parses must describe its input exactly.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailvault::format::delivery::{
    DeliveryEnvelope, EnvelopeObject, ENVELOPE_BODY_VERSION, ENVELOPE_PREFIX_LEN, MAX_ENVELOPE_LEN,
    MAX_ENVELOPE_TEXT_LEN, SIGNATURE_LEN,
};
use mailvault::format::search::padme;

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
        assert_eq!(
            DeliveryEnvelope::parse(&written).expect("what it writes parses"),
            envelope
        );
        // Padded: the sealed body (nonce and tag added) is a Padmé length, or at least the
        // most an envelope holds (never padded past it).
        let most = MAX_ENVELOPE_LEN - ENVELOPE_PREFIX_LEN - SIGNATURE_LEN - 40;
        let sealed = written.len() as u64 + 40;
        assert!(
            padme(sealed) == sealed || written.len() >= most,
            "{}",
            written.len()
        );
        // The input's fields, then zeros: a body of an older version gains the absent
        // items (zero bytes) and the padding; one of this version differs at most in how
        // many zeros pad it.
        assert!(
            (3..=ENVELOPE_BODY_VERSION).contains(&data[0]),
            "version {} parsed",
            data[0]
        );
        let (short, long) = if written.len() <= data.len() {
            (&written[1..], &data[1..])
        } else {
            (&data[1..], &written[1..])
        };
        assert_eq!(&long[..short.len()], short);
        assert!(long[short.len()..].iter().all(|&b| b == 0));
        if data[0] < ENVELOPE_BODY_VERSION {
            assert!(written.len() >= data.len(), "older bodies only gain bytes");
        }
    }
});
