//! `mailvault import`: existing mail brought into an account, from a Maildir tree or an
//! mbox file, through the library's `Deliverer` (sealed to the account's public key, so
//! it needs no secret and works for accounts of every key model; the key holder's import
//! files each message into its folder, creating the folders).
//!
//! Each message is delivered with an id derived from where it comes from (the folder and
//! the Maildir file's unique name; the mbox file, folder and the message's position), so a
//! run killed part way and run again delivers each message once: a delivery whose id was
//! delivered before is stored once (`DeliveryOptions::id`).
//!
//! Messages are stored as IMAP serves them: lines end in CRLF (a Maildir or an mbox
//! holds them with LF endings: each LF is made CRLF, see [`crlf`]). An mbox
//! message's `Status`, `X-Status`, `X-Keywords`, `X-UID`, `X-IMAP`, `X-IMAPbase` and
//! `Content-Length` header fields are the mbox's bookkeeping and are left out (their flags
//! are kept as flags), as Dovecot hides them from IMAP clients. An mbox is read as mboxrd
//! (what `mailvault export mbox` writes): a body line `>From ` is a quoted `From `, one
//! `>` is taken off each line matching `>+From ` (an mboxo file such as Python's
//! `mailbox` writes quotes only `From `, so a `>From ` line of its message loses its `>`:
//! the two formats cannot be told apart).

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mailvault::delivery::{Deliverer, DeliveryOptions};
use mailvault::ids::AccountId;

use crate::config::BoxError;

/// One message to import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceMessage {
    /// The mailbox it lands in (`/`-separated; `INBOX` for the top folder).
    pub mailbox: String,
    /// IMAP flag names.
    pub flags: Vec<String>,
    /// Internal date, Unix seconds.
    pub internal_date: Option<i64>,
    /// Where it comes from, unique within the source: the delivery id is derived from it.
    pub key: String,
    /// The message as stored (CRLF line endings).
    pub bytes: Vec<u8>,
    /// Bytes of the source it took (the file; its part of the mbox; the message as an
    /// IMAP server served it), for progress.
    pub span: u64,
}

/// One message file of a Maildir, found by [`scan_maildir`] (read later).
#[derive(Debug, Clone)]
pub struct MaildirEntry {
    /// The mailbox it lands in.
    pub mailbox: String,
    /// The file.
    pub path: PathBuf,
    /// IMAP flag names from the file name's info (`:2,FRS...`) and the folder's
    /// `dovecot-keywords`.
    pub flags: Vec<String>,
    /// The file's unique name (the part before the info).
    pub unique: String,
    /// The file's size when scanned (the import's total bytes, for progress).
    pub size: u64,
}

/// Every message file of a Maildir++ tree rooted at `root` (its `cur` and `new` are
/// INBOX; a subfolder `.Sent` is `Sent`, `.Archive.2023` is `Archive/2023`, names in
/// modified UTF-7 decoded), in a stable order: by folder, then file name.
///
/// # Errors
/// `root` holds no Maildir, or a folder cannot be listed.
pub fn scan_maildir(root: &Path) -> Result<Vec<MaildirEntry>, BoxError> {
    let mut folders: Vec<(String, PathBuf)> = Vec::new();
    if root.join("cur").is_dir() || root.join("new").is_dir() {
        folders.push(("INBOX".to_string(), root.to_path_buf()));
    }
    let listed = std::fs::read_dir(root).map_err(|e| format!("{}: {e}", root.display()))?;
    for entry in listed {
        let entry = entry.map_err(|e| format!("{}: {e}", root.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let Some(folder) = name.strip_prefix('.') else {
            continue;
        };
        if folder.is_empty() || folder == "." || !path.join("cur").is_dir() {
            continue;
        }
        folders.push((folder_name(folder), path));
    }
    if folders.is_empty() {
        return Err(format!(
            "{}: no Maildir here (no cur/ or .Folder/cur/)",
            root.display()
        )
        .into());
    }
    folders.sort();
    let mut out = Vec::new();
    for (mailbox, dir) in folders {
        let keywords = dovecot_keywords(&dir);
        let mut files = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(listed) = std::fs::read_dir(dir.join(sub)) else {
                continue;
            };
            for entry in listed {
                let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
                if !entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
                    continue;
                }
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                let (unique, info) = match name.split_once(":2,") {
                    Some((unique, info)) => (unique.to_string(), info),
                    None => (name.split(':').next().unwrap_or(&name).to_string(), ""),
                };
                files.push(MaildirEntry {
                    mailbox: mailbox.clone(),
                    path: entry.path(),
                    flags: maildir_flags(info, &keywords),
                    unique,
                    // (A file gone since the listing is refused when it is read.)
                    size: entry.metadata().map(|m| m.len()).unwrap_or(0),
                });
            }
        }
        files.sort_by(|a, b| a.unique.cmp(&b.unique));
        out.extend(files);
    }
    Ok(out)
}

