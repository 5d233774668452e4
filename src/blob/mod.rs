//! Layer 6: encrypted message bodies with range reads.
//!
//! A blob is written once under a random id ([`AccountBlobs::writer`] streams it,
//! [`AccountBlobs::put`] is the one-call path) and read back whole
//! ([`AccountBlobs::get`] as a stream, [`AccountBlobs::read`] into memory) or by range
//! ([`AccountBlobs::get_range`]: exactly one ranged GET). Every read needs the blob's
//! [`BlobPin`], which the caller keeps in its (encrypted) index: the pin authenticates
//! the header, so a blob swapped for another, replayed or moved is detected.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> mailvault::Result<()> {
//! use mailvault::blob::BlobStore;
//! use mailvault::crypto::{AccountKey, RandomSource};
//! use mailvault::format::BlobKind;
//! use mailvault::ids::{AccountId, DeploymentId};
//!
//! let rng = RandomSource::os();
//! let store = mailvault::storage::open_store("memory://")?;
//! let blobs = BlobStore::new(store, DeploymentId::random(&rng));
//! let key = AccountKey::generate(1, &rng);
//! let account = blobs.account(AccountId::random(&rng), &key);
//!
//! let pin = account.put(BlobKind::Message, b"Subject: hi\r\n\r\nhello").await?;
//! assert_eq!(&account.read(&pin).await?[..], b"Subject: hi\r\n\r\nhello");
//! assert_eq!(&account.get_range(&pin, 15..20).await?[..], b"hello");
//! # Ok(())
//! # }
//! ```

mod cipher;
mod read;
mod sealed;
mod write;

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};

pub use cipher::BlobCipher;
pub use sealed::{officer_binding, SealedBlob, SealedBlobWriter, SealedOfficer, SealedRecipients};
pub use write::BlobWriter;
use write::WrittenHeader;

use crate::crypto::{AccountKey, RandomSource};
use crate::error::{Error, Result};
use crate::format::{BlobKind, BlobPin};
use crate::ids::{AccountId, BlobId, DeploymentId};
use crate::storage::{self, naming, DynStore};

/// A stream of authenticated plaintext pieces of one blob.
pub type BlobStream = BoxStream<'static, Result<Bytes>>;

/// How blobs are uploaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobConfig {
    /// Stored sizes up to this are written with one conditional PUT; larger blobs use a
    /// multipart upload. Also the most ciphertext a writer holds before uploading. The
    /// default, 20 MiB, keeps messages of up to 16 MiB and more in one PUT: on moto_server
    /// a multipart upload of 16 MiB takes about twice a single PUT, on Garage the same,
    /// and S3 accepts single PUTs of up to 5 GB (`BENCHMARKS.md`, "Storage path").
    pub multipart_threshold: usize,
    /// Size of each multipart part (S3 requires at least 5 MiB except for the last).
    pub part_size: usize,
    /// Parts uploaded at once.
    pub parts_in_flight: usize,
}

impl Default for BlobConfig {
    fn default() -> Self {
        Self {
            multipart_threshold: 20 << 20,
            part_size: 6 << 20,
            parts_in_flight: 2,
        }
    }
}

/// Encrypted blob storage of one deployment on one object store.
#[derive(Debug, Clone)]
pub struct BlobStore {
    store: DynStore,
    deployment: DeploymentId,
    rng: RandomSource,
    config: BlobConfig,
}

impl BlobStore {
    /// Blob storage on `store` for `deployment`, with the OS random source and the default
    /// [`BlobConfig`].
    pub fn new(store: DynStore, deployment: DeploymentId) -> Self {
        Self {
            store,
            deployment,
            rng: RandomSource::os(),
            config: BlobConfig::default(),
        }
    }

    /// Uses `rng` for ids and salts (a seeded one only in tests).
    pub fn with_rng(mut self, rng: RandomSource) -> Self {
        self.rng = rng;
        self
    }

    /// Uses `config` for uploads.
    ///
    /// # Panics
    /// If `part_size` or `parts_in_flight` is zero.
    pub fn with_config(mut self, config: BlobConfig) -> Self {
        assert!(
            config.part_size > 0 && config.parts_in_flight > 0,
            "BlobConfig needs non-zero parts"
        );
        self.config = config;
        self
    }

    /// The underlying object store.
    pub fn store(&self) -> &DynStore {
        &self.store
    }

    /// The deployment.
    pub fn deployment(&self) -> DeploymentId {
        self.deployment
    }

