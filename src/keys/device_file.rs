//! The device key file of a companion (key models 1 and 2): the account's root key
//! wrapped under the device key, as armored text kept on the user's device. The wrap is a
//! device-key [`KeySlot`] bound to the deployment and account (and to no directory
//! secret, no pepper: the file must open on the device with the device key alone).
//!
//! ```text
//! -----BEGIN MAILVAULT DEVICE KEYRING-----
//! hex, 64 characters a line, of:
//!    0   4  magic "MVD1"
//!    4   1  version (1)
//!    5   3  reserved, zero
//!    8  16  deployment id
//!   24  16  account id
//!   40 244  a device-key slot (see `format::slot`) wrapping the root key
//!  284  32  SHA-256 of bytes 0..284
//! -----END MAILVAULT DEVICE KEYRING-----
//! ```
//!
//! The checksum tells a damaged file ([`Error::Tampered`]) from a wrong device key
//! ([`Error::WrongCredential`], the slot's commitment): it is unkeyed, so whoever
//! rewrites the file with a matching checksum gets, at best, a wrong credential, never
//! a root key the device did not make.

use sha2::{Digest, Sha256};

use super::export::binding;
use super::{Credential, DeviceKey, KdfGate, KdfLimits, RootKey, SlotLock};
use crate::crypto::RandomSource;
use crate::error::{Error, Result};
use crate::format::slot::{KeySlot, SlotKind, SLOT_LEN};
use crate::ids::{AccountId, DeploymentId};

const BEGIN: &str = "-----BEGIN MAILVAULT DEVICE KEYRING-----";
const END: &str = "-----END MAILVAULT DEVICE KEYRING-----";
const MAGIC: [u8; 4] = *b"MVD1";
const BODY_LEN: usize = 40 + SLOT_LEN;
const LEN: usize = BODY_LEN + 32;

/// A parsed device key file: the account's root key wrapped in a device-key slot,
/// bound to the deployment and account (not to the directory's secret or the pepper: it
/// opens on the device alone), armored with a SHA-256 checksum (`MVD1`, docs/design.md
/// §12.7). The checksum tells a damaged file ([`Error::Tampered`]) from another device key
/// ([`Error::WrongCredential`], the slot's commitment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceKeyFile {
    /// The deployment the account belongs to.
    pub deployment: DeploymentId,
    /// The account.
    pub account: AccountId,
    slot: KeySlot,
}

impl DeviceKeyFile {
    /// Wraps `root` under `device_key`.
    pub(crate) async fn seal(
        deployment: DeploymentId,
        account: AccountId,
        root: &RootKey,
        device_key: &DeviceKey,
        rng: &RandomSource,
        now: u64,
        gate: &KdfGate,
    ) -> Result<Self> {
        let slot = binding(deployment, account)
            .seal(SlotLock::DeviceKey(device_key), root, rng, now, gate)
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
        let checksum = Sha256::digest(&bytes);
        bytes.extend_from_slice(&checksum);
        crate::format::armor::armor(BEGIN, END, &bytes).to_string()
    }

    /// Parses armored text.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if it is not a device key file at all (no armor);
    /// [`Error::UnsupportedVersion`] for another version; [`Error::Tampered`] for a file
    /// whose content is damaged (wrong length, checksum, magic or slot).
    pub fn parse(text: &str) -> Result<Self> {
        use crate::format::armor::{unarmor, Unarmor};
        let bytes = match unarmor(text, BEGIN, END) {
            Err(Unarmor::NotArmored) => {
                return Err(Error::invalid("not a mailvault device key file"))
            }
            Ok(bytes) if bytes.len() == LEN => bytes,
            _ => return Err(Error::Tampered),
        };
        let checksum = Sha256::digest(&bytes[..BODY_LEN]);
        if checksum[..] != bytes[BODY_LEN..] {
            return Err(Error::Tampered);
        }
        if bytes[0..4] != MAGIC {
            return Err(Error::Tampered);
        }
        if bytes[4] != 1 {
            return Err(Error::UnsupportedVersion {
                object: "device key file",
                version: bytes[4],
            });
        }
        if bytes[5..8] != [0, 0, 0] {
            return Err(Error::Tampered);
        }
        let slot = KeySlot::parse(&bytes[40..BODY_LEN])?;
        if slot.kind != SlotKind::DeviceKey {
            return Err(Error::Tampered);
        }
        let id = |range: std::ops::Range<usize>| -> Result<[u8; 16]> {
            bytes[range].try_into().map_err(|_| Error::Tampered)
        };
        Ok(Self {
            deployment: DeploymentId::from_bytes(id(8..24)?),
            account: AccountId::from_bytes(id(24..40)?),
            slot,
        })
    }

    /// Opens the root key with `device_key`.
    ///
    /// # Errors
    /// [`Error::WrongCredential`] for another device key; [`Error::Tampered`] when the
    /// slot's commitment matches but its wrap does not open.
    pub(crate) async fn open(&self, device_key: &DeviceKey) -> Result<RootKey> {
        binding(self.deployment, self.account)
            .open(
                &self.slot,
                Credential::DeviceKey(device_key),
                &KdfLimits::default(),
                &KdfGate::new(1),
            )
            .await
    }
}
