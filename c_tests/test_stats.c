/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The live statistics file (docs/statistics.md): with QED_L2_CACHE_STATS=1
 * a process publishes every cache's record in
 * $XDG_RUNTIME_DIR/qed-l2-cache/PID, which this test reads as any reader
 * would, with pread, at the offsets the layout table states
 * (src/stats_layout.rs), and checks field by field against
 * qed_l2_cache_get_stats and values known from the calls made.
 *
 * The configuration is read once per process, so every case runs in a
 * subprocess (g_test_trap_subprocess) started with its environment: a
 * fresh temporary directory as XDG_RUNTIME_DIR. A process never opens its
 * own statistics file (closing it would drop its POSIX lock, which tells
 * readers it is alive): reads go through a forked helper that preads the
 * file, tests the lock with F_GETLK and sends both back through a pipe.
 *
 * /stats/basic/... (suite c):   fields, modes, growth, threads, names,
 *                               refusals, off, the /tmp fallback, exit.
 * /stats/fork/... (suite plain): fork, raw clone and _Fork children.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <glib/gstdio.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"

/* The layout (src/stats_layout.rs), as a reader spells it. */
#define HEADER_BYTES 64
#define RECORD_BYTES 256
#define MAX_PREDICTIONS 8
#define H_VERSION 8
#define H_HEADER_BYTES 12
#define H_RECORD_BYTES 16
#define H_BYTE_ORDER 20
#define H_PID 24
#define H_RECORDS 28
#define H_START_UNIX_NS 32
#define R_STATE 0
#define R_POLICY 4
#define R_SERIAL 8
#define R_HITS 16
#define R_MISSES 24
#define R_COMMITS 32
#define R_DUPLICATE_COMMITS 40
#define R_EVICTIONS 48
#define R_PEAK_ENTRIES 56
#define R_N_ENTRIES 64
#define R_MAX_ENTRIES 72
#define R_TABLE_BYTES 80
#define R_ADVISOR_FINDS 88
#define R_RECOMMENDED 96
#define R_PREDICTIONS 100
#define R_PAIRS 104
#define R_IDLE_RELEASES 232
#define R_SIZING 240
#define SIZING_FIXED 1
#define SIZING_AUTO 2
#define STATE_FREE 0
#define STATE_LIVE 1

/* ---- reading a file from outside the writer ---- */

typedef struct {
    guint8 *bytes;
    gsize len;
    gboolean exists;
    gboolean locked; /* F_GETLK found a write lock */
    pid_t lock_pid;  /* its holder, as this process sees it */
} Snap;

static gboolean write_all(int fd, const void *p, gsize n)
{
    const guint8 *b = p;
    while (n > 0) {
        ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return FALSE;
        }
        b += w;
        n -= (gsize)w;
    }
    return TRUE;
}

static gboolean read_all(int fd, void *p, gsize n)
{
    guint8 *b = p;
    while (n > 0) {
        ssize_t r = read(fd, b, n);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            return FALSE;
        }
        b += r;
        n -= (gsize)r;
    }
    return TRUE;
}

/* Reads `path` in a forked helper (it calls nothing of the library's). */
static Snap snap(const char *path)
{
    int fds[2];
    g_assert_cmpint(pipe(fds), ==, 0);
    pid_t pid = fork();
    g_assert_cmpint(pid, >=, 0);
    if (pid == 0) {
        close(fds[0]);
        int64_t head[4] = { 0, 0, 0, 0 }; /* exists, locked, lock pid, len */
        int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) != 0) {
            write_all(fds[1], head, sizeof(head));
            _exit(0);
        }
        struct flock l = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
        head[0] = 1;
        if (fcntl(fd, F_GETLK, &l) == 0 && l.l_type != F_UNLCK) {
            head[1] = 1;
            head[2] = l.l_pid;
        }
        head[3] = st.st_size;
        guint8 *buf = malloc((size_t)st.st_size + 1);
        off_t at = 0;
        while (at < st.st_size) {
            ssize_t r = pread(fd, buf + at, (size_t)(st.st_size - at), at);
            if (r <= 0) {
                break;
            }
            at += r;
        }
        head[3] = at;
        write_all(fds[1], head, sizeof(head));
        write_all(fds[1], buf, (gsize)at);
        _exit(0);
    }
    close(fds[1]);
    int64_t head[4];
    Snap s = { 0 };
    g_assert_true(read_all(fds[0], head, sizeof(head)));
    s.exists = head[0] != 0;
    s.locked = head[1] != 0;
    s.lock_pid = (pid_t)head[2];
    s.len = (gsize)head[3];
    s.bytes = g_malloc0(s.len + 1);
    g_assert_true(read_all(fds[0], s.bytes, s.len));
    close(fds[0]);
    int status;
    g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
    return s;
}

static void snap_free(Snap *s)
{
    g_free(s->bytes);
    s->bytes = NULL;
}

static uint64_t u64_at(const Snap *s, gsize at)
{
    g_assert_cmpuint(at + 8, <=, s->len);
    uint64_t v;
    memcpy(&v, s->bytes + at, 8);
    return v;
}

static uint32_t u32_at(const Snap *s, gsize at)
{
    g_assert_cmpuint(at + 4, <=, s->len);
    uint32_t v;
    memcpy(&v, s->bytes + at, 4);
    return v;
}

/* Byte offset of the record of the cache whose slot number is `slot`. */
static gsize rec(uint32_t slot)
{
    g_assert_cmpuint(slot, >=, 1);
    return HEADER_BYTES + (gsize)(slot - 1) * RECORD_BYTES;
}

/* ---- the environment of a case ---- */

static char *runtime_dir; /* the case's XDG_RUNTIME_DIR */

/* Runs the current test in a subprocess with QED_L2_CACHE_STATS=`stats`
 * (NULL: unset) and a fresh XDG_RUNTIME_DIR, which the subprocess finds in
 * QED_STATS_TEST_DIR too; the directory is removed afterwards. */
