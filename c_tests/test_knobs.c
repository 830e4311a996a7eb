/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The knobs (docs/configuration.md) from C: qed_l2_cache_set_max_entries,
 * qed_l2_cache_set_policy, qed_l2_cache_get_stats, the environment
 * variables QED_L2_CACHE_SIZE and QED_L2_CACHE_POLICY, and a check that
 * the hit path (find hit + unref) allocates nothing.
 *
 * The /knobs/env/ tests need an environment: c_tests/meson.build runs this
 * program again with QED_L2_CACHE_* set and a KNOBS_EXPECT_* variable
 * saying what to expect; without it they are skipped.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>

#include "helpers.h"

/* ---- allocation counter (malloc interposition) ---- */

/*
 * The program defines malloc and friends; the dynamic linker binds the
 * library's calls to these (the executable comes first in symbol lookup).
 * They forward to glibc's own entry points and count while `counting`.
 * AddressSanitizer and valgrind replace malloc themselves: there the test
 * is skipped. Elsewhere a positive control (an alloc inside the window must
 * be counted) makes sure the counter really sees the library's calls.
 */
#if defined(__SANITIZE_ADDRESS__)
#define KNOBS_NO_INTERPOSE 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(memory_sanitizer)
#define KNOBS_NO_INTERPOSE 1
#endif
#endif

#ifndef KNOBS_NO_INTERPOSE
static atomic_bool counting;
static atomic_ulong allocations;

extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void *__libc_memalign(size_t align, size_t size);

static inline void count_one(void)
{
    if (atomic_load_explicit(&counting, memory_order_relaxed)) {
        atomic_fetch_add_explicit(&allocations, 1, memory_order_relaxed);
    }
}

void *malloc(size_t size)
{
    count_one();
    return __libc_malloc(size);
}

void *calloc(size_t n, size_t size)
{
    count_one();
    return __libc_calloc(n, size);
}

void *realloc(void *p, size_t size)
{
    count_one();
    return __libc_realloc(p, size);
}

void *aligned_alloc(size_t align, size_t size)
{
    count_one();
    return __libc_memalign(align, size);
}

void *memalign(size_t align, size_t size)
{
    count_one();
    return __libc_memalign(align, size);
}

int posix_memalign(void **out, size_t align, size_t size)
{
    count_one();
    if (align < sizeof(void *) || (align & (align - 1)) != 0) {
        return EINVAL;
    }
    void *p = __libc_memalign(align, size);
    if (!p) {
        return ENOMEM;
    }
    *out = p;
    return 0;
}
#endif

/* ---- helpers ---- */

/* A cache with a known maximum and policy, whatever the environment says. */
static L2TableCache *new_cache(unsigned max, QedL2CachePolicy policy)
{
    L2TableCache *c = g_malloc0(sizeof(*c));
    qed_init_l2_cache(c);
    qed_l2_cache_set_max_entries(c, max);
    qed_l2_cache_set_policy(c, policy);
    return c;
}

static void drop_cache(L2TableCache *c)
{
    qed_free_l2_cache(c);
    g_free(c);
}

/* alloc + commit of table i (as the QED read path does before its find). */
static void commit_table(L2TableCache *c, unsigned i)
{
    qed_commit_l2_cache_entry(c, new_entry(c, table_offset(i)));
}

/* find that must hit; the caller unrefs. */
static CachedL2Table *hit(L2TableCache *c, unsigned i)
{
    CachedL2Table *e = qed_find_l2_cache_entry(c, table_offset(i));
    g_assert_nonnull(e);
    g_assert_cmpuint(e->offset, ==, table_offset(i));
    return e;
}

static void touch(L2TableCache *c, unsigned i)
{
    qed_unref_l2_cache_entry(hit(c, i));
}

/*
 * The list in order as table numbers, e.g. "2 3 1", after checking every
 * QTAILQ rule. Returned string is owned by the caller.
 */
static char *order(L2TableCache *c)
{
    GString *s = g_string_new(NULL);
    check_list(c);
    for (CachedL2Table *e = c->entries.tqh_first; e; e = e->node.tqe_next) {
        g_string_append_printf(s, "%s%u", s->len ? " " : "", (unsigned)(e->offset / 0x10000 - 1));
    }
    return g_string_free(s, FALSE);
}

#define assert_order(c, want)                    \
    do {                                         \
        char *got_ = order(c);                   \
        g_assert_cmpstr(got_, ==, (want));       \
        g_free(got_);                            \
    } while (0)

