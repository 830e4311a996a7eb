// SPDX-License-Identifier: LGPL-2.1-or-later
//! What the size advisor says when a cache is freed with
//! `QED_L2_CACHE_REPORT=1` (docs/advisor.md): the counters, the predicted
//! table reads at each tracked size, and the size to set. Text only: the
//! simulation is the parent module's.

use super::{advisor, miss_curve, Advised, HasAdvisor, Point};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU32, Ordering};

/// The smallest size whose hit ratio is within one point of the best on
/// `curve` (over `finds` finds). `None` without finds.
pub fn recommend(curve: &[Point], finds: u64) -> Option<u32> {
    if finds == 0 || curve.is_empty() {
        return None;
    }
    let ratio = |p: &Point| 1.0 - p.misses as f64 / finds as f64;
    let best = curve.iter().map(ratio).fold(f64::MIN, f64::max);
    curve
        .iter()
        .filter(|p| ratio(p) >= best - 0.01)
        .map(|p| p.size)
        .min()
}

/// The report's lines for `cache`, the `serial`-th cache of the process
/// (without newlines), given the largest recommendation of the caches
/// reported before it; and its own recommendation.
pub fn lines<H: Copy, O: HasAdvisor>(
    serial: u64,
    cache: &Advised<H, O>,
    largest_before: u32,
) -> (Vec<String>, Option<u32>) {
    let s = cache.stats();
    let n = serial;
    let mut lines = vec![format!(
        "qed-l2-cache: report for cache {n} (policy {}, QED_L2_CACHE_SIZE={}): {} hits, {} misses, \
         {} commits ({} duplicate), {} evictions, at most {} tables cached",
        cache.policy().name(),
        cache.max_entries(),
        s.hits,
        s.misses,
        s.commits,
        s.duplicate_commits,
        s.evictions,
        s.peak_entries
    )];
    let Some(a) = advisor(cache) else {
        lines.push(format!(
            "qed-l2-cache: cache {n}: size advisor off (qed_l2_cache_set_advisor), no prediction"
        ));
        return (lines, None);
    };
    let curve = miss_curve(cache);
    let finds = a.finds();
    let mut reads = format!("qed-l2-cache: cache {n}: table reads over {finds} finds by maximum size:");
    for p in &curve {
        let pct = if finds == 0 {
            0.0
        } else {
            100.0 * (1.0 - p.misses as f64 / finds as f64)
        };
        let now = if p.size == a.max_entries { " (now)" } else { "" };
        let _ = write!(reads, " {}{now}: {} ({pct:.1}% hits);", p.size, p.misses);
    }
    reads.pop();
    lines.push(reads);
    let Some(rec) = recommend(&curve, finds) else {
        lines.push(format!("qed-l2-cache: cache {n}: no lookups, no recommendation"));
        return (lines, None);
    };
    let largest = largest_before.max(rec);
    let best = curve
        .iter()
        .map(|p| 100.0 * (1.0 - p.misses as f64 / finds as f64))
        .fold(f64::MIN, f64::max);
    let verb = if rec == cache.max_entries() { "keep" } else { "set" };
    lines.push(format!(
        "qed-l2-cache: cache {n}: {verb} QED_L2_CACHE_SIZE={rec}: the smallest size tracked within 1 point \
         of the best hit ratio tracked ({best:.1}%)"
    ));
    lines.push(format!(
        "qed-l2-cache: the size is process-wide; for every cache reported so far set QED_L2_CACHE_SIZE={largest}"
    ));
    (lines, Some(rec))
}

/// The largest recommendation printed so far, process-wide.
static LARGEST_RECOMMENDATION: AtomicU32 = AtomicU32::new(0);

/// Prints the report of `cache`, the `serial`-th of the process, on
/// stderr (the caller decides whether reports are on).
pub fn print<H: Copy, O: HasAdvisor>(serial: u64, cache: &Advised<H, O>) {
    let before = LARGEST_RECOMMENDATION.load(Ordering::Relaxed);
    let (lines, rec) = lines(serial, cache, before);
    if let Some(rec) = rec {
        LARGEST_RECOMMENDATION.fetch_max(rec, Ordering::Relaxed);
    }
    for line in &lines {
        crate::stderr::write_line(format_args!("{line}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::advisor::set_advisor;
    use crate::cache::{Cache, Policy};

    #[test]
    fn recommendation_is_smallest_within_one_point() {
        let curve = [
            Point {
                size: 10,
                misses: 500,
            },
            Point {
                size: 20,
                misses: 100,
            },
            Point { size: 40, misses: 95 },
            Point { size: 80, misses: 90 },
        ];
        assert_eq!(recommend(&curve, 1000), Some(20));
        assert_eq!(recommend(&curve, 0), None);
        let steep = [
            Point {
                size: 10,
                misses: 500,
            },
            Point {
                size: 20,
                misses: 300,
            },
        ];
        assert_eq!(recommend(&steep, 1000), Some(20));
    }

    #[test]
    fn report_names_cache_counters_sizes_and_setting() {
        let mut c: Advised<u64> = Cache::new(4, Policy::Lru);
        set_advisor(&mut c, true);
        for i in 0..1000u64 {
            let off = (i % 12 + 1) << 16;
            if c.find(off).is_none() {
                c.commit(off, off, |_| false, |_| {});
                assert!(c.find(off).is_some());
            }
        }
        let (out, rec) = lines(7, &c, 64);
        assert!(out.iter().all(|l| l.starts_with("qed-l2-cache:")), "{out:?}");
        assert_eq!(rec, Some(16), "{out:?}");
        assert!(out[0].contains("report for cache 7 "), "{}", out[0]);
        assert!(out[0].contains("1000 misses"), "{}", out[0]);
        assert!(
            out[1].contains(" 16: 12 (") && out[1].contains("4 (now): 1000"),
            "{}",
            out[1]
        );
        assert!(out[2].contains("set QED_L2_CACHE_SIZE=16"), "{}", out[2]);
        assert!(out[3].contains("QED_L2_CACHE_SIZE=64"), "{}", out[3]);
        set_advisor(&mut c, false);
        let (out, rec) = lines(7, &c, 0);
        assert_eq!((out.len(), rec), (2, None));
    }
}
