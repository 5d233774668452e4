//! Modified UTF-7 (RFC 3501 5.1.3), the encoding of IMAP4rev1 mailbox names: printable
//! US-ASCII (0x20..=0x7e) but `&` stands for itself, `&-` is `&`, and any other run of
//! characters is `&` + the modified base64 (`,` for `/`, no padding) of its UTF-16BE
//! form + `-`. The library stores names as UTF-8; the IMAP session decodes what the
//! client sends with [`decode`] and encodes what it answers with [`encode`].
//!
//! Hand-written because the crate for it (`utf7-imap` 0.3) panics on invalid base64,
//! decodes lone surrogates lossily and leaves DEL unencoded. Decoding here is strict: it
//! accepts only what [`encode`] produces (RFC 3501: "the encoded form is the canonical
//! form"), so that two spellings never name the same mailbox.

use std::fmt;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

/// Why a mailbox name is not valid modified UTF-7.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// A byte outside printable US-ASCII, at this offset.
    NotPrintableAscii(usize),
    /// An `&` section without its closing `-`, starting at this offset.
    Unterminated(usize),
    /// A byte in a base64 section that is not of the modified base64 alphabet.
    BadBase64(usize),
    /// A base64 section that is not the canonical encoding of UTF-16 text: leftover
    /// bits, an unpaired surrogate, an encoded printable ASCII character, or two
    /// sections next to each other.
    NotCanonical(usize),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotPrintableAscii(at) => write!(f, "byte {at} is not printable US-ASCII"),
            Error::Unterminated(at) => write!(f, "the & at byte {at} has no closing -"),
            Error::BadBase64(at) => write!(f, "byte {at} is not modified base64"),
            Error::NotCanonical(at) => {
                write!(
                    f,
                    "the & section at byte {at} is not canonical modified UTF-7"
                )
            }
        }
    }
}

impl std::error::Error for Error {}

fn printable(c: char) -> bool {
    (' '..='~').contains(&c)
}

/// Encodes a UTF-8 mailbox name in modified UTF-7.
pub fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut run: Vec<u16> = Vec::new();
    let flush = |run: &mut Vec<u16>, out: &mut String| {
        if run.is_empty() {
            return;
        }
        out.push('&');
        let bytes: Vec<u8> = run.iter().flat_map(|u| u.to_be_bytes()).collect();
        let (mut acc, mut bits) = (0u32, 0u32);
        for b in bytes {
            acc = (acc << 8) | u32::from(b);
            bits += 8;
            while bits >= 6 {
                bits -= 6;
                out.push(char::from(ALPHABET[((acc >> bits) & 63) as usize]));
            }
        }
        if bits > 0 {
            out.push(char::from(ALPHABET[((acc << (6 - bits)) & 63) as usize]));
        }
        out.push('-');
        run.clear();
    };
    for c in name.chars() {
        if printable(c) {
            flush(&mut run, &mut out);
            out.push(c);
            if c == '&' {
                out.push('-');
            }
        } else {
            let mut units = [0u16; 2];
            run.extend_from_slice(c.encode_utf16(&mut units));
        }
    }
    flush(&mut run, &mut out);
    out
}