static QedL2CacheStats stats(L2TableCache *c)
{
    QedL2CacheStats s;
    memset(&s, 0xAB, sizeof(s));
    qed_l2_cache_get_stats(c, &s);
    return s;
}

static const QedL2CachePolicy policies[] = {
    QED_L2_CACHE_POLICY_FIFO, QED_L2_CACHE_POLICY_LRU, QED_L2_CACHE_POLICY_SIEVE};

/* ---- set_max_entries ---- */

static void test_set_max_shrinks_at_once_but_keeps_held(void)
{
    for (unsigned p = 0; p < G_N_ELEMENTS(policies); p++) {
        L2TableCache *c = new_cache(10, policies[p]);
        for (unsigned i = 0; i < 10; i++) {
            commit_table(c, i);
        }
        /* Requests hold 0, 1, 2 (first in line for eviction) and 5. */
        CachedL2Table *held[] = {hit(c, 0), hit(c, 1), hit(c, 2), hit(c, 5)};
        qed_l2_cache_set_max_entries(c, 2);
        /* Everything else went at once; the held four stay, past the maximum. */
        g_assert_cmpuint(c->n_entries, ==, 4);
        assert_order(c, "0 1 2 5");
        g_assert_cmpuint(stats(c).evictions, ==, 6);
        for (unsigned i = 0; i < G_N_ELEMENTS(held); i++) {
            g_assert_cmpint(held[i]->ref, ==, 2);
            g_assert_nonnull(held[i]->table);
            qed_unref_l2_cache_entry(held[i]);
        }
        /* Nothing held now: the next commit evicts down to max - 1, then appends. */
        commit_table(c, 20);
        g_assert_cmpuint(check_list(c), ==, 2);
        g_assert_cmpuint(stats(c).evictions, ==, 9);
        g_assert_true(c->entries.tqh_first->node.tqe_next->offset == table_offset(20));
        if (policies[p] != QED_L2_CACHE_POLICY_SIEVE) {
            assert_order(c, "5 20"); /* SIEVE's victims depend on where its hand stopped */
        }
        drop_cache(c);
    }
}

static void test_set_max_grows_without_evicting(void)
{
    L2TableCache *c = new_cache(3, QED_L2_CACHE_POLICY_FIFO);
    for (unsigned i = 0; i < 3; i++) {
        commit_table(c, i);
    }
    qed_l2_cache_set_max_entries(c, 5);
    g_assert_cmpuint(stats(c).evictions, ==, 0);
    for (unsigned i = 3; i < 6; i++) {
        commit_table(c, i);
    }
    /* Evicts at 5 now, not 3: one eviction for the sixth table. */
    assert_order(c, "1 2 3 4 5");
    g_assert_cmpuint(stats(c).evictions, ==, 1);
    drop_cache(c);
}

static void test_in_use_never_evicted_in_any_policy(void)
{
    for (unsigned p = 0; p < G_N_ELEMENTS(policies); p++) {
        L2TableCache *c = new_cache(3, policies[p]);
        CachedL2Table *held[4];
        for (unsigned i = 0; i < 3; i++) {
            commit_table(c, i);
            held[i] = hit(c, i);
        }
        /* All in use: the cache grows instead of evicting. */
        commit_table(c, 3);
        held[3] = hit(c, 3);
        g_assert_cmpuint(c->n_entries, ==, 4);
        g_assert_cmpuint(stats(c).evictions, ==, 0);
        g_assert_cmpuint(stats(c).peak_entries, ==, 4);
        qed_l2_cache_set_max_entries(c, 1);
        g_assert_cmpuint(c->n_entries, ==, 4);
        for (unsigned i = 0; i < 4; i++) {
            g_assert_cmpint(held[i]->ref, ==, 2);
            qed_unref_l2_cache_entry(held[i]);
        }
        /* Released by the requests: the next commit shrinks back. */
        commit_table(c, 4);
        assert_order(c, "4");
        g_assert_cmpuint(stats(c).evictions, ==, 4);
        drop_cache(c);
    }
}

/* ---- set_policy ---- */

static void test_policy_fifo_ignores_hits(void)
{
    L2TableCache *c = new_cache(3, QED_L2_CACHE_POLICY_FIFO);
    for (unsigned i = 1; i <= 3; i++) {
        commit_table(c, i);
    }
    touch(c, 1);
    touch(c, 1);
    assert_order(c, "1 2 3");
    commit_table(c, 4);
    assert_order(c, "2 3 4");
    drop_cache(c);
}

