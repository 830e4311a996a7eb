// SPDX-License-Identifier: LGPL-2.1-or-later
//! The process budget's shares (docs/sizing.md, "Sharing one budget"):
//! one record per auto cache, behind one fork-safe lock, taken only when a
//! cache decides its size (every few thousand of its lookups), joins,
//! leaves, or gives back tables after its grant was lowered. The hit path
//! reads only its own cache's grant word.
//!
//! Each cache's size is its grant, and never more than the bytes left free
//! by the others' current sizes: a cache whose grant went up grows only
//! into what the caches whose grants went down have given back (each does
//! at its next call), so the current sizes never add up to more than the
//! budget (tables that requests hold aside, which are never evicted).

use crate::config;
use crate::sizing::budget::{share, worth_changing, Demand, MIN_GAIN};
use crate::stderr::write_line;
use crate::sync::Locked;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

/// Finds of the period every demand's `finds` covers: rates are kept as
/// fractions of the process's finds, and scaled by this for the budget.
const PERIOD: f64 = (1u64 << 20) as f64;

/// A cache's record.
struct Member {
    id: u64,
    /// The cache's curve at its last decision (empty before the first:
    /// its current size is then reserved, not shared).
    misses: Vec<u64>,
    /// The cache's share of the process's finds, smoothed.
    rate: f64,
    /// Its finds and the process's at its last decision.
    finds_then: u64,
    process_then: u64,
    /// Its finds from its last decision to its next: until the process
    /// has made more than that many finds since, its rate stands; after,
    /// it made fewer than this many in that time ([`Member::rate_now`]).
    until_next: u64,
    per_table: u64,
    /// The size it wants on its own (its size without a budget).
    alone: u32,
    /// Its maximum now.
    size: u32,
    /// Its grant, read by its own calls.
    grant: Arc<AtomicU32>,
}

impl Member {
    /// Its rate as the pool weighs it `process_finds` into the process's
    /// time: the smoothed share of its last decision, but never more than
    /// it can still be. A cache decides as soon as it has made
    /// `until_next` finds since its last decision, so while it has not,
    /// its share of the finds since is below `until_next / elapsed`: a
    /// cache that stops (or slows down) loses its weight as the others
    /// decide, in logical time, and gives back at its next call.
    fn rate_now(&self, process_finds: u64) -> f64 {
        let elapsed = process_finds.saturating_sub(self.process_then);
        if elapsed <= self.until_next {
            return self.rate;
        }
        self.rate.min(self.until_next as f64 / elapsed as f64)
    }
}

struct Pool {
    /// `QED_L2_CACHE_MEMORY` until `set_budget` (read at the first join).
    budget: Option<u64>,
    budget_read: bool,
    members: Vec<Member>,
    next_id: u64,
    /// Finds the members reported, summed: the process's clock.
    process_finds: u64,
}

static POOL: Locked<Pool> = Locked::new(Pool {
    budget: None,
    budget_read: false,
    members: Vec::new(),
    next_id: 1,
    process_finds: 0,
});

/// Runs `f` on the pool with its lock held. A lock taken over in a fork
/// child from a thread the child does not have may guard a half-updated
/// list: the child starts with none (its inherited caches then size
/// themselves alone until they are freed).
fn with_pool<R>(f: impl FnOnce(&mut Pool) -> R) -> R {
    POOL.with(|p, stolen| {
        if stolen {
            std::mem::forget(std::mem::take(&mut p.members));
        }
        f(p)
    })
}

/// The too-small-budget message is printed once per process.
static REPORTED_SMALL: AtomicBool = AtomicBool::new(false);

/// An auto cache's place in the pool.
#[derive(Debug)]
pub struct Share {
    id: u64,
    grant: Arc<AtomicU32>,
}

impl Share {
    /// True when the cache's grant is below `max`: it must give back.
    #[inline(always)]
    pub fn lowered(&self, max: u32) -> bool {
        self.grant.load(Ordering::Relaxed) < max
    }
}

/// What a cache brings to a decision.
pub struct Decision<'a> {
    /// Its curve, `misses[s]` for `s` in `0..=cap`.
    pub misses: &'a [u64],
    /// Its lookups counted since it started.
    pub finds: u64,
    /// Bytes per table.
    pub per_table: u64,
    /// The size it wants on its own under the cap (its size when there is
    /// no budget). With one, its grant may go past it, up to where its
    /// curve stops falling: the budget is what the operator allows.
    pub alone: u32,
    /// Its finds until it decides again.
    pub until_next: u64,
}

