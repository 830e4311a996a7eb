/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Failures the C file never had, for correct callers (docs/misuse.md,
 * "Never worse than the C file"), that need a plain build: valgrind's and
 * ASan's own bookkeeping would make them time out (meson suite 'plain').
 *
 * - No limit on the number of caches initialised at once.
 * - fork() from one thread while others are inside the library: the child
 *   must never find a lock held (each child has 10 s, then SIGALRM).
 */
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"

#define MANY_CACHES 70000 /* more than 65,536, the old fixed limit */

static void test_many_caches(void)
{
    L2TableCache *c = g_new0(L2TableCache, MANY_CACHES);
    for (unsigned i = 0; i < MANY_CACHES; i++) {
        qed_init_l2_cache(&c[i]);
        qed_commit_l2_cache_entry(&c[i], new_entry(&c[i], table_offset(i)));
    }
    /* Every one is its own cache. */
    for (unsigned i = 0; i < MANY_CACHES; i += 997) {
        CachedL2Table *e = qed_find_l2_cache_entry(&c[i], table_offset(i));
        g_assert_nonnull(e);
        g_assert_null(qed_find_l2_cache_entry(&c[i], table_offset(i + 1)));
        qed_unref_l2_cache_entry(e);
    }
    for (unsigned i = 0; i < MANY_CACHES; i++) {
        qed_free_l2_cache(&c[i]);
    }
    g_free(c);
}

#define FORKS 600
#define FORK_WORKERS 3

static volatile int stop_workers;

static void *fork_worker(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    L2TableCache *c = g_malloc0(sizeof(*c));
    qed_init_l2_cache(c);
    for (unsigned op = 0; !stop_workers; op++) {
        /* alloc/unref on every op: the entry records and the quarantine. */
        qed_unref_l2_cache_entry(new_entry(c, table_offset(op % 7)));
        if (op % 64 == 0) {
            /* init/free and the registry, every 64 ops. */
            qed_free_l2_cache(c);
            qed_init_l2_cache(c);
        }
        uint64_t o = table_offset((op * 7 + seed) % 100);
        CachedL2Table *e = qed_find_l2_cache_entry(c, o);
        if (!e) {
            qed_commit_l2_cache_entry(c, new_entry(c, o));
            e = qed_find_l2_cache_entry(c, o);
        }
        g_assert_nonnull(e);
        qed_unref_l2_cache_entry(e);
    }
    qed_free_l2_cache(c);
    g_free(c);
    return NULL;
}

static void child_uses_library(L2TableCache *before_fork)
{
    alarm(10);
    /* A cache made before the fork... */
    CachedL2Table *e = qed_find_l2_cache_entry(before_fork, table_offset(1));
    if (!e) {
        qed_commit_l2_cache_entry(before_fork, new_entry(before_fork, table_offset(1)));
        e = qed_find_l2_cache_entry(before_fork, table_offset(1));
    }
    qed_unref_l2_cache_entry(e);
    /* ...and a new one. */
    L2TableCache fresh;
    memset(&fresh, 0, sizeof(fresh));
    qed_init_l2_cache(&fresh);
    for (unsigned i = 0; i < 200; i++) {
        qed_commit_l2_cache_entry(&fresh, new_entry(&fresh, table_offset(i)));
    }
    qed_free_l2_cache(&fresh);
    _exit(e ? 0 : 2);
}

static void test_fork_while_threads_work(void)
{
    pthread_t t[FORK_WORKERS];
    L2TableCache *mine = g_malloc0(sizeof(*mine));
    qed_init_l2_cache(mine);
    stop_workers = 0;
    for (uintptr_t i = 0; i < FORK_WORKERS; i++) {
        g_assert_cmpint(pthread_create(&t[i], NULL, fork_worker, (void *)i), ==, 0);
    }
    unsigned hung = 0, failed = 0;
    for (unsigned i = 0; i < FORKS; i++) {
        pid_t pid = fork();
        g_assert_cmpint(pid, >=, 0);
        if (pid == 0) {
            child_uses_library(mine);
        }
        int status;
        g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
        if (WIFSIGNALED(status) && WTERMSIG(status) == SIGALRM) {
            hung++;
        } else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            failed++;
        }
    }
    stop_workers = 1;
    for (unsigned i = 0; i < FORK_WORKERS; i++) {
        g_assert_cmpint(pthread_join(t[i], NULL), ==, 0);
    }
    g_test_message("%u of %u children hung, %u failed", hung, FORKS, failed);
    g_assert_cmpuint(hung, ==, 0);
    g_assert_cmpuint(failed, ==, 0);
    qed_free_l2_cache(mine);
    g_free(mine);
}

