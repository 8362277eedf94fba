"""Completion through a Context (on the dispatching thread) and asyncio."""

from __future__ import annotations

import asyncio
import gc
import os
import select
import sys
import threading
import weakref

import pytest
from conftest import LONG, eventually

import bgjob
from bgjob import State


def os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def test_context_runs_completions_on_the_dispatching_thread():
    seen = []
    with bgjob.Context() as ctx:
        jobs = [
            bgjob.start(lambda w, i: i, i, context=ctx, on_complete=lambda j: seen.append((j.result(), threading.get_ident())))
            for i in range(5)
        ]
        for job in jobs:
            job.wait(LONG)
        # wait() returning means the completion is queued: the fd is readable.
        assert ctx.pending == 5
        assert select.select([ctx], [], [], 0)[0] == [ctx]
        assert seen == []
        assert ctx.dispatch(max=2) == 2
        assert ctx.dispatch() == 3
        assert sorted(r for r, _ in seen) == [0, 1, 2, 3, 4]
        assert {t for _, t in seen} == {threading.get_ident()}
        assert ctx.pending == 0 and ctx.dispatched == 5
        assert select.select([ctx], [], [], 0)[0] == []
        for job in jobs:
            job.close()


def test_callback_exception_is_raised_by_dispatch():
    def boom(job):
        raise RuntimeError(f"callback of {job.name}")

    with bgjob.Context() as ctx:
        jobs = [bgjob.start(lambda w: None, name=f"j{i}", context=ctx, on_complete=boom) for i in range(2)]
        for job in jobs:
            job.wait(LONG)
        with pytest.raises(bgjob.CallbackErrors) as ei:
            ctx.dispatch()
        assert sorted(str(e) for e in ei.value.exceptions) == ["callback of j0", "callback of j1"]
        assert ctx.pending == 0
        for job in jobs:
            job.close()


def test_closing_a_context_drops_queued_completions():
    called = []
    ctx = bgjob.Context()
    job = bgjob.start(lambda w: "r", context=ctx, on_complete=called.append)
    job.wait(LONG)
    assert ctx.pending == 1
    ctx.close()
    ctx.close()  # idempotent
    assert called == []
    assert job._done  # the job still counts as ended for wait_async
    assert job.result() == "r"
    for call in (ctx.fileno, ctx.dispatch, lambda: ctx.pending):
        with pytest.raises(bgjob.InvalidHandle):
            call()
    with pytest.raises(bgjob.InvalidHandle):
        bgjob.start(lambda w: None, context=ctx)
    job.close()


def test_context_closed_while_its_job_runs(gate):
    called = []
    ctx = bgjob.Context()
    job = bgjob.start(lambda w: gate.wait(LONG), context=ctx, on_complete=called.append)
    ctx.close()
    gate.set()
    assert job.wait(LONG) == State.COMPLETED
    eventually(lambda: job._done, "dropped completion marks the job ended")
    assert called == []
    job.close()


def test_closing_a_job_before_its_completion_is_dispatched():
    names = []
    with bgjob.Context() as ctx:
        job = bgjob.start(lambda w: None, name="early", context=ctx, on_complete=lambda j: names.append(j.closed))
        job.wait(LONG)
        job.close()
        assert ctx.dispatch() == 1
        assert names == [True]


def test_asyncio_gathers_fifty_jobs():
    async def main():
        gate = threading.Event()
        running = threading.Semaphore(0)

        def work(w, i):
            running.release()
            gate.wait(LONG)
            w.set_total(1)
            w.add(1)
            return i * 10

        loop = asyncio.get_running_loop()
        jobs = [bgjob.start(work, i, name=f"aio-{i}") for i in range(50)]
        for _ in range(50):
            assert running.acquire(timeout=LONG)
        ctx = bgjob.loop_context(loop)
        threads_before = os_threads()
        waiting = asyncio.gather(*jobs)
        await asyncio.sleep(0.05)  # every task is now parked on its future
        # No thread per waiting job: awaiting 50 jobs started no thread.
        assert os_threads() <= threads_before
        assert not waiting.done()
        gate.set()
        results = await asyncio.wait_for(waiting, LONG)
        assert results == [i * 10 for i in range(50)]
        # The completions came through the loop's context fd (add_reader).
        assert ctx.dispatched == 50
        assert loop._default_executor is None  # no executor thread either
        states = await asyncio.gather(*(job.wait_async() for job in jobs))
        assert states == [State.COMPLETED] * 50
        for job in jobs:
            job.close()

    asyncio.run(main())


