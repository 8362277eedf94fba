"""Promises an outside attack on the binding broke (written from the docs
alone): the exit that waited for ever on a job no thread would end, Ctrl-C
during that wait aborting the process, waits on a job from its own worker,
numbers ctypes cut to 32 bits, text C cut at a NUL, a done callback run on a
closed job. Each case failed on the binding before its fix, except the one
that checks an owner ending its job on cancel keeps its own outcome at exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest
from conftest import LONG, run_script

import bgjob



# ---------------------------------------------------------------- exit


@pytest.mark.parametrize("control", [False, True], ids=["plain", "with_control"])
def test_exit_ends_an_external_job_its_owner_never_ended(tmp_path, control):
    # No thread will ever end this job: its owner is the main thread, which
    # is exiting. The exit waited for its completion for ever (a timeout
    # kills the script here); now the job is cancelled, told through its
    # control callable, and ended at exit as its owner's end() would.
    r = run_script(
        tmp_path,
        f"""
        import bgjob
        told = []
        job = bgjob.Job(
            None, external=True, name="owned-by-main",
            control=(lambda j, what, arg: told.append(what)) if {control} else None,
            on_complete=lambda j: print("completed", j.state, told),
        )
        print("exiting", job.state)
        """,
    )
    assert (r.returncode, r.stderr) == (0, "")
    assert "exiting running" in r.stdout
    want = "[<Control.CANCEL: 0>]" if control else "[]"
    assert f"completed cancelled {want}" in r.stdout


def test_exit_ends_an_external_job_left_pending_and_aborts_it(tmp_path):
    r = run_script(
        tmp_path,
        """
        import bgjob
        job = bgjob.Job(None, external=True, name="pending", manual_finalize=True,
                        on_abort=lambda j: print("aborted"), on_commit=lambda j: print("committed"),
                        on_complete=lambda j: print("completed", j.state))
        job.report_state(bgjob.State.PENDING)
        print("exiting", job.state)
        """,
    )
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout.split() == ["exiting", "pending", "aborted", "completed", "cancelled"]


def test_exit_does_not_end_an_external_job_whose_owner_ends_it_on_cancel(tmp_path):
    # The owner's own end() inside its control callable wins: its code and
    # message are the job's, not the exit's.
    r = run_script(
        tmp_path,
        """
        import bgjob
        def control(job, what, arg):
            if what == bgjob.Control.CANCEL:
                job.end(-125, "owner stopped it")
        job = bgjob.Job(None, external=True, control=control,
                        on_complete=lambda j: print("completed", j.state, j.error.message))
        """,
    )
    assert (r.returncode, r.stderr) == (0, "")
    assert "completed cancelled owner stopped it" in r.stdout


def test_ctrl_c_during_the_exit_wait_ends_the_process_as_ctrl_c_does(tmp_path):
    # A worker that never checks for cancel keeps the exit waiting; Ctrl-C
    # then used to return from the exit hook and let the interpreter finalize
    # under the running worker: the process aborted ("FATAL: exception not
    # rethrown", SIGABRT). Now it names the job and ends killed by SIGINT,
    # as CPython does on an uncaught KeyboardInterrupt.
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            import time, bgjob
            def stubborn(w):
                while True:
                    time.sleep(0.005)
            job = bgjob.start(stubborn, name="stubborn")
            print("exiting", flush=True)
            """
        )
    )
    p = subprocess.Popen(
        [sys.executable, str(script)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert p.stdout is not None
        assert p.stdout.readline() == "exiting\n"
        # The hook is in its wait once the main module has finished. The
        # signal is sent until the process ends: one that lands before the
        # hook began interrupts the script's last lines instead, and a later
        # one the hook's wait.
        for _ in range(int(LONG / 0.2)):
            p.send_signal(signal.SIGINT)
            try:
                p.wait(0.2)
                break
            except subprocess.TimeoutExpired:
                pass
        out, err = p.communicate(timeout=LONG)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == -signal.SIGINT, err
    assert "FATAL" not in err
    assert "interrupted while waiting at exit for 1 job(s) still running: 'stubborn'" in err


# ---------------------------------------------------------------- own-job waits


def test_waiting_for_a_job_from_its_own_worker_is_refused_not_a_hang():
    seen = {}

    def work(w):
        me = holder["job"]
        for name, call in (
            ("wait", lambda: bgjob.wait([me])),
            ("wait_first", lambda: bgjob.wait([me], return_when=bgjob.FIRST_COMPLETED)),
            ("as_completed", lambda: list(bgjob.as_completed([me]))),
            ("Job.wait", lambda: me.wait()),
            ("JobHandle.wait", lambda: handle.wait()),
        ):
            try:
                call()
                seen[name] = "returned"
            except bgjob.NotAllowed:
                seen[name] = "NotAllowed"

    holder: dict = {}
    gate = threading.Event()
    job = bgjob.Job(lambda w: (gate.wait(LONG), work(w)), start=False, name="self-waiter")
    holder["job"] = job
    with job, job.ref() as handle:
        job.start()
        gate.set()
        job.result(LONG)
    assert seen == dict.fromkeys(("wait", "wait_first", "as_completed", "Job.wait", "JobHandle.wait"), "NotAllowed")


def test_a_job_handles_wait_on_the_main_thread_is_cut_into_slices_for_ctrl_c(tmp_path):
    # JobHandle.wait was one blocking C wait: Ctrl-C (SIGINT) on the main
    # thread was not handled until the job ended. A timer sends SIGINT to the
    # process while the main thread waits on a job that never ends by itself.
    r = run_script(
        tmp_path,
        """
        import os, signal, sys, threading, time, bgjob
        job = bgjob.start(lambda w: w.sleep(3600), name="long")
        main = threading.main_thread().ident
        def sigint_once_main_waits():
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                frame = sys._current_frames().get(main)
                while frame is not None and frame.f_code.co_name != "_wait_sliced":
                    frame = frame.f_back
                if frame is not None:
                    os.kill(os.getpid(), signal.SIGINT)
                    return
                time.sleep(0.005)
        threading.Thread(target=sigint_once_main_waits, daemon=True).start()
        with job.ref() as h:
            try:
                h.wait()
                print("wait returned")
            except KeyboardInterrupt:
                print("interrupted", h.state)
        job.cancel()
        """,
    )
    assert (r.returncode, r.stderr) == (0, "")
    assert r.stdout.strip() == "interrupted running"


# ---------------------------------------------------------------- numbers past the C type


@pytest.mark.parametrize("code", [2**32, 2**31, -(2**31) - 1, 2**64])
def test_end_with_a_code_past_32_bits_is_refused_and_the_job_runs_on(code):
    job = bgjob.Job(None, external=True)
    with job:
        with pytest.raises(bgjob.InvalidArgument):
            job.end(code)  # 2**32 was cut to 0: the job COMPLETED
        assert job.state == bgjob.State.RUNNING
        job.end(5, "real failure")
        assert job.wait(LONG) == bgjob.State.FAILED


def test_enum_arguments_past_32_bits_are_refused():
    job = bgjob.Job(None, external=True, control=lambda j, w, a: None)
    with job:
        big = 2**32 + int(bgjob.State.PENDING)
        with pytest.raises(bgjob.InvalidArgument):
            job.report_state(big)  # was read as PENDING
        assert job.state == bgjob.State.RUNNING
        with pytest.raises(bgjob.InvalidArgument):
            bgjob.verb_allowed(2**32 + int(bgjob.Verb.CANCEL), bgjob.State.RUNNING)
        with pytest.raises(bgjob.InvalidArgument):
            job.wait_state(2**32 + int(bgjob.State.RUNNING), 0)
        job.pause()
        with pytest.raises(bgjob.InvalidArgument):
            job.control_failed(2**32 + int(bgjob.Control.PAUSE), 5)
        with pytest.raises(bgjob.InvalidArgument):
            job.control_failed(bgjob.Control.PAUSE, 2**32 + 5)
        assert job.control_error is None
        with pytest.raises(bgjob.InvalidArgument):
            job.set_error_policy(2**32)
        with pytest.raises(bgjob.InvalidArgument):
            job.driver.report_io_error(2**32 + 5)
        assert job.state == bgjob.State.PAUSED
        job.end(0)
    assert bgjob._errors.result_str(2**32) == "unknown result"


def test_a_stack_size_or_dispatch_limit_past_the_c_type_is_refused():
    with pytest.raises(bgjob.InvalidArgument):
        bgjob.Job(lambda w: None, stack_size=2**64 + 65536)  # was cut to 65536
    with bgjob.Context() as ctx:
        with pytest.raises(bgjob.InvalidArgument):
            ctx.dispatch(-1)  # was read as SIZE_MAX
        assert ctx.dispatch(0) == 0


def test_a_wait_fd_fd_past_32_bits_is_refused():
    r, w = os.pipe()
    try:
        os.write(w, b"x")

        def work(wk):
            with pytest.raises(bgjob.InvalidArgument):
                wk.wait_fd(2**32 + r, timeout=LONG)  # was fd r: it returned readable
            with pytest.raises(bgjob.InvalidArgument):
                wk.wait_fd(r, events=2**32 + bgjob.FD_READABLE, timeout=LONG)
            return wk.wait_fd(r, timeout=LONG)

        with bgjob.start(work) as job:
            assert job.result(LONG) == bgjob.FD_READABLE
    finally:
        os.close(r)
        os.close(w)


# ---------------------------------------------------------------- text with a NUL


def test_text_with_a_nul_is_refused_not_cut():
    with pytest.raises(bgjob.InvalidArgument):
        bgjob.Job(lambda w: None, name="vm1\0-hidden")
    with pytest.raises(bgjob.InvalidArgument):
        bgjob.Job(lambda w: None, operation="save\0x")
    with pytest.raises(TypeError):
        bgjob.Job(lambda w: None, name=1)  # was an AttributeError from inside
    job = bgjob.Job(None, external=True, name="ext")
    with job:
        with pytest.raises(bgjob.InvalidArgument):
            job.driver.phase = "copying\0secret"
        with pytest.raises(TypeError):
            job.driver.phase = None
        assert job.phase == ""
        with pytest.raises(bgjob.InvalidArgument):
            job.end(5, "disk\0full")
        assert job.state == bgjob.State.RUNNING
        job.end(5, "disk full")
        assert job.error.message == "disk full"


def test_a_child_argument_with_a_nul_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"

    def work(w):
        for argv, env in (
            (["/bin/sh", "-c", f"touch {marker}\0; echo"], None),
            (["/bin/sh", "-c", f"touch {marker}"], {"A": "1\0B=2"}),
            (["/bin/sh", "-c", f"touch {marker}"], {"A=B": "1"}),
        ):
            with pytest.raises(bgjob.InvalidArgument):
                w.spawn(argv, env=env)
        return "refused"

    with bgjob.start(work) as job:
        assert job.result(LONG) == "refused"
    assert not marker.exists()


# ---------------------------------------------------------------- callables


def test_add_done_callback_on_a_closed_job_raises_and_calls_nothing():
    called = []
    job = bgjob.start(lambda w: 1)
    job.wait(LONG)
    job.close()
    with pytest.raises(bgjob.InvalidHandle):
        job.add_done_callback(called.append)
    assert called == []


def test_callbacks_that_are_not_callable_are_refused_at_once():
    for opt in ("on_complete", "on_commit", "on_abort", "on_clean", "on_event"):
        with pytest.raises(TypeError, match=opt):
            bgjob.Job(lambda w: None, **{opt: 1})
    with pytest.raises(TypeError):
        bgjob.set_log_callback(1)  # type: ignore[arg-type]
    with bgjob.start(lambda w: None) as job:
        with pytest.raises(TypeError):
            job.add_done_callback(1)  # type: ignore[arg-type]
