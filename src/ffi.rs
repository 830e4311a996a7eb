// SPDX-License-Identifier: LGPL-2.1-or-later
//! The exported C functions. Each one runs inside a panic boundary,
//! checks its pointers, converts them, calls the safe core
//! ([`crate::cache::Cache`]) and the entry rules ([`crate::entry`]), and
//! mirrors what the core changed onto the C-visible list (through
//! [`crate::abi`]).

use crate::abi::{
    qtailq_clear_links, qtailq_init, qtailq_insert_tail, qtailq_remove, CachedL2Table, L2TableCache,
};
use crate::advisor::{self, Advisor};
use crate::cache::{Cache, Commit, Policy, Stats};
use crate::config;
use crate::diag::{misuse, trace, tracing, Refused};
use crate::entry::{Checked, EntryPtr, NotHeld, Saturated};
use crate::memtools::hide;
use crate::probes::{qed_l2_cache, qemu};
use crate::registry::{self, CacheState, HeadWords, Held};
use crate::shares::{self, Decision};
use crate::sizing::auto;
use crate::stderr::P;
use crate::{idle, ledger, lifecycle};
use std::ffi::{c_char, c_uint};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::{null_mut, NonNull};

/// An eviction policy, for `qed_l2_cache_set_policy`: one of the
/// `QED_L2_CACHE_POLICY_*` values.
pub type QedL2CachePolicy = u32;

/// Insertion order; hits change nothing. The default, exactly QEMU's
/// original behaviour.
pub const QED_L2_CACHE_POLICY_FIFO: QedL2CachePolicy = 0;
/// Least recently used: every hit moves the entry to the tail of the list.
pub const QED_L2_CACHE_POLICY_LRU: QedL2CachePolicy = 1;
/// SIEVE: a hit marks the entry visited; eviction sweeps a hand from the
/// head, sparing visited entries once. Hits on the entry committed last,
/// until another entry is committed, do not mark it: they belong to the
/// miss that brought it in (the find after commit, a scan of that table).
pub const QED_L2_CACHE_POLICY_SIEVE: QedL2CachePolicy = 2;

/// What a cache counted since `qed_init_l2_cache`
/// (filled by `qed_l2_cache_get_stats`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QedL2CacheStats {
    /// `qed_find_l2_cache_entry` calls that returned an entry.
    pub hits: u64,
    /// `qed_find_l2_cache_entry` calls that returned NULL.
    pub misses: u64,
    /// `qed_commit_l2_cache_entry` calls accepted, duplicates included.
    pub commits: u64,
    /// Commits whose offset was already cached (the cached entry stayed).
    pub duplicate_commits: u64,
    /// Entries evicted to make room or to honour a lower maximum.
    pub evictions: u64,
    /// The most entries the cache held at once.
    pub peak_entries: u64,
}

/// The C mirror of the core's counters. It is a type of this module, not
/// the core's own, because the ABI baseline's debug information names it
/// here; every field is named on both sides, so a counter added to the
/// core does not compile until C has it too.
impl From<Stats> for QedL2CacheStats {
    fn from(s: Stats) -> Self {
        let Stats {
            hits,
            misses,
            commits,
            duplicate_commits,
            evictions,
            peak_entries,
        } = s;
        QedL2CacheStats {
            hits,
            misses,
            commits,
            duplicate_commits,
            evictions,
            peak_entries,
        }
    }
}

// The C constants are the numbers of the core's policies (the header keeps
// literals: cbindgen writes them as they are).
const _: () = assert!(QED_L2_CACHE_POLICY_FIFO == Policy::Fifo as u32);
const _: () = assert!(QED_L2_CACHE_POLICY_LRU == Policy::Lru as u32);
const _: () = assert!(QED_L2_CACHE_POLICY_SIEVE == Policy::Sieve as u32);

/// How many released entries each thread keeps in quarantine: an entry is
/// recognised as released (a double unref, a commit after release) while it
/// is among the last `QED_L2_CACHE_QUARANTINE_PER_THREAD` entries released
/// by the thread that released it. After that its memory goes back to the
/// allocator, and a stale pointer to it is reported as not allocated by the
/// library, unless the allocator has handed that address out again for a
/// new entry: then the call acts on the new entry, which no check can tell
/// apart (docs/misuse.md, "Limits").
pub const QED_L2_CACHE_QUARANTINE_PER_THREAD: usize = 4096;
const _: () = assert!(QED_L2_CACHE_QUARANTINE_PER_THREAD == ledger::QUARANTINE_PER_THREAD);

/// Runs `f`; a Rust panic must never unwind into C, so it aborts instead.
fn boundary<R>(function: &str, f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            crate::stderr::write_line(format_args!(
                "qed-l2-cache: {function}: internal error (Rust panic); aborting"
            ));
            std::process::abort()
        }
    }
}

/// The list head words of the caller's struct as they are now.
///
/// # Safety
/// `l2_cache` must point to 24 readable bytes.
#[inline(always)]
unsafe fn head_words(l2_cache: *const L2TableCache) -> HeadWords {
    // SAFETY: per the caller's guarantee; the union's circular view covers
    // both words, whatever was stored through either view.
    unsafe {
        // Kept hidden like every address the library records: the words
        // point at entries, which must not look reachable through them.
        let link = (*l2_cache).entries.tqh_circ;
        HeadWords {
            first: hide(link.tql_next as usize),
            last_link: hide(link.tql_prev as usize),
            n_entries: (*l2_cache).n_entries,
        }
    }
}

/// Records the head the library just left in the struct.
///
/// # Safety
/// As for [`head_words`].
#[inline(always)]
unsafe fn remember_head(l2_cache: *const L2TableCache, state: &mut CacheState) {
    // SAFETY: per the caller's guarantee.
    state.written = unsafe { head_words(l2_cache) };
}

