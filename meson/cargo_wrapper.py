#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Builds the Rust library with cargo for meson and copies the artifacts
where meson expects its outputs.

Cargo decides what is stale; meson runs this on every build. The target
directory lives inside the meson build directory so several build
directories (release, debug, sanitizers) never share cargo's lock.
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
    p.add_argument("--outdir", required=True)
    p.add_argument("--soname", required=True, help="e.g. libqed_l2_cache.so.0")
    p.add_argument("--rustflags", default="")
    args = p.parse_args()

    cmd = [args.cargo, "build", "--locked", "--lib",
           "--manifest-path", args.manifest_path,
           "--target-dir", args.target_dir]
    if args.release:
        cmd.append("--release")
    env = dict(os.environ)
    if args.rustflags:
        env["RUSTFLAGS"] = (env.get("RUSTFLAGS", "") + " " + args.rustflags).strip()
    res = subprocess.run(cmd, env=env)
    if res.returncode != 0:
        return res.returncode

    profile_dir = os.path.join(args.target_dir, "release" if args.release else "debug")
    os.makedirs(args.outdir, exist_ok=True)
    for name in ("libqed_l2_cache.so", "libqed_l2_cache.a"):
        src = os.path.join(profile_dir, name)
        dst = os.path.join(args.outdir, name)
        # Copy, not link: meson's outputs must be real files it can stat.
        shutil.copy2(src, dst + ".tmp")
        os.replace(dst + ".tmp", dst)
    # The dynamic loader looks the library up by its soname.
    soname = os.path.join(args.outdir, args.soname)
    if os.path.lexists(soname):
        os.remove(soname)
    os.symlink("libqed_l2_cache.so", soname)
    return 0


if __name__ == "__main__":
    sys.exit(main())
