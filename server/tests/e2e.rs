//! End to end: the `mailvault` binary cargo built, started on free local ports over a
//! local-directory store (and over Garage and moto_server when scripts/s3-servers.sh
//! started them), driven by Python's own `smtplib.LMTP` and `imaplib`
//! (`tests/e2e_clients.py`): deliveries, an unknown recipient, byte-exact fetches,
//! flags, APPEND, EXPUNGE, malformed commands.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mailvault");

/// Kills the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("local address")
        .port()
}

/// Environment of every `mailvault` command of one test (the S3 settings).
type Env = Vec<(String, String)>;

fn run(env: &Env, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(args)
        .envs(env.iter().cloned())
        .output()
        .expect("run mailvault");
    assert!(
        out.status.success(),
        "mailvault {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

fn wait_for_port(port: u16, server: &mut Server, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = server.0.try_wait() {
            panic!(
                "the server exited ({status}) before listening on {port}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn python() -> Option<&'static str> {
    Command::new("python3")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| "python3")
}

#[test]
fn imap_and_lmtp_with_python_clients() {
    e2e("store", Vec::new());
}

#[test]
fn imap_and_lmtp_with_python_clients_on_garage() {
    if let Some(env) = s3_env("GARAGE") {
        e2e("s3://", env);
    }
}

#[test]
fn imap_and_lmtp_with_python_clients_on_moto() {
    if let Some(env) = s3_env("MOTO") {
        e2e("s3://", env);
    }
}

/// The server's S3 settings (`AWS_*`, as `open_store("s3://bucket")` reads them) from the
/// `MAILVAULT_S3_<NAME>_*` variables of scripts/s3-servers.sh; `None` (skip) when unset,
/// a failure when `MAILVAULT_REQUIRE_S3=1`.
fn s3_env(name: &str) -> Option<Env> {
    let var = |field: &str| std::env::var(format!("MAILVAULT_S3_{name}_{field}")).ok();
    let Some(endpoint) = var("ENDPOINT") else {
        assert!(
            std::env::var("MAILVAULT_REQUIRE_S3").as_deref() != Ok("1"),
            "MAILVAULT_REQUIRE_S3=1 but MAILVAULT_S3_{name}_ENDPOINT is not set"
        );
        eprintln!("SKIPPED {name}: MAILVAULT_S3_{name}_ENDPOINT is not set");
        return None;
    };
    let need = |field: &str| var(field).unwrap_or_else(|| panic!("MAILVAULT_S3_{name}_{field}"));
    Some(vec![
        ("AWS_ENDPOINT".into(), endpoint),
        ("AWS_ALLOW_HTTP".into(), "true".into()),
        ("AWS_REGION".into(), need("REGION")),
        ("AWS_ACCESS_KEY_ID".into(), need("ACCESS_KEY_ID")),
        ("AWS_SECRET_ACCESS_KEY".into(), need("SECRET_ACCESS_KEY")),
        ("MAILVAULT_E2E_BUCKET".into(), need("BUCKET")),
    ])
}

/// The whole exchange on a store: `store` is a path relative to the test's folder, or
/// `s3://` for the bucket in `env`.
fn e2e(store: &str, env: Env) {
    let store = match store {
        "s3://" => {
            let bucket = env
                .iter()
                .find(|(k, _)| k == "MAILVAULT_E2E_BUCKET")
                .map(|(_, v)| v.clone())
                .expect("a bucket");
            format!("s3://{bucket}")
        }
        local => local.to_string(),
    };
    let Some(python) = python() else {
        eprintln!("SKIPPED: python3 is not installed (the end-to-end clients are Python's)");
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let (imap_port, lmtp_port) = (free_port(), free_port());
    let config = dir.path().join("mailvault.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"{store}\"\n\
             directory = \"directory\"\n\
             imap_listen = \"127.0.0.1:{imap_port}\"\n\
             lmtp_listen = \"127.0.0.1:{lmtp_port}\"\n\
             max_message_size = 1048576\n\
             [kdf]\nm_kib = 1024\nt = 1\np = 1\n"
        ),
    )
    .expect("write the config");
    let config = config.to_str().expect("UTF-8 path");
    let init = run(&env, &["init", "--config", config]);
    assert!(init.contains("deployment"), "init said: {init}");
    // A second init refuses to overwrite the deployment.
    let again = Command::new(BIN)
        .args(["init", "--config", config])
        .envs(env.iter().cloned())
        .output()
        .expect("run mailvault");
    assert!(!again.status.success(), "a second init must refuse");

    let password_file = dir.path().join("password");
    std::fs::write(&password_file, "correct horse battery staple\n").expect("password file");
    let password_file = password_file.to_str().expect("UTF-8 path");
    let mut ids = Vec::new();
    for name in ["alice@example.org", "Bob@Example.org"] {
        let account = run(
            &env,
            &[
                "account",
                "create",
                "--config",
                config,
                "--name",
                name,
                "--password-file",
                password_file,
            ],
        );
        assert_eq!(
            account.trim().len(),
            32,
            "an account id in hex: {account:?}"
        );
        ids.push(account);
    }
    assert_ne!(ids[0], ids[1], "two accounts");
    // A name is taken once, whatever its case.
    let taken = Command::new(BIN)
        .args([
            "account",
            "create",
            "--config",
            config,
            "--name",
            "ALICE@example.org",
        ])
        .args(["--password-file", password_file])
        .envs(env.iter().cloned())
        .output()
        .expect("run mailvault");
    assert!(!taken.status.success(), "a taken name must be refused");

    let log = dir.path().join("server.log");
    let mut server = Server(
        Command::new(BIN)
            .args(["serve", "--config", config])
            .env("RUST_LOG", "info")
            .envs(env.iter().cloned())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start the server"),
    );
    wait_for_port(imap_port, &mut server, &log);
    wait_for_port(lmtp_port, &mut server, &log);
    // A second server process on the same store and directory, LMTP only: what it
    // delivers reaches the first one's IDLE connections through the store.
    let lmtp_port_b = free_port();
    let config_b = dir.path().join("mailvault-b.toml");
    std::fs::write(
        &config_b,
        std::fs::read_to_string(config)
            .expect("read the config")
            .lines()
            .filter(|l| !l.starts_with("imap_listen") && !l.starts_with("lmtp_listen"))
            .map(|l| format!("{l}\n"))
            .collect::<String>()
            .replacen(
                "\n",
                &format!("\nlmtp_listen = \"127.0.0.1:{lmtp_port_b}\"\n"),
                1,
            ),
    )
    .expect("write the second config");
    let log_b = dir.path().join("server-b.log");
    let mut server_b = Server(
        Command::new(BIN)
            .args(["serve", "--config", config_b.to_str().expect("UTF-8 path")])
            .env("RUST_LOG", "info")
            .envs(env.iter().cloned())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_b).expect("log file"))
            .spawn()
            .expect("start the second server"),
    );
    wait_for_port(lmtp_port_b, &mut server_b, &log_b);

    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/mail-parser/rfc");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/e2e_clients.py");
    let (client_out, client_err) = (dir.path().join("client.out"), dir.path().join("client.err"));
    let mut client = Command::new(python)
        .arg(&script)
        .arg(imap_port.to_string())
        .arg(lmtp_port.to_string())
        .arg("alice@example.org")
        .arg("correct horse battery staple")
        .arg("bob@example.org")
        .arg("correct horse battery staple")
        .arg(corpus.join("000.eml"))
        .arg(corpus.join("008.eml"))
        .arg(corpus.join("002.eml"))
        .env("E2E_LMTP_PORT_B", lmtp_port_b.to_string())
        .stdout(std::fs::File::create(&client_out).expect("client output file"))
        .stderr(std::fs::File::create(&client_err).expect("client error file"))
        .spawn()
        .expect("run python3");
    // The script bounds each reply (60 s); this bounds the whole run.
    let deadline = Instant::now() + Duration::from_secs(600);
    let status = loop {
        if let Some(status) = client.try_wait().expect("client status") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = client.kill();
            let _ = client.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    println!(
        "{}",
        std::fs::read_to_string(&client_out).unwrap_or_default()
    );
    eprintln!(
        "{}",
        std::fs::read_to_string(&client_err).unwrap_or_default()
    );
    let alive = server.0.try_wait().expect("server status").is_none();
    let passed = status.is_some_and(|s| s.success());
    if !passed || !alive {
        eprintln!(
            "server log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    assert!(
        passed,
        "the Python clients failed: {status:?} (None: timed out)"
    );
    assert!(alive, "the server must survive the session");
    // Connections of one account share the account's one handle: a login while another
    // connection of the account is open finds it open.
    let log_text = strip_ansi(&std::fs::read_to_string(&log).unwrap_or_default());
    assert!(
        log_text
            .lines()
            .any(|l| l.contains("IMAP login") && l.contains("shared=true")),
        "no login shared an open account handle:\n{log_text}"
    );

    if !env.is_empty() {
        return;
    }
    // What reached the store is sealed: no subject, address or body line of the
    // delivered messages in any stored byte.
    let mut files = Vec::new();
    collect_files(&dir.path().join("store"), &mut files);
    assert!(!files.is_empty(), "the store holds objects");
    for needle in [
        &b"alice@example.org"[..],
        b"bob@example.org",
        b"A multipart example",
        b".leading dot",
    ] {
        for file in &files {
            let bytes = std::fs::read(file).expect("read a stored object");
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} holds {:?} in clear",
                file.display(),
                String::from_utf8_lossy(needle)
            );
        }
    }
}

