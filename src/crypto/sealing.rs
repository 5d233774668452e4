//! Sealing a file key to an X25519 public key, as age's X25519 recipient stanza does, with
//! the stanza bound to its context: one ephemeral key per wrap, HKDF-SHA256 over the shared
//! secret with both public keys as salt, ChaCha20-Poly1305 under a zero nonce (safe: the
//! wrap key is unique per ephemeral key) with associated data. A shared secret of low
//! order (all zeros) is refused on both sides.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::kdf::{self, LABEL_SEALED_WRAP};
use super::{Key32, RandomSource};
use crate::error::{Error, Result};
use crate::format::blob::{Stanza, WRAPPED_KEY_LEN};

/// The X25519 shared secret of `secret` and `public`; `None` when it is not contributory
/// (a low-order public key makes it all zeros, whatever the secret).
pub(crate) fn agree(secret: &StaticSecret, public: &[u8; 32]) -> Option<Zeroizing<[u8; 32]>> {
    let shared = secret.diffie_hellman(&PublicKey::from(*public));
    shared
        .was_contributory()
        .then(|| Zeroizing::new(shared.to_bytes()))
}

fn wrap_cipher(
    shared: &[u8; 32],
    binding: &[u8],
    ephemeral: &[u8; 32],
    recipient: &[u8; 32],
    context: &[&[u8]],
) -> ChaCha20Poly1305 {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(ephemeral);
    salt[32..].copy_from_slice(recipient);
    let ikm = Zeroizing::new([&shared[..], binding].concat());
    let prk = kdf::extract(&salt, &ikm);
    let key = kdf::derive_key(&prk, LABEL_SEALED_WRAP, context);
    ChaCha20Poly1305::new(key.expose().into())
}

/// Wraps `file_key` for `recipient`. `binding` (empty, or a secret the opener must also
/// hold) is mixed with the shared secret into the wrap key.
///
/// # Errors
/// [`Error::InvalidArgument`] if `recipient` is a low-order point (the shared secret
/// would be all zeros and anyone could unwrap).
pub(crate) fn wrap(
    rng: &RandomSource,
    file_key: &Key32,
    recipient: &[u8; 32],
    binding: &[u8],
    context: &[&[u8]],
    ad: &[u8],
) -> Result<Stanza> {
    let ephemeral_secret = StaticSecret::from(rng.bytes32());
    let ephemeral = PublicKey::from(&ephemeral_secret).to_bytes();
    let shared = agree(&ephemeral_secret, recipient)
        .ok_or_else(|| Error::invalid("recipient public key of low order"))?;
    let sealed = wrap_cipher(&shared, binding, &ephemeral, recipient, context)
        .encrypt(
            Nonce::from_slice(&[0; 12]),
            Payload {
                msg: file_key.expose(),
                aad: ad,
            },
        )
        .expect("a 32-byte key is far below the ChaCha20-Poly1305 limit");
    let mut wrapped = [0u8; WRAPPED_KEY_LEN];
    wrapped.copy_from_slice(&sealed);
    Ok(Stanza { ephemeral, wrapped })
}

/// Unwraps a stanza with the recipient's secret key and the `binding` it was wrapped with.
///
/// # Errors
/// [`Error::Tampered`] for a low-order ephemeral key or a wrap that does not authenticate
/// (another recipient, another context, altered bytes).
pub(crate) fn unwrap(
    secret: &StaticSecret,
    stanza: &Stanza,
    binding: &[u8],
    context: &[&[u8]],
    ad: &[u8],
) -> Result<Key32> {
    let recipient = PublicKey::from(secret).to_bytes();
    unwrap_for(secret, &recipient, stanza, binding, context, ad)
}

