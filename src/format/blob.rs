//! The encrypted blob: a fixed header followed by STREAM chunks.
//!
//! ```text
//! offset len  field
//!      0   4  magic "MVB1"
//!      4   1  format version (1)
//!      5   1  envelope (1 = symmetric, account key)
//!      6   1  chunk size as log2 (16: 64 KiB)
//!      7   1  kind (1 message, 2 attachment, 3 index segment, 4 other)
//!      8   4  key epoch, u32 big-endian
//!     12  32  salt, random per blob
//!     44  32  key commitment
//!     76   …  chunks: ⌊n/C⌋ full chunks of C+16 bytes, then a final chunk of 16..C+15
//! ```
//!
//! A **sealed** blob (envelope 2, written by a deliverer that holds only public keys) has
//! a 240-byte header: the same first 44 bytes, then the file key wrapped for each
//! recipient (X25519, one ephemeral key per recipient), then the commitment; its
//! payload key and commitment derive from the random file key instead of the account key.
//! Every sealed header has the same shape: two stanzas, the second the officer's wrap or,
//! when the key model names no officer, a decoy (a fresh X25519 public key and random
//! bytes), so the store cannot tell which bodies an officer can open.
//!
//! ```text
//!      0  44  as above, envelope = 2; epoch = the recipient account's key epoch
//!     44   1  stanzas: 2 (always)
//!     45   3  reserved, zero
//!     48  32  ephemeral public key for the account
//!     80  48  file key wrapped for the account (ChaCha20-Poly1305, zero nonce)
//!    128  32  ephemeral public key for the officer   (a decoy's when there is none)
//!    160  48  file key wrapped for the officer       (random bytes when there is none)
//!    208  32  key commitment
//!    240   …  chunks, as above
//! ```

use std::ops::Range;

use crate::crypto::stream::{CHUNK_SIZE, MAX_CHUNKS, SEALED_CHUNK_SIZE, TAG_LEN};
use crate::error::{Error, Result};

/// Magic bytes opening every blob.
pub const MAGIC: [u8; 4] = *b"MVB1";
/// The blob format version this build writes and reads.
pub const VERSION: u8 = 1;
/// Envelope byte of a blob sealed under the account's symmetric key.
pub const ENVELOPE_SYMMETRIC: u8 = 1;
/// `log2` of the chunk size, the only one version 1 accepts.
pub const CHUNK_LOG2: u8 = 16;
/// Envelope byte of a blob sealed to X25519 public keys (a delivery).
pub const ENVELOPE_SEALED: u8 = 2;
/// Header length of a version-1 symmetric blob.
pub const HEADER_LEN: usize = 76;
/// Header length of a version-1 sealed blob.
pub const SEALED_HEADER_LEN: usize = 240;
/// Bytes of a sealed header covered by its commitment's derivation (all before it).
pub const SEALED_COMMITTED_PREFIX_LEN: usize = 208;
/// Stanzas of every sealed header (byte 44): the account's and the officer's (or a decoy).
pub const SEALED_STANZAS: u8 = 2;
/// Length of one wrapped file key (32-byte key and 16-byte tag).
pub const WRAPPED_KEY_LEN: usize = 48;
/// Bytes of the header covered by the key commitment's derivation (all before it).
pub const COMMITTED_PREFIX_LEN: usize = 44;

/// What a blob holds. Bound into its key derivation, so a blob cannot be re-labelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BlobKind {
    /// A whole message (RFC 5322 bytes).
    Message,
    /// An attachment or other part stored on its own.
    Attachment,
    /// An index segment.
    IndexSegment,
    /// Anything else the embedding server stores.
    Other,
}

impl BlobKind {
    /// The byte stored in the header.
    pub const fn to_byte(self) -> u8 {
        match self {
            BlobKind::Message => 1,
            BlobKind::Attachment => 2,
            BlobKind::IndexSegment => 3,
            BlobKind::Other => 4,
        }
    }

    /// The kind stored as `byte`, if any.
    pub const fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(BlobKind::Message),
            2 => Some(BlobKind::Attachment),
            3 => Some(BlobKind::IndexSegment),
            4 => Some(BlobKind::Other),
            _ => None,
        }
    }
}

