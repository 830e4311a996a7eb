// SPDX-License-Identifier: LGPL-2.1-or-later
//! The size advisor (docs/advisor.md): how many table reads the cache would
//! have needed at other maximums, from the lookups it really got.
//!
//! Every `find` the cache sees is fed to one exact simulation per tracked
//! size, all under the cache's policy, in one structure: a table has one
//! *record* (found by one hash lookup, or through the real cache's slot on
//! a real hit) holding, as bitmasks over the tracked sizes, which
//! simulated caches hold it, SIEVE's visited bits and which simulations it
//! is the fresh entry of. What orders the records depends on the policy:
//! FIFO keeps one ring of records per size (it only ever evicts its
//! oldest), SIEVE one singly linked list per size (only the hand
//! removes), LRU a single stack cut into segments, one per size (a table
//! in the top `n` of the stack is exactly what a cache of `n` holds). A
//! find that hits every simulation costs the lookup and a few bit
//! operations (LRU also moves the record to the top of the stack). A
//! simulated miss inserts the table in that simulation (evicting per
//! policy when it is full). The find that follows the caller's commit is
//! not counted again (see `Advisor::committed`), exactly as in a real
//! cache of that size. Pinning by requests in flight is not simulated.
//!
//! Records live while some simulation holds the table, so memory is
//! bounded by the largest tracked size. This module knows nothing of C, of
//! the environment or of stderr: it is an [`Observer`] of the core cache,
//! which holds it in its [`AdvisorSlot`] while it is on. What it says at
//! `free` is [`report`]'s.

#![forbid(unsafe_code)]

pub mod report;

use crate::cache::index::OffsetIndex;
use crate::cache::{Cache, Observer, Policy};

const NIL: u32 = u32::MAX;

/// In `Rec::inside`: the real cache holds the table and `by_slot` maps
/// its slot to the record, which must stay while it does.
const PINNED: u32 = 1 << 31;

/// In `Rec::inside`: a real miss of the table awaits its commit and the
/// find after it (the record is in `awaiting`), which must not count.
const AWAITED: u32 = 1 << 30;

/// Misses awaiting their commit that are remembered at most (a caller
/// whose reads fail never commits; the oldest are forgotten).
const MAX_AWAITING: usize = 256;

/// Tracked sizes as fractions of the cache's maximum, smallest first: at
/// least 1, at most [`MAX_TRACKED`], the maximum itself left out (the
/// cache's own counters answer for it).
const FRACTIONS: [(u64, u64); MAX_SIMS] = [(1, 2), (3, 2), (2, 1), (4, 1), (8, 1)];

/// Simulations at most (sizes that coincide are simulated once).
const MAX_SIMS: usize = 5;

/// The largest size tracked.
pub(crate) const MAX_TRACKED: u32 = 1 << 20;

/// The sizes an advisor simulates for a cache of `max_entries`, ascending.
pub fn tracked_sizes(max_entries: u32) -> Vec<u32> {
    let mut sizes: Vec<u32> = FRACTIONS
        .iter()
        .map(|&(num, den)| {
            let s = (u64::from(max_entries) * num / den).max(1);
            if num > den {
                s.min(u64::from(MAX_TRACKED)) as u32
            } else {
                s as u32
            }
        })
        .filter(|&s| s != max_entries && (s < max_entries || max_entries < MAX_TRACKED))
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes
}

#[derive(Debug, Clone, Copy)]
struct Rec {
    offset: u64,
    /// Bit k: simulation k holds the table.
    inside: u32,
    /// Bit k: SIEVE's visited bit in simulation k.
    visited: u32,
    /// Bit k: the table is simulation k's fresh entry (see [`Policy`]).
    fresh: u32,
    /// LRU only: the smallest simulation holding the table (its segment of
    /// the one LRU stack), `sims.len()` for none.
    seg: u32,
}

#[derive(Debug, Clone, Copy)]
struct Link {
    prev: u32,
    next: u32,
}

#[derive(Debug, Clone, Copy)]
struct Sim {
    max: u32,
    len: u32,
    head: u32,
    tail: u32,
    hand: u32,
    fresh: u32,
    /// FIFO: the ring position of the oldest table once the ring is full.
    pos: u32,
    misses: u64,
}

/// `v[i]`. The advisor indexes its arrays with record ids and simulation
/// numbers it stored itself (every id held by the index, a list, a ring,
/// a hand or the free list is below `recs.len()`; simulation numbers come
/// from bits of `all`), so the bounds check never fails. It stays: without
/// it a find costs 16 instructions less with the advisor on (cachegrind,
/// 50 tables, fifo: 279 against 295, about 1 ns), which does not buy an
/// invariant every reader of this file would have to re-check; with the
/// advisor off (the default) it costs nothing.
#[inline(always)]
fn at<T>(v: &[T], i: u32) -> &T {
    &v[i as usize]
}

