#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""qed-l2-cache-stat against a live process: the library's writer and the
program's reader together.

Starts PUBLISHER (tests/stat/publisher.c, linked with the library) with
QED_L2_CACHE_STATS=1 and XDG_RUNTIME_DIR pointing at a scratch directory,
reads the counters it prints (qed_l2_cache_get_stats), and runs PROGRAM
with the same XDG_RUNTIME_DIR (no --dir: both sides must agree on the
directory) until it reports the same counters. Then the publisher exits
and its file must be gone (removed by the library, or found stale and
removed by the program).

Skips (exit 77) when the library publishes nothing at all under
XDG_RUNTIME_DIR: a library built without the writer (QED_L2_CACHE_STATS
not implemented yet), which says nothing about the reader. A file
published anywhere but where the program looks is a failure.

  check_stat_live.py PROGRAM PUBLISHER
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

SKIP = 77
failures = 0


def check(cond, what):
    global failures
    print(("ok: " if cond else "FAIL: ") + what, flush=True)
    if not cond:
        failures += 1


def published(root):
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, files in os.walk(root) for f in files)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    program, publisher = map(os.path.abspath, sys.argv[1:])
    runtime = tempfile.mkdtemp(prefix="qed-l2-cache-stat-live-")
    os.chmod(runtime, 0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("QED_L2_CACHE_")}
    env.update(QED_L2_CACHE_STATS="1", XDG_RUNTIME_DIR=runtime)
    proc = subprocess.Popen([publisher], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                            text=True)
    try:
        caches = {}
        for _ in range(2):
            f = proc.stdout.readline().split()
            if len(f) != 11 or f[0] != "cache":
                check(False, f"the publisher prints its counters (got {f})")
                return 1
            keys = ["hits", "misses", "commits", "duplicate_commits", "evictions",
                    "peak_entries", "n_entries", "max_entries"]
            caches[int(f[1])] = dict(zip(keys, map(int, f[2:10])), policy=f[10])

        deadline = time.monotonic() + 3
        while not published(runtime) and time.monotonic() < deadline:
            time.sleep(0.05)
        files = published(runtime)
        if not files:
            print("SKIP: the library published no statistics file under XDG_RUNTIME_DIR with "
                  "QED_L2_CACHE_STATS=1: this build has no writer yet (pending the library's "
                  "statistics files); nothing to read")
            return SKIP
        where = os.path.join("qed-l2-cache", str(proc.pid))
        check(where in files, f"the library publishes $XDG_RUNTIME_DIR/{where} (found: {files})")

        # The writer may publish a moment after the calls: poll for 3 s.
        want_keys = ["hits", "misses", "commits", "duplicate_commits", "evictions",
                     "peak_entries", "n_entries", "max_entries", "policy"]
        deadline = time.monotonic() + 3
        while True:
            r = subprocess.run([program, "--json", "-c", "1", str(proc.pid)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               timeout=60)
            objs = [json.loads(line) for line in r.stdout.splitlines()] if r.returncode == 0 else []
            got = {o["cache"]: {k: o[k] for k in want_keys} for o in objs}
            if got == caches or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        check(r.returncode == 0 and r.stderr == "",
              f"qed-l2-cache-stat --json -c 1 PID exits 0 quietly ({r.returncode}, {r.stderr!r})")
        check(got == caches, "the program reports the counters qed_l2_cache_get_stats gives")
        if got != caches:
            print(f"  program: {got}\n  library: {caches}")
        by_cache = {o["cache"]: o for o in objs}
        if 1 in by_cache and 2 in by_cache:
            check(by_cache[1]["advisor"] is None, "cache 1: the advisor off (null)")
            adv = by_cache[2]["advisor"]
            check(adv is not None and adv["finds"] == caches[2]["hits"] + caches[2]["misses"],
                  f"cache 2: the advisor on, and it saw every find ({adv})")
            check(all(o["pid"] == proc.pid and o["writer_pid"] == proc.pid for o in objs),
                  "pid and writer_pid are the publisher's")

        r = subprocess.run([program, str(proc.pid)], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=60)
        check(r.returncode == 0 and len(r.stdout.splitlines()) == 3, "the table: a header, two caches")

        proc.stdin.close()
        check(proc.wait(timeout=30) == 0, "the publisher exits 0")
        r = subprocess.run([program, str(proc.pid)], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=60)
        check(r.returncode == 1 and r.stdout == "", "after it exited, asking for it fails (exit 1)")
        check(not os.path.exists(os.path.join(runtime, where)),
              "after it exited, its file is gone")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(runtime, ignore_errors=True)
    print("check_stat_live: %s" % ("all checks passed" if failures == 0 else f"{failures} failed"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
