/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* What the benchmark programs share: the index generator of the timed loops. */
#ifndef QED_L2_CACHE_BENCH_UTIL_H
#define QED_L2_CACHE_BENCH_UTIL_H

#include <stdint.h>

/*
 * A uniform index below n from a xorshift64 state: a few cycles and no
 * memory traffic, so the timed loops measure the cache alone.
 */
static inline uint64_t pick(uint64_t *x, unsigned n)
{
    uint64_t v = *x;
    v ^= v << 13;
    v ^= v >> 7;
    v ^= v << 17;
    *x = v;
    return ((v & 0xFFFFFFFFu) * n) >> 32;
}

#endif
