// SPDX-License-Identifier: LGPL-2.1-or-later
//! A reference model of the cache and a random driver that calls the library
//! through its C ABI, checking every step against the model.
//!
//! Shared (with `#[path]`) by `tests/model.rs`, `tests/model_warn.rs` and
//! the cargo-fuzz target `fuzz/fuzz_targets/model.rs`.
//!
//! The expectations come from `docs/behaviour.md`, not from the library's
//! source: each rule of [`Model`] names the section of that page it
//! implements (misuse rules: `docs/misuse.md`; the released-entry limit:
//! `docs/misuse.md`, "Limits"). Where the page and the library disagree,
//! the model follows the page and the test fails.
//!
//! The model is deliberately naive: the cached entries are a `Vec` in list
//! order (head first), lookups are linear searches, and each entry carries
//! the reference count it must have. FIFO and LRU evict by walking from the
//! head past entries in use; LRU moves every hit to the tail. SIEVE keeps a
//! visited mark per entry (not set by hits on the fresh entry) and a hand
//! that sweeps towards the tail, wrapping to the head, passing entries in
//! use, clearing and passing visited ones, evicting the first other one,
//! and stopping once there is room or every entry left is in use.
//!
//! After every operation the driver checks: what each call returned, the
//! C-visible list (every QTAILQ link, the order, `n_entries`), every live
//! entry (reference count, offset, table pointer and contents, links of
//! uncached entries, that the library still sees it as live), that entries
//! released during the step are released, the counters, and that the model
//! agrees with itself (each entry's count = the cache's reference + the
//! requests holding it).
//!
//! Process-wide state matters: the released-entry check relies on the
//! library still recognising the entries released in the step (it does for
//! the last 4,096 a thread released: `docs/misuse.md`, "Limits"), so only
//! one driver may run in a process at a time (tests serialize with a
//! mutex).

#![allow(dead_code)]

use qed_l2_cache::{
    qed_alloc_l2_cache_entry, qed_commit_l2_cache_entry, qed_find_l2_cache_entry, qed_free_l2_cache,
    qed_init_l2_cache, qed_l2_cache_get_stats, qed_l2_cache_set_max_entries, qed_l2_cache_set_policy,
    qed_unref_l2_cache_entry, CachedL2Table, L2TableCache, QedL2CacheStats,
};
use std::ffi::c_void;
use std::fmt;
use std::ptr::{addr_of_mut, null_mut};

// ---- the only uses of `qed_l2_cache::internals` (test-only, unstable) ----
//
// The model, `tests/model.rs`, `tests/model_warn.rs` and the fuzz target
// reach the library's internals only through the items below.

/// The eviction policies, in the order of their C constants (`Policy::ALL`).
pub use qed_l2_cache::internals::Policy;
use qed_l2_cache::internals::{self as config, entry_status, EntryStatus, OnMisuse};

/// The library's records say `p` is a live entry (nothing is read through
/// `p`).
fn is_live(p: *mut CachedL2Table) -> bool {
    entry_status(p) == EntryStatus::Live
}

/// The library's records say `p` is an entry already released (nothing is
/// read through `p`).
fn is_released(p: *mut CachedL2Table) -> bool {
    entry_status(p) == EntryStatus::Released
}

/// `QED_L2_CACHE_ON_MISUSE=warn` is in force in this process.
pub fn warn_mode() -> bool {
    config::config().on_misuse == OnMisuse::Warn
}

/// The maximum and policy `qed_init_l2_cache` gives a cache in this process
/// (`QED_L2_CACHE_SIZE`, `QED_L2_CACHE_POLICY` or their defaults).
fn init_settings() -> (u32, Policy) {
    let c = config::config();
    (c.size.initial_max(), c.policy)
}

/// Where the driver's choices come from.
pub trait Source {
    /// A number below `n` (`n >= 1`). `None` ends the run at once; sources
    /// that run dry should rather answer 0 and report [`Source::exhausted`],
    /// so the operation in progress completes (checked) before the run ends.
    fn below(&mut self, n: u32) -> Option<u32>;

    /// True when the run should end before the next operation.
    fn exhausted(&self) -> bool {
        false
    }
}

/// A seeded SplitMix64 generator: never exhausted.
pub struct Rng(u64);

impl Rng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

impl Source for Rng {
    fn below(&mut self, n: u32) -> Option<u32> {
        Some((((self.next_u64() >> 32) * u64::from(n)) >> 32) as u32)
    }
}

/// Choices read from fuzzer bytes; past the end of the input every choice
/// is 0 and the run ends after the current operation.
pub struct Bytes<'a>(pub &'a [u8]);

impl Source for Bytes<'_> {
    fn exhausted(&self) -> bool {
        self.0.is_empty()
    }

    fn below(&mut self, n: u32) -> Option<u32> {
        if n <= 1 {
            return Some(0);
        }
        let width = if n <= 1 << 8 {
            1
        } else if n <= 1 << 16 {
            2
        } else {
            4
        };
        if self.0.len() < width {
            self.0 = &[];
            return Some(0);
        }
        let (head, rest) = self.0.split_at(width);
        self.0 = rest;
        Some(head.iter().fold(0u32, |a, &b| (a << 8) | u32::from(b)) % n)
    }
}

/// One run of the driver.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The maximum the cache is set to after every `init`.
    pub capacity: u32,
    /// The policy set after every `init` (`set_policy` steps change it).
    pub policy: Policy,
    /// Operations to run (the run also stops when the source is exhausted).
    pub ops: u64,
    /// Also make misuse calls; needs `QED_L2_CACHE_ON_MISUSE=warn`.
    pub misuse: bool,
    /// Named in failure messages (e.g. the seed).
    pub label: String,
}

/// What a run did (for coverage assertions).
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Operations run, each followed by a full check.
    pub ops: u64,
    /// Library calls made.
    pub calls: u64,
    /// Lookups that hit.
    pub hits: u64,
    /// Lookups that missed.
    pub misses: u64,
    /// Commits that inserted the entry.
    pub inserts: u64,
    /// Commits of an offset already cached.
    pub duplicates: u64,
    /// Entries evicted.
    pub evictions: u64,
    /// Times eviction passed over an entry a request held.
    pub skipped_in_use: u64,
    /// Commits after which the cache held more than its maximum.
    pub grew_past_max: u64,
    /// Largest list seen.
    pub longest: usize,
    /// Reads that failed (the entry was released unused).
    pub read_errors: u64,
    /// `qed_free_l2_cache` calls that freed a cache.
    pub frees: u64,
    /// `qed_init_l2_cache` calls.
    pub inits: u64,
    /// Entries a free or re-init detached while requests held them.
    pub detached_held: u64,
    /// Steps whose released entries were all checked as released.
    pub release_checks: u64,
    /// Misuse calls made, in order: (function, what the report must say).
    pub misuse: Vec<(&'static str, &'static str)>,
}