    /// Reads a whole sealed blob (a delivery) of `account` with an officer's secret key,
    /// from the blob alone (no pin, no keyring): how an officer recovers incoming mail
    /// under key models 4 and 5, even after the user removed the officer's key slot.
    /// `record` is the account's record in the trusted directory: the officer's wrap is
    /// bound to its secret ([`officer_binding`]), so once the account is erased no officer
    /// key opens any copy of its bodies.
    ///
    /// # Errors
    /// [`Error::NotFound`] if the blob is gone; [`Error::Tampered`] if it has no wrap for
    /// this officer and this record, or fails authentication.
    pub async fn open_sealed_as_officer(
        &self,
        account: AccountId,
        id: BlobId,
        officer: &crate::keys::OfficerSecret,
        record: &crate::directory::AccountRecord,
    ) -> Result<Vec<u8>> {
        sealed::open_as_officer(
            &self.store,
            &self.deployment,
            &account,
            &id,
            officer.secret(),
            &officer_binding(record, &self.deployment, &account),
        )
        .await
    }

    /// Test kit: a sealed body of `account` re-sealed by an officer around `plaintext`
    /// with the file key of its officer wrap (see the attack tests of item 9).
    ///
    /// # Errors
    /// As [`open_sealed_as_officer`](Self::open_sealed_as_officer).
    #[cfg(feature = "testkit")]
    pub async fn forge_sealed_as_officer(
        &self,
        account: AccountId,
        id: BlobId,
        officer: &crate::keys::OfficerSecret,
        record: &crate::directory::AccountRecord,
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        sealed::forge_as_officer(
            &self.store,
            &self.deployment,
            &account,
            &id,
            officer.secret(),
            &officer_binding(record, &self.deployment, &account),
            plaintext,
        )
        .await
    }

    /// Starts a blob sealed to `to`'s public keys: what a deliverer, which holds no
    /// account key, writes.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a public key of low order.
    pub fn sealed_writer(&self, to: &SealedRecipients, kind: BlobKind) -> Result<SealedBlobWriter> {
        SealedBlobWriter::new(
            self.store.clone(),
            self.deployment,
            to,
            kind,
            &self.rng,
            self.config,
        )
    }

    /// The blobs of `account` under several key epochs: new blobs are sealed under the
    /// newest, and blobs of every listed epoch stay readable.
    ///
    /// # Panics
    /// If `keys` is empty.
    pub fn account_epochs(&self, account: AccountId, keys: &[AccountKey]) -> AccountBlobs {
        assert!(!keys.is_empty(), "at least one key epoch");
        let mut ciphers: Vec<BlobCipher> = keys
            .iter()
            .map(|k| BlobCipher::new(self.deployment, account, k))
            .collect();
        ciphers.sort_by_key(BlobCipher::epoch);
        AccountBlobs {
            store: self.store.clone(),
            deployment: self.deployment,
            account,
            ciphers: Arc::new(ciphers),
            rng: self.rng.clone(),
            config: self.config,
        }
    }

    /// The blobs of `account`, sealed and opened with `key`.
    pub fn account(&self, account: AccountId, key: &AccountKey) -> AccountBlobs {
        AccountBlobs {
            store: self.store.clone(),
            deployment: self.deployment,
            account,
            ciphers: Arc::new(vec![BlobCipher::new(self.deployment, account, key)]),
            rng: self.rng.clone(),
            config: self.config,
        }
    }
}

/// The blobs of one account, with its keys. Cheap to clone.
#[derive(Clone)]
pub struct AccountBlobs {
    store: DynStore,
    deployment: DeploymentId,
    account: AccountId,
    /// One per key epoch, oldest first: new blobs use the last (current) one, reads pick
    /// the one of the blob's epoch.
    ciphers: Arc<Vec<BlobCipher>>,
    rng: RandomSource,
    config: BlobConfig,
}

