//! Parsers of the mail records kept in the encrypted index (mailbox, message, email with
//! its envelope and MIME parts, vanished, thread, release). Each must refuse or
//! round-trip exactly, never panic.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailvault::format::mail::{
    parse_release, parse_thread, parse_vanished, release_to_bytes, thread_to_bytes,
    vanished_to_bytes, EmailRecord, MailboxRecord, MessageRecord,
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
    if let Ok(modseq) = parse_vanished(data) {
        assert_eq!(&vanished_to_bytes(modseq)[..], data);
    }
    if let Ok(time) = parse_release(data) {
        assert_eq!(&release_to_bytes(time)[..], data);
    }
    if let Ok(thread) = parse_thread(data) {
        assert_eq!(&thread_to_bytes(&thread)[..], data);
    }
});