/// The header of a blob. Public data: it holds no secret, only what a reader needs to
/// derive the payload key (salt, epoch) and to check it (commitment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlobHeader {
    /// What the blob holds.
    pub kind: BlobKind,
    /// Epoch of the account key that sealed it.
    pub epoch: u32,
    /// Random per-blob salt (input of the payload key derivation).
    pub salt: [u8; 32],
    /// Key commitment: checked in constant time before any chunk is opened.
    pub commitment: [u8; 32],
}

impl BlobHeader {
    /// The serialized header.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..COMMITTED_PREFIX_LEN].copy_from_slice(&self.committed_prefix());
        out[44..76].copy_from_slice(&self.commitment);
        out
    }

    /// The header bytes before the commitment, which the commitment's derivation covers.
    pub fn committed_prefix(&self) -> [u8; COMMITTED_PREFIX_LEN] {
        common_prefix(ENVELOPE_SYMMETRIC, self.kind, self.epoch, &self.salt)
    }

    /// Parses the header at the start of `bytes` (which may continue with chunks).
    ///
    /// # Errors
    /// [`Error::UnsupportedVersion`] for a version or envelope this build does not know;
    /// [`Error::Tampered`] for anything else that is not a well-formed header.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let head = bytes.get(..HEADER_LEN).ok_or(Error::Tampered)?;
        check_prefix(head, ENVELOPE_SYMMETRIC)?;
        let (kind, epoch, salt) = common_fields(head)?;
        let mut commitment = [0u8; 32];
        commitment.copy_from_slice(&head[44..76]);
        Ok(Self {
            kind,
            epoch,
            salt,
            commitment,
        })
    }
}

/// The first 8 bytes of every blob header: magic, version, `envelope`, chunk size.
fn check_prefix(head: &[u8], envelope: u8) -> Result<()> {
    if head[0..4] != MAGIC {
        return Err(Error::Tampered);
    }
    if head[4] != VERSION {
        return Err(Error::UnsupportedVersion {
            object: "blob",
            version: head[4],
        });
    }
    if head[5] != envelope {
        return Err(
            if head[5] == ENVELOPE_SYMMETRIC || head[5] == ENVELOPE_SEALED {
                Error::Tampered
            } else {
                Error::UnsupportedVersion {
                    object: "blob envelope",
                    version: head[5],
                }
            },
        );
    }
    if head[6] != CHUNK_LOG2 {
        return Err(Error::Tampered);
    }
    Ok(())
}

/// Kind, epoch and salt (bytes 7..44 of every blob header).
fn common_fields(head: &[u8]) -> Result<(BlobKind, u32, [u8; 32])> {
    let kind = BlobKind::from_byte(head[7]).ok_or(Error::Tampered)?;
    let mut epoch = [0u8; 4];
    epoch.copy_from_slice(&head[8..12]);
    let mut salt = [0u8; 32];
    salt.copy_from_slice(&head[12..44]);
    Ok((kind, u32::from_be_bytes(epoch), salt))
}

fn common_prefix(envelope: u8, kind: BlobKind, epoch: u32, salt: &[u8; 32]) -> [u8; 44] {
    let mut out = [0u8; 44];
    out[0..4].copy_from_slice(&MAGIC);
    out[4] = VERSION;
    out[5] = envelope;
    out[6] = CHUNK_LOG2;
    out[7] = kind.to_byte();
    out[8..12].copy_from_slice(&epoch.to_be_bytes());
    out[12..44].copy_from_slice(salt);
    out
}

/// The file key of a sealed blob, wrapped for one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stanza {
    /// Ephemeral X25519 public key of this wrap.
    pub ephemeral: [u8; 32],
    /// The file key sealed under the key agreed with the recipient.
    pub wrapped: [u8; WRAPPED_KEY_LEN],
}

/// The header of a sealed blob (envelope 2). Public data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SealedHeader {
    /// What the blob holds.
    pub kind: BlobKind,
    /// Key epoch of the recipient account.
    pub epoch: u32,
    /// Random per-blob salt.
    pub salt: [u8; 32],
    /// The wrap for the account.
    pub account: Stanza,
    /// The wrap for an officer when the account's key model asks for one, else a decoy
    /// of the same shape: only an officer's key tells the two apart (by opening it).
    pub officer: Stanza,
    /// Key commitment (derived from the file key).
    pub commitment: [u8; 32],
}

