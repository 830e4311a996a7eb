// SPDX-License-Identifier: LGPL-2.1-or-later
//! What the library says on stderr: misuse reports (docs/misuse.md) and QEMU-format
//! trace lines (docs/behaviour.md, "How QEMU calls it", `QED_L2_CACHE_TRACE=1`). Each line is written with
//! one `write` so lines from different threads do not interleave.

use crate::config::{self, OnMisuse};
use crate::stderr::write_line;
use std::fmt;

/// A misuse was refused: the call must return without doing anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused;

/// Reports a misuse in one line naming the function, the object and what
/// is wrong, then aborts, or with `QED_L2_CACHE_ON_MISUSE=warn` returns so
/// the call can be refused.
#[cold]
#[inline(never)]
pub fn misuse(function: &str, what: fmt::Arguments<'_>) -> Refused {
    write_line(format_args!("qed-l2-cache: {function}: {what}"));
    if config::get().on_misuse == OnMisuse::Abort {
        std::process::abort();
    }
    Refused
}

/// True when `QED_L2_CACHE_TRACE=1`.
#[inline(always)]
pub fn tracing() -> bool {
    config::trace()
}

/// Prints one trace line: the event name, a space, the fields, as QEMU's
/// `log` trace backend does.
#[cold]
pub fn trace(event: &str, fields: fmt::Arguments<'_>) {
    write_line(format_args!("{event} {fields}"));
}
