//! LMTP under load and faults (issue 13): Postfix's `smtp-source -L` sends many messages
//! over 10 connections to 10 recipients each, and every one is stored (counted with IMAP
//! STATUS per account); then Python's `smtplib.LMTP` records the reply to
//! each message it sends while the server is SIGKILLed and restarted several times
//! mid-run: every message that got 250 is in its mailbox exactly once, byte for byte, one
//! without a reply at most once, and nothing else is (`tests/lmtp_faults.py`). On a local
//! directory and on Garage.
//!
//! Settings (defaults of a release build; a debug build takes a twentieth):
//! `MAILVAULT_LMTP_LOAD_MESSAGES` (smtp-source's message count on a local directory,
//! default 10 000, i.e. 100 000 deliveries: measured 4 min of delivery and 5 min of
//! first-login imports on 2 shared cores, load average 7-10; 1000 takes about 1 min),
//! `MAILVAULT_LMTP_LOAD_MESSAGES_S3` (on Garage, default 500: about 2 min),
//! `MAILVAULT_LMTP_FAULT_MESSAGES` (the faulted runs, default 2000 on a
//! local directory, 600 on Garage).

mod peers;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use peers::{run_ok, tools, Backend, MailServer, PASSWORD};

/// smtp-source's `-r 10 -t u@example.org` sends to `10u@`, `9u@`, ..., `2u@`, `u@`.
fn recipients() -> Vec<String> {
    let mut out = vec!["u@example.org".to_string()];
    out.extend((2..=10).map(|n| format!("{n}u@example.org")));
    out
}

/// `name`'s value, else `release` in a release build and a twentieth of it (at least 100)
/// in a debug build.
fn setting(name: &str, release: usize) -> usize {
    let default = if cfg!(debug_assertions) {
        (release / 20).max(100)
    } else {
        release
    };
    std::env::var(name)
        .ok()
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
        })
        .unwrap_or(default)
}

#[test]
fn smtp_source_load_local() {
    smtp_source_load(
        Backend::Local,
        setting("MAILVAULT_LMTP_LOAD_MESSAGES", 10_000),
        false,
    );
}

/// The same over the server's unix socket (`lmtp_socket`; smtp-source's `unix:` target),
/// how an MTA on the same machine reaches LMTP.
#[test]
fn smtp_source_load_unix_socket() {
    smtp_source_load(Backend::Local, 300, true);
}

#[test]
fn smtp_source_load_garage() {
    smtp_source_load(
        Backend::Garage,
        setting("MAILVAULT_LMTP_LOAD_MESSAGES_S3", 500),
        false,
    );
}

fn smtp_source_load(backend: Backend, messages: usize, unix_socket: bool) {
    let test = format!("smtp_source_load on {backend:?}");
    let Some(paths) = tools(&test, &["smtp-source", "python"]) else {
        return;
    };
    let (smtp_source, python) = (&paths[0], &paths[1]);
    let rcpts = recipients();
    let names: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    let Some(mut server) = MailServer::create(&test, backend, &names) else {
        return;
    };
    server.start();
    let t0 = Instant::now();
    // -s 10 sessions in parallel, -r 10 recipients per message, -l 4096 bytes of body
    // (lines of X), -d: a session sends its next message on the same connection.
    let out = peers::output(
        Command::new(smtp_source)
            .args(["-L", "-d", "-s", "10", "-r", "10", "-l", "4096"])
            .args(["-m", &messages.to_string()])
            .args(["-f", "loader@example.net", "-t", "u@example.org"])
            .args(["-S", "smtp-source load"])
            .arg(if unix_socket {
                format!("unix:{}", server.lmtp_socket.display())
            } else {
                format!("127.0.0.1:{}", server.lmtp)
            }),
    );
    let sent = t0.elapsed();
    assert!(
        out.status.success(),
        "smtp-source failed (it stops at the first reply that is not 2xx): {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        server.logs()
    );
    // Each recipient got every message: STATUS per account (Python's imaplib: curl 7.88
    // gives up on a reply after 120 s, and a first login imports the account's pending
    // deliveries, minutes for 10 000), the 10 logins in parallel.
    let imap = server.imap.to_string();
    std::thread::scope(|scope| {
        let checks: Vec<_> = rcpts
            .iter()
            .map(|rcpt| {
                let imap = &imap;
                scope.spawn(move || {
                    let status = run_ok(
                        Command::new(python)
                            .arg("-c")
                            .arg(
                                "import imaplib, sys\n\
                                 c = imaplib.IMAP4('127.0.0.1', int(sys.argv[1]), timeout=1800)\n\
                                 c.login(sys.argv[2], sys.argv[3])\n\
                                 typ, data = c.status('INBOX', '(MESSAGES)')\n\
                                 assert typ == 'OK', (typ, data)\n\
                                 print(data[0].decode())\n\
                                 c.logout()\n",
                            )
                            .args([imap.as_str(), rcpt.as_str(), PASSWORD]),
                    );
                    let status = String::from_utf8_lossy(&status).into_owned();
                    (rcpt, status)
                })
            })
            .collect();
        for check in checks {
            let (rcpt, status) = check.join().expect("a STATUS thread");
            assert!(
                status.contains(&format!("(MESSAGES {messages})")),
                "{rcpt}: {messages} messages expected, STATUS says {status}"
            );
        }
    });
    eprintln!(
        "{test} (unix socket: {unix_socket}): {messages} messages x 10 recipients over 10 sessions delivered in {:.1} s \
         ({:.0} deliveries/s); STATUS of the 10 accounts (first login: imports) in {:.1} s",
        sent.as_secs_f64(),
        (messages * 10) as f64 / sent.as_secs_f64(),
        (t0.elapsed() - sent).as_secs_f64()
    );
    assert!(server.alive(), "the server survives:\n{}", server.logs());
}

