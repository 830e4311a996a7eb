/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * qed-demo: drives the L2 table cache the way QEMU's QED driver does under a
 * random-read load, over a simulated image (no file is touched), and prints
 * what the cache did, from its own counters and from the library's.
 *
 * The image: 64 KiB clusters and L2 tables of 4 clusters (256 KiB, 32768
 * entries), so each table maps 2 GiB; 512 tables make a 1 TiB disk, more
 * tables than the cache holds (50 by default). Most tables exist from the
 * start; writes into the others allocate them.
 *
 * The load: requests pick a table with a Zipf distribution (a few hot
 * tables, a long tail) and a cluster in it uniformly; one in ten is a
 * write. Several requests are in flight at once: each keeps its L2 table
 * referenced until it starts its next lookup, and a miss completes (commit,
 * find) only when its request is scheduled again, so other requests run in
 * between and two of them may miss the same table at once.
 *
 * Every lookup follows the QED read path: drop the previous table (unref),
 * find; on a miss alloc, read the table, commit, find again. Allocating
 * writes update the table in place and write it through.
 *
 * Checks (exit status 1 when one fails): the library's counters equal the
 * demo's, a table a request holds is never evicted (a find for it returns
 * that very entry), and every cluster offset read through the cache equals
 * what was last written to the simulated disk.
 */
#include <inttypes.h>
#include <math.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qed_l2_cache.h"

#define CLUSTER_SIZE (64u * 1024)
#define TABLE_CLUSTERS 4u
#define TABLE_BYTES (CLUSTER_SIZE * TABLE_CLUSTERS)
#define TABLE_ENTRIES (TABLE_BYTES / sizeof(uint64_t))
#define TABLE_SPAN ((uint64_t)TABLE_ENTRIES * CLUSTER_SIZE) /* 2 GiB */
#define ZIPF_EXPONENT 1.2
#define WRITE_PERCENT 10
#define UNALLOCATED_EIGHTHS 1 /* one table in eight does not exist yet */

/* ---- a small deterministic generator (splitmix64) ---- */

static uint64_t rng_state;

static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static uint32_t rng_below(uint32_t n)
{
    return (uint32_t)(((rng_next() >> 32) * n) >> 32);
}

static double rng_unit(void)
{
    return (double)(rng_next() >> 11) / (double)(UINT64_C(1) << 53);
}

/* ---- the simulated image file ---- */

/* Cluster offsets written so far, by (table, index): an open-addressed map. */
typedef struct {
    uint64_t *keys; /* table * TABLE_ENTRIES + index + 1; 0 = empty */
    uint64_t *vals;
    size_t mask;
    size_t used;
} Map;

/* Per table: which indexes are set, to rebuild the table when it is read. */
typedef struct {
    uint32_t *idx;
    size_t n, cap;
} IndexList;

typedef struct {
    unsigned n_tables;
    uint64_t *l1;     /* file offset of each L2 table, 0 = not allocated */
    uint64_t end;     /* next free cluster in the file */
    Map map;
    IndexList *set;   /* per table */
    uint64_t table_reads, table_writes;
} Image;

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p) {
        fprintf(stderr, "qed-demo: out of memory\n");
        exit(2);
    }
    return p;
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (!p) {
        fprintf(stderr, "qed-demo: out of memory\n");
        exit(2);
    }
    return p;
}

static uint64_t *map_slot(Map *m, uint64_t key)
{
    size_t h = (size_t)((key * UINT64_C(0x9E3779B97F4A7C15)) >> 17) & m->mask;
    while (m->keys[h] != 0 && m->keys[h] != key) {
        h = (h + 1) & m->mask;
    }
    return &m->keys[h];
}

static void map_grow(Map *m)
{
    Map old = *m;
    m->mask = old.mask ? old.mask * 2 + 1 : 1023;
    m->keys = xcalloc(m->mask + 1, sizeof(uint64_t));
    m->vals = xcalloc(m->mask + 1, sizeof(uint64_t));
    for (size_t i = 0; old.mask && i <= old.mask; i++) {
        if (old.keys[i]) {
            uint64_t *k = map_slot(m, old.keys[i]);
            *k = old.keys[i];
            m->vals[k - m->keys] = old.vals[i];
        }
    }
    free(old.keys);
    free(old.vals);
}

