/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Eviction at the defaults (FIFO, max 50): the order, duplicate commits,
 * the in-use rule that fixed the bug of docs/behaviour.md, "The eviction rule", growth past the maximum
 * when everything is in use and the exact shrink-back at later commits,
 * free, and re-init on a zeroed struct.
 */
#include "helpers.h"

#define MAX_CACHE 50
#define MAX_LIST 256

/* Commits table i (the read path without a request: commit only). */
static CachedL2Table *commit_table(L2TableCache *c, unsigned i)
{
    CachedL2Table *e = new_entry(c, table_offset(i));
    qed_commit_l2_cache_entry(c, e);
    check_list(c);
    return e;
}

/* Commits table i and keeps a reference, as a request would. */
static CachedL2Table *commit_and_hold(L2TableCache *c, unsigned i)
{
    commit_table(c, i);
    CachedL2Table *e = qed_find_l2_cache_entry(c, table_offset(i));
    g_assert_nonnull(e);
    return e;
}

/* The list must hold exactly the tables ids[0..n), head first. */
static void assert_tables(L2TableCache *c, const unsigned *ids, unsigned n)
{
    uint64_t got[MAX_LIST];
    g_assert_cmpuint(n, <=, MAX_LIST);
    g_assert_cmpuint(list_offsets(c, got, MAX_LIST), ==, n);
    for (unsigned i = 0; i < n; i++) {
        if (got[i] != table_offset(ids[i])) {
            g_error("list position %u: table %" G_GUINT64_FORMAT ", expected table %u", i,
                    got[i] / 0x10000 - 1, ids[i]);
        }
    }
}

/* The list must hold exactly the tables first..last, head first. */
static void assert_range(L2TableCache *c, unsigned first, unsigned last)
{
    unsigned ids[MAX_LIST];
    g_assert_cmpuint(last - first + 1, <=, MAX_LIST);
    for (unsigned i = first; i <= last; i++) {
        ids[i - first] = i;
    }
    assert_tables(c, ids, last - first + 1);
}

static QedL2CacheStats stats(L2TableCache *c)
{
    QedL2CacheStats st;
    memset(&st, 0xFF, sizeof(st));
    qed_l2_cache_get_stats(c, &st);
    return st;
}

static void test_fifo_order_at_default_max(void)
{
    L2TableCache *c = cache_new();

    for (unsigned i = 0; i < MAX_CACHE; i++) {
        commit_table(c, i);
    }
    assert_range(c, 0, MAX_CACHE - 1);
    g_assert_cmpuint(stats(c).evictions, ==, 0);

    /* Hits change nothing in FIFO, not even for the head. */
    for (unsigned i = 0; i < MAX_CACHE; i += 7) {
        qed_unref_l2_cache_entry(qed_find_l2_cache_entry(c, table_offset(i)));
    }
    assert_range(c, 0, MAX_CACHE - 1);

    /* Each further commit evicts exactly the oldest. */
    for (unsigned i = MAX_CACHE; i < MAX_CACHE + 10; i++) {
        commit_table(c, i);
        assert_range(c, i - MAX_CACHE + 1, i);
        g_assert_null(qed_find_l2_cache_entry(c, table_offset(i - MAX_CACHE)));
    }
    /* Table 10, now the head, was just hit: it goes next all the same. */
    qed_unref_l2_cache_entry(qed_find_l2_cache_entry(c, table_offset(10)));
    commit_table(c, 60);
    assert_range(c, 11, 60);

    QedL2CacheStats st = stats(c);
    g_assert_cmpuint(st.evictions, ==, 11);
    g_assert_cmpuint(st.commits, ==, 61);
    g_assert_cmpuint(st.peak_entries, ==, MAX_CACHE);
    cache_destroy(c);
}

