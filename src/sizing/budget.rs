// SPDX-License-Identifier: LGPL-2.1-or-later
//! How the auto caches of a process share one memory budget
//! (`QED_L2_CACHE_MEMORY`; docs/sizing.md, "Sharing one budget").
//!
//! The rule is equal marginal gain: the next byte goes to the cache whose
//! next table saves the most table reads per find of the whole process. A
//! cache's finds over a period shared by all of them are its weight, so a
//! busy image's tables are worth more than an idle one's, and the inputs
//! are integer counts: the same counts give the same grants on every run.
//!
//! Marginal gain alone is blind to cliffs: a loop over 120 tables saves
//! nothing at 100 and everything at 120, so no single next table is ever
//! worth buying. [`share`] therefore judges each curve by its lower convex
//! hull, where the cliff becomes one segment that is bought whole, at its
//! average gain. On the hulls, the greedy order (best gain per byte first)
//! is optimal for the convexified problem, up to the segments that do not
//! fit (each gets a second pass that pays for it whole); [`exact_split`] gives the true optimum on the real curves,
//! for tests and benchmarks, and [`equal_split`] the naive baseline.
//! [`worth_changing`] keeps grants in force when a new split would gain
//! too little, so caches touch shared state only when a grant changes.

#![forbid(unsafe_code)]

/// What the budget knows of one auto cache.
#[derive(Debug, Clone, Copy)]
pub struct Demand<'a> {
    /// The cache's miss curve over its window: `misses[s]` is how many of
    /// the window's finds would have missed with at most `s` tables, for
    /// `s` = 0 to the largest size tracked. `misses[0]` is the window's
    /// finds (with no table, every find misses). Expected not to rise with
    /// `s`, but not relied on: a rising stretch is treated as flat.
    pub misses: &'a [u64],
    /// The cache's finds over the period every demand's `finds` covers:
    /// its weight in process time.
    pub finds: u64,
    /// Bytes one table of this cache takes (the table's memory, its entry
    /// and the library's bookkeeping); caches may differ.
    pub table_bytes: u64,
    /// At most this many tables, besides the curve's extent; `None`, no cap
    /// of its own. A cap below 1 counts as 1: the floor wins.
    pub cap: Option<u32>,
}

impl Demand<'_> {
    /// The largest grant: the curve's extent, within the cap, at least 1.
    pub fn extent(&self) -> u32 {
        let tracked = u32::try_from(self.misses.len().saturating_sub(1)).unwrap_or(u32::MAX);
        tracked.min(self.cap.unwrap_or(u32::MAX)).max(1)
    }

    /// The window's misses at `tables` tables (the last point tracked
    /// beyond the curve's end; 0 for an empty curve).
    fn window_misses(&self, tables: u32) -> u64 {
        let last = self.misses.len().saturating_sub(1);
        self.misses.get((tables as usize).min(last)).copied().unwrap_or(0)
    }

    /// How many of the period's finds one miss of the window stands for:
    /// the period's finds over the window's (0 for an empty window).
    fn weight(&self) -> f64 {
        match self.misses.first() {
            Some(&lookups) if lookups > 0 => self.finds as f64 / lookups as f64,
            _ => 0.0,
        }
    }

    /// The misses the cache would have had over the period with `tables`
    /// tables.
    pub fn period_misses(&self, tables: u32) -> f64 {
        self.weight() * self.window_misses(tables) as f64
    }
}

/// Tables granted to each cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// In the order of the demands; each at least 1 and at most the
    /// demand's [`Demand::extent`].
    pub tables: Vec<u32>,
    /// Their bytes: the sum of tables x table bytes.
    pub bytes: u128,
    /// The budget cannot hold one table per cache: every cache has its
    /// floor of one, and `bytes` is more than the budget. The caller says
    /// so once; nothing else ever passes the budget.
    pub over_budget: bool,
}

impl Split {
    fn new(demands: &[Demand], tables: Vec<u32>, budget: u64) -> Split {
        let bytes = bytes_of(demands, &tables);
        Split {
            tables,
            bytes,
            over_budget: bytes > u128::from(budget),
        }
    }

    /// Every cache at its floor of one table.
    fn floors(demands: &[Demand], budget: u64) -> Split {
        Split::new(demands, vec![1; demands.len()], budget)
    }
}

