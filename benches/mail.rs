//! Mailbox model: cost of opening a mailbox (IMAP `SELECT` on a cold session), flag
//! updates, appends, change queries and MIME part reads, against a reference for opening.
//!
//! Every account holds one mailbox (INBOX) of N messages (N = 1k, 10k, 100k): small
//! realistic messages of 1–2 KiB (From, To, Subject, Date, Message-ID, a reply every
//! fifth message, two thirds `\Seen`, a few `\Flagged` and `$Forwarded`), appended one by
//! one with [`Mailstore::append`] into an in-memory store of its own (one store per size,
//! so that no size pays for another's objects). Each size is built once, on a thread of
//! its own (see [`off_main_arena`]), and reused by every group; the setup time is
//! printed.
//!
//! Groups:
//! - `open/N`: [`Mailstore::open`] on a fresh handle, then `SELECT INBOX`
//!   ([`Mailstore::mailbox_by_name`] and [`Mailstore::select`]): what a cold IMAP
//!   session pays before it can answer `SELECT`;
//!   `open/reference/N`: the same records the index holds for the mailbox (for each
//!   message: its message record keyed by UID; its email record with pin, internal date,
//!   size, thread, provenance, the whole envelope and every MIME part field; its
//!   reference record and its thread record) as bincode tuples, sealed with
//!   XChaCha20-Poly1305 in pages of about 32 KiB, opened and decoded into a `Vec` on one
//!   core (no I/O): what an ordinary encrypted record file costs;
//! - `flag_update/N`: `STORE uid +FLAGS (\Seen)` / `-FLAGS (\Seen)` alternately on one
//!   message ([`Mailstore::store_flags`], one commit);
//! - `append/N`: [`Mailstore::append`] of one ~4 KiB message (body upload, parse, commit);
//!   the appended messages are removed again outside the timed part every
//!   [`REMOVE_EVERY`] appends, so the mailbox stays within N..N + 50 messages;
//! - `changes_since/N`: [`Mailstore::changes_since`]`(INBOX, modseq − 10)` after 10 flag
//!   updates on 10 messages, from memory;
//! - `search/{subject,from,unseen,since,unanalyzed}/N`: [`Mailstore::search_view`] over
//!   the mailbox's view (what an IMAP server passes: its own snapshot, computed once) for
//!   `HEADER Subject "#<n> ("` (five messages: one thread), `FROM "sender7@"`, `UNSEEN`
//!   and `SINCE` the day of the middle message; `unanalyzed` is
//!   [`Mailstore::unanalyzed`], the check a server makes before a header key;
//!   `search/reference_subject/N`: the floor, the same subject search as a plain linear
//!   scan over the subjects held in memory as a `Vec<String>` (lowercased each time, as
//!   a case-insensitive match does);
//! - `mime_part/{read_part,read}/10MiB`: a 10 MiB `multipart/mixed` message (2 KiB of text,
//!   a ~10 MiB base64 attachment, 1 KiB of text at the end): [`Mailstore::read_part`] of
//!   the last text part's body (`BODY[3]`) against [`Mailstore::read`] of the whole
//!   message.
//!
//! After criterion's groups, custom measurements:
//! - open + select against the reference with medians of our own (interleaved runs: 10 at
//!   100k, more for smaller sizes), the split between open and select, and the ratio
//!   (target at 100k: ≤ 1.5); measured right after the `open` group, again after the
//!   update groups, whose expunged UIDs stay behind as vanished records, and once more
//!   after a full compaction ([`Mailstore::compact`], the state after maintenance);
//! - requests and bytes per flag update and per append (averaged over 50 operations,
//!   through a [`CountingStore`] over the same backend, measured right after the setup
//!   and before the criterion groups, on a second handle), per size;
//! - bytes the store served for the MIME part read, against the part's length and the
//!   bound `part + 2 × (64 KiB + 16)` (the part and at most the two chunks around it).
//!
//! Environment: `MAILVAULT_BENCH_SIZES=1000,10000` (comma-separated) restricts the sizes.
//!
//! Run with `cargo bench --bench mail --features testkit`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use criterion::measurement::WallTime;
use criterion::{black_box, BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use futures::TryStreamExt;
use mailvault::blob::{AccountBlobs, BlobStore};
use mailvault::crypto::{AccountKey, RandomSource};
use mailvault::directory::{Directory, MemoryDirectory};
use mailvault::ids::{AccountId, DeploymentId, MailboxId};
use mailvault::index::IndexStore;
use mailvault::mail::{
    AppendOptions, EmailRecord, FlagChange, Flags, HeaderField, Mailstore, PartSection, SearchDay,
    SearchKey, INBOX,
};
use mailvault::storage::{naming, open_store, CountingStore, DynStore, RequestKind};
use tokio::runtime::Runtime;

const SIZES: [usize; 3] = [1_000, 10_000, 100_000];
/// Plaintext bytes per page of the reference.
const PAGE: usize = 32 * 1024;
/// Appends between two removals of what the `append` group appended.
const REMOVE_EVERY: usize = 50;
/// Operations per request count.
const COUNTED_OPS: usize = 50;
/// Size of the large message of `mime_part`.
const BIG_MESSAGE: usize = 10 << 20;
/// Plaintext chunk and tag of a blob (`crypto::stream`): a ranged read fetches at most
/// one partial chunk on each side of the range.
const BLOB_CHUNK: u64 = 64 * 1024;
const BLOB_TAG: u64 = 16;
/// 2026-01-01T00:00:00Z: dates of the messages start there.
const BASE_DATE: i64 = 1_767_225_600;

/// Sizes to build (`MAILVAULT_BENCH_SIZES`, comma-separated, overrides).
fn sizes() -> Vec<usize> {
    match std::env::var("MAILVAULT_BENCH_SIZES") {
        Ok(list) => list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse()
                    .ok()
                    .filter(|&n: &usize| n > 0)
                    .unwrap_or_else(|| panic!("MAILVAULT_BENCH_SIZES: not a size: {s:?}"))
            })
            .collect(),
        Err(_) => SIZES.to_vec(),
    }
}

