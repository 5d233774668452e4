//! `mailvault export` and the migration round trips of issue 15.
//!
//! - **With a real peer**: the corpus delivered into Dovecot 2.3 over LMTP and filed over
//!   Dovecot's IMAP into folders with flags and keywords gives a Maildir tree Dovecot
//!   wrote; `mailvault import maildir` of it, then `mailvault export maildir`, gives the
//!   same folders with the same files, byte for byte, the same flags and keywords, the
//!   same modification times (Python's `mailbox` reads both). The Dovecot instance is a
//!   plain one (no mail_crypt: its files must be readable), started by
//!   scripts/peers.sh on ports and a folder of its own.
//! - An mbox written by Python's `mailbox` module, imported and exported as mbox, reads
//!   back in Python with the same messages, flags and From-line dates.
//! - An account's Maildir export and mbox export, each imported into a fresh account,
//!   give over IMAP the same mailboxes, messages, flags and internal dates.

mod peers;

use peers::{tools, Backend, MailServer, PlainDovecot, PASSWORD};
use std::path::{Path, PathBuf};

const USER: &str = "alice@example.org";

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/mail-parser")
}

/// `mailvault import|export <args> --config .. --name USER --password-file ..`.
fn mailvault(server: &MailServer, args: &[&str]) -> (String, String) {
    let out = server.account_job(args, USER);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "{args:?}: {}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("\"failed\":[]"), "{args:?}: {stdout}");
    (stdout, stderr)
}

#[test]
fn a_maildir_dovecot_wrote_imports_and_exports_byte_for_byte_with_flags_and_folders() {
    const TEST: &str =
        "a_maildir_dovecot_wrote_imports_and_exports_byte_for_byte_with_flags_and_folders";
    let Some(tools) = tools(TEST, &["python", "dovecot"]) else {
        return;
    };
    let python = &tools[0];
    let Some(dovecot) = PlainDovecot::start(TEST) else {
        return;
    };
    let Some(server) = MailServer::create(TEST, Backend::Local, &[USER]) else {
        return;
    };
    let (imap, lmtp) = (dovecot.imap.to_string(), dovecot.lmtp.to_string());
    peers::run_script(
        python,
        "export_check.py",
        &[
            "dovecot-fill",
            imap.as_str(),
            lmtp.as_str(),
            "alice",
            "alicepw",
            &corpus_dir().to_string_lossy(),
        ],
        "the corpus into Dovecot",
        String::new,
    );
    let source = dovecot.maildir("alice");
    let source = source.to_string_lossy();
    let (stdout, _) = mailvault(&server, &["import", "maildir", &source, "--json"]);
    eprintln!("{TEST}: import: {stdout}");
    let exported = tempfile::tempdir().expect("a folder");
    let target = exported.path().join("Maildir");
    let target = target.to_string_lossy();
    let (stdout, stderr) = mailvault(&server, &["export", "maildir", &target, "--json"]);
    eprintln!("{TEST}: export: {stdout}");
    // Output to a file (not a terminal): plain progress lines.
    assert!(stderr.contains("export: "), "{stderr}");
    assert!(stdout.contains("\"already_exported\":0,"), "{stdout}");
    peers::run_script(
        python,
        "export_check.py",
        &["compare-maildirs", &*source, &*target],
        "Dovecot's Maildir against the export",
        String::new,
    );
    // Run again into the same folder: nothing is written twice.
    let (again, _) = mailvault(&server, &["export", "maildir", &target, "--json"]);
    assert!(again.contains("\"exported\":0,"), "{again}");
    peers::run_script(
        python,
        "export_check.py",
        &["compare-maildirs", &*source, &*target],
        "Dovecot's Maildir against the export run twice",
        String::new,
    );
}

