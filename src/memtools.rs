// SPDX-License-Identifier: LGPL-2.1-or-later
//! Tells memory checkers what the library does with memory it keeps after
//! the caller is done with it: a released entry waits in quarantine (so a
//! double unref is recognised) and must look freed to valgrind and
//! AddressSanitizer, so that a use after release is still reported.
//!
//! Valgrind: its client requests, a magic instruction sequence that does
//! nothing on a real CPU (a few rotates of a register by 128 bits in all).
//! AddressSanitizer: `__asan_poison_memory_region`, looked up at run time
//! so the library works with and without it.
//!
//! And the other half of being honest with leak checkers: every address
//! the library records is kept [`hide`]n, so that its records never make a
//! leaked entry look reachable.

use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};

const MC_MAKE_MEM_NOACCESS: usize = 0x4D43_0000;
const MC_MAKE_MEM_UNDEFINED: usize = 0x4D43_0001;

#[cfg(all(target_arch = "x86_64", not(miri)))]
#[inline(always)]
fn client_request(args: &[usize; 6]) {
    // SAFETY: the valgrind client-request sequence for amd64: rdi is
    // rotated by 128 bits (unchanged); outside valgrind it has no effect,
    // under valgrind the request reads `args`.
    unsafe {
        std::arch::asm!(
            "rol rdi, 3", "rol rdi, 13", "rol rdi, 61", "rol rdi, 51",
            "xchg rbx, rbx",
            inout("rdx") 0usize => _,
            in("rax") args.as_ptr(),
            options(nostack),
        );
    }
}

#[cfg(all(target_arch = "aarch64", not(miri)))]
#[inline(always)]
fn client_request(args: &[usize; 6]) {
    // SAFETY: the valgrind client-request sequence for arm64: x12 is
    // rotated by 128 bits (unchanged); outside valgrind it has no effect.
    unsafe {
        std::arch::asm!(
            "ror x12, x12, #3", "ror x12, x12, #13", "ror x12, x12, #51", "ror x12, x12, #61",
            "orr x10, x10, x10",
            inout("x3") 0usize => _,
            in("x4") args.as_ptr(),
            options(nostack),
        );
    }
}

#[cfg(any(miri, not(any(target_arch = "x86_64", target_arch = "aarch64"))))]
fn client_request(_args: &[usize; 6]) {}

type PoisonFn = unsafe extern "C" fn(*const c_void, usize);

/// `__asan_poison_memory_region` and `__asan_unpoison_memory_region`,
/// 0 = not looked up yet, 1 = absent.
static ASAN_POISON: AtomicUsize = AtomicUsize::new(0);
static ASAN_UNPOISON: AtomicUsize = AtomicUsize::new(0);

fn asan(slot: &AtomicUsize, name: &std::ffi::CStr) -> Option<PoisonFn> {
    let mut f = slot.load(Ordering::Acquire);
    if f == 0 {
        #[cfg(miri)]
        let sym = {
            let _ = name;
            0
        };
        #[cfg(not(miri))]
        // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name.
        let sym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) } as usize;
        f = if sym == 0 { 1 } else { sym };
        slot.store(f, Ordering::Release);
    }
    // SAFETY: a non-sentinel value is the address of the ASan function of
    // that name, whose signature is (const void *, size_t).
    (f > 1).then(|| unsafe { std::mem::transmute::<usize, PoisonFn>(f) })
}

/// Marks `len` bytes at `p` as freed: any access is an error for valgrind
/// and AddressSanitizer.
pub fn poison(p: *const c_void, len: usize) {
    client_request(&[MC_MAKE_MEM_NOACCESS, p as usize, len, 0, 0, 0]);
    if let Some(f) = asan(&ASAN_POISON, c"__asan_poison_memory_region") {
        // SAFETY: `p..p+len` is memory the library owns.
        unsafe { f(p, len) };
    }
}

/// Undoes [`poison`] before the memory goes back to the allocator.
pub fn unpoison(p: *const c_void, len: usize) {
    client_request(&[MC_MAKE_MEM_UNDEFINED, p as usize, len, 0, 0, 0]);
    if let Some(f) = asan(&ASAN_UNPOISON, c"__asan_unpoison_memory_region") {
        // SAFETY: as in `poison`.
        unsafe { f(p, len) };
    }
}

/// What every address the library records is XORed with. Bits 48..63 set
/// make the result a non-canonical address (also under aarch64's top-byte
/// ignore), which no leak checker takes for a pointer. The ledger's slot
/// markers 0 and 1 are the hidden values of two such addresses, which
/// `ledger::classify` turns away. A constant: the point is to hide addresses from
/// memory checkers, not from an adversary, and it costs nothing to apply.
const HIDE_MASK: u64 = 0x5AD3_0000_0000_0000;

/// An address as the library's records keep it: never a plain pointer.
#[inline(always)]
pub fn hide(addr: usize) -> u64 {
    addr as u64 ^ HIDE_MASK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_addresses_are_not_canonical_pointers_and_round_trip() {
        for addr in [0usize, 1, 0x1000, 0x7fff_ffff_f000, 0x5555_5555_4000] {
            let h = hide(addr);
            // Bits 48..63 of a user-space pointer are clear (x86_64,
            // aarch64): a hidden one always has some set.
            assert_ne!(h >> 48, 0, "{addr:#x}");
            assert_eq!(
                hide(h as usize),
                addr as u64,
                "hiding twice gives the address back"
            );
        }
    }

    #[test]
    fn poisoning_outside_a_checker_changes_nothing() {
        // Without valgrind or ASan the requests do nothing: the bytes stay
        // readable and unchanged.
        let block = [7u8; 48];
        poison(block.as_ptr().cast(), block.len());
        unpoison(block.as_ptr().cast(), block.len());
        assert!(block.iter().all(|&b| b == 7));
        // The ASan lookup is made once and remembered as absent.
        assert_eq!(ASAN_POISON.load(Ordering::Acquire), 1);
        assert_eq!(ASAN_UNPOISON.load(Ordering::Acquire), 1);
    }
}
