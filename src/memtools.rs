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
