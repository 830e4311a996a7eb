/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The drop-in test. This file includes no header of the project: it
 * declares the types, the queue macros and the six functions itself, the
 * way a QEMU block driver's qed.h and queue.h do, embeds the cache by value
 * between two canaries, and after every call walks the list with its own
 * macros, checking every link rule of docs/behaviour.md, "The list" and n_entries.
 */
#include <glib.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- the caller's queue.h: a tail queue with a circular back link ---- */

typedef struct QTailQLink {
    void *tql_next;               /* next element, NULL at the tail */
    struct QTailQLink *tql_prev;  /* link of the previous element (or of the head) */
} QTailQLink;

/* A head: the first element, overlaid with a link whose tql_prev names the last. */
#define QTAILQ_HEAD(tag, T) \
    union tag {             \
        struct T *tqh_first; \
        QTailQLink tqh_circ; \
    }

/* An element's link: the next element, overlaid with the circular link. */
#define QTAILQ_ENTRY(T)      \
    union {                  \
        struct T *tqe_next;  \
        QTailQLink tqe_circ; \
    }

#define QTAILQ_FIRST(h) ((h)->tqh_first)
#define QTAILQ_NEXT(e, f) ((e)->f.tqe_next)
#define QTAILQ_IN_USE(e, f) ((e)->f.tqe_circ.tql_prev != NULL)
/*
 * Going backwards: a link's tql_prev is the link before it; that one's
 * tql_prev is the link before that, whose tql_next is the element wanted.
 */
#define QTAILQ_BACK2(link) ((link).tql_prev->tql_prev->tql_next)
#define QTAILQ_LAST(h) ((__typeof__((h)->tqh_first))QTAILQ_BACK2((h)->tqh_circ))
#define QTAILQ_PREV(e, f) ((__typeof__((e)->f.tqe_next))QTAILQ_BACK2((e)->f.tqe_circ))
#define QTAILQ_FOREACH(v, h, f) for ((v) = QTAILQ_FIRST(h); (v) != NULL; (v) = QTAILQ_NEXT(v, f))
#define QTAILQ_FOREACH_REVERSE(v, h, f) for ((v) = QTAILQ_LAST(h); (v) != NULL; (v) = QTAILQ_PREV(v, f))

/* ---- the caller's qed.h ---- */

typedef struct {
    uint64_t offsets[0];  /* cluster offsets, in bytes */
} QEDTable;

typedef struct CachedL2Table {
    QEDTable *table;
    uint64_t offset;  /* 0: not valid yet */
    QTAILQ_ENTRY(CachedL2Table) node;
    int ref;
} CachedL2Table;

typedef struct {
    QTAILQ_HEAD(, CachedL2Table) entries;
    unsigned int n_entries;
} L2TableCache;

void qed_init_l2_cache(L2TableCache *l2_cache);
void qed_free_l2_cache(L2TableCache *l2_cache);
CachedL2Table *qed_alloc_l2_cache_entry(L2TableCache *l2_cache);
void qed_unref_l2_cache_entry(CachedL2Table *entry);
CachedL2Table *qed_find_l2_cache_entry(L2TableCache *l2_cache, uint64_t offset);
void qed_commit_l2_cache_entry(L2TableCache *l2_cache, CachedL2Table *l2_table);

/* ---- the caller's per-image state, with the cache embedded by value ---- */

#define CANARY UINT64_C(0x5EED0F0DDBA11CA7)
#define MAX_CACHE 50 /* QEMU's MAX_L2_CACHE_SIZE, the library's default */
#define TABLE_BYTES 4096

typedef struct {
    uint64_t before;
    L2TableCache l2_cache;
    uint64_t after;
} FakeQEDState;

_Static_assert(sizeof(QTailQLink) == 16, "QTailQLink");
_Static_assert(sizeof(CachedL2Table) == 40, "CachedL2Table");
_Static_assert(offsetof(CachedL2Table, node) == 16, "node");
_Static_assert(offsetof(CachedL2Table, ref) == 32, "ref");
_Static_assert(sizeof(L2TableCache) == 24, "L2TableCache");
_Static_assert(offsetof(L2TableCache, n_entries) == 16, "n_entries");
_Static_assert(offsetof(FakeQEDState, after) == 32, "after follows the tail padding");

