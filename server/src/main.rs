//! `mailvault`: the reference server on the mailvault library (public API only).
//!
//! ```text
//! mailvault init --config mailvault.toml
//! mailvault account create --config mailvault.toml --name alice@example.org --password-file pw
//! mailvault serve --config mailvault.toml
//! mailvault import maildir ~alice/Maildir --config mailvault.toml --name alice@example.org
//! mailvault export mbox backup/ --config mailvault.toml --name alice@example.org --password-file pw
//!
//! # the hardened flavor: keys on the user's device (key model 1)
//! mailvault account enroll --config mailvault.toml --name bob@example.org --out bob.enrollment
//! mailvault device init --store <bucket> --local device/ --enrollment bob.enrollment \
//!     --device-key device.key > bob.public-keys                       # on the device
//! mailvault account accept --config mailvault.toml --name bob@example.org --public-keys bob.public-keys
//! mailvault companion --config companion.toml                         # on the device
//! ```
//!
//! See `server/README.md` for the configuration file and what each command writes.
#![forbid(unsafe_code)]

use mailvault_server::{config, imap, lmtp};

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use mailvault::crypto::RandomSource;
use mailvault::delivery::DeliverySigningKey;
use mailvault::directory::{Directory, FileDirectory, KeyModel, OfficerKeyEntry};
use mailvault::engine::{Companion, CompanionConfig, DeviceEnrollment, ShareConfig};
use mailvault::ids::DeploymentId;
use mailvault::keys::{DeviceKey, DeviceKeyFile, OfficerSecret};
use mailvault::storage::open_store;

use mailvault_server::config::{hex, write_new_private, BoxError, CompanionFile, Config};

