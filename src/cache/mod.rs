// SPDX-License-Identifier: LGPL-2.1-or-later
//! The safe core: which tables are cached, in which order, which one to
//! evict, and what was counted. It is only a cache: it knows nothing of C,
//! of the environment, of stderr or of the size advisor. Entries are opaque
//! `Copy` handles, and the caller tells it through a closure whether a
//! handle is still in use by a request. The FFI layer mirrors every change
//! of order this core reports onto the C-visible QTAILQ, so both always
//! list the same entries in the same order (head = oldest / least recently
//! used / next for the hand). Whatever wants to watch the lookups (the size
//! advisor) plugs in as an [`Observer`].

#![forbid(unsafe_code)]

pub mod index;

use index::OffsetIndex;
pub use index::FIBONACCI;

/// Marks "no slot" in links and in the SIEVE hand.
const NIL: u32 = u32::MAX;

/// Eviction policy: the one table of policies. Each variant's number is
/// the value of its `QED_L2_CACHE_POLICY_*` constant in the C header (the
/// FFI layer pins them with const asserts), and its [`Policy::name`] the
/// value of `QED_L2_CACHE_POLICY`. The in-use rule (an entry a request
/// still references is never evicted) holds in every one of them.
///
/// SIEVE has one twist, the *fresh entry*: the entry inserted by the latest
/// commit, for as long as no other entry has been inserted since (duplicate
/// commits insert nothing). A hit on the fresh entry is part of the miss
/// that brought it in, not a reuse: it does not mark the entry visited.
/// QEMU's read path finds every table right after committing it, and a
/// sequential scan (a backup) hits the table it just read thousands of
/// times before moving on; without the twist SIEVE would mark every new
/// entry visited and degrade to CLOCK. LRU is textbook LRU (the same twist
/// measurably changed nothing for it, see BENCHMARKS.md).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Insertion order, hits change nothing: exactly QEMU's original.
    Fifo = 0,
    /// Least recently used: every hit moves the entry to the tail.
    Lru = 1,
    /// SIEVE (NSDI '24): a hit (except on the fresh entry) sets a visited
    /// bit; a hand walks from the head towards the tail, clearing visited
    /// bits and evicting the first unvisited entry, and wraps to the head.
    Sieve = 2,
}

impl Policy {
    /// Every policy, in the order of their numbers.
    pub const ALL: [Policy; 3] = [Policy::Fifo, Policy::Lru, Policy::Sieve];

    /// The name used by `QED_L2_CACHE_POLICY`.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Fifo => "fifo",
            Policy::Lru => "lru",
            Policy::Sieve => "sieve",
        }
    }

    /// The policy of a name, if it is one.
    pub fn from_name(name: &str) -> Option<Policy> {
        Policy::ALL.into_iter().find(|p| p.name() == name)
    }

    /// The policy numbered `n`, if any: a number from outside is checked,
    /// never transmuted.
    pub fn from_number(n: u32) -> Option<Policy> {
        Policy::ALL.into_iter().find(|&p| p as u32 == n)
    }
}

/// Watches a cache: the size advisor is one. Every method has an empty
/// default, so an observer implements only what it needs. The core calls
/// them on the paths named; `Option<O>` is an observer that costs one
/// branch when `None`.
pub trait Observer {
    /// A lookup of `offset`: `Some(slot)` on a hit (the slot the entry
    /// occupies), `None` on a miss.
    #[inline(always)]
    fn on_find(&mut self, _offset: u64, _slot: Option<u32>) {}
    /// A commit of `offset`, before the cache decides what it does.
    #[inline(always)]
    fn on_commit(&mut self, _offset: u64) {}
    /// The entry in `slot` left the cache (evicted).
    #[inline(always)]
    fn on_remove(&mut self, _slot: u32) {}
    /// The cache was emptied.
    #[inline(always)]
    fn on_drain(&mut self) {}
    /// The maximum or the policy changed (`set_max_entries`,
    /// `set_policy`); `misses` is the cache's miss count now.
    #[inline(always)]
    fn on_resize(&mut self, _max_entries: u32, _policy: Policy, _misses: u64) {}
}

/// No observer.
impl Observer for () {}

