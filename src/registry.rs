// SPDX-License-Identifier: LGPL-2.1-or-later
//! Where each cache's hidden state lives, and how a call finds it.
//!
//! The caller's `L2TableCache` is 24 bytes and cannot grow, so the state
//! (the core cache, the counters) lives in a *slot* of the library's. The
//! authority on which slot belongs to which struct is a map from the
//! struct's address (hidden like the entry keys) to its slot number, kept
//! under a lock that only `init`, `free` and the rare fallback below take.
//! The slot number is also written into the struct's 4 bytes of tail
//! padding as a *hint*: a call reads the hint, and if that slot is owned by
//! this very address it is the cache, with no lock and no write shared
//! with another cache. If the padding was overwritten (C lets any store to
//! a member change it), the map finds the cache and the hint is rewritten.
//!
//! Slots are type-stable: they live in segments that are never freed while
//! any cache is initialised, so a stale or garbage hint only ever reads an
//! atomic owner word, never freed memory. There is no limit on the number
//! of caches beyond memory (up to 2^32 - 1 at once).
//!
//! Idle release (docs/idle.md): a cache with idle release on is also
//! reached by the library's thread, which the caller's lock does not
//! cover. Such a slot is marked [`IDLE`], and then every call on the cache
//! ([`find`] returns a [`Held`]) and the thread's sweep
//! ([`for_each_idle_cache`]) take the slot's own lock: a fork-safe
//! `sync::RawLock`, one per cache, so threads using different caches still
//! share no lock. Slots of other caches are never locked.
//!
//! The slot's mode word also says when a cache sizes itself ([`AUTO`]). A
//! cache with neither bit is *plain*: a hit on it does no more than the
//! core's lookup, and [`find_plain`] is the hit path's one test of both.

use crate::advisor::{self, report::recommend, AdvisorSlot, HasAdvisor};
use crate::cache::Cache;
use crate::entry::EntryPtr;
use crate::memtools::hide;
use crate::publish::{self, AdvisorPart, RecordRef, Snapshot};
use crate::shares::Share;
use crate::sizing::auto::AutoSizer;
use crate::stats_layout::{record, MAX_PREDICTIONS};
use crate::sync::{process_token, LockGuard, Locked, RawLock};
use std::cell::UnsafeCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::ops::{Deref, DerefMut};
use std::ptr::null_mut;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicU8, AtomicUsize, Ordering};

/// The list head words the library last wrote into the caller's struct,
/// addresses hidden (`ledger::hide`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeadWords {
    /// `entries.tqh_first`, hidden.
    pub first: u64,
    /// `entries.tqh_circ.tql_prev`, hidden.
    pub last_link: u64,
    /// `n_entries`.
    pub n_entries: u32,
}

/// The observer of an auto cache's core: its sizer (none in fixed mode).
pub type AutoSlot = Option<Box<AutoSizer>>;

/// What watches a cache's core: the size advisor and the auto sizer (in
/// that order), each absent unless turned on; the pair is an observer.
pub type Watching = (AdvisorSlot, AutoSlot);

/// [`Watching`], boxed once and absent while neither is on: a hit on a
/// cache that nothing watches (the usual fixed cache) pays one untaken
/// branch.
pub type Watchers = Option<Box<Watching>>;

/// No advisor: what a cache that nothing watches lends as its slot.
static NO_ADVISOR: AdvisorSlot = None;

impl HasAdvisor for Watchers {
    fn advisor_slot(&self) -> &AdvisorSlot {
        self.as_deref().map_or(&NO_ADVISOR, HasAdvisor::advisor_slot)
    }
    fn advisor_slot_mut(&mut self) -> &mut AdvisorSlot {
        self.get_or_insert_with(Box::default).advisor_slot_mut()
    }
}

/// Watchers of a new cache: the advisor when given.
pub fn watchers(advisor: AdvisorSlot) -> Watchers {
    advisor.map(|a| Box::new((Some(a), None)))
}