impl SealedHeader {
    /// The header bytes before the commitment, which the commitment's derivation covers.
    pub fn committed_prefix(&self) -> [u8; SEALED_COMMITTED_PREFIX_LEN] {
        let mut out = [0u8; SEALED_COMMITTED_PREFIX_LEN];
        out[..44].copy_from_slice(&common_prefix(
            ENVELOPE_SEALED,
            self.kind,
            self.epoch,
            &self.salt,
        ));
        out[44] = SEALED_STANZAS;
        for (at, stanza) in [(48, &self.account), (128, &self.officer)] {
            out[at..at + 32].copy_from_slice(&stanza.ephemeral);
            out[at + 32..at + 80].copy_from_slice(&stanza.wrapped);
        }
        out
    }

    /// The bytes a wrap's AEAD binds as associated data: the header up to the stanzas.
    pub fn wrap_context(&self) -> [u8; 48] {
        let mut out = [0u8; 48];
        out.copy_from_slice(&self.committed_prefix()[..48]);
        out
    }

    /// The serialized header.
    pub fn to_bytes(&self) -> [u8; SEALED_HEADER_LEN] {
        let mut out = [0u8; SEALED_HEADER_LEN];
        out[..SEALED_COMMITTED_PREFIX_LEN].copy_from_slice(&self.committed_prefix());
        out[SEALED_COMMITTED_PREFIX_LEN..].copy_from_slice(&self.commitment);
        out
    }

    /// Parses the sealed header at the start of `bytes`.
    ///
    /// # Errors
    /// [`Error::UnsupportedVersion`] for a version or envelope this build does not know;
    /// [`Error::Tampered`] for anything else that is not a well-formed sealed header.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let head = bytes.get(..SEALED_HEADER_LEN).ok_or(Error::Tampered)?;
        check_prefix(head, ENVELOPE_SEALED)?;
        let (kind, epoch, salt) = common_fields(head)?;
        if head[44] != SEALED_STANZAS || head[45..48] != [0, 0, 0] {
            return Err(Error::Tampered);
        }
        let stanza = |at: usize| {
            let mut ephemeral = [0u8; 32];
            ephemeral.copy_from_slice(&head[at..at + 32]);
            let mut wrapped = [0u8; WRAPPED_KEY_LEN];
            wrapped.copy_from_slice(&head[at + 32..at + 80]);
            Stanza { ephemeral, wrapped }
        };
        let mut commitment = [0u8; 32];
        commitment.copy_from_slice(&head[208..240]);
        Ok(Self {
            kind,
            epoch,
            salt,
            account: stanza(48),
            officer: stanza(128),
            commitment,
        })
    }
}

/// Length arithmetic of a blob: where each chunk sits, and how plaintext and ciphertext
/// lengths relate. Every ciphertext length has at most one valid parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlobLayout {
    plaintext_len: u64,
    header_len: u64,
}

impl BlobLayout {
    /// The layout of a blob holding `plaintext_len` bytes.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] beyond the format's limit of 2^32 chunks.
    pub fn for_plaintext(plaintext_len: u64) -> Result<Self> {
        Self::with_header(HEADER_LEN, plaintext_len)
    }

    /// The layout of a blob holding `plaintext_len` bytes after a header of `header_len`
    /// bytes ([`HEADER_LEN`] or [`SEALED_HEADER_LEN`]).
    ///
    /// # Errors
    /// As [`for_plaintext`](Self::for_plaintext).
    pub fn with_header(header_len: usize, plaintext_len: u64) -> Result<Self> {
        if plaintext_len / CHUNK_SIZE as u64 >= MAX_CHUNKS {
            return Err(Error::invalid("blob larger than 2^32 chunks"));
        }
        Ok(Self {
            plaintext_len,
            header_len: header_len as u64,
        })
    }

    /// The layout of a blob whose whole stored object is `ciphertext_len` bytes.
    ///
    /// # Errors
    /// [`Error::Tampered`] if no plaintext length produces that ciphertext length.
    pub fn for_ciphertext(ciphertext_len: u64) -> Result<Self> {
        Self::for_ciphertext_with_header(HEADER_LEN, ciphertext_len)
    }

