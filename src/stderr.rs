// SPDX-License-Identifier: LGPL-2.1-or-later
//! Writing to stderr without a lock: one line, one `write(2)`, so lines of
//! different threads never interleave and a `fork()` can leave nothing
//! held (std's stderr has a lock). Pointers print as glibc's `%p`.

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

#[cfg(test)]
mod tests {
    use super::P;

    #[test]
    fn pointers_print_like_glibc() {
        assert_eq!(P(std::ptr::null::<u8>()).to_string(), "(nil)");
        assert_eq!(P(0x1234usize as *const u8).to_string(), "0x1234");
    }
}