static FakeQEDState *state_new(void)
{
    FakeQEDState *s = g_malloc(sizeof(*s));
    memset(s, 0xA5, sizeof(*s)); /* garbage, as a fresh g_malloc may hold */
    s->before = CANARY;
    s->after = CANARY;
    return s;
}

static uint64_t off(unsigned i)
{
    return (uint64_t)(i + 1) << 16;
}

/*
 * Walks the list forwards and backwards with the caller's macros and checks
 * every rule of docs/behaviour.md, "The list", n_entries and the canaries. Stores the elements in
 * list order in out[0..max) (when out is not NULL); returns their number.
 */
static unsigned walk(FakeQEDState *s, CachedL2Table **out, unsigned max)
{
    L2TableCache *c = &s->l2_cache;
    GPtrArray *seen = g_ptr_array_new();
    QTailQLink *prev_link = &c->entries.tqh_circ;
    CachedL2Table *e, *prev = NULL;
    unsigned n = 0;

    g_assert_cmphex(s->before, ==, CANARY);
    g_assert_cmphex(s->after, ==, CANARY);

    QTAILQ_FOREACH(e, &c->entries, node) {
        g_assert_true(QTAILQ_IN_USE(e, node));
        g_assert_true(prev_link->tql_next == (void *)e);
        g_assert_true(e->node.tqe_circ.tql_prev == prev_link);
        g_assert_true(e->node.tqe_circ.tql_next == (void *)e->node.tqe_next);
        g_assert_true(QTAILQ_PREV(e, node) == prev);
        g_assert_cmpint(e->ref, >=, 1);
        g_assert_cmpuint(e->offset, !=, 0);
        g_assert_nonnull(e->table);
        g_assert_cmpuint(e->table->offsets[0], ==, e->offset);
        for (guint i = 0; i < seen->len; i++) {
            g_assert_cmpuint(((CachedL2Table *)seen->pdata[i])->offset, !=, e->offset);
        }
        g_ptr_array_add(seen, e);
        prev = e;
        prev_link = &e->node.tqe_circ;
        n++;
        g_assert_cmpuint(n, <=, 100000u); /* no cycle */
    }
    /* The head's back link names the last element's link (or the head). */
    g_assert_true(c->entries.tqh_circ.tql_prev == prev_link);
    g_assert_true(QTAILQ_LAST(&c->entries) == prev);
    g_assert_cmpuint(c->n_entries, ==, n);
    if (n == 0) {
        g_assert_null(QTAILQ_FIRST(&c->entries));
        g_assert_true(c->entries.tqh_circ.tql_prev == &c->entries.tqh_circ);
    }

    /* Backwards, the same elements in reverse. */
    guint back = seen->len;
    QTAILQ_FOREACH_REVERSE(e, &c->entries, node) {
        g_assert_cmpuint(back, >, 0);
        back--;
        g_assert_true(e == seen->pdata[back]);
    }
    g_assert_cmpuint(back, ==, 0);

    for (unsigned i = 0; out && i < n && i < max; i++) {
        out[i] = seen->pdata[i];
    }
    g_ptr_array_free(seen, TRUE);
    return n;
}

/* The caller's own linear lookup, as the C original's find walked. */
static CachedL2Table *c_side_lookup(L2TableCache *c, uint64_t offset)
{
    CachedL2Table *e;
    QTAILQ_FOREACH(e, &c->entries, node) {
        if (e->offset == offset) {
            return e;
        }
    }
    return NULL;
}

/*
 * The six calls, each followed by a full walk: every test goes through
 * these, so the list is checked after every operation.
 */
static void s_init(FakeQEDState *s)
{
    qed_init_l2_cache(&s->l2_cache);
    walk(s, NULL, 0);
}

static void s_free(FakeQEDState *s)
{
    qed_free_l2_cache(&s->l2_cache);
    g_assert_cmpuint(walk(s, NULL, 0), ==, 0);
}

static CachedL2Table *s_find(FakeQEDState *s, uint64_t offset)
{
    CachedL2Table *e = qed_find_l2_cache_entry(&s->l2_cache, offset);
    walk(s, NULL, 0);
    return e;
}

static void s_commit(FakeQEDState *s, CachedL2Table *e)
{
    qed_commit_l2_cache_entry(&s->l2_cache, e);
    walk(s, NULL, 0);
}