fn label(messages: usize) -> String {
    if messages.is_multiple_of(1000) {
        format!("{}k", messages / 1000)
    } else {
        messages.to_string()
    }
}

// ---------------------------------------------------------------------------- messages

/// 32 words the text of the messages is made of.
const WORDS: &str = "the meeting budget report is attached please review before friday we should \
    discuss next steps with team about project timeline and deliverables thanks for your \
    quick reply regards schedule call tomorrow morning";

fn word(n: usize) -> &'static str {
    WORDS.split_whitespace().nth(n % 32).expect("32 words")
}

/// About `len` bytes of English-looking text in CRLF lines of at most 72 characters,
/// depending on `seed`.
fn text(seed: u64, len: usize) -> String {
    let noise = mailvault::testkit::pattern(seed, len / 3 + 16);
    let words: Vec<&str> = WORDS.split_whitespace().collect();
    let mut out = String::with_capacity(len + 80);
    let mut line = 0;
    for byte in noise.iter().cycle() {
        if out.len() >= len {
            break;
        }
        let word = words[usize::from(byte & 31)];
        if line + word.len() + 1 > 72 {
            out.push_str("\r\n");
            line = 0;
        } else if line > 0 {
            out.push(' ');
            line += 1;
        }
        out.push_str(word);
        line += word.len();
    }
    out.push_str("\r\n");
    out
}

fn rfc2822(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .expect("a valid date")
        .to_rfc2822()
}

fn message_id(i: u64) -> String {
    format!(
        "{i}.{:08x}@mail.example.org",
        i.wrapping_mul(0x9E37_79B9) as u32
    )
}

/// Message `i` of a mailbox: 1–2 KiB.
fn small_message(i: u64) -> Vec<u8> {
    let sender = i % 211;
    let mut m = format!(
        "From: \"Sender {sender}\" <sender{sender}@example{}.org>\r\n\
         To: \"Mail Owner\" <owner@example.com>\r\n\
         Subject: Re: project update #{} ({})\r\n\
         Date: {}\r\n\
         Message-ID: <{}>\r\n",
        i % 13,
        i / 5,
        word(i as usize),
        rfc2822(BASE_DATE + i as i64 * 397),
        message_id(i),
    );
    if !i.is_multiple_of(5) {
        // A reply to the previous message: one thread per five messages.
        m.push_str(&format!(
            "In-Reply-To: <{}>\r\nReferences: <{}>\r\n",
            message_id(i - 1),
            message_id(i - 1)
        ));
    }
    m.push_str("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n");
    m.push_str(&text(i, 700 + (i as usize * 7919) % 900));
    m.into_bytes()
}

/// Initial flags of message `i`: two thirds seen, some flagged, some forwarded.
fn initial_flags(i: u64) -> Flags {
    let mut names = Vec::new();
    if !i.is_multiple_of(3) {
        names.push(Flags::SEEN);
    }
    if i % 50 == 7 {
        names.push(Flags::FLAGGED);
    }
    if i.is_multiple_of(17) {
        names.push("$Forwarded");
    }
    Flags::from_names(names).expect("valid flags")
}

/// A message of about 4 KiB for the `append` group.
fn append_message(i: u64) -> Vec<u8> {
    format!(
        "From: \"Appender\" <appender@example.net>\r\n\
         To: \"Mail Owner\" <owner@example.com>\r\n\
         Subject: Appended message {i}\r\n\
         Date: {}\r\n\
         Message-ID: <append.{i}@example.net>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n{}",
        rfc2822(BASE_DATE + 86_400 * 365 + i as i64),
        text(i ^ 0xA99E, 3800),
    )
    .into_bytes()
}

fn base64_lines(data: &[u8]) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(data.len() / 57 * 78 + 80);
    for line in data.chunks(57) {
        for group in line.chunks(3) {
            let b = [
                group[0],
                group.get(1).copied().unwrap_or(0),
                group.get(2).copied().unwrap_or(0),
            ];
            let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
            for (k, shift) in [18, 12, 6, 0].into_iter().enumerate() {
                if k <= group.len() {
                    out.push(ALPHABET[(n >> shift) as usize & 63]);
                } else {
                    out.push(b'=');
                }
            }
        }
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The 10 MiB message: text, a base64 attachment, text. Returns it and the last text
/// part's body (without the CRLF before the closing delimiter, which belongs to the
/// delimiter: RFC 2046 §5.1.1).
fn big_message() -> (Vec<u8>, Vec<u8>) {
    const BOUNDARY: &str = "=_mailvault_bench_7f3a9c";
    let first = text(1, 2048);
    let last = text(3, 1024);
    let mut m = format!(
        "From: \"Archive Robot\" <robot@example.net>\r\n\
         To: \"Mail Owner\" <owner@example.com>\r\n\
         Subject: Quarterly data export\r\n\
         Date: {}\r\n\
         Message-ID: <export.1@example.net>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"{BOUNDARY}\"\r\n\r\n\
         This is a multi-part message in MIME format.\r\n\
         --{BOUNDARY}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n\
         {first}\
         --{BOUNDARY}\r\n\
         Content-Type: application/octet-stream; name=\"export.bin\"\r\n\
         Content-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=\"export.bin\"\r\n\r\n",
        rfc2822(BASE_DATE),
    )
    .into_bytes();
    let raw_len = (BIG_MESSAGE - m.len() - last.len() - 200) / 78 * 57;
    m.extend_from_slice(&base64_lines(&mailvault::testkit::pattern(0xB16, raw_len)));
    m.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{last}--{BOUNDARY}--\r\n"
        )
        .as_bytes(),
    );
    let body = last.strip_suffix("\r\n").expect("text ends with CRLF");
    (m, body.as_bytes().to_vec())
}