/// The hidden state of an initialised cache, and its number.
///
/// The cache is the one the library's map records at this address (the
/// number in the struct's padding is only a hint, rewritten when wrong),
/// and its list head must be exactly what the library last wrote there:
/// anything else is refused before the list is touched. A correct caller
/// never changes the head (only the library writes it), so these checks
/// cannot fire for one.
///
/// With idle release on, the state comes with the cache's lock (held
/// until the [`Held`] drops), prepared by [`prepare_held`].
///
/// # Safety
/// `l2_cache`, if not NULL, must point to an `L2TableCache` (24 readable
/// bytes) that no other thread uses during the call.
#[inline(always)]
unsafe fn state_of<'a>(function: &str, l2_cache: *const L2TableCache) -> Result<(u32, Held<'a>), Refused> {
    if l2_cache.is_null() {
        return Err(misuse(function, format_args!("l2_cache is NULL")));
    }
    if !l2_cache.is_aligned() {
        return Err(misuse(
            function,
            format_args!("l2_cache {}: misaligned pointer", P(l2_cache)),
        ));
    }
    // SAFETY: non-null and aligned, readable per the caller's guarantee.
    let hint = unsafe { (*l2_cache).handle };
    // SAFETY: calls on one cache are serialized by the caller.
    let Some((number, mut state)) = (unsafe { registry::find(l2_cache as usize, hint) }) else {
        return Err(misuse(
            function,
            format_args!(
                "l2_cache {}: not initialised, already freed, or a copy (call qed_init_l2_cache first)",
                P(l2_cache)
            ),
        ));
    };
    // SAFETY: readable per the caller's guarantee.
    let head = unsafe { head_words(l2_cache) };
    if head != state.written {
        return Err(misuse(
            function,
            format_args!(
                "l2_cache {}: the list head is not what the library last wrote there \
                 (struct overwritten, zeroed or copied onto?); refusing to follow it",
                P(l2_cache)
            ),
        ));
    }
    if number != hint {
        // The padding was overwritten by a store to the struct: restore
        // the hint (the map, not the hint, said which cache this is).
        // SAFETY: the struct is the caller's live cache, writable.
        unsafe { (*l2_cache.cast_mut()).handle = number };
    }
    // SAFETY: the caller's live cache, its head checked.
    unsafe { prepare_held(l2_cache, &mut state) };
    Ok((number, state))
}

/// [`state_of`] for the hit path: the state of a plain cache (a fixed
/// cache without idle release) whose struct is exactly as the library
/// left it, hint included; `None` for anything else, which [`state_of`]
/// then decides (and reports, if it is a misuse).
///
/// # Safety
/// As for [`state_of`].
#[inline(always)]
unsafe fn plain_state_of<'a>(l2_cache: *const L2TableCache) -> Option<&'a mut CacheState> {
    if l2_cache.is_null() || !l2_cache.is_aligned() {
        return None;
    }
    // SAFETY: non-null and aligned, readable per the caller's guarantee;
    // calls on one cache are serialized by the caller.
    let state = unsafe { registry::find_plain(l2_cache as usize, (*l2_cache).handle) }?;
    // SAFETY: readable per the caller's guarantee.
    (unsafe { head_words(l2_cache) } == state.written).then_some(state)
}

/// Before a call uses the state of an idle cache (its lock held): this
/// process's idle thread is started if it is not running (a fork child's
/// first call), and the entries the thread released since the last call
/// leave the list ([`reap`]).
///
/// # Safety
/// `l2_cache` is the caller's live cache of `held`, its head checked.
#[inline(always)]
unsafe fn prepare_held(l2_cache: *const L2TableCache, held: &mut Held<'_>) {
    if held.locked() {
        idle::ensure_thread();
        if held.idle_pending != 0 {
            // SAFETY: the caller's live cache, its head checked; the
            // struct is writable (also behind the getters' const pointer:
            // the caller's struct, which init wrote).
            unsafe { reap(l2_cache.cast_mut(), held) };
        }
    }
}

/// Takes the entries whose tables the idle thread released out of the
/// cache and the C list, and drops the cache's reference to each (which
/// releases it: no request held it). Not evictions: counted apart, as
/// idle releases, when the thread released them.
///
/// # Safety
/// `l2_cache` is the initialised cache of `state`, whose lock is held.
#[cold]
#[inline(never)]
unsafe fn reap(l2_cache: *mut L2TableCache, state: &mut CacheState) {
    state.idle_pending = 0;
    let mut gone = Vec::new();
    state.core.remove_if(
        // SAFETY: cached entries, live by the cache's reference.
        |e| unsafe { e.is_idle_released() },
        |e| gone.push(e),
    );
    for e in gone {
        // SAFETY: on this cache's list until removed here, live by the
        // cache's reference until the drop, which releases it.
        unsafe { take_off_list(l2_cache, e, "qed_idle_release_l2_cache_entry") };
    }
    // SAFETY: valid and writable per the caller.
    unsafe { sync_count(l2_cache, state) };
    state.publish_all();
}

/// A live entry from a pointer C passed in; `if_released` says what a
/// released one means for this function. Nothing is read through the
/// pointer unless the library's records say it is a live entry.
#[inline(always)]
fn live_entry(function: &str, entry: *mut CachedL2Table, if_released: &str) -> Result<EntryPtr, Refused> {
    let Some(p) = NonNull::new(entry) else {
        return Err(misuse(function, format_args!("entry is NULL")));
    };
    match EntryPtr::check(p) {
        Checked::Live(e) => Ok(e),
        Checked::Released => Err(misuse(
            function,
            format_args!("entry {}: {if_released}", P(entry)),
        )),
        Checked::Foreign => Err(misuse(
            function,
            format_args!(
                "entry {}: not allocated by qed_alloc_l2_cache_entry (or released long ago)",
                P(entry)
            ),
        )),
    }
}

/// One more reference for a find (`function`); a count at `INT_MAX` is
/// reported once and frozen.
///
/// `refs`: the count the caller just read (`EntryPtr::refs`).
///
/// # Safety
/// `e` is live and serialized by the caller's lock.
#[inline(always)]
unsafe fn take_ref(function: &str, e: EntryPtr, refs: std::ffi::c_int) {
    // SAFETY: per the caller.
    if let Err(Saturated) = unsafe { e.take_ref(refs) } {
        misuse(
            function,
            format_args!(
                "entry {}: reference count would pass INT_MAX; it stays at INT_MAX and the \
                 entry is never released",
                P(e.as_c())
            ),
        );
    }
}

/// Drops a reference, printing QEMU's unref trace line.
///
/// # Safety
/// As for [`EntryPtr::drop_ref`].
#[inline(always)]
unsafe fn drop_ref_traced(e: EntryPtr) {
    // SAFETY: per the caller.
    unsafe { drop_ref_read_traced(e, e.refs()) }
}

