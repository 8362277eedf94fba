"""Jobs with Python workers: results, errors, control, waiting, closing."""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import gc
import signal
import threading
import traceback
import weakref

import pytest
from conftest import LONG, eventually, sigint_once_main_waits

import bgjob
from bgjob import CancelStatus, State


def test_return_value_is_the_result():
    marker = object()

    def work(w, a, b):
        return (a + b, marker)

    with bgjob.start(work, 2, 3, name="adder") as job:
        assert job.wait(LONG) == State.COMPLETED
        assert job.result() == (5, marker)
        assert job.result()[1] is marker  # the very object, not a copy
        assert job.error is None
        assert job.exception() is None
        assert job.done()


def test_none_result_and_default_name():
    with bgjob.start(lambda w: None) as job:
        job.wait(LONG)
        assert job.result() is None
        assert job.name == f"job-{job.id}"


def test_result_is_freed_with_the_job():
    class Big:
        pass

    holder = []

    def work(w):
        obj = Big()
        holder.append(weakref.ref(obj))
        return obj

    job = bgjob.start(work)
    job.wait(LONG)
    assert isinstance(job.result(), Big)
    assert holder[0]() is not None
    job.close()
    gc.collect()
    # bgjob called the result's free function at destroy: the binding let go.
    assert holder[0]() is None


def test_exception_in_worker_fails_the_job_with_its_text():
    def work(w):
        w.phase = "parsing"
        raise ValueError("bad block 7")

    with bgjob.start(work, name="broken") as job:
        assert job.wait(LONG) == State.FAILED
        assert job.error == bgjob.ErrorInfo(bgjob.EXCEPTION_CODE, "ValueError: bad block 7")
        assert job.info.error_code == bgjob.EXCEPTION_CODE
        assert isinstance(job.exception(), ValueError)
        # The worker's exception is raised as itself, naming the job.
        with pytest.raises(ValueError, match="bad block 7") as ei:
            job.result()
        e = ei.value
        assert e is job.exception()
        assert "raised by the worker of bgjob job 'broken'" in e.__notes__[0]
        assert len(e.__notes__) == 1  # once, however often it is raised
        assert "work" in [frame.name for frame in traceback.extract_tb(e.__traceback__)]  # where it raised
        assert job.phase == "parsing"


def test_oserror_gives_its_errno():
    def work(w):
        raise OSError(errno.ENOSPC, "No space left on device", "/images/vm1.img")

    with bgjob.start(work) as job:
        assert job.wait(LONG) == State.FAILED
        err = job.error
        assert err.code == errno.ENOSPC
        assert "No space left on device" in err.message and "vm1.img" in err.message


def test_base_exceptions_are_caught_too():
    def work(w):
        raise SystemExit(3)

    with bgjob.start(work, name="exits") as job:
        assert job.wait(LONG) == State.FAILED
        assert job.error.message.startswith("SystemExit")
        # Not raised in the caller's thread (it would end the caller):
        # JobFailed, with the job's code and message, caused by it.
        with pytest.raises(bgjob.JobFailed) as ei:
            job.result()
        e = ei.value
        assert isinstance(e.__cause__, SystemExit)
        assert e.error_code == bgjob.EXCEPTION_CODE and e.job_name == "exits"
        assert "job 'exits' failed" in str(e) and "SystemExit" in e.message
        assert isinstance(e, bgjob.JobError) and isinstance(e, bgjob.BgjobError)
        assert isinstance(job.exception(), bgjob.JobFailed)


def test_not_callable_is_refused():
    with pytest.raises(TypeError):
        bgjob.start(42)


def test_hundred_python_workers_at_once():
    n = 100
    # Every worker waits here until all 100 run at the same time: this only
    # passes if each job really has its own thread.
    barrier = threading.Barrier(n, timeout=LONG)
    threads = set()
    lock = threading.Lock()

    def work(w, i):
        w.set_total(2)
        w.add(1)
        with lock:
            threads.add(threading.get_ident())
        barrier.wait()
        w.add(1)
        return i * i

    jobs = [bgjob.start(work, i, name=f"sq-{i}") for i in range(n)]
    try:
        for job in jobs:
            assert job.wait(LONG) == State.COMPLETED
        assert [job.result() for job in jobs] == [i * i for i in range(n)]
        assert len(threads) == n
        assert all(job.info.percent == 100 for job in jobs)
    finally:
        for job in jobs:
            job.close()


