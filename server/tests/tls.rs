//! IMAP over TLS with programs nobody here wrote (issue 13, "STARTTLS and IMAPS with a
//! test certificate"): a throwaway self-signed certificate from `openssl req`, then
//! `curl --ssl-reqd imap://` (STARTTLS) and `imaps://`, `openssl s_client -starttls imap`
//! and `-connect` (IMAPS), and Python's `imaplib` (`IMAP4_SSL`, `starttls()`,
//! `authenticate('PLAIN')`, SASL-IR, the refusals, LOGINDISABLED, the STARTTLS command
//! injection) each log in, SELECT and FETCH a delivered message byte for byte over TLS.
//! Bad TLS files stop `mailvault serve` at start with an error naming them.
//!
//! The IMAP listeners are on 127.0.0.2 and the clients connect from 127.0.0.1: not the
//! server's own address, so a password is refused before STARTTLS.

mod peers;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use peers::{corpus, crlf, output, run_ok, tools, Backend, MailServer, BIN, PASSWORD};

const ALICE: &str = "alice@example.org";

/// A started TLS server holding one delivered message: the largest of the corpus (several
/// TLS records), as IMAP returns it (CRLF line ends).
fn server_with_message(test: &str, openssl: &Path) -> (MailServer, Vec<u8>) {
    let mut server =
        MailServer::create_tls(test, Backend::Local, &[ALICE], openssl).expect("local backend");
    server.start();
    let (name, message) = corpus()
        .into_iter()
        .max_by_key(|(_, m)| m.len())
        .expect("a corpus message");
    lmtp_deliver(server.lmtp, ALICE, &message);
    eprintln!("{test}: delivered {name} ({} bytes)", message.len());
    (server, crlf(&message))
}

/// One message over LMTP (a minimal client: the replies are checked, the message
/// dot-stuffed).
fn lmtp_deliver(port: u16, to: &str, message: &[u8]) {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to LMTP");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    let mut reply = |expect: &str| {
        let mut last = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("an LMTP reply");
            assert!(line.starts_with(expect), "expected {expect}, got {line:?}");
            if line.as_bytes().get(3) != Some(&b'-') {
                break;
            }
            last = line;
        }
        last
    };
    reply("220");
    let mut send = |bytes: &[u8], expect: &str| {
        writer.write_all(bytes).expect("write to LMTP");
        reply(expect);
    };
    send(b"LHLO tls.test\r\n", "250");
    send(b"MAIL FROM:<sender@example.net>\r\n", "250");
    send(format!("RCPT TO:<{to}>\r\n").as_bytes(), "250");
    send(b"DATA\r\n", "354");
    let mut data = Vec::new();
    for line in crlf(message).split_inclusive(|&b| b == b'\n') {
        if line.first() == Some(&b'.') {
            data.push(b'.');
        }
        data.extend_from_slice(line);
    }
    data.extend_from_slice(b".\r\n");
    send(&data, "250");
    send(b"QUIT\r\n", "221");
}

#[test]
fn tls_python_imaplib() {
    let Some(tools) = tools("tls_python_imaplib", &["openssl", "python"]) else {
        return;
    };
    let (server, message) = server_with_message("tls_python_imaplib", &tools[0]);
    let expected = server.dir.path().join("expected.eml");
    std::fs::write(&expected, &message).expect("write the expected message");
    let (imap, imaps) = (
        server.imap.to_string(),
        server.imaps.expect("IMAPS").to_string(),
    );
    let cert = server.cert.as_ref().expect("certificate");
    let args: [&std::ffi::OsStr; 7] = [
        server.host.as_ref(),
        imap.as_ref(),
        imaps.as_ref(),
        cert.as_os_str(),
        ALICE.as_ref(),
        PASSWORD.as_ref(),
        expected.as_os_str(),
    ];
    let stdout = peers::run_script(
        &tools[1],
        "tls_clients.py",
        &args,
        "TLS clients failed",
        || server.logs(),
    );
    // Each part of the script reported (it stops at the first failure).
    assert_eq!(stdout.lines().count(), 10, "{stdout}");
}

