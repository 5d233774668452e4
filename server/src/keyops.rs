//! The key and officer commands of the `mailvault` tool (issue 15, point 4): accounts
//! listed, shown and erased; the officer's password reset, audit and log; key epochs
//! added and bodies re-encrypted; the root key rotated; key export files written and
//! imported. Everything goes through the library's public API (`Provider`, `Session`,
//! the `Directory`); secrets come from files or the standard input, never from the
//! command line.
//!
//! Exit statuses: see [`Failure`] and `mailvault --help`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use mailvault::directory::{
    published_usage, AccountRecord, Directory, KeyModel, OfficerAction, OfficerKeyEntry,
};
use mailvault::engine::{Provider, Session};
use mailvault::format::slot::SlotKind;
use mailvault::ids::AccountId;
use mailvault::keys::{KeyExport, OfficerSecret, SlotPolicy};
use serde_json::json;

use crate::config::{self, hex, write_new_private, BoxError, Config};
use crate::migrate::Progress;

/// Exit status of a failure: 1 (any other error).
pub const EXIT_FAILURE: u8 = 1;
/// Exit status of a job that did part of its work (an import with refused messages).
pub const EXIT_PARTLY_DONE: u8 = 2;
/// Exit status of an officer audit that found an account the officer should be able to
/// recover and cannot.
pub const EXIT_NOT_RECOVERABLE: u8 = 3;
/// Exit status of a `verify` that found damage (a check's finding, as an audit's).
pub const EXIT_DAMAGED: u8 = 3;
/// Exit status of a wrong credential: password, passphrase or officer key.
pub const EXIT_WRONG_CREDENTIAL: u8 = 4;
/// Exit status of an erase that was not confirmed (nothing erased).
pub const EXIT_NOT_CONFIRMED: u8 = 5;

/// An error with the exit status it stands for.
#[derive(Debug)]
pub struct Failure {
    /// The exit status.
    pub code: u8,
    message: String,
}

impl Failure {
    /// A failure with exit status `code`.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// The exit status `error` stands for: a [`Failure`]'s own, [`EXIT_WRONG_CREDENTIAL`]
/// for the library's `WrongCredential`, [`EXIT_FAILURE`] otherwise.
pub fn exit_status(error: &BoxError) -> u8 {
    if let Some(failure) = error.downcast_ref::<Failure>() {
        failure.code
    } else if matches!(
        error.downcast_ref::<mailvault::Error>(),
        Some(mailvault::Error::WrongCredential)
    ) {
        EXIT_WRONG_CREDENTIAL
    } else {
        EXIT_FAILURE
    }
}

/// How a command that needs an account's keys opens it: with the user's password, or
/// with the officer key (recorded in the officer log first).
#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
pub struct Unlocker {
    /// A file holding the account's password (`-`: the standard input).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// The officer's secret key file (`server-officer.key` as `mailvault init` wrote
    /// it, kept offline; `-`: the standard input). The opening is recorded in the
    /// directory's officer log and in the account, where its user sees it.
    #[arg(long)]
    pub officer_key: Option<PathBuf>,
}

/// The configuration file and the account name, shared by the account commands.
#[derive(clap::Args, Debug)]
pub struct Target {
    /// The configuration file.
    #[arg(long)]
    pub config: PathBuf,
    /// The account's name (login name / recipient address); its id in hex also works.
    pub name: String,
}

/// Reads an officer secret key file (64 hex digits; `-`: the standard input).
///
/// # Errors
/// The file cannot be read or holds no key.
pub fn read_officer_key(path: &Path) -> Result<OfficerSecret, BoxError> {
    let text = config::read_password(path)?;
    let text = text.trim();
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "{}: an officer key file holds 64 hex digits",
            path.display()
        )
        .into());
    }
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
            .map_err(|_| format!("{}: not hex", path.display()))?;
    }
    Ok(OfficerSecret::from_bytes(*bytes))
}

/// The account named `name` in the accounts table, or `name` read as an account id in
/// hex (an erased account's id, for its officer log).
fn resolve(config: &Config, name: &str) -> Result<(String, AccountId), BoxError> {
    let accounts = config.accounts();
    if let Some(account) = accounts.lookup(name)? {
        return Ok((name.to_lowercase(), account));
    }
    if let Ok(account) = AccountId::from_hex(name) {
        let listed = accounts.name_of(&account)?;
        return Ok((listed.unwrap_or_else(|| name.to_string()), account));
    }
    Err(format!("no account named {name}").into())
}

