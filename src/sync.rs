// SPDX-License-Identifier: LGPL-2.1-or-later
//! The library's few locks, and what keeps them safe across `fork()` and
//! `dlclose()`.
//!
//! No lock is taken on the paths a correct caller uses per request
//! (alloc, find, commit, unref on the thread that owns the entry): those
//! read and write only the calling thread's ledger and the cache's own
//! slot. Locks guard what is rare: creating and freeing caches, finding a
//! cache whose hint in the struct's padding was overwritten, ledgers being
//! created, entries released on a thread other than the one that
//! allocated them, and a ledger's table growing.
//!
//! Fork: a `fork()` from one thread while another holds one of these locks
//! would leave it held for ever in the child. [`setup`]
//! registers `pthread_atfork` handlers that take every lock, in the one
//! order the library ever nests them (registry, then ledger list, then each
//! ledger), before the fork and release them after it in both processes.
//! They are registered, and the thread key created, by a constructor when
//! the library is loaded, before any thread can call it (and through
//! `pthread_once`, which glibc restarts in a fork child, if no constructor
//! ran).
//! glibc ties handlers registered from a shared object to that object and
//! drops them when it is unloaded, so a fork after `dlclose` never jumps
//! into unmapped code.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, Ordering};

/// A minimal lock: an atomic flag, spinning briefly then yielding. Held
/// only for short, non-blocking sections; unlike `std::sync::Mutex` it can
/// be taken in a fork handler and released in another one.
pub struct RawLock(AtomicBool);

impl RawLock {
    /// An unlocked lock.
    pub const fn new() -> RawLock {
        RawLock(AtomicBool::new(false))
    }

    /// Takes the lock.
    pub fn lock(&self) {
        let mut spins = 0u32;
        while self
            .0
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
            }
        }
    }

    /// Releases the lock; only its holder may call this.
    pub fn unlock(&self) {
        self.0.store(false, Ordering::Release);
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

    /// Runs `f` with the lock held. `f` must not take a lock that comes
    /// earlier in the order above.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        self.lock.lock();
        struct Unlock<'a>(&'a RawLock);
        impl Drop for Unlock<'_> {
            fn drop(&mut self) {
                self.0.unlock();
            }
        }
        let _unlock = Unlock(&self.lock);
        // SAFETY: the lock is held until `_unlock` drops, after `f`.
        f(unsafe { &mut *self.data.get() })
    }

    /// The lock itself, for the fork handlers.
    #[cfg_attr(miri, allow(dead_code))]
    pub fn raw(&self) -> &RawLock {
        &self.lock
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
    // SAFETY: the three handlers are plain functions of this library.
    unsafe {
        libc::pthread_atfork(Some(before_fork), Some(after_fork_parent), Some(after_fork_child))
    };
    crate::ledger::create_thread_key();
}

extern "C" fn at_load() {
    setup();
}

#[used]
#[link_section = ".init_array"]
static AT_LOAD: extern "C" fn() = at_load;

extern "C" fn before_fork() {
    crate::registry::lock_all();
    crate::ledger::lock_all();
}

#[cfg_attr(miri, allow(dead_code))]
extern "C" fn after_fork_parent() {
    crate::ledger::unlock_all();
    crate::registry::unlock_all();
}

#[cfg_attr(miri, allow(dead_code))]
extern "C" fn after_fork_child() {
    // The other threads are gone: caches they were using may have been
    // mid-update, so the registry marks everything from before the fork.
    crate::registry::forked();
    crate::ledger::unlock_all();
    crate::registry::unlock_all();
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