/// The bytes of `tables` tables of each demand.
pub fn bytes_of(demands: &[Demand], tables: &[u32]) -> u128 {
    demands
        .iter()
        .zip(tables)
        .map(|(d, &t)| u128::from(t) * u128::from(d.table_bytes))
        .sum()
}

/// The misses per find of all these caches together over the period,
/// had each had `tables[i]` tables: what the split costs in table reads.
pub fn misses_per_find(demands: &[Demand], tables: &[u32]) -> f64 {
    let finds: f64 = demands.iter().map(|d| d.finds as f64).sum();
    if finds == 0.0 {
        return 0.0;
    }
    let misses: f64 = demands.iter().zip(tables).map(|(d, &t)| d.period_misses(t)).sum();
    misses / finds
}

/// The sizes at the corners of the lower convex hull of the curve's points
/// from 1 table to `extent`, up to the first size where the hull stops
/// falling: beyond it no table saves anything (a rising stretch is flat).
/// The first corner is 1, the floor; collinear points are not corners.
fn hull_corners(d: &Demand) -> Vec<u32> {
    let y = |s: u32| i128::from(d.window_misses(s));
    let mut hull: Vec<u32> = Vec::new();
    for s in 1..=d.extent() {
        while let [.., o, a] = hull[..] {
            // Pop `a` unless o -> a -> s turns left (counterclockwise).
            let cross = i128::from(a - o) * (y(s) - y(o)) - (y(a) - y(o)) * i128::from(s - o);
            if cross > 0 {
                break;
            }
            hull.pop();
        }
        hull.push(s);
    }
    // Convex: once a segment does not fall, none after it does.
    let falling = hull.windows(2).take_while(|w| y(w[1]) < y(w[0])).count();
    hull.truncate(falling + 1);
    hull
}

/// One segment of a cache's hull: `to - from` more tables, bought whole
/// or (when they do not fit) in part.
#[derive(Debug, Clone, Copy)]
struct Segment {
    cache: usize,
    from: u32,
    to: u32,
    /// Misses of the period saved per byte, on the hull.
    gain: f64,
}

/// The hull segments of every demand, best gain per byte first; ties go to
/// the earlier demand, then the smaller size.
fn segments(demands: &[Demand]) -> Vec<Segment> {
    let mut all = Vec::new();
    for (cache, d) in demands.iter().enumerate() {
        let weight = d.weight();
        if weight == 0.0 {
            continue;
        }
        let mut previous = f64::INFINITY;
        for w in hull_corners(d).windows(2) {
            let saved = (d.window_misses(w[0]) - d.window_misses(w[1])) as f64;
            let per_table = weight * saved / f64::from(w[1] - w[0]);
            // Exactly, each segment's gain is below the one before it;
            // rounding of huge counts must not reorder them.
            let gain = (per_table / d.table_bytes as f64).min(previous);
            previous = gain;
            all.push(Segment {
                cache,
                from: w[0],
                to: w[1],
                gain,
            });
        }
    }
    all.sort_by(|a, b| {
        b.gain
            .total_cmp(&a.gain)
            .then(a.cache.cmp(&b.cache))
            .then(a.from.cmp(&b.from))
    });
    all
}

/// The split by equal marginal gain: every cache starts at its floor of
/// one table, then hull segments are bought best gain per byte first while
/// they fit. A segment that does not fit whole is bought in part: up to
/// the size, among those that fit, where the real curve is lowest (for a
/// cliff, none of it: part of a cliff saves nothing), and that cache gets
/// no more; the others go on with the bytes left.
///
/// That last rule is where greedy falls short of the optimum: a cliff met
/// when the budget is nearly spent is refused, though displacing tables
/// already bought elsewhere might pay for it. So for each segment that did
/// not fit, the greedy runs once more with that segment's cache holding
/// it from the start, and the split with the fewest misses on the real
/// curves wins (the first one on a tie).
///
/// At most `budget` bytes, except when one table per cache is already more
/// ([`Split::over_budget`]). Any one cache may get the whole budget.
/// Cost: sorting the P hull segments of all curves (at most their points),
/// O(P log P), then one O(P) pass, plus one per cache whose segment did
/// not fit.
pub fn share(demands: &[Demand], budget: u64) -> Split {
    let floors = Split::floors(demands, budget);
    if floors.over_budget {
        return floors;
    }
    let segments = segments(demands);
    let (mut best, refused) = greedy(demands, &segments, budget, floors.tables);
    let mut best_misses = misses_per_find(demands, &best.tables);
    for seg in refused {
        let mut start = vec![1; demands.len()];
        start[seg.cache] = seg.to;
        if bytes_of(demands, &start) > u128::from(budget) {
            continue;
        }
        let (split, _) = greedy(demands, &segments, budget, start);
        let misses = misses_per_find(demands, &split.tables);
        if misses < best_misses {
            (best, best_misses) = (split, misses);
        }
    }
    best
}