// ---------------------------------------------------------------------------- fixtures

/// One account on an in-memory store of its own.
struct Account {
    store: DynStore,
    deployment: DeploymentId,
    directory: Arc<dyn Directory>,
    index: IndexStore,
    account: AccountId,
    key: AccountKey,
}

impl Account {
    async fn new() -> Self {
        let rng = RandomSource::os();
        let store = open_store("memory://").expect("memory store");
        let deployment = DeploymentId::random(&rng);
        let directory: Arc<dyn Directory> = Arc::new(MemoryDirectory::new());
        let index = IndexStore::new(store.clone(), deployment, directory.clone())
            .await
            .expect("index store");
        Self {
            store,
            deployment,
            directory,
            index,
            account: AccountId::random(&rng),
            key: AccountKey::generate(1, &rng),
        }
    }

    fn blobs(&self) -> AccountBlobs {
        BlobStore::new(self.store.clone(), self.deployment).account(self.account, &self.key)
    }

    /// A fresh handle: what a new IMAP session opens.
    async fn open(&self) -> Mailstore {
        Mailstore::open(&self.index, self.blobs(), &self.key)
            .await
            .expect("open mail")
    }

    /// A second handle on the same account, through a [`CountingStore`] over the same
    /// backend (its log reset once the handle is open).
    async fn counted(&self) -> (CountingStore, Mailstore) {
        let counting = CountingStore::new(self.store.clone());
        let store: DynStore = Arc::new(counting.clone());
        let index = IndexStore::new(store.clone(), self.deployment, self.directory.clone())
            .await
            .expect("counted index store");
        let blobs = BlobStore::new(store, self.deployment).account(self.account, &self.key);
        let mail = Mailstore::open(&index, blobs, &self.key)
            .await
            .expect("open counted mail");
        counting.reset();
        (counting, mail)
    }
}

fn inbox_of(mail: &Mailstore) -> MailboxId {
    mail.mailbox_by_name(INBOX).expect("the inbox exists").id
}

fn seen() -> Flags {
    Flags::from_names([Flags::SEEN]).expect("\\Seen")
}

/// Toggles `\Seen` on `uid` (`state` is whether it is set now): one commit.
async fn toggle_seen(mail: &mut Mailstore, inbox: MailboxId, uid: u32, state: &mut bool) {
    let change = if *state {
        FlagChange::Remove(seen())
    } else {
        FlagChange::Add(seen())
    };
    let stored = mail
        .store_flags(inbox, &[uid], change, None)
        .await
        .expect("store flags");
    debug_assert_eq!(stored.updated, [uid]);
    *state = !*state;
}

/// One mailbox of `messages` messages.
struct Fixture {
    messages: usize,
    account: Account,
    /// The long-lived handle the update groups use.
    mail: Mailstore,
    inbox: MailboxId,
    /// The message `flag_update` toggles, and whether it is `\Seen` now.
    flag_uid: u32,
    flag_seen: bool,
    /// Seed of the next message `append` appends.
    next_append: u64,
    /// Requests and bytes per operation, measured after the setup.
    costs: Option<Costs>,
    /// Index segments stored after the setup, and their bytes.
    segments: usize,
    segment_bytes: u64,
}

impl Fixture {
    async fn build(messages: usize) -> Self {
        let account = Account::new().await;
        let mut mail = account.open().await;
        let inbox = inbox_of(&mail);
        for i in 0..messages as u64 {
            let options = AppendOptions {
                flags: initial_flags(i),
                internal_date: Some(BASE_DATE + i as i64 * 397 + 30),
                provenance: None,
            };
            mail.append(inbox, &small_message(i), options)
                .await
                .expect("append");
        }
        let flag_uid = (messages / 2) as u32 + 1;
        // A known state for the toggles.
        mail.store_flags(inbox, &[flag_uid], FlagChange::Remove(seen()), None)
            .await
            .expect("store flags");
        // Old segments of the tier compactions go: the stored index is then what an
        // open reads.
        mail.collect_garbage(Duration::ZERO).await.expect("gc");
        let view = mail.select(inbox).await.expect("select");
        assert_eq!(view.status.messages as usize, messages);
        let index_prefix = object_store::path::Path::from(format!(
            "{}/i",
            naming::account_prefix(&account.account)
        ));
        let segments: Vec<u64> = account
            .store
            .list(Some(&index_prefix))
            .try_collect::<Vec<_>>()
            .await
            .expect("list")
            .iter()
            .filter(|m| m.location.as_ref().contains("/s/"))
            .map(|m| m.size)
            .collect();
        Self {
            segments: segments.len(),
            segment_bytes: segments.iter().sum(),
            messages,
            account,
            mail,
            inbox,
            flag_uid,
            flag_seen: false,
            next_append: 0,
            costs: None,
        }
    }

    async fn flag_update(&mut self) {
        toggle_seen(
            &mut self.mail,
            self.inbox,
            self.flag_uid,
            &mut self.flag_seen,
        )
        .await;
    }

    /// A fresh handle, then `SELECT INBOX`.
    async fn open_select(&self) -> (Mailstore, mailvault::mail::MailboxView) {
        let mut mail = self.account.open().await;
        let inbox = inbox_of(&mail);
        let view = mail.select(inbox).await.expect("select");
        (mail, view)
    }

