// SPDX-License-Identifier: LGPL-2.1-or-later
//! Which pointers are the library's entries, alive or released, answered
//! from the library's own records and never by reading the pointee.
//!
//! Every thread that allocates or releases entries owns a *ledger*: a table
//! of the entries it allocated that are still alive, a table of the
//! entries it released recently, and the quarantine holding those released
//! blocks (poisoned for memory checkers) until they are given back to the
//! allocator. A ledger is keyed by `address ^ HIDE_MASK`, never by a plain
//! address, so the library's records never make a leaked entry look
//! reachable to valgrind or LeakSanitizer.
//!
//! In front of the ledgers sits [`RECENT_LIVE`], a direct-mapped table of
//! live entries sharded by allocating thread, which answers the usual
//! question (is the entry a find just returned live?) in one load with no
//! thread-local access (in a shared library every thread-local access is
//! a call to `__tls_get_addr`).
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

use crate::cache::FIBONACCI;
use crate::memtools::{self, hide};
use crate::sync::RawLock;
use std::alloc::Layout;
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
pub const QUARANTINE_PER_THREAD: usize = 4096;

const EMPTY: u64 = 0;
const DELETED: u64 = 1;

/// The memory of one entry, as the ledgers hand it out and take it back:
/// 48 bytes, 8-aligned. What is laid out in it is `entry`'s business
/// (which checks at compile time that it fits exactly).
pub type Block = u8;

/// The layout of every [`Block`].
pub const BLOCK_LAYOUT: Layout = match Layout::from_size_align(48, 8) {
    Ok(l) => l,
    Err(_) => panic!("a valid layout"),
};

/// A new block, uninitialised and not yet recorded: the caller fills it,
/// then records it with [`record_alloc`]. Aborts when out of memory, as
/// glib's `g_malloc0` does.
pub fn alloc_block() -> NonNull<Block> {
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { std::alloc::alloc(BLOCK_LAYOUT) };
    NonNull::new(p).unwrap_or_else(|| std::alloc::handle_alloc_error(BLOCK_LAYOUT))
}

/// The record key of an entry.
#[inline]
fn key_of(block: *const Block) -> u64 {
    hide(block as usize)
}

/// The home slot of `key` in a table of `2^(64 - shift)` slots: Fibonacci
/// hashing (the product's top bits). Blocks of one size that malloc hands
/// out in a row are an arithmetic progression of addresses, which this
/// spreads almost evenly, so a lookup rarely probes past its home slot
/// (each extra probe is a branch the CPU cannot predict).
#[inline(always)]
fn home(key: u64, shift: u32) -> usize {
    (key.wrapping_mul(FIBONACCI) >> shift) as usize
}

/// An open-addressing set of keys whose slots other threads may read.
struct KeyTable {
    slots: Box<[AtomicU64]>,
    mask: usize,
    /// `64 - log2(slot count)`, for [`home`].
    shift: u32,
}

impl KeyTable {
    fn new(capacity: usize) -> Box<KeyTable> {
        let capacity = capacity.next_power_of_two().max(64);
        Box::new(KeyTable {
            slots: (0..capacity).map(|_| AtomicU64::new(EMPTY)).collect(),
            mask: capacity - 1,
            shift: 64 - capacity.trailing_zeros(),
        })
    }

    /// The slot holding `key`.
    #[inline(always)]
    fn find(&self, key: u64) -> Option<usize> {
        let mut i = home(key, self.shift);
        loop {
            // SAFETY: `mask` is the slot count minus one (a power of two),
            // so `i` is always in bounds.
            match unsafe { self.slots.get_unchecked(i) }.load(Ordering::Acquire) {
                k if k == key => return Some(i),
                EMPTY => return None,
                _ => i = (i + 1) & self.mask,
            }
        }
    }

