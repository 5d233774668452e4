//! The configuration file, the server's own state files in the directory root, and the
//! accounts table (login name / recipient address → account id).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mailvault::delivery::DeliverySigningKey;
use mailvault::directory::FileDirectory;
use mailvault::engine::{Provider, ProviderConfig, ShareConfig};
use mailvault::format::slot::KdfParams;
use mailvault::ids::{AccountId, DeploymentId};
use mailvault::storage::open_store;
use serde::{Deserialize, Serialize};

/// A boxed error for the command line and the setup code.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The deployment id (hex), written by `mailvault init` in the directory root.
pub const DEPLOYMENT_FILE: &str = "server-deployment";
/// The delivery signing key (hex, mode 0600), written by `mailvault init`.
pub const SIGNING_KEY_FILE: &str = "server-delivery.key";
/// The officer secret key (hex, mode 0600), written by `mailvault init`: move it offline.
pub const OFFICER_KEY_FILE: &str = "server-officer.key";
/// The accounts table (TOML), written by `mailvault account create`.
pub const ACCOUNTS_FILE: &str = "server-accounts.toml";

/// `mailvault.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where mail is stored, as `mailvault::storage::open_store` takes it: a local
    /// directory, `memory://`, or `s3://bucket`.
    pub store: String,
    /// Root of the trusted directory (`FileDirectory`); the server's own files live there
    /// too.
    pub directory: PathBuf,
    /// IMAP listener (plain TCP), e.g. `127.0.0.1:1143`. No IMAP when missing.
    pub imap_listen: Option<SocketAddr>,
    /// IMAPS listener (implicit TLS, RFC 8314), e.g. `127.0.0.1:993`; needs `tls_cert`
    /// and `tls_key`. No IMAPS when missing.
    #[serde(default)]
    pub imaps_listen: Option<SocketAddr>,
    /// The server's certificate chain (PEM, leaf first). With `tls_key`: IMAPS on
    /// `imaps_listen`, STARTTLS on `imap_listen`, and no password on `imap_listen` before
    /// STARTTLS (LOGINDISABLED) except from the server's own address.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// The private key of `tls_cert` (PEM: PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// LMTP listener (TCP), e.g. `127.0.0.1:2424`. No LMTP when missing.
    pub lmtp_listen: Option<SocketAddr>,
    /// LMTP on a unix socket at this path (created at start, a stale one replaced), e.g.
    /// for Postfix's `lmtp:unix:` transport. No socket when missing.
    #[serde(default)]
    pub lmtp_socket: Option<PathBuf>,
    /// Argon2id costs of password slots (default: the library's `DEFAULT_KDF`).
    #[serde(default)]
    pub kdf: Option<KdfConfig>,
    /// Largest message accepted over LMTP or IMAP APPEND, bytes (default 64 MiB).
    #[serde(default = "default_max_message")]
    pub max_message_size: u32,
    /// Garbage collection of the open accounts (index segments and manifests superseded,
    /// bodies of expunged messages).
    #[serde(default)]
    pub gc: GcConfig,
    /// Waiting deliveries up to which a login imports them before it is answered; above
    /// it the login is answered at once and they arrive in the background as new mail
    /// (the library's `ShareConfig::import_at_open`). Default: no bound, a login shows
    /// every delivery.
    #[serde(default)]
    pub import_at_open: Option<u64>,
}

impl Config {
    /// `share` with this config's garbage collection and import settings.
    pub fn share(&self, share: ShareConfig) -> ShareConfig {
        let mut share = self.gc.apply(share);
        if let Some(bound) = self.import_at_open {
            share.import_at_open = bound;
        }
        share
    }
}

fn default_max_message() -> u32 {
    64 << 20
}

/// `[gc]`: garbage collection of each open account, by its handle's poller (the
/// library's `ShareConfig::gc_interval` and `gc_grace`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcConfig {
    /// Seconds between two collections of an account, at most one per interval and
    /// only while it changed recently (default 60); 0: never (another process collects).
    #[serde(default = "default_gc_secs")]
    pub interval_secs: u64,
    /// Seconds a superseded index object or a released body is kept for the readers and
    /// writers of other processes (default 60; at least the index's `verify_after`, 1 s,
    /// whatever is set).
    #[serde(default = "default_gc_secs")]
    pub grace_secs: u64,
}

fn default_gc_secs() -> u64 {
    60
}

impl Default for GcConfig {
    fn default() -> Self {
        Self {
            interval_secs: default_gc_secs(),
            grace_secs: default_gc_secs(),
        }
    }
}

impl GcConfig {
    /// `share` with this schedule.
    pub fn apply(&self, mut share: ShareConfig) -> ShareConfig {
        share.gc_interval =
            (self.interval_secs > 0).then(|| Duration::from_secs(self.interval_secs));
        share.gc_grace = Duration::from_secs(self.grace_secs);
        share
    }
}