    /// Requests and bytes per flag update and per append, on a second handle through a
    /// [`CountingStore`]; the appended messages are removed afterwards.
    async fn measure_costs(&mut self) {
        let (counting, mut mail) = self.account.counted().await;
        let inbox = inbox_of(&mail);
        let uid = self.flag_uid + 1;
        let mut state = mail
            .view(inbox)
            .expect("view")
            .messages
            .iter()
            .find(|m| m.uid == uid)
            .expect("message")
            .flags
            .contains(Flags::SEEN);
        counting.reset();
        for _ in 0..COUNTED_OPS {
            toggle_seen(&mut mail, inbox, uid, &mut state).await;
        }
        let flag_update = Cost::of(&counting, COUNTED_OPS);
        let bodies: Vec<Vec<u8>> = (0..COUNTED_OPS)
            .map(|k| append_message(1_000_000 + k as u64))
            .collect();
        let mut appended = Vec::new();
        counting.reset();
        for body in &bodies {
            let a = mail
                .append(inbox, body, AppendOptions::default())
                .await
                .expect("append");
            appended.push(a.uid);
        }
        let append = Cost::of(&counting, COUNTED_OPS);
        mail.remove(inbox, &appended).await.expect("remove");
        // The long-lived handle catches up with what the second one committed.
        self.mail.refresh().await.expect("refresh");
        self.costs = Some(Costs {
            flag_update,
            append,
        });
    }
}

/// Requests and bytes per operation.
#[derive(Debug, Clone, Copy)]
struct Cost {
    requests: f64,
    puts: f64,
    gets: f64,
    lists: f64,
    deletes: f64,
    written: f64,
    read: f64,
}

impl Cost {
    fn of(counting: &CountingStore, ops: usize) -> Self {
        let requests = counting.requests();
        let per = |n: usize| n as f64 / ops as f64;
        let count =
            |f: &dyn Fn(RequestKind) -> bool| per(requests.iter().filter(|r| f(r.kind)).count());
        Cost {
            requests: per(requests.len()),
            puts: count(&|k| {
                matches!(
                    k,
                    RequestKind::Put
                        | RequestKind::MultipartStart
                        | RequestKind::MultipartPart
                        | RequestKind::MultipartComplete
                )
            }),
            gets: count(&|k| matches!(k, RequestKind::Get | RequestKind::Head)),
            lists: count(&|k| k == RequestKind::List),
            deletes: count(&|k| k == RequestKind::Delete),
            written: counting.bytes_written() as f64 / ops as f64,
            read: requests
                .iter()
                .filter(|r| r.kind == RequestKind::Get)
                .map(|r| r.bytes)
                .sum::<u64>() as f64
                / ops as f64,
        }
    }

    fn print(&self, what: &str) {
        println!(
            "  {what:<22} {:>6.2} requests ({:.2} put, {:.2} get, {:.2} list, {:.2} delete)  \
             {:>9.0} B written  {:>9.0} B read",
            self.requests, self.puts, self.gets, self.lists, self.deletes, self.written, self.read
        );
    }
}

struct Costs {
    flag_update: Cost,
    append: Cost,
}

/// The 10 MiB message in a mailbox of its own.
struct BigMessage {
    account: Account,
    mail: Mailstore,
    email: EmailRecord,
    /// Index of the last text part in `email.parts`.
    part: usize,
    expected: Vec<u8>,
}

impl BigMessage {
    async fn build() -> Self {
        let account = Account::new().await;
        let mut mail = account.open().await;
        let inbox = inbox_of(&mail);
        let (raw, expected) = big_message();
        let appended = mail
            .append(inbox, &raw, AppendOptions::default())
            .await
            .expect("append the large message");
        let email = mail.email(inbox, appended.uid).expect("email record");
        assert_eq!(email.size, raw.len() as u64);
        let part = Mailstore::imap_section(&email, &[3]).expect("BODY[3]");
        let p = &email.parts[part];
        assert_eq!(
            (p.content_type.as_str(), p.subtype.as_str()),
            ("text", "plain"),
            "BODY[3] is the last text part"
        );
        Self {
            account,
            mail,
            email,
            part,
            expected,
        }
    }

    async fn read_part(&self) -> bytes::Bytes {
        self.mail
            .read_part(&self.email, self.part, PartSection::Body)
            .await
            .expect("read part")
    }
}

struct Bench {
    rt: Runtime,
    fixtures: Vec<Fixture>,
    big: BigMessage,
}

/// Runs `f` on a thread of its own, for the setup: glibc's malloc then serves it from
/// another arena than the main thread's. The setup of 100k messages leaves its arena
/// fragmented (long-lived records interleaved with freed temporaries), and every
/// allocation-heavy operation served from that arena afterwards (an open, the
/// reference's decoding alike) was measured 6–10× slower than in a fresh process
/// (`malloc_consolidate` and `_int_malloc` on top of the profile). The timed parts run on
/// the main thread, whose arena stays clean.
fn off_main_arena<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| scope.spawn(f).join().expect("setup thread"))
}

