#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The hit path's instruction guard (BENCHMARKS.md, "Hit cost").

Counts the instructions of one find (hit) + unref at 50 tables under
cachegrind, for the C baseline and the library (fixed and auto, each
policy), from bench/hit_loop.c run at two iteration counts (setup and
teardown cancel in the difference). Instruction counts are exact and do not
depend on the machine's load, so this is a test, not a timing.

It fails when fixed FIFO (the default cache) or auto FIFO costs more than
its bound, as a multiple of the C baseline's count in the same build:

  fixed fifo <= 1.21 x the baseline: not worse than the library was when
      auto sizing was asked for (195 instructions against 162.5, release);
  auto fifo  <= 2.40 x the baseline;
  idle fifo  <= 1.85 x the baseline (a fixed cache, QED_L2_CACHE_IDLE=600).

Usage: check_instructions.py HIT_LOOP [--fixed-bound X] [--auto-bound X] [--idle-bound X]
"""
import argparse
import os
import re
import shutil
import subprocess
import sys

TABLES = 50
RUNS = (100_000, 200_000)


def instructions(hit_loop, side, mode, policy, idle=None):
    """Instructions of `hit_loop side N 50 [mode]` at each N in RUNS."""
    totals = []
    for n in RUNS:
        cmd = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
               hit_loop, side, str(n), str(TABLES)] + ([mode] if mode else [])
        env = dict(os.environ, QED_L2_CACHE_POLICY=policy)
        for k in ("QED_L2_CACHE_SIZE", "QED_L2_CACHE_REPORT", "QED_L2_CACHE_STATS", "QED_L2_CACHE_TRACE",
                  "QED_L2_CACHE_IDLE", "QED_L2_CACHE_MEMORY"):
            env.pop(k, None)
        if idle:
            env["QED_L2_CACHE_IDLE"] = idle
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        m = re.search(r"I\s+refs:\s+([\d,]+)", out.stderr)
        if not m:
            sys.exit(f"check_instructions: no 'I refs' line in cachegrind's output of {cmd}:\n{out.stderr}")
        totals.append(int(m.group(1).replace(",", "")))
    return (totals[1] - totals[0]) / (RUNS[1] - RUNS[0])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("hit_loop")
    ap.add_argument("--fixed-bound", type=float, default=1.21)
    ap.add_argument("--auto-bound", type=float, default=2.40)
    ap.add_argument("--idle-bound", type=float, default=1.85)
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        print("check_instructions: valgrind not found; skipped")
        return 77
    base = instructions(args.hit_loop, "base", None, "fifo")
    print(f"instructions per find (hit) + unref at {TABLES} tables, the loop's own included")
    print(f"| cache | policy | instructions | x baseline ({base:.1f}) |")
    print("|---|---|---:|---:|")
    got = {}
    for mode in ("fixed", "auto"):
        for policy in ("fifo", "lru", "sieve"):
            n = instructions(args.hit_loop, "lib", "auto" if mode == "auto" else None, policy)
            got[mode, policy] = n / base
            print(f"| {mode} | {policy} | {n:.1f} | {n / base:.3f} |")
    n = instructions(args.hit_loop, "lib", None, "fifo", idle="600")
    got["idle", "fifo"] = n / base
    print(f"| fixed, idle release on | fifo | {n:.1f} | {n / base:.3f} |")
    failed = []
    for mode, bound in (("fixed", args.fixed_bound), ("auto", args.auto_bound), ("idle", args.idle_bound)):
        if got[mode, "fifo"] > bound:
            failed.append(f"{mode} fifo costs {got[mode, 'fifo']:.3f} x the baseline's instructions, "
                          f"over its bound {bound}")
    for f in failed:
        print(f"check_instructions: FAIL: {f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
