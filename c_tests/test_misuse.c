/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Misuse (docs/misuse.md), every case in both modes. The same program runs twice
 * (c_tests/meson.build): with QED_L2_CACHE_ON_MISUSE=abort every case is a
 * death test (a child process must print the report line and die of
 * SIGABRT); with QED_L2_CACHE_ON_MISUSE=warn every case runs in process
 * (so valgrind sees it) and must print exactly one report line, refuse the
 * call and leave everything as it was.
 *
 * The report line is "qed-l2-cache: FUNCTION: OBJECT ADDRESS: FAULT" (or
 * "OBJECT is NULL"); only the child knows the addresses, so it writes the
 * line it expects to a file the parent names in QED_MISUSE_EXPECT.
 */
#include <limits.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <sys/resource.h>
#include <unistd.h>

#include "helpers.h"

static gboolean warn_mode;
static char *expect_path;

/* What the current case expects: the line's prefix and a fault phrase. */
static char *expected_prefix;
static const char *expected_fault;

/* Warn mode: stderr goes to a temporary file around the misuse call. */
static FILE *capture;
static int saved_stderr = -1;

static void on_sigabrt(int sig)
{
    static const char marker[] = "\nmisuse-test: SIGABRT\n";
    (void)sig;
    /* abort() re-raises with the default action once this returns. */
    if (write(STDERR_FILENO, marker, sizeof(marker) - 1) < 0) {
        _exit(3);
    }
}

/*
 * Call right before the misuse. Takes ownership of `prefix`, the exact
 * start of the expected line.
 */
static void expect_misuse(char *prefix, const char *fault)
{
    g_free(expected_prefix);
    expected_prefix = prefix;
    expected_fault = fault;
    if (warn_mode) {
        fflush(stderr);
        capture = tmpfile();
        g_assert_nonnull(capture);
        saved_stderr = dup(STDERR_FILENO);
        g_assert_cmpint(saved_stderr, >=, 0);
        g_assert_cmpint(dup2(fileno(capture), STDERR_FILENO), ==, STDERR_FILENO);
        return;
    }
    /* Abort mode, in the child: tell the parent, then die in the call. */
    struct rlimit no_core = { 0, 0 };
    setrlimit(RLIMIT_CORE, &no_core);
    FILE *f = fopen(expect_path, "w");
    g_assert_nonnull(f);
    fprintf(f, "%s\n%s\n", prefix, fault);
    fclose(f);
    signal(SIGABRT, on_sigabrt);
}

/*
 * Call right after the misuse. Abort mode: the call returned, so the
 * misuse went unnoticed: exit successfully, which fails the parent's
 * g_test_trap_assert_failed(). Warn mode: exactly one line, the expected
 * one.
 */
static void misuse_reported(void)
{
    if (!warn_mode) {
        exit(0);
    }
    fflush(stderr);
    g_assert_cmpint(dup2(saved_stderr, STDERR_FILENO), ==, STDERR_FILENO);
    close(saved_stderr);
    rewind(capture);
    char buf[4096];
    size_t n = fread(buf, 1, sizeof(buf) - 1, capture);
    buf[n] = '\0';
    fclose(capture);
    capture = NULL;
    g_assert_cmpuint(n, >, 0);
    g_assert_true(g_str_has_suffix(buf, "\n"));
    buf[n - 1] = '\0';
    g_assert_null(strchr(buf, '\n')); /* one line */
    g_assert_true(g_str_has_prefix(buf, expected_prefix));
    g_assert_nonnull(strstr(buf + strlen(expected_prefix), expected_fault));
}

/* ---- helpers ---- */

#define ENTRY_LINE(fn, e) g_strdup_printf("qed-l2-cache: %s: entry %p: ", (fn), (void *)(e))
#define CACHE_LINE(fn, c) g_strdup_printf("qed-l2-cache: %s: l2_cache %p: ", (fn), (void *)(c))
#define NULL_LINE(fn, what) g_strdup_printf("qed-l2-cache: %s: %s is NULL", (fn), (what))

static L2TableCache *new_cache(void)
{
    L2TableCache *c = g_malloc0(sizeof(*c));
    qed_init_l2_cache(c);
    qed_l2_cache_set_policy(c, QED_L2_CACHE_POLICY_FIFO);
    return c;
}

static void drop_cache(L2TableCache *c)
{
    qed_free_l2_cache(c);
    g_free(c);
}

/* A cached entry for offset i, holding only the cache's reference. */
static CachedL2Table *cached_entry(L2TableCache *c, unsigned i)
{
    CachedL2Table *e = new_entry(c, table_offset(i));
    qed_commit_l2_cache_entry(c, e);
    return e;
}