static void in_subprocess(const char *stats, gboolean passes)
{
    char *dir = g_dir_make_tmp("qed-stats-test-XXXXXX", NULL);
    g_assert_nonnull(dir);
    g_assert_cmpint(g_chmod(dir, 0700), ==, 0);
    g_setenv("XDG_RUNTIME_DIR", dir, TRUE);
    g_setenv("QED_STATS_TEST_DIR", dir, TRUE);
    if (stats) {
        g_setenv("QED_L2_CACHE_STATS", stats, TRUE);
    } else {
        g_unsetenv("QED_L2_CACHE_STATS");
    }
    g_test_trap_subprocess(NULL, 60 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_DEFAULT);
    g_unsetenv("QED_L2_CACHE_STATS");
    g_unsetenv("XDG_RUNTIME_DIR");
    if (passes) {
        g_test_trap_assert_passed();
    }
    char *cmd = g_strdup_printf("rm -rf '%s'", dir);
    g_assert_cmpint(system(cmd), ==, 0);
    g_free(cmd);
    g_free(dir);
}

/* In the subprocess: the directory the case runs in. */
static const char *case_dir(void)
{
    if (!runtime_dir) {
        runtime_dir = g_strdup(g_getenv("QED_STATS_TEST_DIR"));
        g_assert_nonnull(runtime_dir);
    }
    return runtime_dir;
}

static char *stats_dir(void)
{
    return g_build_filename(case_dir(), "qed-l2-cache", NULL);
}

static char *file_of(pid_t pid)
{
    char name[32];
    g_snprintf(name, sizeof(name), "%d", (int)pid);
    return g_build_filename(case_dir(), "qed-l2-cache", name, NULL);
}

/* Entries in `dir` (-1 when it does not exist). */
static int count_entries(const char *dir)
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

/* stderr goes to a temporary file until stderr_lines() reads it back. */
static int captured_fd = -1;

static void capture_stderr(void)
{
    char *path = NULL;
    captured_fd = g_file_open_tmp("qed-stats-stderr-XXXXXX", &path, NULL);
    g_assert_cmpint(captured_fd, >=, 0);
    g_unlink(path);
    g_free(path);
    g_assert_cmpint(dup2(captured_fd, 2), ==, 2);
}

/* The lines written to the captured stderr so far. */
static char **stderr_lines(void)
{
    off_t len = lseek(captured_fd, 0, SEEK_END);
    char *text = g_malloc0((gsize)len + 1);
    g_assert_cmpint(pread(captured_fd, text, (size_t)len, 0), ==, len);
    char **lines = g_strsplit(text, "\n", -1);
    g_free(text);
    /* Drop the empty string after the last newline. */
    guint n = g_strv_length(lines);
    if (n > 0 && lines[n - 1][0] == '\0') {
        g_free(lines[n - 1]);
        lines[n - 1] = NULL;
    }
    return lines;
}

/* ---- driving caches ---- */

/* QED's read path: find; on a miss alloc, commit, find; unref. Returns 1
 * on a miss. */
static int read_table(L2TableCache *c, uint64_t off)
{
    CachedL2Table *e = qed_find_l2_cache_entry(c, off);
    int missed = e == NULL;
    if (missed) {
        qed_commit_l2_cache_entry(c, new_entry(c, off));
        e = qed_find_l2_cache_entry(c, off);
        g_assert_nonnull(e);
    }
    qed_unref_l2_cache_entry(e);
    return missed;
}

/* malloc_usable_size of the tables on the C-visible list, summed. */
static uint64_t list_table_bytes(L2TableCache *c)
{
    uint64_t sum = 0;
    for (CachedL2Table *e = c->entries.tqh_first; e; e = e->node.tqe_next) {
        sum += malloc_usable_size(e->table);
    }
    return sum;
}

/* The size the advisor would set, by docs/advisor.md's rule: the smallest
 * size whose hit ratio is within one point of the best. */
static uint32_t expected_recommendation(const uint32_t *sizes, const uint64_t *misses, unsigned n,
                                        uint64_t finds)
{
    if (finds == 0 || n == 0) {
        return 0;
    }
    double best = -1;
    for (unsigned i = 0; i < n; i++) {
        best = MAX(best, 1.0 - (double)misses[i] / (double)finds);
    }
    uint32_t rec_size = 0;
    for (unsigned i = 0; i < n; i++) {
        if (1.0 - (double)misses[i] / (double)finds >= best - 0.01 && (rec_size == 0 || sizes[i] < rec_size)) {
            rec_size = sizes[i];
        }
    }
    return rec_size;
}

/*
 * Every field of `c`'s record against the library and the known values:
 * state, policy, serial, the six counters (qed_l2_cache_get_stats),
 * n_entries (the struct's), max_entries, table_bytes (the list's tables),
 * and the advisor's part: with `advisor_finds` > 0, the finds, each
 * (size, misses) pair against qed_l2_cache_predict_misses at exactly the
 * sizes `sizes` (n of them) and the recommendation; else all zero.
 */
