// SPDX-License-Identifier: LGPL-2.1-or-later
//! Entry memory: every `CachedL2Table` the library hands out is the first
//! member of a slightly larger heap block whose hidden tail holds the
//! library's flags for it. Whether a pointer is such a block is answered by
//! the ledgers ([`crate::ledger`]) before anything is read through it.

use crate::abi::{CachedL2Table, CachedL2TableEntry, QTailQLink};
use crate::ledger::{self, Found};
use std::ffi::c_int;
use std::ptr::{null_mut, NonNull};

/// Flag: the entry is on a cache's list.
const FLAG_CACHED: u32 = 1;
/// Flag: the reference count reached `INT_MAX` (warn mode) and is frozen
/// there: the entry is never released.
const FLAG_SATURATED: u32 = 2;

/// The allocation behind every entry. `entry` comes first so a
/// `*mut CachedL2Table` given to C is a `*mut EntryBlock` too.
#[repr(C)]
pub struct EntryBlock {
    /// What C sees.
    pub entry: CachedL2Table,
    flags: u32,
    /// The shard of the ledger's table of recent live entries the entry
    /// was recorded in (`ledger::record_alloc`), for its release.
    shard: u32,
}

/// Hidden bytes per entry beyond the 40 C sees.
pub const HIDDEN_BYTES: usize = std::mem::size_of::<EntryBlock>() - std::mem::size_of::<CachedL2Table>();

/// A live entry owned by the library, as the core cache stores it. The
/// address is kept hidden (`ledger::hide`, as the ledgers keep it): a cache the caller never frees must not make its entries look
/// reachable to valgrind or LeakSanitizer, so they are reported lost as
/// with the C file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryPtr(NonNull<EntryBlock>);

/// What a pointer from C turned out to be.
pub enum Checked {
    /// One of ours, alive.
    Live(EntryPtr),
    /// One of ours, already released (its references were all dropped).
    Released,
    /// Not from `qed_alloc_l2_cache_entry`, or released long ago.
    Foreign,
}

impl EntryPtr {
    /// A new entry: zeroed, `ref = 1`, on no list, recorded as live. Aborts
    /// when out of memory, as glib's `g_malloc0` does.
    pub fn alloc() -> EntryPtr {
        let shard = ledger::my_shard();
        let block = Box::new(EntryBlock {
            entry: CachedL2Table {
                table: null_mut(),
                offset: 0,
                node: CachedL2TableEntry {
                    tqe_circ: QTailQLink {
                        tql_next: null_mut(),
                        tql_prev: null_mut(),
                    },
                },
                r#ref: 1,
            },
            flags: 0,
            shard,
        });
        let block = NonNull::from(Box::leak(block));
        ledger::record_alloc(block, shard);
        EntryPtr::hiding(block)
    }

    fn hiding(block: NonNull<EntryBlock>) -> EntryPtr {
        let hidden = block.as_ptr().map_addr(|a| ledger::hide(a) as usize);
        // SAFETY: a hidden address has high bits set, so it is not null.
        EntryPtr(unsafe { NonNull::new_unchecked(hidden) })
    }

    /// The block's real address (provenance kept through the hiding).
    #[inline(always)]
    fn block(self) -> *mut EntryBlock {
        self.0.as_ptr().map_addr(|a| ledger::hide(a) as usize)
    }

    /// Classifies a pointer that C passed in, from the library's records
    /// only: nothing is read through `p` unless it is a live entry.
    #[inline(always)]
    pub fn check(p: NonNull<CachedL2Table>) -> Checked {
        let block = p.as_ptr().cast::<EntryBlock>();
        if !block.is_aligned() {
            return Checked::Foreign;
        }
        match ledger::classify(block) {
            Found::Live => Checked::Live(EntryPtr::hiding(p.cast())),
            Found::Released => Checked::Released,
            Found::Unknown => Checked::Foreign,
        }
    }

    /// The pointer C sees.
    pub fn as_c(self) -> *mut CachedL2Table {
        self.block().cast()
    }