static void test_policy_lru_moves_hits_to_the_tail(void)
{
    L2TableCache *c = new_cache(3, QED_L2_CACHE_POLICY_LRU);
    for (unsigned i = 1; i <= 3; i++) {
        commit_table(c, i);
    }
    touch(c, 1);
    assert_order(c, "2 3 1");
    touch(c, 3);
    assert_order(c, "2 1 3");
    commit_table(c, 4); /* evicts the least recently used */
    assert_order(c, "1 3 4");
    touch(c, 3);
    assert_order(c, "1 4 3");
    touch(c, 4);
    assert_order(c, "1 3 4");
    commit_table(c, 5);
    assert_order(c, "3 4 5");
    drop_cache(c);
}

static void test_policy_sieve_spares_visited_once(void)
{
    L2TableCache *c = new_cache(3, QED_L2_CACHE_POLICY_SIEVE);
    for (unsigned i = 1; i <= 3; i++) {
        commit_table(c, i);
    }
    touch(c, 1);
    touch(c, 2);
    /* A scan hits the table it just read over and over: not a reuse. */
    for (unsigned k = 0; k < 1000; k++) {
        touch(c, 3);
    }
    assert_order(c, "1 2 3"); /* SIEVE never reorders on a hit */
    commit_table(c, 4);
    /* The hand clears 1 and 2 (visited) and evicts 3. */
    assert_order(c, "1 2 4");
    commit_table(c, 5);
    /* The hand wraps: 1 and 2 are unmarked now, 1 goes. */
    assert_order(c, "2 4 5");
    touch(c, 2);
    commit_table(c, 6);
    /* The hand goes on after 1: 2 is spared again (visited), 4 goes. */
    assert_order(c, "2 5 6");
    g_assert_cmpuint(stats(c).evictions, ==, 3);
    drop_cache(c);
}

static void test_policy_switch_keeps_the_order(void)
{
    L2TableCache *c = new_cache(4, QED_L2_CACHE_POLICY_LRU);
    for (unsigned i = 1; i <= 4; i++) {
        commit_table(c, i);
    }
    touch(c, 1);
    touch(c, 2);
    assert_order(c, "3 4 1 2");
    qed_l2_cache_set_policy(c, QED_L2_CACHE_POLICY_FIFO);
    assert_order(c, "3 4 1 2");
    touch(c, 3);
    assert_order(c, "3 4 1 2");
    commit_table(c, 5);
    assert_order(c, "4 1 2 5");
    qed_l2_cache_set_policy(c, QED_L2_CACHE_POLICY_SIEVE);
    touch(c, 4);
    commit_table(c, 6);
    assert_order(c, "4 2 5 6");
    drop_cache(c);
}

/* ---- get_stats ---- */

static void test_stats_count_a_known_sequence(void)
{
    L2TableCache *c = new_cache(3, QED_L2_CACHE_POLICY_FIFO);
    QedL2CacheStats s = stats(c);
    g_assert_cmpuint(s.hits, ==, 0);
    g_assert_cmpuint(s.misses, ==, 0);
    g_assert_cmpuint(s.commits, ==, 0);
    g_assert_cmpuint(s.duplicate_commits, ==, 0);
    g_assert_cmpuint(s.evictions, ==, 0);
    g_assert_cmpuint(s.peak_entries, ==, 0);

    for (unsigned i = 0; i < 3; i++) { /* A B C: 3 commits */
        commit_table(c, i);
    }
    touch(c, 0);                                                   /* hit 1 */
    g_assert_null(qed_find_l2_cache_entry(c, table_offset(9)));   /* miss 1 */
    touch(c, 1);                                                   /* hit 2 */
    qed_commit_l2_cache_entry(c, new_entry(c, table_offset(0))); /* duplicate of A */
    commit_table(c, 3);                                            /* D evicts A */
    assert_order(c, "1 2 3");
    s = stats(c);
    g_assert_cmpuint(s.hits, ==, 2);
    g_assert_cmpuint(s.misses, ==, 1);
    g_assert_cmpuint(s.commits, ==, 5);
    g_assert_cmpuint(s.duplicate_commits, ==, 1);
    g_assert_cmpuint(s.evictions, ==, 1);
    g_assert_cmpuint(s.peak_entries, ==, 3);

    CachedL2Table *held[] = {hit(c, 1), hit(c, 2), hit(c, 3)}; /* hits 3-5 */
    commit_table(c, 4);                                      /* E: all in use, grows */
    for (unsigned i = 0; i < G_N_ELEMENTS(held); i++) {
        qed_unref_l2_cache_entry(held[i]);
    }
    commit_table(c, 5); /* F: evicts B and C down to 2, then appends */
    assert_order(c, "3 4 5");
    qed_l2_cache_set_max_entries(c, 1); /* evicts D and E */
    assert_order(c, "5");
    s = stats(c);
    g_assert_cmpuint(s.hits, ==, 5);
    g_assert_cmpuint(s.misses, ==, 1);
    g_assert_cmpuint(s.commits, ==, 7);
    g_assert_cmpuint(s.duplicate_commits, ==, 1);
    g_assert_cmpuint(s.evictions, ==, 5);
    g_assert_cmpuint(s.peak_entries, ==, 4);

    /* Counters belong to one initialisation: free + init starts at zero. */
    qed_free_l2_cache(c);
    qed_init_l2_cache(c);
    s = stats(c);
    g_assert_cmpuint(s.hits + s.misses + s.commits + s.duplicate_commits + s.evictions + s.peak_entries,
                     ==, 0);
    drop_cache(c);
}

