#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Checks what the shared library exports against the version script and
the public header (readelf only, so it works on a cross-built library too).

  - the soname is libqed_l2_cache.so.SOVERSION;
  - the defined dynamic symbols are exactly the functions the header
    declares (no Rust or crate symbol leaks);
  - each one carries the version node of the version script that lists it
    (name@@QED_L2_CACHE_x.y), and every node of the script is defined;
  - a name in the script but not in the header (a function merged later,
    e.g. the advisor's) is reported, not an error, as long as the library
    does not define it either.

Usage: check_symbols.py LIBRARY --map abi/libqed_l2_cache.map
                        --header include/qed_l2_cache.h --soname SONAME
"""
import argparse
import re
import shutil
import subprocess
import sys


def parse_map(text: str):
    """{symbol: node} and the node names in order, from a GNU version script."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    nodes, symbols = [], {}
    for m in re.finditer(r"([A-Za-z0-9_.]+)\s*\{(.*?)\}\s*([A-Za-z0-9_.]*)\s*;", text, re.S):
        node, body = m.group(1), m.group(2)
        nodes.append(node)
        section = "global"
        for item in re.split(r"[;\s]+", body):
            if not item:
                continue
            if item.endswith(":"):
                section = item[:-1]
                continue
            if section == "global":
                symbols[item] = node
    return nodes, symbols


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("library")
    p.add_argument("--map", required=True)
    p.add_argument("--header", required=True)
    p.add_argument("--soname", required=True)
    a = p.parse_args()
    readelf = shutil.which("readelf")
    if readelf is None:
        print("FAIL: readelf (binutils) not found")
        return 1
    failures = []

    def check(cond, what):
        print(("ok: " if cond else "FAIL: ") + what)
        if not cond:
            failures.append(what)

    with open(a.map) as f:
        nodes, mapped = parse_map(f.read())
    with open(a.header) as f:
        header = f.read()
    declared = set(re.findall(r"\b(qed_[a-z0-9_]+)\s*\(", header))

    dynamic = subprocess.run([readelf, "-d", "-W", a.library], check=True, text=True,
                             stdout=subprocess.PIPE).stdout
    check(re.findall(r"\(SONAME\)\s+Library soname: \[([^\]]+)\]", dynamic) == [a.soname],
          f"SONAME is {a.soname}")

    out = subprocess.run([readelf, "--dyn-syms", "-W", a.library], check=True, text=True,
                         stdout=subprocess.PIPE).stdout
    exported = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) < 8 or not f[0].rstrip(":").isdigit() or f[6] == "UND" or f[4] == "LOCAL":
            continue
        if f[6] == "ABS" and f[3] == "OBJECT":  # GNU ld's symbol for a version node
            continue
        sym, _, version = f[7].partition("@@")
        exported[sym] = version
    # The version definitions (.gnu.version_d), but the file's own (BASE).
    verdefs = subprocess.run([readelf, "-V", "-W", a.library], check=True, text=True,
                             stdout=subprocess.PIPE).stdout
    version_nodes = set(re.findall(r"Flags: (?!BASE)\S+\s+Index: \d+\s+Cnt: \d+\s+Name: (\S+)",
                                   verdefs))

    check(set(exported) == declared,
          f"exports exactly the {len(declared)} functions of the header"
          + ("" if set(exported) == declared else
             f" (exported, not declared: {sorted(set(exported) - declared)}; "
             f"declared, not exported: {sorted(declared - set(exported))})"))
    for sym in sorted(exported):
        check(exported[sym] == mapped.get(sym),
              f"{sym}@@{exported[sym] or '(no version)'}: the version script says "
              f"{mapped.get(sym, '(not listed)')}")
    check(version_nodes == set(nodes),
          f"version definitions {sorted(version_nodes)} are the script's nodes {nodes}")
    for sym in sorted(set(mapped) - declared):
        check(sym not in exported, f"{sym} ({mapped[sym]}) is listed but not yet declared "
              "in the header: not exported either (it lands with its function)")
    if failures:
        print(f"check_symbols: {len(failures)} failure(s)")
        return 1
    print(f"check_symbols: {a.library}: {len(exported)} functions in {len(nodes)} version nodes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