    /// The reference count.
    pub fn refs(self) -> c_int {
        // SAFETY: an EntryPtr is live until `release` consumes it.
        unsafe { (*self.as_c()).r#ref }
    }

    /// Sets the reference count.
    pub fn set_refs(self, refs: c_int) {
        // SAFETY: as in `refs`; calls on an entry are serialized by the
        // caller's lock (docs/behaviour.md, "Threads").
        unsafe { (*self.as_c()).r#ref = refs }
    }

    /// The table's offset in the image file.
    pub fn offset(self) -> u64 {
        // SAFETY: as in `refs`.
        unsafe { (*self.as_c()).offset }
    }

    fn flag(self, flag: u32) -> bool {
        // SAFETY: as in `refs`.
        unsafe { (*self.block()).flags & flag != 0 }
    }

    fn set_flag(self, flag: u32, on: bool) {
        // SAFETY: as in `set_refs`.
        unsafe {
            let flags = &mut (*self.block()).flags;
            *flags = if on { *flags | flag } else { *flags & !flag };
        }
    }

    /// True while the entry is on a cache's list.
    pub fn is_cached(self) -> bool {
        self.flag(FLAG_CACHED)
    }

    /// Records whether the entry is on a cache's list.
    pub fn set_cached(self, cached: bool) {
        self.set_flag(FLAG_CACHED, cached)
    }

    /// True once the count was frozen at `INT_MAX`.
    pub fn is_saturated(self) -> bool {
        self.flag(FLAG_SATURATED)
    }

    /// Freezes the count where it is: the entry is never released.
    pub fn saturate(self) {
        self.set_flag(FLAG_SATURATED, true)
    }

    /// Releases an entry whose count reached zero: `free()`s its table and
    /// moves the block to the calling thread's quarantine.
    ///
    /// # Safety
    /// No one may use `self` afterwards; the entry must be on no list.
    pub unsafe fn release(self) {
        let block = self.block();
        // SAFETY: the block is live and now unreferenced. The table came
        // from the caller's aligned allocator, released with free() (QEMU's
        // qemu_vfree is free() on POSIX).
        unsafe {
            libc::free((*block).entry.table.cast());
            (*block).entry.table = null_mut();
            ledger::record_release(NonNull::new_unchecked(block), (*block).shard);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_entry_is_live_zeroed_with_one_ref() {
        let e = EntryPtr::alloc();
        // SAFETY: `e` is live.
        let c = unsafe { &*e.as_c() };
        assert!(c.table.is_null());
        assert_eq!(c.offset, 0);
        assert_eq!(c.r#ref, 1);
        assert!(!e.is_cached());
        let live = EntryPtr::check(NonNull::new(e.as_c()).unwrap());
        assert!(matches!(live, Checked::Live(p) if p == e));
        e.set_refs(0);
        // SAFETY: unreferenced and on no list.
        unsafe { e.release() };
        let released = EntryPtr::check(NonNull::new(e.as_c()).unwrap());
        assert!(matches!(released, Checked::Released));
    }

    #[test]
    fn every_live_entry_is_found_when_the_recent_table_is_crowded() {
        // Far more entries than the process-wide table of recent live
        // entries has slots: many share a slot, and only the last one
        // allocated there is found in it; the rest must come from the
        // ledgers. A release must not clear a slot another entry holds.
        let n = if cfg!(miri) { 64 } else { 20_000 };
        let entries: Vec<EntryPtr> = (0..n).map(|_| EntryPtr::alloc()).collect();
        let check = |e: EntryPtr| EntryPtr::check(NonNull::new(e.as_c()).unwrap());
        for &e in &entries {
            assert!(matches!(check(e), Checked::Live(p) if p == e));
        }
        for (i, &e) in entries.iter().enumerate() {
            if i % 2 == 0 {
                e.set_refs(0);
                // SAFETY: unreferenced and on no list.
                unsafe { e.release() };
            }
        }
        for (i, &e) in entries.iter().enumerate() {
            if i % 2 == 0 {
                assert!(matches!(check(e), Checked::Released | Checked::Foreign));
            } else {
                assert!(matches!(check(e), Checked::Live(p) if p == e));
                e.set_refs(0);
                // SAFETY: unreferenced and on no list.
                unsafe { e.release() };
            }
        }
    }

    #[test]
    fn foreign_memory_is_not_ours_and_is_not_read() {
        // A block of exactly 40 bytes: the check must not read past it (or
        // at all: Miri would flag any read of its uninitialised bytes).
        let fake = Box::new(std::mem::MaybeUninit::<CachedL2Table>::uninit());
        let p = NonNull::new(Box::into_raw(fake).cast::<CachedL2Table>()).unwrap();
        assert!(matches!(EntryPtr::check(p), Checked::Foreign));
        // SAFETY: from Box::into_raw above.
        drop(unsafe { Box::from_raw(p.as_ptr().cast::<std::mem::MaybeUninit<CachedL2Table>>()) });
        assert_eq!(HIDDEN_BYTES, 8);
    }

    #[test]
    fn released_entry_is_recognised_on_another_thread() {
        struct SendPtr(*mut CachedL2Table);
        // SAFETY: the entry is handed over whole; the spawning thread waits.
        unsafe impl Send for SendPtr {}
        let e = EntryPtr::alloc();
        let p = SendPtr(e.as_c());
        std::thread::spawn(move || {
            let p = p;
            let Checked::Live(e) = EntryPtr::check(NonNull::new(p.0).unwrap()) else {
                panic!("a live entry of another thread must be found")
            };
            e.set_refs(0);
            // SAFETY: unreferenced and on no list.
            unsafe { e.release() };
        })
        .join()
        .unwrap();
        assert!(matches!(
            EntryPtr::check(NonNull::new(e.as_c()).unwrap()),
            Checked::Released
        ));
    }
}