/// `&mut v[i]` (see [`at`]).
#[inline(always)]
fn at_mut<T>(v: &mut [T], i: u32) -> &mut T {
    &mut v[i as usize]
}

/// Exact simulations of the cache at several sizes, fed by its finds.
#[derive(Debug, Clone)]
pub struct Advisor {
    /// The policy's find path, chosen once: no dispatch per find.
    find_fn: fn(&mut Advisor, u64, Option<u32>),
    policy: Policy,
    max_entries: u32,
    sims: Vec<Sim>,
    /// Bits of every simulation.
    all: u32,
    recs: Vec<Rec>,
    /// SIEVE: per record, its successor in each simulation's list (lists
    /// are singly linked: only the hand removes, and it knows the record
    /// before it).
    next: Vec<[u32; MAX_SIMS]>,
    /// LRU: per record, its links in the one stack.
    lru: Vec<Link>,
    /// FIFO: one ring of records per simulation, oldest at `pos` once
    /// full (FIFO needs no links: it only ever evicts its oldest).
    rings: Vec<Vec<u32>>,
    /// FIFO: bits of the simulations whose ring is full.
    fifo_full: u32,
    /// LRU: the stack, most recent first, and its length.
    lru_head: u32,
    lru_tail: u32,
    lru_len: u32,
    /// LRU: the largest simulated size, the stack's depth.
    lru_cap: u32,
    /// LRU: how many simulations (the smallest ones: they fill first) have
    /// a last record (`tail` not NIL). A tail, once set, stays set.
    lru_tailed: u32,
    free: Vec<u32>,
    index: OffsetIndex,
    /// The record of each of the real cache's slots that was hit since the
    /// advisor started (NIL: none yet): a hit in the real cache finds its
    /// record without a second hash lookup.
    by_slot: Vec<u32>,
    finds: u64,
    /// The cache's misses when the advisor started.
    base_misses: u64,
    /// The offset the cache committed last, until the next find. The
    /// caller finds a table right after committing it; with requests in
    /// flight that find may come long after the miss that fed the
    /// simulations (other requests ran between), so it must not count as
    /// a reuse there: a simulation that holds the table leaves it as it
    /// is (SIEVE does not mark it, LRU does not move it), as if the find
    /// had followed the miss at once. One that does not hold it (a new
    /// table the caller created, committed without a miss) takes it in.
    committed: u64,
    /// Records of real misses whose commit has not been found yet, oldest
    /// first, one entry per miss.
    awaiting: Vec<u32>,
}

/// `Advisor::committed` when no commit is pending.
const NO_OFFSET: u64 = u64::MAX;

impl Advisor {
    /// An advisor for a cache of `max_entries` under `policy` that had
    /// `misses_so_far` misses.
    pub fn new(max_entries: u32, policy: Policy, misses_so_far: u64) -> Self {
        let sims: Vec<Sim> = tracked_sizes(max_entries)
            .into_iter()
            .map(|max| Sim {
                max,
                len: 0,
                head: NIL,
                tail: NIL,
                hand: NIL,
                fresh: NIL,
                pos: 0,
                misses: 0,
            })
            .collect();
        let n = sims.len();
        let lru_cap = sims.last().map_or(0, |s| s.max);
        let all = if sims.is_empty() {
            0
        } else {
            u32::MAX >> (32 - sims.len())
        };
        Advisor {
            find_fn: match policy {
                Policy::Fifo => Advisor::on_find_fifo,
                Policy::Lru => Advisor::on_find_lru,
                Policy::Sieve => Advisor::on_find_sieve,
            },
            policy,
            max_entries,
            sims,
            all,
            recs: Vec::new(),
            rings: vec![Vec::new(); if policy == Policy::Fifo { n } else { 0 }],
            fifo_full: 0,
            next: Vec::new(),
            lru: Vec::new(),
            lru_head: NIL,
            lru_tail: NIL,
            lru_len: 0,
            lru_cap,
            lru_tailed: 0,
            free: Vec::new(),
            index: OffsetIndex::new(),
            by_slot: Vec::new(),
            finds: 0,
            base_misses: misses_so_far,
            committed: NO_OFFSET,
            awaiting: Vec::new(),
        }
    }

    /// The simulated sizes, ascending (the cache's own maximum excluded).
    pub fn sizes(&self) -> Vec<u32> {
        self.sims.iter().map(|s| s.max).collect()
    }