/// A cache's hidden state.
pub struct CacheState {
    /// The policy, index, counters, the advisor and the auto sizer.
    pub core: Cache<EntryPtr, Watchers>,
    /// What the library last wrote into the struct's list head; a struct
    /// whose head differs was not left as the library left it.
    pub written: HeadWords,
    /// The cache's number in creation order, process-wide, from 1 (the
    /// advisor's report names caches by it; slot numbers are reused).
    pub serial: u64,
    /// The process token (`sync::process_token`) of the process that made
    /// the cache: in a fork child a cache of its parent's may have been
    /// mid-update in a thread the child does not have.
    pub process: u64,
    /// The cache's record in the statistics file (docs/statistics.md),
    /// with the token of the process whose file it is: none unless
    /// `QED_L2_CACHE_STATS=1`.
    pub stats: RecordRef,
    /// `malloc_usable_size` of the cached tables, summed (saturating),
    /// kept while the cache has a record.
    pub table_bytes: u64,
    /// The most `table_bytes` held at once, while kept.
    pub peak_table_bytes: u64,
    /// An auto cache's place in the process budget.
    pub share: Option<Share>,
    /// The cache's slot number (its record is number - 1), set by
    /// [`register`].
    pub number: u32,
    /// Idle release: how many idle epochs without a find or commit make a
    /// table idle (docs/idle.md); 0: off. Read by [`register`], fixed for
    /// the cache's life.
    pub idle_epochs: u32,
    /// Tables the idle thread released, since init.
    pub idle_releases: u64,
    /// Entries the idle thread released that the cache's calls have not
    /// yet taken out (raised before each is marked).
    pub idle_pending: u32,
}

impl CacheState {
    /// The state of a new cache.
    pub fn new(core: Cache<EntryPtr, Watchers>, written: HeadWords) -> CacheState {
        CacheState {
            core,
            written,
            serial: SERIAL.fetch_add(1, Ordering::Relaxed) + 1,
            process: process_token(),
            stats: RecordRef::NONE,
            table_bytes: 0,
            peak_table_bytes: 0,
            share: None,
            number: 0,
            idle_epochs: 0,
            idle_releases: 0,
            idle_pending: 0,
        }
    }

    /// True when idle release is on for this cache.
    #[inline(always)]
    pub fn idle_on(&self) -> bool {
        self.idle_epochs != 0
    }

    /// True when the cache keeps [`CacheState::table_bytes`] up to date:
    /// when it publishes statistics, has idle release on or sizes itself.
    #[inline(always)]
    pub fn counts_table_bytes(&self) -> bool {
        self.publishing() || self.idle_on() || self.is_auto()
    }

    /// The cache's counters and settings as a record holds them, the size
    /// advisor's part included (computed here, never on a hit).
    #[inline]
    pub fn snapshot(&self) -> Snapshot {
        let c = &self.core;
        let s = c.stats();
        Snapshot {
            policy: c.policy() as u32,
            counters: [
                s.hits,
                s.misses,
                s.commits,
                s.duplicate_commits,
                s.evictions,
                s.peak_entries,
            ],
            n_entries: u64::from(c.len()),
            max_entries: u64::from(c.max_entries()),
            table_bytes: self.table_bytes,
            advisor: self.advisor_part(),
            auto: self.is_auto(),
            idle_releases: self.idle_releases,
        }
    }

    /// The size advisor's part of the record, when it is on.
    #[inline]
    fn advisor_part(&self) -> Option<AdvisorPart> {
        let a = advisor::advisor(&self.core)?;
        Some(self.advisor_curve(a))
    }

    /// What the advisor `a` of this cache predicts, as a record holds it.
    #[cold]
    fn advisor_curve(&self, a: &advisor::Advisor) -> AdvisorPart {
        let curve = advisor::miss_curve(&self.core);
        let mut part = AdvisorPart {
            finds: a.finds(),
            recommended: recommend(&curve, a.finds()).unwrap_or(0),
            ..AdvisorPart::default()
        };
        for (pair, p) in part.pairs.iter_mut().zip(&curve) {
            *pair = (p.size, p.misses);
        }
        part.count = curve.len().min(MAX_PREDICTIONS) as u32;
        part
    }

    /// True when the cache sizes itself.
    #[inline(always)]
    pub fn is_auto(&self) -> bool {
        self.sizer().is_some()
    }

    /// The auto sizer, when the cache sizes itself.
    #[inline(always)]
    pub fn sizer(&self) -> Option<&AutoSizer> {
        self.core.observer().as_ref()?.1.as_deref()
    }

