#!/usr/bin/env python3
"""Memory snapshot benchmark (issue 6): cairn sandbox snapshot / restore next to bare runsc checkpoint / restore.

Why a script and not a test: times depend on the machine and on what else runs on it; results are recorded in
docs/BENCHMARKS.md (section "Memory snapshots") with the machine, the command and the date, never asserted.

What it does, in one run (a fresh work dir, removed at the end):
  * Kinds of sandbox: "idle" (busybox, `sleep` as its command) and the same holding 200 MiB and 1 GiB of
    random bytes in its /tmp tmpfs (sentry memory: `dd if=/dev/urandom of=/tmp/blob bs=1M` inside), all
    the size the runsc checkpoint image has to carry.
  * Bare runsc, the way the worker runs it (docs/internals/sandboxes.md; ../shared/notes/gvisor-runsc.md §6):
    a private `runsc --root` in the work dir, the busybox image (deploy/make-busybox-image.sh) as the lower
    dir of a host overlay mount, the worker's config.json (proc, a /dev tmpfs, sysfs, the same namespaces,
    a cgroupsPath of our own), `--platform=ptrace --network=none --file-access=shared`. Timed:
    `runsc checkpoint --image-path DIR ID` (until it returns), and `runsc restore -detach --image-path DIR
    --bundle B NEWID` until `runsc exec NEWID /bin/true` answers (what the worker waits for too).
  * cairn, on a 3-worker cluster (deploy/local-cluster.sh up --workers 3 --default-image busybox, 2
    replicas, CURVE on loopback): `cairn sandbox create --enable-snapshot --worker w1`, the same fill, then
    timed (wall time of the CLI call, i.e. until the job is committed):
      - `cairn sandbox snapshot SB` (checkpoint, store root diff + checkpoint image as chunks, replicate,
        commit, terminate);
      - `cairn sandbox restore SN --worker w1`, the worker that took the snapshot ("chunks local": it holds
        every chunk, and the worker keeps the checkpoint it just stored as a cached layer), twice;
      - `cairn sandbox restore SN --worker w2`: a worker that holds only its replicas (about 2/3 of the
        chunks with 2 replicas over 3 workers) and no cached layer: it fetches the rest from peers and
        builds the layers first;
      - fan-out: a fresh snapshot of each kind but 1 GiB, then `cairn sandbox restore SN --count 8` (no
        worker pinned: spread over the 3 workers, chunks fetched from peers where missing).
    Each restored sandbox is checked (md5 of /tmp/blob as before the snapshot) outside the timing, then
    terminated; snapshots are removed (`cairn snapshot rm`) after each rep.
  * Targets (issue 6): snapshot <= 1.5x bare checkpoint; restore with chunks local <= 1.5x bare restore;
    8-clone fan-out < 3x the time of one restore (reported against both single restores above).

Usage: python3 tests/bench/bench_memsnap.py [--build DIR] [--reps 3] [--big-reps 2] [--kinds idle,200M,1G]
       [--fanout 8] [--work DIR] [--out docs/BENCHMARKS.md] [--no-write] [--bare-only]
"""
import argparse
import datetime
import glob
import json
import os
import platform
import random
import re
import secrets
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOCAL_CLUSTER = os.path.join(ROOT, "deploy", "local-cluster.sh")
MAKE_BUSYBOX = os.path.join(ROOT, "deploy", "make-busybox-image.sh")
MIB = 1 << 20


def log(s):
    print(s, flush=True)


def kind_bytes(k):
    if k == "idle":
        return 0
    m = re.fullmatch(r"(\d+)([MG])", k.upper())
    if not m:
        sys.exit(f"bad kind '{k}' (idle, 200M, 1G ...)")
    return int(m.group(1)) * (MIB if m.group(2) == "M" else 1024 * MIB)


def kind_label(k):
    n = kind_bytes(k)
    if n == 0:
        return "idle"
    return f"{n // (1024 * MIB)} GiB" if n % (1024 * MIB) == 0 else f"{n // MIB} MiB"


def fill_cmd(n):
    return f"dd if=/dev/urandom of=/tmp/blob bs=1M count={n // MIB} 2>/dev/null && md5sum /tmp/blob | cut -d' ' -f1"


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


def med(xs):
    return statistics.median(xs) if xs else None


