"""Shared fixtures. Every test must leave nothing behind: after each one, once
its objects are collected, bgjob has freed every userdata the binding gave it
(the binding's keep-alive table is empty) and no job it made is still listed."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import bgjob
from bgjob import _job

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

# A hang guard for waits that must end: generous, never a timing assertion.
LONG = 60.0


def run_script(tmp_path, code: str, timeout: float = LONG * 2, env_extra=None) -> subprocess.CompletedProcess[str]:
    """Runs ``code`` (dedented) as a script of its own under this Python, in
    ``tmp_path``: what a program does at its exit is seen from outside, and a
    hang is a ``subprocess.TimeoutExpired`` after ``timeout``, not a stuck
    suite."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout
    )


#: The binding's functions a wait on the main thread sleeps in.
_WAITS = ("_wait_sliced", "_wait_some")


def sigint_once_main_waits() -> threading.Thread:
    """Sends this process SIGINT once the main thread is inside one of the
    binding's waits -- not after a fixed delay, which a slow machine can
    outrun (the signal then lands before the wait, outside the test's
    ``pytest.raises``). Gives up after ``LONG``."""
    import signal

    main = threading.main_thread().ident

    def waiting() -> bool:
        frame = sys._current_frames().get(main)
        while frame is not None:
            if frame.f_code.co_name in _WAITS and frame.f_code.co_filename == _job.__file__:
                return True
            frame = frame.f_back
        return False

    def run() -> None:
        deadline = time.monotonic() + LONG
        while not waiting():
            if time.monotonic() > deadline:
                return
            time.sleep(0.005)
        os.kill(os.getpid(), signal.SIGINT)

    t = threading.Thread(target=run, name="sigint-once-main-waits", daemon=True)
    t.start()
    return t


def eventually(cond, what: str, limit: float = LONG) -> None:
    """Polls ``cond()`` until true; fails (instead of hanging) after ``limit``."""
    deadline = time.monotonic() + limit
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.005)


@pytest.fixture(autouse=True)
def nothing_left_behind():
    before = {e.id for e in bgjob.list_jobs()}
    yield
    gc.collect()

    def drained():
        gc.collect()
        return not _job._keep and not _job._tracked

    eventually(drained, f"bgjob freed every userdata; left: {list(_job._keep.values())}")

    # A job whose handle is gone is freed when its worker thread drops its
    # last reference, a moment after the test's own wait returned. A Job
    # destroys its handle when it is collected, and the empty table above
    # does not say every reference to it is gone: a bgjob thread may let go
    # of the last one that kept it out of reach of the collector (a frame or
    # traceback of its call) after its last free. So this wait collects too.
    def left():
        gc.collect()
        return [e for e in bgjob.list_jobs() if e.id not in before]

    eventually(lambda: not left(), f"no job left behind; left: {left()}")


@pytest.fixture
def gate():
    """An event the test sets to let its workers finish (set on teardown too)."""
    ev = threading.Event()
    yield ev
    ev.set()