#[test]
fn tls_curl() {
    let Some(tools) = tools("tls_curl", &["openssl", "curl"]) else {
        return;
    };
    let (server, message) = server_with_message("tls_curl", &tools[0]);
    let cert = server.cert.clone().expect("certificate");
    let curl = |url: String, extra: &[&str]| {
        let mut cmd = Command::new(&tools[1]);
        cmd.args(["-sS", "-v", "--max-time", "30", "-u"])
            .arg(format!("{ALICE}:{PASSWORD}"))
            .arg("--cacert")
            .arg(&cert)
            .args(extra)
            .arg(url);
        output(&mut cmd)
    };
    let host = server.host;
    for (url, extra, how) in [
        (
            format!("imap://{host}:{}/INBOX;UID=1", server.imap),
            &["--ssl-reqd"][..],
            "STARTTLS",
        ),
        (
            format!(
                "imaps://{host}:{}/INBOX;UID=1",
                server.imaps.expect("IMAPS")
            ),
            &[][..],
            "IMAPS",
        ),
    ] {
        let out = curl(url, extra);
        let trace = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "curl {how}: {}\n{trace}\n{}",
            out.status,
            server.logs()
        );
        assert!(
            out.stdout == message,
            "curl {how}: fetched {} bytes, expected {}",
            out.stdout.len(),
            message.len()
        );
        // curl logs in with SASL-IR (the PLAIN response on the command line), after
        // STARTTLS on the plain port.
        assert!(trace.contains("AUTHENTICATE PLAIN "), "curl {how}: {trace}");
        if how == "STARTTLS" {
            assert!(trace.contains("STARTTLS"), "{trace}");
        }
    }
    // Without TLS: LOGINDISABLED is advertised and the password refused.
    let out = curl(format!("imap://{host}:{}/INBOX;UID=1", server.imap), &[]);
    let trace = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(67), "curl without TLS: {trace}");
    assert!(trace.contains("LOGINDISABLED"), "{trace}");
    assert!(out.stdout.is_empty());
}

/// The literal of the first `* 1 FETCH (BODY[] {n}` response in `transcript`.
fn fetched_literal(transcript: &[u8]) -> Option<&[u8]> {
    let marker = b"* 1 FETCH (BODY[] {";
    let start = transcript.windows(marker.len()).position(|w| w == marker)? + marker.len();
    let close = start + transcript[start..].iter().position(|&b| b == b'}')?;
    let n: usize = std::str::from_utf8(&transcript[start..close])
        .ok()?
        .parse()
        .ok()?;
    transcript.get(close + 3..close + 3 + n)
}

