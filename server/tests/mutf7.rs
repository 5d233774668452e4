//! Modified UTF-7 mailbox names (RFC 3501 5.1.3; issue 13): `mutf7_names.py` (Python's
//! imaplib and imapclient, whose `imap_utf7` nobody here wrote) creates "Entwürfe",
//! "日本語", "a&b" and a name outside the BMP on Dovecot and on `mailvault serve`, names
//! them in modified UTF-7 in LIST, LSUB, STATUS, SELECT, APPEND, COPY, MOVE, SUBSCRIBE,
//! RENAME and DELETE, and compares the raw LIST/LSUB/STATUS lines of the two servers byte
//! for byte (up to the hierarchy delimiter, each server's choice). Names that are not
//! modified UTF-7 are refused by both, the connection going on.
//!
//! Skipped (with a printed reason) when the peers are not installed and started, failed
//! instead when `MAILVAULT_REQUIRE_PEERS=1`.

mod peers;

use std::net::TcpStream;
use std::path::Path;
use std::process::Command;

use peers::{tools, Backend, MailServer, PASSWORD};

const USER: &str = "names@example.org";

/// Dovecot's IMAP port and the second user of scripts/peers.sh's instance (the
/// differential test uses the last one; this test leaves the user's mailboxes as it found
/// them), or `None` (skip, printed) when it is not running.
fn dovecot(test: &str) -> Option<(u16, String, String)> {
    let require = std::env::var("MAILVAULT_REQUIRE_PEERS").as_deref() == Ok("1");
    let port = std::env::var("MAILVAULT_DOVECOT_IMAP_PORT")
        .ok()
        .and_then(|p| p.parse::<u16>().ok());
    let users = std::env::var("MAILVAULT_DOVECOT_USERS").ok();
    let (Some(port), Some(users)) = (port, users) else {
        let why = format!(
            "{test}: MAILVAULT_DOVECOT_IMAP_PORT / _USERS are not set (run `bash \
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
    let (user, password) = users
        .split_whitespace()
        .nth(1)
        .and_then(|u| u.split_once(':'))
        .map(|(u, p)| (u.to_string(), p.to_string()))
        .expect("MAILVAULT_DOVECOT_USERS holds user:password pairs");
    Some((port, user, password))
}

#[test]
fn mutf7_names_against_dovecot() {
    let test = "mutf7_names_against_dovecot";
    let Some(paths) = tools(test, &["python"]) else {
        return;
    };
    let Some((port, user, password)) = dovecot(test) else {
        return;
    };
    let Some(mut server) = MailServer::create(test, Backend::Local, &[USER]) else {
        return;
    };
    server.start();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mutf7_names.py");
    let out = peers::output(
        Command::new(&paths[0])
            .arg(&script)
            .arg(port.to_string())
            .args([&user, &password])
            .arg(server.imap.to_string())
            .args([USER, PASSWORD]),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the servers differ ({}):\n{stdout}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        server.logs()
    );
    assert!(server.alive(), "the server survives:\n{}", server.logs());
}
