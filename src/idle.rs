// SPDX-License-Identifier: LGPL-2.1-or-later
//! Idle release (`QED_L2_CACHE_IDLE`, docs/idle.md): the library's one
//! thread, the idle epoch it keeps, its sweep of the idle caches, and how
//! a released table's memory goes back to the system.
//!
//! # The epoch, and the two promises
//!
//! With `S` seconds configured, the thread sleeps `T = S / 4`
//! ([`EPOCHS_PER_IDLE`]), measured from the end of its last sweep, then
//! advances [`EPOCH`] by one (it is the only writer; callers only read
//! it) and sweeps every idle cache under that cache's lock. A find or a
//! commit stamps its entry with the epoch it reads (under the same lock).
//! A sweep at epoch `k` releases an entry that only the cache holds and
//! whose stamp `s` has `k - s >= N`, `N = 5` ([`IDLE_EPOCHS`]).
//!
//! Write `t_j` for the moment epoch `j` is stored and `e_j` for the end of
//! sweep `j`; the thread sleeps at least `T` between the two, so
//! `t_(j+1) >= e_j + T`.
//!
//! - *Touched in the last `S` seconds is never released.* A touch that
//!   read `s` ran its call before sweep `s + 1` took this cache's lock
//!   (otherwise the lock would have shown it `s + 1` or later), so before
//!   `e_(s+1)`. The release happens in sweep `k >= s + N`, after `t_k >=
//!   e_(s+1) + (k - s - 1) T >= e_(s+1) + 4T = e_(s+1) + S`. So at least
//!   `S` seconds separate them. The lock is what bounds a stale read: a
//!   caller can see an old epoch only until the next sweep of its cache.
//!   (A cache created between an epoch's store and its sweep may read the
//!   epoch before for a moment; stores reach other cores within
//!   microseconds, and the margins here are `T`, at least 250 ms.)
//! - *Untouched for `S` seconds is released within `2S`.* A touch that
//!   read `s` happened after `t_s`. Sweep `s + N` releases the entry if no
//!   request holds it then; it ends `N` periods after `t_s`, each one `T`
//!   of sleep plus a sweep and the wake-up latency: `5T = 1.25 S` plus
//!   five sweeps and wake-ups, well inside `2S` on any machine that runs
//!   at all. A table a request held at that sweep goes at the first sweep
//!   after its last unref.
//!
//! Epochs count sweeps, not time: a process stopped (SIGSTOP, a debugger)
//! does not age its tables while it stands still. The epoch is a u32 and
//! compared with wrapping arithmetic (2^32 sweeps are 34 years at the
//! shortest period).
//!
//! # Giving memory back
//!
//! A table is `posix_memalign` memory that glibc serves from mmap (free
//! unmaps it) or from a heap (free only keeps it for reuse: RSS would not
//! fall), depending on its moving mmap threshold. Before `free` the thread
//! calls `madvise(MADV_DONTNEED)` on the table's page-aligned interior,
//! which gives those pages back at once in both cases. Chosen over
//! `malloc_trim(0)`: it touches only the released table (no walk of every
//! arena, no arena lock that the caller's threads wait on), it works with
//! any allocator that honours `free` (jemalloc, tcmalloc), and it costs
//! one system call per released table, at most a few per second. The
//! allocator may write its bookkeeping into the first bytes of a freed
//! block again: at most one page per table stays resident.
//!
//! # The thread
//!
//! At most one, created with `pthread_create` (no `std::thread`, no
//! thread-local destructors: glibc would never unload the library), with
//! every signal blocked, a 256 KiB stack, only while a cache has idle
//! release on: it exits at the sweep that finds none. It sleeps on a
//! futex word, [`STOP`], with a timeout, so stopping it is immediate. Its
//! state is guarded by a fork-safe [`Locked`]; the process token says
//! whose it is: in a fork child the parent's thread does not exist, so
//! the child's first call on an idle cache starts the child's own, and
//! the parent's is never joined there. `lifecycle::at_unload` stops and
//! joins it before `dlclose` unmaps the code (or at exit). The thread
//! never waits for a cache's lock (it tries, spins, yields, and gives up
//! when told to stop), so joining it never waits for a caller.

use crate::config;
use crate::entry::EntryPtr;
use crate::registry::{self, CacheState};
use crate::stderr::write_line;
use crate::sync::{page_size, process_token, Locked};
use std::ffi::c_void;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Sweeps per idle interval `S`: the thread's period is `S / 4`.
pub(crate) const EPOCHS_PER_IDLE: u64 = 4;

/// Epochs without a find or commit after which a table is idle (see the
/// module doc: `S / T + 1`).
pub(crate) const IDLE_EPOCHS: u32 = EPOCHS_PER_IDLE as u32 + 1;