/// The offset of the `k`-th table of the shared offset space: distinct,
/// non-zero, some with high bits set to stress the index's hashing.
fn universe_offset(k: u32) -> u64 {
    let k = u64::from(k);
    ((k + 1) * 0x10000) ^ ((k % 7) << 45)
}

/// Offsets for allocating writes: never in the shared offset space (bit 44).
const FRESH_BASE: u64 = 1 << 44;

/// Words in each test table: [offset, entry id, writes, 0...].
const TABLE_WORDS: usize = 8;

/// How many released entries per step are checked: far fewer than the
/// 4,096 a thread's quarantine recognises (misuse.md, "Limits").
const RELEASE_CHECK_MAX: usize = 64;

#[derive(Debug)]
struct MEntry {
    ptr: *mut CachedL2Table,
    table: *mut u64,
    offset: u64,
    refs: i32,
    cached: bool,
    /// SIEVE's mark (behaviour.md, "Policies", SIEVE, *Marks*).
    visited: bool,
    alive: bool,
    writes: u64,
}

#[derive(Debug)]
struct MCache {
    /// Entry ids, head first.
    list: Vec<usize>,
    max: u32,
    policy: Policy,
    /// SIEVE's hand: the entry the next eviction looks at first; `None` =
    /// at the head, whichever entry is there when the eviction starts
    /// (behaviour.md, "Policies", SIEVE, *The hand*).
    hand: Option<usize>,
    /// The entry the latest inserting commit appended, while it stays
    /// cached: SIEVE does not mark it on a hit (behaviour.md, "Policies",
    /// SIEVE, *The fresh entry*; LRU has no such exception).
    fresh: Option<usize>,
    stats: QedL2CacheStats,
}

/// The model proper: plain data, no C. Every rule cites the section of
/// `docs/behaviour.md` it implements ("The calls" is the table and the
/// paragraphs after it; "Policies" its subsection).
#[derive(Debug, Default)]
struct Model {
    entries: Vec<MEntry>,
    cache: Option<MCache>,
    /// Entries released during the current step.
    released: Vec<usize>,
    skipped_in_use: u64,
    evictions: u64,
}

impl Model {
    fn cache(&mut self) -> &mut MCache {
        self.cache.as_mut().expect("model: cache not initialised")
    }

    fn position(&self, id: usize) -> Option<usize> {
        self.cache.as_ref()?.list.iter().position(|&x| x == id)
    }

    fn cached_with_offset(&self, offset: u64) -> Option<usize> {
        let c = self.cache.as_ref()?;
        c.list.iter().position(|&id| self.entries[id].offset == offset)
    }

    /// "In use": a request holds it, `ref` above 1 (behaviour.md, "The
    /// calls", eviction paragraph).
    fn in_use(&self, id: usize) -> bool {
        self.entries[id].refs > 1
    }

    /// "The calls", `qed_init_l2_cache`: an empty list with the configured
    /// maximum and policy, counters 0; "Policies", SIEVE: no fresh entry,
    /// the hand at the head.
    fn init(&mut self, max: u32, policy: Policy) {
        assert!(self.cache.is_none(), "model: init over a live cache");
        self.cache = Some(MCache {
            list: Vec::new(),
            max,
            policy,
            hand: None,
            fresh: None,
            stats: QedL2CacheStats::default(),
        });
    }

    /// "The calls", `qed_unref_l2_cache_entry`: at 0 the entry is released.
    fn drop_ref(&mut self, id: usize) {
        let e = &mut self.entries[id];
        assert!(e.alive && e.refs >= 1, "model: drop_ref of {id}: {e:?}");
        e.refs -= 1;
        if e.refs == 0 {
            assert!(!e.cached, "model: cached entry {id} at zero references");
            e.alive = false;
            self.released.push(id);
        }
    }

    /// "The calls", `qed_find_l2_cache_entry`: the cached entry with that
    /// offset, one more reference; a hit or a miss counted ("Counters").
    fn find(&mut self, offset: u64) -> Option<usize> {
        let Some(pos) = self.cached_with_offset(offset) else {
            self.cache().stats.misses += 1;
            return None;
        };
        let c = self.cache.as_mut().expect("checked above");
        c.stats.hits += 1;
        let id = c.list[pos];
        match c.policy {
            // "Policies", FIFO: a find moves nothing.
            Policy::Fifo => {}
            // "Policies", LRU: every hit moves the entry to the tail.
            Policy::Lru => {
                c.list.remove(pos);
                c.list.push(id);
            }
            // "Policies", SIEVE, *Marks*: a hit marks the entry visited,
            // unless it is the fresh entry.
            Policy::Sieve => {
                if c.fresh != Some(id) {
                    self.entries[id].visited = true;
                }
            }
        }
        self.entries[id].refs += 1;
        Some(id)
    }

    /// "The calls", `qed_commit_l2_cache_entry`. Returns the cached entry
    /// when the offset was already cached.
    fn commit(&mut self, id: usize) -> Option<usize> {
        let offset = self.entries[id].offset;
        self.cache().stats.commits += 1;
        // A duplicate: the cached entry stays, the newcomer loses the
        // caller's reference.
        if let Some(pos) = self.cached_with_offset(offset) {
            let c = self.cache();
            c.stats.duplicate_commits += 1;
            let cached = c.list[pos];
            self.drop_ref(id);
            return Some(cached);
        }
        // Eviction when `n_entries` has reached the maximum, until it is
        // below the maximum (or nothing can be evicted).
        let c = self.cache();
        if c.list.len() as u64 >= u64::from(c.max) {
            let target = c.max as usize - 1;
            self.evict_down_to(target);
        }
        // Appended at the tail, the cache now holds the reference;
        // "Policies", SIEVE: committed not visited, and the fresh entry.
        let c = self.cache.as_mut().expect("initialised");
        c.list.push(id);
        c.fresh = Some(id);
        c.stats.peak_entries = c.stats.peak_entries.max(c.list.len() as u64);
        let e = &mut self.entries[id];
        e.cached = true;
        e.visited = false;
        None
    }

    /// Removes a cached entry and drops the cache's reference (which frees
    /// it: only entries not in use are evicted). Counted ("Counters"); the
    /// entry stops being the fresh entry ("for as long as it stays cached").
    fn evict(&mut self, id: usize) {
        assert!(!self.in_use(id), "model: evicting entry {id}, in use");
        let pos = self.position(id).expect("evicting a cached entry");
        let c = self.cache();
        c.list.remove(pos);
        if c.fresh == Some(id) {
            c.fresh = None;
        }
        c.stats.evictions += 1;
        self.evictions += 1;
        let e = &mut self.entries[id];
        e.cached = false;
        e.visited = false;
        self.drop_ref(id);
    }