def test_progress_phase_and_info(gate):
    reached = threading.Event()
    problems = []

    def work(w):
        w.set_total(1000)
        w.set_current(250)
        w.add(50)
        w.phase = "copying"
        try:
            w.set_current(10)  # backwards: refused, nothing changes
        except bgjob.InvalidArgument as e:
            problems.append(e)
        try:
            w.add(-1)
        except bgjob.InvalidArgument as e:
            problems.append(e)
        w.set_eta(40)
        reached.set()
        gate.wait(LONG)
        w.set_percent(100)

    with bgjob.start(work, name="progress") as job:
        assert reached.wait(LONG)
        info = job.info
        assert isinstance(info, bgjob.Info)
        assert info.state == State.RUNNING
        assert info.current == 300 and info.total == 1000
        assert info.percent == 30
        assert info.id == job.id
        assert info.job_type == bgjob.JobType.BOUNDED
        assert info.since_progress is not None
        assert 0 < info.remaining <= 40
        assert job.phase == "copying"
        assert len(problems) == 2
        names = {e.name: e for e in bgjob.list_jobs()}
        assert names["progress"].phase == "copying"
        assert names["progress"].state == State.RUNNING
        gate.set()
        job.wait(LONG)
        assert job.info.percent == 100
        with pytest.raises(bgjob.InvalidArgument):
            bgjob.start(lambda w: None, total=-5)


def test_total_option_is_set_before_the_worker_runs():
    seen = []
    with bgjob.Job(lambda w: seen.append(w.info.total), total=4096, start=False) as job:
        assert job.info.total == 4096
        assert job.state == State.CREATED
        job.start()
        job.wait(LONG)
    assert seen == [4096]


def test_unbounded_job_has_no_percent(gate):
    ready = threading.Event()

    def work(w):
        w.add(10)
        ready.set()
        gate.wait(LONG)

    with bgjob.start(work, unbounded=True) as job:
        ready.wait(LONG)
        info = job.info
        assert info.job_type == bgjob.JobType.UNBOUNDED
        assert info.percent is None and info.current == 10
        gate.set()


def test_cancel_during_cancellable_sleep():
    asleep = threading.Event()
    after = []

    def work(w):
        w.phase = "sleeping"
        asleep.set()
        try:
            w.sleep(3600)
        except bgjob.Cancelled:
            after.append(w.cancelled)
            raise
        after.append("slept an hour")

    job = bgjob.start(work, name="sleeper")
    assert asleep.wait(LONG)
    eventually(lambda: job.phase == "sleeping", "worker reached its sleep")
    assert job.cancel() == CancelStatus.REQUESTED
    # The worker may have ended already by the second call.
    assert job.cancel() in (CancelStatus.ALREADY_REQUESTED, CancelStatus.ALREADY_FINISHED)
    assert job.wait(LONG) == State.CANCELLED
    assert after == [True]
    assert job.info.cancel_requested
    with pytest.raises(bgjob.Cancelled) as ei:
        job.result()
    assert ei.value.job_name == "sleeper"
    assert job.error.code == errno.ECANCELED
    assert job.cancel() == CancelStatus.ALREADY_FINISHED
    job.close()


def test_check_cancel_and_pause_point_raise_cancelled(gate):
    def work(w):
        gate.wait(LONG)
        assert w.cancelled
        w.pause_point()

    job = bgjob.start(work)
    job.cancel()
    gate.set()
    assert job.wait(LONG) == State.CANCELLED
    job.close()


def test_worker_may_complete_after_cancel(gate):
    def work(w):
        gate.wait(LONG)
        return "finished anyway"

    with bgjob.start(work) as job:
        job.cancel()
        gate.set()
        assert job.wait(LONG) == State.COMPLETED
        assert job.result() == "finished anyway"
        assert job.info.cancel_requested


def test_cancelled_raised_without_a_cancel_is_a_failure():
    def work(w):
        raise bgjob.Cancelled("made up")

    with bgjob.start(work) as job:
        assert job.wait(LONG) == State.FAILED


def test_cancel_before_start_never_runs_the_worker():
    ran = []
    job = bgjob.Job(lambda w: ran.append(1), start=False)
    assert job.state == State.CREATED
    assert job.cancel() == CancelStatus.REQUESTED
    assert job.wait(LONG) == State.CANCELLED
    assert ran == []
    assert job.error.message == "cancelled before start"
    with pytest.raises(bgjob.NotAllowed):
        job.start()
    job.close()


