// SPDX-License-Identifier: LGPL-2.1-or-later
//! The command line: `qed-l2-cache-stat [PID...] [-w SECONDS] [-c COUNT]
//! [--json] [--dir DIR] [-h|--help] [--version]`, parsed by hand.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

/// The program's name, in messages.
pub const PROG: &str = "qed-l2-cache-stat";

/// Shortest `-w` accepted, in seconds.
pub const MIN_INTERVAL_S: f64 = 0.001;
/// Longest `-w` accepted, in seconds (about 11.6 days).
pub const MAX_INTERVAL_S: f64 = 1_000_000.0;
/// The interval of `-c COUNT` without `-w`, in seconds.
pub const DEFAULT_INTERVAL_S: f64 = 1.0;

/// What to show, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Only these processes (none: every file in the directory).
    pub pids: Vec<u32>,
    /// Time between reports (`None`: one report).
    pub interval: Option<Duration>,
    /// Reports to print before exiting (`None`: until interrupted when
    /// there is an interval, else one).
    pub count: Option<u64>,
    /// JSON Lines instead of the table.
    pub json: bool,
    /// `--dir`, else the default directory.
    pub dir: Option<PathBuf>,
}

impl Options {
    /// How many reports to print (`None`: no end).
    pub fn reports(&self) -> Option<u64> {
        match (self.count, self.interval) {
            (Some(c), _) => Some(c),
            (None, Some(_)) => None,
            (None, None) => Some(1),
        }
    }

    /// The time between two reports.
    pub fn period(&self) -> Duration {
        self.interval
            .unwrap_or(Duration::from_secs_f64(DEFAULT_INTERVAL_S))
    }
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// Show statistics.
    Run(Options),
    /// `-h`, `--help`.
    Help,
    /// `--version`.
    Version,
}

/// The text of `--help`.
pub fn help() -> String {
    format!(
        "\
Usage: {PROG} [PID...] [-w SECONDS [-c COUNT]] [--json] [--dir DIR]
Show what the QED L2 table caches of running processes are doing, from the
statistics files the qed-l2-cache library publishes when a process runs
with QED_L2_CACHE_STATS=1.

With no PID: every process of yours that publishes. With PIDs: only those.

Options:
  -w SECONDS  repeat every SECONDS (fractions allowed: -w 0.5) until
              interrupted, a blank line between reports (like iostat)
  -c COUNT    stop after COUNT reports (without -w: one a second)
  --json      one JSON object per cache per report, one per line
  --dir DIR   read DIR instead of $XDG_RUNTIME_DIR/qed-l2-cache
              (or /tmp/qed-l2-cache-UID when XDG_RUNTIME_DIR is unset)
  -h, --help  show this help
  --version   show the version

Columns, one line per cache:
  PID          the process (PID.N: a second process with that pid, in
               another pid namespace)
  CACHE        the cache's number, in the order the process created them
  HITS MISSES  the first report: lookups found and not found since the
               cache was created (counts, not rates)
  HITS/S MISSES/S
               later reports: per second over the interval (- for a cache
               new since the last report)
  HIT%         hits / lookups, over the same span
  ENTRIES/MAX  tables cached now / the cache's maximum
  TABLES       memory of the tables cached now (B, KiB, MiB, GiB)
  POLICY       fifo, lru or sieve
  ADVICE       the size the size advisor would set (- when it is off or
               has no advice)
  SIZING       auto (the cache sizes itself) or fixed (- from a library
               that predates it)
  IDLE         tables given back idle, not evictions (- as for SIZING)

Exit status: 0 when at least one file was read (or no process publishes and
no PID was asked for), 1 when a requested PID has no valid file, 2 on a
usage error. Files that cannot be trusted are skipped with a message;
a file whose process is gone is removed when it is yours.
See qed-l2-cache-stat(1).
"
    )
}

/// `--version`'s line.
pub fn version() -> String {
    format!(
        "{PROG} {} (statistics file layout version {})\n",
        env!("CARGO_PKG_VERSION"),
        crate::stats_layout::VERSION
    )
}

fn text(s: &OsStr) -> String {
    s.to_string_lossy().into_owned()
}

fn parse_pid(s: &OsStr) -> Result<u32, String> {
    let t = s.to_str().unwrap_or("");
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("'{}': not a process id (a positive number)", text(s)));
    }
    match t.parse::<u32>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("'{t}': not a process id (1 to {})", u32::MAX)),
    }
}