fn build_all() -> Bench {
    let rt = Runtime::new().expect("tokio runtime");
    let mut fixtures = Vec::new();
    for messages in sizes() {
        let started = Instant::now();
        let mut fixture = off_main_arena(|| rt.block_on(Fixture::build(messages)));
        let built = started.elapsed();
        off_main_arena(|| rt.block_on(fixture.measure_costs()));
        eprintln!(
            "setup {}: {messages} messages appended in {built:.2?} ({:.1} µs/append); \
             index: {} segments, {} bytes ({:.1} B/message)",
            label(messages),
            built.as_secs_f64() * 1e6 / messages as f64,
            fixture.segments,
            fixture.segment_bytes,
            fixture.segment_bytes as f64 / messages as f64,
        );
        fixtures.push(fixture);
    }
    let started = Instant::now();
    let big = off_main_arena(|| rt.block_on(BigMessage::build()));
    eprintln!(
        "setup mime_part: {} bytes, {} parts, appended in {:.2?}",
        big.email.size,
        big.email.parts.len(),
        started.elapsed()
    );
    let body = rt.block_on(big.read_part());
    assert!(
        body[..] == big.expected[..],
        "BODY[3] is {} bytes, the part written {} bytes",
        body.len(),
        big.expected.len()
    );
    Bench { rt, fixtures, big }
}

fn configure(group: &mut BenchmarkGroup<'_, WallTime>, messages: usize) {
    group.warm_up_time(Duration::from_millis(300));
    group.measurement_time(if messages >= 100_000 {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(2)
    });
    group.sample_size(10);
}

// ---------------------------------------------------------------------------- reference

type RefAddress = (Option<String>, String);
/// Date, subject, (from, sender, reply-to, to, cc, bcc), message-id, in-reply-to,
/// references.
type RefEnvelope = (
    Option<i64>,
    Option<String>,
    [Vec<RefAddress>; 6],
    Option<String>,
    Vec<String>,
    Vec<String>,
);
/// Parent, type, subtype, parameters, (transfer encoding, disposition, filename,
/// content id), header/body/end offsets, lines.
type RefPart = (
    Option<u32>,
    String,
    String,
    Vec<(String, String)>,
    [Option<String>; 4],
    u64,
    u64,
    u64,
    u32,
);
/// UID, email id, modseq, size, system flags, keywords.
type RefMessage = (u32, [u8; 16], u64, u64, u8, Vec<String>);
/// Pin, internal date, size, thread, provenance, envelope, parts.
type RefEmail = (Vec<u8>, i64, u64, [u8; 16], u8, RefEnvelope, Vec<RefPart>);
/// The message's reference record (email id, instance, mailbox) and its thread record
/// (hashed Message-ID, thread id): the index holds both for every message.
type RefIndexRecords = (([u8; 16], [u8; 8], [u8; 16]), ([u8; 16], [u8; 16]));
type RefRecord = (RefMessage, RefEmail, RefIndexRecords);

fn flag_bits(flags: &Flags) -> (u8, Vec<String>) {
    const SYSTEM: [&str; 5] = [
        Flags::SEEN,
        Flags::ANSWERED,
        Flags::FLAGGED,
        Flags::DELETED,
        Flags::DRAFT,
    ];
    let mut bits = 0u8;
    let mut keywords = Vec::new();
    for name in flags.names() {
        match SYSTEM.iter().position(|s| *s == name) {
            Some(i) => bits |= 1 << i,
            None => keywords.push(name.to_owned()),
        }
    }
    (bits, keywords)
}

/// The records of a mailbox as bincode pages of about `PAGE` bytes, each sealed with
/// XChaCha20-Poly1305 (`nonce`, `ciphertext ‖ tag`).
struct Reference {
    cipher: XChaCha20Poly1305,
    pages: Vec<([u8; 24], Vec<u8>)>,
    records: usize,
    sealed_bytes: usize,
}

impl Reference {
    /// From the records `mail` holds for `inbox`.
    fn new(mail: &Mailstore, inbox: MailboxId) -> Self {
        let view = mail.view(inbox).expect("view");
        let records: Vec<RefRecord> = view
            .messages
            .iter()
            .map(|m| {
                let e = mail.email_by_id(m.email).expect("email record");
                let (bits, keywords) = flag_bits(&m.flags);
                let address = |a: &mailvault::mail::Address| (a.name.clone(), a.email.clone());
                let addresses =
                    |list: &[mailvault::mail::Address]| list.iter().map(address).collect();
                let envelope: RefEnvelope = (
                    e.envelope.date,
                    e.envelope.subject.clone(),
                    [
                        addresses(&e.envelope.from),
                        addresses(&e.envelope.sender),
                        addresses(&e.envelope.reply_to),
                        addresses(&e.envelope.to),
                        addresses(&e.envelope.cc),
                        addresses(&e.envelope.bcc),
                    ],
                    e.envelope.message_id.clone(),
                    e.envelope.in_reply_to.clone(),
                    e.envelope.references.clone(),
                );
                let parts = e
                    .parts
                    .iter()
                    .map(|p| {
                        (
                            p.parent,
                            p.content_type.clone(),
                            p.subtype.clone(),
                            p.params.clone(),
                            [
                                p.transfer_encoding.clone(),
                                p.disposition.clone(),
                                p.filename.clone(),
                                p.content_id.clone(),
                            ],
                            p.header_offset,
                            p.body_offset,
                            p.end_offset,
                            p.lines,
                        )
                    })
                    .collect();
                let provenance = match e.provenance {
                    mailvault::mail::Provenance::KeyHolder => 1,
                    mailvault::mail::Provenance::SealedDelivery => 2,
                };
                (
                    (m.uid, *m.email.as_bytes(), m.modseq, m.size, bits, keywords),
                    (
                        e.pin.to_bytes().to_vec(),
                        e.internal_date,
                        e.size,
                        *e.thread.as_bytes(),
                        provenance,
                        envelope,
                        parts,
                    ),
                    (
                        (*m.email.as_bytes(), [m.uid as u8; 8], *inbox.as_bytes()),
                        (*e.thread.as_bytes(), *e.thread.as_bytes()),
                    ),
                )
            })
            .collect();
        let cipher = XChaCha20Poly1305::new(&[7u8; 32].into());
        let mut pages = Vec::new();
        let mut start = 0;
        let mut size = 0;
        let seal = |page: &[RefRecord], pages: &mut Vec<([u8; 24], Vec<u8>)>| {
            let mut nonce = [0u8; 24];
            nonce[..8].copy_from_slice(&(pages.len() as u64).to_be_bytes());
            let plain = bincode::serialize(page).expect("bincode");
            let sealed = cipher
                .encrypt(
                    XNonce::from_slice(&nonce),
                    Payload {
                        msg: &plain,
                        aad: b"reference",
                    },
                )
                .expect("seal");
            pages.push((nonce, sealed));
        };
        for (i, record) in records.iter().enumerate() {
            size += bincode::serialized_size(record).expect("size") as usize;
            if size >= PAGE {
                seal(&records[start..=i], &mut pages);
                start = i + 1;
                size = 0;
            }
        }
        if start < records.len() {
            seal(&records[start..], &mut pages);
        }
        let sealed_bytes = pages.iter().map(|(n, c)| n.len() + c.len()).sum();
        let reference = Self {
            cipher,
            pages,
            records: records.len(),
            sealed_bytes,
        };
        assert_eq!(reference.open(), records);
        reference
    }