    /// Stores `key` (not present) in the first free slot; true when that
    /// slot was empty rather than deleted. Owner only.
    fn insert(&self, key: u64) -> bool {
        let mut i = home(key, self.shift);
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

/// How full a table may get before it is rebuilt, and how large the
/// rebuilt table is.
#[derive(Clone, Copy)]
struct Load {
    /// At most this many quarters of the slots used.
    max_quarters: usize,
    /// Slots per key in a rebuilt table.
    slots_per_key: usize,
}

/// The live table is searched by every unref and commit: kept at most a
/// quarter full so a key is almost always in its home slot (a probe past
/// it is a branch the CPU mispredicts), at 16 to 64 bytes per live entry.
const LIVE_LOAD: Load = Load {
    max_quarters: 1,
    slots_per_key: 4,
};
/// The released table is searched only on the misuse and release paths.
const RELEASED_LOAD: Load = Load {
    max_quarters: 3,
    slots_per_key: 2,
};

/// One of a ledger's two tables, with the count of non-empty slots (the
/// owner's business: only the owner turns an empty slot into a used one).
struct Table {
    keys: AtomicPtr<KeyTable>,
    used: UnsafeCell<usize>,
    load: Load,
}

impl Table {
    fn new(load: Load) -> Table {
        Table {
            keys: AtomicPtr::new(Box::into_raw(KeyTable::new(64))),
            used: UnsafeCell::new(0),
            load,
        }
    }

    fn get(&self) -> &KeyTable {
        // SAFETY: the pointer is always a live KeyTable: it is replaced only
        // by the owner, under the ledger's lock, and the old one is freed
        // only when no other thread can be reading it (see `Ledger::rebuild`).
        unsafe { &*self.keys.load(Ordering::SeqCst) }
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        // SAFETY: the table owns its KeyTable.
        drop(unsafe { Box::from_raw(*self.keys.get_mut()) });
    }
}

/// Slots of a thread's memo of which other ledger holds an entry.
const MEMO_SLOTS: usize = 64;

/// A thread's records.
pub struct Ledger {
    /// Taken for a deletion by another thread and for a rebuild of a table.
    lock: RawLock,
    live: Table,
    released: Table,
    /// Other threads reading this ledger's tables without the lock.
    readers: AtomicUsize,
    /// Tables replaced while other threads were reading: freed later.
    /// Owner only.
    /// Kept boxed: a reader holds a reference to the table itself (its
    /// slots, mask and shift), not only to its slots, so the table must
    /// not move.
    #[allow(clippy::vec_box, reason = "the boxes' addresses are what readers hold")]
    retired: UnsafeCell<Vec<Box<KeyTable>>>,
    /// Released blocks, oldest first. Owner only.
    quarantine: UnsafeCell<VecDeque<NonNull<Block>>>,
    /// Which other ledger last held a key this thread looked up: an entry
    /// of a cache that moved between threads is then found in one probe.
    /// Owner only; a stale memo only costs a full search.
    memo: UnsafeCell<[(u64, *const Ledger); MEMO_SLOTS]>,
    /// A live thread owns this ledger.
    claimed: AtomicBool,
    /// The next older ledger in the list (set before publication).
    next: *const Ledger,
}

// SAFETY: the owner-only parts (`used`, `retired`, `quarantine`, `memo`)
// are touched by the claiming thread alone (claims hand over with
// Release/Acquire), the rest is atomics and the lock.
unsafe impl Sync for Ledger {}
// SAFETY: as above.
unsafe impl Send for Ledger {}

/// The newest ledger; each links to the next older one. Ledgers are only
/// ever added (until unload), so the list is walked without a lock.
static LEDGERS: AtomicPtr<Ledger> = AtomicPtr::new(null_mut());

/// Every ledger, newest first.
fn all_ledgers() -> impl Iterator<Item = &'static Ledger> {
    let mut cur = LEDGERS.load(Ordering::Acquire).cast_const();
    std::iter::from_fn(move || {
        // SAFETY: ledgers in the list live until unload.
        let l = unsafe { cur.as_ref()? };
        cur = l.next;
        Some(l)
    })
}

/// The pthread key whose value is the calling thread's ledger; its
/// destructor unclaims the ledger when the thread exits. 0: no key (not
/// created, deleted at unload, or none left in the process: then ledgers
/// of exited threads are simply not reused), else 1 + key.
static THREAD_KEY: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_thread_exit(ledger: *mut libc::c_void) {
    // A later call on this thread (from another thread-exit destructor)
    // takes a ledger afresh instead of using one another thread may own.
    MINE.with(|m| m.set(null_mut()));
    forget_live();
    if let Some(ledger) = NonNull::new(ledger.cast::<Ledger>()) {
        // SAFETY: the value was set by `current` to a live ledger, and
        // ledgers are freed only at unload, which deletes the key first.
        unsafe { ledger.as_ref() }.claimed.store(false, Ordering::Release);
    }
}

fn thread_key() -> Option<libc::pthread_key_t> {
    match THREAD_KEY.load(Ordering::Acquire) {
        0 => None,
        k => Some((k - 1) as libc::pthread_key_t),
    }
}

/// Creates the thread key unless it exists: at load (`lifecycle`), and at
/// a thread's first claim in case no constructor ran. Lock-free: of two
/// threads creating one at once, the loser deletes its own.
pub fn create_thread_key() {
    if thread_key().is_some() {
        return;
    }
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is writable; the destructor is ours.
    if unsafe { libc::pthread_key_create(&mut key, Some(on_thread_exit)) } == 0
        && THREAD_KEY
            .compare_exchange(0, 1 + key as usize, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
    {
        // SAFETY: our key, never published.
        unsafe { libc::pthread_key_delete(key) };
    }
}

/// Deletes the thread key at unload (`lifecycle`), so that no thread exit
/// calls into a library that is gone.
pub fn delete_thread_key() {
    if let Some(k) = thread_key() {
        THREAD_KEY.store(0, Ordering::Release);
        // SAFETY: clears this thread's value, then deletes our key.
        unsafe {
            libc::pthread_setspecific(k, null_mut());
            libc::pthread_key_delete(k);
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
    claim()
}

thread_local! {
    /// The calling thread's ledger: a copy of the thread key's value that
    /// is cheaper to read (no destructor: the key's does the work).
    static MINE: std::cell::Cell<*mut Ledger> = const { std::cell::Cell::new(null_mut()) };
    /// The calling thread's live table (its slots and mask), for the one
    /// lookup every unref makes: the slot is one load away from here
    /// instead of four (ledger, table, header, slot). Only this thread
    /// replaces that table (`Ledger::rebuild`), and it updates this copy
    /// when it does.
    static MY_LIVE: LiveView = const {
        LiveView {
            slots: std::cell::Cell::new(std::ptr::null()),
            mask: std::cell::Cell::new(0),
            shift: std::cell::Cell::new(0),
        }
    };
}

/// See `MY_LIVE`.
struct LiveView {
    slots: std::cell::Cell<*const AtomicU64>,
    mask: std::cell::Cell<usize>,
    shift: std::cell::Cell<u32>,
}

/// The calling thread's thread pointer (the ELF TLS ABI's: on x86_64 the
/// word at `%fs:0` is the thread control block's own address, on aarch64
/// `tpidr_el0` holds it). Distinct for every live thread, and one
/// instruction to read; `None` where it is not read that way (then every
/// thread uses shard 0 of [`RECENT_LIVE`]).
#[inline(always)]
fn thread_pointer() -> Option<usize> {
    #[cfg(all(target_arch = "x86_64", target_os = "linux", not(miri)))]
    {
        let tp: usize;
        // SAFETY: reads the first word of the thread control block, which
        // the x86_64 TLS ABI requires to hold the block's own address.
        unsafe {
            std::arch::asm!("mov {}, qword ptr fs:[0]", out(reg) tp,
                options(nostack, preserves_flags, readonly, pure));
        }
        Some(tp)
    }
    #[cfg(all(target_arch = "aarch64", target_os = "linux", not(miri)))]
    {
        let tp: usize;
        // SAFETY: reads the thread pointer register (EL0-readable).
        unsafe {
            std::arch::asm!("mrs {}, tpidr_el0", out(reg) tp,
                options(nostack, preserves_flags, nomem, pure));
        }
        Some(tp)
    }
    #[cfg(not(all(
        any(target_arch = "x86_64", target_arch = "aarch64"),
        target_os = "linux",
        not(miri)
    )))]
    {
        None
    }
}

