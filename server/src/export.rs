//! `mailvault export`: an account's mail written out as a Maildir++ tree or as mbox
//! files, through the library's public API (`Mailstore::mailboxes`, `select`, `email`,
//! `read_stream`): every message streamed from the store to its file, a chunk at a time.
//!
//! - **Maildir++**: INBOX is the root's `cur/`, `Archive/2023` is `.Archive.2023/` (each
//!   level in modified UTF-7), every mailbox gets its folder (empty ones too). Flags are
//!   the file name's info (`:2,DFRST`), keywords letters `a`..`z` through the folder's
//!   `dovecot-keywords` (as Dovecot writes them; `$Forwarded` is a keyword there too),
//!   the internal date is the file's modification time, `,S=` its size. A message is
//!   written to `tmp/` and renamed into `cur/`, so a file in `cur/` is whole; its unique
//!   name comes from the mailbox's UIDVALIDITY and the UID, so an export killed part way
//!   and run again into the same folder writes only what is missing.
//! - **mbox** (mboxrd): each message after a `From MAILER-DAEMON <internal date, UTC>`
//!   line, its flags in `Status`, `X-Status` and `X-Keywords` fields put before its
//!   header, every line matching `>*From ` quoted with one more `>`, a blank line after
//!   it. Written to `<file>.part` and renamed when complete.
//!
//! Line endings: the store holds messages as IMAP serves them (CRLF); files get LF, as
//! Maildir and mbox hold them (and as `mailvault import` reads them back).

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use futures::StreamExt;
use mailvault::mail::{Mailbox, Mailstore, MessageSummary, INBOX};

use crate::config::BoxError;
use crate::migrate::Progress;

/// What an export did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ExportSummary {
    /// Mailboxes written.
    pub mailboxes: u64,
    /// Messages written now.
    pub exported: u64,
    /// Messages found written by an earlier run (a Maildir export run again).
    pub already: u64,
    /// Bytes of the messages written (as stored, CRLF).
    pub bytes: u64,
    /// What could not be written as it is, with the reason (a message, a mailbox, a
    /// keyword).
    pub failed: Vec<(String, String)>,
    /// Wall time.
    pub seconds: f64,
}

impl ExportSummary {
    /// One JSON object (for `--json`).
    pub fn to_json(&self) -> String {
        let failed: Vec<serde_json::Value> = self
            .failed
            .iter()
            .map(|(what, why)| serde_json::json!({ "item": what, "error": why }))
            .collect();
        serde_json::json!({
            "mailboxes": self.mailboxes,
            "exported": self.exported,
            "already_exported": self.already,
            "failed": failed,
            "bytes": self.bytes,
            "seconds": (self.seconds * 1000.0).round() / 1000.0,
        })
        .to_string()
    }
}

/// A message's lines with CRLF made LF, a chunk at a time; for an mbox, every line
/// matching `>*From ` quoted with one more `>` (mboxrd).
#[derive(Debug, Default)]
pub struct LineWriter {
    quote_from: bool,
    /// The current line's first bytes while they may still be `>*From `.
    prefix: Vec<u8>,
    /// Whether the current line's start is still undecided (only when quoting).
    undecided: bool,
    pending_cr: bool,
    last: Option<u8>,
}

impl LineWriter {
    /// A writer for a Maildir file (`quote_from` false) or an mbox message (true).
    pub fn new(quote_from: bool) -> Self {
        Self {
            quote_from,
            undecided: quote_from,
            ..Self::default()
        }
    }

    /// Converts `chunk`, appending to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        for &b in chunk {
            if self.pending_cr {
                self.pending_cr = false;
                if b == b'\n' {
                    self.byte(b'\n', out);
                    continue;
                }
                self.byte(b'\r', out);
            }
            if b == b'\r' {
                self.pending_cr = true;
            } else {
                self.byte(b, out);
            }
        }
    }

    fn byte(&mut self, b: u8, out: &mut Vec<u8>) {
        if self.undecided {
            self.prefix.push(b);
            let quotes = self.prefix.iter().take_while(|&&c| c == b'>').count();
            let rest = &self.prefix[quotes..];
            if rest.len() >= 5 || !b"From ".starts_with(rest) {
                if rest.starts_with(b"From ") {
                    out.push(b'>');
                }
                out.extend_from_slice(&self.prefix);
                self.prefix.clear();
                self.undecided = false;
            }
        } else {
            out.push(b);
        }
        self.last = Some(b);
        if b == b'\n' {
            self.undecided = self.quote_from;
        }
    }

    /// The end of the message: what is held back goes out; `final_newline` adds an LF
    /// unless the message ends with one (an mbox message must).
    pub fn finish(&mut self, final_newline: bool, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.pending_cr) {
            self.byte(b'\r', out);
        }
        out.append(&mut self.prefix);
        self.undecided = self.quote_from;
        if final_newline && self.last.is_some_and(|b| b != b'\n') {
            out.push(b'\n');
        }
        self.last = None;
    }
}

