//! `mailvault import` (issue 15): existing mail brought into an account.
//!
//! - A Maildir++ tree and an mbox written by Python's `mailbox` module from the real-mail
//!   corpus are imported; over IMAP (Python `imaplib`) every message is there once,
//!   byte-exact, with its flags, internal date and folder (Sent with its `\Sent` role).
//! - An import of a large Maildir killed with SIGKILL at three points and run again
//!   ends with every message present exactly once.
//! - `import imap` of an account of the shared Dovecot instance (its first user, which no
//!   other test uses: emptied over IMAP, the corpus APPENDed into folders with flags,
//!   keywords and internal dates): over IMAP the mailvault server then serves every
//!   mailbox with the same messages as Dovecot, byte for byte, with the same flags and
//!   internal dates; run again, nothing is stored twice.
//! - On a terminal (`tmux`, its screen read with `capture-pane`) the import draws a
//!   progress bar; with its output to a file it prints plain lines (the first test).

mod peers;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use peers::{tools, Backend, DovecotPick, MailServer, BIN, PASSWORD};

const USER: &str = "alice@example.org";

fn import(server: &MailServer, args: &[&str]) -> std::process::Output {
    let args: Vec<&str> = std::iter::once("import")
        .chain(args.iter().copied())
        .collect();
    server.account_job(&args, USER)
}

#[test]
fn a_maildir_tree_and_an_mbox_import_with_their_flags_dates_and_folders() {
    const TEST: &str = "a_maildir_tree_and_an_mbox_import_with_their_flags_dates_and_folders";
    let Some(python) = tools(TEST, &["python"]).map(|mut t| t.remove(0)) else {
        return;
    };
    let Some(mut server) = MailServer::create(TEST, Backend::Local, &[USER]) else {
        return;
    };
    let sources = tempfile::tempdir().expect("a folder");
    let root = sources.path().to_string_lossy().into_owned();
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/mail-parser");
    peers::run_script(
        &python,
        "import_check.py",
        &["write", root.as_str(), &corpus.to_string_lossy()],
        "write the sources",
        String::new,
    );
    for args in [
        vec!["maildir", &format!("{root}/Maildir")[..], "--json"],
        vec![
            "mbox",
            &format!("{root}/mail.mbox")[..],
            "--mailbox",
            "Old/mbox",
            "--json",
        ],
    ] {
        let out = import(&server, &args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{args:?}: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("\"failed\":[]"), "{stdout}");
        // Output to a file (not a terminal): plain progress lines, no bar.
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("import: "),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Run again: nothing is delivered twice.
    let again = import(&server, &["maildir", &format!("{root}/Maildir"), "--json"]);
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(stdout.contains("\"delivered\":0,"), "{stdout}");
    server.start();
    let imap = server.imap.to_string();
    peers::run_script(
        &python,
        "import_check.py",
        &[
            "check",
            imap.as_str(),
            USER,
            PASSWORD,
            root.as_str(),
            "Old/mbox",
        ],
        "the imported mail over IMAP",
        || server.logs(),
    );
}

/// A Maildir of `n` small messages (distinct subjects, seen) under `dir`.
fn many_messages(dir: &Path, n: usize) -> std::path::PathBuf {
    let maildir = dir.join("Maildir");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).expect("a Maildir");
    }
    for i in 0..n {
        let body = format!(
            "From: a@example.org\nSubject: message {i}\n\n{}\n",
            "text of the message\n".repeat(20)
        );
        std::fs::write(
            maildir.join("cur").join(format!("{i}.M{i}P1.host:2,S")),
            body,
        )
        .expect("a message file");
    }
    maildir
}