def fmt_s(xs):
    """median (min-max) of a list of seconds"""
    if not xs:
        return "–"
    if len(xs) == 1:
        return f"{xs[0]:.3f} s"
    return f"{med(xs):.3f} s ({min(xs):.3f}–{max(xs):.3f})"


# ---- bare runsc ---------------------------------------------------------------------------------


class Bare:
    """runsc with a private --root, a busybox overlay rootfs and the worker's config.json."""

    def __init__(self, work, tarball):
        self.dir = os.path.join(work, "bare")
        self.state = os.path.join(self.dir, "runsc-root")
        self.lower = os.path.join(self.dir, "lower")
        self.upper = os.path.join(self.dir, "upper")
        self.wdir = os.path.join(self.dir, "work")
        self.merged = os.path.join(self.dir, "merged")
        self.bundle = os.path.join(self.dir, "bundle")
        self.logf = os.path.join(self.dir, "runsc.log")
        self.cg_parent = f"cairn-bench-memsnap-{os.getpid()}"
        self.ids = []
        self.mounted = False
        for d in (self.state, self.lower, self.upper, self.wdir, self.merged, self.bundle):
            os.makedirs(d)
        subprocess.run(["tar", "-xf", tarball, "-C", self.lower], check=True)
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={self.lower},upperdir={self.upper},workdir={self.wdir}", self.merged], check=True)
        self.mounted = True

    def base(self):
        return ["runsc", f"--root={self.state}"]

    def starting(self):
        return self.base() + ["--platform=ptrace", "--network=none", "--file-access=shared"]

    def config(self, cid):
        caps = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID",
                "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_MKNOD", "CAP_AUDIT_WRITE"]
        c = {"ociVersion": "1.0.0",
             "process": {"terminal": False, "user": {"uid": 0, "gid": 0}, "args": ["sleep", "2147483647"],
                         "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "cwd": "/",
                         "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
                         "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 65536, "soft": 65536}]},
             "root": {"path": self.merged, "readonly": False}, "hostname": "bench",
             "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"},
                        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
                        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
                         "options": ["nosuid", "noexec", "nodev", "ro"]}],
             "linux": {"namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
                       "cgroupsPath": f"/{self.cg_parent}/{cid}"}}
        with open(os.path.join(self.bundle, "config.json"), "w") as f:
            json.dump(c, f)

    def new_id(self):
        cid = secrets.token_hex(16)  # fixed length, never reused (notes §8: ids match by prefix)
        self.ids.append(cid)
        return cid

    def exec(self, cid, *cmd, check=True):
        r = subprocess.run(self.base() + ["exec", cid, *cmd], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
        if check and r.returncode != 0:
            raise RuntimeError(f"runsc exec {cid} {cmd}: {r.returncode} {r.stderr[-500:]}")
        return r

    def wait_ready(self, cid, proc, secs=120):
        deadline = time.monotonic() + secs
        while time.monotonic() < deadline:
            if self.exec(cid, "/bin/true", check=False).returncode == 0:
                return
            time.sleep(0.01)
        raise RuntimeError(f"runsc container {cid} not ready after {secs} s (see {self.logf})")

    def start(self, args, cid):
        with open(self.logf, "ab") as lf:
            p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=lf, stderr=lf)
        return p

    def run(self):
        cid = self.new_id()
        self.config(cid)
        p = self.start(self.starting() + ["run", "-detach", "-bundle", self.bundle, cid], cid)
        self.wait_ready(cid, p)
        p.wait()
        return cid

    def checkpoint(self, cid, img):
        os.makedirs(img)
        t0 = time.monotonic()
        r = subprocess.run(self.base() + ["checkpoint", "--image-path", img, cid], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        t = time.monotonic() - t0
        if r.returncode != 0:
            raise RuntimeError(f"runsc checkpoint: {r.returncode} {r.stdout[-1000:]}")
        self.delete(cid)
        return t

    def restore(self, img):
        cid = self.new_id()
        self.config(cid)
        t0 = time.monotonic()
        p = self.start(self.starting() + ["restore", "-detach", "--image-path", img, "--bundle", self.bundle, cid], cid)
        self.wait_ready(cid, p)
        t = time.monotonic() - t0
        p.wait()
        return cid, t

    def delete(self, cid):
        subprocess.run(self.base() + ["delete", "-force", cid], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60)

    def cleanup(self):
        """Every container of our root, leftover processes naming our root (by pid), the overlay, the cgroups."""
        for cid in self.ids:
            try:
                self.delete(cid)
            except Exception:
                pass
        for _ in range(50):
            left = False
            for p in glob.glob("/proc/[0-9]*"):
                try:
                    with open(p + "/cmdline", "rb") as f:
                        cmd = f.read().split(b"\0")
                except OSError:
                    continue
                if any(self.state.encode() in a for a in cmd):
                    left = True
                    try:
                        os.kill(int(p[6:]), 9)
                    except OSError:
                        pass
            if not left:
                break
            time.sleep(0.1)
        if self.mounted:
            subprocess.run(["umount", "-l", self.merged], stderr=subprocess.DEVNULL)
            self.mounted = False
        roots = []
        with open("/proc/self/mounts") as f:
            for line in f:
                w = line.split()
                if w[2] in ("cgroup", "cgroup2"):
                    roots.append(w[1])
        for r in roots:
            base = os.path.join(r, self.cg_parent)
            if not os.path.isdir(base):
                continue
            for d in sorted(glob.glob(base + "/*"), reverse=True):
                if os.path.isdir(d):
                    for _ in range(20):
                        try:
                            os.rmdir(d)
                            break
                        except OSError:
                            time.sleep(0.1)
            try:
                os.rmdir(base)
            except OSError:
                pass


# ---- cairn cluster ------------------------------------------------------------------------------


class Cluster:
    def __init__(self, build, work):
        self.dir = os.path.join(work, "cluster")
        self.port = free_base_port()
        self.env = dict(os.environ, CAIRN_BUILD=build, CAIRN_TIMEOUT_MS="900000")
        self.cairn = find_bin(build, "cairn")

    def up(self, *extra):
        r = subprocess.run([LOCAL_CLUSTER, "up", "--dir", self.dir, "--base-port", str(self.port), *extra],
                           env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"local-cluster.sh up failed:\n{r.stderr}")
        for line in r.stdout.splitlines():
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
            raise RuntimeError(f"cairn {' '.join(args)} failed ({r.returncode}): {r.stderr[-2000:]} {r.stdout[-1000:]}")
        return json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else {}

    def timed(self, *args):
        t0 = time.monotonic()
        r = self.cli(*args)
        return r, time.monotonic() - t0

    def exec(self, sb, cmd, timeout="600s"):
        r = self.cli("sandbox", "exec", sb, "--timeout", timeout, "--", "sh", "-c", cmd)
        if r.get("exit_code") != 0:
            raise RuntimeError(f"exec in {sb}: {cmd}: {r}")
        return r.get("stdout", "").strip()

    def workers(self, ids):
        s = self.cli("sandbox", "ls")
        w = {x["id"]: x.get("worker") for x in s["sandboxes"]}
        return [w.get(i) for i in ids]

    def log_match(self, pat, tries=20):
        """The first match of regex pat in any worker's log (the lines come right before the job result)."""
        rx = re.compile(pat)
        for _ in range(tries):
            for f in sorted(glob.glob(os.path.join(self.dir, "logs", "w*.log"))):
                with open(f, errors="replace") as fh:
                    m = rx.search(fh.read())
                if m:
                    return m
            time.sleep(0.1)
        return None

    def snap_phases(self, sn):
        """(checkpoint, capture, replication, kept as a layer, total) ms from the worker's log line of snapshot sn
        (a phase the line does not name is None)."""
        m = self.log_match(r"memory snapshot " + re.escape(sn) + r" of sandbox \S+: ([^\n]*)")
        if not m:
            return None
        line = m.group(1)

        def ms(pat):
            x = re.search(pat + r" (\d+) ms", line)
            return int(x.group(1)) if x else None
        return (ms(r"checkpoint"), ms(r"capture"), ms(r"replication"), ms(r"kept as a layer"), ms(r"total"))

    def restore_phases(self, sb):
        """(total ms, runsc restore ms, chunks fetched) from the worker's log line of clone sb."""
        m = self.log_match(r"\(" + re.escape(sb) + r"\) restored from \S+ in (\d+) ms \(runsc restore (\d+) ms; (\d+) chunks")
        return tuple(int(x) for x in m.groups()) if m else None

    def terminate(self, ids):
        for i in ids:
            try:
                self.cli("sandbox", "terminate", i)
            except RuntimeError as e:
                log(f"  note: {e}")


def ids_of(r):
    return r["ids"] if "ids" in r else [r["id"]]


def machine(work):
    cpu = subprocess.check_output("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2", shell=True).decode().strip()
    ram = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30)
    fs = subprocess.check_output(["findmnt", "-no", "FSTYPE", "-T", work]).decode().strip()
    runsc = subprocess.run(["runsc", "--version"], stdout=subprocess.PIPE, text=True).stdout.splitlines()[0]
    return f"{os.cpu_count()} cores ({cpu}), {ram} GiB RAM, kernel {platform.release()}, {fs} for the work dir, {runsc} (ptrace platform)"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.environ.get("CAIRN_BUILD") or os.path.join(ROOT, "build"))
    ap.add_argument("--work", default="/var/tmp/cairn-bench-memsnap")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--kinds", default="idle,200M,1G")
    ap.add_argument("--fanout", type=int, default=8)
    ap.add_argument("--big-reps", type=int, default=2, help="reps for kinds of 1 GiB and more (default 2)")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "BENCHMARKS.md"))
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--bare-only", action="store_true", help="only the bare runsc part (no cluster)")
    a = ap.parse_args()
    kinds = [k for k in a.kinds.split(",") if k]
    for k in kinds:
        kind_bytes(k)
    if not shutil.which("runsc"):
        sys.exit("runsc is not installed")
    if os.geteuid() != 0:
        sys.exit("runsc and the overlay mount need root")
    a.build = os.path.abspath(a.build)
    work = os.path.join(a.work, str(os.getpid()))
    os.makedirs(work)
    load = os.getloadavg()[0]
    started = datetime.datetime.now(datetime.timezone.utc)
    t_start = time.monotonic()
    tar = os.path.join(work, "busybox.tar")
    subprocess.run([MAKE_BUSYBOX, tar], check=True, stderr=subprocess.DEVNULL)
    res = {k: {"ckpt": [], "bare_restore": [], "img": [], "snap": [], "restore1": [], "restore2": [], "restore_w2": [],
               "snap_ph": [], "restore1_ph": [], "restore2_ph": [], "restore_w2_ph": []}
           for k in kinds}
    fan = {}
    bare = None
    cl = None
    try:
        bare = Bare(work, tar)
        if not a.bare_only:
            cl = Cluster(a.build, work)
            t0 = time.monotonic()
            cl.up("--workers", "3", "--default-image", "busybox")
            log(f"cluster: 3 workers in {cl.dir}, base port {cl.port}, up in {time.monotonic() - t0:.1f} s")
        for k in kinds:
            n = kind_bytes(k)
            r = res[k]
            for rep in range(min(a.reps, a.big_reps) if n >= 1024 * MIB else a.reps):
                # bare runsc
                cid = bare.run()
                md5 = bare.exec(cid, "sh", "-c", fill_cmd(n)).stdout.strip() if n else ""
                img = os.path.join(bare.dir, f"img-{k}-{rep}")
                r["ckpt"].append(bare.checkpoint(cid, img))
                r["img"].append(os.path.getsize(os.path.join(img, "checkpoint.img")))
                cid2, t = bare.restore(img)
                r["bare_restore"].append(t)
                if n and bare.exec(cid2, "sh", "-c", "md5sum /tmp/blob | cut -d' ' -f1").stdout.strip() != md5:
                    raise RuntimeError("bare restore: /tmp/blob changed")
                bare.delete(cid2)
                shutil.rmtree(img)
                line = f"{kind_label(k)} rep {rep + 1}: bare checkpoint {r['ckpt'][-1]:.3f} s ({r['img'][-1] / 1e6:.1f} MB image), restore {t:.3f} s"
                if cl:
                    sb = cl.cli("sandbox", "create", "--enable-snapshot", "--worker", "w1")["id"]
                    md5 = cl.exec(sb, fill_cmd(n)) if n else ""
                    s, t = cl.timed("sandbox", "snapshot", sb)
                    sn = s["id"]
                    r["snap"].append(t)
                    r["snap_ph"].append(cl.snap_phases(sn))
                    for which, w in (("restore1", "w1"), ("restore2", "w1"), ("restore_w2", "w2")):
                        rr, t = cl.timed("sandbox", "restore", sn, "--worker", w)
                        ids = ids_of(rr)
                        r[which].append(t)
                        r[which + "_ph"].append(cl.restore_phases(ids[0]))
                        if n and cl.exec(ids[0], "md5sum /tmp/blob | cut -d' ' -f1") != md5:
                            raise RuntimeError(f"cairn restore of {sn}: /tmp/blob changed")
                        cl.terminate(ids)
                    cl.cli("snapshot", "rm", sn)
                    line += (f"; cairn snapshot {r['snap'][-1]:.3f} s {r['snap_ph'][-1]}, restore on w1 "
                             f"{r['restore1'][-1]:.3f} s {r['restore1_ph'][-1]} (again {r['restore2'][-1]:.3f} s "
                             f"{r['restore2_ph'][-1]}), on w2 {r['restore_w2'][-1]:.3f} s {r['restore_w2_ph'][-1]}")
                log(line)
            if cl and a.fanout > 1 and n <= 256 * MIB:
                sb = cl.cli("sandbox", "create", "--enable-snapshot", "--worker", "w1")["id"]
                md5 = cl.exec(sb, fill_cmd(n)) if n else ""
                sn = cl.cli("sandbox", "snapshot", sb)["id"]
                rr, t = cl.timed("sandbox", "restore", sn, "--count", str(a.fanout))
                ids = ids_of(rr)
                ws = cl.workers(ids)
                ph = [cl.restore_phases(i) for i in ids]
                bad = [i for i in ids if n and cl.exec(i, "md5sum /tmp/blob | cut -d' ' -f1") != md5]
                cl.terminate(ids)
                cl.cli("snapshot", "rm", sn)
                if bad:
                    raise RuntimeError(f"fan-out of {sn}: /tmp/blob changed in {bad}")
                fan[k] = (t, len(ids), {w: ws.count(w) for w in sorted(set(ws), key=str)},
                          max((p[0] for p in ph if p), default=None), sum(p[2] for p in ph if p))
                log(f"{kind_label(k)} fan-out of {len(ids)} clones: {t:.3f} s on {fan[k][2]}; worker jobs {ph}")
    finally:
        if cl:
            cl.down()
        if bare:
            bare.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    log(f"total {time.monotonic() - t_start:.0f} s")
    report(a, kinds, res, fan, load, started, bool(cl))