/// Decodes a modified UTF-7 mailbox name to UTF-8; only the canonical form (what
/// [`encode`] gives) is accepted.
pub fn decode(name: &[u8]) -> Result<String, Error> {
    let mut out = String::with_capacity(name.len());
    let mut i = 0;
    let mut previous_section_end = None;
    while i < name.len() {
        let b = name[i];
        if !(0x20..=0x7e).contains(&b) {
            return Err(Error::NotPrintableAscii(i));
        }
        if b != b'&' {
            out.push(char::from(b));
            i += 1;
            continue;
        }
        let start = i;
        let Some(len) = name[start + 1..].iter().position(|&c| c == b'-') else {
            return Err(Error::Unterminated(start));
        };
        let section = &name[start + 1..start + 1 + len];
        i = start + len + 2;
        if section.is_empty() {
            out.push('&');
            continue;
        }
        if previous_section_end == Some(start) {
            return Err(Error::NotCanonical(start));
        }
        previous_section_end = Some(i);
        let (mut acc, mut bits) = (0u32, 0u32);
        let mut bytes = Vec::with_capacity(section.len() * 3 / 4);
        for (k, &c) in section.iter().enumerate() {
            let Some(v) = ALPHABET.iter().position(|&a| a == c) else {
                return Err(Error::BadBase64(start + 1 + k));
            };
            acc = ((acc << 6) | v as u32) & 0x00ff_ffff;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                bytes.push(((acc >> bits) & 0xff) as u8);
            }
        }
        // Canonical: fewer than 6 leftover bits, all zero, and whole UTF-16 units.
        if bits >= 6 || acc & ((1 << bits) - 1) != 0 || bytes.len() % 2 != 0 {
            return Err(Error::NotCanonical(start));
        }
        let units = bytes
            .chunks_exact(2)
            .map(|p| u16::from_be_bytes([p[0], p[1]]));
        for c in char::decode_utf16(units) {
            match c {
                Ok(c) if !printable(c) => out.push(c),
                _ => return Err(Error::NotCanonical(start)),
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_3501_examples() {
        // RFC 3501 5.1.3's example, and the names of the tests against real clients.
        let name = "~peter/mail/\u{53f0}\u{5317}/\u{65e5}\u{672c}\u{8a9e}";
        assert_eq!(encode(name), "~peter/mail/&U,BTFw-/&ZeVnLIqe-");
        assert_eq!(
            decode(b"~peter/mail/&U,BTFw-/&ZeVnLIqe-").as_deref(),
            Ok(name)
        );
        assert_eq!(encode("Entwürfe"), "Entw&APw-rfe");
        assert_eq!(encode("a&b"), "a&-b");
        assert_eq!(decode(b"a&-b").as_deref(), Ok("a&b"));
        assert_eq!(encode("Отправленные"), "&BB4EQgQ,BEAEMAQyBDsENQQ9BD0ESwQ1-");
        // A character outside the BMP: a surrogate pair.
        assert_eq!(encode("\u{1F600}"), "&2D3eAA-");
        assert_eq!(decode(b"&2D3eAA-").as_deref(), Ok("\u{1F600}"));
        // DEL is not printable: encoded.
        assert_eq!(encode("\u{7f}"), "&AH8-");
    }

    #[test]
    fn rejects_what_is_not_canonical() {
        for (input, error) in [
            (&b"caf\xc3\xa9"[..], Error::NotPrintableAscii(3)),
            (b"a\tb", Error::NotPrintableAscii(1)),
            (b"a&", Error::Unterminated(1)),
            (b"&U,BTFw", Error::Unterminated(0)),
            (b"&U/BTFw-", Error::BadBase64(2)),
            (b"&U=-", Error::BadBase64(2)),
            // An encoded "a" (printable ASCII).
            (b"&AGE-", Error::NotCanonical(0)),
            // Leftover bits that are not zero, an odd byte, a lone surrogate.
            (b"&APx-", Error::NotCanonical(0)),
            (b"&AP-", Error::NotCanonical(0)),
            (b"&2D0-", Error::NotCanonical(0)),
            (b"&3gA-", Error::NotCanonical(0)),
            // Two sections next to each other (one would do).
            (b"&APw-&APw-", Error::NotCanonical(5)),
        ] {
            assert_eq!(
                decode(input),
                Err(error),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn round_trips_every_kind_of_character() {
        for name in [
            "",
            "INBOX",
            "&&&",
            "a&-b",
            "Entwürfe/日本語",
            "\u{7f}\u{80}\u{ffff}\u{10000}\u{10ffff}x",
            "é&é",
        ] {
            let encoded = encode(name);
            assert_eq!(decode(encoded.as_bytes()).as_deref(), Ok(name), "{encoded}");
            assert!(encoded.bytes().all(|b| (0x20..=0x7e).contains(&b)));
        }
    }
}