    /// The maximum of the cache this advisor was started for.
    pub fn max_entries(&self) -> u32 {
        self.max_entries
    }

    /// Finds fed since the advisor started.
    pub fn finds(&self) -> u64 {
        self.finds
    }

    /// Misses simulated at `size`, if it is a simulated size.
    pub fn simulated_misses(&self, size: u32) -> Option<u64> {
        self.sims.iter().find(|s| s.max == size).map(|s| s.misses)
    }

    /// Tables tracked now (held by at least one simulation).
    pub fn tracked_tables(&self) -> usize {
        self.index.len()
    }

    /// Heap bytes held (records, links, index, free list).
    pub fn heap_bytes(&self) -> usize {
        self.recs.capacity() * std::mem::size_of::<Rec>()
            + self.next.capacity() * std::mem::size_of::<[u32; MAX_SIMS]>()
            + self.lru.capacity() * std::mem::size_of::<Link>()
            + self.free.capacity() * 4
            + self.by_slot.capacity() * 4
            + self.awaiting.capacity() * 4
            + self.rings.iter().map(|r| r.capacity() * 4).sum::<usize>()
            + self.index.heap_bytes()
            + self.sims.capacity() * std::mem::size_of::<Sim>()
    }

    /// Bytes per tracked table at most: record, links (FIFO: its share of
    /// the rings, which hold at most twice as many entries as there are
    /// tables tracked) and index (counted as 16 bytes: 4 a bucket at its
    /// lowest load, 1/4).
    pub fn bytes_per_table(&self) -> usize {
        let links = match self.policy {
            Policy::Fifo => {
                let sum: u64 = self.sims.iter().map(|s| u64::from(s.max)).sum();
                let max = u64::from(self.sims.last().map_or(1, |s| s.max));
                (4 * sum).div_ceil(max) as usize
            }
            Policy::Lru => std::mem::size_of::<Link>(),
            Policy::Sieve => std::mem::size_of::<[u32; MAX_SIMS]>(),
        };
        std::mem::size_of::<Rec>() + links + 16
    }

    /// Feeds one find of the cache; `slot` is where the real cache holds
    /// the table, if it does.
    #[inline(always)]
    fn feed_find(&mut self, offset: u64, slot: Option<u32>) {
        (self.find_fn)(self, offset, slot)
    }

    /// The real cache took its slot `slot` back (eviction).
    fn feed_remove(&mut self, slot: u32) {
        let Some(r) = self.by_slot.get_mut(slot as usize) else {
            return;
        };
        let r = std::mem::replace(r, NIL);
        if r != NIL {
            self.unpin(r);
        }
    }

    /// The real cache was emptied.
    fn feed_drain(&mut self) {
        for r in std::mem::take(&mut self.by_slot) {
            if r != NIL {
                self.unpin(r);
            }
        }
    }

    fn unpin(&mut self, r: u32) {
        let n = self.sims.len() as u32;
        let rec = at_mut(&mut self.recs, r);
        rec.inside &= !PINNED;
        // LRU keeps `inside` clear and tells stack membership by `seg`.
        if rec.inside == 0 && rec.seg == n {
            self.release(r);
        }
    }

    /// The record of `offset`, created (in no simulation) if needed.
    #[inline(always)]
    fn lookup(&mut self, offset: u64) -> u32 {
        let recs = &self.recs;
        match self.index.get(offset, |s| at(recs, s).offset) {
            Some(r) => r,
            None => self.new_rec(offset),
        }
    }

    /// The record of `offset`, which the real cache holds at `slot` if any.
    #[inline(always)]
    fn resolve(&mut self, offset: u64, slot: Option<u32>) -> u32 {
        match slot {
            Some(s) => match self.by_slot.get(s as usize) {
                Some(&r) if r != NIL => r,
                _ => self.pin(offset, s),
            },
            None => self.missed(offset),
        }
    }

    /// A real miss: the caller will commit the table and find it again.
    #[inline(never)]
    fn missed(&mut self, offset: u64) -> u32 {
        let r = self.lookup(offset);
        at_mut(&mut self.recs, r).inside |= AWAITED;
        self.awaiting.push(r);
        if self.awaiting.len() > MAX_AWAITING {
            let old = self.awaiting.remove(0);
            self.settle_one(old);
        }
        r
    }

    /// The find after a commit of `r`: true when it follows a real miss
    /// of `r` the simulations saw (then they must ignore it).
    #[cold]
    #[inline(never)]
    fn settle(&mut self, r: u32) -> bool {
        if at(&self.recs, r).inside & AWAITED == 0 {
            return false;
        }
        if let Some(i) = self.awaiting.iter().position(|&x| x == r) {
            self.awaiting.remove(i);
        }
        self.settle_one(r);
        true
    }

