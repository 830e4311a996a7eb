/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The program c_tests/check_probes.py runs under gdb (docs/probes.md): it
 * drives one cache through every probe of the library and writes, to the
 * file named by argv[1], each probe it expects to fire, in order, with the
 * arguments it knows (the cache and entry pointers, the offset, the
 * reference count):
 *
 *     qemu:qed_find_l2_cache_entry 0x5555... 0x5555... 65536 1
 *
 * Then, for the semaphore test, `hits N` rounds of N hitting finds, each
 * round followed by a call of probe_target_checkpoint(round), where gdb
 * stops to look and to write a semaphore. Plain C, no GLib: what runs under
 * gdb should be only this and the library.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "qed_l2_cache.h"

#define HITS_PER_ROUND 5
#define ROUNDS 2

static FILE *out;

/* gdb breaks here between the rounds of hits (noinline: a real call). */
__attribute__((noinline)) void probe_target_checkpoint(int round);
__attribute__((noinline)) void probe_target_checkpoint(int round)
{
    __asm__ volatile("" : : "r"(round) : "memory");
}

static void expect(const char *probe, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void expect(const char *probe, const char *fmt, ...)
{
    va_list ap;
    fprintf(out, "%s", probe);
    va_start(ap, fmt);
    vfprintf(out, fmt, ap);
    va_end(ap);
    fputc('\n', out);
}

/* alloc, with a table and an offset, as QED's read path does. */
static CachedL2Table *alloc_at(L2TableCache *c, uint64_t offset)
{
    CachedL2Table *e = qed_alloc_l2_cache_entry(c);
    expect("qemu:qed_alloc_l2_cache_entry", " %p %p", (void *)c, (void *)e);
    e->table = malloc(512);
    e->offset = offset;
    return e;
}

int main(int argc, char **argv)
{
    if (argc != 2 || !(out = fopen(argv[1], "w"))) {
        fprintf(stderr, "usage: probe-target EXPECTED-FILE\n");
        return 2;
    }
    const uint64_t A = 0x10000, B = 0x20000, C = 0x30000;
    L2TableCache *c = calloc(1, sizeof(*c));
    qed_init_l2_cache(c);
    qed_l2_cache_set_max_entries(c, 2);

    /* A miss, its commit, a hit. */
    CachedL2Table *a = alloc_at(c, A);
    if (qed_find_l2_cache_entry(c, A) != NULL) {
        return 1;
    }
    expect("qed_l2_cache:miss", " %p %" PRIu64, (void *)c, A);
    qed_commit_l2_cache_entry(c, a);
    expect("qed_l2_cache:commit", " %p %p %" PRIu64, (void *)c, (void *)a, A);
    CachedL2Table *x = qed_find_l2_cache_entry(c, A);
    if (x != a) {
        return 1;
    }
    expect("qemu:qed_find_l2_cache_entry", " %p %p %" PRIu64 " %d", (void *)c, (void *)a, A, 1);
    qed_unref_l2_cache_entry(x);
    expect("qemu:qed_unref_l2_cache_entry", " %p %d", (void *)a, 1);

    /* A duplicate commit: QEMU's find + unref of the cached entry, ours,
     * then the newcomer's last reference goes. */
    CachedL2Table *b = alloc_at(c, A);
    qed_commit_l2_cache_entry(c, b);
    expect("qemu:qed_find_l2_cache_entry", " %p %p %" PRIu64 " %d", (void *)c, (void *)a, A, 1);
    expect("qemu:qed_unref_l2_cache_entry", " %p %d", (void *)a, 1);
    expect("qed_l2_cache:duplicate", " %p %p %" PRIu64, (void *)c, (void *)b, A);
    expect("qemu:qed_unref_l2_cache_entry", " %p %d", (void *)b, 0);

    /* Two more tables in a cache of 2: the oldest (A) is evicted. */
    CachedL2Table *d = alloc_at(c, B);
    qed_commit_l2_cache_entry(c, d);
    expect("qed_l2_cache:commit", " %p %p %" PRIu64, (void *)c, (void *)d, B);
    CachedL2Table *e = alloc_at(c, C);
    qed_commit_l2_cache_entry(c, e);
    expect("qed_l2_cache:evict", " %p %p %" PRIu64, (void *)c, (void *)a, A);
    expect("qemu:qed_unref_l2_cache_entry", " %p %d", (void *)a, 0);
    expect("qed_l2_cache:commit", " %p %p %" PRIu64, (void *)c, (void *)e, C);

    fprintf(out, "end\n");
    fflush(out);
    probe_target_checkpoint(0);

    /* The semaphore test: rounds of hits, a checkpoint after each. */
    fprintf(out, "hits %d\n", HITS_PER_ROUND);
    fflush(out);
    for (int round = 1; round <= ROUNDS; round++) {
        for (int i = 0; i < HITS_PER_ROUND; i++) {
            qed_unref_l2_cache_entry(qed_find_l2_cache_entry(c, B));
        }
        probe_target_checkpoint(round);
    }

    QedL2CacheStats st;
    qed_l2_cache_get_stats(c, &st);
    qed_free_l2_cache(c);
    free(c);
    fclose(out);
    /* 1 + ROUNDS * HITS_PER_ROUND hits, 1 miss, 1 duplicate. */
    if (st.hits != 1 + ROUNDS * HITS_PER_ROUND || st.misses != 1 || st.duplicate_commits != 1) {
        fprintf(stderr, "probe-target: unexpected counters\n");
        return 1;
    }
    return 0;
}