#[test]
fn an_import_killed_three_times_and_run_again_stores_each_message_once() {
    const TEST: &str = "an_import_killed_three_times_and_run_again_stores_each_message_once";
    const N: usize = 3000;
    let Some(python) = tools(TEST, &["python"]).map(|mut t| t.remove(0)) else {
        return;
    };
    let Some(mut server) = MailServer::create(TEST, Backend::Local, &[USER]) else {
        return;
    };
    let sources = tempfile::tempdir().expect("a folder");
    let maildir = many_messages(sources.path(), N);
    let mut killed = 0;
    for (n, wait_ms) in [300u64, 900, 1500].into_iter().enumerate() {
        let mut child = Command::new(BIN)
            .args(["import", "maildir"])
            .arg(&maildir)
            .arg("--config")
            .arg(server.config_path())
            .args(["--name", USER, "--quiet"])
            .envs(server.env().iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mailvault import");
        let started = Instant::now();
        std::thread::sleep(Duration::from_millis(wait_ms));
        let done = child.try_wait().expect("the import's status");
        let _ = child.kill();
        let status = child.wait().expect("the import's status");
        eprintln!(
            "{TEST}: run {n} {} after {:?} ({status})",
            if done.is_none() {
                "killed"
            } else {
                "had ended"
            },
            started.elapsed()
        );
        killed += usize::from(done.is_none());
    }
    assert!(killed >= 2, "the kills must land mid-import: {killed} of 3");
    let out = import(&server, &["maildir", &maildir.to_string_lossy(), "--json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{TEST}: the last run: {stdout}");
    assert!(!stdout.contains("\"already_delivered\":0,"), "{stdout}");
    server.start();
    let (imap, n) = (server.imap.to_string(), N.to_string());
    peers::run_script(
        &python,
        "import_check.py",
        &["count", imap.as_str(), USER, PASSWORD, n.as_str()],
        "every message once",
        || server.logs(),
    );
}

#[test]
fn an_import_on_a_terminal_draws_a_progress_bar() {
    const TEST: &str = "an_import_on_a_terminal_draws_a_progress_bar";
    const N: usize = 3000;
    let Some(tmux) = tools(TEST, &["tmux"]).map(|mut t| t.remove(0)) else {
        return;
    };
    let Some(server) = MailServer::create(TEST, Backend::Local, &[USER]) else {
        return;
    };
    let sources = tempfile::tempdir().expect("a folder");
    let maildir = many_messages(sources.path(), N);
    let socket = format!("mailvault-import-{}", std::process::id());
    let tmux_cmd = |args: &[&str]| {
        let mut cmd = Command::new(&tmux);
        cmd.args(["-L", &socket])
            .args(args)
            .envs(server.env().iter().cloned());
        cmd
    };
    let job = format!(
        "{BIN} import maildir {} --config {} --name {USER}; sleep 60",
        maildir.display(),
        server.config_path().display()
    );
    let started = tmux_cmd(&[
        "new-session",
        "-d",
        "-x",
        "150",
        "-y",
        "10",
        "-s",
        "import",
        &job,
    ])
    .status()
    .expect("tmux");
    assert!(started.success(), "tmux new-session: {started}");
    // The bar's line: `import [00:00:01] ████░░ 1234/3000 messages 850/s ETA 2s`.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut screens = Vec::new();
    let mut saw_bar = false;
    while Instant::now() < deadline {
        let screen = tmux_cmd(&["capture-pane", "-p", "-t", "import"])
            .output()
            .expect("tmux capture-pane");
        let text = String::from_utf8_lossy(&screen.stdout).into_owned();
        if text.lines().any(|l| {
            l.starts_with("import [") && l.contains(&format!("/{N} messages")) && l.contains("ETA")
        }) {
            saw_bar = true;
        }
        let done = text.contains("messages delivered");
        screens.push(text);
        if done {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = tmux_cmd(&["kill-server"]).status();
    let last = screens.last().cloned().unwrap_or_default();
    assert!(
        saw_bar,
        "no progress bar on the screen; last screen:\n{last}"
    );
    assert!(
        last.contains(&format!("{N} messages delivered")),
        "the import did not finish on the terminal:\n{last}"
    );
    // A bar, not plain lines, on a terminal.
    assert!(!last.contains("messages/s"), "{last}");
}

#[test]
fn an_account_on_dovecot_imports_over_imap_with_its_flags_dates_and_folders() {
    const TEST: &str = "an_account_on_dovecot_imports_over_imap_with_its_flags_dates_and_folders";
    let Some(python) = tools(TEST, &["python"]).map(|mut t| t.remove(0)) else {
        return;
    };
    let Some(dovecot) = peers::dovecot(TEST, DovecotPick::First) else {
        return;
    };
    let Some(mut server) = MailServer::create(TEST, Backend::Local, &[USER]) else {
        return;
    };
    let port = dovecot.port.to_string();
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/mail-parser");
    peers::run_script(
        &python,
        "export_check.py",
        &[
            "dovecot-append",
            port.as_str(),
            &dovecot.user,
            &dovecot.password,
            &corpus.to_string_lossy(),
        ],
        "the corpus into Dovecot over IMAP",
        String::new,
    );
    let source_password = server.dir.path().join("source-password");
    std::fs::write(&source_password, format!("{}\n", dovecot.password)).expect("a file");
    let url = format!("imap://{}@127.0.0.1:{port}", dovecot.user);
    let source_password = source_password.to_string_lossy();
    let args = [
        "imap",
        &url,
        "--source-password-file",
        &source_password,
        "--json",
    ];
    let out = import(&server, &args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("\"failed\":[]"), "{stdout}");
    assert!(stdout.contains("\"already_delivered\":0,"), "{stdout}");
    // Run again: every message is found stored.
    let again = import(&server, &args);
    let again = String::from_utf8_lossy(&again.stdout);
    assert!(again.contains("\"delivered\":0,"), "{again}");
    server.start();
    let imap = server.imap.to_string();
    peers::run_script(
        &python,
        "export_check.py",
        &[
            "compare-imap",
            port.as_str(),
            &dovecot.user,
            &dovecot.password,
            imap.as_str(),
            USER,
            PASSWORD,
        ],
        "Dovecot's mailboxes against the imported ones",
        || server.logs(),
    );
}

/// `import imap` over implicit TLS from another mailvault server with a self-signed
/// certificate: refused without `--source-ca-file` (the certificate is checked), done
/// with it; the two accounts' exports are then the same Maildir, byte for byte, with the
/// same flags, folders and dates.
#[test]
fn an_account_on_an_imaps_server_imports_once_its_certificate_is_trusted() {
    const TEST: &str = "an_account_on_an_imaps_server_imports_once_its_certificate_is_trusted";
    let Some(tools) = tools(TEST, &["python", "openssl"]) else {
        return;
    };
    let (python, openssl) = (&tools[0], &tools[1]);
    let Some(mut source) = MailServer::create_tls(TEST, Backend::Local, &[USER], openssl) else {
        return;
    };
    let Some(target) = MailServer::create(TEST, Backend::Local, &[USER]) else {
        return;
    };
    let files = tempfile::tempdir().expect("a folder");
    let root = files.path().to_string_lossy().into_owned();
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/mail-parser");
    peers::run_script(
        python,
        "import_check.py",
        &["write", root.as_str(), &corpus.to_string_lossy()],
        "write the sources",
        String::new,
    );
    for args in [
        vec!["import", "maildir", &format!("{root}/Maildir")[..]],
        vec![
            "import",
            "mbox",
            &format!("{root}/mail.mbox")[..],
            "--mailbox",
            "Old/mbox",
        ],
    ] {
        let out = source.account_job(&args, USER);
        assert!(out.status.success(), "{args:?}: {out:?}");
    }
    source.start();
    let url = format!(
        "imaps://{}@{}:{}",
        USER.replace('@', "%40"),
        source.host,
        source.imaps.expect("an IMAPS port")
    );
    let password = source
        .dir
        .path()
        .join("password")
        .to_string_lossy()
        .into_owned();
    let cert = source.cert.clone().expect("a certificate");
    let cert = cert.to_string_lossy();
    let untrusted = import(
        &target,
        &["imap", &url, "--source-password-file", &password, "--json"],
    );
    let stderr = String::from_utf8_lossy(&untrusted.stderr);
    assert!(!untrusted.status.success(), "{stderr}");
    assert!(stderr.contains("certificate"), "{stderr}");
    let out = import(
        &target,
        &[
            "imap",
            &url,
            "--source-password-file",
            &password,
            "--source-ca-file",
            &cert,
            "--json",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        source.logs()
    );
    assert!(stdout.contains("\"failed\":[]"), "{stdout}");
    assert!(!stdout.contains("\"delivered\":0,"), "{stdout}");
    let exports = tempfile::tempdir().expect("a folder");
    let mut trees = Vec::new();
    for (server, name) in [(&source, "source"), (&target, "target")] {
        let tree = exports.path().join(name).to_string_lossy().into_owned();
        let out = server.account_job(&["export", "maildir", &tree], USER);
        assert!(out.status.success(), "{out:?}");
        trees.push(tree);
    }
    peers::run_script(
        python,
        "export_check.py",
        &["compare-maildirs", &trees[0], &trees[1], "over-imap"],
        "the source account's export against the imported one's",
        || source.logs(),
    );
}