static void test_stats_are_per_cache(void)
{
    L2TableCache *a = new_cache(5, QED_L2_CACHE_POLICY_LRU);
    L2TableCache *b = new_cache(5, QED_L2_CACHE_POLICY_SIEVE);
    commit_table(a, 1);
    touch(a, 1);
    g_assert_null(qed_find_l2_cache_entry(b, table_offset(1)));
    g_assert_cmpuint(stats(a).hits, ==, 1);
    g_assert_cmpuint(stats(a).misses, ==, 0);
    g_assert_cmpuint(stats(b).hits, ==, 0);
    g_assert_cmpuint(stats(b).misses, ==, 1);
    g_assert_cmpuint(stats(b).commits, ==, 0);
    drop_cache(a);
    drop_cache(b);
}

/* ---- knob misuse ---- */

static void test_knob_misuse_is_reported(void)
{
    if (g_test_subprocess()) {
        L2TableCache *c = new_cache(3, QED_L2_CACHE_POLICY_FIFO);
        qed_l2_cache_set_max_entries(c, 0);
        return; /* not reached: misuse aborts */
    }
    g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
    g_test_trap_assert_failed();
    g_test_trap_assert_stderr("*qed_l2_cache_set_max_entries*max must be at least 1*");
}

static void test_unknown_policy_is_reported(void)
{
    if (g_test_subprocess()) {
        L2TableCache *c = new_cache(3, QED_L2_CACHE_POLICY_FIFO);
        qed_l2_cache_set_policy(c, 3);
        return; /* not reached: misuse aborts */
    }
    g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
    g_test_trap_assert_failed();
    g_test_trap_assert_stderr("*qed_l2_cache_set_policy*unknown policy 3*");
}

/* ---- the hit path allocates nothing ---- */

static void test_hit_path_does_not_allocate(void)
{
#ifdef KNOBS_NO_INTERPOSE
    g_test_skip("a sanitizer interposes malloc itself");
#else
    const char *preload = g_getenv("LD_PRELOAD");
    if (preload && strstr(preload, "vgpreload")) {
        g_test_skip("valgrind replaces this program's malloc with its own");
        return;
    }
    if (g_strcmp0(g_getenv("QED_L2_CACHE_TRACE"), "1") == 0) {
        g_test_skip("QED_L2_CACHE_TRACE=1: trace lines are formatted on the heap");
        return;
    }
    for (unsigned p = 0; p < G_N_ELEMENTS(policies); p++) {
        L2TableCache *c = new_cache(64, policies[p]);
        for (unsigned i = 0; i < 64; i++) {
            commit_table(c, i);
        }
        touch(c, 0); /* warm up */

        /* The counter works: an alloc inside the window is seen. */
        atomic_store(&allocations, 0);
        atomic_store(&counting, true);
        CachedL2Table *probe = qed_alloc_l2_cache_entry(c);
        atomic_store(&counting, false);
        g_assert_cmpuint(atomic_load(&allocations), >=, 1);
        qed_unref_l2_cache_entry(probe);

        atomic_store(&allocations, 0);
        atomic_store(&counting, true);
        unsigned found = 0;
        for (unsigned k = 0; k < 10000; k++) {
            /* Strides over all 64 so LRU moves and SIEVE marks entries. */
            CachedL2Table *e = qed_find_l2_cache_entry(c, table_offset((k * 7) % 64));
            found += e != NULL;
            qed_unref_l2_cache_entry(e);
        }
        atomic_store(&counting, false);
        g_assert_cmpuint(found, ==, 10000);
        g_assert_cmpuint(atomic_load(&allocations), ==, 0);
        drop_cache(c);
    }
#endif
}

