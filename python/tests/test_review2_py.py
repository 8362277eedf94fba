"""Second outside review of the Python binding (a61d025, b638fb6, 063191b).

Each case failed on 0db7e7f; the watchdog cases now meet a daemon thread of
bgjob's (started by set_exit_timeout) instead of faulthandler's. The exit cases run a script in a subprocess with a
timeout, so a hang is a failure (subprocess.TimeoutExpired), not a stuck
session."""

from __future__ import annotations

import asyncio
import math
import threading
import time

import pytest

from conftest import run_script

import bgjob



# ------------------------------------------------------------ the exit hook


def test_a_job_another_thread_is_creating_as_the_exit_begins_is_stopped_not_an_attributeerror(tmp_path):
    # Job.__init__ sets _closed = False before self.id; _stop_at_exit reads
    # job.id of every live job, so a job whose constructor is in the C call
    # between the two (get_id; any C call lets the GIL go) makes the hook end
    # the process with status 1: "AttributeError while waiting at exit".
    # Seen without the injection too (1 run in 20 of a daemon thread calling
    # bgjob.start in a loop, sys.setswitchinterval(1e-6)).
    r = run_script(
        tmp_path,
        """
        import threading, time
        import bgjob, bgjob._job as J
        real = J.lib
        inside = threading.Event()
        class Lib:  # a thread switch inside the constructor's get_id call
            def __getattr__(self, name):
                f = getattr(real, name)
                if name == "bgjob_job_get_id" and threading.current_thread().name == "maker":
                    def slow(*a):
                        inside.set()
                        J._exit_began.wait(60)   # held there until the exit hook runs
                        time.sleep(0.5)
                        return f(*a)
                    return slow
                return f
        J.lib = Lib()
        threading.Thread(target=lambda: bgjob.start(lambda w: w.sleep(30), name="late"),
                         name="maker", daemon=True).start()
        assert inside.wait(60)
        print("main done", flush=True)
        """,
    )
    assert "AttributeError" not in r.stderr, r.stderr
    assert r.returncode == 0, r.stderr