    /// As [`for_ciphertext`](Self::for_ciphertext), after a header of `header_len` bytes.
    ///
    /// # Errors
    /// As [`for_ciphertext`](Self::for_ciphertext).
    pub fn for_ciphertext_with_header(header_len: usize, ciphertext_len: u64) -> Result<Self> {
        let body = ciphertext_len
            .checked_sub(header_len as u64)
            .ok_or(Error::Tampered)?;
        let full = body / SEALED_CHUNK_SIZE as u64;
        let rest = body % SEALED_CHUNK_SIZE as u64;
        if rest < TAG_LEN as u64 || full >= MAX_CHUNKS {
            return Err(Error::Tampered);
        }
        Ok(Self {
            plaintext_len: full * CHUNK_SIZE as u64 + (rest - TAG_LEN as u64),
            header_len: header_len as u64,
        })
    }

    /// Plaintext length.
    pub fn plaintext_len(&self) -> u64 {
        self.plaintext_len
    }

    /// Length of the whole stored object.
    pub fn ciphertext_len(&self) -> u64 {
        self.header_len + self.plaintext_len + (self.final_chunk() + 1) * TAG_LEN as u64
    }

    /// Length of the header before the chunks.
    pub fn header_len(&self) -> u64 {
        self.header_len
    }

    /// Index of the final (short, possibly empty) chunk.
    pub fn final_chunk(&self) -> u64 {
        self.plaintext_len / CHUNK_SIZE as u64
    }

    /// The chunks `first..=last` that hold the plaintext bytes `range`, and the byte range
    /// of the stored object that holds those chunks. `range` must be non-empty and within
    /// the plaintext.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty or out-of-bounds range.
    pub fn chunk_span(&self, range: &Range<u64>) -> Result<ChunkSpan> {
        if range.start >= range.end || range.end > self.plaintext_len {
            return Err(Error::invalid(format!(
                "range {}..{} outside a blob of {} bytes",
                range.start, range.end, self.plaintext_len
            )));
        }
        let first = range.start / CHUNK_SIZE as u64;
        let last = (range.end - 1) / CHUNK_SIZE as u64;
        let start = self.header_len + first * SEALED_CHUNK_SIZE as u64;
        let end =
            (self.header_len + (last + 1) * SEALED_CHUNK_SIZE as u64).min(self.ciphertext_len());
        Ok(ChunkSpan {
            first,
            last,
            stored: start..end,
            skip: range.start - first * CHUNK_SIZE as u64,
        })
    }
}

/// The chunks covering a plaintext range (see [`BlobLayout::chunk_span`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkSpan {
    /// First chunk index.
    pub first: u64,
    /// Last chunk index (inclusive).
    pub last: u64,
    /// Byte range of the stored object holding chunks `first..=last`.
    pub stored: Range<u64>,
    /// Plaintext bytes of chunk `first` before the requested range starts.
    pub skip: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_round_trip() {
        let c = CHUNK_SIZE as u64;
        for len in [0, 1, c - 1, c, c + 1, 5 * c, 5 * c - 1, 5 * c + 1] {
            let layout = BlobLayout::for_plaintext(len).unwrap();
            let back = BlobLayout::for_ciphertext(layout.ciphertext_len()).unwrap();
            assert_eq!(back.plaintext_len(), len);
        }
        // Lengths that no plaintext produces.
        assert!(BlobLayout::for_ciphertext(HEADER_LEN as u64 + 15).is_err());
        assert!(BlobLayout::for_ciphertext(10).is_err());
        assert!(BlobLayout::for_ciphertext((HEADER_LEN + SEALED_CHUNK_SIZE) as u64).is_err());
    }

    #[test]
    fn header_round_trip_and_rejections() {
        let header = BlobHeader {
            kind: BlobKind::Message,
            epoch: 7,
            salt: [1; 32],
            commitment: [2; 32],
        };
        let bytes = header.to_bytes();
        assert_eq!(BlobHeader::parse(&bytes).unwrap(), header);
        let mut v2 = bytes;
        v2[4] = 2;
        assert!(matches!(
            BlobHeader::parse(&v2),
            Err(Error::UnsupportedVersion { version: 2, .. })
        ));
        assert!(matches!(
            BlobHeader::parse(&bytes[..75]),
            Err(Error::Tampered)
        ));
    }
}