static void check_record(const Snap *s, L2TableCache *c, uint32_t policy, uint64_t serial, uint64_t max,
                         uint64_t advisor_finds, const uint32_t *sizes, unsigned n_sizes)
{
    gsize r = rec(c->handle);
    g_assert_cmpuint(r + RECORD_BYTES, <=, s->len);
    g_assert_cmpuint(u32_at(s, r + R_STATE), ==, STATE_LIVE);
    g_assert_cmpuint(u32_at(s, r + R_POLICY), ==, policy);
    g_assert_cmpuint(u64_at(s, r + R_SERIAL), ==, serial);
    QedL2CacheStats st;
    qed_l2_cache_get_stats(c, &st);
    g_assert_cmpuint(u64_at(s, r + R_HITS), ==, st.hits);
    g_assert_cmpuint(u64_at(s, r + R_MISSES), ==, st.misses);
    g_assert_cmpuint(u64_at(s, r + R_COMMITS), ==, st.commits);
    g_assert_cmpuint(u64_at(s, r + R_DUPLICATE_COMMITS), ==, st.duplicate_commits);
    g_assert_cmpuint(u64_at(s, r + R_EVICTIONS), ==, st.evictions);
    g_assert_cmpuint(u64_at(s, r + R_PEAK_ENTRIES), ==, st.peak_entries);
    g_assert_cmpuint(u64_at(s, r + R_N_ENTRIES), ==, c->n_entries);
    g_assert_cmpuint(u64_at(s, r + R_MAX_ENTRIES), ==, max);
    g_assert_cmpuint(u64_at(s, r + R_TABLE_BYTES), ==, list_table_bytes(c));
    g_assert_cmpuint(u32_at(s, r + R_SIZING), ==, SIZING_FIXED);
    g_assert_cmpuint(u64_at(s, r + R_IDLE_RELEASES), ==, qed_l2_cache_get_idle_releases(c));
    g_assert_cmpuint(u64_at(s, r + R_ADVISOR_FINDS), ==, advisor_finds);
    if (advisor_finds == 0) {
        g_assert_cmpuint(u32_at(s, r + R_RECOMMENDED), ==, 0);
        g_assert_cmpuint(u32_at(s, r + R_PREDICTIONS), ==, 0);
        return;
    }
    g_assert_cmpuint(u32_at(s, r + R_PREDICTIONS), ==, n_sizes);
    uint64_t misses[MAX_PREDICTIONS];
    for (unsigned k = 0; k < n_sizes; k++) {
        g_assert_cmpuint(u32_at(s, r + R_PAIRS + 16 * k), ==, sizes[k]);
        g_assert_cmpint(qed_l2_cache_predict_misses(c, sizes[k], &misses[k]), ==, 0);
        g_assert_cmpuint(u64_at(s, r + R_PAIRS + 16 * k + 8), ==, misses[k]);
    }
    uint32_t want = expected_recommendation(sizes, misses, n_sizes, advisor_finds);
    g_assert_cmpuint(want, !=, 0);
    g_assert_cmpuint(u32_at(s, r + R_RECOMMENDED), ==, want);
}

/* The header, and that the file covers the records it claims. */
static void check_header(const Snap *s, pid_t pid, uint32_t min_records)
{
    g_assert_true(s->exists);
    g_assert_cmpuint(s->len, >=, HEADER_BYTES);
    g_assert_cmpint(memcmp(s->bytes, "QEDL2STA", 8), ==, 0);
    g_assert_cmpuint(u32_at(s, H_VERSION), ==, 1);
    g_assert_cmpuint(u32_at(s, H_HEADER_BYTES), ==, HEADER_BYTES);
    g_assert_cmpuint(u32_at(s, H_RECORD_BYTES), ==, RECORD_BYTES);
    g_assert_cmpuint(u32_at(s, H_BYTE_ORDER), ==, 0x01020304);
    g_assert_cmpuint(u32_at(s, H_PID), ==, (uint32_t)pid);
    uint32_t records = u32_at(s, H_RECORDS);
    g_assert_cmpuint(records, >=, min_records);
    g_assert_cmpuint(s->len, >=, HEADER_BYTES + (gsize)records * RECORD_BYTES);
    /* Made during this test run. */
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    uint64_t now_ns = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
    uint64_t start = u64_at(s, H_START_UNIX_NS);
    g_assert_cmpuint(start, <=, now_ns);
    g_assert_cmpuint(start, >, now_ns - 120 * (uint64_t)1000000000);
}

/* ---- /stats/basic ---- */

