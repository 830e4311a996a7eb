// SPDX-License-Identifier: LGPL-2.1-or-later
//! `qed-l2-cache-stat` as a user runs it: the built program against
//! hand-written files in a scratch directory, a live writer played by this
//! process (it holds the writer's lock; the program is another process, so
//! it sees the lock as a reader sees a writer's). The output exactly, the
//! messages, the exit statuses.

#[allow(dead_code)]
#[path = "../src/stats_layout.rs"]
mod stats_layout;
#[allow(dead_code)]
#[path = "../stat/testfile.rs"]
mod testfile;

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

const PROGRAM: &str = env!("CARGO_BIN_EXE_qed-l2-cache-stat");

struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "qed-l2-cache-stat-cli-{what}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir(&p).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o700)).unwrap();
        Scratch(p)
    }

    /// Writes a file and holds the writer's lock on it (a traditional
    /// POSIX lock, like the library's) until the `File` is dropped.
    fn live(&self, name: &str, bytes: &[u8]) -> File {
        let p = self.0.join(name);
        fs::write(&p, bytes).unwrap();
        let f = fs::OpenOptions::new().read(true).write(true).open(&p).unwrap();
        // SAFETY: all-zero bytes are a valid `flock` (integers).
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        // SAFETY: the descriptor is open and `fl` is a valid flock.
        assert_eq!(unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLK, &fl) }, 0);
        f
    }

    fn dead(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        fs::write(&p, bytes).unwrap();
        p
    }

    fn dir(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn run(args: &[&str]) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(PROGRAM)
        .args(args)
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    (
        status.code().expect("exited"),
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    )
}

fn pretty(r: &stats_layout::Record, pid: u32, file: &Path, report: u32) -> String {
    let preds: Vec<String> = r
        .predictions
        .iter()
        .map(|p| format!("{{\"size\":{},\"misses\":{}}}", p.size, p.misses))
        .collect();
    format!(
        "{{\"report\":{report},\"pid\":{pid},\"instance\":null,\"file\":\"{}\",\"writer_pid\":7,\
         \"cache\":{},\"slot\":{},\"policy\":\"{}\",\"hits\":{},\"misses\":{},\"commits\":{},\
         \"duplicate_commits\":{},\"evictions\":{},\"peak_entries\":{},\"n_entries\":{},\
         \"max_entries\":{},\"table_bytes\":{},\"interval_s\":null,\"hits_per_s\":null,\
         \"misses_per_s\":null,\"advisor\":{{\"finds\":{},\"recommended\":{},\"predictions\":[{}]}},\
         \"sizing\":\"{}\",\"idle_releases\":{}}}",
        file.display(),
        r.serial,
        r.index + 1,
        ["fifo", "lru", "sieve"][r.policy as usize],
        r.hits,
        r.misses,
        r.commits,
        r.duplicate_commits,
        r.evictions,
        r.peak_entries,
        r.n_entries,
        r.max_entries,
        r.table_bytes,
        r.advisor_finds,
        r.recommended,
        preds.join(","),
        if r.auto.expect("the sample says") {
            "auto"
        } else {
            "fixed"
        },
        r.idle_releases.expect("the sample says")
    )
}

#[test]
fn json_of_a_live_writer_exactly() {
    let d = Scratch::new("json");
    let _w = d.live("4242", &testfile::typical(7));
    let (code, out, err) = run(&["--dir", d.dir(), "--json", "-c", "1"]);
    assert_eq!((code, err.as_str()), (0, ""));
    let file = d.0.join("4242");
    let want = [
        pretty(&testfile::sample(2, 1), 4242, &file, 1),
        pretty(&testfile::sample(1, 2), 4242, &file, 1),
    ];
    let got: Vec<&str> = out.lines().collect();
    assert_eq!(got, want);
    for line in got {
        testfile::json_valid(line).unwrap();
    }
}

#[test]
fn the_table_exactly() {
    let d = Scratch::new("table");
    let _w = d.live("4242", &testfile::typical(7));
    let (code, out, err) = run(&["--dir", d.dir()]);
    assert_eq!((code, err.as_str()), (0, ""));
    assert_eq!(
        out,
        "   PID CACHE      HITS    MISSES   HIT%  ENTRIES/MAX  TABLES  POLICY  ADVICE SIZING    IDLE\n\
         \x20 4242     1      1750      1250   58.3        40/50   10MiB     lru      75  fixed       1\n\
         \x20 4242     2      2750      2250   55.0        40/50   10MiB   sieve      75   auto       2\n"
    );
}

