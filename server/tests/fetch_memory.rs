//! The memory one FETCH makes the server hold (issue 13, review: "FETCH must not hold a
//! whole command's responses in memory"): `fetch_memory.py` APPENDs 300 messages of
//! 1 MiB to an account of `mailvault serve` (Python imaplib), fetches them all with one
//! `UID FETCH 1:* BODY.PEEK[]` as a client that stalls after the first response, checks
//! every byte, and holds the server process's peak resident memory during the FETCH
//! (`/proc/<pid>/status` VmHWM) to less than 64 MiB above what it held before: the
//! answer carries 300 MiB.
//!
//! Skipped (with a printed reason) when the peers' Python is missing, failed instead
//! when `MAILVAULT_REQUIRE_PEERS=1`.

mod peers;

use peers::{tools, Backend, MailServer, PASSWORD};

const USER: &str = "fetch@example.org";
/// Messages appended, and the size of each, KiB.
const MESSAGES: u32 = 300;
const SIZE_KIB: u32 = 1024;
/// The bound on the server's peak memory growth during the FETCH, MiB.
const BOUND_MIB: u32 = 64;

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
    let pid = server.pid().expect("started").to_string();
    let imap = server.imap.to_string();
    let (messages, size, bound) = (
        MESSAGES.to_string(),
        SIZE_KIB.to_string(),
        BOUND_MIB.to_string(),
    );
    peers::run_script(
        &paths[0],
        "fetch_memory.py",
        &[
            imap.as_str(),
            USER,
            PASSWORD,
            &pid,
            &messages,
            &size,
            &bound,
        ],
        "FETCH memory checks failed",
        || server.logs(),
    );
    assert!(server.alive(), "the server survives:\n{}", server.logs());
}
