// SPDX-License-Identifier: LGPL-2.1-or-later
//! qed-l2-cache: a drop-in replacement, in Rust, for QEMU's
//! `block/qed-l2-cache.c` (the L2 table cache of the QED image format).
//!
//! A C block layer deletes that file, links `libqed_l2_cache.so` and keeps
//! its own `qed.h`: the exported functions and the `#[repr(C)]` mirrors in
//! [`abi`] match QEMU's ABI to the byte (see docs/abi.md).
//!
//! Layout:
//! - [`cache`] and [`index`]: the safe core (order, policy, eviction, O(1)
//!   lookup); it knows nothing of C.
//! - [`abi`]: the C-visible types and the QTAILQ link handling.
//! - [`entry`] and [`registry`]: where entries and per-cache state live.
//! - [`ffi`]: the exported functions, a thin layer over the above.
//! - [`advisor`]: the size advisor (docs/advisor.md), in the core.
//! - [`config`] and [`diag`]: the environment, misuse reports and traces.

pub mod abi;
pub mod advisor;
pub mod cache;
pub mod config;
pub mod diag;
pub mod entry;
pub mod ffi;
pub mod index;
pub mod registry;

pub use abi::{CachedL2Table, L2TableCache, QEDTable, QTailQLink};
pub use ffi::*;

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