    /// Clears `r`'s AWAITED bit unless another miss of it still awaits.
    fn settle_one(&mut self, r: u32) {
        if !self.awaiting.contains(&r) {
            let n = self.sims.len() as u32;
            let rec = at_mut(&mut self.recs, r);
            rec.inside &= !AWAITED;
            if rec.inside == 0 && rec.seg == n {
                self.release(r);
            }
        }
    }

    #[cold]
    #[inline(never)]
    fn pin(&mut self, offset: u64, slot: u32) -> u32 {
        let r = self.lookup(offset);
        let s = slot as usize;
        if self.by_slot.len() <= s {
            self.by_slot.resize(s + 1, NIL);
        }
        self.by_slot[s] = r;
        at_mut(&mut self.recs, r).inside |= PINNED;
        r
    }

    #[inline(never)]
    fn on_find_fifo(&mut self, offset: u64, slot: Option<u32>) {
        if self.committed == offset {
            return self.refind(offset, slot);
        }
        self.finds += 1;
        let r = self.resolve(offset, slot);
        let missing = self.all & !at(&self.recs, r).inside;
        self.fifo_step(r, missing);
    }

    /// The FIFO simulations' step for a find of `r`; `missing` has the
    /// bits of those that miss. Whether a simulation hits is as random as
    /// the workload, so every full simulation (the usual state) is stepped
    /// without a branch on it: a hit writes back what it read.
    #[inline(always)]
    fn fifo_step(&mut self, r: u32, missing: u32) {
        let mut steps = missing | self.fifo_full;
        while steps != 0 {
            let k = steps.trailing_zeros();
            steps &= steps - 1;
            let bit = 1u32 << k;
            if self.fifo_full & bit == 0 {
                // Still filling, and a miss (only full rings step on hits).
                at_mut(&mut self.sims, k).misses += 1;
                self.insert_fifo(k as usize, r);
                continue;
            }
            let Advisor {
                sims, recs, rings, ..
            } = self;
            let sim = at_mut(sims, k);
            let ring = at_mut(rings, k);
            let m = (missing >> k) & 1;
            let all_if_miss = 0u32.wrapping_sub(m);
            sim.misses += u64::from(m);
            let pos = sim.pos;
            let victim = *at(ring, pos);
            *at_mut(ring, pos) = victim ^ ((victim ^ r) & all_if_miss);
            let next = pos + m;
            sim.pos = next & 0u32.wrapping_sub(u32::from(next as usize != ring.len()));
            let moved = bit & all_if_miss;
            at_mut(recs, victim).inside &= !moved;
            at_mut(recs, r).inside |= moved;
            if at(recs, victim).inside == 0 {
                self.release(victim);
                return self.fifo_step_rest(steps, r, missing);
            }
        }
    }

    #[cold]
    #[inline(never)]
    fn fifo_step_rest(&mut self, steps: u32, r: u32, missing: u32) {
        self.fifo_misses(r, missing & steps);
    }

    /// Out of line, so that a find every simulation hits saves no registers.
    #[inline(never)]
    fn fifo_misses(&mut self, r: u32, mut missing: u32) {
        while missing != 0 {
            let k = missing.trailing_zeros() as usize;
            missing &= missing - 1;
            at_mut(&mut self.sims, k as u32).misses += 1;
            self.insert_fifo(k, r);
        }
    }

    #[inline(never)]
    fn on_find_sieve(&mut self, offset: u64, slot: Option<u32>) {
        if self.committed == offset {
            return self.refind(offset, slot);
        }
        self.finds += 1;
        let r = self.resolve(offset, slot);
        let rec = at_mut(&mut self.recs, r);
        let inside = rec.inside;
        // A hit marks the table visited, except where it is fresh.
        rec.visited |= inside & !rec.fresh;
        let missing = self.all & !inside;
        if missing != 0 {
            self.sieve_misses(r, missing);
        }
    }

    /// Out of line, so that a find every simulation hits saves no registers.
    #[inline(never)]
    fn sieve_misses(&mut self, r: u32, mut missing: u32) {
        while missing != 0 {
            let k = missing.trailing_zeros() as usize;
            missing &= missing - 1;
            self.sieve_miss(k, r);
        }
    }