static uint64_t disk_entry(Image *img, unsigned t, uint32_t i)
{
    uint64_t *k = map_slot(&img->map, (uint64_t)t * TABLE_ENTRIES + i + 1);
    return *k ? img->map.vals[k - img->map.keys] : 0;
}

static void disk_set_entry(Image *img, unsigned t, uint32_t i, uint64_t val)
{
    if ((img->map.used + 1) * 2 > img->map.mask) {
        map_grow(&img->map);
    }
    uint64_t key = (uint64_t)t * TABLE_ENTRIES + i + 1;
    uint64_t *k = map_slot(&img->map, key);
    if (*k == 0) {
        *k = key;
        img->map.used++;
        IndexList *l = &img->set[t];
        if (l->n == l->cap) {
            l->cap = l->cap ? 2 * l->cap : 8;
            uint32_t *p = realloc(l->idx, l->cap * sizeof(uint32_t));
            if (!p) {
                fprintf(stderr, "qed-demo: out of memory\n");
                exit(2);
            }
            l->idx = p;
        }
        l->idx[l->n++] = i;
    }
    img->map.vals[k - img->map.keys] = val;
}

static uint64_t alloc_cluster(Image *img)
{
    uint64_t o = img->end;
    img->end += CLUSTER_SIZE;
    return o;
}

/* Reads L2 table t from the file into `table` (zeroes but for what was set). */
static void read_table(Image *img, unsigned t, QEDTable *table)
{
    memset(table, 0, TABLE_BYTES);
    for (size_t k = 0; k < img->set[t].n; k++) {
        uint32_t i = img->set[t].idx[k];
        table->offsets[i] = disk_entry(img, t, i);
    }
    img->table_reads++;
}

static QEDTable *table_alloc(void)
{
    void *p = NULL;
    /* QEMU allocates tables with qemu_blockalign(); the library free()s them. */
    if (posix_memalign(&p, 4096, TABLE_BYTES) != 0) {
        fprintf(stderr, "qed-demo: out of memory\n");
        exit(2);
    }
    return p;
}

/* ---- requests ---- */

typedef struct {
    CachedL2Table *l2_table; /* the table this request holds, or NULL */
    CachedL2Table *pending;  /* a miss whose table read is in flight */
    unsigned table;          /* what the request is after */
    uint32_t index;
    bool write;
} Request;

typedef struct {
    uint64_t requests, lookups, finds, hits, misses, commits, duplicates, peak;
    uint64_t request_hits, unallocated_reads, new_tables, cluster_allocs;
    uint64_t held_evicted, wrong_entry, wrong_data;
} Counters;

static L2TableCache cache;
static Image img;

/* Every lookup a request starts (and every new table), for the replays. */
static uint64_t *trace;
static size_t trace_len, trace_cap;

static void record(uint64_t offset)
{
    if (trace_len == trace_cap) {
        trace_cap = trace_cap ? 2 * trace_cap : 65536;
        trace = realloc(trace, trace_cap * sizeof(*trace));
        if (!trace) {
            fprintf(stderr, "qed-demo: out of memory\n");
            exit(1);
        }
    }
    trace[trace_len++] = offset;
}
static Counters cnt;
static Request *reqs;
static unsigned n_reqs;

static CachedL2Table *find(uint64_t offset)
{
    CachedL2Table *e = qed_find_l2_cache_entry(&cache, offset);
    cnt.finds++;
    if (e) {
        cnt.hits++;
    } else {
        cnt.misses++;
    }
    return e;
}

/* The entry another request holds for this offset, if any. */
static CachedL2Table *held_by_other(const Request *self, uint64_t offset)
{
    for (unsigned k = 0; k < n_reqs; k++) {
        const Request *r = &reqs[k];
        if (r != self && r->l2_table && r->l2_table->offset == offset) {
            return r->l2_table;
        }
    }
    return NULL;
}

