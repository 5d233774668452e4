//! Issue 14, "Leakage test": what the store holds after two accounts indexed and searched
//! their mail. No marker word appears in any object name or byte in any encoding the
//! library could write it in, no 16-byte window of one account's search segments (past
//! the clear header) appears in the other's (no deterministic term token), and the sizes
//! of search segments depend on the amount of text indexed, not on which words
//! (`docs/design.md` §15, "What the store learns").

use std::collections::{BTreeMap, HashMap, HashSet};

use futures::TryStreamExt;
use mailvault::format::search::{HEADER_LEN, SEARCH_MAGIC};
use mailvault::ids::EmailId;
use mailvault::mail::text::oracle::TextKey;
use mailvault::mail::Mailstore;
use mailvault::storage::{get_bounded, naming, CommitMode, DynStore};
use object_store::ObjectStore;
use rand::{Rng, SeedableRng};

use super::mail::MailSetup;

const MESSAGES: usize = 50;

/// One account on `store` holding `messages`, in append order.
async fn account(store: &DynStore, messages: &[Vec<u8>]) -> (MailSetup, Mailstore, Vec<EmailId>) {
    // Appends do not feed the index here: the tests build its segments in the batches
    // they choose (`index_texts`), so that both accounts get the same ones.
    let setup = MailSetup::new(store.clone(), CommitMode::CompareAndSwap).with_mail_config(
        mailvault::mail::MailConfig {
            index_appends: false,
            ..mailvault::mail::MailConfig::default()
        },
    );
    let mut mail = setup.open().await;
    let emails = super::search::append_all(&mut mail, messages.iter().map(|m| m.as_slice())).await;
    (setup, mail, emails)
}

/// Every object of the store: name and bytes.
async fn objects(store: &DynStore) -> Vec<(String, Vec<u8>)> {
    let metas: Vec<_> = store.list(None).try_collect().await.unwrap();
    let mut out = Vec::new();
    for meta in metas {
        let bytes = get_bounded(store.as_ref(), &meta.location, 1 << 30)
            .await
            .unwrap();
        out.push((meta.location.to_string(), bytes.to_vec()));
    }
    out
}

/// The objects of `account`'s index collections under their segment folder (`…/s/`):
/// search segments (`MVX1`), checked to be the only kind beside record segments (`MVS1`).
fn search_segments<'a>(
    objects: &'a [(String, Vec<u8>)],
    account: &mailvault::ids::AccountId,
) -> Vec<&'a [u8]> {
    let prefix = format!("{}/i/", naming::account_prefix(account));
    let mut out = Vec::new();
    for (name, bytes) in objects {
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        if rest.split('/').nth(1) != Some("s") {
            continue;
        }
        if bytes.starts_with(&SEARCH_MAGIC) {
            out.push(bytes.as_slice());
        } else {
            assert!(bytes.starts_with(b"MVS1"), "unknown segment object {name}");
        }
    }
    out
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for group in bytes.chunks(3) {
        let n = group
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=group.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Every form in which `marker` could be written: as is, upper-cased (the index folds to
/// upper case), capitalised, each in UTF-16LE, percent-encoded (both hex cases), and base64
/// at the three alignments (the characters that depend on marker bytes only).
fn forms(marker: &str) -> Vec<Vec<u8>> {
    let mut plain = vec![
        marker.to_owned(),
        marker.to_uppercase(),
        marker[..1].to_uppercase() + &marker[1..],
    ];
    for text in plain.clone() {
        let percent: String = text.bytes().map(|b| format!("%{b:02X}")).collect();
        plain.push(percent.to_lowercase());
        plain.push(percent);
    }
    let mut out: Vec<Vec<u8>> = Vec::new();
    for text in &plain[..3] {
        out.push(text.encode_utf16().flat_map(u16::to_le_bytes).collect());
        for shift in 0..3 {
            let mut bytes = vec![0u8; shift];
            bytes.extend_from_slice(text.as_bytes());
            let encoded = base64(&bytes);
            // Groups of three bytes wholly inside the marker.
            let first = shift.div_ceil(3);
            let last = bytes.len() / 3;
            out.push(encoded.as_bytes()[first * 4..last * 4].to_vec());
        }
    }
    out.extend(plain.into_iter().map(String::into_bytes));
    out
}

/// The first needle found in `hay`, if any.
fn find<'a>(hay: &[u8], needles: &'a HashMap<usize, HashSet<Vec<u8>>>) -> Option<&'a [u8]> {
    needles.iter().find_map(|(len, set)| {
        hay.windows(*len)
            .find_map(|w| set.get(w))
            .map(Vec::as_slice)
    })
}