    /// Evicts until at most `target` entries are cached, or nothing can be
    /// evicted: the walk of "The calls" (eviction paragraph) for FIFO and
    /// LRU, the hand of "Policies", SIEVE, *Eviction*, for SIEVE.
    fn evict_down_to(&mut self, target: usize) {
        let c = self.cache();
        if c.list.len() <= target {
            // Nothing to do; in particular SIEVE's hand does not move.
            return;
        }
        match c.policy {
            Policy::Fifo | Policy::Lru => {
                // "walk the list from the head; skip every entry whose
                // `ref` is above 1; remove each entry whose `ref` is
                // exactly 1 ... and stop as soon as `n_entries` is below
                // the maximum" (here: down to `target`). The walk ends at
                // the tail: "If every entry is in use, nothing is evicted".
                let order = c.list.clone();
                for id in order {
                    if self.cache().list.len() <= target {
                        break;
                    }
                    if self.in_use(id) {
                        self.skipped_in_use += 1;
                    } else {
                        self.evict(id);
                    }
                }
            }
            Policy::Sieve => {
                // "It stops as soon as `n_entries` is low enough ..., or as
                // soon as every entry left is in use, since then no entry
                // can be evicted." Requests take no reference during an
                // eviction, so the entries not in use are counted once.
                let mut hand = c.hand;
                let list = &self.cache.as_ref().expect("initialised").list;
                let mut evictable = list.iter().filter(|&&id| !self.in_use(id)).count();
                // "moves the hand from where it rests towards the tail,
                // and from the tail on to the head".
                while self.cache().list.len() > target && evictable > 0 {
                    let list = &self.cache.as_ref().expect("initialised").list;
                    let id = hand.unwrap_or(list[0]);
                    let pos = list
                        .iter()
                        .position(|&x| x == id)
                        .expect("the hand is on the list");
                    // The entry after this one, or the head (`None`) after
                    // the tail.
                    let next = list.get(pos + 1).copied();
                    if self.in_use(id) {
                        // "an entry in use is passed, its mark kept".
                        self.skipped_in_use += 1;
                    } else if self.entries[id].visited {
                        // "a visited entry not in use has its mark cleared
                        // and is passed (spared once)".
                        self.entries[id].visited = false;
                    } else {
                        // "the first entry not visited and not in use is
                        // evicted, and the hand moves on to the entry that
                        // followed it (the head, if it was the tail)".
                        self.evict(id);
                        evictable -= 1;
                    }
                    hand = next;
                }
                // "Either way the hand stops where it is."
                self.cache().hand = hand;
            }
        }
    }

    /// "The calls", `qed_l2_cache_set_max_entries`: the new maximum, and
    /// unused entries evicted by the same walk until `n_entries` is at
    /// most `max`.
    fn set_max(&mut self, max: u32) {
        self.cache().max = max;
        self.evict_down_to(max as usize);
    }

    /// "The calls": `qed_l2_cache_set_policy` keeps the entries and their
    /// order; "Policies", SIEVE: whatever policy it names, it clears every
    /// mark and sends the hand to the head; the fresh entry stays.
    fn set_policy(&mut self, policy: Policy) {
        let c = self.cache.as_mut().expect("initialised");
        c.policy = policy;
        c.hand = None;
        for &id in &c.list {
            self.entries[id].visited = false;
        }
    }

    /// `free`, or the drain of an `init` over a live cache ("The calls",
    /// `qed_free_l2_cache` and `qed_init_l2_cache`): every entry leaves the
    /// list and loses the cache's reference; entries requests still hold
    /// live on with them. Returns how many were held.
    fn drain(&mut self) -> usize {
        let c = self.cache.take().expect("initialised");
        let mut held = 0;
        for id in c.list {
            held += usize::from(self.in_use(id));
            let e = &mut self.entries[id];
            e.cached = false;
            e.visited = false;
            self.drop_ref(id);
        }
        held
    }
}

#[derive(Debug, Clone, Copy)]
struct Hold {
    id: usize,
    /// Allocated, not committed yet (a read or write in flight).
    pending: bool,
}

/// The driver: a cache in memory the library can keep pointers into, the
/// model, the requests' references, and the checks.
pub struct Driver<S: Source> {
    src: S,
    cfg: RunConfig,
    /// The cache under test (from `Box::into_raw`, only used through this
    /// pointer, since the list keeps pointers into it).
    cache: *mut L2TableCache,
    /// A second cache-sized buffer: zeroed, or a copy of `cache`.
    spare: *mut L2TableCache,
    /// 64 bytes that are not an entry (foreign pointers).
    foreign: *mut [u64; 8],
    model: Model,
    holds: Vec<Hold>,
    max_holds: usize,
    universe: u32,
    fresh: u64,
    op: &'static str,
    /// The last operations, for failure messages.
    history: std::collections::VecDeque<&'static str>,
    misuse_ok: bool,
    report: Report,
}

macro_rules! check {
    ($d:expr, $cond:expr, $($arg:tt)+) => {
        if !$cond {
            $d.fail(format_args!($($arg)+))
        }
    };
}

impl<S: Source> Drop for Driver<S> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return; // leave everything: the library state may be broken
        }
        // SAFETY: the three pointers came from Box::into_raw in `new` and
        // the library holds none into `spare` or `foreign`; `cache` is no
        // longer initialised after `finish`.
        unsafe {
            if self.model.cache.is_some() {
                qed_free_l2_cache(self.cache);
            }
            drop(Box::from_raw(self.cache));
            drop(Box::from_raw(self.spare));
            drop(Box::from_raw(self.foreign));
        }
    }
}

fn zeroed_cache() -> *mut L2TableCache {
    // SAFETY: an all-zero L2TableCache is valid (NULL pointers, 0 counts).
    Box::into_raw(Box::new(unsafe { std::mem::zeroed::<L2TableCache>() }))
}

impl<S: Source> Driver<S> {
    /// A driver over a fresh, uninitialised cache.
    pub fn new(cfg: RunConfig, src: S) -> Self {
        assert!(cfg.capacity >= 1);
        let misuse_ok = cfg.misuse && warn_mode();
        assert!(
            misuse_ok || !cfg.misuse,
            "misuse runs need QED_L2_CACHE_ON_MISUSE=warn"
        );
        let cap = cfg.capacity;
        Driver {
            src,
            cache: zeroed_cache(),
            spare: zeroed_cache(),
            foreign: Box::into_raw(Box::new([0u64; 8])),
            model: Model::default(),
            holds: Vec::new(),
            max_holds: (cap as usize + 3).min(64),
            universe: (cap + cap / 2 + 3).max(4),
            fresh: FRESH_BASE,
            op: "start",
            history: Default::default(),
            misuse_ok,
            report: Report::default(),
            cfg,
        }
    }

    /// What the run did so far.
    pub fn report(&self) -> &Report {
        &self.report
    }

    #[cold]
    #[track_caller]
    fn fail(&self, what: fmt::Arguments<'_>) -> ! {
        let now = self.model.cache.as_ref().map(|c| (c.policy, c.max, c.hand));
        panic!(
            "model mismatch [{}, capacity {}, {:?}] at op #{} ({}): {what}\n\
             model cache now (policy, max, SIEVE hand): {now:?}\nlast operations: {:?}",
            self.cfg.label,
            self.cfg.capacity,
            self.cfg.policy,
            self.report.ops + 1,
            self.op,
            self.history
        )
    }

