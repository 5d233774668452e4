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

use peers::{tools, Backend, DovecotPick, MailServer, PASSWORD};

const USER: &str = "names@example.org";

#[test]
fn mutf7_names_against_dovecot() {
    let test = "mutf7_names_against_dovecot";
    let Some(paths) = tools(test, &["python"]) else {
        return;
    };
    let Some(dovecot) = peers::dovecot(test, DovecotPick::Second) else {
        return;
    };
    let Some(mut server) = MailServer::create(test, Backend::Local, &[USER]) else {
        return;
    };
    server.start();
    let (port, imap) = (dovecot.port.to_string(), server.imap.to_string());
    let args = [
        port.as_str(),
        &dovecot.user,
        &dovecot.password,
        &imap,
        USER,
        PASSWORD,
    ];
    peers::run_script(
        &paths[0],
        "mutf7_names.py",
        &args,
        "the servers differ",
        || server.logs(),
    );
    assert!(server.alive(), "the server survives:\n{}", server.logs());
}