static void test_fields(void)
{
    if (!g_test_subprocess()) {
        in_subprocess("1", TRUE);
        return;
    }
    pid_t me = getpid();
    char *path = file_of(me);
    char *dir = stats_dir();

    /* A: fifo at the default size: five misses, a duplicate, five hits. */
    L2TableCache *a = cache_new();
    /* The file exists from the first cache on, locked by this process. */
    Snap s = snap(path);
    check_header(&s, me, 64);
    g_assert_true(s.locked);
    g_assert_cmpint(s.lock_pid, ==, me);
    snap_free(&s);
    for (unsigned i = 0; i < 5; i++) {
        g_assert_cmpint(read_table(a, table_offset(i)), ==, 1);
    }
    qed_commit_l2_cache_entry(a, new_entry(a, table_offset(0))); /* duplicate */
    for (unsigned i = 0; i < 5; i++) {
        g_assert_cmpint(read_table(a, table_offset(i)), ==, 0);
    }
    /* B: lru, at most 3: five tables, two evicted. */
    L2TableCache *b = cache_new();
    qed_l2_cache_set_policy(b, QED_L2_CACHE_POLICY_LRU);
    qed_l2_cache_set_max_entries(b, 3);
    for (unsigned i = 0; i < 5; i++) {
        read_table(b, table_offset(i));
    }
    read_table(b, table_offset(4));
    /* C: sieve, at most 8, the advisor on: a loop over 12 tables. */
    L2TableCache *c = cache_new();
    qed_l2_cache_set_policy(c, QED_L2_CACHE_POLICY_SIEVE);
    qed_l2_cache_set_max_entries(c, 8);
    qed_l2_cache_set_advisor(c, 1);
    for (unsigned i = 0; i < 300; i++) {
        read_table(c, table_offset((i * 7) % 12));
    }
    /* The advisor's part is published at commits and settings changes, not
     * at hits: turning it on again (no restart) publishes it now. */
    qed_l2_cache_set_advisor(c, 1);
    QedL2CacheStats cs;
    qed_l2_cache_get_stats(c, &cs);

    s = snap(path);
    check_header(&s, me, 64);
    QedL2CacheStats as, bs;
    qed_l2_cache_get_stats(a, &as);
    qed_l2_cache_get_stats(b, &bs);
    /* The known values, besides the library's own word for them. */
    g_assert_cmpuint(as.hits, ==, 10);
    g_assert_cmpuint(as.misses, ==, 5);
    g_assert_cmpuint(as.commits, ==, 6);
    g_assert_cmpuint(as.duplicate_commits, ==, 1);
    g_assert_cmpuint(bs.evictions, ==, 2);
    g_assert_cmpuint(bs.peak_entries, ==, 3);
    g_assert_cmpuint(list_table_bytes(a), >=, 5 * TEST_TABLE_SIZE);
    check_record(&s, a, QED_L2_CACHE_POLICY_FIFO, 1, 50, 0, NULL, 0);
    check_record(&s, b, QED_L2_CACHE_POLICY_LRU, 2, 3, 0, NULL, 0);
    static const uint32_t sizes[] = { 4, 8, 12, 16, 32, 64 };
    check_record(&s, c, QED_L2_CACHE_POLICY_SIEVE, 3, 8, cs.hits + cs.misses, sizes, G_N_ELEMENTS(sizes));
    /* Records of slots no cache uses are free. */
    g_assert_cmpuint(u32_at(&s, rec(10) + R_STATE), ==, STATE_FREE);
    snap_free(&s);

    /* A hit publishes the hit count at once, nothing else changes. */
    CachedL2Table *e = qed_find_l2_cache_entry(a, table_offset(2));
    g_assert_nonnull(e);
    s = snap(path);
    g_assert_cmpuint(u64_at(&s, rec(a->handle) + R_HITS), ==, 11);
    snap_free(&s);
    qed_unref_l2_cache_entry(e);
    /* So does a miss. */
    g_assert_null(qed_find_l2_cache_entry(a, table_offset(40)));
    s = snap(path);
    g_assert_cmpuint(u64_at(&s, rec(a->handle) + R_MISSES), ==, 6);
    snap_free(&s);

    /* Free: the record is free; a new cache at B's address starts afresh. */
    uint32_t b_slot = b->handle;
    qed_free_l2_cache(b);
    s = snap(path);
    g_assert_cmpuint(u32_at(&s, rec(b_slot) + R_STATE), ==, STATE_FREE);
    snap_free(&s);
    memset(b, 0, sizeof(*b));
    qed_init_l2_cache(b);
    s = snap(path);
    check_record(&s, b, QED_L2_CACHE_POLICY_FIFO, 4, 50, 0, NULL, 0);
    g_assert_cmpuint(u64_at(&s, rec(b->handle) + R_HITS), ==, 0);
    snap_free(&s);
    /* init over a live cache: the old one's record goes, the new is live. */
    uint32_t a_slot = a->handle;
    qed_init_l2_cache(a);
    s = snap(path);
    check_record(&s, a, QED_L2_CACHE_POLICY_FIFO, 5, 50, 0, NULL, 0);
    if (a->handle != a_slot) {
        g_assert_cmpuint(u32_at(&s, rec(a_slot) + R_STATE), ==, STATE_FREE);
    }
    snap_free(&s);

    /* Modes: the directory 0700, the file 0600, both this user's; the
     * file is the directory's only entry (no temporary name left). */
    struct stat st;
    g_assert_cmpint(lstat(dir, &st), ==, 0);
    g_assert_true(S_ISDIR(st.st_mode));
    g_assert_cmpuint(st.st_mode & 07777, ==, 0700);
    g_assert_cmpuint(st.st_uid, ==, geteuid());
    g_assert_cmpint(lstat(path, &st), ==, 0);
    g_assert_true(S_ISREG(st.st_mode));
    g_assert_cmpuint(st.st_mode & 07777, ==, 0600);
    g_assert_cmpuint(st.st_uid, ==, geteuid());
    g_assert_cmpint(count_entries(dir), ==, 1);

    cache_destroy(a);
    cache_destroy(b);
    cache_destroy(c);
    g_free(dir);
    g_free(path);
}

/* 200 caches at once: the file grows over three segments (64, 128 and 256
 * records), and every record is right. */
static void test_growth(void)
{
    if (!g_test_subprocess()) {
        in_subprocess("1", TRUE);
        return;
    }
    enum { N = 200 };
    L2TableCache *c = g_new0(L2TableCache, N);
    for (unsigned i = 0; i < N; i++) {
        qed_init_l2_cache(&c[i]);
        for (unsigned k = 0; k <= i % 3; k++) {
            read_table(&c[i], table_offset(k));
        }
    }
    char *path = file_of(getpid());
    Snap s = snap(path);
    check_header(&s, getpid(), 64 + 128 + 256);
    g_assert_cmpuint(u32_at(&s, H_RECORDS), ==, 64 + 128 + 256);
    for (unsigned i = 0; i < N; i++) {
        check_record(&s, &c[i], QED_L2_CACHE_POLICY_FIFO, i + 1, 50, 0, NULL, 0);
        g_assert_cmpuint(u64_at(&s, rec(c[i].handle) + R_COMMITS), ==, i % 3 + 1);
    }
    snap_free(&s);
    for (unsigned i = 0; i < N; i++) {
        qed_free_l2_cache(&c[i]);
    }
    s = snap(path);
    for (uint32_t slot = 1; slot <= N; slot++) {
        g_assert_cmpuint(u32_at(&s, rec(slot) + R_STATE), ==, STATE_FREE);
    }
    snap_free(&s);
    /* Freed numbers are reused lowest first: the records stay dense. */
    qed_init_l2_cache(&c[7]);
    g_assert_cmpuint(c[7].handle, ==, 1);
    qed_free_l2_cache(&c[7]);
    g_free(c);
    g_free(path);
}

/* Caches used by threads at once: each thread's stores go to its cache's
 * record, and each record ends exact. */
#define THREADS 4
#define THREAD_OPS 20000

