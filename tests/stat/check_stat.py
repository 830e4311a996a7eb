#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The built qed-l2-cache-stat against a hand-written statistics file.

This script plays the writer: it lays a file out as src/stats_layout.rs
says (native byte order, struct), holds the writer's lock on it (fcntl
F_SETLK, a write lock on the whole file, which the program, another
process, sees), and checks what the program prints: `--json -c 1` value by
value (parsed with Python's json), the table, the messages, the exit
statuses, and usage errors.

  check_stat.py PROGRAM MANPAGE

MANPAGE (docs/qed-l2-cache-stat.1): its .TH line must name the program's
version.

Exit 0 when every check holds, 1 otherwise (meson runs it: suite 'stat').
"""
import fcntl
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

# src/stats_layout.rs
MAGIC = b"QEDL2STA"
VERSION = 1
HEADER_BYTES = 64
RECORD_BYTES = 256
BYTE_ORDER = 0x01020304
STATE_LIVE = 1
MAX_PREDICTIONS = 8
IDLE_RELEASES = 232  # then sizing, u32 (0 unsaid, 1 fixed, 2 auto)

failures = 0


def check(cond, what):
    global failures
    print(("ok: " if cond else "FAIL: ") + what, flush=True)
    if not cond:
        failures += 1


def header(records, pid=77, start_ns=1_700_000_000_123_456_789, version=VERSION, order=BYTE_ORDER):
    b = MAGIC + struct.pack("=IIIIIIQ", version, HEADER_BYTES, RECORD_BYTES, order, pid, records,
                            start_ns)
    return b.ljust(HEADER_BYTES, b"\0")


def record(c):
    preds = c.get("predictions", [])
    b = struct.pack("=IIQ", STATE_LIVE, c["policy"], c["serial"])
    b += struct.pack("=9Q", c["hits"], c["misses"], c["commits"], c["duplicate_commits"],
                     c["evictions"], c["peak_entries"], c["n_entries"], c["max_entries"],
                     c["table_bytes"])
    b += struct.pack("=QII", c["finds"], c["recommended"], len(preds))
    for size, misses in preds:
        b += struct.pack("=IIQ", size, 0, misses)
    b = b.ljust(IDLE_RELEASES, b"\0")
    sizing = {None: 0, False: 1, True: 2}[c.get("auto")]
    b += struct.pack("=QI", c.get("idle_releases", 0), sizing)
    assert len(b) <= RECORD_BYTES
    return b.ljust(RECORD_BYTES, b"\0")


FREE = bytes(RECORD_BYTES)

# Slot 1 free; slot 2: cache 2 (lru, the advisor on); slot 3: cache 1
# (fifo, the advisor off), so that the serial order differs from the slots'.
CACHE_2 = dict(policy=1, serial=2, hits=123456789012, misses=98765, commits=98800,
               duplicate_commits=35, evictions=98700, peak_entries=100, n_entries=100,
               max_entries=100, table_bytes=100 * 262144, finds=123456887777, recommended=200,
               predictions=[(50, 200000), (100, 98765), (200, 1000)], auto=True,
               idle_releases=7)
CACHE_1 = dict(policy=0, serial=1, hits=3, misses=1, commits=1, duplicate_commits=0,
               evictions=0, peak_entries=1, n_entries=1, max_entries=50, table_bytes=1536,
               finds=0, recommended=0)


def typical():
    return header(3) + FREE + record(CACHE_2) + record(CACHE_1)


class Dir:
    """A scratch directory (0700) whose files this process writes and locks."""

    def __init__(self):
        self.path = tempfile.mkdtemp(prefix="qed-l2-cache-stat-check-")
        os.chmod(self.path, 0o700)
        self.held = []

    def live(self, name, data):
        p = os.path.join(self.path, name)
        fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, data)
        # The library's lock: fcntl(F_SETLK) of a write lock on the whole file.
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.held.append(fd)
        return p

    def dead(self, name, data):
        p = os.path.join(self.path, name)
        with open(p, "wb") as f:
            f.write(data)
        return p

    def close(self):
        for fd in self.held:
            os.close(fd)
        shutil.rmtree(self.path, ignore_errors=True)


def run(program, *args, env=None):
    if env is None:
        env = dict(os.environ)
        env.pop("XDG_RUNTIME_DIR", None)
    try:
        r = subprocess.run([program, *args], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        check(False, f"{' '.join(args)}: finishes within 60 s")
        return -1, "", ""
    return r.returncode, r.stdout, r.stderr


def expected_json(c, path, slot):
    adv = None
    if c["finds"]:
        adv = {"finds": c["finds"], "recommended": c["recommended"] or None,
               "predictions": [{"size": s, "misses": m} for s, m in c.get("predictions", [])]}
    return {
        "report": 1, "pid": 4242, "instance": None, "file": path, "writer_pid": 77,
        "cache": c["serial"], "slot": slot, "policy": ["fifo", "lru", "sieve"][c["policy"]],
        "hits": c["hits"], "misses": c["misses"], "commits": c["commits"],
        "duplicate_commits": c["duplicate_commits"], "evictions": c["evictions"],
        "peak_entries": c["peak_entries"], "n_entries": c["n_entries"],
        "max_entries": c["max_entries"], "table_bytes": c["table_bytes"],
        "interval_s": None, "hits_per_s": None, "misses_per_s": None, "advisor": adv,
        "sizing": {None: None, False: "fixed", True: "auto"}[c.get("auto")],
        "idle_releases": c.get("idle_releases") if c.get("auto") is not None else None,
    }


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    program = os.path.abspath(sys.argv[1])
    code, out, _ = run(program, "--version")
    version = out.split()[1] if code == 0 and len(out.split()) > 1 else "?"
    with open(sys.argv[2], encoding="utf-8") as f:
        th = next((line for line in f if line.startswith(".TH ")), "")
    check(f'"qed-l2-cache {version}"' in th,
          f"the man page's .TH names version {version} ({th.strip()})")
    d = Dir()
    try:
        path = d.live("4242", typical())

        code, out, err = run(program, "--dir", d.path, "--json", "-c", "1")
        check(code == 0 and err == "", f"--json -c 1 exits 0, nothing on stderr ({code}, {err!r})")
        objs = [json.loads(line) for line in out.splitlines()]
        check(objs == [expected_json(CACHE_1, path, 3), expected_json(CACHE_2, path, 2)],
              "--json -c 1: two objects, by cache number, every value as written")
        if objs and objs[0] != expected_json(CACHE_1, path, 3):
            print("  got     ", objs[0], "\n  expected", expected_json(CACHE_1, path, 3))

        code, out, err = run(program, "--dir", d.path, "4242")
        check(code == 0, "the table exits 0")
        want = ("   PID CACHE      HITS    MISSES   HIT%  ENTRIES/MAX  TABLES  POLICY  ADVICE SIZING    IDLE\n"
                "  4242     1         3         1   75.0         1/50  1.5KiB    fifo       -      -       -\n"
                "  4242     2 123456789012     98765  100.0      100/100   25MiB     lru     200   auto       7\n")
        check(out == want, "the table, exactly")
        if out != want:
            print(out)

        # Watching: two reports, a blank line between them, rates in the second.
        code, out, err = run(program, "--dir", d.path, "-w", "0.1", "-c", "2")
        lines = out.splitlines()
        check(code == 0 and len(lines) == 7 and lines[3] == "" and "HITS/S" in lines[4]
              and lines[5].split()[2:4] == ["0.0", "0.0"],
              "-w 0.1 -c 2: two reports, a blank line, rates (0.0/s: nothing changed)")
        code, out, err = run(program, "--dir", d.path, "--json", "-w", "0.1", "-c", "2")
        objs = [json.loads(line) for line in out.splitlines()]
        check(len(objs) == 4 and [o["report"] for o in objs] == [1, 1, 2, 2]
              and objs[2]["hits_per_s"] == 0 and objs[2]["interval_s"] > 0,
              "--json -w 0.1 -c 2: JSON Lines only (no blank line), rates in the second report")

        # Bad files beside the good one: each named on stderr, skipped.
        d.live("100", header(3, version=2) + FREE * 3)
        d.live("101", header(3, order=0x04030201) + FREE * 3)
        d.live("102", header(0xFFFFFFFF) + FREE)
        d.live("103", b"QEDL2S")
        os.mkfifo(os.path.join(d.path, "104"))
        os.symlink(path, os.path.join(d.path, "105"))
        os.mkdir(os.path.join(d.path, "106"))
        d.live("107", header(1) + record(dict(CACHE_1, policy=7)))
        code, out, err = run(program, "--dir", d.path)
        msgs = err.splitlines()
        p = lambda n: os.path.join(d.path, n)
        want = [
            f"qed-l2-cache-stat: {p('100')}: layout version 2, this reader knows 1: skipped",
            f"qed-l2-cache-stat: {p('101')}: written with another byte order: skipped",
            f"qed-l2-cache-stat: {p('102')}: the header claims 4294967295 records, but its 320 bytes hold 1: skipped",
            f"qed-l2-cache-stat: {p('103')}: truncated: 6 bytes, 64 needed: skipped",
            f"qed-l2-cache-stat: {p('104')}: is a FIFO, not a statistics file: skipped",
            f"qed-l2-cache-stat: {p('105')}: is a symbolic link, not a statistics file: skipped",
            f"qed-l2-cache-stat: {p('106')}: is a directory, not a statistics file: skipped",
            f"qed-l2-cache-stat: {p('107')}: record 0: unknown policy: skipped",
        ]
        check(code == 0 and msgs == want and len(out.splitlines()) == 3,
              "bad files: one line each on stderr, skipped; the good file still read (exit 0)")
        if msgs != want:
            print("\n".join(msgs))
        code, out, err = run(program, "--dir", d.path, "100", "101")
        check(code == 1 and out == "" and "no valid statistics file for pid 100" in err,
              "only bad files asked for: exit 1")

        # A dead writer's file (no lock held): removed, said so.
        stale = d.dead("5555", typical())
        code, out, err = run(program, "--dir", d.path, "5555")
        check(code == 1 and not os.path.exists(stale) and
              f"{stale}: no process holds its lock (its writer is gone): removed the stale file" in err,
              "a dead writer's file is removed, and asking for it fails")

        # No file at all: not an error unless a pid was asked for.
        empty = tempfile.mkdtemp(prefix="qed-l2-cache-stat-empty-")
        os.chmod(empty, 0o700)
        code, out, err = run(program, "--dir", empty)
        check(code == 0 and out == "" and
              err == f"qed-l2-cache-stat: no process publishes statistics in {empty}\n",
              "an empty directory: the message, exit 0")
        code, out, err = run(program, "--dir", empty, "1")
        check(code == 1, "an empty directory and a pid: exit 1")
        os.rmdir(empty)

        # Usage errors: exit 2 and a message.
        for args in (["-w"], ["-w", "0"], ["-w", "x"], ["-w", "-2"], ["-c", "0"], ["--nope"],
                     ["pid"], ["--dir"]):
            code, out, err = run(program, *args)
            check(code == 2 and out == "" and err.startswith("qed-l2-cache-stat: ")
                  and err.endswith("Try 'qed-l2-cache-stat --help'.\n"),
                  f"usage error {' '.join(args)!r}: exit 2, a message")
        code, out, err = run(program, "--help")
        check(code == 0 and out.startswith("Usage: qed-l2-cache-stat"), "--help: exit 0, usage")
    finally:
        d.close()
    print("check_stat: %s" % ("all checks passed" if failures == 0 else f"{failures} failed"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
