/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Auto-sized caches against every fixed size (docs/sizing.md): QEMU's read
 * path (find; on a miss alloc, a real 256 KiB table from
 * posix_memalign(4096, ...), commit, find again; unref) replayed over
 * deterministic workloads, learning included. For each workload the same
 * lookups run on an auto cache and on fixed caches of sizes up to the auto
 * cap, and the targets are checked:
 *   - the auto cache's hit ratio (first finds that hit, over the run; over
 *     phase 2 for the phase change) within 2 points of the best fixed size;
 *   - the tables it holds at the end at most 1.25x the smallest fixed size
 *     within 1 point of the best (at most 30 after the phase change).
 * It prints one line per workload (the figures BENCHMARKS.md quotes) and
 * exits 1 if a target is missed.
 *
 * --fixed runs the "auto" cache as a fixed cache of the default 50 tables
 * instead: the same checks must then fail (meson runs it so, should_fail),
 * which shows they can.
 */
#include <inttypes.h>
#include <string.h>

#include "replay.h"

#define CAP_BYTES (32ull << 20)

static int fixed_only;

typedef struct {
    uint64_t state;
    unsigned kind, n, phase_len;
    double *zipf_cdf;
    uint64_t i;
} Workload;

enum { HOT, ZIPF, UNIFORM, LOOP, PHASE };

/* Table number of the i-th lookup. */
static unsigned next_table(Workload *w)
{
    uint64_t i = w->i++;
    switch (w->kind) {
    case HOT: /* 90% on 30 hot tables, 10% on 170 others */
        if (unit(&w->state) < 0.9) {
            return next_rand(&w->state) % 30;
        }
        return 30 + next_rand(&w->state) % 170;
    case ZIPF: /* Zipf, exponent 0.9, over 1,000 tables */
        return zipf_pick(w->zipf_cdf, w->n, &w->state);
    case UNIFORM: /* uniform over 200 tables */
        return next_rand(&w->state) % 200;
    case LOOP: /* a loop over 120 tables */
        return i % 120;
    default: /* 100 tables uniform, then 20 others */
        if (i < w->phase_len) {
            return next_rand(&w->state) % 100;
        }
        return 1000 + next_rand(&w->state) % 20;
    }
}

typedef struct {
    uint64_t lookups, hits;         /* over the run (phase 2 for PHASE) */
    unsigned end_entries, end_target;
    uint64_t peak_entries;
} Result;

static const char *names[] = {"hot set", "zipf 0.9", "uniform", "loop 120", "phase change"};
static const uint64_t lengths[] = {400000, 400000, 400000, 400000, 600000};

static Result run(unsigned kind, int auto_mode, unsigned size, double *cdf)
{
    Workload w = {.state = 42 + kind, .kind = kind, .n = 1000, .phase_len = 300000, .zipf_cdf = cdf};
    L2TableCache cache;
    Result r = {0};

    memset(&cache, 0, sizeof(cache));
    qed_init_l2_cache(&cache);
    if (auto_mode) {
        qed_l2_cache_set_auto(&cache, 1);
    } else {
        qed_l2_cache_set_max_entries(&cache, size);
    }
    for (uint64_t i = 0; i < lengths[kind]; i++) {
        uint64_t offset = ((uint64_t)next_table(&w) + 1) << 20;
        int hit = !replay_lookup(&cache, offset, 1);
        if (kind != PHASE || i >= w.phase_len) {
            r.lookups++;
            r.hits += hit;
        }
    }
    QedL2CacheStats s;
    qed_l2_cache_get_stats(&cache, &s);
    r.end_entries = cache.n_entries;
    r.end_target = qed_l2_cache_get_target(&cache);
    r.peak_entries = s.peak_entries;
    qed_free_l2_cache(&cache);
    return r;
}

static double ratio(Result r)
{
    return 100.0 * (double)r.hits / (double)r.lookups;
}

int main(int argc, char **argv)
{
    int failed = 0;
    fixed_only = argc > 1 && strcmp(argv[1], "--fixed") == 0;
    replay_malloc_setup();
    unsigned cap = CAP_BYTES / replay_table_cost(); /* the auto cap, as the library counts it */
    double *cdf = malloc(1000 * sizeof(*cdf));
    zipf_init(cdf, 1000, 0.9);

    printf("auto cap: %u tables of %u KiB\n", cap, TABLE_BYTES >> 10);
    printf("%-13s %8s %6s %8s %8s %6s %6s %5s\n", "workload", "auto%", "tables", "best%", "at", "near",
           "peak", "ok");
    for (unsigned kind = HOT; kind <= PHASE; kind++) {
        /* Fixed sizes: every 5th up to the cap, and the cap; then the
         * smallest within 1 point of the best, one by one below the first
         * grid size within it. */
        double best = -1;
        unsigned best_at = 0;
        double grid[200];
        unsigned grid_n = 0, sizes[200];
        for (unsigned s = 5;; s += 5) {
            unsigned size = s < cap ? s : cap;
            Result f = run(kind, 0, size, cdf);
            grid[grid_n] = ratio(f);
            sizes[grid_n++] = size;
            if (grid[grid_n - 1] > best) {
                best = grid[grid_n - 1];
                best_at = size;
            }
            if (size == cap) {
                break;
            }
        }
        unsigned near = cap;
        for (unsigned g = 0; g < grid_n; g++) {
            if (grid[g] >= best - 1.0) {
                near = sizes[g];
                for (unsigned size = near - 1; size > (g ? sizes[g - 1] : 0); size--) {
                    if (ratio(run(kind, 0, size, cdf)) < best - 1.0) {
                        break;
                    }
                    near = size;
                }
                break;
            }
        }
        Result a = fixed_only ? run(kind, 0, 50, cdf) : run(kind, 1, 0, cdf);
        double limit = kind == PHASE ? 30 : 1.25 * near;
        int ok = ratio(a) >= best - 2.0 && a.end_entries <= limit;
        printf("%-13s %7.2f%% %6u %7.2f%% %8u %6u %6" PRIu64 " %5s\n", names[kind], ratio(a), a.end_entries,
               best, best_at, near, a.peak_entries, ok ? "yes" : "NO");
        if (!ok) {
            printf("FAIL %s: hit ratio %.2f%% (target >= %.2f%%), %u tables at the end (target <= %.1f)\n",
                   names[kind], ratio(a), best - 2.0, a.end_entries, limit);
            failed = 1;
        }
    }
    free(cdf);
    return failed;
}