/// The thread's stack: the sweep needs little (a vector of handles).
const STACK_BYTES: usize = 256 * 1024;

/// The idle epoch: written only by the thread, once per sweep.
static EPOCH: AtomicU32 = AtomicU32::new(0);

/// The futex word the thread sleeps on: non-zero tells it to stop.
static STOP: AtomicU32 = AtomicU32::new(0);

/// The token of the process whose thread question is settled (its thread
/// runs, or could not start, or the library is unloading), 0 when none:
/// every call on an idle cache compares it with its own token, the only
/// cost on the hit path besides the lock and the stamp.
static SETTLED: AtomicU64 = AtomicU64::new(0);

/// The thread's bookkeeping.
struct Ctl {
    /// The process that started `thread` (a fork child's differs).
    token: u64,
    /// The thread, until it is joined (it may have exited by itself).
    thread: Option<libc::pthread_t>,
    /// True from its start until it decides to exit or is stopped.
    running: bool,
    /// `pthread_create` failed in process `token`: reported, not retried.
    failed: bool,
    /// The library is being unloaded: no thread starts any more.
    closed: bool,
}

// SAFETY: a pthread_t is a plain handle, usable from any thread.
unsafe impl Send for Ctl {}

static CTL: Locked<Ctl> = Locked::new(Ctl {
    token: 0,
    thread: None,
    running: false,
    failed: false,
    closed: false,
});

/// The epoch a find or commit stamps its entry with.
#[inline(always)]
pub fn epoch() -> u32 {
    EPOCH.load(Ordering::Relaxed)
}

/// The idle epochs of a cache whose idle interval is `seconds` (0: off).
pub fn epochs_for(seconds: u64) -> u32 {
    if seconds == 0 {
        0
    } else {
        IDLE_EPOCHS
    }
}

/// The thread's period in nanoseconds: `S / 4` of the process's interval
/// (`QED_L2_CACHE_IDLE` when set, else the auto mode default: a fixed
/// cache has idle release only when it is set, so every idle cache of a
/// process has the same `S`).
fn period_ns() -> u64 {
    let seconds = config::get().idle_seconds(true).max(1);
    // At most u64::MAX / 1e9 seconds (config refuses more): no overflow.
    seconds * 1_000_000_000 / EPOCHS_PER_IDLE
}

/// For every call on a cache with idle release on: makes sure this
/// process's thread runs (started here at a fork child's first call).
#[inline(always)]
pub fn ensure_thread() {
    if SETTLED.load(Ordering::Relaxed) != process_token() {
        start_thread();
    }
}

#[cold]
#[inline(never)]
fn start_thread() {
    let me = process_token();
    CTL.with(|c, _| {
        if c.closed || (c.token == me && (c.running || c.failed)) {
            SETTLED.store(me, Ordering::Release);
            return;
        }
        if c.token == me {
            if let Some(old) = c.thread.take() {
                // It decided to exit (not running): it is past its last
                // use of CTL, so this join is short.
                // SAFETY: a thread of this process, not yet joined.
                unsafe { libc::pthread_join(old, null_mut()) };
            }
        } else {
            // A fork child: the parent's thread does not exist here and is
            // never joined; its handle is forgotten.
            c.thread = None;
            c.failed = false;
        }
        c.token = me;
        STOP.store(0, Ordering::Release);
        match spawn() {
            Ok(t) => {
                c.thread = Some(t);
                c.running = true;
            }
            Err(rc) => {
                c.failed = true;
                write_line(format_args!(
                    "qed-l2-cache: cannot start the idle release thread ({}); tables are not released when idle",
                    std::io::Error::from_raw_os_error(rc)
                ));
            }
        }
        SETTLED.store(me, Ordering::Release);
    });
}

/// `pthread_create` with every signal blocked in the new thread (it
/// inherits the mask, which is put back here at once).
fn spawn() -> Result<libc::pthread_t, i32> {
    // SAFETY: plain libc calls on local, initialised values; the thread
    // function is this library's and takes no argument.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        libc::pthread_attr_init(&mut attr);
        libc::pthread_attr_setstacksize(&mut attr, STACK_BYTES.max(libc::PTHREAD_STACK_MIN));
        let mut t: libc::pthread_t = std::mem::zeroed();
        let rc = libc::pthread_create(&mut t, &attr, idle_main, null_mut());
        libc::pthread_attr_destroy(&mut attr);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, null_mut());
        if rc == 0 {
            Ok(t)
        } else {
            Err(rc)
        }
    }
}

