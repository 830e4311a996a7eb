# SPDX-License-Identifier: LGPL-2.1-or-later
"""The daemon section of tools/qemu-bench: several QED images in one
qemu-storage-daemon, each exported over NBD on a unix socket and read by a
qemu-io client of its own (stock's qemu-io for every configuration, so the
client side is the same), all clients at once.

Images (default 64 KiB clusters, 256 KiB tables, one 4 KiB block written
per 2 GiB region, as in the rest of the benchmark) and their reads:
  loop 120   the 120 tables in order, over and over (needs all 120)
  hot set    200 tables, 90% of the reads on 40 of them
  uniform 60 uniform over 60 tables (needs 60)
  uniform 200 uniform over 200 tables (every table saves 0.5% of its reads)
Their needs add up to far more than the budget, 64 MiB (about 250 tables
as the library counts them, 256 KiB + 4 KiB each).

Configurations, interleaved, each one run of all clients per round:
  stock          one stock daemon (fifo 50 per image)
  equal split    one daemon, QED_L2_CACHE_SIZE=64 (64 MiB / 4 images / 256 KiB)
  auto           one daemon, QED_L2_CACHE_SIZE=auto QED_L2_CACHE_MEMORY=64M
  equal, 4 daemons   one daemon per image, QED_L2_CACHE_SIZE=64 each
  by hand, 4 daemons one daemon per image, sizes chosen by hand from the
                 workloads' shapes: loop 120, hot set 40, uniform 60 60,
                 uniform 200 the rest (32); 252 tables in all
The environment variable is process-wide, so a split with different sizes
needs one daemon per image; four daemons have four main loops on the two
CPUs where one daemon has one, so "by hand" is compared with the equal
split in four daemons, and auto with the equal split in one.

Measured: total reads / the time from the first client's start to the last
one's end; table reads from the daemons' qed_read_table trace (minus one
L1 read per image); per image, the library's own counters
(QED_L2_CACHE_REPORT=1 at exit, SIGTERM) and for auto what each cache
chose. Every read checks its pattern (qemu-io -P)."""
import os
import re
import signal
import statistics
import subprocess
import threading
import time

IMAGES = [  # name, tables, workload
    ('loop120', 120, 'loop'),
    ('hot200', 200, 'hot'),
    ('uni60', 60, 'uniform'),
    ('uni200', 200, 'uniform'),
]
BUDGET_MIB = 64
EQUAL = BUDGET_MIB * 4 // len(IMAGES)   # tables of 256 KiB
BY_HAND = {'loop120': 120, 'hot200': 40, 'uni60': 60, 'uni200': 32}


def _daemon(build, env, imgs, sock, trace_file):
    args = [os.path.join(build, 'storage-daemon', 'qemu-storage-daemon'),
            '-T', 'qed_read_table,file=' + trace_file]
    for i, (name, path) in enumerate(imgs):
        args += ['--blockdev', 'driver=file,node-name=f%d,filename=%s' % (i, path),
                 '--blockdev', 'driver=qed,node-name=q%d,file=f%d' % (i, i)]
    args += ['--nbd-server', 'addr.type=unix,addr.path=' + sock]
    for i, (name, path) in enumerate(imgs):
        args += ['--export', 'type=nbd,id=e%d,node-name=q%d,name=%s' % (i, i, name)]
    if os.path.exists(sock):
        os.unlink(sock)
    p = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    t0 = time.monotonic()
    while not os.path.exists(sock):
        if p.poll() is not None or time.monotonic() - t0 > 20:
            out, err = p.communicate(timeout=5) if p.poll() is not None else ('', '')
            p.kill()
            raise RuntimeError('qemu-storage-daemon did not start: %s' % (out + err)[-500:])
        time.sleep(0.02)
    return p


def _stop(p):
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    if p.returncode != 0:
        raise RuntimeError('qemu-storage-daemon exited with %d: %s' % (p.returncode, err[-500:]))
    return err