static QedL2CacheStats stats_of(const L2TableCache *c)
{
    QedL2CacheStats s;
    memset(&s, 0, sizeof(s));
    qed_l2_cache_get_stats(c, &s);
    return s;
}

static void assert_same_stats(const QedL2CacheStats *a, const QedL2CacheStats *b)
{
    g_assert_cmpmem(a, sizeof(*a), b, sizeof(*b));
}

/*
 * A caller's own 40-byte block shaped like an entry with one reference.
 * Exactly 40 bytes: the library must decide it is not one of its entries
 * from its own records, without reading it (valgrind and ASan would flag
 * any read past its end).
 */
static CachedL2Table *foreign_entry(void)
{
    CachedL2Table *f = g_malloc0(sizeof(CachedL2Table));
    f->offset = table_offset(0);
    f->ref = 1;
    return f;
}

/*
 * Warn mode: `e` was released by the refused call (the reference it handed
 * over was taken, as unref would): the library now reports it as released.
 */
static void assert_released(CachedL2Table *e)
{
    expect_misuse(ENTRY_LINE("qed_unref_l2_cache_entry", e), "double unref");
    qed_unref_l2_cache_entry(e);
    misuse_reported();
}

/* A cache that holds entries 0..2, in FIFO order, for refusals to keep. */
typedef struct {
    L2TableCache *cache;
    CachedL2Table *e[3];
    L2TableCache before;
    QedL2CacheStats stats;
} Fixture;

static void fixture_up(Fixture *f)
{
    f->cache = new_cache();
    for (unsigned i = 0; i < 3; i++) {
        f->e[i] = cached_entry(f->cache, i);
    }
    f->before = *f->cache;
    f->stats = stats_of(f->cache);
}

/* Nothing changed: the struct, the list, every reference, the counters. */
static void fixture_unchanged(Fixture *f)
{
    g_assert_cmpmem(f->cache, sizeof(*f->cache), &f->before, sizeof(f->before));
    g_assert_cmpuint(check_list(f->cache), ==, 3);
    for (unsigned i = 0; i < 3; i++) {
        g_assert_true(nth_entry(f->cache, i) == f->e[i]);
        g_assert_cmpint(f->e[i]->ref, ==, 1);
        g_assert_cmpuint(f->e[i]->offset, ==, table_offset(i));
    }
    QedL2CacheStats now = stats_of(f->cache);
    assert_same_stats(&now, &f->stats);
}

static void fixture_down(Fixture *f)
{
    /* Still fully usable: a find, an unref, then free. */
    CachedL2Table *e = qed_find_l2_cache_entry(f->cache, table_offset(1));
    g_assert_true(e == f->e[1]);
    g_assert_cmpint(e->ref, ==, 2);
    qed_unref_l2_cache_entry(e);
    drop_cache(f->cache);
}


/* ---- unref ---- */

static void unref_double(void)
{
    L2TableCache *c = new_cache();
    CachedL2Table *e = new_entry(c, table_offset(0));
    qed_unref_l2_cache_entry(e); /* the last reference: released */
    expect_misuse(ENTRY_LINE("qed_unref_l2_cache_entry", e), "double unref");
    qed_unref_l2_cache_entry(e);
    misuse_reported();
    g_assert_cmpuint(check_list(c), ==, 0);
    drop_cache(c);
}

static void unref_cache_own_reference(void)
{
    Fixture f;
    fixture_up(&f);
    expect_misuse(ENTRY_LINE("qed_unref_l2_cache_entry", f.e[0]), "the cache's own");
    qed_unref_l2_cache_entry(f.e[0]); /* ref 1 = the cache's: nobody else's */
    misuse_reported();
    fixture_unchanged(&f);
    fixture_down(&f);
}

static void unref_after_find_twice(void)
{
    /* A request finds once and unrefs twice: the second drops the cache's. */
    Fixture f;
    fixture_up(&f);
    CachedL2Table *e = qed_find_l2_cache_entry(f.cache, table_offset(2));
    g_assert_true(e == f.e[2]);
    f.stats = stats_of(f.cache);
    qed_unref_l2_cache_entry(e);
    expect_misuse(ENTRY_LINE("qed_unref_l2_cache_entry", e), "double unref");
    qed_unref_l2_cache_entry(e);
    misuse_reported();
    fixture_unchanged(&f);
    fixture_down(&f);
}

static void unref_foreign(void)
{
    CachedL2Table *fe = foreign_entry();
    guint8 copy[sizeof(CachedL2Table)];
    memcpy(copy, fe, sizeof(copy));
    expect_misuse(ENTRY_LINE("qed_unref_l2_cache_entry", fe), "not allocated by qed_alloc_l2_cache_entry");
    qed_unref_l2_cache_entry(fe);
    misuse_reported();
    g_assert_cmpmem(fe, sizeof(copy), copy, sizeof(copy));
    g_free(fe);
}

