//! The keyring of an account: its slots and, sealed under a key derived from the root key,
//! its epochs. Every change publishes a new generation (the generation is in the
//! associated data) under a name of its own, then **commits** it by a compare-and-set of
//! the account's `keyring` mark in the trusted directory, from the mark it was based on to
//! `(generation, SHA-256 of the object)`. Of concurrent changes made from one generation
//! exactly one commits; the others fail with [`Error::Conflict`] and delete what they
//! published. This holds on every backend, with or without conditional writes (Garage),
//! and a reader opens only the object the mark names: a store that withholds it, or offers
//! an unaccepted sibling of the same generation, is refused. A commit deletes the
//! superseded generations at once, so an old slot does not outlive a password change in
//! the bucket (backups and object versioning are another matter: see `docs/design.md`).
//!
//! Each slot wraps a secret of its own, and the slot's root stanza seals the root key to
//! that secret's X25519 public key: whoever holds the root can seal a new one to every
//! slot without their unlockers, which is how a root rotation
//! ([`UnlockedKeyring::begin_rotation`]) revokes a former key holder (`docs/design.md`
//! §10.2 and §10.5). A rotation commits through the directory like any change.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::{Credential, KdfGate, KdfLimits, OfficerSecret, RootKey, SlotBinding, SlotLock};
use crate::crypto::kdf::{self, LABEL_KEYRING};
use crate::crypto::record::RecordCipher;
use crate::crypto::{AccountKey, Key32, RandomSource};
use crate::directory::{
    Directory, KeyModel, Mark, OfficerAction, OfficerKeyEntry, OfficerLogEntry,
};
use crate::error::{Error, Result};
use crate::format::keyring::{
    write_bound, EpochSecrets, KeyringBody, KeyringObject, RootStanza, MAX_SLOTS,
};
use crate::format::slot::{KdfParams, KeySlot, SlotKind};
use crate::ids::{AccountId, DeploymentId, WriterId};
use crate::storage::commit::{Published, VersionName, VersionedObjects};
use crate::storage::{naming, CommitMode, DynStore};
use sha2::{Digest, Sha256};

/// The directory record name of keyrings.
const RECORD: &str = "keyring";

/// First field of the context of a root stanza's wrap.
const LABEL_ROOT_STANZA: &[u8] = b"mailvault/v1/keyring/root";

/// Where keyrings are stored, and how slots are opened.
#[derive(Debug, Clone)]
pub struct KeyringStore {
    store: DynStore,
    deployment: DeploymentId,
    directory: Arc<dyn Directory>,
    rng: RandomSource,
    limits: KdfLimits,
    gate: KdfGate,
}

/// How a keyring's slots stand against the account's key model, as checked by
/// [`check_slot_policy`] when the keyring breaks nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlotPolicy {
    /// The slots follow the model.
    Holds,
    /// Models 4 and 5: the only officer slots are sealed to retired officer keys.
    /// Recovery still works with a retired key; the account should be re-sealed to the
    /// current one (`Session::add_officer_slot`).
    RetiredOfficerOnly,
}

/// Checks `slots` (public: no secret is needed) against `model` and the deployment's
/// officer key set: models 1 and 2 keep no slot on the server; models 4 and 5 keep a slot
/// sealed to an officer key of the set; no keyring holds two password slots. Whether an
/// officer slot really wraps the account's root key only an officer can tell
/// (`Provider::officer_audit`).
///
/// # Errors
/// [`Error::PolicyViolation`] naming what breaks the model.
pub fn check_slot_policy(
    model: KeyModel,
    slots: &[KeySlot],
    officers: &[OfficerKeyEntry],
) -> Result<SlotPolicy> {
    if slots
        .iter()
        .filter(|s| s.kind == SlotKind::Password)
        .count()
        > 1
    {
        return Err(Error::PolicyViolation("more than one password slot".into()));
    }
    match model {
        KeyModel::DeviceOnly | KeyModel::DeviceWithExport if !slots.is_empty() => Err(
            Error::PolicyViolation("key models 1 and 2 keep no slot on the server".into()),
        ),
        model if model.requires_officer() => {
            let sealed_to = |current_only: bool| {
                slots.iter().any(|s| {
                    s.kind == SlotKind::Officer
                        && officers
                            .iter()
                            .any(|o| o.key.to_bytes() == s.officer && (o.current || !current_only))
                })
            };
            if sealed_to(true) {
                Ok(SlotPolicy::Holds)
            } else if sealed_to(false) {
                Ok(SlotPolicy::RetiredOfficerOnly)
            } else {
                Err(Error::PolicyViolation(
                    "this key model requires a slot for an officer key".into(),
                ))
            }
        }
        _ => Ok(SlotPolicy::Holds),
    }
}

/// A slot as listed to its owner: never a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotInfo {
    /// What unlocks it.
    pub kind: SlotKind,
    /// Its id.
    pub id: [u8; 16],
    /// Creation time, seconds since the Unix epoch.
    pub created: u64,
}

/// An unlocked keyring: the root key and the epochs, in memory, zeroized on drop.
pub struct UnlockedKeyring {
    store: KeyringStore,
    account: AccountId,
    binding: SlotBinding,
    generation: u64,
    /// The directory's mark this keyring was loaded at or committed: the next commit
    /// replaces exactly this mark, or fails with a conflict.
    mark: Mark,
    slots: Vec<KeySlot>,
    /// The root stanza of each slot, in slot order.
    stanzas: Vec<RootStanza>,
    root: RootKey,
    body: KeyringBody,
    /// The slot this keyring was unlocked through and the secret it wraps (none when
    /// unlocked with the root key itself): what lets [`reload`](Self::reload) follow a
    /// root rotation committed by another session, as long as that slot remains.
    unlocked_by: Option<([u8; 16], RootKey)>,
    /// The generation of the last change this keyring committed itself (0: none).
    committed: u64,
}

