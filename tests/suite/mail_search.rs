//! Issue 12 (mail backend API), item 4: `Mailstore::search` over metadata, every RFC 9051
//! SEARCH key but the text ones (flags and keywords, internal and sent dates, sizes, UID
//! and sequence sets, header fields of the envelope, MODSEQ, NOT, OR, lists), through the
//! public API.

use mailvault::mail::{
    AppendOptions, FlagChange, Flags, HeaderField, Mailstore, SearchDay, SearchKey, INBOX,
};
use mailvault::storage::CommitMode;
use mailvault::Error;

use super::mail::MailSetup;

fn day(y: i32, m: u32, d: u32) -> SearchDay {
    SearchDay::from_ymd(y, m, d).unwrap()
}

/// Unix seconds of `y-m-d` at `h` o'clock UTC.
fn at(y: i32, m: u32, d: u32, h: i64) -> i64 {
    day(y, m, d).days() * 86_400 + h * 3600
}

/// Four messages: (UID 1) from Alice, 1 March 2024, \Seen; (2) from Bob to Carol, cc
/// Dave, 2 March, \Flagged \Answered and keyword $Work, larger; (3) a draft without
/// Date or From, 3 March; (4) \Deleted, 10 March, sent the day before.
async fn mailbox() -> (Mailstore, mailvault::ids::MailboxId, MailSetup) {
    let setup = MailSetup::new(super::memory(), CommitMode::CompareAndSwap);
    let mut mail = setup.open().await;
    let inbox = mail.mailbox_by_name(INBOX).unwrap().id;
    let messages: [(String, i64, &[&str]); 4] = [
        (
            "From: Alice Example <alice@example.org>\r\nTo: bob@example.org\r\n\
             Date: Fri, 1 Mar 2024 09:00:00 +0000\r\nSubject: Lunch on Friday\r\n\
             Message-ID: <lunch@example.org>\r\n\r\nAt noon.\r\n"
                .into(),
            at(2024, 3, 1, 10),
            &["\\Seen"],
        ),
        (
            format!(
                "From: \"Bob B.\" <bob@example.org>\r\nTo: Carol <carol@example.net>\r\n\
                 Cc: dave@example.com\r\nDate: Sat, 2 Mar 2024 11:00:00 +0000\r\n\
                 Subject: Re: Lunch on Friday\r\nIn-Reply-To: <lunch@example.org>\r\n\r\n{}\r\n",
                "long line ".repeat(200)
            ),
            at(2024, 3, 2, 12),
            &["\\Flagged", "\\Answered", "$Work"],
        ),
        (
            "Subject: draft\r\n\r\nnot yet\r\n".into(),
            at(2024, 3, 3, 23),
            &["\\Draft"],
        ),
        (
            "From: eve@example.com\r\nTo: alice@example.org\r\n\
             Date: Sat, 9 Mar 2024 08:00:00 +0000\r\nSubject: ünïcode Straße\r\n\r\nx\r\n"
                .into(),
            at(2024, 3, 10, 0),
            &["\\Deleted"],
        ),
    ];
    for (body, date, flags) in &messages {
        mail.append(
            inbox,
            body.as_bytes(),
            AppendOptions {
                flags: Flags::from_names(flags.iter().copied()).unwrap(),
                internal_date: Some(*date),
                provenance: None,
            },
        )
        .await
        .unwrap();
    }
    (mail, inbox, setup)
}

fn flag(name: &str) -> SearchKey {
    SearchKey::Flag(name.into())
}

fn not(key: SearchKey) -> SearchKey {
    SearchKey::Not(Box::new(key))
}

fn header(field: HeaderField, text: &str) -> SearchKey {
    SearchKey::Header(field, text.into())
}