/// Points the calling thread's copy at its live table.
fn remember_live(ledger: &Ledger) {
    let t = ledger.live.get();
    MY_LIVE.with(|m| {
        m.slots.set(t.slots.as_ptr());
        m.mask.set(t.mask);
        m.shift.set(t.shift);
    });
}

/// Forgets the calling thread's copy.
fn forget_live() {
    MY_LIVE.with(|m| m.slots.set(std::ptr::null()));
}

#[cold]
fn claim() -> &'static Ledger {
    create_thread_key();
    let unclaimed = all_ledgers().find(|l| {
        l.claimed
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    });
    let ledger = unclaimed.unwrap_or_else(|| {
        let fresh = Box::leak(Box::new(Ledger {
            lock: RawLock::new(),
            live: Table::new(LIVE_LOAD),
            released: Table::new(RELEASED_LOAD),
            readers: AtomicUsize::new(0),
            retired: UnsafeCell::new(Vec::new()),
            quarantine: UnsafeCell::new(VecDeque::new()),
            memo: UnsafeCell::new([(0, std::ptr::null()); MEMO_SLOTS]),
            claimed: AtomicBool::new(true),
            next: null_mut(),
        }));
        let mut head = LEDGERS.load(Ordering::Acquire);
        loop {
            fresh.next = head;
            match LEDGERS.compare_exchange_weak(head, fresh, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => head = now,
            }
        }
        fresh
    });
    let p = ledger as *const Ledger as *mut Ledger;
    if let Some(key) = thread_key() {
        // SAFETY: sets this thread's value of our key.
        unsafe { libc::pthread_setspecific(key, p.cast()) };
    }
    MINE.with(|m| m.set(p));
    remember_live(ledger);
    ledger
}