static void commit(CachedL2Table *e)
{
    qed_commit_l2_cache_entry(&cache, e);
    cnt.commits++;
    if (cache.n_entries > cnt.peak) {
        cnt.peak = cache.n_entries;
    }
}

/* The request has its table: read or write one cluster offset through it. */
static void use_table(Request *r)
{
    QEDTable *t = r->l2_table->table;
    uint64_t want = disk_entry(&img, r->table, r->index);
    if (t->offsets[r->index] != want) {
        cnt.wrong_data++;
    }
    if (r->write && t->offsets[r->index] == 0) {
        /* Allocating write: a new data cluster, the table updated in place
         * and written through while the request holds it. */
        uint64_t data = alloc_cluster(&img);
        t->offsets[r->index] = data;
        disk_set_entry(&img, r->table, r->index, data);
        img.table_writes++;
        cnt.cluster_allocs++;
    }
}

/* The table read of a miss completed: commit, find again, go on. */
static void complete_read(Request *r)
{
    uint64_t offset = img.l1[r->table];
    CachedL2Table *e = r->pending;
    r->pending = NULL;
    read_table(&img, r->table, e->table);
    e->offset = offset;
    commit(e);
    r->l2_table = find(offset);
    if (!r->l2_table) {
        fprintf(stderr, "qed-demo: find after commit of %#" PRIx64 " failed\n", offset);
        exit(1);
    }
    if (r->l2_table != e) {
        cnt.duplicates++; /* another request committed it first; e is gone */
    }
    use_table(r);
}

/* A table that does not exist yet: allocate, fill, write, link, commit, find. */
static void allocate_table(Request *r)
{
    CachedL2Table *e = qed_alloc_l2_cache_entry(&cache);
    e->table = table_alloc();
    memset(e->table, 0, TABLE_BYTES);
    uint64_t data = alloc_cluster(&img);
    e->table->offsets[r->index] = data;
    uint64_t offset = alloc_cluster(&img); /* the table's 4 clusters */
    img.end += (TABLE_CLUSTERS - 1) * CLUSTER_SIZE;
    disk_set_entry(&img, r->table, r->index, data);
    img.table_writes++;
    img.l1[r->table] = offset;
    e->offset = offset;
    record(offset);
    commit(e);
    r->l2_table = find(offset);
    if (r->l2_table != e) {
        fprintf(stderr, "qed-demo: find after committing new table %#" PRIx64 " failed\n", offset);
        exit(1);
    }
    cnt.new_tables++;
    cnt.cluster_allocs++;
}

/* Zipf over tables, hot ones scattered over the disk. */
static double *zipf_cdf;
static unsigned *zipf_table;

static void zipf_init(unsigned n)
{
    double sum = 0;
    zipf_cdf = xmalloc(n * sizeof(double));
    zipf_table = xmalloc(n * sizeof(unsigned));
    for (unsigned k = 0; k < n; k++) {
        sum += 1.0 / pow(k + 1, ZIPF_EXPONENT);
        zipf_cdf[k] = sum;
        zipf_table[k] = k;
    }
    for (unsigned k = 0; k < n; k++) {
        zipf_cdf[k] /= sum;
    }
    for (unsigned k = n - 1; k > 0; k--) {
        unsigned j = rng_below(k + 1);
        unsigned tmp = zipf_table[k];
        zipf_table[k] = zipf_table[j];
        zipf_table[j] = tmp;
    }
}

