/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The QED driver's call sequences of docs/behaviour.md, "How QEMU calls it", over a simulated image file:
 * the L2 read path (unref the previous table, find; on a miss alloc, read,
 * commit, find again), its read error, the allocating write, requests that
 * miss the same table at once, and close / re-open.
 */
#include <errno.h>

#include "helpers.h"

#define MAX_CACHE 50
#define L2_ENTRIES (TEST_TABLE_SIZE / sizeof(uint64_t))
#define N_TABLES 128 /* L1 entries */
#define CLUSTER 0x10000

/* The image file: L2 tables by file offset, plus counters. */
typedef struct {
    GHashTable *tables; /* file offset -> uint64_t[L2_ENTRIES] */
    uint64_t end;       /* next free cluster */
    unsigned reads, writes;
    gboolean fail_next_read;
} Disk;

/* What BDRVQEDState holds that matters here; the cache is embedded. */
typedef struct {
    uint64_t l1[N_TABLES]; /* L2 table offsets, 0 = not allocated */
    L2TableCache l2_cache;
    Disk *disk;
} Image;

/* A request (QEDAIOCB): it holds at most one table at a time. */
typedef struct {
    CachedL2Table *l2_table;
} Request;

static Disk *disk_new(void)
{
    Disk *d = g_new0(Disk, 1);
    d->tables = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, g_free);
    d->end = CLUSTER; /* the header lives in cluster 0 */
    return d;
}

static void disk_free(Disk *d)
{
    g_hash_table_destroy(d->tables);
    g_free(d);
}

static uint64_t disk_alloc_cluster(Disk *d)
{
    uint64_t o = d->end;
    d->end += CLUSTER;
    return o;
}

static void *copy_of(const void *p, size_t n)
{
    return memcpy(g_malloc(n), p, n);
}

static void disk_write_table(Disk *d, uint64_t offset, const QEDTable *t)
{
    g_hash_table_replace(d->tables, copy_of(&offset, sizeof(offset)), copy_of(t, TEST_TABLE_SIZE));
    d->writes++;
}

static int disk_read_table(Disk *d, uint64_t offset, QEDTable *t)
{
    const void *stored = g_hash_table_lookup(d->tables, &offset);
    d->reads++;
    if (d->fail_next_read) {
        d->fail_next_read = FALSE;
        return -EIO;
    }
    g_assert_nonnull(stored);
    memcpy(t, stored, TEST_TABLE_SIZE);
    return 0;
}

static uint64_t disk_entry(Disk *d, uint64_t offset, unsigned index)
{
    const uint64_t *stored = g_hash_table_lookup(d->tables, &offset);
    g_assert_nonnull(stored);
    return stored[index];
}

static QEDTable *table_new(void)
{
    QEDTable *t = aligned_alloc(512, TEST_TABLE_SIZE);
    g_assert_nonnull(t);
    memset(t, 0, TEST_TABLE_SIZE);
    return t;
}

/* An image whose first `allocated` L2 tables exist, each with entry 0 set. */
static Image *image_open(Disk *d, unsigned allocated)
{
    Image *s = g_new0(Image, 1);
    s->disk = d;
    for (unsigned t = 0; t < allocated; t++) {
        QEDTable *table = table_new();
        table->offsets[0] = disk_alloc_cluster(d); /* a data cluster */
        s->l1[t] = disk_alloc_cluster(d);
        disk_write_table(d, s->l1[t], table);
        free(table);
    }
    qed_init_l2_cache(&s->l2_cache);
    return s;
}

static void image_close(Image *s)
{
    qed_free_l2_cache(&s->l2_cache);
    g_assert_cmpuint(check_list(&s->l2_cache), ==, 0);
    g_free(s);
}

static QedL2CacheStats stats_of(Image *s)
{
    QedL2CacheStats st;
    memset(&st, 0xFF, sizeof(st));
    qed_l2_cache_get_stats(&s->l2_cache, &st);
    return st;
}

/* ---- the read path, whole and in its two halves ---- */