/// One greedy pass over `segments` (best first) from the grants `start`,
/// which fit the budget; also the segments that did not fit whole.
fn greedy(demands: &[Demand], segments: &[Segment], budget: u64, start: Vec<u32>) -> (Split, Vec<Segment>) {
    let mut tables = start;
    let mut left = u128::from(budget) - bytes_of(demands, &tables);
    let mut open = vec![true; demands.len()];
    let mut refused = Vec::new();
    for seg in segments {
        // A segment of a cache that already holds more (a forced start)
        // or that got no more (a refused segment) is passed over.
        if !open[seg.cache] || tables[seg.cache] != seg.from {
            continue;
        }
        let d = &demands[seg.cache];
        let table = u128::from(d.table_bytes);
        let whole = u128::from(seg.to - seg.from) * table;
        let to = if whole <= left {
            seg.to
        } else {
            open[seg.cache] = false;
            refused.push(*seg);
            // `whole > left` so `table > 0`.
            let fit = u32::try_from(left / table)
                .unwrap_or(u32::MAX)
                .min(seg.to - seg.from);
            (seg.from..=seg.from + fit)
                .min_by_key(|&s| d.window_misses(s))
                .unwrap_or(seg.from)
        };
        left -= u128::from(to - seg.from) * table;
        tables[seg.cache] = to;
    }
    (Split::new(demands, tables, budget), refused)
}

/// The same bytes for every cache, whatever its curve: each has its floor
/// of one table, and the bytes left are divided evenly, each cache taking
/// as many more tables as its part holds, up to its extent. What a process
/// gets by dividing the budget by hand; never more than the budget, except
/// for the floors ([`Split::over_budget`]).
pub fn equal_split(demands: &[Demand], budget: u64) -> Split {
    let floors = Split::floors(demands, budget);
    if floors.over_budget {
        return floors;
    }
    let each = (u128::from(budget) - floors.bytes) / (demands.len().max(1) as u128);
    let tables = demands
        .iter()
        .map(|d| {
            let more = each.checked_div(u128::from(d.table_bytes)).unwrap_or(u128::MAX);
            let more = u32::try_from(more).unwrap_or(u32::MAX);
            more.saturating_add(1).min(d.extent())
        })
        .collect();
    Split::new(demands, tables, budget)
}

/// The largest byte unit every demand's table bytes is a multiple of (their
/// greatest common divisor; 1 when there is none): with it
/// [`exact_split`] is exact. When all caches have the same table size it
/// is that size, and the dynamic program counts tables.
pub fn exact_unit(demands: &[Demand]) -> u64 {
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    demands.iter().fold(0, |g, d| gcd(g, d.table_bytes)).max(1)
}

/// Cells the dynamic program of [`exact_split`] may hold (8 bytes each).
pub const EXACT_MAX_CELLS: u64 = 1 << 26;