#[derive(Parser)]
#[command(
    name = "mailvault",
    version,
    about = "IMAP and LMTP server on mailvault"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Creates the deployment: its id, the delivery signing key and the officer key
    /// (written in the directory root; move the officer key offline).
    Init {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Account commands.
    Account {
        #[command(subcommand)]
        command: AccountCommand,
    },
    /// Serves IMAP and LMTP on the configured listeners until SIGINT or SIGTERM.
    Serve {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Commands run on the user's device (hardened flavor).
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
    /// Imports existing mail into an account: every message of a Maildir tree (folders
    /// and flags kept), of an mbox file or of an account on another IMAP server, sealed to the account's public key (no secret
    /// needed: any key model). Resumable: run again after a kill, each message is stored
    /// once. Progress on a terminal, plain lines otherwise; exit status 2 when messages
    /// were refused (listed).
    ///
    /// Examples:
    ///   mailvault import maildir ~alice/Maildir --config mailvault.toml --name alice@example.org
    ///   mailvault import mbox old.mbox --mailbox Archive/old --config mailvault.toml --name alice@example.org --json
    ///   mailvault import imap imaps://alice@old.example.org --source-password-file old-pw --config mailvault.toml --name alice@example.org
    Import {
        #[command(subcommand)]
        source: ImportSource,
    },
    /// Exports an account's mail: every mailbox as a Maildir++ folder (flags in the file
    /// names, keywords through `dovecot-keywords`, the internal date as the file's
    /// modification time) or as an mbox file (mboxrd; flags in `Status`, `X-Status`,
    /// `X-Keywords`). Reading mail needs the account's password (a transparent account).
    /// A Maildir export run again into the same folder writes only what is missing.
    /// Progress on a terminal, plain lines otherwise; exit status 2 when something could
    /// not be written (listed).
    ///
    /// Examples:
    ///   mailvault export maildir backup/alice --config mailvault.toml --name alice@example.org --password-file pw
    ///   mailvault export mbox sent.mbox --mailbox Sent --config mailvault.toml --name alice@example.org --password-file pw --json
    Export {
        #[command(subcommand)]
        target: ExportTarget,
    },
    /// Runs a companion on the user's device: the account opened with the device key,
    /// IMAP on a loopback address for the device's mail client, the shared bucket read and
    /// written directly, deliveries imported as they arrive. Until SIGINT or SIGTERM.
    Companion {
        /// The companion's configuration file.
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum ImportSource {
    /// A Maildir++ tree: `cur/` and `new/` are INBOX, `.Sent/` is Sent, `.Archive.2023/`
    /// is Archive/2023 (a mailbox the account lacks is created, special-use roles by
    /// name); flags from the file names' info and `dovecot-keywords`; the internal date
    /// is the file's modification time.
    Maildir {
        /// The Maildir's root folder.
        path: PathBuf,
        #[command(flatten)]
        args: ImportArgs,
    },
    /// Every mailbox of an account on another IMAP server (Dovecot, Aerogramme...), read
    /// over IMAP: messages as the server serves them, flags, internal dates, folders.
    /// Read-only on the source (EXAMINE, BODY.PEEK). Resumable: each message is stored
    /// once (its delivery id comes from the server, login, mailbox, UIDVALIDITY and UID).
    Imap {
        /// `imap://user@host[:port]` or `imaps://user@host[:port]` (the user
        /// percent-encoded: `alice%40example.org`).
        url: String,
        /// A file holding the source account's password (one trailing newline is ignored).
        #[arg(long)]
        source_password_file: PathBuf,
        /// PEM certificates to trust for `imaps` besides the system's roots: CAs, or the
        /// server's own (self-signed) certificate, then trusted as it is.
        #[arg(long)]
        source_ca_file: Option<PathBuf>,
        #[command(flatten)]
        args: ImportArgs,
    },
    /// An mbox file: flags from `Status`, `X-Status` and `X-Keywords` (left out of the
    /// stored message), the internal date from each `From ` line.
    Mbox {
        /// The mbox file.
        path: PathBuf,
        /// The mailbox its messages land in.
        #[arg(long, default_value = "INBOX")]
        mailbox: String,
        #[command(flatten)]
        args: ImportArgs,
    },
}

#[derive(Subcommand)]
enum ExportTarget {
    /// A Maildir++ tree (created): INBOX at the root, `Archive/2023` as `.Archive.2023/`.
    Maildir {
        /// The Maildir's root folder.
        path: PathBuf,
        #[command(flatten)]
        args: ExportArgs,
    },
    /// mbox files: with `--mailbox`, that mailbox as the file PATH; without, every
    /// mailbox as `PATH/<name>.mbox`. An existing file is not overwritten.
    Mbox {
        /// The mbox file (with `--mailbox`), else the folder of mbox files.
        path: PathBuf,
        /// The one mailbox to export.
        #[arg(long)]
        mailbox: Option<String>,
        #[command(flatten)]
        args: ExportArgs,
    },
}

#[derive(clap::Args)]
struct ExportArgs {
    /// The configuration file.
    #[arg(long)]
    config: PathBuf,
    /// The account's name.
    #[arg(long)]
    name: String,
    /// A file holding the account's password (one trailing newline is ignored).
    #[arg(long)]
    password_file: PathBuf,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(clap::Args)]
struct ImportArgs {
    /// The configuration file.
    #[arg(long)]
    config: PathBuf,
    /// The account's name.
    #[arg(long)]
    name: String,
    /// With the account's password (a transparent account): also file the delivered
    /// messages into the mailboxes now, instead of at the account's next login.
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Subcommand)]
enum DeviceCommand {
    /// Sets up a device from the provider's enrollment file: makes the device key file
    /// if it does not exist (mode 0600), creates the account's keyring in the bucket, the
    /// local folder and the device key file; prints the epoch public keys (`<epoch>
    /// <hex>` lines) for `mailvault account accept`.
    Init {
        /// The shared bucket (as `store` in the configuration).
        #[arg(long)]
        store: String,
        /// The device's local folder (created).
        #[arg(long)]
        local: PathBuf,
        /// The enrollment file from `mailvault account enroll` (delete it afterwards).
        #[arg(long)]
        enrollment: PathBuf,
        /// The device key file (made when missing).
        #[arg(long)]
        device_key: PathBuf,
    },
    /// Prints the account's epoch public keys as the device's local folder holds them.
    ShowKey {
        /// The device's local folder.
        #[arg(long)]
        local: PathBuf,
    },
}

#[derive(Subcommand)]
enum AccountCommand {
    /// Creates an account (key model 5: password and officer slots) under a login name,
    /// which is also its recipient address; prints the account id.
    Create {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Login name and recipient address.
        #[arg(long)]
        name: String,
        /// A file holding the password (one trailing newline is ignored).
        #[arg(long)]
        password_file: PathBuf,
        /// Storage quota in bytes (IMAP `[OVERQUOTA]`, LMTP `552 5.2.2` beyond it).
        #[arg(long)]
        storage_limit: Option<u64>,
        /// Largest message accepted for this account, bytes.
        #[arg(long)]
        message_limit: Option<u64>,
    },
    /// Enrolls an account whose keys live on the user's device (key model 1: the provider
    /// keeps only its public keys and delivers to it over LMTP; no IMAP here) under a login
    /// name / recipient address; writes the enrollment file the device needs (mode 0600:
    /// it holds the account's secret) and prints the account id.
    Enroll {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Recipient address (and the name the device's companion is known by).
        #[arg(long)]
        name: String,
        /// Where to write the enrollment file (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Accepts the keyring a device created for an enrolled account: records the epoch
    /// public keys (`<epoch> <hex>` lines, as `mailvault device init` prints them), to
    /// which deliveries are sealed from then on.
    Accept {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
        /// The account's name.
        #[arg(long)]
        name: String,
        /// A file of `<epoch> <hex>` lines.
        #[arg(long)]
        public_keys: PathBuf,
    },
    /// Prints an account's epoch public keys (`<epoch> <hex>` lines) and key model, as
    /// the directory holds them.
    ShowKey {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
        /// The account's name.
        #[arg(long)]
        name: String,
    },
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("mailvault: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mailvault: {e}");
            if e.is::<PartlyDone>() {
                std::process::ExitCode::from(2)
            } else {
                std::process::ExitCode::FAILURE
            }
        }
    }
}

async fn run(cli: Cli) -> Result<(), BoxError> {
    match cli.command {
        Command::Init { config } => init(&Config::load(&config)?).await,
        Command::Account {
            command:
                AccountCommand::Create {
                    config,
                    name,
                    password_file,
                    storage_limit,
                    message_limit,
                },
        } => {
            let config = Config::load(&config)?;
            let password = config::read_password(&password_file)?;
            let password: &str = &password;
            let accounts = config.accounts();
            if accounts.lookup(&name)?.is_some() {
                return Err(format!("account name {name} is taken").into());
            }
            let provider = config.provider().await?;
            let account = provider.create_account(password).await?;
            if storage_limit.is_some() || message_limit.is_some() {
                let directory = config.open_directory()?;
                let mut record = directory
                    .account_record(&account)
                    .await?
                    .ok_or("the account record vanished")?;
                record.limits = mailvault::directory::AccountLimits {
                    storage: storage_limit,
                    message_size: message_limit,
                };
                directory.set_account_record(&account, record).await?;
            }
            accounts.insert(&name, account)?;
            println!("{account}");
            Ok(())
        }
        Command::Account {
            command: AccountCommand::Enroll { config, name, out },
        } => {
            let config = Config::load(&config)?;
            let accounts = config.accounts();
            if accounts.lookup(&name)?.is_some() {
                return Err(format!("account name {name} is taken").into());
            }
            let provider = config.provider().await?;
            let enrollment = provider.device_enrollment(KeyModel::DeviceOnly).await?;
            write_new_private(&out, &enrollment.to_armored())?;
            accounts.insert(&name, enrollment.account)?;
            println!("{}", enrollment.account);
            Ok(())
        }
        Command::Account {
            command:
                AccountCommand::Accept {
                    config,
                    name,
                    public_keys,
                },
        } => {
            let config = Config::load(&config)?;
            let account = config
                .accounts()
                .lookup(&name)?
                .ok_or_else(|| format!("no account named {name}"))?;
            let text = std::fs::read_to_string(&public_keys)
                .map_err(|e| format!("cannot read {}: {e}", public_keys.display()))?;
            let keys = config::parse_public_keys(&text)?;
            config
                .provider()
                .await?
                .accept_keyring(account, keys)
                .await?;
            println!("{account} accepted");
            Ok(())
        }
        Command::Account {
            command: AccountCommand::ShowKey { config, name },
        } => {
            let config = Config::load(&config)?;
            let account = config
                .accounts()
                .lookup(&name)?
                .ok_or_else(|| format!("no account named {name}"))?;
            let record = config
                .open_directory()?
                .account_record(&account)
                .await?
                .ok_or_else(|| format!("{account}: no record in the directory"))?;
            eprintln!("{account}: key model {}", record.model.number());
            print!("{}", config::format_public_keys(&record.public_keys));
            Ok(())
        }
        Command::Device {
            command:
                DeviceCommand::Init {
                    store,
                    local,
                    enrollment,
                    device_key,
                },
        } => device_init(&store, &local, &enrollment, &device_key).await,
        Command::Device {
            command: DeviceCommand::ShowKey { local },
        } => {
            let text = std::fs::read_to_string(Companion::key_file_path(&local))
                .map_err(|e| format!("{}: {e}", local.display()))?;
            let account = DeviceKeyFile::parse(&text)?.account;
            let record = FileDirectory::open(&local)?
                .account_record(&account)
                .await?
                .ok_or_else(|| format!("{account}: no record in {}", local.display()))?;
            print!("{}", config::format_public_keys(&record.public_keys));
            Ok(())
        }
        Command::Import { source } => import(source).await,
        Command::Export { target } => export(target).await,
        Command::Serve { config } => serve(Config::load(&config)?).await,
        Command::Companion { config } => companion(CompanionFile::load(&config)?).await,
    }
}

/// `mailvault import`.
async fn import(source: ImportSource) -> Result<(), BoxError> {
    use mailvault_server::migrate::{self, Progress};
    let args = match &source {
        ImportSource::Maildir { args, .. }
        | ImportSource::Mbox { args, .. }
        | ImportSource::Imap { args, .. } => args,
    };
    let config = Config::load(&args.config)?;
    let account = config
        .accounts()
        .lookup(&args.name)?
        .ok_or_else(|| format!("no account named {}", args.name))?;
    let provider = config.provider().await?;
    let deliverer = Arc::new(provider.deliverer(config.signing_key()?));
    let mut summary = match &source {
        ImportSource::Maildir { path, .. } => {
            let entries = migrate::scan_maildir(path)?;
            let progress = Progress::new("import", Some(entries.len() as u64), false, args.quiet);
            let messages = entries.iter().map(migrate::read_maildir_message);
            migrate::deliver_all(deliverer, account, messages, &progress, |_| 1).await
        }
        ImportSource::Mbox { path, mailbox, .. } => {
            let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let total = file.metadata().map(|m| m.len()).ok();
            let progress = Progress::new("import", total, true, args.quiet);
            let source = path.canonicalize().unwrap_or_else(|_| path.clone());
            let mut reader = migrate::MboxReader::new(
                std::io::BufReader::new(file),
                mailbox,
                &source.to_string_lossy(),
            );
            let messages = std::iter::from_fn(move || reader.next_message().transpose());
            migrate::deliver_all(deliverer, account, messages, &progress, |m| m.span).await
        }
        ImportSource::Imap {
            url,
            source_password_file,
            source_ca_file,
            ..
        } => {
            use mailvault_server::imap_source::{ImapSource, SourceUrl};
            let url = SourceUrl::parse(url)?;
            let password = config::read_password(source_password_file)?;
            let ca_file = source_ca_file.clone();
            let (mut source, mailboxes) = tokio::task::spawn_blocking(move || {
                let mut source = ImapSource::connect(&url, &password, ca_file.as_deref())?;
                let mailboxes = source.mailboxes()?;
                Ok::<_, BoxError>((source, mailboxes))
            })
            .await??;
            let total = mailboxes.iter().map(|m| m.messages).sum();
            let progress = Progress::new("import", Some(total), false, args.quiet);
            // The source is read on a thread of its own, a few messages ahead of the
            // deliveries (bounded: the account's mail is not held in memory).
            let (sender, receiver) = std::sync::mpsc::sync_channel(16);
            let reader = std::thread::spawn(move || {
                for mailbox in &mailboxes {
                    let read = source.messages(mailbox, |message| {
                        sender
                            .send(Ok(message))
                            .map_err(|_| BoxError::from("the import stopped"))
                    });
                    if let Err(e) = read {
                        let _ = sender.send(Err(BoxError::from(format!(
                            "reading {} from the source: {e}",
                            mailbox.name
                        ))));
                        return;
                    }
                }
                source.logout();
            });
            let messages = std::iter::from_fn(move || receiver.recv().ok());
            let summary =
                migrate::deliver_all(deliverer, account, messages, &progress, |_| 1).await;
            reader
                .join()
                .map_err(|_| "the thread reading the source failed")?;
            summary
        }
    };
    if let Some(password_file) = &args.password_file {
        let password = config::read_password(password_file)?;
        let mut session = provider.unlock(account, &password).await?;
        let mut mail = session.mailstore().await?;
        loop {
            let report = session.import_deliveries(&mut mail).await?;
            // Sent again by this run but imported before (a rerun after an earlier run's
            // import): the import dropped them.
            let again = report.already_imported as u64;
            summary.already += again.min(summary.delivered);
            summary.delivered = summary.delivered.saturating_sub(again);
            if report.imported.is_empty() {
                break;
            }
        }
    }
    if args.json {
        println!("{}", summary.to_json());
    } else {
        println!(
            "{} messages delivered, {} delivered before, {} refused; {:.1} MiB in {:.1} s",
            summary.delivered,
            summary.already,
            summary.failed.len(),
            summary.bytes as f64 / (1 << 20) as f64,
            summary.seconds
        );
    }
    job_outcome(&summary.failed, "refused")
}

/// The end of an operator job: each of `failed` listed on stderr (`<verb>: what: why`),
/// and an error of exit status 2 when there is any.
fn job_outcome(failed: &[(String, String)], verb: &str) -> Result<(), BoxError> {
    for (what, why) in failed {
        eprintln!("{verb}: {what}: {why}");
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Box::new(PartlyDone(format!("{} {verb}", failed.len()))))
    }
}

/// `mailvault export`.
async fn export(target: ExportTarget) -> Result<(), BoxError> {
    use mailvault_server::export;
    let args = match &target {
        ExportTarget::Maildir { args, .. } | ExportTarget::Mbox { args, .. } => args,
    };
    let config = Config::load(&args.config)?;
    let account = config
        .accounts()
        .lookup(&args.name)?
        .ok_or_else(|| format!("no account named {}", args.name))?;
    let password = config::read_password(&args.password_file)?;
    let mut session = config.provider().await?.unlock(account, &password).await?;
    let mut mail = session.mailstore().await?;
    // Deliveries not filed yet are part of the account's mail: filed first.
    while !session
        .import_deliveries(&mut mail)
        .await?
        .imported
        .is_empty()
    {}
    let summary = match &target {
        ExportTarget::Maildir { path, .. } => {
            export::export_maildir(&mut mail, path, args.quiet).await?
        }
        ExportTarget::Mbox { path, mailbox, .. } => {
            export::export_mbox(&mut mail, path, mailbox.as_deref(), args.quiet).await?
        }
    };
    if args.json {
        println!("{}", summary.to_json());
    } else {
        println!(
            "{} messages exported from {} mailboxes, {} exported before, {} not written; {:.1} MiB in {:.1} s",
            summary.exported,
            summary.mailboxes,
            summary.already,
            summary.failed.len(),
            summary.bytes as f64 / (1 << 20) as f64,
            summary.seconds
        );
    }
    job_outcome(&summary.failed, "not written")
}

/// A job that did part of its work (exit status 2): messages refused by an import, not
/// written by an export.
#[derive(Debug)]
struct PartlyDone(String);

impl std::fmt::Display for PartlyDone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PartlyDone {}

/// `mailvault device init`.
async fn device_init(
    store: &str,
    local: &std::path::Path,
    enrollment: &std::path::Path,
    device_key: &std::path::Path,
) -> Result<(), BoxError> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(enrollment)
            .map_err(|e| format!("cannot read {}: {e}", enrollment.display()))?,
    );
    let enrollment = DeviceEnrollment::parse(&text)?;
    let key = if device_key.exists() {
        read_device_key(device_key)?
    } else {
        let key = DeviceKey::generate(&RandomSource::os());
        write_new_private(device_key, &key.to_file_string())?;
        key
    };
    let public_keys = Companion::create(
        open_store(store)?,
        local,
        &enrollment,
        &key,
        CompanionConfig::default(),
    )
    .await?;
    eprintln!(
        "account {} set up in {}; give the provider these public keys",
        enrollment.account,
        local.display()
    );
    print!("{}", config::format_public_keys(&public_keys));
    Ok(())
}