def test_pause_and_resume(gate):
    counted = threading.Event()

    def work(w):
        w.set_total(3)
        w.add(1)
        counted.set()
        gate.wait(LONG)
        w.add(1)  # parks here while paused
        w.add(1)
        return "done"

    with bgjob.start(work) as job:
        counted.wait(LONG)
        job.pause()
        assert job.state == State.PAUSED
        assert job.info.pause_requested
        with pytest.raises(bgjob.NotAllowed):
            job.pause()  # pausing twice is refused
        gate.set()
        eventually(lambda: job.info.current == 2, "worker made its next update")
        with pytest.raises(bgjob.TimedOut):
            job.wait(timeout=0.05)  # parked: it cannot finish while paused
        assert job.info.current == 2
        job.resume()
        with pytest.raises(bgjob.NotAllowed):
            job.resume()
        assert job.wait(LONG) == State.COMPLETED
        assert job.result() == "done"


def test_wait_timeout_raises_and_the_job_runs_on(gate):
    with bgjob.start(lambda w: gate.wait(LONG) and "ok") as job:
        with pytest.raises(bgjob.TimedOut) as ei:
            job.wait(timeout=0.02)
        assert isinstance(ei.value, TimeoutError)
        with pytest.raises(bgjob.TimedOut):
            job.wait(timeout=0)
        assert job.state == State.RUNNING
        with pytest.raises(bgjob.TimedOut):
            job.result(timeout=0)  # only looks
        with pytest.raises(TimeoutError):
            job.result(timeout=0.02)
        with pytest.raises(concurrent.futures.TimeoutError):  # a class of its own before 3.11
            job.exception(timeout=0.02)
        assert not job.done() and job.running()
        gate.set()
        assert job.wait(LONG) == State.COMPLETED
        assert job.result() == "ok"


def test_wait_from_many_threads(gate):
    with bgjob.start(lambda w: gate.wait(LONG)) as job:
        states = []
        threads = [threading.Thread(target=lambda: states.append(job.wait(LONG))) for _ in range(8)]
        for t in threads:
            t.start()
        gate.set()
        for t in threads:
            t.join()
        assert states == [State.COMPLETED] * 8


def test_keyboard_interrupt_during_wait(gate):
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with bgjob.start(lambda w: gate.wait(LONG), name="long") as job:
            sender = sigint_once_main_waits()
            with pytest.raises(KeyboardInterrupt):
                job.wait()  # no timeout: only the signal can end this wait
            sender.join(LONG)
            assert job.state == State.RUNNING  # Ctrl-C ends the wait, not the job
            gate.set()
    finally:
        signal.signal(signal.SIGINT, old)


def test_with_block_cancels_a_running_job():
    started = threading.Event()

    def work(w):
        started.set()
        w.sleep(3600)

    with bgjob.start(work) as job:
        started.wait(LONG)
    assert job.closed
    with pytest.raises(bgjob.InvalidHandle):
        job.state


def test_with_block_on_error_still_closes():
    with pytest.raises(RuntimeError):
        with bgjob.start(lambda w: w.sleep(3600)) as job:
            raise RuntimeError("caller failed")
    assert job.closed


def test_use_after_close_raises_not_crashes():
    job = bgjob.start(lambda w: 1)
    job.wait(LONG)
    job.close()
    job.close()  # idempotent
    assert job.closed
    calls = [
        lambda: job.state,
        lambda: job.info,
        lambda: job.name,
        lambda: job.phase,
        lambda: job.error,
        lambda: job.result(),
        lambda: job.done(),
        job.cancel,
        job.pause,
        job.resume,
        job.start,
        job.wait,
        lambda: job.wait(0),
    ]
    for call in calls:
        with pytest.raises(bgjob.InvalidHandle) as ei:
            call()
        assert "closed" in str(ei.value)
    assert "closed" in repr(job)


def test_worker_object_after_the_job_ended():
    kept = []
    job = bgjob.start(lambda w: kept.append(w))
    job.wait(LONG)
    w = kept[0]
    with pytest.raises(bgjob.NotAllowed):
        w.add(1)  # the job has ended
    job.close()
    with pytest.raises(bgjob.InvalidHandle):
        w.add(1)  # and now its handle is gone
    with pytest.raises(bgjob.InvalidHandle):
        w.sleep(0)