/// The best static split, by dynamic programming over the caches and the
/// bytes beyond the floors, counted in `unit` bytes, on the real curves
/// (not their hulls): the grants that minimise the period's misses under
/// the budget. Offline only, for tests and benchmarks: time O(N x C x D)
/// for N caches, C units of budget and D sizes per curve.
///
/// A table costs its bytes rounded up to whole units, and the budget is
/// rounded down, so the result always fits the budget; with
/// [`exact_unit`] (or any unit dividing every table size) it is exact, and
/// a coarser unit trades exactness for a smaller table. `None` when the
/// floors fit the budget in bytes but not in units, or when the table would
/// pass [`EXACT_MAX_CELLS`]. When the floors pass the budget, the floors
/// (as [`share`]). Ties go to the smaller grant, the later cache first.
pub fn exact_split(demands: &[Demand], budget: u64, unit: u64) -> Option<Split> {
    let floors = Split::floors(demands, budget);
    if floors.over_budget {
        return Some(floors);
    }
    let unit = unit.max(1);
    let cost: Vec<u64> = demands.iter().map(|d| d.table_bytes.div_ceil(unit)).collect();
    let floor_units: u64 = cost.iter().sum();
    let spare = (budget / unit).checked_sub(floor_units)?;
    // Never more units than every cache at its extent could use.
    let usable: u64 = demands
        .iter()
        .zip(&cost)
        .map(|(d, &c)| u64::from(d.extent() - 1).saturating_mul(c))
        .fold(0, u64::saturating_add);
    let spare = spare.min(usable);
    let width = spare.checked_add(1)?;
    if width.checked_mul(demands.len() as u64)? > EXACT_MAX_CELLS {
        return None;
    }
    let width = width as usize;
    // best[c]: the most misses saved with at most c spare units, by the
    // caches seen so far; choice[i][c]: cache i's grant there.
    let mut best = vec![0.0f64; width];
    let mut choice = vec![vec![1u32; width]; demands.len()];
    for (i, d) in demands.iter().enumerate() {
        let base = d.period_misses(1);
        let mut next = best.clone();
        for s in 2..=d.extent() {
            let units = u64::from(s - 1) * cost[i];
            if units > spare {
                break;
            }
            let saved = base - d.period_misses(s);
            for c in units as usize..width {
                let v = best[c - units as usize] + saved;
                if v > next[c] {
                    next[c] = v;
                    choice[i][c] = s;
                }
            }
        }
        best = next;
    }
    let mut tables = vec![1; demands.len()];
    let mut c = width - 1;
    for i in (0..demands.len()).rev() {
        tables[i] = choice[i][c];
        c -= (u64::from(tables[i] - 1) * cost[i]) as usize;
    }
    Some(Split::new(demands, tables, budget))
}

/// The smallest share of the misses of the grants in force that a new
/// split must save before it replaces them: 1%. Curves move a little with
/// every window; below this, changing grants would only make caches evict
/// and reread tables (and touch shared state) for noise.
pub const MIN_GAIN: f64 = 0.01;

/// Whether `proposed` should replace the grants in force, `current`: yes
/// when they no longer fit (other caches, other extents, more bytes than
/// the budget while the proposal fits), otherwise only when the proposal
/// differs and saves more than `min_gain` (a fraction, see [`MIN_GAIN`])
/// of the misses per find that `current` costs.
pub fn worth_changing(
    demands: &[Demand],
    budget: u64,
    current: &[u32],
    proposed: &Split,
    min_gain: f64,
) -> bool {
    if current == proposed.tables.as_slice() {
        return false;
    }
    let fits = current.len() == demands.len()
        && demands
            .iter()
            .zip(current)
            .all(|(d, &t)| (1..=d.extent()).contains(&t))
        && (proposed.over_budget || bytes_of(demands, current) <= u128::from(budget));
    if !fits {
        return true;
    }
    let now = misses_per_find(demands, current);
    now - misses_per_find(demands, &proposed.tables) > min_gain * now
}

#[cfg(test)]
// Under Miri these are skipped: the module has no unsafe code for Miri to
// check, and its tests run hundreds of thousands of lookups or curve points.
mod tests {
    use super::*;

    const KIB: u64 = 1024;
    const TABLE: u64 = 256 * KIB;

    /// A loop over `length` tables, `lookups` finds: every find misses
    /// below `length` tables; at or above, only the first pass does.
    fn loop_curve(length: u32, lookups: u64, extent: u32) -> Vec<u64> {
        (0..=extent)
            .map(|s| if s < length { lookups } else { u64::from(length) })
            .collect()
    }

    /// Smooth, convex: `lookups * k / (k + s)`.
    fn smooth_curve(k: f64, lookups: u64, extent: u32) -> Vec<u64> {
        (0..=extent)
            .map(|s| (lookups as f64 * k / (k + f64::from(s))).round() as u64)
            .collect()
    }

    /// Zipf(`alpha`) over `tables` tables, the most popular ones cached.
    fn zipf_curve(alpha: f64, tables: u32, lookups: u64, extent: u32) -> Vec<u64> {
        let p: Vec<f64> = (1..=tables).map(|k| f64::from(k).powf(-alpha)).collect();
        let total: f64 = p.iter().sum();
        let mut held = 0.0;
        (0..=extent)
            .map(|s| {
                if s >= 1 && s <= tables {
                    held += p[s as usize - 1];
                }
                (lookups as f64 * (1.0 - held / total)).round().max(0.0) as u64
            })
            .collect()
    }

