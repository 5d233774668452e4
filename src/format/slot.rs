//! Key slots: the account root key wrapped under one unlocker each (password, recovery
//! code, device key, officer key). Fixed length, so a slot's size reveals nothing and no
//! partitioning-oracle ciphertext of another length can be planted.
//!
//! ```text
//! offset len  field
//!      0   4  magic "MVSL"
//!      4   1  version (1)
//!      5   1  kind: 1 password, 2 recovery code, 3 device key, 4 officer
//!      6   2  reserved, zero
//!      8  16  slot id (random)
//!     24   8  created, seconds since the Unix epoch (u64)
//!     32   4  Argon2id memory cost in KiB (password slots; zero otherwise)
//!     36   4  Argon2id time cost
//!     40   4  Argon2id parallelism
//!     44  32  salt (random)
//!     76  32  officer slots: ephemeral X25519 public key; zero otherwise
//!    108  32  officer slots: the officer's X25519 public key; zero otherwise
//!    140  24  nonce (XChaCha20-Poly1305)
//!    164  48  wrapped root key (32) ‖ tag (16)
//!    212  32  key commitment
//!    244      end
//! ```

use crate::error::{Error, Result};

/// Magic bytes of a slot.
pub const SLOT_MAGIC: [u8; 4] = *b"MVSL";
/// Slot format version.
pub const SLOT_VERSION: u8 = 1;
/// Length of every slot.
pub const SLOT_LEN: usize = 244;
/// Bytes covered by the slot's associated data and commitment (everything before the
/// nonce).
pub const SLOT_BOUND_LEN: usize = 140;

/// What unlocks a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SlotKind {
    /// A password, stretched with Argon2id.
    Password,
    /// A high-entropy recovery code, shown once.
    RecoveryCode,
    /// A random 256-bit key that exists only on the user's device.
    DeviceKey,
    /// An officer's X25519 key pair.
    Officer,
}

impl SlotKind {
    fn to_byte(self) -> u8 {
        match self {
            SlotKind::Password => 1,
            SlotKind::RecoveryCode => 2,
            SlotKind::DeviceKey => 3,
            SlotKind::Officer => 4,
        }
    }

    fn from_byte(byte: u8) -> Result<Self> {
        match byte {
            1 => Ok(SlotKind::Password),
            2 => Ok(SlotKind::RecoveryCode),
            3 => Ok(SlotKind::DeviceKey),
            4 => Ok(SlotKind::Officer),
            _ => Err(Error::Tampered),
        }
    }
}

/// Argon2id cost parameters as stored in a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

/// One key slot (see the module documentation for the layout).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeySlot {
    /// What unlocks it.
    pub kind: SlotKind,
    /// Random id, bound into its key derivation.
    pub id: [u8; 16],
    /// Creation time, seconds since the Unix epoch.
    pub created: u64,
    /// Argon2id parameters (password slots), all zero otherwise.
    pub kdf: KdfParams,
    /// Random salt.
    pub salt: [u8; 32],
    /// Officer slots: the ephemeral public key of the sealing.
    pub ephemeral: [u8; 32],
    /// Officer slots: the officer public key it is sealed to.
    pub officer: [u8; 32],
    /// Nonce of the wrap.
    pub nonce: [u8; 24],
    /// The wrapped root key and its tag.
    pub wrapped: [u8; 48],
    /// Key commitment of the unlocking key, checked before the wrap is opened.
    pub commitment: [u8; 32],
}

impl KeySlot {
    /// The bytes covered by the wrap's associated data and by the commitment.
    pub fn bound_bytes(&self) -> [u8; SLOT_BOUND_LEN] {
        let mut out = [0u8; SLOT_BOUND_LEN];
        out[0..4].copy_from_slice(&SLOT_MAGIC);
        out[4] = SLOT_VERSION;
        out[5] = self.kind.to_byte();
        out[8..24].copy_from_slice(&self.id);
        out[24..32].copy_from_slice(&self.created.to_be_bytes());
        out[32..36].copy_from_slice(&self.kdf.m_kib.to_be_bytes());
        out[36..40].copy_from_slice(&self.kdf.t.to_be_bytes());
        out[40..44].copy_from_slice(&self.kdf.p.to_be_bytes());
        out[44..76].copy_from_slice(&self.salt);
        out[76..108].copy_from_slice(&self.ephemeral);
        out[108..140].copy_from_slice(&self.officer);
        out
    }

    /// The serialized slot.
    pub fn to_bytes(&self) -> [u8; SLOT_LEN] {
        let mut out = [0u8; SLOT_LEN];
        out[..SLOT_BOUND_LEN].copy_from_slice(&self.bound_bytes());
        out[140..164].copy_from_slice(&self.nonce);
        out[164..212].copy_from_slice(&self.wrapped);
        out[212..244].copy_from_slice(&self.commitment);
        out
    }

    /// Parses one slot of exactly [`SLOT_LEN`] bytes. Cost parameters are parsed, not
    /// judged: the unlocking code bounds them before any memory is allocated.
    ///
    /// # Errors
    /// [`Error::UnsupportedVersion`] for another version; [`Error::Tampered`] for a wrong
    /// length, magic, kind or reserved byte.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != SLOT_LEN || bytes[0..4] != SLOT_MAGIC {
            return Err(Error::Tampered);
        }
        if bytes[4] != SLOT_VERSION {
            return Err(Error::UnsupportedVersion {
                object: "key slot",
                version: bytes[4],
            });
        }
        let kind = SlotKind::from_byte(bytes[5])?;
        if bytes[6..8] != [0, 0] {
            return Err(Error::Tampered);
        }
        let take = |range: std::ops::Range<usize>| &bytes[range];
        let u32_at = |at: usize| u32::from_be_bytes(take(at..at + 4).try_into().expect("4 bytes"));
        Ok(Self {
            kind,
            id: take(8..24).try_into().expect("16 bytes"),
            created: u64::from_be_bytes(take(24..32).try_into().expect("8 bytes")),
            kdf: KdfParams {
                m_kib: u32_at(32),
                t: u32_at(36),
                p: u32_at(40),
            },
            salt: take(44..76).try_into().expect("32 bytes"),
            ephemeral: take(76..108).try_into().expect("32 bytes"),
            officer: take(108..140).try_into().expect("32 bytes"),
            nonce: take(140..164).try_into().expect("24 bytes"),
            wrapped: take(164..212).try_into().expect("48 bytes"),
            commitment: take(212..244).try_into().expect("32 bytes"),
        })
    }
}
