//! What an IMAP server needs for FETCH ENVELOPE and BODYSTRUCTURE of a message nested in
//! a `message/rfc822` part (issue 13): the nested message's header, read by part, gives
//! its envelope (`Mailstore::header_envelope`), as the analysis keeps only the outer one.

use mailvault::mail::{AppendOptions, Mailstore, PartSection, INBOX};
use mailvault::storage::CommitMode;

use super::mail::MailSetup;

#[tokio::test]
async fn fetch_envelope_of_a_nested_message() {
    let setup = MailSetup::new(super::memory(), CommitMode::CompareAndSwap);
    let mut mail = setup.open().await;
    let inbox = mail.mailbox_by_name(INBOX).unwrap().id;
    let raw = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/corpus/mail-parser/rfc/002.eml"
    ))
    .unwrap();
    let appended = mail
        .append(inbox, &raw, AppendOptions::default())
        .await
        .unwrap();
    let email = mail.email(inbox, appended.uid).unwrap();
    assert_eq!(
        email.envelope.subject.as_deref(),
        Some("[Fwd: Map of Argentina with Description]")
    );
    // Part 2 is the message/rfc822 part; the nested message's root is its child.
    let part = Mailstore::imap_section(&email, &[2]).unwrap();
    assert_eq!(email.parts[part].content_type, "message");
    let root = (0..email.parts.len())
        .find(|&i| email.parts[i].parent == Some(part as u32))
        .expect("the nested message is listed");
    let header = mail
        .read_part(&email, root, PartSection::Header)
        .await
        .unwrap();
    let nested = Mailstore::header_envelope(&header);
    assert_eq!(
        nested.subject.as_deref(),
        Some("Map of Argentina with Description")
    );
    assert_eq!(nested.from[0].email, "president@whitehouse.gov");
    assert_eq!(nested.from[0].name.as_deref(), Some("Bill Clinton"));
    assert_eq!(
        nested.message_id.as_deref(),
        Some("199804130742.RAA20366@mai1host.whitehouse.gov")
    );
    // Not a header at all: an empty envelope, no panic.
    assert_eq!(
        Mailstore::header_envelope(b"\xff\xfe garbage"),
        mailvault::mail::Envelope::default()
    );
}
