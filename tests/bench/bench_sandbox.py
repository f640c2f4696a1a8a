#!/usr/bin/env python3
"""Sandbox benchmark (issue 4): sandbox create latency and snapshot-fs against restic, on a real cluster.

Why a script and not a test: latencies depend on the machine and on what else runs on it; numbers are
recorded in docs/BENCHMARKS.md (section "Sandboxes") with the machine, the command and the date, and are
never asserted.

What it does (a 2-worker cluster from deploy/local-cluster.sh up --workers 2 --default-image debian, in a
fresh directory on a free base port; the Debian 12 minbase image comes from /var/cache/cairn):
  1. Create from a cached image: one create on w1 builds the Debian layer there, then N creates on w1
     (each terminated right after); wall time of `cairn sandbox create` (submit to running sandbox) and the
     worker's own create time from its log.
  2. Create with the layer cache cleared: M times, w2 is stopped (by pid), DATA/w2/layers is removed, w2 is
     started again (`local-cluster.sh up` starts what is missing), and one sandbox is created on w2, which
     must materialise the Debian layer again. With 2 workers and 2 replicas every chunk is on both workers,
     so no chunk crosses the network here (the worker's "chunks fetched" is reported to show it).
  3. snapshot-fs against restic: a ~1 GB base image (the Debian tree plus BASE_EXTRA of incompressible
     files, imported as a tarball), one sandbox of it on w1; `restic backup` of that sandbox's root (the
     overlay `merged` dir under DATA/w1/runtime/sandboxes/<runtime id>/) first in full; then for each
     change size (default 1M, 100M, 1G) exec writes that much new random data inside the sandbox,
     `cairn sandbox snapshot-fs` is timed (wall, and the pause it reports) and `restic backup` of the same
     root again (incremental: restic finds its parent snapshot by path). Changes accumulate: the sandbox's
     upper dir holds all of them, so each snapshot-fs captures the earlier changes again (deduplicated).
  4. local-cluster.sh down, and the directory is removed.

Usage: python3 tests/bench/bench_sandbox.py [--build DIR] [--cached 20] [--uncached 10]
       [--sizes 1M,100M,1G] [--base-extra 900M] [--work DIR] [--out docs/BENCHMARKS.md] [--no-write]
"""
import argparse
import datetime
import glob
import json
import os
import platform
import random
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOCAL_CLUSTER = os.path.join(ROOT, "deploy", "local-cluster.sh")
DEBIAN = os.path.join(os.environ.get("CAIRN_IMAGE_CACHE", "/var/cache/cairn"), "debian-12-minbase.tar.zst")


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


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(p / 100.0 * len(xs) + 0.5)) - 1))]


