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
//! - `import maildirs` of a tree of user directories (`alice/Maildir/`, `bob/` itself a
//!   Maildir, `carol/` without an account): alice's and bob's mail over IMAP, each in
//!   its own account once; carol refused (exit status 2, listed in the JSON); run again,
//!   nothing is stored twice.
//! - On a terminal (`tmux`, its screen read with `capture-pane`) the import draws a
//!   progress bar; with its output to a file it prints plain lines (the first test).
//! - A hardened account (its secret on a device): the Maildir tree and the mbox import
//!   with no secret given; the device's companion serves them as the first test checks.
//! - `import imap` of an account of a plain Dovecot (its Maildir readable), then `export
//!   maildir`: Dovecot's own Maildir tree back, byte for byte, with flags and folders.

mod peers;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use peers::{
    tools, Backend, CompanionProcess, DovecotPick, MailServer, PlainDovecot, BIN, PASSWORD,
};

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

/// A seed for the kill points, printed by the test that uses it (a failure is then
/// replayed with `MAILVAULT_TEST_SEED`).
fn seed() -> u64 {
    std::env::var("MAILVAULT_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos() as u64 ^ d.as_secs())
                .unwrap_or(1)
        })
}

/// The next of a xorshift sequence, as a fraction in [0, 1).
fn fraction(state: &mut u64) -> f64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state >> 11) as f64 / (1u64 << 53) as f64
}

#[test]
fn an_import_killed_three_times_and_run_again_stores_each_message_once() {
    const TEST: &str = "an_import_killed_three_times_and_run_again_stores_each_message_once";
    const N: usize = 20_000;
    let Some(python) = tools(TEST, &["python"]).map(|mut t| t.remove(0)) else {
        return;
    };
    let Some(mut server) = MailServer::create(TEST, Backend::Local, &[USER]) else {
        return;
    };
    let test_started = Instant::now();
    let sources = tempfile::tempdir().expect("a folder");
    let maildir = many_messages(sources.path(), N);
    eprintln!(
        "{TEST}: {N} messages written in {:?}",
        test_started.elapsed()
    );
    // Three kill points at random fractions of the messages, one in each third: run k is
    // killed once its progress lines report that many messages done (those of the
    // earlier runs, found delivered, count too).
    let seed = seed();
    let mut state = seed | 1;
    let points: Vec<u64> = (0..3)
        .map(|k| ((k as f64 + 0.1 + 0.8 * fraction(&mut state)) / 3.0 * N as f64) as u64)
        .collect();
    eprintln!("{TEST}: seed {seed}, kill points {points:?}");
    let mut killed = 0;
    for (n, point) in points.iter().enumerate() {
        let mut child = Command::new(BIN)
            .args(["import", "maildir"])
            .arg(&maildir)
            .arg("--config")
            .arg(server.config_path())
            .args(["--name", USER])
            .envs(server.env().iter().cloned())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mailvault import");
        let started = Instant::now();
        // Plain progress lines (not a terminal): `import: 1234 of 20000; ...`.
        let stderr = child.stderr.take().expect("the import's stderr");
        let mut seen = 0;
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
            let Ok(line) = line else { break };
            if let Some(done) = line
                .strip_prefix("import: ")
                .and_then(|l| l.split(' ').next())
                .and_then(|d| d.parse::<u64>().ok())
            {
                seen = done;
                if done >= *point {
                    break;
                }
            }
        }
        let done = child.try_wait().expect("the import's status");
        let _ = child.kill();
        let status = child.wait().expect("the import's status");
        eprintln!(
            "{TEST}: run {n} {} after {:?} at {seen} messages done ({status})",
            if done.is_none() {
                "killed"
            } else {
                "had ended"
            },
            started.elapsed()
        );
        killed += usize::from(done.is_none());
    }
    assert_eq!(killed, 3, "the kills must land mid-import");
    let last_started = Instant::now();
    let out = import(&server, &["maildir", &maildir.to_string_lossy(), "--json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "{TEST}: the last run ({:?}): {stdout}",
        last_started.elapsed()
    );
    assert!(!stdout.contains("\"already_delivered\":0,"), "{stdout}");
    server.start();
    let (imap, n) = (server.imap.to_string(), N.to_string());
    let check_started = Instant::now();
    peers::run_script(
        &python,
        "import_check.py",
        &["count", imap.as_str(), USER, PASSWORD, n.as_str()],
        "every message once",
        || server.logs(),
    );
    eprintln!(
        "{TEST}: checked over IMAP in {:?}; the whole test {:?}",
        check_started.elapsed(),
        test_started.elapsed()
    );
}

