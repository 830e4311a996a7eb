/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* The layout of docs/abi.md, checked at compile time, and the exported symbols. */
#include <stdalign.h>
#include <stddef.h>
#include <stdio.h>

#include "helpers.h"

_Static_assert(sizeof(QTailQLink) == 16, "QTailQLink size");
_Static_assert(offsetof(QTailQLink, tql_next) == 0, "tql_next");
_Static_assert(offsetof(QTailQLink, tql_prev) == 8, "tql_prev");
_Static_assert(sizeof(CachedL2Table) == 40, "CachedL2Table size");
_Static_assert(alignof(CachedL2Table) == 8, "CachedL2Table align");
_Static_assert(offsetof(CachedL2Table, table) == 0, "table");
_Static_assert(offsetof(CachedL2Table, offset) == 8, "offset");
_Static_assert(offsetof(CachedL2Table, node) == 16, "node");
_Static_assert(offsetof(CachedL2Table, node.tqe_next) == 16, "tqe_next");
_Static_assert(offsetof(CachedL2Table, node.tqe_circ.tql_prev) == 24, "tqe_circ.tql_prev");
_Static_assert(offsetof(CachedL2Table, ref) == 32, "ref");
_Static_assert(sizeof(L2TableCache) == 24, "L2TableCache size");
_Static_assert(alignof(L2TableCache) == 8, "L2TableCache align");
_Static_assert(offsetof(L2TableCache, entries) == 0, "entries");
_Static_assert(offsetof(L2TableCache, entries.tqh_first) == 0, "tqh_first");
_Static_assert(offsetof(L2TableCache, entries.tqh_circ.tql_prev) == 8, "tqh_circ.tql_prev");
_Static_assert(offsetof(L2TableCache, n_entries) == 16, "n_entries");
_Static_assert(offsetof(QEDTable, offsets) == 0, "offsets");
_Static_assert(sizeof(QedL2CacheStats) == 6 * sizeof(uint64_t), "stats");

static void test_init_gives_empty_qtailq(void)
{
    L2TableCache *cache = g_malloc0(sizeof(*cache));
    qed_init_l2_cache(cache);
    g_assert_null(cache->entries.tqh_first);
    g_assert_true(cache->entries.tqh_circ.tql_prev == &cache->entries.tqh_circ);
    g_assert_cmpuint(check_list(cache), ==, 0);
    qed_free_l2_cache(cache);
    g_free(cache);
}

static void test_version_is_semver(void)
{
    const char *v = qed_l2_cache_version();
    unsigned major, minor, patch;
    char tail;
    g_assert_nonnull(v);
    g_assert_cmpint(sscanf(v, "%u.%u.%u%c", &major, &minor, &patch, &tail), ==, 3);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/abi/init-gives-empty-qtailq", test_init_gives_empty_qtailq);
    g_test_add_func("/abi/version-is-semver", test_version_is_semver);
    return g_test_run();
}