/* First half: drop the previous table, find; on a miss alloc and read. */
static int lookup_start(Image *s, Request *req, uint64_t offset, CachedL2Table **pending)
{
    *pending = NULL;
    qed_unref_l2_cache_entry(req->l2_table);
    req->l2_table = qed_find_l2_cache_entry(&s->l2_cache, offset);
    if (req->l2_table) {
        return 0;
    }
    CachedL2Table *e = qed_alloc_l2_cache_entry(&s->l2_cache);
    e->table = table_new();
    int ret = disk_read_table(s->disk, offset, e->table);
    if (ret < 0) {
        qed_unref_l2_cache_entry(e); /* ref 1: released with its table */
        return ret;
    }
    *pending = e;
    return 0;
}

/* Second half, when the read completed: offset, commit, find again. */
static void lookup_complete(Image *s, Request *req, uint64_t offset, CachedL2Table *pending)
{
    pending->offset = offset;
    qed_commit_l2_cache_entry(&s->l2_cache, pending);
    req->l2_table = qed_find_l2_cache_entry(&s->l2_cache, offset);
    g_assert_nonnull(req->l2_table); /* find after commit must succeed */
    check_list(&s->l2_cache);
}

static int read_l2_table(Image *s, Request *req, uint64_t offset)
{
    CachedL2Table *pending;
    int ret = lookup_start(s, req, offset, &pending);
    if (ret == 0 && pending) {
        lookup_complete(s, req, offset, pending);
    }
    check_list(&s->l2_cache);
    return ret;
}

/* The cluster offset for (table t, index i), through the cache. */
static uint64_t find_cluster(Image *s, Request *req, unsigned t, unsigned i)
{
    if (s->l1[t] == 0) {
        return 0;
    }
    g_assert_cmpint(read_l2_table(s, req, s->l1[t]), ==, 0);
    return req->l2_table->table->offsets[i];
}

/*
 * An allocating write of cluster i in table t: with no L2 table yet, a new
 * one is allocated, filled, written, linked from L1, committed and found;
 * with one, the request updates it in place and writes it through.
 */
static uint64_t allocating_write(Image *s, Request *req, unsigned t, unsigned i)
{
    uint64_t data = disk_alloc_cluster(s->disk);

    if (s->l1[t] == 0) {
        qed_unref_l2_cache_entry(req->l2_table);
        req->l2_table = qed_alloc_l2_cache_entry(&s->l2_cache);
        req->l2_table->table = table_new();
        req->l2_table->table->offsets[i] = data;
        uint64_t l2 = disk_alloc_cluster(s->disk);
        disk_write_table(s->disk, l2, req->l2_table->table);
        s->l1[t] = l2; /* the L1 update */
        req->l2_table->offset = l2;
        qed_commit_l2_cache_entry(&s->l2_cache, req->l2_table);
        req->l2_table = qed_find_l2_cache_entry(&s->l2_cache, l2);
        g_assert_nonnull(req->l2_table);
    } else {
        g_assert_cmpint(read_l2_table(s, req, s->l1[t]), ==, 0);
        req->l2_table->table->offsets[i] = data;
        disk_write_table(s->disk, s->l1[t], req->l2_table->table);
    }
    check_list(&s->l2_cache);
    return data;
}

static void request_done(Request *req)
{
    qed_unref_l2_cache_entry(req->l2_table);
    req->l2_table = NULL;
}

/* ---- tests ---- */

