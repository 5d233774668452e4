//! The keyring of an account: its key slots in clear (each protects itself) and, sealed
//! under a key derived from the account root key, its epochs (master key and X25519
//! secret of each) and the record of officer actions. Versioned with the commit protocol:
//! the generation is in the header and so in the associated data.
//!
//! ```text
//! offset len  field
//!      0   4  magic "MVK1"
//!      4   1  version (1)
//!      5   1  slot count (at most 16)
//!      6   2  reserved, zero
//!      8   8  generation (u64)
//!     16  16  writer id
//!     32   …  slots, 244 bytes each (see `format::slot`)
//!      …   …  sealed body: nonce (24) ‖ ciphertext ‖ tag (16)
//!
//! body plaintext
//!     2  epoch count (u16), then per epoch: epoch (u32) ‖ master key (32) ‖ X25519 secret (32)
//!     2  record count (u16), then per record: kind (1) ‖ time (u64) ‖ officer public key (32)
//! ```

use crate::error::{Error, Result};
use crate::format::slot::{KeySlot, SLOT_LEN};
use crate::ids::WriterId;

/// Magic bytes of a keyring.
pub const KEYRING_MAGIC: [u8; 4] = *b"MVK1";
/// Keyring format version.
pub const KEYRING_VERSION: u8 = 1;
/// Most slots a keyring holds.
pub const MAX_SLOTS: usize = 16;
/// Length of the keyring header.
pub const KEYRING_HEADER_LEN: usize = 32;
/// Length of one epoch in the body.
pub const EPOCH_LEN: usize = 68;
/// Length of one officer record in the body.
pub const RECORD_LEN: usize = 41;
/// The largest keyring a reader accepts, checked before its bytes are read: above the
/// largest this version can express (16 slots, 65 535 epochs and 65 535 officer records,
/// about 7 MiB).
pub const MAX_KEYRING_LEN: usize = 16 << 20;
const _: () = assert!(
    KEYRING_HEADER_LEN
        + MAX_SLOTS * SLOT_LEN
        + 24
        + 2
        + 65_535 * EPOCH_LEN
        + 2
        + 65_535 * RECORD_LEN
        + 16
        <= MAX_KEYRING_LEN
);

/// A parsed keyring object: header fields, slots, and the still-sealed body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyringObject<'a> {
    /// Generation.
    pub generation: u64,
    /// Writer of this generation.
    pub writer: WriterId,
    /// The slots.
    pub slots: Vec<KeySlot>,
    /// The bytes the body's associated data covers (header and slots).
    pub bound: &'a [u8],
    /// The sealed body.
    pub sealed_body: &'a [u8],
}

/// Serializes the header and slots (the bound part) of a keyring.
pub fn write_bound(generation: u64, writer: &WriterId, slots: &[KeySlot]) -> Vec<u8> {
    assert!(slots.len() <= MAX_SLOTS, "at most {MAX_SLOTS} slots");
    let mut out = Vec::with_capacity(KEYRING_HEADER_LEN + slots.len() * SLOT_LEN);
    out.extend_from_slice(&KEYRING_MAGIC);
    out.push(KEYRING_VERSION);
    out.push(slots.len() as u8);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&generation.to_be_bytes());
    out.extend_from_slice(writer.as_bytes());
    for slot in slots {
        out.extend_from_slice(&slot.to_bytes());
    }
    out
}

impl<'a> KeyringObject<'a> {
    /// Parses a stored keyring.
    ///
    /// # Errors
    /// [`Error::UnsupportedVersion`] for another version; [`Error::Tampered`] for any
    /// malformed byte, a slot count above [`MAX_SLOTS`] or a truncated object.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        if bytes.len() < KEYRING_HEADER_LEN || bytes[0..4] != KEYRING_MAGIC {
            return Err(Error::Tampered);
        }
        if bytes[4] != KEYRING_VERSION {
            return Err(Error::UnsupportedVersion {
                object: "keyring",
                version: bytes[4],
            });
        }
        let count = bytes[5] as usize;
        if count > MAX_SLOTS || bytes[6..8] != [0, 0] {
            return Err(Error::Tampered);
        }
        let bound_len = KEYRING_HEADER_LEN + count * SLOT_LEN;
        if bytes.len() < bound_len {
            return Err(Error::Tampered);
        }
        let slots = bytes[KEYRING_HEADER_LEN..bound_len]
            .chunks_exact(SLOT_LEN)
            .map(KeySlot::parse)
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            generation: u64::from_be_bytes(bytes[8..16].try_into().expect("8 bytes")),
            writer: WriterId::from_bytes(bytes[16..32].try_into().expect("16 bytes")),
            slots,
            bound: &bytes[..bound_len],
            sealed_body: &bytes[bound_len..],
        })
    }
}

