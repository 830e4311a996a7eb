/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Memory checkers keep working for callers of the library
 * (docs/misuse.md): run by c_tests/check_memtools.py under valgrind, or
 * built with AddressSanitizer, which checks what they report.
 *
 *   test-memtools leak                an entry and its table are leaked:
 *                                     they must be reported as lost (the
 *                                     library's records hide addresses);
 *   test-memtools read-after-release  the entry is read after its last
 *                                     unref: it must be reported (the
 *                                     library poisons what it keeps).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qed_l2_cache.h"

/*
 * A cache the caller never frees, its struct freed with the rest of its
 * state: its entries and tables are lost, as with the C file (the
 * library's records must not keep them reachable).
 */
static void __attribute__((noinline)) leak_a_cache(void)
{
    L2TableCache *c = calloc(1, sizeof(*c));
    qed_init_l2_cache(c);
    for (int i = 1; i <= 3; i++) {
        CachedL2Table *x = qed_alloc_l2_cache_entry(c);
        x->table = malloc(4096);
        x->offset = (uint64_t)i << 16;
        qed_commit_l2_cache_entry(c, x);
    }
    free(c);
}

/* Overwrites the stack that leak_a_cache() used, so no stale copy of a
 * pointer there keeps anything reachable. */
static void __attribute__((noinline)) scrub_stack(void)
{
    volatile char junk[16384];
    memset((char *)junk, 0, sizeof(junk));
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test-memtools leak|read-after-release\n");
        return 2;
    }
    L2TableCache cache;
    memset(&cache, 0, sizeof(cache));
    qed_init_l2_cache(&cache);
    CachedL2Table *e = qed_alloc_l2_cache_entry(&cache);
    e->table = malloc(512);
    e->offset = 0x10000;
    if (strcmp(argv[1], "leak") == 0) {
        /*
         * The only pointer to the entry is gone. A second cache stays
         * initialised to the end, so the library still holds its records
         * when the checker looks (it gives them back at unload only when
         * no cache is left).
         */
        e = NULL;
        qed_free_l2_cache(&cache);
        static L2TableCache still_open;
        qed_init_l2_cache(&still_open);
        return 0;
    }
    if (strcmp(argv[1], "leak-cache") == 0) {
        leak_a_cache();
        scrub_stack();
        qed_unref_l2_cache_entry(e);
        qed_free_l2_cache(&cache);
        return 0;
    }
    if (strcmp(argv[1], "read-after-release") == 0) {
        qed_unref_l2_cache_entry(e); /* the last reference: released */
        volatile uint64_t offset = e->offset;
        printf("read %llu after release\n", (unsigned long long)offset);
        qed_free_l2_cache(&cache);
        return 0;
    }
    return 2;
}
