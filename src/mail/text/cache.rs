//! The byte-budgeted cache of what search segment readers read lazily, one per account
//! (`docs/proposals/search.md` §3.3): opened pages of the word table and postings in one
//! LRU, decompressed text-store frames in another with a budget of their own (an eighth
//! of the pages'). Dictionaries are not in it: each open segment keeps its own once read
//! (`SegmentReader`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::ids::SegmentId;

/// What is cached, per segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum CacheKey {
    /// The payload of an opened page.
    Page(SegmentId, u32),
    /// A decompressed text-store frame.
    Frame(SegmentId, u32),
}

/// A cached value.
#[derive(Debug, Clone)]
pub(crate) enum Cached {
    /// Page payloads and frames.
    Bytes(Bytes),
}

impl Cached {
    /// Bytes it holds, charged to the budget (with a fixed overhead per entry).
    fn weight(&self) -> usize {
        64 + match self {
            Cached::Bytes(b) => b.len(),
        }
    }
}

/// Counters of a cache, for tests and spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct CacheStats {
    /// Lookups that found their entry.
    pub(crate) hits: u64,
    /// Lookups that did not.
    pub(crate) misses: u64,
    /// Bytes charged now.
    pub(crate) used: usize,
    /// Entries now.
    pub(crate) entries: usize,
}

/// First tick of entries used or inserted as used; ticks of entries inserted "only if
/// room" count down from just below it, so that they are the first evicted.
const HOT_START: u64 = 1 << 63;

struct Inner {
    map: HashMap<CacheKey, (Cached, u64)>,
    order: BTreeMap<u64, CacheKey>,
    tick: u64,
    cold: u64,
    stats: CacheStats,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            map: HashMap::new(),
            order: BTreeMap::new(),
            tick: HOT_START,
            cold: HOT_START,
            stats: CacheStats::default(),
        }
    }
}

/// A least-recently-used cache holding at most `budget` bytes.
#[derive(Clone)]
struct Lru {
    inner: Arc<Mutex<Inner>>,
    budget: usize,
}

impl Lru {
    fn new(budget: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner::default())),
            budget,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent maps (every update is one
        // insert/remove pair): keep using them.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The entry of `key`, now the most recently used.
    fn get(&self, key: &CacheKey) -> Option<Cached> {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let Some((value, used)) = inner.map.get_mut(key) else {
            inner.stats.misses += 1;
            return None;
        };
        let (value, old) = (value.clone(), std::mem::replace(used, tick));
        inner.order.remove(&old);
        inner.order.insert(tick, *key);
        inner.stats.hits += 1;
        Some(value)
    }

    /// Caches `value` under `key`, evicting the least recently used entries to stay
    /// within the budget. A value larger than the whole budget is not cached. With
    /// `only_if_room`, nothing is evicted: the value is cached only if it fits beside
    /// what is there (pages read along with the needed ones, §3.4), and as the least
    /// recently used, so that it goes before anything a query used.
    fn insert(&self, key: CacheKey, value: Cached, only_if_room: bool) {
        let weight = value.weight();
        let mut inner = self.lock();
        if let Some((old, tick)) = inner.map.remove(&key) {
            inner.order.remove(&tick);
            inner.stats.used -= old.weight();
        }
        if weight > self.budget || (only_if_room && inner.stats.used + weight > self.budget) {
            inner.stats.entries = inner.map.len();
            return;
        }
        while inner.stats.used + weight > self.budget {
            let Some((_, oldest)) = inner.order.pop_first() else {
                break;
            };
            if let Some((old, _)) = inner.map.remove(&oldest) {
                inner.stats.used -= old.weight();
            }
        }
        let tick = if only_if_room {
            inner.cold -= 1;
            inner.cold
        } else {
            inner.tick += 1;
            inner.tick
        };
        inner.order.insert(tick, key);
        inner.map.insert(key, (value, tick));
        inner.stats.used += weight;
        inner.stats.entries = inner.map.len();
    }

    /// Bytes that can be cached without evicting anything.
    fn room(&self) -> usize {
        self.budget.saturating_sub(self.lock().stats.used)
    }

    /// Whether `key` is cached (without counting a lookup or making it recent).
    fn contains(&self, key: &CacheKey) -> bool {
        self.lock().map.contains_key(key)
    }

    /// Its counters.
    fn stats(&self) -> CacheStats {
        let inner = self.lock();
        CacheStats {
            entries: inner.map.len(),
            ..inner.stats
        }
    }

    /// Forgets every entry.
    fn clear(&self) {
        let mut inner = self.lock();
        inner.map.clear();
        inner.order.clear();
        inner.stats.used = 0;
        inner.stats.entries = 0;
    }
}

