/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Reference counts through alloc, find, commit and unref (docs/behaviour.md): alloc
 * gives 1, find adds 1, commit takes one over, unref drops one, unref(NULL)
 * does nothing, and at zero the entry and its table are released. Releases
 * are seen through the entry leaving the list and, under
 * `meson test --setup=valgrind`, through memcheck: no leak, no bad access.
 */
#include "helpers.h"

#define MAX_CACHE 50

static void test_alloc_gives_one_uncached_reference(void)
{
    L2TableCache *c = cache_new();
    CachedL2Table *e = qed_alloc_l2_cache_entry(c);

    g_assert_nonnull(e);
    g_assert_cmpint(e->ref, ==, 1);
    g_assert_null(e->table);
    g_assert_cmpuint(e->offset, ==, 0);
    g_assert_true(entry_unlinked(e));
    g_assert_cmpuint(check_list(c), ==, 0);

    /* Two allocations are two entries. */
    CachedL2Table *e2 = qed_alloc_l2_cache_entry(c);
    g_assert_true(e2 != e);
    g_assert_cmpint(e2->ref, ==, 1);

    /* Dropping the only reference of a table-less entry releases it. */
    qed_unref_l2_cache_entry(e2);
    /* ...and of one with a table: the table goes with it (valgrind: no leak). */
    e->table = aligned_alloc(512, TEST_TABLE_SIZE);
    memset(e->table, 0x5A, TEST_TABLE_SIZE);
    e->offset = table_offset(0);
    qed_unref_l2_cache_entry(e);
    g_assert_cmpuint(check_list(c), ==, 0);
    g_assert_null(qed_find_l2_cache_entry(c, table_offset(0)));
    cache_destroy(c);
}

/*
 * QEMU's original never looks at alloc's cache argument, so NULL works and
 * is not a misuse: this process runs with the default abort-on-misuse and
 * would die here otherwise.
 */
static void test_alloc_with_null_cache_works(void)
{
    CachedL2Table *e = qed_alloc_l2_cache_entry(NULL);
    g_assert_nonnull(e);
    g_assert_cmpint(e->ref, ==, 1);
    g_assert_null(e->table);
    g_assert_cmpuint(e->offset, ==, 0);
    g_assert_true(entry_unlinked(e));
    qed_unref_l2_cache_entry(e);
}

static void test_unref_null_is_a_no_op(void)
{
    L2TableCache *c = cache_new();
    CachedL2Table *e = new_entry(c, table_offset(1));

    qed_commit_l2_cache_entry(c, e);
    qed_unref_l2_cache_entry(NULL);
    qed_unref_l2_cache_entry(NULL);
    g_assert_cmpint(e->ref, ==, 1);
    g_assert_cmpuint(check_list(c), ==, 1);
    g_assert_true(c->entries.tqh_first == e);
    cache_destroy(c);
}

static void test_commit_takes_the_reference_find_adds_unref_drops(void)
{
    L2TableCache *c = cache_new();
    CachedL2Table *e = new_entry(c, table_offset(2));

    qed_commit_l2_cache_entry(c, e);
    g_assert_cmpint(e->ref, ==, 1); /* the caller's reference is now the cache's */
    g_assert_cmpuint(check_list(c), ==, 1);

    CachedL2Table *f[5];
    for (int i = 0; i < 5; i++) {
        f[i] = qed_find_l2_cache_entry(c, table_offset(2));
        g_assert_true(f[i] == e);
        g_assert_cmpint(e->ref, ==, 2 + i);
    }
    /* A miss touches no count. */
    g_assert_null(qed_find_l2_cache_entry(c, table_offset(3)));
    g_assert_cmpint(e->ref, ==, 6);

    for (int i = 4; i >= 0; i--) {
        qed_unref_l2_cache_entry(f[i]);
        g_assert_cmpint(e->ref, ==, 1 + i);
        g_assert_cmpuint(check_list(c), ==, 1); /* the cache's reference keeps it */
    }
    g_assert_true(list_lookup(c, table_offset(2)) == e);

    /* Still cached and usable. */
    CachedL2Table *again = qed_find_l2_cache_entry(c, table_offset(2));
    g_assert_true(again == e);
    g_assert_cmpint(e->ref, ==, 2);
    qed_unref_l2_cache_entry(again);
    cache_destroy(c);
}

