//! Malformed IMAP input (issue 13, "Other clients": unterminated literals, huge literal
//! announcements, LITERAL+ abuse, deep parentheses, invalid UTF-8, NUL bytes, overlong
//! lines, commands in the wrong state, unknown commands, garbage tags) sent over TCP to
//! `mailvault serve`: each is answered as written in [`CASES`] (BAD, or what the RFC
//! asks), the connection goes on serving when it can, a new connection is served after
//! every case, the process never exits and its memory stays bounded while a client
//! streams an oversized literal.
//!
//! The inputs are the files of `server/tests/imap_malformed/` (raw client bytes, the
//! seeds of the `imap_session` fuzz target too); a file there that [`CASES`] does not
//! name fails the test.

mod peers;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use peers::{Backend, MailServer};

/// The message size limit of the test server (`max_message_size`): APPENDLIMIT, the
/// largest literal; a command line may be 64 KiB longer.
const LIMIT: usize = 1 << 20;

/// A corpus file and the responses it gets: each tagged or untagged OK/NO/BAD/BYE line
/// and each continuation request (`+`), as "TAG STATUS", in order, leaving out the
/// untagged OKs and the completions of the files' LOGIN (tag `L`) and SELECT (tag `S`).
/// Files that end with `Z NOOP` check that the connection survives (`Z OK` last).
const CASES: &[(&str, &[&str])] = &[
    // The client stops in the middle of a literal and closes: nothing to answer.
    ("unterminated-literal", &["+"]),
    ("unterminated-literal-plus", &[]),
    // A quoted string does not span lines: the line is a malformed command.
    ("unterminated-quoted", &["A BAD", "Z OK"]),
    // Announcements refused before a byte of the literal is read: {2^32} does not fit
    // the 32-bit number RFC 9051's `number` is, so the command is malformed (no
    // continuation request); {2^32 - 1} is above APPENDLIMIT (RFC 7889 2 and RFC 9051
    // 7.1: the server refuses the synchronizing literal with BAD instead of "+").
    ("huge-literal-2p32", &["A BAD", "Z OK"]),
    ("huge-literal-u32-max", &["A BAD", "Z OK"]),
    ("huge-literal-20-digits", &["A BAD", "Z OK"]),
    // Before authentication a literal may hold a login name or password, not a message:
    // one above 8 KiB is refused without a continuation request (an unauthenticated
    // client must not make the server hold an APPEND-sized literal); after LOGIN the same
    // size is an APPEND like any other.
    ("pre-auth-literal", &["A BAD", "Z OK"]),
    ("post-auth-literal", &["+", "A OK", "Z OK"]),
    // A non-synchronizing literal of 4 GiB: the client does not wait for an answer
    // (RFC 7888), so the server reads and discards what comes, keeping none of it
    // (`huge_literal_plus_memory_is_bounded`); this client stops sending and closes.
    ("huge-literal-plus", &[]),
    // Literals where the grammar has none, a negative size; `{3+}` before a tag is a
    // line without a tag (untagged BAD). LOGIN after LOGIN: BAD.
    (
        "literal-plus-abuse",
        &["A BAD", "B BAD", "* BAD", "C BAD", "D BAD", "Z OK"],
    ),
    // A synchronizing literal on a line with no tag yet: accepted (the framing layer
    // cannot know), then the command is malformed.
    ("literal-as-tag", &["+", "* BAD", "Z OK"]),
    // 10 000 levels of parentheses and 5 000 NOTs / ORs: refused by the parser's depth
    // limit (BAD), never a stack overflow.
    ("deep-parens-search", &["B BAD", "Z OK"]),
    ("deep-parens-fetch", &["B BAD", "Z OK"]),
    (
        "deep-parens-unbalanced",
        &["B BAD", "C BAD", "D BAD", "Z OK"],
    ),
    ("deep-parens-append-flags", &["B BAD", "Z OK"]),
    // Mailbox names, patterns, search strings and login names that are not UTF-8.
    (
        "invalid-utf8",
        &["A BAD", "B BAD", "C BAD", "D BAD", "Z OK"],
    ),
    ("invalid-utf8-login", &["A BAD", "Z OK"]),
    // NUL is in no IMAP string (RFC 9051 4.3: CHAR8 excludes %x00) nor in a literal of
    // APPEND (only literal8 may hold it, RFC 3516 4.2).
    ("nul-bytes", &["A BAD", "B BAD", "* BAD", "Z OK"]),
    ("append-nul", &["+", "A BAD", "Z OK"]),
    (
        "unknown-commands",
        &["A BAD", "B BAD", "C BAD", "D BAD", "E BAD", "F BAD", "Z OK"],
    ),
    // No usable tag: untagged BAD (RFC 9051 7.1.3); `A` alone is a tag without a
    // command.
    (
        "garbage-tags",
        &[
            "* BAD", "* BAD", "* BAD", "* BAD", "* BAD", "* BAD", "A BAD", "Z OK",
        ],
    ),
    // Commands of a state the connection is not in (RFC 9051 6: BAD).
    (
        "wrong-state-unauthenticated",
        &[
            "A BAD", "B BAD", "C BAD", "D BAD", "E BAD", "F BAD", "G BAD", "H BAD", "Z OK",
        ],
    ),
    (
        "wrong-state-authenticated",
        &[
            "A BAD", "B BAD", "C BAD", "D BAD", "E BAD", "F BAD", "G BAD", "H BAD", "I BAD", "Z OK",
        ],
    ),
    // RFC 9051 2.2: lines end with CRLF; the empty LF line has no tag.
    ("lf-line-ends", &["A BAD", "B BAD", "* BAD", "Z OK"]),
    (
        "bad-sequence-sets",
        &["A BAD", "B BAD", "C BAD", "D BAD", "E BAD", "F BAD", "Z OK"],
    ),
    ("bad-dates", &["A BAD", "B BAD", "C BAD", "Z OK"]),
    (
        "bad-fetch-sections",
        &["A BAD", "B BAD", "C BAD", "D BAD", "E BAD", "F BAD", "Z OK"],
    ),
    // A response that is not base64 ends AUTHENTICATE with BAD (RFC 9051 6.2.2), as do
    // a malformed initial response, an unknown mechanism with a bad argument and no
    // mechanism at all.
    (
        "authenticate-garbage",
        &["+", "A BAD", "B BAD", "C BAD", "D BAD", "Z OK"],
    ),
    // A line other than DONE while idling is answered untagged (it has no tag: it is not
    // a command), and the IDLE goes on until DONE (RFC 9051 6.3.13).
    ("idle-garbage", &["+", "* BAD", "I OK", "Z OK"]),
    // The syntax of the extensions parsed by the patched imap-codec (vendor/PATCHES.md):
    // SEARCH RETURN (RFC 4731: an unterminated or unknown option, options without
    // parentheses, no criteria, RETURN after CHARSET; RFC 5182 4: `$` is a whole
    // sequence set, not a member of a list or a range end, and SAVED is no option)...
    (
        "esearch-return",
        &[
            "A BAD", "B BAD", "C BAD", "D BAD", "E BAD", "F BAD", "G BAD", "H BAD", "I BAD",
            "J BAD", "Z OK",
        ],
    ),
    // ... the extended LIST (RFC 5258 3.1: RECURSIVEMATCH alone, unknown options, an
    // empty pattern list; RFC 5819: STATUS without items or with an unknown one)...
    (
        "list-extended",
        &[
            "A BAD", "B BAD", "C BAD", "D BAD", "E BAD", "F BAD", "G BAD", "H BAD", "I BAD",
            "J BAD", "Z OK",
        ],
    ),
    // ... and the OBJECTID items (RFC 8474) and STATUS APPENDLIMIT (RFC 7889) misspelt or
    // misplaced.
    (
        "objectid",
        &["A BAD", "B BAD", "C BAD", "D BAD", "E BAD", "F BAD", "Z OK"],
    ),
];