static void test_read_miss_then_hit(void)
{
    Disk *d = disk_new();
    Image *s = image_open(d, 8);
    Request a = { 0 }, b = { 0 };

    unsigned reads = d->reads;
    g_assert_cmpuint(find_cluster(s, &a, 3, 0), ==, disk_entry(d, s->l1[3], 0));
    g_assert_cmpuint(d->reads, ==, reads + 1);
    CachedL2Table *e = a.l2_table;
    g_assert_cmpuint(e->offset, ==, s->l1[3]);
    g_assert_cmpint(e->ref, ==, 2); /* the cache's and the request's */
    g_assert_cmpuint(check_list(&s->l2_cache), ==, 1);

    /* Another request: a hit, no read. */
    g_assert_cmpuint(find_cluster(s, &b, 3, 0), ==, disk_entry(d, s->l1[3], 0));
    g_assert_cmpuint(d->reads, ==, reads + 1);
    g_assert_true(b.l2_table == e);
    g_assert_cmpint(e->ref, ==, 3);

    /* Moving on to table 4 drops the reference to table 3. */
    find_cluster(s, &a, 4, 0);
    g_assert_cmpint(e->ref, ==, 2);
    g_assert_cmpuint(a.l2_table->offset, ==, s->l1[4]);
    g_assert_cmpuint(check_list(&s->l2_cache), ==, 2);
    g_assert_true(nth_entry(&s->l2_cache, 0) == e);

    /* Same table again: found, no read. */
    CachedL2Table *t4 = a.l2_table;
    find_cluster(s, &a, 4, 1);
    g_assert_true(a.l2_table == t4);
    g_assert_cmpint(t4->ref, ==, 2);
    g_assert_cmpuint(d->reads, ==, reads + 2);

    /* An unallocated table costs no lookup at all. */
    g_assert_cmpuint(find_cluster(s, &a, 100, 0), ==, 0);

    request_done(&a);
    request_done(&b);
    g_assert_cmpint(e->ref, ==, 1);
    g_assert_cmpint(t4->ref, ==, 1);

    QedL2CacheStats st = stats_of(s);
    g_assert_cmpuint(st.misses, ==, 2);
    g_assert_cmpuint(st.commits, ==, 2);
    g_assert_cmpuint(st.hits, ==, 2 /* after commit */ + 2);
    g_assert_cmpuint(st.duplicate_commits, ==, 0);
    g_assert_cmpuint(st.evictions, ==, 0);
    image_close(s);
    disk_free(d);
}

static void test_read_error_releases_the_entry(void)
{
    Disk *d = disk_new();
    Image *s = image_open(d, 60);
    Request a = { 0 }, b = { 0 };

    d->fail_next_read = TRUE;
    g_assert_cmpint(read_l2_table(s, &a, s->l1[0]), ==, -EIO);
    g_assert_null(a.l2_table);
    g_assert_cmpuint(check_list(&s->l2_cache), ==, 0); /* nothing committed */
    QedL2CacheStats st = stats_of(s);
    g_assert_cmpuint(st.misses, ==, 1);
    g_assert_cmpuint(st.commits, ==, 0);

    /* The retry reads and caches it. */
    g_assert_cmpint(read_l2_table(s, &a, s->l1[0]), ==, 0);
    g_assert_nonnull(a.l2_table);
    g_assert_cmpuint(a.l2_table->table->offsets[0], ==, disk_entry(d, s->l1[0], 0));

    /* On a full cache, a failed read leaves the list as it was. */
    for (unsigned t = 1; t < MAX_CACHE; t++) {
        g_assert_cmpint(read_l2_table(s, &b, s->l1[t]), ==, 0);
    }
    request_done(&b);
    g_assert_cmpuint(check_list(&s->l2_cache), ==, MAX_CACHE);
    uint64_t before[MAX_CACHE], after[MAX_CACHE];
    list_offsets(&s->l2_cache, before, MAX_CACHE);
    d->fail_next_read = TRUE;
    g_assert_cmpint(read_l2_table(s, &b, s->l1[55]), ==, -EIO);
    g_assert_null(b.l2_table);
    g_assert_cmpuint(list_offsets(&s->l2_cache, after, MAX_CACHE), ==, MAX_CACHE);
    g_assert_cmpmem(before, sizeof(before), after, sizeof(after));
    st = stats_of(s);
    g_assert_cmpuint(st.evictions, ==, 0);
    g_assert_cmpuint(st.commits, ==, MAX_CACHE);

    /* The request that failed can go on with another table. */
    g_assert_cmpint(read_l2_table(s, &b, s->l1[56]), ==, 0);
    g_assert_cmpuint(b.l2_table->offset, ==, s->l1[56]);
    request_done(&a);
    request_done(&b);
    image_close(s);
    disk_free(d);
}

