/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Loading and unloading the library (docs/misuse.md, "Never worse than the
 * C file"). This program does not link the library: it dlopen()s the file
 * named by QED_L2_CACHE_SO, so every dlclose() really unloads it (a linked
 * copy never would, and such a test would measure nothing).
 *
 * - 1,000 cycles of load, init, 2,000 commits, free, unload, after 10
 *   cycles of warm-up, grow the resident set by less than 1 MiB.
 * - A fork() after the library was unloaded must not run any of its code
 *   (its fork handlers are gone with it).
 * - With QED_L2_CACHE_STATS=1 (docs/statistics.md) each copy publishes its
 *   file, and dlclose removes it with its descriptors (and its mappings
 *   when no cache is left): 300 cycles leave no file, no descriptor, no
 *   mapping of the file, and grow the resident set by less than 1 MiB.
 * - With QED_L2_CACHE_IDLE=1 (docs/idle.md) each copy runs its idle
 *   thread, and dlclose stops and joins it, also with a cache still
 *   initialised and with tables released: 300 cycles leave no thread and
 *   grow the resident set by less than 1 MiB.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sched.h>
#include <stdatomic.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "proc_self.h"

/* QEMU's declarations (block/qed.h), as any caller has them. */
typedef struct QTailQLink {
    void *tql_next;
    struct QTailQLink *tql_prev;
} QTailQLink;

typedef struct CachedL2Table {
    void *table;
    uint64_t offset;
    union {
        struct CachedL2Table *tqe_next;
        QTailQLink tqe_circ;
    } node;
    int ref;
} CachedL2Table;

typedef struct {
    union {
        CachedL2Table *tqh_first;
        QTailQLink tqh_circ;
    } entries;
    unsigned int n_entries;
} L2TableCache;

typedef struct {
    void *handle;
    void (*init)(L2TableCache *);
    void (*free_cache)(L2TableCache *);
    CachedL2Table *(*alloc)(L2TableCache *);
    void (*unref)(CachedL2Table *);
    CachedL2Table *(*find)(L2TableCache *, uint64_t);
    void (*commit)(L2TableCache *, CachedL2Table *);
} Lib;

static const char *so_path(void)
{
    const char *p = g_getenv("QED_L2_CACHE_SO");
    g_assert_nonnull(p);
    return p;
}

static Lib load(void)
{
    Lib l;
    l.handle = dlopen(so_path(), RTLD_NOW | RTLD_LOCAL);
    if (!l.handle) {
        g_error("dlopen %s: %s", so_path(), dlerror());
    }
#define SYM(field, name)                          \
    do {                                          \
        void *sym = dlsym(l.handle, name);        \
        g_assert_nonnull(sym);                    \
        memcpy(&l.field, &sym, sizeof(sym));      \
    } while (0)
    SYM(init, "qed_init_l2_cache");
    SYM(free_cache, "qed_free_l2_cache");
    SYM(alloc, "qed_alloc_l2_cache_entry");
    SYM(unref, "qed_unref_l2_cache_entry");
    SYM(find, "qed_find_l2_cache_entry");
    SYM(commit, "qed_commit_l2_cache_entry");
#undef SYM
    return l;
}

static void unload(Lib *l)
{
    g_assert_cmpint(dlclose(l->handle), ==, 0);
    /* Really gone: RTLD_NOLOAD finds no loaded copy. */
    void *again = dlopen(so_path(), RTLD_NOW | RTLD_NOLOAD);
    if (again) {
        dlclose(again);
        g_error("%s is still loaded after dlclose (something pins it)", so_path());
    }
}

static void use(Lib *l, unsigned commits)
{
    L2TableCache *c = g_malloc0(sizeof(*c));
    l->init(c);
    for (unsigned i = 0; i < commits; i++) {
        CachedL2Table *e = l->alloc(c);
        e->table = malloc(64);
        e->offset = (uint64_t)(i + 1) << 16;
        l->commit(c, e);
        CachedL2Table *f = l->find(c, e->offset);
        g_assert_true(f == e);
        l->unref(f);
    }
    l->free_cache(c);
    g_free(c);
}

/* Waits for child `pid` and asserts that it exited with status 0. */
static void assert_child_ok(pid_t pid)
{
    int status;
    g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
    g_assert_true(WIFEXITED(status));
    g_assert_cmpint(WEXITSTATUS(status), ==, 0);
}

/* Forks a child that makes `commits` commits through `lib`, then exits. */
static pid_t fork_child_using(Lib *lib, unsigned commits)
{
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0) {
        use(lib, commits);
        _exit(0);
    }
    return pid;
}