def test_worker_cannot_wait_for_or_close_its_own_job():
    box = {}
    ready = threading.Event()

    def work(w):
        ready.wait(LONG)
        job = box["job"]
        for call in (job.wait, job.close):
            try:
                call()
            except bgjob.NotAllowed:
                continue
            return "not refused"
        return "refused"

    job = bgjob.start(work)
    box["job"] = job
    ready.set()
    job.wait(LONG)
    assert job.result() == "refused"
    del box["job"]
    job.close()


def test_dropping_a_finished_job_destroys_it():
    job = bgjob.start(lambda w: None, name="dropped")
    job.wait(LONG)
    eventually(lambda: job._done, "completion ran")
    job_id = job.id
    # With the collector off, only reference counting can free the Job: an
    # ended job must not sit in a reference cycle until some later collection.
    gc.disable()
    try:
        del job
        # The handle goes once the completion thread has let go of the Job; the
        # job itself is freed when the worker thread drops its last reference.
        eventually(lambda: job_id not in {e.id for e in bgjob.list_jobs()}, "job freed")
    finally:
        gc.enable()


def test_dropping_a_job_that_never_started_destroys_it():
    ran = []
    job = bgjob.Job(lambda w: ran.append(1), name="never-started", start=False)
    job_id = job.id
    assert job_id in {e.id for e in bgjob.list_jobs()}
    alive = weakref.ref(job)
    del job
    gc.collect()
    # Collected at once: a job that never ran does not keep its Job alive.
    assert alive() is None
    # Destroyed, and its worker released without running. Its completion (the
    # binding always sets one) runs on a thread of its own, which holds the
    # job a moment longer (the fixture checks the rest).
    eventually(lambda: job_id not in {e.id for e in bgjob.list_jobs()}, "job freed")
    assert ran == []