/// At unload or exit (`lifecycle::at_unload`): stops this process's
/// thread and joins it; none starts afterwards. In a fork child whose
/// thread never started nothing is joined (the parent's is not there).
pub fn stop_at_unload() {
    let me = process_token();
    let thread = CTL.with(|c, _| {
        c.closed = true;
        SETTLED.store(me, Ordering::Release);
        if c.token != me {
            return None;
        }
        c.running = false;
        c.thread.take()
    });
    // Joined with CTL free: the thread takes it at the end of a sweep.
    if let Some(t) = thread {
        STOP.store(1, Ordering::Release);
        wake();
        // SAFETY: a thread of this process, not yet joined; it returns
        // promptly once STOP is set (it never waits for a caller).
        unsafe { libc::pthread_join(t, null_mut()) };
    }
}

fn stopping() -> bool {
    STOP.load(Ordering::Acquire) != 0
}

fn wake() {
    // SAFETY: FUTEX_WAKE on a live static word.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            STOP.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        )
    };
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes the local timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64
}

/// Sleeps `ns` (at least; spurious wake-ups sleep again), or until
/// stopped: returns true when stopped.
fn sleep_unless_stopped(ns: u64) -> bool {
    let deadline = now_ns().saturating_add(ns);
    loop {
        if stopping() {
            return true;
        }
        let now = now_ns();
        if now >= deadline {
            return false;
        }
        let left = deadline - now;
        let ts = libc::timespec {
            tv_sec: (left / 1_000_000_000).min(i64::MAX as u64) as libc::time_t,
            tv_nsec: (left % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: FUTEX_WAIT on a live static word with a relative
        // timeout; it returns at once if the word is no longer 0.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                STOP.as_ptr(),
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                0,
                &ts as *const libc::timespec,
            )
        };
    }
}

extern "C" fn idle_main(_: *mut c_void) -> *mut c_void {
    if std::panic::catch_unwind(run).is_err() {
        write_line(format_args!(
            "qed-l2-cache: idle release thread: internal error (Rust panic); aborting"
        ));
        std::process::abort();
    }
    null_mut()
}

fn run() {
    let period = period_ns();
    let mut tables = Vec::new();
    loop {
        if sleep_unless_stopped(period) {
            return;
        }
        let now = EPOCH.load(Ordering::Relaxed).wrapping_add(1);
        EPOCH.store(now, Ordering::Release);
        let finished = registry::for_each_idle_cache(&stopping, |state| sweep(state, now, &mut tables));
        for table in tables.drain(..) {
            // SAFETY: tables released by the sweep, which no one else
            // references any more (their entries hold NULL now).
            unsafe { give_back(table) };
        }
        if !finished || done() {
            return;
        }
    }
}

/// After a sweep: true when the thread must exit (stopped, or no cache
/// has idle release on: then it says so under CTL, where a new idle
/// cache's `ensure_thread` looks).
fn done() -> bool {
    CTL.with(|c, _| {
        if stopping() || !c.running {
            return true;
        }
        if registry::idle_caches() == 0 {
            c.running = false;
            SETTLED.store(0, Ordering::Release);
            return true;
        }
        false
    })
}

/// One cache's sweep at epoch `now` (its lock held): releases the table
/// of every entry only the cache holds and no find or commit touched for
/// the cache's idle epochs, collecting the tables in `out` (freed after
/// the lock is dropped).
pub fn sweep(state: &mut CacheState, now: u32, out: &mut Vec<*mut c_void>) {
    if !state.idle_on() {
        return;
    }
    let idle_epochs = state.idle_epochs;
    for e in state.core.handles() {
        // SAFETY: a cached entry, live by the cache's reference; the
        // cache's lock is held, so no call on it runs; a request that
        // holds the entry makes `only_the_cache_holds` false.
        unsafe {
            if e.is_idle_released() || !e.only_the_cache_holds() {
                continue;
            }
            if now.wrapping_sub(e.touched()) < idle_epochs {
                continue;
            }
            release(state, e, out);
        }
    }
}

/// # Safety
/// As in [`sweep`], for an idle entry `e` of `state`.
unsafe fn release(state: &mut CacheState, e: EntryPtr, out: &mut Vec<*mut c_void>) {
    // SAFETY: per the caller.
    let bytes = unsafe { e.table_bytes() };
    // Raised before the mark (see `EntryPtr::release_idle_table`).
    state.idle_pending += 1;
    // SAFETY: per the caller.
    let table = unsafe { e.release_idle_table() };
    state.idle_releases += 1;
    if state.counts_table_bytes() {
        state.table_bytes = state.table_bytes.saturating_sub(bytes);
    }
    if !table.is_null() {
        out.push(table);
    }
}