static void test_other_entries_leave_counts_alone(void)
{
    L2TableCache *c = cache_new();

    qed_commit_l2_cache_entry(c, new_entry(c, table_offset(0)));
    CachedL2Table *held = qed_find_l2_cache_entry(c, table_offset(0));
    g_assert_nonnull(held);
    g_assert_cmpint(held->ref, ==, 2);
    memset(held->table, 0xC3, TEST_TABLE_SIZE); /* the request's in-place update */

    /* Commits, hits, misses and evictions of other tables. */
    for (unsigned i = 1; i < 4 * MAX_CACHE; i++) {
        qed_commit_l2_cache_entry(c, new_entry(c, table_offset(i)));
        CachedL2Table *e = qed_find_l2_cache_entry(c, table_offset(i));
        g_assert_nonnull(e);
        g_assert_cmpint(e->ref, ==, 2);
        qed_unref_l2_cache_entry(e);
        g_assert_cmpint(e->ref, ==, 1);
        g_assert_null(qed_find_l2_cache_entry(c, table_offset(10000 + i)));
        g_assert_cmpint(held->ref, ==, 2);
        check_list(c);
    }
    g_assert_true(list_lookup(c, table_offset(0)) == held);
    for (unsigned i = 0; i < TEST_TABLE_SIZE; i++) {
        g_assert_cmpuint(((unsigned char *)held->table)[i], ==, 0xC3);
    }
    qed_unref_l2_cache_entry(held);
    g_assert_cmpint(held->ref, ==, 1);
    cache_destroy(c);
}

static void test_eviction_releases_at_zero(void)
{
    L2TableCache *c = cache_new();

    for (unsigned i = 0; i < MAX_CACHE; i++) {
        qed_commit_l2_cache_entry(c, new_entry(c, table_offset(i)));
    }
    CachedL2Table *head = nth_entry(c, 0);
    g_assert_cmpuint(head->offset, ==, table_offset(0));
    g_assert_cmpint(head->ref, ==, 1);

    /* Only the cache references the head: the next commit releases it. */
    qed_commit_l2_cache_entry(c, new_entry(c, table_offset(MAX_CACHE)));
    g_assert_cmpuint(check_list(c), ==, MAX_CACHE);
    g_assert_null(list_lookup(c, table_offset(0)));
    g_assert_null(qed_find_l2_cache_entry(c, table_offset(0)));

    /* A request's reference outlives the cache's: held, the head stays... */
    CachedL2Table *e = qed_find_l2_cache_entry(c, table_offset(1));
    g_assert_true(e == nth_entry(c, 0));
    qed_commit_l2_cache_entry(c, new_entry(c, table_offset(MAX_CACHE + 1)));
    g_assert_true(nth_entry(c, 0) == e);
    g_assert_cmpint(e->ref, ==, 2);
    /* ...and once dropped, the next commit releases it. */
    qed_unref_l2_cache_entry(e);
    g_assert_cmpint(e->ref, ==, 1);
    qed_commit_l2_cache_entry(c, new_entry(c, table_offset(MAX_CACHE + 2)));
    g_assert_null(list_lookup(c, table_offset(1)));
    g_assert_cmpuint(check_list(c), ==, MAX_CACHE);

    QedL2CacheStats st;
    qed_l2_cache_get_stats(c, &st);
    g_assert_cmpuint(st.evictions, ==, 3);
    cache_destroy(c);
}

static void test_duplicate_commit_releases_the_newcomer(void)
{
    L2TableCache *c = cache_new();
    CachedL2Table *first = new_entry(c, table_offset(4));
    CachedL2Table *second = new_entry(c, table_offset(4));

    qed_commit_l2_cache_entry(c, first);
    qed_commit_l2_cache_entry(c, second); /* its only reference: released */
    g_assert_cmpuint(check_list(c), ==, 1);
    g_assert_true(c->entries.tqh_first == first);
    g_assert_cmpint(first->ref, ==, 1); /* untouched by the duplicate */

    CachedL2Table *f = qed_find_l2_cache_entry(c, table_offset(4));
    g_assert_true(f == first);
    g_assert_cmpint(first->ref, ==, 2);

    /* Duplicates while the cached one is held change nothing of it. */
    qed_commit_l2_cache_entry(c, new_entry(c, table_offset(4)));
    g_assert_cmpint(first->ref, ==, 2);
    g_assert_cmpuint(check_list(c), ==, 1);
    qed_unref_l2_cache_entry(f);

    QedL2CacheStats st;
    qed_l2_cache_get_stats(c, &st);
    g_assert_cmpuint(st.commits, ==, 3);
    g_assert_cmpuint(st.duplicate_commits, ==, 2);
    cache_destroy(c);
}