def test_set_log_callback_while_the_exit_hook_waits_does_not_hang_the_exit(tmp_path):
    # The hook drops the log callback once, first; one set afterwards (a
    # daemon thread, a worker) is tracked and only freed when replaced, so
    # `while _tracked` never ends: without an exit timeout the process hangs
    # for ever; with one, it ends with status 1 naming "0 job(s) still running".
    r = run_script(
        tmp_path,
        """
        import threading, time
        import bgjob
        tried = threading.Event()
        def slow(w):  # keeps the hook waiting until the callback was set
            tried.wait(60)
        bgjob.start(slow, name="slow")
        def later():  # while the exit hook waits
            bgjob._job._exit_began.wait(60)
            try:
                bgjob.set_log_callback(lambda line: None)
            except RuntimeError:
                pass  # refused once the exit began: that is fine too
            finally:
                tried.set()
        threading.Thread(target=later, daemon=True).start()
        print("main done", flush=True)
        """,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr


def _sigterm_exit_script(code_expr: str) -> str:
    return f"""
        import os, signal, sys, threading, time
        import bgjob
        signal.signal(signal.SIGTERM, lambda *a: sys.exit({code_expr}))
        def stubborn(w):  # never checks for cancel
            t = time.monotonic()
            while time.monotonic() - t < 3:
                pass
        bgjob.start(stubborn, name="stubborn")
        def kill():  # once the exit hook waits
            bgjob._job._exit_began.wait(60)
            time.sleep(0.1)
            os.kill(os.getpid(), signal.SIGTERM)
        threading.Thread(target=kill, daemon=True).start()
        print("main done", flush=True)
        """


def test_a_systemexit_code_past_c_int_during_the_exit_wait_does_not_abort(tmp_path):
    # os._exit(2**31 + 5) raises OverflowError inside the hook's handler; it
    # escapes the hook, the interpreter finalizes under the running worker
    # and the process aborts (SIGABRT). CPython itself exits 5 for
    # sys.exit(2**31 + 5) (its low bits).
    r = run_script(tmp_path, _sigterm_exit_script("2**31 + 5"))
    assert "OverflowError" not in r.stderr, r.stderr
    assert r.returncode == 5, (r.returncode, r.stderr)


def test_a_systemexit_message_during_the_exit_wait_is_printed(tmp_path):
    # sys.exit("text") prints the text to stderr and exits 1; the hook's
    # os._exit path exits 1 but drops the text.
    r = run_script(tmp_path, _sigterm_exit_script('"terminated by SIGTERM"'))
    assert r.returncode == 1, r.stderr
    assert "terminated by SIGTERM" in r.stderr, r.stderr


def test_set_exit_timeout_does_not_disarm_the_programs_own_faulthandler_watchdog(tmp_path):
    # The hook arms faulthandler.dump_traceback_later(timeout + 1) and cancels
    # it in `finally`: a watchdog the program armed itself is replaced, then
    # gone, so later exit work that hangs is no longer ended (here: it runs
    # its full 30 s instead of being ended by the program's 2 s watchdog).
    start = time.monotonic()
    r = run_script(
        tmp_path,
        """
        import atexit, faulthandler, time
        # registered before bgjob's import, so it runs after bgjob's hook
        atexit.register(lambda: time.sleep(30))
        import bgjob
        faulthandler.dump_traceback_later(2, exit=True)  # the program's hang guard
        bgjob.set_exit_timeout(10)
        bgjob.start(lambda w: w.sleep(0.2), name="short")
        """,
    )
    elapsed = time.monotonic() - start
    assert r.returncode == 1 and "Timeout" in r.stderr, (r.returncode, r.stderr)
    assert elapsed < 20.0, elapsed


def test_the_exit_timeout_bounds_a_blocking_cancel_with_sys_stderr_redirected(tmp_path):
    # The watchdog is faulthandler.dump_traceback_later(..., exit=True) on
    # sys.stderr; a stream with no fileno (io.StringIO, a GUI or log
    # redirect; None under pythonw) makes it raise, contextlib.suppress hides
    # that, and nothing bounds a cancel that blocks: here the exit takes the
    # control callable's full 30 s and ends with status 0, not ~2 s and 1.
    start = time.monotonic()
    r = run_script(
        tmp_path,
        """
        import io, sys, time
        import bgjob
        bgjob.set_exit_timeout(1)
        def control(job, what, arg):
            if what == bgjob.Control.CANCEL:
                time.sleep(30)
        job = bgjob.Job(None, external=True, control=control, name="ext")
        sys.stderr = io.StringIO()
        """,
    )
    elapsed = time.monotonic() - start
    assert r.returncode == 1, (r.returncode, elapsed)
    assert elapsed < 20.0, elapsed


# ------------------------------------------------------------------ waits


@pytest.mark.parametrize(
    "how",
    ["job.wait", "job.result", "job.wait_state", "handle.wait"],
)
def test_an_infinite_timeout_off_the_main_thread_waits(how):
    # _ms(inf) is _I64_MAX; _wait_sliced turns it back into a deadline and
    # then into ms = ceil((deadline - now) * 1000), which rounds to 2**63:
    # past int64, ctypes passes it as a negative number and bgjob answers
    # InvalidArgument. (On the main thread the slice hides it; JobHandle.wait
    # passed _I64_MAX straight through before 063191b.)
    job = bgjob.start(lambda w: w.sleep(0.2), name=f"inf-{how}")
    out: list = []

    def waiter():
        try:
            if how == "job.wait":
                out.append(job.wait(math.inf))
            elif how == "job.result":
                out.append(job.result(math.inf))
            elif how == "job.wait_state":
                out.append(job.wait_state(bgjob.State.COMPLETED, math.inf))
            else:
                with job.ref() as h:
                    out.append(h.wait(math.inf))
        except BaseException as e:
            out.append(e)

    t = threading.Thread(target=waiter)
    t.start()
    t.join(30)
    try:
        assert out and not isinstance(out[0], BaseException), out
    finally:
        job.close()


def test_wait_state_async_with_an_int_state_times_out_with_timedout():
    # wait_state takes an int state since b638fb6 (it names it in TimedOut);
    # its async twin still formats state.name: AttributeError.
    job = bgjob.start(lambda w: w.sleep(5), name="ws-async-int")

    async def main():
        return await job.wait_state_async(int(bgjob.State.PAUSED), timeout=0.05)

    try:
        with pytest.raises(bgjob.TimedOut):
            asyncio.run(main())
    finally:
        job.close()


# ---------------------------------------------------------- numbers for C


@pytest.mark.parametrize("conv", [lambda i: i + 0.5, str])
def test_lookup_takes_an_int_id_only(conv):
    # _u64 is int(value): lookup(id + 0.5) and lookup(str(id)) find the job,
    # where end(0.5) is a TypeError since a61d025.
    job = bgjob.start(lambda w: w.sleep(5), name="lookup-int")
    try:
        with pytest.raises(TypeError):
            bgjob.lookup(conv(job.id)).close()
    finally:
        job.close()


@pytest.mark.parametrize("call", ["set_total", "set_current", "add"])
def test_progress_numbers_take_ints_only(call):
    out: list = []

    def worker(w):
        try:
            getattr(w, call)(0.5 if call != "set_total" else 10.9)
        except BaseException as e:
            out.append(e)

    job = bgjob.start(worker, name=f"u64-{call}")
    try:
        job.result(30)
        assert out and isinstance(out[0], TypeError), out
    finally:
        job.close()
