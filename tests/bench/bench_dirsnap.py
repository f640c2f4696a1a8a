#!/usr/bin/env python3
"""Directory snapshot benchmark (issue 5): snapshot-dir and mount time, managed against CSEK, on a real cluster.

Why a script and not a test: times depend on the machine and on what else runs on it; numbers are recorded in
docs/BENCHMARKS.md (section "Directory snapshots and CSEK") with the machine, the command and the date, and are
never asserted.

What it does (a 3-worker cluster from deploy/local-cluster.sh up --workers 3 --default-image busybox, 2 replicas,
in a fresh directory on a free base port):
  For each size (default 100M and 1G):
  1. A sandbox on w1 mounts an empty directory (`cairn sandbox mount`) and writes SIZE of random data into it
     from inside the sandbox, as many files of --file-size (default 256 kB) in directories of 100 files.
  2. `cairn sandbox snapshot-dir` of that directory twice: managed (no key) and CSEK (--key-file, a 32-byte
     key); the order alternates between repetitions. Each capture reads the same data and stores all of it
     (the two images are in different encryption domains, so nothing deduplicates between them), replicates
     it to a second worker and reports the chunk references. Sizes up to 200 MB are repeated --reps times,
     larger ones --reps-large times (default 1; fresh data each time; the median is reported). `sync` runs
     before every timed step.
  3. Every pair of images (managed, CSEK) of the size mounted in a sandbox on w2, which holds about 2/3 of
     their chunks (2 replicas over 3 workers): the wall time of `cairn sandbox mount` (the layer materialised
     from the chunks, fetching the missing ones from peers, then the overlay mount) and the worker's own time
     from its log; each mount is unmounted after it was timed.
  4. The same on a worker that holds none of the chunks: a new worker (w4 for the first size, w5 for the
     next, ...) joins with `local-cluster.sh up --workers N` after the snapshots were taken (so no replica went
     to it), a sandbox is created on it (the busybox root is fetched then, not timed), and every pair is
     mounted there: every chunk crosses the network.
  The wall times are those of the CLI (submit, job dispatch, the worker's work, reply); CSEK / managed ratios
  are the median of the per-pair ratios of wall times (target: CSEK costs at most 10 % more, ratio <= 1.10).

Usage: python3 tests/bench/bench_dirsnap.py [--build DIR] [--sizes 100M,1G] [--file-size 256K] [--reps 3]
       [--reps-large 1] [--work DIR] [--out docs/BENCHMARKS.md] [--no-write]
"""
import argparse
import datetime
import json
import os
import platform
import random
import re
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOCAL_CLUSTER = os.path.join(ROOT, "deploy", "local-cluster.sh")


def log(s):
    print(s, flush=True)


def size_arg(s):
    m = re.fullmatch(r"(\d+)([KMG]?)", s.strip().upper())
    if not m:
        raise argparse.ArgumentTypeError(f"bad size '{s}'")
    return int(m.group(1)) * {"": 1, "K": 10**3, "M": 10**6, "G": 10**9}[m.group(2)]


def human(n):
    for unit, v in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= v:
            return f"{n / v:g} {unit}"
    return f"{n} B"


def find_bin(build, name):
    for dirpath, _, files in os.walk(build):
        if name in files and os.access(os.path.join(dirpath, name), os.X_OK):
            return os.path.join(dirpath, name)
    sys.exit(f"{name} not found under {build}: build first (cmake --build {build})")


def free_base_port():
    for _ in range(200):
        base = random.randrange(20000, 60000, 100)
        ok = True
        for p in range(base, base + 100):
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", p))
            except OSError:
                ok = False
            finally:
                s.close()
            if not ok:
                break
        if ok:
            return base
    sys.exit("no free port range")


