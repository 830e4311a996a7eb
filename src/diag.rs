// SPDX-License-Identifier: LGPL-2.1-or-later
//! What the library says on stderr: misuse reports (docs/misuse.md) and QEMU-format
//! trace lines (docs/behaviour.md, "How QEMU calls it", `QED_L2_CACHE_TRACE=1`). Each line is written with
//! one `write` so lines from different threads do not interleave.

use crate::config::{self, OnMisuse};
use std::fmt;

/// Formats a pointer as glibc's `%p` does: `0x…`, or `(nil)` for NULL.
pub struct P<T>(pub *const T);

impl<T> fmt::Display for P<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_null() {
            f.write_str("(nil)")
        } else {
            write!(f, "{:#x}", self.0 as usize)
        }
    }
}

/// Writes one line to fd 2 with one `write(2)`: no lock (std's stderr has
/// one, which a `fork()` could leave held), and lines of different threads
/// never interleave.
pub fn write_line(line: fmt::Arguments<'_>) {
    let mut text = line.to_string();
    text.push('\n');
    let mut rest = text.as_bytes();
    while !rest.is_empty() {
        // SAFETY: writes bytes from a live buffer to fd 2.
        let n = unsafe { libc::write(2, rest.as_ptr().cast(), rest.len()) };
        if n <= 0 {
            // Nothing sensible can be done if stderr is gone (EINTR aside).
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        rest = &rest[n as usize..];
    }
}

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
#[inline]
pub fn tracing() -> bool {
    config::get().trace
}

/// Prints one trace line: the event name, a space, the fields, as QEMU's
/// `log` trace backend does.
#[cold]
pub fn trace(event: &str, fields: fmt::Arguments<'_>) {
    write_line(format_args!("{event} {fields}"));
}

#[cfg(test)]
mod tests {
    use super::P;

    #[test]
    fn pointers_print_like_glibc() {
        assert_eq!(P(std::ptr::null::<u8>()).to_string(), "(nil)");
        assert_eq!(P(0x1234usize as *const u8).to_string(), "0x1234");
    }
}
