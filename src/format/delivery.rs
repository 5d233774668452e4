//! The envelope of a pending delivery: written by a deliverer (public keys and the
//! provider's signing key only), read by the key holder at import.
//!
//! ```text
//! envelope object
//!      0   4  magic "MVE1"
//!      4   1  version (3; 1 and 2, without the delivery number, are refused)
//!      5   3  reserved, zero
//!      8  16  delivery id
//!     24  16  blob id of the body
//!     40 240  the body's sealed header, as stored (its account stanza wraps the file key)
//!    280   8  delivery number (u64): the account's delivery counter in the trusted
//!             directory, as the deliverer raised it for this delivery (1, 2, 3, …)
//!    288   4  sealed body length n (u32)
//!    292   n  sealed body: 24-byte nonce ‖ ciphertext ‖ tag (XChaCha20-Poly1305 under
//!             HKDF(file key, "mailvault/v1/delivery/envelope", deployment ‖ account
//!             ‖ delivery id), AD = bytes 0..292)
//!  292+n  64  Ed25519 signature by the provider over
//!             "mailvault/v1/delivery" ‖ deployment id ‖ account id ‖ bytes 0..292+n
//!
//! envelope body (plaintext)
//!     version (5) ‖ stored blob length (u64) ‖ SHA-256 of the stored blob (32)
//!     ‖ target mailbox name (string)
//!     ‖ internal date (i64) ‖ flags (list of strings) ‖ delivered at (u64, Unix seconds)
//!     ‖ analysis present (u8) [‖ analysis (bytes)]                      from version 4
//!     ‖ text present (u8) [‖ text version (u32) ‖ flags (u8: bit 0 complete)
//!        ‖ header (string) ‖ body (string) ‖ mime (string)]            from version 5
//!     ‖ zero bytes up to a Padmé length                                 from version 6
//! ```
//!
//! The padding (version 6) rounds the sealed body up to a Padmé length (at most 12%
//! more, `format::search::padme`), so that an envelope's size tells the store the length
//! of the text and analysis it carries only to that precision, as search segments' sizes
//! do; never beyond [`MAX_ENVELOPE_LEN`].
//!
//! One key agreement per delivery: the envelope is sealed under a key derived from the
//! body's file key, which the body header already wraps for the account. The signature
//! covers the body header (and so its commitment), and the sealed envelope with the
//! stored body's length and SHA-256: a delivery forged with the account's public key
//! alone, or moved to another account or deployment, fails verification, and a body
//! swapped by someone else who knows its file key (an officer) fails its first whole read.

use crate::error::{Error, Result};
use crate::format::blob::{SealedHeader, SEALED_HEADER_LEN};
use crate::format::reader::{put_bytes, put_list, Reader};
use crate::ids::{BlobId, DeliveryId};

/// Magic bytes of an envelope object.
pub const ENVELOPE_MAGIC: [u8; 4] = *b"MVE1";
/// Envelope format version.
pub const ENVELOPE_VERSION: u8 = 3;
/// Version of an envelope's sealed body: 4 adds the message's analysis, 5 its
/// searchable text, 6 the padding. Bodies of versions 3 to 5 are still read.
pub const ENVELOPE_BODY_VERSION: u8 = 6;
/// The most bytes of searchable text (its three streams together) a deliverer seals into
/// an envelope; a message with more is left out and indexed by reading its body. With
/// the options and the analysis at their bounds, an envelope stays below
/// [`MAX_ENVELOPE_LEN`].
pub const MAX_ENVELOPE_TEXT_LEN: usize = 240 << 10;
/// The largest analysis a deliverer seals into an envelope; a larger one (a message of
/// thousands of parts) is left out and computed at the first read instead.
pub const MAX_ENVELOPE_ANALYSIS_LEN: usize = 256 << 10;
/// Bytes before the sealed body.
pub const ENVELOPE_PREFIX_LEN: usize = 292;
/// Length of the provider's signature.
pub const SIGNATURE_LEN: usize = 64;
/// The largest envelope object an import reads, checked before its bytes are read.
pub const MAX_ENVELOPE_LEN: usize = 1 << 20;
/// The most bytes a delivery's target mailbox and flags may take together (a deliverer
/// refuses more), so that every envelope it writes stays below [`MAX_ENVELOPE_LEN`].
pub const MAX_ENVELOPE_OPTIONS_LEN: usize = 512 << 10;
/// Domain separation of delivery signatures.
pub const SIGNATURE_DOMAIN: &[u8] = b"mailvault/v1/delivery";

