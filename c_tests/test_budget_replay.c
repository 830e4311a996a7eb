/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Eight auto caches under one memory budget (docs/sizing.md, "Sharing one
 * budget"): QEMU's read path (find; on a miss alloc, a real 256 KiB table
 * from posix_memalign(4096, ...), commit, find again; unref), eight
 * workloads with different curves and rates interleaved deterministically,
 * a budget well below what they need together.
 *
 * Offline, each workload's lookups are replayed alone on fixed caches of
 * every size from 1 up to the budget (hit counts do not depend on table
 * memory, so these replays commit entries without tables), which gives each
 * one's exact miss curve; a dynamic program over the curves gives the best
 * static split of the budget, and the equal split is budget / 8 each. The
 * checks:
 *   - the mix is one where the best split saves at least 20% of the equal
 *     split's misses (else the test proves nothing);
 *   - the auto caches, learning included, save at least 90% of that;
 *   - after every lookup, their tables (counted as the library counts them:
 *     usable size + 160 bytes each) fit in the budget.
 *
 * --no-rebalance runs the eight caches fixed at the equal split instead:
 * the same checks must then fail (meson runs it so, should_fail).
 */
#include <inttypes.h>
#include <string.h>

#include "replay.h"

#define CACHES 8
#define LOOKUPS 800000u
#define BUDGET_TABLES 400u

enum kind { LOOP, HOT, UNIFORM, ZIPF };

static const struct {
    const char *name;
    enum kind kind;
    unsigned n;      /* tables (loop length, universe) */
    unsigned hot;    /* HOT: hot tables, 90% of lookups */
    unsigned weight; /* share of the process's lookups */
} mix[CACHES] = {
    {"loop 120", LOOP, 120, 0, 3},   {"hot 30/200", HOT, 200, 30, 3},   {"uniform 200", UNIFORM, 200, 0, 1},
    {"zipf 1000", ZIPF, 1000, 0, 2}, {"loop 40", LOOP, 40, 0, 1},       {"uniform 60", UNIFORM, 60, 0, 2},
    {"hot 10/100", HOT, 100, 10, 2}, {"loop 300", LOOP, 300, 0, 1},
};

static double zipf_cdf[1000];

/* The next table of cache c (its own stream). */
static unsigned next_table(unsigned c, uint64_t *state, uint64_t *count)
{
    uint64_t i = (*count)++;
    switch (mix[c].kind) {
    case LOOP:
        return i % mix[c].n;
    case HOT:
        if (unit(state) < 0.9) {
            return next_rand(state) % mix[c].hot;
        }
        return mix[c].hot + next_rand(state) % (mix[c].n - mix[c].hot);
    case UNIFORM:
        return next_rand(state) % mix[c].n;
    default:
        return zipf_pick(zipf_cdf, mix[c].n, state);
    }
}

/* The whole interleaved trace: cache and table of each lookup. */
static uint8_t trace_cache[LOOKUPS];
static uint16_t trace_table[LOOKUPS];

static void make_trace(void)
{
    uint64_t pick = 1, states[CACHES], counts[CACHES] = {0};
    unsigned total = 0;
    for (unsigned c = 0; c < CACHES; c++) {
        states[c] = 1000 + c;
        total += mix[c].weight;
    }
    for (unsigned i = 0; i < LOOKUPS; i++) {
        unsigned r = next_rand(&pick) % total, c = 0;
        while (r >= mix[c].weight) {
            r -= mix[c].weight;
            c++;
        }
        trace_cache[i] = c;
        trace_table[i] = next_table(c, &states[c], &counts[c]);
    }
}

static uint64_t offset_of(unsigned c, unsigned t)
{
    return ((uint64_t)c << 40) + (((uint64_t)t + 1) << 20);
}

/* Each cache's own lookups, in order. */
static uint16_t own[CACHES][LOOKUPS];
static unsigned own_n[CACHES];

/* Exact misses of cache c's lookups alone on a fixed cache of size s. */
static uint64_t fixed_misses(unsigned c, unsigned size)
{
    L2TableCache cache;
    uint64_t misses = 0;
    memset(&cache, 0, sizeof(cache));
    qed_init_l2_cache(&cache);
    qed_l2_cache_set_max_entries(&cache, size);
    for (unsigned i = 0; i < own_n[c]; i++) {
        misses += replay_lookup(&cache, offset_of(c, own[c][i]), 0);
    }
    qed_free_l2_cache(&cache);
    return misses;
}

static uint64_t curve[CACHES][BUDGET_TABLES + 1];

