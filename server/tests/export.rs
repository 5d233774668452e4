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

mod peers;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use peers::{free_port, tools, Backend, MailServer};

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

/// A Dovecot instance of scripts/peers.sh without mail_crypt, in a folder and on ports
/// of its own; stopped on drop.
struct PlainDovecot {
    state: tempfile::TempDir,
    imap: u16,
    lmtp: u16,
}

impl PlainDovecot {
    fn script(&self, command: &str) -> std::process::Output {
        Command::new("bash")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/peers.sh"))
            .arg(command)
            .env("MAILVAULT_PEERS_STATE", self.state.path())
            .env("MAILVAULT_DOVECOT_IMAP_PORT", self.imap.to_string())
            .env("MAILVAULT_DOVECOT_LMTP_PORT", self.lmtp.to_string())
            .env("MAILVAULT_DOVECOT_CRYPT", "0")
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/peers.sh")
    }

    /// Started, or `None` (skip, printed) when scripts/peers.sh cannot start it; panics
    /// instead when `MAILVAULT_REQUIRE_PEERS=1`.
    fn start(test: &str) -> Option<Self> {
        let dovecot = PlainDovecot {
            state: tempfile::tempdir().expect("a folder"),
            imap: free_port(),
            lmtp: free_port(),
        };
        let out = dovecot.script("start");
        if out.status.success() {
            return Some(dovecot);
        }
        let why = format!(
            "{test}: scripts/peers.sh cannot start a plain Dovecot ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            std::env::var("MAILVAULT_REQUIRE_PEERS").as_deref() != Ok("1"),
            "MAILVAULT_REQUIRE_PEERS=1 but {why}"
        );
        eprintln!("SKIPPED {why}");
        None
    }

    fn maildir(&self, user: &str) -> PathBuf {
        self.state
            .path()
            .join("dovecot/mail")
            .join(user)
            .join("Maildir")
    }
}

impl Drop for PlainDovecot {
    fn drop(&mut self) {
        let _ = self.script("stop");
    }
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
