/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What the replays of auto-sized caches share (test_auto_replay.c,
 * test_budget_replay.c): a deterministic generator, Zipf sampling, QEMU's
 * read path with real 256 KiB tables, and the per-table cost as the
 * library counts it (docs/sizing.md).
 */
#ifndef QED_L2_CACHE_TEST_REPLAY_H
#define QED_L2_CACHE_TEST_REPLAY_H

#include <malloc.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "qed_l2_cache.h"

#define TABLE_BYTES (256u << 10)
#define BOOKKEEPING 160u /* the library's bytes per table (docs/sizing.md) */

/* splitmix64 */
static inline uint64_t next_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static inline double unit(uint64_t *s)
{
    return (next_rand(s) >> 11) * (1.0 / 9007199254740992.0);
}

/* The cumulative Zipf distribution with `exponent` over n tables. */
static inline void zipf_init(double *cdf, unsigned n, double exponent)
{
    double sum = 0;
    for (unsigned k = 0; k < n; k++) {
        sum += 1.0 / pow(k + 1, exponent);
        cdf[k] = sum;
    }
    for (unsigned k = 0; k < n; k++) {
        cdf[k] /= sum;
    }
}

/* A table drawn from `cdf` over n tables. */
static inline unsigned zipf_pick(const double *cdf, unsigned n, uint64_t *s)
{
    double u = unit(s);
    unsigned lo = 0, hi = n - 1;
    while (lo < hi) {
        unsigned mid = (lo + hi) / 2;
        if (cdf[mid] < u) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

/* Tables from the heap, and no trimming at every free: the replays measure
 * hit ratios, and sbrk/mmap churn would only slow them down. */
static inline void replay_malloc_setup(void)
{
    mallopt(M_MMAP_THRESHOLD, 4 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
}

/* Bytes one table costs at the library's count. */
static inline uint64_t replay_table_cost(void)
{
    void *probe;
    if (posix_memalign(&probe, 4096, TABLE_BYTES)) {
        abort();
    }
    uint64_t cost = malloc_usable_size(probe) + BOOKKEEPING;
    free(probe);
    return cost;
}

/* One lookup on QEMU's read path: find; on a miss alloc, a table (a real
 * one from posix_memalign when with_table), commit, find again (which must
 * hit); unref. Returns 1 on a miss. */
static inline int replay_lookup(L2TableCache *cache, uint64_t offset, int with_table)
{
    CachedL2Table *e = qed_find_l2_cache_entry(cache, offset);
    if (e) {
        qed_unref_l2_cache_entry(e);
        return 0;
    }
    e = qed_alloc_l2_cache_entry(cache);
    if (with_table) {
        void *table;
        if (posix_memalign(&table, 4096, TABLE_BYTES)) {
            abort();
        }
        e->table = table;
    }
    e->offset = offset;
    qed_commit_l2_cache_entry(cache, e);
    e = qed_find_l2_cache_entry(cache, offset);
    if (!e) {
        fprintf(stderr, "the find after a commit missed\n");
        abort();
    }
    qed_unref_l2_cache_entry(e);
    return 1;
}

#endif