/// An envelope object, parsed but not verified or opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeObject<'a> {
    /// The delivery.
    pub delivery: DeliveryId,
    /// The body's blob.
    pub blob: BlobId,
    /// The body's sealed header.
    pub header: SealedHeader,
    /// The delivery number (the account's delivery counter in the directory).
    pub number: u64,
    /// The sealed envelope body.
    pub sealed_body: &'a [u8],
    /// Everything the signature covers after the domain, deployment and account.
    pub signed: &'a [u8],
    /// The signature.
    pub signature: [u8; SIGNATURE_LEN],
}

impl<'a> EnvelopeObject<'a> {
    /// The bytes before the sealed body (its associated data) for these fields.
    pub fn prefix(
        delivery: &DeliveryId,
        blob: &BlobId,
        header: &SealedHeader,
        number: u64,
        body_len: usize,
    ) -> [u8; ENVELOPE_PREFIX_LEN] {
        let mut out = [0u8; ENVELOPE_PREFIX_LEN];
        out[0..4].copy_from_slice(&ENVELOPE_MAGIC);
        out[4] = ENVELOPE_VERSION;
        out[8..24].copy_from_slice(delivery.as_bytes());
        out[24..40].copy_from_slice(blob.as_bytes());
        out[40..280].copy_from_slice(&header.to_bytes());
        out[280..288].copy_from_slice(&number.to_be_bytes());
        out[288..292].copy_from_slice(&(body_len as u32).to_be_bytes());
        out
    }

    /// The associated data of the sealed body (bytes 0..292).
    pub fn sealing_ad(&self) -> &'a [u8] {
        &self.signed[..ENVELOPE_PREFIX_LEN]
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
        let blob = BlobId::from_bytes(r.array()?);
        let header = SealedHeader::parse(r.take(SEALED_HEADER_LEN)?)?;
        let number = r.u64()?;
        let body_len = r.u32()? as usize;
        if bytes.len() != ENVELOPE_PREFIX_LEN + body_len + SIGNATURE_LEN {
            return Err(Error::Tampered);
        }
        let signed_len = ENVELOPE_PREFIX_LEN + body_len;
        let mut signature = [0u8; SIGNATURE_LEN];
        signature.copy_from_slice(&bytes[signed_len..]);
        Ok(Self {
            delivery,
            blob,
            header,
            number,
            sealed_body: &bytes[ENVELOPE_PREFIX_LEN..signed_len],
            signed: &bytes[..signed_len],
            signature,
        })
    }
}

/// What a delivery says about its message: the plaintext of an envelope's body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryEnvelope {
    /// The body's stored length.
    pub stored_len: u64,
    /// SHA-256 of the body's whole stored object.
    pub body_digest: [u8; 32],
    /// The mailbox to deliver to (INBOX when it does not exist at import).
    pub mailbox: String,
    /// Internal date (Unix seconds).
    pub internal_date: i64,
    /// Initial flags.
    pub flags: Vec<String>,
    /// When the deliverer wrote it (Unix seconds).
    pub delivered_at: u64,
    /// The message's analysis as the deliverer computed it from the plaintext: an
    /// [`EmailAnalysis`](crate::format::mail::EmailAnalysis) record (its thread is
    /// chosen at import); `None` from a version-3 body or when it was too large.
    pub analysis: Option<Vec<u8>>,
    /// The message's searchable text as the deliverer extracted it from the plaintext;
    /// `None` from a body of version 3 or 4, or when it was too large.
    pub text: Option<EnvelopeText>,
}

/// The searchable text of a delivered message (docs/design.md §16): three folded UTF-8
/// streams, and the version of the rules that made them (an importer that does not
/// know it drops the text, and the message is indexed by reading its body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeText {
    /// The text version (`mail::text`: extraction rules, word cutting, Unicode data).
    pub version: u32,
    /// Whether the text is whole (false: the message was above the parse limit, or its
    /// text above the extraction's bound).
    pub complete: bool,
    /// Top-level header fields.
    pub header: String,
    /// Text of the body parts.
    pub body: String,
    /// MIME header lines of the parts and attachment names.
    pub mime: String,
}

impl EnvelopeText {
    /// The bytes of the three streams together.
    pub fn len(&self) -> usize {
        self.header.len() + self.body.len() + self.mime.len()
    }

