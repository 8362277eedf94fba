"""What an external job's owner tells bgjob beyond progress and its end, as a
QEMU driver does: the states bgjob cannot infer (``report_state``), the
manual finalize forwarded as ``Control.FINALIZE``, a forwarded verb that
failed (``control_failed``, ``control_error``, the CONTROL_FAILED event), and
waits for a state that is not the end (``wait_state``, ``wait_state_async``)."""

from __future__ import annotations

import asyncio
import errno
import threading
import time

import pytest

import bgjob
from bgjob import Control, EventKind, State


class Owner:
    """A job's control and event callables, recording what they saw."""

    def __init__(self) -> None:
        self.calls: list[tuple[Control, int]] = []
        self.events: list[bgjob.Event] = []
        self.inside: list[str] = []

    def control(self, job: bgjob.Job, what: Control, arg: int) -> None:
        self.calls.append((what, arg))

    def on_event(self, job: bgjob.Job, ev: bgjob.Event) -> None:
        self.events.append(ev)

    def trail(self) -> list[tuple[State, State]]:
        return [(e.old_state, e.new_state) for e in self.events if e.kind == EventKind.STATE_CHANGED]

    def told(self, what: Control) -> int:
        return sum(1 for w, _ in self.calls if w == what)


def ext(owner: Owner, **kw) -> bgjob.Job:
    return bgjob.Job(None, external=True, control=owner.control, on_event=owner.on_event, **kw)


REPORTABLE = (State.WAITING, State.PENDING, State.ABORTING)


def test_report_state_table():
    allowed = {
        State.RUNNING: set(REPORTABLE),
        State.PAUSED: set(REPORTABLE),
        State.READY: set(REPORTABLE),
        State.STANDBY: set(REPORTABLE),
        State.WAITING: set(REPORTABLE),
        State.PENDING: {State.PENDING, State.ABORTING},
        State.ABORTING: {State.ABORTING},
    }
    for start, ok in allowed.items():
        for to in State:
            o = Owner()
            job = ext(o)
            if start in (State.READY, State.STANDBY):
                job.set_ready()
            if start in (State.PAUSED, State.STANDBY):
                job.pause()
            if start in REPORTABLE:
                job.report_state(start)
            assert job.state == start
            n = len(o.events)
            if to not in REPORTABLE:
                with pytest.raises(bgjob.InvalidArgument):
                    job.report_state(to)
                assert job.state == start
            elif to in ok:
                job.report_state(to)
                assert job.state == to
                assert len(o.events) == n + (0 if to == start else 1)
            else:
                with pytest.raises(bgjob.NotAllowed):
                    job.report_state(to)
                assert job.state == start and len(o.events) == n
            job.end(5, "over")
            if job.state == State.PENDING:
                job.finalize()
            job.wait(5)
            job.close()


def test_reports_after_the_end_are_refused_and_nothing_is_lost():
    o = Owner()
    job = ext(o)
    job.control_failed(Control.SET_SPEED, errno.EINVAL, "speed refused")
    job.end(5, "failed in QEMU")
    for s in REPORTABLE:
        with pytest.raises(bgjob.NotAllowed):
            job.report_state(s)
    with pytest.raises(bgjob.NotAllowed):
        job.control_failed(Control.PAUSE, 5, "late")
    assert job.state == State.FAILED
    assert job.error == bgjob.ErrorInfo(5, "failed in QEMU")
    assert job.control_error == bgjob.ControlError(Control.SET_SPEED, errno.EINVAL, "speed refused")
    job.close()
    # A threaded job has no reported states.
    gate = threading.Event()
    job = bgjob.Job(lambda w: gate.wait(5))
    with pytest.raises(bgjob.NotAllowed):
        job.report_state(State.PENDING)
    assert job.control_error is None
    gate.set()
    job.wait(5)
    job.close()


def test_manual_finalize_is_forwarded_once_and_the_end_finalizes():
    o = Owner()
    done = []
    job = ext(o, manual_finalize=True, on_complete=lambda j: done.append(j.state))
    job.report_state(State.WAITING)
    job.finalize()  # asked early: told once QEMU says PENDING
    assert o.told(Control.FINALIZE) == 0
    job.report_state(State.PENDING)
    assert o.told(Control.FINALIZE) == 1
    with pytest.raises(bgjob.NotAllowed):
        job.finalize()
    assert job.state == State.PENDING and done == []
    job.end()
    assert done == [State.COMPLETED]
    assert o.trail() == [
        (State.CREATED, State.RUNNING),
        (State.RUNNING, State.WAITING),
        (State.WAITING, State.PENDING),
        (State.PENDING, State.WAITING),
        (State.WAITING, State.COMPLETED),
    ]
    job.close()


def test_auto_finalize_refuses_a_finalize():
    o = Owner()
    job = ext(o)
    job.report_state(State.PENDING)
    with pytest.raises(bgjob.NotAllowed):
        job.finalize()
    job.end()
    assert job.state == State.COMPLETED and o.told(Control.FINALIZE) == 0
    job.close()