    /// Turns the auto sizer on (a new one, with a cap of `cap` tables) or
    /// off, the slot's mode with it; true when that changed it.
    pub fn set_sizer(&mut self, on: Option<u32>) -> bool {
        let was_auto = self.is_auto();
        let watchers = self.core.observer_mut();
        let changed = match (on, was_auto) {
            (Some(cap), false) => {
                watchers.get_or_insert_with(Box::default).1 = Some(Box::new(AutoSizer::new(cap)));
                true
            }
            (None, true) => {
                if let Some(w) = watchers.as_mut() {
                    w.1 = None;
                }
                true
            }
            _ => false,
        };
        self.tidy_watchers();
        set_auto_mode(self.number, self.is_auto());
        changed
    }

    /// Drops the watchers' box when neither is on any more, so that a hit
    /// pays one untaken branch again.
    pub fn tidy_watchers(&mut self) {
        let watchers = self.core.observer_mut();
        if watchers.as_ref().is_some_and(|w| w.0.is_none() && w.1.is_none()) {
            *watchers = None;
        }
    }

    /// Bytes per cached table, the library's bookkeeping included: measured
    /// from the tables cached now, or assumed while there are none.
    pub fn bytes_per_table(&self) -> u64 {
        use crate::sizing::auto::{ASSUMED_TABLE_BYTES, BOOKKEEPING_PER_TABLE};
        let n = u64::from(self.core.len());
        let table = match self.table_bytes.checked_div(n) {
            Some(b) if self.counts_table_bytes() && b > 0 => b,
            _ => ASSUMED_TABLE_BYTES,
        };
        table + BOOKKEEPING_PER_TABLE
    }

    /// `malloc_usable_size` of the tables cached now, summed (saturating),
    /// walking the entries: what [`CacheState::table_bytes`] holds when it
    /// is kept.
    pub fn cached_table_bytes(&self) -> u64 {
        self.core.handles().iter().fold(0u64, |sum, &e| {
            // SAFETY: cached entries, live by the cache's reference; the
            // caller's lock serializes calls on the cache.
            sum.saturating_add(unsafe { e.table_bytes() })
        })
    }

    /// The cache took a table of `bytes` (see [`Self::counts_bytes`]).
    pub fn add_table_bytes(&mut self, bytes: u64) {
        self.table_bytes = self.table_bytes.saturating_add(bytes);
        self.peak_table_bytes = self.peak_table_bytes.max(self.table_bytes);
    }

    /// True when the cache has a record to publish into (then the table
    /// memory is kept too).
    #[inline(always)]
    pub fn publishing(&self) -> bool {
        self.stats.is_some()
    }

    /// A new cache: its record, cleared and set live.
    pub fn publish_new(&mut self) {
        self.stats = publish::record(self.number).unwrap_or(RecordRef::NONE);
        if self.stats.is_some() {
            self.stats.set_live(self.serial, &self.snapshot());
        }
    }

    /// After a find that hit: the hit count, nothing else (one untaken
    /// branch when statistics are off).
    #[inline(always)]
    pub fn publish_hit(&mut self) {
        if self.stats.is_some() && !self.stats.store(record::HITS, self.core.stats().hits) {
            self.republish();
        }
    }

    /// After a find that missed: the miss count (the commit that follows
    /// a miss publishes the rest, the advisor's part included).
    #[inline]
    pub fn publish_miss(&mut self) {
        if self.stats.is_some() && !self.stats.store(record::MISSES, self.core.stats().misses) {
            self.republish();
        }
    }

    /// After a call that changed more than a find does (commit, eviction,
    /// a new maximum, policy or advisor): everything.
    pub fn publish_all(&mut self) {
        if self.stats.is_some() && !self.stats.store_all(&self.snapshot()) {
            self.republish();
        }
    }

    /// At free (or init over the cache): the record is free. A record in a
    /// parent's file is left alone.
    pub fn publish_gone(&self) {
        self.stats.set_free();
    }

    /// The record is in another process's file: this is a fork child (the
    /// token is new in every child), which never writes there. The cache
    /// gets a record in the child's own file, made at its first need.
    #[cold]
    #[inline(never)]
    fn republish(&mut self) {
        self.publish_new();
    }

    /// True when the cache was made by this process, not inherited across
    /// a fork.
    pub fn made_here(&self) -> bool {
        self.process == process_token()
    }
}

/// The last cache serial given (lock-free: fork-safe).
static SERIAL: AtomicU64 = AtomicU64::new(0);

