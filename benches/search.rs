//! Text search (issue 14): speed and size of the encrypted text index over a large
//! mailbox of realistic generated mail, against the brute-force scan, in one run.
//!
//! The account: one account under [`KeyModel::DeviceOnly`] known to a
//! [`MemoryDirectory`], its store a **local directory** (`LocalFileSystem` with fsync, in
//! a temporary folder removed at the end; nothing is cached across runs). N messages of
//! [`MailGen`] (seed 1: multipart/alternative with HTML, quoted-printable and base64,
//! RFC 2047/2231, eleven charsets, threads with quotes, trace and DKIM fields; ≈ 8.6 KiB raw,
//! ≈ 3.7 KiB of text each) are built in rounds of [`ROUND`]: each round's messages are
//! delivered ([`Deliverer::deliver_bytes`], 16 at once), imported
//! ([`Mailstore::import_deliveries`]) and then indexed ([`Mailstore::index_texts`]: the
//! bodies read back, decrypted, extracted, a segment per 512 emails, merges by tiers),
//! each step timed apart. The deliveries are made without their text
//! ([`Deliverer::with_text`]`(false)`), so that the index step reads the bodies back: the
//! cost of indexing mail stored before; with the text in the envelope (the default) the
//! import indexes it, which `examples/index_cost.rs` measures.
//!
//! Then, on the handle that built the account:
//! - **warm `SEARCH TEXT` of one word**: [`Mailstore::search_texts`] of one
//!   [`TextKey::Text`] over every email, for English words of frequency ranks from 2 to
//!   38 000 (common to rare; the number of messages each matches is printed), each
//!   searched once before the timed rounds; median over all words and rounds, and per
//!   word. Also a criterion group (`search/warm_text/rank`);
//! - **brute force**: the same kind of query answered by reading every body (ranged GET,
//!   decrypt), extracting its text and scanning it ([`Oracle`], both cores): the scan
//!   the index replaces; its answer is checked equal to the index's; median of
//!   `MAILVAULT_SEARCH_BENCH_SCANS` (3) rounds; the ratio brute force ÷ warm median;
//! - **first search after login**: a fresh [`Mailstore`] (its own cold page cache; the
//!   operating system's file cache is warm) opened (timed apart), then one word searched;
//! - **size**: the objects of the account's `search` collection (segments and manifests,
//!   after a garbage collection with no grace) ÷ the decoded text of the messages (the
//!   three folded streams of `extract_message`: header, body, MIME headers).
//!
//! Environment: `MAILVAULT_SEARCH_BENCH_MESSAGES` (default 100 000),
//! `MAILVAULT_SEARCH_BENCH_SCANS` (3), `MAILVAULT_SEARCH_BENCH_DIR` (the temporary
//! folder's parent; default the system's).
//!
//! Run with `cargo bench --bench search --features testkit`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use futures::{StreamExt, TryStreamExt};
use mailvault::delivery::DeliveryOptions;
use mailvault::ids::{AccountId, EmailId, MailboxId};
use mailvault::mail::text::extract::extract_message;
use mailvault::mail::text::oracle::{Oracle, TextKey};
use mailvault::mail::text::Matches;
use mailvault::mail::{Mailstore, INBOX};
use mailvault::storage::{naming, open_store, DynStore};
use mailvault::testkit::mailgen::MailGen;
use rayon::prelude::*;
use tokio::runtime::Runtime;

const DEFAULT_MESSAGES: usize = 100_000;
/// Messages delivered, imported and indexed per round of the build.
const ROUND: usize = 1_000;
/// Deliveries in flight at once.
const DELIVERIES_AT_ONCE: usize = 16;
/// The generator's seed.
const SEED: u64 = 1;
/// `MailConfig::max_parse_len`'s default.
const MAX_PARSE: usize = 64 << 20;
/// Frequency ranks of the English words searched: common to rare.
const RANKS: [usize; 8] = [2, 12, 60, 300, 1_500, 6_000, 20_000, 38_000];
/// The rank of the word of the brute-force scan and the first search after login.
const SCAN_RANK: usize = 1_500;
/// Timed rounds over the word list.
const WARM_ROUNDS: usize = 15;
/// Fresh handles opened for the first search after login.
const LOGINS: usize = 3;
/// Bodies read at once by the brute force (as the library's scan).
const READ_AHEAD: usize = 8;