/// [`drop_ref_traced`] with the count the caller just read.
///
/// # Safety
/// As for [`EntryPtr::drop_ref_read`].
#[inline(always)]
unsafe fn drop_ref_read_traced(e: EntryPtr, refs: std::ffi::c_int) {
    // SAFETY: per the caller.
    let left = unsafe { e.drop_ref_read(refs) };
    if let Some(refs) = left {
        qemu::qed_unref_l2_cache_entry(e.as_c().cast(), refs);
        if tracing() {
            trace(
                "qed_unref_l2_cache_entry",
                format_args!("entry {} ref {}", P(e.as_c()), refs),
            );
        }
    }
}

/// The core's in-use test: a pinned entry is never evicted.
fn pinned(e: EntryPtr) -> bool {
    // SAFETY: the core asks only about entries it holds, which the cache's
    // reference keeps live; the caller's lock serializes the call.
    unsafe { e.is_pinned() }
}

/// Takes an entry the core evicted off the C list and drops the cache's
/// reference; `table_bytes`, when the cache keeps the sum (it publishes
/// statistics), loses the table's bytes first.
///
/// # Safety
/// `l2_cache` must be the initialised cache whose list holds `e`.
unsafe fn evict(l2_cache: *mut L2TableCache, e: EntryPtr, table_bytes: Option<&mut u64>) {
    // SAFETY: per the caller's guarantee `e` is on this list, so live (the
    // cache's reference) until the drop below, which may release it.
    unsafe {
        if let Some(sum) = table_bytes {
            *sum = sum.saturating_sub(e.table_bytes());
        }
        qed_l2_cache::evict(l2_cache.cast(), e.as_c().cast(), e.offset());
        take_off_list(l2_cache, e, "qed_evict_l2_cache_entry");
    }
}

/// Takes a cached entry off the C list, prints the trace line `event`
/// (with `QED_L2_CACHE_TRACE=1`) and drops the cache's reference.
///
/// # Safety
/// `l2_cache` must be the initialised cache whose list holds `e`.
unsafe fn take_off_list(l2_cache: *mut L2TableCache, e: EntryPtr, event: &str) {
    // SAFETY: per the caller's guarantee `e` is on this list, so live (the
    // cache's reference) until the drop below, which may release it.
    unsafe {
        qtailq_remove(l2_cache, e.as_c());
        e.set_cached(false);
        if tracing() {
            trace(
                event,
                format_args!(
                    "l2_cache {} entry {} offset {}",
                    P(l2_cache),
                    P(e.as_c()),
                    e.offset()
                ),
            );
        }
        drop_ref_traced(e);
    }
}

/// Copies the core's entry count into the C struct and remembers the head
/// the library leaves there.
///
/// # Safety
/// `l2_cache` must be valid and writable.
unsafe fn sync_count(l2_cache: *mut L2TableCache, state: &mut CacheState) {
    // SAFETY: per the caller's guarantee.
    unsafe {
        (*l2_cache).n_entries = state.core.len();
        remember_head(l2_cache, state);
    }
}

/// Initialize an L2 table cache embedded in the caller's state.
///
/// Parameters: `l2_cache`, the caller's `L2TableCache` (its contents may be
/// anything, typically zeroes; they are not read).
///
/// Afterwards `l2_cache->entries` is an empty QTAILQ and `n_entries` is 0;
/// the maximum and the policy come from `QED_L2_CACHE_SIZE` and
/// `QED_L2_CACHE_POLICY` (default 50, fifo). May be called again on the
/// same address after `qed_free_l2_cache`, also after the caller zeroed the
/// struct. Calling it on a cache that was never freed frees that cache's
/// unused entries first (entries requests still hold stay alive).
///
/// Memory and lifetimes: the library keeps hidden state for the cache until
/// `qed_free_l2_cache`; the struct must not be moved or copied meanwhile.
/// There is no limit on the number of caches initialised at once.
///
/// # Safety
/// `l2_cache` must point to a writable `L2TableCache` that no other thread
/// uses during the call.
#[no_mangle]
pub unsafe extern "C" fn qed_init_l2_cache(l2_cache: *mut L2TableCache) {
    const F: &str = "qed_init_l2_cache";
    boundary(F, || {
        if l2_cache.is_null() {
            misuse(F, format_args!("l2_cache is NULL"));
            return;
        }
        if !l2_cache.is_aligned() {
            misuse(F, format_args!("l2_cache {}: misaligned pointer", P(l2_cache)));
            return;
        }
        lifecycle::setup();
        let owner = l2_cache as usize;
        if let Some(mut stale) = registry::unregister_at(owner) {
            stale.publish_gone();
            if let Some(share) = stale.share.take() {
                shares::leave(share);
            }
            // The address held a cache that was never freed (its memory may
            // have been reused since): drop that state without touching
            // the struct's old contents. A cache inherited across a fork
            // may have been mid-update in a thread the child does not have,
            // and nobody vouches for it (unlike at `free`, where the caller
            // does): it is left alone, leaked as the C file would.
            if stale.made_here() {
                stale.core.drain(detach);
            } else {
                std::mem::forget(stale);
            }
        }
        let cfg = config::get();
        // The head `qtailq_init` writes below: no first element, and the
        // last-link pointing at the head's own link (offset 0).
        let written = HeadWords {
            first: hide(0),
            last_link: hide(owner),
            n_entries: 0,
        };
        // An auto cache starts where a fixed one of the default size does.
        let max_entries = cfg.size.initial_max();
        let advisor = cfg
            .report
            .then(|| Box::new(Advisor::new(max_entries, cfg.policy, 0)));
        let idle_epochs = idle::epochs_for(cfg.idle_seconds(cfg.size == config::Size::Auto));
        let number = registry::register(owner, || {
            let mut state = CacheState::new(
                Cache::with_observer(max_entries, cfg.policy, registry::watchers(advisor)),
                written,
            );
            state.idle_epochs = idle_epochs;
            state
        });
        if idle_epochs != 0 {
            idle::ensure_thread();
        }
        if cfg.stats {
            // SAFETY: just registered at `owner`; the caller serializes
            // calls on the cache.
            if let Some((_, mut state)) = unsafe { registry::find(owner, number) } {
                state.publish_new();
            }
        }
        // SAFETY: non-null, aligned and writable per the caller's guarantee.
        unsafe {
            qtailq_init(l2_cache);
            (*l2_cache).n_entries = 0;
            (*l2_cache).handle = number;
        }
        if cfg.size == config::Size::Auto {
            // SAFETY: just registered and initialised at `owner`; the
            // caller serializes calls on the cache.
            if let Some((_, mut state)) = unsafe { registry::find(owner, number) } {
                // SAFETY: as above.
                unsafe { set_auto(l2_cache, &mut state, true) };
            }
        }
    })
}

