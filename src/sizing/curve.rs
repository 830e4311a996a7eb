// SPDX-License-Identifier: LGPL-2.1-or-later
//! A cache's miss curve at every size at once, over a sliding window of its
//! lookups: what an auto-sized cache decides its size from.
//!
//! Each lookup records its *reuse time*: how many lookups ago the same
//! table was looked up last. The curve comes from the histogram of reuse
//! times by the average-eviction-time model of LRU (Hu et al., "Kinetic
//! Modeling of Data Eviction in Cache", USENIX ATC '16): with `P(t)` the
//! share of lookups whose reuse time is more than `t`, an LRU cache of `c`
//! tables evicts a table about `T(c)` lookups after its last use, where
//! `∫₀^T(c) P(t) dt = c`, and misses a share `P(T(c))` of lookups. The
//! model is exact for a loop (a cliff at its length) and for uniform
//! lookups, and close for skewed ones.
//!
//! Why reuse times and not the exact LRU stack distances: a lookup costs a
//! load and a store of the table's last time (through the real cache's slot
//! on a hit, a hash probe otherwise) and one histogram increment, where an
//! exact stack distance needs a tree walk per lookup; on the hit path that
//! is the difference between a few nanoseconds and tens.
//!
//! Times are kept exactly below [`EXACT_TIMES`] and to 1/32 of their value
//! above (32 buckets per power of two), each bucket counted at its upper
//! end, so a cliff is found at or just above its real size, never below.
//! Times of `2^24` lookups or more count as far, like a first lookup.
//!
//! FIFO and SIEVE caches get the LRU curve as an estimate: the cliffs are
//! the same (a loop over `n` tables misses everything below `n` under all
//! three), the slopes differ somewhat on skewed workloads. Nothing in the
//! curve depends on the cache's maximum, so it survives every resize.
//!
//! Window: the histogram is kept in two halves of `window` lookups; when
//! the current half is full it replaces the previous one. The curve is the
//! sum of both, the last `window` to `2 * window` lookups, so a phase
//! change is forgotten within `2 * window` lookups.

#![forbid(unsafe_code)]

use crate::cache::index::OffsetIndex;

const NIL: u32 = u32::MAX;

/// Reuse times below this are counted exactly.
pub const EXACT_TIMES: u64 = 256;

/// Buckets per power of two above [`EXACT_TIMES`].
const PER_OCTAVE: u64 = 32;

/// Reuse times from `2^FAR_BITS` on count as far.
const FAR_BITS: u32 = 24;

/// Histogram buckets: the exact ones, the octaves up to `2^FAR_BITS`, and
/// the far bucket last.
const BUCKETS: usize = EXACT_TIMES as usize + ((FAR_BITS - 8) as u64 * PER_OCTAVE) as usize + 1;

/// `Node::last` of a free node.
const FREE: u64 = u64::MAX;

/// The bucket of reuse time `t` (at least 1).
#[inline(always)]
fn bucket(t: u64) -> usize {
    if t < EXACT_TIMES {
        return t as usize;
    }
    let k = 63 - t.leading_zeros();
    if k >= FAR_BITS {
        return BUCKETS - 1;
    }
    let sub = (t >> (k - 5)) & (PER_OCTAVE - 1);
    EXACT_TIMES as usize + ((u64::from(k) - 8) * PER_OCTAVE + sub) as usize
}

/// The largest reuse time bucket `i` holds (not the far bucket).
fn bucket_end(i: usize) -> u64 {
    if (i as u64) < EXACT_TIMES {
        return i as u64;
    }
    let j = i as u64 - EXACT_TIMES;
    let k = j / PER_OCTAVE + 8;
    let sub = j % PER_OCTAVE;
    let width = 1u64 << (k - 5);
    (1u64 << k) + sub * width + width - 1
}

#[derive(Debug, Clone, Copy)]
struct Node {
    offset: u64,
    /// The lookup count at its last lookup; [`FREE`] for a free node.
    last: u64,
}

