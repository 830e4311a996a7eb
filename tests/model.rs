// SPDX-License-Identifier: LGPL-2.1-or-later
//! The library, called through its C ABI, against a reference model
//! (`tests/model/mod.rs`): 2.55 million random operations across
//! capacities 1, 2, 50 and 1000 and every policy, each step fully checked.
//!
//! `QED_L2_CACHE_MODEL_SEED` changes the seeds and `QED_L2_CACHE_MODEL_SCALE`
//! multiplies the number of operations (for longer soak runs).

#[path = "model/mod.rs"]
mod model;

use model::{Driver, Policy, Report, Rng, RunConfig};
use std::sync::Mutex;

/// One driver at a time per process (see the model's module doc).
static SERIAL: Mutex<()> = Mutex::new(());

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?}: expected an integer")),
    )
}

/// Operations per policy at this capacity (Miri runs a token amount).
fn ops(normal: u64) -> u64 {
    if cfg!(miri) {
        env_u64("QED_L2_CACHE_MODEL_MIRI_OPS").unwrap_or(20)
    } else {
        normal * env_u64("QED_L2_CACHE_MODEL_SCALE").unwrap_or(1)
    }
}

fn run(capacity: u32, policy: Policy, ops: u64) -> Report {
    let base = env_u64("QED_L2_CACHE_MODEL_SEED").unwrap_or(0x51ED_2CAC);
    let seed = base ^ (u64::from(capacity) << 8) ^ policy as u64;
    let cfg = RunConfig {
        capacity,
        policy,
        ops,
        misuse: false,
        label: format!("seed {seed:#x}"),
    };
    let mut driver = Driver::new(cfg, Rng::new(seed));
    driver.run().clone()
}

/// Runs every policy at `capacity` and checks the runs covered what matters.
fn capacity(capacity: u32, normal_ops: u64) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let n = ops(normal_ops);
    for policy in Policy::ALL {
        let r = run(capacity, policy, n);
        let what = format!("capacity {capacity} {policy:?}: {r:?}");
        assert_eq!(r.ops, n, "{what}");
        if cfg!(miri) {
            continue;
        }
        assert!(r.hits > 0 && r.misses > 0, "{what}");
        assert!(r.inserts > 0 && r.duplicates > 0, "{what}");
        assert!(r.evictions > 0, "{what}");
        assert!(r.skipped_in_use > 0, "in-use entries never met eviction: {what}");
        assert!(
            r.grew_past_max > 0,
            "the cache never grew past its maximum: {what}"
        );
        assert!(r.read_errors > 0 && r.frees > 0 && r.inits > 1, "{what}");
        assert!(r.detached_held > 0, "no held entry was detached by init: {what}");
        assert!(r.release_checks > 0, "{what}");
        assert!(r.longest >= capacity as usize, "never full: {what}");
    }
}

#[test]
fn model_capacity_1() {
    capacity(1, 250_000);
}

#[test]
fn model_capacity_2() {
    capacity(2, 250_000);
}

#[test]
fn model_capacity_50() {
    capacity(50, 250_000);
}

#[test]
fn model_capacity_1000() {
    capacity(1000, 100_000);
}