/// What a pointer turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// A live entry.
    Live,
    /// An entry released recently (see [`QUARANTINE_PER_THREAD`]).
    Released,
    /// Not an entry the library knows.
    Unknown,
}

impl Ledger {
    /// Adds `used` slots to a table, rebuilding it (under the lock) when
    /// more are used than its [`Load`] allows. Owner only.
    fn note_insert(&self, table: &Table, filled_empty: bool) {
        // SAFETY: `used` is the owner's (this thread's) alone.
        let used = unsafe { &mut *table.used.get() };
        if !filled_empty {
            return;
        }
        *used += 1;
        let keys = table.get();
        if *used * 4 <= keys.capacity() * table.load.max_quarters {
            return;
        }
        self.rebuild(table, used);
    }

    /// Rebuilds a table at its [`Load`]'s slots per key (owner, lock held
    /// meanwhile).
    /// The old table is freed at once if no other thread is reading this
    /// ledger, else at a later rebuild: a reader announces itself in
    /// `readers` before it loads the table pointer, and the owner swaps the
    /// pointer before it looks at `readers` (both sequentially consistent),
    /// so a reader that may hold the old pointer is always seen.
    #[cold]
    fn rebuild(&self, table: &Table, used: &mut usize) {
        let _held = self.lock.lock();
        let old = table.get();
        let live: Vec<u64> = old.keys().collect();
        let fresh = KeyTable::new((live.len() * table.load.slots_per_key).max(64));
        for &k in &live {
            fresh.insert(k);
        }
        *used = live.len();
        let old = table.keys.swap(Box::into_raw(fresh), Ordering::SeqCst);
        if std::ptr::eq(table, &self.live) {
            remember_live(self);
        }
        // SAFETY: `old` came from Box::into_raw and is no longer published.
        let old = unsafe { Box::from_raw(old) };
        // SAFETY: `retired` is the owner's (this thread's) alone.
        let retired = unsafe { &mut *self.retired.get() };
        retired.push(old);
        if self.readers.load(Ordering::SeqCst) == 0 {
            retired.clear();
        }
    }