static void s_unref(FakeQEDState *s, CachedL2Table *e)
{
    qed_unref_l2_cache_entry(e);
    walk(s, NULL, 0);
}

/* What qed_read_l2_table() does before committing: alloc, table, offset. */
static CachedL2Table *make_entry(FakeQEDState *s, uint64_t offset)
{
    void *mem = NULL;
    unsigned n = walk(s, NULL, 0);
    CachedL2Table *e = qed_alloc_l2_cache_entry(&s->l2_cache);

    g_assert_cmpuint(walk(s, NULL, 0), ==, n); /* alloc does not cache */
    g_assert_nonnull(e);
    g_assert_cmpint(e->ref, ==, 1);
    g_assert_null(e->table);
    g_assert_cmpuint(e->offset, ==, 0);
    g_assert_false(QTAILQ_IN_USE(e, node));
    g_assert_null(e->node.tqe_next);
    g_assert_cmpint(posix_memalign(&mem, 4096, TABLE_BYTES), ==, 0);
    memset(mem, 0, TABLE_BYTES);
    e->table = mem;
    e->table->offsets[0] = offset; /* a mark to recognise the table by */
    e->offset = offset;
    return e;
}

static void test_init_on_garbage(void)
{
    FakeQEDState *s = state_new();

    s_init(s);
    g_assert_cmpuint(walk(s, NULL, 0), ==, 0);
    g_assert_null(s_find(s, off(0)));
    g_assert_cmpuint(walk(s, NULL, 0), ==, 0);
    s_free(s);
    g_assert_cmpuint(walk(s, NULL, 0), ==, 0);
    g_free(s);
}

static void test_alloc_commit_find_unref(void)
{
    FakeQEDState *s = state_new();
    L2TableCache *c = &s->l2_cache;
    CachedL2Table *list[4];

    s_init(s);

    CachedL2Table *e1 = make_entry(s, off(1));
    g_assert_cmpuint(walk(s, NULL, 0), ==, 0); /* alloc does not cache */
    s_commit(s, e1);
    g_assert_cmpuint(walk(s, list, 4), ==, 1);
    g_assert_true(list[0] == e1);
    g_assert_true(QTAILQ_FIRST(&c->entries) == e1);
    g_assert_true(QTAILQ_LAST(&c->entries) == e1);
    g_assert_cmpint(e1->ref, ==, 1); /* the commit took the caller's reference */

    CachedL2Table *e2 = make_entry(s, off(2));
    s_commit(s, e2);
    g_assert_cmpuint(walk(s, NULL, 0), ==, 2);
    CachedL2Table *e3 = make_entry(s, off(3));
    s_commit(s, e3);
    g_assert_cmpuint(walk(s, list, 4), ==, 3);
    g_assert_true(list[0] == e1 && list[1] == e2 && list[2] == e3);
    g_assert_true(QTAILQ_LAST(&c->entries) == e3);
    g_assert_true(QTAILQ_PREV(e3, node) == e2);
    g_assert_null(QTAILQ_PREV(e1, node));

    CachedL2Table *f = s_find(s, off(2));
    g_assert_true(f == e2);
    g_assert_cmpint(e2->ref, ==, 2);
    g_assert_cmpuint(walk(s, list, 4), ==, 3);
    g_assert_true(list[0] == e1 && list[1] == e2 && list[2] == e3); /* FIFO: a hit moves nothing */

    g_assert_null(s_find(s, off(9)));
    g_assert_cmpuint(walk(s, NULL, 0), ==, 3);

    for (unsigned i = 0; i < 12; i++) {
        CachedL2Table *lib = s_find(s, off(i));
        g_assert_true(lib == c_side_lookup(c, off(i)));
        walk(s, NULL, 0);
        s_unref(s, lib);
        g_assert_cmpuint(walk(s, NULL, 0), ==, 3);
    }

    s_unref(s, f);
    g_assert_cmpint(e2->ref, ==, 1);
    g_assert_cmpuint(walk(s, list, 4), ==, 3);
    g_assert_true(list[1] == e2);
    s_unref(s, NULL);
    g_assert_cmpuint(walk(s, NULL, 0), ==, 3);

    /* An entry the caller drops before committing never touches the list. */
    CachedL2Table *dropped = make_entry(s, off(7));
    s_unref(s, dropped);
    g_assert_cmpuint(walk(s, NULL, 0), ==, 3);
    g_assert_null(s_find(s, off(7)));

    s_free(s);
    g_assert_cmpuint(walk(s, NULL, 0), ==, 0);
    g_free(s);
}

