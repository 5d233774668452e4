//! The key and officer commands of the `mailvault` tool (issue 15, points 4 and 5), each
//! run as the real binary, the accounts read back over IMAP by Python's `imaplib`
//! (`keys_check.py`) against `mailvault serve`:
//!
//! - `account list|show|erase`: an erase leaves nothing of the account in the store or
//!   the directory, and the other accounts intact (their objects byte for byte, their
//!   mail over IMAP); an erase not confirmed erases nothing (exit status 5).
//! - `officer reset-password|audit|log`: the reset password logs in over IMAP and the old
//!   one is refused; the audit passes on intact accounts, says a key model 1 account is
//!   not the officer's, and fails (exit status 3) for an account whose keyring is lost;
//!   the log lists each action.
//! - `account add-epoch|reencrypt|rotate-root`: a re-encryption and a rotation killed
//!   with SIGKILL part way and run again: every message still reads the same.
//! - `account export-key|import-key`: a lost password, access restored from the export;
//!   an export older than a root rotation opens nothing (exit status 4).
//! - On a terminal (`tmux`, `capture-pane`) the re-encryption, the imports (a Maildir:
//!   count and bytes; an mbox: bytes and count), `gc` and `rotate-root` draw progress
//!   bars; with their output to a file they print plain lines, none with `--quiet`.
//! - `--help` of every command, and of every long job's subcommand (import, export,
//!   verify, gc, reindex), has an example of itself; `-v` shows debug logs.

mod peers;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use peers::{tools, Backend, CompanionProcess, MailServer, BIN, PASSWORD};
use serde_json::Value;

const ALICE: &str = "alice@example.org";
const BOB: &str = "bob@example.org";
const CAROL: &str = "carol@example.org";

/// `mailvault <args> --config <config>` with `stdin` on its standard input.
fn mv(server: &MailServer, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(server.config_path())
        .envs(server.env().iter().cloned())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mailvault");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(bytes) = stdin {
        input.write_all(bytes).expect("write stdin");
    }
    drop(input);
    child.wait_with_output().expect("mailvault's output")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// [`mv`], which must succeed; its stdout.
fn mv_ok(server: &MailServer, args: &[&str], stdin: Option<&[u8]>) -> String {
    let out = mv(server, args, stdin);
    assert!(
        out.status.success(),
        "{args:?}: {}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// [`mv_ok`] of a `--json` command, parsed.
fn mv_json(server: &MailServer, args: &[&str]) -> Value {
    let stdout = mv_ok(server, args, None);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"))
}

/// [`mv`], which must fail with exit status `code`; its stdout and stderr.
fn mv_fails(server: &MailServer, args: &[&str], stdin: Option<&[u8]>, code: i32) -> String {
    let out = mv(server, args, stdin);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{args:?}\nstdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    format!("{}{}", text(&out.stdout), text(&out.stderr))
}

/// A file in the server's folder holding `content`.
fn file(server: &MailServer, name: &str, content: &str) -> String {
    let path = server.dir.path().join(name);
    std::fs::write(&path, content).expect("write a file");
    path.to_string_lossy().into_owned()
}

fn password_file(server: &MailServer) -> String {
    server
        .dir
        .path()
        .join("password")
        .to_string_lossy()
        .into_owned()
}

fn officer_key(server: &MailServer) -> String {
    server
        .dir
        .path()
        .join("directory/server-officer.key")
        .to_string_lossy()
        .into_owned()
}

/// A Maildir of `n` distinct messages for `name` in the server's folder.
fn write_maildir(server: &MailServer, name: &str, n: usize) -> PathBuf {
    let sources = server.dir.path().join(format!("maildir-{name}"));
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(sources.join(sub)).expect("a Maildir");
    }
    for i in 0..n {
        std::fs::write(
            sources.join("cur").join(format!("{i}.M{i}P1.host:2,S")),
            format!(
                "From: a@example.org\nTo: {name}\nSubject: message {i} for {name}\n\n{}\n",
                format!("line {i} of the text\n").repeat(30)
            ),
        )
        .expect("a message file");
    }
    sources
}

/// Imports `n` distinct messages into `name`'s INBOX (filed at once with the password).
fn import_messages(server: &MailServer, name: &str, n: usize) {
    let sources = write_maildir(server, name, n);
    let sources = sources.to_string_lossy().into_owned();
    let password = password_file(server);
    mv_ok(
        server,
        &[
            "import",
            "maildir",
            &sources,
            "--name",
            name,
            "--password-file",
            &password,
            "--quiet",
        ],
        None,
    );
}

/// What `keys_check.py read` saw: `Ok((messages, digests))`, or `Err` for a refused
/// login.
fn imap_read(
    python: &Path,
    server: &MailServer,
    user: &str,
    password: &str,
) -> Result<(u64, Vec<String>), String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys_check.py");
    let out = Command::new(python)
        .arg(script)
        .args(["read", &server.imap.to_string(), user, password])
        .stdin(Stdio::null())
        .output()
        .expect("run keys_check.py");
    let stdout = text(&out.stdout);
    let value: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "keys_check.py: {e}: {stdout}\n{}\n{}",
            text(&out.stderr),
            server.logs()
        )
    });
    match (out.status.code(), value["login"].as_str()) {
        (Some(0), Some("ok")) => Ok((
            value["messages"].as_u64().expect("a count"),
            value["digests"]
                .as_array()
                .expect("digests")
                .iter()
                .map(|d| d.as_str().expect("a digest").to_string())
                .collect(),
        )),
        (Some(3), Some("refused")) => Err(value["reason"].to_string()),
        other => panic!("keys_check.py {other:?}: {stdout}\n{}", server.logs()),
    }
}

