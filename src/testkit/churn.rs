//! Keyring churn across processes (issue 10, item 2's acceptance): several processes,
//! each with its own [`Provider`], change the password and add and remove device slots of
//! one account at once, on a store without compare-and-swap, sharing one
//! [`FileDirectory`](crate::directory::FileDirectory). Each process logs what was
//! acknowledged, with the keyring generation it committed; [`check`] then verifies that
//! every acknowledged change holds and that the last password change in commit order is
//! the password that opens the account.
//!
//! The driver is `examples/keyring_churn.rs` (by hand, a minute) and
//! `tests/suite/hardening_directory.rs` (10 seconds in the default run); both run the
//! worker in child processes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::crypto::RandomSource;
use crate::directory::{Directory, OfficerKeyEntry};
use crate::engine::{Provider, ProviderConfig, Session};
use crate::error::{Error, Result};
use crate::ids::{hex, AccountId, DeploymentId};
use crate::keys::{Credential, DeviceKey, OfficerSecret};
use crate::storage::{DynStore, NoCasStore};

/// The account's password before any change.
pub const INITIAL_PASSWORD: &str = "churn-initial";

/// Device slots a worker keeps at most besides its own (16 slots in all: password,
/// officer, one device key per worker and these, for up to 4 workers).
const EXTRA_SLOTS: usize = 2;

/// The provider settings every process of the churn uses: cheap password slots (the
/// churn measures commits, not Argon2id).
pub fn config() -> ProviderConfig {
    super::cheap_provider_config()
}

/// The store a churn process opens from `spec`: `dir:<path>` (a local directory wrapped
/// in [`NoCasStore`], as Garage behaves) or `s3:<NAME>` (see [`super::s3_from_env`]).
///
/// # Errors
/// [`Error::Config`] for an unknown spec or an unset S3 server.
pub fn open_store(spec: &str) -> Result<DynStore> {
    if let Some(path) = spec.strip_prefix("dir:") {
        std::fs::create_dir_all(path).map_err(|e| Error::Config(format!("{path}: {e}")))?;
        return Ok(Arc::new(NoCasStore::new(crate::storage::open_store(path)?)));
    }
    #[cfg(feature = "s3")]
    if let Some(name) = spec.strip_prefix("s3:") {
        return super::s3_from_env(name)
            .ok_or_else(|| Error::Config(format!("S3 server {name} is not configured")));
    }
    Err(Error::Config(format!("unknown store spec {spec:?}")))
}

/// What the processes share: the deployment, the account and one device key per worker
/// (each worker unlocks with its own, which nobody removes).
pub struct Plan {
    /// The deployment.
    pub deployment: DeploymentId,
    /// The account.
    pub account: AccountId,
    /// One device key file per worker.
    pub devices: Vec<String>,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("account", &self.account)
            .field("workers", &self.devices.len())
            .finish_non_exhaustive()
    }
}

impl Plan {
    /// As text: `deployment <hex>`, `account <hex>`, then one `device <key file>` line per
    /// worker.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "deployment {}\naccount {}\n",
            self.deployment.to_hex(),
            self.account.to_hex()
        );
        for device in &self.devices {
            out.push_str(&format!("device {device}\n"));
        }
        out
    }

    /// Parses [`to_text`](Self::to_text).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for anything else.
    pub fn parse(text: &str) -> Result<Self> {
        let mut deployment = None;
        let mut account = None;
        let mut devices = Vec::new();
        for line in text.lines() {
            match line.split_once(' ') {
                Some(("deployment", hex)) => deployment = Some(DeploymentId::from_hex(hex)?),
                Some(("account", hex)) => account = Some(AccountId::from_hex(hex)?),
                Some(("device", key)) => devices.push(key.to_string()),
                _ => return Err(Error::invalid("not a churn plan")),
            }
        }
        match (deployment, account) {
            (Some(deployment), Some(account)) => Ok(Self {
                deployment,
                account,
                devices,
            }),
            _ => Err(Error::invalid("not a churn plan")),
        }
    }
}

