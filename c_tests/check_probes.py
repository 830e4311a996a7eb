#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""The library's USDT probes (docs/probes.md), checked from outside, in TAP.

  check_probes.py LIB [--arch x86_64|aarch64] [--stripped]
      readelf only: `readelf -n` lists every probe once (provider, name, an
      argument string with the right count, sizes and registers of the
      architecture, the .stapsdt.base address, a semaphore in .probes,
      named <provider>_<name>_semaphore in the symbol table unless
      --stripped)
  check_probes.py LIB --target PROBE_TARGET --gdb-script PROBES_GDB
      the same, then gdb runs c_tests/probe-target twice (probes_gdb.py):
      `info probes` lists them; every probe fires where the program expects
      it, in order, with the arguments it knows; the qemu probes and evict
      match the trace lines of QED_L2_CACHE_TRACE=1 one for one; a probe
      breakpoint enables its probe through the semaphore; with the
      semaphore 0 the site is skipped, written 1 by hand it fires.
      Skipped, saying why, without gdb (or where gdb may not trace).
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

# provider:name -> argument sizes (sys/sdt.h: negative for signed).
PROBES = {
    "qemu:qed_alloc_l2_cache_entry": [8, 8],
    "qemu:qed_unref_l2_cache_entry": [8, -4],
    "qemu:qed_find_l2_cache_entry": [8, 8, 8, -4],
    "qed_l2_cache:miss": [8, 8],
    "qed_l2_cache:commit": [8, 8, 8],
    "qed_l2_cache:duplicate": [8, 8, 8],
    "qed_l2_cache:evict": [8, 8, 8],
}
# The registers an argument of each size may be in, per architecture.
REGISTERS = {
    "x86_64": {8: r"%r(?:[abcd]x|[sd]i|bp|[89]|1[0-5])", -4: r"%(?:e(?:[abcd]x|[sd]i|bp)|r(?:[89]|1[0-5])d)"},
    "aarch64": {8: r"x(?:[12]?[0-9]|30)", -4: r"w(?:[12]?[0-9]|30)"},
}
# Trace event (QED_L2_CACHE_TRACE=1) -> the probe that fires with its values.
TRACE_PROBES = {
    "qed_alloc_l2_cache_entry": "qemu:qed_alloc_l2_cache_entry",
    "qed_unref_l2_cache_entry": "qemu:qed_unref_l2_cache_entry",
    "qed_find_l2_cache_entry": "qemu:qed_find_l2_cache_entry",
    "qed_evict_l2_cache_entry": "qed_l2_cache:evict",
}


class Tap:
    def __init__(self, plan):
        print("1..%d" % plan, flush=True)
        self.n, self.failed = 0, 0

    def result(self, name, problems):
        self.n += 1
        if problems:
            self.failed += 1
            print("not ok %d - %s" % (self.n, name))
            for p in problems:
                print("# " + p)
        else:
            print("ok %d - %s" % (self.n, name))
        sys.stdout.flush()

    def skip(self, name, why):
        self.n += 1
        print("ok %d - %s # SKIP %s" % (self.n, name, why), flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)


def sections(lib):
    """{name: (address, size, flags)} from readelf -S."""
    out = run(["readelf", "-SW", lib]).stdout
    found = {}
    for m in re.finditer(r"^\s*\[\s*\d+\]\s+(\S+)\s+\S+\s+([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)"
                         r"\s+[0-9a-f]+\s+([A-Za-z]*)", out, re.M):
        found[m.group(1)] = (int(m.group(2), 16), int(m.group(3), 16), m.group(4))
    return found


def notes(lib):
    """[(provider, name, location, base, semaphore, arguments)] from readelf -n."""
    out = run(["readelf", "-nW", lib]).stdout
    return [(m.group(1), m.group(2), int(m.group(3), 16), int(m.group(4), 16), int(m.group(5), 16),
             m.group(6).strip())
            for m in re.finditer(r"Provider: (\S+)\s+Name: (\S+)\s+Location: 0x([0-9a-f]+), "
                                 r"Base: 0x([0-9a-f]+), Semaphore: 0x([0-9a-f]+)\s+"
                                 r"Arguments: ?([^\n]*)", out)]