    /// Uniform over `tables` tables.
    fn uniform_curve(tables: u32, lookups: u64, extent: u32) -> Vec<u64> {
        (0..=extent)
            .map(|s| {
                let missed = 1.0 - f64::from(s.min(tables)) / f64::from(tables);
                (lookups as f64 * missed).round() as u64
            })
            .collect()
    }

    /// A share `hot` of the finds on `h` tables, the rest on `n`.
    fn hot_set_curve(hot: f64, h: u32, n: u32, lookups: u64, extent: u32) -> Vec<u64> {
        (0..=extent)
            .map(|s| {
                let hot_missed = 1.0 - f64::from(s.min(h)) / f64::from(h);
                let cold_missed = 1.0 - f64::from(s.saturating_sub(h).min(n)) / f64::from(n);
                (lookups as f64 * (hot * hot_missed + (1.0 - hot) * cold_missed)).round() as u64
            })
            .collect()
    }

    /// Exactly convex in integers: from `lookups`, falling by `drop(s)`
    /// (rounded down) from s - 1 to s tables, `drop` not increasing.
    fn convex_curve(lookups: u64, extent: u32, drop: impl Fn(u32) -> f64) -> Vec<u64> {
        let mut m = lookups;
        let mut curve = vec![m];
        for s in 1..=extent {
            m = m.saturating_sub(drop(s).max(0.0) as u64);
            curve.push(m);
        }
        curve
    }