#[test]
fn an_mbox_python_wrote_imports_and_exports_with_its_messages_and_flags() {
    const TEST: &str = "an_mbox_python_wrote_imports_and_exports_with_its_messages_and_flags";
    let Some(python) = tools(TEST, &["python"]).map(|mut t| t.remove(0)) else {
        return;
    };
    let Some(server) = MailServer::create(TEST, Backend::Local, &[USER]) else {
        return;
    };
    let sources = tempfile::tempdir().expect("a folder");
    let root = sources.path().to_string_lossy().into_owned();
    peers::run_script(
        &python,
        "import_check.py",
        &["write", root.as_str(), &corpus_dir().to_string_lossy()],
        "write the sources",
        String::new,
    );
    let original = format!("{root}/mail.mbox");
    mailvault(
        &server,
        &[
            "import",
            "mbox",
            &original,
            "--mailbox",
            "Old/mbox",
            "--json",
        ],
    );
    let one = format!("{root}/exported.mbox");
    let (stdout, stderr) = mailvault(
        &server,
        &["export", "mbox", &one, "--mailbox", "Old/mbox", "--json"],
    );
    eprintln!("{TEST}: export: {stdout}");
    assert!(stderr.contains("export: "), "{stderr}");
    assert!(!Path::new(&format!("{one}.part")).exists());
    peers::run_script(
        &python,
        "export_check.py",
        &["compare-mboxes", original.as_str(), one.as_str()],
        "the mbox against its export",
        String::new,
    );
    // An existing file is not overwritten.
    let refused = server.account_job(&["export", "mbox", &one, "--mailbox", "Old/mbox"], USER);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("exists"));
    // Every mailbox, one file each.
    let all = format!("{root}/all");
    mailvault(&server, &["export", "mbox", &all, "--json"]);
    peers::run_script(
        &python,
        "export_check.py",
        &[
            "compare-mboxes",
            original.as_str(),
            &format!("{all}/Old/mbox.mbox"),
        ],
        "the mbox against the export of every mailbox",
        String::new,
    );
    assert!(Path::new(&format!("{all}/INBOX.mbox")).is_file());
}

/// Issue 15, "an import of that export gives the same mailboxes": an account filled over
/// IMAP (Python's `imaplib`: the corpus APPENDed into INBOX, Sent, Archive/2023 and
/// Entwürfe with flags, keywords and internal dates) is exported as a Maildir tree and
/// as mbox files; the Maildir imported into a fresh account, and each mbox file into its
/// mailbox of another, give over IMAP the same mailboxes with the same messages (BODY[]
/// byte for byte), flags and internal dates.
#[test]
fn an_export_imported_into_a_fresh_account_gives_the_same_mailboxes() {
    const TEST: &str = "an_export_imported_into_a_fresh_account_gives_the_same_mailboxes";
    const FROM_MAILDIR: &str = "bob@example.org";
    const FROM_MBOX: &str = "carol@example.org";
    let Some(python) = tools(TEST, &["python"]).map(|mut t| t.remove(0)) else {
        return;
    };
    let Some(mut server) =
        MailServer::create(TEST, Backend::Local, &[USER, FROM_MAILDIR, FROM_MBOX])
    else {
        return;
    };
    server.start();
    let imap = server.imap.to_string();
    peers::run_script(
        &python,
        "export_check.py",
        &[
            "dovecot-append",
            imap.as_str(),
            USER,
            PASSWORD,
            &corpus_dir().to_string_lossy(),
            "nul-as-0x80",
        ],
        "the corpus into the account over IMAP",
        || server.logs(),
    );
    let exports = tempfile::tempdir().expect("a folder");
    let maildir = exports
        .path()
        .join("Maildir")
        .to_string_lossy()
        .into_owned();
    let mboxes = exports.path().join("mbox");
    mailvault(&server, &["export", "maildir", &maildir, "--json"]);
    mailvault(
        &server,
        &["export", "mbox", &mboxes.to_string_lossy(), "--json"],
    );
    let job = |args: &[&str], name: &str| {
        let out = server.account_job(args, name);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success() && stdout.contains("\"failed\":[]"),
            "{args:?}: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    };
    job(&["import", "maildir", &maildir, "--json"], FROM_MAILDIR);
    // `<folder>/<name>.mbox` holds mailbox `<folder>/<name>`.
    let mut files = Vec::new();
    let mut dirs = vec![mboxes.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("the mbox folder") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    assert!(files.len() >= 4, "{files:?}");
    for file in &files {
        let name = file
            .strip_prefix(&mboxes)
            .expect("under the folder")
            .with_extension("")
            .to_string_lossy()
            .into_owned();
        let path = file.to_string_lossy();
        job(
            &["import", "mbox", &path, "--mailbox", &name, "--json"],
            FROM_MBOX,
        );
    }
    for (copy, what) in [
        (
            FROM_MAILDIR,
            "the account against its Maildir export imported",
        ),
        (FROM_MBOX, "the account against its mbox export imported"),
    ] {
        peers::run_script(
            &python,
            "export_check.py",
            &[
                "compare-imap",
                imap.as_str(),
                USER,
                PASSWORD,
                imap.as_str(),
                copy,
                PASSWORD,
            ],
            what,
            || server.logs(),
        );
    }
}
