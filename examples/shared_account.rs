//! Many connections on one account (issue 12, item 1): memory and `SELECT` time of 100
//! connections sharing one `SharedAccount`, against one connection, on an account of
//! `--messages N` messages (100 000 by default) in an in-memory store; and, as the
//! reference of before, what each connection cost when it opened a `Mailstore` of its
//! own (measured for `--separate K` connections, 10 by default).
//!
//! Each connection does what an IMAP connection does at `SELECT`: it gets the mailbox's
//! view (its sequence numbers) and keeps it. Memory is the process's resident set
//! (`VmRSS` of `/proc/self/status`) after each step, so the figures are deltas over the
//! account already loaded.
//!
//! `--realistic` appends the messages of the test corpus (`tests/corpus/mail-parser`:
//! real mail with its header blocks of a few KiB, attachments, several charsets) in turn,
//! each with a `Received:` line and a Message-ID of its own, instead of the small
//! synthetic messages: the email records then carry realistic header blocks, which is what
//! the account state's size depends on.
//!
//! ```sh
//! cargo run --release --example shared_account                    # 100 000 messages
//! cargo run --release --example shared_account -- --messages 10000 --separate 10
//! cargo run --release --example shared_account -- --realistic     # corpus messages
//! cargo run --release --example shared_account -- --realistic --breakdown
//! ```
//!
//! `--breakdown` also prints what the stored email records are made of (their pin,
//! fixed fields, envelope, MIME parts, header block and preview, in bytes per record),
//! measured on every email of the account: what the always-loaded state would lose if
//! one of them were read lazily.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mailvault::directory::{Directory, MemoryDirectory, OfficerKeyEntry};
use mailvault::engine::{Provider, ProviderConfig, ShareConfig, SharedAccount};
use mailvault::format::slot::KdfParams;
use mailvault::ids::DeploymentId;
use mailvault::keys::{KdfGate, OfficerSecret};
use mailvault::mail::{AppendOptions, MailboxView, INBOX};

#[path = "common/corpus.rs"]
mod corpus;
use corpus::{corpus, realistic};

fn rss_kib() -> u64 {
    corpus::status_kib("VmRSS")
}