#[tokio::test]
async fn item_04_search_every_metadata_key() {
    let (mut mail, inbox, _setup) = mailbox().await;
    let search = |mail: &Mailstore, key: SearchKey| mail.search(inbox, &key).unwrap();
    let cases: Vec<(&str, SearchKey, Vec<u32>)> = vec![
        ("ALL", SearchKey::All, vec![1, 2, 3, 4]),
        ("SEEN", flag("\\Seen"), vec![1]),
        ("UNSEEN", SearchKey::NoFlag("\\Seen".into()), vec![2, 3, 4]),
        ("ANSWERED", flag("\\Answered"), vec![2]),
        (
            "UNANSWERED",
            SearchKey::NoFlag("\\Answered".into()),
            vec![1, 3, 4],
        ),
        ("FLAGGED", flag("\\Flagged"), vec![2]),
        (
            "UNFLAGGED",
            SearchKey::NoFlag("\\Flagged".into()),
            vec![1, 3, 4],
        ),
        ("DELETED", flag("\\Deleted"), vec![4]),
        (
            "UNDELETED",
            SearchKey::NoFlag("\\Deleted".into()),
            vec![1, 2, 3],
        ),
        ("DRAFT", flag("\\Draft"), vec![3]),
        (
            "UNDRAFT",
            SearchKey::NoFlag("\\Draft".into()),
            vec![1, 2, 4],
        ),
        ("KEYWORD $Work", flag("$Work"), vec![2]),
        ("KEYWORD $work (case-insensitive)", flag("$work"), vec![2]),
        (
            "UNKEYWORD $Work",
            SearchKey::NoFlag("$Work".into()),
            vec![1, 3, 4],
        ),
        ("NEW (no \\Recent)", SearchKey::New, vec![]),
        ("RECENT", SearchKey::Recent, vec![]),
        ("OLD", SearchKey::Old, vec![1, 2, 3, 4]),
        (
            "BEFORE 2-Mar-2024",
            SearchKey::Before(day(2024, 3, 2)),
            vec![1],
        ),
        ("ON 2-Mar-2024", SearchKey::On(day(2024, 3, 2)), vec![2]),
        (
            "ON 3-Mar-2024 (23:00 UTC)",
            SearchKey::On(day(2024, 3, 3)),
            vec![3],
        ),
        (
            "SINCE 3-Mar-2024",
            SearchKey::Since(day(2024, 3, 3)),
            vec![3, 4],
        ),
        (
            "SENTBEFORE 2-Mar-2024",
            SearchKey::SentBefore(day(2024, 3, 2)),
            vec![1],
        ),
        (
            "SENTON 9-Mar-2024",
            SearchKey::SentOn(day(2024, 3, 9)),
            vec![4],
        ),
        (
            "SENTSINCE 2-Mar-2024 (no Date: never)",
            SearchKey::SentSince(day(2024, 3, 2)),
            vec![2, 4],
        ),
        ("LARGER 1000", SearchKey::Larger(1000), vec![2]),
        ("SMALLER 1000", SearchKey::Smaller(1000), vec![1, 3, 4]),
        ("UID 2:3", SearchKey::Uid(vec![(2, 3)]), vec![2, 3]),
        ("UID 4,1", SearchKey::Uid(vec![(4, 4), (1, 1)]), vec![1, 4]),
        (
            "UID 9:3 (reversed)",
            SearchKey::Uid(vec![(9, 3)]),
            vec![3, 4],
        ),
        ("1:2", SearchKey::Sequence(vec![(1, 2)]), vec![1, 2]),
        ("FROM alice", header(HeaderField::From, "alice"), vec![1]),
        (
            "FROM \"ALICE EXAMPLE\" (display name, case)",
            header(HeaderField::From, "ALICE EXAMPLE"),
            vec![1],
        ),
        (
            "FROM \"Bob B.\"",
            header(HeaderField::From, "Bob B."),
            vec![2],
        ),
        (
            "TO alice@example.org",
            header(HeaderField::To, "alice@example.org"),
            vec![4],
        ),
        ("TO carol", header(HeaderField::To, "carol"), vec![2]),
        ("CC dave", header(HeaderField::Cc, "dave"), vec![2]),
        ("BCC anyone", header(HeaderField::Bcc, "example"), vec![]),
        (
            "SUBJECT lunch",
            header(HeaderField::Subject, "lunch"),
            vec![1, 2],
        ),
        (
            "SUBJECT straße (decoded, Unicode case)",
            header(HeaderField::Subject, "STRASSE"),
            vec![],
        ),
        (
            "SUBJECT ÜNÏCODE",
            header(HeaderField::Subject, "ÜNÏCODE"),
            vec![4],
        ),
        (
            "HEADER FROM \"\" (has a From)",
            header(HeaderField::From, ""),
            vec![1, 2, 4],
        ),
        (
            "HEADER MESSAGE-ID lunch@",
            header(HeaderField::MessageId, "lunch@"),
            vec![1],
        ),
        (
            "HEADER IN-REPLY-TO lunch@",
            header(HeaderField::InReplyTo, "lunch@"),
            vec![2],
        ),
        ("NOT SEEN", not(flag("\\Seen")), vec![2, 3, 4]),
        (
            "OR DRAFT DELETED",
            SearchKey::Or(Box::new(flag("\\Draft")), Box::new(flag("\\Deleted"))),
            vec![3, 4],
        ),
        (
            "SUBJECT lunch UNSEEN (a list: AND)",
            SearchKey::And(vec![
                header(HeaderField::Subject, "lunch"),
                SearchKey::NoFlag("\\Seen".into()),
            ]),
            vec![2],
        ),
        (
            "NOT OR FROM alice FROM bob",
            not(SearchKey::Or(
                Box::new(header(HeaderField::From, "alice")),
                Box::new(header(HeaderField::From, "bob")),
            )),
            vec![3, 4],
        ),
        (
            "an empty list (AND of nothing)",
            SearchKey::And(vec![]),
            vec![1, 2, 3, 4],
        ),
    ];
    for (name, key, expected) in &cases {
        assert_eq!(&search(&mail, key.clone()), expected, "{name}");
    }

    // MODSEQ: only what changed since.
    let before = mail.modseq();
    let seen = Flags::from_names(["\\Seen"]).unwrap();
    mail.store_flags(inbox, &[3], FlagChange::Add(seen), None)
        .await
        .unwrap();
    assert_eq!(
        search(&mail, SearchKey::ModSeq(before + 1)),
        vec![3],
        "MODSEQ"
    );
    assert_eq!(
        search(&mail, SearchKey::ModSeq(1)),
        vec![1, 2, 3, 4],
        "MODSEQ 1"
    );
    assert_eq!(
        search(&mail, flag("\\Seen")),
        vec![1, 3],
        "SEEN after STORE"
    );

    // The header keys read the envelope; flags, sizes and sets do not.
    assert!(header(HeaderField::To, "x").needs_envelope());
    assert!(SearchKey::SentOn(day(2024, 1, 1)).needs_envelope());
    assert!(not(SearchKey::Or(
        Box::new(SearchKey::All),
        Box::new(header(HeaderField::Cc, "x"))
    ))
    .needs_envelope());
    assert!(!SearchKey::And(vec![
        flag("\\Seen"),
        SearchKey::Larger(3),
        SearchKey::On(day(2024, 1, 1))
    ])
    .needs_envelope());

    // An unknown mailbox is a typed error.
    let gone = mail.create_mailbox("Gone", None).await.unwrap().id;
    mail.delete_mailbox(gone).await.unwrap();
    assert!(matches!(
        mail.search(gone, &SearchKey::All),
        Err(Error::NoSuchMailbox { .. })
    ));
    assert_eq!(
        HeaderField::from_name("Reply-To"),
        Some(HeaderField::ReplyTo)
    );
    assert_eq!(HeaderField::from_name("X-Spam"), None);
    assert_eq!(SearchDay::from_ymd(2024, 2, 30), None);
    assert_eq!(
        SearchDay::of_timestamp(-1).days(),
        -1,
        "before 1970: the day before"
    );
}