/// A Maildir++ folder's name (`Archive.2023`, each level in modified UTF-7) as a mailbox
/// name (`Archive/2023`).
fn folder_name(folder: &str) -> String {
    folder
        .split('.')
        .map(|level| crate::mutf7::decode(level.as_bytes()).unwrap_or_else(|_| level.to_string()))
        .collect::<Vec<_>>()
        .join("/")
}

/// A folder's `dovecot-keywords` file: keyword number → name (letter `a` is 0).
fn dovecot_keywords(dir: &Path) -> Vec<(usize, String)> {
    let Ok(text) = std::fs::read_to_string(dir.join("dovecot-keywords")) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let (n, name) = line.split_once(' ')?;
            Some((n.parse().ok()?, name.trim().to_string()))
        })
        .collect()
}

/// IMAP flags of a Maildir file name's info (the letters after `:2,`).
fn maildir_flags(info: &str, keywords: &[(usize, String)]) -> Vec<String> {
    let mut flags = Vec::new();
    for c in info.chars() {
        let flag = match c {
            'D' => Some("\\Draft".to_string()),
            'F' => Some("\\Flagged".to_string()),
            'P' => Some("$Forwarded".to_string()),
            'R' => Some("\\Answered".to_string()),
            'S' => Some("\\Seen".to_string()),
            'T' => Some("\\Deleted".to_string()),
            'a'..='z' => {
                let n = c as usize - 'a' as usize;
                keywords
                    .iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, name)| name.clone())
            }
            _ => None,
        };
        if let Some(flag) = flag {
            if !flags.contains(&flag) {
                flags.push(flag);
            }
        }
    }
    flags
}

/// Reads a Maildir message file: its bytes with CRLF line endings, its internal date
/// (the file's modification time, as Dovecot takes it).
///
/// # Errors
/// The file cannot be read.
pub fn read_maildir_message(entry: &MaildirEntry) -> Result<SourceMessage, BoxError> {
    let raw = std::fs::read(&entry.path).map_err(|e| format!("{}: {e}", entry.path.display()))?;
    let internal_date = std::fs::metadata(&entry.path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_secs()).ok());
    Ok(SourceMessage {
        mailbox: entry.mailbox.clone(),
        flags: entry.flags.clone(),
        internal_date,
        key: format!("maildir\0{}\0{}", entry.mailbox, entry.unique),
        span: raw.len() as u64,
        bytes: crlf(&raw),
    })
}

