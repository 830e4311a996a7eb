#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Checks the system files shipped for where QEMU runs (docs/libvirt.md),
with the tools that read them.

  tmpfiles --conf FILE
      FILE (data/tmpfiles.d/qed-l2-cache.conf, or the installed copy) parses
      (systemd-tmpfiles fails on a bad line), and it does what it is for: in
      a scratch root whose /tmp is aged by a `q /tmp ... 1s` line, an old
      statistics file /tmp/qed-l2-cache-UID/PID is removed without FILE (so
      the ageing really reaches it) and kept with FILE, while an old
      unrelated file beside it is removed either way.
  apparmor --include-dir DIR
      DIR/abstractions/libvirt-qemu.d/qed-l2-cache (DIR: data/apparmor.d, or
      /etc/apparmor.d once installed) holds owner-only rules for the four
      statistics paths, and a profile that includes it the way libvirt's
      abstraction does (`include if exists <abstractions/libvirt-qemu.d>`)
      compiles with apparmor_parser -Q -K (no kernel needed), with every rule
      of the file in the preprocessed profile (an `include if exists` that
      finds nothing passes silently); a copy with one rule broken must fail
      to compile, so the parser really read it.

Exits 77 (meson: skipped) when the tool is missing, unless --require.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

SKIP = 77
SNIPPET = os.path.join("abstractions", "libvirt-qemu.d", "qed-l2-cache")
# What the library creates, reads, writes, locks and links (docs/libvirt.md):
# (path, permissions), every one owner-only.
APPARMOR_RULES = [
    ("/tmp/qed-l2-cache-[0-9]*/", "rw"),
    ("/tmp/qed-l2-cache-[0-9]*/*", "rwkl"),
    ("@{run}/user/[0-9]*/qed-l2-cache/", "rw"),
    ("@{run}/user/[0-9]*/qed-l2-cache/*", "rwkl"),
]


class Failure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise Failure(what)
    print(f"ok: {what}")


def tool(name, require):
    path = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/sbin/{name}")
                                       if os.access(p, os.X_OK)), None)
    if path is None:
        msg = f"{name} not found"
        if require:
            raise Failure(msg)
        print(f"SKIP: {msg}")
        sys.exit(SKIP)
    return path


def run(cmd):
    print("+ " + " ".join(cmd), flush=True)
    res = subprocess.run(cmd, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if res.stdout.strip():
        print(res.stdout.rstrip())
    return res


def check_tmpfiles(a):
    tmpfiles = tool("systemd-tmpfiles", a.require)
    conf = os.path.abspath(a.conf)
    with tempfile.TemporaryDirectory() as work:
        age = os.path.join(work, "age-tmp.conf")
        with open(age, "w") as f:
            f.write("q /tmp 1777 root root 1s\n")
        roots = {}
        for case in ("without", "with"):
            root = os.path.join(work, case)
            stats_dir = os.path.join(root, "tmp", "qed-l2-cache-1000")
            os.makedirs(stats_dir)
            paths = [os.path.join(stats_dir, "4242"), os.path.join(root, "tmp", "unrelated")]
            for p in paths:
                with open(p, "w") as f:
                    f.write("x")
            old = time.time() - 3 * 86400
            for p in paths + [stats_dir]:
                os.utime(p, (old, old))
            roots[case] = root
        # The change times cannot be set back: wait until they are past 1s.
        time.sleep(2.1)

        def clean(case, confs):
            res = run([tmpfiles, f"--root={roots[case]}", "--clean"] + confs)
            check(res.returncode == 0, f"systemd-tmpfiles --clean {' '.join(map(os.path.basename, confs))} "
                  "exits 0 (every line parses)")
            return (os.path.exists(os.path.join(roots[case], "tmp", "qed-l2-cache-1000", "4242")),
                    os.path.exists(os.path.join(roots[case], "tmp", "unrelated")))

        stats, unrelated = clean("without", [age])
        check(not stats and not unrelated,
              "without the file, ageing /tmp removes an old /tmp/qed-l2-cache-1000/4242")
        stats, unrelated = clean("with", [age, conf])
        check(stats, f"with {os.path.basename(conf)}, /tmp/qed-l2-cache-1000/4242 is kept")
        check(not unrelated, "and an old unrelated file in /tmp is still removed")

        bad = os.path.join(work, "bad.conf")
        with open(bad, "w") as f:
            f.write("y /tmp/qed-l2-cache-*\n")
        res = run([tmpfiles, f"--root={roots['with']}", "--clean", bad])
        check(res.returncode != 0, "a line systemd-tmpfiles cannot parse makes it fail (the check can fail)")


def check_apparmor(a):
    parser = tool("apparmor_parser", a.require)
    inc = os.path.abspath(a.include_dir)
    snippet = os.path.join(inc, SNIPPET)
    check(os.path.isfile(snippet), f"{snippet} exists")
    with open(snippet) as f:
        text = f.read()
    rules = [line.strip() for line in text.splitlines()
             if line.strip() and not line.strip().startswith("#")]
    for path, perms in APPARMOR_RULES:
        check(f"owner {path} {perms}," in rules, f"rule: owner {path} {perms}")
    check(all(r.startswith("owner ") for r in rules), "every rule is owner-only")
    check(len(rules) == len(APPARMOR_RULES), f"no other rule ({len(rules)} rules)")

    with tempfile.TemporaryDirectory() as work:
        profile = os.path.join(work, "profile")
        with open(profile, "w") as f:
            # As libvirt's TEMPLATE.qemu and abstractions/libvirt-qemu do.
            f.write("include <tunables/global>\n"
                    "profile qed-l2-cache-test flags=(attach_disconnected) {\n"
                    "  include if exists <abstractions/libvirt-qemu.d>\n"
                    "}\n")
        res = run([parser, "-Q", "-K", "-I", inc, profile])
        check(res.returncode == 0, "apparmor_parser -Q -K compiles a profile that includes "
              "<abstractions/libvirt-qemu.d>")
        res = subprocess.run([parser, "-p", "-I", inc, profile], text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        expanded = [line.strip() for line in res.stdout.splitlines()]
        check(res.returncode == 0 and all(r in expanded for r in rules),
              "apparmor_parser -p: the profile holds every rule of the file (the directory "
              "include found it)")

        broken = os.path.join(work, "broken")
        # Only the file: the tunables come from apparmor_parser's own base
        # directory, searched after -I.
        os.makedirs(os.path.dirname(os.path.join(broken, SNIPPET)))
        with open(os.path.join(broken, SNIPPET), "w") as f:
            f.write(re.sub(r"rwkl,\s*$", "rwkl", text))
        res = run([parser, "-Q", "-K", "-I", broken, profile])
        check(res.returncode != 0, "a copy with a rule's comma missing fails to compile "
              "(the parser read the file)")


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    t = sub.add_parser("tmpfiles")
    t.add_argument("--conf", required=True)
    ap = sub.add_parser("apparmor")
    ap.add_argument("--include-dir", required=True)
    for s in (t, ap):
        s.add_argument("--require", action="store_true",
                       help="fail, not skip, when the tool is missing")
    a = p.parse_args()
    try:
        (check_tmpfiles if a.what == "tmpfiles" else check_apparmor)(a)
    except Failure as e:
        print(f"FAIL: {e}")
        return 1
    print(f"{a.what}: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
