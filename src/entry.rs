// SPDX-License-Identifier: LGPL-2.1-or-later
//! Entries: every `CachedL2Table` the library hands out is the first member
//! of a block from the ledgers ([`crate::ledger`]) whose hidden tail holds
//! the library's flags for it; and every rule of the reference count lives
//! here (docs/api.md, "Conventions", and docs/behaviour.md, "The calls"):
//!
//! - a new entry holds one reference, the caller's ([`EntryPtr::alloc`]);
//! - a find hands out one more ([`EntryPtr::take_ref`]), and a count that
//!   would pass `INT_MAX` is frozen there instead (the entry then lives for
//!   ever, which is safe, unlike a wrap);
//! - a cached entry holds exactly one reference of the cache's, so a
//!   caller may drop a reference only while the count is above that
//!   ([`EntryPtr::caller_may_unref`]), and an entry with more is *pinned*:
//!   a request holds it, and no eviction may take it
//!   ([`EntryPtr::is_pinned`]);
//! - an entry that is not cached holds only callers' references, so a
//!   refused commit drops the one it was handed
//!   ([`EntryPtr::holds_callers_reference`]);
//! - at zero the table is `free()`d and the block goes to quarantine
//!   ([`EntryPtr::drop_ref`]);
//! - idle release (docs/idle.md) frees the table of a cached entry only
//!   the cache holds, and marks it; the cache's reference stays until the
//!   next call on the cache takes the entry out ([`EntryPtr::release_idle_table`]).
//!
//! The count is read and written with atomic accesses (plain loads and
//! stores on x86_64, a store-release on aarch64): the library's idle
//! thread reads it under the cache's lock, which `unref` (it has no cache
//! argument) does not take. An unref's release store pairs with the
//! thread's acquire load, so the caller's last use of the table happens
//! before the thread frees it.
//!
//! Entries are aliased by the C list, the core's nodes and the requests
//! that hold them, so nothing here can prove a handle alive: every method
//! that reads or writes through one is `unsafe`, and its caller says why
//! the entry is live at that point.

use crate::abi::{CachedL2Table, CachedL2TableEntry, QTailQLink};
use crate::ledger::{self, Found, BLOCK_LAYOUT};
use crate::memtools::hide;
use std::ffi::{c_int, c_void};
use std::ptr::{null_mut, NonNull};
use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};

/// Flag: the entry is on a cache's list.
const FLAG_CACHED: u8 = 1;
/// Flag: the reference count reached `INT_MAX` (warn mode) and is frozen
/// there: the entry is never released.
const FLAG_SATURATED: u8 = 2;

/// The references a new entry holds: the caller's one.
const NEW_ENTRY_REFS: c_int = 1;
/// The references the cache holds on an entry it lists.
const CACHE_REFS: c_int = 1;

/// What is laid out in every entry's block. `entry` comes first so a
/// `*mut CachedL2Table` given to C is a `*mut EntryBlock` too.
#[repr(C)]
struct EntryBlock {
    /// What C sees.
    entry: CachedL2Table,
    /// Written by the cache's calls (the caller's lock serializes them).
    flags: u8,
    /// 1 once the idle thread freed the table (under the cache's lock);
    /// a byte of its own, so the flags' writers never share a location
    /// with the thread.
    idle_released: AtomicU8,
    /// The shard of the ledger's table of recent live entries the entry
    /// was recorded in (`ledger::record_alloc`), for its release (below
    /// 16: `ledger::my_shard`).
    shard: u16,
    /// The idle epoch of the last find or commit (docs/idle.md), written
    /// only by the cache's calls with idle release on, under its lock.
    touched: u32,
}

// The block the ledgers hand out is exactly an EntryBlock.
const _: () = assert!(std::mem::size_of::<EntryBlock>() == BLOCK_LAYOUT.size());
const _: () = assert!(std::mem::align_of::<EntryBlock>() <= BLOCK_LAYOUT.align());

/// Hidden bytes per entry beyond the 40 C sees.
pub const HIDDEN_BYTES: usize = std::mem::size_of::<EntryBlock>() - std::mem::size_of::<CachedL2Table>();

/// A handle on one of the library's entries, as the core cache stores it.
/// The address is kept hidden (`memtools::hide`): a cache the caller never
/// frees must not make its entries look reachable to valgrind or
/// LeakSanitizer, so they are reported lost as with the C file. Copying
/// a handle proves nothing about the entry: see the module doc.
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