/// Takes an entry off a list that is being discarded whole, dropping the
/// cache's reference (no trace line, as in QEMU's original).
fn detach(e: EntryPtr) {
    // SAFETY: `e` is a cached entry, live by the cache's reference until
    // the drop below; its list is discarded, so its links are stale.
    unsafe {
        qtailq_clear_links(e.as_c());
        e.set_cached(false);
        e.drop_ref();
    }
}

/// Free an L2 table cache and every table it holds.
///
/// Parameters: `l2_cache`, an initialised cache.
///
/// Every cached entry is released with its table (`free()`), and the cache
/// is left empty (`entries` an empty QTAILQ, `n_entries` 0) and no longer
/// initialised: call `qed_init_l2_cache` before using it again.
///
/// Memory and lifetimes: entries that requests still reference are a
/// misuse (reported; fatal unless `QED_L2_CACHE_ON_MISUSE=warn`); they
/// leave the cache but stay alive until their last
/// `qed_unref_l2_cache_entry`.
///
/// # Safety
/// `l2_cache` must point to an `L2TableCache` that no other thread uses
/// during the call.
#[no_mangle]
pub unsafe extern "C" fn qed_free_l2_cache(l2_cache: *mut L2TableCache) {
    const F: &str = "qed_free_l2_cache";
    boundary(F, || {
        // SAFETY: per this function's contract.
        let Ok((number, mut found)) = (unsafe { state_of(F, l2_cache) }) else {
            return;
        };
        let state = &mut *found;
        let entries = state.core.handles();
        let held = entries.iter().filter(|&&e| pinned(e)).count();
        if held > 0 {
            misuse(
                F,
                format_args!(
                    "l2_cache {}: {held} of {} entries are still referenced by requests; they leave \
                     the cache and stay alive until their last qed_unref_l2_cache_entry",
                    P(l2_cache),
                    entries.len()
                ),
            );
        }
        if config::get().report {
            advisor::report::print(state.serial, &state.core);
            if state.is_auto() {
                auto_report(state);
            }
        }
        if let Some(share) = state.share.take() {
            shares::leave(share);
        }
        state.publish_gone();
        // The cache's lock (idle release) stays held until the state left
        // the slot: the idle thread never sees it half-freed.
        let _lock = found.into_lock();
        // Drained even if the cache was inherited across a fork: the caller
        // frees it, so the caller vouches that no thread is in it.
        if let Some(mut state) = registry::unregister(l2_cache as usize, number) {
            state.core.drain(detach);
        }
        // SAFETY: `l2_cache` is valid and writable per the contract.
        unsafe {
            qtailq_init(l2_cache);
            (*l2_cache).n_entries = 0;
            (*l2_cache).handle = 0;
        }
    })
}

/// Allocate a new, uncached entry.
///
/// Parameters: `l2_cache`, the cache the entry is meant for. It is only
/// printed in trace output, never dereferenced, and may be NULL, as with
/// QEMU's original.
///
/// Returns: a zeroed entry (`table` NULL, `offset` 0) with `ref` 1, owned by
/// the caller and on no list. Never NULL: out of memory aborts.
///
/// Memory and lifetimes: set `table` to memory from an aligned allocator
/// that `free()` releases, and `offset`; then either
/// `qed_commit_l2_cache_entry` it or `qed_unref_l2_cache_entry` it. The
/// entry may be used and released on any thread.
///
/// # Safety
/// None beyond the C signature: `l2_cache` is only printed.
#[no_mangle]
pub unsafe extern "C" fn qed_alloc_l2_cache_entry(l2_cache: *mut L2TableCache) -> *mut CachedL2Table {
    const F: &str = "qed_alloc_l2_cache_entry";
    boundary(F, || {
        let e = EntryPtr::alloc();
        qemu::qed_alloc_l2_cache_entry(l2_cache.cast(), e.as_c().cast());
        if tracing() {
            trace(F, format_args!("l2_cache {} entry {}", P(l2_cache), P(e.as_c())));
        }
        e.as_c()
    })
}

/// Drop one reference to an entry.
///
/// Parameters: `entry`, an entry from `qed_alloc_l2_cache_entry` or
/// `qed_find_l2_cache_entry`, or NULL (then nothing happens).
///
/// Memory and lifetimes: at zero references the entry and its `table`
/// (with `free()`) are released. Dropping a reference you do not hold
/// (double unref), or the cache's own, is a misuse. Whether `entry` is one
/// of the library's is decided from the library's own records, without
/// reading `*entry`; docs/misuse.md states how long a released entry is
/// recognised as such.
///
/// # Safety
/// Calls on entries of one cache are serialized by the caller's lock.
#[no_mangle]
pub unsafe extern "C" fn qed_unref_l2_cache_entry(entry: *mut CachedL2Table) {
    const F: &str = "qed_unref_l2_cache_entry";
    boundary(F, || {
        if entry.is_null() {
            return;
        }
        let Ok(e) = live_entry(F, entry, "double unref: the entry has no references left") else {
            return;
        };
        // SAFETY: live (the library's records say so); the caller's lock
        // serializes calls on it.
        unsafe {
            let why = match e.caller_may_unref() {
                Ok(refs) => return drop_ref_read_traced(e, refs),
                Err(why) => why,
            };
            let (refs, whose) = match why {
                NotHeld::NoneLeft(refs) => (refs, ""),
                NotHeld::CachesOwn => (e.refs(), ", the cache's own"),
            };
            misuse(
                F,
                format_args!(
                    "entry {}: unref of a reference the caller does not hold (ref {refs}{whose}); double unref?",
                    P(entry)
                ),
            );
        }
    })
}

/// Look an L2 table up by its offset in the image file.
///
/// Parameters: `l2_cache`, an initialised cache; `offset`, the table's
/// byte offset in the image file.
///
/// Returns: the cached entry with one more reference, which the caller
/// drops with `qed_unref_l2_cache_entry`; NULL when the table is not
/// cached (satisfy the miss with alloc, read, commit, find).
///
/// Locking: called with the caller's table lock held. O(1) whatever the
/// number of cached tables; no allocation, no lock of the library's.
///
/// # Safety
/// `l2_cache` must point to an `L2TableCache` that no other thread uses
/// during the call.
#[no_mangle]
pub unsafe extern "C" fn qed_find_l2_cache_entry(
    l2_cache: *mut L2TableCache,
    offset: u64,
) -> *mut CachedL2Table {
    const F: &str = "qed_find_l2_cache_entry";
    boundary(F, || {
        // SAFETY: per this function's contract.
        if let Some(state) = unsafe { plain_state_of(l2_cache) } {
            // SAFETY: per this function's contract; the head checked.
            return unsafe { find_in(l2_cache, state, offset, |_, _| {}) };
        }
        // SAFETY: per this function's contract.
        unsafe { find_any(l2_cache, offset) }
    })
}

