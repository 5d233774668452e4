//! The companion kit (issue 12, item 10): the hardened flavor's key holder, run on the
//! user's device. See [`Companion`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use zeroize::Zeroizing;

use super::{PendingCheck, Session, ShareConfig, SharedAccount};
use crate::blob::{BlobConfig, BlobStore};
use crate::directory::{
    AccountLimits, AccountRecord, DeliveryKeyEntry, Directory, FileDirectory, KeyModel,
    PublishedUsage,
};
use crate::error::{Error, Result};
use crate::ids::{AccountId, DeploymentId};
use crate::index::{IndexConfig, IndexStore};
use crate::keys::{
    Credential, DeviceKey, DeviceKeyFile, KeyringStore, SlotBinding, SlotLock, DEFAULT_KDF,
};
use crate::mail::MailConfig;
use crate::storage::{naming, AccountScopedStore, CommitMode, DynStore};

/// Settings of a [`Companion`].
#[derive(Debug, Clone, Copy)]
pub struct CompanionConfig {
    /// How the account's handle follows the bucket. The default polls every second,
    /// imports deliveries and finds them by listing ([`PendingCheck::ListEnvelopes`]).
    pub share: ShareConfig,
    /// How index commits are made. No probe is written to find out what the backend
    /// honours, so this says it: [`CommitMode::WriterUnique`] (the default) commits
    /// through the local directory and is correct on every backend;
    /// [`CommitMode::CompareAndSwap`] only on a backend known to honour conditional
    /// creates (local disk, AWS S3, moto; not Garage 2.5).
    pub mode: CommitMode,
    /// Tuning of the account's index.
    pub index: IndexConfig,
    /// How blobs are uploaded.
    pub blobs: BlobConfig,
    /// How much of a message an append parses.
    pub mail: MailConfig,
}

impl Default for CompanionConfig {
    fn default() -> Self {
        Self {
            share: ShareConfig {
                pending: PendingCheck::ListEnvelopes,
                ..ShareConfig::default()
            },
            mode: CommitMode::WriterUnique,
            index: IndexConfig::default(),
            blobs: BlobConfig::default(),
            mail: MailConfig::default(),
        }
    }
}

/// What the provider hands a device when it enrolls an account whose keys the device
/// makes: the deployment, the account, its key model, the per-account secret that slots
/// are bound to, and the provider's delivery verification keys (so that the device's
/// imports accept what the provider's deliverer signed). It holds a secret (the account
/// secret, the provider's handle for crypto-erase): carry it over an authenticated,
/// private channel and delete it once the device is set up. No `Debug` of the secret.
#[derive(Clone)]
pub struct DeviceEnrollment {
    /// The deployment.
    pub deployment: DeploymentId,
    /// The account.
    pub account: AccountId,
    /// Its key model.
    pub model: KeyModel,
    /// The provider's delivery verification keys (current and retired).
    pub delivery_keys: Vec<DeliveryKeyEntry>,
    secret: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for DeviceEnrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceEnrollment")
            .field("deployment", &self.deployment)
            .field("account", &self.account)
            .field("model", &self.model)
            .field("delivery_keys", &self.delivery_keys.len())
            .finish_non_exhaustive()
    }
}

const ENROLLMENT_BEGIN: &str = "-----BEGIN MAILVAULT DEVICE ENROLLMENT-----";
const ENROLLMENT_END: &str = "-----END MAILVAULT DEVICE ENROLLMENT-----";
const ENROLLMENT_MAGIC: [u8; 4] = *b"MVN1";

impl DeviceEnrollment {
    pub(crate) fn new(
        deployment: DeploymentId,
        account: AccountId,
        model: KeyModel,
        secret: [u8; 32],
        delivery_keys: Vec<DeliveryKeyEntry>,
    ) -> Self {
        Self {
            deployment,
            account,
            model,
            delivery_keys,
            secret: Zeroizing::new(secret),
        }
    }

    /// The armored text (see docs/design.md §12.7):
    /// `"MVN1" ‖ version 1 ‖ model ‖ 2 zero bytes ‖ deployment ‖ account ‖ account secret
    /// ‖ u8 key count ‖ per key: Ed25519 public key (32) ‖ current (1)`, in hex.
    pub fn to_armored(&self) -> Zeroizing<String> {
        let mut bytes = Zeroizing::new(Vec::with_capacity(73 + 33 * self.delivery_keys.len()));
        bytes.extend_from_slice(&ENROLLMENT_MAGIC);
        bytes.extend_from_slice(&[1, self.model.number(), 0, 0]);
        bytes.extend_from_slice(self.deployment.as_bytes());
        bytes.extend_from_slice(self.account.as_bytes());
        bytes.extend_from_slice(&self.secret[..]);
        bytes.push(u8::try_from(self.delivery_keys.len()).unwrap_or(u8::MAX));
        for key in self.delivery_keys.iter().take(usize::from(u8::MAX)) {
            bytes.extend_from_slice(&key.key);
            bytes.push(u8::from(key.current));
        }
        crate::format::armor::armor(ENROLLMENT_BEGIN, ENROLLMENT_END, &bytes)
    }