/// The reuse-time histogram of a cache's lookups, over a window.
#[derive(Debug, Clone)]
pub struct ReuseCurve {
    depth: u32,
    nodes: Vec<Node>,
    free: Vec<u32>,
    index: OffsetIndex,
    /// The node of each real cache slot, as last seen (checked against the
    /// offset before use, so a stale one only costs the hash probe).
    by_slot: Vec<u32>,
    /// Lookups counted so far: the clock of reuse times.
    now: u64,
    current: Vec<u32>,
    previous: Vec<u32>,
    current_lookups: u64,
    previous_lookups: u64,
    /// Lookups the real cache missed, each half.
    current_real_misses: u64,
    previous_real_misses: u64,
    window: u64,
}

impl ReuseCurve {
    /// A curve of sizes `1..=depth` (at least 1) over halves of `window`
    /// lookups (at least 1).
    pub fn new(depth: u32, window: u64) -> Self {
        ReuseCurve {
            depth: depth.max(1),
            nodes: Vec::new(),
            free: Vec::new(),
            index: OffsetIndex::new(),
            by_slot: Vec::new(),
            now: 0,
            current: vec![0; BUCKETS],
            previous: vec![0; BUCKETS],
            current_lookups: 0,
            previous_lookups: 0,
            current_real_misses: 0,
            previous_real_misses: 0,
            window: window.max(1),
        }
    }

    /// The largest size the curve is computed for.
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// Lookups per half of the window.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// Computes the curve up to `depth` (at least 1) from now on.
    pub fn set_depth(&mut self, depth: u32) {
        self.depth = depth.max(1);
    }