fn message(n: usize) -> Vec<u8> {
    format!(
        "From: Sender {n} <s{n}@example.org>\r\nTo: alice@example.org\r\n\
         Subject: message number {n}\r\nMessage-ID: <{n}@example.org>\r\n\
         Date: Fri, 4 Dec 2026 10:00:00 +0000\r\n\r\nBody of message {n}.\r\n"
    )
    .into_bytes()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> mailvault::Result<()> {
    let mut messages = 100_000usize;
    let mut separate = 10usize;
    let mut realistic_messages = false;
    let mut breakdown = false;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--messages" => messages = it.next().and_then(|v| v.parse().ok()).unwrap_or(messages),
            "--separate" => separate = it.next().and_then(|v| v.parse().ok()).unwrap_or(separate),
            "--realistic" => realistic_messages = true,
            "--breakdown" => breakdown = true,
            other => panic!("unknown argument {other:?}"),
        }
    }
    let store = mailvault::storage::open_store("memory://")?;
    let config = ProviderConfig {
        pepper: None,
        kdf: KdfParams {
            m_kib: 256,
            t: 1,
            p: 1,
        },
        limits: None,
        gate: KdfGate::new(2),
        ..ProviderConfig::default()
    };
    let rng = mailvault::crypto::RandomSource::os();
    let directory = Arc::new(MemoryDirectory::new());
    // The default key model has an officer slot: an officer key the example then forgets.
    directory
        .set_officer_keys(vec![OfficerKeyEntry {
            key: OfficerSecret::generate(&rng).public(),
            current: true,
        }])
        .await?;
    let provider = Provider::new(store, DeploymentId::random(&rng), directory, config).await?;
    let account = provider.create_account("pw").await?;
    let share = ShareConfig {
        poll_interval: Duration::from_secs(3600),
        import_deliveries: false,
        ..ShareConfig::default()
    };
    let handle = SharedAccount::open(provider.unlock(account, "pw").await?, share).await?;
    let inbox = handle
        .read()
        .await
        .mailbox_by_name(INBOX)
        .expect("INBOX")
        .id;
    let corpus = if realistic_messages {
        corpus()
    } else {
        Vec::new()
    };
    let started = Instant::now();
    let mut bytes = 0usize;
    for n in 0..messages {
        let message = if realistic_messages {
            realistic(&corpus, n)
        } else {
            message(n)
        };
        bytes += message.len();
        handle
            .write()
            .await
            .append(inbox, &message, AppendOptions::default())
            .await?;
    }
    handle.write().await.compact().await?;
    let index: Vec<String> = handle
        .read()
        .await
        .index_usage()
        .iter()
        .map(|u| {
            format!(
                "{} {} records {} KiB",
                u.kind as char,
                u.records,
                (u.key_bytes + u.value_bytes) / 1024
            )
        })
        .collect();
    println!(
        "account of {messages} {} messages ({} KiB, {} B each on average) built in {:.1} s; \
         index records: {}",
        if realistic_messages {
            "corpus"
        } else {
            "small"
        },
        bytes / 1024,
        bytes / messages.max(1),
        started.elapsed().as_secs_f64(),
        index.join(", ")
    );

    if breakdown {
        print_breakdown(&handle, inbox, messages).await?;
    }

    // One connection: the handle, and its SELECT's view kept.
    let base = rss_kib();
    let started = Instant::now();
    let first: Arc<MailboxView> = handle.view(inbox).await?;
    let cold = started.elapsed();
    let one = rss_kib();

    // 99 more, each with its own clone of the handle and the view it selected.
    let mut connections: Vec<(SharedAccount, Arc<MailboxView>)> = vec![(handle.clone(), first)];
    let mut last = Duration::ZERO;
    for _ in 1..100 {
        let connection = handle.clone();
        let started = Instant::now();
        let view = connection.view(inbox).await?;
        last = started.elapsed();
        assert_eq!(view.messages.len(), messages);
        connections.push((connection, view));
    }
    let hundred = rss_kib();
    println!(
        "shared handle: SELECT of the first connection {:.2} ms (computes the view), of the 100th {:.2} µs",
        cold.as_secs_f64() * 1e3,
        last.as_secs_f64() * 1e6
    );

    // The reference of before: each connection opened its own mailstore. Its resident
    // set is what one connection's account state costs (the store itself, in memory
    // here, is not part of it).
    let session = provider.unlock(account, "pw").await?;
    let before = rss_kib();
    let started = Instant::now();
    let mut own = Vec::new();
    for _ in 0..separate {
        let mut mail = session.mailstore().await?;
        let view = mail.select(inbox).await?;
        own.push((mail, view));
    }
    let opened = started.elapsed().as_secs_f64() * 1e3 / separate.max(1) as f64;
    let state = (rss_kib().saturating_sub(before)) / separate.max(1) as u64;
    drop(own);
    let shared_extra = hundred.saturating_sub(one);
    println!(
        "one connection's account state (a mailstore and its SELECT view, {separate} measured): \
         {state} KiB, opened in {opened:.0} ms"
    );
    println!(
        "100 connections through one handle: +{shared_extra} KiB over 1 connection (the first \
         view: +{} KiB): resident set of the account state {:.3}× that of one connection; \
         with a mailstore per connection it was 100× ({} KiB)",
        one.saturating_sub(base),
        (state + shared_extra) as f64 / state.max(1) as f64,
        100 * state
    );
    drop(connections);
    Ok(())
}

/// What the stored email records of the account are made of: each part's serialized
/// size, from the record's own `to_bytes` with the part emptied (so the figures are the
/// stored bytes, length prefixes included).
async fn print_breakdown(
    handle: &SharedAccount,
    inbox: mailvault::ids::MailboxId,
    messages: usize,
) -> mailvault::Result<()> {
    let mail = handle.read().await;
    let (mut total, mut pin, mut envelope, mut parts, mut header, mut preview) =
        (0usize, 0usize, 0usize, 0usize, 0usize, 0usize);
    let (mut part_count, mut with_header, mut references) = (0usize, 0usize, 0usize);
    for uid in 1..=messages as u32 {
        let email = mail.email(inbox, uid)?;
        let full = email.to_bytes().len();
        total += full;
        pin += email.pin.to_bytes().len();
        part_count += email.parts.len();
        references += email
            .envelope
            .references
            .iter()
            .map(String::len)
            .sum::<usize>();
        with_header += usize::from(email.header_block.is_some());
        let mut e = email.clone();
        e.header_block = None;
        header += full - e.to_bytes().len();
        let mut e = email.clone();
        e.preview = None;
        preview += full - e.to_bytes().len();
        let mut e = email.clone();
        e.parts.clear();
        parts += full - e.to_bytes().len();
        let mut e = email;
        e.envelope = Default::default();
        envelope += full - e.to_bytes().len();
    }
    let n = messages.max(1);
    let fixed = total - pin - envelope - parts - header - preview;
    println!(
        "email records ({messages}): {} B each on average = pin {} + fixed fields {} + envelope {} \
         (of which References ids {}) + MIME parts {} ({:.1} parts each) + header block {} \
         ({:.0}% of emails keep one) + preview {}",
        total / n,
        pin / n,
        fixed / n,
        envelope / n,
        references / n,
        parts / n,
        part_count as f64 / n as f64,
        header / n,
        100.0 * with_header as f64 / n as f64,
        preview / n,
    );
    Ok(())
}
