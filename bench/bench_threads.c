/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Thread scaling: the library against the original C algorithm
 * (bench/baseline.c) in one run. T = 1 .. the machine's cores threads, each
 * with a cache of its own (different images, as QEMU's iothreads have), the
 * QED read path on every request: drop the previous table (unref), find;
 * on a miss alloc, a table, commit, find again.
 *
 *   hit mix:  50 tables at capacity 50 (every find hits);
 *   miss mix: 100 tables at capacity 50, uniform (half the finds miss:
 *             alloc, commit, eviction and release on every miss).
 *
 * Total Mops/s, median of 3 runs of >= 200 ms per thread count; speedup is
 * against the same side at T = 1. Targets (miss mix): the library's
 * speedup >= 0.8x the C's at every T, and each thread at least as fast as
 * a C thread (library/C throughput >= 1).
 *   meson test -C build-bench --benchmark --verbose threads
 *   (or build-bench/bench/bench-threads [max-threads] [--processes])
 *
 * --processes runs the T workers as T processes (fork) instead of T
 * threads of one process: nothing of the library is shared between them
 * then (each has its own copy of every table the library keeps), so a
 * scaling loss that remains with processes comes from the machine (cores,
 * caches, memory, the hypervisor), not from state the library shares.
 */
#include <pthread.h>
#include <stdbool.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "baseline.h"
#include "bench_util.h"
#include "qed_l2_cache.h"

#define CAPACITY 50
#define RUNS 3
#define MAX_THREADS 64

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}


static uint64_t table_off(uint64_t i)
{
    return 0x100000ull + i * 0x40000ull;
}

typedef struct {
    void (*init)(L2TableCache *);
    void (*free_cache)(L2TableCache *);
    CachedL2Table *(*alloc)(L2TableCache *);
    void (*unref)(CachedL2Table *);
    CachedL2Table *(*find)(L2TableCache *, uint64_t);
    void (*commit)(L2TableCache *, CachedL2Table *);
    const char *name;
} Side;

static const Side sides[2] = {
    { base_init_l2_cache, base_free_l2_cache, base_alloc_l2_cache_entry, base_unref_l2_cache_entry,
      base_find_l2_cache_entry, base_commit_l2_cache_entry, "C" },
    { qed_init_l2_cache, qed_free_l2_cache, qed_alloc_l2_cache_entry, qed_unref_l2_cache_entry,
      qed_find_l2_cache_entry, qed_commit_l2_cache_entry, "library" },
};

typedef struct {
    const Side *side;
    unsigned tables;
    uint64_t ops;
    pthread_barrier_t *start;
    double elapsed_ns;
    uint64_t misses;
    char pad[64];
} Job;

static void *run_job(void *arg)
{
    Job *j = arg;
    const Side *s = j->side;
    L2TableCache c;
    memset(&c, 0, sizeof(c));
    s->init(&c);
    uint64_t x = 0x2545F4914F6CDD1Dull ^ (uintptr_t)j;
    CachedL2Table *held = NULL;
    uint64_t misses = 0;
    pthread_barrier_wait(j->start);
    double t0 = now_ns();
    for (uint64_t i = 0; i < j->ops; i++) {
        uint64_t off = table_off(pick(&x, j->tables));
        s->unref(held);
        CachedL2Table *e = s->find(&c, off);
        if (!e) {
            misses++;
            e = s->alloc(&c);
            e->table = malloc(64);
            e->offset = off;
            s->commit(&c, e);
            e = s->find(&c, off);
        }
        held = e;
    }
    j->elapsed_ns = now_ns() - t0;
    s->unref(held);
    s->free_cache(&c);
    j->misses = misses;
    return NULL;
}

static bool use_processes;

/* What the workers of one run share: in memory mapped shared when they are
 * processes. */
typedef struct {
    pthread_barrier_t start;
    Job jobs[MAX_THREADS];
} Shared;

