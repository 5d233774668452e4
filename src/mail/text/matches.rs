//! What a text search answers for one key: the positions, in the list of emails it was
//! given, of those that match. A set of bits over the list (100 000 emails in 12.5 KB),
//! where a set of their ids took 2.2 MB at the peak of a session's search.

use super::segment::DocSet;
use crate::ids::EmailId;

/// The positions in a list of emails (the one given to
/// [`Mailstore::search_texts`](crate::mail::Mailstore::search_texts)) of the emails that
/// match a text key. An email that is in the list more than once matches at each of its
/// positions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matches(DocSet);

impl Matches {
    /// No match in a list of `len` emails.
    pub(crate) fn none(len: u32) -> Self {
        Self(DocSet::empty(len))
    }

    /// Adds the email at `position` (below the list's length).
    pub(crate) fn insert(&mut self, position: u32) {
        self.0.insert(position);
    }

    /// Removes the email at `position`.
    pub(crate) fn remove(&mut self, position: u32) {
        self.0.remove(position);
    }

    /// Adds the matches of `other` (over the same list).
    pub(crate) fn union(&mut self, other: &Matches) {
        self.0.union(&other.0);
    }

    /// Whether the email at `position` matches.
    pub fn contains(&self, position: usize) -> bool {
        u32::try_from(position).is_ok_and(|p| self.0.contains(p))
    }

    /// How many positions match.
    pub fn len(&self) -> usize {
        self.0.count()
    }

    /// Whether none does.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The matching positions, increasing.
    pub fn positions(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().map(|p| p as usize)
    }

    /// The emails at the matching positions of `emails` (the list searched), in its
    /// order.
    pub fn emails<'a>(&'a self, emails: &'a [EmailId]) -> impl Iterator<Item = EmailId> + 'a {
        self.positions().filter_map(|p| emails.get(p).copied())
    }
}
