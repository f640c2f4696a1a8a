#!/usr/bin/env python3
"""Storage-core benchmark: cairn-store against tar|zstd, restic and borg on the same tree, same run.

Why a script and not a test: throughput depends on the machine and on what else runs; numbers are
recorded in docs/BENCHMARKS.md with the machine, the command and the date, never asserted.

What it measures, per tool (median of --reps runs, fresh repository each run, page cache warmed, and a
`sync` inside the timing of every step that writes to disk):
  - capture of new data (first backup) in MB/s of the input tree, CPU seconds, peak RSS
  - incremental capture after editing 1 % of the files (64 bytes each)
  - restore to tmpfs and to disk (ext4, + sync)
  - stored size (du -sb of the repository)
The dataset mirrors ../shared/notes/storage-anchors.md §2.1: a copy of parts of /usr plus a 256 MiB random
blob and a 256 MiB "memory-like" blob (zeros with a random 4 KiB page every MiB).

Usage: python3 tests/bench/bench_store.py [--work DIR] [--reps N] [--tree DIR] [--out docs/BENCHMARKS.md]
       [--only cairn,tar,restic,borg]
"""
import argparse
import datetime
import json
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PASSWORD = "bench-only-password"
SOURCES = ["/usr/bin", "/usr/include", "/usr/lib/python3.11", "/usr/share/doc", "/usr/share/man",
           "/usr/share/fpcsrc"]


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, check=True, **kw)


