//! The envelope of a pending delivery: written by a deliverer (public keys and the
//! provider's signing key only), read by the key holder at import.
//!
//! ```text
//! envelope object
//!      0   4  magic "MVE1"
//!      4   1  version (1)
//!      5   3  reserved, zero
//!      8  16  delivery id
//!     24   4  key epoch of the account the envelope is sealed to (u32)
//!     28  80  envelope key wrapped for the account: ephemeral public key (32) ‖ wrap (48)
//!    108   4  sealed body length n (u32)
//!    112   n  sealed body: 24-byte nonce ‖ ciphertext ‖ tag
//!             (XChaCha20-Poly1305 under the envelope key, AD = bytes 0..108)
//!  112+n  64  Ed25519 signature by the provider over
//!             "mailvault/v1/delivery" ‖ deployment id ‖ account id ‖ bytes 0..112+n
//!
//! envelope body (plaintext)
//!     version (1) ‖ blob id (16) ‖ stored blob length (u64) ‖ sealed blob header (240)
//!     ‖ target mailbox name (string) ‖ internal date (i64) ‖ flags (list of strings)
//!     ‖ delivered at (u64, Unix seconds)
//! ```
//!
//! The signature covers the sealed body, which holds the blob's whole header (and so its
//! commitment): a body or envelope forged with the account's public key alone, or moved
//! to another account or deployment, fails verification.

use crate::error::{Error, Result};
use crate::format::blob::{SealedHeader, Stanza, SEALED_HEADER_LEN, WRAPPED_KEY_LEN};
use crate::format::reader::{put_bytes, put_list, Reader};
use crate::ids::{BlobId, DeliveryId};

/// Magic bytes of an envelope object.
pub const ENVELOPE_MAGIC: [u8; 4] = *b"MVE1";
/// Envelope format version.
pub const ENVELOPE_VERSION: u8 = 1;
/// Bytes before the sealed body.
pub const ENVELOPE_PREFIX_LEN: usize = 112;
/// Length of the provider's signature.
pub const SIGNATURE_LEN: usize = 64;
/// Domain separation of delivery signatures.
pub const SIGNATURE_DOMAIN: &[u8] = b"mailvault/v1/delivery";

/// An envelope object, parsed but not verified or opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeObject<'a> {
    /// The delivery.
    pub delivery: DeliveryId,
    /// The account key epoch it is sealed to.
    pub epoch: u32,
    /// The envelope key, wrapped for the account.
    pub stanza: Stanza,
    /// The sealed body.
    pub sealed_body: &'a [u8],
    /// Everything the signature covers after the domain, deployment and account.
    pub signed: &'a [u8],
    /// The signature.
    pub signature: [u8; SIGNATURE_LEN],
}

impl<'a> EnvelopeObject<'a> {
    /// The bytes before the sealed body (the body's associated data) for these fields.
    pub fn prefix(
        delivery: &DeliveryId,
        epoch: u32,
        stanza: &Stanza,
        body_len: usize,
    ) -> [u8; ENVELOPE_PREFIX_LEN] {
        let mut out = [0u8; ENVELOPE_PREFIX_LEN];
        out[0..4].copy_from_slice(&ENVELOPE_MAGIC);
        out[4] = ENVELOPE_VERSION;
        out[8..24].copy_from_slice(delivery.as_bytes());
        out[24..28].copy_from_slice(&epoch.to_be_bytes());
        out[28..60].copy_from_slice(&stanza.ephemeral);
        out[60..108].copy_from_slice(&stanza.wrapped);
        out[108..112].copy_from_slice(&(body_len as u32).to_be_bytes());
        out
    }

    /// The associated data of the wrap and of the sealed body (bytes 0..108).
    pub fn sealing_ad(&self) -> &'a [u8] {
        &self.signed[..108]
    }

    /// Parses an envelope object.
    ///
    /// # Errors
    /// [`Error::UnsupportedVersion`] for an unknown version; [`Error::Tampered`] for
    /// anything else that is not a well-formed envelope.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        if bytes.len() < ENVELOPE_PREFIX_LEN + SIGNATURE_LEN || bytes[0..4] != ENVELOPE_MAGIC {
            return Err(Error::Tampered);
        }
        if bytes[4] != ENVELOPE_VERSION {
            return Err(Error::UnsupportedVersion {
                object: "delivery envelope",
                version: bytes[4],
            });
        }
        if bytes[5..8] != [0, 0, 0] {
            return Err(Error::Tampered);
        }
        let mut r = Reader::new(&bytes[8..]);
        let delivery = DeliveryId::from_bytes(r.array()?);
        let epoch = r.u32()?;
        let stanza = Stanza {
            ephemeral: r.array()?,
            wrapped: r.array::<WRAPPED_KEY_LEN>()?,
        };
        let body_len = r.u32()? as usize;
        if bytes.len() != ENVELOPE_PREFIX_LEN + body_len + SIGNATURE_LEN {
            return Err(Error::Tampered);
        }
        let signed_len = ENVELOPE_PREFIX_LEN + body_len;
        let mut signature = [0u8; SIGNATURE_LEN];
        signature.copy_from_slice(&bytes[signed_len..]);
        Ok(Self {
            delivery,
            epoch,
            stanza,
            sealed_body: &bytes[ENVELOPE_PREFIX_LEN..signed_len],
            signed: &bytes[..signed_len],
            signature,
        })
    }
}

/// What a delivery says about its message: the plaintext of an envelope's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryEnvelope {
    /// The sealed body's blob.
    pub blob: BlobId,
    /// Its stored length.
    pub stored_len: u64,
    /// Its header, as written.
    pub header: SealedHeader,
    /// The mailbox to deliver to (INBOX when it does not exist at import).
    pub mailbox: String,
    /// Internal date (Unix seconds).
    pub internal_date: i64,
    /// Initial flags.
    pub flags: Vec<String>,
    /// When the deliverer wrote it (Unix seconds).
    pub delivered_at: u64,
}

impl DeliveryEnvelope {
    /// Serialized body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![ENVELOPE_VERSION];
        out.extend_from_slice(self.blob.as_bytes());
        out.extend_from_slice(&self.stored_len.to_be_bytes());
        out.extend_from_slice(&self.header.to_bytes());
        put_bytes(&mut out, self.mailbox.as_bytes());
        out.extend_from_slice(&self.internal_date.to_be_bytes());
        put_list(&mut out, &self.flags, |out, f| put_bytes(out, f.as_bytes()));
        out.extend_from_slice(&self.delivered_at.to_be_bytes());
        out
    }

    /// Parses an envelope body.
    ///
    /// # Errors
    /// [`Error::UnsupportedVersion`] or [`Error::Tampered`].
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != ENVELOPE_VERSION {
            return Err(Error::UnsupportedVersion {
                object: "delivery envelope body",
                version,
            });
        }
        let envelope = Self {
            blob: BlobId::from_bytes(r.array()?),
            stored_len: r.u64()?,
            header: SealedHeader::parse(r.take(SEALED_HEADER_LEN)?)?,
            mailbox: r.string()?,
            internal_date: r.u64()? as i64,
            flags: r.list(4, Reader::string)?,
            delivered_at: r.u64()?,
        };
        r.finish()?;
        Ok(envelope)
    }
}