def check_notes(lib, arch, stripped):
    problems = []
    found = notes(lib)
    secs = sections(lib)
    symbols = {}
    if not stripped:
        for line in run(["readelf", "-sW", lib]).stdout.splitlines():
            f = line.split()
            if len(f) >= 8 and f[-1].endswith("_semaphore"):
                symbols[f[-1]] = (int(f[1], 16), int(f[2]))
    names = ["%s:%s" % (p, n) for p, n, *_ in found]
    for probe in PROBES:
        if names.count(probe) != 1:
            problems.append("%s: %d notes, want exactly 1" % (probe, names.count(probe)))
    for extra in sorted(set(names) - set(PROBES)):
        problems.append("unexpected probe %s" % extra)
    base = secs.get(".stapsdt.base")
    probes_sec = secs.get(".probes")
    if not base:
        problems.append("no .stapsdt.base section (gdb would find no probe)")
    if not probes_sec or "W" not in probes_sec[2]:
        problems.append("no writable .probes section: %s" % (probes_sec,))
    text = [(a, a + s) for a, s, flags in secs.values() if "X" in flags]
    semaphores = set()
    for provider, name, location, note_base, sem, args in found:
        probe = "%s:%s" % (provider, name)
        if probe not in PROBES:
            continue
        say = lambda what: problems.append("%s: %s" % (probe, what))
        sizes = PROBES[probe]
        regs = REGISTERS[arch]
        want = r"\s".join(r"%d@%s" % (size, regs[size]) for size in sizes)
        if not re.fullmatch(want, args):
            say("arguments %r, want %d of sizes %s in %s registers" % (args, len(sizes), sizes, arch))
        if base and note_base != base[0]:
            say("base 0x%x, but .stapsdt.base is at 0x%x" % (note_base, base[0]))
        if not any(a <= location < e for a, e in text):
            say("location 0x%x is in no executable section" % location)
        if not sem:
            say("no semaphore")
        elif probes_sec and not probes_sec[0] <= sem < probes_sec[0] + probes_sec[1] - 1:
            say("semaphore 0x%x is outside .probes" % sem)
        if sem in semaphores:
            say("semaphore 0x%x shared with another probe" % sem)
        semaphores.add(sem)
        symbol = "%s_%s_semaphore" % (provider, name)
        if not stripped:
            if symbol not in symbols:
                say("no symbol %s" % symbol)
            elif symbols[symbol] != (sem, 2):
                say("symbol %s: address 0x%x, size %d; the note says 0x%x, an unsigned short"
                    % ((symbol,) + symbols[symbol] + (sem,)))
    return problems, found


def expected_events(path):
    """What probe-target wrote: [(probe, [ints])] up to `end`, and N of `hits N`."""
    events, hits = [], None
    with open(path) as fh:
        for line in fh:
            f = line.split()
            if f == ["end"]:
                continue
            if f[0] == "hits":
                hits = int(f[1])
                continue
            events.append((f[0], [int(x, 0) for x in f[1:]]))
    return events, hits


def trace_events(path):
    """The trace lines on the program's stderr, as (probe, [ints])."""
    events = []
    with open(path, errors="replace") as fh:
        for line in fh:
            f = line.split()
            if f and f[0] in TRACE_PROBES:
                values = f[2::2]  # "event k1 v1 k2 v2 ..."
                events.append((TRACE_PROBES[f[0]],
                               [0 if v == "(nil)" else int(v, 0) for v in values]))
    return events


def fmt(events):
    return ["%s %s" % (p, " ".join(hex(a) if a > 0xffff else str(a) for a in args))
            for p, args in events]


def diff(what, got, want):
    if got == want:
        return []
    out = ["%s differ: got %d, want %d" % (what, len(got), len(want))]
    for i, (g, w) in enumerate(zip(fmt(got) + ["-"] * len(want), fmt(want) + ["-"] * len(got))):
        if g != w:
            out.append("first difference at %d: got %r, want %r" % (i, g, w))
            break
    return out