/// Every file under `dir` (recursively), with its bytes.
fn files_under(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(listed) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in listed {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).expect("read a file");
                out.insert(path, bytes);
            }
        }
    }
    out
}

fn account_id(server: &MailServer, name: &str) -> String {
    let shown = mv_json(server, &["account", "show", name, "--json"]);
    shown["account"].as_str().expect("an id").to_string()
}

#[test]
fn accounts_are_listed_shown_and_an_erase_leaves_nothing_of_one_and_the_others_intact() {
    const TEST: &str =
        "accounts_are_listed_shown_and_an_erase_leaves_nothing_of_one_and_the_others_intact";
    let Some(python) = tools(TEST, &["python"]).map(|mut t| t.remove(0)) else {
        return;
    };
    let Some(mut server) = MailServer::create(TEST, Backend::Local, &[ALICE, BOB, CAROL]) else {
        return;
    };
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs();
    let dave = CompanionProcess::enroll(&server, "dave@example.org");
    import_messages(&server, ALICE, 20);
    import_messages(&server, BOB, 20);

    let list = mv_json(&server, &["account", "list", "--json"]);
    let rows = list.as_array().expect("an array");
    let row = |name: &str| {
        rows.iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("{name} not listed: {list}"))
    };
    assert_eq!(rows.len(), 4, "{list}");
    for name in [ALICE, BOB, CAROL] {
        assert_eq!(row(name)["model"], 5, "{list}");
        assert_eq!(row(name)["flavor"], "transparent", "{list}");
        let created = row(name)["created"].as_u64().expect("a creation time");
        assert!(
            created + 600 >= started && created <= started + 600,
            "{list}"
        );
    }
    assert_eq!(row(&dave.login)["model"], 1, "{list}");
    assert_eq!(row(&dave.login)["flavor"], "hardened", "{list}");
    let table = mv_ok(&server, &["account", "list"], None);
    assert!(table.starts_with("NAME "), "{table}");
    assert!(
        table.contains(ALICE) && table.contains("transparent"),
        "{table}"
    );

    let shown = mv_json(&server, &["account", "show", ALICE, "--json"]);
    let kinds: Vec<&str> = shown["slots"]
        .as_array()
        .expect("slots")
        .iter()
        .map(|s| s["kind"].as_str().expect("a kind"))
        .collect();
    assert_eq!(kinds, ["password", "officer"], "{shown}");
    assert_eq!(shown["slots"][1]["officer"]["state"], "current", "{shown}");
    assert_eq!(
        shown["epochs"].as_array().expect("epochs").len(),
        1,
        "{shown}"
    );
    assert!(shown["keyring_generation"].as_u64().expect("a generation") >= 1);
    assert_eq!(shown["officer_log_entries"], 0, "{shown}");
    assert_eq!(shown["policy"], "holds", "{shown}");
    let shown_text = mv_ok(&server, &["account", "show", ALICE], None);
    assert!(shown_text.contains("keyring generation:"), "{shown_text}");

    let (alice_id, bob_id) = (account_id(&server, ALICE), account_id(&server, BOB));
    let store = Path::new(&server.store).to_path_buf();
    let directory = server.dir.path().join("directory");
    let alice_before = files_under(&store.join("a").join(&alice_id));
    let bob_before = files_under(&store.join("a").join(&bob_id));
    assert!(!alice_before.is_empty() && !bob_before.is_empty());
    assert!(directory.join(&bob_id).exists());

    // Not confirmed: nothing erased.
    let refused = mv_fails(
        &server,
        &["account", "erase", BOB],
        Some(b"carol@example.org\n"),
        5,
    );
    assert!(refused.contains("not confirmed"), "{refused}");
    assert_eq!(files_under(&store.join("a").join(&bob_id)), bob_before);
    // Confirmed on the standard input.
    mv_ok(
        &server,
        &["account", "erase", BOB],
        Some(b"bob@example.org\n"),
    );
    mv_ok(&server, &["account", "erase", CAROL, "--yes"], None);

    let left = files_under(&store.join("a").join(&bob_id));
    assert!(
        left.is_empty(),
        "objects of the erased account remain: {:?}",
        left.keys()
    );
    assert!(
        !directory.join(&bob_id).exists(),
        "the erased account's directory record remains"
    );
    let accounts = std::fs::read_to_string(directory.join("server-accounts.toml")).expect("table");
    assert!(
        !accounts.contains(BOB) && !accounts.contains(&bob_id),
        "{accounts}"
    );
    assert_eq!(
        mv_json(&server, &["account", "list", "--json"])
            .as_array()
            .expect("rows")
            .len(),
        2
    );
    mv_fails(&server, &["account", "show", BOB], None, 1);
    // The others intact: alice's objects byte for byte, and her mail over IMAP.
    assert_eq!(files_under(&store.join("a").join(&alice_id)), alice_before);
    server.start();
    let (n, _) = imap_read(&python, &server, ALICE, PASSWORD).expect("alice logs in");
    assert_eq!(n, 20);
    assert!(imap_read(&python, &server, BOB, PASSWORD).is_err());
    // The officer log of an erased account stays readable by its id.
    let log = mv_json(&server, &["officer", "log", &bob_id, "--json"]);
    assert_eq!(log["entries"].as_array().map(Vec::len), Some(0), "{log}");
}