fn corpus_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/imap_malformed"))
}

/// A server on a local directory with `alice@example.org` and [`LIMIT`]; `None`: skip.
fn server(test: &str) -> Option<MailServer> {
    let mut server = MailServer::create(test, Backend::Local, &["alice@example.org"])?;
    // Top-level keys come before the config's `[kdf]` table.
    let config = std::fs::read_to_string(server.config_path()).expect("read the config");
    std::fs::write(
        server.config_path(),
        format!("max_message_size = {LIMIT}\n{config}"),
    )
    .expect("write the config");
    server.start();
    Some(server)
}

fn connect(server: &MailServer) -> TcpStream {
    let stream = TcpStream::connect((server.host, server.imap)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    stream
}

/// Reads until `done` holds for what was read, the connection ends, or `quiet` passes
/// without a byte after `done` held (then: more than expected would show).
fn read_until(
    stream: &mut TcpStream,
    got: &mut Vec<u8>,
    done: impl Fn(&[u8]) -> bool,
    quiet: Duration,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut done_at: Option<Instant> = None;
    let mut buf = [0u8; 65536];
    while Instant::now() < deadline {
        if done_at.is_none() && done(got) {
            done_at = Some(Instant::now());
        }
        if done_at.is_some_and(|t| t.elapsed() >= quiet) {
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

/// The response lines [`CASES`] compares: "TAG STATUS" or "+".
fn statuses(transcript: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(transcript);
    let mut out = Vec::new();
    for line in text.split("\r\n") {
        if line.starts_with('+') {
            out.push("+".to_string());
            continue;
        }
        let mut words = line.split(' ');
        let (Some(tag), Some(status)) = (words.next(), words.next()) else {
            continue;
        };
        if !matches!(status, "OK" | "NO" | "BAD" | "BYE")
            || (tag == "*" && status == "OK")
            || tag == "L"
            || tag == "S"
        {
            continue;
        }
        out.push(format!("{tag} {status}"));
    }
    out
}

/// A new connection: greeting, then NOOP answered OK.
fn still_serving(server: &MailServer, after: &str) {
    let mut stream = connect(server);
    let mut got = Vec::new();
    read_until(
        &mut stream,
        &mut got,
        |g| g.ends_with(b"\r\n"),
        Duration::ZERO,
    );
    assert!(
        got.starts_with(b"* OK"),
        "no greeting after {after}: {:?}\n{}",
        String::from_utf8_lossy(&got),
        server.logs()
    );
    stream.write_all(b"N NOOP\r\n").expect("send NOOP");
    got.clear();
    read_until(
        &mut stream,
        &mut got,
        |g| g.ends_with(b"\r\n"),
        Duration::ZERO,
    );
    assert!(
        got.starts_with(b"N OK"),
        "NOOP on a new connection after {after}: {:?}\n{}",
        String::from_utf8_lossy(&got),
        server.logs()
    );
}

#[test]
fn malformed_command_corpus() {
    let Some(mut server) = server("malformed_command_corpus") else {
        return;
    };
    let mut files: Vec<String> = std::fs::read_dir(corpus_dir())
        .expect("the corpus folder")
        .map(|e| {
            e.expect("corpus entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    files.sort();
    for file in &files {
        let name = file.strip_suffix(".imap").unwrap_or(file);
        assert!(
            CASES.iter().any(|(n, _)| *n == name),
            "{file} is in the corpus but not in CASES"
        );
    }
    for (name, expected) in CASES {
        let input = std::fs::read(corpus_dir().join(format!("{name}.imap")))
            .unwrap_or_else(|e| panic!("{name}.imap: {e}"));
        let mut stream = connect(&server);
        let mut got = Vec::new();
        read_until(
            &mut stream,
            &mut got,
            |g| g.ends_with(b"\r\n"),
            Duration::ZERO,
        );
        // Sent at once: the server must take what a client pipelines, literals included.
        stream.write_all(&input).expect("send the input");
        let want = expected.len();
        read_until(
            &mut stream,
            &mut got,
            |g| statuses(g).len() >= want,
            Duration::from_millis(300),
        );
        let statuses = statuses(&got);
        assert_eq!(
            &statuses,
            expected,
            "{name}: responses\n{}\n{}",
            String::from_utf8_lossy(&got),
            server.logs()
        );
        drop(stream);
        still_serving(&server, name);
        assert!(server.alive(), "the server exited after {name}");
    }
}

/// A command line longer than the largest command (the literal limit plus 64 KiB)
/// without a literal: BAD (no [TOOBIG]: nothing was appended), and the connection reads
/// on after its end. The server keeps at most the limit of it.
#[test]
fn overlong_line_is_bad() {
    let Some(mut server) = server("overlong_line_is_bad") else {
        return;
    };
    let mut stream = connect(&server);
    let mut got = Vec::new();
    read_until(
        &mut stream,
        &mut got,
        |g| g.ends_with(b"\r\n"),
        Duration::ZERO,
    );
    let mut input = b"A NOOP ".to_vec();
    input.resize(input.len() + 2 * LIMIT, b'x');
    input.extend_from_slice(b"\r\nZ NOOP\r\n");
    stream.write_all(&input).expect("send");
    read_until(
        &mut stream,
        &mut got,
        |g| statuses(g).len() >= 2,
        Duration::from_millis(300),
    );
    assert_eq!(
        statuses(&got),
        ["A BAD", "Z OK"],
        "{}",
        String::from_utf8_lossy(&got)
    );
    still_serving(&server, "an overlong line");
    assert!(server.alive());
}

/// Resident memory of `pid` in KiB (Linux).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// LITERAL+ announcing 4 GiB, then 64 MiB of it streamed: the server reads it without
/// keeping it (its memory grows by less than the 64 MiB sent), answers nothing before the
/// literal ends, and serves other connections meanwhile.
#[test]
fn huge_literal_plus_memory_is_bounded() {
    let Some(mut server) = server("huge_literal_plus_memory_is_bounded") else {
        return;
    };
    let pid = server.pid().expect("running");
    let mut stream = connect(&server);
    let mut got = Vec::new();
    read_until(
        &mut stream,
        &mut got,
        |g| g.ends_with(b"\r\n"),
        Duration::ZERO,
    );
    stream
        .write_all(b"L LOGIN alice@example.org \"correct horse battery staple\"\r\n")
        .expect("login");
    read_until(
        &mut stream,
        &mut got,
        |g| g.ends_with(b"\r\n"),
        Duration::ZERO,
    );
    let before = rss_kib(pid);
    stream
        .write_all(b"A APPEND INBOX {4294967295+}\r\n")
        .expect("announce");
    let chunk = vec![b'x'; 1 << 20];
    stream
        .set_write_timeout(Some(Duration::from_secs(30)))
        .expect("write timeout");
    for _ in 0..64 {
        stream.write_all(&chunk).expect("stream the literal");
    }
    still_serving(&server, "64 MiB of a 4 GiB LITERAL+");
    let after = rss_kib(pid);
    assert!(
        after < before + 32 * 1024,
        "the server's memory grew from {before} KiB to {after} KiB while reading 64 MiB \
         of a refused literal"
    );
    got.clear();
    read_until(&mut stream, &mut got, |g| !g.is_empty(), Duration::ZERO);
    assert!(
        statuses(&got).is_empty(),
        "an answer before the literal ended: {:?}",
        String::from_utf8_lossy(&got)
    );
    drop(stream);
    still_serving(&server, "a closed 4 GiB LITERAL+");
    assert!(server.alive());
}