def timed(cmd, env=None, cwd=None):
    """Run cmd (shell) and return wall seconds, CPU seconds (user+sys of children) and max RSS MiB."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, shell=True, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"command failed ({code}): {cmd}\n{err[-2000:]}")
    return {"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "rss_mib": ru.ru_maxrss / 1024}


def du(path):
    return int(subprocess.check_output(["du", "-sb", path]).split()[0])


def tree_bytes(path):
    return int(subprocess.check_output(["du", "-sb", "--apparent-size", path]).split()[0])


def make_tree(tree):
    if os.path.isdir(tree):
        return
    os.makedirs(tree + ".tmp/usr", exist_ok=True)
    for s in SOURCES:
        if os.path.isdir(s):
            sh(f"cp -a {s} {tree}.tmp/usr/")
    os.makedirs(tree + ".tmp/blobs", exist_ok=True)
    sh(f"head -c {256 << 20} /dev/urandom > {tree}.tmp/blobs/random.bin")
    rnd = random.Random(7)
    with open(f"{tree}.tmp/blobs/sparse_zeros.bin", "wb") as f:
        for _ in range(256):
            f.write(rnd.randbytes(4096))
            f.write(bytes((1 << 20) - 4096))
    os.rename(tree + ".tmp", tree)


def edit_files(tree, undo_log=None, seed=42):
    """Overwrite 64 bytes at a random offset in 1 % of the non-empty regular files (deterministic)."""
    files = []
    base = os.path.join(tree, "usr") if os.path.isdir(os.path.join(tree, "usr")) else tree
    for d, _, names in os.walk(base):
        for n in names:
            p = os.path.join(d, n)
            if os.path.isfile(p) and not os.path.islink(p) and os.path.getsize(p) > 0:
                files.append(p)
    files.sort()
    rnd = random.Random(seed)
    chosen = rnd.sample(files, min(len(files), max(1, len(files) // 100)))
    saved = []
    for p in chosen:
        size = os.path.getsize(p)
        off = rnd.randrange(0, max(1, size - 64))
        with open(p, "r+b") as f:
            f.seek(off)
            old = f.read(64)
            f.seek(off)
            f.write(rnd.randbytes(len(old)))
        saved.append((p, off, old))
    return saved


def undo_edits(saved):
    for p, off, old in saved:
        with open(p, "r+b") as f:
            f.seek(off)
            f.write(old)


def warm(tree):
    sh(f"tar -cf - -C {tree} . | cat > /dev/null")


def fresh(path):
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)


class Tool:
    def __init__(self, name, work, tree, cs):
        self.name, self.work, self.tree, self.cs = name, work, tree, cs
        self.repo = os.path.join(work, "repo_" + name)
        self.env = dict(os.environ, RESTIC_PASSWORD=PASSWORD, BORG_PASSPHRASE=PASSWORD,
                        RESTIC_CACHE_DIR=os.path.join(work, "cache", "restic"),
                        BORG_BASE_DIR=os.path.join(work, "cache", "borg"), CAIRN_LOG_LEVEL="warn")


def run_tool(name, work, tree, cs, reps, shm, log):
    t = Tool(name, work, tree, cs)
    res = {"first": [], "incr": [], "restore_tmpfs": [], "restore_disk": [], "size": [], "size2": []}
    for rep in range(reps):
        shutil.rmtree(t.repo, ignore_errors=True)
        shutil.rmtree(os.path.join(work, "cache"), ignore_errors=True)
        if name == "cairn":
            sh(f"{cs} init {t.repo} --quiet", env=t.env)
            first = f"{cs} capture {t.repo} {tree} --quiet && sync"
            incr = first
        elif name == "restic":
            sh(f"restic init -q -r {t.repo}", env=t.env)
            first = f"restic -r {t.repo} backup -q {tree} && sync"
            incr = first
        elif name == "borg":
            sh(f"borg init -e repokey-blake2 {t.repo}", env=t.env)
            first = f"borg create -C lz4 {t.repo}::a1 {tree} && sync"
            incr = f"borg create -C lz4 {t.repo}::a2 {tree} && sync"
        elif name == "tar":
            os.makedirs(t.repo)
            first = f"tar -cf - -C {tree} . | zstd -1 -T0 -q -o {t.repo}/a.tar.zst && sync"
            incr = None
        warm(tree)
        sh("sync")
        r = timed(first, env=t.env)
        res["first"].append(r)
        res["size"].append(du(t.repo))
        log(f"  {name} rep {rep + 1}: first {r['wall']:.2f} s, {r['cpu']:.1f} CPU s, {r['rss_mib']:.0f} MiB")
        for kind, target in (("restore_tmpfs", os.path.join(shm, "r")), ("restore_disk", os.path.join(work, "restore"))):
            fresh(target)
            if name == "cairn":
                ids = subprocess.check_output(f"{cs} ls {t.repo} --json", shell=True, env=t.env)
                snaps = json.loads(ids)["snapshots"]
                cmd = f"{cs} restore {t.repo} {snaps[0]['id']} {target}/t --quiet"
            elif name == "restic":
                cmd = f"restic -r {t.repo} restore -q latest --target {target}"  # the only snapshot so far
            elif name == "borg":
                cmd = f"cd {target} && borg extract {t.repo}::a1"
            else:
                cmd = f"mkdir {target}/t && zstd -d -q -c {t.repo}/a.tar.zst | tar -xf - -C {target}/t"
            if kind == "restore_disk":
                cmd += " && sync"
            sh("sync")
            r = timed(cmd, env=t.env)
            res[kind].append(r)
            log(f"  {name} rep {rep + 1}: {kind} {r['wall']:.2f} s")
            if rep == 0:
                check = restored_root(target, tree, name)
                rc = subprocess.run(["diff", "-rq", "--no-dereference", tree, check],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                if rc.returncode != 0:
                    raise RuntimeError(f"{name} {kind}: restored tree differs:\n{rc.stdout.decode()[:2000]}")
            shutil.rmtree(target, ignore_errors=True)
        if incr:
            saved = edit_files(tree)
            try:
                warm(tree)
                sh("sync")
                r = timed(incr if name != "borg" else incr, env=t.env)
                res["incr"].append(r)
                res["size2"].append(du(t.repo))
                log(f"  {name} rep {rep + 1}: incremental {r['wall']:.2f} s")
            finally:
                undo_edits(saved)
    shutil.rmtree(t.repo, ignore_errors=True)
    return res


def restored_root(target, tree, name):
    if name in ("cairn", "tar"):
        return os.path.join(target, "t")
    return os.path.join(target, tree.lstrip("/"))


def med(rs, key):
    return statistics.median(r[key] for r in rs) if rs else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="/var/tmp/cairn-bench")
    ap.add_argument("--tree", default=None, help="existing tree to use instead of building the dataset")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "BENCHMARKS.md"))
    ap.add_argument("--only", default="tar,cairn,restic,borg")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    a = ap.parse_args()

    cs = os.path.join(a.build, "client", "cairn-store")
    if not os.access(cs, os.X_OK):
        sys.exit(f"{cs} not found: build first (cmake -S . -B build && cmake --build build)")
    os.makedirs(a.work, exist_ok=True)
    tree = a.tree or os.path.join(a.work, "tree")
    make_tree(tree)
    size = tree_bytes(tree)
    shm = os.path.join(a.work, "shm")
    os.makedirs(shm, exist_ok=True)
    sh(f"mountpoint -q {shm} || mount -t tmpfs -o size=8g tmpfs {shm}")
    log = lambda s: print(s, flush=True)
    log(f"tree {tree}: {size / 1e6:.0f} MB")
    results = {}
    try:
        for name in a.only.split(","):
            log(f"== {name}")
            results[name] = run_tool(name, a.work, tree, cs, a.reps, shm, log)
    finally:
        sh(f"umount {shm} || true")
    write_report(a, results, size, tree)


def write_report(a, results, size, tree):
    mbs = lambda w: size / 1e6 / w if w else None
    rows = []
    for name, r in results.items():
        first = med(r["first"], "wall")
        rows.append({
            "tool": {"cairn": "cairn-store (zstd 1, all cores)", "tar": "tar \\| zstd -1 -T0 (no dedup, no encryption)",
                     "restic": "restic 0.14 (zstd auto)", "borg": "borg 1.2 (lz4, repokey-blake2)"}[name],
            "first_s": first, "first_mbs": mbs(first), "first_cpu": med(r["first"], "cpu"),
            "first_rss": max((x["rss_mib"] for x in r["first"]), default=None),
            "incr_s": med(r["incr"], "wall"),
            "rt_s": med(r["restore_tmpfs"], "wall"), "rt_mbs": mbs(med(r["restore_tmpfs"], "wall")),
            "rd_s": med(r["restore_disk"], "wall"), "rd_mbs": mbs(med(r["restore_disk"], "wall")),
            "restore_rss": max((x["rss_mib"] for x in r["restore_tmpfs"] + r["restore_disk"]), default=None),
            "size": statistics.median(r["size"]), "delta": (statistics.median(r["size2"]) - statistics.median(r["size"])) if r["size2"] else None,
        })
    f = lambda v, fmt: (fmt % v) if v is not None else "–"
    now = datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M UTC")
    cpu = subprocess.check_output("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2", shell=True).decode().strip()
    lines = [
        f"### Storage core: capture and restore ({now})",
        "",
        f"- Machine: {os.cpu_count()} cores ({cpu}), {round(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30)} GiB RAM, "
        f"kernel {platform.release()}, {subprocess.check_output(['findmnt', '-no', 'FSTYPE', '-T', a.work]).decode().strip()} for disk steps, tmpfs for tmpfs restores.",
        f"- Command: `python3 tests/bench/bench_store.py --reps {a.reps}{' --tree ' + a.tree if a.tree else ''}` "
        + (f"(tree {size / 1e6:.0f} MB: {', '.join(SOURCES)} copied, plus 256 MiB random and 256 MiB memory-like blobs; "
           if not a.tree else f"(tree {a.tree}, {size / 1e6:.0f} MB; ")
        + "median of the reps, fresh repository each rep, page cache warm, "
        "`sync` inside the timing of disk writes; incremental = 1 % of files edited by 64 bytes).",
        "",
        "| tool | first capture s | MB/s | CPU s | peak RSS MiB | incremental s | restore tmpfs s | MB/s | restore disk+sync s | MB/s | restore RSS MiB | stored MB | ratio | +MB after 1 % edit |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append("| " + " | ".join([
            r["tool"], f(r["first_s"], "%.2f"), f(r["first_mbs"], "%.0f"), f(r["first_cpu"], "%.1f"), f(r["first_rss"], "%.0f"),
            f(r["incr_s"], "%.2f"), f(r["rt_s"], "%.2f"), f(r["rt_mbs"], "%.0f"), f(r["rd_s"], "%.2f"), f(r["rd_mbs"], "%.0f"),
            f(r["restore_rss"], "%.0f"), f(r["size"] / 1e6, "%.0f"), f(size / r["size"], "%.2fx"),
            f(r["delta"] / 1e6 if r["delta"] is not None else None, "%.1f")]) + " |")
    by = {k: v for k, v in zip(results.keys(), rows)}
    if "cairn" in by:
        c = by["cairn"]
        lines += ["", "Targets (issue \"Foundation\"), ratios from this run:", ""]
        def target(label, val, goal, better_high=True):
            if val is None:
                return f"- {label}: not measured"
            met = val >= goal if better_high else val <= goal
            return f"- {label}: {val:.2f} (target {'≥' if better_high else '≤'} {goal}) — {'met' if met else '**missed**'}"
        if "restic" in by:
            rr = by["restic"]
            lines.append(target("capture vs restic first backup", c["first_mbs"] / rr["first_mbs"], 2.0))
            lines.append(target("restore to tmpfs vs restic", c["rt_mbs"] / rr["rt_mbs"], 1.5))
            lines.append(target("stored size vs restic", c["size"] / rr["size"], 1.10, better_high=False))
        if "tar" in by:
            lines.append(target("capture vs tar \\| zstd -1 -T0", c["first_mbs"] / by["tar"]["first_mbs"], 0.8))
        lines.append(target("peak RSS MiB (capture/restore)", max(c["first_rss"], c["restore_rss"]), 256, better_high=False))
    block = "\n".join(lines) + "\n"
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    text = open(a.out).read() if os.path.exists(a.out) else "# Benchmarks\n\nMeasured results, newest first within each section. MB/s = 10^6 bytes/s of the input tree.\n\n"
    marker = "<!-- storage-core -->"
    if marker in text:
        head, rest = text.split(marker, 1)
        end = rest.find("<!-- /storage-core -->")
        text = head + marker + "\n" + block + rest[end:] if end >= 0 else head + marker + "\n" + block + "<!-- /storage-core -->\n"
    else:
        text += f"## Storage core\n\n{marker}\n{block}<!-- /storage-core -->\n"
    open(a.out, "w").write(text)
    print(block)


if __name__ == "__main__":
    main()