/// Sets the process budget (`None`: no limit); returns the one before.
pub fn set_budget(budget: Option<u64>) -> Option<u64> {
    with_pool(|p| {
        read_budget(p);
        std::mem::replace(&mut p.budget, budget)
    })
}

/// The process budget.
pub fn budget() -> Option<u64> {
    with_pool(|p| {
        read_budget(p);
        p.budget
    })
}

fn read_budget(p: &mut Pool) {
    if !p.budget_read {
        p.budget_read = true;
        p.budget = config::get().memory;
    }
}

/// A new auto cache of `per_table` bytes a table that would start at
/// `start` tables: its share, and the size it starts at (fewer when the
/// budget's free bytes hold fewer, at least one).
pub fn join(per_table: u64, start: u32) -> (Share, u32) {
    with_pool(|p| {
        read_budget(p);
        p.join(per_table, start)
    })
}

/// The cache leaves (it is freed or fixed): its bytes are free.
pub fn leave(share: Share) {
    with_pool(|p| p.members.retain(|m| m.id != share.id));
}

/// The cache gave back down to its grant: returns the grant, now its size.
pub fn give_back(share: &Share) -> u32 {
    with_pool(|p| p.give_back(share))
}

/// The cache decides its size: records its curve, shares the budget again
/// (grants change only when that saves more than [`MIN_GAIN`] of the
/// misses), and returns its new size. Without a budget: what it wants
/// alone.
pub fn decide(share: &Share, d: Decision) -> u32 {
    with_pool(|p| p.decide(share, d))
}

impl Pool {
    fn give_back(&mut self, share: &Share) -> u32 {
        let grant = share.grant.load(Ordering::Relaxed);
        if let Some(m) = self.members.iter_mut().find(|m| m.id == share.id) {
            m.size = grant;
        }
        grant
    }

    fn join(&mut self, per_table: u64, start: u32) -> (Share, u32) {
        let size = match self.budget {
            Some(b) => start.min(free_tables(self, b, None, per_table)).max(1),
            None => start,
        };
        let id = self.next_id;
        self.next_id += 1;
        let grant = Arc::new(AtomicU32::new(size));
        self.members.push(Member {
            id,
            misses: Vec::new(),
            rate: 0.0,
            finds_then: 0,
            process_then: self.process_finds,
            until_next: 0,
            per_table,
            alone: size,
            size,
            grant: grant.clone(),
        });
        (Share { id, grant }, size)
    }

    fn decide(&mut self, share: &Share, d: Decision) -> u32 {
        let p = self;
        let Some(i) = p.members.iter().position(|m| m.id == share.id) else {
            return d.alone;
        };
        let reported = d.finds - p.members[i].finds_then;
        p.process_finds += reported;
        let elapsed = p.process_finds - p.members[i].process_then;
        {
            let m = &mut p.members[i];
            let rate = if elapsed > 0 {
                reported as f64 / elapsed as f64
            } else {
                1.0
            };
            m.rate = if m.misses.is_empty() {
                rate
            } else {
                (m.rate + rate) / 2.0
            };
            m.finds_then = d.finds;
            m.process_then = p.process_finds;
            m.until_next = d.until_next;
            m.misses.clear();
            m.misses.extend_from_slice(d.misses);
            m.per_table = d.per_table;
            m.alone = d.alone.max(1);
        }
        let Some(budget) = p.budget else {
            let m = &mut p.members[i];
            m.size = m.alone;
            m.grant.store(m.size, Ordering::Relaxed);
            return m.size;
        };
        rebalance(p, budget);
        let m = &p.members[i];
        let grant = m.grant.load(Ordering::Relaxed);
        // Grow only into bytes the others have given back.
        let room = free_tables(p, budget, Some(i), m.per_table);
        let size = grant.min(room).max(1);
        p.members[i].size = size;
        size
    }
}

/// Tables of `per_table` bytes left in `budget` by every member's current
/// size but member `except`'s.
fn free_tables(p: &Pool, budget: u64, except: Option<usize>, per_table: u64) -> u32 {
    let used: u128 = p
        .members
        .iter()
        .enumerate()
        .filter(|&(j, _)| Some(j) != except)
        .map(|(_, m)| u128::from(m.size) * u128::from(m.per_table))
        .sum();
    let free = u128::from(budget).saturating_sub(used) / u128::from(per_table.max(1));
    free.min(u128::from(u32::MAX)) as u32
}

