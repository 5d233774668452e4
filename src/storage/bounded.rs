//! Reads of stored objects with a size bound known before the bytes arrive.
//!
//! Anyone who can write one object to the bucket chooses its size. Every read of a stored
//! object therefore goes through this module with a bound fixed by the caller *before*
//! the request: the largest valid object of its kind (an envelope, a keyring, a manifest)
//! or the exact length that trusted data pins (a segment by its manifest entry, a blob by
//! its pin, a range by its own length). The size the store announces (the GET's metadata:
//! the file's length on a local disk, `Content-Length` over HTTP) is checked before any
//! byte is read, and reading stops as soon as the bytes received pass the bound, should
//! the store have announced less than it sends. Memory is then bounded by the bound, never
//! by what the store holds.

use std::ops::Range;

use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{GetOptions, GetResult, GetResultPayload, ObjectStore, ObjectStoreExt};

use crate::error::{Error, Result};

/// Reads the whole object at `path`, refusing it if it is larger than `limit` bytes.
///
/// # Errors
/// [`Error::TooLarge`] if the store announces or sends more than `limit` bytes (nothing
/// beyond `limit` is read); [`Error::NotFound`] if there is no object; a backend failure.
pub async fn get_bounded(store: &dyn ObjectStore, path: &Path, limit: u64) -> Result<Bytes> {
    let result = store.get_opts(path, GetOptions::default()).await?;
    collect(result, path, limit).await
}

/// Reads the whole object at `path`, which trusted data says is exactly `len` bytes long
/// (a segment pinned by its manifest entry, a blob by its pin).
///
/// # Errors
/// [`Error::Tampered`] if the object has another length (nothing beyond `len` is read);
/// [`Error::NotFound`] if there is no object; a backend failure.
pub async fn get_exact(store: &dyn ObjectStore, path: &Path, len: u64) -> Result<Bytes> {
    match get_bounded(store, path, len).await {
        Ok(bytes) if bytes.len() as u64 == len => Ok(bytes),
        Ok(_) | Err(Error::TooLarge { .. }) => Err(Error::Tampered),
        Err(e) => Err(e),
    }
}

/// Reads the bytes `range` of the object at `path`: at most `range.end - range.start`
/// bytes are read, whatever the store sends.
///
/// # Errors
/// [`Error::Tampered`] if the store sends more bytes than asked for;
/// [`Error::NotFound`] if there is no object; a backend failure (a range beyond the end
/// of the object included).
pub async fn get_range(store: &dyn ObjectStore, path: &Path, range: Range<u64>) -> Result<Bytes> {
    let limit = range.end.saturating_sub(range.start);
    let options = GetOptions {
        range: Some(range.into()),
        ..GetOptions::default()
    };
    let result = store.get_opts(path, options).await?;
    match collect(result, path, limit).await {
        Err(Error::TooLarge { .. }) => Err(Error::Tampered),
        other => other,
    }
}

/// Reads the bytes `range` of the object at `path`, which trusted data (a pin) says is
/// exactly `size` bytes long: one ranged GET, whose answer carries the object's whole size
/// (S3 from `Content-Range`), and at most `range.end - range.start` bytes read.
///
/// # Errors
/// [`Error::Tampered`] if the object has another size or the answer another length;
/// [`Error::NotFound`] if it is gone; a backend failure.
pub async fn get_range_of(
    store: &dyn ObjectStore,
    path: &Path,
    range: Range<u64>,
    size: u64,
) -> Result<Bytes> {
    let limit = range.end.saturating_sub(range.start);
    let options = GetOptions {
        range: Some(range.into()),
        ..GetOptions::default()
    };
    let result = match store.get_opts(path, options).await {
        Ok(result) => result,
        Err(object_store::Error::NotFound { path, .. }) => return Err(Error::NotFound { path }),
        // A range beyond the end of a truncated object fails; a backend failure too.
        Err(e) => {
            return match store.head(path).await {
                Ok(meta) if meta.size != size => Err(Error::Tampered),
                _ => Err(e.into()),
            }
        }
    };
    if result.meta.size != size {
        return Err(Error::Tampered);
    }
    match collect(result, path, limit).await {
        Ok(bytes) if bytes.len() as u64 == limit => Ok(bytes),
        Ok(_) | Err(Error::TooLarge { .. }) => Err(Error::Tampered),
        Err(e) => Err(e),
    }
}

/// Collects the body of `result`, refusing more than `limit` bytes: first by what the
/// store announces, then by what it sends.
async fn collect(result: GetResult, path: &Path, limit: u64) -> Result<Bytes> {
    let announced = result.range.end.saturating_sub(result.range.start);
    let too_large = |size: u64| Error::TooLarge {
        path: path.to_string(),
        size,
        limit,
    };
    if announced > limit {
        return Err(too_large(announced));
    }
    if matches!(result.payload, GetResultPayload::File(..)) {
        // A local file is read for exactly the announced range, already checked.
        return Ok(result.bytes().await?);
    }
    let mut stream = result.into_stream();
    // An answer in one piece (an in-memory store, a small object) is kept as it is; the
    // pieces of a longer one are copied as they arrive (one piece per poll, never all
    // of a large object in one stretch of the executor thread).
    let mut first: Option<Bytes> = None;
    let mut buffer = Vec::new();
    while let Some(piece) = stream.next().await {
        let piece = piece?;
        let held = first.as_ref().map_or(buffer.len(), Bytes::len);
        let size = held as u64 + piece.len() as u64;
        if size > limit {
            return Err(too_large(size));
        }
        if let Some(head) = first.take() {
            // `announced <= limit`, a bound on what the caller accepts in memory.
            buffer.reserve_exact((announced as usize).max(head.len() + piece.len()));
            buffer.extend_from_slice(&head);
            buffer.extend_from_slice(&piece);
        } else if buffer.is_empty() {
            first = Some(piece);
        } else {
            buffer.extend_from_slice(&piece);
        }
    }
    Ok(first.unwrap_or_else(|| Bytes::from(buffer)))
}

/// Whether an object is stored at `path` (one HEAD).
///
/// # Errors
/// Backend failures other than "not found".
pub(crate) async fn exists(store: &dyn ObjectStore, path: &Path) -> Result<bool> {
    match store.head(path).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::NotFound { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    #[tokio::test]
    async fn bounds_are_checked_before_reading() {
        let store = InMemory::new();
        let path = Path::from("x");
        store.put(&path, vec![7u8; 100].into()).await.unwrap();
        assert_eq!(get_bounded(&store, &path, 100).await.unwrap().len(), 100);
        assert!(matches!(
            get_bounded(&store, &path, 99).await,
            Err(Error::TooLarge {
                size: 100,
                limit: 99,
                ..
            })
        ));
        assert_eq!(get_exact(&store, &path, 100).await.unwrap().len(), 100);
        for len in [99, 101] {
            assert!(matches!(
                get_exact(&store, &path, len).await,
                Err(Error::Tampered)
            ));
        }
        assert_eq!(
            &get_range(&store, &path, 10..20).await.unwrap()[..],
            &[7u8; 10]
        );
        assert!(matches!(
            get_bounded(&store, &Path::from("missing"), 10).await,
            Err(Error::NotFound { .. })
        ));
    }
}