/// Gives a released table's pages back (see the module doc), then frees it.
///
/// # Safety
/// `table` is a block of the allocator that `free()` releases, and no
/// one uses it any more.
pub unsafe fn give_back(table: *mut c_void) {
    // SAFETY: per the caller.
    let usable = unsafe { libc::malloc_usable_size(table) };
    let page = page_size();
    let start = (table as usize).next_multiple_of(page);
    let end = (table as usize + usable) & !(page - 1);
    if end > start {
        // SAFETY: whole pages inside the block, which is ours to discard:
        // MADV_DONTNEED on private anonymous memory only drops contents.
        unsafe { libc::madvise(start as *mut c_void, end - start, libc::MADV_DONTNEED) };
    }
    // SAFETY: per the caller.
    unsafe { libc::free(table) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{Cache, Policy};
    use crate::registry::HeadWords;

    fn entry_with_table(offset: u64) -> EntryPtr {
        let e = EntryPtr::alloc();
        // SAFETY: a fresh entry no one else sees; the table is malloc'd
        // (freed with free(), as the API's tables are).
        unsafe {
            (*e.as_c()).table = libc::malloc(64 * 1024).cast();
            (*e.as_c()).offset = offset;
            e.set_cached(true);
        }
        e
    }

    #[test]
    // malloc_usable_size and madvise: not in Miri.
    #[cfg_attr(miri, ignore)]
    fn the_sweep_releases_idle_unheld_tables_only() {
        let mut state = CacheState::new(Cache::new(8, Policy::Fifo), HeadWords::default());
        state.idle_epochs = IDLE_EPOCHS;
        let entries: Vec<EntryPtr> = (1..=4).map(|i| entry_with_table(i * 0x10000)).collect();
        for (i, &e) in entries.iter().enumerate() {
            state.core.commit((i as u64 + 1) * 0x10000, e, |_| false, |_| {});
            // SAFETY: live, cached in `state`, used by this thread only.
            unsafe { e.touch(100) };
        }
        // SAFETY: as above.
        unsafe {
            entries[1].take_ref(entries[1].refs()).unwrap(); // held by a request
            entries[2].touch(100 + IDLE_EPOCHS - 1); // touched one epoch later
        }
        let mut out = vec![];
        sweep(&mut state, 100 + IDLE_EPOCHS - 1, &mut out);
        assert!(out.is_empty(), "nothing idle for the full interval yet");
        sweep(&mut state, 100 + IDLE_EPOCHS, &mut out);
        assert_eq!(out.len(), 2, "entries 0 and 3: idle, only the cache holds them");
        assert_eq!((state.idle_releases, state.idle_pending), (2, 2));
        // SAFETY: as above.
        unsafe {
            assert!(entries[0].is_idle_released() && entries[3].is_idle_released());
            assert!(!entries[1].is_idle_released() && !entries[2].is_idle_released());
            assert!((*entries[0].as_c()).table.is_null());
        }
        // The wrapping epoch: stamps near u32::MAX age across the wrap.
        // SAFETY: as above.
        unsafe { entries[2].touch(u32::MAX - 1) };
        sweep(&mut state, u32::MAX, &mut out);
        assert_eq!(out.len(), 2);
        sweep(&mut state, IDLE_EPOCHS - 2, &mut out);
        assert_eq!(out.len(), 3, "five epochs after u32::MAX - 1");
        // Held entries stay however old their stamp.
        sweep(&mut state, 1_000_000, &mut out);
        assert_eq!(out.len(), 3);
        for t in out {
            // SAFETY: released tables, used by no one.
            unsafe { give_back(t) };
        }
        // What a call does next (ffi's reap): out of the core, then the
        // cache's reference dropped.
        let removed = state.core.remove_if(
            // SAFETY: cached entries, live.
            |e| unsafe { e.is_idle_released() },
            |e| {
                // SAFETY: just taken out; the cache's reference.
                unsafe {
                    e.set_cached(false);
                    assert_eq!(e.drop_ref(), Some(0));
                }
            },
        );
        assert_eq!(removed, 3);
        assert_eq!(state.core.stats().evictions, 0);
        // SAFETY: the held entry: the request's reference, then the cache's.
        unsafe {
            let held = entries[1];
            assert_eq!(held.drop_ref(), Some(1));
            held.set_cached(false);
            assert_eq!(held.drop_ref(), Some(0));
        }
    }

    #[test]
    fn epochs_and_period() {
        assert_eq!(epochs_for(0), 0);
        assert_eq!(epochs_for(1), IDLE_EPOCHS);
        // N - 1 periods of S / 4 are S: the lower bound of the module doc.
        assert_eq!(u64::from(IDLE_EPOCHS - 1), EPOCHS_PER_IDLE);
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn give_back_frees_large_and_small_blocks() {
        for size in [16usize, 4096, 256 * 1024, 1 << 20] {
            let mut p: *mut c_void = null_mut();
            // SAFETY: posix_memalign into a local; the block is then ours.
            unsafe {
                assert_eq!(libc::posix_memalign(&mut p, 4096, size), 0);
                std::ptr::write_bytes(p.cast::<u8>(), 0xa5, size);
                give_back(p);
            }
        }
    }
}
