//! The pin of a blob: what a caller keeps (in the encrypted index) to read the blob back.
//!
//! A pin holds the blob's id, the length of its stored object and its whole header. With
//! it a range read is one ranged GET (no `head`, no header fetch), and a blob that was
//! swapped, replayed or rewritten under the same name no longer matches.
//!
//! ```text
//! offset len  field
//!      0   1  pin version (1)
//!      1  16  blob id
//!     17   8  stored object length, u64 big-endian
//!     25  76  blob header (see `format::blob`)
//!    101      end
//! ```
//!
//! The pin of a sealed blob (a delivery, after import) is version 3: it keeps the whole
//! sealed header and the blob's file key re-wrapped under the account's key, so that a
//! read needs no X25519, and the SHA-256 of the stored object that the deliverer signed,
//! checked on every whole read (whoever else knows the file key, an officer, cannot swap
//! the body for another sealed under it). Version 2 (without the digest) is refused.
//!
//! ```text
//!      0   1  pin version (3)
//!      1  16  blob id
//!     17   8  stored object length, u64 big-endian
//!     25 240  sealed blob header (see `format::blob`)
//!    265  72  file key wrapped under the account: 24-byte nonce ‖ 32-byte ciphertext ‖ tag
//!    337  32  SHA-256 of the whole stored object, as signed in the delivery's envelope
//!    369      end
//! ```

use crate::error::{Error, Result};
use crate::format::blob::{BlobHeader, BlobLayout, SealedHeader, HEADER_LEN, SEALED_HEADER_LEN};
use crate::ids::BlobId;

/// Version byte of the serialized pin.
pub const PIN_VERSION: u8 = 1;
/// Length of a serialized pin.
pub const PIN_LEN: usize = 1 + 16 + 8 + HEADER_LEN;
/// Version byte of the pin of a sealed blob.
pub const SEALED_PIN_VERSION: u8 = 3;
/// Length of a file key wrapped under the account's key.
pub const REWRAPPED_KEY_LEN: usize = 24 + 32 + 16;
/// Length of a serialized sealed pin.
pub const SEALED_PIN_LEN: usize = 1 + 16 + 8 + SEALED_HEADER_LEN + REWRAPPED_KEY_LEN + 32;

/// What a sealed blob's pin adds: its sealed header, and its file key re-wrapped under
/// the account's key at import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SealedKey {
    /// The header as stored.
    pub header: SealedHeader,
    /// The file key, wrapped under the account's key.
    pub wrapped_key: [u8; REWRAPPED_KEY_LEN],
    /// SHA-256 of the whole stored object, as the deliverer signed it.
    pub digest: [u8; 32],
}

/// Everything needed to read one blob back and to know it is the right one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlobPin {
    /// The blob's id (its object name within the account).
    pub id: BlobId,
    /// The blob's header as written (for a sealed blob: its kind, epoch, salt and
    /// commitment).
    pub header: BlobHeader,
    layout: BlobLayout,
    sealed: Option<SealedKey>,
}

impl BlobPin {
    pub(crate) fn new(id: BlobId, header: BlobHeader, layout: BlobLayout) -> Self {
        Self {
            id,
            header,
            layout,
            sealed: None,
        }
    }

    pub(crate) fn sealed(id: BlobId, key: SealedKey, layout: BlobLayout) -> Self {
        let header = BlobHeader {
            kind: key.header.kind,
            epoch: key.header.epoch,
            salt: key.header.salt,
            commitment: key.header.commitment,
        };
        Self {
            id,
            header,
            layout,
            sealed: Some(key),
        }
    }

    /// For a sealed blob (a delivery), its sealed header and re-wrapped file key.
    pub fn sealed_key(&self) -> Option<&SealedKey> {
        self.sealed.as_ref()
    }

    /// The header bytes as stored at the start of the blob.
    pub fn header_bytes(&self) -> Vec<u8> {
        match &self.sealed {
            None => self.header.to_bytes().to_vec(),
            Some(key) => key.header.to_bytes().to_vec(),
        }
    }

    /// Plaintext length of the blob.
    pub fn len(&self) -> u64 {
        self.layout.plaintext_len()
    }

    /// Whether the blob holds no plaintext.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Length of the stored (encrypted) object.
    pub fn stored_len(&self) -> u64 {
        self.layout.ciphertext_len()
    }

    /// The blob's chunk arithmetic.
    pub fn layout(&self) -> BlobLayout {
        self.layout
    }

    /// Serialized form: [`PIN_LEN`] bytes, or [`SEALED_PIN_LEN`] for a sealed blob.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SEALED_PIN_LEN);
        out.push(if self.sealed.is_some() {
            SEALED_PIN_VERSION
        } else {
            PIN_VERSION
        });
        out.extend_from_slice(self.id.as_bytes());
        out.extend_from_slice(&self.layout.ciphertext_len().to_be_bytes());
        out.extend_from_slice(&self.header_bytes());
        if let Some(key) = &self.sealed {
            out.extend_from_slice(&key.wrapped_key);
            out.extend_from_slice(&key.digest);
        }
        out
    }

    /// Parses a serialized pin.
    ///
    /// # Errors
    /// [`Error::UnsupportedVersion`] for an unknown pin or blob version;
    /// [`Error::Tampered`] for a wrong length, an impossible stored length or a malformed
    /// header.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let version = *bytes.first().ok_or(Error::Tampered)?;
        let expected = match version {
            PIN_VERSION => PIN_LEN,
            SEALED_PIN_VERSION => SEALED_PIN_LEN,
            version => {
                return Err(Error::UnsupportedVersion {
                    object: "blob pin",
                    version,
                })
            }
        };
        if bytes.len() != expected {
            return Err(Error::Tampered);
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&bytes[1..17]);
        let id = BlobId::from_bytes(id);
        let mut len = [0u8; 8];
        len.copy_from_slice(&bytes[17..25]);
        let len = u64::from_be_bytes(len);
        if version == PIN_VERSION {
            let layout = BlobLayout::for_ciphertext(len)?;
            let header = BlobHeader::parse(&bytes[25..])?;
            return Ok(Self::new(id, header, layout));
        }
        let layout = BlobLayout::for_ciphertext_with_header(SEALED_HEADER_LEN, len)?;
        let header = SealedHeader::parse(&bytes[25..25 + SEALED_HEADER_LEN])?;
        let at = 25 + SEALED_HEADER_LEN;
        let mut wrapped_key = [0u8; REWRAPPED_KEY_LEN];
        wrapped_key.copy_from_slice(&bytes[at..at + REWRAPPED_KEY_LEN]);
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&bytes[at + REWRAPPED_KEY_LEN..]);
        Ok(Self::sealed(
            id,
            SealedKey {
                header,
                wrapped_key,
                digest,
            },
            layout,
        ))
    }

    /// The length of the serialized pin at the start of `bytes` (from its version byte).
    ///
    /// # Errors
    /// [`Error::UnsupportedVersion`] for an unknown version; [`Error::Tampered`] for none.
    pub fn serialized_len(bytes: &[u8]) -> Result<usize> {
        match bytes.first() {
            Some(&PIN_VERSION) => Ok(PIN_LEN),
            Some(&SEALED_PIN_VERSION) => Ok(SEALED_PIN_LEN),
            Some(&version) => Err(Error::UnsupportedVersion {
                object: "blob pin",
                version,
            }),
            None => Err(Error::Tampered),
        }
    }
}
