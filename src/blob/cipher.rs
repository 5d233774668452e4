//! Keys of blobs: per-account input key, per-blob payload key and commitment, and the
//! incremental sealer and opener that run the STREAM loop over a blob's chunks.

use bytes::Bytes;
use object_store::PutPayload;
use sha2::Digest;

use crate::crypto::kdf::{
    self, LABEL_BLOB_INPUT, LABEL_BLOB_KEYS, LABEL_PIN_WRAP, LABEL_SEALED_KEYS,
};
use crate::crypto::record::RecordCipher;
use crate::crypto::stream::{PayloadCipher, CHUNK_SIZE, MAX_CHUNKS, SEALED_CHUNK_SIZE};
use crate::crypto::{commitments_equal, AccountKey, Key32, RandomSource};
use crate::error::{Error, Result};
use crate::format::blob::{BlobHeader, BlobKind, BlobLayout, SealedHeader, HEADER_LEN};
use crate::format::pin::{SealedKey, REWRAPPED_KEY_LEN};
use crate::format::BlobPin;
use crate::ids::{AccountId, BlobId, DeploymentId};

/// Chunks sealed or opened per batch: the unit of parallel work, and what bounds the
/// plaintext buffered by a streaming writer or reader (1 MiB).
pub(crate) const BATCH_CHUNKS: usize = 16;

/// The blob keys of one account epoch: derives each blob's payload key from
/// `(deployment, account, blob id, kind)` and the blob's salt, and checks commitments.
///
/// This is the synchronous core of [`crate::blob`]; it also offers one-shot
/// [`seal`](Self::seal) and [`open`](Self::open) over in-memory buffers.
pub struct BlobCipher {
    deployment: DeploymentId,
    account: AccountId,
    epoch: u32,
    input: Key32,
    /// Wraps sealed blobs' file keys into pins.
    rewrap: Key32,
}

/// The context every blob key derivation binds: deployment, account, blob id, kind.
fn blob_context(
    deployment: &DeploymentId,
    account: &AccountId,
    id: &BlobId,
    kind: BlobKind,
) -> [u8; 49] {
    let mut context = [0u8; 49];
    context[..16].copy_from_slice(deployment.as_bytes());
    context[16..32].copy_from_slice(account.as_bytes());
    context[32..48].copy_from_slice(id.as_bytes());
    context[48] = kind.to_byte();
    context
}

/// Payload key and commitment of a sealed blob, from its file key.
pub(crate) fn sealed_keys(
    file_key: &Key32,
    deployment: &DeploymentId,
    account: &AccountId,
    id: &BlobId,
    header: &SealedHeader,
) -> (Key32, [u8; 32]) {
    kdf::derive_key_and_commitment(
        file_key,
        LABEL_SEALED_KEYS,
        &[
            &header.committed_prefix(),
            &blob_context(deployment, account, id, header.kind),
        ],
    )
}

/// What a sealed blob's wraps bind: deployment, account, blob id and the recipient's
/// place (0 the account, 1 the officer).
pub(crate) fn wrap_context(
    deployment: &DeploymentId,
    account: &AccountId,
    id: &BlobId,
    recipient: u8,
) -> [u8; 49] {
    let mut context = [0u8; 49];
    context[..16].copy_from_slice(deployment.as_bytes());
    context[16..32].copy_from_slice(account.as_bytes());
    context[32..48].copy_from_slice(id.as_bytes());
    context[48] = recipient;
    context
}

impl BlobCipher {
    /// The blob keys of `account` under `key`.
    pub fn new(deployment: DeploymentId, account: AccountId, key: &AccountKey) -> Self {
        let input = kdf::derive_key(
            key.master(),
            LABEL_BLOB_INPUT,
            &[deployment.as_bytes(), account.as_bytes()],
        );
        let rewrap = kdf::derive_key(
            key.master(),
            LABEL_PIN_WRAP,
            &[deployment.as_bytes(), account.as_bytes()],
        );
        Self {
            deployment,
            account,
            epoch: key.epoch(),
            input,
            rewrap,
        }
    }

    /// The pin of a sealed blob whose file key the caller unwrapped: the key is
    /// re-wrapped under this epoch's key, so reads need no X25519.
    ///
    /// # Errors
    /// [`Error::Tampered`] if `file_key` does not match the header's commitment.
    pub(crate) fn pin_sealed(
        &self,
        rng: &RandomSource,
        blob: &super::SealedBlob,
        file_key: &Key32,
    ) -> Result<BlobPin> {
        let (id, header) = (blob.id, blob.header);
        let (_, commitment) = sealed_keys(file_key, &self.deployment, &self.account, &id, &header);
        if !commitments_equal(&commitment, &header.commitment) || header.epoch != self.epoch {
            return Err(Error::Tampered);
        }
        let mut sealed = Vec::with_capacity(REWRAPPED_KEY_LEN);
        RecordCipher::new(&self.rewrap).seal(
            rng,
            &rewrap_ad(&id, &header),
            file_key.expose(),
            &mut sealed,
        );
        let mut wrapped_key = [0u8; REWRAPPED_KEY_LEN];
        wrapped_key.copy_from_slice(&sealed);
        Ok(BlobPin::sealed(
            id,
            SealedKey {
                header,
                wrapped_key,
                digest: blob.digest,
            },
            blob.layout,
        ))
    }

