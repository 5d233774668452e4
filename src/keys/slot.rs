//! Sealing and opening key slots: a 32-byte key wrapped under one unlocker (in a keyring,
//! the slot's own secret, to whose public key the keyring seals the root key; in an export
//! file, the root key itself).
//!
//! ```text
//! ikm        = password:      Argon2id(password, salt, m, t, p)        ‖ pepper ‖ account secret
//!              recovery code: the normalised code                      ‖ pepper ‖ account secret
//!              device key:    the 32-byte device key                            ‖ account secret
//!              officer:       X25519(officer secret, ephemeral public)          ‖ account secret
//! PRK        = HKDF-Extract(salt = "mailvault/v1/slot" ‖ deployment ‖ account ‖ slot id, ikm)
//! wrap key   = HKDF-Expand(PRK, "mailvault/v1/slot/wrap"   ‖ 0x00 ‖ LP(slot[0..140]), 32)
//! commitment = HKDF-Expand(PRK, "mailvault/v1/slot/commit" ‖ 0x00 ‖ LP(slot[0..140]), 32)
//! wrapped    = XChaCha20-Poly1305(wrap key, nonce, key, AD = slot[0..140] ‖ deployment ‖ account)
//! ```
//!
//! Opening checks the cost parameters against the deployment's limits first (nothing is
//! allocated for a hostile slot), then compares the commitment in constant time: a
//! mismatch is [`Error::WrongCredential`]; a match whose wrap fails to open is
//! [`Error::Tampered`]. Because the account secret (kept in the trusted directory) is in
//! every slot's input, deleting it makes every copy of every slot useless: that is
//! crypto-erase.

use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::kdf::{argon2id, KdfLimits, KdfMemory};
use super::{DeviceKey, KdfGate, OfficerPublicKey, OfficerSecret, RecoveryCode, RootKey};
use crate::crypto::kdf::{self, expand_from_extract};
use crate::crypto::record::RecordCipher;
use crate::crypto::{commitments_equal, Key32, RandomSource};
use crate::error::{Error, Result};
use crate::format::slot::{KdfParams, KeySlot, SlotKind};
use crate::ids::{AccountId, DeploymentId};

const SALT_LABEL: &[u8] = b"mailvault/v1/slot";
const WRAP_LABEL: &[u8] = b"mailvault/v1/slot/wrap";
const COMMIT_LABEL: &[u8] = b"mailvault/v1/slot/commit";

/// What every slot of one account is bound to: deployment, account, the account's
/// secret from the trusted directory, and the deployment pepper. No `Debug`.
#[derive(Clone)]
pub struct SlotBinding {
    deployment: DeploymentId,
    account: AccountId,
    account_secret: Zeroizing<[u8; 32]>,
    pepper: Option<Zeroizing<[u8; 32]>>,
}