fn read_device_key(path: &std::path::Path) -> Result<DeviceKey, BoxError> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
    );
    Ok(DeviceKey::from_file_string(&text).map_err(|e| format!("{}: {e}", path.display()))?)
}

/// `mailvault companion`: the account opened with the device key, IMAP on loopback.
async fn companion(config: CompanionFile) -> Result<(), BoxError> {
    let key = read_device_key(&config.device_key)?;
    let password = config::read_password(&config.password_file)?;
    let mut settings = CompanionConfig::default();
    settings.share.poll_interval = std::time::Duration::from_millis(config.poll_interval_ms);
    settings.share = config.gc.apply(settings.share);
    let opened = Companion::open(open_store(&config.store)?, &config.local, &key, settings)
        .await
        .map_err(|e| format!("cannot open the account in {}: {e}", config.local.display()))?;
    drop(key);
    let listener = tokio::net::TcpListener::bind(config.imap_listen)
        .await
        .map_err(|e| format!("IMAP: cannot listen on {}: {e}", config.imap_listen))?;
    tracing::info!(addr = %config.imap_listen, account = %opened.account(), "companion IMAP listening");
    let state = Arc::new(imap::Imap {
        login: imap::Login::Companion {
            name: config.login.to_lowercase(),
            password,
            handle: opened.handle().clone(),
        },
        max_message_size: config.max_message_size,
        tls: None,
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let listening = tokio::spawn(imap::accept_loop(listener, state, false));
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
    }
    listening.abort();
    Ok(())
}

async fn init(config: &Config) -> Result<(), BoxError> {
    let root = &config.directory;
    std::fs::create_dir_all(root)?;
    let deployment_path = root.join(config::DEPLOYMENT_FILE);
    if deployment_path.exists() {
        return Err(format!("{} exists: already initialized", deployment_path.display()).into());
    }
    let rng = RandomSource::os();
    let directory = config.open_directory()?;
    let signing = DeliverySigningKey::generate(&rng);
    let officer = OfficerSecret::generate(&rng);
    write_new_private(
        &root.join(config::SIGNING_KEY_FILE),
        &hex(&signing.to_bytes()[..]),
    )?;
    let officer_path = root.join(config::OFFICER_KEY_FILE);
    write_new_private(&officer_path, &hex(&officer.to_bytes()[..]))?;
    directory.set_delivery_key(signing.verifying_key()).await?;
    directory
        .set_officer_keys(vec![OfficerKeyEntry {
            key: officer.public(),
            current: true,
        }])
        .await?;
    let deployment = DeploymentId::random(&rng);
    // Written last: its presence means the rest is in place.
    write_new_private(&deployment_path, &deployment.to_hex())?;
    println!("deployment {deployment}");
    println!(
        "officer secret key written to {}: move it offline",
        officer_path.display()
    );
    Ok(())
}

async fn serve(config: Config) -> Result<(), BoxError> {
    // Checked before anything starts: bad TLS files stop the server with their error.
    let tls = config.tls()?;
    let provider = config.provider().await?;
    let deliverer = Arc::new(provider.deliverer(config.signing_key()?));
    let accounts = config.accounts();
    let mut tasks = tokio::task::JoinSet::new();
    let lmtp_state = Arc::new(lmtp::Lmtp {
        deliverer: deliverer.clone(),
        accounts: accounts.clone(),
        max_message_size: config.max_message_size as usize,
    });
    if let Some(addr) = config.lmtp_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("LMTP: cannot listen on {addr}: {e}"))?;
        tracing::info!(%addr, "LMTP listening");
        tasks.spawn(lmtp::accept_loop(listener, lmtp_state.clone()));
    }
    if let Some(path) = &config.lmtp_socket {
        // A socket left by a killed server is replaced; any other file is not.
        if std::fs::symlink_metadata(path)
            .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
        {
            std::fs::remove_file(path)?;
        }
        let listener = tokio::net::UnixListener::bind(path)
            .map_err(|e| format!("LMTP: cannot listen on {}: {e}", path.display()))?;
        tracing::info!(path = %path.display(), "LMTP listening on a unix socket");
        tasks.spawn(lmtp::accept_unix(listener, lmtp_state.clone()));
    }
    let imap_state = Arc::new(imap::Imap {
        login: imap::Login::Provider {
            provider: Box::new(provider.clone()),
            accounts: accounts.clone(),
            registry: Default::default(),
            share: config.share(ShareConfig::default()),
        },
        max_message_size: config.max_message_size,
        tls,
    });
    if let Some(addr) = config.imap_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("IMAP: cannot listen on {addr}: {e}"))?;
        let starttls = imap_state.tls.is_some();
        tracing::info!(%addr, starttls, "IMAP listening");
        tasks.spawn(imap::accept_loop(listener, imap_state.clone(), false));
    }
    if let Some(addr) = config.imaps_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("IMAPS: cannot listen on {addr}: {e}"))?;
        tracing::info!(%addr, "IMAPS listening");
        tasks.spawn(imap::accept_loop(listener, imap_state.clone(), true));
    }
    if tasks.is_empty() {
        return Err(
            "no listener configured (imap_listen, imaps_listen, lmtp_listen, lmtp_socket)".into(),
        );
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        done = tasks.join_next() => {
            if let Some(Err(e)) = done {
                return Err(format!("a listener stopped: {e}").into());
            }
        }
    }
    // Acknowledged deliveries are durable before their 250; stopping here drops only
    // transactions not yet acknowledged.
    tasks.abort_all();
    Ok(())
}