/// `import maildirs`: one account per user directory, an unknown user refused.
#[test]
fn a_tree_of_user_maildirs_imports_each_into_its_account() {
    const TEST: &str = "a_tree_of_user_maildirs_imports_each_into_its_account";
    const BOB: &str = "bob@example.org";
    let Some(python) = tools(TEST, &["python"]).map(|mut t| t.remove(0)) else {
        return;
    };
    let Some(mut server) = MailServer::create(TEST, Backend::Local, &[USER, BOB]) else {
        return;
    };
    let sources = tempfile::tempdir().expect("a folder");
    let root = sources.path().join("vmail");
    // alice: a home with `Maildir/` in it; bob: the directory itself a Maildir; carol:
    // no account.
    many_messages(&root.join("alice"), 30);
    let bob = many_messages(&sources.path().join("bob-home"), 20);
    std::fs::rename(bob, root.join("bob")).expect("a move");
    many_messages(&root.join("carol"), 5);
    let run = || {
        let mut cmd = Command::new(BIN);
        cmd.args(["import", "maildirs"])
            .arg(&root)
            .arg("--config")
            .arg(server.config_path())
            .args(["--domain", "example.org", "--json"])
            .envs(server.env().iter().cloned());
        cmd.output().expect("mailvault import maildirs")
    };
    let out = run();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("refused: carol: no account named carol@example.org"),
        "{stderr}"
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON");
    let accounts = summary["accounts"].as_array().expect("accounts");
    let by_account: Vec<(&str, u64, u64)> = accounts
        .iter()
        .map(|a| {
            (
                a["account"].as_str().unwrap_or(""),
                a["delivered"].as_u64().unwrap_or(u64::MAX),
                a["failed"].as_array().map_or(u64::MAX, |f| f.len() as u64),
            )
        })
        .collect();
    assert_eq!(by_account, [(USER, 30, 0), (BOB, 20, 0)], "{stdout}");
    assert_eq!(
        summary["accounts"][1]["maildir"].as_str(),
        Some(&*root.join("bob").to_string_lossy()),
        "{stdout}"
    );
    assert_eq!(
        summary["refused"],
        serde_json::json!([{ "user": "carol", "error": "no account named carol@example.org" }]),
        "{stdout}"
    );
    // Run again: nothing is delivered twice.
    let again = run();
    let again = String::from_utf8_lossy(&again.stdout).into_owned();
    let again: serde_json::Value = serde_json::from_str(again.trim()).expect("JSON");
    for (i, n) in [30, 20].into_iter().enumerate() {
        assert_eq!(again["accounts"][i]["delivered"], 0, "{again}");
        assert_eq!(again["accounts"][i]["already_delivered"], n, "{again}");
    }
    server.start();
    let imap = server.imap.to_string();
    for (user, n) in [(USER, "30"), (BOB, "20")] {
        peers::run_script(
            &python,
            "import_check.py",
            &["count", imap.as_str(), user, PASSWORD, n],
            "each user's mail in its account, once",
            || server.logs(),
        );
    }
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

/// Issue 15, "works for accounts of every key model": `import maildir` and `import mbox`
/// into a hardened account (key model 1: the server holds only its public keys, the
/// secret is on the device) with no secret given; the device's companion then serves
/// every message byte-exact with its flags, internal date and folder (Sent with its
/// `\Sent` role). Run again, before and after the companion has filed the mail, each
/// message is there once.
#[test]
fn a_hardened_account_imports_with_no_secret_and_its_device_reads_the_mail() {
    const TEST: &str = "a_hardened_account_imports_with_no_secret_and_its_device_reads_the_mail";
    const CAROL: &str = "carol@example.org";
    let Some(python) = tools(TEST, &["python"]).map(|mut t| t.remove(0)) else {
        return;
    };
    let Some(server) = MailServer::create(TEST, Backend::Local, &[]) else {
        return;
    };
    let mut companion = CompanionProcess::enroll(&server, CAROL);
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
    let maildir = format!("{root}/Maildir");
    let mbox = format!("{root}/mail.mbox");
    let runs: [Vec<&str>; 2] = [
        vec!["import", "maildir", &maildir, "--json"],
        vec!["import", "mbox", &mbox, "--mailbox", "Old/mbox", "--json"],
    ];
    let run = |args: &[&str]| {
        let out = server.keyless_job(args, CAROL);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{args:?}: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("\"failed\":[]"), "{args:?}: {stdout}");
        stdout
    };
    for args in &runs {
        let stdout = run(args);
        assert!(stdout.contains("\"already_delivered\":0,"), "{stdout}");
        assert!(!stdout.contains("\"delivered\":0,"), "{stdout}");
    }
    // Run again before the device has the mail: every message found delivered.
    let again = run(&runs[0]);
    assert!(again.contains("\"delivered\":0,"), "{again}");
    // The provider cannot open the account (to file the mail): the secret is on the
    // device only.
    let refused = server.account_job(&["import", "maildir", &maildir], CAROL);
    assert!(!refused.status.success(), "{refused:?}");
    companion.start();
    let imap = companion.imap.to_string();
    let check = [
        "check",
        imap.as_str(),
        CAROL,
        PASSWORD,
        root.as_str(),
        "Old/mbox",
    ];
    peers::run_script(
        &python,
        "import_check.py",
        &check,
        "the imported mail through the device's companion",
        || companion.logs(),
    );
    // Run again once the companion has filed the mail: the provider, which cannot read
    // the account's mailboxes, delivers the messages again and the companion drops them
    // as replays (opened again, it imports what waits before its first login is
    // answered): still each message once.
    companion.stop();
    for args in &runs {
        run(args);
    }
    companion.start();
    peers::run_script(
        &python,
        "import_check.py",
        &check,
        "the mail through the companion after the imports ran again",
        || companion.logs(),
    );
}

