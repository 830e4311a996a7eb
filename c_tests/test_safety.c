/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * What a correct caller may do that the C file always tolerated, and that
 * the library's bookkeeping must therefore tolerate too (docs/misuse.md,
 * "Never worse than the C file"): stores that change the struct's tail
 * padding, a struct whose bytes are put back exactly, caches and entries
 * moving between threads.
 */
#include <pthread.h>

#include "helpers.h"

/* Bytes 20..23 of L2TableCache: tail padding in QEMU's declaration. */
static void set_padding(L2TableCache *c, uint32_t v)
{
    memcpy((char *)c + 20, &v, sizeof(v));
}

static void fill(L2TableCache *c, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        qed_commit_l2_cache_entry(c, new_entry(c, table_offset(i)));
    }
}

static void find_and_unref(L2TableCache *c, unsigned i)
{
    CachedL2Table *e = qed_find_l2_cache_entry(c, table_offset(i));
    g_assert_nonnull(e);
    g_assert_cmpuint(e->offset, ==, table_offset(i));
    g_assert_cmpint(e->ref, ==, 2);
    qed_unref_l2_cache_entry(e);
}

static void test_padding_overwritten(void)
{
    /* Any value at all in the padding: the cache is still found. */
    static const uint32_t values[] = { 0, 1, 2, 0xffffffffu, 0xdeadbeefu, 12345 };
    L2TableCache *c = cache_new();
    fill(c, 4);
    for (unsigned i = 0; i < G_N_ELEMENTS(values); i++) {
        set_padding(c, values[i]);
        find_and_unref(c, i % 4);
        g_assert_cmpuint(check_list(c), ==, 4 + i);
        qed_commit_l2_cache_entry(c, new_entry(c, table_offset(10 + i)));
        g_assert_cmpuint(check_list(c), ==, 5 + i);
    }
    set_padding(c, 0x5a5a5a5au);
    cache_destroy(c);
}

static void test_padding_of_another_cache(void)
{
    /* b's padding now holds a's number: calls on b act on b only. */
    L2TableCache *a = cache_new();
    L2TableCache *b = cache_new();
    fill(a, 3);
    fill(b, 2);
    uint32_t a_number;
    memcpy(&a_number, (char *)a + 20, sizeof(a_number));
    set_padding(b, a_number);
    g_assert_null(qed_find_l2_cache_entry(b, table_offset(2)));
    find_and_unref(b, 1);
    g_assert_cmpuint(check_list(b), ==, 2);
    g_assert_cmpuint(check_list(a), ==, 3);
    find_and_unref(a, 2);
    cache_destroy(b);
    g_assert_cmpuint(check_list(a), ==, 3);
    find_and_unref(a, 0);
    cache_destroy(a);
}

static void test_exact_bytes_put_back(void)
{
    /*
     * The struct's bytes are overwritten, then put back exactly as the
     * library left them (a caller that saved and restored its state): it
     * is that cache.
     */
    L2TableCache *c = cache_new();
    fill(c, 3);
    L2TableCache saved;
    memcpy(&saved, c, sizeof(saved));
    memset(c, 0xa5, sizeof(*c));
    memcpy(c, &saved, sizeof(saved));
    find_and_unref(c, 2);
    g_assert_cmpuint(check_list(c), ==, 3);
    cache_destroy(c);
}

static void test_zeroed_then_reinitialised(void)
{
    /* QEMU's re-open after migration: free, zero the whole state, init. */
    L2TableCache *c = cache_new();
    fill(c, 3);
    qed_free_l2_cache(c);
    memset(c, 0, sizeof(*c));
    qed_init_l2_cache(c);
    qed_l2_cache_set_policy(c, QED_L2_CACHE_POLICY_FIFO);
    fill(c, 2);
    find_and_unref(c, 1);
    cache_destroy(c);
}

/* ---- a cache that moves between threads (QEMU iothreads) ---- */

typedef struct {
    L2TableCache *c;
    CachedL2Table *pending; /* allocated here, released on the other thread */
    CachedL2Table *held;    /* a reference taken here, dropped there */
} Handover;

static void *first_thread(void *arg)
{
    Handover *h = arg;
    h->c = cache_new();
    qed_l2_cache_set_policy(h->c, QED_L2_CACHE_POLICY_FIFO);
    fill(h->c, 5);
    h->pending = new_entry(h->c, table_offset(7));
    h->held = qed_find_l2_cache_entry(h->c, table_offset(0));
    g_assert_nonnull(h->held);
    return NULL;
}

static void *second_thread(void *arg)
{
    Handover *h = arg;
    /* Entries allocated on the first thread: used, evicted and released here. */
    qed_commit_l2_cache_entry(h->c, h->pending);
    g_assert_cmpuint(check_list(h->c), ==, 6);
    qed_l2_cache_set_max_entries(h->c, 2);
    /* The held entry stayed; the others were evicted down to 2. */
    g_assert_cmpuint(check_list(h->c), ==, 2);
    g_assert_true(nth_entry(h->c, 0) == h->held);
    qed_unref_l2_cache_entry(h->held);
    CachedL2Table *e = new_entry(h->c, table_offset(9));
    qed_commit_l2_cache_entry(h->c, e);
    cache_destroy(h->c);
    return NULL;
}

static void test_cache_moves_between_threads(void)
{
    Handover h = { 0 };
    pthread_t t;
    g_assert_cmpint(pthread_create(&t, NULL, first_thread, &h), ==, 0);
    g_assert_cmpint(pthread_join(t, NULL), ==, 0);
    g_assert_cmpint(pthread_create(&t, NULL, second_thread, &h), ==, 0);
    g_assert_cmpint(pthread_join(t, NULL), ==, 0);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/safety/padding-overwritten", test_padding_overwritten);
    g_test_add_func("/safety/padding-of-another-cache", test_padding_of_another_cache);
    g_test_add_func("/safety/exact-bytes-put-back", test_exact_bytes_put_back);
    g_test_add_func("/safety/zeroed-then-reinitialised", test_zeroed_then_reinitialised);
    g_test_add_func("/safety/cache-moves-between-threads", test_cache_moves_between_threads);
    return g_test_run();
}
