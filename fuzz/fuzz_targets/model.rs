// SPDX-License-Identifier: LGPL-2.1-or-later
//! libFuzzer drives the reference-model driver of `tests/model/mod.rs`: the
//! input's bytes choose the capacity, the policy and every operation, and
//! each step is checked against the model (a mismatch panics).
//!
//! Run with `QED_L2_CACHE_ON_MISUSE=warn` to mix misuse calls in (each
//! prints a report line: add `-close_fd_mask=2` to keep the terminal quiet).

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/model/mod.rs"]
mod model;

use model::{Bytes, Driver, Policy, RunConfig, Source};

fuzz_target!(|data: &[u8]| {
    let mut src = Bytes(data);
    let (Some(c), Some(p)) = (src.below(5), src.below(3)) else {
        return;
    };
    let cfg = RunConfig {
        capacity: [1, 2, 3, 50, 1000][c as usize],
        policy: Policy::ALL[p as usize],
        ops: u64::MAX, // until the input is used up
        misuse: model::warn_mode(),
        label: "fuzz".into(),
    };
    Driver::new(cfg, src).run();
});
