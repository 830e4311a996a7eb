// SPDX-License-Identifier: LGPL-2.1-or-later
//! The process lifecycle, in one place: what runs when the library is
//! loaded, in a fork child, and when it is unloaded or the process exits.
//!
//! - Load: a constructor ([`setup`]) creates the ledgers' thread key and
//!   registers the fork handler, before any thread can call the library.
//!   `qed_init_l2_cache` runs it again (a no-op) in case no constructor
//!   ran; so does a thread's first ledger, for the key alone.
//! - Fork: nothing is locked around a `fork()` and no handler is needed:
//!   a child tells its parent's state apart by the process token (`sync`),
//!   which the kernel wipes in every child. Only where the kernel cannot
//!   is a handler registered, to clear it.
//! - Unload (`dlclose`) and exit: the destructor ([`at_unload`]) first
//!   stops and joins the idle release thread if this process runs one
//!   (`idle`; never a fork parent's, which the child does not have), then
//!   deletes the thread key (no thread exit may call into a library that is gone),
//!   removes the process's statistics file (`QED_L2_CACHE_STATS=1`: its
//!   own, never a fork parent's), then, when no cache is initialised and
//!   no other thread holds a ledger, gives back everything the library
//!   holds (the statistics file's mappings when no cache is left), so
//!   load/unload cycles leak nothing. glibc ties handlers registered from a shared
//!   object to it and drops them at `dlclose`, so a fork after unload
//!   never jumps into unmapped code.

use crate::{idle, ledger, publish, registry, sync};

/// `pthread_once` state: glibc's restarts the initialisation in a fork
/// child if the fork interrupted it in another thread, so no state can be
/// left "in progress" for ever (a spin flag could).
#[cfg(not(miri))]
struct Once(std::cell::UnsafeCell<libc::pthread_once_t>);
// SAFETY: only ever passed to pthread_once, which synchronises.
#[cfg(not(miri))]
unsafe impl Sync for Once {}
#[cfg(not(miri))]
static SETUP: Once = Once(std::cell::UnsafeCell::new(libc::PTHREAD_ONCE_INIT));
#[cfg(miri)]
static SETUP: std::sync::Once = std::sync::Once::new();

/// Once per loaded copy of the library: the thread key and the fork
/// handler. Cheap after the first call.
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
    // Miri cannot run fork handlers (nor fork). Where the kernel wipes the
    // token in every child, no handler is needed.
    #[cfg(not(miri))]
    if !sync::token_wipes_on_fork() {
        // SAFETY: the handler is a plain function of this library.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_child)) };
    }
    ledger::create_thread_key();
}

/// In a fork child (one made by `fork()`; `_Fork` and raw `clone` run no
/// handler, which the wipe-on-fork token does not need).
#[cfg_attr(miri, allow(dead_code))]
extern "C" fn after_fork_child() {
    sync::forget_token_in_child();
}

extern "C" fn at_load() {
    setup();
}

#[used]
#[link_section = ".init_array"]
static AT_LOAD: extern "C" fn() = at_load;

/// Runs when the library is unloaded (`dlclose`) or the process exits.
extern "C" fn at_unload() {
    // First and always: the idle thread runs the library's code, which is
    // about to be unmapped (dlclose), and reads what is released below.
    idle::stop_at_unload();
    // Always: no thread exit may call into the library once it is gone.
    ledger::delete_thread_key();
    // Always: the statistics file goes (its owner's only, never a fork
    // parent's); its mappings only when no cache is left.
    publish::at_unload(registry::is_empty);
    // Everything else only when nothing can use it any more: no cache,
    // and no ledger held by another thread (a process exiting while
    // threads still run keeps it all).
    if registry::is_empty() && ledger::release_all_at_unload() {
        registry::release_all_at_unload();
        crate::shares::release_at_unload();
        sync::release_at_unload();
    }
}

#[used]
#[link_section = ".fini_array"]
static AT_UNLOAD: extern "C" fn() = at_unload;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_is_idempotent_and_leaves_a_thread_key() {
        setup();
        setup();
        // A thread's first allocation claims a ledger under the key; its
        // exit must unclaim it (not crash) and the next thread reuse it.
        for _ in 0..3 {
            std::thread::spawn(|| {
                let e = crate::entry::EntryPtr::alloc();
                // SAFETY: live, its one reference, on no list.
                assert_eq!(unsafe { e.drop_ref() }, Some(0));
            })
            .join()
            .unwrap();
        }
    }

    #[cfg(not(miri))]
    #[test]
    fn the_fork_handler_clears_only_the_fallback_token() {
        // With the wipe-on-fork page the token is not in the fallback word,
        // so the handler changes nothing for this (not forked) process.
        // (Where the kernel lacks the page, calling it here would give the
        // process a new token under other tests' held locks: skipped.)
        if !sync::token_wipes_on_fork() {
            return;
        }
        let before = sync::process_token();
        after_fork_child();
        assert_eq!(sync::process_token(), before);
    }
}
