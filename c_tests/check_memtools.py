#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Runs c_tests/test-memtools under valgrind, or as built with ASan, and
checks that a leaked entry and a read after release are reported.

usage: check_memtools.py valgrind|asan EXE [VALGRIND]
"""
import os
import re
import subprocess
import sys


def run(cmd, env=None):
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    return p.returncode, p.stdout + p.stderr


def lost_bytes(out):
    """Bytes valgrind reports definitely plus indirectly lost."""
    total = 0
    for line in out.splitlines():
        m = re.search(r"(definitely|indirectly) lost: ([\d,]+) bytes", line)
        if m:
            total += int(m.group(2).replace(",", ""))
    return total


def main():
    tool, exe = sys.argv[1], sys.argv[2]
    failures = []
    if tool == "valgrind":
        vg = [sys.argv[3], "--leak-check=full", "--show-leak-kinds=definite,indirect"]
        rc, out = run(vg + [exe, "leak"])
        if "definitely lost: 48 bytes in 1 blocks" not in out:
            failures.append(("leak: valgrind must report the entry (48 bytes) definitely lost", out))
        if "indirectly lost: 512 bytes in 1 blocks" not in out:
            failures.append(("leak: valgrind must report its table (512 bytes) indirectly lost", out))
        rc, out = run(vg + [exe, "leak-cache"])
        lost = lost_bytes(out)
        if lost < 3 * 48 + 3 * 4096:
            failures.append((f"leak-cache: valgrind must report the never-freed cache's 3 entries and "
                            f"tables lost (definitely + indirectly: {lost} bytes)", out))
        rc, out = run(vg + [exe, "read-after-release"])
        if "Invalid read of size 8" not in out:
            failures.append(("read-after-release: valgrind must report an invalid read", out))
    elif tool == "asan":
        env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0")
        rc, out = run([exe, "leak"], env)
        if rc == 0 or "Direct leak of 48 byte(s) in 1 object(s)" not in out:
            failures.append(("leak: LeakSanitizer must report the entry (48 bytes)", out))
        rc, out = run([exe, "leak-cache"], env)
        # The entries link to each other: LeakSanitizer may call them all
        # indirect leaks (a cycle), as it would for the C file's.
        if rc == 0 or "leak of 144 byte(s) in 3 object(s)" not in out \
                or "leak of 12288 byte(s) in 3 object(s)" not in out:
            failures.append(("leak-cache: LeakSanitizer must report the never-freed cache's 3 entries "
                            "and their tables", out))
        rc, out = run([exe, "read-after-release"], env)
        if rc == 0 or "use-after-poison" not in out:
            failures.append(("read-after-release: ASan must report a use-after-poison", out))
    else:
        sys.exit(f"unknown tool {tool}")
    if failures:
        # The output of each failed case, then the verdicts.
        for _, out in failures:
            print(out)
        for f, _ in failures:
            print("FAIL:", f)
        sys.exit(1)
    print(f"ok: {tool} reports the leaked entry and the read after release")


if __name__ == "__main__":
    main()
