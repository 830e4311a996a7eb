// SPDX-License-Identifier: LGPL-2.1-or-later
//! A cache's miss curve at every size at once, over a sliding window of its
//! lookups: what an auto-sized cache decides its size from.
//!
//! It is the LRU stack of Mattson et al.: a lookup of a table that `d`
//! other tables were looked up since its previous lookup (its *reuse
//! distance*) hits in an LRU cache of more than `d` tables and misses in
//! every smaller one, so one histogram of distances is the whole curve.
//! The distance is counted with a Fenwick tree over the times of each
//! table's last lookup (how many tables were looked up after it), so a
//! lookup costs one hash probe and three `O(log n)` walks whatever the
//! sizes tracked; times are renumbered when they run out (`O(n)`, once per
//! `n` lookups). Tables are tracked down to `depth` in the stack (the
//! largest size the cache may take); beyond that a lookup counts as a miss
//! at every size, like a first lookup.
//!
//! The curve is exact for LRU. FIFO and SIEVE caches get the same curve as
//! an estimate: their curves have the same cliffs (a loop over `n` tables
//! misses everything below `n` under all three) and differ in slope on
//! skewed workloads, where FIFO needs somewhat more tables than LRU for the
//! same hit ratio. Unlike the exact advisor it survives every resize of the
//! cache, since nothing in it depends on the cache's maximum.
//!
//! Window: the histogram is kept in two halves of [`ReuseCurve::window`]
//! lookups each; when the current half is full it replaces the previous
//! one. The curve is the sum of both: the last `window` to `2 * window`
//! lookups, so a phase change is forgotten within `2 * window` lookups.

#![forbid(unsafe_code)]

use crate::cache::index::OffsetIndex;

const NIL: u32 = u32::MAX;

/// Smallest number of times (Fenwick positions) kept.
const MIN_TIMES: usize = 64;

#[derive(Debug, Clone, Copy)]
struct Node {
    offset: u64,
    /// The time of the last lookup: its position in the Fenwick tree.
    time: u32,
    /// Towards the most recent lookup (the head).
    newer: u32,
    /// Towards the least recent (the tail).
    older: u32,
}

/// The reuse-distance histogram of a cache's lookups, over a window.
#[derive(Debug, Clone)]
pub struct ReuseCurve {
    depth: u32,
    nodes: Vec<Node>,
    free: Vec<u32>,
    newest: u32,
    oldest: u32,
    len: u32,
    index: OffsetIndex,
    /// Fenwick tree over times `1..times.len()`: 1 at the time of each
    /// tracked table's last lookup.
    times: Vec<u32>,
    next_time: u32,
    /// Lookups by distance, this half and the previous one. Index `d` <
    /// `depth`: distance `d`; the last index (grown on demand, never past
    /// `depth`): distance `depth` or more, or first lookup.
    current: Vec<u32>,
    previous: Vec<u32>,
    current_lookups: u64,
    previous_lookups: u64,
    /// Far lookups (distance `depth` or more, or never seen) of each half.
    current_far: u64,
    previous_far: u64,
    window: u64,
}

impl ReuseCurve {
    /// A curve tracking sizes `1..=depth` (at least 1) over halves of
    /// `window` lookups (at least 1).
    pub fn new(depth: u32, window: u64) -> Self {
        ReuseCurve {
            depth: depth.max(1),
            nodes: Vec::new(),
            free: Vec::new(),
            newest: NIL,
            oldest: NIL,
            len: 0,
            index: OffsetIndex::new(),
            times: vec![0; MIN_TIMES + 1],
            next_time: 1,
            current: Vec::new(),
            previous: Vec::new(),
            current_lookups: 0,
            previous_lookups: 0,
            current_far: 0,
            previous_far: 0,
            window: window.max(1),
        }
    }

    /// The largest size tracked.
    pub fn depth(&self) -> u32 {
        self.depth
    }

    /// Lookups per half of the window.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// Tracks sizes up to `depth` (at least 1) from now on; lowering it
    /// forgets the tables beyond it.
    pub fn set_depth(&mut self, depth: u32) {
        self.depth = depth.max(1);
        while self.len > self.depth {
            self.drop_oldest();
        }
        for h in [&mut self.current, &mut self.previous] {
            if h.len() > self.depth as usize {
                let far: u32 = h[self.depth as usize..].iter().sum();
                h.truncate(self.depth as usize);
                h.push(far);
            }
        }
    }

    /// Tables tracked now.
    pub fn tracked(&self) -> u32 {
        self.len
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.nodes.capacity() * std::mem::size_of::<Node>()
            + self.free.capacity() * 4
            + self.index.heap_bytes()
            + self.times.capacity() * 4
            + (self.current.capacity() + self.previous.capacity()) * 4
    }

