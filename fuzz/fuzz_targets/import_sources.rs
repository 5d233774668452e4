//! What `mailvault import` reads from elsewhere: an mbox file (`migrate::MboxReader`,
//! mboxrd `From ` lines, `Status`/`X-Status`/`X-Keywords`) and an IMAP server's responses
//! (`imap_source::read_responses`: lines, literals, tokens). Arbitrary bytes as either:
//! nothing may panic, and nothing is allocated beyond what the input holds (a literal's
//! announced length is not reserved up front).

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailvault_server::imap_source::read_responses;
use mailvault_server::migrate::MboxReader;

fuzz_target!(|data: &[u8]| {
    let _ = read_responses(data);
    let mut mbox = MboxReader::new(std::io::Cursor::new(data), "INBOX", "fuzz.mbox");
    // Each message consumes input: at most one per byte.
    for _ in 0..=data.len() {
        match mbox.next_message() {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
});
