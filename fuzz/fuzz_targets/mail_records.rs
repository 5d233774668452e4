//! Parsers of the mail records kept in the encrypted index (mailbox, message, email with
//! its envelope and MIME parts, analysis, vanished, thread, number). Each must refuse or
//! round-trip exactly, never panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailvault::format::mail::{
    number_to_bytes, parse_number, parse_thread, thread_to_bytes, EmailAnalysis, EmailRecord,
    MailboxRecord, MessageRecord, VanishedRecord,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = MailboxRecord::parse(data) {
        assert_eq!(record.to_bytes(), data);
    }
    if let Ok(record) = MessageRecord::parse(data) {
        assert_eq!(record.to_bytes(), data);
    }
    if let Ok(record) = EmailRecord::parse(data) {
        assert_eq!(record.to_bytes(), data);
        assert!(record.parts.iter().all(|p| p.end_offset <= record.size));
    }
    if let Ok(analysis) = EmailAnalysis::parse(data) {
        assert_eq!(analysis.to_bytes(), data);
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
