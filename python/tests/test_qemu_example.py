"""python/examples/qemu_blockjobs.py against a real qemu-storage-daemon: it
checks itself (exit 0 only when every step behaved, 77 when QEMU's tools are
missing); here it is run whole, with each progress display, and interrupted
mid-run, and no daemon may be left behind either way."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import LONG

EXAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples", "qemu_blockjobs.py")
SKIP = 77


def alive(pid: int) -> bool:
    """Whether the pid runs (a zombie of an init that does not reap counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def daemon_pid(out: str) -> int:
    m = re.search(r"daemon pid (\d+)", out)
    assert m, out
    return int(m.group(1))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [sys.executable, EXAMPLE, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=LONG
    )
    if r.returncode == SKIP:
        pytest.skip(r.stdout.strip().splitlines()[-1])
    return r


def importable(mod: str) -> bool:
    try:
        __import__(mod)
        return True
    except ImportError:
        return False


@pytest.mark.parametrize("display", ["plain", "tqdm", "rich"])
def test_steps_1_to_3_behave(display: str) -> None:
    if display != "plain" and not importable(display):
        pytest.skip(f"{display} is not installed here (the plain display is tested)")
    r = run("--display", display)
    assert r.returncode == 0, r.stdout
    out = r.stdout
    for step in ("1 mirror", "2 mirror cancelled", "3 EIO", "3b ENOSPC"):
        assert re.search(rf"^  {step}.*: ok in", out, re.M), out
    assert "qemu-img compare: Images are identical." in out
    assert "m3   stopped: bgjob paused, iostatus FAILED" in out
    assert "m3b  stopped: bgjob paused, iostatus NOSPACE" in out
    assert "no daemon left: yes" in out
    assert not alive(daemon_pid(out))


def test_interrupted_run_leaves_no_daemon() -> None:
    p = subprocess.Popen(
        [sys.executable, EXAMPLE, "--display", "plain"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert p.stdout is not None
    lines = []
    try:
        for line in p.stdout:
            lines.append(line)
            if line.startswith("SKIPPED"):
                p.wait(LONG)
                pytest.skip(line.strip())
            if line.startswith("step 1"):
                break
        pid = daemon_pid("".join(lines))
        assert alive(pid)
        p.send_signal(signal.SIGTERM)
        rest, _ = p.communicate(timeout=LONG)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    out = "".join(lines) + rest
    assert p.returncode == 130, out
    assert "interrupted" in out
    deadline = time.monotonic() + LONG
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not alive(pid), out
