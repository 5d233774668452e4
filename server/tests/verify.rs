//! `mailvault verify` (issue 15, "Verify finds what is wrong"), the real binary as a
//! child process.
//!
//! A deployment with three accounts (alice: mail imported and filed; bob: deliveries
//! waiting and a keyring committed twice; carol: hardened, keys on a device) verifies
//! intact with and without keys, exit status 0. A copy of it is damaged: one of alice's
//! bodies deleted, a byte flipped in her newest index segment, a stray body and a stray
//! object of no known name put under her prefix, bob's keyring rolled back to the
//! version before his last change. `verify` reports each, by kind and object name, in
//! its JSON, with exit status 3; without keys it still reports the rollback and the
//! stray name, and says what it skipped.

mod peers;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use peers::{Backend, CompanionProcess, MailServer, BIN, PASSWORD};

const ALICE: &str = "alice@example.org";
const BOB: &str = "bob@example.org";
const CAROL: &str = "carol@example.org";

fn mailvault(config: &Path, env: &peers::Env, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .output()
        .expect("run mailvault")
}

/// `mailvault verify <args> --json`: exit code and parsed report.
fn verify(config: &Path, env: &peers::Env, args: &[&str]) -> (i32, serde_json::Value) {
    let mut all = vec!["verify", "--json"];
    all.extend_from_slice(args);
    let out = mailvault(config, env, &all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: not JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

fn account<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["accounts"]
        .as_array()
        .expect("accounts")
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {report:#}"))
}

/// Whether `account` lists a finding of `damage` and `kind` for `path` (an object name).
fn found(account: &serde_json::Value, damage: &str, kind: &str, path: &str) -> bool {
    account["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .any(|f| f["damage"] == damage && f["kind"] == kind && f["path"] == path)
}

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
    out.sort();
    out
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir").flatten() {
        let target = to.join(entry.file_name());
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target).expect("copy");
            // Keep modification times: the grace period of orphans runs on them.
            let modified = entry.metadata().and_then(|m| m.modified()).expect("mtime");
            std::fs::File::options()
                .write(true)
                .open(&target)
                .and_then(|f| f.set_modified(modified))
                .expect("set mtime");
        }
    }
}

fn account_id(config: &Path, name: &str) -> String {
    let path = config
        .parent()
        .unwrap()
        .join("directory/server-accounts.toml");
    let text = std::fs::read_to_string(path).expect("accounts table");
    let table: toml::Value = toml::from_str(&text).expect("TOML");
    table["accounts"][name]
        .as_str()
        .unwrap_or_else(|| panic!("{name} in {text}"))
        .to_owned()
}

/// Relative object name of a file of the local store.
fn object_name(store: &Path, file: &Path) -> String {
    file.strip_prefix(store)
        .expect("under the store")
        .to_string_lossy()
        .into_owned()
}

fn mbox(dir: &Path, n: usize, tag: &str) -> PathBuf {
    let path = dir.join(format!("{tag}.mbox"));
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!(
            "From sender@example.org Mon Jan  1 00:00:00 2024\nFrom: sender@example.org\n\
             Subject: {tag} {i}\nMessage-ID: <{tag}.{i}@example.org>\n\n{}\n",
            format!("line {i} of {tag}\n").repeat(40 + i * 400)
        ));
    }
    std::fs::write(&path, text).expect("write the mbox");
    path
}

