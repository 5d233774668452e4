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

use crate::error::{Error, Result};
use crate::format::blob::{BlobHeader, BlobLayout, HEADER_LEN};
use crate::ids::BlobId;

/// Version byte of the serialized pin.
pub const PIN_VERSION: u8 = 1;
/// Length of a serialized pin.
pub const PIN_LEN: usize = 1 + 16 + 8 + HEADER_LEN;

/// Everything needed to read one blob back and to know it is the right one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlobPin {
    /// The blob's id (its object name within the account).
    pub id: BlobId,
    /// The blob's header as written.
    pub header: BlobHeader,
    layout: BlobLayout,
}

impl BlobPin {
    pub(crate) fn new(id: BlobId, header: BlobHeader, layout: BlobLayout) -> Self {
        Self { id, header, layout }
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

    /// Serialized form, [`PIN_LEN`] bytes.
    pub fn to_bytes(&self) -> [u8; PIN_LEN] {
        let mut out = [0u8; PIN_LEN];
        out[0] = PIN_VERSION;
        out[1..17].copy_from_slice(self.id.as_bytes());
        out[17..25].copy_from_slice(&self.layout.ciphertext_len().to_be_bytes());
        out[25..].copy_from_slice(&self.header.to_bytes());
        out
    }

    /// Parses a serialized pin.
    ///
    /// # Errors
    /// [`Error::UnsupportedVersion`] for an unknown pin or blob version;
    /// [`Error::Tampered`] for a wrong length, an impossible stored length or a malformed
    /// header.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != PIN_LEN {
            return Err(Error::Tampered);
        }
        if bytes[0] != PIN_VERSION {
            return Err(Error::UnsupportedVersion {
                object: "blob pin",
                version: bytes[0],
            });
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&bytes[1..17]);
        let mut len = [0u8; 8];
        len.copy_from_slice(&bytes[17..25]);
        let layout = BlobLayout::for_ciphertext(u64::from_be_bytes(len))?;
        let header = BlobHeader::parse(&bytes[25..])?;
        Ok(Self::new(BlobId::from_bytes(id), header, layout))
    }
}