/// Budget of decompressed text frames, as a share of a [`PageCache`]'s budget of pages
/// (a thirty-second more): what phrase verification reads (every candidate's text, in
/// doc order, so that a frame serves a run of docs and is seldom used after) is kept
/// apart and must not push out the pages that word queries use again. An eighth (4 MiB)
/// held frames no query used again at the peak of a session's search.
const FRAME_SHARE: usize = 32;

/// The cache of an account's search segments (or of its details segments), shared by
/// their readers (clone it: clones share the entries): opened pages, least recently used
/// first out, within a budget, and decompressed text frames within a budget of their own.
#[derive(Clone)]
pub(crate) struct PageCache {
    pages: Lru,
    frames: Lru,
}

impl std::fmt::Debug for PageCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageCache")
            .field("budget", &(self.pages.budget + self.frames.budget))
            .field("stats", &self.stats())
            .finish()
    }
}

impl PageCache {
    /// An empty cache of `budget` bytes of pages, and a thirty-second of that for frames.
    pub(crate) fn new(budget: usize) -> Self {
        Self::with_budgets(budget, budget / FRAME_SHARE)
    }

    /// An empty cache of `pages` bytes of pages and `frames` bytes of frames.
    pub(crate) fn with_budgets(pages: usize, frames: usize) -> Self {
        Self {
            pages: Lru::new(pages),
            frames: Lru::new(frames),
        }
    }

    fn part(&self, key: &CacheKey) -> &Lru {
        match key {
            CacheKey::Page(..) => &self.pages,
            CacheKey::Frame(..) => &self.frames,
        }
    }

    /// The entry of `key`, now the most recently used of its kind.
    pub(crate) fn get(&self, key: &CacheKey) -> Option<Cached> {
        self.part(key).get(key)
    }

    /// Caches `value` under `key`, evicting the least recently used entries of its kind
    /// (page or frame) to stay within that kind's budget. A value larger than that
    /// budget is not cached. With `only_if_room`, nothing is evicted: the value is cached
    /// only if it fits beside what is there (pages read along with the needed ones,
    /// §3.4), and as the least recently used, so that it goes before anything a query
    /// used.
    pub(crate) fn insert(&self, key: CacheKey, value: Cached, only_if_room: bool) {
        self.part(&key).insert(key, value, only_if_room);
    }

    /// Bytes of pages that can be cached without evicting anything.
    pub(crate) fn room(&self) -> usize {
        self.pages.room()
    }

    /// Whether `key` is cached (without counting a lookup or making it recent).
    pub(crate) fn contains(&self, key: &CacheKey) -> bool {
        self.part(key).contains(key)
    }

    /// Its counters (pages and frames together).
    pub(crate) fn stats(&self) -> CacheStats {
        let (p, f) = (self.pages.stats(), self.frames.stats());
        CacheStats {
            hits: p.hits + f.hits,
            misses: p.misses + f.misses,
            used: p.used + f.used,
            entries: p.entries + f.entries,
        }
    }

    /// Forgets every entry.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn clear(&self) {
        self.pages.clear();
        self.frames.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(n: u32) -> CacheKey {
        CacheKey::Page(SegmentId::from_bytes([1; 16]), n)
    }

    fn bytes(len: usize) -> Cached {
        Cached::Bytes(Bytes::from(vec![0u8; len]))
    }

