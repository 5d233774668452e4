//! Text search through the encrypted index (`Mailstore::search_texts`) against the
//! brute-force oracle (`mail::text::oracle::Oracle`), for arbitrary needles: an account
//! in an in-memory store holds messages of the test corpus (multipart, nested, digest,
//! partial, HTML) and a few written here (ISO-8859-1 quoted-printable, UTF-8 base64 with
//! CJK and Greek, an attachment name in RFC 2231, common words repeated so that phrases
//! have many candidates), all indexed when the process starts.
//!
//! An input is one or more keys separated by a NUL byte; each key's first byte picks its
//! kind (`BODY`, `TEXT`, or `HEADER` of one of a few fields, existing and not) and the
//! rest, as UTF-8 (invalid sequences replaced), is the needle. The answer for every key
//! must be exactly the oracle's: the index's plans (one word, a phrase verified on the
//! text store or the header block, the empty needle) never differ from the scan, and
//! nothing panics.

#![no_main]

use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use mailvault::blob::BlobStore;
use mailvault::crypto::{AccountKey, RandomSource};
use mailvault::directory::MemoryDirectory;
use mailvault::ids::{AccountId, DeploymentId, EmailId};
use mailvault::index::IndexStore;
use mailvault::mail::text::oracle::{Oracle, TextKey};
use mailvault::mail::{AppendOptions, MailConfig, Mailstore, INBOX};
use mailvault::storage::{open_store, CommitMode};

/// The messages of the account, in append order.
fn messages() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = [
        &include_bytes!("../../tests/corpus/mail-parser/rfc/000.eml")[..],
        include_bytes!("../../tests/corpus/mail-parser/rfc/001.eml"),
        include_bytes!("../../tests/corpus/mail-parser/rfc/002.eml"),
        include_bytes!("../../tests/corpus/mail-parser/rfc/003.eml"),
        include_bytes!("../../tests/corpus/mail-parser/rfc/004.eml"),
        include_bytes!("../../tests/corpus/mail-parser/rfc/005.eml"),
        include_bytes!("../../tests/corpus/mail-parser/rfc/006.eml"),
        include_bytes!("../../tests/corpus/mail-parser/rfc/007.eml"),
        include_bytes!("../../tests/corpus/mail-parser/rfc/008.eml"),
        include_bytes!("../../tests/corpus/mail-parser/rfc/009.eml"),
        include_bytes!("../../tests/corpus/mail-parser/thirdparty/007.eml"),
        include_bytes!("../../tests/corpus/mail-parser/thirdparty/009.eml"),
        include_bytes!("../../tests/corpus/mail-parser/thirdparty/011.eml"),
        include_bytes!("../../tests/corpus/mail-parser/thirdparty/014.eml"),
        include_bytes!("../../tests/corpus/mail-parser/thirdparty/016.eml"),
    ]
    .iter()
    .map(|m| m.to_vec())
    .collect();
    out.push(
        b"From: =?ISO-8859-1?Q?Andr=E9?= <andre@example.org>\r\n\
          To: team@example.org\r\n\
          Subject: =?ISO-8859-1?Q?R=E9union_du_comit=E9?=\r\n\
          X-Note: fuzzing the query plans\r\n\
          Content-Type: text/plain; charset=ISO-8859-1\r\n\
          Content-Transfer-Encoding: quoted-printable\r\n\r\n\
          La r=E9union aura lieu =E0 la salle B, caf=E9 et croissants.\r\n\
          Ordre du jour: budget, planning, questions diverses.\r\n"
            .to_vec(),
    );
    out.push(
        b"From: Kenji <kenji@example.jp>\r\n\
          To: team@example.org\r\n\
          Subject: =?UTF-8?B?5Lya6K2w44Gu6K2w5LqL6YyyIM6azrHOu863zrzOrc+BzrE=?=\r\n\
          Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n\
          --b1\r\n\
          Content-Type: text/plain; charset=UTF-8\r\n\
          Content-Transfer-Encoding: base64\r\n\r\n\
          5Lya6K2w44Gu6K2w5LqL6Yyy44Gn44GZ44CCIM6azrHOu863zrzOrc+BzrEgzrrPjM+DzrzOtSEK\r\n\
          --b1\r\n\
          Content-Type: application/pdf\r\n\
          Content-Disposition: attachment; filename*=UTF-8''Proc%C3%A8s-verbal%20final.pdf\r\n\
          Content-Transfer-Encoding: base64\r\n\r\n\
          JVBERi0xLjQK\r\n\
          --b1--\r\n"
            .to_vec(),
    );
    out.push(
        b"From: Team <team@example.org>\r\n\
          To: all@example.org\r\n\
          Subject: the meeting of the team\r\n\r\n\
          the meeting of the team is in the room of the building. the team of the\r\n\
          meeting is the team of the room; the room of the meeting is the room.\r\n"
            .to_vec(),
    );
    out
}