static void test_load_unload_cycles(void)
{
    long before = 0;
    for (unsigned cycle = 0; cycle < 1010; cycle++) {
        if (cycle == 10) {
            before = rss_bytes();
        }
        Lib l = load();
        use(&l, 2000);
        unload(&l);
    }
    long growth = rss_bytes() - before;
    g_test_message("RSS growth over 1,000 cycles: %ld KiB", growth / 1024);
    g_assert_cmpint(growth, <, 1024 * 1024);
}

/* Lines of /proc/self/maps that name `dir`. */
static int mappings_under(const char *dir)
{
    char *maps = NULL;
    g_assert_true(g_file_get_contents("/proc/self/maps", &maps, NULL, NULL));
    int n = 0;
    for (char *p = maps; (p = strstr(p, dir)); p++) {
        n++;
    }
    g_free(maps);
    return n;
}

/* Entries in `dir` (-1: no such directory). */
static int entries_in(const char *dir)
{
    GDir *d = g_dir_open(dir, 0, NULL);
    if (!d) {
        return -1;
    }
    int n = 0;
    while (g_dir_read_name(d)) {
        n++;
    }
    g_dir_close(d);
    return n;
}

/* One load with statistics on: a cache made (the file published), then
 * freed and 50 commits more when `free_all`, else left initialised; the
 * unload removes the file either way. */
static void stats_cycle(const char *sub, const char *file, gboolean free_all)
{
    Lib l = load();
    L2TableCache *c = g_malloc0(sizeof(*c));
    l.init(c);
    CachedL2Table *e = l.alloc(c);
    e->table = malloc(64);
    e->offset = 1 << 16;
    l.commit(c, e);
    g_assert_true(g_file_test(file, G_FILE_TEST_IS_REGULAR));
    g_assert_cmpint(mappings_under(sub), >=, 1);
    if (free_all) {
        l.free_cache(c);
        use(&l, 50);
    }
    unload(&l);
    g_free(c);
    g_assert_cmpint(entries_in(sub), ==, 0);
}

static void test_stats_file_goes_at_dlclose(void)
{
    char *dir = g_dir_make_tmp("qed-stats-dlopen-XXXXXX", NULL);
    g_assert_nonnull(dir);
    char *sub = g_build_filename(dir, "qed-l2-cache", NULL);
    char name[32];
    g_snprintf(name, sizeof(name), "%d", (int)getpid());
    char *file = g_build_filename(sub, name, NULL);
    g_setenv("XDG_RUNTIME_DIR", dir, TRUE);
    g_setenv("QED_L2_CACHE_STATS", "1", TRUE);
    int fds_before = open_fds();
    long rss_before = 0;
    for (unsigned cycle = 0; cycle < 310; cycle++) {
        if (cycle == 10) {
            rss_before = rss_bytes();
        }
        stats_cycle(sub, file, TRUE);
        /* Nothing left: no descriptor, no mapping of the file. */
        g_assert_cmpint(open_fds(), ==, fds_before);
        g_assert_cmpint(mappings_under(sub), ==, 0);
    }
    long growth = rss_bytes() - rss_before;
    g_test_message("RSS growth over 300 cycles with statistics on: %ld KiB", growth / 1024);
    g_assert_cmpint(growth, <, 1024 * 1024);
    /* Unloaded with a cache still initialised: the file and its
     * descriptors go all the same; its mapping stays, as the library's
     * other state does (nothing may unmap what a cache could still use). */
    for (unsigned cycle = 0; cycle < 10; cycle++) {
        stats_cycle(sub, file, FALSE);
        g_assert_cmpint(open_fds(), ==, fds_before);
    }
    g_unsetenv("QED_L2_CACHE_STATS");
    g_unsetenv("XDG_RUNTIME_DIR");
    g_assert_cmpint(g_rmdir(sub), ==, 0);
    g_assert_cmpint(g_rmdir(dir), ==, 0);
    g_free(file);
    g_free(sub);
    g_free(dir);
}

