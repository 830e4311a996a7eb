/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Idle release (docs/idle.md): QED_L2_CACHE_IDLE=S frees a cached table
 * that no request holds and no find or commit touched for S seconds,
 * within 2S, with or without calls meanwhile, and RSS falls whether glibc
 * served the table from its heap or from mmap.
 *
 * The configuration is read once per process, so each case runs in a
 * subprocess started with its environment. S = 1 except in the target
 * cases (S = 2, RSS back within 6 s): the contract says "within 2S"; the
 * checks wait up to 2S plus IDLE_SLACK_S for a loaded machine, and report
 * how long the release took.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <malloc.h>
#include <stdio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "proc_self.h"

#define IDLE_S 1.0
/* Beyond the contract's 2S, for a loaded 2-core machine. */
#define IDLE_SLACK_S 2.0
#define BIG_TABLE (256 * 1024)

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

/* The table pointer as the idle thread may have just written it. */
static void *table_of(CachedL2Table *e)
{
    return __atomic_load_n(&e->table, __ATOMIC_ACQUIRE);
}

/* Waits up to 2S (plus the slack) for `n` idle releases of `c`. */
static void wait_for_releases(L2TableCache *c, uint64_t n)
{
    double t0 = now_s();
    while (qed_l2_cache_get_idle_releases(c) < n && now_s() - t0 < 2 * IDLE_S + IDLE_SLACK_S) {
        sleep_s(0.05);
    }
}

/* QEMU's read path for a table of `bytes` (qemu_blockalign, filled). */
static CachedL2Table *cache_table(L2TableCache *c, uint64_t offset, size_t bytes)
{
    CachedL2Table *e = qed_alloc_l2_cache_entry(c);
    void *t = NULL;
    g_assert_cmpint(posix_memalign(&t, 4096, bytes), ==, 0);
    memset(t, 0x5a, bytes);
    e->table = t;
    e->offset = offset;
    qed_commit_l2_cache_entry(c, e);
    CachedL2Table *found = qed_find_l2_cache_entry(c, offset);
    g_assert_true(found == e);
    qed_unref_l2_cache_entry(found);
    return e;
}

/* Runs the current test in a subprocess with QED_L2_CACHE_IDLE=value. */
static gboolean in_subprocess(const char *value)
{
    if (g_test_subprocess()) {
        return TRUE;
    }
    if (value) {
        g_setenv("QED_L2_CACHE_IDLE", value, TRUE);
    } else {
        g_unsetenv("QED_L2_CACHE_IDLE");
    }
    g_test_trap_subprocess(NULL, 60 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_DEFAULT);
    g_unsetenv("QED_L2_CACHE_IDLE");
    g_test_trap_assert_passed();
    return FALSE;
}

/*
 * Untouched tables go within 2S with no call meanwhile: their `table`
 * turns NULL while they stay on a valid list; the next call takes them
 * out, a find misses, and nothing counts as an eviction.
 */
static void test_release_without_calls(void)
{
    if (!in_subprocess("1")) {
        return;
    }
    g_assert_cmpint(thread_count(), ==, 1);
    L2TableCache *c = cache_new();
    g_assert_cmpint(thread_count(), ==, 2);
    CachedL2Table *e[8];
    double touched = now_s();
    for (unsigned i = 0; i < 8; i++) {
        e[i] = cache_table(c, table_offset(i), 4096);
    }
    unsigned left = 8;
    double released_at = 0;
    while (left > 0 && now_s() - touched < 2 * IDLE_S + IDLE_SLACK_S) {
        sleep_s(0.02);
        left = 0;
        for (unsigned i = 0; i < 8; i++) {
            left += table_of(e[i]) != NULL;
        }
        released_at = now_s();
    }
    g_test_message("8 tables released %.3f s after their last touch (S = 1)", released_at - touched);
    g_assert_cmpuint(left, ==, 0);
    g_assert_cmpfloat(released_at - touched, >=, IDLE_S);
    /* Still listed, table NULL, the cache's reference: a valid QTAILQ. */
    g_assert_cmpuint(check_list(c), ==, 8);
    for (unsigned i = 0; i < 8; i++) {
        g_assert_cmpint(e[i]->ref, ==, 1);
    }
    /* The next call takes them out: the find misses. */
    g_assert_null(qed_find_l2_cache_entry(c, table_offset(3)));
    g_assert_cmpuint(check_list(c), ==, 0);
    g_assert_cmpuint(qed_l2_cache_get_idle_releases(c), ==, 8);
    g_assert_cmpuint(qed_l2_cache_get_table_bytes(c), ==, 0);
    QedL2CacheStats s;
    qed_l2_cache_get_stats(c, &s);
    g_assert_cmpuint(s.evictions, ==, 0);
    g_assert_cmpuint(s.misses, ==, 1);
    /* The caller reads the table again, and it is cached as usual. */
    cache_table(c, table_offset(3), 4096);
    g_assert_cmpuint(check_list(c), ==, 1);
    cache_destroy(c);
}

