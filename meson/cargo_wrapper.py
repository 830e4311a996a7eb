#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Builds the Rust library with cargo for meson and puts the artifacts
where meson expects its outputs.

Cargo decides what is stale; meson runs this on every build. The target
directory lives inside the meson build directory by default so several
build directories (release, debug, sanitizers) never share cargo's lock.

Outputs in --outdir, laid out like any versioned C library:
  libqed_l2_cache.so.0.1.0   the shared library (--real-name), a copy
  libqed_l2_cache.so.0       symlink to it (--soname)
  libqed_l2_cache.so         symlink to the soname (the link name)
  libqed_l2_cache.a          the static library, a copy
The soname recorded in the library (build.rs passes it to the linker) is
checked against --soname.
"""
import argparse
import os
import shutil
import struct
import subprocess
import sys

DT_SONAME = 14
SHT_DYNAMIC = 6


def elf_soname(path: str):
    """The DT_SONAME of an ELF shared library, or None when it has none."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF":
        raise ValueError(f"{path}: not an ELF file")
    is64 = data[4] == 2
    end = "<" if data[5] == 1 else ">"
    if is64:
        shoff, = struct.unpack_from(end + "Q", data, 0x28)
        shentsize, shnum = struct.unpack_from(end + "HH", data, 0x3A)
        sh_fmt, dyn_fmt = end + "IIQQQQIIQQ", end + "qQ"
    else:
        shoff, = struct.unpack_from(end + "I", data, 0x20)
        shentsize, shnum = struct.unpack_from(end + "HH", data, 0x2E)
        sh_fmt, dyn_fmt = end + "IIIIIIIIII", end + "iI"
    sections = [struct.unpack_from(sh_fmt, data, shoff + i * shentsize) for i in range(shnum)]
    for sh in sections:
        # sh: name, type, flags, addr, offset, size, link, info, align, entsize
        if sh[1] != SHT_DYNAMIC:
            continue
        strtab = sections[sh[6]]
        dyn_size = struct.calcsize(dyn_fmt)
        for off in range(sh[4], sh[4] + sh[5], dyn_size):
            tag, val = struct.unpack_from(dyn_fmt, data, off)
            if tag == 0:
                break
            if tag == DT_SONAME:
                start = strtab[4] + val
                return data[start:data.index(b"\0", start)].decode()
    return None


def replace_with_symlink(target: str, link: str) -> None:
    tmp = link + ".tmp"
    if os.path.lexists(tmp):
        os.remove(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--cargo", required=True)
    p.add_argument("--manifest-path", required=True)
    p.add_argument("--target-dir", required=True)
    p.add_argument("--release", action="store_true")
    p.add_argument("--outdir", required=True)
    p.add_argument("--soname", required=True, help="e.g. libqed_l2_cache.so.0")
    p.add_argument("--real-name", required=True, help="e.g. libqed_l2_cache.so.0.1.0")
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

    # With CARGO_BUILD_TARGET set (tools/test-all's ThreadSanitizer build:
    # nightly, -Zbuild-std) cargo puts its artifacts under the triple.
    profile_dir = os.path.join(args.target_dir, os.environ.get("CARGO_BUILD_TARGET", ""),
                               "release" if args.release else "debug")
    os.makedirs(args.outdir, exist_ok=True)
    # Copy, not link: cargo rewrites its artifacts in place, and meson's
    # outputs must be files of this build directory.
    for name, dst_name in (("libqed_l2_cache.so", args.real_name),
                           ("libqed_l2_cache.a", "libqed_l2_cache.a")):
        src = os.path.join(profile_dir, name)
        dst = os.path.join(args.outdir, dst_name)
        shutil.copy2(src, dst + ".tmp")
        os.replace(dst + ".tmp", dst)

    real = os.path.join(args.outdir, args.real_name)
    soname = elf_soname(real)
    if soname != args.soname:
        print(f"cargo_wrapper.py: {real} has soname {soname!r}, meson expects {args.soname!r}: "
              "keep SONAME_MAJOR in build.rs and soversion in meson.build equal", file=sys.stderr)
        return 1
    # The dynamic loader looks the library up by its soname, the linker by
    # the link name.
    replace_with_symlink(args.real_name, os.path.join(args.outdir, args.soname))
    replace_with_symlink(args.soname, os.path.join(args.outdir, "libqed_l2_cache.so"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