fn random_word(rng: &mut impl Rng, len: usize, alphabet: &[u8]) -> String {
    (0..len)
        .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
        .collect()
}

/// A message whose subject, body and attachment name carry the three markers, beside
/// text every account's messages share.
fn marked(i: usize, markers: &[String; 3]) -> Vec<u8> {
    let [subject, body, file] = markers;
    format!(
        "From: Ann Example <ann@example.org>\r\nTo: team@example.org\r\n\
         Subject: Quarterly review {subject} number {i}\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n\
         Notes from the planning meeting: the budget, the {body} roadmap and the hiring \
         plan were discussed; follow up next week.\r\n--b\r\n\
         Content-Type: application/pdf; name=\"{file}.pdf\"\r\n\
         Content-Disposition: attachment; filename=\"{file}.pdf\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn markers_appear_nowhere_and_no_segment_window_repeats_across_accounts() {
    let store = super::memory();
    let mut rng = rand::thread_rng();
    let lower: Vec<u8> = (b'a'..=b'z').collect();
    let mut accounts = Vec::new();
    let mut all_markers = Vec::new();
    for _ in 0..2 {
        let markers: Vec<[String; 3]> = (0..MESSAGES)
            .map(|_| std::array::from_fn(|_| random_word(&mut rng, 12, &lower)))
            .collect();
        let messages: Vec<Vec<u8>> = markers
            .iter()
            .enumerate()
            .map(|(i, m)| marked(i, m))
            .collect();
        let (setup, mail, emails) = account(&store, &messages).await;
        assert_eq!(
            mail.index_texts(&emails, usize::MAX).await.unwrap(),
            MESSAGES
        );
        // One search, answered by the index: each marker finds its message.
        let keys = vec![
            TextKey::subject(&markers[3][0].to_uppercase()),
            TextKey::Body(markers[7][1].clone()),
            TextKey::Text(markers[11][2].clone()),
        ];
        let found = super::search::search_sets(&mail, &emails, &keys).await;
        for (set, i) in found.iter().zip([3, 7, 11]) {
            assert_eq!(set, &HashSet::from([emails[i]]));
        }
        all_markers.extend(markers.into_iter().flatten());
        accounts.push(setup.account);
    }

    let objects = objects(&store).await;
    // No 16-byte window past the header of a search segment of one account in the other's.
    let segments: Vec<Vec<&[u8]>> = accounts
        .iter()
        .map(|a| search_segments(&objects, a))
        .collect();
    let windows: HashSet<&[u8]> = segments[0]
        .iter()
        .flat_map(|s| s[HEADER_LEN..].windows(16))
        .collect();
    for (i, segment) in segments.iter().enumerate() {
        assert!(!segment.is_empty(), "account {i} has no search segment");
    }
    for segment in &segments[1] {
        if let Some(w) = segment[HEADER_LEN..]
            .windows(16)
            .find(|w| windows.contains(w))
        {
            panic!("a window of account 0's search segments repeats in account 1's: {w:02x?}");
        }
    }
    assert!(windows.len() > 10_000, "{} windows", windows.len());

    // No marker in any form in any object name or byte.
    let mut needles: HashMap<usize, HashSet<Vec<u8>>> = HashMap::new();
    for marker in &all_markers {
        for form in forms(marker) {
            needles.entry(form.len()).or_default().insert(form);
        }
    }
    assert!(objects.len() > 2 * MESSAGES);
    for (name, bytes) in &objects {
        for hay in [name.as_bytes(), bytes.as_slice()] {
            if let Some(found) = find(hay, &needles) {
                panic!(
                    "object {name} holds a marker: {}",
                    String::from_utf8_lossy(found)
                );
            }
        }
    }
}

/// The checks above find a marker where one is written.
#[test]
fn the_marker_scan_finds_every_form() {
    let marker = "qwertzuiopas";
    let mut needles: HashMap<usize, HashSet<Vec<u8>>> = HashMap::new();
    for form in forms(marker) {
        needles.entry(form.len()).or_default().insert(form);
    }
    let utf16: Vec<u8> = "x QWERTZUIOPAS y"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    for hay in [
        b"..qwertzuiopas..".to_vec(),
        b"Subject: QWERTZUIOPAS".to_vec(),
        b"name=%71%77%65%72%74%7A%75%69%6F%70%61%73".to_vec(),
        utf16,
        base64(b"Re: qwertzuiopas!").into_bytes(),
        base64(b"Re:: qwertzuiopas!").into_bytes(),
        base64(b"Re::: qwertzuiopas!").into_bytes(),
    ] {
        assert!(
            find(&hay, &needles).is_some(),
            "{}",
            String::from_utf8_lossy(&hay)
        );
    }
    assert!(find(b"qwertzuiopa", &needles).is_none());
}

/// Messages `i` of an account: the same sizes and word lengths whatever `alphabet`, the
/// words drawn from it (`lengths` seeded alike for every account, `words` per account).
fn plain_message(
    i: usize,
    lengths: &mut impl Rng,
    words: &mut impl Rng,
    alphabet: &[u8],
) -> Vec<u8> {
    let mut text = |n: usize| {
        (0..n)
            .map(|_| {
                let len = lengths.gen_range(2..14);
                random_word(words, len, alphabet)
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let subject = text(6);
    let body = text(400 + i % 7 * 100);
    format!(
        "From: a@example.org\r\nTo: b@example.org\r\nSubject: {subject}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn search_segment_sizes_do_not_depend_on_the_words() {
    let store = super::memory();
    // Disjoint alphabets of the same size, hence disjoint vocabularies.
    let alphabets: [Vec<u8>; 2] = [(b'a'..=b'm').collect(), (b'n'..=b'z').collect()];
    let mut accounts = Vec::new();
    let mut messages = Vec::new();
    for (n, alphabet) in alphabets.iter().enumerate() {
        let mut lengths = rand::rngs::StdRng::seed_from_u64(14);
        let mut words = rand::rngs::StdRng::seed_from_u64(100 + n as u64);
        let texts: Vec<Vec<u8>> = (0..MESSAGES)
            .map(|i| plain_message(i, &mut lengths, &mut words, alphabet))
            .collect();
        messages.push(texts);
    }
    let sizes: Vec<usize> = messages[0].iter().map(Vec::len).collect();
    assert_eq!(sizes, messages[1].iter().map(Vec::len).collect::<Vec<_>>());
    for texts in &messages {
        let (setup, mail, emails) = account(&store, texts).await;
        // The same batches for both: 20, 20, 10 (then whatever merge the index does).
        for batch in [20, 20, 10] {
            assert_eq!(mail.index_texts(&emails, batch).await.unwrap(), batch);
        }
        let word = String::from_utf8_lossy(&texts[5][..]).to_string();
        let word = word
            .split("Subject: ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .unwrap()
            .to_owned();
        let found = mail
            .search_texts(&emails, &[TextKey::subject(&word)])
            .await
            .unwrap();
        assert!(found[0].contains(5));
        accounts.push(setup.account);
    }
    let objects = objects(&store).await;
    let multisets: Vec<BTreeMap<usize, usize>> = accounts
        .iter()
        .map(|a| {
            let mut sizes = BTreeMap::new();
            for s in search_segments(&objects, a) {
                *sizes.entry(s.len()).or_default() += 1;
            }
            sizes
        })
        .collect();
    println!("search segment sizes (size: count): {multisets:?}");
    assert!(!multisets[0].is_empty());
    assert_eq!(
        multisets[0], multisets[1],
        "search segment sizes (size: count)"
    );
}
