//! The one cursor every parser of stored bytes reads through, and the matching writers.
//!
//! Every read is length-checked and fails with [`Error::Tampered`]: stored bytes come
//! from an untrusted store, and a short or malformed object is indistinguishable from a
//! modified one.

use crate::error::{Error, Result};

/// A cursor over untrusted bytes.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    lengths: Lengths,
}

/// How the lengths of byte strings and the counts of lists are written: a `u32`
/// (big-endian), or a varint ([`put_varint`]) where a record's version says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lengths {
    /// Four bytes, big-endian.
    Fixed,
    /// A varint of at most five bytes.
    Varint,
}

impl Lengths {
    /// Appends the length or count `n`.
    pub(crate) fn put(self, out: &mut Vec<u8>, n: usize) {
        match self {
            Self::Fixed => out.extend_from_slice(&(n as u32).to_be_bytes()),
            Self::Varint => put_varint(out, n as u64),
        }
    }

    /// Appends `bytes` after their length.
    pub(crate) fn put_bytes(self, out: &mut Vec<u8>, bytes: &[u8]) {
        self.put(out, bytes.len());
        out.extend_from_slice(bytes);
    }

    /// Appends the count of `items`, then each item.
    pub(crate) fn put_list<T>(
        self,
        out: &mut Vec<u8>,
        items: &[T],
        mut put: impl FnMut(&mut Vec<u8>, &T),
    ) {
        self.put(out, items.len());
        for item in items {
            put(out, item);
        }
    }
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            lengths: Lengths::Fixed,
        }
    }

    /// How the lengths and counts read from now on are written; returns how they were.
    pub(crate) fn set_lengths(&mut self, lengths: Lengths) -> Lengths {
        std::mem::replace(&mut self.lengths, lengths)
    }

    /// A varint ([`put_varint`]): at most ten bytes, in its shortest form (any other
    /// form was not written by this crate).
    pub(crate) fn varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let b = self.u8()?;
            let bits = u64::from(b & 0x7f);
            if i == 9 && bits > 1 {
                return Err(Error::Tampered);
            }
            value |= bits << (7 * i);
            if b & 0x80 == 0 {
                // A last byte of zero (after the first) is a longer form of a shorter one.
                if i > 0 && b == 0 {
                    return Err(Error::Tampered);
                }
                return Ok(value);
            }
        }
        Err(Error::Tampered)
    }

    /// A length or a count, as [`set_lengths`](Self::set_lengths) says they are written.
    pub(crate) fn len(&mut self) -> Result<usize> {
        match self.lengths {
            Lengths::Fixed => Ok(self.u32()? as usize),
            Lengths::Varint => {
                let n = self.varint()?;
                usize::try_from(u32::try_from(n).map_err(|_| Error::Tampered)?)
                    .map_err(|_| Error::Tampered)
            }
        }
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

    /// A length-prefixed byte string ([`len`](Self::len)).
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = self.len()?;
        self.take(len)
    }

    /// A length-prefixed ([`len`](Self::len)) UTF-8 string.
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

    /// A count ([`len`](Self::len)), then that many items. The count is checked against
    /// the bytes left before anything is allocated: each item takes at least
    /// `min_item_len` bytes with `u32` lengths, at least one with varint lengths.
    pub(crate) fn list<T>(
        &mut self,
        min_item_len: usize,
        mut read: impl FnMut(&mut Self) -> Result<T>,
    ) -> Result<Vec<T>> {
        let count = self.len()?;
        // Varint lengths may take a byte: the bound holds at one byte an item.
        let min_item_len = match self.lengths {
            Lengths::Fixed => min_item_len.max(1),
            Lengths::Varint => 1,
        };
        if count.saturating_mul(min_item_len) > self.bytes.len() {
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

/// Appends `v` as a varint: seven bits a byte, least significant first, the high bit set
/// on every byte but the last; the shortest form.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a `u32`-length-prefixed byte string.
pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    Lengths::Fixed.put_bytes(out, bytes);
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
pub(crate) fn put_list<T>(out: &mut Vec<u8>, items: &[T], put: impl FnMut(&mut Vec<u8>, &T)) {
    Lengths::Fixed.put_list(out, items, put);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Varints round-trip at every length boundary; a longer form of a value, an
    /// eleventh byte, a value past 64 bits and a truncated one are refused; as lengths,
    /// past `u32::MAX` is refused.
    #[test]
    fn varints_round_trip_in_their_shortest_form_only() {
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            let mut r = Reader::new(&out);
            assert_eq!(r.varint().unwrap(), v);
            assert!(r.is_empty());
            r = Reader::new(&out[..out.len() - 1]);
            assert!(matches!(r.varint(), Err(Error::Tampered)), "{v} truncated");
        }
        for bad in [
            &[0x80, 0x00][..],
            &[0xff, 0x80, 0x00],
            &[0xff; 11],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
            // Past ten bytes: the tenth carries bit 63 and says more follow.
            &[
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x81, 0x01,
            ],
            &[
                0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
            ],
        ] {
            assert!(
                matches!(Reader::new(bad).varint(), Err(Error::Tampered)),
                "{bad:?}"
            );
        }
        let mut out = Vec::new();
        put_varint(&mut out, u64::from(u32::MAX) + 1);
        let mut r = Reader::new(&out);
        r.set_lengths(Lengths::Varint);
        assert!(matches!(r.len(), Err(Error::Tampered)));
        let mut out = Vec::new();
        Lengths::Varint.put_list(&mut out, &[&b"ab"[..], b""], |out, b| {
            Lengths::Varint.put_bytes(out, b)
        });
        assert_eq!(out, [2, 2, b'a', b'b', 0]);
        let mut r = Reader::new(&out);
        r.set_lengths(Lengths::Varint);
        let items = r.list(4, |r| r.bytes().map(<[u8]>::to_vec)).unwrap();
        assert_eq!(items, [b"ab".to_vec(), Vec::new()]);
        assert!(r.is_empty());
    }
}
