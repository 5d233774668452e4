use zeroize::{Zeroize, ZeroizeOnDrop};

use super::RandomSource;

/// A 256-bit secret, zeroized on drop. No `Debug`, no `Clone` outside the crate's control.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct Key32(Box<[u8; 32]>);

impl Key32 {
    pub(crate) fn from_bytes(bytes: [u8; 32]) -> Self {
        let mut boxed = Box::new([0u8; 32]);
        boxed.copy_from_slice(&bytes);
        let mut bytes = bytes;
        bytes.zeroize();
        Self(boxed)
    }

    pub(crate) fn random(rng: &RandomSource) -> Self {
        let mut boxed = Box::new([0u8; 32]);
        rng.fill(&mut boxed[..]);
        Self(boxed)
    }

    pub(crate) fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

/// The master key of one account epoch.
///
/// Blob and index keys are derived from it with HKDF under versioned labels; it is never
/// used directly by a cipher. Zeroized on drop; deliberately not `Debug` and not
/// `Clone`. Keyrings and slots that store it wrapped arrive with the `keys` layer; for
/// now an account key is created from random bytes.
pub struct AccountKey {
    epoch: u32,
    master: Key32,
    /// The epoch's X25519 secret key: deliveries are sealed to its public half.
    x25519: Key32,
    /// That public half, computed once (an import unwraps every delivery with it).
    public: [u8; 32],
}

impl AccountKey {
    /// A new random key for `epoch`.
    pub fn generate(epoch: u32, rng: &RandomSource) -> Self {
        let master = Key32::random(rng);
        // Derived, so that a generated key draws 32 bytes as it always did (the test
        // vectors depend on it); keyrings store a random X25519 secret of their own.
        let x25519 = super::kdf::derive_key(&master, super::kdf::LABEL_EPOCH_X25519, &[]);
        Self::from_parts(epoch, master, x25519)
    }

    /// The epoch's X25519 public key: what a deliverer seals incoming mail to (published
    /// in the trusted directory).
    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    pub(crate) fn x25519_secret(&self) -> x25519_dalek::StaticSecret {
        x25519_dalek::StaticSecret::from(*self.x25519.expose())
    }

    /// The key epoch, recorded in every object sealed under this key.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// The key of `epoch` from its stored master key (the keyring's body).
    pub(crate) fn from_parts(epoch: u32, master: Key32, x25519: Key32) -> Self {
        let public =
            x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*x25519.expose()))
                .to_bytes();
        Self {
            epoch,
            master,
            x25519,
            public,
        }
    }

    pub(crate) fn master(&self) -> &Key32 {
        &self.master
    }

    /// A second copy (zeroized on drop as well), for work that must own its keys (an
    /// import opening envelopes on the blocking pool). Not `Clone`: every copy is made
    /// on purpose.
    pub(crate) fn duplicate(&self) -> Self {
        Self {
            epoch: self.epoch,
            master: Key32::from_bytes(*self.master.expose()),
            x25519: Key32::from_bytes(*self.x25519.expose()),
            public: self.public,
        }
    }
}
