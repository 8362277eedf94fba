"""Review of 063191b (outside adversarial test of the Python binding).

Each case failed on 063191b. An OSError's errno that does not fit C's
int32_t gives the job bgjob.EXCEPTION_CODE, wherever it comes from (a worker
raising it, report_io_error, control_failed), never its low bits. The exit cases run a script in a subprocess with
a timeout, so a hang is a failure (subprocess.TimeoutExpired), not a stuck
session."""

from __future__ import annotations

import concurrent.futures
import gc
import signal
import sys
import threading
import time

import pytest

from conftest import run_script

import bgjob



# ------------------------------------------------- numbers cut by ctypes


def test_a_worker_raising_an_oserror_with_errno_past_32_bits_does_not_complete_the_job():
    # _Run._fail passes exc.errno unchecked to bgjob_job_set_error and returns
    # it from the worker callback (c_int32): 2**32 arrives as 0 -- success.
    def worker(w):
        raise OSError(2**32, "boom")

    job = bgjob.start(worker, name="errno-2**32")
    try:
        assert job.wait(30) == bgjob.State.FAILED
        with pytest.raises(OSError):
            job.result()
    finally:
        job.close()


def test_a_worker_oserror_errno_past_32_bits_is_not_reported_as_its_low_bits():
    def worker(w):
        raise OSError(2**32 + 5, "boom")  # not EIO

    job = bgjob.start(worker, name="errno-2**32+5")
    try:
        assert job.wait(30) == bgjob.State.FAILED
        assert job.error is not None and job.error.code != 5
    finally:
        job.exception()
        job.close()


def test_report_io_error_with_an_oserror_errno_past_32_bits_is_not_its_low_bits():
    def worker(w):
        action = w.report_io_error(OSError(2**32 + 5, "x"))  # was reported as 5, EIO
        return f"reported as errno {w.info.error_code}: {action}"

    job = bgjob.start(worker, name="rio")
    try:
        assert job.result(30) == f"reported as errno {bgjob.EXCEPTION_CODE}: report"
    finally:
        job.close()


def test_control_failed_with_an_oserror_errno_past_32_bits_is_not_its_low_bits():
    job = bgjob.Job(None, external=True, name="cf", control=lambda j, what, arg: None)
    try:
        job.pause()
        job.control_failed(bgjob.Control.PAUSE, OSError(2**32 + 22, "refused"))  # was code 22
        assert job.control_error.code == bgjob.EXCEPTION_CODE
    finally:
        job.end(0)
        job.close()


@pytest.mark.parametrize("code", [0.5, -0.9, "5"], ids=["half", "minus-0.9", "str"])
def test_end_with_a_code_that_is_no_int_is_refused_not_cut(code):
    # ctypes itself refuses a float for an int32_t (ArgumentError); _cint's
    # int() cuts it to 0 first, so end(0.5, "failed") COMPLETES the job.
    job = bgjob.Job(None, external=True, name="end-float")
    try:
        with pytest.raises((TypeError, ValueError)):
            job.end(code, "meant as a failure")
        assert job.state == bgjob.State.RUNNING
    finally:
        if not job.done():
            job.end(0)
        job.close()


# ------------------------------------------------- callbacks not callable


def test_spawn_on_line_that_is_not_callable_is_a_type_error_before_anything_runs():
    def worker(w):
        try:
            pid = w.spawn(["true"], stdout="capture", on_line=5)
        except TypeError:
            return "TypeError"
        w.wait_child(pid)
        return "accepted"

    job = bgjob.start(worker, name="on-line")
    try:
        assert job.result(30) == "TypeError"
    finally:
        job.close()


def test_add_cancel_hook_that_is_not_callable_is_a_type_error():
    def worker(w):
        try:
            hook = w.add_cancel_hook(5)
        except TypeError:
            return "TypeError"
        w.remove_cancel_hook(hook)
        return "accepted"

    job = bgjob.start(worker, name="hook")
    try:
        assert job.result(30) == "TypeError"
    finally:
        job.close()


# ------------------------------------------------- exit


