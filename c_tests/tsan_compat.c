/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Linked into test-threads in the ThreadSanitizer build only (see
 * c_tests/meson.build). The Rust library there is instrumented by nightly
 * rustc, whose LLVM emits calls to __tsan_memcpy/memmove/memset; clang 14's
 * runtime lacks these entry points (newer runtimes define them as the
 * memcpy/memmove/memset interceptors). These forward to the C functions,
 * which the runtime intercepts and checks, so nothing goes unchecked.
 * Weak: a newer runtime's own definitions win.
 */
#include <string.h>

void *__tsan_memcpy(void *dst, const void *src, size_t n);
void *__tsan_memmove(void *dst, const void *src, size_t n);
void *__tsan_memset(void *dst, int c, size_t n);

__attribute__((weak)) void *__tsan_memcpy(void *dst, const void *src, size_t n)
{
    return memcpy(dst, src, n);
}

__attribute__((weak)) void *__tsan_memmove(void *dst, const void *src, size_t n)
{
    return memmove(dst, src, n);
}

__attribute__((weak)) void *__tsan_memset(void *dst, int c, size_t n)
{
    return memset(dst, c, n);
}