/// Mode bit: the owner has idle release on, so its calls and the idle
/// thread take the slot's lock. Set before the owner word is published,
/// cleared (under the lock) before it is cleared.
const IDLE: u8 = 1;
/// Mode bit: the owner sizes itself, so a hit has more to do. Written by
/// the owner's calls only ([`set_auto_mode`]).
const AUTO: u8 = 2;

/// One slot, on its own cache lines so caches never share a written line.
/// `repr(C)`: the owner word, the mode and the lock share the first line,
/// so a call reads one line to learn whose slot it is, whether to lock it
/// and whether a hit has more to do.
#[repr(C, align(128))]
struct Slot {
    /// `hide(address)` of the struct that owns the slot, 0 when free.
    owner: AtomicU64,
    /// [`IDLE`] and [`AUTO`]; 0 for a plain fixed cache.
    mode: AtomicU8,
    /// The cache's lock, for idle caches only.
    lock: RawLock,
    state: UnsafeCell<Option<CacheState>>,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            owner: AtomicU64::new(0),
            mode: AtomicU8::new(0),
            lock: RawLock::new(),
            state: UnsafeCell::new(None),
        }
    }

    /// True when the owner has idle release on.
    fn is_idle(&self) -> bool {
        self.mode.load(Ordering::Acquire) & IDLE != 0
    }

    /// The slot's lock when its owner has idle release on (the owner word
    /// was read with acquire, so the mode is the owner's).
    #[inline(always)]
    fn idle_lock(&self) -> Option<LockGuard<'_>> {
        if self.mode.load(Ordering::Relaxed) & IDLE != 0 {
            return Some(self.lock.lock());
        }
        None
    }
}

/// Marks the cache numbered `number` as sizing itself or not (its own
/// calls only: [`CacheState::set_sizer`]).
fn set_auto_mode(number: u32, auto: bool) {
    if let Some(s) = slot(number) {
        if auto {
            s.mode.fetch_or(AUTO, Ordering::Relaxed);
        } else {
            s.mode.fetch_and(!AUTO, Ordering::Relaxed);
        }
    }
}

/// Caches with idle release on, registered now (in a fork child: with
/// those inherited).
static IDLE_CACHES: AtomicUsize = AtomicUsize::new(0);

/// How many caches have idle release on.
pub fn idle_caches() -> usize {
    IDLE_CACHES.load(Ordering::Acquire)
}

/// A cache's state as a call holds it: with the cache's lock when idle
/// release is on (the idle thread is then kept out until it drops).
pub struct Held<'a> {
    state: &'a mut CacheState,
    lock: Option<LockGuard<'a>>,
}

impl<'a> Held<'a> {
    /// True when the cache's lock is held (idle release is on).
    #[inline(always)]
    pub fn locked(&self) -> bool {
        self.lock.is_some()
    }

    /// Gives up the state, keeping the lock (if any): `free` holds it
    /// while the state leaves the slot.
    pub fn into_lock(self) -> Option<LockGuard<'a>> {
        self.lock
    }
}

impl Deref for Held<'_> {
    type Target = CacheState;
    #[inline(always)]
    fn deref(&self) -> &CacheState {
        self.state
    }
}

impl DerefMut for Held<'_> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut CacheState {
        self.state
    }
}

/// Segment `s` holds `FIRST_SEGMENT << s` slots.
const FIRST_SEGMENT: usize = 64;
const SEGMENTS: usize = 27;

/// Segments 1 and up, allocated when first needed.
static SEGMENT: [AtomicPtr<Slot>; SEGMENTS] = [const { AtomicPtr::new(null_mut()) }; SEGMENTS];

/// Segment 0, static: the slot of a process's first 64 caches is found
/// without loading a segment pointer. (Under Miri segment 0 is allocated
/// like the others: Stacked Borrows would retag the whole static array on
/// every lookup.)
const FIRST_STATIC: usize = if cfg!(miri) { 0 } else { FIRST_SEGMENT };
static FIRST: [Slot; FIRST_STATIC] = [const { Slot::new() }; FIRST_STATIC];

// SAFETY: a slot's state is reached only by the cache that owns it (its
// owner word, published with Release after the state is written), whose
// calls the caller serializes, and by `register`/`unregister` under the
// registry lock while no one else owns it; when the slot is `idle`, also
// by the idle thread, and then every user holds the slot's `lock`.
unsafe impl Sync for Slot {}