def test_concurrent_cancels_exactly_one_requests(gate):
    with bgjob.start(lambda w: gate.wait(LONG)) as job:
        statuses = []
        threads = [threading.Thread(target=lambda: statuses.append(job.cancel())) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert statuses.count(CancelStatus.REQUESTED) == 1
        assert statuses.count(CancelStatus.ALREADY_REQUESTED) == 7
        gate.set()


def test_cancel_hooks():
    calls = []
    ready = threading.Event()
    kept_ran = threading.Event()
    out = {}

    def kept_hook():
        calls.append(("kept", threading.get_ident()))
        kept_ran.set()

    def work(w):
        kept = w.add_cancel_hook(kept_hook)
        removed = w.add_cancel_hook(lambda: calls.append("removed"))
        out["removed"] = w.remove_cancel_hook(removed)
        out["again"] = w.remove_cancel_hook(removed)
        with w.cancel_hook(lambda: calls.append("scoped")):
            pass
        out["kept"] = kept
        ready.set()
        try:
            w.sleep(3600)
        except bgjob.Cancelled:
            # A hook added after cancel runs at once, here.
            out["late"] = w.add_cancel_hook(lambda: calls.append("late"))
            # The sleep may wake before cancel has called the hooks; once the
            # kept one ran, removing it reports that it did.
            kept_ran.wait(LONG)
            out["ran"] = w.remove_cancel_hook(kept)
            raise

    job = bgjob.start(work)
    ready.wait(LONG)
    job.cancel()
    assert job.wait(LONG) == State.CANCELLED
    # The kept hook ran once, on the cancelling (this) thread; the removed and
    # scoped ones never ran; the late one ran at once (on the worker's thread,
    # possibly while cancel was still calling the kept one).
    assert sorted(calls, key=str) == sorted([("kept", threading.get_ident()), "late"], key=str)
    assert out["removed"] is True and out["again"] is False
    assert out["late"] is None and out["ran"] is False
    assert isinstance(out["kept"], int)
    job.close()


def test_exception_in_hook_is_reported_not_fatal(monkeypatch):
    reported = []
    monkeypatch.setattr(threading, "excepthook", lambda args: reported.append(args.exc_value))
    ready = threading.Event()
    called = threading.Event()

    def bad():
        called.set()
        raise RuntimeError("hook broke")

    def work(w):
        w.add_cancel_hook(bad)
        ready.set()
        try:
            w.sleep(3600)
        finally:
            # Hooks not yet called when the worker returns are dropped
            # uncalled: the worker waits for the cancel to reach this one.
            called.wait(LONG)

    job = bgjob.start(work)
    ready.wait(LONG)
    job.cancel()
    assert job.wait(LONG) == State.CANCELLED
    assert [str(e) for e in reported] == ["hook broke"]
    job.close()


def test_on_complete_without_context_runs_on_the_job_thread():
    seen = []
    done = threading.Event()

    def on_complete(job):
        seen.append((job.state, threading.get_ident(), job.result()))
        done.set()

    job = bgjob.start(lambda w: threading.get_ident(), on_complete=on_complete)
    assert done.wait(LONG)
    state, thread, result = seen[0]
    assert state == State.COMPLETED
    assert thread == result != threading.get_ident()
    job.close()


def test_dropped_job_with_on_complete_still_completes():
    done = threading.Event()
    names = []

    def on_complete(job):
        names.append(job.name)
        job.close()  # closing from inside its own completion is allowed
        done.set()

    bgjob.start(lambda w: None, name="fire-and-forget", on_complete=on_complete)
    gc.collect()
    assert done.wait(LONG)
    assert names == ["fire-and-forget"]


def test_verb_table_matches_the_job_model():
    V, S = bgjob.Verb, bgjob.State
    assert bgjob.verb_allowed(V.PAUSE, S.RUNNING)
    assert not bgjob.verb_allowed(V.PAUSE, S.PAUSED)
    assert bgjob.verb_allowed(V.RESUME, S.PAUSED)
    assert not bgjob.verb_allowed(V.DESTROY, S.RUNNING)
    assert all(bgjob.verb_allowed(V.CANCEL, s) for s in S)
    with pytest.raises(bgjob.InvalidArgument):
        bgjob.verb_allowed(99, 0)


def test_log_callback_sees_lifecycle_lines():
    lines = []
    bgjob.set_log_callback(lines.append)
    try:
        with bgjob.start(lambda w: None, name="logged") as job:
            job.wait(LONG)
    finally:
        bgjob.set_log_callback(None)
    assert any("logged" in line for line in lines)


def test_unobserved_failure_is_logged_once_when_the_job_is_dropped(caplog):
    # A regression test: like asyncio's "Task exception was never retrieved".
    def work(w):
        raise FileNotFoundError(2, "no such image", "/vm/disk.img")

    job = bgjob.start(work, name="lost")
    job.wait(LONG)
    eventually(lambda: job._done, "completion ran (the Job is no longer pinned)")
    with caplog.at_level("ERROR", logger="bgjob"):
        del job
        gc.collect()
    records = [r for r in caplog.records if r.name == "bgjob"]
    assert len(records) == 1
    assert "job 'lost'" in records[0].getMessage() and "never retrieved" in records[0].getMessage()
    assert isinstance(records[0].exc_info[1], FileNotFoundError)

    # Observed (result, exception or error read, or awaited): nothing logged.
    caplog.clear()
    for look in (lambda j: j.exception(), lambda j: j.error, lambda j: pytest.raises(FileNotFoundError, lambda: j.result())):
        job = bgjob.start(work, name="seen")
        job.wait(LONG)
        eventually(lambda: job._done, "completion ran")
        look(job)
        with caplog.at_level("ERROR", logger="bgjob"):
            job.close()
            del job
            gc.collect()
    assert [r for r in caplog.records if r.name == "bgjob"] == []


def test_async_worker_is_refused():
    # A regression test: an `async def` worker "completed" with a coroutine
    # object as its result, its body never run.
    ran = []

    async def coro_worker(w):
        ran.append(w)
        return 1

    with pytest.raises(TypeError, match="async"):
        bgjob.start(coro_worker)

    # A callable that returns a coroutine is only found out when it returns.

    def sneaky(w):
        return coro_worker(w)

    with bgjob.start(lambda w: sneaky(w), name="sneaky") as job:
        assert job.wait(LONG) == State.FAILED
        assert isinstance(job.exception(), TypeError)
        assert "coroutine" in str(job.exception())
    assert ran == []


def test_wait_on_a_job_never_started_is_refused():
    # A regression test: wait() blocked forever, and wait(timeout) said "still
    # running" of a CREATED job.
    job = bgjob.Job(lambda w: None, start=False, name="idle")
    with pytest.raises(bgjob.NotAllowed, match="not started"):
        job.wait(timeout=0.5)
    box = []
    t = threading.Thread(target=lambda: box.append(pytest.raises(bgjob.NotAllowed, job.wait)))
    t.start()
    t.join(LONG)
    assert not t.is_alive() and len(box) == 1

    async def main():
        with pytest.raises(bgjob.NotAllowed):
            await asyncio.wait_for(job.wait_async(), LONG)

    asyncio.run(main())
    job.start()
    assert job.wait(LONG) == State.COMPLETED
    job.close()


def test_cancel_status_truth_and_names(gate):
    job = bgjob.start(lambda w: gate.wait(LONG))  # does not look at cancel
    status = job.cancel()
    assert status and status == CancelStatus.REQUESTED  # truthy: cancel requested
    assert str(status) == "requested" and f"{status}" == "requested"
    again = job.cancel()
    assert again == CancelStatus.ALREADY_REQUESTED and again  # still a requested cancel
    gate.set()
    job.wait(LONG)
    assert not job.cancel()  # already finished: nothing was requested
    assert f"{job.state:>10}" == " completed"  # it succeeded all the same
    assert repr(State.RUNNING) == "<State.RUNNING: 1>" and State.RUNNING == 1
    job.close()


def test_keyword_arguments_contextvars_and_thread_name():
    import contextvars
    import logging

    request = contextvars.ContextVar("request", default="none")
    request.set("req-42")
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.threadName)

    logger = logging.getLogger("bgjob-test-threads")
    logger.addHandler(Keep())
    logger.setLevel(logging.INFO)

    def work(w, a, *, scale, offset=0):
        logger.info("working")
        request.set("changed in the worker")  # a copy: the caller's is untouched
        return (a * scale + offset, request.get(), threading.current_thread().name)

    with bgjob.start(work, 2, kwargs={"scale": 10, "offset": 1}, name="copy-vm1") as job:
        job.wait(LONG)
        value, _, thread_name = job.result()
    assert value == 21
    assert thread_name == "copy-vm1" and records == ["copy-vm1"]
    assert request.get() == "req-42"

    seen = []
    with bgjob.start(lambda w: seen.append(request.get())) as job:
        job.wait(LONG)
    assert seen == ["req-42"]
    with pytest.raises(TypeError):
        bgjob.start(work, 1, scale=2)  # the worker's keywords go in kwargs=