    /// Runs until `ops` operations are done or the source is exhausted,
    /// then releases everything and checks that all was released.
    pub fn run(&mut self) -> &Report {
        while self.report.ops < self.cfg.ops && !self.src.exhausted() {
            self.model.released.clear();
            if self.step().is_none() {
                break;
            }
            if self.history.len() == 12 {
                self.history.pop_front();
            }
            self.history.push_back(self.op);
            self.check_all();
            self.report.ops += 1;
        }
        self.finish();
        self.report.evictions = self.model.evictions;
        self.report.skipped_in_use = self.model.skipped_in_use;
        &self.report
    }

    fn finish(&mut self) {
        self.op = "finish";
        self.model.released.clear();
        while let Some(h) = self.holds.pop() {
            self.unref_id(h.id);
        }
        if self.model.cache.is_some() {
            self.free_cache();
        }
        self.check_all();
        if let Some(e) = self.model.entries.iter().find(|e| e.alive) {
            self.fail(format_args!("entry still alive at the end: {e:?}"));
        }
    }

    // ---- choices ----

    fn pick(&mut self, n: usize) -> Option<usize> {
        Some(self.src.below(u32::try_from(n).expect("small"))? as usize)
    }

    fn pick_offset(&mut self) -> Option<u64> {
        Some(universe_offset(self.src.below(self.universe)?))
    }

    fn fresh_offset(&mut self) -> u64 {
        self.fresh += 0x10000;
        self.fresh
    }

    /// Index into `holds` of a random hold with `pending == want_pending`.
    fn pick_hold(&mut self, want_pending: bool) -> Option<Option<usize>> {
        let n = self.holds.iter().filter(|h| h.pending == want_pending).count();
        if n == 0 {
            return Some(None);
        }
        let k = self.pick(n)?;
        Some(
            self.holds
                .iter()
                .enumerate()
                .filter(|(_, h)| h.pending == want_pending)
                .nth(k)
                .map(|(i, _)| i),
        )
    }

    /// A lower-frequency gate scaled to the capacity: big caches need time
    /// to fill, so disruptive steps (free, set_max) are rarer there.
    fn rare(&mut self) -> Option<bool> {
        Some(self.src.below(self.cfg.capacity / 40 + 1)? == 0)
    }

    // ---- library calls, each checked against the model ----

    /// behaviour.md, "The calls", `qed_alloc_l2_cache_entry`: never NULL,
    /// zeroed, `ref` 1, links NULL; `cache` is not dereferenced.
    fn alloc_entry(&mut self, cache: *mut L2TableCache, offset: u64) -> usize {
        self.report.calls += 1;
        // SAFETY: alloc only prints the cache pointer.
        let p = unsafe { qed_alloc_l2_cache_entry(cache) };
        check!(self, !p.is_null(), "alloc returned NULL");
        check!(self, is_live(p), "alloc returned a non-live entry");
        // SAFETY: a live entry we own; nobody else uses it.
        let fresh = unsafe {
            (*p).table.is_null()
                && (*p).offset == 0
                && (*p).r#ref == 1
                && (*p).node.tqe_circ.tql_next.is_null()
                && (*p).node.tqe_circ.tql_prev.is_null()
        };
        check!(
            self,
            fresh,
            "alloc returned an entry that is not zeroed with ref 1"
        );
        let id = self.model.entries.len();
        let mut table: *mut c_void = null_mut();
        // SAFETY: plain C allocation; the library releases it with free().
        let rc = unsafe { libc::posix_memalign(&mut table, 64, TABLE_WORDS * 8) };
        assert_eq!(rc, 0, "posix_memalign");
        let table = table.cast::<u64>();
        // SAFETY: `table` is TABLE_WORDS writable words; `p` is ours.
        unsafe {
            table.write_bytes(0, TABLE_WORDS);
            *table = offset;
            *table.add(1) = id as u64;
            (*p).table = table.cast();
            (*p).offset = offset;
        }
        self.model.entries.push(MEntry {
            ptr: p,
            table,
            offset,
            refs: 1,
            cached: false,
            visited: false,
            alive: true,
            writes: 0,
        });
        id
    }

    fn find(&mut self, offset: u64) -> Option<usize> {
        self.report.calls += 1;
        // SAFETY: `cache` is an initialised cache (callers check the model).
        let got = unsafe { qed_find_l2_cache_entry(self.cache, offset) };
        let want = self.model.find(offset);
        match want {
            Some(id) => {
                self.report.hits += 1;
                let p = self.model.entries[id].ptr;
                check!(
                    self,
                    got == p,
                    "find({offset:#x}) returned {got:?}, expected {p:?}"
                );
            }
            None => {
                self.report.misses += 1;
                check!(
                    self,
                    got.is_null(),
                    "find({offset:#x}) returned {got:?}, expected NULL"
                );
            }
        }
        want
    }

    /// Commits entry `id`; returns the cached entry when it was a duplicate.
    fn commit(&mut self, id: usize) -> Option<usize> {
        self.report.calls += 1;
        let p = self.model.entries[id].ptr;
        // SAFETY: `cache` is initialised and `p` is a live entry the
        // caller owns a reference to.
        unsafe { qed_commit_l2_cache_entry(self.cache, p) };
        let dup = self.model.commit(id);
        match dup {
            Some(_) => self.report.duplicates += 1,
            None => {
                self.report.inserts += 1;
                let c = self.model.cache.as_ref().expect("initialised");
                if c.list.len() as u64 > u64::from(c.max) {
                    self.report.grew_past_max += 1;
                }
            }
        }
        dup
    }

    fn unref_id(&mut self, id: usize) {
        self.report.calls += 1;
        let p = self.model.entries[id].ptr;
        // SAFETY: the model says a reference to this live entry is held.
        unsafe { qed_unref_l2_cache_entry(p) };
        self.model.drop_ref(id);
    }

    fn set_max(&mut self, max: u32) {
        self.report.calls += 1;
        // SAFETY: `cache` is initialised.
        unsafe { qed_l2_cache_set_max_entries(self.cache, max) };
        self.model.set_max(max);
    }

    fn set_policy(&mut self, policy: Policy) {
        self.report.calls += 1;
        let code = Policy::ALL.iter().position(|&p| p == policy).expect("a policy") as u32;
        // SAFETY: `cache` is initialised.
        unsafe { qed_l2_cache_set_policy(self.cache, code) };
        self.model.set_policy(policy);
    }

    fn free_cache(&mut self) {
        self.report.calls += 1;
        self.report.frees += 1;
        // SAFETY: `cache` is initialised.
        unsafe { qed_free_l2_cache(self.cache) };
        self.report.detached_held += self.model.drain() as u64;
    }

