//! IMAP4 Extension for Returning SEARCH Results in a Different Format (RFC 4731).
//!
//! mailvault patch (see `PATCHES.md` beside the vendored crates): ESEARCH was not
//! implemented in imap-types 2.0.0-alpha.8 (upstream issue duesee/imap-codec#379).
//!
//! ```abnf
//! search-return-opts   = SP "RETURN" SP "(" [search-return-opt *(SP search-return-opt)] ")"
//! search-return-opt    = "MIN" / "MAX" / "ALL" / "COUNT"
//! esearch-response     = "ESEARCH" [search-correlator] [SP "UID"] *(SP search-return-data)
//! search-correlator    = SP "(" "TAG" SP tag-string ")"
//! search-return-data   = "MIN" SP nz-number / "MAX" SP nz-number /
//!                        "ALL" SP sequence-set / "COUNT" SP number /
//!                        "MODSEQ" SP mod-sequence-value   ; RFC 7162
//! ```
//!
//! mailvault patch: with the `ext_searchres` feature, `search-return-opt =/ "SAVE"`
//! (RFC 5182 SEARCHRES, section 4), and `$` ([`Sequence::LastCommand`]) in sequence sets.
//!
//! [`Sequence::LastCommand`]: crate::sequence::Sequence

use core::num::{NonZeroU32, NonZeroU64};

#[cfg(feature = "arbitrary")]
use arbitrary::Arbitrary;
use bounded_static_derive::ToStatic;
#[cfg(feature = "serde")]
use serde::{Deserialize, Serialize};

use crate::sequence::SequenceSet;

/// A search return option (`search-return-opt`) of `SEARCH RETURN (...)`.
///
/// See [RFC 4731, section 3.1](https://www.rfc-editor.org/rfc/rfc4731#section-3.1).
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ToStatic)]
pub enum SearchReturnOption {
    /// `MIN`: the lowest message number/UID satisfying the criteria.
    Min,
    /// `MAX`: the highest message number/UID satisfying the criteria.
    Max,
    /// `ALL`: all message numbers/UIDs satisfying the criteria, as a sequence set.
    All,
    /// `COUNT`: the number of messages satisfying the criteria.
    Count,
    /// `SAVE` (RFC 5182, section 2.1): the server saves the result for `$`.
    ///
    /// mailvault patch (`ext_searchres`).
    #[cfg(feature = "ext_searchres")]
    Save,
}

/// A search return data item (`search-return-data`) of an `ESEARCH` response.
///
/// See [RFC 4731, section 3.2](https://www.rfc-editor.org/rfc/rfc4731#section-3.2).
#[cfg_attr(feature = "arbitrary", derive(Arbitrary))]
#[cfg_attr(feature = "serde", derive(Serialize, Deserialize))]
#[cfg_attr(feature = "serde", serde(tag = "type", content = "content"))]
#[derive(Debug, Clone, PartialEq, Eq, Hash, ToStatic)]
pub enum SearchReturnData {
    /// `MIN n`
    Min(NonZeroU32),
    /// `MAX n`
    Max(NonZeroU32),
    /// `ALL sequence-set`
    All(SequenceSet),
    /// `COUNT n`
    Count(u32),
    /// `MODSEQ n` (RFC 7162, section 3.1.5): the highest mod-sequence of the
    /// messages the other items report.
    ModSeq(NonZeroU64),
}
