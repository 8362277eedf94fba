"""Job(on_event=...): every state change, I/O errors and the end, in order."""

from __future__ import annotations

import errno
import gc
import threading

from conftest import LONG, eventually

import bgjob
from bgjob import ErrorAction, Event, EventKind, State


def gated_worker(go: threading.Event):
    def work(w):
        while not go.is_set():
            w.pause_point()
            go.wait(0.001)
        return "done"

    return work


def changes(events: list[Event]) -> list[tuple[EventKind, State, State]]:
    return [(e.kind, e.old_state, e.new_state) for e in events]


def test_run_pause_resume_end_in_order_and_end_before_completion():
    events: list[Event] = []
    at_completion: list[int] = []
    go = threading.Event()
    job = bgjob.Job(
        gated_worker(go),
        context=None,
        on_event=lambda j, e: events.append(e),
        on_complete=lambda j: at_completion.append(len(events)),
    )
    job.pause()
    job.resume()
    go.set()
    assert job.result(LONG) == "done"
    eventually(lambda: at_completion, "the completion")
    SC, END = EventKind.STATE_CHANGED, EventKind.END
    assert changes(events) == [
        (SC, State.CREATED, State.RUNNING),
        (SC, State.RUNNING, State.PAUSED),
        (SC, State.PAUSED, State.RUNNING),
        (SC, State.RUNNING, State.WAITING),
        (SC, State.WAITING, State.COMPLETED),
        (END, State.WAITING, State.COMPLETED),
    ]
    assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6]
    assert at_completion == [6], "END came before the completion"
    job.close()


def test_through_a_context_on_the_dispatching_thread():
    events: list[tuple[Event, int]] = []
    done: list[int] = []
    go = threading.Event()
    with bgjob.Context() as ctx:
        job = bgjob.Job(
            gated_worker(go),
            context=ctx,
            on_event=lambda j, e: events.append((e, threading.get_ident())),
            on_complete=lambda j: done.append(len(events)),
        )
        job.pause()
        job.resume()
        go.set()
        job.wait(LONG)
        assert events == [], "nothing before a dispatch"
        while ctx.dispatch():
            pass
        assert done == [6]
        assert {t for _, t in events} == {threading.get_ident()}
        assert events[-1][0].kind == EventKind.END
        assert events[-1][0].new_state == State.COMPLETED
        job.close()


def test_io_error_event_then_paused():
    events: list[Event] = []

    def work(w):
        assert w.report_io_error(errno.ENOSPC, "disk full") == ErrorAction.STOP
        w.pause_point()
        return 1

    job = bgjob.Job(work, error_policy=bgjob.ErrorPolicy.STOP, on_event=lambda j, e: events.append(e), context=None)
    eventually(lambda: job.state == State.PAUSED, "the error stop")
    job.resume()
    assert job.result(LONG) == 1
    eventually(lambda: events and events[-1].kind == EventKind.END, "the end")
    err = events[1]
    assert err.kind == EventKind.IO_ERROR
    assert err.action == ErrorAction.STOP
    assert err.error_code == errno.ENOSPC
    assert (events[2].old_state, events[2].new_state) == (State.RUNNING, State.PAUSED)
    job.close()


def test_undispatched_context_coalesces():
    events: list[Event] = []
    go = threading.Event()
    with bgjob.Context() as ctx:
        job = bgjob.Job(gated_worker(go), context=ctx, on_event=lambda j, e: events.append(e))
        for _ in range(500):
            job.pause()
            job.resume()
        ctx.dispatch()
        assert len(events) <= bgjob.EVENT_QUEUE_BOUND
        assert sum(1 + e.coalesced for e in events) == 1001
        assert events[-1].new_state == State.RUNNING
        assert events[-1].seq == 1001
        go.set()
        job.wait(LONG)
        while ctx.dispatch():
            pass
        assert events[-1].kind == EventKind.END
        job.close()


def test_pause_from_inside_an_event():
    seen: list[Event] = []
    inside: list[State] = []
    go = threading.Event()

    def on_event(job, e):
        seen.append(e)
        if e.new_state == State.RUNNING and e.old_state == State.CREATED:
            job.pause()
            inside.append(job.info.state)

    job = bgjob.Job(gated_worker(go), context=None, on_event=on_event)
    assert job.state == State.PAUSED
    assert inside == [State.PAUSED]
    assert seen[1].new_state == State.PAUSED
    job.resume()
    go.set()
    job.result(LONG)
    job.close()


def test_the_callback_is_released_after_the_end():
    go = threading.Event()

    class Sink:
        def __call__(self, job, e):
            pass

    sink = Sink()
    ref = __import__("weakref").ref(sink)
    job = bgjob.Job(gated_worker(go), context=None, on_event=sink)
    del sink
    go.set()
    job.result(LONG)
    job.close()
    gc.collect()
    eventually(lambda: ref() is None, "the event callback freed")


def test_on_event_must_be_callable():
    import pytest

    with pytest.raises(TypeError):
        bgjob.Job(lambda w: None, on_event=42)