static void *thread_reads(void *arg)
{
    L2TableCache *c = arg;
    uint64_t x = (uintptr_t)arg;
    for (unsigned i = 0; i < THREAD_OPS; i++) {
        x = x * 6364136223846793005u + 1442695040888963407u;
        read_table(c, table_offset((unsigned)(x >> 33) % 80));
    }
    /* The rest (peak, evictions, tables) is published at commits. */
    qed_commit_l2_cache_entry(c, new_entry(c, table_offset(1000)));
    return NULL;
}

static void test_threads(void)
{
    if (!g_test_subprocess()) {
        in_subprocess("1", TRUE);
        return;
    }
    L2TableCache c[THREADS];
    pthread_t t[THREADS];
    for (unsigned i = 0; i < THREADS; i++) {
        memset(&c[i], 0, sizeof(c[i]));
        qed_init_l2_cache(&c[i]);
    }
    for (unsigned i = 0; i < THREADS; i++) {
        g_assert_cmpint(pthread_create(&t[i], NULL, thread_reads, &c[i]), ==, 0);
    }
    for (unsigned i = 0; i < THREADS; i++) {
        g_assert_cmpint(pthread_join(t[i], NULL), ==, 0);
    }
    char *path = file_of(getpid());
    Snap s = snap(path);
    for (unsigned i = 0; i < THREADS; i++) {
        check_record(&s, &c[i], QED_L2_CACHE_POLICY_FIFO, i + 1, 50, 0, NULL, 0);
        QedL2CacheStats st;
        qed_l2_cache_get_stats(&c[i], &st);
        g_assert_cmpuint(st.hits + st.misses, >=, THREAD_OPS);
    }
    snap_free(&s);
    for (unsigned i = 0; i < THREADS; i++) {
        qed_free_l2_cache(&c[i]);
    }
    g_free(path);
}

/* A dead writer's file under this pid (no lock held: its process died
 * without removing it) is replaced. */
static void test_dead_name_replaced(void)
{
    if (!g_test_subprocess()) {
        in_subprocess("1", TRUE);
        return;
    }
    char *dir = stats_dir();
    char *path = file_of(getpid());
    g_assert_cmpint(g_mkdir(dir, 0700), ==, 0);
    g_assert_true(g_file_set_contents(path, "stale, not a statistics file", -1, NULL));
    L2TableCache *a = cache_new();
    read_table(a, table_offset(5));
    Snap s = snap(path);
    check_header(&s, getpid(), 64);
    g_assert_true(s.locked);
    g_assert_cmpint(s.lock_pid, ==, getpid());
    check_record(&s, a, QED_L2_CACHE_POLICY_FIFO, 1, 50, 0, NULL, 0);
    snap_free(&s);
    g_assert_cmpint(count_entries(dir), ==, 1);
    cache_destroy(a);
    g_free(path);
    g_free(dir);
}

/* A process whose file name is held by a live writer from the start
 * publishes as PID.1 (the live file untouched), and removes only its own
 * at exit. */
static void test_live_name_passed_over(void)
{
    if (!g_test_subprocess()) {
        in_subprocess("1", TRUE);
        return;
    }
    char *dir = stats_dir();
    char *path = file_of(getpid());
    char *dot1 = g_strdup_printf("%s.1", path);
    g_assert_cmpint(g_mkdir(dir, 0700), ==, 0);
    g_assert_true(g_file_set_contents(path, "live", -1, NULL));
    int up[2], down[2];
    g_assert_cmpint(pipe(up), ==, 0);
    g_assert_cmpint(pipe(down), ==, 0);
    pid_t holder = fork();
    g_assert_cmpint(holder, >=, 0);
    if (holder == 0) {
        int fd = open(path, O_RDWR);
        struct flock l = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
        char ok = fd >= 0 && fcntl(fd, F_SETLK, &l) == 0;
        write_all(up[1], &ok, 1);
        read_all(down[0], &ok, 1);
        _exit(0);
    }
    char ok = 0;
    g_assert_true(read_all(up[0], &ok, 1));
    g_assert_true(ok);
    L2TableCache *a = cache_new();
    read_table(a, table_offset(3));
    Snap s = snap(dot1);
    check_header(&s, getpid(), 64);
    g_assert_true(s.locked);
    g_assert_cmpint(s.lock_pid, ==, getpid());
    check_record(&s, a, QED_L2_CACHE_POLICY_FIFO, 1, 50, 0, NULL, 0);
    snap_free(&s);
    s = snap(path);
    g_assert_cmpuint(s.len, ==, 4);
    g_assert_cmpint(memcmp(s.bytes, "live", 4), ==, 0);
    g_assert_true(s.locked);
    g_assert_cmpint(s.lock_pid, ==, holder);
    snap_free(&s);
    write_all(down[1], &ok, 1);
    g_assert_cmpint(waitpid(holder, NULL, 0), ==, holder);
    cache_destroy(a);
    g_free(dot1);
    g_free(path);
    g_free(dir);
}

/* The refusals: one message naming the directory and why, however many
 * caches and calls; nothing made; everything else works. */
static void expect_refusal(const char *why)
{
    capture_stderr();
    for (unsigned k = 0; k < 3; k++) {
        L2TableCache *c = cache_new();
        for (unsigned i = 0; i < 10; i++) {
            read_table(c, table_offset(i % 4));
        }
        cache_destroy(c);
    }
    char **lines = stderr_lines();
    char *dir = stats_dir();
    char *want = g_strdup_printf("qed-l2-cache: not publishing statistics: %s: %s", dir, why);
    g_assert_cmpuint(g_strv_length(lines), ==, 1);
    g_assert_cmpstr(lines[0], ==, want);
    g_free(want);
    g_free(dir);
    g_strfreev(lines);
}

