//! Garbage collection on a running server (issue 13, stored size): a server whose
//! clients commit and expunge a lot keeps the account's store small, because each open
//! account's handle collects its garbage (`[gc]` in the config; the library's
//! `ShareConfig::gc_interval`), while a second server process on the same store and
//! directory logs in, reads and writes throughout, and loses nothing (the grace rule,
//! §8.6 of docs/design.md).
//!
//! The churn and the reader are Python `imaplib` sessions (`gc_churn.py`); this test
//! starts the two servers, counts the stored objects and checks what the script saw.

mod peers;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use peers::{free_port, tools, Backend, MailServer, BIN, PASSWORD};

const USER: &str = "alice@example.org";

/// A second `mailvault serve` on the same store and directory as `server`, killed on drop.
struct Second(Child);

impl Drop for Second {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_second(server: &MailServer, gc: &str) -> (Second, u16, std::path::PathBuf) {
    let dir = server.dir.path();
    let (imap, lmtp) = (free_port(), free_port());
    let config = dir.join("second.toml");
    std::fs::write(
        &config,
        format!(
            "store = \"{}\"\n\
             directory = \"{}\"\n\
             imap_listen = \"127.0.0.1:{imap}\"\n\
             lmtp_listen = \"127.0.0.1:{lmtp}\"\n\
             [kdf]\nm_kib = 1024\nt = 1\np = 1\n{gc}",
            server.store,
            dir.join("directory").display()
        ),
    )
    .expect("second config");
    let log = dir.join("second.log");
    let child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start the second server");
    let second = Second(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", imap)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the second server does not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (second, imap, log)
}

/// The one account's folder in a local store (`a/<account>`).
fn account_dir(store: &Path) -> std::path::PathBuf {
    let mut accounts: Vec<_> = std::fs::read_dir(store.join("a"))
        .expect("the store's accounts")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(accounts.len(), 1, "{accounts:?}");
    accounts.remove(0)
}

/// Runs the churn against a server collecting with `gc` (a `[gc]` table), the reader on
/// a second server that never collects; the script's report.
fn churn(test: &str, gc: &str, settle_secs: u32) -> Option<HashMap<String, u64>> {
    let python = tools(test, &["python"])?.remove(0);
    let mut server = MailServer::create(test, Backend::Local, &[USER])?;
    let mut config = std::fs::read_to_string(server.config_path()).expect("config");
    config.push_str(gc);
    std::fs::write(server.config_path(), config).expect("config");
    server.start();
    let (_second, reader_port, second_log) = start_second(&server, "[gc]\ninterval_secs = 0\n");
    // The account's folder exists once something is stored: a first login imports.
    assert!(peers::imap_login(server.imap, USER, PASSWORD).contains("OK"));
    let account = account_dir(Path::new(&server.store));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/gc_churn.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(server.imap.to_string())
        .arg(reader_port.to_string())
        .args([USER, PASSWORD])
        .arg(&account)
        .env("GC_SETTLE_SECS", settle_secs.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("run gc_churn.py");
    let logs = || {
        format!(
            "{}\n--- second server ---\n{}\nstderr of the script:\n{}",
            server.logs(),
            std::fs::read_to_string(&second_log).unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    assert!(out.status.success(), "gc_churn.py failed:\n{}", logs());
    let report: HashMap<String, u64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.parse::<f64>().ok()? as u64))
        })
        .collect();
    eprintln!("{test}: {report:?}");
    // Nothing lost, whatever the collection did: the reader on the other process never
    // failed, checked kept messages in many rounds, and a fresh login there sees every
    // kept message, byte-exact.
    assert_eq!(report["reader_errors"], 0, "{report:?}\n{}", logs());
    assert!(report["reader_rounds"] >= 3, "{report:?}");
    assert!(report["reader_verified"] > 0, "{report:?}");
    assert_eq!(report["final_ok"], 1, "{report:?}\n{}", logs());
    Some(report)
}

#[test]
fn a_running_server_collects_its_garbage_and_loses_nothing() {
    let Some(report) = churn(
        "a_running_server_collects_its_garbage_and_loses_nothing",
        "[gc]\ninterval_secs = 1\ngrace_secs = 1\n",
        40,
    ) else {
        return;
    };
    // 90 appends and 60 expunges, each a commit (and the reader's stores), leave
    // hundreds of index objects without collection (the control below: more than 500);
    // collected, a handful of live segments and manifests remain, and the 30 kept bodies.
    assert_eq!(report["after_bodies"], 30, "{report:?}");
    assert!(
        report["after_index"] <= 16 && report["after_index"] * 5 < report["churned_index"],
        "{report:?}"
    );
}

/// The control: the same churn on a server that never collects keeps every body and
/// every superseded index object (what every server did before `[gc]`).
#[test]
fn without_collection_the_garbage_stays() {
    let Some(report) = churn(
        "without_collection_the_garbage_stays",
        "[gc]\ninterval_secs = 0\n",
        3,
    ) else {
        return;
    };
    // (Bodies go at once on this store, which has compare-and-swap: 30 either way.)
    assert!(report["churned_index"] >= 300, "{report:?}");
    assert!(
        report["after_index"] >= report["churned_index"],
        "{report:?}"
    );
}