/* One load with idle release on: the library's thread runs while the
 * cache does; after `wait` seconds its table may be released; the unload
 * joins the thread, the cache freed first when `free_all`. */
static void idle_cycle(int threads, gboolean free_all, double wait)
{
    Lib l = load();
    L2TableCache *c = g_malloc0(sizeof(*c));
    l.init(c);
    g_assert_cmpint(thread_count(), ==, threads + 1);
    CachedL2Table *e = l.alloc(c);
    e->table = malloc(64);
    e->offset = 1 << 16;
    l.commit(c, e);
    if (wait > 0) {
        g_usleep((gulong)(wait * G_USEC_PER_SEC));
        g_assert_null(__atomic_load_n(&e->table, __ATOMIC_ACQUIRE));
    }
    if (free_all) {
        l.free_cache(c);
        use(&l, 50);
    }
    unload(&l);
    g_free(c);
    /* pthread_join returns once the kernel cleared the thread's id, which
     * it does a moment before the thread leaves /proc/self/task: on a
     * loaded machine the count can lag the join, so give it a second. */
    for (int i = 0; i < 1000 && thread_count() != threads; i++) {
        g_usleep(1000);
    }
    g_assert_cmpint(thread_count(), ==, threads);
}

static void test_idle_thread_joined_at_dlclose(void)
{
    g_setenv("QED_L2_CACHE_IDLE", "1", TRUE);
    int threads = thread_count();
    long rss_before = 0;
    for (unsigned cycle = 0; cycle < 310; cycle++) {
        if (cycle == 10) {
            rss_before = rss_bytes();
        }
        idle_cycle(threads, TRUE, 0);
    }
    long growth = rss_bytes() - rss_before;
    g_test_message("RSS growth over 300 cycles with idle release on: %ld KiB", growth / 1024);
    g_assert_cmpint(growth, <, 1024 * 1024);
    /* A table released before the unload (S = 1: within 2 s; 3 s given),
     * and caches left initialised: the thread is joined all the same. */
    idle_cycle(threads, TRUE, 3.0);
    idle_cycle(threads, FALSE, 3.0);
    for (unsigned cycle = 0; cycle < 10; cycle++) {
        idle_cycle(threads, FALSE, 0);
    }
    g_unsetenv("QED_L2_CACHE_IDLE");
}

static void test_fork_after_unload(void)
{
    Lib l = load();
    use(&l, 100); /* the library has registered its fork handlers */
    unload(&l);
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0) {
        _exit(0);
    }
    assert_child_ok(pid);
}

/*
 * A thread that used the library is still alive when it is unloaded, and
 * exits afterwards: its exit must not call into the unloaded library. And
 * such threads across 1,100 load/unload cycles (a thread pool) must not
 * exhaust anything per cycle (each copy of the library gives back its
 * thread key when unloaded).
 */
typedef struct {
    Lib *lib;
    GMutex m;
    GCond cv;
    int stage;
} Pool;

static void *pool_worker(void *arg)
{
    Pool *p = arg;
    for (;;) {
        g_mutex_lock(&p->m);
        while (p->stage == 0) {
            g_cond_wait(&p->cv, &p->m);
        }
        int stage = p->stage;
        g_mutex_unlock(&p->m);
        if (stage == 2) {
            return NULL; /* exits after the last unload */
        }
        p->lib->unref(p->lib->alloc(NULL));
        g_mutex_lock(&p->m);
        p->stage = 0;
        g_cond_broadcast(&p->cv);
        g_mutex_unlock(&p->m);
    }
}