fn parse_interval(s: &OsStr) -> Result<Duration, String> {
    let t = s.to_str().unwrap_or("");
    // Digits and one dot only: f64's parser also takes "inf", "NaN", "1e3".
    let digits = t.bytes().filter(|b| b.is_ascii_digit()).count();
    let dots = t.bytes().filter(|&b| b == b'.').count();
    let v = match t.parse::<f64>() {
        Ok(v) if digits > 0 && dots <= 1 && digits + dots == t.len() => v,
        _ => return Err(format!("-w: '{}' is not a number of seconds", text(s))),
    };
    if !(MIN_INTERVAL_S..=MAX_INTERVAL_S).contains(&v) {
        return Err(format!(
            "-w: {t} seconds: give {MIN_INTERVAL_S} to {MAX_INTERVAL_S}"
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

fn parse_count(s: &OsStr) -> Result<u64, String> {
    let t = s.to_str().unwrap_or("");
    match t.parse::<u64>() {
        Ok(c) if c > 0 && t.bytes().all(|b| b.is_ascii_digit()) => Ok(c),
        _ => Err(format!("-c: '{}' is not a positive number of reports", text(s))),
    }
}

/// Parses the arguments (without the program's name). `Err` is a usage
/// error's message.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Parsed, String> {
    let mut o = Options {
        pids: Vec::new(),
        interval: None,
        count: None,
        json: false,
        dir: None,
    };
    let mut args = args.into_iter();
    let mut only_pids = false;
    while let Some(arg) = args.next() {
        let bytes = arg.as_bytes();
        if only_pids || bytes.first() != Some(&b'-') || bytes == b"-" {
            let pid = parse_pid(&arg)?;
            if !o.pids.contains(&pid) {
                o.pids.push(pid);
            }
            continue;
        }
        // An option's value: the rest of the argument (-w2, --dir=D) or
        // the next argument.
        let mut value = |name: &str, inline: &[u8]| -> Result<OsString, String> {
            if !inline.is_empty() {
                return Ok(OsStr::from_bytes(inline).to_os_string());
            }
            args.next().ok_or_else(|| format!("{name} needs a value"))
        };
        match bytes {
            b"-h" | b"--help" => return Ok(Parsed::Help),
            b"--version" => return Ok(Parsed::Version),
            b"--json" => o.json = true,
            b"--" => only_pids = true,
            _ if bytes.starts_with(b"-w") => o.interval = Some(parse_interval(&value("-w", &bytes[2..])?)?),
            _ if bytes.starts_with(b"-c") => o.count = Some(parse_count(&value("-c", &bytes[2..])?)?),
            b"--dir" => o.dir = Some(value("--dir", b"")?.into()),
            _ if bytes.starts_with(b"--dir=") => o.dir = Some(value("--dir", &bytes[6..])?.into()),
            _ => return Err(format!("unknown option '{}'", text(&arg))),
        }
        if let Some(d) = &o.dir {
            if d.as_os_str().is_empty() {
                return Err("--dir: an empty name".into());
            }
        }
    }
    Ok(Parsed::Run(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Parsed, String> {
        parse(args.iter().map(OsString::from))
    }

    fn opts(args: &[&str]) -> Options {
        match run(args) {
            Ok(Parsed::Run(o)) => o,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn pids_options_and_their_values() {
        let o = opts(&["12", "-w", "0.5", "--json", "7", "12", "--dir", "/x", "-c3"]);
        assert_eq!(o.pids, [12, 7]);
        assert_eq!(o.interval, Some(Duration::from_millis(500)));
        assert_eq!(o.count, Some(3));
        assert!(o.json);
        assert_eq!(o.dir, Some(PathBuf::from("/x")));
        assert_eq!(o.reports(), Some(3));
        let o = opts(&["-w2", "--dir=/y", "--", "5"]);
        assert_eq!(o.interval, Some(Duration::from_secs(2)));
        assert_eq!(o.dir, Some(PathBuf::from("/y")));
        assert_eq!(o.pids, [5]);
        assert_eq!(o.reports(), None);
        assert_eq!(opts(&[]).reports(), Some(1));
        assert_eq!(opts(&["-c", "2"]).period(), Duration::from_secs(1));
        assert_eq!(run(&["-w", "1", "--help"]), Ok(Parsed::Help));
        assert_eq!(run(&["--version"]), Ok(Parsed::Version));
        assert!(version().contains(env!("CARGO_PKG_VERSION")));
        assert!(help().contains("-w SECONDS"));
    }

    #[test]
    fn usage_errors_are_named() {
        for (args, what) in [
            (&["-w"][..], "needs a value"),
            (&["-w", "0"], "give 0.001"),
            (&["-w", "-1"], "not a number"),
            (&["-w", "inf"], "not a number"),
            (&["-w", "NaN"], "not a number"),
            (&["-w", "1e3"], "not a number"),
            (&["-w", "1.2.3"], "not a number"),
            (&["-w", "2000000"], "give 0.001"),
            (&["-c", "0"], "-c"),
            (&["-c", "x"], "-c"),
            (&["-c", "+3"], "-c"),
            (&["--dir"], "needs a value"),
            (&["--dir="], "--dir"),
            (&["--frob"], "unknown option"),
            (&["-x"], "unknown option"),
            (&["12x"], "not a process id"),
            (&["0"], "not a process id"),
            (&["-"], "not a process id"),
            (&["99999999999"], "not a process id"),
            (&["--", "-w"], "not a process id"),
        ] {
            match run(args) {
                Err(m) => assert!(m.contains(what), "{args:?}: {m}"),
                ok => panic!("{args:?} accepted: {ok:?}"),
            }
        }
    }
}
