#!/usr/bin/env python3
"""Runs the benchmark programs and reports bgjob against its peers.

Each program prints `FIG <name> <value> <unit>` lines, with names
`<bench>.<subject>.<metric>`. This script runs every program BENCH_RUNS times
(default 3) with free thread placement and as many times pinned to one vCPU
(`taskset -c BENCH_CPU`, default 0), interleaved, takes the median of each
figure per placement, and computes the ratio bgjob/peer for every bgjob figure
that has a peer figure of the same bench and metric. It prints a table and
writes every figure (with each run's value), every ratio and bgjob's
targets to target/bench/summary.json (smoke.json under --quick).

Usage: run.py [--quick] PROGRAM...
"""
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys

# (bgjob figure, peer figure, comparison, bound): bgjob's targets (docs/performance.md).
# Ratios are bgjob/peer; "<=" for times and sizes, ">=" for throughputs. A bound
# is one number for both placements or a dict with one per placement.
TARGETS = [
    ("progress.bgjob.alone", "progress.mutex.alone", "<=", 0.7),
    ("progress.bgjob.polled", "progress.mutex.polled", "<=", 0.5),
    ("progress.bgjob.read", "progress.mutex.read", "<=", 0.7),
    ("getinfo.bgjob.alone", "getinfo.mutex.alone", "<=", 1.5),
    ("scale.bgjob.getinfo_ms", "scale.pthread.getinfo_ms", "<=", 1.5),
    ("burst.bgjob.jobs_per_s", "burst.gtask.jobs_per_s", ">=", 1.5),
    ("burst.bgjob_capped.jobs_per_s", "burst.gtask.jobs_per_s", ">=", 1.5),
    ("dispatch.bgjob.p50", "dispatch.eventfd.p50", "<=", 1.2),
    ("roundtrip.bgjob.p50", "roundtrip.gtask.p50", "<=", {"free": 0.8, "pinned": 0.5}),
    ("scale.bgjob.cancel_ms", "scale.pthread.cancel_ms", "<=", 1.2),
    ("scale.bgjob.cancel_reverse_ms", "scale.pthread.cancel_reverse_ms", "<=", 0.5),
    ("scale.bgjob.mem_kib_per_job", "scale.pthread.mem_kib_per_job", "<=", 1.2),
    # Older targets the ones above do not replace.
    ("roundtrip.bgjob.p50", "roundtrip.pthread.p50", "<=", 0.5),
    ("cancel.bgjob.p50", "cancel.gcancellable_fd.p50", "<=", 1.2),
    ("dispatch.bgjob.p50", "dispatch.gmain_invoke.p50", "<=", 0.6),
    ("scale.bgjob.create_cancel_reap_ms", "scale.pthread.create_cancel_reap_ms", "<=", 1.5),
]

# Per-block progress in a copy loop (benches/copyloop.c): the overhead of
# bgjob's update over the same loop with no progress, in percent.
COPY_BLOCKS = ("4k", "64k")


def bound_for(bound, placement):
    return bound[placement] if isinstance(bound, dict) else bound


def bound_text(op, bound):
    if isinstance(bound, dict):
        return f"{op} " + "/".join(f"{bound[p]:g}" for p in PLACEMENTS)
    return f"{op} {bound:g}"


PLACEMENTS = ("free", "pinned")


def run_once(prog, placement, quick):
    cmd = [prog] + (["--quick"] if quick else [])
    if placement == "pinned":
        cmd = ["taskset", "-c", os.environ.get("BENCH_CPU", "0")] + cmd
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    figs = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] == "FIG":
            figs[parts[1]] = (float(parts[2]), parts[3])
    # Memory per job is what a job costs in all: the process's and the kernel's.
    for who in ("bgjob", "pthread"):
        rss, kern = f"scale.{who}.rss_kib_per_job", f"scale.{who}.kernel_kib_per_job"
        if rss in figs and kern in figs:
            figs[f"scale.{who}.mem_kib_per_job"] = (figs[rss][0] + figs[kern][0], "KiB")
    return figs


