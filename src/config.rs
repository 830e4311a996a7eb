// SPDX-License-Identifier: LGPL-2.1-or-later
//! Process-wide configuration from the environment, read once (docs/configuration.md).
//!
//! Every cache created by `qed_init_l2_cache` starts from these values; the
//! C functions `qed_l2_cache_set_max_entries` and `qed_l2_cache_set_policy`
//! change one cache afterwards. An invalid value is reported once on stderr,
//! naming the variable and the value, and the default is used.

use crate::cache::Policy;
use std::ffi::{CStr, CString, OsString};
use std::fmt::Display;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::ptr::null_mut;
use std::sync::atomic::{AtomicPtr, AtomicU8, Ordering};

/// What to do when a caller misuses the API (docs/misuse.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnMisuse {
    /// Print one line and `abort()`.
    Abort,
    /// Print one line, refuse the call, let the caller go on.
    Warn,
}

impl OnMisuse {
    /// The value of `QED_L2_CACHE_ON_MISUSE` that selects it.
    fn name(self) -> &'static str {
        match self {
            OnMisuse::Abort => "abort",
            OnMisuse::Warn => "warn",
        }
    }
}

/// `QED_L2_CACHE_SIZE`: a fixed maximum, or a size the cache finds for
/// itself from its miss curve (within `QED_L2_CACHE_MEMORY`, when set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// At most this many tables (a positive number), as QEMU's constant.
    Fixed(u32),
    /// Sized by the library: it starts at `AUTO_START` (50) tables.
    Auto,
}

/// The tables an auto cache starts with, before its curve says more.
/// (Not public: cbindgen would put a public constant in the C header.)
const AUTO_START: u32 = 50;

impl Size {
    /// The maximum a new cache starts with.
    pub fn initial_max(self) -> u32 {
        match self {
            Size::Fixed(n) => n,
            Size::Auto => AUTO_START,
        }
    }

    /// A positive integer below 2^32, or `auto`.
    fn parse(s: &str) -> Option<Size> {
        if s == "auto" {
            return Some(Size::Auto);
        }
        positive_u32(s).map(Size::Fixed)
    }
}

impl Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Size::Fixed(n) => write!(f, "{n}"),
            Size::Auto => f.write_str("auto"),
        }
    }
}

/// The settings read from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `QED_L2_CACHE_SIZE`.
    pub size: Size,
    /// `QED_L2_CACHE_MEMORY`: the most bytes the tables of all auto caches
    /// of the process hold together; `None`, no process-wide limit.
    pub memory: Option<u64>,
    /// `QED_L2_CACHE_POLICY`.
    pub policy: Policy,
    /// `QED_L2_CACHE_ON_MISUSE`.
    pub on_misuse: OnMisuse,
    /// `QED_L2_CACHE_TRACE`.
    pub trace: bool,
    /// `QED_L2_CACHE_REPORT`: the size advisor on for every cache, and a
    /// report on stderr when each is freed (docs/advisor.md).
    pub report: bool,
    /// `QED_L2_CACHE_STATS`: every cache's counters published in a file
    /// another process can read (docs/statistics.md).
    pub stats: bool,
    /// `XDG_RUNTIME_DIR`, when set to an absolute path (the XDG spec says
    /// to ignore a relative one): where the statistics file goes; without
    /// it, `/tmp/qed-l2-cache-UID`. Read only for `stats`.
    pub runtime_dir: Option<OsString>,
    /// `QED_L2_CACHE_IDLE`, in seconds, when set (`Some(0)`: never). Unset,
    /// the default depends on the cache's mode: see [`Config::idle_seconds`].
    pub idle: Option<u64>,
}

/// The defaults, each stated here once: the messages about a bad value
/// print them from here.
impl Default for Config {
    fn default() -> Self {
        Config {
            // QEMU's MAX_L2_CACHE_SIZE.
            size: Size::Fixed(50),
            memory: None,
            policy: Policy::Fifo,
            on_misuse: OnMisuse::Abort,
            trace: false,
            report: false,
            stats: false,
            runtime_dir: None,
            idle: None,
        }
    }
}

/// `QED_L2_CACHE_IDLE`'s default in auto mode: qcow2's `cache-clean-interval`.
pub(crate) const IDLE_DEFAULT_AUTO: u64 = 600;

/// The largest `QED_L2_CACHE_IDLE` taken: the most whole seconds whose
/// nanoseconds fit in a u64 (about 584 years). A larger value is refused
/// like any other bad value (reported, default used), never clamped.
pub(crate) const IDLE_MAX_SECONDS: u64 = u64::MAX / 1_000_000_000;