static void test_refuse_symlink(void)
{
    if (!g_test_subprocess()) {
        in_subprocess("1", TRUE);
        return;
    }
    char *elsewhere = g_build_filename(case_dir(), "elsewhere", NULL);
    char *dir = stats_dir();
    g_assert_cmpint(g_mkdir(elsewhere, 0700), ==, 0);
    g_assert_cmpint(symlink(elsewhere, dir), ==, 0);
    expect_refusal("is a symbolic link");
    g_assert_cmpint(count_entries(elsewhere), ==, 0);
    g_free(dir);
    g_free(elsewhere);
}

static void test_refuse_other_owner(void)
{
    if (geteuid() != 0) {
        g_test_skip("needs root: the directory is chown()ed to nobody (uid 65534)");
        return;
    }
    if (!g_test_subprocess()) {
        in_subprocess("1", TRUE);
        return;
    }
    char *dir = stats_dir();
    g_assert_cmpint(g_mkdir(dir, 0700), ==, 0);
    g_assert_cmpint(chown(dir, 65534, 65534), ==, 0);
    char *why = g_strdup_printf("owned by uid 65534, not by this user (uid %u)", (unsigned)geteuid());
    expect_refusal(why);
    g_assert_cmpint(count_entries(dir), ==, 0);
    g_free(why);
    g_free(dir);
}

static void test_refuse_open_mode(void)
{
    if (!g_test_subprocess()) {
        in_subprocess("1", TRUE);
        return;
    }
    char *dir = stats_dir();
    g_assert_cmpint(g_mkdir(dir, 0700), ==, 0);
    g_assert_cmpint(g_chmod(dir, 0755), ==, 0);
    expect_refusal("mode 0755: group or others have access (it must be 0700)");
    g_assert_cmpint(count_entries(dir), ==, 0);
    g_free(dir);
}

/* Off (unset, or 0): no directory, no file, nothing on stderr. */
static void run_without_stats(void)
{
    capture_stderr();
    L2TableCache *c = cache_new();
    for (unsigned i = 0; i < 100; i++) {
        read_table(c, table_offset(i % 60));
    }
    qed_l2_cache_set_advisor(c, 1);
    qed_l2_cache_set_policy(c, QED_L2_CACHE_POLICY_SIEVE);
    cache_destroy(c);
    g_assert_cmpint(count_entries(case_dir()), ==, 0);
    char *fallback = g_strdup_printf("/tmp/qed-l2-cache-%u/%d", (unsigned)geteuid(), (int)getpid());
    g_assert_false(g_file_test(fallback, G_FILE_TEST_EXISTS));
    g_free(fallback);
    char **lines = stderr_lines();
    g_assert_cmpuint(g_strv_length(lines), ==, 0);
    g_strfreev(lines);
}

/*
 * An auto cache's record says so (and its maximum is its target); a
 * fixed cache with idle release on publishes its idle releases once a
 * call has taken the released tables out.
 */
static void test_sizing_and_idle(void)
{
    if (!g_test_subprocess()) {
        g_setenv("QED_L2_CACHE_IDLE", "1", TRUE);
        in_subprocess("1", TRUE);
        g_unsetenv("QED_L2_CACHE_IDLE");
        return;
    }
    char *path = file_of(getpid());
    L2TableCache *a = cache_new();
    qed_l2_cache_set_auto(a, 1);
    L2TableCache *f = cache_new();
    for (unsigned i = 0; i < 4; i++) {
        qed_commit_l2_cache_entry(f, new_entry(f, table_offset(i)));
    }
    Snap s = snap(path);
    g_assert_cmpuint(u32_at(&s, rec(a->handle) + R_SIZING), ==, SIZING_AUTO);
    g_assert_cmpuint(u64_at(&s, rec(a->handle) + R_MAX_ENTRIES), ==, qed_l2_cache_get_target(a));
    g_assert_cmpuint(u32_at(&s, rec(f->handle) + R_SIZING), ==, SIZING_FIXED);
    g_assert_cmpuint(u64_at(&s, rec(f->handle) + R_IDLE_RELEASES), ==, 0);
    snap_free(&s);
    /* Released within 2 s; the getter is a call, which takes them out. */
    for (unsigned i = 0; i < 400 && qed_l2_cache_get_idle_releases(f) < 4; i++) {
        g_usleep(10000);
    }
    g_assert_cmpuint(qed_l2_cache_get_idle_releases(f), ==, 4);
    s = snap(path);
    g_assert_cmpuint(u64_at(&s, rec(f->handle) + R_IDLE_RELEASES), ==, 4);
    g_assert_cmpuint(u64_at(&s, rec(f->handle) + R_N_ENTRIES), ==, 0);
    snap_free(&s);
    qed_l2_cache_set_auto(a, 0);
    s = snap(path);
    g_assert_cmpuint(u32_at(&s, rec(a->handle) + R_SIZING), ==, SIZING_FIXED);
    snap_free(&s);
    cache_destroy(a);
    cache_destroy(f);
    g_free(path);
}

static void test_off(void)
{
    if (!g_test_subprocess()) {
        in_subprocess(NULL, TRUE);
        return;
    }
    run_without_stats();
}

static void test_off_zero(void)
{
    if (!g_test_subprocess()) {
        in_subprocess("0", TRUE);
        return;
    }
    run_without_stats();
}

