// SPDX-License-Identifier: LGPL-2.1-or-later
//! The layout of a live statistics file (docs/statistics.md): what a
//! process with `QED_L2_CACHE_STATS=1` publishes and `qed-l2-cache-stat`
//! reads. Stated once: the library compiles this file as a module and the
//! reader includes the same file. It knows nothing of either side: byte
//! offsets, and checked decoding of bytes that may be anything.
//!
//! A file is a header, then one record per cache slot. All integers are
//! in the writer's byte order, which the header's `byte_order` word lets a
//! reader check. Every field a reader uses is an aligned 8-byte word (or
//! 4-byte, for the small ones) that the writer stores whole.
//!
//! Header (`HEADER_BYTES`):
//!
//! | offset | field | |
//! |---:|---|---|
//! | 0 | magic | `MAGIC` |
//! | 8 | version | u32, `VERSION` |
//! | 12 | header_bytes | u32, `HEADER_BYTES` |
//! | 16 | record_bytes | u32, `RECORD_BYTES` |
//! | 20 | byte_order | u32, `BYTE_ORDER` as the writer stores it |
//! | 24 | pid | u32, the writer's pid as it saw it (its own namespace) |
//! | 28 | records | u32, records the file holds (it may be longer: a record is valid only if the file covers it) |
//! | 32 | start_unix_ns | u64, when the writer created the file |
//!
//! Record `i` (at `HEADER_BYTES + i * RECORD_BYTES`), the cache whose slot
//! number is `i + 1`:
//!
//! | offset | field | |
//! |---:|---|---|
//! | 0 | state | u32: `STATE_FREE` or `STATE_LIVE` |
//! | 4 | policy | u32: 0 fifo, 1 lru, 2 sieve |
//! | 8 | serial | u64: the cache's number in init order, from 1 |
//! | 16.. | hits, misses, commits, duplicate_commits, evictions, peak_entries | u64 each: `QedL2CacheStats` since the cache's init |
//! | 64 | n_entries | u64 |
//! | 72 | max_entries | u64 |
//! | 80 | table_bytes | u64: heap bytes of the tables cached now |
//! | 88 | advisor_finds | u64: finds the advisor saw; 0 when it is off |
//! | 96 | recommended | u32: the size the advisor would set, 0 for none |
//! | 100 | predictions | u32: how many of the pairs below are valid |
//! | 104 | prediction pairs | `MAX_PREDICTIONS` x (size u32, pad u32, misses u64) |
//! | 232 | idle_releases | u64: tables given back idle (not evictions); valid only when `sizing` is not 0 |
//! | 240 | sizing | u32: `SIZING_UNSAID` (a writer before these two fields, which left them 0), `SIZING_FIXED`, or `SIZING_AUTO` (the cache sizes itself: `max_entries` is its target) |
//!
//! The last two fields were added in space every earlier writer left 0,
//! so the layout's version did not change: a reader of either age reads
//! a writer of either age.

/// The first 8 bytes of every file.
pub const MAGIC: [u8; 8] = *b"QEDL2STA";
/// The layout's version; a reader refuses any other.
pub const VERSION: u32 = 1;
/// Bytes of the header.
pub const HEADER_BYTES: usize = 64;
/// Bytes of one record.
pub const RECORD_BYTES: usize = 256;
/// Written as a native u32: reads back as this only in the writer's byte
/// order.
pub const BYTE_ORDER: u32 = 0x0102_0304;
/// Prediction pairs a record holds at most (the advisor tracks at most
/// five sizes besides the cache's own).
pub const MAX_PREDICTIONS: usize = 8;

/// `sizing` of a record whose writer did not say (it predates the field).
pub const SIZING_UNSAID: u32 = 0;
/// `sizing` of a cache whose maximum is fixed.
pub const SIZING_FIXED: u32 = 1;
/// `sizing` of a cache that sizes itself.
pub const SIZING_AUTO: u32 = 2;

/// The `sizing` word a writer stores for a cache (auto or fixed); the
/// reader's inverse is in [`parse_record`].
pub fn sizing_word(auto: bool) -> u32 {
    if auto {
        SIZING_AUTO
    } else {
        SIZING_FIXED
    }
}

/// `state` of a record no cache uses.
pub const STATE_FREE: u32 = 0;
/// `state` of a record a live cache publishes into.
pub const STATE_LIVE: u32 = 1;

