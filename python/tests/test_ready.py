"""READY, STANDBY and PENDING, complete and soft cancel, and progress that
never parks, through Python."""

from __future__ import annotations

import os
import threading

import pytest
from conftest import LONG, eventually

import bgjob
from bgjob import State


def test_ready_complete_wakes_a_sleeping_worker():
    ready = threading.Event()
    seen = []

    def mirror(w):
        w.set_ready()
        w.set_ready()  # idempotent
        ready.set()
        while True:
            w.sleep(3600)  # only complete (or cancel) ends this early
            if w.complete_requested:
                seen.append(w.info.state)
                return "pivoted"

    job = bgjob.start(mirror)
    assert ready.wait(LONG)
    assert job.state == State.READY
    assert not job.complete_requested
    job.complete()
    assert job.wait(LONG) == State.COMPLETED
    assert job.complete_requested
    assert job.info.complete_requested
    assert seen == [State.READY]
    assert job.result() == "pivoted"
    job.close()


def test_complete_is_refused_outside_ready_and_pause_makes_standby():
    go = threading.Event()
    ready = threading.Event()

    def work(w):
        go.wait(LONG)
        w.set_ready()
        ready.set()
        while not w.complete_requested:
            w.sleep(3600)

    job = bgjob.start(work)
    with pytest.raises(bgjob.NotAllowed):
        job.complete()  # RUNNING
    go.set()
    assert ready.wait(LONG)
    job.pause()
    assert job.state == State.STANDBY
    with pytest.raises(bgjob.NotAllowed):
        job.complete()  # STANDBY: resume first
    job.resume()
    assert job.state == State.READY
    job.complete()
    assert job.wait(LONG) == State.COMPLETED
    with pytest.raises(bgjob.NotAllowed):
        job.complete()  # ended
    job.close()


def test_wait_fd_returns_no_events_on_complete():
    r, w = os.pipe()
    got = []
    ready = threading.Event()

    def work(wk):
        wk.set_ready()
        ready.set()
        got.append(wk.wait_fd(r))  # nothing is ever written
        got.append(wk.complete_requested)

    try:
        job = bgjob.start(work)
        assert ready.wait(LONG)
        eventually(lambda: job.state == State.READY, "ready")
        job.complete()
        assert job.wait(LONG) == State.COMPLETED
        assert got == [0, True]
        job.close()
    finally:
        os.close(r)
        os.close(w)


def test_soft_cancel_of_a_ready_job_completes_it():
    ready = threading.Event()
    soft = []

    def work(w):
        w.set_ready()
        ready.set()
        try:
            w.sleep(3600)
        except bgjob.Cancelled:
            soft.append(w.cancel_is_soft)
            return "no pivot"  # a soft cancel: finish, and succeed
        return "slept"

    job = bgjob.start(work)
    assert ready.wait(LONG)
    assert job.cancel(soft=True) == bgjob.CancelStatus.REQUESTED
    assert job.wait(LONG) == State.COMPLETED
    info = job.info
    assert info.cancel_requested and info.cancel_soft
    assert soft == [True]
    assert job.result() == "no pivot"
    job.close()


def test_soft_cancel_outside_ready_is_a_cancel_and_force_clears_soft():
    job = bgjob.start(lambda w: w.sleep(3600))
    eventually(lambda: job.state == State.RUNNING, "running")
    assert job.cancel(soft=True) == bgjob.CancelStatus.REQUESTED
    assert job.wait(LONG) == State.CANCELLED
    assert not job.info.cancel_soft
    job.close()

    ready = threading.Event()
    release = threading.Event()
    soft = []

    def work(w):
        w.set_ready()
        ready.set()
        release.wait(LONG)
        soft.append(w.cancel_is_soft)
        w.check_cancel()

    job = bgjob.start(work)
    assert ready.wait(LONG)
    assert job.cancel(soft=True) == bgjob.CancelStatus.REQUESTED
    assert job.info.cancel_soft
    assert job.cancel() == bgjob.CancelStatus.REQUESTED  # made force
    assert not job.info.cancel_soft
    release.set()
    assert job.wait(LONG) == State.CANCELLED
    assert soft == [False]
    job.close()


def test_manual_finalize_transaction_goes_waiting_then_pending():
    release = threading.Event()
    txn = bgjob.Transaction(manual_finalize=True)
    quick = bgjob.Job(lambda w: 1, start=False)
    slow = bgjob.Job(lambda w: release.wait(LONG), start=False)
    txn.add(quick)
    txn.add(slow)
    txn.start()
    eventually(lambda: quick.state == State.WAITING, "quick waits for its sibling")
    assert slow.state == State.RUNNING
    release.set()
    eventually(lambda: quick.state == State.PENDING and slow.state == State.PENDING, "pending")
    txn.finalize()
    assert quick.wait(LONG) == State.COMPLETED
    assert slow.wait(LONG) == State.COMPLETED
    quick.close()
    slow.close()


def test_updates_never_park_with_the_worker_holding_its_own_lock():
    domain = threading.Lock()
    paused = threading.Event()
    updates = []

    def work(w):
        paused.wait(LONG)
        with domain:
            # Paused: without the flag this call would park with the lock held.
            w.add(1)
            updates.append(w.info.state)
        w.pause_point()  # parks here, lock released

    job = bgjob.Job(work, updates_never_park=True)
    eventually(lambda: job.state == State.RUNNING, "running")
    job.pause()
    paused.set()
    eventually(lambda: updates == [State.PAUSED], "the update returned while paused")
    with domain:  # the caller's resume path takes the worker's lock
        job.resume()
    assert job.wait(LONG) == State.COMPLETED
    job.close()