def test_a_job_started_while_the_exit_hook_waits_is_cancelled_too(tmp_path):
    # A daemon thread already inside Job() (past the _shutting_down check)
    # when the exit starts: its job starts after the hook took its one list
    # of live jobs, is never cancelled, and the exit waits for it for ever.
    # Every step waits for the one before it (no sleeps): the late thread is
    # held inside Job() until the exit hook has begun, and the job keeping
    # the hook waiting ends only once the late job was made.
    r = run_script(
        tmp_path,
        """
        import os, threading, time
        import bgjob

        inside = threading.Event()           # the late thread is inside Job()
        gate = threading.Event()             # lets it on
        late_made = threading.Event()

        class SlowName(str):
            def encode(self, *a, **k):       # Job() calls it after the shutdown check
                inside.set()
                gate.wait()
                return str(self).encode(*a, **k)

        def honest(w):                       # ends as soon as it is cancelled
            while not w.cancelled:
                time.sleep(0.02)

        def holds_the_exit(w):               # cancelled by the exit hook: it has begun
            while not w.cancelled:
                time.sleep(0.01)
            gate.set()
            late_made.wait(60)

        def late():
            bgjob.Job(honest, name=SlowName("late"))
            os.write(1, b"late job started\\n")
            late_made.set()

        threading.Thread(target=late, daemon=True).start()
        assert inside.wait(60)
        bgjob.start(holds_the_exit, name="holds-the-exit")
        """,
        timeout=120,
    )
    assert "late job started" in r.stdout
    assert r.returncode == 0, r.stderr


def _as_job_starts(act, method=None):
    """Runs ``act`` as ``Job.start`` (or ``method``) is entered: Job() calls
    it after its create, Executor.submit after its Job() -- the unlucky
    moment, forced. Returns the undo."""
    code = (method or bgjob.Job.start).__code__

    def prof(frame, event, arg):
        if event == "call" and frame.f_code is code:
            sys.setprofile(None)
            act()

    sys.setprofile(prof)
    return lambda: sys.setprofile(None)


def _cancel(how, name):
    def act():
        if how == "cancel_all":
            assert bgjob.cancel_all(timeout=5) == []
        else:
            job = next(j for j in bgjob._job._live_jobs() if j.name == name)
            t = threading.Thread(target=job.cancel)
            t.start()
            t.join()

    return act


@pytest.mark.parametrize("where", ["start", "add_stat"])
@pytest.mark.parametrize("how", ["cancel_all", "thread"])
def test_a_job_cancelled_between_its_create_and_its_start_is_made_ended_not_refused(how, where):
    # The exit hook (or cancel_all, or any thread cancelling it by its
    # handle) may reach a Job that another thread is still making: its
    # create has returned, its start has not. A CREATED job's cancel ends
    # it, and Job() then raised NotAllowed from its start (one clean-clone
    # CI run in ~10: test_a_job_started_while_the_exit_hook_waits_is_
    # cancelled_too). It is made, ended CANCELLED, its worker unrun, and
    # its on_complete runs once though nobody keeps the Job (its completion
    # comes later, on a thread of bgjob's: the Job must live until then).
    ran, completed = [], []
    done = threading.Event()

    def on_complete(j):
        completed.append(j.state)
        done.set()

    # The statistic's declaration is the last call before the start.
    method = None if where == "start" else getattr(bgjob.Job, "_add_stat", bgjob.Job.add_stat)
    undo = _as_job_starts(_cancel(how, "between"), method)
    try:
        bgjob.Job(
            lambda w: ran.append(1), name="between", on_complete=on_complete, stats={"n": bgjob.StatType.U64}
        )
    finally:
        undo()
    gc.collect()
    assert done.wait(30), "on_complete never ran"
    assert completed == [bgjob.State.CANCELLED]
    assert ran == []


def test_an_executor_submit_cancelled_before_its_start_gives_a_cancelled_future():
    # Executor.submit makes its Job unstarted, then starts it: a cancel_all
    # between the two made submit raise NotAllowed and left a pending
    # future in the executor for ever.
    with bgjob.Executor(name_prefix="x") as ex:
        undo = _as_job_starts(_cancel("cancel_all", None))
        try:
            fut = ex.submit(lambda: 1)
        finally:
            undo()
        assert fut.cancelled()
        with pytest.raises(concurrent.futures.CancelledError):
            fut.result(30)
        assert "0 running" in repr(ex)