def gdb_session(gdb, mode, target, script, tmp, lib):
    out, expected, err = (os.path.join(tmp, mode + s) for s in (".json", ".expected", ".stderr"))
    env = dict(os.environ, PROBES_GDB_MODE=mode, PROBES_GDB_OUT=out, PROBES_GDB_PROGRAM=target,
               PROBES_GDB_EXPECTED=expected, PROBES_GDB_STDERR=err, QED_L2_CACHE_TRACE="1",
               LD_LIBRARY_PATH=os.path.dirname(os.path.abspath(lib)))
    for v in ("QED_L2_CACHE_SIZE", "QED_L2_CACHE_POLICY", "QED_L2_CACHE_ON_MISUSE", "QED_L2_CACHE_REPORT"):
        env.pop(v, None)
    p = run([gdb, "-batch", "-nx", "-x", script], env=env)
    log = p.stdout + p.stderr
    if not os.path.exists(out):
        return None, log, None, None
    with open(out) as fh:
        result = json.load(fh)
    return result, log, expected, err


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("lib")
    ap.add_argument("--arch", default="x86_64", choices=sorted(REGISTERS))
    ap.add_argument("--stripped", action="store_true")
    ap.add_argument("--target")
    ap.add_argument("--gdb-script")
    a = ap.parse_args()

    tap = Tap(1 if not a.target else 6)
    problems, found = check_notes(a.lib, a.arch, a.stripped)
    tap.result("readelf -n: the %d probes of %s, %s argument strings, base, semaphores"
               % (len(PROBES), os.path.basename(a.lib), a.arch), problems)
    for p, n, loc, base, sem, args in found:
        print("# %s:%s at 0x%x, semaphore 0x%x, arguments %s" % (p, n, loc, sem, args))
    if not a.target:
        return 1 if tap.failed else 0

    names = ["info probes lists them", "each probe fires in order with the program's arguments",
             "the probes match the trace lines (QED_L2_CACHE_TRACE=1)",
             "a -probe-stap breakpoint enables its probe (the semaphore)",
             "semaphore 0: the site is skipped; written 1: it fires"]
    gdb = shutil.which("gdb")
    why = None
    if not gdb:
        why = "gdb not found (tools/ensure-deps installs it)"
    elif run([gdb, "-batch", "-nx", "-ex", "python import gdb"]).returncode != 0:
        why = "this gdb has no Python"
    with tempfile.TemporaryDirectory() as tmp:
        if not why:
            sa, log_a, expected_a, err_a = gdb_session(gdb, "probes", a.target, a.gdb_script, tmp, a.lib)
            if sa is None and re.search(r"ptrace|Operation not permitted", log_a):
                why = "gdb may not trace here: " + log_a.strip().splitlines()[-1]
        if why:
            for n in names:
                tap.skip(n, why)
            return 0
        sb, log_b, _, _ = gdb_session(gdb, "semaphore", a.target, a.gdb_script, tmp, a.lib)
        sessions = [("probes", sa, log_a), ("semaphore", sb, log_b)]
        broken = []
        for mode, s, log in sessions:
            if s is None:
                broken.append("gdb session %s wrote no result; its output:" % mode)
                broken += log.strip().splitlines()[-20:]
            else:
                broken += ["%s: %s" % (mode, e) for e in s["errors"]]
                if s["exit_code"] != 0:
                    broken.append("%s: probe-target exited with %s" % (mode, s["exit_code"]))
        if broken:
            for n in names:
                tap.result(n, broken)
            return 1

        # info probes: each probe once, in the library.
        problems = []
        for probe in PROBES:
            provider, name = probe.split(":")
            rows = [l for l in sa["info_probes"].splitlines()
                    if re.match(r"stap\s+%s\s+%s\s+0x" % (provider, name), l)]
            if len(rows) != 1 or "libqed_l2_cache" not in rows[0]:
                problems.append("%s: rows %r" % (probe, rows))
        tap.result(names[0], problems)

        # The run up to checkpoint 0, probe for probe.
        want, hits = expected_events(expected_a)
        fired = [(f["probe"], f["args"]) for f in sa["fired"]]
        scripted = sum(sa["checkpoints"][0]["fired"].values()) if sa["checkpoints"] else 0
        problems = diff("probes fired", fired[:scripted], want)
        problems += ["%s fired with semaphore %d" % (f["probe"], f["semaphore"])
                     for f in sa["fired"] if f["semaphore"] < 1]
        tap.result(names[1], problems)

        # The whole run: qemu's probes and evict against the trace lines.
        traced = [e for e in fired if e[0] in TRACE_PROBES.values()]
        tap.result(names[2], diff("probes and trace lines", traced, trace_events(err_a)))

        # Rounds of hits with the probe breakpoints in place.
        cps = sa["checkpoints"]
        problems = [] if len(cps) == 3 else ["%d checkpoints, want 3" % len(cps)]
        for i, cp in enumerate(cps[1:], 1):
            got = cp["fired"].get("qemu:qed_find_l2_cache_entry", 0)
            if got != hits:
                problems.append("round %d: the find probe fired %d times, want %d" % (i, got, hits))
        tap.result(names[3], problems)

        # A plain breakpoint at the probe: only the semaphore decides.
        cps = sb["checkpoints"]
        counts = [cp["fired"].get("address") for cp in cps]
        problems = [] if counts == [0, 0, hits] else [
            "hits of a plain breakpoint at the probe per checkpoint: %s, want [0, 0, %d] "
            "(the semaphore written 1 after checkpoint 1)" % (counts, hits)]
        if sb["fired"]:
            problems.append("probe breakpoints fired in the semaphore session")
        tap.result(names[4], problems)
    return 1 if tap.failed else 0


if __name__ == "__main__":
    sys.exit(main())