def ratio_row(what, num, den, target, ok):
    if num is None or den is None:
        return f"- {what}: not measured"
    x = round(num / den, 2)  # the verdict follows the ratio as printed
    return f"- {what}: {num:.3f} s / {den:.3f} s = {x:.2f}x (target {target}) — {'met' if ok(x) else '**missed**'}"


def report(a, kinds, res, fan, load, started, with_cluster):
    lines = [f"### Memory snapshots: snapshot and restore against bare runsc ({started:%Y-%m-%d %H:%M} UTC)", "",
             f"- Machine: {machine(a.work)}; load average {load:.1f} when the run started (the machine is shared: "
             "other builds and tests were running).",
             f"- Command: `python3 tests/bench/bench_memsnap.py --reps {a.reps} --big-reps {a.big_reps} --kinds {a.kinds} --fanout {a.fanout}"
             f"{' --bare-only' if a.bare_only else ''}`. Bare runsc: private `--root`, busybox image as a host overlay "
             "lower, the worker's config.json and flags; checkpoint = `runsc checkpoint` until it returns; restore = "
             "`runsc restore -detach` until `runsc exec /bin/true` answers. cairn: 3 workers "
             "(`deploy/local-cluster.sh up --workers 3 --default-image busybox`, 2 replicas, CURVE on loopback), wall "
             "time of the CLI call (snapshot: until committed, replicated, sandbox terminated; restore: until the "
             "clones run). Memory = random bytes in the sandbox's /tmp tmpfs. Median of the reps (min–max).",
             "", "| sandbox | reps | checkpoint image | bare `runsc checkpoint` | `cairn sandbox snapshot` | ratio | "
             "bare `runsc restore` | `cairn sandbox restore`, chunks local (first) | ratio | again (layers cached) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for k in kinds:
        r = res[k]
        ck, br = med(r["ckpt"]), med(r["bare_restore"])
        sn, r1, r2 = med(r["snap"]), med(r["restore1"]), med(r["restore2"])
        q1 = f"{sn / ck:.2f}x" if sn and ck else "–"
        q2 = f"{r1 / br:.2f}x" if r1 and br else "–"
        lines.append(f"| {kind_label(k)} | {len(r['ckpt'])} | {med(r['img']) / 1e6:.1f} MB | {fmt_s(r['ckpt'])} | {fmt_s(r['snap'])} | {q1} | "
                     f"{fmt_s(r['bare_restore'])} | {fmt_s(r['restore1'])} | {q2} | {fmt_s(r['restore2'])} |")
        if with_cluster:
            verdicts.append(ratio_row(f"snapshot vs bare checkpoint, {kind_label(k)}", sn, ck, "≤ 1.5x", lambda x: x <= 1.5))
            verdicts.append(ratio_row(f"restore (chunks local, first) vs bare restore, {kind_label(k)}", r1, br, "≤ 1.5x",
                                      lambda x: x <= 1.5))
    lines.append("")
    if with_cluster:
        lines.append("Where the time goes, from the workers' logs (medians, ms): snapshot = checkpoint (runsc) + capture "
                     "(store root diff, mounts, checkpoint image as chunks) + refs and replication + keeping the checkpoint "
                     "as a cached layer (+ small steps); restore = the worker's job time, of which `runsc restore` until "
                     "exec answers.")
        lines.append("")
        lines.append("| sandbox | snapshot: checkpoint | capture | replication | kept as layer | worker total | restore on w1 (first): worker "
                     "total | of which runsc restore | again: worker total | of which runsc restore | restore on w2 (chunks "
                     "partly remote): wall | worker total | of which runsc restore | chunks fetched |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for k in kinds:
            r = res[k]

            def col(key, i):
                xs = [p[i] for p in r[key] if p and p[i] is not None]
                return f"{med(xs):.0f}" if xs else "–"
            lines.append(f"| {kind_label(k)} | {col('snap_ph', 0)} | {col('snap_ph', 1)} | {col('snap_ph', 2)} | "
                         f"{col('snap_ph', 3)} | {col('snap_ph', 4)} | {col('restore1_ph', 0)} | {col('restore1_ph', 1)} | "
                         f"{col('restore2_ph', 0)} | {col('restore2_ph', 1)} | {fmt_s(r['restore_w2'])} | "
                         f"{col('restore_w2_ph', 0)} | {col('restore_w2_ph', 1)} | {col('restore_w2_ph', 2)} |")
        lines.append("")
    if fan:
        lines.append(f"| fan-out | clones | `cairn sandbox restore --count {a.fanout}` | spread | slowest clone's worker job "
                     "| chunks fetched from peers (all clones) | one restore on w1 (chunks local) | ratio | one restore on "
                     "w2 (chunks partly remote) | ratio |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|")
        for k, (t, nn, ws, slow, fetched) in fan.items():
            one, one2 = med(res[k]["restore1"]), med(res[k]["restore_w2"])
            lines.append(f"| {kind_label(k)} | {nn} | {t:.3f} s | {', '.join(f'{w}: {c}' for w, c in ws.items())} | "
                         f"{slow if slow is not None else '–'} ms | {fetched} | {one:.3f} s | {t / one:.2f}x | "
                         f"{one2:.3f} s | {t / one2:.2f}x |")
            verdicts.append(ratio_row(f"{nn}-clone fan-out vs one restore with chunks local (on w1), {kind_label(k)}", t,
                                      one, "< 3x", lambda x: x < 3))
            verdicts.append(ratio_row(f"{nn}-clone fan-out vs one restore on a worker that fetches (w2), {kind_label(k)}",
                                      t, one2, "< 3x", lambda x: x < 3))
        lines.append("")
    if verdicts:
        lines.append("Targets (issue 6), ratios of medians from this run:")
        lines.append("")
        lines.extend(verdicts)
        lines.append("")
    block = "\n".join(lines) + "\n"
    print(block)
    if a.no_write:
        return
    text = open(a.out).read()
    marker = "<!-- memsnap -->"
    if marker in text:
        head, rest = text.split(marker, 1)
        text = head + marker + "\n" + block + rest  # newest first
    else:
        text = text.rstrip("\n") + f"\n\n## Memory snapshots\n\n{marker}\n{block}<!-- /memsnap -->\n"
    open(a.out, "w").write(text)


if __name__ == "__main__":
    main()
