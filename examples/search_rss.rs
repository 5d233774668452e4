//! Issue 14's memory acceptance: the peak resident set of a session searching the text
//! of a 100 000-message account (bound: 128 MiB, `docs/proposals/search.md` §5.4).
//!
//! A first child process builds the account in a local directory (`--dir`, on
//! `/dev/shm` by default so that its fsyncs cost nothing; kept, and reused when it is
//! there already): `--messages N` corpus messages (`tests/corpus/mail-parser`, in turn,
//! each with a `Received:` line and a Message-ID of its own), appended in transactions of
//! 500, compacted, and every email's text indexed. A second child, a fresh process,
//! opens the account as a session does (unlock, mailstore, `SELECT INBOX`), runs a text
//! query set over every email ([`Mailstore::search_texts`], each key on its own, then all
//! together) and reads its peak resident set (`VmHWM` of `/proc/self/status`): what the
//! acceptance bounds. It also prints the resident set after the open and the live
//! index values by record kind.
//!
//! ```sh
//! cargo run --release --example search_rss                        # 100 000 messages
//! cargo run --release --example search_rss -- --messages 10000
//! cargo run --release --example search_rss -- --dir /dev/shm/rss  # where the account is
//! cargo run --release --example search_rss -- --inline-details     # the reference
//! ```
//!
//! `--inline-details` builds the account with [`MailConfig::details_apart`] off: every
//! email record keeps its MIME parts, header block and preview, as before email records
//! of version 4 (the reference the figure is compared with).
//!
//! [`MailConfig::details_apart`]: mailvault::mail::MailConfig::details_apart
//!
//! [`Mailstore::search_texts`]: mailvault::mail::Mailstore::search_texts

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use mailvault::directory::{Directory, FileDirectory, OfficerKeyEntry};
use mailvault::engine::{Provider, ProviderConfig, Session};
use mailvault::format::slot::KdfParams;
use mailvault::ids::{AccountId, DeploymentId};
use mailvault::keys::{KdfGate, OfficerSecret};
use mailvault::mail::text::oracle::TextKey;
use mailvault::mail::{AppendOptions, MailConfig, Transaction, INBOX};

#[path = "common/corpus.rs"]
mod corpus;

/// Appends per transaction while building.
const BATCH: usize = 500;

fn config(details_apart: bool) -> ProviderConfig {
    ProviderConfig {
        mail: MailConfig {
            details_apart,
            ..MailConfig::default()
        },
        pepper: None,
        kdf: KdfParams {
            m_kib: 256,
            t: 1,
            p: 1,
        },
        limits: None,
        gate: KdfGate::new(2),
        ..ProviderConfig::default()
    }
}

/// The provider of the account kept in `dir`, with its directory.
async fn provider(
    dir: &Path,
    deployment: DeploymentId,
    directory: Arc<FileDirectory>,
    details_apart: bool,
) -> mailvault::Result<Provider> {
    let store = mailvault::storage::open_store(dir.join("store").to_str().expect("a path"))?;
    Provider::new(store, deployment, directory, config(details_apart)).await
}

async fn session(dir: &Path) -> mailvault::Result<Session> {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).expect("the account's ids");
    let deployment = DeploymentId::from_hex(read("deployment").trim())?;
    let account = AccountId::from_hex(read("account").trim())?;
    let directory = Arc::new(FileDirectory::open(dir.join("directory"))?);
    provider(dir, deployment, directory, true)
        .await?
        .unlock(account, "pw")
        .await
}

async fn build(dir: &Path, messages: usize, details_apart: bool) -> mailvault::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("directory")).expect("the account's folder");
    let rng = mailvault::crypto::RandomSource::os();
    let deployment = DeploymentId::random(&rng);
    let directory = Arc::new(FileDirectory::open(dir.join("directory"))?);
    // The default key model has an officer slot: an officer key the example forgets.
    directory
        .set_officer_keys(vec![OfficerKeyEntry {
            key: OfficerSecret::generate(&rng).public(),
            current: true,
        }])
        .await?;
    let provider = provider(dir, deployment, directory, details_apart).await?;
    let account = provider.create_account("pw").await?;
    let mut mail = provider.unlock(account, "pw").await?.mailstore().await?;
    let inbox = mail.mailbox_by_name(INBOX).expect("INBOX").id;
    let corpus = corpus::corpus();
    let started = Instant::now();
    let mut bytes = 0usize;
    for first in (0..messages).step_by(BATCH) {
        let mut tx = Transaction::new();
        for n in first..(first + BATCH).min(messages) {
            let message = corpus::realistic(&corpus, n);
            bytes += message.len();
            tx.append([inbox], message, AppendOptions::default());
        }
        mail.commit(tx).await?;
    }
    mail.compact().await?;
    let appended = started.elapsed();
    let emails: Vec<_> = mail
        .select(inbox)
        .await?
        .messages
        .iter()
        .map(|m| m.email)
        .collect();
    let started = Instant::now();
    let indexed = mail.index_texts(&emails, usize::MAX).await?;
    println!(
        "built: {messages} corpus messages ({} KiB, {} B each on average) appended and compacted \
         in {:.1} s, {indexed} texts indexed in {:.1} s",
        bytes / 1024,
        bytes / messages.max(1),
        appended.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    std::fs::write(dir.join("deployment"), deployment.to_hex()).expect("written");
    // Last: an account without this file is built again.
    std::fs::write(dir.join("account"), account.to_hex()).expect("written");
    Ok(())
}

