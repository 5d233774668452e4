//! Layer 5: key management. The unlockers, the key slots that wrap an account's root
//! key under each of them (password, recovery code, device key, officer) with bounded
//! password stretching, and the keyring that stores slots and epochs on the commit
//! protocol ([`KeyringStore`]). The five key models and the `Provider`/`Session` roles
//! build on it.

mod device_file;
mod export;
mod kdf;
mod keyring;
mod slot;

use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

pub use crate::directory::OfficerPublicKey;
pub use device_file::DeviceKeyFile;
pub use export::{KeyExport, EXPORT_KDF};
pub use kdf::{KdfGate, KdfLimits, DEFAULT_KDF};
pub use keyring::{check_slot_policy, KeyringStore, SlotInfo, SlotPolicy, UnlockedKeyring};
pub use slot::{Credential, SlotBinding, SlotLock};

use crate::crypto::{Key32, RandomSource};
use crate::error::{Error, Result};

/// The long-lived root key of an account: what every slot wraps. Zeroized on drop; no
/// `Debug`, no `Clone`; only this crate makes one.
pub struct RootKey(Key32);

impl RootKey {
    /// A new random root key (at account creation).
    pub fn generate(rng: &RandomSource) -> Self {
        Self(Key32::random(rng))
    }

    /// Whether two root keys are the same (constant time).
    pub fn same_as(&self, other: &RootKey) -> bool {
        crate::crypto::commitments_equal(self.0.expose(), other.0.expose())
    }
}

/// A random 256-bit key that exists only on the user's device (a key file). Zeroized on
/// drop; no `Debug`.
pub struct DeviceKey(Key32);

const DEVICE_KEY_PREFIX: &str = "mailvault-device-key-v1:";

impl DeviceKey {
    /// A new random device key.
    pub fn generate(rng: &RandomSource) -> Self {
        Self(Key32::random(rng))
    }

    /// The key file's content: a versioned prefix and 64 hex digits.
    pub fn to_file_string(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "{DEVICE_KEY_PREFIX}{}",
            crate::ids::hex(self.0.expose())
        ))
    }

    /// Reads a key file's content.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if it is not a device key file.
    pub fn from_file_string(text: &str) -> Result<Self> {
        let hex = text
            .trim()
            .strip_prefix(DEVICE_KEY_PREFIX)
            .ok_or_else(|| Error::invalid("not a mailvault device key file"))?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::invalid("a device key is 64 hex digits"));
        }
        let mut key = Zeroizing::new([0u8; 32]);
        for (i, pair) in hex.as_bytes().chunks_exact(2).enumerate() {
            let text = std::str::from_utf8(pair).map_err(|_| Error::invalid("hex"))?;
            key[i] = u8::from_str_radix(text, 16).map_err(|_| Error::invalid("hex"))?;
        }
        Ok(Self(Key32::from_bytes(*key)))
    }

    pub(crate) fn expose(&self) -> &[u8; 32] {
        self.0.expose()
    }
}

/// A recovery code: 160 random bits printed as eight groups of four base32 characters
/// (`ABCD-EFGH-…`), shown to the user once. Typing is forgiving: case, spaces and dashes
/// are ignored. Zeroized on drop; no `Debug`.
pub struct RecoveryCode(Zeroizing<String>);

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

impl RecoveryCode {
    /// A new random code.
    pub fn generate(rng: &RandomSource) -> Self {
        let mut bytes = Zeroizing::new([0u8; 20]);
        rng.fill(&mut bytes[..]);
        let mut out = String::with_capacity(39);
        let mut bits = 0u32;
        let mut acc = 0u32;
        for &b in bytes.iter() {
            acc = (acc << 8) | u32::from(b);
            bits += 8;
            while bits >= 5 {
                bits -= 5;
                if !out.is_empty() && out.len() % 5 == 4 {
                    out.push('-');
                }
                out.push(BASE32[((acc >> bits) & 31) as usize] as char);
            }
        }
        Self(Zeroizing::new(out))
    }

    /// The code, to show the user once.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn normalized(&self) -> String {
        Self::normalize(&self.0)
    }

    pub(crate) fn normalize(text: &str) -> String {
        text.chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .map(|c| c.to_ascii_uppercase())
            .collect()
    }
}

/// An officer's X25519 secret key, kept offline. Zeroized on drop; no `Debug`.
pub struct OfficerSecret {
    secret: StaticSecret,
}

impl OfficerSecret {
    /// A new random officer key.
    pub fn generate(rng: &RandomSource) -> Self {
        Self {
            secret: StaticSecret::from(rng.bytes32()),
        }
    }

    /// The key from its 32 secret bytes (as kept offline).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self {
            secret: StaticSecret::from(bytes),
        }
    }

    /// The 32 secret bytes, to keep offline.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.secret.to_bytes())
    }

    /// The public key to publish.
    pub fn public(&self) -> OfficerPublicKey {
        OfficerPublicKey::from_bytes(PublicKey::from(&self.secret).to_bytes())
    }

    pub(crate) fn secret(&self) -> &StaticSecret {
        &self.secret
    }
}
