/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qed-l2-cache benchmark: the library against the original C algorithm
 * (bench/baseline.c), in one run.
 *
 *   1. ns per find (hit) + unref at 50, 1,024 and 16,384 cached tables;
 *   2. ns per miss cycle (find, alloc, commit, find, unref), working set 4x
 *      the capacity;
 *   3. misses per 100,000 lookups for each policy at capacity 50 and 200 on
 *      workloads modelling guests on a 1 TiB image (512 L2 tables of 2 GiB);
 *   4. heap bytes per cached table, library and baseline (glibc mallinfo2);
 *   5. the size advisor's cost (docs/advisor.md): find (hit) + unref at 50
 *      tables with the advisor off and on, as ratios to the baseline timed
 *      in the same run.
 *
 * Timings: clock_gettime(CLOCK_MONOTONIC), iterations calibrated so one run
 * lasts >= 20 ms, best of 11 runs. Run the release build:
 *   meson setup build-bench --buildtype=release && meson compile -C build-bench
 *   meson test -C build-bench --benchmark --verbose      (or build-bench/bench/bench)
 * `bench --quick` shortens the workloads 8x (for a smoke run);
 * `bench --hit N [POLICY [advisor]]` times only the library's hit loop (for perf);
 * `bench --cost` prints only the advisor and auto sizing cost tables.
 * The exit status is non-zero if a consistency check fails (library FIFO
 * misses differ from the baseline's, or the counters disagree with the
 * lookups the benchmark made).
 */
#include <malloc.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "baseline.h"
#include "bench_util.h"
#include "qed_l2_cache.h"

#define RUNS 11
#define MIN_RUN_NS 20000000.0

static bool failed;

