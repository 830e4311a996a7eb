// SPDX-License-Identifier: LGPL-2.1-or-later
//! What is printed: the table (one line per cache), JSON Lines, and the
//! rates between two reports. Text only: nothing here reads a file.

use crate::read::Snapshot;
use crate::stats_layout::{self as layout, Header, Record};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Instant;

/// Which file a snapshot came from, as printed.
#[derive(Debug, Clone)]
pub struct FileMeta {
    /// The file's name: `PID` or `PID.N`.
    pub label: String,
    /// The pid the name gives (the process in the reader's namespace).
    pub pid: u32,
    /// `N` of a `PID.N` file.
    pub instance: Option<u32>,
    /// The file's path, for JSON (escaped there).
    pub path: String,
}

/// What a cache did since the last report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Delta {
    /// Seconds since the cache was last read.
    pub interval_s: f64,
    /// Hits since then.
    pub hits: u64,
    /// Misses since then.
    pub misses: u64,
}

impl Delta {
    fn per_s(&self, n: u64) -> f64 {
        n as f64 / self.interval_s
    }
}

/// The counters of every cache at the last report, for the rates of the
/// next one. A cache is known by its file (name and creation time: a new
/// process with an old pid is another file) and its serial (a slot reused
/// by a new cache is another cache). Only the caches of the last report
/// are kept.
#[derive(Debug, Default)]
pub struct Tracker {
    last: HashMap<(String, u64, u64), (u64, u64, Instant)>,
    now: HashMap<(String, u64, u64), (u64, u64, Instant)>,
}

impl Tracker {
    /// Starts a report: what the last one saw becomes the reference.
    pub fn begin_report(&mut self) {
        self.last = std::mem::take(&mut self.now);
    }

    /// Records `r` (read at `at`) and returns what it did since the last
    /// report: `None` the first time it is seen, or when its counters went
    /// back (not the same cache) or no time passed.
    pub fn delta(&mut self, label: &str, header: &Header, r: &Record, at: Instant) -> Option<Delta> {
        let key = (label.to_owned(), header.start_unix_ns, r.serial);
        let before = self.last.get(&key).copied();
        self.now.insert(key, (r.hits, r.misses, at));
        let (hits, misses, then) = before?;
        let interval_s = at.checked_duration_since(then)?.as_secs_f64();
        if interval_s <= 0.0 {
            return None;
        }
        Some(Delta {
            interval_s,
            hits: r.hits.checked_sub(hits)?,
            misses: r.misses.checked_sub(misses)?,
        })
    }
}

/// Memory in binary units: `512B`, `1.5KiB`, `12MiB`, `3.2GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n}B");
    }
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    // One decimal below 10, none above; never "1024KiB".
    let shown = if v < 9.95 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    };
    if shown == "1024" && unit < UNITS.len() - 1 {
        return format!("1.0{}", UNITS[unit + 1]);
    }
    format!("{shown}{}", UNITS[unit])
}

/// A path or name fit for a terminal: control characters and bytes that
/// are not UTF-8 are shown as escapes.
pub fn shown(s: &std::ffi::OsStr) -> String {
    let mut out = String::new();
    for chunk in s.as_encoded_bytes().utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// The table's header line; the first report shows counts, later ones
/// rates.
pub fn text_header(first: bool) -> String {
    let (h, m) = if first {
        ("HITS", "MISSES")
    } else {
        ("HITS/S", "MISSES/S")
    };
    format!(
        "{:>6} {:>5} {:>9} {:>9} {:>6} {:>12} {:>7} {:>7} {:>7} {:>6} {:>7}\n",
        "PID", "CACHE", h, m, "HIT%", "ENTRIES/MAX", "TABLES", "POLICY", "ADVICE", "SIZING", "IDLE"
    )
}

fn hit_pct(hits: u64, misses: u64) -> Option<f64> {
    let lookups = hits as f64 + misses as f64;
    (lookups > 0.0).then(|| 100.0 * hits as f64 / lookups)
}

fn policy(r: &Record) -> &'static str {
    layout::policy_name(r.policy).unwrap_or("?")
}