def section(args, make_image, commands, parse_report, table_reads, failed, missed):
    wd = os.path.join(args.workdir, 'daemon')
    os.makedirs(wd, exist_ok=True)
    qimg = os.path.join(args.stock, 'qemu-img')
    qio = os.path.join(args.stock, 'qemu-io')
    paths = {}
    scripts = {}
    for k, (name, tables, kind) in enumerate(IMAGES):
        paths[name] = os.path.join(wd, name + '.qed')
        if os.path.exists(paths[name]):
            os.unlink(paths[name])
        make_image(qimg, qio, paths[name], tables)
        with open(paths[name], 'rb') as f:
            while f.read(1 << 20):
                pass
        scripts[name] = commands(args.daemon_n, tables, kind == 'hot', seed=10 + k,
                                 loop=kind == 'loop')
    base = {k: v for k, v in os.environ.items() if not k.startswith('QED_L2_CACHE_')}
    lib = dict(base, LD_LIBRARY_PATH=args.libdir, QED_L2_CACHE_REPORT='1')
    names = [n for n, _, _ in IMAGES]
    configs = [  # label, build, [(env, [image names])]
        ('stock', args.stock, [(base, names)]),
        ('equal split %d, 1 daemon' % EQUAL, args.ours,
         [(dict(lib, QED_L2_CACHE_SIZE=str(EQUAL)), names)]),
        ('auto, %d MiB budget, 1 daemon' % BUDGET_MIB, args.ours,
         [(dict(lib, QED_L2_CACHE_SIZE='auto', QED_L2_CACHE_MEMORY='%dM' % BUDGET_MIB), names)]),
        ('equal split %d, 4 daemons' % EQUAL, args.ours,
         [(dict(lib, QED_L2_CACHE_SIZE=str(EQUAL)), [n]) for n in names]),
        ('by hand %s, 4 daemons' % '/'.join(str(BY_HAND[n]) for n in names), args.ours,
         [(dict(lib, QED_L2_CACHE_SIZE=str(BY_HAND[n])), [n]) for n in names]),
    ]

    def one(label, build, groups):
        daemons = []
        try:
            for g, (env, imgs) in enumerate(groups):
                sock = os.path.join(wd, 'd%d.sock' % g)
                tr = os.path.join(wd, 'd%d.trace' % g)
                if os.path.exists(tr):
                    os.unlink(tr)
                daemons.append((_daemon(build, env, [(n, paths[n]) for n in imgs], sock, tr),
                                sock, tr, imgs))
            results = {}

            def client(name, sock):
                t0 = time.perf_counter()
                p = subprocess.run([qio, '-r', '-f', 'raw',
                                    'nbd+unix:///%s?socket=%s' % (name, sock)],
                                   input=scripts[name], capture_output=True, text=True, env=base)
                results[name] = (t0, time.perf_counter(), p)
            threads = [threading.Thread(target=client, args=(n, sock))
                       for _, sock, _, imgs in daemons for n in imgs]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        finally:
            errs = []
            for p, _, tr, imgs in daemons:
                errs.append((_stop(p), tr, imgs))
        for name, (_, _, p) in results.items():
            if p.returncode or p.stdout.replace('qemu-io>', '').strip() or \
                    re.search(r'fail|error', p.stderr, re.I):
                raise RuntimeError('%s: client %s failed (rc %d): %s' % (
                    label, name, p.returncode, (p.stdout + p.stderr)[-500:]))
        start = min(r[0] for r in results.values())
        end = max(r[1] for r in results.values())
        reads = 0
        per = {}
        for err, tr, imgs in errs:
            with open(tr) as f:
                reads += table_reads(f.read(), opens=len(imgs))
            if build == args.ours:
                caches = parse_report(err)
                if sorted(caches) != list(range(1, len(imgs) + 1)) or \
                        any('misses' not in c for c in caches.values()):
                    raise RuntimeError('%s: the daemon\'s report could not be parsed: %r'
                                       % (label, err[-500:]))
                for i, n in enumerate(imgs):
                    per[n] = caches[i + 1]
        return {'wall': end - start, 'reads': reads, 'per': per,
                'client': {n: r[1] - r[0] for n, r in results.items()}}

    total = args.daemon_n * len(IMAGES)
    print()
    print('   daemon: %d images, %d configurations x %d rounds, %d reads per client' % (
        len(IMAGES), len(configs), args.daemon_reps, args.daemon_n), flush=True)
    res = {c[0]: [] for c in configs}
    t_start = time.monotonic()
    try:
        for rnd in range(args.daemon_reps):
            for label, build, groups in configs:
                res[label].append(one(label, build, groups))
            print('   [%4.0fs] daemon: round %d done' % (time.monotonic() - t_start, rnd + 1),
                  flush=True)
    except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
        failed.append('daemon: %s' % e)
        return
    print()
    print('QEMU %s, qemu-storage-daemon with %d QED images (%s), each exported over NBD '
          '(unix socket) and read by its own qemu-io client, all at once; %d reads of 4 KiB per '
          'client; median of %d rounds, configurations interleaved; page cache.' % (
              args.qemu_version, len(IMAGES),
              ', '.join('%s: %d tables, %s' % i for i in IMAGES), args.daemon_n,
              args.daemon_reps))
    print()
    print('| configuration | total requests/s | vs stock | vs equal split (same daemons) '
          '| table reads per request | %s |' % ' | '.join(
              'µs/request, tables read: %s' % n for n in names))
    print('|---|---:|---:|---:|---:|' + '---:|' * len(names))
    med = {}
    for label, _, _ in configs:
        runs = res[label]
        wall = statistics.median(r['wall'] for r in runs)
        med[label] = {'wall': wall, 'reads': statistics.median(r['reads'] for r in runs)}
    st = med['stock']['wall']
    eq1 = med[configs[1][0]]['wall']
    eq4 = med[configs[3][0]]['wall']
    for i, (label, _, _) in enumerate(configs):
        runs = res[label]
        m = med[label]
        vs_eq = '' if i < 2 or i == 3 else '%.2fx' % ((eq1 if i == 2 else eq4) / m['wall'])
        cells = []
        for n in names:
            us = statistics.median(r['client'][n] for r in runs) / args.daemon_n * 1e6
            if runs[0]['per']:
                tr = statistics.median(r['per'][n]['misses'] for r in runs)
                cells.append('%.0f, %.0f' % (us, tr))
            else:
                cells.append('%.0f' % us)
        print('| %s | %.0f | %.2fx | %s | %.3f | %s |' % (
            label, total / m['wall'], st / m['wall'], vs_eq, m['reads'] / total,
            ' | '.join(cells)))
    print()
    auto = configs[2][0]
    for r in res[auto]:
        print('auto: ' + '; '.join('%s chose %s, held %s, peak %s KiB' % (
            n, r['per'][n].get('chose', '?'), r['per'][n].get('held', '?'),
            r['per'][n].get('peak_kib', '?')) for n in names) + '; budget %s' % (
            r['per'][names[0]].get('budget', '?')))
    for r in res[auto]:
        if any('chose' not in r['per'][n] for n in names):
            failed.append('daemon: an auto cache printed no auto report line')
            break
    a, e = med[auto]['wall'], eq1
    ok = e / a >= 1.0
    print('daemon: auto vs the equal split in one daemon: %.2fx total read rate, %.0f vs %.0f '
          'table reads (target: faster than the equal split: %s)' % (
              e / a, med[auto]['reads'], med[configs[1][0]]['reads'], 'met' if ok else 'MISSED'))
    if not ok:
        missed.append('daemon: auto %.2fx of the equal split' % (e / a))
