"""Interpreter shutdown with live jobs, and the demo (run as users run it)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest
from conftest import LONG, run_script



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
    # Dev mode's asyncio reports any step over 0.1 s ("Executing <Task...>
    # took 0.113 seconds"): a loaded machine's speed, not bgjob's noise.
    slow = re.compile(r"^Executing <.*> took \d+\.\d+ seconds$")
    assert [line for line in r.stderr.splitlines() if not slow.match(line)] == []


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
    # vm-bravo stays paused until the Ctrl-C comes, however slow the machine.
    p = demo(tmp_path, BGJOB_DEMO_PAUSE_S="600")
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


def test_bookkeeping_survives_a_thread_switch_anywhere(tmp_path):
    # A regression test: the exit hook waits until bgjob has freed every
    # userdata the binding handed it. The binding's count of them was a
    # global `+= 1` / `-= 1`, which a thread switch can split (seen on 3.9):
    # one lost update and the exit waited forever. Here the creating thread
    # is stopped at every bytecode of the binding's bookkeeping while another
    # job's thread frees its userdata; the process must still exit.
    code = """
        import sys, threading, time, bgjob
        from bgjob import _job

        N = 100
        gates = [threading.Event() for _ in range(N)]
        idents = [None] * N
        started = threading.Semaphore(0)

        def work(w, i):
            idents[i] = threading.get_ident()
            started.release()
            gates[i].wait(60)

        jobs = [bgjob.start(work, i, name=f"gate-{i}") for i in range(N)]
        for _ in range(N):
            assert started.acquire(timeout=60)
        pending = list(range(N))

        def in_binding(ident):
            frame = sys._current_frames().get(ident)
            while frame is not None:
                if frame.f_code.co_filename == _job.__file__:
                    return True
                frame = frame.f_back
            return False

        def release_one():
            # Lets one job end, and waits until its thread has freed the
            # job's completion userdata and left Python.
            i = pending.pop()
            ref = jobs[i]._ref
            gates[i].set()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                freed = not any(obj is ref for obj, _ in list(_job._keep.values()))
                if freed and not in_binding(idents[i]):
                    return
                time.sleep(0.001)

        switches = 0

        def per_opcode(frame, event, arg):
            global switches
            if event == "opcode" and pending:
                switches += 1
                release_one()
            return per_opcode

        def tracer(frame, event, arg):
            if frame.f_code.co_filename == _job.__file__ and frame.f_code.co_name in ("_hold", "_free_cb"):
                frame.f_trace_opcodes = True
                return per_opcode
            return None

        # (3.12+ gives opcode events only once some frame asked for them
        # before tracing started.)
        sys._getframe().f_trace_opcodes = True
        sys.settrace(tracer)
        traced = bgjob.start(lambda w: "traced", name="traced")
        sys.settrace(None)
        assert traced.wait(60) == bgjob.State.COMPLETED
        for g in gates:
            g.set()
        for j in jobs:
            j.wait(60)
        print("switches", switches > 0, flush=True)
        """
    r = run_script(tmp_path, code, timeout=LONG)
    assert r.stdout == "switches True\n", r.stderr
    assert (r.returncode, r.stderr) == (0, "")


def test_fork_child_exits_while_the_parent_has_jobs_running(tmp_path):
    # A regression test: the child inherited the parent's count of outstanding
    # userdata, which its own exit hook then waited on forever.
    r = run_script(
        tmp_path,
        """
        import os, sys, time, warnings, bgjob
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
        running = [bgjob.start(lambda w: w.sleep(3600), name=f"parent-{i}") for i in range(3)]
        pid = os.fork()
        if pid == 0:
            own = bgjob.start(lambda w: "child's own job")
            print("child:", own.wait(30), own.result(), flush=True)
            sys.exit(0)  # a normal exit: the at-exit hooks run
        deadline = time.monotonic() + 30
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                print("child exit code", os.waitstatus_to_exitcode(status), flush=True)
                break
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                print("child hung at exit", flush=True)
                break
            time.sleep(0.01)
        """,
        timeout=LONG,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == "child: completed child's own job\nchild exit code 0\n", r.stderr


def test_exit_timeout_bounds_the_wait_for_a_worker_that_ignores_cancel(tmp_path):
    # A regression test: at exit bgjob cancels every job and waits for its
    # worker, as ThreadPoolExecutor waits for its threads; a worker that never
    # checks for cancel kept the process alive for as long as it ran. With an
    # exit timeout the wait is bounded: the process then says which jobs were
    # still running and ends.
    r = run_script(
        tmp_path,
        """
        import threading, time, bgjob
        started = threading.Event()

        def stubborn(w):
            started.set()
            while True:          # never checks for cancel
                time.sleep(0.01)

        job = bgjob.start(stubborn, name="stubborn")
        started.wait()
        bgjob.set_exit_timeout(0.2)
        print("exiting", flush=True)
        """,
        timeout=LONG,
    )
    assert r.stdout == "exiting\n", r.stderr
    assert r.returncode == 1
    assert "bgjob: exit timeout (0.2 s) expired" in r.stderr
    assert "'stubborn'" in r.stderr


def test_cancel_all_waits_a_bounded_time(tmp_path):
    r = run_script(
        tmp_path,
        """
        import threading, time, bgjob
        started = threading.Event()
        stop = threading.Event()

        def stubborn(w):
            started.set()
            while not stop.is_set():   # never checks for cancel
                time.sleep(0.01)

        polite = bgjob.start(lambda w: w.sleep(3600), name="polite")
        job = bgjob.start(stubborn, name="stubborn")
        started.wait()
        left = bgjob.cancel_all(timeout=3)   # polite ends well within it
        print("left", [j.name for j in left], polite.state, flush=True)
        stop.set()
        print("then", bgjob.cancel_all(), job.state, flush=True)
        """,
        timeout=LONG,
    )
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout == "left ['stubborn'] cancelled\nthen [] completed\n"
