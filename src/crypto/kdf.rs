//! HKDF-SHA256 key separation.
//!
//! Every derived key has its own versioned label. The `info` of an expansion is
//! `label ‖ 0x00 ‖ LP(field_1) ‖ … ‖ LP(field_n)` where `LP(x) = u16_be(len(x)) ‖ x`, so
//! no two field lists can produce the same `info`. Input keys are uniform random 256-bit
//! values, so expansion is done directly from them (HKDF-Expand with the key as PRK), as
//! C2SP chunked-encryption does.

use hkdf::Hkdf;
use sha2::Sha256;

use super::Key32;

/// Input key of symmetric blobs of one account epoch.
pub(crate) const LABEL_BLOB_INPUT: &[u8] = b"mailvault/v1/blob/input";
/// Per-blob payload key and key commitment.
pub(crate) const LABEL_BLOB_KEYS: &[u8] = b"mailvault/v1/blob/keys";

/// Input key of an account's index (pages and manifests of every collection).
pub(crate) const LABEL_INDEX_INPUT: &[u8] = b"mailvault/v1/index/input";
/// Per-collection record key.
pub(crate) const LABEL_INDEX_COLLECTION: &[u8] = b"mailvault/v1/index/collection";
/// Opaque name (tag) of a collection: a keyed hash of its name.
pub(crate) const LABEL_INDEX_NAME: &[u8] = b"mailvault/v1/index/name";

/// Wrap key of a sealed blob's file key, from an X25519 shared secret.
pub(crate) const LABEL_SEALED_WRAP: &[u8] = b"mailvault/v1/sealed/wrap";
/// Payload key and key commitment of a sealed blob, from its file key.
pub(crate) const LABEL_SEALED_OFFICER_BINDING: &[u8] = b"mailvault/v1/sealed/officer-binding";
/// Payload key and commitment of a sealed blob, from its file key.
pub(crate) const LABEL_SEALED_KEYS: &[u8] = b"mailvault/v1/sealed/keys";
/// Key sealing a delivery's envelope, from the body's file key.
pub(crate) const LABEL_DELIVERY_ENVELOPE: &[u8] = b"mailvault/v1/delivery/envelope";
/// A delivery id chosen for an idempotency key, from the provider's signing key.
pub(crate) const LABEL_DELIVERY_ID: &[u8] = b"mailvault/v1/delivery/id";
/// The offset of an account's retry windows for content ids, from the provider's signing
/// key.
pub(crate) const LABEL_DELIVERY_WINDOW: &[u8] = b"mailvault/v1/delivery/window";
/// Key that re-wraps sealed blobs' file keys into pins, from an epoch's master key.
pub(crate) const LABEL_PIN_WRAP: &[u8] = b"mailvault/v1/pin/wrap";

/// X25519 secret of a key generated with `AccountKey::generate`, from its master key.
pub(crate) const LABEL_EPOCH_X25519: &[u8] = b"mailvault/v1/epoch/x25519";

/// The account's index key (epoch-independent), from the account root key.
pub(crate) const LABEL_INDEX_ROOT: &[u8] = b"mailvault/v1/index/root";

/// Key sealing a keyring's body, from the account root key.
pub(crate) const LABEL_KEYRING: &[u8] = b"mailvault/v1/keyring";

/// HKDF-Expand of `prk` with a labelled, length-prefixed `info`.
pub(crate) fn expand(prk: &Key32, label: &[u8], fields: &[&[u8]], out: &mut [u8]) {
    let mut info =
        Vec::with_capacity(label.len() + 1 + fields.iter().map(|f| f.len() + 2).sum::<usize>());
    info.extend_from_slice(label);
    info.push(0);
    for field in fields {
        let len = u16::try_from(field.len()).expect("kdf fields are fixed-size and short");
        info.extend_from_slice(&len.to_be_bytes());
        info.extend_from_slice(field);
    }
    let hk =
        Hkdf::<Sha256>::from_prk(prk.expose()).expect("a 32-byte PRK is valid for HKDF-SHA256");
    hk.expand(&info, out)
        .expect("outputs of at most 64 bytes are within HKDF-SHA256 limits");
}

/// HKDF-Extract: a uniform PRK from non-uniform input key material (Argon2 outputs,
/// X25519 shared secrets, codes) and a salt.
pub(crate) fn extract(salt: &[u8], ikm: &[u8]) -> Key32 {
    let (prk, _) = Hkdf::<Sha256>::extract(Some(salt), ikm);
    let mut out = [0u8; 32];
    out.copy_from_slice(&prk);
    Key32::from_bytes(out)
}

/// [`expand`] into `out`, from a PRK made by [`extract`].
pub(crate) fn expand_from_extract(prk: &Key32, label: &[u8], fields: &[&[u8]], out: &mut [u8]) {
    expand(prk, label, fields, out)
}

/// A 32-byte key derived with [`expand`].
pub(crate) fn derive_key(prk: &Key32, label: &[u8], fields: &[&[u8]]) -> Key32 {
    let mut out = [0u8; 32];
    expand(prk, label, fields, &mut out);
    Key32::from_bytes(out)
}

/// Payload key and commitment value: one 64-byte expansion split in two.
pub(crate) fn derive_key_and_commitment(
    prk: &Key32,
    label: &[u8],
    fields: &[&[u8]],
) -> (Key32, [u8; 32]) {
    let mut okm = zeroize::Zeroizing::new([0u8; 64]);
    expand(prk, label, fields, &mut okm[..]);
    let mut key = [0u8; 32];
    key.copy_from_slice(&okm[..32]);
    let mut commitment = [0u8; 32];
    commitment.copy_from_slice(&okm[32..]);
    (Key32::from_bytes(key), commitment)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_length_prefixed() {
        let prk = Key32::from_bytes([7u8; 32]);
        let mut a = [0u8; 32];
        let mut b = [0u8; 32];
        expand(&prk, LABEL_BLOB_KEYS, &[b"ab", b"c"], &mut a);
        expand(&prk, LABEL_BLOB_KEYS, &[b"a", b"bc"], &mut b);
        assert_ne!(a, b);
        let mut c = [0u8; 32];
        expand(&prk, LABEL_BLOB_INPUT, &[b"ab", b"c"], &mut c);
        assert_ne!(a, c);
    }
}
