"""Typed job statistics, the operation name and owner tag, and the listing."""

from __future__ import annotations

import threading

import pytest
from conftest import LONG

import bgjob
from bgjob import CancelCause, State, StatType


def test_declare_set_and_read_every_type():
    job = bgjob.Job(
        lambda w: None,
        start=False,
        stats={
            "data_processed": (StatType.U64, "bytes"),
            "delta": StatType.I64,
            "dirty_rate": (StatType.DOUBLE, "pages/s"),
            "status": StatType.STRING,
        },
    )
    with job:
        assert job.stats() == {"data_processed": 0, "delta": 0, "dirty_rate": 0.0, "status": ""}
        assert job.stat_units() == {"data_processed": "bytes", "delta": "", "dirty_rate": "pages/s", "status": ""}
        job.set_stat("data_processed", 2**64 - 1)
        job.set_stat("delta", -(2**63))
        job.set_stat(2, 1.5)
        job.set_stat("status", "converging")
        assert job.stats() == {
            "data_processed": 2**64 - 1,
            "delta": -(2**63),
            "dirty_rate": 1.5,
            "status": "converging",
        }
        assert [s.type for s in job.stat_list()] == [StatType.U64, StatType.I64, StatType.DOUBLE, StatType.STRING]
        job.set_stats({"data_processed": 7, "delta": -7, "status": "batch"})
        assert job.stats()["status"] == "batch"
        assert job.stats()["delta"] == -7


def test_declare_rules():
    with bgjob.Job(lambda w: None, start=False) as job:
        assert job.add_stat("a", StatType.U64) == 0
        assert job.add_stat("b", StatType.STRING, "unit") == 1
        with pytest.raises(bgjob.InvalidArgument):
            job.add_stat("a", StatType.I64)  # duplicate
        with pytest.raises(bgjob.InvalidArgument):
            job.add_stat("", StatType.I64)
        with pytest.raises(bgjob.InvalidArgument):
            job.add_stat("x" * 64, StatType.I64)
        with pytest.raises(ValueError):
            job.add_stat("c", 9)  # not a StatType
        # Wrong value types are refused before the call.
        with pytest.raises(bgjob.InvalidArgument):
            job.set_stat("a", -1)
        with pytest.raises(bgjob.InvalidArgument):
            job.set_stat("a", "text")
        with pytest.raises(bgjob.InvalidArgument):
            job.set_stat("b", 3)
        with pytest.raises(bgjob.InvalidArgument):
            job.set_stat("nope", 3)
        job.start()
        job.wait(LONG)
        with pytest.raises(bgjob.NotAllowed):
            job.add_stat("late", StatType.U64)


def test_worker_sets_stats_and_they_stay_after_the_end():
    def work(w):
        w.set_stat("copied", 4096)
        w.set_stats({"copied": 8192, "status": "done"})
        raise RuntimeError("disk full")

    job = bgjob.Job(work, stats={"copied": (StatType.U64, "bytes"), "status": StatType.STRING})
    with job:
        assert job.wait(LONG) == State.FAILED
        info, stats = job.info_and_stats()
        assert info.state == State.FAILED
        assert stats == {"copied": 8192, "status": "done"}
        assert job.stats() == stats
        with pytest.raises(bgjob.NotAllowed):
            job.set_stat("copied", 1)


def test_reader_never_sees_a_torn_batch():
    stop = threading.Event()

    def work(w):
        i = 0
        while not w.cancelled:
            i += 1
            w.set_stats({"a": i, "b": -i, "s": str(i)})
        return i

    job = bgjob.Job(work, stats={"a": StatType.U64, "b": StatType.I64, "s": StatType.STRING})
    with job:
        seen = set()
        while len(seen) < 200:
            st = job.stats()
            if st["a"]:
                assert st["b"] == -st["a"] and st["s"] == str(st["a"]), st
                seen.add(st["a"])
        stop.set()
        job.cancel()
        job.wait(LONG)


def test_operation_owner_and_listing():
    with bgjob.Job(lambda w: None, start=False, name="lst", operation="mirror", owner="domain vm1") as job:
        assert job.operation == "mirror"
        assert job.owner == "domain vm1"
        entry = {e.id: e for e in bgjob.list_jobs()}[job.id]
        assert (entry.operation, entry.owner) == ("mirror", "domain vm1")
        assert entry.pause_count == 0 and not entry.cancel_requested
        assert entry.cancel_cause == CancelCause.NONE and entry.parent_id == 0
        job.cancel()
        job.wait(LONG)
        entry = {e.id: e for e in bgjob.list_jobs()}[job.id]
        assert entry.cancel_requested and entry.cancel_cause == CancelCause.CALLER
    with bgjob.Job(lambda w: None, start=False) as plain:
        assert plain.operation == "" and plain.owner == ""


def test_more_stats_than_the_first_buffer_holds():
    # The binding reads 16 at first; a job with more is read whole.
    names = {f"s{i:02}": StatType.U64 for i in range(40)}
    with bgjob.Job(lambda w: None, start=False, stats=names) as job:
        job.set_stats({f"s{i:02}": i for i in range(40)})
        assert job.stats() == {f"s{i:02}": i for i in range(40)}
        info, stats = job.info_and_stats()
        assert info.state == State.CREATED and len(stats) == 40
