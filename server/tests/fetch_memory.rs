//! The memory one FETCH makes the server hold (issue 13, review: "FETCH must not hold a
//! whole command's responses in memory"): `fetch_memory.py` APPENDs messages of 1 MiB to
//! an account of `mailvault serve` (Python imaplib), fetches them all with one
//! `UID FETCH 1:* BODY.PEEK[]` as a client that stalls after the first response (another
//! session STOREs and APPENDs meanwhile), checks every byte, and holds the server
//! process's peak resident memory during the FETCH (`/proc/<pid>/status` VmHWM) to less
//! than 64 MiB above what it held before: over plain TCP the answer carries 300 MiB, over
//! IMAPS 100 MiB.
//!
//! Skipped (with a printed reason) when the peers' Python (or openssl, for the
//! certificate of the TLS test) is missing, failed instead when `MAILVAULT_REQUIRE_PEERS=1`.

mod peers;

use std::path::Path;

use peers::{tools, Backend, MailServer, PASSWORD};

const USER: &str = "fetch@example.org";
/// The size of each message, KiB.
const SIZE_KIB: u32 = 1024;
/// The bound on the server's peak memory growth during the FETCH, MiB.
const BOUND_MIB: u32 = 64;

/// Runs `fetch_memory.py` with `python` on the started `server` for `messages` messages;
/// over IMAPS when the server has TLS.
fn check_fetch_memory(python: &Path, server: &mut MailServer, messages: u32) {
    let pid = server.pid().expect("started").to_string();
    let port = server.imaps.unwrap_or(server.imap).to_string();
    let (messages, size, bound) = (
        messages.to_string(),
        SIZE_KIB.to_string(),
        BOUND_MIB.to_string(),
    );
    let mut args = vec![
        server.host.to_string(),
        port,
        USER.to_string(),
        PASSWORD.to_string(),
        pid,
        messages,
        size,
        bound,
    ];
    args.extend(server.cert.iter().map(|c| c.to_string_lossy().into_owned()));
    peers::run_script(
        python,
        "fetch_memory.py",
        &args,
        "FETCH memory checks failed",
        || server.logs(),
    );
    assert!(server.alive(), "the server survives:\n{}", server.logs());
}

#[test]
fn fetch_of_whole_messages_holds_a_few_at_a_time() {
    let test = "fetch_of_whole_messages_holds_a_few_at_a_time";
    let Some(paths) = tools(test, &["python"]) else {
        return;
    };
    let Some(mut server) = MailServer::create(test, Backend::Local, &[USER]) else {
        return;
    };
    server.start();
    check_fetch_memory(&paths[0], &mut server, 300);
}

/// The same inside TLS (IMAPS): the TLS connection's output buffer is held to the bound
/// too.
#[test]
fn fetch_over_tls_holds_a_few_at_a_time() {
    let test = "fetch_over_tls_holds_a_few_at_a_time";
    let Some(paths) = tools(test, &["python", "openssl"]) else {
        return;
    };
    let Some(mut server) = MailServer::create_tls(test, Backend::Local, &[USER], &paths[1]) else {
        return;
    };
    server.start();
    check_fetch_memory(&paths[0], &mut server, 100);
}