static void test_find_after_commit_always_succeeds(void)
{
    Disk *d = disk_new();
    Image *s = image_open(d, N_TABLES);
    Request req[N_TABLES] = { 0 };

    /* Empty, filling, full with evictable entries: each commit is found. */
    for (unsigned t = 0; t < 2 * MAX_CACHE; t++) {
        Request r = { 0 };
        g_assert_cmpint(read_l2_table(s, &r, s->l1[t]), ==, 0);
        g_assert_cmpuint(r.l2_table->offset, ==, s->l1[t]);
        g_assert_cmpint(r.l2_table->ref, ==, 2);
        request_done(&r);
    }
    g_assert_cmpuint(check_list(&s->l2_cache), ==, MAX_CACHE);

    /* Full with every entry held: the cache grows, and the commit is found. */
    for (unsigned t = MAX_CACHE; t < 2 * MAX_CACHE; t++) {
        g_assert_cmpint(read_l2_table(s, &req[t], s->l1[t]), ==, 0); /* hits */
    }
    for (unsigned t = 2 * MAX_CACHE; t < N_TABLES; t++) {
        g_assert_cmpint(read_l2_table(s, &req[t], s->l1[t]), ==, 0); /* misses */
        g_assert_cmpuint(req[t].l2_table->offset, ==, s->l1[t]);
        g_assert_true(nth_entry(&s->l2_cache, s->l2_cache.n_entries - 1) == req[t].l2_table);
    }
    g_assert_cmpuint(check_list(&s->l2_cache), ==, N_TABLES - MAX_CACHE);
    g_assert_cmpuint(stats_of(s).peak_entries, ==, N_TABLES - MAX_CACHE);
    for (unsigned t = 0; t < N_TABLES; t++) {
        request_done(&req[t]);
    }
    image_close(s);
    disk_free(d);
}

/*
 * Two requests miss table T at once and both read it. The first to commit
 * wins; the other's commit loses its entry (released) and its find returns
 * the first one, with whatever the first request wrote into it meanwhile.
 */
static void concurrent_miss(gboolean full_cache)
{
    Disk *d = disk_new();
    Image *s = image_open(d, N_TABLES);
    Request a = { 0 }, b = { 0 }, other = { 0 };
    CachedL2Table *pa, *pb;
    const unsigned T = N_TABLES - 1;

    if (full_cache) {
        for (unsigned t = 0; t < MAX_CACHE; t++) {
            g_assert_cmpint(read_l2_table(s, &other, s->l1[t]), ==, 0);
        }
        request_done(&other);
    }
    QedL2CacheStats st0 = stats_of(s);
    unsigned n0 = s->l2_cache.n_entries;
    unsigned reads = d->reads;

    g_assert_cmpint(lookup_start(s, &a, s->l1[T], &pa), ==, 0);
    g_assert_cmpint(lookup_start(s, &b, s->l1[T], &pb), ==, 0);
    g_assert_nonnull(pa);
    g_assert_nonnull(pb);
    g_assert_true(pa != pb);
    g_assert_cmpuint(d->reads, ==, reads + 2); /* both missed and read */

    lookup_complete(s, &a, s->l1[T], pa);
    g_assert_true(a.l2_table == pa);
    g_assert_cmpint(pa->ref, ==, 2);
    g_assert_cmpuint(s->l2_cache.n_entries, ==, full_cache ? MAX_CACHE : n0 + 1);

    /* Request a updates the table in place (write-through) before b's read completes. */
    uint64_t data = disk_alloc_cluster(d);
    pa->table->offsets[7] = data;
    disk_write_table(d, s->l1[T], pa->table);
    g_assert_cmpuint(pb->table->offsets[7], ==, 0); /* b's copy is stale */

    lookup_complete(s, &b, s->l1[T], pb); /* duplicate: pb released */
    g_assert_true(b.l2_table == pa);
    g_assert_cmpint(pa->ref, ==, 3);
    g_assert_cmpuint(b.l2_table->table->offsets[7], ==, data); /* not the stale copy */
    g_assert_cmpuint(s->l2_cache.n_entries, ==, full_cache ? MAX_CACHE : n0 + 1);
    g_assert_true(nth_entry(&s->l2_cache, s->l2_cache.n_entries - 1) == pa);

    QedL2CacheStats st = stats_of(s);
    g_assert_cmpuint(st.misses - st0.misses, ==, 2);
    g_assert_cmpuint(st.hits - st0.hits, ==, 2);
    g_assert_cmpuint(st.commits - st0.commits, ==, 2);
    g_assert_cmpuint(st.duplicate_commits - st0.duplicate_commits, ==, 1);
    /* Only the winning commit may evict (one entry, when full). */
    g_assert_cmpuint(st.evictions - st0.evictions, ==, full_cache ? 1 : 0);

    /* A third request finds the winner too. */
    Request c = { 0 };
    g_assert_cmpuint(find_cluster(s, &c, T, 7), ==, data);
    g_assert_true(c.l2_table == pa);
    g_assert_cmpint(pa->ref, ==, 4);

    request_done(&a);
    request_done(&b);
    request_done(&c);
    g_assert_cmpint(pa->ref, ==, 1);
    image_close(s);
    disk_free(d);
}