    /// FIFO's insert: the newcomer takes the oldest's place in the ring.
    #[inline(always)]
    fn insert_fifo(&mut self, k: usize, r: u32) {
        let bit = 1u32 << k;
        let ring = at_mut(&mut self.rings, k as u32);
        let sim = at_mut(&mut self.sims, k as u32);
        if (ring.len() as u64) < u64::from(sim.max) {
            ring.push(r);
            if ring.len() as u64 == u64::from(sim.max) {
                self.fifo_full |= bit;
            }
        } else {
            let pos = sim.pos as usize;
            let victim = std::mem::replace(at_mut(ring, pos as u32), r);
            sim.pos = if pos + 1 == ring.len() { 0 } else { sim.pos + 1 };
            let rec = at_mut(&mut self.recs, victim);
            rec.inside &= !bit;
            if rec.inside == 0 {
                self.release(victim);
            }
        }
        at_mut(&mut self.recs, r).inside |= bit;
    }

    /// Forgets a record no simulation holds any more.
    fn release(&mut self, r: u32) {
        let offset = at(&self.recs, r).offset;
        let recs = &self.recs;
        let removed = self.index.remove(offset, |s| at(recs, s).offset);
        debug_assert!(removed);
        self.free.push(r);
    }

    /// LRU is a stack algorithm (Mattson et al., 1970): a cache of size s
    /// holds the s most recently used tables, so one stack, most recent
    /// first, serves every size. `sims[k].tail` marks the last record
    /// simulation k holds (depth `sims[k].max - 1`), NIL while the stack is
    /// shorter; a record's `seg` is the smallest k holding it. A find of a
    /// record of segment j misses in simulations 0..j and moves the record
    /// to the top, pushing the last record of each of those down into the
    /// next segment: O(j), O(1) for a hit in the smallest simulation.
    #[inline(never)]
    fn on_find_lru(&mut self, offset: u64, slot: Option<u32>) {
        if self.committed == offset {
            return self.refind(offset, slot);
        }
        self.finds += 1;
        let r = self.resolve(offset, slot);
        self.lru_touch(r);
    }

    /// The caller's find right after its commit of `offset` (see
    /// `committed`): ignored when it follows a real miss the simulations
    /// saw; otherwise (a table the caller created, committed without a
    /// miss) the simulations that do not hold it take it in, as a miss,
    /// and those that do leave it as it is.
    #[cold]
    #[inline(never)]
    fn refind(&mut self, offset: u64, slot: Option<u32>) {
        self.committed = NO_OFFSET;
        self.finds += 1;
        let r = self.resolve(offset, slot);
        if self.settle(r) {
            return;
        }
        let n = self.sims.len() as u32;
        let rec = at(&self.recs, r);
        let missing = self.all & !rec.inside;
        match self.policy {
            Policy::Lru if rec.seg == n => self.lru_touch(r),
            Policy::Lru => {}
            Policy::Fifo if missing != 0 => self.fifo_misses(r, missing),
            Policy::Sieve if missing != 0 => self.sieve_misses(r, missing),
            Policy::Fifo | Policy::Sieve => {}
        }
    }

    /// LRU: a find of record `r` (see `on_find_lru`).
    #[inline(always)]
    fn lru_touch(&mut self, r: u32) {
        let n = self.sims.len() as u32;
        let j = at(&self.recs, r).seg;
        if r == self.lru_head {
            // The top of the stack: in every simulation (sizes >= 1).
            return;
        }
        let was_in_stack = j < n;
        // Disjoint borrows: no reloads through `self` between the stores.
        let Advisor {
            sims,
            recs,
            lru,
            lru_head,
            lru_tail,
            lru_len,
            lru_tailed,
            ..
        } = self;
        // Simulations 0..j miss. How far that goes is as random as the
        // workload, so every simulation whose segment has a last record
        // (the usual state) is stepped without a branch on it: a hit
        // writes back what it read.
        let tailed = *lru_tailed;
        for k in 0..tailed {
            let sim = at_mut(sims, k);
            let miss = u32::from(k < j);
            let b = sim.tail;
            debug_assert!(b != NIL);
            sim.misses += u64::from(miss);
            at_mut(recs, b).seg += miss;
            let above = at(lru, b).prev;
            let pushed_down = if above == NIL { r } else { above };
            sim.tail = b ^ ((b ^ pushed_down) & 0u32.wrapping_sub(miss));
        }
        // The simulations the stack does not fill yet miss only a table
        // that is not in the stack at all.
        for k in tailed..j {
            let sim = at_mut(sims, k);
            sim.misses += 1;
            // The stack reaches depth max - 1 only now: its current last
            // record (or `r` itself on an empty stack).
            if sim.max == *lru_len + 1 {
                sim.tail = if *lru_tail == NIL { r } else { *lru_tail };
                *lru_tailed = k + 1;
            }
        }
        if was_in_stack {
            let Link { prev, next } = *at(lru, r);
            let sim = at_mut(sims, j);
            if sim.tail == r {
                // r was the last record of its segment: the one above
                // takes its place.
                sim.tail = prev;
            }
            // r is not the top: there is a record above it.
            at_mut(lru, prev).next = next;
            match next {
                NIL => *lru_tail = prev,
                x => at_mut(lru, x).prev = prev,
            }
        } else {
            *lru_len += 1;
        }
        let head = *lru_head;
        *at_mut(lru, r) = Link {
            prev: NIL,
            next: head,
        };
        match head {
            NIL => *lru_tail = r,
            h => at_mut(lru, h).prev = r,
        }
        *lru_head = r;
        at_mut(recs, r).seg = 0;
        if self.lru_len > self.lru_cap {
            // The record pushed out of the largest simulation.
            let victim = self.lru_tail;
            debug_assert_eq!(at(&self.recs, victim).seg, n);
            self.lru_unlink(victim);
            self.lru_len -= 1;
            if at(&self.recs, victim).inside == 0 {
                self.release(victim);
            }
        }
    }