    /// `init` (over a live cache too), then the run's maximum and policy.
    fn init(&mut self) {
        self.report.calls += 1;
        self.report.inits += 1;
        // SAFETY: `cache` points to a writable L2TableCache.
        unsafe { qed_init_l2_cache(self.cache) };
        if self.model.cache.is_some() {
            // behaviour.md, "The calls", `qed_init_l2_cache`: on a cache
            // never freed, its entries leave it first (held ones live on).
            self.report.detached_held += self.model.drain() as u64;
        }
        let (max, policy) = init_settings();
        self.model.init(max, policy);
        self.check_all();
        self.set_max(self.cfg.capacity);
        self.set_policy(self.cfg.policy);
    }

    /// Keeps the reference in a request, or drops it at once.
    fn maybe_hold(&mut self, id: usize) -> Option<()> {
        if self.holds.len() < self.max_holds && self.src.below(4)? != 0 {
            self.holds.push(Hold { id, pending: false });
        } else {
            self.unref_id(id);
        }
        Some(())
    }

    // ---- operations ----

    fn step(&mut self) -> Option<()> {
        if self.model.cache.is_none() {
            // Not initialised: only what needs no cache (or misuse).
            let n = if self.misuse_ok { 7 } else { 6 };
            return match self.src.below(n)? {
                0..=2 => {
                    self.op = "init";
                    if self.src.below(2)? == 0 {
                        // QEMU's re-open: the caller zeroes its state first.
                        // SAFETY: `cache` is ours and not initialised.
                        unsafe { self.cache.write_bytes(0, 1) };
                    }
                    self.init();
                    Some(())
                }
                3 => self.op_unref(),
                4 => self.op_begin_read(),
                5 => self.op_write_held(),
                _ => self.op_misuse_uninit(self.cache),
            };
        }
        match self.src.below(100)? {
            0..=27 => self.op_read_path(),
            28..=41 => self.op_find(),
            42..=59 => self.op_unref(),
            60..=65 => self.op_begin_read(),
            66..=73 => self.op_complete_read(),
            74..=75 => self.op_fail_read(),
            76..=80 => self.op_alloc_write(),
            81..=84 => self.op_write_held(),
            85..=87 => self.op_duplicate_commit(),
            88..=89 => self.op_set_max(),
            90 => self.op_set_policy(),
            91 => self.op_free_or_reinit(),
            _ if self.misuse_ok && self.src.below(4)? == 0 => self.op_misuse(),
            _ => self.op_read_path(),
        }
    }

    /// QEMU's L2 lookup (behaviour.md, "How QEMU calls it", read path):
    /// drop the request's previous table, find; on a miss alloc, read
    /// (maybe failing), commit, find again, which must succeed.
    fn op_read_path(&mut self) -> Option<()> {
        self.op = "read path";
        if self.src.below(2)? == 0 {
            if let Some(i) = self.pick_hold(false)? {
                let h = self.holds.swap_remove(i);
                self.unref_id(h.id);
            }
        }
        let offset = self.pick_offset()?;
        if let Some(id) = self.find(offset) {
            return self.maybe_hold(id);
        }
        let id = self.alloc_entry(self.cache, offset);
        if self.src.below(16)? == 0 {
            self.report.read_errors += 1;
            self.unref_id(id);
            return Some(());
        }
        let dup = self.commit(id);
        check!(self, dup.is_none(), "commit after a miss found a duplicate");
        let again = self.find(offset);
        check!(
            self,
            again == Some(id),
            "find after commit did not return the entry"
        );
        self.maybe_hold(id)
    }

    fn op_find(&mut self) -> Option<()> {
        self.op = "find";
        let offset = if self.src.below(8)? == 0 {
            self.fresh + 0x8000 // never committed: a miss
        } else {
            self.pick_offset()?
        };
        match self.find(offset) {
            Some(id) => self.maybe_hold(id),
            None => Some(()),
        }
    }

    fn op_unref(&mut self) -> Option<()> {
        self.op = "unref";
        if self.holds.is_empty() {
            return Some(());
        }
        let i = self.pick(self.holds.len())?;
        let h = self.holds.swap_remove(i);
        self.unref_id(h.id);
        Some(())
    }

    /// A read or write in flight: allocated, not committed yet.
    fn op_begin_read(&mut self) -> Option<()> {
        self.op = "begin read";
        if self.holds.len() >= self.max_holds {
            return Some(());
        }
        let offset = self.pick_offset()?;
        let id = self.alloc_entry(self.cache, offset);
        self.holds.push(Hold { id, pending: true });
        Some(())
    }

    /// The read completes: commit (a duplicate if another request committed
    /// the offset meanwhile), then maybe find it again.
    fn op_complete_read(&mut self) -> Option<()> {
        self.op = "complete read";
        let Some(i) = self.pick_hold(true)? else {
            return Some(());
        };
        let h = self.holds.swap_remove(i);
        let offset = self.model.entries[h.id].offset;
        let dup = self.commit(h.id);
        if self.src.below(2)? == 0 {
            let want = dup.unwrap_or(h.id);
            let got = self.find(offset);
            check!(
                self,
                got == Some(want),
                "find after commit returned {got:?}, expected {want}"
            );
            self.maybe_hold(want)?;
        }
        Some(())
    }

    fn op_fail_read(&mut self) -> Option<()> {
        self.op = "fail read";
        let Some(i) = self.pick_hold(true)? else {
            return Some(());
        };
        let h = self.holds.swap_remove(i);
        self.report.read_errors += 1;
        self.unref_id(h.id);
        Some(())
    }

    /// QED's allocating write: a new table at a new offset, filled,
    /// committed, found again and held while it is updated in place.
    fn op_alloc_write(&mut self) -> Option<()> {
        self.op = "allocating write";
        let offset = self.fresh_offset();
        let id = self.alloc_entry(self.cache, offset);
        self.write_table(id);
        let dup = self.commit(id);
        check!(self, dup.is_none(), "a fresh offset was a duplicate");
        let got = self.find(offset);
        check!(
            self,
            got == Some(id),
            "find after an allocating write returned {got:?}"
        );
        if self.holds.len() < self.max_holds {
            self.holds.push(Hold { id, pending: false });
        } else {
            self.unref_id(id);
        }
        Some(())
    }

    fn write_table(&mut self, id: usize) {
        let e = &mut self.model.entries[id];
        e.writes += 1;
        // SAFETY: the entry is alive and held, so its table is too.
        unsafe { *e.table.add(2) = e.writes };
    }

    /// A request updates a table it holds, in place (write-through).
    fn op_write_held(&mut self) -> Option<()> {
        self.op = "write held";
        if let Some(i) = self.pick_hold(false)? {
            let id = self.holds[i].id;
            self.write_table(id);
        }
        Some(())
    }

