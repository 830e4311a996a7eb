// SPDX-License-Identifier: LGPL-2.1-or-later
//! qed-l2-cache: a drop-in replacement, in Rust, for QEMU's
//! `block/qed-l2-cache.c` (the L2 table cache of the QED image format).
//!
//! A C block layer deletes that file, links `libqed_l2_cache.so` and keeps
//! its own `qed.h`: the exported functions and the `#[repr(C)]` mirrors
//! match QEMU's ABI to the byte (docs/abi.md).
//!
//! Layout:
//! - `cache` and `index`: the safe core (order, policy, eviction, O(1)
//!   lookup); it knows nothing of C.
//! - `advisor`: the size advisor (docs/advisor.md), in the core: exact
//!   simulations of the same request stream at other sizes.
//! - `abi`: the C-visible types and the QTAILQ link handling.
//! - `entry`, `ledger` and `registry`: where entries and per-cache state
//!   live, and how a pointer from C is recognised without reading it.
//! - `sync` and `memtools`: the locks kept fork-safe, the unload cleanup,
//!   and what memory checkers are told.
//! - `ffi`: the exported functions, a thin layer over the above.
//! - `config` and `diag`: the environment, misuse reports and traces.

mod abi;
mod advisor;
mod cache;
mod config;
mod diag;
mod entry;
mod ffi;
mod index;
mod ledger;
mod memtools;
mod registry;
mod sync;

pub use abi::{CachedL2Table, L2TableCache, QEDTable, QTailQLink};
pub use ffi::*;
pub use ledger::QED_L2_CACHE_QUARANTINE_PER_THREAD;

/// Internals for this crate's own integration tests, benchmarks and fuzz
/// target only: not part of the library's API, and may change at any time.
#[doc(hidden)]
pub mod internals {
    pub use crate::advisor::recommend;
    pub use crate::cache::{Cache, Commit, Policy, Stats};
    pub use crate::config::{get as config, OnMisuse};
    pub use crate::entry::{Checked, EntryPtr, HIDDEN_BYTES};
    pub use crate::registry::CacheState;
}

#[cfg(test)]
mod header_tests {
    /// The committed header must be what cbindgen generates now.
    #[test]
    fn committed_header_is_fresh() {
        let fresh = include_str!(concat!(env!("OUT_DIR"), "/qed_l2_cache.h"));
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/include/qed_l2_cache.h");
        let committed = std::fs::read_to_string(path).expect("include/qed_l2_cache.h");
        assert!(
            committed == fresh,
            "include/qed_l2_cache.h is stale: regenerate it with \
             `QED_L2_CACHE_UPDATE_HEADER=1 cargo build` and commit it"
        );
    }
}
