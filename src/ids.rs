//! Identifiers: random 128-bit values, never derived from names or content.

use std::fmt;

use crate::crypto::RandomSource;
use crate::error::{Error, Result};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; 16]);

        impl $name {
            /// Length of the identifier in bytes.
            pub const LEN: usize = 16;

            /// A fresh random identifier.
            pub fn random(rng: &RandomSource) -> Self {
                let mut bytes = [0u8; 16];
                rng.fill(&mut bytes);
                Self(bytes)
            }

            /// The identifier made of these bytes.
            pub const fn from_bytes(bytes: [u8; 16]) -> Self {
                Self(bytes)
            }

            /// The raw bytes.
            pub const fn as_bytes(&self) -> &[u8; 16] {
                &self.0
            }

            /// Lowercase hexadecimal form, as used in object names.
            pub fn to_hex(&self) -> String {
                crate::ids::hex(&self.0)
            }

            /// Parses the 32-character hexadecimal form.
            ///
            /// # Errors
            /// [`Error::InvalidArgument`] if `text` is not 32 hex digits.
            pub fn from_hex(text: &str) -> Result<Self> {
                crate::ids::unhex16(text).map(Self)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.to_hex())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
    };
}

id_type!(
    /// One deployment of the embedding server (set once at install). Bound into every
    /// key derivation so that data cannot move between deployments.
    DeploymentId
);
id_type!(
    /// One account. Random, kept by the embedding server next to the login name; the
    /// login name itself never reaches the object store.
    AccountId
);
id_type!(
    /// One stored blob. Random per write, so a name says nothing about the content.
    BlobId
);
id_type!(
    /// One writer of an index collection (a session or process), random per handle: it
    /// makes manifest names unique on backends without compare-and-swap and breaks ties
    /// between concurrent commits.
    WriterId
);
id_type!(
    /// One immutable index segment. Random per write.
    SegmentId
);

id_type!(
    /// One delivery: names its envelope object, and is recorded at import so that a
    /// replayed delivery is refused.
    DeliveryId
);
id_type!(
    /// One mailbox of an account: stable across renames (the JMAP `Mailbox` id).
    MailboxId
);
id_type!(
    /// One email: a body and its metadata, shared by every copy of the message (the
    /// RFC 8474 EMAILID and JMAP `Email` id).
    EmailId
);
id_type!(
    /// One thread of emails (the RFC 8474 THREADID and JMAP `Thread` id).
    ThreadId
);

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

fn unhex16(text: &str) -> Result<[u8; 16]> {
    let bytes = text.as_bytes();
    if bytes.len() != 32 {
        return Err(Error::invalid("identifier must be 32 hex digits"));
    }
    let digit = |c: u8| -> Result<u8> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(Error::invalid("identifier must be 32 hex digits")),
        }
    };
    let mut out = [0u8; 16];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = AccountId::from_bytes(*b"0123456789abcdef");
        assert_eq!(id.to_hex(), "30313233343536373839616263646566");
        assert_eq!(AccountId::from_hex(&id.to_hex()).unwrap(), id);
        assert!(AccountId::from_hex("zz").is_err());
        assert!(AccountId::from_hex(&"g".repeat(32)).is_err());
    }
}
