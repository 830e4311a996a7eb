// SPDX-License-Identifier: LGPL-2.1-or-later
//! The reader against every kind of bad file, written in a scratch
//! directory; the same read+format path against 20,000 mutated files (the
//! fuzz replay); and the JSON it prints, checked by a JSON syntax checker.

use crate::files::{self, Outcome};
use crate::output::{self, FileMeta, Tracker};
use crate::read::{self, Problem, Source};
use crate::stats_layout::{self as layout, Invalid};
use crate::testfile::{self, json_valid};
use std::ffi::CString;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A scratch directory (mode 0700), removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "qed-l2-cache-stat-{what}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir(&p).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o700)).unwrap();
        Scratch(p)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Holds a write lock on the whole file as a live writer does. An open
/// file description lock, because a test and the reader share a process:
/// F_GETLK does not report the process's own traditional locks, but it
/// reports an OFD lock held through another descriptor (fcntl(2)).
fn hold_lock(path: &Path) -> File {
    let f = fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    // SAFETY: all-zero bytes are a valid `flock` (integers).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    // SAFETY: the descriptor is open, `fl` is a valid flock.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
    assert_eq!(r, 0, "F_OFD_SETLK: {}", io::Error::last_os_error());
    f
}

fn skipped(o: Outcome) -> String {
    match o {
        Outcome::Skipped(m) => m,
        other => panic!("expected a skip, got {other:?}"),
    }
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

const REC1: usize = layout::HEADER_BYTES + layout::RECORD_BYTES;

#[test]
fn a_valid_file_of_a_live_writer_is_read() {
    let d = Scratch::new("valid");
    let p = d.write("4242", &testfile::typical(7));
    let _lock = hold_lock(&p);
    let Outcome::Read(s) = files::read_path(&p) else {
        panic!("not read")
    };
    assert_eq!(s.header.pid, 7);
    assert_eq!(s.header.records, 3);
    // Slot 1 is free; the live ones come in serial order.
    let serials: Vec<u64> = s.records.iter().map(|r| r.serial).collect();
    assert_eq!(serials, [1, 2]);
    assert_eq!(s.records[0], testfile::sample(2, 1));
    assert_eq!(s.records[1], testfile::sample(1, 2));
    assert!(p.exists());
}

#[test]
fn every_kind_of_bad_file_is_named_and_skipped() {
    let d = Scratch::new("bad");
    let good = testfile::typical(7);
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = good.clone();
        f(&mut b);
        b
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", Vec::new(), "truncated: 0 bytes, 64 needed"),
        (
            "truncated header",
            good[..40].to_vec(),
            "truncated: 40 bytes, 64 needed",
        ),
        ("bad magic", with(&|b| b[0] = b'X'), "bad magic"),
        (
            "version 2",
            with(&|b| put_u32(b, layout::header::VERSION, 2)),
            "layout version 2, this reader knows 1",
        ),
        (
            "byte order swapped",
            with(&|b| put_u32(b, layout::header::BYTE_ORDER, layout::BYTE_ORDER.swap_bytes())),
            "another byte order",
        ),
        (
            "record size",
            with(&|b| put_u32(b, layout::header::RECORD_BYTES, 128)),
            "records of 128",
        ),
        (
            "2^32-1 records in a short file",
            with(&|b| put_u32(b, layout::header::RECORDS, u32::MAX)),
            "claims 4294967295 records, but its 832 bytes hold 3",
        ),
        (
            "a count past the end",
            with(&|b| b.truncate(REC1 + 10)),
            "claims 3 records, but its 330 bytes hold 1",
        ),
        (
            "bad state",
            with(&|b| put_u32(b, REC1 + layout::record::STATE, 9)),
            "record 1: unknown state",
        ),
        (
            "bad policy",
            with(&|b| put_u32(b, REC1 + layout::record::POLICY, 3)),
            "record 1: unknown policy",
        ),
        (
            "bad prediction count",
            with(&|b| put_u32(b, REC1 + layout::record::PREDICTIONS, 9)),
            "record 1: more predictions than a record holds",
        ),
        (
            "huge prediction count",
            with(&|b| put_u32(b, REC1 + layout::record::PREDICTIONS, u32::MAX)),
            "record 1: more predictions",
        ),
    ];
    for (i, (what, bytes, message)) in cases.iter().enumerate() {
        let p = d.write(&format!("{}", 100 + i), bytes);
        let lock = hold_lock(&p);
        let m = skipped(files::read_path(&p));
        assert!(m.contains(message) && m.ends_with(": skipped"), "{what}: {m}");
        assert!(!m.contains("no process holds"), "{what}: {m}");
        drop(lock);
        // Without a writer: a file whose header is valid is stale and
        // removed; one whose header is not is refused and never removed
        // (it may be a file just created, or not a statistics file).
        let header_ok = layout::parse_header(bytes).is_ok();
        match files::read_path(&p) {
            Outcome::Stale(m) if header_ok => {
                assert!(m.ends_with("removed the stale file"), "{what}: {m}");
                assert!(!p.exists(), "{what}");
            }
            Outcome::Skipped(m) if !header_ok => {
                assert!(
                    m.contains(message) && m.contains("no process holds its lock"),
                    "{what}: {m}"
                );
                assert!(p.exists(), "{what}");
            }
            other => panic!("{what}: {other:?}"),
        }
    }
}

