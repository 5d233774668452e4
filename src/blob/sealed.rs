//! Sealed blobs: written with public keys only (a deliverer), opened by the key holder.
//!
//! The writer draws a random file key, wraps it for the account's X25519 public key (and
//! an officer's, where the key model asks for it), and streams the body through the same
//! STREAM loop as every blob, under a payload key and commitment derived from the file
//! key. The key holder unwraps the file key once, at import, and re-wraps it into the
//! blob's pin (`BlobCipher::pin_sealed`): later reads are ordinary symmetric reads.

use super::cipher::{sealed_keys, wrap_context, BlobCipher, Opener};
use super::write::WrittenHeader;
use super::{AccountBlobs, BlobConfig, BlobWriter};
use crate::crypto::sealing;
use crate::crypto::stream::PayloadCipher;
use crate::crypto::{commitments_equal, AccountKey, Key32, RandomSource};
use crate::error::{Error, Result};
use crate::format::blob::{
    BlobKind, BlobLayout, SealedHeader, Stanza, SEALED_HEADER_LEN, WRAPPED_KEY_LEN,
};
use crate::format::BlobPin;
use crate::ids::{AccountId, BlobId, DeploymentId};
use crate::storage::{naming, DynStore};

/// The largest sealed blob an officer reads whole without a pin (see
/// [`crate::storage::get_bounded`]): larger objects are refused before they are read.
pub const MAX_OFFICER_READ_LEN: u64 = 256 << 20;

/// Where a sealed blob goes and who can open it: public data only.
#[derive(Debug, Clone)]
pub struct SealedRecipients {
    /// The recipient account.
    pub account: AccountId,
    /// Its current key epoch.
    pub epoch: u32,
    /// The epoch's X25519 public key.
    pub public_key: [u8; 32],
    /// The officer to seal to, when the account's key model requires one.
    pub officer: Option<SealedOfficer>,
}

/// The officer a sealed blob is also wrapped for: its public key, and the account's
/// officer binding ([`officer_binding`]), mixed into the wrap so that erasing the
/// account's directory secret makes the officer's wrap unopenable, backups included.
#[derive(Clone)]
pub struct SealedOfficer {
    /// The officer's X25519 public key.
    pub public_key: [u8; 32],
    /// The account's officer binding.
    pub binding: [u8; 32],
}

impl std::fmt::Debug for SealedOfficer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedOfficer")
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

/// The officer binding of `account`: HKDF-Expand(account's directory secret,
/// "mailvault/v1/sealed/officer-binding", deployment ‖ account). Mixed into the officer's
/// wrap of every body delivered to the account. It opens nothing alone (a deliverer may
/// hold it); without it an officer key opens no body, so erasing the directory record
/// (crypto-erase) reaches the officer's copy of delivered mail.
pub fn officer_binding(
    record: &crate::directory::AccountRecord,
    deployment: &DeploymentId,
    account: &AccountId,
) -> [u8; 32] {
    let key = Key32::from_bytes(*record.secret());
    *crate::crypto::kdf::derive_key(
        &key,
        crate::crypto::kdf::LABEL_SEALED_OFFICER_BINDING,
        &[deployment.as_bytes(), account.as_bytes()],
    )
    .expose()
}

/// A sealed blob as written: what its pin needs once the key holder imports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedBlob {
    /// Its id within the account.
    pub id: BlobId,
    /// Its header as stored.
    pub header: SealedHeader,
    /// Its length arithmetic.
    pub layout: BlobLayout,
    /// SHA-256 of the whole stored object (header and chunks) as the deliverer wrote it:
    /// signed in the envelope, kept in the pin, checked on every whole read.
    pub digest: [u8; 32],
}

impl SealedBlob {
    /// Plaintext length.
    pub fn len(&self) -> u64 {
        self.layout.plaintext_len()
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A sealed blob being written (see [`BlobWriter`] for memory and visibility).
pub struct SealedBlobWriter {
    inner: BlobWriter,
    header: SealedHeader,
    file_key: Key32,
}

impl std::fmt::Debug for SealedBlobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedBlobWriter")
            .field("id", &self.inner.id())
            .finish_non_exhaustive()
    }
}