/// Header offsets.
pub mod header {
    /// See the module's table.
    pub const VERSION: usize = 8;
    /// See the module's table.
    pub const HEADER_BYTES: usize = 12;
    /// See the module's table.
    pub const RECORD_BYTES: usize = 16;
    /// See the module's table.
    pub const BYTE_ORDER: usize = 20;
    /// See the module's table.
    pub const PID: usize = 24;
    /// See the module's table.
    pub const RECORDS: usize = 28;
    /// See the module's table.
    pub const START_UNIX_NS: usize = 32;
}

/// Record offsets.
pub mod record {
    /// See the module's table.
    pub const STATE: usize = 0;
    /// See the module's table.
    pub const POLICY: usize = 4;
    /// See the module's table.
    pub const SERIAL: usize = 8;
    /// See the module's table.
    pub const HITS: usize = 16;
    /// See the module's table.
    pub const MISSES: usize = 24;
    /// See the module's table.
    pub const COMMITS: usize = 32;
    /// See the module's table.
    pub const DUPLICATE_COMMITS: usize = 40;
    /// See the module's table.
    pub const EVICTIONS: usize = 48;
    /// See the module's table.
    pub const PEAK_ENTRIES: usize = 56;
    /// See the module's table.
    pub const N_ENTRIES: usize = 64;
    /// See the module's table.
    pub const MAX_ENTRIES: usize = 72;
    /// See the module's table.
    pub const TABLE_BYTES: usize = 80;
    /// See the module's table.
    pub const ADVISOR_FINDS: usize = 88;
    /// See the module's table.
    pub const RECOMMENDED: usize = 96;
    /// See the module's table.
    pub const PREDICTIONS: usize = 100;
    /// See the module's table: pair `k` is at `PAIRS + 16 * k` (size) and
    /// `PAIRS + 16 * k + 8` (misses).
    pub const PAIRS: usize = 104;
    /// See the module's table.
    pub const IDLE_RELEASES: usize = 232;
    /// See the module's table.
    pub const SIZING: usize = 240;
}

const _: () = assert!(record::PAIRS + 16 * MAX_PREDICTIONS <= record::IDLE_RELEASES);
const _: () = assert!(record::SIZING + 4 <= RECORD_BYTES);

/// What is wrong with a file, for a message naming it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// Shorter than its header (or than the records it claims).
    Truncated {
        /// Bytes there are.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
    /// Not a statistics file.
    Magic,
    /// Another version of the layout.
    Version(u32),
    /// Written on a machine of the other byte order.
    ByteOrder,
    /// Header or record sizes that are not this version's.
    Sizes {
        /// The header's `header_bytes`.
        header: u32,
        /// The header's `record_bytes`.
        record: u32,
    },
    /// A record's field out of range.
    Record {
        /// The record's index.
        index: usize,
        /// What is wrong.
        what: &'static str,
    },
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::Truncated { len, need } => write!(f, "truncated: {len} bytes, {need} needed"),
            Invalid::Magic => f.write_str("not a qed-l2-cache statistics file (bad magic)"),
            Invalid::Version(v) => write!(f, "layout version {v}, this reader knows {VERSION}"),
            Invalid::ByteOrder => f.write_str("written with another byte order"),
            Invalid::Sizes { header, record } => {
                write!(
                    f,
                    "header of {header} bytes and records of {record}: not this version's"
                )
            }
            Invalid::Record { index, what } => write!(f, "record {index}: {what}"),
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// A checked header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The writer's pid, as it saw it.
    pub pid: u32,
    /// Records the header claims.
    pub records: u32,
    /// When the file was created, ns since the Unix epoch.
    pub start_unix_ns: u64,
}

/// Decodes and checks a header from the first bytes of a file.
pub fn parse_header(b: &[u8]) -> Result<Header, Invalid> {
    if b.len() < HEADER_BYTES {
        return Err(Invalid::Truncated {
            len: b.len(),
            need: HEADER_BYTES,
        });
    }
    if b[..8] != MAGIC {
        return Err(Invalid::Magic);
    }
    if u32_at(b, header::BYTE_ORDER) != BYTE_ORDER {
        return Err(Invalid::ByteOrder);
    }
    let version = u32_at(b, header::VERSION);
    if version != VERSION {
        return Err(Invalid::Version(version));
    }
    let (hb, rb) = (u32_at(b, header::HEADER_BYTES), u32_at(b, header::RECORD_BYTES));
    if hb as usize != HEADER_BYTES || rb as usize != RECORD_BYTES {
        return Err(Invalid::Sizes {
            header: hb,
            record: rb,
        });
    }
    Ok(Header {
        pid: u32_at(b, header::PID),
        records: u32_at(b, header::RECORDS),
        start_unix_ns: u64_at(b, header::START_UNIX_NS),
    })
}

