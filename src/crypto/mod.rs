//! Layer 1: cryptographic building blocks. Synchronous, no I/O.
//!
//! Everything here is a thin, well-labelled use of RustCrypto primitives: HKDF-SHA256 for
//! key separation ([`kdf`]), ChaCha20-Poly1305 in the STREAM construction for chunked
//! payloads ([`stream`]), key commitment values checked in constant time, and zeroizing
//! key types that have no `Debug`.

pub(crate) mod kdf;
mod keys;
pub(crate) mod record;
mod rng;
pub(crate) mod sealing;
pub(crate) mod stream;

pub use keys::AccountKey;
pub(crate) use keys::Key32;
pub use rng::RandomSource;

/// Constant-time equality of two commitment values.
pub(crate) fn commitments_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}
