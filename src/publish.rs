// SPDX-License-Identifier: LGPL-2.1-or-later
//! The writer of the live statistics file (docs/statistics.md): with
//! `QED_L2_CACHE_STATS=1` a process publishes every cache's counters in a
//! file of its own, `$XDG_RUNTIME_DIR/qed-l2-cache/PID` (else
//! `/tmp/qed-l2-cache-UID/PID`), laid out as [`crate::stats_layout`] says,
//! which another process may read at any time.
//!
//! - **Records.** A cache's record is the one of its registry slot
//!   (record index = slot number - 1), handed out as a [`RecordRef`]: a
//!   pointer into a `MAP_SHARED` mapping of the file, and the process
//!   token ([`process_token`]) of the process that mapped it. Every store
//!   compares that token with the caller's first: a fork child (also one
//!   made by `_Fork` or a raw `clone`, which run no fork handler) inherits
//!   the mapping, but its token is new, so it never writes into its
//!   parent's file; it gets a record in a file of its own instead
//!   ([`record`] again, from the cache's next call).
//! - **Growth.** The file grows in segments as slot numbers grow, like the
//!   registry's (segment `s` holds `64 << s` records): the file is extended
//!   (`ftruncate`, sparse), the new range is mapped, and only then is the
//!   header's `records` raised. A record's blocks are allocated
//!   (`fallocate`) when a cache gets it, before any store: a store into a
//!   hole that a full file system cannot fill would raise SIGBUS, a failed
//!   allocation is only a line on stderr and an unpublished cache. A
//!   segment is never unmapped while a cache may use it: only at unload
//!   when no cache is left.
//! - **Liveness.** The writer holds a POSIX record lock (`F_SETLK`,
//!   `F_WRLCK`, whole file) for as long as it publishes; a reader tests it
//!   with `F_GETLK`. The lock, not the pid in the name or the header, tells
//!   a live writer: pids repeat across pid namespaces, and POSIX locks are
//!   not inherited by fork children. The file is made under a temporary
//!   name, locked, and only then linked under its own name, so a file seen
//!   under a `PID` name without a lock has a dead writer: it is removed and
//!   the name taken. A name whose writer lives (the same pid in another pid
//!   namespace) is passed over for `PID.1`, `PID.2`, ...
//! - **Safety of the place.** The directory is made 0700 if missing, and
//!   checked without following links (`lstat`, then `openat` with
//!   `O_NOFOLLOW` and `fstat` of what was opened): it must be a directory
//!   owned by this user that group and others cannot enter. Otherwise one
//!   line says why on stderr and the process publishes nothing (nor do its
//!   fork children, which would meet the same directory). The file is
//!   created 0600 with `O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC`.
//! - **End.** At exit or unload ([`at_unload`]) the owner removes its file
//!   and closes it; a fork child never removes its parent's file, only its
//!   own.
//!
//! Nothing here takes a lock a fork can leave held: the publisher's state
//! is under a [`Locked`], which a fork child takes over (then the state is
//! the parent's and is set aside).

use crate::config;
use crate::stats_layout::{self as layout, header, record, HEADER_BYTES, MAX_PREDICTIONS, RECORD_BYTES};
use crate::stderr::write_line;
use crate::sync::{process_token, Locked};
use std::ffi::{c_int, CString, OsString};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::ptr::null_mut;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Segment `s` holds `FIRST_SEGMENT << s` records (as the registry's).
const FIRST_SEGMENT: usize = 64;
/// Enough segments for every slot number below 2^32.
const SEGMENTS: usize = 27;
/// `PID.N` names tried at most before giving up.
const MAX_NAMES: u32 = 1000;

/// The segment of record `index`, and the segment's first record.
fn segment_of(index: usize) -> (usize, usize) {
    let j = index + FIRST_SEGMENT;
    let s = (usize::BITS - 1 - j.leading_zeros()) as usize - FIRST_SEGMENT.trailing_zeros() as usize;
    (s, (FIRST_SEGMENT << s) - FIRST_SEGMENT)
}

/// The file bytes segment `s` covers: from the page holding its first
/// record (segment 0: from the header) to the end of its last record.
fn segment_range(s: usize, page: usize) -> (usize, usize) {
    let first = (FIRST_SEGMENT << s) - FIRST_SEGMENT;
    let start = HEADER_BYTES + first * RECORD_BYTES;
    let end = HEADER_BYTES + (first + (FIRST_SEGMENT << s)) * RECORD_BYTES;
    let start = if s == 0 { 0 } else { start / page * page };
    (start, end)
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

/// One cache's record in this process's file, or none ([`RecordRef::NONE`]).
///
/// Invariant: a `RecordRef` is made only by [`record`], for a record of a
/// segment mapped by the publisher of the process whose token it holds;
/// that mapping stays while any cache is registered (it is unmapped only
/// by [`at_unload`] when none is, which also ends publishing for good, or
/// in a fork child, whose token differs). So a `RecordRef` whose token is
/// the caller's points to `RECORD_BYTES` writable bytes, 8-aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef {
    ptr: *mut u8,
    token: u64,
}

// SAFETY: the record is written only with atomic stores, by the thread
// making the cache's call (the caller's lock serializes them), wherever
// the cache's state travels.
unsafe impl Send for RecordRef {}

/// The counters and settings a record holds besides its state and serial.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// 0 fifo, 1 lru, 2 sieve.
    pub policy: u32,
    /// hits, misses, commits, duplicate_commits, evictions, peak_entries.
    pub counters: [u64; 6],
    /// Entries cached now.
    pub n_entries: u64,
    /// The maximum.
    pub max_entries: u64,
    /// `malloc_usable_size` of the tables cached now, summed.
    pub table_bytes: u64,
    /// The size advisor's part; `None` when it is off (stored as zeros).
    pub advisor: Option<AdvisorPart>,
    /// True when the cache sizes itself.
    pub auto: bool,
    /// Tables given back idle.
    pub idle_releases: u64,
}