fn mkfifo(p: &Path) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    let r = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(r, 0, "mkfifo: {}", io::Error::last_os_error());
}

/// Runs `f` on another thread and fails if it takes more than 10 s (a
/// FIFO that blocked an open would hang the test otherwise).
fn within_10_s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(10)).expect("hung for 10 s")
}

#[test]
fn a_fifo_is_refused_without_blocking() {
    let d = Scratch::new("fifo");
    let p = d.0.join("4242");
    mkfifo(&p);
    let q = p.clone();
    let m = skipped(within_10_s(move || files::read_path(&q)));
    assert_eq!(m, "is a FIFO, not a statistics file: skipped");
    // Even if lstat said "file" (a FIFO swapped in after it), the open
    // does not block (O_NONBLOCK) and fstat refuses it.
    let q = p.clone();
    match within_10_s(move || files::open_untrusted(&q)) {
        Err(Outcome::Skipped(m)) => assert_eq!(m, "is a FIFO, not a statistics file: skipped"),
        other => panic!("{other:?}"),
    }
    assert!(p.exists(), "a FIFO is not removed");
}

#[test]
fn a_symbolic_link_is_refused_even_to_a_valid_file() {
    let d = Scratch::new("symlink");
    let target = d.write("real", &testfile::typical(7));
    let _lock = hold_lock(&target);
    let p = d.0.join("4242");
    std::os::unix::fs::symlink(&target, &p).unwrap();
    let m = skipped(files::read_path(&p));
    assert_eq!(m, "is a symbolic link, not a statistics file: skipped");
    match files::open_untrusted(&p) {
        Err(Outcome::Skipped(m)) => assert_eq!(m, "is a symbolic link, not a statistics file: skipped"),
        other => panic!("O_NOFOLLOW: {other:?}"),
    }
    assert!(p.exists() && target.exists());
}

