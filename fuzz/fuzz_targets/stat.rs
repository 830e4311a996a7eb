// SPDX-License-Identifier: LGPL-2.1-or-later
//! libFuzzer drives qed-l2-cache-stat's path from a file's bytes to the
//! lines it prints: the input is a statistics file, read as the program
//! reads one (`stat/read.rs`: header, bounds, each record read twice) and,
//! when valid, printed as a table and as JSON Lines (`stat/output.rs`).
//! Nothing may panic, and the output stays bounded by the records read.
//! `cargo test` replays 20,000 mutated files through the same code
//! (stat/tests.rs, fuzz_replay_of_20000_mutated_files).
//!
//! Run: `cd fuzz && cargo +nightly fuzz run stat` (a corpus of one valid
//! file helps: any file `qed-l2-cache-stat` reads).

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::time::Instant;

#[allow(dead_code)]
#[path = "../../src/stats_layout.rs"]
mod stats_layout;

#[allow(dead_code)]
#[path = "../../stat/read.rs"]
mod read;

#[allow(dead_code)]
#[path = "../../stat/output.rs"]
mod output;

fuzz_target!(|data: &[u8]| {
    match read::read_snapshot(data) {
        Ok(s) => {
            assert!(s.records.len() <= read::MAX_RECORDS);
            let meta = output::FileMeta {
                label: "4242.1".into(),
                pid: 4242,
                instance: Some(1),
                path: "/run/user/1000/qed-l2-cache/4242.1".into(),
            };
            let mut tracker = output::Tracker::default();
            for report in [1, 2] {
                tracker.begin_report();
                for json in [false, true] {
                    let mut out = String::new();
                    output::format_snapshot(&mut out, &meta, &s, &mut tracker, Instant::now(), report, json);
                    assert_eq!(out.lines().count(), s.records.len());
                    assert!(out.len() <= 1024 * s.records.len());
                }
            }
        }
        Err(p) => {
            let m = p.to_string();
            assert!(!m.is_empty() && !m.contains('\n'));
        }
    }
});
