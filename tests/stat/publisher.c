/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A process that uses the library as a block driver does, for the live
 * test of qed-l2-cache-stat (check_stat_live.py): two caches with known
 * counters. The first (fifo, size 50) gets 5 misses, 5 commits and 20
 * hits; the second (lru, size 7, the size advisor on) 10 tables looked up
 * in turn three times, so that the LRU cache misses every time. Then it
 * prints one line per cache, what qed_l2_cache_get_stats says:
 *
 *   cache SERIAL HITS MISSES COMMITS DUPLICATES EVICTIONS PEAK N_ENTRIES MAX POLICY
 *
 * and waits until its standard input is closed, then frees the caches and
 * exits 0.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qed_l2_cache.h"

static void lookup(L2TableCache *c, uint64_t offset)
{
    CachedL2Table *e = qed_find_l2_cache_entry(c, offset);
    if (e == NULL) {
        e = qed_alloc_l2_cache_entry(c);
        e->table = aligned_alloc(512, 4096);
        if (e->table == NULL) {
            abort();
        }
        memset(e->table, 0, 4096);
        e->offset = offset;
        qed_commit_l2_cache_entry(c, e);
        return;
    }
    qed_unref_l2_cache_entry(e);
}

static void print(int serial, const L2TableCache *c, unsigned max, const char *policy)
{
    QedL2CacheStats s;
    qed_l2_cache_get_stats(c, &s);
    printf("cache %d %llu %llu %llu %llu %llu %llu %u %u %s\n", serial,
           (unsigned long long)s.hits, (unsigned long long)s.misses,
           (unsigned long long)s.commits, (unsigned long long)s.duplicate_commits,
           (unsigned long long)s.evictions, (unsigned long long)s.peak_entries, c->n_entries, max,
           policy);
}

int main(void)
{
    static L2TableCache a, b;
    int i, ch;

    qed_init_l2_cache(&a);
    qed_init_l2_cache(&b);
    qed_l2_cache_set_policy(&b, QED_L2_CACHE_POLICY_LRU);
    qed_l2_cache_set_max_entries(&b, 7);
    qed_l2_cache_set_advisor(&b, 1);

    for (i = 0; i < 25; i++) {
        lookup(&a, 0x10000 * (uint64_t)(1 + i % 5));
    }
    for (i = 0; i < 30; i++) {
        lookup(&b, 0x10000 * (uint64_t)(1 + i % 10));
    }
    print(1, &a, 50, "fifo");
    print(2, &b, 7, "lru");
    fflush(stdout);

    while ((ch = getchar()) != EOF) {
    }
    qed_free_l2_cache(&a);
    qed_free_l2_cache(&b);
    return 0;
}