static void test_thread_outlives_unload(void)
{
    Pool p = { 0 };
    g_mutex_init(&p.m);
    g_cond_init(&p.cv);
    pthread_t t;
    g_assert_cmpint(pthread_create(&t, NULL, pool_worker, &p), ==, 0);
    for (unsigned cycle = 0; cycle < 1100; cycle++) {
        Lib l = load();
        p.lib = &l;
        g_mutex_lock(&p.m);
        p.stage = 1;
        g_cond_broadcast(&p.cv);
        while (p.stage != 0) {
            g_cond_wait(&p.cv, &p.m);
        }
        g_mutex_unlock(&p.m);
        unload(&l);
    }
    g_mutex_lock(&p.m);
    p.stage = 2;
    g_cond_broadcast(&p.cv);
    g_mutex_unlock(&p.m);
    g_assert_cmpint(pthread_join(t, NULL), ==, 0);
}

/*
 * Fork handlers the program registered before it loaded the library run
 * inside the library's own fork window (glibc: prepare handlers in reverse
 * order of registration, parent and child handlers in order), while the
 * library holds its locks for the fork. Calls from there must work, as
 * they do with the C file, which takes no lock (found by an adversarial
 * tester: they spun for ever). Each case runs in a subprocess of its own,
 * with a time limit, so its handlers stay out of the other tests.
 */
static Lib fork_lib;
static atomic_int fork_handlers_on;

static void use_in_handler(void)
{
    if (!atomic_load(&fork_handlers_on)) {
        return;
    }
    /* Enough allocations to grow this thread's ledger table, and a cache
     * made and freed (the registry). */
    CachedL2Table *e[40];
    for (unsigned i = 0; i < 40; i++) {
        e[i] = fork_lib.alloc(NULL);
    }
    for (unsigned i = 0; i < 40; i++) {
        fork_lib.unref(e[i]);
    }
    use(&fork_lib, 3);
}

static void test_atfork_handlers_call_the_library(void)
{
    if (g_test_subprocess()) {
        g_assert_cmpint(pthread_atfork(use_in_handler, use_in_handler, use_in_handler), ==, 0);
        fork_lib = load();
        use(&fork_lib, 10);
        atomic_store(&fork_handlers_on, 1);
        pid_t pid = fork_child_using(&fork_lib, 10);
        assert_child_ok(pid);
        use(&fork_lib, 10);
        return;
    }
    g_test_trap_subprocess(NULL, 60 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_DEFAULT);
    g_test_trap_assert_passed();
}

/*
 * A thread makes its first library call inside the fork window (from the
 * program's prepare handler), so its ledger is not among those the
 * library locked for the fork, and rebuilds its live table from the
 * program's parent handler while another thread releases its entries.
 * The library's parent handler must not release that ledger's lock from
 * under its owner: the releases would then be lost in the rebuild and the
 * released entries taken for live (found by an adversarial tester: most
 * of the double unrefs below were then taken for live, and the library
 * read the released blocks). Warn mode: every double unref must be
 * reported as one.
 */
#define WINDOW_ENTRIES (1u << 19)
#define WINDOW_RELEASES 4000

static CachedL2Table **window_entries;
static atomic_int window_go, window_ready, window_rebuild, window_release, window_released;

static void *window_owner(void *arg)
{
    (void)arg;
    while (!atomic_load(&window_go)) {
        sched_yield();
    }
    for (unsigned i = 0; i < WINDOW_ENTRIES; i++) {
        window_entries[i] = fork_lib.alloc(NULL);
    }
    atomic_store(&window_ready, 1);
    while (!atomic_load(&window_rebuild)) {
        sched_yield();
    }
    window_entries[WINDOW_ENTRIES] = fork_lib.alloc(NULL); /* grows the table: a long rebuild */
    while (!atomic_load(&window_released)) {
        sched_yield();
    }
    for (unsigned i = 0; i < WINDOW_RELEASES; i++) {
        fork_lib.unref(window_entries[i * 64]); /* double unrefs, on purpose */
    }
    return NULL;
}

