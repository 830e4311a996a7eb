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
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

/// A minimal lock: an atomic state, spinning briefly then yielding. Held
/// only for short, non-blocking sections; unlike `std::sync::Mutex` it can
/// be taken in a fork handler and released in another one.
///
/// The fork handlers take it in a state of its own ([`FORKING`]), and
/// release only locks in that state: a lock some thread took normally
/// meanwhile (one of a ledger created during the fork) stays with that
/// thread. And while a fork is under way, the forking thread itself (in a
/// fork handler the program registered before the library was loaded,
/// which glibc runs inside the library's lock window) passes through
/// every lock the fork holds: it holds them all, so its calls are alone
/// with the data, as with the C file, which takes no lock.
pub struct RawLock(AtomicU8);

const UNLOCKED: u8 = 0;
const LOCKED: u8 = 1;
/// Taken by the fork handlers.
const FORKING: u8 = 2;

/// The thread (`pthread_self`) that holds every lock for a fork under way,
/// 0 when none.
static FORK_HOLDER: AtomicUsize = AtomicUsize::new(0);

fn this_thread() -> usize {
    // SAFETY: pthread_self has no preconditions.
    unsafe { libc::pthread_self() as usize }
}

/// Proof that a lock is held; releases it when dropped (nothing to
/// release when the forking thread passed through a lock the fork holds).
#[must_use]
pub struct LockGuard<'a>(Option<&'a RawLock>);

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        if let Some(lock) = self.0 {
            lock.0.store(UNLOCKED, Ordering::Release);
        }
    }
}

impl RawLock {
    /// An unlocked lock.
    pub const fn new() -> RawLock {
        RawLock(AtomicU8::new(UNLOCKED))
    }

    fn acquire(&self, state: u8) -> bool {
        self.0
            .compare_exchange_weak(UNLOCKED, state, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    fn wait(spins: &mut u32) {
        *spins += 1;
        if *spins < 64 {
            std::hint::spin_loop();
        } else {
            // SAFETY: sched_yield has no preconditions.
            unsafe { libc::sched_yield() };
        }
    }

    /// Takes the lock until the guard drops.
    pub fn lock(&self) -> LockGuard<'_> {
        let mut spins = 0u32;
        loop {
            if self.acquire(LOCKED) {
                return LockGuard(Some(self));
            }
            if self.0.load(Ordering::Relaxed) == FORKING
                && FORK_HOLDER.load(Ordering::Acquire) == this_thread()
            {
                return LockGuard(None);
            }
            Self::wait(&mut spins);
        }
    }

    /// Takes the lock for a fork (prepare handler).
    pub fn lock_for_fork(&self) {
        let mut spins = 0u32;
        while !self.acquire(FORKING) {
            Self::wait(&mut spins);
        }
    }

    /// Releases the lock if a fork handler took it (parent and child
    /// handlers); a lock taken otherwise is left to its holder.
    pub fn unlock_after_fork(&self) {
        let _ = self
            .0
            .compare_exchange(FORKING, UNLOCKED, Ordering::Release, Ordering::Relaxed);
    }

    /// Releases the lock whoever holds it: in a fork child, where its
    /// holder may be a thread the child does not have.
    pub fn reset_in_fork_child(&self) {
        self.0.store(UNLOCKED, Ordering::Release);
    }

    /// True while held (for tests).
    #[cfg(test)]
    pub fn is_locked(&self) -> bool {
        self.0.load(Ordering::Relaxed) != UNLOCKED
    }
}

/// Prepare handler, once every lock is taken for the fork: the calling
/// thread passes through them until [`fork_done`].
#[cfg_attr(miri, allow(dead_code))]
fn fork_holding() {
    FORK_HOLDER.store(this_thread(), Ordering::Release);
}

/// Parent and child handlers, before the locks are released.
#[cfg_attr(miri, allow(dead_code))]
fn fork_done() {
    FORK_HOLDER.store(0, Ordering::Release);
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
        let _held = self.lock.lock();
        // SAFETY: the lock is held (or, in a fork handler, all of them by
        // this thread) until `_held` drops, after `f`.
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
    fork_holding();
}

#[cfg_attr(miri, allow(dead_code))]
extern "C" fn after_fork_parent() {
    fork_done();
    crate::ledger::unlock_all(false);
    crate::registry::unlock_all();
}

#[cfg_attr(miri, allow(dead_code))]
extern "C" fn after_fork_child() {
    // The other threads are gone: caches they were using may have been
    // mid-update, so the registry marks everything from before the fork.
    fork_done();
    crate::registry::forked();
    crate::ledger::unlock_all(true);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fork_handlers_release_only_what_they_took() {
        let l = RawLock::new();
        let held = l.lock();
        // A lock some thread holds normally (a ledger created during the
        // fork window): the parent handler must leave it to that thread.
        l.unlock_after_fork();
        assert!(l.is_locked());
        drop(held);
        assert!(!l.is_locked());
        l.lock_for_fork();
        l.unlock_after_fork();
        assert!(!l.is_locked());
    }

    #[test]
    fn the_forking_thread_passes_through_the_locks_of_its_fork() {
        let l = RawLock::new();
        l.lock_for_fork();
        fork_holding();
        {
            // Would spin for ever without the pass (a handler the program
            // registered before loading the library).
            let _through = l.lock();
        }
        fork_done();
        assert!(l.is_locked(), "passing through must not release the fork's lock");
        l.unlock_after_fork();
        let _normal = l.lock();
        assert!(l.is_locked());
    }
}