    /// One lookup of `offset`, counted: returns its distance, `None` when
    /// it is at least `depth` or the table was not tracked.
    pub fn lookup(&mut self, offset: u64) -> Option<u32> {
        let distance = self.touch(offset);
        let d = match distance {
            Some(d) if d < self.depth => d as usize,
            _ => {
                self.current_far += 1;
                self.depth as usize
            }
        };
        if self.current.len() <= d {
            self.current.resize(d + 1, 0);
        }
        self.current[d] += 1;
        self.current_lookups += 1;
        if self.current_lookups >= self.window {
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.clear();
            self.previous_lookups = std::mem::take(&mut self.current_lookups);
            self.previous_far = std::mem::take(&mut self.current_far);
        }
        distance.filter(|&d| d < self.depth)
    }

    /// Makes `offset` the most recent table without counting a lookup,
    /// unless it is tracked already (then it stays where it is): a table
    /// the caller committed without a lookup that missed (one it created),
    /// or the lookup that follows a commit (part of the miss before it).
    pub fn note_without_lookup(&mut self, offset: u64) {
        let nodes = &self.nodes;
        if self.index.get(offset, |n| nodes[n as usize].offset).is_none() {
            self.insert_newest(offset);
        }
    }

    /// Lookups in the window.
    pub fn lookups(&self) -> u64 {
        self.current_lookups + self.previous_lookups
    }

    /// Misses in the window had the cache held `size` tables (LRU), for
    /// `size` up to `depth`.
    pub fn misses_at(&self, size: u32) -> u64 {
        let s = size.min(self.depth) as usize;
        let hits: u64 = [&self.current, &self.previous]
            .iter()
            .map(|h| h.iter().take(s).map(|&n| u64::from(n)).sum::<u64>())
            .sum();
        self.lookups() - hits
    }

    /// The whole curve: `m[s]` = misses in the window at `s` tables, for
    /// `s` in `0..=depth` (`m[0]` = every lookup).
    pub fn misses(&self) -> Vec<u64> {
        let mut m = Vec::with_capacity(self.depth as usize + 1);
        let mut left = self.lookups();
        m.push(left);
        for d in 0..self.depth as usize {
            let at = |h: &Vec<u32>| u64::from(h.get(d).copied().unwrap_or(0));
            left -= at(&self.current) + at(&self.previous);
            m.push(left);
        }
        m
    }

    /// Moves (or inserts) `offset` to the most recent place; returns the
    /// number of tables looked up since its last lookup, if tracked.
    fn touch(&mut self, offset: u64) -> Option<u32> {
        let nodes = &self.nodes;
        let Some(n) = self.index.get(offset, |n| nodes[n as usize].offset) else {
            self.insert_newest(offset);
            return None;
        };
        let time = self.nodes[n as usize].time;
        let distance = self.len - self.prefix(time);
        self.add(time, -1);
        self.unlink(n);
        self.link_newest(n);
        self.stamp(n);
        Some(distance)
    }

    fn insert_newest(&mut self, offset: u64) {
        let node = Node {
            offset,
            time: 0,
            newer: NIL,
            older: NIL,
        };
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
        self.len += 1;
        self.link_newest(n);
        self.stamp(n);
        if self.len > self.depth {
            self.drop_oldest();
        }
    }

    fn drop_oldest(&mut self) {
        let n = self.oldest;
        let Node { offset, time, .. } = self.nodes[n as usize];
        self.add(time, -1);
        self.unlink(n);
        let nodes = &self.nodes;
        self.index.remove(offset, |n| nodes[n as usize].offset);
        self.free.push(n);
        self.len -= 1;
    }

    /// Gives `n` (linked newest) the next time.
    fn stamp(&mut self, n: u32) {
        if self.next_time as usize >= self.times.len() {
            self.renumber();
        }
        let t = self.next_time;
        self.next_time += 1;
        self.nodes[n as usize].time = t;
        self.add(t, 1);
    }

    /// Times ran out: gives the tracked tables times `1..=len`, oldest
    /// first (the node being stamped, already newest, gets its own after),
    /// in a tree sized for twice as many.
    fn renumber(&mut self) {
        let size = (2 * self.len as usize + 2).max(MIN_TIMES);
        self.times.clear();
        self.times.resize(size + 1, 0);
        let mut t = 0;
        let mut cur = self.oldest;
        while cur != NIL {
            let node = &mut self.nodes[cur as usize];
            // The newest node is the one being stamped: it has no time yet
            // unless it is an older node moved up (its old time was
            // removed from the tree already).
            if cur != self.newest {
                t += 1;
                node.time = t;
                self.times[t as usize] = 1;
            }
            cur = node.newer;
        }
        // Linear Fenwick construction.
        for i in 1..=size {
            let j = i + (i & i.wrapping_neg());
            if j <= size {
                self.times[j] += self.times[i];
            }
        }
        self.next_time = t + 1;
    }

    /// Tracked tables whose last lookup was at `time` or before.
    fn prefix(&self, time: u32) -> u32 {
        let mut i = time as usize;
        let mut sum = 0;
        while i > 0 {
            sum += self.times[i];
            i &= i - 1;
        }
        sum
    }

    fn add(&mut self, time: u32, delta: i32) {
        let mut i = time as usize;
        while i < self.times.len() {
            self.times[i] = self.times[i].wrapping_add_signed(delta);
            i += i & i.wrapping_neg();
        }
    }