static void test_duplicate_commit_on_full_cache_evicts_nothing(void)
{
    L2TableCache *c = cache_new();

    for (unsigned i = 0; i < MAX_CACHE; i++) {
        commit_table(c, i);
    }
    CachedL2Table *cached = list_lookup(c, table_offset(25));
    g_assert_nonnull(cached);

    commit_table(c, 25); /* duplicate: the newcomer is released */
    commit_table(c, 0);  /* also of the head */
    assert_range(c, 0, MAX_CACHE - 1);
    g_assert_true(list_lookup(c, table_offset(25)) == cached);
    g_assert_cmpint(cached->ref, ==, 1);

    QedL2CacheStats st = stats(c);
    g_assert_cmpuint(st.evictions, ==, 0);
    g_assert_cmpuint(st.duplicate_commits, ==, 2);
    g_assert_cmpuint(st.commits, ==, MAX_CACHE + 2);

    /* The first new table still evicts only the head. */
    commit_table(c, MAX_CACHE);
    assert_range(c, 1, MAX_CACHE);
    cache_destroy(c);
}

/*
 * docs/behaviour.md, "The eviction rule", step by step. Without the in-use rule (as before QEMU commit
 * 14fe292d86), step 2 evicts table A, which is the oldest, and step 3
 * misses and reads A from disk while the update of step 1 is in flight.
 */
static void test_table_in_use_is_never_evicted(void)
{
    L2TableCache *c = cache_new();
    const unsigned A = 0;

    /* An allocating write creates table A, commits it and keeps using it. */
    CachedL2Table *w = new_entry(c, table_offset(A));
    w->table->offsets[0] = 0x123450000;
    qed_commit_l2_cache_entry(c, w);
    CachedL2Table *writer = qed_find_l2_cache_entry(c, table_offset(A));
    g_assert_true(writer == w);
    for (unsigned i = 1; i < MAX_CACHE; i++) {
        commit_table(c, i);
    }
    g_assert_true(nth_entry(c, 0) == writer); /* A is the oldest: first in line */

    /* 1. The write updates A in place; its write-through is in flight. */
    writer->table->offsets[1] = 0xABCD0000;

    /* 2. Other requests need tables B...: each commit needs room. */
    for (unsigned b = MAX_CACHE; b < 5 * MAX_CACHE; b++) {
        CachedL2Table *head_after_a = nth_entry(c, 1);
        uint64_t next_victim = head_after_a->offset;
        commit_table(c, b);
        g_assert_cmpuint(c->n_entries, ==, MAX_CACHE);
        g_assert_true(nth_entry(c, 0) == writer); /* A stays, first in line */
        g_assert_true(list_lookup(c, table_offset(A)) == writer);
        g_assert_null(list_lookup(c, next_victim)); /* the next oldest went instead */
        g_assert_cmpint(writer->ref, ==, 2);
    }
    g_assert_cmpuint(stats(c).evictions, ==, 4 * MAX_CACHE);

    /* 3. A read needs A: a hit on the very entry being updated, no disk read. */
    uint64_t misses = stats(c).misses;
    CachedL2Table *reader = qed_find_l2_cache_entry(c, table_offset(A));
    g_assert_true(reader == writer);
    g_assert_cmpuint(reader->table->offsets[1], ==, 0xABCD0000);
    g_assert_cmpuint(reader->table->offsets[0], ==, 0x123450000);
    g_assert_cmpuint(stats(c).misses, ==, misses);
    g_assert_cmpint(writer->ref, ==, 3);

    /* Once both are done, A is an ordinary entry: the next commit evicts it. */
    qed_unref_l2_cache_entry(reader);
    qed_unref_l2_cache_entry(writer);
    g_assert_cmpint(w->ref, ==, 1);
    commit_table(c, 1000);
    g_assert_null(list_lookup(c, table_offset(A)));
    g_assert_null(qed_find_l2_cache_entry(c, table_offset(A)));
    g_assert_cmpuint(c->n_entries, ==, MAX_CACHE);
    cache_destroy(c);
}