/* Any call takes released entries out, a commit or a getter too. */
static void test_reaped_by_any_call(void)
{
    if (!in_subprocess("1")) {
        return;
    }
    L2TableCache *c = cache_new();
    CachedL2Table *a = cache_table(c, table_offset(0), 4096);
    double t0 = now_s();
    while (table_of(a) && now_s() - t0 < 2 * IDLE_S + IDLE_SLACK_S) {
        sleep_s(0.02);
    }
    g_assert_null(table_of(a));
    g_assert_cmpuint(c->n_entries, ==, 1);
    g_assert_cmpuint(qed_l2_cache_get_idle_releases(c), ==, 1);
    g_assert_cmpuint(check_list(c), ==, 0);
    /* And a commit after a release sees a consistent cache. */
    CachedL2Table *b = cache_table(c, table_offset(1), 4096);
    t0 = now_s();
    while (table_of(b) && now_s() - t0 < 2 * IDLE_S + IDLE_SLACK_S) {
        sleep_s(0.02);
    }
    g_assert_null(table_of(b));
    cache_table(c, table_offset(2), 4096);
    g_assert_cmpuint(check_list(c), ==, 1);
    g_assert_nonnull(list_lookup(c, table_offset(2)));
    cache_destroy(c);
}

/* Found every 0.5 s: kept; the untouched neighbour goes. */
static void test_found_tables_are_kept(void)
{
    if (!in_subprocess("1")) {
        return;
    }
    L2TableCache *c = cache_new();
    CachedL2Table *hot = cache_table(c, table_offset(0), 4096);
    CachedL2Table *cold = cache_table(c, table_offset(1), 4096);
    double t0 = now_s();
    while (now_s() - t0 < 2 * IDLE_S + IDLE_SLACK_S) {
        CachedL2Table *f = qed_find_l2_cache_entry(c, table_offset(0));
        g_assert_true(f == hot);
        g_assert_nonnull(f->table);
        qed_unref_l2_cache_entry(f);
        sleep_s(0.5);
    }
    g_assert_nonnull(table_of(hot));
    g_assert_null(list_lookup(c, table_offset(1)));
    (void)cold;
    g_assert_cmpuint(qed_l2_cache_get_idle_releases(c), ==, 1);
    g_assert_cmpuint(check_list(c), ==, 1);
    cache_destroy(c);
}

/* A table a request holds is never released; after its unref it goes. */
static void test_held_tables_are_kept(void)
{
    if (!in_subprocess("1")) {
        return;
    }
    L2TableCache *c = cache_new();
    cache_table(c, table_offset(0), 4096);
    CachedL2Table *held = qed_find_l2_cache_entry(c, table_offset(0));
    sleep_s(3 * IDLE_S);
    g_assert_nonnull(table_of(held));
    g_assert_cmpuint(qed_l2_cache_get_idle_releases(c), ==, 0);
    /* Untouched for 3 s already: it goes at the first sweep after this. */
    qed_unref_l2_cache_entry(held);
    double t0 = now_s();
    while (table_of(held) && now_s() - t0 < 2 * IDLE_S + IDLE_SLACK_S) {
        sleep_s(0.02);
    }
    g_test_message("released %.3f s after the unref", now_s() - t0);
    g_assert_null(table_of(held));
    g_assert_cmpuint(qed_l2_cache_get_idle_releases(c), ==, 1);
    cache_destroy(c);
}

