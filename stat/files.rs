// SPDX-License-Identifier: LGPL-2.1-or-later
//! The system side: where the files are, which names are statistics
//! files, opening one without trusting it (no symbolic link, no FIFO, no
//! device, no directory), the writer's lock, and removing the file of a
//! writer that is gone.

use crate::read::{self, Snapshot};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Files of one directory considered in one report at most (a directory
/// that holds more is read up to there, with a message).
pub const MAX_FILES: usize = 65_536;

/// The effective user id.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The directory the library publishes in: `$XDG_RUNTIME_DIR/qed-l2-cache`,
/// or `/tmp/qed-l2-cache-UID` when XDG_RUNTIME_DIR is unset (or empty, or
/// not an absolute path, which the XDG specification says to ignore).
pub fn default_dir(xdg_runtime_dir: Option<OsString>, uid: u32) -> PathBuf {
    match xdg_runtime_dir {
        Some(d) if d.as_bytes().first() == Some(&b'/') => Path::new(&d).join("qed-l2-cache"),
        _ => PathBuf::from(format!("/tmp/qed-l2-cache-{uid}")),
    }
}

/// A statistics file's name: `PID` or `PID.N` (a writer whose pid another
/// namespace's writer already uses), in canonical decimal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Name {
    /// The process, as this namespace sees it.
    pub pid: u32,
    /// `N` of `PID.N`.
    pub instance: Option<u32>,
}

fn number(b: &[u8]) -> Option<u32> {
    if b.is_empty() || b.len() > 10 || !b.iter().all(u8::is_ascii_digit) || (b[0] == b'0' && b.len() > 1) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// The name's pid and instance, or `None` for a name that is not a
/// statistics file's (such files are ignored).
pub fn parse_name(name: &OsStr) -> Option<Name> {
    let b = name.as_bytes();
    let (pid, instance) = match b.iter().position(|&c| c == b'.') {
        Some(dot) => (number(&b[..dot])?, Some(number(&b[dot + 1..])?)),
        None => (number(b)?, None),
    };
    (pid > 0).then_some(Name { pid, instance })
}

/// Checks the directory before anything in it is read: it must be a real
/// directory (not a symbolic link), owned by the user (or any owner for
/// root), and writable only by its owner. `me`: the user's id. `Ok(false)`: it does not exist
/// (no process published yet).
pub fn check_dir(dir: &Path, me: u32) -> Result<bool, String> {
    let m = match fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(format!("cannot examine it: {e}")),
    };
    let ft = m.file_type();
    if ft.is_symlink() {
        return Err("is a symbolic link: refused (the directory must be a real one)".into());
    }
    if !ft.is_dir() {
        return Err("is not a directory".into());
    }
    if m.uid() != me && me != 0 {
        return Err(format!(
            "is owned by uid {}, not by you (uid {me}): refused",
            m.uid()
        ));
    }
    if m.mode() & 0o022 != 0 {
        return Err(format!(
            "is writable by others than its owner (mode {:o}): refused",
            m.mode() & 0o7777
        ));
    }
    Ok(true)
}

/// The statistics files of `dir` (only those of `pids` when there are
/// some), sorted by pid then instance; `true` when there were more than
/// [`MAX_FILES`].
pub fn list(dir: &Path, pids: &[u32]) -> io::Result<(Vec<(Name, OsString)>, bool)> {
    let mut found = Vec::new();
    let mut more = false;
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(n) = parse_name(&name) else { continue };
        if !pids.is_empty() && !pids.contains(&n.pid) {
            continue;
        }
        if found.len() == MAX_FILES {
            more = true;
            break;
        }
        found.push((n, name));
    }
    found.sort();
    Ok((found, more))
}

/// What reading one file came to.
#[derive(Debug)]
pub enum Outcome {
    /// Read and valid.
    Read(Snapshot),
    /// Not read: why (one line, without the file's name).
    Skipped(String),
    /// The writer is gone: the message says whether the file was removed.
    Stale(String),
    /// It vanished before it was opened (its process exited).
    Gone,
}