/// An observer that may be absent: one branch when it is.
impl<O: Observer> Observer for Option<O> {
    #[inline(always)]
    fn on_find(&mut self, offset: u64, slot: Option<u32>) {
        if let Some(o) = self {
            o.on_find(offset, slot)
        }
    }
    #[inline(always)]
    fn on_commit(&mut self, offset: u64) {
        if let Some(o) = self {
            o.on_commit(offset)
        }
    }
    #[inline(always)]
    fn on_remove(&mut self, slot: u32) {
        if let Some(o) = self {
            o.on_remove(slot)
        }
    }
    #[inline(always)]
    fn on_drain(&mut self) {
        if let Some(o) = self {
            o.on_drain()
        }
    }
    #[inline(always)]
    fn on_resize(&mut self, max_entries: u32, policy: Policy, misses: u64) {
        if let Some(o) = self {
            o.on_resize(max_entries, policy, misses)
        }
    }
}

/// Two observers, each told everything (the FFI layer's caches have the
/// size advisor and the auto sizer, each usually absent).
impl<A: Observer, B: Observer> Observer for (A, B) {
    #[inline(always)]
    fn on_find(&mut self, offset: u64, slot: Option<u32>) {
        self.0.on_find(offset, slot);
        self.1.on_find(offset, slot);
    }
    #[inline(always)]
    fn on_commit(&mut self, offset: u64) {
        self.0.on_commit(offset);
        self.1.on_commit(offset);
    }
    #[inline(always)]
    fn on_remove(&mut self, slot: u32) {
        self.0.on_remove(slot);
        self.1.on_remove(slot);
    }
    #[inline(always)]
    fn on_drain(&mut self) {
        self.0.on_drain();
        self.1.on_drain();
    }
    #[inline(always)]
    fn on_resize(&mut self, max_entries: u32, policy: Policy, misses: u64) {
        self.0.on_resize(max_entries, policy, misses);
        self.1.on_resize(max_entries, policy, misses);
    }
}

/// A boxed observer.
impl<O: Observer + ?Sized> Observer for Box<O> {
    #[inline(always)]
    fn on_find(&mut self, offset: u64, slot: Option<u32>) {
        (**self).on_find(offset, slot)
    }
    #[inline(always)]
    fn on_commit(&mut self, offset: u64) {
        (**self).on_commit(offset)
    }
    #[inline(always)]
    fn on_remove(&mut self, slot: u32) {
        (**self).on_remove(slot)
    }
    #[inline(always)]
    fn on_drain(&mut self) {
        (**self).on_drain()
    }
    #[inline(always)]
    fn on_resize(&mut self, max_entries: u32, policy: Policy, misses: u64) {
        (**self).on_resize(max_entries, policy, misses)
    }
}

/// What a cache counted since it was created: the one definition of the
/// counters (C's `QedL2CacheStats` mirrors it field for field, and the
/// FFI layer's conversion names every field, so neither can gain one
/// alone).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Lookups (`find`) that returned an entry.
    pub hits: u64,
    /// Lookups that returned none.
    pub misses: u64,
    /// Commits accepted, duplicates included.
    pub commits: u64,
    /// Commits whose offset was already cached (the cached entry stayed).
    pub duplicate_commits: u64,
    /// Entries evicted to make room or to honour a lower maximum.
    pub evictions: u64,
    /// The most entries the cache held at once.
    pub peak_entries: u64,
}

/// A successful lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit<H> {
    /// The cached entry.
    pub handle: H,
    /// The entry moved to the tail of the order (LRU); mirror it.
    pub moved_to_tail: bool,
}

/// What a commit did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit<H> {
    /// The offset was already cached by this entry, which stays; the
    /// newcomer was not taken.
    Duplicate(H),
    /// The newcomer was appended at the tail.
    Inserted,
}

#[derive(Debug, Clone, Copy)]
struct Node<H> {
    offset: u64,
    handle: H,
    prev: u32,
    next: u32,
}

/// The cache core. Lookups cost O(1) whatever the number of entries.
/// `O` watches it (see `Observer`).
#[derive(Debug, Clone)]
pub struct Cache<H: Copy, O: Observer = ()> {
    nodes: Vec<Node<H>>,
    /// SIEVE's visited bits, by slot (kept apart so nodes stay 24 bytes).
    visited: Vec<bool>,
    free_head: u32,
    head: u32,
    tail: u32,
    len: u32,
    index: OffsetIndex,
    max_entries: u32,
    policy: Policy,
    /// SIEVE's hand: the next candidate for eviction, NIL = start at head.
    hand: u32,
    /// The fresh entry (see [`Policy`]), NIL when there is none.
    fresh: u32,
    stats: Stats,
    observer: O,
}