static void test_eviction_keeps_links(void)
{
    FakeQEDState *s = state_new();
    L2TableCache *c = &s->l2_cache;
    CachedL2Table *list[MAX_CACHE + 8];

    s_init(s);
    for (unsigned i = 0; i < MAX_CACHE; i++) {
        s_commit(s, make_entry(s, off(i)));
        g_assert_cmpuint(walk(s, NULL, 0), ==, i + 1);
    }

    /* Full: the next commit evicts the head. */
    s_commit(s, make_entry(s, off(MAX_CACHE)));
    g_assert_cmpuint(walk(s, list, G_N_ELEMENTS(list)), ==, MAX_CACHE);
    g_assert_cmpuint(list[0]->offset, ==, off(1));
    g_assert_cmpuint(list[MAX_CACHE - 1]->offset, ==, off(MAX_CACHE));
    g_assert_null(c_side_lookup(c, off(0)));
    g_assert_null(s_find(s, off(0)));

    /* A held head is skipped: the one after it goes, the links close up around it. */
    CachedL2Table *held = s_find(s, off(1));
    g_assert_true(held == list[0]);
    CachedL2Table *third = list[2];
    s_commit(s, make_entry(s, off(MAX_CACHE + 1)));
    g_assert_cmpuint(walk(s, list, G_N_ELEMENTS(list)), ==, MAX_CACHE);
    g_assert_true(list[0] == held);
    g_assert_true(list[1] == third);
    g_assert_true(QTAILQ_NEXT(held, node) == third);
    g_assert_true(QTAILQ_PREV(third, node) == held);
    g_assert_true(third->node.tqe_circ.tql_prev == &held->node.tqe_circ);
    g_assert_null(c_side_lookup(c, off(2)));
    g_assert_true(QTAILQ_LAST(&c->entries)->offset == off(MAX_CACHE + 1));

    /* The last element can be the one evicted too (all others held). */
    CachedL2Table *holds[MAX_CACHE];
    for (unsigned i = 0; i < MAX_CACHE; i++) {
        holds[i] = s_find(s, list[i]->offset);
        g_assert_nonnull(holds[i]);
    }
    s_unref(s, holds[MAX_CACHE - 1]);
    holds[MAX_CACHE - 1] = NULL;
    uint64_t old_last = list[MAX_CACHE - 1]->offset;
    CachedL2Table *before_last = list[MAX_CACHE - 2];
    s_commit(s, make_entry(s, off(500)));
    g_assert_cmpuint(walk(s, list, G_N_ELEMENTS(list)), ==, MAX_CACHE);
    g_assert_true(list[MAX_CACHE - 2] == before_last);
    g_assert_cmpuint(list[MAX_CACHE - 1]->offset, ==, off(500));
    g_assert_cmpuint(old_last, ==, off(MAX_CACHE + 1));
    g_assert_null(c_side_lookup(c, old_last));

    for (unsigned i = 0; i < MAX_CACHE; i++) {
        s_unref(s, holds[i]);
        walk(s, NULL, 0);
    }
    s_unref(s, held);
    g_assert_cmpuint(walk(s, NULL, 0), ==, MAX_CACHE);
    s_free(s);
    g_assert_cmpuint(walk(s, NULL, 0), ==, 0);
    g_free(s);
}