    /// Another request read the same table: its commit is a duplicate.
    fn op_duplicate_commit(&mut self) -> Option<()> {
        self.op = "duplicate commit";
        let len = self.model.cache.as_ref().map_or(0, |c| c.list.len());
        if len == 0 {
            return Some(());
        }
        let k = self.pick(len)?;
        let cached = self.model.cache.as_ref().expect("initialised").list[k];
        let offset = self.model.entries[cached].offset;
        let id = self.alloc_entry(self.cache, offset);
        let dup = self.commit(id);
        check!(
            self,
            dup == Some(cached),
            "duplicate commit kept {dup:?}, expected {cached}"
        );
        Some(())
    }

    fn op_set_max(&mut self) -> Option<()> {
        self.op = "set_max_entries";
        if !self.rare()? {
            return Some(());
        }
        let cap = self.cfg.capacity;
        let max = match self.src.below(8)? {
            0 => 1,
            1 => 2,
            2 => 3,
            3 => (cap / 2).max(1),
            4 => cap + 1,
            5 => cap * 2,
            _ => cap,
        };
        self.set_max(max);
        Some(())
    }

    fn op_set_policy(&mut self) -> Option<()> {
        self.op = "set_policy";
        let p = Policy::ALL[self.src.below(3)? as usize];
        self.set_policy(p);
        Some(())
    }

    /// Close (free) or re-open over the live cache (init again).
    fn op_free_or_reinit(&mut self) -> Option<()> {
        if !self.rare()? {
            return Some(());
        }
        match self.src.below(4)? {
            0 => {
                self.op = "init over a live cache";
                self.init();
            }
            k => {
                self.op = "free";
                let held = self.model.cache.as_ref().expect("initialised").list.iter();
                let held = held.filter(|&&id| self.model.entries[id].refs > 1).count();
                if held > 0 && self.misuse_ok && k == 1 {
                    // misuse.md, "What happens on misuse" (exceptions), and
                    // behaviour.md, "The calls", `qed_free_l2_cache`.
                    // Misuse, but not refused: the held entries leave the
                    // cache and stay alive for their requests.
                    self.report.misuse.push(("qed_free_l2_cache", "still referenced"));
                } else {
                    // Close drains the requests that use cached tables first.
                    let mut i = 0;
                    while i < self.holds.len() {
                        let h = self.holds[i];
                        if !h.pending && self.model.entries[h.id].cached {
                            self.holds.swap_remove(i);
                            self.unref_id(h.id);
                        } else {
                            i += 1;
                        }
                    }
                }
                self.free_cache();
            }
        }
        Some(())
    }

    // ---- misuse (QED_L2_CACHE_ON_MISUSE=warn only) ----

    fn snapshot(p: *const L2TableCache) -> [u64; 3] {
        // SAFETY: every cache pointer here is a live 24-byte buffer we own.
        unsafe { p.cast::<[u64; 3]>().read() }
    }

    /// Makes a call that must be refused: one report line, nothing changed
    /// in `cache` or `spare` (the model, unchanged, is checked afterwards).
    /// misuse.md, "What happens on misuse": the line names the function and
    /// the fault, and a refused call changes nothing (the exceptions are
    /// modelled where they occur).
    fn refused(&mut self, function: &'static str, fault: &'static str, call: impl FnOnce(&mut Self)) {
        let before = (Self::snapshot(self.cache), Self::snapshot(self.spare));
        self.report.calls += 1;
        call(self);
        self.report.misuse.push((function, fault));
        let after = (Self::snapshot(self.cache), Self::snapshot(self.spare));
        check!(
            self,
            before == after,
            "a refused {function} changed a cache struct"
        );
    }