impl<H: Copy, O: Observer + Default> Cache<H, O> {
    /// An empty cache with the default observer. `max_entries` must be at
    /// least 1.
    pub fn new(max_entries: u32, policy: Policy) -> Self {
        Cache::with_observer(max_entries, policy, O::default())
    }
}

impl<H: Copy, O: Observer> Cache<H, O> {
    /// An empty cache watched by `observer`. `max_entries` must be at
    /// least 1.
    pub fn with_observer(max_entries: u32, policy: Policy, observer: O) -> Self {
        assert!(max_entries >= 1, "max_entries must be positive");
        Cache {
            nodes: Vec::new(),
            visited: Vec::new(),
            free_head: NIL,
            head: NIL,
            tail: NIL,
            len: 0,
            index: OffsetIndex::new(),
            max_entries,
            policy,
            hand: NIL,
            fresh: NIL,
            stats: Stats::default(),
            observer,
        }
    }

    /// The observer.
    pub fn observer(&self) -> &O {
        &self.observer
    }

    /// The observer, to change it (turn an advisor on or off, say).
    pub fn observer_mut(&mut self) -> &mut O {
        &mut self.observer
    }

    /// Entries cached now.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The maximum the cache evicts down to.
    pub fn max_entries(&self) -> u32 {
        self.max_entries
    }

    /// The eviction policy in force.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Counters since creation.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Heap bytes held for the entries now cached (nodes, bits, index).
    pub fn heap_bytes(&self) -> usize {
        self.nodes.capacity() * std::mem::size_of::<Node<H>>()
            + self.visited.capacity()
            + self.index.heap_bytes()
    }

    /// Handles in list order, head first.
    pub fn handles(&self) -> Vec<H> {
        let mut out = Vec::with_capacity(self.len as usize);
        let mut cur = self.head;
        while cur != NIL {
            out.push(self.nodes[cur as usize].handle);
            cur = self.nodes[cur as usize].next;
        }
        out
    }

    #[inline]
    fn slot_of(&self, offset: u64) -> Option<u32> {
        let nodes = &self.nodes;
        self.index.get(offset, |s| nodes[s as usize].offset)
    }

    /// True when `offset` is cached. Counts nothing, changes nothing.
    pub fn contains(&self, offset: u64) -> bool {
        self.slot_of(offset).is_some()
    }

    /// Looks `offset` up, counting a hit or a miss and applying the
    /// policy's reaction to a hit.
    #[inline(always)]
    pub fn find(&mut self, offset: u64) -> Option<Hit<H>> {
        let Some(slot) = self.slot_of(offset) else {
            self.stats.misses += 1;
            self.observer.on_find(offset, None);
            return None;
        };
        self.stats.hits += 1;
        let handle = self.nodes[slot as usize].handle;
        let moved_to_tail = match self.policy {
            Policy::Fifo => false,
            Policy::Lru if slot != self.tail => {
                self.unlink(slot);
                self.link_tail(slot);
                true
            }
            Policy::Lru => false,
            Policy::Sieve => {
                if slot != self.fresh {
                    self.visited[slot as usize] = true;
                }
                false
            }
        };
        self.observer.on_find(offset, Some(slot));
        Some(Hit {
            handle,
            moved_to_tail,
        })
    }

    /// Commits `handle` under `offset`.
    ///
    /// A duplicate offset keeps the cached entry. Otherwise, when the cache
    /// is full, entries are evicted (each passed to `on_evict` after it left
    /// the cache) until there is room, skipping every entry for which
    /// `in_use` is true; if all are in use the cache grows past its maximum
    /// and shrinks back at later commits. The newcomer goes to the tail and
    /// becomes the fresh entry.
    pub fn commit(
        &mut self,
        offset: u64,
        handle: H,
        in_use: impl FnMut(H) -> bool,
        on_evict: impl FnMut(H),
    ) -> Commit<H> {
        self.stats.commits += 1;
        self.observer.on_commit(offset);
        if let Some(slot) = self.slot_of(offset) {
            self.stats.duplicate_commits += 1;
            return Commit::Duplicate(self.nodes[slot as usize].handle);
        }
        if self.len >= self.max_entries {
            self.evict_down_to(self.max_entries - 1, in_use, on_evict);
        }
        let slot = self.alloc_slot(offset, handle);
        let nodes = &self.nodes;
        self.index.insert(offset, slot, |s| nodes[s as usize].offset);
        self.link_tail(slot);
        self.fresh = slot;
        self.len += 1;
        self.stats.peak_entries = self.stats.peak_entries.max(u64::from(self.len));
        Commit::Inserted
    }

