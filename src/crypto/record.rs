//! Small records under long-lived keys: XChaCha20-Poly1305 with a random 192-bit nonce
//! (safe for practically unlimited records per key) and caller-supplied associated data.
//! Used for index pages and manifests.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use super::{Key32, RandomSource};

/// Nonce bytes stored in front of each sealed record.
pub(crate) const NONCE_LEN: usize = 24;
/// Tag bytes at the end of each sealed record.
pub(crate) const TAG_LEN: usize = 16;

/// The AEAD of one record key.
pub(crate) struct RecordCipher(XChaCha20Poly1305);

impl RecordCipher {
    pub(crate) fn new(key: &Key32) -> Self {
        Self(XChaCha20Poly1305::new(key.expose().into()))
    }

    /// Appends `nonce ‖ ciphertext ‖ tag` to `out`.
    pub(crate) fn seal(&self, rng: &RandomSource, ad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill(&mut nonce);
        let sealed = self
            .0
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: ad,
                },
            )
            .expect("records are far below the XChaCha20-Poly1305 length limit");
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
    }

    /// Opens `nonce ‖ ciphertext ‖ tag`; `None` if it does not authenticate.
    pub(crate) fn open(&self, ad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        self.0
            .decrypt(XNonce::from_slice(nonce), Payload { msg: body, aad: ad })
            .ok()
    }
}