/// Shares what the members without a curve yet leave of `budget` among
/// those with one, by equal marginal gain, and publishes the new grants
/// when they are worth the change.
fn rebalance(p: &mut Pool, budget: u64) {
    let reserved: u128 = p
        .members
        .iter()
        .filter(|m| m.misses.is_empty())
        .map(|m| u128::from(m.size) * u128::from(m.per_table))
        .sum();
    let shared = u128::from(budget)
        .saturating_sub(reserved)
        .min(u128::from(u64::MAX)) as u64;
    let with_curve: Vec<&Member> = p.members.iter().filter(|m| !m.misses.is_empty()).collect();
    let demands: Vec<Demand> = with_curve
        .iter()
        .map(|m| Demand {
            misses: &m.misses,
            finds: (m.rate_now(p.process_finds) * PERIOD) as u64,
            table_bytes: m.per_table,
            cap: None,
        })
        .collect();
    let proposed = share(&demands, shared);
    // Said once, and only when every member has measured its tables (a
    // member that has not decided yet counts with an assumed table size).
    let all_measured = with_curve.len() == p.members.len();
    if proposed.over_budget && all_measured && !REPORTED_SMALL.swap(true, Ordering::Relaxed) {
        write_line(format_args!(
            "qed-l2-cache: QED_L2_CACHE_MEMORY={budget} bytes is less than one table for each of the \
             {} auto caches; each keeps one table",
            p.members.len()
        ));
    }
    let current: Vec<u32> = with_curve
        .iter()
        .map(|m| m.grant.load(Ordering::Relaxed))
        .collect();
    if worth_changing(&demands, shared, &current, &proposed, MIN_GAIN) {
        for (m, &t) in with_curve.iter().zip(&proposed.tables) {
            m.grant.store(t, Ordering::Relaxed);
        }
    }
}

/// At unload: the pool's memory goes (no cache is left).
pub fn release_at_unload() {
    with_pool(|p| p.members = Vec::new());
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: u64 = 256 * 1024;

    fn pool(tables: u64) -> Pool {
        Pool {
            budget: Some(tables * TABLE),
            budget_read: true,
            members: Vec::new(),
            next_id: 1,
            process_finds: 0,
        }
    }

    /// A curve of diminishing returns over `n` tables (misses fall as
    /// 1 - sqrt(s / n)), a window of 16,384 finds.
    fn skewed(n: u64, cap: u64) -> Vec<u64> {
        const W: f64 = 16_384.0;
        (0..=cap)
            .map(|s| (W * (1.0 - (s.min(n) as f64 / n as f64).sqrt())) as u64)
            .collect()
    }

    fn decide_at(p: &mut Pool, s: &Share, misses: &[u64], finds: u64) -> u32 {
        p.decide(
            s,
            Decision {
                misses,
                finds,
                per_table: TABLE,
                alone: 100,
                until_next: 2048,
            },
        )
    }

    fn grant(s: &Share) -> u32 {
        s.grant.load(Ordering::Relaxed)
    }

    #[test]
    fn a_cache_that_stops_loses_its_share_to_one_that_goes_on() {
        let mut p = pool(100);
        let curve = skewed(100, 100);
        let (a, _) = p.join(TABLE, 50);
        let (b, _) = p.join(TABLE, 50);
        // Both look up at the same rate: half the budget each.
        for k in 1..=8 {
            decide_at(&mut p, &a, &curve, 2048 * k);
            decide_at(&mut p, &b, &curve, 2048 * k);
        }
        assert!((40..=60).contains(&grant(&a)), "a {} b {}", grant(&a), grant(&b));
        // `a` stops. Each decision of `b` makes `a`'s share of the
        // process's finds smaller than `a`'s next decision would need.
        for k in 9..=40 {
            decide_at(&mut p, &b, &curve, 2048 * k);
        }
        assert!(grant(&a) < 10, "a kept {} of 100 tables", grant(&a));
        assert!(grant(&b) > 90, "b was granted {}", grant(&b));
        // `b` grows only into what `a` gave back, at `a`'s next call.
        let before = p.members[1].size;
        assert!(before <= 100 - p.members[0].size);
        assert_eq!(p.give_back(&a), grant(&a));
        let after = decide_at(&mut p, &b, &curve, 2048 * 41);
        assert!(after > before, "{after} after a gave back, {before} before");
        let sizes: u32 = p.members.iter().map(|m| m.size).sum();
        assert!(sizes <= 100, "sizes add up to {sizes}");
    }
}