/*
 * The one aligned address whose hidden key is the records' empty-slot
 * marker (the hiding mask itself; non-canonical, so never an entry). It
 * must be refused like any pointer the library does not know, not taken
 * for a match of an empty slot (found by an adversarial tester: SIGSEGV).
 * Nothing is read through it (it is not mapped).
 */
#define MARKER_KEY_ADDRESS ((CachedL2Table *)(uintptr_t)0x5AD3000000000000ull)

static void unref_marker_key_address(void)
{
    /* This thread's records exist and hold a live entry. */
    Fixture f;
    fixture_up(&f);
    expect_misuse(ENTRY_LINE("qed_unref_l2_cache_entry", MARKER_KEY_ADDRESS),
                  "not allocated by qed_alloc_l2_cache_entry");
    qed_unref_l2_cache_entry(MARKER_KEY_ADDRESS);
    misuse_reported();
    fixture_unchanged(&f);
    fixture_down(&f);
}

static void commit_marker_key_address(void)
{
    Fixture f;
    fixture_up(&f);
    expect_misuse(ENTRY_LINE("qed_commit_l2_cache_entry", MARKER_KEY_ADDRESS),
                  "not allocated by qed_alloc_l2_cache_entry");
    qed_commit_l2_cache_entry(f.cache, MARKER_KEY_ADDRESS);
    misuse_reported();
    fixture_unchanged(&f);
    fixture_down(&f);
}

static void unref_misaligned(void)
{
    guint8 *buf = g_malloc0(128);
    CachedL2Table *odd = (CachedL2Table *)(void *)(buf + 4);
    expect_misuse(ENTRY_LINE("qed_unref_l2_cache_entry", odd), "not allocated by qed_alloc_l2_cache_entry");
    qed_unref_l2_cache_entry(odd);
    misuse_reported();
    for (unsigned i = 0; i < 128; i++) {
        g_assert_cmpuint(buf[i], ==, 0);
    }
    g_free(buf);
}

static void unref_copy_of_entry(void)
{
    /* A struct copy of a live entry is not it. */
    Fixture f;
    fixture_up(&f);
    CachedL2Table *copy = g_malloc0(sizeof(CachedL2Table));
    memcpy(copy, f.e[0], sizeof(CachedL2Table));
    copy->ref = 2;
    expect_misuse(ENTRY_LINE("qed_unref_l2_cache_entry", copy), "not allocated by qed_alloc_l2_cache_entry");
    qed_unref_l2_cache_entry(copy);
    misuse_reported();
    g_assert_cmpint(copy->ref, ==, 2);
    fixture_unchanged(&f);
    g_free(copy);
    fixture_down(&f);
}

/* ---- commit ---- */

static void commit_already_cached(void)
{
    Fixture f;
    fixture_up(&f);
    expect_misuse(ENTRY_LINE("qed_commit_l2_cache_entry", f.e[1]), "already cached");
    qed_commit_l2_cache_entry(f.cache, f.e[1]);
    misuse_reported();
    fixture_unchanged(&f);
    fixture_down(&f);
}

static void commit_cached_in_another_cache(void)
{
    Fixture f;
    fixture_up(&f);
    L2TableCache *other = new_cache();
    L2TableCache other_before = *other;
    expect_misuse(ENTRY_LINE("qed_commit_l2_cache_entry", f.e[0]), "already cached");
    qed_commit_l2_cache_entry(other, f.e[0]);
    misuse_reported();
    g_assert_cmpmem(other, sizeof(*other), &other_before, sizeof(other_before));
    g_assert_cmpuint(check_list(other), ==, 0);
    fixture_unchanged(&f);
    drop_cache(other);
    fixture_down(&f);
}

static void commit_offset_zero(void)
{
    Fixture f;
    fixture_up(&f);
    CachedL2Table *e = new_entry(f.cache, 0);
    expect_misuse(ENTRY_LINE("qed_commit_l2_cache_entry", e), "offset is 0");
    qed_commit_l2_cache_entry(f.cache, e);
    misuse_reported();
    fixture_unchanged(&f);
    /* Refused, but the reference handed to commit was taken: released. */
    assert_released(e);
    fixture_down(&f);
}

static void commit_released(void)
{
    Fixture f;
    fixture_up(&f);
    CachedL2Table *e = new_entry(f.cache, table_offset(8));
    qed_unref_l2_cache_entry(e);
    expect_misuse(ENTRY_LINE("qed_commit_l2_cache_entry", e), "already released");
    qed_commit_l2_cache_entry(f.cache, e);
    misuse_reported();
    fixture_unchanged(&f);
    fixture_down(&f);
}

