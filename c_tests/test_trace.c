/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * QED_L2_CACHE_TRACE=1 (docs/behaviour.md, docs/configuration.md): the library prints QEMU's trace lines,
 * as QEMU's log backend does ("event args", with QEMU's formats from
 * block/trace-events), at the same points as the C original, plus
 * qed_evict_l2_cache_entry.
 *
 * The environment is read once per process, so each case runs in a child
 * (g_test_trap_subprocess, which inherits the environment set just before).
 * The child builds the expected lines with printf's %p from the pointers it
 * holds, captures its own stderr while it drives the cache, and compares
 * exactly.
 */
#include <glib/gstdio.h>
#include <unistd.h>

#include "helpers.h"

/* Clears every variable that could change what the child prints. */
static void clean_environment(void)
{
    g_unsetenv("QED_L2_CACHE_TRACE");
    g_unsetenv("QED_L2_CACHE_SIZE");
    g_unsetenv("QED_L2_CACHE_POLICY");
    g_unsetenv("QED_L2_CACHE_ON_MISUSE");
}

static void spawn_child(const char *path, const char *trace_value)
{
    clean_environment();
    if (trace_value) {
        g_setenv("QED_L2_CACHE_TRACE", trace_value, TRUE);
    }
    g_test_trap_subprocess(path, 0, G_TEST_SUBPROCESS_DEFAULT);
    clean_environment();
}

/* stderr redirected to an unlinked temporary file while a trace is captured. */
typedef struct {
    int saved_fd;
    int file_fd;
} Capture;

static void capture_start(Capture *c)
{
    GError *error = NULL;
    char *path = NULL;
    c->file_fd = g_file_open_tmp("qed-l2-cache-trace-XXXXXX", &path, &error);
    g_assert_no_error(error);
    g_unlink(path);
    g_free(path);
    fflush(stderr);
    c->saved_fd = dup(STDERR_FILENO);
    g_assert_cmpint(c->saved_fd, >=, 0);
    g_assert_cmpint(dup2(c->file_fd, STDERR_FILENO), ==, STDERR_FILENO);
}

/* Restores stderr; returns what was written to it meanwhile. */
static char *capture_end(Capture *c)
{
    GString *text = g_string_new(NULL);
    char buf[4096];
    ssize_t n;
    fflush(stderr);
    g_assert_cmpint(dup2(c->saved_fd, STDERR_FILENO), ==, STDERR_FILENO);
    close(c->saved_fd);
    g_assert_cmpint(lseek(c->file_fd, 0, SEEK_SET), ==, 0);
    while ((n = read(c->file_fd, buf, sizeof(buf))) > 0) {
        g_string_append_len(text, buf, n);
    }
    g_assert_cmpint(n, ==, 0);
    close(c->file_fd);
    return g_string_free(text, FALSE);
}

/*
 * Drives one cache through every traced path: alloc, commit (silent),
 * find hit, find miss (silent), unref, unref NULL (silent), a duplicate
 * commit, an eviction, free. Appends to `expect` the lines QEMU's original
 * would print (plus the two library-only events) in order.
 */