#[test]
fn pids_select_their_files_and_a_missing_one_fails() {
    let d = Scratch::new("pids");
    let _a = d.live("4242", &testfile::typical(7));
    let _b = d.live("4242.1", &testfile::file(&[Some(testfile::sample(0, 9))], 1));
    let _c = d.live("99", &testfile::typical(7));
    let (code, out, _) = run(&["--dir", d.dir(), "4242"]);
    assert_eq!(code, 0);
    let pids: Vec<&str> = out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(pids, ["4242", "4242", "4242.1"]);
    let (code, out, _) = run(&["--dir", d.dir(), "--json", "4242"]);
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .last()
            .unwrap()
            .contains("\"pid\":4242,\"instance\":1,"),
        "{out}"
    );
    let (code, out, err) = run(&["--dir", d.dir(), "99", "123"]);
    assert_eq!(code, 1);
    assert_eq!(out.lines().count(), 3);
    assert_eq!(
        err,
        format!(
            "qed-l2-cache-stat: no statistics file for pid 123 in {} (is it running with QED_L2_CACHE_STATS=1?)\n",
            d.dir()
        )
    );
}

#[test]
fn no_publisher_is_not_an_error_unless_a_pid_was_asked_for() {
    let d = Scratch::new("empty");
    let (code, out, err) = run(&["--dir", d.dir()]);
    assert_eq!((code, out.as_str()), (0, ""));
    assert_eq!(
        err,
        format!(
            "qed-l2-cache-stat: no process publishes statistics in {}\n",
            d.dir()
        )
    );
    // A directory not created yet is the same.
    let none = d.0.join("none");
    let (code, _, err) = run(&["--dir", none.to_str().unwrap()]);
    assert_eq!(code, 0);
    assert!(err.contains("no process publishes statistics"));
    let (code, _, _) = run(&["--dir", d.dir(), "4242"]);
    assert_eq!(code, 1);
}

#[test]
fn the_default_directory_is_under_xdg_runtime_dir() {
    let d = Scratch::new("xdg");
    fs::create_dir(d.0.join("qed-l2-cache")).unwrap();
    let _w = d.live("qed-l2-cache/4242", &testfile::typical(7));
    let out = Command::new(PROGRAM)
        .env("XDG_RUNTIME_DIR", &d.0)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 3);
}