/// The Maildir info letters of `flags` (`DFRST` and keyword letters, in ASCII order),
/// keyword letters taken from `keywords` (extended with new keywords up to 26; one
/// beyond that is returned in the second list).
pub fn maildir_info(
    flags: &mailvault::mail::Flags,
    keywords: &mut Vec<String>,
) -> (String, Vec<String>) {
    let mut letters = Vec::new();
    let mut dropped = Vec::new();
    for name in flags.names() {
        let letter = match name {
            "\\Draft" => Some('D'),
            "\\Flagged" => Some('F'),
            "\\Answered" => Some('R'),
            "\\Seen" => Some('S'),
            "\\Deleted" => Some('T'),
            keyword => match keywords.iter().position(|k| k == keyword) {
                Some(n) => Some(char::from(b'a' + n as u8)),
                None if keywords.len() < 26 => {
                    keywords.push(keyword.to_string());
                    Some(char::from(b'a' + (keywords.len() - 1) as u8))
                }
                None => {
                    dropped.push(keyword.to_string());
                    None
                }
            },
        };
        letters.extend(letter);
    }
    letters.sort_unstable();
    (letters.into_iter().collect(), dropped)
}

/// The Maildir++ folder of mailbox `name` under `root` (INBOX is `root`), or why it has
/// none (a level holding `.`, the Maildir++ separator).
pub fn maildir_folder(root: &Path, name: &str) -> Result<PathBuf, String> {
    if name.eq_ignore_ascii_case(INBOX) {
        return Ok(root.to_path_buf());
    }
    let mut folder = String::new();
    for level in name.split('/') {
        if level.contains('.') || level.is_empty() {
            return Err(format!(
                "a Maildir++ folder name cannot hold the level {level:?} ('.' is its separator)"
            ));
        }
        folder.push('.');
        folder.push_str(&crate::mutf7::encode(level));
    }
    Ok(root.join(folder))
}

/// Messages exported at once (bodies read from the store concurrently).
const IN_FLIGHT: usize = 8;

/// A message whose body is at most this size is read whole ahead of the mbox writer;
/// a larger one is streamed when its turn comes.
const PREFETCH_MAX: u64 = 1 << 20;

/// Every message of every mailbox (the mailboxes named, when given) in `mail`.
fn planned(mail: &Mailstore, only: Option<&str>) -> Result<(Vec<Mailbox>, u64), BoxError> {
    let mut mailboxes = mail.mailboxes()?;
    if let Some(only) = only {
        mailboxes
            .retain(|m| m.name == only || (m.name == INBOX && only.eq_ignore_ascii_case(INBOX)));
        if mailboxes.is_empty() {
            return Err(format!("no mailbox named {only}").into());
        }
    }
    let mut total = 0u64;
    for mailbox in &mailboxes {
        total += u64::from(mail.status(mailbox.id)?.messages);
    }
    Ok((mailboxes, total))
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> BoxError + '_ {
    move |e| format!("{}: {e}", path.display()).into()
}

