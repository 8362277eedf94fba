"""The newer exports through Python: cancellable fd waits, deadlines, child
processes, internal pauses, the I/O error policy, finalize and transactions."""

from __future__ import annotations

import errno
import os
import select
import threading

import pytest
from conftest import LONG, eventually

import bgjob
from bgjob import CancelCause, ErrorAction, ErrorPolicy, IoStatus, State


def test_wait_fd_readable_and_cancelled():
    r, w = os.pipe()
    try:
        waiting = threading.Event()
        got = []

        def work(wk):
            got.append(wk.wait_fd(r, bgjob.FD_READABLE, timeout=LONG))
            got.append(os.read(r, 5))
            with pytest.raises(bgjob.TimedOut):
                wk.wait_fd(r, timeout=0)
            waiting.set()
            wk.wait_fd(r)  # nothing more comes: only cancel ends this

        job = bgjob.start(work)
        os.write(w, b"hello")
        assert waiting.wait(LONG)
        job.cancel()
        assert job.wait(LONG) == State.CANCELLED
        assert got == [bgjob.FD_READABLE, b"hello"]
        job.close()
    finally:
        os.close(r)
        os.close(w)


def test_wake_fd_for_a_workers_own_poll_loop():
    seen = []
    ready = threading.Event()

    def work(wk):
        fd = wk.wake_fd
        seen.append(select.select([fd], [], [], 0)[0])
        ready.set()
        select.select([fd], [], [], LONG)
        seen.append(select.select([fd], [], [], 0)[0] == [fd])
        wk.pause_point()  # raises Cancelled

    job = bgjob.start(work)
    ready.wait(LONG)
    job.cancel()
    assert job.wait(LONG) == State.CANCELLED
    assert seen == [[], True]
    job.close()


def test_deadline_cancels_with_cause_timeout():
    with bgjob.start(lambda w: w.sleep(3600), deadline=0.05) as job:
        assert job.wait(LONG) == State.CANCELLED
        assert job.info.cancel_cause == CancelCause.TIMEOUT
    with bgjob.start(lambda w: w.sleep(3600)) as job:
        job.set_deadline(0.01)
        assert job.wait(LONG) == State.CANCELLED
        assert job.info.cancel_cause == CancelCause.TIMEOUT
    with bgjob.start(lambda w: w.sleep(3600)) as job:
        job.cancel()
        job.wait(LONG)
        assert job.info.cancel_cause == CancelCause.CALLER


def test_set_deadline_none_removes_it_and_zero_is_now():
    # None maps to the header's -1 (no deadline): the 0.2 s deadline is gone,
    # so the job is still running after a 0.5 s wait and ends by the caller.
    # Removed before the start, so no stall of this thread can let it pass.
    with bgjob.Job(lambda w: w.sleep(3600), deadline=0.2, start=False) as job:
        job.set_deadline(None)
        job.start()
        with pytest.raises(bgjob.TimedOut):
            job.wait(0.5)
        job.cancel()
        assert job.wait(LONG) == State.CANCELLED
        assert job.info.cancel_cause == CancelCause.CALLER
    # 0 is "now": cancelled at once, by its deadline.
    with bgjob.start(lambda w: w.sleep(3600)) as job:
        job.set_deadline(0)
        assert job.wait(LONG) == State.CANCELLED
        assert job.info.cancel_cause == CancelCause.TIMEOUT


def test_child_process_output_and_exit_code():
    lines = []

    def work(w):
        return w.run(
            ["sh", "-c", "echo out-1; echo err-1 >&2; echo out-2; exit 3"],
            stdout="capture",
            stderr="capture",
            on_line=lambda stream, line: lines.append((stream, line)),
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        )

    with bgjob.start(work) as job:
        assert job.wait(LONG) == State.COMPLETED
        assert job.result() == 3
    out = [line for s, line in lines if s == 1]
    err = [line for s, line in lines if s == 2]
    assert [x.rstrip("\n") for x in out] == ["out-1", "out-2"]
    assert [x.rstrip("\n") for x in err] == ["err-1"]


def test_cancel_kills_and_reaps_the_child(tmp_path):
    pids = []
    spawned = threading.Event()

    def work(w):
        pid = w.spawn(["sleep", "3600"], grace=0.05)
        pids.append(pid)
        spawned.set()
        try:
            w.wait_child(pid)
        except bgjob.Cancelled:
            pids.append("cancelled")
            raise

    job = bgjob.start(work)
    spawned.wait(LONG)
    job.cancel()
    assert job.wait(LONG) == State.CANCELLED
    assert pids[1] == "cancelled"
    # Reaped by bgjob: no such process, not even a zombie.
    assert not os.path.exists(f"/proc/{pids[0]}")
    job.close()


def test_spawn_errors():
    def work(w):
        with pytest.raises(bgjob.SystemCallFailed) as ei:
            w.spawn(["/nonexistent/program"])
        assert ei.value.errno == errno.ENOENT and isinstance(ei.value, OSError)
        with pytest.raises(bgjob.InvalidArgument):
            w.spawn([])
        with pytest.raises(bgjob.InvalidArgument):
            w.spawn(["true"], stdout="pipe")
        with pytest.raises(bgjob.NotFound):
            w.wait_child(1)
        return "checked"

    with bgjob.start(work) as job:
        job.wait(LONG)
        assert job.result() == "checked", job.error