/// The find: the hit's entry, with its new reference, after `on_hit` ran
/// on it; NULL on a miss.
///
/// # Safety
/// `l2_cache` is the caller's live cache of `state`, its head checked, no
/// other thread using it during the call.
#[inline(always)]
unsafe fn find_in(
    l2_cache: *mut L2TableCache,
    state: &mut CacheState,
    offset: u64,
    on_hit: impl FnOnce(&mut CacheState, EntryPtr),
) -> *mut CachedL2Table {
    const F: &str = "qed_find_l2_cache_entry";
    let Some(hit) = state.core.find(offset) else {
        qed_l2_cache::miss(l2_cache.cast(), offset);
        state.publish_miss();
        return null_mut();
    };
    state.publish_hit();
    let e = hit.handle;
    // SAFETY: `e` is on this cache's list (the core says so), so live by
    // the cache's reference; the caller's lock serializes the call.
    unsafe {
        if hit.moved_to_tail {
            qtailq_remove(l2_cache, e.as_c());
            qtailq_insert_tail(l2_cache, e.as_c());
            remember_head(l2_cache, state);
        }
        if tracing() {
            trace(
                F,
                format_args!(
                    "l2_cache {} entry {} offset {} ref {}",
                    P(l2_cache),
                    P(e.as_c()),
                    offset,
                    e.refs()
                ),
            );
        }
        // The probe and take_ref read the same count: one load for both.
        let refs = e.refs();
        qemu::qed_find_l2_cache_entry(l2_cache.cast(), e.as_c().cast(), offset, refs);
        take_ref(F, e, refs);
    }
    on_hit(state, e);
    e.as_c()
}

/// The find of any cache that is not plain (idle release or auto sizing
/// on), and of a struct the checks refuse: a hit's table is stamped as
/// used, and an auto cache may choose its size.
///
/// # Safety
/// As for `qed_find_l2_cache_entry`.
#[cold]
#[inline(never)]
unsafe fn find_any(l2_cache: *mut L2TableCache, offset: u64) -> *mut CachedL2Table {
    const F: &str = "qed_find_l2_cache_entry";
    // SAFETY: per the caller's guarantee.
    let Ok((_, mut held)) = (unsafe { state_of(F, l2_cache) }) else {
        return null_mut();
    };
    let state = &mut *held;
    // SAFETY: per the caller's guarantee; the head checked (all three).
    unsafe {
        let found = find_in(l2_cache, state, offset, |state, e| after_hit(l2_cache, state, e));
        if found.is_null() && size_due(state) {
            choose_size(l2_cache, state);
        }
        found
    }
}

/// A commit refused because of the cache or of the offset still takes the
/// caller's reference, as a successful one would: a caller never takes
/// back what it handed to commit, so keeping it would leak the entry. Only
/// a live entry that is not cached holds such a reference; anything else
/// (cached, released, not the library's) is left untouched.
fn drop_refused(l2_table: *mut CachedL2Table) {
    if let Some(p) = NonNull::new(l2_table) {
        if let Checked::Live(e) = EntryPtr::check(p) {
            // SAFETY: live (the library's records say so); serialized by
            // the caller's lock.
            unsafe {
                if e.holds_callers_reference() {
                    drop_ref_traced(e);
                }
            }
        }
    }
}

/// Commit an entry into the cache, taking over one reference from the
/// caller.
///
/// Parameters: `l2_cache`, an initialised cache; `l2_table`, an entry from
/// `qed_alloc_l2_cache_entry` with `table` and a non-zero `offset` set,
/// not already cached.
///
/// If the offset is already cached, the cached entry stays and `l2_table`
/// loses the reference (released if it was its last). Otherwise, when the
/// cache is full, entries only the cache references are evicted (per the
/// policy) until there is room, and `l2_table` is appended at the tail.
/// Entries that requests still reference are never evicted: if all are in
/// use the cache grows past its maximum and shrinks back later.
///
/// Memory and lifetimes: the caller's reference now belongs to the cache;
/// call `qed_find_l2_cache_entry` to get one back. A commit refused because
/// of the cache (NULL, misaligned, not initialised, freed, copied, list
/// head not the library's) or because `offset` is 0 still takes that
/// reference (with `QED_L2_CACHE_ON_MISUSE=warn`, nothing leaks); an entry
/// that is cached, released or not the library's is left untouched.
///
/// # Safety
/// `l2_cache` must point to an `L2TableCache`, neither it nor `l2_table`
/// used by another thread during the call.
#[no_mangle]
pub unsafe extern "C" fn qed_commit_l2_cache_entry(
    l2_cache: *mut L2TableCache,
    l2_table: *mut CachedL2Table,
) {
    const F: &str = "qed_commit_l2_cache_entry";
    boundary(F, || {
        // SAFETY: per this function's contract.
        let (_, mut held) = match unsafe { state_of(F, l2_cache) } {
            Ok(found) => found,
            Err(_) => return drop_refused(l2_table),
        };
        let state = &mut *held;
        let Ok(e) = live_entry(F, l2_table, "already released (its last reference was dropped)") else {
            return;
        };
        // SAFETY: here and in every block on `e` below: live by the
        // caller's reference (the library's records say it is live; a
        // cached one is refused first), serialized by the caller's lock.
        // The caller's reference goes to the cache or is dropped last.
        if unsafe { e.is_cached() } {
            misuse(
                F,
                format_args!("entry {}: already cached (committed twice?)", P(l2_table)),
            );
            return;
        }
        // SAFETY: see above.
        let offset = unsafe { e.offset() };
        if offset == 0 {
            misuse(
                F,
                format_args!(
                    "entry {}: offset is 0 (set the table's offset before committing)",
                    P(l2_table)
                ),
            );
            return drop_refused(l2_table);
        }
        let mut table_bytes = state.counts_table_bytes().then_some(&mut state.table_bytes);
        let outcome = state.core.commit(offset, e, pinned, |victim| {
            // SAFETY: the core just took `victim` off this cache.
            unsafe { evict(l2_cache, victim, table_bytes.as_deref_mut()) }
        });
        match outcome {
            Commit::Duplicate(cached) => {
                // QEMU's original looks the offset up (find, then unref),
                // so its probes fire; then ours, with the newcomer.
                // SAFETY: `cached` is on the list, live by the cache's
                // reference.
                let refs = unsafe { cached.refs() };
                if state.idle_on() {
                    // SAFETY: as above; the cache's lock is held.
                    unsafe { cached.touch(idle::epoch()) };
                }
                qemu::qed_find_l2_cache_entry(l2_cache.cast(), cached.as_c().cast(), offset, refs);
                qemu::qed_unref_l2_cache_entry(cached.as_c().cast(), refs);
                qed_l2_cache::duplicate(l2_cache.cast(), e.as_c().cast(), offset);
                if tracing() {
                    let c = P(cached.as_c());
                    trace(
                        "qed_find_l2_cache_entry",
                        format_args!("l2_cache {} entry {c} offset {offset} ref {refs}", P(l2_cache)),
                    );
                    trace("qed_unref_l2_cache_entry", format_args!("entry {c} ref {refs}"));
                }
                // SAFETY: see above; `e` is on no list.
                unsafe { drop_ref_traced(e) };
            }
            Commit::Inserted => {
                // SAFETY: see above; `e` is on no list, the cache is valid.
                unsafe {
                    e.set_cached(true);
                    qtailq_insert_tail(l2_cache, e.as_c());
                    if state.counts_table_bytes() {
                        state.add_table_bytes(e.table_bytes());
                    }
                    if state.idle_on() {
                        // The cache's lock is held (idle release is on).
                        e.touch(idle::epoch());
                    }
                }
                qed_l2_cache::commit(l2_cache.cast(), e.as_c().cast(), offset);
            }
        }
        // SAFETY: valid and writable per the contract.
        unsafe { sync_count(l2_cache, state) };
        state.publish_all();
    })
}