impl std::fmt::Debug for AccountBlobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountBlobs")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl AccountBlobs {
    fn current(&self) -> &BlobCipher {
        self.ciphers
            .last()
            .expect("an account has at least one key epoch")
    }

    fn for_epoch(&self, epoch: u32) -> Result<&BlobCipher> {
        self.ciphers
            .iter()
            .find(|c| c.epoch() == epoch)
            .ok_or(Error::EpochUnavailable { epoch })
    }

    /// The epoch new blobs are sealed under (the newest).
    pub fn current_epoch(&self) -> u32 {
        self.current().epoch()
    }

    /// The account.
    pub fn account(&self) -> AccountId {
        self.account
    }

    /// Starts a streaming write of a new blob under a fresh random id. Nothing is visible
    /// until [`BlobWriter::finish`] returns the pin.
    pub fn writer(&self, kind: BlobKind) -> BlobWriter {
        self.writer_with_id(BlobId::random(&self.rng), kind)
    }

    /// A writer that reuses a chosen id: the test kit uses it to simulate a blob
    /// rewritten in place (a replay). Real callers always want [`writer`](Self::writer).
    #[cfg(feature = "testkit")]
    pub fn writer_for_id(&self, id: BlobId, kind: BlobKind) -> BlobWriter {
        self.writer_with_id(id, kind)
    }

    fn writer_with_id(&self, id: BlobId, kind: BlobKind) -> BlobWriter {
        let (header, cipher) = self.current().new_blob(&self.rng, &id, kind);
        BlobWriter::new(
            self.store.clone(),
            naming::blob_path(&self.account, &id),
            id,
            WrittenHeader::Symmetric(header),
            cipher,
            self.config,
        )
    }

    /// Stores `data` as a new blob in one call and returns its pin: one conditional PUT
    /// up to the multipart threshold, sealed on all cores straight into one buffer per
    /// chunk; above it, a multipart upload whose parts are sealed one after the other
    /// while the parts before are on their way (sealing overlaps the upload). Memory
    /// holds the sealed copy of what is in flight; for a blob too large to hold at all,
    /// stream it through [`writer`](Self::writer).
    ///
    /// # Errors
    /// [`Error::Backend`] if the upload fails (nothing is then visible under the pin).
    pub async fn put(&self, kind: BlobKind, data: &[u8]) -> Result<BlobPin> {
        let id = BlobId::random(&self.rng);
        let path = naming::blob_path(&self.account, &id);
        let (pin, header, cipher) = self
            .current()
            .begin_parts(&self.rng, id, kind, data.len())?;
        if pin.stored_len() > self.config.multipart_threshold as u64 {
            self.put_in_parts(&path, header, &cipher, data).await?;
        } else {
            let sealed: PutPayload = std::iter::once(header)
                .chain(cipher.seal_chunks(data))
                .collect();
            let opts = PutOptions::from(PutMode::Create);
            self.store.put_opts(&path, sealed, opts).await?;
        }
        Ok(pin)
    }

    /// A multipart upload of `data` in parts of about `part_size` stored bytes (whole
    /// chunks; the first part also holds `header`), each part sealed on all cores and
    /// then sent off as a task of its own while the next one is sealed, at most
    /// `parts_in_flight` at once. On failure the upload is aborted and nothing becomes
    /// visible.
    async fn put_in_parts(
        &self,
        path: &object_store::path::Path,
        header: Bytes,
        cipher: &crate::crypto::stream::PayloadCipher,
        data: &[u8],
    ) -> Result<()> {
        use crate::crypto::stream::SEALED_CHUNK_SIZE;
        let chunks = crate::crypto::stream::chunk_count(data.len());
        let per_part = (self.config.part_size / SEALED_CHUNK_SIZE).max(1);
        let mut upload = self.store.put_multipart(path).await?;
        let mut in_flight = std::collections::VecDeque::new();
        let settle = |handle: tokio::task::JoinHandle<object_store::Result<()>>| async move {
            match handle.await {
                Ok(done) => done.map_err(Error::from),
                Err(e) => Err(Error::Backend {
                    source: object_store::Error::JoinError { source: e },
                }),
            }
        };
        let uploaded: Result<()> = async {
            let mut header = Some(header);
            for first in (0..chunks).step_by(per_part) {
                let mut part: Vec<Bytes> = header.take().into_iter().collect();
                part.extend(cipher.seal_chunk_range(data, first..(first + per_part).min(chunks)));
                in_flight.push_back(tokio::spawn(upload.put_part(PutPayload::from_iter(part))));
                while in_flight.len() >= self.config.parts_in_flight.max(1) {
                    if let Some(handle) = in_flight.pop_front() {
                        settle(handle).await?;
                    }
                }
            }
            while let Some(handle) = in_flight.pop_front() {
                settle(handle).await?;
            }
            upload.complete().await?;
            Ok(())
        }
        .await;
        if uploaded.is_err() {
            // The parts stay invisible; if the abort fails too, the backend's cleanup of
            // incomplete uploads removes them.
            for handle in in_flight {
                handle.abort();
            }
            let _ = upload.abort().await;
        }
        uploaded
    }

    /// Reads a whole blob as a stream of authenticated plaintext, with one GET and memory
    /// bounded by a few chunks. The stream ends with an error (never a short clean end)
    /// if the stored object is truncated or altered, or, for a sealed blob, if its SHA-256
    /// is not the digest its pin keeps (checked after the last chunk).
    ///
    /// # Errors
    /// [`Error::NotFound`] if the object is gone; [`Error::Tampered`] if the pin does not
    /// belong to these keys; the stream yields [`Error::Tampered`] for altered data.
    pub async fn get(&self, pin: &BlobPin) -> Result<BlobStream> {
        read::stream(
            &self.store,
            &self.account,
            self.for_epoch(pin.header.epoch)?,
            pin,
        )
        .await
    }

    /// Reads a whole blob into memory: the stream of [`get`](Self::get), collected (one
    /// code path for both, so they cannot drift apart).
    ///
    /// # Errors
    /// As [`get`](Self::get), and whatever error the stream yields.
    pub async fn read(&self, pin: &BlobPin) -> Result<Bytes> {
        let mut stream = self.get(pin).await?;
        let Some(first) = stream.next().await.transpose()? else {
            return Ok(Bytes::new());
        };
        let Some(second) = stream.next().await.transpose()? else {
            return Ok(first);
        };
        let mut whole = Vec::with_capacity(pin.len() as usize);
        whole.extend_from_slice(&first);
        whole.extend_from_slice(&second);
        while let Some(piece) = stream.next().await.transpose()? {
            whole.extend_from_slice(&piece);
        }
        Ok(Bytes::from(whole))
    }

    /// Reads the plaintext bytes `range` of a blob: exactly one ranged GET over the chunks
    /// that cover it, no other request. An empty range makes no request.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `range` is not within the blob; otherwise as
    /// [`get`](Self::get).
    pub async fn get_range(&self, pin: &BlobPin, range: Range<u64>) -> Result<Bytes> {
        if range.start == range.end && range.end <= pin.len() {
            return Ok(Bytes::new());
        }
        let layout = pin.layout();
        let span = layout.chunk_span(&range)?;
        let cipher = self.for_epoch(pin.header.epoch)?.payload_for(pin)?;
        let path = naming::blob_path(&self.account, &pin.id);
        let stored = storage::get_range(self.store.as_ref(), &path, span.stored.clone()).await?;
        if stored.len() as u64 != span.stored.end - span.stored.start {
            return Err(Error::Tampered);
        }
        let mut plain = Vec::with_capacity(stored.len());
        cipher
            .open(span.first, layout.final_chunk(), &stored, &mut plain)
            .map_err(|_| Error::Tampered)?;
        let skip = span.skip as usize;
        let len = (range.end - range.start) as usize;
        Ok(Bytes::from(plain).slice(skip..skip + len))
    }

    /// Checks, short of reading it, that the stored object is the one its pin describes:
    /// its length (the object's size as the store reports it), its header bytes and its
    /// final chunk, opened with the final flag. One ranged GET of header and final chunk
    /// for a blob of one chunk, two (at once) otherwise. A truncated, extended or
    /// re-headed body fails here; what this cannot see is a full chunk swapped for
    /// another sealed under the same key (for a sealed blob, the digest its pin may carry
    /// catches that on a full read).
    ///
    /// # Errors
    /// [`Error::Tampered`] if the length, the header or the final chunk differ from the
    /// pin's; [`Error::NotFound`] if the blob is gone; backend errors.
    pub async fn verify_stored(&self, pin: &BlobPin) -> Result<()> {
        let layout = pin.layout();
        let header = pin.header_bytes();
        let header_len = layout.header_len();
        let final_start =
            header_len + layout.final_chunk() * crate::crypto::stream::SEALED_CHUNK_SIZE as u64;
        let end = layout.ciphertext_len();
        let cipher = self.for_epoch(pin.header.epoch)?.payload_for(pin)?;
        let path = naming::blob_path(&self.account, &pin.id);
        let (head, last) = if final_start == header_len {
            let all = storage::get_range_of(self.store.as_ref(), &path, 0..end, end).await?;
            (
                all.slice(..header_len as usize),
                all.slice(header_len as usize..),
            )
        } else {
            futures::try_join!(
                storage::get_range_of(self.store.as_ref(), &path, 0..header_len, end),
                storage::get_range_of(self.store.as_ref(), &path, final_start..end, end),
            )?
        };
        if head[..] != header[..] {
            return Err(Error::Tampered);
        }
        let mut plain = Vec::new();
        cipher
            .open(
                layout.final_chunk(),
                layout.final_chunk(),
                &last,
                &mut plain,
            )
            .map_err(|_| Error::Tampered)
    }

    pub(crate) fn store(&self) -> &DynStore {
        &self.store
    }

    pub(crate) fn deployment(&self) -> DeploymentId {
        self.deployment
    }

    /// Deletes a blob. Deleting a blob that is already gone succeeds.
    ///
    /// # Errors
    /// [`Error::Backend`] if the backend refuses.
    pub async fn delete(&self, id: &BlobId) -> Result<()> {
        match self
            .store
            .delete(&naming::blob_path(&self.account, id))
            .await
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
