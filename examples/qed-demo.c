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
            "usage: qed-demo [--requests N] [--tables N] [--in-flight N] [--seed N]\n"
            "  --requests N   requests to simulate (default 200000)\n"
            "  --tables N     L2 tables of the image, 2 GiB each (default 512: 1 TiB)\n"
            "  --in-flight N  requests in flight at once (default 8)\n"
            "  --seed N       random seed (default 1)\n"
            "The cache honours QED_L2_CACHE_SIZE and QED_L2_CACHE_POLICY.\n");
}

static const char *env_or(const char *name, const char *dflt)
{
    const char *v = getenv(name);
    return v && *v ? v : dflt;
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
    return ok ? 0 : 1;
}