    /// Tables whose last lookup is remembered now.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn tracked(&self) -> usize {
        self.index.len()
    }

    /// Heap bytes held.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn heap_bytes(&self) -> usize {
        self.nodes.capacity() * std::mem::size_of::<Node>()
            + (self.free.capacity() + self.by_slot.capacity()) * 4
            + self.index.heap_bytes()
            + (self.current.capacity() + self.previous.capacity()) * 4
    }

    /// One lookup of `offset`, counted; `slot` is where the real cache
    /// holds the table, if it does. Returns its reuse time, `None` for a
    /// table not looked up before (or forgotten).
    #[inline]
    pub fn lookup(&mut self, offset: u64, slot: Option<u32>) -> Option<u64> {
        self.now += 1;
        let now = self.now;
        let node = match slot.and_then(|s| self.by_slot.get(s as usize)) {
            Some(&n) if n != NIL && self.nodes[n as usize].offset == offset => Some(n),
            _ => self.find_node(offset, slot),
        };
        let reuse = match node {
            Some(n) => {
                let node = &mut self.nodes[n as usize];
                let t = now - node.last;
                node.last = now;
                Some(t)
            }
            None => {
                self.insert(offset, now, slot);
                None
            }
        };
        self.current[reuse.map_or(BUCKETS - 1, bucket)] += 1;
        self.current_lookups += 1;
        self.current_real_misses += u64::from(slot.is_none());
        if self.current_lookups >= self.window {
            self.next_half();
        }
        reuse
    }

    #[cold]
    fn next_half(&mut self) {
        std::mem::swap(&mut self.current, &mut self.previous);
        self.current.fill(0);
        self.previous_lookups = std::mem::take(&mut self.current_lookups);
        self.previous_real_misses = std::mem::take(&mut self.current_real_misses);
    }

    /// The node of `offset` by its hash; remembered for `slot`.
    fn find_node(&mut self, offset: u64, slot: Option<u32>) -> Option<u32> {
        let nodes = &self.nodes;
        let n = self.index.get(offset, |n| nodes[n as usize].offset)?;
        self.remember_slot(slot, n);
        Some(n)
    }

    fn remember_slot(&mut self, slot: Option<u32>, n: u32) {
        if let Some(s) = slot {
            let s = s as usize;
            if self.by_slot.len() <= s {
                self.by_slot.resize(s + 1, NIL);
            }
            self.by_slot[s] = n;
        }
    }

    fn insert(&mut self, offset: u64, last: u64, slot: Option<u32>) -> u32 {
        let node = Node { offset, last };
        let n = match self.free.pop() {
            Some(n) => {
                self.nodes[n as usize] = node;
                n
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        };
        let nodes = &self.nodes;
        self.index.insert(offset, n, |n| nodes[n as usize].offset);
        self.remember_slot(slot, n);
        n
    }

    /// Remembers `offset` as looked up now without counting a lookup,
    /// unless it is remembered already (then it is left as it is): a table
    /// the caller committed without a lookup that missed (one it created),
    /// or the lookup that follows a commit (part of the miss before it).
    pub fn note_without_lookup(&mut self, offset: u64, slot: Option<u32>) {
        if self.find_node(offset, slot).is_none() {
            self.insert(offset, self.now, slot);
        }
    }

    /// Forgets tables not looked up for more than `age` lookups: their
    /// next lookup counts as far. `O(tables remembered)`.
    pub fn forget_older_than(&mut self, age: u64) {
        let now = self.now;
        for n in 0..self.nodes.len() {
            let Node { offset, last } = self.nodes[n];
            if last != FREE && now - last > age {
                let nodes = &self.nodes;
                self.index.remove(offset, |n| nodes[n as usize].offset);
                self.nodes[n].last = FREE;
                self.free.push(n as u32);
            }
        }
    }

    /// Lookups in the window.
    pub fn lookups(&self) -> u64 {
        self.current_lookups + self.previous_lookups
    }

    /// Lookups in the window that the real cache missed (those fed with
    /// no slot).
    pub fn real_misses(&self) -> u64 {
        self.current_real_misses + self.previous_real_misses
    }

    /// The model's walk over the window's histogram, one [`Step`] of
    /// `P(t)`'s area per bucket, in increasing size: calls `f` on each
    /// until it returns false, and returns that step; after the last, the
    /// state past it (`t` the last bucket's end, `area_before` = `area` the
    /// whole area, `left` the far lookups, which miss at every larger size).
    fn walk(&self, mut f: impl FnMut(&Step) -> bool) -> Step {
        let total = self.lookups();
        let mut s = Step {
            t: 0,
            area_before: 0.0,
            area: 0.0,
            left: total,
        };
        if total == 0 {
            return s;
        }
        for i in 1..BUCKETS - 1 {
            let n = u64::from(self.current[i]) + u64::from(self.previous[i]);
            if n == 0 {
                continue;
            }
            let end = bucket_end(i);
            s.area_before = s.area;
            s.area += (end - s.t) as f64 * s.left as f64 / total as f64;
            if !f(&s) {
                return s;
            }
            s.t = end;
            s.left -= n;
        }
        s.area_before = s.area;
        s
    }

    /// Misses in the window had the cache held `size` tables.
    pub fn misses_at(&self, size: u32) -> u64 {
        self.walk(|s| f64::from(size) >= s.area - 1e-9).left
    }

    /// The whole curve: `m[s]` = misses in the window at `s` tables, for
    /// `s` in `0..=depth` (`m[0]` = every lookup).
    pub fn misses(&self) -> Vec<u64> {
        let depth = self.depth as usize;
        let mut m = Vec::with_capacity(depth + 1);
        m.push(self.lookups());
        let far = self.walk(|s| {
            while m.len() <= depth && (m.len() as f64) < s.area - 1e-9 {
                m.push(s.left);
            }
            m.len() <= depth
        });
        m.resize(depth + 1, far.left);
        m
    }

    /// The eviction time of an LRU cache of `size` tables: lookups after
    /// which an unused table has left it; `None` when the window's tables
    /// all fit.
    pub fn eviction_time(&self, size: u32) -> Option<u64> {
        let size = f64::from(size);
        let s = self.walk(|s| s.area < size);
        // Within the step that reaches `size`, the area grows by `left /
        // total` per lookup of reuse time.
        (s.left > 0)
            .then(|| s.t + ((size - s.area_before) * self.lookups() as f64 / s.left as f64).ceil() as u64)
    }

    /// The real cache's slot `slot` was emptied.
    pub fn slot_removed(&mut self, slot: u32) {
        if let Some(n) = self.by_slot.get_mut(slot as usize) {
            *n = NIL;
        }
    }

    /// The real cache was emptied.
    pub fn cache_drained(&mut self) {
        self.by_slot.clear();
    }
}