static void commit_foreign(void)
{
    Fixture f;
    fixture_up(&f);
    CachedL2Table *fe = foreign_entry();
    fe->offset = table_offset(9);
    expect_misuse(ENTRY_LINE("qed_commit_l2_cache_entry", fe), "not allocated by qed_alloc_l2_cache_entry");
    qed_commit_l2_cache_entry(f.cache, fe);
    misuse_reported();
    g_assert_cmpint(fe->ref, ==, 1);
    fixture_unchanged(&f);
    g_free(fe);
    fixture_down(&f);
}

static void commit_null_entry(void)
{
    Fixture f;
    fixture_up(&f);
    expect_misuse(NULL_LINE("qed_commit_l2_cache_entry", "entry"), "");
    qed_commit_l2_cache_entry(f.cache, NULL);
    misuse_reported();
    fixture_unchanged(&f);
    fixture_down(&f);
}

static void commit_null_cache(void)
{
    L2TableCache *c = new_cache();
    CachedL2Table *e = new_entry(c, table_offset(0));
    expect_misuse(NULL_LINE("qed_commit_l2_cache_entry", "l2_cache"), "");
    qed_commit_l2_cache_entry(NULL, e);
    misuse_reported();
    g_assert_cmpuint(check_list(c), ==, 0);
    /* Refused because of the cache: the caller's reference was taken. */
    assert_released(e);
    drop_cache(c);
}

static void commit_null_cache_cached_entry(void)
{
    /* A cached entry has no caller reference to give: left untouched. */
    Fixture f;
    fixture_up(&f);
    expect_misuse(NULL_LINE("qed_commit_l2_cache_entry", "l2_cache"), "");
    qed_commit_l2_cache_entry(NULL, f.e[1]);
    misuse_reported();
    fixture_unchanged(&f);
    fixture_down(&f);
}

static void commit_null_cache_foreign_entry(void)
{
    /* Not the library's: left untouched, not read. */
    CachedL2Table *fe = foreign_entry();
    guint8 copy[sizeof(CachedL2Table)];
    memcpy(copy, fe, sizeof(copy));
    expect_misuse(NULL_LINE("qed_commit_l2_cache_entry", "l2_cache"), "");
    qed_commit_l2_cache_entry(NULL, fe);
    misuse_reported();
    g_assert_cmpmem(fe, sizeof(copy), copy, sizeof(copy));
    g_free(fe);
}

static void commit_misaligned_cache(void)
{
    guint8 *buf = g_malloc0(64);
    L2TableCache *odd = (L2TableCache *)(void *)(buf + 4);
    L2TableCache *c = new_cache();
    CachedL2Table *e = new_entry(c, table_offset(0));
    expect_misuse(CACHE_LINE("qed_commit_l2_cache_entry", odd), "misaligned");
    qed_commit_l2_cache_entry(odd, e);
    misuse_reported();
    for (unsigned i = 0; i < 64; i++) {
        g_assert_cmpuint(buf[i], ==, 0);
    }
    assert_released(e);
    g_free(buf);
    drop_cache(c);
}

static void commit_copied_struct(void)
{
    Fixture f;
    fixture_up(&f);
    L2TableCache *copy = g_malloc0(sizeof(*copy));
    *copy = *f.cache;
    CachedL2Table *e = new_entry(f.cache, table_offset(5));
    expect_misuse(CACHE_LINE("qed_commit_l2_cache_entry", copy), "not initialised");
    qed_commit_l2_cache_entry(copy, e);
    misuse_reported();
    g_assert_cmpmem(copy, sizeof(*copy), &f.before, sizeof(f.before));
    fixture_unchanged(&f);
    assert_released(e);
    g_free(copy);
    fixture_down(&f);
}

/* Calls on a struct that is not an initialised cache: "zeroed" or "freed". */
static L2TableCache *uninitialised_cache(gboolean freed)
{
    L2TableCache *c = g_malloc0(sizeof(*c));
    if (freed) {
        qed_init_l2_cache(c);
        cached_entry(c, 0);
        qed_free_l2_cache(c);
    }
    return c;
}

static void commit_uninitialised(gboolean freed)
{
    L2TableCache *c = uninitialised_cache(freed);
    L2TableCache before = *c;
    CachedL2Table *e = new_entry(c, table_offset(0));
    expect_misuse(CACHE_LINE("qed_commit_l2_cache_entry", c), "not initialised");
    qed_commit_l2_cache_entry(c, e);
    misuse_reported();
    g_assert_cmpmem(c, sizeof(*c), &before, sizeof(before));
    /* The reference handed to commit was taken: warn mode leaks nothing. */
    assert_released(e);
    g_free(c);
}

static void commit_zeroed(void)
{
    commit_uninitialised(FALSE);
}

static void commit_freed(void)
{
    commit_uninitialised(TRUE);
}

/* ---- find ---- */

