//! IMAP4rev2 (RFC 9051; issue 13, "IMAP4rev2 and what clients still send of IMAP4rev1"):
//! `rev2.py` opens an IMAP4rev1 session and one that sends `ENABLE IMAP4rev2` on the same
//! account of `mailvault serve`, and checks each RFC 9051 change the server makes on the
//! second (UTF-8 mailbox names both ways, ESEARCH for SEARCH, no RECENT, the LIST of
//! SELECT, STATUS DELETED and SIZE, `\NonExistent` and children attributes, RECENT/NEW/OLD
//! refused) while the first keeps RFC 3501's answers and modified UTF-7 (imapclient's
//! `imap_utf7`). Dovecot 2.3 speaks no IMAP4rev2: the checks cite the RFC text instead of a
//! peer; the script's docstring lists what is and is not implemented. `session_rules`
//! (`sessions.py`) holds the server to RFC rules across commands and sessions.
//!
//! Skipped (with a printed reason) when the peers' Python (with imapclient) is missing,
//! failed instead when `MAILVAULT_REQUIRE_PEERS=1`.

mod peers;

use peers::{tools, Backend, MailServer, PASSWORD};

const USER: &str = "rev2@example.org";
/// An account with a storage quota (`session_rules`).
const QUOTA_USER: &str = "quota@example.org";

#[test]
fn imap4rev2_sessions() {
    let test = "imap4rev2_sessions";
    let Some(paths) = tools(test, &["python"]) else {
        return;
    };
    let Some(mut server) = MailServer::create(test, Backend::Local, &[USER]) else {
        return;
    };
    server.start();
    let imap = server.imap.to_string();
    peers::run_script(
        &paths[0],
        "rev2.py",
        &[imap.as_str(), USER, PASSWORD],
        "IMAP4rev2 checks failed",
        || server.logs(),
    );
    assert!(server.alive(), "the server survives:\n{}", server.logs());
}

/// Session rules across commands and sessions that a review of the server against the
/// RFCs found broken (`tests/sessions.py`, which cites them): UID and MODSEQ in every
/// FETCH response of a change once CONDSTORE is enabled (RFC 7162 3.2.4), and a session
/// whose selected mailbox another session deletes (it panicked at EXPUNGE under QRESYNC);
/// QUOTA (RFC 9208) through Python imaplib's own `getquotaroot` / `getquota`.
#[test]
fn session_rules() {
    let test = "session_rules";
    let Some(paths) = tools(test, &["python"]) else {
        return;
    };
    let Some(mut server) = MailServer::create(test, Backend::Local, &[USER]) else {
        return;
    };
    // An account with a storage quota of 64 KiB, for the QUOTA checks (RFC 9208).
    let password = server.dir.path().join("password");
    server.run(
        &[
            "account",
            "create",
            "--name",
            QUOTA_USER,
            "--storage-limit",
            "65536",
        ],
        &["--password-file".as_ref(), password.as_os_str()],
    );
    server.start();
    let imap = server.imap.to_string();
    peers::run_script(
        &paths[0],
        "sessions.py",
        &[imap.as_str(), USER, PASSWORD, QUOTA_USER],
        "session rules failed",
        || server.logs(),
    );
    assert!(server.alive(), "the server survives:\n{}", server.logs());
}