impl std::fmt::Debug for UnlockedKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnlockedKeyring")
            .field("account", &self.account)
            .field("generation", &self.generation)
            .field("slots", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl KeyringStore {
    /// Keyrings on `store` for `deployment`, with the default KDF limits and gate.
    /// Keyrings commit through `directory` (see the module documentation) whatever the
    /// backend's `mode`: each version is written under a name of its own writer.
    pub fn new(
        store: DynStore,
        deployment: DeploymentId,
        directory: Arc<dyn Directory>,
        mode: CommitMode,
    ) -> Self {
        let _ = mode;
        Self {
            store,
            deployment,
            directory,
            rng: RandomSource::os(),
            limits: KdfLimits::default(),
            gate: KdfGate::default(),
        }
    }

    /// What a login for an account that does not exist costs: one Argon2id derivation of
    /// `password` at `params` (with a random salt) under the gate, as a wrong password
    /// costs, and then [`Error::WrongCredential`]. A server answers an unknown login name
    /// with it, so that the time a failed login takes does not tell whether the account
    /// exists (what remains is the directory and keyring reads, milliseconds against the
    /// derivation's tenths of a second).
    pub async fn reject_unknown(&self, password: &str, params: KdfParams) -> Error {
        let password = zeroize::Zeroizing::new(password.as_bytes().to_vec());
        let salt = self.rng.bytes32();
        let derived = self
            .gate
            .run(move |memory| super::kdf::argon2id(&password, &salt, &params, memory).map(drop))
            .await;
        match derived {
            Ok(_) => Error::WrongCredential,
            Err(e) => e,
        }
    }

    /// Uses `limits` for stored KDF costs and `gate` for concurrent derivations.
    pub fn with_kdf(mut self, limits: KdfLimits, gate: KdfGate) -> Self {
        self.limits = limits;
        self.gate = gate;
        self
    }

    /// The keyring versions of `account`, as published by `writer` (writer-unique names
    /// on every backend: the directory, not the store, decides which version holds).
    fn objects(&self, account: &AccountId, writer: WriterId) -> VersionedObjects {
        VersionedObjects::new(
            self.store.clone(),
            naming::keyring_prefix(account),
            CommitMode::WriterUnique,
            writer,
        )
        .with_max_len(crate::format::keyring::MAX_KEYRING_LEN as u64)
    }

    /// Creates the keyring of a new account: a fresh root key, epoch 1 (master key and
    /// X25519 key pair), and one slot per lock.
    ///
    /// # Errors
    /// [`Error::Conflict`] if the account already has a keyring; backend errors.
    pub async fn create(
        &self,
        account: AccountId,
        binding: SlotBinding,
        locks: Vec<SlotLock<'_>>,
    ) -> Result<UnlockedKeyring> {
        if locks.len() > MAX_SLOTS {
            return Err(Error::invalid("at most 16 slots"));
        }
        if locks
            .iter()
            .filter(|l| matches!(l, SlotLock::Password(..)))
            .count()
            > 1
        {
            return Err(Error::invalid("at most one password slot"));
        }
        let root = RootKey::generate(&self.rng);
        let mut slots = Vec::with_capacity(locks.len());
        let mut stanzas = Vec::with_capacity(locks.len());
        for lock in locks {
            let (slot, stanza, _) = self.seal_slot(&account, &binding, lock, &root).await?;
            slots.push(slot);
            stanzas.push(stanza);
        }
        let body = KeyringBody {
            epochs: vec![EpochSecrets {
                epoch: 1,
                master: self.rng.bytes32(),
                x25519: self.rng.bytes32(),
            }],
            records: Vec::new(),
            retiring: None,
        };
        let mut keyring = UnlockedKeyring {
            store: self.clone(),
            account,
            binding,
            generation: 0,
            mark: Mark::NONE,
            slots: Vec::new(),
            stanzas: Vec::new(),
            root,
            body: KeyringBody::default(),
            unlocked_by: None,
            committed: 0,
        };
        keyring.publish(slots, stanzas, body).await?;
        Ok(keyring)
    }

    /// Loads the newest keyring of `account` and unlocks it with `credential`.
    ///
    /// The work is bounded before any derivation: a keyring holds at most one password
    /// slot, so a password login runs at most one Argon2id derivation, at costs within
    /// the limits; a keyring offering several password slots is refused unopened.
    ///
    /// # Errors
    /// [`Error::NotFound`] without a keyring; [`Error::Rollback`] if the store offers an
    /// older generation than the directory recorded; [`Error::WrongCredential`] if no
    /// slot opens; [`Error::ExcessiveWork`] for hostile stored costs; [`Error::Tampered`]
    /// for altered data (several password slots included); [`Error::Conflict`] when other
    /// sessions changed the keyring faster than it could be read (try again).
    pub async fn unlock(
        &self,
        account: AccountId,
        binding: SlotBinding,
        credential: Credential<'_>,
    ) -> Result<UnlockedKeyring> {
        if let Credential::Officer(officer) = credential {
            return self
                .unlock_as_officer(account, binding, officer, OfficerAction::Open)
                .await;
        }
        let (stored, mark) = self.fetch_accepted(&account).await?;
        let parsed = KeyringObject::parse(&stored)?;
        let candidates: Vec<usize> = (0..parsed.slots.len())
            .filter(|&i| opens_kind(&credential, parsed.slots[i].kind))
            .collect();
        if matches!(credential, Credential::Password(_)) && candidates.len() > 1 {
            // No writer of this crate stores two: the store planted them.
            return Err(Error::Tampered);
        }
        let (root, unlocked_by) = self
            .open_first(account, &parsed, &candidates, credential, &binding)
            .await?;
        self.finish_unlock(account, binding, &stored, mark, root, Some(unlocked_by))
            .await
    }

    /// Opens the account with an officer key for `action`. Before any key is derived,
    /// the action is appended to the directory's officer log (which the officer cannot
    /// rewrite); if that fails, nothing is opened. Every path that opens an account with
    /// an officer key comes here.
    ///
    /// # Errors
    /// [`Error::WrongCredential`] when no slot is sealed to that officer key (nothing is
    /// logged: nothing could be opened); directory failures (nothing opened); as
    /// [`unlock`](Self::unlock).
    pub async fn unlock_as_officer(
        &self,
        account: AccountId,
        binding: SlotBinding,
        officer: &OfficerSecret,
        action: OfficerAction,
    ) -> Result<UnlockedKeyring> {
        let (stored, mark) = self.fetch_accepted(&account).await?;
        let parsed = KeyringObject::parse(&stored)?;
        let public = officer.public();
        let candidates: Vec<usize> = (0..parsed.slots.len())
            .filter(|&i| {
                let s = &parsed.slots[i];
                s.kind == SlotKind::Officer && s.officer == public.to_bytes()
            })
            .collect();
        if candidates.is_empty() {
            return Err(Error::WrongCredential);
        }
        self.directory
            .append_officer_log(&OfficerLogEntry {
                account,
                action,
                officer: public,
                time: crate::unix_now(),
            })
            .await?;
        let (root, unlocked_by) = self
            .open_first(
                account,
                &parsed,
                &candidates,
                Credential::Officer(officer),
                &binding,
            )
            .await?;
        self.finish_unlock(account, binding, &stored, mark, root, Some(unlocked_by))
            .await
    }

    /// The root key from the first of the slots of `parsed` at `candidates` that
    /// `credential` opens (the slot wraps a secret, whose root stanza yields the root),
    /// with that slot's id and secret.
    async fn open_first(
        &self,
        account: AccountId,
        parsed: &KeyringObject<'_>,
        candidates: &[usize],
        credential: Credential<'_>,
        binding: &SlotBinding,
    ) -> Result<(RootKey, ([u8; 16], RootKey))> {
        let mut last_error = Error::WrongCredential;
        for &i in candidates {
            let slot = &parsed.slots[i];
            match binding
                .open_unlogged(slot, credential, &self.limits, &self.gate)
                .await
            {
                Ok(secret) => {
                    let root = open_root(
                        &self.deployment,
                        &account,
                        slot,
                        &parsed.stanzas[i],
                        &secret,
                    )?;
                    return Ok((root, (slot.id, secret)));
                }
                Err(Error::WrongCredential) => {}
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    /// Seals a new slot for `lock`: the slot wraps a fresh secret, and the root stanza
    /// seals `root` to that secret's X25519 public key. Returns the secret too.
    async fn seal_slot(
        &self,
        account: &AccountId,
        binding: &SlotBinding,
        lock: SlotLock<'_>,
        root: &RootKey,
    ) -> Result<(KeySlot, RootStanza, RootKey)> {
        let secret = RootKey::generate(&self.rng);
        let slot = binding
            .seal(lock, &secret, &self.rng, crate::unix_now(), &self.gate)
            .await?;
        let stanza = self.seal_root(account, root, &slot, slot_public(&secret))?;
        Ok((slot, stanza, secret))
    }

    /// Seals `root` to `slot`, whose secret's X25519 public key is `public`.
    fn seal_root(
        &self,
        account: &AccountId,
        root: &RootKey,
        slot: &KeySlot,
        public: [u8; 32],
    ) -> Result<RootStanza> {
        let wrap = crate::crypto::sealing::wrap(
            &self.rng,
            &root.0,
            &public,
            &[],
            &stanza_context(&self.deployment, account, slot),
            &slot.to_bytes(),
        )?;
        Ok(RootStanza {
            public,
            ephemeral: wrap.ephemeral,
            wrapped: wrap.wrapped,
        })
    }
}

/// The X25519 public key of a slot's secret.
fn slot_public(secret: &RootKey) -> [u8; 32] {
    let secret = x25519_dalek::StaticSecret::from(*secret.0.expose());
    x25519_dalek::PublicKey::from(&secret).to_bytes()
}

fn stanza_context<'a>(
    deployment: &'a DeploymentId,
    account: &'a AccountId,
    slot: &'a KeySlot,
) -> [&'a [u8]; 4] {
    [
        LABEL_ROOT_STANZA,
        deployment.as_bytes(),
        account.as_bytes(),
        &slot.id,
    ]
}

/// Opens the root stanza of `slot` with the secret the slot wrapped. A stanza sealed to
/// another key than that secret's (a planted slot) is [`Error::Tampered`].
fn open_root(
    deployment: &DeploymentId,
    account: &AccountId,
    slot: &KeySlot,
    stanza: &RootStanza,
    slot_secret: &RootKey,
) -> Result<RootKey> {
    if slot_public(slot_secret) != stanza.public {
        return Err(Error::Tampered);
    }
    let secret = x25519_dalek::StaticSecret::from(*slot_secret.0.expose());
    let wrap = crate::format::blob::Stanza {
        ephemeral: stanza.ephemeral,
        wrapped: stanza.wrapped,
    };
    crate::crypto::sealing::unwrap(
        &secret,
        &wrap,
        &[],
        &stanza_context(deployment, account, slot),
        &slot.to_bytes(),
    )
    .map(RootKey)
}

/// Whether `credential` is the kind of unlocker a slot of `kind` wraps under.
fn opens_kind(credential: &Credential<'_>, kind: SlotKind) -> bool {
    matches!(
        (credential, kind),
        (Credential::Password(_), SlotKind::Password)
            | (Credential::RecoveryCode(_), SlotKind::RecoveryCode)
            | (Credential::DeviceKey(_), SlotKind::DeviceKey)
            | (Credential::Officer(_), SlotKind::Officer)
    )
}

impl KeyringStore {
    /// The keyring object of `account` that the directory's mark names, and that mark.
    ///
    /// With a digest in the mark, only the object of the mark's generation whose SHA-256
    /// is the digest is accepted: objects of higher generations are uncommitted (a writer
    /// in flight, or one that lost or crashed before its compare-and-set), others of the
    /// same generation are losers. Without the accepted object: [`Error::Tampered`] if
    /// something else stands at its generation, [`Error::Rollback`] if nothing does,
    /// [`Error::Conflict`] if the mark kept moving while it was read (a keyring changed
    /// faster than read: try again).
    /// A mark without a digest (written by an older version) accepts the newest object
    /// at or above its generation, as that version did.
    async fn fetch_accepted(&self, account: &AccountId) -> Result<(bytes::Bytes, Mark)> {
        let objects = self.objects(account, WriterId::from_bytes([0; 16]));
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mark = self.directory.mark(account, RECORD).await?;
            let names = objects.list().await?;
            let mut candidates: Vec<VersionName> = if mark.has_digest() {
                names
                    .iter()
                    .filter(|n| n.generation == mark.generation)
                    .copied()
                    .collect()
            } else {
                names
                    .iter()
                    .max_by_key(|n| (n.generation, n.writer))
                    .filter(|n| n.generation >= mark.generation)
                    .into_iter()
                    .copied()
                    .collect()
            };
            candidates.sort();
            let mut other = None;
            for name in candidates {
                let Some(stored) = objects.fetch(&name).await? else {
                    continue;
                };
                if mark.has_digest() && Sha256::digest(&stored)[..] != mark.digest {
                    other = Some(stored);
                    continue;
                }
                let parsed = KeyringObject::parse(&stored)?;
                if parsed.generation != name.generation
                    || name.writer.is_some_and(|w| w != parsed.writer)
                {
                    return Err(Error::Tampered);
                }
                return Ok((stored, mark));
            }
            // Not found: a concurrent commit may have moved the mark and deleted what the
            // old one named. Look again while the mark moves; a keyring that keeps changing
            // faster than it is read is a conflict (try again), not a rollback.
            let moved = self.directory.mark(account, RECORD).await? != mark;
            if moved {
                if attempts < 16 {
                    continue;
                }
                return Err(Error::Conflict {
                    path: naming::keyring_prefix(account).to_string(),
                });
            }
            if let Some(other) = other {
                // Something else stands at the accepted generation (an altered object, or
                // an unaccepted sibling with the accepted one withheld).
                KeyringObject::parse(&other)?;
                return Err(Error::Tampered);
            }
            let newest = names.iter().map(|n| n.generation).max();
            return Err(match newest {
                None if mark.generation == 0 => Error::NotFound {
                    path: naming::keyring_prefix(account).to_string(),
                },
                found => Error::Rollback {
                    seen: mark.generation,
                    found: found.unwrap_or(0),
                },
            });
        }
    }

    /// The generation of the account's keyring that the trusted directory accepted (0:
    /// none yet, or the account was erased). Reads the directory only: no object, no
    /// secret.
    ///
    /// # Errors
    /// The directory's own storage failed.
    pub async fn accepted_generation(&self, account: &AccountId) -> Result<u64> {
        Ok(self.directory.mark(account, RECORD).await?.generation)
    }

    /// The slots of the newest keyring as stored (public: a server checks them against
    /// policy without any secret).
    ///
    /// # Errors
    /// As [`unlock`](Self::unlock), before any slot is opened.
    pub async fn stored_slots(&self, account: &AccountId) -> Result<Vec<KeySlot>> {
        let (stored, _) = self.fetch_accepted(account).await?;
        Ok(KeyringObject::parse(&stored)?.slots)
    }

    async fn finish_unlock(
        &self,
        account: AccountId,
        binding: SlotBinding,
        stored: &[u8],
        mark: Mark,
        root: RootKey,
        unlocked_by: Option<([u8; 16], RootKey)>,
    ) -> Result<UnlockedKeyring> {
        let parsed = KeyringObject::parse(stored)?;
        let body = open_body(
            &self.deployment,
            &account,
            &root,
            parsed.bound,
            parsed.sealed_body,
        )?;
        let mut mark = mark;
        if !mark.has_digest() {
            // A mark of an older version: pin what was accepted. Losing this race only
            // means another session moved the mark first (the next commit of this one
            // then conflicts, as it should).
            let pinned = Mark::new(parsed.generation, Sha256::digest(stored).into());
            if self
                .directory
                .compare_and_set_mark(&account, RECORD, mark, pinned)
                .await?
            {
                mark = pinned;
            }
        }
        Ok(UnlockedKeyring {
            store: self.clone(),
            account,
            binding,
            generation: parsed.generation,
            mark,
            slots: parsed.slots,
            stanzas: parsed.stanzas,
            root,
            body,
            unlocked_by,
            committed: 0,
        })
    }

    /// Imports an export file on another device: opens its root key with `passphrase` and
    /// the account's newest keyring with it. `binding` is used for slots added later.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a file of another deployment; as
    /// [`KeyExport::open`](super::KeyExport) and [`unlock_with_root`](Self::unlock_with_root).
    pub async fn import(
        &self,
        export: &super::KeyExport,
        passphrase: &str,
        binding: SlotBinding,
    ) -> Result<UnlockedKeyring> {
        if export.deployment != self.deployment {
            return Err(Error::invalid("the export belongs to another deployment"));
        }
        // Export files are written at EXPORT_KDF, above server slots' costs.
        let limits = self.limits.admitting(&super::EXPORT_KDF);
        let root = export.open(passphrase, &limits, &self.gate).await?;
        self.unlock_with_root(export.account, binding, root).await
    }

    /// Loads the newest keyring of `account` and opens it with its root key (from an
    /// export file, or kept on the user's device in key models 1 and 2).
    ///
    /// # Errors
    /// [`Error::Tampered`] if `root` is not this account's root key; otherwise as
    /// [`unlock`](Self::unlock).
    pub async fn unlock_with_root(
        &self,
        account: AccountId,
        binding: SlotBinding,
        root: RootKey,
    ) -> Result<UnlockedKeyring> {
        let (stored, mark) = self.fetch_accepted(&account).await?;
        self.finish_unlock(account, binding, &stored, mark, root, None)
            .await
    }
}

fn ring_cipher(deployment: &DeploymentId, account: &AccountId, root: &RootKey) -> RecordCipher {
    let key: Key32 = kdf::derive_key(
        &root.0,
        LABEL_KEYRING,
        &[deployment.as_bytes(), account.as_bytes()],
    );
    RecordCipher::new(&key)
}

fn body_ad(deployment: &DeploymentId, account: &AccountId, bound: &[u8]) -> Vec<u8> {
    let mut ad = Vec::with_capacity(LABEL_KEYRING.len() + 32 + bound.len());
    ad.extend_from_slice(LABEL_KEYRING);
    ad.extend_from_slice(deployment.as_bytes());
    ad.extend_from_slice(account.as_bytes());
    ad.extend_from_slice(bound);
    ad
}

fn open_body(
    deployment: &DeploymentId,
    account: &AccountId,
    root: &RootKey,
    bound: &[u8],
    sealed: &[u8],
) -> Result<KeyringBody> {
    let plain = ring_cipher(deployment, account, root)
        .open(&body_ad(deployment, account, bound), sealed)
        .ok_or(Error::Tampered)?;
    let plain = Zeroizing::new(plain);
    KeyringBody::parse(&plain)
}

impl UnlockedKeyring {
    /// The account.
    pub fn account(&self) -> AccountId {
        self.account
    }

    /// The keyring's generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The generation of the last change this keyring committed itself (0 when none):
    /// after a change that took several commits (a root rotation), its last one.
    pub fn committed_generation(&self) -> u64 {
        self.committed
    }

    /// The slots, without secrets.
    pub fn slots(&self) -> Vec<SlotInfo> {
        self.slots
            .iter()
            .map(|s| SlotInfo {
                kind: s.kind,
                id: s.id,
                created: s.created,
            })
            .collect()
    }

    /// The account key of the newest epoch (for blobs and the index).
    ///
    /// # Errors
    /// [`Error::Tampered`] for a keyring without epochs.
    pub fn current_key(&self) -> Result<AccountKey> {
        let newest = self
            .body
            .epochs
            .iter()
            .max_by_key(|e| e.epoch)
            .ok_or(Error::Tampered)?;
        Ok(AccountKey::from_parts(
            newest.epoch,
            Key32::from_bytes(newest.master),
            Key32::from_bytes(newest.x25519),
        ))
    }

    /// Whether `other` holds the same root key (constant time): two unlocks of one
    /// account through different slots agree.
    pub fn same_root_as(&self, other: &UnlockedKeyring) -> bool {
        self.root.same_as(&other.root)
    }

    /// The account key of every live epoch, oldest first.
    pub fn epoch_keys(&self) -> Vec<AccountKey> {
        let mut epochs: Vec<&EpochSecrets> = self.body.epochs.iter().collect();
        epochs.sort_by_key(|e| e.epoch);
        epochs
            .into_iter()
            .map(|e| {
                AccountKey::from_parts(
                    e.epoch,
                    Key32::from_bytes(e.master),
                    Key32::from_bytes(e.x25519),
                )
            })
            .collect()
    }

    /// The key of the account's encrypted index. It derives from the root key, not from
    /// an epoch, so that epochs (which protect bodies and deliveries) can be added and
    /// dropped without re-keying the index; erasing the root key erases it too.
    ///
    /// # Errors
    /// None today; kept fallible for keyrings that hold their index key elsewhere.
    pub fn index_key(&self) -> Result<AccountKey> {
        Ok(self.index_key_of(&self.root))
    }

    fn index_key_of(&self, root: &RootKey) -> AccountKey {
        let master = kdf::derive_key(
            &root.0,
            crate::crypto::kdf::LABEL_INDEX_ROOT,
            &[self.store.deployment.as_bytes(), self.account.as_bytes()],
        );
        let x25519 = kdf::derive_key(&master, crate::crypto::kdf::LABEL_EPOCH_X25519, &[]);
        AccountKey::from_parts(0, master, x25519)
    }

    /// While a root rotation is under way: the index key of the previous root, under
    /// which the index stays until the rotation has re-keyed it.
    pub fn retiring_index_key(&self) -> Option<AccountKey> {
        self.body
            .retiring
            .as_ref()
            .map(|root| self.index_key_of(&RootKey(Key32::from_bytes(**root))))
    }

    /// Whether a root rotation is under way (begun, not finished).
    pub fn rotating(&self) -> bool {
        self.body.retiring.is_some()
    }

    /// Begins a root rotation, removing the slot `remove` (if any) in the same
    /// publication: a new random root key, sealed to the public key of every remaining
    /// slot's root stanza (no unlocker is needed), a new epoch (bodies and deliveries
    /// from now on are sealed under keys no earlier root opened), and the body, epoch
    /// secrets included, sealed under the new root, keeping the previous root until
    /// [`finish_rotation`](Self::finish_rotation) (the index is re-keyed in between). It
    /// commits through the directory like any change: of this and a concurrent change
    /// made from the same generation, one gets [`Error::Conflict`]. A holder of the
    /// previous root, or of a removed slot, opens no keyring from this generation on.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when a rotation is already under way (finish it
    /// first), for an unknown slot, or when no slot would remain (a keyring without
    /// slots is opened by its root key itself, which nothing would hand over); as
    /// [`change_password`](Self::change_password) (the keyring is then unchanged).
    pub async fn begin_rotation(&mut self, remove: Option<[u8; 16]>) -> Result<()> {
        if self.rotating() {
            return Err(Error::invalid(
                "a root rotation is already under way: finish it first",
            ));
        }
        if remove.is_some_and(|id| !self.slots.iter().any(|s| s.id == id)) {
            return Err(Error::invalid("no such slot"));
        }
        let (slots, stanzas): (Vec<KeySlot>, Vec<RootStanza>) = self
            .slots
            .iter()
            .cloned()
            .zip(self.stanzas.iter().copied())
            .filter(|(slot, _)| Some(slot.id) != remove)
            .unzip();
        if slots.is_empty() {
            return Err(Error::invalid(
                "a root rotation needs a slot to seal the new root to",
            ));
        }
        let new_root = RootKey::generate(&self.store.rng);
        let stanzas = slots
            .iter()
            .zip(&stanzas)
            .map(|(slot, stanza)| {
                self.store
                    .seal_root(&self.account, &new_root, slot, stanza.public)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut body = self.body.clone();
        body.retiring = Some(Zeroizing::new(*self.root.0.expose()));
        let epoch = body.epochs.iter().map(|e| e.epoch).max().unwrap_or(0) + 1;
        body.epochs.push(EpochSecrets {
            epoch,
            master: self.store.rng.bytes32(),
            x25519: self.store.rng.bytes32(),
        });
        self.commit(slots, stanzas, body, Some(new_root)).await
    }

    /// Ends the root rotation under way once the index is re-keyed: the keyring forgets
    /// the previous root. A concurrent change committed first is not reverted: the
    /// keyring is reloaded and the rotation finished on top of it (nothing to do when
    /// another session finished it, or when what is under way is another rotation, begun
    /// since: its own run finishes it). Does nothing when no rotation is under way.
    ///
    /// # Errors
    /// As [`change_password`](Self::change_password), [`Error::Conflict`] only after
    /// repeated losses (the rotation is then still under way).
    pub async fn finish_rotation(&mut self) -> Result<()> {
        let Some(retiring) = self.body.retiring.clone() else {
            return Ok(());
        };
        let mut attempts = 0;
        loop {
            attempts += 1;
            match &self.body.retiring {
                Some(now) if crate::crypto::commitments_equal(now, &retiring) => {}
                _ => return Ok(()),
            }
            let mut body = self.body.clone();
            body.retiring = None;
            match self
                .publish(self.slots.clone(), self.stanzas.clone(), body)
                .await
            {
                Err(Error::Conflict { .. }) if attempts < 64 => {
                    let pause = 1 + u64::from(self.store.rng.bytes32()[0] % 16);
                    tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                    self.reload().await?;
                }
                done => return done,
            }
        }
    }

    /// Drops an epoch from the keyring (after the re-encryption job moved every body
    /// off it): its keys are gone, and nothing sealed under it opens any more.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown epoch or the newest one; as
    /// [`change_password`](Self::change_password).
    pub async fn remove_epoch(&mut self, epoch: u32) -> Result<()> {
        let newest = self.body.epochs.iter().map(|e| e.epoch).max().unwrap_or(0);
        if epoch == newest || !self.body.epochs.iter().any(|e| e.epoch == epoch) {
            return Err(Error::invalid(
                "only an existing epoch older than the newest can be dropped",
            ));
        }
        let mut body = self.body.clone();
        body.epochs.retain(|e| e.epoch != epoch);
        self.publish(self.slots.clone(), self.stanzas.clone(), body)
            .await
    }

    /// Adds an epoch (a new master key and X25519 key pair): new blobs are sealed under
    /// it, older data stays readable. No password is needed. Returns the new epoch.
    ///
    /// # Errors
    /// As [`change_password`](Self::change_password).
    pub async fn add_epoch(&mut self) -> Result<u32> {
        let epoch = self.body.epochs.iter().map(|e| e.epoch).max().unwrap_or(0) + 1;
        let mut body = self.body.clone();
        body.epochs.push(EpochSecrets {
            epoch,
            master: self.store.rng.bytes32(),
            x25519: self.store.rng.bytes32(),
        });
        self.publish(self.slots.clone(), self.stanzas.clone(), body)
            .await?;
        Ok(epoch)
    }

    /// The X25519 public key of each live epoch (what the trusted directory must list).
    pub fn epoch_public_keys(&self) -> Vec<(u32, [u8; 32])> {
        self.body
            .epochs
            .iter()
            .map(|e| {
                let secret = x25519_dalek::StaticSecret::from(e.x25519);
                (e.epoch, x25519_dalek::PublicKey::from(&secret).to_bytes())
            })
            .collect()
    }

    /// Exports the root key as armored text protected by `passphrase` (Argon2id with
    /// [`EXPORT_KDF`](super::EXPORT_KDF), stronger than server slots): key model 2.
    ///
    /// # Errors
    /// Only if the key derivation itself fails.
    pub async fn export(&self, passphrase: &str) -> Result<String> {
        let export = super::KeyExport::seal(
            self.store.deployment,
            self.account,
            &self.root,
            passphrase,
            &self.store.rng,
            crate::unix_now(),
            &self.store.gate,
        )
        .await?;
        Ok(export.to_armored())
    }

    /// The root key wrapped under `device_key`, as the armored text of a device key file
    /// ([`DeviceKeyFile`](super::DeviceKeyFile)): what a companion keeps on the device
    /// (key models 1 and 2) to open the account again with the device key alone. After a
    /// root rotation, write it again (the file holds the root it was made with).
    ///
    /// # Errors
    /// Only if sealing fails.
    pub async fn device_key_file(&self, device_key: &super::DeviceKey) -> Result<String> {
        let file = super::DeviceKeyFile::seal(
            self.store.deployment,
            self.account,
            &self.root,
            device_key,
            &self.store.rng,
            crate::unix_now(),
            &self.store.gate,
        )
        .await?;
        Ok(file.to_armored())
    }

    /// The slots as stored (public parts only matter: for policy checks).
    pub(crate) fn key_slots(&self) -> &[KeySlot] {
        &self.slots
    }

    /// The officer slots: each slot's id and the officer public key it is sealed to.
    pub fn officer_slot_keys(&self) -> Vec<([u8; 16], [u8; 32])> {
        self.slots
            .iter()
            .filter(|s| s.kind == SlotKind::Officer)
            .map(|s| (s.id, s.officer))
            .collect()
    }

    /// The costs of the password slot, if there is one.
    pub fn password_costs(&self) -> Option<KdfParams> {
        self.slots
            .iter()
            .find(|s| s.kind == SlotKind::Password)
            .map(|s| s.kdf)
    }

    /// Officer actions recorded in the keyring, oldest first: what the user can see.
    pub fn officer_records(&self) -> &[crate::format::keyring::OfficerRecord] {
        &self.body.records
    }

    /// Records an officer action (1 opened, 2 reset the password, 3 audited) and publishes
    /// it.
    ///
    /// # Errors
    /// As [`change_password`](Self::change_password).
    pub async fn record_officer_action(&mut self, kind: u8, officer: [u8; 32]) -> Result<()> {
        let mut body = self.body.clone();
        body.records.push(crate::format::keyring::OfficerRecord {
            kind,
            time: crate::unix_now(),
            officer,
        });
        self.publish(self.slots.clone(), self.stanzas.clone(), body)
            .await
    }

    /// Replaces every password slot by one for `password`: one slot rewritten, nothing
    /// re-encrypted; the superseded keyring generations are deleted at once.
    ///
    /// # Errors
    /// As publishing: [`Error::Conflict`] if another writer changed the keyring meanwhile;
    /// backend errors.
    pub async fn change_password(&mut self, password: &str, params: KdfParams) -> Result<()> {
        let (slot, stanza, secret) = self
            .store
            .seal_slot(
                &self.account,
                &self.binding,
                SlotLock::Password(password, params),
                &self.root,
            )
            .await?;
        let id = slot.id;
        let (mut slots, mut stanzas) = self.slots_where(|s| s.kind != SlotKind::Password);
        slots.push(slot);
        stanzas.push(stanza);
        self.publish(slots, stanzas, self.body.clone()).await?;
        if self.unlocked_by.is_none() {
            // The new password slot is one this keyring knows the secret of: reloads
            // follow root rotations through it.
            self.unlocked_by = Some((id, secret));
        }
        Ok(())
    }

    /// Copies of the slots (and their root stanzas) for which `keep` holds.
    fn slots_where(&self, keep: impl Fn(&KeySlot) -> bool) -> (Vec<KeySlot>, Vec<RootStanza>) {
        self.slots
            .iter()
            .cloned()
            .zip(self.stanzas.iter().copied())
            .filter(|(slot, _)| keep(slot))
            .unzip()
    }

    /// Adds a slot.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] beyond 16 slots, or for a second password slot (a
    /// keyring holds at most one, so that a login derives at most once: use
    /// [`change_password`](Self::change_password)); as
    /// [`change_password`](Self::change_password).
    pub async fn add_slot(&mut self, lock: SlotLock<'_>) -> Result<()> {
        if self.slots.len() >= MAX_SLOTS {
            return Err(Error::invalid("at most 16 slots"));
        }
        if matches!(lock, SlotLock::Password(..))
            && self.slots.iter().any(|s| s.kind == SlotKind::Password)
        {
            return Err(Error::invalid(
                "at most one password slot: change the password instead",
            ));
        }
        let (slot, stanza, _) = self
            .store
            .seal_slot(&self.account, &self.binding, lock, &self.root)
            .await?;
        let (mut slots, mut stanzas) = (self.slots.clone(), self.stanzas.clone());
        slots.push(slot);
        stanzas.push(stanza);
        self.publish(slots, stanzas, self.body.clone()).await
    }

    /// Adds a slot sealed elsewhere, as is (the test kit uses it to plant a slot that
    /// wraps another key, as a dishonest device could). Its root stanza is sealed to a
    /// fresh key that nobody keeps, so what the slot wraps opens no root.
    ///
    /// # Errors
    /// As [`add_slot`](Self::add_slot).
    #[cfg(feature = "testkit")]
    pub async fn add_sealed_slot(&mut self, slot: KeySlot) -> Result<()> {
        if self.slots.len() >= MAX_SLOTS {
            return Err(Error::invalid("at most 16 slots"));
        }
        let nobody = slot_public(&RootKey::generate(&self.store.rng));
        let stanza = self
            .store
            .seal_root(&self.account, &self.root, &slot, nobody)?;
        let (mut slots, mut stanzas) = (self.slots.clone(), self.stanzas.clone());
        slots.push(slot);
        stanzas.push(stanza);
        self.publish(slots, stanzas, self.body.clone()).await
    }

    /// Removes the slot with `id`, without rotating the root key: whoever held the slot
    /// and kept the root it opened still opens every later keyring.
    /// [`begin_rotation`](Self::begin_rotation)`(Some(id))` removes a slot and revokes
    /// it (`Session::remove_slot` does that, and re-keys the index).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown id or the last slot; as
    /// [`change_password`](Self::change_password).
    pub async fn remove_slot(&mut self, id: [u8; 16]) -> Result<()> {
        let (slots, stanzas) = self.slots_where(|s| s.id != id);
        if slots.len() == self.slots.len() {
            return Err(Error::invalid("no such slot"));
        }
        self.publish(slots, stanzas, self.body.clone()).await
    }

    /// Loads the account's keyring as the directory names it now, with the root key held
    /// in memory: what a session does after a [`Error::Conflict`] before trying its change
    /// again. When another session rotated the root meanwhile, the new root is opened
    /// through the slot this keyring was unlocked with (its secret is kept), as long as
    /// that slot remains.
    ///
    /// # Errors
    /// [`Error::WrongCredential`] when the root was rotated and the slot this keyring
    /// was unlocked with is gone (revoked); [`Error::Tampered`] when the root was
    /// rotated and this keyring was opened with the root key itself (open it again with
    /// a credential), or for altered data; as [`KeyringStore::unlock_with_root`].
    pub async fn reload(&mut self) -> Result<()> {
        let store = &self.store;
        let (stored, mark) = store.fetch_accepted(&self.account).await?;
        let parsed = KeyringObject::parse(&stored)?;
        let opened = open_body(
            &store.deployment,
            &self.account,
            &self.root,
            parsed.bound,
            parsed.sealed_body,
        );
        let (body, rotated) = match (opened, &self.unlocked_by) {
            (Ok(body), _) => (body, None),
            (Err(Error::Tampered), Some((id, secret))) => {
                let i = parsed
                    .slots
                    .iter()
                    .position(|s| s.id == *id)
                    .ok_or(Error::WrongCredential)?;
                let root = open_root(
                    &store.deployment,
                    &self.account,
                    &parsed.slots[i],
                    &parsed.stanzas[i],
                    secret,
                )?;
                let body = open_body(
                    &store.deployment,
                    &self.account,
                    &root,
                    parsed.bound,
                    parsed.sealed_body,
                )?;
                (body, Some(root))
            }
            (Err(e), _) => return Err(e),
        };
        self.generation = parsed.generation;
        self.mark = mark;
        self.slots = parsed.slots;
        self.stanzas = parsed.stanzas;
        self.body = body;
        if let Some(root) = rotated {
            self.root = root;
        }
        Ok(())
    }

    /// Publishes `slots` and `body` as the next generation and commits it by a
    /// compare-and-set of the directory's mark from the one this keyring is based on; then
    /// deletes every other version up to that generation (older ones, and losers of the
    /// same generation). The keyring in memory changes only once the commit holds.
    ///
    /// # Errors
    /// [`Error::Conflict`] if another change committed first (nothing of this one stays
    /// in the store; [`reload`](Self::reload) and try again); backend and directory
    /// errors (the change is then not committed, unless a directory failure hid a
    /// successful compare-and-set: reload to find out).
    async fn publish(
        &mut self,
        slots: Vec<KeySlot>,
        stanzas: Vec<RootStanza>,
        body: KeyringBody,
    ) -> Result<()> {
        self.commit(slots, stanzas, body, None).await
    }

    /// [`publish`](Self::publish), with the body sealed under `new_root` when given (a
    /// root rotation), which this keyring holds from then on if the commit holds.
    async fn commit(
        &mut self,
        slots: Vec<KeySlot>,
        stanzas: Vec<RootStanza>,
        body: KeyringBody,
        new_root: Option<RootKey>,
    ) -> Result<()> {
        let store = &self.store;
        let writer = WriterId::random(&store.rng);
        let objects = store.objects(&self.account, writer);
        let generation = self.generation + 1;
        let name = objects.own_name(generation);
        let bound = write_bound(generation, &writer, &slots, &stanzas);
        let mut bytes = bound.clone();
        let root = new_root.as_ref().unwrap_or(&self.root);
        ring_cipher(&store.deployment, &self.account, root).seal(
            &store.rng,
            &body_ad(&store.deployment, &self.account, &bound),
            &body.to_bytes(),
            &mut bytes,
        );
        let committed = Mark::new(generation, Sha256::digest(&bytes).into());
        match objects.publish(generation, bytes).await {
            Ok(Published::Done) => {}
            // A name of a fresh writer id is never taken: only a hostile store says so.
            Ok(Published::Conflict) => return Err(Error::Tampered),
            Err(e) => {
                let _ = objects.delete(&name).await;
                return Err(e);
            }
        }
        let swapped = match store
            .directory
            .compare_and_set_mark(&self.account, RECORD, self.mark, committed)
            .await
        {
            Ok(swapped) => swapped,
            // The outcome is unknown: look before reporting.
            Err(e) => match store.directory.mark(&self.account, RECORD).await {
                Ok(mark) if mark == committed => true,
                _ => return Err(e),
            },
        };
        if !swapped {
            let _ = objects.delete(&name).await;
            return Err(Error::Conflict {
                path: objects.path(&name).to_string(),
            });
        }
        self.generation = generation;
        self.committed = generation;
        self.mark = committed;
        self.slots = slots;
        self.stanzas = stanzas;
        self.body = body;
        if let Some(root) = new_root {
            self.root = root;
        }
        if let Some((id, _)) = &self.unlocked_by {
            if !self.slots.iter().any(|s| s.id == *id) {
                self.unlocked_by = None;
            }
        }
        // The change is committed: cleaning up is best effort (what a failure leaves,
        // the next commit deletes), never a reason to report the change as failed.
        match objects.list().await {
            Ok(listed) => {
                for old in listed
                    .into_iter()
                    .filter(|n| n.generation <= generation && *n != name)
                {
                    if let Err(e) = objects.delete(&old).await {
                        tracing::warn!(error = %e, "superseded keyring version left in the store");
                        break;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "superseded keyring versions not listed");
            }
        }
        Ok(())
    }
}