static void find_uninitialised(gboolean freed)
{
    L2TableCache *c = uninitialised_cache(freed);
    L2TableCache before = *c;
    expect_misuse(CACHE_LINE("qed_find_l2_cache_entry", c), "not initialised");
    CachedL2Table *e = qed_find_l2_cache_entry(c, table_offset(0));
    misuse_reported();
    g_assert_null(e);
    g_assert_cmpmem(c, sizeof(*c), &before, sizeof(before));
    g_free(c);
}

static void find_zeroed(void)
{
    find_uninitialised(FALSE);
}

static void find_freed(void)
{
    find_uninitialised(TRUE);
}

static void find_null(void)
{
    expect_misuse(NULL_LINE("qed_find_l2_cache_entry", "l2_cache"), "");
    CachedL2Table *e = qed_find_l2_cache_entry(NULL, table_offset(0));
    misuse_reported();
    g_assert_null(e);
}

static void find_misaligned(void)
{
    guint8 *buf = g_malloc0(64);
    L2TableCache *odd = (L2TableCache *)(void *)(buf + 4);
    expect_misuse(CACHE_LINE("qed_find_l2_cache_entry", odd), "misaligned");
    CachedL2Table *e = qed_find_l2_cache_entry(odd, table_offset(0));
    misuse_reported();
    g_assert_null(e);
    for (unsigned i = 0; i < 64; i++) {
        g_assert_cmpuint(buf[i], ==, 0);
    }
    g_free(buf);
}

static void find_on_copied_struct(void)
{
    /* The cache was copied (moved) after init: the copy is not the cache. */
    Fixture f;
    fixture_up(&f);
    L2TableCache *copy = g_malloc0(sizeof(*copy));
    *copy = *f.cache;
    expect_misuse(CACHE_LINE("qed_find_l2_cache_entry", copy), "not initialised");
    CachedL2Table *e = qed_find_l2_cache_entry(copy, table_offset(0));
    misuse_reported();
    g_assert_null(e);
    g_assert_cmpmem(copy, sizeof(*copy), &f.before, sizeof(f.before));
    fixture_unchanged(&f);
    g_free(copy);
    fixture_down(&f);
}

static void find_garbage_at_leaked_cache(void)
{
    /*
     * A cache is leaked (never freed) and its memory is reused for a struct
     * that was never initialised: garbage list pointers. The library must
     * refuse it with a message, never follow the pointers.
     */
    L2TableCache *c = g_malloc0(sizeof(*c));
    qed_init_l2_cache(c);
    cached_entry(c, 0);
    memset(c, 0xa5, sizeof(*c));
    L2TableCache before = *c;
    expect_misuse(CACHE_LINE("qed_find_l2_cache_entry", c), "list head is not what the library last wrote");
    CachedL2Table *e = qed_find_l2_cache_entry(c, table_offset(0));
    misuse_reported();
    g_assert_null(e);
    g_assert_cmpmem(c, sizeof(*c), &before, sizeof(before));
    /* Re-initialising the address drops the leaked cache's state. */
    qed_init_l2_cache(c);
    g_assert_cmpuint(check_list(c), ==, 0);
    drop_cache(c);
}

static CachedL2Table *volatile saturated_forever;

static void find_garbage_head_padding_intact(void)
{
    /*
     * The same, but the garbage leaves the padding (the library's hint)
     * as it was: the address map and the hint agree it is that cache; only
     * the list head, not what the library wrote, tells it apart.
     */
    L2TableCache *c = g_malloc0(sizeof(*c));
    qed_init_l2_cache(c);
    cached_entry(c, 0);
    memset(c, 0xa5, offsetof(L2TableCache, n_entries) + sizeof(c->n_entries));
    L2TableCache before = *c;
    expect_misuse(CACHE_LINE("qed_commit_l2_cache_entry", c), "list head is not what the library last wrote");
    CachedL2Table *e = new_entry(c, table_offset(1));
    qed_commit_l2_cache_entry(c, e);
    misuse_reported();
    g_assert_cmpmem(c, sizeof(*c), &before, sizeof(before));
    assert_released(e);
    qed_init_l2_cache(c);
    drop_cache(c);
}