/// Sequence numbers and flags are those of the view the caller searches: a connection
/// that has not yet been told of an expunge keeps its numbers, and a message gone from
/// the store matches only what needs no email record.
#[tokio::test]
async fn item_04_search_a_callers_view() {
    let (mut mail, inbox, _setup) = mailbox().await;
    let snapshot = mail.view(inbox).unwrap();
    // Message 1 goes (expunged elsewhere); the snapshot still numbers it 1.
    let deleted = Flags::from_names(["\\Deleted"]).unwrap();
    mail.store_flags(inbox, &[1], FlagChange::Add(deleted), None)
        .await
        .unwrap();
    mail.expunge(inbox, Some(&[1])).await.unwrap();
    let now = mail.view(inbox).unwrap();
    assert_eq!(
        mail.search_view(&snapshot, &SearchKey::Sequence(vec![(2, 2), (3, 3)]))
            .unwrap(),
        vec![2, 3],
        "the snapshot's numbers"
    );
    assert_eq!(
        mail.search(inbox, &SearchKey::Sequence(vec![(2, 3)]))
            .unwrap(),
        vec![3, 4],
        "the current numbers"
    );
    assert_eq!(now.messages.len(), 3);
    // The expunged message: its flags are the snapshot's, its email record is gone.
    assert_eq!(
        mail.search_view(&snapshot, &flag("\\Seen")).unwrap(),
        vec![1],
        "flags from the view"
    );
    assert_eq!(
        mail.search_view(&snapshot, &header(HeaderField::Subject, "lunch"))
            .unwrap(),
        vec![2],
        "the expunged message's envelope is gone"
    );
}