/// "auto" or "fixed"; `None` when the writer does not say.
fn sizing(r: &Record) -> Option<&'static str> {
    r.auto.map(|a| if a { "auto" } else { "fixed" })
}

/// One line of the table. `first`: the first report (counts since init);
/// otherwise rates over `delta`, or `-` for a cache not seen before.
pub fn text_line(f: &FileMeta, r: &Record, first: bool, delta: Option<&Delta>) -> String {
    let (hits, misses, pct) = match (first, delta) {
        (true, _) => (
            r.hits.to_string(),
            r.misses.to_string(),
            hit_pct(r.hits, r.misses),
        ),
        (false, Some(d)) => (
            format!("{:.1}", d.per_s(d.hits)),
            format!("{:.1}", d.per_s(d.misses)),
            hit_pct(d.hits, d.misses),
        ),
        (false, None) => ("-".into(), "-".into(), hit_pct(r.hits, r.misses)),
    };
    let pct = pct.map_or_else(|| "-".into(), |p| format!("{p:.1}"));
    let advice = match r.recommended {
        0 => "-".to_string(),
        n if r.advisor_finds > 0 => n.to_string(),
        _ => "-".to_string(),
    };
    format!(
        "{:>6} {:>5} {:>9} {:>9} {:>6} {:>12} {:>7} {:>7} {:>7} {:>6} {:>7}\n",
        f.label,
        r.serial,
        hits,
        misses,
        pct,
        format!("{}/{}", r.n_entries, r.max_entries),
        human_bytes(r.table_bytes),
        policy(r),
        advice,
        sizing(r).unwrap_or("-"),
        r.idle_releases.map_or_else(|| "-".into(), |n| n.to_string())
    )
}

/// `s` as a JSON string, quotes included.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A JSON number for a rate, or `null` (never NaN or infinity).
fn json_f64(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.3}"),
        _ => "null".into(),
    }
}

fn json_opt_u32(v: Option<u32>) -> String {
    v.map_or_else(|| "null".into(), |v| v.to_string())
}

/// One JSON object (and its newline) for a cache in report `report`.
pub fn json_line(f: &FileMeta, h: &Header, r: &Record, report: u64, delta: Option<&Delta>) -> String {
    let advisor = if r.advisor_finds == 0 {
        "null".to_string()
    } else {
        let predictions: Vec<String> = r
            .predictions
            .iter()
            .map(|p| format!("{{\"size\":{},\"misses\":{}}}", p.size, p.misses))
            .collect();
        format!(
            "{{\"finds\":{},\"recommended\":{},\"predictions\":[{}]}}",
            r.advisor_finds,
            json_opt_u32((r.recommended != 0).then_some(r.recommended)),
            predictions.join(",")
        )
    };
    let mut o = String::with_capacity(512);
    let _ = writeln!(
        o,
        "{{\"report\":{report},\"pid\":{},\"instance\":{},\"file\":{},\"writer_pid\":{},\
         \"cache\":{},\"slot\":{},\"policy\":{},\
         \"hits\":{},\"misses\":{},\"commits\":{},\"duplicate_commits\":{},\"evictions\":{},\
         \"peak_entries\":{},\"n_entries\":{},\"max_entries\":{},\"table_bytes\":{},\
         \"interval_s\":{},\"hits_per_s\":{},\"misses_per_s\":{},\"advisor\":{},\
         \"sizing\":{},\"idle_releases\":{}}}",
        f.pid,
        json_opt_u32(f.instance),
        json_string(&f.path),
        h.pid,
        r.serial,
        r.index + 1,
        json_string(policy(r)),
        r.hits,
        r.misses,
        r.commits,
        r.duplicate_commits,
        r.evictions,
        r.peak_entries,
        r.n_entries,
        r.max_entries,
        r.table_bytes,
        json_f64(delta.map(|d| d.interval_s)),
        json_f64(delta.map(|d| d.per_s(d.hits))),
        json_f64(delta.map(|d| d.per_s(d.misses))),
        advisor,
        sizing(r).map_or_else(|| "null".into(), json_string),
        r.idle_releases.map_or_else(|| "null".into(), |n| n.to_string())
    );
    o
}

