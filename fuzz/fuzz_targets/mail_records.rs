//! Parsers of the mail records kept in the encrypted index (mailbox, message, email with
//! its envelope and MIME parts or the location of its details, details, analysis,
//! vanished, thread, number). Each must refuse or round-trip exactly, never panic. Email
//! records of versions 1 to 4 are rewritten as version 5 (versions 1 and 2 with a
//! creation modseq of 0), analysis records of version 1 as version 2: those round-trip
//! through their rewritten form.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailvault::format::mail::{
    number_to_bytes, parse_number, parse_thread, thread_to_bytes, AddressField, AddressItem,
    EmailAnalysis, EmailDetails, EmailRecord, MailboxRecord, MessageRecord, VanishedRecord,
    ANALYSIS_RECORD_VERSION, EMAIL_RECORD_VERSION,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = MailboxRecord::parse(data) {
        assert_eq!(record.to_bytes(), data);
    }
    if let Ok(record) = MessageRecord::parse(data) {
        assert_eq!(record.to_bytes(), data);
    }
    if let Ok(record) = EmailRecord::parse(data) {
        let bytes = record.to_bytes();
        if data[0] == EMAIL_RECORD_VERSION {
            assert_eq!(bytes, data);
        } else {
            if data[0] < 3 {
                assert_eq!(record.created_modseq, 0);
            }
            assert_eq!(EmailRecord::parse(&bytes).unwrap(), record);
        }
        assert!(record.parts.iter().all(|p| p.end_offset <= record.size));
        if record.stored_details.is_some() {
            assert!(record.details().is_empty());
        }
        for field in AddressField::ALL {
            let items = record.envelope.address_items(field);
            let mailboxes = items
                .iter()
                .filter(|i| matches!(i, AddressItem::Mailbox(_)))
                .count();
            assert_eq!(mailboxes, record.envelope.addresses(field).len());
        }
    }
    if let Ok(details) = EmailDetails::parse(data, u64::MAX) {
        assert_eq!(details.to_bytes(), data);
    }
    if let Ok(analysis) = EmailAnalysis::parse(data) {
        let bytes = analysis.to_bytes();
        if data[0] == ANALYSIS_RECORD_VERSION {
            assert_eq!(bytes, data);
        } else {
            assert_eq!(EmailAnalysis::parse(&bytes).unwrap(), analysis);
        }
    }
    if let Ok(record) = VanishedRecord::parse(data) {
        assert_eq!(&record.to_bytes()[..], data);
    }
    if let Ok(value) = parse_number(data) {
        assert_eq!(&number_to_bytes(value)[..], data);
    }
    if let Ok(thread) = parse_thread(data) {
        assert_eq!(&thread_to_bytes(&thread)[..], data);
    }
});
