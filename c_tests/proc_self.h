/* SPDX-License-Identifier: LGPL-2.1-or-later */
/* What /proc says of this process, for the tests that watch the library's
 * thread and memory (test_idle.c, test_dlopen.c). */
#ifndef QED_L2_CACHE_TEST_PROC_SELF_H
#define QED_L2_CACHE_TEST_PROC_SELF_H

#include <glib.h>
#include <stdio.h>
#include <unistd.h>

/* The entries of directory `path` (GLib leaves out . and ..). */
static inline int dir_entries(const char *path)
{
    GDir *d = g_dir_open(path, 0, NULL);
    g_assert_nonnull(d);
    int n = 0;
    while (g_dir_read_name(d)) {
        n++;
    }
    g_dir_close(d);
    return n;
}

/* The threads of this process (/proc/self/task). */
static inline int thread_count(void)
{
    return dir_entries("/proc/self/task");
}

/* Descriptors open in this process (/proc/self/fd). */
static inline int open_fds(void)
{
    return dir_entries("/proc/self/fd");
}

/* Resident bytes (/proc/self/statm). */
static inline long rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    g_assert_nonnull(f);
    long size, resident;
    g_assert_cmpint(fscanf(f, "%ld %ld", &size, &resident), ==, 2);
    fclose(f);
    return resident * sysconf(_SC_PAGESIZE);
}

#endif