    fn open(&self) -> Vec<RefRecord> {
        let mut all = Vec::with_capacity(self.records);
        for (nonce, sealed) in &self.pages {
            let plain = self
                .cipher
                .decrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: sealed,
                        aad: b"reference",
                    },
                )
                .expect("open");
            let page: Vec<RefRecord> = bincode::deserialize(&plain).expect("decode");
            all.extend(page);
        }
        all
    }
}

// ---------------------------------------------------------------------------- groups

fn open_group(c: &mut Criterion, b: &Bench, references: &[Reference]) {
    let mut group = c.benchmark_group("open");
    for (fixture, reference) in b.fixtures.iter().zip(references) {
        let messages = fixture.messages;
        configure(&mut group, messages);
        group.throughput(Throughput::Elements(messages as u64));
        group.bench_function(BenchmarkId::new("reference", label(messages)), |bench| {
            bench.iter_with_large_drop(|| black_box(reference).open())
        });
        let (_, view) = b.rt.block_on(fixture.open_select());
        assert_eq!(view.messages.len(), messages);
        group.bench_function(BenchmarkId::from_parameter(label(messages)), |bench| {
            bench.iter_with_large_drop(|| b.rt.block_on(fixture.open_select()))
        });
    }
    group.finish();
}

fn flag_update_group(c: &mut Criterion, b: &mut Bench) {
    let mut group = c.benchmark_group("flag_update");
    for fixture in &mut b.fixtures {
        configure(&mut group, fixture.messages);
        let rt = &b.rt;
        group.bench_function(
            BenchmarkId::from_parameter(label(fixture.messages)),
            |bench| bench.iter(|| rt.block_on(fixture.flag_update())),
        );
    }
    group.finish();
}

fn changes_group(c: &mut Criterion, b: &mut Bench) {
    let mut group = c.benchmark_group("changes_since");
    for fixture in &mut b.fixtures {
        configure(&mut group, fixture.messages);
        let inbox = fixture.inbox;
        let messages = fixture.messages as u32;
        b.rt.block_on(async {
            for k in 0..10u32 {
                // Ten distinct messages, none of them flagged yet (i % 50 != 7).
                let uid = 1 + (k * 50 + 1) % messages;
                let flagged = Flags::from_names([Flags::FLAGGED]).expect("\\Flagged");
                fixture
                    .mail
                    .store_flags(inbox, &[uid], FlagChange::Add(flagged), None)
                    .await
                    .expect("store flags");
            }
        });
        let mail = &fixture.mail;
        let since = mail.modseq() - 10;
        let changes = mail.changes_since(inbox, since).expect("changes");
        assert!(
            !changes.changed.is_empty() && changes.changed.len() <= 10,
            "{} changes",
            changes.changed.len()
        );
        group.bench_function(
            BenchmarkId::from_parameter(label(fixture.messages)),
            |bench| bench.iter(|| black_box(mail.changes_since(inbox, black_box(since)))),
        );
    }
    group.finish();
}

fn append_group(c: &mut Criterion, b: &mut Bench) {
    let mut group = c.benchmark_group("append");
    for fixture in &mut b.fixtures {
        configure(&mut group, fixture.messages);
        // Removals (untimed) scan the mailbox: a shorter target keeps the wall time
        // reasonable at 100k.
        group.measurement_time(Duration::from_secs(1));
        group.throughput(Throughput::Bytes(append_message(0).len() as u64));
        let rt = &b.rt;
        let inbox = fixture.inbox;
        group.bench_function(
            BenchmarkId::from_parameter(label(fixture.messages)),
            |bench| {
                bench.iter_custom(|iters| {
                    rt.block_on(async {
                        let mut timed = Duration::ZERO;
                        let mut appended = Vec::with_capacity(REMOVE_EVERY);
                        for _ in 0..iters {
                            let body = append_message(fixture.next_append);
                            fixture.next_append += 1;
                            let started = Instant::now();
                            let a = fixture
                                .mail
                                .append(inbox, &body, AppendOptions::default())
                                .await
                                .expect("append");
                            timed += started.elapsed();
                            appended.push(a.uid);
                            if appended.len() >= REMOVE_EVERY {
                                fixture.mail.remove(inbox, &appended).await.expect("remove");
                                appended.clear();
                            }
                        }
                        if !appended.is_empty() {
                            fixture.mail.remove(inbox, &appended).await.expect("remove");
                        }
                        timed
                    })
                })
            },
        );
        let status = fixture.mail.status(inbox).expect("status");
        assert_eq!(status.messages as usize, fixture.messages);
    }
    group.finish();
}

