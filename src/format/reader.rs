//! The one cursor every parser of stored bytes reads through, and the matching writers.
//!
//! Every read is length-checked and fails with [`Error::Tampered`]: stored bytes come
//! from an untrusted store, and a short or malformed object is indistinguishable from a
//! modified one.

use crate::error::{Error, Result};

/// A cursor over untrusted bytes.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.bytes.len() < n {
            return Err(Error::Tampered);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A `u32`-length-prefixed byte string.
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    /// A `u32`-length-prefixed UTF-8 string.
    pub(crate) fn string(&mut self) -> Result<String> {
        std::str::from_utf8(self.bytes()?)
            .map(str::to_owned)
            .map_err(|_| Error::Tampered)
    }

    /// A presence byte (0 or 1), then the item when present.
    pub(crate) fn option<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<Option<T>> {
        match self.u8()? {
            0 => Ok(None),
            1 => read(self).map(Some),
            _ => Err(Error::Tampered),
        }
    }

    /// A `u32` count, then that many items. The count is checked against the bytes left
    /// (each item takes at least `min_item_len` bytes) before anything is allocated.
    pub(crate) fn list<T>(
        &mut self,
        min_item_len: usize,
        mut read: impl FnMut(&mut Self) -> Result<T>,
    ) -> Result<Vec<T>> {
        let count = self.u32()? as usize;
        if count.saturating_mul(min_item_len.max(1)) > self.bytes.len() {
            return Err(Error::Tampered);
        }
        (0..count).map(|_| read(self)).collect()
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> &'a [u8] {
        self.bytes
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Fails unless every byte was read.
    pub(crate) fn finish(&self) -> Result<()> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(Error::Tampered)
        }
    }
}

/// Appends a `u32`-length-prefixed byte string.
pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Appends a presence byte, then the item when present.
pub(crate) fn put_option<T>(
    out: &mut Vec<u8>,
    item: Option<&T>,
    put: impl FnOnce(&mut Vec<u8>, &T),
) {
    match item {
        None => out.push(0),
        Some(item) => {
            out.push(1);
            put(out, item);
        }
    }
}

/// Appends a `u32` count, then each item.
pub(crate) fn put_list<T>(out: &mut Vec<u8>, items: &[T], mut put: impl FnMut(&mut Vec<u8>, &T)) {
    out.extend_from_slice(&(items.len() as u32).to_be_bytes());
    for item in items {
        put(out, item);
    }
}