async fn record(config: &Config, account: &AccountId) -> Result<AccountRecord, BoxError> {
    config
        .open_directory()?
        .account_record(account)
        .await?
        .ok_or_else(|| format!("{account}: no record in the directory (erased?)").into())
}

/// Opens `account` with `unlocker` (a session of the provider: key model 5, or an
/// officer on model 4).
async fn open(
    provider: &Provider,
    config: &Config,
    account: AccountId,
    unlocker: &Unlocker,
) -> Result<Session, BoxError> {
    let model = record(config, &account).await?.model;
    tracing::debug!(%account, model = model.number(), "opening the account");
    let session = match (&unlocker.password_file, &unlocker.officer_key) {
        (Some(password_file), _) => {
            if model != KeyModel::ServerManaged {
                return Err(format!(
                    "{account}: key model {}: the password is unlocked on the user's device, not here (use --officer-key, or run this on the device)",
                    model.number()
                )
                .into());
            }
            let password = config::read_password(password_file)?;
            provider.unlock(account, &password).await?
        }
        (None, Some(officer_key)) => {
            let officer = read_officer_key(officer_key)?;
            provider.officer_open(account, &officer).await?
        }
        (None, None) => return Err("give --password-file or --officer-key".into()),
    };
    tracing::debug!(
        %account,
        generation = session.keyring_generation(),
        epochs = ?session.epochs(),
        "account opened"
    );
    Ok(session)
}

/// Seconds since the Unix epoch as `2026-12-06T18:00:00Z`.
fn utc(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| secs.to_string())
}

fn flavor(model: KeyModel) -> &'static str {
    if model == KeyModel::ServerManaged {
        "transparent"
    } else {
        "hardened"
    }
}

fn kind_name(kind: SlotKind) -> &'static str {
    match kind {
        SlotKind::Password => "password",
        SlotKind::RecoveryCode => "recovery-code",
        SlotKind::DeviceKey => "device-key",
        SlotKind::Officer => "officer",
        _ => "other",
    }
}

fn action_name(action: OfficerAction) -> &'static str {
    match action {
        OfficerAction::Open => "open",
        OfficerAction::ResetPassword => "reset-password",
        OfficerAction::Audit => "audit",
        _ => "other",
    }
}

