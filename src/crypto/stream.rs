//! The STREAM chunk loop (Hoang, Reyhanitabar, Rogaway, Vizár 2015) over
//! ChaCha20-Poly1305, as age uses it.
//!
//! A payload is cut into chunks of exactly [`CHUNK_SIZE`] plaintext bytes, except the
//! final chunk, which is **strictly shorter** (possibly empty). Chunk `j` is sealed with
//! the nonce `BE88(j) ‖ flag`, where `flag` is `0x01` for the final chunk and `0x00`
//! otherwise. The final chunk is therefore marked twice (by its length and by its nonce),
//! which gives one valid parse per ciphertext length and detects truncation, reordering
//! and extension. Each payload has its own derived key, so counters never repeat under a
//! key.
//!
//! Chunks are sealed or opened on all cores at once (rayon) when a call covers at least
//! two full chunks; below that, handing work to another thread costs more than it saves.

use bytes::Bytes;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Nonce, Tag};
use rayon::prelude::*;

use super::Key32;

/// Plaintext bytes per chunk.
pub(crate) const CHUNK_SIZE: usize = 64 * 1024;
/// Authentication tag bytes per chunk.
pub(crate) const TAG_LEN: usize = 16;
/// Ciphertext bytes of a full chunk.
pub(crate) const SEALED_CHUNK_SIZE: usize = CHUNK_SIZE + TAG_LEN;
/// Largest chunk index: the counter is capped at 2^32 chunks (256 TiB), as in age.
pub(crate) const MAX_CHUNKS: u64 = 1 << 32;

/// Sealed length of `plaintext_len` bytes: one tag per chunk, plus the empty final chunk
/// when the payload ends on a chunk boundary.
pub(crate) fn sealed_len(plaintext_len: usize, ends_payload: bool) -> usize {
    let pieces = plaintext_len / CHUNK_SIZE + usize::from(ends_payload);
    plaintext_len + pieces * TAG_LEN
}

/// A chunk failed to authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChunkError;

/// `work` for each of `pieces` chunks, in order: on all cores from two full chunks up (the
/// final chunk makes a third piece), on this thread below that.
fn per_chunk<T: Send>(
    pieces: std::ops::Range<usize>,
    work: impl Fn(usize) -> T + Sync + Send,
) -> Vec<T> {
    if pieces.len() > 2 {
        pieces.into_par_iter().map(work).collect()
    } else {
        pieces.map(work).collect()
    }
}

/// The chunks of a whole payload of `len` plaintext bytes (the final one is short, and
/// empty when `len` is a whole number of chunks).
pub(crate) fn chunk_count(len: usize) -> usize {
    len / CHUNK_SIZE + 1
}

/// The AEAD of one payload.
pub(crate) struct PayloadCipher(ChaCha20Poly1305);

fn nonce(index: u64, last: bool) -> Nonce {
    let mut n = [0u8; 12];
    n[3..11].copy_from_slice(&index.to_be_bytes());
    n[11] = u8::from(last);
    Nonce::from(n)
}

impl PayloadCipher {
    pub(crate) fn new(key: &Key32) -> Self {
        Self(ChaCha20Poly1305::new(key.expose().into()))
    }

    /// Seals one chunk in place: `chunk` holds the plaintext followed by [`TAG_LEN`] spare
    /// bytes, and on return the ciphertext followed by its tag.
    fn seal_in_place(&self, index: u64, last: bool, chunk: &mut [u8]) {
        let (body, tag_out) = chunk.split_at_mut(chunk.len() - TAG_LEN);
        let tag = self
            .0
            .encrypt_in_place_detached(&nonce(index, last), b"", body)
            .expect("chunks are far below the ChaCha20-Poly1305 length limit");
        tag_out.copy_from_slice(&tag);
    }

    /// Appends the sealed form of `plaintext` to `out`. `plaintext` is cut into chunks
    /// numbered from `first_index`; when `ends_payload` is set, its last piece is the
    /// payload's final chunk and must be strictly shorter than [`CHUNK_SIZE`] (an empty
    /// final chunk is added when `plaintext` is a whole number of chunks). Otherwise
    /// `plaintext` must be a whole number of full chunks.
    pub(crate) fn seal(
        &self,
        first_index: u64,
        plaintext: &[u8],
        ends_payload: bool,
        out: &mut Vec<u8>,
    ) {
        let start = out.len();
        out.resize(start + sealed_len(plaintext.len(), ends_payload), 0);
        self.seal_into(first_index, plaintext, ends_payload, &mut out[start..]);
    }