static void test_free_releases_unreferenced_entries(void)
{
    L2TableCache *c = cache_new();

    for (unsigned i = 0; i < 2 * MAX_CACHE; i++) {
        qed_commit_l2_cache_entry(c, new_entry(c, table_offset(i)));
        CachedL2Table *e = qed_find_l2_cache_entry(c, table_offset(i));
        qed_unref_l2_cache_entry(e);
    }
    g_assert_cmpuint(check_list(c), ==, MAX_CACHE);
    /* Every entry has only the cache's reference; free releases them all. */
    for (CachedL2Table *e = c->entries.tqh_first; e; e = e->node.tqe_next) {
        g_assert_cmpint(e->ref, ==, 1);
    }
    cache_destroy(c); /* valgrind: no table or entry leaks */
}

/* Counts in a long QED-like run: each request's own references balance. */
static void test_counts_balance_over_many_requests(void)
{
    L2TableCache *c = cache_new();
    CachedL2Table *req[8] = { 0 };
    int expected_extra[80] = { 0 }; /* request references per table */
    GRand *rng = g_rand_new_with_seed(7);

    for (unsigned step = 0; step < 5000; step++) {
        unsigned k = g_rand_int_range(rng, 0, G_N_ELEMENTS(req));
        unsigned t = g_rand_int_range(rng, 0, G_N_ELEMENTS(expected_extra));
        if (req[k]) {
            unsigned prev = req[k]->offset / 0x10000 - 1;
            expected_extra[prev]--;
            qed_unref_l2_cache_entry(req[k]);
        }
        CachedL2Table *e = qed_find_l2_cache_entry(c, table_offset(t));
        if (!e) {
            qed_commit_l2_cache_entry(c, new_entry(c, table_offset(t)));
            e = qed_find_l2_cache_entry(c, table_offset(t));
            g_assert_nonnull(e);
        }
        expected_extra[t]++;
        req[k] = e;
        g_assert_cmpint(e->ref, ==, 1 + expected_extra[t]);
        for (CachedL2Table *x = c->entries.tqh_first; x; x = x->node.tqe_next) {
            g_assert_cmpint(x->ref, ==, 1 + expected_extra[x->offset / 0x10000 - 1]);
        }
    }
    for (unsigned k = 0; k < G_N_ELEMENTS(req); k++) {
        qed_unref_l2_cache_entry(req[k]);
    }
    for (CachedL2Table *x = c->entries.tqh_first; x; x = x->node.tqe_next) {
        g_assert_cmpint(x->ref, ==, 1);
    }
    g_rand_free(rng);
    cache_destroy(c);
}

int main(int argc, char **argv)
{
    /* The defaults of docs/behaviour.md (max 50, fifo), whatever the environment says. */
    g_unsetenv("QED_L2_CACHE_SIZE");
    g_unsetenv("QED_L2_CACHE_POLICY");
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/refcount/alloc-gives-one-uncached-reference", test_alloc_gives_one_uncached_reference);
    g_test_add_func("/refcount/alloc-with-null-cache-works", test_alloc_with_null_cache_works);
    g_test_add_func("/refcount/unref-null-is-a-no-op", test_unref_null_is_a_no_op);
    g_test_add_func("/refcount/commit-takes-find-adds-unref-drops",
                    test_commit_takes_the_reference_find_adds_unref_drops);
    g_test_add_func("/refcount/other-entries-leave-counts-alone", test_other_entries_leave_counts_alone);
    g_test_add_func("/refcount/eviction-releases-at-zero", test_eviction_releases_at_zero);
    g_test_add_func("/refcount/duplicate-commit-releases-the-newcomer",
                    test_duplicate_commit_releases_the_newcomer);
    g_test_add_func("/refcount/free-releases-unreferenced-entries", test_free_releases_unreferenced_entries);
    g_test_add_func("/refcount/counts-balance-over-many-requests", test_counts_balance_over_many_requests);
    return g_test_run();
}
