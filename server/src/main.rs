//! `mailvault`: the reference server on the mailvault library (public API only).
//!
//! ```text
//! mailvault init --config mailvault.toml
//! mailvault account create --config mailvault.toml --name alice@example.org --password-file pw
//! mailvault serve --config mailvault.toml
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
use mailvault::directory::{Directory, OfficerKeyEntry};
use mailvault::ids::DeploymentId;
use mailvault::keys::OfficerSecret;

use mailvault_server::config::{hex, write_new_private, BoxError, Config};

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
            std::process::ExitCode::FAILURE
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
            let password = std::fs::read_to_string(&password_file)
                .map_err(|e| format!("cannot read {}: {e}", password_file.display()))?;
            let password = password
                .strip_suffix('\n')
                .map(|p| p.strip_suffix('\r').unwrap_or(p))
                .unwrap_or(&password);
            if password.is_empty() {
                return Err("the password is empty".into());
            }
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
        Command::Serve { config } => serve(Config::load(&config)?).await,
    }
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
        provider: provider.clone(),
        accounts: accounts.clone(),
        max_message_size: config.max_message_size,
        registry: Default::default(),
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