/// One advisor prediction: table reads at a size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prediction {
    /// Maximum number of cached tables.
    pub size: u32,
    /// Table reads predicted at that size since the advisor started.
    pub misses: u64,
}

/// A checked live record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record's index (the cache's slot number minus one).
    pub index: usize,
    /// 0 fifo, 1 lru, 2 sieve.
    pub policy: u32,
    /// The cache's number in init order.
    pub serial: u64,
    /// The counters, in `QedL2CacheStats` order.
    pub hits: u64,
    /// See `hits`.
    pub misses: u64,
    /// See `hits`.
    pub commits: u64,
    /// See `hits`.
    pub duplicate_commits: u64,
    /// See `hits`.
    pub evictions: u64,
    /// See `hits`.
    pub peak_entries: u64,
    /// Entries cached now.
    pub n_entries: u64,
    /// The maximum.
    pub max_entries: u64,
    /// Heap bytes of the tables cached now.
    pub table_bytes: u64,
    /// Finds the advisor saw (0: off).
    pub advisor_finds: u64,
    /// The size the advisor would set (0: none).
    pub recommended: u32,
    /// The advisor's predictions, ascending sizes.
    pub predictions: Vec<Prediction>,
    /// True for a cache that sizes itself, false for a fixed one; `None`
    /// when the writer does not say.
    pub auto: Option<bool>,
    /// Tables given back idle; `None` when the writer does not say.
    pub idle_releases: Option<u64>,
}

/// The name of policy number `p`.
pub fn policy_name(p: u32) -> Option<&'static str> {
    ["fifo", "lru", "sieve"].get(p as usize).copied()
}

/// Decodes record `index` from its `RECORD_BYTES` bytes: `None` for a
/// free record, an error for one that is neither free nor a valid live
/// record.
pub fn parse_record(index: usize, b: &[u8]) -> Result<Option<Record>, Invalid> {
    if b.len() < RECORD_BYTES {
        return Err(Invalid::Truncated {
            len: b.len(),
            need: RECORD_BYTES,
        });
    }
    let bad = |what| Invalid::Record { index, what };
    match u32_at(b, record::STATE) {
        STATE_FREE => return Ok(None),
        STATE_LIVE => {}
        _ => return Err(bad("unknown state")),
    }
    let policy = u32_at(b, record::POLICY);
    if policy_name(policy).is_none() {
        return Err(bad("unknown policy"));
    }
    let auto = match u32_at(b, record::SIZING) {
        SIZING_UNSAID => None,
        SIZING_FIXED => Some(false),
        SIZING_AUTO => Some(true),
        _ => return Err(bad("unknown sizing")),
    };
    let n = u32_at(b, record::PREDICTIONS) as usize;
    if n > MAX_PREDICTIONS {
        return Err(bad("more predictions than a record holds"));
    }
    let predictions = (0..n)
        .map(|k| Prediction {
            size: u32_at(b, record::PAIRS + 16 * k),
            misses: u64_at(b, record::PAIRS + 16 * k + 8),
        })
        .collect();
    Ok(Some(Record {
        index,
        policy,
        serial: u64_at(b, record::SERIAL),
        hits: u64_at(b, record::HITS),
        misses: u64_at(b, record::MISSES),
        commits: u64_at(b, record::COMMITS),
        duplicate_commits: u64_at(b, record::DUPLICATE_COMMITS),
        evictions: u64_at(b, record::EVICTIONS),
        peak_entries: u64_at(b, record::PEAK_ENTRIES),
        n_entries: u64_at(b, record::N_ENTRIES),
        max_entries: u64_at(b, record::MAX_ENTRIES),
        table_bytes: u64_at(b, record::TABLE_BYTES),
        advisor_finds: u64_at(b, record::ADVISOR_FINDS),
        recommended: u32_at(b, record::RECOMMENDED),
        predictions,
        auto,
        idle_releases: auto.map(|_| u64_at(b, record::IDLE_RELEASES)),
    }))
}

