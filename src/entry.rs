// SPDX-License-Identifier: LGPL-2.1-or-later
//! Entry memory: every `CachedL2Table` the library hands out is the first
//! member of a larger block whose hidden tail lets the library tell its own
//! live entries from released ones and from foreign pointers (docs/misuse.md).
//!
//! A released block is not returned to the allocator at once: it waits in a
//! bounded quarantine marked dead, so a double unref soon after the last
//! one is recognised instead of touching reused memory.

use crate::abi::{CachedL2Table, CachedL2TableEntry, QEDTable, QTailQLink};
use crossbeam_utils::CachePadded;
use std::collections::VecDeque;
use std::ffi::c_int;
use std::ptr::{null_mut, NonNull};
use std::sync::Mutex;

/// Cookie keys: a block's cookie is its address mixed with one of these.
const LIVE_KEY: u32 = 0x51ED_2CAC;
const DEAD_KEY: u32 = 0xDEAD_2CAC;

/// Flag: the entry is on a cache's list.
const FLAG_CACHED: u32 = 1;

/// The allocation behind every entry. `entry` comes first so a
/// `*mut CachedL2Table` given to C is a `*mut EntryBlock` too.
#[repr(C)]
pub struct EntryBlock {
    /// What C sees.
    pub entry: CachedL2Table,
    cookie: u32,
    flags: u32,
}

/// Hidden bytes per entry beyond the 40 C sees.
pub const HIDDEN_BYTES: usize = std::mem::size_of::<EntryBlock>() - std::mem::size_of::<CachedL2Table>();

fn cookie(block: *const EntryBlock, key: u32) -> u32 {
    let addr = block as usize as u64;
    ((addr >> 3) ^ (addr >> 35)) as u32 ^ key
}

/// A live entry owned by the library, as the core cache stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryPtr(NonNull<EntryBlock>);

/// What a pointer from C turned out to be.
pub enum Checked {
    /// One of ours, alive.
    Live(EntryPtr),
    /// One of ours, already released (its references were all dropped).
    Released,
    /// Not from `qed_alloc_l2_cache_entry` (or released long ago).
    Foreign,
}