static unsigned zipf_pick(unsigned n)
{
    double u = rng_unit();
    unsigned lo = 0, hi = n - 1;
    while (lo < hi) {
        unsigned mid = lo + (hi - lo) / 2;
        if (zipf_cdf[mid] < u) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return zipf_table[lo];
}

/* One scheduling step of request r. */
static void step(Request *r)
{
    if (r->pending) {
        complete_read(r);
        return;
    }
    /* A new request: drop the previous one's table, pick a cluster. */
    qed_unref_l2_cache_entry(r->l2_table);
    r->l2_table = NULL;
    cnt.requests++;
    r->table = zipf_pick(img.n_tables);
    r->index = rng_below(TABLE_ENTRIES);
    r->write = rng_below(100) < WRITE_PERCENT;

    uint64_t offset = img.l1[r->table];
    if (offset == 0) {
        if (r->write) {
            allocate_table(r);
        } else {
            cnt.unallocated_reads++; /* reads zeroes, no L2 lookup */
        }
        return;
    }
    cnt.lookups++;
    record(offset);
    CachedL2Table *other = held_by_other(r, offset);
    r->l2_table = find(offset);
    if (other && r->l2_table != other) {
        /* docs/behaviour.md, "The eviction rule": a table a request holds must stay cached. */
        if (r->l2_table) {
            cnt.wrong_entry++;
        } else {
            cnt.held_evicted++;
        }
    }
    if (r->l2_table) {
        cnt.request_hits++;
        use_table(r);
        return;
    }
    CachedL2Table *e = qed_alloc_l2_cache_entry(&cache);
    e->table = table_alloc();
    r->pending = e; /* the read is in flight until r is scheduled again */
}

static unsigned long long parse_number(const char *opt, const char *arg, unsigned long long min,
                                       unsigned long long max)
{
    char *end = NULL;
    unsigned long long v;
    if (!arg) {
        fprintf(stderr, "qed-demo: %s needs a value\n", opt);
        exit(2);
    }
    v = strtoull(arg, &end, 0);
    if (*arg == '\0' || *end != '\0' || arg[0] == '-' || v < min || v > max) {
        fprintf(stderr, "qed-demo: %s: expected a number from %llu to %llu, got \"%s\"\n", opt, min, max, arg);
        exit(2);
    }
    return v;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: qed-demo [--requests N] [--tables N] [--in-flight N] [--seed N] [--svg FILE]\n"
            "  --requests N   requests to simulate (default 200000)\n"
            "  --tables N     L2 tables of the image, 2 GiB each (default 512: 1 TiB)\n"
            "  --in-flight N  requests in flight at once (default 8)\n"
            "  --seed N       random seed (default 1)\n"
            "  --svg FILE     also write the miss-ratio chart as an SVG image\n"
            "The cache honours QED_L2_CACHE_SIZE and QED_L2_CACHE_POLICY.\n");
}

static const char *env_or(const char *name, const char *dflt)
{
    const char *v = getenv(name);
    return v && *v ? v : dflt;
}

/* ---- the miss-ratio curve: the advisor's predictions beside replays ---- */

/* Misses of a real cache of `max` tables on the recorded lookups, each the
 * QED read path at once (find; on a miss alloc, commit, find; unref). */
static uint64_t replay(unsigned max)
{
    L2TableCache c;
    uint64_t misses = 0;
    memset(&c, 0, sizeof(c));
    qed_init_l2_cache(&c);
    qed_l2_cache_set_advisor(&c, 0);
    qed_l2_cache_set_max_entries(&c, max);
    for (size_t i = 0; i < trace_len; i++) {
        CachedL2Table *e = qed_find_l2_cache_entry(&c, trace[i]);
        if (!e) {
            misses++;
            e = qed_alloc_l2_cache_entry(&c);
            e->offset = trace[i];
            qed_commit_l2_cache_entry(&c, e);
            e = qed_find_l2_cache_entry(&c, trace[i]);
        }
        qed_unref_l2_cache_entry(e);
    }
    qed_free_l2_cache(&c);
    return misses;
}

/* The recorded lookups replayed through an auto cache (docs/sizing.md),
 * with real 256 KiB tables: its misses, the size it chose, the most tables
 * it held and the most table memory. */
