// SPDX-License-Identifier: LGPL-2.1-or-later
//! USDT static probes (docs/probes.md): SystemTap SDT v3 notes, as
//! `<sys/sdt.h>` emits them, for gdb, systemtap, bpftrace and perf.
//!
//! QEMU built with its dtrace trace backend has its three `qed_*` trace
//! events as probes of provider `qemu`; replacing `block/qed-l2-cache.c`
//! with this library takes them out of QEMU's binary, so the library
//! carries them, with QEMU's names and arguments. Provider `qed_l2_cache`
//! adds what QEMU's set lacks (misses, commits, duplicates, evictions).
//!
//! Each probe is a `nop` in a cold function of its own, described by a note
//! in `.note.stapsdt` (its address, the `.stapsdt.base` address for
//! prelink adjustment, its semaphore's address, provider, name and where
//! each argument is: `8@%rdi` is 8 unsigned bytes in `%rdi`, `-4@w3` 4
//! signed bytes in `w3`). A tracer that attaches increments the probe's
//! semaphore, an `unsigned short` in section `.probes` named
//! `<provider>_<name>_semaphore`; while it is 0 a probe site costs one load
//! and a branch not taken, and the cold function, and so the `nop`, is not
//! reached. The probe functions are `#[inline(always)]`: their arguments
//! are values the call site has at hand, and they are used only inside
//! that branch.
//!
//! Only on x86_64 and aarch64 Linux (ELF); elsewhere, and under Miri, the
//! probe functions compile to nothing. This module uses no other module of
//! the crate.

/// An argument kind: its Rust type, the value passed in a register (a
/// pointer as its address: the site only shows it, never reads through
/// it), and where the note says it is, in the assembler's words: `8@{op}`
/// for 8 unsigned bytes, `-4@{op:e}` (x86_64) or `-4@{op:w}` (aarch64) for
/// a C `int` in the register's low half. `{op}` is the asm operand of that
/// name, which rustc expands to its register (`%rdi`, `x0`).
#[rustfmt::skip]
macro_rules! sdt_type {
    (ptr) => { *const () };
    (u64) => { u64 };
    (int) => { std::ffi::c_int };
}
#[rustfmt::skip]
macro_rules! sdt_value {
    (ptr, $arg:ident) => { $arg.addr() };
    (u64, $arg:ident) => { $arg };
    (int, $arg:ident) => { $arg };
}
#[rustfmt::skip]
#[cfg(target_arch = "x86_64")]
macro_rules! sdt_arg {
    (ptr, $arg:ident) => { concat!("8@{", stringify!($arg), "}") };
    (u64, $arg:ident) => { concat!("8@{", stringify!($arg), "}") };
    (int, $arg:ident) => { concat!("-4@{", stringify!($arg), ":e}") };
}
#[rustfmt::skip]
#[cfg(target_arch = "aarch64")]
macro_rules! sdt_arg {
    (ptr, $arg:ident) => { concat!("8@{", stringify!($arg), "}") };
    (u64, $arg:ident) => { concat!("8@{", stringify!($arg), "}") };
    (int, $arg:ident) => { concat!("-4@{", stringify!($arg), ":w}") };
}

/// `asm!` with the probe site's options: it reads and writes no memory, no
/// stack, no flags; x86_64 in AT&T syntax, so that an operand expands to
/// `%reg` as `<sys/sdt.h>` spells it.
#[cfg(target_arch = "x86_64")]
macro_rules! sdt_site {
    ($($operands:tt)*) => {
        std::arch::asm!($($operands)*, options(nomem, nostack, preserves_flags, att_syntax))
    };
}
#[cfg(target_arch = "aarch64")]
macro_rules! sdt_site {
    ($($operands:tt)*) => {
        std::arch::asm!($($operands)*, options(nomem, nostack, preserves_flags))
    };
}

/// `<provider>_<name>_semaphore`, the semaphore's symbol.
macro_rules! sdt_semaphore {
    ($provider:ident, $name:ident) => {
        concat!(stringify!($provider), "_", stringify!($name), "_semaphore")
    };
}

/// The probe site: a `nop` and its note (`<sys/sdt.h>`'s `_SDT_ASM_BODY`
/// for version 3: the `nop`'s address, `_.stapsdt.base`'s, the semaphore's,
/// provider, name, arguments); the semaphore's name, as `<sys/sdt.h>` users
/// (`dtrace -G`) define it, here a local alias of the Rust static, for
/// debuggers; and once per object the `.stapsdt.base` byte, in a COMDAT
/// group so that the linker keeps one. Tools compare the base the note
/// records with that section's address to undo prelinking, and gdb finds
/// no probe at all in a file without the section. Only the note refers to
/// it, and a note is no root for `--gc-sections`: GNU ld keeps the section
/// anyway, lld (rustc's default linker) drops it and leaves base 0, so it
/// is marked `R` (`SHF_GNU_RETAIN`).
#[rustfmt::skip]
macro_rules! sdt_asm {
    ($provider:ident, $name:ident, $args:expr) => {
        concat!(
            "990: nop\n",
            ".pushsection .note.stapsdt,\"?\",\"note\"\n",
            ".balign 4\n",
            ".4byte 992f-991f, 994f-993f, 3\n",
            "991: .asciz \"stapsdt\"\n",
            "992: .balign 4\n",
            "993: .8byte 990b\n",
            ".8byte _.stapsdt.base\n",
            ".8byte ", sdt_semaphore!($provider, $name), "\n",
            ".asciz \"", stringify!($provider), "\"\n",
            ".asciz \"", stringify!($name), "\"\n",
            ".asciz \"", $args, "\"\n",
            "994: .balign 4\n",
            ".popsection\n",
            ".set ", sdt_semaphore!($provider, $name), ", {semaphore}\n",
            ".type ", sdt_semaphore!($provider, $name), ", %object\n",
            ".size ", sdt_semaphore!($provider, $name), ", 2\n",
            ".ifndef _.stapsdt.base\n",
            ".pushsection .stapsdt.base,\"aGR\",\"progbits\",.stapsdt.base,comdat\n",
            ".weak _.stapsdt.base\n",
            ".hidden _.stapsdt.base\n",
            "_.stapsdt.base: .space 1\n",
            ".size _.stapsdt.base, 1\n",
            ".popsection\n",
            ".endif\n",
        )
    };
}