def test_internal_pause_is_counted_apart(gate):
    steps = []
    started = threading.Event()

    def work(w):
        started.set()
        gate.wait(LONG)
        w.add(1)  # parks here while any pause is in force
        steps.append("past")

    with bgjob.start(work) as job:
        started.wait(LONG)
        job.pause_internal()
        job.pause_internal()
        info = job.info
        assert info.state == State.RUNNING and info.pause_count == 2
        gate.set()
        job.resume_internal()
        with pytest.raises(bgjob.TimedOut):
            job.wait(0.05)
        assert steps == []
        job.resume_internal()
        with pytest.raises(bgjob.NotAllowed):
            job.resume_internal()  # unbalanced
        assert job.wait(LONG) == State.COMPLETED
        assert steps == ["past"]


def test_error_policy_stop_pauses_then_retries():
    actions = []

    def work(w):
        for attempt in range(2):
            act = w.report_io_error(OSError(errno.ENOSPC, "disk full"))
            actions.append(act)
            if act == ErrorAction.STOP:
                w.pause_point()  # parks until resumed
                continue
        return "retried"

    with bgjob.start(work, error_policy=ErrorPolicy.ENOSPC, start=True) as job:
        eventually(lambda: job.state == State.PAUSED, "the job stopped on ENOSPC")
        info = job.info
        assert info.iostatus == IoStatus.NOSPACE and info.error_policy == ErrorPolicy.ENOSPC
        job.set_error_policy(ErrorPolicy.IGNORE)
        job.resume()
        assert job.wait(LONG) == State.COMPLETED
        assert job.info.iostatus == IoStatus.OK
        assert actions == [ErrorAction.STOP, ErrorAction.IGNORE]
        assert job.result() == "retried"


def test_error_policy_report():
    def work(w):
        if w.report_io_error(errno.EIO, "read failed") == ErrorAction.REPORT:
            raise OSError(errno.EIO, "read failed")

    with bgjob.start(work) as job:
        assert job.wait(LONG) == State.FAILED
        assert job.error.code == errno.EIO


def test_manual_finalize_runs_commit_and_clean():
    calls = []
    job = bgjob.Job(
        lambda w: "work done",
        manual_finalize=True,
        on_commit=lambda j: calls.append(("commit", j.state)),
        on_abort=lambda j: calls.append("abort"),
        on_clean=lambda j: calls.append("clean"),
    )
    eventually(lambda: job.state == State.PENDING, "work done, waiting for finalize")
    assert calls == []
    job.finalize()
    # Finalized, the job is WAITING while commit and clean run (PENDING ->
    # WAITING -> COMPLETED), as every job's end and an external job's.
    assert calls == [("commit", State.WAITING), "clean"]
    assert job.wait(LONG) == State.COMPLETED
    assert job.result() == "work done"
    job.close()


def test_transaction_failure_cancels_the_others():
    calls = []
    ok_started = threading.Event()

    def ok(w):
        ok_started.set()
        w.sleep(3600)

    def bad(w):
        ok_started.wait(LONG)
        raise RuntimeError("member failed")

    with bgjob.Transaction() as txn:
        a = txn.add(bgjob.Job(ok, name="a", start=False, on_commit=lambda j: calls.append("commit a"),
                              on_abort=lambda j: calls.append("abort a"), on_clean=lambda j: calls.append("clean a")))
        b = txn.add(bgjob.Job(bad, name="b", start=False, on_abort=lambda j: calls.append("abort b")))
        txn.start()
        assert a.wait(LONG) == State.CANCELLED
        assert b.wait(LONG) == State.FAILED
        assert a.info.cancel_cause == CancelCause.TRANSACTION
        assert "commit a" not in calls
        assert sorted(calls) == ["abort a", "abort b", "clean a"]
        assert calls.index("clean a") > calls.index("abort a")
        late = bgjob.Job(ok, start=False)
        with pytest.raises(bgjob.NotAllowed):
            txn.add(late)  # the transaction has started
        late.close()
    for job in (a, b):
        job.close()
    with pytest.raises(bgjob.InvalidHandle):
        txn.start()


def test_transaction_success_commits_all():
    calls = []
    with bgjob.Transaction() as txn:
        jobs = [
            txn.add(bgjob.Job(lambda w, i: i, i, start=False, on_commit=lambda j: calls.append(j.name)))
            for i in range(3)
        ]
        txn.start()
        assert [j.wait(LONG) for j in jobs] == [State.COMPLETED] * 3
        assert sorted(calls) == sorted(j.name for j in jobs)
        assert [j.result() for j in jobs] == [0, 1, 2]
    for job in jobs:
        job.close()


def test_pool_cap_queues_jobs_beyond_it(gate):
    running = []
    lock = threading.Lock()

    def work(w, i):
        with lock:
            running.append(i)
        gate.wait(LONG)
        return i

    bgjob.set_max_running(2)
    try:
        jobs = [bgjob.start(work, i) for i in range(5)]
        eventually(lambda: len(running) == 2, "two workers run")
        status = bgjob.pool_status()
        assert status == bgjob.PoolStatus(max_running=2, running=2, queued=3)
        assert all(j.state == State.RUNNING for j in jobs)  # queued ones too
        jobs[4].cancel()  # a queued job ends at once, its worker never runs
        assert jobs[4].wait(LONG) == State.CANCELLED
        gate.set()
        assert [j.wait(LONG) for j in jobs[:4]] == [State.COMPLETED] * 4
        assert sorted(running) == [0, 1, 2, 3]
        with pytest.raises(bgjob.InvalidArgument):
            bgjob.set_max_running(-1)
    finally:
        bgjob.set_max_running(0)
    assert bgjob.pool_status().max_running == 0
    for job in jobs:
        job.close()