static void *window_releaser(void *arg)
{
    (void)arg;
    while (!atomic_load(&window_release)) {
        sched_yield();
    }
    for (unsigned i = 0; i < WINDOW_RELEASES; i++) {
        fork_lib.unref(window_entries[i * 64]); /* each one's last reference */
    }
    atomic_store(&window_released, 1);
    return NULL;
}

static void window_prepare(void)
{
    if (!atomic_load(&fork_handlers_on)) {
        return;
    }
    atomic_store(&window_go, 1);
    while (!atomic_load(&window_ready)) {
        sched_yield();
    }
}

static void window_parent(void)
{
    if (!atomic_load(&fork_handlers_on)) {
        return;
    }
    atomic_store(&window_rebuild, 1);
    g_usleep(1000);
    atomic_store(&window_release, 1);
    g_usleep(2000);
}

static void test_ledger_created_during_fork(void)
{
    if (g_test_subprocess()) {
        g_assert_cmpint(pthread_atfork(window_prepare, window_parent, NULL), ==, 0);
        fork_lib = load();
        use(&fork_lib, 10);
        window_entries = g_new0(CachedL2Table *, WINDOW_ENTRIES + 1);
        pthread_t owner, releaser;
        g_assert_cmpint(pthread_create(&owner, NULL, window_owner, NULL), ==, 0);
        g_assert_cmpint(pthread_create(&releaser, NULL, window_releaser, NULL), ==, 0);
        atomic_store(&fork_handlers_on, 1);
        pid_t pid = fork();
        g_assert_cmpint(pid, >=, 0);
        if (pid == 0) {
            _exit(0);
        }
        atomic_store(&fork_handlers_on, 0);
        int status;
        g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
        g_assert_cmpint(pthread_join(owner, NULL), ==, 0);
        g_assert_cmpint(pthread_join(releaser, NULL), ==, 0);
        return;
    }
    g_setenv("QED_L2_CACHE_ON_MISUSE", "warn", TRUE);
    for (unsigned round = 0; round < 3; round++) {
        g_test_trap_subprocess(NULL, 120 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_DEFAULT);
        g_test_trap_assert_passed();
        g_test_trap_assert_stderr("*double unref*");
        g_test_trap_assert_stderr_unmatched("*does not hold*");
        g_test_trap_assert_stderr_unmatched("*not allocated*");
    }
}

/*
 * The textbook fork handlers of a program (lock its mutex before the
 * fork, unlock after), registered before it loads the library, while a
 * worker calls the library with that mutex held. A library fork handler
 * that took the library's locks would run first and wait for the worker,
 * which waits for it (found by an adversarial tester: a hang at the first
 * fork). The C file takes no lock; neither may the library's handlers.
 */
static pthread_mutex_t inversion_mutex = PTHREAD_MUTEX_INITIALIZER;
static atomic_int inversion_stop;

static void inversion_lock(void)
{
    pthread_mutex_lock(&inversion_mutex);
}

static void inversion_unlock(void)
{
    pthread_mutex_unlock(&inversion_mutex);
}

static void *inversion_worker(void *arg)
{
    (void)arg;
    while (!atomic_load(&inversion_stop)) {
        pthread_mutex_lock(&inversion_mutex);
        use(&fork_lib, 2); /* init, alloc, commit, find, unref, free */
        CachedL2Table *e[64];
        for (unsigned i = 0; i < 64; i++) {
            e[i] = fork_lib.alloc(NULL); /* this thread's table grows */
        }
        for (unsigned i = 0; i < 64; i++) {
            fork_lib.unref(e[i]);
        }
        pthread_mutex_unlock(&inversion_mutex);
    }
    return NULL;
}

