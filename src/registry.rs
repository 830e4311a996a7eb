// SPDX-License-Identifier: LGPL-2.1-or-later
//! Where each cache's hidden state lives.
//!
//! The caller's `L2TableCache` is 24 bytes and cannot grow, so the state
//! (the index, the policy, the counters) is a separate allocation found
//! through a number kept in the struct's 4 bytes of tail padding. Numbers
//! index a fixed table of atomic pointers: finding a cache's state is one
//! lock-free load, so caches used from different threads never contend.
//! Only `init` and `free` take the lock that hands numbers out.

use crate::cache::Cache;
use crate::entry::EntryPtr;
use std::collections::BTreeMap;
use std::ptr::null_mut;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Mutex;

/// Caches that may be initialised at once in one process.
#[cfg(not(miri))]
pub const MAX_CACHES: usize = 1 << 16;
/// Under Miri a small table: Stacked Borrows retags the whole table on every
/// lookup, which would make each call take about half a second.
#[cfg(miri)]
pub const MAX_CACHES: usize = 256;

/// A cache's hidden state.
pub struct CacheState {
    /// Address of the `L2TableCache` this state belongs to: a struct copied
    /// elsewhere, or stale bytes, do not match it.
    pub owner: usize,
    /// The policy, index and counters.
    pub core: Cache<EntryPtr>,
}

static STATES: [AtomicPtr<CacheState>; MAX_CACHES] = [const { AtomicPtr::new(null_mut()) }; MAX_CACHES];

struct Numbers {
    free: Vec<u32>,
    next: u32,
    /// Live caches by address, so `init` can tell a cache that was never
    /// freed without reading the (possibly uninitialised) padding.
    owners: BTreeMap<usize, u32>,
}

static NUMBERS: Mutex<Numbers> = Mutex::new(Numbers {
    free: Vec::new(),
    next: 1,
    owners: BTreeMap::new(),
});

fn numbers() -> std::sync::MutexGuard<'static, Numbers> {
    NUMBERS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Stores `state` and returns its number (never 0), or `None` when
/// `MAX_CACHES - 1` caches are already initialised.
pub fn register(state: Box<CacheState>) -> Option<u32> {
    let mut n = numbers();
    let number = match n.free.pop() {
        Some(number) => number,
        None if (n.next as usize) < MAX_CACHES => {
            n.next += 1;
            n.next - 1
        }
        None => return None,
    };
    n.owners.insert(state.owner, number);
    STATES[number as usize].store(Box::into_raw(state), Ordering::Release);
    Some(number)
}

/// The number of the live cache at `owner`, found without reading it.
pub fn number_at(owner: usize) -> Option<u32> {
    numbers().owners.get(&owner).copied()
}

/// The state numbered `number` if it belongs to the cache at `owner`.
#[inline]
pub fn lookup(number: u32, owner: usize) -> Option<*mut CacheState> {
    let state = STATES.get(number as usize)?.load(Ordering::Acquire);
    // SAFETY: a non-null pointer in the table is a live Box until
    // `unregister`, which only the cache's owner calls, serialized with
    // every other call on that cache by the caller's lock (docs/behaviour.md, "How QEMU calls it").
    (!state.is_null() && unsafe { (*state).owner } == owner).then_some(state)
}

/// Takes the state numbered `number` out of the table.
pub fn unregister(number: u32) -> Option<Box<CacheState>> {
    let mut n = numbers();
    let state = STATES.get(number as usize)?.swap(null_mut(), Ordering::AcqRel);
    if state.is_null() {
        return None;
    }
    n.free.push(number);
    // SAFETY: as in `lookup`.
    n.owners.remove(&unsafe { (*state).owner });
    // SAFETY: the pointer came from Box::into_raw in `register` and was
    // removed from the table, so this is its only owner.
    Some(unsafe { Box::from_raw(state) })
}