static uint64_t replay_auto(unsigned *chosen, uint64_t *peak, uint64_t *peak_bytes)
{
    L2TableCache c;
    uint64_t misses = 0;
    memset(&c, 0, sizeof(c));
    qed_init_l2_cache(&c);
    qed_l2_cache_set_advisor(&c, 0);
    qed_l2_cache_set_auto(&c, 1);
    *peak_bytes = 0;
    for (size_t i = 0; i < trace_len; i++) {
        CachedL2Table *e = qed_find_l2_cache_entry(&c, trace[i]);
        if (!e) {
            misses++;
            e = qed_alloc_l2_cache_entry(&c);
            e->table = table_alloc();
            e->offset = trace[i];
            qed_commit_l2_cache_entry(&c, e);
            e = qed_find_l2_cache_entry(&c, trace[i]);
            uint64_t bytes = qed_l2_cache_get_table_bytes(&c);
            *peak_bytes = bytes > *peak_bytes ? bytes : *peak_bytes;
        }
        qed_unref_l2_cache_entry(e);
    }
    QedL2CacheStats st;
    qed_l2_cache_get_stats(&c, &st);
    *chosen = qed_l2_cache_get_target(&c);
    *peak = st.peak_entries;
    qed_free_l2_cache(&c);
    return misses;
}

/* Auto beside the fixed default, on the same lookups. */
static void auto_beside_fixed(void)
{
    unsigned chosen;
    uint64_t peak, peak_bytes;
    uint64_t m_auto = replay_auto(&chosen, &peak, &peak_bytes);
    uint64_t m_fixed = replay(50);
    uint64_t m_chosen = replay(chosen);
    double n = trace_len ? (double)trace_len : 1;
    printf("\n  QED_L2_CACHE_SIZE=auto beside the fixed default, replaying the same %zu lookups\n"
           "  (no requests in flight; auto learns as it goes, from 50 tables):\n\n", trace_len);
    printf("  %-34s %9s %8s %12s\n", "", "misses", "hit rate", "tables (max)");
    printf("  %-34s %9" PRIu64 " %7.1f%% %12u\n", "fixed 50 (the default)", m_fixed, 100 * (1 - m_fixed / n), 50);
    printf("  %-34s %9" PRIu64 " %7.1f%% %12" PRIu64 "\n", "auto (learning included)", m_auto, 100 * (1 - m_auto / n),
           peak);
    printf("  %-34s %9" PRIu64 " %7.1f%% %12u\n", "fixed at the size auto chose", m_chosen, 100 * (1 - m_chosen / n),
           chosen);
    printf("\n  auto chose %u tables; it held at most %" PRIu64 " (%.1f MiB of tables, of 32 MiB allowed)\n", chosen,
           peak, peak_bytes / 1048576.0);
}

#define MAX_POINTS 8

typedef struct {
    unsigned size;
    double predicted, measured; /* miss ratios, 0..1 */
} Point;

static void write_svg(const char *path, const Point *p, unsigned n, const char *policy, unsigned own)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "qed-demo: cannot write %s\n", path);
        return;
    }
    const double W = 640, H = 400, L = 70, R = 20, T = 40, B = 60;
    double x0 = log2(p[0].size), x1 = log2(p[n - 1].size), ymax = 0;
    for (unsigned i = 0; i < n; i++) {
        ymax = fmax(ymax, fmax(p[i].predicted, p[i].measured));
    }
    ymax = ceil(ymax * 10 + 1e-9) / 10;
    if (ymax <= 0) {
        ymax = 0.1;
    }