def machine():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass

    def cmd(*args):
        try:
            return subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True).stdout.strip()
        except OSError:
            return ""

    return {
        "cpu": model,
        "vcpus": os.cpu_count(),
        "kernel": platform.release(),
        "glib": cmd("pkg-config", "--modversion", "glib-2.0"),
        "cc": cmd(os.environ.get("CC", "cc"), "--version").split("\n")[0],
        "commit": cmd("git", "rev-parse", "--short", "HEAD"),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def subject_of(name):
    return name.split(".")[1]


def main(argv):
    quick = "--quick" in argv
    progs = [a for a in argv if a != "--quick"]
    if not progs:
        sys.exit(__doc__)
    runs = 1 if quick else int(os.environ.get("BENCH_RUNS", "3"))
    values, units = {}, {}
    for r in range(runs):
        for placement in PLACEMENTS:
            for prog in progs:
                print(f"run {r + 1}/{runs} {placement:6} {os.path.basename(prog)}",
                      file=sys.stderr, flush=True)
                for name, (v, unit) in run_once(prog, placement, quick).items():
                    values.setdefault(name, {p: [] for p in PLACEMENTS})[placement].append(v)
                    units[name] = unit
    figures = {
        name: {"unit": units[name],
               **{p: {"median": statistics.median(vs[p]), "runs": vs[p]}
                  for p in PLACEMENTS if vs[p]}}
        for name, vs in sorted(values.items())
    }

    def med(name, p):
        return figures[name][p]["median"]

    for blk in COPY_BLOCKS:
        b, n = f"copy.bgjob.ns_per_block_{blk}", f"copy.none.ns_per_block_{blk}"
        if b in figures and n in figures:
            figures[f"copy.bgjob.overhead_pct_{blk}"] = {
                "unit": "%",
                **{p: {"median": 100.0 * (med(b, p) / med(n, p) - 1.0), "runs": []}
                   for p in PLACEMENTS if p in figures[b] and p in figures[n] and med(n, p) > 0}}

    targets = {(b, q): (op, bound) for b, q, op, bound in TARGETS}
    ratios = []
    for b in figures:
        bench, subject, metric = b.split(".", 2)
        if not subject.startswith("bgjob"):
            continue
        for q in figures:
            qb, qs, qm = q.split(".", 2)
            if qb != bench or qm != metric or qs.startswith("bgjob"):
                continue
            entry = {"name": f"{bench}.{metric}: {subject}/{qs}", "bgjob": b, "peer": q}
            for p in PLACEMENTS:
                if p in figures[b] and p in figures[q] and med(q, p) > 0:
                    entry[p] = med(b, p) / med(q, p)
                    entry[f"bgjob_{p}"] = med(b, p)
                    entry[f"peer_{p}"] = med(q, p)
            if (b, q) in targets:
                op, bound = targets[(b, q)]
                entry["target"] = bound_text(op, bound)
                for p in PLACEMENTS:
                    if p in entry:
                        lim = bound_for(bound, p)
                        entry[f"met_{p}"] = entry[p] <= lim if op == "<=" else entry[p] >= lim
            ratios.append(entry)

    print(f"\nbgjob benchmarks: medians of {runs} run(s) per placement "
          f"(free; pinned = taskset -c {os.environ.get('BENCH_CPU', '0')})")
    print(f"\n{'figure':44} {'free':>12} {'pinned':>12}  unit")
    for name, f in figures.items():
        cells = [f"{f[p]['median']:12.4g}" if p in f else f"{'-':>12}" for p in PLACEMENTS]
        print(f"{name:44} {cells[0]} {cells[1]}  {f['unit']}")
    print(f"\n{'ratio bgjob/peer':58} {'free':>7} {'pinned':>7}  target   met")
    for e in ratios:
        cells = [f"{e[p]:7.3f}" if p in e else f"{'-':>7}" for p in PLACEMENTS]
        met = ""
        if "target" in e:
            met = "/".join(("yes" if e.get(f"met_{p}") else "NO") for p in PLACEMENTS if p in e)
        print(f"{e['name']:58} {cells[0]} {cells[1]}  {e.get('target', ''):8} {met}")
    if any(e["peer"].split(".")[1] == "driver" for e in ratios):
        print("(driver: the peer's mutex read plus the clock read and the elapsed time, percent,\n"
              " rate and time left bgjob's snapshot fills in, done by hand; no target)")

    print(f"\n{'target':58} {'free':>14} {'pinned':>14}  bound")
    by_pair = {(e["bgjob"], e["peer"]): e for e in ratios}
    met_count = total = 0
    target_rows = []
    for b, q, op, bound in TARGETS:
        e = by_pair.get((b, q))
        row = {"bgjob": b, "peer": q, "bound": bound_text(op, bound)}
        for p in PLACEMENTS:
            row[p] = None if e is None or p not in e else {"ratio": e[p], "met": e[f"met_{p}"]}
        target_rows.append(row)
        name = f"{b.split('.')[0]}.{b.split('.', 2)[2]}: {b.split('.')[1]}/{q.split('.')[1]}"
        cells = []
        for p in PLACEMENTS:
            total += 1
            if e is None or p not in e:
                cells.append(f"{'not measured':>14}")
                continue
            met_count += bool(e[f"met_{p}"])
            cells.append(f"{e[p]:6.3f} {'met' if e[f'met_{p}'] else 'NOT met':>7}")
        print(f"{name:58} {cells[0]} {cells[1]}  {bound_text(op, bound)}")
    print(f"targets met: {met_count} of {total} (target x placement)")
    for blk in COPY_BLOCKS:
        f = figures.get(f"copy.bgjob.overhead_pct_{blk}")
        if f:
            cells = "  ".join(f"{p} {f[p]['median']:+.2f}%" for p in PLACEMENTS if p in f)
            print(f"copy loop, progress per {blk} block, bgjob vs none: {cells}")

    os.makedirs("target/bench", exist_ok=True)
    path = "target/bench/smoke.json" if quick else "target/bench/summary.json"
    with open(path, "w") as f:
        json.dump({"machine": machine(), "runs_per_placement": runs, "quick": quick,
                   "placements": {"free": "no affinity",
                                  "pinned": f"taskset -c {os.environ.get('BENCH_CPU', '0')}"},
                   "figures": figures, "ratios": ratios, "targets": target_rows,
                   "targets_met": f"{met_count} of {total}"}, f, indent=1)
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