class Cluster:
    def __init__(self, build, work):
        self.dir = os.path.join(work, "cluster")
        self.port = free_base_port()
        # a 1 GB snapshot or mount takes longer than the CLI's default 10 s per-call deadline
        self.env = dict(os.environ, CAIRN_BUILD=build, CAIRN_TIMEOUT_MS="900000")
        self.cairn = find_bin(build, "cairn")
        self.workers = 0

    def up(self, workers, *extra):
        r = subprocess.run([LOCAL_CLUSTER, "up", "--dir", self.dir, "--base-port", str(self.port), "--workers",
                            str(workers), *extra], env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
        if r.returncode != 0:
            raise RuntimeError(f"local-cluster.sh up failed:\n{r.stderr}")
        for line in r.stdout.splitlines():
            m = re.match(r"^export (CAIRN_[A-Z_]+)=(.*)$", line)
            if m:
                self.env[m.group(1)] = shlex.split(m.group(2))[0] if m.group(2) else ""
        self.workers = workers

    def down(self):
        if os.path.exists(os.path.join(self.dir, "cluster.state")):
            subprocess.run([LOCAL_CLUSTER, "down", "--dir", self.dir], env=self.env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)

    def cli(self, *args):
        r = subprocess.run([self.cairn, "--json", *args], env=self.env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise RuntimeError(f"cairn {' '.join(args)} failed ({r.returncode}): {r.stderr[-2000:]} {r.stdout[-500:]}")
        return json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else {}

    def timed(self, *args):
        # the previous step's writes (RocksDB blob files on two workers) are flushed first, so that their
        # writeback is not charged to this step
        os.sync()
        t0 = time.monotonic()
        r = self.cli(*args)
        return r, time.monotonic() - t0

    def worker_log(self, w, pattern, tries=30):
        """The groups of the last match of pattern in worker w's log (None when absent)."""
        pat = re.compile(pattern)
        for _ in range(tries):
            with open(os.path.join(self.dir, "logs", w + ".log"), errors="replace") as f:
                ms = pat.findall(f.read())
            if ms:
                return ms[-1]
            time.sleep(0.1)
        return None


def machine(work):
    cpu = subprocess.check_output("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2", shell=True).decode().strip()
    ram = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)
    fs = subprocess.check_output(["findmnt", "-no", "FSTYPE", "-T", work]).decode().strip()
    runsc = subprocess.run(["runsc", "--version"], stdout=subprocess.PIPE, text=True).stdout.splitlines()[0]
    return f"{os.cpu_count()} cores ({cpu}), {ram} GiB RAM, kernel {platform.release()}, {fs} for the data dirs, {runsc}"


def fill(cl, sb, path, size, file_size):
    """Write size bytes of random data under path in sb: files of file_size in directories of 100."""
    n = max(1, size // file_size)
    last = size - (n - 1) * file_size
    script = (f"set -e; cd {path}; i=0; while [ $i -lt {n} ]; do d=d$((i / 100)); mkdir -p $d; "
              f"if [ $i -eq {n - 1} ]; then s={last}; else s={file_size}; fi; "
              f"head -c $s /dev/urandom >$d/f$i; i=$((i + 1)); done; du -sk . | cut -f1")
    r, wall = cl.timed("sandbox", "exec", sb, "--timeout", "1200s", "--", "sh", "-c", script)
    if r.get("exit_code") != 0:
        raise RuntimeError(f"filling {path}: {r}")
    return n, wall


SNAP_RE = r"directory snapshot '{img}' of '[^']*' \((?:managed|CSEK)\) in (\d+) ms: (\d+) entries, (\d+) bytes, (\d+) new chunks"
MOUNT_RE = r"mounted (?:an image|a CSEK image) at '{path}' in (\d+) ms \((\d+) layers, (\d+) chunks fetched\)"


def snapshot(cl, sb, w, path, key):
    args = ["sandbox", "snapshot-dir", sb, path] + (["--key-file", key] if key else [])
    r, wall = cl.timed(*args)
    img = r["id"]
    g = cl.worker_log(w, SNAP_RE.format(img=re.escape(img)))
    return {"image": img, "wall": wall, "capture_ms": int(g[0]) if g else None, "new_chunks": int(g[3]) if g else None}


def mount(cl, sb, w, path, img, key):
    args = ["sandbox", "mount", sb, path, img] + (["--key-file", key] if key else [])
    _, wall = cl.timed(*args)
    g = cl.worker_log(w, MOUNT_RE.format(path=re.escape(path)))
    return {"wall": wall, "worker_ms": int(g[0]) if g else None, "fetched": int(g[2]) if g else None}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.environ.get("CAIRN_BUILD") or os.path.join(ROOT, "build"))
    ap.add_argument("--work", default="/var/tmp/cairn-bench-dirsnap")
    ap.add_argument("--sizes", default="100M,1G")
    ap.add_argument("--file-size", default="256K")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of sizes up to 200 MB")
    ap.add_argument("--reps-large", type=int, default=1, help="repetitions of larger sizes")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "BENCHMARKS.md"))
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    sizes = [(s, size_arg(s)) for s in a.sizes.split(",") if s]
    a.file_size_arg, a.file_size = a.file_size, size_arg(a.file_size)
    if not shutil.which("runsc"):
        sys.exit("runsc is not installed")
    a.build = os.path.abspath(a.build)
    work = os.path.join(a.work, str(os.getpid()))
    os.makedirs(work)
    key = os.path.join(work, "csek.key")
    with open(key, "wb") as f:
        f.write(os.urandom(32))
    os.chmod(key, 0o600)
    load = os.getloadavg()[0]
    started = datetime.datetime.now(datetime.timezone.utc)
    cl = Cluster(a.build, work)
    res = []
    try:
        t0 = time.monotonic()
        cl.up(3, "--default-image", "busybox")
        log(f"cluster: 3 workers in {cl.dir}, base port {cl.port}, up in {time.monotonic() - t0:.1f} s")
        sa = cl.cli("sandbox", "create", "--worker", "w1")["id"]
        sb = cl.cli("sandbox", "create", "--worker", "w2")["id"]
        n = 0
        for label, size in sizes:
            row = {"label": label, "size": size, "managed": [], "csek": [], "mount_w2": [], "mount_fresh": []}
            reps = a.reps if size <= 200 * 10**6 else a.reps_large
            for rep in range(reps):
                n += 1
                path = f"/bench{n}"
                cl.cli("sandbox", "mount", sa, path)
                files, wt = fill(cl, sa, path, size, a.file_size)
                row["files"] = files
                log(f"{label} rep {rep + 1}: {files} files written in {wt:.1f} s")
                for mode in (["managed", "csek"] if rep % 2 == 0 else ["csek", "managed"]):
                    s = snapshot(cl, sa, "w1", path, key if mode == "csek" else None)
                    row[mode].append(s)
                    log(f"  snapshot-dir {mode}: {s['wall']:.2f} s wall, capture {s['capture_ms']} ms, "
                        f"{s['new_chunks']} new chunks ({s['image']})")
                cl.cli("sandbox", "unmount", sa, path)  # the images hold the data now
            # every pair of images mounted on w2 (holds about 2/3 of the chunks), then on a worker that joins
            # only now (so that no replica of these images went to it: it holds none of their chunks)
            w = f"w{cl.workers + 1}"
            cl.up(cl.workers + 1, "--no-default-image")
            sf = cl.cli("sandbox", "create", "--worker", w)["id"]
            row["fresh_worker"] = w
            for key_name, wk, sbx in (("mount_w2", "w2", sb), ("mount_fresh", w, sf)):
                for rep in range(reps):
                    pair = {}
                    for mode in (["managed", "csek"] if rep % 2 == 0 else ["csek", "managed"]):
                        n += 1
                        m = mount(cl, sbx, wk, f"/m{n}", row[mode][rep]["image"], key if mode == "csek" else None)
                        pair[mode] = m
                        log(f"  {label} rep {rep + 1}: mount {mode} on {wk}: {m['wall']:.2f} s wall, worker "
                            f"{m['worker_ms']} ms, {m['fetched']} chunks fetched")
                        cl.cli("sandbox", "unmount", sbx, f"/m{n}")
                    row[key_name].append(pair)
            cl.cli("sandbox", "terminate", sf)
            res.append(row)
        for s in (sa, sb):
            cl.cli("sandbox", "terminate", s)
    finally:
        cl.down()
        shutil.rmtree(work, ignore_errors=True)
    report(a, res, load, started)


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def report(a, res, load, started):
    lines = [f"### Directory snapshots: snapshot-dir and mount, managed and CSEK ({started:%Y-%m-%d %H:%M} UTC)", "",
             f"- Machine: {machine(a.work)}; load average {load:.1f} when the run started (the machine is shared: "
             "other builds and tests were running).",
             f"- Command: `python3 tests/bench/bench_dirsnap.py --sizes {a.sizes} --file-size {a.file_size_arg} "
             f"--reps {a.reps} --reps-large {a.reps_large}` (3 workers from `deploy/local-cluster.sh up --workers 3 --default-image busybox`, 2 replicas, "
             "loopback with CURVE; RocksDB on disk). Data: random bytes (incompressible) written from inside a "
             "sandbox into a directory mounted with `cairn sandbox mount`, as files of "
             f"{human(a.file_size)} in directories of 100. Times are wall times of the CLI (job submitted, run, "
             "replicated, answered; `sync` before each); the worker's own time from its log in parentheses "
             "(snapshot-dir: the capture; mount: materialising the layer, fetches included). CSEK: a 32-byte key "
             "file. Managed and CSEK snapshots of a repetition capture the same directory, in alternating order; "
             "the CSEK / managed ratio is the median of the repetitions' ratios. Mounts: every image pair is mounted "
             "on w2 and on a worker that joined after the snapshots (so it got no replica), each mount timed, then "
             "unmounted.",
             "", "| measurement | size (files) | managed | CSEK | CSEK / managed | target | |",
             "|---|---|---|---|---|---|---|"]
    for r in res:
        reps = len(r["managed"])
        of = f" (median of {reps})" if reps > 1 else ""
        ratios = [c["wall"] / m["wall"] for m, c in zip(r["managed"], r["csek"])]
        ratio = med(ratios)
        mw, cw = med([x["wall"] for x in r["managed"]]), med([x["wall"] for x in r["csek"]])
        mc, cc = med([x["capture_ms"] or 0 for x in r["managed"]]), med([x["capture_ms"] or 0 for x in r["csek"]])
        lines.append(f"| snapshot-dir{of} | {human(r['size'])} ({r['files']}) | "
                     f"{mw:.2f} s ({mc:.0f} ms), {r['size'] / mw / 1e6:.0f} MB/s | {cw:.2f} s ({cc:.0f} ms), "
                     f"{r['size'] / cw / 1e6:.0f} MB/s | {ratio:.2f} | ≤ 1.10 | {'met' if ratio <= 1.10 else '**missed**'} |")
        for key, what in (("mount_w2", "mount on w2 (holds ~2/3 of the chunks)"),
                          ("mount_fresh", f"mount on a worker holding none of the chunks ({r['fresh_worker']})")):
            pairs = r[key]
            ratio = med([p["csek"]["wall"] / p["managed"]["wall"] for p in pairs])
            cell = {}
            for mode in ("managed", "csek"):
                xs = [p[mode] for p in pairs]
                cell[mode] = (f"{med([x['wall'] for x in xs]):.2f} s ({med([x['worker_ms'] or 0 for x in xs]):.0f} ms, "
                              f"{med([x['fetched'] or 0 for x in xs]):.0f} chunks fetched)")
            lines.append(f"| {what}{of} | {human(r['size'])} ({r['files']}) | {cell['managed']} | {cell['csek']} | "
                         f"{ratio:.2f} | ≤ 1.10 | {'met' if ratio <= 1.10 else '**missed**'} |")
    lines.append("")
    for r in res:
        if len(r["managed"]) < 2:
            continue
        for key, what in (("snap", "snapshot-dir"), ("mount_w2", "mount on w2"), ("mount_fresh", "mount on " + r["fresh_worker"])):
            pairs = ([{"managed": m, "csek": c} for m, c in zip(r["managed"], r["csek"])] if key == "snap" else r[key])
            per = ", ".join(f"{p['managed']['wall']:.2f} / {p['csek']['wall']:.2f} s ({p['csek']['wall'] / p['managed']['wall']:.2f})"
                            for p in pairs)
            lines.append(f"- {what} of {human(r['size'])}, each repetition (managed / CSEK, ratio): {per}.")
    lines.append(f"- Load average {os.getloadavg()[0]:.1f} when the run ended.")
    lines.append("")
    block = "\n".join(lines) + "\n"
    print(block)
    if a.no_write:
        return
    text = open(a.out).read()
    marker = "<!-- dirsnap -->"
    if marker in text:
        head, rest = text.split(marker, 1)
        text = head + marker + "\n" + block + rest  # newest first
    else:
        text = text.rstrip("\n") + f"\n\n## Directory snapshots and CSEK\n\n{marker}\n{block}<!-- /dirsnap -->\n"
    open(a.out, "w").write(text)


if __name__ == "__main__":
    main()
