#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Prints, one a line, the system libraries a Rust staticlib needs
(`rustc --print native-static-libs`, for the given target): what the shared
library links besides the staticlib, and what the .pc file's Libs.private
lists. Asks rustc about an empty staticlib crate: the crate's dependencies
(libc, once_cell, crossbeam-utils) add no native library of their own.

Usage: native_static_libs.py RUSTC [TARGET]
"""
import os
import re
import subprocess
import sys
import tempfile


def main() -> int:
    rustc = sys.argv[1]
    target = sys.argv[2] if len(sys.argv) > 2 else ""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "empty.rs")
        with open(src, "w") as f:
            f.write("")
        cmd = [rustc, "--crate-type", "staticlib", "--crate-name", "empty", "--edition", "2021",
               "--print", "native-static-libs", "-o", os.path.join(tmp, "libempty.a"), src]
        if target:
            cmd += ["--target", target]
        res = subprocess.run(cmd, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    m = re.search(r"native-static-libs: (.*)$", res.stdout, re.M)
    if res.returncode != 0 or not m:
        print(f"native_static_libs.py: {' '.join(cmd)} failed:\n{res.stdout}", file=sys.stderr)
        return 1
    print("\n".join(m.group(1).split()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