/* The find after a commit always succeeds, across many sweeps. */
static void test_find_after_commit(void)
{
    if (!in_subprocess("1")) {
        return;
    }
    L2TableCache *c = cache_new();
    double t0 = now_s();
    unsigned n = 0;
    while (now_s() - t0 < 3 * IDLE_S) {
        for (unsigned i = 0; i < 200; i++, n++) {
            CachedL2Table *e = new_entry(c, table_offset(n % 5000));
            qed_commit_l2_cache_entry(c, e);
            CachedL2Table *f = qed_find_l2_cache_entry(c, table_offset(n % 5000));
            g_assert_nonnull(f);
            g_assert_nonnull(f->table);
            qed_unref_l2_cache_entry(f);
        }
        sleep_s(0.001);
    }
    g_test_message("%u commit + find pairs", n);
    check_list(c);
    cache_destroy(c);
}

/*
 * Where glibc serves 256 KiB tables from: its heap, with no trim of its
 * top (only what the library gives back lowers RSS), or mmap.
 */
static void tables_from(gboolean heap)
{
    if (heap) {
        g_assert_cmpint(mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024), ==, 1);
        g_assert_cmpint(mallopt(M_TRIM_THRESHOLD, 1 << 30), ==, 1);
    } else {
        g_assert_cmpint(mallopt(M_MMAP_THRESHOLD, 128 * 1024), ==, 1);
    }
}

/*
 * RSS falls by at least 80% of the released tables' bytes, with the
 * tables served from mmap or from the heap (mallopt decides; glibc's
 * count of mmap'd bytes, mallinfo2's hblkhd, confirms it).
 */
static void rss_falls(gboolean from_heap)
{
    enum { TABLES = 40 };
    tables_from(from_heap);
    L2TableCache *c = cache_new();
    size_t mapped0 = mallinfo2().hblkhd;
    for (unsigned i = 0; i < TABLES; i++) {
        cache_table(c, table_offset(i), BIG_TABLE);
    }
    /* glibc's count of bytes in mmap'd blocks says where they came from. */
    size_t mapped = mallinfo2().hblkhd - mapped0;
    if (from_heap) {
        g_assert_cmpuint(mapped, ==, 0);
    } else {
        g_assert_cmpuint(mapped, >=, (size_t)TABLES * BIG_TABLE);
    }
    long before = rss_bytes();
    uint64_t bytes = qed_l2_cache_get_table_bytes(c);
    g_assert_cmpuint(bytes, >=, (uint64_t)TABLES * BIG_TABLE);
    g_assert_cmpuint(bytes, <, (uint64_t)TABLES * (BIG_TABLE + 8192));
    double t0 = now_s();
    long after = before;
    while (now_s() - t0 < 2 * IDLE_S + IDLE_SLACK_S) {
        sleep_s(0.05);
        after = rss_bytes();
        if (before - after >= (long)(0.8 * TABLES * BIG_TABLE)) {
            break;
        }
    }
    g_test_message("%s: RSS %ld KiB -> %ld KiB (%u tables of 256 KiB released) in %.2f s",
                   from_heap ? "heap" : "mmap", before / 1024, after / 1024, TABLES, now_s() - t0);
    g_assert_cmpint(before - after, >=, (long)(0.8 * TABLES * BIG_TABLE));
    g_assert_cmpuint(qed_l2_cache_get_idle_releases(c), ==, TABLES);
    g_assert_cmpuint(qed_l2_cache_get_table_bytes(c), ==, 0);
    cache_destroy(c);
}

static void test_rss_mmap(void)
{
    if (in_subprocess("1")) {
        rss_falls(FALSE);
    }
}

static void test_rss_heap(void)
{
    if (in_subprocess("1")) {
        rss_falls(TRUE);
    }
}

