// SPDX-License-Identifier: LGPL-2.1-or-later
//! Auto-sized caches against fixed sizes, from Rust (docs/sizing.md; the C
//! replay `c_tests/test_auto_replay.c` is the fuller one). QEMU's read
//! path through the exported functions: find; on a miss alloc, a real
//! 256 KiB table from `posix_memalign(4096, ...)`, commit, find again;
//! unref. Deterministic workloads, learning included. The targets: the
//! auto cache's hit ratio within 2 points of the best fixed size (over the
//! second phase for the phase change), and at the end at most 1.25x the
//! smallest fixed size within 1 point of the best (at most 30 tables after
//! the phase change). Fixed sizes are sampled every 8th up to the cap and
//! refined one by one below the first within a point of the best.

use qed_l2_cache::{
    qed_alloc_l2_cache_entry, qed_commit_l2_cache_entry, qed_find_l2_cache_entry, qed_free_l2_cache,
    qed_init_l2_cache, qed_l2_cache_get_target, qed_l2_cache_set_auto, qed_l2_cache_set_max_entries,
    qed_unref_l2_cache_entry, L2TableCache,
};

const TABLE_BYTES: usize = 256 << 10;

mod common;
use common::Rng;

#[derive(Clone, Copy, Debug)]
enum Workload {
    /// 90% of lookups on 30 tables, the rest over 170 others.
    HotSet,
    /// A loop over 120 tables.
    Loop,
    /// 100 tables uniform, then 20 others (the second half).
    PhaseChange,
}

fn trace(w: Workload, n: usize) -> Vec<u64> {
    let mut rng = Rng(17);
    (0..n)
        .map(|i| {
            let t = match w {
                Workload::HotSet if rng.next() % 10 < 9 => rng.next() % 30,
                Workload::HotSet => 30 + rng.next() % 170,
                Workload::Loop => (i % 120) as u64,
                Workload::PhaseChange if i < n / 2 => rng.next() % 100,
                Workload::PhaseChange => 1000 + rng.next() % 20,
            };
            (t + 1) << 20
        })
        .collect()
}

/// Runs `lookups` on a cache (auto, or fixed at `size`); returns the hits
/// counted from `from` on, and the tables held and chosen at the end.
fn run(lookups: &[u64], size: Option<u32>, from: usize) -> (u64, u32, u32) {
    // SAFETY: a C struct of pointers and integers; zeroes are what a C
    // caller's zeroed struct holds before init.
    let mut c: L2TableCache = unsafe { std::mem::zeroed() };
    let mut hits = 0;
    // SAFETY: a cache of this thread's, used through the C API as QEMU
    // does; every entry is committed or unreferenced once.
    unsafe {
        qed_init_l2_cache(&mut c);
        match size {
            Some(s) => qed_l2_cache_set_max_entries(&mut c, s),
            None => qed_l2_cache_set_auto(&mut c, 1),
        }
        for (i, &off) in lookups.iter().enumerate() {
            let mut e = qed_find_l2_cache_entry(&mut c, off);
            if e.is_null() {
                e = qed_alloc_l2_cache_entry(&mut c);
                let mut table = std::ptr::null_mut();
                assert_eq!(libc::posix_memalign(&mut table, 4096, TABLE_BYTES), 0);
                (*e).table = table.cast();
                (*e).offset = off;
                qed_commit_l2_cache_entry(&mut c, e);
                e = qed_find_l2_cache_entry(&mut c, off);
                assert!(!e.is_null(), "the find after a commit missed");
            } else if i >= from {
                hits += 1;
            }
            qed_unref_l2_cache_entry(e);
        }
        let held = c.n_entries;
        let chosen = qed_l2_cache_get_target(&c);
        qed_free_l2_cache(&mut c);
        (hits, held, chosen)
    }
}

#[test]
fn auto_cache_meets_the_targets_against_fixed_sizes() {
    if cfg!(miri) {
        return; // millions of calls and real tables: not for Miri
    }
    // Tables from the heap and no trimming at every free (the replay
    // measures hit ratios; mmap and sbrk churn would only slow it), and no
    // MALLOC_PERTURB_ filling every freed table (meson sets it at random).
    // SAFETY: mallopt has no preconditions.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
        libc::mallopt(libc::M_PERTURB, 0);
    }
    // The auto cap as the library counts it (docs/sizing.md).
    // SAFETY: a block this test allocates and frees itself.
    let usable = unsafe {
        let mut p = std::ptr::null_mut();
        assert_eq!(libc::posix_memalign(&mut p, 4096, TABLE_BYTES), 0);
        let u = libc::malloc_usable_size(p);
        libc::free(p);
        u
    };
    let cap = ((32usize << 20) / (usable + 160)) as u32;
    for w in [Workload::HotSet, Workload::Loop, Workload::PhaseChange] {
        let n = 200_000;
        let lookups = trace(w, n);
        let from = if matches!(w, Workload::PhaseChange) {
            n / 2
        } else {
            0
        };
        let counted = (n - from) as f64;
        let ratio = |hits: u64| 100.0 * hits as f64 / counted;
        let mut grid: Vec<(u32, f64)> = (1..)
            .map(|k| (8 * k).min(cap))
            .take_while(|&s| s < cap)
            .chain([cap])
            .map(|s| (s, ratio(run(&lookups, Some(s), from).0)))
            .collect();
        grid.dedup_by_key(|p| p.0);
        let best = grid.iter().map(|p| p.1).fold(0.0, f64::max);
        let first = grid.iter().position(|p| p.1 >= best - 1.0).unwrap();
        let mut near = grid[first].0;
        let floor = if first > 0 { grid[first - 1].0 } else { 0 };
        while near - 1 > floor && ratio(run(&lookups, Some(near - 1), from).0) >= best - 1.0 {
            near -= 1;
        }
        let (hits, held, chosen) = run(&lookups, None, from);
        let limit = if matches!(w, Workload::PhaseChange) {
            30.0
        } else {
            1.25 * f64::from(near)
        };
        eprintln!(
            "{w:?}: auto {:.2}% holding {held} (chose {chosen}); best fixed {best:.2}%, near {near}",
            ratio(hits)
        );
        assert!(
            ratio(hits) >= best - 2.0,
            "{w:?}: hit ratio {:.2}% against best {best:.2}%",
            ratio(hits)
        );
        assert!(
            f64::from(held) <= limit,
            "{w:?}: {held} tables held, limit {limit}"
        );
    }
}
