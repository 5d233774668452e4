//! `mailvault gc` (issue 15, "Verify and repair"): after a delivery loop whose server is
//! killed with SIGKILL several times mid-delivery, what the kills left (bodies whose
//! envelope was never written, staging files of uploads cut short, index objects no
//! head needs) is counted, `gc` removes it while a server runs on the same store, and
//! every message acknowledged with 250 is still there and reads whole (IMAP with
//! Python's `imaplib`, and `verify --deep`).

mod peers;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use peers::{tools, Backend, MailServer, BIN};

const USER: &str = "alice@example.org";

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn is_staging(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.rsplit_once('#'))
        .is_some_and(|(_, d)| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

/// Delivers messages over LMTP until the connection breaks; each subject acknowledged
/// with 250 is added to `acked`.
fn delivery_loop(port: u16, round: usize, acked: Arc<Mutex<Vec<String>>>) {
    let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut writer = stream;
    let mut line = String::new();
    let mut reply = |reader: &mut BufReader<TcpStream>| -> Option<String> {
        loop {
            line.clear();
            if reader.read_line(&mut line).ok()? == 0 {
                return None;
            }
            if line.len() >= 4 && &line[3..4] == " " {
                return Some(line.clone());
            }
        }
    };
    reply(&mut reader);
    if writer.write_all(b"LHLO test\r\n").is_err() || reply(&mut reader).is_none() {
        return;
    }
    for i in 0.. {
        let subject = format!("round {round} message {i}");
        let body = format!(
            "From: a@example.org\r\nTo: {USER}\r\nSubject: {subject}\r\n\r\n{}",
            format!("{subject}: a line of text of the message body\r\n").repeat(2000 + i % 7 * 500)
        );
        let rcpt = format!("RCPT TO:<{USER}>\r\n");
        let steps: [&[u8]; 3] = [
            b"MAIL FROM:<a@example.org>\r\n",
            rcpt.as_bytes(),
            b"DATA\r\n",
        ];
        for step in steps {
            if writer.write_all(step).is_err() || reply(&mut reader).is_none() {
                return;
            }
        }
        if writer.write_all(body.as_bytes()).is_err() || writer.write_all(b"\r\n.\r\n").is_err() {
            return;
        }
        match reply(&mut reader) {
            Some(r) if r.starts_with("250") => acked.lock().unwrap().push(subject),
            _ => return,
        }
    }
}

/// Logs in over IMAP again and again (each login imports the deliveries waiting: index
/// commits) until the server is gone.
fn login_loop(port: u16) {
    loop {
        let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) else {
            return;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
        let Ok(clone) = stream.try_clone() else {
            return;
        };
        let mut reader = BufReader::new(clone);
        let mut writer = stream;
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let login = format!(
            "a LOGIN \"{USER}\" \"{}\"\r\nb SELECT INBOX\r\nc LOGOUT\r\n",
            peers::PASSWORD
        );
        if writer.write_all(login.as_bytes()).is_err() {
            return;
        }
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) if line.starts_with("c ") => break,
                Ok(_) => {}
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn gc_json(server: &MailServer, args: &[&str]) -> serde_json::Value {
    let out = Command::new(BIN)
        .arg("gc")
        .args(args)
        .arg("--config")
        .arg(server.config_path())
        .arg("--json")
        .stdin(Stdio::null())
        .output()
        .expect("run gc");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

fn verify_json(server: &MailServer, args: &[&str]) -> (i32, serde_json::Value) {
    let out = Command::new(BIN)
        .arg("verify")
        .args(args)
        .arg("--config")
        .arg(server.config_path())
        .args(["--json", "--quiet"])
        .stdin(Stdio::null())
        .output()
        .expect("run verify");
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
        }),
    )
}

