// SPDX-License-Identifier: LGPL-2.1-or-later
//! Which pointers are the library's entries, alive or released, answered
//! from the library's own records and never by reading the pointee.
//!
//! Every thread that allocates or releases entries owns a *ledger*: a table
//! of the entries it allocated that are still alive, a table of the
//! entries it released recently, and the quarantine holding those released
//! blocks (poisoned for memory checkers) until they are given back to the
//! allocator. A ledger is keyed by `address ^ SECRET`, never by a plain
//! address, so the library's records never make a leaked entry look
//! reachable to valgrind or LeakSanitizer.
//!
//! The owning thread reads and inserts into its own tables with plain
//! atomic loads and stores, no lock and no cache line another thread
//! writes: the request paths of threads that use different caches never
//! meet. A different thread (an entry allocated on one thread and released
//! on another, as when a cache moves between QEMU iothreads) goes through
//! the ledger list and each ledger's lock. Slots change only in ways that
//! keep that safe: only the owner fills an empty or deleted slot, anyone
//! deleting a key marks exactly the slot that holds it, and a table is
//! rebuilt only with its ledger's lock held.
//!
//! A ledger outlives its thread: when the thread exits the ledger is
//! unclaimed, keeps its records, and is taken over by the next new thread.

use crate::entry::EntryBlock;
use crate::memtools;
use crate::sync::{ensure_fork_handlers, Locked, RawLock};
use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::ptr::{null_mut, NonNull};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

/// How many released entries each thread keeps in quarantine: an entry is
/// recognised as released (a double unref, a commit after release) while it
/// is among the last `QED_L2_CACHE_QUARANTINE_PER_THREAD` entries released
/// by the thread that released it. After that its memory goes back to the
/// allocator, and a stale pointer to it is reported as not allocated by the
/// library, unless the allocator has handed that address out again for a
/// new entry: then the call acts on the new entry, which no check can tell
/// apart (docs/misuse.md, "Limits").
pub const QED_L2_CACHE_QUARANTINE_PER_THREAD: usize = 4096;

const EMPTY: u64 = 0;
const DELETED: u64 = 1;

/// The process's key secret: random, with the top bit set so that a key is
/// never a canonical address, and bit 2 set so that the key of an 8-byte
/// aligned address is never `EMPTY` or `DELETED`.
static SECRET: AtomicU64 = AtomicU64::new(0);

#[inline(always)]
fn secret() -> u64 {
    let s = SECRET.load(Ordering::Relaxed);
    if s != 0 {
        return s;
    }
    new_secret()
}

#[cold]
fn new_secret() -> u64 {
    let mut random = 0u64;
    #[cfg(not(miri))]
    // SAFETY: getrandom writes at most 8 bytes into `random`.
    unsafe {
        libc::getrandom((&mut random as *mut u64).cast(), 8, libc::GRND_NONBLOCK);
    }
    // Without entropy (early boot) a fixed pattern still hides addresses.
    random ^= 0x5bd1_e995_9e37_79b9;
    let fresh = (random | (1 << 63) | 0b100) & !0b011;
    match SECRET.compare_exchange(0, fresh, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => fresh,
        Err(winner) => winner,
    }
}

/// An address as the library's records keep it: never a plain pointer.
#[inline(always)]
pub fn hide(addr: usize) -> u64 {
    addr as u64 ^ secret()
}

/// The record key of an entry.
#[inline]
fn key_of(block: *const EntryBlock) -> u64 {
    hide(block as usize)
}

#[inline]
fn hash(key: u64) -> usize {
    let m = (key as u128).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((m >> 64) as u64 ^ m as u64) as usize
}

/// An open-addressing set of keys whose slots other threads may read.
struct KeyTable {
    slots: Box<[AtomicU64]>,
    mask: usize,
}

impl KeyTable {
    fn new(capacity: usize) -> Box<KeyTable> {
        let capacity = capacity.next_power_of_two().max(64);
        Box::new(KeyTable {
            slots: (0..capacity).map(|_| AtomicU64::new(EMPTY)).collect(),
            mask: capacity - 1,
        })
    }

    /// The slot holding `key`.
    #[inline(always)]
    fn find(&self, key: u64) -> Option<usize> {
        let mut i = hash(key) & self.mask;
        loop {
            match self.slots[i].load(Ordering::Acquire) {
                k if k == key => return Some(i),
                EMPTY => return None,
                _ => i = (i + 1) & self.mask,
            }
        }
    }