/* The advisor section times CPU time of this thread (see there). */
static clockid_t bench_clock = CLOCK_MONOTONIC;

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(bench_clock, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* splitmix64: a small deterministic generator. */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double rng_unit(uint64_t *s)
{
    return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

static uint64_t rng_below(uint64_t *s, uint64_t n)
{
    return rng_next(s) % n;
}

/* Offset in the image file of L2 table i: tables are 4 clusters of 64 KiB. */
static uint64_t table_off(uint64_t i)
{
    return 0x100000ull + i * 0x40000ull;
}


/*
 * The two implementations behind one set of names, so every loop below is
 * written once and calls each side directly (through its PLT, as QEMU would).
 */
#define DEFINE_SIDE(P, INIT, FREE, ALLOC, UNREF, FIND, COMMIT)                                  \
    static CachedL2Table *P##_fill(L2TableCache *c, unsigned n)                                 \
    {                                                                                           \
        for (unsigned i = 0; i < n; i++) {                                                      \
            CachedL2Table *e = ALLOC(c);                                                        \
            e->offset = table_off(i);                                                           \
            COMMIT(c, e);                                                                       \
        }                                                                                       \
        return c->entries.tqh_first;                                                            \
    }                                                                                           \
    static double P##_hits(L2TableCache *c, unsigned n, uint64_t *x, uint64_t iters)           \
    {                                                                                           \
        uint64_t k = *x;                                                                        \
        double t0 = now_ns();                                                                   \
        for (uint64_t i = 0; i < iters; i++) {                                                  \
            UNREF(FIND(c, table_off(pick(&k, n))));                                             \
        }                                                                                       \
        *x = k;                                                                                 \
        return now_ns() - t0;                                                                   \
    }                                                                                           \
    static double P##_misses(L2TableCache *c, const uint64_t *keys, size_t n, uint64_t iters,   \
                             uint64_t *cursor)                                                  \
    {                                                                                           \
        uint64_t k = *cursor;                                                                   \
        double t0 = now_ns();                                                                   \
        for (uint64_t i = 0; i < iters; i++) {                                                  \
            uint64_t off = keys[k];                                                             \
            k = k + 1 == n ? 0 : k + 1;                                                         \
            CachedL2Table *e = FIND(c, off);                                                    \
            if (!e) {                                                                           \
                e = ALLOC(c);                                                                   \
                e->offset = off;                                                                \
                COMMIT(c, e);                                                                   \
                e = FIND(c, off);                                                               \
            }                                                                                   \
            UNREF(e);                                                                           \
        }                                                                                       \
        *cursor = k;                                                                            \
        return now_ns() - t0;                                                                   \
    }

DEFINE_SIDE(lib, qed_init_l2_cache, qed_free_l2_cache, qed_alloc_l2_cache_entry,
            qed_unref_l2_cache_entry, qed_find_l2_cache_entry, qed_commit_l2_cache_entry)
DEFINE_SIDE(base, base_init_l2_cache, base_free_l2_cache, base_alloc_l2_cache_entry,
            base_unref_l2_cache_entry, base_find_l2_cache_entry, base_commit_l2_cache_entry)

enum side { LIB, BASE };

static void side_init(enum side s, L2TableCache *c, unsigned max, QedL2CachePolicy policy)
{
    memset(c, 0, sizeof(*c));
    if (s == LIB) {
        qed_init_l2_cache(c);
        qed_l2_cache_set_max_entries(c, max);
        qed_l2_cache_set_policy(c, policy);
    } else {
        base_max_entries = max;
        base_init_l2_cache(c);
    }
}

static void side_free(enum side s, L2TableCache *c)
{
    if (s == LIB) {
        qed_free_l2_cache(c);
    } else {
        base_free_l2_cache(c);
    }
}

/*
 * Best ns per operation of `op` (a closure over ctx), calibrated so a run
 * takes MIN_RUN_NS, best of RUNS.
 */
typedef double (*timed_fn)(void *ctx, uint64_t iters);

static double best_ns_per_op(timed_fn op, void *ctx)
{
    uint64_t iters = 16;
    double t;
    while ((t = op(ctx, iters)) < MIN_RUN_NS / 4) {
        iters *= 4;
    }
    iters = (uint64_t)((double)iters * MIN_RUN_NS / t) + 1;
    double best = t / (double)iters * 4; /* pessimistic start */
    for (int r = 0; r < RUNS; r++) {
        double ns = op(ctx, iters) / (double)iters;
        if (ns < best) {
            best = ns;
        }
    }
    return best;
}

/* ---- 1. hit path ---- */

struct hit_ctx {
    enum side side;
    L2TableCache *cache;
    unsigned n;
    uint64_t x;
};

static double hit_op(void *p, uint64_t iters)
{
    struct hit_ctx *h = p;
    return h->side == LIB ? lib_hits(h->cache, h->n, &h->x, iters) : base_hits(h->cache, h->n, &h->x, iters);
}

/* The hit loop with the advisor on or off, and the cache auto-sized
 * (auto) or fixed. */
static double bench_hit_mode(enum side s, unsigned n, QedL2CachePolicy policy, bool advisor, bool automode)
{
    L2TableCache cache;
    side_init(s, &cache, n, policy);
    if (s == LIB) {
        qed_l2_cache_set_advisor(&cache, advisor);
        qed_l2_cache_set_auto(&cache, automode);
    }
    if (s == LIB) {
        lib_fill(&cache, n);
    } else {
        base_fill(&cache, n);
    }
    if (cache.n_entries != n) {
        fprintf(stderr, "bench: expected %u cached tables, got %u\n", n, cache.n_entries);
        failed = true;
    }
    struct hit_ctx ctx = {s, &cache, n, 0x2545F4914F6CDD1Dull}; /* uniform over the cached tables */
    double ns = best_ns_per_op(hit_op, &ctx);
    if (automode && (cache.n_entries != n || qed_l2_cache_get_target(&cache) < n)) {
        /* Uniform hits over n tables: the cache must keep them all. */
        fprintf(stderr, "bench: the auto cache chose %u tables, holds %u, for uniform hits over %u\n",
                qed_l2_cache_get_target(&cache), cache.n_entries, n);
        failed = true;
    }
    if (s == LIB && !automode) {
        uint64_t m;
        int rc = qed_l2_cache_predict_misses(&cache, n, &m);
        if (advisor ? rc != 0 : rc != -1) {
            fprintf(stderr, "bench: advisor %s but predict_misses returned %d\n", advisor ? "on" : "off", rc);
            failed = true;
        }
    }
    side_free(s, &cache);
    return ns;
}

static double bench_hit_advisor(enum side s, unsigned n, QedL2CachePolicy policy, bool advisor)
{
    return bench_hit_mode(s, n, policy, advisor, false);
}

static double bench_hit(enum side s, unsigned n, QedL2CachePolicy policy)
{
    return bench_hit_advisor(s, n, policy, false);
}

/* ---- 2. miss cycle ---- */

struct miss_ctx {
    enum side side;
    L2TableCache *cache;
    uint64_t *keys;
    size_t n;
    uint64_t cursor;
};

static double miss_op(void *p, uint64_t iters)
{
    struct miss_ctx *m = p;
    return m->side == LIB ? lib_misses(m->cache, m->keys, m->n, iters, &m->cursor)
                          : base_misses(m->cache, m->keys, m->n, iters, &m->cursor);
}

static double bench_miss(enum side s, unsigned cap)
{
    L2TableCache cache;
    size_t n = (size_t)cap * 4;
    uint64_t *keys = malloc(n * sizeof(*keys));
    for (size_t i = 0; i < n; i++) {
        keys[i] = table_off(i); /* cycled in order: every lookup misses (FIFO) */
    }
    side_init(s, &cache, cap, QED_L2_CACHE_POLICY_FIFO);
    struct miss_ctx ctx = {s, &cache, keys, n, 0};
    double ns = best_ns_per_op(miss_op, &ctx);
    if (s == LIB) {
        QedL2CacheStats st;
        qed_l2_cache_get_stats(&cache, &st);
        /* Each cycle: one missing find, one hitting find after the commit. */
        if (st.misses == 0 || st.hits != st.misses || st.commits != st.misses) {
            fprintf(stderr, "bench: miss cycle: %llu hits, %llu misses\n", (unsigned long long)st.hits,
                    (unsigned long long)st.misses);
            failed = true;
        }
    }
    side_free(s, &cache);
    free(keys);
    return ns;
}

/* ---- 3. policy simulation ---- */

#define TABLES 512u    /* 1 TiB image, 2 GiB per L2 table */
#define QUEUE_DEPTH 4u /* requests in flight, each holding its table */

enum workload { ZIPF, SCAN_HOT, DB, N_WORKLOADS };

static const char *const workload_names[N_WORKLOADS] = {
    [ZIPF] = "zipf-0.99",
    [SCAN_HOT] = "hot30+backup",
    [DB] = "database",
};

/* A deterministic lookup stream; reset to run the same stream again. */
struct gen {
    enum workload w;
    uint64_t rng;
    uint64_t left;
    const double *zipf_cdf; /* over TABLES ranks */
    const uint32_t *perm;   /* rank -> table */
    /* scan state (backup, or the database's range scans) */
    uint32_t scan_table;
    uint32_t scan_left_here;
    uint32_t scan_tables_left;
    /* database: write-ahead log */
    uint32_t log_table;
    uint32_t log_left_here;
};

static double zipf_cdf[TABLES];
static uint32_t perm[TABLES];

static void make_tables(void)
{
    double sum = 0;
    for (unsigned i = 0; i < TABLES; i++) {
        sum += 1.0 / pow(i + 1, 0.99);
        zipf_cdf[i] = sum;
    }
    for (unsigned i = 0; i < TABLES; i++) {
        zipf_cdf[i] /= sum;
        perm[i] = i;
    }
    uint64_t s = 7;
    for (unsigned i = TABLES - 1; i > 0; i--) {
        unsigned j = (unsigned)rng_below(&s, i + 1);
        uint32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

static uint32_t zipf_rank(uint64_t *rng)
{
    double u = rng_unit(rng);
    unsigned lo = 0, hi = TABLES - 1;
    while (lo < hi) {
        unsigned mid = (lo + hi) / 2;
        if (zipf_cdf[mid] < u) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

/* Backup: each table is read cluster by cluster (8,192 lookups in a row). */
#define BACKUP_PER_TABLE 8192u
/* Database: range scans of 1-8 tables, 256 lookups per table. */
#define RANGE_PER_TABLE 256u
/* Database: the log table is appended to 16,384 times before the next. */
#define LOG_PER_TABLE 16384u

static uint64_t workload_length(enum workload w, bool quick)
{
    uint64_t n = w == SCAN_HOT ? 2ull * TABLES * BACKUP_PER_TABLE : 4000000ull;
    return quick ? n / 8 : n;
}

static void gen_reset(struct gen *g, enum workload w, bool quick)
{
    memset(g, 0, sizeof(*g));
    g->w = w;
    g->rng = 1234 + (uint64_t)w;
    g->left = workload_length(w, quick);
    g->log_table = 400;
}

/* The next table index, or -1 at the end. */
static int64_t gen_next(struct gen *g)
{
    if (g->left == 0) {
        return -1;
    }
    g->left--;
    switch (g->w) {
    case ZIPF:
        /* Random reads, zipfian popularity (YCSB's 0.99) over scattered tables. */
        return perm[zipf_rank(&g->rng)];
    case SCAN_HOT:
        /*
         * Half the lookups: the guest, uniform over a hot set of 30 tables.
         * The other half: a backup job reading the whole image in order.
         */
        if (rng_next(&g->rng) & 1) {
            return perm[rng_below(&g->rng, 30)];
        }
        if (g->scan_left_here == 0) {
            g->scan_table = (g->scan_table + 1) % TABLES;
            g->scan_left_here = BACKUP_PER_TABLE;
        }
        g->scan_left_here--;
        return g->scan_table;
    case DB: {
        /*
         * 70% index/row lookups (zipf over the tables), 20% range scans of
         * 1-8 consecutive tables from a random start, 10% log appends that
         * move on to the next table every LOG_PER_TABLE lookups.
         */
        uint64_t r = rng_below(&g->rng, 100);
        if (r < 70) {
            return perm[zipf_rank(&g->rng)];
        }
        if (r < 90) {
            if (g->scan_left_here == 0) {
                if (g->scan_tables_left == 0) {
                    g->scan_table = (uint32_t)rng_below(&g->rng, TABLES);
                    g->scan_tables_left = 1 + (uint32_t)rng_below(&g->rng, 8);
                } else {
                    g->scan_table = (g->scan_table + 1) % TABLES;
                }
                g->scan_tables_left--;
                g->scan_left_here = RANGE_PER_TABLE;
            }
            g->scan_left_here--;
            return g->scan_table;
        }
        if (g->log_left_here == 0) {
            g->log_table = 400 + (g->log_table - 400 + 1) % 64;
            g->log_left_here = LOG_PER_TABLE;
        }
        g->log_left_here--;
        return g->log_table;
    }
    default:
        abort();
    }
}

/*
 * Runs a workload through one side the way the QED read path does: each
 * request drops the table it held, looks the next one up, and on a miss
 * allocates, commits and finds again. QUEUE_DEPTH requests hold a table at
 * any time, so the in-use rule is exercised. Returns the misses.
 */
static uint64_t simulate(enum side s, enum workload w, unsigned cap, QedL2CachePolicy policy, bool quick)
{
    L2TableCache cache;
    CachedL2Table *held[QUEUE_DEPTH] = {0};
    struct gen g;
    uint64_t misses = 0, lookups = 0;
    int64_t t;

    side_init(s, &cache, cap, policy);
    gen_reset(&g, w, quick);
    while ((t = gen_next(&g)) >= 0) {
        uint64_t off = table_off((uint64_t)t);
        unsigned slot = (unsigned)(lookups++ % QUEUE_DEPTH);
        CachedL2Table *e;
        if (s == LIB) {
            qed_unref_l2_cache_entry(held[slot]);
            e = qed_find_l2_cache_entry(&cache, off);
            if (!e) {
                misses++;
                e = qed_alloc_l2_cache_entry(&cache);
                e->offset = off;
                qed_commit_l2_cache_entry(&cache, e);
                e = qed_find_l2_cache_entry(&cache, off);
            }
        } else {
            base_unref_l2_cache_entry(held[slot]);
            e = base_find_l2_cache_entry(&cache, off);
            if (!e) {
                misses++;
                e = base_alloc_l2_cache_entry(&cache);
                e->offset = off;
                base_commit_l2_cache_entry(&cache, e);
                e = base_find_l2_cache_entry(&cache, off);
            }
        }
        if (!e) {
            fprintf(stderr, "bench: find after commit failed\n");
            exit(2);
        }
        held[slot] = e;
    }
    for (unsigned i = 0; i < QUEUE_DEPTH; i++) {
        if (s == LIB) {
            qed_unref_l2_cache_entry(held[i]);
        } else {
            base_unref_l2_cache_entry(held[i]);
        }
    }
    if (s == LIB) {
        QedL2CacheStats st;
        qed_l2_cache_get_stats(&cache, &st);
        /* Every miss is followed by one more (hitting) find. */
        if (st.misses != misses || st.hits != lookups || st.commits != misses) {
            fprintf(stderr, "bench: counters disagree: misses %llu/%llu hits %llu/%llu\n",
                    (unsigned long long)st.misses, (unsigned long long)misses,
                    (unsigned long long)st.hits, (unsigned long long)lookups);
            failed = true;
        }
    }
    side_free(s, &cache);
    return misses;
}

/* ---- 4. memory ---- */

/*
 * Heap bytes per cached table: enough caches of n tables to hold >= 16,384
 * tables in all, so allocator noise (thread caches, the per-cache state)
 * averages out. Tables are not allocated (table = NULL on both sides).
 */
static double heap_per_table(enum side s, unsigned n)
{
    unsigned k = n >= 16384 ? 1 : 16384 / n;
    L2TableCache *caches = calloc(k, sizeof(*caches));
    struct mallinfo2 before, after;
    before = mallinfo2();
    for (unsigned j = 0; j < k; j++) {
        side_init(s, &caches[j], n, QED_L2_CACHE_POLICY_FIFO);
        if (s == LIB) {
            lib_fill(&caches[j], n);
        } else {
            base_fill(&caches[j], n);
        }
    }
    after = mallinfo2();
    for (unsigned j = 0; j < k; j++) {
        side_free(s, &caches[j]);
    }
    free(caches);
    return (double)(after.uordblks + after.hblkhd - before.uordblks - before.hblkhd) / ((double)n * k);
}

/* One cost table: find (hit) + unref at 50 tables, the baseline, the
 * library plain and the library with the advisor (advisor) or auto sizing
 * (!advisor) on, for each policy. */
static void cost_table(const char *title, const char *pair, const char *off_col, const char *off_short,
                       const char *on_col, const char *on_short, bool advisor)
{
    printf("## %s: find (hit) + unref at 50 tables, %s, ratio to the baseline\n", title, pair);
    printf("## (thread CPU time; baseline, %s and %s timed in turn, best of 3 rounds)\n\n", off_short, on_short);
    printf("| policy | baseline ns | %s ns | %s/baseline | %s ns | %s/baseline |\n", off_col, off_short, on_col,
           on_short);
    printf("|---|---:|---:|---:|---:|---:|\n");
    bench_clock = CLOCK_THREAD_CPUTIME_ID;
    for (unsigned p = 0; p < 3; p++) {
        static const char *const names[] = {"fifo", "lru", "sieve"};
        double b = INFINITY, off = INFINITY, on = INFINITY;
        for (int round = 0; round < 3; round++) {
            b = fmin(b, bench_hit(BASE, 50, QED_L2_CACHE_POLICY_FIFO));
            off = fmin(off, bench_hit_mode(LIB, 50, p, false, false));
            on = fmin(on, bench_hit_mode(LIB, 50, p, advisor, !advisor));
        }
        printf("| %s | %.1f | %.1f | %.2f | %.1f | %.2f |\n", names[p], b, off, off / b, on, on / b);
        fflush(stdout);
    }
    bench_clock = CLOCK_MONOTONIC;
    printf("\n");
}

int main(int argc, char **argv)
{
    bool quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
    static const unsigned sizes[] = {50, 1024, 16384};
    double hit_lib[3], hit_base[3];

    if (argc > 2 && strcmp(argv[1], "--hit") == 0) {
        /* For profilers: only the library's hit loop, at argv[2] tables,
         * policy argv[3] (0 fifo, 1 lru, 2 sieve; default fifo). */
        unsigned n = (unsigned)strtoul(argv[2], NULL, 10);
        QedL2CachePolicy p = argc > 3 ? (QedL2CachePolicy)strtoul(argv[3], NULL, 10) : 0;
        printf("library hit at %u tables, policy %u: %.2f ns\n", n, p, bench_hit(LIB, n, p));
        if (argc > 4 && strcmp(argv[4], "advisor") == 0) {
            bench_clock = CLOCK_THREAD_CPUTIME_ID;
            printf("baseline (thread CPU time): %.2f ns\n", bench_hit(BASE, n, QED_L2_CACHE_POLICY_FIFO));
            printf("library, advisor off (thread CPU time): %.2f ns\n", bench_hit(LIB, n, p));
            printf("with the advisor on: %.2f ns\n", bench_hit_advisor(LIB, n, p, true));
        }
        return 0;
    }

    make_tables();
    if (argc > 1 && strcmp(argv[1], "--cost") == 0) {
        /* Only the two cost tables (BENCHMARKS.md, "Hit cost"). */
        cost_table("size advisor cost", "advisor off and on", "advisor off", "off", "advisor on", "on", true);
        cost_table("auto sizing cost", "fixed and auto", "fixed", "fixed", "auto", "auto", false);
        return 0;
    }
    printf("qed-l2-cache %s benchmark: library vs the original C algorithm (baseline)\n",
           qed_l2_cache_version());
    printf("timings: best of %d runs of >= %.0f ms each, ns per operation\n\n", RUNS,
           MIN_RUN_NS / 1e6);

    printf("## find (hit) + unref, uniform random over the cached tables\n\n");
    printf("| cached tables | baseline ns | library ns | library/baseline | speedup |\n");
    printf("|---:|---:|---:|---:|---:|\n");
    for (int i = 0; i < 3; i++) {
        hit_base[i] = bench_hit(BASE, sizes[i], QED_L2_CACHE_POLICY_FIFO);
        hit_lib[i] = bench_hit(LIB, sizes[i], QED_L2_CACHE_POLICY_FIFO);
        printf("| %u | %.1f | %.1f | %.2f | %.1fx |\n", sizes[i], hit_base[i], hit_lib[i],
               hit_lib[i] / hit_base[i], hit_base[i] / hit_lib[i]);
        fflush(stdout);
    }
    printf("\nlibrary hit at 16,384 tables / at 50 tables: %.2fx\n\n", hit_lib[2] / hit_lib[0]);

    printf("## library find (hit) + unref by policy, ns (LRU relinks the entry on the C list)\n\n");
    printf("| cached tables | fifo | lru | sieve |\n|---:|---:|---:|---:|\n");
    for (int i = 0; i < 3; i++) {
        printf("| %u | %.1f | %.1f | %.1f |\n", sizes[i], hit_lib[i],
               bench_hit(LIB, sizes[i], QED_L2_CACHE_POLICY_LRU),
               bench_hit(LIB, sizes[i], QED_L2_CACHE_POLICY_SIEVE));
        fflush(stdout);
    }
    printf("\n");

    /*
     * The costs of the advisor and of auto sizing: each table's three
     * variants are timed in turn, three rounds, best of each, on this
     * thread's CPU time, so that colleagues' jobs on a shared machine shift
     * all three alike instead of whichever ran while the machine was busy.
     */
    cost_table("size advisor cost", "advisor off and on", "advisor off", "off", "advisor on", "on", true);
    /* docs/sizing.md */
    cost_table("auto sizing cost", "fixed and auto", "fixed", "fixed", "auto", "auto", false);

    printf("## miss cycle (find, alloc, commit, find, unref), working set 4x capacity, FIFO\n\n");
    printf("| capacity | baseline ns | library ns | library/baseline | speedup |\n");
    printf("|---:|---:|---:|---:|---:|\n");
    for (int i = 0; i < 3; i++) {
        double b = bench_miss(BASE, sizes[i]);
        double l = bench_miss(LIB, sizes[i]);
        printf("| %u | %.1f | %.1f | %.2f | %.1fx |\n", sizes[i], b, l, l / b, b / l);
        fflush(stdout);
    }

    printf("\n## misses per 100,000 lookups: 1 TiB image (512 L2 tables of 2 GiB), %u requests in flight\n\n",
           QUEUE_DEPTH);
    printf("| workload | capacity | lookups | baseline | fifo | lru | sieve | best vs fifo |\n");
    printf("|---|---:|---:|---:|---:|---:|---:|---:|\n");
    static const unsigned caps[] = {50, 200};
    static const char *const pnames[] = {"fifo", "lru", "sieve"};
    for (int w = 0; w < N_WORKLOADS; w++) {
        for (int c = 0; c < 2; c++) {
            double per = 100000.0 / (double)workload_length(w, quick);
            uint64_t base = simulate(BASE, w, caps[c], QED_L2_CACHE_POLICY_FIFO, quick);
            uint64_t m[3];
            for (unsigned p = 0; p < 3; p++) {
                m[p] = simulate(LIB, w, caps[c], p, quick);
            }
            if (m[0] != base) {
                fprintf(stderr, "bench: library fifo misses %llu != baseline %llu\n",
                        (unsigned long long)m[0], (unsigned long long)base);
                failed = true;
            }
            unsigned best = m[1] <= m[2] ? 1 : 2;
            printf("| %s | %u | %llu | %.1f | %.1f | %.1f | %.1f | %s %+.0f%% |\n", workload_names[w],
                   caps[c], (unsigned long long)workload_length(w, quick), base * per, m[0] * per,
                   m[1] * per, m[2] * per, m[1] == m[2] ? "lru = sieve" : pnames[best],
                   100.0 * ((double)m[best] - (double)m[0]) / (double)m[0]);
            fflush(stdout);
        }
    }

    printf("\n## heap bytes per cached table (glibc mallinfo2: chunk headers, per-cache state included;\n"
           "## table memory excluded)\n\n");
    printf("| cached tables | baseline | library | library - baseline |\n");
    printf("|---:|---:|---:|---:|\n");
    for (int i = 0; i < 3; i++) {
        double b = heap_per_table(BASE, sizes[i]);
        double l = heap_per_table(LIB, sizes[i]);
        printf("| %u | %.1f | %.1f | %.1f |\n", sizes[i], b, l, l - b);
    }

    if (failed) {
        fprintf(stderr, "bench: consistency check FAILED\n");
        return 1;
    }
    return 0;
}