/// As [`unwrap`], with the public key of `secret` known (`recipient`): no base-point
/// multiplication, for a caller that unwraps many stanzas with one key (an import).
pub(crate) fn unwrap_for(
    secret: &StaticSecret,
    recipient: &[u8; 32],
    stanza: &Stanza,
    binding: &[u8],
    context: &[&[u8]],
    ad: &[u8],
) -> Result<Key32> {
    let shared = agree(secret, &stanza.ephemeral).ok_or(Error::Tampered)?;
    let plain = Zeroizing::new(
        wrap_cipher(&shared, binding, &stanza.ephemeral, recipient, context)
            .decrypt(
                Nonce::from_slice(&[0; 12]),
                Payload {
                    msg: &stanza.wrapped,
                    aad: ad,
                },
            )
            .map_err(|_| Error::Tampered)?,
    );
    let mut key = [0u8; 32];
    key.copy_from_slice(&plain);
    Ok(Key32::from_bytes(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_unwrap_and_refusals() {
        let rng = RandomSource::os();
        let secret = StaticSecret::from(rng.bytes32());
        let public = PublicKey::from(&secret).to_bytes();
        let key = Key32::random(&rng);
        let stanza = wrap(&rng, &key, &public, b"", &[b"ctx"], b"ad").unwrap();
        assert_eq!(
            unwrap(&secret, &stanza, b"", &[b"ctx"], b"ad")
                .unwrap()
                .expose(),
            key.expose()
        );
        assert!(unwrap(&secret, &stanza, b"", &[b"other"], b"ad").is_err());
        assert!(unwrap(&secret, &stanza, b"", &[b"ctx"], b"other").is_err());
        let other = StaticSecret::from(rng.bytes32());
        assert!(unwrap(&other, &stanza, b"", &[b"ctx"], b"ad").is_err());
        // A binding: needed to unwrap, besides the secret key.
        let bound = wrap(&rng, &key, &public, &[7; 32], &[b"ctx"], b"ad").unwrap();
        assert_eq!(
            unwrap(&secret, &bound, &[7; 32], &[b"ctx"], b"ad")
                .unwrap()
                .expose(),
            key.expose()
        );
        assert!(unwrap(&secret, &bound, b"", &[b"ctx"], b"ad").is_err());
        assert!(unwrap(&secret, &bound, &[8; 32], &[b"ctx"], b"ad").is_err());
        // Low-order points: the identity (all zeros) and a point of order 8.
        let order8: [u8; 32] = [
            0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f,
            0xc4, 0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16,
            0x5f, 0x49, 0xb8, 0x00,
        ];
        for bad in [[0u8; 32], order8] {
            assert!(matches!(
                wrap(&rng, &key, &bad, b"", &[b"ctx"], b"ad"),
                Err(Error::InvalidArgument(_))
            ));
            let forged = Stanza {
                ephemeral: bad,
                wrapped: stanza.wrapped,
            };
            assert!(matches!(
                unwrap(&secret, &forged, b"", &[b"ctx"], b"ad"),
                Err(Error::Tampered)
            ));
        }
    }

    /// The opening side's low-order check is what refuses a stanza forged without any
    /// secret: with a low-order ephemeral key the shared secret is all zeros whatever the
    /// recipient's secret, so anyone can compute the wrap key and seal a file key of their
    /// choice that the AEAD accepts. Only `agree` stands in the way.
    #[test]
    fn a_stanza_forged_under_the_all_zero_shared_secret_is_refused() {
        let rng = RandomSource::os();
        let secret = StaticSecret::from(rng.bytes32());
        let recipient = PublicKey::from(&secret).to_bytes();
        let chosen = Key32::random(&rng);
        let order8: [u8; 32] = [
            0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f,
            0xc4, 0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16,
            0x5f, 0x49, 0xb8, 0x00,
        ];
        for bad in [[0u8; 32], order8] {
            // The raw X25519 output for this point is all zeros, for this secret as for
            // any other: no secret is needed to know it.
            let raw = secret.diffie_hellman(&PublicKey::from(bad));
            assert_eq!(raw.to_bytes(), [0u8; 32]);
            assert!(!raw.was_contributory());
            assert!(agree(&secret, &bad).is_none());
            // The forger seals a file key of its choice under the all-zero secret...
            let cipher = wrap_cipher(&[0u8; 32], b"", &bad, &recipient, &[b"ctx"]);
            let sealed = cipher
                .encrypt(
                    Nonce::from_slice(&[0; 12]),
                    Payload {
                        msg: chosen.expose(),
                        aad: b"ad",
                    },
                )
                .unwrap();
            let mut wrapped = [0u8; WRAPPED_KEY_LEN];
            wrapped.copy_from_slice(&sealed);
            let forged = Stanza {
                ephemeral: bad,
                wrapped,
            };
            // ...which the AEAD alone would accept, yielding the forger's key...
            let opened = wrap_cipher(
                &raw.to_bytes(),
                b"",
                &forged.ephemeral,
                &recipient,
                &[b"ctx"],
            )
            .decrypt(
                Nonce::from_slice(&[0; 12]),
                Payload {
                    msg: &forged.wrapped,
                    aad: b"ad",
                },
            )
            .unwrap();
            assert_eq!(&opened[..], chosen.expose());
            // ...and `unwrap` refuses, because the shared secret is not contributory.
            assert!(matches!(
                unwrap(&secret, &forged, b"", &[b"ctx"], b"ad"),
                Err(Error::Tampered)
            ));
        }
    }
}