static void test_fork_handlers_lock_a_mutex_the_caller_holds(void)
{
    if (g_test_subprocess()) {
        g_assert_cmpint(pthread_atfork(inversion_lock, inversion_unlock, inversion_unlock), ==, 0);
        fork_lib = load();
        pthread_t worker;
        g_assert_cmpint(pthread_create(&worker, NULL, inversion_worker, NULL), ==, 0);
        for (unsigned i = 0; i < 300; i++) {
            pid_t pid = fork_child_using(&fork_lib, 2);
            assert_child_ok(pid);
        }
        atomic_store(&inversion_stop, 1);
        g_assert_cmpint(pthread_join(worker, NULL), ==, 0);
        return;
    }
    g_test_trap_subprocess(NULL, 120 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_DEFAULT);
    g_test_trap_assert_passed();
}

/*
 * A single-threaded program whose fork handlers (registered before it
 * loads the library) fork once more, in the parent and in the child
 * (found by an adversarial tester: the nested fork hung on the locks the
 * outer one held).
 */
static int nested_depth;

static void nested_fork(void)
{
    if (!atomic_load(&fork_handlers_on) || nested_depth) {
        return;
    }
    nested_depth = 1;
    pid_t pid = fork();
    if (pid == 0) {
        use(&fork_lib, 2);
        _exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    nested_depth = 0;
}

static void test_fork_from_a_fork_handler(void)
{
    if (g_test_subprocess()) {
        g_assert_cmpint(pthread_atfork(NULL, nested_fork, nested_fork), ==, 0);
        fork_lib = load();
        use(&fork_lib, 5);
        atomic_store(&fork_handlers_on, 1);
        pid_t pid = fork_child_using(&fork_lib, 5);
        atomic_store(&fork_handlers_on, 0);
        assert_child_ok(pid);
        use(&fork_lib, 5);
        return;
    }
    g_test_trap_subprocess(NULL, 60 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_DEFAULT);
    g_test_trap_assert_passed();
}

/*
 * The program's child handler (registered before the library was loaded,
 * so it runs before the library's) releases an entry of a thread that
 * was growing its table at the fork: the lock that thread held is a lock
 * no thread of the child will release (found by an adversarial tester:
 * the child spun for ever in 4 of 6 runs).
 */
static CachedL2Table *vanished_entry;
static atomic_int vanished_go, vanished_ready, vanished_stop;

static void *vanished_worker(void *arg)
{
    (void)arg;
    while (!atomic_load(&vanished_go)) {
        sched_yield();
    }
    vanished_entry = fork_lib.alloc(NULL);
    atomic_store(&vanished_ready, 1);
    while (!atomic_load(&vanished_stop)) {
        CachedL2Table *e[256];
        for (unsigned i = 0; i < 256; i++) {
            e[i] = fork_lib.alloc(NULL); /* grows its table, under its lock */
        }
        for (unsigned i = 0; i < 256; i++) {
            fork_lib.unref(e[i]);
        }
    }
    return NULL;
}

static void vanished_prepare(void)
{
    if (!atomic_load(&fork_handlers_on)) {
        return;
    }
    atomic_store(&vanished_go, 1);
    while (!atomic_load(&vanished_ready)) {
        sched_yield();
    }
    g_usleep(5000);
}

static void vanished_child(void)
{
    if (atomic_load(&fork_handlers_on)) {
        fork_lib.unref(vanished_entry); /* its last reference: ours now */
    }
}

static void test_child_handler_meets_a_vanished_threads_lock(void)
{
    if (g_test_subprocess()) {
        g_assert_cmpint(pthread_atfork(vanished_prepare, NULL, vanished_child), ==, 0);
        fork_lib = load();
        use(&fork_lib, 5);
        pthread_t worker;
        g_assert_cmpint(pthread_create(&worker, NULL, vanished_worker, NULL), ==, 0);
        atomic_store(&fork_handlers_on, 1);
        pid_t pid = fork_child_using(&fork_lib, 5);
        atomic_store(&fork_handlers_on, 0);
        atomic_store(&vanished_stop, 1);
        g_assert_cmpint(pthread_join(worker, NULL), ==, 0);
        assert_child_ok(pid);
        return;
    }
    for (unsigned round = 0; round < 6; round++) {
        g_test_trap_subprocess(NULL, 30 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_DEFAULT);
        g_test_trap_assert_passed();
    }
}

/*
 * A fork child with several threads before the library's child handler
 * has run (a program child handler registered before the library was
 * loaded starts them), and a child of _Fork(), which runs no handlers,
 * that starts threads. Locks taken by the child's own threads must be
 * waited for, not taken over as if held by a thread of the parent (found
 * by an adversarial tester: two threads then shared the registry lock;
 * 20 of 20 children crashed or reported misuse).
 */
pid_t _Fork(void);

static void *child_churn(void *arg)
{
    (void)arg;
    for (unsigned i = 0; i < 1000; i++) {
        use(&fork_lib, 3); /* init, alloc, commit, find, unref, free */
    }
    return NULL;
}

static void child_threads(void)
{
    if (!atomic_load(&fork_handlers_on)) {
        return;
    }
    pthread_t t[4];
    for (unsigned i = 0; i < 4; i++) {
        g_assert_cmpint(pthread_create(&t[i], NULL, child_churn, NULL), ==, 0);
    }
    for (unsigned i = 0; i < 4; i++) {
        g_assert_cmpint(pthread_join(t[i], NULL), ==, 0);
    }
}

static void fork_children_with_threads(gboolean underscore)
{
    fork_lib = load();
    static L2TableCache before[100];
    for (unsigned i = 0; i < 100; i++) {
        fork_lib.init(&before[i]);
    }
    for (unsigned round = 0; round < 10; round++) {
        atomic_store(&fork_handlers_on, 1);
        pid_t pid = underscore ? _Fork() : fork();
        g_assert_cmpint(pid, >=, 0);
        if (pid == 0) {
            if (underscore) {
                child_threads();
            }
            _exit(0);
        }
        atomic_store(&fork_handlers_on, 0);
        assert_child_ok(pid);
    }
    for (unsigned i = 0; i < 100; i++) {
        fork_lib.free_cache(&before[i]);
    }
}

static void test_fork_child_threads_before_the_handler(void)
{
    if (g_test_subprocess()) {
        g_assert_cmpint(pthread_atfork(NULL, NULL, child_threads), ==, 0);
        fork_children_with_threads(FALSE);
        return;
    }
    g_test_trap_subprocess(NULL, 120 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_DEFAULT);
    g_test_trap_assert_passed();
    g_test_trap_assert_stderr_unmatched("*qed-l2-cache*");
}

static void test_underscore_fork_child_with_threads(void)
{
    if (g_test_subprocess()) {
        fork_children_with_threads(TRUE);
        return;
    }
    g_test_trap_subprocess(NULL, 120 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_DEFAULT);
    g_test_trap_assert_passed();
    g_test_trap_assert_stderr_unmatched("*qed-l2-cache*");
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/dlopen/load-unload-cycles", test_load_unload_cycles);
    g_test_add_func("/dlopen/fork-after-unload", test_fork_after_unload);
    g_test_add_func("/dlopen/stats-file-goes-at-dlclose", test_stats_file_goes_at_dlclose);
    g_test_add_func("/dlopen/thread-outlives-unload", test_thread_outlives_unload);
    g_test_add_func("/dlopen/idle-thread-joined-at-dlclose", test_idle_thread_joined_at_dlclose);
    g_test_add_func("/dlopen/atfork-handlers-call-the-library", test_atfork_handlers_call_the_library);
    g_test_add_func("/dlopen/ledger-created-during-fork", test_ledger_created_during_fork);
    g_test_add_func("/dlopen/fork-handlers-lock-a-mutex-the-caller-holds",
                    test_fork_handlers_lock_a_mutex_the_caller_holds);
    g_test_add_func("/dlopen/fork-from-a-fork-handler", test_fork_from_a_fork_handler);
    g_test_add_func("/dlopen/child-handler-meets-a-vanished-threads-lock",
                    test_child_handler_meets_a_vanished_threads_lock);
    g_test_add_func("/dlopen/fork-child-threads-before-the-handler", test_fork_child_threads_before_the_handler);
    g_test_add_func("/dlopen/underscore-fork-child-with-threads", test_underscore_fork_child_with_threads);
    return g_test_run();
}
