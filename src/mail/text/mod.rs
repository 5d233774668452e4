//! Encrypted full-text search (issue 14, `docs/proposals/search.md`).

// The query engine (slice C of the proposal) is what calls the segment layer; until it
// lands, only tests do.
#[allow(dead_code)]
pub(crate) mod cache;
#[allow(dead_code)]
pub(crate) mod merge;
#[allow(dead_code)]
pub(crate) mod segment;
