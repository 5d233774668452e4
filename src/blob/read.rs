use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::ObjectStoreExt;
use sha2::{Digest, Sha256};

use super::cipher::{BlobCipher, Opener};
use super::BlobStream;
use crate::error::{Error, Result};
use crate::format::BlobPin;
use crate::ids::AccountId;
use crate::storage::{naming, DynStore};

struct ReadState {
    source: BoxStream<'static, object_store::Result<Bytes>>,
    header: Vec<u8>,
    expected_header: Vec<u8>,
    opener: Option<Opener>,
    /// For a sealed blob: the SHA-256 of what arrived so far, and the signed one.
    digest: Option<(Sha256, [u8; 32])>,
}

impl ReadState {
    /// Feeds one piece of the stored object; returns plaintext that became available.
    fn feed(&mut self, mut data: &[u8]) -> Result<Vec<u8>> {
        if let Some((digest, _)) = &mut self.digest {
            digest.update(data);
        }
        let header_len = self.expected_header.len();
        if self.header.len() < header_len {
            let take = (header_len - self.header.len()).min(data.len());
            self.header.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.header.len() == header_len && self.header[..] != self.expected_header[..] {
                return Err(Error::Tampered);
            }
        }
        let mut out = Vec::new();
        if !data.is_empty() {
            let opener = self.opener.as_mut().ok_or(Error::Tampered)?;
            opener.push(data, &mut out)?;
        }
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<u8>> {
        if self.header.len() < self.expected_header.len() {
            return Err(Error::Tampered);
        }
        let mut out = Vec::new();
        self.opener
            .take()
            .ok_or(Error::Tampered)?
            .finish(&mut out)?;
        if let Some((digest, expected)) = self.digest.take() {
            let digest: [u8; 32] = digest.finalize().into();
            if !crate::crypto::commitments_equal(&digest, &expected) {
                return Err(Error::Tampered);
            }
        }
        Ok(out)
    }
}

/// One GET of the whole object, opened chunk batch by chunk batch.
pub(super) async fn stream(
    store: &DynStore,
    account: &AccountId,
    cipher: &BlobCipher,
    pin: &BlobPin,
) -> Result<BlobStream> {
    let payload = cipher.payload_for(pin)?;
    let result = store.get(&naming::blob_path(account, &pin.id)).await?;
    if result.meta.size != pin.stored_len() {
        return Err(Error::Tampered);
    }
    let state = ReadState {
        source: result.into_stream(),
        header: Vec::new(),
        expected_header: pin.header_bytes(),
        opener: Some(Opener::new(payload, pin.layout())),
        digest: pin.sealed_key().map(|s| (Sha256::new(), s.digest)),
    };
    let stream = futures::stream::try_unfold(Some(state), |state| async move {
        let Some(mut state) = state else {
            return Ok(None);
        };
        loop {
            match state.source.next().await {
                Some(piece) => {
                    let plain = state.feed(&piece?)?;
                    if !plain.is_empty() {
                        return Ok(Some((Bytes::from(plain), Some(state))));
                    }
                }
                None => {
                    let plain = state.finish()?;
                    return Ok(Some((Bytes::from(plain), None)));
                }
            }
        }
    })
    .filter(|piece| futures::future::ready(!matches!(piece, Ok(bytes) if bytes.is_empty())));
    Ok(stream.boxed())
}