/// One probe: `pub fn $name(args)`, which fires the probe when its
/// semaphore is not 0.
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64"),
    not(miri)
))]
macro_rules! probe {
    (
        $(#[$doc:meta])*
        $provider:ident : $name:ident,
        ($first:ident : $first_kind:ident $(, $arg:ident : $kind:ident)* $(,)?)
    ) => {
        $(#[$doc])*
        #[inline(always)]
        pub fn $name($first: sdt_type!($first_kind) $(, $arg: sdt_type!($kind))*) {
            /// Non-zero while a tracer has the probe enabled. An atomic
            /// only so that Rust does not assume it never changes (a tracer
            /// writes it from outside): a relaxed load is a plain load. Not
            /// exported, so that a load of it is one instruction (not its
            /// address from the GOT first); the note and the local symbol
            /// `<provider>_<name>_semaphore` give tools its address.
            #[link_section = ".probes"]
            static SEMAPHORE: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);

            /// The probe site, out of line: the hot path only loads the
            /// semaphore and branches past the call.
            #[cold]
            #[inline(never)]
            fn fire($first: sdt_type!($first_kind) $(, $arg: sdt_type!($kind))*) {
                // SAFETY: the asm executes one `nop`: it reads and writes
                // no memory, no stack and no flags; the rest only assembles
                // data into the note sections.
                unsafe {
                    sdt_site!(
                        sdt_asm!(
                            $provider,
                            $name,
                            concat!(sdt_arg!($first_kind, $first) $(, " ", sdt_arg!($kind, $arg))*)
                        ),
                        $first = in(reg) sdt_value!($first_kind, $first),
                        $($arg = in(reg) sdt_value!($kind, $arg),)*
                        semaphore = sym SEMAPHORE
                    );
                }
            }

            if SEMAPHORE.load(std::sync::atomic::Ordering::Relaxed) != 0 {
                fire($first $(, $arg)*);
            }
        }
    };
}

/// Elsewhere: `pub fn $name(args)` that does nothing.
#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64"),
    not(miri)
)))]
macro_rules! probe {
    (
        $(#[$doc:meta])*
        $provider:ident : $name:ident,
        ($($arg:ident : $kind:ident),* $(,)?)
    ) => {
        $(#[$doc])*
        #[inline(always)]
        pub fn $name($($arg: sdt_type!($kind)),*) {
            let _ = ($($arg,)*);
        }
    };
}

/// Provider `qemu`: QEMU's trace events of `block/trace-events` for
/// `qed-l2-cache.c`, with their names and arguments.
pub mod qemu {
    probe! {
        /// `qed_alloc_l2_cache_entry(void *l2_cache, void *entry)`: an
        /// entry was allocated.
        qemu: qed_alloc_l2_cache_entry,
        (l2_cache: ptr, entry: ptr)
    }

    probe! {
        /// `qed_unref_l2_cache_entry(void *entry, int ref)`: a reference
        /// was dropped; `ref` is the count left (0: the entry was released).
        qemu: qed_unref_l2_cache_entry,
        (entry: ptr, refs: int)
    }

    probe! {
        /// `qed_find_l2_cache_entry(void *l2_cache, void *entry, uint64_t
        /// offset, int ref)`: a find hit; `ref` is the count before the
        /// reference the find returns.
        qemu: qed_find_l2_cache_entry,
        (l2_cache: ptr, entry: ptr, offset: u64, refs: int)
    }
}

/// Provider `qed_l2_cache`: what QEMU's set lacks.
pub mod qed_l2_cache {
    probe! {
        /// `miss(void *l2_cache, uint64_t offset)`: a find returned NULL.
        qed_l2_cache: miss,
        (l2_cache: ptr, offset: u64)
    }

    probe! {
        /// `commit(void *l2_cache, void *entry, uint64_t offset)`: an entry
        /// was committed and is now cached.
        qed_l2_cache: commit,
        (l2_cache: ptr, entry: ptr, offset: u64)
    }

    probe! {
        /// `duplicate(void *l2_cache, void *entry, uint64_t offset)`: the
        /// offset of the committed `entry` was already cached; the cached
        /// entry stays and `entry` loses the caller's reference.
        qed_l2_cache: duplicate,
        (l2_cache: ptr, entry: ptr, offset: u64)
    }

    probe! {
        /// `evict(void *l2_cache, void *entry, uint64_t offset)`: an entry
        /// left the cache to make room or to honour a lower maximum.
        qed_l2_cache: evict,
        (l2_cache: ptr, entry: ptr, offset: u64)
    }
}
