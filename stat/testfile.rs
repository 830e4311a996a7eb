// SPDX-License-Identifier: LGPL-2.1-or-later
//! Hand-written statistics files for the tests (the program's unit tests,
//! tests/stat_cli.rs, the fuzz replay): a header and records laid out by
//! `stats_layout`, as the writer lays them out.

use crate::stats_layout::{self as layout, Prediction, Record};

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

/// A valid header claiming `records` records, written by `pid`.
pub fn header(records: u32, pid: u32) -> Vec<u8> {
    use layout::header as h;
    let mut b = vec![0u8; layout::HEADER_BYTES];
    b[..8].copy_from_slice(&layout::MAGIC);
    put_u32(&mut b, h::VERSION, layout::VERSION);
    put_u32(&mut b, h::HEADER_BYTES, layout::HEADER_BYTES as u32);
    put_u32(&mut b, h::RECORD_BYTES, layout::RECORD_BYTES as u32);
    put_u32(&mut b, h::BYTE_ORDER, layout::BYTE_ORDER);
    put_u32(&mut b, h::PID, pid);
    put_u32(&mut b, h::RECORDS, records);
    put_u64(&mut b, h::START_UNIX_NS, 1_700_000_000_000_000_000);
    b
}

/// The bytes of a live record (`r.index` is not stored: it is the place).
pub fn record(r: &Record) -> Vec<u8> {
    use layout::record as f;
    let mut b = vec![0u8; layout::RECORD_BYTES];
    put_u32(&mut b, f::STATE, layout::STATE_LIVE);
    put_u32(&mut b, f::POLICY, r.policy);
    put_u64(&mut b, f::SERIAL, r.serial);
    put_u64(&mut b, f::HITS, r.hits);
    put_u64(&mut b, f::MISSES, r.misses);
    put_u64(&mut b, f::COMMITS, r.commits);
    put_u64(&mut b, f::DUPLICATE_COMMITS, r.duplicate_commits);
    put_u64(&mut b, f::EVICTIONS, r.evictions);
    put_u64(&mut b, f::PEAK_ENTRIES, r.peak_entries);
    put_u64(&mut b, f::N_ENTRIES, r.n_entries);
    put_u64(&mut b, f::MAX_ENTRIES, r.max_entries);
    put_u64(&mut b, f::TABLE_BYTES, r.table_bytes);
    put_u64(&mut b, f::ADVISOR_FINDS, r.advisor_finds);
    put_u32(&mut b, f::RECOMMENDED, r.recommended);
    put_u32(&mut b, f::PREDICTIONS, r.predictions.len() as u32);
    for (k, p) in r.predictions.iter().enumerate() {
        put_u32(&mut b, f::PAIRS + 16 * k, p.size);
        put_u64(&mut b, f::PAIRS + 16 * k + 8, p.misses);
    }
    if let Some(auto) = r.auto {
        put_u32(&mut b, f::SIZING, layout::sizing_word(auto));
        put_u64(&mut b, f::IDLE_RELEASES, r.idle_releases.unwrap_or(0));
    }
    b
}

/// A whole file: the header, then each slot (`None`: a free record).
pub fn file(slots: &[Option<Record>], pid: u32) -> Vec<u8> {
    let mut b = header(slots.len() as u32, pid);
    for s in slots {
        match s {
            Some(r) => b.extend(record(r)),
            None => b.extend(vec![0u8; layout::RECORD_BYTES]),
        }
    }
    b
}

/// A cache with distinct counters, in slot `index`, numbered `serial`.
pub fn sample(index: usize, serial: u64) -> Record {
    let k = serial * 1000;
    Record {
        index,
        policy: (serial % 3) as u32,
        serial,
        hits: k + 750,
        misses: k + 250,
        commits: k + 260,
        duplicate_commits: 10,
        evictions: 200,
        peak_entries: 50,
        n_entries: 40,
        max_entries: 50,
        table_bytes: 40 * 256 * 1024,
        advisor_finds: k + 1000,
        recommended: 75,
        predictions: vec![
            Prediction {
                size: 25,
                misses: 400,
            },
            Prediction {
                size: 50,
                misses: 250,
            },
            Prediction {
                size: 75,
                misses: 100,
            },
        ],
        auto: Some(serial % 2 == 0),
        idle_releases: Some(serial),
    }
}

/// The usual test file: slot 1 free, slots 2 and 3 live with serials 2
/// and 1 (out of init order, so that the sort by serial shows).
pub fn typical(pid: u32) -> Vec<u8> {
    file(&[None, Some(sample(1, 2)), Some(sample(2, 1))], pid)
}

/// Checks that `s` is one JSON value (RFC 8259), nothing before or after
/// it but white space: a small recursive-descent checker, so that the
/// tests need no JSON library.
pub fn json_valid(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let mut p = Json { b, i: 0, depth: 0 };
    p.ws();
    p.value()?;
    p.ws();
    if p.i != b.len() {
        return Err(format!("text after the value at byte {}", p.i));
    }
    Ok(())
}

struct Json<'a> {
    b: &'a [u8],
    i: usize,
    depth: usize,
}

impl Json<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what} at byte {}", self.i))
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            self.err(&format!("expected '{}'", c as char))
        }
    }

    fn value(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > 64 {
            return self.err("nested too deep");
        }
        let r = match self.peek() {
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => self.string(),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.word("true"),
            Some(b'f') => self.word("false"),
            Some(b'n') => self.word("null"),
            _ => self.err("expected a value"),
        };
        self.depth -= 1;
        r
    }

    fn word(&mut self, w: &str) -> Result<(), String> {
        if self.b[self.i..].starts_with(w.as_bytes()) {
            self.i += w.len();
            Ok(())
        } else {
            self.err("bad literal")
        }
    }

    fn object(&mut self) -> Result<(), String> {
        self.eat(b'{')?;
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.ws();
            self.string()?;
            self.ws();
            self.eat(b':')?;
            self.ws();
            self.value()?;
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return self.err("expected ',' or '}'"),
            }
        }
    }

    fn array(&mut self) -> Result<(), String> {
        self.eat(b'[')?;
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.ws();
            self.value()?;
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return self.err("expected ',' or ']'"),
            }
        }
    }

    fn string(&mut self) -> Result<(), String> {
        self.eat(b'"')?;
        loop {
            match self.peek() {
                None => return self.err("unterminated string"),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 1,
                        Some(b'u') => {
                            let hex = self.b.get(self.i + 1..self.i + 5);
                            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                                return self.err("bad \\u escape");
                            }
                            self.i += 5;
                        }
                        _ => return self.err("bad escape"),
                    }
                }
                Some(c) if c < 0x20 => return self.err("control character in a string"),
                Some(_) => self.i += 1,
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Result<(), String> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return self.err("bad number"),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return self.err("no digit after '.'");
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return self.err("no digit in the exponent");
            }
        }
        Ok(())
    }
}