#define SX(v) (L + (log2(v) - x0) / (x1 > x0 ? x1 - x0 : 1) * (W - L - R))
#define SY(v) (T + (1 - (v) / ymax) * (H - T - B))
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
               "font-family=\"sans-serif\" font-size=\"12\">\n", W, H);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(f, "<text x=\"%.0f\" y=\"22\" font-size=\"14\">qed-demo: miss ratio by cache size "
               "(policy %s, %zu lookups)</text>\n", L, policy, trace_len);
    for (int k = 0; k <= 5; k++) {
        double v = ymax * k / 5;
        fprintf(f, "<line x1=\"%.0f\" x2=\"%.0f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", L, W - R, SY(v), SY(v));
        fprintf(f, "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">%.0f%%</text>\n", L - 6, SY(v) + 4, 100 * v);
    }
    for (unsigned i = 0; i < n; i++) {
        fprintf(f, "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\"%s>%u</text>\n", SX(p[i].size),
                H - B + 18, p[i].size == own ? " font-weight=\"bold\"" : "", p[i].size);
    }
    fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">maximum cached tables "
               "(QED_L2_CACHE_SIZE; bold: this run's)</text>\n", (L + W - R) / 2, H - 16);
    const char *style[2] = {"stroke=\"#1f77b4\" stroke-width=\"2.5\"",
                            "stroke=\"#d62728\" stroke-width=\"1.5\" stroke-dasharray=\"6 4\""};
    for (int s = 0; s < 2; s++) {
        fprintf(f, "<polyline fill=\"none\" %s points=\"", style[s]);
        for (unsigned i = 0; i < n; i++) {
            fprintf(f, "%.1f,%.1f ", SX(p[i].size), SY(s ? p[i].measured : p[i].predicted));
        }
        fprintf(f, "\"/>\n");
        for (unsigned i = 0; i < n; i++) {
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%s\" fill=\"%s\"/>\n", SX(p[i].size),
                    SY(s ? p[i].measured : p[i].predicted), s ? "3" : "4.5", s ? "#d62728" : "#1f77b4");
        }
    }
    fprintf(f, "<line x1=\"%.0f\" x2=\"%.0f\" y1=\"%.0f\" y2=\"%.0f\" %s/>"
               "<text x=\"%.0f\" y=\"%.0f\">predicted (qed_l2_cache_predict_misses)</text>\n",
            W - 300, W - 270, T + 10.0, T + 10.0, style[0], W - 264, T + 14.0);
    fprintf(f, "<line x1=\"%.0f\" x2=\"%.0f\" y1=\"%.0f\" y2=\"%.0f\" %s/>"
               "<text x=\"%.0f\" y=\"%.0f\">measured (replay through a real cache)</text>\n",
            W - 300, W - 270, T + 28.0, T + 28.0, style[1], W - 264, T + 32.0);
    fprintf(f, "</svg>\n");
#undef SX
#undef SY
    fclose(f);
}

/*
 * Prints the miss-ratio curve: what qed_l2_cache_predict_misses() says each
 * tracked size would have read, beside what a real cache of that size reads
 * on the same lookups. Returns false when a tracked size is refused.
 */
static bool miss_curve(const char *svg)
{
    const char *policy = env_or("QED_L2_CACHE_POLICY", "fifo");
    unsigned own = (unsigned)strtoul(env_or("QED_L2_CACHE_SIZE", "50"), NULL, 10);
    unsigned cand[] = {own / 2 ? own / 2 : 1, own, own + own / 2, 2 * own, 4 * own, 8 * own};
    Point p[MAX_POINTS];
    unsigned n = 0;
    bool ok = true;
    for (unsigned i = 0; i < sizeof(cand) / sizeof(cand[0]); i++) {
        uint64_t m;
        if (n && cand[i] == p[n - 1].size) {
            continue;
        }
        if (qed_l2_cache_predict_misses(&cache, cand[i], &m) != 0) {
            printf("  FAIL: the advisor does not track size %u\n", cand[i]);
            ok = false;
            continue;
        }
        p[n].size = cand[i];
        p[n].predicted = trace_len ? (double)m / (double)trace_len : 0;
        p[n].measured = trace_len ? (double)replay(cand[i]) / (double)trace_len : 0;
        n++;
    }
    if (n == 0) {
        return ok;
    }
    printf("\n  miss ratio by maximum size (policy %s), over %zu lookups:\n", policy, trace_len);
    printf("  '#' predicted by the advisor while the demo ran, '=' measured by replaying the lookups\n"
           "  through a real cache of that size (no requests in flight: the advisor does not simulate them)\n\n");
    double ymax = 0;
    for (unsigned i = 0; i < n; i++) {
        ymax = fmax(ymax, fmax(p[i].predicted, p[i].measured));
    }
    const int width = 50;
    for (unsigned i = 0; i < n; i++) {
        int a = ymax > 0 ? (int)lround(p[i].predicted / ymax * width) : 0;
        int b = ymax > 0 ? (int)lround(p[i].measured / ymax * width) : 0;
        printf("  %7u%s %6.2f%% %.*s\n", p[i].size, p[i].size == own ? "*" : " ", 100 * p[i].predicted, a,
               "##################################################");
        printf("  %8s %6.2f%% %.*s\n", "", 100 * p[i].measured, b, "==================================================");
    }
    printf("  (* this run's size, where '#' is the cache's own count: its requests in flight and\n"
           "  duplicate misses included; ratios are misses / lookups, a miss being one table read)\n");
    if (svg) {
        write_svg(svg, p, n, policy, own);
        printf("  chart written to %s\n", svg);
    }
    return ok;
}