/// Case-insensitive substring search as the reference does it: both sides lowercased.
fn reference_contains(haystack: &str, needle_lower: &str) -> bool {
    haystack.to_lowercase().contains(needle_lower)
}

fn search_group(c: &mut Criterion, b: &Bench) {
    let mut group = c.benchmark_group("search");
    for fixture in &b.fixtures {
        let messages = fixture.messages;
        configure(&mut group, messages);
        group.throughput(Throughput::Elements(messages as u64));
        let mail = &fixture.mail;
        let view = mail.view(fixture.inbox).expect("view");
        assert_eq!(view.messages.len(), messages);
        // The floor: the subjects in memory, scanned.
        let subjects: Vec<String> = view
            .messages
            .iter()
            .map(|m| {
                mail.email(fixture.inbox, m.uid)
                    .expect("email")
                    .envelope
                    .subject
                    .unwrap_or_default()
            })
            .collect();
        let thread = messages as u64 / 10;
        let needle = format!("#{thread} (");
        let middle = BASE_DATE + (messages as i64 / 2) * 397;
        let keys = [
            (
                "subject",
                SearchKey::Header(HeaderField::Subject, needle.to_uppercase()),
                5,
            ),
            (
                "from",
                SearchKey::Header(HeaderField::From, "SENDER7@".to_owned()),
                (0..messages).filter(|i| i % 211 == 7).count(),
            ),
            (
                "unseen",
                SearchKey::NoFlag(Flags::SEEN.to_owned()),
                view.messages
                    .iter()
                    .filter(|m| !m.flags.contains(Flags::SEEN))
                    .count(),
            ),
            (
                "since",
                SearchKey::Since(SearchDay::of_timestamp(middle)),
                0,
            ),
        ];
        for (name, key, expected) in &keys {
            let found = mail.search_view(&view, key).expect("search");
            if *name != "since" {
                assert_eq!(found.len(), *expected, "{name}: {found:?}");
            } else {
                assert!(
                    found.len() > messages / 2 - 500 && found.len() < messages / 2 + 500,
                    "since: {} found",
                    found.len()
                );
            }
            group.bench_function(BenchmarkId::new(*name, label(messages)), |bench| {
                bench.iter_with_large_drop(|| mail.search_view(&view, black_box(key)))
            });
        }
        assert!(mail.unanalyzed(&view).expect("unanalyzed").is_empty());
        group.bench_function(BenchmarkId::new("unanalyzed", label(messages)), |bench| {
            bench.iter_with_large_drop(|| mail.unanalyzed(black_box(&view)))
        });
        let needle_lower = needle.to_lowercase();
        let uids: Vec<u32> = view.messages.iter().map(|m| m.uid).collect();
        let found: Vec<u32> = subjects
            .iter()
            .zip(&uids)
            .filter(|(s, _)| reference_contains(s, &needle_lower))
            .map(|(_, &u)| u)
            .collect();
        assert_eq!(found.len(), 5);
        group.bench_function(
            BenchmarkId::new("reference_subject", label(messages)),
            |bench| {
                bench.iter_with_large_drop(|| {
                    let needle = black_box(&needle).to_lowercase();
                    subjects
                        .iter()
                        .zip(&uids)
                        .filter(|(s, _)| reference_contains(s, &needle))
                        .map(|(_, &u)| u)
                        .collect::<Vec<u32>>()
                })
            },
        );
    }
    group.finish();
}

fn mime_group(c: &mut Criterion, b: &Bench) {
    let mut group = c.benchmark_group("mime_part");
    configure(&mut group, 0);
    let big = &b.big;
    let part_len = big.expected.len();
    group.throughput(Throughput::Bytes(part_len as u64));
    group.bench_function(BenchmarkId::new("read_part", "10MiB"), |bench| {
        bench.iter_with_large_drop(|| b.rt.block_on(big.read_part()))
    });
    group.throughput(Throughput::Bytes(big.email.size));
    group.bench_function(BenchmarkId::new("read", "10MiB"), |bench| {
        bench.iter_with_large_drop(|| {
            b.rt.block_on(big.mail.read(&big.email))
                .expect("read message")
        })
    });
    group.finish();
}

// ---------------------------------------------------------------------------- reports

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Open + select against the reference, medians of our own, for one size.
struct OpenRow {
    messages: usize,
    runs: usize,
    open: Duration,
    select: Duration,
    total: Duration,
    reference: Duration,
    pages: usize,
    sealed_per_record: f64,
    /// UIDNEXT - 1 - messages: UIDs expunged so far (each keeps a vanished record).
    expunged: u32,
}

/// Open + select on a fresh handle against the reference, interleaved runs.
fn measure_open(b: &Bench, references: &[Reference]) -> Vec<OpenRow> {
    let mut rows = Vec::new();
    for (fixture, reference) in b.fixtures.iter().zip(references) {
        let runs = (1_000_000 / fixture.messages).clamp(10, 200);
        let (mut reference_t, mut open_t, mut select_t, mut total_t) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut expunged = 0;
        for _ in 0..runs {
            let started = Instant::now();
            let records = black_box(reference.open());
            reference_t.push(started.elapsed());
            drop(records);
            let (opened, view) = b.rt.block_on(async {
                let started = Instant::now();
                let mut mail = fixture.account.open().await;
                let opened = started.elapsed();
                let inbox = inbox_of(&mail);
                let view = mail.select(inbox).await.expect("select");
                let total = started.elapsed();
                open_t.push(opened);
                select_t.push(total - opened);
                total_t.push(total);
                (mail, view)
            });
            expunged = view.status.uid_next - 1 - view.status.messages;
            drop((opened, view));
        }
        rows.push(OpenRow {
            messages: fixture.messages,
            runs,
            open: median(open_t),
            select: median(select_t),
            total: median(total_t),
            reference: median(reference_t),
            pages: reference.pages.len(),
            sealed_per_record: reference.sealed_bytes as f64 / reference.records as f64,
            expunged,
        });
    }
    rows
}