static void test_free_and_reinit(void)
{
    FakeQEDState *s = state_new();
    L2TableCache *c = &s->l2_cache;

    s_init(s);
    for (unsigned i = 0; i < 10; i++) {
        s_commit(s, make_entry(s, off(i)));
        walk(s, NULL, 0);
    }
    s_free(s);
    g_assert_cmpuint(walk(s, NULL, 0), ==, 0);

    /* Close then open again: init on the same address. */
    s_init(s);
    g_assert_cmpuint(walk(s, NULL, 0), ==, 0);
    g_assert_null(s_find(s, off(3))); /* the old tables are gone */
    s_commit(s, make_entry(s, off(3)));
    g_assert_cmpuint(walk(s, NULL, 0), ==, 1);
    CachedL2Table *e = s_find(s, off(3));
    g_assert_nonnull(e);
    s_unref(s, e);
    s_free(s);
    g_assert_cmpuint(walk(s, NULL, 0), ==, 0);

    /* Re-open after migration: free, the caller zeroes its whole state, init. */
    s_init(s);
    s_commit(s, make_entry(s, off(4)));
    g_assert_cmpuint(walk(s, NULL, 0), ==, 1);
    s_free(s);
    memset(s, 0, sizeof(*s));
    s->before = s->after = CANARY;
    s_init(s);
    g_assert_cmpuint(walk(s, NULL, 0), ==, 0);
    for (unsigned i = 0; i < MAX_CACHE + 5; i++) {
        s_commit(s, make_entry(s, off(i)));
        g_assert_cmpuint(walk(s, NULL, 0), ==, MIN(i + 1, MAX_CACHE));
    }
    g_assert_null(s_find(s, off(4)));
    e = s_find(s, off(54));
    g_assert_nonnull(e);
    g_assert_true(e == QTAILQ_LAST(&c->entries));
    s_unref(s, e);
    s_free(s);
    g_assert_cmpuint(walk(s, NULL, 0), ==, 0);
    g_free(s);
}

/*
 * The one way to see an element taken off the list while still alive: free
 * of a cache whose entry a request holds (a misuse; in warn mode the call
 * goes on). The element must be unlinked: QTAILQ_IN_USE false, links NULL.
 */
static void test_held_entry_left_by_free_is_unlinked(void)
{
    if (g_test_subprocess()) {
        g_setenv("QED_L2_CACHE_ON_MISUSE", "warn", TRUE); /* before the library reads it */
        FakeQEDState *s = state_new();
        s_init(s);
        for (unsigned i = 0; i < 3; i++) {
            s_commit(s, make_entry(s, off(i)));
        }
        CachedL2Table *e = s_find(s, off(1));
        g_assert_nonnull(e);
        s_free(s);
        g_assert_cmpuint(walk(s, NULL, 0), ==, 0);
        g_assert_false(QTAILQ_IN_USE(e, node));
        g_assert_null(e->node.tqe_next);
        g_assert_null(e->node.tqe_circ.tql_next);
        g_assert_null(e->node.tqe_circ.tql_prev);
        g_assert_cmpint(e->ref, ==, 1);
        g_assert_cmpuint(e->table->offsets[0], ==, off(1)); /* still alive */
        s_unref(s, e);
        g_free(s);
        return;
    }
    g_test_trap_subprocess(NULL, 0, 0); /* default flags (G_TEST_SUBPROCESS_DEFAULT is 2.74+) */
    g_test_trap_assert_passed();
    g_test_trap_assert_stderr("*qed_free_l2_cache*");
}

/*
 * A random mix of the calls QED makes, against a model of docs/behaviour.md (FIFO,
 * max 50, in-use entries skipped): after every call the walked list must be
 * the model's, element for element, with the model's reference counts.
 */
#define SLOTS 60
#define TABLES 140

typedef struct {
    CachedL2Table *e;
    int held; /* references requests hold */
} ModelEntry;

static ModelEntry model[TABLES + SLOTS];
static unsigned model_n;

static int model_index(uint64_t offset)
{
    for (unsigned i = 0; i < model_n; i++) {
        if (model[i].e->offset == offset) {
            return (int)i;
        }
    }
    return -1;
}

static void model_commit(CachedL2Table *e)
{
    if (model_n >= MAX_CACHE) {
        for (unsigned i = 0; i < model_n && model_n >= MAX_CACHE;) {
            if (model[i].held == 0) {
                memmove(&model[i], &model[i + 1], (model_n - i - 1) * sizeof(model[0]));
                model_n--;
            } else {
                i++;
            }
        }
    }
    model[model_n].e = e;
    model[model_n].held = 0;
    model_n++;
}

static void model_check(FakeQEDState *s)
{
    CachedL2Table *list[TABLES + SLOTS];
    unsigned n = walk(s, list, G_N_ELEMENTS(list));
    g_assert_cmpuint(n, ==, model_n);
    for (unsigned i = 0; i < n; i++) {
        g_assert_true(list[i] == model[i].e);
        g_assert_cmpint(list[i]->ref, ==, 1 + model[i].held);
    }
}