fn kind(ft: fs::FileType) -> &'static str {
    if ft.is_dir() {
        "a directory"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_char_device() || ft.is_block_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

/// Whether a process holds a lock on the file: the writer holds a write
/// lock on the whole file (fcntl F_SETLK) for as long as it lives, and the
/// kernel drops it when the process ends, however it ends. Asked with
/// F_GETLK, which takes no lock: the reader never locks (a lock of its
/// own could block the writer).
pub fn writer_alive(file: &File) -> io::Result<bool> {
    // SAFETY: `flock` is a C struct of integers, for which all-zero bytes
    // are a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    // From 0 to the end of the file, however long it gets.
    fl.l_start = 0;
    fl.l_len = 0;
    // SAFETY: the descriptor is open for the whole call (`file` is
    // borrowed), and `fl` is a valid `flock` the kernel may write.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut fl) };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

/// Opens and reads one file, trusting nothing about it. It is opened only
/// if `lstat` says it is a regular file (opening a device can do things),
/// with O_NOFOLLOW (a symbolic link put in its place meanwhile is not
/// followed), O_NONBLOCK (a FIFO put there cannot block the open),
/// O_NOCTTY and O_CLOEXEC; then `fstat` on the descriptor decides. Read
/// with `pread` only (never mapped: a writer that cuts the file must not
/// kill the reader with SIGBUS), at most [`read::MAX_RECORD_BYTES`] of
/// records.
pub fn read_path(path: &Path) -> Outcome {
    let lm = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Outcome::Gone,
        Err(e) => return Outcome::Skipped(format!("cannot examine it: {e}")),
    };
    if !lm.file_type().is_file() {
        return Outcome::Skipped(format!(
            "is {}, not a statistics file: skipped",
            kind(lm.file_type())
        ));
    }
    let (file, m) = match open_untrusted(path) {
        Ok(fm) => fm,
        Err(o) => return o,
    };
    let alive = writer_alive(&file);
    if let Err(e) = read::read_header(&file) {
        let dead = if matches!(alive, Ok(false)) {
            "; no process holds its lock"
        } else {
            ""
        };
        return Outcome::Skipped(format!("{e}{dead}: skipped"));
    }
    // Only a file whose header is valid is ever taken for stale: a file
    // just created (the writer locks it before it writes the header) or
    // one that is not a statistics file is never removed. And only if the
    // lock is still free after the header was read.
    let untested = match alive {
        Ok(true) => String::new(),
        Ok(false) if matches!(writer_alive(&file), Ok(true)) => String::new(),
        Ok(false) => return Outcome::Stale(remove_stale(path, &m)),
        // A file system without locks: nothing says it is stale.
        Err(e) => format!(" (its lock cannot be tested: {e})"),
    };
    match read::read_snapshot(&file) {
        Ok(s) => Outcome::Read(s),
        Err(p) => Outcome::Skipped(format!("{p}{untested}: skipped")),
    }
}

/// Opens `path` for reading without following a symbolic link, blocking
/// on a FIFO or taking a terminal, and returns it with its `fstat` if it is
/// a regular file.
pub fn open_untrusted(path: &Path) -> Result<(File, fs::Metadata), Outcome> {
    let file = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Outcome::Gone),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(Outcome::Skipped(
                "is a symbolic link, not a statistics file: skipped".into(),
            ))
        }
        Err(e) => return Err(Outcome::Skipped(format!("cannot open it: {e}"))),
    };
    let m = match file.metadata() {
        Ok(m) => m,
        Err(e) => return Err(Outcome::Skipped(format!("cannot examine it: {e}"))),
    };
    if !m.file_type().is_file() {
        return Err(Outcome::Skipped(format!(
            "is {}, not a statistics file: skipped",
            kind(m.file_type())
        )));
    }
    Ok((file, m))
}

/// The file of a writer that is gone (its header is valid, no process
/// holds its lock): removed if it is the user's and still the same file,
/// else left. Returns the message.
fn remove_stale(path: &Path, opened: &fs::Metadata) -> String {
    const GONE: &str = "no process holds its lock (its writer is gone)";
    let me = euid();
    if opened.uid() != me {
        return format!("{GONE}; owned by uid {}, not you: left in place", opened.uid());
    }
    // Only the file examined: not one a new writer has put in its place.
    match fs::symlink_metadata(path) {
        Ok(now) if now.dev() == opened.dev() && now.ino() == opened.ino() => {}
        _ => return format!("{GONE}; replaced meanwhile: left in place"),
    }
    match fs::remove_file(path) {
        Ok(()) => format!("{GONE}: removed the stale file"),
        Err(e) if e.kind() == io::ErrorKind::NotFound => format!("{GONE}: already removed"),
        Err(e) => format!("{GONE}; cannot remove it: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_pids_or_pid_dot_instance() {
        let n = |s: &str| parse_name(OsStr::new(s));
        assert_eq!(
            n("1234"),
            Some(Name {
                pid: 1234,
                instance: None
            })
        );
        assert_eq!(
            n("1234.2"),
            Some(Name {
                pid: 1234,
                instance: Some(2)
            })
        );
        assert_eq!(
            n("1.0"),
            Some(Name {
                pid: 1,
                instance: Some(0)
            })
        );
        for bad in [
            "",
            "0",
            "01",
            "1.",
            ".1",
            "1.2.3",
            "12a",
            "-1",
            "+1",
            "99999999999",
            "4294967296",
            "1.02",
        ] {
            assert_eq!(n(bad), None, "{bad}");
        }
        assert_eq!(n("4294967295").map(|n| n.pid), Some(u32::MAX));
    }

    #[test]
    fn the_default_directory() {
        assert_eq!(
            default_dir(Some("/run/user/1000".into()), 1000),
            PathBuf::from("/run/user/1000/qed-l2-cache")
        );
        assert_eq!(default_dir(None, 1000), PathBuf::from("/tmp/qed-l2-cache-1000"));
        assert_eq!(
            default_dir(Some("".into()), 7),
            PathBuf::from("/tmp/qed-l2-cache-7")
        );
        assert_eq!(
            default_dir(Some("rel".into()), 7),
            PathBuf::from("/tmp/qed-l2-cache-7")
        );
    }
}