fn open_report(what: &str, rows: &[OpenRow]) {
    println!(
        "\nopen + SELECT INBOX on a fresh handle against the reference, {what} (medians of \
         interleaved runs; target at 100k: ratio <= 1.5)"
    );
    for row in rows {
        println!(
            "  {:>5}: open+select {:>9.2?} (open {:>9.2?}, select {:>9.2?})  reference {:>9.2?} \
             ({} pages, {:.1} B/record)  ratio {:.2}  ({} runs, {} UIDs expunged so far)",
            label(row.messages),
            row.total,
            row.open,
            row.select,
            row.reference,
            row.pages,
            row.sealed_per_record,
            row.total.as_secs_f64() / row.reference.as_secs_f64(),
            row.runs,
            row.expunged,
        );
    }
}

fn cost_report(b: &Bench) {
    println!(
        "\nrequests and bytes per operation ({COUNTED_OPS} operations each, CountingStore, \
         measured after the setup)"
    );
    for fixture in &b.fixtures {
        let costs = fixture.costs.as_ref().expect("measured");
        costs
            .flag_update
            .print(&format!("flag_update/{}", label(fixture.messages)));
        costs
            .append
            .print(&format!("append/{}", label(fixture.messages)));
    }
    let first = b.fixtures.first().and_then(|f| f.costs.as_ref());
    let last = b.fixtures.last().and_then(|f| f.costs.as_ref());
    if let (Some(first), Some(last), true) = (first, last, b.fixtures.len() > 1) {
        let (small, large) = (
            label(b.fixtures[0].messages),
            label(b.fixtures[b.fixtures.len() - 1].messages),
        );
        for (what, a, z) in [
            ("flag_update", first.flag_update, last.flag_update),
            ("append", first.append, last.append),
        ] {
            println!(
                "  {what:<22} {large}/{small}: requests {:.2}  bytes written {:.2}  bytes read {:.2}",
                z.requests / a.requests,
                z.written / a.written,
                if a.read > 0.0 { z.read / a.read } else { f64::NAN },
            );
        }
    }
}

fn mime_report(b: &Bench) {
    let big = &b.big;
    let rt = &b.rt;
    let (counting, mail) = rt.block_on(big.account.counted());
    let part_len = rt
        .block_on(mail.read_part(&big.email, big.part, PartSection::Body))
        .expect("read part")
        .len() as u64;
    let requests = counting.requests();
    let gets: Vec<_> = requests
        .iter()
        .filter(|r| r.kind == RequestKind::Get)
        .collect();
    let fetched: u64 = gets.iter().map(|r| r.bytes).sum();
    let bound = part_len + 2 * (BLOB_CHUNK + BLOB_TAG);
    counting.reset();
    let whole = rt.block_on(mail.read(&big.email)).expect("read").len();
    let whole_fetched: u64 = counting
        .requests()
        .iter()
        .filter(|r| r.kind == RequestKind::Get)
        .map(|r| r.bytes)
        .sum();
    println!(
        "\nMIME part read of a {} byte message: BODY[3] is {part_len} bytes; {} requests \
         ({} GET) fetched {fetched} bytes; bound part + 2 x (64 KiB + 16) = {bound}: {}\n  \
         whole message: {whole} bytes, {whole_fetched} bytes fetched",
        big.email.size,
        requests.len(),
        gets.len(),
        if fetched <= bound {
            "within"
        } else {
            "EXCEEDED"
        },
    );
}

fn main() {
    let mut bench = build_all();
    let references: Vec<Reference> = bench
        .fixtures
        .iter()
        .map(|f| {
            let reference = off_main_arena(|| Reference::new(&f.mail, f.inbox));
            eprintln!(
                "reference/{}: {} records, {} pages, {} sealed bytes ({:.1} B/record)",
                label(f.messages),
                reference.records,
                reference.pages.len(),
                reference.sealed_bytes,
                reference.sealed_bytes as f64 / reference.records as f64
            );
            reference
        })
        .collect();
    let mut c = Criterion::default().configure_from_args();
    open_group(&mut c, &bench, &references);
    // Measured now, in the state the `open` group saw; printed at the end.
    let steady = measure_open(&bench, &references);
    flag_update_group(&mut c, &mut bench);
    changes_group(&mut c, &mut bench);
    append_group(&mut c, &mut bench);
    search_group(&mut c, &bench);
    mime_group(&mut c, &bench);
    c.final_summary();
    open_report("right after the setup", &steady);
    let churned = measure_open(&bench, &references);
    open_report(
        "after the update groups (flag updates, appends and their removals)",
        &churned,
    );
    // The maintenance state: every segment merged into one (`Mailstore::compact`).
    for fixture in bench.fixtures.iter_mut() {
        let mail = &mut fixture.mail;
        bench
            .rt
            .block_on(async { mail.compact().await.expect("compact") });
    }
    let compacted = measure_open(&bench, &references);
    open_report("after a full compaction (Mailstore::compact)", &compacted);
    cost_report(&bench);
    mime_report(&bench);
}