/// What the size advisor says, as a record holds it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdvisorPart {
    /// Finds the advisor saw since it started.
    pub finds: u64,
    /// The size it would set, 0 for none.
    pub recommended: u32,
    /// How many of `pairs` are valid.
    pub count: u32,
    /// (size, predicted table reads), ascending sizes.
    pub pairs: [(u32, u64); MAX_PREDICTIONS],
}

impl RecordRef {
    /// No record: nothing is written.
    pub const NONE: RecordRef = RecordRef {
        ptr: null_mut(),
        token: 0,
    };

    /// True when the cache has a record (in this process's file or, in a
    /// fork child until it calls [`record`] again, in its parent's).
    #[inline(always)]
    pub fn is_some(self) -> bool {
        !self.ptr.is_null()
    }

    /// True when the record is in the calling process's own file (never
    /// for [`RecordRef::NONE`]: a token is never 0).
    #[inline(always)]
    pub fn is_mine(self) -> bool {
        self.token == process_token()
    }

    /// The 8-byte word at `at`. Only for a record that [`is_mine`](Self::is_mine).
    #[inline(always)]
    fn word(self, at: usize) -> &'static AtomicU64 {
        debug_assert!(at % 8 == 0 && at + 8 <= RECORD_BYTES && self.is_mine());
        // SAFETY: the record is the caller's process's (checked by every
        // caller), so mapped, writable and 8-aligned (the type's
        // invariant); `at` is a word of it.
        unsafe { AtomicU64::from_ptr(self.ptr.add(at).cast()) }
    }

    /// The 4-byte word at `at` (see [`word`](Self::word)).
    #[inline(always)]
    fn half(self, at: usize) -> &'static AtomicU32 {
        debug_assert!(at % 4 == 0 && at + 4 <= RECORD_BYTES && self.is_mine());
        // SAFETY: as in `word`.
        unsafe { AtomicU32::from_ptr(self.ptr.add(at).cast()) }
    }

    /// Stores `value` at `at` (an offset of [`record`]) if the record is
    /// this process's; false (nothing written) otherwise.
    #[inline(always)]
    pub fn store(self, at: usize, value: u64) -> bool {
        if !self.is_mine() {
            return false;
        }
        self.word(at).store(value, Ordering::Relaxed);
        true
    }

    /// Stores the advisor's part (zeros when it is off). Only for a record
    /// that [`is_mine`](Self::is_mine). The pairs go before their count.
    #[inline]
    fn put_advisor(self, a: Option<&AdvisorPart>) {
        let Some(a) = a else {
            self.word(record::ADVISOR_FINDS).store(0, Ordering::Relaxed);
            // `recommended` and `predictions`, one word.
            self.word(record::RECOMMENDED).store(0, Ordering::Relaxed);
            return;
        };
        let count = (a.count as usize).min(MAX_PREDICTIONS);
        for (k, &(size, misses)) in a.pairs[..count].iter().enumerate() {
            self.half(record::PAIRS + 16 * k).store(size, Ordering::Relaxed);
            self.word(record::PAIRS + 16 * k + 8)
                .store(misses, Ordering::Relaxed);
        }
        self.word(record::ADVISOR_FINDS).store(a.finds, Ordering::Relaxed);
        self.half(record::RECOMMENDED)
            .store(a.recommended, Ordering::Relaxed);
        self.half(record::PREDICTIONS)
            .store(count as u32, Ordering::Relaxed);
    }

    /// Stores everything but the state and the serial; false (nothing
    /// written) if the record is not this process's.
    #[inline]
    pub fn store_all(self, s: &Snapshot) -> bool {
        if !self.is_mine() {
            return false;
        }
        self.half(record::POLICY).store(s.policy, Ordering::Relaxed);
        for (k, &c) in s.counters.iter().enumerate() {
            self.word(record::HITS + 8 * k).store(c, Ordering::Relaxed);
        }
        self.word(record::N_ENTRIES).store(s.n_entries, Ordering::Relaxed);
        self.word(record::MAX_ENTRIES)
            .store(s.max_entries, Ordering::Relaxed);
        self.word(record::TABLE_BYTES)
            .store(s.table_bytes, Ordering::Relaxed);
        self.word(record::IDLE_RELEASES)
            .store(s.idle_releases, Ordering::Relaxed);
        self.half(record::SIZING)
            .store(layout::sizing_word(s.auto), Ordering::Relaxed);
        self.put_advisor(s.advisor.as_ref());
        true
    }

    /// A new cache: the record cleared, filled, then set live.
    pub fn set_live(self, serial: u64, s: &Snapshot) -> bool {
        if !self.is_mine() {
            return false;
        }
        self.half(record::STATE)
            .store(layout::STATE_FREE, Ordering::Release);
        for at in (8..RECORD_BYTES).step_by(8) {
            self.word(at).store(0, Ordering::Relaxed);
        }
        self.word(record::SERIAL).store(serial, Ordering::Relaxed);
        self.store_all(s);
        self.half(record::STATE)
            .store(layout::STATE_LIVE, Ordering::Release);
        true
    }

    /// The cache is gone: the record is free.
    pub fn set_free(self) -> bool {
        if !self.is_mine() {
            return false;
        }
        self.half(record::STATE)
            .store(layout::STATE_FREE, Ordering::Release);
        true
    }
}

