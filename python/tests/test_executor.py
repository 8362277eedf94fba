"""bgjob.Executor: a concurrent.futures.Executor whose calls are bgjob jobs."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import sys
import threading

import pytest
from conftest import LONG, eventually

import bgjob
from bgjob import State


def test_submit_result_exception_and_the_job_behind_it():
    with bgjob.Executor("conv") as ex:
        assert isinstance(ex, concurrent.futures.Executor)

        def add(a, b, *, scale=1):
            w = bgjob.current_worker()
            w.set_total(1)
            w.add(1)
            return (a + b) * scale

        f = ex.submit(add, 2, 3, scale=10)
        assert isinstance(f, concurrent.futures.Future) and isinstance(f, bgjob.JobFuture)
        assert f.result(timeout=LONG) == 50
        assert f.exception() is None and f.done()
        assert f.job.name == "conv-0"
        assert f.job.wait(LONG) == State.COMPLETED and f.job.info.current == 1

        def missing():
            raise FileNotFoundError(2, "no such image", "/vm/disk.img")

        g = ex.submit(missing)
        with pytest.raises(FileNotFoundError) as ei:  # the worker's exception, as itself
            g.result(timeout=LONG)
        assert ei.value.filename == "/vm/disk.img"
        assert isinstance(g.exception(), FileNotFoundError)
        assert g.job.wait(LONG) == State.FAILED

        fs = [ex.submit(pow, 2, i) for i in range(8)]
        assert sorted(f.result() for f in concurrent.futures.as_completed(fs, timeout=LONG)) == [2**i for i in range(8)]
        done, not_done = concurrent.futures.wait(fs, timeout=LONG)
        assert len(done) == 8 and not not_done
        assert list(ex.map(abs, [-1, -2, 3], timeout=LONG)) == [1, 2, 3]

        seen = []
        h = ex.submit(lambda: "cb")
        h.add_done_callback(lambda fut: seen.append(fut.result()))
        h.result(LONG)
        eventually(lambda: seen == ["cb"], "the done callback ran (after result() may return)")
        for fut in [f, g, h, *fs]:
            fut.job.wait(LONG)
            fut.job.close()
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(abs, 1)
    with pytest.raises(RuntimeError):
        bgjob.current_worker()  # not in a worker


def test_job_cancel_stops_a_running_call_and_asyncio_wraps_the_future():
    started = threading.Event()

    def spin():
        started.set()
        w = bgjob.current_worker()
        while True:
            w.sleep(0.01)  # raises Cancelled once the job is cancelled

    ex = bgjob.Executor()
    f = ex.submit(spin)
    assert started.wait(LONG)
    assert not f.cancel()  # concurrent.futures: a running call is not cancelled
    assert f.job.cancel()  # bgjob: ask the worker to stop
    with pytest.raises(bgjob.Cancelled):
        f.result(LONG)
    assert f.job.wait(LONG) == State.CANCELLED

    async def main():
        return await asyncio.wrap_future(ex.submit(lambda: "via asyncio"))

    assert asyncio.run(main()) == "via asyncio"
    ex.shutdown(wait=True)


@pytest.mark.parametrize("how", ["returns", "raises", "cancelled"])
def test_frames_of_a_finished_call_kept_elsewhere_do_not_keep_its_job(how):
    # Anything may keep a worker's frames after the call: a traceback stored
    # by a logger, a debugger, or (seen on CPython 3.9 and 3.10, once in some
    # thousand runs under load) a reference the collector cannot see to a
    # traceback of a Cancelled raised in the worker. Those frames reach the
    # executor's own frames (f_back); they must not reach the future, whose
    # job would then never be freed (its handle is destroyed by the Job's
    # collection) and would stay listed.
    kept = []

    def call():
        w = bgjob.current_worker()
        kept.append(sys._getframe())
        if how == "raises":
            raise ValueError("no")
        if how == "cancelled":
            while True:
                w.sleep(0.01)
        return 1

    ex = bgjob.Executor()
    f = ex.submit(call)
    if how == "cancelled":
        eventually(lambda: kept, "the call runs")
        f.job.cancel()
    assert f.job.wait(LONG) == {"returns": State.COMPLETED, "raises": State.FAILED, "cancelled": State.CANCELLED}[how]
    assert f.done()
    job_id = f.job.id
    ex.shutdown()
    del f

    def gone():
        gc.collect()
        return job_id not in {e.id for e in bgjob.list_jobs()}

    eventually(gone, f"the job is freed while its call's frames are kept ({how})")
    kept.clear()


def test_cancel_futures_waiting_for_a_slot(gate):
    bgjob.set_max_running(1)
    try:
        ex = bgjob.Executor()
        first = ex.submit(gate.wait, LONG)
        eventually(first.running, "the first call runs (it holds the one slot)")
        queued = [ex.submit(lambda: "never") for _ in range(3)]
        ex.shutdown(wait=False, cancel_futures=True)
        assert all(f.cancelled() for f in queued)
        gate.set()
        assert first.result(LONG) is True
        assert [f.job.wait(LONG) for f in queued] == [State.CANCELLED] * 3
        for f in [first, *queued]:
            f.job.wait(LONG)
            f.job.close()
    finally:
        bgjob.set_max_running(0)