/// The acceptance's "the same from Dovecot over IMAP": an account of a plain Dovecot
/// (its Maildir files readable; the corpus APPENDed into folders with flags, keywords
/// and internal dates) imported with `import imap`, then exported with `export
/// maildir`, gives Dovecot's own Maildir tree: the same folders with the same messages
/// byte for byte, the same flags and keywords, the same modification times (Python's
/// `mailbox` reads both; a NUL byte, which IMAP cannot carry, compared as the 0x80
/// Dovecot serves in its place).
#[test]
fn an_account_on_dovecot_imported_over_imap_exports_as_dovecots_own_maildir() {
    const TEST: &str = "an_account_on_dovecot_imported_over_imap_exports_as_dovecots_own_maildir";
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
    let port = dovecot.imap.to_string();
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/mail-parser");
    peers::run_script(
        python,
        "export_check.py",
        &[
            "dovecot-append",
            port.as_str(),
            "alice",
            "alicepw",
            &corpus.to_string_lossy(),
        ],
        "the corpus into Dovecot over IMAP",
        String::new,
    );
    let source_password = server.dir.path().join("source-password");
    std::fs::write(&source_password, "alicepw\n").expect("a file");
    let url = format!("imap://alice@127.0.0.1:{port}");
    let out = import(
        &server,
        &[
            "imap",
            &url,
            "--source-password-file",
            &source_password.to_string_lossy(),
            "--json",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("\"failed\":[]"), "{stdout}");
    let exported = tempfile::tempdir().expect("a folder");
    let target = exported
        .path()
        .join("Maildir")
        .to_string_lossy()
        .into_owned();
    let out = server.account_job(&["export", "maildir", &target, "--json"], USER);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("\"failed\":[]"),
        "{}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let source = dovecot.maildir("alice").to_string_lossy().into_owned();
    peers::run_script(
        python,
        "export_check.py",
        &["compare-maildirs", &source, &target, "over-imap"],
        "Dovecot's Maildir against the export of the account imported over IMAP",
        String::new,
    );
}