#[inline(always)]
fn position(number: u32) -> (usize, usize) {
    if number as usize <= FIRST_SEGMENT {
        // The usual case: a process with up to 64 caches at once.
        return (0, number as usize - 1);
    }
    let j = number as usize - 1 + FIRST_SEGMENT;
    let s = (usize::BITS - 1 - j.leading_zeros()) as usize - FIRST_SEGMENT.trailing_zeros() as usize;
    (s, j - (FIRST_SEGMENT << s))
}

/// The slot numbered `number`, if its segment exists.
#[inline(always)]
fn slot(number: u32) -> Option<&'static Slot> {
    if number == 0 {
        return None;
    }
    if let Some(first) = FIRST.get(number as usize - 1) {
        return Some(first);
    }
    let (s, i) = position(number);
    let seg = SEGMENT.get(s)?.load(Ordering::Acquire);
    // SAFETY: a published segment holds `FIRST_SEGMENT << s` slots and is
    // freed only at unload, when no cache is initialised.
    (!seg.is_null()).then(|| unsafe { &*seg.add(i) })
}

struct Numbers {
    /// Free numbers, reused lowest first: the numbers in use stay as
    /// dense as the caches alive (so do the statistics file's records,
    /// and most caches' slots stay in segment 0).
    free: BinaryHeap<Reverse<u32>>,
    next: u32,
    by_owner: HashMap<u64, u32>,
}

impl Numbers {
    /// The lowest free number, else a new one.
    fn take_number(&mut self) -> u32 {
        self.free.pop().map(|Reverse(k)| k).unwrap_or_else(|| {
            self.next = self
                .next
                .checked_add(1)
                .expect("qed-l2-cache: 2^32 caches at once");
            self.next - 1
        })
    }
}

static NUMBERS: Locked<Option<Numbers>> = Locked::new(None);

fn numbers<R>(f: impl FnOnce(&mut Numbers) -> R) -> R {
    NUMBERS.with(|n, stolen| {
        if stolen {
            rebuild_numbers(n);
        }
        f(n.get_or_insert_with(|| Numbers {
            free: BinaryHeap::new(),
            next: 1,
            by_owner: HashMap::new(),
        }))
    })
}

/// Every slot that exists, with its number.
fn all_slots() -> impl Iterator<Item = (u32, &'static Slot)> {
    (0..SEGMENTS).flat_map(|s| {
        let len = FIRST_SEGMENT << s;
        let seg: *const Slot = if s == 0 && FIRST_STATIC > 0 {
            FIRST.as_ptr()
        } else {
            SEGMENT[s].load(Ordering::Acquire)
        };
        let first_number = if s == 0 {
            1
        } else {
            (FIRST_SEGMENT << s) - FIRST_SEGMENT + 1
        };
        (0..if seg.is_null() { 0 } else { len }).map(move |i| {
            // SAFETY: a published segment holds `len` slots and is freed
            // only at unload.
            (first_number as u32 + i as u32, unsafe { &*seg.add(i) })
        })
    })
}

/// In a fork child whose registry lock was held by a thread the child does
/// not have: that thread may have been changing the map, so it is rebuilt
/// from the slots, whose owner words are always right (a slot's state is
/// written before its owner is published, and taken after it is cleared).
/// The old map is leaked, not dropped: it may be half-updated.
#[cold]
fn rebuild_numbers(n: &mut Option<Numbers>) {
    std::mem::forget(n.take());
    let mut fresh = Numbers {
        free: BinaryHeap::new(),
        next: 1,
        by_owner: HashMap::new(),
    };
    for (number, slot) in all_slots() {
        fresh.next = fresh.next.max(number + 1);
        match slot.owner.load(Ordering::Acquire) {
            0 => {
                // A free slot's state is None, unless a register was cut
                // short: forget whatever is there, never drop it.
                // SAFETY: no cache owns the slot, so no one reads it.
                unsafe { std::ptr::write(slot.state.get(), None) };
                fresh.free.push(Reverse(number));
            }
            owner => {
                fresh.by_owner.insert(owner, number);
            }
        }
    }
    *n = Some(fresh);
}

/// Makes sure slot `number`'s segment exists (registry lock held).
fn grow_to(number: u32) {
    let (s, _) = position(number);
    if (s > 0 || FIRST_STATIC == 0) && SEGMENT[s].load(Ordering::Acquire).is_null() {
        let slots: Box<[Slot]> = (0..FIRST_SEGMENT << s).map(|_| Slot::new()).collect();
        SEGMENT[s].store(Box::leak(slots).as_mut_ptr(), Ordering::Release);
    }
}