static void test_grow_when_all_in_use_then_shrink_back(void)
{
    L2TableCache *c = cache_new();
    CachedL2Table *held[80] = { 0 };

    for (unsigned i = 0; i < MAX_CACHE; i++) {
        held[i] = commit_and_hold(c, i);
    }
    /* Everything in use: each commit grows the cache by one, evicting nothing. */
    for (unsigned i = MAX_CACHE; i < 60; i++) {
        held[i] = commit_and_hold(c, i);
        g_assert_cmpuint(c->n_entries, ==, i + 1);
    }
    assert_range(c, 0, 59);
    QedL2CacheStats st = stats(c);
    g_assert_cmpuint(st.evictions, ==, 0);
    g_assert_cmpuint(st.peak_entries, ==, 60);

    /* Dropping references does not shrink the cache by itself. */
    for (unsigned i = 0; i < 5; i++) {
        qed_unref_l2_cache_entry(held[i]);
        held[i] = NULL;
    }
    g_assert_cmpuint(check_list(c), ==, 60);

    /* 60 >= 50: the 5 unused head entries go (55 is still >= 50), then append: 56. */
    commit_table(c, 60);
    assert_range(c, 5, 60);
    g_assert_cmpuint(stats(c).evictions, ==, 5);

    /* Keep 20..29 in use, free the rest: the commit evicts from the head, skipping
     * 20..29, until fewer than 50 remain: 5..11 (7 entries: 56 -> 49), then appends. */
    for (unsigned i = 0; i < 60; i++) {
        if (held[i] && (i < 20 || i > 29)) {
            qed_unref_l2_cache_entry(held[i]);
            held[i] = NULL;
        }
    }
    commit_table(c, 61);
    assert_range(c, 12, 61);
    g_assert_cmpuint(c->n_entries, ==, MAX_CACHE);
    g_assert_cmpuint(stats(c).evictions, ==, 12);

    /* Back at the maximum: one out, one in. */
    commit_table(c, 62);
    assert_range(c, 13, 62);
    for (unsigned i = 13; i < 20; i++) {
        commit_table(c, 63 + i - 13); /* evicts 13..19 */
    }
    assert_range(c, 20, 69);
    /* The head 20..29 is in use: the next victims are 30, 31, ... */
    commit_table(c, 70);
    commit_table(c, 71);
    {
        unsigned ids[MAX_CACHE];
        unsigned n = 0;
        for (unsigned i = 20; i <= 29; i++) {
            ids[n++] = i;
        }
        for (unsigned i = 32; i <= 71; i++) {
            ids[n++] = i;
        }
        assert_tables(c, ids, n);
    }
    st = stats(c);
    g_assert_cmpuint(st.evictions, ==, 12 + 1 + 7 + 2);
    g_assert_cmpuint(st.peak_entries, ==, 60);

    for (unsigned i = 0; i < G_N_ELEMENTS(held); i++) {
        qed_unref_l2_cache_entry(held[i]);
    }
    /* No longer in use, the old head goes first again. */
    commit_table(c, 72);
    {
        unsigned ids[MAX_CACHE];
        unsigned n = 0;
        for (unsigned i = 21; i <= 29; i++) {
            ids[n++] = i;
        }
        for (unsigned i = 32; i <= 72; i++) {
            ids[n++] = i;
        }
        assert_tables(c, ids, n);
    }
    cache_destroy(c);
}

/* Interleaved held entries keep their places; the unused ones between them go. */
static void test_held_entries_keep_their_place(void)
{
    L2TableCache *c = cache_new();
    CachedL2Table *held[MAX_CACHE] = { 0 };

    for (unsigned i = 0; i < MAX_CACHE; i++) {
        if (i % 2 == 0) {
            held[i] = commit_and_hold(c, i);
        } else {
            commit_table(c, i);
        }
    }
    for (unsigned k = 0; k < MAX_CACHE / 2; k++) {
        commit_table(c, 100 + k); /* evicts odd table 2k+1 */
        g_assert_null(list_lookup(c, table_offset(2 * k + 1)));
        g_assert_cmpuint(c->n_entries, ==, MAX_CACHE);
    }
    unsigned ids[MAX_CACHE];
    for (unsigned k = 0; k < MAX_CACHE / 2; k++) {
        ids[k] = 2 * k;
        ids[MAX_CACHE / 2 + k] = 100 + k;
    }
    assert_tables(c, ids, MAX_CACHE);

    /* All the old ones are in use: the first new one goes next. */
    commit_table(c, 200);
    g_assert_null(list_lookup(c, table_offset(100)));
    g_assert_true(nth_entry(c, 0) == held[0]);
    for (unsigned i = 0; i < MAX_CACHE; i++) {
        qed_unref_l2_cache_entry(held[i]);
    }
    cache_destroy(c);
}