/* Total Mops/s of `threads` workers, each doing `ops` requests. */
static double run(const Side *s, unsigned threads, unsigned tables, uint64_t ops)
{
    pthread_t t[MAX_THREADS];
    Shared *sh = mmap(NULL, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    pthread_barrierattr_t attr;
    pthread_barrierattr_init(&attr);
    pthread_barrierattr_setpshared(&attr, use_processes ? PTHREAD_PROCESS_SHARED : PTHREAD_PROCESS_PRIVATE);
    pthread_barrier_init(&sh->start, &attr, threads);
    pthread_barrierattr_destroy(&attr);
    pid_t pids[MAX_THREADS] = { 0 };
    for (unsigned i = 0; i < threads; i++) {
        sh->jobs[i] = (Job){ .side = s, .tables = tables, .ops = ops, .start = &sh->start };
        if (use_processes) {
            pids[i] = fork();
            if (pids[i] < 0) {
                perror("fork");
                exit(2);
            }
            if (pids[i] == 0) {
                run_job(&sh->jobs[i]);
                _exit(0);
            }
        } else if (pthread_create(&t[i], NULL, run_job, &sh->jobs[i]) != 0) {
            perror("pthread_create");
            exit(2);
        }
    }
    double slowest = 0;
    for (unsigned i = 0; i < threads; i++) {
        if (use_processes) {
            int status;
            if (waitpid(pids[i], &status, 0) != pids[i] || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                fprintf(stderr, "bench-threads: worker process %u failed\n", i);
                exit(2);
            }
        } else {
            pthread_join(t[i], NULL);
        }
        if (sh->jobs[i].elapsed_ns > slowest) {
            slowest = sh->jobs[i].elapsed_ns;
        }
    }
    pthread_barrier_destroy(&sh->start);
    munmap(sh, sizeof(Shared));
    return (double)ops * threads / slowest * 1e3;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median_run(const Side *s, unsigned threads, unsigned tables, uint64_t ops)
{
    double r[RUNS];
    for (int i = 0; i < RUNS; i++) {
        r[i] = run(s, threads, tables, ops);
    }
    qsort(r, RUNS, sizeof(r[0]), cmp_double);
    return r[RUNS / 2];
}

/* Requests per thread so one run lasts about 200 ms on this side. */
static uint64_t calibrate(const Side *s, unsigned tables)
{
    uint64_t ops = 10000;
    for (;;) {
        double t0 = now_ns();
        run(s, 1, tables, ops);
        double dt = now_ns() - t0;
        if (dt > 50e6) {
            return (uint64_t)((double)ops * 200e6 / dt);
        }
        ops *= 4;
    }
}

int main(int argc, char **argv)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    unsigned max_threads = (unsigned)(cores > 0 ? cores : 1);
    for (int a = 1; a < argc; a++) {
        if (strcmp(argv[a], "--processes") == 0) {
            use_processes = true;
        } else {
            max_threads = (unsigned)atoi(argv[a]);
        }
    }
    if (max_threads < 1 || max_threads > MAX_THREADS) {
        fprintf(stderr, "bench-threads: thread count must be 1..%d\n", MAX_THREADS);
        return 2;
    }
    base_max_entries = CAPACITY;
    printf("qed-l2-cache %s thread scaling vs the original C algorithm; %ld cores online,\n"
           "T = 1..%u %s, one cache each, capacity %d, median of %d runs\n\n",
           qed_l2_cache_version(), cores, max_threads, use_processes ? "processes" : "threads", CAPACITY,
           RUNS);
    static const struct {
        const char *name;
        unsigned tables;
    } mixes[2] = { { "hit mix (50 tables)", 50 }, { "miss mix (100 tables, half the finds miss)", 100 } };
    for (int m = 0; m < 2; m++) {
        uint64_t ops[2] = { calibrate(&sides[0], mixes[m].tables), calibrate(&sides[1], mixes[m].tables) };
        printf("## %s\n\n", mixes[m].name);
        printf("| T | C Mops/s | library Mops/s | C speedup | library speedup | "
               "library/C speedup | library/C per thread |\n");
        printf("|---:|---:|---:|---:|---:|---:|---:|\n");
        double one[2] = { 0, 0 };
        for (unsigned t = 1; t <= max_threads; t++) {
            double c = median_run(&sides[0], t, mixes[m].tables, ops[0]);
            double l = median_run(&sides[1], t, mixes[m].tables, ops[1]);
            if (t == 1) {
                one[0] = c;
                one[1] = l;
            }
            double sc = c / one[0], sl = l / one[1];
            printf("| %u | %.2f | %.2f | %.2fx | %.2fx | %.3f | %.3f |%s\n", t, c, l, sc, sl, sl / sc,
                   l / c,
                   m == 1 && (sl / sc < 0.8 || l / c < 1.0) ? " below target" : "");
            fflush(stdout);
        }
        printf("\n");
    }
    return 0;
}
