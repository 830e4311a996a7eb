// SPDX-License-Identifier: LGPL-2.1-or-later
//! What an auto cache watches and wants: an [`Observer`] of the core that
//! feeds every lookup to a [`ReuseCurve`] and says, every
//! [`AutoSizer::DECIDE_EVERY`] lookups, that it is time to choose a size
//! again. Choosing (under a cap, or a share of a process budget) and
//! applying it are the caller's: the core is only told its new maximum.

#![forbid(unsafe_code)]

use super::curve::{smallest_near_best, ReuseCurve};
use crate::cache::Observer;

/// `committed` when no commit awaits its find.
const NO_OFFSET: u64 = u64::MAX;

/// Lookups per half window at least (the curve covers the last one to
/// two halves): long enough that a sampled curve is smooth at the sizes
/// that matter (hundreds of tables), short enough that a phase change is
/// forgotten within 32,768 lookups.
const MIN_WINDOW: u64 = 16_384;

/// The most that one auto cache's tables hold without a process budget:
/// 32 MiB, qcow2's default maximum L2 cache per image on Linux.
pub(crate) const CAP_BYTES: u64 = 32 << 20;

/// What a table is taken to cost before the cache holds one to measure: a
/// 256 KiB table (QED's default: 64 KiB clusters, 4 per table) with the
/// page `posix_memalign(4096, ...)` adds.
pub(crate) const ASSUMED_TABLE_BYTES: u64 = (256 << 10) + 4096;

/// The library's own bytes per cached table, at most: the entry (48), the
/// core's node, index bucket and bit (at most 40), the curve's node, index
/// bucket and time (at most 40), with room to spare (a unit test checks
/// the sum).
pub(crate) const BOOKKEEPING_PER_TABLE: u64 = 160;

/// The largest size an auto cache takes (2^16 tables: 16 GiB of default
/// tables). A fixed maximum can be larger.
pub(crate) const MAX_AUTO_TABLES: u32 = 1 << 16;

/// How many tables of `per_table` bytes fit in `bytes`: at least 1, at
/// most [`MAX_AUTO_TABLES`].
pub fn tables_within(bytes: u64, per_table: u64) -> u32 {
    (bytes / per_table.max(1)).clamp(1, u64::from(MAX_AUTO_TABLES)) as u32
}

/// The curve and the decision clock of one auto cache.
#[derive(Debug, Clone)]
pub struct AutoSizer {
    curve: ReuseCurve,
    /// The offset the cache committed last, until the next find: the
    /// caller finds a table right after committing it, and that find is
    /// part of the miss before it, not a lookup of its own.
    committed: u64,
    finds: u64,
    next_decision: u64,
    /// Lookups from one decision to the next: [`AutoSizer::FIRST_DECISION`]
    /// at first, doubling up to [`AutoSizer::DECIDE_EVERY`] (a cache that
    /// starts too small reads a table at nearly every lookup until it
    /// grows; a short window is enough to see that it must).
    every: u64,
}

impl AutoSizer {
    /// Lookups between two decisions once learning is done (at least;
    /// more when the curve is deep, so a decision's `O(depth)` scan stays
    /// a small share).
    pub(crate) const DECIDE_EVERY: u64 = 2048;

    /// Lookups before the first decision.
    pub(crate) const FIRST_DECISION: u64 = 256;

    /// A sizer tracking sizes up to `depth` tables.
    pub fn new(depth: u32) -> Self {
        AutoSizer {
            curve: ReuseCurve::new(depth, Self::window_for(depth)),
            committed: NO_OFFSET,
            finds: 0,
            next_decision: Self::FIRST_DECISION,
            every: Self::FIRST_DECISION,
        }
    }

    fn window_for(depth: u32) -> u64 {
        MIN_WINDOW.max(8 * u64::from(depth))
    }

    /// The curve.
    pub fn curve(&self) -> &ReuseCurve {
        &self.curve
    }

    /// Tracks sizes up to `depth` from now on (the cap changed).
    pub fn set_depth(&mut self, depth: u32) {
        if depth != self.curve.depth() {
            self.curve.set_depth(depth);
        }
    }

