#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Proves that qed-l2-cache can be consumed like a C library, both ways.

  install      `meson install --destdir` of the build under test into a
               scratch directory; checks the installed files (real file,
               soname and link-name symlinks, DT_SONAME, header, .pc, the
               qed-l2-cache-stat program and its man page, the tmpfiles.d
               and AppArmor files); then
               builds tests/consumer against it through pkg-config (shared,
               and static against the .a with Libs.private) and runs it.
  subproject   a scratch project holding tests/consumer with
               subprojects/qed-l2-cache -> this source tree; configures it
               (the parent gets the library with dependency('qed-l2-cache')),
               checks the subproject defines only the library target (no
               tests, no examples), builds and runs the consumer.

Neither mode rebuilds the Rust library: `install` installs what the outer
build made, and `subproject` points the subproject's cargo at the outer
build's cargo target directory (cargo finds it fresh), unless --fresh-cargo.
Scratch files live in BUILD_ROOT/packaging-tests/MODE, kept after a failure.

Usage (meson runs it, see tests/packaging/meson.build):
  check_packaging.py MODE --source-root S --build-root B --version V
      --soname libqed_l2_cache.so.0 --real-name libqed_l2_cache.so.V
      [--install-static] [--libs-private LIBS] [--cargo-target-dir D] [--optimization O]
      [--meson PATH] [--fresh-cargo]