static void find_ref_overflow(void)
{
    /*
     * A count that would pass INT_MAX: reported; in warn mode it stays at
     * INT_MAX (the entry is then never released) and find still returns
     * the cached entry (QEMU asserts on that).
     */
    Fixture f;
    fixture_up(&f);
    f.e[0]->ref = INT_MAX;
    expect_misuse(ENTRY_LINE("qed_find_l2_cache_entry", f.e[0]), "INT_MAX");
    CachedL2Table *e = qed_find_l2_cache_entry(f.cache, table_offset(0));
    misuse_reported();
    g_assert_true(e == f.e[0]);
    g_assert_cmpint(e->ref, ==, INT_MAX);
    /* Reported once: the next find is silent and still finds it. */
    g_assert_true(qed_find_l2_cache_entry(f.cache, table_offset(0)) == e);
    g_assert_cmpint(e->ref, ==, INT_MAX);
    qed_unref_l2_cache_entry(e);
    g_assert_cmpint(e->ref, ==, INT_MAX);
    /*
     * Frozen for good: free sees it held (a report in warn mode), takes it
     * off the list, and it is never released. Kept reachable for valgrind.
     */
    saturated_forever = e;
    if (warn_mode) {
        expect_misuse(CACHE_LINE("qed_free_l2_cache", f.cache), "1 of 3 entries are still referenced");
        qed_free_l2_cache(f.cache);
        misuse_reported();
        g_assert_true(entry_unlinked(e));
        g_assert_cmpint(e->ref, ==, INT_MAX);
        g_free(f.cache);
    }
}

static void unref_double_after_many_releases(void)
{
    /*
     * A released entry is recognised as released for as long as it is in
     * the releasing thread's quarantine: the last QUARANTINE releases
     * (docs/misuse.md). Here it is the oldest of them.
     */
    L2TableCache *c = new_cache();
    CachedL2Table *e = new_entry(c, table_offset(0));
    qed_unref_l2_cache_entry(e);
    for (unsigned i = 0; i < QED_L2_CACHE_QUARANTINE_PER_THREAD - 1; i++) {
        qed_unref_l2_cache_entry(new_entry(c, table_offset(1)));
    }
    /* New entries kept alive: were e's memory reused, one would sit there. */
    enum { KEPT = 2048 };
    CachedL2Table **kept = g_new(CachedL2Table *, KEPT);
    for (unsigned i = 0; i < KEPT; i++) {
        kept[i] = new_entry(c, table_offset(2));
    }
    expect_misuse(ENTRY_LINE("qed_unref_l2_cache_entry", e), "double unref");
    qed_unref_l2_cache_entry(e);
    misuse_reported();
    for (unsigned i = 0; i < KEPT; i++) {
        g_assert_cmpint(kept[i]->ref, ==, 1);
        qed_unref_l2_cache_entry(kept[i]);
    }
    g_free(kept);
    drop_cache(c);
}

/* ---- free ---- */

static void free_uninitialised(gboolean freed)
{
    L2TableCache *c = uninitialised_cache(freed);
    L2TableCache before = *c;
    expect_misuse(CACHE_LINE("qed_free_l2_cache", c), "not initialised");
    qed_free_l2_cache(c);
    misuse_reported();
    g_assert_cmpmem(c, sizeof(*c), &before, sizeof(before));
    g_free(c);
}

static void free_zeroed(void)
{
    free_uninitialised(FALSE);
}

static void free_twice(void)
{
    free_uninitialised(TRUE);
}

static void free_null(void)
{
    expect_misuse(NULL_LINE("qed_free_l2_cache", "l2_cache"), "");
    qed_free_l2_cache(NULL);
    misuse_reported();
}

static void free_with_referenced_entries(void)
{
    /*
     * Not refused: the cache is freed, the entries requests hold leave it
     * and stay alive until their last unref (whatever the setting).
     */
    L2TableCache *c = new_cache();
    CachedL2Table *held = cached_entry(c, 0);
    cached_entry(c, 1);
    CachedL2Table *held_twice = cached_entry(c, 2);
    g_assert_true(qed_find_l2_cache_entry(c, table_offset(0)) == held);
    g_assert_true(qed_find_l2_cache_entry(c, table_offset(2)) == held_twice);
    g_assert_true(qed_find_l2_cache_entry(c, table_offset(2)) == held_twice);
    held->table->offsets[0] = 0xfeed;
    expect_misuse(CACHE_LINE("qed_free_l2_cache", c), "2 of 3 entries are still referenced");
    qed_free_l2_cache(c);
    misuse_reported();
    /* The cache is empty and no longer initialised. */
    g_assert_null(c->entries.tqh_first);
    g_assert_cmpuint(c->n_entries, ==, 0);
    /* The held entries: off the list, alive, the cache's reference gone. */
    g_assert_true(entry_unlinked(held));
    g_assert_true(entry_unlinked(held_twice));
    g_assert_cmpint(held->ref, ==, 1);
    g_assert_cmpint(held_twice->ref, ==, 2);
    g_assert_cmpuint(held->offset, ==, table_offset(0));
    g_assert_cmpuint(held->table->offsets[0], ==, 0xfeed);
    qed_unref_l2_cache_entry(held_twice);
    g_assert_cmpint(held_twice->ref, ==, 1);
    qed_unref_l2_cache_entry(held_twice); /* released now */
    qed_unref_l2_cache_entry(held);       /* released now */
    /* The address is reusable. */
    qed_init_l2_cache(c);
    g_assert_cmpuint(check_list(c), ==, 0);
    drop_cache(c);
}