static void test_free_releases_everything(void)
{
    L2TableCache *c = cache_new();
    CachedL2Table *held[70];

    /* Grown past the maximum, then every request done. */
    for (unsigned i = 0; i < 70; i++) {
        held[i] = commit_and_hold(c, i);
    }
    for (unsigned i = 0; i < 70; i++) {
        qed_unref_l2_cache_entry(held[i]);
    }
    g_assert_cmpuint(check_list(c), ==, 70);
    qed_free_l2_cache(c);
    g_assert_null(c->entries.tqh_first);
    g_assert_true(c->entries.tqh_circ.tql_prev == &c->entries.tqh_circ);
    g_assert_cmpuint(c->n_entries, ==, 0);
    g_assert_cmpuint(check_list(c), ==, 0);
    g_free(c); /* valgrind: the 70 entries and tables were released */
}

static void test_reinit_after_free_on_zeroed_struct(void)
{
    L2TableCache *c = cache_new();

    for (unsigned i = 0; i < MAX_CACHE + 3; i++) {
        commit_table(c, i);
    }
    qed_free_l2_cache(c);
    memset(c, 0, sizeof(*c));
    qed_init_l2_cache(c);
    g_assert_cmpuint(check_list(c), ==, 0);
    QedL2CacheStats st = stats(c);
    g_assert_cmpuint(st.hits + st.misses + st.commits + st.duplicate_commits + st.evictions + st.peak_entries,
                     ==, 0);
    g_assert_null(qed_find_l2_cache_entry(c, table_offset(MAX_CACHE)));

    /* Fully usable: same order, same maximum, same eviction. */
    for (unsigned i = 0; i < MAX_CACHE + 10; i++) {
        commit_table(c, 1000 + i);
    }
    assert_range(c, 1010, 1000 + MAX_CACHE + 9);
    CachedL2Table *e = qed_find_l2_cache_entry(c, table_offset(1010));
    g_assert_true(e == nth_entry(c, 0));
    commit_table(c, 2000);
    g_assert_true(nth_entry(c, 0) == e); /* held, skipped */
    qed_unref_l2_cache_entry(e);
    st = stats(c);
    g_assert_cmpuint(st.evictions, ==, 11);
    g_assert_cmpuint(st.misses, ==, 1);
    g_assert_cmpuint(st.hits, ==, 1);
    cache_destroy(c);
}

int main(int argc, char **argv)
{
    /* The defaults of docs/behaviour.md (max 50, fifo), whatever the environment says. */
    g_unsetenv("QED_L2_CACHE_SIZE");
    g_unsetenv("QED_L2_CACHE_POLICY");
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/eviction/fifo-order-at-default-max", test_fifo_order_at_default_max);
    g_test_add_func("/eviction/duplicate-commit-on-full-cache-evicts-nothing",
                    test_duplicate_commit_on_full_cache_evicts_nothing);
    g_test_add_func("/eviction/table-in-use-is-never-evicted", test_table_in_use_is_never_evicted);
    g_test_add_func("/eviction/grow-when-all-in-use-then-shrink-back",
                    test_grow_when_all_in_use_then_shrink_back);
    g_test_add_func("/eviction/held-entries-keep-their-place", test_held_entries_keep_their_place);
    g_test_add_func("/eviction/free-releases-everything", test_free_releases_everything);
    g_test_add_func("/eviction/reinit-after-free-on-zeroed-struct", test_reinit_after_free_on_zeroed_struct);
    return g_test_run();
}