    /// Seals `plaintext` into `out`, which is exactly [`sealed_len`] long. Each chunk is
    /// copied into its place and sealed there by the same task, so for large payloads both
    /// the copy and the cipher run on all cores.
    pub(crate) fn seal_into(
        &self,
        first_index: u64,
        plaintext: &[u8],
        ends_payload: bool,
        out: &mut [u8],
    ) {
        let tail = plaintext.len() % CHUNK_SIZE;
        assert!(
            ends_payload || tail == 0,
            "only the final chunk may be short"
        );
        assert_eq!(
            out.len(),
            sealed_len(plaintext.len(), ends_payload),
            "output sized by sealed_len"
        );
        let pieces = out.len().div_ceil(SEALED_CHUNK_SIZE);
        let work = |(k, chunk): (usize, &mut [u8])| {
            let from = k * CHUNK_SIZE;
            let len = chunk.len() - TAG_LEN;
            chunk[..len].copy_from_slice(&plaintext[from..from + len]);
            let last = ends_payload && k == pieces - 1;
            self.seal_in_place(first_index + k as u64, last, chunk);
        };
        if plaintext.len() >= 2 * CHUNK_SIZE {
            out.par_chunks_mut(SEALED_CHUNK_SIZE)
                .enumerate()
                .for_each(work);
        } else {
            out.chunks_mut(SEALED_CHUNK_SIZE).enumerate().for_each(work);
        }
    }

    /// Seals a whole payload (chunks numbered from 0, the last one final) into one buffer
    /// per chunk. Each buffer is allocated, filled and sealed by the core that seals it:
    /// the plaintext is copied once and nothing is zero-filled, which is the form an
    /// upload takes as a list of parts.
    pub(crate) fn seal_chunks(&self, plaintext: &[u8]) -> Vec<Bytes> {
        self.seal_chunk_range(plaintext, 0..chunk_count(plaintext.len()))
    }

    /// The chunks `range` of [`seal_chunks`](Self::seal_chunks) of `plaintext` (the whole
    /// payload), sealed alone: one part of an upload sealed while the part before it is
    /// on its way.
    pub(crate) fn seal_chunk_range(
        &self,
        plaintext: &[u8],
        range: std::ops::Range<usize>,
    ) -> Vec<Bytes> {
        let pieces = chunk_count(plaintext.len());
        let seal_one = |k: usize| {
            let from = k * CHUNK_SIZE;
            let to = (from + CHUNK_SIZE).min(plaintext.len());
            let mut chunk = Vec::with_capacity(to - from + TAG_LEN);
            chunk.extend_from_slice(&plaintext[from..to]);
            chunk.extend_from_slice(&[0; TAG_LEN]);
            self.seal_in_place(k as u64, k == pieces - 1, &mut chunk);
            Bytes::from(chunk)
        };
        per_chunk(range, seal_one)
    }

    /// Opens a whole sealed payload (every chunk from 0 to the final one) into one
    /// buffer per chunk, in order, each allocated, filled and opened by the core that
    /// opens it. Nothing is returned unless every chunk authenticates (and the chunks
    /// opened meanwhile are wiped).
    pub(crate) fn open_chunks(&self, sealed: &[u8]) -> Result<Vec<Bytes>, ChunkError> {
        // The final chunk is strictly shorter than a full one, and holds at least a tag.
        if sealed.len() % SEALED_CHUNK_SIZE < TAG_LEN {
            return Err(ChunkError);
        }
        let pieces = sealed.len() / SEALED_CHUNK_SIZE + 1;
        let open_one = |k: usize| -> Result<Vec<u8>, ChunkError> {
            let at = k * SEALED_CHUNK_SIZE;
            let end = (at + SEALED_CHUNK_SIZE).min(sealed.len());
            let (body, tag) = sealed[at..end].split_at(end - at - TAG_LEN);
            let mut chunk = body.to_vec();
            self.0
                .decrypt_in_place_detached(
                    &nonce(k as u64, k == pieces - 1),
                    b"",
                    &mut chunk,
                    Tag::from_slice(tag),
                )
                .map_err(|_| ChunkError)?;
            Ok(chunk)
        };
        let opened = per_chunk(0..pieces, open_one);
        if opened.iter().any(Result::is_err) {
            use zeroize::Zeroize;
            for mut chunk in opened.into_iter().flatten() {
                chunk.zeroize();
            }
            return Err(ChunkError);
        }
        Ok(opened.into_iter().flatten().map(Bytes::from).collect())
    }

    /// Opens consecutive sealed chunks numbered from `first_index` and appends their
    /// plaintext to `out`. `final_index` is the index of the payload's final chunk: the
    /// chunk with that index is opened with the final flag, and only it may be short.
    ///
    /// Nothing is appended unless every chunk authenticates.
    pub(crate) fn open(
        &self,
        first_index: u64,
        final_index: u64,
        sealed: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), ChunkError> {
        let pieces = sealed.len().div_ceil(SEALED_CHUNK_SIZE);
        let start = out.len();
        out.resize(start + sealed.len().saturating_sub(pieces * TAG_LEN), 0);
        if self
            .open_into(first_index, final_index, sealed, &mut out[start..])
            .is_err()
        {
            out.truncate(start);
            return Err(ChunkError);
        }
        Ok(())
    }