    /// Stores `key` (not present) in the first free slot; true when that
    /// slot was empty rather than deleted. Owner only.
    fn insert(&self, key: u64) -> bool {
        let mut i = hash(key) & self.mask;
        loop {
            let k = self.slots[i].load(Ordering::Relaxed);
            if k == EMPTY || k == DELETED {
                self.slots[i].store(key, Ordering::Release);
                return k == EMPTY;
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Deletes the key in slot `i`; by the owner it may empty the slot
    /// (true) when that ends no probe chain.
    fn delete(&self, i: usize, by_owner: bool) -> bool {
        let next_empty = self.slots[(i + 1) & self.mask].load(Ordering::Relaxed) == EMPTY;
        let emptied = by_owner && next_empty;
        self.slots[i].store(if emptied { EMPTY } else { DELETED }, Ordering::Release);
        emptied
    }

    fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.slots
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .filter(|&k| k != EMPTY && k != DELETED)
    }

    fn capacity(&self) -> usize {
        self.mask + 1
    }
}

/// One of a ledger's two tables, with the count of non-empty slots (the
/// owner's business: only the owner turns an empty slot into a used one).
struct Table {
    keys: AtomicPtr<KeyTable>,
    used: UnsafeCell<usize>,
}

impl Table {
    fn new() -> Table {
        Table {
            keys: AtomicPtr::new(Box::into_raw(KeyTable::new(64))),
            used: UnsafeCell::new(0),
        }
    }

    fn get(&self) -> &KeyTable {
        // SAFETY: the pointer is always a live KeyTable: it is replaced only
        // under the ledger's lock by its owner, and the old one is freed
        // there, when no other thread can be reading it (they read under
        // the lock) and the owner is not (it is the one replacing it).
        unsafe { &*self.keys.load(Ordering::Acquire) }
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        // SAFETY: the table owns its KeyTable.
        drop(unsafe { Box::from_raw(*self.keys.get_mut()) });
    }
}

/// A thread's records.
pub struct Ledger {
    lock: RawLock,
    live: Table,
    released: Table,
    /// Released blocks, oldest first. Owner only.
    quarantine: UnsafeCell<VecDeque<NonNull<EntryBlock>>>,
    /// A live thread owns this ledger.
    claimed: AtomicBool,
}

// SAFETY: the owner-only parts (`used`, `quarantine`) are touched by the
// claiming thread alone (claims hand over with Release/Acquire), the rest
// is atomics and the lock.
unsafe impl Sync for Ledger {}
// SAFETY: as above.
unsafe impl Send for Ledger {}

struct LedgerPtr(NonNull<Ledger>);
// SAFETY: ledgers are shared by design, see `Ledger`.
unsafe impl Send for LedgerPtr {}

/// Every ledger ever created (until unload), in creation order.
static LEDGERS: Locked<Vec<LedgerPtr>> = Locked::new(Vec::new());

/// The pthread key whose value is the calling thread's ledger; its
/// destructor unclaims the ledger when the thread exits.
/// 0: none, 1: being created, 2 + key: created.
static THREAD_KEY: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_thread_exit(ledger: *mut libc::c_void) {
    // A later call on this thread (from another thread-exit destructor)
    // takes a ledger afresh instead of using one another thread may own.
    MINE.with(|m| m.set(null_mut()));
    if let Some(ledger) = NonNull::new(ledger.cast::<Ledger>()) {
        // SAFETY: the value was set by `current` to a live ledger, and
        // ledgers are freed only at unload, which deletes the key first.
        unsafe { ledger.as_ref() }.claimed.store(false, Ordering::Release);
    }
}

#[inline(always)]
fn thread_key() -> libc::pthread_key_t {
    match THREAD_KEY.load(Ordering::Acquire) {
        k if k >= 2 => (k - 2) as libc::pthread_key_t,
        _ => make_thread_key(),
    }
}

#[cold]
fn make_thread_key() -> libc::pthread_key_t {
    loop {
        match THREAD_KEY.load(Ordering::Acquire) {
            0 => {
                if THREAD_KEY
                    .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    let mut key: libc::pthread_key_t = 0;
                    // SAFETY: `key` is writable; the destructor is ours.
                    let rc = unsafe { libc::pthread_key_create(&mut key, Some(on_thread_exit)) };
                    assert!(rc == 0, "pthread_key_create failed");
                    THREAD_KEY.store(2 + key as usize, Ordering::Release);
                    return key;
                }
            }
            1 => std::hint::spin_loop(),
            k => return (k - 2) as libc::pthread_key_t,
        }
    }
}

/// The calling thread's ledger: found, taken over from an exited thread,
/// or created.
#[inline(always)]
pub fn current() -> &'static Ledger {
    let mine = MINE.with(|m| m.get());
    if let Some(ledger) = NonNull::new(mine) {
        // SAFETY: ledgers live until unload, which clears this pointer.
        return unsafe { ledger.as_ref() };
    }
    claim(thread_key())
}

