// SPDX-License-Identifier: LGPL-2.1-or-later
//! Reading one statistics file into a snapshot: the header, then the
//! records, each checked with `stats_layout`. Everything here works on a
//! [`Source`] (a file, or bytes in memory for the tests and the fuzz
//! target), so the checks the program makes are the checks the tests make.
//!
//! The file is untrusted: every size is checked before it is used, what is
//! read is capped ([`MAX_RECORD_BYTES`]), and a file that shrinks while it
//! is read is refused rather than half-read.

use crate::stats_layout::{self as layout, Header, Invalid, Record};
use std::fmt;
use std::io;

/// At most this many bytes of records are read from one file (1 MiB:
/// 4,096 caches in one process). A file that holds more is read up to
/// there, with a note.
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// [`MAX_RECORD_BYTES`] in records.
pub const MAX_RECORDS: usize = MAX_RECORD_BYTES / layout::RECORD_BYTES;

/// Where the bytes come from: positioned reads and the current size, like
/// `pread(2)` and `fstat(2)` on a file (never a mapping: a writer that cuts
/// the file must not be able to kill the reader with SIGBUS).
pub trait Source {
    /// The size now, in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Reads at `offset` into `buf`; fewer bytes than asked only at the
    /// end of the data (0 there).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl Source for std::fs::File {
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }
}

/// Bytes in memory (the tests' and the fuzz target's files).
impl Source for [u8] {
    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(self.len());
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
}

/// Why a file is not read.
#[derive(Debug)]
pub enum Problem {
    /// The layout's checks refused it.
    Layout(Invalid),
    /// The header claims more records than the file holds.
    CountPastEnd {
        /// Records claimed.
        claimed: u32,
        /// The file's size.
        len: u64,
    },
    /// The file got shorter while it was read.
    Shrank {
        /// Bytes that were there when the read was planned.
        planned: u64,
        /// Bytes found.
        found: u64,
    },
    /// A read or fstat failed.
    Io(io::Error),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Layout(e) => e.fmt(f),
            Problem::CountPastEnd { claimed, len } => write!(
                f,
                "the header claims {claimed} records, but its {len} bytes hold {}",
                layout::records_covered(usize::try_from(*len).unwrap_or(usize::MAX), *claimed)
            ),
            Problem::Shrank { planned, found } => {
                write!(f, "shrank while read ({planned} bytes, then {found})")
            }
            Problem::Io(e) => write!(f, "read error: {e}"),
        }
    }
}

impl From<Invalid> for Problem {
    fn from(e: Invalid) -> Self {
        Problem::Layout(e)
    }
}

impl From<io::Error> for Problem {
    fn from(e: io::Error) -> Self {
        Problem::Io(e)
    }
}

/// What one read of a file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The checked header.
    pub header: Header,
    /// The live records, by serial (init order).
    pub records: Vec<Record>,
    /// The records the header claims beyond [`MAX_RECORDS`], not read.
    pub unread: usize,
}

/// Reads up to `buf.len()` bytes at `offset`, retrying short reads and
/// EINTR; returns how many there were (fewer only at the end of the data).
fn read_full(src: &(impl Source + ?Sized), buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match src.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Reads and checks the header only.
pub fn read_header(src: &(impl Source + ?Sized)) -> Result<Header, Problem> {
    let mut b = [0u8; layout::HEADER_BYTES];
    let n = read_full(src, &mut b, 0)?;
    Ok(layout::parse_header(&b[..n])?)
}

/// Reads a whole file: the header, then every record it covers (at most
/// [`MAX_RECORDS`]), each read twice (see [`merge`]).
pub fn read_snapshot(src: &(impl Source + ?Sized)) -> Result<Snapshot, Problem> {
    let header = read_header(src)?;
    // The size after the header: the writer grows the file before it
    // raises the count, so a count read first is covered by a size read
    // after it, unless the file is being cut or was forged.
    let len = src.size()?;
    let covered = layout::records_covered(usize::try_from(len).unwrap_or(usize::MAX), header.records);
    if covered < header.records as usize {
        return Err(Problem::CountPastEnd {
            claimed: header.records,
            len,
        });
    }
    let n = covered.min(MAX_RECORDS);
    let bytes = n * layout::RECORD_BYTES;
    let planned = (layout::HEADER_BYTES + bytes) as u64;
    let mut first = vec![0u8; bytes];
    let mut second = vec![0u8; bytes];
    for buf in [&mut first, &mut second] {
        let got = read_full(src, buf, layout::HEADER_BYTES as u64)?;
        if got < bytes {
            return Err(Problem::Shrank {
                planned,
                found: (layout::HEADER_BYTES + got) as u64,
            });
        }
    }
    let mut records = Vec::new();
    for i in 0..n {
        let at = i * layout::RECORD_BYTES..(i + 1) * layout::RECORD_BYTES;
        let a = layout::parse_record(i, &first[at.clone()]);
        let b = layout::parse_record(i, &second[at]);
        if let Some(r) = merge(a, b)? {
            records.push(r);
        }
    }
    records.sort_by_key(|r| (r.serial, r.index));
    Ok(Snapshot {
        header,
        records,
        unread: header.records as usize - n,
    })
}

/// One record from its two reads.
///
/// The writer stores every counter as a whole aligned word, but `pread`
/// copies bytes with no atomicity promise, so a read that meets a store
/// can see a word half old, half new. Each record is therefore read twice.
/// When both reads are the same live cache (same serial), each counter is
/// the larger of the two: the counters never go back, so a second value
/// smaller than the first can only be a torn copy. The other fields
/// (sizes, policy, advice) are the second read's. When the reads are of
/// different caches (the slot was reused between them), or one of them is
/// not valid (a torn word in the state or a count), the valid and later
/// one is taken; only a record invalid in both reads is an error.
pub fn merge(
    first: Result<Option<Record>, Invalid>,
    second: Result<Option<Record>, Invalid>,
) -> Result<Option<Record>, Invalid> {
    match (first, second) {
        (Ok(Some(a)), Ok(Some(b))) if a.serial == b.serial => {
            let same_sizes = a.predictions.len() == b.predictions.len()
                && a.predictions
                    .iter()
                    .zip(&b.predictions)
                    .all(|(p, q)| p.size == q.size);
            let predictions = if same_sizes {
                a.predictions
                    .iter()
                    .zip(&b.predictions)
                    .map(|(p, q)| layout::Prediction {
                        size: q.size,
                        misses: p.misses.max(q.misses),
                    })
                    .collect()
            } else {
                b.predictions.clone()
            };
            Ok(Some(Record {
                hits: a.hits.max(b.hits),
                misses: a.misses.max(b.misses),
                commits: a.commits.max(b.commits),
                duplicate_commits: a.duplicate_commits.max(b.duplicate_commits),
                evictions: a.evictions.max(b.evictions),
                peak_entries: a.peak_entries.max(b.peak_entries),
                advisor_finds: a.advisor_finds.max(b.advisor_finds),
                idle_releases: a.idle_releases.max(b.idle_releases),
                predictions,
                ..b
            }))
        }
        (_, Ok(b)) => Ok(b),
        (Ok(a), Err(_)) => Ok(a),
        (Err(_), Err(e)) => Err(e),
    }
}