    /// Sets the maximum (at least 1) and evicts down to it, never an entry
    /// `in_use` reports as in use.
    pub fn set_max_entries(
        &mut self,
        max_entries: u32,
        in_use: impl FnMut(H) -> bool,
        on_evict: impl FnMut(H),
    ) {
        assert!(max_entries >= 1, "max_entries must be positive");
        self.max_entries = max_entries;
        self.evict_down_to(max_entries, in_use, on_evict);
        self.observer
            .on_resize(max_entries, self.policy, self.stats.misses);
    }

    /// Switches policy. The order and the fresh entry are kept; SIEVE's
    /// state (visited bits, the hand) starts afresh.
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
        self.visited.fill(false);
        self.hand = NIL;
        self.observer
            .on_resize(self.max_entries, policy, self.stats.misses);
    }

    /// Empties the cache, passing every handle to `f` in list order.
    /// Counters are kept.
    pub fn drain(&mut self, mut f: impl FnMut(H)) {
        self.observer.on_drain();
        let mut cur = self.head;
        while cur != NIL {
            let node = self.nodes[cur as usize];
            f(node.handle);
            cur = node.next;
        }
        self.nodes.clear();
        self.visited.clear();
        self.index.clear();
        self.free_head = NIL;
        self.head = NIL;
        self.tail = NIL;
        self.hand = NIL;
        self.fresh = NIL;
        self.len = 0;
    }

    /// Takes every entry for which `released` is true out of the cache,
    /// in list order, passing each to `on_remove` after it left. Not an
    /// eviction: nothing is counted (the caller released these entries'
    /// tables for its own reasons, idle release say), and the order of
    /// the others, the SIEVE marks and hand are kept as an eviction
    /// would keep them. Returns how many left.
    pub fn remove_if(&mut self, mut released: impl FnMut(H) -> bool, mut on_remove: impl FnMut(H)) -> u32 {
        let mut removed = 0;
        let mut cur = self.head;
        while cur != NIL {
            let node = self.nodes[cur as usize];
            if released(node.handle) {
                self.remove_slot(cur);
                on_remove(node.handle);
                removed += 1;
            }
            cur = node.next;
        }
        removed
    }

    fn evict_down_to(&mut self, target: u32, mut in_use: impl FnMut(H) -> bool, mut on_evict: impl FnMut(H)) {
        if self.len <= target {
            return;
        }
        match self.policy {
            Policy::Fifo | Policy::Lru => {
                let mut cur = self.head;
                while self.len > target && cur != NIL {
                    let node = self.nodes[cur as usize];
                    if !in_use(node.handle) {
                        self.remove_slot(cur);
                        self.stats.evictions += 1;
                        on_evict(node.handle);
                    }
                    cur = node.next;
                }
            }
            Policy::Sieve => {
                // Stops once there is room, or once a whole lap of the
                // entries left met only entries in use (nothing can be
                // evicted): the hand is then back on the entry after the
                // last one evicted, or where it started.
                let mut idle = 0u32;
                let mut hand = self.hand;
                while self.len > target && idle < self.len {
                    if hand == NIL {
                        hand = self.head;
                    }
                    let node = self.nodes[hand as usize];
                    let slot = hand;
                    hand = node.next;
                    if in_use(node.handle) {
                        idle += 1;
                        continue;
                    }
                    idle = 0;
                    if self.visited[slot as usize] {
                        self.visited[slot as usize] = false;
                    } else {
                        self.remove_slot(slot);
                        self.stats.evictions += 1;
                        on_evict(node.handle);
                    }
                }
                self.hand = hand;
            }
        }
    }

    fn alloc_slot(&mut self, offset: u64, handle: H) -> u32 {
        let node = Node {
            offset,
            handle,
            prev: NIL,
            next: NIL,
        };
        if self.free_head != NIL {
            let slot = self.free_head;
            self.free_head = self.nodes[slot as usize].next;
            self.nodes[slot as usize] = node;
            self.visited[slot as usize] = false;
            slot
        } else {
            let slot = u32::try_from(self.nodes.len())
                .ok()
                .filter(|&s| s != NIL)
                .expect("more than 2^32-1 cached tables");
            self.reserve_slot();
            self.nodes.push(node);
            self.visited.push(false);
            slot
        }
    }

    /// Makes room for one more slot. Up to `max_entries` the arrays grow
    /// geometrically but stop exactly at the maximum, so a full cache holds
    /// no spare capacity; past it (entries in use) they double.
    fn reserve_slot(&mut self) {
        let len = self.nodes.len();
        if len < self.nodes.capacity() {
            return;
        }
        let max = self.max_entries as usize;
        let want = if len < max {
            std::cmp::min(std::cmp::max(len * 2, 8), max)
        } else {
            len * 2
        };
        self.nodes.reserve_exact(want - len);
        self.visited.reserve_exact(want - self.visited.len());
    }

    /// Takes a slot out of the list and the index and frees it (counting
    /// nothing: an eviction counts itself).
    fn remove_slot(&mut self, slot: u32) {
        self.observer.on_remove(slot);
        if self.hand == slot {
            self.hand = self.nodes[slot as usize].next;
        }
        if self.fresh == slot {
            self.fresh = NIL;
        }
        self.unlink(slot);
        let nodes = &self.nodes;
        let offset = nodes[slot as usize].offset;
        let removed = self.index.remove(offset, |s| nodes[s as usize].offset);
        debug_assert!(removed);
        self.visited[slot as usize] = false;
        self.nodes[slot as usize].next = self.free_head;
        self.free_head = slot;
        self.len -= 1;
    }

    fn unlink(&mut self, slot: u32) {
        let Node { prev, next, .. } = self.nodes[slot as usize];
        match prev {
            NIL => self.head = next,
            p => self.nodes[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.nodes[n as usize].prev = prev,
        }
    }

    fn link_tail(&mut self, slot: u32) {
        let tail = self.tail;
        {
            let node = &mut self.nodes[slot as usize];
            node.prev = tail;
            node.next = NIL;
        }
        match tail {
            NIL => self.head = slot,
            t => self.nodes[t as usize].next = slot,
        }
        self.tail = slot;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Commits handle `h` under offset `h * 0x10000`.
    fn commit(c: &mut Cache<u32>, h: u32, busy: &HashSet<u32>, evicted: &mut Vec<u32>) -> Commit<u32> {
        c.commit(
            u64::from(h) * 0x10000,
            h,
            |x| busy.contains(&x),
            |x| evicted.push(x),
        )
    }

    /// A cache of `max` entries holding handles 1..=max, none in use.
    fn filled(max: u32, policy: Policy) -> Cache<u32> {
        let mut c = Cache::new(max, policy);
        for h in 1..=max {
            assert_eq!(commit(&mut c, h, &HashSet::new(), &mut vec![]), Commit::Inserted);
        }
        c
    }

    #[test]
    fn remove_if_takes_entries_out_without_counting_evictions() {
        for policy in Policy::ALL {
            let mut c = filled(5, policy);
            let mut gone = vec![];
            assert_eq!(c.remove_if(|h| h % 2 == 0, |h| gone.push(h)), 2);
            assert_eq!(gone, vec![2, 4]);
            assert_eq!(c.handles(), vec![1, 3, 5], "{policy:?}");
            assert_eq!(c.len(), 3);
            assert_eq!(c.stats().evictions, 0, "not evictions");
            assert!(!c.contains(0x20000) && c.find(0x40000).is_none());
            assert!(c.find(0x30000).is_some());
            // The cache goes on as usual: room is made by evicting again.
            let mut ev = vec![];
            commit(&mut c, 6, &HashSet::new(), &mut ev);
            commit(&mut c, 7, &HashSet::new(), &mut ev);
            commit(&mut c, 8, &HashSet::new(), &mut ev);
            assert_eq!(c.len(), 5);
            assert_eq!(ev.len(), 1, "{policy:?}: {ev:?}");
            assert_eq!(c.stats().evictions, 1);
            assert_eq!(c.remove_if(|_| true, |_| {}), 5);
            assert!(c.is_empty() && c.handles().is_empty());
            commit(&mut c, 9, &HashSet::new(), &mut ev);
            assert_eq!(c.handles(), vec![9]);
        }
    }

    #[test]
    fn fifo_evicts_oldest_first_and_ignores_hits() {
        let mut c = Cache::new(3, Policy::Fifo);
        let mut ev = vec![];
        let none = HashSet::new();
        for h in 1..=3 {
            assert_eq!(commit(&mut c, h, &none, &mut ev), Commit::Inserted);
        }
        assert_eq!(
            c.find(0x10000).unwrap(),
            Hit {
                handle: 1,
                moved_to_tail: false
            }
        );
        commit(&mut c, 4, &none, &mut ev);
        assert_eq!(ev, vec![1]);
        assert_eq!(c.handles(), vec![2, 3, 4]);
        assert_eq!(c.stats().evictions, 1);
        assert_eq!(c.stats().hits, 1);
    }

    #[test]
    fn in_use_entries_are_skipped_then_cache_grows_and_shrinks_back() {
        let mut c = Cache::new(2, Policy::Fifo);
        let mut ev = vec![];
        let mut busy: HashSet<u32> = [1, 2].into();
        commit(&mut c, 1, &busy, &mut ev);
        commit(&mut c, 2, &busy, &mut ev);
        commit(&mut c, 3, &busy, &mut ev);
        assert!(ev.is_empty(), "in-use entries must never be evicted");
        assert_eq!(c.len(), 3);
        assert_eq!(c.stats().peak_entries, 3);
        busy.clear();
        commit(&mut c, 4, &busy, &mut ev);
        // Evicts from the head until below max (2), then appends.
        assert_eq!(ev, vec![1, 2]);
        assert_eq!(c.handles(), vec![3, 4]);
    }

    #[test]
    fn duplicate_commit_keeps_the_cached_entry() {
        let mut c = Cache::new(4, Policy::Fifo);
        let mut ev = vec![];
        let none = HashSet::new();
        commit(&mut c, 7, &none, &mut ev);
        let dup = c.commit(7 * 0x10000, 99, |_| false, |_| {});
        assert_eq!(dup, Commit::Duplicate(7));
        assert_eq!(c.handles(), vec![7]);
        assert_eq!(c.stats().duplicate_commits, 1);
        assert_eq!(c.stats().commits, 2);
    }

    #[test]
    fn lru_moves_hits_to_the_tail() {
        let mut c = filled(3, Policy::Lru);
        let mut ev = vec![];
        let none = HashSet::new();
        assert!(c.find(0x10000).unwrap().moved_to_tail);
        assert!(!c.find(0x10000).unwrap().moved_to_tail, "already the tail");
        assert_eq!(c.handles(), vec![2, 3, 1]);
        commit(&mut c, 4, &none, &mut ev);
        assert_eq!(ev, vec![2]);
    }

    #[test]
    fn sieve_spares_visited_entries_once() {
        let mut c = filled(3, Policy::Sieve);
        let mut ev = vec![];
        let none = HashSet::new();
        c.find(0x10000); // visit 1
        commit(&mut c, 4, &none, &mut ev);
        assert_eq!(ev, vec![2], "1 was visited, 2 was not");
        assert_eq!(c.handles(), vec![1, 3, 4]);
        commit(&mut c, 5, &none, &mut ev);
        assert_eq!(ev, vec![2, 3], "the hand continues after 2");
        commit(&mut c, 6, &none, &mut ev);
        // New entries sit ahead of the hand: unvisited 4 goes next (SIEVE's
        // quick demotion), before the hand wraps back to 1.
        assert_eq!(ev, vec![2, 3, 4]);
        assert_eq!(c.handles(), vec![1, 5, 6]);
    }

    #[test]
    fn sieve_never_evicts_in_use_even_when_all_visited() {
        let mut c = Cache::new(3, Policy::Sieve);
        let mut ev = vec![];
        let busy: HashSet<u32> = [1].into();
        for h in 1..=3 {
            commit(&mut c, h, &busy, &mut ev);
        }
        c.find(0x10000);
        c.find(0x20000);
        c.set_max_entries(2, |x| busy.contains(&x), |x| ev.push(x));
        // 1 in use (skipped), 2 visited (cleared), 3 unvisited (fresh).
        assert_eq!(ev, vec![3]);
        c.find(0x20000); // 3 left, so no fresh entry: 2 is marked again
        commit(&mut c, 4, &busy, &mut ev);
        assert_eq!(
            ev,
            vec![3, 2],
            "the hand wraps, skips 1 and takes 2 on its second pass"
        );
        let all: HashSet<u32> = [1, 4].into();
        commit(&mut c, 5, &all, &mut ev);
        assert_eq!(ev, vec![3, 2], "everything in use: grow instead");
        assert_eq!(c.len(), 3);
        assert_eq!(c.handles(), vec![1, 4, 5]);
    }

    #[test]
    fn sieve_hand_stays_put_when_everything_is_in_use() {
        // docs/behaviour.md, "Policies": a sweep that finds every entry in
        // use evicts nothing and leaves the hand where it was, so the next
        // eviction starts from the head here.
        let mut c = Cache::new(2, Policy::Sieve);
        let mut ev = vec![];
        let held: HashSet<u32> = [1, 2, 3].into();
        for h in 1..=3 {
            commit(&mut c, h, &held, &mut ev);
        }
        assert!(ev.is_empty(), "all in use: the cache grew");
        let none = HashSet::new();
        commit(&mut c, 4, &none, &mut ev);
        assert_eq!(ev, vec![1, 2], "the hand was still at the head");
        assert_eq!(c.handles(), vec![3, 4]);
    }

    #[test]
    fn sieve_hits_on_the_fresh_entry_do_not_mark_it() {
        let mut c = filled(3, Policy::Sieve);
        let mut ev = vec![];
        let none = HashSet::new();
        c.find(0x10000);
        c.find(0x20000);
        for _ in 0..1000 {
            c.find(0x30000); // 3 is fresh: a scan's hits, or QEMU's find after commit
        }
        // A duplicate commit inserts nothing: 3 stays fresh.
        assert!(matches!(
            c.commit(0x30000, 33, |_| false, |_| {}),
            Commit::Duplicate(3)
        ));
        c.find(0x30000);
        commit(&mut c, 4, &none, &mut ev);
        assert_eq!(ev, vec![3], "1 and 2 were visited, 3 only while fresh");
        assert_eq!(c.handles(), vec![1, 2, 4]);
        assert_eq!(c.stats().hits, 1003);
    }

    #[test]
    fn a_later_commit_ends_freshness() {
        let mut c = Cache::new(3, Policy::Sieve);
        let mut ev = vec![];
        let none = HashSet::new();
        commit(&mut c, 1, &none, &mut ev);
        commit(&mut c, 2, &none, &mut ev);
        c.find(0x10000); // 1 is no longer fresh: marked
        commit(&mut c, 3, &none, &mut ev);
        c.find(0x20000); // nor is 2
        commit(&mut c, 4, &none, &mut ev);
        assert_eq!(ev, vec![3], "1 and 2 visited; 3 never hit");
    }

    #[test]
    fn lru_moves_every_hit_even_on_the_entry_committed_last() {
        let mut c = filled(3, Policy::Lru);
        let mut ev = vec![];
        let none = HashSet::new();
        assert!(c.find(0x10000).unwrap().moved_to_tail);
        assert!(
            c.find(0x30000).unwrap().moved_to_tail,
            "no fresh-entry rule for LRU"
        );
        assert_eq!(c.handles(), vec![2, 1, 3]);
        commit(&mut c, 4, &none, &mut ev);
        assert_eq!(ev, vec![2]);
        assert_eq!(c.handles(), vec![1, 3, 4]);
    }

    #[test]
    fn set_policy_keeps_order_and_the_fresh_entry() {
        let mut c = filled(3, Policy::Sieve);
        let mut ev = vec![];
        let none = HashSet::new();
        c.find(0x10000);
        c.set_policy(Policy::Lru);
        assert_eq!(c.handles(), vec![1, 2, 3]);
        assert!(c.find(0x20000).unwrap().moved_to_tail);
        assert_eq!(c.handles(), vec![1, 3, 2]);
        c.set_policy(Policy::Sieve); // visited bits start afresh: 1 is unmarked
        c.find(0x30000); // 3 is still the fresh entry: not marked
        commit(&mut c, 4, &none, &mut ev);
        assert_eq!(ev, vec![1]);
        commit(&mut c, 5, &none, &mut ev);
        assert_eq!(ev, vec![1, 3], "3 was only hit while fresh");
    }

    #[test]
    fn evicting_the_fresh_entry_ends_freshness() {
        let mut c = filled(3, Policy::Lru);
        let mut ev = vec![];
        c.find(0x10000);
        c.find(0x20000);
        c.set_max_entries(2, |_| false, |x| ev.push(x));
        assert_eq!(ev, vec![3], "fresh but least recently used");
        assert_eq!(c.fresh, NIL);
    }

    #[test]
    fn full_caches_hold_no_spare_slots_and_little_memory() {
        for (max, policy) in [
            (3, Policy::Fifo),
            (50, Policy::Lru),
            (1024, Policy::Sieve),
            (16384, Policy::Fifo),
        ] {
            let mut c = Cache::new(max, policy);
            let none = HashSet::new();
            let mut ev = vec![];
            for h in 1..=max + 10 {
                commit(&mut c, h, &none, &mut ev);
            }
            assert_eq!(c.nodes.capacity(), max as usize);
            // Node, visited bit and index per cached table; with the entry's
            // 8 hidden bytes this stays within 48 (BENCHMARKS.md).
            let per = c.heap_bytes() as f64 / f64::from(max);
            assert!(max < 50 || per <= 40.0, "{max}: {per} bytes per table");
        }
    }

    #[test]
    fn set_max_evicts_down_but_not_in_use() {
        for policy in Policy::ALL {
            let mut c = Cache::new(10, policy);
            let mut ev = vec![];
            let none = HashSet::new();
            for h in 1..=10 {
                commit(&mut c, h, &none, &mut ev);
            }
            let busy: HashSet<u32> = [1, 2, 3].into();
            c.set_max_entries(2, |x| busy.contains(&x), |x| ev.push(x));
            assert_eq!(c.len(), 3, "{policy:?}");
            assert_eq!(c.handles(), vec![1, 2, 3], "{policy:?}");
            assert_eq!(c.max_entries(), 2);
        }
    }

    #[test]
    fn drain_returns_list_order_and_empties() {
        let mut c = Cache::new(8, Policy::Lru);
        let none = HashSet::new();
        let mut ev = vec![];
        for h in 1..=5 {
            commit(&mut c, h, &none, &mut ev);
        }
        c.find(0x20000);
        let mut out = vec![];
        c.drain(|h| out.push(h));
        assert_eq!(out, vec![1, 3, 4, 5, 2]);
        assert!(c.is_empty());
        assert!(!c.contains(0x20000));
        commit(&mut c, 9, &none, &mut ev);
        assert_eq!(c.handles(), vec![9]);
    }

    #[test]
    fn policy_names_round_trip() {
        for p in Policy::ALL {
            assert_eq!(Policy::from_name(p.name()), Some(p));
        }
        assert_eq!(Policy::from_name("LRU"), None);
    }

    #[test]
    fn policy_numbers_round_trip_and_unknown_numbers_are_refused() {
        for p in Policy::ALL {
            assert_eq!(Policy::from_number(p as u32), Some(p));
        }
        assert_eq!(Policy::from_number(3), None);
        assert_eq!(Policy::from_number(u32::MAX), None);
    }

    /// Records what the core tells its observer.
    #[derive(Default)]
    struct Log(Vec<String>);

    impl Observer for Log {
        fn on_find(&mut self, offset: u64, slot: Option<u32>) {
            self.0.push(format!("find {offset:#x} {slot:?}"));
        }
        fn on_commit(&mut self, offset: u64) {
            self.0.push(format!("commit {offset:#x}"));
        }
        fn on_remove(&mut self, slot: u32) {
            self.0.push(format!("remove {slot}"));
        }
        fn on_drain(&mut self) {
            self.0.push("drain".into());
        }
        fn on_resize(&mut self, max: u32, policy: Policy, misses: u64) {
            self.0.push(format!("resize {max} {} {misses}", policy.name()));
        }
    }

    #[test]
    fn the_observer_sees_every_event_in_order() {
        let mut c: Cache<u32, Log> = Cache::new(1, Policy::Fifo);
        assert!(c.find(0x10000).is_none());
        c.commit(0x10000, 1, |_| false, |_| {});
        assert!(c.find(0x10000).is_some());
        c.commit(0x20000, 2, |_| false, |_| {});
        c.set_max_entries(2, |_| false, |_| {});
        c.set_policy(Policy::Lru);
        c.drain(|_| {});
        assert_eq!(
            c.observer().0,
            [
                "find 0x10000 None",
                "commit 0x10000",
                "find 0x10000 Some(0)",
                "commit 0x20000",
                "remove 0",
                "resize 2 fifo 1",
                "resize 2 lru 1",
                "drain",
            ]
        );
        // An absent observer is one too.
        let mut quiet: Cache<u32, Option<Log>> = Cache::new(1, Policy::Fifo);
        assert!(quiet.find(1).is_none());
        assert!(quiet.observer().is_none());
    }

    #[test]
    fn large_cache_slots_are_reused() {
        let mut c = Cache::new(1000, Policy::Fifo);
        let none = HashSet::new();
        let mut ev = vec![];
        for h in 1..=5000 {
            commit(&mut c, h, &none, &mut ev);
        }
        assert_eq!(c.len(), 1000);
        assert_eq!(ev.len(), 4000);
        assert_eq!(ev[..3], [1, 2, 3]);
        assert!(c.contains(5000 * 0x10000));
        assert!(!c.contains(4000 * 0x10000));
        assert!(c.nodes.len() <= 1001, "slots are recycled");
    }
}
