//! One byte-budgeted LRU cache per account for what search segment readers read lazily:
//! opened pages of the word table and postings, decompressed dictionaries and
//! decompressed text-store frames (`docs/proposals/search.md` §3.3).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::format::search::Dictionary;
use crate::ids::SegmentId;

/// What is cached, per segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum CacheKey {
    /// The payload of an opened page.
    Page(SegmentId, u32),
    /// The decompressed dictionary.
    Dictionary(SegmentId),
    /// A decompressed text-store frame.
    Frame(SegmentId, u32),
}

/// A cached value.
#[derive(Debug, Clone)]
pub(crate) enum Cached {
    /// Page payloads and frames.
    Bytes(Bytes),
    /// A dictionary with its word offsets.
    Dictionary(Arc<Dictionary>),
}

impl Cached {
    /// Bytes it holds, charged to the budget (with a fixed overhead per entry).
    fn weight(&self) -> usize {
        64 + match self {
            Cached::Bytes(b) => b.len(),
            Cached::Dictionary(d) => d.heap_len(),
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

#[derive(Default)]
struct Inner {
    map: HashMap<CacheKey, (Cached, u64)>,
    order: BTreeMap<u64, CacheKey>,
    tick: u64,
    stats: CacheStats,
}

/// A least-recently-used cache holding at most `budget` bytes, shared by the readers of
/// an account's segments (clone it: clones share the entries).
#[derive(Clone)]
pub(crate) struct PageCache {
    inner: Arc<Mutex<Inner>>,
    budget: usize,
}

impl std::fmt::Debug for PageCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageCache")
            .field("budget", &self.budget)
            .field("stats", &self.stats())
            .finish()
    }
}

impl PageCache {
    /// An empty cache of `budget` bytes.
    pub(crate) fn new(budget: usize) -> Self {
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
    pub(crate) fn get(&self, key: &CacheKey) -> Option<Cached> {
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
    /// what is there (pages read along with the needed ones, §3.4).
    pub(crate) fn insert(&self, key: CacheKey, value: Cached, only_if_room: bool) {
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
        inner.tick += 1;
        let tick = inner.tick;
        inner.order.insert(tick, key);
        inner.map.insert(key, (value, tick));
        inner.stats.used += weight;
        inner.stats.entries = inner.map.len();
    }

    /// Its counters.
    pub(crate) fn stats(&self) -> CacheStats {
        let inner = self.lock();
        CacheStats {
            entries: inner.map.len(),
            ..inner.stats
        }
    }

    /// Forgets every entry.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn clear(&self) {
        let mut inner = self.lock();
        inner.map.clear();
        inner.order.clear();
        inner.stats.used = 0;
        inner.stats.entries = 0;
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
        let cache = PageCache::new(3 * (64 + 100));
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
}