static void run_sequence(GString *expect)
{
    L2TableCache *cache = g_malloc0(sizeof(*cache));
    CachedL2Table *a, *b, *c, *dup, *hit;

    qed_init_l2_cache(cache);
    qed_l2_cache_set_max_entries(cache, 2);

    a = new_entry(cache, table_offset(0));
    g_string_append_printf(expect, "qed_alloc_l2_cache_entry l2_cache %p entry %p\n", (void *)cache,
                           (void *)a);
    qed_commit_l2_cache_entry(cache, a);

    hit = qed_find_l2_cache_entry(cache, table_offset(0));
    g_assert_true(hit == a);
    /* QEMU traces the reference count before taking its reference. */
    g_string_append_printf(expect, "qed_find_l2_cache_entry l2_cache %p entry %p offset %" G_GUINT64_FORMAT
                           " ref 1\n", (void *)cache, (void *)a, table_offset(0));
    g_assert_null(qed_find_l2_cache_entry(cache, table_offset(1)));
    qed_unref_l2_cache_entry(hit);
    g_string_append_printf(expect, "qed_unref_l2_cache_entry entry %p ref 1\n", (void *)a);
    qed_unref_l2_cache_entry(NULL);

    /* A duplicate commit: QEMU's commit finds the cached one, unrefs it and
     * unrefs the new one, which is released (ref 0). */
    dup = new_entry(cache, table_offset(0));
    g_string_append_printf(expect, "qed_alloc_l2_cache_entry l2_cache %p entry %p\n", (void *)cache,
                           (void *)dup);
    g_string_append_printf(expect, "qed_find_l2_cache_entry l2_cache %p entry %p offset %" G_GUINT64_FORMAT
                           " ref 1\n", (void *)cache, (void *)a, table_offset(0));
    g_string_append_printf(expect, "qed_unref_l2_cache_entry entry %p ref 1\n", (void *)a);
    g_string_append_printf(expect, "qed_unref_l2_cache_entry entry %p ref 0\n", (void *)dup);
    qed_commit_l2_cache_entry(cache, dup);
    g_assert_cmpuint(check_list(cache), ==, 1);

    b = new_entry(cache, table_offset(1));
    g_string_append_printf(expect, "qed_alloc_l2_cache_entry l2_cache %p entry %p\n", (void *)cache,
                           (void *)b);
    qed_commit_l2_cache_entry(cache, b);

    /* The cache is full (max 2): committing c evicts the head, a. */
    c = new_entry(cache, table_offset(2));
    g_string_append_printf(expect, "qed_alloc_l2_cache_entry l2_cache %p entry %p\n", (void *)cache,
                           (void *)c);
    g_string_append_printf(expect, "qed_evict_l2_cache_entry l2_cache %p entry %p offset %" G_GUINT64_FORMAT
                           "\n", (void *)cache, (void *)a, table_offset(0));
    g_string_append_printf(expect, "qed_unref_l2_cache_entry entry %p ref 0\n", (void *)a);
    qed_commit_l2_cache_entry(cache, c);
    g_assert_cmpuint(check_list(cache), ==, 2);
    g_assert_true(nth_entry(cache, 0) == b && nth_entry(cache, 1) == c);

    hit = qed_find_l2_cache_entry(cache, table_offset(2));
    g_assert_true(hit == c);
    g_string_append_printf(expect, "qed_find_l2_cache_entry l2_cache %p entry %p offset %" G_GUINT64_FORMAT
                           " ref 1\n", (void *)cache, (void *)c, table_offset(2));
    qed_unref_l2_cache_entry(hit);
    g_string_append_printf(expect, "qed_unref_l2_cache_entry entry %p ref 1\n", (void *)c);

    /* free: the entries go silently, as in QEMU. */
    qed_free_l2_cache(cache);
    g_assert_cmpuint(check_list(cache), ==, 0);
    g_free(cache);
}

static void test_trace_lines(void)
{
    if (g_test_subprocess()) {
        GString *expect = g_string_new(NULL);
        Capture capture;
        char *got;

        capture_start(&capture);
        run_sequence(expect);
        got = capture_end(&capture);
        g_assert_cmpstr(got, ==, expect->str);
        /* Also on the real stderr, for the parent's check. */
        fputs(got, stderr);
        g_free(got);
        g_string_free(expect, TRUE);
        return;
    }
    spawn_child("/trace/lines", "1");
    g_test_trap_assert_passed();
    g_test_trap_assert_stderr("qed_alloc_l2_cache_entry l2_cache 0x* entry 0x*\n"
                              "*qed_unref_l2_cache_entry entry 0x* ref 1\n");
}

/* The same calls print nothing with tracing off (unset, or 0). */
static void test_trace_off(void)
{
    if (g_test_subprocess()) {
        GString *expect = g_string_new(NULL);
        run_sequence(expect);
        g_assert_cmpuint(expect->len, >, 0);
        g_string_free(expect, TRUE);
        return;
    }
    spawn_child("/trace/off", NULL);
    g_test_trap_assert_passed();
    g_test_trap_assert_stderr("");
    spawn_child("/trace/off", "0");
    g_test_trap_assert_passed();
    g_test_trap_assert_stderr("");
}

/* An invalid value is named once on stderr and tracing stays off. */
static void test_trace_invalid_value(void)
{
    if (g_test_subprocess()) {
        GString *expect = g_string_new(NULL);
        run_sequence(expect);
        g_string_free(expect, TRUE);
        return;
    }
    spawn_child("/trace/invalid-value", "yes");
    g_test_trap_assert_passed();
    g_test_trap_assert_stderr("qed-l2-cache: ignoring QED_L2_CACHE_TRACE=\"yes\": *; using the default\n");
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/trace/lines", test_trace_lines);
    g_test_add_func("/trace/off", test_trace_off);
    g_test_add_func("/trace/invalid-value", test_trace_invalid_value);
    return g_test_run();
}