    /// The payload cipher of the blob a pin describes (symmetric or sealed), after
    /// checking its commitment.
    ///
    /// # Errors
    /// As [`payload_cipher`](Self::payload_cipher).
    pub(crate) fn payload_for(&self, pin: &BlobPin) -> Result<PayloadCipher> {
        let Some(sealed) = pin.sealed_key() else {
            return self.payload_cipher(&pin.id, &pin.header);
        };
        if sealed.header.epoch != self.epoch {
            return Err(Error::EpochUnavailable {
                epoch: sealed.header.epoch,
            });
        }
        let plain = zeroize::Zeroizing::new(
            RecordCipher::new(&self.rewrap)
                .open(&rewrap_ad(&pin.id, &sealed.header), &sealed.wrapped_key)
                .ok_or(Error::Tampered)?,
        );
        let file_key = Key32::from_bytes(plain[..].try_into().map_err(|_| Error::Tampered)?);
        let (key, commitment) = sealed_keys(
            &file_key,
            &self.deployment,
            &self.account,
            &pin.id,
            &sealed.header,
        );
        if !commitments_equal(&commitment, &sealed.header.commitment) {
            return Err(Error::Tampered);
        }
        Ok(PayloadCipher::new(&key))
    }

    /// The account these keys belong to.
    pub fn account(&self) -> AccountId {
        self.account
    }