class Cluster:
    def __init__(self, build, work):
        self.dir = os.path.join(work, "cluster")
        self.port = free_base_port()
        # a 1 GB import or snapshot takes longer than the CLI's default 10 s per-call deadline
        self.env = dict(os.environ, CAIRN_BUILD=build, CAIRN_TIMEOUT_MS="900000")
        self.cairn = find_bin(build, "cairn")

    def script(self, *args):
        r = subprocess.run([LOCAL_CLUSTER, *args, "--dir", self.dir], env=self.env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            sys.exit(f"local-cluster.sh {' '.join(args)} failed:\n{r.stderr}")
        return r.stdout

    def up(self, *extra):
        out = self.script("up", "--base-port", str(self.port), *extra)
        for line in out.splitlines():
            m = re.match(r"^export (CAIRN_[A-Z_]+)=(.*)$", line)
            if m:
                self.env[m.group(1)] = shlex.split(m.group(2))[0] if m.group(2) else ""

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

    def worker_create_log(self, w, sb):
        """(create_ms, layers, chunks fetched) from worker w's log line for sandbox sb."""
        pat = re.compile(r"\(" + re.escape(sb) + r"\) created in (\d+) ms from (\d+) layers \((\d+) chunks fetched\)")
        for _ in range(20):
            with open(os.path.join(self.dir, "logs", w + ".log"), errors="replace") as f:
                m = pat.search(f.read())
            if m:
                return tuple(int(x) for x in m.groups())
            time.sleep(0.1)
        return (None, None, None)

    def create(self, w, image=None):
        args = ["sandbox", "create", "--worker", w] + (["--image", image] if image else [])
        t0 = time.monotonic()
        r = self.cli(*args)
        wall = time.monotonic() - t0
        return r["id"], wall

    def pid(self, name):
        with open(os.path.join(self.dir, "pids", name + ".pid")) as f:
            return int(f.read().strip())

    def alive(self, w):
        try:
            s = self.cli("cluster", "status")
        except RuntimeError:
            return False
        return any(x["id"] == w and x["alive"] for x in s["workers"])


def wait_gone(pid, secs=20):
    for _ in range(int(secs * 10)):
        try:
            with open(f"/proc/{pid}/status") as f:
                if re.search(r"^State:\s*Z", f.read(), re.M):
                    return
        except FileNotFoundError:
            return
        time.sleep(0.1)
    raise RuntimeError(f"pid {pid} did not exit")


def sandbox_root(cl, w, sb):
    """The host path of sandbox sb's root (its overlay `merged` dir): the bundle whose hostname is sb."""
    for cfg in glob.glob(os.path.join(cl.dir, "data", w, "runtime", "sandboxes", "*", "bundle", "config.json")):
        with open(cfg) as f:
            j = json.load(f)
        if j.get("hostname") == sb:
            return j["root"]["path"]
    raise RuntimeError(f"no bundle of {sb} under {cl.dir}/data/{w}")


def restic(repo, root, env):
    t0 = time.monotonic()
    r = subprocess.run(["restic", "-r", repo, "backup", "--json", "-q", root], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    wall = time.monotonic() - t0
    if r.returncode != 0:
        raise RuntimeError(f"restic backup failed: {r.stderr[-2000:]}")
    summary = {}
    for line in r.stdout.splitlines():
        try:
            j = json.loads(line)
        except ValueError:
            continue
        if j.get("message_type") == "summary":
            summary = j
    return wall, summary


def make_base(work, extra):
    """A tarball of the Debian tree plus `extra` bytes of incompressible files under /bulk."""
    tree = os.path.join(work, "base-tree")
    os.makedirs(tree)
    subprocess.run(f"zstd -dc {shlex.quote(DEBIAN)} | tar -x -C {shlex.quote(tree)}", shell=True, check=True)
    bulk = os.path.join(tree, "bulk")
    os.makedirs(bulk)
    per = 10 * 10**6
    n = (extra + per - 1) // per
    for i in range(n):
        with open(os.path.join(bulk, f"f{i:03d}"), "wb") as f:
            f.write(os.urandom(min(per, extra - i * per)))
    tar = os.path.join(work, "base.tar")
    subprocess.run(["tar", "-cf", tar, "-C", tree, "."], check=True)
    shutil.rmtree(tree)
    return tar, os.path.getsize(tar)


def machine(work):
    cpu = subprocess.check_output("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2", shell=True).decode().strip()
    ram = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)
    fs = subprocess.check_output(["findmnt", "-no", "FSTYPE", "-T", work]).decode().strip()
    runsc = subprocess.run(["runsc", "--version"], stdout=subprocess.PIPE, text=True).stdout.splitlines()[0]
    return f"{os.cpu_count()} cores ({cpu}), {ram} GiB RAM, kernel {platform.release()}, {fs} for the data dirs, {runsc} (ptrace platform)"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.environ.get("CAIRN_BUILD") or os.path.join(ROOT, "build"))
    ap.add_argument("--work", default="/var/tmp/cairn-bench-sandbox")
    ap.add_argument("--cached", type=int, default=20)
    ap.add_argument("--uncached", type=int, default=10)
    ap.add_argument("--sizes", default="1M,100M,1G")
    ap.add_argument("--base-extra", type=size_arg, default=size_arg("900M"))
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "BENCHMARKS.md"))
    ap.add_argument("--no-write", action="store_true")
    a = ap.parse_args()
    a.base_extra_arg = next((x.split("=", 1)[-1] if "=" in x else sys.argv[i + 2] for i, x in enumerate(sys.argv[1:])
                             if x.startswith("--base-extra")), "900M")
    sizes = [size_arg(s) for s in a.sizes.split(",") if s]
    for tool in ("runsc", "restic", "zstd"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed")
    if not os.path.exists(DEBIAN):
        sys.exit(f"{DEBIAN} is missing: make it with deploy/make-debian-image.sh {DEBIAN}")
    a.build = os.path.abspath(a.build)
    work = os.path.join(a.work, str(os.getpid()))
    os.makedirs(work)
    load = os.getloadavg()[0]
    started = datetime.datetime.now(datetime.timezone.utc)
    cl = Cluster(a.build, work)
    res = {"sizes": []}
    try:
        t0 = time.monotonic()
        cl.up("--workers", "2", "--default-image", "debian")
        log(f"cluster: 2 workers in {cl.dir}, base port {cl.port}, up with the Debian image in {time.monotonic() - t0:.1f} s")

        # 1. cached
        sb, wall = cl.create("w1")
        log(f"first create on w1 (builds the layer): {wall:.2f} s, worker {cl.worker_create_log('w1', sb)}")
        cl.cli("sandbox", "terminate", sb)
        walls, wms = [], []
        for _ in range(a.cached):
            sb, wall = cl.create("w1")
            walls.append(wall)
            wms.append(cl.worker_create_log("w1", sb)[0])
            cl.cli("sandbox", "terminate", sb)
        res["cached"] = (walls, wms)
        log(f"cached: p50 {pct(walls, 50):.3f} s p95 {pct(walls, 95):.3f} s; worker p50 {pct(wms, 50)} ms")

        # 2. layer cache cleared on w2
        walls, wms, fetched = [], [], []
        for _ in range(a.uncached):
            pid = cl.pid("w2")
            os.kill(pid, 15)
            wait_gone(pid)
            shutil.rmtree(os.path.join(cl.dir, "data", "w2", "layers"), ignore_errors=True)
            cl.up("--no-default-image")
            time.sleep(1.0)
            for _ in range(100):
                if cl.alive("w2"):
                    break
                time.sleep(0.2)
            sb, wall = cl.create("w2")
            walls.append(wall)
            ms, _, fch = cl.worker_create_log("w2", sb)
            wms.append(ms)
            fetched.append(fch)
            cl.cli("sandbox", "terminate", sb)
        res["uncached"] = (walls, wms, fetched)
        if walls:
            log(f"layer cache cleared: p50 {pct(walls, 50):.3f} s p95 {pct(walls, 95):.3f} s; worker p50 {pct(wms, 50)} ms; chunks fetched {fetched}")

        # 3. snapshot-fs vs restic on a ~1 GB base
        if sizes:
            t0 = time.monotonic()
            tar, tsize = make_base(work, a.base_extra)
            log(f"base tarball {human(tsize)} made in {time.monotonic() - t0:.1f} s")
            t0 = time.monotonic()
            im = cl.cli("image", "import", tar, "--name", "big")["id"]
            res["import"] = (tsize, time.monotonic() - t0)
            os.unlink(tar)
            log(f"imported {im} in {res['import'][1]:.1f} s")
            sb, wall = cl.create("w1", im)
            res["big_create"] = wall
            root = sandbox_root(cl, "w1", sb)
            log(f"sandbox {sb} of it created in {wall:.2f} s; root {root}")
            renv = dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_CACHE_DIR=os.path.join(work, "restic-cache"))
            repo = os.path.join(work, "restic-repo")
            subprocess.run(["restic", "-r", repo, "init", "-q"], env=renv, check=True, stdout=subprocess.DEVNULL)
            wall, summ = restic(repo, root, renv)
            res["restic_full"] = (wall, summ.get("total_bytes_processed", 0))
            log(f"restic full backup: {wall:.2f} s, {human(summ.get('total_bytes_processed', 0))}")
            for i, n in enumerate(sizes):
                cmd = f"mkdir -p /data && head -c {n} /dev/urandom >/data/change-{i}"
                t0 = time.monotonic()
                r = cl.cli("sandbox", "exec", sb, "--timeout", "600s", "--", "sh", "-c", cmd)
                wt = time.monotonic() - t0
                if r.get("exit_code") != 0:
                    raise RuntimeError(f"exec {cmd}: {r}")
                t0 = time.monotonic()
                s = cl.cli("sandbox", "snapshot-fs", sb)
                snap = time.monotonic() - t0
                rw, rs = restic(repo, root, renv)
                row = {"size": n, "write_s": wt, "snap_s": snap, "pause_ms": s.get("pause_ms"), "restic_s": rw,
                       "restic_new": rs.get("data_added", 0), "snap_size": s.get("size"), "snap_stored": s.get("stored")}
                res["sizes"].append(row)
                log(f"change {human(n)}: written in {wt:.2f} s; snapshot-fs {snap:.3f} s (pause {row['pause_ms']} ms); "
                    f"restic incremental {rw:.2f} s ({rw / snap:.1f}x)")
            cl.cli("sandbox", "terminate", sb)
    finally:
        cl.down()
        shutil.rmtree(work, ignore_errors=True)
    report(a, res, work, load, started)