/// The query set: words of several frequencies, an absent word, phrases and
/// punctuation-spanning needles (verified), non-ASCII, header keys.
fn queries() -> Vec<TextKey> {
    vec![
        TextKey::Body("the".into()),
        TextKey::Body("message".into()),
        TextKey::Text("attachment".into()),
        TextKey::Body("zqxwvy".into()),
        TextKey::Text("ing".into()),
        TextKey::Body("of the".into()),
        TextKey::Text("example.org".into()),
        TextKey::Text("für".into()),
        TextKey::subject("test"),
        TextKey::Header("Received".into(), "mx17.example.net".into()),
    ]
}

async fn measure(dir: &Path) -> mailvault::Result<()> {
    let started = Instant::now();
    let mut mail = session(dir).await?.mailstore().await?;
    let inbox = mail.mailbox_by_name(INBOX).expect("INBOX").id;
    let view = mail.select(inbox).await?;
    let opened = started.elapsed();
    let open_rss = corpus::status_kib("VmRSS");
    let open_hwm = corpus::status_kib("VmHWM");
    let usage: Vec<String> = mail
        .index_usage()
        .iter()
        .map(|u| {
            format!(
                "{} {} ({} KiB)",
                u.kind as char,
                u.records,
                (u.key_bytes + u.value_bytes) / 1024
            )
        })
        .collect();
    println!(
        "opened (unlock, mailstore, SELECT INBOX of {} messages) in {:.2} s: VmRSS {open_rss} KiB, \
         VmHWM {open_hwm} KiB; index records: {}",
        view.messages.len(),
        opened.as_secs_f64(),
        usage.join(", ")
    );
    let emails: Vec<_> = view.messages.iter().map(|m| m.email).collect();
    let keys = queries();
    for key in &keys {
        let started = Instant::now();
        let found = mail
            .search_texts(&emails, std::slice::from_ref(key))
            .await?;
        println!(
            "  {key:?}: {} matches in {:.1} ms (VmRSS {} KiB, VmHWM {} KiB)",
            found[0].len(),
            started.elapsed().as_secs_f64() * 1e3,
            corpus::status_kib("VmRSS"),
            corpus::status_kib("VmHWM")
        );
    }
    let started = Instant::now();
    mail.search_texts(&emails, &keys).await?;
    println!(
        "  all {} keys in one search: {:.1} ms",
        keys.len(),
        started.elapsed().as_secs_f64() * 1e3
    );
    let hwm = corpus::status_kib("VmHWM");
    println!(
        "peak resident set of the session (VmHWM): {hwm} KiB = {:.1} MiB (bound 128 MiB); \
         VmRSS now {} KiB",
        hwm as f64 / 1024.0,
        corpus::status_kib("VmRSS")
    );
    drop(view);
    Ok(())
}

/// Runs this example again as a child process with `args`.
fn child(args: &[String]) {
    let status = std::process::Command::new(std::env::current_exe().expect("this example"))
        .args(args)
        .status()
        .expect("the child process");
    assert!(status.success(), "{args:?} failed");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> mailvault::Result<()> {
    let mut messages = 100_000usize;
    let mut dir: Option<PathBuf> = None;
    let mut details_apart = true;
    let mut phase: Option<String> = None;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--messages" => messages = it.next().and_then(|v| v.parse().ok()).unwrap_or(messages),
            "--dir" => dir = it.next().map(PathBuf::from),
            "--inline-details" => details_apart = false,
            "build" | "measure" => phase = Some(arg.clone()),
            other => panic!("unknown argument {other:?}"),
        }
    }
    let dir = dir.unwrap_or_else(|| {
        let base = Path::new("/dev/shm");
        let base = if base.is_dir() {
            base.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let inline = if details_apart { "" } else { "-inline" };
        base.join(format!("mailvault-search-rss-{messages}{inline}"))
    });
    match phase.as_deref() {
        Some("build") => build(&dir, messages, details_apart).await,
        Some("measure") => measure(&dir).await,
        _ => {
            let mut common = vec![
                "--messages".to_owned(),
                messages.to_string(),
                "--dir".to_owned(),
                dir.display().to_string(),
            ];
            if !details_apart {
                common.push("--inline-details".to_owned());
            }
            if !dir.join("account").exists() {
                child(&[&common[..], &["build".to_owned()]].concat());
            }
            child(&[&common[..], &["measure".to_owned()]].concat());
            Ok(())
        }
    }
}