    /// The key epoch.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    fn derive(&self, id: &BlobId, header: &BlobHeader) -> (Key32, [u8; 32]) {
        let context = blob_context(&self.deployment, &self.account, id, header.kind);
        kdf::derive_key_and_commitment(
            &self.input,
            LABEL_BLOB_KEYS,
            &[&header.committed_prefix(), &context],
        )
    }

    /// A fresh header (random salt) and the payload cipher of a new blob.
    pub(crate) fn new_blob(
        &self,
        rng: &RandomSource,
        id: &BlobId,
        kind: BlobKind,
    ) -> (BlobHeader, PayloadCipher) {
        let mut header = BlobHeader {
            kind,
            epoch: self.epoch,
            salt: rng.bytes32(),
            commitment: [0; 32],
        };
        let (key, commitment) = self.derive(id, &header);
        header.commitment = commitment;
        (header, PayloadCipher::new(&key))
    }

    /// The payload cipher of an existing blob, after checking the header's commitment in
    /// constant time: a blob moved to another id, account, kind or deployment, or a header
    /// altered in any byte, fails here before any chunk is opened.
    pub(crate) fn payload_cipher(&self, id: &BlobId, header: &BlobHeader) -> Result<PayloadCipher> {
        if header.epoch != self.epoch {
            return Err(Error::EpochUnavailable {
                epoch: header.epoch,
            });
        }
        let (key, commitment) = self.derive(id, header);
        if !commitments_equal(&commitment, &header.commitment) {
            return Err(Error::Tampered);
        }
        Ok(PayloadCipher::new(&key))
    }

    /// Seals `plaintext` as blob `id` in one call. Returns its pin and the bytes to store,
    /// in one buffer. To upload them, [`seal_parts`](Self::seal_parts) is faster for
    /// large blobs: it needs no buffer of the whole blob, which costs a pass on one core.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a plaintext beyond the format's limit.
    pub fn seal(
        &self,
        rng: &RandomSource,
        id: BlobId,
        kind: BlobKind,
        plaintext: &[u8],
    ) -> Result<(BlobPin, Vec<u8>)> {
        let layout = BlobLayout::for_plaintext(plaintext.len() as u64)?;
        let (header, cipher) = self.new_blob(rng, &id, kind);
        // Zeroed by the allocator (lazily, for large buffers), then filled chunk by chunk
        // on all cores.
        let mut out = vec![0u8; layout.ciphertext_len() as usize];
        out[..HEADER_LEN].copy_from_slice(&header.to_bytes());
        cipher.seal_into(0, plaintext, true, &mut out[HEADER_LEN..]);
        Ok((BlobPin::new(id, header, layout), out))
    }

    /// Seals `plaintext` as blob `id` in one call, straight into upload parts: the
    /// header, then one buffer per chunk, each filled and sealed by the core that seals
    /// it (the plaintext is copied once, nothing is zero-filled). The bytes are those
    /// [`seal`](Self::seal) returns in one buffer; [`AccountBlobs::put`](super::AccountBlobs::put)
    /// uploads them as they are.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a plaintext beyond the format's limit.
    pub fn seal_parts(
        &self,
        rng: &RandomSource,
        id: BlobId,
        kind: BlobKind,
        plaintext: &[u8],
    ) -> Result<(BlobPin, PutPayload)> {
        let (pin, header, cipher) = self.begin_parts(rng, id, kind, plaintext.len())?;
        let parts = std::iter::once(header).chain(cipher.seal_chunks(plaintext));
        Ok((pin, parts.collect()))
    }

    /// The start of [`seal_parts`](Self::seal_parts) for a caller that seals the chunks
    /// part by part (`PayloadCipher::seal_chunk_range`): the pin of a blob of `len`
    /// plaintext bytes, its stored header and the payload's cipher.
    pub(crate) fn begin_parts(
        &self,
        rng: &RandomSource,
        id: BlobId,
        kind: BlobKind,
        len: usize,
    ) -> Result<(BlobPin, Bytes, PayloadCipher)> {
        let layout = BlobLayout::for_plaintext(len as u64)?;
        let (header, cipher) = self.new_blob(rng, &id, kind);
        let header_part = Bytes::copy_from_slice(&header.to_bytes());
        Ok((BlobPin::new(id, header, layout), header_part, cipher))
    }

    /// Opens a whole stored blob against its pin into its chunks' plaintext, in order:
    /// one buffer per chunk, each filled and opened by the core that opens it, for a
    /// caller that writes them out one by one (no buffer of the whole plaintext).
    ///
    /// # Errors
    /// [`Error::Tampered`] if `stored` is not exactly the blob the pin describes.
    pub fn open_parts(&self, pin: &BlobPin, stored: &[u8]) -> Result<Vec<Bytes>> {
        let cipher = self.payload_for(pin)?;
        let header_len = check_stored(pin, stored)?;
        cipher
            .open_chunks(&stored[header_len..])
            .map_err(|_| Error::Tampered)
    }

    /// Opens a whole stored blob against its pin, into one buffer (see
    /// [`open_parts`](Self::open_parts) for one buffer per chunk).
    ///
    /// # Errors
    /// [`Error::Tampered`] if `stored` is not exactly the blob the pin describes.
    pub fn open(&self, pin: &BlobPin, stored: &[u8]) -> Result<Vec<u8>> {
        let cipher = self.payload_for(pin)?;
        let header_len = check_stored(pin, stored)?;
        let mut out = Vec::with_capacity(pin.len() as usize);
        cipher
            .open(
                0,
                pin.layout().final_chunk(),
                &stored[header_len..],
                &mut out,
            )
            .map_err(|_| Error::Tampered)?;
        Ok(out)
    }

    /// Opens a stored blob without a pin, trusting only its id (for data that has no
    /// index entry yet). Returns the pin it should have and the plaintext.
    ///
    /// # Errors
    /// [`Error::UnsupportedVersion`] for an unknown format; [`Error::Tampered`] for
    /// anything that does not authenticate as blob `id` of this account.
    pub fn open_unpinned(&self, id: BlobId, stored: &[u8]) -> Result<(BlobPin, Vec<u8>)> {
        let header = BlobHeader::parse(stored)?;
        let layout = BlobLayout::for_ciphertext(stored.len() as u64)?;
        let pin = BlobPin::new(id, header, layout);
        let plaintext = self.open(&pin, stored)?;
        Ok((pin, plaintext))
    }
}

/// Incremental sealing of one blob's plaintext into chunks.
pub(crate) struct Sealer {
    cipher: PayloadCipher,
    header_len: usize,
    next_index: u64,
    pending: Vec<u8>,
    plaintext_len: u64,
}

const BATCH_BYTES: usize = BATCH_CHUNKS * CHUNK_SIZE;

impl Sealer {
    pub(crate) fn new(cipher: PayloadCipher, header_len: usize) -> Self {
        Self {
            cipher,
            header_len,
            next_index: 0,
            pending: Vec::with_capacity(BATCH_BYTES),
            plaintext_len: 0,
        }
    }

    fn seal_full(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let chunks = (plaintext.len() / CHUNK_SIZE) as u64;
        if self.next_index + chunks >= MAX_CHUNKS {
            return Err(Error::invalid("blob larger than 2^32 chunks"));
        }
        self.cipher.seal(self.next_index, plaintext, false, out);
        self.next_index += chunks;
        Ok(())
    }

    /// Whether pushing `more` bytes seals anything (a batch of chunks fills up), as
    /// opposed to only buffering them.
    pub(crate) fn seals_with(&self, more: usize) -> bool {
        self.pending.len() + more >= BATCH_BYTES
    }