def test_await_raises_the_jobs_error():
    async def main():
        def work(w):
            raise KeyError("disk-7")

        job = bgjob.start(work, name="bad")
        with pytest.raises(KeyError) as ei:  # the worker's exception, as itself
            await job
        assert "bgjob job 'bad'" in ei.value.__notes__[0]
        assert ei.value is job.exception()
        assert await job.wait_async() == State.FAILED

        job2 = bgjob.start(lambda w: w.sleep(3600))
        job2.cancel()
        with pytest.raises(bgjob.Cancelled):
            await job2
        job.close()
        job2.close()

    asyncio.run(main())


def test_await_a_job_started_outside_the_loop(gate):
    # Its completion runs on the job's thread and wakes the loop with
    # call_soon_threadsafe: still no thread per waiting job.
    job = bgjob.start(lambda w: gate.wait(LONG) and "outside")

    async def main():
        asyncio.get_running_loop().call_later(0.01, gate.set)
        return await asyncio.wait_for(job, LONG)

    assert asyncio.run(main()) == "outside"
    job.close()


def test_many_tasks_await_one_job_and_a_waiter_is_cancelled(gate):
    async def main():
        job = bgjob.start(lambda w: gate.wait(LONG) and 7)
        waiters = [asyncio.ensure_future(job.wait_async()) for _ in range(5)]
        await asyncio.sleep(0)
        waiters[0].cancel()
        await asyncio.sleep(0)
        gate.set()
        got = await asyncio.gather(*waiters[1:])
        assert got == [State.COMPLETED] * 4
        assert waiters[0].cancelled()
        assert job._waiters == []
        assert await job == 7
        job.close()

    asyncio.run(main())


def test_on_complete_in_asyncio_runs_on_the_loop_thread():
    async def main():
        seen = []
        done = asyncio.Event()

        def on_complete(job):
            seen.append(threading.get_ident())
            done.set()

        job = bgjob.start(lambda w: None, on_complete=on_complete)
        await asyncio.wait_for(done.wait(), LONG)
        assert seen == [threading.get_ident()]
        job.close()

    asyncio.run(main())


def test_explicit_context_attached_to_a_loop():
    async def main():
        with bgjob.Context() as ctx:
            ctx.attach()
            job = bgjob.start(lambda w: "via ctx", context=ctx)
            assert await asyncio.wait_for(job, LONG) == "via ctx"
            assert ctx.dispatched == 1
            ctx.detach()
            job.close()

    asyncio.run(main())


def test_loop_context_goes_with_its_loop():
    async def main():
        job = bgjob.start(lambda w: None)
        await job
        job.close()
        return bgjob.loop_context()

    ctx = asyncio.run(main())
    # Retired as asyncio.run shut the loop down (its async generators).
    assert ctx.closed
    del ctx
    gc.collect()
    assert not [c for c in bgjob._job._contexts if not c.closed]

    # A loop closed by hand: its context goes when the loop is collected.
    loop = asyncio.new_event_loop()
    ctx = loop.run_until_complete(main())
    loop.close()
    assert not ctx.closed
    del loop
    gc.collect()
    assert ctx.closed


@pytest.mark.parametrize("how", ["asyncio.run", "loop.close"])
def test_job_that_outlives_its_loop_completes_anywhere(gate, how):
    # A regression test: a job made inside a loop that is then closed (by
    # asyncio.run, or by hand without shutting its async generators down)
    # must still be awaitable in another loop, run its on_complete, and be
    # freed when dropped.
    ran = []

    async def make():
        return bgjob.start(
            lambda w: gate.wait(LONG) and "late", name="outlives", on_complete=lambda j: ran.append(j.result())
        )

    if how == "asyncio.run":
        job = asyncio.run(make())
    else:
        loop = asyncio.new_event_loop()
        job = loop.run_until_complete(make())
        loop.close()
    gate.set()
    assert job.wait(LONG) == State.COMPLETED

    async def again():
        return await asyncio.wait_for(job, LONG)

    assert asyncio.run(again()) == "late"
    eventually(lambda: ran == ["late"], "on_complete ran once the first loop was gone")
    ref = weakref.ref(job)
    del job
    eventually(lambda: gc.collect() >= 0 and ref() is None, "the dropped Job was freed")