def test_progress_yields_snapshots_until_the_end(gate):
    def work(w):
        w.set_total(3)
        w.phase = "copying"
        for _ in range(3):
            gate.wait(LONG)
            w.add(1)
        w.phase = "verifying"
        return "done"

    job = bgjob.start(work)
    seen = []
    for info in job.progress(0.01):
        seen.append(info)
        gate.set()
    assert seen[-1].state == State.COMPLETED and seen[-1].current == 3
    assert seen[-1].phase == "verifying"  # Info carries the phase
    assert all(not i.state.terminal for i in seen[:-1])
    assert [i.current for i in seen] == sorted(i.current for i in seen)
    job.close()


def test_reprs():
    with bgjob.Context() as ctx:
        assert repr(ctx).startswith(f"<bgjob.Context fd={ctx.fileno()} pending=0 dispatched=0")
        reprs = []
        job = bgjob.start(lambda w: reprs.append(repr(w)), name="shown", context=ctx)
        job.wait(LONG)
        assert reprs == ["<bgjob.Worker of job 'shown' (running)>"]
        assert "pending=1" in repr(ctx)
        ctx.dispatch()
        job.close()
    assert repr(ctx) == "<bgjob.Context closed, dispatched=1>"


def test_cancelled_and_deadline_exceptions_are_what_python_expects():
    import concurrent.futures

    with bgjob.start(lambda w: w.sleep(3600), name="slow", deadline=0.05) as job:
        assert job.wait(LONG) == State.CANCELLED
        with pytest.raises(TimeoutError) as ei:  # a deadline expiry is a TimeoutError ...
            job.result()
        assert isinstance(ei.value, bgjob.DeadlineExceeded)
        assert isinstance(ei.value, bgjob.Cancelled)  # ... and a cancel
        assert "job 'slow' ran out of time" in str(ei.value)

    with bgjob.start(lambda w: w.sleep(3600), name="asked") as job:
        job.cancel()
        job.wait(LONG)
        with pytest.raises(concurrent.futures.CancelledError) as ei:
            job.result()
        assert type(ei.value) is bgjob.Cancelled
        assert not isinstance(ei.value, TimeoutError)
        assert isinstance(ei.value, Exception)  # not asyncio's BaseException