/*
 * The release target at S = 2, in a process and in its fork child after
 * the child's first call: 40 unused 256 KiB tables give back at least 80%
 * of their bytes of RSS within 6 s (3S), while a table found every 0.5 s
 * and a table a request holds stay. RSS is read every 50 ms.
 */
#define TARGET_S 2.0
#define TARGET_WITHIN_S 6.0

/* Runs the watch of `c` and returns how long RSS took to fall (or -1). */
static double watch_target(L2TableCache *c, CachedL2Table *hot, CachedL2Table *held,
                           unsigned unused, gboolean *kept)
{
    /* The first call of this process on `c` (a fork child's starts its thread). */
    CachedL2Table *f = qed_find_l2_cache_entry(c, table_offset(0));
    *kept = f == hot;
    qed_unref_l2_cache_entry(f);
    long before = rss_bytes();
    long want = (long)(0.8 * unused * BIG_TABLE);
    double t0 = now_s(), last_find = t0, met = -1;
    while (now_s() - t0 < TARGET_WITHIN_S) {
        sleep_s(0.05);
        if (met < 0 && before - rss_bytes() >= want) {
            met = now_s() - t0;
        }
        if (now_s() - last_find >= 0.5) {
            f = qed_find_l2_cache_entry(c, table_offset(0));
            *kept &= f == hot && f->table != NULL;
            qed_unref_l2_cache_entry(f);
            last_find = now_s();
        }
    }
    *kept &= table_of(hot) != NULL && table_of(held) != NULL;
    *kept &= qed_l2_cache_get_idle_releases(c) == unused;
    return met;
}

static void idle_target(gboolean from_heap)
{
    enum { UNUSED = 40 };
    tables_from(from_heap);
    L2TableCache *c = cache_new();
    qed_l2_cache_set_max_entries(c, UNUSED + 2);
    CachedL2Table *hot = cache_table(c, table_offset(0), BIG_TABLE);
    cache_table(c, table_offset(1), BIG_TABLE);
    CachedL2Table *held = qed_find_l2_cache_entry(c, table_offset(1));
    for (unsigned i = 0; i < UNUSED; i++) {
        cache_table(c, table_offset(2 + i), BIG_TABLE);
    }
    int fds[2];
    g_assert_cmpint(pipe(fds), ==, 0);
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    gboolean kept;
    double met = watch_target(c, hot, held, UNUSED, &kept);
    if (pid == 0) {
        double report[2] = {met, kept};
        _exit(write(fds[1], report, sizeof(report)) == sizeof(report) ? 0 : 1);
    }
    double child[2] = {-1, 0};
    g_assert_cmpint(read(fds[0], child, sizeof(child)), ==, sizeof(child));
    int status;
    g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
    g_assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    g_test_message("%s, S = 2: RSS down by 80%% of %u unused tables' bytes after %.2f s "
                   "(fork child after its first call: %.2f s); limit %.0f s",
                   from_heap ? "heap" : "mmap", UNUSED, met, child[0], TARGET_WITHIN_S);
    g_assert_true(kept);
    g_assert_true(child[1] != 0);
    g_assert_cmpfloat(met, >=, 0);
    g_assert_cmpfloat(child[0], >=, 0);
    /* Nothing touched within S is released: not before S has passed. */
    g_assert_cmpfloat(met, >=, TARGET_S - 0.5);
    qed_unref_l2_cache_entry(held);
    cache_destroy(c);
}

static void test_target_mmap(void)
{
    if (in_subprocess("2")) {
        idle_target(FALSE);
    }
}

static void test_target_heap(void)
{
    if (in_subprocess("2")) {
        idle_target(TRUE);
    }
}

/*
 * Under QEMU's `-sandbox on` clone3 fails with ENOSYS (its seccomp filter
 * refuses it so that glibc falls back to clone): the thread still starts
 * and releases. The same filter here, installed before the first cache.
 */
static void test_clone3_refused(void)
{
    if (!in_subprocess("1")) {
        return;
    }
#ifdef __NR_clone3
    struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone3, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {G_N_ELEMENTS(code), code};
    g_assert_cmpint(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), ==, 0);
    g_assert_cmpint(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog), ==, 0);
    /* The filter is in force: clone3 itself is refused. */
    errno = 0;
    g_assert_cmpint(syscall(__NR_clone3, NULL, 0), ==, -1);
    g_assert_cmpint(errno, ==, ENOSYS);