/// Writes every mailbox of `mail` as a Maildir++ tree under `root` (created).
///
/// # Errors
/// The store cannot be read, or `root` cannot be written; a message that cannot be
/// read or written is listed in the summary's `failed` instead.
pub async fn export_maildir(
    mail: &mut Mailstore,
    root: &Path,
    quiet: bool,
) -> Result<ExportSummary, BoxError> {
    let started = Instant::now();
    mail.refresh().await?;
    let (mailboxes, total) = planned(mail, None)?;
    let progress = Progress::new("export", "messages", Some(total), None, quiet);
    let mut summary = ExportSummary::default();
    let mut done = 0u64;
    for mailbox in mailboxes {
        let folder = match maildir_folder(root, &mailbox.name) {
            Ok(folder) => folder,
            Err(why) => {
                summary.failed.push((mailbox.name.clone(), why));
                continue;
            }
        };
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir_all(folder.join(sub)).map_err(io_error(&folder))?;
        }
        if folder != root {
            std::fs::write(folder.join("maildirfolder"), b"").map_err(io_error(&folder))?;
        }
        summary.mailboxes += 1;
        let mut keywords = read_keywords(&folder);
        let present = present_uniques(&folder)?;
        let view = mail.select(mailbox.id).await?;
        // Letters first (one dovecot-keywords write per folder), then the files.
        let mut names = Vec::with_capacity(view.messages.len());
        for message in &view.messages {
            let (info, dropped) = maildir_info(&message.flags, &mut keywords);
            for keyword in dropped {
                summary.failed.push((
                    format!("{}/UID {}", mailbox.name, message.uid),
                    format!("keyword {keyword} left out: a Maildir folder holds 26 keywords"),
                ));
            }
            names.push(info);
        }
        write_keywords(&folder, &keywords)?;
        let mail = &*mail;
        let (folder, name, present) = (&folder, &mailbox.name, &present);
        let (id, uid_validity) = (view.mailbox.id, view.mailbox.uid_validity);
        let mut writes = futures::stream::iter(view.messages.iter().zip(names))
            .map(|(message, info)| async move {
                let what = format!("{name}/UID {}", message.uid);
                let result = match mail.email(id, message.uid) {
                    Ok(email) => {
                        let unique = format!(
                            "{}.V{uid_validity}U{}.mailvault",
                            email.internal_date, message.uid
                        );
                        if present.contains(&unique) {
                            Ok(None)
                        } else {
                            write_maildir_file(mail, &email, folder, &unique, &info)
                                .await
                                .map(Some)
                        }
                    }
                    Err(e) => Err(e.to_string()),
                };
                (what, message.size, result)
            })
            .buffer_unordered(IN_FLIGHT);
        while let Some((what, size, result)) = writes.next().await {
            done += 1;
            match result {
                Ok(Some(())) => {
                    summary.exported += 1;
                    summary.bytes += size;
                }
                Ok(None) => summary.already += 1,
                Err(why) => summary.failed.push((what, why)),
            }
            progress.set(done, summary.bytes);
        }
    }
    summary.seconds = started.elapsed().as_secs_f64();
    progress.finish(done, summary.bytes);
    Ok(summary)
}