    #[inline(always)]
    fn lru_unlink(&mut self, r: u32) {
        let Link { prev, next } = *at(&self.lru, r);
        match prev {
            NIL => self.lru_head = next,
            p => at_mut(&mut self.lru, p).next = next,
        }
        match next {
            NIL => self.lru_tail = prev,
            n => at_mut(&mut self.lru, n).prev = prev,
        }
    }

    #[cold]
    #[inline(never)]
    fn new_rec(&mut self, offset: u64) -> u32 {
        let rec = Rec {
            offset,
            inside: 0,
            visited: 0,
            fresh: 0,
            seg: self.sims.len() as u32,
        };
        let r = match self.free.pop() {
            Some(r) => {
                *at_mut(&mut self.recs, r) = rec;
                r
            }
            None => {
                let r = u32::try_from(self.recs.len()).expect("tracked tables fit in u32");
                let len = self.recs.len();
                if len == self.recs.capacity() {
                    // Geometric growth that stops at the most records there
                    // can be (the largest simulation, the cache's own
                    // tables pinned, misses awaiting their commit, a
                    // newcomer), so no capacity is wasted.
                    let bound = self.lru_cap as usize + self.max_entries as usize + MAX_AWAITING + 1;
                    let want = (len * 2).max(16).min(bound).max(len + 1);
                    self.recs.reserve_exact(want - len);
                    match self.policy {
                        Policy::Fifo => {}
                        Policy::Lru => self.lru.reserve_exact(want - len),
                        Policy::Sieve => self.next.reserve_exact(want - len),
                    }
                }
                self.recs.push(rec);
                match self.policy {
                    Policy::Fifo => {}
                    Policy::Lru => self.lru.push(Link { prev: NIL, next: NIL }),
                    Policy::Sieve => self.next.push([NIL; MAX_SIMS]),
                }
                r
            }
        };
        let recs = &self.recs;
        self.index.insert(offset, r, |s| at(recs, s).offset);
        r
    }

    /// A miss of record `r` in SIEVE simulation k: evict when full (the
    /// hand sweeps from where it stopped, sparing visited tables once),
    /// then append `r`, which becomes the fresh entry.
    #[inline(always)]
    fn sieve_miss(&mut self, k: usize, r: u32) {
        let bit = 1u32 << k;
        // Disjoint borrows: no reloads through `self` between the stores.
        let Advisor { sims, recs, next, .. } = self;
        let sim = at_mut(sims, k as u32);
        sim.misses += 1;
        let mut released = NIL;
        if sim.len >= sim.max {
            // `sim.pos` is the record before the hand. Nothing is pinned:
            // within one lap every visited bit is cleared, so this ends.
            let (mut before, mut hand) = (sim.pos, sim.hand);
            loop {
                if hand == NIL {
                    before = NIL;
                    hand = sim.head;
                }
                let rec = at_mut(recs, hand);
                if rec.visited & bit == 0 {
                    break;
                }
                rec.visited &= !bit;
                before = hand;
                hand = *at(&at(next, hand)[..], k as u32);
            }
            let after = *at(&at(next, hand)[..], k as u32);
            if before == NIL {
                sim.head = after;
            } else {
                *at_mut(&mut at_mut(next, before)[..], k as u32) = after;
            }
            if sim.tail == hand {
                sim.tail = before;
            }
            sim.hand = after;
            sim.pos = before;
            sim.len -= 1;
            if sim.fresh == hand {
                sim.fresh = NIL;
            }
            let rec = at_mut(recs, hand);
            rec.inside &= !bit;
            rec.fresh &= !bit;
            if rec.inside == 0 {
                released = hand;
            }
        }
        *at_mut(&mut at_mut(next, r)[..], k as u32) = NIL;
        if sim.tail == NIL {
            sim.head = r;
        } else {
            *at_mut(&mut at_mut(next, sim.tail)[..], k as u32) = r;
        }
        sim.tail = r;
        if sim.fresh != NIL {
            at_mut(recs, sim.fresh).fresh &= !bit;
        }
        sim.fresh = r;
        sim.len += 1;
        let rec = at_mut(recs, r);
        rec.inside |= bit;
        rec.fresh |= bit;
        rec.visited &= !bit;
        if released != NIL {
            self.release(released);
        }
    }
}