    fn owner_delete(&self, table: &Table, i: usize) {
        if table.get().delete(i, true) {
            // SAFETY: owner only.
            unsafe { *table.used.get() -= 1 };
        }
    }
}

/// log2 of [`RECENT_LIVE`]'s shards and of each shard's slots: 16 shards
/// of 2,048 slots, 256 KiB of address space, of which a thread touches the
/// pages its entries' slots fall on (a few slots under Miri, whose checks
/// would slow every access to a large static). With a cache's fifty
/// entries a shard this size loses about one key in a hundred to a
/// colliding one (see [`recent_live_slot`]); the branch on the lookup is
/// then predictable, which is most of what the table saves.
const SHARD_BITS: u32 = if cfg!(miri) { 1 } else { 4 };
const SHARD_SLOT_BITS: u32 = if cfg!(miri) { 2 } else { 11 };

/// A direct-mapped table of live entries, in front of the ledgers. The
/// slot of a key holds that key from the entry's allocation until its
/// release, unless a later allocation took the slot, so a key found in its
/// slot is a live entry: the unref and commit that follow a find are
/// answered in one load. A key not found is looked up in the ledgers.
///
/// Each thread allocates into the shard its thread pointer selects and
/// looks there first, so threads that share no cache write different
/// cache lines (unless two of them select the same shard: then they share
/// lines there, which costs time, never correctness). The shard an entry
/// went to is kept in its hidden bytes, and its release, on whatever
/// thread, clears the slot there if it still holds the key (a
/// compare-and-exchange: a newer key stored meanwhile stays).
static RECENT_LIVE: [AtomicU64; 1 << (SHARD_BITS + SHARD_SLOT_BITS)] =
    [const { AtomicU64::new(EMPTY) }; 1 << (SHARD_BITS + SHARD_SLOT_BITS)];

/// The calling thread's shard of [`RECENT_LIVE`]: a few bits of its
/// thread pointer's page number (every thread's control block sits in its
/// own stack mapping, so threads created one after another get different
/// shards). 0 where the thread pointer is not read directly.
#[inline(always)]
pub fn my_shard() -> u32 {
    thread_pointer().map_or(0, |tp| ((tp >> 12) & ((1 << SHARD_BITS) - 1)) as u32)
}

/// The slot of `key` in `shard`. Its hash mixes all the key's bits twice:
/// a heap hands out runs of blocks a fixed stride apart from several
/// starting points, and Fibonacci hashing alone maps such runs onto each
/// other (one cache's fifty entries lost eight slots that way).
#[inline(always)]
fn recent_live_slot(shard: u32, key: u64) -> &'static AtomicU64 {
    let m = key.wrapping_mul(FIBONACCI);
    let mixed = (m ^ (m >> 32)).wrapping_mul(FIBONACCI);
    let i = ((shard as usize) << SHARD_SLOT_BITS) | (mixed >> (64 - SHARD_SLOT_BITS)) as usize;
    // SAFETY: `shard` is below `1 << SHARD_BITS` (from `my_shard`, or
    // stored by `record_alloc` from it) and the shifted hash below
    // `1 << SHARD_SLOT_BITS`.
    unsafe { RECENT_LIVE.get_unchecked(i) }
}