/// Seconds for `QED_L2_CACHE_IDLE`: decimal digits only (no sign, no
/// spaces, no exponent, no unit), at most [`IDLE_MAX_SECONDS`].
fn idle_seconds(s: &str) -> Option<Option<u64>> {
    let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits
        .then(|| s.parse::<u64>().ok())
        .flatten()
        .filter(|&n| n <= IDLE_MAX_SECONDS)
        .map(Some)
}

/// A positive decimal integer below 2^32: digits only (no sign, no
/// spaces, no base prefix; Rust's own parser would take "+7").
fn positive_u32(s: &str) -> Option<u32> {
    let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits.then(|| s.parse::<u32>().ok()).flatten().filter(|&n| n > 0)
}

/// Bytes: decimal digits, then at most one suffix `K`, `M`, `G` or `T`
/// (or lower case, as QEMU's own size options take), each a power of
/// 1024. Nothing else: no sign, spaces, base prefix, exponent or `B`.
/// Zero is refused (a budget of no bytes holds nothing; no budget is the
/// variable unset), and so is a value that does not fit in 64 bits.
fn bytes(s: &str) -> Option<u64> {
    let (digits, shift) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 10),
        b'M' | b'm' => (&s[..s.len() - 1], 20),
        b'G' | b'g' => (&s[..s.len() - 1], 30),
        b'T' | b't' => (&s[..s.len() - 1], 40),
        _ => (s, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = digits.parse::<u64>().ok()?;
    n.checked_mul(1u64 << shift).filter(|&b| b > 0)
}

/// An on/off switch: "1" on, "0" or empty off.
fn switch(s: &str) -> Option<bool> {
    match s {
        "1" => Some(true),
        "0" | "" => Some(false),
        _ => None,
    }
}

/// How a switch's default is shown in a message.
fn switch_name(on: bool) -> &'static str {
    if on {
        "on"
    } else {
        "off"
    }
}

impl Config {
    /// Builds the configuration from `var` (the environment, or a stand-in
    /// in tests), reporting every invalid value through `report`.
    pub fn from_vars(var: impl Fn(&str) -> Option<OsString>, mut report: impl FnMut(String)) -> Config {
        let d = Config::default();
        let mut read = Reader {
            var: &var,
            report: &mut report,
        };
        Config {
            size: read.setting(
                "QED_L2_CACHE_SIZE",
                "a positive integer below 2^32 or auto",
                d.size,
                d.size,
                Size::parse,
            ),
            memory: read.setting(
                "QED_L2_CACHE_MEMORY",
                "a positive number of bytes, with an optional K, M, G or T suffix (powers of 1024)",
                d.memory.map_or_else(|| "no limit".to_string(), |b| b.to_string()),
                d.memory,
                |s| bytes(s).map(Some),
            ),
            policy: read.setting(
                "QED_L2_CACHE_POLICY",
                "fifo, lru or sieve",
                d.policy.name(),
                d.policy,
                Policy::from_name,
            ),
            on_misuse: read.setting(
                "QED_L2_CACHE_ON_MISUSE",
                "abort or warn",
                d.on_misuse.name(),
                d.on_misuse,
                |s| {
                    [OnMisuse::Abort, OnMisuse::Warn]
                        .into_iter()
                        .find(|m| m.name() == s)
                },
            ),
            trace: read.setting(
                "QED_L2_CACHE_TRACE",
                "1 (on) or 0 (off)",
                switch_name(d.trace),
                d.trace,
                switch,
            ),
            report: read.setting(
                "QED_L2_CACHE_REPORT",
                "1 (on) or 0 (off)",
                switch_name(d.report),
                d.report,
                switch,
            ),
            stats: read.setting(
                "QED_L2_CACHE_STATS",
                "1 (on) or 0 (off)",
                switch_name(d.stats),
                d.stats,
                switch,
            ),
            runtime_dir: var("XDG_RUNTIME_DIR").filter(|d| d.as_bytes().first() == Some(&b'/')),
            idle: read.setting(
                "QED_L2_CACHE_IDLE",
                "seconds, decimal digits, at most 18446744073 (0: never)",
                "600 in auto mode, 0 otherwise",
                d.idle,
                idle_seconds,
            ),
        }
    }

