// SPDX-License-Identifier: LGPL-2.1-or-later
//! What recognising an entry costs per call: the lookup
//! every `qed_unref_l2_cache_entry` and `qed_commit_l2_cache_entry` makes
//! in the library's records before touching the pointer (docs/misuse.md).
//! Timed on live entries of the calling thread (the usual case), on
//! entries another thread allocated (a cache that moved between threads),
//! and on a pointer that is not an entry. Best of 11 runs.
//!
//!   cargo run --release --example ownership

use qed_l2_cache::internals::{entry_status, EntryStatus};
use qed_l2_cache::qed_alloc_l2_cache_entry;
use std::hint::black_box;
use std::ptr::NonNull;
use std::time::Instant;

const ENTRIES: usize = 1024;
const ROUNDS: usize = 2000;

fn best_ns_per_check(ptrs: &[NonNull<qed_l2_cache::CachedL2Table>], expect_live: bool) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..11 {
        let t0 = Instant::now();
        let mut live = 0usize;
        for _ in 0..ROUNDS {
            for &p in ptrs {
                live += (entry_status(black_box(p).as_ptr()) == EntryStatus::Live) as usize;
            }
        }
        let ns = t0.elapsed().as_nanos() as f64 / (ROUNDS * ptrs.len()) as f64;
        assert_eq!(live == ROUNDS * ptrs.len(), expect_live, "wrong verdicts");
        best = best.min(ns);
    }
    best
}

fn main() {
    // SAFETY: alloc takes any cache pointer (only printed in traces).
    let alloc = || unsafe { qed_alloc_l2_cache_entry(std::ptr::null_mut()) };
    let own: Vec<_> = (0..ENTRIES).map(|_| NonNull::new(alloc()).unwrap()).collect();
    struct Sendable(Vec<usize>);
    let other = std::thread::spawn(move || Sendable((0..ENTRIES).map(|_| alloc() as usize).collect()))
        .join()
        .unwrap();
    let other: Vec<_> = other
        .0
        .iter()
        .map(|&a| NonNull::new(a as *mut qed_l2_cache::CachedL2Table).unwrap())
        .collect();
    let mut foreign_blocks = vec![[0u64; 5]; ENTRIES];
    let foreign: Vec<_> = foreign_blocks
        .iter_mut()
        .map(|b| NonNull::new(b.as_mut_ptr().cast()).unwrap())
        .collect();
    println!("ownership check (the records lookup), ns per call, best of 11, {ENTRIES} entries:");
    println!("| pointer | ns |\n|---|---:|");
    println!(
        "| live entry of the calling thread | {:.2} |",
        best_ns_per_check(&own, true)
    );
    println!(
        "| live entry another thread allocated | {:.2} |",
        best_ns_per_check(&other, true)
    );
    println!(
        "| not an entry (searched in every ledger) | {:.2} |",
        best_ns_per_check(&foreign, false)
    );
}