/// The advisor as the core sees it: it follows the real cache's finds,
/// commits and evictions, and starts afresh when the maximum or the policy
/// changes (its sizes are fractions of the maximum).
impl Observer for Advisor {
    #[inline(always)]
    fn on_find(&mut self, offset: u64, slot: Option<u32>) {
        self.feed_find(offset, slot)
    }
    #[inline(always)]
    fn on_commit(&mut self, offset: u64) {
        // See `committed`.
        self.committed = offset;
    }
    #[inline(always)]
    fn on_remove(&mut self, slot: u32) {
        self.feed_remove(slot)
    }
    fn on_drain(&mut self) {
        self.feed_drain()
    }
    fn on_resize(&mut self, max_entries: u32, policy: Policy, misses: u64) {
        *self = Advisor::new(max_entries, policy, misses);
    }
}

/// The observer of a cache that can be advised: the advisor while it is
/// on. Off, the core's every call on it is one untaken branch.
pub type AdvisorSlot = Option<Box<Advisor>>;

/// An observer that holds an [`AdvisorSlot`]: the slot alone, or the slot
/// beside another observer (the FFI layer's caches have one more).
pub trait HasAdvisor: Observer {
    /// The slot.
    fn advisor_slot(&self) -> &AdvisorSlot;
    /// The slot, to turn the advisor on or off.
    fn advisor_slot_mut(&mut self) -> &mut AdvisorSlot;
}

impl HasAdvisor for AdvisorSlot {
    fn advisor_slot(&self) -> &AdvisorSlot {
        self
    }
    fn advisor_slot_mut(&mut self) -> &mut AdvisorSlot {
        self
    }
}

impl<B: Observer> HasAdvisor for (AdvisorSlot, B) {
    fn advisor_slot(&self) -> &AdvisorSlot {
        &self.0
    }
    fn advisor_slot_mut(&mut self) -> &mut AdvisorSlot {
        &mut self.0
    }
}

/// A cache that can be advised.
pub type Advised<H, O = AdvisorSlot> = Cache<H, O>;

/// Turns the advisor of `cache` on (started afresh if it was off) or off.
pub fn set_advisor<H: Copy, O: HasAdvisor>(cache: &mut Advised<H, O>, on: bool) {
    let (max, policy, misses) = (cache.max_entries(), cache.policy(), cache.stats().misses);
    let slot = cache.observer_mut().advisor_slot_mut();
    match (on, slot.is_some()) {
        (true, false) => *slot = Some(Box::new(Advisor::new(max, policy, misses))),
        (false, true) => *slot = None,
        _ => {}
    }
}

/// The advisor of `cache`, when on.
pub fn advisor<H: Copy, O: HasAdvisor>(cache: &Advised<H, O>) -> Option<&Advisor> {
    cache.observer().advisor_slot().as_deref()
}

/// One point of the miss curve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    /// Maximum number of cached tables.
    pub size: u32,
    /// Misses (table reads) at that size since the advisor started.
    pub misses: u64,
}

/// Misses `cache` would have had since its advisor started with a
/// maximum of `size`; `None` when the advisor is off or does not track
/// that size. At the cache's own maximum: the misses it had.
pub fn predict_misses<H: Copy, O: HasAdvisor>(cache: &Advised<H, O>, size: u32) -> Option<u64> {
    let a = advisor(cache)?;
    if size == a.max_entries {
        Some(cache.stats().misses - a.base_misses)
    } else {
        a.simulated_misses(size)
    }
}

