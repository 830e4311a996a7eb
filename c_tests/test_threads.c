/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Threads (docs/behaviour.md, "How QEMU calls it"): 8 threads each with its own cache (different images:
 * no caller lock; only the library's shared state is shared), then 8
 * threads sharing one cache under a caller mutex (QEMU's table_lock).
 * 1,000,000 operations in all, QED's read path, allocating writes,
 * duplicate commits, references held across many operations, close and
 * re-open, set_max_entries and set_policy, with reference counts, the list
 * and the tables checked as they go. Built and run under ThreadSanitizer
 * by tools/test-all (0 reports expected), and under valgrind with the rest
 * of the suite.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "helpers.h"

#define THREADS 8
#define OPS_PER_THREAD 62500 /* 8 x 62,500 x 2 phases = 1,000,000 */
#define MAX_HOLDS 8
#define CHECK_EVERY 128
#define SHARED_UNIVERSE 96

typedef struct {
    uint64_t s;
} Rng;

static uint64_t rng_next(Rng *r)
{
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 0x2545F4914F6CDD1Dull;
}

static unsigned below(Rng *r, unsigned n)
{
    return (unsigned)(((rng_next(r) >> 32) * n) >> 32);
}

typedef struct {
    unsigned id;
    Rng rng;
    L2TableCache *cache;
    pthread_mutex_t *lock; /* the caller's table lock; NULL: own cache */
    unsigned max, universe;
    CachedL2Table *holds[MAX_HOLDS]; /* references held across operations */
    unsigned n_holds;
    CachedL2Table *pending; /* allocated, read in flight, not committed */
    uint64_t fresh, finds, commits, ops, reopens;
} Worker;

static Worker workers[THREADS];

/* A small table: [0] offset, [1] ~offset (never change), [2] writes. */
static CachedL2Table *make_entry(L2TableCache *c, uint64_t offset)
{
    CachedL2Table *e = qed_alloc_l2_cache_entry(c);
    g_assert_nonnull(e);
    g_assert_cmpint(e->ref, ==, 1);
    uint64_t *t = aligned_alloc(64, 64);
    g_assert_nonnull(t);
    t[0] = offset;
    t[1] = ~offset;
    t[2] = 0;
    e->table = (QEDTable *)(void *)t;
    e->offset = offset;
    return e;
}

/* The table of an entry we hold is intact (it was not released under us). */
static void check_held(const CachedL2Table *e)
{
    g_assert_cmpuint(e->table->offsets[0], ==, e->offset);
    g_assert_cmpuint(e->table->offsets[1], ==, ~e->offset);
}

static uint64_t offset_in(Worker *w, unsigned k)
{
    /* Own caches: per-thread offsets; shared: one universe for everyone. */
    uint64_t base = w->lock ? 0 : (uint64_t)(w->id + 1) << 40;
    return base + (uint64_t)(k + 1) * 0x10000;
}

static void lock(Worker *w)
{
    if (w->lock) {
        g_assert_cmpint(pthread_mutex_lock(w->lock), ==, 0);
    }
}

static void unlock(Worker *w)
{
    if (w->lock) {
        g_assert_cmpint(pthread_mutex_unlock(w->lock), ==, 0);
    }
}

static CachedL2Table *find(Worker *w, uint64_t offset)
{
    w->finds++;
    CachedL2Table *e = qed_find_l2_cache_entry(w->cache, offset);
    if (e) {
        g_assert_cmpuint(e->offset, ==, offset);
        g_assert_cmpint(e->ref, >=, 2);
    }
    return e;
}

static void commit(Worker *w, CachedL2Table *e)
{
    w->commits++;
    qed_commit_l2_cache_entry(w->cache, e);
    if (w->cache->entries.tqh_circ.tql_prev != &e->node.tqe_circ) {
        return; /* a duplicate: e may be released, do not touch it */
    }
    /*
     * Inserted: eviction left at most max - 1 entries, or only entries in
     * use, so the cache grew past its maximum only for entries in use.
     */
    unsigned n = 0, in_use = 0;
    for (CachedL2Table *c = w->cache->entries.tqh_first; c; c = c->node.tqe_next) {
        n++;
        in_use += c->ref > 1;
    }
    g_assert_cmpuint(n, ==, w->cache->n_entries);
    g_assert_cmpuint(n, <=, MAX(w->max, in_use + 1));
}

/* Keep the reference for later, or drop it now. */
static void hold_or_drop(Worker *w, CachedL2Table *e)
{
    if (w->n_holds < MAX_HOLDS && below(&w->rng, 4) != 0) {
        w->holds[w->n_holds++] = e;
    } else {
        qed_unref_l2_cache_entry(e);
    }
}

static void drop_hold(Worker *w, unsigned i)
{
    CachedL2Table *e = w->holds[i];
    g_assert_cmpint(e->ref, >=, 1);
    w->holds[i] = w->holds[--w->n_holds];
    qed_unref_l2_cache_entry(e);
}

/* References to `e` held by requests (every worker on this cache). */
static int holds_of(L2TableCache *cache, const CachedL2Table *e)
{
    int n = 0;
    for (unsigned t = 0; t < THREADS; t++) {
        Worker *o = &workers[t];
        if (o->cache != cache) {
            continue;
        }
        for (unsigned i = 0; i < o->n_holds; i++) {
            n += o->holds[i] == e;
        }
        n += o->pending == e;
    }
    return n;
}

/*
 * Every link of the list, and every reference count exact: a cached entry
 * has the cache's reference plus the requests'; a held uncached one only
 * the requests'. Called with the lock held (when there is one).
 */
static void check_all(Worker *w)
{
    unsigned n = check_list(w->cache);
    for (CachedL2Table *e = w->cache->entries.tqh_first; e; e = e->node.tqe_next) {
        g_assert_cmpint(e->ref, ==, 1 + holds_of(w->cache, e));
        check_held(e);
    }
    for (unsigned t = 0; t < THREADS; t++) {
        Worker *o = &workers[t];
        if (o->cache != w->cache) {
            continue;
        }
        for (unsigned i = 0; i < o->n_holds; i++) {
            CachedL2Table *e = o->holds[i];
            gboolean cached = e->node.tqe_circ.tql_prev != NULL;
            g_assert_cmpint(e->ref, ==, (cached ? 1 : 0) + holds_of(w->cache, e));
        }
    }
    (void)n;
}

/* Exact counts of the entries this worker holds (own cache: every step). */
static void check_holds(Worker *w)
{
    for (unsigned h = 0; h < w->n_holds; h++) {
        CachedL2Table *e = w->holds[h];
        gboolean cached = e->node.tqe_circ.tql_prev != NULL;
        g_assert_cmpint(e->ref, ==, (cached ? 1 : 0) + holds_of(w->cache, e));
    }
}

/* QEMU's L2 lookup: drop the previous table, find, or alloc+read+commit+find. */
static void op_read_path(Worker *w)
{
    if (w->n_holds && below(&w->rng, 2)) {
        drop_hold(w, below(&w->rng, w->n_holds));
    }
    uint64_t offset = offset_in(w, below(&w->rng, w->universe));
    CachedL2Table *e = find(w, offset);
    if (!e) {
        e = make_entry(w->cache, offset);
        if (below(&w->rng, 16) == 0) {
            qed_unref_l2_cache_entry(e); /* read error: released */
            return;
        }
        commit(w, e);
        CachedL2Table *again = find(w, offset);
        g_assert_true(again == e);
    }
    hold_or_drop(w, e);
}

/* A new table at a new offset, held while updated in place (under the lock). */
static void op_allocating_write(Worker *w)
{
    uint64_t offset = ((uint64_t)(w->id + 1) << 44) + ++w->fresh * 0x10000;
    CachedL2Table *e = make_entry(w->cache, offset);
    commit(w, e);
    CachedL2Table *again = find(w, offset);
    g_assert_true(again == e);
    again->table->offsets[2]++;
    hold_or_drop(w, again);
}

/* A read that completes later: its commit may be a duplicate by then. */
static void op_pending(Worker *w)
{
    if (!w->pending) {
        w->pending = make_entry(w->cache, offset_in(w, below(&w->rng, w->universe)));
        return;
    }
    CachedL2Table *e = w->pending;
    w->pending = NULL;
    uint64_t offset = e->offset;
    commit(w, e); /* e may be gone now (duplicate): use the offset */
    CachedL2Table *cached = find(w, offset);
    g_assert_nonnull(cached);
    hold_or_drop(w, cached);
}

static void op_write_held(Worker *w)
{
    if (w->n_holds) {
        w->holds[below(&w->rng, w->n_holds)]->table->offsets[2]++;
    }
}

static void op_knobs(Worker *w)
{
    static const unsigned maxes[] = { 1, 2, 8, 50 };
    if (below(&w->rng, 2)) {
        qed_l2_cache_set_policy(w->cache, below(&w->rng, 3));
    } else {
        unsigned max = maxes[below(&w->rng, 4)];
        qed_l2_cache_set_max_entries(w->cache, max);
        for (unsigned t = 0; t < THREADS; t++) {
            if (workers[t].cache == w->cache) {
                workers[t].max = max; /* under the lock when shared */
            }
        }
    }
}

/* Close and re-open an image (own caches only): free, then init. */
static void op_reopen(Worker *w)
{
    for (unsigned i = 0; i < w->n_holds;) {
        if (w->holds[i]->node.tqe_circ.tql_prev != NULL) {
            drop_hold(w, i); /* requests on cached tables finish first */
        } else {
            i++;
        }
    }
    qed_free_l2_cache(w->cache);
    memset(w->cache, 0, sizeof(*w->cache));
    qed_init_l2_cache(w->cache);
    qed_l2_cache_set_max_entries(w->cache, w->max);
    qed_l2_cache_set_policy(w->cache, w->id % 3);
    w->reopens++;
}

static void *worker_main(void *arg)
{
    Worker *w = arg;
    for (unsigned i = 0; i < OPS_PER_THREAD; i++) {
        lock(w);
        unsigned k = below(&w->rng, 100);
        if (k < 40) {
            op_read_path(w);
        } else if (k < 60) {
            if (w->n_holds) {
                drop_hold(w, below(&w->rng, w->n_holds));
            }
        } else if (k < 70) {
            op_allocating_write(w);
        } else if (k < 80) {
            op_pending(w);
        } else if (k < 88) {
            CachedL2Table *e = find(w, offset_in(w, below(&w->rng, w->universe)));
            if (e) {
                hold_or_drop(w, e);
            }
        } else if (k < 95) {
            op_write_held(w);
        } else if (k < 99) {
            if (below(&w->rng, 8) == 0) {
                op_knobs(w);
            }
        } else if (!w->lock && below(&w->rng, 4) == 0) {
            op_reopen(w);
        }
        if (i % CHECK_EVERY == 0) {
            check_all(w);
        } else if (!w->lock) {
            check_holds(w);
        }
        unlock(w);
        /* Outside the lock: the tables we hold must stay intact. */
        for (unsigned h = 0; h < w->n_holds; h++) {
            check_held(w->holds[h]);
        }
        w->ops++;
    }
    return NULL;
}

static void run_workers(void)
{
    pthread_t tids[THREADS];
    for (unsigned t = 0; t < THREADS; t++) {
        g_assert_cmpint(pthread_create(&tids[t], NULL, worker_main, &workers[t]), ==, 0);
    }
    for (unsigned t = 0; t < THREADS; t++) {
        g_assert_cmpint(pthread_join(tids[t], NULL), ==, 0);
    }
}

/* After the threads: drop every reference, check the counters, free. */
static void finish(L2TableCache *cache, uint64_t *finds, uint64_t *commits)
{
    for (unsigned t = 0; t < THREADS; t++) {
        Worker *w = &workers[t];
        if (w->cache != cache) {
            continue;
        }
        g_assert_cmpuint(w->ops, ==, OPS_PER_THREAD);
        while (w->n_holds) {
            drop_hold(w, w->n_holds - 1);
        }
        if (w->pending) {
            qed_unref_l2_cache_entry(w->pending);
            w->pending = NULL;
        }
        *finds += w->finds;
        *commits += w->commits;
    }
    check_list(cache);
    for (CachedL2Table *e = cache->entries.tqh_first; e; e = e->node.tqe_next) {
        g_assert_cmpint(e->ref, ==, 1);
        check_held(e);
    }
    qed_free_l2_cache(cache);
    g_assert_cmpuint(check_list(cache), ==, 0);
}

static void test_own_caches(void)
{
    static const unsigned maxes[] = { 1, 2, 8, 50 };
    L2TableCache caches[THREADS];
    memset(caches, 0, sizeof(caches));
    memset(workers, 0, sizeof(workers));
    for (unsigned t = 0; t < THREADS; t++) {
        Worker *w = &workers[t];
        w->id = t;
        w->rng.s = 0x9E3779B97F4A7C15ull * (t + 1);
        w->cache = &caches[t];
        w->max = maxes[t % 4];
        w->universe = w->max * 2 + 4;
        qed_init_l2_cache(w->cache);
        qed_l2_cache_set_max_entries(w->cache, w->max);
        qed_l2_cache_set_policy(w->cache, t % 3);
    }
    run_workers();
    uint64_t reopens = 0;
    for (unsigned t = 0; t < THREADS; t++) {
        uint64_t finds = 0, commits = 0;
        reopens += workers[t].reopens;
        finish(&caches[t], &finds, &commits);
        g_assert_cmpuint(finds, >, 0);
    }
    g_assert_cmpuint(reopens, >, 0);
}

static void test_shared_cache(void)
{
    L2TableCache cache;
    pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
    memset(&cache, 0, sizeof(cache));
    memset(workers, 0, sizeof(workers));
    qed_init_l2_cache(&cache);
    qed_l2_cache_set_max_entries(&cache, 32);
    for (unsigned t = 0; t < THREADS; t++) {
        Worker *w = &workers[t];
        w->id = t;
        w->rng.s = 0xD1B54A32D192ED03ull * (t + 1);
        w->cache = &cache;
        w->lock = &table_lock;
        w->max = 32;
        w->universe = SHARED_UNIVERSE;
    }
    run_workers();
    uint64_t finds = 0, commits = 0;
    QedL2CacheStats s;
    qed_l2_cache_get_stats(&cache, &s);
    finish(&cache, &finds, &commits);
    /* One cache from init to here: its counters saw every call. */
    g_assert_cmpuint(s.hits + s.misses, ==, finds);
    g_assert_cmpuint(s.commits, ==, commits);
    g_assert_cmpuint(s.duplicate_commits, >, 0);
    g_assert_cmpuint(s.evictions, >, 0);
    pthread_mutex_destroy(&table_lock);
}

/*
 * Threads initialising, using and freeing caches at once, each call made
 * with a wrong slot hint in the struct's padding (a caller's store may
 * change padding): the hint then names a slot another thread is freeing
 * or re-initialising at that moment. The library must still find each
 * thread's own cache (through its address map) and never read another
 * cache's state; ThreadSanitizer checks the second part.
 */
#define CHURN_THREADS 4
#define CHURN_ROUNDS 3000

static void *churn_main(void *arg)
{
    Rng r = { 0x9e3779b97f4a7c15ull ^ (uintptr_t)arg };
    for (unsigned round = 0; round < CHURN_ROUNDS; round++) {
        L2TableCache *c = g_malloc0(sizeof(*c));
        qed_init_l2_cache(c);
        for (unsigned i = 0; i < 3; i++) {
            qed_commit_l2_cache_entry(c, make_entry(c, table_offset(i)));
        }
        /* A small number: most likely the slot of another thread's cache. */
        uint32_t hint = 1 + below(&r, 2 * CHURN_THREADS);
        memcpy((char *)c + 20, &hint, sizeof(hint));
        CachedL2Table *e = qed_find_l2_cache_entry(c, table_offset(below(&r, 3)));
        g_assert_nonnull(e);
        g_assert_cmpint(e->ref, ==, 2);
        qed_unref_l2_cache_entry(e);
        g_assert_cmpuint(c->n_entries, ==, 3);
        qed_free_l2_cache(c);
        g_free(c);
    }
    return NULL;
}

static void test_churn_with_stale_hints(void)
{
    pthread_t t[CHURN_THREADS];
    for (uintptr_t i = 0; i < CHURN_THREADS; i++) {
        g_assert_cmpint(pthread_create(&t[i], NULL, churn_main, (void *)(i + 1)), ==, 0);
    }
    for (unsigned i = 0; i < CHURN_THREADS; i++) {
        g_assert_cmpint(pthread_join(t[i], NULL), ==, 0);
    }
}

/*
 * One thread looks up (find + unref) entries another thread allocated,
 * which it checks in the other threads' ledgers without a lock, while a
 * third thread allocates and releases entries in batches, so that its
 * ledger's live table is rebuilt over and over. A reader must never see a
 * replaced table freed under it (found by an adversarial tester: the
 * table's header was freed at once, only its slots deferred; this test
 * crashed in 10 of 10 runs then). No misuse anywhere.
 */
#define LEDGER_ENTRIES 5000
#define LEDGER_GROW_ROUNDS 2000

typedef struct {
    L2TableCache cache;
    atomic_int phase, stop;
    uint64_t lookups;
} LedgerRace;

static void *ledger_race_creator(void *arg)
{
    LedgerRace *lr = arg;
    qed_init_l2_cache(&lr->cache);
    qed_l2_cache_set_max_entries(&lr->cache, LEDGER_ENTRIES + 10);
    for (unsigned i = 0; i < LEDGER_ENTRIES; i++) {
        qed_commit_l2_cache_entry(&lr->cache, make_entry(&lr->cache, table_offset(i)));
    }
    atomic_store(&lr->phase, 1);
    /* Stays alive: its ledger, which holds the cache's entries, must stay
     * its own rather than be taken over by the next new thread. */
    while (!atomic_load(&lr->stop)) {
        g_usleep(1000);
    }
    return NULL;
}

static void *ledger_race_grower(void *arg)
{
    LedgerRace *lr = arg;
    CachedL2Table *e[300];
    while (atomic_load(&lr->phase) < 2) {
        sched_yield();
    }
    for (unsigned r = 0; r < LEDGER_GROW_ROUNDS; r++) {
        unsigned n = 20 + r % 280;
        for (unsigned i = 0; i < n; i++) {
            e[i] = qed_alloc_l2_cache_entry(NULL);
        }
        for (unsigned i = 0; i < n; i++) {
            qed_unref_l2_cache_entry(e[i]);
        }
    }
    atomic_store(&lr->stop, 1);
    return NULL;
}

static void *ledger_race_user(void *arg)
{
    LedgerRace *lr = arg;
    Rng r = { 12345 };
    /* This thread's own ledger exists before the grower's does. */
    qed_unref_l2_cache_entry(qed_alloc_l2_cache_entry(NULL));
    atomic_store(&lr->phase, 2);
    while (!atomic_load(&lr->stop)) {
        CachedL2Table *e = qed_find_l2_cache_entry(&lr->cache, table_offset(below(&r, LEDGER_ENTRIES)));
        g_assert_nonnull(e);
        g_assert_cmpint(e->ref, ==, 2);
        qed_unref_l2_cache_entry(e);
        lr->lookups++;
    }
    return NULL;
}

static void test_lookups_while_another_ledger_grows(void)
{
    for (unsigned round = 0; round < 3; round++) {
        LedgerRace *lr = g_new0(LedgerRace, 1);
        pthread_t creator, grower, user;
        g_assert_cmpint(pthread_create(&creator, NULL, ledger_race_creator, lr), ==, 0);
        while (atomic_load(&lr->phase) < 1) {
            sched_yield();
        }
        /* The grower's ledger is the newest, so the user searches it first
         * for the creator's entries. */
        g_assert_cmpint(pthread_create(&user, NULL, ledger_race_user, lr), ==, 0);
        while (atomic_load(&lr->phase) < 2) {
            sched_yield();
        }
        g_assert_cmpint(pthread_create(&grower, NULL, ledger_race_grower, lr), ==, 0);
        g_assert_cmpint(pthread_join(grower, NULL), ==, 0);
        g_assert_cmpint(pthread_join(user, NULL), ==, 0);
        g_assert_cmpint(pthread_join(creator, NULL), ==, 0);
        g_assert_cmpuint(lr->lookups, >, 0);
        g_assert_cmpuint(lr->cache.n_entries, ==, LEDGER_ENTRIES);
        qed_free_l2_cache(&lr->cache);
        g_free(lr);
    }
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/threads/own-caches", test_own_caches);
    g_test_add_func("/threads/churn-with-stale-hints", test_churn_with_stale_hints);
    g_test_add_func("/threads/shared-cache-under-caller-lock", test_shared_cache);
    g_test_add_func("/threads/lookups-while-another-ledger-grows", test_lookups_while_another_ledger_grows);
    return g_test_run();
}