/// A find was refused a reference: the count is at `INT_MAX`. It stays
/// there, frozen, and the entry is never released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Saturated;

/// Why a caller may not drop a reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotHeld {
    /// The count is already zero or less (only a released entry has that,
    /// so this is reached only if memory was overwritten).
    NoneLeft(c_int),
    /// The one reference left is the cache's own.
    CachesOwn,
}

impl EntryPtr {
    /// A new entry: zeroed, holding the caller's one reference, on no
    /// list, recorded as live. Aborts when out of memory, as glib's
    /// `g_malloc0` does.
    pub fn alloc() -> EntryPtr {
        let shard = ledger::my_shard();
        let block = ledger::alloc_block().cast::<EntryBlock>();
        // SAFETY: a fresh block of EntryBlock's size and alignment (checked
        // above), not yet visible to anyone.
        unsafe {
            block.as_ptr().write(EntryBlock {
                entry: CachedL2Table {
                    table: null_mut(),
                    offset: 0,
                    node: CachedL2TableEntry {
                        tqe_circ: QTailQLink {
                            tql_next: null_mut(),
                            tql_prev: null_mut(),
                        },
                    },
                    r#ref: NEW_ENTRY_REFS,
                },
                flags: 0,
                idle_released: AtomicU8::new(0),
                shard: shard as u16,
                touched: 0,
            })
        };
        ledger::record_alloc(block.cast(), shard);
        EntryPtr::hiding(block)
    }

    fn hiding(block: NonNull<EntryBlock>) -> EntryPtr {
        let hidden = block.as_ptr().map_addr(|a| hide(a) as usize);
        // SAFETY: a hidden address has high bits set, so it is not null.
        EntryPtr(unsafe { NonNull::new_unchecked(hidden) })
    }

    /// The block's real address (provenance kept through the hiding).
    #[inline(always)]
    fn block(self) -> *mut EntryBlock {
        self.0.as_ptr().map_addr(|a| hide(a) as usize)
    }

    /// Classifies a pointer that C passed in, from the library's records
    /// only: nothing is read through `p`.
    #[inline(always)]
    pub fn check(p: NonNull<CachedL2Table>) -> Checked {
        let block = p.as_ptr().cast::<EntryBlock>();
        if !block.is_aligned() {
            return Checked::Foreign;
        }
        match ledger::classify(block.cast()) {
            Found::Live => Checked::Live(EntryPtr::hiding(p.cast())),
            Found::Released => Checked::Released,
            Found::Unknown => Checked::Foreign,
        }
    }

    /// The pointer C sees (computing it reads nothing).
    #[inline(always)]
    pub fn as_c(self) -> *mut CachedL2Table {
        self.block().cast()
    }

    /// The reference count.
    ///
    /// # Safety
    /// The entry is live, and no other thread uses it during the call
    /// (calls on an entry are serialized by the caller's lock).
    #[inline(always)]
    pub unsafe fn refs(self) -> c_int {
        // SAFETY: live, per the caller.
        unsafe { self.ref_word().load(Ordering::Relaxed) }
    }