    /// Plaintext held back, not sealed yet.
    pub(crate) fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Adds plaintext; appends to `out` the chunks that became complete.
    pub(crate) fn push(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        self.plaintext_len += data.len() as u64;
        if !self.pending.is_empty() {
            let take = (BATCH_BYTES - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() < BATCH_BYTES {
                return Ok(());
            }
            let batch = std::mem::take(&mut self.pending);
            self.seal_full(&batch, out)?;
            self.pending = batch;
            self.pending.clear();
        }
        let direct = data.len() / BATCH_BYTES * BATCH_BYTES;
        if direct > 0 {
            self.seal_full(&data[..direct], out)?;
        }
        self.pending.extend_from_slice(&data[direct..]);
        Ok(())
    }

    /// Seals what remains as full chunks and the final, strictly shorter chunk. Returns
    /// the blob's layout.
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) -> Result<BlobLayout> {
        let layout = BlobLayout::with_header(self.header_len, self.plaintext_len)?;
        self.cipher.seal(self.next_index, &self.pending, true, out);
        self.pending.clear();
        Ok(layout)
    }
}

/// Incremental opening of one blob's chunks (everything after the header), knowing from
/// the pin where the payload ends.
pub(crate) struct Opener {
    cipher: PayloadCipher,
    next_index: u64,
    layout: BlobLayout,
    pending: Vec<u8>,
    received: u64,
}

impl Opener {
    pub(crate) fn new(cipher: PayloadCipher, layout: BlobLayout) -> Self {
        Self {
            cipher,
            next_index: 0,
            layout,
            pending: Vec::new(),
            received: 0,
        }
    }

    /// Adds stored bytes; appends to `out` the plaintext of every chunk before the final
    /// one that is complete and authenticated. Whole chunks are opened where they lie in
    /// `data` (on all cores); only a chunk split between two calls is copied.
    pub(crate) fn push(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        self.received += data.len() as u64;
        if self.received > self.layout.ciphertext_len() - self.layout.header_len() {
            return Err(Error::Tampered);
        }
        if !self.pending.is_empty() {
            // Complete the chunk an earlier call began.
            let take = SEALED_CHUNK_SIZE
                .saturating_sub(self.pending.len())
                .min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            let pending = std::mem::take(&mut self.pending);
            let used = self.open_whole(&pending, out);
            self.pending = pending;
            self.pending.drain(..used?);
            if !self.pending.is_empty() {
                self.pending.extend_from_slice(data);
                return Ok(());
            }
        }
        let used = self.open_whole(data, out)?;
        self.pending.extend_from_slice(&data[used..]);
        Ok(())
    }

    /// Opens the whole chunks at the start of `sealed` that come before the final chunk;
    /// returns how many bytes they took.
    fn open_whole(&mut self, sealed: &[u8], out: &mut Vec<u8>) -> Result<usize> {
        let complete = (sealed.len() / SEALED_CHUNK_SIZE) as u64;
        let openable = complete.min(self.layout.final_chunk() - self.next_index);
        if openable == 0 {
            return Ok(0);
        }
        let bytes = openable as usize * SEALED_CHUNK_SIZE;
        self.cipher
            .open(
                self.next_index,
                self.layout.final_chunk(),
                &sealed[..bytes],
                out,
            )
            .map_err(|_| Error::Tampered)?;
        self.next_index += openable;
        Ok(bytes)
    }

    /// Opens the remaining chunks, which must end exactly with the final chunk.
    pub(crate) fn finish(mut self, out: &mut Vec<u8>) -> Result<()> {
        if self.received != self.layout.ciphertext_len() - self.layout.header_len() {
            return Err(Error::Tampered);
        }
        self.cipher
            .open(
                self.next_index,
                self.layout.final_chunk(),
                &self.pending,
                out,
            )
            .map_err(|_| Error::Tampered)?;
        self.pending.clear();
        Ok(())
    }
}

/// The header length of a stored blob that has the length and header its pin records.
/// For a sealed blob, also that its SHA-256 is the one the deliverer signed.
fn check_stored(pin: &BlobPin, stored: &[u8]) -> Result<usize> {
    let header_len = pin.layout().header_len() as usize;
    if stored.len() as u64 != pin.stored_len() || stored[..header_len] != pin.header_bytes()[..] {
        return Err(Error::Tampered);
    }
    if let Some(sealed) = pin.sealed_key() {
        let digest: [u8; 32] = sha2::Sha256::digest(stored).into();
        if !commitments_equal(&digest, &sealed.digest) {
            return Err(Error::Tampered);
        }
    }
    Ok(header_len)
}

fn rewrap_ad(id: &BlobId, header: &SealedHeader) -> Vec<u8> {
    [&id.as_bytes()[..], &header.to_bytes()[..]].concat()
}
