"""Shared references (Job.ref, bgjob.lookup) and sub-jobs (parent=)."""

from __future__ import annotations

import threading

import pytest
from conftest import LONG, eventually

import bgjob
from bgjob import CancelCause, State


def until_cancel(w):
    while True:
        w.pause_point()
        w.sleep(0.001)


def test_ref_is_a_handle_of_its_own():
    gate = threading.Event()
    with bgjob.start(lambda w: gate.wait(LONG)) as job:
        r = job.ref()
        assert r.id == job.id
        assert r.state == State.RUNNING
        r.close()
        with pytest.raises(bgjob.InvalidHandle):
            r.state
        # The creator's handle is untouched by the release.
        assert job.state == State.RUNNING
        gate.set()
        assert job.wait(LONG) == State.COMPLETED


def test_lookup_finds_a_live_job_and_not_a_made_up_id():
    with bgjob.start(until_cancel) as job:
        with bgjob.lookup(job.id) as h:
            assert h.id == job.id
            assert h.info.state == State.RUNNING
            h.cancel()
            assert h.wait(LONG) == State.CANCELLED
        assert job.state == State.CANCELLED
    with pytest.raises(bgjob.InvalidArgument):
        bgjob.lookup(2**63)


def test_cancel_flows_down_to_children_with_cause_parent():
    with bgjob.start(until_cancel, name="parent") as parent:
        with bgjob.start(until_cancel, parent=parent, name="child") as child:
            with bgjob.Job(until_cancel, parent=child, name="grandchild") as grandchild:
                tree = {e.id: e.parent_id for e in bgjob.list_jobs()}
                assert tree[parent.id] == 0
                assert tree[child.id] == parent.id
                assert tree[grandchild.id] == child.id
                parent.cancel()
                assert parent.wait(LONG) == State.CANCELLED
                # The parent ended last.
                assert child.state == State.CANCELLED
                assert grandchild.state == State.CANCELLED
                assert child.info.cancel_cause == CancelCause.PARENT
                assert grandchild.info.cancel_cause == CancelCause.PARENT


def test_parent_waits_for_its_child_and_keeps_its_own_outcome():
    gate = threading.Event()

    def failing_child(w):
        gate.wait(LONG)
        raise OSError(5, "child failed")

    with bgjob.Job(lambda w: "parent done", start=False) as parent:
        with bgjob.start(failing_child, parent=parent) as child:
            parent.start()
            eventually(lambda: parent.state == State.WAITING, "parent held WAITING")
            assert child.state == State.RUNNING
            gate.set()
            assert parent.wait(LONG) == State.COMPLETED
            assert child.state == State.FAILED
            assert parent.result() == "parent done"


def test_an_ended_parent_is_refused():
    with bgjob.start(lambda w: None) as parent:
        parent.wait(LONG)
        with pytest.raises(bgjob.NotAllowed):
            bgjob.Job(lambda w: None, parent=parent)
    with pytest.raises(TypeError):
        bgjob.Job(lambda w: None, parent=object())
