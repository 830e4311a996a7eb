# SPDX-License-Identifier: LGPL-2.1-or-later
"""Runs inside gdb (gdb -batch -nx -x probes_gdb.py), for
c_tests/check_probes.py: drives c_tests/probe-target and writes what it saw
as JSON to $PROBES_GDB_OUT.

PROBES_GDB_MODE=probes (session A): breakpoints on every probe
(`-probe-stap PROVIDER:NAME`, which gdb enables through the semaphore);
records `info probes`, and each firing in order with its arguments
($_probe_arg0...) and the semaphore's value then, until the program's
checkpoint 0; then counts the finds of the rounds of hits.

PROBES_GDB_MODE=semaphore (session B): a plain breakpoint at the address of
qemu:qed_find_l2_cache_entry, so gdb leaves the semaphore alone; counts the
hits of round 1 (semaphore 0: the site must be skipped), then writes 1 into
the semaphore and counts those of round 2.

It runs $PROBES_GDB_PROGRAM (probe-target) with the argument
$PROBES_GDB_EXPECTED, its stderr sent to $PROBES_GDB_STDERR.
"""
import json
import os
import re

import gdb

PROBES = [
    "qemu:qed_alloc_l2_cache_entry", "qemu:qed_unref_l2_cache_entry",
    "qemu:qed_find_l2_cache_entry", "qed_l2_cache:miss", "qed_l2_cache:commit",
    "qed_l2_cache:duplicate", "qed_l2_cache:evict",
]
result = {"fired": [], "checkpoints": [], "exit_code": None, "errors": []}


def semaphore(probe):
    # The library's local symbol <provider>_<name>_semaphore.
    return int(gdb.parse_and_eval("*(unsigned short *) &%s_semaphore" % probe.replace(":", "_")))


class ProbeBreakpoint(gdb.Breakpoint):
    def __init__(self, probe):
        super().__init__("-probe-stap " + probe, internal=False)
        self.probe = probe

    def stop(self):
        try:
            n = int(gdb.parse_and_eval("$_probe_argc"))
            args = [int(gdb.parse_and_eval("$_probe_arg%d" % i)) for i in range(n)]
            result["fired"].append({"probe": self.probe, "args": args,
                                    "semaphore": semaphore(self.probe)})
        except gdb.error as e:
            result["errors"].append("%s: %s" % (self.probe, e))
        return False


class CountingBreakpoint(gdb.Breakpoint):
    """A plain breakpoint that counts and goes on."""
    def __init__(self, spec):
        super().__init__(spec, internal=False)
        self.count = 0

    def stop(self):
        self.count += 1
        return False


def on_exit(event):
    result["exit_code"] = getattr(event, "exit_code", None)


def run():
    mode = os.environ["PROBES_GDB_MODE"]
    gdb.execute("set pagination off")
    gdb.execute("set confirm off")
    # Expressions below are C's, whatever frame the program stops in.
    gdb.execute("set language c")
    gdb.events.exited.connect(on_exit)
    # Stop at main: the library is loaded, its probes known.
    gdb.execute("file " + os.environ["PROBES_GDB_PROGRAM"], to_string=True)
    gdb.execute("start %s 2>%s" % (os.environ["PROBES_GDB_EXPECTED"],
                                   os.environ["PROBES_GDB_STDERR"]), to_string=True)
    result["info_probes"] = gdb.execute("info probes stap", to_string=True)
    checkpoint = gdb.Breakpoint("probe_target_checkpoint")
    if mode == "probes":
        bps = [ProbeBreakpoint(p) for p in PROBES]
    else:
        line = [l for l in result["info_probes"].splitlines()
                if re.search(r"\bqemu\s+qed_find_l2_cache_entry\s", l)]
        if len(line) != 1:
            result["errors"].append("info probes: no single qemu:qed_find_l2_cache_entry")
            return
        where = re.findall(r"0x[0-9a-f]+", line[0])[0]
        find = CountingBreakpoint("*" + where)
        result["find_address"] = where
    while result["exit_code"] is None:
        before = len(result["fired"])
        gdb.execute("continue", to_string=True)
        if result["exit_code"] is not None:
            break
        # Stopped at a checkpoint: what fired since the last one.
        n = len(result["checkpoints"])
        since = {}
        for f in result["fired"][before:]:
            since[f["probe"]] = since.get(f["probe"], 0) + 1
        if mode == "semaphore":
            since["address"] = find.count
            find.count = 0
        result["checkpoints"].append({
            "fired": since,
            "semaphore": semaphore("qemu:qed_find_l2_cache_entry"),
        })
        if mode == "semaphore" and n == 1:
            # After round 1: enable the probe by hand, as a tracer would.
            gdb.execute("set var *(unsigned short *) &qemu_qed_find_l2_cache_entry_semaphore = 1")
    checkpoint.delete()


try:
    run()
except gdb.error as e:
    result["errors"].append(str(e))
with open(os.environ["PROBES_GDB_OUT"], "w") as fh:
    json.dump(result, fh)