/*
 * A fork while another thread makes the process's first library call: the
 * child must not find a set-up step "in progress" for ever. Each trial is a
 * fresh process (a child of this one that never called the library).
 */
static volatile int first_call_go;

static void *first_call(void *arg)
{
    (void)arg;
    while (!first_call_go) {
    }
    qed_unref_l2_cache_entry(qed_alloc_l2_cache_entry(NULL));
    return NULL;
}

static int first_call_trial(void)
{
    pthread_t t;
    pthread_create(&t, NULL, first_call, NULL);
    int hung = 0;
    first_call_go = 1;
    for (int i = 0; i < 8; i++) {
        pid_t p = fork();
        if (p == 0) {
            alarm(5);
            qed_unref_l2_cache_entry(qed_alloc_l2_cache_entry(NULL));
            _exit(0);
        }
        int st;
        waitpid(p, &st, 0);
        hung += !WIFEXITED(st) || WEXITSTATUS(st) != 0;
    }
    pthread_join(t, NULL);
    return hung;
}

static void test_fork_during_first_call(void)
{
    int bad = 0;
    for (int i = 0; i < 200; i++) {
        pid_t p = fork();
        g_assert_cmpint(p, >=, 0);
        if (p == 0) {
            _exit(first_call_trial() ? 1 : 0);
        }
        int st;
        g_assert_cmpint(waitpid(p, &st, 0), ==, p);
        bad += !WIFEXITED(st) || WEXITSTATUS(st) != 0;
    }
    g_assert_cmpint(bad, ==, 0);
}

/*
 * In a fork child, a new thread's stack may be where a thread of the
 * parent (absent from the child) kept a live cache, possibly mid-update at
 * the fork. Initialising a cache there must not touch the old one.
 */
static volatile int reuse_in_child, reuse_stop;

static void *stack_cache_worker(void *arg)
{
    (void)arg;
    L2TableCache c;
    memset(&c, 0, sizeof(c));
    qed_init_l2_cache(&c);
    for (unsigned op = 0; reuse_in_child ? op < 1000 : !reuse_stop; op++) {
        if (op % 64 == 0) {
            qed_free_l2_cache(&c);
            qed_init_l2_cache(&c);
        }
        uint64_t o = table_offset(op % 100);
        CachedL2Table *e = qed_find_l2_cache_entry(&c, o);
        if (!e) {
            e = qed_alloc_l2_cache_entry(&c);
            e->offset = o;
            qed_commit_l2_cache_entry(&c, e);
            e = qed_find_l2_cache_entry(&c, o);
        }
        qed_unref_l2_cache_entry(e);
    }
    qed_free_l2_cache(&c);
    return NULL;
}

static void test_fork_child_reuses_stacks(void)
{
    pthread_t t;
    reuse_stop = 0;
    g_assert_cmpint(pthread_create(&t, NULL, stack_cache_worker, NULL), ==, 0);
    int bad = 0;
    for (int i = 0; i < 300; i++) {
        pid_t p = fork();
        g_assert_cmpint(p, >=, 0);
        if (p == 0) {
            alarm(10);
            reuse_in_child = 1;
            pthread_t u;
            pthread_create(&u, NULL, stack_cache_worker, NULL);
            pthread_join(u, NULL);
            _exit(0);
        }
        int st;
        g_assert_cmpint(waitpid(p, &st, 0), ==, p);
        bad += !WIFEXITED(st) || WEXITSTATUS(st) != 0;
    }
    reuse_stop = 1;
    pthread_join(t, NULL);
    g_test_message("%d of 300 children failed", bad);
    g_assert_cmpint(bad, ==, 0);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/plain/fork-during-first-call", test_fork_during_first_call);
    g_test_add_func("/plain/fork-child-reuses-stacks", test_fork_child_reuses_stacks);
    g_test_add_func("/plain/many-caches", test_many_caches);
    g_test_add_func("/plain/fork-while-threads-work", test_fork_while_threads_work);
    return g_test_run();
}
