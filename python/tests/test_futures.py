"""A Job speaks concurrent.futures' language: result(timeout),
exception(timeout), done(), cancelled(), running(), add_done_callback, and
bgjob.wait / bgjob.as_completed over several jobs; a worker's exception is
raised as itself."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import threading
import weakref

import pytest
from conftest import LONG, eventually, sigint_once_main_waits

import bgjob


def test_result_waits_and_times_out(gate):
    job = bgjob.start(lambda w: gate.wait(LONG) and "ready", name="slowish")
    with pytest.raises(bgjob.TimedOut, match="still running"):
        job.result(timeout=0.05)  # the job runs on
    assert job.running() and not job.done() and not job.cancelled()
    threading.Timer(0.05, gate.set).start()
    assert job.result() == "ready"  # waits as long as it takes
    assert job.done() and not job.running() and not job.cancelled()
    assert job.result(timeout=0) == "ready"  # ended: no wait at all
    assert job.exception(timeout=0) is None
    job.close()


def test_a_job_never_started_is_refused_not_waited_for():
    job = bgjob.Job(lambda w: 1, start=False, name="idle")
    assert not job.running() and not job.done()
    for call in (job.result, job.exception, lambda: bgjob.wait([job]), lambda: bgjob.as_completed([job])):
        with pytest.raises(bgjob.NotAllowed, match="not started"):
            call()
    job.start()
    assert job.result(LONG) == 1
    job.close()


def test_the_workers_exception_is_raised_as_itself_from_result_and_exception():
    def missing(w, path):
        raise FileNotFoundError(2, "no such image", path)

    job = bgjob.start(missing, "/vm/disk.img", name="open-disk")
    with pytest.raises(FileNotFoundError) as ei:
        job.result(LONG)
    e = ei.value
    assert e.filename == "/vm/disk.img"
    assert e.__notes__ == [f"raised by the worker of bgjob job 'open-disk' (id {job.id})"]
    assert job.exception() is e  # returned, not raised
    assert not job.cancelled() and job.done()
    # The job's own error is still there for C-style callers.
    assert job.error.code == 2 and "no such image" in job.error.message
    with pytest.raises(OSError):  # the same object again, note not repeated
        job.result()
    assert len(e.__notes__) == 1
    job.close()


def test_raising_the_exception_leaves_no_cycle_through_the_job():
    def bad(w):
        raise ValueError("bad")

    job = bgjob.start(bad)
    job.wait(LONG)
    eventually(lambda: job._done, "completion ran (the Job is no longer pinned)")
    gc.disable()
    try:
        try:
            job.result()
        except ValueError as e:
            caught = e
        ref = weakref.ref(job)
        del job
        assert ref() is None, "the Job was kept alive by the raised exception's traceback"
        del caught
    finally:
        gc.enable()


def test_cancelled_jobs_raise_cancelled_from_exception_too():
    job = bgjob.start(lambda w: w.sleep(3600), name="stopped")
    assert job.cancel()
    with pytest.raises(bgjob.Cancelled):
        job.exception(LONG)  # as Future.exception raises CancelledError
    assert job.cancelled() and job.done() and not job.running()
    with pytest.raises(concurrent.futures.CancelledError):
        job.result()
    job.close()

    late = bgjob.start(lambda w: w.sleep(3600), name="late", deadline=0.05)
    with pytest.raises(bgjob.DeadlineExceeded):
        late.exception(LONG)
    with pytest.raises(TimeoutError):
        late.result()
    late.close()


def test_add_done_callback_runs_with_the_completion_or_at_once():
    order = []
    gate = threading.Event()
    main = threading.get_ident()

    def work(w):
        gate.wait(LONG)
        return 7

    job = bgjob.start(work, on_complete=lambda j: order.append(("on_complete", j.result())))
    job.add_done_callback(lambda j: order.append(("first", j.result(), threading.get_ident() == main)))
    job.add_done_callback(lambda j: order.append(("second", j.done())))
    assert order == []
    gate.set()
    eventually(lambda: len(order) == 3, "every callback ran")
    # In order, on_complete first, on the job's thread (no context here).
    assert order == [("on_complete", 7), ("first", 7, False), ("second", True)]

    # Added after the completion ran: called at once, here.
    here = []
    job.add_done_callback(lambda j: here.append(threading.current_thread()))
    assert here == [threading.current_thread()]
    job.close()


def test_add_done_callback_on_a_context_runs_at_dispatch(caplog):
    with bgjob.Context() as ctx:
        job = bgjob.start(lambda w: "x", context=ctx)
        seen = []
        job.add_done_callback(lambda j: seen.append((j.result(), threading.get_ident())))
        job.wait(LONG)
        assert job.done() and seen == []  # ended; its completion waits for dispatch
        assert ctx.dispatch() == 1
        assert seen == [("x", threading.get_ident())]

        # An exception from a callback called at once is logged, as
        # concurrent.futures does, not raised into add_done_callback's caller.
        def boom(j):
            raise RuntimeError("callback broke")

        with caplog.at_level("ERROR", logger="bgjob"):
            job.add_done_callback(boom)
        assert any("done callback" in r.getMessage() and r.exc_info[0] is RuntimeError for r in caplog.records)
        job.close()


def test_wait_over_several_jobs(gate):
    quick = [bgjob.start(lambda w, i: i, i, name=f"quick-{i}") for i in range(3)]
    slow = bgjob.start(lambda w: gate.wait(LONG), name="slow")

    done, not_done = bgjob.wait(quick, timeout=LONG)
    assert done == set(quick) and not not_done

    r = bgjob.wait([*quick, slow], timeout=0.05)
    assert isinstance(r, bgjob.DoneAndNotDone)
    assert r.done == set(quick) and r.not_done == {slow}  # no exception on timeout

    done, not_done = bgjob.wait([slow, quick[0]], return_when=bgjob.FIRST_COMPLETED)
    assert done == {quick[0]} and not_done == {slow}

    def fails(w):
        raise ValueError("no")

    failing = bgjob.start(fails)
    done, not_done = bgjob.wait([slow, failing], return_when=bgjob.FIRST_EXCEPTION, timeout=LONG)
    assert done == {failing} and not_done == {slow}
    assert isinstance(failing.exception(), ValueError)

    threading.Timer(0.05, gate.set).start()
    done, not_done = bgjob.wait([slow, failing], timeout=LONG)  # ALL_COMPLETED
    assert done == {slow, failing} and not not_done
    with pytest.raises(bgjob.InvalidArgument):
        bgjob.wait(quick, return_when="SOMETIME")
    with pytest.raises(TypeError, match="not a bgjob.Job"):
        bgjob.wait([concurrent.futures.Future()])
    for job in [*quick, slow, failing]:
        job.close()


def test_as_completed_yields_jobs_in_the_order_they_end():
    gates = [threading.Event() for _ in range(3)]
    jobs = [bgjob.start(lambda w, g, i: g.wait(LONG) and i, g, i, name=f"j{i}") for i, g in enumerate(gates)]
    first = bgjob.start(lambda w: "first")
    first.wait(LONG)
    it = bgjob.as_completed([*jobs, first, first], timeout=LONG)  # duplicates once
    assert next(it) is first  # already ended: first
    for i in (2, 0, 1):
        gates[i].set()
        assert next(it) is jobs[i]
    with pytest.raises(StopIteration):
        next(it)
    for job in [*jobs, first]:
        job.close()


def test_as_completed_times_out(gate):
    done = bgjob.start(lambda w: 1)
    stuck = bgjob.start(lambda w: gate.wait(LONG), name="stuck")
    # Ended before the call, so the short timeout only ever covers `stuck`
    # (a loaded machine could take longer than it to run a trivial job).
    assert done.result(timeout=LONG) == 1
    got = []
    with pytest.raises(bgjob.TimedOut, match=r"1 \(of 2\) jobs unfinished") as ei:
        for job in bgjob.as_completed([done, stuck], timeout=0.1):
            got.append(job)
    assert isinstance(ei.value, concurrent.futures.TimeoutError)
    assert got == [done]
    gate.set()
    done.close()
    stuck.close()


def test_several_jobs_whose_context_nobody_dispatches_still_count():
    # wait and as_completed go by the job's state, not by its completion: a
    # job bound to a context not dispatched yet has ended all the same.
    with bgjob.Context() as ctx:
        jobs = [bgjob.start(lambda w, i: i, i, context=ctx) for i in range(3)]
        assert sorted(j.result() for j in bgjob.as_completed(jobs, timeout=LONG)) == [0, 1, 2]
        done, not_done = bgjob.wait(jobs, timeout=LONG)
        assert len(done) == 3 and not not_done
        assert ctx.pending == 3
        ctx.dispatch()
        for job in jobs:
            job.close()


def test_await_job_raises_the_workers_exception_as_itself():
    async def main():
        def missing(w):
            raise FileNotFoundError(2, "no such image", "/vm/disk.img")

        job = bgjob.start(missing, name="aio")
        try:
            await job
        except FileNotFoundError as e:
            assert e.filename == "/vm/disk.img"
            assert "bgjob job 'aio'" in e.__notes__[0]
        else:
            raise AssertionError("await job did not raise")
        results = await asyncio.gather(job, bgjob.start(lambda w: 2), return_exceptions=True)
        assert isinstance(results[0], FileNotFoundError) and results[1] == 2
        job.close()

    asyncio.run(main())


def test_keyboard_interrupt_ends_the_waits_over_several_jobs(gate):
    import signal

    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        job = bgjob.start(lambda w: gate.wait(LONG), name="long")
        for wait in (lambda: bgjob.wait([job]), lambda: list(bgjob.as_completed([job])), job.result):
            sender = sigint_once_main_waits()
            with pytest.raises(KeyboardInterrupt):
                wait()  # no timeout: only the signal can end this wait
            sender.join(LONG)
            assert job.running()  # Ctrl-C ends the wait, not the job
        gate.set()
        job.close()
    finally:
        signal.signal(signal.SIGINT, old)