    fn demand(misses: &[u64], finds: u64, table_bytes: u64) -> Demand<'_> {
        Demand {
            misses,
            finds,
            table_bytes,
            cap: None,
        }
    }

    fn saved(demands: &[Demand], base: &Split, split: &Split) -> f64 {
        misses_per_find(demands, &base.tables) - misses_per_find(demands, &split.tables)
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn hulls_bridge_cliffs_flatten_rises_and_merge_lines() {
        let looped = loop_curve(120, 1000, 400);
        assert_eq!(hull_corners(&demand(&looped, 1, 1)), [1, 120]);
        // Falls, then rises: the hull stops at the lowest point.
        let dip = [9, 8, 6, 2, 5, 9];
        assert_eq!(hull_corners(&demand(&dip, 1, 1)), [1, 3]);
        // A bump on the way down is bridged.
        let bump = [10, 10, 12, 4, 3];
        assert_eq!(hull_corners(&demand(&bump, 1, 1)), [1, 3, 4]);
        let line = [10, 9, 8, 7, 6, 6];
        assert_eq!(hull_corners(&demand(&line, 1, 1)), [1, 4]);
        // A cap cuts the curve; a flat or empty curve has only the floor.
        let capped = Demand {
            cap: Some(2),
            ..demand(&line, 1, 1)
        };
        assert_eq!((capped.extent(), hull_corners(&capped)), (2, vec![1, 2]));
        assert_eq!(hull_corners(&demand(&[5, 5, 5], 1, 1)), [1]);
        assert_eq!(demand(&[], 1, 1).extent(), 1);
        assert_eq!(hull_corners(&demand(&[], 1, 1)), [1]);
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn a_cliff_is_bought_whole_when_worth_it() {
        let looped = loop_curve(120, 100_000, 400);
        let smooth = smooth_curve(50.0, 100_000, 400);
        let demands = [demand(&looped, 100_000, TABLE), demand(&smooth, 100_000, TABLE)];
        let split = share(&demands, 200 * TABLE);
        assert_eq!(split.tables[0], 120, "{split:?}");
        assert_eq!(split.tables[1], 80, "{split:?}");
        assert_eq!((split.bytes, split.over_budget), (u128::from(200 * TABLE), false));
        // Marginal gain alone would never have bought it: the smooth cache
        // with all the tables but one misses far more.
        let all_to_smooth = [1, 199];
        assert!(misses_per_find(&demands, &split.tables) < 0.5 * misses_per_find(&demands, &all_to_smooth));
        let exact = exact_split(&demands, 200 * TABLE, exact_unit(&demands)).unwrap();
        assert_eq!(exact.tables, split.tables);
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn a_cliff_that_does_not_fit_gets_none_of_the_budget() {
        let looped = loop_curve(120, 100_000, 400);
        let smooth = smooth_curve(50.0, 100_000, 400);
        let demands = [demand(&looped, 100_000, TABLE), demand(&smooth, 100_000, TABLE)];
        let split = share(&demands, 100 * TABLE);
        assert_eq!(split.tables, [1, 99]);
        assert_eq!(exact_split(&demands, 100 * TABLE, TABLE).unwrap().tables, [1, 99]);
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn a_cliff_met_late_displaces_tables_bought_before_it() {
        let smooth = smooth_curve(50.0, 100_000, 400);
        let looped = loop_curve(100, 29_300, 400);
        let demands = [demand(&smooth, 100_000, TABLE), demand(&looped, 29_300, TABLE)];
        let budget = 150 * TABLE;
        // One pass refuses the cliff: when it comes, 68 tables are left.
        let (one_pass, refused) = greedy(&demands, &segments(&demands), budget, vec![1, 1]);
        assert_eq!(one_pass.tables, [149, 1]);
        assert!(
            refused.iter().any(|r| (r.cache, r.from, r.to) == (1, 1, 100)),
            "{refused:?}"
        );
        // Paying for it whole with the smooth cache's last tables is better.
        let split = share(&demands, budget);
        assert_eq!(split.tables, [50, 100]);
        assert!(misses_per_find(&demands, &split.tables) < misses_per_find(&demands, &one_pass.tables));
        assert_eq!(exact_split(&demands, budget, TABLE).unwrap().tables, [50, 100]);
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn rates_change_the_answer() {
        let looped = loop_curve(120, 100_000, 400);
        let smooth = smooth_curve(50.0, 100_000, 400);
        // The same curves, but the loop's cache is a hundred times less busy
        // over the period: its cliff is not worth 119 tables any more.
        let idle = [demand(&looped, 1_000, TABLE), demand(&smooth, 100_000, TABLE)];
        assert_eq!(share(&idle, 200 * TABLE).tables, [1, 199]);
        assert_eq!(exact_split(&idle, 200 * TABLE, TABLE).unwrap().tables, [1, 199]);
        // And the other way round: a busier smooth cache takes more.
        let a = smooth_curve(50.0, 100_000, 400);
        let b = smooth_curve(50.0, 100_000, 400);
        let even = share(&[demand(&a, 1_000, TABLE), demand(&b, 1_000, TABLE)], 200 * TABLE);
        let busy = share(&[demand(&a, 1_000, TABLE), demand(&b, 4_000, TABLE)], 200 * TABLE);
        assert_eq!(even.tables, [100, 100]);
        assert!(
            busy.tables[1] > 120 && busy.tables[0] + busy.tables[1] == 200,
            "{busy:?}"
        );
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn bytes_per_table_differ() {
        let a = smooth_curve(50.0, 100_000, 2000);
        let b = smooth_curve(50.0, 100_000, 2000);
        let demands = [demand(&a, 100_000, 64 * KIB), demand(&b, 100_000, 256 * KIB)];
        let budget = 64 << 20;
        let split = share(&demands, budget);
        // Equal gain per byte: a quarter of the bytes, so the slope of the
        // cheap tables' cache is a quarter of the other's at their grants,
        // 50 + a = 2 (50 + b); and a + 4 b = 1024: a = 374.7, b = 162.3.
        let (ta, tb) = (split.tables[0] as i64, split.tables[1] as i64);
        assert!((ta - 375).abs() <= 2 && (tb - 162).abs() <= 2, "{split:?}");
        assert!(split.bytes <= u128::from(budget) && !split.over_budget);
        assert!(
            u128::from(budget) - split.bytes < u128::from(256 * KIB),
            "{split:?}"
        );
        let exact = exact_split(&demands, budget, exact_unit(&demands)).unwrap();
        assert_eq!(exact_unit(&demands), 64 * KIB);
        let base = Split::floors(&demands, budget);
        assert!(saved(&demands, &base, &split) >= 0.999 * saved(&demands, &base, &exact));
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn the_floor_when_the_budget_is_too_small() {
        let a = smooth_curve(50.0, 100_000, 400);
        let demands = [
            demand(&a, 10, TABLE),
            demand(&a, 10, 2 * TABLE),
            demand(&a, 10, TABLE),
        ];
        for split in [
            share(&demands, 4 * TABLE - 1),
            equal_split(&demands, 4 * TABLE - 1),
            exact_split(&demands, 4 * TABLE - 1, TABLE).unwrap(),
        ] {
            assert_eq!(split.tables, [1, 1, 1]);
            assert!(split.over_budget);
            assert_eq!(split.bytes, u128::from(4 * TABLE));
        }
        // Exactly one table each fits.
        let split = share(&demands, 4 * TABLE);
        assert_eq!((split.tables, split.over_budget), (vec![1, 1, 1], false));
        // A unit too coarse for the floors: no answer rather than a wrong one.
        assert_eq!(exact_split(&demands, 4 * TABLE, 3 * TABLE), None);
        assert_eq!(
            share(&[], 0),
            Split {
                tables: vec![],
                bytes: 0,
                over_budget: false
            }
        );
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn caps_and_extents_bound_every_grant() {
        let a = smooth_curve(10.0, 100_000, 30);
        let b = smooth_curve(10.0, 100_000, 400);
        let demands = [
            demand(&a, 100_000, TABLE),
            Demand {
                cap: Some(20),
                ..demand(&b, 100_000, TABLE)
            },
        ];
        // Far more budget than both can use: each stops at its extent.
        let split = share(&demands, 1 << 40);
        assert_eq!(split.tables, [30, 20]);
        assert_eq!(equal_split(&demands, 1 << 40).tables, [30, 20]);
        assert_eq!(exact_split(&demands, 1 << 40, TABLE).unwrap().tables, [30, 20]);
        // One cache may take the whole budget.
        let idle = [0u64; 401];
        let lone = [demand(&b, 100_000, TABLE), demand(&idle, 0, TABLE)];
        assert_eq!(share(&lone, 300 * TABLE).tables, [299, 1]);
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn the_sum_never_passes_the_budget() {
        // A fixed pseudo-random walk over mixes of curves and budgets.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..300 {
            let curves: Vec<Vec<u64>> = (0..1 + next(6))
                .map(|_| {
                    let extent = 1 + next(300) as u32;
                    let lookups = 1 + next(1_000_000);
                    match next(4) {
                        0 => loop_curve(1 + next(300) as u32, lookups, extent),
                        1 => smooth_curve(1.0 + next(100) as f64, lookups, extent),
                        2 => uniform_curve(1 + next(500) as u32, lookups, extent),
                        _ => (0..=extent).map(|_| next(lookups)).collect(), // not monotone
                    }
                })
                .collect();
            let demands: Vec<Demand> = curves
                .iter()
                .map(|c| Demand {
                    misses: c,
                    finds: next(1_000_000),
                    table_bytes: [1, 4096, 65536 + 4096, TABLE][next(4) as usize],
                    cap: [None, Some(next(400) as u32)][next(2) as usize],
                })
                .collect();
            let budget = next(200 * TABLE);
            let floors: u128 = demands.iter().map(|d| u128::from(d.table_bytes)).sum();
            for split in [share(&demands, budget), equal_split(&demands, budget)] {
                assert_eq!(split.bytes, bytes_of(&demands, &split.tables));
                assert_eq!(split.over_budget, floors > u128::from(budget));
                if !split.over_budget {
                    assert!(split.bytes <= u128::from(budget), "{split:?}");
                }
                for (d, &t) in demands.iter().zip(&split.tables) {
                    assert!((1..=d.extent()).contains(&t), "{t} of {}", d.extent());
                }
            }
            // The same counts, the same grants.
            assert_eq!(share(&demands, budget), share(&demands, budget));
        }
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn on_convex_curves_with_one_table_size_greedy_is_exact() {
        // Rounding a smooth curve to integers can leave it a little
        // concave here and there; these are convex to the last miss.
        let zipf_total: f64 = (1..=800).map(|k| f64::from(k).powf(-1.1)).sum();
        let curves = [
            convex_curve(100_000, 500, |s| 2e6 / f64::from(20 + s).powi(2)),
            convex_curve(60_000, 500, |s| 4.8e6 / f64::from(80 + s).powi(2)),
            convex_curve(90_000, 500, |s| {
                if s <= 800 {
                    90_000.0 * f64::from(s).powf(-1.1) / zipf_total
                } else {
                    0.0
                }
            }),
            convex_curve(30_000, 500, |s| if s <= 150 { 200.0 } else { 0.0 }),
        ];
        let finds = [100_000, 50_000, 90_000, 70_000];
        let demands: Vec<Demand> = curves
            .iter()
            .zip(finds)
            .map(|(c, f)| demand(c, f, TABLE))
            .collect();
        for tables in [4, 10, 100, 333, 700, 2000] {
            let budget = tables * TABLE;
            let split = share(&demands, budget);
            let exact = exact_split(&demands, budget, exact_unit(&demands)).unwrap();
            let (g, e) = (
                misses_per_find(&demands, &split.tables),
                misses_per_find(&demands, &exact.tables),
            );
            assert!(
                (g - e).abs() <= 1e-12 * e.max(1.0),
                "{tables} tables: {split:?} {exact:?}"
            );
        }
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn near_the_best_static_split_on_a_mix_of_eight() {
        const D: u32 = 1500;
        let curves = [
            zipf_curve(1.0, 2000, 200_000, D),
            zipf_curve(0.8, 1000, 50_000, D),
            uniform_curve(300, 100_000, D),
            loop_curve(120, 80_000, D),
            loop_curve(700, 30_000, D),
            hot_set_curve(0.9, 50, 3000, 150_000, D),
            uniform_curve(2000, 20_000, D),
            loop_curve(40, 60_000, D),
        ];
        let finds = [200_000, 50_000, 100_000, 80_000, 30_000, 150_000, 20_000, 60_000];
        let bytes = [TABLE, TABLE, 64 * KIB, TABLE, TABLE, TABLE, 64 * KIB, TABLE];
        let demands: Vec<Demand> = (0..8).map(|i| demand(&curves[i], finds[i], bytes[i])).collect();
        // Budgets where the loops' cliffs fit, fit in part, or do not.
        let mut worth_sizing = 0;
        for mib in [60, 100, 150, 200, 300, 450] {
            let budget = mib << 20;
            let equal = equal_split(&demands, budget);
            let exact = exact_split(&demands, budget, exact_unit(&demands)).unwrap();
            let split = share(&demands, budget);
            let eq = misses_per_find(&demands, &equal.tables);
            let best = misses_per_find(&demands, &exact.tables);
            let got = misses_per_find(&demands, &split.tables);
            assert!(split.bytes <= u128::from(budget) && exact.bytes <= u128::from(budget));
            assert!(
                best <= got && best <= eq,
                "{mib} MiB: the exact split is the best"
            );
            // Where sizing matters (the best split saves a fifth of the
            // equal split's misses), greedy gets 90% of that saving.
            if eq - best >= 0.2 * eq {
                worth_sizing += 1;
                assert!(
                    eq - got >= 0.9 * (eq - best),
                    "{mib} MiB: equal {eq} best {best} greedy {got}: {split:?} {exact:?}"
                );
            }
        }
        assert!(worth_sizing >= 4, "the mix must be worth sizing at most budgets");
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn small_gains_keep_the_grants_in_force() {
        let a = smooth_curve(50.0, 100_000, 400);
        let b = smooth_curve(50.0, 100_000, 400);
        let demands = [demand(&a, 100_000, TABLE), demand(&b, 100_000, TABLE)];
        let budget = 200 * TABLE;
        let proposed = share(&demands, budget);
        assert_eq!(proposed.tables, [100, 100]);
        assert!(!worth_changing(
            &demands,
            budget,
            &[100, 100],
            &proposed,
            MIN_GAIN
        ));
        // A few tables off: under 1% of the misses.
        assert!(!worth_changing(&demands, budget, &[104, 96], &proposed, MIN_GAIN));
        // Far off: worth it.
        assert!(worth_changing(&demands, budget, &[180, 20], &proposed, MIN_GAIN));
        // Grants that no longer fit are replaced whatever the gain.
        assert!(worth_changing(&demands, budget, &[101, 100], &proposed, MIN_GAIN));
        assert!(worth_changing(&demands, budget, &[100], &proposed, MIN_GAIN));
        assert!(worth_changing(&demands, budget, &[0, 100], &proposed, MIN_GAIN));
        assert!(worth_changing(&demands, budget, &[500, 1], &proposed, MIN_GAIN));
        // A proposal no better than the grants in force never is.
        assert!(!worth_changing(
            &demands,
            budget,
            &[100, 100],
            &share(&demands, 150 * TABLE),
            0.0
        ));
    }
}