def report(a, res, work, load, started):
    cw, cm = res["cached"]
    lines = [f"### Sandboxes: create latency, snapshot-fs against restic ({started:%Y-%m-%d %H:%M} UTC)", "",
             f"- Machine: {machine(a.work)}; load average {load:.1f} when the run started (the machine is shared: "
             "other builds and tests were running).",
             f"- Command: `python3 tests/bench/bench_sandbox.py --cached {a.cached} --uncached {a.uncached} --sizes {a.sizes} "
             f"--base-extra {a.base_extra_arg}` (2 workers from `deploy/local-cluster.sh up --workers 2 --default-image debian`, "
             "2 replicas, loopback with CURVE). Create latency is the wall time of `cairn sandbox create` "
             "(submit, schedule, layer cache, overlay mount, `runsc run` until the sandbox runs, reply); the worker's own "
             "create time is from its log.",
             "", "| measurement | setup | result | target | |", "|---|---|---|---|---|"]
    p50 = pct(cw, 50)
    lines.append(f"| sandbox create, cached image, N={len(cw)} | Debian 12 minbase, its layer already built on w1 | "
                 f"p50 {p50:.3f} s, p95 {pct(cw, 95):.3f} s (worker: p50 {pct(cm, 50)} ms, p95 {pct(cm, 95)} ms) | "
                 f"p50 < 0.6 s | {'met' if p50 < 0.6 else '**missed**'} |")
    if res.get("uncached") and res["uncached"][0]:
        uw, um, uf = res["uncached"]
        lines.append(f"| sandbox create, layer cache cleared, N={len(uw)} | w2 restarted with DATA/layers removed before "
                     f"each create: the layer is built again from the local chunk store (chunks fetched from peers: "
                     f"{sum(x or 0 for x in uf)}) | p50 {pct(uw, 50):.3f} s, p95 {pct(uw, 95):.3f} s (worker: p50 "
                     f"{pct(um, 50)} ms) | – | |")
    if "import" in res:
        ts, tt = res["import"]
        lines.append(f"| image import of the base tarball | Debian + {human(a.base_extra)} of random files, "
                     f"{human(ts)} tar | {tt:.1f} s ({ts / tt / 1e6:.0f} MB/s, 2 replicas) | – | |")
        lines.append(f"| sandbox create from it (first: layer built) | w1 | {res['big_create']:.2f} s | – | |")
        rf, rb = res["restic_full"]
        lines.append(f"| restic backup of the sandbox root, first (full) | the `merged` dir on the host, "
                     f"{human(rb)} | {rf:.2f} s | – | |")
        for r in res["sizes"]:
            ratio = r["restic_s"] / r["snap_s"]
            tgt = ""
            verdict = ""
            if r["size"] == 10**6:
                tgt = "< 0.3 s and ≥ 10× faster than restic"
                verdict = "met" if r["snap_s"] < 0.3 and ratio >= 10 else "**missed**"
            lines.append(f"| snapshot-fs after a {human(r['size'])} change (changes so far: "
                         f"{human(sum(x['size'] for x in res['sizes'][:res['sizes'].index(r) + 1]))}) | base image {human(res['import'][0])} | "
                         f"{r['snap_s']:.3f} s wall, pause {r['pause_ms']} ms; restic incremental {r['restic_s']:.2f} s "
                         f"= {ratio:.1f}× the snapshot-fs time | {tgt or '–'} | {verdict} |")
    lines.append("")
    lines.append("- snapshot-fs captures the sandbox's overlay upper dir, which holds every change since the sandbox "
                 "started: each snapshot re-reads the earlier changes (their chunks deduplicate). restic reads the "
                 "whole merged root and skips unchanged files by metadata (its parent snapshot is found by path). "
                 "The snapshot wall time includes replicating the new chunks to the second worker.")
    lines.append("")
    block = "\n".join(lines) + "\n"
    print(block)
    if a.no_write:
        return
    text = open(a.out).read()
    marker = "<!-- sandboxes -->"
    if marker in text:
        head, rest = text.split(marker, 1)
        text = head + marker + "\n" + block + rest  # newest first
    else:
        text = text.rstrip("\n") + f"\n\n## Sandboxes\n\n{marker}\n{block}<!-- /sandboxes -->\n"
    open(a.out, "w").write(text)


if __name__ == "__main__":
    main()