#[test]
fn bad_files_are_named_skipped_and_fail_only_when_nothing_is_read() {
    let d = Scratch::new("badcli");
    let mut bad = testfile::typical(7);
    bad[8] = 2; // version 2 (little- or big-endian, the word is no longer 1)
    let _b = d.live("100", &bad);
    let (code, out, err) = run(&["--dir", d.dir()]);
    assert_eq!((code, out.as_str()), (1, ""));
    let file = d.0.join("100");
    let version = if cfg!(target_endian = "little") {
        2
    } else {
        0x0200_0001
    };
    assert_eq!(
        err,
        format!(
            "qed-l2-cache-stat: {}: layout version {version}, this reader knows 1: skipped\n",
            file.display()
        )
    );
    fs::create_dir(d.0.join("101")).unwrap();
    std::os::unix::fs::symlink(&file, d.0.join("102")).unwrap();
    let _g = d.live("103", &testfile::typical(7));
    let (code, out, err) = run(&["--dir", d.dir()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 3);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(lines[1].ends_with("/101: is a directory, not a statistics file: skipped"));
    assert!(lines[2].ends_with("/102: is a symbolic link, not a statistics file: skipped"));
}

#[test]
fn the_file_of_a_dead_process_is_removed() {
    let d = Scratch::new("stale");
    let p = d.dead("4242", &testfile::typical(7));
    let (code, out, err) = run(&["--dir", d.dir()]);
    assert_eq!((code, out.as_str()), (0, ""));
    assert_eq!(
        err,
        format!(
            "qed-l2-cache-stat: {}: no process holds its lock (its writer is gone): removed the stale file\n\
             qed-l2-cache-stat: no process publishes statistics in {}\n",
            p.display(),
            d.dir()
        )
    );
    assert!(!p.exists());
    // Asked for by pid, it is a failure.
    let p = d.dead("4242", &testfile::typical(7));
    let (code, _, _) = run(&["--dir", d.dir(), "4242"]);
    assert_eq!(code, 1);
    assert!(!p.exists());
}

#[test]
fn an_untrusted_directory_is_refused() {
    let d = Scratch::new("baddir");
    let real = d.0.join("real");
    fs::create_dir(&real).unwrap();
    let link = d.0.join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let (code, _, err) = run(&["--dir", link.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.ends_with("/link: is a symbolic link: refused (the directory must be a real one)\n"),
        "{err}"
    );
    fs::set_permissions(&real, fs::Permissions::from_mode(0o777)).unwrap();
    let (code, _, err) = run(&["--dir", real.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("writable by others"), "{err}");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["-w"][..],
        &["-w", "0"],
        &["-w", "abc"],
        &["-c", "0"],
        &["--bogus"],
        &["notapid"],
        &["--dir"],
    ] {
        let (code, out, err) = run(args);
        assert_eq!(code, 2, "{args:?}");
        assert!(out.is_empty());
        assert!(err.starts_with("qed-l2-cache-stat: ") && err.ends_with("Try 'qed-l2-cache-stat --help'.\n"));
    }
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("Usage: qed-l2-cache-stat [PID...]"));
    let (code, out, _) = run(&["--version"]);
    assert_eq!(
        (code, out),
        (
            0,
            format!(
                "qed-l2-cache-stat {} (statistics file layout version 1)\n",
                env!("CARGO_PKG_VERSION")
            )
        )
    );
}

#[test]
fn repeated_reports_show_rates() {
    let d = Scratch::new("watch");
    let mut bytes = testfile::typical(7);
    let w = d.live("4242", &bytes);
    let mut child = Command::new(PROGRAM)
        .args(["--dir", d.dir(), "--json", "-w", "1", "-c", "2"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: Vec<String> = (0..2).map(|_| lines.next().unwrap().unwrap()).collect();
    assert!(first
        .iter()
        .all(|l| l.contains("\"report\":1,") && l.contains("\"hits_per_s\":null")));
    // 1000 more hits and 10 more misses for cache 1 (slot 3), written
    // through the locked descriptor (closing another one would drop the lock).
    let at = stats_layout::HEADER_BYTES + 2 * stats_layout::RECORD_BYTES;
    let mut r = testfile::sample(2, 1);
    r.hits += 1000;
    r.misses += 10;
    bytes[at..at + stats_layout::RECORD_BYTES].copy_from_slice(&testfile::record(&r));
    w.write_all_at(&bytes, 0).unwrap();
    let second: Vec<String> = lines.map(|l| l.unwrap()).collect();
    assert!(child.wait().unwrap().success());
    assert_eq!(second.len(), 2);
    let field = |l: &str, k: &str| -> f64 {
        let v = &l[l.find(&format!("\"{k}\":")).unwrap() + k.len() + 3..];
        v[..v.find([',', '}']).unwrap()].parse().unwrap()
    };
    let l = &second[0];
    assert!(
        l.contains("\"report\":2,\"pid\":4242,") && l.contains("\"cache\":1,"),
        "{l}"
    );
    assert_eq!(field(l, "hits"), r.hits as f64);
    let interval = field(l, "interval_s");
    assert!((0.2..5.0).contains(&interval), "{interval}");
    assert!((field(l, "hits_per_s") * interval - 1000.0).abs() < 5.0, "{l}");
    assert!((field(l, "misses_per_s") * interval - 10.0).abs() < 0.5, "{l}");
    assert_eq!(field(&second[1], "hits_per_s"), 0.0);
}

#[test]
fn repeated_tables_are_separated_by_a_blank_line() {
    let d = Scratch::new("watchtext");
    let _w = d.live("4242", &testfile::typical(7));
    let (code, out, _) = run(&["--dir", d.dir(), "-w", "0.05", "-c", "3"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3 * 3 + 2, "{out}");
    assert!(lines[0].contains(" HITS ") && lines[4].contains(" HITS/S ") && lines[8].contains(" HITS/S "));
    assert_eq!((lines[3], lines[7]), ("", ""));
    assert!(lines[5].contains("     0.0       0.0      -  "), "{}", lines[5]);
}
