//! Search (issue 14, `docs/proposals/search.md`): what the searchable text of a message is,
//! how it is folded for case-insensitive comparison and cut into words, the brute-force
//! scan that every index answer is checked against, and the encrypted segments of the
//! index.
//!
//! - [`fold`]: the `i;unicode-casemap` comparator of RFC 5051 (IMAP's default, Dovecot's);
//! - [`extract`]: the three folded streams of a message (`header`, `body`, `mime`);
//! - [`tokenize`]: the words of folded text, and which needles one word can answer;
//! - [`oracle`]: the exact answer of text search keys over messages' bytes;
//! - [`Matches`]: what a search answers for a key (positions in the list searched);
//! - `segment`, `cache`, `merge`, `index` (crate-private): the index's segments, their
//!   page cache, merges, and the account's index that answers text keys exactly;
//!   [`Mailstore::search_texts`](crate::mail::Mailstore::search_texts) and
//!   [`Mailstore::index_texts`](crate::mail::Mailstore::index_texts) are its API.

pub mod extract;
pub mod fold;
mod matches;
pub mod oracle;
pub mod tokenize;

pub use matches::Matches;

mod account;
pub(crate) mod cache;
pub(crate) mod index;
pub(crate) mod merge;
pub(crate) mod segment;
