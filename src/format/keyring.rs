//! The keyring of an account: its key slots in clear (each protects itself), one root
//! stanza per slot (the root key sealed to the slot's X25519 public key, so that whoever
//! holds the root can re-seal a new root to every slot without its unlocker: root
//! rotation) and, sealed under a key derived from the account root key, its epochs
//! (master key and X25519 secret of each), the record of officer actions and, while a
//! root rotation runs, the previous root key. Versioned with the commit protocol: the
//! generation is in the header and so in the associated data.
//!
//! ```text
//! offset len  field
//!      0   4  magic "MVK1"
//!      4   1  version (2)
//!      5   1  slot count n (at most 16)
//!      6   2  reserved, zero
//!      8   8  generation (u64)
//!     16  16  writer id
//!     32   …  slots, 244 bytes each (see `format::slot`)
//!      …   …  root stanzas, 112 bytes each, one per slot in slot order:
//!             slot public key (32) ‖ ephemeral public key (32) ‖ wrapped root (48)
//!      …   …  sealed body: nonce (24) ‖ ciphertext ‖ tag (16)
//!
//! body plaintext
//!     2  epoch count (u16), then per epoch: epoch (u32) ‖ master key (32) ‖ X25519 secret (32)
//!     2  record count (u16), then per record: kind (1) ‖ time (u64) ‖ officer public key (32)
//!     1  0, or 1 followed by the previous root key (32) while a root rotation runs
//! ```

use crate::error::{Error, Result};
use crate::format::slot::{KeySlot, SLOT_LEN};
use crate::ids::WriterId;

/// Magic bytes of a keyring.
pub const KEYRING_MAGIC: [u8; 4] = *b"MVK1";
/// Keyring format version.
pub const KEYRING_VERSION: u8 = 2;
/// Most slots a keyring holds.
pub const MAX_SLOTS: usize = 16;
/// Length of the keyring header.
pub const KEYRING_HEADER_LEN: usize = 32;
/// Length of one epoch in the body.
pub const EPOCH_LEN: usize = 68;
/// Length of one officer record in the body.
pub const RECORD_LEN: usize = 41;
/// The largest keyring a reader accepts, checked before its bytes are read: above the
/// largest this version can express (16 slots with their root stanzas, 65 535 epochs,
/// 65 535 officer records and a retiring root, about 7 MiB).
pub const MAX_KEYRING_LEN: usize = 16 << 20;
const _: () = assert!(
    KEYRING_HEADER_LEN
        + MAX_SLOTS * (SLOT_LEN + ROOT_STANZA_LEN)
        + 24
        + 2
        + 65_535 * EPOCH_LEN
        + 2
        + 65_535 * RECORD_LEN
        + 33
        + 16
        <= MAX_KEYRING_LEN
);
/// Length of one root stanza.
pub const ROOT_STANZA_LEN: usize = 112;

/// The root key sealed to one slot's X25519 public key (the slot wraps the matching
/// secret). Public data: the wrap is opened only with the slot's secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RootStanza {
    /// The slot's X25519 public key.
    pub public: [u8; 32],
    /// Ephemeral X25519 public key of this wrap.
    pub ephemeral: [u8; 32],
    /// The root key sealed under the key agreed with `public` (32) ‖ tag (16).
    pub wrapped: [u8; 48],
}

impl RootStanza {
    /// The stanza's bytes.
    pub fn to_bytes(&self) -> [u8; ROOT_STANZA_LEN] {
        let mut out = [0u8; ROOT_STANZA_LEN];
        out[..32].copy_from_slice(&self.public);
        out[32..64].copy_from_slice(&self.ephemeral);
        out[64..].copy_from_slice(&self.wrapped);
        out
    }

    fn parse(bytes: &[u8]) -> Self {
        Self {
            public: bytes[..32].try_into().expect("32 bytes"),
            ephemeral: bytes[32..64].try_into().expect("32 bytes"),
            wrapped: bytes[64..ROOT_STANZA_LEN].try_into().expect("48 bytes"),
        }
    }
}

/// A parsed keyring object: header fields, slots, and the still-sealed body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyringObject<'a> {
    /// Generation.
    pub generation: u64,
    /// Writer of this generation.
    pub writer: WriterId,
    /// The slots.
    pub slots: Vec<KeySlot>,
    /// The root stanza of each slot, in slot order.
    pub stanzas: Vec<RootStanza>,
    /// The bytes the body's associated data covers (header and slots).
    pub bound: &'a [u8],
    /// The sealed body.
    pub sealed_body: &'a [u8],
}