/// The miss curve of `cache`, ascending sizes, its own maximum included;
/// empty when the advisor is off.
pub fn miss_curve<H: Copy, O: HasAdvisor>(cache: &Advised<H, O>) -> Vec<Point> {
    let Some(a) = advisor(cache) else {
        return Vec::new();
    };
    let mut sizes = a.sizes();
    sizes.push(a.max_entries);
    sizes.sort_unstable();
    sizes
        .into_iter()
        .filter_map(|size| {
            Some(Point {
                size,
                misses: predict_misses(cache, size)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The caller's read path on a real cache: find; on a miss commit and
    /// find again. Returns true on a miss.
    fn read<O: Observer>(c: &mut Cache<u64, O>, off: u64) -> bool {
        if c.find(off).is_some() {
            return false;
        }
        c.commit(off, off, |_| false, |_| {});
        assert!(c.find(off).is_some());
        true
    }

    fn stream(n: usize, tables: u64, seed: u64) -> Vec<u64> {
        let mut x = seed;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // A hot set of 8 half the time, a loop over all otherwise.
                let t = if x & 1 == 0 {
                    x % 8
                } else {
                    (i as u64 / 3) % tables
                };
                (t + 1) << 16
            })
            .collect()
    }

    #[test]
    fn sizes_cover_the_contract() {
        assert_eq!(tracked_sizes(50), vec![25, 75, 100, 200, 400]);
        assert_eq!(tracked_sizes(1), vec![2, 4, 8]);
        assert_eq!(tracked_sizes(3), vec![1, 4, 6, 12, 24]);
        assert_eq!(tracked_sizes(2), vec![1, 3, 4, 8, 16]);
        let big = tracked_sizes(300_000);
        assert_eq!(*big.last().unwrap(), MAX_TRACKED);
        assert!(big.contains(&150_000) && big.contains(&600_000));
        let huge = tracked_sizes(MAX_TRACKED);
        assert!(huge.iter().all(|&s| s < MAX_TRACKED), "{huge:?}");
    }

    #[test]
    fn predictions_equal_real_caches_exactly() {
        for policy in Policy::ALL {
            let offs = stream(if cfg!(miri) { 600 } else { 20_000 }, 120, 99);
            let mut c: Advised<u64> = Cache::new(20, policy);
            set_advisor(&mut c, true);
            for &o in &offs {
                read(&mut c, o);
            }
            for size in advisor(&c).unwrap().sizes() {
                let mut real: Cache<u64> = Cache::new(size, policy);
                let misses = offs.iter().filter(|&&o| read(&mut real, o)).count() as u64;
                assert_eq!(predict_misses(&c, size), Some(misses), "{policy:?} size {size}");
            }
            assert_eq!(predict_misses(&c, 20), Some(c.stats().misses));
            assert_eq!(predict_misses(&c, 21), None);
        }
    }

    #[test]
    fn memory_is_bounded_by_the_largest_size() {
        let mut c: Advised<u64> = Cache::new(10, Policy::Sieve);
        set_advisor(&mut c, true);
        for i in 0..if cfg!(miri) { 400u64 } else { 100_000 } {
            read(&mut c, (i % 5000 + 1) << 16);
        }
        let a = advisor(&c).unwrap();
        // The largest simulation, plus the cache's own 10 (pinned).
        assert!(a.tracked_tables() <= 90, "{}", a.tracked_tables());
        assert!(a.recs.len() <= 91, "one more while a newcomer waits for room");
        assert_eq!(a.bytes_per_table(), 24 + 5 * 4 + 16);
        // A caller whose reads all fail: misses never committed.
        let mut c: Advised<u64> = Cache::new(10, Policy::Lru);
        set_advisor(&mut c, true);
        for i in 0..if cfg!(miri) { 400u64 } else { 2_000 } {
            c.find((i + 1) << 16);
        }
        let a = advisor(&c).unwrap();
        let bound = 80 + MAX_AWAITING;
        assert!(a.tracked_tables() <= bound, "{}", a.tracked_tables());
        assert_eq!(a.awaiting.len(), MAX_AWAITING);
    }

    #[test]
    fn restart_and_switch() {
        let mut c: Advised<u64> = Cache::new(10, Policy::Fifo);
        assert!(predict_misses(&c, 10).is_none(), "off by default");
        set_advisor(&mut c, true);
        for i in 0..100u64 {
            read(&mut c, (i % 30 + 1) << 16);
        }
        assert_eq!(predict_misses(&c, 10), Some(c.stats().misses));
        assert!(predict_misses(&c, 40).unwrap() < c.stats().misses);
        c.set_max_entries(20, |_| false, |_| {});
        assert_eq!(predict_misses(&c, 20), Some(0), "restarted");
        assert_eq!(predict_misses(&c, 40), Some(0));
        assert_eq!(predict_misses(&c, 160), Some(0));
        read(&mut c, 999 << 16);
        assert_eq!(predict_misses(&c, 160), Some(1));
        c.set_policy(Policy::Lru);
        assert_eq!(predict_misses(&c, 160), Some(0));
        assert_eq!(advisor(&c).unwrap().finds(), 0);
        set_advisor(&mut c, false);
        assert!(predict_misses(&c, 20).is_none());
    }
}