static bool row(const char *name, uint64_t demo, uint64_t lib)
{
    bool ok = demo == lib;
    printf("  %-20s %12" PRIu64 " %12" PRIu64 "%s\n", name, demo, lib, ok ? "" : "   MISMATCH");
    return ok;
}

int main(int argc, char **argv)
{
    unsigned long long requests = 200000, tables = 512, in_flight = 8, seed = 1;
    const char *svg = NULL;

    for (int a = 1; a < argc; a++) {
        const char *o = argv[a];
        if (!strcmp(o, "--requests")) {
            requests = parse_number(o, a + 1 < argc ? argv[++a] : NULL, 1, 1ull << 40);
        } else if (!strcmp(o, "--tables")) {
            tables = parse_number(o, a + 1 < argc ? argv[++a] : NULL, 1, 1u << 20);
        } else if (!strcmp(o, "--in-flight")) {
            in_flight = parse_number(o, a + 1 < argc ? argv[++a] : NULL, 1, 4096);
        } else if (!strcmp(o, "--seed")) {
            seed = parse_number(o, a + 1 < argc ? argv[++a] : NULL, 0, UINT64_MAX);
        } else if (!strcmp(o, "--svg")) {
            if (a + 1 >= argc) {
                fprintf(stderr, "qed-demo: --svg needs a file name\n");
                return 2;
            }
            svg = argv[++a];
        } else if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "qed-demo: unknown option \"%s\"\n", o);
            usage(stderr);
            return 2;
        }
    }

#ifdef __GLIBC__
    /* Tables are 256 KiB: keep them on the heap, where freed ones are reused,
     * rather than in fresh mmap()s that fault in on every miss. */
    mallopt(M_MMAP_THRESHOLD, 4 * TABLE_BYTES);
    mallopt(M_TRIM_THRESHOLD, 256 * TABLE_BYTES);
