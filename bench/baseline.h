/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The benchmark's baseline: the original C algorithm of QEMU's
 * block/qed-l2-cache.c as docs/behaviour.md describes it, written afresh for the
 * benchmark (not QEMU's file): the same structs (the library's header
 * declares QEMU's layout), a QTAILQ scanned linearly by find, FIFO eviction
 * from the head skipping entries with ref > 1. The one difference is that the
 * maximum is a field of the benchmark (the original hard-codes 50), so the
 * same code can be timed at 1,024 and 16,384 tables.
 */
#ifndef QED_L2_CACHE_BENCH_BASELINE_H
#define QED_L2_CACHE_BENCH_BASELINE_H

#include "qed_l2_cache.h"

/* The original's MAX_L2_CACHE_SIZE, settable for the benchmark. */
extern unsigned int base_max_entries;

void base_init_l2_cache(L2TableCache *l2_cache);
void base_free_l2_cache(L2TableCache *l2_cache);
CachedL2Table *base_alloc_l2_cache_entry(L2TableCache *l2_cache);
void base_unref_l2_cache_entry(CachedL2Table *entry);
CachedL2Table *base_find_l2_cache_entry(L2TableCache *l2_cache, uint64_t offset);
void base_commit_l2_cache_entry(L2TableCache *l2_cache, CachedL2Table *l2_table);

#endif
