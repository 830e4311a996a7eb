// SPDX-License-Identifier: LGPL-2.1-or-later
//! The library's lock, and the process identity that keeps it safe across
//! `fork()`: a leaf module, calling nothing of the library's.
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
//! own fork handler holds: a deadlock the C file, which takes no lock,
//! cannot have. Instead a lock word records its holder's *process token*
//! ([`process_token`]), and a fork child, whose token is new, takes over
//! a lock held under another token (by a thread it does not have)
//! ([`LockGuard::stolen`]), while it waits for one held by a thread of its
//! own, as usual. What a lock guards may then be half-updated: its user
//! repairs it (the registry rebuilds its map; a ledger's tables are whole
//! at every moment).
//!
//! The token lives in a page mapped with `MADV_WIPEONFORK` (Linux 4.14):
//! the kernel zeroes it in every child, whether made by `fork`, `_Fork` or
//! a raw `clone` (which run no fork handler), and the child's first lock
//! draws a new token. Process ids would not do: a container's init is
//! pid 1, and so is its child in a new pid namespace. Where the kernel
//! refuses `MADV_WIPEONFORK` the token is kept in ordinary memory and
//! [`forget_token_in_child`] (a `pthread_atfork` child handler) clears it:
//! then a child made without fork handlers (`_Fork`, raw `clone`) keeps its
//! parent's token, and a lock held by its parent's threads at that moment
//! would never be taken over (docs/behaviour.md, "Fork").

use std::cell::UnsafeCell;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

/// The token of the process that last drew one, in ordinary memory: a
/// child inherits it, so the tokens along any line of descent increase and
/// a child's new token differs from every token its memory can hold.
static LAST_TOKEN: AtomicU64 = AtomicU64::new(0);

/// The calling process's token where `MADV_WIPEONFORK` is refused (or
/// under Miri): cleared by [`forget_token_in_child`].
static FALLBACK_TOKEN: AtomicU64 = AtomicU64::new(0);

/// The word holding this process's token: in the wipe-on-fork page once
/// it is mapped, else [`FALLBACK_TOKEN`]. Null until first use.
static TOKEN_WORD: AtomicPtr<AtomicU64> = AtomicPtr::new(null_mut());

/// The calling process's token: never 0, the same for all its threads,
/// and different from every token of its ancestors (see the module doc).
#[inline]
pub fn process_token() -> u64 {
    let word = token_word();
    match word.load(Ordering::Acquire) {
        0 => draw_token(word),
        t => t,
    }
}

/// Gives this process a token, unless another of its threads just did.
#[cold]
fn draw_token(word: &AtomicU64) -> u64 {
    let mine = LAST_TOKEN.fetch_add(1, Ordering::AcqRel) + 1;
    match word.compare_exchange(0, mine, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => mine,
        Err(theirs) => theirs,
    }
}

#[inline]
fn token_word() -> &'static AtomicU64 {
    let w = TOKEN_WORD.load(Ordering::Acquire);
    if w.is_null() {
        return map_token_word();
    }
    // SAFETY: a published word is the wipe-on-fork page (unmapped only at
    // unload, when nothing runs the library's code) or the static.
    unsafe { &*w }
}

/// The page size (4096 when sysconf cannot say).
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

/// Maps the wipe-on-fork page (or settles for the static) and publishes
/// it; a thread that loses the race unmaps its own page.
#[cold]
fn map_token_word() -> &'static AtomicU64 {
    let fallback = &FALLBACK_TOKEN as *const AtomicU64 as *mut AtomicU64;
    #[cfg(miri)]
    let mine = fallback;
    #[cfg(not(miri))]
    let mine = {
        let len = page_size();
        // SAFETY: a fresh anonymous private mapping, checked below.
        let p = unsafe {
            libc::mmap(
                null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            fallback
        // SAFETY: `p` is our mapping of `len` bytes.
        } else if unsafe { libc::madvise(p, len, libc::MADV_WIPEONFORK) } != 0 {
            // SAFETY: our mapping, unused.
            unsafe { libc::munmap(p, len) };
            fallback
        } else {
            p.cast::<AtomicU64>()
        }
    };
    match TOKEN_WORD.compare_exchange(null_mut(), mine, Ordering::AcqRel, Ordering::Acquire) {
        // SAFETY: just published; see `token_word`.
        Ok(_) => unsafe { &*mine },
        Err(winner) => {
            if mine != fallback {
                // SAFETY: our own page, never published.
                unsafe { libc::munmap(mine.cast(), page_size()) };
            }
            // SAFETY: see `token_word`.
            unsafe { &*winner }
        }
    }
}

/// True when the token lives in a wipe-on-fork page (false where the
/// kernel refused `MADV_WIPEONFORK`, and under Miri).
pub fn token_wipes_on_fork() -> bool {
    !std::ptr::eq(token_word(), &FALLBACK_TOKEN)
}

/// In a fork child, from a `pthread_atfork` handler: where the token is
/// not wiped by the kernel, forget the parent's.
pub fn forget_token_in_child() {
    FALLBACK_TOKEN.store(0, Ordering::Release);
}