    /// Lookups counted since the sizer started.
    pub fn finds(&self) -> u64 {
        self.finds
    }

    /// Lookups left until it is time to choose a size again.
    pub fn until_next_decision(&self) -> u64 {
        self.next_decision.saturating_sub(self.finds)
    }

    /// True when it is time to choose a size again ([`Self::decide`]).
    #[inline(always)]
    pub fn due(&self) -> bool {
        self.finds >= self.next_decision
    }

    /// The size this cache wants on its own under `cap` tables: the
    /// smallest within one point of hit ratio (1% of the window's
    /// lookups) of the best size up to `cap`. Also forgets the tables
    /// whose reuse could only hit in a cache larger than `cap`, and
    /// schedules the next decision [`Self::DECIDE_EVERY`] lookups on (or
    /// half the depth, if more).
    /// Until the window holds a full half ([`ReuseCurve::window`] lookups)
    /// it never wants fewer than `current`. Returns the size and the curve
    /// it was chosen from (see
    /// [`Self::misses`]).
    pub fn decide(&mut self, cap: u32, current: u32) -> (u32, Vec<u64>) {
        let m = self.misses(current);
        let mut wanted = smallest_near_best(&m, cap, self.curve.lookups() / 100);
        if self.curve.lookups() < self.curve.window() {
            // Learning: first lookups look like far ones, so a short
            // window may only say "more", never "fewer".
            wanted = wanted.max(current);
        }
        let steady = Self::DECIDE_EVERY.max(u64::from(self.curve.depth()) / 2);
        self.every = (2 * self.every).min(steady);
        let every = self.every;
        if let Some(t) = self.curve.eviction_time(cap) {
            // Twice the eviction time at the cap, and a decision's worth
            // of lookups: what is older misses at every size up to the cap.
            self.curve.forget_older_than(2 * t + every);
        }
        self.next_decision = self.finds + every;
        (wanted, m)
    }

    /// The curve, `m[s]` for `s` in `0..=depth`, anchored at what the real
    /// cache of `current` tables missed in the window: the model is LRU's,
    /// and a FIFO cache holding a hot set misses more than an LRU one of
    /// the same size (SIEVE fewer). The misses a larger cache would save
    /// are scaled by the real misses over the model's at `current`, within
    /// 1/2 and 4; first lookups (the misses at the largest size) are not.
    /// A loop, where the policies agree, keeps its cliff.
    pub fn misses(&self, current: u32) -> Vec<u64> {
        let mut m = self.curve.misses();
        let far = m.last().copied().unwrap_or(0);
        let model = m
            .get(current as usize)
            .copied()
            .unwrap_or(far)
            .saturating_sub(far);
        let real = self.curve.real_misses().saturating_sub(far);
        if model == 0 || real == 0 {
            return m;
        }
        let k = (real as f64 / model as f64).clamp(0.5, 4.0);
        let lookups = m[0];
        for v in m.iter_mut().skip(1) {
            *v = ((far as f64 + (*v - far) as f64 * k).round() as u64).min(lookups);
        }
        m
    }
}

/// The maximum to set when a cache at `current` wants `wanted`: more at
/// once (a cache short of tables misses now), fewer only for a drop of
/// more than an eighth (a curve sampled over a window wobbles, and every
/// table given back and wanted again is a read).
pub fn next_maximum(current: u32, wanted: u32) -> Option<u32> {
    let wanted = wanted.max(1);
    if wanted > current || u64::from(wanted) * 8 < u64::from(current) * 7 {
        Some(wanted)
    } else {
        None
    }
}

impl Observer for AutoSizer {
    #[inline(always)]
    fn on_find(&mut self, offset: u64, slot: Option<u32>) {
        if offset == self.committed {
            self.committed = NO_OFFSET;
            self.curve.note_without_lookup(offset, slot);
            return;
        }
        self.committed = NO_OFFSET;
        self.curve.lookup(offset, slot);
        self.finds += 1;
    }

