#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Builds the Rust code with cargo for meson (librsvg's approach).

Two uses, one meson custom target each:

  the library   `cargo rustc --lib --crate-type staticlib`: cargo builds only
                the staticlib; meson links it into the shared library itself
                (meson.build: link_whole, the version script, version and
                soversion), so no soname or ELF handling lives here.
  --bin NAME    `cargo build --bin NAME`: a program of the package
                (qed-l2-cache-stat), copied out for meson to install.

Cargo decides what is stale; meson runs this on every build. The target
directory lives inside the meson build directory by default so several
build directories (release, debug, sanitizers, cross) never share cargo's
lock. Building a program makes cargo build the package's library too (with
every crate type of Cargo.toml), which rewrites the libqed_l2_cache.a the
library's run copies: meson.build orders the program's target after the
library's (`depends:`), so the two never overlap. A cross build passes
--linker (its C compiler) to both runs: a program needs one for the
target, and the same environment keeps the shared library unit fresh.

Output: --output, a copy of cargo's libqed_l2_cache.a, or of the program
(a copy, not a link: cargo rewrites its artifacts in place, and meson's
outputs must be files of the build directory).
"""
import argparse
import os
import shutil
import subprocess
import sys


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--cargo", required=True)
    p.add_argument("--manifest-path", required=True)
    p.add_argument("--target-dir", required=True)
    p.add_argument("--release", action="store_true")
    p.add_argument("--target", default="",
                   help="Rust target triple of a cross build (empty: the host)")
    p.add_argument("--debuginfo", choices=["full", "profile"], default="full",
                   help="full: DWARF with types (what abidw needs), whatever the profile says; "
                   "profile: what the profile says (release: line tables only)")
    p.add_argument("--linker", default="",
                   help="the linker of --target's programs (a cross build's C compiler)")
    p.add_argument("--bin", default="",
                   help="build this program of the package instead of the staticlib")
    p.add_argument("--output", required=True,
                   help="where to copy libqed_l2_cache.a (or the program)")
    args = p.parse_args()

    profile = "release" if args.release else "dev"
    if args.bin:
        cmd = [args.cargo, "build", "--locked", "--bin", args.bin]
    else:
        cmd = [args.cargo, "rustc", "--locked", "--lib", "--crate-type", "staticlib"]
    cmd += ["--manifest-path", args.manifest_path,
            "--target-dir", args.target_dir,
            "--profile", profile]
    # tools/test-all's ThreadSanitizer build sets CARGO_BUILD_TARGET
    # (nightly, -Zbuild-std); cargo then puts its artifacts under the triple.
    target = args.target or os.environ.get("CARGO_BUILD_TARGET", "")
    if args.target:
        cmd += ["--target", args.target]
    env = dict(os.environ)
    if args.linker and args.target:
        env[f"CARGO_TARGET_{args.target.upper().replace('-', '_')}_LINKER"] = args.linker
    if args.debuginfo == "full":
        env[f"CARGO_PROFILE_{profile.upper()}_DEBUG"] = "2"
    res = subprocess.run(cmd, env=env)
    if res.returncode != 0:
        return res.returncode

    src = os.path.join(args.target_dir, target, "release" if args.release else "debug",
                       args.bin or "libqed_l2_cache.a")
    tmp = args.output + ".tmp"
    shutil.copy2(src, tmp)
    os.replace(tmp, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