    #[test]
    fn evicts_least_recently_used_within_budget() {
        let cache = PageCache::with_budgets(3 * (64 + 100), 0);
        for n in 0..3 {
            cache.insert(page(n), bytes(100), false);
        }
        assert!(cache.get(&page(0)).is_some()); // 0 is now the most recent
        cache.insert(page(3), bytes(100), false); // evicts 1
        assert!(cache.get(&page(1)).is_none());
        for n in [0, 2, 3] {
            assert!(cache.get(&page(n)).is_some(), "page {n}");
        }
        assert_eq!(cache.stats().used, 3 * 164);
        // Only if room: nothing is evicted for it.
        cache.insert(page(4), bytes(100), true);
        assert!(cache.get(&page(4)).is_none());
        assert!(cache.get(&page(0)).is_some());
        // Larger than the whole budget: not cached, nothing evicted.
        cache.insert(page(5), bytes(10_000), false);
        assert!(cache.get(&page(5)).is_none());
        assert_eq!(cache.stats().entries, 3);
        // Replacing an entry charges its new weight only.
        cache.insert(page(0), bytes(50), false);
        assert_eq!(cache.stats().used, 2 * 164 + 114);
        cache.clear();
        assert_eq!(cache.stats().used, 0);
    }

    #[test]
    fn entries_cached_only_if_room_are_evicted_first() {
        let cache = PageCache::with_budgets(3 * (64 + 100), 0);
        cache.insert(page(0), bytes(100), false);
        cache.insert(page(1), bytes(100), true); // read along: cold
        cache.insert(page(2), bytes(100), true);
        // A used entry evicts the cold ones before the older used one.
        cache.insert(page(3), bytes(100), false);
        assert!(cache.get(&page(0)).is_some(), "the used entry stays");
        assert_eq!(
            [1, 2]
                .iter()
                .filter(|&&n| cache.get(&page(n)).is_some())
                .count(),
            1,
            "one cold entry went"
        );
        // A cold entry that a query then uses is kept like any other.
        let cache = PageCache::with_budgets(2 * (64 + 100), 0);
        cache.insert(page(0), bytes(100), false);
        cache.insert(page(1), bytes(100), true);
        assert!(cache.get(&page(1)).is_some());
        cache.insert(page(2), bytes(100), false);
        assert!(cache.get(&page(0)).is_none(), "now the least recently used");
        assert!(cache.get(&page(1)).is_some());
    }

    fn frame(n: u32) -> CacheKey {
        CacheKey::Frame(SegmentId::from_bytes([1; 16]), n)
    }

    /// Text frames (what phrase verification reads, doc after doc) take at most a
    /// [`FRAME_SHARE`]th of the pages' budget and never push pages out; pages never push
    /// frames out either.
    #[test]
    fn frames_and_pages_are_budgeted_apart() {
        let n = FRAME_SHARE as u32;
        let cache = PageCache::new(FRAME_SHARE * 164);
        for i in 0..n {
            cache.insert(page(i), bytes(100), false);
        }
        assert_eq!(
            cache.stats().used,
            FRAME_SHARE * 164,
            "pages fill their budget"
        );
        for i in 0..20 {
            cache.insert(frame(i), bytes(100), false);
        }
        for i in 0..n {
            assert!(
                cache.get(&page(i)).is_some(),
                "page {i} pushed out by frames"
            );
        }
        assert!(cache.get(&frame(19)).is_some(), "the last frame is cached");
        assert!(
            cache.get(&frame(18)).is_none(),
            "one frame fits in the frames' share"
        );
        assert_eq!(
            cache.stats().used,
            (FRAME_SHARE + 1) * 164,
            "pages and frames within their budgets"
        );
        cache.insert(page(n), bytes(100), false);
        assert!(cache.get(&frame(19)).is_some(), "a page pushed a frame out");
        assert!(cache.get(&page(0)).is_none(), "the oldest page went");
        assert_eq!(cache.room(), 0);
    }
}