#endif
    g_assert_cmpint(thread_count(), ==, 1);
    L2TableCache *c = cache_new();
    g_assert_cmpint(thread_count(), ==, 2);
    for (unsigned i = 0; i < 4; i++) {
        cache_table(c, table_offset(i), 4096);
    }
    wait_for_releases(c, 4);
    g_assert_cmpuint(qed_l2_cache_get_idle_releases(c), ==, 4);
    cache_destroy(c);
}

/*
 * A fork child has no thread of the parent's: its first call starts its
 * own, which releases the child's tables; the parent's thread goes on.
 */
static void test_fork_child(void)
{
    if (!in_subprocess("1")) {
        return;
    }
    L2TableCache *c = cache_new();
    CachedL2Table *e[4];
    for (unsigned i = 0; i < 4; i++) {
        e[i] = cache_table(c, table_offset(i), 4096);
    }
    g_assert_cmpint(thread_count(), ==, 2);
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0) {
        int ok = thread_count() == 1;
        /* The first call: a hit, which touches table 0. */
        CachedL2Table *f = qed_find_l2_cache_entry(c, table_offset(0));
        ok &= f == e[0];
        qed_unref_l2_cache_entry(f);
        ok &= thread_count() == 2;
        wait_for_releases(c, 4);
        ok &= qed_l2_cache_get_idle_releases(c) == 4;
        ok &= check_list(c) == 0;
        qed_free_l2_cache(c);
        _exit(ok ? 0 : 1);
    }
    int status;
    g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
    g_assert_true(WIFEXITED(status));
    g_assert_cmpint(WEXITSTATUS(status), ==, 0);
    wait_for_releases(c, 4);
    g_assert_cmpuint(qed_l2_cache_get_idle_releases(c), ==, 4);
    cache_destroy(c);
}

/*
 * Off (unset or 0): no thread, no release, and the getters still answer
 * (the table bytes summed on demand).
 */
static void off(const char *value)
{
    if (!in_subprocess(value)) {
        return;
    }
    L2TableCache *c = cache_new();
    CachedL2Table *e = cache_table(c, table_offset(0), BIG_TABLE);
    g_assert_cmpint(thread_count(), ==, 1);
    g_assert_cmpuint(qed_l2_cache_get_table_bytes(c), ==, malloc_usable_size(e->table));
    sleep_s(2.5 * IDLE_S);
    g_assert_nonnull(e->table);
    g_assert_cmpuint(qed_l2_cache_get_idle_releases(c), ==, 0);
    g_assert_cmpint(thread_count(), ==, 1);
    cache_destroy(c);
}

static void test_off_unset(void)
{
    off(NULL);
}

static void test_off_zero(void)
{
    off("0");
}

/* The thread exits once no cache has idle release on, and comes back. */
static void test_thread_only_while_needed(void)
{
    if (!in_subprocess("1")) {
        return;
    }
    for (int round = 0; round < 2; round++) {
        L2TableCache *c = cache_new();
        cache_table(c, table_offset(0), 4096);
        g_assert_cmpint(thread_count(), ==, 2);
        cache_destroy(c);
        double t0 = now_s();
        while (thread_count() > 1 && now_s() - t0 < IDLE_S + IDLE_SLACK_S) {
            sleep_s(0.02);
        }
        g_assert_cmpint(thread_count(), ==, 1);
    }
}

/* Exit while the thread runs and caches hold tables: a clean exit. */
static void test_exit_with_the_thread_running(void)
{
    if (!g_test_subprocess()) {
        g_setenv("QED_L2_CACHE_IDLE", "1", TRUE);
        g_test_trap_subprocess(NULL, 30 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_DEFAULT);
        g_unsetenv("QED_L2_CACHE_IDLE");
        g_test_trap_assert_passed();
        g_test_trap_assert_stderr_unmatched("*qed-l2-cache*");
        return;
    }
    L2TableCache *c = cache_new();
    cache_table(c, table_offset(0), 4096);
    CachedL2Table *held = qed_find_l2_cache_entry(c, table_offset(0));
    (void)held;
    sleep_s(0.3);
    exit(0);
}