    /// Whether the three streams are empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl DeliveryEnvelope {
    /// Serialized body, padded (version 6).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.fields();
        // The sealed body adds a nonce and a tag; the envelope, its prefix and signature.
        let most = MAX_ENVELOPE_LEN - ENVELOPE_PREFIX_LEN - SIGNATURE_LEN - 40;
        let padded = crate::format::search::padme(out.len() as u64 + 40) as usize - 40;
        out.resize(padded.min(most).max(out.len()), 0);
        out
    }

    /// The body's fields, without the padding.
    fn fields(&self) -> Vec<u8> {
        let mut out = vec![ENVELOPE_BODY_VERSION];
        out.extend_from_slice(&self.stored_len.to_be_bytes());
        out.extend_from_slice(&self.body_digest);
        put_bytes(&mut out, self.mailbox.as_bytes());
        out.extend_from_slice(&self.internal_date.to_be_bytes());
        put_list(&mut out, &self.flags, |out, f| put_bytes(out, f.as_bytes()));
        out.extend_from_slice(&self.delivered_at.to_be_bytes());
        match &self.analysis {
            Some(analysis) => {
                out.push(1);
                put_bytes(&mut out, analysis);
            }
            None => out.push(0),
        }
        match &self.text {
            Some(text) => {
                out.push(1);
                out.extend_from_slice(&text.version.to_be_bytes());
                out.push(u8::from(text.complete));
                put_bytes(&mut out, text.header.as_bytes());
                put_bytes(&mut out, text.body.as_bytes());
                put_bytes(&mut out, text.mime.as_bytes());
            }
            None => out.push(0),
        }
        out
    }

    /// Parses an envelope body.
    ///
    /// # Errors
    /// [`Error::UnsupportedVersion`] or [`Error::Tampered`].
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if !(ENVELOPE_VERSION..=ENVELOPE_BODY_VERSION).contains(&version) {
            return Err(Error::UnsupportedVersion {
                object: "delivery envelope body",
                version,
            });
        }
        let mut envelope = Self {
            stored_len: r.u64()?,
            body_digest: r.array()?,
            mailbox: r.string()?,
            internal_date: r.u64()? as i64,
            flags: r.list(4, Reader::string)?,
            delivered_at: r.u64()?,
            analysis: None,
            text: None,
        };
        if version >= 4 {
            envelope.analysis = match r.u8()? {
                0 => None,
                1 => {
                    let analysis = r.bytes()?;
                    if analysis.len() > MAX_ENVELOPE_ANALYSIS_LEN {
                        return Err(Error::Tampered);
                    }
                    Some(analysis.to_vec())
                }
                _ => return Err(Error::Tampered),
            };
        }
        if version >= 5 {
            envelope.text = match r.u8()? {
                0 => None,
                1 => {
                    let version = r.u32()?;
                    let complete = match r.u8()? {
                        0 => false,
                        1 => true,
                        _ => return Err(Error::Tampered),
                    };
                    let text = EnvelopeText {
                        version,
                        complete,
                        header: r.string()?,
                        body: r.string()?,
                        mime: r.string()?,
                    };
                    if text.len() > MAX_ENVELOPE_TEXT_LEN {
                        return Err(Error::Tampered);
                    }
                    Some(text)
                }
                _ => return Err(Error::Tampered),
            };
        }
        if version >= 6 {
            let padding = r.remaining();
            if padding.iter().any(|&b| b != 0) {
                return Err(Error::Tampered);
            }
            r.take(padding.len())?;
        }
        r.finish()?;
        Ok(envelope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(text: Option<EnvelopeText>) -> DeliveryEnvelope {
        DeliveryEnvelope {
            stored_len: 1234,
            body_digest: [7; 32],
            mailbox: "INBOX".into(),
            internal_date: 1_700_000_000,
            flags: vec!["\\Seen".into()],
            delivered_at: 1_700_000_001,
            analysis: Some(vec![1, 2, 3]),
            text,
        }
    }

    fn text() -> EnvelopeText {
        EnvelopeText {
            version: 0x0011_0102,
            complete: true,
            header: "subject: réunion\n".into(),
            body: "café at noon\n".into(),
            mime: "filename: a.pdf\n".into(),
        }
    }

    #[test]
    fn a_body_with_text_reads_back() {
        for e in [envelope(Some(text())), envelope(None)] {
            let bytes = e.to_bytes();
            assert_eq!(bytes[0], 6);
            assert_eq!(DeliveryEnvelope::parse(&bytes).unwrap(), e);
        }
        let incomplete = EnvelopeText {
            complete: false,
            ..text()
        };
        let e = envelope(Some(incomplete));
        assert_eq!(DeliveryEnvelope::parse(&e.to_bytes()).unwrap(), e);
    }

    #[test]
    fn bodies_of_versions_3_and_4_read_without_text() {
        let mut v4 = envelope(None).fields();
        v4.pop();
        v4[0] = 4;
        let read = DeliveryEnvelope::parse(&v4).unwrap();
        assert_eq!(read, envelope(None));
        let mut v3 = v4.clone();
        v3.truncate(v3.len() - 4 - 3 - 1);
        v3[0] = 3;
        let read = DeliveryEnvelope::parse(&v3).unwrap();
        assert_eq!((read.analysis, read.text), (None, None));
        // A version-4 body with a text item after it has trailing bytes.
        let mut v4_with_text = envelope(Some(text())).fields();
        v4_with_text[0] = 4;
        assert!(matches!(
            DeliveryEnvelope::parse(&v4_with_text),
            Err(Error::Tampered)
        ));
        // Version 5: the fields of 6 without padding; padding is not read there.
        let mut v5 = envelope(Some(text())).fields();
        v5[0] = 5;
        assert_eq!(
            DeliveryEnvelope::parse(&v5).unwrap(),
            envelope(Some(text()))
        );
        v5.push(0);
        assert!(matches!(DeliveryEnvelope::parse(&v5), Err(Error::Tampered)));
        let mut v7 = envelope(None).to_bytes();
        v7[0] = 7;
        assert!(matches!(
            DeliveryEnvelope::parse(&v7),
            Err(Error::UnsupportedVersion { .. })
        ));
    }

    #[test]
    fn invalid_utf8_an_oversized_text_and_bad_flags_are_refused() {
        let good = envelope(Some(text())).fields();
        // The body stream's first byte (`c` of `café`) made a lone continuation byte.
        let at = good
            .windows(4)
            .position(|w| w == b"caf\xc3")
            .expect("body stream");
        let mut bad = good.clone();
        bad[at + 4] = 0xff;
        assert!(matches!(
            DeliveryEnvelope::parse(&bad),
            Err(Error::Tampered)
        ));
        // Complete flag other than 0 or 1.
        let t = text();
        let flag_at = good.len() - (3 * 4 + t.len()) - 1;
        assert_eq!(good[flag_at], 1);
        let mut bad = good.clone();
        bad[flag_at] = 2;
        assert!(matches!(
            DeliveryEnvelope::parse(&bad),
            Err(Error::Tampered)
        ));
        // Presence byte other than 0 or 1.
        let mut bad = envelope(None).fields();
        *bad.last_mut().unwrap() = 2;
        assert!(matches!(
            DeliveryEnvelope::parse(&bad),
            Err(Error::Tampered)
        ));
        // Above the bound, by one byte.
        let big = EnvelopeText {
            body: "x".repeat(MAX_ENVELOPE_TEXT_LEN - text().header.len() - text().mime.len() + 1),
            ..text()
        };
        assert!(matches!(
            DeliveryEnvelope::parse(&envelope(Some(big.clone())).to_bytes()),
            Err(Error::Tampered)
        ));
        let fits = EnvelopeText {
            body: big.body[1..].to_owned(),
            ..big
        };
        assert!(DeliveryEnvelope::parse(&envelope(Some(fits)).to_bytes()).is_ok());
    }

    /// Bodies are padded to Padmé lengths (sealed: with nonce and tag): texts a few bytes
    /// apart give bodies of one size; the padding is zeros, a non-zero byte in it is
    /// refused; a body at the bounds is not padded past the envelope's limit.
    #[test]
    fn bodies_are_padded_to_padme_lengths() {
        let with_body = |len: usize| {
            envelope(Some(EnvelopeText {
                body: "b".repeat(len),
                ..text()
            }))
        };
        let (a, b) = (with_body(1000).to_bytes(), with_body(1010).to_bytes());
        assert_eq!(a.len(), b.len(), "within one Padmé step");
        let sealed = a.len() as u64 + 40;
        assert_eq!(crate::format::search::padme(sealed), sealed);
        assert!(a.len() > with_body(1000).fields().len());
        assert_eq!(DeliveryEnvelope::parse(&a).unwrap(), with_body(1000));
        let mut bad = a.clone();
        *bad.last_mut().unwrap() = 1;
        assert!(matches!(
            DeliveryEnvelope::parse(&bad),
            Err(Error::Tampered)
        ));
        // At the bounds: padded up to the limit at most.
        let most = MAX_ENVELOPE_LEN - ENVELOPE_PREFIX_LEN - SIGNATURE_LEN - 40;
        let e = DeliveryEnvelope {
            mailbox: "m".repeat(MAX_ENVELOPE_OPTIONS_LEN - 8),
            analysis: Some(vec![0; MAX_ENVELOPE_ANALYSIS_LEN]),
            text: Some(EnvelopeText {
                body: "x".repeat(MAX_ENVELOPE_TEXT_LEN - text().header.len() - text().mime.len()),
                ..text()
            }),
            ..envelope(None)
        };
        let bytes = e.to_bytes();
        assert!(bytes.len() <= most, "{} > {most}", bytes.len());
        assert_eq!(DeliveryEnvelope::parse(&bytes).unwrap(), e);
    }
}