    /// Parses armored text.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if it is not an enrollment, or a malformed one;
    /// [`Error::UnsupportedVersion`] for another version.
    pub fn parse(text: &str) -> Result<Self> {
        let malformed = || Error::invalid("malformed device enrollment");
        use crate::format::armor::{unarmor, Unarmor};
        let bytes = unarmor(text, ENROLLMENT_BEGIN, ENROLLMENT_END).map_err(|e| match e {
            Unarmor::NotArmored => Error::invalid("not a mailvault device enrollment"),
            Unarmor::Malformed => malformed(),
        })?;
        if bytes.len() < 73 || bytes[0..4] != ENROLLMENT_MAGIC {
            return Err(malformed());
        }
        if bytes[4] != 1 {
            return Err(Error::UnsupportedVersion {
                object: "device enrollment",
                version: bytes[4],
            });
        }
        let model = KeyModel::from_number(bytes[5]).ok_or_else(malformed)?;
        let count = usize::from(bytes[72]);
        if bytes[6..8] != [0, 0] || bytes.len() != 73 + 33 * count {
            return Err(malformed());
        }
        let mut delivery_keys = Vec::with_capacity(count);
        for entry in bytes[73..].chunks_exact(33) {
            let key: [u8; 32] = entry[..32].try_into().map_err(|_| malformed())?;
            let current = match entry[32] {
                0 => false,
                1 => true,
                _ => return Err(malformed()),
            };
            delivery_keys.push(DeliveryKeyEntry { key, current });
        }
        let id = |range: std::ops::Range<usize>| -> Result<[u8; 16]> {
            bytes[range].try_into().map_err(|_| malformed())
        };
        let secret: [u8; 32] = bytes[40..72].try_into().map_err(|_| malformed())?;
        Ok(Self::new(
            DeploymentId::from_bytes(id(8..24)?),
            AccountId::from_bytes(id(24..40)?),
            model,
            secret,
            delivery_keys,
        ))
    }
}

/// An account opened on the user's device (issue 12, item 10).
///
/// In the hardened flavor the provider holds only an account's public keys: it delivers
/// mail sealed to them and cannot read it. The device holds the keys and serves the
/// user's mail client itself, over the same bucket. Its state on the device is a **local
/// folder**: a [`FileDirectory`] with the device's own trusted marks (the keyring's, the
/// index's, the account record with its public keys, the provider's delivery verification
/// keys), and the **device key file** ([`DeviceKeyFile`], named [`Companion::KEY_FILE`](Self::KEY_FILE)):
/// the account's root key wrapped under the device key, which the device keeps apart
/// (its own file, a keychain).
///
/// Enrollment, key model 1 (keys only on the device):
/// 1. the provider enrolls the account ([`Provider::device_enrollment`](super::Provider::device_enrollment))
///    and hands the device the [`DeviceEnrollment`] over its authenticated channel;
/// 2. the device creates the keyring ([`Companion::create`](Self::create)): a new root key and epoch,
///    the keyring published in the bucket (a keyring without slots), the local folder
///    and the key file written; it returns the epoch public keys;
/// 3. the provider accepts the keyring with those public keys
///    ([`Provider::accept_keyring`](super::Provider::accept_keyring)): from then on its
///    deliverer seals the account's mail to them.
///
/// Then [`Companion::open`](Self::open) opens the account with the device key alone: it reads the key
/// file, opens the keyring, and gives the account's [`SharedAccount`], whose poller
/// imports deliveries as they arrive. It touches only the account's objects (the store is
/// wrapped in an [`AccountScopedStore`]) and **writes nothing to probe the bucket**: the
/// commit mode is the configuration's ([`CompanionConfig::mode`]; by default writer-unique
/// names committed through the local directory, correct on every backend whatever its
/// conditional writes).
///
/// The provider's delivery counter lives in the provider's directory, which the device
/// does not read: the companion's poller finds pending deliveries by listing the
/// account's delivery prefix ([`PendingCheck::ListEnvelopes`]), one LIST per interval.
#[derive(Debug, Clone)]
pub struct Companion {
    deployment: DeploymentId,
    handle: SharedAccount,
    key_path: PathBuf,
    directory: Arc<dyn Directory>,
}

