"""Interpreter shutdown with live jobs, and the demo (run as users run it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from conftest import LONG


def run_script(tmp_path, code: str, env_extra=None, timeout=LONG * 2):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_exit_cancels_and_waits_for_live_jobs(tmp_path):
    marker = tmp_path / "marker"
    r = run_script(
        tmp_path,
        f"""
        import threading, bgjob
        started = threading.Event()

        def work(w, path):
            started.set()
            try:
                w.sleep(3600)
            except bgjob.Cancelled:
                w.phase = "cleaning up"
                with open(path, "w") as f:
                    f.write("cleaned up after cancel")
                raise

        job = bgjob.start(work, {str(marker)!r}, name="left-running")
        forgotten = bgjob.start(work, {str(marker) + '2'!r}, on_complete=lambda j: print("completed", j.state))
        del forgotten
        started.wait()
        print("exiting with jobs running")
        """,
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    # The at-exit hook cancelled both jobs and waited for their workers to
    # clean up before the interpreter went away.
    assert marker.read_text() == "cleaned up after cancel"
    assert (tmp_path / "marker2").read_text() == "cleaned up after cancel"
    assert "exiting with jobs running" in r.stdout
    assert "completed cancelled" in r.stdout


def test_exit_races_completions_on_job_threads(tmp_path):
    # Thirty running jobs whose completions run Python on their own threads as
    # the interpreter exits, with thread switches forced as often as possible:
    # the exit must wait until no bgjob thread is in Python (a thread taking
    # the GIL during finalization would be killed inside bgjob's frames).
    code = """
        import sys, bgjob
        sys.setswitchinterval(1e-6)
        jobs = [bgjob.start(lambda w: w.sleep(3600), on_complete=lambda j: sum(range(5000)))
                for _ in range(30)]
        never = [bgjob.Job(lambda w: None, start=False, on_complete=lambda j: sum(range(5000)))
                 for _ in range(30)]
        """
    for _ in range(5):
        r = run_script(tmp_path, code)
        assert (r.returncode, r.stderr) == (0, "")


def test_exit_with_unclosed_objects_is_quiet(tmp_path):
    r = run_script(
        tmp_path,
        """
        import asyncio, bgjob
        lines = []
        bgjob.set_log_callback(lines.append)
        ctx = bgjob.Context()
        queued = bgjob.start(lambda w: "queued", context=ctx, on_complete=print)
        queued.wait()
        done = bgjob.start(lambda w: [1, 2, 3])
        done.wait()
        never_started = bgjob.Job(lambda w: print("must not run"), start=False)

        async def main():
            return bgjob.start(lambda w: w.sleep(3600))

        pending_in_loop = asyncio.run(main())
        print("bye", len(lines) > 0, ctx.pending)
        """,
        env_extra={"PYTHONDEVMODE": "1"},
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == "bye True 1\n"
    assert r.stderr == ""


def test_no_new_jobs_once_shutting_down(tmp_path):
    r = run_script(
        tmp_path,
        """
        import atexit

        def late():  # registered first, so it runs after bgjob's at-exit hook
            import bgjob
            try:
                bgjob.start(lambda w: None)
            except RuntimeError as e:
                print("refused:", e)

        atexit.register(late)
        import bgjob
        """,
    )
    assert r.returncode == 0, r.stderr
    assert "refused: bgjob: the interpreter is shutting down" in r.stdout


def demo(tmp_path, **env):
    env = dict(os.environ, BGJOB_DEMO_MIB="8", BGJOB_DEMO_SPEED="8", **env)
    return subprocess.Popen(
        [sys.executable, "-m", "bgjob.demo", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_demo_runs(tmp_path):
    p = demo(tmp_path)
    out, err = p.communicate(timeout=LONG * 2)
    assert p.returncode == 0, out + err
    assert out.count("copy verified") == 3
    assert "vm-charlie: cancel -> requested" in out
    assert "vm-charlie cancelled" in out and "partial copy removed" in out
    assert "vm-bravo: paused at" in out and "vm-bravo: resumed" in out
    assert "FAIL" not in out
    assert not (tmp_path / "vm-charlie-copy.img").exists()


def test_demo_ctrl_c_cancels_every_job(tmp_path):
    p = demo(tmp_path)
    for line in p.stdout:
        if "vm-bravo: paused at" in line:
            break
    else:
        pytest.fail("the demo ended before its pause")
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=LONG * 2)
    assert p.returncode == 130, out + err
    assert "interrupted: cancelling every job" in out
    results = out.split("results after")[1]
    cancelled = [n for n in ("vm-alpha", "vm-bravo", "vm-charlie", "vm-delta") if f"{n:<10} cancelled" in results]
    assert "vm-bravo" in cancelled  # it was paused when Ctrl-C came
    for name in cancelled:
        assert not (tmp_path / f"{name}-copy.img").exists()
    assert results.count("partial copy removed") == len(cancelled)