/// Records a new cache at `owner`, with the state `make` builds, and
/// returns its number.
pub fn register(owner: usize, make: impl FnOnce() -> CacheState) -> u32 {
    numbers(|n| {
        let number = n.take_number();
        grow_to(number);
        let slot = slot(number).expect("segment just made");
        let mut state = make();
        state.number = number;
        let idle = state.idle_on();
        // SAFETY: the slot is free (owner 0, mode 0), so no one reads its
        // state; the Release stores below publish it.
        unsafe { *slot.state.get() = Some(state) };
        if idle {
            IDLE_CACHES.fetch_add(1, Ordering::AcqRel);
            slot.mode.store(IDLE, Ordering::Release);
        }
        slot.owner.store(hide(owner), Ordering::Release);
        n.by_owner.insert(hide(owner), number);
        number
    })
}

/// The live cache at `owner`: through the hint, else through the map.
/// Returns its number (to rewrite a wrong hint) and its state, held with
/// the cache's lock when idle release is on.
///
/// # Safety
/// Calls on one cache are serialized by the caller, so the returned state
/// is used by one thread at a time until `unregister` (the idle thread is
/// kept out by the lock).
#[inline(always)]
pub unsafe fn find<'a>(owner: usize, hint: u32) -> Option<(u32, Held<'a>)> {
    let key = hide(owner);
    if let Some(s) = slot(hint) {
        if s.owner.load(Ordering::Acquire) == key {
            let lock = s.idle_lock();
            // SAFETY: owned by `owner`, initialised before the owner word
            // was published; the caller serializes its use, and the lock
            // (idle caches) keeps the idle thread out.
            return unsafe {
                (*s.state.get())
                    .as_mut()
                    .map(|state| (hint, Held { state, lock }))
            };
        }
    }
    // SAFETY: as above.
    unsafe { find_by_address(key) }
}

/// [`find`] when the hint is wrong: the map decides.
///
/// # Safety
/// As for [`find`].
#[cold]
#[inline(never)]
unsafe fn find_by_address<'a>(key: u64) -> Option<(u32, Held<'a>)> {
    let number = numbers(|n| n.by_owner.get(&key).copied())?;
    let s = slot(number)?;
    if s.owner.load(Ordering::Acquire) != key {
        return None;
    }
    let lock = s.idle_lock();
    // SAFETY: as in `find`.
    unsafe {
        (*s.state.get())
            .as_mut()
            .map(|state| (number, Held { state, lock }))
    }
}

/// [`find`] for the hit path: the state of the live cache at `owner` when
/// the hint is its number and the cache is plain (neither idle release nor
/// auto sizing on: nothing to lock, nothing more for a hit to do); `None`
/// for anything else, which [`find`] then decides.
///
/// # Safety
/// As for [`find`].
#[inline(always)]
pub unsafe fn find_plain<'a>(owner: usize, hint: u32) -> Option<&'a mut CacheState> {
    let plain = |s: &'a Slot| {
        if s.owner.load(Ordering::Acquire) != hide(owner) || s.mode.load(Ordering::Relaxed) != 0 {
            return None;
        }
        // SAFETY: owned by `owner`, initialised before the owner word was
        // published; the caller serializes its use, and the idle thread
        // never reaches a slot without the IDLE bit.
        unsafe { (*s.state.get()).as_mut() }
    };
    // Segment 0 first, where the usual cache is (hint 0 wraps past it).
    if let Some(first) = FIRST.get(hint.wrapping_sub(1) as usize) {
        return plain(first);
    }
    plain(slot(hint)?)
}

/// Takes the live cache at `owner`, if any, out of the registry, found
/// without reading the struct.
pub fn unregister_at(owner: usize) -> Option<CacheState> {
    let number = numbers(|n| n.by_owner.get(&hide(owner)).copied())?;
    // The idle thread is kept out while the state leaves (the caller
    // serializes init and free at this address, so the number stays).
    let _held = slot(number)?.idle_lock();
    numbers(|n| take(n, owner, number))
}