#endif
    rng_state = seed;
    img.n_tables = (unsigned)tables;
    img.l1 = xcalloc(tables, sizeof(uint64_t));
    img.set = xcalloc(tables, sizeof(IndexList));
    img.end = 3 * CLUSTER_SIZE; /* header and L1 table */
    map_grow(&img.map);
    unsigned allocated = 0;
    for (unsigned t = 0; t < tables; t++) {
        if (rng_below(8) >= UNALLOCATED_EIGHTHS) {
            img.l1[t] = img.end;
            img.end += TABLE_BYTES;
            allocated++;
        }
    }
    zipf_init(img.n_tables);
    n_reqs = (unsigned)in_flight;
    reqs = xcalloc(n_reqs, sizeof(Request));

    qed_init_l2_cache(&cache);
    /* The size advisor (docs/advisor.md): what other sizes would have read. */
    qed_l2_cache_set_advisor(&cache, 1);
    while (cnt.requests < requests) {
        step(&reqs[rng_below(n_reqs)]);
    }
    /* Drain: reads in flight complete, then every request lets go. */
    for (unsigned k = 0; k < n_reqs; k++) {
        if (reqs[k].pending) {
            complete_read(&reqs[k]);
        }
        qed_unref_l2_cache_entry(reqs[k].l2_table);
        reqs[k].l2_table = NULL;
    }

    /* The list as a C caller sees it (QTAILQ_FOREACH). */
    uint64_t listed = 0;
    for (CachedL2Table *e = cache.entries.tqh_first; e; e = e->node.tqe_next) {
        listed++;
    }
    QedL2CacheStats st;
    qed_l2_cache_get_stats(&cache, &st);
    uint64_t evictions = cnt.commits - cnt.duplicates - listed;

    double tb = (double)tables * (double)TABLE_SPAN / (double)(UINT64_C(1) << 40);
    printf("qed-demo (libqed_l2_cache %s): a QED image under random-read load\n", qed_l2_cache_version());
    printf("  image   %.3g TiB virtual, %u KiB clusters, %llu L2 tables of %u KiB (2 GiB each), %u allocated\n",
           tb, CLUSTER_SIZE / 1024, tables, TABLE_BYTES / 1024, allocated);
    printf("  load    %" PRIu64 " requests (%d%% writes), %llu in flight, Zipf(%.1f) over tables, seed %llu\n",
           cnt.requests, WRITE_PERCENT, in_flight, ZIPF_EXPONENT, seed);
    printf("  cache   QED_L2_CACHE_SIZE=%s QED_L2_CACHE_POLICY=%s\n\n", env_or("QED_L2_CACHE_SIZE", "(default 50)"),
           env_or("QED_L2_CACHE_POLICY", "(default fifo)"));
    printf("  %-20s %12s %12s\n", "", "demo", "library");
    bool ok = true;
    ok &= row("lookups (find)", cnt.finds, st.hits + st.misses);
    ok &= row("  hits", cnt.hits, st.hits);
    ok &= row("  misses", cnt.misses, st.misses);
    printf("  %-20s %11.1f%% %11.1f%%\n", "hit rate", cnt.finds ? 100.0 * cnt.hits / cnt.finds : 0.0,
           st.hits + st.misses ? 100.0 * st.hits / (st.hits + st.misses) : 0.0);
    ok &= row("commits", cnt.commits, st.commits);
    ok &= row("duplicate commits", cnt.duplicates, st.duplicate_commits);
    ok &= row("evictions", evictions, st.evictions);
    ok &= row("peak entries", cnt.peak, st.peak_entries);
    ok &= row("final n_entries", listed, cache.n_entries);
    printf("\n  requests: %" PRIu64 " L2 lookups, %.1f%% found at once (a find after each commit is a hit too);\n"
           "  %" PRIu64 " reads of unallocated tables, %" PRIu64 " new L2 tables, %" PRIu64
           " new data clusters;\n  %" PRIu64 " table reads, %" PRIu64 " table writes (write-through)\n",
           cnt.lookups, cnt.lookups ? 100.0 * cnt.request_hits / cnt.lookups : 0.0, cnt.unallocated_reads,
           cnt.new_tables, cnt.cluster_allocs, img.table_reads, img.table_writes);

    if (cnt.held_evicted || cnt.wrong_entry) {
        printf("  FAIL: %" PRIu64 " lookups missed a table another request held, %" PRIu64
               " found another entry\n", cnt.held_evicted, cnt.wrong_entry);
        ok = false;
    }
    if (cnt.wrong_data) {
        printf("  FAIL: %" PRIu64 " cluster offsets read through the cache differ from the disk\n", cnt.wrong_data);
        ok = false;
    }
    if (!ok) {
        printf("  FAIL: the library's counters and the demo's disagree\n");
    } else {
        printf("  ok: counters agree, held tables stayed cached, every lookup read what was written\n");
    }

    ok &= miss_curve(svg);
    auto_beside_fixed();

    qed_free_l2_cache(&cache);
    if (cache.n_entries != 0 || cache.entries.tqh_first != NULL) {
        printf("  FAIL: the cache is not empty after qed_free_l2_cache\n");
        ok = false;
    }
    for (unsigned t = 0; t < tables; t++) {
        free(img.set[t].idx);
    }
    free(img.set);
    free(img.l1);
    free(img.map.keys);
    free(img.map.vals);
    free(zipf_cdf);
    free(zipf_table);
    free(reqs);
    free(trace);
    return ok ? 0 : 1;
}