int main(int argc, char **argv)
{
    int no_rebalance = argc > 1 && strcmp(argv[1], "--no-rebalance") == 0;
    int failed = 0;
    replay_malloc_setup();
    zipf_init(zipf_cdf, 1000, 0.9);
    make_trace();
    for (unsigned i = 0; i < LOOKUPS; i++) {
        own[trace_cache[i]][own_n[trace_cache[i]]++] = trace_table[i];
    }

    uint64_t per_table = replay_table_cost();
    uint64_t budget = BUDGET_TABLES * per_table;

    /* Exact curves, sizes 1..BUDGET_TABLES (past a workload's tables the
     * curve is flat). */
    for (unsigned c = 0; c < CACHES; c++) {
        unsigned top = mix[c].n < BUDGET_TABLES ? mix[c].n : BUDGET_TABLES;
        for (unsigned s = 1; s <= BUDGET_TABLES; s++) {
            curve[c][s] = s <= top ? fixed_misses(c, s) : curve[c][top];
        }
    }
    /* Best static split: dp[c][t] = fewest misses of caches 0..c with t
     * tables, each at least one. */
    static uint64_t dp[CACHES][BUDGET_TABLES + 1];
    static unsigned choice[CACHES][BUDGET_TABLES + 1];
    for (unsigned t = 0; t <= BUDGET_TABLES; t++) {
        dp[0][t] = t >= 1 ? curve[0][t] : UINT64_MAX;
        choice[0][t] = t;
    }
    for (unsigned c = 1; c < CACHES; c++) {
        for (unsigned t = 0; t <= BUDGET_TABLES; t++) {
            dp[c][t] = UINT64_MAX;
            for (unsigned s = 1; s < t; s++) {
                if (dp[c - 1][t - s] != UINT64_MAX && dp[c - 1][t - s] + curve[c][s] < dp[c][t]) {
                    dp[c][t] = dp[c - 1][t - s] + curve[c][s];
                    choice[c][t] = s;
                }
            }
        }
    }
    unsigned best_split[CACHES];
    for (unsigned c = CACHES, t = BUDGET_TABLES; c-- > 0;) {
        best_split[c] = choice[c][t];
        t -= best_split[c];
    }
    uint64_t best = dp[CACHES - 1][BUDGET_TABLES], equal = 0;
    for (unsigned c = 0; c < CACHES; c++) {
        equal += curve[c][BUDGET_TABLES / CACHES];
    }

    /* The run: auto caches under the budget (or fixed equal shares). */
    L2TableCache caches[CACHES];
    uint64_t misses[CACHES] = {0}, lookups[CACHES] = {0}, total = 0, over = 0;
    unsigned peak_sum = 0;
    if (!no_rebalance) {
        qed_l2_cache_set_memory_budget(budget);
    }
    for (unsigned c = 0; c < CACHES; c++) {
        memset(&caches[c], 0, sizeof(caches[c]));
        qed_init_l2_cache(&caches[c]);
        qed_l2_cache_set_max_entries(&caches[c], BUDGET_TABLES / CACHES);
        if (!no_rebalance) {
            qed_l2_cache_set_auto(&caches[c], 1);
        }
    }
    for (unsigned i = 0; i < LOOKUPS; i++) {
        unsigned c = trace_cache[i];
        int m = replay_lookup(&caches[c], offset_of(c, trace_table[i]), 1);
        misses[c] += m;
        lookups[c]++;
        total += m;
        unsigned held = 0;
        for (unsigned k = 0; k < CACHES; k++) {
            held += caches[k].n_entries;
        }
        if (held > peak_sum) {
            peak_sum = held;
        }
        if (held * per_table > budget) {
            over++;
        }
    }

    printf("budget: %u tables of %" PRIu64 " bytes (%" PRIu64 " KiB)\n", BUDGET_TABLES, per_table, budget >> 10);
    printf("%-12s %6s %8s %9s %6s %9s %8s %9s\n", "cache", "weight", "lookups", "equal", "best", "best-miss",
           "auto", "auto-miss");
    for (unsigned c = 0; c < CACHES; c++) {
        printf("%-12s %6u %8" PRIu64 " %9" PRIu64 " %6u %9" PRIu64 " %8u %9" PRIu64 "\n", mix[c].name,
               mix[c].weight, lookups[c], curve[c][BUDGET_TABLES / CACHES], best_split[c],
               curve[c][best_split[c]], qed_l2_cache_get_target(&caches[c]), misses[c]);
    }
    double best_saving = (double)(equal - best) / (double)equal;
    double got = equal > total ? (double)(equal - total) / (double)(equal - best) : 0.0;
    printf("misses: equal split %" PRIu64 ", best split %" PRIu64 " (saves %.1f%%), %s %" PRIu64
           " (%.1f%% of the best saving); most tables held at once %u; lookups over budget %" PRIu64 "\n",
           equal, best, 100 * best_saving, no_rebalance ? "fixed equal" : "auto", total, 100 * got, peak_sum,
           over);
    if (best_saving < 0.20) {
        printf("FAIL the mix: the best split saves only %.1f%% of the equal split's misses\n", 100 * best_saving);
        failed = 1;
    }
    if (got < 0.90) {
        printf("FAIL saving: %.1f%% of the best split's saving (target >= 90%%)\n", 100 * got);
        failed = 1;
    }
    if (over) {
        printf("FAIL budget: %" PRIu64 " lookups ended with more tables than the budget holds\n", over);
        failed = 1;
    }
    for (unsigned c = 0; c < CACHES; c++) {
        qed_free_l2_cache(&caches[c]);
    }
    return failed;
}