/// Set the maximum number of cached tables (extension).
///
/// Parameters: `l2_cache`, an initialised cache; `max`, at least 1.
///
/// Entries only the cache references are evicted down to `max` at once;
/// entries that requests hold stay until a later commit can evict them.
///
/// # Safety
/// As for `qed_commit_l2_cache_entry`.
#[no_mangle]
pub unsafe extern "C" fn qed_l2_cache_set_max_entries(l2_cache: *mut L2TableCache, max: c_uint) {
    const F: &str = "qed_l2_cache_set_max_entries";
    boundary(F, || {
        // SAFETY: per this function's contract.
        let Ok((_, mut held)) = (unsafe { state_of(F, l2_cache) }) else {
            return;
        };
        let state = &mut *held;
        if max == 0 {
            misuse(
                F,
                format_args!("l2_cache {}: max must be at least 1", P(l2_cache)),
            );
            return;
        }
        // A size set by hand makes an auto cache a fixed one.
        // SAFETY: per this function's contract.
        unsafe { set_auto(l2_cache, state, false) };
        // SAFETY: per this function's contract.
        unsafe { resize(l2_cache, state, max) };
    })
}

/// Sets the maximum of an initialised cache and evicts down to it (never
/// an entry a request holds), mirroring the evictions on the C list.
///
/// # Safety
/// `l2_cache` must be the initialised cache of `state`, valid and writable,
/// used by no other thread during the call.
unsafe fn resize(l2_cache: *mut L2TableCache, state: &mut CacheState, max: c_uint) {
    let mut table_bytes = state.counts_table_bytes().then_some(&mut state.table_bytes);
    state.core.set_max_entries(max, pinned, |victim| {
        // SAFETY: the core just took `victim` off this cache.
        unsafe { evict(l2_cache, victim, table_bytes.as_deref_mut()) }
    });
    // SAFETY: per the caller's guarantee.
    unsafe { sync_count(l2_cache, state) };
    state.publish_all();
}

/// An auto cache's sizer says it is time to choose its size: chooses it
/// from the curve and applies it (docs/sizing.md).
///
/// # Safety
/// As for [`resize`].
#[cold]
#[inline(never)]
unsafe fn choose_size(l2_cache: *mut L2TableCache, state: &mut CacheState) {
    let per_table = state.bytes_per_table();
    let budget = shares::budget();
    // Any one cache may use the whole budget; without one, 32 MiB.
    let cap = auto::tables_within(budget.unwrap_or(auto::CAP_BYTES), per_table);
    let max = state.core.max_entries();
    let sizer = state
        .core
        .observer_mut()
        .as_mut()
        .and_then(|w| w.1.as_deref_mut());
    let (Some(sizer), Some(share)) = (sizer, state.share.as_ref()) else {
        return;
    };
    let new = if sizer.due() {
        sizer.set_depth(cap);
        let (wanted, misses) = sizer.decide(cap, max);
        // What it wants alone, with hysteresis; then what the budget gives.
        let alone = auto::next_maximum(max, wanted).unwrap_or(max).min(cap);
        shares::decide(
            share,
            Decision {
                misses: &misses,
                finds: sizer.finds(),
                per_table,
                alone,
                until_next: sizer.until_next_decision(),
            },
        )
    } else {
        // The grant was lowered: give back.
        shares::give_back(share)
    };
    if new != max {
        // SAFETY: per the caller's guarantee.
        unsafe { resize(l2_cache, state, new.max(1)) };
    }
}

/// What a hit does beyond the fixed cache's: stamps the entry (idle
/// release), and chooses the size or gives back (auto), after take_ref: the
/// entry found is held, so never evicted.
///
/// # Safety
/// As for [`resize`]; `e` is cached in it, and held by the caller.
unsafe fn after_hit(l2_cache: *mut L2TableCache, state: &mut CacheState, e: EntryPtr) {
    if state.idle_on() {
        // SAFETY: per the caller's guarantee; the cache's lock is held
        // (idle release is on).
        unsafe { e.touch(idle::epoch()) };
    }
    if size_due(state) {
        // SAFETY: per the caller's guarantee.
        unsafe { choose_size(l2_cache, state) };
    }
}

/// True when `state` is an auto cache that must choose its size (its
/// sizer says it is time) or give back (its grant was lowered).
#[inline(always)]
fn size_due(state: &CacheState) -> bool {
    match state.sizer() {
        None => false,
        Some(sizer) => {
            sizer.due()
                || state
                    .share
                    .as_ref()
                    .is_some_and(|s| s.lowered(state.core.max_entries()))
        }
    }
}