def test_a_failed_start_of_a_job_cancelled_first_leaves_it_unpinned():
    # start=False, a cancel, then start(): refused (the job has ended), and
    # the pin start() took was kept while the state was not CREATED -- the
    # Job lived on in a cycle only a garbage collection frees.
    job = bgjob.Job(lambda w: None, start=False, name="unpinned")
    job.cancel()
    assert job.wait(30) == bgjob.State.CANCELLED
    deadline = time.monotonic() + 30
    while not job._done and time.monotonic() < deadline:
        time.sleep(0.005)
    with pytest.raises(bgjob.NotAllowed):
        job.start()
    assert job._ref.strong is None
    job.close()


@pytest.mark.parametrize("run", range(2))
def test_a_sigterm_handler_exiting_during_the_exit_wait_does_not_abort_the_process(tmp_path, run):
    # The common `signal.signal(SIGTERM, lambda *a: sys.exit(n))`: the
    # SystemExit escapes _at_exit (only KeyboardInterrupt is caught), the
    # interpreter finalizes under the running worker, and the process aborts
    # ("FATAL: exception not rethrown", SIGABRT) -- what the KeyboardInterrupt
    # fix was for.
    r = run_script(
        tmp_path,
        """
        import os, signal, sys, threading, time
        import bgjob

        signal.signal(signal.SIGTERM, lambda *a: sys.exit(3))

        def stubborn(w):
            for _ in range(300):
                time.sleep(0.01)             # ignores cancel, keeps entering Python

        bgjob.start(stubborn, name="stubborn")

        def term():                          # once the exit hook waits
            bgjob._job._exit_began.wait(60)
            time.sleep(0.1)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=term, daemon=True).start()
        """,
        timeout=20,
    )
    assert "FATAL" not in r.stderr
    assert r.returncode != -signal.SIGABRT, r.stderr


def test_the_exit_timeout_bounds_an_end_waiting_for_a_control_call_in_flight(tmp_path):
    # set_exit_timeout(1): the deadline is taken only after the cancels and
    # ends, and the hook's end() of an external job waits for a control call
    # running on another thread (a daemon's pause forwarded synchronously to an
    # owner that never answers): the exit waits for ever, timeout or not.
    r = run_script(
        tmp_path,
        """
        import threading, time
        import bgjob

        bgjob.set_exit_timeout(1)
        never = threading.Event()

        in_pause = threading.Event()

        def control(job, what, arg):
            if what == bgjob.Control.PAUSE:
                in_pause.set()
                never.wait()                 # the owner's loop is gone

        job = bgjob.Job(None, external=True, name="ext", control=control)
        threading.Thread(target=job.pause, daemon=True).start()
        assert in_pause.wait(60)             # the control call is in flight
        """,
        timeout=60,
    )
    # Python's main thread cannot run while the end waits in C: bgjob's exit
    # watchdog (a daemon thread started by set_exit_timeout) ends it.
    assert r.returncode == 1
    assert "exit timeout" in r.stderr


# The reviewer's forced case for a thread switch right after the last free
# (a `_tracked` whose `discard` slept) no longer applies: `_free` deletes the
# key with an opcode, not a call, and CPython hands the GIL over only at a
# call's or a loop's eval-breaker check, so nothing can be forced there from
# Python. Unforced, the reviewer saw it once in ~220 runs before the change.


# ------------------------------------------------- cancel_all from a worker


def test_cancel_all_from_a_worker_does_not_raise_not_allowed():
    # cancel_all cancels every live job -- the caller's own included -- and
    # then job.wait()s each: on its own job that is now NotAllowed, which
    # cancel_all does not expect, so it raises (and stops waiting for the
    # jobs after it in its list).
    def other(w):
        while True:
            w.sleep(0.05)

    def supervisor(w):
        try:
            left = bgjob.cancel_all(10)
        except bgjob.NotAllowed as e:
            return f"NotAllowed: {e}"
        return [j.name for j in left]

    o = bgjob.start(other, name="other")
    s = bgjob.start(supervisor, name="supervisor")
    try:
        out = s.result(30)
        assert isinstance(out, list), out
    finally:
        o.close()
        s.close()