    /// Idle release for a cache, in seconds (0: off): `QED_L2_CACHE_IDLE`
    /// when set, else [`IDLE_DEFAULT_AUTO`] for an auto-sized cache and 0
    /// (off, the C file's behaviour) for a fixed one.
    pub fn idle_seconds(&self, auto: bool) -> u64 {
        self.idle.unwrap_or(if auto { IDLE_DEFAULT_AUTO } else { 0 })
    }
}

/// Reads variables, reporting each bad value in one line.
struct Reader<'a> {
    var: &'a dyn Fn(&str) -> Option<OsString>,
    report: &'a mut dyn FnMut(String),
}

impl Reader<'_> {
    /// The value of `name` parsed by `parse`: `default` when unset, and
    /// after one line through `report` when invalid. `expected` says what
    /// is valid, `shown` how the default is written in that line.
    fn setting<T>(
        &mut self,
        name: &str,
        expected: &str,
        shown: impl Display,
        default: T,
        parse: impl Fn(&str) -> Option<T>,
    ) -> T {
        let Some(value) = (self.var)(name) else {
            return default;
        };
        match value.to_str().and_then(parse) {
            Some(v) => v,
            None => {
                // Escaped, so that a newline in the value cannot split the line.
                (self.report)(format!(
                    "qed-l2-cache: ignoring {name}=\"{}\": expected {expected} (default {shown}); using the default",
                    value.to_string_lossy().escape_debug()
                ));
                default
            }
        }
    }
}

/// The configuration, computed on first use. No lock: a thread that finds
/// it unset computes it and publishes it with a compare-and-swap (the
/// loser's copy is dropped), so a `fork()` at any moment leaves nothing
/// held. The environment is read with `getenv`, which takes no lock,
/// rather than `std::env`, which does.
static CONFIG: AtomicPtr<Config> = AtomicPtr::new(null_mut());

fn getenv(name: &str) -> Option<OsString> {
    let name = CString::new(name).ok()?;
    // SAFETY: a NUL-terminated name; the result, if not NULL, is a
    // NUL-terminated string owned by the environment, copied at once.
    unsafe {
        let v = libc::getenv(name.as_ptr());
        (!v.is_null()).then(|| OsString::from_vec(CStr::from_ptr(v).to_bytes().to_vec()))
    }
}

/// The process-wide configuration; the environment is read on first use.
#[inline]
pub fn get() -> &'static Config {
    let c = CONFIG.load(Ordering::Acquire);
    if c.is_null() {
        return first_get();
    }
    // SAFETY: a published configuration is never freed.
    unsafe { &*c }
}

/// `QED_L2_CACHE_TRACE` as the hit path reads it: [`TRACE_OFF`] once the
/// configuration is read and says off, anything else before (or on).
static TRACE: AtomicU8 = AtomicU8::new(0);
const TRACE_OFF: u8 = 1;
const TRACE_ON: u8 = 2;

/// True when `QED_L2_CACHE_TRACE=1`: [`Config::trace`] in one compare
/// once the configuration is read.
#[inline(always)]
pub fn trace() -> bool {
    TRACE.load(Ordering::Relaxed) != TRACE_OFF && trace_not_off()
}

#[cold]
#[inline(never)]
fn trace_not_off() -> bool {
    get().trace
}