/// Takes the cache numbered `number` (at `owner`) out of the registry.
/// When the cache has idle release on, the caller holds its lock (the
/// [`Held`] of the call).
pub fn unregister(owner: usize, number: u32) -> Option<CacheState> {
    numbers(|n| take(n, owner, number))
}

/// [`unregister`], the registry lock held.
fn take(n: &mut Numbers, owner: usize, number: u32) -> Option<CacheState> {
    let s = slot(number)?;
    if s.owner.load(Ordering::Acquire) != hide(owner) {
        return None;
    }
    n.by_owner.remove(&hide(owner));
    if s.mode.swap(0, Ordering::AcqRel) & IDLE != 0 {
        IDLE_CACHES.fetch_sub(1, Ordering::AcqRel);
    }
    s.owner.store(0, Ordering::Release);
    n.free.push(Reverse(number));
    // SAFETY: the owner word is 0 again, so no lookup reaches the state;
    // the caller of `unregister` was its only user.
    unsafe { (*s.state.get()).take() }
}

/// For the idle thread: runs `f` on the state of every cache with idle
/// release on, each under its cache's lock. The lock is tried, never
/// waited for: while a call holds it the thread spins and yields, and
/// gives up when `stop` says so (then returns false), so a stopping
/// thread is never kept by a caller.
pub fn for_each_idle_cache(stop: &dyn Fn() -> bool, mut f: impl FnMut(&mut CacheState)) -> bool {
    for (_, slot) in all_slots() {
        if slot.owner.load(Ordering::Acquire) == 0 || !slot.is_idle() {
            continue;
        }
        let mut spins = 0u32;
        let held = loop {
            if let Some(held) = slot.lock.try_lock() {
                break held;
            }
            if stop() {
                return false;
            }
            spins = spins.wrapping_add(1);
            if spins % 64 != 0 {
                std::hint::spin_loop();
            } else {
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
            }
        };
        // Checked again under the lock: a cache that has idle release on
        // and owns the slot now is complete (its state was written before
        // the flag and the owner word), and its calls wait for the lock.
        if slot.owner.load(Ordering::Acquire) != 0 && slot.is_idle() {
            // SAFETY: see above; the lock is held until `held` drops.
            if let Some(state) = unsafe { (*slot.state.get()).as_mut() } {
                f(state);
            }
        }
        drop(held);
    }
    true
}

/// True when no cache is initialised.
pub fn is_empty() -> bool {
    numbers(|n| n.by_owner.is_empty())
}