#[test]
fn the_officer_resets_a_password_audits_every_account_and_the_log_shows_it() {
    const TEST: &str = "the_officer_resets_a_password_audits_every_account_and_the_log_shows_it";
    let Some(python) = tools(TEST, &["python"]).map(|mut t| t.remove(0)) else {
        return;
    };
    let Some(mut server) = MailServer::create(TEST, Backend::Local, &[ALICE, BOB]) else {
        return;
    };
    let dave = CompanionProcess::enroll(&server, "dave@example.org");
    import_messages(&server, ALICE, 5);
    let officer = officer_key(&server);
    let new_password = file(
        &server,
        "new-password",
        "a new password, set by the officer\n",
    );

    // A wrong officer key opens nothing and resets nothing.
    let wrong = file(&server, "wrong-officer.key", &"ab".repeat(32));
    mv_fails(
        &server,
        &[
            "officer",
            "reset-password",
            ALICE,
            "--officer-key",
            &wrong,
            "--password-file",
            &new_password,
        ],
        None,
        4,
    );
    let reset = mv_ok(
        &server,
        &[
            "officer",
            "reset-password",
            ALICE,
            "--officer-key",
            &officer,
            "--password-file",
            &new_password,
        ],
        None,
    );
    assert!(reset.contains("officer log"), "{reset}");

    server.start();
    let (n, digests) = imap_read(
        &python,
        &server,
        ALICE,
        "a new password, set by the officer",
    )
    .expect("the new password logs in");
    assert_eq!((n, digests.len()), (5, 5));
    assert!(
        imap_read(&python, &server, ALICE, PASSWORD).is_err(),
        "the old password still logs in"
    );

    // The audit of every account, the officer key on the standard input.
    let key = std::fs::read(&officer).expect("the officer key");
    let audit = mv(
        &server,
        &["officer", "audit", "--all", "--officer-key", "-", "--json"],
        Some(&key),
    );
    assert!(
        audit.status.success(),
        "{}{}",
        text(&audit.stdout),
        text(&audit.stderr)
    );
    let report: Value = serde_json::from_slice(&audit.stdout).expect("JSON");
    let row = |report: &Value, name: &str| {
        report["accounts"]
            .as_array()
            .expect("accounts")
            .iter()
            .find(|r| r["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name}: {report}"))
    };
    for name in [ALICE, BOB] {
        let r = row(&report, name);
        assert_eq!(r["recoverable"], true, "{r}");
        assert_eq!(r["recovers"], "everything", "{r}");
        assert_eq!(r["epochs"], serde_json::json!([1]), "{r}");
    }
    let d = row(&report, &dave.login);
    assert_eq!(
        (d["model"].as_u64(), &d["should_recover"]),
        (Some(1), &Value::Bool(false)),
        "{d}"
    );

    // The log: the reset, then the audit (the failed attempt with a wrong key opened
    // nothing: no slot is sealed to that key, so nothing was logged).
    let log = mv_json(&server, &["officer", "log", ALICE, "--json"]);
    let actions: Vec<&str> = log["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["action"].as_str().expect("an action"))
        .collect();
    assert_eq!(actions, ["reset-password", "audit"], "{log}");
    let shown = mv_json(&server, &["account", "show", ALICE, "--json"]);
    assert_eq!(shown["officer_log_entries"], 2, "{shown}");
    let log_text = mv_ok(&server, &["officer", "log", BOB], None);
    assert!(log_text.contains(" audit "), "{log_text}");

    // bob's keyring lost from the store: the audit says so, with exit status 3, and
    // alice still passes.
    let bob_id = account_id(&server, BOB);
    let keyrings = Path::new(&server.store).join("a").join(&bob_id).join("k");
    for (path, _) in files_under(&keyrings) {
        std::fs::remove_file(path).expect("delete a keyring object");
    }
    let audit = mv(
        &server,
        &[
            "officer",
            "audit",
            "--all",
            "--officer-key",
            &officer,
            "--json",
        ],
        None,
    );
    assert_eq!(
        audit.status.code(),
        Some(3),
        "{}{}",
        text(&audit.stdout),
        text(&audit.stderr)
    );
    let report: Value = serde_json::from_slice(&audit.stdout).expect("JSON");
    assert_eq!(report["not_recoverable"], 1, "{report}");
    assert_eq!(row(&report, BOB)["recoverable"], false, "{report}");
    assert_eq!(row(&report, ALICE)["recoverable"], true, "{report}");
    let one = mv(
        &server,
        &["officer", "audit", ALICE, "--officer-key", &officer],
        None,
    );
    assert!(one.status.success(), "{}", text(&one.stderr));
    assert!(text(&one.stdout).contains("OK"), "{}", text(&one.stdout));
}

/// Spawns `mailvault <args> --config ...` with stderr piped.
fn spawn(server: &MailServer, args: &[&str]) -> std::process::Child {
    Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(server.config_path())
        .envs(server.env().iter().cloned())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mailvault")
}

fn epochs(server: &MailServer, name: &str) -> Vec<u64> {
    mv_json(server, &["account", "show", name, "--json"])["epochs"]
        .as_array()
        .expect("epochs")
        .iter()
        .map(|e| e["epoch"].as_u64().expect("an epoch"))
        .collect()
}

#[test]
fn a_reencryption_and_a_root_rotation_killed_and_run_again_keep_every_message() {
    const TEST: &str = "a_reencryption_and_a_root_rotation_killed_and_run_again_keep_every_message";
    const N: usize = 200;
    let Some(python) = tools(TEST, &["python"]).map(|mut t| t.remove(0)) else {
        return;
    };
    let Some(mut server) = MailServer::create(TEST, Backend::Local, &[ALICE, BOB]) else {
        return;
    };
    import_messages(&server, ALICE, N);
    import_messages(&server, BOB, N);
    let password = password_file(&server);
    server.start();
    let (n, baseline) = imap_read(&python, &server, ALICE, PASSWORD).expect("login");
    assert_eq!(n as usize, N);
    server.kill();

    // How long a whole re-encryption takes (bob's), to kill alice's half way.
    let unlock = ["--password-file", password.as_str()];
    mv_ok(
        &server,
        &[&["account", "add-epoch", BOB][..], &unlock].concat(),
        None,
    );
    let started = Instant::now();
    let out = mv(
        &server,
        &[&["account", "reencrypt", BOB, "--json"][..], &unlock].concat(),
        None,
    );
    let took = started.elapsed();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let whole: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    // Output to a file: plain progress lines, the last one at the end.
    assert!(
        text(&out.stderr).contains(&format!("reencrypt: {N} of {N}; {N} messages, ")),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(whole["rewritten"].as_u64(), Some(N as u64), "{whole}");
    assert_eq!(epochs(&server, BOB), [2]);
    eprintln!("{TEST}: a whole re-encryption of {N} bodies: {took:?}");

    // The kill point adapts: bob's run only estimates alice's (the machine's load moves
    // it), so a kill that came after the end halves the wait, one that came before the
    // first rewrite lengthens it.
    let mut landed = false;
    let mut wait = took / 2;
    for attempt in 0..8 {
        let added = mv_ok(
            &server,
            &[&["account", "add-epoch", ALICE][..], &unlock].concat(),
            None,
        );
        assert!(added.contains("added"), "{added}");
        let before = epochs(&server, ALICE);
        assert_eq!(before.len(), 2, "{before:?}");
        let mut child = spawn(
            &server,
            &[&["account", "reencrypt", ALICE][..], &unlock].concat(),
        );
        std::thread::sleep(wait);
        let ended = child.try_wait().expect("status").is_some();
        let _ = child.kill();
        let _ = child.wait();
        let rerun = mv_json(
            &server,
            &[&["account", "reencrypt", ALICE, "--json"][..], &unlock].concat(),
        );
        let rewritten = rerun["rewritten"].as_u64().expect("a count");
        eprintln!("{TEST}: attempt {attempt}: killed after {wait:?} (had ended: {ended}); the rerun rewrote {rewritten}");
        assert_eq!(epochs(&server, ALICE), [*before.last().expect("an epoch")]);
        if !ended && rewritten > 0 && rewritten < N as u64 {
            landed = true;
            break;
        }
        // Killed before its first rewrite (the rerun did all): later; else earlier.
        wait = if !ended && rewritten >= N as u64 {
            wait * 3 / 2
        } else {
            wait / 2
        };
    }
    assert!(landed, "no kill landed in the middle of a re-encryption");
    server.start();
    let (n, after) = imap_read(&python, &server, ALICE, PASSWORD).expect("login");
    assert_eq!((n as usize, &after), (N, &baseline), "a message changed");
    server.kill();

    // The rotation killed right after it began (the index not re-keyed yet).
    let mut resumed = false;
    for attempt in 0..3 {
        let generation_before = mv_json(&server, &["account", "show", ALICE, "--json"])
            ["keyring_generation"]
            .as_u64()
            .expect("a generation");
        let mut child = spawn(
            &server,
            &[&["account", "rotate-root", ALICE][..], &unlock].concat(),
        );
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
        let mut line = String::new();
        let mut seen = String::new();
        loop {
            line.clear();
            if stderr.read_line(&mut line).expect("a line") == 0 {
                break;
            }
            seen.push_str(&line);
            if line.starts_with("rotate-root: begun") {
                let _ = child.kill();
                break;
            }
        }
        let status = child.wait().expect("status");
        assert!(seen.contains("rotate-root: begun"), "{status}: {seen}");
        let generation = mv_json(&server, &["account", "show", ALICE, "--json"])
            ["keyring_generation"]
            .as_u64()
            .expect("a generation");
        assert!(generation > generation_before, "the rotation did not begin");
        // Killed mid-rotation: every message reads, through a login that follows the
        // half-done rotation.
        server.start();
        let (n, now) = imap_read(&python, &server, ALICE, PASSWORD).expect("login mid-rotation");
        assert_eq!(
            (n as usize, &now),
            (N, &baseline),
            "a message changed mid-rotation"
        );
        server.kill();
        let rerun = mv(
            &server,
            &[&["account", "rotate-root", ALICE, "--json"][..], &unlock].concat(),
            None,
        );
        assert!(rerun.status.success(), "{}", text(&rerun.stderr));
        let report: Value = serde_json::from_slice(&rerun.stdout).expect("JSON");
        eprintln!("{TEST}: rotation attempt {attempt}: killed ({status}); the rerun: {report}");
        if report["resumed"] == true {
            assert!(
                text(&rerun.stderr).contains("an earlier run began"),
                "{}",
                text(&rerun.stderr)
            );
            resumed = true;
            break;
        }
    }
    assert!(resumed, "no kill landed in the middle of a rotation");
    assert!(epochs(&server, ALICE).len() >= 2);
    let done = mv_json(
        &server,
        &[&["account", "reencrypt", ALICE, "--json"][..], &unlock].concat(),
    );
    assert!(
        done["rewritten"].as_u64().expect("a count") >= N as u64,
        "{done}"
    );
    assert_eq!(epochs(&server, ALICE).len(), 1);
    server.start();
    let (n, after) = imap_read(&python, &server, ALICE, PASSWORD).expect("login");
    assert_eq!((n as usize, &after), (N, &baseline), "a message changed");
    let (n, _) = imap_read(&python, &server, BOB, PASSWORD).expect("bob logs in");
    assert_eq!(n as usize, N);
}

#[test]
fn a_key_export_restores_access_after_a_lost_password_until_the_next_rotation() {
    const TEST: &str = "a_key_export_restores_access_after_a_lost_password_until_the_next_rotation";
    let Some(python) = tools(TEST, &["python"]).map(|mut t| t.remove(0)) else {
        return;
    };
    let Some(mut server) = MailServer::create(TEST, Backend::Local, &[ALICE]) else {
        return;
    };
    import_messages(&server, ALICE, 10);
    let password = password_file(&server);
    let passphrase = b"the export's own passphrase\n";
    let export = server.dir.path().join("alice.key-export");
    let export_path = export.to_string_lossy().into_owned();
    // The passphrase on the standard input.
    let args = [
        "account",
        "export-key",
        ALICE,
        "--password-file",
        &password,
        "--passphrase-file",
        "-",
        "--out",
        &export_path,
    ];
    mv_ok(&server, &args, Some(passphrase));
    let armored = std::fs::read_to_string(&export).expect("the export");
    assert!(
        armored.starts_with("-----BEGIN MAILVAULT KEY EXPORT-----"),
        "{armored}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&export)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Never overwritten.
    mv_fails(&server, &args, Some(passphrase), 1);

    // The password is lost. A wrong passphrase restores nothing; the right one does.
    let new_password = file(&server, "new-password", "restored from the export\n");
    let wrong = file(&server, "wrong-passphrase", "not the passphrase\n");
    mv_fails(
        &server,
        &[
            "account",
            "import-key",
            &export_path,
            "--passphrase-file",
            &wrong,
            "--password-file",
            &new_password,
        ],
        None,
        4,
    );
    let restored = mv_ok(
        &server,
        &[
            "account",
            "import-key",
            &export_path,
            "--passphrase-file",
            "-",
            "--password-file",
            &new_password,
        ],
        Some(passphrase),
    );
    assert!(restored.contains("access restored"), "{restored}");
    server.start();
    let (n, _) = imap_read(&python, &server, ALICE, "restored from the export").expect("login");
    assert_eq!(n, 10);
    assert!(imap_read(&python, &server, ALICE, PASSWORD).is_err());
    server.kill();

    // After a root rotation the export opens nothing.
    mv_ok(
        &server,
        &[
            "account",
            "rotate-root",
            ALICE,
            "--password-file",
            &new_password,
        ],
        None,
    );
    let old = mv_fails(
        &server,
        &[
            "account",
            "import-key",
            &export_path,
            "--passphrase-file",
            "-",
            "--password-file",
            &password,
        ],
        Some(passphrase),
        4,
    );
    assert!(old.contains("root rotation"), "{old}");
    server.start();
    let (n, _) = imap_read(&python, &server, ALICE, "restored from the export").expect("login");
    assert_eq!(n, 10);
}

#[test]
fn every_command_has_help_with_an_example_and_v_shows_debug_logs() {
    const TEST: &str = "every_command_has_help_with_an_example_and_v_shows_debug_logs";
    for command in [
        &["account", "list"][..],
        &["account", "show"],
        &["account", "erase"],
        &["account", "add-epoch"],
        &["account", "reencrypt"],
        &["account", "rotate-root"],
        &["account", "export-key"],
        &["account", "import-key"],
        &["officer", "reset-password"],
        &["officer", "audit"],
        &["officer", "log"],
        &["import", "maildir"],
        &["import", "mbox"],
        &["import", "maildirs"],
        &["import", "imap"],
        &["export", "maildir"],
        &["export", "mbox"],
        &["verify"],
        &["gc"],
        &["reindex"],
    ] {
        let out = Command::new(BIN)
            .args(command)
            .arg("--help")
            .output()
            .expect("run mailvault");
        let help = text(&out.stdout);
        assert!(out.status.success(), "{command:?}: {help}");
        assert!(
            help.contains("Example"),
            "{command:?} --help has no example:\n{help}"
        );
        assert!(
            help.contains("--verbose"),
            "{command:?} --help lacks -v:\n{help}"
        );
        // The example is of this command (not of its parent's other subcommands), each
        // on a line of its own (clap joins the lines of a paragraph).
        let example = format!("mailvault {}", command.join(" "));
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(&example)),
            "{command:?} --help has no example of `{example}` on a line of its own:\n{help}"
        );
        assert!(
            help.lines().all(|l| l.matches(&example).count() <= 1),
            "{command:?} --help joins two examples on a line:\n{help}"
        );
        // The long jobs: progress that --quiet turns off, a JSON summary.
        let long_job = !matches!(command[0], "officer")
            && !matches!(
                command.last().copied(),
                Some("list" | "show" | "erase" | "add-epoch" | "export-key" | "import-key")
            );
        if long_job {
            for flag in ["--quiet", "--json"] {
                assert!(
                    help.contains(flag),
                    "{command:?} --help lacks {flag}:\n{help}"
                );
            }
        }
    }
    let top = Command::new(BIN)
        .arg("--help")
        .output()
        .expect("run mailvault");
    assert!(
        text(&top.stdout).contains("Exit status"),
        "{}",
        text(&top.stdout)
    );

    let Some(server) = MailServer::create(TEST, Backend::Local, &[ALICE]) else {
        return;
    };
    let quiet = mv(&server, &["account", "show", ALICE], None);
    assert!(quiet.status.success());
    assert!(
        !text(&quiet.stderr).contains("DEBUG"),
        "{}",
        text(&quiet.stderr)
    );
    let verbose = mv(&server, &["account", "show", ALICE, "-v"], None);
    assert!(verbose.status.success());
    assert!(
        text(&verbose.stderr).contains("DEBUG"),
        "{}",
        text(&verbose.stderr)
    );
}

/// Runs the shell command `job` on a terminal (a detached `tmux` session `name` of 150
/// columns and `rows` rows, its own server socket) until the screen shows `done` (or two
/// minutes); every screen seen (`capture-pane`), the last one last.
fn on_a_terminal(
    tmux: &Path,
    server: &MailServer,
    name: &str,
    rows: u16,
    job: &str,
    done: &str,
) -> Vec<String> {
    let socket = format!("mailvault-{name}-{}", std::process::id());
    let tmux_cmd = |args: &[&str]| {
        let mut cmd = Command::new(tmux);
        cmd.args(["-L", &socket])
            .args(args)
            .envs(server.env().iter().cloned());
        cmd
    };
    // The job's shell waits at the end: the pane (and its screen) stays.
    let started = tmux_cmd(&[
        "new-session",
        "-d",
        "-x",
        "150",
        "-y",
        &rows.to_string(),
        "-s",
        name,
        &format!("{job}; sleep 60"),
    ])
    .status()
    .expect("tmux");
    assert!(started.success(), "tmux new-session: {started}");
    let deadline = Instant::now() + std::time::Duration::from_secs(120);
    let mut screens = Vec::new();
    while Instant::now() < deadline {
        let screen = tmux_cmd(&["capture-pane", "-p", "-t", name])
            .output()
            .expect("tmux capture-pane");
        let screen = text(&screen.stdout);
        let finished = screen.contains(done);
        screens.push(screen);
        if finished {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = tmux_cmd(&["kill-server"]).status();
    screens
}

#[test]
fn a_reencryption_on_a_terminal_draws_a_progress_bar() {
    const TEST: &str = "a_reencryption_on_a_terminal_draws_a_progress_bar";
    const N: usize = 150;
    let Some(tmux) = tools(TEST, &["tmux"]).map(|mut t| t.remove(0)) else {
        return;
    };
    let Some(server) = MailServer::create(TEST, Backend::Local, &[ALICE]) else {
        return;
    };
    import_messages(&server, ALICE, N);
    let password = password_file(&server);
    mv_ok(
        &server,
        &["account", "add-epoch", ALICE, "--password-file", &password],
        None,
    );
    let job = format!(
        "{BIN} account reencrypt {ALICE} --config {} --password-file {password}",
        server.config_path().display()
    );
    let screens = on_a_terminal(&tmux, &server, "reencrypt", 10, &job, "bodies re-encrypted");
    // The bar's line: `reencrypt [00:00:01] ████░░ 42/150 messages 20/s ETA 5s`.
    let saw_bar = screens.iter().flat_map(|s| s.lines()).any(|l| {
        l.starts_with("reencrypt [") && l.contains(&format!("/{N} messages")) && l.contains("ETA")
    });
    let last = screens.last().cloned().unwrap_or_default();
    assert!(
        saw_bar,
        "no progress bar on the screen; last screen:\n{last}"
    );
    assert!(
        last.contains(&format!("{N} bodies re-encrypted under epoch 2")),
        "the re-encryption did not finish on the terminal:\n{last}"
    );
    // A bar, not plain lines, on a terminal.
    assert!(!last.contains("messages/s"), "{last}");
}

/// The line of `screen` that starts with `prefix` (a finished bar stays on the screen).
fn bar_line<'a>(screen: &'a str, prefix: &str) -> &'a str {
    screen
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line `{prefix}...` on the screen:\n{screen}"))
}

/// The number before ` {unit}` in `line` (`... 312 objects ...`).
fn count_before(line: &str, unit: &str) -> u64 {
    let before = &line[..line
        .find(&format!(" {unit}"))
        .unwrap_or_else(|| panic!("no {unit} in {line:?}"))];
    let word = before.rsplit([' ', '/']).next().unwrap_or_default();
    word.parse()
        .unwrap_or_else(|e| panic!("{word:?} before {unit} in {line:?}: {e}"))
}

#[test]
fn imports_a_gc_and_a_root_rotation_draw_bars_on_a_terminal_and_plain_lines_to_a_file() {
    const TEST: &str =
        "imports_a_gc_and_a_root_rotation_draw_bars_on_a_terminal_and_plain_lines_to_a_file";
    const N: usize = 150;
    let Some(tmux) = tools(TEST, &["tmux"]).map(|mut t| t.remove(0)) else {
        return;
    };
    let Some(server) = MailServer::create(TEST, Backend::Local, &[ALICE]) else {
        return;
    };
    let maildir = write_maildir(&server, ALICE, N);
    let maildir_bytes: u64 = std::fs::read_dir(maildir.join("cur"))
        .expect("the Maildir")
        .map(|e| e.expect("a file").metadata().expect("its size").len())
        .sum();
    // An mbox of 40 other messages.
    let mbox = server.dir.path().join("old.mbox");
    let mut text_of_mbox = String::new();
    for i in 0..40 {
        text_of_mbox += &format!(
            "From a@example.org Sat Dec  5 10:00:{:02} 2026\nSubject: old {i}\n\n{}\n",
            i % 60,
            format!("old line {i}\n").repeat(20)
        );
    }
    std::fs::write(&mbox, &text_of_mbox).expect("the mbox");
    let password = password_file(&server);
    let config = server.config_path().display().to_string();
    let job = [
        format!(
            "{BIN} import maildir {} --config {config} --name {ALICE} --password-file {password}",
            maildir.display()
        ),
        format!(
            "{BIN} import mbox {} --mailbox Old --config {config} --name {ALICE}",
            mbox.display()
        ),
        format!("{BIN} gc --config {config} --account {ALICE} --password-file {password}"),
        format!("{BIN} account rotate-root {ALICE} --config {config} --password-file {password}"),
    ]
    .join("; ");
    let screens = on_a_terminal(&tmux, &server, "jobs", 40, &job, "root key rotated");
    let last = screens.last().cloned().unwrap_or_default();
    eprintln!("{TEST}: the last screen:\n{last}");
    assert!(
        last.contains("root key rotated"),
        "the jobs did not finish on the terminal:\n{last}"
    );
    // Each finished bar stays: `import [00:00:00] ████ 150/150 messages 91.23 KiB/91.23
    // KiB, 1234/s ETA 0s` (count and bytes of the Maildir).
    let kib = |b: u64| format!("{:.2} KiB", b as f64 / 1024.0);
    let maildir_bar = bar_line(&last, "import [");
    assert!(
        maildir_bar.contains(&format!(
            "{N}/{N} messages {}/{},",
            kib(maildir_bytes),
            kib(maildir_bytes)
        )) && maildir_bar.contains("ETA"),
        "{last}"
    );
    // The mbox's bar follows its bytes (the file's length) and counts the messages.
    let mbox_bytes = text_of_mbox.len() as u64;
    let mbox_bar = last
        .lines()
        .filter(|l| l.starts_with("import ["))
        .nth(1)
        .unwrap_or_else(|| panic!("no mbox bar:\n{last}"));
    assert!(
        mbox_bar.contains(&format!(
            "{}/{} 40 messages,",
            kib(mbox_bytes),
            kib(mbox_bytes)
        )) && mbox_bar.contains("ETA"),
        "{last}"
    );
    // gc: a spinner counting the objects its verification checked (every body at least)
    // and their bytes; rotate-root: the index collections re-keyed, all of them.
    let gc_bar = bar_line(&last, "gc [");
    assert!(count_before(gc_bar, "objects") >= (N + 40) as u64, "{last}");
    assert!(gc_bar.contains("iB, "), "no bytes in the gc bar: {last}");
    let rotate_bar = bar_line(&last, "rotate-root [");
    let rekeyed = count_before(rotate_bar, "collections");
    assert!(
        rekeyed >= 1 && rotate_bar.contains(&format!("{rekeyed}/{rekeyed} collections")),
        "{last}"
    );
    assert!(rotate_bar.contains("ETA"), "{last}");
    // Bars, not plain lines, on a terminal.
    for unit in ["messages/s", "objects/s", "collections/s"] {
        assert!(!last.contains(unit), "{unit}: {last}");
    }

    // With the output to a file: plain lines (the last at the end), none with --quiet.
    let gc = mv(
        &server,
        &["gc", "--account", ALICE, "--password-file", &password],
        None,
    );
    assert!(gc.status.success(), "{}", text(&gc.stderr));
    eprintln!("{TEST}: gc to a file: {}", text(&gc.stderr));
    let line = text(&gc.stderr)
        .lines()
        .find(|l| l.starts_with("gc: "))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no plain gc line: {}", text(&gc.stderr)));
    assert!(
        count_before(&line, "objects") >= (N + 40) as u64
            && line.contains(" MiB,")
            && line.contains("objects/s"),
        "{line}"
    );
    let rotate = mv(
        &server,
        &[
            "account",
            "rotate-root",
            ALICE,
            "--password-file",
            &password,
        ],
        None,
    );
    assert!(rotate.status.success(), "{}", text(&rotate.stderr));
    let stderr = text(&rotate.stderr);
    assert!(stderr.contains("rotate-root: begun"), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("rotate-root: ") && l.contains(" collections, "))
        .unwrap_or_else(|| panic!("no plain rotate-root line: {stderr}"));
    let rekeyed = count_before(line, "collections");
    assert!(
        line.starts_with(&format!("rotate-root: {rekeyed} of {rekeyed}; ")),
        "{line}"
    );
    for args in [
        &[
            "gc",
            "--account",
            ALICE,
            "--password-file",
            &password,
            "--quiet",
        ][..],
        &[
            "account",
            "rotate-root",
            ALICE,
            "--password-file",
            &password,
            "-q",
        ],
    ] {
        let out = mv(&server, args, None);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        let stderr = text(&out.stderr);
        assert!(
            !stderr.contains("gc: ") && !stderr.contains("rotate-root: "),
            "{args:?} --quiet: {stderr}"
        );
    }
}