impl Companion {
    /// The name of the device key file in the local folder.
    pub const KEY_FILE: &'static str = "device-keyring.key";

    /// On the device, step 2 of the enrollment: creates the account's keyring (a new
    /// root key and epoch, no slot: key models 1 and 2) in `store`, the local folder
    /// `local` (a [`FileDirectory`]: the account record with the epoch public keys, the
    /// provider's delivery verification keys, the keyring's mark) and the device key file
    /// sealed under `device_key`. Returns the epoch public keys, for the provider's
    /// [`accept_keyring`](super::Provider::accept_keyring).
    ///
    /// # Errors
    /// As [`create_with_slots`](Self::create_with_slots) with no slot.
    pub async fn create(
        store: DynStore,
        local: &Path,
        enrollment: &DeviceEnrollment,
        device_key: &DeviceKey,
        config: CompanionConfig,
    ) -> Result<Vec<(u32, [u8; 32])>> {
        Self::create_with_slots(store, local, enrollment, device_key, Vec::new(), config).await
    }

    /// [`create`](Self::create) for every key model a device makes: models 1 and 2 take
    /// no slot; model 3 takes a password slot (its Argon2id runs here, the password never
    /// leaves the device), model 4 a password and an officer slot (for a current officer
    /// key of the deployment: the provider's `accept_keyring` refuses the keyring
    /// otherwise), and in models 3 and 4 the device adds a slot of its own
    /// ([`SlotLock::DeviceKey`] under `device_key`): with it the device follows a root
    /// rotation (its key file then holds a root that no longer opens the keyring, and
    /// [`open`](Self::open) rewrites it from that slot).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for key model 5 (the provider makes its keys), slots
    /// that do not fit the model (any slot in models 1 and 2, no password slot in models
    /// 3 and 4, no officer slot in model 4, a device-key slot given), an enrollment
    /// without a delivery verification key, or a key file already in `local`;
    /// [`Error::Conflict`] if the account has a keyring already; backend and file errors.
    pub async fn create_with_slots(
        store: DynStore,
        local: &Path,
        enrollment: &DeviceEnrollment,
        device_key: &DeviceKey,
        slots: Vec<SlotLock<'_>>,
        config: CompanionConfig,
    ) -> Result<Vec<(u32, [u8; 32])>> {
        let slots = slots_for(enrollment.model, slots, device_key)?;
        if enrollment.delivery_keys.is_empty() {
            return Err(Error::invalid(
                "the enrollment lists no delivery verification key",
            ));
        }
        let key_path = local.join(Self::KEY_FILE);
        if key_path.exists() {
            return Err(Error::invalid(format!(
                "{} exists: this folder holds a device already",
                key_path.display()
            )));
        }
        let account = enrollment.account;
        let directory = Arc::new(FileDirectory::open(local)?);
        let store: DynStore = Arc::new(AccountScopedStore::new(store, &account));
        let keyrings = KeyringStore::new(
            store.clone(),
            enrollment.deployment,
            directory.clone(),
            config.mode,
        );
        // The local folder is new, so its mark cannot refuse a second keyring of the
        // account: look in the store first (another device, or this one enrolled twice).
        match keyrings.stored_slots(&account).await {
            Err(Error::NotFound { .. }) => {}
            Ok(_) => {
                return Err(Error::Conflict {
                    path: naming::keyring_prefix(&account).to_string(),
                })
            }
            Err(e) => return Err(e),
        }
        directory
            .set_delivery_keys(enrollment.delivery_keys.clone())
            .await?;
        let mut record = AccountRecord::new(enrollment.model, Vec::new(), *enrollment.secret);
        directory
            .set_account_record(&account, record.clone())
            .await?;
        let binding = SlotBinding::new(enrollment.deployment, account, *enrollment.secret, None);
        let keyring = keyrings.create(account, binding, slots).await?;
        let public_keys = keyring.epoch_public_keys();
        record.public_keys = public_keys.clone();
        directory.set_account_record(&account, record).await?;
        let file = keyring.device_key_file(device_key).await?;
        // The account's first mail state (its mailboxes), so that opening writes nothing.
        session(keyring, store, enrollment.deployment, directory, &config)?
            .mailstore()
            .await?;
        write_private(&key_path, &file, false)?;
        Ok(public_keys)
    }

