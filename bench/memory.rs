// SPDX-License-Identifier: LGPL-2.1-or-later
//! Memory the library adds per cached table, beyond the 40-byte
//! `CachedL2Table` that C sees: the entry's hidden bytes, the core's node,
//! visited bit and index buckets (`Cache::heap_bytes`), and the per-cache
//! state spread over the tables. Printed as a Markdown table.
//!
//! Then the size advisor's memory (docs/advisor.md), by policy: heap
//! bytes per table it tracks, and per table of the cache's maximum.
//!
//! `cargo run --release --example memory` (meson: part of `meson test --benchmark`).

use qed_l2_cache::internals::{advisor, set_advisor, Advised, Cache, Commit, Policy};
use qed_l2_cache::internals::{CACHE_STATE_BYTES, ENTRY_HANDLE_BYTES, HIDDEN_BYTES};

fn main() {
    // The core stores entry handles; a `usize` has the same size.
    assert_eq!(std::mem::size_of::<usize>(), ENTRY_HANDLE_BYTES);
    println!("| cached tables | hidden entry bytes | node + visited + index | per-cache state | total |");
    println!("|---:|---:|---:|---:|---:|");
    for n in [50u32, 1024, 16384] {
        let mut c: Cache<usize> = Cache::new(n, Policy::Fifo);
        // Fill past the maximum so the cache is full and has evicted.
        for h in 0..n + n / 4 {
            let r = c.commit((u64::from(h) + 1) * 0x40000, h as usize, |_| false, |_| {});
            assert_eq!(r, Commit::Inserted);
        }
        assert_eq!(c.len(), n);
        let n = f64::from(n);
        let core = c.heap_bytes() as f64 / n;
        let state = CACHE_STATE_BYTES as f64 / n;
        let hidden = HIDDEN_BYTES as f64;
        println!(
            "| {} | {hidden:.0} | {core:.2} | {state:.2} | {:.2} |",
            n as u32,
            hidden + core + state
        );
    }

    println!();
    println!("Size advisor (on), after a loop over 10x the maximum's tables, 3 laps:");
    println!();
    println!("| policy | cached tables | tables tracked | heap bytes / table tracked | record + links + index | heap bytes / cached table |");
    println!("|---|---:|---:|---:|---:|---:|");
    for policy in Policy::ALL {
        for n in [50u32, 1024, 16384] {
            let mut c: Advised<usize> = Cache::new(n, policy);
            set_advisor(&mut c, true);
            let tables = 10 * u64::from(n);
            for i in 0..3 * tables {
                let off = (i % tables + 1) * 0x40000;
                if c.find(off).is_none() {
                    c.commit(off, i as usize, |_| false, |_| {});
                    assert!(c.find(off).is_some());
                }
            }
            let a = advisor(&c).expect("on");
            let heap = a.heap_bytes() as f64;
            println!(
                "| {} | {n} | {} | {:.1} | {} | {:.1} |",
                policy.name(),
                a.tracked_tables(),
                heap / a.tracked_tables() as f64,
                a.bytes_per_table(),
                heap / f64::from(n)
            );
        }
    }
}