#[test]
fn lmtp_replies_hold_across_sigkill_local() {
    replies_hold_across_sigkill(
        Backend::Local,
        setting("MAILVAULT_LMTP_FAULT_MESSAGES", 2000),
    );
}

#[test]
fn lmtp_replies_hold_across_sigkill_garage() {
    replies_hold_across_sigkill(
        Backend::Garage,
        setting("MAILVAULT_LMTP_FAULT_MESSAGES", 600),
    );
}

fn lines(path: &Path) -> usize {
    std::fs::read(path).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
}

fn replies_hold_across_sigkill(backend: Backend, messages: usize) {
    let test = format!("lmtp_replies_hold_across_sigkill on {backend:?}");
    let Some(paths) = tools(&test, &["python"]) else {
        return;
    };
    let python = &paths[0];
    let rcpts = recipients();
    let names: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    let Some(mut server) = MailServer::create(&test, backend, &names) else {
        return;
    };
    server.start();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/lmtp_faults.py");
    let records = server.dir.path().join("records");
    let sender_log = server.dir.path().join("sender.log");
    let mut sender = Command::new(python)
        .arg(&script)
        .arg("send")
        .arg(server.lmtp.to_string())
        .arg(messages.to_string())
        .arg(&records)
        .args(&rcpts)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&sender_log).expect("sender log"))
        .spawn()
        .expect("start the sender");
    // SIGKILL the server when the sender has recorded 15%, 40%, 65% and 90% of the
    // messages, and restart it at once.
    let deadline = Instant::now() + Duration::from_secs(1200);
    let mut kills = Vec::new();
    for percent in [15, 40, 65, 90] {
        let at = messages * percent / 100;
        while lines(&records) < at {
            assert!(
                sender.try_wait().expect("sender status").is_none(),
                "the sender stopped after {} of {messages} messages:\n{}\n{}",
                lines(&records),
                std::fs::read_to_string(&sender_log).unwrap_or_default(),
                server.logs()
            );
            assert!(Instant::now() < deadline, "the sender is too slow");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            server.alive(),
            "the server died by itself:\n{}",
            server.logs()
        );
        server.kill();
        kills.push(lines(&records));
        server.start();
    }
    let status = loop {
        if let Some(status) = sender.try_wait().expect("sender status") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = sender.kill();
            panic!("the sender did not finish");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        status.success(),
        "the sender failed: {status}\n{}\n{}",
        std::fs::read_to_string(&sender_log).unwrap_or_default(),
        server.logs()
    );
    let out = peers::output(
        Command::new(python)
            .arg(&script)
            .arg("check")
            .arg(server.imap.to_string())
            .arg(messages.to_string())
            .arg(&records)
            .arg(PASSWORD)
            .args(&rcpts),
    );
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("{test}: killed after {kills:?} records; {report}");
    assert!(
        out.status.success(),
        "the mailboxes do not match the replies:\n{report}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.logs()
    );
    assert!(server.alive(), "the server survives:\n{}", server.logs());
}

/// BDAT (RFC 3030 CHUNKING) and streamed DATA, on the unix socket and on TCP, by a raw
/// socket client (`tests/lmtp_chunking.py`; no standard client speaks BDAT): chunks cut
/// anywhere read back byte for byte, a resend is stored once, refusals keep the
/// connection usable, and a message reset or cut off by a closed connection leaves
/// nothing.
#[test]
fn bdat_chunks_and_streamed_data() {
    let test = "bdat_chunks_and_streamed_data";
    let Some(paths) = tools(test, &["python"]) else {
        return;
    };
    let users = ["chunks@example.org", "chunks2@example.org"];
    let Some(mut server) = MailServer::create(test, Backend::Local, &users) else {
        return;
    };
    server.start();
    for endpoint in [
        format!("unix:{}", server.lmtp_socket.display()),
        format!("tcp:{}", server.lmtp),
    ] {
        let imap = server.imap.to_string();
        let args = [
            endpoint.as_str(),
            &imap,
            users[0],
            PASSWORD,
            users[1],
            PASSWORD,
        ];
        let what = format!("BDAT and streamed DATA on {endpoint}");
        peers::run_script(&paths[0], "lmtp_chunking.py", &args, &what, || {
            server.logs()
        });
    }
    assert!(server.alive(), "the server survives:\n{}", server.logs());
}