fn env_number(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .ok()
            .filter(|&n: &usize| n > 0)
            .unwrap_or_else(|| panic!("{name}: not a positive number: {v:?}")),
        Err(_) => default,
    }
}

// ---------------------------------------------------------------------------- fixtures

/// The account the benchmark delivers to (one home: `testkit::DeliveryWorld`).
use mailvault::testkit::DeliveryWorld as World;

/// Times of one round of the build.
#[derive(Debug, Clone, Copy, Default)]
struct RoundTimes {
    deliver: Duration,
    import: Duration,
    index: Duration,
    /// Messages of the round(s).
    messages: usize,
}

impl RoundTimes {
    fn add(&mut self, o: &RoundTimes) {
        self.deliver += o.deliver;
        self.import += o.import;
        self.index += o.index;
        self.messages += o.messages;
    }
}

struct Bench {
    rt: Runtime,
    _dir: tempfile::TempDir,
    store: DynStore,
    world: World,
    mail: Mailstore,
    emails: Vec<EmailId>,
    rounds: Vec<RoundTimes>,
    /// A fresh account's first round, measured after each tenth of the rounds (and after
    /// the last round), with the number of rounds done then.
    references: Vec<(usize, RoundTimes)>,
    raw_bytes: u64,
    text_bytes: u64,
    header_bytes: u64,
    /// Tags of the collections that existed before the first indexing.
    mail_tags: HashSet<String>,
}

/// Runs `f` on a thread of its own (see `benches/mail.rs`: the build's allocations
/// would otherwise fragment the main thread's malloc arena, which the timed parts use).
fn off_main_arena<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| scope.spawn(f).join().expect("setup thread"))
}

/// The collection tags under the account's index prefix, with their objects' total size
/// and count.
async fn collections(store: &DynStore, account: &AccountId) -> BTreeMap<String, (u64, usize)> {
    let prefix = naming::account_prefix(account).clone().join("i");
    let objects: Vec<object_store::ObjectMeta> = store
        .list(Some(&prefix))
        .try_collect()
        .await
        .expect("list the index");
    let mut out: BTreeMap<String, (u64, usize)> = BTreeMap::new();
    for meta in objects {
        let parts: Vec<String> = meta
            .location
            .parts()
            .map(|p| p.as_ref().to_owned())
            .collect();
        let tag = parts.get(3).cloned().unwrap_or_default();
        let entry = out.entry(tag).or_default();
        entry.0 += meta.size;
        entry.1 += 1;
    }
    out
}

/// One round of the build: `batch` delivered (without text), imported and indexed by
/// reading the bodies back; the emails it added to `inbox`, in order, and its times.
/// `tags`, when empty, receives the store's collection tags before the indexing.
async fn round(
    world: &World,
    deliverer: &mailvault::delivery::Deliverer,
    mail: &mut Mailstore,
    inbox: MailboxId,
    batch: Vec<Vec<u8>>,
    tags: Option<(&DynStore, &mut HashSet<String>)>,
) -> (Vec<EmailId>, RoundTimes) {
    let n = batch.len();
    let before = mail.view(inbox).expect("view").messages.len();
    let mut times = RoundTimes {
        messages: n,
        ..RoundTimes::default()
    };
    let t = Instant::now();
    let delivered: Vec<_> = futures::stream::iter(batch.iter())
        .map(|body| deliverer.deliver_bytes(world.account, body, DeliveryOptions::default()))
        .buffer_unordered(DELIVERIES_AT_ONCE)
        .try_collect()
        .await
        .expect("deliver");
    times.deliver = t.elapsed();
    assert_eq!(delivered.len(), n);
    drop(batch);

    let t = Instant::now();
    let report = mail
        .import_deliveries(std::slice::from_ref(&world.key), &world.verifying)
        .await
        .expect("import");
    times.import = t.elapsed();
    assert_eq!(report.imported.len(), n, "{:?}", report.quarantined);

    let view = mail.view(inbox).expect("view");
    let new: Vec<EmailId> = view.messages[before..].iter().map(|m| m.email).collect();
    assert_eq!(new.len(), n);
    if let Some((store, tags)) = tags {
        // The collections before the first indexing: what is not the text index.
        if tags.is_empty() {
            *tags = collections(store, &world.account)
                .await
                .into_keys()
                .collect();
        }
    }
    let t = Instant::now();
    let indexed = mail.index_texts(&new, usize::MAX).await.expect("index");
    times.index = t.elapsed();
    assert_eq!(indexed, n);
    (new, times)
}