/// The records a file of `len` bytes whose header claims `claimed` holds:
/// only those it covers whole (the writer grows the file before it
/// raises the count, so a shorter file is one being cut or forged).
pub fn records_covered(len: usize, claimed: u32) -> usize {
    let room = len.saturating_sub(HEADER_BYTES) / RECORD_BYTES;
    room.min(claimed as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_bytes() -> Vec<u8> {
        let mut b = vec![0u8; HEADER_BYTES];
        b[..8].copy_from_slice(&MAGIC);
        b[header::VERSION..][..4].copy_from_slice(&VERSION.to_ne_bytes());
        b[header::HEADER_BYTES..][..4].copy_from_slice(&(HEADER_BYTES as u32).to_ne_bytes());
        b[header::RECORD_BYTES..][..4].copy_from_slice(&(RECORD_BYTES as u32).to_ne_bytes());
        b[header::BYTE_ORDER..][..4].copy_from_slice(&BYTE_ORDER.to_ne_bytes());
        b[header::PID..][..4].copy_from_slice(&42u32.to_ne_bytes());
        b[header::RECORDS..][..4].copy_from_slice(&3u32.to_ne_bytes());
        b
    }

    #[test]
    fn a_good_header_parses_and_each_fault_is_named() {
        let good = header_bytes();
        assert_eq!(parse_header(&good).unwrap().pid, 42);
        assert!(matches!(
            parse_header(&good[..10]),
            Err(Invalid::Truncated { .. })
        ));
        let mut b = good.clone();
        b[0] = b'X';
        assert_eq!(parse_header(&b), Err(Invalid::Magic));
        let mut b = good.clone();
        b[header::VERSION..][..4].copy_from_slice(&2u32.to_ne_bytes());
        assert_eq!(parse_header(&b), Err(Invalid::Version(2)));
        let mut b = good.clone();
        b[header::BYTE_ORDER..][..4].copy_from_slice(&BYTE_ORDER.swap_bytes().to_ne_bytes());
        assert_eq!(parse_header(&b), Err(Invalid::ByteOrder));
        let mut b = good;
        b[header::RECORD_BYTES..][..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(matches!(parse_header(&b), Err(Invalid::Sizes { .. })));
    }

    #[test]
    fn records_are_checked() {
        let mut r = vec![0u8; RECORD_BYTES];
        assert_eq!(parse_record(0, &r), Ok(None));
        r[..4].copy_from_slice(&STATE_LIVE.to_ne_bytes());
        r[record::HITS..][..8].copy_from_slice(&7u64.to_ne_bytes());
        assert_eq!(parse_record(0, &r).unwrap().unwrap().hits, 7);
        r[record::PREDICTIONS..][..4].copy_from_slice(&9u32.to_ne_bytes());
        assert!(parse_record(0, &r).is_err());
        r[record::PREDICTIONS..][..4].copy_from_slice(&0u32.to_ne_bytes());
        r[record::POLICY..][..4].copy_from_slice(&3u32.to_ne_bytes());
        assert!(parse_record(0, &r).is_err());
        r[..4].copy_from_slice(&7u32.to_ne_bytes());
        assert!(parse_record(0, &r).is_err());
        assert!(parse_record(0, &r[..10]).is_err());
    }

    #[test]
    fn sizing_and_idle_releases_are_read_only_when_the_writer_says() {
        let mut r = vec![0u8; RECORD_BYTES];
        r[..4].copy_from_slice(&STATE_LIVE.to_ne_bytes());
        r[record::IDLE_RELEASES..][..8].copy_from_slice(&5u64.to_ne_bytes());
        // An earlier writer leaves `sizing` 0: neither field is said.
        let old = parse_record(0, &r).unwrap().unwrap();
        assert_eq!((old.auto, old.idle_releases), (None, None));
        r[record::SIZING..][..4].copy_from_slice(&SIZING_AUTO.to_ne_bytes());
        let auto = parse_record(0, &r).unwrap().unwrap();
        assert_eq!((auto.auto, auto.idle_releases), (Some(true), Some(5)));
        r[record::SIZING..][..4].copy_from_slice(&SIZING_FIXED.to_ne_bytes());
        assert_eq!(parse_record(0, &r).unwrap().unwrap().auto, Some(false));
        r[record::SIZING..][..4].copy_from_slice(&3u32.to_ne_bytes());
        assert_eq!(
            parse_record(0, &r),
            Err(Invalid::Record {
                index: 0,
                what: "unknown sizing"
            })
        );
    }

    #[test]
    fn only_records_the_file_covers_count() {
        assert_eq!(records_covered(HEADER_BYTES + 2 * RECORD_BYTES, 3), 2);
        assert_eq!(records_covered(HEADER_BYTES + 2 * RECORD_BYTES, 1), 1);
        assert_eq!(records_covered(3, u32::MAX), 0);
        assert_eq!(records_covered(usize::MAX, u32::MAX), u32::MAX as usize);
    }
}