#[test]
fn tls_openssl_s_client() {
    let Some(tools) = tools("tls_openssl_s_client", &["openssl"]) else {
        return;
    };
    let (server, message) = server_with_message("tls_openssl_s_client", &tools[0]);
    let cert = server.cert.clone().expect("certificate");
    let commands = format!(
        "a CAPABILITY\r\nb LOGIN {ALICE} \"{PASSWORD}\"\r\nc SELECT INBOX\r\n\
         d FETCH 1 BODY[]\r\ne LOGOUT\r\n"
    );
    for (port, starttls) in [(server.imap, true), (server.imaps.expect("IMAPS"), false)] {
        let mut cmd = Command::new(&tools[0]);
        cmd.arg("s_client");
        if starttls {
            cmd.args(["-starttls", "imap"]);
        }
        cmd.arg("-connect")
            .arg(format!("{}:{port}", server.host))
            .arg("-CAfile")
            .arg(&cert)
            .args([
                "-verify_return_error",
                "-verify_ip",
                server.host,
                "-ign_eof",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start openssl s_client");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(commands.as_bytes())
            .expect("write the commands");
        let started = Instant::now();
        let out = child.wait_with_output().expect("openssl s_client");
        assert!(started.elapsed() < Duration::from_secs(30));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let how = if starttls { "-starttls imap" } else { "IMAPS" };
        // After LOGOUT the server sends close_notify before closing (RFC 8446 6.1);
        // without it OpenSSL 3 reports "unexpected eof while reading".
        assert!(
            !stderr.contains("unexpected eof"),
            "s_client {how}: the server closed without close_notify\n{stderr}"
        );
        assert!(
            stdout.contains("Verify return code: 0 (ok)"),
            "s_client {how}: certificate not verified\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let capability = stdout
            .lines()
            .find(|l| l.starts_with("* CAPABILITY"))
            .unwrap_or_else(|| panic!("s_client {how}: no CAPABILITY\n{stdout}"));
        // Inside TLS: no STARTTLS, no LOGINDISABLED, PLAIN offered.
        assert!(!capability.contains("STARTTLS"), "{capability}");
        assert!(!capability.contains("LOGINDISABLED"), "{capability}");
        assert!(capability.contains("AUTH=PLAIN"), "{capability}");
        for done in ["b OK", "c OK", "d OK", "e OK"] {
            assert!(
                stdout.lines().any(|l| l.starts_with(done)),
                "s_client {how}: no {done}\n{stdout}"
            );
        }
        let fetched = fetched_literal(&out.stdout)
            .unwrap_or_else(|| panic!("s_client {how}: no FETCH literal\n{stdout}"));
        assert!(
            fetched == message,
            "s_client {how}: fetched {} bytes, expected {}",
            fetched.len(),
            message.len()
        );
    }
}

/// `mailvault serve` with `extra` config lines stops at once with an error containing
/// `expect` (no panic, no listener).
fn serve_refuses(server: &MailServer, extra: &str, expect: &str) {
    let config = server.config_path();
    let base = std::fs::read_to_string(config).expect("config");
    let bad = server.dir.path().join("bad.toml");
    std::fs::write(&bad, format!("{extra}{base}")).expect("write the config");
    let started = Instant::now();
    let out = output(Command::new(BIN).args(["serve", "--config"]).arg(&bad));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "{extra}: the server started\n{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(20), "{extra}: slow");
    assert!(!stderr.contains("panicked"), "{extra}: {stderr}");
    assert!(
        stderr.contains(expect),
        "{extra}: expected {expect:?} in {stderr}"
    );
}

#[test]
fn tls_bad_files_stop_the_server() {
    let Some(tools) = tools("tls_bad_files_stop_the_server", &["openssl"]) else {
        return;
    };
    let server =
        MailServer::create("tls_bad_files", Backend::Local, &[ALICE]).expect("local backend");
    let dir = server.dir.path();
    std::fs::write(dir.join("garbage.pem"), "not a PEM file\n").expect("write");
    // A second key pair: its key does not match the first certificate.
    for name in ["one", "two"] {
        run_ok(
            Command::new(&tools[0])
                .current_dir(dir)
                .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
                .args([
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-days",
                    "1",
                    "-subj",
                ])
                .arg("/CN=localhost")
                .arg("-keyout")
                .arg(format!("{name}-key.pem"))
                .arg("-out")
                .arg(format!("{name}-cert.pem")),
        );
    }
    serve_refuses(
        &server,
        "tls_cert = \"missing.pem\"\ntls_key = \"one-key.pem\"\n",
        "missing.pem",
    );
    serve_refuses(
        &server,
        "tls_cert = \"garbage.pem\"\ntls_key = \"one-key.pem\"\n",
        "tls_cert",
    );
    serve_refuses(
        &server,
        "tls_cert = \"one-cert.pem\"\ntls_key = \"garbage.pem\"\n",
        "tls_key",
    );
    serve_refuses(
        &server,
        "tls_cert = \"one-cert.pem\"\ntls_key = \"two-key.pem\"\n",
        "two-key.pem",
    );
    serve_refuses(
        &server,
        "tls_cert = \"one-cert.pem\"\n",
        "tls_cert and tls_key go together",
    );
    serve_refuses(
        &server,
        "imaps_listen = \"127.0.0.1:1\"\n",
        "imaps_listen needs tls_cert and tls_key",
    );
    // The pair that matches starts (sanity check of the above: the files are usable).
    let config = server.config_path();
    let base = std::fs::read_to_string(config).expect("config");
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        format!("tls_cert = \"one-cert.pem\"\ntls_key = \"one-key.pem\"\n{base}"),
    )
    .expect("write");
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&good)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start");
    std::thread::sleep(Duration::from_millis(1500));
    let still_running = child.try_wait().expect("wait").is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(still_running, "the server with a matching pair stopped");
}