static void test_concurrent_miss_first_commit_wins(void)
{
    concurrent_miss(FALSE);
}

static void test_concurrent_miss_on_full_cache(void)
{
    concurrent_miss(TRUE);
}

/* The later reader commits first: then its entry is the one that stays. */
static void test_concurrent_miss_completion_order_decides(void)
{
    Disk *d = disk_new();
    Image *s = image_open(d, 4);
    Request a = { 0 }, b = { 0 };
    CachedL2Table *pa, *pb;

    g_assert_cmpint(lookup_start(s, &a, s->l1[2], &pa), ==, 0);
    g_assert_cmpint(lookup_start(s, &b, s->l1[2], &pb), ==, 0);
    lookup_complete(s, &b, s->l1[2], pb);
    lookup_complete(s, &a, s->l1[2], pa);
    g_assert_true(a.l2_table == pb);
    g_assert_true(b.l2_table == pb);
    g_assert_cmpint(pb->ref, ==, 3);
    g_assert_cmpuint(check_list(&s->l2_cache), ==, 1);
    request_done(&a);
    request_done(&b);
    image_close(s);
    disk_free(d);
}

static void test_allocating_write_then_read(void)
{
    Disk *d = disk_new();
    Image *s = image_open(d, 2);
    Request w = { 0 }, r = { 0 };
    const unsigned T = 9;

    g_assert_cmpuint(s->l1[T], ==, 0);
    unsigned reads = d->reads, writes = d->writes;
    uint64_t data = allocating_write(s, &w, T, 5);
    g_assert_cmpuint(s->l1[T], !=, 0);
    g_assert_cmpuint(d->writes, ==, writes + 1); /* the new table, written before the commit */
    g_assert_cmpuint(d->reads, ==, reads);       /* and never read */
    g_assert_cmpuint(disk_entry(d, s->l1[T], 5), ==, data);
    CachedL2Table *e = w.l2_table;
    g_assert_cmpuint(e->offset, ==, s->l1[T]);
    g_assert_cmpint(e->ref, ==, 2);

    /* A reader gets it from the cache. */
    g_assert_cmpuint(find_cluster(s, &r, T, 5), ==, data);
    g_assert_true(r.l2_table == e);
    g_assert_cmpuint(d->reads, ==, reads);

    /* A second allocating write to the same table updates it in place. */
    uint64_t data2 = allocating_write(s, &w, T, 6);
    g_assert_true(w.l2_table == e);
    g_assert_cmpuint(r.l2_table->table->offsets[6], ==, data2);
    g_assert_cmpuint(disk_entry(d, s->l1[T], 6), ==, data2);
    request_done(&w);
    request_done(&r);

    /* Evicted, then read back from disk: the write-through kept both updates. */
    Request churn = { 0 };
    for (unsigned t = 20; t < 20 + MAX_CACHE; t++) {
        allocating_write(s, &churn, t, 0);
    }
    request_done(&churn);
    g_assert_null(list_lookup(&s->l2_cache, s->l1[T]));
    reads = d->reads;
    g_assert_cmpuint(find_cluster(s, &r, T, 5), ==, data);
    g_assert_cmpuint(d->reads, ==, reads + 1);
    g_assert_cmpuint(r.l2_table->table->offsets[6], ==, data2);
    request_done(&r);
    image_close(s);
    disk_free(d);
}