/// A file's (or directory's) identity.
type FileId = (u64, u64);

fn id_of(st: &libc::stat) -> FileId {
    (st.st_dev, st.st_ino)
}

fn fstat(fd: c_int) -> io::Result<libc::stat> {
    // SAFETY: an all-zero stat is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is writable; a bad fd is reported, not undefined.
    if unsafe { libc::fstat(fd, &mut st) } == 0 {
        Ok(st)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `lstat` of `name` in directory `dir`.
fn lstat_at(dir: c_int, name: &CString) -> io::Result<libc::stat> {
    // SAFETY: as in `fstat`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated name and a writable `st`.
    if unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) } == 0 {
        Ok(st)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Closes `fd` only if it is still the file `id`: in a fork child the
/// number may have been closed and reused by the program since.
fn close_if_still(fd: c_int, id: FileId) {
    if fd >= 0 && fstat(fd).is_ok_and(|st| id_of(&st) == id) {
        // SAFETY: our descriptor (checked just above).
        unsafe { libc::close(fd) };
    }
}

/// A descriptor this module opened, closed when dropped unless kept.
struct Fd(c_int);

impl Fd {
    fn keep(self) -> c_int {
        let fd = self.0;
        std::mem::forget(self);
        fd
    }
}

impl Drop for Fd {
    fn drop(&mut self) {
        // SAFETY: a descriptor this module opened and still owns.
        unsafe { libc::close(self.0) };
    }
}

fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Write-locks the whole of `fd` (POSIX record lock) without waiting.
fn lock_whole(fd: c_int, cmd: c_int) -> io::Result<()> {
    // SAFETY: an all-zero flock is valid; the fields that matter are set.
    let mut l: libc::flock = unsafe { std::mem::zeroed() };
    l.l_type = libc::F_WRLCK as _;
    l.l_whence = libc::SEEK_SET as _;
    // SAFETY: a valid flock for this command.
    if unsafe { libc::fcntl(fd, cmd, &mut l) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Where the file goes: the directory's parent, the directory's name in
/// it, and the directory's path (for messages).
fn place(runtime_dir: Option<&OsString>) -> (Vec<u8>, Vec<u8>, String) {
    let (parent, name) = match runtime_dir {
        Some(d) => (d.as_bytes().to_vec(), b"qed-l2-cache".to_vec()),
        None => {
            // SAFETY: geteuid has no preconditions.
            let uid = unsafe { libc::geteuid() };
            (b"/tmp".to_vec(), format!("qed-l2-cache-{uid}").into_bytes())
        }
    };
    let mut path = parent.clone();
    if path.last() != Some(&b'/') {
        path.push(b'/');
    }
    path.extend_from_slice(&name);
    let shown = OsString::from_vec(path).to_string_lossy().into_owned();
    (parent, name, shown)
}

/// Opens the directory, making it (0700) if missing, and checks it without
/// following links; the message says why it is refused.
fn open_dir(parent: &[u8], name: &[u8], shown: &str) -> Result<(Fd, FileId), String> {
    let fail = |why: String| format!("qed-l2-cache: not publishing statistics: {shown}: {why}");
    let parent_c = cstring(parent).map_err(|e| fail(e.to_string()))?;
    let name_c = cstring(name).map_err(|e| fail(e.to_string()))?;
    // SAFETY: a NUL-terminated path. (The parent is trusted: the user's
    // runtime directory or /tmp; links are followed there.)
    let pfd = unsafe {
        libc::open(
            parent_c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if pfd < 0 {
        return Err(fail(format!(
            "cannot open its parent: {}",
            io::Error::last_os_error()
        )));
    }
    let pfd = Fd(pfd);
    // SAFETY: a NUL-terminated name in an open directory.
    let made = unsafe { libc::mkdirat(pfd.0, name_c.as_ptr(), 0o700) } == 0;
    if !made {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(fail(format!("cannot create it: {e}")));
        }
    }
    let st = lstat_at(pfd.0, &name_c).map_err(|e| fail(e.to_string()))?;
    let kind = st.st_mode & libc::S_IFMT;
    if kind == libc::S_IFLNK {
        return Err(fail("is a symbolic link".into()));
    }
    if kind != libc::S_IFDIR {
        return Err(fail("is not a directory".into()));
    }
    // SAFETY: a NUL-terminated name in an open directory.
    let dfd = unsafe {
        libc::openat(
            pfd.0,
            name_c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if dfd < 0 {
        return Err(fail(format!("cannot open it: {}", io::Error::last_os_error())));
    }
    let dfd = Fd(dfd);
    let st2 = fstat(dfd.0).map_err(|e| fail(e.to_string()))?;
    if id_of(&st2) != id_of(&st) {
        return Err(fail("replaced while it was being checked".into()));
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if st2.st_uid != me {
        return Err(fail(format!(
            "owned by uid {}, not by this user (uid {me})",
            st2.st_uid
        )));
    }
    if made {
        // Exactly 0700 whatever the umask left.
        // SAFETY: our own directory, open.
        unsafe { libc::fchmod(dfd.0, 0o700) };
    } else if st2.st_mode & 0o077 != 0 {
        return Err(fail(format!(
            "mode {:04o}: group or others have access (it must be 0700)",
            st2.st_mode & 0o7777
        )));
    }
    Ok((dfd, id_of(&st2)))
}

/// What [`probe`] found under a name that was taken.
#[derive(Debug, PartialEq, Eq)]
enum Probe {
    /// Its writer was dead (no lock): removed.
    Removed,
    /// Gone meanwhile, or replaced: try the name again.
    Gone,
    /// Its writer lives (or it is not a file of ours): pass the name over.
    Alive,
}

/// Tests the file `name` in `dir`: a dead writer's is removed. To remove
/// it the prober must hold the file's lock itself (an open file
/// description lock, which conflicts with the writers' POSIX locks and
/// with other probers'; a POSIX lock where the kernel lacks those), so two
/// probers never both remove a name, and a writer's file is always locked
/// while it is under its name.
fn probe(dir: c_int, name: &CString) -> Probe {
    // SAFETY: a NUL-terminated name in an open directory.
    let fd = unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return match io::Error::last_os_error().raw_os_error() {
            Some(libc::ENOENT) => Probe::Gone,
            _ => Probe::Alive,
        };
    }
    let fd = Fd(fd);
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let Ok(st) = fstat(fd.0) else {
        return Probe::Alive;
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_uid != me {
        return Probe::Alive;
    }
    let locked = match lock_whole(fd.0, libc::F_OFD_SETLK) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => lock_whole(fd.0, libc::F_SETLK),
        r => r,
    };
    if locked.is_err() {
        return Probe::Alive;
    }
    match lstat_at(dir, name) {
        Ok(now) if id_of(&now) == id_of(&st) => {
            // SAFETY: a NUL-terminated name in an open directory.
            unsafe { libc::unlinkat(dir, name.as_ptr(), 0) };
            Probe::Removed
        }
        _ => Probe::Gone,
    }
}

/// The mappings of one publisher's file.
struct Open {
    /// The process token of the process that made the file.
    token: u64,
    /// The file (its POSIX lock held), -1 once closed at unload.
    fd: c_int,
    /// The directory, -1 once closed.
    dir: c_int,
    file_id: FileId,
    dir_id: FileId,
    /// The file's name in the directory.
    name: CString,
    /// The file's path, for messages.
    shown: String,
    /// Segment `s`'s mapping: address and length (null: not mapped).
    segs: [(*mut u8, usize); SEGMENTS],
    /// Segments mapped: 0 to `mapped - 1`.
    mapped: usize,
    /// Growing failed once: no more segments.
    stuck: bool,
    /// A line said why a cache is not published (one per file).
    reported: bool,
}

/// The publisher of this process (or, in a fork child until its first
/// call that needs a record, of its parent).
enum Publisher {
    /// No file yet.
    None,
    /// Publishing (boxed: the segment table is large).
    Open(Box<Open>),
    /// Refused (reported once): nothing is published, by this process or
    /// its fork children.
    Refused,
    /// Unloaded: nothing is published any more.
    Closed,
}

// SAFETY: the mappings and descriptors are used only under the lock.
unsafe impl Send for Publisher {}

static PUBLISHER: Locked<Publisher> = Locked::new(Publisher::None);

impl Open {
    /// Makes the file in the directory `runtime_dir` says (see the module
    /// doc), under a temporary name first, locks it, writes its header,
    /// and links it under `PID` (or `PID.N`).
    fn create(runtime_dir: Option<&OsString>, token: u64) -> Result<Open, String> {
        let (parent, dirname, shown_dir) = place(runtime_dir);
        let (dir, dir_id) = open_dir(&parent, &dirname, &shown_dir)?;
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() } as u32;
        let fail = |what: &str, e: io::Error| {
            format!("qed-l2-cache: not publishing statistics: {shown_dir}/{pid}: {what}: {e}")
        };
        let (tmp, fd) = Self::create_temporary(dir.0, pid, token).map_err(|e| fail("cannot create", e))?;
        let unlink_tmp = || {
            // SAFETY: a NUL-terminated name in our open directory.
            unsafe { libc::unlinkat(dir.0, tmp.as_ptr(), 0) };
        };
        let mut open = Open {
            token,
            fd: fd.keep(),
            dir: dir.0,
            file_id: (0, 0),
            dir_id,
            name: tmp.clone(),
            shown: String::new(),
            segs: [(null_mut(), 0); SEGMENTS],
            mapped: 0,
            stuck: false,
            reported: false,
        };
        let ready = fstat(open.fd)
            .map(|st| open.file_id = id_of(&st))
            .and_then(|()| lock_whole(open.fd, libc::F_SETLK))
            .map_err(|e| fail("cannot lock", e))
            .and_then(|()| {
                open.map_next()
                    .and_then(|()| open.reserve(0, HEADER_BYTES))
                    .map_err(|e| fail("cannot size", e))
            });
        if let Err(msg) = ready {
            unlink_tmp();
            open.unmap_and_close();
            return Err(msg);
        }
        open.write_header(pid);
        match Self::link(dir.0, &tmp, pid) {
            Ok(name) => {
                unlink_tmp();
                open.shown = format!("{shown_dir}/{}", name.to_string_lossy());
                open.name = name;
                open.dir = dir.keep();
                Ok(open)
            }
            Err(e) => {
                unlink_tmp();
                open.unmap_and_close();
                Err(fail("cannot name the file", e))
            }
        }
    }

    /// A new file, 0600, under a name of its own (`.PID.TOKEN.N.tmp`).
    fn create_temporary(dir: c_int, pid: u32, token: u64) -> io::Result<(CString, Fd)> {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a writable timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        let mut last = io::Error::from(io::ErrorKind::AlreadyExists);
        for attempt in 0..16u64 {
            let nonce = (ts.tv_nsec as u64) ^ (attempt << 32);
            let name = cstring(format!(".{pid}.{token:x}.{nonce:x}.tmp").as_bytes())?;
            // SAFETY: a NUL-terminated name in an open directory.
            let fd = unsafe {
                libc::openat(
                    dir,
                    name.as_ptr(),
                    libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                    0o600 as libc::c_uint,
                )
            };
            if fd >= 0 {
                // Exactly 0600 whatever the umask left.
                // SAFETY: our own file, open.
                unsafe { libc::fchmod(fd, 0o600) };
                return Ok((name, Fd(fd)));
            }
            last = io::Error::last_os_error();
            if last.raw_os_error() != Some(libc::EEXIST) {
                break;
            }
        }
        Err(last)
    }

    /// Links `tmp` as `PID`, else the first free `PID.N`, removing dead
    /// writers' files on the way.
    fn link(dir: c_int, tmp: &CString, pid: u32) -> io::Result<CString> {
        let mut n = 0u32;
        let mut retries = 0;
        while n <= MAX_NAMES {
            let name = cstring(
                if n == 0 {
                    pid.to_string()
                } else {
                    format!("{pid}.{n}")
                }
                .as_bytes(),
            )?;
            // SAFETY: NUL-terminated names in an open directory.
            if unsafe { libc::linkat(dir, tmp.as_ptr(), dir, name.as_ptr(), 0) } == 0 {
                return Ok(name);
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EEXIST) {
                return Err(e);
            }
            match probe(dir, &name) {
                Probe::Removed | Probe::Gone if retries < 8 => retries += 1,
                _ => {
                    n += 1;
                    retries = 0;
                }
            }
        }
        Err(io::Error::other(format!(
            "{pid} to {pid}.{MAX_NAMES} are all taken by live writers"
        )))
    }

    /// The header's 8-byte word at `at`.
    fn header64(&self, at: usize) -> &AtomicU64 {
        debug_assert!(self.mapped > 0 && at % 8 == 0 && at + 8 <= HEADER_BYTES);
        // SAFETY: segment 0 is mapped (the file is made with it) and starts
        // with the header; the mapping is page-aligned, `at` a word of it.
        unsafe { AtomicU64::from_ptr(self.segs[0].0.add(at).cast()) }
    }

    /// The header's 4-byte word at `at`.
    fn header32(&self, at: usize) -> &AtomicU32 {
        debug_assert!(self.mapped > 0 && at % 4 == 0 && at + 4 <= HEADER_BYTES);
        // SAFETY: as in `header64`.
        unsafe { AtomicU32::from_ptr(self.segs[0].0.add(at).cast()) }
    }

    /// The header, written before the file gets its name.
    fn write_header(&self, pid: u32) {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a writable timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
        let now = (ts.tv_sec as u64)
            .wrapping_mul(1_000_000_000)
            .wrapping_add(ts.tv_nsec as u64);
        let relaxed = Ordering::Relaxed;
        self.header64(0).store(u64::from_ne_bytes(layout::MAGIC), relaxed);
        self.header32(header::VERSION).store(layout::VERSION, relaxed);
        self.header32(header::HEADER_BYTES)
            .store(HEADER_BYTES as u32, relaxed);
        self.header32(header::RECORD_BYTES)
            .store(RECORD_BYTES as u32, relaxed);
        self.header32(header::BYTE_ORDER)
            .store(layout::BYTE_ORDER, relaxed);
        self.header32(header::PID).store(pid, relaxed);
        self.header64(header::START_UNIX_NS).store(now, relaxed);
        self.raise_records();
    }

    /// Sets the header's `records` to what the mapped segments cover.
    fn raise_records(&self) {
        let covered = (FIRST_SEGMENT << self.mapped) - FIRST_SEGMENT;
        self.header32(header::RECORDS)
            .store(covered.min(u32::MAX as usize) as u32, Ordering::Release);
    }

    /// Extends the file over the next segment (sparse: no block is
    /// allocated yet, see [`Open::reserve`]) and maps it.
    fn map_next(&mut self) -> io::Result<()> {
        let s = self.mapped;
        if s >= SEGMENTS {
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        let (start, end) = segment_range(s, page_size());
        // SAFETY: our open file; it only grows (segments are mapped in
        // order, each ending past the one before).
        if unsafe { libc::ftruncate(self.fd, end as libc::off_t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new shared mapping of our file's range, checked below.
        let p = unsafe {
            libc::mmap(
                null_mut(),
                end - start,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.fd,
                start as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        self.segs[s] = (p.cast(), end - start);
        self.mapped = s + 1;
        if s > 0 {
            self.raise_records();
        }
        Ok(())
    }

    /// Allocates the file's blocks under `[from, from + len)`, inside the
    /// file, before anything is stored there: a store into a mapped hole
    /// that the file system cannot fill (full, quota) raises SIGBUS, an
    /// allocation that fails is only an error. Done for the header at
    /// creation and for each record when a cache gets it, so the file
    /// stays sparse where no cache is (a process whose caches have high
    /// slot numbers does not pay for the records below them). Where the
    /// file system cannot allocate ahead (`EOPNOTSUPP`), stores take
    /// their chance, as in any sparse file.
    fn reserve(&self, from: usize, len: usize) -> io::Result<()> {
        // SAFETY: our open file; mode 0 inside the file keeps its size.
        if unsafe { libc::fallocate(self.fd, 0, from as libc::off_t, len as libc::off_t) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => Ok(()),
            _ => Err(e),
        }
    }

    /// Says once per file why a cache is not published.
    fn report(&mut self, what: std::fmt::Arguments<'_>) {
        if !self.reported {
            self.reported = true;
            write_line(format_args!(
                "qed-l2-cache: statistics file {}: {what}",
                self.shown
            ));
        }
    }

    /// The record of `index`, growing the file to cover it and allocating
    /// the record's blocks.
    fn record(&mut self, index: usize) -> Option<RecordRef> {
        let (s, first) = segment_of(index);
        if self.fd < 0 {
            return None;
        }
        while self.mapped <= s {
            if self.stuck {
                return None;
            }
            if let Err(e) = self.map_next() {
                self.stuck = true;
                let (want, have) = (
                    (FIRST_SEGMENT << (self.mapped + 1)) - FIRST_SEGMENT,
                    (FIRST_SEGMENT << self.mapped) - FIRST_SEGMENT,
                );
                self.report(format_args!(
                    "cannot grow it to {want} records ({e}); caches numbered above {have} are not published"
                ));
                return None;
            }
        }
        if let Err(e) = self.reserve(HEADER_BYTES + index * RECORD_BYTES, RECORD_BYTES) {
            self.report(format_args!(
                "no room for the record of cache slot {} ({e}); such caches are not published",
                index + 1
            ));
            return None;
        }
        let (start, _) = segment_range(s, page_size());
        let at = HEADER_BYTES + index * RECORD_BYTES - start;
        debug_assert!(index >= first && at + RECORD_BYTES <= self.segs[s].1);
        Some(RecordRef {
            // SAFETY: `at` is inside segment `s`'s mapping (see above).
            ptr: unsafe { self.segs[s].0.add(at) },
            token: self.token,
        })
    }

    /// The owner, at exit or unload: the file is removed (if its name is
    /// still this file) and closed, which drops the lock.
    fn remove_and_close(&mut self) {
        if self.fd < 0 {
            return;
        }
        if lstat_at(self.dir, &self.name).is_ok_and(|st| id_of(&st) == self.file_id) {
            // SAFETY: a NUL-terminated name in our open directory.
            unsafe { libc::unlinkat(self.dir, self.name.as_ptr(), 0) };
        }
        // SAFETY: our descriptors, closed once (set to -1 below).
        unsafe {
            libc::close(self.fd);
            libc::close(self.dir);
        }
        self.fd = -1;
        self.dir = -1;
    }

    fn unmap(&mut self) {
        for seg in &mut self.segs[..self.mapped] {
            // SAFETY: a mapping this publisher made; no cache uses it any
            // more (see the callers).
            unsafe { libc::munmap(seg.0.cast(), seg.1) };
            *seg = (null_mut(), 0);
        }
        self.mapped = 0;
    }

    /// Undoes a creation that failed (nothing was published).
    fn unmap_and_close(&mut self) {
        self.unmap();
        // SAFETY: our descriptor, not yet published.
        unsafe { libc::close(self.fd) };
        self.fd = -1;
    }

    /// In a fork child: the parent's publisher is set aside. Its mappings
    /// go (no cache of the child writes into them: their tokens are the
    /// parent's) and so do the inherited descriptors, if they are still
    /// ours (closing them drops no lock: the parent's is its own).
    fn abandon(mut self) {
        self.unmap();
        close_if_still(self.fd, self.file_id);
        close_if_still(self.dir, self.dir_id);
    }
}

/// Sets aside a publisher inherited from a parent: abandoned if whole,
/// forgotten if a parent's thread was changing it at the fork (`stolen`).
fn set_aside(p: &mut Publisher, stolen: bool) {
    if let Publisher::Open(o) = std::mem::replace(p, Publisher::None) {
        if stolen {
            std::mem::forget(o);
        } else {
            o.abandon();
        }
    }
}

/// The record for the cache numbered `number` in this process's file,
/// which is made at the process's first need (a fork child's at its first
/// call on a cache); `None` when statistics are off, refused or over.
pub fn record(number: u32) -> Option<RecordRef> {
    let cfg = config::get();
    if !cfg.stats || number == 0 {
        return None;
    }
    let me = process_token();
    PUBLISHER.with(|p, stolen| {
        if matches!(p, Publisher::Open(o) if o.token != me) {
            set_aside(p, stolen);
        }
        if matches!(p, Publisher::None) {
            *p = match Open::create(cfg.runtime_dir.as_ref(), me) {
                Ok(o) => Publisher::Open(Box::new(o)),
                Err(msg) => {
                    write_line(format_args!("{msg}"));
                    Publisher::Refused
                }
            };
        }
        match p {
            Publisher::Open(o) => o.record(number as usize - 1),
            _ => None,
        }
    })
}

/// At exit or unload: the owner removes its file and closes it; a fork
/// child leaves its parent's alone. The mappings go when `no_caches`
/// says no cache is left (asked under the publisher's lock, so no cache
/// can get a record meanwhile); nothing is published afterwards.
pub fn at_unload(no_caches: impl FnOnce() -> bool) {
    let me = process_token();
    PUBLISHER.with(|p, stolen| match p {
        Publisher::Open(o) if o.token == me => {
            o.remove_and_close();
            if no_caches() {
                o.unmap();
                *p = Publisher::Closed;
            }
        }
        _ => {
            set_aside(p, stolen);
            *p = Publisher::Closed;
        }
    })
}

// Files, mappings, locks and forks: not under Miri.
#[cfg(all(test, not(miri)))]
mod tests {
    use super::*;
    use crate::stats_layout::{parse_header, parse_record, records_covered};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::PathBuf;

    /// A fresh directory standing in for XDG_RUNTIME_DIR.
    fn runtime_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("qed-l2-cache-publish-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn os(d: &std::path::Path) -> OsString {
        d.as_os_str().to_owned()
    }

    #[test]
    fn segments_cover_every_index_once() {
        assert_eq!(segment_of(0), (0, 0));
        assert_eq!(segment_of(63), (0, 0));
        assert_eq!(segment_of(64), (1, 64));
        assert_eq!(segment_of(64 + 127), (1, 64));
        assert_eq!(segment_of(64 + 128), (2, 192));
        assert_eq!(segment_of(u32::MAX as usize - 1).0, SEGMENTS - 1);
        let page = 4096;
        assert_eq!(segment_range(0, page), (0, HEADER_BYTES + 64 * RECORD_BYTES));
        let (start, end) = segment_range(1, page);
        assert_eq!(start % page, 0);
        assert!(start <= HEADER_BYTES + 64 * RECORD_BYTES);
        assert_eq!(end, HEADER_BYTES + 192 * RECORD_BYTES);
    }

    #[test]
    fn a_file_is_made_locked_named_by_pid_and_grows_by_segments() {
        let d = runtime_dir("grow");
        let mut o = Open::create(Some(&os(&d)), process_token()).unwrap();
        let dir = d.join("qed-l2-cache");
        let file = dir.join(std::process::id().to_string());
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o7777,
            0o700
        );
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o7777,
            0o600
        );
        // Only the file: the temporary name is gone.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        let bytes = std::fs::read(&file).unwrap();
        let h = parse_header(&bytes).unwrap();
        assert_eq!((h.pid, h.records), (std::process::id(), 64));
        assert!(h.start_unix_ns > 1_600_000_000 * 1_000_000_000);

        let r = o.record(3).unwrap();
        let snap = Snapshot {
            policy: 2,
            counters: [1, 2, 3, 4, 5, 6],
            n_entries: 7,
            max_entries: 8,
            table_bytes: 9,
            advisor: Some(AdvisorPart {
                finds: 10,
                recommended: 11,
                count: 2,
                pairs: [(4, 40), (8, 30), (0, 0), (0, 0), (0, 0), (0, 0), (0, 0), (0, 0)],
            }),
            auto: true,
            idle_releases: 12,
        };
        assert!(r.set_live(77, &snap));
        // Record 200 is in segment 2: the file grows over segments 1 and 2.
        let far = o.record(200).unwrap();
        assert!(far.set_live(78, &Snapshot::default()));
        assert!(far.store(record::HITS, 5));
        let bytes = std::fs::read(&file).unwrap();
        let h = parse_header(&bytes).unwrap();
        assert_eq!(h.records, 64 + 128 + 256);
        assert_eq!(records_covered(bytes.len(), h.records), h.records as usize);
        // Sparse: only the header's and the two records' blocks are
        // allocated, not the 448 records' (114 KiB).
        let meta = std::fs::metadata(&file).unwrap();
        assert!(
            meta.blocks() * 512 <= 32 * 1024,
            "{} of {} bytes allocated",
            meta.blocks() * 512,
            meta.len()
        );
        let at = |i: usize| &bytes[HEADER_BYTES + i * RECORD_BYTES..][..RECORD_BYTES];
        let rec = parse_record(3, at(3)).unwrap().unwrap();
        assert_eq!(rec.serial, 77);
        assert_eq!(rec.policy, 2);
        assert_eq!(
            [
                rec.hits,
                rec.misses,
                rec.commits,
                rec.duplicate_commits,
                rec.evictions,
                rec.peak_entries
            ],
            [1, 2, 3, 4, 5, 6]
        );
        assert_eq!((rec.n_entries, rec.max_entries, rec.table_bytes), (7, 8, 9));
        assert_eq!((rec.advisor_finds, rec.recommended), (10, 11));
        assert_eq!((rec.auto, rec.idle_releases), (Some(true), Some(12)));
        assert_eq!(rec.predictions.len(), 2);
        assert_eq!((rec.predictions[1].size, rec.predictions[1].misses), (8, 30));
        let rec = parse_record(200, at(200)).unwrap().unwrap();
        assert_eq!((rec.serial, rec.hits), (78, 5));
        assert_eq!(parse_record(4, at(4)), Ok(None));
        assert!(r.set_free());
        let bytes = std::fs::read(&file).unwrap();
        assert_eq!(parse_record(3, at_of(&bytes, 3)), Ok(None));

        o.remove_and_close();
        assert!(!file.exists(), "removed at the end");
        o.unmap();
        let _ = std::fs::remove_dir_all(&d);
    }

    fn at_of(bytes: &[u8], i: usize) -> &[u8] {
        &bytes[HEADER_BYTES + i * RECORD_BYTES..][..RECORD_BYTES]
    }

    #[test]
    fn a_record_of_another_token_is_never_written() {
        let d = runtime_dir("token");
        let mut o = Open::create(Some(&os(&d)), process_token()).unwrap();
        let mine = o.record(0).unwrap();
        let theirs = RecordRef {
            token: process_token() ^ 1,
            ..mine
        };
        assert!(mine.set_live(1, &Snapshot::default()));
        assert!(!theirs.store(record::HITS, 99));
        assert!(!theirs.store_all(&Snapshot::default()));
        assert!(!theirs.set_free());
        assert!(!RecordRef::NONE.store(record::HITS, 1) && !RecordRef::NONE.is_some());
        let file = d.join("qed-l2-cache").join(std::process::id().to_string());
        let bytes = std::fs::read(file).unwrap();
        let rec = parse_record(0, at_of(&bytes, 0)).unwrap().unwrap();
        assert_eq!(rec.hits, 0);
        o.remove_and_close();
        o.unmap();
        let _ = std::fs::remove_dir_all(&d);
    }

    fn pipe() -> (c_int, c_int) {
        let mut fds = [0; 2];
        // SAFETY: a writable array of two descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        (fds[0], fds[1])
    }

    #[test]
    fn a_dead_writers_file_is_replaced_and_a_live_ones_passed_over() {
        let d = runtime_dir("names");
        let dir = d.join("qed-l2-cache");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let pid = std::process::id();
        let own = dir.join(pid.to_string());
        // A dead writer's file (no lock): replaced.
        std::fs::write(&own, b"stale").unwrap();
        let mut a = Open::create(Some(&os(&d)), process_token()).unwrap();
        assert_eq!(a.name.to_bytes(), pid.to_string().as_bytes());
        assert!(std::fs::read(&own).unwrap().starts_with(&layout::MAGIC));
        a.remove_and_close();
        a.unmap();
        assert!(!own.exists());
        // A live writer's (a child holding the lock on `PID`, as a process
        // of another pid namespace with our pid would): passed over.
        std::fs::write(&own, b"live").unwrap();
        let path = CString::new(own.as_os_str().as_bytes()).unwrap();
        let ((up_rd, up_wr), (down_rd, down_wr)) = (pipe(), pipe());
        // SAFETY: the child only calls async-signal-safe functions.
        let child = unsafe { libc::fork() };
        assert!(child >= 0);
        if child == 0 {
            // SAFETY: async-signal-safe calls, then _exit.
            unsafe {
                let fd = libc::open(path.as_ptr(), libc::O_RDWR);
                let ok = fd >= 0 && lock_whole(fd, libc::F_SETLK).is_ok();
                libc::write(up_wr, [ok as u8].as_ptr().cast(), 1);
                let mut b = 0u8;
                libc::read(down_rd, (&mut b as *mut u8).cast(), 1);
                libc::_exit(0);
            }
        }
        let mut b = 0u8;
        // SAFETY: reads one byte into `b`.
        assert_eq!(unsafe { libc::read(up_rd, (&mut b as *mut u8).cast(), 1) }, 1);
        assert_eq!(b, 1, "the child holds the lock");
        let mut c = Open::create(Some(&os(&d)), process_token()).unwrap();
        assert_eq!(c.name.to_bytes(), format!("{pid}.1").as_bytes());
        assert_eq!(
            std::fs::read(&own).unwrap(),
            b"live",
            "a live writer's file is left alone"
        );
        // SAFETY: wakes and reaps our child, closes the pipes.
        unsafe {
            libc::write(down_wr, [0u8].as_ptr().cast(), 1);
            libc::waitpid(child, null_mut(), 0);
            for fd in [up_rd, up_wr, down_rd, down_wr] {
                libc::close(fd);
            }
        }
        c.remove_and_close();
        c.unmap();
        assert!(own.exists() && !dir.join(format!("{pid}.1")).exists());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn an_unsafe_directory_is_refused_with_the_reason() {
        let d = runtime_dir("refuse");
        // A symbolic link.
        let target = d.join("elsewhere");
        std::fs::create_dir(&target).unwrap();
        std::os::unix::fs::symlink(&target, d.join("qed-l2-cache")).unwrap();
        let msg = Open::create(Some(&os(&d)), process_token()).err().unwrap();
        assert!(msg.starts_with("qed-l2-cache: "), "{msg}");
        assert!(msg.contains("-refuse-"), "{msg}");
        assert!(msg.ends_with("/qed-l2-cache: is a symbolic link"), "{msg}");
        assert_eq!(
            std::fs::read_dir(&target).unwrap().count(),
            0,
            "nothing made through the link"
        );
        std::fs::remove_file(d.join("qed-l2-cache")).unwrap();
        // Group or others have access.
        std::fs::create_dir(d.join("qed-l2-cache")).unwrap();
        std::fs::set_permissions(d.join("qed-l2-cache"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let msg = Open::create(Some(&os(&d)), process_token()).err().unwrap();
        assert!(msg.contains("mode 0755: group or others have access"), "{msg}");
        // A plain file.
        std::fs::remove_dir(d.join("qed-l2-cache")).unwrap();
        std::fs::write(d.join("qed-l2-cache"), b"").unwrap();
        let msg = Open::create(Some(&os(&d)), process_token()).err().unwrap();
        assert!(msg.contains("is not a directory"), "{msg}");
        // Another user's (as root only: chown to nobody).
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            std::fs::remove_file(d.join("qed-l2-cache")).unwrap();
            std::fs::create_dir(d.join("qed-l2-cache")).unwrap();
            std::fs::set_permissions(d.join("qed-l2-cache"), std::fs::Permissions::from_mode(0o700)).unwrap();
            std::os::unix::fs::chown(d.join("qed-l2-cache"), Some(65534), Some(65534)).unwrap();
            let msg = Open::create(Some(&os(&d)), process_token()).err().unwrap();
            assert!(
                msg.contains("owned by uid 65534, not by this user (uid 0)"),
                "{msg}"
            );
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_new_directory_is_0700_whatever_the_umask() {
        let d = runtime_dir("umask");
        let mut o = Open::create(Some(&os(&d)), process_token()).unwrap();
        let meta = std::fs::metadata(d.join("qed-l2-cache")).unwrap();
        assert!(meta.is_dir());
        assert_eq!(meta.mode() & 0o7777, 0o700);
        // SAFETY: geteuid has no preconditions.
        assert_eq!(meta.uid(), unsafe { libc::geteuid() });
        o.remove_and_close();
        o.unmap();
        let _ = std::fs::remove_dir_all(&d);
    }
}