/* Without XDG_RUNTIME_DIR: /tmp/qed-l2-cache-UID/PID, same modes. */
static void test_tmp_fallback(void)
{
    if (!g_test_subprocess()) {
        g_setenv("QED_L2_CACHE_STATS", "1", TRUE);
        g_unsetenv("XDG_RUNTIME_DIR");
        g_test_trap_subprocess(NULL, 60 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_DEFAULT);
        g_unsetenv("QED_L2_CACHE_STATS");
        g_test_trap_assert_passed();
        return;
    }
    g_assert_null(g_getenv("XDG_RUNTIME_DIR"));
    L2TableCache *c = cache_new();
    read_table(c, table_offset(0));
    char *dir = g_strdup_printf("/tmp/qed-l2-cache-%u", (unsigned)geteuid());
    char *path = g_strdup_printf("%s/%d", dir, (int)getpid());
    struct stat st;
    g_assert_cmpint(lstat(dir, &st), ==, 0);
    g_assert_true(S_ISDIR(st.st_mode));
    g_assert_cmpuint(st.st_mode & 07777, ==, 0700);
    g_assert_cmpuint(st.st_uid, ==, geteuid());
    Snap s = snap(path);
    check_header(&s, getpid(), 64);
    check_record(&s, c, QED_L2_CACHE_POLICY_FIFO, 1, 50, 0, NULL, 0);
    snap_free(&s);
    g_assert_cmpint(lstat(path, &st), ==, 0);
    g_assert_cmpuint(st.st_mode & 07777, ==, 0600);
    cache_destroy(c);
    g_free(path);
    g_free(dir);
}

/* A process that exits normally removes its file (at exit, with its caches
 * still initialised, as QEMU leaves them). */
static void test_removed_at_exit(void)
{
    if (!g_test_subprocess()) {
        char *dir = g_dir_make_tmp("qed-stats-test-XXXXXX", NULL);
        g_assert_cmpint(g_chmod(dir, 0700), ==, 0);
        g_setenv("XDG_RUNTIME_DIR", dir, TRUE);
        g_setenv("QED_STATS_TEST_DIR", dir, TRUE);
        g_setenv("QED_L2_CACHE_STATS", "1", TRUE);
        g_test_trap_subprocess(NULL, 60 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_DEFAULT);
        g_unsetenv("QED_L2_CACHE_STATS");
        g_unsetenv("XDG_RUNTIME_DIR");
        g_test_trap_assert_passed();
        g_test_trap_assert_stdout("*published*");
        /* The subprocess is gone, and so is its file. */
        char *sub = g_build_filename(dir, "qed-l2-cache", NULL);
        g_assert_cmpint(count_entries(sub), ==, 0);
        g_rmdir(sub);
        g_rmdir(dir);
        g_free(sub);
        g_free(dir);
        return;
    }
    /* Never freed, and nothing on the heap that a leak checker (ASan's
     * LeakSanitizer in the sanitizer build) would report: a static struct
     * and no entry, a miss published. */
    static L2TableCache c;
    qed_init_l2_cache(&c);
    g_assert_null(qed_find_l2_cache_entry(&c, table_offset(0)));
    char *path = file_of(getpid());
    Snap s = snap(path);
    check_record(&s, &c, QED_L2_CACHE_POLICY_FIFO, 1, 50, 0, NULL, 0);
    g_assert_cmpuint(u64_at(&s, rec(c.handle) + R_MISSES), ==, 1);
    snap_free(&s);
    g_print("published %s\n", path);
    g_free(path);
}

/* ---- /stats/fork (suite plain) ---- */

typedef enum { BY_FORK, BY_CLONE, BY_UNDERSCORE_FORK } ForkKind;

static pid_t make_child(ForkKind kind)
{
    fflush(NULL);
    switch (kind) {
    case BY_FORK:
        return fork();
    case BY_CLONE:
        /* A raw clone runs no fork handler (nor does _Fork). */
        return (pid_t)syscall(SYS_clone, SIGCHLD, NULL, NULL, NULL, NULL);
    case BY_UNDERSCORE_FORK:
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
        return _Fork();
#else
        return -1;
#endif
    }
    return -1;
}

/* What the child sends back: its pid and its caches' counters. */
typedef struct {
    pid_t pid;
    int ok;
    QedL2CacheStats a, mine;
    uint32_t mine_slot;
} ChildReport;