/* A long sequential read: one request, one held table at a time. */
static void test_sequential_scan_holds_one_table(void)
{
    Disk *d = disk_new();
    Image *s = image_open(d, N_TABLES);
    Request r = { 0 };

    for (unsigned pass = 0; pass < 2; pass++) {
        for (unsigned t = 0; t < N_TABLES; t++) {
            for (unsigned i = 0; i < 4; i++) {
                g_assert_cmpuint(find_cluster(s, &r, t, i), ==, disk_entry(d, s->l1[t], i));
            }
            unsigned held = 0;
            for (CachedL2Table *e = s->l2_cache.entries.tqh_first; e; e = e->node.tqe_next) {
                held += e->ref > 1;
                g_assert_cmpint(e->ref, <=, 2);
            }
            g_assert_cmpuint(held, ==, 1);
            g_assert_cmpuint(s->l2_cache.n_entries, ==, MIN(pass * MAX_CACHE + t + 1, MAX_CACHE));
        }
    }
    request_done(&r);
    QedL2CacheStats st = stats_of(s);
    /* FIFO and a scan larger than the cache: every lookup of a new table misses. */
    g_assert_cmpuint(st.misses, ==, 2 * N_TABLES);
    g_assert_cmpuint(st.evictions, ==, 2 * N_TABLES - MAX_CACHE);
    g_assert_cmpuint(st.peak_entries, ==, MAX_CACHE);
    image_close(s);
    disk_free(d);
}

/* Close and re-open after migration: free, zero the whole state, init. */
static void test_close_and_reopen(void)
{
    Disk *d = disk_new();
    Image *s = image_open(d, 10);
    Request r = { 0 };

    uint64_t data = allocating_write(s, &r, 3, 9);
    request_done(&r);
    uint64_t l1_on_disk[N_TABLES];
    memcpy(l1_on_disk, s->l1, sizeof(l1_on_disk));

    qed_free_l2_cache(&s->l2_cache);
    g_assert_cmpuint(check_list(&s->l2_cache), ==, 0);
    memset(s, 0, sizeof(*s));
    s->disk = d;
    memcpy(s->l1, l1_on_disk, sizeof(l1_on_disk));
    qed_init_l2_cache(&s->l2_cache);
    g_assert_cmpuint(check_list(&s->l2_cache), ==, 0);
    QedL2CacheStats st = stats_of(s);
    g_assert_cmpuint(st.commits + st.hits + st.misses + st.evictions + st.peak_entries, ==, 0);

    unsigned reads = d->reads;
    g_assert_cmpuint(find_cluster(s, &r, 3, 9), ==, data);
    g_assert_cmpuint(d->reads, ==, reads + 1);
    g_assert_cmpuint(find_cluster(s, &r, 3, 9), ==, data);
    g_assert_cmpuint(d->reads, ==, reads + 1);
    request_done(&r);
    image_close(s);
    disk_free(d);
}

int main(int argc, char **argv)
{
    /* The defaults of docs/behaviour.md (max 50, fifo), whatever the environment says. */
    g_unsetenv("QED_L2_CACHE_SIZE");
    g_unsetenv("QED_L2_CACHE_POLICY");
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/qed-paths/read-miss-then-hit", test_read_miss_then_hit);
    g_test_add_func("/qed-paths/read-error-releases-the-entry", test_read_error_releases_the_entry);
    g_test_add_func("/qed-paths/find-after-commit-always-succeeds", test_find_after_commit_always_succeeds);
    g_test_add_func("/qed-paths/concurrent-miss-first-commit-wins", test_concurrent_miss_first_commit_wins);
    g_test_add_func("/qed-paths/concurrent-miss-on-full-cache", test_concurrent_miss_on_full_cache);
    g_test_add_func("/qed-paths/concurrent-miss-completion-order-decides",
                    test_concurrent_miss_completion_order_decides);
    g_test_add_func("/qed-paths/allocating-write-then-read", test_allocating_write_then_read);
    g_test_add_func("/qed-paths/sequential-scan-holds-one-table", test_sequential_scan_holds_one_table);
    g_test_add_func("/qed-paths/close-and-reopen", test_close_and_reopen);
    return g_test_run();
}