    fn op_misuse(&mut self) -> Option<()> {
        self.op = "misuse";
        let cache = self.cache;
        match self.src.below(14)? {
            0 => {
                self.op = "misuse: unref of the cache's own reference";
                let list = &self.model.cache.as_ref().expect("initialised").list;
                let own = list.iter().copied().find(|&id| self.model.entries[id].refs == 1);
                if let Some(id) = own {
                    let p = self.model.entries[id].ptr;
                    // SAFETY: a live entry; the call must refuse.
                    self.refused("qed_unref_l2_cache_entry", "the cache's own", |_| unsafe {
                        qed_unref_l2_cache_entry(p)
                    });
                }
            }
            1 | 2 => {
                self.op = "misuse: double unref / commit of a released entry";
                let offset = self.fresh_offset();
                let id = self.alloc_entry(cache, offset);
                self.unref_id(id);
                let p = self.model.entries[id].ptr;
                if self.src.below(2)? == 0 {
                    // SAFETY: released moments ago: still in quarantine.
                    self.refused("qed_unref_l2_cache_entry", "double unref", |_| unsafe {
                        qed_unref_l2_cache_entry(p)
                    });
                } else {
                    // SAFETY: as above.
                    self.refused("qed_commit_l2_cache_entry", "already released", |_| unsafe {
                        qed_commit_l2_cache_entry(cache, p)
                    });
                }
            }
            3 => {
                self.op = "misuse: commit of a cached entry";
                let len = self.model.cache.as_ref().expect("initialised").list.len();
                if len > 0 {
                    let k = self.pick(len)?;
                    let id = self.model.cache.as_ref().expect("initialised").list[k];
                    let p = self.model.entries[id].ptr;
                    // SAFETY: a live entry; the call must refuse.
                    self.refused("qed_commit_l2_cache_entry", "already cached", |_| unsafe {
                        qed_commit_l2_cache_entry(cache, p)
                    });
                }
            }
            4 => {
                self.op = "misuse: commit with offset 0";
                let id = self.alloc_entry(cache, 0);
                let p = self.model.entries[id].ptr;
                // SAFETY: a live entry we own; the call must refuse.
                self.refused("qed_commit_l2_cache_entry", "offset is 0", |_| unsafe {
                    qed_commit_l2_cache_entry(cache, p)
                });
                // misuse.md, "A refused commit still takes the caller's
                // reference".
                // Refused, but the reference handed to commit is taken all
                // the same (as unref would): the entry, ref 1, is released.
                self.model.drop_ref(id);
            }
            5 => {
                self.op = "misuse: foreign pointers";
                let f = self.foreign.cast::<CachedL2Table>();
                match self.src.below(3)? {
                    // SAFETY: 64 readable bytes that are not an entry.
                    0 => self.refused("qed_unref_l2_cache_entry", "not allocated by", |_| unsafe {
                        qed_unref_l2_cache_entry(f)
                    }),
                    // SAFETY: as above.
                    1 => self.refused("qed_commit_l2_cache_entry", "not allocated by", |_| unsafe {
                        qed_commit_l2_cache_entry(cache, f)
                    }),
                    _ => {
                        let odd = f.cast::<u8>().wrapping_add(4).cast::<CachedL2Table>();
                        // SAFETY: misaligned: refused before any read.
                        self.refused("qed_unref_l2_cache_entry", "not allocated by", |_| unsafe {
                            qed_unref_l2_cache_entry(odd)
                        })
                    }
                }
            }
            6 => {
                self.op = "misuse: a copy of a live entry";
                let len = self.model.cache.as_ref().expect("initialised").list.len();
                if len > 0 {
                    let k = self.pick(len)?;
                    let id = self.model.cache.as_ref().expect("initialised").list[k];
                    let p = self.model.entries[id].ptr;
                    // SAFETY: an entry block is 48 bytes; `foreign` has 64.
                    unsafe { std::ptr::copy_nonoverlapping(p.cast::<u8>(), self.foreign.cast::<u8>(), 48) };
                    let f = self.foreign.cast::<CachedL2Table>();
                    // SAFETY: readable; the cookie does not match its address.
                    self.refused("qed_unref_l2_cache_entry", "not allocated by", |_| unsafe {
                        qed_unref_l2_cache_entry(f)
                    });
                    // SAFETY: ours.
                    unsafe { self.foreign.write([0; 8]) };
                }
            }
            7 => {
                self.op = "misuse: a copy of the cache struct";
                // SAFETY: both are 24-byte buffers we own.
                unsafe { std::ptr::copy_nonoverlapping(cache, self.spare, 1) };
                let spare = self.spare;
                let offset = self.pick_offset()?;
                // SAFETY: readable; its handle names a state owned elsewhere.
                self.refused("qed_find_l2_cache_entry", "not initialised", |_| unsafe {
                    qed_find_l2_cache_entry(spare, offset);
                });
                // SAFETY: ours.
                unsafe { spare.write_bytes(0, 1) };
            }
            8 => return self.op_misuse_uninit(self.spare),
            9 => {
                self.op = "misuse: NULL arguments";
                let null = null_mut::<L2TableCache>();
                let mut stats = QedL2CacheStats::default();
                let s = &mut stats as *mut QedL2CacheStats;
                let holds = self.holds.clone();
                let e = holds.first().map_or(null_mut(), |h| self.model.entries[h.id].ptr);
                let (f, fault): (&'static str, &'static str) = match self.src.below(10)? {
                    0 => ("qed_find_l2_cache_entry", "is NULL"),
                    1 => ("qed_commit_l2_cache_entry", "is NULL"),
                    2 => ("qed_free_l2_cache", "is NULL"),
                    3 => ("qed_init_l2_cache", "is NULL"),
                    4 => ("qed_l2_cache_set_max_entries", "is NULL"),
                    5 => ("qed_l2_cache_set_policy", "is NULL"),
                    6 => ("qed_l2_cache_get_stats", "is NULL"),
                    7 => ("qed_l2_cache_get_stats", "stats is NULL"),
                    8 => ("qed_commit_l2_cache_entry", "entry is NULL"),
                    _ => {
                        // alloc(NULL): allowed, as in QEMU's original (the
                        // cache is only printed); nothing is reported.
                        let offset = self.pick_offset()?;
                        let id = self.alloc_entry(null, offset);
                        self.holds.push(Hold { id, pending: true });
                        return Some(());
                    }
                };
                let gives_ref = f == "qed_commit_l2_cache_entry" && fault == "is NULL";
                self.refused(f, fault, |_| {
                    // SAFETY: NULL is checked before any access; `e` is NULL
                    // or an entry a request holds; `s` is writable.
                    unsafe {
                        match fault {
                            "stats is NULL" => qed_l2_cache_get_stats(cache, null_mut()),
                            "entry is NULL" => qed_commit_l2_cache_entry(cache, null_mut()),
                            _ => match f {
                                "qed_find_l2_cache_entry" => {
                                    qed_find_l2_cache_entry(null, 0x10000);
                                }
                                "qed_commit_l2_cache_entry" => qed_commit_l2_cache_entry(null, e),
                                "qed_free_l2_cache" => qed_free_l2_cache(null),
                                "qed_init_l2_cache" => qed_init_l2_cache(null),
                                "qed_l2_cache_set_max_entries" => qed_l2_cache_set_max_entries(null, 5),
                                "qed_l2_cache_set_policy" => qed_l2_cache_set_policy(null, 0),
                                _ => qed_l2_cache_get_stats(null, s),
                            },
                        }
                    }
                });
                // misuse.md, "A refused commit still takes the caller's
                // reference" (only of a live entry that is not cached).
                // A commit refused because of the cache takes the reference
                // of an uncached live entry, as unref would.
                if gives_ref {
                    if let Some(h) = holds.first() {
                        if !self.model.entries[h.id].cached {
                            let pos = self.holds.iter().position(|x| x.id == h.id).expect("held");
                            self.holds.remove(pos);
                            self.model.drop_ref(h.id);
                        }
                    }
                }
            }
            10 => {
                self.op = "misuse: set_max_entries(0)";
                // SAFETY: an initialised cache; the call must refuse.
                self.refused("qed_l2_cache_set_max_entries", "at least 1", |_| unsafe {
                    qed_l2_cache_set_max_entries(cache, 0)
                });
            }
            11 => {
                self.op = "misuse: unknown policy";
                let policy = 3 + self.src.below(1000)?;
                // SAFETY: as above.
                self.refused("qed_l2_cache_set_policy", "unknown policy", |_| unsafe {
                    qed_l2_cache_set_policy(cache, policy)
                });
            }
            12 => {
                self.op = "misuse: misaligned cache";
                let odd = cache.cast::<u8>().wrapping_add(4).cast::<L2TableCache>();
                // SAFETY: misaligned: refused before any read.
                self.refused("qed_find_l2_cache_entry", "misaligned", |_| unsafe {
                    qed_find_l2_cache_entry(odd, 0x10000);
                });
            }
            _ => {
                self.op = "misuse: free with held entries";
                return self.op_free_or_reinit();
            }
        }
        Some(())
    }

    /// Calls on a cache that is not initialised (zeroed, or freed).
    fn op_misuse_uninit(&mut self, c: *mut L2TableCache) -> Option<()> {
        self.op = "misuse: not initialised";
        const NI: &str = "not initialised";
        let mut stats = QedL2CacheStats::default();
        let s = &mut stats as *mut QedL2CacheStats;
        let offset = self.pick_offset()?;
        match self.src.below(6)? {
            // SAFETY: `c` is a readable struct that is not an initialised
            // cache; the calls must refuse (so for every arm below).
            0 => self.refused("qed_find_l2_cache_entry", NI, |_| unsafe {
                qed_find_l2_cache_entry(c, offset);
            }),
            1 => {
                let Some(i) = self.pick_hold(true)? else {
                    return Some(());
                };
                let id = self.holds[i].id;
                let p = self.model.entries[id].ptr;
                // SAFETY: as above; `p` is a live entry we hold.
                self.refused("qed_commit_l2_cache_entry", NI, |_| unsafe {
                    qed_commit_l2_cache_entry(c, p)
                });
                // misuse.md, "A refused commit still takes the caller's
                // reference".
                // Refused because of the cache: the caller's reference is
                // taken as by unref, so warn mode leaks nothing.
                self.holds.swap_remove(i);
                self.model.drop_ref(id);
            }
            // SAFETY: as above.
            2 => self.refused("qed_free_l2_cache", NI, |_| unsafe { qed_free_l2_cache(c) }),
            // SAFETY: as above.
            3 => self.refused("qed_l2_cache_set_max_entries", NI, |_| unsafe {
                qed_l2_cache_set_max_entries(c, 7)
            }),
            // SAFETY: as above.
            4 => self.refused("qed_l2_cache_set_policy", NI, |_| unsafe {
                qed_l2_cache_set_policy(c, 1)
            }),
            // SAFETY: as above.
            _ => self.refused("qed_l2_cache_get_stats", NI, |_| unsafe {
                qed_l2_cache_get_stats(c, s)
            }),
        }
        check!(
            self,
            stats == QedL2CacheStats::default(),
            "refused get_stats wrote stats"
        );
        Some(())
    }