fn orphans(report: &serde_json::Value, kind: &str) -> usize {
    report["accounts"][0]["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["damage"] == "orphaned" && f["kind"] == kind)
        .count()
}

#[test]
fn gc_removes_what_killed_deliveries_left_and_keeps_every_acknowledged_message() {
    const TEST: &str =
        "gc_removes_what_killed_deliveries_left_and_keeps_every_acknowledged_message";
    let Some(python) = tools(TEST, &["python"]).map(|mut t| t.remove(0)) else {
        return;
    };
    let Some(mut server) = MailServer::create(TEST, Backend::Local, &[USER]) else {
        return;
    };
    let pw = server.dir.path().join("password");
    let pw = pw.to_str().expect("UTF-8").to_owned();
    let store = PathBuf::from(&server.store);
    let acked = Arc::new(Mutex::new(Vec::new()));
    let rounds = 8;
    for round in 0..rounds {
        server.start();
        let port = server.lmtp;
        let mut loops: Vec<_> = (0..3)
            .map(|k| {
                let acked = acked.clone();
                std::thread::spawn(move || delivery_loop(port, round * 3 + k, acked))
            })
            .collect();
        let imap = server.imap;
        loops.push(std::thread::spawn(move || login_loop(imap)));
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        std::thread::sleep(Duration::from_millis(700 + u64::from(nanos % 900)));
        server.kill();
        for l in loops {
            l.join().expect("delivery loop");
        }
    }
    let acked: Vec<String> = acked.lock().unwrap().clone();
    assert!(acked.len() > 10, "{} acknowledged", acked.len());
    let all = files(&store);
    let natural_staging = all.iter().filter(|p| is_staging(p)).count();
    // One staging file for certain (a kill lands mid-upload only sometimes).
    let a_body = all
        .iter()
        .find(|p| p.to_string_lossy().contains("/b/") && !is_staging(p))
        .expect("a body")
        .clone();
    let planted = PathBuf::from(format!("{}#7", a_body.display()));
    std::fs::copy(&a_body, &planted).expect("a staging file");
    std::thread::sleep(Duration::from_secs(3));

    // Before: what the kills left, as verify sees it (grace 2 s).
    let (_, before) = verify_json(
        &server,
        &["--account", USER, "--password-file", &pw, "--grace", "2"],
    );
    let orphan_bodies = orphans(&before, "blob");
    let orphan_index = orphans(&before, "segment") + orphans(&before, "manifest");
    let index_before = all
        .iter()
        .filter(|p| p.to_string_lossy().contains("/i/"))
        .count();
    eprintln!(
        "{} acknowledged in {rounds} killed rounds; left: {orphan_bodies} orphan bodies, \
         {natural_staging} staging files (+1 planted), {index_before} index objects \
         ({orphan_index} orphaned)",
        acked.len()
    );

    // A server runs on the store while gc removes; it keeps serving.
    server.start();
    let summary = gc_json(
        &server,
        &["--account", USER, "--password-file", &pw, "--grace", "2"],
    );
    let s = &summary["accounts"][0];
    assert_eq!(
        s["staging_files"].as_array().unwrap().len(),
        natural_staging + 1,
        "{summary:#}"
    );
    assert!(!planted.exists());
    assert!(files(&store).iter().all(|p| !is_staging(p)));
    let removed_bodies = s["orphans"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["kind"] == "blob")
        .count();
    assert_eq!(removed_bodies, orphan_bodies, "{summary:#}");
    let (_, after) = verify_json(
        &server,
        &["--account", USER, "--password-file", &pw, "--grace", "2"],
    );
    assert_eq!(
        after["accounts"][0]["findings"],
        serde_json::json!([]),
        "{after:#}"
    );
    let index_after = files(&store)
        .iter()
        .filter(|p| p.to_string_lossy().contains("/i/"))
        .count();
    eprintln!(
        "gc: {removed_bodies} bodies, {} staging files, index objects {index_before} -> \
         {index_after} ({} by the index's collection)",
        natural_staging + 1,
        s["index_objects"]
    );
    assert!(index_after <= index_before);

    // Every acknowledged message is there, over IMAP from the running server, and every
    // body reads whole.
    let script = format!(
        "import imaplib,sys\n\
         m=imaplib.IMAP4('127.0.0.1',{port})\n\
         m.login('{USER}','{password}')\n\
         m.select('INBOX')\n\
         t,d=m.fetch('1:*','(BODY.PEEK[HEADER.FIELDS (SUBJECT)])')\n\
         for x in d:\n\
         \x20   if isinstance(x,tuple): print(x[1].decode().strip())\n",
        port = server.imap,
        password = peers::PASSWORD
    );
    let out = Command::new(&python)
        .args(["-c", &script])
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8_lossy(&out.stdout);
    for subject in &acked {
        assert!(
            listed.lines().any(|l| l == format!("Subject: {subject}")),
            "{subject} is gone after gc"
        );
    }
    let (code, deep) = verify_json(
        &server,
        &["--account", USER, "--password-file", &pw, "--deep"],
    );
    assert_eq!(code, 0, "{deep:#}");
}