/// Records a new entry as live on the calling thread, in `shard` (the
/// caller's [`my_shard`], which the entry keeps for its release).
pub fn record_alloc(block: NonNull<Block>, shard: u32) {
    let key = key_of(block.as_ptr());
    let me = current();
    let filled_empty = me.live.get().insert(key);
    me.note_insert(&me.live, filled_empty);
    // Release: whoever finds the key and then reads the entry sees it
    // initialised (the caller wrote it before this call).
    recent_live_slot(shard, key).store(key, Ordering::Release);
}

/// What `block` is, from the records alone.
#[inline(always)]
pub fn classify(block: *const Block) -> Found {
    let key = key_of(block);
    if key <= DELETED {
        // The two addresses whose keys are the slot markers (non-canonical,
        // so never an entry): a table would take them for its markers.
        return Found::Unknown;
    }
    if recent_live_slot(my_shard(), key).load(Ordering::Acquire) == key {
        return Found::Live;
    }
    let (slots, mask, shift) = MY_LIVE.with(|m| (m.slots.get(), m.mask.get(), m.shift.get()));
    if !slots.is_null() {
        let mut i = home(key, shift);
        loop {
            // SAFETY: a non-null copy is this thread's live table, `mask`
            // its slot count minus one and `shift` its width (see MY_LIVE), so
            // `i` is always in bounds.
            match unsafe { (*slots.add(i)).load(Ordering::Acquire) } {
                k if k == key => return Found::Live,
                EMPTY => break,
                _ => i = (i + 1) & mask,
            }
        }
    }
    classify_rest(key, slots.is_null())
}

/// [`classify`] when the entry is not live in the calling thread's ledger.
#[cold]
#[inline(never)]
fn classify_rest(key: u64, live_unchecked: bool) -> Found {
    let me = current();
    // The thread's live table was searched already unless this thread had
    // no view of it yet (its first call: `current` just claimed a ledger).
    if live_unchecked && me.live.get().find(key).is_some() {
        return Found::Live;
    }
    if me.released.get().find(key).is_some() {
        return Found::Released;
    }
    classify_elsewhere(me, key)
}

impl Ledger {
    /// Looks `key` up in this (another thread's) ledger without its lock.
    fn lookup_as_reader(&self, key: u64) -> Found {
        self.readers.fetch_add(1, Ordering::SeqCst);
        let found = if self.live.get().find(key).is_some() {
            Found::Live
        } else if self.released.get().find(key).is_some() {
            Found::Released
        } else {
            Found::Unknown
        };
        self.readers.fetch_sub(1, Ordering::SeqCst);
        found
    }

    /// The memo slot for `key` (owner only).
    #[allow(clippy::mut_from_ref)]
    fn memo_slot(&self, key: u64) -> &mut (u64, *const Ledger) {
        // SAFETY: the memo is the owner's (this thread's) alone.
        unsafe { &mut (*self.memo.get())[home(key, 64 - MEMO_SLOTS.trailing_zeros())] }
    }
}

/// An entry the calling thread did not allocate or release: the memo's
/// guess first, then every ledger, with no lock.
#[cold]
fn classify_elsewhere(me: &Ledger, key: u64) -> Found {
    let memo = *me.memo_slot(key);
    if memo.0 == key {
        // SAFETY: ledgers live until unload.
        if let Some(Found::Live) = unsafe { memo.1.as_ref() }.map(|l| l.lookup_as_reader(key)) {
            return Found::Live;
        }
    }
    for other in all_ledgers() {
        if std::ptr::eq(other, me) {
            continue;
        }
        match other.lookup_as_reader(key) {
            Found::Unknown => {}
            found => {
                if found == Found::Live {
                    *me.memo_slot(key) = (key, other);
                }
                return found;
            }
        }
    }
    Found::Unknown
}