/// Argon2id costs.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KdfConfig {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl Config {
    /// Reads and parses `path`; a relative `store` or `directory` is taken relative to the
    /// config file's folder.
    pub fn load(path: &Path) -> Result<Self, BoxError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut config: Config =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        if config.directory.is_relative() {
            config.directory = base.join(&config.directory);
        }
        for path in [
            &mut config.lmtp_socket,
            &mut config.tls_cert,
            &mut config.tls_key,
        ] {
            if let Some(path) = path.as_mut().filter(|p| p.is_relative()) {
                *path = base.join(&*path);
            }
        }
        if !config.store.contains("://") && Path::new(&config.store).is_relative() {
            config.store = base.join(&config.store).to_string_lossy().into_owned();
        }
        Ok(config)
    }

    /// The TLS acceptor of `tls_cert` and `tls_key`, `None` when neither is set; an error
    /// when only one is, when `imaps_listen` is set without them, or when the files cannot
    /// be used.
    pub fn tls(&self) -> Result<Option<tokio_rustls::TlsAcceptor>, BoxError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(crate::tls::acceptor(cert, key)?)),
            (None, None) if self.imaps_listen.is_some() => {
                Err("imaps_listen needs tls_cert and tls_key".into())
            }
            (None, None) => Ok(None),
            _ => Err("tls_cert and tls_key go together: set both or neither".into()),
        }
    }

    /// The provider settings this config asks for.
    pub fn provider_config(&self) -> ProviderConfig {
        let mut config = ProviderConfig::default();
        if let Some(k) = self.kdf {
            config.kdf = KdfParams {
                m_kib: k.m_kib,
                t: k.t,
                p: k.p,
            };
        }
        config
    }

    /// The file directory.
    pub fn open_directory(&self) -> Result<Arc<FileDirectory>, BoxError> {
        Ok(Arc::new(FileDirectory::open(&self.directory)?))
    }

    /// The provider on the configured store and directory (after `mailvault init`).
    pub async fn provider(&self) -> Result<Provider, BoxError> {
        let deployment = read_deployment(&self.directory)?;
        let store = open_store(&self.store)?;
        let directory = self.open_directory()?;
        Ok(Provider::new(store, deployment, directory, self.provider_config()).await?)
    }

    /// The delivery signing key written by `mailvault init`.
    pub fn signing_key(&self) -> Result<DeliverySigningKey, BoxError> {
        let bytes = read_hex32(&self.directory.join(SIGNING_KEY_FILE))?;
        Ok(DeliverySigningKey::from_bytes(bytes))
    }

    /// The accounts table.
    pub fn accounts(&self) -> Accounts {
        Accounts {
            path: self.directory.join(ACCOUNTS_FILE),
        }
    }
}

/// The deployment id written by `mailvault init`.
pub fn read_deployment(root: &Path) -> Result<DeploymentId, BoxError> {
    let path = root.join(DEPLOYMENT_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "cannot read {} ({e}): run `mailvault init` first",
            path.display()
        )
    })?;
    Ok(DeploymentId::from_hex(text.trim())?)
}

/// 32 bytes written in hex in a file.
pub fn read_hex32(path: &Path) -> Result<[u8; 32], BoxError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return Err(format!("{}: expected 64 hex digits", path.display()).into());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
            .map_err(|_| format!("{}: expected 64 hex digits", path.display()))?;
    }
    Ok(out)
}

/// Writes `text` to a new file readable by its owner only; refuses to overwrite.
pub fn write_new_private(path: &Path, text: &str) -> Result<(), BoxError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The accounts table: `[accounts]` with `"name" = "account id in hex"`. Names are
/// login names and recipient addresses, compared case-insensitively (stored lower-case).
/// Read on every lookup, so accounts created while the server runs are served at once.
#[derive(Debug, Clone)]
pub struct Accounts {
    path: PathBuf,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct AccountsFile {
    #[serde(default)]
    accounts: BTreeMap<String, String>,
}

impl Accounts {
    fn read(&self) -> Result<AccountsFile, BoxError> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => {
                Ok(toml::from_str(&text).map_err(|e| format!("{}: {e}", self.path.display()))?)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AccountsFile::default()),
            Err(e) => Err(format!("cannot read {}: {e}", self.path.display()).into()),
        }
    }

    /// The account of `name`, if any.
    pub fn lookup(&self, name: &str) -> Result<Option<AccountId>, BoxError> {
        let file = self.read()?;
        match file.accounts.get(&name.to_lowercase()) {
            Some(hex) => Ok(Some(AccountId::from_hex(hex)?)),
            None => Ok(None),
        }
    }

    /// Every account, by name.
    pub fn list(&self) -> Result<Vec<(String, AccountId)>, BoxError> {
        self.read()?
            .accounts
            .into_iter()
            .map(|(name, hex)| Ok((name, AccountId::from_hex(&hex)?)))
            .collect()
    }

    /// Adds `name` → `account` (refuses a name already taken). Written to a temporary
    /// file, fsynced and renamed into place.
    pub fn insert(&self, name: &str, account: AccountId) -> Result<(), BoxError> {
        let mut file = self.read()?;
        let name = name.to_lowercase();
        if file.accounts.contains_key(&name) {
            return Err(format!("account name {name} is taken").into());
        }
        file.accounts.insert(name, account.to_hex());
        let text = toml::to_string(&file)?;
        let tmp = self
            .path
            .with_extension(format!("tmp-{}", std::process::id()));
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        Ok(())
    }
}