/// One step of the model's walk ([`ReuseCurve::walk`]): from reuse time
/// `t` to the next bucket's end, `left` of the window's lookups have a
/// longer reuse time, and the area under `P(t)` (the size of an LRU cache
/// whose eviction time that is) goes from `area_before` to `area`.
#[derive(Debug, Clone, Copy)]
struct Step {
    t: u64,
    area_before: f64,
    area: f64,
    left: u64,
}

/// The smallest size in `1..=cap` whose misses are within `slack` of the
/// fewest misses at any size in `1..=cap` (`m` as from
/// [`ReuseCurve::misses`]; sizes past its end count as its last value).
pub fn smallest_near_best(m: &[u64], cap: u32, slack: u64) -> u32 {
    let at = |s: u32| m.get(s as usize).or(m.last()).copied().unwrap_or(0);
    let cap = cap.max(1);
    let best = (1..=cap).map(at).min().unwrap_or(0);
    (1..=cap).find(|&s| at(s) <= best + slack).unwrap_or(cap)
}

#[cfg(test)]
// Under Miri these are skipped: the module has no unsafe code for Miri to
// check, and its tests run hundreds of thousands of lookups or curve points.
mod tests {
    use super::*;
    use crate::cache::{Cache, Policy};

    /// Exact LRU misses at `size` for `trace`, by the core cache itself.
    fn lru_misses(trace: &[u64], size: u32) -> u64 {
        let mut c: Cache<u64> = Cache::new(size, Policy::Lru);
        let mut misses = 0;
        for &t in trace {
            if c.find(t).is_none() {
                misses += 1;
                c.commit(t, t, |_| false, |_| {});
            }
        }
        misses
    }

    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *seed >> 33
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn buckets_are_exact_then_logarithmic_and_counted_at_their_end() {
        for t in 1..EXACT_TIMES {
            assert_eq!(bucket(t), t as usize);
            assert_eq!(bucket_end(bucket(t)), t);
        }
        let mut last = bucket(EXACT_TIMES - 1);
        for t in EXACT_TIMES..1 << 20 {
            let b = bucket(t);
            assert!(b == last || b == last + 1, "t {t}");
            assert!(bucket_end(b) >= t && bucket_end(b) - t < t / 32 + 1, "t {t}");
            last = b;
        }
        assert_eq!(bucket(1 << FAR_BITS), BUCKETS - 1);
        assert_eq!(bucket((1 << FAR_BITS) - 1), BUCKETS - 2);
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn a_loop_is_an_exact_cliff() {
        let mut c = ReuseCurve::new(200, u64::MAX);
        for i in 0..12_000u64 {
            c.lookup((i % 120 + 1) << 16, None);
        }
        let m = c.misses();
        assert_eq!(m.len(), 201);
        assert_eq!(m[119], 12_000);
        assert_eq!(m[120], 120);
        assert_eq!(c.misses_at(120), 120);
        assert_eq!(c.misses_at(119), 12_000);
        assert_eq!(smallest_near_best(&m, 200, 120), 120);
        // Under a cap below the loop, nothing helps: the smallest is 1.
        assert_eq!(smallest_near_best(&m, 100, 120), 1);
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn uniform_and_skewed_curves_are_close_to_exact_lru() {
        let mut seed = 7;
        let uniform: Vec<u64> = (0..60_000).map(|_| (lcg(&mut seed) % 200 + 1) << 16).collect();
        let hot: Vec<u64> = (0..60_000)
            .map(|_| {
                let r = lcg(&mut seed);
                let t = if r % 10 < 9 {
                    r / 10 % 30
                } else {
                    30 + r / 10 % 170
                };
                (t + 1) << 16
            })
            .collect();
        for trace in [&uniform, &hot] {
            let mut c = ReuseCurve::new(200, u64::MAX);
            for &t in trace.iter() {
                c.lookup(t, None);
            }
            let m = c.misses();
            for s in [10u32, 30, 50, 100, 150] {
                let exact = lru_misses(trace, s);
                let err = m[s as usize].abs_diff(exact) as f64 / trace.len() as f64;
                assert!(err < 0.02, "size {s}: model {} exact {exact}", m[s as usize]);
            }
        }
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn the_window_forgets_an_old_phase() {
        let mut c = ReuseCurve::new(200, 1000);
        for i in 0..5000u64 {
            c.lookup((i % 100 + 1) << 16, None);
        }
        assert_eq!(smallest_near_best(&c.misses(), 200, c.lookups() / 100), 100);
        for i in 0..2000u64 {
            c.lookup((i % 20 + 1000) << 16, None);
        }
        assert!((1000..=2000).contains(&c.lookups()));
        assert_eq!(smallest_near_best(&c.misses(), 200, c.lookups() / 100), 20);
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn slots_shortcut_the_hash_and_stale_slots_are_harmless() {
        let mut c = ReuseCurve::new(10, u64::MAX);
        assert_eq!(c.lookup(1 << 16, Some(0)), None);
        assert_eq!(c.lookup(2 << 16, Some(1)), None);
        assert_eq!(c.lookup(1 << 16, Some(0)), Some(2));
        // Slot 0 now holds another table: the offset check catches it.
        assert_eq!(c.lookup(2 << 16, Some(0)), Some(2));
        c.slot_removed(0);
        assert_eq!(c.lookup(1 << 16, Some(0)), Some(2));
        c.cache_drained();
        assert_eq!(c.lookup(2 << 16, Some(5)), Some(2));
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn forgotten_tables_count_as_far() {
        let mut c = ReuseCurve::new(10, u64::MAX);
        for t in 1..=5u64 {
            c.lookup(t << 16, None);
        }
        c.forget_older_than(2);
        assert_eq!(c.tracked(), 3);
        assert_eq!(c.lookup(1 << 16, None), None);
        assert_eq!(c.lookup(5 << 16, None), Some(2));
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn eviction_time_inverts_the_area() {
        let mut c = ReuseCurve::new(200, u64::MAX);
        for i in 0..12_000u64 {
            c.lookup((i % 120 + 1) << 16, None);
        }
        assert_eq!(c.eviction_time(60), Some(60));
        assert_eq!(c.eviction_time(120), Some(120));
        // Past the loop only first lookups are left (120 of 12,000).
        assert_eq!(c.eviction_time(121), Some(220));
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn a_commit_without_lookup_is_remembered_without_counting() {
        let mut c = ReuseCurve::new(10, u64::MAX);
        c.note_without_lookup(1 << 16, None);
        assert_eq!(c.lookups(), 0);
        assert_eq!(c.lookup(1 << 16, None), Some(1));
        c.lookup(2 << 16, None);
        c.note_without_lookup(1 << 16, None);
        assert_eq!(c.lookup(1 << 16, None), Some(2));
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn smallest_near_best_takes_the_first_size_within_slack() {
        let m = [100, 80, 50, 20, 12, 11, 10, 10];
        assert_eq!(smallest_near_best(&m, 7, 0), 6);
        assert_eq!(smallest_near_best(&m, 7, 2), 4);
        assert_eq!(smallest_near_best(&m, 3, 0), 3);
        assert_eq!(smallest_near_best(&m, 100, 1), 5);
    }
}
