/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Shared helpers for the C tests: entry creation the way QEMU's QED driver
 * does it, and a checker for every QTAILQ rule of docs/behaviour.md, "The list".
 */
#ifndef QED_L2_CACHE_TEST_HELPERS_H
#define QED_L2_CACHE_TEST_HELPERS_H

#include <glib.h>
#include <stdlib.h>
#include <string.h>

#include "qed_l2_cache.h"

/* Bytes of one test table (QEMU's default: 4 clusters of 64 KiB; small here). */
#define TEST_TABLE_SIZE 4096

/* Offset of the i-th test table (cluster-aligned, never 0). */
static inline uint64_t table_offset(unsigned i)
{
    return (uint64_t)(i + 1) * 0x10000;
}

/* alloc + table + offset, as qed_read_l2_table() does before commit. */
static inline CachedL2Table *new_entry(L2TableCache *cache, uint64_t offset)
{
    CachedL2Table *e = qed_alloc_l2_cache_entry(cache);
    g_assert_nonnull(e);
    e->table = aligned_alloc(512, TEST_TABLE_SIZE);
    g_assert_nonnull(e->table);
    memset(e->table, 0, TEST_TABLE_SIZE);
    e->offset = offset;
    return e;
}

/*
 * Checks every link of docs/behaviour.md, "The list" and n_entries; returns the number of
 * elements. Fails the test on the first broken rule.
 */
static inline unsigned check_list(L2TableCache *cache)
{
    QTailQLink *head = &cache->entries.tqh_circ;
    QTailQLink *expect_prev = head;
    CachedL2Table *e = cache->entries.tqh_first;
    unsigned n = 0;

    while (e) {
        g_assert_true(e->node.tqe_circ.tql_prev == expect_prev);
        g_assert_true(e->node.tqe_circ.tql_next == (void *)e->node.tqe_next);
        g_assert_cmpint(e->ref, >=, 1);
        expect_prev = &e->node.tqe_circ;
        e = e->node.tqe_next;
        n++;
        g_assert_cmpuint(n, <=, 10000000u);
    }
    g_assert_true(head->tql_prev == expect_prev);
    g_assert_cmpuint(cache->n_entries, ==, n);
    return n;
}

/* A zeroed cache on the heap, initialised (as QEMU's g_malloc0'd state). */
static inline L2TableCache *cache_new(void)
{
    L2TableCache *c = g_malloc0(sizeof(*c));
    qed_init_l2_cache(c);
    return c;
}

/* Frees the cache, checks it is left an empty list, releases the struct. */
static inline void cache_destroy(L2TableCache *c)
{
    qed_free_l2_cache(c);
    g_assert_cmpuint(check_list(c), ==, 0);
    g_free(c);
}

/* True when the entry is off every list (QEMU's QTAILQ_IN_USE is false). */
static inline gboolean entry_unlinked(const CachedL2Table *e)
{
    return e->node.tqe_next == NULL && e->node.tqe_circ.tql_next == NULL &&
           e->node.tqe_circ.tql_prev == NULL;
}

/* The i-th element in list order (0 = head), or NULL past the tail. */
static inline CachedL2Table *nth_entry(L2TableCache *cache, unsigned i)
{
    CachedL2Table *e = cache->entries.tqh_first;
    while (e && i--) {
        e = e->node.tqe_next;
    }
    return e;
}

/*
 * Walks the list (checking it with check_list) and stores the offsets in
 * list order in out[0..max); returns the number of elements.
 */
static inline unsigned list_offsets(L2TableCache *cache, uint64_t *out, unsigned max)
{
    unsigned n = check_list(cache), i = 0;
    for (CachedL2Table *e = cache->entries.tqh_first; e; e = e->node.tqe_next, i++) {
        if (i < max) {
            out[i] = e->offset;
        }
    }
    return n;
}

/* The element with that offset, found by walking the list (refs untouched). */
static inline CachedL2Table *list_lookup(L2TableCache *cache, uint64_t offset)
{
    for (CachedL2Table *e = cache->entries.tqh_first; e; e = e->node.tqe_next) {
        if (e->offset == offset) {
            return e;
        }
    }
    return NULL;
}

#endif