    fn unlink(&mut self, n: u32) {
        let Node { newer, older, .. } = self.nodes[n as usize];
        match newer {
            NIL => self.newest = older,
            x => self.nodes[x as usize].older = older,
        }
        match older {
            NIL => self.oldest = newer,
            x => self.nodes[x as usize].newer = newer,
        }
    }

    fn link_newest(&mut self, n: u32) {
        let old_newest = self.newest;
        {
            let node = &mut self.nodes[n as usize];
            node.newer = NIL;
            node.older = old_newest;
        }
        match old_newest {
            NIL => self.oldest = n,
            x => self.nodes[x as usize].newer = n,
        }
        self.newest = n;
    }
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
mod tests {
    use super::*;
    use crate::cache::{Cache, Policy};
    use std::collections::HashSet;

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
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        *seed >> 33
    }

    #[test]
    fn the_curve_is_exact_lru_at_every_size() {
        let mut seed = 7;
        let trace: Vec<u64> = (0..20_000)
            .map(|i| {
                let r = lcg(&mut seed);
                // A hot set of 10, a loop of 30, uniform over 200.
                let t = match i % 3 {
                    0 => r % 10,
                    1 => 10 + (i / 3) % 30,
                    _ => 40 + r % 200,
                };
                (t + 1) << 16
            })
            .collect();
        let mut c = ReuseCurve::new(64, u64::MAX);
        for &t in &trace {
            c.lookup(t);
        }
        let m = c.misses();
        assert_eq!(m.len(), 65);
        assert_eq!(m[0], trace.len() as u64);
        for s in [1, 2, 5, 9, 10, 11, 29, 30, 31, 40, 41, 63, 64] {
            assert_eq!(m[s], lru_misses(&trace, s as u32), "size {s}");
            assert_eq!(c.misses_at(s as u32), m[s]);
        }
        assert!(c.tracked() <= 64);
    }

    #[test]
    fn renumbering_keeps_distances() {
        // Few tables, many lookups: times run out again and again.
        let mut c = ReuseCurve::new(8, u64::MAX);
        for round in 0..1000u64 {
            for t in 1..=5u64 {
                let d = c.lookup(t << 16);
                if round > 0 {
                    assert_eq!(d, Some(4), "round {round} table {t}");
                }
            }
        }
    }

    #[test]
    fn depth_bounds_what_is_tracked() {
        let mut c = ReuseCurve::new(10, u64::MAX);
        for round in 0..3u64 {
            for t in 1..=20u64 {
                assert_eq!(c.lookup(t << 16), None, "round {round}");
            }
        }
        assert_eq!(c.tracked(), 10);
        assert_eq!(c.misses_at(10), 60);
        c.set_depth(4);
        assert_eq!(c.tracked(), 4);
        // Tables 17..=20 are the four most recent.
        assert_eq!(c.lookup(17 << 16), Some(3));
    }

    #[test]
    fn a_loop_is_a_cliff() {
        let mut c = ReuseCurve::new(200, u64::MAX);
        for i in 0..12_000u64 {
            c.lookup((i % 120 + 1) << 16);
        }
        let m = c.misses();
        assert_eq!(m[119], 12_000);
        assert_eq!(m[120], 120);
        assert_eq!(smallest_near_best(&m, 200, 120), 120);
        // Under a cap below the loop, nothing helps: the smallest is 1.
        assert_eq!(smallest_near_best(&m, 100, 120), 1);
    }

    #[test]
    fn the_window_forgets_an_old_phase() {
        let mut c = ReuseCurve::new(200, 1000);
        for i in 0..5000u64 {
            c.lookup((i % 100 + 1) << 16);
        }
        assert_eq!(smallest_near_best(&c.misses(), 200, c.lookups() / 100), 100);
        for i in 0..2000u64 {
            c.lookup((i % 20 + 1000) << 16);
        }
        assert!((1000..=2000).contains(&c.lookups()));
        assert_eq!(smallest_near_best(&c.misses(), 200, c.lookups() / 100), 20);
    }

    #[test]
    fn a_commit_without_lookup_tracks_without_counting() {
        let mut c = ReuseCurve::new(10, u64::MAX);
        c.note_without_lookup(1 << 16);
        assert_eq!(c.lookups(), 0);
        assert_eq!(c.lookup(1 << 16), Some(0));
        c.lookup(2 << 16);
        // Tracked already: stays where it is (one table after it).
        c.note_without_lookup(1 << 16);
        assert_eq!(c.lookup(1 << 16), Some(1));
        let distinct: HashSet<u64> = [1u64, 2].into_iter().collect();
        assert_eq!(c.tracked() as usize, distinct.len());
    }

    #[test]
    fn smallest_near_best_takes_the_first_size_within_slack() {
        let m = [100, 80, 50, 20, 12, 11, 10, 10];
        assert_eq!(smallest_near_best(&m, 7, 0), 6);
        assert_eq!(smallest_near_best(&m, 7, 2), 4);
        assert_eq!(smallest_near_best(&m, 3, 0), 3);
        assert_eq!(smallest_near_best(&m, 100, 1), 5);
    }
}
