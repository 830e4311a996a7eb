// SPDX-License-Identifier: LGPL-2.1-or-later
//! The C-visible types, mirrored `#[repr(C)]` from QEMU's `block/qed.h` and
//! `include/qemu/queue.h`, and the QTAILQ link handling: the only code that
//! touches the `entries` list a C caller may walk with QEMU's macros.
//!
//! Sizes, alignments and offsets are fixed by docs/abi.md (LP64) and checked at
//! compile time below and again from C in `c_tests/`.

use std::ffi::{c_int, c_uint, c_void};
use std::mem::{align_of, offset_of, size_of};
use std::ptr::{addr_of_mut, null_mut};

/// Mirrors `struct QTailQLink` of QEMU's `include/qemu/queue.h`: the
/// circular part of a tail-queue head or element.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct QTailQLink {
    /// The next element (a `CachedL2Table *`), or NULL at the tail.
    pub tql_next: *mut c_void,
    /// The previous element's link, or the head's for the first element;
    /// in a head: the last element's link.
    pub tql_prev: *mut QTailQLink,
}

/// Mirrors the `QTAILQ_ENTRY(CachedL2Table) node` union in `CachedL2Table`.
#[repr(C)]
#[derive(Clone, Copy)]
pub union CachedL2TableEntry {
    /// The next element, or NULL.
    pub tqe_next: *mut CachedL2Table,
    /// The same pointer, plus the link back.
    pub tqe_circ: QTailQLink,
}

/// Mirrors the `QTAILQ_HEAD(, CachedL2Table) entries` union in
/// `L2TableCache`.
#[repr(C)]
#[derive(Clone, Copy)]
pub union CachedL2TableHead {
    /// The first element, or NULL when the list is empty.
    pub tqh_first: *mut CachedL2Table,
    /// The same pointer, plus the link to the last element.
    pub tqh_circ: QTailQLink,
}

/// Mirrors `QEDTable` of QEMU's `block/qed.h`: one L2 (or L1) table.
#[repr(C)]
pub struct QEDTable {
    /// Cluster offsets (a flexible array member in C).
    pub offsets: [u64; 0],
}

/// Mirrors `CachedL2Table` of QEMU's `block/qed.h`: one cached L2 table.
/// Entries are created by `qed_alloc_l2_cache_entry` only.
#[repr(C)]
pub struct CachedL2Table {
    /// The table, allocated by the caller with an aligned allocator; the
    /// library releases it with `free()` together with the entry.
    pub table: *mut QEDTable,
    /// The table's byte offset in the image file; 0 = not yet valid.
    pub offset: u64,
    /// The list link (`QTAILQ_ENTRY`).
    pub node: CachedL2TableEntry,
    /// Reference count: the allocating request's, each `find`'s, and the
    /// cache's own while the entry is cached.
    pub r#ref: c_int,
}

/// Mirrors `L2TableCache` of QEMU's `block/qed.h`, embedded by value in the
/// caller's per-image state.
#[repr(C)]
pub struct L2TableCache {
    /// The cached entries, oldest first (a QEMU `QTAILQ_HEAD`).
    pub entries: CachedL2TableHead,
    /// Number of entries in `entries`.
    pub n_entries: c_uint,
    /// Private to the library (the tail padding of QEMU's struct): the
    /// number of this cache's hidden state, 0 when not initialised.
    pub handle: u32,
}

// docs/abi.md, checked when the crate compiles.
const _: () = {
    assert!(size_of::<QTailQLink>() == 16);
    assert!(offset_of!(QTailQLink, tql_next) == 0);
    assert!(offset_of!(QTailQLink, tql_prev) == 8);
    assert!(size_of::<CachedL2Table>() == 40);
    assert!(align_of::<CachedL2Table>() == 8);
    assert!(offset_of!(CachedL2Table, table) == 0);
    assert!(offset_of!(CachedL2Table, offset) == 8);
    assert!(offset_of!(CachedL2Table, node) == 16);
    assert!(offset_of!(CachedL2Table, r#ref) == 32);
    assert!(size_of::<L2TableCache>() == 24);
    assert!(align_of::<L2TableCache>() == 8);
    assert!(offset_of!(L2TableCache, entries) == 0);
    assert!(offset_of!(L2TableCache, n_entries) == 16);
    assert!(offset_of!(L2TableCache, handle) == 20);
};

/// The circular link of an element.
///
/// # Safety
/// `elm` must point to a valid `CachedL2Table`.
unsafe fn link_of(elm: *mut CachedL2Table) -> *mut QTailQLink {
    // SAFETY: the caller guarantees `elm` is valid; `tqe_circ` is a place
    // inside it and no reference is created.
    unsafe { addr_of_mut!((*elm).node.tqe_circ) }
}

/// The circular link of a head.
///
/// # Safety
/// `head` must point to a valid `L2TableCache`.
unsafe fn head_link(head: *mut L2TableCache) -> *mut QTailQLink {
    // SAFETY: as for `link_of`.
    unsafe { addr_of_mut!((*head).entries.tqh_circ) }
}

/// `QTAILQ_INIT`: an empty list whose last-link points at the head itself.
///
/// # Safety
/// `head` must point to writable memory of an `L2TableCache`.
pub unsafe fn qtailq_init(head: *mut L2TableCache) {
    // SAFETY: the caller guarantees `head` is valid and writable.
    unsafe {
        let h = head_link(head);
        (*h).tql_next = null_mut();
        (*h).tql_prev = h;
    }
}

/// `QTAILQ_INSERT_TAIL`.
///
/// # Safety
/// `head` must be a valid list (per docs/behaviour.md, "The list") and `elm` a valid entry that
/// is on no list.
pub unsafe fn qtailq_insert_tail(head: *mut L2TableCache, elm: *mut CachedL2Table) {
    // SAFETY: the caller guarantees both are valid, so the head's last-link
    // points at a live link (the head's own or the last element's).
    unsafe {
        let h = head_link(head);
        let e = link_of(elm);
        (*e).tql_next = null_mut();
        (*e).tql_prev = (*h).tql_prev;
        (*(*h).tql_prev).tql_next = elm.cast();
        (*h).tql_prev = e;
    }
}

/// `QTAILQ_REMOVE`; afterwards the element's links are all NULL, so
/// `QTAILQ_IN_USE` is false for it.
///
/// # Safety
/// `head` must be a valid list and `elm` one of its elements.
pub unsafe fn qtailq_remove(head: *mut L2TableCache, elm: *mut CachedL2Table) {
    // SAFETY: the caller guarantees `elm` is on the list of `head`, so its
    // neighbours' links are live.
    unsafe {
        let e = link_of(elm);
        let next = (*e).tql_next.cast::<CachedL2Table>();
        if next.is_null() {
            (*head_link(head)).tql_prev = (*e).tql_prev;
        } else {
            (*link_of(next)).tql_prev = (*e).tql_prev;
        }
        (*(*e).tql_prev).tql_next = next.cast();
        (*e).tql_prev = null_mut();
        (*e).tql_next = null_mut();
    }
}

/// Clears an element's links without touching any list (for elements whose
/// list is being discarded as a whole).
///
/// # Safety
/// `elm` must point to a valid entry.
pub unsafe fn qtailq_clear_links(elm: *mut CachedL2Table) {
    // SAFETY: the caller guarantees `elm` is valid.
    unsafe {
        let e = link_of(elm);
        (*e).tql_next = null_mut();
        (*e).tql_prev = null_mut();
    }
}
