/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * N x (find + unref) on one cache holding 50 tables, uniform over them:
 * for counting instructions with cachegrind (BENCHMARKS.md, "Static
 * probes"). Run it at two N and difference the `I refs`: what is left is
 * the cost of N finds + unrefs (and this loop's few instructions).
 *
 *   valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file=/dev/null \
 *       build-bench/bench/hit-loop 100000
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "qed_l2_cache.h"

#define TABLES 50

int main(int argc, char **argv)
{
    unsigned long n = argc > 1 ? strtoul(argv[1], NULL, 10) : 100000;
    L2TableCache cache = {0};
    uint64_t offsets[TABLES];
    qed_init_l2_cache(&cache);
    for (unsigned i = 0; i < TABLES; i++) {
        CachedL2Table *e = qed_alloc_l2_cache_entry(&cache);
        offsets[i] = (uint64_t)(i + 1) * 0x10000;
        e->offset = offsets[i];
        qed_commit_l2_cache_entry(&cache, e);
    }
    uint64_t x = 0x2545F4914F6CDD1Dull, sum = 0;
    for (unsigned long i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        CachedL2Table *e = qed_find_l2_cache_entry(&cache, offsets[x % TABLES]);
        if (!e) {
            fprintf(stderr, "hit-loop: a find missed\n");
            return 1;
        }
        sum += (uintptr_t)e;
        qed_unref_l2_cache_entry(e);
    }
    QedL2CacheStats st;
    qed_l2_cache_get_stats(&cache, &st);
    qed_free_l2_cache(&cache);
    printf("%lu finds, %llu hits (checksum %llx)\n", n, (unsigned long long)st.hits,
           (unsigned long long)sum);
    return st.hits == n ? 0 : 1;
}