/* ---- environment (run by meson with the variables set) ---- */

static const char *expectation(const char *name)
{
    const char *v = g_getenv(name);
    if (!v) {
        g_test_skip("needs the environment c_tests/meson.build sets (knobs-env-* tests)");
    }
    return v;
}

/* Which policy a cache uses, told by what it does (max set to 3 here). */
static const char *observed_policy(L2TableCache *c)
{
    qed_l2_cache_set_max_entries(c, 3);
    for (unsigned i = 1; i <= 3; i++) {
        commit_table(c, i);
    }
    touch(c, 1);
    commit_table(c, 4);
    char *o = order(c);
    const char *name = g_str_equal(o, "2 3 4")   ? "fifo"
                       : g_str_equal(o, "3 1 4") ? "lru"
                       : g_str_equal(o, "1 3 4") ? "sieve"
                                                 : "unknown";
    g_free(o);
    return name;
}

static void test_env_size(void)
{
    const char *want = expectation("KNOBS_EXPECT_SIZE");
    if (!want) {
        return;
    }
    unsigned max = (unsigned)g_ascii_strtoull(want, NULL, 10);
    g_assert_cmpuint(max, >, 0);
    L2TableCache *c = g_malloc0(sizeof(*c));
    qed_init_l2_cache(c);
    for (unsigned i = 0; i < max; i++) {
        commit_table(c, i);
    }
    g_assert_cmpuint(stats(c).evictions, ==, 0);
    commit_table(c, max); /* one past the maximum: the first eviction */
    g_assert_cmpuint(c->n_entries, ==, max);
    g_assert_cmpuint(stats(c).evictions, ==, 1);
    g_assert_null(qed_find_l2_cache_entry(c, table_offset(0)));
    drop_cache(c);
}

static void test_env_policy(void)
{
    const char *want = expectation("KNOBS_EXPECT_POLICY");
    if (!want) {
        return;
    }
    L2TableCache *c = g_malloc0(sizeof(*c));
    qed_init_l2_cache(c);
    g_assert_cmpstr(observed_policy(c), ==, want);
    drop_cache(c);
}

/*
 * KNOBS_EXPECT_INVALID names the variable meson set to an invalid value:
 * the library says so in one line naming the variable and the value, once
 * per process however many caches, and uses the default (50, fifo).
 */
static void test_env_invalid_value(void)
{
    const char *var = expectation("KNOBS_EXPECT_INVALID");
    if (!var) {
        return;
    }
    if (g_test_subprocess()) {
        for (unsigned round = 0; round < 2; round++) {
            L2TableCache *c = g_malloc0(sizeof(*c));
            qed_init_l2_cache(c);
            for (unsigned i = 0; i < 55; i++) {
                commit_table(c, i);
            }
            g_assert_cmpuint(c->n_entries, ==, 50);
            g_assert_cmpuint(stats(c).evictions, ==, 5);
            qed_free_l2_cache(c);
            qed_init_l2_cache(c);
            g_assert_cmpstr(observed_policy(c), ==, "fifo");
            drop_cache(c);
        }
        return;
    }
    const char *value = g_getenv(var);
    g_assert_nonnull(value);
    g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
    g_test_trap_assert_passed();
    char *pattern = g_strdup_printf("*%s*%s*\n", var, value);
    g_test_trap_assert_stderr(pattern);
    g_free(pattern);
    g_test_trap_assert_stderr_unmatched("*\n*\n*"); /* one line */
}

/* QEMU's read path: find; on a miss alloc, commit, find again (which must
 * hit); unref. Returns 1 on a miss. */
static int read_path(L2TableCache *c, unsigned i)
{
    CachedL2Table *e = qed_find_l2_cache_entry(c, table_offset(i));
    int miss = e == NULL;
    if (miss) {
        commit_table(c, i);
        e = hit(c, i);
    }
    qed_unref_l2_cache_entry(e);
    return miss;
}