    // ---- checks ----

    /// Every check of the module doc. The list checks are behaviour.md,
    /// "The list": every link as the QTAILQ macros leave it, the model's
    /// order, `n_entries` the number of elements, removed entries unlinked.
    fn check_all(&mut self) {
        let mut held: Vec<usize> = self.holds.iter().map(|h| h.id).collect();
        held.sort_unstable();
        let holds_of = |id: usize| -> i32 {
            let lo = held.partition_point(|&x| x < id);
            let hi = held.partition_point(|&x| x <= id);
            (hi - lo) as i32
        };
        let c = self.cache;
        match &self.model.cache {
            None => {
                // SAFETY: `cache` is our live buffer.
                let (first, n) = unsafe { ((*c).entries.tqh_first, (*c).n_entries) };
                check!(
                    self,
                    first.is_null() && n == 0,
                    "uninitialised cache is not empty"
                );
            }
            Some(m) => {
                self.report.longest = self.report.longest.max(m.list.len());
                if let Some(h) = m.hand {
                    check!(
                        self,
                        self.model.entries[h].cached,
                        "model: SIEVE hand off the list"
                    );
                }
                // SAFETY: `cache` is an initialised cache; every element on
                // its list must be a live entry (checked one by one).
                unsafe {
                    let head = addr_of_mut!((*c).entries.tqh_circ);
                    let mut expect_prev = head;
                    let mut e = (*c).entries.tqh_first;
                    for (i, &id) in m.list.iter().enumerate() {
                        let me = &self.model.entries[id];
                        check!(
                            self,
                            e == me.ptr,
                            "list position {i}: {e:?} (entry {:?}), expected entry {id} {me:?}; model list {:?}, C list {:?}",
                            self.id_of(e),
                            m.list,
                            self.c_list_ids()
                        );
                        check!(self, me.cached, "model: listed entry {id} not marked cached");
                        check!(
                            self,
                            me.refs == 1 + holds_of(id),
                            "model: entry {id} refs {} != 1 + holds",
                            me.refs
                        );
                        self.check_entry(id);
                        let link = addr_of_mut!((*e).node.tqe_circ);
                        check!(
                            self,
                            (*link).tql_prev == expect_prev,
                            "position {i}: bad tql_prev"
                        );
                        expect_prev = link;
                        e = (*e).node.tqe_next;
                    }
                    check!(
                        self,
                        e.is_null(),
                        "C list longer than the model's ({})",
                        m.list.len()
                    );
                    check!(
                        self,
                        (*head).tql_prev == expect_prev,
                        "head's tql_prev is not the last link"
                    );
                    let n = (*c).n_entries;
                    check!(
                        self,
                        n as usize == m.list.len(),
                        "n_entries {n}, expected {}",
                        m.list.len()
                    );
                }
                let mut stats = QedL2CacheStats::default();
                // SAFETY: initialised cache, writable stats.
                unsafe { qed_l2_cache_get_stats(c, &mut stats) };
                check!(self, stats == m.stats, "stats {stats:?}, expected {:?}", m.stats);
            }
        }
        // Entries the requests hold (cached ones were checked above).
        let mut prev = usize::MAX;
        for &id in &held {
            if id == prev {
                continue;
            }
            prev = id;
            let me = &self.model.entries[id];
            check!(self, me.alive, "model: held entry {id} not alive");
            if !me.cached {
                check!(
                    self,
                    me.refs == holds_of(id),
                    "model: entry {id} refs {} != holds",
                    me.refs
                );
                self.check_entry(id);
            }
        }
        // Entries released in this step must be released: the newest ones
        // are still recognised as released (misuse.md, "Limits").
        let released = &self.model.released;
        for &id in &released[released.len().saturating_sub(RELEASE_CHECK_MAX)..] {
            let p = self.model.entries[id].ptr;
            check!(
                self,
                !self.model.entries[id].alive,
                "model: released entry {id} alive"
            );
            check!(self, is_released(p), "entry {id} was not released");
        }
        if !released.is_empty() {
            self.report.release_checks += 1;
        }
    }

    /// The model's id of an entry pointer (failure messages only).
    fn id_of(&self, p: *mut CachedL2Table) -> Option<usize> {
        self.model.entries.iter().rposition(|e| e.ptr == p)
    }

    /// The C list as model ids, walked with a bound (failure messages only).
    fn c_list_ids(&self) -> Vec<Option<usize>> {
        let mut out = vec![];
        // SAFETY: reading the list of our cache; only called on failure.
        let mut e = unsafe { (*self.cache).entries.tqh_first };
        while !e.is_null() && out.len() < 2000 {
            out.push(self.id_of(e));
            // SAFETY: as above.
            e = unsafe { (*e).node.tqe_next };
        }
        out
    }

    /// One live entry: the library sees it live, and every field C sees is
    /// what the model expects; uncached entries are off every list.
    fn check_entry(&self, id: usize) {
        let me = &self.model.entries[id];
        check!(
            self,
            is_live(me.ptr),
            "entry {id} is not live: released or lost while in use ({me:?})"
        );
        // SAFETY: live (checked above: a failed check panics), so readable;
        // the table is alive with it.
        let (refs, offset, table, words, next, prev) = unsafe {
            let p = me.ptr;
            let t = me.table;
            (
                (*p).r#ref,
                (*p).offset,
                (*p).table.cast::<u64>(),
                [*t, *t.add(1), *t.add(2)],
                (*p).node.tqe_circ.tql_next,
                (*p).node.tqe_circ.tql_prev,
            )
        };
        check!(
            self,
            refs == me.refs,
            "entry {id}: ref {refs}, expected {}",
            me.refs
        );
        check!(self, offset == me.offset, "entry {id}: offset {offset:#x}");
        check!(self, table == me.table, "entry {id}: table pointer changed");
        check!(
            self,
            words == [me.offset, id as u64, me.writes],
            "entry {id}: table contents {words:?} changed"
        );
        if !me.cached {
            check!(
                self,
                next.is_null() && prev.is_null(),
                "uncached entry {id} still linked"
            );
        }
    }
}
