//! Email details stored apart (email records of version 4 on, `docs/design.md` §11.2): after
//! `Mailstore::compact` the records a session keeps in memory no longer hold the MIME
//! parts, header blocks and previews; `Mailstore::with_details` reads them back equal,
//! with the request count the design states, and every reader of them (part fetches,
//! text search's header verification) answers as before.

use std::collections::HashSet;
use std::sync::Arc;

use mailvault::ids::EmailId;
use mailvault::mail::text::oracle::TextKey;
use mailvault::mail::{AppendOptions, EmailRecord, Mailstore, PartSection, INBOX};
use mailvault::storage::{CommitMode, CountingStore, DynStore};

use super::mail::{corpus, with_attachment, MailSetup};

/// The corpus and a message with a 200 KB attachment, appended; their email ids in order.
async fn appended(mail: &mut Mailstore) -> Vec<EmailId> {
    let inbox = mail.mailbox_by_name(INBOX).unwrap().id;
    let mut messages: Vec<Vec<u8>> = corpus().into_iter().map(|(_, m)| m).collect();
    messages.push(with_attachment(200_000));
    for m in &messages {
        mail.append(inbox, m, AppendOptions::default())
            .await
            .unwrap();
    }
    let view = mail.select(inbox).await.unwrap();
    view.messages.iter().map(|m| m.email).collect()
}

fn email_bytes(mail: &Mailstore) -> u64 {
    mail.index_usage()
        .iter()
        .find(|u| u.kind == b'E')
        .map_or(0, |u| u.value_bytes)
}

#[tokio::test]
async fn details_stored_apart_read_back_equal_with_one_ranged_get() {
    let counting = CountingStore::new(super::memory());
    let store: DynStore = Arc::new(counting.clone());
    let setup = MailSetup::new(store.clone(), CommitMode::CompareAndSwap);
    let mut mail = setup.open().await;
    let emails = appended(&mut mail).await;
    let before: Vec<EmailRecord> = emails
        .iter()
        .map(|e| mail.email_by_id(*e).unwrap())
        .collect();
    assert!(before.iter().all(|r| r.stored_details.is_none()));
    let inline_bytes = email_bytes(&mail);

    mail.compact().await.unwrap();
    let after_bytes = email_bytes(&mail);
    // The details were most of the records (75% on this corpus).
    assert!(
        after_bytes * 2 < inline_bytes,
        "email records {inline_bytes} B → {after_bytes} B"
    );

    // A fresh handle: what a session loads.
    let mail = setup.open().await;
    let mut apart = 0;
    for (email, was) in emails.iter().zip(&before) {
        let light = mail.email_by_id(*email).unwrap();
        assert_eq!(light.envelope, was.envelope);
        assert_eq!((light.pin, light.size), (was.pin, was.size));
        if was.details().is_empty() {
            assert!(light.stored_details.is_none());
            continue;
        }
        apart += 1;
        assert!(light.stored_details.is_some() && light.details().is_empty());
        assert_eq!(&mail.with_details(light).await.unwrap(), was);
    }
    assert_eq!(apart, emails.len(), "every email of the corpus has details");

    // Cold cache: one ranged GET for the first email's details (and the pages after
    // it, read ahead); the next email's are in those pages.
    let mail = setup.open().await;
    counting.reset();
    let first = mail.email_by_id(emails[0]).unwrap();
    mail.with_details(first).await.unwrap();
    let gets = counting.requests().len();
    assert_eq!(gets, 1, "{:?}", counting.requests());
    let second = mail.email_by_id(emails[1]).unwrap();
    mail.with_details(second).await.unwrap();
    assert_eq!(counting.requests().len(), gets, "read ahead");

    // A part fetch on the record as the index keeps it reads its details first.
    let big = mail.email_by_id(*emails.last().unwrap()).unwrap();
    assert!(big.parts.is_empty());
    let loaded = mail.with_details(big.clone()).await.unwrap();
    let part = Mailstore::imap_section(&loaded, &[2]).expect("BODY[2]");
    let body = mail.read_part(&big, part, PartSection::Body).await.unwrap();
    assert_eq!(
        body,
        mail.read_part(&loaded, part, PartSection::Body)
            .await
            .unwrap()
    );
    assert!(body.len() > 200_000);
}

#[tokio::test]
async fn text_search_with_details_apart_answers_as_with_details_inline() {
    let setup = MailSetup::new(super::memory(), CommitMode::CompareAndSwap);
    let mut mail = setup.open().await;
    let emails = appended(&mut mail).await;
    // Header keys (verified on every header block), phrases spanning a separator (their
    // header candidates verified on the header block), words.
    let keys = vec![
        TextKey::subject("test"),
        TextKey::Header("Content-Type".into(), "multipart".into()),
        TextKey::Header("X-Mailer".into(), "e".into()),
        TextKey::Text("example.org".into()),
        TextKey::Text("the".into()),
        TextKey::Body("of the".into()),
    ];
    let inline = super::search::search_sets(&mail, &emails, &keys).await;
    // A header key and a phrase key with header candidates match something: the
    // comparison below is not one of empty sets.
    assert!(
        !inline[1].is_empty() && !inline[3].is_empty(),
        "{:?}",
        inline.iter().map(HashSet::len).collect::<Vec<_>>()
    );
    mail.compact().await.unwrap();
    let mail = setup.open().await;
    assert!(mail
        .email_by_id(emails[0])
        .unwrap()
        .stored_details
        .is_some());
    let apart = super::search::search_sets(&mail, &emails, &keys).await;
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(apart[i], inline[i], "{key:?}");
    }
}