/// Creates the deployment's officer key (its secret is dropped) and a model-5 account with
/// [`INITIAL_PASSWORD`] and one device key per worker.
///
/// # Errors
/// Backend and directory failures.
pub async fn setup(store: DynStore, directory: Arc<dyn Directory>, workers: usize) -> Result<Plan> {
    let rng = RandomSource::os();
    let officer = OfficerSecret::generate(&rng);
    directory
        .set_officer_keys(vec![OfficerKeyEntry {
            key: officer.public(),
            current: true,
        }])
        .await?;
    let deployment = DeploymentId::random(&rng);
    let provider = Provider::new(store, deployment, directory, config()).await?;
    let account = provider.create_account(INITIAL_PASSWORD).await?;
    let mut session = provider.unlock(account, INITIAL_PASSWORD).await?;
    let mut devices = Vec::with_capacity(workers);
    for _ in 0..workers {
        devices.push(session.add_device_key().await?.to_file_string().to_string());
    }
    Ok(Plan {
        deployment,
        account,
        devices,
    })
}

/// What one worker did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Changes acknowledged (each logged with its generation).
    pub acknowledged: u64,
    /// Changes refused with [`Error::Conflict`] (another process committed first).
    pub conflicts: u64,
    /// Other failures (the worker reloaded and went on).
    pub errors: u64,
}

/// One worker: for `duration`, changes the password, adds a device slot or removes one it
/// added, at random, as fast as it can; on a conflict it reloads the keyring and goes on.
/// Every acknowledged change is written to `log` as `pw <generation> <password>`,
/// `add <generation> <slot id hex>` or `rm <generation> <slot id hex>`.
///
/// # Errors
/// Backend and directory failures that a reload does not cure; a failed write to `log`.
pub async fn work(
    store: DynStore,
    directory: Arc<dyn Directory>,
    plan: &Plan,
    worker: usize,
    duration: Duration,
    log: &mut dyn std::io::Write,
) -> Result<WorkerStats> {
    let rng = RandomSource::os();
    let provider = Provider::new(store, plan.deployment, directory, config()).await?;
    let device = DeviceKey::from_file_string(
        plan.devices
            .get(worker)
            .ok_or_else(|| Error::invalid("no device key for this worker"))?,
    )?;
    // The others may be churning already: a keyring changing faster than it is read is
    // a conflict, which calls for another try.
    let mut tries = 0;
    let mut session = loop {
        tries += 1;
        match provider
            .unlock_with(plan.account, Credential::DeviceKey(&device))
            .await
        {
            Err(Error::Conflict { .. }) if tries < 20 => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            opened => break opened?,
        }
    };
    let mut stats = WorkerStats::default();
    let mut mine: Vec<[u8; 16]> = Vec::new();
    let mut failures_in_a_row = 0;
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < duration {
        n += 1;
        let mut pick = [0u8; 2];
        rng.fill(&mut pick);
        let op = if mine.len() >= EXTRA_SLOTS {
            2
        } else if mine.is_empty() {
            pick[0] % 2
        } else {
            pick[0] % 3
        };
        let line = match op {
            0 => {
                let mut tag = [0u8; 4];
                rng.fill(&mut tag);
                let password = format!("w{worker}-{n}-{}", hex(&tag));
                session
                    .change_password(&password)
                    .await
                    .map(|()| format!("pw {{}} {password}"))
            }
            1 => match session.add_device_key().await {
                Ok(_) => {
                    let id = session
                        .slots()
                        .last()
                        .map(|s| s.id)
                        .ok_or(Error::Tampered)?;
                    mine.push(id);
                    Ok(format!("add {{}} {}", hex(&id)))
                }
                Err(e) => Err(e),
            },
            _ => {
                let index = usize::from(pick[1]) % mine.len();
                let id = mine[index];
                match session.remove_slot(id).await {
                    Ok(()) => {
                        mine.swap_remove(index);
                        Ok(format!("rm {{}} {}", hex(&id)))
                    }
                    Err(e) => Err(e),
                }
            }
        };
        match line {
            Ok(line) => {
                failures_in_a_row = 0;
                stats.acknowledged += 1;
                // The generation this worker's change committed (its last own commit: a
                // removal also ends the root rotation it began).
                let line = line.replacen("{}", &session.committed_generation().to_string(), 1);
                writeln!(log, "{line}").map_err(|e| Error::Config(format!("log: {e}")))?;
            }
            Err(e) => {
                eprintln!("churn worker {worker}: change {n} (op {op}) failed: {e}");
                if op == 2 {
                    // A failed removal must not have removed the slot: a removal that
                    // committed is acknowledged (`Session::remove_slot`).
                    let id = mine.get(usize::from(pick[1]) % mine.len()).copied();
                    reload(&mut session, &mut mine).await?;
                    if let Some(id) = id.filter(|id| !session.slots().iter().any(|s| s.id == *id)) {
                        return Err(Error::Conflict {
                            path: format!(
                                "worker {worker}: the removal of slot {} failed ({e}) but the slot is gone",
                                hex(&id)
                            ),
                        });
                    }
                }
                if matches!(e, Error::Conflict { .. }) {
                    stats.conflicts += 1;
                } else {
                    stats.errors += 1;
                    failures_in_a_row += 1;
                    if failures_in_a_row > 20 {
                        return Err(e);
                    }
                }
                reload(&mut session, &mut mine).await?;
            }
        }
    }
    log.flush()
        .map_err(|e| Error::Config(format!("log: {e}")))?;
    Ok(stats)
}

