// SPDX-License-Identifier: LGPL-2.1-or-later
//! The library's few locks, and what keeps them safe across `fork()` and
//! `dlclose()`.
//!
//! No lock is taken on the paths a correct caller uses per request
//! (alloc, find, commit, unref on the thread that owns the entry): those
//! read and write only the calling thread's ledger and the cache's own
//! slot. Locks guard what is rare: creating and freeing caches, finding a
//! cache whose hint in the struct's padding was overwritten, entries
//! released on a thread other than the one that allocated them, and a
//! ledger's table growing.
//!
//! Fork: no lock is held across a `fork()`. A fork handler that took the
//! library's locks would wait for the threads holding them, and such a
//! thread may itself wait for a lock of the program's that the program's
//! own fork handler holds (glibc runs the handlers of a program that
//! registered them before it loaded the library after the library's):
//! a deadlock the C file, which takes no lock, cannot have. Instead, a
//! lock records its holder's process id, and a fork child takes over a
//! lock held in another process (by a thread it does not have)
//! ([`LockGuard::stolen`]), while it waits for one held by a thread of its
//! own, as usual. What a lock
//! guards may then be half-updated: `registry` rebuilds its map from the
//! slots; a ledger's tables are whole at every moment (a rebuild
//! publishes the new table with one store).
//!
//! The handler and the thread key are set up by a constructor when the
//! library is loaded, before any thread can call it (and through
//! `pthread_once`, which glibc restarts in a fork child, if no constructor
//! ran). glibc ties handlers registered from a shared object to that
//! object and drops them when it is unloaded, so a fork after `dlclose`
//! never jumps into unmapped code.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicI32, Ordering};

/// A minimal lock, spinning briefly then yielding, held only for short,
/// non-blocking sections. The lock word is the holder's process id (0:
/// free), so that a fork child tells a lock held by a thread of its parent
/// (which it does not have) from one held by a thread of its own: the
/// first is taken over ([`LockGuard::stolen`]), the second waited for.
pub struct RawLock(AtomicI32);

fn getpid() -> i32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

/// Proof that a lock is held; releases it when dropped.
#[must_use]
pub struct LockGuard<'a> {
    lock: &'a RawLock,
    /// The lock was taken over from a thread of another process (this is
    /// a fork child): what it guards may be half-updated.
    pub stolen: bool,
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        self.lock.0.store(0, Ordering::Release);
    }
}

impl RawLock {
    /// An unlocked lock.
    pub const fn new() -> RawLock {
        RawLock(AtomicI32::new(0))
    }

    /// Takes the lock until the guard drops.
    pub fn lock(&self) -> LockGuard<'_> {
        let me = getpid();
        let mut spins = 0u32;
        loop {
            match self
                .0
                .compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => {
                    return LockGuard {
                        lock: self,
                        stolen: false,
                    }
                }
                Err(holder) if holder != 0 && holder != me => {
                    // Held in the parent by a thread this fork child does
                    // not have: nobody will release it.
                    if self
                        .0
                        .compare_exchange(holder, me, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                    {
                        return LockGuard {
                            lock: self,
                            stolen: true,
                        };
                    }
                }
                Err(_) => {}
            }
            spins = spins.wrapping_add(1);
            if spins % 64 != 0 {
                std::hint::spin_loop();
            } else {
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
            }
        }
    }
}

/// Data guarded by a [`RawLock`].
pub struct Locked<T> {
    lock: RawLock,
    data: UnsafeCell<T>,
}

// SAFETY: the data is only reached through `with`, which holds the lock.
unsafe impl<T: Send> Sync for Locked<T> {}

impl<T> Locked<T> {
    /// Wraps `data`.
    pub const fn new(data: T) -> Locked<T> {
        Locked {
            lock: RawLock::new(),
            data: UnsafeCell::new(data),
        }
    }

    /// Runs `f` with the lock held; `f` learns whether the lock was taken
    /// over from a thread a fork child does not have (then the data may be
    /// half-updated). `f` must not take this lock again.
    pub fn with<R>(&self, f: impl FnOnce(&mut T, bool) -> R) -> R {
        let held = self.lock.lock();
        // SAFETY: the lock is held until `held` drops, after `f`.
        f(unsafe { &mut *self.data.get() }, held.stolen)
    }
}

/// `pthread_once` state: glibc's restarts the initialisation in a fork
/// child if the fork interrupted it in another thread, so no state can be
/// left "in progress" for ever (a spin flag could).
#[cfg(not(miri))]
struct Once(UnsafeCell<libc::pthread_once_t>);
// SAFETY: only ever passed to pthread_once, which synchronises.
#[cfg(not(miri))]
unsafe impl Sync for Once {}
#[cfg(not(miri))]
static SETUP: Once = Once(UnsafeCell::new(libc::PTHREAD_ONCE_INIT));
#[cfg(miri)]
static SETUP: std::sync::Once = std::sync::Once::new();

/// Once per loaded copy of the library: the fork handlers and the thread
/// key. Run at load (below), before any thread can call the library, and
/// again (a no-op) by the first call in case no constructor ran.
pub fn setup() {
    #[cfg(not(miri))]
    // SAFETY: SETUP is a valid once-control for the whole process.
    unsafe {
        libc::pthread_once(SETUP.0.get(), setup_once);
    }
    #[cfg(miri)]
    SETUP.call_once(|| setup_once());
}

extern "C" fn setup_once() {
    // Miri cannot run fork handlers (nor fork); nothing to protect there.
    #[cfg(not(miri))]
    // SAFETY: the handler is a plain function of this library.
    unsafe {
        libc::pthread_atfork(None, None, Some(after_fork_child))
    };
    crate::ledger::create_thread_key();
}

extern "C" fn at_load() {
    setup();
}

#[used]
#[link_section = ".init_array"]
static AT_LOAD: extern "C" fn() = at_load;

#[cfg_attr(miri, allow(dead_code))]
extern "C" fn after_fork_child() {
    // The other threads are gone: caches they were using may have been
    // mid-update, so the registry marks everything from before the fork,
    // and rebuilds its map now if one of them was changing it. (Any other
    // lock they held is taken over at its first use.)
    crate::registry::forked();
}

/// Runs when the library is unloaded (`dlclose`) or the process exits:
/// gives back what the library still holds, when nothing can use it any
/// more (see [`crate::ledger::release_all_at_unload`]).
extern "C" fn at_unload() {
    // Always: no thread exit may call into the library once it is gone.
    crate::ledger::delete_thread_key();
    if crate::registry::is_empty() && crate::ledger::release_all_at_unload() {
        crate::registry::release_all_at_unload();
    }
}

#[used]
#[link_section = ".fini_array"]
static AT_UNLOAD: extern "C" fn() = at_unload;
