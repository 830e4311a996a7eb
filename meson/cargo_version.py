#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Prints the package version from Cargo.toml: the one place it lives."""
import pathlib
import re
import sys

text = (pathlib.Path(__file__).resolve().parent.parent / "Cargo.toml").read_text()
package = text.split("[package]", 1)[1].split("\n[", 1)[0]
m = re.search(r'^version\s*=\s*"([^"]+)"', package, re.M)
if not m:
    sys.exit("cargo_version.py: no version in Cargo.toml [package]")
print(m.group(1))