/// At unload, with no cache initialised: frees the segments.
pub fn release_all_at_unload() {
    NUMBERS.with(|n, _| {
        if n.as_ref().is_some_and(|n| !n.by_owner.is_empty()) {
            return;
        }
        *n = None;
        for (s, seg) in SEGMENT.iter().enumerate() {
            let p = seg.swap(null_mut(), Ordering::AcqRel);
            if !p.is_null() {
                // SAFETY: made by `grow_to` from a boxed slice of this
                // length; no cache is live, so no state is in use.
                drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(p, FIRST_SEGMENT << s)) });
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{Cache, Policy};

    #[test]
    fn positions_cover_every_number_once() {
        assert_eq!(position(1), (0, 0));
        assert_eq!(position(64), (0, 63));
        assert_eq!(position(65), (1, 0));
        assert_eq!(position(64 + 128), (1, 127));
        assert_eq!(position(64 + 128 + 1), (2, 0));
        assert_eq!(position(u32::MAX).0, SEGMENTS - 1);
    }

    #[test]
    fn hint_or_map_finds_the_owner_only() {
        let owner_a = 0x1000_0008usize;
        let owner_b = 0x1000_0040usize;
        let mk = || CacheState::new(Cache::new(4, Policy::Fifo), HeadWords::default());
        let a = register(owner_a, mk);
        let b = register(owner_b, mk);
        // SAFETY: this test is the only user of these states.
        unsafe {
            assert_eq!(find(owner_a, a).map(|f| f.0), Some(a));
            // A wrong hint (b's number, or garbage) still finds a via the map.
            assert_eq!(find(owner_a, b).map(|f| f.0), Some(a));
            assert_eq!(find(owner_a, 0xdead_beef).map(|f| f.0), Some(a));
            assert!(find(owner_a + 8, a).is_none());
        }
        assert!(unregister(owner_a, a).is_some());
        // SAFETY: as above.
        unsafe { assert!(find(owner_a, a).is_none()) };
        assert!(unregister(owner_b, b).is_some());
    }

    #[test]
    fn idle_caches_are_locked_counted_and_swept() {
        let owner = 0x4000_0008usize;
        let plain = 0x4000_0040usize;
        let before = idle_caches();
        let idle = register(owner, || {
            let mut s = CacheState::new(Cache::new(4, Policy::Fifo), HeadWords::default());
            s.idle_epochs = 5;
            s
        });
        let other = register(plain, || {
            CacheState::new(Cache::new(4, Policy::Fifo), HeadWords::default())
        });
        assert!(idle_caches() > before);
        // SAFETY: this test is the only user of these states.
        unsafe {
            assert!(find_plain(owner, idle).is_none(), "an idle cache is never plain");
            let (_, held) = find(owner, idle).unwrap();
            assert!(held.locked() && held.idle_on());
            // The sweep cannot take a held cache: it gives up when told to.
            assert!(!for_each_idle_cache(&|| true, |s| assert_ne!(s.number, idle)));
            drop(held);
            assert!(
                !find(plain, other).unwrap().1.locked(),
                "no lock without idle release"
            );
            assert!(find_plain(plain, other).is_some());
            // Auto sizing makes a cache not plain, and off plain again.
            set_auto_mode(other, true);
            assert!(find_plain(plain, other).is_none());
            assert!(!find(plain, other).unwrap().1.locked());
            set_auto_mode(other, false);
            assert!(find_plain(plain, other).is_some());
            // A wrong hint is never plain: `find` decides.
            assert!(find_plain(plain, idle).is_none());
        }
        let mut seen = vec![];
        assert!(for_each_idle_cache(&|| false, |s| seen.push(s.number)));
        assert!(seen.contains(&idle) && !seen.contains(&other), "{seen:?}");
        assert!(unregister_at(owner).is_some());
        assert!(unregister(plain, other).is_some());
        let mut seen = vec![];
        for_each_idle_cache(&|| false, |s| seen.push(s.number));
        assert!(!seen.contains(&idle));
    }

    #[test]
    fn freed_numbers_are_reused_lowest_first() {
        let mut n = Numbers {
            free: BinaryHeap::new(),
            next: 1,
            by_owner: HashMap::new(),
        };
        let taken: Vec<u32> = (0..5).map(|_| n.take_number()).collect();
        assert_eq!(taken, [1, 2, 3, 4, 5]);
        for k in [4, 2, 5] {
            n.free.push(Reverse(k));
        }
        assert_eq!([n.take_number(), n.take_number(), n.take_number()], [2, 4, 5]);
        assert_eq!(n.take_number(), 6, "then new numbers");
    }

    #[test]
    fn a_state_knows_its_number() {
        let owner = 0x3000_0008usize;
        let number = register(owner, || {
            CacheState::new(Cache::new(1, Policy::Fifo), HeadWords::default())
        });
        let state = unregister(owner, number).expect("registered");
        assert_eq!(state.number, number);
    }

    #[test]
    fn serials_grow_in_creation_order_and_caches_are_made_here() {
        let a = CacheState::new(Cache::new(1, Policy::Fifo), HeadWords::default());
        let b = CacheState::new(Cache::new(1, Policy::Fifo), HeadWords::default());
        assert!(b.serial > a.serial);
        assert!(a.made_here() && b.made_here());
    }

    #[test]
    // The rebuild leaks the half-updated map by design, which Miri's leak
    // check would report.
    #[cfg_attr(miri, ignore)]
    fn a_lock_taken_over_in_a_fork_child_rebuilds_the_map() {
        // A child whose parent held the registry lock: simulated by a
        // lock word holding another process's token and a map that lies.
        let owner = 0x2000_0008usize;
        let number = register(owner, || {
            CacheState::new(Cache::new(2, Policy::Lru), HeadWords::default())
        });
        NUMBERS.with(|n, _| {
            let n = n.as_mut().unwrap();
            // Half-updated by the vanished thread: the entry is missing.
            n.by_owner.remove(&hide(owner));
        });
        NUMBERS.pretend_held_elsewhere();
        // The map is rebuilt from the slots' owner words at the next use.
        // SAFETY: this test is the only user of the state.
        unsafe { assert_eq!(find_by_address(hide(owner)).map(|f| f.0), Some(number)) };
        assert!(unregister_at(owner).is_some());
    }
}
