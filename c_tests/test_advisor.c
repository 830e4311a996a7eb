/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The size advisor (docs/advisor.md): qed_l2_cache_predict_misses() against
 * real caches. Each workload runs through a cache of MAX_CACHE tables with
 * the advisor on; then the same request stream is replayed through real
 * caches of every tracked size with the same policy, and the predicted
 * misses must be within 2 points of the real ones (|predicted - real| /
 * requests <= 0.02) per size, policy and workload. Every request follows
 * the QED read path: find; on a miss alloc, set table and offset, commit,
 * find again; unref.
 *
 * Also: the advisor is off by default, restarts on set_max_entries and
 * set_policy, misuse (NULL cache, unknown cache, NULL misses), and with
 * QED_L2_CACHE_REPORT=1 (meson runs this program again with it) it is on
 * for every cache and qed_free_l2_cache prints the report.
 */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>

#include "helpers.h"

#define MAX_CACHE 50
#define REQUESTS 120000u
#define TOLERANCE 0.02

/* ---- deterministic workloads ---- */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static unsigned below(uint64_t *s, unsigned n)
{
    return (unsigned)(((rng_next(s) >> 32) * n) >> 32);
}

enum workload { HOT, SCAN, ZIPF, UNIFORM, PHASES, LOOP, N_WORKLOADS };

static const char *const workload_names[N_WORKLOADS] = {
    [HOT] = "hot-set", [SCAN] = "scan+hot", [ZIPF] = "zipf-0.99",
    [UNIFORM] = "uniform", [PHASES] = "phases", [LOOP] = "loop",
};

#define ZIPF_TABLES 400u
static double zipf_cdf[ZIPF_TABLES];