    /// The count as an atomic (see the module doc).
    ///
    /// # Safety
    /// The entry is live.
    #[inline(always)]
    unsafe fn ref_word<'a>(self) -> &'a AtomicI32 {
        // SAFETY: live, per the caller; `ref` is an aligned int, only ever
        // accessed atomically by the library.
        unsafe { AtomicI32::from_ptr(&raw mut (*self.as_c()).r#ref) }
    }

    /// Stores a new count; a release store, so that the idle thread,
    /// which reads it with acquire, sees everything done before.
    ///
    /// # Safety
    /// As for [`EntryPtr::refs`].
    #[inline(always)]
    unsafe fn set_refs(self, refs: c_int) {
        // SAFETY: per the caller.
        unsafe { self.ref_word().store(refs, Ordering::Release) }
    }

    /// True when only the cache holds this cached entry (no request, no
    /// frozen count): the idle thread's test, an acquire load (see the
    /// module doc).
    ///
    /// # Safety
    /// The entry is live (cached, so kept by the cache's reference), and
    /// the cache's lock is held.
    #[inline]
    pub unsafe fn only_the_cache_holds(self) -> bool {
        // SAFETY: per the caller.
        unsafe { self.ref_word().load(Ordering::Acquire) == CACHE_REFS }
    }

    /// Stamps the entry with the idle epoch of a find or commit.
    ///
    /// # Safety
    /// As for [`EntryPtr::refs`], and the cache's lock is held.
    #[inline(always)]
    pub unsafe fn touch(self, epoch: u32) {
        // SAFETY: per the caller.
        unsafe { (*self.block()).touched = epoch }
    }

    /// The idle epoch of the last find or commit.
    ///
    /// # Safety
    /// As for [`EntryPtr::touch`].
    #[inline]
    pub unsafe fn touched(self) -> u32 {
        // SAFETY: per the caller.
        unsafe { (*self.block()).touched }
    }

    /// True once [`EntryPtr::release_idle_table`] freed the table.
    ///
    /// # Safety
    /// As for [`EntryPtr::touch`].
    #[inline]
    pub unsafe fn is_idle_released(self) -> bool {
        // SAFETY: per the caller.
        unsafe { (*self.block()).idle_released.load(Ordering::Relaxed) != 0 }
    }

    /// Idle release: marks the entry released, sets `table` to NULL and
    /// returns the table, which the caller frees (after the cache's lock
    /// is dropped). The entry stays cached, with the cache's reference,
    /// until the cache's next call takes it out. The mark is stored after
    /// `table` is cleared, with release: a fork child that inherits a
    /// half-done release finds either an entry left alone or one whose
    /// table is NULL (never a freed table; at worst that table leaks in
    /// the child).
    ///
    /// # Safety
    /// The entry is cached and only the cache holds it
    /// ([`EntryPtr::only_the_cache_holds`]), the cache's lock is held.
    pub unsafe fn release_idle_table(self) -> *mut c_void {
        // SAFETY: per the caller: no request reads `table`, the cache's
        // calls are excluded by its lock.
        unsafe {
            let b = self.block();
            let table = (*b).entry.table.cast::<c_void>();
            (*b).entry.table = null_mut();
            (*b).idle_released.store(1, Ordering::Release);
            table
        }
    }

    /// The table's offset in the image file.
    ///
    /// # Safety
    /// As for [`EntryPtr::refs`].
    #[inline(always)]
    pub unsafe fn offset(self) -> u64 {
        // SAFETY: live, per the caller.
        unsafe { (*self.as_c()).offset }
    }

    /// The heap bytes of the entry's table as the allocator counts them
    /// (`malloc_usable_size`; 0 for a NULL table), for the statistics.
    ///
    /// # Safety
    /// As for [`EntryPtr::refs`].
    #[inline]
    pub unsafe fn table_bytes(self) -> u64 {
        // SAFETY: live, per the caller; `table` is NULL or a block of the
        // allocator that `free()` releases (the API's contract).
        unsafe { libc::malloc_usable_size((*self.as_c()).table.cast()) as u64 }
    }

    /// # Safety
    /// As for [`EntryPtr::refs`].
    #[inline(always)]
    unsafe fn flag(self, flag: u8) -> bool {
        // SAFETY: live, per the caller.
        unsafe { (*self.block()).flags & flag != 0 }
    }

    /// # Safety
    /// As for [`EntryPtr::refs`].
    #[inline(always)]
    unsafe fn set_flag(self, flag: u8, on: bool) {
        // SAFETY: live and not used elsewhere, per the caller.
        unsafe {
            let flags = &mut (*self.block()).flags;
            *flags = if on { *flags | flag } else { *flags & !flag };
        }
    }

    /// True while the entry is on a cache's list.
    ///
    /// # Safety
    /// As for [`EntryPtr::refs`].
    #[inline(always)]
    pub unsafe fn is_cached(self) -> bool {
        // SAFETY: per the caller.
        unsafe { self.flag(FLAG_CACHED) }
    }

    /// Records that the entry joined (true) or left (false) a cache's
    /// list, with the reference the caller handed to the cache.
    ///
    /// # Safety
    /// As for [`EntryPtr::refs`].
    #[inline(always)]
    pub unsafe fn set_cached(self, cached: bool) {
        // SAFETY: per the caller.
        unsafe { self.set_flag(FLAG_CACHED, cached) }
    }

    /// True when a request holds the entry beyond the cache's reference:
    /// then no eviction may take it (the rule of QEMU commit 14fe292d86).
    ///
    /// # Safety
    /// As for [`EntryPtr::refs`].
    #[inline(always)]
    pub unsafe fn is_pinned(self) -> bool {
        // SAFETY: per the caller.
        unsafe { self.refs() > CACHE_REFS }
    }

    /// Whether a caller holds a reference it may drop: not when none is
    /// left, nor when the only one left is the cache's. `Ok` carries the
    /// count read, for [`EntryPtr::drop_ref_read`].
    ///
    /// # Safety
    /// As for [`EntryPtr::refs`].
    #[inline(always)]
    pub unsafe fn caller_may_unref(self) -> Result<c_int, NotHeld> {
        // SAFETY: per the caller.
        let refs = unsafe { self.refs() };
        if refs > CACHE_REFS {
            // The usual case, a find's reference: the flags are not read.
            Ok(refs)
        } else if refs < 1 {
            Err(NotHeld::NoneLeft(refs))
        // SAFETY: per the caller.
        } else if unsafe { self.is_cached() } {
            Err(NotHeld::CachesOwn)
        } else {
            Ok(refs)
        }
    }

    /// True when every reference is a caller's (the entry is not cached):
    /// a commit refused because of the cache drops the one it was handed.
    ///
    /// # Safety
    /// As for [`EntryPtr::refs`].
    #[inline(always)]
    pub unsafe fn holds_callers_reference(self) -> bool {
        // SAFETY: per the caller.
        unsafe { !self.is_cached() }
    }

    /// One more reference, for a find. At `INT_MAX` the count is frozen
    /// instead (reported by the caller as a misuse, once: a frozen count
    /// refuses silently).
    ///
    /// `refs` is the count the caller has just read ([`Self::refs`], in the
    /// same call under the caller's lock): the hit path reads it once for
    /// its probe and for this.
    ///
    /// # Safety
    /// As for [`EntryPtr::refs`].
    #[inline(always)]
    pub unsafe fn take_ref(self, refs: c_int) -> Result<(), Saturated> {
        // SAFETY: per the caller.
        unsafe {
            if refs == c_int::MAX {
                if self.flag(FLAG_SATURATED) {
                    return Ok(());
                }
                self.set_flag(FLAG_SATURATED, true);
                return Err(Saturated);
            }
            self.set_refs(refs + 1);
        }
        Ok(())
    }

    /// Drops one reference; at zero the table is `free()`d and the entry
    /// released (quarantined). Returns the count left, `None` when it is
    /// frozen (nothing changed).
    ///
    /// # Safety
    /// As for [`EntryPtr::refs`]; the one dropped must be held (see
    /// [`EntryPtr::caller_may_unref`], or the cache's own once the entry
    /// left the list). When the count reaches zero the entry must be on no
    /// list, and no one may use the handle afterwards.
    #[inline(always)]
    pub unsafe fn drop_ref(self) -> Option<c_int> {
        // SAFETY: per the caller.
        unsafe { self.drop_ref_read(self.refs()) }
    }

    /// [`EntryPtr::drop_ref`] with the count the caller just read
    /// (`caller_may_unref` returns it): one load for both.
    ///
    /// # Safety
    /// As for [`EntryPtr::drop_ref`]; `refs` is the count now.
    #[inline(always)]
    pub unsafe fn drop_ref_read(self, refs: c_int) -> Option<c_int> {
        // SAFETY: per the caller.
        unsafe {
            // Only a count at INT_MAX can be frozen, so the flag is read
            // only then.
            if refs == c_int::MAX && self.flag(FLAG_SATURATED) {
                return None;
            }
            self.set_refs(refs - 1);
            if refs - 1 == 0 {
                self.release();
            }
            Some(refs - 1)
        }
    }

    /// Releases an entry whose count reached zero: `free()`s its table and
    /// moves the block to the calling thread's quarantine.
    ///
    /// # Safety
    /// As for [`EntryPtr::drop_ref`] at zero.
    #[cold]
    #[inline(never)]
    unsafe fn release(self) {
        let block = self.block();
        // SAFETY: the block is live and now unreferenced. The table came
        // from the caller's aligned allocator, released with free() (QEMU's
        // qemu_vfree is free() on POSIX).
        unsafe {
            libc::free((*block).entry.table.cast());
            (*block).entry.table = null_mut();
            ledger::record_release(NonNull::new_unchecked(block).cast(), u32::from((*block).shard));
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
        // SAFETY: `e` is live (until the drop_ref below).
        unsafe {
            assert!(!e.is_cached());
            assert!(!e.is_pinned());
            assert_eq!(e.caller_may_unref(), Ok(1));
        }
        let live = EntryPtr::check(NonNull::new(e.as_c()).unwrap());
        assert!(matches!(live, Checked::Live(p) if p == e));
        // SAFETY: the caller's one reference, on no list.
        assert_eq!(unsafe { e.drop_ref() }, Some(0));
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
                // SAFETY: live, its one reference, on no list.
                unsafe { e.drop_ref() };
            }
        }
        for (i, &e) in entries.iter().enumerate() {
            if i % 2 == 0 {
                assert!(matches!(check(e), Checked::Released | Checked::Foreign));
            } else {
                assert!(matches!(check(e), Checked::Live(p) if p == e));
                // SAFETY: live, its one reference, on no list.
                unsafe { e.drop_ref() };
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
            // SAFETY: live, its one reference, on no list.
            unsafe { e.drop_ref() };
        })
        .join()
        .unwrap();
        assert!(matches!(
            EntryPtr::check(NonNull::new(e.as_c()).unwrap()),
            Checked::Released
        ));
    }

    #[test]
    // malloc_usable_size: not in Miri.
    #[cfg_attr(miri, ignore)]
    fn idle_release_frees_only_the_table_and_marks_the_entry() {
        let e = EntryPtr::alloc();
        // SAFETY: `e` stays live until its last reference is dropped at
        // the end; no other thread sees it.
        unsafe {
            // SAFETY: malloc'd, released with free() by the release.
            let table = libc::malloc(4096);
            (*e.as_c()).table = table.cast();
            (*e.as_c()).offset = 0x10000;
            e.set_cached(true);
            assert!(e.only_the_cache_holds());
            assert_eq!(e.take_ref(e.refs()), Ok(()));
            assert!(!e.only_the_cache_holds(), "a request holds it");
            assert_eq!(e.drop_ref(), Some(1));
            e.touch(7);
            assert_eq!(e.touched(), 7);
            assert!(!e.is_idle_released());
            assert!(e.table_bytes() >= 4096);
            let freed = e.release_idle_table();
            assert_eq!(freed, table);
            assert!(e.is_idle_released() && (*e.as_c()).table.is_null());
            assert_eq!(e.table_bytes(), 0);
            assert_eq!(e.refs(), 1, "the cache's reference stays");
            libc::free(freed);
            e.set_cached(false);
            assert_eq!(e.drop_ref(), Some(0), "released with a NULL table");
        }
    }

    #[test]
    fn reference_rules() {
        let e = EntryPtr::alloc();
        // SAFETY: `e` stays live until its last reference is dropped at
        // the end; no other thread sees it.
        unsafe {
            // Committed: the caller's reference became the cache's.
            e.set_cached(true);
            assert_eq!(e.caller_may_unref(), Err(NotHeld::CachesOwn));
            assert!(!e.is_pinned() && !e.holds_callers_reference());
            // A find: a request holds it, so it is pinned.
            assert_eq!(e.take_ref(e.refs()), Ok(()));
            assert!(e.is_pinned());
            assert_eq!(e.caller_may_unref(), Ok(2));
            assert_eq!(e.drop_ref(), Some(1));
            assert!(!e.is_pinned());
            // At INT_MAX the count freezes, once reported.
            (*e.as_c()).r#ref = c_int::MAX - 1;
            assert_eq!(e.take_ref(e.refs()), Ok(()));
            assert_eq!(e.take_ref(e.refs()), Err(Saturated));
            assert_eq!(e.take_ref(e.refs()), Ok(()), "reported once");
            assert_eq!(e.refs(), c_int::MAX);
            assert_eq!(e.drop_ref(), None, "frozen: never released");
            assert_eq!(e.refs(), c_int::MAX);
            // An entry nobody can release any more is left as it is; a
            // fresh one shows the zero rule and the NoneLeft guard.
            let f = EntryPtr::alloc();
            (*f.as_c()).r#ref = 0;
            assert_eq!(f.caller_may_unref(), Err(NotHeld::NoneLeft(0)));
            (*f.as_c()).r#ref = 1;
            assert_eq!(f.drop_ref(), Some(0));
            assert!(matches!(
                EntryPtr::check(NonNull::new(f.as_c()).unwrap()),
                Checked::Released
            ));
            // Leave `e` to its frozen count (it is never released): clear
            // the freeze so the test can release it.
            (*e.block()).flags = FLAG_CACHED;
            (*e.as_c()).r#ref = 1;
            e.set_cached(false);
            assert!(e.holds_callers_reference());
            assert_eq!(e.drop_ref(), Some(0));
        }
    }
}
