// SPDX-License-Identifier: LGPL-2.1-or-later
//! qed-l2-cache: a drop-in replacement, in Rust, for QEMU's
//! `block/qed-l2-cache.c` (the L2 table cache of the QED image format).
//!
//! A C block layer deletes that file, links `libqed_l2_cache.so` and keeps
//! its own `qed.h`: the exported functions and the `#[repr(C)]` mirrors
//! match QEMU's ABI to the byte (docs/abi.md).
//!
//! Modules, leaves first: each uses only modules listed above it
//! (`tools/check-architecture` fails the tests otherwise).
//! - `memtools`: what memory checkers are told, and the hiding of the
//!   addresses the library records.
//! - `sync`: the fork-safe lock and the process token it relies on.
//! - `stderr`: one line to stderr with one `write`.
//! - `probes`: USDT static probes (SystemTap SDT notes) for gdb, systemtap,
//!   bpftrace and perf: QEMU's `qed_*` trace events and the library's own.
//! - `stats_layout`: the live statistics file's layout (docs/statistics.md),
//!   shared with the reader `qed-l2-cache-stat`.
//! - `cache`: the safe core (order, policies, O(1) index, counters, the
//!   observer interface); no unsafe code, no C, no environment, no stderr.
//! - `sizing`: how auto caches are sized from their miss curves, and how
//!   they share one memory budget; pure arithmetic, no unsafe code.
//! - `advisor`: the size advisor, an observer of the core, and its report.
//! - `config`: the environment, read once into typed values.
//! - `publish`: the writer of the live statistics file
//!   (`QED_L2_CACHE_STATS=1`).
//! - `diag`: misuse reports and QEMU-format trace lines.
//! - `abi`: the C-visible types and the QTAILQ link handling.
//! - `ledger`: entry memory, and which pointers are the library's entries.
//! - `entry`: an entry's hidden bytes and every reference-count rule.
//! - `registry`: where each cache's hidden state lives, how a call finds it.
//! - `idle`: idle release (`QED_L2_CACHE_IDLE`): the library's one thread,
//!   its epoch and sweep, and how released tables' memory goes back.
//! - `lifecycle`: setup at load, fork, unload and exit.
//! - `ffi`: the exported functions, a thin layer over the above.

mod memtools;
mod sync;
mod stderr;
mod probes;
// The decoding half is the reader's (it includes the same file); the
// library uses the offsets, its tests the decoding. Neither it nor
// `publish` is C API: cbindgen skips both (their `cbindgen:ignore` lines).
/// cbindgen:ignore
#[allow(dead_code)]
mod stats_layout;
mod cache;
// Auto caches' arithmetic; C API it is not (cbindgen skips it).
/// cbindgen:ignore
mod sizing;
mod advisor;
mod config;
mod shares;
/// cbindgen:ignore
mod publish;
mod diag;
mod abi;
mod ledger;
mod entry;
mod registry;
mod idle;
mod lifecycle;
mod ffi;

pub use abi::{CachedL2Table, L2TableCache, QEDTable, QTailQLink};
pub use ffi::*;

/// Internals for this crate's own integration tests, benchmarks and fuzz
/// target only: not part of the library's API, and may change at any time.
#[doc(hidden)]
pub mod internals {
    pub use crate::advisor::report::recommend;
    pub use crate::advisor::{advisor, miss_curve, predict_misses, set_advisor, Advised, Point};
    pub use crate::cache::{Cache, Commit, Observer, Policy, Stats};
    pub use crate::config::{get as config, OnMisuse, Size};
    pub use crate::entry::HIDDEN_BYTES;
    pub use crate::sizing::budget;

    /// What the library's records say of a pointer (nothing is read
    /// through it).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum EntryStatus {
        /// One of the library's entries, alive.
        Live,
        /// One of its entries, released recently.
        Released,
        /// Not one of its entries (or released long ago).
        Foreign,
    }

    /// See [`EntryStatus`].
    #[inline]
    pub fn entry_status(p: *const crate::CachedL2Table) -> EntryStatus {
        use crate::entry::{Checked, EntryPtr};
        match std::ptr::NonNull::new(p.cast_mut()).map(EntryPtr::check) {
            Some(Checked::Live(_)) => EntryStatus::Live,
            Some(Checked::Released) => EntryStatus::Released,
            Some(Checked::Foreign) | None => EntryStatus::Foreign,
        }
    }

    /// Bytes of one cache's hidden state record (its slot's contents).
    pub const CACHE_STATE_BYTES: usize = std::mem::size_of::<crate::registry::CacheState>();
    /// Bytes of the handle the core keeps per cached table.
    pub const ENTRY_HANDLE_BYTES: usize = std::mem::size_of::<crate::entry::EntryPtr>();
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
