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
    sealer: Sealer,
    out: Vec<u8>,
    upload: Option<WriteMultipart>,
    config: BlobConfig,
    failed: bool,
    /// SHA-256 of every stored byte handed to the store so far (sealed blobs: the
    /// deliverer signs it).
    digest: Option<Sha256>,
}

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
            sealer: Sealer::new(cipher, header_len),
            out,
            upload: None,
            config,
            failed: false,
            digest: None,
        }
    }

    /// Also computes the SHA-256 of the whole stored object, returned by
    /// [`finish_layout`](Self::finish_layout).
    pub(crate) fn with_digest(mut self) -> Self {
        self.digest = Some(Sha256::new());
        self
    }

    /// The id the blob will have.
    pub fn id(&self) -> BlobId {
        self.id
    }

    /// Appends plaintext. May upload a part, and waits when too many are in flight.
    ///
    /// # Errors
    /// [`Error::Backend`] if an upload fails; the writer is then unusable.
    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        if self.failed {
            return Err(Error::invalid("write after a failed write"));
        }
        let result = self.write_inner(data).await;
        self.failed = result.is_err();
        result
    }

    async fn write_inner(&mut self, data: &[u8]) -> Result<()> {
        self.sealer.push(data, &mut self.out)?;
        let limit = if self.upload.is_some() {
            self.config.part_size
        } else {
            self.config.multipart_threshold
        };
        if self.out.len() <= limit {
            return Ok(());
        }
        if self.upload.is_none() {
            let upload = self.store.put_multipart(&self.path).await?;
            self.upload = Some(WriteMultipart::new_with_chunk_size(
                upload,
                self.config.part_size,
            ));
        }
        let upload = self.upload.as_mut().expect("the upload was just started");
        if let Some(digest) = &mut self.digest {
            digest.update(&self.out);
        }
        upload.put(Bytes::from(std::mem::take(&mut self.out)));
        upload
            .wait_for_capacity(self.config.parts_in_flight)
            .await?;
        Ok(())
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
        if self.failed {
            self.abort().await?;
            return Err(Error::invalid("finish after a failed write"));
        }
        let mut out = std::mem::take(&mut self.out);
        let layout = match self.sealer.finish(&mut out) {
            Ok(layout) => layout,
            Err(e) => {
                self.abort().await?;
                return Err(e);
            }
        };
        let digest = self.digest.take().map(|mut digest| {
            digest.update(&out);
            <[u8; 32]>::from(digest.finalize())
        });
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