/// The reference "at 1k", measured beside the build (the machine's load drifts over a
/// build of many minutes): the first round of a fresh account on a fresh directory,
/// with the same first messages as the benchmark's own first round.
async fn reference_round(parent: &std::path::Path) -> RoundTimes {
    let dir = tempfile::Builder::new()
        .prefix("mailvault-search-reference-")
        .tempdir_in(parent)
        .expect("temporary folder");
    let store = open_store(dir.path().to_str().expect("a UTF-8 path")).expect("local store");
    let world = World::new().await;
    let deliverer = world.deliverer(store.clone()).with_text(false);
    let mut mail = world.mail(store.clone()).await;
    let inbox: MailboxId = mail.mailbox_by_name(INBOX).expect("inbox").id;
    let batch: Vec<Vec<u8>> = MailGen::new(SEED).take(ROUND).collect();
    let (_, times) = round(&world, &deliverer, &mut mail, inbox, batch, None).await;
    times
}

fn build(messages: usize) -> Bench {
    let rt = Runtime::new().expect("tokio runtime");
    let parent = std::env::var_os("MAILVAULT_SEARCH_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::Builder::new()
        .prefix("mailvault-search-bench-")
        .tempdir_in(&parent)
        .expect("temporary folder");
    let store = open_store(dir.path().to_str().expect("a UTF-8 path")).expect("local store");
    let started = Instant::now();
    let total_rounds = messages.div_ceil(ROUND);
    let tenth = (total_rounds / 10).max(1);
    let (world, mail, emails, rounds, references, sizes, mail_tags) = off_main_arena(|| {
        rt.block_on(async {
            let world = World::new().await;
            // Deliveries without their text: the index step then reads the bodies back,
            // which is what the figures of BENCHMARKS.md ("Search") measure; with the
            // text in the envelope (the default since), the import indexes them and
            // `index_texts` finds nothing to do (`examples/index_cost.rs` measures that).
            let deliverer = world.deliverer(store.clone()).with_text(false);
            let mut mail = world.mail(store.clone()).await;
            let inbox: MailboxId = mail.mailbox_by_name(INBOX).expect("inbox").id;
            let mut gen = MailGen::new(SEED);
            let mut emails: Vec<EmailId> = Vec::with_capacity(messages);
            let mut rounds = Vec::new();
            let mut references = Vec::new();
            let (mut raw_bytes, mut text_bytes, mut header_bytes) = (0u64, 0u64, 0u64);
            let mut mail_tags = HashSet::new();
            while emails.len() < messages {
                let n = ROUND.min(messages - emails.len());
                let batch: Vec<Vec<u8>> = (&mut gen).take(n).collect();
                let (raw, text, header) = batch
                    .par_iter()
                    .map(|m| {
                        let t = extract_message(m, MAX_PARSE);
                        (m.len() as u64, t.len() as u64, t.header.len() as u64)
                    })
                    .reduce(|| (0, 0, 0), |a, b| (a.0 + b.0, a.1 + b.1, a.2 + b.2));
                raw_bytes += raw;
                text_bytes += text;
                header_bytes += header;

                let tags = Some((&store, &mut mail_tags));
                let (new, times) = round(&world, &deliverer, &mut mail, inbox, batch, tags).await;
                emails.extend(new);
                rounds.push(times);
                if rounds.len() % tenth == 0 || emails.len() == messages {
                    // A fresh account's first round, beside this tenth's rounds.
                    references.push((rounds.len(), reference_round(&parent).await));
                    eprintln!(
                        "built {} messages in {:.0} s (round: deliver {:.2} s, import {:.2} s, index {:.2} s; a fresh account's first round: index {:.2} s)",
                        emails.len(),
                        started.elapsed().as_secs_f64(),
                        times.deliver.as_secs_f64(),
                        times.import.as_secs_f64(),
                        times.index.as_secs_f64(),
                        references.last().map_or(0.0, |(_, r)| r.index.as_secs_f64()),
                    );
                }
            }
            // Segments that merges replaced go; what remains is the index.
            mail.collect_garbage(Duration::ZERO).await.expect("gc");
            (
                world,
                mail,
                emails,
                rounds,
                references,
                (raw_bytes, text_bytes, header_bytes),
                mail_tags,
            )
        })
    });
    eprintln!(
        "build of {messages} messages: {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Bench {
        rt,
        _dir: dir,
        store,
        world,
        mail,
        emails,
        rounds,
        references,
        raw_bytes: sizes.0,
        text_bytes: sizes.1,
        header_bytes: sizes.2,
        mail_tags,
    }
}

// ---------------------------------------------------------------------------- measures

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn search(mail: &Mailstore, emails: &[EmailId], word: &str) -> Matches {
    mail.search_texts(emails, &[TextKey::Text(word.to_owned())])
        .await
        .expect("search")
        .pop()
        .expect("one answer")
}

/// The brute force: every body read (decrypted), extracted and scanned for `key`.
async fn scan(mail: &Mailstore, emails: &[EmailId], key: &TextKey) -> HashSet<EmailId> {
    let oracle = Arc::new(Oracle::new(std::slice::from_ref(key), MAX_PARSE));
    let mut found = HashSet::new();
    for chunk in emails.chunks(512) {
        let bodies: Vec<(EmailId, bytes::Bytes)> = futures::stream::iter(chunk.iter().copied())
            .map(|email| async move {
                let record = mail.email_by_id(email).expect("email");
                (email, mail.read(&record).await.expect("read"))
            })
            .buffered(READ_AHEAD)
            .collect()
            .await;
        let oracle = oracle.clone();
        let hits: Vec<EmailId> = tokio::task::spawn_blocking(move || {
            bodies
                .par_iter()
                .filter(|(_, raw)| oracle.matches(raw)[0])
                .map(|(email, _)| *email)
                .collect()
        })
        .await
        .expect("scan");
        found.extend(hits);
    }
    found
}

fn report(b: &Bench, c: &mut Criterion) {
    let n = b.emails.len();
    let gen = MailGen::new(SEED);
    let words: Vec<(usize, String)> = RANKS.iter().map(|&r| (r, gen.word(r).to_owned())).collect();
    let scan_word = gen.word(SCAN_RANK).to_owned();
    let machine = "2 cores shared with other builds and tests: read the ratios";

    // Warm queries: each word once, then timed rounds.
    let mut hits = Vec::new();
    for (_, w) in &words {
        hits.push(b.rt.block_on(search(&b.mail, &b.emails, w)).len());
    }
    let mut all = Vec::new();
    let mut per_word: Vec<Vec<Duration>> = vec![Vec::new(); words.len()];
    for _ in 0..WARM_ROUNDS {
        for (i, (_, w)) in words.iter().enumerate() {
            let t = Instant::now();
            let found = b.rt.block_on(search(&b.mail, &b.emails, w));
            let d = t.elapsed();
            assert_eq!(found.len(), hits[i]);
            per_word[i].push(d);
            all.push(d);
        }
    }
    let warm = median(all);

    let mut group = c.benchmark_group("search/warm_text");
    group.sample_size(20);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    for (rank, w) in &words {
        group.bench_function(format!("rank_{rank}"), |bencher| {
            bencher
                .to_async(&b.rt)
                .iter(|| search(&b.mail, &b.emails, w));
        });
    }
    group.finish();

    // Brute force.
    let rounds = env_number("MAILVAULT_SEARCH_BENCH_SCANS", 3);
    let key = TextKey::Text(scan_word.clone());
    let indexed = b.rt.block_on(search(&b.mail, &b.emails, &scan_word));
    let indexed_emails: HashSet<EmailId> = indexed.emails(&b.emails).collect();
    let mut brute = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let found = b.rt.block_on(scan(&b.mail, &b.emails, &key));
        brute.push(t.elapsed());
        assert!(found == indexed_emails, "the index's answer is the scan's");
    }
    let brute = median(brute);
    let scan_warm =
        median(per_word[RANKS.iter().position(|&r| r == SCAN_RANK).expect("rank")].clone());

    // First search after login.
    let mut opens = Vec::new();
    let mut firsts = Vec::new();
    for _ in 0..LOGINS {
        let t = Instant::now();
        let fresh = b.rt.block_on(b.world.mail(b.store.clone()));
        opens.push(t.elapsed());
        let t = Instant::now();
        let found = b.rt.block_on(search(&fresh, &b.emails, &scan_word));
        firsts.push(t.elapsed());
        assert!(found == indexed);
    }
    let first = median(firsts.clone());

    // Size.
    let collections = b.rt.block_on(collections(&b.store, &b.world.account));
    let (mut index_bytes, mut index_objects) = (0u64, 0usize);
    for (tag, (bytes, objects)) in &collections {
        if !b.mail_tags.contains(tag) {
            index_bytes += bytes;
            index_objects += objects;
        }
    }

    // Build costs.
    let per_msg = |d: Duration, n: usize| d.as_secs_f64() * 1e6 / n as f64;
    let mut total = RoundTimes::default();
    b.rounds.iter().for_each(|r| total.add(r));
    let first_round = b.rounds[0];
    let tail_rounds = (b.rounds.len() / 10).max(1);
    let mut tail = RoundTimes::default();
    b.rounds[b.rounds.len() - tail_rounds..]
        .iter()
        .for_each(|r| tail.add(r));
    let (first_n, tail_n) = (first_round.messages, tail.messages);

    println!();
    println!("== search over {n} generated messages on a local directory ({machine})");
    println!(
        "messages: {:.1} KiB raw, {:.2} KiB of decoded text ({:.0}% header) per message on average",
        b.raw_bytes as f64 / n as f64 / 1024.0,
        b.text_bytes as f64 / n as f64 / 1024.0,
        b.header_bytes as f64 * 100.0 / b.text_bytes as f64
    );
    println!("warm SEARCH TEXT, one word (median of {WARM_ROUNDS} rounds per word):");
    for (i, (rank, w)) in words.iter().enumerate() {
        println!(
            "  rank {rank:>6} {w:<16} {:>6} matches  {:>8.2} ms",
            hits[i],
            ms(median(per_word[i].clone()))
        );
    }
    println!(
        "  median over all words and rounds: {:.2} ms (target <= 20 ms)",
        ms(warm)
    );
    println!(
        "brute force (read, decrypt, extract, scan every body; median of {rounds}): {:.0} ms for {scan_word:?}",
        ms(brute)
    );
    println!(
        "  ratio brute force / warm: {:.0}x against the median over all words, {:.0}x against the same word ({:.2} ms) (target >= 1000x)",
        brute.as_secs_f64() / warm.as_secs_f64(),
        brute.as_secs_f64() / scan_warm.as_secs_f64(),
        ms(scan_warm)
    );
    println!(
        "first search after login (fresh handle; median of {LOGINS}): {:.0} ms (target <= 500 ms); open of the handle before it {:.0} ms; all: {:?} ms",
        ms(first),
        ms(median(opens)),
        firsts.iter().map(|d| ms(*d).round()).collect::<Vec<_>>()
    );
    println!(
        "index size: {index_bytes} bytes in {index_objects} objects = {:.1}% of {} bytes of decoded text (target <= 50%)",
        index_bytes as f64 * 100.0 / b.text_bytes as f64,
        b.text_bytes
    );
    println!("build cost per message (us): deliver / import / index, index share of deliver+import and of import");
    for (what, t, count) in [
        ("first round (1k)", first_round, first_n),
        ("all rounds", total, n),
        ("last tenth", tail, tail_n),
    ] {
        println!(
            "  {what:<18} {:>7.0} / {:>7.0} / {:>7.0}   index +{:.0}% of deliver+import, +{:.0}% of import",
            per_msg(t.deliver, count),
            per_msg(t.import, count),
            per_msg(t.index, count),
            t.index.as_secs_f64() * 100.0 / (t.deliver + t.import).as_secs_f64(),
            t.index.as_secs_f64() * 100.0 / t.import.as_secs_f64()
        );
    }
    let cost = |t: RoundTimes, count: usize| per_msg(t.deliver + t.import + t.index, count);
    let steps = |t: RoundTimes, count: usize| per_msg(t.import + t.index, count);
    let index = |t: RoundTimes, count: usize| per_msg(t.index, count);
    println!(
        "  per message at {n} / at 1k, index alone: {:.2} over all rounds, {:.2} for the last tenth; import+index: {:.2}, {:.2}",
        index(total, n) / index(first_round, first_n),
        index(tail, tail_n) / index(first_round, first_n),
        steps(total, n) / steps(first_round, first_n),
        steps(tail, tail_n) / steps(first_round, first_n)
    );
    println!(
        "  per message at {n} / at 1k (deliver+import+index): {:.2} over all rounds, {:.2} for the last tenth (target <= 1.3)",
        cost(total, n) / cost(first_round, first_n),
        cost(tail, tail_n) / cost(first_round, first_n)
    );
    // Against the reference measured beside each tenth (a fresh account's first round
    // of the same messages, right after that tenth's last round): the load of the
    // machine cancels. Each reference is compared with the `tail_rounds` rounds that
    // ended where it was taken.
    let mut ratios: Vec<[f64; 3]> = Vec::new();
    for (done, reference) in &b.references {
        let rounds = &b.rounds[done.saturating_sub(tail_rounds)..*done];
        let mut sum = RoundTimes::default();
        rounds.iter().for_each(|r| sum.add(r));
        if sum.messages == 0 || reference.messages == 0 {
            continue;
        }
        ratios.push([
            index(sum, sum.messages) / index(*reference, reference.messages),
            steps(sum, sum.messages) / steps(*reference, reference.messages),
            cost(sum, sum.messages) / cost(*reference, reference.messages),
        ]);
    }
    if let Some(last) = ratios.last() {
        let column = |k: usize| {
            ratios
                .iter()
                .map(|r| format!("{:.2}", r[k]))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!(
            "  per message in each tenth / a fresh account's first 1k measured right after it, index alone: {}",
            column(0)
        );
        println!(
            "    (the fresh accounts' first 1k, index per message, us: {})",
            b.references
                .iter()
                .map(|(_, r)| format!("{:.0}", index(*r, r.messages)))
                .collect::<Vec<_>>()
                .join(" ")
        );
        println!("    import+index: {}", column(1));
        println!("    deliver+import+index: {}", column(2));
        println!(
            "  last tenth (at {n}) / 1k beside it: index alone {:.2}, import+index {:.2}, deliver+import+index {:.2} (target <= 1.3)",
            last[0], last[1], last[2]
        );
    }
}

fn main() {
    let messages = env_number("MAILVAULT_SEARCH_BENCH_MESSAGES", DEFAULT_MESSAGES);
    let bench = build(messages);
    let mut c = Criterion::default().configure_from_args();
    report(&bench, &mut c);
    c.final_summary();
}