#[test]
fn a_directory_or_a_device_is_refused() {
    let d = Scratch::new("dir");
    let p = d.0.join("4242");
    fs::create_dir(&p).unwrap();
    assert_eq!(
        skipped(files::read_path(&p)),
        "is a directory, not a statistics file: skipped"
    );
    match files::open_untrusted(&p) {
        Err(Outcome::Skipped(m)) => assert_eq!(m, "is a directory, not a statistics file: skipped"),
        other => panic!("{other:?}"),
    }
    let null = Path::new("/dev/null");
    assert_eq!(
        skipped(files::read_path(null)),
        "is a device, not a statistics file: skipped"
    );
    match files::open_untrusted(null) {
        Err(Outcome::Skipped(m)) => assert_eq!(m, "is a device, not a statistics file: skipped"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(files::read_path(&d.0.join("4243")), Outcome::Gone));
}

#[test]
fn the_file_of_a_dead_writer_is_removed_only_if_it_is_ours() {
    let d = Scratch::new("dead");
    let p = d.write("4242", &testfile::typical(7));
    match files::read_path(&p) {
        Outcome::Stale(m) => assert_eq!(
            m,
            "no process holds its lock (its writer is gone): removed the stale file"
        ),
        other => panic!("{other:?}"),
    }
    assert!(!p.exists());
    // Someone else's stale file stays (only root can make one here).
    if files::euid() == 0 {
        let p = d.write("4243", &testfile::typical(7));
        let c = CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: `c` is a valid path.
        assert_eq!(unsafe { libc::chown(c.as_ptr(), 12345, 12345) }, 0);
        match files::read_path(&p) {
            Outcome::Stale(m) => assert!(m.ends_with("owned by uid 12345, not you: left in place"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(p.exists());
    } else {
        eprintln!("skipped the other owner's file: needs root to chown");
    }
}

#[test]
fn the_directory_is_checked() {
    let d = Scratch::new("checkdir");
    let me = files::euid();
    assert_eq!(files::check_dir(&d.0, me), Ok(true));
    assert_eq!(files::check_dir(&d.0.join("none"), me), Ok(false));
    let link = d.0.join("link");
    std::os::unix::fs::symlink(&d.0, &link).unwrap();
    assert!(files::check_dir(&link, me).unwrap_err().contains("symbolic link"));
    let file = d.write("file", b"x");
    assert!(files::check_dir(&file, me)
        .unwrap_err()
        .contains("not a directory"));
    let other = if me == 4242 { 4343 } else { 4242 };
    let m = files::check_dir(&d.0, other).unwrap_err();
    assert_eq!(
        m,
        format!("is owned by uid {me}, not by you (uid {other}): refused")
    );
    // Root may read anyone's directory.
    assert_eq!(files::check_dir(&d.0, 0), Ok(true));
    let open = d.0.join("open");
    fs::create_dir(&open).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
    assert_eq!(
        files::check_dir(&open, me),
        Err("is writable by others than its owner (mode 777): refused".into())
    );
}

#[test]
fn only_statistics_file_names_are_listed_in_order() {
    let d = Scratch::new("list");
    for n in ["30", "4.1", "4", "200", "x", "4.x", ".4", "007", "30.2", "4.0"] {
        d.write(n, b"");
    }
    let names = |pids: &[u32]| -> Vec<String> {
        let (v, more) = files::list(&d.0, pids).unwrap();
        assert!(!more);
        v.iter().map(|(_, n)| n.to_string_lossy().into_owned()).collect()
    };
    assert_eq!(names(&[]), ["4", "4.0", "4.1", "30", "30.2", "200"]);
    assert_eq!(names(&[30, 4]), ["4", "4.0", "4.1", "30", "30.2"]);
    assert!(names(&[5]).is_empty());
}

/// A source whose bytes change between reads, as a file a writer cuts.
struct Shrinking {
    bytes: Vec<u8>,
    reads: std::cell::Cell<usize>,
    cut_at_read: usize,
    cut_to: usize,
}

impl Source for Shrinking {
    fn size(&self) -> io::Result<u64> {
        Ok(self.bytes.len() as u64)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let n = self.reads.get();
        self.reads.set(n + 1);
        let end = if n >= self.cut_at_read {
            self.cut_to
        } else {
            self.bytes.len()
        };
        self.bytes[..end].read_at(buf, offset)
    }
}

#[test]
fn a_file_cut_while_read_is_refused() {
    let bytes = testfile::typical(7);
    // Cut during the first read of the records, then during the second.
    for cut_at_read in [1, 2] {
        let src = Shrinking {
            bytes: bytes.clone(),
            reads: 0.into(),
            cut_at_read,
            cut_to: REC1,
        };
        match read::read_snapshot(&src) {
            Err(Problem::Shrank { planned, found }) => assert_eq!((planned, found), (832, REC1 as u64)),
            other => panic!("{other:?}"),
        }
    }
    // Cut under the header: truncated.
    let src = Shrinking {
        bytes,
        reads: 0.into(),
        cut_at_read: 0,
        cut_to: 10,
    };
    assert!(matches!(
        read::read_snapshot(&src),
        Err(Problem::Layout(Invalid::Truncated { len: 10, need: 64 }))
    ));
}

#[test]
fn a_real_file_cut_and_grown_while_read_never_breaks_the_reader() {
    let d = Scratch::new("resize");
    let good = testfile::typical(7);
    let p = d.write("4242", &good);
    let _lock = hold_lock(&p);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (q, s) = (p.clone(), stop.clone());
    let writer = std::thread::spawn(move || {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new().write(true).open(&q).unwrap();
        let mut i = 0usize;
        while !s.load(Ordering::Relaxed) {
            // Whole again, then cut under the header, between records, or
            // grown past them.
            f.write_all_at(&good, 0).unwrap();
            f.set_len([10, REC1 as u64, 100_000, 832][i % 4]).unwrap();
            i += 1;
        }
    });
    let (mut read, mut refused) = (0, 0);
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(300) || read == 0 || refused == 0 {
        match files::read_path(&p) {
            Outcome::Read(s) => {
                assert!(s.records.len() <= 2);
                read += 1;
            }
            Outcome::Skipped(m) => {
                assert!(m.ends_with(": skipped") && !m.contains('\n'), "{m}");
                refused += 1;
            }
            other => panic!("{other:?}"),
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{read} read, {refused} refused"
        );
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
}

/// A file of 1 TiB (as a sparse file would say) whose header claims
/// 2^32-1 records: only [`read::MAX_RECORDS`] are read.
struct Huge(Vec<u8>);

impl Source for Huge {
    fn size(&self) -> io::Result<u64> {
        Ok(1 << 40)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        buf.fill(0);
        let n = self.0.as_slice().read_at(buf, offset)?;
        let _ = n;
        Ok(buf.len())
    }
}

#[test]
fn what_is_read_of_a_huge_file_is_capped() {
    let mut b = testfile::typical(7);
    put_u32(&mut b, layout::header::RECORDS, u32::MAX);
    let s = read::read_snapshot(&Huge(b)).unwrap();
    assert_eq!(s.records.len(), 2);
    assert_eq!(s.unread, u32::MAX as usize - read::MAX_RECORDS);
    assert_eq!(read::MAX_RECORDS, 4096);
}

#[test]
fn two_reads_make_one_record() {
    let a = testfile::sample(0, 5);
    let mut b = a.clone();
    // A torn copy of hits in the second read (smaller), a real change of
    // misses and of the size: counters take the larger, the rest the second.
    b.hits = 3;
    b.misses += 9;
    b.n_entries = 1;
    b.predictions[1].misses = 0;
    let m = read::merge(Ok(Some(a.clone())), Ok(Some(b.clone())))
        .unwrap()
        .unwrap();
    assert_eq!((m.hits, m.misses, m.n_entries), (a.hits, a.misses + 9, 1));
    assert_eq!(m.predictions[1].misses, a.predictions[1].misses);
    // Another cache in the slot by the second read: the second read whole.
    let mut c = b.clone();
    c.serial = 6;
    assert_eq!(
        read::merge(Ok(Some(a.clone())), Ok(Some(c.clone()))).unwrap(),
        Some(c.clone())
    );
    // Freed meanwhile; created meanwhile.
    assert_eq!(read::merge(Ok(Some(a.clone())), Ok(None)).unwrap(), None);
    assert_eq!(read::merge(Ok(None), Ok(Some(c.clone()))).unwrap(), Some(c));
    // One read invalid (a torn state word): the valid one.
    let bad = Invalid::Record {
        index: 0,
        what: "unknown state",
    };
    assert_eq!(
        read::merge(Err(bad.clone()), Ok(Some(a.clone()))).unwrap(),
        Some(a.clone())
    );
    assert_eq!(
        read::merge(Ok(Some(a.clone())), Err(bad.clone())).unwrap(),
        Some(a)
    );
    assert_eq!(read::merge(Err(bad.clone()), Err(bad.clone())), Err(bad));
}

/// SplitMix64: the replay's deterministic random numbers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// One mutation of a valid file.
fn mutate(rng: &mut Rng, good: &[u8]) -> Vec<u8> {
    let mut b = good.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(9) {
            0 => {
                let bit = rng.below(b.len().max(1) * 8);
                if let Some(byte) = b.get_mut(bit / 8) {
                    *byte ^= 1 << (bit % 8);
                }
            }
            1 => b.truncate(rng.below(b.len() + 1)),
            2 => {
                let n = rng.below(2000);
                b.extend((0..n).map(|_| rng.next() as u8));
            }
            3 => {
                // A huge or random record count.
                let v = [u32::MAX, u32::MAX / 2, 1 << 20, rng.next() as u32, 3, 4][rng.below(6)];
                if b.len() >= 32 {
                    put_u32(&mut b, layout::header::RECORDS, v);
                }
            }
            4 => {
                // A random aligned word of a record set to an extreme.
                let at = layout::HEADER_BYTES + 4 * rng.below(3 * layout::RECORD_BYTES / 4);
                let v = [0, 1, 2, 3, 8, 9, u32::MAX, rng.next() as u32][rng.below(8)];
                if at + 4 <= b.len() {
                    put_u32(&mut b, at, v);
                }
            }
            5 => {
                let at = rng.below(b.len().max(1));
                if at < b.len() {
                    b[at] = rng.next() as u8;
                }
            }
            6 => b = (0..rng.below(1200)).map(|_| rng.next() as u8).collect(),
            7 => {
                // Records cut or duplicated.
                let n = layout::HEADER_BYTES + layout::RECORD_BYTES * rng.below(6);
                b.resize(n, 0);
                if n > REC1 {
                    let first = b[layout::HEADER_BYTES..REC1].to_vec();
                    b[n - layout::RECORD_BYTES..].copy_from_slice(&first);
                }
            }
            _ => {
                // The header word by word from another valid value.
                if b.len() >= layout::HEADER_BYTES {
                    let k = rng.below(layout::HEADER_BYTES / 4);
                    put_u32(&mut b, 4 * k, layout::BYTE_ORDER.swap_bytes());
                }
            }
        }
    }
    b
}

/// The fuzz replay: 20,000 mutations of a valid file through the path the
/// program takes from bytes to printed lines (read_snapshot, then
/// format_snapshot as table and as JSON Lines). No panic, output bounded
/// by the records read, every JSON line valid JSON.
#[test]
fn fuzz_replay_of_20000_mutated_files() {
    let good = testfile::typical(7);
    let mut rng = Rng(0x5eed_0001);
    let meta = FileMeta {
        label: "4242.1".into(),
        pid: 4242,
        instance: Some(1),
        path: "/run/user/1/qed-l2-cache/4242.1\u{1}\"".into(),
    };
    let (mut ok, mut refused) = (0, 0);
    let mut tracker = Tracker::default();
    let start = Instant::now();
    for i in 0..20_000u64 {
        let bytes = mutate(&mut rng, &good);
        match read::read_snapshot(bytes.as_slice()) {
            Ok(s) => {
                ok += 1;
                assert!(s.records.len() <= read::MAX_RECORDS);
                assert!(s.records.len() <= bytes.len() / layout::RECORD_BYTES);
                for json in [false, true] {
                    let mut out = String::new();
                    tracker.begin_report();
                    output::format_snapshot(
                        &mut out,
                        &meta,
                        &s,
                        &mut tracker,
                        Instant::now(),
                        1 + i % 2,
                        json,
                    );
                    assert_eq!(out.lines().count(), s.records.len());
                    assert!(
                        out.len() <= 1024 * s.records.len(),
                        "{} bytes for {}",
                        out.len(),
                        s.records.len()
                    );
                    if json {
                        for line in out.lines() {
                            json_valid(line).unwrap_or_else(|e| panic!("{e}: {line}"));
                        }
                    }
                }
            }
            Err(p) => {
                refused += 1;
                let m = p.to_string();
                assert!(!m.is_empty() && m.len() < 200 && !m.contains('\n'), "{m}");
            }
        }
    }
    assert_eq!(ok + refused, 20_000);
    assert!(
        ok > 1000 && refused > 1000,
        "{ok} read, {refused} refused: the mutations miss a side"
    );
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn the_json_checker_refuses_what_is_not_json() {
    for good in [
        "{}",
        "[]",
        "{\"a\":[1,-2.5e3,true,false,null,\"\\u00e9\\n\"]}",
        " 0 ",
        "\"\"",
    ] {
        assert_eq!(json_valid(good), Ok(()), "{good}");
    }
    for bad in [
        "",
        "{",
        "{\"a\"}",
        "{\"a\":1,}",
        "[1,]",
        "01",
        "1.",
        "NaN",
        "nul",
        "\"\u{1}\"",
        "{} x",
        "\"\\x\"",
    ] {
        assert!(json_valid(bad).is_err(), "{bad}");
    }
}