/// One epoch as stored in the sealed body.
#[derive(Clone, PartialEq, Eq)]
pub struct EpochSecrets {
    /// Epoch number.
    pub epoch: u32,
    /// Master key of the epoch.
    pub master: [u8; 32],
    /// X25519 secret key of the epoch.
    pub x25519: [u8; 32],
}

impl std::fmt::Debug for EpochSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochSecrets")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl Drop for EpochSecrets {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.master.zeroize();
        self.x25519.zeroize();
    }
}

/// An officer action recorded in the keyring, for the user to see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OfficerRecord {
    /// 1 opened, 2 reset the password, 3 audited.
    pub kind: u8,
    /// Seconds since the Unix epoch.
    pub time: u64,
    /// The officer public key used.
    pub officer: [u8; 32],
}

/// The decrypted keyring body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyringBody {
    /// Every live epoch.
    pub epochs: Vec<EpochSecrets>,
    /// Officer actions, oldest first.
    pub records: Vec<OfficerRecord>,
}

impl KeyringBody {
    /// Serialized body (zeroize it after sealing).
    pub fn to_bytes(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let mut out = zeroize::Zeroizing::new(Vec::with_capacity(
            4 + self.epochs.len() * EPOCH_LEN + self.records.len() * RECORD_LEN,
        ));
        out.extend_from_slice(
            &u16::try_from(self.epochs.len())
                .expect("fewer than 65536 epochs")
                .to_be_bytes(),
        );
        for e in &self.epochs {
            out.extend_from_slice(&e.epoch.to_be_bytes());
            out.extend_from_slice(&e.master);
            out.extend_from_slice(&e.x25519);
        }
        out.extend_from_slice(
            &u16::try_from(self.records.len())
                .expect("fewer than 65536 records")
                .to_be_bytes(),
        );
        for r in &self.records {
            out.push(r.kind);
            out.extend_from_slice(&r.time.to_be_bytes());
            out.extend_from_slice(&r.officer);
        }
        out
    }

    /// Parses a decrypted body.
    ///
    /// # Errors
    /// [`Error::Tampered`] for any malformed byte or length.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let count_at = |at: usize| -> Result<usize> {
            let b = bytes.get(at..at + 2).ok_or(Error::Tampered)?;
            Ok(u16::from_be_bytes([b[0], b[1]]) as usize)
        };
        let epochs_n = count_at(0)?;
        let epochs_end = 2 + epochs_n * EPOCH_LEN;
        let records_n = count_at(epochs_end)?;
        if bytes.len() != epochs_end + 2 + records_n * RECORD_LEN {
            return Err(Error::Tampered);
        }
        let epochs = bytes[2..epochs_end]
            .chunks_exact(EPOCH_LEN)
            .map(|c| EpochSecrets {
                epoch: u32::from_be_bytes(c[0..4].try_into().expect("4 bytes")),
                master: c[4..36].try_into().expect("32 bytes"),
                x25519: c[36..68].try_into().expect("32 bytes"),
            })
            .collect();
        let records = bytes[epochs_end + 2..]
            .chunks_exact(RECORD_LEN)
            .map(|c| OfficerRecord {
                kind: c[0],
                time: u64::from_be_bytes(c[1..9].try_into().expect("8 bytes")),
                officer: c[9..41].try_into().expect("32 bytes"),
            })
            .collect();
        Ok(Self { epochs, records })
    }
}