/// `companion.toml`: a companion on the user's device (`mailvault companion`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompanionFile {
    /// The shared bucket, as `mailvault::storage::open_store` takes it (read and written
    /// directly: the same store the provider delivers to).
    pub store: String,
    /// The device's local folder (a `FileDirectory`: the device's marks, the account
    /// record, the provider's delivery keys; and the device key file,
    /// `device-keyring.key`), made by `mailvault device init`.
    pub local: PathBuf,
    /// The device key file (`mailvault-device-key-v1:` and 64 hex digits, mode 0600).
    pub device_key: PathBuf,
    /// IMAP listener: a loopback address only (`127.0.0.1:1143`); any other is refused.
    pub imap_listen: SocketAddr,
    /// The login name the device's mail client uses.
    pub login: String,
    /// A file holding the password the device's mail client uses (one trailing newline
    /// is ignored).
    pub password_file: PathBuf,
    /// How often the companion looks for new deliveries, milliseconds (default 1000).
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
    /// Largest message accepted over IMAP APPEND, bytes (default 64 MiB).
    #[serde(default = "default_max_message")]
    pub max_message_size: u32,
    /// Garbage collection of the account, as in the server's config.
    #[serde(default)]
    pub gc: GcConfig,
}

fn default_poll_ms() -> u64 {
    1000
}

impl CompanionFile {
    /// Reads and parses `path`; relative paths are taken relative to its folder. A
    /// listener on anything but a loopback address is refused.
    pub fn load(path: &Path) -> Result<Self, BoxError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut config: CompanionFile =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for path in [
            &mut config.local,
            &mut config.device_key,
            &mut config.password_file,
        ] {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
        if !config.store.contains("://") && Path::new(&config.store).is_relative() {
            config.store = base.join(&config.store).to_string_lossy().into_owned();
        }
        if !config.imap_listen.ip().is_loopback() {
            return Err(format!(
                "{}: imap_listen {} is not a loopback address: a companion serves the device only (127.0.0.1)",
                path.display(),
                config.imap_listen
            )
            .into());
        }
        if config.poll_interval_ms == 0 {
            return Err(format!("{}: poll_interval_ms must not be 0", path.display()).into());
        }
        Ok(config)
    }
}

/// A password file's content, one trailing newline (LF or CRLF) dropped; empty refused.
pub fn read_password(path: &Path) -> Result<zeroize::Zeroizing<String>, BoxError> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?,
    );
    let password = text
        .strip_suffix('\n')
        .map(|p| p.strip_suffix('\r').unwrap_or(p))
        .unwrap_or(&text);
    if password.is_empty() {
        return Err(format!("{}: the password is empty", path.display()).into());
    }
    Ok(zeroize::Zeroizing::new(password.to_string()))
}

/// Epoch public keys as lines of `<epoch> <64 hex digits>`.
pub fn format_public_keys(keys: &[(u32, [u8; 32])]) -> String {
    keys.iter()
        .map(|(epoch, key)| format!("{epoch} {}\n", hex(key)))
        .collect()
}

/// Parses lines of `<epoch> <64 hex digits>` (blank lines ignored).
pub fn parse_public_keys(text: &str) -> Result<Vec<(u32, [u8; 32])>, BoxError> {
    let mut keys = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (epoch, key) = line
            .split_once(' ')
            .ok_or_else(|| format!("public key line {line:?}: expected `<epoch> <hex>`"))?;
        let epoch: u32 = epoch
            .parse()
            .map_err(|_| format!("public key line {line:?}: bad epoch"))?;
        let key = key.trim();
        if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("public key line {line:?}: expected 64 hex digits").into());
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&key[2 * i..2 * i + 2], 16)?;
        }
        keys.push((epoch, bytes));
    }
    if keys.is_empty() {
        return Err("no public key".into());
    }
    Ok(keys)
}