/* ---- init, alloc ---- */

static void init_null(void)
{
    expect_misuse(NULL_LINE("qed_init_l2_cache", "l2_cache"), "");
    qed_init_l2_cache(NULL);
    misuse_reported();
}

static void init_misaligned(void)
{
    guint8 *buf = g_malloc0(64);
    L2TableCache *odd = (L2TableCache *)(void *)(buf + 4);
    expect_misuse(CACHE_LINE("qed_init_l2_cache", odd), "misaligned");
    qed_init_l2_cache(odd);
    misuse_reported();
    for (unsigned i = 0; i < 64; i++) {
        g_assert_cmpuint(buf[i], ==, 0);
    }
    g_free(buf);
}

/* ---- extensions ---- */

static void set_max_zero(void)
{
    Fixture f;
    fixture_up(&f);
    qed_l2_cache_set_max_entries(f.cache, 3);
    expect_misuse(CACHE_LINE("qed_l2_cache_set_max_entries", f.cache), "max must be at least 1");
    qed_l2_cache_set_max_entries(f.cache, 0);
    misuse_reported();
    fixture_unchanged(&f);
    /* The maximum is still 3: a fourth commit evicts the oldest. */
    qed_commit_l2_cache_entry(f.cache, new_entry(f.cache, table_offset(3)));
    g_assert_cmpuint(check_list(f.cache), ==, 3);
    g_assert_true(nth_entry(f.cache, 0) == f.e[1]);
    drop_cache(f.cache);
}

static void set_max_null(void)
{
    expect_misuse(NULL_LINE("qed_l2_cache_set_max_entries", "l2_cache"), "");
    qed_l2_cache_set_max_entries(NULL, 5);
    misuse_reported();
}

static void set_max_zeroed(void)
{
    L2TableCache *c = uninitialised_cache(FALSE);
    expect_misuse(CACHE_LINE("qed_l2_cache_set_max_entries", c), "not initialised");
    qed_l2_cache_set_max_entries(c, 5);
    misuse_reported();
    g_assert_null(c->entries.tqh_first);
    g_assert_cmpuint(c->n_entries, ==, 0);
    g_free(c);
}

static void set_policy_unknown(void)
{
    Fixture f;
    fixture_up(&f);
    expect_misuse(CACHE_LINE("qed_l2_cache_set_policy", f.cache), "unknown policy 3");
    qed_l2_cache_set_policy(f.cache, 3);
    misuse_reported();
    fixture_unchanged(&f);
    /* Still FIFO: a hit does not move the entry. */
    CachedL2Table *e = qed_find_l2_cache_entry(f.cache, table_offset(0));
    g_assert_true(nth_entry(f.cache, 0) == e);
    qed_unref_l2_cache_entry(e);
    fixture_down(&f);
}

static void set_policy_null(void)
{
    expect_misuse(NULL_LINE("qed_l2_cache_set_policy", "l2_cache"), "");
    qed_l2_cache_set_policy(NULL, QED_L2_CACHE_POLICY_LRU);
    misuse_reported();
}

static void set_policy_freed(void)
{
    L2TableCache *c = uninitialised_cache(TRUE);
    L2TableCache before = *c;
    expect_misuse(CACHE_LINE("qed_l2_cache_set_policy", c), "not initialised");
    qed_l2_cache_set_policy(c, QED_L2_CACHE_POLICY_SIEVE);
    misuse_reported();
    g_assert_cmpmem(c, sizeof(*c), &before, sizeof(before));
    g_free(c);
}

static void get_stats_null_stats(void)
{
    Fixture f;
    fixture_up(&f);
    expect_misuse(CACHE_LINE("qed_l2_cache_get_stats", f.cache), "stats is NULL");
    qed_l2_cache_get_stats(f.cache, NULL);
    misuse_reported();
    fixture_unchanged(&f);
    fixture_down(&f);
}

static void get_stats_null_cache(void)
{
    QedL2CacheStats s;
    memset(&s, 0xab, sizeof(s));
    expect_misuse(NULL_LINE("qed_l2_cache_get_stats", "l2_cache"), "");
    qed_l2_cache_get_stats(NULL, &s);
    misuse_reported();
    g_assert_cmpuint(s.hits, ==, 0xababababababababull);
    g_assert_cmpuint(s.peak_entries, ==, 0xababababababababull);
}