impl SealedBlobWriter {
    /// Starts a sealed blob for `to` on `store`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a public key of low order (all-zero shared secret).
    pub(crate) fn new(
        store: DynStore,
        deployment: DeploymentId,
        to: &SealedRecipients,
        kind: BlobKind,
        rng: &RandomSource,
        config: BlobConfig,
    ) -> Result<Self> {
        let id = BlobId::random(rng);
        let file_key = Key32::random(rng);
        // In the officer's place when the model names none: a decoy of the same shape
        // as a wrap (a fresh X25519 public key, and random bytes as the AEAD output).
        let mut decoy = Stanza {
            ephemeral: x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(
                rng.bytes32(),
            ))
            .to_bytes(),
            wrapped: [0; WRAPPED_KEY_LEN],
        };
        rng.fill(&mut decoy.wrapped);
        let mut header = SealedHeader {
            kind,
            epoch: to.epoch,
            salt: rng.bytes32(),
            account: decoy,
            officer: decoy,
            commitment: [0; 32],
        };
        // The wraps bind everything before the stanzas (kind, epoch, salt, stanza count).
        let ad = header.wrap_context();
        header.account = sealing::wrap(
            rng,
            &file_key,
            &to.public_key,
            b"",
            &[&wrap_context(&deployment, &to.account, &id, 0)],
            &ad,
        )?;
        if let Some(officer) = &to.officer {
            header.officer = sealing::wrap(
                rng,
                &file_key,
                &officer.public_key,
                &officer.binding,
                &[&wrap_context(&deployment, &to.account, &id, 1)],
                &ad,
            )?;
        }
        let (payload, commitment) = sealed_keys(&file_key, &deployment, &to.account, &id, &header);
        header.commitment = commitment;
        let inner = BlobWriter::new(
            store,
            naming::blob_path(&to.account, &id),
            id,
            WrittenHeader::Sealed(Box::new(header)),
            PayloadCipher::new(&payload),
            config,
        )
        .with_digest();
        Ok(Self {
            inner,
            header,
            file_key,
        })
    }

    /// The id the blob will have.
    pub fn id(&self) -> BlobId {
        self.inner.id()
    }

    /// Appends plaintext.
    ///
    /// # Errors
    /// As [`BlobWriter::write`].
    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.inner.write(data).await
    }

    /// Appends plaintext already in [`Bytes`], without a copy.
    ///
    /// # Errors
    /// As [`BlobWriter::write_bytes`].
    pub async fn write_bytes(&mut self, data: bytes::Bytes) -> Result<()> {
        self.inner.write_bytes(data).await
    }

    /// Seals the final chunk and completes the upload: durable once this returns.
    ///
    /// # Errors
    /// As [`BlobWriter::finish`].
    pub async fn finish(self) -> Result<SealedBlob> {
        self.finish_with_key().await.map(|(blob, _)| blob)
    }

    /// As [`finish`](Self::finish), with the blob's file key (the deliverer derives the
    /// envelope's key from it).
    pub(crate) async fn finish_with_key(self) -> Result<(SealedBlob, Key32)> {
        let id = self.inner.id();
        let (layout, digest) = self.inner.finish_layout().await?;
        let blob = SealedBlob {
            id,
            header: self.header,
            layout,
            digest: digest.expect("a sealed writer computes the digest"),
        };
        Ok((blob, self.file_key))
    }

    /// Abandons the blob.
    ///
    /// # Errors
    /// As [`BlobWriter::abort`].
    pub async fn abort(self) -> Result<()> {
        self.inner.abort().await
    }
}

impl AccountBlobs {
    /// The pin of a sealed blob written for this account: its file key is unwrapped with
    /// the epoch's X25519 secret (`key`), checked against the commitment, and re-wrapped
    /// under the epoch's key. Nothing is read from the store.
    ///
    /// # Errors
    /// [`Error::EpochUnavailable`] if `key` is not the blob's epoch; [`Error::Tampered`]
    /// if the account's wrap does not open or the commitment does not match.
    pub fn pin_sealed(&self, blob: &SealedBlob, key: &AccountKey) -> Result<BlobPin> {
        let file_key = self.unwrap_sealed(blob, key)?;
        self.pin_sealed_with(blob, &file_key)
    }