/// The account, every message indexed.
struct Fixture {
    runtime: tokio::runtime::Runtime,
    mail: Mailstore,
    emails: Vec<EmailId>,
    oracle_messages: Vec<Vec<u8>>,
    max_parse_len: usize,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    let messages = messages();
    let (mail, emails) = runtime.block_on(async {
        let store = open_store("memory://").expect("an in-memory store");
        let deployment = DeploymentId::from_bytes(*b"fuzz-deployment!");
        let account = AccountId::from_bytes(*b"fuzz-search-acct");
        let key = AccountKey::generate(1, &RandomSource::seeded(11));
        let index = IndexStore::with_mode(
            store.clone(),
            deployment,
            Arc::new(MemoryDirectory::new()),
            CommitMode::CompareAndSwap,
        );
        let blobs = BlobStore::new(store, deployment).account(account, &key);
        // The first half is indexed as it is appended (the default), the second half by
        // `index_texts` reading the bodies back: both ways of feeding the index are fuzzed.
        let half = messages.len() / 2;
        let mut fed = Mailstore::open(&index, blobs.clone(), &key)
            .await
            .expect("opening the account");
        let inbox = fed.mailbox_by_name(INBOX).expect("an inbox").id;
        for raw in &messages[..half] {
            fed.append(inbox, raw, AppendOptions::default())
                .await
                .expect("appending a message");
        }
        fed.flush_texts()
            .await
            .expect("flushing the appended texts");
        drop(fed);
        let config = MailConfig {
            index_appends: false,
            ..MailConfig::default()
        };
        let mut mail = Mailstore::open_with(&index, blobs, &key, config)
            .await
            .expect("reopening the account");
        for raw in &messages[half..] {
            mail.append(inbox, raw, AppendOptions::default())
                .await
                .expect("appending a message");
        }
        let emails: Vec<EmailId> = mail
            .select(inbox)
            .await
            .expect("selecting the inbox")
            .messages
            .iter()
            .map(|m| m.email)
            .collect();
        assert_eq!(emails.len(), messages.len());
        let indexed = mail
            .index_texts(&emails, usize::MAX)
            .await
            .expect("indexing the texts");
        assert_eq!(
            indexed,
            messages.len() - half,
            "only the unfed half is read back"
        );
        let covered = mail.texts_covered(&emails).await.expect("the coverage");
        assert_eq!(covered, emails.len());
        (mail, emails)
    });
    Fixture {
        runtime,
        mail,
        emails,
        oracle_messages: messages,
        max_parse_len: MailConfig::default().max_parse_len,
    }
});

/// The header fields a `HEADER` key may name: present in every message, in some, in
/// one, or in none.
const FIELDS: [&str; 6] = [
    "Subject",
    "From",
    "To",
    "Content-Type",
    "X-Note",
    "X-Absent",
];

/// The keys of an input (at most 8).
fn keys(data: &[u8]) -> Vec<TextKey> {
    data.split(|b| *b == 0)
        .take(8)
        .filter_map(|part| {
            let (&kind, needle) = part.split_first()?;
            let needle = String::from_utf8_lossy(needle).into_owned();
            Some(match kind % 8 {
                0 | 1 => TextKey::Body(needle),
                2 | 3 => TextKey::Text(needle),
                k => TextKey::Header(
                    FIELDS[usize::from(k + kind / 8) % FIELDS.len()].into(),
                    needle,
                ),
            })
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let keys = keys(data);
    if keys.is_empty() {
        return;
    }
    let f = &*FIXTURE;
    let got = f
        .runtime
        .block_on(f.mail.search_texts(&f.emails, &keys))
        .expect("a text search");
    // Positions in `f.emails`, which is the oracle's messages in order.
    let want: Vec<Vec<usize>> = Oracle::new(&keys, f.max_parse_len)
        .scan(f.oracle_messages.iter().map(Vec::as_slice))
        .into_iter()
        .map(|hits| {
            let mut hits: Vec<usize> = hits.into_iter().collect();
            hits.sort_unstable();
            hits
        })
        .collect();
    for ((key, got), want) in keys.iter().zip(&got).zip(&want) {
        let got: Vec<usize> = got.positions().collect();
        assert_eq!(
            &got,
            want,
            "{key:?}: the index answered {} emails, the oracle {}",
            got.len(),
            want.len()
        );
    }
});
