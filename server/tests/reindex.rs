//! `mailvault reindex` (issue 14, point 1): the text index built for mail stored without
//! it. A Maildir imported with `--no-index` (no text sealed at delivery) is indexed by
//! `reindex`, which is killed with SIGKILL after its first step and run again: the second
//! run goes on from what the first indexed (resumable by construction: the state is what
//! the index covers), and over IMAP `SEARCH BODY` then answers exactly.

mod peers;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use peers::{Backend, MailServer, BIN, PASSWORD};

const USER: &str = "alice@example.org";

/// Messages imported.
const N: usize = 3000;

/// A Maildir of `N` messages under `dir`: message `i` has the word `w{i % 10}x`, and
/// message 1234 also `uniquemarkerword`.
fn maildir(dir: &Path) -> std::path::PathBuf {
    let maildir = dir.join("Maildir");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).expect("a Maildir");
    }
    for i in 0..N {
        let extra = if i == 1234 { " uniquemarkerword" } else { "" };
        let body = format!(
            "From: a@example.org\nSubject: message {i}\n\n{}w{}x{extra}\n",
            "text of the message\n".repeat(20),
            i % 10
        );
        std::fs::write(
            maildir.join("cur").join(format!("{i}.M{i}P1.host:2,S")),
            body,
        )
        .expect("a message file");
    }
    maildir
}

/// `mailvault reindex` for `USER`, with `args`.
fn reindex(server: &MailServer, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["reindex", "--config"])
        .arg(server.config_path())
        .args(["--account", USER, "--password-file"])
        .arg(server.dir.path().join("password"))
        .args(args)
        .envs(server.env().iter().cloned())
        .stdin(Stdio::null());
    cmd
}

/// One IMAP session: sends each command, returns the untagged lines of each.
fn imap(port: u16, commands: &[&str]) -> Vec<Vec<String>> {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to IMAP");
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    reader.read_line(&mut line).expect("greeting");
    assert!(line.starts_with("* OK"), "greeting {line:?}");
    let mut out = Vec::new();
    for (n, command) in commands.iter().enumerate() {
        let tag = format!("t{n}");
        (&stream)
            .write_all(format!("{tag} {command}\r\n").as_bytes())
            .expect("send");
        let mut untagged = Vec::new();
        loop {
            line.clear();
            reader.read_line(&mut line).expect("a reply");
            assert!(!line.is_empty(), "connection closed after {command}");
            if let Some(rest) = line.strip_prefix(&format!("{tag} ")) {
                assert!(rest.starts_with("OK"), "{command}: {line}");
                break;
            }
            untagged.push(line.trim_end().to_string());
        }
        out.push(untagged);
    }
    out
}

/// The numbers of a `* SEARCH` reply among `lines`.
fn found(lines: &[String]) -> Vec<u32> {
    lines
        .iter()
        .find_map(|l| l.strip_prefix("* SEARCH"))
        .map(|rest| {
            rest.split_whitespace()
                .map(|n| n.parse().expect("a number"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_reindex_killed_after_its_first_step_resumes_and_search_answers_exactly() {
    const TEST: &str = "a_reindex_killed_after_its_first_step_resumes_and_search_answers_exactly";
    let Some(mut server) = MailServer::create(TEST, Backend::Local, &[USER]) else {
        return;
    };
    let sources = tempfile::tempdir().expect("a folder");
    let maildir = maildir(sources.path());
    let out = server.account_job(
        &[
            "import",
            "maildir",
            &maildir.to_string_lossy(),
            "--no-index",
            "--quiet",
        ],
        USER,
    );
    assert!(
        out.status.success(),
        "import: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Killed once its progress lines say a step is done, and before the last.
    let mut child = reindex(&server, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mailvault reindex");
    let stderr = child.stderr.take().expect("its stderr");
    let mut seen = None;
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        eprintln!("{TEST}: {line}");
        let covered = line
            .strip_prefix("reindex: ")
            .and_then(|l| l.split(' ').next())
            .and_then(|d| d.parse::<usize>().ok());
        if let Some(covered) = covered.filter(|c| *c > 0) {
            seen = Some(covered);
            break;
        }
    }
    let running = child.try_wait().expect("its status").is_none();
    let _ = child.kill();
    let status = child.wait().expect("its status");
    let seen = seen.expect("a progress line after a step");
    eprintln!("{TEST}: killed ({status}) at {seen} of {N}");
    assert!(running, "the kill must land mid-job");
    assert!(seen < N, "{seen}");

    // Run again: it goes on from what the killed run indexed.
    let out = reindex(&server, &["--json", "--quiet"])
        .output()
        .expect("run mailvault reindex");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON");
    eprintln!("{TEST}: second run {report}");
    let before = report["indexed_before"].as_u64().expect("indexed_before") as usize;
    let indexed = report["indexed"].as_u64().expect("indexed") as usize;
    assert_eq!(report["emails"].as_u64(), Some(N as u64), "{report}");
    assert!(
        before >= seen,
        "resumed: {before} indexed before, {seen} seen"
    );
    assert_eq!(before + indexed, N, "{report}");
    // A third run has nothing to do.
    let out = reindex(&server, &["--json", "--quiet"])
        .output()
        .expect("run mailvault reindex");
    let report: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).expect("JSON");
    assert_eq!(report["indexed"].as_u64(), Some(0), "{report}");

    server.start();
    let replies = imap(
        server.imap,
        &[
            &format!("LOGIN \"{USER}\" \"{PASSWORD}\""),
            "SELECT INBOX",
            "SEARCH BODY w3x",
            "SEARCH BODY niquemarkerwor",
            "SEARCH TEXT \"message 1234\"",
            "SEARCH NOT BODY w3x",
            "SEARCH BODY absentword",
        ],
    );
    let exists = replies[1]
        .iter()
        .find_map(|l| l.strip_suffix(" EXISTS"))
        .and_then(|l| l.strip_prefix("* "))
        .and_then(|n| n.parse::<usize>().ok());
    assert_eq!(exists, Some(N), "{:?}", replies[1]);
    let w3 = found(&replies[2]);
    assert_eq!(w3.len(), N / 10, "SEARCH BODY w3x");
    let unique = found(&replies[3]);
    assert_eq!(unique.len(), 1, "SEARCH BODY niquemarkerwor");
    assert_eq!(
        found(&replies[4]),
        unique,
        "the subject of the same message"
    );
    assert_eq!(found(&replies[5]).len(), N - N / 10, "SEARCH NOT BODY w3x");
    assert!(found(&replies[6]).is_empty());
}