/// The auto part of the report at free (`QED_L2_CACHE_REPORT=1`).
#[cold]
fn auto_report(state: &CacheState) {
    let peak_kib = state.peak_table_bytes.div_ceil(1024);
    let budget = shares::budget().map_or_else(
        || "none (32 MiB of tables at most)".to_string(),
        |b| format!("{} KiB for all auto caches", b / 1024),
    );
    crate::stderr::write_line(format_args!(
        "qed-l2-cache: cache {}: auto: chose {} tables last, held {} at most; peak table memory \
         {peak_kib} KiB; budget {budget}",
        state.serial,
        state.core.max_entries(),
        state.core.stats().peak_entries,
    ));
}

/// Set the eviction policy (extension).
///
/// Parameters: `l2_cache`, an initialised cache; `policy`, one of
/// `QED_L2_CACHE_POLICY_FIFO`, `_LRU`, `_SIEVE`.
///
/// The cached entries and their order are kept.
///
/// # Safety
/// As for `qed_commit_l2_cache_entry`.
#[no_mangle]
pub unsafe extern "C" fn qed_l2_cache_set_policy(l2_cache: *mut L2TableCache, policy: QedL2CachePolicy) {
    const F: &str = "qed_l2_cache_set_policy";
    boundary(F, || {
        // SAFETY: per this function's contract.
        let Ok((_, mut state)) = (unsafe { state_of(F, l2_cache) }) else {
            return;
        };
        match Policy::from_number(policy) {
            Some(p) => {
                state.core.set_policy(p);
                state.publish_all();
            }
            None => {
                misuse(
                    F,
                    format_args!("l2_cache {}: unknown policy {policy}", P(l2_cache)),
                );
            }
        }
    })
}

/// Read a cache's counters (extension).
///
/// Parameters: `l2_cache`, an initialised cache; `stats`, filled on return.
///
/// # Safety
/// `l2_cache` as for `qed_commit_l2_cache_entry`; `stats` must be NULL
/// (a misuse) or point to a writable `QedL2CacheStats`.
#[no_mangle]
pub unsafe extern "C" fn qed_l2_cache_get_stats(l2_cache: *const L2TableCache, stats: *mut QedL2CacheStats) {
    const F: &str = "qed_l2_cache_get_stats";
    boundary(F, || {
        // SAFETY: per this function's contract.
        let Ok((_, state)) = (unsafe { state_of(F, l2_cache) }) else {
            return;
        };
        if stats.is_null() {
            misuse(F, format_args!("l2_cache {}: stats is NULL", P(l2_cache)));
            return;
        }
        // SAFETY: non-null and writable per the contract.
        unsafe { stats.write_unaligned(state.core.stats().into()) };
    })
}

/// The library version, "MAJOR.MINOR.PATCH" (from Cargo.toml).
///
/// Returns: a static NUL-terminated string; do not free it.
#[no_mangle]
pub extern "C" fn qed_l2_cache_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// How many finds since the advisor started would have missed had the
/// maximum been `max_entries` (extension; docs/advisor.md).
///
/// Parameters: `l2_cache`, an initialised cache; `max_entries`, a size the
/// advisor tracks; `misses`, filled on success.
///
/// The same requests (find; on a miss alloc, commit, find again; unref),
/// the same policy, pinning by requests in flight not simulated. Returns 0
/// on success; -1 when the advisor is off or does not track that size. It
/// tracks the current maximum's half (at least 1), 1.5x, 2x, 4x and 8x
/// (capped at 1,048,576); set_max_entries and set_policy restart
/// it. At the cache's own maximum it returns exactly the misses the cache
/// had. The advisor is off unless `QED_L2_CACHE_REPORT=1` or
/// `qed_l2_cache_set_advisor` turned it on.
///
/// An auto cache (`qed_l2_cache_set_auto`) answers instead from the curve
/// it sizes itself by: every size from 1 to its cap, over the last 16,384
/// to 32,768 of its finds (docs/sizing.md), estimated for LRU.
///
/// # Safety
/// `l2_cache` as for `qed_commit_l2_cache_entry`; `misses` must be NULL
/// (a misuse) or point to a writable `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn qed_l2_cache_predict_misses(
    l2_cache: *const L2TableCache,
    max_entries: c_uint,
    misses: *mut u64,
) -> std::ffi::c_int {
    const F: &str = "qed_l2_cache_predict_misses";
    boundary(F, || {
        // SAFETY: per this function's contract.
        let Ok((_, state)) = (unsafe { state_of(F, l2_cache) }) else {
            return -1;
        };
        if misses.is_null() {
            misuse(F, format_args!("l2_cache {}: misses is NULL", P(l2_cache)));
            return -1;
        }
        // An auto cache answers from its curve, every size up to its cap.
        let auto_curve = state.sizer().map(|s| s.curve());
        let predicted = match auto_curve {
            Some(c) => (1..=c.depth())
                .contains(&max_entries)
                .then(|| c.misses_at(max_entries)),
            None => advisor::predict_misses(&state.core, max_entries),
        };
        match predicted {
            Some(m) => {
                // SAFETY: non-null and writable per the contract.
                unsafe { misses.write_unaligned(m) };
                0
            }
            None => -1,
        }
    })
}

/// Turn the size advisor on (non-zero `on`) or off for one cache
/// (extension; docs/advisor.md).
///
/// Parameters: `l2_cache`, an initialised cache; `on`.
///
/// Turning it on when it is off starts it afresh (predictions count from
/// now); turning it on when it is on changes nothing. Off drops its state.
///
/// # Safety
/// As for `qed_commit_l2_cache_entry`.
#[no_mangle]
pub unsafe extern "C" fn qed_l2_cache_set_advisor(l2_cache: *mut L2TableCache, on: std::ffi::c_int) {
    const F: &str = "qed_l2_cache_set_advisor";
    boundary(F, || {
        // SAFETY: per this function's contract.
        let Ok((_, mut state)) = (unsafe { state_of(F, l2_cache) }) else {
            return;
        };
        advisor::set_advisor(&mut state.core, on != 0);
        state.tidy_watchers();
        state.publish_all();
    })
}

