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
//!
//! # operators and officers (keys: docs in `mailvault account --help`, `mailvault officer --help`)
//! mailvault account list --config mailvault.toml
//! mailvault officer audit --all --config mailvault.toml --officer-key /media/officer/server-officer.key
//! ```
//!
//! See `server/README.md` for the configuration file and what each command writes.
#![forbid(unsafe_code)]

use mailvault_server::keyops::{self, Target, Unlocker};
use mailvault_server::{config, imap, lmtp};

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use mailvault::crypto::RandomSource;
use mailvault::delivery::DeliverySigningKey;
use mailvault::directory::{Directory, FileDirectory, KeyModel, OfficerKeyEntry};
use mailvault::engine::{
    Companion, CompanionConfig, Damage, DeviceEnrollment, GcOptions, ObjectKind, ShareConfig,
    Tally, VerifyOptions, VerifyReport,
};
use mailvault::ids::{AccountId, DeploymentId};
use mailvault::keys::{DeviceKey, DeviceKeyFile, OfficerSecret};
use mailvault::storage::open_store;

use mailvault_server::config::{hex, write_new_private, BoxError, CompanionFile, Config};

#[derive(Parser)]
#[command(
    name = "mailvault",
    version,
    about = "IMAP and LMTP server on mailvault, and the operator's tool",
    after_help = "Exit status: 0 done; 1 failed (configuration, input, unknown account, store or \
directory error); 2 partly done (an import refused messages; also a command line clap \
could not parse); 3 an officer audit found an account the officer should recover and \
cannot; 4 a wrong credential (password, passphrase, officer key); 5 an erase not \
confirmed.\n\nSecrets (passwords, passphrases, officer keys) are read from files, or \
from the standard input with `-`, never from the command line. Logs: -v (debug), -vv \
(trace), or RUST_LOG."
)]
struct Cli {
    /// More log output on stderr (tracing): -v debug, -vv trace. RUST_LOG, when set,
    /// decides instead.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
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
    /// Account commands: create, list, show, erase; keys (epochs, re-encryption, root
    /// rotation, key export files).
    Account {
        #[command(subcommand)]
        command: AccountCommand,
    },
    /// The security officer's commands: password reset, audit, the officer log. The
    /// officer's secret key (`server-officer.key`, written by `init`) is kept offline and
    /// given as a file (or `-`, the standard input) for the command's run only.
    Officer {
        #[command(subcommand)]
        command: OfficerCommand,
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
    ///
    ///   mailvault import maildir ~alice/Maildir --config mailvault.toml --name alice@example.org
    ///
    ///   mailvault import mbox old.mbox --mailbox Archive/old --config mailvault.toml --name alice@example.org --json
    ///
    ///   mailvault import imap imaps://alice@old.example.org --source-password-file old-pw --config mailvault.toml --name alice@example.org
    ///
    ///   mailvault import maildirs /var/vmail/example.org --domain example.org --config mailvault.toml --json
    Import {
        #[command(subcommand)]
        source: ImportSource,
    },
    /// Verifies the stored objects of one account or all: the keyring against the
    /// directory's mark, the index manifests and segments, every pinned body (its header
    /// and final chunk by ranged GETs; every byte with --deep), the pending deliveries.
    /// Reports what is missing, tampered with, rolled back, orphaned (unreferenced and
    /// older than --grace) or unreadable. Reads only. Without the account's password
    /// (and always for a hardened account) only what needs no key is checked; what was
    /// skipped is listed. Exit status 0 when intact, 3 when damage was found.
    ///
    /// Examples:
    ///
    ///   mailvault verify --config mailvault.toml --all
    ///
    ///   mailvault verify --config mailvault.toml --account alice@example.org --password-file pw --deep --json
    Verify {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
        /// The account's name.
        #[arg(long, required_unless_present = "all", conflicts_with = "all")]
        account: Option<String>,
        /// Every account of the accounts table.
        #[arg(long)]
        all: bool,
        /// The account's password: open it with its keys and check everything (with
        /// --account).
        #[arg(long, requires = "account")]
        password_file: Option<PathBuf>,
        /// Read and authenticate every byte of every body.
        #[arg(long)]
        deep: bool,
        /// Unreferenced objects younger than this many seconds are writes in flight, not
        /// orphans.
        #[arg(long, default_value_t = 3600)]
        grace: u64,
        /// Print the report as one JSON object on stdout.
        #[arg(long)]
        json: bool,
        /// No progress output.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Builds the account's encrypted text index (IMAP SEARCH BODY/TEXT, JMAP text
    /// filters) for the mail it lacks: mail stored before the index existed, imported
    /// with --no-index, or delivered by an older deliverer. Pending deliveries are
    /// imported first. Reads each such body once, a step of 512 emails (one index
    /// segment) at a time. Resumable: the state is what the index covers; run it again
    /// after a kill. Needs the account's keys (--password-file, or --officer-key).
    /// Progress on a terminal, a line per step otherwise.
    ///
    /// Examples:
    ///
    ///   mailvault reindex --config mailvault.toml --account alice@example.org --password-file pw
    ///
    ///   mailvault reindex --config mailvault.toml --account bob@example.org --officer-key server-officer.key --json
    Reindex {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
        /// The account's name (or its id in hex).
        #[arg(long)]
        account: String,
        #[command(flatten)]
        unlocker: Unlocker,
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
        /// No progress output.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Removes what nothing references, older than --grace: bodies of failed or killed
    /// appends and deliveries, index objects no head needs, keyring versions the
    /// directory did not accept, and a local store's staging files left by a process
    /// killed mid-upload. Needs the account's password for bodies and index objects
    /// (without it: keyring versions and staging files only). Removes nothing by
    /// reference from an account where verify finds damage. Progress (the objects the
    /// verification checks) on a terminal, plain lines otherwise.
    ///
    /// Examples:
    ///
    ///   mailvault gc --config mailvault.toml --account alice@example.org --password-file pw --dry-run
    ///
    ///   mailvault gc --config mailvault.toml --all --json
    Gc {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
        /// The account's name.
        #[arg(long, required_unless_present = "all", conflicts_with = "all")]
        account: Option<String>,
        /// Every account of the accounts table.
        #[arg(long)]
        all: bool,
        /// The account's password (with --account).
        #[arg(long, requires = "account")]
        password_file: Option<PathBuf>,
        /// Report what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Only what is older than this many seconds.
        #[arg(long, default_value_t = 3600)]
        grace: u64,
        /// Print the summary as one JSON object on stdout.
        #[arg(long)]
        json: bool,
        /// No progress output.
        #[arg(long, short)]
        quiet: bool,
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
    ///
    ///   mailvault export maildir backup/alice --config mailvault.toml --name alice@example.org --password-file pw
    ///
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
    /// is the file's modification time. Progress: messages and bytes of the tree.
    ///
    /// Example:
    ///
    ///   mailvault import maildir ~alice/Maildir --config mailvault.toml --name alice@example.org
    Maildir {
        /// The Maildir's root folder.
        path: PathBuf,
        #[command(flatten)]
        args: ImportArgs,
    },
    /// A tree of Maildirs, one account per user directory: `ROOT/<user>/Maildir/` (homes
    /// with Dovecot's `mail_location = maildir:~/Maildir`) or `ROOT/<user>/` itself a
    /// Maildir++ tree (`/var/vmail/<domain>/<user>`), imported as `maildir` does, one
    /// account after the other. The account is the directory's name (with `--domain`,
    /// `<user>@<domain>` when the name has no `@`) and must exist: a user without an
    /// account or without a Maildir is refused (listed; exit status 2), the others
    /// imported. Resumable as `maildir`.
    ///
    /// Example:
    ///
    ///   mailvault import maildirs /var/vmail/example.org --domain example.org --config mailvault.toml --json
    Maildirs {
        /// The folder holding one directory per user.
        root: PathBuf,
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
        /// The domain appended (`<user>@<domain>`) to a directory name without `@`.
        #[arg(long)]
        domain: Option<String>,
        /// Print the summary as one JSON object on stdout: `accounts` (one import
        /// summary each, with its `account` and `maildir`), `refused` (`user`, `error`).
        #[arg(long)]
        json: bool,
        /// No progress output.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Every mailbox of an account on another IMAP server (Dovecot, Aerogramme...), read
    /// over IMAP: messages as the server serves them, flags, internal dates, folders.
    /// Read-only on the source (EXAMINE, BODY.PEEK). Resumable: each message is stored
    /// once (its delivery id comes from the server, login, mailbox, UIDVALIDITY and UID).
    /// Progress: messages (of the mailboxes' total) and bytes read.
    ///
    /// Example:
    ///
    ///   mailvault import imap imaps://alice@old.example.org --source-password-file old-pw --config mailvault.toml --name alice@example.org
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
    /// stored message), the internal date from each `From ` line. Progress: bytes of the
    /// file (and the time left) and messages read.
    ///
    /// Example:
    ///
    ///   mailvault import mbox old.mbox --mailbox Archive/old --config mailvault.toml --name alice@example.org --json
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
    /// Run again into the same folder, writes only what is missing.
    ///
    /// Example:
    ///
    ///   mailvault export maildir backup/alice --config mailvault.toml --name alice@example.org --password-file pw
    Maildir {
        /// The Maildir's root folder.
        path: PathBuf,
        #[command(flatten)]
        args: ExportArgs,
    },
    /// mbox files: with `--mailbox`, that mailbox as the file PATH; without, every
    /// mailbox as `PATH/<name>.mbox`. An existing file is not overwritten.
    ///
    /// Examples:
    ///
    ///   mailvault export mbox sent.mbox --mailbox Sent --config mailvault.toml --name alice@example.org --password-file pw --json
    ///
    ///   mailvault export mbox backup/ --config mailvault.toml --name alice@example.org --password-file pw
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
    /// Leave the messages out of the account's text index (no text extracted and
    /// sealed at delivery: a faster import); `mailvault reindex`, or the first text
    /// search, indexes them later by reading their bodies.
    #[arg(long)]
    no_index: bool,
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
enum OfficerCommand {
    /// Replaces an account's password (key model 5) with the officer key: the user forgot
    /// it. Recorded in the directory's officer log before anything is opened, and in the
    /// account, where its user sees it. The old password stops working at once.
    ///
    /// Example:
    ///
    ///   mailvault officer reset-password alice@example.org --config mailvault.toml --officer-key /media/officer/server-officer.key --password-file new-password
    ResetPassword {
        #[command(flatten)]
        target: Target,
        /// The officer's secret key file (`-`: the standard input).
        #[arg(long)]
        officer_key: PathBuf,
        /// A file holding the new password (`-`: the standard input).
        #[arg(long)]
        password_file: PathBuf,
    },
    /// Checks that the officer can recover accounts: for each (one, or every account of
    /// the table with --all) the key model, whether the officer slot opens with this
    /// officer key, and whether the root key it yields reproduces every epoch the
    /// directory lists and opens the mail index. Each audit is an officer action
    /// (logged). Exit status 3 when an account of key model 4 or 5 is not recoverable.
    ///
    /// Examples:
    ///
    ///   mailvault officer audit --all --config mailvault.toml --officer-key server-officer.key
    ///
    ///   mailvault officer audit alice@example.org --config mailvault.toml --officer-key - --json < server-officer.key
    Audit {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
        /// The account's name (or id in hex).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        name: Option<String>,
        /// Every account of the accounts table.
        #[arg(long)]
        all: bool,
        /// The officer's secret key file (`-`: the standard input).
        #[arg(long)]
        officer_key: PathBuf,
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Prints the officer actions on an account (open, reset-password, audit) as the
    /// directory's append-only officer log holds them: position, time, action, officer
    /// key. No secret needed; an erased account's log stays (give its id in hex).
    ///
    /// Example:
    ///
    ///   mailvault officer log alice@example.org --config mailvault.toml --json
    Log {
        #[command(flatten)]
        target: Target,
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AccountCommand {
    /// Lists the accounts of the accounts table: name, id, key model, flavor
    /// (transparent: model 5; hardened: keys on the user's device), creation time, and
    /// the bytes stored when the account published its usage.
    ///
    /// Example:
    ///
    ///   mailvault account list --config mailvault.toml --json
    List {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
        /// A JSON array on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Shows one account as the directory and its stored keyring say, with no secret:
    /// key model, keyring generation, whether the keyring follows the model, slots
    /// (kind, id, creation time, costs, officer key), epochs and their public keys, the
    /// number of officer log entries, limits and usage.
    ///
    /// Example:
    ///
    ///   mailvault account show alice@example.org --config mailvault.toml
    Show {
        #[command(flatten)]
        target: Target,
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Erases an account for good: its directory secret first (from then on no copy of
    /// its slots, backups included, opens), then every object it has in the store
    /// (keyring, index, bodies, deliveries), then its name in the accounts table. The
    /// officer log keeps its entries. Asks for the account name on the standard input
    /// unless --yes (exit status 5 when not confirmed). Run it again if it fails part way.
    ///
    /// Examples:
    ///
    ///   mailvault account erase bob@example.org --config mailvault.toml
    ///
    ///   mailvault account erase bob@example.org --config mailvault.toml --yes
    Erase {
        #[command(flatten)]
        target: Target,
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
    /// Adds a key epoch: deliveries and new bodies are sealed under it from now on, older
    /// bodies stay readable under theirs (`reencrypt` moves them).
    ///
    /// Example:
    ///
    ///   mailvault account add-epoch alice@example.org --config mailvault.toml --password-file pw
    AddEpoch {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        unlocker: Unlocker,
    },
    /// Re-encrypts every body under the newest key epoch and drops the older epochs from
    /// the keyring and the directory (pending deliveries imported first). Resumable: run
    /// it again after a kill; every message stays readable throughout. Progress on a
    /// terminal, plain lines otherwise.
    ///
    /// Example:
    ///
    ///   mailvault account reencrypt alice@example.org --config mailvault.toml --officer-key server-officer.key --json
    Reencrypt {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        unlocker: Unlocker,
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
        /// No progress output.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Rotates the account's root key: a new root sealed to every slot, a new epoch, the
    /// index re-keyed; a former holder of the old root (an export file, a copied keyring)
    /// reads nothing new. Resumable: a run killed part way leaves every message readable,
    /// and running it again finishes the rotation. Then `reencrypt` moves the bodies off
    /// the older epochs. Progress (index collections re-keyed) on a terminal, plain lines
    /// otherwise.
    ///
    /// Example:
    ///
    ///   mailvault account rotate-root alice@example.org --config mailvault.toml --password-file pw
    RotateRoot {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        unlocker: Unlocker,
        /// One JSON object on stdout.
        #[arg(long)]
        json: bool,
        /// No progress output.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Writes a key export file: the account's root key under a passphrase (Argon2id,
    /// 64 MiB, 3 passes), mode 0600, for `import-key` when every other credential is
    /// lost. It opens the account until the next root rotation: keep it offline.
    ///
    /// Example:
    ///
    ///   mailvault account export-key alice@example.org --config mailvault.toml --password-file pw --passphrase-file export-passphrase --out alice.key-export
    ExportKey {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        unlocker: Unlocker,
        /// A file holding the export's passphrase (`-`: the standard input).
        #[arg(long)]
        passphrase_file: PathBuf,
        /// The export file to write (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Restores access to an account (key model 5) from a key export file: opens it with
    /// the file's passphrase and sets a new password. Exit status 4 for a wrong
    /// passphrase or an export older than the account's last root rotation.
    ///
    /// Example:
    ///
    ///   mailvault account import-key alice.key-export --config mailvault.toml --passphrase-file export-passphrase --password-file new-password
    ImportKey {
        /// The key export file.
        file: PathBuf,
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
        /// A file holding the export's passphrase (`-`: the standard input).
        #[arg(long)]
        passphrase_file: PathBuf,
        /// A file holding the account's new password (`-`: the standard input).
        #[arg(long)]
        password_file: PathBuf,
    },
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
    let cli = Cli::parse();
    // The servers log what they serve; the one-shot commands only warnings, unless -v.
    let long_running = matches!(
        cli.command,
        Command::Serve { .. } | Command::Companion { .. }
    );
    let level = match (cli.verbose, long_running) {
        (0, true) => "info",
        (0, false) => "warn",
        (1, _) => "info,mailvault=debug,mailvault_server=debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .init();
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
                std::process::ExitCode::from(keyops::EXIT_PARTLY_DONE)
            } else if e.is::<Damaged>() {
                std::process::ExitCode::from(keyops::EXIT_DAMAGED)
            } else {
                std::process::ExitCode::from(keyops::exit_status(&e))
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
        // The setup commands above; the others in `keyops`.
        Command::Account { command } => account_keys(command).await,
        Command::Officer { command } => officer(command).await,
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
        Command::Import {
            source:
                ImportSource::Maildirs {
                    root,
                    config,
                    domain,
                    json,
                    quiet,
                },
        } => import_maildirs(&root, &config, domain.as_deref(), json, quiet).await,
        Command::Import { source } => import(source).await,
        Command::Gc {
            config,
            account,
            all: _,
            password_file,
            dry_run,
            grace,
            json,
            quiet,
        } => {
            let config = Config::load(&config)?;
            let options = GcOptions {
                grace: std::time::Duration::from_secs(grace),
                dry_run,
                local_root: (!config.store.contains("://")).then(|| PathBuf::from(&config.store)),
            };
            gc(
                &config,
                account.as_deref(),
                password_file.as_deref(),
                &options,
                json,
                quiet,
            )
            .await
        }
        Command::Reindex {
            config,
            account,
            unlocker,
            json,
            quiet,
        } => {
            let target = Target {
                config,
                name: account,
            };
            keyops::reindex(&target, &unlocker, json, quiet).await
        }
        Command::Verify {
            config,
            account,
            all: _,
            password_file,
            deep,
            grace,
            json,
            quiet,
        } => {
            let options = VerifyOptions {
                deep,
                grace: std::time::Duration::from_secs(grace),
                ..VerifyOptions::default()
            };
            verify(
                &Config::load(&config)?,
                account.as_deref(),
                password_file.as_deref(),
                &options,
                json,
                quiet,
            )
            .await
        }
        Command::Export { target } => export(target).await,
        Command::Serve { config } => serve(Config::load(&config)?).await,
        Command::Companion { config } => companion(CompanionFile::load(&config)?).await,
    }
}

/// The account commands of `keyops`: list, show, erase and the key operations.
async fn account_keys(command: AccountCommand) -> Result<(), BoxError> {
    match command {
        AccountCommand::List { config, json } => keyops::list(&Config::load(&config)?, json).await,
        AccountCommand::Show { target, json } => keyops::show(&target, json).await,
        AccountCommand::Erase { target, yes } => keyops::erase(&target, yes).await,
        AccountCommand::AddEpoch { target, unlocker } => {
            keyops::add_epoch(&target, &unlocker).await
        }
        AccountCommand::Reencrypt {
            target,
            unlocker,
            json,
            quiet,
        } => keyops::reencrypt(&target, &unlocker, json, quiet).await,
        AccountCommand::RotateRoot {
            target,
            unlocker,
            json,
            quiet,
        } => keyops::rotate_root(&target, &unlocker, json, quiet).await,
        AccountCommand::ExportKey {
            target,
            unlocker,
            passphrase_file,
            out,
        } => keyops::export_key(&target, &unlocker, &passphrase_file, &out).await,
        AccountCommand::ImportKey {
            file,
            config,
            passphrase_file,
            password_file,
        } => keyops::import_key(&config, &file, &passphrase_file, &password_file).await,
        AccountCommand::Create { .. }
        | AccountCommand::Enroll { .. }
        | AccountCommand::Accept { .. }
        | AccountCommand::ShowKey { .. } => Err("a setup command is run by `run`".into()),
    }
}

/// `mailvault officer`.
async fn officer(command: OfficerCommand) -> Result<(), BoxError> {
    match command {
        OfficerCommand::ResetPassword {
            target,
            officer_key,
            password_file,
        } => keyops::reset_password(&target, &officer_key, &password_file).await,
        OfficerCommand::Audit {
            config,
            name,
            all: _,
            officer_key,
            json,
        } => keyops::audit(&config, name.as_deref(), &officer_key, json).await,
        OfficerCommand::Log { target, json } => keyops::officer_log(&target, json).await,
    }
}

/// `mailvault import`.
async fn import(source: ImportSource) -> Result<(), BoxError> {
    use mailvault_server::migrate::{self, Progress};
    let args = match &source {
        ImportSource::Maildir { args, .. }
        | ImportSource::Mbox { args, .. }
        | ImportSource::Imap { args, .. } => args,
        ImportSource::Maildirs { .. } => return Err("import maildirs: not a single import".into()),
    };
    let config = Config::load(&args.config)?;
    let account = config
        .accounts()
        .lookup(&args.name)?
        .ok_or_else(|| format!("no account named {}", args.name))?;
    let provider = config.provider().await?;
    let deliverer = Arc::new(
        provider
            .deliverer(config.signing_key()?)
            .with_text(!args.no_index),
    );
    let mut summary = match &source {
        ImportSource::Maildir { path, .. } => {
            let entries = migrate::scan_maildir(path)?;
            let progress = Progress::maildir_import(&entries, args.quiet);
            let messages = entries.iter().map(migrate::read_maildir_message);
            migrate::deliver_all(deliverer, account, messages, &progress).await
        }
        ImportSource::Mbox { path, mailbox, .. } => {
            let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let total = file.metadata().map(|m| m.len()).ok();
            let progress = Progress::new("import", "messages", None, total, args.quiet);
            let source = path.canonicalize().unwrap_or_else(|_| path.clone());
            let mut reader = migrate::MboxReader::new(
                std::io::BufReader::new(file),
                mailbox,
                &source.to_string_lossy(),
            );
            let messages = std::iter::from_fn(move || reader.next_message().transpose());
            migrate::deliver_all(deliverer, account, messages, &progress).await
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
            let progress = Progress::new("import", "messages", Some(total), None, args.quiet);
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
            let summary = migrate::deliver_all(deliverer, account, messages, &progress).await;
            reader
                .join()
                .map_err(|_| "the thread reading the source failed")?;
            summary
        }
        ImportSource::Maildirs { .. } => return Err("import maildirs: not a single import".into()),
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

/// `mailvault import maildirs`: each user directory under `root` imported into its
/// account, one after the other.
async fn import_maildirs(
    root: &std::path::Path,
    config: &std::path::Path,
    domain: Option<&str>,
    json: bool,
    quiet: bool,
) -> Result<(), BoxError> {
    use mailvault_server::migrate::{self, Progress};
    let config = Config::load(config)?;
    let provider = config.provider().await?;
    let deliverer = Arc::new(provider.deliverer(config.signing_key()?));
    let mut users = Vec::new();
    for entry in std::fs::read_dir(root).map_err(|e| format!("{}: {e}", root.display()))? {
        let entry = entry.map_err(|e| format!("{}: {e}", root.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !entry.path().is_dir() {
            continue;
        }
        users.push((name, entry.path()));
    }
    users.sort();
    // (user directory, why) for each user not imported; (account, Maildir, summary).
    let mut refused: Vec<(String, String)> = Vec::new();
    let mut imported = Vec::new();
    for (user, dir) in users {
        let account_name = match domain {
            Some(domain) if !user.contains('@') => format!("{user}@{domain}"),
            _ => user.clone(),
        };
        let account = match config.accounts().lookup(&account_name) {
            Ok(Some(account)) => account,
            Ok(None) => {
                refused.push((user, format!("no account named {account_name}")));
                continue;
            }
            Err(e) => {
                refused.push((user, format!("{account_name}: {e}")));
                continue;
            }
        };
        let maildir = if dir.join("Maildir").is_dir() {
            dir.join("Maildir")
        } else {
            dir
        };
        let entries = match migrate::scan_maildir(&maildir) {
            Ok(entries) => entries,
            Err(e) => {
                refused.push((user, e.to_string()));
                continue;
            }
        };
        if !quiet {
            eprintln!(
                "import: {account_name} from {} ({} messages)",
                maildir.display(),
                entries.len()
            );
        }
        let progress = Progress::maildir_import(&entries, quiet);
        let messages = entries.iter().map(migrate::read_maildir_message);
        let summary = migrate::deliver_all(deliverer.clone(), account, messages, &progress).await;
        if !json {
            println!(
                "{account_name}: {} messages delivered, {} delivered before, {} refused; {:.1} MiB in {:.1} s",
                summary.delivered,
                summary.already,
                summary.failed.len(),
                summary.bytes as f64 / (1 << 20) as f64,
                summary.seconds
            );
        }
        imported.push((account_name, maildir, summary));
    }
    if json {
        let accounts: Vec<serde_json::Value> = imported
            .iter()
            .map(|(account, maildir, summary)| {
                let mut value: serde_json::Value =
                    serde_json::from_str(&summary.to_json()).unwrap_or_default();
                if let Some(object) = value.as_object_mut() {
                    object.insert("account".into(), account.clone().into());
                    object.insert("maildir".into(), maildir.to_string_lossy().into());
                }
                value
            })
            .collect();
        let refused_json: Vec<serde_json::Value> = refused
            .iter()
            .map(|(user, why)| serde_json::json!({ "user": user, "error": why }))
            .collect();
        println!(
            "{}",
            serde_json::json!({ "accounts": accounts, "refused": refused_json })
        );
    } else {
        println!(
            "{} accounts imported, {} refused",
            imported.len(),
            refused.len()
        );
    }
    let mut failed: Vec<(String, String)> = refused;
    for (account, _, summary) in &imported {
        failed.extend(
            summary
                .failed
                .iter()
                .map(|(what, why)| (format!("{account}: {what}"), why.clone())),
        );
    }
    job_outcome(&failed, "refused")
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

/// `mailvault verify`.
async fn verify(
    config: &Config,
    name: Option<&str>,
    password_file: Option<&std::path::Path>,
    options: &VerifyOptions,
    json: bool,
    quiet: bool,
) -> Result<(), BoxError> {
    use mailvault_server::migrate::Progress;
    let targets = targets(config, name)?;
    let provider = config.provider().await?;
    let progress = Progress::counting("verify", "objects", quiet);
    let tick = |objects: u64, bytes: u64| progress.add(objects, bytes);
    let mut reports = Vec::new();
    for (name, account) in targets {
        // A keyring that does not open (rolled back, tampered with, gone) is damage to
        // report: the account is then verified without its keys. A wrong password is
        // the operator's mistake: stop.
        let (session, not_opened) = match password_file {
            Some(path) => {
                let password = config::read_password(path)?;
                match provider.unlock(account, &password).await {
                    Ok(session) => (Some(session), None),
                    Err(e @ mailvault::Error::WrongCredential) => {
                        return Err(format!("{name}: cannot open the account: {e}").into())
                    }
                    Err(e) => (None, Some(e)),
                }
            }
            None => (None, None),
        };
        let mut report = provider
            .verify_account(account, session.as_ref(), options, &tick)
            .await
            .map_err(|e| format!("{name}: {e}"))?;
        if let Some(e) = not_opened {
            report.skipped.insert(
                0,
                format!(
                    "the account did not open with its password ({e}): verified without its keys"
                ),
            );
        }
        reports.push((name, report));
    }
    progress.finish_added();
    let intact = reports.iter().all(|(_, r)| r.is_intact());
    if json {
        let accounts: Vec<serde_json::Value> = reports
            .iter()
            .map(|(name, r)| verify_json(name, r))
            .collect();
        println!(
            "{}",
            serde_json::json!({ "intact": intact, "accounts": accounts })
        );
    } else {
        for (name, r) in &reports {
            let checked: u64 = r.checked.values().map(|t| t.objects).sum();
            let checked_bytes: u64 = r.checked.values().map(|t| t.bytes).sum();
            let keys = if r.with_keys {
                "with keys"
            } else {
                "without keys"
            };
            let state = if r.is_intact() {
                "intact".to_owned()
            } else {
                let counts: Vec<String> = Damage::ALL
                    .iter()
                    .map(|d| (d, r.count(*d)))
                    .filter(|(_, t)| t.objects > 0)
                    .map(|(d, t)| format!("{} {} ({} bytes)", t.objects, d.name(), t.bytes))
                    .collect();
                counts.join(", ")
            };
            println!(
                "{name} ({}): {state}; {checked} objects checked, {:.1} MiB, {keys}",
                r.account,
                checked_bytes as f64 / (1 << 20) as f64
            );
            for f in &r.findings {
                println!(
                    "  {} {} {}: {}",
                    f.damage.name(),
                    f.kind.name(),
                    f.path,
                    f.detail
                );
            }
            for why in &r.skipped {
                println!("  skipped: {why}");
            }
        }
    }
    if intact {
        Ok(())
    } else {
        Err(Box::new(Damaged("damage found".to_owned())))
    }
}

/// The accounts a command names: one by `--account`, or all.
fn targets(config: &Config, name: Option<&str>) -> Result<Vec<(String, AccountId)>, BoxError> {
    let accounts = config.accounts();
    Ok(match name {
        Some(name) => vec![(
            name.to_lowercase(),
            accounts
                .lookup(name)?
                .ok_or_else(|| format!("no account named {name}"))?,
        )],
        None => accounts
            .list()?
            .into_iter()
            .map(|e| (e.name, e.account))
            .collect(),
    })
}

/// `mailvault gc`.
async fn gc(
    config: &Config,
    name: Option<&str>,
    password_file: Option<&std::path::Path>,
    options: &GcOptions,
    json: bool,
    quiet: bool,
) -> Result<(), BoxError> {
    use mailvault_server::migrate::Progress;
    let provider = config.provider().await?;
    // The objects the verification of each account checks (what takes the time).
    let progress = Progress::counting("gc", "objects", quiet);
    let tick = |objects: u64, bytes: u64| progress.add(objects, bytes);
    let mut out = Vec::new();
    for (name, account) in targets(config, name)? {
        let session = match password_file {
            Some(path) => {
                let password = config::read_password(path)?;
                Some(
                    provider
                        .unlock(account, &password)
                        .await
                        .map_err(|e| format!("{name}: cannot open the account: {e}"))?,
                )
            }
            None => None,
        };
        let summary = provider
            .collect_account_garbage(account, session.as_ref(), options, &tick)
            .await
            .map_err(|e| format!("{name}: {e}"))?;
        out.push((name, account, summary));
    }
    progress.finish_added();
    if json {
        let accounts: Vec<serde_json::Value> = out
            .iter()
            .map(|(name, account, s)| {
                let orphans: Vec<serde_json::Value> = s
                    .orphans
                    .iter()
                    .map(|f| serde_json::json!({ "kind": f.kind.name(), "path": f.path, "size": f.size }))
                    .collect();
                let staging: Vec<serde_json::Value> = s
                    .staging_files
                    .iter()
                    .map(|(path, size)| serde_json::json!({ "path": path, "size": size }))
                    .collect();
                serde_json::json!({
                    "name": name,
                    "account": account.to_hex(),
                    "dry_run": options.dry_run,
                    "released_bodies": s.released_bodies,
                    "index_objects": s.index_objects,
                    "orphans": orphans,
                    "staging_files": staging,
                    "skipped": s.skipped,
                })
            })
            .collect();
        println!("{}", serde_json::json!({ "accounts": accounts }));
    } else {
        let verb = if options.dry_run {
            "would remove"
        } else {
            "removed"
        };
        for (name, _, s) in &out {
            let bytes: u64 = s.orphans.iter().filter_map(|f| f.size).sum::<u64>()
                + s.staging_files.iter().map(|(_, n)| n).sum::<u64>();
            println!(
                "{name}: {verb} {} orphans and {} staging files ({bytes} bytes); the index's collection removed {} released bodies and {} index objects",
                s.orphans.len(),
                s.staging_files.len(),
                s.released_bodies,
                s.index_objects
            );
            for f in &s.orphans {
                println!("  {} {}", f.kind.name(), f.path);
            }
            for (path, _) in &s.staging_files {
                println!("  staging file {path}");
            }
            for why in &s.skipped {
                println!("  skipped: {why}");
            }
        }
    }
    Ok(())
}

/// One account's verification as JSON.
fn verify_json(name: &str, r: &VerifyReport) -> serde_json::Value {
    let tallies = |m: &std::collections::BTreeMap<ObjectKind, Tally>| {
        let map: serde_json::Map<String, serde_json::Value> = m
            .iter()
            .map(|(k, t)| {
                (
                    k.name().to_owned(),
                    serde_json::json!({ "objects": t.objects, "bytes": t.bytes }),
                )
            })
            .collect();
        serde_json::Value::Object(map)
    };
    let summary: serde_json::Map<String, serde_json::Value> = Damage::ALL
        .iter()
        .map(|d| {
            let t = r.count(*d);
            (
                d.name().to_owned(),
                serde_json::json!({ "objects": t.objects, "bytes": t.bytes }),
            )
        })
        .collect();
    let findings: Vec<serde_json::Value> = r
        .findings
        .iter()
        .map(|f| {
            serde_json::json!({
                "damage": f.damage.name(),
                "kind": f.kind.name(),
                "path": f.path,
                "size": f.size,
                "detail": f.detail,
            })
        })
        .collect();
    serde_json::json!({
        "name": name,
        "account": r.account.to_hex(),
        "intact": r.is_intact(),
        "with_keys": r.with_keys,
        "deep": r.deep,
        "listed": tallies(&r.listed),
        "checked": tallies(&r.checked),
        "summary": summary,
        "findings": findings,
        "skipped": r.skipped,
    })
}

/// Damage found by `mailvault verify` (exit status 3).
#[derive(Debug)]
struct Damaged(String);

impl std::fmt::Display for Damaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Damaged {}

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