def test_control_failed_undoes_and_is_visible():
    o = Owner()
    job = ext(o, manual_finalize=True)
    job.pause()
    job.control_failed(Control.PAUSE, OSError(errno.EBUSY, "Job is busy"))
    assert job.state == State.RUNNING
    assert job.control_error == bgjob.ControlError(Control.PAUSE, errno.EBUSY, "[Errno 16] Job is busy")
    failed = [e for e in o.events if e.kind == EventKind.CONTROL_FAILED]
    assert len(failed) == 1 and failed[0].error_code == errno.EBUSY
    job.set_ready()
    job.complete()
    job.control_failed(Control.COMPLETE, 1, "not ready")
    assert not job.complete_requested
    job.complete()
    assert o.told(Control.COMPLETE) == 2
    job.speed = 100
    job.speed = 900
    job.control_failed(Control.SET_SPEED, 22)
    assert job.speed == 100
    job.report_state(State.PENDING)
    job.finalize()
    job.control_failed(Control.FINALIZE, 5, "x" * 1000)
    assert job.control_error.message == "x" * 1000
    job.finalize()
    assert o.told(Control.FINALIZE) == 2
    with pytest.raises(bgjob.InvalidArgument):
        job.control_failed(Control.PAUSE, 0)
    job.end()
    assert job.state == State.COMPLETED
    job.close()


def test_calls_back_in_from_the_control_callable():
    done = []

    def control(job: bgjob.Job, what: Control, arg: int) -> None:
        if what == Control.PAUSE:
            job.control_failed(what, errno.EINVAL, "cannot pause a waiting job")
        if what == Control.CANCEL:
            job.report_state(State.ABORTING)
            job.end(errno.ECANCELED, "cancelled")

    job = bgjob.Job(None, external=True, control=control, on_complete=lambda j: done.append(j.state))
    job.pause()
    assert job.state == State.RUNNING
    job.report_state(State.PENDING)
    job.cancel()
    assert done == [State.CANCELLED]
    job.close()


def test_transaction_of_external_jobs_finalized_through_one_owner():
    owners = [Owner(), Owner()]
    txn = bgjob.Transaction(manual_finalize=True)
    jobs = [txn.add(ext(o, start=False)) for o in owners]
    txn.start()
    for j in jobs:
        j.report_state(State.WAITING)
    for j in jobs:
        j.report_state(State.PENDING)
    jobs[1].finalize()
    assert [o.told(Control.FINALIZE) for o in owners] == [0, 1]
    for j in jobs:
        j.end()
    assert [j.wait(5) for j in jobs] == [State.COMPLETED, State.COMPLETED]
    txn.close()
    for j in jobs:
        j.close()


def test_reports_from_several_threads():
    for _ in range(10):
        o = Owner()
        job = ext(o, manual_finalize=True)
        stop = threading.Event()

        def hammer() -> None:
            while not stop.is_set():
                for call in (
                    lambda: job.report_state(State.WAITING),
                    lambda: job.control_failed(Control.PAUSE, 5),
                    job.pause,
                    lambda: job.report_state(State.PENDING),
                    job.finalize,
                ):
                    try:
                        call()
                    except (bgjob.NotAllowed, bgjob.InvalidHandle):
                        pass

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(0.02)
        job.end()
        stop.set()
        for t in threads:
            t.join()
        if job.state == State.PENDING:
            job.finalize()
        assert job.wait(5) == State.COMPLETED
        assert sum(1 for e in o.events if e.kind == EventKind.END) == 1
        job.close()


def test_wait_state_blocking():
    job = bgjob.Job(None, external=True, manual_finalize=True)
    with pytest.raises(bgjob.TimedOut):
        job.wait_state(State.READY, 0.02)
    threading.Timer(0.03, job.set_ready).start()
    assert job.wait_state(State.READY, 5) == State.READY
    threading.Timer(0.03, lambda: job.report_state(State.PENDING)).start()
    assert job.wait_state(State.PENDING) == State.PENDING
    job.finalize()
    threading.Timer(0.03, job.end).start()
    assert job.wait_state(State.STANDBY, 5) == State.COMPLETED
    job.close()


def test_wait_state_async():
    async def main() -> list[State]:
        job = bgjob.Job(None, external=True)
        loop = asyncio.get_running_loop()
        loop.call_later(0.03, job.set_ready)
        got = [await job.wait_state_async(State.READY)]
        with pytest.raises(bgjob.TimedOut):
            await job.wait_state_async(State.PENDING, timeout=0.02)
        loop.call_later(0.03, job.end)
        got.append(await job.wait_state_async(State.PENDING, timeout=5))
        job.close()
        return got

    assert asyncio.run(main()) == [State.READY, State.COMPLETED]
