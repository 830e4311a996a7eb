/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * A process that is pid 1 of its pid namespace (a container's init) makes
 * children with clone(CLONE_NEWPID | SIGCHLD) while three of its threads
 * open, use and close caches (docs/misuse.md, "Never worse than the C
 * file"; meson suite 'plain', beside the other fork-heavy tests). Each
 * child is pid 1 of its own new namespace: getpid() is 1 in the parent's
 * threads and in the child alike, so the process id alone cannot tell a
 * lock that a thread of the parent held at the clone (a thread the child
 * does not have) from one held in the child. The child must never hang:
 * the C file, which takes no lock, never does.
 *
 * Neither glibc's clone() nor the raw syscall runs any fork handler: the
 * child has only what it copied.
 *
 * How it gets to be pid 1: run as pid 1 already, the test runs in this
 * process. Otherwise it re-executes this program inside a new pid namespace
 * with unshare(1) (`unshare --pid --fork`, which needs root, else
 * `unshare -Urpf`, a user namespace too), with QED_PIDNS_INNER=1 in the
 * environment, and relays that run's output and result. When neither can
 * be made (no unshare, or namespaces not permitted) the test is skipped,
 * saying why.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"

#define TEST_PATH "/pidns/clone-newpid-beside-busy-threads"
#define INNER_ENV "QED_PIDNS_INNER"
#define PROBE_ENV "QED_PIDNS_PROBE"
/* The inner run's exit status when it skipped (so the outer run skips too). */
#define INNER_SKIPPED 77

#define CHILDREN 200
#define WORKERS 3
/* Each child has this long from its clone, then it is killed and counted hung. */
#define CHILD_DEADLINE_NS (10LL * 1000 * 1000 * 1000)
#define CHILD_STACK_SIZE (256 * 1024)

/* Offsets the main thread commits to its own cache before any clone. */
#define MINE_ENTRIES 8

static int inner_skipped;

/* g_test_skip_printf and g_test_fail_printf are GLib 2.70; c_tests/meson.build asks for 2.62. */
#define skip_printf(...)                          \
    do {                                          \
        char *msg_ = g_strdup_printf(__VA_ARGS__); \
        g_test_skip(msg_);                        \
        g_free(msg_);                             \
    } while (0)
/* Marks the test failed; the program then exits 1 (as g_test_fail_printf), not abort(). */
#define fail_printf(...)                          \
    do {                                          \
        char *msg_ = g_strdup_printf(__VA_ARGS__); \
        g_test_message("%s", msg_);               \
        g_test_set_nonfatal_assertions();         \
        g_test_fail();                            \
        g_free(msg_);                             \
    } while (0)

static long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ---- Inside: this process is pid 1 of its namespace. ---- */

static atomic_int stop_workers;

/* Opens, uses and closes caches in a loop: init and free take the registry lock. */
static void *worker(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    for (unsigned round = 0; !atomic_load_explicit(&stop_workers, memory_order_relaxed); round++) {
        L2TableCache *c = g_malloc0(sizeof(*c));
        qed_init_l2_cache(c);
        for (unsigned i = 0; i < 4; i++) {
            uint64_t o = table_offset((round * 4 + i + seed * 1000) % 64);
            qed_commit_l2_cache_entry(c, new_entry(c, o));
            CachedL2Table *e = qed_find_l2_cache_entry(c, o);
            g_assert_nonnull(e);
            qed_unref_l2_cache_entry(e);
        }
        qed_unref_l2_cache_entry(new_entry(c, table_offset(99)));
        qed_free_l2_cache(c);
        g_free(c);
    }
    return NULL;
}

/*
 * The child, pid 1 of a new namespace. No GLib assertion here: it would
 * abort, and pid 1 ignores SIGABRT; each failure has its own exit status.
 */
static int child_main(void *arg)
{
    L2TableCache *mine = arg; /* made by the main thread, never touched by a worker */

    /* The cache made before the clone: a hit, then a new entry. */
    CachedL2Table *e = qed_find_l2_cache_entry(mine, table_offset(3));
    if (!e || e->offset != table_offset(3)) {
        _exit(10);
    }
    qed_unref_l2_cache_entry(e);
    e = qed_alloc_l2_cache_entry(mine);
    if (!e) {
        _exit(11);
    }
    void *table;
    if (posix_memalign(&table, 512, TEST_TABLE_SIZE) != 0) {
        _exit(12);
    }
    memset(table, 0, TEST_TABLE_SIZE);
    e->table = table;
    e->offset = table_offset(MINE_ENTRIES + 1);
    qed_commit_l2_cache_entry(mine, e);
    e = qed_find_l2_cache_entry(mine, table_offset(MINE_ENTRIES + 1));
    if (!e) {
        _exit(13);
    }
    qed_unref_l2_cache_entry(e);

    /* A new cache: init, alloc, commit, find, unref, free. */
    L2TableCache fresh;
    memset(&fresh, 0, sizeof(fresh));
    qed_init_l2_cache(&fresh);
    for (unsigned i = 0; i < 16; i++) {
        e = qed_alloc_l2_cache_entry(&fresh);
        if (!e) {
            _exit(20);
        }
        if (posix_memalign(&table, 512, TEST_TABLE_SIZE) != 0) {
            _exit(21);
        }
        memset(table, 0, TEST_TABLE_SIZE);
        e->table = table;
        e->offset = table_offset(i);
        qed_commit_l2_cache_entry(&fresh, e);
        CachedL2Table *f = qed_find_l2_cache_entry(&fresh, table_offset(i));
        if (f != e) {
            _exit(22);
        }
        qed_unref_l2_cache_entry(f);
    }
    if (fresh.n_entries != 16) {
        _exit(23);
    }
    qed_free_l2_cache(&fresh);
    _exit(0);
}

static void test_inside(void)
{
    g_assert_cmpint(getpid(), ==, 1);

    L2TableCache *mine = cache_new();
    for (unsigned i = 0; i < MINE_ENTRIES; i++) {
        qed_commit_l2_cache_entry(mine, new_entry(mine, table_offset(i)));
    }

    /* One stack serves every child: each gets its own copy at the clone (no CLONE_VM). */
    void *stack = mmap(NULL, CHILD_STACK_SIZE, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) {
        g_error("mmap: %s", g_strerror(errno));
    }
    char *stack_top = (char *)stack + CHILD_STACK_SIZE;

    /* A first clone with no thread running: can this process make pid namespaces? */
    pid_t probe = clone(child_main, stack_top, CLONE_NEWPID | SIGCHLD, mine);
    if (probe < 0) {
        int err = errno;
        inner_skipped = 1;
        skip_printf("clone(CLONE_NEWPID) fails as pid 1 here: %s", g_strerror(err));
        munmap(stack, CHILD_STACK_SIZE);
        cache_destroy(mine);
        return;
    }
    int st;
    g_assert_cmpint(waitpid(probe, &st, 0), ==, probe);
    g_assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);

    atomic_store(&stop_workers, 0);
    pthread_t t[WORKERS];
    for (uintptr_t i = 0; i < WORKERS; i++) {
        g_assert_cmpint(pthread_create(&t[i], NULL, worker, (void *)i), ==, 0);
    }
    g_usleep(20 * 1000); /* the workers get going */

    /*
     * The children run side by side (a hung one spins until it is killed),
     * each reaped as soon as it exits; each has CHILD_DEADLINE_NS from its
     * clone, so hung ones cost one deadline in all, not one each.
     */
    pid_t pid[CHILDREN];
    long long started[CHILDREN];
    int status[CHILDREN];
    gboolean done[CHILDREN];
    unsigned hung = 0, failed = 0, clone_failed = 0, outstanding = 0;
    for (unsigned i = 0; i < CHILDREN; i++) {
        done[i] = FALSE;
        status[i] = 0;
        started[i] = now_ns();
        pid[i] = clone(child_main, stack_top, CLONE_NEWPID | SIGCHLD, mine);
        if (pid[i] < 0) {
            g_test_message("clone %u: %s", i, g_strerror(errno));
            clone_failed++;
            done[i] = TRUE;
            continue;
        }
        outstanding++;
        /* Reap whoever finished meanwhile; a little time for this one to run. */
        g_usleep(500 + g_random_int_range(0, 1500));
        for (unsigned j = 0; j <= i; j++) {
            if (!done[j] && waitpid(pid[j], &status[j], WNOHANG) == pid[j]) {
                done[j] = TRUE;
                outstanding--;
            }
        }
    }
    while (outstanding > 0) {
        long long now = now_ns();
        for (unsigned j = 0; j < CHILDREN; j++) {
            if (done[j]) {
                continue;
            }
            if (waitpid(pid[j], &status[j], WNOHANG) == pid[j]) {
                done[j] = TRUE;
                outstanding--;
            } else if (now - started[j] > CHILD_DEADLINE_NS) {
                kill(pid[j], SIGKILL);
                g_assert_cmpint(waitpid(pid[j], &status[j], 0), ==, pid[j]);
                done[j] = TRUE;
                outstanding--;
                hung++;
                status[j] = -1;
            }
        }
        g_usleep(10 * 1000);
    }
    for (unsigned j = 0; j < CHILDREN; j++) {
        if (status[j] != -1 && pid[j] > 0 &&
            (!WIFEXITED(status[j]) || WEXITSTATUS(status[j]) != 0)) {
            failed++;
            if (WIFEXITED(status[j])) {
                g_test_message("child %u exited with status %d", j, WEXITSTATUS(status[j]));
            } else {
                g_test_message("child %u killed by signal %d", j, WTERMSIG(status[j]));
            }
        }
    }

    atomic_store(&stop_workers, 1);
    for (unsigned i = 0; i < WORKERS; i++) {
        g_assert_cmpint(pthread_join(t[i], NULL), ==, 0);
    }
    munmap(stack, CHILD_STACK_SIZE);

    g_test_message("%u of %u clone(CLONE_NEWPID) children hung (killed after %lld s), "
                   "%u failed, %u clones failed",
                   hung, CHILDREN, CHILD_DEADLINE_NS / 1000000000LL, failed, clone_failed);
    /* From here failures are marked, not aborted on: abort() is slow to kill a pid 1. */
    g_test_set_nonfatal_assertions();
    g_assert_cmpuint(hung, ==, 0);
    g_assert_cmpuint(failed, ==, 0);
    g_assert_cmpuint(clone_failed, ==, 0);

    /* The parent's own cache is untouched by what its children did. */
    for (unsigned i = 0; i < MINE_ENTRIES; i++) {
        CachedL2Table *e = qed_find_l2_cache_entry(mine, table_offset(i));
        g_assert_nonnull(e);
        qed_unref_l2_cache_entry(e);
    }
    g_assert_null(qed_find_l2_cache_entry(mine, table_offset(MINE_ENTRIES + 1)));
    cache_destroy(mine);
}

/* ---- Outside: get into a new pid namespace, run there, relay. ---- */

/* Runs argv, returns its wait status (or -1 if it cannot be started); captures its output. */
static int run(char **argv, char ***envp, char **out, char **err)
{
    int wait_status;
    GError *error = NULL;
    if (!g_spawn_sync(NULL, argv, *envp, G_SPAWN_SEARCH_PATH, NULL, NULL, out, err,
                      &wait_status, &error)) {
        if (err) {
            *err = g_strdup(error->message);
        }
        g_error_free(error);
        return -1;
    }
    return wait_status;
}

static void relay(const char *what, const char *text)
{
    if (!text) {
        return;
    }
    char **lines = g_strsplit(text, "\n", -1);
    for (char **l = lines; *l; l++) {
        if (**l) {
            g_test_message("%s: %s", what, *l);
        }
    }
    g_strfreev(lines);
}

static void test_outside(void)
{
    if (g_getenv(INNER_ENV)) {
        fail_printf("%s is set but this process is pid %d, not 1", INNER_ENV, (int)getpid());
        return;
    }
    char *unshare = g_find_program_in_path("unshare");
    if (!unshare) {
        g_test_skip("needs unshare(1) (util-linux) to enter a new pid namespace");
        return;
    }
    char *self = g_file_read_link("/proc/self/exe", NULL);
    g_assert_nonnull(self);

    /* Root: a pid namespace alone; else (or if that is refused) a user namespace too. */
    static const char *const ways[][5] = {
        {"--pid", "--fork", "--kill-child", NULL},
        {"--pid", "--fork", NULL},
        {"--user", "--map-root-user", "--pid", "--fork", "--kill-child"},
        {"--user", "--map-root-user", "--pid", "--fork", NULL},
    };
    unsigned first = geteuid() == 0 ? 0 : 2;
    GString *why = g_string_new(NULL);
    char **env = g_get_environ();
    int chosen = -1;
    for (unsigned w = first; w < G_N_ELEMENTS(ways) && chosen < 0; w++) {
        GPtrArray *argv = g_ptr_array_new();
        g_ptr_array_add(argv, unshare);
        for (unsigned k = 0; k < 5 && ways[w][k]; k++) {
            g_ptr_array_add(argv, (char *)ways[w][k]);
        }
        g_ptr_array_add(argv, self);
        g_ptr_array_add(argv, NULL);
        /* The probe: this program exits 0 at once if it is pid 1 there. */
        char **probe_env = g_environ_setenv(g_strdupv(env), PROBE_ENV, "1", TRUE);
        char *err = NULL;
        int ws = run((char **)argv->pdata, &probe_env, NULL, &err);
        g_strfreev(probe_env);
        char *cmd = g_strjoinv(" ", (char **)argv->pdata + 1);
        if (ws != -1 && WIFEXITED(ws) && WEXITSTATUS(ws) == 0) {
            chosen = (int)w;
        } else {
            g_string_append_printf(why, "%s`unshare %s` %s: %s", why->len ? "; " : "", cmd,
                                   ws == -1 ? "could not start" : "failed",
                                   err ? g_strstrip(err) : "");
        }
        g_free(cmd);
        g_free(err);
        g_ptr_array_free(argv, TRUE);
    }
    if (chosen < 0) {
        skip_printf("cannot enter a new pid namespace as pid 1: %s", why->str);
        goto out;
    }

    GPtrArray *argv = g_ptr_array_new();
    g_ptr_array_add(argv, unshare);
    for (unsigned k = 0; k < 5 && ways[chosen][k]; k++) {
        g_ptr_array_add(argv, (char *)ways[chosen][k]);
    }
    g_ptr_array_add(argv, self);
    g_ptr_array_add(argv, "--tap");
    g_ptr_array_add(argv, "-p");
    g_ptr_array_add(argv, TEST_PATH);
    g_ptr_array_add(argv, NULL);
    char *cmd = g_strjoinv(" ", (char **)argv->pdata);
    g_test_message("running as pid 1 of a new pid namespace: %s", cmd);
    char **inner_env = g_environ_setenv(g_strdupv(env), INNER_ENV, "1", TRUE);
    char *out = NULL, *err = NULL;
    int ws = run((char **)argv->pdata, &inner_env, &out, &err);
    g_strfreev(inner_env);
    relay("pid 1", out);
    relay("pid 1 stderr", err);
    if (ws != -1 && WIFEXITED(ws) && WEXITSTATUS(ws) == INNER_SKIPPED) {
        g_test_skip("skipped inside the namespace (see its output above)");
    } else if (ws == -1 || !WIFEXITED(ws) || WEXITSTATUS(ws) != 0) {
        if (ws != -1 && WIFSIGNALED(ws)) {
            fail_printf("`%s` was killed by signal %d", cmd, WTERMSIG(ws));
        } else {
            fail_printf("`%s` failed (wait status %d; its output is above)", cmd, ws);
        }
    }
    g_free(out);
    g_free(err);
    g_free(cmd);
    g_ptr_array_free(argv, TRUE);
out:
    g_strfreev(env);
    g_string_free(why, TRUE);
    g_free(self);
    g_free(unshare);
}

int main(int argc, char **argv)
{
    if (g_getenv(PROBE_ENV)) {
        return getpid() == 1 ? 0 : 1;
    }
    g_test_init(&argc, &argv, NULL);
    g_test_add_func(TEST_PATH, getpid() == 1 ? test_inside : test_outside);
    int r = g_test_run();
    /* Only for the outer run, which turns it into a skip; meson reads TAP. */
    return r == 0 && inner_skipped && g_getenv(INNER_ENV) ? INNER_SKIPPED : r;
}