/// What a new slot is sealed to.
pub enum SlotLock<'a> {
    /// A password, stretched with Argon2id at these costs.
    Password(&'a str, KdfParams),
    /// A recovery code.
    RecoveryCode(&'a RecoveryCode),
    /// A device key.
    DeviceKey(&'a DeviceKey),
    /// An officer public key.
    Officer(&'a OfficerPublicKey),
}

/// A credential that opens a slot.
#[derive(Clone, Copy)]
pub enum Credential<'a> {
    /// A password.
    Password(&'a str),
    /// A recovery code as typed (case, spaces and dashes are ignored).
    RecoveryCode(&'a str),
    /// A device key.
    DeviceKey(&'a DeviceKey),
    /// An officer secret key.
    Officer(&'a OfficerSecret),
}

impl SlotBinding {
    /// The binding of `account`'s slots. `account_secret` comes from the trusted directory
    /// (deleting it there erases the account); `pepper`, when the deployment has one, is
    /// held outside the bucket so that a thief of the bucket cannot start guessing
    /// passwords.
    pub fn new(
        deployment: DeploymentId,
        account: AccountId,
        account_secret: [u8; 32],
        pepper: Option<[u8; 32]>,
    ) -> Self {
        Self {
            deployment,
            account,
            account_secret: Zeroizing::new(account_secret),
            pepper: pepper.map(Zeroizing::new),
        }
    }

    /// Seals `root` into a new slot created at `now` (seconds since the Unix epoch).
    /// Password slots run Argon2id under `gate`, on a blocking thread.
    ///
    /// # Errors
    /// [`Error::Tampered`] for an officer public key of low order.
    pub async fn seal(
        &self,
        lock: SlotLock<'_>,
        root: &RootKey,
        rng: &RandomSource,
        now: u64,
        gate: &KdfGate,
    ) -> Result<KeySlot> {
        if let SlotLock::Password(password, params) = lock {
            let password = Zeroizing::new(password.to_string());
            let root = Key32::from_bytes(*root.0.expose());
            let (binding, rng) = (self.clone(), rng.clone());
            return gate
                .run(move |memory| {
                    seal_slot(
                        SlotLock::Password(&password, params),
                        &binding,
                        &root,
                        &rng,
                        now,
                        memory,
                    )
                })
                .await?;
        }
        seal_slot(lock, self, &root.0, rng, now, &mut KdfMemory::new())
    }

    /// Opens `slot` with `credential` under `gate` (password derivations wait for a
    /// permit and run on a blocking thread). A wrong password costs the same derivation
    /// as the right one. Officer slots do not open here: only through
    /// [`KeyringStore::unlock_as_officer`](super::KeyringStore::unlock_as_officer), which
    /// writes the directory's officer log first.
    ///
    /// # Errors
    /// [`Error::ExcessiveWork`] for stored costs above `limits` (refused before any
    /// allocation); [`Error::WrongCredential`] when the commitment does not match;
    /// [`Error::Tampered`] when it matches but the wrap does not open;
    /// [`Error::InvalidArgument`] for an officer key.
    pub async fn open(
        &self,
        slot: &KeySlot,
        credential: Credential<'_>,
        limits: &KdfLimits,
        gate: &KdfGate,
    ) -> Result<RootKey> {
        if matches!(credential, Credential::Officer(_)) {
            return Err(Error::invalid(
                "officer slots open through KeyringStore::unlock_as_officer, which logs first",
            ));
        }
        self.open_unlogged(slot, credential, limits, gate).await
    }

    /// [`open`](Self::open) for every credential, officer keys included: the caller has
    /// written the officer log.
    pub(crate) async fn open_unlogged(
        &self,
        slot: &KeySlot,
        credential: Credential<'_>,
        limits: &KdfLimits,
        gate: &KdfGate,
    ) -> Result<RootKey> {
        if slot.kind == SlotKind::Password {
            limits.check(&slot.kdf)?;
            let Credential::Password(password) = credential else {
                return Err(Error::WrongCredential);
            };
            let password = Zeroizing::new(password.to_string());
            let (slot, binding, limits) = (slot.clone(), self.clone(), *limits);
            let opened = gate
                .run(move |memory| {
                    open_slot(
                        &slot,
                        &Credential::Password(&password),
                        &binding,
                        &limits,
                        memory,
                    )
                })
                .await?;
            return opened.map(RootKey);
        }
        open_slot(slot, &credential, self, limits, &mut KdfMemory::new()).map(RootKey)
    }

    fn ad(&self, slot: &KeySlot) -> Vec<u8> {
        let mut ad = slot.bound_bytes().to_vec();
        ad.extend_from_slice(self.deployment.as_bytes());
        ad.extend_from_slice(self.account.as_bytes());
        ad
    }

    /// Wrap key and commitment of `slot` from the unlocker's secret bytes.
    fn keys(&self, slot: &KeySlot, secret: &[u8], peppered: bool) -> (Key32, [u8; 32]) {
        let mut ikm = Zeroizing::new(Vec::with_capacity(secret.len() + 64));
        ikm.extend_from_slice(secret);
        if peppered {
            if let Some(pepper) = &self.pepper {
                ikm.extend_from_slice(&pepper[..]);
            }
        }
        ikm.extend_from_slice(&self.account_secret[..]);
        let mut salt = Vec::with_capacity(SALT_LABEL.len() + 48);
        salt.extend_from_slice(SALT_LABEL);
        salt.extend_from_slice(self.deployment.as_bytes());
        salt.extend_from_slice(self.account.as_bytes());
        salt.extend_from_slice(&slot.id);
        let prk = kdf::extract(&salt, &ikm);
        let bound = slot.bound_bytes();
        let wrap = kdf::derive_key(&prk, WRAP_LABEL, &[&bound]);
        let mut commitment = [0u8; 32];
        expand_from_extract(&prk, COMMIT_LABEL, &[&bound], &mut commitment);
        (wrap, commitment)
    }
}

fn officer_shared(secret: &StaticSecret, public: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>> {
    crate::crypto::sealing::agree(secret, public).ok_or(Error::Tampered)
}

/// Seals `root` into a new slot.
fn seal_slot(
    lock: SlotLock<'_>,
    binding: &SlotBinding,
    root: &Key32,
    rng: &RandomSource,
    now: u64,
    memory: &mut KdfMemory,
) -> Result<KeySlot> {
    let mut slot = KeySlot {
        kind: SlotKind::Password,
        id: [0; 16],
        created: now,
        kdf: KdfParams {
            m_kib: 0,
            t: 0,
            p: 0,
        },
        salt: rng.bytes32(),
        ephemeral: [0; 32],
        officer: [0; 32],
        nonce: [0; 24],
        wrapped: [0; 48],
        commitment: [0; 32],
    };
    rng.fill(&mut slot.id);
    let (secret, peppered): (Zeroizing<Vec<u8>>, bool) = match lock {
        SlotLock::Password(password, params) => {
            slot.kdf = params;
            let stretched = argon2id(password.as_bytes(), &slot.salt, &params, memory)?;
            (Zeroizing::new(stretched.expose().to_vec()), true)
        }
        SlotLock::RecoveryCode(code) => {
            slot.kind = SlotKind::RecoveryCode;
            (Zeroizing::new(code.normalized().into_bytes()), true)
        }
        SlotLock::DeviceKey(key) => {
            slot.kind = SlotKind::DeviceKey;
            (Zeroizing::new(key.expose().to_vec()), false)
        }
        SlotLock::Officer(officer) => {
            slot.kind = SlotKind::Officer;
            let ephemeral = StaticSecret::from(rng.bytes32());
            slot.ephemeral = PublicKey::from(&ephemeral).to_bytes();
            slot.officer = officer.to_bytes();
            let shared = officer_shared(&ephemeral, &slot.officer)?;
            (Zeroizing::new(shared.to_vec()), false)
        }
    };
    let (wrap, commitment) = binding.keys(&slot, &secret, peppered);
    slot.commitment = commitment;
    let mut sealed = Vec::with_capacity(72);
    RecordCipher::new(&wrap).seal(rng, &binding.ad(&slot), root.expose(), &mut sealed);
    slot.nonce.copy_from_slice(&sealed[..24]);
    slot.wrapped.copy_from_slice(&sealed[24..]);
    Ok(slot)
}

/// Opens `slot` with `key`. Password slots run Argon2id (call this inside the
/// [`KdfGate`](super::KdfGate)); their costs are checked against `limits` first.
fn open_slot(
    slot: &KeySlot,
    key: &Credential<'_>,
    binding: &SlotBinding,
    limits: &KdfLimits,
    memory: &mut KdfMemory,
) -> Result<Key32> {
    let (secret, peppered): (Zeroizing<Vec<u8>>, bool) = match (key, slot.kind) {
        (Credential::Password(password), SlotKind::Password) => {
            limits.check(&slot.kdf)?;
            let stretched = argon2id(password.as_bytes(), &slot.salt, &slot.kdf, memory)?;
            (Zeroizing::new(stretched.expose().to_vec()), true)
        }
        (Credential::RecoveryCode(code), SlotKind::RecoveryCode) => (
            Zeroizing::new(RecoveryCode::normalize(code).into_bytes()),
            true,
        ),
        (Credential::DeviceKey(device), SlotKind::DeviceKey) => {
            (Zeroizing::new(device.expose().to_vec()), false)
        }
        (Credential::Officer(officer), SlotKind::Officer) => {
            if officer.public().to_bytes() != slot.officer {
                return Err(Error::WrongCredential);
            }
            let shared = officer_shared(officer.secret(), &slot.ephemeral)?;
            (Zeroizing::new(shared.to_vec()), false)
        }
        _ => return Err(Error::WrongCredential),
    };
    let (wrap, commitment) = binding.keys(slot, &secret, peppered);
    if !commitments_equal(&commitment, &slot.commitment) {
        return Err(Error::WrongCredential);
    }
    let mut sealed = [0u8; 72];
    sealed[..24].copy_from_slice(&slot.nonce);
    sealed[24..].copy_from_slice(&slot.wrapped);
    let root = RecordCipher::new(&wrap)
        .open(&binding.ad(slot), &sealed)
        .ok_or(Error::Tampered)?;
    let root = Zeroizing::new(root);
    let bytes: [u8; 32] = root[..].try_into().map_err(|_| Error::Tampered)?;
    Ok(Key32::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KdfLimits, DEFAULT_KDF};

    const CHEAP: KdfParams = KdfParams {
        m_kib: 256,
        t: 1,
        p: 1,
    };

    fn binding(rng: &RandomSource) -> SlotBinding {
        SlotBinding::new(
            DeploymentId::random(rng),
            AccountId::random(rng),
            rng.bytes32(),
            Some(rng.bytes32()),
        )
    }

    /// A cheap password slot for "pw".
    fn password_slot(b: &SlotBinding, root: &Key32, rng: &RandomSource) -> KeySlot {
        seal_slot(
            SlotLock::Password("pw", CHEAP),
            b,
            root,
            rng,
            0,
            &mut Vec::new(),
        )
        .unwrap()
    }

    fn open(slot: &KeySlot, key: &Credential<'_>, b: &SlotBinding) -> Result<[u8; 32]> {
        open_slot(slot, key, b, &KdfLimits::default(), &mut Vec::new()).map(|k| *k.expose())
    }

    #[test]
    fn every_kind_opens_with_its_key_and_only_with_it() {
        let rng = RandomSource::os();
        let b = binding(&rng);
        let root = Key32::random(&rng);
        let code = RecoveryCode::generate(&rng);
        let device = DeviceKey::generate(&rng);
        let officer = OfficerSecret::generate(&rng);
        let other_officer = OfficerSecret::generate(&rng);
        let public = officer.public();
        let locks = [
            (
                SlotLock::Password("correct horse", CHEAP),
                Credential::Password("correct horse"),
                Credential::Password("wrong horse"),
            ),
            (
                SlotLock::RecoveryCode(&code),
                Credential::RecoveryCode(code.as_str()),
                Credential::RecoveryCode("AAAA-AAAA"),
            ),
            (
                SlotLock::DeviceKey(&device),
                Credential::DeviceKey(&device),
                Credential::Password("x"),
            ),
            (
                SlotLock::Officer(&public),
                Credential::Officer(&officer),
                Credential::Officer(&other_officer),
            ),
        ];
        for (lock, right, wrong) in locks {
            let slot = seal_slot(lock, &b, &root, &rng, 1_700_000_000, &mut Vec::new()).unwrap();
            let bytes = slot.to_bytes();
            assert_eq!(KeySlot::parse(&bytes).unwrap(), slot);
            assert_eq!(open(&slot, &right, &b).unwrap(), *root.expose());
            assert!(
                matches!(open(&slot, &wrong, &b), Err(Error::WrongCredential)),
                "{:?}",
                slot.kind
            );
        }
        // The recovery code is forgiving about case, spaces and dashes.
        let slot = seal_slot(
            SlotLock::RecoveryCode(&code),
            &b,
            &root,
            &rng,
            0,
            &mut Vec::new(),
        )
        .unwrap();
        let typed = code.as_str().to_lowercase().replace('-', " ");
        assert_eq!(
            open(&slot, &Credential::RecoveryCode(&typed), &b).unwrap(),
            *root.expose()
        );
    }

    #[test]
    fn tampering_is_told_apart_from_a_wrong_credential() {
        let rng = RandomSource::os();
        let b = binding(&rng);
        let root = Key32::random(&rng);
        let slot = password_slot(&b, &root, &rng);
        let key = Credential::Password("pw");
        let bytes = slot.to_bytes();
        for at in 0..bytes.len() {
            let mut bad = bytes;
            bad[at] ^= 1;
            let result = KeySlot::parse(&bad).and_then(|s| open(&s, &key, &b));
            match at {
                // Header bytes: refused by the parser, or they change what the commitment
                // covers (a wrong credential, as far as the reader can tell).
                0..=139 => assert!(result.is_err(), "byte {at}"),
                // Nonce and wrapped key: the commitment still matches, the tag does not.
                140..=211 => assert!(
                    matches!(result, Err(Error::Tampered)),
                    "byte {at}: {result:?}"
                ),
                // The commitment itself.
                _ => assert!(matches!(result, Err(Error::WrongCredential)), "byte {at}"),
            }
        }
    }

    #[test]
    fn a_slot_is_bound_to_its_account_pepper_and_account_secret() {
        let rng = RandomSource::os();
        let b = binding(&rng);
        let root = Key32::random(&rng);
        let slot = password_slot(&b, &root, &rng);
        let key = Credential::Password("pw");
        let mut other = b.clone();
        other.account = AccountId::random(&rng);
        assert!(matches!(
            open(&slot, &key, &other),
            Err(Error::WrongCredential)
        ));
        let mut no_pepper = b.clone();
        no_pepper.pepper = None;
        assert!(matches!(
            open(&slot, &key, &no_pepper),
            Err(Error::WrongCredential)
        ));
        let mut erased = b.clone();
        erased.account_secret = Zeroizing::new(rng.bytes32());
        assert!(matches!(
            open(&slot, &key, &erased),
            Err(Error::WrongCredential)
        ));
    }

    #[test]
    fn absurd_costs_are_refused_before_any_allocation() {
        let rng = RandomSource::os();
        let b = binding(&rng);
        let root = Key32::random(&rng);
        let mut slot = password_slot(&b, &root, &rng);
        slot.kdf = KdfParams {
            m_kib: u32::MAX,
            t: 1,
            p: 1,
        };
        let started = std::time::Instant::now();
        let result = open(&slot, &Credential::Password("pw"), &b);
        assert!(matches!(
            result,
            Err(Error::ExcessiveWork {
                m_kib: u32::MAX,
                ..
            })
        ));
        assert!(started.elapsed() < std::time::Duration::from_millis(50));
        slot.kdf = KdfParams {
            m_kib: 1024,
            t: 1000,
            p: 1,
        };
        assert!(matches!(
            open(&slot, &Credential::Password("pw"), &b),
            Err(Error::ExcessiveWork { .. })
        ));
        slot.kdf = KdfParams {
            m_kib: 0,
            t: 1,
            p: 1,
        };
        assert!(matches!(
            open(&slot, &Credential::Password("pw"), &b),
            Err(Error::Tampered)
        ));
    }

    #[test]
    fn default_cost_slot_round_trips() {
        let rng = RandomSource::os();
        let b = binding(&rng);
        let root = Key32::random(&rng);
        let slot = seal_slot(
            SlotLock::Password("pw", DEFAULT_KDF),
            &b,
            &root,
            &rng,
            0,
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(slot.kdf, DEFAULT_KDF);
        assert_eq!(
            open(&slot, &Credential::Password("pw"), &b).unwrap(),
            *root.expose()
        );
    }

    #[test]
    fn device_key_files_round_trip() {
        let rng = RandomSource::os();
        let key = DeviceKey::generate(&rng);
        let file = key.to_file_string();
        assert_eq!(
            DeviceKey::from_file_string(&file).unwrap().expose(),
            key.expose()
        );
        assert!(DeviceKey::from_file_string("mailvault-device-key-v1:zz").is_err());
        let code = RecoveryCode::generate(&rng);
        assert_eq!(code.as_str().len(), 39);
        assert_eq!(code.as_str().matches('-').count(), 7);
    }
}