    /// The file key of a sealed blob of this account, unwrapped with the epoch's X25519
    /// secret.
    pub(crate) fn unwrap_sealed(&self, blob: &SealedBlob, key: &AccountKey) -> Result<Key32> {
        if key.epoch() != blob.header.epoch {
            return Err(Error::EpochUnavailable {
                epoch: blob.header.epoch,
            });
        }
        sealing::unwrap_for(
            &key.x25519_secret(),
            &key.public_key(),
            &blob.header.account,
            b"",
            &[&wrap_context(&self.deployment, &self.account, &blob.id, 0)],
            &blob.header.wrap_context(),
        )
    }

    /// The pin of a sealed blob whose file key is known (checked against the
    /// commitment).
    pub(crate) fn pin_sealed_with(&self, blob: &SealedBlob, file_key: &Key32) -> Result<BlobPin> {
        let cipher: &BlobCipher = self.for_epoch(blob.header.epoch)?;
        cipher.pin_sealed(&self.rng, blob, file_key)
    }
}

/// A sealed blob read whole (within [`MAX_OFFICER_READ_LEN`]) and its file key unwrapped
/// from the officer's stanza: the blob, its header, its payload key and the commitment
/// that key implies.
async fn officer_keys(
    store: &DynStore,
    deployment: &DeploymentId,
    account: &AccountId,
    id: &BlobId,
    officer: &x25519_dalek::StaticSecret,
    binding: &[u8; 32],
) -> Result<(bytes::Bytes, SealedHeader, Key32, [u8; 32])> {
    let stored = crate::storage::get_bounded(
        store.as_ref(),
        &naming::blob_path(account, id),
        MAX_OFFICER_READ_LEN,
    )
    .await?;
    let header = SealedHeader::parse(&stored)?;
    let file_key = sealing::unwrap(
        officer,
        &header.officer,
        binding,
        &[&wrap_context(deployment, account, id, 1)],
        &header.wrap_context(),
    )?;
    let (payload, commitment) = sealed_keys(&file_key, deployment, account, id, &header);
    Ok((stored, header, payload, commitment))
}

/// Reads a whole sealed blob with an officer's X25519 secret, from the blob alone (no
/// pin, no keyring): how an officer recovers a delivery under key models 4 and 5.
///
/// # Errors
/// [`Error::NotFound`] if the blob is gone; [`Error::Tampered`] if it has no officer wrap
/// for this secret or fails authentication.
pub(crate) async fn open_as_officer(
    store: &DynStore,
    deployment: &DeploymentId,
    account: &AccountId,
    id: &BlobId,
    officer: &x25519_dalek::StaticSecret,
    binding: &[u8; 32],
) -> Result<Vec<u8>> {
    let (stored, header, payload, commitment) =
        officer_keys(store, deployment, account, id, officer, binding).await?;
    if !commitments_equal(&commitment, &header.commitment) {
        return Err(Error::Tampered);
    }
    let layout = BlobLayout::for_ciphertext_with_header(SEALED_HEADER_LEN, stored.len() as u64)?;
    let mut opener = Opener::new(PayloadCipher::new(&payload), layout);
    let mut out = Vec::with_capacity(layout.plaintext_len() as usize);
    opener.push(&stored[SEALED_HEADER_LEN..], &mut out)?;
    opener.finish(&mut out)?;
    Ok(out)
}

/// Test kit: what an officer who can also write to the bucket can do to a sealed body
/// under key models 4 and 5. It unwraps the file key from its own wrap and seals
/// `plaintext` under it behind the stored header, as the deliverer would have. Returns
/// the forged object (the caller puts it in place of the body).
#[cfg(feature = "testkit")]
pub(crate) async fn forge_as_officer(
    store: &DynStore,
    deployment: &DeploymentId,
    account: &AccountId,
    id: &BlobId,
    officer: &x25519_dalek::StaticSecret,
    binding: &[u8; 32],
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    let (stored, _, payload, _) =
        officer_keys(store, deployment, account, id, officer, binding).await?;
    let mut out = stored[..SEALED_HEADER_LEN].to_vec();
    PayloadCipher::new(&payload).seal(0, plaintext, true, &mut out);
    Ok(out)
}