/// Deletes `key` from the live table of whichever other ledger holds it
/// (the memo's guess first), under that ledger's lock.
fn forget_elsewhere(me: &Ledger, key: u64) {
    let delete = |other: &Ledger| {
        let _held = other.lock.lock();
        let keys = other.live.get();
        keys.find(key).map(|i| keys.delete(i, false)).is_some()
    };
    let memo = *me.memo_slot(key);
    // SAFETY: ledgers live until unload.
    if memo.0 == key && unsafe { memo.1.as_ref() }.is_some_and(delete) {
        return;
    }
    for other in all_ledgers() {
        if !std::ptr::eq(other, me) && delete(other) {
            return;
        }
    }
}

/// Moves a live entry, whose last reference is gone and whose table was
/// freed, to the calling thread's quarantine, poisoned; gives the oldest
/// quarantined block back to the allocator when the quarantine is full.
///
/// `shard` is the one [`record_alloc`] was given for it.
///
/// # Safety
/// `block` must be a live entry of the library that nobody will use again.
pub unsafe fn record_release(block: NonNull<Block>, shard: u32) {
    let key = key_of(block.as_ptr());
    // First: from here on the entry is not live. The load first keeps a
    // release from taking a line it would not change.
    let recent = recent_live_slot(shard, key);
    if recent.load(Ordering::Relaxed) == key {
        let _ = recent.compare_exchange(key, EMPTY, Ordering::AcqRel, Ordering::Relaxed);
    }
    let me = current();
    match me.live.get().find(key) {
        Some(i) => me.owner_delete(&me.live, i),
        None => forget_elsewhere(me, key),
    }
    memtools::poison(block.as_ptr().cast(), BLOCK_LAYOUT.size());
    let filled_empty = me.released.get().insert(key);
    me.note_insert(&me.released, filled_empty);
    // SAFETY: the quarantine is the owner's (this thread's) alone.
    let quarantine = unsafe { &mut *me.quarantine.get() };
    quarantine.push_back(block);
    if quarantine.len() > QUARANTINE_PER_THREAD {
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
/// `block` came from [`alloc_block`], is released and unused.
unsafe fn give_back(block: NonNull<Block>) {
    memtools::unpoison(block.as_ptr().cast(), BLOCK_LAYOUT.size());
    // SAFETY: per the caller's guarantee the block is ours again, and was
    // allocated with this layout.
    unsafe { std::alloc::dealloc(block.as_ptr(), BLOCK_LAYOUT) };
}

/// At unload: when no other thread holds a ledger, gives every quarantined
/// block and every ledger back (`lifecycle` has deleted the thread key
/// already, so no thread exit calls into unmapped code). Entries still alive are the caller's
/// and stay allocated. When another thread still holds a ledger (a process
/// exiting while threads run), nothing is touched: it may still be in use.
/// True when everything was released.
pub fn release_all_at_unload() -> bool {
    let mine = MINE.with(|m| m.get());
    let busy = all_ledgers().any(|l| !std::ptr::eq(l, mine) && l.claimed.load(Ordering::Acquire));
    if busy {
        return false;
    }
    let mut cur = LEDGERS.swap(null_mut(), Ordering::AcqRel);
    while !cur.is_null() {
        // SAFETY: no thread uses the ledger any more (checked above), and
        // it came from Box::leak in `claim`.
        let ledger = unsafe { Box::from_raw(cur) };
        cur = ledger.next.cast_mut();
        for block in ledger.quarantine.into_inner() {
            // SAFETY: quarantined blocks are ours and unused.
            unsafe { give_back(block) };
        }
    }
    MINE.with(|m| m.set(null_mut()));
    forget_live();
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A recorded block on the calling thread, with its shard.
    fn live_block() -> (NonNull<Block>, u32) {
        let shard = my_shard();
        let b = alloc_block();
        record_alloc(b, shard);
        (b, shard)
    }

    #[test]
    fn a_block_is_live_then_released_then_forgotten_after_the_quarantine() {
        let (b, shard) = live_block();
        assert_eq!(classify(b.as_ptr()), Found::Live);
        // SAFETY: ours, live, used by no one after this.
        unsafe { record_release(b, shard) };
        assert_eq!(classify(b.as_ptr()), Found::Released);
        // The quarantine holds the last QUARANTINE_PER_THREAD releases of
        // this thread: push `b` out of it.
        let mut kept = Vec::new();
        for _ in 0..if cfg!(miri) { 8 } else { QUARANTINE_PER_THREAD } {
            let (c, s) = live_block();
            kept.push(c);
            // SAFETY: as above.
            unsafe { record_release(c, s) };
        }
        if !cfg!(miri) {
            // Given back to the allocator: unknown, unless a later block
            // got the same address (then it is that block's status).
            let status = classify(b.as_ptr());
            assert!(
                status == Found::Unknown || kept.contains(&b),
                "a block given back is not reported released: {status:?}"
            );
        }
    }

    #[test]
    fn the_slot_markers_are_never_taken_for_entries() {
        // The two addresses whose keys are the empty and deleted markers.
        for key in [EMPTY, DELETED] {
            let p = std::ptr::without_provenance::<Block>(hide(key as usize) as usize);
            assert_eq!(classify(p), Found::Unknown);
        }
    }

    #[test]
    fn another_threads_block_is_found_and_released_across_threads() {
        struct Send(NonNull<Block>, u32);
        // SAFETY: the block is handed over whole; the spawner waits.
        unsafe impl std::marker::Send for Send {}
        let made = std::thread::spawn(|| {
            let (b, s) = live_block();
            Send(b, s)
        })
        .join()
        .unwrap();
        // Allocated by a thread that exited: its ledger keeps the record.
        assert_eq!(classify(made.0.as_ptr()), Found::Live);
        let (b, s) = live_block();
        let back = Send(b, s);
        std::thread::spawn(move || {
            let back = back;
            assert_eq!(classify(back.0.as_ptr()), Found::Live);
            // SAFETY: ours, live, used by no one after this.
            unsafe { record_release(back.0, back.1) };
            assert_eq!(classify(back.0.as_ptr()), Found::Released);
        })
        .join()
        .unwrap();
        // Released on the other thread: this one sees it released too (the
        // other ledger's quarantine), not live.
        assert_eq!(classify(b.as_ptr()), Found::Released);
        // SAFETY: ours, live, used by no one after this.
        unsafe { record_release(made.0, made.1) };
    }

    #[test]
    fn the_ledger_of_an_exited_thread_is_taken_over() {
        let count = || all_ledgers().count();
        let before = count();
        let threads = if cfg!(miri) { 4 } else { 40 };
        for _ in 0..threads {
            std::thread::spawn(|| {
                let (b, s) = live_block();
                // SAFETY: ours, live, used by no one after this.
                unsafe { record_release(b, s) };
            })
            .join()
            .unwrap();
        }
        // Each exited thread's ledger is reused by the next; other tests
        // running at the same time may add a few of their own.
        let grown = count() - before;
        assert!(
            grown < threads / 2 || cfg!(miri),
            "{grown} new ledgers for {threads} threads in turn"
        );
    }

    #[test]
    fn a_crowded_table_grows_and_keeps_every_key() {
        let n = if cfg!(miri) { 100 } else { 5000 };
        let blocks: Vec<_> = (0..n).map(|_| live_block()).collect();
        assert!(blocks.iter().all(|(b, _)| classify(b.as_ptr()) == Found::Live));
        let me = current();
        assert!(me.live.get().capacity() >= n, "rebuilt to hold them");
        for (b, s) in blocks {
            // SAFETY: ours, live, used by no one after this.
            unsafe { record_release(b, s) };
        }
    }
}
