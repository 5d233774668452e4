//! Key export files: an account's root key wrapped under a passphrase, with stronger
//! Argon2id costs than server slots, as armored text to carry to another device (key
//! model 2). The wrap is a password [`KeySlot`] bound to the deployment and account (and
//! to no directory secret: the file must open away from the server).
//!
//! ```text
//! -----BEGIN MAILVAULT KEY EXPORT-----
//! hex, 64 characters a line, of:
//!    0   4  magic "MVX1"
//!    4   1  version (1)
//!    5   3  reserved, zero
//!    8  16  deployment id
//!   24  16  account id
//!   40 244  a password key slot (see `format::slot`)
//! -----END MAILVAULT KEY EXPORT-----
//! ```

use zeroize::Zeroizing;

use super::{Credential, KdfGate, KdfLimits, RootKey, SlotBinding, SlotLock};
use crate::crypto::RandomSource;
use crate::error::{Error, Result};
use crate::format::slot::{KdfParams, KeySlot, SlotKind, SLOT_LEN};
use crate::ids::{AccountId, DeploymentId};

/// Argon2id costs of export files: RFC 9106's second recommendation in memory and
/// passes (64 MiB, three passes), one lane.
pub const EXPORT_KDF: KdfParams = KdfParams {
    m_kib: 64 * 1024,
    t: 3,
    p: 1,
};

const BEGIN: &str = "-----BEGIN MAILVAULT KEY EXPORT-----";
const END: &str = "-----END MAILVAULT KEY EXPORT-----";
const MAGIC: [u8; 4] = *b"MVX1";
const LEN: usize = 40 + SLOT_LEN;

/// A parsed export file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyExport {
    /// The deployment the account belongs to.
    pub deployment: DeploymentId,
    /// The account.
    pub account: AccountId,
    slot: KeySlot,
}

/// The binding of a slot carried outside the keyring (an export, a device key file): no
/// account secret, no pepper, since the file must open on a machine that has neither.
pub(super) fn binding(deployment: DeploymentId, account: AccountId) -> SlotBinding {
    SlotBinding::new(deployment, account, [0; 32], None)
}

impl KeyExport {
    /// Wraps `root` under `passphrase` (runs Argon2id with [`EXPORT_KDF`]).
    pub(crate) async fn seal(
        deployment: DeploymentId,
        account: AccountId,
        root: &RootKey,
        passphrase: &str,
        rng: &RandomSource,
        now: u64,
        gate: &KdfGate,
    ) -> Result<Self> {
        let slot = binding(deployment, account)
            .seal(
                SlotLock::Password(passphrase, EXPORT_KDF),
                root,
                rng,
                now,
                gate,
            )
            .await?;
        Ok(Self {
            deployment,
            account,
            slot,
        })
    }

    /// The armored text.
    pub fn to_armored(&self) -> String {
        let mut bytes = Vec::with_capacity(LEN);
        bytes.extend_from_slice(&MAGIC);
        bytes.extend_from_slice(&[1, 0, 0, 0]);
        bytes.extend_from_slice(self.deployment.as_bytes());
        bytes.extend_from_slice(self.account.as_bytes());
        bytes.extend_from_slice(&self.slot.to_bytes());
        crate::format::armor::armor(BEGIN, END, &bytes).to_string()
    }

    /// Parses armored text.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if it is not an export file; [`Error::UnsupportedVersion`]
    /// for another version; [`Error::Tampered`] for a malformed slot.
    pub fn parse(text: &str) -> Result<Self> {
        use crate::format::armor::{unarmor, Unarmor};
        let bytes = match unarmor(text, BEGIN, END) {
            Err(Unarmor::NotArmored) => return Err(Error::invalid("not a mailvault key export")),
            Ok(bytes) if bytes.len() == LEN => bytes,
            _ => return Err(Error::invalid("a key export holds 284 bytes of hex")),
        };
        if bytes[0..4] != MAGIC {
            return Err(Error::invalid("not a mailvault key export"));
        }
        if bytes[4] != 1 {
            return Err(Error::UnsupportedVersion {
                object: "key export",
                version: bytes[4],
            });
        }
        if bytes[5..8] != [0, 0, 0] {
            return Err(Error::Tampered);
        }
        let slot = KeySlot::parse(&bytes[40..])?;
        if slot.kind != SlotKind::Password {
            return Err(Error::Tampered);
        }
        Ok(Self {
            deployment: DeploymentId::from_bytes(bytes[8..24].try_into().expect("16 bytes")),
            account: AccountId::from_bytes(bytes[24..40].try_into().expect("16 bytes")),
            slot,
        })
    }

    /// Opens the root key with `passphrase`.
    ///
    /// # Errors
    /// [`Error::WrongCredential`] for a wrong passphrase; [`Error::ExcessiveWork`] for
    /// costs above `limits`; [`Error::Tampered`] for an altered file.
    pub(crate) async fn open(
        &self,
        passphrase: &str,
        limits: &KdfLimits,
        gate: &KdfGate,
    ) -> Result<RootKey> {
        let passphrase = Zeroizing::new(passphrase.to_string());
        binding(self.deployment, self.account)
            .open(&self.slot, Credential::Password(&passphrase), limits, gate)
            .await
    }
}