/// `mailvault account list`.
pub async fn list(config: &Config, json: bool) -> Result<(), BoxError> {
    let directory = config.open_directory()?;
    let mut rows = Vec::new();
    for entry in config.accounts().list()? {
        let record = directory.account_record(&entry.account).await?;
        let usage = published_usage(directory.as_ref(), &entry.account).await?;
        // A modseq of 0: nothing published yet (the account never opened).
        let stored = (usage.modseq > 0).then_some(usage.stored);
        rows.push((entry, record.map(|r| r.model), stored));
    }
    if json {
        let rows: Vec<_> = rows
            .iter()
            .map(|(entry, model, stored)| {
                json!({
                    "name": entry.name,
                    "account": entry.account.to_hex(),
                    "model": model.map(KeyModel::number),
                    "flavor": model.map(flavor),
                    "created": entry.created,
                    "stored_bytes": stored,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return Ok(());
    }
    println!(
        "{:<32} {:<32} {:>5} {:<11} {:<20} {:>12}",
        "NAME", "ACCOUNT", "MODEL", "FLAVOR", "CREATED", "STORED"
    );
    for (entry, model, stored) in &rows {
        println!(
            "{:<32} {:<32} {:>5} {:<11} {:<20} {:>12}",
            entry.name,
            entry.account.to_hex(),
            model.map_or("-".into(), |m| m.number().to_string()),
            model.map_or("(no record)", flavor),
            entry.created.map_or("-".into(), utc),
            stored.map_or("-".into(), |b| b.to_string()),
        );
    }
    Ok(())
}

/// `mailvault account show NAME`: what the directory and the stored keyring say, no
/// secret needed.
pub async fn show(target: &Target, json: bool) -> Result<(), BoxError> {
    let config = Config::load(&target.config)?;
    let (name, account) = resolve(&config, &target.name)?;
    let directory = config.open_directory()?;
    let record = record(&config, &account).await?;
    let provider = config.provider().await?;
    let generation = provider.keyrings().accepted_generation(&account).await?;
    tracing::debug!(%account, generation, "reading the stored keyring");
    let slots = provider.keyrings().stored_slots(&account).await?;
    let officers = directory.officer_keys().await?;
    let policy = match provider.check_stored_keyring(account).await {
        Ok(SlotPolicy::Holds) => "holds".to_string(),
        Ok(SlotPolicy::RetiredOfficerOnly) => {
            "officer slots sealed to retired officer keys only: re-seal".to_string()
        }
        Ok(other) => format!("{other:?}"),
        Err(e) => format!("broken: {e}"),
    };
    let log = directory.officer_log(Some(&account)).await?;
    let usage = published_usage(directory.as_ref(), &account).await?;
    let created = config
        .accounts()
        .list()?
        .into_iter()
        .find(|e| e.account == account)
        .and_then(|e| e.created);
    let officer_state = |key: &[u8; 32]| match officers.iter().find(|o| o.key.to_bytes() == *key) {
        Some(OfficerKeyEntry { current: true, .. }) => "current",
        Some(_) => "retired",
        None => "unknown",
    };
    if json {
        let slots: Vec<_> = slots
            .iter()
            .map(|s| {
                json!({
                    "kind": kind_name(s.kind),
                    "id": hex(&s.id),
                    "created": s.created,
                    "kdf": (s.kind == SlotKind::Password)
                        .then(|| json!({"m_kib": s.kdf.m_kib, "t": s.kdf.t, "p": s.kdf.p})),
                    "officer": (s.kind == SlotKind::Officer)
                        .then(|| json!({"key": hex(&s.officer), "state": officer_state(&s.officer)})),
                })
            })
            .collect();
        let epochs: Vec<_> = record
            .public_keys
            .iter()
            .map(|(epoch, key)| json!({"epoch": epoch, "public_key": hex(key)}))
            .collect();
        println!(
            "{}",
            json!({
                "name": name,
                "account": account.to_hex(),
                "model": record.model.number(),
                "flavor": flavor(record.model),
                "created": created,
                "keyring_generation": generation,
                "policy": policy,
                "slots": slots,
                "epochs": epochs,
                "officer_log_entries": log.len(),
                "limits": {"storage": record.limits.storage, "message_size": record.limits.message_size},
                "stored_bytes": (usage.modseq > 0).then_some(usage.stored),
            })
        );
        return Ok(());
    }
    println!("name:               {name}");
    println!("account:            {account}");
    println!(
        "key model:          {} ({})",
        record.model.number(),
        flavor(record.model)
    );
    println!("created:            {}", created.map_or("-".into(), utc));
    println!("keyring generation: {generation}");
    println!("key policy:         {policy}");
    println!("slots:              {}", slots.len());
    for slot in &slots {
        let detail = match slot.kind {
            SlotKind::Password => format!(
                " Argon2id m={} KiB t={} p={}",
                slot.kdf.m_kib, slot.kdf.t, slot.kdf.p
            ),
            SlotKind::Officer => format!(
                " officer key {} ({})",
                hex(&slot.officer),
                officer_state(&slot.officer)
            ),
            _ => String::new(),
        };
        println!(
            "  {:<13} {} created {}{detail}",
            kind_name(slot.kind),
            hex(&slot.id),
            utc(slot.created)
        );
    }
    println!("epochs:             {}", record.public_keys.len());
    for (epoch, key) in &record.public_keys {
        println!("  {epoch:<4} {}", hex(key));
    }
    println!("officer log:        {} entries", log.len());
    if let Some(limit) = record.limits.storage {
        println!("storage limit:      {limit} bytes");
    }
    if usage.modseq > 0 {
        println!("stored:             {} bytes", usage.stored);
    }
    Ok(())
}

/// `mailvault account erase NAME`: asks unless `yes`.
pub async fn erase(target: &Target, yes: bool) -> Result<(), BoxError> {
    let config = Config::load(&target.config)?;
    let (name, account) = resolve(&config, &target.name)?;
    if !yes {
        use std::io::BufRead;
        eprint!(
            "Erase the account {name} ({account}) and all its mail? Nothing can bring it back, \
             not even a backup of the bucket. Type the account name to confirm: "
        );
        let mut answer = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut answer)
            .map_err(|e| format!("cannot read the answer: {e}"))?;
        if answer.trim().to_lowercase() != name {
            return Err(Box::new(Failure::new(
                EXIT_NOT_CONFIRMED,
                format!("not confirmed: {name} was not erased"),
            )));
        }
    }
    tracing::debug!(%account, "erasing: the directory secret first, then the objects");
    config.provider().await?.erase_account(account).await?;
    // Last: a failed erase leaves the name, so that it can be run again.
    config.accounts().remove(&name)?;
    println!(
        "{name} ({account}) erased: its directory record and secret, keyring, index and bodies"
    );
    Ok(())
}

/// `mailvault officer reset-password NAME`.
pub async fn reset_password(
    target: &Target,
    officer_key: &Path,
    password_file: &Path,
) -> Result<(), BoxError> {
    let config = Config::load(&target.config)?;
    let (name, account) = resolve(&config, &target.name)?;
    let model = record(&config, &account).await?.model;
    if model != KeyModel::ServerManaged {
        return Err(format!(
            "{name}: key model {}: its password slot is made on the user's device",
            model.number()
        )
        .into());
    }
    let officer = read_officer_key(officer_key)?;
    let password = config::read_password(password_file)?;
    config
        .provider()
        .await?
        .officer_reset_password(account, &officer, &password)
        .await?;
    let log = config.open_directory()?.officer_log(Some(&account)).await?;
    let position = log.last().map_or(0, |(n, _)| *n);
    println!("{name}: password reset; recorded in the officer log (entry {position})");
    Ok(())
}

/// `mailvault officer audit [NAME|--all]`: exits with [`EXIT_NOT_RECOVERABLE`] when an
/// account that the officer should recover is not recoverable.
pub async fn audit(
    config_path: &Path,
    name: Option<&str>,
    officer_key: &Path,
    json: bool,
) -> Result<(), BoxError> {
    let config = Config::load(config_path)?;
    let officer = read_officer_key(officer_key)?;
    let provider = config.provider().await?;
    let directory = config.open_directory()?;
    let accounts: Vec<(String, AccountId)> = match name {
        Some(name) => vec![resolve(&config, name)?],
        None => config
            .accounts()
            .list()?
            .into_iter()
            .map(|e| (e.name, e.account))
            .collect(),
    };
    let officer_public = officer.public().to_bytes();
    if !directory
        .officer_keys()
        .await?
        .iter()
        .any(|k| k.current && k.key.to_bytes() == officer_public)
    {
        eprintln!(
            "warning: this officer key is not a current officer key of the directory: accounts sealed to the current key will not open with it"
        );
    }
    let mut rows = Vec::new();
    let mut failed = 0usize;
    for (name, account) in accounts {
        let row = audit_one(&provider, directory.as_ref(), account, &officer).await;
        if row.should_recover && !row.recoverable {
            failed += 1;
        }
        if !json {
            println!(
                "{name} ({account}): key model {}: {}{}",
                row.model.map_or("-".into(), |m| m.number().to_string()),
                if !row.should_recover {
                    "not the officer's to recover: "
                } else if row.recoverable {
                    "OK: "
                } else {
                    "NOT RECOVERABLE: "
                },
                row.detail
            );
        }
        rows.push(json!({
            "name": name,
            "account": account.to_hex(),
            "model": row.model.map(KeyModel::number),
            "should_recover": row.should_recover,
            "officer_slot_opens": row.opens,
            "recoverable": row.recoverable,
            "recovers": row.recovers,
            "epochs": row.epochs,
            "detail": row.detail,
        }));
    }
    if json {
        println!("{}", json!({"accounts": rows, "not_recoverable": failed}));
    }
    if failed > 0 {
        return Err(Box::new(Failure::new(
            EXIT_NOT_RECOVERABLE,
            format!("{failed} account(s) the officer should recover are not recoverable"),
        )));
    }
    Ok(())
}

struct AuditRow {
    model: Option<KeyModel>,
    /// Whether the key model says the officer recovers the account (4 and 5).
    should_recover: bool,
    /// Whether the officer slot opened the account with this key.
    opens: bool,
    recoverable: bool,
    /// What the officer recovers: "everything", "deliveries", "nothing".
    recovers: &'static str,
    epochs: Vec<u32>,
    detail: String,
}

async fn audit_one(
    provider: &Provider,
    directory: &dyn Directory,
    account: AccountId,
    officer: &OfficerSecret,
) -> AuditRow {
    let mut row = AuditRow {
        model: None,
        should_recover: true,
        opens: false,
        recoverable: false,
        recovers: "nothing",
        epochs: Vec::new(),
        detail: String::new(),
    };
    let record = match directory.account_record(&account).await {
        Ok(Some(record)) => record,
        Ok(None) => {
            row.detail = "no record in the directory (erased?)".into();
            return row;
        }
        Err(e) => {
            row.detail = format!("the directory: {e}");
            return row;
        }
    };
    row.model = Some(record.model);
    if !record.model.requires_officer() {
        row.should_recover = false;
        row.detail = format!(
            "key model {} keeps no officer slot: only the user's own keys open it",
            record.model.number()
        );
        return row;
    }
    tracing::debug!(%account, "officer audit");
    match provider
        .officer_audit(account, officer, &[mailvault::mail::COLLECTION])
        .await
    {
        Ok(report) => {
            row.opens = true;
            row.epochs = report.matching_epochs.clone();
            if report.consistent {
                row.recoverable = true;
                row.recovers = "everything";
                row.detail = format!(
                    "the officer slot opens the root key: every epoch the directory lists ({:?}), the mail index, every body",
                    report.matching_epochs
                );
            } else {
                row.detail = format!(
                    "the officer slot opens a root key that reproduces epochs {:?} only, not every epoch the directory lists ({:?})",
                    report.matching_epochs,
                    record.public_keys.iter().map(|(e, _)| *e).collect::<Vec<_>>()
                );
            }
        }
        Err(e) => {
            // Deliveries are co-sealed to the officer in models 4 and 5 whatever the
            // keyring holds: those stay recoverable one by one.
            row.recovers = "deliveries";
            row.detail = match e {
                mailvault::Error::WrongCredential => {
                    "no officer slot opens with this officer key".to_string()
                }
                mailvault::Error::NotFound { .. } => "the keyring is missing".to_string(),
                e => format!("the officer slot does not open the account: {e}"),
            } + "; only deliveries co-sealed to the officer could be recovered";
        }
    }
    row
}

/// `mailvault officer log NAME`.
pub async fn officer_log(target: &Target, json: bool) -> Result<(), BoxError> {
    let config = Config::load(&target.config)?;
    let (name, account) = resolve(&config, &target.name)?;
    let log = config.open_directory()?.officer_log(Some(&account)).await?;
    if json {
        let rows: Vec<_> = log
            .iter()
            .map(|(n, e)| {
                json!({
                    "position": n,
                    "time": e.time,
                    "action": action_name(e.action),
                    "officer": hex(&e.officer.to_bytes()),
                })
            })
            .collect();
        println!(
            "{}",
            json!({"name": name, "account": account.to_hex(), "entries": rows})
        );
        return Ok(());
    }
    if log.is_empty() {
        println!("{name} ({account}): no officer action");
    }
    for (n, entry) in &log {
        println!(
            "{n:>6} {} {:<15} officer key {}",
            utc(entry.time),
            action_name(entry.action),
            hex(&entry.officer.to_bytes())
        );
    }
    Ok(())
}

/// `mailvault account add-epoch NAME`.
pub async fn add_epoch(target: &Target, unlocker: &Unlocker) -> Result<(), BoxError> {
    let config = Config::load(&target.config)?;
    let (name, account) = resolve(&config, &target.name)?;
    let provider = config.provider().await?;
    let mut session = open(&provider, &config, account, unlocker).await?;
    let epoch = session.add_epoch().await?;
    println!(
        "{name}: epoch {epoch} added (deliveries and new bodies are sealed under it); `mailvault account reencrypt {name}` moves the older bodies to it"
    );
    Ok(())
}

/// `mailvault account reencrypt NAME`: every body moved to the newest epoch, the older
/// epochs dropped.
pub async fn reencrypt(
    target: &Target,
    unlocker: &Unlocker,
    json: bool,
    quiet: bool,
) -> Result<(), BoxError> {
    let started = Instant::now();
    let config = Config::load(&target.config)?;
    let (name, account) = resolve(&config, &target.name)?;
    let provider = config.provider().await?;
    let mut session = open(&provider, &config, account, unlocker).await?;
    if session.rotating() {
        // Its new epoch must be the one bodies move to, and its index re-keyed first.
        eprintln!("reencrypt: finishing the root rotation under way first");
        session.finish_rotation().await?;
    }
    let epochs = session.epochs();
    let Some((&current, old)) = epochs.split_last() else {
        return Err("the keyring holds no epoch".into());
    };
    let mut rewritten = 0;
    for &epoch in old {
        let mut progress: Option<Progress> = None;
        let mut last = 0u64;
        let done = session
            .reencrypt_epoch(epoch, |p| {
                let bar = progress.get_or_insert_with(|| {
                    Progress::new("reencrypt", "messages", Some(p.total as u64), None, quiet)
                });
                last = p.done as u64;
                bar.set(last, 0);
            })
            .await?;
        if let Some(bar) = &progress {
            bar.finish(last, 0);
        }
        tracing::debug!(epoch, done, "epoch dropped");
        rewritten += done;
    }
    let seconds = started.elapsed().as_secs_f64();
    if json {
        println!(
            "{}",
            json!({
                "name": name,
                "account": account.to_hex(),
                "current_epoch": current,
                "epochs_dropped": old,
                "rewritten": rewritten,
                "seconds": (seconds * 1000.0).round() / 1000.0,
            })
        );
    } else {
        println!(
            "{name}: {rewritten} bodies re-encrypted under epoch {current}, epochs {old:?} dropped, in {seconds:.1} s"
        );
    }
    Ok(())
}

/// Emails indexed per step of `mailvault reindex`: one segment each.
const REINDEX_STEP: usize = 512;

/// `mailvault reindex --account NAME`: imports the pending deliveries, then adds to the
/// account's text index every email it lacks, a step of [`REINDEX_STEP`] emails at a
/// time (their bodies read, their texts extracted, one segment written and committed per
/// step). Resumable by construction: the state is what the index covers, so a run
/// killed at any point loses at most the step under way, and the next run goes on from
/// there. Progress: a bar on a terminal, else a line per step
/// (`reindex: 1024 of 5000 emails indexed, ...`).
pub async fn reindex(
    target: &Target,
    unlocker: &Unlocker,
    json: bool,
    quiet: bool,
) -> Result<(), BoxError> {
    use std::io::IsTerminal;
    let started = Instant::now();
    let config = Config::load(&target.config)?;
    let (name, account) = resolve(&config, &target.name)?;
    let provider = config.provider().await?;
    let mut session = open(&provider, &config, account, unlocker).await?;
    let mut mail = session.mailstore().await?;
    loop {
        let report = session.import_deliveries(&mut mail).await?;
        if report.imported.is_empty() {
            break;
        }
    }
    let emails = mail.emails()?;
    let total = emails.len();
    let before = mail.texts_covered(&emails).await?;
    let bar = (!quiet && std::io::stderr().is_terminal())
        .then(|| Progress::new("reindex", "messages", Some(total as u64), None, quiet));
    let line = |covered: usize, indexed: usize| {
        if bar.is_none() && !quiet {
            eprintln!(
                "reindex: {covered} of {total} emails indexed, {indexed} in this run, {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
    };
    let mut covered = before;
    let mut indexed = 0;
    line(covered, indexed);
    loop {
        let n = mail.index_texts(&emails, REINDEX_STEP).await?;
        if n == 0 {
            break;
        }
        indexed += n;
        covered = (covered + n).min(total);
        if let Some(bar) = &bar {
            bar.set(covered as u64, 0);
        }
        line(covered, indexed);
    }
    if let Some(bar) = &bar {
        bar.finish(covered as u64, 0);
    }
    let seconds = started.elapsed().as_secs_f64();
    if json {
        println!(
            "{}",
            json!({
                "name": name,
                "account": account.to_hex(),
                "emails": total,
                "indexed_before": before,
                "indexed": indexed,
                "seconds": (seconds * 1000.0).round() / 1000.0,
            })
        );
    } else {
        println!(
            "{name}: {indexed} emails indexed ({before} of {total} were before), in {seconds:.1} s"
        );
    }
    Ok(())
}

/// `mailvault account rotate-root NAME`: begins (unless a killed run began it) and
/// finishes a root rotation.
pub async fn rotate_root(
    target: &Target,
    unlocker: &Unlocker,
    json: bool,
    quiet: bool,
) -> Result<(), BoxError> {
    let started = Instant::now();
    let config = Config::load(&target.config)?;
    let (name, account) = resolve(&config, &target.name)?;
    let provider = config.provider().await?;
    let mut session = open(&provider, &config, account, unlocker).await?;
    let resumed = session.rotating();
    if !resumed {
        session.begin_rotation().await?;
    }
    // What the run does, before its progress (`--quiet`: nothing).
    let started_how = if resumed {
        format!(
            "a rotation an earlier run began is under way: finishing it (keyring generation {})",
            session.keyring_generation()
        )
    } else {
        format!(
            "begun: a new root key and epoch {} (keyring generation {}); re-keying the index",
            session.epochs().last().copied().unwrap_or(0),
            session.keyring_generation()
        )
    };
    if !quiet {
        eprintln!("rotate-root: {started_how}");
    }
    // The index collections re-keyed: a bar on a terminal, else plain lines.
    let mut progress: Option<Progress> = None;
    let mut last = 0u64;
    let collections = session
        .rotate_root(&[], |p| {
            let bar = progress.get_or_insert_with(|| {
                Progress::new(
                    "rotate-root",
                    "collections",
                    Some(p.total as u64),
                    None,
                    quiet,
                )
            });
            last = p.done as u64;
            bar.set(last, 0);
        })
        .await?;
    if let Some(bar) = &progress {
        bar.finish(last, 0);
    }
    let seconds = started.elapsed().as_secs_f64();
    let epochs = session.epochs();
    if json {
        println!(
            "{}",
            json!({
                "name": name,
                "account": account.to_hex(),
                "resumed": resumed,
                "collections": collections,
                "epochs": epochs,
                "keyring_generation": session.keyring_generation(),
                "seconds": (seconds * 1000.0).round() / 1000.0,
            })
        );
    } else {
        println!(
            "{name}: root key rotated{} in {seconds:.1} s; epochs {epochs:?}: `mailvault account reencrypt {name}` moves the bodies off the older ones; earlier key export files open nothing now",
            if resumed { " (an interrupted rotation finished)" } else { "" }
        );
    }
    Ok(())
}

/// `mailvault account export-key NAME --out FILE`.
pub async fn export_key(
    target: &Target,
    unlocker: &Unlocker,
    passphrase_file: &Path,
    out: &Path,
) -> Result<(), BoxError> {
    let config = Config::load(&target.config)?;
    let (name, account) = resolve(&config, &target.name)?;
    if out.exists() {
        return Err(format!("{} exists: not overwritten", out.display()).into());
    }
    let passphrase = config::read_password(passphrase_file)?;
    let provider = config.provider().await?;
    let session = open(&provider, &config, account, unlocker).await?;
    let text = zeroize::Zeroizing::new(session.export_key(&passphrase).await?);
    write_new_private(out, &text)?;
    println!(
        "{name}: key export written to {} (mode 0600); with its passphrase it opens the account until the next root rotation: keep it offline",
        out.display()
    );
    Ok(())
}

/// `mailvault account import-key FILE`: opens the account with an export file and sets
/// a new password.
pub async fn import_key(
    config_path: &Path,
    file: &Path,
    passphrase_file: &Path,
    password_file: &Path,
) -> Result<(), BoxError> {
    let config = Config::load(config_path)?;
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?,
    );
    let export = KeyExport::parse(&text).map_err(|e| format!("{}: {e}", file.display()))?;
    let account = export.account;
    let name = config
        .accounts()
        .name_of(&account)?
        .unwrap_or_else(|| account.to_hex());
    let model = record(&config, &account).await?.model;
    if model != KeyModel::ServerManaged {
        return Err(format!(
            "{name}: key model {}: import the key on the user's device",
            model.number()
        )
        .into());
    }
    let passphrase = config::read_password(passphrase_file)?;
    let password = config::read_password(password_file)?;
    let provider = config.provider().await?;
    let mut session = match provider.import_key(&export, &passphrase).await {
        Err(mailvault::Error::Tampered) => {
            return Err(Box::new(Failure::new(
                EXIT_WRONG_CREDENTIAL,
                format!(
                    "{}: this export holds a root key the account no longer has (made before a root rotation)",
                    file.display()
                ),
            )))
        }
        other => other?,
    };
    session.change_password(&password).await?;
    println!(
        "{name}: access restored from {}: the new password is set",
        file.display()
    );
    Ok(())
}
