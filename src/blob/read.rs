use std::ops::Range;

use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::{GetResultPayload, ObjectStoreExt};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::cipher::{BlobCipher, Opener, BATCH_CHUNKS};
use super::BlobStream;
use crate::crypto::stream::SEALED_CHUNK_SIZE;
use crate::error::{Error, Result};
use crate::format::BlobPin;
use crate::ids::AccountId;
use crate::storage::{naming, DynStore};

/// Stored bytes are handed to the opener in pieces of about one batch of chunks (1 MiB),
/// whatever size the backend delivers them in (object_store streams a local file in
/// 8 KiB reads).
const PIECE: usize = BATCH_CHUNKS * SEALED_CHUNK_SIZE;

/// Pieces read ahead while one is being opened: the read of the next piece overlaps the
/// cipher on the current one, and memory stays bounded by a few pieces.
const READ_AHEAD: usize = 1;

/// Pieces at least this large are opened on the blocking pool (the chunks on all cores),
/// so that the runtime's workers keep reading meanwhile; smaller ones inline, on one core
/// (see [`crate::cpu::parallel`]).
const OFFLOAD: usize = crate::cpu::IN_PLACE_BYTES;

struct ReadState {
    header: Vec<u8>,
    expected_header: Vec<u8>,
    opener: Option<Opener>,
    /// For a sealed blob: the SHA-256 of what arrived so far, and the signed one.
    digest: Option<(Sha256, [u8; 32])>,
}

impl ReadState {
    /// Feeds one piece of the stored object; returns plaintext that became available.
    fn feed(&mut self, mut data: &[u8]) -> Result<Vec<u8>> {
        let whole = data;
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
        let opener = self.opener.as_mut().ok_or(Error::Tampered)?;
        match &mut self.digest {
            // The digest of a sealed blob runs beside the cipher, on another core.
            Some((digest, _)) if whole.len() >= OFFLOAD => {
                let (_, opened) =
                    rayon::join(|| digest.update(whole), || opener.push(data, &mut out));
                opened?;
            }
            digest => {
                if let Some((digest, _)) = digest {
                    digest.update(whole);
                }
                opener.push(data, &mut out)?;
            }
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

/// One GET of the whole object, opened batch by batch while the next piece is read.
/// [`AccountBlobs::read`](super::AccountBlobs::read) collects the same stream, so the
/// two reads cannot drift apart.
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
        header: Vec::new(),
        expected_header: pin.header_bytes(),
        opener: Some(Opener::new(payload, pin.layout())),
        digest: pin.sealed_key().map(|s| (Sha256::new(), s.digest)),
    };
    let pieces = match result.payload {
        // A local file: read and opened on the blocking pool, the next piece read while
        // the current one is opened, with no hand-over between tasks per piece.
        GetResultPayload::File(file, _) => {
            let (tx, rx) = mpsc::channel(READ_AHEAD);
            let range = result.range;
            tokio::task::spawn_blocking(move || open_file(file, range, state, &tx));
            return Ok(futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|piece| (piece, rx))
            })
            .boxed());
        }
        GetResultPayload::Stream(source) => {
            let (tx, rx) = mpsc::channel(READ_AHEAD);
            tokio::spawn(coalesce(source, tx));
            rx
        }
    };
    let stream = futures::stream::try_unfold(Some((state, pieces)), |state| async move {
        let Some((mut state, mut pieces)) = state else {
            return Ok(None);
        };
        loop {
            match pieces.recv().await {
                Some(piece) => {
                    let piece = piece?;
                    let plain = if piece.len() >= OFFLOAD {
                        let (back, plain) = crate::cpu::offload(piece.len(), move || {
                            let plain = state.feed(&piece);
                            (state, plain)
                        })
                        .await?;
                        state = back;
                        plain?
                    } else {
                        state.feed(&piece)?
                    };
                    if !plain.is_empty() {
                        return Ok(Some((Bytes::from(plain), Some((state, pieces)))));
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

/// The whole read of a local file, on a blocking thread: each piece of about [`PIECE`]
/// bytes is opened (on all cores) while the next one is read, and its plaintext sent to
/// the reader, at most [`READ_AHEAD`] pieces ahead. Ends when the reader drops the
/// receiver, or with the first error.
fn open_file(
    mut file: std::fs::File,
    range: Range<u64>,
    mut state: ReadState,
    tx: &mpsc::Sender<Result<Bytes>>,
) {
    use std::io::{Read, Seek, SeekFrom};
    if let Err(e) = file.seek(SeekFrom::Start(range.start)) {
        let _ = tx.blocking_send(Err(io_error(e)));
        return;
    }
    let mut left = range.end - range.start;
    let mut read_piece = |left: &mut u64| -> Result<Vec<u8>> {
        let want = (*left).min(PIECE as u64);
        let mut buf = Vec::with_capacity(want as usize);
        (&mut file)
            .take(want)
            .read_to_end(&mut buf)
            .map_err(io_error)?;
        // A file shorter than it was: the opener refuses the short object.
        *left = if (buf.len() as u64) < want {
            0
        } else {
            *left - want
        };
        Ok(buf)
    };
    let mut current = match read_piece(&mut left) {
        Ok(piece) => piece,
        Err(e) => {
            let _ = tx.blocking_send(Err(e));
            return;
        }
    };
    loop {
        // The next piece is read beside the opening of this one, on the thread pool; the
        // last piece (all of a small message) is opened here: a hop to the pool and back
        // cost more than opening it (thread switches were most of a FETCH of small
        // messages' time).
        let (next, plain) = if left > 0 {
            rayon::join(|| Some(read_piece(&mut left)), || state.feed(&current))
        } else {
            (None, state.feed(&current))
        };
        let sent = match plain {
            Ok(plain) if plain.is_empty() => true,
            Ok(plain) => tx.blocking_send(Ok(Bytes::from(plain))).is_ok(),
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        if !sent {
            return;
        }
        match next {
            Some(Ok(piece)) => current = piece,
            Some(Err(e)) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
            None => break,
        }
    }
    let last = state.finish().map(Bytes::from);
    if !matches!(&last, Ok(b) if b.is_empty()) {
        let _ = tx.blocking_send(last);
    }
}

fn io_error(e: std::io::Error) -> Error {
    Error::from(object_store::Error::Generic {
        store: "LocalFileSystem",
        source: Box::new(e),
    })
}

/// A backend's stream regrouped into pieces of at least [`PIECE`] bytes (the last may
/// be shorter). A piece that arrived whole is passed on without a copy.
async fn coalesce(
    mut source: BoxStream<'static, object_store::Result<Bytes>>,
    tx: mpsc::Sender<Result<Bytes>>,
) {
    let mut held: Vec<Bytes> = Vec::new();
    let mut held_len = 0;
    while let Some(piece) = source.next().await {
        let piece = match piece {
            Ok(piece) => piece,
            Err(e) => {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
        };
        held_len += piece.len();
        held.push(piece);
        if held_len >= PIECE && tx.send(Ok(join(&mut held))).await.is_err() {
            return;
        }
        if held.is_empty() {
            held_len = 0;
        }
    }
    if !held.is_empty() {
        let _ = tx.send(Ok(join(&mut held))).await;
    }
}

/// The held pieces as one, copied only if there are several.
fn join(held: &mut Vec<Bytes>) -> Bytes {
    if held.len() == 1 {
        return held.pop().unwrap_or_default();
    }
    let mut joined = BytesMut::with_capacity(held.iter().map(Bytes::len).sum());
    for piece in held.drain(..) {
        joined.extend_from_slice(&piece);
    }
    joined.freeze()
}