/*
 * QED_L2_CACHE_SIZE=auto (docs/sizing.md). KNOBS_EXPECT_AUTO=grow: a cache
 * starts at 50 tables and, under uniform lookups over 100, takes them all.
 * KNOBS_EXPECT_AUTO=tiny: QED_L2_CACHE_MEMORY (8 KiB) is below one table
 * (4 KiB here) for each of the three caches: one line says so, naming the
 * variable, and each
 * cache keeps one table, its find after a commit still hitting.
 */
static void test_env_auto(void)
{
    const char *want = expectation("KNOBS_EXPECT_AUTO");
    if (!want) {
        return;
    }
    if (g_str_equal(want, "grow")) {
        L2TableCache *c = g_malloc0(sizeof(*c));
        qed_init_l2_cache(c);
        g_assert_cmpuint(qed_l2_cache_get_target(c), ==, 50);
        uint64_t x = 1;
        for (unsigned i = 0; i < 40000; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            read_path(c, (unsigned)(x >> 33) % 100);
        }
        g_assert_cmpuint(qed_l2_cache_get_target(c), >=, 99);
        g_assert_cmpuint(c->n_entries, >=, 99);
        /* set_max_entries makes it a fixed cache again. */
        qed_l2_cache_set_max_entries(c, 7);
        for (unsigned i = 0; i < 10000; i++) {
            read_path(c, i % 100);
        }
        g_assert_cmpuint(qed_l2_cache_get_target(c), ==, 7);
        g_assert_cmpuint(c->n_entries, ==, 7);
        drop_cache(c);
        return;
    }
    g_assert_cmpstr(want, ==, "tiny");
    if (g_test_subprocess()) {
        L2TableCache *c[3];
        for (unsigned k = 0; k < 3; k++) {
            c[k] = g_malloc0(sizeof(*c[k]));
            qed_init_l2_cache(c[k]);
        }
        for (unsigned i = 0; i < 30000; i++) {
            for (unsigned k = 0; k < 3; k++) {
                read_path(c[k], 100 * k + i % 20);
            }
        }
        for (unsigned k = 0; k < 3; k++) {
            g_assert_cmpuint(qed_l2_cache_get_target(c[k]), ==, 1);
            g_assert_cmpuint(c[k]->n_entries, ==, 1);
            drop_cache(c[k]);
        }
        return;
    }
    g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
    g_test_trap_assert_passed();
    g_test_trap_assert_stderr("*QED_L2_CACHE_MEMORY*less than one table*\n");
    g_test_trap_assert_stderr_unmatched("*\n*\n*"); /* one line */
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/knobs/set-max/shrinks-at-once-but-keeps-held", test_set_max_shrinks_at_once_but_keeps_held);
    g_test_add_func("/knobs/set-max/grows-without-evicting", test_set_max_grows_without_evicting);
    g_test_add_func("/knobs/set-max/in-use-never-evicted-in-any-policy", test_in_use_never_evicted_in_any_policy);
    g_test_add_func("/knobs/set-max/zero-is-a-misuse", test_knob_misuse_is_reported);
    g_test_add_func("/knobs/policy/fifo-ignores-hits", test_policy_fifo_ignores_hits);
    g_test_add_func("/knobs/policy/lru-moves-hits-to-the-tail", test_policy_lru_moves_hits_to_the_tail);
    g_test_add_func("/knobs/policy/sieve-spares-visited-once", test_policy_sieve_spares_visited_once);
    g_test_add_func("/knobs/policy/switch-keeps-the-order", test_policy_switch_keeps_the_order);
    g_test_add_func("/knobs/policy/unknown-is-a-misuse", test_unknown_policy_is_reported);
    g_test_add_func("/knobs/stats/known-sequence", test_stats_count_a_known_sequence);
    g_test_add_func("/knobs/stats/per-cache", test_stats_are_per_cache);
    g_test_add_func("/knobs/hit-path/no-allocation", test_hit_path_does_not_allocate);
    g_test_add_func("/knobs/env/size", test_env_size);
    g_test_add_func("/knobs/env/policy", test_env_policy);
    g_test_add_func("/knobs/env/invalid-value", test_env_invalid_value);
    g_test_add_func("/knobs/env/auto", test_env_auto);
    return g_test_run();
}