def test_dispatch_raises_every_callback_exception():
    # A regression test: on 3.9 and 3.10 every exception after the first was
    # lost. All of them reach the caller, on every version, in one group.
    errors = [KeyError("k"), ValueError("v"), OSError(5, "io")]

    def boom(job):
        raise errors[job.result()]

    with bgjob.Context() as ctx:
        jobs = [bgjob.start(lambda w, i: i, i, context=ctx, on_complete=boom) for i in range(3)]
        for job in jobs:
            job.wait(LONG)
        with pytest.raises(Exception) as ei:
            ctx.dispatch()
        group = ei.value
        got = getattr(group, "exceptions", (group,))
        assert sorted(map(repr, got)) == sorted(map(repr, errors)), (
            f"dispatch raised {group!r}, notes {getattr(group, '__notes__', None)}"
        )
        assert all(any(e is g for g in got) for e in errors)  # the very objects
        assert isinstance(group, bgjob.CallbackErrors)
        assert "3 completion callbacks raised" in str(group)
        if sys.version_info >= (3, 11):
            assert isinstance(group, ExceptionGroup)  # noqa: F821 (3.11+)
        assert ctx.pending == 0
        # One callback raising: that exception itself, as before.
        one = bgjob.start(lambda w: 0, context=ctx, on_complete=boom)
        one.wait(LONG)
        with pytest.raises(KeyError):
            ctx.dispatch()
        for job in jobs + [one]:
            job.close()


def test_cancelling_the_awaiting_task_cancels_the_job():
    async def main():
        job = bgjob.start(lambda w: w.sleep(3600), name="aio-cancel")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(job, 0.05)
        assert await job.wait_async() == State.CANCELLED
        assert job.info.cancel_cause == bgjob.CancelCause.CALLER

        task = asyncio.ensure_future(job2 := bgjob.start(lambda w: w.sleep(3600)))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await job2.wait_async() == State.CANCELLED

        # shield keeps the job running; wait_async only watches.
        job3 = bgjob.start(lambda w: w.sleep(3600))
        inner = asyncio.ensure_future(job3)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(inner), 0.05)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(job3.wait_async(), 0.05)
        assert job3.state == State.RUNNING
        assert job3.cancel()
        with pytest.raises(bgjob.Cancelled):
            await inner
        for j in (job, job2, job3):
            j.close()

    asyncio.run(main())


def test_jobs_in_asyncio_wait_and_task_groups(gate):
    async def main():
        jobs = [bgjob.start(lambda w, i: i * 2, i) for i in range(4)]
        done, pending = await asyncio.wait([asyncio.ensure_future(j) for j in jobs], timeout=LONG)
        assert not pending and sorted(t.result() for t in done) == [0, 2, 4, 6]
        tasks = [asyncio.create_task(j.result_async()) for j in jobs]
        assert await asyncio.gather(*tasks) == [0, 2, 4, 6]
        if sys.version_info >= (3, 11):
            # A failing member's TaskGroup teardown cancels the other jobs.
            stuck = bgjob.start(lambda w: w.sleep(3600), name="stuck")

            def bad(w):
                gate.wait(LONG)
                raise ValueError("bad")

            failing = bgjob.start(bad, name="failing")
            with pytest.raises(BaseException) as ei:  # an ExceptionGroup
                async with asyncio.TaskGroup() as tg:  # noqa: F821 (3.11+)
                    tg.create_task(stuck.result_async())
                    tg.create_task(failing.result_async())
                    await asyncio.sleep(0)
                    gate.set()
            assert ei.group_contains(ValueError, match="bad") if hasattr(ei, "group_contains") else True
            assert await stuck.wait_async() == State.CANCELLED
            jobs.extend([stuck, failing])
        for j in jobs:
            j.close()

    asyncio.run(main())