#[test]
fn verify_finds_each_damage_of_a_copied_store_and_nothing_on_the_intact_one() {
    const TEST: &str = "verify_finds_each_damage_of_a_copied_store_and_nothing_on_the_intact_one";
    let Some(server) = MailServer::create(TEST, Backend::Local, &[ALICE, BOB]) else {
        return;
    };
    let config = server.config_path().to_path_buf();
    let env = server.env().clone();
    let password = server.dir.path().join("password");
    let pw = password.to_str().expect("UTF-8 path");
    // alice: mail delivered and filed (her password given); bob: deliveries waiting.
    let sources = tempfile::tempdir().expect("a folder");
    for (name, filed) in [(ALICE, true), (BOB, false)] {
        let file = mbox(sources.path(), 6, name.split('@').next().unwrap());
        let mut args = vec![
            "import",
            "mbox",
            file.to_str().unwrap(),
            "--name",
            name,
            "--json",
        ];
        if filed {
            args.extend(["--password-file", pw]);
        }
        let out = mailvault(&config, &env, &args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // carol: hardened (key model 1), her keyring made on her device.
    let _carol = CompanionProcess::enroll(&server, CAROL);
    // bob's keyring as it is now, then a change of it (a second generation).
    let store = PathBuf::from(&server.store);
    let bob = account_id(&config, BOB);
    let alice = account_id(&config, ALICE);
    let bob_keyrings = store.join("a").join(&bob).join("k");
    let before: Vec<(PathBuf, Vec<u8>)> = files(&bob_keyrings)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).expect("keyring");
            (p, bytes)
        })
        .collect();
    assert_eq!(before.len(), 1, "bob has one keyring version");
    {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async {
            let config = mailvault_server::config::Config::load(&config).expect("config");
            let provider = config.provider().await.expect("provider");
            let id = mailvault::ids::AccountId::from_hex(&bob).expect("id");
            let mut session = provider.unlock(id, PASSWORD).await.expect("bob's login");
            session
                .change_password("a new password")
                .await
                .expect("change");
        });
    }
    assert_ne!(
        files(&bob_keyrings),
        before.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>()
    );

    // Intact: nothing reported, exit 0, with alice's keys and without any.
    let (code, report) = verify(
        &config,
        &env,
        &["--account", ALICE, "--password-file", pw, "--deep"],
    );
    assert_eq!(code, 0, "{report:#}");
    let a = account(&report, ALICE);
    assert_eq!(a["findings"], serde_json::json!([]), "{report:#}");
    assert_eq!(a["with_keys"], true);
    assert!(
        a["checked"]["blob"]["objects"].as_u64().unwrap() >= 6,
        "{report:#}"
    );
    assert!(
        a["checked"]["segment"]["objects"].as_u64().unwrap() >= 1,
        "{report:#}"
    );
    let (code, report) = verify(&config, &env, &["--all"]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["intact"], true);
    for name in [ALICE, BOB, CAROL] {
        let a = account(&report, name);
        assert_eq!(a["findings"], serde_json::json!([]), "{name}: {report:#}");
        assert_eq!(a["with_keys"], false);
        assert!(!a["skipped"].as_array().unwrap().is_empty());
    }
    assert_eq!(account(&report, BOB)["checked"]["delivery"]["objects"], 6);
    // The plain output says the same.
    let out = mailvault(&config, &env, &["verify", "--all"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches(": intact;").count(), 3, "{text}");

    // The copy, damaged.
    let copy = tempfile::tempdir().expect("a folder");
    copy_tree(server.dir.path(), copy.path());
    let config2 = copy.path().join("mailvault.toml");
    let store2 = copy.path().join("store");
    let alice_dir = store2.join("a").join(&alice);
    let password2 = copy.path().join("password");
    let pw2 = password2.to_str().unwrap();
    // A deleted body.
    let bodies = files(&alice_dir.join("b"));
    assert!(bodies.len() >= 6);
    let deleted = object_name(&store2, &bodies[2]);
    std::fs::remove_file(&bodies[2]).expect("delete a body");
    // A flipped byte in the newest segment of her index (the head always lists it).
    let segments: Vec<PathBuf> = files(&alice_dir.join("i"))
        .into_iter()
        .filter(|p| p.parent().is_some_and(|d| d.ends_with("s")))
        .collect();
    let newest = segments
        .iter()
        .max_by_key(|p| {
            std::fs::metadata(p)
                .and_then(|m| m.modified())
                .expect("mtime")
        })
        .expect("a segment")
        .clone();
    let mut bytes = std::fs::read(&newest).expect("segment");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&newest, bytes).expect("write the segment");
    let flipped = object_name(&store2, &newest);
    // A stray body (two hours old: past the grace period) and a stray name.
    let stray_body = alice_dir.join("b").join("0123456789abcdef0123456789abcdef");
    std::fs::write(&stray_body, vec![0x42u8; 4000]).expect("stray body");
    std::fs::File::options()
        .write(true)
        .open(&stray_body)
        .and_then(|f| f.set_modified(SystemTime::now() - Duration::from_secs(7200)))
        .expect("age the stray body");
    let stray_name = alice_dir.join("README.txt");
    std::fs::write(&stray_name, b"not a mailvault object").expect("stray object");
    // bob's keyring rolled back: the current version gone, the previous one put back.
    let bob_keyrings2 = store2.join("a").join(&bob).join("k");
    for p in files(&bob_keyrings2) {
        std::fs::remove_file(p).expect("remove the keyring");
    }
    for (p, bytes) in &before {
        let target = bob_keyrings2.join(p.file_name().unwrap());
        std::fs::write(target, bytes).expect("the old keyring back");
    }

    let (code, report) = verify(
        &config2,
        &env,
        &["--account", ALICE, "--password-file", pw2],
    );
    assert_eq!(code, 3, "{report:#}");
    let a = account(&report, ALICE);
    assert!(found(a, "missing", "blob", &deleted), "{report:#}");
    assert!(found(a, "tampered", "segment", &flipped), "{report:#}");
    assert!(
        found(a, "orphaned", "blob", &object_name(&store2, &stray_body)),
        "{report:#}"
    );
    assert!(
        found(a, "orphaned", "unknown", &object_name(&store2, &stray_name)),
        "{report:#}"
    );
    assert_eq!(a["findings"].as_array().unwrap().len(), 4, "{report:#}");
    assert_eq!(a["summary"]["missing"]["objects"], 1);
    assert_eq!(a["summary"]["orphaned"]["bytes"], 4000 + 22);
    assert_eq!(report["intact"], false);

    let (code, report) = verify(&config2, &env, &["--all"]);
    assert_eq!(code, 3, "{report:#}");
    let b = account(&report, BOB);
    let prefix = format!("a/{bob}/k");
    assert!(found(b, "rolled_back", "keyring", &prefix), "{report:#}");
    assert_eq!(b["findings"].as_array().unwrap().len(), 1, "{report:#}");
    let a = account(&report, ALICE);
    assert!(
        found(a, "orphaned", "unknown", &object_name(&store2, &stray_name)),
        "{report:#}"
    );
    assert!(
        found(a, "tampered", "blob", &object_name(&store2, &stray_body)),
        "{report:#}"
    );
    assert_eq!(account(&report, CAROL)["findings"], serde_json::json!([]));
    // bob's own login sees the rollback too; verify with his keys reports it and goes on
    // without them.
    let (code, report) = verify(&config2, &env, &["--account", BOB, "--password-file", pw2]);
    assert_eq!(code, 3, "{report:#}");
    assert!(
        found(account(&report, BOB), "rolled_back", "keyring", &prefix),
        "{report:#}"
    );
}