    /// Opens the account of the key file in `local` with `device_key`: reads and opens the
    /// key file, opens the keyring from `store` (checked against the local folder's mark),
    /// and opens the account's [`SharedAccount`] (importing what was delivered meanwhile;
    /// its poller then imports deliveries as they arrive, within one poll interval).
    /// Every request goes to the account's own objects ([`AccountScopedStore`]); nothing
    /// is written to probe the bucket.
    ///
    /// # Errors
    /// [`Error::NotFound`] without a key file, or without the account's record in the
    /// local folder (a key file of another account); [`Error::WrongCredential`] for another device key,
    /// and for a device whose slot was removed (models 3 and 4: it was revoked, the root
    /// rotated; enroll it again); [`Error::Tampered`] for a damaged key file, and for a
    /// key file older than a root rotation in models 1 and 2 (which do not rotate: a
    /// keyring whose body the file's root does not open was altered); as
    /// [`KeyringStore::unlock_with_root`] and [`SharedAccount::open`].
    ///
    /// A key file made before a root rotation (models 3 and 4) still opens: the new root
    /// comes from the device's own slot, and the file is rewritten with it, so that the
    /// old root is needed no more.
    pub async fn open(
        store: DynStore,
        local: &Path,
        device_key: &DeviceKey,
        config: CompanionConfig,
    ) -> Result<Self> {
        let key_path = local.join(Self::KEY_FILE);
        let text = match std::fs::read_to_string(&key_path) {
            Ok(text) => Zeroizing::new(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound {
                    path: key_path.display().to_string(),
                })
            }
            Err(e) => return Err(Error::Config(format!("{}: {e}", key_path.display()))),
        };
        let file = DeviceKeyFile::parse(&text)?;
        let root = file.open(device_key).await?;
        let (deployment, account) = (file.deployment, file.account);
        let directory: Arc<dyn Directory> = Arc::new(FileDirectory::open(local)?);
        let record = directory
            .account_record(&account)
            .await?
            .ok_or_else(|| Error::NotFound {
                path: format!(
                    "{}: no record of account {account} (a key file of another account?)",
                    local.display()
                ),
            })?;
        let binding = SlotBinding::new(deployment, account, *record.secret(), None);
        let store: DynStore = Arc::new(AccountScopedStore::new(store, &account));
        let keyrings = KeyringStore::new(store.clone(), deployment, directory.clone(), config.mode);
        let keyring = match keyrings
            .unlock_with_root(account, binding.clone(), root)
            .await
        {
            // The root was rotated since the file was written (the keyring's body does
            // not open under it): a device with a slot of its own (models 3 and 4) opens
            // the new root from that slot and rewrites its file.
            Err(Error::Tampered) if has_device_slot(record.model) => {
                let keyring = keyrings
                    .unlock(account, binding, Credential::DeviceKey(device_key))
                    .await?;
                let text = keyring.device_key_file(device_key).await?;
                write_private(&key_path, &text, true)?;
                tracing::info!(%account, "device key file rewritten after a root rotation");
                keyring
            }
            opened => opened?,
        };
        let session = session(keyring, store, deployment, directory.clone(), &config)?;
        let handle = SharedAccount::open(session, config.share).await?;
        Ok(Self {
            deployment,
            handle,
            key_path,
            directory,
        })
    }

    /// The account.
    pub fn account(&self) -> AccountId {
        self.handle.account()
    }

    /// The deployment.
    pub fn deployment(&self) -> DeploymentId {
        self.deployment
    }

    /// The account's shared handle: what every connection of the device's mail client
    /// uses.
    pub fn handle(&self) -> &SharedAccount {
        &self.handle
    }

    /// The path of the key file in `local`.
    pub fn key_file_path(local: &Path) -> PathBuf {
        local.join(Self::KEY_FILE)
    }

    /// Rotates the account's root key (key models 3 and 4: docs/design.md §10.5): a new
    /// root sealed to every slot, a new epoch, the index re-keyed, the handle's mail
    /// opened again under the new key; then rewrites the device key file with the new
    /// root (`device_key`: the key this companion was opened with). Returns the epoch
    /// public keys, for the provider's
    /// [`accept_keyring`](super::Provider::accept_keyring): until it has them, its
    /// deliverer seals to the previous epoch (whose secret the keyring keeps).
    ///
    /// A crash between the rotation and the rewrite leaves the old file: the next
    /// [`open`](Self::open) finds it stale and rewrites it from the device's slot.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] in key models 1 and 2 (no slot: the root key is the
    /// device's own credential, it is not rotated); as
    /// [`Session::rotate_root`]; file errors (the rotation holds, the file is rewritten
    /// at the next open).
    pub async fn rotate_root(&self, device_key: &DeviceKey) -> Result<Vec<(u32, [u8; 32])>> {
        let (public_keys, file) = self.handle.rotate_root(device_key).await?;
        write_private(&self.key_path, &file, true)?;
        Ok(public_keys)
    }

    /// Sets the account's limits on the device (the provider decides them and hands them
    /// over with the enrollment's channel): the storage quota and message size that the
    /// device's own appends and copies are checked against, inside their commit
    /// (docs/design.md §12.4b). Written to the local folder's account record; the
    /// account's handle uses them at once, and its poller publishes the usage to the
    /// local folder once per change ([`usage`](Self::usage)).
    ///
    /// # Errors
    /// [`Error::NotFound`] without the account's record in the folder; file errors.
    pub async fn set_limits(&self, limits: AccountLimits) -> Result<()> {
        let mut mail = self.handle.write().await;
        let account = self.account();
        let mut record = self
            .directory
            .account_record(&account)
            .await?
            .ok_or_else(|| Error::NotFound {
                path: format!("the account record of {account}"),
            })?;
        record.limits = limits;
        self.directory.set_account_record(&account, record).await?;
        mail.reload_limits().await?;
        Ok(())
    }

    /// The account's usage as of the handle's state (bytes stored, bytes of deliveries
    /// imported), also published to the local folder. The provider's deliverer holds no
    /// key and the device's folder is not the provider's directory: for the deliverer to
    /// refuse mail over quota, the device carries this to the provider, which records it
    /// with [`Provider::accept_usage`](super::Provider::accept_usage).
    ///
    /// # Errors
    /// [`Error::Tampered`] for a record that does not parse; a directory failure.
    pub async fn usage(&self) -> Result<PublishedUsage> {
        self.handle.read().await.publish_usage().await
    }
}

