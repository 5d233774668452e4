//! Differential test against Dovecot (issue 13, "Differential against Dovecot"): one set of
//! scripted IMAP sessions (`differential.py`, Python's imaplib) runs against the Dovecot
//! 2.3 instance with mail_crypt of scripts/peers.sh and against `mailvault serve` on a
//! local directory, on the same messages (the real-mail corpus, APPENDed to both):
//! APPEND, FETCH of every item, SEARCH with every key, STORE, COPY, MOVE, EXPUNGE and
//! their UID forms, LIST, LSUB, STATUS, SELECT, EXAMINE, then a CONDSTORE session and a
//! QRESYNC resynchronization (each server given the modseqs it gave). The normalized
//! responses must be equal; each difference that remains is listed in the script (`KNOWN`) with the RFC
//! text that allows it, or marked `library: see findings` when its cause is the
//! library's analysis of the message (to be fixed there, then removed from the list: an
//! entry that no longer matches fails the test).
//!
//! Skipped (with a printed reason) when the peers are not installed and started, failed
//! instead when `MAILVAULT_REQUIRE_PEERS=1`. `MAILVAULT_DIFF_OUT=<dir>` keeps the
//! normalized transcripts and the list of differences.

mod peers;

use std::net::TcpStream;
use std::path::Path;
use std::process::Command;

use peers::{tools, Backend, MailServer, PASSWORD};

const USER: &str = "diff@example.org";

/// The Dovecot instance of scripts/peers.sh: IMAP port, user, password and the user's mail
/// folder, or `None` (skip, printed) when it is not running.
fn dovecot(test: &str) -> Option<(u16, String, String, String)> {
    let require = std::env::var("MAILVAULT_REQUIRE_PEERS").as_deref() == Ok("1");
    let port = std::env::var("MAILVAULT_DOVECOT_IMAP_PORT")
        .ok()
        .and_then(|p| p.parse::<u16>().ok());
    let users = std::env::var("MAILVAULT_DOVECOT_USERS").ok();
    let dir = std::env::var("MAILVAULT_DOVECOT_DIR").ok();
    let (Some(port), Some(users), Some(dir)) = (port, users, dir) else {
        let why = format!(
            "{test}: MAILVAULT_DOVECOT_IMAP_PORT / _USERS / _DIR are not set (run `bash \
             scripts/peers.sh start` and source the file `bash scripts/peers.sh env` prints)"
        );
        assert!(!require, "MAILVAULT_REQUIRE_PEERS=1 but {why}");
        eprintln!("SKIPPED {why}");
        return None;
    };
    if TcpStream::connect(("127.0.0.1", port)).is_err() {
        let why = format!("{test}: nothing listens on Dovecot's port {port}");
        assert!(!require, "MAILVAULT_REQUIRE_PEERS=1 but {why}");
        eprintln!("SKIPPED {why}");
        return None;
    }
    // The last user of the instance: the other tests of the suite do not use it.
    let (user, password) = users
        .split_whitespace()
        .last()
        .and_then(|u| u.split_once(':'))
        .map(|(u, p)| (u.to_string(), p.to_string()))
        .expect("MAILVAULT_DOVECOT_USERS holds user:password pairs");
    let home = format!("{dir}/mail/{user}");
    Some((port, user, password, home))
}

#[test]
fn differential_against_dovecot() {
    let test = "differential_against_dovecot";
    let Some(paths) = tools(test, &["python"]) else {
        return;
    };
    let Some((port, user, password, home)) = dovecot(test) else {
        return;
    };
    let Some(mut server) = MailServer::create(test, Backend::Local, &[USER]) else {
        return;
    };
    server.start();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/differential.py");
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/mail-parser");
    let out_dir = std::env::var("MAILVAULT_DIFF_OUT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| server.dir.path().join("differential"));
    let out = peers::output(
        Command::new(&paths[0])
            .arg(&script)
            .arg(port.to_string())
            .args([&user, &password, &home])
            .arg(server.imap.to_string())
            .args([USER, PASSWORD])
            .arg(&out_dir)
            .arg(&corpus),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the servers differ ({}; transcripts in {}, kept when MAILVAULT_DIFF_OUT is set):\n\
         {stdout}\n{}\n{}",
        out.status,
        out_dir.display(),
        String::from_utf8_lossy(&out.stderr),
        server.logs()
    );
    assert!(server.alive(), "the server survives:\n{}", server.logs());
}
