// SPDX-License-Identifier: LGPL-2.1-or-later
//! Offset index: an open-addressing hash table from table offset to slot.
//!
//! The table stores only `u32` slot numbers (4 bytes a bucket); the key of a
//! slot is looked up through a closure, so the index never duplicates the
//! offsets the cache already keeps. Linear probing with backward-shift
//! deletion keeps lookups O(1) on average with no tombstones, and the load
//! factor stays at or below 1/2, so a hit usually touches one bucket.

/// Marks an empty bucket.
const EMPTY: u32 = u32::MAX;

/// Smallest bucket array; a power of two.
const MIN_BUCKETS: usize = 16;

/// Open-addressing index of slots, keyed by a `u64` offset.
#[derive(Debug, Clone)]
pub struct OffsetIndex {
    buckets: Vec<u32>,
    len: usize,
    /// `64 - log2(buckets.len())`: Fibonacci hashing keeps the top bits.
    shift: u32,
}

/// 2^64 divided by the golden ratio: the multiplier of Fibonacci hashing,
/// which spreads keys that differ in their high bits over the top bits of
/// the product. The library's other hash tables use it too.
pub const FIBONACCI: u64 = 0x9E37_79B9_7F4A_7C15;

/// Fibonacci hashing. L2 table offsets are cluster-aligned (their low 16 or
/// more bits are zero), so the high bits of the product carry the entropy.
#[inline]
fn hash(offset: u64, shift: u32) -> usize {
    ((offset ^ (offset >> 29)).wrapping_mul(FIBONACCI) >> shift) as usize
}

impl Default for OffsetIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl OffsetIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::with_buckets(MIN_BUCKETS)
    }

    fn with_buckets(n: usize) -> Self {
        debug_assert!(n.is_power_of_two());
        OffsetIndex {
            buckets: vec![EMPTY; n],
            len: 0,
            shift: 64 - n.trailing_zeros(),
        }
    }

    /// Number of slots indexed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is indexed.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of heap memory the index holds.
    pub fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<u32>()
    }

    #[inline]
    fn mask(&self) -> usize {
        self.buckets.len() - 1
    }

    /// The slot whose key is `offset`, if any.
    #[inline]
    pub fn get(&self, offset: u64, key_of: impl Fn(u32) -> u64) -> Option<u32> {
        let mask = self.mask();
        let mut i = hash(offset, self.shift);
        loop {
            let slot = self.buckets[i];
            if slot == EMPTY {
                return None;
            }
            if key_of(slot) == offset {
                return Some(slot);
            }
            i = (i + 1) & mask;
        }
    }

    /// Adds `slot` under `offset`. The caller guarantees the key is absent.
    pub fn insert(&mut self, offset: u64, slot: u32, key_of: impl Fn(u32) -> u64) {
        debug_assert_ne!(slot, EMPTY);
        if (self.len + 1) * 2 > self.buckets.len() {
            self.grow(&key_of);
        }
        self.place(offset, slot);
        self.len += 1;
    }

    fn place(&mut self, offset: u64, slot: u32) {
        let mask = self.mask();
        let mut i = hash(offset, self.shift);
        while self.buckets[i] != EMPTY {
            i = (i + 1) & mask;
        }
        self.buckets[i] = slot;
    }

    fn grow(&mut self, key_of: &impl Fn(u32) -> u64) {
        let old = std::mem::take(&mut self.buckets);
        *self = Self::with_buckets(old.len() * 2);
        for slot in old.into_iter().filter(|&s| s != EMPTY) {
            self.place(key_of(slot), slot);
            self.len += 1;
        }
    }

    /// Removes the slot stored under `offset`; returns whether it was there.
    pub fn remove(&mut self, offset: u64, key_of: impl Fn(u32) -> u64) -> bool {
        let mask = self.mask();
        let mut i = hash(offset, self.shift);
        loop {
            let slot = self.buckets[i];
            if slot == EMPTY {
                return false;
            }
            if key_of(slot) == offset {
                break;
            }
            i = (i + 1) & mask;
        }
        // Backward-shift deletion: pull later members of the probe run into
        // the hole when their home bucket allows it, so no tombstones remain.
        let mut hole = i;
        let mut j = (i + 1) & mask;
        loop {
            let slot = self.buckets[j];
            if slot == EMPTY {
                break;
            }
            let home = hash(key_of(slot), self.shift);
            // Distance from home to j versus from home to the hole (cyclic).
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                self.buckets[hole] = slot;
                hole = j;
            }
            j = (j + 1) & mask;
        }
        self.buckets[hole] = EMPTY;
        self.len -= 1;
        true
    }

    /// Forgets every slot (keeps the bucket array).
    pub fn clear(&mut self) {
        self.buckets.fill(EMPTY);
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_get_remove_many() {
        let keys: Vec<u64> = (1..=5000u64).map(|i| i * 65536).collect();
        let key_of = |s: u32| keys[s as usize];
        let mut idx = OffsetIndex::new();
        for s in 0..keys.len() as u32 {
            assert_eq!(idx.get(keys[s as usize], key_of), None);
            idx.insert(keys[s as usize], s, key_of);
        }
        assert_eq!(idx.len(), keys.len());
        for s in 0..keys.len() as u32 {
            assert_eq!(idx.get(keys[s as usize], key_of), Some(s));
        }
        // Remove every third, then check all others are still found.
        for s in (0..keys.len() as u32).step_by(3) {
            assert!(idx.remove(keys[s as usize], key_of));
            assert!(!idx.remove(keys[s as usize], key_of));
        }
        for s in 0..keys.len() as u32 {
            let want = if s % 3 == 0 { None } else { Some(s) };
            assert_eq!(idx.get(keys[s as usize], key_of), want, "slot {s}");
        }
        assert!(idx.heap_bytes() >= idx.len() * 2 * 4);
    }

    #[test]
    fn colliding_keys_survive_removal_in_any_order() {
        // Keys that differ only above the hashed bits collide often.
        let keys: Vec<u64> = (0..64u64).map(|i| (i << 40) | 0x1_0000).collect();
        let key_of = |s: u32| keys[s as usize];
        let mut idx = OffsetIndex::new();
        for s in 0..keys.len() as u32 {
            idx.insert(keys[s as usize], s, key_of);
        }
        for s in (0..keys.len() as u32).rev().step_by(2) {
            assert!(idx.remove(keys[s as usize], key_of));
        }
        for s in 0..keys.len() as u32 {
            let present = (keys.len() as u32 - 1 - s) % 2 != 0;
            assert_eq!(idx.get(keys[s as usize], key_of).is_some(), present);
        }
        idx.clear();
        assert!(idx.is_empty());
        assert_eq!(idx.get(keys[1], key_of), None);
    }
}