static unsigned zipf_pick(uint64_t *s)
{
    double u = (double)(rng_next(s) >> 11) / 9007199254740992.0;
    unsigned lo = 0, hi = ZIPF_TABLES - 1;
    while (lo < hi) {
        unsigned mid = (lo + hi) / 2;
        if (zipf_cdf[mid] < u) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    /* Scatter the ranks over the tables. */
    return (lo * 167u) % ZIPF_TABLES;
}

/* The table index of every request of workload w. */
static unsigned *make_stream(enum workload w)
{
    unsigned *t = g_new(unsigned, REQUESTS);
    uint64_t s = 42 + (uint64_t)w;
    unsigned scan = 0, scan_left = 0;

    if (zipf_cdf[ZIPF_TABLES - 1] == 0) {
        double sum = 0;
        for (unsigned i = 0; i < ZIPF_TABLES; i++) {
            sum += 1.0 / pow(i + 1, 0.99);
            zipf_cdf[i] = sum;
        }
        for (unsigned i = 0; i < ZIPF_TABLES; i++) {
            zipf_cdf[i] /= sum;
        }
    }
    for (unsigned i = 0; i < REQUESTS; i++) {
        switch (w) {
        case HOT: /* 85% a hot set of 40 tables, 15% uniform over 400 */
            t[i] = below(&s, 100) < 85 ? below(&s, 40) : below(&s, 400);
            break;
        case SCAN: /* a guest on 30 hot tables beside a backup reading 600 tables in order */
            if (below(&s, 2)) {
                t[i] = 1000 + below(&s, 30);
            } else {
                if (scan_left == 0) {
                    scan = (scan + 1) % 600;
                    scan_left = 64;
                }
                scan_left--;
                t[i] = scan;
            }
            break;
        case ZIPF:
            t[i] = zipf_pick(&s);
            break;
        case UNIFORM:
            t[i] = below(&s, 300);
            break;
        case PHASES: /* every 15,000 requests a new hot set of 60 (half overlapping) */
            t[i] = (i / 15000) * 30 + (below(&s, 10) < 9 ? below(&s, 60) : below(&s, 300));
            break;
        case LOOP: /* a loop over 70 tables, the cache's size between M and 2M */
            t[i] = below(&s, 20) == 0 ? 500 + below(&s, 100) : i % 70;
            break;
        default:
            g_assert_not_reached();
        }
    }
    return t;
}

/* ---- the read path ---- */

/* One request; returns true when it missed. */
static bool request(L2TableCache *c, unsigned table)
{
    uint64_t off = table_offset(table);
    CachedL2Table *e = qed_find_l2_cache_entry(c, off);
    bool miss = e == NULL;
    if (miss) {
        e = new_entry(c, off);
        qed_commit_l2_cache_entry(c, e);
        e = qed_find_l2_cache_entry(c, off);
        g_assert_nonnull(e);
    }
    qed_unref_l2_cache_entry(e);
    return miss;
}

static L2TableCache *cache_sized(unsigned max, QedL2CachePolicy policy)
{
    L2TableCache *c = cache_new();
    qed_l2_cache_set_max_entries(c, max);
    qed_l2_cache_set_policy(c, policy);
    return c;
}

/* Misses of a real cache of `max` tables on the stream. */
static uint64_t replay(const unsigned *t, unsigned max, QedL2CachePolicy policy)
{
    L2TableCache *c = cache_sized(max, policy);
    uint64_t misses = 0;
    for (unsigned i = 0; i < REQUESTS; i++) {
        misses += request(c, t[i]);
    }
    QedL2CacheStats st;
    qed_l2_cache_get_stats(c, &st);
    g_assert_cmpuint(st.misses, ==, misses);
    cache_destroy(c);
    return misses;
}

static const char *const policy_names[] = {"fifo", "lru", "sieve"};

/*
 * Runs workload w at MAX_CACHE with the advisor on, then compares every
 * tracked size against a replay; returns the worst error in points.
 */
static double check_workload(enum workload w, QedL2CachePolicy policy)
{
    unsigned *t = make_stream(w);
    L2TableCache *c = cache_sized(MAX_CACHE, policy);
    qed_l2_cache_set_advisor(c, 1);
    uint64_t own = 0;
    for (unsigned i = 0; i < REQUESTS; i++) {
        own += request(c, t[i]);
    }
    /* The sizes the contract requires, and the ones the advisor adds. */
    static const unsigned sizes[] = {MAX_CACHE / 2, MAX_CACHE, MAX_CACHE * 3 / 2,
                                     MAX_CACHE * 2, MAX_CACHE * 4, MAX_CACHE * 8};
    double worst = 0;
    GString *line = g_string_new(NULL);
    g_string_printf(line, "%-9s %-5s", workload_names[w], policy_names[policy]);
    for (unsigned i = 0; i < G_N_ELEMENTS(sizes); i++) {
        uint64_t predicted = UINT64_MAX;
        g_assert_cmpint(qed_l2_cache_predict_misses(c, sizes[i], &predicted), ==, 0);
        uint64_t real = sizes[i] == MAX_CACHE ? own : replay(t, sizes[i], policy);
        if (sizes[i] == MAX_CACHE) {
            g_assert_cmpuint(predicted, ==, own); /* exactly the cache's own misses */
        }
        double err = fabs((double)predicted - (double)real) / REQUESTS;
        g_string_append_printf(line, " | %u: %.4f vs %.4f", sizes[i], (double)predicted / REQUESTS,
                               (double)real / REQUESTS);
        if (err > TOLERANCE) {
            g_error("%s %s size %u: predicted %" G_GUINT64_FORMAT " misses, a real cache had %" G_GUINT64_FORMAT
                    " (%.2f points apart, tolerance 2)",
                    workload_names[w], policy_names[policy], sizes[i], predicted, real, 100 * err);
        }
        worst = MAX(worst, err);
    }
    g_string_append_printf(line, " | worst %.3f points", 100 * worst);
    g_test_message("%s", line->str);
    g_string_free(line, TRUE);
    /* Untracked sizes are refused. */
    uint64_t m = 7;
    g_assert_cmpint(qed_l2_cache_predict_misses(c, MAX_CACHE + 1, &m), ==, -1);
    g_assert_cmpint(qed_l2_cache_predict_misses(c, 3 * MAX_CACHE, &m), ==, -1);
    g_assert_cmpuint(m, ==, 7);
    cache_destroy(c);
    g_free(t);
    return worst;
}

static void test_accuracy(gconstpointer data)
{
    enum workload w = GPOINTER_TO_UINT(data);
    for (QedL2CachePolicy p = 0; p < 3; p++) {
        check_workload(w, p);
    }
}

/* Off by default (unless QED_L2_CACHE_REPORT=1); the switch; restarts. */
static void test_switch_and_restart(void)
{
    bool report = g_strcmp0(g_getenv("QED_L2_CACHE_REPORT"), "1") == 0;
    L2TableCache *c = cache_sized(8, QED_L2_CACHE_POLICY_LRU);
    uint64_t m = 0;
    g_assert_cmpint(qed_l2_cache_predict_misses(c, 8, &m), ==, report ? 0 : -1);
    qed_l2_cache_set_advisor(c, 0);
    g_assert_cmpint(qed_l2_cache_predict_misses(c, 8, &m), ==, -1);
    for (unsigned i = 0; i < 10; i++) {
        request(c, i); /* 10 misses before the advisor starts */
    }
    qed_l2_cache_set_advisor(c, 1);
    for (unsigned round = 0; round < 3; round++) {
        for (unsigned i = 0; i < 12; i++) {
            request(c, i);
        }
    }
    g_assert_cmpint(qed_l2_cache_predict_misses(c, 8, &m), ==, 0);
    g_assert_cmpuint(m, ==, 36); /* LRU, a loop of 12 in 8: every request misses */
    g_assert_cmpint(qed_l2_cache_predict_misses(c, 16, &m), ==, 0);
    g_assert_cmpuint(m, ==, 12); /* the simulations start empty: round 1 misses */
    g_assert_cmpint(qed_l2_cache_predict_misses(c, 4, &m), ==, 0);
    g_assert_cmpuint(m, ==, 36);
    g_assert_cmpint(qed_l2_cache_predict_misses(c, 2, &m), ==, -1); /* a quarter: not tracked */
    qed_l2_cache_set_advisor(c, 1); /* already on: nothing changes */
    g_assert_cmpint(qed_l2_cache_predict_misses(c, 16, &m), ==, 0);
    g_assert_cmpuint(m, ==, 12);

    qed_l2_cache_set_max_entries(c, 12);
    g_assert_cmpint(qed_l2_cache_predict_misses(c, 4, &m), ==, -1); /* no longer tracked */
    g_assert_cmpint(qed_l2_cache_predict_misses(c, 6, &m), ==, 0);
    g_assert_cmpuint(m, ==, 0);
    g_assert_cmpint(qed_l2_cache_predict_misses(c, 96, &m), ==, 0);
    g_assert_cmpuint(m, ==, 0);
    request(c, 11);
    g_assert_cmpint(qed_l2_cache_predict_misses(c, 6, &m), ==, 0);
    g_assert_cmpuint(m, ==, 1); /* a fresh simulation misses once */
    g_assert_cmpint(qed_l2_cache_predict_misses(c, 12, &m), ==, 0);
    g_assert_cmpuint(m, ==, 0); /* the real cache holds table 11 */

    qed_l2_cache_set_policy(c, QED_L2_CACHE_POLICY_SIEVE);
    g_assert_cmpint(qed_l2_cache_predict_misses(c, 6, &m), ==, 0);
    g_assert_cmpuint(m, ==, 0);
    qed_l2_cache_set_advisor(c, 0);
    g_assert_cmpint(qed_l2_cache_predict_misses(c, 12, &m), ==, -1);
    cache_destroy(c);
}

/* Cache of 1: half is 1 (the cache itself); 2, 4 and 8 are tracked. */
static void test_smallest_cache(void)
{
    L2TableCache *c = cache_sized(1, QED_L2_CACHE_POLICY_FIFO);
    qed_l2_cache_set_advisor(c, 1);
    for (unsigned i = 0; i < 100; i++) {
        request(c, i % 3);
    }
    uint64_t m = 0;
    g_assert_cmpint(qed_l2_cache_predict_misses(c, 1, &m), ==, 0);
    g_assert_cmpuint(m, ==, 100);
    g_assert_cmpint(qed_l2_cache_predict_misses(c, 2, &m), ==, 0);
    g_assert_cmpuint(m, ==, 100);
    g_assert_cmpint(qed_l2_cache_predict_misses(c, 4, &m), ==, 0);
    g_assert_cmpuint(m, ==, 3);
    g_assert_cmpint(qed_l2_cache_predict_misses(c, 8, &m), ==, 0);
    g_assert_cmpuint(m, ==, 3);
    g_assert_cmpint(qed_l2_cache_predict_misses(c, 0, &m), ==, -1);
    cache_destroy(c);
}

/* Misuse: a death test with abort (the default), refused with warn. */
static void test_misuse(void)
{
    bool warn = g_strcmp0(g_getenv("QED_L2_CACHE_ON_MISUSE"), "warn") == 0;
    if (g_test_subprocess()) {
        L2TableCache *c = cache_new();
        L2TableCache never = {0};
        uint64_t m = 5;
        g_assert_cmpint(qed_l2_cache_predict_misses(NULL, 50, &m), ==, -1);
        g_assert_cmpint(qed_l2_cache_predict_misses(&never, 50, &m), ==, -1);
        g_assert_cmpint(qed_l2_cache_predict_misses(c, 50, NULL), ==, -1);
        qed_l2_cache_set_advisor(NULL, 1);
        g_assert_cmpuint(m, ==, 5);
        cache_destroy(c);
        return;
    }
    g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
    if (warn) {
        g_test_trap_assert_passed();
        g_test_trap_assert_stderr("qed-l2-cache: qed_l2_cache_predict_misses: l2_cache is NULL\n"
                                  "qed-l2-cache: qed_l2_cache_predict_misses: l2_cache 0x*: not initialised*\n"
                                  "qed-l2-cache: qed_l2_cache_predict_misses: l2_cache 0x*: misses is NULL\n"
                                  "qed-l2-cache: qed_l2_cache_set_advisor: l2_cache is NULL\n*");
    } else {
        g_test_trap_assert_failed();
        g_test_trap_assert_stderr("qed-l2-cache: qed_l2_cache_predict_misses: l2_cache is NULL\n*");
    }
}

/* With QED_L2_CACHE_REPORT=1: on for every cache, a report at free. */
static void test_report(void)
{
    bool report = g_strcmp0(g_getenv("QED_L2_CACHE_REPORT"), "1") == 0;
    if (g_test_subprocess()) {
        /* Cache A: a loop over 70 tables wants 75; cache B: 20 tables want 25. */
        L2TableCache *a = cache_sized(50, QED_L2_CACHE_POLICY_FIFO);
        L2TableCache *b = cache_sized(50, QED_L2_CACHE_POLICY_FIFO);
        for (unsigned i = 0; i < 7000; i++) {
            request(a, i % 70);
            request(b, i % 20);
        }
        uint64_t m = 0;
        g_assert_cmpint(qed_l2_cache_predict_misses(a, 75, &m), ==, report ? 0 : -1);
        cache_destroy(b);
        cache_destroy(a);
        return;
    }
    g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
    g_test_trap_assert_passed();
    if (!report) {
        g_test_trap_assert_stderr("");
        return;
    }
    /* B is freed first; with 20 tables every size from 25 up is as good. */
    g_test_trap_assert_stderr(
        "qed-l2-cache: report for cache * (policy fifo, QED_L2_CACHE_SIZE=50): 7000 hits, 20 misses, 20 commits "
        "(0 duplicate), 0 evictions, at most 20 tables cached\n"
        "qed-l2-cache: cache *: table reads over 7020 finds by maximum size: 25: 20 (99.7% hits); 50 (now): 20 (99.7% hits); 75: 20 (99.7% hits); 100: 20*\n"
        "qed-l2-cache: cache *: set QED_L2_CACHE_SIZE=25: the smallest size tracked within 1 point of the best "
        "hit ratio tracked (99.7%)\n"
        "qed-l2-cache: the size is process-wide; for every cache reported so far set QED_L2_CACHE_SIZE=25\n"
        "qed-l2-cache: report for cache * (policy fifo, QED_L2_CACHE_SIZE=50): 7000 hits, 7000 misses*\n"
        "qed-l2-cache: cache *: table reads over 14000 finds by maximum size: 25: 7000 (50.0% hits); 50 (now): 7000 (50.0% hits); 75: 70 (99.5% hits)*\n"
        "qed-l2-cache: cache *: set QED_L2_CACHE_SIZE=75: *\n"
        "qed-l2-cache: the size is process-wide; for every cache reported so far set QED_L2_CACHE_SIZE=75\n");
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    for (unsigned w = 0; w < N_WORKLOADS; w++) {
        char *path = g_strdup_printf("/advisor/accuracy/%s", workload_names[w]);
        g_test_add_data_func(path, GUINT_TO_POINTER(w), test_accuracy);
        g_free(path);
    }
    g_test_add_func("/advisor/switch-and-restart", test_switch_and_restart);
    g_test_add_func("/advisor/smallest-cache", test_smallest_cache);
    g_test_add_func("/advisor/misuse", test_misuse);
    g_test_add_func("/advisor/report", test_report);
    return g_test_run();
}