    /// Opens `sealed` (consecutive chunks from `first_index`) into `out`, which is exactly
    /// the plaintext length. Each chunk's ciphertext is copied into its place and opened there
    /// by the same task, with its tag read from `sealed`. On failure `out` is zeroed.
    pub(crate) fn open_into(
        &self,
        first_index: u64,
        final_index: u64,
        sealed: &[u8],
        out: &mut [u8],
    ) -> Result<(), ChunkError> {
        let pieces = sealed.len().div_ceil(SEALED_CHUNK_SIZE);
        if pieces == 0 || out.len() + pieces * TAG_LEN != sealed.len() {
            return Err(ChunkError);
        }
        let last_piece_index = first_index.saturating_add(pieces as u64 - 1);
        let last_len = sealed.len() - (pieces - 1) * SEALED_CHUNK_SIZE;
        // Shape check: only the payload's final chunk may be short, and it must be.
        let shape_ok = last_piece_index <= final_index
            && if last_piece_index == final_index {
                (TAG_LEN..SEALED_CHUNK_SIZE).contains(&last_len)
            } else {
                last_len == SEALED_CHUNK_SIZE
            };
        if !shape_ok {
            return Err(ChunkError);
        }
        let open_one = |k: usize, body: &mut [u8]| -> Result<(), ChunkError> {
            let index = first_index + k as u64;
            let at = k * SEALED_CHUNK_SIZE;
            body.copy_from_slice(&sealed[at..at + body.len()]);
            let tag = Tag::from_slice(&sealed[at + body.len()..at + body.len() + TAG_LEN]);
            self.0
                .decrypt_in_place_detached(&nonce(index, index == final_index), b"", body, tag)
                .map_err(|_| ChunkError)
        };
        // `chunks_mut` yields no piece for an empty final chunk: open that one apart.
        let empty_final = sealed.len() - (pieces - 1) * SEALED_CHUNK_SIZE == TAG_LEN;
        let result = if sealed.len() >= 2 * SEALED_CHUNK_SIZE {
            out.par_chunks_mut(CHUNK_SIZE)
                .enumerate()
                .try_for_each(|(k, body)| open_one(k, body))
        } else {
            out.chunks_mut(CHUNK_SIZE)
                .enumerate()
                .try_for_each(|(k, body)| open_one(k, body))
        }
        .and_then(|()| {
            if empty_final {
                open_one(pieces - 1, &mut [])
            } else {
                Ok(())
            }
        });
        if result.is_err() {
            use zeroize::Zeroize;
            out.zeroize();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cipher() -> PayloadCipher {
        PayloadCipher::new(&Key32::from_bytes([3u8; 32]))
    }

    /// One buffer and one buffer per chunk: the same bytes, both round trips, and any
    /// flipped byte or cut refuses the whole payload.
    #[test]
    fn seal_open_round_trip_on_both_paths() {
        let c = cipher();
        for len in [
            0,
            1,
            CHUNK_SIZE - 1,
            CHUNK_SIZE,
            CHUNK_SIZE + 1,
            3 * CHUNK_SIZE,
            3 * CHUNK_SIZE + 7,
        ] {
            let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut sealed = Vec::new();
            c.seal(0, &plain, true, &mut sealed);
            let final_index = (len / CHUNK_SIZE) as u64;
            let mut opened = Vec::new();
            c.open(0, final_index, &sealed, &mut opened).unwrap();
            assert_eq!(opened, plain, "len {len}");
            let chunks = c.seal_chunks(&plain);
            assert_eq!(chunks.len(), len / CHUNK_SIZE + 1, "len {len}");
            assert_eq!(chunks.concat(), sealed, "len {len}");
            assert_eq!(c.open_chunks(&sealed).unwrap().concat(), plain, "len {len}");
            for at in [0, sealed.len() / 2, sealed.len() - 1] {
                let mut bad = sealed.clone();
                bad[at] ^= 1;
                assert_eq!(c.open_chunks(&bad), Err(ChunkError), "len {len} flip {at}");
                let mut out = Vec::new();
                let refused = c.open(0, final_index, &bad, &mut out);
                assert!(refused.is_err() && out.is_empty(), "len {len} flip {at}");
            }
            for cut in [1, TAG_LEN, SEALED_CHUNK_SIZE] {
                if cut <= sealed.len() {
                    let short = &sealed[..sealed.len() - cut];
                    assert_eq!(c.open_chunks(short), Err(ChunkError), "len {len} cut {cut}");
                }
            }
        }
    }

    #[test]
    fn final_flag_is_authenticated() {
        let c = cipher();
        let mut sealed = Vec::new();
        c.seal(0, &[1u8; CHUNK_SIZE], false, &mut sealed);
        let mut out = Vec::new();
        // A full chunk presented as the final one fails on its shape.
        assert_eq!(c.open(0, 0, &sealed, &mut out), Err(ChunkError));
        // A short chunk sealed as final does not open as non-final.
        let mut short = Vec::new();
        c.seal(0, &[1u8; 10], true, &mut short);
        assert_eq!(c.open(0, 1, &short, &mut out), Err(ChunkError));
        assert!(out.is_empty());
    }
}