/// Reloads the keyring after a failed change, and forgets slots of this worker that are
/// gone (none should be: only this worker removes its slots).
async fn reload(session: &mut Session, mine: &mut Vec<[u8; 16]>) -> Result<()> {
    let mut attempts = 0;
    loop {
        match session.reload_keyring().await {
            Ok(()) => break,
            Err(e) if attempts >= 20 => return Err(e),
            Err(_) => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let present: Vec<[u8; 16]> = session.slots().iter().map(|s| s.id).collect();
    mine.retain(|id| present.contains(id));
    Ok(())
}

/// What [`check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChurnReport {
    /// Acknowledged changes in all logs.
    pub acknowledged: usize,
    /// Acknowledged password changes.
    pub password_changes: usize,
    /// Acknowledged slot additions.
    pub slots_added: usize,
    /// Acknowledged slot removals.
    pub slots_removed: usize,
    /// The keyring's generation at the end.
    pub final_generation: u64,
    /// Keyring objects left in the store (1 after a clean run).
    pub keyring_objects: usize,
}

/// Checks the account after the workers are done, against their logs: each
/// acknowledged change has a generation of its own (commits are totally ordered); every
/// slot whose last acknowledged change is an addition is there, every other one is gone;
/// the password of the last acknowledged password change opens the account and the one
/// before it does not.
///
/// # Errors
/// [`Error::Conflict`] naming the first violation found; backend and directory failures.
pub async fn check(
    store: DynStore,
    directory: Arc<dyn Directory>,
    plan: &Plan,
    logs: &[String],
) -> Result<ChurnReport> {
    let violation = |what: String| Error::Conflict { path: what };
    let mut by_generation: BTreeMap<u64, (String, String)> = BTreeMap::new();
    let mut report = ChurnReport::default();
    for line in logs.iter().flat_map(|log| log.lines()) {
        let fields: Vec<&str> = line.split(' ').collect();
        let [kind, generation, value] = fields.as_slice() else {
            return Err(violation(format!("malformed log line {line:?}")));
        };
        let generation: u64 = generation
            .parse()
            .map_err(|_| violation(format!("malformed log line {line:?}")))?;
        match *kind {
            "pw" => report.password_changes += 1,
            "add" => report.slots_added += 1,
            "rm" => report.slots_removed += 1,
            _ => return Err(violation(format!("malformed log line {line:?}"))),
        }
        report.acknowledged += 1;
        if let Some(other) = by_generation.insert(generation, (kind.to_string(), value.to_string()))
        {
            return Err(violation(format!(
                "two acknowledged changes committed generation {generation}: {other:?} and {line:?}"
            )));
        }
    }
    let mut slots: HashMap<String, bool> = HashMap::new();
    let mut passwords: Vec<&str> = vec![INITIAL_PASSWORD];
    for (kind, value) in by_generation.values() {
        match kind.as_str() {
            "pw" => passwords.push(value),
            "add" => {
                slots.insert(value.clone(), true);
            }
            _ => {
                slots.insert(value.clone(), false);
            }
        }
    }
    let provider = Provider::new(store.clone(), plan.deployment, directory, config()).await?;
    let device = DeviceKey::from_file_string(&plan.devices[0])?;
    let session = provider
        .unlock_with(plan.account, Credential::DeviceKey(&device))
        .await?;
    report.final_generation = session.keyring_generation();
    let present: Vec<String> = session.slots().iter().map(|s| hex(&s.id)).collect();
    for (slot, added) in &slots {
        if *added != present.contains(slot) {
            return Err(violation(format!(
                "slot {slot}: acknowledged as {} last, but it is {}",
                if *added { "added" } else { "removed" },
                if *added { "missing" } else { "back" }
            )));
        }
    }
    if let Some(max) = by_generation.keys().next_back() {
        if report.final_generation < *max {
            return Err(violation(format!(
                "the keyring is at generation {} below the acknowledged {max}",
                report.final_generation
            )));
        }
    }
    let last = passwords[passwords.len() - 1];
    provider.unlock(plan.account, last).await.map_err(|e| {
        violation(format!(
            "the last acknowledged password {last:?} does not open: {e}"
        ))
    })?;
    if passwords.len() > 1 {
        let before = passwords[passwords.len() - 2];
        if provider.unlock(plan.account, before).await.is_ok() {
            return Err(violation(format!(
                "the superseded password {before:?} still opens"
            )));
        }
    }
    use futures::TryStreamExt;
    report.keyring_objects = store
        .list(Some(&crate::storage::naming::keyring_prefix(&plan.account)))
        .try_collect::<Vec<_>>()
        .await?
        .len();
    Ok(report)
}

/// What [`drive`] measured.
#[derive(Debug, Clone)]
pub struct ChurnRun {
    /// What [`check`] found.
    pub report: ChurnReport,
    /// Each worker's figures.
    pub workers: Vec<WorkerStats>,
    /// Wall time of the churn (from the first spawn to the last exit).
    pub elapsed: Duration,
    /// The changes that failed, one line each as the workers reported them.
    pub failures: String,
}

/// Runs the whole churn: [`setup`] on `store_spec` with a
/// [`FileDirectory`](crate::directory::FileDirectory) under `root`, `workers` child
/// processes made by `spawn` (each given the arguments that [`worker_main`] takes, and
/// expected to print its [`WorkerStats`] line), then [`check`].
///
/// # Errors
/// A child that fails (with its output), and as [`setup`] and [`check`].
pub async fn drive(
    store_spec: &str,
    root: &std::path::Path,
    workers: usize,
    duration: Duration,
    spawn: impl Fn(&[String]) -> std::process::Command,
) -> Result<ChurnRun> {
    let store = open_store(store_spec)?;
    let directory_root = root.join("directory");
    let directory: Arc<dyn Directory> =
        Arc::new(crate::directory::FileDirectory::open(&directory_root)?);
    let plan = setup(store.clone(), directory.clone(), workers).await?;
    let plan_path = root.join("plan");
    let io = |e: std::io::Error| Error::Config(format!("churn: {e}"));
    std::fs::write(&plan_path, plan.to_text()).map_err(io)?;
    let started = Instant::now();
    let mut children = Vec::with_capacity(workers);
    for worker in 0..workers {
        let args: Vec<String> = vec![
            worker.to_string(),
            store_spec.to_string(),
            directory_root.display().to_string(),
            plan_path.display().to_string(),
            duration.as_secs_f64().to_string(),
            root.join(format!("worker-{worker}.log"))
                .display()
                .to_string(),
        ];
        let child = spawn(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(io)?;
        children.push(child);
    }
    let mut stats = Vec::with_capacity(workers);
    let mut failures = String::new();
    for (worker, child) in children.into_iter().enumerate() {
        let out = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .map_err(|e| Error::Config(format!("churn: {e}")))?
            .map_err(io)?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        // The test harness may print on the same line before the worker does.
        let line = stdout
            .lines()
            .find_map(|l| l.split_once("churn-stats ").map(|(_, stats)| stats.trim()));
        match (out.status.success(), line.and_then(parse_stats)) {
            (true, Some(s)) => {
                stats.push(s);
                failures.push_str(&String::from_utf8_lossy(&out.stderr));
            }
            _ => {
                return Err(Error::Config(worker_failure(
                    worker,
                    &out.status.to_string(),
                    &stdout,
                    &String::from_utf8_lossy(&out.stderr),
                )))
            }
        }
    }
    let elapsed = started.elapsed();
    let mut logs = Vec::with_capacity(workers);
    for worker in 0..workers {
        logs.push(std::fs::read_to_string(root.join(format!("worker-{worker}.log"))).map_err(io)?);
    }
    // A violation comes with the changes that failed, as the workers reported them.
    let report = check(store, directory, &plan, &logs)
        .await
        .map_err(|e| match e {
            Error::Conflict { path } => Error::Conflict {
                path: format!("{path}\nfailed changes:\n{failures}"),
            },
            e => e,
        })?;
    Ok(ChurnRun {
        report,
        workers: stats,
        elapsed,
        failures,
    })
}

/// What a failed worker said, the reason first: its own error (the line after its
/// panic), its last failed changes, then the end of its output without the backtrace.
fn worker_failure(worker: usize, status: &str, stdout: &str, stderr: &str) -> String {
    let lines: Vec<&str> = stdout.lines().chain(stderr.lines()).collect();
    let reason: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("churn worker:"))
        .copied()
        .collect();
    let changes: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("churn worker "))
        .copied()
        .collect();
    let rest: Vec<&str> = lines
        .iter()
        .filter(|l| !l.starts_with("churn worker") && !l.starts_with(' '))
        .copied()
        .collect();
    format!(
        "churn worker {worker} failed ({status}): {}\nits last failed changes:\n{}\nthe end of its output:\n{}",
        reason.join("\n"),
        changes[changes.len().saturating_sub(6)..].join("\n"),
        rest[rest.len().saturating_sub(12)..].join("\n"),
    )
}