    #[inline(always)]
    fn on_commit(&mut self, offset: u64) {
        self.committed = offset;
    }

    fn on_remove(&mut self, slot: u32) {
        self.curve.slot_removed(slot);
    }

    fn on_drain(&mut self) {
        self.curve.cache_drained();
    }
}

#[cfg(test)]
// Under Miri these are skipped: the module has no unsafe code for Miri to
// check, and its tests run hundreds of thousands of lookups or curve points.
mod tests {
    use super::*;
    use crate::cache::{Cache, Policy};

    /// The caller's read path, with the size chosen as the FFI layer does
    /// (no budget): returns the misses.
    fn replay(trace: impl Iterator<Item = u64>, cap: u32, policy: Policy) -> (u64, Cache<u64, AutoSizer>) {
        let mut c = Cache::with_observer(50, policy, AutoSizer::new(cap));
        let mut misses = 0;
        for off in trace {
            if c.find(off).is_none() {
                misses += 1;
                c.commit(off, off, |_| false, |_| {});
                assert!(c.find(off).is_some());
            }
            if c.observer().due() {
                let max = c.max_entries();
                let (want, _) = c.observer_mut().decide(cap, max);
                if let Some(m) = next_maximum(c.max_entries(), want) {
                    c.set_max_entries(m, |_| false, |_| {});
                }
            }
        }
        (misses, c)
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn a_loop_above_the_default_is_found_and_taken_whole() {
        let trace = (0..100_000u64).map(|i| (i % 120 + 1) << 16);
        let (misses, c) = replay(trace, 126, Policy::Fifo);
        assert_eq!(c.max_entries(), 120);
        // Learning: the first decision comes after 256 lookups.
        assert!(misses < 256 + 2 * 120, "{misses}");
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn a_phase_change_gives_tables_back() {
        let trace = (0..100_000u64)
            .map(|i| (i % 100 + 1) << 16)
            .chain((0..100_000u64).map(|i| (i % 20 + 1000) << 16));
        let (_, c) = replay(trace, 126, Policy::Fifo);
        assert_eq!(c.max_entries(), 20);
        assert_eq!(c.len(), 20);
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn the_curve_survives_the_cache_resizing_itself() {
        let trace = (0..50_000u64).map(|i| (i % 120 + 1) << 16);
        let (_, c) = replay(trace, 126, Policy::Lru);
        // The cache went 50 -> 120; the curve still saw all the lookups.
        assert_eq!(c.observer().finds(), 50_000);
        let curve = c.observer().curve();
        assert_eq!(curve.misses_at(119), curve.lookups());
        assert_eq!(curve.misses_at(120), 0);
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn the_default_cap_holds_125_default_tables() {
        let per_table = ASSUMED_TABLE_BYTES + BOOKKEEPING_PER_TABLE;
        assert_eq!(tables_within(CAP_BYTES, per_table), 125);
        assert_eq!(tables_within(0, per_table), 1);
        assert_eq!(tables_within(u64::MAX, 1), MAX_AUTO_TABLES);
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn bookkeeping_per_table_is_an_upper_bound() {
        // Heap bytes per table of the core and of the curve, full.
        let n = 4096u32;
        let mut c: Cache<u64, AutoSizer> = Cache::with_observer(n, Policy::Sieve, AutoSizer::new(n));
        for t in 1..=u64::from(n) {
            c.find(t << 16);
            c.commit(t << 16, t, |_| false, |_| {});
        }
        let per_table = (c.heap_bytes() + c.observer().curve().heap_bytes()) as u64 / u64::from(n);
        let entry = 48;
        assert!(
            per_table + entry <= BOOKKEEPING_PER_TABLE,
            "{per_table} + {entry}"
        );
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn hysteresis_grows_at_once_and_shrinks_past_an_eighth() {
        assert_eq!(next_maximum(50, 51), Some(51));
        assert_eq!(next_maximum(80, 71), None);
        assert_eq!(next_maximum(80, 69), Some(69));
        assert_eq!(next_maximum(1, 0), None);
    }
}