static void get_stats_zeroed(void)
{
    L2TableCache *c = uninitialised_cache(FALSE);
    QedL2CacheStats s;
    memset(&s, 0xab, sizeof(s));
    expect_misuse(CACHE_LINE("qed_l2_cache_get_stats", c), "not initialised");
    qed_l2_cache_get_stats(c, &s);
    misuse_reported();
    g_assert_cmpuint(s.commits, ==, 0xababababababababull);
    g_free(c);
}

typedef struct {
    const char *name;
    void (*body)(void);
} Case;

static const Case cases[] = {
    { "unref/double", unref_double },
    { "unref/cache-own-reference", unref_cache_own_reference },
    { "unref/after-find-twice", unref_after_find_twice },
    { "unref/foreign", unref_foreign },
    { "unref/misaligned", unref_misaligned },
    { "unref/marker-key-address", unref_marker_key_address },
    { "unref/copy-of-entry", unref_copy_of_entry },
    { "commit/already-cached", commit_already_cached },
    { "commit/cached-in-another-cache", commit_cached_in_another_cache },
    { "commit/offset-zero", commit_offset_zero },
    { "commit/released", commit_released },
    { "commit/foreign", commit_foreign },
    { "commit/marker-key-address", commit_marker_key_address },
    { "commit/null-entry", commit_null_entry },
    { "commit/null-cache", commit_null_cache },
    { "commit/null-cache-cached-entry", commit_null_cache_cached_entry },
    { "commit/null-cache-foreign-entry", commit_null_cache_foreign_entry },
    { "commit/misaligned-cache", commit_misaligned_cache },
    { "commit/copied-struct", commit_copied_struct },
    { "commit/zeroed-cache", commit_zeroed },
    { "commit/freed-cache", commit_freed },
    { "find/zeroed-cache", find_zeroed },
    { "find/freed-cache", find_freed },
    { "find/null", find_null },
    { "find/misaligned", find_misaligned },
    { "find/copied-struct", find_on_copied_struct },
    { "find/garbage-at-leaked-cache", find_garbage_at_leaked_cache },
    { "find/ref-overflow", find_ref_overflow },
    { "commit/garbage-head-padding-intact", find_garbage_head_padding_intact },
    { "unref/double-after-many-releases", unref_double_after_many_releases },
    { "free/zeroed-cache", free_zeroed },
    { "free/twice", free_twice },
    { "free/null", free_null },
    { "free/with-referenced-entries", free_with_referenced_entries },
    { "init/null", init_null },
    { "init/misaligned", init_misaligned },
    { "set-max-entries/zero", set_max_zero },
    { "set-max-entries/null", set_max_null },
    { "set-max-entries/zeroed-cache", set_max_zeroed },
    { "set-policy/unknown", set_policy_unknown },
    { "set-policy/null", set_policy_null },
    { "set-policy/freed-cache", set_policy_freed },
    { "get-stats/null-stats", get_stats_null_stats },
    { "get-stats/null-cache", get_stats_null_cache },
    { "get-stats/zeroed-cache", get_stats_zeroed },
};

static void run_case(gconstpointer data)
{
    const Case *c = data;
    if (warn_mode) {
        c->body();
        return;
    }
    if (g_test_subprocess()) {
        c->body();
        return; /* not reached: misuse_reported() exits */
    }
    remove(expect_path);
    g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
    g_test_trap_assert_failed();
    /* The child wrote the line it expects before the fatal call. */
    char *text = NULL;
    g_assert_true(g_file_get_contents(expect_path, &text, NULL, NULL));
    char **parts = g_strsplit(text, "\n", 3);
    g_assert_nonnull(parts[0]);
    g_assert_nonnull(parts[1]);
    char *pattern = g_strdup_printf("*%s*%s*misuse-test: SIGABRT*", parts[0], parts[1]);
    g_test_trap_assert_stderr(pattern);
    g_free(pattern);
    g_strfreev(parts);
    g_free(text);
    remove(expect_path);
}

int main(int argc, char **argv)
{
    const char *mode = g_getenv("QED_L2_CACHE_ON_MISUSE");
    warn_mode = mode && strcmp(mode, "warn") == 0;
    g_test_init(&argc, &argv, NULL);
    if (g_test_subprocess()) {
        expect_path = g_strdup(g_getenv("QED_MISUSE_EXPECT"));
        g_assert_nonnull(expect_path);
    } else {
        expect_path = g_strdup_printf("%s/qed-l2-cache-misuse-%d.expect", g_get_tmp_dir(), (int)getpid());
        g_setenv("QED_MISUSE_EXPECT", expect_path, TRUE);
    }
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        char *path = g_strdup_printf("/misuse/%s/%s", warn_mode ? "warn" : "abort", cases[i].name);
        g_test_add_data_func(path, &cases[i], run_case);
        g_free(path);
    }
    int rc = g_test_run();
    g_free(expected_prefix);
    g_free(expect_path);
    return rc;
}