"""
import argparse
import filecmp
import json
import os
import re
import shutil
import subprocess
import sys
import time


class Failure(Exception):
    pass


def check(cond: bool, what: str) -> None:
    if not cond:
        raise Failure(what)
    print(f"ok: {what}")


def run(cmd, env=None, cwd=None) -> subprocess.CompletedProcess:
    print("+ " + " ".join(str(c) for c in cmd), flush=True)
    res = subprocess.run([str(c) for c in cmd], env=env, cwd=cwd, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if res.stdout:
        print(res.stdout.rstrip())
    if res.returncode != 0:
        raise Failure(f"command failed with status {res.returncode}: {cmd[0]} …")
    return res


def readelf_dynamic(path: str) -> str:
    readelf = shutil.which("readelf")
    if readelf is None:
        raise Failure("readelf (binutils) not found")
    return subprocess.run([readelf, "-d", path], check=True, text=True,
                          stdout=subprocess.PIPE).stdout


def dt_values(dynamic: str, tag: str):
    """The bracketed values of one tag in `readelf -d` output."""
    return re.findall(r"\(" + tag + r"\)\s+[^\[]*\[([^\]]+)\]", dynamic)


def loaded_path(exe: str, soname: str, env: dict) -> str:
    """Where the dynamic loader finds `soname` for `exe` (ldd's mechanism)."""
    env = dict(env, LD_TRACE_LOADED_OBJECTS="1")
    out = subprocess.run([exe], env=env, text=True, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT).stdout
    m = re.search(r"^\s*" + re.escape(soname) + r" => (\S+)", out, re.M)
    if not m:
        raise Failure(f"{exe}: the loader does not resolve {soname}:\n{out}")
    return m.group(1)


def run_consumer(exe: str, version: str, env: dict) -> None:
    res = subprocess.run([exe], env=env, text=True, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    print(res.stdout.rstrip())
    if res.stderr:
        print(res.stderr.rstrip())
    check(res.returncode == 0, f"{os.path.basename(exe)} exits 0")
    check(res.stdout.strip() == f"consumer: ok, qed-l2-cache {version}",
          f"{os.path.basename(exe)} reports version {version}")


def introspect(meson, builddir: str, what: str):
    res = subprocess.run(meson + ["introspect", builddir, what], check=True, text=True,
                         stdout=subprocess.PIPE)
    return json.loads(res.stdout)


def under(path: str, root: str) -> bool:
    path, root = os.path.realpath(path), os.path.realpath(root)
    return os.path.commonpath([path, root]) == root


def mode_install(a, meson, work: str) -> None:
    destdir = os.path.join(work, "destdir")
    run(meson + ["install", "-C", a.build_root, "--no-rebuild", "--destdir", destdir])
    opts = {o["name"]: o["value"] for o in introspect(meson, a.build_root, "--buildoptions")}
    prefix = opts["prefix"]

    def installed(option: str) -> str:
        d = os.path.join(prefix, opts[option])
        return os.path.join(destdir, d.lstrip("/"))

    libdir, includedir = installed("libdir"), installed("includedir")
    real = os.path.join(libdir, a.real_name)
    soname_link = os.path.join(libdir, a.soname)
    link_name = os.path.join(libdir, "libqed_l2_cache.so")

    check(os.path.isfile(real) and not os.path.islink(real), f"{a.real_name} is a regular file")
    check(os.path.islink(soname_link) and os.readlink(soname_link) == a.real_name,
          f"{a.soname} -> {a.real_name}")
    check(os.path.islink(link_name) and os.readlink(link_name) == a.soname,
          f"libqed_l2_cache.so -> {a.soname}")
    dynamic = readelf_dynamic(real)
    check(dt_values(dynamic, "SONAME") == [a.soname], f"readelf -d: SONAME [{a.soname}]")
    static = os.path.join(libdir, "libqed_l2_cache.a")
    check(os.path.isfile(static) == a.install_static,
          f"libqed_l2_cache.a {'installed' if a.install_static else 'not installed'}")
    header = os.path.join(includedir, "qed_l2_cache.h")
    check(os.path.isfile(header) and filecmp.cmp(
        header, os.path.join(a.source_root, "include", "qed_l2_cache.h"), shallow=False),
        "include/qed_l2_cache.h installed under includedir")
    # The reader program and its man page (docs/stat-tool.md).
    stat = os.path.join(installed("bindir"), "qed-l2-cache-stat")
    check(os.path.isfile(stat) and os.access(stat, os.X_OK),
          "qed-l2-cache-stat installed under bindir, executable")
    version_line = run([stat, "--version"]).stdout.strip()
    check(version_line.startswith(f"qed-l2-cache-stat {a.version} "),
          f"the installed qed-l2-cache-stat --version says {a.version}")
    check(os.path.isfile(os.path.join(installed("mandir"), "man1", "qed-l2-cache-stat.1")),
          "qed-l2-cache-stat.1 installed under mandir/man1")
    # The system files for where QEMU runs (docs/libvirt.md).
    for rel, where in ((os.path.join("data", "tmpfiles.d", "qed-l2-cache.conf"),
                        os.path.join(destdir, prefix.lstrip("/"), "lib", "tmpfiles.d")),
                       (os.path.join("data", "apparmor.d", "abstractions", "libvirt-qemu.d",
                                     "qed-l2-cache"),
                        os.path.join(installed("sysconfdir"), "apparmor.d", "abstractions",
                                     "libvirt-qemu.d"))):
        got = os.path.join(where, os.path.basename(rel))
        check(os.path.isfile(got) and filecmp.cmp(got, os.path.join(a.source_root, rel), shallow=False),
              f"{rel} installed as {os.path.relpath(got, destdir)}")
    pcdir = os.path.join(libdir, "pkgconfig")
    with open(os.path.join(pcdir, "qed-l2-cache.pc")) as f:
        pc = f.read()
    print(pc.rstrip())
    check(re.search(r"^Version: " + re.escape(a.version) + "$", pc, re.M) is not None,
          f"qed-l2-cache.pc has Version: {a.version}")
    m = re.search(r"^Libs\.private: (.*)$", pc, re.M)
    check(m is not None and m.group(1).split() == a.libs_private.split(),
          f"qed-l2-cache.pc has Libs.private: {a.libs_private} (rustc --print native-static-libs)")

    # pkg-config sees the staged tree through its sysroot: -L and -I point
    # into destdir although the .pc file says prefix=PREFIX.
    env = dict(os.environ, PKG_CONFIG_PATH=pcdir, PKG_CONFIG_SYSROOT_DIR=destdir)
    pkg_config = shutil.which("pkg-config") or shutil.which("pkgconf")
    if pkg_config is None:
        raise Failure("pkg-config not found")
    modversion = run([pkg_config, "--modversion", "qed-l2-cache"], env=env).stdout.strip()
    check(modversion == a.version, f"pkg-config --modversion qed-l2-cache = {a.version}")
    libs = run([pkg_config, "--libs", "qed-l2-cache"], env=env).stdout.split()
    check("-lqed_l2_cache" in libs and f"-L{libdir}" in libs, "pkg-config --libs names the staged libdir")

    build = os.path.join(work, "consumer-build")
    run(meson + ["setup", build, os.path.join(a.source_root, "tests", "consumer"),
                 "--wrap-mode=nofallback", f"-Dexpected_version={a.version}",
                 f"-Dstatic={'true' if a.install_static else 'false'}"], env=env)
    run(meson + ["compile", "-C", build], env=env)

    # Nothing of the build tree on the loader's path: only the staged libdir.
    run_env = dict(os.environ, LD_LIBRARY_PATH=libdir)
    exe = os.path.join(build, "consumer")
    check(dt_values(readelf_dynamic(exe), "NEEDED").count(a.soname) == 1,
          f"consumer: NEEDED [{a.soname}]")
    check(under(loaded_path(exe, a.soname, run_env), libdir),
          "consumer loads the installed library")
    run_consumer(exe, a.version, run_env)
    if a.install_static:
        exe = os.path.join(build, "consumer-static")
        check(not any(n.startswith("libqed_l2_cache") for n in dt_values(readelf_dynamic(exe), "NEEDED")),
              "consumer-static: no NEEDED libqed_l2_cache (linked from the .a)")
        run_consumer(exe, a.version, run_env)


def mode_subproject(a, meson, work: str) -> None:
    project = os.path.join(work, "project")
    shutil.copytree(os.path.join(a.source_root, "tests", "consumer"), project)
    os.makedirs(os.path.join(project, "subprojects"))
    # A symlink, so none of the source tree's build or target dirs is copied.
    os.symlink(os.path.realpath(a.source_root),
               os.path.join(project, "subprojects", "qed-l2-cache"))

    env = dict(os.environ)
    env.pop("PKG_CONFIG_PATH", None)
    build = os.path.join(work, "build")
    setup = meson + ["setup", build, project, "--force-fallback-for=qed-l2-cache",
                     f"-Dexpected_version={a.version}", "-Dstatic=false"]
    if not a.fresh_cargo:
        setup += [f"-Dqed-l2-cache:cargo_target_dir={a.cargo_target_dir}",
                  f"-Doptimization={a.optimization}"]
    run(setup, env=env)

    check(introspect(meson, build, "--tests") == [], "the subproject registers no tests")
    sub_targets = [t for t in introspect(meson, build, "--targets")
                   if t.get("subproject") == "qed-l2-cache"]
    check(sorted(t["name"] for t in sub_targets) == ["qed_l2_cache", "qed_l2_cache_rust"],
          "the subproject defines only the library targets (cargo's staticlib, the shared "
          "library; no tests, examples)")

    run(meson + ["compile", "-C", build], env=env)
    exe = os.path.join(build, "consumer")
    check(dt_values(readelf_dynamic(exe), "NEEDED").count(a.soname) == 1,
          f"consumer: NEEDED [{a.soname}]")
    env.pop("LD_LIBRARY_PATH", None)
    check(under(loaded_path(exe, a.soname, env), os.path.join(build, "subprojects", "qed-l2-cache")),
          "consumer loads the subproject's library (rpath)")
    run_consumer(exe, a.version, env)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["install", "subproject"])
    p.add_argument("--source-root", required=True)
    p.add_argument("--build-root", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--soname", required=True)
    p.add_argument("--real-name", required=True)
    p.add_argument("--install-static", action="store_true")
    p.add_argument("--libs-private", default="",
                   help="what Libs.private must list, space-separated")
    p.add_argument("--cargo-target-dir", default="")
    p.add_argument("--optimization", default="2")
    p.add_argument("--meson", default="meson",
                   help="the meson to run (a meson.py runs with this script's python)")
    p.add_argument("--fresh-cargo", action="store_true",
                   help="let the subproject build the Rust library in its own target dir")
    a = p.parse_args()
    meson = [sys.executable, a.meson] if a.meson.endswith(".py") else [a.meson]
    if a.mode == "subproject" and not a.fresh_cargo and not a.cargo_target_dir:
        p.error("subproject needs --cargo-target-dir or --fresh-cargo")

    work = os.path.join(a.build_root, "packaging-tests", a.mode)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    start = time.monotonic()
    try:
        (mode_install if a.mode == "install" else mode_subproject)(a, meson, work)
    except Failure as e:
        print(f"FAIL: {e} (scratch files kept in {work})")
        return 1
    print(f"packaging {a.mode}: all checks passed in {time.monotonic() - start:.1f} s")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