/// Make one cache size itself (non-zero `on`), or fix it at its current
/// size (`on` 0) (extension; docs/sizing.md).
///
/// Parameters: `l2_cache`, an initialised cache; `on`.
///
/// An auto cache chooses its maximum from the reuse of its own lookups:
/// the smallest size within one point of hit ratio of the best it could
/// reach under its cap (32 MiB of tables). It keeps its current maximum
/// until it has seen enough lookups to choose. Turning auto on for an auto
/// cache changes nothing; `qed_l2_cache_set_max_entries` makes it a fixed
/// cache again.
///
/// # Safety
/// As for `qed_commit_l2_cache_entry`.
#[no_mangle]
pub unsafe extern "C" fn qed_l2_cache_set_auto(l2_cache: *mut L2TableCache, on: std::ffi::c_int) {
    const F: &str = "qed_l2_cache_set_auto";
    boundary(F, || {
        // SAFETY: per this function's contract.
        let Ok((_, mut state)) = (unsafe { state_of(F, l2_cache) }) else {
            return;
        };
        // SAFETY: per this function's contract.
        unsafe { set_auto(l2_cache, &mut state, on != 0) };
        state.publish_all();
    })
}

/// Turns auto sizing of `state` on (a new sizer, a place in the process
/// budget) or off. Turning it on keeps the maximum unless the budget's
/// free bytes hold less.
///
/// # Safety
/// As for [`resize`].
unsafe fn set_auto(l2_cache: *mut L2TableCache, state: &mut CacheState, on: bool) {
    let per_table = state.bytes_per_table();
    let cap = auto::tables_within(shares::budget().unwrap_or(auto::CAP_BYTES), per_table);
    let was_counting = state.counts_table_bytes();
    let max = state.core.max_entries();
    let mut start = max;
    if state.set_sizer(on.then_some(cap)) {
        if on {
            let (share, size) = shares::join(per_table, max);
            state.share = Some(share);
            start = size;
        } else if let Some(share) = state.share.take() {
            shares::leave(share);
        }
    }
    if !was_counting && state.counts_table_bytes() {
        // Bytes were not kept until now: count what is cached.
        let bytes = state.cached_table_bytes();
        state.table_bytes = 0;
        state.add_table_bytes(bytes);
    }
    if start != max {
        // SAFETY: per the caller's guarantee.
        unsafe { resize(l2_cache, state, start) };
    }
}

/// Set the memory budget of every auto cache of the process together
/// (extension; docs/sizing.md): `bytes` of tables (and the library's
/// bookkeeping per table) at most, or no limit for 0.
///
/// The auto caches share it by equal marginal gain at their next
/// decisions; a cache whose share is lowered gives back at its next call.
/// Each keeps at least one table. Fixed caches are outside the budget.
/// Overrides `QED_L2_CACHE_MEMORY`.
#[no_mangle]
pub extern "C" fn qed_l2_cache_set_memory_budget(bytes: u64) {
    boundary("qed_l2_cache_set_memory_budget", || {
        lifecycle::setup();
        shares::set_budget((bytes > 0).then_some(bytes));
    })
}

/// The memory budget of the process's auto caches (extension): the bytes
/// set by `qed_l2_cache_set_memory_budget` or `QED_L2_CACHE_MEMORY`, or 0
/// for no limit.
#[no_mangle]
pub extern "C" fn qed_l2_cache_get_memory_budget() -> u64 {
    boundary("qed_l2_cache_get_memory_budget", || {
        lifecycle::setup();
        shares::budget().unwrap_or(0)
    })
}

/// The maximum number of tables a cache keeps now (extension): the one
/// set, or the one an auto cache chose last.
///
/// Parameters: `l2_cache`, an initialised cache.
///
/// Returns: the maximum; 0 when `l2_cache` is not an initialised cache
/// (a misuse).
///
/// # Safety
/// As for `qed_commit_l2_cache_entry`.
#[no_mangle]
pub unsafe extern "C" fn qed_l2_cache_get_target(l2_cache: *const L2TableCache) -> c_uint {
    const F: &str = "qed_l2_cache_get_target";
    boundary(F, || {
        // SAFETY: per this function's contract.
        let Ok((_, state)) = (unsafe { state_of(F, l2_cache) }) else {
            return 0;
        };
        state.core.max_entries()
    })
}

/// How many cached tables idle release has released (extension;
/// docs/idle.md).
///
/// Parameters: `l2_cache`, an initialised cache.
///
/// Returns: the tables released since `qed_init_l2_cache` because no
/// request held them and no find or commit touched them for
/// `QED_L2_CACHE_IDLE` seconds; 0 when idle release is off (the default
/// for a fixed-size cache). Counted apart from evictions: the `evictions`
/// counter of `qed_l2_cache_get_stats` never includes them.
///
/// # Safety
/// As for `qed_commit_l2_cache_entry`.
#[no_mangle]
pub unsafe extern "C" fn qed_l2_cache_get_idle_releases(l2_cache: *const L2TableCache) -> u64 {
    const F: &str = "qed_l2_cache_get_idle_releases";
    boundary(F, || {
        // SAFETY: per this function's contract.
        let Ok((_, state)) = (unsafe { state_of(F, l2_cache) }) else {
            return 0;
        };
        state.idle_releases
    })
}

/// The memory of the tables cached now, in bytes (extension;
/// docs/idle.md).
///
/// Parameters: `l2_cache`, an initialised cache.
///
/// Returns: the sum of `malloc_usable_size(table)` over the cached
/// entries (a NULL table counts 0): what the allocator holds for them,
/// a little more than the tables' own size (a 256 KiB table from
/// `posix_memalign(4096, ...)` counts 256 KiB plus a few bytes). Tables
/// idle release freed no longer count. O(1) for a cache that keeps the
/// sum (auto, idle release on, or `QED_L2_CACHE_STATS=1`), else
/// O(n_entries).
///
/// # Safety
/// As for `qed_commit_l2_cache_entry`; the cached entries' `table`
/// pointers must be what the caller set (NULL or memory `free()`
/// releases).
#[no_mangle]
pub unsafe extern "C" fn qed_l2_cache_get_table_bytes(l2_cache: *const L2TableCache) -> u64 {
    const F: &str = "qed_l2_cache_get_table_bytes";
    boundary(F, || {
        // SAFETY: per this function's contract.
        let Ok((_, state)) = (unsafe { state_of(F, l2_cache) }) else {
            return 0;
        };
        if state.counts_table_bytes() {
            return state.table_bytes;
        }
        state.cached_table_bytes()
    })
}