/* A bad value: one line naming the variable and the value; default (off). */
static void test_bad_values(void)
{
    static const char *bad[] = {"-1", "12Q", "1e9", " 64", "64 ", "5s", "+5", "",
                                "18446744074", "18446744073709551616"};
    if (g_test_subprocess()) {
        L2TableCache *c = cache_new();
        cache_table(c, table_offset(0), 4096);
        L2TableCache *d = cache_new();
        g_assert_cmpint(thread_count(), ==, 1);
        cache_destroy(d);
        cache_destroy(c);
        return;
    }
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_setenv("QED_L2_CACHE_IDLE", bad[i], TRUE);
        g_test_trap_subprocess(NULL, 30 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_DEFAULT);
        g_test_trap_assert_passed();
        char *once = g_strdup_printf("*qed-l2-cache: ignoring QED_L2_CACHE_IDLE=\"%s\": expected "
                                     "seconds*(default 600 in auto mode, 0 otherwise); using the default\n*",
                                     bad[i]);
        char *twice = g_strdup_printf("*QED_L2_CACHE_IDLE*QED_L2_CACHE_IDLE*");
        g_test_trap_assert_stderr(once);
        g_test_trap_assert_stderr_unmatched(twice);
        g_free(once);
        g_free(twice);
    }
    g_unsetenv("QED_L2_CACHE_IDLE");
}

/* The getters check their cache like every call: NULL is a misuse. */
static void test_getters_misuse(void)
{
    if (!g_test_subprocess()) {
        g_setenv("QED_L2_CACHE_ON_MISUSE", "warn", TRUE);
        g_test_trap_subprocess(NULL, 30 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_DEFAULT);
        g_unsetenv("QED_L2_CACHE_ON_MISUSE");
        g_test_trap_assert_passed();
        g_test_trap_assert_stderr("*qed_l2_cache_get_idle_releases: l2_cache is NULL*"
                                  "qed_l2_cache_get_table_bytes: l2_cache is NULL*"
                                  "qed_l2_cache_get_table_bytes: l2_cache * not initialised*");
        return;
    }
    g_assert_cmpuint(qed_l2_cache_get_idle_releases(NULL), ==, 0);
    g_assert_cmpuint(qed_l2_cache_get_table_bytes(NULL), ==, 0);
    L2TableCache zeroed;
    memset(&zeroed, 0, sizeof(zeroed));
    g_assert_cmpuint(qed_l2_cache_get_table_bytes(&zeroed), ==, 0);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/idle/release-without-calls", test_release_without_calls);
    g_test_add_func("/idle/reaped-by-any-call", test_reaped_by_any_call);
    g_test_add_func("/idle/found-tables-are-kept", test_found_tables_are_kept);
    g_test_add_func("/idle/held-tables-are-kept", test_held_tables_are_kept);
    g_test_add_func("/idle/find-after-commit", test_find_after_commit);
    g_test_add_func("/idle/rss-mmap", test_rss_mmap);
    g_test_add_func("/idle/rss-heap", test_rss_heap);
    g_test_add_func("/idle/fork-child", test_fork_child);
    g_test_add_func("/idle/clone3-refused", test_clone3_refused);
    g_test_add_func("/idle/target-s2-mmap", test_target_mmap);
    g_test_add_func("/idle/target-s2-heap", test_target_heap);
    g_test_add_func("/idle/off-unset", test_off_unset);
    g_test_add_func("/idle/off-zero", test_off_zero);
    g_test_add_func("/idle/thread-only-while-needed", test_thread_only_while_needed);
    g_test_add_func("/idle/exit-with-the-thread-running", test_exit_with_the_thread_running);
    g_test_add_func("/idle/bad-values", test_bad_values);
    g_test_add_func("/idle/getters-misuse", test_getters_misuse);
    return g_test_run();
}
