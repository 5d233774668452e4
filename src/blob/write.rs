use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};
use sha2::{Digest, Sha256};

use super::cipher::Sealer;
use super::BlobConfig;
use crate::crypto::stream::PayloadCipher;
use crate::error::{Error, Result};
use crate::format::blob::{BlobLayout, SealedHeader, HEADER_LEN, SEALED_HEADER_LEN};
use crate::format::{BlobHeader, BlobPin};
use crate::ids::BlobId;
use crate::storage::DynStore;

/// A blob being written: plaintext goes in with [`write`](Self::write), chunks are sealed
/// as they fill and uploaded in parts, and [`finish`](Self::finish) makes the blob
/// visible and returns its pin.
///
/// Memory stays bounded whatever the size: one batch of plaintext chunks (1 MiB), the
/// ciphertext waiting for upload (up to the multipart threshold) and the parts in flight.
///
/// If the writer is dropped without `finish`, nothing becomes visible under its id; a
/// multipart upload already started is left to the backend's cleanup of incomplete
/// uploads (or to [`abort`](Self::abort), which cleans it up at once).
pub struct BlobWriter {
    store: DynStore,
    path: Path,
    id: BlobId,
    header: WrittenHeader,
    /// `None` only while a write seals on the blocking pool (and after such a write was
    /// cancelled: the writer has then failed).
    sealing: Option<Sealing>,
    upload: Option<WriteMultipart>,
    config: BlobConfig,
    failed: bool,
}

/// What sealing touches, moved to tokio's blocking pool and back when a write seals a
/// batch of chunks (CPU work that must not hold the executor thread, issue 12 item 9).
struct Sealing {
    sealer: Sealer,
    /// Stored bytes not handed to the store yet.
    out: Vec<u8>,
    /// SHA-256 of every stored byte handed to the store so far (sealed blobs: the
    /// deliverer signs it).
    digest: Option<Sha256>,
}

impl Sealing {
    /// Pushes `data` to the sealer; when that makes more than `limit` stored bytes
    /// waiting, adds them to the digest (they are handed to the store next).
    fn push(&mut self, data: &[u8], limit: usize) -> Result<()> {
        self.sealer.push(data, &mut self.out)?;
        if self.out.len() > limit {
            if let Some(digest) = &mut self.digest {
                digest.update(&self.out);
            }
        }
        Ok(())
    }
}

/// A large `write` from a slice is copied and sealed in pieces of this size: memory
/// for the copy stays bounded, and the upload of one piece overlaps the next.
const OFFLOAD_SLICE: usize = 4 << 20;

impl std::fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobWriter")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The header a writer puts in front of the chunks.
#[derive(Debug, Clone)]
pub(crate) enum WrittenHeader {
    /// A blob under the account's key.
    Symmetric(BlobHeader),
    /// A blob sealed to public keys (a delivery).
    Sealed(Box<SealedHeader>),
}

impl WrittenHeader {
    fn bytes(&self) -> Vec<u8> {
        match self {
            WrittenHeader::Symmetric(h) => h.to_bytes().to_vec(),
            WrittenHeader::Sealed(h) => h.to_bytes().to_vec(),
        }
    }

    fn len(&self) -> usize {
        match self {
            WrittenHeader::Symmetric(_) => HEADER_LEN,
            WrittenHeader::Sealed(_) => SEALED_HEADER_LEN,
        }
    }
}

impl BlobWriter {
    pub(crate) fn new(
        store: DynStore,
        path: Path,
        id: BlobId,
        header: WrittenHeader,
        cipher: PayloadCipher,
        config: BlobConfig,
    ) -> Self {
        let mut out = Vec::with_capacity(config.multipart_threshold.min(1 << 20));
        out.extend_from_slice(&header.bytes());
        let header_len = header.len();
        Self {
            store,
            path,
            id,
            header,
            sealing: Some(Sealing {
                sealer: Sealer::new(cipher, header_len),
                out,
                digest: None,
            }),
            upload: None,
            config,
            failed: false,
        }
    }

    /// Also computes the SHA-256 of the whole stored object, returned by
    /// [`finish_layout`](Self::finish_layout).
    pub(crate) fn with_digest(mut self) -> Self {
        if let Some(sealing) = &mut self.sealing {
            sealing.digest = Some(Sha256::new());
        }
        self
    }

    /// The id the blob will have.
    pub fn id(&self) -> BlobId {
        self.id
    }