thread_local! {
    /// The calling thread's ledger: a copy of the thread key's value that
    /// is cheaper to read (no destructor: the key's does the work).
    static MINE: std::cell::Cell<*mut Ledger> = const { std::cell::Cell::new(null_mut()) };
}

#[cold]
fn claim(key: libc::pthread_key_t) -> &'static Ledger {
    ensure_fork_handlers();
    let ledger = LEDGERS.with(|all| {
        let unclaimed = all.iter().find(|l| {
            // SAFETY: ledgers in the list live until unload.
            let l = unsafe { l.0.as_ref() };
            l.claimed
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        });
        match unclaimed {
            Some(l) => l.0,
            None => {
                let fresh = Box::new(Ledger {
                    lock: RawLock::new(),
                    live: Table::new(),
                    released: Table::new(),
                    quarantine: UnsafeCell::new(VecDeque::new()),
                    claimed: AtomicBool::new(true),
                });
                let p = NonNull::from(Box::leak(fresh));
                all.push(LedgerPtr(p));
                p
            }
        }
    });
    // SAFETY: sets this thread's value of our key.
    unsafe { libc::pthread_setspecific(key, ledger.as_ptr().cast()) };
    MINE.with(|m| m.set(ledger.as_ptr()));
    // SAFETY: ledgers live until unload.
    unsafe { ledger.as_ref() }
}

/// What a pointer turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// A live entry.
    Live,
    /// An entry released recently (see [`QED_L2_CACHE_QUARANTINE_PER_THREAD`]).
    Released,
    /// Not an entry the library knows.
    Unknown,
}

impl Ledger {
    /// Adds `used` slots to a table, rebuilding it (under the lock) when
    /// more than three quarters are used. Owner only.
    fn note_insert(&self, table: &Table, filled_empty: bool) {
        // SAFETY: `used` is the owner's (this thread's) alone.
        let used = unsafe { &mut *table.used.get() };
        if !filled_empty {
            return;
        }
        *used += 1;
        let keys = table.get();
        if *used * 4 <= keys.capacity() * 3 {
            return;
        }
        self.lock.lock();
        let old = table.get();
        let live: Vec<u64> = old.keys().collect();
        let fresh = KeyTable::new((live.len() * 2).max(64));
        for &k in &live {
            fresh.insert(k);
        }
        *used = live.len();
        let old = table.keys.swap(Box::into_raw(fresh), Ordering::AcqRel);
        // SAFETY: nobody else reads this ledger's tables without its lock,
        // which is held; the owner (this thread) no longer uses `old`.
        drop(unsafe { Box::from_raw(old) });
        self.lock.unlock();
    }

    fn owner_delete(&self, table: &Table, i: usize) {
        if table.get().delete(i, true) {
            // SAFETY: owner only.
            unsafe { *table.used.get() -= 1 };
        }
    }
}

/// Records a new entry as live on the calling thread.
pub fn record_alloc(block: NonNull<EntryBlock>) {
    let me = current();
    let filled_empty = me.live.get().insert(key_of(block.as_ptr()));
    me.note_insert(&me.live, filled_empty);
}

/// What `block` is, from the records alone.
#[inline(always)]
pub fn classify(block: *const EntryBlock) -> Found {
    let key = key_of(block);
    let me = current();
    if me.live.get().find(key).is_some() {
        return Found::Live;
    }
    if me.released.get().find(key).is_some() {
        return Found::Released;
    }
    classify_elsewhere(me, key)
}

#[cold]
fn classify_elsewhere(me: &Ledger, key: u64) -> Found {
    others(me, |other| {
        if other.live.get().find(key).is_some() {
            Some(Found::Live)
        } else {
            other.released.get().find(key).map(|_| Found::Released)
        }
    })
    .unwrap_or(Found::Unknown)
}

/// Runs `f` on every ledger but `me`, each under its lock, until it
/// returns `Some`.
fn others<R>(me: &Ledger, mut f: impl FnMut(&Ledger) -> Option<R>) -> Option<R> {
    LEDGERS.with(|all| {
        all.iter().find_map(|l| {
            // SAFETY: ledgers in the list live until unload.
            let other = unsafe { l.0.as_ref() };
            if std::ptr::eq(other, me) {
                return None;
            }
            other.lock.lock();
            let r = f(other);
            other.lock.unlock();
            r
        })
    })
}

