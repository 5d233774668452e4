//! IMAP Extension for Object Identifiers (RFC 8474).
//!
//! mailvault patch (see `PATCHES.md` beside the vendored crates): OBJECTID was not
//! implemented in imap-types 2.0.0-alpha.8.
//!
//! ```abnf
//! objectid = 1*255(ALPHA / DIGIT / "_" / "-")
//! ```

use alloc::string::String;
use core::fmt::{Display, Formatter};

#[cfg(feature = "arbitrary")]
use arbitrary::{Arbitrary, Unstructured};
use bounded_static_derive::ToStatic;
#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// An object identifier (`objectid`): the value of `EMAILID`, `THREADID` and
/// `MAILBOXID`.
///
/// See [RFC 8474, section 4](https://www.rfc-editor.org/rfc/rfc8474#section-4).
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "String"))]
#[derive(Debug, Clone, PartialEq, Eq, Hash, ToStatic)]
pub struct ObjectId(String);

/// Why a string is not an [`ObjectId`].
#[derive(Clone, Debug, Eq, Error, Hash, Ord, PartialEq, PartialOrd)]
pub enum ObjectIdError {
    /// An object id has 1 to 255 characters.
    #[error("An object id has 1 to 255 characters, not {0}")]
    Length(usize),
    /// Only `ALPHA / DIGIT / "_" / "-"`.
    #[error("Invalid byte b'\\x{byte:02x}' at index {at}")]
    ByteNotAllowed {
        /// The offending byte.
        byte: u8,
        /// Its index.
        at: usize,
    },
}

impl ObjectId {
    /// Checks `value` against `objectid = 1*255(ALPHA / DIGIT / "_" / "-")`.
    pub fn validate(value: impl AsRef<[u8]>) -> Result<(), ObjectIdError> {
        let value = value.as_ref();
        if value.is_empty() || value.len() > 255 {
            return Err(ObjectIdError::Length(value.len()));
        }
        if let Some(at) = value.iter().position(|b| !is_objectid_char(*b)) {
            return Err(ObjectIdError::ByteNotAllowed {
                byte: value[at],
                at,
            });
        }
        Ok(())
    }

    /// The identifier.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The identifier, owned.
    pub fn into_inner(self) -> String {
        self.0
    }
}

/// `ALPHA / DIGIT / "_" / "-"`
pub fn is_objectid_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-'
}

impl TryFrom<String> for ObjectId {
    type Error = ObjectIdError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::validate(&value)?;
        Ok(Self(value))
    }
}

impl TryFrom<&str> for ObjectId {
    type Error = ObjectIdError;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Self::validate(value)?;
        Ok(Self(String::from(value)))
    }
}

impl AsRef<str> for ObjectId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Display for ObjectId {
    fn fmt(&self, f: &mut Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> Arbitrary<'a> for ObjectId {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
        let len = u.int_in_range(1usize..=16)?;
        let mut id = String::with_capacity(len);
        for _ in 0..len {
            id.push(char::from(*u.choose(CHARS)?));
        }
        Ok(Self(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_objectid_validation() {
        assert!(ObjectId::try_from("M6d99ac3275bb4e").is_ok());
        assert!(ObjectId::try_from("a_b-c").is_ok());
        assert_eq!(ObjectId::try_from(""), Err(ObjectIdError::Length(0)));
        assert!(ObjectId::try_from("a".repeat(255).as_str()).is_ok());
        assert_eq!(
            ObjectId::try_from("a".repeat(256).as_str()),
            Err(ObjectIdError::Length(256))
        );
        assert_eq!(
            ObjectId::try_from("a b"),
            Err(ObjectIdError::ByteNotAllowed { byte: b' ', at: 1 })
        );
        assert!(ObjectId::try_from("a.b").is_err());
    }
}