    /// Appends plaintext. May upload a part, and waits when too many are in flight.
    /// Sealing a batch of chunks runs on tokio's blocking pool, not on the executor
    /// thread; a large `data` is copied for that in pieces of a few MiB
    /// ([`write_bytes`](Self::write_bytes) takes it without a copy).
    ///
    /// # Errors
    /// [`Error::Backend`] if an upload fails; the writer is then unusable.
    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.begin_write()?;
        let result = self.write_slice(data).await;
        self.failed = result.is_err();
        result
    }

    /// As [`write`](Self::write), for plaintext already in [`Bytes`]: sealed on the
    /// blocking pool without a copy.
    ///
    /// # Errors
    /// As [`write`](Self::write).
    pub async fn write_bytes(&mut self, data: Bytes) -> Result<()> {
        self.begin_write()?;
        let result = if self.sealing()?.sealer.seals_with(data.len()) {
            self.seal_offloaded(data).await
        } else {
            self.buffer(&data)
        };
        self.failed = result.is_err();
        result
    }

    /// Refuses a write after a failed one. The writer counts as failed until the write
    /// completes: one cancelled while it sealed on the blocking pool leaves it without
    /// its sealing state.
    fn begin_write(&mut self) -> Result<()> {
        if self.failed {
            return Err(Error::invalid("write after a failed write"));
        }
        self.failed = true;
        Ok(())
    }

    fn sealing(&mut self) -> Result<&mut Sealing> {
        self.sealing
            .as_mut()
            .ok_or_else(|| Error::invalid("the blob writer was interrupted"))
    }

    async fn write_slice(&mut self, data: &[u8]) -> Result<()> {
        if !self.sealing()?.sealer.seals_with(data.len()) {
            return self.buffer(data);
        }
        for piece in data.chunks(OFFLOAD_SLICE) {
            self.seal_offloaded(Bytes::copy_from_slice(piece)).await?;
        }
        Ok(())
    }

    /// Buffers plaintext that fills no batch: nothing to seal, nothing to upload.
    fn buffer(&mut self, data: &[u8]) -> Result<()> {
        let sealing = self.sealing()?;
        debug_assert!(!sealing.sealer.seals_with(data.len()));
        sealing.sealer.push(data, &mut sealing.out)
    }

    /// Seals `data` on the blocking pool, then uploads what exceeds the limit.
    async fn seal_offloaded(&mut self, data: Bytes) -> Result<()> {
        let limit = self.limit();
        let mut sealing = self
            .sealing
            .take()
            .ok_or_else(|| Error::invalid("the blob writer was interrupted"))?;
        let work = sealing.sealer.pending_len() + data.len();
        let (sealing, pushed) = crate::cpu::offload(work, move || {
            let pushed = sealing.push(&data, limit);
            (sealing, pushed)
        })
        .await?;
        let sealing = self.sealing.insert(sealing);
        pushed?;
        if sealing.out.len() <= limit {
            return Ok(());
        }
        let out = Bytes::from(std::mem::take(&mut sealing.out));
        if self.upload.is_none() {
            let upload = self.store.put_multipart(&self.path).await?;
            self.upload = Some(WriteMultipart::new_with_chunk_size(
                upload,
                self.config.part_size,
            ));
        }
        let upload = self.upload.as_mut().expect("the upload was just started");
        upload.put(out);
        upload
            .wait_for_capacity(self.config.parts_in_flight)
            .await?;
        Ok(())
    }

    /// Stored bytes held before they are handed to the store.
    fn limit(&self) -> usize {
        if self.upload.is_some() {
            self.config.part_size
        } else {
            self.config.multipart_threshold
        }
    }

    /// Seals the final chunk, completes the upload and returns the blob's pin. Only once
    /// this returns is the blob durable and visible.
    ///
    /// # Errors
    /// [`Error::Backend`] if the upload fails; a started multipart upload is then aborted.
    pub async fn finish(self) -> Result<BlobPin> {
        let (id, header) = (self.id, self.header.clone());
        let (layout, _) = self.finish_layout().await?;
        match header {
            WrittenHeader::Symmetric(header) => Ok(BlobPin::new(id, header, layout)),
            // Only the deliverer writes sealed blobs, through `finish_layout`.
            WrittenHeader::Sealed(_) => {
                Err(Error::invalid("a sealed blob has no pin until imported"))
            }
        }
    }

    /// As [`finish`](Self::finish), returning the blob's layout and, when the writer was
    /// made [`with_digest`](Self::with_digest), the SHA-256 of the stored object.
    pub(crate) async fn finish_layout(mut self) -> Result<(BlobLayout, Option<[u8; 32]>)> {
        let sealing = match self.sealing.take() {
            Some(sealing) if !self.failed => sealing,
            _ => {
                self.abort().await?;
                return Err(Error::invalid("finish after a failed write"));
            }
        };
        // The last batch and the digest of what is left: off the executor when large.
        let bytes = sealing.sealer.pending_len() + sealing.out.len();
        let finished = crate::cpu::offload(bytes, move || {
            let Sealing {
                mut sealer,
                mut out,
                digest,
            } = sealing;
            sealer.finish(&mut out).map(|layout| {
                let digest = digest.map(|mut digest| {
                    digest.update(&out);
                    <[u8; 32]>::from(digest.finalize())
                });
                (layout, digest, out)
            })
        })
        .await;
        let (layout, digest, out) = match finished {
            Ok(Ok(finished)) => finished,
            Ok(Err(e)) | Err(e) => {
                self.abort().await?;
                return Err(e);
            }
        };
        // What the sealer held back until the end may carry the blob over the threshold:
        // then it goes as a multipart upload too, as `BlobConfig` says.
        if self.upload.is_none() && out.len() > self.config.multipart_threshold {
            let upload = self.store.put_multipart(&self.path).await?;
            self.upload = Some(WriteMultipart::new_with_chunk_size(
                upload,
                self.config.part_size,
            ));
        }
        match self.upload.take() {
            None => {
                debug_assert_eq!(out.len() as u64, layout.ciphertext_len());
                let opts = PutOptions::from(PutMode::Create);
                self.store
                    .put_opts(&self.path, PutPayload::from(out), opts)
                    .await?;
            }
            Some(mut upload) => {
                upload.put(Bytes::from(out));
                // If completion fails, the uploaded parts stay invisible until the
                // backend's (or the garbage collector's) cleanup of incomplete uploads.
                upload.finish().await?;
            }
        }
        Ok((layout, digest))
    }

    /// Abandons the blob, aborting a started multipart upload.
    ///
    /// # Errors
    /// [`Error::Backend`] if the backend refuses the abort.
    pub async fn abort(mut self) -> Result<()> {
        if let Some(upload) = self.upload.take() {
            upload.abort().await?;
        }
        Ok(())
    }
}