/// A file's message (LF line endings, as Maildir and mbox hold it) with CRLF line
/// endings, as IMAP serves it: every LF made CRLF, a CR before an LF kept as the
/// message's own byte (so that `mailvault export`, which makes each CRLF an LF, gives the
/// file back byte for byte). A message whose every LF already follows a CR (a file
/// written with CRLF endings) is taken as it is.
pub fn crlf(bytes: &[u8]) -> Vec<u8> {
    let bare_lf = bytes
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || bytes[i - 1] != b'\r'));
    if !bare_lf {
        return bytes.to_vec();
    }
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 32);
    for &b in bytes {
        if b == b'\n' {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// The messages of an mbox file, one at a time, for the mailbox `mailbox`.
pub struct MboxReader<R> {
    input: R,
    mailbox: String,
    source: String,
    /// The `From ` line that starts the next message, once read.
    pending: Option<Vec<u8>>,
    index: u64,
    /// Bytes of the file read so far.
    pub consumed: u64,
}

/// Header fields of the mbox's bookkeeping, left out of the stored message.
const MBOX_FIELDS: [&str; 7] = [
    "status",
    "x-status",
    "x-keywords",
    "x-uid",
    "x-imap",
    "x-imapbase",
    "content-length",
];

impl<R: BufRead> MboxReader<R> {
    /// A reader of `input` (an mbox file named `source` in the delivery ids).
    pub fn new(input: R, mailbox: &str, source: &str) -> Self {
        Self {
            input,
            mailbox: mailbox.to_string(),
            source: source.to_string(),
            pending: None,
            index: 0,
            consumed: 0,
        }
    }

    fn line(&mut self) -> Result<Option<Vec<u8>>, BoxError> {
        let mut line = Vec::new();
        let n = self.input.read_until(b'\n', &mut line)?;
        self.consumed += n as u64;
        Ok((n > 0).then_some(line))
    }

    /// The next message, or `None` at the end.
    ///
    /// # Errors
    /// A read error; a file that does not begin with a `From ` line.
    pub fn next_message(&mut self) -> Result<Option<SourceMessage>, BoxError> {
        let from_line = match self.pending.take() {
            Some(line) => line,
            None => loop {
                match self.line()? {
                    None => return Ok(None),
                    Some(line) if line.starts_with(b"From ") => break line,
                    Some(line) if line.iter().all(u8::is_ascii_whitespace) => continue,
                    Some(_) => return Err("not an mbox file: no \"From \" line first".into()),
                }
            },
        };
        let started = self.consumed - from_line.len() as u64;
        let mut raw = Vec::new();
        while let Some(line) = self.line()? {
            if line.starts_with(b"From ") {
                self.pending = Some(line);
                break;
            }
            // mboxrd: `>From ` is a quoted `From `, `>>From ` a quoted `>From `...
            let quotes = line.iter().take_while(|&&b| b == b'>').count();
            if quotes > 0 && line[quotes..].starts_with(b"From ") {
                raw.extend_from_slice(&line[1..]);
            } else {
                raw.extend_from_slice(&line);
            }
        }
        // The blank line that separates messages belongs to the mbox.
        if raw.ends_with(b"\n\n") {
            raw.pop();
        } else if raw.ends_with(b"\r\n\r\n") {
            raw.truncate(raw.len() - 2);
        }
        let index = self.index;
        self.index += 1;
        let (bytes, flags) = strip_mbox_fields(&crlf(&raw));
        let pending = self.pending.as_ref().map_or(0, |l| l.len() as u64);
        Ok(Some(SourceMessage {
            span: self.consumed - pending - started,
            mailbox: self.mailbox.clone(),
            flags,
            internal_date: from_line_date(&from_line),
            key: format!("mbox\0{}\0{}\0{index}", self.source, self.mailbox),
            bytes,
        }))
    }
}

/// The date of an mbox `From sender date` line (asctime, UTC), Unix seconds.
fn from_line_date(line: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(line).ok()?.trim_end();
    let rest = text.strip_prefix("From ")?;
    // The sender has no spaces; the date is the rest (maybe a zone or "remote from").
    let date = rest.split_once(' ')?.1.trim();
    let words: Vec<&str> = date.split_whitespace().collect();
    if words.len() < 5 {
        return None;
    }
    let asctime = words[..5].join(" ");
    chrono::NaiveDateTime::parse_from_str(&asctime, "%a %b %e %H:%M:%S %Y")
        .ok()
        .map(|t| t.and_utc().timestamp())
}

/// The message without the mbox's bookkeeping header fields, and the flags they held
/// (`Status: RO`, `X-Status: AFTD`, `X-Keywords`).
fn strip_mbox_fields(message: &[u8]) -> (Vec<u8>, Vec<String>) {
    let header_end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(message.len(), |p| p + 2);
    let (header, body) = message.split_at(header_end);
    let mut kept = Vec::with_capacity(message.len());
    let mut flags = Vec::new();
    let mut dropping = false;
    for line in header.split_inclusive(|&b| b == b'\n') {
        let continuation = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if !continuation {
            let name = line
                .iter()
                .position(|&b| b == b':')
                .map(|p| String::from_utf8_lossy(&line[..p]).to_ascii_lowercase());
            dropping = name.as_deref().is_some_and(|n| MBOX_FIELDS.contains(&n));
            if dropping {
                let value =
                    String::from_utf8_lossy(&line[name.as_ref().map_or(0, |n| n.len() + 1)..]);
                flags.extend(mbox_flags(name.as_deref().unwrap_or(""), value.trim()));
            }
        }
        if !dropping {
            kept.extend_from_slice(line);
        }
    }
    kept.extend_from_slice(body);
    let mut unique = Vec::new();
    for flag in flags {
        if !unique.contains(&flag) {
            unique.push(flag);
        }
    }
    (kept, unique)
}

fn mbox_flags(field: &str, value: &str) -> Vec<String> {
    match field {
        "status" => value
            .chars()
            .filter(|&c| c == 'R')
            .map(|_| "\\Seen".to_string())
            .collect(),
        "x-status" => value
            .chars()
            .filter_map(|c| match c {
                'A' => Some("\\Answered".to_string()),
                'F' => Some("\\Flagged".to_string()),
                'T' => Some("\\Draft".to_string()),
                'D' => Some("\\Deleted".to_string()),
                _ => None,
            })
            .collect(),
        "x-keywords" => value
            .split([' ', ','])
            .filter(|k| !k.is_empty())
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ImportSummary {
    /// Messages delivered now.
    pub delivered: u64,
    /// Messages delivered by an earlier run (the same id): stored once.
    pub already: u64,
    /// Messages refused, with the reason.
    pub failed: Vec<(String, String)>,
    /// Bytes of the messages delivered or found delivered.
    pub bytes: u64,
    /// Wall time.
    pub seconds: f64,
}

impl ImportSummary {
    /// One JSON object (for `--json`).
    pub fn to_json(&self) -> String {
        let failed: Vec<serde_json::Value> = self
            .failed
            .iter()
            .map(|(what, why)| serde_json::json!({ "message": what, "error": why }))
            .collect();
        serde_json::json!({
            "delivered": self.delivered,
            "already_delivered": self.already,
            "failed": failed,
            "bytes": self.bytes,
            "seconds": (self.seconds * 1000.0).round() / 1000.0,
        })
        .to_string()
    }
}

/// Progress of a long job: an `indicatif` bar when stderr is a terminal, a plain line
/// every few seconds otherwise, nothing with `quiet`. It counts two things: `unit`s
/// (messages, objects, collections) and the bytes they took. The bar follows the count
/// when its total is known, else the bytes when theirs is (an mbox file: its length),
/// else it is a spinner; it shows the other one beside, so a bar has the count, the
/// bytes, the rate and the time left as far as the totals are known.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    started: Instant,
    last_line: std::sync::Mutex<Instant>,
    /// The total count of `unit`s, if known.
    count_total: Option<u64>,
    /// The total bytes, if known.
    bytes_total: Option<u64>,
    what: &'static str,
    /// What is counted (`messages`, `objects`).
    unit: &'static str,
    quiet: bool,
    /// The units and bytes [`add`](Self::add)ed so far.
    added: (AtomicU64, AtomicU64),
}

impl Progress {
    /// Progress of a job counting `unit`s whose total is not known beforehand (objects
    /// verified, collected): a spinner with the count, the rate and the bytes on a
    /// terminal, a plain line every few seconds otherwise.
    pub fn counting(what: &'static str, unit: &'static str, quiet: bool) -> Self {
        Self::new(what, unit, None, None, quiet)
    }

    /// Progress of `count_total` `unit`s taking `bytes_total` bytes, each if known.
    pub fn new(
        what: &'static str,
        unit: &'static str,
        count_total: Option<u64>,
        bytes_total: Option<u64>,
        quiet: bool,
    ) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            // The bar's own position and rate are the count's, or the bytes' for a job
            // whose count is not known beforehand; `{msg}` is the other one.
            let (bar, template) = match (count_total, bytes_total) {
                (Some(total), _) => (
                    indicatif::ProgressBar::new(total),
                    format!("{{prefix}} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} {unit} {{msg}}{{rate}} ETA {{eta}}"),
                ),
                (None, Some(total)) => (
                    indicatif::ProgressBar::new(total),
                    "{prefix} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {msg}{bytes_per_sec} ETA {eta}".to_owned(),
                ),
                (None, None) => {
                    let bar = indicatif::ProgressBar::new_spinner();
                    bar.enable_steady_tick(Duration::from_millis(200));
                    (
                        bar,
                        format!("{{prefix}} [{{elapsed_precise}}] {{spinner}} {{pos}} {unit} {{msg}}{{rate}}"),
                    )
                }
            };
            if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
                // Whole units a second (`{per_sec}` has four decimals).
                bar.set_style(style.with_key(
                    "rate",
                    |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{:.0}/s", state.per_sec());
                    },
                ));
            }
            bar.set_prefix(what);
            bar
        });
        Self {
            bar,
            started: Instant::now(),
            last_line: std::sync::Mutex::new(Instant::now()),
            count_total,
            bytes_total,
            what,
            unit,
            quiet,
            added: Default::default(),
        }
    }

    /// Progress of the import of a Maildir's `entries` (as [`scan_maildir`] found them):
    /// their count and bytes known.
    pub fn maildir_import(entries: &[MaildirEntry], quiet: bool) -> Self {
        let bytes = entries.iter().map(|e| e.size).sum();
        Self::new(
            "import",
            "messages",
            Some(entries.len() as u64),
            Some(bytes),
            quiet,
        )
    }

    /// `count` units and `bytes` bytes done so far.
    pub fn set(&self, count: u64, bytes: u64) {
        if let Some(bar) = &self.bar {
            self.draw(bar, count, bytes);
            return;
        }
        if self.quiet {
            return;
        }
        let mut last = self.last_line.lock().unwrap_or_else(|e| e.into_inner());
        if last.elapsed() >= Duration::from_secs(2) {
            *last = Instant::now();
            eprintln!("{}", self.line(count, bytes));
        }
    }

    /// The bar at `count` units and `bytes` bytes: its position, and the other quantity
    /// as its message.
    fn draw(&self, bar: &indicatif::ProgressBar, count: u64, bytes: u64) {
        if self.count_total.is_none() && self.bytes_total.is_some() {
            bar.set_position(bytes);
            bar.set_message(format!("{count} {}, ", self.unit));
        } else {
            bar.set_position(count);
            // A job that does not count bytes (a re-encryption) shows none.
            if bytes > 0 {
                let of = self
                    .bytes_total
                    .map(|t| format!("/{}", indicatif::HumanBytes(t)))
                    .unwrap_or_default();
                bar.set_message(format!("{}{of}, ", indicatif::HumanBytes(bytes)));
            }
        }
    }

    /// The plain line: `import: 1234 of 3000; 1234 messages, 1.2 of 3.0 MiB, 850
    /// messages/s, 1.5 s` (the first number is the bytes for a job whose count has no
    /// known total but whose bytes have).
    fn line(&self, count: u64, bytes: u64) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let (done, total) = if self.count_total.is_none() && self.bytes_total.is_some() {
            (bytes, self.bytes_total)
        } else {
            (count, self.count_total)
        };
        let of = total.map(|t| format!(" of {t}")).unwrap_or_default();
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        // A job that does not count bytes (a re-encryption) reports none.
        let size = if bytes > 0 {
            let of = self
                .bytes_total
                .map(|t| format!(" of {:.1}", mib(t)))
                .unwrap_or_default();
            format!(" {:.1}{of} MiB,", mib(bytes))
        } else {
            String::new()
        };
        let unit = self.unit;
        format!(
            "{}: {done}{of}; {count} {unit},{size} {:.0} {unit}/s, {secs:.1} s",
            self.what,
            count as f64 / secs,
        )
    }

    /// Adds `count` units and `bytes` bytes to those added so far, for a job told of
    /// its work in steps (`verify_account`'s `progress`), from any task.
    pub fn add(&self, count: u64, bytes: u64) {
        let count = self.added.0.fetch_add(count, Ordering::Relaxed) + count;
        let bytes = self.added.1.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.set(count, bytes);
    }

    /// The end of a job told of its work by [`add`](Self::add).
    pub fn finish_added(&self) {
        self.finish(
            self.added.0.load(Ordering::Relaxed),
            self.added.1.load(Ordering::Relaxed),
        );
    }

    /// The end: the bar finished, or a last plain line.
    pub fn finish(&self, count: u64, bytes: u64) {
        if let Some(bar) = &self.bar {
            self.draw(bar, count, bytes);
            bar.finish();
        } else if !self.quiet {
            eprintln!("{}", self.line(count, bytes));
        }
    }
}