/// At unload, when nothing can run the library's code any more: unmaps
/// the token's page (a `dlopen`/`dlclose` cycle must not leave one).
pub fn release_at_unload() {
    let w = TOKEN_WORD.swap(null_mut(), Ordering::AcqRel);
    if !w.is_null() && !std::ptr::eq(w, &FALLBACK_TOKEN) {
        // SAFETY: the page `map_token_word` mapped; no one uses it now.
        unsafe { libc::munmap(w.cast(), page_size()) };
    }
}

/// A minimal lock, spinning briefly then yielding, held only for short,
/// non-blocking sections. The lock word is its holder's process token (0:
/// free), so that a fork child tells a lock held by a thread of its parent
/// (which it does not have) from one held by a thread of its own: the
/// first is taken over ([`LockGuard::stolen`]), the second waited for.
pub struct RawLock(AtomicU64);

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
        RawLock(AtomicU64::new(0))
    }

    /// Takes the lock until the guard drops.
    #[inline]
    pub fn lock(&self) -> LockGuard<'_> {
        let mut spins = 0u32;
        loop {
            if let Some(held) = self.try_lock() {
                return held;
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

impl RawLock {
    /// Takes the lock if it is free, or held under another process's
    /// token (taken over, as [`RawLock::lock`] does); `None` when a thread
    /// of this process holds it. Never waits.
    #[inline]
    pub fn try_lock(&self) -> Option<LockGuard<'_>> {
        // Read afresh at every attempt: where the token is cleared by a
        // fork handler, a child's threads may start before it runs.
        let me = process_token();
        match self
            .0
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
        {
            Ok(_) => Some(LockGuard {
                lock: self,
                stolen: false,
            }),
            // Held in an ancestor by a thread this fork child does not
            // have: nobody will release it.
            Err(holder) if holder != 0 && holder != me => self
                .0
                .compare_exchange(holder, me, Ordering::Acquire, Ordering::Relaxed)
                .ok()
                .map(|_| LockGuard {
                    lock: self,
                    stolen: true,
                }),
            Err(_) => None,
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

#[cfg(test)]
impl<T> Locked<T> {
    /// Leaves the lock held under another process's token, as a fork child
    /// finds a lock its parent's thread held.
    pub fn pretend_held_elsewhere(&self) {
        std::mem::forget(self.lock.lock());
        self.lock.0.store(process_token() ^ (1 << 63), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_stable_and_not_zero() {
        let t = process_token();
        assert_ne!(t, 0);
        assert_eq!(process_token(), t);
        let other = std::thread::spawn(process_token).join().unwrap();
        assert_eq!(other, t, "one token for all threads of a process");
    }

    #[test]
    fn the_lock_excludes_and_is_free_again_after_the_guard() {
        static COUNTER: Locked<u64> = Locked::new(0);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    for _ in 0..if cfg!(miri) { 50 } else { 20_000 } {
                        COUNTER.with(|c, stolen| {
                            assert!(!stolen);
                            // Not atomic: a second thread inside would lose counts.
                            let v = *c;
                            std::hint::black_box(());
                            *c = v + 1;
                        });
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let n = if cfg!(miri) { 200 } else { 80_000 };
        assert_eq!(COUNTER.with(|c, _| *c), n);
    }

    #[test]
    fn try_lock_never_waits_and_takes_over_a_foreign_holder() {
        let l = RawLock::new();
        let held = l.try_lock().expect("free");
        assert!(!held.stolen);
        assert!(l.try_lock().is_none(), "held by this process");
        drop(held);
        std::mem::forget(l.lock());
        l.0.store(process_token() ^ (1 << 63), Ordering::Release);
        assert!(l.try_lock().is_some_and(|g| g.stolen));
        assert!(l.try_lock().is_some_and(|g| !g.stolen));
    }

    #[test]
    fn a_lock_held_under_another_token_is_taken_over_once() {
        let l: Locked<u32> = Locked::new(7);
        l.pretend_held_elsewhere();
        assert!(l.with(|_, stolen| stolen), "taken over");
        assert!(!l.with(|_, stolen| stolen), "then an ordinary lock");
    }

    #[cfg(not(miri))]
    #[test]
    fn a_fork_child_has_a_new_token_and_takes_over_held_locks() {
        static HELD: Locked<u32> = Locked::new(0);
        let parent = process_token();
        let held = HELD.lock.lock();
        // SAFETY: the child only runs atomics and the lock, then _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let ok = process_token() != parent
                && (!token_wipes_on_fork() || process_token() > parent)
                && HELD.with(|_, stolen| stolen);
            // SAFETY: leaves the child at once.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        drop(held);
        let mut status = 0;
        // SAFETY: waits for our child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "status {status:#x}"
        );
        assert_eq!(process_token(), parent, "the parent keeps its token");
    }

    #[cfg(not(miri))]
    #[test]
    fn the_token_page_wipes_on_fork_on_this_kernel() {
        // Linux 4.14 and later: the path the library relies on is the one
        // taken here (else the fallback is, and docs/behaviour.md says what
        // it cannot see).
        assert!(token_wipes_on_fork());
    }
}