/// The same damages on Garage (no compare-and-swap: index heads named by the directory's
/// marks), made in place after the intact run (no copy of a bucket): a deleted body, a
/// flipped byte in the newest segment, a stray object and a rolled-back keyring.
#[test]
fn verify_finds_each_damage_on_garage() {
    const TEST: &str = "verify_finds_each_damage_on_garage";
    let Some(server) = MailServer::create(TEST, Backend::Garage, &[ALICE, BOB]) else {
        return;
    };
    let config = server.config_path().to_path_buf();
    let env = server.env().clone();
    let password = server.dir.path().join("password");
    let pw = password.to_str().expect("UTF-8 path");
    let sources = tempfile::tempdir().expect("a folder");
    let file = mbox(sources.path(), 4, "alice");
    let out = mailvault(
        &config,
        &env,
        &[
            "import",
            "mbox",
            file.to_str().unwrap(),
            "--name",
            ALICE,
            "--password-file",
            pw,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (alice, bob) = (account_id(&config, ALICE), account_id(&config, BOB));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let loaded = mailvault_server::config::Config::load(&config).expect("config");
    // The S3 settings of the store, as the server's commands get them.
    for (k, v) in &env {
        std::env::set_var(k, v);
    }
    let store = mailvault::storage::open_store(&loaded.store).expect("the bucket");
    let list = |prefix: String| {
        runtime.block_on(async {
            use futures::TryStreamExt;
            let mut metas: Vec<object_store::ObjectMeta> = store
                .list(Some(&object_store::path::Path::from(prefix)))
                .try_collect()
                .await
                .expect("list");
            metas.sort_by(|a, b| a.location.cmp(&b.location));
            metas
        })
    };
    let get = |path: &object_store::path::Path| {
        runtime.block_on(async {
            use object_store::ObjectStoreExt;
            store
                .get(path)
                .await
                .expect("get")
                .bytes()
                .await
                .expect("bytes")
        })
    };
    let before: Vec<_> = list(format!("a/{bob}/k"))
        .into_iter()
        .map(|m| {
            let bytes = get(&m.location);
            (m.location, bytes)
        })
        .collect();
    assert_eq!(before.len(), 1);
    runtime.block_on(async {
        let provider = loaded.provider().await.expect("provider");
        let id = mailvault::ids::AccountId::from_hex(&bob).expect("id");
        let mut session = provider.unlock(id, PASSWORD).await.expect("bob's login");
        session
            .change_password("a new password")
            .await
            .expect("change");
    });

    let (code, report) = verify(
        &config,
        &env,
        &["--account", ALICE, "--password-file", pw, "--deep"],
    );
    assert_eq!(code, 0, "{report:#}");
    let (code, report) = verify(&config, &env, &["--all"]);
    assert_eq!(code, 0, "{report:#}");

    let bodies = list(format!("a/{alice}/b"));
    let deleted = bodies[1].location.clone();
    let segments: Vec<_> = list(format!("a/{alice}/i"))
        .into_iter()
        .filter(|m| m.location.as_ref().contains("/s/"))
        .collect();
    let newest = segments
        .iter()
        .max_by_key(|m| m.last_modified)
        .expect("a segment")
        .location
        .clone();
    let mut flipped = get(&newest).to_vec();
    let at = flipped.len() / 2;
    flipped[at] ^= 1;
    let stray = object_store::path::Path::from(format!("a/{alice}/README.txt"));
    let bob_now = list(format!("a/{bob}/k"));
    runtime.block_on(async {
        use object_store::ObjectStoreExt;
        store.delete(&deleted).await.expect("delete");
        store.put(&newest, flipped.into()).await.expect("flip");
        store
            .put(&stray, b"stray".to_vec().into())
            .await
            .expect("stray");
        for m in &bob_now {
            store.delete(&m.location).await.expect("delete a keyring");
        }
        for (path, bytes) in &before {
            store
                .put(path, bytes.clone().into())
                .await
                .expect("old keyring");
        }
    });

    let (code, report) = verify(&config, &env, &["--account", ALICE, "--password-file", pw]);
    assert_eq!(code, 3, "{report:#}");
    let a = account(&report, ALICE);
    assert!(found(a, "missing", "blob", deleted.as_ref()), "{report:#}");
    assert!(
        found(a, "tampered", "segment", newest.as_ref()),
        "{report:#}"
    );
    assert!(
        found(a, "orphaned", "unknown", stray.as_ref()),
        "{report:#}"
    );
    assert_eq!(a["findings"].as_array().unwrap().len(), 3, "{report:#}");
    let (code, report) = verify(&config, &env, &["--all"]);
    assert_eq!(code, 3, "{report:#}");
    let b = account(&report, BOB);
    assert!(
        found(b, "rolled_back", "keyring", &format!("a/{bob}/k")),
        "{report:#}"
    );
}
