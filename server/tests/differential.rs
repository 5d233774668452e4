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

use std::path::Path;

use peers::{tools, Backend, DovecotPick, MailServer, PASSWORD};

const USER: &str = "diff@example.org";

#[test]
fn differential_against_dovecot() {
    let test = "differential_against_dovecot";
    let Some(paths) = tools(test, &["python"]) else {
        return;
    };
    let Some(dovecot) = peers::dovecot(test, DovecotPick::Last) else {
        return;
    };
    let Some(mut server) = MailServer::create(test, Backend::Local, &[USER]) else {
        return;
    };
    server.start();
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/mail-parser");
    let out_dir = std::env::var("MAILVAULT_DIFF_OUT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| server.dir.path().join("differential"));
    let port = dovecot.port.to_string();
    let imap = server.imap.to_string();
    let args: [&std::ffi::OsStr; 9] = [
        port.as_ref(),
        dovecot.user.as_ref(),
        dovecot.password.as_ref(),
        dovecot.home.as_ref(),
        imap.as_ref(),
        USER.as_ref(),
        PASSWORD.as_ref(),
        out_dir.as_os_str(),
        corpus.as_os_str(),
    ];
    let what = format!(
        "the servers differ (transcripts in {}, kept when MAILVAULT_DIFF_OUT is set)",
        out_dir.display()
    );
    peers::run_script(&paths[0], "differential.py", &args, &what, || server.logs());
    assert!(server.alive(), "the server survives:\n{}", server.logs());
}