/// Whether a device of `model` keeps a slot of its own in the keyring (models 3 and 4).
fn has_device_slot(model: KeyModel) -> bool {
    matches!(
        model,
        KeyModel::DevicePassword | KeyModel::DevicePasswordWithOfficer
    )
}

/// The slots a device creates for `model`: `given`, checked against the model, and the
/// device's own slot where the keyring holds slots.
fn slots_for<'a>(
    model: KeyModel,
    mut given: Vec<SlotLock<'a>>,
    device_key: &'a DeviceKey,
) -> Result<Vec<SlotLock<'a>>> {
    let count = |given: &[SlotLock<'_>], which: fn(&SlotLock<'_>) -> bool| {
        given.iter().filter(|l| which(l)).count()
    };
    let passwords = count(&given, |l| matches!(l, SlotLock::Password(..)));
    let officers = count(&given, |l| matches!(l, SlotLock::Officer(_)));
    if count(&given, |l| matches!(l, SlotLock::DeviceKey(_))) > 0 {
        return Err(Error::invalid(
            "the device adds its own device-key slot: give none",
        ));
    }
    match model {
        KeyModel::DeviceOnly | KeyModel::DeviceWithExport if !given.is_empty() => Err(
            Error::invalid("key models 1 and 2 keep no slot in the keyring"),
        ),
        KeyModel::DeviceOnly | KeyModel::DeviceWithExport => Ok(given),
        KeyModel::DevicePassword | KeyModel::DevicePasswordWithOfficer if passwords != 1 => {
            Err(Error::invalid("key models 3 and 4 need one password slot"))
        }
        KeyModel::DevicePasswordWithOfficer if officers == 0 => Err(Error::invalid(
            "key model 4 needs a slot for a current officer key",
        )),
        KeyModel::DevicePassword | KeyModel::DevicePasswordWithOfficer => {
            given.push(SlotLock::DeviceKey(device_key));
            Ok(given)
        }
        _ => Err(Error::invalid(
            "the provider makes the keys of this key model, not a device",
        )),
    }
}

/// A session of the device over `keyring`, with the local directory.
fn session(
    keyring: crate::keys::UnlockedKeyring,
    store: DynStore,
    deployment: DeploymentId,
    directory: Arc<dyn Directory>,
    config: &CompanionConfig,
) -> Result<Session> {
    Session::new(
        keyring,
        BlobStore::new(store.clone(), deployment).with_config(config.blobs),
        IndexStore::with_mode(store, deployment, directory.clone(), config.mode)
            .with_config(config.index),
        DEFAULT_KDF,
        config.mail,
        directory,
    )
}

/// Writes `text` to `path` readable by its owner only, never over an existing file
/// unless `replace` (see [`crate::localfs`]).
fn write_private(path: &Path, text: &str, replace: bool) -> Result<()> {
    let how = crate::localfs::Placement {
        private: true,
        replace,
    };
    crate::localfs::write_file(path, text.as_bytes(), how)
        .map_err(|(at, e)| Error::Config(format!("{}: {e}", at.display())))
}