/// Appends a snapshot's lines to `out`: the program's one path from a read
/// file to text (the tests and the fuzz target go through it too).
/// `report` counts from 1; the first report shows counts since init.
pub fn format_snapshot(
    out: &mut String,
    f: &FileMeta,
    s: &Snapshot,
    tracker: &mut Tracker,
    at: Instant,
    report: u64,
    json: bool,
) {
    for r in &s.records {
        let d = tracker.delta(&f.label, &s.header, r, at);
        if json {
            out.push_str(&json_line(f, &s.header, r, report, d.as_ref()));
        } else {
            out.push_str(&text_line(f, r, report == 1, d.as_ref()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats_layout::Prediction;
    use std::time::Duration;

    pub(crate) fn record(serial: u64) -> Record {
        Record {
            index: 2,
            policy: 1,
            serial,
            hits: 750,
            misses: 250,
            commits: 260,
            duplicate_commits: 10,
            evictions: 200,
            peak_entries: 50,
            n_entries: 40,
            max_entries: 50,
            table_bytes: 40 * 256 * 1024,
            advisor_finds: 1000,
            recommended: 75,
            predictions: vec![
                Prediction {
                    size: 25,
                    misses: 400,
                },
                Prediction {
                    size: 75,
                    misses: 100,
                },
            ],
            auto: Some(true),
            idle_releases: Some(12),
        }
    }

    fn meta() -> FileMeta {
        FileMeta {
            label: "1234".into(),
            pid: 1234,
            instance: None,
            path: "/run/user/1/qed-l2-cache/1234".into(),
        }
    }

    const HEADER: Header = Header {
        pid: 1,
        records: 3,
        start_unix_ns: 5,
    };

    #[test]
    fn bytes_in_binary_units() {
        assert_eq!(human_bytes(0), "0B");
        assert_eq!(human_bytes(1023), "1023B");
        assert_eq!(human_bytes(1024), "1.0KiB");
        assert_eq!(human_bytes(1536), "1.5KiB");
        assert_eq!(human_bytes(10 * 1024 * 1024), "10MiB");
        assert_eq!(human_bytes(1024 * 1024 - 1), "1.0MiB");
        assert_eq!(human_bytes(40 * 256 * 1024), "10MiB");
        assert_eq!(human_bytes(u64::MAX), "16EiB");
    }

    #[test]
    fn the_first_report_shows_counts_later_ones_rates() {
        let hdr = text_header(true);
        assert_eq!(
            hdr,
            "   PID CACHE      HITS    MISSES   HIT%  ENTRIES/MAX  TABLES  POLICY  ADVICE SIZING    IDLE\n"
        );
        assert_eq!(
            text_header(false),
            "   PID CACHE    HITS/S  MISSES/S   HIT%  ENTRIES/MAX  TABLES  POLICY  ADVICE SIZING    IDLE\n"
        );
        let r = record(3);
        let line = text_line(&meta(), &r, true, None);
        assert_eq!(
            line,
            "  1234     3       750       250   75.0        40/50   10MiB     lru      75   auto      12\n"
        );
        let d = Delta {
            interval_s: 2.0,
            hits: 10,
            misses: 30,
        };
        let line = text_line(&meta(), &r, false, Some(&d));
        assert_eq!(
            line,
            "  1234     3       5.0      15.0   25.0        40/50   10MiB     lru      75   auto      12\n"
        );
        let line = text_line(&meta(), &r, false, None);
        assert!(
            line.starts_with("  1234     3         -         -   75.0 "),
            "{line}"
        );
        let mut off = record(1);
        off.advisor_finds = 0;
        off.hits = 0;
        off.misses = 0;
        off.auto = Some(false);
        assert_eq!(
            text_line(&meta(), &off, true, None),
            "  1234     1         0         0      -        40/50   10MiB     lru       -  fixed      12\n"
        );
        // A writer that predates the two fields.
        off.auto = None;
        off.idle_releases = None;
        assert!(text_line(&meta(), &off, true, None).ends_with("     lru       -      -       -\n"));
    }

    #[test]
    fn json_carries_every_field() {
        let r = record(3);
        let line = json_line(&meta(), &HEADER, &r, 1, None);
        assert_eq!(
            line,
            "{\"report\":1,\"pid\":1234,\"instance\":null,\"file\":\"/run/user/1/qed-l2-cache/1234\",\
             \"writer_pid\":1,\"cache\":3,\"slot\":3,\"policy\":\"lru\",\"hits\":750,\"misses\":250,\
             \"commits\":260,\"duplicate_commits\":10,\"evictions\":200,\"peak_entries\":50,\
             \"n_entries\":40,\"max_entries\":50,\"table_bytes\":10485760,\"interval_s\":null,\
             \"hits_per_s\":null,\"misses_per_s\":null,\"advisor\":{\"finds\":1000,\"recommended\":75,\
             \"predictions\":[{\"size\":25,\"misses\":400},{\"size\":75,\"misses\":100}]},\
             \"sizing\":\"auto\",\"idle_releases\":12}\n"
        );
        let d = Delta {
            interval_s: 0.5,
            hits: 1,
            misses: 2,
        };
        let line = json_line(&meta(), &HEADER, &r, 2, Some(&d));
        assert!(line.contains("\"interval_s\":0.500,\"hits_per_s\":2.000,\"misses_per_s\":4.000"));
        let mut off = r;
        off.advisor_finds = 0;
        off.auto = None;
        off.idle_releases = None;
        assert!(json_line(&meta(), &HEADER, &off, 1, None)
            .ends_with("\"advisor\":null,\"sizing\":null,\"idle_releases\":null}\n"));
        assert_eq!(json_string("a\"b\\c\n\u{1}é"), "\"a\\\"b\\\\c\\n\\u0001é\"");
        assert_eq!(json_f64(Some(f64::NAN)), "null");
        assert_eq!(json_f64(Some(f64::INFINITY)), "null");
    }

    #[test]
    fn rates_follow_one_cache_only() {
        let mut t = Tracker::default();
        let t0 = Instant::now();
        let mut r = record(3);
        t.begin_report();
        assert_eq!(t.delta("1234", &HEADER, &r, t0), None);
        t.begin_report();
        r.hits += 100;
        r.misses += 50;
        let d = t.delta("1234", &HEADER, &r, t0 + Duration::from_secs(2)).unwrap();
        assert_eq!((d.hits, d.misses, d.interval_s), (100, 50, 2.0));
        // Another file of the same name (a new process), another serial,
        // counters that went back: none of them is the same cache.
        t.begin_report();
        let other = Header {
            start_unix_ns: 6,
            ..HEADER
        };
        assert_eq!(t.delta("1234", &other, &r, t0 + Duration::from_secs(3)), None);
        assert_eq!(
            t.delta("1234", &HEADER, &record(4), t0 + Duration::from_secs(3)),
            None
        );
        assert_eq!(
            t.delta("1234", &HEADER, &record(3), t0 + Duration::from_secs(3)),
            None
        );
        // A cache missing from a report is forgotten.
        t.begin_report();
        t.begin_report();
        assert_eq!(
            t.delta("1234", &HEADER, &record(3), t0 + Duration::from_secs(9)),
            None
        );
    }

    #[test]
    fn names_are_shown_escaped() {
        use std::os::unix::ffi::OsStrExt;
        let s = std::ffi::OsStr::from_bytes(b"/tmp/a\x1b[31m\xff");
        assert_eq!(shown(s), "/tmp/a\\u{1b}[31m\\xff");
    }
}