/// The unique names (before `,` or `:`) of the files in a folder's `cur/` and `new/`.
fn present_uniques(folder: &Path) -> Result<HashSet<String>, BoxError> {
    let mut out = HashSet::new();
    for sub in ["cur", "new"] {
        let dir = folder.join(sub);
        for entry in std::fs::read_dir(&dir).map_err(io_error(&dir))? {
            let entry = entry.map_err(io_error(&dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let unique = name.split([',', ':']).next().unwrap_or_default();
            out.insert(unique.to_string());
        }
    }
    Ok(out)
}

/// A folder's `dovecot-keywords` (`<n> <name>` lines), as a list by letter.
fn read_keywords(folder: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(folder.join("dovecot-keywords")) else {
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::new();
    for line in text.lines() {
        if let Some((n, name)) = line.split_once(' ') {
            if let Ok(n) = n.parse::<usize>() {
                if n < 26 {
                    if out.len() <= n {
                        out.resize(n + 1, String::new());
                    }
                    out[n] = name.trim().to_string();
                }
            }
        }
    }
    out
}

fn write_keywords(folder: &Path, keywords: &[String]) -> Result<(), BoxError> {
    if keywords.is_empty() {
        return Ok(());
    }
    let text: String = keywords
        .iter()
        .enumerate()
        .filter(|(_, k)| !k.is_empty())
        .map(|(n, k)| format!("{n} {k}\n"))
        .collect();
    let path = folder.join("dovecot-keywords");
    let tmp = folder.join("tmp").join("dovecot-keywords");
    std::fs::write(&tmp, text).map_err(io_error(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_error(&path))?;
    Ok(())
}

/// Streams one message into `folder/tmp/<unique>`, dates it, and renames it into
/// `cur/<unique>,S=<size>:2,<info>`.
async fn write_maildir_file(
    mail: &Mailstore,
    email: &mailvault::mail::EmailRecord,
    folder: &Path,
    unique: &str,
    info: &str,
) -> Result<(), String> {
    let tmp = folder.join("tmp").join(unique);
    let failed = |e: std::io::Error| format!("{}: {e}", tmp.display());
    let mut file = std::fs::File::create(&tmp).map_err(failed)?;
    let mut body = mail.read_stream(email).await.map_err(|e| e.to_string())?;
    let mut lines = LineWriter::new(false);
    let mut out = Vec::new();
    let mut size = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        lines.push(&chunk, &mut out);
        file.write_all(&out).map_err(failed)?;
        size += out.len() as u64;
        out.clear();
    }
    lines.finish(false, &mut out);
    file.write_all(&out).map_err(failed)?;
    size += out.len() as u64;
    file.set_modified(system_time(email.internal_date))
        .map_err(failed)?;
    drop(file);
    let cur = folder
        .join("cur")
        .join(format!("{unique},S={size}:2,{info}"));
    std::fs::rename(&tmp, &cur).map_err(failed)?;
    Ok(())
}

fn system_time(secs: i64) -> std::time::SystemTime {
    let epoch = std::time::UNIX_EPOCH;
    if secs >= 0 {
        epoch + std::time::Duration::from_secs(secs.unsigned_abs())
    } else {
        epoch - std::time::Duration::from_secs(secs.unsigned_abs())
    }
}

/// The `Status`, `X-Status` and `X-Keywords` fields of an mbox message with `flags`
/// (LF line endings), as `mailvault import` and mutt read them.
pub fn mbox_status_fields(flags: &mailvault::mail::Flags) -> String {
    let mut status = String::new();
    let mut x_status = String::new();
    let mut keywords = Vec::new();
    for name in flags.names() {
        match name {
            "\\Seen" => status.push('R'),
            "\\Answered" => x_status.push('A'),
            "\\Flagged" => x_status.push('F'),
            "\\Draft" => x_status.push('T'),
            "\\Deleted" => x_status.push('D'),
            keyword => keywords.push(keyword),
        }
    }
    status.push('O');
    let mut out = format!("Status: {status}\n");
    if !x_status.is_empty() {
        out.push_str(&format!("X-Status: {x_status}\n"));
    }
    if !keywords.is_empty() {
        out.push_str(&format!("X-Keywords: {}\n", keywords.join(" ")));
    }
    out
}

/// An mbox `From ` line for a message of internal date `secs` (asctime, UTC).
pub fn mbox_from_line(secs: i64) -> String {
    let date = chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .format("%a %b %e %H:%M:%S %Y");
    format!("From MAILER-DAEMON {date}\n")
}

/// Writes mailbox `only` of `mail` as the mbox file `path`, or, without `only`, every
/// mailbox as `path/<name>.mbox` (`Archive/2023` is `path/Archive/2023.mbox`).
///
/// # Errors
/// No mailbox `only`; the store cannot be read; a file exists already or cannot be
/// written. A message that cannot be read is listed in the summary's `failed`.
pub async fn export_mbox(
    mail: &mut Mailstore,
    path: &Path,
    only: Option<&str>,
    quiet: bool,
) -> Result<ExportSummary, BoxError> {
    let started = Instant::now();
    mail.refresh().await?;
    let (mailboxes, total) = planned(mail, only)?;
    let progress = Progress::new("export", "messages", Some(total), None, quiet);
    let mut summary = ExportSummary::default();
    let mut done = 0u64;
    for mailbox in mailboxes {
        let file_path = match only {
            Some(_) => path.to_path_buf(),
            None => path.join(format!("{}.mbox", mailbox.name)),
        };
        if file_path.exists() {
            return Err(format!("{} exists: not overwritten", file_path.display()).into());
        }
        if let Some(parent) = file_path.parent() {
            std::fs::create_dir_all(parent).map_err(io_error(parent))?;
        }
        let mut part = file_path.clone().into_os_string();
        part.push(".part");
        let part = PathBuf::from(part);
        let file = std::fs::File::create(&part).map_err(io_error(&part))?;
        let mut file = std::io::BufWriter::new(file);
        let view = mail.select(mailbox.id).await?;
        let mail = &*mail;
        let id = view.mailbox.id;
        // Small bodies are read ahead (in order); a large one is streamed in its turn.
        let mut reads = futures::stream::iter(view.messages.iter())
            .map(|message: &MessageSummary| async move {
                let email = mail.email(id, message.uid).map_err(|e| e.to_string())?;
                let body = if message.size <= PREFETCH_MAX {
                    Some(mail.read(&email).await.map_err(|e| e.to_string())?)
                } else {
                    None
                };
                Ok::<_, String>((email, body))
            })
            .buffered(IN_FLIGHT);
        let mut index = 0;
        while let Some(read) = reads.next().await {
            let message = &view.messages[index];
            index += 1;
            done += 1;
            let what = format!("{}/UID {}", mailbox.name, message.uid);
            let written = match read {
                Ok((email, body)) => {
                    write_mbox_message(mail, &mut file, &email, &message.flags, body)
                        .await
                        .map_err(|e| e.to_string())
                }
                Err(why) => Err(why),
            };
            match written {
                Ok(()) => {
                    summary.exported += 1;
                    summary.bytes += message.size;
                }
                Err(why) => summary.failed.push((what, why)),
            }
            progress.set(done, summary.bytes);
        }
        file.flush().map_err(io_error(&part))?;
        file.get_ref().sync_all().map_err(io_error(&part))?;
        drop(file);
        std::fs::rename(&part, &file_path).map_err(io_error(&file_path))?;
        summary.mailboxes += 1;
    }
    summary.seconds = started.elapsed().as_secs_f64();
    progress.finish(done, summary.bytes);
    Ok(summary)
}

async fn write_mbox_message(
    mail: &Mailstore,
    file: &mut impl Write,
    email: &mailvault::mail::EmailRecord,
    flags: &mailvault::mail::Flags,
    body: Option<bytes::Bytes>,
) -> Result<(), BoxError> {
    let mut out = mbox_from_line(email.internal_date).into_bytes();
    out.extend_from_slice(mbox_status_fields(flags).as_bytes());
    let mut lines = LineWriter::new(true);
    match body {
        Some(body) => lines.push(&body, &mut out),
        None => {
            let mut stream = mail.read_stream(email).await?;
            while let Some(chunk) = stream.next().await {
                lines.push(&chunk?, &mut out);
                file.write_all(&out)?;
                out.clear();
            }
        }
    }
    lines.finish(true, &mut out);
    out.push(b'\n');
    file.write_all(&out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailvault::mail::Flags;

    fn convert(quote: bool, chunks: &[&[u8]]) -> Vec<u8> {
        let mut writer = LineWriter::new(quote);
        let mut out = Vec::new();
        for chunk in chunks {
            writer.push(chunk, &mut out);
        }
        writer.finish(quote, &mut out);
        out
    }

    #[test]
    fn crlf_becomes_lf_across_chunks_and_a_lone_cr_stays() {
        assert_eq!(
            convert(false, &[b"a\r", b"\nb\rc\r\n", b"d"]),
            b"a\nb\rc\nd"
        );
        assert_eq!(convert(false, &[b"x\r"]), b"x\r");
    }

    #[test]
    fn mboxrd_quotes_every_from_line_once_more() {
        let message = b"Subject: s\r\n\r\nFrom here\r\n>From there\r\n>>From x\r\nFrom\r\n From y\r\nFromage\r\n";
        let want = b"Subject: s\n\n>From here\n>>From there\n>>>From x\nFrom\n From y\nFromage\n";
        assert_eq!(convert(true, &[message]), want);
        // Split inside the prefix, byte by byte.
        let chunks: Vec<&[u8]> = message.chunks(1).collect();
        assert_eq!(convert(true, &chunks), want);
        // A message ending without a newline gets one.
        assert_eq!(convert(true, &[b"a\r\nFrom"]), b"a\nFrom\n");
    }

    #[test]
    fn flags_are_maildir_letters_and_keywords_get_letters_in_order() {
        let mut keywords = vec!["$Label1".to_string()];
        let flags =
            Flags::from_names(["\\Seen", "Work", "\\Draft", "$Label1", "\\Answered"]).unwrap();
        let (info, dropped) = maildir_info(&flags, &mut keywords);
        assert_eq!(info, "DRSab");
        assert_eq!(keywords, ["$Label1", "Work"]);
        assert!(dropped.is_empty());
        let mut full: Vec<String> = (0..26).map(|i| format!("k{i}")).collect();
        let (info, dropped) = maildir_info(&Flags::from_names(["k3", "new"]).unwrap(), &mut full);
        assert_eq!((info.as_str(), dropped), ("d", vec!["new".to_string()]));
    }

    #[test]
    fn mailbox_names_are_maildir_folders() {
        let root = Path::new("/m");
        assert_eq!(maildir_folder(root, "INBOX").unwrap(), root);
        assert_eq!(
            maildir_folder(root, "Archive/2023").unwrap(),
            root.join(".Archive.2023")
        );
        assert_eq!(
            maildir_folder(root, "Entwürfe").unwrap(),
            root.join(".Entw&APw-rfe")
        );
        assert!(maildir_folder(root, "a.b").is_err());
    }

    #[test]
    fn mbox_fields_and_from_line() {
        let flags = Flags::from_names(["\\Seen", "\\Flagged", "\\Deleted", "Work"]).unwrap();
        assert_eq!(
            mbox_status_fields(&flags),
            "Status: RO\nX-Status: FD\nX-Keywords: Work\n"
        );
        assert_eq!(mbox_status_fields(&Flags::new()), "Status: O\n");
        assert_eq!(
            mbox_from_line(1_796_464_800),
            "From MAILER-DAEMON Sat Dec  5 10:00:00 2026\n"
        );
    }
}
