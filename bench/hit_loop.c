/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The find (hit) + unref loop alone, for instruction counts under
 * cachegrind (BENCHMARKS.md): `hit-loop lib|base ITERATIONS [TABLES [miss]]`
 * fills a cache with TABLES tables (default 50), then runs ITERATIONS
 * uniform hits, each a find and an unref, as bench.c's hit loop does.
 * With `miss`, each iteration is instead bench.c's miss cycle (find that
 * misses, alloc, commit that evicts, find, unref) over 4 x TABLES tables
 * in order. With `auto`, the hits go to an auto-sized cache (docs/sizing.md).
 * Two runs with different ITERATIONS give the instructions of one find +
 * unref as the difference of their totals over the difference of their
 * iterations (setup and teardown cancel):
 *
 *   valgrind --tool=cachegrind --cache-sim=no build-bench/bench/hit-loop lib 1000000
 *   valgrind --tool=cachegrind --cache-sim=no build-bench/bench/hit-loop lib 2000000
 *
 * With QED_L2_CACHE_STATS=1 the library publishes its statistics file
 * (docs/statistics.md) meanwhile.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "baseline.h"
#include "bench_util.h"

static uint64_t table_off(uint64_t i)
{
    return 0x100000ull + i * 0x40000ull;
}

#define LOOP(FIND, UNREF)                                                                           \
    for (uint64_t i = 0; i < iters; i++) {                                                          \
        UNREF(FIND(&c, table_off(pick(&k, n))));                                                    \
    }

#define MISSES(FIND, ALLOC, COMMIT, UNREF)                                                          \
    for (uint64_t i = 0; i < iters; i++) {                                                          \
        uint64_t off = table_off(n + i % (4 * (uint64_t)n));                                        \
        CachedL2Table *e = FIND(&c, off);                                                           \
        if (!e) {                                                                                   \
            e = ALLOC(&c);                                                                          \
            e->offset = off;                                                                        \
            COMMIT(&c, e);                                                                          \
            e = FIND(&c, off);                                                                      \
        }                                                                                           \
        UNREF(e);                                                                                   \
    }

#define FILL(ALLOC, COMMIT)                                                                         \
    for (unsigned i = 0; i < n; i++) {                                                              \
        CachedL2Table *e = ALLOC(&c);                                                               \
        e->offset = table_off(i);                                                                   \
        COMMIT(&c, e);                                                                              \
    }

int main(int argc, char **argv)
{
    if (argc < 3 || (strcmp(argv[1], "lib") != 0 && strcmp(argv[1], "base") != 0)) {
        fprintf(stderr, "usage: %s lib|base ITERATIONS [TABLES]\n", argv[0]);
        return 2;
    }
    int lib = strcmp(argv[1], "lib") == 0;
    uint64_t iters = strtoull(argv[2], NULL, 10);
    unsigned n = argc > 3 ? (unsigned)strtoul(argv[3], NULL, 10) : 50;
    int miss = argc > 4 && strcmp(argv[4], "miss") == 0;
    int automode = argc > 4 && strcmp(argv[4], "auto") == 0;
    uint64_t k = 0x2545F4914F6CDD1Dull;
    L2TableCache c;
    memset(&c, 0, sizeof(c));
    if (lib) {
        qed_init_l2_cache(&c);
        qed_l2_cache_set_max_entries(&c, n);
        qed_l2_cache_set_auto(&c, automode);
        FILL(qed_alloc_l2_cache_entry, qed_commit_l2_cache_entry);
        if (miss) {
            MISSES(qed_find_l2_cache_entry, qed_alloc_l2_cache_entry, qed_commit_l2_cache_entry,
                   qed_unref_l2_cache_entry);
        } else {
            LOOP(qed_find_l2_cache_entry, qed_unref_l2_cache_entry);
        }
        qed_free_l2_cache(&c);
    } else {
        base_max_entries = n;
        base_init_l2_cache(&c);
        FILL(base_alloc_l2_cache_entry, base_commit_l2_cache_entry);
        if (miss) {
            MISSES(base_find_l2_cache_entry, base_alloc_l2_cache_entry, base_commit_l2_cache_entry,
                   base_unref_l2_cache_entry);
        } else {
            LOOP(base_find_l2_cache_entry, base_unref_l2_cache_entry);
        }
        base_free_l2_cache(&c);
    }
    printf("%s: %llu %s at %u tables\n", argv[1], (unsigned long long)iters, miss ? "miss cycles" : "hits", n);
    return 0;
}
