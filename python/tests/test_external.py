"""External jobs through Python: no worker thread, ended by their owner with
``job.end``; verbs reach the owner through the ``control`` callable."""

from __future__ import annotations

import threading

import pytest
from conftest import LONG

import bgjob
from bgjob import CancelCause, Control, State


def test_external_job_runs_without_a_thread_and_ends_with_end():
    before = threading.active_count()
    done = []
    job = bgjob.Job(None, external=True, name="ext-py", total=10, on_complete=lambda j: done.append(j.state))
    assert job.state == State.RUNNING
    assert not job.cancelled()
    assert threading.active_count() == before
    assert job.info.total == 10
    owner = job.driver
    owner.add(4)
    owner.phase = "copying"
    assert job.info.current == 4 and job.phase == "copying"
    with pytest.raises(bgjob.NotAllowed):
        owner.pause_point()
    with pytest.raises(bgjob.NotAllowed):
        owner.sleep(0.01)
    job.end()
    # The completion ran on this thread, inside end().
    assert done == [State.COMPLETED]
    assert job.result(0) is None
    with pytest.raises(bgjob.NotAllowed):
        job.end()
    job.close()


def test_failure_and_cancel_through_end():
    job = bgjob.Job(None, external=True)
    job.end(5, "disk gone")
    assert job.state == State.FAILED
    assert job.error == bgjob.ErrorInfo(5, "disk gone")
    job.close()

    calls = []
    job = bgjob.Job(None, external=True, control=lambda j, what, arg: calls.append((what, arg)))
    assert job.cancel() == bgjob.CancelStatus.REQUESTED
    assert job.cancel() == bgjob.CancelStatus.ALREADY_REQUESTED
    assert calls == [(Control.CANCEL, 1)]
    job.end(125, "stopped")
    assert job.state == State.CANCELLED
    with pytest.raises(bgjob.Cancelled):
        job.result(0)
    job.close()


def test_control_sees_pause_resume_speed_on_the_calling_thread():
    calls = []
    threads = []

    def control(j, what, arg):
        threads.append(threading.get_ident())
        calls.append((what, arg))
        # No bgjob lock is held: reading the job from here is fine.
        assert j.info.state in (State.RUNNING, State.PAUSED)

    job = bgjob.Job(None, external=True, control=control)
    job.pause()
    assert job.state == State.PAUSED
    job.resume()
    job.speed = 1 << 20
    assert job.speed == 1 << 20
    assert calls == [(Control.PAUSE, 0), (Control.RESUME, 0), (Control.SET_SPEED, 1 << 20)]
    assert set(threads) == {threading.get_ident()}
    job.end()
    with pytest.raises(bgjob.NotAllowed):
        job.speed = 5  # refused once ended
    job.close()


def test_worker_only_calls_are_refused_and_a_deadline_cancels():
    got = threading.Event()
    causes = []

    def control(j, what, arg):
        causes.append((what, j.info.cancel_cause))
        j.end(125, "timed out")  # ended from inside the control callable
        got.set()

    job = bgjob.Job(None, external=True, deadline=0.05, control=control)
    assert got.wait(LONG)
    assert causes == [(Control.CANCEL, CancelCause.TIMEOUT)]
    assert job.state == State.CANCELLED
    with pytest.raises(bgjob.DeadlineExceeded):
        job.result(0)
    job.close()


def test_a_worker_with_external_is_refused():
    with pytest.raises(TypeError):
        bgjob.Job(lambda w: None, external=True)


def test_threaded_job_gets_control_too():
    calls = []

    def work(w):
        while True:
            w.pause_point()

    job = bgjob.Job(work, control=lambda j, what, arg: calls.append(what))
    job.cancel()
    assert job.wait(LONG) == State.CANCELLED
    # Told on this thread, before cancel() returned.
    assert calls == [Control.CANCEL]
    job.close()