/// Moves a live entry, whose last reference is gone and whose table was
/// freed, to the calling thread's quarantine, poisoned; gives the oldest
/// quarantined block back to the allocator when the quarantine is full.
///
/// # Safety
/// `block` must be a live entry of the library that nobody will use again.
pub unsafe fn record_release(block: NonNull<EntryBlock>) {
    let key = key_of(block.as_ptr());
    let me = current();
    match me.live.get().find(key) {
        Some(i) => me.owner_delete(&me.live, i),
        None => {
            let _ = others(me, |other| {
                let keys = other.live.get();
                keys.find(key).map(|i| {
                    keys.delete(i, false);
                })
            });
        }
    }
    memtools::poison(block.as_ptr().cast(), std::mem::size_of::<EntryBlock>());
    let filled_empty = me.released.get().insert(key);
    me.note_insert(&me.released, filled_empty);
    // SAFETY: the quarantine is the owner's (this thread's) alone.
    let quarantine = unsafe { &mut *me.quarantine.get() };
    quarantine.push_back(block);
    if quarantine.len() > QED_L2_CACHE_QUARANTINE_PER_THREAD {
        let oldest = quarantine.pop_front().expect("non-empty");
        if let Some(i) = me.released.get().find(key_of(oldest.as_ptr())) {
            me.owner_delete(&me.released, i);
        }
        // SAFETY: the block is ours and nobody may use it any more.
        unsafe { give_back(oldest) };
    }
}

/// Returns a quarantined block to the allocator.
///
/// # Safety
/// `block` came from `EntryBlock::alloc`, is released and unused.
unsafe fn give_back(block: NonNull<EntryBlock>) {
    memtools::unpoison(block.as_ptr().cast(), std::mem::size_of::<EntryBlock>());
    // SAFETY: per the caller's guarantee the Box is ours again.
    drop(unsafe { Box::from_raw(block.as_ptr()) });
}

/// Fork handler: takes the list lock, then every ledger's.
#[cfg_attr(miri, allow(dead_code))]
pub fn lock_all() {
    LEDGERS.raw().lock();
    // SAFETY: the list lock is held (taken just above), so the list is
    // stable and no one else reads it.
    let all = unsafe { &*LEDGERS.data_ptr() };
    for l in all {
        // SAFETY: ledgers live until unload.
        unsafe { l.0.as_ref() }.lock.lock();
    }
}

/// Fork handler: releases what [`lock_all`] took, in reverse.
#[cfg_attr(miri, allow(dead_code))]
pub fn unlock_all() {
    // SAFETY: the list lock is still held by this thread.
    let all = unsafe { &*LEDGERS.data_ptr() };
    for l in all.iter().rev() {
        // SAFETY: ledgers live until unload.
        unsafe { l.0.as_ref() }.lock.unlock();
    }
    LEDGERS.raw().unlock();
}

/// At unload: when no other thread holds a ledger, gives every quarantined
/// block and every ledger back, and deletes the thread key (so no thread
/// exit calls into unmapped code). Entries still alive are the caller's
/// and stay allocated. When another thread still holds a ledger (a process
/// exiting while threads run), nothing is touched: it may still be in use.
/// True when everything was released.
pub fn release_all_at_unload() -> bool {
    let key = match THREAD_KEY.load(Ordering::Acquire) {
        k if k >= 2 => Some((k - 2) as libc::pthread_key_t),
        _ => None,
    };
    // SAFETY: reading this thread's value of our key.
    let mine = key.map_or(null_mut(), |k| {
        unsafe { libc::pthread_getspecific(k) }.cast::<Ledger>()
    });
    LEDGERS.with(|all| {
        let busy = all.iter().any(|l| {
            // SAFETY: ledgers live until unload.
            l.0.as_ptr() != mine && unsafe { l.0.as_ref() }.claimed.load(Ordering::Acquire)
        });
        if busy {
            return false;
        }
        for l in all.drain(..) {
            // SAFETY: no thread uses the ledger any more (checked above).
            let ledger = unsafe { Box::from_raw(l.0.as_ptr()) };
            for block in ledger.quarantine.into_inner() {
                // SAFETY: quarantined blocks are ours and unused.
                unsafe { give_back(block) };
            }
        }
        if let Some(k) = key {
            // SAFETY: sets this thread's value of our key; deletes the key.
            unsafe {
                libc::pthread_setspecific(k, null_mut());
                libc::pthread_key_delete(k);
            }
            MINE.with(|m| m.set(null_mut()));
            THREAD_KEY.store(0, Ordering::Release);
        }
        true
    })
}