static void fork_case(ForkKind kind)
{
    pid_t me = getpid();
    char *path = file_of(me);
    L2TableCache *a = cache_new();
    L2TableCache *b = cache_new();
    for (unsigned i = 0; i < 20; i++) {
        read_table(a, table_offset(i % 6));
        read_table(b, table_offset(i % 3));
    }
    Snap before = snap(path);
    check_header(&before, me, 64);
    int up[2], down[2];
    g_assert_cmpint(pipe(up), ==, 0);
    g_assert_cmpint(pipe(down), ==, 0);
    pid_t child = make_child(kind);
    g_assert_cmpint(child, >=, 0);
    if (child == 0) {
        /* The child: calls on an inherited cache (hits, misses, commits,
         * a new maximum), and a cache of its own; no GLib assertions. */
        alarm(10);
        ChildReport r = { .pid = getpid(), .ok = 1 };
        for (unsigned i = 0; i < 30; i++) {
            read_table(a, table_offset(i % 9));
        }
        qed_l2_cache_set_max_entries(a, 4);
        L2TableCache *mine = cache_new();
        read_table(mine, table_offset(1));
        qed_l2_cache_get_stats(a, &r.a);
        qed_l2_cache_get_stats(mine, &r.mine);
        r.mine_slot = mine->handle;
        write_all(up[1], &r, sizeof(r));
        char c;
        read_all(down[0], &c, 1);
        exit(0); /* normally: at exit the child removes its own file */
    }
    ChildReport r;
    g_assert_true(read_all(up[0], &r, sizeof(r)));
    g_assert_cmpint(r.pid, ==, child);
    /* The parent's file is byte for byte what it was, still locked by the
     * parent. */
    Snap now = snap(path);
    g_assert_cmpuint(now.len, ==, before.len);
    g_assert_cmpint(memcmp(now.bytes, before.bytes, before.len), ==, 0);
    g_assert_true(now.locked);
    g_assert_cmpint(now.lock_pid, ==, me);
    snap_free(&now);
    /* The child's own file, locked by the child: the inherited cache has
     * its record there (same slot, same serial), with the child's counts. */
    char *child_path = file_of(child);
    Snap cs = snap(child_path);
    check_header(&cs, child, 64);
    g_assert_true(cs.locked);
    g_assert_cmpint(cs.lock_pid, ==, child);
    gsize ra = rec(a->handle);
    g_assert_cmpuint(u32_at(&cs, ra + R_STATE), ==, STATE_LIVE);
    g_assert_cmpuint(u64_at(&cs, ra + R_SERIAL), ==, 1);
    g_assert_cmpuint(u64_at(&cs, ra + R_HITS), ==, r.a.hits);
    g_assert_cmpuint(u64_at(&cs, ra + R_MISSES), ==, r.a.misses);
    g_assert_cmpuint(u64_at(&cs, ra + R_COMMITS), ==, r.a.commits);
    g_assert_cmpuint(u64_at(&cs, ra + R_EVICTIONS), ==, r.a.evictions);
    g_assert_cmpuint(u64_at(&cs, ra + R_MAX_ENTRIES), ==, 4);
    g_assert_cmpuint(u64_at(&cs, ra + R_N_ENTRIES), ==, 4);
    /* An inherited cache the child never called has no record there. */
    g_assert_cmpuint(u32_at(&cs, rec(b->handle) + R_STATE), ==, STATE_FREE);
    gsize rm = rec(r.mine_slot);
    g_assert_cmpuint(u32_at(&cs, rm + R_STATE), ==, STATE_LIVE);
    g_assert_cmpuint(u64_at(&cs, rm + R_SERIAL), ==, 3);
    g_assert_cmpuint(u64_at(&cs, rm + R_COMMITS), ==, r.mine.commits);
    g_assert_cmpuint(u64_at(&cs, rm + R_HITS), ==, r.mine.hits);
    snap_free(&cs);
    /* The child exits normally: its file goes, the parent's stays. */
    char go = 1;
    write_all(down[1], &go, 1);
    int status;
    g_assert_cmpint(waitpid(child, &status, 0), ==, child);
    g_assert_true(WIFEXITED(status));
    g_assert_cmpint(WEXITSTATUS(status), ==, 0);
    g_assert_false(g_file_test(child_path, G_FILE_TEST_EXISTS));
    now = snap(path);
    g_assert_true(now.exists);
    g_assert_cmpuint(now.len, ==, before.len);
    g_assert_cmpint(memcmp(now.bytes, before.bytes, before.len), ==, 0);
    g_assert_true(now.locked);
    g_assert_cmpint(now.lock_pid, ==, me);
    snap_free(&now);
    /* A child that publishes nothing of its own (no call on a cache) and
     * exits normally leaves its parent's file alone too. */
    pid_t quiet = make_child(kind);
    g_assert_cmpint(quiet, >=, 0);
    if (quiet == 0) {
        alarm(10);
        QedL2CacheStats st;
        qed_l2_cache_get_stats(a, &st);
        qed_unref_l2_cache_entry(qed_alloc_l2_cache_entry(a));
        exit(st.hits > 0 ? 0 : 1);
    }
    g_assert_cmpint(waitpid(quiet, &status, 0), ==, quiet);
    g_assert_true(WIFEXITED(status));
    g_assert_cmpint(WEXITSTATUS(status), ==, 0);
    g_assert_false(g_file_test(child_path, G_FILE_TEST_EXISTS));
    now = snap(path);
    g_assert_cmpuint(now.len, ==, before.len);
    g_assert_cmpint(memcmp(now.bytes, before.bytes, before.len), ==, 0);
    g_assert_true(now.locked);
    g_assert_cmpint(now.lock_pid, ==, me);
    snap_free(&now);
    /* And the parent goes on publishing. */
    read_table(a, table_offset(0));
    now = snap(path);
    check_record(&now, a, QED_L2_CACHE_POLICY_FIFO, 1, 50, 0, NULL, 0);
    check_record(&now, b, QED_L2_CACHE_POLICY_FIFO, 2, 50, 0, NULL, 0);
    snap_free(&now);
    snap_free(&before);
    cache_destroy(a);
    cache_destroy(b);
    g_free(child_path);
    g_free(path);
}

static void test_fork(void)
{
    if (!g_test_subprocess()) {
        in_subprocess("1", TRUE);
        return;
    }
    fork_case(BY_FORK);
}

static void test_clone(void)
{
    if (!g_test_subprocess()) {
        in_subprocess("1", TRUE);
        return;
    }
    fork_case(BY_CLONE);
}

static void test_underscore_fork(void)
{
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    if (!g_test_subprocess()) {
        in_subprocess("1", TRUE);
        return;
    }
    fork_case(BY_UNDERSCORE_FORK);
#else
    g_test_skip("_Fork needs glibc 2.34");
#endif
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/stats/basic/fields", test_fields);
    g_test_add_func("/stats/basic/growth", test_growth);
    g_test_add_func("/stats/basic/threads", test_threads);
    g_test_add_func("/stats/basic/dead-name-replaced", test_dead_name_replaced);
    g_test_add_func("/stats/basic/live-name-passed-over", test_live_name_passed_over);
    g_test_add_func("/stats/basic/refuse-symlink", test_refuse_symlink);
    g_test_add_func("/stats/basic/refuse-other-owner", test_refuse_other_owner);
    g_test_add_func("/stats/basic/refuse-open-mode", test_refuse_open_mode);
    g_test_add_func("/stats/basic/sizing-and-idle", test_sizing_and_idle);
    g_test_add_func("/stats/basic/off", test_off);
    g_test_add_func("/stats/basic/off-zero", test_off_zero);
    g_test_add_func("/stats/basic/tmp-fallback", test_tmp_fallback);
    g_test_add_func("/stats/basic/removed-at-exit", test_removed_at_exit);
    g_test_add_func("/stats/fork/fork", test_fork);
    g_test_add_func("/stats/fork/clone", test_clone);
    g_test_add_func("/stats/fork/underscore-fork", test_underscore_fork);
    return g_test_run();
}