#[cold]
fn first_get() -> &'static Config {
    let mut lines = Vec::new();
    let mine = Box::into_raw(Box::new(Config::from_vars(getenv, |line| lines.push(line))));
    match CONFIG.compare_exchange(null_mut(), mine, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {
            // SAFETY: just published, never freed.
            let trace = unsafe { (*mine).trace };
            TRACE.store(if trace { TRACE_ON } else { TRACE_OFF }, Ordering::Relaxed);
            // Reported once: only by the thread whose copy was published.
            for line in lines {
                crate::stderr::write_line(format_args!("{line}"));
            }
            // SAFETY: just published, never freed.
            unsafe { &*mine }
        }
        Err(winner) => {
            // SAFETY: `mine` was never published.
            drop(unsafe { Box::from_raw(mine) });
            // SAFETY: a published configuration is never freed.
            unsafe { &*winner }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(pairs: &[(&str, &str)]) -> (Config, Vec<String>) {
        let env: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        let mut lines = vec![];
        let config = Config::from_vars(|k| env.get(k).cloned(), |l| lines.push(l));
        (config, lines)
    }

    #[test]
    fn defaults_without_environment() {
        let (config, lines) = parse(&[]);
        assert_eq!(config, Config::default());
        assert_eq!(config.size, Size::Fixed(50));
        assert_eq!(config.memory, None);
        assert!(lines.is_empty());
    }

    #[test]
    fn valid_values_are_taken() {
        let (config, lines) = parse(&[
            ("QED_L2_CACHE_SIZE", "1024"),
            ("QED_L2_CACHE_POLICY", "sieve"),
            ("QED_L2_CACHE_ON_MISUSE", "warn"),
            ("QED_L2_CACHE_TRACE", "1"),
            ("QED_L2_CACHE_REPORT", "1"),
            ("QED_L2_CACHE_STATS", "1"),
            ("XDG_RUNTIME_DIR", "/run/user/1000"),
        ]);
        assert!(lines.is_empty(), "{lines:?}");
        assert!(config.report);
        assert!(config.stats);
        assert_eq!(config.runtime_dir, Some(OsString::from("/run/user/1000")));
        assert_eq!(config.size, Size::Fixed(1024));
        assert_eq!(config.policy, Policy::Sieve);
        assert_eq!(config.on_misuse, OnMisuse::Warn);
        assert!(config.trace);
    }

    #[test]
    fn invalid_values_are_named_once_and_defaulted() {
        let (config, lines) = parse(&[
            ("QED_L2_CACHE_SIZE", "0"),
            ("QED_L2_CACHE_POLICY", "random"),
            ("QED_L2_CACHE_ON_MISUSE", "ignore"),
            ("QED_L2_CACHE_TRACE", "yes"),
            ("QED_L2_CACHE_REPORT", "on"),
            ("QED_L2_CACHE_STATS", "yes"),
        ]);
        assert_eq!(config, Config::default());
        assert_eq!(lines.len(), 6, "{lines:?}");
        assert!(lines[4].contains("QED_L2_CACHE_REPORT=\"on\""), "{}", lines[4]);
        assert!(
            lines[5].contains("QED_L2_CACHE_STATS=\"yes\": expected 1 (on) or 0 (off) (default off)"),
            "{}",
            lines[5]
        );
        assert!(lines[0].contains("QED_L2_CACHE_SIZE=\"0\""), "{}", lines[0]);
        assert!(
            lines[1].contains("QED_L2_CACHE_POLICY=\"random\""),
            "{}",
            lines[1]
        );
        assert!(lines[2].contains("QED_L2_CACHE_ON_MISUSE=\"ignore\""));
        assert!(lines[3].contains("QED_L2_CACHE_TRACE=\"yes\""));
        // The messages name each default, from the one place it is set.
        assert!(lines[0]
            .ends_with("expected a positive integer below 2^32 or auto (default 50); using the default"));
        assert!(lines[1].ends_with("expected fifo, lru or sieve (default fifo); using the default"));
        assert!(lines[2].contains("expected abort or warn (default abort)"));
        assert!(
            lines[3].contains("expected 1 (on) or 0 (off) (default off)"),
            "{}",
            lines[3]
        );
        let (_, lines) = parse(&[("QED_L2_CACHE_SIZE", "-5")]);
        assert_eq!(lines.len(), 1);
        let (_, lines) = parse(&[("QED_L2_CACHE_SIZE", "99999999999")]);
        assert_eq!(lines.len(), 1);
        for bad in [
            " 50", "50 ", "+7", "-0", "", "0x10", "5 0", "Auto", "AUTO", " auto", "auto ",
        ] {
            let (config, lines) = parse(&[("QED_L2_CACHE_SIZE", bad)]);
            assert_eq!(lines.len(), 1, "{bad:?} must be reported");
            assert_eq!(config.size, Config::default().size, "{bad:?}");
        }
        let (_, lines) = parse(&[("QED_L2_CACHE_SIZE", "7\n")]);
        assert!(lines.len() == 1 && !lines[0].contains('\n'), "{lines:?}");
        let (config, lines) = parse(&[("QED_L2_CACHE_SIZE", "007")]);
        assert!(lines.is_empty());
        assert_eq!(config.size, Size::Fixed(7));
    }

    #[test]
    fn idle_seconds_are_strict_and_default_by_mode() {
        let (config, lines) = parse(&[]);
        assert!(lines.is_empty());
        assert_eq!(config.idle, None);
        assert_eq!((config.idle_seconds(false), config.idle_seconds(true)), (0, 600));
        for (value, want) in [
            ("0", 0),
            ("1", 1),
            ("0600", 600),
            ("18446744073", IDLE_MAX_SECONDS),
        ] {
            let (config, lines) = parse(&[("QED_L2_CACHE_IDLE", value)]);
            assert!(lines.is_empty(), "{value:?}: {lines:?}");
            assert_eq!(config.idle, Some(want), "{value:?}");
            assert_eq!(config.idle_seconds(false), want);
            assert_eq!(config.idle_seconds(true), want, "set: the same in both modes");
        }
        for bad in [
            "-1",
            "12Q",
            "1e9",
            " 64",
            "64 ",
            "+5",
            "5s",
            "",
            "0x10",
            "18446744074",
            "18446744073709551616",
            "99999999999999999999999",
        ] {
            let (config, lines) = parse(&[("QED_L2_CACHE_IDLE", bad)]);
            assert_eq!(lines.len(), 1, "{bad:?} must be reported once");
            assert!(
                lines[0].contains(&format!("QED_L2_CACHE_IDLE=\"{}\"", bad.escape_debug()))
                    && lines[0].contains("(default 600 in auto mode, 0 otherwise)"),
                "{}",
                lines[0]
            );
            assert_eq!(config.idle, None, "{bad:?}: the default");
        }
    }

    #[test]
    fn stats_switch_and_runtime_dir() {
        for (value, on) in [("1", true), ("0", false), ("", false)] {
            let (config, lines) = parse(&[("QED_L2_CACHE_STATS", value)]);
            assert!(lines.is_empty(), "{value:?}: {lines:?}");
            assert_eq!(config.stats, on, "{value:?}");
        }
        // A relative or empty XDG_RUNTIME_DIR is ignored (the XDG spec),
        // silently: the statistics file then goes under /tmp.
        for dir in ["", "run/user/1000", "./x"] {
            let (config, lines) = parse(&[("XDG_RUNTIME_DIR", dir)]);
            assert!(lines.is_empty() && config.runtime_dir.is_none(), "{dir:?}");
        }
    }

    #[test]
    fn size_auto() {
        let (config, lines) = parse(&[("QED_L2_CACHE_SIZE", "auto")]);
        assert!(lines.is_empty(), "{lines:?}");
        assert_eq!(config.size, Size::Auto);
        // An auto cache starts at 50 tables; a fixed one at its number.
        assert_eq!(Size::Auto.initial_max(), 50);
        assert_eq!(Size::Fixed(7).initial_max(), 7);
        assert_eq!(
            (Size::Auto.to_string(), Size::Fixed(7).to_string()),
            ("auto".into(), "7".into())
        );
    }

    #[test]
    fn memory_takes_bytes_with_a_binary_suffix() {
        for (value, want) in [
            ("1", 1u64),
            ("4096", 4096),
            ("007", 7),
            ("64K", 64 << 10),
            ("64k", 64 << 10),
            ("64M", 64 << 20),
            ("64m", 64 << 20),
            ("3G", 3 << 30),
            ("3g", 3 << 30),
            ("2T", 2 << 40),
            ("2t", 2 << 40),
            ("18446744073709551615", u64::MAX),
            ("16777215T", 16_777_215 << 40),
        ] {
            let (config, lines) = parse(&[("QED_L2_CACHE_MEMORY", value)]);
            assert!(lines.is_empty(), "{value:?}: {lines:?}");
            assert_eq!(config.memory, Some(want), "{value:?}");
        }
    }

    #[test]
    fn memory_refuses_everything_else_once() {
        for bad in [
            "-1",
            "12Q",
            "1e9",
            " 64M",
            "64M ",
            "0x10",
            "",
            "M",
            "k",
            "0",
            "0K",
            "+64M",
            "64MB",
            "64MM",
            "64 M",
            "1.5G",
            "64KiB",
            "18446744073709551616",
            "16777216T",
            "17179869184G",
            "64M\n",
        ] {
            let (config, lines) = parse(&[("QED_L2_CACHE_MEMORY", bad)]);
            assert_eq!(lines.len(), 1, "{bad:?} must be reported once: {lines:?}");
            assert_eq!(config.memory, None, "{bad:?}");
            assert_eq!(config, Config::default(), "{bad:?}");
            assert!(!lines[0].contains('\n'), "{lines:?}");
        }
        let (_, lines) = parse(&[("QED_L2_CACHE_MEMORY", "12Q")]);
        assert_eq!(
            lines[0],
            "qed-l2-cache: ignoring QED_L2_CACHE_MEMORY=\"12Q\": expected a positive number of \
             bytes, with an optional K, M, G or T suffix (powers of 1024) (default no limit); \
             using the default"
        );
    }
}
