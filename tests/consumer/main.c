/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A consumer of the installed (or subproject) library: init, alloc, commit,
 * find, unref, stats, version, free, as a C block driver would. Exits 0 and
 * prints "consumer: ok" only when every check holds.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qed_l2_cache.h"

#ifndef EXPECTED_VERSION
#error "build with -DEXPECTED_VERSION=\"MAJOR.MINOR.PATCH\""
#endif

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "consumer: %s:%d: check failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                          \
            return 1;                                                                \
        }                                                                            \
    } while (0)

int main(void)
{
    L2TableCache cache;
    CachedL2Table *e, *hit;
    QedL2CacheStats stats;
    const char *version;

    memset(&cache, 0, sizeof(cache));
    qed_init_l2_cache(&cache);
    CHECK(cache.n_entries == 0 && cache.entries.tqh_first == NULL);

    e = qed_alloc_l2_cache_entry(&cache);
    CHECK(e != NULL && e->ref == 1 && e->table == NULL && e->offset == 0);
    e->table = aligned_alloc(512, 4096);
    CHECK(e->table != NULL);
    memset(e->table, 0, 4096);
    e->table->offsets[0] = 0x123000;
    e->offset = 0x10000;
    qed_commit_l2_cache_entry(&cache, e);
    CHECK(cache.n_entries == 1 && cache.entries.tqh_first == e);

    hit = qed_find_l2_cache_entry(&cache, 0x10000);
    CHECK(hit == e && hit->ref == 2 && hit->table->offsets[0] == 0x123000);
    CHECK(qed_find_l2_cache_entry(&cache, 0x20000) == NULL);
    qed_unref_l2_cache_entry(hit);
    CHECK(e->ref == 1);

    qed_l2_cache_get_stats(&cache, &stats);
    CHECK(stats.hits == 1 && stats.misses == 1 && stats.commits == 1);

    version = qed_l2_cache_version();
    CHECK(version != NULL);
    if (strcmp(version, EXPECTED_VERSION) != 0) {
        fprintf(stderr, "consumer: qed_l2_cache_version() is \"%s\", expected \"%s\"\n", version,
                EXPECTED_VERSION);
        return 1;
    }

    qed_free_l2_cache(&cache);
    CHECK(cache.n_entries == 0 && cache.entries.tqh_first == NULL);
    printf("consumer: ok, qed-l2-cache %s\n", version);
    return 0;
}