/// Serializes the header, slots and root stanzas (the bound part) of a keyring.
///
/// # Panics
/// With more than [`MAX_SLOTS`] slots, or not one stanza per slot.
pub fn write_bound(
    generation: u64,
    writer: &WriterId,
    slots: &[KeySlot],
    stanzas: &[RootStanza],
) -> Vec<u8> {
    assert!(slots.len() <= MAX_SLOTS, "at most {MAX_SLOTS} slots");
    assert_eq!(slots.len(), stanzas.len(), "one root stanza per slot");
    let mut out =
        Vec::with_capacity(KEYRING_HEADER_LEN + slots.len() * (SLOT_LEN + ROOT_STANZA_LEN));
    out.extend_from_slice(&KEYRING_MAGIC);
    out.push(KEYRING_VERSION);
    out.push(slots.len() as u8);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&generation.to_be_bytes());
    out.extend_from_slice(writer.as_bytes());
    for slot in slots {
        out.extend_from_slice(&slot.to_bytes());
    }
    for stanza in stanzas {
        out.extend_from_slice(&stanza.to_bytes());
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
        let slots_end = KEYRING_HEADER_LEN + count * SLOT_LEN;
        let bound_len = slots_end + count * ROOT_STANZA_LEN;
        if bytes.len() < bound_len {
            return Err(Error::Tampered);
        }
        let slots = bytes[KEYRING_HEADER_LEN..slots_end]
            .chunks_exact(SLOT_LEN)
            .map(KeySlot::parse)
            .collect::<Result<Vec<_>>>()?;
        let stanzas = bytes[slots_end..bound_len]
            .chunks_exact(ROOT_STANZA_LEN)
            .map(RootStanza::parse)
            .collect();
        Ok(Self {
            generation: u64::from_be_bytes(bytes[8..16].try_into().expect("8 bytes")),
            writer: WriterId::from_bytes(bytes[16..32].try_into().expect("16 bytes")),
            slots,
            stanzas,
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

/// The decrypted keyring body. Its `Debug` shows no secret.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct KeyringBody {
    /// Every live epoch.
    pub epochs: Vec<EpochSecrets>,
    /// Officer actions, oldest first.
    pub records: Vec<OfficerRecord>,
    /// The previous root key while a root rotation runs (the index is still being moved
    /// off the keys it derives).
    pub retiring: Option<zeroize::Zeroizing<[u8; 32]>>,
}

impl std::fmt::Debug for KeyringBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyringBody")
            .field("epochs", &self.epochs)
            .field("records", &self.records)
            .field("rotating", &self.retiring.is_some())
            .finish()
    }
}

impl KeyringBody {
    /// Serialized body (zeroize it after sealing).
    pub fn to_bytes(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let mut out = zeroize::Zeroizing::new(Vec::with_capacity(
            5 + self.epochs.len() * EPOCH_LEN + self.records.len() * RECORD_LEN + 32,
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
        match &self.retiring {
            None => out.push(0),
            Some(root) => {
                out.push(1);
                out.extend_from_slice(&root[..]);
            }
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
        let records_end = epochs_end + 2 + records_n * RECORD_LEN;
        let retiring = match bytes.get(records_end..) {
            Some([0]) => None,
            Some([1, root @ ..]) if root.len() == 32 => {
                Some(zeroize::Zeroizing::new(root.try_into().expect("32 bytes")))
            }
            _ => return Err(Error::Tampered),
        };
        let epochs = bytes[2..epochs_end]
            .chunks_exact(EPOCH_LEN)
            .map(|c| EpochSecrets {
                epoch: u32::from_be_bytes(c[0..4].try_into().expect("4 bytes")),
                master: c[4..36].try_into().expect("32 bytes"),
                x25519: c[36..68].try_into().expect("32 bytes"),
            })
            .collect();
        let records = bytes[epochs_end + 2..records_end]
            .chunks_exact(RECORD_LEN)
            .map(|c| OfficerRecord {
                kind: c[0],
                time: u64::from_be_bytes(c[1..9].try_into().expect("8 bytes")),
                officer: c[9..41].try_into().expect("32 bytes"),
            })
            .collect();
        Ok(Self {
            epochs,
            records,
            retiring,
        })
    }
}
