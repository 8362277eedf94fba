"""python -m bgjob.demo [DIR]: the Python twin of examples/demo.c.

Four background jobs copy disk images (real files, 1 MiB blocks, fsync every
16 MiB and at the end) while the main thread draws live progress bars from
``job.info`` and plays a scenario:

  - vm-bravo is paused for a second and a half once it is a quarter done, then
    resumed (its bar shows it PAUSED, its rate and ETA standing still);
  - vm-charlie is cancelled halfway: its worker removes its partial copy (phase
    "cleaning up") and lets ``Cancelled`` end the job CANCELLED;
  - vm-alpha and vm-delta run to completion; each returns the SHA-256 of what it
    wrote, which the demo checks against the source.

Completions come through a ``bgjob.Context`` whose fd the main loop watches
with ``select``, so every ``on_complete`` runs on the main thread. Ctrl-C
cancels every job; the workers clean up and the demo exits 130.

Without DIR the files go to a temporary directory, removed at the end.
Environment: BGJOB_DEMO_MIB (size of each image, default 32),
BGJOB_DEMO_SPEED (MiB/s per job, default 8; 0 = as fast as the disk goes) and
BGJOB_DEMO_PAUSE_S (how long vm-bravo stays paused, default 1.5).
"""

from __future__ import annotations

import hashlib
import os
import select
import sys
import tempfile
import time
from typing import Any

import bgjob

MIB = 1 << 20
SYNC_EVERY = 16 * MIB
NAMES = ("vm-alpha", "vm-bravo", "vm-charlie", "vm-delta")
PAUSE_JOB, PAUSE_AT = "vm-bravo", 25
CANCEL_JOB, CANCEL_AT = "vm-charlie", 50


def copy_image(w: bgjob.Worker, src: str, dst: str, speed: int) -> str:
    """The worker: copies src to dst, returns the copy's SHA-256."""
    size = os.path.getsize(src)
    w.set_total(size)
    w.phase = "copying"
    digest = hashlib.sha256()
    done = synced = 0
    try:
        with open(src, "rb") as fin, open(dst, "wb") as fout:
            while block := fin.read(MIB):
                fout.write(block)
                digest.update(block)
                done += len(block)
                if done - synced >= SYNC_EVERY:
                    fout.flush()
                    os.fdatasync(fout.fileno())
                    synced = done
                w.add(len(block))  # progress; parks here while paused
                w.check_cancel()
                if speed:
                    # Keep to the speed limit, in active time (a pause is not
                    # made up afterwards), with the cancellable sleep.
                    ahead = done / speed - w.info.elapsed
                    if ahead > 0:
                        w.sleep(ahead)
            w.phase = "syncing"
            fout.flush()
            os.fsync(fout.fileno())
    except bgjob.Cancelled:
        w.phase = "cleaning up"
        if os.path.exists(dst):
            os.unlink(dst)
        w.phase = "cleaned up"
        raise
    w.phase = "done"
    return digest.hexdigest()


def make_source(path: str, mib: int) -> str:
    """Writes an image of ``mib`` MiB of varied data; returns its SHA-256."""
    digest = hashlib.sha256()
    seed = os.urandom(MIB)
    with open(path, "wb") as f:
        for i in range(mib):
            block = i.to_bytes(8, "little") + seed[8:]
            f.write(block)
            digest.update(block)
        f.flush()
        os.fsync(f.fileno())
    return digest.hexdigest()


def fmt_time(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds:.1f}s"


def bar_line(name: str, job: bgjob.Job[Any]) -> str:
    info = job.info
    pct = info.percent if info.percent is not None else 0
    filled = pct * 24 // 100
    bar = "#" * filled + "." * (24 - filled)
    rate = f"{info.rate / MIB:5.1f} MiB/s" if info.rate is not None else "    ? MiB/s"
    total = (info.total or 0) / MIB
    pct_s = f"{info.percent:3d}%" if info.percent is not None else "  ?%"
    return (
        f"{name:<10} {str(info.state):<9} [{bar}] {pct_s} {info.current / MIB:5.1f}/{total:.0f} MiB"
        f" {rate} ETA {fmt_time(info.remaining):<6} {job.phase}"
    )


class Screen:
    """Live lines: redrawn in place on a terminal, one line per job a second otherwise."""

    def __init__(self, t0: float):
        self.tty = sys.stdout.isatty()
        self.drawn = 0
        self.t0 = t0
        self.last_plain = 0.0
        self.last_lines: list[str] = []

    def event(self, text: str) -> None:
        if self.tty and self.drawn:
            sys.stdout.write(f"\033[{self.drawn}A\r\033[J")
            self.drawn = 0
        print(f"[{time.monotonic() - self.t0:5.1f}s] {text}", flush=True)

    def draw(self, lines: list[str], force: bool = False) -> None:
        now = time.monotonic()
        if self.tty:
            if self.drawn:
                sys.stdout.write(f"\033[{self.drawn}A")
            for line in lines:
                sys.stdout.write(f"\r\033[2K  {line}\n")
            self.drawn = len(lines)
            sys.stdout.flush()
        elif (force and lines != self.last_lines) or now - self.last_plain >= 1.0:
            self.last_plain = now
            self.last_lines = lines
            for line in lines:
                print(f"[{now - self.t0:5.1f}s]   {line}")
            sys.stdout.flush()