static void test_random_workload_against_model(void)
{
    FakeQEDState *s = state_new();
    L2TableCache *c = &s->l2_cache;
    CachedL2Table *slot[SLOTS] = { 0 };
    GRand *rng = g_rand_new_with_seed(20120427);
    unsigned hits = 0, misses = 0, duplicates = 0, grown = 0;

    model_n = 0;
    s_init(s);
    model_check(s);
    for (unsigned step = 0; step < 6000; step++) {
        unsigned k = g_rand_int_range(rng, 0, SLOTS);
        /* Skewed: half the lookups go to the first 30 tables. */
        unsigned t = g_rand_boolean(rng) ? g_rand_int_range(rng, 0, 30) : g_rand_int_range(rng, 0, TABLES);
        uint64_t o = off(t);

        /* Drop the request's previous table. */
        if (slot[k]) {
            int i = model_index(slot[k]->offset);
            if (i >= 0 && model[i].e == slot[k]) {
                model[i].held--;
            }
            s_unref(s, slot[k]);
            slot[k] = NULL;
            model_check(s);
        }

        CachedL2Table *e = s_find(s, o);
        int i = model_index(o);
        if (i >= 0) {
            g_assert_true(e == model[i].e);
            model[i].held++;
            hits++;
            model_check(s);
        } else {
            g_assert_null(e);
            misses++;
            model_check(s);
            CachedL2Table *fresh = make_entry(s, o);
            model_check(s);
            if (g_rand_int_range(rng, 0, 8) == 0) {
                /* Another request raced us to the same table and commits first. */
                CachedL2Table *first = make_entry(s, o);
                s_commit(s, first);
                model_commit(first);
                model_check(s);
                duplicates++;
            }
            /*
             * Asked before the commit: the commit may evict and release
             * entries the model still lists, which must not be read after.
             */
            gboolean duplicate = model_index(o) >= 0;
            s_commit(s, fresh);
            if (!duplicate) {
                model_commit(fresh);
            }
            model_check(s);
            e = s_find(s, o);
            i = model_index(o);
            g_assert_cmpint(i, >=, 0);
            g_assert_true(e == model[i].e);
            model[i].held++;
            model_check(s);
        }
        slot[k] = e;
        if (c->n_entries > MAX_CACHE) {
            grown++;
        }
        /* Now and then many requests complete at once. */
        if (g_rand_int_range(rng, 0, 500) == 0) {
            for (unsigned j = 0; j < SLOTS; j++) {
                if (slot[j]) {
                    model[model_index(slot[j]->offset)].held--;
                    s_unref(s, slot[j]);
                    slot[j] = NULL;
                    model_check(s);
                }
            }
        }
    }
    /* The run covered what it is meant to. */
    g_test_message("hits %u misses %u duplicates %u steps over max %u", hits, misses, duplicates, grown);
    g_assert_cmpuint(hits, >, 1000);
    g_assert_cmpuint(misses, >, 1000);
    g_assert_cmpuint(duplicates, >, 50);
    g_assert_cmpuint(grown, >, 0);

    for (unsigned j = 0; j < SLOTS; j++) {
        if (slot[j]) {
            model[model_index(slot[j]->offset)].held--;
            s_unref(s, slot[j]);
            model_check(s);
        }
    }
    s_free(s);
    g_assert_cmpuint(walk(s, NULL, 0), ==, 0);
    g_rand_free(rng);
    g_free(s);
}

int main(int argc, char **argv)
{
    /* The defaults of docs/behaviour.md (max 50, fifo), whatever the environment says. */
    g_unsetenv("QED_L2_CACHE_SIZE");
    g_unsetenv("QED_L2_CACHE_POLICY");
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/qemu-layout/init-on-garbage", test_init_on_garbage);
    g_test_add_func("/qemu-layout/alloc-commit-find-unref", test_alloc_commit_find_unref);
    g_test_add_func("/qemu-layout/eviction-keeps-links", test_eviction_keeps_links);
    g_test_add_func("/qemu-layout/free-and-reinit", test_free_and_reinit);
    g_test_add_func("/qemu-layout/held-entry-left-by-free-is-unlinked",
                    test_held_entry_left_by_free_is_unlinked);
    g_test_add_func("/qemu-layout/random-workload-against-model", test_random_workload_against_model);
    return g_test_run();
}