impl EntryPtr {
    /// A new entry: zeroed, `ref = 1`, on no list. Aborts when out of
    /// memory, as glib's `g_malloc0` does.
    pub fn alloc() -> EntryPtr {
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
            cookie: 0,
            flags: 0,
        });
        let ptr = Box::into_raw(block);
        // SAFETY: `ptr` was just made from a Box and is exclusively ours.
        unsafe { (*ptr).cookie = cookie(ptr, LIVE_KEY) };
        // SAFETY: Box::into_raw never returns NULL.
        EntryPtr(unsafe { NonNull::new_unchecked(ptr) })
    }

    /// Classifies a pointer that C passed in.
    ///
    /// # Safety
    /// `p` must be NULL-checked by the caller and, if it is not one of ours,
    /// point to at least `size_of::<EntryBlock>()` readable bytes (true of
    /// any pointer the library handed out, and of most misused ones; a
    /// pointer to less memory is a bug the check cannot fully catch).
    pub unsafe fn check(p: NonNull<CachedL2Table>) -> Checked {
        let block = p.as_ptr().cast::<EntryBlock>();
        if block.align_offset(std::mem::align_of::<EntryBlock>()) != 0 {
            return Checked::Foreign;
        }
        // SAFETY: aligned and readable per the caller's guarantee.
        let c = unsafe { (*block).cookie };
        if c == cookie(block, LIVE_KEY) {
            // SAFETY: a live cookie marks one of our boxes.
            Checked::Live(EntryPtr(unsafe { NonNull::new_unchecked(block) }))
        } else if c == cookie(block, DEAD_KEY) {
            Checked::Released
        } else {
            Checked::Foreign
        }
    }

    /// The pointer C sees.
    pub fn as_c(self) -> *mut CachedL2Table {
        self.0.as_ptr().cast()
    }

    /// The reference count.
    pub fn refs(self) -> c_int {
        // SAFETY: an EntryPtr is live until `release` consumes it.
        unsafe { (*self.as_c()).r#ref }
    }

    /// Sets the reference count.
    pub fn set_refs(self, refs: c_int) {
        // SAFETY: as in `refs`; calls on an entry are serialized by the
        // caller's lock (docs/behaviour.md, "How QEMU calls it").
        unsafe { (*self.as_c()).r#ref = refs }
    }

    /// The table's offset in the image file.
    pub fn offset(self) -> u64 {
        // SAFETY: as in `refs`.
        unsafe { (*self.as_c()).offset }
    }

    /// True while the entry is on a cache's list.
    pub fn is_cached(self) -> bool {
        // SAFETY: as in `refs`.
        unsafe { (*self.0.as_ptr()).flags & FLAG_CACHED != 0 }
    }

    /// Records whether the entry is on a cache's list.
    pub fn set_cached(self, cached: bool) {
        // SAFETY: as in `set_refs`.
        unsafe {
            let flags = &mut (*self.0.as_ptr()).flags;
            *flags = if cached {
                *flags | FLAG_CACHED
            } else {
                *flags & !FLAG_CACHED
            };
        }
    }

    /// Releases an entry whose count reached zero: `free()`s its table and
    /// puts the block in quarantine, marked dead.
    ///
    /// # Safety
    /// No one may use `self` afterwards; the entry must be on no list.
    pub unsafe fn release(self) {
        let block = self.0.as_ptr();
        // SAFETY: the block is live and now unreferenced. The table came
        // from the caller's aligned allocator, released with free() per
        // docs/behaviour.md (QEMU's qemu_vfree is free() on POSIX).
        unsafe {
            libc::free((*block).entry.table.cast());
            (*block).entry.table = null_mut::<QEDTable>();
            (*block).cookie = cookie(block, DEAD_KEY);
        }
        quarantine(self.0);
    }
}

/// Dead blocks kept per shard before the oldest goes back to the allocator.
const QUARANTINE_PER_SHARD: usize = 128;
const QUARANTINE_SHARDS: usize = 8;

struct DeadBlock(NonNull<EntryBlock>);
// SAFETY: a dead block is owned by the quarantine alone; nobody else may
// touch it, so moving it between threads is fine.
unsafe impl Send for DeadBlock {}

impl Drop for DeadBlock {
    fn drop(&mut self) {
        // SAFETY: the block came from Box::into_raw in `alloc` and nobody
        // else holds it any more.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

/// Sharded by address so threads releasing entries of different images
/// rarely meet on one lock; this is off the hit path (docs/behaviour.md, "Threads").
static QUARANTINE: [CachePadded<Mutex<VecDeque<DeadBlock>>>; QUARANTINE_SHARDS] =
    [const { CachePadded::new(Mutex::new(VecDeque::new())) }; QUARANTINE_SHARDS];

fn quarantine(block: NonNull<EntryBlock>) {
    let shard = (block.as_ptr() as usize >> 6) % QUARANTINE_SHARDS;
    let oldest = {
        let mut q = QUARANTINE[shard].lock().unwrap_or_else(|e| e.into_inner());
        q.push_back(DeadBlock(block));
        if q.len() > QUARANTINE_PER_SHARD {
            q.pop_front()
        } else {
            None
        }
    };
    drop(oldest); // freed outside the lock
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
        // SAFETY: ours, so readable.
        let live = unsafe { EntryPtr::check(NonNull::new(e.as_c()).unwrap()) };
        assert!(matches!(live, Checked::Live(p) if p == e));
        e.set_refs(0);
        // SAFETY: unreferenced and on no list.
        unsafe { e.release() };
        // SAFETY: the block sits in quarantine, so it is still readable.
        let released = unsafe { EntryPtr::check(NonNull::new(e.as_c()).unwrap()) };
        assert!(matches!(released, Checked::Released));
    }

    #[test]
    fn foreign_memory_is_not_ours() {
        let mut fake = [0u64; 8];
        let p = NonNull::new(fake.as_mut_ptr().cast::<CachedL2Table>()).unwrap();
        // SAFETY: `fake` is 64 readable bytes, more than a block.
        assert!(matches!(unsafe { EntryPtr::check(p) }, Checked::Foreign));
        assert_eq!(HIDDEN_BYTES, 8);
    }
}