/// The log without its colour escapes (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read a store folder") {
        let path = entry.expect("a folder entry").path();
        if path.is_dir() {
            collect_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// A response in two writes (`* SEARCH ...`, then the tagged `OK`) must not wait for the
/// client's acknowledgement of the first: with Nagle's algorithm on, the second write
/// waits for the ACK the client delays (40 ms on Linux), and every such command took
/// 40 ms more (a repeated SEARCH over 10 000 messages measured 0.048 s, of which 40 ms
/// was this wait). Commands answered in one response (NOOP) were never delayed.
#[test]
fn responses_in_several_writes_are_not_delayed() {
    use std::io::{BufRead, BufReader, Write};

    let dir = tempfile::tempdir().expect("temp dir");
    let (imap_port, lmtp_port) = (free_port(), free_port());
    let config = dir.path().join("mailvault.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"store\"\n\
             directory = \"directory\"\n\
             imap_listen = \"127.0.0.1:{imap_port}\"\n\
             lmtp_listen = \"127.0.0.1:{lmtp_port}\"\n\
             [kdf]\nm_kib = 1024\nt = 1\np = 1\n"
        ),
    )
    .expect("write the config");
    let config = config.to_str().expect("UTF-8 path");
    run(&Vec::new(), &["init", "--config", config]);
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, "pw\n").expect("password file");
    run(
        &Vec::new(),
        &[
            "account",
            "create",
            "--config",
            config,
            "--name",
            "alice@example.org",
            "--password-file",
            password_file.to_str().expect("UTF-8 path"),
        ],
    );
    let log = dir.path().join("server.log");
    let mut server = Server(
        Command::new(BIN)
            .args(["serve", "--config", config])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start the server"),
    );
    wait_for_port(imap_port, &mut server, &log);

    let stream = TcpStream::connect(("127.0.0.1", imap_port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    let mut line = String::new();
    // Sends `command` as tag `tag`; reads up to the tagged answer, which must be OK.
    let mut command = |tag: &str, command: &str| {
        writer
            .write_all(format!("{tag} {command}\r\n").as_bytes())
            .expect("write");
        loop {
            line.clear();
            assert!(reader.read_line(&mut line).expect("read") > 0, "closed");
            if line.starts_with(&format!("{tag} ")) {
                assert!(line.starts_with(&format!("{tag} OK")), "{command}: {line}");
                return;
            }
        }
    };
    command("g", "NOOP");
    command("l", "LOGIN alice@example.org pw");
    command("s", "SELECT INBOX");
    // Past the first round trips (Linux acknowledges those at once: quick-ack mode).
    let mut took = Vec::new();
    for n in 0..30 {
        let started = Instant::now();
        command(&format!("a{n}"), "SEARCH ALL");
        took.push(started.elapsed());
    }
    took.sort();
    let median = took[took.len() / 2];
    assert!(
        median < Duration::from_millis(25),
        "SEARCH round trips (sorted): {took:?}"
    );
}
