/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The original algorithm (docs/behaviour.md), for the benchmark only. Built as its
 * own shared library so both sides are called through the PLT, as a QEMU
 * binary would call them.
 */
#include <stdlib.h>

#include "baseline.h"

unsigned int base_max_entries = 50;

/* QTAILQ operations on the docs/behaviour.md, "The list" layout. */
static void list_init(L2TableCache *c)
{
    c->entries.tqh_first = NULL;
    c->entries.tqh_circ.tql_prev = &c->entries.tqh_circ;
}

static void list_insert_tail(L2TableCache *c, CachedL2Table *e)
{
    QTailQLink *last = c->entries.tqh_circ.tql_prev;
    e->node.tqe_next = NULL;
    e->node.tqe_circ.tql_prev = last;
    last->tql_next = e;
    c->entries.tqh_circ.tql_prev = &e->node.tqe_circ;
}

static void list_remove(L2TableCache *c, CachedL2Table *e)
{
    CachedL2Table *next = e->node.tqe_next;
    if (next) {
        next->node.tqe_circ.tql_prev = e->node.tqe_circ.tql_prev;
    } else {
        c->entries.tqh_circ.tql_prev = e->node.tqe_circ.tql_prev;
    }
    e->node.tqe_circ.tql_prev->tql_next = next;
    e->node.tqe_circ.tql_prev = NULL;
    e->node.tqe_next = NULL;
}

void base_init_l2_cache(L2TableCache *l2_cache)
{
    list_init(l2_cache);
    l2_cache->n_entries = 0;
}

void base_free_l2_cache(L2TableCache *l2_cache)
{
    CachedL2Table *e = l2_cache->entries.tqh_first;
    while (e) {
        CachedL2Table *next = e->node.tqe_next;
        free(e->table);
        free(e);
        e = next;
    }
    list_init(l2_cache);
    l2_cache->n_entries = 0;
}

CachedL2Table *base_alloc_l2_cache_entry(L2TableCache *l2_cache)
{
    (void)l2_cache;
    CachedL2Table *e = calloc(1, sizeof(*e));
    if (!e) {
        abort();
    }
    e->ref = 1;
    return e;
}

void base_unref_l2_cache_entry(CachedL2Table *entry)
{
    if (!entry) {
        return;
    }
    if (--entry->ref == 0) {
        free(entry->table);
        free(entry);
    }
}

CachedL2Table *base_find_l2_cache_entry(L2TableCache *l2_cache, uint64_t offset)
{
    for (CachedL2Table *e = l2_cache->entries.tqh_first; e; e = e->node.tqe_next) {
        if (e->offset == offset) {
            e->ref++;
            return e;
        }
    }
    return NULL;
}

void base_commit_l2_cache_entry(L2TableCache *l2_cache, CachedL2Table *l2_table)
{
    CachedL2Table *cached = base_find_l2_cache_entry(l2_cache, l2_table->offset);
    if (cached) {
        base_unref_l2_cache_entry(cached);
        base_unref_l2_cache_entry(l2_table);
        return;
    }
    if (l2_cache->n_entries >= base_max_entries) {
        CachedL2Table *e = l2_cache->entries.tqh_first;
        while (e) {
            CachedL2Table *next = e->node.tqe_next;
            if (e->ref <= 1) {
                list_remove(l2_cache, e);
                l2_cache->n_entries--;
                base_unref_l2_cache_entry(e);
                if (l2_cache->n_entries < base_max_entries) {
                    break;
                }
            }
            e = next;
        }
    }
    l2_cache->n_entries++;
    list_insert_tail(l2_cache, l2_table);
}