fn parse_stats(line: &str) -> Option<WorkerStats> {
    let numbers: Vec<u64> = line
        .split(' ')
        .map(|n| n.parse().ok())
        .collect::<Option<_>>()?;
    match numbers.as_slice() {
        [acknowledged, conflicts, errors] => Some(WorkerStats {
            acknowledged: *acknowledged,
            conflicts: *conflicts,
            errors: *errors,
        }),
        _ => None,
    }
}

/// A worker process: `args` as [`drive`] passes them (worker number, store spec,
/// directory root, plan file, seconds, log file). Runs [`work`] and prints
/// `churn-stats <acknowledged> <conflicts> <errors>` on standard output.
///
/// # Errors
/// Malformed arguments, and as [`work`].
pub async fn worker_main(args: &[String]) -> Result<WorkerStats> {
    let [worker, spec, directory_root, plan, seconds, log] = args else {
        return Err(Error::invalid("churn worker: six arguments"));
    };
    let bad = |what: &str| Error::invalid(format!("churn worker: {what}"));
    let worker: usize = worker.parse().map_err(|_| bad("worker number"))?;
    let seconds: f64 = seconds.parse().map_err(|_| bad("seconds"))?;
    let plan = Plan::parse(
        &std::fs::read_to_string(plan).map_err(|e| Error::Config(format!("{plan}: {e}")))?,
    )?;
    let store = open_store(spec)?;
    let directory: Arc<dyn Directory> =
        Arc::new(crate::directory::FileDirectory::open(directory_root)?);
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(log).map_err(|e| Error::Config(format!("{log}: {e}")))?,
    );
    let stats = work(
        store,
        directory,
        &plan,
        worker,
        Duration::from_secs_f64(seconds),
        &mut file,
    )
    .await?;
    println!(
        "churn-stats {} {} {}",
        stats.acknowledged, stats.conflicts, stats.errors
    );
    Ok(stats)
}
