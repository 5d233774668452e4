//! Issue 12 (mail backend API), item 5: typed errors a server maps to protocol responses
//! without matching strings (`NO [TRYCREATE]`, `[ALREADYEXISTS]`, `[NONEXISTENT]`,
//! `[LIMIT]`), and `Error::is_transient` for retry decisions.

use mailvault::mail::{AppendOptions, PartSection, INBOX};
use mailvault::storage::CommitMode;
use mailvault::Error;

use super::mail::MailSetup;

const MESSAGE: &[u8] = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: hi\r\n\
MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nhello\r\n";

#[tokio::test]
async fn item_05_mailbox_and_message_errors_are_typed() {
    let setup = MailSetup::new(super::memory(), CommitMode::CompareAndSwap);
    let mut mail = setup.open().await;
    let inbox = mail.mailbox_by_name(INBOX).unwrap().id;
    let work = mail.create_mailbox("Work", None).await.unwrap();
    mail.create_mailbox("Old", None).await.unwrap();

    // A name taken: by creation and by rename.
    let again = mail.create_mailbox("Work", None).await;
    assert!(
        matches!(&again, Err(Error::MailboxExists { name }) if name == "Work"),
        "{again:?}"
    );
    let renamed = mail.rename_mailbox(work.id, "Old").await;
    assert!(
        matches!(&renamed, Err(Error::MailboxExists { name }) if name == "Old"),
        "{renamed:?}"
    );

    // A mailbox gone: every operation that names it.
    mail.delete_mailbox(work.id).await.unwrap();
    let gone = |r: &Result<(), Error>| matches!(r, Err(Error::NoSuchMailbox { .. }));
    assert!(gone(&mail.select(work.id).await.map(|_| ())));
    assert!(gone(&mail.status(work.id).map(|_| ())));
    assert!(gone(
        &mail
            .append(work.id, MESSAGE, AppendOptions::default())
            .await
            .map(|_| ())
    ));
    let appended = mail
        .append(inbox, MESSAGE, AppendOptions::default())
        .await
        .unwrap();
    assert!(gone(
        &mail.copy(inbox, &[appended.uid], work.id).await.map(|_| ())
    ));

    // A message, an email or a part that is not there.
    let missing = mail.email(inbox, appended.uid + 100);
    assert!(
        matches!(&missing, Err(Error::NoSuchMessage { what }) if what.contains("UID")),
        "{missing:?}"
    );
    let email = mail.email(inbox, appended.uid).unwrap();
    let part = mail.read_part(&email, 99, PartSection::Body).await;
    assert!(
        matches!(&part, Err(Error::NoSuchMessage { what }) if what.contains("part")),
        "{part:?}"
    );
    // None of these is worth retrying as it is.
    for e in [
        again.map(|_| ()),
        renamed,
        missing.map(|_| ()),
        part.map(|_| ()),
    ] {
        assert!(!e.unwrap_err().is_transient());
    }
}

#[test]
fn item_05_transient_errors_are_those_a_retry_can_cure() {
    let backend = Error::from(object_store::Error::Generic {
        store: "S3",
        source: "connection reset".into(),
    });
    assert!(matches!(backend, Error::Backend { .. }));
    assert!(backend.is_transient());
    assert!(Error::Conflict { path: "x".into() }.is_transient());
    assert!(Error::Moved.is_transient());
    for permanent in [
        Error::Tampered,
        Error::WrongCredential,
        Error::NotFound { path: "x".into() },
        Error::NoSuchMailbox {
            mailbox: "x".into(),
        },
        Error::MailboxExists { name: "x".into() },
        Error::NoSuchMessage { what: "x".into() },
        Error::LimitReached("x".into()),
        Error::Rollback { seen: 2, found: 1 },
        Error::InvalidArgument("x".into()),
    ] {
        assert!(!permanent.is_transient(), "{permanent:?}");
    }
}