def run(directory: str) -> int:
    mib = int(os.environ.get("BGJOB_DEMO_MIB", "32"))
    speed = int(os.environ.get("BGJOB_DEMO_SPEED", "8")) * MIB
    pause_for = float(os.environ.get("BGJOB_DEMO_PAUSE_S", "1.5"))
    limit = f"at most {speed // MIB} MiB/s" if speed else "no speed limit"
    print(
        f"bgjob {bgjob.version()} Python demo (library {bgjob.LIBRARY}):\n"
        f"{len(NAMES)} jobs in {directory}; each copies a {mib} MiB image ({limit})"
    )
    sources = {}
    for name in NAMES:
        src = os.path.join(directory, f"{name}.img")
        sources[name] = (src, make_source(src, mib), os.path.join(directory, f"{name}-copy.img"))

    t0 = time.monotonic()
    screen = Screen(t0)
    outcomes: dict[str, str] = {}

    def on_complete(job: bgjob.Job[Any]) -> None:  # runs here, from ctx.dispatch()
        outcomes[job.name] = str(job.state)
        screen.event(f"{job.name}: {job.state} ({job.phase})")

    ctx = bgjob.Context()
    jobs = {
        name: bgjob.start(
            copy_image, src, dst, speed, name=name, context=ctx, on_complete=on_complete
        )
        for name, (src, _, dst) in sources.items()
    }
    paused_at = None
    paused_seen = cancelled_seen = False
    interrupted = False
    try:
        while len(outcomes) < len(jobs):
            ready, _, _ = select.select([ctx], [], [], 0.1)
            if ready:
                ctx.dispatch()
            pause_job, cancel_job = jobs[PAUSE_JOB], jobs[CANCEL_JOB]
            pct = pause_job.info.percent or 0
            if paused_at is None and not paused_seen and pct >= PAUSE_AT:
                try:
                    pause_job.pause()
                    paused_at = time.monotonic()
                    screen.event(f"{PAUSE_JOB}: paused at {pct}% for {pause_for} s")
                except bgjob.NotAllowed:
                    paused_seen = True  # it ended first; reported below
            elif paused_at is not None and time.monotonic() - paused_at >= pause_for:
                pause_job.resume()
                paused_at, paused_seen = None, True
                screen.event(f"{PAUSE_JOB}: resumed")
            if not cancelled_seen and (cancel_job.info.percent or 0) >= CANCEL_AT:
                status = cancel_job.cancel()
                cancelled_seen = True
                screen.event(f"{CANCEL_JOB}: cancel -> {status.name.lower()}")
            screen.draw([bar_line(n, j) for n, j in jobs.items()])
    except KeyboardInterrupt:
        interrupted = True
        screen.event("interrupted: cancelling every job")
        for job in jobs.values():
            job.cancel()
        for job in jobs.values():
            job.wait()
    screen.draw([bar_line(n, j) for n, j in jobs.items()], force=True)

    ok = not interrupted
    print(f"\nresults after {time.monotonic() - t0:.1f} s:")
    for name, job in jobs.items():
        src, src_sum, dst = sources[name]
        info = job.info
        line = f"  {name:<10} {str(info.state):<9} after {info.elapsed:.1f} s active"
        if job.error:
            line += f", error {job.error.code}: {job.error.message}"
        print(line)
        want = bgjob.State.CANCELLED if name == CANCEL_JOB else bgjob.State.COMPLETED
        if not interrupted and info.state != want:
            print(f"    FAIL: expected {want}")
            ok = False
        if info.state == bgjob.State.COMPLETED:
            if job.result() == src_sum:
                print(f"    copy verified: {mib} MiB, sha256 {src_sum[:16]}... matches the source")
            else:
                print("    FAIL: the copy's checksum differs from the source's")
                ok = False
        elif os.path.exists(dst):
            print("    FAIL: partial copy LEFT BEHIND")
            ok = False
        else:
            print("    partial copy removed")
        if name == PAUSE_JOB and not interrupted and not paused_seen:
            print("    FAIL: never paused")
            ok = False
        job.close()
    ctx.close()
    return 0 if ok else (130 if interrupted else 1)


def main(argv: list[str]) -> int:
    if len(argv) > 2:
        print("usage: python -m bgjob.demo [DIR]", file=sys.stderr)
        return 2
    if len(argv) == 2:
        if not os.path.isdir(argv[1]):
            print(f"demo: {argv[1]} is not a directory", file=sys.stderr)
            return 2
        return run(argv[1])
    with tempfile.TemporaryDirectory(prefix="bgjob-demo.") as d:
        return run(d)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