/// Messages delivered at once.
const IN_FLIGHT: usize = 8;

/// Delivers `messages` to `account`, `IN_FLIGHT` at once, each with the id its key
/// gives; `progress` is told after each: the messages done (refused ones too) and the
/// bytes of the source they took (their `span`).
pub async fn deliver_all<I>(
    deliverer: Arc<Deliverer>,
    account: AccountId,
    messages: I,
    progress: &Progress,
) -> ImportSummary
where
    I: Iterator<Item = Result<SourceMessage, BoxError>>,
{
    let started = Instant::now();
    let mut summary = ImportSummary::default();
    let mut done = 0u64;
    let mut read = 0u64;
    let deliveries = futures::stream::iter(messages).map(|message| {
        let deliverer = deliverer.clone();
        let span = message.as_ref().map_or(0, |m| m.span);
        let what = message
            .as_ref()
            .map_or_else(|_| String::new(), |m| m.key.replace('\0', "/"));
        let name = what.clone();
        // Each delivery a task of its own, so that parsing and sealing run on every core
        // (results still come back in the source's order).
        let delivery = tokio::spawn(async move {
            let message = match message {
                Ok(message) => message,
                Err(e) => return (String::new(), 0, 0, Err(e.to_string())),
            };
            let size = message.bytes.len() as u64;
            let options = DeliveryOptions {
                mailbox: message.mailbox.clone(),
                internal_date: message.internal_date,
                flags: message.flags.clone(),
                id: Some(deliverer.delivery_id_for(&account, message.key.as_bytes())),
                id_from_content: false,
            };
            let result = deliverer
                .deliver_bytes(account, &message.bytes, options)
                .await
                .map(|receipt| receipt.duplicate)
                .map_err(|e| e.to_string());
            (what, span, size, result)
        });
        async move {
            delivery
                .await
                .unwrap_or_else(|e| (name, span, 0, Err(format!("delivery task: {e}"))))
        }
    });
    let mut deliveries = deliveries.buffered(IN_FLIGHT);
    while let Some((what, span, size, result)) = deliveries.next().await {
        done += 1;
        read += span;
        match result {
            Ok(duplicate) => {
                if duplicate {
                    summary.already += 1;
                } else {
                    summary.delivered += 1;
                }
                summary.bytes += size;
            }
            Err(e) => summary.failed.push((what, e)),
        }
        progress.set(done, read);
    }
    summary.seconds = started.elapsed().as_secs_f64();
    progress.finish(done, read);
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maildir_info_letters_are_imap_flags() {
        let keywords = vec![(0, "$Label1".to_string()), (2, "Work".to_string())];
        assert_eq!(
            maildir_flags("DFPRSTac", &keywords),
            [
                "\\Draft",
                "\\Flagged",
                "$Forwarded",
                "\\Answered",
                "\\Seen",
                "\\Deleted",
                "$Label1",
                "Work"
            ]
        );
        assert_eq!(maildir_flags("b", &keywords), Vec::<String>::new());
    }

    #[test]
    fn folder_names_are_mailbox_names() {
        assert_eq!(folder_name("Archive.2023"), "Archive/2023");
        assert_eq!(folder_name("Entw&APw-rfe"), "Entwürfe");
    }

    #[test]
    fn mbox_messages_flags_and_dates() {
        let mbox = b"From a@example.org Sat Dec  5 10:00:00 2026\nSubject: one\nStatus: RO\nX-Status: AF\n\nbody\n>From here\n>>From there\n\nFrom b@example.org Sun Dec  6 11:30:00 2026\nSubject: two\n\nsecond\n";
        let mut reader = MboxReader::new(&mbox[..], "INBOX", "m");
        let one = reader.next_message().unwrap().unwrap();
        // mboxrd: one level of `>` quoting taken off.
        assert_eq!(
            one.bytes,
            b"Subject: one\r\n\r\nbody\r\nFrom here\r\n>From there\r\n"
        );
        assert_eq!(one.flags, ["\\Seen", "\\Answered", "\\Flagged"]);
        assert_eq!(one.internal_date, Some(1_796_464_800));
        let two = reader.next_message().unwrap().unwrap();
        assert_eq!(two.bytes, b"Subject: two\r\n\r\nsecond\r\n");
        assert!(two.flags.is_empty());
        assert_ne!(one.key, two.key);
        assert!(reader.next_message().unwrap().is_none());
        assert!(MboxReader::new(&b"Subject: x\n\n"[..], "INBOX", "m")
            .next_message()
            .is_err());
    }

    #[test]
    fn lf_becomes_crlf_and_a_crlf_file_stays() {
        // An LF file: a CR before an LF is the message's own byte.
        assert_eq!(crlf(b"a\nb\r\nc\n"), b"a\r\nb\r\r\nc\r\n");
        assert_eq!(crlf(b"a\r\nb\rc\r\n"), b"a\r\nb\rc\r\n");
        assert_eq!(crlf(b"no newline"), b"no newline");
    }
}
