//! The first login after many deliveries (issue 13's benchmark row; the library's
//! `ShareConfig::import_at_open`): LOGIN and SELECT on an account with thousands of
//! pending deliveries are answered without waiting for their import; the account's
//! handle imports them in the background, and the client sees them arrive as new mail
//! (EXISTS on NOOP, then in IDLE), every one once, byte-exact, in delivery order.
//!
//! The deliveries and the IMAP session are Python `smtplib.LMTP` and `imaplib`
//! (`login_backlog.py`); this test starts the server and checks the script's report.

mod peers;

use std::collections::HashMap;

use peers::{tools, Backend, MailServer, PASSWORD};

const USER: &str = "alice@example.org";

#[test]
fn login_after_many_deliveries_is_answered_before_their_import() {
    const TEST: &str = "login_after_many_deliveries_is_answered_before_their_import";
    const N: usize = 1000;
    let Some(python) = tools(TEST, &["python"]).map(|mut t| t.remove(0)) else {
        return;
    };
    let Some(mut server) = MailServer::create(TEST, Backend::Local, &[USER]) else {
        return;
    };
    // Answer a login over more than 64 waiting deliveries at once (the default imports
    // them all first).
    let mut config = std::fs::read_to_string(server.config_path()).expect("config");
    config = format!("import_at_open = 64\n{config}");
    std::fs::write(server.config_path(), config).expect("config");
    server.start();
    let (imap, lmtp, n) = (
        server.imap.to_string(),
        server.lmtp.to_string(),
        N.to_string(),
    );
    let stdout = peers::run_script(
        &python,
        "login_backlog.py",
        &[imap.as_str(), lmtp.as_str(), USER, PASSWORD, n.as_str()],
        "login after many deliveries",
        || server.logs(),
    );
    let report: HashMap<&str, &str> = stdout.lines().filter_map(|l| l.split_once(' ')).collect();
    eprintln!("{TEST}: {report:?}");
    assert_eq!(report.get("ok"), Some(&"1"), "{stdout}");
    let exists_at_select: usize = report["exists_at_select"].parse().expect("a count");
    assert!(exists_at_select < N, "{stdout}");
    // New mail was announced while the import ran, not all at once at the end.
    let seen: Vec<usize> = report["exists_seen"]
        .split(',')
        .map(|n| n.parse().expect("a count"))
        .collect();
    assert!(
        seen.iter().any(|&n| n > exists_at_select && n < N),
        "{stdout}"
    );
}
